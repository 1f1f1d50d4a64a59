//! Writing migrated rows: one transaction a batch. References to other tables are checked
//! first, one indexed `= ANY` lookup a column, and the rows whose parent is missing are set
//! aside with the reason. The rest are COPYed straight into the target; only when the target
//! refuses something does the batch take the careful path: staged as text, the rows already
//! present skipped, the rest inserted set-based with casts, and a refused range split under
//! savepoints until the refusing rows stand alone. Each is recorded in `agentctl.rejected_rows`
//! with the database's own words, never dropped. The batch's rows, its rejects, its second-pass
//! references and its checkpoint commit together, so a crash leaves all of a batch or none.
//! Rows whose legacy key is already in the target (a resumed or repeated run) are counted as
//! present and keep their UUID.
//!
//! While an entity loads, its foreign keys and plain indexes can be set aside
//! ([`Target::suspend_constraints`]) and put back set-based at the end, which is several times
//! cheaper than a trigger a row; the records in `agentctl.suspended_constraints` make that
//! crash-safe.

mod constraints;
mod load;
mod sync;
mod verify;

use std::time::Duration;

use runtime::domain::TableName;
use runtime::ports::ToolError;
use sqlx::PgPool;

use crate::pg::{describe, fault, Fault};

/// `alias.column` of `table` as a UUID, to compare with a parent's `id`
/// ([`runtime::sql::as_uuid`]): as it is where the column holds UUIDs, read from its text
/// where it holds text (as a generic reference may).
pub(crate) async fn as_parent_id<'c, E: sqlx::PgExecutor<'c>>(
    c: E,
    (table, alias): (&TableName, &str),
    column: &str,
) -> Result<String, sqlx::Error> {
    let uuids: bool = sqlx::query_scalar(
        "SELECT coalesce(bool_or(a.atttypid = 'uuid'::regtype), false) FROM pg_attribute a
         WHERE a.attrelid = $1::regclass AND a.attname = $2 AND NOT a.attisdropped",
    )
    .bind(crate::catalog::quoted(table))
    .bind(column)
    .fetch_one(c)
    .await?;
    Ok(runtime::sql::as_uuid(&format!("{alias}.{}", crate::catalog::ident(column)), uuids))
}

/// The definition of the one primary key a load sets aside (on `id` alone), as recorded in
/// `agentctl.suspended_constraints`: what the catalog reads back as the table's key meanwhile.
pub(crate) const PRIMARY_KEY_ASIDE: &str = "PRIMARY KEY (id)";

pub struct PgTarget {
    pool: PgPool,
    max_retries: u32,
    copy_buffers: CopyBuffers,
}

impl PgTarget {
    pub fn new(pool: PgPool, max_retries: u32) -> PgTarget {
        PgTarget { pool, max_retries, copy_buffers: CopyBuffers::default() }
    }
}

/// The COPY data buffers of batches written, kept for the batches to come: a batch's few MiB
/// filled in place instead of fresh memory faulted in for each (a sixth of a load's page
/// faults before they were kept, bench/RESULTS.md).
#[derive(Default)]
struct CopyBuffers(std::sync::Mutex<Vec<Vec<u8>>>);

impl CopyBuffers {
    /// As many as batches are written at once by default (an entity a core, at most 4); with
    /// more entities at once (`--jobs` up to 8), the buffers beyond these are freed.
    const KEPT: usize = 4;

    /// An empty buffer, with the room of one written before if one is kept.
    fn take(&self) -> Vec<u8> {
        self.0.lock().ok().and_then(|mut kept| kept.pop()).unwrap_or_default()
    }

    fn give(&self, mut buffer: Vec<u8>) {
        buffer.clear();
        if let Ok(mut kept) = self.0.lock() {
            if kept.len() < Self::KEPT {
                kept.push(buffer);
            }
        }
    }
}

/// The one line a system fault stops a batch with: the table, the cause, what was (not) done
/// and what to do.
pub(crate) fn system_fault(target: &TableName, e: &sqlx::Error) -> ToolError {
    ToolError::system(format!(
        "{target}: the target refused the batch for a reason that is not the rows' own ({}); \
            nothing of it was written and no row is rejected for it: fix the cause, then resume \
            the run with --resume",
        describe(e)
    ))
}

pub(crate) enum Failure {
    Transient(sqlx::Error),
    Fatal(ToolError),
}

/// Runs `attempt` until it succeeds, again after a transient failure (200 ms, doubling to
/// 10 s) up to `max_retries` times. Returns the value and how many retries it took; the error
/// names `what` was being done.
pub(crate) async fn retrying<T, Fut>(
    max_retries: u32,
    what: &str,
    mut attempt: impl FnMut() -> Fut,
) -> Result<(T, u32), ToolError>
where
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let mut delay = Duration::from_millis(200);
    let mut retries = 0;
    loop {
        match attempt().await {
            Ok(value) => return Ok((value, retries)),
            Err(Failure::Transient(e)) if retries < max_retries => {
                tracing::warn!("{what} failed ({}); retrying in {delay:?}", describe(&e));
                retries += 1;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(Failure::Transient(e)) => {
                return Err(ToolError::transient(format!(
                    "{what} failed {} times, the last: {}",
                    retries + 1,
                    describe(&e)
                )))
            }
            Err(Failure::Fatal(e)) => return Err(e.context(what)),
        }
    }
}

/// Never hands the pool a connection inside a failed transaction: rolled back, or, if even
/// that fails, closed instead of returned.
pub(crate) async fn discard_transaction(mut c: crate::pg::Held) {
    if sqlx::query("ROLLBACK").execute(&mut *c).await.is_ok() {
        c.finished();
    }
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        match fault(&e) {
            Fault::Transient => Failure::Transient(e),
            Fault::Row | Fault::System => Failure::Fatal(ToolError::system(describe(&e))),
        }
    }
}
