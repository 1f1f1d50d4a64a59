//! The message envelope and the [`Courier`] that delivers requests between agents.
//!
//! Every request travels in an [`Envelope`] carrying the run id, a per-run sequence number, the
//! sender, the receiver and a correlation id that its reply shares. The courier is the only way
//! agents ask each other for things: it stamps the envelope, records the request and the reply
//! in the audit trail, bounds the wait with a timeout, and, when the receiver crashes before
//! answering, waits for the supervisor to restart it and asks again. Requests are therefore
//! idempotent by contract.

use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::audit::{AuditRecord, EventKind};
use crate::context::{to_json, RunContext};
use crate::error::{ErrorKind, ToolError};
use crate::events::RunEvent;
use crate::ids::{AgentName, RunId};
use crate::supervise::{Slot, SlotError};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageMeta {
    pub run_id: RunId,
    pub seq: u64,
    pub sender: AgentName,
    pub receiver: AgentName,
    pub correlation_id: Uuid,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub meta: MessageMeta,
    pub body: T,
}

/// An agent's answer when it could not do what was asked; crosses agents, so it is plain data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    pub agent: AgentName,
    pub message: String,
    /// What kind of failure it was: the command's exit code is decided by it.
    pub kind: ErrorKind,
}

impl AgentError {
    /// A failure of the work (the system's fault).
    pub fn new(agent: AgentName, message: impl Into<String>) -> AgentError {
        AgentError { agent, message: message.into(), kind: ErrorKind::System }
    }

    /// An error in what was asked, rather than in doing it.
    pub fn usage(agent: AgentName, message: impl Into<String>) -> AgentError {
        AgentError { agent, message: message.into(), kind: ErrorKind::BadInput }
    }

    /// The agent's answer for a failure of its work, kind kept.
    pub fn of(agent: AgentName, e: ToolError) -> AgentError {
        AgentError { agent, message: e.message, kind: e.kind }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the {} did not answer `{what}` within {}s", .agent.label(), .after.as_secs_f64())]
    Timeout { agent: AgentName, what: &'static str, after: Duration },
    #[error(transparent)]
    Unavailable(#[from] SlotError),
    #[error("the {} kept failing while handling `{what}` ({attempts} attempts)", .agent.label())]
    Crashed { agent: AgentName, what: &'static str, attempts: u32 },
}

/// The most times one request is sent again after its receiver crashed. The restart policy
/// normally ends the loop sooner by marking the agent down.
const MAX_REDELIVERIES: u32 = 8;

/// Sends requests on behalf of one agent.
#[derive(Clone)]
pub struct Courier {
    ctx: Arc<RunContext>,
    from: AgentName,
}

impl Courier {
    pub fn new(ctx: Arc<RunContext>, from: AgentName) -> Courier {
        Courier { ctx, from }
    }

    pub fn ctx(&self) -> &Arc<RunContext> {
        &self.ctx
    }

    /// Asks the agent in `slot` for something and waits, at most the run's request timeout,
    /// for the answer.
    ///
    /// `what` names the request in the trail ("analyze", "plan"); `build` wraps the envelope
    /// and the reply port in the receiver's message type.
    pub async fn ask<M, Req, Resp>(
        &self,
        slot: &Slot<M>,
        what: &'static str,
        body: Req,
        build: impl Fn(Envelope<Req>, RpcReplyPort<Resp>) -> M,
    ) -> Result<Resp, CallError>
    where
        M: ractor::Message,
        Req: Serialize + Clone + Send + 'static,
        Resp: Serialize + Send + 'static,
    {
        self.ask_within(slot, what, body, build, self.ctx.request_timeout).await
    }

    /// [`Courier::ask`] with its own bound, for a request that itself waits on several others
    /// (a phase of the orchestrator) and so must outlast each of theirs.
    pub async fn ask_within<M, Req, Resp>(
        &self,
        slot: &Slot<M>,
        what: &'static str,
        body: Req,
        build: impl Fn(Envelope<Req>, RpcReplyPort<Resp>) -> M,
        timeout: Duration,
    ) -> Result<Resp, CallError>
    where
        M: ractor::Message,
        Req: Serialize + Clone + Send + 'static,
        Resp: Serialize + Send + 'static,
    {
        let to = slot.agent();
        let correlation = Uuid::new_v4();
        let mut failed = None;
        for attempt in 1..=MAX_REDELIVERIES {
            let target = slot.ready(timeout, failed.take()).await?;
            let meta = self.ctx.next_meta(self.from, to, correlation);
            self.ctx.audit.record(
                AuditRecord::new(
                    self.from,
                    EventKind::Message,
                    format!("{} asked the {} to {what}", self.from.label(), to.label()),
                    json!({"meta": meta, "request": what, "body": to_json(&body), "attempt": attempt}),
                )
                .correlated(correlation),
            );
            self.ctx.events.publish(RunEvent::Message {
                run_id: self.ctx.run_id,
                from: self.from,
                to,
                what: what.to_owned(),
            });
            let envelope = Envelope { meta, body: body.clone() };
            match target.call(|port| build(envelope, port), Some(timeout)).await {
                Ok(CallResult::Success(resp)) => {
                    self.ctx.audit.record(
                        AuditRecord::new(
                            to,
                            EventKind::Message,
                            format!("the {} answered `{what}`", to.label()),
                            json!({"reply_to": correlation, "response": to_json(&resp)}),
                        )
                        .correlated(correlation),
                    );
                    return Ok(resp);
                }
                Ok(CallResult::Timeout) => {
                    let err = CallError::Timeout { agent: to, what, after: timeout };
                    self.ctx.audit.record(
                        AuditRecord::new(
                            self.from,
                            EventKind::Error,
                            err.to_string(),
                            json!({"request": what}),
                        )
                        .correlated(correlation),
                    );
                    return Err(err);
                }
                // The receiver died (or was already dead) before answering: ask its successor.
                Ok(CallResult::SenderError) | Err(_) => {
                    self.ctx.audit.record(
                        AuditRecord::new(
                            self.from,
                            EventKind::Error,
                            format!(
                                "the {} stopped before answering `{what}`; asking again once \
                                it is restarted",
                                to.label()
                            ),
                            json!({"request": what, "attempt": attempt}),
                        )
                        .correlated(correlation),
                    );
                    failed = Some(target.get_id());
                }
            }
        }
        Err(CallError::Crashed { agent: to, what, attempts: MAX_REDELIVERIES })
    }
}
