//! The migration execution agent: moves one planned entity at a time from source to target.
//!
//! It reads the source in legacy key order, a page of `batch_size` rows after the last
//! committed key (so a resumed or repeated run continues where the checkpoint says), maps each
//! row with the same [`RowMapper`] the forecast used, and hands the batch to the [`Target`]
//! port, which writes it together with its rejects, records and checkpoint in one transaction.
//! Second-pass references (self-references, broken cycles) go in empty and are filled once the
//! entity is loaded. At the end it checks the accounting: every source row read is migrated or
//! rejected, and the target holds exactly the migrated ones.

use runtime::error::ToolError;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use runtime::context::RunContext;
use runtime::domain::TableName;
use runtime::domain::{
    key_parts, legacy_key, row_json, Batch, Checkpoint, DiffApplied, ParentIds, ReferenceCheck,
    RejectedRow, RollbackEntity, RolledBack, Scan, Written,
};
use runtime::envelope::{AgentError, Envelope};
use runtime::events::RunEvent;
use runtime::jobs::{end_workers, JobName, Jobs};
use runtime::mapping::KeyDeriver;
use runtime::ports::{Rows, Target};
use runtime::supervise::RestartPolicy;
use runtime::text_rows::TextRows;
use tokio_util::task::AbortOnDropHandle;

use crate::pipeline::{
    money_columns, page_of, prepare, read_ahead, synced_columns, GenericCheck, GenericParent,
    MigrateEntity, Prepared,
};
use runtime::AgentName;
use serde::{Deserialize, Serialize};

use crate::transform::{ReferenceMemo, Rejection, RowMapper};
use runtime::mapping::Keys;

const ME: AgentName = AgentName::Execution;

/// What migrating one entity did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EntityResult {
    pub source: Option<TableName>,
    pub target: Option<TableName>,
    pub rows_read: i64,
    /// Rows agentctl put in the target (in this run or an earlier one).
    pub migrated: i64,
    /// Rows the target held before agentctl under a UUID of their own: kept as they are, never
    /// overwritten, so only validation tells whether they match their source rows.
    pub kept: i64,
    pub rejected: i64,
    /// Rejections by rule.
    pub rejected_by_rule: BTreeMap<String, i64>,
    pub batches: i64,
    pub retries: u32,
    /// Times the entity started again from its checkpoint after a failure.
    pub restarts: u32,
    pub second_pass_filled: i64,
    pub seconds: f64,
    /// Rows in the target table after the entity (the accounting's other side).
    pub target_rows: i64,
    /// What the validation agent found afterwards.
    pub validation: Option<runtime::domain::EntityValidation>,
}

/// Set aside (or put back) the foreign keys and plain indexes of these target tables. Done
/// for a whole wave between its loads, never while a batch of it is being written, so the DDL
/// waits for no one's locks and no one waits for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Constraints {
    pub tables: Vec<TableName>,
    pub suspend: bool,
}

/// Delete what agentctl created of these entities, in this order (children first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollback {
    /// (source table, target table), children first.
    pub entities: Vec<(TableName, TableName)>,
    pub keys: Keys,
}

/// Per table, the constraints and indexes set aside or put back.
pub type SetAside = Vec<(TableName, Vec<String>)>;

impl EntityResult {
    /// Counts a rejection under its rule's kind (`not_null`, `reference`, ...).
    fn count_rejection(&mut self, rule: &str) {
        *self
            .rejected_by_rule
            .entry(rule.split(':').next().unwrap_or("").to_owned())
            .or_default() += 1;
    }

    /// Takes the entity's counts from its last checkpoint: the kept rows apart from the
    /// migrated ones, which agentctl wrote.
    fn count(&mut self, checkpoint: &Checkpoint) {
        self.rows_read = checkpoint.rows_read;
        self.migrated = checkpoint.migrated - checkpoint.kept;
        self.kept = checkpoint.kept;
        self.rejected = checkpoint.rejected;
        self.batches = checkpoint.batches;
    }
}

pub enum ExecutionMsg {
    Rollback(Envelope<Rollback>, RpcReplyPort<Result<Vec<RolledBack>, AgentError>>),
    Migrate(Box<Envelope<MigrateEntity>>, RpcReplyPort<Result<EntityResult, AgentError>>),
    /// Replies with what was set aside or put back, per table.
    Constraints(Envelope<Constraints>, RpcReplyPort<Result<SetAside, AgentError>>),
    /// Checks, before any change, that the load can do what it must to these tables; an error
    /// names every problem at once.
    Preflight(Envelope<Constraints>, RpcReplyPort<Result<(), AgentError>>),
    /// Applies one pass of an entity's pending analysis (`None`: it has none).
    ApplyDiff(Box<Envelope<ApplyDiff>>, RpcReplyPort<Result<Option<DiffApplied>, AgentError>>),
}

/// One entity's pending analysis to apply, writes or deletes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApplyDiff {
    pub entity: MigrateEntity,
    pub pass: crate::differential::Pass,
}

#[derive(Clone)]
pub struct ExecutionAgent;

#[derive(Clone)]
pub struct ExecutionArgs {
    pub ctx: Arc<RunContext>,
    pub source_rows: Arc<dyn Rows>,
    pub target: Option<Arc<dyn Target>>,
    /// How often a failed entity's worker is started again.
    pub policy: RestartPolicy,
}

impl ExecutionArgs {
    /// The target to write to; the one place its absence becomes an error.
    fn target(&self) -> Result<Arc<dyn Target>, ToolError> {
        self.target
            .clone()
            .ok_or_else(|| ToolError::not_configured("no target database to write to"))
    }
}

/// Deletes what agentctl created of the entities, children first, and records the decision.
async fn rollback(state: &ExecutionArgs, req: &Rollback) -> Result<Vec<RolledBack>, ToolError> {
    let entities: Vec<RollbackEntity> = req
        .entities
        .iter()
        .map(|(source, target)| RollbackEntity {
            source: source.clone(),
            target: target.clone(),
            deriver: KeyDeriver::new(req.keys.layout, req.keys.namespace, source),
        })
        .collect();
    let done = state.target()?.rollback(state.ctx.run_id, &entities).await?;
    let deleted: i64 = done.iter().map(|d| d.deleted).sum();
    state.ctx.decision(
        ME,
        format!("rolled back {} entities: {deleted} rows deleted", done.len()),
        "only rows agentctl created (their UUID is the one derived from their legacy key), \
            children before parents, in one transaction",
        &done,
    );
    Ok(done)
}

/// The agent's state: what it was started with, and the entity work it supervises.
pub struct Execution {
    args: ExecutionArgs,
    jobs: Jobs,
}

impl Actor for ExecutionAgent {
    type Msg = ExecutionMsg;
    type State = Execution;
    type Arguments = ExecutionArgs;

    async fn pre_start(
        &self,
        _: ActorRef<ExecutionMsg>,
        args: ExecutionArgs,
    ) -> Result<Execution, ActorProcessingErr> {
        Ok(Execution { jobs: Jobs::new(args.ctx.clone(), ME, args.policy), args })
    }

    async fn handle(
        &self,
        myself: ActorRef<ExecutionMsg>,
        msg: ExecutionMsg,
        state: &mut Execution,
    ) -> Result<(), ActorProcessingErr> {
        let args = &state.args;
        match msg {
            ExecutionMsg::Migrate(env, reply) => {
                // Each entity migrates in a worker of its own, so the entities of a wave run
                // side by side; a worker that fails is started again from its checkpoint.
                let (ctx, rows, target) =
                    (args.ctx.clone(), args.source_rows.clone(), args.target());
                let req = env.body;
                let name = JobName {
                    entity: req.spec.source.to_string(),
                    table: req.spec.target.name.clone(),
                    again: Some("starting again from its last checkpoint".into()),
                    doing: format!("migrating {}", req.entity.table),
                };
                let work = move |restarts| {
                    let (ctx, rows, target, req) =
                        (ctx.clone(), rows.clone(), target.clone(), req.clone());
                    async move {
                        let mut result = migrate(&ctx, rows, target?, &req).await?;
                        result.restarts = restarts;
                        Ok(result)
                    }
                };
                state.jobs.start(&myself.get_cell(), name, reply, work).await?;
            }
            ExecutionMsg::ApplyDiff(env, reply) => {
                let (ctx, target, req) = (args.ctx.clone(), args.target(), env.body);
                let name = JobName {
                    entity: req.entity.spec.source.to_string(),
                    table: req.entity.spec.target.name.clone(),
                    again: None,
                    doing: format!("applying changes to {}", req.entity.entity.table),
                };
                let work = move |_| {
                    let (ctx, target, req) = (ctx.clone(), target.clone(), req.clone());
                    async move {
                        crate::differential::apply(&ctx, target?.as_ref(), &req.entity, req.pass)
                            .await
                    }
                };
                state.jobs.start(&myself.get_cell(), name, reply, work).await?;
            }
            ExecutionMsg::Rollback(env, reply) => {
                let _ =
                    reply.send(rollback(args, &env.body).await.map_err(|e| AgentError::of(ME, e)));
            }
            ExecutionMsg::Preflight(env, reply) => {
                let done = async { preflight(&args.ctx, args.target()?.as_ref(), &env.body).await };
                let done = done.await;
                let _ = reply.send(done.map_err(|e| AgentError::of(ME, e)));
            }
            ExecutionMsg::Constraints(env, reply) => {
                let done =
                    async { constraints(&args.ctx, args.target()?.as_ref(), &env.body).await };
                let done = done.await;
                let _ = reply.send(done.map_err(|e| AgentError::of(ME, e)));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<ExecutionMsg>,
        event: SupervisionEvent,
        state: &mut Execution,
    ) -> Result<(), ActorProcessingErr> {
        state.jobs.on_event(event, &myself.get_cell()).await;
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<ExecutionMsg>,
        _: &mut Execution,
    ) -> Result<(), ActorProcessingErr> {
        end_workers(&myself.get_cell()).await;
        Ok(())
    }
}

async fn preflight(
    ctx: &RunContext,
    target: &dyn Target,
    req: &Constraints,
) -> Result<(), ToolError> {
    let problems = target.preflight(&req.tables, req.suspend).await?;
    if !problems.is_empty() {
        return Err(ToolError::system(format!(
            "nothing was changed; the load could not do what it must: {}",
            problems.join("; ")
        )));
    }
    ctx.decision(
        ME,
        format!(
            "preflight: every privilege the load needs on {} tables is there",
            req.tables.len()
        ),
        "checked before any change: reading and writing each table, owning it where its \
            constraints are set aside, moving the sequences its columns draw from; free space is \
            not checked (the server does not say how much is left)",
        serde_json::json!({"tables": req.tables, "set_aside": req.suspend}),
    );
    Ok(())
}

async fn constraints(
    ctx: &RunContext,
    target: &dyn Target,
    req: &Constraints,
) -> Result<SetAside, ToolError> {
    let mut done = Vec::new();
    for table in &req.tables {
        let names = if req.suspend {
            target.suspend_constraints(ctx.run_id, table).await
        } else {
            target.restore_constraints(table).await
        }?;
        if names.is_empty() {
            continue;
        }
        if req.suspend {
            ctx.decision(
                ME,
                format!("{}: {} set aside for the load: {}", table.name, names.len(), names.join(", ")),
                "each batch's references are checked before it is written, so a trigger a row would check them twice; \
                 they are put back and validated set-based once the migration has loaded; an empty table's autovacuum is off \
                 while it fills, so that it is analyzed and vacuumed once, full, instead of half-loaded (all recorded in \
                 agentctl.suspended_constraints)",
                serde_json::json!({"table": table, "suspended": names}),
            );
        } else {
            record_put_back(ctx, table, &names);
        }
        done.push((table.clone(), names));
    }
    Ok(done)
}

/// The decision that a table's constraints and indexes are back (none: no decision).
fn record_put_back(ctx: &RunContext, table: &TableName, names: &[String]) {
    if !names.is_empty() {
        ctx.decision(
            ME,
            format!("{}: put back {}", table.name, names.join(", ")),
            "the table's load is complete; the database validated every row against the \
                constraints, and autovacuum is back on where agentctl had switched it off",
            serde_json::json!({"table": table, "restored": names}),
        );
    }
}

pub(crate) async fn migrate(
    ctx: &RunContext,
    rows: Arc<dyn Rows>,
    target: Arc<dyn Target>,
    req: &MigrateEntity,
) -> Result<EntityResult, ToolError> {
    let started = Instant::now();
    let spec = &req.spec;
    if !req.constraints_suspended && !req.entity.later_parents.is_empty() {
        let later: Vec<String> = req.entity.later_parents.iter().map(ToString::to_string).collect();
        return Err(ToolError::system(format!(
            "{} and {} reference each other: their references can only be proven once both are \
                in, with the foreign keys set aside (run without --keep-constraints)",
            spec.source,
            later.join(", ")
        )));
    }
    let Prepared {
        mapper,
        out_cols,
        id_col,
        deferred_cols: self_refs,
        self_refs_checked,
        references,
        generic,
        seal,
    } = prepare(ctx, ME, target.as_ref(), req).await?;
    let known_parents = Arc::new(known_parents(target.as_ref(), &references, &generic).await?);
    let deferred_cols: Vec<usize> =
        if req.constraints_suspended { Vec::new() } else { self_refs.clone() };
    let scan_cols = spec.source_columns();
    let before = target.checkpoint(ctx.run_id, &spec.source).await?;
    let resumed = before.is_some();
    let checkpoint = before.unwrap_or_default();
    target
        .set_state(
            ctx.run_id,
            &spec.source,
            &spec.target,
            "running",
            None,
            resumed.then_some("resumed from its checkpoint"),
        )
        .await?;
    let mut result = EntityResult {
        source: Some(spec.source.clone()),
        target: Some(spec.target.clone()),
        ..EntityResult::default()
    };
    // What agentctl wrote is what `diff analyze` later tells target edits from source changes
    // by. A load into an empty table with an integer legacy key, whose columns agentctl can
    // hash, records it batch by batch, in each batch's transaction, hashed as it is encoded
    // (bench/RESULTS.md); any other load records it from the table once the load ends (a
    // batch would have the server hash each of its rows by id, several times the cost).
    let hashed = synced_columns(&out_cols, id_col);
    let hashed_cols: Vec<(String, String)> = hashed.iter().map(|&i| out_cols[i].clone()).collect();
    // (A table without legacy_id takes the text path, whose statement names the missing column.)
    let legacy_type =
        out_cols.iter().find(|(c, _)| c == "legacy_id").map_or("", |(_, t)| t.as_str());
    let by_batch = req.constraints_suspended
        && deferred_cols.is_empty()
        && runtime::domain::integer_key(legacy_type)
        && target.hashes_rows(&spec.target, &hashed_cols).await?;
    load_without_keys(ctx, target.as_ref(), req, resumed).await?;
    let load = Load {
        mapper: &mapper,
        scan_cols: &scan_cols,
        out_cols: &out_cols,
        id_col,
        deferred_cols: &deferred_cols,
        references: &references,
        generic: &generic,
        known_parents: &known_parents,
        baseline: by_batch.then_some(hashed.as_slice()),
        seal,
        money: &money_columns(spec, &out_cols),
    };
    let mut checkpoint =
        load_batches(ctx, rows.clone(), &target, req, &load, checkpoint, &mut result).await?;
    let (mut put_back, removed) = settle_self_references(
        ctx,
        target.as_ref(),
        req,
        (self_refs.as_slice(), generic.as_slice()),
        self_refs_checked,
        &out_cols,
        &mut checkpoint,
        &mut result,
    )
    .await?;
    record_source_rows(ctx, &rows, target.as_ref(), &load, &removed, page_of(req, 1000)).await?;
    result.count(&checkpoint);
    result.seconds = started.elapsed().as_secs_f64();
    result.target_rows =
        close_table(ctx, target.as_ref(), req, by_batch, legacy_type, &hashed_cols, &mut put_back)
            .await?;
    account(ctx, target.as_ref(), req, &result).await?;
    done(ctx, &spec.target, &result);
    Ok(result)
}

/// The entity's last progress: done, with its total known now if no forecast gave it.
fn done(ctx: &RunContext, target: &TableName, result: &EntityResult) {
    ctx.events.publish(RunEvent::Progress {
        run_id: ctx.run_id,
        entity: target.name.clone(),
        rows_done: result.rows_read as u64,
        rows_total: Some(result.rows_read as u64),
    });
}

/// What each batch of an entity's load is made with.
struct Load<'a> {
    mapper: &'a RowMapper,
    scan_cols: &'a [String],
    out_cols: &'a [(String, String)],
    id_col: usize,
    deferred_cols: &'a [usize],
    references: &'a [(usize, TableName)],
    generic: &'a [GenericCheck],
    known_parents: &'a Arc<ParentIds>,
    /// The columns each batch hashes into the load baseline, when the batches record it.
    baseline: Option<&'a [usize]>,
    /// What the batches' records seal their pages' fingerprints with ([`Prepared::seal`]).
    seal: u64,
    /// The money columns whose totals each record keeps.
    money: &'a [usize],
}

/// Loads an empty table without its primary key and unique legacy key: every UUID is derived
/// from its legacy key and the rows come in increasing legacy key, so no row repeats a key
/// either would refuse; both are built in one sorted pass each after the load, before anything
/// looks rows up by them.
async fn load_without_keys(
    ctx: &RunContext,
    target: &dyn Target,
    req: &MigrateEntity,
    resumed: bool,
) -> Result<(), ToolError> {
    let spec = &req.spec;
    if !req.constraints_suspended {
        return Ok(());
    }
    let aside = target.suspend_keys(ctx.run_id, &spec.target).await?;
    let what = match (aside.primary, aside.legacy) {
        _ if resumed => return Ok(()),
        (true, true) => "its primary key and unique legacy_id key",
        (false, true) => "its unique legacy_id key",
        (true, false) => "its primary key",
        (false, false) => return Ok(()),
    };
    ctx.decision(
        ME,
        format!("loading {} without {what}", spec.target),
        "the table is empty, every row's UUID is derived from its legacy key and the rows come \
            in increasing legacy key, so no row of the load can repeat a key; maintaining the \
            keys row by row cost about half the server's insert time against building them once \
            after the load (bench/RESULTS.md)",
        serde_json::json!({"table": spec.target.to_string(), "primary_key": aside.primary}),
    );
    Ok(())
}

/// Reads the entity's pages after `checkpoint`, maps each into a batch and writes it, one
/// batch in flight while the next is mapped; returns the last batch's checkpoint.
async fn load_batches(
    ctx: &RunContext,
    rows: Arc<dyn Rows>,
    target: &Arc<dyn Target>,
    req: &MigrateEntity,
    load: &Load<'_>,
    mut checkpoint: Checkpoint,
    result: &mut EntityResult,
) -> Result<Checkpoint, ToolError> {
    let (spec, batch_size) = (&req.spec, req.entity.batch_size.max(1));
    // Reading runs ahead in a task of its own: the source server produces the next page while
    // this task maps and the target server writes.
    let after = (!checkpoint.last_key.is_empty()).then(|| checkpoint.last_key.clone());
    let (mut pages, reader) = read_ahead(rows, Scan { after, ..Scan::entity(spec) }, batch_size);

    // At most one batch is being written while the next one is mapped.
    let mut in_flight: Option<AbortOnDropHandle<Result<(Batch, Written), ToolError>>> = None;
    let mut spare: Option<TextRows> = None;
    let mut memo = ReferenceMemo::default();
    loop {
        let page = match pages.recv().await {
            Some(page) => page?,
            None => TextRows::default(),
        };
        let mut batch =
            (!page.is_empty()).then(|| map_page(ctx, load, page, spare.take(), &mut memo, result));
        if let Some(write) = in_flight.take() {
            let (written_batch, written) = write
                .await
                .map_err(|e| ToolError::system(format!("a batch writer stopped: {e}")))??;
            checkpoint = written.checkpoint.clone();
            report_batch(ctx, req, &written_batch, &written, result);
            // Its buffers hold the batch after next, and a page to come.
            spare = Some(written_batch.rows);
            pages.recycle(written_batch.page);
        }
        let Some(mut b) = batch.take() else { break };
        b.before = checkpoint.clone();
        if let Some(hashed) = load.baseline {
            b.baseline = hashed.to_vec();
            b.page_hash = Some(b.page.fingerprint(load.seal));
            b.money = load.money.to_vec();
        }
        let target = target.clone();
        in_flight = Some(AbortOnDropHandle::new(tokio::spawn(async move {
            let written = target.write(&b).await?;
            Ok((b, written))
        })));
    }
    reader.await.map_err(|e| ToolError::system(format!("the reader stopped: {e}")))?;
    Ok(checkpoint)
}

/// Self-references written as they came (the foreign keys set aside) may point at rows that
/// never arrived: those rows are removed and rejected (or, with the keys kept, the deferred
/// references filled). Returns what was put back meanwhile.
#[allow(clippy::too_many_arguments)]
async fn settle_self_references(
    ctx: &RunContext,
    target: &dyn Target,
    req: &MigrateEntity,
    (self_refs, generic): (&[usize], &[GenericCheck]),
    self_refs_checked: bool,
    out_cols: &[(String, String)],
    checkpoint: &mut Checkpoint,
    result: &mut EntityResult,
) -> Result<(Vec<String>, Vec<String>), ToolError> {
    let spec = &req.spec;
    let tables = (&spec.source, &spec.target);
    // The legacy keys of the rows removed, whose records hold the row as the target had it.
    let mut removed = Vec::new();
    // A generic reference that can name the table itself went in unchecked (the row it names
    // may have come later): the rows it leaves pointing at no parent are removed and rejected,
    // while the keys are aside (none of them can cascade), before the self-references' own.
    // One whose other parents load later waits for validation, which counts it.
    let generic: Vec<&GenericCheck> = match req.constraints_suspended {
        true => generic.iter().filter(|g| names_only_itself_later(g, &spec.source)).collect(),
        false => Vec::new(),
    };
    for g in &generic {
        let column = &out_cols[g.reference.column].0;
        let orphaned = target.drop_dangling(ctx.run_id, tables, column, &g.targets()).await?;
        book(&orphaned, checkpoint, result, &mut removed);
    }
    // Self-references may point at rows that never arrived: those rows are removed and
    // rejected. When the target's own validated
    // foreign keys cover them, putting the keys back first proves there are none (it scans
    // the table as the removal would, and has to run anyway); only a key the rows break sends
    // the load on to the removal, and the rest is put back after it.
    let (put_back, proven) =
        match req.constraints_suspended && !self_refs.is_empty() && self_refs_checked {
            true => target.restore_constraints_unless_refused(&spec.target).await?,
            false => (Vec::new(), false),
        };
    let dangling_checked: &[usize] = if proven { &[] } else { self_refs };
    let own = std::slice::from_ref(&spec.target);
    let mut swept = 0;
    for &c in dangling_checked {
        let column = &out_cols[c].0;
        let (filled, orphaned) = if req.constraints_suspended {
            (0, target.drop_dangling(ctx.run_id, tables, column, own).await?)
        } else {
            target.fill_deferred(ctx.run_id, &spec.source, &spec.target, column).await?
        };
        swept += orphaned.len();
        book(&orphaned, checkpoint, result, &mut removed);
        result.second_pass_filled += filled;
    }
    // A row removed for its own reference may be the one another's generic reference names,
    // and a row removed for that the one a self-reference names: swept in turn until neither
    // removes one.
    while swept > 0 && !generic.is_empty() {
        swept = 0;
        let sweeps = generic
            .iter()
            .map(|g| (&out_cols[g.reference.column].0, g.targets()))
            .chain(dangling_checked.iter().map(|&c| (&out_cols[c].0, own.to_vec())));
        for (column, parents) in sweeps {
            let orphaned = target.drop_dangling(ctx.run_id, tables, column, &parents).await?;
            swept += orphaned.len();
            book(&orphaned, checkpoint, result, &mut removed);
        }
    }
    Ok((put_back, removed))
}

/// Books rows removed after the load as rejected, in the checkpoint and the result, their keys
/// into `removed`.
fn book(
    orphaned: &[RejectedRow],
    checkpoint: &mut Checkpoint,
    result: &mut EntityResult,
    removed: &mut Vec<String>,
) {
    checkpoint.migrated -= orphaned.len() as i64;
    checkpoint.rejected += orphaned.len() as i64;
    for r in orphaned {
        result.count_rejection(&r.rule);
        removed.push(r.legacy_key.clone());
    }
}

/// Rows removed after the load were recorded as the target held them (UUIDs, no source
/// values): their records are given the source rows, read again by key, as every other
/// rejected row has. `removed` read in pages of `page` keys.
async fn record_source_rows(
    ctx: &RunContext,
    rows: &Arc<dyn Rows>,
    target: &dyn Target,
    &Load { mapper, scan_cols, .. }: &Load<'_>,
    removed: &[String],
    page: usize,
) -> Result<(), ToolError> {
    let spec = mapper.spec();
    for keys in removed.chunks(page) {
        let only: Vec<Vec<String>> = keys
            .iter()
            .map(|k| match spec.key.len() {
                1 => vec![k.clone()],
                _ => runtime::mapping::split_key(k).into_iter().map(|p| p.into_owned()).collect(),
            })
            .collect();
        let scan = Scan { only, ..Scan::entity(spec) };
        let page = rows.page(&scan, keys.len(), TextRows::new(scan_cols.len())).await?;
        let read: Vec<(String, serde_json::Value)> = (0..page.len())
            .map(|r| (legacy_key(&page, r, mapper.key_columns()), row_json(scan_cols, page.row(r))))
            .collect();
        target.record_source_rows(ctx.run_id, &spec.source, &read).await?;
    }
    Ok(())
}

/// Whether a generic reference can name the entity's own table, and every other parent it can
/// name is loaded: its rows can be checked once the table's are all in.
fn names_only_itself_later(g: &GenericCheck, own: &TableName) -> bool {
    let mut itself = false;
    for (parent, at) in &g.parents {
        match at {
            GenericParent::Later(_) if parent == own => itself = true,
            GenericParent::Later(_) => return false,
            _ => {}
        }
    }
    itself
}

/// The table is loaded: its rows are counted, what was set aside is put back, the load
/// baseline recorded unless the batches did, and its sequences moved. Returns its rows.
async fn close_table(
    ctx: &RunContext,
    target: &dyn Target,
    req: &MigrateEntity,
    by_batch: bool,
    legacy_type: &str,
    hashed_cols: &[(String, String)],
    put_back: &mut Vec<String>,
) -> Result<i64, ToolError> {
    let spec = &req.spec;
    // The table is loaded: its rows are counted, and the keys, foreign keys and indexes set
    // aside for the load are put back (its parents are loaded, its own rows all
    // in) on one core, one after the other (each locks the table against the next). The other
    // core records the load baseline unless the batches recorded it; if they did, it counts
    // the rows meanwhile (a count only reads, so nothing the put-back does waits for it but
    // the keys' last steps). Otherwise the count goes first on the put-back's core: putting
    // the keys back waits for the baseline's read anyway. The final put-back of
    // the run finds nothing left of this table.
    let (first, second) = tokio::join!(
        async {
            let rows = match by_batch {
                true => None,
                false => Some(target.table_rows(&spec.target, false).await?),
            };
            let put_back = match req.constraints_suspended {
                // A reference to a parent that loads later is refused until that parent is in:
                // the run's final put-back proves it then.
                true if !req.entity.later_parents.is_empty() => {
                    target.restore_constraints_but_refused(&spec.target).await?
                }
                true => target.restore_constraints(&spec.target).await?,
                false => target.restore_keys(&spec.target).await.map(|()| Vec::new())?,
            };
            Ok::<_, ToolError>((rows, put_back))
        },
        async {
            match by_batch {
                true => target.table_rows(&spec.target, false).await.map(Some),
                false => target
                    .record_baseline(&spec.target, legacy_type, hashed_cols)
                    .await
                    .map(|_| None),
            }
        }
    );
    let (counted_first, put_back_last) = first?;
    put_back.extend(put_back_last);
    let rows = counted_first.or(second?).expect("the rows are counted on one core or the other");
    record_put_back(ctx, &spec.target, put_back);
    for (sequence, to) in target.restart_sequences(&spec.target).await? {
        ctx.decision(
            ME,
            format!("{}: sequence {sequence} moved to {to}", spec.target.name),
            "the migrated rows hold values up to there: the target's own next row takes the one \
                after",
            serde_json::json!({"table": spec.target.to_string(), "sequence": sequence, "value": to}),
        );
    }
    Ok(rows)
}

/// Checks the entity's accounting and records its end: every source row read is migrated, kept
/// from before agentctl or rejected, and the target holds at least the migrated and kept ones.
async fn account(
    ctx: &RunContext,
    target: &dyn Target,
    req: &MigrateEntity,
    result: &EntityResult,
) -> Result<(), ToolError> {
    let spec = &req.spec;
    let present = result.migrated + result.kept;
    let balanced = result.rows_read == present + result.rejected && result.target_rows >= present;
    let kept = runtime::domain::kept_term(result.kept);
    let detail = format!(
        "{} read = {} migrated{kept} + {} rejected; {} rows in {}",
        result.rows_read, result.migrated, result.rejected, result.target_rows, spec.target
    );
    target
        .set_state(
            ctx.run_id,
            &spec.source,
            &spec.target,
            if balanced { "done" } else { "failed" },
            Some(result.rows_read),
            Some(&detail),
        )
        .await?;
    ctx.decision(
        ME,
        format!("{}: {detail}", spec.target.name),
        "every source row is accounted for: migrated, or rejected with its reason",
        result,
    );
    if !balanced {
        let triggers = req
            .target
            .table(&spec.target)
            .filter(|t| !t.triggers.is_empty())
            .map(|t| {
                format!(
                    " ({} has trigger {}, which fires on every row written and can drop rows)",
                    t.name,
                    t.triggers.join(", ")
                )
            })
            .unwrap_or_default();
        return Err(ToolError::unbalanced(format!(
            "the accounting does not balance: {detail}{triggers}"
        )));
    }
    Ok(())
}

/// A parent table with at most this many rows is read whole when a child's load begins (16
/// bytes an id, held while the child loads), so the child's batches check their references
/// without asking the server.
const KNOWN_PARENT_IDS: usize = 250_000;

/// The parents of `references` small enough to hold, each read whole. They are loaded before
/// the child begins, so every batch checks against the same parents the server would have
/// answered with; a parent deleted in the meantime is caught when the child's foreign key is
/// put back (or by the foreign key itself when it stayed in place).
async fn known_parents(
    target: &dyn Target,
    references: &[(usize, TableName)],
    generic: &[GenericCheck],
) -> Result<ParentIds, ToolError> {
    let mut known = ParentIds::new();
    let loaded = generic.iter().flat_map(|g| g.parents.values()).filter_map(|p| match p {
        GenericParent::Loaded(t) => Some(t),
        _ => None,
    });
    for parent in references.iter().map(|(_, p)| p).chain(loaded) {
        if known.contains_key(parent) {
            continue;
        }
        if let Some(ids) = target.all_ids(parent, KNOWN_PARENT_IDS).await? {
            known.insert(parent.clone(), ids.into_iter().collect());
        }
    }
    Ok(known)
}

/// Maps one page of source rows into a batch; rows the mapping refuses go with it as rejects.
fn map_page(
    ctx: &RunContext,
    load: &Load<'_>,
    page: TextRows,
    spare: Option<TextRows>,
    memo: &mut ReferenceMemo,
    result: &mut EntityResult,
) -> Batch {
    let Load { mapper, scan_cols, out_cols, id_col, deferred_cols, .. } = *load;
    let spec = mapper.spec();
    let page_len = page.len();
    let key_columns = mapper.key_columns().to_vec();
    let last_key = key_parts(&page, page_len - 1, &key_columns);
    // Room for the source's text and the UUIDs and keys mapping adds (36 bytes each), so the
    // buffer is not copied to a larger one half way.
    let bytes = page.text_len() * 2 + page_len * 128;
    let mut rows = match spare {
        Some(spare) => spare.reuse(out_cols.len(), page_len, bytes),
        None => TextRows::with_capacity(out_cols.len(), page_len, bytes),
    };
    let mut page_rows = Vec::with_capacity(page_len);
    let mut rejected = Vec::new();
    let mut deferred = Vec::new();
    let mut refs: Vec<Option<&str>> = Vec::with_capacity(page.width());
    // The rows of each generic reference's column that point into each parent.
    let mut generic: BTreeMap<(usize, &TableName), Vec<usize>> = BTreeMap::new();
    let mut pointed = Vec::new();
    for seq in 0..page_len {
        refs.clear();
        refs.extend(page.row(seq));
        pointed.clear();
        let mapped = generic_parents(load.generic, &refs, &spec.target.name, &mut pointed)
            .and_then(|()| mapper.map_into(&refs, &mut rows, memo));
        match mapped {
            Ok(()) => {
                let mapped = rows.len() - 1;
                for &(c, parent) in &pointed {
                    generic.entry((c, parent)).or_default().push(mapped);
                }
                for &c in deferred_cols {
                    if let Some(parent) = rows.get(mapped, c) {
                        let id = rows.get(mapped, id_col).unwrap_or_default().to_owned();
                        deferred.push((id, out_cols[c].0.clone(), parent.to_owned()));
                    }
                }
                page_rows.push(seq);
            }
            Err(r) => {
                result.count_rejection(&r.rule);
                rejected.push(RejectedRow {
                    legacy_key: legacy_key(&page, seq, &key_columns),
                    column: r.column,
                    rule: r.rule,
                    reason: r.reason,
                    row: row_json(scan_cols, page.row(seq)),
                });
            }
        }
    }
    drop(refs);
    if !deferred.is_empty() {
        // A self-reference is written in the second pass, once every row of the table is in.
        rows = without_columns(&rows, deferred_cols);
    }
    Batch {
        run_id: ctx.run_id,
        source: spec.source.clone(),
        target: spec.target.clone(),
        columns: out_cols.to_vec(),
        rows,
        id_column: id_col,
        page,
        page_rows,
        source_columns: scan_cols.to_vec(),
        key_columns,
        rejected,
        deferred,
        references: load
            .references
            .iter()
            .map(|(column, parent)| ReferenceCheck {
                column: *column,
                parent: parent.clone(),
                rows: None,
            })
            .chain(generic.into_iter().map(|((column, parent), rows)| ReferenceCheck {
                column,
                parent: parent.clone(),
                rows: Some(rows),
            }))
            .collect(),
        known_parents: load.known_parents.clone(),
        baseline: Vec::new(),
        page_hash: None,
        money: Vec::new(),
        before: Checkpoint::default(),
        last_key,
        rows_read: page_len as i64,
    }
}

/// The target tables a row's generic references point into where the load checks them
/// (column, parent), into `out`; a reference into a table the migration does not bring over
/// rejects the row.
fn generic_parents<'a>(
    generic: &'a [GenericCheck],
    row: &[Option<&str>],
    target: &str,
    out: &mut Vec<(usize, &'a TableName)>,
) -> Result<(), Rejection> {
    for g in generic {
        let Some((parent, id)) = g.reference.of(row) else { continue };
        match &g.parents[parent] {
            GenericParent::Loaded(t) => out.push((g.reference.column, t)),
            GenericParent::Later(_) => {}
            GenericParent::NotMigrated => return Err(g.reference.not_migrated(target, parent, id)),
        }
    }
    Ok(())
}

/// `rows` with the values of `columns` made NULL.
fn without_columns(rows: &TextRows, columns: &[usize]) -> TextRows {
    let mut out = TextRows::with_capacity(rows.width(), rows.len(), rows.text_len());
    for seq in 0..rows.len() {
        for (c, v) in rows.row(seq).enumerate() {
            out.push(if columns.contains(&c) { None } else { v });
        }
    }
    out
}

/// Books a committed batch: the result's counts, the audit trail, the progress event.
fn report_batch(
    ctx: &RunContext,
    req: &MigrateEntity,
    batch: &Batch,
    written: &Written,
    result: &mut EntityResult,
) {
    let spec = &req.spec;
    for r in &written.refused {
        result.count_rejection(&r.rule);
    }
    result.retries += written.retries;
    let checkpoint = &written.checkpoint;
    let rejected = batch.rejected.len() + written.refused.len();
    ctx.audit.record(runtime::audit::AuditRecord::new(
        ME,
        runtime::audit::EventKind::Batch,
        format!(
            "{}: batch {} wrote {} rows, {} already present, {rejected} rejected",
            spec.target.name, checkpoint.batches, written.inserted, written.present
        ),
        serde_json::json!({"entity": spec.source, "batch": checkpoint.batches, "last_key": checkpoint.last_key,
            "inserted": written.inserted, "present": written.present, "rejected": rejected, "retries": written.retries}),
    ));
    ctx.events.publish(RunEvent::Progress {
        run_id: ctx.run_id,
        entity: spec.target.name.clone(),
        rows_done: checkpoint.rows_read as u64,
        rows_total: req.entity.forecast.as_ref().map(|f| f.rows as u64),
    });
}

#[cfg(test)]
mod tests;
