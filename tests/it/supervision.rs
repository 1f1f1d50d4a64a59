//! An agent that panics is restarted and the run goes on; one that keeps panicking is given up
//! on and the run fails with the reason recorded.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use agentctl::session::{Connections, Session, SessionOptions};
use agents::orchestrator::PlanGoal;
use async_trait::async_trait;
use runtime::domain::SchemaReport;
use runtime::ports::{Catalog, ToolError};
use tools::control::EventFilter;

/// The real catalog, behind a fault injector that panics the first `panics` times it is read.
struct Crashing {
    inner: Arc<dyn Catalog>,
    panics: AtomicU32,
}

#[async_trait]
impl Catalog for Crashing {
    async fn introspect(&self, exact_counts: bool) -> Result<SchemaReport, ToolError> {
        if self.panics.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            panic!("injected fault: the catalog read crashed");
        }
        self.inner.introspect(exact_counts).await
    }
}

fn goal() -> PlanGoal {
    PlanGoal {
        goal: "migrate tracks".into(),
        only: false,
        mapping: Default::default(),
        mapping_origin: "inferred".into(),
        batch_size: None,
    }
}

async fn session_with_crashes(panics: u32) -> Session {
    let pg = tests::shared();
    let (source, target) = pg.chinook_pair();
    let config = tests::config(&source, &target);
    let conns = Connections::open(&config, true).await.expect("the test databases are reachable");
    let mut tools = conns.tools().unwrap();
    tools.source = Arc::new(Crashing { inner: tools.source, panics: AtomicU32::new(panics) });
    Session::start(&conns, "plan", Some("migrate tracks"), tools, SessionOptions::from_config(&config)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_agent_is_restarted_and_the_run_continues() {
    let session = session_with_crashes(2).await;
    let outcome = session.plan(goal()).await.expect("the plan survives two crashes");
    let order: Vec<String> = outcome.plan.entities().map(|e| e.table.to_string()).collect();
    assert_eq!(order.last().map(String::as_str), Some("track"), "{order:?}");
    let (store, run_id) = (session.store.clone(), session.run_id);
    session.finish("planned", None).await.unwrap();

    let errors = store.events(run_id, &EventFilter { agent: Some("orchestrator".into()), kind: Some("error".into()) }).await.unwrap();
    let restarts: Vec<_> = errors.iter().filter(|e| e.summary.contains("restarting it")).collect();
    assert_eq!(restarts.len(), 2, "{errors:#?}");
    assert!(
        restarts[0].summary.contains("schema analysis agent failed") && restarts[0].summary.contains("restart 1 of 3"),
        "{restarts:#?}"
    );
    assert!(restarts[1].summary.contains("restart 2 of 3"), "{restarts:#?}");
    assert!(restarts[0].detail.contains("injected fault"), "{}", restarts[0].detail);
    // The request that was in flight was asked again of the restarted agent.
    assert_eq!(errors.iter().filter(|e| e.summary.contains("stopped before answering `analyze`")).count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_that_keeps_crashing_fails_the_run_with_the_reason() {
    let session = session_with_crashes(u32::MAX).await;
    let err = session.plan(goal()).await.expect_err("no plan without an analysis");
    assert!(err.message.contains("schema analysis agent is down"), "{err}");
    assert!(err.message.contains("more than 3 restarts"), "{err}");
    let (store, run_id) = (session.store.clone(), session.run_id);
    session.finish("failed", Some(&err.message)).await.unwrap();

    let run = store.find_run(Some(&run_id.to_string())).await.unwrap();
    assert_eq!(run.outcome, "failed");
    assert!(run.outcome_detail.unwrap().contains("schema analysis agent is down"));
    let errors = store.events(run_id, &EventFilter { agent: Some("orchestrator".into()), kind: Some("error".into()) }).await.unwrap();
    assert_eq!(errors.iter().filter(|e| e.summary.contains("restarting it")).count(), 3, "{errors:#?}");
    assert_eq!(errors.iter().filter(|e| e.summary.contains("is down")).count(), 1, "{errors:#?}");
}
