//! One run's lifecycle: connect, open the control schema, record the run, start the audit
//! writer and the orchestrator (which starts its team), and at the end record the outcome and
//! write out every audit event before returning.

use std::sync::Arc;
use std::time::Duration;

use agents::execution::EntityResult;
use agents::orchestrator::{
    DiffGoal, DiffReport, ExecuteRequest, Orchestrator, OrchestratorArgs, OrchestratorMsg,
    PlanGoal, PlanOutcome, Tools, ENTITY_TIMEOUT, PHASE_STEPS,
};
use agents::schema_analysis::Profile;
use ractor::{Actor, ActorRef};
use runtime::audit::{AuditRecord, EventKind};
use runtime::audit_writer::{Audit, AuditWriter, AuditWriterArgs};
use runtime::config::Config;
use runtime::context::RunContext;
use runtime::domain::SchemaReport;
use runtime::envelope::{AgentError, Courier};
use runtime::events::{EventBus, RunEvent};
use runtime::mapping::MappingSet;
use runtime::redact::Redactor;
use runtime::supervise::{RestartPolicy, Slot};
use runtime::{AgentName, RunId};
use serde_json::json;
use tools::catalog::PgCatalog;
use tools::code::SandboxRunner;
use tools::control::ControlStore;
use tools::pg::Pool as PgPool;
use tools::rows::PgRows;
use tools::target::PgTarget;

use crate::exit::Exit;

/// Open connections to the configured databases.
pub struct Connections {
    pub source: Option<PgPool>,
    pub target: PgPool,
    pub config: Config,
    /// The Docker sandbox, connected on first use.
    pub sandbox: Arc<SandboxRunner>,
}

impl Connections {
    /// Connects to the target (always needed: it holds the control schema) and, when
    /// `need_source`, to the source. A missing or unreachable database is a configuration error.
    pub async fn open(config: &Config, need_source: bool) -> Result<Connections, Exit> {
        let target_url = config.target().map_err(Exit::config)?;
        let source = if need_source {
            let url = config.source().map_err(Exit::config)?;
            Some(tools::pg::connect(url, 8).await.map_err(Exit::config)?)
        } else {
            None
        };
        // Up to 8 entities at once, each writing a batch and, at the end of its load, putting
        // its constraints back beside its baseline's two statements.
        let target = tools::pg::connect(target_url, 12).await.map_err(Exit::config)?;
        let sandbox = Arc::new(SandboxRunner::from_env().map_err(Exit::config)?);
        Ok(Connections { source, target, config: config.clone(), sandbox })
    }

    /// The real tools over these connections.
    pub fn tools(&self) -> Result<Tools, Exit> {
        let source = self
            .source
            .clone()
            .ok_or_else(|| Exit::config("this command needs the source database"))?;
        let source_label = self.config.source().map_err(Exit::config)?.location();
        let target_label = self.config.target().map_err(Exit::config)?.location();
        Ok(Tools {
            source: Arc::new(PgCatalog::new(source.clone(), source_label)),
            target: Some(Arc::new(PgCatalog::new(self.target.clone(), target_label))),
            source_rows: Arc::new(PgRows::new(source)),
            target_writer: Some(Arc::new(PgTarget::new(
                self.target.clone(),
                self.config.max_retry_attempts,
            ))),
            llm: llm(&self.config)?,
            code: Some(self.sandbox.clone()),
        })
    }
}

/// The configured language model, if any.
pub fn llm(config: &Config) -> Result<Option<Arc<dyn runtime::ports::Llm>>, Exit> {
    let c = &config.llm;
    let Some(mut settings) = tools::llm::LlmSettings::resolve(
        c.api_key.clone(),
        c.base_url.clone(),
        c.model.clone(),
        c.record.clone(),
        c.replay.clone(),
    ) else {
        return Ok(None);
    };
    settings.timeout = c.timeout;
    settings.max_tokens_total = c.max_tokens_total;
    settings.price = c.price;
    let client = tools::llm::OpenAiLlm::new(settings).map_err(Exit::config)?;
    Ok(Some(Arc::new(client)))
}

pub struct SessionOptions {
    pub policy: RestartPolicy,
    pub request_timeout: Duration,
    /// Carry on this run (an id or a unique prefix) instead of starting a new one.
    pub resume: Option<String>,
}

impl SessionOptions {
    pub fn from_config(config: &Config) -> SessionOptions {
        SessionOptions {
            policy: RestartPolicy::default(),
            request_timeout: config.request_timeout,
            resume: None,
        }
    }
}

/// Whether a command writes to the target's tables, and so holds its writer lock.
fn writes_target(command: &str) -> bool {
    matches!(command, "run" | "rollback" | "diff migrate" | "sync" | "conflict resolve" | "demo")
}

/// A run in progress.
/// How to carry out a plan.
#[derive(Clone, Copy, Debug)]
pub struct Execution {
    /// Entities migrating at once.
    pub jobs: usize,
    pub suspend_constraints: bool,
    /// Validate each entity once loaded.
    pub validate: bool,
}

impl Default for Execution {
    fn default() -> Self {
        Execution {
            jobs: usize::from(crate::cli::default_jobs()),
            suspend_constraints: true,
            validate: true,
        }
    }
}

pub struct Session {
    pub run_id: RunId,
    pub store: ControlStore,
    /// The run's hold on the target, let go when the session ends (or its process dies).
    _presence: tools::control::Presence,
    pub ctx: Arc<RunContext>,
    audit: Audit,
    orchestrator: ActorRef<OrchestratorMsg>,
    operator: Courier,
    to_orchestrator: Slot<OrchestratorMsg>,
    sandbox: Arc<SandboxRunner>,
}

impl Session {
    pub async fn start(
        conns: &Connections,
        command: &str,
        goal: Option<&str>,
        tools: Tools,
        options: SessionOptions,
    ) -> Result<Session, Exit> {
        let store = ControlStore::open(conns.target.clone()).await?;
        let resumed = match &options.resume {
            Some(prefix) => Some(store.find_run(Some(prefix)).await.map_err(Exit::config)?.run_id),
            None => None,
        };
        let run_id = resumed.unwrap_or_else(RunId::new);
        // Before anything is recorded or set aside: one run writes to a target at a time.
        let presence =
            store.attend(run_id, command, writes_target(command)).await.map_err(|e| match e {
                tools::control::Attend::Held(who) => Exit::config(who),
                tools::control::Attend::Db(e) => Exit::failed(e),
            })?;
        match resumed {
            // The same run id: its checkpoints say where each entity stands, and its audit
            // chain goes on from its last event.
            Some(id) => store.resume_run(id).await.map_err(Exit::config)?,
            None => store.begin_run(run_id, command, goal).await?,
        }
        let (writer, _) = Actor::spawn(
            Some(format!("audit-{run_id}")),
            AuditWriter,
            AuditWriterArgs {
                run_id,
                sink: Arc::new(store.clone()),
                redactor: Redactor::new(conns.config.secrets()),
                flush_every: Duration::from_millis(200),
                batch: 512,
            },
        )
        .await
        .map_err(|e| Exit::failed(format!("could not start the audit writer: {e}")))?;
        let audit = Audit::new(writer);
        let ctx = Arc::new(RunContext::new(
            run_id,
            audit.clone(),
            EventBus::default(),
            options.request_timeout,
        ));
        audit.record(AuditRecord::new(
            AgentName::Operator,
            EventKind::Run,
            format!(
                "run {}: agentctl {command}{}",
                if options.resume.is_some() { "resumed" } else { "started" },
                goal.map(|g| format!(" \"{g}\"")).unwrap_or_default()
            ),
            json!({"command": command, "goal": goal, "source": conns.config.source.as_ref().map(ToString::to_string),
                   "target": conns.config.target.as_ref().map(ToString::to_string), "agentctl": env!("CARGO_PKG_VERSION")}),
        ));
        ctx.events.publish(RunEvent::Started { run_id, goal: goal.unwrap_or_default().to_owned() });
        let (orchestrator, _) = Actor::spawn(
            Some(format!("orchestrator-{run_id}")),
            Orchestrator,
            OrchestratorArgs { ctx: ctx.clone(), tools, policy: options.policy },
        )
        .await
        .map_err(|e| Exit::failed(format!("could not start the orchestrator: {e}")))?;
        Ok(Session {
            run_id,
            store,
            _presence: presence,
            operator: Courier::new(ctx.clone(), AgentName::Operator),
            to_orchestrator: Slot::fixed(AgentName::Orchestrator, orchestrator.clone()),
            ctx,
            audit,
            orchestrator,
            sandbox: conns.sandbox.clone(),
        })
    }

    fn phase_timeout(&self) -> Duration {
        self.ctx.request_timeout * PHASE_STEPS
    }

    pub async fn plan(&self, goal: PlanGoal) -> Result<PlanOutcome, AgentError> {
        self.operator
            .ask_within(
                &self.to_orchestrator,
                "plan",
                goal,
                OrchestratorMsg::Plan,
                self.phase_timeout(),
            )
            .await
            .map_err(|e| AgentError::new(AgentName::Orchestrator, e.to_string()))?
    }

    /// Carries out an approved plan.
    pub async fn execute(
        &self,
        outcome: &PlanOutcome,
        how: Execution,
    ) -> Result<Vec<EntityResult>, AgentError> {
        let request = ExecuteRequest {
            plan: outcome.plan.clone(),
            mappings: outcome.mappings.clone(),
            target: outcome.target.clone(),
            jobs: how.jobs,
            suspend_constraints: how.suspend_constraints,
            validate: how.validate,
        };
        let bound = ENTITY_TIMEOUT * (outcome.plan.entities().count() as u32).max(1);
        self.operator
            .ask_within(
                &self.to_orchestrator,
                "execute",
                request,
                |e, p| OrchestratorMsg::Execute(Box::new(e), p),
                bound,
            )
            .await
            .map_err(|e| AgentError::new(AgentName::Orchestrator, e.to_string()))?
    }

    pub async fn validate(
        &self,
        goal: PlanGoal,
    ) -> Result<Vec<runtime::domain::EntityValidation>, AgentError> {
        let bound = ENTITY_TIMEOUT;
        self.operator
            .ask_within(&self.to_orchestrator, "validate", goal, OrchestratorMsg::Validate, bound)
            .await
            .map_err(|e| AgentError::new(AgentName::Orchestrator, e.to_string()))?
    }

    pub async fn rollback(
        &self,
        goal: PlanGoal,
    ) -> Result<Vec<runtime::domain::RolledBack>, AgentError> {
        self.operator
            .ask_within(
                &self.to_orchestrator,
                "roll back",
                goal,
                OrchestratorMsg::Rollback,
                ENTITY_TIMEOUT,
            )
            .await
            .map_err(|e| AgentError::new(AgentName::Orchestrator, e.to_string()))?
    }

    /// Analyses (and applies) what changed in the source since the last sync.
    pub async fn diff(&self, goal: DiffGoal) -> Result<DiffReport, AgentError> {
        self.operator
            .ask_within(&self.to_orchestrator, "diff", goal, OrchestratorMsg::Diff, ENTITY_TIMEOUT)
            .await
            .map_err(|e| AgentError::new(AgentName::Orchestrator, e.to_string()))?
    }

    pub async fn map(&self, goal: PlanGoal) -> Result<MappingSet, AgentError> {
        self.operator
            .ask_within(
                &self.to_orchestrator,
                "map",
                goal,
                OrchestratorMsg::Map,
                self.phase_timeout(),
            )
            .await
            .map_err(|e| AgentError::new(AgentName::Orchestrator, e.to_string()))?
    }

    pub async fn analyze(
        &self,
        side: runtime::config::DbRole,
        exact_counts: bool,
    ) -> Result<SchemaReport, AgentError> {
        let request = agents::schema_analysis::AnalyzeRequest { side, exact_counts };
        self.operator
            .ask_within(
                &self.to_orchestrator,
                "analyze",
                request,
                OrchestratorMsg::Analyze,
                self.phase_timeout(),
            )
            .await
            .map_err(|e| AgentError::new(AgentName::Orchestrator, e.to_string()))?
    }

    pub async fn profile(
        &self,
        goal: agents::orchestrator::ProfileGoal,
    ) -> Result<(Profile, SchemaReport), AgentError> {
        self.operator
            .ask_within(
                &self.to_orchestrator,
                "profile",
                goal,
                OrchestratorMsg::Profile,
                self.phase_timeout(),
            )
            .await
            .map_err(|e| AgentError::new(AgentName::Orchestrator, e.to_string()))?
    }

    /// Writes out every audit event recorded so far (before reading the trail back).
    pub async fn flush_audit(&self) -> Result<(), Exit> {
        self.audit.flush().await.map_err(|e| Exit::failed(format!("writing the audit trail: {e}")))
    }

    /// Records a decision the operator made (an approval, a refusal).
    pub fn operator_decision(
        &self,
        summary: impl Into<String>,
        rationale: impl Into<String>,
        detail: serde_json::Value,
    ) {
        self.ctx.decision(AgentName::Operator, summary, rationale, detail);
    }

    /// Stops the agents, records the outcome and writes out the whole trail.
    pub async fn finish(self, outcome: &str, detail: Option<&str>) -> Result<(), Exit> {
        let _ = self.orchestrator.stop_and_wait(None, Some(Duration::from_secs(15))).await;
        self.sandbox.shutdown().await;
        self.audit.record(AuditRecord::new(
            AgentName::Operator,
            EventKind::Run,
            format!("run ended: {outcome}{}", detail.map(|d| format!(": {d}")).unwrap_or_default()),
            json!({"outcome": outcome, "detail": detail}),
        ));
        self.ctx
            .events
            .publish(RunEvent::Finished { run_id: self.run_id, outcome: outcome.to_owned() });
        let flushed = self.audit.flush().await;
        self.audit.close().await;
        self.store.finish_run(self.run_id, outcome, detail).await?;
        flushed.map_err(|e| Exit::failed(format!("run {}: {e}", self.run_id)))
    }
}
