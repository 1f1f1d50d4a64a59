//! How a command ends: the one-line message an operator sees and the exit code scripts test.
//! 0 success, 1 failure, 2 bad usage or configuration, 3 validation failed, 130 interrupted.

use std::fmt;

use runtime::error::{ErrorKind, ToolError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub code: i32,
    pub message: String,
}

impl Exit {
    pub const FAILED: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const VALIDATION: i32 = 3;
    pub const INTERRUPTED: i32 = 130;

    fn new(code: i32, message: impl fmt::Display) -> Exit {
        // One line, whatever the source error looked like.
        let message = message.to_string().lines().map(str::trim).collect::<Vec<_>>().join(" ");
        Exit { code, message }
    }

    pub fn failed(message: impl fmt::Display) -> Exit {
        Exit::new(Exit::FAILED, message)
    }

    /// Bad usage or configuration, including a database that is missing or unreachable.
    pub fn config(message: impl fmt::Display) -> Exit {
        Exit::new(Exit::USAGE, message)
    }

    /// The exit for an error of this kind: bad usage or configuration when the request itself
    /// was wrong, else a failure. The one place an error's kind becomes an exit code.
    pub fn of_kind(kind: ErrorKind, message: impl fmt::Display) -> Exit {
        if kind.is_usage() {
            Exit::config(message)
        } else {
            Exit::failed(message)
        }
    }

    /// An agent's error, by its kind.
    pub fn agent(e: runtime::envelope::AgentError) -> Exit {
        Exit::of_kind(e.kind, e.message)
    }

    pub fn interrupted(message: impl fmt::Display) -> Exit {
        Exit::new(Exit::INTERRUPTED, message)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

impl From<ToolError> for Exit {
    fn from(e: ToolError) -> Exit {
        Exit::of_kind(e.kind, e.message)
    }
}
