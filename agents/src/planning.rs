//! The planning agent: from a goal in words to an ordered [`MigrationPlan`].
//!
//! The logic is plain functions over a [`SchemaReport`]: resolve the goal to tables, add the
//! parents they need, and sort the foreign-key graph into waves. Self-references and cycles are
//! broken by deferring a nullable foreign key to a second pass. The actor shell only asks for
//! the report and records the decisions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use runtime::context::RunContext;
use runtime::domain::{Inclusion, MigrationPlan, PlannedEntity, SchemaReport, Table, TableName};
use runtime::envelope::{AgentError, Envelope};
use runtime::AgentName;
use serde::{Deserialize, Serialize};

const ME: AgentName = AgentName::Planning;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRequest {
    pub goal: String,
    /// Plan exactly the named entities, without the parents they reference.
    pub only: bool,
    pub source: SchemaReport,
}

pub enum PlanningMsg {
    Plan(Envelope<PlanRequest>, RpcReplyPort<Result<MigrationPlan, AgentError>>),
}

#[derive(Clone)]
pub struct PlanningAgent;

#[derive(Clone)]
pub struct PlanningArgs {
    pub ctx: Arc<RunContext>,
}

impl Actor for PlanningAgent {
    type Msg = PlanningMsg;
    type State = PlanningArgs;
    type Arguments = PlanningArgs;

    async fn pre_start(&self, _: ActorRef<PlanningMsg>, args: PlanningArgs) -> Result<PlanningArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(&self, _: ActorRef<PlanningMsg>, msg: PlanningMsg, state: &mut PlanningArgs) -> Result<(), ActorProcessingErr> {
        match msg {
            PlanningMsg::Plan(env, reply) => {
                let req = env.body;
                let result = plan(&req.goal, req.only, &req.source);
                match &result {
                    Ok(p) => state.ctx.decision(
                        ME,
                        format!(
                            "planned {} entities in {} waves for \"{}\" (plan {})",
                            p.entities().count(),
                            p.waves.len(),
                            p.goal,
                            &p.hash()[..12]
                        ),
                        p.rationale.join(" "),
                        p,
                    ),
                    Err(e) => state.ctx.decision(ME, format!("could not plan \"{}\"", req.goal), e.to_string(), &req.goal),
                }
                let _ = reply.send(result.map_err(|e| AgentError::new(ME, e.to_string())));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the goal names no entity; say which tables to migrate, or \"everything\"")]
    Empty,
    #[error("no table matches `{word}` in {database}{}", suggest(.suggestions))]
    Unknown { word: String, database: String, suggestions: Vec<String> },
    #[error("{tables} reference each other in a cycle, and none of those references can be left empty for a second pass")]
    Cycle { tables: String },
}

fn suggest(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", names.join(", "))
    }
}

const VERBS: [&str; 6] = ["migrate", "move", "copy", "transfer", "plan", "bring"];
const FILLER: [&str; 6] = ["the", "table", "tables", "entity", "entities", "over"];
const EVERYTHING: [&str; 4] = ["everything", "all", "*", "whole"];

/// The tables a goal names, in the order named.
pub fn resolve_goal(goal: &str, report: &SchemaReport) -> Result<Vec<TableName>, PlanError> {
    let text = goal.trim().to_lowercase();
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == '&' || c == '+')
        .filter(|w| !w.is_empty() && *w != "and" && !FILLER.contains(w))
        .collect();
    let words: Vec<&str> = match words.split_first() {
        Some((first, rest)) if VERBS.contains(first) => rest.to_vec(),
        _ => words,
    };
    if words.is_empty() {
        return Err(PlanError::Empty);
    }
    if words.iter().any(|w| EVERYTHING.contains(w)) {
        return Ok(report.tables.iter().map(|t| t.name.clone()).collect());
    }
    // Entity names may be written as several words ("invoice lines"): try the longest run of
    // words first, joined with underscores, then shorter ones.
    let lookup = |word: &str| {
        report
            .tables
            .iter()
            .find(|t| word == t.name.name || word == format!("{}.{}", t.name.schema, t.name.name))
            .or_else(|| report.tables.iter().find(|t| entity_key(&t.name.name) == entity_key(word)))
    };
    let mut found = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let longest = (1..=(words.len() - i).min(4)).rev().find_map(|n| lookup(&words[i..i + n].join("_")).map(|t| (t, n)));
        let (table, n) = longest.ok_or_else(|| PlanError::Unknown {
            word: words[i].to_owned(),
            database: report.database.clone(),
            suggestions: closest(words[i], report),
        })?;
        if !found.contains(&table.name) {
            found.push(table.name.clone());
        }
        i += n;
    }
    Ok(found)
}

/// The key two spellings of one entity share: `dispatch_doctor`, `Doctors` and `doctor` all
/// become `doctor`.
pub fn entity_key(name: &str) -> String {
    let n = name.trim().to_lowercase().replace(['-', ' '], "_");
    let n = n.strip_prefix("dispatch_").unwrap_or(&n);
    singular(n)
}

fn singular(word: &str) -> String {
    if let Some(stem) = word.strip_suffix("ies") {
        format!("{stem}y")
    } else if let Some(stem) = word.strip_suffix("sses") {
        format!("{stem}ss")
    } else if word.ends_with("ss") || word.ends_with("us") {
        word.to_owned()
    } else if let Some(stem) = word.strip_suffix('s') {
        stem.to_owned()
    } else {
        word.to_owned()
    }
}

fn closest(word: &str, report: &SchemaReport) -> Vec<String> {
    let key = entity_key(word);
    let mut scored: Vec<(usize, String)> = report
        .tables
        .iter()
        .map(|t| (edit_distance(&key, &entity_key(&t.name.name)), t.name.to_string()))
        .filter(|(d, _)| *d <= key.len().max(3) / 2 + 1)
        .collect();
    scored.sort();
    scored.into_iter().take(3).map(|(_, n)| n).collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Resolves the goal, adds required parents (unless `only`), and orders the result in waves.
pub fn plan(goal: &str, only: bool, report: &SchemaReport) -> Result<MigrationPlan, PlanError> {
    let requested = resolve_goal(goal, report)?;
    let tables: BTreeMap<&TableName, &Table> = report.tables.iter().map(|t| (&t.name, t)).collect();
    let mut rationale = Vec::new();

    // The closure of parents, remembering who needed each one.
    let mut inclusion: BTreeMap<TableName, Inclusion> = requested.iter().map(|t| (t.clone(), Inclusion::Requested)).collect();
    let mut queue: Vec<TableName> = requested.clone();
    while let Some(name) = queue.pop() {
        if only {
            break;
        }
        let Some(table) = tables.get(&name) else { continue };
        for fk in &table.foreign_keys {
            let parent = &fk.references;
            if parent == &name || !tables.contains_key(parent) {
                continue;
            }
            match inclusion.get_mut(parent) {
                Some(Inclusion::Requested) => {}
                Some(Inclusion::RequiredBy { entities }) => {
                    if !entities.contains(&name) {
                        entities.push(name.clone());
                        entities.sort();
                    }
                }
                None => {
                    inclusion.insert(parent.clone(), Inclusion::RequiredBy { entities: vec![name.clone()] });
                    queue.push(parent.clone());
                }
            }
        }
    }
    for (name, inc) in &inclusion {
        if let Inclusion::RequiredBy { entities } = inc {
            let by: Vec<String> = entities.iter().map(ToString::to_string).collect();
            let verb = if by.len() == 1 { "references" } else { "reference" };
            rationale.push(format!("{name} is included because {} {verb} it (plan with --only to leave it out).", by.join(", ")));
        }
    }

    // Edges child -> parent inside the plan; self-references are always deferred.
    let mut deferred: BTreeMap<TableName, Vec<String>> = BTreeMap::new();
    let mut parents: BTreeMap<TableName, BTreeMap<TableName, Vec<String>>> = BTreeMap::new();
    for name in inclusion.keys() {
        let table = tables[name];
        let entry = parents.entry(name.clone()).or_default();
        for fk in &table.foreign_keys {
            if &fk.references == name {
                deferred.entry(name.clone()).or_default().push(fk.name.clone());
                rationale.push(format!(
                    "{name}.{} references {name} itself: its rows go in with that reference empty, then a second pass fills it.",
                    fk.columns.join(", ")
                ));
            } else if inclusion.contains_key(&fk.references) {
                entry.entry(fk.references.clone()).or_default().push(fk.name.clone());
            }
        }
    }

    let mut placed: BTreeSet<TableName> = BTreeSet::new();
    let mut waves: Vec<Vec<PlannedEntity>> = Vec::new();
    while placed.len() < inclusion.len() {
        let ready: Vec<TableName> = parents
            .iter()
            .filter(|(n, ps)| !placed.contains(*n) && ps.keys().all(|p| placed.contains(p)))
            .map(|(n, _)| n.clone())
            .collect();
        if ready.is_empty() {
            let (child, parent, fk) = break_cycle(&parents, &placed, &tables)?;
            rationale.push(format!(
                "{child} and {parent} reference each other: {child} goes first with {fk} left empty, filled in a second pass once {parent} is in."
            ));
            let fks = parents.get_mut(&child).and_then(|ps| ps.get_mut(&parent)).expect("the edge exists");
            fks.retain(|f| f != &fk);
            if fks.is_empty() {
                parents.get_mut(&child).expect("the child exists").remove(&parent);
            }
            deferred.entry(child).or_default().push(fk);
            continue;
        }
        let wave_no = waves.len() + 1;
        for name in &ready {
            let ps: Vec<String> = parents[name].keys().map(ToString::to_string).collect();
            if !ps.is_empty() {
                rationale.push(format!("{name} is in wave {wave_no} because it references {}.", ps.join(", ")));
            }
        }
        waves.push(
            ready
                .iter()
                .map(|name| PlannedEntity {
                    table: name.clone(),
                    inclusion: inclusion[name].clone(),
                    estimated_rows: tables[name].estimated_rows,
                    deferred_foreign_keys: deferred.get(name).cloned().unwrap_or_default(),
                })
                .collect(),
        );
        placed.extend(ready);
    }
    Ok(MigrationPlan { goal: goal.trim().to_owned(), waves, rationale })
}

/// Picks the foreign key to defer among the tables left unplaced: the first, by child and
/// constraint name, whose columns may all be NULL.
fn break_cycle(
    parents: &BTreeMap<TableName, BTreeMap<TableName, Vec<String>>>,
    placed: &BTreeSet<TableName>,
    tables: &BTreeMap<&TableName, &Table>,
) -> Result<(TableName, TableName, String), PlanError> {
    let stuck: Vec<&TableName> = parents.keys().filter(|n| !placed.contains(*n)).collect();
    for child in &stuck {
        let table = tables[*child];
        for (parent, fks) in &parents[*child] {
            if placed.contains(parent) {
                continue;
            }
            for fk_name in fks {
                let fk = table.foreign_keys.iter().find(|f| &f.name == fk_name).expect("edges come from the table's keys");
                let nullable = fk.columns.iter().all(|c| table.columns.iter().any(|col| &col.name == c && col.nullable));
                if nullable {
                    return Ok(((*child).clone(), parent.clone(), fk_name.clone()));
                }
            }
        }
    }
    Err(PlanError::Cycle { tables: stuck.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ") })
}

/// The plan as an operator reads it.
pub fn render(plan: &MigrationPlan) -> String {
    let mut out = format!("Plan for \"{}\" ({} entities, about {} rows)\n", plan.goal, plan.entities().count(), plan.estimated_rows());
    for (i, wave) in plan.waves.iter().enumerate() {
        out.push_str(&format!("  wave {}:\n", i + 1));
        for e in wave {
            let why = match &e.inclusion {
                Inclusion::Requested => String::new(),
                Inclusion::RequiredBy { entities } => {
                    format!("  (needed by {})", entities.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
                }
            };
            let deferred = if e.deferred_foreign_keys.is_empty() {
                String::new()
            } else {
                format!("  [second pass: {}]", e.deferred_foreign_keys.join(", "))
            };
            out.push_str(&format!("    {:<32} ~{:>9} rows{why}{deferred}\n", e.table.to_string(), e.estimated_rows));
        }
    }
    out.push_str(&format!("  plan hash: {}\n", plan.hash()));
    out
}

#[cfg(test)]
mod tests;
