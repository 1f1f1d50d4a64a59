//! What a mapping resolves to: every entity's [`MappingSpec`] with the key derivation
//! ([`Keys`]), the source tables that are no entity and why ([`Unmapped`]), the problems that
//! stop a mapping ([`Problem`]), and each custom transform tried on sample rows ([`Preview`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::file::GenericRule;
use super::{MappingSpec, UuidLayout};
use crate::domain::TableName;

/// What the key derivation needs: the project's namespace and the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keys {
    pub namespace: Uuid,
    pub layout: UuidLayout,
}

/// Why a source table is not an entity of its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Unmapped {
    /// The mapping file says to leave it out, for this reason.
    Skipped { reason: String },
    /// The mapping file joins its rows into another table's.
    Merged,
    /// No target table takes it: a table the goal asks for then stops the plan.
    NoTarget,
    /// Its mapping onto `target` has problems: a plan that needs the table stops, naming them;
    /// one that does not goes on without it.
    Problems { target: Option<TableName>, problems: Vec<Problem> },
}

impl Unmapped {
    /// Whether the operator decided it (the mapping file), rather than agentctl failing to find
    /// a place for the rows.
    pub fn decided(&self) -> bool {
        !matches!(self, Unmapped::NoTarget | Unmapped::Problems { .. })
    }
}

impl std::fmt::Display for Unmapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unmapped::Skipped { reason } => write!(f, "skipped: {reason}"),
            Unmapped::Merged => f.write_str("merged into the rows of the table that joins it"),
            Unmapped::NoTarget => f.write_str("no target table has a matching name"),
            Unmapped::Problems { problems, .. } => {
                let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
                write!(f, "its mapping has problems: {}", lines.join("; "))
            }
        }
    }
}

/// Every entity's mapping, plus what the key derivation needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MappingSet {
    pub keys: Keys,
    pub specs: Vec<MappingSpec>,
    /// Source tables that map to nothing, with the reason.
    pub unmapped: Vec<(TableName, Unmapped)>,
    /// Named sets of source tables, from the mapping file.
    pub groups: BTreeMap<String, Vec<String>>,
    /// Each custom transform tried on sample rows in the sandbox, by source table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previews: Vec<(TableName, Preview)>,
    /// The references the mapping file declares, by entity: column -> parent table.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub declared: BTreeMap<String, BTreeMap<String, String>>,
    /// The generic references the mapping file declares, by entity, each with its parents.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub generic: BTreeMap<String, BTreeMap<String, GenericRule>>,
}

impl MappingSet {
    pub fn spec(&self, source: &TableName) -> Option<&MappingSpec> {
        self.specs.iter().find(|s| &s.source == source)
    }

    /// The target table of a source table: its mapping's, or the one a mapping with problems
    /// was for.
    pub fn target_of(&self, source: &TableName) -> Option<&TableName> {
        self.spec(source).map(|s| &s.target).or_else(|| {
            self.unmapped.iter().find(|(t, _)| t == source).and_then(|(_, why)| match why {
                Unmapped::Problems { target, .. } => target.as_ref(),
                _ => None,
            })
        })
    }

    /// The mapping problems of the tables among `tables` whose mapping has any.
    pub fn problems_of<'a>(&'a self, tables: &'a [TableName]) -> impl Iterator<Item = &'a Problem> {
        self.unmapped.iter().filter(|(t, _)| tables.contains(t)).flat_map(|(_, why)| match why {
            Unmapped::Problems { problems, .. } => problems.as_slice(),
            _ => &[],
        })
    }
}

/// One problem with a mapping, naming where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub table: String,
    /// The source table being mapped, when the problem is in one entity's mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub column: Option<String>,
    pub message: String,
    /// A NOT NULL column without a default that nothing in the source feeds: a problem a
    /// proposal of the model may answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unfed: bool,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.column {
            Some(c) => write!(f, "{}.{c}: {}", self.table, self.message),
            None => write!(f, "{}: {}", self.table, self.message),
        }
    }
}

/// A script transform tried on sample rows: each value before and after (or why the script
/// rejects it).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Preview {
    pub column: String,
    pub path: String,
    pub samples: Vec<Sample>,
}

/// One value before a script and after it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    pub before: Option<String>,
    pub after: Answered,
}

/// What a script made of a sampled value.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Answered {
    Value(Option<String>),
    /// The row is rejected, with the script's reason.
    Rejected(String),
}

/// The key two spellings of one entity share: `dispatch_doctor`, `Doctors` and `doctor` all
/// become `doctor`.
pub fn entity_key(name: &str) -> String {
    let n = name.trim().to_lowercase().replace(['-', ' '], "_");
    let n = n.strip_prefix("dispatch_").unwrap_or(&n);
    singular(n)
}

fn singular(word: &str) -> String {
    if let Some(stem) = word.strip_suffix("ies") {
        format!("{stem}y")
    } else if let Some(stem) = word.strip_suffix("sses") {
        format!("{stem}ss")
    } else if word.ends_with("ss") || word.ends_with("us") {
        word.to_owned()
    } else if let Some(stem) = word.strip_suffix('s') {
        stem.to_owned()
    } else {
        word.to_owned()
    }
}
