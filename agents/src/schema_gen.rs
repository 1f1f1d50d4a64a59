//! A UUID-keyed target schema for a source that has none (`agentctl schema generate
//! --from-source`). Every identifier is quoted. Each table keeps its schema, name and columns;
//! its key becomes `id uuid` plus `legacy_id`: the primary key's type (text `a|b` for a
//! composite key, whose parts stay as columns, unique together), else a unique rule on NOT NULL
//! columns (which stay as columns), else, for a keyless table, the row's content identity
//! ([`runtime::domain::ROW_IDENTITY`]). A foreign key to its parent's key becomes a uuid reference
//! to the
//! parent's `id`, with its ON DELETE rule and deferrability; one to another unique rule, or a
//! composite one, stays on its own columns. Extensions, sequences (at the source's next value),
//! enum, domain, composite and range types, collations, defaults, identity and generated
//! columns, CHECK, UNIQUE and EXCLUDE constraints and secondary indexes are carried over.
//! Whatever is not (triggers, views, functions, partitioning, rules that mention a rewritten
//! column) is named in the notes, which `schema generate` prints and records before anything
//! is applied; the DDL is applied in one transaction.

use runtime::error::ToolError;
use std::collections::BTreeSet;

use runtime::domain::{KeySource, SchemaReport, Table};
use runtime::sql::{ident, literal, quoted as qualified};

fn list(names: &[String]) -> String {
    names.iter().map(|n| ident(n)).collect::<Vec<_>>().join(", ")
}

/// A column's name in the generated target: its own, or the name a data column called `id` or
/// `legacy_id` is kept under ([`Table::renamed_data_column`]).
fn target_name(t: &Table, column: &str) -> String {
    t.renamed_data_column(column).unwrap_or_else(|| column.to_owned())
}

/// A column's name in the generated target, the old key's being `legacy_id`.
fn column_in_target(t: &Table, dropped: Option<&str>, column: &str) -> String {
    match dropped == Some(column) {
        true => "legacy_id".to_owned(),
        false => target_name(t, column),
    }
}

/// `columns` as the generated target names them.
fn target_names(t: &Table, columns: &[String]) -> Vec<String> {
    columns.iter().map(|c| target_name(t, c)).collect()
}

/// The columns of `t` that become uuid references.
fn key_references<'a>(report: &SchemaReport, t: &'a Table) -> BTreeSet<&'a str> {
    t.foreign_keys
        .iter()
        .filter(|fk| report.references_key(fk))
        .map(|fk| fk.columns[0].as_str())
        .collect()
}

/// The column that becomes `legacy_id` and is not kept as a column of its own: a single-column
/// primary key that is not also a reference.
fn dropped_key(report: &SchemaReport, t: &Table) -> Option<String> {
    match (t.key(), t.primary_key.as_slice()) {
        ((_, KeySource::Primary), [one])
            if !t
                .foreign_keys
                .iter()
                .any(|fk| &fk.columns[0] == one && report.references_key(fk)) =>
        {
            Some(one.clone())
        }
        _ => None,
    }
}

/// How a partitioned table is partitioned in the target: its key and its partitions' own keys,
/// with the old key's column (now legacy_id, with the same values) and data kept under another
/// name renamed, and in `columns` the columns of every level's key (each unique rule of the
/// target table must hold them all); or why it cannot be (a key over an expression, or over a
/// reference that became a UUID, whose bounds are old values).
fn partitioning(
    t: &Table,
    dropped: Option<&str>,
    references: &BTreeSet<&str>,
) -> Result<runtime::domain::Partitioning, ToolError> {
    let p =
        t.partitioning.clone().ok_or_else(|| ToolError::bad_input("it has no partition key"))?;
    if p.columns.is_empty() {
        return Err(ToolError::bad_input(format!("its key {} is over an expression", p.key)));
    }
    if let Some(c) = p.columns.iter().find(|c| references.contains(c.as_str())) {
        return Err(ToolError::bad_input(format!("its key is over {c}, which becomes a uuid")));
    }
    let rename =
        |cols: &[String]| cols.iter().map(|c| column_in_target(t, dropped, c)).collect::<Vec<_>>();
    let renamed_key = |key: &str, columns: &[String]| {
        let renamed = rename(columns);
        let strategy = key.split_whitespace().next().unwrap_or("RANGE");
        match renamed == columns {
            true => key.to_owned(),
            false => format!("{strategy} ({})", list(&renamed)),
        }
    };
    let mut columns = rename(&p.columns);
    let mut partitions = p.partitions;
    for part in &mut partitions {
        let Some(key) = part.key.clone() else { continue };
        let Some(own) = plain_columns(&key) else {
            return Err(ToolError::bad_input(format!(
                "its partition {} is keyed on {key}, an expression",
                part.name
            )));
        };
        if let Some(c) = own.iter().find(|c| references.contains(c.as_str())) {
            return Err(ToolError::bad_input(format!(
                "its partition {} is keyed on {c}, which becomes a uuid",
                part.name
            )));
        }
        part.key = Some(renamed_key(&key, &own));
        columns
            .extend(rename(&own).into_iter().filter(|c| !columns.contains(c)).collect::<Vec<_>>());
    }
    Ok(runtime::domain::Partitioning { key: renamed_key(&p.key, &p.columns), columns, partitions })
}

/// Whether `text` (a definition or an expression) mentions `column`, as a word or quoted.
fn mentions(text: &str, column: &str) -> bool {
    if text.contains(&ident(column)) {
        return true;
    }
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    text.match_indices(column).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + column.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word) && before != Some('"')
    })
}

/// The DDL, and a note for everything that was not carried over; or, when a table cannot be
/// reproduced at all, why (one line each), and no DDL.
pub fn generate(report: &SchemaReport) -> Result<(String, Vec<String>), Vec<String>> {
    let mut out = String::from("-- Generated by agentctl schema generate --from-source.\n");
    let mut notes = Vec::new();
    let mut schemas: BTreeSet<&str> =
        report.tables.iter().map(|t| t.name.schema.as_str()).collect();
    schemas.extend(report.extensions.iter().map(|e| e.schema.as_str()));
    for s in schemas.into_iter().filter(|s| *s != "public") {
        out.push_str(&format!("CREATE SCHEMA IF NOT EXISTS {};\n", ident(s)));
    }
    for e in &report.extensions {
        out.push_str(&format!(
            "CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {};\n",
            ident(&e.name),
            ident(&e.schema)
        ));
    }
    for c in &report.collations {
        out.push_str(&format!("CREATE COLLATION IF NOT EXISTS {} ({});\n", c.name, c.definition));
    }
    for s in &report.sequences {
        out.push_str(&format!(
            "CREATE SEQUENCE {} AS {} INCREMENT BY {} MINVALUE {} MAXVALUE {} START WITH {}{};\n",
            s.name,
            s.data_type,
            s.increment,
            s.min,
            s.max,
            s.next.clamp(s.min, s.max),
            if s.cycle { " CYCLE" } else { "" }
        ));
    }
    for (name, labels) in &report.enums {
        // The type as the source's columns spell it (qualified when outside `public`).
        let spelled = report
            .tables
            .iter()
            .flat_map(|t| &t.columns)
            .find(|c| {
                &c.type_name == name && matches!(c.type_kind, runtime::domain::TypeKind::Enum)
            })
            .map(|c| c.data_type.clone())
            .unwrap_or_else(|| ident(name));
        let labels: Vec<String> = labels.iter().map(|l| literal(l)).collect();
        out.push_str(&format!("CREATE TYPE {spelled} AS ENUM ({});\n", labels.join(", ")));
    }
    // An extension's own domains come with the extension (created above).
    for d in report.domains.iter().filter(|d| d.extension.is_none()) {
        let checks: Vec<String> = d
            .checks
            .iter()
            .map(|c| format!(" CONSTRAINT {} CHECK {}", ident(&c.name), c.expression))
            .collect();
        out.push_str(&format!(
            "CREATE DOMAIN {} AS {}{}{};\n",
            ident(&d.name),
            d.base,
            if d.not_null { " NOT NULL" } else { "" },
            checks.concat()
        ));
    }
    for t in &report.types {
        out.push_str(&format!("CREATE TYPE {} AS {};\n", t.name, t.definition));
    }
    for (kind, name) in &report.other_objects {
        let rows =
            runtime::domain::rows_left_behind(kind).map(|r| format!(" ({r})")).unwrap_or_default();
        notes.push(format!(
            "{kind} {name} is not carried over{rows}: recreate it in the target after the \
                migration, where each key is a uuid `id` and the old key is `legacy_id`"
        ));
    }

    let (mut after, mut refused) = (Vec::new(), Vec::new());
    for t in &report.tables {
        table(report, t, &mut out, &mut after, &mut notes, &mut refused);
    }
    if !refused.is_empty() {
        return Err(refused);
    }
    for line in after {
        out.push_str(&line);
    }
    Ok((out, notes))
}

/// One table's CREATE TABLE into `out`; its indexes and foreign keys into `after`.
fn table(
    report: &SchemaReport,
    t: &Table,
    out: &mut String,
    after: &mut Vec<String>,
    notes: &mut Vec<String>,
    refused: &mut Vec<String>,
) {
    let (key, source) = t.key();
    let dropped = dropped_key(report, t);
    let references = key_references(report, t);
    match source {
        KeySource::Primary => {}
        KeySource::Unique(rule) => notes.push(format!(
            "{} has no primary key: its rows are told \
            apart by its unique rule {rule} ({})",
            t.name,
            key.join(", ")
        )),
        KeySource::Content => notes.push(format!(
            "{} has no primary key and no unique rule on NOT NULL columns: each row's legacy_id \
                is the MD5 of its content and its ordinal among identical rows; an edited row is \
                a new row",
            t.name
        )),
    }
    let partitioned = partitioning(t, dropped.as_deref(), &references);
    if let (Err(why), false) = (&partitioned, t.partitions.is_empty()) {
        let parts: Vec<String> = t.partitions.iter().map(ToString::to_string).collect();
        notes.push(format!(
            "{} is partitioned ({}), but {why}: the target table is one plain table holding every \
                partition's rows",
            t.name,
            parts.join(", ")
        ));
    }
    let partitioned = partitioned.ok();
    if let Some(parent) = &t.inherits {
        notes.push(format!(
            "{} inherits from {parent}: each keeps its own rows, and the target has no \
                inheritance (a query of {parent} there no longer shows {}'s rows)",
            t.name, t.name
        ));
    }
    for trigger in &t.triggers {
        notes.push(format!(
            "{}: trigger {trigger} is not carried over (nothing fires during the load)",
            t.name
        ));
    }

    let legacy_type = match (key.as_slice(), source) {
        ([one], KeySource::Primary | KeySource::Unique(_)) => {
            t.column(one).map(|c| c.data_type.clone()).unwrap_or("text".into())
        }
        _ => "text".to_owned(),
    };
    // A partitioned table's keys include its partition columns, as PostgreSQL requires.
    let mut lines = match &partitioned {
        None => vec![
            "    \"id\" uuid PRIMARY KEY".to_owned(),
            format!("    \"legacy_id\" {legacy_type} NOT NULL UNIQUE"),
        ],
        Some(p) => {
            let with = |first: &str| {
                let mut cols = vec![first.to_owned()];
                cols.extend(p.columns.iter().filter(|c| c.as_str() != first).cloned());
                list(&cols)
            };
            vec![
                "    \"id\" uuid NOT NULL".to_owned(),
                format!("    \"legacy_id\" {legacy_type} NOT NULL"),
                format!("    PRIMARY KEY ({})", with("id")),
                format!("    UNIQUE ({})", with("legacy_id")),
            ]
        }
    };
    // Columns whose meaning or name changes in the target: the key that became legacy_id, the
    // references that became UUIDs, data kept under another name. A rule that mentions one is
    // not carried over as it is.
    let renamed = ["id", "legacy_id"].into_iter().filter(|c| t.renamed_data_column(c).is_some());
    let changed: Vec<&str> = dropped
        .iter()
        .map(String::as_str)
        .chain(references.iter().copied())
        .chain(renamed)
        .collect();
    lines.extend(column_lines(t, dropped.as_deref(), &references, &changed, notes, refused));
    lines.extend(rule_lines(t, dropped.as_deref(), &changed, notes));
    create(out, t, lines, partitioned.as_ref());

    comments(out, t, dropped.as_deref());
    indexes(t, dropped.as_deref(), &changed, after, notes);
    foreign_keys(report, t, &changed, after, notes);
}

/// The table's columns as the target has them: a reference becomes uuid, the old key is gone
/// (it is legacy_id), and `deleted_at` is added for the differential sync's soft deletes.
fn column_lines(
    t: &Table,
    dropped: Option<&str>,
    references: &BTreeSet<&str>,
    changed: &[&str],
    notes: &mut Vec<String>,
    refused: &mut Vec<String>,
) -> Vec<String> {
    let mut lines = Vec::new();
    for c in &t.columns {
        if dropped == Some(c.name.as_str()) {
            continue;
        }
        let name = target_name(t, &c.name);
        if name == "id" || name == "legacy_id" {
            refused.push(format!(
                "{}: column {} is kept as data, but id and legacy_id are the target's key; rename \
                    it in the source or write the target schema by hand",
                t.name, c.name
            ));
            continue;
        }
        if name != c.name {
            notes.push(format!(
                "{}: column {} is kept as data under the name {name} (id and legacy_id are the \
                    target's key); a CHECK, index or foreign key over it is not carried over",
                t.name, c.name
            ));
        }
        let reference = references.contains(c.name.as_str());
        let ty = if reference { "uuid".to_owned() } else { c.data_type.clone() };
        let mut def = format!("    {} {ty}", ident(&name));
        if let Some(collation) = c.collation.as_ref().filter(|_| !reference) {
            def.push_str(&format!(" COLLATE {collation}"));
        }
        // Computed from a column that changes in the target (the old key, a reference that
        // became a UUID, data renamed), the expression would compute something else there: the
        // column keeps the source's values instead.
        let computed_from = |expr: &str| changed.iter().find(|k| mentions(expr, k));
        if let Some((expr, from)) = c.generated.as_ref().and_then(|e| Some((e, computed_from(e)?)))
        {
            notes.push(format!(
                "{}: generated column {} computes {expr} from {from}, which changes in the \
                    target: it is a plain column there holding the source's values",
                t.name, c.name
            ));
        } else if let Some(expr) = &c.generated {
            def.push_str(&format!(" GENERATED ALWAYS AS ({expr}) STORED"));
        } else if c.identity.is_some() && !reference {
            def.push_str(" GENERATED BY DEFAULT AS IDENTITY");
        } else if let Some(d) = c.default.as_ref().filter(|_| !reference) {
            def.push_str(&format!(" DEFAULT {d}"));
        }
        if !c.nullable {
            def.push_str(" NOT NULL");
        }
        lines.push(def);
    }
    // Where `diff migrate` marks a row deleted from the source (the default soft delete).
    if !t.columns.iter().any(|c| c.name == "deleted_at") {
        lines.push("    \"deleted_at\" timestamptz".into());
    }
    lines
}

/// The table's unique rules, CHECKs and exclusions that still mean what they meant (a rule on
/// the old key or over a rewritten reference is reported instead).
fn rule_lines(
    t: &Table,
    dropped: Option<&str>,
    changed: &[&str],
    notes: &mut Vec<String>,
) -> Vec<String> {
    let mut lines = Vec::new();
    let unique_constraints: BTreeSet<&str> =
        t.indexes.iter().filter(|i| i.constraint).map(|i| i.name.as_str()).collect();
    // A reference's UUID stands for exactly one old value, so a rule over the column itself
    // (unique, or a plain index) holds as it did; only an expression over it changes meaning.
    for u in t.unique.iter().filter(|u| unique_constraints.contains(u.name.as_str())) {
        if let Some(key) = dropped.filter(|k| u.parts.iter().any(|p| p == k)) {
            if u.parts.len() > 1 {
                notes.push(format!(
                    "{}: unique rule {} includes the old key {key}, now legacy_id, \
                        and is not carried over",
                    t.name, u.name
                ));
            }
            continue;
        }
        // As the source declares it (NULLS NOT DISTINCT, DEFERRABLE, INCLUDE), or over the
        // renamed columns with the first two.
        let parts = target_names(t, &u.parts);
        let rule = match parts == u.parts && !u.definition.is_empty() {
            true => u.definition.clone(),
            false => {
                let has = |words: &str| u.definition.contains(words);
                format!(
                    "UNIQUE{} ({}){}{}",
                    if has("NULLS NOT DISTINCT") { " NULLS NOT DISTINCT" } else { "" },
                    list(&parts),
                    if has(" DEFERRABLE") { " DEFERRABLE" } else { "" },
                    if has("INITIALLY DEFERRED") { " INITIALLY DEFERRED" } else { "" }
                )
            }
        };
        lines.push(format!("    CONSTRAINT {} {rule}", ident(&u.name)));
    }
    for c in &t.checks {
        if changed.iter().any(|k| mentions(&c.expression, k)) {
            notes.push(format!(
                "{}: CHECK {} mentions a column that became a UUID or legacy_id or was \
                renamed, and is not carried over",
                t.name, c.name
            ));
            continue;
        }
        lines.push(format!("    CONSTRAINT {} CHECK {}", ident(&c.name), c.expression));
    }
    for x in &t.exclusions {
        if changed.iter().any(|k| mentions(&x.expression, k)) {
            notes.push(format!(
                "{}: {} {} mentions a column that became a UUID or legacy_id and is not carried \
                    over",
                t.name, x.expression, x.name
            ));
            continue;
        }
        lines.push(format!("    CONSTRAINT {} {}", ident(&x.name), x.expression));
    }
    // A composite primary key stays unique on its parts.
    if t.primary_key.len() > 1 {
        lines.push(format!("    UNIQUE ({})", list(&target_names(t, &t.primary_key))));
    }
    lines
}

/// `CREATE TABLE`, the constraints after the columns, and its partitions.
fn create(
    out: &mut String,
    t: &Table,
    lines: Vec<String>,
    partitioned: Option<&runtime::domain::Partitioning>,
) {
    let (constraints, columns): (Vec<String>, Vec<String>) = lines.into_iter().partition(|l| {
        l.starts_with("    PRIMARY KEY")
            || l.starts_with("    UNIQUE")
            || l.starts_with("    CONSTRAINT")
    });
    let lines: Vec<String> = columns.into_iter().chain(constraints).collect();
    match partitioned {
        None => out.push_str(&format!(
            "CREATE TABLE {} (\n{}\n);\n",
            qualified(&t.name),
            lines.join(",\n")
        )),
        Some(p) => {
            out.push_str(&format!(
                "CREATE TABLE {} (\n{}\n) PARTITION BY {};\n",
                qualified(&t.name),
                lines.join(",\n"),
                p.key
            ));
            for part in &p.partitions {
                let sub =
                    part.key.as_ref().map(|k| format!(" PARTITION BY {k}")).unwrap_or_default();
                out.push_str(&format!(
                    "CREATE TABLE {} PARTITION OF {} {}{sub};\n",
                    qualified(&part.name),
                    qualified(&part.parent),
                    part.bound
                ));
            }
        }
    }
}

/// The table's and its columns' comments (the old key's on legacy_id).
fn comments(out: &mut String, t: &Table, dropped: Option<&str>) {
    if let Some(comment) = &t.comment {
        out.push_str(&format!(
            "COMMENT ON TABLE {} IS {};\n",
            qualified(&t.name),
            literal(comment)
        ));
    }
    for c in &t.columns {
        let Some(comment) = &c.comment else { continue };
        let column = column_in_target(t, dropped, &c.name);
        out.push_str(&format!(
            "COMMENT ON COLUMN {}.{} IS {};\n",
            qualified(&t.name),
            ident(&column),
            literal(comment)
        ));
    }
}

/// The table's plain indexes, built after the load; one on a column whose meaning changed is
/// reported instead.
fn indexes(
    t: &Table,
    dropped: Option<&str>,
    changed: &[&str],
    after: &mut Vec<String>,
    notes: &mut Vec<String>,
) {
    for i in t.indexes.iter().filter(|i| !i.primary && !i.constraint) {
        let plain = plain_index(&i.definition);
        let breaks = |k: &&str| match &plain {
            Some(columns) if dropped != Some(*k) => {
                !columns.iter().any(|c| c == k) && mentions(&i.definition, k)
            }
            _ => mentions(&i.definition, k),
        };
        if changed.iter().chain(["id", "legacy_id"].iter()).any(breaks) {
            notes.push(format!(
                "{}: index {} is on a column that became a UUID or legacy_id and \
                is not carried over",
                t.name, i.name
            ));
            continue;
        }
        // A partitioned table's index is printed `ON ONLY` it: on the table alone, invalid, and
        // not on its partitions.
        after.push(format!("{};\n", i.definition.replacen(" ON ONLY ", " ON ", 1)));
    }
}

/// The table's foreign keys, added after the load: to the parent's `id` for a reference to its
/// key, on their own columns where both sides keep theirs, else reported.
fn foreign_keys(
    report: &SchemaReport,
    t: &Table,
    changed: &[&str],
    after: &mut Vec<String>,
    notes: &mut Vec<String>,
) {
    for fk in &t.foreign_keys {
        let on_delete = if fk.on_delete == "no action" {
            String::new()
        } else {
            format!(" ON DELETE {}", fk.on_delete.to_uppercase())
        };
        let deferrable = match (fk.deferrable, fk.deferred) {
            (true, true) => " DEFERRABLE INITIALLY DEFERRED",
            (true, false) => " DEFERRABLE",
            _ => "",
        };
        let to_partitioned = report.table(&fk.references).is_some_and(|p| {
            partitioning(p, dropped_key(report, p).as_deref(), &key_references(report, p)).is_ok()
        });
        if report.references_key(fk) && to_partitioned {
            notes.push(format!(
                "{}: foreign key {} points at the partitioned {}, whose key in the target \
                    includes its partition columns: its uuid column is kept, without the \
                    constraint",
                t.name, fk.name, fk.references
            ));
            continue;
        }
        if report.references_key(fk) {
            after.push(format!(
                "ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} \
                    (\"id\"){on_delete}{deferrable};\n",
                qualified(&t.name),
                ident(&fk.name),
                ident(&fk.columns[0]),
                qualified(&fk.references)
            ));
            continue;
        }
        // Kept on its own columns when both sides keep theirs as they are.
        let parent = report.table(&fk.references);
        let parent_changed = |c: &String| {
            parent.is_some_and(|p| {
                dropped_key(report, p).as_ref() == Some(c) || c == "id" || c == "legacy_id"
            })
        };
        let child_changed =
            |c: &String| changed.contains(&c.as_str()) || c == "id" || c == "legacy_id";
        if parent.is_none()
            || fk.referenced_columns.iter().any(parent_changed)
            || fk.columns.iter().any(child_changed)
        {
            notes.push(format!(
                "{}: foreign key {} is on a column that became a UUID or legacy_id and is not \
                    carried over",
                t.name, fk.name
            ));
            continue;
        }
        after.push(format!(
            "ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} \
                ({}){on_delete}{deferrable}{};\n",
            qualified(&t.name),
            ident(&fk.name),
            list(&fk.columns),
            qualified(&fk.references),
            list(&fk.referenced_columns),
            if fk.validated { "" } else { " NOT VALID" }
        ));
    }
}

/// The columns of an index over plain columns (each maybe with ASC, DESC, NULLS FIRST or
/// LAST), as `pg_get_indexdef` prints it; None for an expression or an operator class. A
/// predicate or INCLUDE list after the key is not looked at.
fn plain_index(definition: &str) -> Option<Vec<String>> {
    let at = definition.find(" USING ")?;
    plain_columns(&definition[at..])
}

/// The plain columns of the first parenthesised list in `rest` (an index's after its method, a
/// partition key's after its strategy); None when one is an expression.
fn plain_columns(rest: &str) -> Option<Vec<String>> {
    let open = rest.find('(')?;
    let mut depth = 0;
    let mut close = None;
    let mut quoted = false;
    for (i, c) in rest[open..].char_indices() {
        match c {
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let inner = &rest[open + 1..close?];
    let mut columns = Vec::new();
    for part in split_outside_quotes(inner) {
        let part = part.trim();
        let (name, modifiers) = if let Some(q) = part.strip_prefix('"') {
            let end = q.find('"')?;
            (q[..end].to_owned(), &q[end + 1..])
        } else {
            let end = part.find(' ').unwrap_or(part.len());
            (part[..end].to_owned(), &part[end..])
        };
        let simple = !name.is_empty()
            && name.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '$')
            || part.starts_with('"');
        let modifiers_ok = modifiers
            .split_whitespace()
            .all(|w| matches!(w, "ASC" | "DESC" | "NULLS" | "FIRST" | "LAST"));
        if !simple || !modifiers_ok {
            return None;
        }
        columns.push(name.replace("\"\"", "\""));
    }
    Some(columns)
}

fn split_outside_quotes(s: &str) -> Vec<&str> {
    let (mut parts, mut start, mut quoted) = (Vec::new(), 0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::{mentions, plain_index};

    #[test]
    fn an_index_over_plain_columns_is_told_from_one_over_expressions() {
        let plain = |d: &str| plain_index(d);
        assert_eq!(
            plain("CREATE INDEX a ON public.t USING btree (customer_id)"),
            Some(vec!["customer_id".to_owned()])
        );
        assert_eq!(
            plain(
                "CREATE UNIQUE INDEX a ON s.t USING btree (\"Order, Id\" DESC NULLS LAST, x) \
                WHERE (x > 0)"
            ),
            Some(vec!["Order, Id".to_owned(), "x".to_owned()])
        );
        assert_eq!(plain("CREATE INDEX a ON public.t USING btree (lower(email))"), None);
        assert_eq!(plain("CREATE INDEX a ON public.t USING btree (code text_pattern_ops)"), None);
        assert_eq!(
            plain("CREATE INDEX a ON public.t USING gist (box(point(x, y), point(x, y)))"),
            None
        );
    }

    #[test]
    fn a_column_is_mentioned_as_a_word_or_quoted_only() {
        assert!(mentions("CHECK ((customer_id > 0))", "customer_id"));
        assert!(mentions(
            "CREATE INDEX x ON public.t USING btree (\"Customer Id\")",
            "Customer Id"
        ));
        assert!(!mentions("CHECK ((old_customer_id > 0))", "customer_id"));
        assert!(!mentions("CHECK ((customer_id_2 > 0))", "customer_id"));
        assert!(!mentions("CREATE INDEX x ON public.t USING btree (\"id_x\")", "id"));
    }
}
