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

/// The definition of the one primary key a load sets aside (on `id` alone), as recorded in
/// `agentctl.suspended_constraints`: what the catalog reads back as the table's key meanwhile.
pub(crate) const PRIMARY_KEY_ASIDE: &str = "PRIMARY KEY (id)";

pub struct PgTarget {
    pool: PgPool,
    max_retries: u32,
}

impl PgTarget {
    pub fn new(pool: PgPool, max_retries: u32) -> PgTarget {
        PgTarget { pool, max_retries }
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

/// The first and last UUID that begin with the 8 hex digits `prefix` (the table tag of
/// agentctl's ordered UUIDs): the rows whose UUID begins so are one range of the primary key,
/// read through its index instead of every row's UUID turned into text and compared.
pub(crate) fn tag_range(prefix: &str) -> Result<(uuid::Uuid, uuid::Uuid), ToolError> {
    let bad = || ToolError::system(format!("`{prefix}` is not the 8 hex digits of a table tag"));
    if prefix.len() != 8 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let tag = u32::from_str_radix(prefix, 16).map_err(|_| bad())?;
    let first = u128::from(tag) << 96;
    Ok((uuid::Uuid::from_u128(first), uuid::Uuid::from_u128(first | (u128::MAX >> 32))))
}

#[cfg(test)]
mod tests {
    use super::tag_range;
    use runtime::domain::TableName;
    use runtime::mapping::{KeyDeriver, UuidLayout};

    #[test]
    fn the_range_of_a_tag_holds_exactly_the_uuids_that_begin_with_it() {
        let table = TableName { schema: "public".into(), name: "dispatch_task".into() };
        let deriver = KeyDeriver::new(UuidLayout::Ordered, uuid::Uuid::from_u128(7), &table);
        let prefix = deriver.prefix().expect("the ordered layout has a prefix");
        let (first, last) = tag_range(&prefix).expect("a tag");
        for key in ["1", "768962", "-5", "9223372036854775807", "a|b"] {
            let id = deriver.derive_stored(key);
            assert!(first <= id && id <= last, "{id} of key {key} is outside {first}..{last}");
        }
        assert!(first.to_string().starts_with(&prefix) && last.to_string().starts_with(&prefix));
        let before = uuid::Uuid::from_u128(first.as_u128() - 1);
        let after = uuid::Uuid::from_u128(last.as_u128() + 1);
        assert!(
            !before.to_string().starts_with(&prefix) && !after.to_string().starts_with(&prefix)
        );
        assert_eq!(tag_range("00000000").expect("zero").0, uuid::Uuid::nil());
        assert!(tag_range("ffffffff").is_ok());
        for bad in ["", "1234567", "123456789", "+1234567", "1234567g"] {
            assert!(tag_range(bad).is_err(), "{bad} taken for a tag");
        }
    }
}
