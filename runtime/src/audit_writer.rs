//! The one actor that writes a run's audit trail.
//!
//! Agents hand it records without waiting (a cast), so auditing never sits on the data path; it
//! redacts, numbers and chains them in arrival order, and writes them in batches: when a batch
//! fills, on a short timer, on an explicit flush, and when it stops. A write that fails keeps the
//! batch and tries again on the next tick; stopping tries a few more times before giving up
//! loudly, so a clean shutdown or Ctrl-C loses nothing.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::audit::{AuditError, AuditEvent, AuditRecord, AuditSink};
use crate::ids::RunId;
use crate::redact::Redactor;

pub enum AuditMsg {
    Record(Box<AuditRecord>),
    Flush(RpcReplyPort<Result<(), AuditError>>),
    Tick,
}

pub struct AuditWriter;

pub struct AuditWriterArgs {
    pub run_id: RunId,
    pub sink: Arc<dyn AuditSink>,
    pub redactor: Redactor,
    /// How long a record may wait in memory before it is written.
    pub flush_every: Duration,
    /// How many records make a batch that is written at once.
    pub batch: usize,
}

pub struct AuditWriterState {
    run_id: RunId,
    sink: Arc<dyn AuditSink>,
    redactor: Redactor,
    batch: usize,
    next_seq: i64,
    prev_hash: String,
    pending: Vec<AuditEvent>,
    ticker: Option<JoinHandle<()>>,
}

impl AuditWriterState {
    async fn flush(&mut self) -> Result<(), AuditError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.sink.append(self.run_id, &self.pending).await?;
        self.pending.clear();
        Ok(())
    }
}

impl Actor for AuditWriter {
    type Msg = AuditMsg;
    type State = AuditWriterState;
    type Arguments = AuditWriterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<AuditMsg>,
        args: AuditWriterArgs,
    ) -> Result<AuditWriterState, ActorProcessingErr> {
        // A resumed run continues its own chain rather than starting a second one.
        let head = args.sink.head(args.run_id).await?;
        let ticker = myself.send_interval(args.flush_every, || AuditMsg::Tick);
        Ok(AuditWriterState {
            run_id: args.run_id,
            sink: args.sink,
            redactor: args.redactor,
            batch: args.batch.max(1),
            next_seq: head.event_count + 1,
            prev_hash: head.head_hash,
            pending: Vec::new(),
            ticker: Some(ticker),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<AuditMsg>,
        msg: AuditMsg,
        state: &mut AuditWriterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AuditMsg::Record(record) => {
                let mut record = *record;
                record.summary = state.redactor.text(&record.summary);
                record.detail = state.redactor.json(&record.detail);
                let event = AuditEvent::chain(
                    state.run_id,
                    state.next_seq,
                    &state.prev_hash,
                    Utc::now(),
                    record,
                );
                state.next_seq += 1;
                state.prev_hash = event.hash.clone();
                state.pending.push(event);
                if state.pending.len() >= state.batch {
                    if let Err(e) = state.flush().await {
                        tracing::warn!(
                            "{e}; {} audit events kept for the next attempt",
                            state.pending.len()
                        );
                    }
                }
            }
            AuditMsg::Tick => {
                if let Err(e) = state.flush().await {
                    tracing::warn!(
                        "{e}; {} audit events kept for the next attempt",
                        state.pending.len()
                    );
                }
            }
            AuditMsg::Flush(reply) => {
                let result = state.flush().await;
                let _ = reply.send(result);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<AuditMsg>,
        state: &mut AuditWriterState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = state.ticker.take() {
            t.abort();
        }
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=5 {
            match state.flush().await {
                Ok(()) => return Ok(()),
                Err(e) if attempt == 5 => {
                    tracing::error!(
                        "{e}; {} audit events of run {} could not be written",
                        state.pending.len(),
                        state.run_id
                    );
                    return Err(e.into());
                }
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        Ok(())
    }
}

/// A cheap, cloneable handle to a run's audit writer.
#[derive(Clone)]
pub struct Audit {
    writer: ActorRef<AuditMsg>,
}

impl Audit {
    pub fn new(writer: ActorRef<AuditMsg>) -> Audit {
        Audit { writer }
    }

    /// Queues a record. Never waits for the database.
    pub fn record(&self, record: AuditRecord) {
        if self.writer.cast(AuditMsg::Record(Box::new(record))).is_err() {
            tracing::error!("an audit record was produced after the audit writer stopped");
        }
    }

    /// Waits until everything recorded so far is stored.
    pub async fn flush(&self) -> Result<(), AuditError> {
        match ractor::call!(self.writer, AuditMsg::Flush) {
            Ok(result) => result,
            Err(_) => Err(AuditError::WriterGone),
        }
    }

    /// Stops the writer after it has written everything it holds.
    pub async fn close(self) {
        // Drain rather than stop: records still queued in the mailbox must be written too.
        let _ = self.writer.drain_and_wait(Some(Duration::from_secs(30))).await;
    }
}
