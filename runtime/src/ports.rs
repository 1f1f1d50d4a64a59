//! The traits through which agents reach the world. `tools` implements them over PostgreSQL,
//! the LLM endpoint and the Docker sandbox; agents only ever see these. The target database is
//! reached through four small roles ([`Loader`], [`ConstraintStore`], [`Verifier`],
//! [`DiffStore`]); [`Target`] is all four. The payloads they carry are in [`crate::domain`].

use async_trait::async_trait;

use crate::domain::{
    Batch, Checkpoint, CodeRequest, CodeResult, Compared, DiffApplied, DiffBatch, Diffed,
    Differential, EntityDiff, EntityValidation, Expected, KeysAside, Links, LlmReply, LlmRequest,
    PageRecord, ProvenPage, RecordedPage, RejectedRow, RollbackEntity, RolledBack, Scan,
    SchemaReport, SyncMark, TableName, Written,
};
use crate::ids::RunId;
use crate::text_rows::TextRows;

pub use crate::error::{ErrorKind, ToolError};

/// Reads a database's structure from its catalog.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// The structure, with row estimates; with `exact_counts`, every table's rows counted too.
    async fn introspect(&self, exact_counts: bool) -> Result<SchemaReport, ToolError>;
}

/// Loads an entity's rows into the target: its checkpoint, its batches, the second pass of
/// its references, and what the load needs checked or moved first.
#[async_trait]
pub trait Loader: Send + Sync + 'static {
    /// Where an entity of a run stands, if it has started.
    async fn checkpoint(
        &self,
        run: RunId,
        source: &TableName,
    ) -> Result<Option<Checkpoint>, ToolError>;
    async fn write(&self, batch: &Batch) -> Result<Written, ToolError>;
    /// Fills a second-pass reference column from the deferred records; rows whose parent is
    /// not in the target are removed and returned as rejected.
    async fn fill_deferred(
        &self,
        run: RunId,
        source: &TableName,
        target: &TableName,
        column: &str,
    ) -> Result<(i64, Vec<RejectedRow>), ToolError>;
    /// Removes (and records as rejected) the rows whose reference `column` points at no row of
    /// any of `parents` (the table itself for a self-reference; every parent of a generic
    /// reference that can name the table itself), again until none is left: the second pass of
    /// a load that wrote such references directly, its foreign keys being set aside.
    async fn drop_dangling(
        &self,
        run: RunId,
        (source, target): (&TableName, &TableName),
        column: &str,
        parents: &[TableName],
    ) -> Result<Vec<RejectedRow>, ToolError>;
    /// Records `rows` (legacy key, source row as JSON) as the source rows of the run's rejected
    /// rows of `source` with those keys: a row removed after the load was recorded as the
    /// target held it.
    async fn record_source_rows(
        &self,
        run: RunId,
        source: &TableName,
        rows: &[(String, serde_json::Value)],
    ) -> Result<(), ToolError>;
    /// Rows of a target table that may predate agentctl: (legacy key, UUID), leaving out the
    /// rows whose UUID is in `ours` (the range of agentctl's ordered UUIDs of the table,
    /// [`KeyDeriver::range`]). The caller keeps those whose UUID is not the derived one;
    /// children must point at them.
    ///
    /// [`KeyDeriver::range`]: crate::mapping::KeyDeriver::range
    async fn kept_rows(
        &self,
        target: &TableName,
        ours: Option<(uuid::Uuid, uuid::Uuid)>,
    ) -> Result<Vec<(String, String)>, ToolError>;
    /// What stops the load of these tables, checked before any change, one line each: a
    /// missing privilege to read or write a table, a table not owned where its constraints are
    /// to be set aside (`set_aside`), a sequence its columns draw from that cannot be moved.
    async fn preflight(
        &self,
        tables: &[TableName],
        set_aside: bool,
    ) -> Result<Vec<String>, ToolError>;
    /// Moves every sequence the table's columns draw from (identity columns, `nextval`
    /// defaults) past the highest value the table holds, so that the target's own next row
    /// does not take a migrated row's value. Returns the sequences moved, with where to.
    async fn restart_sequences(&self, target: &TableName) -> Result<Vec<(String, i64)>, ToolError>;
    /// Rows in a target table; with `live`, those not soft-deleted (`deleted_at` not set).
    async fn table_rows(&self, target: &TableName, live: bool) -> Result<i64, ToolError>;
    async fn set_state(
        &self,
        run: RunId,
        source: &TableName,
        target: &TableName,
        state: &str,
        source_rows: Option<i64>,
        detail: Option<&str>,
    ) -> Result<(), ToolError>;
}

/// Sets a target table's constraints aside for a load and puts them back, and rolls back
/// what agentctl wrote.
#[async_trait]
pub trait ConstraintStore: Send + Sync + 'static {
    /// Sets aside the table's foreign keys and plain (non-unique) indexes for the load,
    /// recording each with its definition; returns every one recorded for the table, including
    /// those an interrupted run set aside earlier.
    async fn suspend_constraints(
        &self,
        run: RunId,
        target: &TableName,
    ) -> Result<Vec<String>, ToolError>;
    /// Puts back what is recorded as set aside for the table: indexes rebuilt, foreign keys
    /// added and validated set-based, then the unique legacy key. Returns what was restored.
    async fn restore_constraints(&self, target: &TableName) -> Result<Vec<String>, ToolError>;
    /// Puts back what [`Target::restore_constraints`] does, but a foreign key the rows break
    /// stops it without an error: that key, and what comes after it, stay recorded and aside.
    /// Returns what was put back, and whether that was everything.
    async fn restore_constraints_unless_refused(
        &self,
        target: &TableName,
    ) -> Result<(Vec<String>, bool), ToolError>;
    /// Puts back what [`Target::restore_constraints`] does but a foreign key the rows break,
    /// which stays recorded and aside (for a later put-back, which meets it again); the rest
    /// goes on. Returns what was put back.
    async fn restore_constraints_but_refused(
        &self,
        target: &TableName,
    ) -> Result<Vec<String>, ToolError>;
    /// Sets aside the keys of an empty table for its load: its primary key on `id` and its
    /// unique constraint on `legacy_id`, where nothing else leans on them. Every row's UUID is
    /// derived from its legacy key and the rows are read in increasing legacy key, so no row of
    /// the load can repeat a key either would refuse. A table that is no longer empty (a
    /// restarted or resumed load) gets its primary key back first, and keeps the legacy key
    /// aside (the primary key refuses the same duplicates). Recorded like the others; returns
    /// which keys are aside.
    async fn suspend_keys(&self, run: RunId, target: &TableName) -> Result<KeysAside, ToolError>;
    /// Puts back the keys set aside by [`Target::suspend_keys`], primary key first (each index
    /// built in one sorted pass).
    async fn restore_keys(&self, target: &TableName) -> Result<(), ToolError>;
    /// Deletes, in one transaction and in the order given (children first), the rows of each
    /// table that agentctl created: those whose UUID is the one `deriver` derives from their
    /// legacy key. Rows that were there before agentctl are never touched. Puts back any
    /// constraint still set aside first, so the database itself refuses to orphan a child that
    /// is not rolled back; that refusal undoes the whole rollback and is returned as the error.
    async fn rollback(
        &self,
        run: RunId,
        entities: &[RollbackEntity],
    ) -> Result<Vec<RolledBack>, ToolError>;
}

/// Proves a migration in the target: compares pages of expected rows, counts orphans and
/// links, and stores what the validation found.
#[async_trait]
pub trait Verifier: Send + Sync + 'static {
    /// Compares a page of expected rows with the target's, in the target: each expected value
    /// is cast to its column's type and compared typed (numbers by value, JSON by content,
    /// times as instants), one statement a page. One answer per expected row, in order.
    async fn compare(
        &self,
        target: &TableName,
        page: &Expected,
    ) -> Result<Vec<Compared>, ToolError>;
    /// The load's records of `target`'s source pages, in key order: none unless its load
    /// recorded its baseline batch by batch (then one a batch that wrote rows).
    async fn page_records(&self, target: &TableName) -> Result<Vec<PageRecord>, ToolError>;
    /// Proves a page by the load's record of it: the target's rows of the page's key range
    /// hashed by the server, each against the hash recorded for its key. `None` unless every
    /// key of the record holds its row, with the UUID derived from the key and the recorded
    /// hash, and no other key of the page has a row: the page is then compared row by row.
    async fn prove_by_record(
        &self,
        target: &TableName,
        page: &RecordedPage,
    ) -> Result<Option<ProvenPage>, ToolError>;
    /// A column of the target row with this legacy key, as text (to show a difference).
    async fn value_of(
        &self,
        target: &TableName,
        column: &str,
        key_type: &str,
        key: &str,
    ) -> Result<Option<String>, ToolError>;
    /// Legacy keys of a source table's rows recorded as rejected, by any run, each with whether
    /// it is tried again once its parents are in: rejected for nothing but a missing parent, or
    /// refused by a sync for a unique or exclusion rule another row held (which that row's own
    /// change, deleted or moved, may have freed since).
    async fn rejected_keys(&self, source: &TableName) -> Result<Vec<(String, bool)>, ToolError>;
    /// Of these legacy keys, those whose last sync outcome held the row for an operator, each
    /// with the reason.
    async fn held_reasons(
        &self,
        source: &TableName,
        keys: &[String],
    ) -> Result<Vec<(String, String)>, ToolError>;
    /// Which of these UUIDs are rows of the table.
    async fn existing_ids(
        &self,
        table: &TableName,
        ids: &[String],
    ) -> Result<Vec<String>, ToolError>;
    /// Every `id` of `table`, or `None` when it holds more than `at_most` rows.
    async fn all_ids(
        &self,
        table: &TableName,
        at_most: usize,
    ) -> Result<Option<Vec<uuid::Uuid>>, ToolError>;
    /// Rows of `child` whose `column` points at no row of any of `parents` (one for a foreign
    /// key; every parent of a generic reference): how many, and a few keys; `None` when a
    /// validated foreign key on that column makes the database guarantee none.
    async fn orphans(
        &self,
        child: &TableName,
        column: &str,
        parents: &[TableName],
    ) -> Result<Option<(i64, Vec<String>)>, ToolError>;
    /// Counts each link's `target`: the rows of `child` with a legacy key, other than `except`,
    /// whose `columns` point at a row of `parent` (its `referenced` columns); with `live`, only
    /// those not soft-deleted. Returns the rows of `child` (with `live`, those not
    /// soft-deleted), counted in the same scan.
    async fn links(
        &self,
        child: &TableName,
        links: &mut [Links],
        live: bool,
        except: &[String],
    ) -> Result<i64, ToolError>;
    /// Stores a validation in `migration_validation_reports`.
    async fn save_validation(&self, run: RunId, report: &EntityValidation)
        -> Result<(), ToolError>;
}

/// Keeps the two databases in step after the migration: the baseline of what agentctl wrote,
/// the analyses of what changed, and their application.
#[async_trait]
pub trait DiffStore: Send + Sync + 'static {
    /// Records, set-based, what agentctl wrote to every row of the table that has a legacy key:
    /// the hash of `columns` (name, type) as the target holds them (the sync baseline),
    /// replacing what was recorded for the table; keys kept as integers when `legacy_type`
    /// is an [`integer_key`]. Returns how many.
    async fn record_baseline(
        &self,
        target: &TableName,
        legacy_type: &str,
        columns: &[(String, String)],
    ) -> Result<i64, ToolError>;
    /// Whether the batches of a load can hash `columns` (name, type) of `target` as they send
    /// them ([`Batch::baseline`]): every column of a type whose stored form the writer knows.
    async fn hashes_rows(
        &self,
        target: &TableName,
        columns: &[(String, String)],
    ) -> Result<bool, ToolError>;
    /// Compares a page of expected rows with the target's and with the baseline, one
    /// statement a page: one answer per expected row, in order. `hashed` are the columns the
    /// baseline covers (by index into the page's columns).
    async fn differ(
        &self,
        target: &TableName,
        page: &Expected,
        hashed: &[usize],
        soft_delete: bool,
    ) -> Result<Vec<Diffed>, ToolError>;
    /// Target rows with a legacy key that are not soft-deleted: (legacy key, UUID), only those
    /// whose UUID is in `ours` when it is given.
    async fn live_keys(
        &self,
        target: &TableName,
        ours: Option<(uuid::Uuid, uuid::Uuid)>,
        soft_delete: bool,
    ) -> Result<Vec<(String, uuid::Uuid)>, ToolError>;
    /// Like [`Target::live_keys`], for an integer legacy key: the rows with `after < legacy_id
    /// <= upto` (unbounded where `None`) whose key is not among `present`.
    async fn live_keys_between(
        &self,
        target: &TableName,
        after: Option<&str>,
        upto: Option<&str>,
        present: &[String],
        soft_delete: bool,
    ) -> Result<Vec<(String, uuid::Uuid)>, ToolError>;
    /// Stores an entity's analysis and the rows it found out of step.
    async fn save_analysis(
        &self,
        analysis: &EntityDiff,
        rows: &[Differential],
    ) -> Result<(), ToolError>;
    /// The newest analysis of a source table not yet applied, with its rows still pending.
    async fn pending_analysis(
        &self,
        source: &TableName,
        target: &TableName,
    ) -> Result<Option<(EntityDiff, Vec<Differential>)>, ToolError>;
    /// Applies one batch of an analysis in one transaction: writes, conflict records,
    /// rejects, the baseline and each row's outcome.
    async fn apply_diff(&self, batch: &DiffBatch) -> Result<DiffApplied, ToolError>;
    /// What the entity's analyses learnt of its `updated_at`.
    async fn sync_mark(&self, source: &TableName) -> Result<SyncMark, ToolError>;
    /// Marks an entity's analysis applied by `run`.
    async fn close_analysis(
        &self,
        analysis: RunId,
        source: &TableName,
        run: RunId,
    ) -> Result<(), ToolError>;
    /// The inserts, updates and source-wins conflicts of an analysis that `run` saw refused by
    /// a unique or exclusion rule or for a parent not in the target, made pending again and
    /// their reject records of `run` withdrawn, in one transaction (to be tried again once the
    /// run's deletes freed what they collided with and the parents' own retries are done);
    /// returns how many.
    async fn reopen_refused(
        &self,
        analysis: RunId,
        source: &TableName,
        run: RunId,
    ) -> Result<u64, ToolError>;
}

/// The target database in all its roles; what the agents that write, prove and sync hold.
pub trait Target: Loader + ConstraintStore + Verifier + DiffStore {}

impl<T: Loader + ConstraintStore + Verifier + DiffStore> Target for T {}

/// The target's four roles, each from wherever it is wanted: all from one database
/// ([`Roles::of`]), or one replaced (a fault injector, a fake) and the others kept.
#[derive(Clone)]
pub struct Roles {
    pub load: std::sync::Arc<dyn Loader>,
    pub constraints: std::sync::Arc<dyn ConstraintStore>,
    pub verify: std::sync::Arc<dyn Verifier>,
    pub sync: std::sync::Arc<dyn DiffStore>,
}

impl Roles {
    /// Every role played by `target`.
    pub fn of(target: std::sync::Arc<dyn Target>) -> Roles {
        Roles {
            load: target.clone(),
            constraints: target.clone(),
            verify: target.clone(),
            sync: target,
        }
    }
}

#[async_trait]
impl Loader for Roles {
    async fn checkpoint(
        &self,
        run: RunId,
        source: &TableName,
    ) -> Result<Option<Checkpoint>, ToolError> {
        self.load.checkpoint(run, source).await
    }
    async fn write(&self, batch: &Batch) -> Result<Written, ToolError> {
        self.load.write(batch).await
    }
    async fn fill_deferred(
        &self,
        run: RunId,
        source: &TableName,
        target: &TableName,
        column: &str,
    ) -> Result<(i64, Vec<RejectedRow>), ToolError> {
        self.load.fill_deferred(run, source, target, column).await
    }
    async fn drop_dangling(
        &self,
        run: RunId,
        tables: (&TableName, &TableName),
        column: &str,
        parents: &[TableName],
    ) -> Result<Vec<RejectedRow>, ToolError> {
        self.load.drop_dangling(run, tables, column, parents).await
    }
    async fn record_source_rows(
        &self,
        run: RunId,
        source: &TableName,
        rows: &[(String, serde_json::Value)],
    ) -> Result<(), ToolError> {
        self.load.record_source_rows(run, source, rows).await
    }
    async fn kept_rows(
        &self,
        target: &TableName,
        ours: Option<(uuid::Uuid, uuid::Uuid)>,
    ) -> Result<Vec<(String, String)>, ToolError> {
        self.load.kept_rows(target, ours).await
    }
    async fn preflight(
        &self,
        tables: &[TableName],
        set_aside: bool,
    ) -> Result<Vec<String>, ToolError> {
        self.load.preflight(tables, set_aside).await
    }
    async fn restart_sequences(&self, target: &TableName) -> Result<Vec<(String, i64)>, ToolError> {
        self.load.restart_sequences(target).await
    }
    async fn table_rows(&self, target: &TableName, live: bool) -> Result<i64, ToolError> {
        self.load.table_rows(target, live).await
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
        self.load.set_state(run, source, target, state, source_rows, detail).await
    }
}

#[async_trait]
impl ConstraintStore for Roles {
    async fn suspend_constraints(
        &self,
        run: RunId,
        target: &TableName,
    ) -> Result<Vec<String>, ToolError> {
        self.constraints.suspend_constraints(run, target).await
    }
    async fn restore_constraints(&self, target: &TableName) -> Result<Vec<String>, ToolError> {
        self.constraints.restore_constraints(target).await
    }
    async fn restore_constraints_unless_refused(
        &self,
        target: &TableName,
    ) -> Result<(Vec<String>, bool), ToolError> {
        self.constraints.restore_constraints_unless_refused(target).await
    }
    async fn restore_constraints_but_refused(
        &self,
        target: &TableName,
    ) -> Result<Vec<String>, ToolError> {
        self.constraints.restore_constraints_but_refused(target).await
    }
    async fn suspend_keys(&self, run: RunId, target: &TableName) -> Result<KeysAside, ToolError> {
        self.constraints.suspend_keys(run, target).await
    }
    async fn restore_keys(&self, target: &TableName) -> Result<(), ToolError> {
        self.constraints.restore_keys(target).await
    }
    async fn rollback(
        &self,
        run: RunId,
        entities: &[RollbackEntity],
    ) -> Result<Vec<RolledBack>, ToolError> {
        self.constraints.rollback(run, entities).await
    }
}

#[async_trait]
impl Verifier for Roles {
    async fn compare(
        &self,
        target: &TableName,
        page: &Expected,
    ) -> Result<Vec<Compared>, ToolError> {
        self.verify.compare(target, page).await
    }
    async fn page_records(&self, target: &TableName) -> Result<Vec<PageRecord>, ToolError> {
        self.verify.page_records(target).await
    }
    async fn prove_by_record(
        &self,
        target: &TableName,
        page: &RecordedPage,
    ) -> Result<Option<ProvenPage>, ToolError> {
        self.verify.prove_by_record(target, page).await
    }
    async fn value_of(
        &self,
        target: &TableName,
        column: &str,
        key_type: &str,
        key: &str,
    ) -> Result<Option<String>, ToolError> {
        self.verify.value_of(target, column, key_type, key).await
    }
    async fn rejected_keys(&self, source: &TableName) -> Result<Vec<(String, bool)>, ToolError> {
        self.verify.rejected_keys(source).await
    }
    async fn held_reasons(
        &self,
        source: &TableName,
        keys: &[String],
    ) -> Result<Vec<(String, String)>, ToolError> {
        self.verify.held_reasons(source, keys).await
    }
    async fn existing_ids(
        &self,
        table: &TableName,
        ids: &[String],
    ) -> Result<Vec<String>, ToolError> {
        self.verify.existing_ids(table, ids).await
    }
    async fn all_ids(
        &self,
        table: &TableName,
        at_most: usize,
    ) -> Result<Option<Vec<uuid::Uuid>>, ToolError> {
        self.verify.all_ids(table, at_most).await
    }
    async fn orphans(
        &self,
        child: &TableName,
        column: &str,
        parents: &[TableName],
    ) -> Result<Option<(i64, Vec<String>)>, ToolError> {
        self.verify.orphans(child, column, parents).await
    }
    async fn links(
        &self,
        child: &TableName,
        links: &mut [Links],
        live: bool,
        except: &[String],
    ) -> Result<i64, ToolError> {
        self.verify.links(child, links, live, except).await
    }
    async fn save_validation(
        &self,
        run: RunId,
        report: &EntityValidation,
    ) -> Result<(), ToolError> {
        self.verify.save_validation(run, report).await
    }
}

#[async_trait]
impl DiffStore for Roles {
    async fn record_baseline(
        &self,
        target: &TableName,
        legacy_type: &str,
        columns: &[(String, String)],
    ) -> Result<i64, ToolError> {
        self.sync.record_baseline(target, legacy_type, columns).await
    }
    async fn hashes_rows(
        &self,
        target: &TableName,
        columns: &[(String, String)],
    ) -> Result<bool, ToolError> {
        self.sync.hashes_rows(target, columns).await
    }
    async fn differ(
        &self,
        target: &TableName,
        page: &Expected,
        hashed: &[usize],
        soft_delete: bool,
    ) -> Result<Vec<Diffed>, ToolError> {
        self.sync.differ(target, page, hashed, soft_delete).await
    }
    async fn live_keys(
        &self,
        target: &TableName,
        ours: Option<(uuid::Uuid, uuid::Uuid)>,
        soft_delete: bool,
    ) -> Result<Vec<(String, uuid::Uuid)>, ToolError> {
        self.sync.live_keys(target, ours, soft_delete).await
    }
    async fn live_keys_between(
        &self,
        target: &TableName,
        after: Option<&str>,
        upto: Option<&str>,
        present: &[String],
        soft_delete: bool,
    ) -> Result<Vec<(String, uuid::Uuid)>, ToolError> {
        self.sync.live_keys_between(target, after, upto, present, soft_delete).await
    }
    async fn save_analysis(
        &self,
        analysis: &EntityDiff,
        rows: &[Differential],
    ) -> Result<(), ToolError> {
        self.sync.save_analysis(analysis, rows).await
    }
    async fn pending_analysis(
        &self,
        source: &TableName,
        target: &TableName,
    ) -> Result<Option<(EntityDiff, Vec<Differential>)>, ToolError> {
        self.sync.pending_analysis(source, target).await
    }
    async fn apply_diff(&self, batch: &DiffBatch) -> Result<DiffApplied, ToolError> {
        self.sync.apply_diff(batch).await
    }
    async fn sync_mark(&self, source: &TableName) -> Result<SyncMark, ToolError> {
        self.sync.sync_mark(source).await
    }
    async fn close_analysis(
        &self,
        analysis: RunId,
        source: &TableName,
        run: RunId,
    ) -> Result<(), ToolError> {
        self.sync.close_analysis(analysis, source, run).await
    }
    async fn reopen_refused(
        &self,
        analysis: RunId,
        source: &TableName,
        run: RunId,
    ) -> Result<u64, ToolError> {
        self.sync.reopen_refused(analysis, source, run).await
    }
}

/// Reads rows, as PostgreSQL's text forms (`None` for NULL).
#[async_trait]
pub trait Rows: Send + Sync + 'static {
    /// Calls `each` for every row in key order; returns how many rows there were.
    async fn scan(
        &self,
        scan: &Scan,
        each: &mut (dyn for<'r> FnMut(&'r [Option<&'r str>]) + Send),
    ) -> Result<u64, ToolError>;

    /// The next `limit` rows after `scan.after`, in key order, filled into the buffers of
    /// `into` (a page done with, or an empty one): a page's few MiB written in place instead
    /// of fresh memory faulted in for every page.
    async fn page(&self, scan: &Scan, limit: usize, into: TextRows) -> Result<TextRows, ToolError> {
        page_by_scan(self, scan, limit, into).await
    }
}

/// A page gathered from [`Rows::scan`]: what a reader without a page of its own returns.
pub async fn page_by_scan<R: Rows + ?Sized>(
    rows: &R,
    scan: &Scan,
    limit: usize,
    into: TextRows,
) -> Result<TextRows, ToolError> {
    let mut page = into.reuse(scan.columns.len(), 0, 0);
    let limited = Scan { limit: Some(limit), ..scan.clone() };
    rows.scan(&limited, &mut |r: &[Option<&str>]| page.push_row(r.iter().copied())).await?;
    Ok(page)
}

/// A language model behind an OpenAI-compatible API.
#[async_trait]
pub trait Llm: Send + Sync + 'static {
    /// Which provider and model, for messages: `gpt-4o-mini at https://api.openai.com/v1`.
    fn describe(&self) -> String;
    /// Tokens used so far by this client, and the budget, if any.
    fn tokens(&self) -> (u64, Option<u64>);
    /// What these tokens cost in US dollars, when a price is configured.
    fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> Option<f64>;
    async fn ask(&self, request: &LlmRequest) -> Result<LlmReply, ToolError>;
    /// Asks for a text answer and hands each piece to `on_text` as it arrives; returns the
    /// whole reply. (Without streaming, the answer arrives as one piece.)
    async fn ask_streaming(
        &self,
        request: &LlmRequest,
        on_text: &mut (dyn for<'t> FnMut(&'t str) + Send),
    ) -> Result<LlmReply, ToolError> {
        let reply = self.ask(request).await?;
        on_text(reply.text.as_deref().unwrap_or(""));
        Ok(reply)
    }
}

/// Runs untrusted code in isolation (the Docker sandbox).
#[async_trait]
pub trait CodeRunner: Send + Sync + 'static {
    /// The limits code runs under, for the audit trail.
    fn limits(&self) -> serde_json::Value;
    async fn run(&self, request: &CodeRequest) -> Result<CodeResult, ToolError>;
    /// Starts code that answers each line on its stdin with one line on its stdout.
    async fn open(&self, request: &CodeRequest) -> Result<Box<dyn CodeStream>, ToolError>;
    /// How long an opened stream may be kept; open a new one after that.
    fn stream_lifetime(&self) -> std::time::Duration;
}

/// A running program exchanging lines; see [`CodeRunner::open`].
#[async_trait]
pub trait CodeStream: Send {
    async fn exchange(&mut self, line: &str) -> Result<String, ToolError>;
    async fn close(self: Box<Self>);
}
