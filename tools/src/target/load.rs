//! Loading: a batch written in one transaction with its rejects, second-pass records and
//! checkpoint (COPY first; staged and split under savepoints only when the target refuses
//! rows), the second pass of references, and the checks and moves the load needs first.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use runtime::domain::TableName;
use runtime::domain::{Batch, Checkpoint, KeysAside, RejectedRow, Written};
use runtime::ports::{Loader, ToolError};
use runtime::RunId;
use sqlx::Row;

use crate::catalog::{ident, quoted};
use crate::dataset::copy::push_field;
use crate::pg::{fault, while_doing, Fault};
use runtime::sql::in_none_of;

use super::constraints::keys_aside;

use super::{discard_transaction, retrying, system_fault, Failure, PgTarget};

/// The sequences a table's integer columns draw from, `(column, sequence)`: an identity
/// column's own, and any a column's default calls. `$1` is the table, quoted.
const DRAWN_SEQUENCES: &str = "SELECT a.attname::text, pg_get_serial_sequence($1, a.attname) FROM pg_attribute a
             WHERE a.attrelid = $1::regclass AND a.attidentity <> '' AND NOT a.attisdropped
               AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
             UNION
             SELECT a.attname::text, d.refobjid::regclass::text FROM pg_attrdef ad
             JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
             JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
             JOIN pg_class s ON s.oid = d.refobjid AND s.relkind = 'S'
             WHERE ad.adrelid = $1::regclass AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)";

impl PgTarget {
    async fn try_write(&self, b: &Batch) -> Result<Written, Failure> {
        let mut c = crate::pg::Held::acquire(&self.pool).await?;
        let written = self.write_on(&mut c, b).await;
        match written.is_ok() {
            true => c.finished(),
            false => discard_transaction(c).await,
        }
        written
    }

    async fn write_on(&self, c: &mut crate::pg::Held, b: &Batch) -> Result<Written, Failure> {
        sqlx::query("BEGIN").execute(&mut **c).await?;
        // A batch's commit does not wait for its WAL to reach the disk: a batch and its
        // checkpoint still commit or vanish together, the checkpoint below refuses to build on
        // one that vanished, and the entity's next synchronous commit (its state) flushes every
        // batch before it. On a target with PostgreSQL's default settings each batch otherwise
        // waited for its own flush.
        sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut **c).await?;
        let deferrable = crate::pg::immediate_rules(c, &b.target).await?;
        let orphans = missing_parents(c, b).await?;
        let keep: Vec<usize> = (0..b.rows.len()).filter(|seq| !orphans.contains_key(seq)).collect();
        let aside = keys_aside(c, &b.target).await?;
        let (Counted { inserted, present, kept, refused }, hashes) =
            match already_there(c, b, &keep, aside).await? {
                Some((present, kept)) => {
                    (Counted { present, kept, ..Counted::default() }, Vec::new())
                }
                None => self.copy_or_stage(c, b, &keep, aside, deferrable).await?,
            };
        if !b.baseline.is_empty() {
            record_written(c, b, &keep, &hashes).await?;
        }
        let refused_rows = rejected_rows(b, &orphans, &refused);
        let rejected = record_rejects(c, b, &refused_rows).await?;
        record_deferred(c, b).await?;
        let checkpoint = Checkpoint {
            last_key: b.last_key.clone(),
            rows_read: b.before.rows_read + b.rows_read,
            migrated: b.before.migrated + inserted + present,
            kept: b.before.kept + kept,
            rejected: b.before.rejected + rejected,
            batches: b.before.batches + 1,
        };
        // Only over the checkpoint this batch was read after: one that is not there (a batch
        // the server lost in a crash after it said committed, or another process writing the
        // same entity) fails the batch, and the entity starts again from what is stored.
        let first = b.before.batches == 0;
        let store = sqlx::query(match first {
            true => {
                "INSERT INTO agentctl.migration_checkpoints (run_id, source_table, last_key, rows_read, migrated, rejected, batches, kept)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (run_id, source_table) DO NOTHING"
            }
            false => {
                "UPDATE agentctl.migration_checkpoints SET last_key = $3, rows_read = $4, migrated = $5, rejected = $6, batches = $7, kept = $8, updated_at = now()
                 WHERE run_id = $1 AND source_table = $2 AND batches = $9 AND last_key = $10"
            }
        })
        .bind(b.run_id.0)
        .bind(b.source.to_string())
        .bind(&checkpoint.last_key)
        .bind(checkpoint.rows_read)
        .bind(checkpoint.migrated)
        .bind(checkpoint.rejected)
        .bind(checkpoint.batches)
        .bind(checkpoint.kept);
        let store =
            if first { store } else { store.bind(b.before.batches).bind(&b.before.last_key) };
        let stored = store.execute(&mut **c).await?;
        if stored.rows_affected() != 1 {
            return Err(Failure::Fatal(ToolError::system(format!(
                "the checkpoint of {} is no longer the one after batch {} that this batch was read after; \
                 the batch is undone and the entity starts again from the stored checkpoint",
                b.source, b.before.batches
            ))));
        }
        sqlx::query("COMMIT").execute(&mut **c).await?;
        Ok(Written { inserted, present, kept, refused: refused_rows, checkpoint, retries: 0 })
    }
}

/// The rows of the batch whose parent is not in the target, each with the reason: one indexed
/// lookup a reference column (none for a parent read whole when the load began), not a failed
/// insert a row.
async fn missing_parents(
    c: &mut sqlx::PgConnection,
    b: &Batch,
) -> Result<BTreeMap<usize, String>, sqlx::Error> {
    let mut orphans: BTreeMap<usize, String> = BTreeMap::new();
    for check in &b.references {
        let (col, parent) = (&check.column, &check.parent);
        let mut ids: Vec<Option<Option<uuid::Uuid>>> =
            b.rows.column(*col).map(|v| v.map(|v| uuid::Uuid::try_parse(v).ok())).collect();
        // A generic reference's check covers the rows that name this parent.
        if let Some(rows) = &check.rows {
            let mut covered = vec![false; ids.len()];
            rows.iter().for_each(|&r| covered[r] = true);
            ids.iter_mut().zip(covered).filter(|(_, c)| !c).for_each(|(id, _)| *id = None);
        }
        let missing: HashSet<uuid::Uuid> = match b.known_parents.get(parent) {
            // Read whole when the load began: nothing to ask.
            Some(known) => {
                ids.iter().filter_map(|id| id.flatten()).filter(|id| !known.contains(id)).collect()
            }
            // Sent as binary UUIDs; the server answers with the few it does not have.
            None => {
                let mut wanted: Vec<uuid::Uuid> =
                    ids.iter().filter_map(|id| id.flatten()).collect();
                wanted.sort_unstable();
                wanted.dedup();
                let sql = format!(
                    "SELECT w.id FROM unnest($1::uuid[]) w(id) WHERE NOT EXISTS (SELECT 1 \
                        FROM {} p WHERE p.id = w.id)",
                    quoted(parent)
                );
                sqlx::query_scalar(&sql)
                    .bind(&wanted)
                    .fetch_all(&mut *c)
                    .await?
                    .into_iter()
                    .collect()
            }
        };
        let name = &b.columns[*col].0;
        for (seq, id) in ids.iter().enumerate() {
            // A value that is not a UUID has no parent either (the mapper derives them all).
            if id.is_some_and(|id| id.is_none_or(|id| missing.contains(&id))) {
                // The first missing parent a row has is the reason given for it.
                orphans.entry(seq).or_insert_with(|| {
                    format!(
                        "{}.{name}: the {} row it points at is not in the target",
                        b.target.name, parent.name
                    )
                });
            }
        }
    }
    Ok(orphans)
}

/// The kept rows of the batch as COPY data: binary when every column and value has an encoder
/// the server agrees with (it then parses nothing), else text; with each row's hash where the
/// batch records the load baseline (hashed as it is encoded); written into `buffer`'s room.
async fn encode(
    c: &mut sqlx::PgConnection,
    b: &Batch,
    keep: &[usize],
    mut buffer: Vec<u8>,
) -> Result<(&'static str, Vec<u8>, Vec<Option<i64>>), sqlx::Error> {
    let n = b.columns.len();
    let base = crate::binary::base_columns(&mut *c, &b.target).await?;
    // Rows recorded in the load baseline are hashed as they are encoded.
    let hashing = match b.baseline.is_empty() {
        true => None,
        false => crate::row_hash::column_hashes(&mut *c, &base, &b.baseline_columns()).await?.map(
            |hows| {
                let mut by_column = vec![None; n];
                for (&i, how) in b.baseline.iter().zip(hows) {
                    by_column[i] = Some(how);
                }
                by_column
            },
        ),
    };
    let wires = crate::binary::wires(&base, &b.columns);
    if let Some(w) = &wires {
        buffer.reserve(crate::binary::encoded_size(keep.len(), w.len(), b.rows.text_len()));
    }
    let binary = wires.and_then(|w| {
        let rows = keep.iter().map(|&seq| b.rows.row(seq));
        crate::binary::encode(&w, hashing.as_deref(), rows, &mut buffer)
    });
    let (format, buf, hashes) = match binary {
        Some(hashes) => (" (FORMAT binary)", buffer, hashes),
        None => {
            let mut buf = buffer;
            buf.clear();
            buf.reserve(keep.len() * 64 * n.max(1));
            for &seq in keep {
                for (i, v) in b.rows.row(seq).enumerate() {
                    if i > 0 {
                        buf.push(b'\t');
                    }
                    push_field(&mut buf, v);
                }
                buf.push(b'\n');
            }
            ("", buf, Vec::new())
        }
    };
    Ok((format, buf, hashes))
}

/// The rows the batch sets aside (parent missing) and those the target refused, as rejects.
fn rejected_rows(
    b: &Batch,
    orphans: &BTreeMap<usize, String>,
    refused: &[(usize, String)],
) -> Vec<RejectedRow> {
    let mut refused_rows: Vec<RejectedRow> = Vec::with_capacity(refused.len() + orphans.len());
    for (seq, why) in orphans {
        refused_rows.push(RejectedRow {
            legacy_key: b.legacy_key(*seq),
            column: None,
            rule: "reference".into(),
            reason: why.clone(),
            row: b.source_json(*seq),
        });
    }
    for (seq, why) in refused {
        refused_rows.push(RejectedRow {
            legacy_key: b.legacy_key(*seq),
            column: None,
            rule: "refused_by_target".into(),
            reason: format!("{}: the target refused the row: {why}", b.target.name),
            row: b.source_json(*seq),
        });
    }
    refused_rows
}

/// Records the batch's rejects (the mapper's, and `refused_rows`) with their reasons; returns
/// how many.
async fn record_rejects(
    c: &mut sqlx::PgConnection,
    b: &Batch,
    refused_rows: &[RejectedRow],
) -> Result<i64, sqlx::Error> {
    let all_rejects: Vec<&RejectedRow> = b.rejected.iter().chain(refused_rows).collect();
    // Columns built before the await: a closure kept alive across it defeats `Send`.
    let r_keys: Vec<String> = all_rejects.iter().map(|r| r.legacy_key.clone()).collect();
    let r_cols: Vec<Option<String>> = all_rejects.iter().map(|r| r.column.clone()).collect();
    let r_rules: Vec<String> = all_rejects.iter().map(|r| r.rule.clone()).collect();
    let r_reasons: Vec<String> = all_rejects.iter().map(|r| r.reason.clone()).collect();
    let r_rows: Vec<serde_json::Value> = all_rejects.iter().map(|r| r.row.clone()).collect();
    if !all_rejects.is_empty() {
        sqlx::query(
            "INSERT INTO agentctl.rejected_rows (run_id, source_table, legacy_key, column_name, rule, reason, source_row)
             SELECT $1, $2, k, c, r, w, j FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[]) AS u(k, c, r, w, j)
             ON CONFLICT (run_id, source_table, legacy_key) DO NOTHING",
        )
        .bind(b.run_id.0)
        .bind(b.source.to_string())
        .bind(&r_keys)
        .bind(&r_cols)
        .bind(&r_rules)
        .bind(&r_reasons)
        .bind(&r_rows)
        .execute(&mut *c)
        .await?;
    }
    Ok(all_rejects.len() as i64)
}

/// Records the batch's second-pass references, filled once the entity is loaded.
async fn record_deferred(c: &mut sqlx::PgConnection, b: &Batch) -> Result<(), sqlx::Error> {
    let d_child: Vec<String> = b.deferred.iter().map(|d| d.0.clone()).collect();
    let d_col: Vec<String> = b.deferred.iter().map(|d| d.1.clone()).collect();
    let d_parent: Vec<String> = b.deferred.iter().map(|d| d.2.clone()).collect();
    if !b.deferred.is_empty() {
        sqlx::query(
            "INSERT INTO agentctl.deferred_references (run_id, target_table, column_name, child_id, parent_id)
             SELECT $1, $2, col, child::uuid, parent::uuid FROM UNNEST($3::text[], $4::text[], $5::text[]) AS u(child, col, parent)
             ON CONFLICT DO NOTHING",
        )
        .bind(b.run_id.0)
        .bind(b.target.to_string())
        .bind(&d_child)
        .bind(&d_col)
        .bind(&d_parent)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

/// Records rows removed from the target after the load (their parent never arrived) as
/// rejected, and takes them off the entity's checkpoint, in the caller's transaction.
async fn record_removed(
    tx: &mut sqlx::PgConnection,
    run: RunId,
    source: &TableName,
    target: &TableName,
    column: &str,
    removed: &[sqlx::postgres::PgRow],
) -> Result<Vec<RejectedRow>, sqlx::Error> {
    let mut rejected = Vec::with_capacity(removed.len());
    for r in removed {
        rejected.push(RejectedRow {
            legacy_key: r.try_get("k")?,
            column: Some(column.to_owned()),
            rule: format!("reference:{column}"),
            reason: format!("{}.{column}: the row it points at was not migrated", target.name),
            row: r.try_get("j")?,
        });
    }
    for r in &rejected {
        sqlx::query(
            "INSERT INTO agentctl.rejected_rows (run_id, source_table, legacy_key, column_name, rule, reason, source_row)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(run.0)
        .bind(source.to_string())
        .bind(&r.legacy_key)
        .bind(&r.column)
        .bind(&r.rule)
        .bind(&r.reason)
        .bind(&r.row)
        .execute(&mut *tx)
        .await?;
    }
    if !rejected.is_empty() {
        sqlx::query(
            "UPDATE agentctl.migration_checkpoints SET migrated = migrated - $3, rejected \
            = rejected + $3 WHERE run_id = $1 AND source_table = $2",
        )
        .bind(run.0)
        .bind(source.to_string())
        .bind(rejected.len() as i64)
        .execute(&mut *tx)
        .await?;
    }
    Ok(rejected)
}

impl PgTarget {
    /// Writes the rows of `keep` by COPY straight into the target. Anything it refuses (a
    /// duplicate, a row already there) undoes just this attempt, and the staged path sorts it
    /// out. Binary when every column and value has an encoder the server agrees with (it then
    /// parses nothing), COPY text otherwise. With the counts, the baseline's hashes of the rows
    /// the COPY wrote (none when the staged path did).
    async fn copy_or_stage(
        &self,
        c: &mut crate::pg::Held,
        b: &Batch,
        keep: &[usize],
        aside: KeysAside,
        deferrable: bool,
    ) -> Result<(Counted, Vec<Option<i64>>), Failure> {
        let cols: Vec<String> = b.columns.iter().map(|(name, _)| ident(name)).collect();
        let cols = cols.join(", ");
        sqlx::query("SAVEPOINT agentctl_direct").execute(&mut **c).await?;
        let (format, buf, hashes) = encode(c, b, keep, self.copy_buffers.take()).await?;
        let direct = async {
            let mut copy = c
                .copy_in_raw(&format!("COPY {} ({cols}) FROM STDIN{format}", quoted(&b.target)))
                .await?;
            crate::pg::send_copy(&mut copy, &buf).await?;
            copy.finish().await
        }
        .await;
        self.copy_buffers.give(buf);
        match direct {
            Ok(rows) => {
                sqlx::query("RELEASE SAVEPOINT agentctl_direct").execute(&mut **c).await?;
                Ok((Counted { inserted: rows as i64, ..Counted::default() }, hashes))
            }
            Err(e) => match fault(&e) {
                Fault::Transient => Err(Failure::Transient(e)),
                // Not the rows' doing: nothing of the batch is written and nothing rejected;
                // the entity stops at its last checkpoint with the cause.
                Fault::System => Err(Failure::Fatal(system_fault(&b.target, &e))),
                Fault::Row => {
                    sqlx::query("ROLLBACK TO SAVEPOINT agentctl_direct").execute(&mut **c).await?;
                    Ok((self.staged(c, b, keep, &cols, aside, deferrable).await?, Vec::new()))
                }
            },
        }
    }

    /// The careful path: stage the rows as text, skip the ones already present, insert the rest
    /// set-based with casts, and split refused ranges until the refusing rows stand alone.
    async fn staged(
        &self,
        c: &mut crate::pg::Held,
        b: &Batch,
        keep: &[usize],
        cols: &str,
        aside: KeysAside,
        deferrable: bool,
    ) -> Result<Counted, Failure> {
        // While the primary key is set aside for the load, the table was empty when the load
        // began and holds only its batches before this one, of lower legacy keys: no row of
        // this batch can be there already. While only the legacy key is, every row in the table
        // is agentctl's, so a row is present exactly when its UUID is: looked up by the primary
        // key instead of a scan.
        let legacy =
            b.columns.iter().position(|(name, _)| name == "legacy_id").filter(|_| !aside.primary);
        stage(c, b, keep).await?;
        let matches = |i: usize| match aside.legacy {
            true => format!("t.id = s.c{}::uuid", b.id_column),
            false => format!("t.legacy_id = s.c{i}::{}", b.columns[i].1),
        };
        let present_filter = match legacy {
            Some(i) => format!(
                " AND NOT EXISTS (SELECT 1 FROM {} t WHERE {})",
                quoted(&b.target),
                matches(i)
            ),
            None => String::new(),
        };
        let present_sql = legacy.map(|i| {
            format!(
                "SELECT s.seq FROM agentctl_stage s WHERE EXISTS (SELECT 1 FROM {} t WHERE {})",
                quoted(&b.target),
                matches(i)
            )
        });
        let present_rows: HashSet<usize> = match &present_sql {
            Some(sql) => sqlx::query_scalar::<_, i32>(sql)
                .fetch_all(&mut **c)
                .await?
                .into_iter()
                .map(|seq| seq as usize)
                .collect(),
            None => HashSet::new(),
        };
        let present = present_rows.len() as i64;
        let kept = match (legacy, present > 0, aside.legacy) {
            (Some(i), true, false) => record_kept(c, b, i).await?,
            _ => 0,
        };
        let casts: Vec<String> =
            b.columns.iter().enumerate().map(|(i, (_, ty))| format!("s.c{i}::{ty}")).collect();
        // A row that takes a unique key another row already has is skipped by the statement
        // (the first in the batch keeps it) instead of failing it: a batch with many such rows
        // is not split down to single rows. Not where a unique or exclusion constraint is
        // deferrable, which ON CONFLICT refuses outright.
        let skips = !deferrable;
        let insert = format!(
            "INSERT INTO {} ({cols}) SELECT {} FROM agentctl_stage s WHERE s.seq BETWEEN $1 AND \
                $2{present_filter} ORDER BY s.seq{} RETURNING {}::text",
            quoted(&b.target),
            casts.join(", "),
            if skips { " ON CONFLICT DO NOTHING" } else { "" },
            ident(&b.columns[b.id_column].0)
        );
        let range = keep.first().zip(keep.last()).map(|(lo, hi)| (*lo, *hi));
        let (rows, mut refused) =
            crate::diff::split_run(c, &insert, range).await.map_err(|e| match fault(&e) {
                Fault::Transient => Failure::Transient(e),
                Fault::Row | Fault::System => Failure::Fatal(system_fault(&b.target, &e)),
            })?;
        let inserted = rows.len() as i64;
        if skips {
            // Skipped: neither present, nor written (by its UUID), nor refused by an error.
            let written: HashSet<uuid::Uuid> =
                rows.iter().filter_map(|id| uuid::Uuid::try_parse(id).ok()).collect();
            let failed: HashSet<usize> = refused.iter().map(|(seq, _)| *seq).collect();
            let skipped: Vec<i32> = keep
                .iter()
                .filter(|seq| !present_rows.contains(seq) && !failed.contains(seq))
                .filter(|&&seq| {
                    !b.rows
                        .get(seq, b.id_column)
                        .and_then(|id| uuid::Uuid::try_parse(id).ok())
                        .is_some_and(|id| written.contains(&id))
                })
                .map(|&seq| seq as i32)
                .collect();
            if !skipped.is_empty() {
                refused.extend(why_skipped(c, b, &skipped).await?);
            }
        }
        sqlx::query("DROP TABLE agentctl_stage").execute(&mut **c).await?;
        Ok(Counted { inserted, present, kept, refused })
    }
}

/// What writing a batch's rows found.
#[derive(Default)]
struct Counted {
    inserted: i64,
    /// Rows in the target already.
    present: i64,
    /// Of the present rows, those that were there before agentctl.
    kept: i64,
    /// Rows the target refused (by their place in the batch), with the server's reason.
    refused: Vec<(usize, String)>,
}

/// When every row of `keep` is in the target already (a second run over a finished one, a
/// resumed one), by its legacy key: how many, and how many of them were there before
/// agentctl (recorded as [`record_kept`] does). Two index probes tell a batch that may be
/// (its first and last rows there), then one lookup of its keys: where a COPY that failed on
/// the first row and staging every row to find them cost a second run almost twice the first
/// (bench/RESULTS.md). `None`, with nothing recorded, when a row is missing, and without a
/// look when no row can be there (the keys set aside for a load into an empty table).
async fn already_there(
    c: &mut sqlx::PgConnection,
    b: &Batch,
    keep: &[usize],
    aside: KeysAside,
) -> Result<Option<(i64, i64)>, sqlx::Error> {
    let Some(i) = b.columns.iter().position(|(name, _)| name == "legacy_id") else {
        return Ok(None);
    };
    let (Some(&first), Some(&last), false, false) =
        (keep.first(), keep.last(), aside.primary, aside.legacy)
    else {
        return Ok(None);
    };
    let probe = format!(
        "SELECT count(*) FROM {} WHERE legacy_id IN ($1::{ty}, $2::{ty})",
        quoted(&b.target),
        ty = b.columns[i].1
    );
    let ends: i64 = sqlx::query_scalar(&probe)
        .bind(b.rows.get(first, i))
        .bind(b.rows.get(last, i))
        .fetch_one(&mut *c)
        .await?;
    if ends < if first == last { 1 } else { 2 } {
        return Ok(None);
    }
    let mut legacy = Vec::with_capacity(keep.len());
    let mut ids = Vec::with_capacity(keep.len());
    for &seq in keep {
        let id = b.rows.get(seq, b.id_column).and_then(|id| uuid::Uuid::try_parse(id).ok());
        match (b.rows.get(seq, i), id) {
            (Some(key), Some(id)) => {
                legacy.push(key);
                ids.push(id);
            }
            _ => return Ok(None),
        }
    }
    // Recorded only when every row is there: otherwise the staged path records them.
    let (present, kept): (i64, i64) = sqlx::query_as(&format!(
        "WITH there AS (
             SELECT t.legacy_id, t.id, b.id AS derived
             FROM unnest($4::text[], $5::uuid[]) AS b (legacy, id)
             JOIN {} t ON t.legacy_id = b.legacy::{}),
         kept AS (
             SELECT legacy_id::text AS legacy_id, id FROM there
             WHERE id <> derived AND (SELECT count(*) FROM there) = $6),
         {RECORD_KEPT}
         SELECT count(*), count(*) FILTER (WHERE id <> derived) FROM there",
        quoted(&b.target),
        b.columns[i].1
    ))
    .bind(b.source.to_string())
    .bind(b.target.to_string())
    .bind(b.run_id.0)
    .bind(&legacy)
    .bind(&ids)
    .bind(keep.len() as i64)
    .fetch_one(&mut *c)
    .await?;
    Ok((present == keep.len() as i64).then_some((present, kept)))
}

/// Stages the kept rows of the batch as text, for the careful path.
async fn stage(c: &mut sqlx::PgConnection, b: &Batch, keep: &[usize]) -> Result<(), sqlx::Error> {
    let n = b.columns.len();
    let stage_cols: Vec<String> = (0..n).map(|i| format!("c{i} text")).collect();
    // Keyed on `seq`: the careful path inserts the rows of a range of it, and splits a refused
    // range in two, down to single rows; without the key each of those statements read the
    // whole stage (a batch with a refused row in every few went from seconds to over ten minutes).
    let create = format!(
        "CREATE TEMP TABLE IF NOT EXISTS agentctl_stage (seq int4 PRIMARY KEY, {}) ON COMMIT DROP",
        stage_cols.join(", ")
    );
    sqlx::query(&create).execute(&mut *c).await?;
    let mut buf = Vec::with_capacity(keep.len() * 64 * n.max(1));
    for &seq in keep {
        buf.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
        for v in b.rows.row(seq) {
            buf.push(b'\t');
            push_field(&mut buf, v);
        }
        buf.push(b'\n');
    }
    let mut copy = c.copy_in_raw("COPY agentctl_stage FROM STDIN").await?;
    crate::pg::send_copy(&mut copy, &buf).await?;
    copy.finish().await?;
    Ok(())
}

/// The statement of a `WITH` that records the rows of a `kept (legacy_id text, id uuid)` before
/// it as kept from before agentctl, with the source table, target table and run as $1 to $3.
const RECORD_KEPT: &str = "recorded AS (
    INSERT INTO agentctl.migration_mappings (source_table, legacy_id, target_table, id, run_id, created)
    SELECT $1, legacy_id, $2, id, $3, false FROM kept
    ON CONFLICT (source_table, legacy_id) DO NOTHING)";

/// A row already in the target under a UUID of its own was there before agentctl: it
/// keeps its UUID, and the record says so, so that a rollback never deletes it. Returns how
/// many of the batch's rows are such rows (recorded now or by an earlier run).
async fn record_kept(c: &mut sqlx::PgConnection, b: &Batch, i: usize) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "WITH kept AS (
             SELECT t.legacy_id::text AS legacy_id, t.id
             FROM agentctl_stage s JOIN {} t ON t.legacy_id = s.c{i}::{}
             WHERE t.id <> s.c{}::uuid),
         {RECORD_KEPT}
         SELECT count(*) FROM kept",
        quoted(&b.target),
        b.columns[i].1,
        b.id_column
    ))
    .bind(b.source.to_string())
    .bind(b.target.to_string())
    .bind(b.run_id.0)
    .fetch_one(&mut *c)
    .await
}

/// Records in the load baseline the rows of `keep` this batch wrote, by range of legacy key:
/// with the hashes made while encoding them (`hashes`, one a row of `keep`, or none), the
/// server's for the rows without one. The entity's first batch drops what an earlier load of
/// the table recorded.
async fn record_written(
    c: &mut sqlx::PgConnection,
    b: &Batch,
    keep: &[usize],
    hashes: &[Option<i64>],
) -> Result<(), sqlx::Error> {
    let target = b.target.to_string();
    if b.before.batches == 0 {
        crate::diff::forget_baseline(c, &b.target).await?;
    }
    let legacy = b.columns.iter().position(|(name, _)| name == "legacy_id");
    let mut keys = Vec::with_capacity(keep.len());
    let mut sums = Vec::with_capacity(keep.len());
    // The rows recorded, by their place in the batch: a staged batch's rows that the insert
    // skipped are not in the table, and not in its record.
    let mut recorded = Vec::with_capacity(keep.len());
    let mut ask = std::collections::HashMap::new();
    for (i, &seq) in keep.iter().enumerate() {
        let key = legacy.and_then(|l| b.rows.get(seq, l)?.trim().parse::<i64>().ok());
        match (key, hashes.get(i).copied().flatten()) {
            (Some(k), Some(h)) => {
                keys.push(k);
                sums.push(h);
                recorded.push(seq);
            }
            _ => {
                let id = b.rows.get(seq, b.id_column).and_then(|id| uuid::Uuid::try_parse(id).ok());
                ask.extend(id.map(|id| (id, seq)));
            }
        }
    }
    if !ask.is_empty() {
        let hashed = b.baseline_columns();
        let types = crate::diff::HashTypes::of(c, hashed.iter().map(|(_, t)| t.as_str())).await?;
        let sql = format!(
            "SELECT t.id, t.legacy_id::int8, {} FROM {} t WHERE t.id = ANY($1::uuid[])",
            types.row("t", &hashed),
            quoted(&b.target)
        );
        let ids: Vec<uuid::Uuid> = ask.keys().copied().collect();
        let found = sqlx::query_as::<_, (uuid::Uuid, i64, i64)>(&sql).bind(&ids);
        for (id, k, h) in found.fetch_all(&mut *c).await? {
            keys.push(k);
            sums.push(h);
            recorded.extend(ask.get(&id));
        }
    }
    // In key order: a lookup finds a key in its batch's record by binary search.
    let mut pairs: Vec<(i64, i64)> = keys.into_iter().zip(sums).collect();
    pairs.sort_unstable();
    let (keys, sums): (Vec<i64>, Vec<i64>) = pairs.into_iter().unzip();
    let (Some(&lo), Some(&hi)) = (keys.first(), keys.last()) else {
        return Ok(());
    };
    // What a validation proves the page by: its fingerprint, its rows, its money written.
    let page_rows = b.page_hash.map(|_| b.page.len() as i32);
    let money: Option<Vec<i64>> = b.page_hash.map(|_| {
        let total = |m: usize| -> i64 {
            recorded
                .iter()
                .map(|&seq| runtime::domain::cents(b.rows.get(seq, m)))
                .fold(0, i64::saturating_add)
        };
        b.money.iter().map(|&m| total(m)).collect()
    });
    sqlx::query(
        "INSERT INTO agentctl.load_baseline
             (target_table, bucket, int_keys, hashes, lo, hi, page_hash, page_rows, money)
         VALUES ($1, nextval('agentctl.load_baseline_range'), $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&target)
    .bind(&keys)
    .bind(&sums)
    .bind(lo)
    .bind(hi)
    .bind(b.page_hash)
    .bind(page_rows)
    .bind(money)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// The unique key each of the staged rows `seqs` (skipped by ON CONFLICT DO NOTHING) takes
/// from a row already in the target, in the words the server uses for the same refusal.
async fn why_skipped(
    c: &mut sqlx::PgConnection,
    b: &Batch,
    seqs: &[i32],
) -> Result<Vec<(usize, String)>, sqlx::Error> {
    // Every plain unique index: its name and columns (no expression, no predicate).
    let indexes: Vec<(String, Vec<String>)> = sqlx::query_as(
        "SELECT x.relname::text, array_agg(a.attname::text ORDER BY k.n)
         FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid
         CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, n)
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indrelid = $1::regclass AND i.indisunique AND i.indexprs IS NULL AND i.indpred IS NULL
         GROUP BY x.relname ORDER BY x.relname",
    )
    .bind(quoted(&b.target))
    .fetch_all(&mut *c)
    .await?;
    let mut why: BTreeMap<usize, String> = BTreeMap::new();
    for (index, columns) in indexes {
        let at: Option<Vec<usize>> =
            columns.iter().map(|col| b.columns.iter().position(|(name, _)| name == col)).collect();
        let Some(at) = at else { continue };
        let same: Vec<String> = at
            .iter()
            .map(|&i| format!("t.{} = s.c{i}::{}", ident(&b.columns[i].0), b.columns[i].1))
            .collect();
        // A skipped row is not in the target: any row there with its key is another one.
        let sql = format!(
            "SELECT s.seq FROM agentctl_stage s WHERE s.seq = ANY($1) AND EXISTS (SELECT 1 FROM \
                {} t WHERE {})",
            quoted(&b.target),
            same.join(" AND ")
        );
        let hit: Vec<i32> = sqlx::query_scalar(&sql).bind(seqs).fetch_all(&mut *c).await?;
        for seq in hit {
            why.entry(seq as usize).or_insert_with(|| {
                format!(
                    "duplicate key value violates unique constraint \"{index}\" (SQLSTATE 23505)"
                )
            });
        }
    }
    Ok(seqs
        .iter()
        .map(|&seq| {
            let seq = seq as usize;
            let reason = why.remove(&seq).unwrap_or_else(|| {
                "it conflicts with a row already in the target under one of its unique or \
                    exclusion constraints"
                    .to_owned()
            });
            (seq, reason)
        })
        .collect())
}

#[async_trait]
impl Loader for PgTarget {
    async fn checkpoint(
        &self,
        run: RunId,
        source: &TableName,
    ) -> Result<Option<Checkpoint>, ToolError> {
        let row = sqlx::query(
            "SELECT last_key, rows_read, migrated, kept, rejected, batches FROM \
            agentctl.migration_checkpoints WHERE run_id = $1 AND source_table = $2",
        )
        .bind(run.0)
        .bind(source.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(while_doing(format!("reading the checkpoint of {source}")))?;
        let get = |e| while_doing(format!("reading the checkpoint of {source}"))(e);
        Ok(match row {
            None => None,
            Some(r) => Some(Checkpoint {
                last_key: r.try_get("last_key").map_err(get)?,
                rows_read: r.try_get("rows_read").map_err(get)?,
                migrated: r.try_get("migrated").map_err(get)?,
                kept: r.try_get("kept").map_err(get)?,
                rejected: r.try_get("rejected").map_err(get)?,
                batches: r.try_get("batches").map_err(get)?,
            }),
        })
    }
    async fn write(&self, batch: &Batch) -> Result<Written, ToolError> {
        let what = format!("writing a batch of {}", batch.source);
        let (mut written, retries) =
            retrying(self.max_retries, &what, || self.try_write(batch)).await?;
        written.retries = retries;
        Ok(written)
    }
    async fn fill_deferred(
        &self,
        run: RunId,
        source: &TableName,
        target: &TableName,
        column: &str,
    ) -> Result<(i64, Vec<RejectedRow>), ToolError> {
        let what = format!("filling {target}.{column} in a second pass");
        let mut tx = self.pool.begin().await.map_err(while_doing(&what))?;
        let filled = sqlx::query(&format!(
            "UPDATE {t} c SET {col} = d.parent_id FROM agentctl.deferred_references d
             WHERE d.run_id = $1 AND d.target_table = $2 AND d.column_name = $3 AND d.child_id = c.id
               AND EXISTS (SELECT 1 FROM {t} p WHERE p.id = d.parent_id)",
            t = quoted(target),
            col = ident(column)
        ))
        .bind(run.0)
        .bind(target.to_string())
        .bind(column)
        .execute(&mut *tx)
        .await
        .map_err(while_doing(&what))?
        .rows_affected() as i64;
        // A child whose parent never arrived cannot stand as it was: it leaves, on the record.
        let orphans = sqlx::query(&format!(
            "DELETE FROM {t} c USING agentctl.deferred_references d
             WHERE d.run_id = $1 AND d.target_table = $2 AND d.column_name = $3 AND d.child_id = c.id
               AND NOT EXISTS (SELECT 1 FROM {t} p WHERE p.id = d.parent_id)
             RETURNING c.legacy_id::text AS k, row_to_json(c)::jsonb AS j",
            t = quoted(target)
        ))
        .bind(run.0)
        .bind(target.to_string())
        .bind(column)
        .fetch_all(&mut *tx)
        .await
        .map_err(while_doing(&what))?;
        let rejected = record_removed(&mut tx, run, source, target, column, &orphans)
            .await
            .map_err(while_doing(&what))?;
        tx.commit().await.map_err(while_doing(&what))?;
        Ok((filled, rejected))
    }
    async fn drop_dangling(
        &self,
        run: RunId,
        (source, target): (&TableName, &TableName),
        column: &str,
        parents: &[TableName],
    ) -> Result<Vec<RejectedRow>, ToolError> {
        let what = format!("removing the rows of {target} whose {column} points at no row");
        let mut tx = self.pool.begin().await.map_err(while_doing(&what))?;
        let mut rejected = Vec::new();
        let col = ident(column);
        let id = super::as_parent_id(&mut *tx, (target, "c"), column)
            .await
            .map_err(while_doing(&what))?;
        let absent = in_none_of(parents, &id);
        // A row removed can be the parent of another: again until none is left dangling.
        loop {
            let dangling = sqlx::query(&format!(
                "DELETE FROM {t} c WHERE c.{col} IS NOT NULL AND {absent}
                 RETURNING c.legacy_id::text AS k, row_to_json(c)::jsonb AS j",
                t = quoted(target),
            ))
            .fetch_all(&mut *tx)
            .await
            .map_err(while_doing(&what))?;
            if dangling.is_empty() {
                break;
            }
            rejected.extend(
                record_removed(&mut tx, run, source, target, column, &dangling)
                    .await
                    .map_err(while_doing(&what))?,
            );
        }
        // A load that recorded its baseline batch by batch recorded these rows too: agentctl
        // deleted them, so they have none now (a NULL hash overrides the load's record).
        let gone: Vec<&str> = rejected.iter().map(|r| r.legacy_key.as_str()).collect();
        if !gone.is_empty() {
            sqlx::query(
                "INSERT INTO agentctl.sync_baseline (target_table, legacy_key, hash) SELECT $1, k, NULL FROM unnest($2::text[]) k
                 ON CONFLICT (target_table, legacy_key) DO UPDATE SET hash = NULL",
            )
            .bind(target.to_string())
            .bind(&gone)
            .execute(&mut *tx)
            .await
            .map_err(while_doing(&what))?;
        }
        tx.commit().await.map_err(while_doing(&what))?;
        Ok(rejected)
    }
    async fn record_source_rows(
        &self,
        run: RunId,
        source: &TableName,
        rows: &[(String, serde_json::Value)],
    ) -> Result<(), ToolError> {
        let (keys, json): (Vec<&str>, Vec<&serde_json::Value>) =
            rows.iter().map(|(k, j)| (k.as_str(), j)).unzip();
        sqlx::query(
            "UPDATE agentctl.rejected_rows r SET source_row = s.j
             FROM unnest($3::text[], $4::jsonb[]) AS s (k, j)
             WHERE r.run_id = $1 AND r.source_table = $2 AND r.legacy_key = s.k",
        )
        .bind(run.0)
        .bind(source.to_string())
        .bind(&keys)
        .bind(&json)
        .execute(&self.pool)
        .await
        .map_err(while_doing(format!("recording the source rows of rejected rows of {source}")))?;
        Ok(())
    }
    async fn kept_rows(
        &self,
        target: &TableName,
        ours: Option<(uuid::Uuid, uuid::Uuid)>,
    ) -> Result<Vec<(String, String)>, ToolError> {
        let has_legacy: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = $1 AND \
                table_name = $2 AND column_name = 'legacy_id')",
        )
        .bind(&target.schema)
        .bind(&target.name)
        .fetch_one(&self.pool)
        .await
        .map_err(while_doing(format!("looking for legacy_id in {target}")))?;
        if !has_legacy {
            return Ok(Vec::new());
        }
        // Outside the range of `ours`: two index ranges, where comparing every row's UUID as
        // text with the table's tag read the whole table (130 ms for tasks' 768k rows, none kept).
        let sql = format!(
            "SELECT t.legacy_id::text, t.id::text FROM {} t WHERE t.legacy_id IS NOT NULL AND \
                ($1::uuid IS NULL OR t.id < $1 OR t.id > $2)",
            quoted(target)
        );
        let rows: Vec<(String, String)> = sqlx::query_as(&sql)
            .bind(ours.map(|r| r.0))
            .bind(ours.map(|r| r.1))
            .fetch_all(&self.pool)
            .await
            .map_err(while_doing(format!(
                "reading the rows of {target} agentctl did not create"
            )))?;
        Ok(rows)
    }
    async fn table_rows(&self, target: &TableName, live: bool) -> Result<i64, ToolError> {
        let filter = if live { " WHERE deleted_at IS NULL" } else { "" };
        Ok(sqlx::query_scalar(&format!("SELECT count(*) FROM {}{filter}", quoted(target)))
            .fetch_one(&self.pool)
            .await
            .map_err(while_doing(format!("counting the rows of {target}")))?)
    }
    async fn preflight(
        &self,
        tables: &[TableName],
        set_aside: bool,
    ) -> Result<Vec<String>, ToolError> {
        let what = "checking what the load may do";
        let mut problems = Vec::new();
        for table in tables {
            let quoted_name = quoted(table);
            let row: Option<(bool, bool, bool, bool, bool, String, String)> = sqlx::query_as(
                "SELECT has_table_privilege(c.oid, 'SELECT'), has_table_privilege(c.oid, 'INSERT'), has_table_privilege(c.oid, 'UPDATE'),
                        has_table_privilege(c.oid, 'DELETE'), pg_has_role(c.relowner, 'USAGE'), pg_get_userbyid(c.relowner)::text, current_user::text
                 FROM pg_class c WHERE c.oid = to_regclass($1)",
            )
            .bind(&quoted_name)
            .fetch_optional(&self.pool)
            .await
            .map_err(while_doing(what))?;
            let Some((select, insert, update, delete, owns, owner, me)) = row else {
                problems.push(format!("{table}: no such table in the target"));
                continue;
            };
            let missing: Vec<&str> =
                [("SELECT", select), ("INSERT", insert), ("UPDATE", update), ("DELETE", delete)]
                    .into_iter()
                    .filter(|(_, has)| !has)
                    .map(|(p, _)| p)
                    .collect();
            if !missing.is_empty() {
                problems.push(format!(
                    "{table}: {me} lacks {} on it (GRANT {} ON {quoted_name} TO {me})",
                    missing.join(", "),
                    missing.join(", ")
                ));
            }
            if set_aside && !owns {
                problems.push(format!(
                    "{table}: owned by {owner}, not {me}, so its foreign keys and indexes cannot \
                        be set aside for the load (run as {owner}, or with --keep-constraints)"
                ));
            }
            let drawn: Vec<(String, String)> = sqlx::query_as(DRAWN_SEQUENCES)
                .bind(&quoted_name)
                .fetch_all(&self.pool)
                .await
                .map_err(while_doing(what))?;
            for (column, sequence) in drawn {
                let may: bool = sqlx::query_scalar("SELECT has_sequence_privilege($1, 'UPDATE')")
                    .bind(&sequence)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(while_doing(what))?;
                if !may {
                    problems.push(format!(
                        "{table}.{column}: {me} cannot move its sequence {sequence} past the \
                            migrated rows (GRANT UPDATE ON SEQUENCE {sequence} TO {me})"
                    ));
                }
            }
        }
        Ok(problems)
    }
    async fn restart_sequences(&self, target: &TableName) -> Result<Vec<(String, i64)>, ToolError> {
        let what = format!("moving the sequences of {target} past its rows");
        let table = quoted(target);
        // An identity column's own sequence, and any sequence a column's default calls.
        let drawn: Vec<(String, String)> = sqlx::query_as(DRAWN_SEQUENCES)
            .bind(&table)
            .fetch_all(&self.pool)
            .await
            .map_err(while_doing(&what))?;
        let mut moved = Vec::new();
        for (column, sequence) in drawn {
            // Forward only, and only past what the table holds: never back over values the
            // sequence already handed out.
            let to: Option<i64> = sqlx::query_scalar(&format!(
                "SELECT setval($1::regclass, m) FROM (SELECT max({col})::int8 AS m FROM {table}) x
                 WHERE m IS NOT NULL AND m > (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM {sequence})",
                col = ident(&column)
            ))
            .bind(&sequence)
            .fetch_optional(&self.pool)
            .await
            .map_err(while_doing(&what))?;
            if let Some(to) = to {
                moved.push((sequence, to));
            }
        }
        Ok(moved)
    }
    async fn set_state(
        &self,
        run: RunId,
        source: &TableName,
        target: &TableName,
        state: &str,
        source_rows: Option<i64>,
        detail: Option<&str>,
    ) -> Result<(), ToolError> {
        sqlx::query(
            "INSERT INTO agentctl.migration_control (run_id, source_table, target_table, state, source_rows, started_at, detail)
             VALUES ($1, $2, $3, $4, $5, now(), $6)
             ON CONFLICT (run_id, source_table) DO UPDATE SET state = $4, source_rows = coalesce($5, migration_control.source_rows),
                 detail = $6, finished_at = CASE WHEN $4 IN ('done', 'failed') THEN now() END",
        )
        .bind(run.0)
        .bind(source.to_string())
        .bind(target.to_string())
        .bind(state)
        .bind(source_rows)
        .bind(detail)
        .execute(&self.pool)
        .await
        .map_err(while_doing(format!("recording the state of {source}")))?;
        Ok(())
    }
}
