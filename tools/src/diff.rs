//! Differential migration in the target: the sync baseline (a hash of what agentctl last
//! wrote to each row), the comparison of a page of expected rows with the target's rows and
//! the baseline, the analyses and their rows, and applying them, one transaction a batch.
//!
//! A row's hash is `hash_record_extended(ROW(columns), 0)` over the mapped columns as the
//! target holds them, each hashed by its type's own hash function (so values equal as typed
//! values hash equal: `1.5` and `1.50`, two spellings of one JSON document): an enum by its
//! own, a domain by its base type's; a column of a type without one (json, an array) is hashed
//! as its text. The expected side casts each value to its column's type first, so both sides
//! hash the same way. Baselines recorded before enums and domains were hashed typed (scheme 1:
//! they were hashed as their text) are compared with the row hashed that way.

use std::collections::{BTreeMap, HashMap};

use runtime::domain::TableName;
use runtime::domain::{
    integer_key, Change, DiffApplied, DiffBatch, Diffed, Differential, EntityDiff, Expected,
    SyncMark,
};
use runtime::mapping::{ConflictPolicy, DeleteMode};
use runtime::ports::ToolError;
use runtime::RunId;
use sqlx::postgres::PgConnection;
use sqlx::{PgPool, Row};

use crate::catalog::{ident, literal, quoted};
use crate::dataset::copy::push_field;
use crate::pg::{describe, fault, while_doing, Fault};
use crate::target::{discard_transaction, retrying, Failure};
use runtime::sql::in_none_of;

/// Deletes everything recorded of what agentctl wrote to `target`'s rows: the load's record and
/// the per-row one.
pub(crate) async fn forget_baseline(
    c: &mut PgConnection,
    target: &TableName,
) -> Result<(), sqlx::Error> {
    for sql in [
        "DELETE FROM agentctl.load_baseline WHERE target_table = $1",
        "DELETE FROM agentctl.sync_baseline WHERE target_table = $1",
    ] {
        sqlx::query(sql).bind(target.to_string()).execute(&mut *c).await?;
    }
    Ok(())
}

/// Types hashed by their own hash function; any other is hashed as its text.
const TYPED_HASH: &[&str] = &[
    "smallint",
    "integer",
    "bigint",
    "text",
    "boolean",
    "uuid",
    "numeric",
    "date",
    "timestamp with time zone",
    "timestamp without time zone",
    "jsonb",
    "bytea",
    "double precision",
    "real",
];

/// How the columns of a row hash are hashed, by type name (`format_type` text): the type to
/// cast a value to first, where it is not hashed as it is. A type it does not know is hashed by
/// name: as it is when listed in `TYPED_HASH`, else as its text. [`HashTypes::default`] knows
/// none, which is how every hash was made before scheme 2 (an enum or domain as its text).
#[derive(Clone, Debug, Default)]
pub struct HashTypes(HashMap<String, String>);

impl HashTypes {
    /// The hashing of `types` in the database `c` is connected to: an enum by its own hash
    /// function, a domain by its base type's when that has one, anything else by name.
    pub async fn of<'t>(
        c: &mut PgConnection,
        types: impl IntoIterator<Item = &'t str>,
    ) -> Result<HashTypes, sqlx::Error> {
        let asked: Vec<&str> = types.into_iter().filter(|t| !typed_by_name(t)).collect();
        if asked.is_empty() {
            return Ok(HashTypes::default());
        }
        let found: Vec<(String, String, String)> = sqlx::query_as(
            "WITH RECURSIVE b (name, oid) AS (
                 SELECT n, to_regtype(n)::oid FROM unnest($1::text[]) n WHERE to_regtype(n) IS NOT NULL
                 UNION ALL
                 SELECT b.name, t.typbasetype FROM b JOIN pg_type t ON t.oid = b.oid WHERE t.typtype = 'd')
             SELECT b.name, format_type(t.oid, NULL), t.typtype::text FROM b JOIN pg_type t ON t.oid = b.oid WHERE t.typtype <> 'd'",
        )
        .bind(&asked)
        .fetch_all(c)
        .await?;
        Ok(HashTypes(
            found
                .into_iter()
                .filter(|(_, base, kind)| kind == "e" || typed_by_name(base))
                .map(|(name, base, _)| (name, base))
                .collect(),
        ))
    }

    /// One column's part of a row hash: `expr` of type `ty`.
    pub fn part(&self, expr: String, ty: &str) -> String {
        match self.0.get(ty) {
            Some(base) => format!("({expr})::{base}"),
            None if typed_by_name(ty) => expr,
            None => format!("({expr})::text"),
        }
    }

    /// The hash of a row made of these (expression, type) parts.
    pub fn row_of(&self, parts: impl IntoIterator<Item = (String, String)>) -> String {
        let parts: Vec<String> = parts.into_iter().map(|(e, t)| self.part(e, &t)).collect();
        format!("hash_record_extended(ROW({}), 0)", parts.join(", "))
    }

    /// The hash of a target row's columns (name, type), `alias` the table's alias.
    pub(crate) fn row(&self, alias: &str, columns: &[(String, String)]) -> String {
        self.row_of(columns.iter().map(|(c, t)| (format!("{alias}.{}", ident(c)), t.clone())))
    }
}

/// A type hashed by its own hash function whatever the database.
fn typed_by_name(ty: &str) -> bool {
    let base = ty.split('(').next().unwrap_or(ty).trim();
    TYPED_HASH.contains(&base) || base.starts_with("character")
}

/// Records the load baseline of `target`: every row's key and hash, in buckets, by one
/// statement; an [`integer_key`] of type `legacy_type` kept as an integer (`int_keys`), any
/// other as its text. Returns the rows recorded.
pub async fn record_baseline(
    pool: &PgPool,
    target: &TableName,
    legacy_type: &str,
    columns: &[(String, String)],
) -> Result<i64, ToolError> {
    let what = format!("recording what agentctl wrote to {target}");
    let run = async {
        let mut tx = pool.begin().await?;
        // One pass over the table into an in-memory hash of the buckets: the planner, which
        // cannot know how few buckets there are, would otherwise sort every row (with its
        // columns, on disk) first; and no JIT compilation for a statement that runs once.
        for sql in
            ["SET LOCAL enable_sort = off", "SET LOCAL work_mem = '256MB'", "SET LOCAL jit = off"]
        {
            sqlx::query(sql).execute(&mut *tx).await?;
        }
        // The whole table is recorded again, the old record deleted first.
        forget_baseline(&mut tx, target).await?;
        // An integer key is kept as one, bucketed by its own hash: its text cost the statement a
        // third.
        let (keys, key, bucket) = match integer_key(legacy_type) {
            true => {
                ("int_keys", "t.legacy_id::int8", "agentctl.int_baseline_bucket(t.legacy_id::int8)")
            }
            false => ("keys", "t.legacy_id::text", "agentctl.baseline_bucket(t.legacy_id::text)"),
        };
        let types = HashTypes::of(&mut tx, columns.iter().map(|(_, t)| t.as_str())).await?;
        let insert = format!(
            "INSERT INTO agentctl.load_baseline (target_table, bucket, {keys}, hashes)
             SELECT $1, {bucket}, array_agg({key}), array_agg({})
             FROM {} t WHERE t.legacy_id IS NOT NULL GROUP BY 2",
            types.row("t", columns),
            quoted(target)
        );
        sqlx::query(&insert).bind(target.to_string()).execute(&mut *tx).await?;
        let recorded: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(cardinality(hashes)), 0)::int8 FROM \
                agentctl.load_baseline WHERE target_table = $1",
        )
        .bind(target.to_string())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(recorded)
    };
    run.await.map_err(while_doing(&what))
}

pub async fn differ(
    pool: &PgPool,
    target: &TableName,
    page: &Expected,
    hashed: &[usize],
    soft: bool,
) -> Result<Vec<Diffed>, ToolError> {
    let n = page.columns.len();
    let (id, legacy) = (page.id_column, page.legacy_column);
    let cast = |i: usize| format!("u.c{i}::{}", page.columns[i].1);
    let distinct: Vec<String> = hashed
        .iter()
        .map(|&i| runtime::sql::differs(&format!("t.{}", ident(&page.columns[i].0)), &cast(i)))
        .collect();
    let arrays: Vec<String> = (0..n).map(|i| format!("${}::text[]", i + 3)).collect();
    let cols: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    let from = format!(
        "unnest($1::text[], $2::bool[], {arrays}) WITH ORDINALITY AS u(k, wanted, {cols}, n)
         LEFT JOIN {table} t ON t.legacy_id = u.k::{legacy_type}",
        arrays = arrays.join(", "),
        cols = cols.join(", "),
        table = quoted(target),
        legacy_type = page.columns[legacy].1,
    );
    let what = || format!("comparing rows of {target} with their source rows and the last sync");
    let run = async |sql: &str, keys: &[String], wanted: &[bool], values: &[Vec<Option<&str>>]| {
        let mut q = sqlx::query(sql).bind(keys).bind(wanted);
        for column in values {
            q = q.bind(column);
        }
        q.fetch_all(pool).await.map_err(|e| while_doing(what())(e))
    };
    let decode = |e: sqlx::Error| while_doing(what())(e);
    // Every row: where it stands, each expression once.
    let sql = format!(
        "SELECT t.id IS NOT NULL, coalesce(t.id = {idcast}, false), {deleted},
             coalesce(t.id IS NOT NULL AND u.wanted AND ({distinct}), false)
         FROM {from} ORDER BY u.n",
        idcast = cast(id),
        deleted = if soft { "coalesce(t.deleted_at IS NOT NULL, false)" } else { "false" },
        distinct = if distinct.is_empty() { "false".to_owned() } else { distinct.join(" OR ") },
    );
    let rows = run(&sql, &page.keys, &page.wanted, &page.column_arrays()).await?;
    let mut answers = standings(&rows).map_err(decode)?;
    // The few that differ, are absent or are marked deleted: their hashes and baseline.
    let asked: Vec<usize> = (0..answers.len())
        .filter(|&i| answers[i].differs || !answers[i].present || answers[i].deleted)
        .collect();
    if asked.is_empty() {
        return Ok(answers);
    }
    let names: Vec<(String, String)> = hashed.iter().map(|&i| page.columns[i].clone()).collect();
    let types = {
        let mut c = pool.acquire().await.map_err(decode)?;
        HashTypes::of(&mut c, names.iter().map(|(_, t)| t.as_str())).await.map_err(decode)?
    };
    let expected = |types: &HashTypes| {
        types.row_of(hashed.iter().map(|&i| (cast(i), page.columns[i].1.clone())))
    };
    // A baseline of scheme 1 (an enum or domain hashed as its text) is compared with the row
    // and the expected values hashed that way, and answered as the hash it matches now.
    let text = HashTypes::default();
    let sql = format!(
        "SELECT CASE WHEN t.id IS NOT NULL THEN {th} END, {eh},
             CASE WHEN b.scheme = 1 AND t.id IS NOT NULL AND b.hash = {th1} THEN {th}
                  WHEN b.scheme = 1 AND b.hash = {eh1} THEN {eh}
                  ELSE b.hash END
         FROM {from} LEFT JOIN LATERAL agentctl.baseline_record((${table_param}::text[])[1], u.k, {int_key}) b ON true
         ORDER BY u.n",
        th = types.row("t", &names),
        eh = expected(&types),
        th1 = text.row("t", &names),
        eh1 = expected(&text),
        table_param = n + 3,
        int_key = if integer_key(&page.columns[legacy].1) { "u.k::int8" } else { "NULL::int8" },
    );
    let asked_page = page.rows(&asked);
    let mut values = asked_page.column_arrays();
    // The table's name rides as one more text array (the runner binds text arrays).
    let table = target.to_string();
    values.push(vec![Some(table.as_str())]);
    let (keys, wanted) = (&asked_page.keys, &asked_page.wanted);
    let rows = run(&sql, keys, wanted, &values).await?;
    for (&i, r) in asked.iter().zip(&rows) {
        let a = &mut answers[i];
        if a.differs {
            a.target_hash = r.try_get(0).map_err(decode)?;
            a.expected_hash = r.try_get(1).map_err(decode)?;
        }
        a.baseline = r.try_get(2).map_err(decode)?;
    }
    Ok(answers)
}

/// Where each row stands, as the first statement of [`differ`] answered.
fn standings(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<Diffed>, sqlx::Error> {
    rows.iter()
        .map(|r| {
            Ok(Diffed {
                present: r.try_get(0)?,
                ours: r.try_get(1)?,
                deleted: r.try_get(2)?,
                differs: r.try_get(3)?,
                ..Diffed::default()
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
}

pub async fn live_keys(
    pool: &PgPool,
    target: &TableName,
    ours: Option<(uuid::Uuid, uuid::Uuid)>,
    soft: bool,
) -> Result<Vec<(String, uuid::Uuid)>, ToolError> {
    let sql = format!(
        "SELECT legacy_id::text, id FROM {} WHERE legacy_id IS NOT NULL AND ($1::uuid IS NULL OR \
            id BETWEEN $1 AND $2){}",
        quoted(target),
        if soft { " AND deleted_at IS NULL" } else { "" }
    );
    sqlx::query_as(&sql)
        .bind(ours.map(|r| r.0))
        .bind(ours.map(|r| r.1))
        .fetch_all(pool)
        .await
        .map_err(|e| while_doing(format!("reading the legacy keys of {target}"))(e))
}

pub async fn live_keys_between(
    pool: &PgPool,
    target: &TableName,
    after: Option<&str>,
    upto: Option<&str>,
    present: &[String],
    soft: bool,
) -> Result<Vec<(String, uuid::Uuid)>, ToolError> {
    let sql = format!(
        "SELECT legacy_id::text, id FROM {} WHERE ($1::int8 IS NULL OR legacy_id > $1::int8) AND ($2::int8 IS NULL OR legacy_id <= $2::int8)
             AND NOT EXISTS (SELECT 1 FROM unnest($3::int8[]) AS p(k) WHERE p.k = legacy_id){}",
        quoted(target),
        if soft { " AND deleted_at IS NULL" } else { "" }
    );
    let parse = |v: Option<&str>| v.map(|k| k.parse::<i64>()).transpose();
    let keys: Result<Vec<i64>, _> = present.iter().map(|k| k.parse::<i64>()).collect();
    let (after, upto, keys) = match (parse(after), parse(upto), keys) {
        (Ok(a), Ok(u), Ok(k)) => (a, u, k),
        _ => {
            return Err(ToolError::system(format!(
                "{target}: a legacy key that is not an integer where one was expected"
            )))
        }
    };
    sqlx::query_as(&sql)
        .bind(after)
        .bind(upto)
        .bind(keys)
        .fetch_all(pool)
        .await
        .map_err(|e| while_doing(format!("looking for rows of {target} gone from the source"))(e))
}

pub async fn save_analysis(
    pool: &PgPool,
    a: &EntityDiff,
    rows: &[Differential],
) -> Result<(), ToolError> {
    let what = || format!("storing the analysis of {}", a.source);
    let mut tx = pool.begin().await.map_err(while_doing(what()))?;
    let columns = serde_json::to_value(&a.columns)
        .map_err(|e| ToolError::system(format!("{}: {e}", what())))?;
    sqlx::query(
        "INSERT INTO agentctl.diff_analyses (analysis_id, source_table, target_table, columns, source_rows, in_step, inserts, updates,
             deletes, conflicts, target_changed, rejected, seconds, mode, watermark, trusted, run_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(a.analysis_id.0)
    .bind(a.source.to_string())
    .bind(a.target.to_string())
    .bind(columns)
    .bind(a.source_rows)
    .bind(a.in_step)
    .bind(a.inserts)
    .bind(a.updates)
    .bind(a.deletes)
    .bind(a.conflicts)
    .bind(a.target_changed)
    .bind(a.rejected)
    .bind(a.seconds)
    .bind(&a.mode)
    .bind(&a.watermark)
    .bind(a.trusted)
    .bind(a.run_id.0)
    .execute(&mut *tx)
    .await
    .map_err(while_doing(what()))?;
    // COPY: an analysis can hold hundreds of thousands of rows.
    let mut buf = Vec::with_capacity(rows.len() * 128);
    for r in rows {
        for (i, field) in [
            Some(a.analysis_id.to_string()),
            Some(a.source.to_string()),
            Some(r.legacy_key.clone()),
            Some(r.change.as_str().to_owned()),
            r.target_id.clone(),
            r.values.as_ref().map(|v| text_array(v)),
            r.target_hash.map(|h| h.to_string()),
            r.expected_hash.map(|h| h.to_string()),
            r.reason.clone(),
        ]
        .iter()
        .enumerate()
        {
            if i > 0 {
                buf.push(b'\t');
            }
            push_field(&mut buf, field.as_deref());
        }
        buf.push(b'\n');
    }
    if !rows.is_empty() {
        let mut copy = tx
            .copy_in_raw(
                "COPY agentctl.data_differentials (analysis_id, source_table, legacy_key, kind, target_id, values, target_hash,
                     expected_hash, reason) FROM STDIN",
            )
            .await
            .map_err(while_doing(what()))?;
        crate::pg::send_copy(&mut copy, &buf).await.map_err(while_doing(what()))?;
        copy.finish().await.map_err(while_doing(what()))?;
    }
    tx.commit().await.map_err(while_doing(what()))?;
    Ok(())
}

/// A PostgreSQL array literal of texts (NULL elements as NULL).
fn text_array(values: &[Option<String>]) -> String {
    let mut out = String::from("{");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match v {
            None => out.push_str("NULL"),
            Some(s) => {
                out.push('"');
                for ch in s.chars() {
                    if ch == '"' || ch == '\\' {
                        out.push('\\');
                    }
                    out.push(ch);
                }
                out.push('"');
            }
        }
    }
    out.push('}');
    out
}

pub async fn pending_analysis(
    pool: &PgPool,
    source: &TableName,
    target: &TableName,
) -> Result<Option<(EntityDiff, Vec<Differential>)>, ToolError> {
    let what = || format!("reading the pending analysis of {source}");
    let row = sqlx::query(
        "SELECT analysis_id, run_id, mode, watermark, trusted, columns, source_rows, in_step, inserts, updates, deletes, conflicts, target_changed, rejected,
             seconds, applied_run IS NULL AS pending
         FROM agentctl.diff_analyses WHERE source_table = $1 ORDER BY analyzed_at DESC LIMIT 1",
    )
    .bind(source.to_string())
    .fetch_optional(pool)
    .await
    .map_err(while_doing(what()))?;
    let Some(row) = row else { return Ok(None) };
    let decode = |e: sqlx::Error| while_doing(what())(e);
    if !row.try_get::<bool, _>("pending").map_err(decode)? {
        return Ok(None);
    }
    let columns: serde_json::Value = row.try_get("columns").map_err(decode)?;
    let analysis = EntityDiff {
        analysis_id: RunId(row.try_get("analysis_id").map_err(decode)?),
        run_id: RunId(row.try_get("run_id").map_err(decode)?),
        mode: row.try_get("mode").map_err(decode)?,
        watermark: row.try_get("watermark").map_err(decode)?,
        trusted: row.try_get("trusted").map_err(decode)?,
        source: source.clone(),
        target: target.clone(),
        columns: serde_json::from_value(columns)
            .map_err(|e| ToolError::system(format!("{}: {e}", what())))?,
        source_rows: row.try_get("source_rows").map_err(decode)?,
        in_step: row.try_get("in_step").map_err(decode)?,
        inserts: row.try_get("inserts").map_err(decode)?,
        updates: row.try_get("updates").map_err(decode)?,
        deletes: row.try_get("deletes").map_err(decode)?,
        conflicts: row.try_get("conflicts").map_err(decode)?,
        target_changed: row.try_get("target_changed").map_err(decode)?,
        rejected: row.try_get("rejected").map_err(decode)?,
        seconds: row.try_get("seconds").map_err(decode)?,
    };
    let rows = sqlx::query(
        "SELECT legacy_key, kind, target_id::text, values, target_hash, expected_hash, reason FROM agentctl.data_differentials
         WHERE analysis_id = $1 AND source_table = $2 AND applied_at IS NULL AND kind <> 'target_changed' ORDER BY legacy_key",
    )
    .bind(analysis.analysis_id.0)
    .bind(source.to_string())
    .fetch_all(pool)
    .await
    .map_err(while_doing(what()))?;
    let rows = rows
        .iter()
        .map(|r| {
            let kind: String = r.try_get(1)?;
            Ok(Differential {
                legacy_key: r.try_get(0)?,
                change: Change::parse(&kind).unwrap_or(Change::TargetChanged),
                target_id: r.try_get(2)?,
                values: r.try_get(3)?,
                target_hash: r.try_get(4)?,
                expected_hash: r.try_get(5)?,
                reason: r.try_get(6)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(decode)?;
    Ok(Some((analysis, rows)))
}

pub async fn sync_mark(pool: &PgPool, source: &TableName) -> Result<SyncMark, ToolError> {
    let row: Option<(Option<String>, Option<bool>, Option<f64>)> = sqlx::query_as(
        "SELECT a.watermark, a.trusted,
             (SELECT extract(epoch FROM now() - max(f.analyzed_at))::float8 FROM agentctl.diff_analyses f
              WHERE f.source_table = $1 AND f.mode = 'full')
         FROM agentctl.diff_analyses a WHERE a.source_table = $1 ORDER BY a.analyzed_at DESC LIMIT 1",
    )
    .bind(source.to_string())
    .fetch_optional(pool)
    .await
    .map_err(while_doing(format!("reading what the analyses of {source} learnt")))?;
    Ok(row
        .map(|(watermark, trusted, full_age_seconds)| SyncMark {
            watermark,
            trusted,
            full_age_seconds,
        })
        .unwrap_or_default())
}

pub async fn close_analysis(
    pool: &PgPool,
    analysis: RunId,
    source: &TableName,
    run: RunId,
) -> Result<(), ToolError> {
    sqlx::query(
        "UPDATE agentctl.diff_analyses SET applied_run = $3 WHERE analysis_id = $1 AND \
        source_table = $2",
    )
    .bind(analysis.0)
    .bind(source.to_string())
    .bind(run.0)
    .execute(pool)
    .await
    .map_err(while_doing(format!("closing the analysis of {source}")))?;
    Ok(())
}

/// A sync's refusal by a unique or exclusion rule, by how its reason ends
/// ([`crate::pg::describe`]): the order's fault as often as the row's, so tried again after the
/// sync's deletes ([`reopen_refused`]) and at the next sync ([`crate::target::PgTarget`]'s
/// `rejected_keys`). The SQL test of a `reason` column, and the same test of one reason.
pub(crate) const REFUSED_BY_RULE: &str =
    "(reason LIKE '%(SQLSTATE 23505)' OR reason LIKE '%(SQLSTATE 23P01)')";

/// A sync's rejection for a parent not in the target ([`missing_parents`]), by its reason: the
/// parent may be one this sync writes only after its deletes ([`reopen_refused`]).
const PARENT_NOT_IN_TARGET: &str = "it points at is not in the target";

fn refused_by_rule(why: &str) -> bool {
    why.ends_with("(SQLSTATE 23505)") || why.ends_with("(SQLSTATE 23P01)")
}

/// What a sync's note calls a row the target refused: only for now when the retry after the
/// deletes will try it again ([`reopen_refused`]).
fn fate(tried_again: bool) -> &'static str {
    match tried_again {
        true => "refused for now, tried again after the deletes",
        false => "rejected",
    }
}

/// The inserts, updates and conflicts settled source-wins of `analysis` that `run` saw refused
/// by a unique or exclusion rule, or rejected for a parent not in the target, pending again,
/// their reject records of `run` withdrawn; one transaction. A sync writes before it deletes
/// (parents first, then children first), so a value freed by a deleted row, or by a row a later
/// batch updates, was still taken when the row that wants it was written, and a parent refused
/// so was not there for its new children: the refusal was the order's, not the row's. (A
/// conflict's record stays: the try after the deletes settles it again without recording it
/// twice.)
pub async fn reopen_refused(
    pool: &PgPool,
    analysis: RunId,
    source: &TableName,
    run: RunId,
) -> Result<u64, ToolError> {
    let what = || format!("making the refused writes of {source} pending again");
    let mut tx = pool.begin().await.map_err(while_doing(what()))?;
    let keys: Vec<String> = sqlx::query_scalar(&format!(
        "UPDATE agentctl.data_differentials SET applied_run = NULL, applied_at = NULL, outcome = NULL, reason = NULL
         WHERE analysis_id = $1 AND source_table = $2 AND applied_run = $3 AND outcome = 'rejected'
           AND kind IN ('insert', 'update', 'conflict') AND ({REFUSED_BY_RULE} OR reason LIKE $4)
         RETURNING legacy_key"
    ))
    .bind(analysis.0)
    .bind(source.to_string())
    .bind(run.0)
    .bind(format!("%{PARENT_NOT_IN_TARGET}"))
    .fetch_all(&mut *tx)
    .await
    .map_err(while_doing(what()))?;
    if !keys.is_empty() {
        sqlx::query(
            "DELETE FROM agentctl.rejected_rows WHERE run_id = $1 AND source_table = $2 AND legacy_key = ANY($3)",
        )
        .bind(run.0)
        .bind(source.to_string())
        .bind(&keys)
        .execute(&mut *tx)
        .await
        .map_err(while_doing(what()))?;
    }
    tx.commit().await.map_err(while_doing(what()))?;
    Ok(keys.len() as u64)
}

/// Applies a batch in one transaction, retrying transient failures like a migration batch.
pub async fn apply_diff(
    pool: &PgPool,
    b: &DiffBatch,
    max_retries: u32,
) -> Result<DiffApplied, ToolError> {
    let what = format!("writing a batch of changes to {}", b.analysis.target);
    retrying(max_retries, &what, || try_apply(pool, b)).await.map(|(done, _)| done)
}

async fn try_apply(pool: &PgPool, b: &DiffBatch) -> Result<DiffApplied, Failure> {
    let mut c = crate::pg::Held::acquire(pool).await?;
    let done = async {
        sqlx::query("BEGIN").execute(&mut *c).await?;
        let done = apply_on(&mut c, b).await?;
        sqlx::query("COMMIT").execute(&mut *c).await?;
        Ok::<_, sqlx::Error>(done)
    }
    .await;
    match done {
        Ok(done) => {
            c.finished();
            Ok(done)
        }
        Err(e) => {
            discard_transaction(c).await;
            Err(e.into())
        }
    }
}

/// A row's fate within the batch.
struct Fate {
    outcome: &'static str,
    reason: Option<String>,
}

/// What applying a batch did so far: the counts, each row's fate, and the rows rejected for a
/// missing parent (rule `reference`, tried again once the parent is there).
#[derive(Default)]
struct Outcomes {
    done: DiffApplied,
    fates: BTreeMap<String, Fate>,
    parent_missing: std::collections::HashSet<String>,
}

async fn apply_on(c: &mut PgConnection, b: &DiffBatch) -> Result<DiffApplied, sqlx::Error> {
    let a = &b.analysis;
    let table = quoted(&a.target);
    let legacy_type = a.columns[b.legacy_column].1.clone();
    let hashed: Vec<(String, String)> = b.hashed.iter().map(|&i| a.columns[i].clone()).collect();
    let types = HashTypes::of(&mut *c, hashed.iter().map(|(_, t)| t.as_str())).await?;
    let mut out = Outcomes::default();
    let deferrable = crate::pg::immediate_rules(c, &a.target).await?;
    stage(c, b).await?;
    mapping_rejects(b, &mut out);
    missing_parents(c, b, &mut out).await?;
    conflicts(c, b, &table, &legacy_type, &mut out).await?;
    updates(c, b, &table, &legacy_type, &hashed, &types, &mut out).await?;
    inserts(c, b, &table, deferrable, &mut out).await?;
    deletes(c, b, &mut out).await?;
    new_baseline(c, b, &table, &legacy_type, &hashed, &types, &out).await?;
    record_rejects(c, b, &mut out).await?;
    record_outcomes(c, b, &mut out).await?;
    sqlx::query("DROP TABLE agentctl_diff").execute(&mut *c).await?;
    Ok(out.done)
}

/// Stages the batch as text in a temporary table: key, change, hashes, then the mapped columns.
async fn stage(c: &mut PgConnection, b: &DiffBatch) -> Result<(), sqlx::Error> {
    let cols = &b.analysis.columns;
    // Stage the batch as text: key, change, hashes, then the mapped columns.
    let stage_cols: Vec<String> = (0..cols.len()).map(|i| format!("c{i} text")).collect();
    sqlx::query(&format!(
        "CREATE TEMP TABLE agentctl_diff (seq int4 NOT NULL, k text NOT NULL, kind text NOT NULL, \
            th int8, eh int8, {}) ON COMMIT DROP",
        stage_cols.join(", ")
    ))
    .execute(&mut *c)
    .await?;
    let mut buf = Vec::with_capacity(b.rows.len() * 128);
    for (seq, r) in b.rows.iter().enumerate() {
        buf.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
        for v in [Some(r.legacy_key.as_str()), Some(r.change.as_str())] {
            buf.push(b'\t');
            push_field(&mut buf, v);
        }
        for h in [r.target_hash, r.expected_hash] {
            buf.push(b'\t');
            push_field(&mut buf, h.map(|h| h.to_string()).as_deref());
        }
        for i in 0..cols.len() {
            buf.push(b'\t');
            push_field(
                &mut buf,
                r.values.as_ref().and_then(|v| v.get(i).cloned().flatten()).as_deref(),
            );
        }
        buf.push(b'\n');
    }
    let mut copy = c.copy_in_raw("COPY agentctl_diff FROM STDIN").await?;
    crate::pg::send_copy(&mut copy, &buf).await?;
    copy.finish().await?;
    Ok(())
}

/// Rows the mapping rejects: recorded with the reason.
fn mapping_rejects(b: &DiffBatch, out: &mut Outcomes) {
    let a = &b.analysis;
    // Rows the mapping rejects: recorded with the reason.
    for r in b.rows.iter().filter(|r| r.change == Change::Rejected) {
        let reason = r.reason.clone().unwrap_or_else(|| "the mapping rejects the row".into());
        out.done.note(format!("{} {}: rejected: {reason}", a.source.name, r.legacy_key));
        out.fates.insert(r.legacy_key.clone(), Fate { outcome: "rejected", reason: Some(reason) });
    }
}

/// References to rows that are not in the target: rejected, not written.
async fn missing_parents(
    c: &mut PgConnection,
    b: &DiffBatch,
    out: &mut Outcomes,
) -> Result<(), sqlx::Error> {
    let (a, cols) = (&b.analysis, &b.analysis.columns);
    // References to rows that are not in the target: rejected, not written (rule `reference`,
    // as in the full migration: tried again once the parent is there).
    for (col, parents) in &b.references {
        let sql = format!(
            "DELETE FROM agentctl_diff s WHERE s.kind IN ('insert', 'update', 'conflict') AND s.c{col} IS NOT NULL
                 AND {} RETURNING s.k",
            in_none_of(parents, &format!("s.c{col}::uuid"))
        );
        let keys: Vec<String> = sqlx::query_scalar(&sql).fetch_all(&mut *c).await?;
        let parent = match parents.as_slice() {
            [one] => format!("the {} row", one.name),
            _ => "the row".to_owned(),
        };
        let fate = fate(!b.after_deletes);
        for k in keys {
            let reason =
                format!("{}.{}: {parent} {PARENT_NOT_IN_TARGET}", a.target.name, cols[*col].0);
            out.done.note(format!("{} {k}: {fate}: {reason}", a.source.name));
            out.parent_missing.insert(k.clone());
            out.fates.insert(k, Fate { outcome: "rejected", reason: Some(reason) });
        }
    }
    Ok(())
}

/// Conflicts: recorded with the target's values, then settled by the entity's policy.
async fn conflicts(
    c: &mut PgConnection,
    b: &DiffBatch,
    table: &str,
    legacy_type: &str,
    out: &mut Outcomes,
) -> Result<(), sqlx::Error> {
    let (a, cols) = (&b.analysis, &b.analysis.columns);
    // Conflicts: recorded with the target's values, then settled by the entity's policy.
    let conflicts = b
        .rows
        .iter()
        .filter(|r| r.change == Change::Conflict && !out.fates.contains_key(&r.legacy_key))
        .count();
    if conflicts > 0 {
        let status = match b.policy.conflicts {
            ConflictPolicy::SourceWins => "overwritten",
            ConflictPolicy::TargetWins => "kept_target",
            ConflictPolicy::Manual => "open",
        };
        let values: Vec<String> = (0..cols.len()).map(|i| format!("s.c{i}")).collect();
        let names: Vec<String> = cols.iter().map(|(n, _)| literal(n)).collect();
        let found: Vec<String> =
            cols.iter().map(|(n, _)| format!("t.{}::text", ident(n))).collect();
        // Which synced columns differ, compared as the analysis did.
        let differing: Vec<String> = b
            .hashed
            .iter()
            .map(|&i| {
                let (found, expected) =
                    (format!("t.{}", ident(&cols[i].0)), format!("s.c{i}::{}", cols[i].1));
                format!(
                    "CASE WHEN {} THEN {} END",
                    runtime::sql::differs(&found, &expected),
                    names[i]
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO agentctl.sync_conflicts (source_table, target_table, legacy_key, target_id, policy, status, columns, source_values,
                 target_values, differing, analysis_id, applied_run)
             SELECT $1, $2, s.k, t.id, $3, $4, $5, ARRAY[{values}], jsonb_object(ARRAY[{names}], ARRAY[{found}]),
                 array_remove(ARRAY[{differing}]::text[], NULL), $6, $7
             FROM agentctl_diff s JOIN {table} t ON t.legacy_id = s.k::{legacy_type}
             WHERE s.kind = 'conflict'
                 -- A conflict tried again after the deletes ([`reopen_refused`]) was recorded before.
                 AND NOT EXISTS (SELECT 1 FROM agentctl.sync_conflicts x WHERE x.analysis_id = $6
                     AND x.target_table = $2 AND x.legacy_key = s.k)
             ON CONFLICT (target_table, legacy_key) WHERE status = 'open'
             DO UPDATE SET source_values = EXCLUDED.source_values, target_values = EXCLUDED.target_values,
                 differing = EXCLUDED.differing, analysis_id = EXCLUDED.analysis_id, detected_at = now()",
            values = values.join(", "),
            names = names.join(", "),
            found = found.join(", "),
            differing = if differing.is_empty() { "NULL".to_owned() } else { differing.join(", ") },
        );
        let columns: Vec<(String, String, bool)> = cols
            .iter()
            .enumerate()
            .map(|(i, (n, t))| (n.clone(), t.clone(), b.hashed.contains(&i)))
            .collect();
        let columns = serde_json::to_value(columns).unwrap_or_default();
        let recorded = sqlx::query(&sql)
            .bind(a.source.to_string())
            .bind(a.target.to_string())
            .bind(b.policy.conflicts.as_str())
            .bind(status)
            .bind(columns)
            .bind(a.analysis_id.0)
            .bind(b.run_id.0)
            .execute(&mut *c)
            .await?;
        out.done.conflicted += recorded.rows_affected() as i64;
        settle_conflicts(c, b, out).await?;
    }
    Ok(())
}

/// Settles the batch's conflicts by the entity's policy: the source's values written, the
/// target's kept (and made the baseline), or held for an operator.
async fn settle_conflicts(
    c: &mut PgConnection,
    b: &DiffBatch,
    out: &mut Outcomes,
) -> Result<(), sqlx::Error> {
    let a = &b.analysis;
    match b.policy.conflicts {
        ConflictPolicy::SourceWins => {
            sqlx::query("UPDATE agentctl_diff SET kind = 'update' WHERE kind = 'conflict'")
                .execute(&mut *c)
                .await?;
        }
        ConflictPolicy::TargetWins | ConflictPolicy::Manual => {
            let kept: Vec<(String, Option<i64>)> =
                sqlx::query_as("DELETE FROM agentctl_diff WHERE kind = 'conflict' RETURNING k, eh")
                    .fetch_all(&mut *c)
                    .await?;
            let target_wins = b.policy.conflicts == ConflictPolicy::TargetWins;
            if target_wins {
                // The source's version is the one agentctl "last wrote": until the source
                // changes again, the target's row is its own change, not a conflict.
                let (keys, hashes): (Vec<String>, Vec<Option<i64>>) = kept.iter().cloned().unzip();
                set_baseline(c, &a.target, &keys, &hashes).await?;
            }
            for (k, _) in kept {
                let (outcome, reason) = if target_wins {
                    (
                        "kept_target",
                        "changed on both sides: the target's values kept (target-wins)".to_owned(),
                    )
                } else {
                    out.done.held += 1;
                    out.done.note(format!(
                        "{} {k}: conflict held for an operator (agentctl conflict report)",
                        a.source.name
                    ));
                    ("held", "changed on both sides: held for an operator (manual)".to_owned())
                };
                out.fates.insert(k, Fate { outcome, reason: Some(reason) });
            }
        }
    }
    Ok(())
}

/// Updates: only where the target row is still as the analysis saw it.
async fn updates(
    c: &mut PgConnection,
    b: &DiffBatch,
    table: &str,
    legacy_type: &str,
    hashed: &[(String, String)],
    types: &HashTypes,
    out: &mut Outcomes,
) -> Result<(), sqlx::Error> {
    let cols = &b.analysis.columns;
    // Updates: only where the target row is still as the analysis saw it.
    let sets: Vec<String> = b
        .hashed
        .iter()
        .map(|&i| format!("{} = s.c{i}::{}", ident(&cols[i].0), cols[i].1))
        .chain(b.soft_delete.then(|| "deleted_at = NULL".to_owned()))
        .collect();
    if !sets.is_empty() {
        let sql = format!(
            "UPDATE {table} t SET {} FROM agentctl_diff s
             WHERE s.kind = 'update' AND s.seq BETWEEN $1 AND $2 AND t.legacy_id = s.k::{legacy_type}
                 AND (s.th IS NULL OR {} = s.th)
             RETURNING s.k",
            sets.join(", "),
            types.row("t", hashed)
        );
        let (keys, refused) =
            split_run(c, &sql, b.rows.len().checked_sub(1).map(|hi| (0, hi))).await?;
        out.done.updated += keys.len() as i64;
        for k in keys {
            out.fates.insert(k, Fate { outcome: "applied", reason: None });
        }
        let refused = held_by_deleted(c, b, table, refused, out).await?;
        refuse(&mut out.done, &mut out.fates, refused, b, "update");
    }
    Ok(())
}

/// How an insert skips a row whose legacy key is already there (stale: it appeared since the
/// analysis): ON CONFLICT on the legacy key's own unique index, so that a row that takes
/// another unique or exclusion rule's value is refused with its reason (and tried again at the
/// next sync, `Target::rejected_keys`) instead of being skipped as stale. Without such an
/// index, `ON CONFLICT DO NOTHING`; nothing where a rule is `deferrable`
/// ([`crate::pg::immediate_rules`]), which ON CONFLICT refuses as an arbiter.
async fn on_conflict(
    c: &mut PgConnection,
    table: &TableName,
    legacy: &str,
    deferrable: bool,
) -> Result<String, sqlx::Error> {
    let arbiter: Option<Vec<String>> = sqlx::query_scalar(
        "SELECT (SELECT array_agg(quote_ident(a.attname) ORDER BY k.ord)
                 FROM (SELECT i.indrelid, i.indkey FROM pg_index i
                       JOIN pg_attribute l ON l.attrelid = i.indrelid AND l.attname = $2
                       WHERE i.indrelid = $1::regclass AND i.indisunique AND i.indimmediate
                         AND i.indpred IS NULL AND i.indexprs IS NULL AND l.attnum = ANY(i.indkey)
                       ORDER BY i.indnatts LIMIT 1) i
                 CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(num, ord)
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.num)",
    )
    .bind(quoted(table))
    .bind(legacy)
    .fetch_one(&mut *c)
    .await?;
    Ok(match (arbiter, deferrable) {
        (Some(columns), _) => format!("ON CONFLICT ({}) DO NOTHING", columns.join(", ")),
        (None, false) => "ON CONFLICT DO NOTHING".to_owned(),
        (None, true) => String::new(),
    })
}

/// Inserts: a row that appeared under the key since the analysis is left (stale).
async fn inserts(
    c: &mut PgConnection,
    b: &DiffBatch,
    table: &str,
    deferrable: bool,
    out: &mut Outcomes,
) -> Result<(), sqlx::Error> {
    let cols = &b.analysis.columns;
    // Inserts: a row that appeared under the key since the analysis is left (stale).
    let names: Vec<String> = cols.iter().map(|(n, _)| ident(n)).collect();
    let casts: Vec<String> =
        cols.iter().enumerate().map(|(i, (_, ty))| format!("s.c{i}::{ty}")).collect();
    let skip = on_conflict(c, &b.analysis.target, &cols[b.legacy_column].0, deferrable).await?;
    let sql = format!(
        "INSERT INTO {table} ({}) SELECT {} FROM agentctl_diff s WHERE s.kind = 'insert' AND s.seq BETWEEN $1 AND $2
         {skip} RETURNING legacy_id::text",
        names.join(", "),
        casts.join(", ")
    );
    let (keys, refused) = split_run(c, &sql, b.rows.len().checked_sub(1).map(|hi| (0, hi))).await?;
    out.done.inserted += keys.len() as i64;
    for k in keys {
        out.fates.insert(k, Fate { outcome: "applied", reason: None });
    }
    let refused = held_by_deleted(c, b, table, refused, out).await?;
    refuse(&mut out.done, &mut out.fates, refused, b, "insert");
    Ok(())
}

/// Deletes.
async fn deletes(
    c: &mut PgConnection,
    b: &DiffBatch,
    out: &mut Outcomes,
) -> Result<(), sqlx::Error> {
    // Deletes.
    let deletes: Vec<String> = b
        .rows
        .iter()
        .filter(|r| r.change == Change::Delete)
        .map(|r| r.legacy_key.clone())
        .collect();
    if !deletes.is_empty() {
        delete_rows(c, b, &deletes, &mut out.done, &mut out.fates).await?;
    }
    Ok(())
}

/// What agentctl wrote is the new baseline.
async fn new_baseline(
    c: &mut PgConnection,
    b: &DiffBatch,
    table: &str,
    legacy_type: &str,
    hashed: &[(String, String)],
    types: &HashTypes,
    out: &Outcomes,
) -> Result<(), sqlx::Error> {
    let a = &b.analysis;
    // What agentctl wrote is the new baseline.
    let written: Vec<String> =
        out.fates.iter().filter(|(_, f)| f.outcome == "applied").map(|(k, _)| k.clone()).collect();
    if !written.is_empty() {
        sqlx::query(&format!(
            "INSERT INTO agentctl.sync_baseline (target_table, legacy_key, hash)
             SELECT $1, t.legacy_id::text, {} FROM {table} t WHERE t.legacy_id = ANY($2::text[]::{legacy_type}[])
             ON CONFLICT (target_table, legacy_key) DO UPDATE SET hash = EXCLUDED.hash, scheme = EXCLUDED.scheme",
            types.row("t", hashed)
        ))
        .bind(a.target.to_string())
        .bind(&written)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

/// Rejects, as the full migration records them.
async fn record_rejects(
    c: &mut PgConnection,
    b: &DiffBatch,
    out: &mut Outcomes,
) -> Result<(), sqlx::Error> {
    let (a, cols) = (&b.analysis, &b.analysis.columns);
    // Rejects, as the full migration records them.
    let rejects: Vec<(&Differential, &Fate)> = b
        .rows
        .iter()
        .filter_map(|r| {
            out.fates.get(&r.legacy_key).filter(|f| f.outcome == "rejected").map(|f| (r, f))
        })
        .collect();
    out.done.rejected += rejects.len() as i64;
    if !rejects.is_empty() {
        let keys: Vec<String> = rejects.iter().map(|(r, _)| r.legacy_key.clone()).collect();
        let reasons: Vec<String> =
            rejects.iter().map(|(_, f)| f.reason.clone().unwrap_or_default()).collect();
        let rules: Vec<&str> = rejects
            .iter()
            .map(
                |(r, _)| {
                    if out.parent_missing.contains(&r.legacy_key) {
                        "reference"
                    } else {
                        "sync"
                    }
                },
            )
            .collect();
        let rows: Vec<serde_json::Value> = rejects
            .iter()
            .map(|(r, _)| match &r.values {
                Some(v) => runtime::domain::row_json(
                    &cols.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
                    v.iter().map(|v| v.as_deref()),
                ),
                None => serde_json::Value::Null,
            })
            .collect();
        sqlx::query(
            "INSERT INTO agentctl.rejected_rows (run_id, source_table, legacy_key, column_name, rule, reason, source_row)
             SELECT $1, $2, k, NULL, r, w, j FROM UNNEST($3::text[], $4::text[], $5::jsonb[], $6::text[]) AS u(k, w, j, r)
             ON CONFLICT (run_id, source_table, legacy_key) DO UPDATE SET reason = EXCLUDED.reason, rule = EXCLUDED.rule",
        )
        .bind(b.run_id.0)
        .bind(a.source.to_string())
        .bind(&keys)
        .bind(&reasons)
        .bind(&rows)
        .bind(&rules)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

/// Every row of the batch gets its outcome, in the same transaction as what it did.
async fn record_outcomes(
    c: &mut PgConnection,
    b: &DiffBatch,
    out: &mut Outcomes,
) -> Result<(), sqlx::Error> {
    let a = &b.analysis;
    // Every row of the batch gets its outcome, in the same transaction as what it did.
    for r in &b.rows {
        out.fates.entry(r.legacy_key.clone()).or_insert_with(|| {
            out.done.stale += 1;
            Fate {
                outcome: "stale",
                reason: Some(
                    "the target row changed after the analysis; the next analysis sees it".into(),
                ),
            }
        });
    }
    let keys: Vec<&String> = out.fates.keys().collect();
    let outcomes: Vec<&str> = out.fates.values().map(|f| f.outcome).collect();
    let reasons: Vec<Option<&str>> = out.fates.values().map(|f| f.reason.as_deref()).collect();
    sqlx::query(
        "UPDATE agentctl.data_differentials d SET applied_run = $3, applied_at = now(), outcome = u.o, reason = coalesce(u.w, d.reason)
         FROM UNNEST($4::text[], $5::text[], $6::text[]) AS u(k, o, w)
         WHERE d.analysis_id = $1 AND d.source_table = $2 AND d.legacy_key = u.k",
    )
    .bind(a.analysis_id.0)
    .bind(a.source.to_string())
    .bind(b.run_id.0)
    .bind(&keys)
    .bind(&outcomes)
    .bind(&reasons)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Of the rows a unique rule refused, those whose value a row the source deleted still holds in
/// the target, kept there as deleted (soft delete): not the row's fault, so held for an
/// operator, naming the deleted row (and tried again at the next sync); returns the others.
async fn held_by_deleted(
    c: &mut PgConnection,
    b: &DiffBatch,
    table: &str,
    refused: Vec<(usize, String)>,
    out: &mut Outcomes,
) -> Result<Vec<(usize, String)>, sqlx::Error> {
    let unique = |why: &String| why.ends_with("(SQLSTATE 23505)");
    if !b.soft_delete || !refused.iter().any(|(_, why)| unique(why)) {
        return Ok(refused);
    }
    let cols = &b.analysis.columns;
    // The target's plain unique rules on the staged columns, but the keys agentctl derives.
    let rules: Vec<(String, Vec<String>)> = sqlx::query_as(
        "SELECT c.relname::text, array_agg(a.attname::text ORDER BY k.ord)
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(num, ord)
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.num
         WHERE i.indrelid = $1::regclass AND i.indisunique AND i.indpred IS NULL
           AND i.indexprs IS NULL
         GROUP BY c.relname",
    )
    .bind(quoted(&b.analysis.target))
    .fetch_all(&mut *c)
    .await?;
    let matches: Vec<(String, String)> = rules
        .into_iter()
        .filter(|(_, on)| !on.iter().any(|n| n == "id" || n == "legacy_id"))
        .filter_map(|(name, on)| {
            let pairs: Option<Vec<String>> = on
                .iter()
                .map(|n| {
                    let i = cols.iter().position(|(c, _)| c == n)?;
                    Some(format!("t.{} = s.c{i}::{}", ident(n), cols[i].1))
                })
                .collect();
            pairs.map(|p| (name, p.join(" AND ")))
        })
        .collect();
    let mut others = Vec::new();
    'rows: for (seq, why) in refused {
        if !unique(&why) {
            others.push((seq, why));
            continue;
        }
        for (rule, on) in &matches {
            let sql = format!(
                "SELECT t.legacy_id::text FROM {table} t, agentctl_diff s
                 WHERE s.seq = $1 AND t.deleted_at IS NOT NULL AND {on} LIMIT 1"
            );
            let held: Option<String> =
                sqlx::query_scalar(&sql).bind(seq as i32).fetch_optional(&mut *c).await?;
            if let Some(deleted) = held {
                let key = b.rows[seq].legacy_key.clone();
                let reason = format!(
                    "{}: its {rule} value is held by row {deleted}, which the source deleted and \
                        the target keeps as deleted (soft delete): remove that row from the \
                        target, or make the rule leave deleted rows out (WHERE deleted_at IS \
                        NULL); the row is tried again at the next sync",
                    b.analysis.target.name
                );
                out.done.held += 1;
                out.done.note(format!("{} {key}: held: {reason}", b.analysis.source.name));
                out.fates.insert(key, Fate { outcome: "held", reason: Some(reason) });
                continue 'rows;
            }
        }
        others.push((seq, why));
    }
    Ok(others)
}

/// Records rows the target refused (a check, a unique rule) as rejected, with its words.
fn refuse(
    done: &mut DiffApplied,
    fates: &mut BTreeMap<String, Fate>,
    refused: Vec<(usize, String)>,
    b: &DiffBatch,
    what: &str,
) {
    for (seq, why) in refused {
        let key = b.rows[seq].legacy_key.clone();
        let reason = format!("{}: the target refused the {what}: {why}", b.analysis.target.name);
        let fate = fate(!b.after_deletes && refused_by_rule(&why));
        done.note(format!("{} {key}: {fate}: {reason}", b.analysis.source.name));
        fates.insert(key, Fate { outcome: "rejected", reason: Some(reason) });
    }
}

/// Runs a statement over staged rows `$1..=$2` of `range`, splitting a range the target refuses
/// until the refusing rows stand alone. Returns the keys it returned and the refused rows with
/// the database's words.
///
/// Each range is tried under a savepoint that is always undone, and a range that went through
/// is then run again outside it: a try kept under its savepoint would hold a lock on its own
/// transaction id until the commit, and a batch with a refused row in every few kept thousands
/// (the server ran out of shared memory for locks, and the batch was retried from the start,
/// again and again). The run again sees what the try saw, the ranges before it written.
pub(crate) async fn split_run(
    c: &mut PgConnection,
    sql: &str,
    range: Option<(usize, usize)>,
) -> Result<(Vec<String>, Vec<(usize, String)>), sqlx::Error> {
    let mut keys = Vec::new();
    let mut refused = Vec::new();
    let mut ranges: Vec<(usize, usize)> = range.into_iter().collect();
    while let Some((lo, hi)) = ranges.pop() {
        sqlx::query("SAVEPOINT agentctl_range").execute(&mut *c).await?;
        let tried = run_range(c, sql, lo, hi).await;
        sqlx::query("ROLLBACK TO SAVEPOINT agentctl_range").execute(&mut *c).await?;
        sqlx::query("RELEASE SAVEPOINT agentctl_range").execute(&mut *c).await?;
        match tried {
            Ok(_) => keys.extend(run_range(c, sql, lo, hi).await?),
            // Only the rows' own fault is narrowed down to the rows: any other stops here.
            Err(e) if fault(&e) != Fault::Row => return Err(e),
            Err(e) if lo == hi => refused.push((lo, describe(&e))),
            Err(_) => {
                let mid = lo + (hi - lo) / 2;
                ranges.push((mid + 1, hi));
                ranges.push((lo, mid));
            }
        }
    }
    Ok((keys, refused))
}

/// `sql` over staged rows `lo..=hi`, and the keys it returned.
async fn run_range(
    c: &mut PgConnection,
    sql: &str,
    lo: usize,
    hi: usize,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(sql).bind(lo as i32).bind(hi as i32).fetch_all(c).await
}

/// Records per-row baselines over the load's (`None`: no baseline, agentctl deleted the row).
async fn set_baseline(
    c: &mut PgConnection,
    target: &TableName,
    keys: &[String],
    hashes: &[Option<i64>],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO agentctl.sync_baseline (target_table, legacy_key, hash)
         SELECT $1, k, h FROM UNNEST($2::text[], $3::int8[]) AS u(k, h)
         ON CONFLICT (target_table, legacy_key) DO UPDATE SET hash = EXCLUDED.hash, scheme = EXCLUDED.scheme",
    )
    .bind(target.to_string())
    .bind(keys)
    .bind(hashes)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Deletes (or marks deleted) rows gone from the source. A hard delete is refused for a row
/// that rows of another table still reference, so nothing is orphaned; a soft delete leaves
/// the row for its children and says how many point at it.
async fn delete_rows(
    c: &mut PgConnection,
    b: &DiffBatch,
    keys: &[String],
    done: &mut DiffApplied,
    fates: &mut BTreeMap<String, Fate>,
) -> Result<(), sqlx::Error> {
    let a = &b.analysis;
    let table = quoted(&a.target);
    let legacy_type = &a.columns[b.legacy_column].1;
    let referenced = live_children(c, b, &table, keys).await?;
    let mut gone = Vec::with_capacity(keys.len());
    for k in keys {
        let why = referenced.get(k).map(|v| v.join(", "));
        match (b.policy.delete, b.soft_delete, why) {
            (DeleteMode::Hard, _, Some(why)) => {
                let reason = format!(
                    "deleted from the source, but {why} still point at it: not \
                    deleted, so nothing is orphaned"
                );
                done.held += 1;
                done.note(format!("{} {k}: {reason}", a.source.name));
                fates.insert(k.clone(), Fate { outcome: "held", reason: Some(reason) });
            }
            (DeleteMode::Soft, false, _) => {
                let reason = format!(
                    "{} has no deleted_at column of its own for a soft delete (none, or one \
                        that holds the source's own data): set sync = {{ delete = \"hard\" }} \
                        for {} in the mapping file",
                    a.target.name, a.source.name
                );
                done.held += 1;
                done.note(format!("{} {k}: {reason}", a.source.name));
                fates.insert(k.clone(), Fate { outcome: "held", reason: Some(reason) });
            }
            (DeleteMode::Soft, true, Some(why)) => {
                let reason =
                    format!("marked deleted; {why} still point at it (kept, not orphaned)");
                done.note(format!("{} {k}: {reason}", a.source.name));
                fates.insert(k.clone(), Fate { outcome: "applied", reason: Some(reason) });
                gone.push(k.clone());
            }
            _ => {
                fates.insert(k.clone(), Fate { outcome: "applied", reason: None });
                gone.push(k.clone());
            }
        }
    }
    if gone.is_empty() {
        return Ok(());
    }
    let sql = match b.policy.delete {
        DeleteMode::Soft => format!(
            "UPDATE {table} SET deleted_at = now() WHERE legacy_id = \
                ANY($1::text[]::{legacy_type}[]) AND deleted_at IS NULL RETURNING \
                legacy_id::text"
        ),
        DeleteMode::Hard => format!(
            "DELETE FROM {table} WHERE legacy_id = \
            ANY($1::text[]::{legacy_type}[]) RETURNING legacy_id::text"
        ),
    };
    let deleted: Vec<String> = sqlx::query_scalar(&sql).bind(&gone).fetch_all(&mut *c).await?;
    done.deleted += deleted.len() as i64;
    let deleted: std::collections::HashSet<String> = deleted.into_iter().collect();
    for k in &gone {
        if !deleted.contains(k) {
            done.stale += 1;
            fates.insert(
                k.clone(),
                Fate { outcome: "stale", reason: Some("the target row was already gone".into()) },
            );
        }
    }
    // No baseline any more: a row that comes back is agentctl's to write again.
    set_baseline(c, &a.target, &gone, &vec![None; gone.len()]).await
}

/// A foreign key to a table, from its child's side.
#[derive(sqlx::FromRow)]
struct ChildKey {
    schema: String,
    child: String,
    columns: Vec<String>,
    /// The columns of the table that `columns` reference, in the same order.
    parent_columns: Vec<String>,
    /// Whether the child has a `deleted_at` column.
    soft_child: bool,
}

/// Which of the keys' rows live rows of other tables (or of this one) still point at, each
/// with who: a count a child table, through every foreign key to this table, whatever its
/// columns (a key of several columns, or one to a column other than `id`; an `ON DELETE
/// CASCADE` one among them would otherwise delete rows agentctl did not write).
async fn live_children(
    c: &mut PgConnection,
    b: &DiffBatch,
    table: &str,
    keys: &[String],
) -> Result<HashMap<String, Vec<String>>, sqlx::Error> {
    let legacy_type = &b.analysis.columns[b.legacy_column].1;
    // Every foreign key that points at this table, as its child's columns and the ones they
    // reference, in order; a partitioned child's once, by its own key.
    let children: Vec<ChildKey> = sqlx::query_as(
        "SELECT n.nspname::text AS schema, c.relname::text AS child,
             ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY u (num, i)
                   JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.num ORDER BY u.i) AS columns,
             ARRAY(SELECT a.attname::text FROM unnest(k.confkey) WITH ORDINALITY u (num, i)
                   JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.num ORDER BY u.i) AS parent_columns,
             EXISTS (SELECT 1 FROM pg_attribute d WHERE d.attrelid = c.oid AND d.attname = 'deleted_at' AND NOT d.attisdropped) AS soft_child
         FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE k.contype = 'f' AND k.confrelid = $1::regclass AND k.conparentid = 0",
    )
    .bind(table)
    .fetch_all(&mut *c)
    .await?;
    let mut referenced: HashMap<String, Vec<String>> = HashMap::new();
    for ChildKey { schema, child, columns, parent_columns, soft_child } in &children {
        let live = if *soft_child && b.policy.delete == DeleteMode::Soft {
            " AND ch.deleted_at IS NULL"
        } else {
            ""
        };
        let on: Vec<String> = columns
            .iter()
            .zip(parent_columns)
            .map(|(col, parent)| format!("ch.{} = p.{}", ident(col), ident(parent)))
            .collect();
        let sql = format!(
            "SELECT p.legacy_id::text, count(*) FROM {table} p JOIN {}.{} ch ON {}
             WHERE p.legacy_id = ANY($1::text[]::{legacy_type}[]){live} GROUP BY 1",
            ident(schema),
            ident(child),
            on.join(" AND ")
        );
        let rows: Vec<(String, i64)> = sqlx::query_as(&sql).bind(keys).fetch_all(&mut *c).await?;
        for (k, n) in rows {
            referenced.entry(k).or_default().push(format!("{n} rows of {child}"));
        }
    }
    Ok(referenced)
}
