//! The orchestrator: spawns the other six agents linked to itself, restarts the ones that fail
//! (per the [`RestartPolicy`]), and drives a run's phases by asking the agents in turn.
//!
//! A phase runs in its own task, not in the orchestrator's message handler, so the orchestrator
//! keeps handling supervision events while the phase waits on an agent: that is what lets it
//! restart a crashed agent under a request that is still waiting for it.

use std::collections::HashSet;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use runtime::config::DbRole;
use runtime::context::RunContext;
use runtime::domain::{CodeRequest, DiffApplied, EntityDiff, EntityValidation, RolledBack};
use runtime::domain::{MigrationPlan, PlannedEntity, SchemaReport, TableName};
use runtime::envelope::{AgentError, CallError, Courier, Envelope};
use runtime::events::RunEvent;
use runtime::ports::{Catalog, CodeRunner, Llm, Rows, Target};
use runtime::supervise::{RestartPolicy, Slot, Team};
use runtime::AgentName;
use serde::{Deserialize, Serialize};

use crate::code::ScriptedRows;
use crate::data_mapping::{DataMappingAgent, DataMappingArgs, DataMappingMsg, MapRequest};
use crate::differential::{DiffEntity, Pass};
use crate::execution::{
    ApplyDiff, Constraints, EntityResult, ExecutionAgent, ExecutionArgs, ExecutionMsg, Rollback,
};
use crate::guidance::{CodeQuestion, GuidanceAgent, GuidanceArgs, GuidanceMsg};
use crate::pipeline::MigrateEntity;
use crate::planning::{AssessRequest, PlanRequest, PlanningAgent, PlanningArgs, PlanningMsg};
use crate::schema_analysis::{
    AnalyzeRequest, ForecastRequest, Profile, ProfileRequest, SchemaAnalysisAgent,
    SchemaAnalysisArgs, SchemaMsg,
};
use crate::validation::{ValidationAgent, ValidationArgs, ValidationMsg};
use runtime::mapping::{MappingFile, MappingSet};

const ME: AgentName = AgentName::Orchestrator;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanGoal {
    pub goal: String,
    pub only: bool,
    /// The mapping file's rules (empty: infer everything).
    pub mapping: MappingFile,
    /// Where the mapping came from, for messages: a path, or "inferred".
    pub mapping_origin: String,
    /// `BATCH_SIZE` when the operator set it.
    pub batch_size: Option<usize>,
    /// The run was approved before its plan was made (`run --yes`): nobody reads the forecast,
    /// so it reads only the entities the plan cannot be approved without (a broken cycle's).
    pub unattended: bool,
}

/// A plan ready for the operator's approval.
#[derive(Clone, Debug, Serialize)]
pub struct PlanOutcome {
    pub plan: MigrationPlan,
    pub mappings: MappingSet,
    /// The target as analyzed, for the execution.
    #[serde(skip)]
    pub target: SchemaReport,
    /// What an approval is tied to.
    pub hash: String,
    /// The plan in plain words, from the guidance agent.
    pub explanation: String,
}

/// How many agent requests a phase makes at most, one after another: the bound on a phase is
/// this many request timeouts, so the operator's wait always outlasts the agents' own.
pub const PHASE_STEPS: u32 = 8;

/// How long one entity's migration may take before the run reports it as stuck.
pub const ENTITY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// Carry out an approved plan.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExecuteRequest {
    pub plan: MigrationPlan,
    pub mappings: MappingSet,
    pub target: SchemaReport,
    /// How many entities migrate at once.
    pub jobs: usize,
    /// Set each table's foreign keys and plain indexes aside while it loads.
    pub suspend_constraints: bool,
    /// Validate each entity once it is loaded.
    pub validate: bool,
}

pub enum OrchestratorMsg {
    Execute(Box<Envelope<ExecuteRequest>>, RpcReplyPort<Result<Vec<EntityResult>, AgentError>>),
    Plan(Envelope<PlanGoal>, RpcReplyPort<Result<PlanOutcome, AgentError>>),
    Analyze(Envelope<AnalyzeRequest>, RpcReplyPort<Result<SchemaReport, AgentError>>),
    /// Profile a source table by code in the sandbox (given, or written by the model from a
    /// question), or by the built-in statistics.
    Profile(Envelope<ProfileGoal>, RpcReplyPort<Result<(Profile, SchemaReport), AgentError>>),
    /// Delete what agentctl migrated of the goal's entities (for `agentctl rollback`).
    Rollback(Envelope<PlanGoal>, RpcReplyPort<Result<Vec<RolledBack>, AgentError>>),
    /// Validate what the target holds for the goal's entities (for `agentctl validate`).
    Validate(Envelope<PlanGoal>, RpcReplyPort<Result<Vec<EntityValidation>, AgentError>>),
    /// The mappings alone (for `agentctl mapping`).
    Map(Envelope<PlanGoal>, RpcReplyPort<Result<MappingSet, AgentError>>),
    /// Differential migration: analyse, and apply (for `agentctl diff` and sync jobs).
    Diff(Envelope<DiffGoal>, RpcReplyPort<Result<DiffReport, AgentError>>),
}

/// What `agentctl diff analyze|migrate` and a sync job ask.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiffGoal {
    pub goal: PlanGoal,
    /// Analyse every entity first, even one whose last analysis is not applied yet.
    pub analyze: bool,
    /// Apply the pending analyses (analysing first the entities that have none).
    pub apply: bool,
    /// Read every source row, even of a table whose `updated_at` is trusted.
    pub full: bool,
}

/// What a differential run found and did, per entity in plan order.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DiffReport {
    pub analyses: Vec<EntityDiff>,
    pub applied: Vec<(TableName, DiffApplied)>,
}

impl DiffReport {
    pub fn total(&self) -> DiffApplied {
        let mut all = DiffApplied::default();
        for (_, a) in &self.applied {
            all.add(a);
        }
        all
    }
}

/// What the team needs from the world.
#[derive(Clone)]
pub struct Tools {
    pub source: Arc<dyn Catalog>,
    pub target: Option<Arc<dyn Catalog>>,
    /// The source's rows, for forecasts and the migration.
    pub source_rows: Arc<dyn Rows>,
    /// Where migrated rows are written.
    pub target_writer: Option<Arc<dyn Target>>,
    /// The language model, when one is configured.
    pub llm: Option<Arc<dyn Llm>>,
    /// The sandbox for code the agents did not ship with (custom transforms, scripts).
    pub code: Option<Arc<dyn CodeRunner>>,
}

#[derive(Clone)]
pub struct Orchestrator;

pub struct OrchestratorArgs {
    pub ctx: Arc<RunContext>,
    pub tools: Tools,
    pub policy: RestartPolicy,
}

/// The slots through which the orchestrator's phases reach the agents they use.
#[derive(Clone)]
struct Agents {
    schema: Slot<SchemaMsg>,
    planning: Slot<PlanningMsg>,
    mapping: Slot<DataMappingMsg>,
    execution: Slot<ExecutionMsg>,
    validation: Slot<ValidationMsg>,
    guidance: Slot<GuidanceMsg>,
}

pub struct OrchestratorState {
    team: Team,
    agents: Agents,
    courier: Courier,
    /// Each reader of source rows that runs custom transforms, to stop their scripts.
    scripted: Vec<Arc<ScriptedRows>>,
    /// The phases under way, each a task that asks the agents and answers its request; ended
    /// when the orchestrator stops.
    phases: tokio::task::JoinSet<()>,
}

/// The six agents, not started yet: the team that respawns them, the slots their callers use,
/// and the readers of source rows that run custom transforms.
fn team(args: OrchestratorArgs) -> (Team, Agents, Vec<Arc<ScriptedRows>>) {
    let ctx = args.ctx;
    let mut team = Team::new(ctx.clone(), args.policy);
    // Each agent that reads source rows reads them with the mapping's custom transforms
    // applied, through scripts of its own in the sandbox.
    let scripted = |agent| {
        Arc::new(ScriptedRows::new(
            args.tools.source_rows.clone(),
            args.tools.code.clone(),
            ctx.clone(),
            agent,
        ))
    };
    let (for_schema, for_mapping, for_execution, for_validation) = (
        scripted(AgentName::SchemaAnalysis),
        scripted(AgentName::DataMapping),
        scripted(AgentName::Execution),
        scripted(AgentName::Validation),
    );
    let all_scripted = vec![
        for_schema.clone(),
        for_mapping.clone(),
        for_execution.clone(),
        for_validation.clone(),
    ];
    let agents = Agents {
        schema: team.add(
            AgentName::SchemaAnalysis,
            SchemaAnalysisAgent,
            SchemaAnalysisArgs {
                ctx: ctx.clone(),
                source: args.tools.source,
                target: args.tools.target,
                source_rows: for_schema,
                code: args.tools.code.clone(),
            },
        ),
        planning: team.add(
            AgentName::Planning,
            PlanningAgent,
            PlanningArgs { ctx: ctx.clone(), llm: args.tools.llm.clone() },
        ),
        mapping: team.add(
            AgentName::DataMapping,
            DataMappingAgent,
            DataMappingArgs { ctx: ctx.clone(), llm: args.tools.llm.clone(), rows: for_mapping },
        ),
        execution: team.add(
            AgentName::Execution,
            ExecutionAgent,
            ExecutionArgs {
                ctx: ctx.clone(),
                source_rows: for_execution,
                target: args.tools.target_writer.clone(),
                policy: args.policy,
            },
        ),
        validation: team.add(
            AgentName::Validation,
            ValidationAgent,
            ValidationArgs {
                ctx: ctx.clone(),
                source_rows: for_validation,
                target: args.tools.target_writer,
                policy: args.policy,
            },
        ),
        guidance: team.add(
            AgentName::Guidance,
            GuidanceAgent,
            GuidanceArgs { ctx: ctx.clone(), llm: args.tools.llm.clone() },
        ),
    };
    (team, agents, all_scripted)
}

impl Actor for Orchestrator {
    type Msg = OrchestratorMsg;
    type State = OrchestratorState;
    type Arguments = OrchestratorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<OrchestratorMsg>,
        args: OrchestratorArgs,
    ) -> Result<OrchestratorState, ActorProcessingErr> {
        let (ctx, policy) = (args.ctx.clone(), args.policy);
        let (mut team, agents, scripted) = team(args);
        team.start(&myself.get_cell()).await?;
        ctx.decision(
            ME,
            "started the team of six agents",
            format!(
                "each agent is linked to the orchestrator, which restarts one that fails up to {} \
                    times within {}s before the run gives up on it; the execution and validation \
                    agents apply the same policy to the worker each entity runs in, which starts \
                    again from what is committed",
                policy.max_restarts,
                policy.window.as_secs()
            ),
            AgentName::TEAM,
        );
        Ok(OrchestratorState {
            team,
            agents,
            courier: Courier::new(ctx, ME),
            scripted,
            phases: tokio::task::JoinSet::new(),
        })
    }

    async fn handle(
        &self,
        _: ActorRef<OrchestratorMsg>,
        msg: OrchestratorMsg,
        state: &mut OrchestratorState,
    ) -> Result<(), ActorProcessingErr> {
        let (agents, courier) = (state.agents.clone(), state.courier.clone());
        while state.phases.try_join_next().is_some() {}
        // A phase waits on the agents for minutes; it runs beside the orchestrator's mailbox,
        // so supervision events and other requests are handled meanwhile.
        state.phases.spawn(async move { phase(&courier, &agents, msg).await });
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<OrchestratorMsg>,
        event: SupervisionEvent,
        state: &mut OrchestratorState,
    ) -> Result<(), ActorProcessingErr> {
        state.team.on_event(event, &myself.get_cell()).await;
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<OrchestratorMsg>,
        state: &mut OrchestratorState,
    ) -> Result<(), ActorProcessingErr> {
        // The phases first (their requests are dropped, never half-applied), then the agents,
        // which end the work they supervise before they stop.
        state.phases.abort_all();
        while state.phases.join_next().await.is_some() {}
        myself.stop_children_and_wait(None, Some(std::time::Duration::from_secs(10))).await;
        futures::future::join_all(state.scripted.iter().map(|s| s.close())).await;
        Ok(())
    }
}

/// The entities in a broken cycle (`later_parents`) and every table their references reach,
/// transitively: what the forecast must read to know which of the cycle's rows are rejected.
fn in_cycles(plan: &MigrationPlan, mappings: &MappingSet) -> HashSet<TableName> {
    let mut needed: Vec<TableName> = plan
        .entities()
        .filter(|e| !e.later_parents.is_empty())
        .flat_map(|e| std::iter::once(e.table.clone()).chain(e.later_parents.iter().cloned()))
        .collect();
    let mut seen = HashSet::new();
    while let Some(table) = needed.pop() {
        if !seen.insert(table.clone()) {
            continue;
        }
        if let Some(spec) = mappings.spec(&table) {
            needed.extend(spec.parents().cloned());
        }
    }
    seen
}

/// Runs the phase a request asks for and answers it.
async fn phase(courier: &Courier, agents: &Agents, msg: OrchestratorMsg) {
    match msg {
        OrchestratorMsg::Plan(env, reply) => {
            let _ = reply.send(plan_phase(courier, agents, env.body).await);
        }
        OrchestratorMsg::Analyze(env, reply) => {
            let _ = reply.send(analyze(courier, agents, env.body).await);
        }
        OrchestratorMsg::Profile(env, reply) => {
            let _ = reply.send(profile_phase(courier, agents, env.body).await);
        }
        OrchestratorMsg::Execute(env, reply) => {
            let _ = reply.send(execute_phase(courier, agents, env.body).await);
        }
        OrchestratorMsg::Rollback(env, reply) => {
            let _ = reply.send(rollback_phase(courier, agents, env.body).await);
        }
        OrchestratorMsg::Validate(env, reply) => {
            let _ = reply.send(validate_phase(courier, agents, env.body).await);
        }
        OrchestratorMsg::Diff(env, reply) => {
            let _ = reply.send(diff_phase(courier, agents, env.body).await);
        }
        OrchestratorMsg::Map(env, reply) => {
            let mapped = map_phase(courier, agents, &env.body, Mapped::Whole).await;
            let _ = reply.send(mapped.map(|(_, _, m)| m));
        }
    }
}

/// Flattens "the request failed" and "the agent said no" into the one error a phase reports.
fn answer<T>(r: Result<Result<T, AgentError>, CallError>) -> Result<T, AgentError> {
    r.map_err(|e| AgentError::new(ME, e.to_string()))?
}

async fn analyze(
    courier: &Courier,
    agents: &Agents,
    request: AnalyzeRequest,
) -> Result<SchemaReport, AgentError> {
    answer(courier.ask(&agents.schema, "analyze", request, SchemaMsg::Analyze).await)
}

/// What `agentctl profile` asks: a table, and code to run on its sample or a question for the
/// model to write code for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfileGoal {
    pub table: String,
    pub sample: usize,
    pub code: Option<CodeRequest>,
    pub question: Option<String>,
}

/// Finds the table, gets the code (given, or the guidance agent's model writes it), and has the
/// schema analysis agent run it on sample rows. Returns the source report too, whose column
/// statistics are the built-in profile.
async fn profile_phase(
    courier: &Courier,
    agents: &Agents,
    goal: ProfileGoal,
) -> Result<(Profile, SchemaReport), AgentError> {
    let source =
        analyze(courier, agents, AnalyzeRequest { side: DbRole::Source, exact_counts: false })
            .await?;
    let wanted = goal.table.trim();
    let table = source
        .tables
        .iter()
        .find(|t| t.name.name == wanted || t.name.to_string() == wanted)
        .ok_or_else(|| {
            let names: Vec<&str> = source.tables.iter().map(|t| t.name.name.as_str()).collect();
            AgentError::new(
                ME,
                format!("the source has no table `{wanted}`; it has: {}", names.join(", ")),
            )
        })?;
    let columns: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
    let code = match (goal.code, goal.question) {
        (Some(code), _) => Some(code),
        (None, Some(question)) => {
            let body = CodeQuestion {
                question,
                table: table.name.clone(),
                columns: columns.clone(),
                sample: goal.sample,
            };
            answer(courier.ask(&agents.guidance, "write code", body, GuidanceMsg::WriteCode).await)?
        }
        (None, None) => None,
    };
    let request = ProfileRequest {
        table: table.name.clone(),
        columns,
        key: table.primary_key.clone(),
        sample: goal.sample,
        code,
    };
    let profile =
        answer(courier.ask(&agents.schema, "profile", request, SchemaMsg::Profile).await)?;
    Ok((profile, source))
}

/// What a phase needs of the mapping.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mapped {
    /// Every table mapped, or every problem named (`mapping show`, `mapping init`), custom
    /// transforms tried on sample rows.
    Whole,
    /// For a plan: a table whose mapping has problems is left out with them, and stops the
    /// plan only if the goal needs it; custom transforms tried on sample rows.
    ForPlan,
    /// For the entities of a plan made before (a rollback, a validation, a sync): as for a
    /// plan, without trying the transforms.
    ForScope,
}

/// Both schemas and the mappings between them, as `mapped` asks.
async fn map_phase(
    courier: &Courier,
    agents: &Agents,
    goal: &PlanGoal,
    mapped: Mapped,
) -> Result<(SchemaReport, SchemaReport, MappingSet), AgentError> {
    let ctx = courier.ctx();
    ctx.events.publish(RunEvent::Phase { run_id: ctx.run_id, phase: "analyze".into() });
    let source =
        analyze(courier, agents, AnalyzeRequest { side: DbRole::Source, exact_counts: false })
            .await?;
    // The references the mapping file declares are foreign keys from here on.
    let source = crate::data_mapping::declare_references(&source, &goal.mapping)
        .map_err(|p| crate::data_mapping::problems_error(&goal.mapping_origin, &p))?;
    let target =
        analyze(courier, agents, AnalyzeRequest { side: DbRole::Target, exact_counts: false })
            .await?;
    ctx.events.publish(RunEvent::Phase { run_id: ctx.run_id, phase: "map".into() });
    let request = MapRequest {
        source: source.clone(),
        target: target.clone(),
        file: goal.mapping.clone(),
        file_origin: goal.mapping_origin.clone(),
        preview: mapped != Mapped::ForScope,
        partial: mapped != Mapped::Whole,
    };
    let mappings = answer(courier.ask(&agents.mapping, "map", request, DataMappingMsg::Map).await)?;
    Ok((source, target, mappings))
}

fn plan_request(
    goal: PlanGoal,
    source: SchemaReport,
    target: &SchemaReport,
    mappings: &MappingSet,
) -> PlanRequest {
    PlanRequest {
        goal: goal.goal,
        only: goal.only,
        source: Box::new(source),
        target: Box::new(target.clone()),
        mappings: mappings.clone(),
        batch_size: goal.batch_size,
    }
}

async fn plan_phase(
    courier: &Courier,
    agents: &Agents,
    goal: PlanGoal,
) -> Result<PlanOutcome, AgentError> {
    let ctx = courier.ctx();
    let (source, target, mappings) = map_phase(courier, agents, &goal, Mapped::ForPlan).await?;
    ctx.events.publish(RunEvent::Phase { run_id: ctx.run_id, phase: "plan".into() });
    // A source that stores bytes of no declared encoding is read whole ahead even when nobody
    // reads the forecast: a value that is not UTF-8 stops the run before anything is written,
    // not half way through it.
    let bytes = source.stores_bytes();
    let unattended = goal.unattended && !bytes;
    let request = plan_request(goal, source, &target, &mappings);
    let plan = answer(courier.ask(&agents.planning, "plan", request, PlanningMsg::Plan).await)?;
    ctx.events.publish(RunEvent::Phase { run_id: ctx.run_id, phase: "forecast".into() });
    if bytes {
        ctx.decision(
            ME,
            format!("forecast all {} entities", plan.entities().count()),
            "the source stores text as SQL_ASCII (bytes of no declared encoding): every row is \
                read before the run starts, so that a value that is not UTF-8 stops it before \
                anything is written",
            serde_json::Value::Null,
        );
    }
    let needed = if unattended { Some(in_cycles(&plan, &mappings)) } else { None };
    let order: Vec<TableName> = plan
        .entities()
        .filter(|e| needed.as_ref().is_none_or(|n| n.contains(&e.table)))
        .map(|e| e.table.clone())
        .collect();
    if unattended {
        ctx.decision(
            ME,
            format!("forecast {} of {} entities", order.len(), plan.entities().count()),
            "the run was approved ahead (--yes), so nobody reads a forecast before it starts: \
                only the entities of a broken cycle and the tables they reach are read ahead, \
                since rows the cycle would reject refuse the plan; every other row is accounted \
                for by the load, which sets aside each row that does not fit with its reason",
            &order,
        );
    }
    let target_report = target.clone();
    let forecasts = if order.is_empty() {
        Vec::new()
    } else {
        let request = ForecastRequest { order, mappings: mappings.clone(), target };
        answer(
            courier
                .ask(&agents.schema, "forecast", request, |e, p| {
                    SchemaMsg::Forecast(Box::new(e), p)
                })
                .await,
        )?
    };
    let plan = answer(
        courier
            .ask(&agents.planning, "assess", AssessRequest { plan, forecasts }, PlanningMsg::Assess)
            .await,
    )?;
    let unsettled = crate::planning::unsettled_cycles(&plan, &mappings);
    if !unsettled.is_empty() {
        return Err(AgentError::new(ME, unsettled.join("; ")));
    }
    let explanation = answer(
        courier
            .ask(&agents.guidance, "explain the plan", plan.clone(), GuidanceMsg::ExplainPlan)
            .await,
    )?;
    let hash = plan.hash();
    ctx.decision(
        ME,
        format!("plan {} is ready for approval", &hash[..12]),
        "an approval is tied to this hash: if the plan changes before it runs, the approval no \
            longer applies",
        serde_json::json!({"hash": hash}),
    );
    Ok(PlanOutcome { plan, mappings, target: target_report, hash, explanation })
}

/// Migrates the plan's entities, each once its parents are loaded, then validates each.
async fn execute_phase(
    courier: &Courier,
    agents: &Agents,
    req: ExecuteRequest,
) -> Result<Vec<EntityResult>, AgentError> {
    let ctx = courier.ctx();
    ctx.events.publish(RunEvent::Phase { run_id: ctx.run_id, phase: "execute".into() });
    let jobs = req.jobs.clamp(1, 8);
    let order: Vec<&PlannedEntity> = req.plan.entities().collect();
    let tables: Vec<TableName> = order
        .iter()
        .filter_map(|e| req.mappings.spec(&e.table).map(|s| s.target.clone()))
        .collect();
    // Before any change: what the load must be allowed to do, all of it at once.
    let body = Constraints { tables: tables.clone(), suspend: req.suspend_constraints };
    answer(
        courier.ask(&agents.execution, "check privileges", body, ExecutionMsg::Preflight).await,
    )?;
    // Set aside before any load and put back after the last, so no constraint DDL ever waits
    // for a batch or makes one wait.
    if req.suspend_constraints {
        let body = Constraints { tables: tables.clone(), suspend: true };
        answer(
            courier
                .ask(&agents.execution, "set aside constraints", body, ExecutionMsg::Constraints)
                .await,
        )?;
    }
    let loaded = migrate_all(courier, agents, &req, &order, jobs).await;
    // Put back what is set aside also when the migration failed: the rows in are valid. (If
    // the target is gone, the record stays for the resumed run or a rollback.)
    let body = Constraints { tables, suspend: false };
    let restored = answer(
        courier
            .ask(&agents.execution, "put back constraints", body, ExecutionMsg::Constraints)
            .await,
    );
    let mut results = loaded?;
    restored?;
    // Report in plan order, whatever order they finished in.
    results.sort_by_key(|r| order.iter().position(|e| Some(&e.table) == r.source.as_ref()));
    let (migrated, kept, rejected) =
        results.iter().fold((0, 0, 0), |(m, k, r), e| (m + e.migrated, k + e.kept, r + e.rejected));
    ctx.decision(
        ME,
        format!(
            "migrated {} entities: {migrated} rows in, {kept} kept from before agentctl, \
                {rejected} rejected",
            results.len()
        ),
        "each entity balanced: every source row migrated, kept or rejected with its reason",
        &results,
    );
    Ok(results)
}

/// Migrates every entity as soon as the parents it references (in earlier waves) are loaded,
/// up to `jobs` at once: a large table does not hold back the tables that do not need it. Of
/// the entities ready, the one heading the most rows (its own and every entity that waits for
/// it, `heads`) starts first, so that a long chain of parents is not left behind small tables
/// and its last child does not run alone at the end.
async fn migrate_all(
    courier: &Courier,
    agents: &Agents,
    req: &ExecuteRequest,
    order: &[&PlannedEntity],
    jobs: usize,
) -> Result<Vec<EntityResult>, AgentError> {
    let wave_of =
        |t: &TableName| req.plan.waves.iter().position(|w| w.iter().any(|e| &e.table == t));
    let deps: Vec<Vec<usize>> = order
        .iter()
        .map(|e| {
            let own = wave_of(&e.table);
            let parents: Vec<TableName> = req
                .mappings
                .spec(&e.table)
                .map(|s| s.parents().cloned().collect())
                .unwrap_or_default();
            // A reference to a later wave is one the planner broke a cycle at (filled later).
            order
                .iter()
                .enumerate()
                .filter(|(_, p)| parents.contains(&p.table) && wave_of(&p.table) < own)
                .map(|(i, _)| i)
                .collect()
        })
        .collect();
    let rows: Vec<i64> = order.iter().map(|e| e.estimated_rows.max(0)).collect();
    let heads = heads(&deps, &rows);
    let mut started = vec![false; order.len()];
    let mut done = vec![false; order.len()];
    let mut running = tokio::task::JoinSet::new();
    let mut results = Vec::with_capacity(order.len());
    loop {
        while running.len() < jobs {
            // The most rows headed; of equals, the first in the plan's order.
            let Some(i) = (0..order.len())
                .filter(|&i| !started[i] && deps[i].iter().all(|&d| done[d]))
                .max_by_key(|&i| (heads[i], std::cmp::Reverse(i)))
            else {
                break;
            };
            started[i] = true;
            let body = MigrateEntity {
                constraints_suspended: req.suspend_constraints,
                ..entity_request(&req.mappings, &req.target, order[i])?
            };
            // An entity whose reference waits for a later parent is proven once that parent is
            // in (below), not before: until then its references point at nothing yet.
            let (courier, agents, validate) = (
                courier.clone(),
                agents.clone(),
                req.validate && body.entity.later_parents.is_empty(),
            );
            running.spawn(async move {
                let asked = courier.ask_within(
                    &agents.execution,
                    "migrate",
                    body.clone(),
                    |e, p| ExecutionMsg::Migrate(Box::new(e), p),
                    ENTITY_TIMEOUT,
                );
                let mut result = answer(asked.await)?;
                // Proven right after it is loaded, while the next entities load.
                if validate {
                    result.validation = Some(validate_entity(&courier, &agents, body).await?);
                }
                Ok::<_, AgentError>((i, result))
            });
        }
        let Some(finished) = running.join_next().await else { break };
        let (i, result) = finished
            .map_err(|e| AgentError::new(ME, format!("an entity's migration stopped: {e}")))??;
        done[i] = true;
        results.push(result);
    }
    if req.validate {
        for result in &mut results {
            let Some(entity) = order
                .iter()
                .find(|e| Some(&e.table) == result.source.as_ref() && !e.later_parents.is_empty())
            else {
                continue;
            };
            let body = MigrateEntity {
                constraints_suspended: req.suspend_constraints,
                ..entity_request(&req.mappings, &req.target, entity)?
            };
            result.validation = Some(validate_entity(courier, agents, body).await?);
        }
    }
    Ok(results)
}

/// Per entity, its own `rows` and those of every entity that waits for it, directly or
/// through others (each counted once); `deps[i]` are the entities `i` waits for.
fn heads(deps: &[Vec<usize>], rows: &[i64]) -> Vec<i64> {
    let mut waiting: Vec<Vec<usize>> = vec![Vec::new(); deps.len()];
    for (child, parents) in deps.iter().enumerate() {
        parents.iter().for_each(|&p| waiting[p].push(child));
    }
    (0..deps.len())
        .map(|i| {
            let mut seen = vec![false; deps.len()];
            let mut stack = vec![i];
            let mut total = 0;
            while let Some(n) = stack.pop() {
                if !std::mem::replace(&mut seen[n], true) {
                    total += rows[n];
                    stack.extend(&waiting[n]);
                }
            }
            total
        })
        .collect()
}

/// What the execution and validation agents need to know of one planned entity.
fn entity_request(
    mappings: &MappingSet,
    target: &SchemaReport,
    entity: &PlannedEntity,
) -> Result<MigrateEntity, AgentError> {
    let spec = mappings
        .spec(&entity.table)
        .ok_or_else(|| AgentError::new(ME, format!("{} has no mapping", entity.table)))?;
    let mut parents: Vec<(TableName, TableName)> = spec
        .parents()
        .filter_map(|parent| mappings.spec(parent).map(|p| (parent.clone(), p.target.clone())))
        .collect();
    parents.sort();
    parents.dedup();
    Ok(MigrateEntity {
        entity: entity.clone(),
        spec: spec.clone(),
        parents,
        keys: mappings.keys,
        target: target.clone(),
        constraints_suspended: false,
    })
}

/// The goal's entities in dependency order, without a forecast.
async fn scope(
    courier: &Courier,
    agents: &Agents,
    goal: PlanGoal,
) -> Result<(MigrationPlan, MappingSet, SchemaReport), AgentError> {
    let (source, target, mappings) = map_phase(courier, agents, &goal, Mapped::ForScope).await?;
    let request = plan_request(goal, source, &target, &mappings);
    let plan = answer(courier.ask(&agents.planning, "plan", request, PlanningMsg::Plan).await)?;
    Ok((plan, mappings, target))
}

/// Rolls the goal's entities back, children first.
async fn rollback_phase(
    courier: &Courier,
    agents: &Agents,
    goal: PlanGoal,
) -> Result<Vec<RolledBack>, AgentError> {
    let ctx = courier.ctx();
    let (plan, mappings, _) = scope(courier, agents, goal).await?;
    ctx.events.publish(RunEvent::Phase { run_id: ctx.run_id, phase: "rollback".into() });
    let entities: Vec<(TableName, TableName)> = plan
        .rollback_order()
        .into_iter()
        .filter_map(|t| mappings.spec(t).map(|s| (t.clone(), s.target.clone())))
        .collect();
    let body = Rollback { entities, keys: mappings.keys };
    answer(
        courier
            .ask_within(
                &agents.execution,
                "roll back",
                body,
                ExecutionMsg::Rollback,
                ENTITY_TIMEOUT,
            )
            .await,
    )
}

/// Validates what is in the target for the goal's entities, up to four at once.
async fn validate_phase(
    courier: &Courier,
    agents: &Agents,
    goal: PlanGoal,
) -> Result<Vec<EntityValidation>, AgentError> {
    let ctx = courier.ctx();
    let (plan, mappings, target) = scope(courier, agents, goal).await?;
    ctx.events.publish(RunEvent::Phase { run_id: ctx.run_id, phase: "validate".into() });
    let order: Vec<&PlannedEntity> = plan.entities().collect();
    let requests: Vec<MigrateEntity> =
        order.iter().map(|e| entity_request(&mappings, &target, e)).collect::<Result<_, _>>()?;
    let validate = |body: MigrateEntity| {
        let (courier, agents) = (courier.clone(), agents.clone());
        async move { validate_entity(&courier, &agents, body).await }
    };
    let mut results = side_by_side(4, requests, "validation", validate).await?;
    results.sort_by_key(|r| order.iter().position(|e| e.table == r.source));
    Ok(results)
}

/// Runs `work` on each entity in a task of its own, up to `n` at once; the answers in the
/// order they finished.
async fn side_by_side<T, Fut>(
    n: usize,
    requests: Vec<MigrateEntity>,
    what: &str,
    work: impl Fn(MigrateEntity) -> Fut,
) -> Result<Vec<T>, AgentError>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = Result<T, AgentError>> + Send + 'static,
{
    let mut running = tokio::task::JoinSet::new();
    let mut queue = requests.into_iter();
    let mut results = Vec::new();
    loop {
        while running.len() < n {
            let Some(body) = queue.next() else { break };
            running.spawn(work(body));
        }
        let Some(done) = running.join_next().await else { break };
        results.push(done.map_err(|e| AgentError::new(ME, format!("{what} stopped: {e}")))??);
    }
    Ok(results)
}

/// Analyses the goal's entities (two at once) or, to apply, each right before its writes:
/// inserts and updates parents first, then deletes children first, then, parents first, the
/// writes refused before the deletes for what the sync's order left in their way.
async fn diff_phase(
    courier: &Courier,
    agents: &Agents,
    goal: DiffGoal,
) -> Result<DiffReport, AgentError> {
    let ctx = courier.ctx();
    let (plan, mappings, target) = scope(courier, agents, goal.goal).await?;
    let order: Vec<&PlannedEntity> = plan.entities().collect();
    let requests: Vec<MigrateEntity> =
        order.iter().map(|e| entity_request(&mappings, &target, e)).collect::<Result<_, _>>()?;
    let mut report = DiffReport::default();
    let full = goal.full;
    let analyze_one = |entity: MigrateEntity| {
        let (courier, agents) = (courier.clone(), agents.clone());
        async move {
            let body = DiffEntity { entity, full };
            let asked = courier.ask_within(
                &agents.validation,
                "analyse changes",
                body,
                |e, p| ValidationMsg::Diff(Box::new(e), p),
                ENTITY_TIMEOUT,
            );
            answer(asked.await)
        }
    };
    if !goal.apply {
        ctx.events.publish(RunEvent::Phase { run_id: ctx.run_id, phase: "analyze changes".into() });
        report.analyses = side_by_side(2, requests, "an analysis", analyze_one).await?;
        report.analyses.sort_by_key(|a| order.iter().position(|e| e.table == a.source));
        return Ok(report);
    }
    ctx.events.publish(RunEvent::Phase { run_id: ctx.run_id, phase: "apply changes".into() });
    let apply = |body: MigrateEntity, pass: Pass| {
        let (courier, agents) = (courier.clone(), agents.clone());
        async move {
            let asked = courier.ask_within(
                &agents.execution,
                "apply changes",
                ApplyDiff { entity: body, pass },
                |e, p| ExecutionMsg::ApplyDiff(Box::new(e), p),
                ENTITY_TIMEOUT,
            );
            answer(asked.await)
        }
    };
    // Each entity is analysed (when asked, or when nothing is pending) right before its writes,
    // after its parents': a child rejected earlier for a missing parent sees the parent arrive.
    for body in &requests {
        let mut applied =
            if goal.analyze { None } else { apply(body.clone(), Pass::Writes).await? };
        if applied.is_none() {
            report.analyses.push(analyze_one(body.clone()).await?);
            applied = apply(body.clone(), Pass::Writes).await?;
        }
        report.applied.push((body.spec.target.clone(), applied.unwrap_or_default()));
    }
    let deletes = requests.iter().rev().map(|body| (body, Pass::Deletes));
    let retries = requests.iter().map(|body| (body, Pass::Retries));
    for (body, pass) in deletes.chain(retries) {
        if let Some(done) = apply(body.clone(), pass).await? {
            if let Some((_, a)) = report.applied.iter_mut().find(|(t, _)| *t == body.spec.target) {
                a.add(&done);
            }
        }
    }
    let total = report.total();
    ctx.decision(
        ME,
        format!(
            "applied the changes of {} entities: {} inserted, {} updated, {} deleted, {} \
                conflicts, {} held, {} rejected",
            report.applied.len(),
            total.inserted,
            total.updated,
            total.deleted,
            total.conflicted,
            total.held,
            total.rejected
        ),
        "inserts and updates parents first, deletes children first; each batch in one transaction \
            with its outcomes",
        &report,
    );
    Ok(report)
}

async fn validate_entity(
    courier: &Courier,
    agents: &Agents,
    body: MigrateEntity,
) -> Result<EntityValidation, AgentError> {
    let asked = courier.ask_within(
        &agents.validation,
        "validate",
        body,
        |e, p| ValidationMsg::Validate(Box::new(e), p),
        ENTITY_TIMEOUT,
    );
    answer(asked.await)
}

#[cfg(test)]
mod tests;
