//! The data mapping agent: for each legacy table, the [`MappingSpec`] onto its modern table.
//!
//! Inferred where it can be (the `dispatch_` prefix, plural and singular, identical names,
//! `_cents` amounts, foreign keys, types), then overridden by a mapping file (TOML, see
//! `mappings/dispatch.toml`), then checked against the target schema: every required target
//! column is fed, types fit, every mapped enum value exists. Each problem names the table and
//! column. Every mapping decision goes into the audit trail with its reason.

use runtime::error::{BadInput, ToolError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use runtime::context::RunContext;
use runtime::domain::{Column, SchemaReport, Table, TableName, TypeKind, ROW_IDENTITY};
use runtime::envelope::{AgentError, Envelope};
use runtime::mapping::{ColumnMapping, Feed, Join, MappingSpec, ParentKey, Transform};
use runtime::AgentName;
use serde::{Deserialize, Serialize};

use runtime::mapping::{
    entity_key, ColumnRule, EntityRule, GenericRule, JoinRule, Keys, MappingFile, MappingSet,
    Problem, ScriptRule, Settings, Unmapped,
};

const ME: AgentName = AgentName::DataMapping;

/// The source's report with the references the mapping file declares (an entity's
/// `references`) added as foreign keys, so that the schema generator, the mapping, the plan and
/// the validation treat each like the key it is: a uuid column in the target, the parent loaded
/// first, every value rewritten to the parent's UUID, a value no parent row has rejected with
/// that reason, and the links counted on both sides.
pub fn declare_references(
    source: &SchemaReport,
    file: &MappingFile,
) -> Result<SchemaReport, Vec<Problem>> {
    let mut out = source.clone();
    let mut problems = Vec::new();
    for (entity, rule) in file.entities.iter().filter(|(_, r)| !r.references.is_empty()) {
        let Some(child) = source.find(entity) else { continue };
        for (column, parent) in &rule.references {
            let fk = match declared_key(source, child, column, parent) {
                Ok(Some(fk)) => fk,
                Ok(None) => continue,
                Err(e) => {
                    problems.push(Problem {
                        table: entity.clone(),
                        source: Some(child.name.name.clone()),
                        column: Some(column.clone()),
                        message: e.0,
                        unfed: false,
                    });
                    continue;
                }
            };
            let table = out
                .tables
                .iter_mut()
                .find(|t| t.name == child.name)
                .expect("the table is in the report it was found in");
            table.foreign_keys.push(fk);
        }
    }
    for (entity, rule) in file.entities.iter().filter(|(_, r)| !r.generic.is_empty()) {
        let Some(child) = source.find(entity) else { continue };
        let table = out
            .tables
            .iter_mut()
            .find(|t| t.name == child.name)
            .expect("the table is in the report it was found in");
        for (column, g) in &rule.generic {
            let problem = |message: &str| Problem {
                table: entity.clone(),
                source: Some(child.name.name.clone()),
                column: Some(column.clone()),
                message: message.to_owned(),
                unfed: false,
            };
            if child.column(&g.by).is_none() {
                problems.push(problem(&format!(
                    "the generic reference's `by` column {} is not in the source table",
                    g.by
                )));
            }
            // The column holds the parent's UUID in the target.
            match table.columns.iter_mut().find(|c| &c.name == column) {
                Some(c) => {
                    (c.data_type, c.type_name, c.type_kind, c.max_length) =
                        ("uuid".into(), "uuid".into(), TypeKind::Base, None);
                }
                None => problems.push(problem(
                    "the mapping file declares a generic reference on a \
                    column the source table does not have",
                )),
            }
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// The foreign key a reference the mapping file declares becomes (`None`: a foreign key to the
/// same parent already makes it one), or why it cannot be one.
fn declared_key(
    source: &SchemaReport,
    child: &Table,
    column: &str,
    parent: &str,
) -> Result<Option<runtime::domain::ForeignKey>, BadInput> {
    if child.column(column).is_none() {
        return Err(BadInput(
            "the mapping file declares a reference on a column the \
            source table does not have"
                .into(),
        ));
    }
    let Some(p) = source.find(parent) else {
        return Err(BadInput(format!(
            "the mapping file's reference names {}",
            source
                .shared(parent)
                .unwrap_or_else(|| format!("`{parent}`, which the source does not have"))
        )));
    };
    let (key, from) = p.key();
    if matches!(from, runtime::domain::KeySource::Content) {
        return Err(BadInput(format!("{} has no key for a reference to point at", p.name)));
    }
    if key.len() != 1 {
        return Err(BadInput(format!(
            "{} has a key of {} columns; a reference the mapping file declares must point \
                at a one-column key",
            p.name,
            key.len()
        )));
    }
    if let Some(fk) = child.foreign_keys.iter().find(|f| f.columns == [column]) {
        if fk.references != p.name {
            return Err(BadInput(format!(
                "the foreign key {} already makes it a reference to {}",
                fk.name, fk.references
            )));
        }
        return Ok(None);
    }
    Ok(Some(runtime::domain::ForeignKey {
        name: format!("{}_{column}_fkey", child.name.name),
        columns: vec![column.to_owned()],
        references: p.name.clone(),
        referenced_columns: key,
        on_delete: "no action".into(),
        deferrable: false,
        deferred: false,
        validated: true,
    }))
}

/// Fills in the parents of each generic reference whose `by` column is a foreign key to
/// Django's content types (`app_label`, `model`): each content type names the source table
/// `app_label_model`, where there is one, unless the mapping file names its table itself.
pub async fn content_types(
    rows: &dyn runtime::ports::Rows,
    source: &SchemaReport,
    file: &MappingFile,
) -> Result<MappingFile, ToolError> {
    let mut file = file.clone();
    for (entity, rule) in file.entities.iter_mut() {
        let Some(child) = source.find(entity) else { continue };
        for g in rule.generic.values_mut() {
            let fk = child.foreign_keys.iter().find(|f| f.columns == [g.by.clone()]);
            let Some(types) = fk.and_then(|f| source.table(&f.references)) else { continue };
            if types.column("app_label").is_none()
                || types.column("model").is_none()
                || types.key().0.len() != 1
            {
                continue;
            }
            let scan = runtime::domain::Scan::plain(
                types.name.clone(),
                vec![types.key().0[0].clone(), "app_label".into(), "model".into()],
                types.key().0,
            );
            let mut named: Vec<(String, String)> = Vec::new();
            rows.scan(&scan, &mut |r: &[Option<&str>]| {
                if let [Some(id), Some(app), Some(model)] = r {
                    named.push(((*id).to_owned(), format!("{app}_{model}")));
                }
            })
            .await
            .map_err(|e| {
                e.context(format!(
                    "reading the content types of {} for {entity}.{}",
                    types.name, g.by
                ))
            })?;
            for (id, table) in named {
                if source.find(&table).is_some() {
                    g.parents.entry(id).or_insert(table);
                }
            }
        }
    }
    Ok(file)
}

/// The error of a mapping with problems, each named where it is.
pub fn problems_error(origin: &str, problems: &[Problem]) -> AgentError {
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    AgentError::usage(
        ME,
        format!("the mapping ({origin}) has {} problem(s): {}", problems.len(), lines.join("; ")),
    )
}

fn category(c: &Column) -> &'static str {
    let name = match &c.type_kind {
        TypeKind::Domain { base } => base.split('(').next().unwrap_or("").trim().to_owned(),
        TypeKind::Enum => return "enum",
        TypeKind::Array { .. } => return "array",
        _ => c.type_name.clone(),
    };
    match name.as_str() {
        "int2" | "int4" | "int8" | "smallint" | "integer" | "bigint" => "int",
        "numeric" | "float4" | "float8" | "real" | "double precision" => "number",
        "bool" | "boolean" => "bool",
        "timestamp" | "timestamp without time zone" => "timestamp",
        "timestamptz" | "timestamp with time zone" => "timestamptz",
        "date" => "date",
        "json" | "jsonb" => "json",
        "uuid" => "uuid",
        "varchar" | "text" | "bpchar" | "character varying" | "character" | "citext" | "name" => {
            "text"
        }
        _ => "other",
    }
}

fn parse_transform(t: &str, zone: &str) -> Result<Transform, BadInput> {
    Ok(match t {
        "trim" => Transform::Trim,
        "lower" => Transform::Lower,
        "upper" => Transform::Upper,
        "null_if_empty" => Transform::NullIfEmpty,
        "cents" => Transform::Cents,
        "bool" => Transform::Bool,
        "json" => Transform::Json,
        "timestamptz" => Transform::Timestamptz { zone: zone.to_owned() },
        other => {
            return Err(BadInput(format!(
                "unknown transform `{other}` (known: trim, lower, upper, null_if_empty, cents, \
                    bool, json, timestamptz)"
            )))
        }
    })
}

/// The transforms a source column of this type needs to fit a target column of that type.
fn inferred_transforms(
    src: &Column,
    dst: &Column,
    target: &SchemaReport,
    zone: &str,
) -> (Vec<Transform>, String) {
    let (s, d) = (category(src), category(dst));
    let mut why = Vec::new();
    let mut out = Vec::new();
    // Cleaning is part of a conversion to another type (varchar(n) to text or to an enum): a
    // column of the same type, as in a target generated from the source, is copied as it is.
    let converted = src.data_type != dst.data_type;
    if s == "text" && src.type_name != "text" && converted {
        out.push(Transform::Trim);
        why.push("legacy padding trimmed");
    }
    if s == "text" && dst.name.contains("email") && converted {
        out.push(Transform::Lower);
        why.push("email lower-cased");
    }
    match (s, d) {
        ("int", "number") if src.name.ends_with("_cents") => {
            out.push(Transform::Cents);
            why.push("whole cents to a decimal amount");
        }
        ("int", "bool") => {
            out.push(Transform::Bool);
            why.push("0/1 to a boolean");
        }
        ("timestamp", "timestamptz") => {
            out.push(Transform::Timestamptz { zone: zone.to_owned() });
            why.push("local time read in the configured zone");
        }
        ("text", "json") => {
            out.push(Transform::Json);
            why.push("JSON text checked to parse");
        }
        ("text", "enum") => {
            if !out.contains(&Transform::Trim) {
                out.push(Transform::Trim);
            }
            out.push(Transform::Lower);
            why.push("free text matched to the enum's labels, ignoring case and spaces");
        }
        ("int", "enum") => {
            if let Some(labels) = target.enums.get(&dst.type_name) {
                let map =
                    labels.iter().enumerate().map(|(i, l)| (i.to_string(), l.clone())).collect();
                out.push(Transform::Values { map });
                why.push(
                    "codes 0, 1, 2, ... taken as the enum's labels in order (confirm in the \
                    mapping file)",
                );
            }
        }
        _ => {}
    }
    (
        out,
        if why.is_empty() { "same name".into() } else { format!("same name; {}", why.join("; ")) },
    )
}

/// Target tables by the key of their name.
fn target_for<'a>(
    source: &TableName,
    rule: Option<&EntityRule>,
    target: &'a SchemaReport,
) -> Option<&'a Table> {
    if let Some(name) = rule.and_then(|r| r.target.as_deref()) {
        // A name several schemas of the target share is no one table ([`target_problem`]).
        return target.find(name);
    }
    // The same schema and name first: `sales.item` is not `public.item`.
    let exact = target.tables.iter().find(|t| t.name == *source);
    exact.or_else(|| target.tables.iter().find(|t| t.name.name == source.name)).or_else(|| {
        target.tables.iter().find(|t| entity_key(&t.name.name) == entity_key(&source.name))
    })
}

/// The mapping file's rule for a source table: under its schema-qualified name, else its own.
fn rule_for<'a>(file: &'a MappingFile, table: &TableName) -> Option<&'a EntityRule> {
    keyed(&file.entities, table)
}

/// The name a mapping file keys a table by: its own where no other table of `names` shares
/// it, else with its schema (`"sales.item"`, which TOML writes quoted).
pub fn file_key<'a>(table: &TableName, mut names: impl Iterator<Item = &'a TableName>) -> String {
    match names.any(|n| n.name == table.name && n != table) {
        true => table.qualified(),
        false => table.name.clone(),
    }
}

/// What a map keyed by the mapping file's entity names holds for a table: under its
/// schema-qualified name, else its own.
fn keyed<'a, V>(map: &'a BTreeMap<String, V>, table: &TableName) -> Option<&'a V> {
    map.get(&table.qualified()).or_else(|| map.get(&table.name))
}

/// Why the mapping file's `target` names no table of the target, for the rule of `source`.
fn target_problem(name: &str, source: &TableName, target: &SchemaReport) -> String {
    let all = target.sharing(name);
    let Some(first) = all.first() else {
        return format!("the mapping file's target `{name}` does not exist");
    };
    // The one in the source table's own schema, if there is one, as the example.
    let own = TableName::new(&source.schema, name).qualified();
    let example = all.iter().find(|t| **t == own).unwrap_or(first);
    format!(
        "the mapping file's target `{name}` names {} tables ({}): write its schema, target = \
            \"{example}\"",
        all.len(),
        all.join(", ")
    )
}

/// The header of a table's rule in the mapping file, as TOML reads it: `[entities.item]`;
/// quoted where the key is more than letters, digits, `_` and `-` (`[entities."sales.item"]`,
/// its schema written where another schema has a table of its name).
fn rule_header(table: &TableName, source: &SchemaReport) -> String {
    let key = file_key(table, source.tables.iter().map(|t| &t.name));
    match key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        true => format!("[entities.{key}]"),
        false => format!("[entities.\"{}\"]", key.replace('\\', "\\\\").replace('"', "\\\"")),
    }
}

/// Builds every entity's mapping; returns the problems instead if there are any.
pub fn build(
    source: &SchemaReport,
    target: &SchemaReport,
    file: &MappingFile,
) -> Result<MappingSet, Vec<Problem>> {
    let set = build_each(source, target, file)?;
    let problems = problems_in(&set);
    if problems.is_empty() {
        Ok(set)
    } else {
        Err(problems)
    }
}

/// Builds every entity's mapping; a table whose mapping has problems is left unmapped with
/// them (`Unmapped::Problems`), for a plan that needs it to stop at. Returns the problems
/// instead where they are the mapping file's or the target's as a whole.
pub fn build_each(
    source: &SchemaReport,
    target: &SchemaReport,
    file: &MappingFile,
) -> Result<MappingSet, Vec<Problem>> {
    if target.tables.is_empty() && !source.tables.is_empty() {
        return Err(vec![Problem {
            table: format!("the target {}", target.database),
            source: None,
            column: None,
            message: "has no tables to migrate into: create its schema first (`agentctl schema \
                generate --from-source --apply` makes one from the source's), then run this \
                again"
                .into(),
            unfed: false,
        }]);
    }
    let zone = file.settings.timezone.as_str();
    let unknown = unknown_names(source, file);
    let joined: BTreeSet<String> =
        file.entities.values().flat_map(|r| r.join.iter().map(|j| j.table.clone())).collect();
    let mut specs = Vec::new();
    let mut unmapped = Vec::new();
    for table in &source.tables {
        let rule = rule_for(file, &table.name);
        if let Some(reason) = rule.and_then(|r| r.skip.clone()) {
            unmapped.push((table.name.clone(), Unmapped::Skipped { reason }));
            continue;
        }
        if joined.contains(&table.name.name) {
            unmapped.push((table.name.clone(), Unmapped::Merged));
            continue;
        }
        let Some(dst) = target_for(&table.name, rule, target) else {
            let why = match rule.and_then(|r| r.target.as_deref()) {
                Some(t) => Unmapped::Problems {
                    target: None,
                    problems: vec![Problem {
                        table: table.name.to_string(),
                        source: None,
                        column: None,
                        message: target_problem(t, &table.name, target),
                        unfed: false,
                    }],
                },
                None => Unmapped::NoTarget,
            };
            unmapped.push((table.name.clone(), why));
            continue;
        };
        let problems = |problems| Unmapped::Problems { target: Some(dst.name.clone()), problems };
        match map_table(table, dst, rule, source, target, zone) {
            Ok(mut spec) => {
                for c in &mut spec.columns {
                    if let Feed::Reference { columns, parent, parent_key } = &mut c.feed {
                        *parent_key = compared_key(table, source, columns, parent);
                    }
                }
                // A parent the mapping file leaves out or merges: what becomes of the reference
                // is the file's decision.
                let decided = |parent: &TableName| {
                    joined.contains(&parent.name)
                        || rule_for(file, parent).is_some_and(|r| r.skip.is_some())
                };
                let lost = lost_references(table, dst, &spec, decided);
                match lost.is_empty() {
                    true => specs.push(spec),
                    false => unmapped.push((table.name.clone(), problems(lost))),
                }
            }
            Err(p) => unmapped.push((table.name.clone(), problems(p))),
        }
    }
    let set = resolved(file, specs, unmapped);
    match unknown.is_empty() {
        true => Ok(set),
        // The file's own mistakes stop everything, named with every table's problems.
        false => Err(unknown.into_iter().chain(problems_in(&set)).collect()),
    }
}

/// Every problem of the tables whose mapping has any.
fn problems_in(set: &MappingSet) -> Vec<Problem> {
    set.unmapped
        .iter()
        .flat_map(|(_, why)| match why {
            Unmapped::Problems { problems, .. } => problems.clone(),
            _ => Vec::new(),
        })
        .collect()
}

/// The groups' members and the entities the mapping file names that the source does not have.
fn unknown_names(source: &SchemaReport, file: &MappingFile) -> Vec<Problem> {
    let problem = |table: &str, message: String| Problem {
        table: table.to_owned(),
        source: None,
        column: None,
        message,
        unfed: false,
    };
    // The tables a bare name several schemas share could mean, but those with a rule of their
    // own under their schema: more than one, and the name says not which.
    let shared = |name: &str| -> Vec<String> {
        let meant: Vec<String> = source
            .tables
            .iter()
            .filter(|t| t.name.name == name && !file.entities.contains_key(&t.name.qualified()))
            .map(|t| t.name.qualified())
            .collect();
        if meant.len() > 1 {
            meant
        } else {
            Vec::new()
        }
    };
    let exists = |name: &str| {
        source.tables.iter().any(|t| t.name.name == name || t.name.qualified() == name)
    };
    let mut problems = Vec::new();
    // A group's member is found as a goal's word is (`SchemaReport::find`): a name several
    // schemas share is refused whatever rules the file has for those tables.
    for (group, members) in &file.groups {
        for m in members.iter().filter(|m| source.find(m).is_none()) {
            let meant = source.sharing(m);
            let why = match meant.first() {
                Some(first) => format!(
                    "group `{group}` names {} tables ({}): write the schema, \"{first}\"",
                    meant.len(),
                    meant.join(", ")
                ),
                None => format!("group `{group}` names a table the source does not have"),
            };
            problems.push(problem(m, why));
        }
    }
    for name in file.entities.keys() {
        let meant = shared(name);
        if !exists(name) {
            let why = "the mapping file names a table the source does not have".to_owned();
            problems.push(problem(name, why));
        } else if let Some(first) = meant.first() {
            let why = format!(
                "names {} tables ({}): key the rule by the schema, [entities.\"{first}\"]",
                meant.len(),
                meant.join(", ")
            );
            problems.push(problem(name, why));
        }
    }
    problems
}

/// The mapping set of a file's entities, once every one is mapped without a problem.
fn resolved(
    file: &MappingFile,
    specs: Vec<MappingSpec>,
    unmapped: Vec<(TableName, Unmapped)>,
) -> MappingSet {
    MappingSet {
        keys: Keys { namespace: file.settings.namespace, layout: file.settings.uuid_layout },
        specs,
        unmapped,
        groups: file.groups.clone(),
        previews: Vec::new(),
        declared: file
            .entities
            .iter()
            .filter(|(_, r)| !r.references.is_empty())
            .map(|(e, r)| (e.clone(), r.references.clone()))
            .collect(),
        generic: file
            .entities
            .iter()
            .filter(|(_, r)| !r.generic.is_empty())
            .map(|(e, r)| (e.clone(), r.generic.clone()))
            .collect(),
    }
}

/// The source's foreign keys that the target would not keep: each must become a UUID
/// reference (a column fed by it) or stay a foreign key on the same columns, copied as they are;
/// otherwise its links would be lost while every row arrived.
fn lost_references(
    src: &Table,
    dst: &Table,
    spec: &MappingSpec,
    decided: impl Fn(&TableName) -> bool,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for fk in &src.foreign_keys {
        if decided(&fk.references) || spec.joins.iter().any(|j| fk.columns == [j.on.clone()]) {
            continue;
        }
        let rewritten = spec
            .columns
            .iter()
            .any(|c| matches!(&c.feed, Feed::Reference { columns, .. } if columns == &fk.columns));
        // (A transform on such a column, a trim, is checked by the target's key on every row.)
        let copied = |col: &String| {
            spec.columns.iter().any(|c| {
                &c.target == col && matches!(&c.feed, Feed::Column { column } if column == col)
            })
        };
        let kept = dst.foreign_keys.iter().any(|f| f.columns == fk.columns)
            && fk.columns.iter().all(copied);
        if !rewritten && !kept {
            problems.push(Problem {
                table: dst.name.to_string(),
                source: Some(src.name.name.clone()),
                column: Some(fk.columns.join(", ")),
                message: format!(
                    "foreign key {} to {} is not kept: no uuid column is fed from it and the \
                        target has no foreign key on the same columns, so its links would be \
                        lost (map a column to it, or add the key to the target)",
                    fk.name, fk.references
                ),
                unfed: false,
            });
        }
    }
    problems
}

fn map_table(
    src: &Table,
    dst: &Table,
    rule: Option<&EntityRule>,
    source: &SchemaReport,
    target: &SchemaReport,
    zone: &str,
) -> Result<MappingSpec, Vec<Problem>> {
    let at = |column: Option<&str>, message: String| Problem {
        table: dst.name.to_string(),
        source: Some(src.name.name.clone()),
        column: column.map(str::to_owned),
        message,
        unfed: false,
    };
    let mut problems = Vec::new();
    let (key, _) = src.key();
    if key == [ROW_IDENTITY] && src.column(ROW_IDENTITY).is_some() {
        return Err(vec![at(
            None,
            format!(
                "keyless source table {} has a column named {ROW_IDENTITY}, the name agentctl \
                    gives a keyless row's identity",
                src.name
            ),
        )]);
    }
    let mut used: BTreeSet<String> = key.iter().cloned().collect();
    let (joins, joined_tables) =
        joins_of(rule, source, &mut used, &mut |m| problems.push(at(None, m)));
    // A source column by name: `col` of the mapped table or `table.col` of a joined one.
    let source_column = |name: &str| -> Option<&Column> {
        match name.split_once('.') {
            Some((t, c)) => {
                joined_tables.iter().find(|jt| jt.name.name == t).and_then(|jt| jt.column(c))
            }
            None => src.column(name),
        }
    };
    // A reference becomes the parent's UUID only where it points at the parent's key, from
    // which that UUID is derived (one to another unique rule stays a plain value).
    let fk_of = |col: &str| {
        src.foreign_keys
            .iter()
            .find(|f| f.columns.first().is_some_and(|c| c == col) && source.references_key(f))
    };
    let (mut columns, mut metadata_at) = (Vec::new(), None);
    let sources =
        Sources { src, source, target, zone, source_column: &source_column, fk_of: &fk_of };
    for c in &dst.columns {
        if c.generated.is_some() {
            // The target computes it: a source column of its name computed alike is its (one
            // with values of its own is left over, see `left_behind`).
            used.extend(computed_alike(src, c));
            continue;
        }
        let mapping = match sources.column_mapping(c, dst, rule) {
            Ok(mapping) => mapping,
            Err(e) => {
                problems.push(at(Some(&c.name), e.0));
                continue;
            }
        };
        if mapping.as_ref().is_some_and(|m| matches!(m.feed, Feed::Metadata { .. })) {
            metadata_at = Some(columns.len());
        }
        match mapping {
            Some(m) => {
                for used_col in feed_columns(&m.feed) {
                    used.insert(used_col);
                }
                let unfit = check_fit(&m, c, target, &source_column).err().map(|e| e.0);
                let unfit = unfit.or_else(|| large_objects(&m, src, source, &source_column));
                problems.extend(unfit.map(|e| at(Some(&c.name), e)));
                columns.push(m);
            }
            None if !c.nullable && c.default.is_none() && c.identity.is_none() => {
                problems.push(Problem {
                    unfed: true,
                    ..at(Some(&c.name), format!("{UNFED} (name a `from` in the mapping file)"))
                });
            }
            None => {}
        }
    }
    let dropped = leftovers(src, &used, &mut columns, metadata_at);
    left_behind((src, source), dst, rule, &dropped, &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(MappingSpec {
        source: src.name.clone(),
        target: dst.name.clone(),
        key,
        joins,
        columns,
        dropped,
        sync: rule.map(|r| r.sync).unwrap_or_default(),
    })
}

/// Why a mapping that copies an `oid` column (or a domain over it, such as the `lo`
/// extension's) of a source holding large objects is refused: its values name large objects,
/// which live apart from every table and which agentctl does not copy, so the new rows would
/// name objects that are not there.
fn large_objects<'a>(
    m: &ColumnMapping,
    src: &Table,
    source: &SchemaReport,
    source_column: &dyn Fn(&str) -> Option<&'a Column>,
) -> Option<String> {
    if source.large_objects == 0 {
        return None;
    }
    let names_objects = |c: &Column| {
        c.type_name == "oid" || matches!(&c.type_kind, TypeKind::Domain { base } if base == "oid")
    };
    let column =
        feed_columns(&m.feed).into_iter().find(|f| source_column(f).is_some_and(names_objects))?;
    Some(format!(
        "its source column {column} names large objects (an oid column; the source holds {n} \
            of them), which agentctl does not copy: the new rows would name objects that are not \
            there; keep the contents in a bytea column instead (ALTER TABLE {table} ALTER {col} \
            TYPE bytea USING lo_get({col})), or leave the column on purpose in the mapping file: \
            {header} leave = [\"{column}\"]",
        header = rule_header(&src.name, source),
        n = source.large_objects,
        table = runtime::sql::quoted(&src.name),
        col = runtime::sql::ident(&column),
    ))
}

/// The source column a target generated column `generated` reproduces: the one of its name,
/// generated by the same expression. A plain source column under it is not carried: the
/// target computes its own values and the source's would never arrive.
fn computed_alike(src: &Table, generated: &Column) -> Option<String> {
    src.column(&generated.name)
        .filter(|s| s.generated.is_some() && s.generated == generated.generated)
        .map(|s| s.name.clone())
}

/// How a reference is compared with its parent's key, where a value can equal the key yet be
/// written otherwise ([`ParentKey`]); `None` where equal values are written alike.
fn compared_key(
    src: &Table,
    source: &SchemaReport,
    columns: &[String],
    parent: &TableName,
) -> Option<ParentKey> {
    let parent = source.table(parent)?;
    let key = parent.key().0;
    let pairs: Vec<(&Column, &Column)> = columns
        .iter()
        .zip(&key)
        .map(|(c, k)| Some((src.column(c)?, parent.column(k)?)))
        .collect::<Option<_>>()?;
    if key.len() != columns.len() || pairs.iter().all(|(c, k)| written_alike(c, k)) {
        return None;
    }
    let casts = pairs
        .iter()
        .map(|(c, k)| {
            (c.type_name != k.type_name).then(|| match k.data_type.contains('(') {
                // A builtin type with modifiers, named without them (`bpchar`, not
                // `character`, which is char(1)).
                true => k.type_name.clone(),
                false => k.data_type.clone(),
            })
        })
        .collect();
    Some(ParentKey { columns: key, casts })
}

/// Whether equal values of a reference column and its key column are always written alike:
/// integers, text under the database's collation, or the same type among those whose
/// equality is their text's.
fn written_alike(c: &Column, k: &Column) -> bool {
    let int = |c: &Column| matches!(c.type_name.as_str(), "int2" | "int4" | "int8");
    let text =
        |c: &Column| matches!(c.type_name.as_str(), "text" | "varchar") && c.collation.is_none();
    let by_text = ["uuid", "date", "timestamp", "timestamptz", "bool"];
    (int(c) && int(k))
        || (text(c) && text(k))
        || (c.type_name == k.type_name && by_text.contains(&k.type_name.as_str()))
}

/// A problem for each of `dropped` (source columns no target column takes) that the mapping
/// file's `leave` does not name: nothing may be left behind unsaid. Only where there is no
/// other problem: which columns are left over is known once every rule reads what it names.
fn left_behind(
    (src, source): (&Table, &SchemaReport),
    dst: &Table,
    rule: Option<&EntityRule>,
    dropped: &[String],
    problems: &mut Vec<Problem>,
) {
    if !problems.is_empty() {
        return;
    }
    let leave = rule.map(|r| r.leave.as_slice()).unwrap_or_default();
    problems.extend(dropped.iter().filter(|c| !leave.contains(c)).map(|column| {
        let (why, fix) = match dst.column(column).and_then(|c| c.generated.as_ref()) {
            Some(expr) => (
                format!(
                    "{dst}.{column} is computed by the target (GENERATED ALWAYS AS ({expr})), not \
                        copied, and {dst} has no metadata column: the source's own values would \
                        be left behind",
                    dst = dst.name
                ),
                format!("make {}.{column} a plain column", dst.name),
            ),
            None => (
                format!(
                    "no column of {dst} takes it, and {dst} has no metadata column: its values \
                        would be left behind",
                    dst = dst.name
                ),
                format!("add the column to {}", dst.name),
            ),
        };
        Problem {
            table: src.name.to_string(),
            source: Some(src.name.name.clone()),
            column: Some(column.clone()),
            message: format!(
                "{why}; {fix}, or leave it on purpose in the mapping file: {} leave = \
                    [\"{column}\"]",
                rule_header(&src.name, source)
            ),
            unfed: false,
        }
    }));
}

/// The source columns the mapping does not use: into the target's `metadata` when it has one
/// (its rationale says which), else returned: left behind only where the mapping file's
/// `leave` names them, a problem otherwise.
fn leftovers(
    src: &Table,
    used: &BTreeSet<String>,
    columns: &mut [ColumnMapping],
    metadata_at: Option<usize>,
) -> Vec<String> {
    let rest: Vec<String> =
        src.columns.iter().map(|c| c.name.clone()).filter(|n| !used.contains(n)).collect();
    match metadata_at {
        Some(i) => {
            columns[i].rationale = if rest.is_empty() {
                "no legacy column is left over".into()
            } else {
                format!("legacy columns with no target column: {}", rest.join(", "))
            };
            columns[i].feed = Feed::Metadata { columns: rest };
            Vec::new()
        }
        None => rest,
    }
}

/// The mapping file's joins of an entity, with the tables they read; a joined table the source
/// does not have is a problem, told to `problem`.
fn joins_of<'a>(
    rule: Option<&EntityRule>,
    source: &'a SchemaReport,
    used: &mut BTreeSet<String>,
    problem: &mut dyn FnMut(String),
) -> (Vec<Join>, Vec<&'a Table>) {
    let mut joins = Vec::new();
    let mut joined_tables: Vec<&Table> = Vec::new();
    for j in rule.map(|r| r.join.as_slice()).unwrap_or_default() {
        match source.find(&j.table) {
            Some(t) => {
                // The join column is carried by the joined table's own columns.
                used.insert(j.on.clone());
                joins.push(Join { table: t.name.clone(), on: j.on.clone(), key: j.key.clone() });
                joined_tables.push(t);
            }
            None => problem(match source.shared(&j.table) {
                Some(shared) => format!("joins {shared}"),
                None => format!("joins `{}`, which the source does not have", j.table),
            }),
        }
    }
    (joins, joined_tables)
}

/// Where a mapped table's columns can come from: the source table (and the tables it joins),
/// its references, the target and the time zone.
struct Sources<'a> {
    src: &'a Table,
    source: &'a SchemaReport,
    target: &'a SchemaReport,
    zone: &'a str,
    source_column: &'a dyn Fn(&str) -> Option<&'a Column>,
    fk_of: &'a dyn Fn(&str) -> Option<&'a runtime::domain::ForeignKey>,
}

impl Sources<'_> {
    /// Whether `c` is the target's column for what no other column takes: a json `metadata`,
    /// unless the source has a `metadata` of its own, which is data fed by its name.
    fn leftovers_into(&self, c: &Column) -> bool {
        c.name == "metadata" && category(c) == "json" && self.src.column("metadata").is_none()
    }

    /// What feeds a target column: a generic reference or a rule of the mapping file, else
    /// the key, the legacy key, the metadata, or a source column of the same name (a
    /// reference to its parent's UUID where it is one); `None` when nothing does.
    fn column_mapping(
        &self,
        c: &Column,
        dst: &Table,
        rule: Option<&EntityRule>,
    ) -> Result<Option<ColumnMapping>, BadInput> {
        // The row's own UUID: the primary key, or its `id` part (a partitioned table's key also
        // holds its partition columns).
        let pk_is_uuid = |c: &Column| {
            c.type_name == "uuid"
                && ((dst.primary_key.len() == 1 && dst.primary_key[0] == c.name)
                    || (c.name == "id" && dst.primary_key.contains(&c.name)))
        };
        let file_rule = rule.and_then(|r| r.columns.get(&c.name));
        let generic = rule.and_then(|r| r.generic.get(&c.name)).filter(|_| file_rule.is_none());
        Ok(if let Some(g) = generic {
            match generic_feed(&c.name, g, self.source) {
                Ok(feed) => Some(ColumnMapping {
                    target: c.name.clone(),
                    feed,
                    transforms: vec![],
                    rationale: format!(
                        "the UUID of the row its {} names (a generic reference, \
                        declared in the mapping file)",
                        g.by
                    ),
                }),
                Err(e) => return Err(e),
            }
        } else if let Some(r) = file_rule {
            match from_rule(r, c, self.zone, self.source_column, self.fk_of) {
                Ok(m) => Some(m),
                Err(e) => return Err(e),
            }
        } else if pk_is_uuid(c) {
            Some(ColumnMapping {
                target: c.name.clone(),
                feed: Feed::Key,
                transforms: vec![],
                rationale: "derived from the legacy key".into(),
            })
        } else if c.name == "legacy_id" {
            Some(ColumnMapping {
                target: c.name.clone(),
                feed: Feed::LegacyKey,
                transforms: vec![],
                rationale: "the legacy key, kept".into(),
            })
        } else if self.leftovers_into(c) {
            Some(ColumnMapping {
                target: c.name.clone(),
                feed: Feed::Metadata { columns: vec![] },
                transforms: vec![],
                rationale: String::new(),
            })
        } else {
            self.by_name(c, rule)
        })
    }

    /// The source column of `c`'s name (or `c`'s name with `_cents`, or the data column a
    /// generated target renamed) that the mapping file does not leave behind.
    fn by_name(&self, c: &Column, rule: Option<&EntityRule>) -> Option<ColumnMapping> {
        // A data column `id` or `legacy_id` is kept as `source_id` or `source_legacy_id` by a
        // generated target (the target's key has those names).
        let renamed = c.name.strip_prefix("source_").filter(|original| {
            self.src.renamed_data_column(original).as_deref() == Some(c.name.as_str())
        });
        let candidates =
            [Some(c.name.clone()), Some(format!("{}_cents", c.name)), renamed.map(str::to_owned)];
        let leave = rule.map(|r| r.leave.as_slice()).unwrap_or_default();
        let sc = candidates
            .iter()
            .flatten()
            .filter_map(|n| self.src.column(n))
            .find(|sc| !leave.contains(&sc.name))?;
        Some(match (self.fk_of)(&sc.name) {
            Some(fk) if category(c) == "uuid" => ColumnMapping {
                target: c.name.clone(),
                feed: Feed::Reference {
                    columns: vec![sc.name.clone()],
                    parent: fk.references.clone(),
                    parent_key: None,
                },
                transforms: vec![],
                rationale: format!("same name; the UUID of the {} row it points at", fk.references),
            },
            _ => {
                let (transforms, rationale) = inferred_transforms(sc, c, self.target, self.zone);
                ColumnMapping {
                    target: c.name.clone(),
                    feed: Feed::Column { column: sc.name.clone() },
                    transforms,
                    rationale,
                }
            }
        })
    }
}

fn feed_columns(feed: &Feed) -> Vec<String> {
    match feed {
        Feed::Column { column } => vec![column.clone()],
        Feed::Concat { columns, .. }
        | Feed::Reference { columns, .. }
        | Feed::Metadata { columns } => columns.clone(),
        Feed::Generic { column, by, .. } => vec![column.clone(), by.clone()],
        _ => vec![],
    }
}

/// A generic reference's feed: the parents its rule names (filled in from Django's content
/// types before the mapping is built), each a source table with a one-column key.
fn generic_feed(column: &str, rule: &GenericRule, source: &SchemaReport) -> Result<Feed, BadInput> {
    if rule.parents.is_empty() {
        return Err(BadInput(format!(
            "the generic reference by {} names no table: give `parents = {{ \"value\" = \"table\" \
                }}` in the mapping file",
            rule.by
        )));
    }
    let mut parents = BTreeMap::new();
    for (kind, name) in &rule.parents {
        let t = source.find(name).ok_or_else(|| {
            BadInput(match source.shared(name) {
                Some(shared) => format!("the generic reference's parent {shared}"),
                None => {
                    format!("the generic reference's parent `{name}` is not a table of the source")
                }
            })
        })?;
        let (key, from) = t.key();
        if key.len() != 1 || matches!(from, runtime::domain::KeySource::Content) {
            return Err(BadInput(format!(
                "the generic reference's parent {} has no one-column key to point at",
                t.name
            )));
        }
        parents.insert(kind.clone(), t.name.clone());
    }
    Ok(Feed::Generic { column: column.to_owned(), by: rule.by.clone(), parents })
}

fn from_rule<'a>(
    r: &ColumnRule,
    dst: &Column,
    zone: &str,
    source_column: &dyn Fn(&str) -> Option<&'a Column>,
    fk_of: &dyn Fn(&str) -> Option<&'a runtime::domain::ForeignKey>,
) -> Result<ColumnMapping, BadInput> {
    let mut transforms =
        r.transforms.iter().map(|t| parse_transform(t, zone)).collect::<Result<Vec<_>, _>>()?;
    if let Some(values) = &r.values {
        transforms.push(Transform::Values { map: values.clone() });
    }
    if let Some(d) = &r.default {
        transforms.push(Transform::Default { value: d.clone() });
    }
    if let Some(script) = &r.transform {
        let code = script.code.clone().ok_or_else(|| {
            BadInput(format!("the transform script {} was not read", script.python))
        })?;
        transforms.insert(0, Transform::Script { path: script.python.clone(), code });
    }
    let feed = match (&r.from, &r.concat, &r.constant) {
        (Some(col), None, None) => {
            source_column(col).ok_or_else(|| {
                BadInput(format!("the mapping file reads `{col}`, which the source does not have"))
            })?;
            match fk_of(col) {
                Some(_) if r.transform.is_some() => {
                    return Err(BadInput(format!(
                        "`{col}` is a reference; a transform script cannot feed it"
                    )))
                }
                Some(fk) if category(dst) == "uuid" => Feed::Reference {
                    columns: vec![col.clone()],
                    parent: fk.references.clone(),
                    parent_key: None,
                },
                _ => Feed::Column { column: col.clone() },
            }
        }
        (None, Some(_), None) | (None, None, Some(_)) if r.transform.is_some() => {
            return Err(BadInput("a transform script takes one column: give it with `from`".into()))
        }
        (None, Some(cols), None) => {
            if let Some(missing) = cols.iter().find(|c| source_column(c).is_none()) {
                return Err(BadInput(format!(
                    "the mapping file concatenates `{missing}`, which the source does not have"
                )));
            }
            Feed::Concat {
                columns: cols.clone(),
                separator: r.separator.clone().unwrap_or_else(|| " ".into()),
            }
        }
        (None, None, Some(v)) => Feed::Constant { value: v.clone() },
        _ => {
            return Err(BadInput(
                "the mapping file must give exactly one of `from`, `concat` or `constant`".into(),
            ))
        }
    };
    Ok(ColumnMapping {
        target: dst.name.clone(),
        feed,
        transforms,
        rationale: "set in the mapping file".into(),
    })
}

/// Whether the mapped value can be of the target column's type at all.
fn check_fit<'a>(
    m: &ColumnMapping,
    dst: &Column,
    target: &SchemaReport,
    source_column: &dyn Fn(&str) -> Option<&'a Column>,
) -> Result<(), BadInput> {
    let d = category(dst);
    for t in &m.transforms {
        if let Transform::Values { map } = t {
            if let (TypeKind::Enum, Some(labels)) =
                (&dst.type_kind, target.enums.get(&dst.type_name))
            {
                if let Some((from, to)) = map.iter().find(|(_, v)| !labels.contains(v)) {
                    return Err(BadInput(format!(
                        "maps `{from}` to `{to}`, which is not a value of {} ({})",
                        dst.type_name,
                        labels.join(", ")
                    )));
                }
            }
            return Ok(());
        }
    }
    let produced = match (&m.feed, m.transforms.last()) {
        (Feed::Key | Feed::Reference { .. } | Feed::Generic { .. }, _) => "uuid",
        (Feed::Metadata { .. }, _) => "json",
        (Feed::Constant { .. } | Feed::Concat { .. } | Feed::LegacyKey, _) => return Ok(()),
        (_, Some(Transform::Cents)) => "number",
        (_, Some(Transform::Bool)) => "bool",
        (_, Some(Transform::Json)) => "json",
        (_, Some(Transform::Timestamptz { .. })) => "timestamptz",
        // Whatever the script returns: each value is checked against the column's type.
        (_, Some(Transform::Script { .. })) => "other",
        (Feed::Column { column }, _) => source_column(column).map(category).unwrap_or("other"),
    };
    let fits = produced == d
        || matches!(
            (produced, d),
            ("int", "number")
                | ("text", "enum")
                | ("text", "json")
                | ("timestamp", "timestamptz")
                | ("date", "timestamp")
                | ("date", "timestamptz")
                | ("timestamptz", "timestamp")
                | ("int", "text")
                | ("number", "text")
                | ("uuid", "text")
                | (_, "text")
                | ("other", _)
        );
    if fits {
        Ok(())
    } else {
        Err(BadInput(format!(
            "a {produced} value cannot go into {} without a transform",
            dst.data_type
        )))
    }
}

/// A mapping as an operator reads it.
pub fn render(spec: &MappingSpec) -> String {
    let mut out =
        format!("{} -> {} (legacy key: {})\n", spec.source, spec.target, spec.key.join(", "));
    for j in &spec.joins {
        out.push_str(&format!(
            "  joins {} on {}.{} = {}.{}\n",
            j.table, spec.source.name, j.on, j.table.name, j.key
        ));
    }
    for c in &spec.columns {
        let from = match &c.feed {
            Feed::Key => "uuid(legacy key)".to_owned(),
            Feed::LegacyKey => "legacy key".to_owned(),
            Feed::Column { column } => column.clone(),
            Feed::Concat { columns, separator } => {
                format!("{} joined by {separator:?}", columns.join(" + "))
            }
            Feed::Reference { columns, parent, parent_key } => format!(
                "uuid({parent}: {}{})",
                columns.join(", "),
                if parent_key.is_some() { ", as the key it equals is written" } else { "" }
            ),
            Feed::Generic { column, by, parents } => {
                format!("uuid(the table {by} names, one of {}: {column})", parents.len())
            }
            Feed::Constant { value } => format!("{value:?}"),
            Feed::Metadata { columns } => format!("{{{}}}", columns.join(", ")),
        };
        let steps: Vec<String> = c
            .transforms
            .iter()
            .map(|t| match t {
                Transform::Values { map } => {
                    format!(
                        "values({})",
                        map.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
                    )
                }
                Transform::Timestamptz { zone } => format!("timestamptz({zone})"),
                Transform::Default { value } => format!("default({value})"),
                Transform::Script { path, .. } => format!("python({path})"),
                other => serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v["kind"].as_str().map(str::to_owned))
                    .unwrap_or_default(),
            })
            .collect();
        let steps =
            if steps.is_empty() { String::new() } else { format!(" | {}", steps.join(" | ")) };
        out.push_str(&format!("  {:<18} <- {from}{steps}\n", c.target));
        if !c.rationale.is_empty() {
            out.push_str(&format!("  {:<18}    ({})\n", "", c.rationale));
        }
    }
    if !spec.dropped.is_empty() {
        out.push_str(&format!(
            "  left behind on purpose (the mapping file's `leave`): {}\n",
            spec.dropped.join(", ")
        ));
    }
    out
}

/// The inferred mapping as a file to edit (`agentctl mapping init`).
pub fn to_file(set: &MappingSet) -> MappingFile {
    let mut file = MappingFile {
        settings: Settings {
            namespace: set.keys.namespace,
            uuid_layout: set.keys.layout,
            timezone: "UTC".into(),
        },
        groups: set.groups.clone(),
        entities: BTreeMap::new(),
    };
    let sources = || set.specs.iter().map(|s| &s.source).chain(set.unmapped.iter().map(|(t, _)| t));
    let targets = || set.specs.iter().map(|s| &s.target);
    for spec in &set.specs {
        let mut columns = BTreeMap::new();
        for c in &spec.columns {
            let mut rule = ColumnRule::default();
            match &c.feed {
                Feed::Column { column } => rule.from = Some(column.clone()),
                Feed::Reference { columns, .. } => rule.from = columns.first().cloned(),
                Feed::Concat { columns, separator } => {
                    rule.concat = Some(columns.clone());
                    rule.separator = Some(separator.clone());
                }
                Feed::Constant { value } => rule.constant = Some(value.clone()),
                // Keys, legacy keys and metadata are always derived.
                _ => continue,
            }
            for t in &c.transforms {
                match t {
                    Transform::Values { map } => rule.values = Some(map.clone()),
                    Transform::Default { value } => rule.default = Some(value.clone()),
                    Transform::Script { path, code } => {
                        rule.transform =
                            Some(ScriptRule { python: path.clone(), code: Some(code.clone()) })
                    }
                    Transform::Timestamptz { zone } => {
                        file.settings.timezone = zone.clone();
                        rule.transforms.push("timestamptz".into());
                    }
                    other => rule.transforms.push(
                        serde_json::to_value(other)
                            .ok()
                            .and_then(|v| v["kind"].as_str().map(str::to_owned))
                            .unwrap_or_default(),
                    ),
                }
            }
            columns.insert(c.target.clone(), rule);
        }
        let join = spec
            .joins
            .iter()
            .map(|j| JoinRule { table: j.table.name.clone(), on: j.on.clone(), key: j.key.clone() })
            .collect();
        file.entities.insert(
            file_key(&spec.source, sources()),
            EntityRule {
                target: Some(file_key(&spec.target, targets())),
                skip: None,
                join,
                columns,
                leave: spec.dropped.clone(),
                sync: spec.sync,
                references: keyed(&set.declared, &spec.source).cloned().unwrap_or_default(),
                generic: keyed(&set.generic, &spec.source).cloned().unwrap_or_default(),
            },
        );
    }
    for (t, why) in &set.unmapped {
        if let Unmapped::Skipped { reason } = why {
            file.entities.insert(
                file_key(t, sources()),
                EntityRule { skip: Some(reason.clone()), ..EntityRule::default() },
            );
        }
    }
    file
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MapRequest {
    pub source: SchemaReport,
    pub target: SchemaReport,
    pub file: MappingFile,
    /// Where the file came from, for the trail: a path, or "inferred".
    pub file_origin: String,
    /// Try the custom transforms on sample rows (for a plan or `mapping show`; a rollback or
    /// a validation has no use for it, and must not need the sandbox for it).
    pub preview: bool,
    /// Leave a table whose mapping has problems unmapped with them, for the plan to stop at
    /// only when it needs the table (`mapping show` and `init` name every problem instead).
    pub partial: bool,
}

pub enum DataMappingMsg {
    Map(Envelope<MapRequest>, RpcReplyPort<Result<MappingSet, AgentError>>),
}

#[derive(Clone)]
pub struct DataMappingAgent;

#[derive(Clone)]
pub struct DataMappingArgs {
    pub ctx: Arc<RunContext>,
    /// Proposes a source for target columns nothing feeds, when configured.
    pub llm: Option<Arc<dyn runtime::ports::Llm>>,
    /// The source's rows with custom transforms applied, to try them on samples.
    pub rows: Arc<crate::code::ScriptedRows>,
}

/// Sample rows each custom transform is tried on before the run.
pub const PREVIEW_ROWS: usize = 5;

/// Tries every custom transform on sample rows in the sandbox; a script that cannot run fails
/// the mapping, before anything is planned on it.
async fn preview_scripts(
    ctx: &RunContext,
    rows: &crate::code::ScriptedRows,
    set: &mut MappingSet,
) -> Result<(), ToolError> {
    for spec in &set.specs {
        for preview in crate::code::preview(rows, spec, PREVIEW_ROWS)
            .await
            .map_err(|e| e.context(&spec.source))?
        {
            let failed = preview
                .samples
                .iter()
                .filter(|s| matches!(s.after, runtime::mapping::Answered::Rejected(_)))
                .count();
            ctx.decision(
                ME,
                format!(
                    "{}.{}: tried {} on {} sample rows ({failed} raised)",
                    spec.source.name,
                    preview.column,
                    preview.path,
                    preview.samples.len()
                ),
                "a custom transform runs in the sandbox; it is tried before the run so the \
                    operator sees what it does",
                // Counts only: the audit trail keeps no row contents.
                serde_json::json!({"column": preview.column, "path": preview.path, "samples": preview.samples.len(), "raised": failed}),
            );
            set.previews.push((spec.source.clone(), preview));
        }
    }
    Ok(())
}

/// What the model proposes for a target column the mapper could not feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ColumnProposal {
    /// The source column that feeds it, if any does.
    pub from: Option<String>,
    /// Steps applied to the value: trim, lower, upper, null_if_empty, cents, bool, json,
    /// timestamptz.
    pub transforms: Vec<String>,
    /// Why, in a sentence.
    pub why: String,
}

/// The problem a column nothing feeds has, which a proposal may answer.
const UNFED: &str = "is NOT NULL without a default, and nothing in the source feeds it";

/// Asks the model for a source for each target column nothing feeds; the proposals go into a
/// copy of the mapping file and the whole mapping is built again by the same code, which checks
/// that the columns exist and the types fit. Accepted only if that build has no problem left;
/// every proposal is recorded with the verdict.
async fn propose_with_llm(
    ctx: &RunContext,
    llm: &dyn runtime::ports::Llm,
    req: &MapRequest,
    problems: &[Problem],
) -> Option<MappingSet> {
    let unfed: Vec<&Problem> =
        problems.iter().filter(|p| p.unfed && p.source.is_some() && p.column.is_some()).collect();
    if unfed.is_empty() || unfed.len() < problems.len() {
        return None;
    }
    let mut file = req.file.clone();
    let mut proposals = Vec::new();
    for p in unfed {
        let (source, column) = (p.source.as_deref()?, p.column.as_deref()?);
        let src = req.source.find(source)?;
        let dst = req.target.find(&p.table)?;
        let col = dst.column(column)?;
        let columns: Vec<String> =
            src.columns.iter().map(|c| format!("{} {}", c.name, c.data_type)).collect();
        let system = prompts::fill(
            prompts::COLUMN,
            &[
                ("source", source),
                ("columns", &columns.join(", ")),
                ("target", &format!("{}.{} {}", p.table, column, col.data_type)),
            ],
        )
        .ok()?;
        let question = format!("Which column of {source} feeds {}.{column}?", p.table);
        match crate::llm::ask_typed::<ColumnProposal>(
            ctx,
            llm,
            ME,
            "column_mapping",
            "The source of a target column",
            &system,
            &question,
        )
        .await
        {
            Ok(proposal) => {
                let rule = file.entities.entry(source.to_owned()).or_default();
                rule.columns.insert(
                    column.to_owned(),
                    ColumnRule {
                        from: proposal.from.clone(),
                        transforms: proposal.transforms.clone(),
                        ..ColumnRule::default()
                    },
                );
                proposals.push((format!("{}.{column}", p.table), proposal));
            }
            Err(why) => {
                ctx.decision(
                    ME,
                    format!("no proposal for {}.{column}", p.table),
                    format!("the model failed: {why}"),
                    p,
                );
                return None;
            }
        }
    }
    match build(&req.source, &req.target, &file) {
        Ok(set) => {
            for (at, proposal) in &proposals {
                ctx.decision(
                    ME,
                    format!(
                        "took the model's proposal for {at}: {}",
                        proposal.from.as_deref().unwrap_or("(no source)")
                    ),
                    format!(
                        "{} (checked by the mapper: the column exists and its type fits)",
                        proposal.why
                    ),
                    proposal,
                );
            }
            Some(set)
        }
        Err(left) => {
            let lines: Vec<String> = left.iter().map(ToString::to_string).collect();
            ctx.decision(
                ME,
                format!("rejected the model's proposals for {} columns", proposals.len()),
                lines.join("; "),
                &proposals,
            );
            None
        }
    }
}

impl Actor for DataMappingAgent {
    type Msg = DataMappingMsg;
    type State = DataMappingArgs;
    type Arguments = DataMappingArgs;

    async fn pre_start(
        &self,
        _: ActorRef<DataMappingMsg>,
        args: DataMappingArgs,
    ) -> Result<DataMappingArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _: ActorRef<DataMappingMsg>,
        msg: DataMappingMsg,
        state: &mut DataMappingArgs,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DataMappingMsg::Map(env, reply) => {
                let mut req = env.body;
                match content_types(state.rows.as_ref(), &req.source, &req.file).await {
                    Ok(file) => req.file = file,
                    Err(e) => {
                        let _ = reply.send(Err(AgentError::of(ME, e)));
                        return Ok(());
                    }
                }
                let result = match (build(&req.source, &req.target, &req.file), &state.llm) {
                    (Err(problems), Some(llm)) => {
                        match propose_with_llm(&state.ctx, llm.as_ref(), &req, &problems).await {
                            Some(set) => Ok(set),
                            None => Err(problems),
                        }
                    }
                    (result, _) => result,
                };
                let result = match result {
                    Err(_) if req.partial => build_each(&req.source, &req.target, &req.file),
                    result => result,
                };
                let result = match result {
                    Ok(set) if !req.preview => Ok(set),
                    Ok(mut set) => match preview_scripts(&state.ctx, &state.rows, &mut set).await {
                        Ok(()) => Ok(set),
                        Err(e) => {
                            let _ = reply.send(Err(AgentError::of(
                                ME,
                                e.context("a custom transform cannot run"),
                            )));
                            return Ok(());
                        }
                    },
                    Err(problems) => Err(problems),
                };
                match &result {
                    Ok(set) => {
                        for spec in &set.specs {
                            let how: Vec<String> = spec
                                .columns
                                .iter()
                                .map(|c| format!("{}: {}", c.target, c.rationale))
                                .collect();
                            state.ctx.decision(
                                ME,
                                format!("mapped {} to {}", spec.source, spec.target),
                                how.join("; "),
                                spec,
                            );
                        }
                        for (t, why) in &set.unmapped {
                            state.ctx.decision(
                                ME,
                                format!("{t} is not migrated on its own"),
                                why.to_string(),
                                t,
                            );
                        }
                    }
                    Err(problems) => {
                        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
                        state.ctx.decision(
                            ME,
                            format!("the mapping has {} problems", problems.len()),
                            lines.join("; "),
                            problems,
                        );
                    }
                }
                let _ = reply.send(result.map_err(|p| problems_error(&req.file_origin, &p)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
