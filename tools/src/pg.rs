//! Connecting to PostgreSQL, and turning the driver's errors into one line an operator can act
//! on: which database, what was being done, and why it failed.

use std::ops::DerefMut;
use std::time::Duration;

use runtime::config::{DbRole, DbUrl};
use sqlx::postgres::{PgConnectOptions, PgCopyIn, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use runtime::error::{ErrorKind, ToolError};

/// How long connecting may take before it is reported as a failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a query waits for a connection from the pool (or for a new one to open).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(15);

/// The most COPY data handed to the driver at once. The driver copies what it is given into the
/// connection's write buffer, and that buffer keeps its size: a batch sent whole left every
/// pooled connection holding a buffer as large as the largest batch it had sent (a few MiB
/// each), grown, copied and faulted in afresh connection by connection.
const COPY_CHUNK: usize = 256 * 1024;

/// Sends `data` into a COPY ... FROM STDIN in pieces of [`COPY_CHUNK`] bytes (the server reads
/// the stream, not the messages: where a piece ends does not matter).
pub async fn send_copy<C: DerefMut<Target = PgConnection>>(
    copy: &mut PgCopyIn<C>,
    data: &[u8],
) -> Result<(), sqlx::Error> {
    for chunk in data.chunks(COPY_CHUNK) {
        copy.send(chunk).await?;
    }
    Ok(())
}

/// The session settings of every connection to the source: the values read as text in one
/// form whatever the database or its role sets, and the SQL agentctl writes read as written.
pub const SOURCE_SETTINGS: [(&str, &str); 10] = [
    ("DateStyle", "ISO"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "1"),
    ("bytea_output", "hex"),
    ("lc_monetary", "C"),
    // A keyset page's literal (`after 'k\'`) read with its backslash as written: a legacy
    // database with this off read it as an escape and paged past rows, or over them again.
    ("standard_conforming_strings", "on"),
    // Reading a large table and building its indexes take as long as they take (as pg_dump
    // sets them); a timeout a role sets for its applications would stop the run half way.
    ("statement_timeout", "0"),
    ("idle_in_transaction_session_timeout", "0"),
    // A table whose row-level security hides rows from agentctl's role is refused with the
    // server's error (as pg_dump does) instead of read, and validated, without them.
    ("row_security", "off"),
];

/// The session settings of every connection to the target: `money` is written and read in one
/// locale on both sides (`$1,234.50`), whatever locale either server was made with (a source in
/// `de_DE` writes `1.234,50 €`, which a target in `en_US` refuses); an XML value without a root
/// element is as valid as in the source; floats compare by their exact text; an interval is
/// read in the style the source writes it; SQL, time limits and row-level security as on the
/// source.
pub const TARGET_SETTINGS: [(&str, &str); 8] = [
    ("lc_monetary", "C"),
    ("IntervalStyle", "postgres"),
    ("row_security", "off"),
    ("xmloption", "content"),
    ("extra_float_digits", "1"),
    ("standard_conforming_strings", "on"),
    ("statement_timeout", "0"),
    ("idle_in_transaction_session_timeout", "0"),
];

/// Connects to `db` once to check that it is reachable (failing at once, with a clear reason,
/// when it is not), then returns a pool of up to `max_connections`.
pub async fn connect(db: &DbUrl, max_connections: u32) -> Result<PgPool, ToolError> {
    let what = format!("connecting to the {} database at {}", db.role, db.location());
    let mut options: PgConnectOptions = db
        .expose()
        .parse::<PgConnectOptions>()
        .map_err(|e| ToolError::bad_input(format!("{what}: {}", describe(&e))))?
        .application_name("agentctl")
        .log_statements(tracing::log::LevelFilter::Debug)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(30));
    if db.role == DbRole::Source {
        // The source's values are read as text: in one form whatever the database or its role
        // sets (a keyless table's row identity hashes that text, and must be the same on every
        // read).
        options = options.options(SOURCE_SETTINGS);
    } else {
        options = options.options(TARGET_SETTINGS);
    }
    let probe = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
        .await
        .map_err(|_| {
            ToolError::transient(format!("{what}: no answer within {}s", CONNECT_TIMEOUT.as_secs()))
        })?
        .map_err(|e| ToolError::new(kind(&e), format!("{what}: {}", describe(&e))))?;
    let _ = probe.close().await;
    // A connection that cannot be had within ACQUIRE_TIMEOUT is a transient failure the caller
    // retries or reports: a database that went away is said within seconds, not minutes.
    Ok(PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(options))
}

/// Whose fault a database error is, by its SQLSTATE: the one place agentctl decides whether
/// a failed write says something about the rows, or about the system they are written to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The rows' own: a data exception (class 22: a value that does not parse or fit) or an
    /// integrity violation (class 23: NOT NULL, CHECK, unique, foreign and exclusion keys).
    /// The rows are rejected with the reason.
    Row,
    /// Passing: the connection lost, a serialization failure or deadlock, the server shutting
    /// down, starting or out of connections. Tried again.
    Transient,
    /// The system's: a full disk and other insufficient resources, a missing privilege, a
    /// missing object, a read-only server, configuration. The work stops with the cause and
    /// no row is rejected for it.
    System,
}

/// Classifies a driver error (see [`Fault`]).
pub fn fault(e: &sqlx::Error) -> Fault {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_) => {
            Fault::Transient
        }
        sqlx::Error::Database(db) => sqlstate_fault(db.code().as_deref().unwrap_or("")),
        _ => Fault::System,
    }
}

fn sqlstate_fault(code: &str) -> Fault {
    match code {
        "40001" | "40P01" | "53300" | "57P01" | "57P02" | "57P03" => Fault::Transient,
        _ if code.starts_with("08") => Fault::Transient,
        _ if code.starts_with("22") || code.starts_with("23") => Fault::Row,
        _ => Fault::System,
    }
}

/// One line for a driver error, without the driver's internals.
pub fn describe(e: &sqlx::Error) -> String {
    match e {
        // Text the server could not send as UTF-8: what to do about it.
        sqlx::Error::Database(db) if db.code().as_deref() == Some("22021") => format!(
            "{} (SQLSTATE 22021): agentctl reads all text as UTF-8; an old database that stores \
                text as SQL_ASCII keeps bytes of no declared encoding: convert its text to UTF-8 \
                first (dump it, convert the dump from its real encoding with iconv, and load it \
                into a UTF8 database)",
            db.message()
        ),
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| format!(" (SQLSTATE {c})")).unwrap_or_default();
            format!("{}{code}", db.message())
        }
        sqlx::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                "connection refused (is the server running and is the port right?)".into()
            }
            std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::UnexpectedEof => "the connection was closed by the server".into(),
            _ => io.to_string(),
        },
        sqlx::Error::Tls(t) => format!("TLS: {t}"),
        sqlx::Error::PoolTimedOut => "no connection became free in time".into(),
        sqlx::Error::PoolClosed => "the connection pool is closed".into(),
        sqlx::Error::Configuration(c) => format!("bad connection settings: {c}"),
        sqlx::Error::Protocol(p) => format!("protocol error: {p}"),
        sqlx::Error::ColumnDecode { index, source } => {
            format!("could not read column {index}: {source}")
        }
        sqlx::Error::Decode(d) => format!("could not decode a value: {d}"),
        sqlx::Error::RowNotFound => "no row found".into(),
        other => other.to_string(),
    }
    .replace('\n', " ")
}

/// The kind of error a driver error is: transient, or the system's (a row's own fault is
/// the system's too where no row is being written).
pub fn kind(e: &sqlx::Error) -> ErrorKind {
    match fault(e) {
        Fault::Transient => ErrorKind::Transient,
        Fault::Row | Fault::System => ErrorKind::System,
    }
}

/// Context for a failed statement: `while {what}: {reason}`, of the error's [`kind`].
pub fn while_doing(what: impl std::fmt::Display) -> impl FnOnce(sqlx::Error) -> ToolError {
    move |e| ToolError::new(kind(&e), format!("while {what}: {}", describe(&e)))
}

/// The connection pool type, so that crates above `tools` need not import the driver.
pub type Pool = PgPool;

/// A pooled connection for work that leaves it mid-protocol until the work ends: a COPY, a
/// transaction begun by hand. Work cut off (its future dropped when a run stops or a worker
/// fails, or an error before its end) closes the connection instead of giving it back to the
/// pool, where the next user would read the cut-off work's leftover replies: sqlx does not
/// drain a COPY's. [`Held::finished`] gives it back.
pub struct Held {
    conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    finished: bool,
}

impl Held {
    pub async fn acquire(pool: &PgPool) -> Result<Held, sqlx::Error> {
        Ok(Held { conn: pool.acquire().await?, finished: false })
    }

    /// The work ended with the connection ready for the next: it goes back to the pool.
    pub fn finished(&mut self) {
        self.finished = true;
    }
}

impl std::ops::Deref for Held {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for Held {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.finished {
            self.conn.close_on_drop();
        }
    }
}

/// Makes the table's deferred unique and exclusion rules immediate for the rest of the
/// transaction, so that a row that breaks one is refused by its own statement (and set aside
/// with the reason) instead of failing the whole transaction at its COMMIT. Foreign keys keep
/// their timing: rows of one batch may point at each other. Whether the table has such a rule
/// (deferrable: ON CONFLICT refuses it as an arbiter).
pub async fn immediate_rules(
    c: &mut PgConnection,
    table: &runtime::domain::TableName,
) -> Result<bool, sqlx::Error> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(con.conname) FROM pg_constraint con
         JOIN pg_namespace n ON n.oid = con.connamespace
         WHERE con.conrelid = $1::regclass AND con.condeferrable AND con.contype IN ('p', 'u', 'x')",
    )
    .bind(crate::catalog::quoted(table))
    .fetch_all(&mut *c)
    .await?;
    if !names.is_empty() {
        sqlx::query(&format!("SET CONSTRAINTS {} IMMEDIATE", names.join(", ")))
            .execute(&mut *c)
            .await?;
    }
    Ok(!names.is_empty())
}

/// Runs a script of several statements in one transaction.
pub async fn run_script(pool: &PgPool, sql: &str, what: &str) -> Result<(), ToolError> {
    let mut tx = pool.begin().await.map_err(while_doing(what))?;
    sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(while_doing(what))?;
    tx.commit().await.map_err(while_doing(what))
}

#[cfg(test)]
mod tests {
    use super::{sqlstate_fault, Fault};

    #[test]
    fn only_data_and_integrity_errors_are_the_rows_fault() {
        for (code, fault) in [
            ("22P02", Fault::Row),    // invalid input syntax
            ("22001", Fault::Row),    // value too long
            ("23505", Fault::Row),    // unique violation
            ("23P01", Fault::Row),    // exclusion violation
            ("53100", Fault::System), // disk full
            ("53200", Fault::System), // out of memory
            ("42501", Fault::System), // insufficient privilege
            ("42P01", Fault::System), // undefined table
            ("25006", Fault::System), // read-only transaction
            ("P0001", Fault::System), // raised by a trigger
            ("XX000", Fault::System), // internal error
            ("40001", Fault::Transient),
            ("40P01", Fault::Transient),
            ("53300", Fault::Transient), // too many connections
            ("57P01", Fault::Transient), // admin shutdown
            ("08006", Fault::Transient), // connection failure
        ] {
            assert_eq!(sqlstate_fault(code), fault, "{code}");
        }
    }
}
