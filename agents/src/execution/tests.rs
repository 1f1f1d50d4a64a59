use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ractor::Actor;
use runtime::audit::AuditEvent;
use runtime::domain::Scan;
use runtime::envelope::{AgentError, Courier};
use runtime::error::{ErrorKind, ToolError};
use runtime::ports::Rows;
use runtime::supervise::{RestartPolicy, Slot};
use runtime::AgentName;

use runtime::domain::{Inclusion, PlannedEntity, TableName};
use runtime::mapping::{MappingFile, MappingSet};
use runtime::ports::Target;

use super::{migrate, ExecutionAgent, ExecutionArgs, ExecutionMsg};
use crate::data_mapping::build;
use crate::fake::{context, legacy, modern, name, MemRows, MemTarget};
use crate::pipeline::MigrateEntity;

fn source() -> MemRows {
    MemRows::default()
        .with(
            "dispatch_role",
            &["id", "name", "kind"],
            &[
                &[Some("1"), Some("Field"), Some("field")],
                // No name: the target's NOT NULL refuses it.
                &[Some("2"), None, Some("office")],
                &[Some("3"), Some("Office"), Some("OFFICE")],
            ],
        )
        .with(
            "dispatch_technician",
            &["id", "name", "role_id", "email"],
            &[
                &[Some("10"), Some("Ada"), Some("1"), Some("ada@example.org")],
                // Its role is refused: the target holds no row to point at.
                &[Some("11"), Some("Bob"), Some("2"), None],
                // No role 9 at all.
                &[Some("12"), Some("Cy"), Some("9"), None],
                &[Some("13"), Some("Di"), Some("3"), Some("di@example.org")],
                &[Some("14"), Some("Ed"), Some("3"), None],
            ],
        )
}

/// The entity of a source table as the plan hands it to the execution agent, two rows a batch.
fn entity(set: &MappingSet, table: &str, parents: &[(&str, &str)]) -> MigrateEntity {
    let spec = set.spec(&name(table)).expect("mapped").clone();
    MigrateEntity {
        entity: PlannedEntity {
            table: name(table),
            target: Some(spec.target.clone()),
            inclusion: Inclusion::Requested,
            estimated_rows: 0,
            bytes: 0,
            batch_size: 2,
            forecast: None,
            deferred_foreign_keys: vec![],
            later_parents: vec![],
            scripts: vec![],
        },
        spec,
        parents: parents.iter().map(|(s, t)| (name(s), name(t))).collect::<Vec<(TableName, _)>>(),
        keys: set.keys,
        target: modern(),
        constraints_suspended: false,
    }
}

#[tokio::test]
async fn every_row_is_migrated_or_rejected_with_its_reason_and_the_validation_proves_it() {
    let file = MappingFile::parse(
        "[entities.dispatch_role.columns]\nkind = { from = \"kind\", transforms = [\"lower\"] }\n",
        "memory.toml",
    )
    .unwrap();
    let set = build(&legacy(), &modern(), &file).unwrap();
    let (ctx, rows) = (context().await.0, Arc::new(source()));
    let memory = Arc::new(MemTarget::default());
    let target: Arc<dyn Target> = memory.clone();
    let roles = entity(&set, "dispatch_role", &[]);
    let technicians = entity(&set, "dispatch_technician", &[("dispatch_role", "roles")]);

    let done = migrate(&ctx, rows.clone(), target.clone(), &roles).await.unwrap();
    assert_eq!((done.rows_read, done.migrated, done.rejected, done.target_rows), (3, 2, 1, 2));
    assert_eq!(done.rejected_by_rule.get("not_null"), Some(&1), "{:?}", done.rejected_by_rule);
    let done = migrate(&ctx, rows.clone(), target.clone(), &technicians).await.unwrap();
    assert_eq!((done.rows_read, done.migrated, done.rejected, done.target_rows), (5, 3, 2, 3));
    assert_eq!(done.batches, 3, "two rows a batch");
    let mut refused = memory.rejected(&name("dispatch_technician"));
    refused.sort();
    assert_eq!(refused, [("11".into(), "reference".into()), ("12".into(), "reference".into())]);
    assert_eq!(memory.entity_state(&name("dispatch_technician")).as_deref(), Some("done"));

    // Each technician points at the UUID its role got.
    let role_ids: Vec<(String, String)> =
        memory.rows(&name("roles")).into_iter().map(|r| (r.legacy, r.id)).collect();
    for t in memory.rows(&name("technicians")) {
        let role = t.values["role_id"].clone().expect("a role");
        assert!(role_ids.iter().any(|(_, id)| *id == role), "{t:?} points at {role_ids:?}");
    }

    // Carried on again, the same run writes nothing twice.
    let again = migrate(&ctx, rows.clone(), target.clone(), &technicians).await.unwrap();
    assert_eq!((again.migrated, again.rejected, again.target_rows), (3, 2, 3));

    for req in [&roles, &technicians] {
        let proof = crate::validation::validate(&ctx, rows.clone(), target.clone(), req).await;
        let proof = proof.unwrap();
        assert!(proof.passed, "{}", proof.detail);
        assert_eq!(proof.source_rows, proof.migrated + proof.rejected);
    }
    let proof = crate::validation::validate(&ctx, rows.clone(), target.clone(), &technicians);
    let links = proof.await.unwrap().links;
    assert_eq!(links.len(), 1, "{links:?}");
    assert_eq!((links[0].source, links[0].target), (3, 3));
}

#[tokio::test]
async fn a_row_changed_in_the_target_fails_the_validation_by_its_key() {
    let set = build(&legacy(), &modern(), &MappingFile::default()).unwrap();
    let (ctx, rows) = (context().await.0, Arc::new(source()));
    let memory = Arc::new(MemTarget::default());
    let target: Arc<dyn Target> = memory.clone();
    let mut roles = entity(&set, "dispatch_role", &[]);
    // The inferred mapping matches "OFFICE" to the enum's label by itself.
    let done = migrate(&ctx, rows.clone(), target.clone(), &roles).await.unwrap();
    assert_eq!((done.migrated, done.rejected), (2, 1));
    // The same rows proven against a mapping that writes names in capitals: they differ.
    roles.spec.columns.iter_mut().filter(|c| c.target == "name").for_each(|c| {
        c.transforms.push(runtime::mapping::Transform::Upper);
    });
    let proof = crate::validation::validate(&ctx, rows, target, &roles).await.unwrap();
    assert!(!proof.passed);
    assert_eq!(proof.rows_differing, 2, "{}", proof.detail);
    let keys: Vec<&str> = proof.differences.iter().map(|d| d.legacy_key.as_str()).collect();
    assert_eq!(keys, ["1", "3"]);
    assert_eq!(proof.differences[0].column, "name");
}

/// The source, behind a fault injector: the first `faults` reads fail as `fault` says; with
/// `hang`, every read after them waits forever, and the state says whether a read is waiting
/// (1) or was given up (2).
struct Faulty {
    inner: MemRows,
    faults: AtomicU32,
    fault: fn() -> ToolError,
    hang: Option<Arc<AtomicU8>>,
}

/// A waiting read: when dropped, it was given up.
struct Waiting(Arc<AtomicU8>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.store(2, Ordering::SeqCst);
    }
}

#[async_trait]
impl Rows for Faulty {
    async fn scan(
        &self,
        scan: &Scan,
        each: &mut (dyn for<'r> FnMut(&'r [Option<&'r str>]) + Send),
    ) -> Result<u64, ToolError> {
        if self
            .faults
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err((self.fault)());
        }
        if let Some(state) = &self.hang {
            state.store(1, Ordering::SeqCst);
            let _waiting = Waiting(state.clone());
            std::future::pending::<()>().await;
        }
        self.inner.scan(scan, each).await
    }
}

/// Asks an execution agent over `rows` and an empty target to migrate the roles; the answer,
/// the target and the run's trail so far.
async fn migrate_roles(
    rows: Faulty,
) -> (Result<super::EntityResult, AgentError>, Arc<MemTarget>, Vec<AuditEvent>) {
    let set = build(&legacy(), &modern(), &MappingFile::default()).unwrap();
    let (ctx, trail) = context().await;
    let memory = Arc::new(MemTarget::default());
    let args = ExecutionArgs {
        ctx: ctx.clone(),
        source_rows: Arc::new(rows),
        target: Some(memory.clone()),
        policy: RestartPolicy::default(),
    };
    let (agent, _) = Actor::spawn(None, ExecutionAgent, args).await.unwrap();
    let courier = Courier::new(ctx.clone(), AgentName::Orchestrator);
    let slot = Slot::fixed(AgentName::Execution, agent.clone());
    let roles = entity(&set, "dispatch_role", &[]);
    let asked = courier.ask(&slot, "migrate", roles, |e, p| ExecutionMsg::Migrate(Box::new(e), p));
    let answer = asked.await.expect("the agent answers");
    agent.stop_and_wait(None, None).await.unwrap();
    ctx.audit.flush().await.unwrap();
    let events = trail.0.lock().unwrap().clone();
    (answer, memory, events)
}

fn faulty(faults: u32, fault: fn() -> ToolError) -> Faulty {
    Faulty { inner: source(), faults: AtomicU32::new(faults), fault, hang: None }
}

fn restarts(events: &[AuditEvent]) -> Vec<&AuditEvent> {
    events
        .iter()
        .filter(|e| e.summary.contains("starting again from its last checkpoint"))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_fails_is_started_again_by_its_agent_from_the_checkpoint() {
    let lost = || ToolError::transient("the connection was reset");
    let (answer, memory, events) = migrate_roles(faulty(2, lost)).await;
    let done = answer.expect("the third attempt migrates the roles");
    assert_eq!((done.migrated, done.rejected, done.restarts), (2, 1, 2));
    assert_eq!(memory.rows(&name("roles")).len(), 2, "each row once");
    let restarts = restarts(&events);
    assert_eq!(restarts.len(), 2, "{restarts:#?}");
    assert!(restarts[0].summary.contains("in 2s (restart 1 of 3)"), "{}", restarts[0].summary);
    assert!(restarts[1].summary.contains("in 4s (restart 2 of 3)"), "{}", restarts[1].summary);
    assert!(restarts[0].detail.contains("the connection was reset"), "{}", restarts[0].detail);
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_keeps_failing_answers_with_its_error_after_three_restarts() {
    let lost = || ToolError::transient("the connection was reset");
    let (answer, _, events) = migrate_roles(faulty(u32::MAX, lost)).await;
    let err = answer.expect_err("no attempt gets through");
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(err.message.starts_with("migrating dispatch_role: the connection was reset"), "{err}");
    assert_eq!(restarts(&events).len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_failure_a_restart_cannot_mend_is_answered_at_once() {
    let refused = || ToolError::bad_input("the mapping names no such column");
    let (answer, _, events) = migrate_roles(faulty(1, refused)).await;
    assert_eq!(answer.expect_err("bad input").kind, ErrorKind::BadInput);
    assert!(restarts(&events).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn stopping_the_agent_ends_the_work_it_supervises() {
    let set = build(&legacy(), &modern(), &MappingFile::default()).unwrap();
    let (ctx, _) = context().await;
    let read = Arc::new(AtomicU8::new(0));
    let rows = Faulty { hang: Some(read.clone()), ..faulty(0, || ToolError::system("")) };
    let args = ExecutionArgs {
        ctx: ctx.clone(),
        source_rows: Arc::new(rows),
        target: Some(Arc::new(MemTarget::default())),
        policy: RestartPolicy::default(),
    };
    let (agent, _) = Actor::spawn(None, ExecutionAgent, args).await.unwrap();
    let courier = Courier::new(ctx.clone(), AgentName::Orchestrator);
    let slot = Slot::fixed(AgentName::Execution, agent.clone());
    let roles = entity(&set, "dispatch_role", &[]);
    let asked = tokio::spawn(async move {
        courier.ask(&slot, "migrate", roles, |e, p| ExecutionMsg::Migrate(Box::new(e), p)).await
    });
    while read.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let worker = agent.get_children().remove(0);
    agent.stop_and_wait(None, None).await.unwrap();
    assert_eq!(worker.get_status(), ractor::ActorStatus::Stopped, "the worker ended with it");
    let gave_up = tokio::time::timeout(Duration::from_secs(10), async {
        while read.load(Ordering::SeqCst) != 2 {
            tokio::task::yield_now().await;
        }
    });
    gave_up.await.expect("the read in flight was dropped");
    // Its request is left unanswered, for the courier to ask a restarted agent again.
    assert!(!asked.is_finished());
    asked.abort();
}
