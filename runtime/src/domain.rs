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
    /// The type's own name, without modifiers: `varchar`, `numeric`, `doctor_status`.
    pub type_name: String,
    /// What kind of type it is, and for a domain or an array what it is built on.
    pub type_kind: TypeKind,
    /// For `varchar(n)` and `char(n)`: n.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<i32>,
    pub nullable: bool,
    pub default: Option<String>,
    /// `always` or `by_default` for an identity column; a serial shows as its `nextval` default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// What the planner's statistics say of the values (after ANALYZE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<ColumnStats>,
}

/// A column's profile from `pg_stats`: sampled, so cheap at any size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColumnStats {
    /// Share of NULLs (0 to 1).
    pub null_fraction: f64,
    /// Distinct values: a count, or (negative) minus the share of rows that are distinct.
    pub distinct: f64,
    /// Average stored width in bytes.
    pub avg_width: i32,
    /// The lowest and highest values seen, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
}

impl Eq for ColumnStats {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TypeKind {
    Base,
    Enum,
    Domain { base: String },
    Array { element: String },
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignKey {
    pub name: String,
    pub columns: Vec<String>,
    pub references: TableName,
    pub referenced_columns: Vec<String>,
    /// `no action`, `restrict`, `cascade`, `set null`, `set default`.
    pub on_delete: String,
    pub deferrable: bool,
    /// False for a key added `NOT VALID`: existing rows were never checked against it.
    pub validated: bool,
}

/// A uniqueness rule: a constraint, or a unique index (possibly on an expression).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unique {
    pub name: String,
    /// The key's parts: column names, or expressions such as `lower(email)`.
    pub parts: Vec<String>,
    /// A partial index's condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicate: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    /// As `pg_get_constraintdef` prints it, without the leading `CHECK`.
    pub expression: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub name: String,
    pub definition: String,
    pub unique: bool,
    pub primary: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub name: TableName,
    /// `table`, or `partitioned` for a partitioned parent (its partitions are listed).
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<TableName>,
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
    pub unique: Vec<Unique>,
    pub foreign_keys: Vec<ForeignKey>,
    pub checks: Vec<Check>,
    pub indexes: Vec<Index>,
    pub triggers: Vec<String>,
    /// The planner's estimate (`pg_class.reltuples`); 0 for a table never analyzed.
    pub estimated_rows: i64,
    /// Counted with `count(*)` when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_rows: Option<i64>,
    /// Average width of a row in bytes, from the planner's statistics (0 if unknown).
    pub avg_row_bytes: i64,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The best row count known: exact if counted, else the estimate.
    pub fn rows(&self) -> i64 {
        self.exact_rows.unwrap_or(self.estimated_rows)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    pub name: String,
    pub base: String,
    pub not_null: bool,
    pub checks: Vec<Check>,
}

/// What the schema analysis agent found in one database.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaReport {
    /// `host:port/database`.
    pub database: String,
    pub tables: Vec<Table>,
    /// Enum types and their labels, in order.
    pub enums: BTreeMap<String, Vec<String>>,
    pub domains: Vec<Domain>,
}

impl SchemaReport {
    pub fn table(&self, name: &TableName) -> Option<&Table> {
        self.tables.iter().find(|t| &t.name == name)
    }

    /// A table by its bare name (any schema), or by `schema.name`.
    pub fn find(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name.name == name || format!("{}.{}", t.name.schema, t.name.name) == name)
    }

    pub fn domain(&self, name: &str) -> Option<&Domain> {
        self.domains.iter().find(|d| d.name == name)
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

/// Rows that will not make it, for one reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectReason {
    /// The rule, to group by: `check:orders_total_check`, `unique:offers_doctor_id_product_id_key`.
    pub rule: String,
    /// The reason in plain words, as the first such row had it.
    pub reason: String,
    pub count: i64,
    /// A few legacy keys of such rows.
    pub examples: Vec<String>,
}

/// What a migration of an entity is expected to do, from reading every source row through the
/// mapping and the target's rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forecast {
    pub rows: i64,
    pub migrate: i64,
    pub reject: i64,
    pub reasons: Vec<RejectReason>,
    /// Rules that could not be checked ahead (the database alone will judge them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchecked: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedEntity {
    pub table: TableName,
    /// The modern table it becomes.
    pub target: Option<TableName>,
    pub inclusion: Inclusion,
    pub estimated_rows: i64,
    /// Rows per batch, chosen from the row width.
    pub batch_size: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<Forecast>,
    /// Foreign keys filled in a second pass because they close a cycle or point at the table
    /// itself: the rows go in with these columns empty, then the references are set.
    pub deferred_foreign_keys: Vec<String>,
    /// The custom transform scripts the entity runs, as `path sha256`: part of the plan (and
    /// its hash), so an approval does not carry over to an edited script.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scripts: Vec<String>,
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
    /// changes in any way that matters gets a different hash and needs a new approval. The
    /// server's statistics (a table's estimated rows, and the batch size chosen from its row
    /// width) are left out: they change when autovacuum analyzes a table, which changes
    /// nothing the plan does, and must not void an approval between `plan` and `run`.
    pub fn hash(&self) -> String {
        let waves: Vec<Vec<serde_json::Value>> = self
            .waves
            .iter()
            .map(|wave| {
                wave.iter()
                    .map(|e| {
                        let mut v = serde_json::to_value(e).expect("plan types always serialize");
                        if let Some(fields) = v.as_object_mut() {
                            fields.remove("estimated_rows");
                            fields.remove("batch_size");
                        }
                        v
                    })
                    .collect()
            })
            .collect();
        // The fields of each entity are written in one order (a JSON object's keys sorted).
        let text = serde_json::to_string(&(&self.goal, &waves)).expect("plan types always serialize");
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    /// Rows the plan expects to move: the forecast's count where there is one, else the
    /// planner's estimate.
    pub fn estimated_rows(&self) -> i64 {
        self.entities().map(|e| e.forecast.as_ref().map_or(e.estimated_rows, |f| f.rows)).sum()
    }

    /// Rows the forecasts expect to migrate.
    pub fn expected_migrated(&self) -> i64 {
        self.entities().filter_map(|e| e.forecast.as_ref()).map(|f| f.migrate).sum()
    }

    /// Rows the forecasts expect the target to refuse.
    pub fn expected_rejected(&self) -> i64 {
        self.entities().filter_map(|e| e.forecast.as_ref()).map(|f| f.reject).sum()
    }

    /// The order to undo the plan in: children before parents.
    pub fn rollback_order(&self) -> Vec<&TableName> {
        self.waves.iter().rev().flat_map(|w| w.iter().rev().map(|e| &e.table)).collect()
    }
}
