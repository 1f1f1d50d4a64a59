//! Measurements that choose designs: how fast each UUID layout goes into a btree primary key.

use std::time::Instant;

use runtime::domain::TableName;
use runtime::mapping::{KeyDeriver, UuidLayout};
use serde::Serialize;
use sqlx::PgPool;

use crate::pg::{while_doing, DbError};

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
pub async fn uuid_layouts(pool: &PgPool, rows: i64) -> Result<Vec<LayoutFigure>, DbError> {
    let mut out = Vec::new();
    let source = TableName::new("public", "dispatch_system_message");
    for layout in [UuidLayout::V5, UuidLayout::Ordered] {
        let table = format!("agentctl_bench_uuid_{}", if layout == UuidLayout::V5 { "v5" } else { "ordered" });
        let what = format!("benchmarking {table}");
        sqlx::raw_sql(&format!("DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id uuid PRIMARY KEY, legacy_id int4 NOT NULL)"))
            .execute(pool)
            .await
            .map_err(while_doing(&what))?;
        let deriver = KeyDeriver::new(layout, uuid::Uuid::from_u128(0x5eed), &source);
        let mut conn = pool.acquire().await.map_err(while_doing(&what))?;
        let started = Instant::now();
        let mut copy = conn.copy_in_raw(&format!("COPY {table} (id, legacy_id) FROM STDIN")).await.map_err(while_doing(&what))?;
        let mut buf = Vec::with_capacity(1 << 20);
        let mut id_text = itoa::Buffer::new();
        for id in 1..=rows {
            let key = id_text.format(id);
            buf.extend_from_slice(deriver.derive(&[key]).hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()).as_bytes());
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
        let index_bytes: i64 = sqlx::query_scalar(&format!("SELECT pg_relation_size('{table}_pkey')"))
            .fetch_one(&mut *conn)
            .await
            .map_err(while_doing(&what))?;
        sqlx::raw_sql(&format!("DROP TABLE {table}")).execute(&mut *conn).await.map_err(while_doing(&what))?;
        out.push(LayoutFigure { layout, rows, seconds, rows_per_second: rows as f64 / seconds, index_bytes });
    }
    Ok(out)
}
