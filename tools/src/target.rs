//! Writing migrated rows: one transaction a batch. The mapped values are COPYed as text into a
//! temporary stage, then inserted set-based with the casts the target columns need. A range
//! the target refuses is split under savepoints until the refusing rows stand alone; each is
//! recorded in `agentctl.rejected_rows` with the database's own words, never dropped. The
//! batch's rows, its rejects, its `migration_mappings` records, its second-pass references and
//! its checkpoint commit together, so a crash leaves either all of a batch or none of it.
//! Rows whose legacy key is already in the target (a resumed or repeated run) are counted as
//! present and keep their UUID.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use runtime::domain::TableName;
use runtime::ports::{Batch, Checkpoint, RejectedRow, Target, ToolError, Written};
use runtime::RunId;
use sqlx::{PgPool, Row};

use crate::catalog::{ident, quoted};
use crate::dataset::copy::push_field;
use crate::pg::{describe, while_doing, DbError};

pub struct PgTarget {
    pool: PgPool,
    max_retries: u32,
}

impl PgTarget {
    pub fn new(pool: PgPool, max_retries: u32) -> PgTarget {
        PgTarget { pool, max_retries }
    }
}

/// SQLSTATE classes that say "try again" rather than "this row is wrong".
pub fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            matches!(db.code().as_deref(), Some("40001" | "40P01" | "53300" | "57P01" | "57P02" | "57P03" | "08000" | "08003" | "08006"))
        }
        _ => false,
    }
}

enum Failure {
    Transient(sqlx::Error),
    Fatal(DbError),
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        if is_transient(&e) {
            Failure::Transient(e)
        } else {
            Failure::Fatal(DbError(describe(&e)))
        }
    }
}

impl PgTarget {
    async fn try_write(&self, b: &Batch) -> Result<Written, Failure> {
        let mut c = self.pool.acquire().await?;
        sqlx::query("BEGIN").execute(&mut *c).await?;
        let n = b.columns.len();
        // Rows whose parent is not in the target are set aside first, with the reason: one
        // indexed lookup a reference column, not a failed insert a row.
        let mut orphans: BTreeMap<usize, String> = BTreeMap::new();
        for (col, parent) in &b.references {
            let wanted: Vec<String> = {
                let mut v: Vec<String> = b.rows.iter().filter_map(|r| r[*col].clone()).collect();
                v.sort_unstable();
                v.dedup();
                v
            };
            let sql = format!("SELECT id::text FROM {} WHERE id = ANY($1::uuid[])", quoted(parent));
            let found: Vec<String> = sqlx::query_scalar(&sql).bind(&wanted).fetch_all(&mut *c).await?;
            let found: HashSet<String> = found.into_iter().collect();
            let name = &b.columns[*col].0;
            for (seq, row) in b.rows.iter().enumerate() {
                if row[*col].as_ref().is_some_and(|v| !found.contains(v)) {
                    // The first missing parent a row has is the reason given for it.
                    orphans
                        .entry(seq)
                        .or_insert_with(|| format!("{}.{name}: the {} row it points at is not in the target", b.target.name, parent.name));
                }
            }
        }
        let keep: Vec<usize> = (0..b.rows.len()).filter(|seq| !orphans.contains_key(seq)).collect();
        let cols: Vec<String> = b.columns.iter().map(|(name, _)| ident(name)).collect();
        let cols = cols.join(", ");

        // Fast path: COPY straight into the target. Anything it refuses (a duplicate, a row
        // already there) undoes just this attempt, and the staged path below sorts it out.
        sqlx::query("SAVEPOINT agentctl_direct").execute(&mut *c).await?;
        let mut buf = Vec::with_capacity(keep.len() * 64 * n.max(1));
        for &seq in &keep {
            for (i, v) in b.rows[seq].iter().enumerate() {
                if i > 0 {
                    buf.push(b'\t');
                }
                push_field(&mut buf, v.as_deref());
            }
            buf.push(b'\n');
        }
        let direct = async {
            let mut copy = c.copy_in_raw(&format!("COPY {} ({cols}) FROM STDIN", quoted(&b.target))).await?;
            copy.send(buf).await?;
            copy.finish().await
        }
        .await;
        let (inserted, present, refused) = match direct {
            Ok(rows) => {
                sqlx::query("RELEASE SAVEPOINT agentctl_direct").execute(&mut *c).await?;
                (rows as i64, 0, Vec::new())
            }
            Err(e) if is_transient(&e) => return Err(Failure::Transient(e)),
            Err(_) => {
                sqlx::query("ROLLBACK TO SAVEPOINT agentctl_direct").execute(&mut *c).await?;
                self.staged(&mut c, b, &keep, &cols).await?
            }
        };
        let mut refused_rows: Vec<RejectedRow> = Vec::with_capacity(refused.len() + orphans.len());
        let mut refused_seqs: HashSet<usize> = HashSet::with_capacity(refused.len() + orphans.len());
        for (seq, why) in &orphans {
            refused_seqs.insert(*seq);
            refused_rows.push(RejectedRow {
                legacy_key: b.keys[*seq].clone(),
                column: None,
                rule: "reference".into(),
                reason: why.clone(),
                row: b.source_json(*seq),
            });
        }
        for (seq, why) in &refused {
            refused_seqs.insert(*seq);
            refused_rows.push(RejectedRow {
                legacy_key: b.keys[*seq].clone(),
                column: None,
                rule: "refused_by_target".into(),
                reason: format!("{}: the target refused the row: {why}", b.target.name),
                row: b.source_json(*seq),
            });
        }

        // The record of every row created, and of every row left out.
        let mut keys: Vec<String> = Vec::with_capacity(b.keys.len());
        let mut ids: Vec<String> = Vec::with_capacity(b.keys.len());
        for (i, (k, id)) in b.keys.iter().zip(&b.ids).enumerate() {
            if !refused_seqs.contains(&i) {
                keys.push(k.clone());
                ids.push(id.clone());
            }
        }
        // A row already in the target under its own UUID is recorded with that UUID, as not
        // created; the rows this batch wrote are recorded as created.
        sqlx::query(&format!(
            "INSERT INTO agentctl.migration_mappings (source_table, legacy_id, target_table, id, run_id, created)
             SELECT $1, u.k, $2, coalesce(t.id, u.i::uuid), $3, t.id IS NULL OR t.id = u.i::uuid
             FROM UNNEST($4::text[], $5::text[]) AS u(k, i)
             LEFT JOIN {} t ON t.legacy_id::text = u.k
             ON CONFLICT (source_table, legacy_id) DO NOTHING",
            quoted(&b.target)
        ))
        .bind(b.source.to_string())
        .bind(b.target.to_string())
        .bind(b.run_id.0)
        .bind(&keys)
        .bind(&ids)
        .execute(&mut *c)
        .await?;
        let all_rejects: Vec<&RejectedRow> = b.rejected.iter().chain(&refused_rows).collect();
        // Columns built before the await: a closure kept alive across it defeats `Send`.
        let r_keys: Vec<String> = all_rejects.iter().map(|r| r.legacy_key.clone()).collect();
        let r_cols: Vec<Option<String>> = all_rejects.iter().map(|r| r.column.clone()).collect();
        let r_rules: Vec<String> = all_rejects.iter().map(|r| r.rule.clone()).collect();
        let r_reasons: Vec<String> = all_rejects.iter().map(|r| r.reason.clone()).collect();
        let r_rows: Vec<serde_json::Value> = all_rejects.iter().map(|r| r.row.clone()).collect();
        let d_child: Vec<String> = b.deferred.iter().map(|d| d.0.clone()).collect();
        let d_col: Vec<String> = b.deferred.iter().map(|d| d.1.clone()).collect();
        let d_parent: Vec<String> = b.deferred.iter().map(|d| d.2.clone()).collect();
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
        let checkpoint = Checkpoint {
            last_key: b.last_key.clone(),
            rows_read: b.before.rows_read + b.rows_read,
            migrated: b.before.migrated + inserted + present,
            rejected: b.before.rejected + all_rejects.len() as i64,
            batches: b.before.batches + 1,
        };
        sqlx::query(
            "INSERT INTO agentctl.migration_checkpoints (run_id, source_table, last_key, rows_read, migrated, rejected, batches)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (run_id, source_table) DO UPDATE SET last_key = $3, rows_read = $4, migrated = $5, rejected = $6, batches = $7, updated_at = now()",
        )
        .bind(b.run_id.0)
        .bind(b.source.to_string())
        .bind(&checkpoint.last_key)
        .bind(checkpoint.rows_read)
        .bind(checkpoint.migrated)
        .bind(checkpoint.rejected)
        .bind(checkpoint.batches)
        .execute(&mut *c)
        .await?;
        sqlx::query("COMMIT").execute(&mut *c).await?;
        Ok(Written { inserted, present, refused: refused_rows, checkpoint, retries: 0 })
    }
}

impl PgTarget {
    /// The careful path: stage the rows as text, skip the ones already present, insert the rest
    /// set-based with casts, and split refused ranges until the refusing rows stand alone.
    async fn staged(
        &self,
        c: &mut sqlx::pool::PoolConnection<sqlx::Postgres>,
        b: &Batch,
        keep: &[usize],
        cols: &str,
    ) -> Result<(i64, i64, Vec<(usize, String)>), Failure> {
        let n = b.columns.len();
        let stage_cols: Vec<String> = (0..n).map(|i| format!("c{i} text")).collect();
        let create =
            format!("CREATE TEMP TABLE IF NOT EXISTS agentctl_stage (seq int4 NOT NULL, {}) ON COMMIT DROP", stage_cols.join(", "));
        sqlx::query(&create).execute(&mut **c).await?;
        let mut buf = Vec::with_capacity(keep.len() * 64 * n.max(1));
        for &seq in keep {
            buf.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
            for v in &b.rows[seq] {
                buf.push(b'\t');
                push_field(&mut buf, v.as_deref());
            }
            buf.push(b'\n');
        }
        let mut copy = c.copy_in_raw("COPY agentctl_stage FROM STDIN").await?;
        copy.send(buf).await?;
        copy.finish().await?;
        let legacy = b.columns.iter().position(|(name, _)| name == "legacy_id");
        let present_filter = match legacy {
            Some(i) => format!(" AND NOT EXISTS (SELECT 1 FROM {} t WHERE t.legacy_id = s.c{i}::{})", quoted(&b.target), b.columns[i].1),
            None => String::new(),
        };
        let present_sql = legacy.map(|i| {
            format!(
                "SELECT count(*) FROM agentctl_stage s WHERE EXISTS (SELECT 1 FROM {} t WHERE t.legacy_id = s.c{i}::{})",
                quoted(&b.target),
                b.columns[i].1
            )
        });
        let present: i64 = match &present_sql {
            Some(sql) => sqlx::query_scalar(sql).fetch_one(&mut **c).await?,
            None => 0,
        };
        let casts: Vec<String> = b.columns.iter().enumerate().map(|(i, (_, ty))| format!("s.c{i}::{ty}")).collect();
        let insert = format!(
            "INSERT INTO {} ({cols}) SELECT {} FROM agentctl_stage s WHERE s.seq BETWEEN $1 AND $2{present_filter}",
            quoted(&b.target),
            casts.join(", ")
        );
        let mut refused: Vec<(usize, String)> = Vec::new();
        let mut inserted = 0i64;
        let mut ranges = match (keep.first(), keep.last()) {
            (Some(lo), Some(hi)) => vec![(*lo, *hi)],
            _ => vec![],
        };
        while let Some((lo, hi)) = ranges.pop() {
            sqlx::query("SAVEPOINT agentctl_range").execute(&mut **c).await?;
            // Bound first: a temporary in the match would hold the connection across the arms.
            let result = sqlx::query(&insert).bind(lo as i32).bind(hi as i32).execute(&mut **c).await;
            match result {
                Ok(done) => {
                    inserted += done.rows_affected() as i64;
                    sqlx::query("RELEASE SAVEPOINT agentctl_range").execute(&mut **c).await?;
                }
                Err(e) if is_transient(&e) => return Err(Failure::Transient(e)),
                Err(e) => {
                    sqlx::query("ROLLBACK TO SAVEPOINT agentctl_range").execute(&mut **c).await?;
                    if lo == hi {
                        refused.push((lo, describe(&e)));
                    } else {
                        let mid = lo + (hi - lo) / 2;
                        ranges.push((mid + 1, hi));
                        ranges.push((lo, mid));
                    }
                }
            }
        }
        sqlx::query("DROP TABLE agentctl_stage").execute(&mut **c).await?;
        Ok((inserted, present, refused))
    }
}

#[async_trait]
impl Target for PgTarget {
    async fn checkpoint(&self, run: RunId, source: &TableName) -> Result<Option<Checkpoint>, ToolError> {
        let row = sqlx::query("SELECT last_key, rows_read, migrated, rejected, batches FROM agentctl.migration_checkpoints WHERE run_id = $1 AND source_table = $2")
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
                rejected: r.try_get("rejected").map_err(get)?,
                batches: r.try_get("batches").map_err(get)?,
            }),
        })
    }

    async fn write(&self, batch: &Batch) -> Result<Written, ToolError> {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0;
        loop {
            match self.try_write(batch).await {
                Ok(mut w) => {
                    w.retries = attempt;
                    return Ok(w);
                }
                Err(Failure::Transient(e)) if attempt < self.max_retries => {
                    tracing::warn!("batch of {} failed ({}); retrying in {:?}", batch.source, describe(&e), delay);
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                Err(Failure::Transient(e)) => {
                    return Err(ToolError(format!(
                        "writing a batch of {} failed {} times, the last: {}",
                        batch.source,
                        attempt + 1,
                        describe(&e)
                    )))
                }
                Err(Failure::Fatal(e)) => return Err(ToolError(format!("writing a batch of {}: {}", batch.source, e.0))),
            }
        }
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
        let mut rejected = Vec::new();
        for r in &orphans {
            let key: String = r.try_get("k").map_err(while_doing(&what))?;
            rejected.push(RejectedRow {
                legacy_key: key,
                column: Some(column.to_owned()),
                rule: format!("reference:{column}"),
                reason: format!("{}.{column}: the row it points at was not migrated", target.name),
                row: r.try_get("j").map_err(while_doing(&what))?,
            });
        }
        for r in &rejected {
            sqlx::query("DELETE FROM agentctl.migration_mappings WHERE source_table = $1 AND legacy_id = $2")
                .bind(source.to_string())
                .bind(&r.legacy_key)
                .execute(&mut *tx)
                .await
                .map_err(while_doing(&what))?;
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
            .await
            .map_err(while_doing(&what))?;
        }
        if !rejected.is_empty() {
            sqlx::query("UPDATE agentctl.migration_checkpoints SET migrated = migrated - $3, rejected = rejected + $3 WHERE run_id = $1 AND source_table = $2")
                .bind(run.0)
                .bind(source.to_string())
                .bind(rejected.len() as i64)
                .execute(&mut *tx)
                .await
                .map_err(while_doing(&what))?;
        }
        tx.commit().await.map_err(while_doing(&what))?;
        Ok((filled, rejected))
    }

    async fn kept_rows(&self, target: &TableName) -> Result<Vec<(String, String)>, ToolError> {
        let has_legacy: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 AND column_name = 'legacy_id')",
        )
        .bind(&target.schema)
        .bind(&target.name)
        .fetch_one(&self.pool)
        .await
        .map_err(while_doing(format!("looking for legacy_id in {target}")))?;
        if !has_legacy {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT t.legacy_id::text, t.id::text FROM {} t
             WHERE NOT EXISTS (SELECT 1 FROM agentctl.migration_mappings m WHERE m.target_table = $1 AND m.id = t.id AND m.created)",
            quoted(target)
        );
        let rows: Vec<(String, String)> = sqlx::query_as(&sql)
            .bind(target.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(while_doing(format!("reading the rows of {target} agentctl did not create")))?;
        Ok(rows)
    }

    async fn mapped_rows(&self, source: &TableName) -> Result<i64, ToolError> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM agentctl.migration_mappings WHERE source_table = $1")
            .bind(source.to_string())
            .fetch_one(&self.pool)
            .await
            .map_err(while_doing(format!("counting the rows made from {source}")))?)
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
