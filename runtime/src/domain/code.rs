//! A request to run code in the sandbox, and what the code did.

use serde::{Deserialize, Serialize};

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
