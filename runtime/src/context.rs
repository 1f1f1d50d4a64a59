//! What every agent of a run shares: the run's id, its message counter, its audit trail and its
//! event stream. Immutable but for the counter, so it travels as an `Arc`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::audit::{AuditRecord, EventKind};
use crate::audit_writer::Audit;
use crate::envelope::MessageMeta;
use crate::events::EventBus;
use crate::ids::{AgentName, RunId};

pub struct RunContext {
    pub run_id: RunId,
    pub audit: Audit,
    pub events: EventBus,
    /// How long one request to an agent may take before the caller gives up with an error.
    pub request_timeout: Duration,
    seq: AtomicU64,
}

impl RunContext {
    pub fn new(
        run_id: RunId,
        audit: Audit,
        events: EventBus,
        request_timeout: Duration,
    ) -> RunContext {
        RunContext { run_id, audit, events, request_timeout, seq: AtomicU64::new(0) }
    }

    pub fn next_meta(
        &self,
        sender: AgentName,
        receiver: AgentName,
        correlation_id: Uuid,
    ) -> MessageMeta {
        MessageMeta {
            run_id: self.run_id,
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            sender,
            receiver,
            correlation_id,
        }
    }

    /// Records a decision with the rationale an operator reads.
    pub fn decision(
        &self,
        agent: AgentName,
        summary: impl Into<String>,
        rationale: impl Into<String>,
        detail: impl Serialize,
    ) {
        self.audit.record(AuditRecord::new(
            agent,
            EventKind::Decision,
            summary,
            json!({"rationale": rationale.into(), "detail": to_json(detail)}),
        ));
    }

    /// Records a tool call that has finished.
    pub fn tool_call(
        &self,
        agent: AgentName,
        tool: &str,
        args: impl Serialize,
        result: Result<String, &crate::error::ToolError>,
        started: Instant,
    ) {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let (ok, summary) = match &result {
            Ok(s) => (true, s.clone()),
            Err(e) => (false, e.message.clone()),
        };
        self.audit.record(AuditRecord::new(
            agent,
            EventKind::Tool,
            format!("{tool}: {summary}"),
            json!({"tool": tool, "args": to_json(args), "ok": ok, "result": summary, "duration_ms": (ms * 1000.0).round() / 1000.0}),
        ));
    }
}

pub(crate) fn to_json(value: impl Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_else(|e| json!({"unserializable": e.to_string()}))
}
