//! The `agentctl` control schema in the target database: its migrations, the runs, and the
//! audit trail's storage. Implements [`AuditSink`] for the audit writer and the read side that
//! `agentctl audit` uses.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use runtime::audit::{AuditError, AuditEvent, AuditSink, ChainHead, LedgerEntry, GENESIS};
use runtime::error::ToolError;
use runtime::RunId;
use serde::Serialize;
use sqlx::migrate::Migrator;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::pg::while_doing;
use crate::target::Failure;

/// Times a run's closing records are tried again after a transient failure (200 ms doubling,
/// about 12 s in all): a target restarting as a run ends loses nothing of its record.
const WRITE_RETRIES: u32 = 6;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The control schema over a target database pool.
#[derive(Clone)]
pub struct ControlStore {
    pool: PgPool,
}

/// The advisory lock a run that writes holds on its target (two int4 keys: `agnt`, 1).
const WRITER_LOCK: (i32, i32) = (0x6167_6e74, 1);

/// How a run's connection names itself (`application_name`), with its id after.
const PRESENCE_PREFIX: &str = "agentctl run ";

fn presence_name(run_id: RunId) -> String {
    format!("{PRESENCE_PREFIX}{run_id}")
}

/// A run's hold on its target (see [`ControlStore::attend`]); let go when dropped.
pub struct Presence {
    _conn: sqlx::PgConnection,
    _writer: Option<WriterLock>,
}

/// The target's writer lock (see [`ControlStore::writer_lock`]); let go when dropped.
pub struct WriterLock {
    _conn: sqlx::PgConnection,
}

/// Why a run could not hold its target.
#[derive(Debug)]
pub enum Attend {
    /// Another run writes to it: who, and since when.
    Held(String),
    Db(ToolError),
}

impl From<ToolError> for Attend {
    fn from(e: ToolError) -> Self {
        Attend::Db(e)
    }
}

/// The columns of a [`RunRow`]: the run's `outcome` as stored, but `interrupted` for one still
/// marked running whose process holds no connection to the target any more (killed, or its
/// machine gone: no connection carries its [`presence_name`]).
fn run_columns() -> String {
    format!(
        "run_id, command, goal, started_at, finished_at,
         CASE WHEN finished_at IS NULL AND outcome = 'running'
              AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.application_name = '{PRESENCE_PREFIX}' || run_id::text)
         THEN 'interrupted' ELSE outcome END AS outcome,
         outcome_detail, event_count"
    )
}

/// One row of `agentctl audit list`.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct RunRow {
    #[sqlx(try_from = "Uuid")]
    pub run_id: RunId,
    pub command: String,
    pub goal: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: String,
    pub outcome_detail: Option<String>,
    pub event_count: i64,
}

/// Where one entity of a run stands, from the control tables.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct EntityProgress {
    pub source_table: String,
    pub target_table: String,
    pub state: String,
    pub rows_read: i64,
    /// Rows agentctl put in the target.
    pub migrated: i64,
    /// Rows the target held before agentctl, kept as they were.
    pub kept: i64,
    pub rejected: i64,
    pub batches: i64,
    pub detail: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// One entity of a run's report: its accounting, timing and validation.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct ReportEntity {
    pub source_table: String,
    pub target_table: String,
    pub state: String,
    pub source_rows: i64,
    /// Rows agentctl put in the target.
    pub migrated: i64,
    /// Rows the target held before agentctl, kept as they were (never overwritten).
    pub kept: i64,
    pub rejected: i64,
    pub seconds: f64,
    pub validated: Option<bool>,
    pub validation_detail: Option<String>,
    /// `[{column, source_cents, target_cents}]` from the validation.
    pub money: Option<serde_json::Value>,
}

/// A run's rows over its entities.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub source_rows: i64,
    pub migrated: i64,
    pub kept: i64,
    pub rejected: i64,
}

impl Totals {
    pub fn of(entities: &[ReportEntity]) -> Totals {
        entities.iter().fold(Totals::default(), |t, e| Totals {
            source_rows: t.source_rows + e.source_rows,
            migrated: t.migrated + e.migrated,
            kept: t.kept + e.kept,
            rejected: t.rejected + e.rejected,
        })
    }

    /// Every source row is migrated, kept from before agentctl, or rejected.
    pub fn accounted(&self) -> bool {
        self.source_rows == self.migrated + self.kept + self.rejected
    }

    /// Rows in the target for the source's rows: migrated or kept.
    pub fn in_target(&self) -> i64 {
        self.migrated + self.kept
    }
}

/// Rejections of one source table for one rule: how many, an example reason, example keys.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct RejectionGroup {
    pub source_table: String,
    pub rule: String,
    pub count: i64,
    pub example_reason: String,
    pub example_keys: Vec<String>,
}

/// Which events `audit show` wants.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub agent: Option<String>,
    pub kind: Option<String>,
}

impl ControlStore {
    /// Creates or upgrades the control schema, then returns the store.
    pub async fn open(pool: PgPool) -> Result<ControlStore, ToolError> {
        let mut conn =
            pool.acquire().await.map_err(while_doing("preparing the agentctl control schema"))?;
        // Text the target's encoding cannot hold could be neither written nor recorded as
        // rejected (a rejected row is kept whole, and the trail's words are UTF-8): refused
        // before anything is created, where a run stopped at the first such value.
        let (encoding, db): (String, String) =
            sqlx::query_as("SELECT current_setting('server_encoding'), current_database()::text")
                .fetch_one(&mut *conn)
                .await
                .map_err(while_doing("reading the target's encoding"))?;
        if !matches!(encoding.as_str(), "UTF8" | "SQL_ASCII") {
            return Err(ToolError::system(format!(
                "the target database {db} stores text as {encoding}, which cannot hold every \
                    character a source may: agentctl would stop at the first such value, unable \
                    to write it or to record its row as rejected; nothing was changed; create the \
                    target as UTF8 (createdb -E UTF8 -T template0 {db})"
            )));
        }
        sqlx::query("CREATE SCHEMA IF NOT EXISTS agentctl")
            .execute(&mut *conn)
            .await
            .map_err(while_doing("creating the agentctl control schema"))?;
        // Made by another role (a superuser's `schema generate`, say): said plainly, not as the
        // migrations' "no schema has been selected".
        let (usable, owner, me): (bool, String, String) = sqlx::query_as(
            "SELECT has_schema_privilege('agentctl', 'USAGE') AND has_schema_privilege('agentctl', 'CREATE'),
                    pg_get_userbyid(nspowner)::text, current_user::text FROM pg_namespace WHERE nspname = 'agentctl'",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(while_doing("checking the agentctl control schema"))?;
        if !usable {
            return Err(ToolError::system(format!(
                "the target's agentctl schema belongs to {owner}, and {me} may not use it: run as \
                    {owner}, or GRANT ALL ON SCHEMA agentctl, ALL TABLES IN SCHEMA agentctl and \
                    ALL SEQUENCES IN SCHEMA agentctl TO {me}"
            )));
        }
        // The migrations' own bookkeeping table belongs in the control schema, not in the
        // operator's `public`.
        sqlx::query("SET search_path TO agentctl")
            .execute(&mut *conn)
            .await
            .map_err(while_doing("selecting the agentctl schema"))?;
        MIGRATOR.run(&mut *conn).await.map_err(|e| {
            ToolError::system(format!("while migrating the agentctl control schema: {e}"))
        })?;
        sqlx::query("RESET search_path")
            .execute(&mut *conn)
            .await
            .map_err(while_doing("resetting the search path"))?;
        Ok(ControlStore { pool })
    }

    pub async fn begin_run(
        &self,
        run_id: RunId,
        command: &str,
        goal: Option<&str>,
    ) -> Result<(), ToolError> {
        sqlx::query("INSERT INTO agentctl.runs (run_id, command, goal) VALUES ($1, $2, $3)")
            .bind(run_id.0)
            .bind(command)
            .bind(goal)
            .execute(&self.pool)
            .await
            .map_err(while_doing(format!("recording the start of run {run_id}")))?;
        self.ledger_entry(run_id, "started").await
    }

    /// Appends a run's start, resumption or end to the target's run ledger, chained to the entry
    /// before; an end (or a resumption) records the head the run's chain is at. A server
    /// restarting under it is outlived, as the load's writes are.
    async fn ledger_entry(&self, run_id: RunId, entry: &str) -> Result<(), ToolError> {
        let what = format!("recording run {run_id} as {entry} in the run ledger");
        crate::target::retrying(WRITE_RETRIES, &what, || self.try_ledger_entry(run_id, entry))
            .await?;
        Ok(())
    }

    async fn try_ledger_entry(&self, run_id: RunId, entry: &str) -> Result<(), Failure> {
        let mut tx = self.pool.begin().await?;
        // Runs start and end side by side: one appender at a time keeps the ledger one chain.
        sqlx::query("LOCK TABLE agentctl.run_ledger IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let last: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM agentctl.run_ledger ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
        let (event_count, head_hash): (i64, String) = if entry == "started" {
            (0, GENESIS.to_owned())
        } else {
            sqlx::query_as("SELECT event_count, head_hash FROM agentctl.runs WHERE run_id = $1")
                .bind(run_id.0)
                .fetch_one(&mut *tx)
                .await?
        };
        let (seq, prev_hash) = last.map_or((1, GENESIS.to_owned()), |(seq, hash)| (seq + 1, hash));
        let mut e = LedgerEntry {
            seq,
            run_id,
            entry: entry.to_owned(),
            event_count,
            head_hash,
            prev_hash,
            hash: String::new(),
        };
        e.hash = e.compute_hash();
        sqlx::query(
            "INSERT INTO agentctl.run_ledger (seq, run_id, entry, event_count, head_hash, \
                prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(e.seq)
        .bind(run_id.0)
        .bind(&e.entry)
        .bind(e.event_count)
        .bind(&e.head_hash)
        .bind(&e.prev_hash)
        .bind(&e.hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The run ledger, in order.
    pub async fn ledger(&self) -> Result<Vec<LedgerEntry>, ToolError> {
        let rows = sqlx::query(
            "SELECT seq, run_id, entry, event_count, head_hash, prev_hash, \
            hash FROM agentctl.run_ledger ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(while_doing("reading the run ledger"))?;
        rows.iter()
            .map(|r| {
                Ok(LedgerEntry {
                    seq: r.try_get("seq")?,
                    run_id: RunId(r.try_get("run_id")?),
                    entry: r.try_get("entry")?,
                    event_count: r.try_get("event_count")?,
                    head_hash: r.try_get("head_hash")?,
                    prev_hash: r.try_get("prev_hash")?,
                    hash: r.try_get("hash")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(while_doing("reading the run ledger"))
    }

    /// Holds the target for a run while it lives: a connection of its own named for the run,
    /// so that a run whose process died is told from one still going (`runs`, `find_run`), and,
    /// for a run that writes, the target's writer lock ([`ControlStore::writer_lock`]). Both go
    /// with their connections: when the process dies, the server lets go at once.
    pub async fn attend(
        &self,
        run_id: RunId,
        command: &str,
        writes: bool,
    ) -> Result<Presence, Attend> {
        let conn = self.named_connection(run_id).await?;
        let writer = match writes {
            true => Some(self.writer_lock(run_id, command).await?),
            false => None,
        };
        Ok(Presence { _conn: conn, _writer: writer })
    }

    /// The target's writer lock, for as long as the returned guard lives: one agentctl writes
    /// to a target at a time. A second is refused with who holds it and since when.
    pub async fn writer_lock(&self, run_id: RunId, command: &str) -> Result<WriterLock, Attend> {
        let what = "taking the target's writer lock";
        let mut conn = self.named_connection(run_id).await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(WRITER_LOCK.0)
            .bind(WRITER_LOCK.1)
            .fetch_one(&mut conn)
            .await
            .map_err(while_doing(what))?;
        if locked {
            return Ok(WriterLock { _conn: conn });
        }
        let holder: Option<(String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT a.application_name::text, a.backend_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::int8::oid AND l.objid = $2::int8::oid AND l.objsubid = 2
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .bind(WRITER_LOCK.0)
        .bind(WRITER_LOCK.1)
        .fetch_optional(&mut conn)
        .await
        .map_err(while_doing(what))?;
        let who = match holder {
            Some((name, since)) => {
                let run = name.strip_prefix(PRESENCE_PREFIX).unwrap_or(&name);
                format!("run {run}, since {}", since.format("%Y-%m-%d %H:%M:%S UTC"))
            }
            None => "another agentctl".to_owned(),
        };
        Err(Attend::Held(format!(
            "another agentctl writes to this target ({who}): `agentctl {command}` waits for it to \
                end; a run whose process died lets go at once"
        )))
    }

    /// A connection out of the pool, named for the run (`application_name`); closed when dropped.
    async fn named_connection(&self, run_id: RunId) -> Result<sqlx::PgConnection, ToolError> {
        let what = "holding the target for the run";
        let mut conn = self.pool.acquire().await.map_err(while_doing(what))?.detach();
        sqlx::query("SELECT set_config('application_name', $1, false)")
            .bind(presence_name(run_id))
            .execute(&mut conn)
            .await
            .map_err(while_doing(what))?;
        Ok(conn)
    }

    /// Reopens a run that did not finish (killed, interrupted) to carry it on under its own id.
    pub async fn resume_run(&self, run_id: RunId) -> Result<(), ToolError> {
        let reopened = sqlx::query(
            "UPDATE agentctl.runs SET outcome = 'running', finished_at = NULL, outcome_detail = NULL
             WHERE run_id = $1 AND outcome <> 'succeeded'",
        )
        .bind(run_id.0)
        .execute(&self.pool)
        .await
        .map_err(while_doing(format!("reopening run {run_id}")))?;
        if reopened.rows_affected() == 0 {
            return Err(ToolError::system(format!(
                "run {run_id} has already succeeded; there is nothing to resume"
            )));
        }
        self.ledger_entry(run_id, "resumed").await
    }

    /// Forgets the records of rows that no longer exist because the target schema was recreated
    /// (the demo does this); the runs and their audit trails stay.
    pub async fn forget_migrated_rows(&self) -> Result<(), ToolError> {
        // Also what differential migration knew of them: the baseline, and the analyses not
        // applied (of rows that are gone). Emptied by TRUNCATE, not DELETE: a load baseline is
        // about 180 MB at scale 1.0, and deleting it left that much for autovacuum to clear
        // while the next run loads (4 s of a core).
        sqlx::raw_sql(
            "TRUNCATE agentctl.migration_mappings, agentctl.deferred_references, agentctl.sync_baseline, agentctl.load_baseline;
             DELETE FROM agentctl.data_differentials d USING agentctl.diff_analyses a
                 WHERE a.analysis_id = d.analysis_id AND a.source_table = d.source_table AND a.applied_run IS NULL;
             DELETE FROM agentctl.diff_analyses WHERE applied_run IS NULL;",
        )
        .execute(&self.pool)
        .await
        .map_err(while_doing("forgetting the records of the recreated target's rows"))?;
        Ok(())
    }

    /// Records a run's end (outliving a server restarting under it) and its head in the ledger.
    pub async fn finish_run(
        &self,
        run_id: RunId,
        outcome: &str,
        detail: Option<&str>,
    ) -> Result<(), ToolError> {
        let end = || async {
            sqlx::query(
                "UPDATE agentctl.runs SET finished_at = now(), outcome = $2, \
                outcome_detail = $3 WHERE run_id = $1",
            )
            .bind(run_id.0)
            .bind(outcome)
            .bind(detail)
            .execute(&self.pool)
            .await
            .map_err(Failure::from)
        };
        let what = format!("recording the end of run {run_id}");
        crate::target::retrying(WRITE_RETRIES, &what, end).await?;
        self.ledger_entry(run_id, "ended").await
    }

    pub async fn runs(&self, limit: i64) -> Result<Vec<RunRow>, ToolError> {
        sqlx::query_as(&format!(
            "SELECT {} FROM agentctl.runs ORDER BY started_at DESC LIMIT $1",
            run_columns()
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(while_doing("listing runs"))
    }

    /// Finds a run by its id or a unique prefix of it; `None` means the latest run.
    pub async fn find_run(&self, id: Option<&str>) -> Result<RunRow, ToolError> {
        let mut rows: Vec<RunRow> = match id {
            None => {
                sqlx::query_as(&format!(
                    "SELECT {} FROM agentctl.runs ORDER BY started_at DESC \
                    LIMIT 1",
                    run_columns()
                ))
                .fetch_all(&self.pool)
                .await
            }
            Some(prefix) => {
                let prefix = prefix.trim().to_ascii_lowercase();
                if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                    return Err(ToolError::system(format!(
                        "`{prefix}` is not a run id (expected \
                        the hex digits of a run's UUID)"
                    )));
                }
                sqlx::query_as(&format!(
                    "SELECT {} FROM agentctl.runs WHERE run_id::text LIKE $1 || '%' ORDER BY \
                        started_at DESC LIMIT 2",
                    run_columns()
                ))
                .bind(&prefix)
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(while_doing("looking up the run"))?;
        match (rows.len(), id) {
            (0, None) => {
                Err(ToolError::system("no run has been recorded in this target database yet"))
            }
            (0, Some(p)) => Err(ToolError::system(format!("no run with id {p}"))),
            (2, Some(p)) => Err(ToolError::system(format!(
                "run id prefix {p} matches more than one run; give more of it"
            ))),
            _ => Ok(rows.swap_remove(0)),
        }
    }

    /// Every entity a run has started, with its checkpoint's counters.
    pub async fn progress(&self, run_id: RunId) -> Result<Vec<EntityProgress>, ToolError> {
        sqlx::query_as(
            "SELECT c.source_table, c.target_table, c.state, c.detail,
                    coalesce(k.rows_read, 0) AS rows_read, coalesce(k.migrated - k.kept, 0) AS migrated,
                    coalesce(k.kept, 0) AS kept, coalesce(k.rejected, 0) AS rejected,
                    coalesce(k.batches, 0) AS batches, k.updated_at
             FROM agentctl.migration_control c
             LEFT JOIN agentctl.migration_checkpoints k ON k.run_id = c.run_id AND k.source_table = c.source_table
             WHERE c.run_id = $1 ORDER BY c.started_at, c.source_table",
        )
        .bind(run_id.0)
        .fetch_all(&self.pool)
        .await
        .map_err(while_doing(format!("reading the progress of run {run_id}")))
    }

    /// Foreign keys and indexes set aside for a load that have not been put back yet:
    /// (target table, name, kind, run).
    pub async fn suspended(&self) -> Result<Vec<(String, String, String, Uuid)>, ToolError> {
        sqlx::query_as(
            "SELECT target_table, name, kind, run_id FROM \
            agentctl.suspended_constraints ORDER BY target_table, name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(while_doing("reading the constraints set aside for a load"))
    }

    /// The run that migrated most recently (any command: run, demo, chat).
    pub async fn latest_migration_run(&self) -> Result<Option<RunId>, ToolError> {
        let id: Option<Uuid> = sqlx::query_scalar(
            "SELECT run_id FROM agentctl.migration_control GROUP BY run_id \
                ORDER BY max(started_at) DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(while_doing("looking for the latest migration"))?;
        Ok(id.map(RunId))
    }

    /// One rejected row of a source table in a run: (legacy key, reason, source row as JSON).
    pub async fn rejected_example(
        &self,
        run_id: RunId,
        source_table: &str,
    ) -> Result<Option<(String, String, serde_json::Value)>, ToolError> {
        sqlx::query_as(
            "SELECT legacy_key, reason, source_row FROM agentctl.rejected_rows WHERE run_id = $1 AND source_table = $2
             ORDER BY length(legacy_key), legacy_key LIMIT 1",
        )
        .bind(run_id.0)
        .bind(source_table)
        .fetch_optional(&self.pool)
        .await
        .map_err(while_doing(format!("reading a rejected row of {source_table}")))
    }

    /// The latest run of a command (`run`, `validate`, ...).
    pub async fn latest_run(&self, command: &str) -> Result<RunRow, ToolError> {
        let id: Option<Uuid> = sqlx::query_scalar(
            "SELECT run_id FROM agentctl.runs WHERE command = $1 ORDER BY started_at DESC LIMIT 1",
        )
        .bind(command)
        .fetch_optional(&self.pool)
        .await
        .map_err(while_doing(format!("looking for the latest `{command}`")))?;
        let id = id.ok_or_else(|| {
            ToolError::system(format!("there is no `agentctl {command}` in this database yet"))
        })?;
        self.find_run(Some(&id.to_string())).await
    }

    /// Per entity of a run: accounting from the checkpoints, timing, and the validation.
    pub async fn report(&self, run_id: RunId) -> Result<Vec<ReportEntity>, ToolError> {
        sqlx::query_as(
            "SELECT c.source_table, c.target_table, c.state, coalesce(c.source_rows, k.rows_read, 0) AS source_rows,
                    coalesce(k.migrated - k.kept, 0) AS migrated, coalesce(k.kept, 0) AS kept,
                    coalesce(k.rejected, 0) AS rejected,
                    coalesce(extract(epoch FROM coalesce(c.finished_at, k.updated_at) - c.started_at), 0)::float8 AS seconds,
                    v.passed AS validated, v.detail AS validation_detail, v.money
             FROM agentctl.migration_control c
             LEFT JOIN agentctl.migration_checkpoints k ON k.run_id = c.run_id AND k.source_table = c.source_table
             LEFT JOIN agentctl.migration_validation_reports v ON v.run_id = c.run_id AND v.source_table = c.source_table
             WHERE c.run_id = $1 ORDER BY c.started_at, c.source_table",
        )
        .bind(run_id.0)
        .fetch_all(&self.pool)
        .await
        .map_err(while_doing(format!("reading the report of run {run_id}")))
    }

    /// A run's language model use from its trail: calls, prompt tokens, completion tokens, and
    /// the cost in US dollars when a price was configured.
    pub async fn llm_usage(
        &self,
        run_id: RunId,
    ) -> Result<(i64, i64, i64, Option<f64>), ToolError> {
        sqlx::query_as(
            "SELECT count(*), coalesce(sum((detail::jsonb->'reply'->>'prompt_tokens')::int8), 0)::int8,
                    coalesce(sum((detail::jsonb->'reply'->>'completion_tokens')::int8), 0)::int8,
                    sum((detail::jsonb->>'cost_usd')::float8)
             FROM agentctl.audit_events WHERE run_id = $1 AND kind = 'llm'",
        )
        .bind(run_id.0)
        .fetch_one(&self.pool)
        .await
        .map_err(while_doing(format!("reading the language model use of run {run_id}")))
    }

    /// A run's rejections grouped by table and rule, largest groups first.
    pub async fn rejection_groups(&self, run_id: RunId) -> Result<Vec<RejectionGroup>, ToolError> {
        sqlx::query_as(
            "SELECT source_table, split_part(rule, ':', 1) || CASE WHEN column_name IS NULL THEN '' ELSE ':' || column_name END AS rule,
                    count(*) AS count, min(reason) AS example_reason,
                    (array_agg(legacy_key ORDER BY length(legacy_key), legacy_key))[1:5] AS example_keys
             FROM agentctl.rejected_rows WHERE run_id = $1
             GROUP BY 1, 2 ORDER BY count(*) DESC, 1, 2",
        )
        .bind(run_id.0)
        .fetch_all(&self.pool)
        .await
        .map_err(while_doing(format!("reading the rejections of run {run_id}")))
    }

    /// A run's events in sequence order, optionally filtered.
    pub async fn events(
        &self,
        run_id: RunId,
        filter: &EventFilter,
    ) -> Result<Vec<AuditEvent>, ToolError> {
        let rows = sqlx::query(
            "SELECT run_id, seq, at, agent, kind, correlation_id, summary, detail, prev_hash, hash
             FROM agentctl.audit_events
             WHERE run_id = $1 AND ($2::text IS NULL OR agent = $2) AND ($3::text IS NULL OR kind = $3)
             ORDER BY seq",
        )
        .bind(run_id.0)
        .bind(filter.agent.as_deref())
        .bind(filter.kind.as_deref())
        .fetch_all(&self.pool)
        .await
        .map_err(while_doing(format!("reading the audit trail of run {run_id}")))?;
        rows.iter()
            .map(|r| {
                Ok(AuditEvent {
                    run_id: RunId(r.try_get("run_id").map_err(while_doing("reading run_id"))?),
                    seq: r.try_get("seq").map_err(while_doing("reading seq"))?,
                    at: r.try_get("at").map_err(while_doing("reading at"))?,
                    agent: r.try_get("agent").map_err(while_doing("reading agent"))?,
                    kind: r.try_get("kind").map_err(while_doing("reading kind"))?,
                    correlation_id: r
                        .try_get("correlation_id")
                        .map_err(while_doing("reading correlation_id"))?,
                    summary: r.try_get("summary").map_err(while_doing("reading summary"))?,
                    detail: r.try_get("detail").map_err(while_doing("reading detail"))?,
                    prev_hash: r.try_get("prev_hash").map_err(while_doing("reading prev_hash"))?,
                    hash: r.try_get("hash").map_err(while_doing("reading hash"))?,
                })
            })
            .collect()
    }

    /// Runs that the control tables name but `runs` does not hold: a run removed whole, its
    /// trail with it. Each with the tables that still name it.
    pub async fn vanished_runs(&self) -> Result<Vec<(String, Vec<String>)>, ToolError> {
        let what = "looking for runs that were removed";
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT c.table_name::text FROM information_schema.columns c
             WHERE c.table_schema = 'agentctl' AND c.column_name = 'run_id' AND c.table_name <> 'runs'
               AND EXISTS (SELECT 1 FROM information_schema.tables t WHERE t.table_schema = 'agentctl' AND t.table_name = c.table_name AND t.table_type = 'BASE TABLE')
             ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(while_doing(what))?;
        let mut vanished: std::collections::BTreeMap<String, Vec<String>> =
            std::collections::BTreeMap::new();
        for table in tables {
            let ids: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT DISTINCT t.run_id::text FROM agentctl.\"{}\" t WHERE t.run_id IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM agentctl.runs r WHERE r.run_id = t.run_id)",
                table.replace('"', "\"\"")
            ))
            .fetch_all(&self.pool)
            .await
            .map_err(while_doing(what))?;
            for id in ids {
                vanished.entry(id).or_default().push(format!("agentctl.{table}"));
            }
        }
        Ok(vanished.into_iter().collect())
    }

    pub async fn chain_head(&self, run_id: RunId) -> Result<ChainHead, ToolError> {
        let row = sqlx::query("SELECT event_count, head_hash FROM agentctl.runs WHERE run_id = $1")
            .bind(run_id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(while_doing(format!("reading the head of run {run_id}")))?;
        match row {
            None => Ok(ChainHead::empty()),
            Some(r) => Ok(ChainHead {
                event_count: r
                    .try_get("event_count")
                    .map_err(while_doing("reading event_count"))?,
                head_hash: r.try_get("head_hash").map_err(while_doing("reading head_hash"))?,
            }),
        }
    }
}

#[async_trait]
impl AuditSink for ControlStore {
    async fn append(&self, run_id: RunId, events: &[AuditEvent]) -> Result<(), AuditError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else { return Ok(()) };
        let store = |e: sqlx::Error| AuditError::Store(crate::pg::describe(&e));
        let mut tx = self.pool.begin().await.map_err(store)?;
        // Move the head only from where this batch starts: a second writer on the same run, or
        // a lost earlier batch, fails loudly instead of forking the chain.
        let moved = sqlx::query(
            "UPDATE agentctl.runs SET event_count = $2, head_hash = $3
             WHERE run_id = $1 AND event_count = $4 AND head_hash = $5",
        )
        .bind(run_id.0)
        .bind(last.seq)
        .bind(&last.hash)
        .bind(first.seq - 1)
        .bind(&first.prev_hash)
        .execute(&mut *tx)
        .await
        .map_err(store)?;
        if moved.rows_affected() != 1 {
            return Err(AuditError::Store(format!(
                "run {run_id}'s stored chain does not end at event #{} (another writer, or a lost \
                    batch)",
                first.seq - 1
            )));
        }
        let mut seq = Vec::with_capacity(events.len());
        let mut at = Vec::with_capacity(events.len());
        let mut agent = Vec::with_capacity(events.len());
        let mut kind = Vec::with_capacity(events.len());
        let mut corr = Vec::with_capacity(events.len());
        let mut summary = Vec::with_capacity(events.len());
        let mut detail = Vec::with_capacity(events.len());
        let mut prev = Vec::with_capacity(events.len());
        let mut hash = Vec::with_capacity(events.len());
        for e in events {
            seq.push(e.seq);
            at.push(e.at);
            agent.push(e.agent.as_str());
            kind.push(e.kind.as_str());
            corr.push(e.correlation_id);
            summary.push(e.summary.as_str());
            detail.push(e.detail.as_str());
            prev.push(e.prev_hash.as_str());
            hash.push(e.hash.as_str());
        }
        sqlx::query(
            "INSERT INTO agentctl.audit_events (run_id, seq, at, agent, kind, correlation_id, summary, detail, prev_hash, hash)
             SELECT $1, * FROM UNNEST($2::int8[], $3::timestamptz[], $4::text[], $5::text[], $6::uuid[], $7::text[], $8::text[], $9::text[], $10::text[])",
        )
        .bind(run_id.0)
        .bind(&seq)
        .bind(&at)
        .bind(&agent)
        .bind(&kind)
        .bind(&corr)
        .bind(&summary)
        .bind(&detail)
        .bind(&prev)
        .bind(&hash)
        .execute(&mut *tx)
        .await
        .map_err(store)?;
        tx.commit().await.map_err(store)
    }

    async fn head(&self, run_id: RunId) -> Result<ChainHead, AuditError> {
        self.chain_head(run_id).await.map_err(|e| AuditError::Store(e.message))
    }
}
