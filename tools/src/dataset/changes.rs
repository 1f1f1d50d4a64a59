//! Changes to a live reference source after its migration, the way the legacy application
//! makes them: rows edited, new patients with new orders of their own (a parent and its
//! children, new together), leaf rows deleted. Used by `agentctl dataset change`, the
//! differential benchmark and the tests.
//!
//! Rows are picked by key arithmetic (every k-th key first), so the same call on the same data
//! changes the same rows. New rows copy existing ones under fresh keys, faults included: a copy
//! of a row the mapping rejects is rejected again, with its reason.

use runtime::error::ToolError;
use serde::Serialize;
use sqlx::PgPool;

use crate::pg::while_doing;

/// What one table got.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TableChanges {
    pub table: String,
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ChangeReport {
    pub tables: Vec<TableChanges>,
    pub seconds: f64,
}

impl ChangeReport {
    pub fn total(&self) -> u64 {
        self.tables.iter().map(|t| t.inserted + t.updated + t.deleted).sum()
    }
}

/// Edits: (table, the SET clause).
const UPDATES: &[(&str, &str)] = &[
    ("dispatch_patient", "last_name = coalesce(last_name, '') || ' Jr'"),
    (
        "dispatch_order",
        "status = 'shipped', total_cents = coalesce(total_cents, 0) + 100, \
        updated_at = now()::timestamp",
    ),
    ("dispatch_case_message", "body = coalesce(body, '') || ' (edited)'"),
    ("dispatch_task", "status = (coalesce(status, 0) + 1) % 4"),
];

/// Leaf tables rows are deleted from (nothing references them).
const DELETES: &[&str] =
    &["dispatch_message_attachment", "dispatch_system_message", "dispatch_patient_event"];

/// Applies `rows` changes (fewer only where a table has fewer rows) in one transaction: 40 % edits,
/// 40 % new rows (patients, and
/// orders of the new patients), 20 % deletes. The legacy's foreign keys are not checked for the
/// copies (the legacy application never had them all either).
pub async fn apply(pool: &PgPool, rows: u64) -> Result<ChangeReport, ToolError> {
    let started = std::time::Instant::now();
    let what = "changing the reference source";
    let mut tx = pool.begin().await.map_err(while_doing(what))?;
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .map_err(while_doing(what))?;
    let mut report = ChangeReport::default();
    let count = |table: &str| format!("SELECT count(*) FROM {table}");
    let per_update = rows * 4 / 10 / UPDATES.len() as u64;
    for (table, set) in UPDATES {
        let n: i64 = sqlx::query_scalar(&count(table))
            .fetch_one(&mut *tx)
            .await
            .map_err(while_doing(what))?;
        let step = (n as u64 / per_update.max(1)).max(1);
        // Every step-th key first, then the next residue: exactly the count asked for.
        let sql = format!(
            "UPDATE {table} SET {set} WHERE id IN (SELECT id FROM {table} ORDER BY (id - \
                1) % {step}, id LIMIT {per_update})"
        );
        let done = sqlx::query(&sql)
            .execute(&mut *tx)
            .await
            .map_err(while_doing(format!("editing {table}")))?;
        report.tables.push(TableChanges {
            table: (*table).into(),
            updated: done.rows_affected(),
            ..TableChanges::default()
        });
    }
    let (new_patients, new_orders) = (rows * 2 / 10, rows * 2 / 10);
    for new in add_patients_and_orders(&mut tx, new_patients, new_orders).await? {
        match report.tables.iter_mut().find(|t| t.table == new.table) {
            Some(t) => t.inserted += new.inserted,
            None => report.tables.push(new),
        }
    }
    let deletes =
        rows.saturating_sub(per_update * UPDATES.len() as u64 + new_patients + new_orders);
    for (i, table) in DELETES.iter().enumerate() {
        let per_delete =
            deletes / DELETES.len() as u64 + u64::from((i as u64) < deletes % DELETES.len() as u64);
        let n: i64 = sqlx::query_scalar(&count(table))
            .fetch_one(&mut *tx)
            .await
            .map_err(while_doing(what))?;
        let step = (n as u64 / per_delete.max(1)).max(2);
        let sql = format!(
            "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} ORDER BY id % \
            {step}, id LIMIT {per_delete})"
        );
        let done = sqlx::query(&sql)
            .execute(&mut *tx)
            .await
            .map_err(while_doing(format!("deleting from {table}")))?;
        report.tables.push(TableChanges {
            table: (*table).into(),
            deleted: done.rows_affected(),
            ..TableChanges::default()
        });
    }
    tx.commit().await.map_err(while_doing(what))?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// New patients, then orders of those new patients (each copied order moves to the copy of
/// its patient).
async fn add_patients_and_orders(
    tx: &mut sqlx::PgConnection,
    new_patients: u64,
    new_orders: u64,
) -> Result<[TableChanges; 2], ToolError> {
    let what = "changing the reference source";
    let max = |table: &str| format!("SELECT coalesce(max(id), 0)::int8 FROM {table}");
    let patient_offset: i64 = sqlx::query_scalar(&max("dispatch_patient"))
        .fetch_one(&mut *tx)
        .await
        .map_err(while_doing(what))?;
    let order_offset: i64 = sqlx::query_scalar(&max("dispatch_order"))
        .fetch_one(&mut *tx)
        .await
        .map_err(while_doing(what))?;
    let copied = sqlx::query(&format!(
        "INSERT INTO dispatch_patient
         SELECT id + {patient_offset}, doctor_id, office_id, first_name, last_name, birth_date, email, phone, gender, now()::timestamp
         FROM dispatch_patient ORDER BY id LIMIT {new_patients}"
    ))
    .execute(&mut *tx)
    .await
    .map_err(while_doing("adding patients"))?;
    let patients = TableChanges {
        table: "dispatch_patient".into(),
        inserted: copied.rows_affected(),
        ..TableChanges::default()
    };
    let copied = sqlx::query(&format!(
        "INSERT INTO dispatch_order
         SELECT {order_offset} + row_number() OVER (ORDER BY o.id), o.patient_id + {patient_offset}, o.doctor_id, o.office_id, 'new',
             o.total_cents, o.currency, o.notes, now()::timestamp, now()::timestamp
         FROM dispatch_order o
         WHERE o.patient_id IN (SELECT id FROM dispatch_patient WHERE id <= {patient_offset} ORDER BY id LIMIT {new_patients})
         ORDER BY o.id LIMIT {new_orders}"
    ))
    .execute(&mut *tx)
    .await
    .map_err(while_doing("adding orders"))?;
    let orders = TableChanges {
        table: "dispatch_order".into(),
        inserted: copied.rows_affected(),
        ..TableChanges::default()
    };
    Ok([patients, orders])
}
