//! The typed payloads that pass between agents. Plain serde structs in one place, so the audit
//! trail records them verbatim and every agent agrees on their shape. They carry schema facts,
//! keys and counts, never row contents.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `schema.table`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> TableName {
        TableName { schema: schema.into(), name: name.into() }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.schema == "public" {
            f.write_str(&self.name)
        } else {
            write!(f, "{}.{}", self.schema, self.name)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    /// As PostgreSQL formats it: `character varying(120)`, `numeric(12,2)`, `uuid`.
    pub data_type: String,
    pub nullable: bool,
    pub default: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignKey {
    pub name: String,
    pub columns: Vec<String>,
    pub references: TableName,
    pub referenced_columns: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub name: TableName,
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
    pub foreign_keys: Vec<ForeignKey>,
    /// The planner's estimate (`pg_class.reltuples`); 0 for a table never analyzed.
    pub estimated_rows: i64,
}

/// What the schema analysis agent found in one database.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaReport {
    /// `host:port/database`.
    pub database: String,
    pub tables: Vec<Table>,
}

impl SchemaReport {
    pub fn table(&self, name: &TableName) -> Option<&Table> {
        self.tables.iter().find(|t| &t.name == name)
    }
}

/// Why an entity is part of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Inclusion {
    /// The operator asked for it.
    Requested,
    /// Rows of these requested (or required) entities reference it.
    RequiredBy { entities: Vec<TableName> },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedEntity {
    pub table: TableName,
    pub inclusion: Inclusion,
    pub estimated_rows: i64,
    /// Foreign keys filled in a second pass because they close a cycle or point at the table
    /// itself: the rows go in with these columns empty, then the references are set.
    pub deferred_foreign_keys: Vec<String>,
}

/// An ordered plan. Entities of one wave do not depend on each other; every wave depends only
/// on earlier ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationPlan {
    pub goal: String,
    pub waves: Vec<Vec<PlannedEntity>>,
    /// The reasons behind the order, in plain words, one per decision.
    pub rationale: Vec<String>,
}

impl MigrationPlan {
    pub fn entities(&self) -> impl Iterator<Item = &PlannedEntity> {
        self.waves.iter().flatten()
    }

    /// A stable fingerprint of what the plan will do. An approval is tied to it: a plan that
    /// changes in any way that matters gets a different hash and needs a new approval.
    pub fn hash(&self) -> String {
        // serde_json writes struct fields in declaration order, so this text is stable.
        let text = serde_json::to_string(&(&self.goal, &self.waves)).expect("plan types always serialize");
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    /// Rows the plan expects to move, from the planner's estimates.
    pub fn estimated_rows(&self) -> i64 {
        self.entities().map(|e| e.estimated_rows).sum()
    }

    /// How many entities each wave holds, keyed by wave number (1-based).
    pub fn wave_sizes(&self) -> BTreeMap<usize, usize> {
        self.waves.iter().enumerate().map(|(i, w)| (i + 1, w.len())).collect()
    }
}
