//! Reading a source table's rows in key order through `COPY (SELECT ...) TO STDOUT`: one
//! statement, streamed, the server's own text forms, no per-row round trip.

use async_trait::async_trait;
use futures::StreamExt;
use runtime::domain::ROW_IDENTITY;
use runtime::domain::{Scan, CHANGED_SINCE_MARGIN};
use runtime::ports::{Rows, ToolError};
use runtime::text_rows::TextRows;
use sqlx::PgPool;

use crate::catalog::{ident, quoted};
use crate::pg::while_doing;

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
    let from = if scan.key == [ROW_IDENTITY] {
        // A keyless table's identity: the row's text (in the settings `pg::connect` fixes for
        // the source) hashed, and its ordinal among identical rows, which are interchangeable.
        let content = "md5(t::text)";
        format!(
            "(SELECT t.*, ({content} || ':' || row_number() OVER (PARTITION BY {content})) \
                COLLATE \"C\" AS {} FROM {} t)",
            ident(ROW_IDENTITY),
            quoted(&scan.table)
        )
    } else {
        quoted(&scan.table)
    };
    let mut sql = format!("SELECT {} FROM {from} s", cols.join(", "));
    for (i, j) in scan.joins.iter().enumerate() {
        sql.push_str(&format!(
            " LEFT JOIN {} j{i} ON j{i}.{} = s.{}",
            quoted(&j.table),
            ident(&j.key),
            ident(&j.on)
        ));
    }
    let order: Vec<String> = scan.key.iter().map(|k| format!("s.{}", ident(k))).collect();
    let mut filters = Vec::new();
    if let Some(after) = &scan.after {
        // Keyset resume: the key's values as literals, which the server types from the columns.
        let values: Vec<String> =
            after.iter().map(|v| format!("'{}'", v.replace('\'', "''"))).collect();
        filters.push(format!("({}) > ({})", order.join(", "), values.join(", ")));
    }
    if let Some((column, since)) = &scan.changed_since {
        // The literal is typed from the column, whose own text it is.
        filters.push(format!(
            "s.{} + interval '{CHANGED_SINCE_MARGIN}' >= '{}'",
            ident(column),
            since.replace('\'', "''")
        ));
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
    /// Streams the scan's rows into `rows`, calling `each` after every row is added (it may
    /// take the row out again).
    async fn stream(
        &self,
        scan: &Scan,
        rows: &mut TextRows,
        mut each: impl FnMut(&mut TextRows) + Send,
    ) -> Result<u64, ToolError> {
        let what = || format!("while reading {}", scan.table);
        let failed = |e: sqlx::Error| while_doing(format!("reading {}", scan.table))(e);
        let sql = format!("COPY ({}) TO STDOUT", select(scan));
        let mut conn = crate::pg::Held::acquire(&self.pool).await.map_err(failed)?;
        let mut stream = conn.copy_out_raw(&sql).await.map_err(failed)?;
        let mut pending: Vec<u8> = Vec::new();
        let mut count = 0u64;
        let mut since_yield = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(failed)?;
            pending.extend_from_slice(&chunk);
            let mut start = 0;
            while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
                parse_line(&pending[start..start + end], rows).map_err(|e| e.context(what()))?;
                each(rows);
                count += 1;
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
        drop(stream);
        conn.finished();
        Ok(count)
    }
}

#[async_trait]
impl Rows for PgRows {
    async fn scan(
        &self,
        scan: &Scan,
        each: &mut (dyn for<'r> FnMut(&'r [Option<&'r str>]) + Send),
    ) -> Result<u64, ToolError> {
        let mut row = TextRows::new(scan.columns.len());
        self.stream(scan, &mut row, |row| {
            let refs: Vec<Option<&str>> = row.row(0).collect();
            each(&refs);
            row.clear();
        })
        .await
    }

    async fn page(&self, scan: &Scan, limit: usize) -> Result<TextRows, ToolError> {
        // Parsed straight into the page: no value is a string of its own. Room for rows of up to
        // 256 bytes (memory is only taken as it is written), so that the text is not copied to
        // a larger buffer as the page fills.
        let mut rows =
            TextRows::with_capacity(scan.columns.len(), limit.min(65_536), limit.min(65_536) * 64);
        let limited = Scan { limit: Some(limit), ..scan.clone() };
        self.stream(&limited, &mut rows, |_| {}).await?;
        Ok(rows)
    }
}

/// One line of COPY text appended to `out` as a row (`\N` is NULL; backslash escapes undone).
pub fn parse_line(line: &[u8], out: &mut TextRows) -> Result<(), ToolError> {
    let mark = out.values();
    let parsed = push_fields(line, out);
    if parsed.is_err() || out.values() - mark != out.width() {
        let fields = out.values() - mark;
        out.truncate_values(mark);
        parsed?;
        return Err(ToolError::system(format!(
            "a row has {fields} values where {} columns were asked for",
            out.width()
        )));
    }
    Ok(())
}

fn push_fields(line: &[u8], out: &mut TextRows) -> Result<(), ToolError> {
    // Read as UTF-8 once a line: tabs and backslashes are ASCII, so each field of a valid line
    // is valid too, and undoing an escape keeps it so.
    let line =
        std::str::from_utf8(line).map_err(|_| ToolError::system("a value is not valid UTF-8"))?;
    for field in line.split('\t') {
        if field == "\\N" {
            out.push(None);
        } else if !field.contains('\\') {
            // Most values carry no escape: one copy, no character-by-character loop.
            out.push(Some(field));
        } else {
            let mut text = String::with_capacity(field.len());
            let mut chars = field.chars();
            while let Some(c) = chars.next() {
                text.push(match c {
                    '\\' => match chars.next() {
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some('b') => '\u{8}',
                        Some('f') => '\u{c}',
                        Some('v') => '\u{b}',
                        Some(other) => other,
                        // A backslash ending the field stands for itself.
                        None => '\\',
                    },
                    c => c,
                });
            }
            out.push(Some(&text));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_lines_become_rows_and_a_short_line_is_refused_whole() {
        let mut rows = TextRows::new(3);
        parse_line(b"1\t\\N\ta\\tb\\\\c\\nd", &mut rows).unwrap();
        parse_line(b"2\t\t", &mut rows).unwrap();
        assert_eq!(rows.row(0).collect::<Vec<_>>(), vec![Some("1"), None, Some("a\tb\\c\nd")]);
        assert_eq!(rows.row(1).collect::<Vec<_>>(), vec![Some("2"), Some(""), Some("")]);
        let err = parse_line(b"3\tonly two", &mut rows).unwrap_err();
        assert_eq!(err.message, "a row has 2 values where 3 columns were asked for");
        let err = parse_line(b"4\t\xff\tx", &mut rows).unwrap_err();
        assert_eq!(err.message, "a value is not valid UTF-8");
        assert_eq!(rows.len(), 2, "a refused line leaves nothing behind");
        assert_eq!(rows.values(), 6);
        // An escaped character of several bytes, the escapes of control characters, and a
        // backslash that ends its field.
        parse_line("5\t\\é\\b\\f\\v\\r\tend\\".as_bytes(), &mut rows).unwrap();
        assert_eq!(
            rows.row(2).collect::<Vec<_>>(),
            vec![Some("5"), Some("é\u{8}\u{c}\u{b}\r"), Some("end\\")]
        );
    }
}
