//! The traits through which agents reach the world. `tools` implements them over PostgreSQL
//! (and later the LLM and the code interpreter); agents only ever see these, so their logic runs
//! in tests without I/O, and the tests that do need I/O use the real implementations.

use async_trait::async_trait;

use crate::domain::SchemaReport;

/// A tool's failure, already phrased for an operator: what was being done, where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(pub String);

/// Reads a database's structure from its catalog.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    async fn introspect(&self) -> Result<SchemaReport, ToolError>;
}
