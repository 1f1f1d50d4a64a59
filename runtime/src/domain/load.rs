//! What a load reads and writes: the scan of a source table, a batch of mapped rows with
//! its rejects and checkpoint, what writing it did, and a rollback's entities.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::TableName;
use crate::ids::RunId;
use crate::mapping::{Feed, Join, MappingSpec, ParentKey, ScriptColumn};
use crate::text_rows::TextRows;

/// What to read of a source table: these columns (`column`, or `joined_table.column`), with
/// these one-to-one joins, in legacy key order, after `after` (a resumed entity's last key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    pub table: TableName,
    pub columns: Vec<String>,
    pub joins: Vec<Join>,
    pub key: Vec<String>,
    pub after: Option<Vec<String>>,
    /// At most this many rows.
    pub limit: Option<usize>,
    /// Columns whose values a script transforms as they are read (see [`ScriptColumn`]).
    pub scripts: Vec<ScriptColumn>,
    /// Only rows whose timestamp column (of the mapped table) is at or after this value, less
    /// [`CHANGED_SINCE_MARGIN`]: the rows changed since a watermark.
    pub changed_since: Option<(String, String)>,
    /// References read as the key of the parent row they equal, each column also as
    /// [`ParentKey::output`].
    pub parent_keys: Vec<KeyedReference>,
    /// When not empty, only the rows of these keys (each the parts of one, as `key` names them).
    pub only: Vec<Vec<String>>,
}

/// A reference whose values can equal its parent's key yet be written otherwise: the scan
/// reads, beside each of its columns, the parent's own text of the key it equals (or the
/// column's own text when no parent row equals it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyedReference {
    pub columns: Vec<String>,
    pub parent: TableName,
    pub key: ParentKey,
}

/// How far before a watermark `Scan::changed_since` reads: a write whose transaction committed
/// after a later one stamped its row is still seen.
pub const CHANGED_SINCE_MARGIN: &str = "5 minutes";

impl Scan {
    /// Every row of `columns` of `table`, in `key` order: nothing joined, no script.
    pub fn plain(table: TableName, columns: Vec<String>, key: Vec<String>) -> Scan {
        Scan {
            table,
            columns,
            joins: Vec::new(),
            key,
            after: None,
            limit: None,
            scripts: Vec::new(),
            changed_since: None,
            parent_keys: Vec::new(),
            only: Vec::new(),
        }
    }

    /// Every row an entity's mapping reads, in key order, scripts applied.
    pub fn entity(spec: &MappingSpec) -> Scan {
        Scan {
            table: spec.source.clone(),
            columns: spec.source_columns(),
            joins: spec.joins.clone(),
            key: spec.key.clone(),
            after: None,
            limit: None,
            scripts: spec.scripts(),
            changed_since: None,
            only: Vec::new(),
            parent_keys: spec
                .columns
                .iter()
                .filter_map(|c| match &c.feed {
                    Feed::Reference { columns, parent, parent_key: Some(key) } => {
                        Some(KeyedReference {
                            columns: columns.clone(),
                            parent: parent.clone(),
                            key: key.clone(),
                        })
                    }
                    _ => None,
                })
                .collect(),
        }
    }
}

/// A row that will not be written, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RejectedRow {
    pub legacy_key: String,
    pub column: Option<String>,
    pub rule: String,
    pub reason: String,
    /// The source row, column by column.
    pub row: serde_json::Value,
}

/// ` + N kept from before agentctl`, the term an accounting line (`read = migrated + kept +
/// rejected`) gives rows kept from before agentctl; nothing when none were.
pub fn kept_term(kept: i64) -> String {
    match kept {
        0 => String::new(),
        n => format!(" + {n} kept from before agentctl"),
    }
}

/// An entity's position and accounting, as committed with its last batch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub last_key: Vec<String>,
    pub rows_read: i64,
    /// Rows present in the target, the kept ones included.
    pub migrated: i64,
    /// Of the migrated rows, those that were in the target before agentctl, under a UUID of
    /// their own: kept as they are, never written by agentctl.
    pub kept: i64,
    pub rejected: i64,
    pub batches: i64,
}

/// The keys of a table set aside for its load ([`crate::ports::ConstraintStore::suspend_keys`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeysAside {
    /// The primary key on `id`: no row of the table can be present before the batch that
    /// writes it, so nothing looks one up.
    pub primary: bool,
    /// The unique constraint on `legacy_id`.
    pub legacy: bool,
}

/// Every `id` of a parent table, by table.
pub type ParentIds = std::collections::HashMap<TableName, UuidSet>;

/// A column of a batch whose values must each be the `id` of a row of `parent` in the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReferenceCheck {
    pub column: usize,
    pub parent: TableName,
    /// The rows (by index) it covers: `None`, every row (a foreign key's column); else the rows
    /// whose generic reference names `parent`.
    pub rows: Option<Vec<usize>>,
}

/// A set of UUIDs hashed by their own bits ([`UuidHasher`]): a load looks each reference of
/// every row up in its parent's ids (7M lookups at scale 1.0), 17 ns a lookup with std's
/// SipHash, 5 ns with this (a set of 2,400, bench/RESULTS.md).
pub type UuidSet = std::collections::HashSet<uuid::Uuid, std::hash::BuildHasherDefault<UuidHasher>>;

/// Hashes a UUID's 16 bytes with MurmurHash3's finalizer, each bit of them reaching both ends
/// of the hash (the bucket, and the tag a table probes with): a few multiplies and shifts
/// against SipHash's rounds. UUIDs are already spread (derived ones by SHA-256, others random
/// or in sequence); these are the operator's own rows, not input chosen against the hash, so a
/// keyed hash buys nothing here.
#[derive(Clone, Copy, Debug, Default)]
pub struct UuidHasher(u64);

impl UuidHasher {
    /// MurmurHash3's 64-bit finalizer: a bijection that spreads each bit over all of them.
    fn mix(mut x: u64) -> u64 {
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
}

impl std::hash::Hasher for UuidHasher {
    fn write(&mut self, bytes: &[u8]) {
        // A UUID is written whole, as its 16 bytes; anything else 16 bytes at a time.
        for chunk in bytes.chunks(16) {
            let mut block = [0u8; 16];
            block[..chunk.len()].copy_from_slice(chunk);
            let v = u128::from_le_bytes(block);
            self.0 = Self::mix(v as u64 ^ Self::mix(self.0 ^ (v >> 64) as u64));
        }
    }

    /// The length written before a UUID's bytes: mixed in with the bytes that follow.
    fn write_usize(&mut self, n: usize) {
        self.0 ^= n as u64;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// One batch of mapped rows, written atomically with its rejects, records and checkpoint.
#[derive(Clone, Debug)]
pub struct Batch {
    pub run_id: RunId,
    pub source: TableName,
    pub target: TableName,
    /// Target columns, with the type each value is cast to (`format_type` text).
    pub columns: Vec<(String, String)>,
    /// The mapped rows, one value a target column.
    pub rows: TextRows,
    /// The column that holds the row's UUID.
    pub id_column: usize,
    /// The source page the rows were mapped from (columns named by `source_columns`), kept to
    /// record a row the target refuses; turned into JSON only then.
    pub page: TextRows,
    /// Per mapped row: its row in `page`.
    pub page_rows: Vec<usize>,
    pub source_columns: Vec<String>,
    /// The legacy key's columns in `page`.
    pub key_columns: Vec<usize>,
    /// Rows judged unfit before writing.
    pub rejected: Vec<RejectedRow>,
    /// Second-pass references: (child id, column, parent id).
    pub deferred: Vec<(String, String, String)>,
    /// The references checked before inserting: each names a column and the target table
    /// whose `id` its values must be.
    pub references: Vec<ReferenceCheck>,
    /// Parent tables read whole when the entity's load began: a reference to one of them is
    /// checked against these ids instead of asked of the server every batch.
    pub known_parents: Arc<ParentIds>,
    /// The columns (by index, in order) whose hash the batch records in the load baseline
    /// with the rows it writes, in its own transaction; empty when the entity's baseline is
    /// recorded once its load ends.
    pub baseline: Vec<usize>,
    /// With a baseline recorded by the batch: the fingerprint of its source `page` under the
    /// mapping that read it ([`TextRows::fingerprint`]), recorded with it so that a validation
    /// reading the page again unchanged can prove it by the record.
    pub page_hash: Option<i64>,
    /// The money columns (by index) whose totals over the rows written, in cents, the record
    /// keeps with the page's fingerprint.
    pub money: Vec<usize>,
    /// The checkpoint before this batch, and the last key and rows read with it.
    pub before: Checkpoint,
    pub last_key: Vec<String>,
    pub rows_read: i64,
}

impl Batch {
    /// The columns (name, type) whose hash the batch records in the load baseline, in order.
    pub fn baseline_columns(&self) -> Vec<(String, String)> {
        self.baseline.iter().map(|&i| self.columns[i].clone()).collect()
    }

    /// Mapped row `seq`'s source row as the JSON object `rejected_rows` keeps.
    pub fn source_json(&self, seq: usize) -> serde_json::Value {
        row_json(&self.source_columns, self.page.row(self.page_rows[seq]))
    }

    /// Mapped row `seq`'s legacy key as `legacy_id` holds it (composite parts joined by `|`).
    pub fn legacy_key(&self, seq: usize) -> String {
        legacy_key(&self.page, self.page_rows[seq], &self.key_columns)
    }
}

/// The parts of the legacy key of row `row` of `page` (a NULL part is empty): where a keyset
/// read resumes after that row.
pub fn key_parts(page: &TextRows, row: usize, key_columns: &[usize]) -> Vec<String> {
    key_columns.iter().map(|&c| page.get(row, c).unwrap_or("").to_owned()).collect()
}

/// Whether a `legacy_id` of this type (`format_type` text) holds integers: its keys are then
/// compared by range and kept as integers in the load baseline.
pub fn integer_key(legacy_type: &str) -> bool {
    matches!(legacy_type, "smallint" | "integer" | "bigint")
}

/// The legacy key of row `row` of `page` ([`crate::mapping::key_text`]; a NULL part is empty).
pub fn legacy_key(page: &TextRows, row: usize, key_columns: &[usize]) -> String {
    match key_columns {
        [one] => page.get(row, *one).unwrap_or("").to_owned(),
        _ => {
            let parts: Vec<&str> =
                key_columns.iter().map(|&c| page.get(row, c).unwrap_or("")).collect();
            crate::mapping::key_text(&parts)
        }
    }
}

/// Column names and values as a JSON object (NULL as null).
pub fn row_json<'a>(
    columns: &[String],
    row: impl IntoIterator<Item = Option<&'a str>>,
) -> serde_json::Value {
    serde_json::Value::Object(
        columns
            .iter()
            .zip(row)
            .map(|(c, v)| {
                (
                    c.clone(),
                    v.map_or(serde_json::Value::Null, |s| serde_json::Value::String(s.to_owned())),
                )
            })
            .collect(),
    )
}

/// What a batch write did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Written {
    pub inserted: i64,
    /// Rows whose legacy key was already in the target (an earlier run or a resume).
    pub present: i64,
    /// Of the present rows, those that were in the target before agentctl.
    pub kept: i64,
    /// Rows the target refused, found by splitting the batch.
    pub refused: Vec<RejectedRow>,
    pub checkpoint: Checkpoint,
    /// Transient failures retried before it went through.
    pub retries: u32,
}

/// One entity to roll back.
#[derive(Clone, Debug)]
pub struct RollbackEntity {
    pub source: TableName,
    pub target: TableName,
    pub deriver: crate::mapping::KeyDeriver,
}

/// What rolling back one entity did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolledBack {
    pub source: TableName,
    pub target: TableName,
    pub deleted: i64,
    /// Rows left because agentctl did not create them.
    pub kept: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn uuids_in_sequence_spread_over_buckets_and_tags() {
        let hasher = std::hash::BuildHasherDefault::<UuidHasher>::default();
        // UUIDs counting up in their low bits, and in their high bits (an ordered layout's key).
        for shift in [0u32, 64, 96] {
            let hashes: Vec<u64> =
                (0..4096u128).map(|i| hasher.hash_one(uuid::Uuid::from_u128(i << shift))).collect();
            let buckets: std::collections::HashSet<u64> =
                hashes.iter().map(|h| h & 0xfff).collect();
            let tags: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
            // 4,096 random hashes fill about 2,590 of 4,096 buckets, and all 128 tags.
            assert!(buckets.len() > 2_400, "shift {shift}: {} buckets", buckets.len());
            assert_eq!(tags.len(), 128, "shift {shift}");
        }
        let set: UuidSet = (0..1000u128).map(uuid::Uuid::from_u128).collect();
        assert!(set.contains(&uuid::Uuid::from_u128(999)));
        assert!(!set.contains(&uuid::Uuid::from_u128(1000)));
    }
}
