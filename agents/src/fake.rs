//! In-memory stand-ins for the unit tests of pure agent logic: schemas built in a few lines,
//! and a source database whose rows are vectors ([`MemRows`], a [`Rows`] port). The
//! integration tests use the real ports over PostgreSQL; these let the mapping, the mapper and
//! the forecast be checked in milliseconds.

use std::cmp::Ordering;
use std::collections::HashMap;

use async_trait::async_trait;
use runtime::domain::{
    Check, Column, ForeignKey, Scan, SchemaReport, Table, TableName, TypeKind, Unique,
};
use runtime::error::ToolError;
use runtime::ports::Rows;

mod target;

pub use target::MemTarget;

pub fn name(table: &str) -> TableName {
    TableName::new("public", table)
}

/// A column of a base type: `("name", "character varying(20)", "varchar")`.
pub fn column(name: &str, data_type: &str, type_name: &str, nullable: bool) -> Column {
    let max_length = data_type
        .strip_prefix("character varying(")
        .and_then(|n| n.trim_end_matches(')').parse().ok());
    Column {
        name: name.into(),
        data_type: data_type.into(),
        type_name: type_name.into(),
        type_kind: TypeKind::Base,
        max_length,
        nullable,
        default: None,
        identity: None,
        generated: None,
        collation: None,
        comment: None,
        stats: None,
    }
}

pub fn int(name: &str, nullable: bool) -> Column {
    column(name, "integer", "int4", nullable)
}

pub fn uuid(name: &str, nullable: bool) -> Column {
    column(name, "uuid", "uuid", nullable)
}

/// A foreign key from `column` to `parent.referenced`.
pub fn foreign_key(table: &str, column: &str, parent: &str, referenced: &str) -> ForeignKey {
    ForeignKey {
        name: format!("{table}_{column}_fkey"),
        columns: vec![column.into()],
        references: name(parent),
        referenced_columns: vec![referenced.into()],
        on_delete: "no action".into(),
        deferrable: false,
        deferred: false,
        validated: true,
    }
}

/// A table keyed on its first column.
pub fn table(table: &str, columns: Vec<Column>, foreign_keys: Vec<ForeignKey>) -> Table {
    Table {
        name: name(table),
        primary_key: vec![columns[0].name.clone()],
        columns,
        foreign_keys,
        kind: "table".into(),
        partitions: vec![],
        partitioning: None,
        unique: vec![],
        checks: vec![],
        exclusions: vec![],
        inherits: None,
        indexes: vec![],
        triggers: vec![],
        estimated_rows: 0,
        exact_rows: None,
        avg_row_bytes: 40,
        bytes: 0,
        comment: None,
    }
}

/// A legacy source: roles, and technicians who each have a role.
pub fn legacy() -> SchemaReport {
    let role = table(
        "dispatch_role",
        vec![
            int("id", false),
            column("name", "text", "text", true),
            column("kind", "text", "text", true),
        ],
        vec![],
    );
    let technician = table(
        "dispatch_technician",
        vec![
            int("id", false),
            column("name", "text", "text", true),
            int("role_id", false),
            column("email", "text", "text", true),
        ],
        vec![foreign_key("dispatch_technician", "role_id", "dispatch_role", "id")],
    );
    SchemaReport {
        database: "memory/legacy".into(),
        tables: vec![role, technician],
        ..SchemaReport::default()
    }
}

/// Its modern target: UUID keys, an enum, a length, a CHECK, a unique email.
pub fn modern() -> SchemaReport {
    let mut role_kind = column("kind", "role_kind", "role_kind", false);
    role_kind.type_kind = TypeKind::Enum;
    let roles = table(
        "roles",
        vec![
            uuid("id", false),
            int("legacy_id", true),
            column("name", "character varying(12)", "varchar", false),
            role_kind,
        ],
        vec![],
    );
    let mut technicians = table(
        "technicians",
        vec![
            uuid("id", false),
            int("legacy_id", true),
            column("name", "text", "text", false),
            uuid("role_id", false),
            column("email", "text", "text", true),
        ],
        vec![foreign_key("technicians", "role_id", "roles", "id")],
    );
    technicians.checks.push(Check {
        name: "technicians_name_check".into(),
        expression: "(length(name) > 1)".into(),
    });
    technicians.unique.push(Unique {
        name: "technicians_email_key".into(),
        parts: vec!["email".into()],
        predicate: None,
        definition: "UNIQUE (email)".into(),
    });
    let mut report = SchemaReport {
        database: "memory/modern".into(),
        tables: vec![roles, technicians],
        ..SchemaReport::default()
    };
    report.enums.insert("role_kind".into(), vec!["field".into(), "office".into()]);
    report
}

/// A table in memory: its column names, and its rows of text values (`None` for NULL).
struct MemTable {
    columns: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
}

/// A source database in memory.
#[derive(Default)]
pub struct MemRows {
    tables: HashMap<TableName, MemTable>,
}

impl MemRows {
    pub fn with(mut self, table: &str, columns: &[&str], rows: &[&[Option<&str>]]) -> MemRows {
        let rows = rows.iter().map(|r| r.iter().map(|v| v.map(str::to_owned)).collect()).collect();
        self.tables.insert(
            name(table),
            MemTable { columns: columns.iter().map(|c| (*c).to_owned()).collect(), rows },
        );
        self
    }
}

/// Key parts compared as a database would compare integer keys, else as text.
fn compare_keys(a: &[&str], b: &[&str]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let order = match (x.parse::<i64>(), y.parse::<i64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    Ordering::Equal
}

#[async_trait]
impl Rows for MemRows {
    async fn scan(
        &self,
        scan: &Scan,
        each: &mut (dyn for<'r> FnMut(&'r [Option<&'r str>]) + Send),
    ) -> Result<u64, ToolError> {
        if !scan.joins.is_empty() || !scan.scripts.is_empty() || scan.changed_since.is_some() {
            return Err(ToolError::system("the in-memory source reads plain columns only"));
        }
        let MemTable { columns, rows } = self
            .tables
            .get(&scan.table)
            .ok_or_else(|| ToolError::system(format!("no table {} in memory", scan.table)))?;
        let index = |c: &str| {
            columns
                .iter()
                .position(|n| n == c)
                .ok_or_else(|| ToolError::system(format!("no column {c}")))
        };
        let wanted: Vec<usize> = scan.columns.iter().map(|c| index(c)).collect::<Result<_, _>>()?;
        let key: Vec<usize> = scan.key.iter().map(|c| index(c)).collect::<Result<_, _>>()?;
        let key_of = |r: &Vec<Option<String>>| {
            key.iter().map(|&i| r[i].clone().unwrap_or_default()).collect::<Vec<_>>()
        };
        let mut ordered: Vec<&Vec<Option<String>>> = rows.iter().collect();
        ordered.sort_by(|a, b| {
            let (a, b) = (key_of(a), key_of(b));
            compare_keys(
                &a.iter().map(String::as_str).collect::<Vec<_>>(),
                &b.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        });
        let mut sent = 0u64;
        for row in ordered {
            let k = key_of(row);
            let k: Vec<&str> = k.iter().map(String::as_str).collect();
            if let Some(after) = &scan.after {
                let after: Vec<&str> = after.iter().map(String::as_str).collect();
                if compare_keys(&k, &after) != Ordering::Greater {
                    continue;
                }
            }
            if !scan.only.is_empty()
                && !scan.only.iter().any(|o| o.iter().map(String::as_str).eq(k.iter().copied()))
            {
                continue;
            }
            if scan.limit.is_some_and(|l| sent as usize >= l) {
                break;
            }
            let values: Vec<Option<&str>> = wanted.iter().map(|&i| row[i].as_deref()).collect();
            each(&values);
            sent += 1;
        }
        Ok(sent)
    }
}

/// An audit trail kept in memory.
#[derive(Default)]
pub struct MemAudit(pub std::sync::Mutex<Vec<runtime::audit::AuditEvent>>);

#[async_trait]
impl runtime::audit::AuditSink for MemAudit {
    async fn append(
        &self,
        _: runtime::RunId,
        events: &[runtime::audit::AuditEvent],
    ) -> Result<(), runtime::audit::AuditError> {
        self.0.lock().unwrap().extend_from_slice(events);
        Ok(())
    }
    async fn head(
        &self,
        _: runtime::RunId,
    ) -> Result<runtime::audit::ChainHead, runtime::audit::AuditError> {
        Ok(runtime::audit::ChainHead::empty())
    }
}

/// A run's context over an audit trail in memory, and that trail.
pub async fn context() -> (std::sync::Arc<runtime::context::RunContext>, std::sync::Arc<MemAudit>) {
    use runtime::audit_writer::{Audit, AuditWriter, AuditWriterArgs};
    let run_id = runtime::RunId::new();
    let sink = std::sync::Arc::new(MemAudit::default());
    let args = AuditWriterArgs {
        run_id,
        sink: sink.clone(),
        redactor: runtime::redact::Redactor::default(),
        flush_every: std::time::Duration::from_millis(100),
        batch: 64,
    };
    let (writer, _) = ractor::Actor::spawn(None, AuditWriter, args).await.unwrap();
    let ctx = runtime::context::RunContext::new(
        run_id,
        Audit::new(writer),
        runtime::events::EventBus::default(),
        std::time::Duration::from_secs(30),
    );
    (std::sync::Arc::new(ctx), sink)
}
