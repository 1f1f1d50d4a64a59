//! The audit trail: what every agent did and why, append-only and hash-chained per run.
//!
//! Events are built here (redacted, numbered, chained) and persisted by an [`AuditSink`] that
//! lives in `tools` (the PostgreSQL control schema). Verification is a pure function over the
//! stored events, so `agentctl audit verify` and the tests share one definition of "intact".
//!
//! Each event's hash covers its own fields and its predecessor's hash. Editing a field, deleting
//! an event or swapping two events breaks the chain at the first affected event; removing events
//! from the end is caught against the head (count and last hash) the writer stores with the run.
//! Someone who can rewrite both the events and the head can rebuild a consistent chain; the head
//! hash that `audit verify` prints is what an auditor keeps outside the database to rule that out.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::ids::{AgentName, RunId};

/// The hash an empty chain ends in: the `prev_hash` of a run's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A run started, changed phase or ended.
    Run,
    /// A message between agents (request or reply).
    Message,
    /// A decision, with its rationale in plain words.
    Decision,
    /// A tool call: arguments, result summary, duration.
    Tool,
    /// An LLM call: model, prompt, response, token counts.
    Llm,
    /// A batch of rows written.
    Batch,
    /// A failure: an agent that crashed, a request that timed out.
    Error,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::Run,
        EventKind::Message,
        EventKind::Decision,
        EventKind::Tool,
        EventKind::Llm,
        EventKind::Batch,
        EventKind::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Run => "run",
            EventKind::Message => "message",
            EventKind::Decision => "decision",
            EventKind::Tool => "tool",
            EventKind::Llm => "llm",
            EventKind::Batch => "batch",
            EventKind::Error => "error",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s.trim()).ok_or_else(|| {
            let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            format!("unknown event kind `{s}`; expected one of {}", names.join(", "))
        })
    }
}

/// What a caller hands the audit writer; it becomes an [`AuditEvent`] once numbered and chained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub agent: AgentName,
    pub kind: EventKind,
    pub correlation_id: Option<Uuid>,
    /// One line in plain words: "planned 3 entities in 2 waves".
    pub summary: String,
    /// Structured detail: the message payload, the tool arguments, the rationale.
    pub detail: Value,
}

impl AuditRecord {
    pub fn new(
        agent: AgentName,
        kind: EventKind,
        summary: impl Into<String>,
        detail: Value,
    ) -> AuditRecord {
        AuditRecord { agent, kind, correlation_id: None, summary: summary.into(), detail }
    }

    pub fn correlated(mut self, id: Uuid) -> AuditRecord {
        self.correlation_id = Some(id);
        self
    }
}

/// One stored event of the trail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub run_id: RunId,
    /// 1, 2, 3, ... within the run, without gaps.
    pub seq: i64,
    /// Truncated to microseconds, the precision PostgreSQL stores, so the hash survives a
    /// round trip through the database.
    pub at: DateTime<Utc>,
    pub agent: String,
    pub kind: String,
    pub correlation_id: Option<Uuid>,
    pub summary: String,
    /// Canonical JSON text (keys sorted), exactly the bytes that were hashed.
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditEvent {
    /// Numbers, timestamps and chains a record that has already been redacted.
    pub fn chain(
        run_id: RunId,
        seq: i64,
        prev_hash: &str,
        at: DateTime<Utc>,
        record: AuditRecord,
    ) -> AuditEvent {
        let mut event = AuditEvent {
            run_id,
            seq,
            at: at.trunc_subsecs(6),
            agent: record.agent.as_str().to_owned(),
            kind: record.kind.as_str().to_owned(),
            correlation_id: record.correlation_id,
            summary: record.summary,
            // serde_json's default map is ordered by key, so this text is canonical.
            detail: record.detail.to_string(),
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
        };
        event.hash = event.compute_hash();
        event
    }

    /// SHA-256 over every field but `hash`.
    pub fn compute_hash(&self) -> String {
        hash_fields(&[
            b"agentctl-audit-v1",
            self.run_id.0.as_bytes(),
            &self.seq.to_le_bytes(),
            &self.at.timestamp_micros().to_le_bytes(),
            self.agent.as_bytes(),
            self.kind.as_bytes(),
            self.correlation_id.map(|c| c.into_bytes()).unwrap_or_default().as_slice(),
            self.summary.as_bytes(),
            self.detail.as_bytes(),
            self.prev_hash.as_bytes(),
        ])
    }
}

/// SHA-256 over fields, each length-prefixed so that no two lists of fields encode alike.
fn hash_fields(fields: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for field in fields {
        h.update((field.len() as u64).to_le_bytes());
        h.update(field);
    }
    hex::encode(h.finalize())
}

/// What the writer stores beside the events: how many there are and the last hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub event_count: i64,
    pub head_hash: String,
}

impl ChainHead {
    pub fn empty() -> ChainHead {
        ChainHead { event_count: 0, head_hash: GENESIS.to_owned() }
    }
}

/// The verdict of `audit verify` for one run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub run_id: RunId,
    pub events: i64,
    pub head_hash: String,
    /// The first event that does not check out, or `None` when the chain is intact.
    pub first_bad: Option<ChainBreak>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    /// The sequence number where the chain first fails (for a truncated tail, the first missing
    /// one).
    pub seq: i64,
    pub reason: String,
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event #{}: {}", self.seq, self.reason)
    }
}

/// Checks a run's events, in the order of their sequence numbers, against each other and
/// against the stored head.
pub fn verify_chain(run_id: RunId, events: &[AuditEvent], head: &ChainHead) -> Verification {
    let mut prev = GENESIS.to_owned();
    let mut first_bad = None;
    for (i, e) in events.iter().enumerate() {
        let expected_seq = i as i64 + 1;
        let problem = if e.run_id != run_id {
            Some(format!("belongs to run {}", e.run_id))
        } else if e.seq != expected_seq {
            Some(format!(
                "expected event #{expected_seq} here; events #{expected_seq} to #{} are missing",
                e.seq - 1
            ))
        } else if e.prev_hash != prev {
            Some(
                "its link to the previous event is broken (an event before it was changed, \
                removed or moved)"
                    .to_owned(),
            )
        } else if e.compute_hash() != e.hash {
            Some("its contents do not match its hash (the event was edited)".to_owned())
        } else {
            None
        };
        if let Some(reason) = problem {
            first_bad = Some(ChainBreak { seq: expected_seq.min(e.seq), reason });
            break;
        }
        prev = e.hash.clone();
    }
    let count = events.len() as i64;
    if first_bad.is_none() {
        if count < head.event_count {
            first_bad = Some(ChainBreak {
                seq: count + 1,
                reason: format!(
                    "the run recorded {} events but only {count} remain (events from #{} on were \
                        deleted)",
                    head.event_count,
                    count + 1
                ),
            });
        } else if count > head.event_count || prev != head.head_hash {
            first_bad = Some(ChainBreak {
                seq: head.event_count.min(count).max(1),
                reason: "the chain does not end where the run's recorded head says it does"
                    .to_owned(),
            });
        }
    }
    Verification { run_id, events: count, head_hash: prev, first_bad }
}

/// One entry of the target's run ledger: a run started, or ended at a head of its chain. The
/// entries are chained like events, across runs, so that a run removed whole, or a run's trail
/// rewritten after it ended, no longer matches the ledger; and the ledger's head, kept outside
/// the database, rules out rewriting the ledger too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub seq: i64,
    pub run_id: RunId,
    /// `started` or `ended`.
    pub entry: String,
    /// For `ended`: the run's chain as it ended (for `started`: empty).
    pub event_count: i64,
    pub head_hash: String,
    pub prev_hash: String,
    pub hash: String,
}

impl LedgerEntry {
    /// SHA-256 over every field but `hash`.
    pub fn compute_hash(&self) -> String {
        hash_fields(&[
            b"agentctl-ledger-v1",
            &self.seq.to_le_bytes(),
            self.run_id.0.as_bytes(),
            self.entry.as_bytes(),
            &self.event_count.to_le_bytes(),
            self.head_hash.as_bytes(),
            self.prev_hash.as_bytes(),
        ])
    }
}

/// Checks the ledger's entries against each other: the first that does not check out.
pub fn verify_ledger(entries: &[LedgerEntry]) -> Option<ChainBreak> {
    let mut prev = GENESIS;
    for (i, e) in entries.iter().enumerate() {
        let expected = i as i64 + 1;
        let reason = if e.seq != expected {
            format!(
                "expected ledger entry #{expected} here; entries #{expected} to #{} are missing",
                e.seq - 1
            )
        } else if e.prev_hash != prev {
            "its link to the entry before is broken (an entry before it was changed or removed)"
                .to_owned()
        } else if e.compute_hash() != e.hash {
            "its contents do not match its hash (the entry was edited)".to_owned()
        } else {
            prev = &e.hash;
            continue;
        };
        return Some(ChainBreak { seq: expected.min(e.seq), reason });
    }
    None
}

/// Where audit events are persisted. Implemented over PostgreSQL in `tools`.
#[async_trait]
pub trait AuditSink: Send + Sync + 'static {
    /// Appends events (in sequence order, continuing the run's chain) and moves the run's head,
    /// atomically: either all of them are stored or none.
    async fn append(&self, run_id: RunId, events: &[AuditEvent]) -> Result<(), AuditError>;

    /// The head of a run's chain as stored, to continue it (a resumed run) or verify it.
    async fn head(&self, run_id: RunId) -> Result<ChainHead, AuditError>;
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("while writing the audit trail: {0}")]
    Store(String),
    #[error("the audit writer is not running")]
    WriterGone,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ledger(n: i64) -> Vec<LedgerEntry> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let mut e = LedgerEntry {
                    seq,
                    run_id: RunId(Uuid::from_u128(seq as u128 / 2)),
                    entry: if seq % 2 == 1 { "started" } else { "ended" }.into(),
                    event_count: if seq % 2 == 1 { 0 } else { seq * 10 },
                    head_hash: format!("{seq:064}"),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                e.hash = e.compute_hash();
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    #[test]
    fn the_ledger_finds_an_edited_a_removed_and_a_rehashed_entry() {
        assert_eq!(verify_ledger(&ledger(6)), None);
        let mut edited = ledger(6);
        edited[3].event_count -= 1;
        assert_eq!(
            verify_ledger(&edited).map(|b| (b.seq, b.reason.contains("edited"))),
            Some((4, true))
        );
        let mut removed = ledger(6);
        removed.remove(2);
        assert_eq!(verify_ledger(&removed).map(|b| b.seq), Some(3));
        // An entry rehashed after an edit breaks the link of the one after it.
        let mut rehashed = ledger(6);
        rehashed[1].head_hash = "f".repeat(64);
        rehashed[1].hash = rehashed[1].compute_hash();
        assert_eq!(
            verify_ledger(&rehashed).map(|b| (b.seq, b.reason.contains("link"))),
            Some((3, true))
        );
    }

    fn chain(n: i64) -> (RunId, Vec<AuditEvent>, ChainHead) {
        let run = RunId(Uuid::from_u128(7));
        let t0 = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        let mut prev = GENESIS.to_owned();
        let mut events = Vec::new();
        for seq in 1..=n {
            let rec = AuditRecord::new(
                AgentName::Planning,
                EventKind::Decision,
                format!("step {seq}"),
                json!({"n": seq}),
            );
            let e =
                AuditEvent::chain(run, seq, &prev, t0 + chrono::Duration::milliseconds(seq), rec);
            prev = e.hash.clone();
            events.push(e);
        }
        (run, events, ChainHead { event_count: n, head_hash: prev })
    }

    #[test]
    fn an_intact_chain_verifies() {
        let (run, events, head) = chain(5);
        let v = verify_chain(run, &events, &head);
        assert_eq!(v.first_bad, None);
        assert_eq!(v.head_hash, head.head_hash);
    }

    #[test]
    fn an_edited_event_is_named() {
        let (run, mut events, head) = chain(5);
        events[2].summary = "step 3, edited".into();
        let bad = verify_chain(run, &events, &head).first_bad.unwrap();
        assert_eq!(bad.seq, 3);
        assert!(bad.reason.contains("edited"), "{bad}");
    }

    #[test]
    fn a_deleted_event_is_named() {
        let (run, mut events, head) = chain(5);
        events.remove(1);
        let bad = verify_chain(run, &events, &head).first_bad.unwrap();
        assert_eq!(bad.seq, 2);
        assert!(bad.reason.contains("missing"), "{bad}");
    }

    #[test]
    fn swapped_events_are_named() {
        let (run, mut events, head) = chain(5);
        // Swap the contents of #2 and #3 but keep the sequence numbers in place, as an UPDATE
        // would.
        let (a, b) = (events[1].clone(), events[2].clone());
        events[1] = AuditEvent { seq: 2, ..b };
        events[2] = AuditEvent { seq: 3, ..a };
        let bad = verify_chain(run, &events, &head).first_bad.unwrap();
        assert_eq!(bad.seq, 2);
    }

    #[test]
    fn a_truncated_tail_is_caught_against_the_head() {
        let (run, mut events, head) = chain(5);
        events.truncate(3);
        let bad = verify_chain(run, &events, &head).first_bad.unwrap();
        assert_eq!(bad.seq, 4);
        assert!(bad.reason.contains("deleted"), "{bad}");
    }

    #[test]
    fn the_hash_covers_the_timestamp_at_microsecond_precision() {
        let (_, events, _) = chain(1);
        let mut e = events[0].clone();
        assert_eq!(e.at.timestamp_subsec_nanos() % 1000, 0);
        e.at += chrono::Duration::microseconds(1);
        assert_ne!(e.compute_hash(), e.hash);
    }
}
