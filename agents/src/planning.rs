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
use runtime::domain::{
    Column, Forecast, Inclusion, LeftOut, MigrationPlan, PlannedEntity, SchemaReport, Table,
    TableName, TypeKind,
};
use runtime::envelope::{AgentError, Envelope};
use runtime::AgentName;
use serde::{Deserialize, Serialize};

use runtime::mapping::{entity_key, MappingSet, Unmapped};

const ME: AgentName = AgentName::Planning;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanRequest {
    pub goal: String,
    /// Plan exactly the named entities, without the parents they reference.
    pub only: bool,
    /// Boxed: a schema report is large beside the other requests an agent takes.
    pub source: Box<SchemaReport>,
    /// The target as it is, to name what of the source it does not reproduce.
    pub target: Box<SchemaReport>,
    pub mappings: MappingSet,
    /// Rows per batch when the operator fixed it (`BATCH_SIZE`); chosen by row width otherwise.
    pub batch_size: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssessRequest {
    pub plan: MigrationPlan,
    pub forecasts: Vec<(TableName, Forecast)>,
}

pub enum PlanningMsg {
    Plan(Envelope<PlanRequest>, RpcReplyPort<Result<MigrationPlan, AgentError>>),
    /// Adds the forecast of every entity and the risks it shows.
    Assess(Envelope<AssessRequest>, RpcReplyPort<Result<MigrationPlan, AgentError>>),
}

#[derive(Clone)]
pub struct PlanningAgent;

#[derive(Clone)]
pub struct PlanningArgs {
    pub ctx: Arc<RunContext>,
    /// Reads free-text goals the deterministic resolver cannot, when configured.
    pub llm: Option<Arc<dyn runtime::ports::Llm>>,
}

/// A goal as the model reads it: the tables in the words the resolver takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GoalReading {
    /// Tables to migrate (entity names).
    pub tables: Vec<String>,
    /// All of them.
    pub everything: bool,
    /// Tables to leave out.
    pub except: Vec<String>,
    /// Without the tables these depend on.
    pub only: bool,
}

impl GoalReading {
    /// The goal in the resolver's words.
    pub fn goal(&self) -> String {
        let base = if self.everything || self.tables.is_empty() {
            "everything".to_owned()
        } else {
            self.tables.join(", ")
        };
        if self.except.is_empty() {
            base
        } else {
            format!("{base} except {}", self.except.join(", "))
        }
    }
}

/// Plans a goal the resolver could not read by asking the model what it means; the model's
/// reading is only a goal in the resolver's words, planned and checked by the same code, so a
/// wrong reading fails as a wrong goal would (and is recorded as rejected), never runs.
async fn plan_with_llm(
    ctx: &RunContext,
    llm: &dyn runtime::ports::Llm,
    req: &PlanRequest,
    first: PlanError,
) -> Result<MigrationPlan, PlanError> {
    let entities: Vec<String> = req.mappings.specs.iter().map(|s| s.source.name.clone()).collect();
    let Ok(system) = prompts::fill(prompts::GOAL, &[("entities", &entities.join(", "))]) else {
        return Err(first);
    };
    let reading = match crate::llm::ask_typed::<GoalReading>(
        ctx,
        llm,
        ME,
        "plan_request",
        "The tables the goal names",
        &system,
        &req.goal,
    )
    .await
    {
        Ok(r) => r,
        Err(why) => {
            ctx.decision(
                ME,
                format!("read \"{}\" without the model", req.goal),
                format!("the model failed: {why}"),
                &req.goal,
            );
            return Err(first);
        }
    };
    let goal = reading.goal();
    match plan(&goal, req.only || reading.only, &req.source, Some(&req.mappings), req.batch_size) {
        Ok(mut p) => {
            ctx.decision(
                ME,
                format!("read \"{}\" as \"{goal}\"", req.goal),
                "the model's reading of the free-text goal, checked by the planner: every table \
                    exists and the order respects the references",
                &reading,
            );
            p.rationale.insert(0, format!("The goal \"{}\" was read as \"{goal}\".", req.goal));
            Ok(p)
        }
        Err(e) => {
            ctx.decision(
                ME,
                format!("rejected the model's reading \"{goal}\" of \"{}\"", req.goal),
                e.to_string(),
                &reading,
            );
            Err(first)
        }
    }
}

impl Actor for PlanningAgent {
    type Msg = PlanningMsg;
    type State = PlanningArgs;
    type Arguments = PlanningArgs;

    async fn pre_start(
        &self,
        _: ActorRef<PlanningMsg>,
        args: PlanningArgs,
    ) -> Result<PlanningArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _: ActorRef<PlanningMsg>,
        msg: PlanningMsg,
        state: &mut PlanningArgs,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PlanningMsg::Assess(env, reply) => {
                let plan = assess(env.body.plan, &env.body.forecasts);
                let risky: Vec<String> = plan
                    .entities()
                    .filter_map(|e| {
                        e.forecast
                            .as_ref()
                            .filter(|f| f.reject > 0)
                            .map(|f| format!("{}: {} of {}", e.table, f.reject, f.rows))
                    })
                    .collect();
                state.ctx.decision(
                    ME,
                    format!(
                        "assessed the plan: {} rows to migrate, {} to be rejected",
                        plan.expected_migrated(),
                        plan.expected_rejected()
                    ),
                    if risky.is_empty() {
                        "every source row fits the target".to_owned()
                    } else {
                        format!("rows the target will refuse, by entity: {}", risky.join("; "))
                    },
                    &plan,
                );
                let _ = reply.send(Ok(plan));
            }
            PlanningMsg::Plan(env, reply) => {
                let req = env.body;
                let result = match (
                    plan(&req.goal, req.only, &req.source, Some(&req.mappings), req.batch_size),
                    &state.llm,
                ) {
                    (
                        Err(
                            e @ (PlanError::Unknown { .. }
                            | PlanError::Empty
                            | PlanError::NothingToMigrate { .. }),
                        ),
                        Some(llm),
                    ) => plan_with_llm(&state.ctx, llm.as_ref(), &req, e).await,
                    (result, _) => result,
                };
                let result = result.map(|mut p| {
                    let missing = not_reproduced(&p, &req.source, &req.target, &req.mappings);
                    p.rationale.extend(missing);
                    p
                });
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
                    Err(e) => state.ctx.decision(
                        ME,
                        format!("could not plan \"{}\"", req.goal),
                        e.to_string(),
                        &req.goal,
                    ),
                }
                let _ = reply.send(result.map_err(|e| match e {
                    // What the goal says, or what the target lacks: the operator's to change.
                    PlanError::Empty
                    | PlanError::Unknown { .. }
                    | PlanError::Ambiguous { .. }
                    | PlanError::NothingToMigrate { .. }
                    | PlanError::Unmigratable { .. }
                    | PlanError::Mapping { .. } => AgentError::usage(ME, e.to_string()),
                    PlanError::Cycle { .. } => AgentError::new(ME, e.to_string()),
                }));
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
    #[error(
        "{tables} reference each other in a cycle, and none of those references can be left \
        empty for a second pass"
    )]
    Cycle { tables: String },
    #[error("`{word}` names several tables ({tables}): name the one you mean with its schema, as `{example}`")]
    Ambiguous { word: String, tables: String, example: String },
    #[error("\"{goal}\" names nothing that maps to a target table")]
    NothingToMigrate { goal: String },
    #[error(
        "nothing can take the rows of {tables}: create the target tables (agentctl schema \
            generate --from-source), map them in the mapping file, or leave them out by name \
            (\"everything except ...\", or `skip` in the mapping file)"
    )]
    Unmigratable { tables: String },
    #[error(
        "{count} mapping problem(s) in the tables the goal needs: {problems} (fix them in the \
            mapping file or the target, or leave the tables out: \"everything except ...\", or \
            `skip` in the mapping file)"
    )]
    Mapping { count: usize, problems: String },
}

impl PlanError {
    /// The problems of the tables among `tables` whose mapping has any, if there are.
    fn mapping(m: &MappingSet, tables: &[TableName]) -> Result<(), PlanError> {
        let problems: Vec<String> = m.problems_of(tables).map(ToString::to_string).collect();
        match problems.is_empty() {
            true => Ok(()),
            false => {
                Err(PlanError::Mapping { count: problems.len(), problems: problems.join("; ") })
            }
        }
    }
}

fn suggest(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", names.join(", "))
    }
}

const VERBS: [&str; 6] = ["migrate", "move", "copy", "transfer", "plan", "bring"];
const FILLER: [&str; 8] =
    ["the", "table", "tables", "entity", "entities", "over", "please", "first"];
const EVERYTHING: [&str; 4] = ["everything", "all", "*", "whole"];
/// Phrases that ask for the parents too, which is what a plan does unless told `--only`.
const WITH_DEPS: [&str; 7] = [
    "and everything they need",
    "and everything it needs",
    "and what they need",
    "and their dependencies",
    "with dependencies",
    "with deps",
    "with parents",
];

/// What a goal asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Goal {
    pub tables: Vec<TableName>,
    pub excluded: Vec<TableName>,
    /// The goal itself said "only".
    pub only: bool,
}

/// The tables a goal names, in the order named: source names, target names (through the
/// mappings), group names from the mapping file, `everything`, `... except ...`.
pub fn resolve_goal(
    goal: &str,
    report: &SchemaReport,
    mappings: Option<&MappingSet>,
) -> Result<Goal, PlanError> {
    let mut text = goal.trim().to_lowercase();
    for phrase in WITH_DEPS {
        text = text.replace(phrase, " ");
    }
    let (include, exclude) =
        match [" except ", " but not ", " without "].iter().find_map(|sep| text.split_once(sep)) {
            Some((a, b)) => (a.to_owned(), Some(b.to_owned())),
            None => (text.clone(), None),
        };
    let words = |part: &str| -> Vec<String> {
        let w: Vec<String> = part
            .split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == '&' || c == '+')
            .filter(|w| !w.is_empty() && *w != "and" && !FILLER.contains(w))
            .map(str::to_owned)
            .collect();
        match w.split_first() {
            Some((first, rest)) if VERBS.contains(&first.as_str()) => rest.to_vec(),
            _ => w,
        }
    };
    let mut inc = words(&include);
    let only = inc.iter().any(|w| w == "only");
    inc.retain(|w| w != "only");
    if inc.is_empty() {
        return Err(PlanError::Empty);
    }
    // Everything is every source table: one nothing takes stops the plan (see `plan`), unless
    // the goal or the mapping file leaves it out by name.
    let tables = if inc.iter().any(|w| EVERYTHING.contains(&w.as_str())) {
        report.tables.iter().map(|t| t.name.clone()).collect()
    } else {
        names(&inc, report, mappings)?
    };
    let excluded = match exclude {
        Some(e) => names(&words(&e), report, mappings)?,
        None => vec![],
    };
    Ok(Goal {
        tables: tables.into_iter().filter(|t| !excluded.contains(t)).collect(),
        excluded,
        only,
    })
}

fn names(
    words: &[String],
    report: &SchemaReport,
    mappings: Option<&MappingSet>,
) -> Result<Vec<TableName>, PlanError> {
    // Entity names may be written as several words ("invoice lines"): try the longest run of
    // words first, joined with underscores, then shorter ones.
    let target_of = |t: &TableName| mappings.and_then(|m| m.target_of(t)).map(|t| t.name.clone());
    let lookup = |word: &str| -> Option<Vec<TableName>> {
        if let Some(group) = mappings.and_then(|m| m.groups.get(word)) {
            return Some(
                group.iter().filter_map(|n| report.find(n)).map(|t| t.name.clone()).collect(),
            );
        }
        let by = |f: &dyn Fn(&Table) -> bool| {
            report.tables.iter().find(|t| f(t)).map(|t| vec![t.name.clone()])
        };
        by(&|t| word == t.name.name || word == format!("{}.{}", t.name.schema, t.name.name))
            .or_else(|| by(&|t| target_of(&t.name).is_some_and(|n| n == word)))
            .or_else(|| by(&|t| entity_key(&t.name.name) == entity_key(word)))
            .or_else(|| {
                by(&|t| target_of(&t.name).is_some_and(|n| entity_key(&n) == entity_key(word)))
            })
    };
    // A name that tables of several schemas share names none of them: the goal says which.
    for word in words {
        let shared = report.sharing(word);
        if let Some(example) = shared.first() {
            let (tables, example) = (shared.join(", "), example.clone());
            return Err(PlanError::Ambiguous { word: word.clone(), tables, example });
        }
    }
    let mut found = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let longest = (1..=(words.len() - i).min(4))
            .rev()
            .find_map(|n| lookup(&words[i..i + n].join("_")).map(|t| (t, n)));
        let (tables, n) = longest.ok_or_else(|| PlanError::Unknown {
            word: words[i].clone(),
            database: report.database.clone(),
            suggestions: closest(&words[i], report, mappings),
        })?;
        for t in tables {
            if !found.contains(&t) {
                found.push(t);
            }
        }
        i += n;
    }
    Ok(found)
}

fn closest(word: &str, report: &SchemaReport, mappings: Option<&MappingSet>) -> Vec<String> {
    let key = entity_key(word);
    let mut names: Vec<String> = report.tables.iter().map(|t| t.name.to_string()).collect();
    if let Some(m) = mappings {
        names.extend(m.specs.iter().map(|s| s.target.name.clone()));
        names.extend(m.groups.keys().cloned());
    }
    let mut scored: Vec<(usize, String)> = names
        .into_iter()
        .map(|n| (edit_distance(&key, &entity_key(&n)), n))
        .filter(|(d, _)| *d <= key.len().max(3) / 2 + 1)
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
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

/// What the target does not reproduce of the planned source tables, one sentence each:
/// partitioning, triggers, CHECK, unique and exclusion rules with no namesake on the target
/// table, and views and functions with no namesake in the target; and what the target does to
/// the rows beyond the mapping ([`what_changes`]). Said in the plan, before anything runs.
pub fn not_reproduced(
    plan: &MigrationPlan,
    source: &SchemaReport,
    target: &SchemaReport,
    mappings: &MappingSet,
) -> Vec<String> {
    let mut out = Vec::new();
    for e in plan.entities() {
        let (Some(s), Some(t)) =
            (source.table(&e.table), mappings.spec(&e.table).and_then(|m| target.table(&m.target)))
        else {
            continue;
        };
        if !s.partitions.is_empty() && t.kind != "partitioned" {
            out.push(format!(
                "Not reproduced: {} is partitioned ({} partitions); {} is one plain table that \
                    takes every partition's rows.",
                s.name,
                s.partitions.len(),
                t.name
            ));
        }
        let missing = |kind: &str, names: Vec<&String>, there: Vec<&String>| -> Option<String> {
            let gone: Vec<&str> =
                names.into_iter().filter(|n| !there.contains(n)).map(String::as_str).collect();
            (!gone.is_empty()).then(|| {
                format!(
                    "Not reproduced: {kind} {} of {} (none of that name on {}).",
                    gone.join(", "),
                    s.name,
                    t.name
                )
            })
        };
        out.extend(missing("trigger", s.triggers.iter().collect(), t.triggers.iter().collect()));
        out.extend(what_changes(s, t, mappings.spec(&e.table)));
        out.extend(missing(
            "CHECK",
            s.checks.iter().map(|c| &c.name).collect(),
            t.checks.iter().map(|c| &c.name).collect(),
        ));
        out.extend(missing(
            "exclusion rule",
            s.exclusions.iter().map(|c| &c.name).collect(),
            t.exclusions.iter().map(|c| &c.name).collect(),
        ));
        // A unique rule on the old key alone is legacy_id's.
        let key = s.key().0;
        out.extend(missing(
            "unique rule",
            s.unique.iter().filter(|u| u.parts != key).map(|u| &u.name).collect(),
            t.unique.iter().map(|u| &u.name).collect(),
        ));
    }
    let planned: BTreeSet<&TableName> = plan.entities().map(|e| &e.table).collect();
    // A generic reference the mapping file declares is rewritten.
    let rewritten = |l: &runtime::domain::LooseReference| {
        mappings.spec(&l.table).is_some_and(|spec| {
            spec.columns.iter().any(|c| matches!(&c.feed, runtime::mapping::Feed::Generic { column, .. } if *column == l.column))
        })
    };
    for loose in
        source.loose_references().iter().filter(|l| planned.contains(&l.table) && !rewritten(l))
    {
        out.push(format!("Not rewritten: {loose}."));
    }
    let there: BTreeSet<&String> = target.other_objects.iter().map(|(_, n)| n).collect();
    for (kind, name) in source.other_objects.iter().filter(|(_, n)| !there.contains(n)) {
        let rows =
            runtime::domain::rows_left_behind(kind).map(|r| format!("; {r}")).unwrap_or_default();
        out.push(format!(
            "Not reproduced: {kind} {name} (recreate it in the target after the migration{rows})."
        ));
    }
    out
}

/// What the target does to the rows of an entity beyond what the mapping says, one sentence
/// each: the columns it rounds, the columns the mapping file leaves behind, its own triggers.
fn what_changes(s: &Table, t: &Table, spec: Option<&runtime::mapping::MappingSpec>) -> Vec<String> {
    let mut out = Vec::new();
    let copied = spec.into_iter().flat_map(|m| &m.columns).filter_map(|c| match &c.feed {
        runtime::mapping::Feed::Column { column } => {
            Some((s.column(column)?, t.column(&c.target)?))
        }
        _ => None,
    });
    for (from, to) in copied {
        let (stored_from, stored_to) = (Stored::of(from), Stored::of(to));
        if let Some(kept) = rounded(&stored_from, &stored_to) {
            out.push(format!(
                "Rounded: {}.{} is {} and {}.{} {}, which keeps {kept}: the target rounds the \
                    rest away (validation compares the rounded values).",
                s.name.name,
                from.name,
                stored_from.spelled(from),
                t.name.name,
                to.name,
                stored_to.spelled(to)
            ));
        }
    }
    if let Some(spec) = spec.filter(|m| !m.dropped.is_empty()) {
        out.push(format!(
            "Left behind on purpose (the mapping file's leave): {} of {}.",
            spec.dropped.join(", "),
            s.name
        ));
    }
    if !t.triggers.is_empty() {
        out.push(format!(
            "Fires on every row loaded: trigger {} of {} (a row it changes fails validation, \
                a row it drops fails the accounting).",
            t.triggers.join(", "),
            t.name
        ));
    }
    out
}

/// A column's type as its values are stored: a domain's base type in place of the domain
/// (`numeric(10,2)` under `CREATE DOMAIN price AS numeric(10,2)`).
struct Stored<'a> {
    /// The base type's `pg_type.typname` (`numeric`, `timestamptz`, `float8`).
    type_name: &'a str,
    /// As `format_type` spells it, with its modifier (`numeric(10,2)`).
    data_type: &'a str,
}

impl<'a> Stored<'a> {
    fn of(c: &'a Column) -> Stored<'a> {
        let TypeKind::Domain { base } = &c.type_kind else {
            return Stored { type_name: &c.type_name, data_type: &c.data_type };
        };
        let zoned = base.ends_with(" with time zone");
        let bare = base.trim_end_matches(" without time zone").trim_end_matches(" with time zone");
        let type_name = match bare.split('(').next().unwrap_or(bare) {
            "timestamp" if zoned => "timestamptz",
            "time" if zoned => "timetz",
            "double precision" => "float8",
            "real" => "float4",
            name => name,
        };
        Stored { type_name, data_type: base }
    }

    /// The column's type for the plan: its own, with the base a domain stands for.
    fn spelled(&self, c: &Column) -> String {
        match self.data_type == c.data_type {
            true => c.data_type.clone(),
            false => format!("{} (a domain over {})", c.data_type, self.data_type),
        }
    }
}

/// What a target column keeps of a source column's values where it keeps less than they hold
/// and the server rounds the rest without a word: fewer decimals of a number, fewer digits of
/// a second, `real` for `double precision`. `None` where every value arrives whole (or where
/// the server refuses the ones it cannot take: those rows are rejected with its reason).
fn rounded(from: &Stored, to: &Stored) -> Option<String> {
    let modifier = |c: &Stored, n: usize| runtime::domain::type_modifier(c.data_type, n);
    let family = |t: &str| match t {
        "timestamp" | "timestamptz" => Some(0),
        "time" | "timetz" => Some(1),
        "interval" => Some(2),
        _ => None,
    };
    match (from.type_name, to.type_name) {
        (_, "numeric") if to.data_type.contains('(') => {
            let scale = modifier(to, 1).unwrap_or(0);
            let more = match from.type_name {
                "numeric" => modifier(from, 1).is_none_or(|s| s > scale),
                "float4" | "float8" => true,
                _ => false,
            };
            more.then(|| format!("{scale} decimals"))
        }
        (a, b) if family(a).is_some() && family(a) == family(b) => {
            let digits = |c: &Stored| modifier(c, 0).unwrap_or(6);
            (digits(to) < digits(from)).then(|| match digits(to) {
                0 => "whole seconds".to_owned(),
                n => format!("{n} digits of a second"),
            })
        }
        ("float8", "float4") => Some("about 6 significant digits".to_owned()),
        _ => None,
    }
}

/// The cycles the load cannot settle yet: a row whose reference to a table that loads after it
/// (where the plan broke a cycle) will be rejected. Its rows would be in before the row they
/// point at is refused, and taking them out again would cascade through the cycle; one line
/// each, for refusing the plan before anything runs.
pub fn unsettled_cycles(plan: &MigrationPlan, mappings: &MappingSet) -> Vec<String> {
    let mut out = Vec::new();
    for e in plan.entities().filter(|e| !e.later_parents.is_empty()) {
        let (Some(spec), Some(forecast)) = (mappings.spec(&e.table), e.forecast.as_ref()) else {
            continue;
        };
        for c in &spec.columns {
            let runtime::mapping::Feed::Reference { parent, .. } = &c.feed else { continue };
            if !e.later_parents.contains(parent) {
                continue;
            }
            if let Some(r) =
                forecast.reasons.iter().find(|r| r.rule == format!("reference:{}", c.target))
            {
                out.push(format!(
                    "{} and {parent} reference each other, and {} rows of {} point at {parent} \
                        rows that will be rejected (e.g. {}): agentctl cannot settle such a \
                        cycle yet; fix those rows in the source or leave both tables out",
                    e.table,
                    r.count,
                    e.table,
                    r.examples.join(", ")
                ));
            }
        }
    }
    out
}

/// Rows per batch for a row of this width (as it is read): about 4 MiB a batch, at most
/// 20,000 rows, in steps of 500 rows from 500 up. Small enough that the batches in flight (read
/// ahead, being mapped, being written, for an entity a core) stay within agentctl's memory
/// budget; large enough that a batch's fixed cost (a transaction, the reference lookups, the
/// checkpoint, its buffers faulted in) is a few percent of its work (bench/RESULTS.md: 1 MiB
/// and 10,000 rows ran 4 % slower). Rows of more than 8 kB go fewer than 500 a batch: 500 rows
/// of a megabyte would hold half a gigabyte; rows of 110 kB, 38 a batch, cost a tenth more
/// time than in batches of 1,000, and a twentieth of the memory.
pub fn batch_size(avg_row_bytes: i64) -> usize {
    let rows = ((4 << 20) / avg_row_bytes.max(32) as usize).clamp(1, 20_000);
    if rows < 500 {
        rows
    } else {
        rows / 500 * 500
    }
}

/// Resolves the goal, adds required parents (unless `only`), and orders the result in waves.
/// With mappings, only mapped tables are entities and each gets its target.
pub fn plan(
    goal: &str,
    only: bool,
    report: &SchemaReport,
    mappings: Option<&MappingSet>,
    fixed_batch: Option<usize>,
) -> Result<MigrationPlan, PlanError> {
    let resolved = resolve_goal(goal, report, mappings)?;
    let only = only || resolved.only;
    let tables: BTreeMap<&TableName, &Table> = report.tables.iter().map(|t| (&t.name, t)).collect();
    let mut rationale = Vec::new();
    let mut requested = resolved.tables.clone();
    if let Some(m) = mappings {
        requested = mapped(requested, m, &mut rationale)?;
    }
    if requested.is_empty() {
        return Err(PlanError::NothingToMigrate { goal: goal.trim().to_owned() });
    }
    let excluded = exclude(&mut requested, &resolved, &tables, &mut rationale);
    let inclusion = with_parents(&requested, only, &tables, mappings, &mut rationale)?;
    let (mut parents, mut deferred) = edges(&inclusion, &tables, mappings, &mut rationale);
    let order = Order { tables: &tables, inclusion: &inclusion, mappings, fixed_batch };
    let waves = waves(&order, &mut parents, &mut deferred, &mut rationale)?;
    let batches: Vec<String> =
        waves.iter().flatten().map(|e| format!("{} {}", e.table, e.batch_size)).collect();
    rationale.push(match fixed_batch {
        Some(n) => format!("Every batch holds {n} rows, as BATCH_SIZE says."),
        None => format!(
            "Batch sizes aim at about 4 MiB per batch from the width of each table's rows: {}.",
            batches.join(", ")
        ),
    });
    let left_out = left_out(report, &inclusion, &resolved, &excluded, mappings);
    Ok(MigrationPlan { goal: goal.trim().to_owned(), waves, rationale, left_out })
}

/// The requested tables that are entities of the mapping. A table the goal asks for that
/// nothing can take stops the plan: its rows would be left behind while the run reported
/// success. Only the mapping file (skip, join) or the goal (`except`) leaves a table out.
fn mapped(
    requested: Vec<TableName>,
    m: &MappingSet,
    rationale: &mut Vec<String>,
) -> Result<Vec<TableName>, PlanError> {
    PlanError::mapping(m, &requested)?;
    let (kept, unmapped): (Vec<TableName>, Vec<TableName>) =
        requested.into_iter().partition(|t| m.spec(t).is_some());
    let mut homeless = Vec::new();
    for t in unmapped {
        match m.unmapped.iter().find(|(u, _)| u == &t).map(|(_, w)| w) {
            Some(why) if why.decided() => {
                rationale.push(format!("{t} is not an entity of its own: {why}."))
            }
            Some(why) => homeless.push(format!("{t} ({why})")),
            None => homeless.push(format!("{t} (it has no mapping)")),
        }
    }
    if !homeless.is_empty() {
        return Err(PlanError::Unmigratable { tables: homeless.join(", ") });
    }
    for (t, why) in &m.unmapped {
        if matches!(why, Unmapped::Merged)
            && !rationale.iter().any(|r| r.starts_with(&format!("{t} ")))
        {
            rationale.push(format!("{t} is not an entity of its own: {why}."));
        }
    }
    Ok(kept)
}

/// Leaves out what the goal excludes, and what cannot exist without it; returns all of it.
fn exclude(
    requested: &mut Vec<TableName>,
    resolved: &Goal,
    tables: &BTreeMap<&TableName, &Table>,
    rationale: &mut Vec<String>,
) -> Vec<TableName> {
    let mut excluded = resolved.excluded.clone();
    loop {
        let more: Vec<TableName> = requested
            .iter()
            .filter(|t| !excluded.contains(t))
            .filter(|t| {
                tables.get(t).is_some_and(|tab| {
                    tab.foreign_keys
                        .iter()
                        .any(|fk| &fk.references != *t && excluded.contains(&fk.references))
                })
            })
            .cloned()
            .collect();
        if more.is_empty() {
            break;
        }
        for t in &more {
            rationale.push(format!("{t} is left out because it references a table you excluded."));
        }
        excluded.extend(more);
    }
    requested.retain(|t| !excluded.contains(t));
    if !resolved.excluded.is_empty() {
        let names: Vec<String> = resolved.excluded.iter().map(ToString::to_string).collect();
        rationale.push(format!("Excluded as asked: {}.", names.join(", ")));
    }
    excluded
}

/// The requested tables and, unless `only`, the closure of their parents, each remembering
/// who needed it.
fn with_parents(
    requested: &[TableName],
    only: bool,
    tables: &BTreeMap<&TableName, &Table>,
    mappings: Option<&MappingSet>,
    rationale: &mut Vec<String>,
) -> Result<BTreeMap<TableName, Inclusion>, PlanError> {
    let mut inclusion: BTreeMap<TableName, Inclusion> =
        requested.iter().map(|t| (t.clone(), Inclusion::Requested)).collect();
    let mut queue: Vec<TableName> = requested.to_vec();
    while let Some(name) = queue.pop() {
        if only {
            break;
        }
        let Some(table) = tables.get(&name) else { continue };
        let generic = generic_parents(mappings, &name);
        let parents = table.foreign_keys.iter().map(|fk| &fk.references);
        for parent in parents.chain(generic.iter().map(|(_, _, p)| p)) {
            // A parent whose mapping has problems stops the plan; a merged or skipped one is
            // no entity, and the mapping says what becomes of it.
            if let Some(m) = mappings {
                PlanError::mapping(m, std::slice::from_ref(parent))?;
            }
            if parent == &name
                || !tables.contains_key(parent)
                || mappings.is_some_and(|m| m.spec(parent).is_none())
            {
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
                    inclusion.insert(
                        parent.clone(),
                        Inclusion::RequiredBy { entities: vec![name.clone()] },
                    );
                    queue.push(parent.clone());
                }
            }
        }
    }
    for (name, inc) in &inclusion {
        if let Inclusion::RequiredBy { entities } = inc {
            let by: Vec<String> = entities.iter().map(ToString::to_string).collect();
            let verb = if by.len() == 1 { "references" } else { "reference" };
            rationale.push(format!(
                "{name} is included because {} {verb} it (plan with --only to leave it out).",
                by.join(", ")
            ));
        }
    }
    Ok(inclusion)
}

/// What orders a child after a parent: a foreign key (by name), or a generic reference (by
/// column), whose rows each point into the parent their `by` value names.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Edge {
    Key(String),
    Generic(String),
}

/// Each entity's parents inside the plan, with the edges to each.
type Parents = BTreeMap<TableName, BTreeMap<TableName, Vec<Edge>>>;

/// The generic references of a mapped table: (column, `by` column, parent), a parent each.
fn generic_parents(
    mappings: Option<&MappingSet>,
    table: &TableName,
) -> Vec<(String, String, TableName)> {
    let Some(spec) = mappings.and_then(|m| m.spec(table)) else { return Vec::new() };
    let mut out = Vec::new();
    for c in &spec.columns {
        if let runtime::mapping::Feed::Generic { column, by, parents } = &c.feed {
            out.extend(parents.values().map(|p| (column.clone(), by.clone(), p.clone())));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The edges child -> parent inside the plan, and the self-references, which are always
/// deferred.
fn edges(
    inclusion: &BTreeMap<TableName, Inclusion>,
    tables: &BTreeMap<&TableName, &Table>,
    mappings: Option<&MappingSet>,
    rationale: &mut Vec<String>,
) -> (Parents, BTreeMap<TableName, Vec<String>>) {
    let mut deferred: BTreeMap<TableName, Vec<String>> = BTreeMap::new();
    let mut parents = Parents::new();
    for name in inclusion.keys() {
        let table = tables[name];
        let entry = parents.entry(name.clone()).or_default();
        for fk in &table.foreign_keys {
            if &fk.references == name {
                deferred.entry(name.clone()).or_default().push(fk.name.clone());
                rationale.push(format!(
                    "{name}.{} references {name} itself: its rows go in with that reference \
                    empty, then a second pass fills it.",
                    fk.columns.join(", ")
                ));
            } else if inclusion.contains_key(&fk.references) {
                entry.entry(fk.references.clone()).or_default().push(Edge::Key(fk.name.clone()));
            }
        }
        let generic = generic_parents(mappings, name);
        for (column, _, parent) in &generic {
            if parent != name && inclusion.contains_key(parent) {
                entry.entry(parent.clone()).or_default().push(Edge::Generic(column.clone()));
            }
        }
        let mut columns: Vec<(&String, &String)> = generic.iter().map(|(c, b, _)| (c, b)).collect();
        columns.dedup();
        for (column, by) in columns {
            let own = generic.iter().any(|(c, _, p)| c == column && p == name);
            rationale.push(format!(
                "{name}.{column} is a generic reference: each row is checked, before it is \
                    written, against the table its {by} names{}.",
                if own {
                    format!(
                        " (but {name} itself, whose rows are not all in yet: once they are, a row \
                        pointing at no row is removed and rejected)"
                    )
                } else {
                    String::new()
                }
            ));
        }
    }
    (parents, deferred)
}

/// What ordering the plan's entities needs to know of them.
struct Order<'a> {
    tables: &'a BTreeMap<&'a TableName, &'a Table>,
    inclusion: &'a BTreeMap<TableName, Inclusion>,
    mappings: Option<&'a MappingSet>,
    fixed_batch: Option<usize>,
}

/// The entities in waves by topological sort, a cycle broken at a nullable foreign key.
fn waves(
    order: &Order<'_>,
    parents: &mut Parents,
    deferred: &mut BTreeMap<TableName, Vec<String>>,
    rationale: &mut Vec<String>,
) -> Result<Vec<Vec<PlannedEntity>>, PlanError> {
    let Order { tables, inclusion, mappings, fixed_batch } = *order;
    // The parents a broken cycle loads after each child.
    let mut later: BTreeMap<TableName, Vec<TableName>> = BTreeMap::new();
    let mut placed: BTreeSet<TableName> = BTreeSet::new();
    let mut waves: Vec<Vec<PlannedEntity>> = Vec::new();
    while placed.len() < inclusion.len() {
        let ready: Vec<TableName> = parents
            .iter()
            .filter(|(n, ps)| !placed.contains(*n) && ps.keys().all(|p| placed.contains(p)))
            .map(|(n, _)| n.clone())
            .collect();
        if ready.is_empty() {
            let (child, parent, edge) = break_cycle(parents, &placed, tables)?;
            rationale.push(match &edge {
                Edge::Key(fk) => format!(
                    "{child} and {parent} reference each other: {child} goes first, its {fk} \
                    written as it is and proven once {parent} is in (the key is put back after \
                    the last load)."
                ),
                Edge::Generic(column) => format!(
                    "{child} and {parent} reference each other: {child} goes first, its generic \
                    reference {column} to {parent} written as it is and counted by validation \
                    once {parent} is in."
                ),
            });
            later.entry(child.clone()).or_default().push(parent.clone());
            let edges = parents
                .get_mut(&child)
                .and_then(|ps| ps.get_mut(&parent))
                .expect("the edge exists");
            edges.retain(|e| e != &edge);
            if edges.is_empty() {
                parents.get_mut(&child).expect("the child exists").remove(&parent);
            }
            if let Edge::Key(fk) = edge {
                deferred.entry(child).or_default().push(fk);
            }
            continue;
        }
        let wave_no = waves.len() + 1;
        for name in &ready {
            let ps: Vec<String> = parents[name].keys().map(ToString::to_string).collect();
            if !ps.is_empty() {
                rationale.push(format!(
                    "{name} is in wave {wave_no} because it references {}.",
                    ps.join(", ")
                ));
            }
        }
        waves.push(
            ready
                .iter()
                .map(|name| PlannedEntity {
                    table: name.clone(),
                    target: mappings.and_then(|m| m.spec(name)).map(|s| s.target.clone()),
                    inclusion: inclusion[name].clone(),
                    estimated_rows: tables[name].rows(),
                    bytes: tables[name].bytes,
                    batch_size: fixed_batch
                        .unwrap_or_else(|| batch_size(tables[name].avg_row_bytes)),
                    forecast: None,
                    deferred_foreign_keys: deferred.get(name).cloned().unwrap_or_default(),
                    later_parents: later.get(name).cloned().unwrap_or_default(),
                    scripts: mappings
                        .and_then(|m| m.spec(name))
                        .map(|s| {
                            s.scripts()
                                .iter()
                                .map(|c| format!("{} {}", c.path, crate::code::sha256(&c.code)))
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect(),
        );
        placed.extend(ready);
    }
    Ok(waves)
}

/// Every source table the plan leaves out, with why: so that a report can account for each.
fn left_out(
    report: &SchemaReport,
    inclusion: &BTreeMap<TableName, Inclusion>,
    resolved: &Goal,
    excluded: &[TableName],
    mappings: Option<&MappingSet>,
) -> Vec<LeftOut> {
    report
        .tables
        .iter()
        .filter(|t| !inclusion.contains_key(&t.name))
        .map(|t| {
            let unmapped = mappings
                .and_then(|m| m.unmapped.iter().find(|(u, _)| u == &t.name))
                .map(|(_, why)| why.to_string());
            let reason = if resolved.excluded.contains(&t.name) {
                "excluded by the goal".to_owned()
            } else if excluded.contains(&t.name) {
                "references a table the goal excludes".to_owned()
            } else if let Some(why) = unmapped {
                why
            } else {
                "not in the goal".to_owned()
            };
            let merged = mappings.is_some_and(|m| {
                m.unmapped.iter().any(|(u, why)| u == &t.name && matches!(why, Unmapped::Merged))
            });
            LeftOut { table: t.name.clone(), reason, merged }
        })
        .collect()
}

/// Attaches each entity's forecast and writes down the risks it shows.
pub fn assess(mut plan: MigrationPlan, forecasts: &[(TableName, Forecast)]) -> MigrationPlan {
    for e in plan.waves.iter_mut().flatten() {
        let Some((_, f)) = forecasts.iter().find(|(t, _)| t == &e.table) else { continue };
        if f.reject > 0 {
            let top: Vec<String> =
                f.reasons.iter().take(3).map(|r| format!("{} {}", r.count, r.reason)).collect();
            plan.rationale.push(format!(
                "{}: {} of {} rows will be rejected ({}).",
                e.table,
                f.reject,
                f.rows,
                top.join("; ")
            ));
        }
        if !f.unchecked.is_empty() {
            plan.rationale.push(format!(
                "{}: not checked ahead, the database will judge: {}.",
                e.table,
                f.unchecked.join(", ")
            ));
        }
        e.forecast = Some(f.clone());
    }
    plan
}

/// Picks the foreign key to defer among the tables left unplaced: the first, by child and
/// constraint name, whose columns may all be NULL.
fn break_cycle(
    parents: &Parents,
    placed: &BTreeSet<TableName>,
    tables: &BTreeMap<&TableName, &Table>,
) -> Result<(TableName, TableName, Edge), PlanError> {
    let stuck: Vec<&TableName> = parents.keys().filter(|n| !placed.contains(*n)).collect();
    // Every edge between tables not placed yet, by child, parent and edge.
    let mut unplaced: Vec<(&TableName, &TableName, &Edge)> = Vec::new();
    for child in &stuck {
        for (parent, edges) in parents[*child].iter().filter(|(p, _)| !placed.contains(*p)) {
            unplaced.extend(edges.iter().map(|e| (*child, parent, e)));
        }
    }
    // A foreign key first, then a generic reference (which no key proves).
    let nullable = |(child, _, edge): &&(&TableName, &TableName, &Edge)| {
        let Edge::Key(fk_name) = edge else { return false };
        let table = tables[*child];
        let fk = table
            .foreign_keys
            .iter()
            .find(|f| &f.name == fk_name)
            .expect("key edges come from the table's keys");
        fk.columns.iter().all(|c| table.columns.iter().any(|col| &col.name == c && col.nullable))
    };
    let generic =
        |(_, _, edge): &&(&TableName, &TableName, &Edge)| matches!(edge, Edge::Generic(_));
    if let Some((child, parent, edge)) =
        unplaced.iter().find(nullable).or_else(|| unplaced.iter().find(generic))
    {
        return Ok(((*child).clone(), (*parent).clone(), (*edge).clone()));
    }
    Err(PlanError::Cycle {
        tables: stuck.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
    })
}

/// The plan as an operator reads it.
pub fn render(plan: &MigrationPlan) -> String {
    let forecast = plan.entities().any(|e| e.forecast.is_some());
    let mut out = format!(
        "Plan for \"{}\" ({} entities, about {} rows)\n",
        plan.goal,
        plan.entities().count(),
        plan.estimated_rows()
    );
    for (i, wave) in plan.waves.iter().enumerate() {
        out.push_str(&format!("  wave {}:\n", i + 1));
        for e in wave {
            let target = e.target.as_ref().map(|t| format!(" -> {t}")).unwrap_or_default();
            let name = format!("{}{target}", e.table);
            let counts = match &e.forecast {
                Some(f) => {
                    format!("{:>9} rows {:>9} migrate {:>7} reject", f.rows, f.migrate, f.reject)
                }
                None => format!("~{:>9} rows", e.estimated_rows),
            };
            let why = match &e.inclusion {
                Inclusion::Requested => String::new(),
                Inclusion::RequiredBy { entities } => {
                    format!(
                        "  (needed by {})",
                        entities.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                    )
                }
            };
            let deferred = if e.deferred_foreign_keys.is_empty() {
                String::new()
            } else {
                format!("  [second pass: {}]", e.deferred_foreign_keys.join(", "))
            };
            out.push_str(&format!(
                "    {name:<52} {counts}  batch {}{why}{deferred}\n",
                e.batch_size
            ));
            for r in e.forecast.iter().flat_map(|f| &f.reasons) {
                out.push_str(&format!(
                    "        {:>7} x {} (e.g. {})\n",
                    r.count,
                    r.reason,
                    r.examples.join(", ")
                ));
            }
        }
    }
    if forecast {
        out.push_str(&format!(
            "  expected: {} rows migrated, {} rejected\n",
            plan.expected_migrated(),
            plan.expected_rejected()
        ));
    }
    let rollback: Vec<String> = plan.rollback_order().iter().map(ToString::to_string).collect();
    out.push_str(&format!("  rollback order: {}\n", rollback.join(", ")));
    out.push_str(&format!("  plan hash: {}\n", plan.hash()));
    out
}

#[cfg(test)]
mod tests;
