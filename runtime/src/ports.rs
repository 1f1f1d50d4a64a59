//! The traits through which agents reach the world. `tools` implements them over PostgreSQL
//! (and later the LLM and the code interpreter); agents only ever see these, so their logic runs
//! in tests without I/O, and the tests that do need I/O use the real implementations.

use async_trait::async_trait;

use crate::domain::{SchemaReport, TableName};
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
/// these one-to-one joins, in legacy key order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    pub table: TableName,
    pub columns: Vec<String>,
    pub joins: Vec<Join>,
    pub key: Vec<String>,
}

/// Reads rows, as PostgreSQL's text forms (`None` for NULL).
#[async_trait]
pub trait Rows: Send + Sync + 'static {
    /// Calls `each` for every row in key order; returns how many rows there were.
    async fn scan(&self, scan: &Scan, each: &mut (dyn for<'r> FnMut(&'r [Option<&'r str>]) + Send)) -> Result<u64, ToolError>;
}
