//! Scheduled synchronization and conflicts, in the control schema.
//!
//! A job (`agentctl.synchronization_jobs`) has a schedule, a next run time and a lease. A
//! daemon takes a due job by setting the lease (owner and expiry) in the same statement that
//! finds it (`FOR UPDATE SKIP LOCKED`), renews it while the job runs, and clears it with the
//! next run time when the job ends. So two daemons never run one job at once, and a job a dead
//! daemon held is taken again once its lease expires: its unfinished history row is then marked
//! `abandoned`, never left `running`.
//!
//! Conflicts (`agentctl.sync_conflicts`) are written by [`crate::diff`]; this module reads them
//! and resolves the ones held for an operator.

use runtime::error::{BadInput, ToolError};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};

use crate::catalog::ident;
use crate::pg::while_doing;

/// When a job runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    Every(u32),
    Cron(String),
}

impl Schedule {
    /// `30s`, `15m`, `2h`, `1d`.
    pub fn every(text: &str) -> Result<Schedule, BadInput> {
        let t = text.trim();
        let bad = || {
            BadInput(format!(
                "--every {text}: expected a number and a unit (s, m, h or d), like 15m"
            ))
        };
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (n, unit) = t.split_at(split);
        let n: u32 = n.parse().map_err(|_| bad())?;
        let seconds = match unit {
            "s" => n,
            "m" => n.checked_mul(60).ok_or_else(bad)?,
            "h" => n.checked_mul(3600).ok_or_else(bad)?,
            "d" => n.checked_mul(86_400).ok_or_else(bad)?,
            _ => return Err(bad()),
        };
        if seconds == 0 {
            return Err(BadInput(format!(
                "--every {text}: the interval must be longer than nothing"
            )));
        }
        Ok(Schedule::Every(seconds))
    }

    /// A five-field cron expression (minute hour day month weekday), in UTC.
    pub fn cron(text: &str) -> Result<Schedule, BadInput> {
        croner::Cron::from_str(text.trim())
            .map_err(|e| BadInput(format!("--cron \"{text}\": {e}")))?;
        Ok(Schedule::Cron(text.trim().to_owned()))
    }

    /// The first run time after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Result<DateTime<Utc>, BadInput> {
        match self {
            Schedule::Every(s) => Ok(after + chrono::Duration::seconds(i64::from(*s))),
            Schedule::Cron(c) => croner::Cron::from_str(c)
                .and_then(|cron| cron.find_next_occurrence(&after, false))
                .map_err(|e| BadInput(format!("cron \"{c}\": {e}"))),
        }
    }

    /// The next run after one that was due at `due` and ended at `now`: runs missed while it
    /// overran are skipped, not caught up one after another.
    pub fn next_run(
        &self,
        due: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, BadInput> {
        let next = self.next_after(due)?;
        if next > now {
            Ok(next)
        } else {
            self.next_after(now)
        }
    }

    /// The schedule in words, `(paused)` after it when `enabled` is false.
    pub fn describe_as(&self, enabled: bool) -> String {
        if enabled {
            self.describe()
        } else {
            format!("{} (paused)", self.describe())
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Schedule::Every(s) if s % 86_400 == 0 => format!("every {}d", s / 86_400),
            Schedule::Every(s) if s % 3600 == 0 => format!("every {}h", s / 3600),
            Schedule::Every(s) if s % 60 == 0 => format!("every {}m", s / 60),
            Schedule::Every(s) => format!("every {s}s"),
            Schedule::Cron(c) => format!("cron \"{c}\""),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Job {
    pub name: String,
    pub goal: String,
    pub schedule: Schedule,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub next_run_at: DateTime<Utc>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
}

/// One run of a job.
#[derive(Clone, Debug, Serialize)]
pub struct JobRun {
    pub history_id: i64,
    pub job_name: String,
    pub run_id: Option<uuid::Uuid>,
    pub owner: String,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub inserted: i64,
    pub updated: i64,
    pub deleted: i64,
    pub conflicted: i64,
    pub rejected: i64,
    pub outcome: String,
    pub detail: Option<String>,
}

/// A job taken by a daemon (or by `sync run-job`): its lease and its history row.
#[derive(Clone, Debug)]
pub struct Claim {
    pub job: Job,
    pub owner: String,
    pub history_id: i64,
    /// Runs found abandoned by a dead holder and closed when this claim was made.
    pub abandoned: u64,
}

#[derive(Clone)]
pub struct SyncStore {
    pool: PgPool,
}

const RUN_COLUMNS: &str =
    "history_id, job_name, run_id, owner, started_at, ended_at, inserted, updated, deleted, \
        conflicted, rejected, outcome, detail";

const CONFLICT_COLUMNS: &str = "conflict_id, source_table, target_table, legacy_key, target_id::text AS target_id, policy, status, columns,
    source_values, target_values, differing, analysis_id, detected_at, resolved_at, resolved_by";

fn job_run(r: &sqlx::postgres::PgRow) -> Result<JobRun, sqlx::Error> {
    Ok(JobRun {
        history_id: r.try_get("history_id")?,
        job_name: r.try_get("job_name")?,
        run_id: r.try_get("run_id")?,
        owner: r.try_get("owner")?,
        started_at: r.try_get("started_at")?,
        ended_at: r.try_get("ended_at")?,
        inserted: r.try_get("inserted")?,
        updated: r.try_get("updated")?,
        deleted: r.try_get("deleted")?,
        conflicted: r.try_get("conflicted")?,
        rejected: r.try_get("rejected")?,
        outcome: r.try_get("outcome")?,
        detail: r.try_get("detail")?,
    })
}

const JOB_COLUMNS: &str = "name, goal, every_seconds, cron, enabled, created_at, next_run_at, \
    lease_owner, lease_expires_at";

fn job(r: &sqlx::postgres::PgRow) -> Result<Job, sqlx::Error> {
    let every: Option<i32> = r.try_get("every_seconds")?;
    let cron: Option<String> = r.try_get("cron")?;
    Ok(Job {
        name: r.try_get("name")?,
        goal: r.try_get("goal")?,
        schedule: match (every, cron) {
            (Some(s), _) => Schedule::Every(s as u32),
            (None, c) => Schedule::Cron(c.unwrap_or_default()),
        },
        enabled: r.try_get("enabled")?,
        created_at: r.try_get("created_at")?,
        next_run_at: r.try_get("next_run_at")?,
        lease_owner: r.try_get("lease_owner")?,
        lease_expires_at: r.try_get("lease_expires_at")?,
    })
}

/// Counts a finished job run reports.
#[derive(Clone, Debug, Default)]
pub struct RunCounts {
    pub inserted: i64,
    pub updated: i64,
    pub deleted: i64,
    pub conflicted: i64,
    pub rejected: i64,
}

impl SyncStore {
    pub fn new(pool: PgPool) -> SyncStore {
        SyncStore { pool }
    }

    pub async fn create_job(
        &self,
        name: &str,
        goal: &str,
        schedule: &Schedule,
    ) -> Result<Job, ToolError> {
        let (every, cron) = match schedule {
            Schedule::Every(s) => (Some(*s as i32), None),
            Schedule::Cron(c) => (None, Some(c.clone())),
        };
        // The first run is due at once for an interval, at the next match for a cron.
        let first = match schedule {
            Schedule::Every(_) => Utc::now(),
            Schedule::Cron(_) => schedule.next_after(Utc::now()).map_err(ToolError::from)?,
        };
        let sql = format!(
            "INSERT INTO agentctl.synchronization_jobs (name, goal, every_seconds, cron, next_run_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO NOTHING RETURNING {JOB_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(name)
            .bind(goal)
            .bind(every)
            .bind(cron)
            .bind(first)
            .fetch_optional(&self.pool)
            .await
            .map_err(while_doing(format!("creating sync job {name}")))?;
        match row {
            Some(r) => job(&r).map_err(while_doing("reading the job back")),
            None => Err(ToolError::system(format!(
                "a sync job named {name} exists already (agentctl sync list-jobs)"
            ))),
        }
    }

    pub async fn jobs(&self) -> Result<Vec<Job>, ToolError> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM agentctl.synchronization_jobs ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(while_doing("listing the sync jobs"))?;
        rows.iter().map(job).collect::<Result<_, _>>().map_err(while_doing("reading the sync jobs"))
    }

    pub async fn job(&self, name: &str) -> Result<Job, ToolError> {
        let row = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM agentctl.synchronization_jobs WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(while_doing(format!("reading sync job {name}")))?;
        match row {
            Some(r) => job(&r).map_err(while_doing("reading the job")),
            None => Err(ToolError::system(format!(
                "there is no sync job named {name} (agentctl sync list-jobs)"
            ))),
        }
    }

    /// Pauses or resumes a job's scheduled runs; a resumed job is due at its next time from now.
    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Result<Job, ToolError> {
        let job = self.job(name).await?;
        let next = job.schedule.next_after(Utc::now()).map_err(ToolError::from)?;
        sqlx::query(
            "UPDATE agentctl.synchronization_jobs SET enabled = $2, next_run_at = CASE \
            WHEN $2 THEN $3 ELSE next_run_at END WHERE name = $1",
        )
        .bind(name)
        .bind(enabled)
        .bind(next)
        .execute(&self.pool)
        .await
        .map_err(while_doing(format!(
            "{} sync job {name}",
            if enabled { "resuming" } else { "pausing" }
        )))?;
        self.job(name).await
    }

    /// Deletes a job and its history; refused while a daemon holds it.
    pub async fn delete_job(&self, name: &str) -> Result<(), ToolError> {
        let done = sqlx::query(
            "DELETE FROM agentctl.synchronization_jobs WHERE name = $1 AND (lease_expires_at IS \
                NULL OR lease_expires_at < now())",
        )
        .bind(name)
        .execute(&self.pool)
        .await
        .map_err(while_doing(format!("deleting sync job {name}")))?;
        if done.rows_affected() == 0 {
            self.job(name).await?;
            return Err(ToolError::system(format!(
                "sync job {name} is running; delete it once it ends"
            )));
        }
        Ok(())
    }

    /// The job's latest runs, newest first.
    pub async fn history(&self, name: &str, limit: i64) -> Result<Vec<JobRun>, ToolError> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM agentctl.sync_run_history WHERE job_name = $1 ORDER BY \
                started_at DESC, history_id DESC LIMIT $2"
        ))
        .bind(name)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(while_doing(format!("reading the history of sync job {name}")))?;
        rows.iter()
            .map(job_run)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(while_doing("reading the history"))
    }

    /// Takes the lease of the most overdue job that is due and not held, if any.
    pub async fn claim_due(
        &self,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<Claim>, ToolError> {
        self.claim(None, owner, lease).await
    }

    /// Takes the lease of a named job now, due or not; refused while another holds it.
    pub async fn claim_now(
        &self,
        name: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Claim, ToolError> {
        match self.claim(Some(name), owner, lease).await? {
            Some(c) => Ok(c),
            None => {
                let j = self.job(name).await?;
                Err(ToolError::system(format!(
                    "sync job {name} is running (held by {} until {}); it is not started twice",
                    j.lease_owner.unwrap_or_default(),
                    j.lease_expires_at.map(|t| t.to_rfc3339()).unwrap_or_default()
                )))
            }
        }
    }

    async fn claim(
        &self,
        name: Option<&str>,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<Claim>, ToolError> {
        let what = "taking a sync job";
        let mut tx = self.pool.begin().await.map_err(while_doing(what))?;
        let sql = format!(
            "WITH pick AS (
                 SELECT name FROM agentctl.synchronization_jobs
                 WHERE (lease_expires_at IS NULL OR lease_expires_at < now())
                     AND (CASE WHEN $3::text IS NULL THEN enabled AND next_run_at <= now() ELSE name = $3 END)
                 ORDER BY next_run_at LIMIT 1 FOR UPDATE SKIP LOCKED)
             UPDATE agentctl.synchronization_jobs j SET lease_owner = $1, lease_expires_at = now() + $2 * interval '1 millisecond'
             FROM pick WHERE j.name = pick.name
             RETURNING {}",
            JOB_COLUMNS.split(", ").map(|c| format!("j.{c}")).collect::<Vec<_>>().join(", ")
        );
        let row = sqlx::query(&sql)
            .bind(owner)
            .bind(lease.as_millis() as f64)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(while_doing(what))?;
        let Some(row) = row else { return Ok(None) };
        let job = job(&row).map_err(while_doing(what))?;
        // A run still marked running has no live holder any more: its daemon died.
        let abandoned = sqlx::query(
            "UPDATE agentctl.sync_run_history SET outcome = 'abandoned', ended_at = now(),
                 detail = 'its daemon (' || owner || ') stopped before the run ended; the lease expired and ' || $2 || ' took the job'
             WHERE job_name = $1 AND outcome = 'running'",
        )
        .bind(&job.name)
        .bind(owner)
        .execute(&mut *tx)
        .await
        .map_err(while_doing(what))?
        .rows_affected();
        let history_id: i64 = sqlx::query_scalar(
            "INSERT INTO agentctl.sync_run_history (job_name, owner) VALUES \
                ($1, $2) RETURNING history_id",
        )
        .bind(&job.name)
        .bind(owner)
        .fetch_one(&mut *tx)
        .await
        .map_err(while_doing(what))?;
        tx.commit().await.map_err(while_doing(what))?;
        Ok(Some(Claim { job, owner: owner.to_owned(), history_id, abandoned }))
    }

    /// Extends the lease; false when it was lost (it expired and another daemon took it).
    pub async fn renew(&self, claim: &Claim, lease: Duration) -> Result<bool, ToolError> {
        let done = sqlx::query(
            "UPDATE agentctl.synchronization_jobs SET lease_expires_at = now() + $3 * interval '1 millisecond'
             WHERE name = $1 AND lease_owner = $2",
        )
        .bind(&claim.job.name)
        .bind(&claim.owner)
        .bind(lease.as_millis() as f64)
        .execute(&self.pool)
        .await
        .map_err(while_doing(format!("renewing the lease of sync job {}", claim.job.name)))?;
        Ok(done.rows_affected() == 1)
    }

    /// Records the link to the agentctl run doing the job.
    pub async fn started(&self, claim: &Claim, run_id: uuid::Uuid) -> Result<(), ToolError> {
        sqlx::query("UPDATE agentctl.sync_run_history SET run_id = $2 WHERE history_id = $1")
            .bind(claim.history_id)
            .bind(run_id)
            .execute(&self.pool)
            .await
            .map_err(while_doing("recording the run of a sync job"))?;
        Ok(())
    }

    /// Ends a run: its history row, and the job's next run time with the lease cleared (only
    /// if this claim still holds it).
    pub async fn finish(
        &self,
        claim: &Claim,
        outcome: &str,
        counts: &RunCounts,
        detail: Option<&str>,
    ) -> Result<JobRun, ToolError> {
        let what = format!("ending the run of sync job {}", claim.job.name);
        let now = Utc::now();
        let next =
            claim.job.schedule.next_run(claim.job.next_run_at, now).map_err(ToolError::from)?;
        let mut tx = self.pool.begin().await.map_err(while_doing(&what))?;
        let ended = sqlx::query(&format!(
            "UPDATE agentctl.sync_run_history SET ended_at = now(), outcome = $2, detail = $3, inserted = $4, updated = $5, deleted = $6,
                 conflicted = $7, rejected = $8
             WHERE history_id = $1 RETURNING {RUN_COLUMNS}"
        ))
        .bind(claim.history_id)
        .bind(outcome)
        .bind(detail)
        .bind(counts.inserted)
        .bind(counts.updated)
        .bind(counts.deleted)
        .bind(counts.conflicted)
        .bind(counts.rejected)
        .fetch_one(&mut *tx)
        .await
        .map_err(while_doing(&what))?;
        let run = job_run(&ended).map_err(while_doing(&what))?;
        sqlx::query(
            "UPDATE agentctl.synchronization_jobs SET lease_owner = NULL, lease_expires_at = NULL, next_run_at = $3
             WHERE name = $1 AND lease_owner = $2",
        )
        .bind(&claim.job.name)
        .bind(&claim.owner)
        .bind(next)
        .execute(&mut *tx)
        .await
        .map_err(while_doing(&what))?;
        tx.commit().await.map_err(while_doing(&what))?;
        Ok(run)
    }

    /// Conflicts, open ones first, then newest first.
    pub async fn conflicts(&self, all: bool) -> Result<Vec<Conflict>, ToolError> {
        let rows = sqlx::query(&format!(
            "SELECT {CONFLICT_COLUMNS} FROM agentctl.sync_conflicts WHERE $1 OR status = 'open'
             ORDER BY status <> 'open', detected_at DESC, conflict_id"
        ))
        .bind(all)
        .fetch_all(&self.pool)
        .await
        .map_err(while_doing("reading the conflicts"))?;
        rows.iter()
            .map(conflict)
            .collect::<Result<_, _>>()
            .map_err(while_doing("reading the conflicts"))
    }

    pub async fn conflict(&self, id: i64) -> Result<Conflict, ToolError> {
        let row = sqlx::query(&format!(
            "SELECT {CONFLICT_COLUMNS} FROM agentctl.sync_conflicts WHERE conflict_id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(while_doing(format!("reading conflict {id}")))?;
        match row {
            Some(r) => conflict(&r).map_err(while_doing("reading the conflict")),
            None => Err(ToolError::system(format!(
                "there is no conflict {id} (agentctl conflict report lists them)"
            ))),
        }
    }

    /// Settles a held conflict: `source` writes the source's values over the target row;
    /// `target` keeps the target row and takes the source's version as synced, so the row is
    /// the target's own change until the source changes it again. In one transaction.
    pub async fn resolve(
        &self,
        id: i64,
        take_source: bool,
        by: &str,
    ) -> Result<Conflict, ToolError> {
        let c = self.conflict(id).await?;
        if c.status != "open" {
            return Err(ToolError::system(format!(
                "conflict {id} is not open: it is {} (nothing changed)",
                c.status
            )));
        }
        let what = format!("resolving conflict {id}");
        let table = c
            .target_table
            .split_once('.')
            .map_or_else(|| ident(&c.target_table), |(s, t)| format!("{}.{}", ident(s), ident(t)));
        let synced: Vec<usize> = (0..c.columns.len()).filter(|&i| c.columns[i].2).collect();
        let cast = |i: usize| format!("($1::text[])[{}]::{}", i + 1, c.columns[i].1);
        let mut tx = self.pool.begin().await.map_err(while_doing(&what))?;
        let types =
            crate::diff::HashTypes::of(&mut tx, synced.iter().map(|&i| c.columns[i].1.as_str()))
                .await
                .map_err(while_doing(&what))?;
        let hash_of = |exprs: Vec<(String, String)>| types.row_of(exprs);
        let hash: Option<i64> = if take_source {
            let sets: Vec<String> = synced
                .iter()
                .map(|&i| format!("{} = {}", ident(&c.columns[i].0), cast(i)))
                .collect();
            let names: Vec<(String, String)> = synced
                .iter()
                .map(|&i| (format!("t.{}", ident(&c.columns[i].0)), c.columns[i].1.clone()))
                .collect();
            let sql = format!(
                "UPDATE {table} t SET {} WHERE t.id = $2::uuid RETURNING {}",
                sets.join(", "),
                hash_of(names)
            );
            let h: Option<i64> = sqlx::query_scalar(&sql)
                .bind(&c.source_values)
                .bind(&c.target_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(while_doing(&what))?;
            Some(h.ok_or_else(|| {
                ToolError::system(format!(
                    "conflict {id}: the target row {} is gone (nothing changed)",
                    c.target_id
                ))
            })?)
        } else {
            let sql = format!(
                "SELECT {}",
                hash_of(synced.iter().map(|&i| (cast(i), c.columns[i].1.clone())).collect())
            );
            sqlx::query_scalar(&sql)
                .bind(&c.source_values)
                .fetch_one(&mut *tx)
                .await
                .map_err(while_doing(&what))?
        };
        sqlx::query(
            "INSERT INTO agentctl.sync_baseline (target_table, legacy_key, hash) VALUES ($1, $2, $3)
             ON CONFLICT (target_table, legacy_key) DO UPDATE SET hash = EXCLUDED.hash, scheme = EXCLUDED.scheme",
        )
        .bind(&c.target_table)
        .bind(&c.legacy_key)
        .bind(hash)
        .execute(&mut *tx)
        .await
        .map_err(while_doing(&what))?;
        sqlx::query(
            "UPDATE agentctl.sync_conflicts SET status = $2, resolved_at = now(), \
            resolved_by = $3 WHERE conflict_id = $1",
        )
        .bind(id)
        .bind(if take_source { "resolved_source" } else { "resolved_target" })
        .bind(by)
        .execute(&mut *tx)
        .await
        .map_err(while_doing(&what))?;
        tx.commit().await.map_err(while_doing(&what))?;
        self.conflict(id).await
    }
}

/// A row changed on both sides.
#[derive(Clone, Debug, Serialize)]
pub struct Conflict {
    pub conflict_id: i64,
    pub source_table: String,
    pub target_table: String,
    pub legacy_key: String,
    pub target_id: String,
    pub policy: String,
    pub status: String,
    /// (name, type, covered by the sync) per column of `source_values`.
    pub columns: Vec<(String, String, bool)>,
    pub source_values: Vec<Option<String>>,
    /// The target row as text when the conflict was met (what source-wins overwrote).
    pub target_values: serde_json::Value,
    pub differing: Vec<String>,
    pub analysis_id: uuid::Uuid,
    pub detected_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
}

impl Conflict {
    /// The synced columns whose values differ: (column, source value, target value).
    pub fn differing(&self) -> Vec<(String, Option<String>, Option<String>)> {
        self.differing
            .iter()
            .filter_map(|name| {
                let at = self.columns.iter().position(|(n, _, _)| n == name)?;
                let found =
                    self.target_values.get(name).and_then(|v| v.as_str()).map(str::to_owned);
                Some((name.clone(), self.source_values[at].clone(), found))
            })
            .collect()
    }
}

fn conflict(r: &sqlx::postgres::PgRow) -> Result<Conflict, sqlx::Error> {
    let columns: serde_json::Value = r.try_get("columns")?;
    Ok(Conflict {
        conflict_id: r.try_get("conflict_id")?,
        source_table: r.try_get("source_table")?,
        target_table: r.try_get("target_table")?,
        legacy_key: r.try_get("legacy_key")?,
        target_id: r.try_get("target_id")?,
        policy: r.try_get("policy")?,
        status: r.try_get("status")?,
        columns: serde_json::from_value(columns).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        source_values: r.try_get("source_values")?,
        target_values: r.try_get("target_values")?,
        differing: r.try_get("differing")?,
        analysis_id: r.try_get("analysis_id")?,
        detected_at: r.try_get("detected_at")?,
        resolved_at: r.try_get("resolved_at")?,
        resolved_by: r.try_get("resolved_by")?,
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn schedules_parse_and_skip_missed_runs() {
        assert_eq!(Schedule::every("15m"), Ok(Schedule::Every(900)));
        assert_eq!(Schedule::every("2h"), Ok(Schedule::Every(7200)));
        assert!(Schedule::every("15").unwrap_err().0.contains("unit"));
        assert!(Schedule::every("0s").is_err());
        assert!(Schedule::every("5w").is_err());
        assert!(Schedule::cron("0 2 * * *").is_ok());
        assert!(Schedule::cron("61 2 * * *").is_err());
        let t = |h: u32, m: u32| Utc.with_ymd_and_hms(2026, 11, 24, h, m, 0).unwrap();
        let nightly = Schedule::cron("0 2 * * *").unwrap();
        assert_eq!(nightly.next_after(t(1, 0)).unwrap(), t(2, 0));
        // Due at 10:00, every 15 minutes, ran until 10:40: next at 10:55, not 10:15 and 10:30.
        let quarter = Schedule::every("15m").unwrap();
        assert_eq!(quarter.next_run(t(10, 0), t(10, 40)).unwrap(), t(10, 55));
        assert_eq!(quarter.next_run(t(10, 0), t(10, 5)).unwrap(), t(10, 15));
        assert_eq!(quarter.describe(), "every 15m");
    }
}
