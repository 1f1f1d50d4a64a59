//! The progress and event stream of a run, which the CLI and the REPL subscribe to.
//!
//! A tokio broadcast channel: publishing never blocks an agent, and a slow subscriber loses old
//! events (it is told how many) rather than holding the run back. The audit trail, not this
//! stream, is the durable record.

use serde::Serialize;
use tokio::sync::broadcast;

use crate::ids::{AgentName, RunId};

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    Started {
        run_id: RunId,
        goal: String,
    },
    Phase {
        run_id: RunId,
        phase: String,
    },
    /// An agent asked another for something.
    Message {
        run_id: RunId,
        from: AgentName,
        to: AgentName,
        what: String,
    },
    AgentFailed {
        run_id: RunId,
        agent: AgentName,
        reason: String,
        restart: Option<u32>,
    },
    Progress {
        run_id: RunId,
        entity: String,
        rows_done: u64,
        rows_total: Option<u64>,
    },
    Finished {
        run_id: RunId,
        outcome: String,
    },
}

#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<RunEvent>,
}

impl EventBus {
    pub fn new(capacity: usize) -> EventBus {
        let (tx, _) = broadcast::channel(capacity.max(16));
        EventBus { tx }
    }

    pub fn publish(&self, event: RunEvent) {
        // No subscriber is normal (a script with --format json); the event is simply not shown.
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<RunEvent> {
        self.tx.subscribe()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new(1024)
    }
}
