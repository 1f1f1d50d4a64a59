//! Reading a source table's rows in key order through `COPY (SELECT ...) TO STDOUT`: one
//! statement, streamed, the server's own text forms, no per-row round trip.

use async_trait::async_trait;
use futures::StreamExt;
use runtime::ports::{Rows, Scan, ToolError, CHANGED_SINCE_MARGIN};
use sqlx::PgPool;

use crate::catalog::{ident, quoted};
use crate::pg::{describe, DbError};

pub struct PgRows {
    pool: PgPool,
}

impl PgRows {
    pub fn new(pool: PgPool) -> PgRows {
        PgRows { pool }
    }
}

/// The SELECT a scan runs: the mapped table is `s`, joined tables `j0`, `j1`, ...
pub fn select(scan: &Scan) -> String {
    let alias = |col: &str| -> String {
        match col.split_once('.') {
            Some((table, c)) => match scan.joins.iter().position(|j| j.table.name == table) {
                Some(i) => format!("j{i}.{}", ident(c)),
                None => format!("s.{}", ident(col)),
            },
            None => format!("s.{}", ident(col)),
        }
    };
    let cols: Vec<String> = scan.columns.iter().map(|c| alias(c)).collect();
    let mut sql = format!("SELECT {} FROM {} s", cols.join(", "), quoted(&scan.table));
    for (i, j) in scan.joins.iter().enumerate() {
        sql.push_str(&format!(" LEFT JOIN {} j{i} ON j{i}.{} = s.{}", quoted(&j.table), ident(&j.key), ident(&j.on)));
    }
    let order: Vec<String> = scan.key.iter().map(|k| format!("s.{}", ident(k))).collect();
    let mut filters = Vec::new();
    if let Some(after) = &scan.after {
        // Keyset resume: the key's values as literals, which the server types from the columns.
        let values: Vec<String> = after.iter().map(|v| format!("'{}'", v.replace('\'', "''"))).collect();
        filters.push(format!("({}) > ({})", order.join(", "), values.join(", ")));
    }
    if let Some((column, since)) = &scan.changed_since {
        // The literal is typed from the column, whose own text it is.
        filters.push(format!("s.{} + interval '{CHANGED_SINCE_MARGIN}' >= '{}'", ident(column), since.replace('\'', "''")));
    }
    if !filters.is_empty() {
        sql.push_str(&format!(" WHERE {}", filters.join(" AND ")));
    }
    sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
    if let Some(n) = scan.limit {
        sql.push_str(&format!(" LIMIT {n}"));
    }
    sql
}

impl PgRows {
    /// Streams the scan's rows through `each`, which may take the fields it is given.
    async fn stream(&self, scan: &Scan, mut each: impl FnMut(&mut Vec<Option<String>>) + Send) -> Result<u64, ToolError> {
        let what = |e: String| DbError(format!("while reading {}: {e}", scan.table));
        let sql = format!("COPY ({}) TO STDOUT", select(scan));
        let mut conn = self.pool.acquire().await.map_err(|e| what(describe(&e)))?;
        let mut stream = conn.copy_out_raw(&sql).await.map_err(|e| what(describe(&e)))?;
        let mut pending: Vec<u8> = Vec::new();
        let mut rows = 0u64;
        let mut since_yield = 0usize;
        let mut fields: Vec<Option<String>> = Vec::with_capacity(scan.columns.len());
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| what(describe(&e)))?;
            pending.extend_from_slice(&chunk);
            let mut start = 0;
            while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
                parse_line(&pending[start..start + end], &mut fields).map_err(&what)?;
                each(&mut fields);
                rows += 1;
                start += end + 1;
            }
            pending.drain(..start);
            // The caller's work per row is CPU-bound: every MiB, let the run's other tasks (the
            // audit writer, supervision) have the worker. (The server sends a row a message,
            // so yielding per message would cost more than the work.)
            since_yield += chunk.len();
            if since_yield >= 1 << 20 {
                since_yield = 0;
                tokio::task::yield_now().await;
            }
        }
        Ok(rows)
    }
}

#[async_trait]
impl Rows for PgRows {
    async fn scan(&self, scan: &Scan, each: &mut (dyn for<'r> FnMut(&'r [Option<&'r str>]) + Send)) -> Result<u64, ToolError> {
        self.stream(scan, |fields| {
            let refs: Vec<Option<&str>> = fields.iter().map(|f| f.as_deref()).collect();
            each(&refs);
        })
        .await
    }

    async fn page(&self, scan: &Scan, limit: usize) -> Result<Vec<Vec<Option<String>>>, ToolError> {
        // The parsed fields are the page's own: no second copy of every value.
        let mut rows = Vec::with_capacity(limit.min(65_536));
        let width = scan.columns.len();
        let limited = Scan { limit: Some(limit), ..scan.clone() };
        self.stream(&limited, |fields| rows.push(std::mem::replace(fields, Vec::with_capacity(width)))).await?;
        Ok(rows)
    }
}

/// One line of COPY text into its fields (`\N` is NULL; backslash escapes undone).
pub fn parse_line(line: &[u8], out: &mut Vec<Option<String>>) -> Result<(), String> {
    out.clear();
    for field in line.split(|&b| b == b'\t') {
        if field == b"\\N" {
            out.push(None);
            continue;
        }
        if !field.contains(&b'\\') {
            // Most values carry no escape: one copy, no byte-by-byte loop.
            out.push(Some(String::from_utf8(field.to_vec()).map_err(|_| "a value is not valid UTF-8".to_owned())?));
            continue;
        }
        let mut bytes = Vec::with_capacity(field.len());
        let mut i = 0;
        while i < field.len() {
            if field[i] == b'\\' && i + 1 < field.len() {
                bytes.push(match field[i + 1] {
                    b'n' => b'\n',
                    b't' => b'\t',
                    b'r' => b'\r',
                    b'b' => 8,
                    b'f' => 12,
                    b'v' => 11,
                    other => other,
                });
                i += 2;
            } else {
                bytes.push(field[i]);
                i += 1;
            }
        }
        out.push(Some(String::from_utf8(bytes).map_err(|_| "a value is not valid UTF-8".to_owned())?));
    }
    Ok(())
}
