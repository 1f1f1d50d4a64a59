//! What the differential sync finds and applies: how a target row stands against its source
//! row and the baseline, the changes an analysis found, and what applying a batch did.

use serde::{Deserialize, Serialize};

use crate::domain::TableName;
use crate::ids::RunId;

/// How a target row stands against its source row and what agentctl last wrote there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diffed {
    /// A row with this legacy key is in the target.
    pub present: bool,
    /// Its UUID is the one agentctl derives.
    pub ours: bool,
    /// Its `deleted_at` is set.
    pub deleted: bool,
    /// Some mapped column differs from the expected value (typed comparison).
    pub differs: bool,
    /// When it differs: the hash of the target's values and of the expected ones.
    pub target_hash: Option<i64>,
    pub expected_hash: Option<i64>,
    /// What agentctl last wrote (asked when the row differs, is absent or is soft-deleted).
    pub baseline: Option<i64>,
}

/// What the analyses of an entity learnt of its `updated_at`: the latest analysis' watermark
/// and trust, and how long ago the latest full analysis ran.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncMark {
    pub watermark: Option<String>,
    pub trusted: Option<bool>,
    pub full_age_seconds: Option<f64>,
}

/// What a source row's change asks of its target row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// New in the source.
    Insert,
    /// Changed in the source; the target row is as agentctl last wrote it.
    Update,
    /// Gone from the source.
    Delete,
    /// Changed on both sides since the last sync.
    Conflict,
    /// Changed in the target only: left as it is, reported.
    TargetChanged,
    /// The mapping rejects the source row as it is now.
    Rejected,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Insert => "insert",
            Change::Update => "update",
            Change::Delete => "delete",
            Change::Conflict => "conflict",
            Change::TargetChanged => "target_changed",
            Change::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Change> {
        [
            Change::Insert,
            Change::Update,
            Change::Delete,
            Change::Conflict,
            Change::TargetChanged,
            Change::Rejected,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// One source row out of step with its target row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Differential {
    pub legacy_key: String,
    pub change: Change,
    pub target_id: Option<String>,
    /// The mapped row (insert, update, conflict), in the analysis' column order.
    pub values: Option<Vec<Option<String>>>,
    pub target_hash: Option<i64>,
    pub expected_hash: Option<i64>,
    /// Why the mapping rejects it (rejected).
    pub reason: Option<String>,
}

/// What analysing one entity found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntityDiff {
    /// This analysis of this entity (a run may analyse more than once).
    pub analysis_id: RunId,
    /// The run that analysed.
    pub run_id: RunId,
    /// `full` (every source row) or `fast` (the rows whose `updated_at` is at or after the
    /// watermark, and every key for the deletes).
    pub mode: String,
    /// The latest `updated_at` read, where the table has a trusted one.
    pub watermark: Option<String>,
    /// Whether `updated_at` moved with every change this analysis found (`None`: no such
    /// column, or nothing to check it against yet).
    pub trusted: Option<bool>,
    pub source: TableName,
    pub target: TableName,
    /// Target columns with their types, in the order of each differential's values.
    pub columns: Vec<(String, String)>,
    pub source_rows: i64,
    pub in_step: i64,
    pub inserts: i64,
    pub updates: i64,
    pub deletes: i64,
    pub conflicts: i64,
    pub target_changed: i64,
    pub rejected: i64,
    pub seconds: f64,
}

impl EntityDiff {
    /// Rows an apply would touch or record.
    pub fn out_of_step(&self) -> i64 {
        self.inserts + self.updates + self.deletes + self.conflicts + self.rejected
    }

    pub fn count(&mut self, change: Change) {
        match change {
            Change::Insert => self.inserts += 1,
            Change::Update => self.updates += 1,
            Change::Delete => self.deletes += 1,
            Change::Conflict => self.conflicts += 1,
            Change::TargetChanged => self.target_changed += 1,
            Change::Rejected => self.rejected += 1,
        }
    }
}

/// A batch of an analysis to apply (rows of one entity; deletes come in batches of their own).
#[derive(Clone, Debug)]
pub struct DiffBatch {
    pub run_id: RunId,
    pub analysis: EntityDiff,
    pub legacy_column: usize,
    /// Columns (by index) that reference another target table's `id`, checked first: each
    /// value must be the `id` of a row of one of the tables named (one for a foreign key; every
    /// parent of a generic reference, whose UUIDs no two tables share).
    pub references: Vec<(usize, Vec<TableName>)>,
    /// The columns the baseline covers (by index).
    pub hashed: Vec<usize>,
    pub policy: crate::mapping::SyncPolicy,
    /// The target table has `deleted_at`.
    pub soft_delete: bool,
    /// Writes a unique or exclusion rule refused before the sync's deletes, tried again after
    /// them: their last try in this sync. Before, such a refusal is only for now.
    pub after_deletes: bool,
    pub rows: Vec<Differential>,
}

/// What applying one batch did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DiffApplied {
    pub inserted: i64,
    pub updated: i64,
    pub deleted: i64,
    /// Conflicts met: resolved by policy or held.
    pub conflicted: i64,
    /// Conflicts held for an operator (`manual`), deletes refused (live children, no
    /// `deleted_at`), and rows whose unique value a row deleted from the source still holds in
    /// the target (soft delete).
    pub held: i64,
    pub rejected: i64,
    /// Rows whose target changed after the analysis: left for the next one.
    pub stale: i64,
    /// One line per row held or rejected, the first few.
    pub notes: Vec<String>,
}

impl DiffApplied {
    /// Keeps a line about a row held or rejected, up to the first 20.
    pub fn note(&mut self, line: String) {
        if self.notes.len() < 20 {
            self.notes.push(line);
        }
    }

    pub fn add(&mut self, o: &DiffApplied) {
        self.inserted += o.inserted;
        self.updated += o.updated;
        self.deleted += o.deleted;
        self.conflicted += o.conflicted;
        self.held += o.held;
        self.rejected += o.rejected;
        self.stale += o.stale;
        for n in &o.notes {
            self.note(n.clone());
        }
    }
}
