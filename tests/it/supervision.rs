//! An agent that panics is restarted and the run goes on; one that keeps panicking is given up
//! on and the run fails with the reason recorded; a migration worker that panics starts again
//! from its checkpoint; a differential apply cut off mid-way is carried on without a row twice.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use agentctl::session::{Connections, Execution, Session, SessionOptions};
use agents::orchestrator::{DiffGoal, PlanGoal};
use async_trait::async_trait;
use runtime::domain::{
    Batch, Checkpoint, DiffApplied, DiffBatch, Diffed, Differential, EntityDiff, Expected,
    RejectedRow, Written,
};
use runtime::domain::{SchemaReport, TableName};
use runtime::ports::{Catalog, DiffStore, Loader, Roles, Target, ToolError};
use runtime::RunId;
use tools::control::EventFilter;

/// The real catalog, behind a fault injector that panics the first `panics` times it is read.
struct Crashing {
    inner: Arc<dyn Catalog>,
    panics: AtomicU32,
}

#[async_trait]
impl Catalog for Crashing {
    async fn introspect(&self, exact_counts: bool) -> Result<SchemaReport, ToolError> {
        if self
            .panics
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
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
        unattended: false,
    }
}

async fn session_with_crashes(panics: u32) -> Session {
    let pg = tests::shared();
    let (source, target) = pg.chinook_pair();
    let config = tests::config(&source, &target);
    let conns = Connections::open(&config, true).await.expect("the test databases are reachable");
    let mut tools = conns.tools().unwrap();
    tools.source = Arc::new(Crashing { inner: tools.source, panics: AtomicU32::new(panics) });
    Session::start(
        &conns,
        "plan",
        Some("migrate tracks"),
        tools,
        SessionOptions::from_config(&config),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_agent_is_restarted_and_the_run_continues() {
    let session = session_with_crashes(2).await;
    let outcome = session.plan(goal()).await.expect("the plan survives two crashes");
    let order: Vec<String> = outcome.plan.entities().map(|e| e.table.to_string()).collect();
    assert_eq!(order.last().map(String::as_str), Some("track"), "{order:?}");
    let (store, run_id) = (session.store.clone(), session.run_id);
    session.finish("planned", None).await.unwrap();

    let errors = store
        .events(
            run_id,
            &EventFilter { agent: Some("orchestrator".into()), kind: Some("error".into()) },
        )
        .await
        .unwrap();
    let restarts: Vec<_> = errors.iter().filter(|e| e.summary.contains("restarting it")).collect();
    assert_eq!(restarts.len(), 2, "{errors:#?}");
    assert!(
        restarts[0].summary.contains("schema analysis agent failed")
            && restarts[0].summary.contains("restart 1 of 3"),
        "{restarts:#?}"
    );
    assert!(restarts[1].summary.contains("restart 2 of 3"), "{restarts:#?}");
    assert!(restarts[0].detail.contains("injected fault"), "{}", restarts[0].detail);
    // The request that was in flight was asked again of the restarted agent.
    assert_eq!(
        errors.iter().filter(|e| e.summary.contains("stopped before answering `analyze`")).count(),
        2
    );
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
    let errors = store
        .events(
            run_id,
            &EventFilter { agent: Some("orchestrator".into()), kind: Some("error".into()) },
        )
        .await
        .unwrap();
    assert_eq!(
        errors.iter().filter(|e| e.summary.contains("restarting it")).count(),
        3,
        "{errors:#?}"
    );
    assert_eq!(errors.iter().filter(|e| e.summary.contains("is down")).count(), 1, "{errors:#?}");
}

/// The real target's loading, behind a fault injector whose `write` panics once, mid-entity.
struct CrashingLoader {
    inner: Arc<dyn Target>,
    /// Writes to let through before the one that panics.
    until_panic: AtomicU32,
}

#[async_trait]
impl Loader for CrashingLoader {
    async fn checkpoint(
        &self,
        run: RunId,
        source: &TableName,
    ) -> Result<Option<Checkpoint>, ToolError> {
        self.inner.checkpoint(run, source).await
    }
    async fn write(&self, batch: &Batch) -> Result<Written, ToolError> {
        if self.until_panic.fetch_sub(1, Ordering::SeqCst) == 0 {
            panic!("injected fault: the batch writer crashed");
        }
        self.inner.write(batch).await
    }
    async fn fill_deferred(
        &self,
        run: RunId,
        source: &TableName,
        target: &TableName,
        column: &str,
    ) -> Result<(i64, Vec<RejectedRow>), ToolError> {
        self.inner.fill_deferred(run, source, target, column).await
    }
    async fn drop_dangling(
        &self,
        run: RunId,
        tables: (&TableName, &TableName),
        column: &str,
        parents: &[TableName],
    ) -> Result<Vec<RejectedRow>, ToolError> {
        self.inner.drop_dangling(run, tables, column, parents).await
    }
    async fn record_source_rows(
        &self,
        run: RunId,
        source: &TableName,
        rows: &[(String, serde_json::Value)],
    ) -> Result<(), ToolError> {
        self.inner.record_source_rows(run, source, rows).await
    }
    async fn kept_rows(
        &self,
        target: &TableName,
        ours: Option<(uuid::Uuid, uuid::Uuid)>,
    ) -> Result<Vec<(String, String)>, ToolError> {
        self.inner.kept_rows(target, ours).await
    }
    async fn table_rows(&self, target: &TableName, live: bool) -> Result<i64, ToolError> {
        self.inner.table_rows(target, live).await
    }
    async fn restart_sequences(&self, target: &TableName) -> Result<Vec<(String, i64)>, ToolError> {
        self.inner.restart_sequences(target).await
    }
    async fn preflight(
        &self,
        tables: &[TableName],
        set_aside: bool,
    ) -> Result<Vec<String>, ToolError> {
        self.inner.preflight(tables, set_aside).await
    }
    async fn set_state(
        &self,
        run: RunId,
        source: &TableName,
        target: &TableName,
        state: &str,
        source_rows: Option<i64>,
        detail: Option<&str>,
    ) -> Result<(), ToolError> {
        self.inner.set_state(run, source, target, state, source_rows, detail).await
    }
}

/// The real target's sync store, behind a fault injector whose `apply_diff` fails as a lost
/// connection would.
struct CrashingSync {
    inner: Arc<dyn Target>,
    /// Differential batches to let through before the one that fails.
    until_apply_fails: AtomicU32,
}

#[async_trait]
impl DiffStore for CrashingSync {
    async fn record_baseline(
        &self,
        target: &TableName,
        legacy_type: &str,
        columns: &[(String, String)],
    ) -> Result<i64, ToolError> {
        self.inner.record_baseline(target, legacy_type, columns).await
    }
    async fn hashes_rows(
        &self,
        target: &TableName,
        columns: &[(String, String)],
    ) -> Result<bool, ToolError> {
        self.inner.hashes_rows(target, columns).await
    }
    async fn differ(
        &self,
        target: &TableName,
        page: &Expected,
        hashed: &[usize],
        soft: bool,
    ) -> Result<Vec<Diffed>, ToolError> {
        self.inner.differ(target, page, hashed, soft).await
    }
    async fn live_keys(
        &self,
        target: &TableName,
        ours: Option<(uuid::Uuid, uuid::Uuid)>,
        soft: bool,
    ) -> Result<Vec<(String, uuid::Uuid)>, ToolError> {
        self.inner.live_keys(target, ours, soft).await
    }
    async fn live_keys_between(
        &self,
        target: &TableName,
        after: Option<&str>,
        upto: Option<&str>,
        present: &[String],
        soft: bool,
    ) -> Result<Vec<(String, uuid::Uuid)>, ToolError> {
        self.inner.live_keys_between(target, after, upto, present, soft).await
    }
    async fn save_analysis(
        &self,
        analysis: &EntityDiff,
        rows: &[Differential],
    ) -> Result<(), ToolError> {
        self.inner.save_analysis(analysis, rows).await
    }
    async fn pending_analysis(
        &self,
        source: &TableName,
        target: &TableName,
    ) -> Result<Option<(EntityDiff, Vec<Differential>)>, ToolError> {
        self.inner.pending_analysis(source, target).await
    }
    async fn apply_diff(&self, batch: &DiffBatch) -> Result<DiffApplied, ToolError> {
        if self
            .until_apply_fails
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            return Err(ToolError::transient(
                "injected fault: the target went away while applying a batch",
            ));
        }
        self.inner.apply_diff(batch).await
    }
    async fn sync_mark(&self, source: &TableName) -> Result<runtime::domain::SyncMark, ToolError> {
        self.inner.sync_mark(source).await
    }
    async fn close_analysis(
        &self,
        analysis: RunId,
        source: &TableName,
        run: RunId,
    ) -> Result<(), ToolError> {
        self.inner.close_analysis(analysis, source, run).await
    }
    async fn reopen_refused(
        &self,
        analysis: RunId,
        source: &TableName,
        run: RunId,
    ) -> Result<u64, ToolError> {
        self.inner.reopen_refused(analysis, source, run).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_migration_worker_starts_again_from_its_checkpoint() {
    let pg = tests::shared();
    let (source, target) = pg.chinook_pair();
    let config = tests::config(&source, &target);
    let conns = Connections::open(&config, true).await.expect("the test databases are reachable");
    let mut tools = conns.tools().unwrap();
    let writer = tools.target_writer.take().expect("a target");
    let load = Arc::new(CrashingLoader { inner: writer.clone(), until_panic: AtomicU32::new(3) });
    tools.target_writer = Some(Arc::new(Roles { load, ..Roles::of(writer) }));
    let session = Session::start(
        &conns,
        "run",
        Some("migrate everything"),
        tools,
        SessionOptions::from_config(&config),
    )
    .await
    .unwrap();
    let planned =
        session.plan(PlanGoal { goal: "migrate everything".into(), ..goal() }).await.unwrap();
    let results = session
        .execute(&planned, Execution { jobs: 1, ..Default::default() })
        .await
        .expect("the run survives the crash");
    let (store, run_id) = (session.store.clone(), session.run_id);
    session.finish("succeeded", None).await.unwrap();

    let (read, migrated): (i64, i64) =
        results.iter().fold((0, 0), |(r, m), e| (r + e.rows_read, m + e.migrated));
    assert_eq!((read, migrated), (15_607, 15_607), "every row once: none lost, none twice");
    assert!(results.iter().all(|r| r.validation.as_ref().is_some_and(|v| v.passed)));
    assert_eq!(results.iter().map(|r| r.restarts).sum::<u32>(), 1);
    let decisions = store
        .events(
            run_id,
            &EventFilter { agent: Some("execution".into()), kind: Some("decision".into()) },
        )
        .await
        .unwrap();
    let restart: Vec<_> = decisions
        .iter()
        .filter(|e| e.summary.contains("starting again from its last checkpoint"))
        .collect();
    assert_eq!(restart.len(), 1, "{decisions:#?}");
    assert!(
        restart[0].detail.contains("panicked") && restart[0].detail.contains("injected fault"),
        "{}",
        restart[0].detail
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_differential_apply_cut_off_mid_way_is_carried_on_without_a_row_twice() {
    let pg = tests::shared();
    let (source, target, _) = pg.reference_pair("0.005");
    let run = tests::agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "run",
        "--goal",
        "migrate everything",
        "--yes",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let db = |url: &str| url.rsplit('/').next().unwrap().to_owned();
    let (s, t) = (db(&source), db(&target));
    // More deletes than one batch applies (5,000).
    pg.psql(
        &s,
        "CREATE TABLE gone AS SELECT id FROM dispatch_system_message ORDER BY id LIMIT 6000",
    );
    pg.psql(&s, "DELETE FROM dispatch_system_message WHERE id IN (SELECT id FROM gone)");
    let ids = pg.psql(&s, "SELECT string_agg(id::text, ',') FROM gone");
    let present: i64 = pg
        .psql(&t, &format!("SELECT count(*) FROM system_messages WHERE legacy_id IN ({ids})"))
        .parse()
        .unwrap();
    assert!(present > 5_000, "{present}");

    let config = tests::config(&source, &target);
    let conns = Connections::open(&config, true).await.expect("the test databases are reachable");
    let (mapping, origin) =
        agentctl::plan_run::mapping_file(&agentctl::cli::MappingOpt { mapping: None }, &conns)
            .await
            .unwrap();
    let mut tools = conns.tools().unwrap();
    let writer = tools.target_writer.take().expect("a target");
    let sync =
        Arc::new(CrashingSync { inner: writer.clone(), until_apply_fails: AtomicU32::new(1) });
    tools.target_writer = Some(Arc::new(Roles { sync, ..Roles::of(writer) }));
    let session = Session::start(
        &conns,
        "diff migrate",
        Some("system messages"),
        tools,
        SessionOptions::from_config(&config),
    )
    .await
    .unwrap();
    let goal = PlanGoal {
        goal: "system messages".into(),
        only: true,
        mapping,
        mapping_origin: origin,
        batch_size: None,
        unattended: false,
    };
    let failed = session.diff(DiffGoal { goal, analyze: true, apply: true, full: false }).await;
    assert!(failed.as_ref().is_err_and(|e| e.to_string().contains("injected fault")), "{failed:?}");
    session.finish("failed", None).await.unwrap();
    // The first batch is in, whole, with its outcomes; the second is not.
    assert_eq!(
        pg.psql(&t, "SELECT count(*) FROM system_messages WHERE deleted_at IS NOT NULL"),
        "5000"
    );
    assert_eq!(
        pg.psql(
            &t,
            "SELECT count(*) FROM agentctl.data_differentials WHERE applied_at IS NOT NULL"
        ),
        "5000"
    );

    // The next `diff migrate` applies the rest of the same analysis, and nothing twice.
    let rest = tests::agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "diff",
        "migrate",
        "system messages",
        "--format",
        "json",
    ]);
    assert_eq!(rest.code, 0, "{rest:?}");
    let doc: serde_json::Value = serde_json::from_str(&rest.stdout).unwrap();
    assert_eq!(doc["total"]["deleted"].as_i64(), Some(present - 5_000), "{doc}");
    assert_eq!(
        doc["analyses"].as_array().map(Vec::len),
        Some(0),
        "the pending analysis is carried on, not a new one"
    );
    assert_eq!(
        pg.psql(&t, "SELECT count(*) FROM system_messages WHERE deleted_at IS NOT NULL"),
        present.to_string()
    );
    assert_eq!(
        pg.psql(
            &t,
            "SELECT count(*) || ' ' || count(DISTINCT applied_run) FROM \
            agentctl.data_differentials WHERE outcome = 'applied'"
        ),
        format!("{present} 2")
    );
    let proof = tests::agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "diff",
        "validate",
        "system messages",
    ]);
    assert_eq!(proof.code, 0, "{proof:?}");
}
