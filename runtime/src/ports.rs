//! The traits through which agents reach the world. `tools` implements them over PostgreSQL
//! (and later the LLM and the code interpreter); agents only ever see these, so their logic runs
//! in tests without I/O, and the tests that do need I/O use the real implementations.

use async_trait::async_trait;

use serde::{Deserialize, Serialize};

use crate::domain::{SchemaReport, TableName};
use crate::ids::RunId;
use crate::mapping::Join;

/// A tool's failure, already phrased for an operator: what was being done, where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(pub String);

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

/// One batch of mapped rows, written atomically with its rejects, records and checkpoint.
#[derive(Clone, Debug)]
pub struct Batch {
    pub run_id: RunId,
    pub source: TableName,
    pub target: TableName,
    /// Target columns, with the type each value is cast to (`format_type` text).
    pub columns: Vec<(String, String)>,
    pub rows: Vec<Vec<Option<String>>>,
    /// Per row: the legacy key and the UUID.
    pub keys: Vec<String>,
    pub ids: Vec<String>,
    /// Per row: the source row as read (columns named by `source_columns`), kept to record it
    /// if the target refuses the row; turned into JSON only then.
    pub source_rows: Vec<Vec<Option<String>>>,
    pub source_columns: Vec<String>,
    /// Rows judged unfit before writing.
    pub rejected: Vec<RejectedRow>,
    /// Second-pass references: (child id, column, parent id).
    pub deferred: Vec<(String, String, String)>,
    /// Columns (by index) that reference another target table's `id`, checked before inserting.
    pub references: Vec<(usize, TableName)>,
    /// The checkpoint before this batch, and the last key and rows read with it.
    pub before: Checkpoint,
    pub last_key: Vec<String>,
    pub rows_read: i64,
}

impl Batch {
    /// A source row as the JSON object `rejected_rows` keeps.
    pub fn source_json(&self, seq: usize) -> serde_json::Value {
        row_json(&self.source_columns, &self.source_rows[seq])
    }
}

/// Column names and values as a JSON object (NULL as null).
pub fn row_json(columns: &[String], row: &[Option<String>]) -> serde_json::Value {
    serde_json::Value::Object(
        columns
            .iter()
            .zip(row)
            .map(|(c, v)| (c.clone(), v.as_ref().map_or(serde_json::Value::Null, |s| serde_json::Value::String(s.clone()))))
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
    /// Rows of a target table that agentctl did not create: (legacy key, UUID). Children of
    /// these rows must point at the UUID they already have.
    async fn kept_rows(&self, target: &TableName) -> Result<Vec<(String, String)>, ToolError>;

    /// Rows of the target table created from this source table (all runs).
    async fn mapped_rows(&self, source: &TableName) -> Result<i64, ToolError>;
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

/// Reads rows, as PostgreSQL's text forms (`None` for NULL).
#[async_trait]
pub trait Rows: Send + Sync + 'static {
    /// Calls `each` for every row in key order; returns how many rows there were.
    async fn scan(&self, scan: &Scan, each: &mut (dyn for<'r> FnMut(&'r [Option<&'r str>]) + Send)) -> Result<u64, ToolError>;

    /// The next `limit` rows after `scan.after`, in key order.
    async fn page(&self, scan: &Scan, limit: usize) -> Result<Vec<Vec<Option<String>>>, ToolError> {
        let mut rows = Vec::with_capacity(limit.min(65_536));
        let limited = Scan { limit: Some(limit), ..scan.clone() };
        self.scan(&limited, &mut |r: &[Option<&str>]| rows.push(r.iter().map(|v| v.map(str::to_owned)).collect())).await?;
        Ok(rows)
    }
}
