//! Reading a source table's rows in key order through `COPY (SELECT ...) TO STDOUT`: one
//! statement, streamed, the server's own text forms, no per-row round trip.

use async_trait::async_trait;
use futures::StreamExt;
use std::collections::HashSet;

use runtime::domain::{Scan, CHANGED_SINCE_MARGIN};
use runtime::domain::{TableName, ROW_IDENTITY};
use runtime::ports::{Rows, ToolError};
use runtime::text_rows::TextRows;
use sqlx::PgPool;

use crate::catalog::{ident, literal, quoted};
use crate::pg::while_doing;

pub struct PgRows {
    pool: PgPool,
    /// The plain tables that other tables inherit from, read once.
    parents: tokio::sync::OnceCell<HashSet<TableName>>,
}

impl PgRows {
    pub fn new(pool: PgPool) -> PgRows {
        PgRows { pool, parents: tokio::sync::OnceCell::new() }
    }

    /// The plain tables other tables inherit from (`CREATE TABLE truck (...) INHERITS
    /// (vehicle)`): a SELECT of one also returns its children's rows, which are migrated as
    /// their own tables'. Partitioned tables are not among them: their rows are their
    /// partitions'.
    async fn parents(&self) -> Result<&HashSet<TableName>, ToolError> {
        self.parents
            .get_or_try_init(|| async {
                let rows: Vec<(String, String)> = sqlx::query_as(
                    "SELECT n.nspname::text, c.relname::text FROM pg_class c
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE c.relkind = 'r' AND EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent = c.oid)",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(while_doing("reading which tables are inherited from".to_owned()))?;
                Ok(rows.into_iter().map(|(schema, name)| TableName::new(schema, name)).collect())
            })
            .await
    }
}

/// A table as a scan reads it: `ONLY` its own rows if other tables inherit from it.
fn read_as(table: &TableName, parents: &HashSet<TableName>) -> String {
    let only = if parents.contains(table) { "ONLY " } else { "" };
    format!("{only}{}", quoted(table))
}

/// The SELECT a scan runs: the mapped table is `s`, joined tables `j0`, `j1`, ...; `parents`
/// the tables read `ONLY` ([`PgRows::parents`]).
pub fn select(scan: &Scan, parents: &HashSet<TableName>) -> String {
    let alias = |col: &str| -> String {
        match col.split_once('.') {
            Some((table, c)) => match scan.joins.iter().position(|j| j.table.name == table) {
                Some(i) => format!("j{i}.{}", ident(c)),
                None => format!("s.{}", ident(col)),
            },
            None => format!("s.{}", ident(col)),
        }
    };
    let cols: Vec<String> = scan
        .columns
        .iter()
        .map(|c| parent_key(scan, c, &alias).unwrap_or_else(|| alias(c)))
        .collect();
    let from = if scan.key == [ROW_IDENTITY] {
        // A keyless table's identity: the row's text (in the settings `pg::connect` fixes for
        // the source) hashed, and its ordinal among identical rows, which are interchangeable.
        let content = "md5(t::text)";
        format!(
            "(SELECT t.*, ({content} || ':' || row_number() OVER (PARTITION BY {content})) \
                COLLATE \"C\" AS {} FROM {} t)",
            ident(ROW_IDENTITY),
            read_as(&scan.table, parents)
        )
    } else {
        read_as(&scan.table, parents)
    };
    let mut sql = format!("SELECT {} FROM {from} s", cols.join(", "));
    for (i, j) in scan.joins.iter().enumerate() {
        sql.push_str(&format!(
            " LEFT JOIN {} j{i} ON j{i}.{} = s.{}",
            read_as(&j.table, parents),
            ident(&j.key),
            ident(&j.on)
        ));
    }
    sql.push_str(&parent_joins(scan, &alias, parents));
    let order: Vec<String> = scan.key.iter().map(|k| format!("s.{}", ident(k))).collect();
    let mut filters = Vec::new();
    if let Some(after) = &scan.after {
        // Keyset resume: the key's values as literals, which the server types from the columns.
        let values: Vec<String> = after.iter().map(|v| literal(v)).collect();
        filters.push(format!("({}) > ({})", order.join(", "), values.join(", ")));
    }
    if !scan.only.is_empty() {
        // The keys as literals, as `after`'s are: each a row of the key's values.
        let keys: Vec<String> = scan
            .only
            .iter()
            .map(|key| {
                let parts: Vec<String> = key.iter().map(|v| literal(v)).collect();
                format!("({})", parts.join(", "))
            })
            .collect();
        filters.push(format!("({}) IN ({})", order.join(", "), keys.join(", ")));
    }
    if let Some((column, since)) = &scan.changed_since {
        // The literal is typed from the column, whose own text it is.
        filters.push(format!(
            "s.{} + interval '{CHANGED_SINCE_MARGIN}' >= {}",
            ident(column),
            literal(since)
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

/// The expression of `column` when it is a reference's [`ParentKey::output`]: the text of the
/// parent's key column as the parent row the reference equals is written (joined by
/// [`parent_joins`]), else the reference's own text; NULL where a column of the reference is.
fn parent_key(scan: &Scan, column: &str, alias: &dyn Fn(&str) -> String) -> Option<String> {
    let (n, r, i) = scan.parent_keys.iter().enumerate().find_map(|(n, r)| {
        let i = (0..r.columns.len()).find(|&i| r.key.output(&r.columns[i], &r.parent, i) == column);
        i.map(|i| (n, r, i))
    })?;
    let null: Vec<String> = r.columns.iter().map(|c| format!("{} IS NULL", alias(c))).collect();
    Some(format!(
        "CASE WHEN {} THEN NULL ELSE coalesce(format('%s', agentctl_p{n}.{}), format('%s', {})) END",
        null.join(" OR "),
        ident(&r.key.columns[i]),
        alias(&r.columns[i])
    ))
}

/// A LEFT JOIN of each parent a reference of `columns` is read as the key of
/// ([`parent_key`]): matched as its foreign key matches, the reference cast to the key's type.
/// The key is unique under that equality, so a row joins one parent row at most. (A hash join,
/// where a subquery a row looked the parent up a million times.)
fn parent_joins(
    scan: &Scan,
    alias: &dyn Fn(&str) -> String,
    parents: &HashSet<TableName>,
) -> String {
    let mut sql = String::new();
    for (n, r) in scan.parent_keys.iter().enumerate() {
        let read = (0..r.columns.len())
            .any(|i| scan.columns.contains(&r.key.output(&r.columns[i], &r.parent, i)));
        if !read {
            continue;
        }
        let equal: Vec<String> = r
            .columns
            .iter()
            .zip(&r.key.columns)
            .zip(&r.key.casts)
            .map(|((c, k), cast)| {
                let value = match cast {
                    Some(ty) => format!("CAST({} AS {ty})", alias(c)),
                    None => alias(c),
                };
                format!("agentctl_p{n}.{} = {value}", ident(k))
            })
            .collect();
        sql.push_str(&format!(
            " LEFT JOIN {} agentctl_p{n} ON {}",
            read_as(&r.parent, parents),
            equal.join(" AND ")
        ));
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
        let sql = format!("COPY ({}) TO STDOUT", select(scan, self.parents().await?));
        let mut conn = crate::pg::Held::acquire(&self.pool).await.map_err(failed)?;
        let mut stream = conn.copy_out_raw(&sql).await.map_err(failed)?;
        let mut lines = Lines::default();
        let mut count = 0u64;
        let mut since_yield = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| read_failure(scan, count, e))?;
            lines.feed(&chunk, |line| {
                parse_line(line, rows).map_err(|e| e.context(what()))?;
                each(rows);
                count += 1;
                Ok(())
            })?;
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
        if !lines.pending.is_empty() {
            return Err(ToolError::system(format!(
                "the COPY text of {} ended inside a row",
                scan.table
            )));
        }
        Ok(count)
    }
}

/// Why reading `scan` stopped after `read` rows; for a value the server could not send as
/// UTF-8, which row it is.
fn read_failure(scan: &Scan, read: u64, e: sqlx::Error) -> ToolError {
    let mut what = format!("reading {}", scan.table);
    if matches!(&e, sqlx::Error::Database(db) if db.code().as_deref() == Some("22021")) {
        what += &format!(", row {} in key order", read + 1);
        if let Some(key) = &scan.after {
            what += &format!(" after key ({})", key.join(", "));
        }
    }
    while_doing(what)(e)
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

    async fn page(&self, scan: &Scan, limit: usize, into: TextRows) -> Result<TextRows, ToolError> {
        // Parsed straight into the page: no value is a string of its own. Room for rows of 64
        // bytes at least (a page reused keeps the room its largest page took), so that the
        // text is seldom copied to a larger buffer as the page fills.
        let mut rows = into.reuse(scan.columns.len(), limit.min(65_536), limit.min(65_536) * 64);
        let limited = Scan { limit: Some(limit), ..scan.clone() };
        self.stream(&limited, &mut rows, |_| {}).await?;
        Ok(rows)
    }
}

/// COPY text arriving in messages, cut into lines. The server sends a line a message: lines are
/// handed on where they arrived, and only a line split across messages is put together first.
#[derive(Default)]
struct Lines {
    /// The start of a line whose end has not arrived.
    pending: Vec<u8>,
}

impl Lines {
    /// Calls `line` with every line `chunk` completes, without its newline.
    fn feed(
        &mut self,
        chunk: &[u8],
        mut line: impl FnMut(&[u8]) -> Result<(), ToolError>,
    ) -> Result<(), ToolError> {
        let mut data = chunk;
        if !self.pending.is_empty() {
            let end = memchr::memchr(b'\n', data).unwrap_or(data.len());
            self.pending.extend_from_slice(&data[..end]);
            data = &data[end..];
            if let Some(after) = data.strip_prefix(b"\n") {
                line(&self.pending)?;
                self.pending.clear();
                data = after;
            }
        }
        while let Some(end) = memchr::memchr(b'\n', data) {
            line(&data[..end])?;
            data = &data[end + 1..];
        }
        self.pending.extend_from_slice(data);
        Ok(())
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
    // is valid too, and undoing an escape keeps it so. One pass finds each field's end and
    // whether it holds an escape (most do not: copied whole).
    let line =
        std::str::from_utf8(line).map_err(|_| ToolError::system("a value is not valid UTF-8"))?;
    let bytes = line.as_bytes();
    let mut start = 0;
    loop {
        let (end, escaped) = match memchr::memchr2(b'\t', b'\\', &bytes[start..]) {
            Some(i) if bytes[start + i] == b'\t' => (start + i, false),
            Some(i) => {
                let tab = memchr::memchr(b'\t', &bytes[start + i..]);
                (tab.map_or(bytes.len(), |j| start + i + j), true)
            }
            None => (bytes.len(), false),
        };
        let field = &line[start..end];
        match escaped {
            false => out.push(Some(field)),
            true if field == "\\N" => out.push(None),
            true => out.push_parts(unescaped(field)),
        }
        if end == bytes.len() {
            return Ok(());
        }
        start = end + 1;
    }
}

/// A COPY text field as the pieces of its value: the runs between backslashes as they are, and
/// each escape as the character it stands for.
fn unescaped(field: &str) -> impl Iterator<Item = &str> {
    let mut rest = field;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some(after) = rest.strip_prefix('\\') else {
            let run = memchr::memchr(b'\\', rest.as_bytes()).unwrap_or(rest.len());
            let (piece, tail) = rest.split_at(run);
            rest = tail;
            return Some(piece);
        };
        // A backslash ending the field stands for itself.
        let Some(c) = after.chars().next() else {
            rest = "";
            return Some("\\");
        };
        let (piece, tail) = after.split_at(c.len_utf8());
        rest = tail;
        Some(match piece {
            "n" => "\n",
            "t" => "\t",
            "r" => "\r",
            "b" => "\u{8}",
            "f" => "\u{c}",
            "v" => "\u{b}",
            other => other,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_messages_are_put_together() {
        let text = b"1\ta\n22\tbb\n\n333\tccc\n";
        let whole: Vec<Vec<u8>> = text.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
        // Every way of cutting the text in three messages gives the same lines.
        for i in 0..=text.len() {
            for j in i..=text.len() {
                let mut lines = Lines::default();
                let mut got = Vec::new();
                for chunk in [&text[..i], &text[i..j], &text[j..]] {
                    lines
                        .feed(chunk, |l| {
                            got.push(l.to_vec());
                            Ok(())
                        })
                        .unwrap();
                }
                assert_eq!(got, whole[..whole.len() - 1], "cut at {i} and {j}");
                assert!(lines.pending.is_empty());
            }
        }
        let mut lines = Lines::default();
        lines.feed(b"1\ta\n2\tb", |_| Ok(())).unwrap();
        assert_eq!(lines.pending, b"2\tb", "a line without its end waits");
    }

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
        // Escapes at the start, the end and side by side; `\N` only as the whole field; a
        // field that is a lone backslash.
        parse_line(b"\\n\\\\x\\t\t\\Nx\t\\", &mut rows).unwrap();
        assert_eq!(rows.row(3).collect::<Vec<_>>(), vec![Some("\n\\x\t"), Some("Nx"), Some("\\")]);
        parse_line(b"\\N\tab\\\\\tx\\Ny", &mut rows).unwrap();
        assert_eq!(rows.row(4).collect::<Vec<_>>(), vec![None, Some("ab\\"), Some("xNy")]);
    }
}
