//! The mapping of one legacy table onto one modern table: which target column is fed from
//! what, through which transforms. Made by the data mapping agent (inferred, then overridden by
//! a mapping file), checked against the target schema before anything runs, and applied row by
//! row by the same code when predicting outcomes and when migrating.

mod file;
mod set;

pub use file::*;
pub use set::*;

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::TableName;

/// How a target column gets its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Feed {
    /// The row's own UUID, derived from its legacy key.
    Key,
    /// The legacy key itself (one column), or its parts joined with `|` (a composite key).
    LegacyKey,
    /// A source column, `column` or `joined_table.column`.
    Column { column: String },
    /// Source columns joined with a separator, NULLs skipped.
    Concat { columns: Vec<String>, separator: String },
    /// The UUID of the parent row the source columns point at, derived like the parent's key.
    Reference {
        columns: Vec<String>,
        parent: TableName,
        /// Set when a value can equal the parent's key yet be written otherwise (citext's case,
        /// numeric's scale, char's padding, a column's collation): the scan then reads the key
        /// of the parent row it equals, as that row is written ([`ParentKey`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent_key: Option<ParentKey>,
    },
    /// A generic reference (Django's content type and object id): the UUID of the row of the
    /// parent that the `by` column's value names, derived from `column` like that parent's key.
    Generic { column: String, by: String, parents: BTreeMap<String, TableName> },
    /// A fixed value.
    Constant { value: String },
    /// The source columns no other target column takes, as a JSON object.
    Metadata { columns: Vec<String> },
}

/// A step applied to a value; NULL passes through every step but `default`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Transform {
    Trim,
    Lower,
    Upper,
    /// An empty string becomes NULL.
    NullIfEmpty,
    /// Whole cents to a decimal amount: `12345` → `123.45`.
    Cents,
    /// `0`/`1` (or `f`/`t`, `false`/`true`) to a boolean.
    Bool,
    /// JSON text, checked to parse.
    Json,
    /// A timestamp without time zone, read as local time in `zone`.
    Timestamptz {
        zone: String,
    },
    /// A value looked up in a table (after the steps before it); a value not in it is rejected.
    Values {
        map: BTreeMap<String, String>,
    },
    /// NULL becomes this value.
    Default {
        value: String,
    },
    /// A Python script's `transform(value)`, run in the sandbox on the column's values as they
    /// are read (a batch of values per call), before every other step. The scan carries its
    /// answer in a column of its own ([`ScriptColumn::output`]): `=` and the value, or `!` and
    /// the error it raised. The code is part of the mapping, so the plan's hash changes with it.
    Script {
        /// Where the mapping file names it: `transforms/normalize_phone.py`.
        path: String,
        code: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnMapping {
    pub target: String,
    pub feed: Feed,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transforms: Vec<Transform>,
    /// Why, in plain words: "same name", "renamed in mappings/dispatch.toml", ...
    pub rationale: String,
}

/// The parent's key columns a reference is compared with, one a reference column, as its
/// foreign key compares them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentKey {
    pub columns: Vec<String>,
    /// The type a reference column is cast to before it is compared, where it differs from its
    /// key column's (varchar against char), without modifiers.
    pub casts: Vec<Option<String>>,
}

impl ParentKey {
    /// The scanned column that holds the parent's own text of the key column that `column` (a
    /// column of the reference) is compared with.
    pub fn output(&self, column: &str, parent: &TableName, i: usize) -> String {
        format!("{column} = {parent}.{}", self.columns[i])
    }
}

/// Another source table joined one-to-one by key (auth_user into dispatch_profile's rows).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    pub table: TableName,
    /// The column of the mapped table that holds the joined table's key.
    pub on: String,
    /// The joined table's key column.
    pub key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingSpec {
    pub source: TableName,
    pub target: TableName,
    /// The legacy key columns, in order.
    pub key: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub joins: Vec<Join>,
    /// Target columns in the target table's order (columns fed by their default are absent).
    pub columns: Vec<ColumnMapping>,
    /// Source columns that go nowhere (no target column, no metadata column to hold them), each
    /// named in the mapping file's `leave`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<String>,
    /// How differential migration keeps this entity in step.
    #[serde(default)]
    pub sync: SyncPolicy,
}

/// How `agentctl diff migrate` treats an entity: what a row deleted from the source does to
/// its target row, and who wins when a row changed on both sides since the last sync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncPolicy {
    #[serde(default)]
    pub delete: DeleteMode,
    #[serde(default)]
    pub conflicts: ConflictPolicy,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeleteMode {
    /// Sets the target row's `deleted_at`.
    #[default]
    Soft,
    /// Deletes the target row (refused while live rows still reference it).
    Hard,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictPolicy {
    /// The source's values are written; the target's are kept in the conflict record.
    #[default]
    SourceWins,
    /// The target row stays as it is; the source's values are kept in the conflict record.
    TargetWins,
    /// Nothing is written; the conflict waits for `agentctl conflict resolve`.
    Manual,
}

impl ConflictPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictPolicy::SourceWins => "source-wins",
            ConflictPolicy::TargetWins => "target-wins",
            ConflictPolicy::Manual => "manual",
        }
    }
}

impl DeleteMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DeleteMode::Soft => "soft",
            DeleteMode::Hard => "hard",
        }
    }
}

impl MappingSpec {
    /// The source tables whose keys this mapping turns into references: one per reference, and
    /// each parent of a generic reference.
    pub fn parents(&self) -> impl Iterator<Item = &TableName> {
        self.columns.iter().flat_map(|c| match &c.feed {
            Feed::Reference { parent, .. } => vec![parent],
            Feed::Generic { parents, .. } => parents.values().collect(),
            _ => Vec::new(),
        })
    }

    /// The script transforms: the source column each reads, and the script.
    pub fn scripts(&self) -> Vec<ScriptColumn> {
        let mut scripts = Vec::new();
        for c in &self.columns {
            for t in &c.transforms {
                if let (Transform::Script { path, code }, Feed::Column { column }) = (t, &c.feed) {
                    scripts.push(ScriptColumn {
                        column: column.clone(),
                        path: path.clone(),
                        code: code.clone(),
                    });
                }
            }
        }
        scripts
    }

    /// Every source column the mapping reads, qualified (`table.column`) when joined.
    pub fn source_columns(&self) -> Vec<String> {
        let mut cols: Vec<String> = self.key.clone();
        for c in &self.columns {
            let used: Vec<&String> = match &c.feed {
                Feed::Column { column } => vec![column],
                Feed::Concat { columns, .. }
                | Feed::Reference { columns, .. }
                | Feed::Metadata { columns } => columns.iter().collect(),
                Feed::Generic { column, by, .. } => vec![column, by],
                Feed::Key | Feed::LegacyKey | Feed::Constant { .. } => vec![],
            };
            for u in used {
                if !cols.contains(u) {
                    cols.push(u.clone());
                }
            }
            if let Feed::Reference { columns, parent, parent_key: Some(key) } = &c.feed {
                cols.extend(columns.iter().enumerate().map(|(i, c)| key.output(c, parent, i)));
            }
        }
        cols.extend(self.scripts().iter().map(ScriptColumn::output));
        cols
    }
}

/// A source column whose values a script transforms as they are read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptColumn {
    pub column: String,
    pub path: String,
    pub code: String,
}

impl ScriptColumn {
    /// The scanned column that holds the script's answer for `column`.
    pub fn output(&self) -> String {
        format!("{} -> {}", self.column, self.path)
    }
}

/// A script's answer for one value, read from its tagged text in the output column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScriptAnswer<'a> {
    /// `=value`
    Value(&'a str),
    /// `!error`: what the script raised.
    Raised(&'a str),
    /// Neither tag: not the driver's answer.
    Untagged,
}

impl ScriptAnswer<'_> {
    pub fn read(tagged: &str) -> ScriptAnswer<'_> {
        match (tagged.strip_prefix('='), tagged.strip_prefix('!')) {
            (Some(value), _) => ScriptAnswer::Value(value),
            (_, Some(error)) => ScriptAnswer::Raised(error),
            _ => ScriptAnswer::Untagged,
        }
    }
}

/// How row UUIDs are derived from legacy keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UuidLayout {
    /// RFC 9562 version 5: SHA-1 of namespace and name; random-looking order.
    V5,
    /// Version 8, time-ordered by legacy key: a table tag, then the key, then a hash; rows of
    /// one table sort in legacy key order, so a btree grows at its right edge.
    Ordered,
}

/// The UUIDs of one table's legacy rows: each a pure function of the project's namespace, the
/// source table and the legacy key, so a child's reference is computed rather than looked up,
/// and every run, resume and re-run gives the same UUIDs. What does not depend on the key is
/// computed once.
#[derive(Clone, Debug)]
pub struct KeyDeriver {
    layout: UuidLayout,
    namespace: uuid::Uuid,
    prefix: String,
    tag: u32,
}

impl KeyDeriver {
    pub fn new(layout: UuidLayout, namespace: uuid::Uuid, table: &TableName) -> KeyDeriver {
        let table_name = format!("{}.{}", table.schema, table.name);
        let tag = u32::from_be_bytes(
            digest(&namespace, table_name.as_bytes())[..4].try_into().expect("4 bytes"),
        );
        KeyDeriver { layout, namespace, prefix: format!("{table_name}:"), tag }
    }

    /// The first and last UUID this deriver can make, in the ordered layout: every one begins
    /// with the table's 32-bit tag, so a table's UUIDs are one range of its primary key, read
    /// through its index. v5 UUIDs share no range.
    pub fn range(&self) -> Option<(uuid::Uuid, uuid::Uuid)> {
        match self.layout {
            UuidLayout::Ordered => {
                let first = u128::from(self.tag) << 96;
                Some((
                    uuid::Uuid::from_u128(first),
                    uuid::Uuid::from_u128(first | (u128::MAX >> 32)),
                ))
            }
            UuidLayout::V5 => None,
        }
    }

    /// The UUID of a row whose legacy key is stored as text ([`key_text`], as `legacy_id`
    /// holds it): a row is agentctl's exactly when its UUID is this one.
    pub fn derive_stored(&self, legacy_key: &str) -> uuid::Uuid {
        let parts = split_key(legacy_key);
        let parts: Vec<&str> = parts.iter().map(|p| p.as_ref()).collect();
        self.derive_from(|write| write(legacy_key), &parts)
    }

    /// The UUID of the row with this legacy key: of the name `prefix` + [`key_text`].
    pub fn derive(&self, key: &[&str]) -> uuid::Uuid {
        self.derive_from(|write| write_key(key, write), key)
    }

    /// The UUID of the name `prefix` + what `name` writes, its order bits from `key`'s parts.
    fn derive_from(&self, name: impl FnOnce(&mut dyn FnMut(&str)), key: &[&str]) -> uuid::Uuid {
        match self.layout {
            UuidLayout::V5 => {
                let mut text = String::with_capacity(self.prefix.len() + 24);
                text.push_str(&self.prefix);
                name(&mut |piece| text.push_str(piece));
                uuid::Uuid::new_v5(&self.namespace, text.as_bytes())
            }
            UuidLayout::Ordered => {
                // The digest of the namespace and the name, fed piece by piece.
                use sha2::{Digest, Sha256};
                let mut h = Sha256::new();
                h.update(self.namespace.as_bytes());
                h.update(self.prefix.as_bytes());
                name(&mut |piece| h.update(piece.as_bytes()));
                ordered(self.tag, key, &h.finalize().into())
            }
        }
    }
}

/// A legacy key as one text, as `legacy_id` holds it: one part as it is; several joined by `|`,
/// a `|` or `\` inside a part written `\|` or `\\`, so that the keys ("a|b", "c") and ("a",
/// "b|c") stay two. A key whose parts hold neither is written as plain `a|b`.
pub fn key_text<S: AsRef<str>>(parts: &[S]) -> String {
    let mut out = String::new();
    write_key(parts, |piece| out.push_str(piece));
    out
}

/// Writes [`key_text`] of `parts` in pieces.
fn write_key<S: AsRef<str>>(parts: &[S], mut write: impl FnMut(&str)) {
    if let [one] = parts {
        return write(one.as_ref());
    }
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            write("|");
        }
        let mut rest = part.as_ref();
        while let Some(at) = rest.find(['|', '\\']) {
            write(&rest[..at]);
            write("\\");
            write(&rest[at..=at]);
            rest = &rest[at + 1..];
        }
        write(rest);
    }
}

/// The parts of a key written by [`key_text`], for the order bits of its UUID; borrowed from
/// `text` where it holds no escape (every key `derive_stored` reads back, as a rule). A one-part
/// key is not escaped, so one holding `|` reads as several parts here: only a text key such as
/// `5|6` (two integers) gets other order bits that way.
pub fn split_key(text: &str) -> Vec<Cow<'_, str>> {
    if !text.contains('\\') {
        return text.split('|').map(Cow::Borrowed).collect();
    }
    let mut parts = vec![String::new()];
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        let last = parts.last_mut().expect("one part at least");
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('|' | '\\')) => last.push(escaped),
                Some(other) => {
                    last.push('\\');
                    last.push(other);
                }
                None => last.push('\\'),
            },
            '|' => parts.push(String::new()),
            c => last.push(c),
        }
    }
    parts.into_iter().map(Cow::Owned).collect()
}

fn digest(namespace: &uuid::Uuid, text: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(namespace.as_bytes());
    h.update(text);
    h.finalize().into()
}

/// 122 free bits: a 32-bit table tag, a 64-bit order key, 26 bits of hash; laid into a
/// version 8 UUID around its version and variant bits, so byte order follows the free bits.
fn ordered(tag: u32, key: &[&str], full: &[u8; 32]) -> uuid::Uuid {
    // Integer keys (one, or two that fit 32 bits each) sort in key order; others by hash.
    let int = |k: &str| k.trim().parse::<i64>().ok();
    let in_u32 = |n: i64| (0..=u32::MAX as i64).contains(&n);
    let order: u64 = match key {
        [k] => int(k).map(|k| (k as u64) ^ (1 << 63)),
        [a, b] => match (int(a), int(b)) {
            (Some(a), Some(b)) if in_u32(a) && in_u32(b) => Some(((a as u64) << 32) | b as u64),
            _ => None,
        },
        _ => None,
    }
    .unwrap_or_else(|| u64::from_be_bytes(full[..8].try_into().expect("8 bytes")));
    let hash26 = u128::from(u32::from_be_bytes(full[8..12].try_into().expect("4 bytes")) >> 6);
    let v: u128 = (u128::from(tag) << 90) | (u128::from(order) << 26) | hash26;
    let hi48 = v >> 74;
    let mid12 = (v >> 62) & 0xFFF;
    let lo62 = v & ((1u128 << 62) - 1);
    let bits = (hi48 << 80) | (0x8u128 << 76) | (mid12 << 64) | (0b10u128 << 62) | lo62;
    uuid::Uuid::from_u128(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_uuids_are_stable_and_ordered_keys_sort_by_key() {
        let ns = uuid::Uuid::from_u128(0x1234);
        let t = TableName::new("public", "dispatch_task");
        let derive = |layout, table: &TableName, key: &str| {
            KeyDeriver::new(layout, ns, table).derive(&[key])
        };
        let a = derive(UuidLayout::Ordered, &t, "9");
        let b = derive(UuidLayout::Ordered, &t, "10");
        let c = derive(UuidLayout::Ordered, &t, "100000");
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(a.get_version_num(), 8);
        assert_eq!(a, derive(UuidLayout::Ordered, &t, "9"));
        assert_ne!(a, derive(UuidLayout::Ordered, &TableName::new("public", "dispatch_case"), "9"));
        let v5 = derive(UuidLayout::V5, &t, "9");
        assert_eq!(v5.get_version_num(), 5);
        assert_eq!(v5, derive(UuidLayout::V5, &t, "9"));
        let (first, last) = KeyDeriver::new(UuidLayout::Ordered, ns, &t)
            .range()
            .expect("ordered UUIDs share a range");
        assert!([a, b, c].iter().all(|u| (first..=last).contains(u)), "{first}..{last} {a}");
        // The range is exactly the UUIDs that begin with the table's tag.
        let tag = &first.to_string()[..8];
        assert!(last.to_string().starts_with(tag) && a.to_string().starts_with(tag));
        let before = uuid::Uuid::from_u128(first.as_u128() - 1);
        let after = uuid::Uuid::from_u128(last.as_u128() + 1);
        assert!(!before.to_string().starts_with(tag) && !after.to_string().starts_with(tag));
        assert_eq!(KeyDeriver::new(UuidLayout::V5, ns, &t).range(), None);
        let pair = TableName::new("public", "dispatch_role_permission");
        let d = KeyDeriver::new(UuidLayout::Ordered, ns, &pair);
        assert_eq!(d.derive_stored("3|7"), d.derive(&["3", "7"]));
    }

    /// Rows already in a target carry these UUIDs: a change to the derivation would make a
    /// resumed run or a sync see them as someone else's. (Values computed independently.)
    #[test]
    fn derived_uuids_do_not_change_between_versions() {
        let ns = uuid::Uuid::from_u128(0x1234);
        let derive = |table: &str, key: &[&str]| {
            KeyDeriver::new(UuidLayout::Ordered, ns, &TableName::new("public", table))
                .derive(key)
                .to_string()
        };
        assert_eq!(derive("dispatch_task", &["9"]), "23aef083-8000-8000-8000-0000274ee463");
        assert_eq!(derive("dispatch_task", &["-5"]), "23aef083-7fff-8fff-bfff-ffffeeec6d32");
        assert_eq!(
            derive("dispatch_role_permission", &["3", "7"]),
            "7076501b-0000-8000-8c00-00001cb3a52f"
        );
        assert_eq!(derive("dispatch_code", &["AB-1"]), "28fb0be1-056a-84bd-aef2-b88bb798f5b6");
    }

    /// Composite keys whose parts hold the separator stay apart: in `legacy_id`, and in their
    /// UUIDs.
    #[test]
    fn a_separator_inside_a_key_part_is_escaped() {
        let keys: [&[&str]; 5] =
            [&["x|y", "z"], &["x", "y|z"], &["x\\", "|z"], &["x\\|", "z"], &["3", "7"]];
        let texts: Vec<String> = keys.iter().map(|k| key_text(k)).collect();
        assert_eq!(texts, ["x\\|y|z", "x|y\\|z", "x\\\\|\\|z", "x\\\\\\||z", "3|7"]);
        let d = KeyDeriver::new(
            UuidLayout::Ordered,
            uuid::Uuid::from_u128(0x1234),
            &TableName::new("public", "pair"),
        );
        let ids: std::collections::HashSet<uuid::Uuid> = keys.iter().map(|k| d.derive(k)).collect();
        assert_eq!(ids.len(), keys.len(), "every key its own UUID");
        for (key, text) in keys.iter().zip(&texts) {
            assert_eq!(split_key(text), *key, "{text}");
            assert_eq!(d.derive_stored(text), d.derive(key), "{text}");
        }
        assert_eq!(key_text(&["a|b\\c"]), "a|b\\c", "one part is not escaped");
    }
}
