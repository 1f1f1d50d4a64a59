//! The one error type of the libraries, and the kinds by which agentctl decides what to do
//! about a failure: retry it, start the work again, stop, or tell the operator their request
//! was wrong. Each of those decisions is made in one place, from the kind, never from the text.

use serde::{Deserialize, Serialize};

/// What kind of failure it is, which decides what happens next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Passing: a lost connection, a server shutting down or starting, a serialization
    /// failure. The same request may go through if it is tried again.
    Transient,
    /// The system's fault: a full disk, a missing privilege or object, a program that failed.
    /// The work stops with the cause; no row is blamed for it.
    System,
    /// An entity's accounting does not balance after its load: starting it again cannot mend
    /// that, so the run stops and says so.
    Unbalanced,
    /// What the operator asked or wrote is wrong: a goal, a mapping, a flag, a file.
    BadInput,
    /// Something the request needs is not configured: a target database, the sandbox.
    NotConfigured,
}

impl ErrorKind {
    /// Whether starting the work again from its last checkpoint may mend the failure: not
    /// when the request itself is wrong or the accounting does not balance.
    pub fn worth_restarting(self) -> bool {
        matches!(self, ErrorKind::Transient | ErrorKind::System)
    }

    /// Whether the request, not the work, is at fault (the command exits as for bad usage).
    pub fn is_usage(self) -> bool {
        matches!(self, ErrorKind::BadInput | ErrorKind::NotConfigured)
    }
}

/// A failure, already phrased for an operator (what was being done, where, and why), with
/// its [`ErrorKind`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ToolError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ToolError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ToolError {
        ToolError { kind, message: message.into() }
    }

    pub fn system(message: impl Into<String>) -> ToolError {
        ToolError::new(ErrorKind::System, message)
    }

    pub fn transient(message: impl Into<String>) -> ToolError {
        ToolError::new(ErrorKind::Transient, message)
    }

    pub fn bad_input(message: impl Into<String>) -> ToolError {
        ToolError::new(ErrorKind::BadInput, message)
    }

    pub fn not_configured(message: impl Into<String>) -> ToolError {
        ToolError::new(ErrorKind::NotConfigured, message)
    }

    pub fn unbalanced(message: impl Into<String>) -> ToolError {
        ToolError::new(ErrorKind::Unbalanced, message)
    }

    /// The same failure, said in the context of a larger task: `{context}: {message}`.
    pub fn context(self, context: impl std::fmt::Display) -> ToolError {
        ToolError { kind: self.kind, message: format!("{context}: {}", self.message) }
    }
}

/// What the operator wrote is wrong, with where and why: the error of the parsers (mapping
/// files, check expressions, schedules, fault profiles). It becomes a [`ToolError`] of kind
/// [`ErrorKind::BadInput`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

impl From<BadInput> for ToolError {
    fn from(e: BadInput) -> ToolError {
        ToolError::bad_input(e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_wrong_request_exits_as_bad_usage_and_only_faults_of_the_work_restart() {
        use ErrorKind::*;
        let kinds = [Transient, System, Unbalanced, BadInput, NotConfigured];
        let usage: Vec<_> = kinds.iter().filter(|k| k.is_usage()).collect();
        let restart: Vec<_> = kinds.iter().filter(|k| k.worth_restarting()).collect();
        assert_eq!(usage, [&BadInput, &NotConfigured]);
        assert_eq!(restart, [&Transient, &System]);
    }

    #[test]
    fn context_keeps_the_kind() {
        let e = ToolError::transient("the connection was closed").context("writing a batch");
        assert_eq!(e.kind, ErrorKind::Transient);
        assert_eq!(e.to_string(), "writing a batch: the connection was closed");
    }
}
