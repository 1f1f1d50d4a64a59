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

/// The reference shape: a large table with no children beside a chain of small parents whose
/// last child is large. Each entity heads its own rows and its descendants', each once (a
/// child reached through two parents counts once).
#[test]
fn an_entity_heads_its_rows_and_every_entity_that_waits_for_it() {
    // 0 profiles; 1 system_messages (of 0); 2 doctors (of 0); 3 patients (of 2); 4 cases (of
    // 2 and 3); 5 tasks (of 4 and 0).
    let deps = vec![vec![], vec![0], vec![0], vec![2], vec![2, 3], vec![4, 0]];
    let rows = [2_400, 2_000_000, 600, 19_000, 7_800, 770_000];
    let heads = super::heads(&deps, &rows);
    assert_eq!(heads[5], 770_000);
    assert_eq!(heads[4], 777_800);
    assert_eq!(heads[2], 600 + 19_000 + 7_800 + 770_000, "cases once, through both parents");
    assert_eq!(heads[0], rows.iter().sum::<i64>());
    // Ready together after profiles: the large table first, then the head of the chain, not
    // the small tables the plan lists before it.
    assert!(heads[1] > heads[2] && heads[2] > rows[2]);
}
