//! The orchestrator without I/O: a catalog that never answers, on tokio's paused clock, shows
//! that a run never hangs silently.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ractor::Actor;
use runtime::audit_writer::{Audit, AuditWriter, AuditWriterArgs};
use runtime::context::RunContext;
use runtime::domain::Scan;
use runtime::domain::SchemaReport;
use runtime::envelope::Courier;
use runtime::events::EventBus;
use runtime::ports::{Catalog, Rows, ToolError};
use runtime::redact::Redactor;
use runtime::supervise::{RestartPolicy, Slot};
use runtime::{AgentName, RunId};

use super::{Orchestrator, OrchestratorArgs, OrchestratorMsg, PlanGoal, Tools, PHASE_STEPS};

/// A catalog whose database never answers.
struct Silent;

#[async_trait]
impl Catalog for Silent {
    async fn introspect(&self, _: bool) -> Result<SchemaReport, ToolError> {
        std::future::pending().await
    }
}

#[async_trait]
impl Rows for Silent {
    async fn scan(
        &self,
        _: &Scan,
        _: &mut (dyn for<'r> FnMut(&'r [Option<&'r str>]) + Send),
    ) -> Result<u64, ToolError> {
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_that_is_never_answered_fails_with_a_clear_error() {
    let run_id = RunId::new();
    let sink = Arc::new(crate::fake::MemAudit::default());
    let args = AuditWriterArgs {
        run_id,
        sink: sink.clone(),
        redactor: Redactor::default(),
        flush_every: Duration::from_millis(100),
        batch: 64,
    };
    let (writer, _) = Actor::spawn(None, AuditWriter, args).await.unwrap();
    let audit = Audit::new(writer);
    let ctx = Arc::new(RunContext::new(
        run_id,
        audit.clone(),
        EventBus::default(),
        Duration::from_secs(30),
    ));
    let tools = Tools {
        source: Arc::new(Silent),
        target: Some(Arc::new(Silent)),
        source_rows: Arc::new(Silent),
        target_writer: None,
        llm: None,
        code: None,
    };
    let (orchestrator, _) = Actor::spawn(
        None,
        Orchestrator,
        OrchestratorArgs { ctx: ctx.clone(), tools, policy: RestartPolicy::default() },
    )
    .await
    .unwrap();

    let operator = Courier::new(ctx.clone(), AgentName::Operator);
    let slot = Slot::fixed(AgentName::Orchestrator, orchestrator.clone());
    let goal = PlanGoal {
        goal: "migrate everything".into(),
        only: false,
        mapping: Default::default(),
        mapping_origin: "inferred".into(),
        batch_size: None,
    };
    let started = tokio::time::Instant::now();
    let answer = operator
        .ask_within(&slot, "plan", goal, OrchestratorMsg::Plan, ctx.request_timeout * PHASE_STEPS)
        .await;
    let err = answer.expect("the orchestrator answers").expect_err("no plan without a schema");
    assert_eq!(err.message, "the schema analysis agent did not answer `analyze` within 30s");
    assert_eq!(started.elapsed(), Duration::from_secs(30));

    orchestrator.stop_and_wait(None, None).await.unwrap();
    audit.close().await;
    let trail = sink.0.lock().unwrap();
    assert!(
        trail.iter().any(|e| e.kind == "error" && e.summary == err.message),
        "the timeout is in the trail"
    );
}
