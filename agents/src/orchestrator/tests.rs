//! The orchestrator without I/O: a catalog that never answers, on tokio's paused clock, shows
//! that a run never hangs silently.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ractor::Actor;
use runtime::domain::Scan;
use runtime::domain::SchemaReport;
use runtime::envelope::Courier;
use runtime::ports::{Catalog, Rows, ToolError};
use runtime::supervise::{RestartPolicy, Slot};
use runtime::AgentName;

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
    let (ctx, sink) = crate::fake::context().await;
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
        unattended: false,
    };
    let started = tokio::time::Instant::now();
    let answer = operator
        .ask_within(&slot, "plan", goal, OrchestratorMsg::Plan, ctx.request_timeout * PHASE_STEPS)
        .await;
    let err = answer.expect("the orchestrator answers").expect_err("no plan without a schema");
    assert_eq!(err.message, "the schema analysis agent did not answer `analyze` within 30s");
    assert_eq!(started.elapsed(), Duration::from_secs(30));

    orchestrator.stop_and_wait(None, None).await.unwrap();
    ctx.audit.clone().close().await;
    let trail = sink.0.lock().unwrap();
    assert!(
        trail.iter().any(|e| e.kind == "error" && e.summary == err.message),
        "the timeout is in the trail"
    );
}
