//! The forecast: every source row of every planned entity, through its mapping and the target's
//! rules, in plan order, without writing anything. Rules on one row come from
//! [`RowMapper`]; this module adds the rules that need other rows: unique keys (the first row
//! in key order wins, as it will when migrating) and references (a row whose parent does not
//! exist, or will itself be rejected, is rejected too; self-references are settled to a fixed
//! point). The result is the number of rows each entity will migrate and reject, by reason.

use runtime::error::ToolError;
use std::collections::{BTreeMap, HashMap, HashSet};

use runtime::domain::Scan;
use runtime::domain::{Forecast, RejectReason, SchemaReport, TableName};
use runtime::ports::Rows;
use runtime::text_rows::TextRows;

use crate::transform::{GenericReference, ReferenceMemo, Rejection, RowMapper};
use runtime::mapping::{key_text, split_key, MappingSet};

/// Legacy keys, compactly: integers as integers.
#[derive(Default)]
struct KeySet {
    ints: HashSet<i64>,
    texts: HashSet<String>,
}

impl KeySet {
    fn insert(&mut self, key: &[&str]) {
        match key {
            [one] if one.parse::<i64>().is_ok() => {
                self.ints.insert(one.parse().expect("checked"));
            }
            _ => {
                self.texts.insert(key_text(key));
            }
        }
    }

    fn contains(&self, key: &[&str]) -> bool {
        match key {
            [one] => one
                .parse::<i64>()
                .map(|n| self.ints.contains(&n))
                .unwrap_or_else(|_| self.texts.contains(*one)),
            _ => self.texts.contains(&key_text(key)),
        }
    }
}

const EXAMPLES: usize = 5;

#[derive(Default)]
struct Tally {
    reasons: BTreeMap<String, RejectReason>,
}

impl Tally {
    /// The entity's forecast: its rows, and the rejections by reason, the most first.
    fn forecast(self, count: i64, unchecked: Vec<String>) -> Forecast {
        let reject: i64 = self.reasons.values().map(|r| r.count).sum();
        let mut reasons: Vec<RejectReason> = self.reasons.into_values().collect();
        reasons.sort_by(|a, b| b.count.cmp(&a.count).then(a.rule.cmp(&b.rule)));
        Forecast { rows: count, migrate: count - reject, reject, reasons, unchecked }
    }

    fn add(&mut self, r: &Rejection, key: &str) {
        let e = self.reasons.entry(cause(&r.rule, &r.reason)).or_insert_with(|| RejectReason {
            rule: r.rule.clone(),
            reason: r.reason.clone(),
            count: 0,
            examples: vec![],
        });
        joined(&mut e.reason, &r.reason);
        e.count += 1;
        if e.examples.len() < EXAMPLES {
            e.examples.push(key.to_owned());
        }
    }
}

/// What rejections are counted together by: their rule, and for a reference its cause too (the
/// parent rejected itself, never in the source, not migrated), which its words say after the
/// parent's key: each cause is a line of its own, its words true of every row it counts.
fn cause(rule: &str, reason: &str) -> String {
    match rule.starts_with("reference:") {
        true => format!("{rule}\u{0}{}", reason.rsplit_once(") ").map_or(reason, |(_, why)| why)),
        false => rule.to_owned(),
    }
}

/// The words of a group of references counted together (by [`cause`]) once `reason` joins it:
/// while every row points at the same parent they name it; rows pointing at different parents
/// share the words without a parent's key, which would be true of one of them only.
fn joined(words: &mut String, reason: &str) {
    if words != reason {
        if let Some((head, why)) = words.rsplit_once(") ") {
            if let Some((at, _)) = head.rsplit_once(" (") {
                *words = format!("{at} {why}");
            }
        }
    }
}

/// A unique rule of the target, as output column indexes (with `lower`/`upper` applied).
struct UniqueRule {
    name: String,
    parts: Vec<(usize, Option<&'static str>)>,
    seen: HashMap<Vec<String>, String>,
}

/// Self-references: a row stands once its parent stands; repeated until nothing changes. The
/// rows left are rejected, naming the first reference that did not settle.
fn settle_self_references(
    mut self_refs: Vec<(String, Vec<(String, String)>)>,
    ok_keys: &mut KeySet,
    bad_keys: &mut KeySet,
    tally: &mut Tally,
    target_name: &str,
    source: &TableName,
) {
    loop {
        let before = self_refs.len();
        self_refs.retain(|(key, pending)| {
            if pending.iter().all(|(_, p)| ok_keys.contains(&[p.as_str()]) || (p == key)) {
                ok_keys.insert(&[key.as_str()]);
                false
            } else {
                true
            }
        });
        if self_refs.len() == before {
            break;
        }
    }
    for (key, pending) in self_refs {
        let (col, parent) = pending
            .iter()
            .find(|(_, p)| !ok_keys.contains(&[p.as_str()]))
            .expect("an unsettled reference");
        let r = Rejection {
            column: Some(col.clone()),
            rule: format!("reference:{col}"),
            reason: format!(
                "{}.{col}: the {source} row it points at ({parent}) is not migrated",
                target_name
            ),
        };
        tally.add(&r, &key);
        bad_keys.insert(&[key.as_str()]);
    }
}

/// The rows of earlier entities that pointed at this one (the plan broke a cycle there): each
/// is rejected where the row it points at is not migrated. (Rows of this entity that pointed
/// back at such a row were counted before it was known; the load's final put-back of the
/// cycle's key refuses them.)
fn settle_awaiting(
    out: &mut [(TableName, Forecast)],
    settled: Vec<(usize, String, String, TableName, String)>,
    known: Option<&KeySet>,
    rejected: &mut HashMap<TableName, KeySet>,
    mappings: &MappingSet,
) {
    for (at, key, col, parent, parent_key) in settled {
        if known.is_some_and(|k| {
            k.contains(&split_key(&parent_key).iter().map(|p| p.as_ref()).collect::<Vec<_>>())
        }) {
            continue;
        }
        let (child, forecast) = &mut out[at];
        if let Some(bad) = rejected.get_mut(child) {
            bad.insert(&[key.as_str()]);
        }
        let target_name = mappings.spec(child).map(|s| s.target.name.clone()).unwrap_or_default();
        let rule = format!("reference:{col}");
        let reason = format!(
            "{target_name}.{col}: the {parent} row it points at ({parent_key}) is not migrated"
        );
        forecast.migrate -= 1;
        forecast.reject += 1;
        let counted = cause(&rule, &reason);
        match forecast.reasons.iter_mut().find(|r| cause(&r.rule, &r.reason) == counted) {
            Some(r) => {
                joined(&mut r.reason, &reason);
                r.count += 1;
                if r.examples.len() < EXAMPLES {
                    r.examples.push(key);
                }
            }
            None => {
                forecast.reasons.push(RejectReason { rule, reason, count: 1, examples: vec![key] })
            }
        }
    }
}

/// The tables some planned entity references: their keys are remembered as they are forecast.
fn referenced_parents(order: &[TableName], mappings: &MappingSet) -> HashSet<TableName> {
    order.iter().filter_map(|t| mappings.spec(t)).flat_map(|s| s.parents().cloned()).collect()
}

/// An entity's mapping compiled against its target table, with the rules across rows.
struct Compiled {
    mapper: RowMapper,
    uniques: Vec<UniqueRule>,
    /// Rules that cannot be checked ahead.
    unchecked: Vec<String>,
    /// References the target enforces with a foreign key.
    refs: Vec<crate::transform::Reference>,
    /// Generic references, which the load checks row by row.
    generic: Vec<GenericReference>,
}

fn compile(
    spec: &runtime::mapping::MappingSpec,
    target: &SchemaReport,
    mappings: &MappingSet,
) -> Result<Compiled, ToolError> {
    let target_table = target
        .table(&spec.target)
        .ok_or_else(|| ToolError::system(format!("the target has no table {}", spec.target)))?;
    let mapper = RowMapper::new(spec, target_table, target, mappings.keys)?;
    let (uniques, mut unchecked) = unique_rules(&mapper, target_table);
    unchecked.extend(mapper.unchecked.iter().cloned());
    let refs: Vec<_> = mapper
        .references()
        .into_iter()
        .filter(|r| {
            target_table.foreign_keys.iter().any(|fk| fk.columns == [r.target_column.clone()])
        })
        .collect();
    let generic = mapper.generic_references();
    Ok(Compiled { mapper, uniques, unchecked, refs, generic })
}

/// What the entities forecast before this one settled, to judge its references by.
struct Known<'a> {
    order: &'a [TableName],
    position: usize,
    source: &'a TableName,
    migrated: &'a HashMap<TableName, KeySet>,
    rejected: &'a HashMap<TableName, KeySet>,
    mappings: &'a MappingSet,
}

impl Known<'_> {
    /// A row's references: rejected when a parent forecast earlier is not migrated; those to
    /// its own table are returned (settled later), those to a table forecast later are put in
    /// `later`.
    fn references(
        &self,
        (refs, generic): (&[crate::transform::Reference], &[GenericReference]),
        row: &[Option<&str>],
        later: &mut Vec<(String, TableName, String)>,
        target_name: &str,
    ) -> Result<Vec<(String, String)>, Rejection> {
        let mut pending = Vec::new();
        for r in refs {
            let parent_key: Option<Vec<&str>> = r.inputs.iter().map(|&i| row[i]).collect();
            let Some(parent_key) = parent_key else { continue };
            if &r.parent == self.source {
                pending.push((r.target_column.clone(), key_text(&parent_key)));
                continue;
            }
            self.reference(&r.target_column, &r.parent, &parent_key, later, target_name)?;
        }
        for g in generic {
            let Some((parent, id)) = g.of(row) else { continue };
            // One to its own table is settled once the table's rows are known, as the load
            // removes those left pointing at no row.
            if parent == self.source {
                pending.push((g.target_column.clone(), id.to_owned()));
                continue;
            }
            if self.mappings.spec(parent).is_none() {
                return Err(g.not_migrated(target_name, parent, id));
            }
            self.reference(&g.target_column, parent, &[id], later, target_name)?;
        }
        Ok(pending)
    }

    /// A reference to a row of another table: rejected when that table, forecast earlier, does
    /// not migrate the row; one to a table forecast later is put in `later`.
    fn reference(
        &self,
        column: &str,
        parent: &TableName,
        parent_key: &[&str],
        later: &mut Vec<(String, TableName, String)>,
        target_name: &str,
    ) -> Result<(), Rejection> {
        if !self.order.contains(parent) {
            return Ok(());
        }
        if self.order[self.position..].contains(parent) {
            later.push((column.to_owned(), parent.clone(), key_text(parent_key)));
            return Ok(());
        }
        if self.migrated.get(parent).is_some_and(|k| k.contains(parent_key)) {
            return Ok(());
        }
        let why = if self.rejected.get(parent).is_some_and(|k| k.contains(parent_key)) {
            "is itself rejected"
        } else {
            "does not exist in the source (an orphan)"
        };
        Err(Rejection {
            column: Some(column.to_owned()),
            rule: format!("reference:{column}"),
            reason: format!(
                "{target_name}.{column}: the {parent} row it points at ({}) {why}",
                key_text(parent_key)
            ),
        })
    }
}

/// Checks every unique rule before remembering any key: a rejected row claims none.
fn claim_unique_keys(
    uniques: &mut [UniqueRule],
    values: &TextRows,
    key_text: &str,
    target_name: &str,
) -> Result<(), Rejection> {
    let keys: Vec<Option<Vec<String>>> = uniques.iter().map(|u| u.key(values)).collect();
    for (u, key) in uniques.iter().zip(&keys) {
        if let Some(first) = key.as_ref().and_then(|k| u.seen.get(k)) {
            return Err(Rejection {
                column: None,
                rule: format!("unique:{}", u.name),
                reason: format!(
                    "{}: repeats the key of legacy row {first} ({})",
                    target_name, u.name
                ),
            });
        }
    }
    for (u, key) in uniques.iter_mut().zip(keys) {
        if let Some(key) = key {
            u.seen.insert(key, key_text.to_owned());
        }
    }
    Ok(())
}

impl UniqueRule {
    /// The row's key under this rule; `None` when a part is NULL (NULLs never collide).
    fn key(&self, values: &TextRows) -> Option<Vec<String>> {
        self.parts
            .iter()
            .map(|(i, f)| {
                values.get(0, *i).map(|v| match f {
                    Some("lower") => v.to_lowercase(),
                    Some("upper") => v.to_uppercase(),
                    _ => v.to_owned(),
                })
            })
            .collect()
    }
}

fn unique_rules(
    mapper: &RowMapper,
    target: &runtime::domain::Table,
) -> (Vec<UniqueRule>, Vec<String>) {
    let cols = mapper.target_columns();
    let mut rules = Vec::new();
    let mut unchecked = Vec::new();
    for u in &target.unique {
        if u.predicate.is_some() {
            unchecked.push(format!("{} (a partial unique index)", u.name));
            continue;
        }
        let mut parts = Vec::new();
        for p in &u.parts {
            let p = p.replace("::text", "").replace(['(', ')'], " ");
            let words: Vec<&str> = p.split_whitespace().collect();
            let (func, col) = match words.as_slice() {
                [c] => (None, *c),
                ["lower", c] => (Some("lower"), *c),
                ["upper", c] => (Some("upper"), *c),
                _ => {
                    parts.clear();
                    break;
                }
            };
            match cols.iter().position(|c| *c == col) {
                Some(i) => parts.push((i, func)),
                None => {
                    parts.clear();
                    break;
                }
            }
        }
        // A key on legacy_id alone cannot repeat: it is the source's own key.
        if parts.len() == u.parts.len() && !(u.parts.len() == 1 && u.parts[0] == "legacy_id") {
            rules.push(UniqueRule { name: u.name.clone(), parts, seen: HashMap::new() });
        } else if parts.len() != u.parts.len() {
            unchecked.push(format!("{} (key parts not read: {})", u.name, u.parts.join(", ")));
        }
    }
    (rules, unchecked)
}

/// Forecasts the entities in `order` (sources, in plan order).
pub async fn forecast(
    order: &[TableName],
    mappings: &MappingSet,
    target: &SchemaReport,
    rows: &dyn Rows,
) -> Result<Vec<(TableName, Forecast)>, ToolError> {
    // Keys are remembered only for tables some planned entity references.
    let referenced = referenced_parents(order, mappings);
    let mut migrated: HashMap<TableName, KeySet> = HashMap::new();
    let mut rejected: HashMap<TableName, KeySet> = HashMap::new();
    let mut out: Vec<(TableName, Forecast)> = Vec::new();
    // References to a table forecast later (the plan broke a cycle there), settled once that
    // table's rows are known: (index in `out`, row key, target column, parent, parent key).
    let mut awaiting: Vec<(usize, String, String, TableName, String)> = Vec::new();
    for (position, source) in order.iter().enumerate() {
        let spec = mappings
            .spec(source)
            .ok_or_else(|| ToolError::system(format!("{source} has no mapping")))?;
        let Compiled { mapper, mut uniques, unchecked, refs, generic } =
            compile(spec, target, mappings)?;
        let mut tally = Tally::default();
        let mut ok_keys = KeySet::default();
        let mut bad_keys = KeySet::default();
        // Rows that passed everything but a reference to a row of this same table.
        let mut self_refs: Vec<(String, Vec<(String, String)>)> = Vec::new();
        let mut count = 0i64;
        let mut later: Vec<(String, TableName, String)> = Vec::new();
        let mut waiting: Vec<(String, String, TableName, String)> = Vec::new();
        let scan = Scan::entity(spec);
        // The mapped row, in a buffer used again for every row.
        let mut values = TextRows::new(mapper.target_columns().len());
        let mut memo = ReferenceMemo::default();
        let mut each =
            |row: &[Option<&str>]| {
                count += 1;
                later.clear();
                let key = mapper.key(row);
                let legacy = key_text(&key);
                values.clear();
                let verdict = mapper.map_into(row, &mut values, &mut memo).and_then(|()| {
                    let known = Known {
                        order,
                        position,
                        source,
                        migrated: &migrated,
                        rejected: &rejected,
                        mappings,
                    };
                    let refs = (refs.as_slice(), generic.as_slice());
                    let pending = known.references(refs, row, &mut later, &spec.target.name)?;
                    claim_unique_keys(&mut uniques, &values, &legacy, &spec.target.name)?;
                    Ok(pending)
                });
                if verdict.is_ok() {
                    waiting.extend(later.drain(..).map(|(col, parent, parent_key)| {
                        (legacy.clone(), col, parent, parent_key)
                    }));
                }
                match verdict {
                    Ok(pending) if pending.is_empty() => ok_keys.insert(&key),
                    Ok(pending) => self_refs.push((legacy, pending)),
                    Err(r) => {
                        tally.add(&r, &legacy);
                        bad_keys.insert(&key);
                    }
                }
            };
        rows.scan(&scan, &mut each).await?;
        settle_self_references(
            self_refs,
            &mut ok_keys,
            &mut bad_keys,
            &mut tally,
            &spec.target.name,
            source,
        );
        awaiting.extend(
            waiting
                .into_iter()
                .map(|(key, col, parent, parent_key)| (out.len(), key, col, parent, parent_key)),
        );
        out.push((source.clone(), tally.forecast(count, unchecked)));
        if referenced.contains(source) {
            migrated.insert(source.clone(), ok_keys);
            rejected.insert(source.clone(), bad_keys);
        }
        let (settled, still): (Vec<_>, Vec<_>) = awaiting.drain(..).partition(|a| &a.3 == source);
        awaiting = still;
        settle_awaiting(&mut out, settled, migrated.get(source), &mut rejected, mappings);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
