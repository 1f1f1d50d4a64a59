//! The traits through which agents reach the world. `tools` implements them over PostgreSQL,
//! the LLM endpoint and the Docker sandbox; agents only ever see these, so their logic runs
//! in tests without I/O, and the tests that do need I/O use the real implementations.

use std::sync::Arc;

use async_trait::async_trait;

use serde::{Deserialize, Serialize};

use crate::domain::{SchemaReport, TableName};
use crate::ids::RunId;
use crate::mapping::{Join, MappingSpec, ScriptColumn};
use crate::text_rows::TextRows;

pub use crate::error::{ErrorKind, ToolError};

/// Reads a database's structure from its catalog.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// The structure, with row estimates; with `exact_counts`, every table's rows counted too.
    async fn introspect(&self, exact_counts: bool) -> Result<SchemaReport, ToolError>;
}

/// What to read of a source table: these columns (`column`, or `joined_table.column`), with
/// these one-to-one joins, in legacy key order, after `after` (a resumed entity's last key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    pub table: TableName,
    pub columns: Vec<String>,
    pub joins: Vec<Join>,
    pub key: Vec<String>,
    pub after: Option<Vec<String>>,
    /// At most this many rows.
    pub limit: Option<usize>,
    /// Columns whose values a script transforms as they are read (see [`ScriptColumn`]).
    pub scripts: Vec<ScriptColumn>,
    /// Only rows whose timestamp column (of the mapped table) is at or after this value, less
    /// [`CHANGED_SINCE_MARGIN`]: the rows changed since a watermark.
    pub changed_since: Option<(String, String)>,
}

/// How far before a watermark `Scan::changed_since` reads: a write whose transaction committed
/// after a later one stamped its row is still seen.
pub const CHANGED_SINCE_MARGIN: &str = "5 minutes";

impl Scan {
    /// Every row an entity's mapping reads, in key order, scripts applied.
    pub fn entity(spec: &MappingSpec) -> Scan {
        Scan {
            table: spec.source.clone(),
            columns: spec.source_columns(),
            joins: spec.joins.clone(),
            key: spec.key.clone(),
            after: None,
            limit: None,
            scripts: spec.scripts(),
            changed_since: None,
        }
    }
}

/// A row that will not be written, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RejectedRow {
    pub legacy_key: String,
    pub column: Option<String>,
    pub rule: String,
    pub reason: String,
    /// The source row, column by column.
    pub row: serde_json::Value,
}

/// An entity's position and accounting, as committed with its last batch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub last_key: Vec<String>,
    pub rows_read: i64,
    pub migrated: i64,
    pub rejected: i64,
    pub batches: i64,
}

/// Every `id` of a parent table, by table.
pub type ParentIds = std::collections::HashMap<TableName, std::collections::HashSet<uuid::Uuid>>;

/// One batch of mapped rows, written atomically with its rejects, records and checkpoint.
#[derive(Clone, Debug)]
pub struct Batch {
    pub run_id: RunId,
    pub source: TableName,
    pub target: TableName,
    /// Target columns, with the type each value is cast to (`format_type` text).
    pub columns: Vec<(String, String)>,
    /// The mapped rows, one value a target column.
    pub rows: TextRows,
    /// The column that holds the row's UUID.
    pub id_column: usize,
    /// The source page the rows were mapped from (columns named by `source_columns`), kept to
    /// record a row the target refuses; turned into JSON only then.
    pub page: TextRows,
    /// Per mapped row: its row in `page`.
    pub page_rows: Vec<usize>,
    pub source_columns: Vec<String>,
    /// The legacy key's columns in `page`.
    pub key_columns: Vec<usize>,
    /// Rows judged unfit before writing.
    pub rejected: Vec<RejectedRow>,
    /// Second-pass references: (child id, column, parent id).
    pub deferred: Vec<(String, String, String)>,
    /// Columns (by index) that reference another target table's `id`, checked before inserting.
    pub references: Vec<(usize, TableName)>,
    /// Parent tables read whole when the entity's load began: a reference to one of them is
    /// checked against these ids instead of asked of the server every batch.
    pub known_parents: Arc<ParentIds>,
    /// The columns (by index, in order) whose hash the batch records in the load baseline
    /// with the rows it writes, in its own transaction; empty when the entity's baseline is
    /// recorded once its load ends.
    pub baseline: Vec<usize>,
    /// The checkpoint before this batch, and the last key and rows read with it.
    pub before: Checkpoint,
    pub last_key: Vec<String>,
    pub rows_read: i64,
}

impl Batch {
    /// The columns (name, type) whose hash the batch records in the load baseline, in order.
    pub fn baseline_columns(&self) -> Vec<(String, String)> {
        self.baseline.iter().map(|&i| self.columns[i].clone()).collect()
    }

    /// Mapped row `seq`'s source row as the JSON object `rejected_rows` keeps.
    pub fn source_json(&self, seq: usize) -> serde_json::Value {
        row_json(&self.source_columns, self.page.row(self.page_rows[seq]))
    }

    /// Mapped row `seq`'s legacy key as `legacy_id` holds it (composite parts joined by `|`).
    pub fn legacy_key(&self, seq: usize) -> String {
        legacy_key(&self.page, self.page_rows[seq], &self.key_columns)
    }
}

/// The parts of the legacy key of row `row` of `page` (a NULL part is empty): where a keyset
/// read resumes after that row.
pub fn key_parts(page: &TextRows, row: usize, key_columns: &[usize]) -> Vec<String> {
    key_columns.iter().map(|&c| page.get(row, c).unwrap_or("").to_owned()).collect()
}

/// Whether a `legacy_id` of this type (`format_type` text) holds integers: its keys are then
/// compared by range and kept as integers in the load baseline.
pub fn integer_key(legacy_type: &str) -> bool {
    matches!(legacy_type, "smallint" | "integer" | "bigint")
}

/// The legacy key of row `row` of `page` (key parts joined by `|`; a NULL part is empty).
pub fn legacy_key(page: &TextRows, row: usize, key_columns: &[usize]) -> String {
    let mut key = String::new();
    for (i, &c) in key_columns.iter().enumerate() {
        if i > 0 {
            key.push('|');
        }
        key.push_str(page.get(row, c).unwrap_or(""));
    }
    key
}

/// Column names and values as a JSON object (NULL as null).
pub fn row_json<'a>(columns: &[String], row: impl IntoIterator<Item = Option<&'a str>>) -> serde_json::Value {
    serde_json::Value::Object(
        columns
            .iter()
            .zip(row)
            .map(|(c, v)| (c.clone(), v.map_or(serde_json::Value::Null, |s| serde_json::Value::String(s.to_owned()))))
            .collect(),
    )
}

/// What a batch write did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Written {
    pub inserted: i64,
    /// Rows whose legacy key was already in the target (an earlier run or a resume).
    pub present: i64,
    /// Rows the target refused, found by splitting the batch.
    pub refused: Vec<RejectedRow>,
    pub checkpoint: Checkpoint,
    /// Transient failures retried before it went through.
    pub retries: u32,
}

/// Writes migrated rows into the target and keeps the control tables.
#[async_trait]
pub trait Target: Send + Sync + 'static {
    /// Where an entity of a run stands, if it has started.
    async fn checkpoint(&self, run: RunId, source: &TableName) -> Result<Option<Checkpoint>, ToolError>;
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
    /// Removes (and records as rejected) the rows whose self-reference `column` points at no
    /// row, again until none is left: the second pass of a load that wrote self-references
    /// directly, its foreign keys being set aside.
    async fn drop_dangling(&self, run: RunId, source: &TableName, target: &TableName, column: &str) -> Result<Vec<RejectedRow>, ToolError>;
    /// Rows of a target table that may predate agentctl: (legacy key, UUID), leaving out the
    /// rows whose UUID starts with `ours` (the table tag of agentctl's ordered UUIDs). The
    /// caller keeps those whose UUID is not the derived one; children must point at them.
    async fn kept_rows(&self, target: &TableName, ours: Option<&str>) -> Result<Vec<(String, String)>, ToolError>;

    /// What stops the load of these tables, checked before any change, one line each: a
    /// missing privilege to read or write a table, a table not owned where its constraints are
    /// to be set aside (`set_aside`), a sequence its columns draw from that cannot be moved.
    async fn preflight(&self, tables: &[TableName], set_aside: bool) -> Result<Vec<String>, ToolError>;
    /// Moves every sequence the table's columns draw from (identity columns, `nextval`
    /// defaults) past the highest value the table holds, so that the target's own next row
    /// does not take a migrated row's value. Returns the sequences moved, with where to.
    async fn restart_sequences(&self, target: &TableName) -> Result<Vec<(String, i64)>, ToolError>;
    /// Rows in a target table; with `live`, those not soft-deleted (`deleted_at` not set).
    async fn table_rows(&self, target: &TableName, live: bool) -> Result<i64, ToolError>;
    /// Sets aside the table's foreign keys and plain (non-unique) indexes for the load,
    /// recording each with its definition; returns every one recorded for the table, including
    /// those an interrupted run set aside earlier.
    async fn suspend_constraints(&self, run: RunId, target: &TableName) -> Result<Vec<String>, ToolError>;
    /// Puts back what is recorded as set aside for the table: indexes rebuilt, foreign keys
    /// added and validated set-based, then the unique legacy key. Returns what was restored.
    async fn restore_constraints(&self, target: &TableName) -> Result<Vec<String>, ToolError>;
    /// Puts back what [`Target::restore_constraints`] does, but a foreign key the rows break
    /// stops it without an error: that key, and what comes after it, stay recorded and aside.
    /// Returns what was put back, and whether that was everything.
    async fn restore_constraints_unless_refused(&self, target: &TableName) -> Result<(Vec<String>, bool), ToolError>;
    /// Puts back what [`Target::restore_constraints`] does but a foreign key the rows break,
    /// which stays recorded and aside (for a later put-back, which meets it again); the rest
    /// goes on. Returns what was put back.
    async fn restore_constraints_but_refused(&self, target: &TableName) -> Result<Vec<String>, ToolError>;
    /// Sets aside the unique constraint on `legacy_id` of an empty table for its load, when the
    /// primary key on `id` refuses the same duplicates (every row's UUID is derived from its
    /// legacy key, and the empty table holds no row with a UUID of its own); recorded like the
    /// others. Returns whether the table's legacy key is set aside (now or by an earlier try).
    async fn suspend_legacy_key(&self, run: RunId, target: &TableName) -> Result<bool, ToolError>;
    /// Puts back a legacy key set aside by [`Target::suspend_legacy_key`] (the unique index is
    /// built in one sorted pass).
    async fn restore_legacy_key(&self, target: &TableName) -> Result<(), ToolError>;
    /// Deletes, in one transaction and in the order given (children first), the rows of each
    /// table that agentctl created: those whose UUID is the one `deriver` derives from their
    /// legacy key. Rows that were there before agentctl are never touched. Puts back any
    /// constraint still set aside first, so the database itself refuses to orphan a child that
    /// is not rolled back; that refusal undoes the whole rollback and is returned as the error.
    async fn rollback(&self, run: RunId, entities: &[RollbackEntity]) -> Result<Vec<RolledBack>, ToolError>;
    /// Compares a page of expected rows with the target's, in the target: each expected value
    /// is cast to its column's type and compared typed (numbers by value, JSON by content,
    /// times as instants), one statement a page. One answer per expected row, in order.
    async fn compare(&self, target: &TableName, page: &Expected) -> Result<Vec<Compared>, ToolError>;
    /// A column of the target row with this legacy key, as text (to show a difference).
    async fn value_of(&self, target: &TableName, column: &str, key_type: &str, key: &str) -> Result<Option<String>, ToolError>;
    /// Legacy keys of a source table's rows recorded as rejected, by any run, each with whether
    /// it was rejected for nothing but a missing parent.
    async fn rejected_keys(&self, source: &TableName) -> Result<Vec<(String, bool)>, ToolError>;
    /// Which of these UUIDs are rows of the table.
    async fn existing_ids(&self, table: &TableName, ids: &[String]) -> Result<Vec<String>, ToolError>;
    /// Every `id` of `table`, or `None` when it holds more than `at_most` rows.
    async fn all_ids(&self, table: &TableName, at_most: usize) -> Result<Option<Vec<uuid::Uuid>>, ToolError>;
    /// Rows of `child` whose `column` points at no row of `parent`: how many, and a few keys;
    /// `None` when a validated foreign key on that column makes the database guarantee none.
    async fn orphans(&self, child: &TableName, column: &str, parent: &TableName) -> Result<Option<(i64, Vec<String>)>, ToolError>;
    /// Rows of `child` with a legacy key, other than `except`, whose `columns` point at a row of
    /// `parent` (its `referenced` columns); with `live`, only those not soft-deleted.
    async fn links(
        &self,
        child: &TableName,
        columns: &[String],
        parent: &TableName,
        referenced: &[String],
        live: bool,
        except: &[String],
    ) -> Result<i64, ToolError>;
    /// Stores a validation in `migration_validation_reports`.
    async fn save_validation(&self, run: RunId, report: &EntityValidation) -> Result<(), ToolError>;
    async fn set_state(
        &self,
        run: RunId,
        source: &TableName,
        target: &TableName,
        state: &str,
        source_rows: Option<i64>,
        detail: Option<&str>,
    ) -> Result<(), ToolError>;

    /// Records, set-based, what agentctl wrote to every row of the table that has a legacy key:
    /// the hash of `columns` (name, type) as the target holds them (the sync baseline),
    /// replacing what was recorded for the table; keys kept as integers when `legacy_type`
    /// is an [`integer_key`]. Returns how many.
    async fn record_baseline(&self, target: &TableName, legacy_type: &str, columns: &[(String, String)]) -> Result<i64, ToolError>;
    /// Whether the batches of a load can hash `columns` (name, type) of `target` as they send
    /// them ([`Batch::baseline`]): every column of a type whose stored form the writer knows.
    async fn hashes_rows(&self, target: &TableName, columns: &[(String, String)]) -> Result<bool, ToolError>;
    /// Compares a page of expected rows with the target's and with the baseline, one
    /// statement a page: one answer per expected row, in order. `hashed` are the columns the
    /// baseline covers (by index into the page's columns).
    async fn differ(&self, target: &TableName, page: &Expected, hashed: &[usize], soft_delete: bool) -> Result<Vec<Diffed>, ToolError>;
    /// Target rows with a legacy key that are not soft-deleted: (legacy key, UUID), only those
    /// whose UUID starts with `prefix` when one is given.
    async fn live_keys(&self, target: &TableName, prefix: Option<&str>, soft_delete: bool) -> Result<Vec<(String, uuid::Uuid)>, ToolError>;
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
    async fn save_analysis(&self, analysis: &EntityDiff, rows: &[Differential]) -> Result<(), ToolError>;
    /// The newest analysis of a source table not yet applied, with its rows still pending.
    async fn pending_analysis(&self, source: &TableName, target: &TableName) -> Result<Option<(EntityDiff, Vec<Differential>)>, ToolError>;
    /// Applies one batch of an analysis in one transaction: writes, conflict records,
    /// rejects, the baseline and each row's outcome.
    async fn apply_diff(&self, batch: &DiffBatch) -> Result<DiffApplied, ToolError>;
    /// What the entity's analyses learnt of its `updated_at`.
    async fn sync_mark(&self, source: &TableName) -> Result<SyncMark, ToolError>;
    /// Marks an entity's analysis applied by `run`.
    async fn close_analysis(&self, analysis: RunId, source: &TableName, run: RunId) -> Result<(), ToolError>;
}

/// How a target row stands against its source row and what agentctl last wrote there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diffed {
    /// A row with this legacy key is in the target.
    pub present: bool,
    /// Its UUID is the one agentctl derives.
    pub ours: bool,
    /// Its `deleted_at` is set.
    pub deleted: bool,
    /// Some mapped column differs from the expected value (typed comparison).
    pub differs: bool,
    /// When it differs: the hash of the target's values and of the expected ones.
    pub target_hash: Option<i64>,
    pub expected_hash: Option<i64>,
    /// What agentctl last wrote (asked when the row differs, is absent or is soft-deleted).
    pub baseline: Option<i64>,
}

/// What the analyses of an entity learnt of its `updated_at`: the latest analysis' watermark
/// and trust, and how long ago the latest full analysis ran.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncMark {
    pub watermark: Option<String>,
    pub trusted: Option<bool>,
    pub full_age_seconds: Option<f64>,
}

/// What a source row's change asks of its target row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// New in the source.
    Insert,
    /// Changed in the source; the target row is as agentctl last wrote it.
    Update,
    /// Gone from the source.
    Delete,
    /// Changed on both sides since the last sync.
    Conflict,
    /// Changed in the target only: left as it is, reported.
    TargetChanged,
    /// The mapping rejects the source row as it is now.
    Rejected,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Insert => "insert",
            Change::Update => "update",
            Change::Delete => "delete",
            Change::Conflict => "conflict",
            Change::TargetChanged => "target_changed",
            Change::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Change> {
        [Change::Insert, Change::Update, Change::Delete, Change::Conflict, Change::TargetChanged, Change::Rejected]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

/// One source row out of step with its target row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Differential {
    pub legacy_key: String,
    pub change: Change,
    pub target_id: Option<String>,
    /// The mapped row (insert, update, conflict), in the analysis' column order.
    pub values: Option<Vec<Option<String>>>,
    pub target_hash: Option<i64>,
    pub expected_hash: Option<i64>,
    /// Why the mapping rejects it (rejected).
    pub reason: Option<String>,
}

/// What analysing one entity found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntityDiff {
    /// This analysis of this entity (a run may analyse more than once).
    pub analysis_id: RunId,
    /// The run that analysed.
    pub run_id: RunId,
    /// `full` (every source row) or `fast` (the rows whose `updated_at` is at or after the
    /// watermark, and every key for the deletes).
    pub mode: String,
    /// The latest `updated_at` read, where the table has a trusted one.
    pub watermark: Option<String>,
    /// Whether `updated_at` moved with every change this analysis found (`None`: no such
    /// column, or nothing to check it against yet).
    pub trusted: Option<bool>,
    pub source: TableName,
    pub target: TableName,
    /// Target columns with their types, in the order of each differential's values.
    pub columns: Vec<(String, String)>,
    pub source_rows: i64,
    pub in_step: i64,
    pub inserts: i64,
    pub updates: i64,
    pub deletes: i64,
    pub conflicts: i64,
    pub target_changed: i64,
    pub rejected: i64,
    pub seconds: f64,
}

impl EntityDiff {
    /// Rows an apply would touch or record.
    pub fn out_of_step(&self) -> i64 {
        self.inserts + self.updates + self.deletes + self.conflicts + self.rejected
    }

    pub fn count(&mut self, change: Change) {
        match change {
            Change::Insert => self.inserts += 1,
            Change::Update => self.updates += 1,
            Change::Delete => self.deletes += 1,
            Change::Conflict => self.conflicts += 1,
            Change::TargetChanged => self.target_changed += 1,
            Change::Rejected => self.rejected += 1,
        }
    }
}

/// A batch of an analysis to apply (rows of one entity; deletes come in batches of their own).
#[derive(Clone, Debug)]
pub struct DiffBatch {
    pub run_id: RunId,
    pub analysis: EntityDiff,
    pub legacy_column: usize,
    /// Columns (by index) that reference another target table's `id`, checked first.
    pub references: Vec<(usize, TableName)>,
    /// The columns the baseline covers (by index).
    pub hashed: Vec<usize>,
    pub policy: crate::mapping::SyncPolicy,
    /// The target table has `deleted_at`.
    pub soft_delete: bool,
    pub rows: Vec<Differential>,
}

/// What applying one batch did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DiffApplied {
    pub inserted: i64,
    pub updated: i64,
    pub deleted: i64,
    /// Conflicts met: resolved by policy or held.
    pub conflicted: i64,
    /// Conflicts held for an operator (`manual`), and deletes refused (live children, no
    /// `deleted_at`).
    pub held: i64,
    pub rejected: i64,
    /// Rows whose target changed after the analysis: left for the next one.
    pub stale: i64,
    /// One line per row held or rejected, the first few.
    pub notes: Vec<String>,
}

impl DiffApplied {
    /// Keeps a line about a row held or rejected, up to the first 20.
    pub fn note(&mut self, line: String) {
        if self.notes.len() < 20 {
            self.notes.push(line);
        }
    }

    pub fn add(&mut self, o: &DiffApplied) {
        self.inserted += o.inserted;
        self.updated += o.updated;
        self.deleted += o.deleted;
        self.conflicted += o.conflicted;
        self.held += o.held;
        self.rejected += o.rejected;
        self.stale += o.stale;
        for n in &o.notes {
            self.note(n.clone());
        }
    }
}

/// One entity to roll back.
#[derive(Clone, Debug)]
pub struct RollbackEntity {
    pub source: TableName,
    pub target: TableName,
    pub deriver: crate::mapping::KeyDeriver,
}

/// What rolling back one entity did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolledBack {
    pub source: TableName,
    pub target: TableName,
    pub deleted: i64,
    /// Rows left because agentctl did not create them.
    pub kept: i64,
}

/// What the target should hold for a page of source rows, column by column.
#[derive(Clone, Debug, Default)]
pub struct Expected {
    /// Target columns with their `format_type` text; `legacy_id` and the key among them.
    pub columns: Vec<(String, String)>,
    pub id_column: usize,
    pub legacy_column: usize,
    /// Per row: the legacy key, and whether the row should be in the target at all (false:
    /// the mapping rejects it).
    pub keys: Vec<String>,
    pub wanted: Vec<bool>,
    /// Column-major: `values[column][row]`.
    pub values: Vec<Vec<Option<String>>>,
    /// Columns whose target values come back with the answer (money, to total).
    pub returned: Vec<usize>,
}

/// How the target's row compares with one expected row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Compared {
    /// A row with this legacy key is in the target.
    pub present: bool,
    /// Its UUID is the one agentctl derives (false: a row kept from before agentctl).
    pub ours: bool,
    /// The first column whose value differs, by index.
    pub differs: Option<usize>,
    /// The `returned` columns' target values.
    pub returned: Vec<Option<String>>,
}

/// One target row that is not what the mapping of its source row says it should be.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    pub legacy_key: String,
    /// The first differing column, or what is wrong with the row as a whole.
    pub column: String,
    pub expected: Option<String>,
    pub found: Option<String>,
}

/// References in the target that point at no row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Orphans {
    pub column: String,
    pub parent: TableName,
    pub count: i64,
    /// Legacy keys of the first few.
    pub examples: Vec<String>,
    /// A validated foreign key guarantees the column (nothing needed counting).
    pub enforced: bool,
}

/// One reference counted on both sides: the source rows migrated whose reference columns are
/// all set, and the target rows made from them whose reference points at a row of the parent. Equal counts mean no link was lost or left dangling.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Links {
    /// The target columns holding the reference: one holding the parent's UUID, or a foreign
    /// key's columns copied as they are.
    pub columns: Vec<String>,
    pub parent: TableName,
    /// The parent's columns they point at (`id` for a UUID).
    pub referenced: Vec<String>,
    /// The source columns it is made from.
    pub source_columns: Vec<String>,
    pub source: i64,
    pub target: i64,
}

/// A money column's total over the migrated rows, both sides, in cents.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MoneyTotal {
    pub column: String,
    pub source_cents: i64,
    pub target_cents: i64,
}

/// What validating one entity found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntityValidation {
    pub source: TableName,
    pub target: TableName,
    pub passed: bool,
    /// Source rows in scope.
    pub source_rows: i64,
    /// Source rows whose target row holds the mapped values.
    pub migrated: i64,
    /// Source rows not in the target, each with its recorded reason.
    pub rejected: i64,
    /// Source rows whose target row was there before agentctl and kept (not compared).
    pub kept: i64,
    /// Source rows neither in the target nor rejected: lost.
    pub missing: i64,
    /// Rows of the target table with a legacy key (all made from this source, or kept).
    pub target_rows: i64,
    /// Target rows with a legacy key no source row has.
    pub extra: i64,
    pub rows_compared: i64,
    pub rows_differing: i64,
    /// The first differences (at most 20).
    pub differences: Vec<Difference>,
    pub orphans: Vec<Orphans>,
    /// Every reference of the mapping, its links counted in the source and in the target.
    #[serde(default)]
    pub links: Vec<Links>,
    pub money: Vec<MoneyTotal>,
    /// One line: what passed or what did not.
    pub detail: String,
    pub seconds: f64,
}

/// Reads rows, as PostgreSQL's text forms (`None` for NULL).
#[async_trait]
pub trait Rows: Send + Sync + 'static {
    /// Calls `each` for every row in key order; returns how many rows there were.
    async fn scan(&self, scan: &Scan, each: &mut (dyn for<'r> FnMut(&'r [Option<&'r str>]) + Send)) -> Result<u64, ToolError>;

    /// The next `limit` rows after `scan.after`, in key order.
    async fn page(&self, scan: &Scan, limit: usize) -> Result<TextRows, ToolError> {
        page_by_scan(self, scan, limit).await
    }
}

/// A page gathered from [`Rows::scan`]: what a reader without a page of its own returns.
pub async fn page_by_scan<R: Rows + ?Sized>(rows: &R, scan: &Scan, limit: usize) -> Result<TextRows, ToolError> {
    let mut page = TextRows::new(scan.columns.len());
    let limited = Scan { limit: Some(limit), ..scan.clone() };
    rows.scan(&limited, &mut |r: &[Option<&str>]| page.push_row(r.iter().copied())).await?;
    Ok(page)
}

/// A function the model is asked to call, with a JSON schema for its arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlmTool {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
}

/// One request to a language model: a system prompt, the conversation so far (user turns and
/// the model's earlier answers), and optionally a tool it must call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlmRequest {
    pub system: String,
    /// (role, text): `user` or `assistant`.
    pub turns: Vec<(String, String)>,
    pub tool: Option<LlmTool>,
}

/// What the model answered.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LlmReply {
    pub model: String,
    pub text: Option<String>,
    /// The tool call's arguments, as the JSON text the model wrote (maybe not valid JSON).
    pub arguments: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub millis: u64,
    /// Served from a recording, not the endpoint.
    pub replayed: bool,
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
    async fn ask_streaming(&self, request: &LlmRequest, on_text: &mut (dyn for<'t> FnMut(&'t str) + Send)) -> Result<LlmReply, ToolError> {
        let reply = self.ask(request).await?;
        on_text(reply.text.as_deref().unwrap_or(""));
        Ok(reply)
    }
}

/// A request to run code in the sandbox; also the `run_code` tool's arguments, which a model
/// may write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CodeRequest {
    /// `python` or `sh`.
    pub lang: String,
    /// The program. Files it writes to `out/` are returned.
    pub code: String,
    /// Text for its stdin (sample rows as JSON or CSV, say).
    #[serde(default)]
    pub stdin: String,
    /// Files placed in its work dir beside it.
    #[serde(default)]
    pub files: Vec<CodeFile>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CodeFile {
    /// A relative name: `rows.csv`.
    pub name: String,
    pub content: String,
}

/// What code did in the sandbox.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CodeResult {
    /// `None` when it was killed at the timeout.
    pub exit_code: Option<i64>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Files it wrote to `out/`, as text (lossy).
    pub files: Vec<CodeFile>,
    pub duration_ms: u64,
    /// `timeout`, `memory`, `output`, `files`.
    pub limits_hit: Vec<String>,
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
