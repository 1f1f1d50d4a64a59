//! The typed payloads that pass between agents. Plain serde structs in one place, so the audit
//! trail records them verbatim and every agent agrees on their shape. Those of this file carry
//! schema facts, keys and counts, never row contents; the payloads of the ports, by role, are in
//! the submodules (`load`, `verify`, `sync`, `llm`, `code`) and re-exported here.

mod code;
mod llm;
mod load;
mod sync;
mod verify;

pub use code::*;
pub use llm::*;
pub use load::*;
pub use sync::*;
pub use verify::*;

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

    /// `schema.name`, `public` too (which [`fmt::Display`] leaves out).
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
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
    /// For a stored generated column, its expression: computed by the target, never written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated: Option<String>,
    /// The column's collation where it is not its type's default, quoted for SQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collation: Option<String>,
    /// `COMMENT ON COLUMN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
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
    /// `INITIALLY DEFERRED`: checked at commit unless a transaction says otherwise.
    #[serde(default)]
    pub deferred: bool,
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
    /// A constraint's, as `pg_get_constraintdef` prints it (`UNIQUE NULLS NOT DISTINCT (a, b)
    /// DEFERRABLE`); empty for a unique index no constraint owns.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub definition: String,
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
    /// The index of a primary key, unique or exclusion constraint.
    #[serde(default)]
    pub constraint: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partitioning {
    /// As `pg_get_partkeydef` prints it: `RANGE (paid_on)`.
    pub key: String,
    /// The key's columns; empty when a part of it is an expression.
    pub columns: Vec<String>,
    /// Every partition, each after the partition it belongs to.
    pub partitions: Vec<Partition>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    pub name: TableName,
    /// The table or partition it is a partition of.
    pub parent: TableName,
    /// As `pg_get_expr` prints it: `FOR VALUES FROM ('2023-01-01') TO ('2024-01-01')`.
    pub bound: String,
    /// Its own key, when it is partitioned in turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub name: TableName,
    /// `table`, or `partitioned` for a partitioned parent (its partitions are listed).
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<TableName>,
    /// For a partitioned table: its key and every partition's bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitioning: Option<Partitioning>,
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
    pub unique: Vec<Unique>,
    pub foreign_keys: Vec<ForeignKey>,
    pub checks: Vec<Check>,
    /// EXCLUDE constraints: the name, and the definition after `CONSTRAINT name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclusions: Vec<Check>,
    pub indexes: Vec<Index>,
    pub triggers: Vec<String>,
    /// The planner's estimate (`pg_class.reltuples`); 0 for a table never analyzed.
    pub estimated_rows: i64,
    /// Counted with `count(*)` when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_rows: Option<i64>,
    /// Average width of a row in bytes, from the planner's statistics (0 if unknown).
    pub avg_row_bytes: i64,
    /// What the table takes on disk with its indexes and TOAST (its partitions' included).
    #[serde(default)]
    pub bytes: i64,
    /// `COMMENT ON TABLE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The table it inherits from (`INHERITS`, not a partition's parent): its rows are its own,
    /// not the parent's, and the target has no inheritance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherits: Option<TableName>,
}

/// The `n`th number in a type's parentheses as PostgreSQL formats it (`numeric(12,4)`: 12,
/// then 4; `timestamp(3) without time zone`: 3); `None` where it has none.
pub fn type_modifier(data_type: &str, n: usize) -> Option<i32> {
    let inside = data_type.split_once('(')?.1.split_once(')')?.0;
    inside.split(',').nth(n)?.trim().parse().ok()
}

/// What becomes of the rows of an object the migration does not reproduce, by its kind in
/// [`SchemaReport::other_objects`]: said only where it holds rows of its own.
pub fn rows_left_behind(kind: &str) -> Option<&'static str> {
    (kind == "foreign table").then_some("its rows live outside the database and are not migrated")
}

/// The key of a table with neither a primary key nor a unique rule on NOT NULL columns: a
/// column that the reader computes, the MD5 of the row's text and its ordinal among identical
/// rows (`9e107d9d372bb6826bd81d3542a419d6:1`). It is the same on every read while the row's
/// content is the same, so such a table is planned, loaded, resumed and validated like any
/// other; an edited row is a new row (the old one deleted).
pub const ROW_IDENTITY: &str = "agentctl_row_identity";

/// How a table's rows are told apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource<'a> {
    Primary,
    /// A unique constraint whose columns are all NOT NULL, by name.
    Unique(&'a str),
    /// [`ROW_IDENTITY`].
    Content,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The columns that identify a row, and where they come from: the primary key, else the
    /// first unique rule (by name) on plain NOT NULL columns with no condition, else the row's
    /// content ([`ROW_IDENTITY`]).
    pub fn key(&self) -> (Vec<String>, KeySource<'_>) {
        if !self.primary_key.is_empty() {
            return (self.primary_key.clone(), KeySource::Primary);
        }
        let natural = self
            .unique
            .iter()
            .filter(|u| {
                u.predicate.is_none()
                    && u.parts.iter().all(|p| self.column(p).is_some_and(|c| !c.nullable))
            })
            .min_by(|a, b| a.name.cmp(&b.name));
        match natural {
            Some(u) => (u.parts.clone(), KeySource::Unique(&u.name)),
            None => (vec![ROW_IDENTITY.to_owned()], KeySource::Content),
        }
    }

    /// The name a generated target gives this table's column `id` or `legacy_id` (the target's
    /// own key) when it is data there, not the primary key alone that becomes `legacy_id`:
    /// `source_id`, `source_legacy_id`. `None` for any other column, for the primary key, and
    /// when the table already has a column of that name.
    pub fn renamed_data_column(&self, column: &str) -> Option<String> {
        let renamed = format!("source_{column}");
        let kept_as_data = matches!(column, "id" | "legacy_id")
            && self.column(column).is_some()
            && self.primary_key != [column]
            && self.column(&renamed).is_none();
        kept_as_data.then_some(renamed)
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
    /// The extension that creates it (`lo`'s domain `lo`), which the target gets by creating
    /// the extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<String>,
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
    /// Composite and range types of the database's own (not an extension's), in the order
    /// they were created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<UserType>,
    /// Collations of the database's own: the name, and what `CREATE COLLATION name (...)`
    /// takes in its parentheses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collations: Vec<UserType>,
    /// Sequences that no identity column owns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sequences: Vec<Sequence>,
    /// Objects the schema generator does not reproduce, by kind (`view`, `materialized view`,
    /// `foreign table`, `function`): qualified names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_objects: Vec<(String, String)>,
    /// The extensions installed in the database, with the schema each lives in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<Extension>,
    /// How many large objects (`lo_create`, `lo_import`) the database holds: what an `oid`
    /// column names, stored apart from every table.
    #[serde(default)]
    pub large_objects: i64,
    /// The database's `server_encoding` (`UTF8`, `SQL_ASCII`, ...).
    #[serde(default)]
    pub encoding: String,
}

impl SchemaReport {
    /// Whether the database stores text as bytes of no declared encoding (`SQL_ASCII`): agentctl
    /// reads text as UTF-8, and the server refuses a value that is not.
    pub fn stores_bytes(&self) -> bool {
        self.encoding == "SQL_ASCII"
    }
}

/// A sequence, with the value it will hand out next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sequence {
    /// Qualified and quoted.
    pub name: String,
    pub data_type: String,
    pub next: i64,
    pub increment: i64,
    pub min: i64,
    pub max: i64,
    pub cycle: bool,
}

/// A named definition: a composite or range type (what `CREATE TYPE name AS ...` takes after
/// `AS`), or a collation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserType {
    /// Qualified and quoted: `"public"."money_range"`.
    pub name: String,
    /// `(amount numeric, currency text)` or `RANGE (SUBTYPE = numeric)`.
    pub definition: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extension {
    pub name: String,
    pub schema: String,
}

/// A column that points at rows of other tables without a foreign key saying so. Its values are
/// copied as they are: they stay the old keys, which each target row keeps as `legacy_id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LooseReference {
    pub table: TableName,
    pub column: String,
    /// For a generic relation (Django's contenttypes): the column naming the row's table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// For a `*_id` column no foreign key declares: the table its name points at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<TableName>,
    /// An array of such keys (`product_ids integer[]`), which no foreign key can declare and
    /// no mapping rewrites.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub array: bool,
}

impl fmt::Display for LooseReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.content_type, &self.parent) {
            (Some(ct), _) => write!(
                f,
                "{}.{} is a generic reference (its table named by {ct}): no foreign key declares \
                    it, so it keeps the old keys, which each target row keeps as legacy_id (to \
                    rewrite it, declare it in the mapping file: generic = {{ {} = {{ by = \"{ct}\" \
                    }} }})",
                self.table, self.column, self.column
            ),
            (None, Some(p)) if self.array => write!(
                f,
                "{}.{} looks like an array of keys of {p}: no foreign key can declare it and \
                    agentctl does not rewrite it, so it keeps the old keys, which each target row \
                    keeps as legacy_id",
                self.table, self.column
            ),
            (None, Some(p)) => write!(
                f,
                "{}.{} looks like a reference to {p}, but no foreign key declares it: it keeps \
                    the old keys, which each target row keeps as legacy_id (to rewrite it, \
                    declare it in the mapping file: references = {{ {} = \"{}\" }})",
                self.table, self.column, self.column, p.name
            ),
            (None, None) => {
                write!(f, "{}.{} is a reference no foreign key declares", self.table, self.column)
            }
        }
    }
}

impl SchemaReport {
    /// Whether a foreign key points, with one column, at its parent's key ([`Table::key`]): the
    /// references that become the parent's UUID, derived from that key. The schema generator
    /// makes such a column a uuid and the mapper feeds it the parent's UUID, by this one rule.
    pub fn references_key(&self, fk: &ForeignKey) -> bool {
        fk.columns.len() == 1
            && self.table(&fk.references).is_some_and(|p| p.key().0 == fk.referenced_columns)
    }

    /// References no foreign key declares: Django's generic relations (an `object_id` or
    /// `object_pk` beside a foreign key to a `*content_type` table, `to_object_id` beside
    /// `to_content_type_id`; django-guardian and django-contrib-comments name it `object_pk`),
    /// `*_id` columns of a key's type whose name is another table's (`user_id` and `auth_user`
    /// or `user`), and `*_ids` arrays of such keys (`tag_ids integer[]` and `tag`).
    pub fn loose_references(&self) -> Vec<LooseReference> {
        let mut out = Vec::new();
        for t in &self.tables {
            let declared = |c: &str| {
                t.foreign_keys.iter().any(|f| f.columns.iter().any(|x| x == c))
                    || t.key().0.iter().any(|k| k == c)
            };
            let mut generic = Vec::new();
            for fk in t
                .foreign_keys
                .iter()
                .filter(|f| f.columns.len() == 1 && f.references.name.ends_with("content_type"))
            {
                let ct = &fk.columns[0];
                let prefix = ct
                    .strip_suffix("content_type_id")
                    .or_else(|| ct.strip_suffix("content_type"))
                    .unwrap_or("");
                let object = ["object_id", "object_pk"]
                    .map(|o| format!("{prefix}{o}"))
                    .into_iter()
                    .find(|o| t.column(o).is_some() && !declared(o));
                if let Some(object) = object {
                    generic.push(object.clone());
                    out.push(LooseReference {
                        table: t.name.clone(),
                        column: object,
                        content_type: Some(ct.clone()),
                        parent: None,
                        array: false,
                    });
                }
            }
            for c in &t.columns {
                // `user_id`, or an array of such keys: `tag_ids integer[]`.
                let (stem, array) = match c.name.strip_suffix("_ids") {
                    Some(stem) => (stem, true),
                    None => (c.name.strip_suffix("_id").unwrap_or(""), false),
                };
                let element = match array {
                    true => c.type_name.strip_prefix('_').unwrap_or(""),
                    false => c.type_name.as_str(),
                };
                let keyish = matches!(element, "int2" | "int4" | "int8" | "uuid");
                if stem.is_empty() || !keyish || declared(&c.name) || generic.contains(&c.name) {
                    continue;
                }
                let parent = self.tables.iter().find(|p| {
                    p.name != t.name
                        && (p.name.name == stem
                            || p.name.name == format!("{stem}s")
                            || p.name.name.ends_with(&format!("_{stem}")))
                });
                if let Some(p) = parent {
                    out.push(LooseReference {
                        table: t.name.clone(),
                        column: c.name.clone(),
                        content_type: None,
                        parent: Some(p.name.clone()),
                        array,
                    });
                }
            }
        }
        out
    }

    pub fn table(&self, name: &TableName) -> Option<&Table> {
        self.tables.iter().find(|t| &t.name == name)
    }

    /// A table by its bare name (any schema), or by `schema.name`.
    /// The table `name` names: `schema.table`, or a table's own name where no other schema has
    /// a table of that name (a name several schemas share names none; [`SchemaReport::shared`]
    /// says which it could mean).
    pub fn find(&self, name: &str) -> Option<&Table> {
        let qualified = self.tables.iter().find(|t| t.name.qualified() == name);
        qualified.or_else(|| {
            let mut bare = self.tables.iter().filter(|t| t.name.name == name);
            match (bare.next(), bare.next()) {
                (Some(t), None) => Some(t),
                _ => None,
            }
        })
    }

    /// The tables, `schema.name`, of the several schemas whose tables share the name `name`;
    /// none where fewer than two do.
    pub fn sharing(&self, name: &str) -> Vec<String> {
        let all: Vec<String> = self
            .tables
            .iter()
            .filter(|t| t.name.name == name)
            .map(|t| t.name.qualified())
            .collect();
        if all.len() > 1 {
            all
        } else {
            Vec::new()
        }
    }

    /// Where `name` is a name tables of several schemas share: which, and how to say one.
    pub fn shared(&self, name: &str) -> Option<String> {
        let all = self.sharing(name);
        (!all.is_empty()).then(|| {
            format!(
                "`{name}` names {} tables ({}): write its schema, `{}`",
                all.len(),
                all.join(", "),
                all[0]
            )
        })
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
    /// What the source table takes on disk, indexes included: about what the load writes. Not
    /// part of the plan's hash (it moves as the table is vacuumed).
    #[serde(skip)]
    pub bytes: i64,
    /// Rows per batch, chosen from the row width.
    pub batch_size: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<Forecast>,
    /// Foreign keys filled in a second pass because they close a cycle or point at the table
    /// itself: the rows go in with these columns empty, then the references are set.
    pub deferred_foreign_keys: Vec<String>,
    /// The tables a broken cycle loads after this one, which its references wait for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub later_parents: Vec<TableName>,
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
    /// Every source table that is no entity of the plan, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<LeftOut>,
}

/// A source table the plan does not migrate, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftOut {
    pub table: TableName,
    pub reason: String,
    /// Its rows are migrated as part of another entity's (a table the mapping joins).
    #[serde(default)]
    pub merged: bool,
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
        let text =
            serde_json::to_string(&(&self.goal, &waves)).expect("plan types always serialize");
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
