//! Measurements that choose designs: how fast each UUID layout goes into a btree primary key.

use runtime::error::ToolError;
use std::time::Instant;

use futures::StreamExt;

use runtime::domain::TableName;
use runtime::mapping::{KeyDeriver, UuidLayout};
use serde::Serialize;
use sqlx::PgPool;

use crate::catalog::ident;
use crate::pg::while_doing;

#[derive(Clone, Debug, Serialize)]
pub struct LayoutFigure {
    pub layout: UuidLayout,
    pub rows: i64,
    pub seconds: f64,
    pub rows_per_second: f64,
    pub index_bytes: i64,
}

/// Inserts `rows` keys in legacy key order (as a migration does) into a fresh table with a
/// uuid primary key, once per layout, and times the COPY.
pub async fn uuid_layouts(pool: &PgPool, rows: i64) -> Result<Vec<LayoutFigure>, ToolError> {
    let mut out = Vec::new();
    let source = TableName::new("public", "dispatch_system_message");
    for layout in [UuidLayout::V5, UuidLayout::Ordered] {
        let table = format!(
            "agentctl_bench_uuid_{}",
            if layout == UuidLayout::V5 { "v5" } else { "ordered" }
        );
        let what = format!("benchmarking {table}");
        sqlx::raw_sql(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id uuid \
            PRIMARY KEY, legacy_id int4 NOT NULL)"
        ))
        .execute(pool)
        .await
        .map_err(while_doing(&what))?;
        let deriver = KeyDeriver::new(layout, uuid::Uuid::from_u128(0x5eed), &source);
        let mut conn = pool.acquire().await.map_err(while_doing(&what))?;
        let started = Instant::now();
        let mut copy = conn
            .copy_in_raw(&format!("COPY {table} (id, legacy_id) FROM STDIN"))
            .await
            .map_err(while_doing(&what))?;
        let mut buf = Vec::with_capacity(1 << 20);
        let mut id_text = itoa::Buffer::new();
        for id in 1..=rows {
            let key = id_text.format(id);
            buf.extend_from_slice(
                deriver
                    .derive(&[key])
                    .hyphenated()
                    .encode_lower(&mut uuid::Uuid::encode_buffer())
                    .as_bytes(),
            );
            buf.push(b'\t');
            buf.extend_from_slice(key.as_bytes());
            buf.push(b'\n');
            if buf.len() >= 1 << 20 {
                copy.send(std::mem::take(&mut buf)).await.map_err(while_doing(&what))?;
            }
        }
        copy.send(buf).await.map_err(while_doing(&what))?;
        copy.finish().await.map_err(while_doing(&what))?;
        let seconds = started.elapsed().as_secs_f64();
        let index_bytes: i64 =
            sqlx::query_scalar(&format!("SELECT pg_relation_size('{table}_pkey')"))
                .fetch_one(&mut *conn)
                .await
                .map_err(while_doing(&what))?;
        sqlx::raw_sql(&format!("DROP TABLE {table}"))
            .execute(&mut *conn)
            .await
            .map_err(while_doing(&what))?;
        out.push(LayoutFigure {
            layout,
            rows,
            seconds,
            rows_per_second: rows as f64 / seconds,
            index_bytes,
        });
    }
    Ok(out)
}

/// What the raw pipe moved.
#[derive(Clone, Debug, Serialize)]
pub struct PipeFigure {
    pub tables: usize,
    pub rows: u64,
    pub seconds: f64,
    pub rows_per_second: f64,
}

/// Vacuums and analyzes both databases before a measurement, outside its time: what the last
/// one left behind (dropped tables' catalog rows, deleted control rows, tables without
/// statistics) is cleared now instead of by an autovacuum worker in the middle of the next one.
/// The source's statistics also decide the raw pipe's order (largest first).
pub async fn settle(source: &PgPool, target: &PgPool) -> Result<(), ToolError> {
    for (pool, which) in [(source, "source"), (target, "target")] {
        sqlx::raw_sql("VACUUM (ANALYZE)").execute(pool).await.map_err(while_doing(format!(
            "vacuuming and analyzing the {which} database before a measurement"
        )))?;
    }
    Ok(())
}

/// The bytes of WAL the server has written since its statistics were reset (`pg_stat_wal`,
/// PostgreSQL 14 and later; `None` before): read around a command, what it made the server
/// log, which `wal_level` decides (under `minimal`, rows COPYed into a table created or
/// truncated in the same transaction are not logged, only synced).
pub async fn wal_bytes(pool: &PgPool) -> Option<i64> {
    sqlx::query_scalar("SELECT wal_bytes::int8 FROM pg_stat_wal").fetch_one(pool).await.ok()
}

/// The server's `wal_level`.
pub async fn wal_level(pool: &PgPool) -> Option<String> {
    sqlx::query_scalar("SELECT current_setting('wal_level')").fetch_one(pool).await.ok()
}

/// The practical ceiling of moving the source's tables on this machine: every table of the
/// source's `public` schema piped `COPY (SELECT <uuid>, * ... ORDER BY key) TO STDOUT` into
/// `COPY ... FROM STDIN` of a table of the same columns plus a uuid primary key, in the target
/// database (schema `agentctl_bench`, dropped afterwards). The UUID is computed in SQL, time
/// ordered like agentctl's (a table tag, then the key, then hash bits). No transform, no
/// reference, no bookkeeping: only the bytes through both servers. Its tables fill with
/// autovacuum off, as the empty tables agentctl loads do. `jobs` tables at a time,
/// the largest first, as agentctl's waves run.
pub async fn raw_pipe(
    source: &PgPool,
    target: &PgPool,
    jobs: usize,
) -> Result<PipeFigure, ToolError> {
    let tables: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT c.relname::text,
                string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY a.attnum),
                (SELECT string_agg(format('%I', k.attname), ', ' ORDER BY array_position(i.indkey::int2[], k.attnum))
                 FROM pg_index i JOIN pg_attribute k ON k.attrelid = i.indrelid AND k.attnum = ANY (i.indkey)
                 WHERE i.indrelid = c.oid AND i.indisprimary),
                c.reltuples::int8
         FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND c.relname NOT LIKE 'agentctl%'
         GROUP BY c.oid, c.relname, c.reltuples ORDER BY c.reltuples DESC",
    )
    .fetch_all(source)
    .await
    .map_err(while_doing("listing the source tables for the raw pipe"))?;
    sqlx::raw_sql("DROP SCHEMA IF EXISTS agentctl_bench CASCADE; CREATE SCHEMA agentctl_bench")
        .execute(target)
        .await
        .map_err(while_doing("creating the agentctl_bench schema"))?;
    for (name, columns, _, _) in &tables {
        // Autovacuum off while they fill, as agentctl has it for the empty tables it loads.
        sqlx::query(&format!(
            "CREATE TABLE agentctl_bench.{} (agentctl_uuid uuid PRIMARY KEY, {columns}) WITH \
                (autovacuum_enabled = false)",
            ident(name)
        ))
        .execute(target)
        .await
        .map_err(while_doing(format!("creating agentctl_bench.{name}")))?;
    }
    let started = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    let mut queue = tables.iter().enumerate();
    let mut rows = 0u64;
    loop {
        while running.len() < jobs.max(1) {
            let Some((n, (name, _, key, _))) = queue.next() else { break };
            let (source, target) = (source.clone(), target.clone());
            let (name, key) = (name.clone(), key.clone());
            running.spawn(async move { pipe_table(&source, &target, &name, &key, n as u32).await });
        }
        let Some(done) = running.join_next().await else { break };
        rows += done.map_err(|e| ToolError::system(format!("a raw pipe stopped: {e}")))??;
    }
    let seconds = started.elapsed().as_secs_f64();
    sqlx::query("DROP SCHEMA agentctl_bench CASCADE")
        .execute(target)
        .await
        .map_err(while_doing("dropping the agentctl_bench schema"))?;
    Ok(PipeFigure {
        tables: tables.len(),
        rows,
        seconds,
        rows_per_second: rows as f64 / seconds.max(1e-9),
    })
}

async fn pipe_table(
    source: &PgPool,
    target: &PgPool,
    name: &str,
    key: &str,
    tag: u32,
) -> Result<u64, ToolError> {
    let what = format!("piping {name}");
    // One integer key orders the UUIDs by key; any other key, by its hash.
    let single_int = !key.contains(',');
    let order = if single_int {
        format!("lpad(to_hex(({key})::int8), 16, '0')")
    } else {
        format!("left(md5(row({key})::text), 16)")
    };
    let select = format!(
        "SELECT (lpad(to_hex({tag}), 8, '0') || {order} || left(md5(row({key})::text), 8))::uuid, \
            * FROM public.{} ORDER BY {key}",
        ident(name)
    );
    let mut out = source.acquire().await.map_err(while_doing(&what))?;
    let mut inn = target.acquire().await.map_err(while_doing(&what))?;
    let mut stream = out
        .copy_out_raw(&format!("COPY ({select}) TO STDOUT"))
        .await
        .map_err(while_doing(&what))?;
    let mut copy = inn
        .copy_in_raw(&format!("COPY agentctl_bench.{} FROM STDIN", ident(name)))
        .await
        .map_err(while_doing(&what))?;
    while let Some(chunk) = stream.next().await {
        copy.send(chunk.map_err(while_doing(&what))?).await.map_err(while_doing(&what))?;
    }
    copy.finish().await.map_err(while_doing(&what))
}
