//! The reference dataset: the legacy `dispatch_*` database at any scale, filled
//! deterministically through COPY, with documented dirt at configurable rates; and the empty
//! modern target schema.
//!
//! Scale 1.0 has production's row counts (3.47M rows). The same seed, scale and fault profile
//! always give the same bytes (the report's checksum). The report states, per table, how many
//! rows are clean, how many carry each fault, and so how many the reference mapping is
//! expected to migrate and to reject.

pub mod changes;
pub(crate) mod copy;
pub mod faults;
mod rng;
pub mod spec;

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::catalog::{literal, USER_SCHEMAS};
use crate::pg::{describe, while_doing};
use faults::{FaultKind, FaultProfile};
use rng::{table_key, Rng};
use runtime::error::{BadInput, ToolError};
pub use spec::TABLES;
use spec::{RowCtx, TableSpec};

pub const LEGACY_SCHEMA: &str = include_str!("../../../sql/legacy/schema.sql");
pub const LEGACY_CONSTRAINTS: &str = include_str!("../../../sql/legacy/constraints.sql");
pub const TARGET_SCHEMA: &str = include_str!("../../../sql/target/schema.sql");

/// The fewest rows a scaled table keeps, so every table has something to migrate.
const MIN_ROWS: i64 = 5;
/// Separates the fault decision's random stream from the row's values.
const FAULT_SALT: u64 = 0xFA17_5EED_0000_0001;
/// Bytes of COPY text per message to the database.
const CHUNK: usize = 1 << 20;

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub scale: f64,
    pub seed: u64,
    pub faults: FaultProfile,
    /// Drop the legacy tables first if they exist.
    pub replace: bool,
}

/// Everything about the dataset that can be known without writing a row: how many rows each
/// table has, which fault each row carries, and which ids every child may reference.
pub struct World {
    seed: u64,
    rows: HashMap<&'static str, i64>,
    faults: HashMap<&'static str, Vec<Option<FaultKind>>>,
    /// The kinds each table was given a rate for, so the report lists them even at zero.
    kinds: HashMap<&'static str, Vec<FaultKind>>,
    /// Ids of rows the reference mapping migrates (no rejecting fault, also through a merge).
    clean: HashMap<&'static str, Vec<i32>>,
}

impl World {
    pub fn build(scale: f64, seed: u64, profile: &FaultProfile) -> Result<World, BadInput> {
        if !(scale > 0.0 && scale <= 100.0) {
            return Err(BadInput(format!(
                "scale {scale} is out of range; use a number above 0 and at most 100"
            )));
        }
        for (table, kinds) in &profile.rates {
            let spec = spec::spec(table).ok_or_else(|| {
                BadInput(format!(
                    "the fault profile names `{table}`, which is not \
                    a table of the reference dataset"
                ))
            })?;
            for kind in kinds.keys() {
                if !spec.faults.contains(kind) {
                    let can: Vec<&str> = spec.faults.iter().map(|k| k.as_str()).collect();
                    return Err(BadInput(format!(
                        "the fault profile gives {table} `{kind}`, which that table cannot carry \
                            (it can: {})",
                        if can.is_empty() { "none".to_owned() } else { can.join(", ") }
                    )));
                }
            }
        }
        let mut world = World {
            seed,
            rows: HashMap::new(),
            faults: HashMap::new(),
            kinds: HashMap::new(),
            clean: HashMap::new(),
        };
        for t in TABLES {
            let n = if t.fixed {
                t.base_rows
            } else {
                ((t.base_rows as f64 * scale).round() as i64).max(MIN_ROWS)
            };
            world.rows.insert(t.name, n);
            let rates = profile.for_table(t.name);
            world.kinds.insert(t.name, rates.iter().map(|(k, _)| *k).collect());
            let mut seen_clean = false;
            let faults: Vec<Option<FaultKind>> = (1..=n)
                .map(|id| {
                    let mut rng = Rng::for_row(seed ^ FAULT_SALT, table_key(t.name), id);
                    let u = rng.unit();
                    let mut acc = 0.0;
                    let mut fault = rates.iter().find(|(_, r)| {
                        acc += r;
                        u < acc
                    });
                    // A duplicate needs an earlier clean row to repeat; the first rows have none.
                    if matches!(
                        fault,
                        Some((FaultKind::DuplicateUnique | FaultKind::EmailCaseCollision, _))
                    ) && !seen_clean
                    {
                        fault = None;
                    }
                    let fault = fault.map(|(k, _)| *k);
                    seen_clean |= fault.is_none_or(|k| !k.rejects());
                    fault
                })
                .collect();
            world.faults.insert(t.name, faults);
        }
        for t in TABLES {
            let own = &world.faults[t.name];
            // A profile is the merge of dispatch_profile n and auth_user n: either one's
            // rejecting fault rejects it.
            let partner = (t.name == "dispatch_profile").then(|| &world.faults["auth_user"]);
            let clean: Vec<i32> = (0..own.len())
                .filter(|&i| {
                    !rejects(own[i])
                        && partner.is_none_or(|p| !rejects(p.get(i).copied().flatten()))
                })
                .map(|i| i as i32 + 1)
                .collect();
            world.clean.insert(t.name, clean);
        }
        if let Some(t) = TABLES.iter().find(|t| world.clean[t.name].is_empty()) {
            return Err(BadInput(format!(
                "with these fault rates no row of {} is clean, so nothing could reference it",
                t.name
            )));
        }
        Ok(world)
    }

    pub fn rows(&self, table: &str) -> i64 {
        self.rows[table]
    }

    pub fn clean_ids(&self, table: &str) -> &[i32] {
        &self.clean[table]
    }

    /// Writes rows `from..=to` of a table as COPY text.
    fn write_rows(&self, spec: &TableSpec, from: i64, to: i64, out: &mut Vec<u8>) {
        let faults = &self.faults[spec.name];
        for id in from..=to {
            let mut ctx = RowCtx {
                id,
                rng: Rng::for_row(self.seed, table_key(spec.name), id),
                fault: faults[(id - 1) as usize],
                world: self,
            };
            (spec.row)(&mut ctx, &mut copy::Line::new(out));
        }
    }

    /// The expected outcome of every table.
    pub fn report(&self, scale: f64, checksums: &BTreeMap<String, String>) -> DatasetReport {
        let tables: Vec<TableReport> = TABLES
            .iter()
            .map(|t| {
                let own = &self.faults[t.name];
                let mut faults: BTreeMap<FaultKind, i64> =
                    self.kinds[t.name].iter().map(|k| (*k, 0)).collect();
                for f in own.iter().flatten() {
                    *faults.entry(*f).or_default() += 1;
                }
                let rows = self.rows[t.name];
                let merged_into = (t.name == "auth_user").then_some("dispatch_profile");
                let migrated = self.clean[t.name].len() as i64;
                TableReport {
                    table: t.name.to_owned(),
                    target: t.target.to_owned(),
                    rows,
                    clean: own.iter().filter(|f| f.is_none()).count() as i64,
                    faults,
                    merged_into: merged_into.map(str::to_owned),
                    expected_migrated: merged_into.is_none().then_some(migrated),
                    expected_rejected: merged_into.is_none().then_some(rows - migrated),
                    checksum: checksums.get(t.name).cloned().unwrap_or_default(),
                }
            })
            .collect();
        let mut overall = Sha256::new();
        for t in &tables {
            overall.update(t.table.as_bytes());
            overall.update(t.checksum.as_bytes());
        }
        DatasetReport {
            scale,
            seed: self.seed,
            rows: tables.iter().map(|t| t.rows).sum(),
            checksum: hex::encode(overall.finalize()),
            seconds: 0.0,
            tables,
        }
    }
}

fn rejects(f: Option<FaultKind>) -> bool {
    f.is_some_and(FaultKind::rejects)
}

#[derive(Clone, Debug, Serialize)]
pub struct TableReport {
    pub table: String,
    pub target: String,
    pub rows: i64,
    /// Rows with no fault at all.
    pub clean: i64,
    pub faults: BTreeMap<FaultKind, i64>,
    /// For auth_user: its rows are merged into this table's, whose outcome counts them.
    pub merged_into: Option<String>,
    pub expected_migrated: Option<i64>,
    pub expected_rejected: Option<i64>,
    /// SHA-256 of the table's COPY text.
    pub checksum: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct DatasetReport {
    pub scale: f64,
    pub seed: u64,
    pub rows: i64,
    /// SHA-256 over every table's checksum: equal for equal seed, scale and fault profile.
    pub checksum: String,
    pub seconds: f64,
    pub tables: Vec<TableReport>,
}

impl DatasetReport {
    /// The per-table table operators read.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{:<28} {:<20} {:>9} {:>9} {:>9} {:>9}  faults\n",
            "legacy table", "target", "rows", "clean", "migrate", "reject"
        );
        for t in &self.tables {
            let faults: Vec<String> =
                t.faults.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k} {n}")).collect();
            let show = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_else(|| "merged".into());
            out.push_str(&format!(
                "{:<28} {:<20} {:>9} {:>9} {:>9} {:>9}  {}\n",
                t.table,
                t.target,
                t.rows,
                t.clean,
                show(t.expected_migrated),
                show(t.expected_rejected),
                faults.join(", ")
            ));
        }
        let migrate: i64 = self.tables.iter().filter_map(|t| t.expected_migrated).sum();
        let reject: i64 = self.tables.iter().filter_map(|t| t.expected_rejected).sum();
        out.push_str(&format!(
            "{} rows in {} tables (scale {}, seed {}); expected: {migrate} migrated, {reject} \
                rejected; checksum {}\n",
            self.rows,
            self.tables.len(),
            self.scale,
            self.seed,
            &self.checksum[..16]
        ));
        out
    }
}

/// Loads the legacy schema into `pool`'s database and fills it.
pub async fn generate(
    pool: &PgPool,
    opts: &GenerateOptions,
    progress: impl Fn(&str) + Send + Sync,
) -> Result<DatasetReport, ToolError> {
    let started = Instant::now();
    let world = std::sync::Arc::new(
        World::build(opts.scale, opts.seed, &opts.faults).map_err(ToolError::from)?,
    );
    let existing: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname = ANY($1)",
    )
    .bind(TABLES.iter().map(|t| t.name).collect::<Vec<_>>())
    .fetch_all(pool)
    .await
    .map_err(while_doing("checking for existing legacy tables"))?;
    if !existing.is_empty() {
        if !opts.replace {
            return Err(ToolError::system(format!(
                "the source database already has {} of the legacy tables ({}, ...); pass \
                    --replace to drop and regenerate them",
                existing.len(),
                existing[0]
            )));
        }
        let drop = format!(
            "DROP TABLE IF EXISTS {} CASCADE",
            TABLES.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
        );
        sqlx::raw_sql(&drop)
            .execute(pool)
            .await
            .map_err(while_doing("dropping the old legacy tables"))?;
    }
    sqlx::raw_sql(LEGACY_SCHEMA)
        .execute(pool)
        .await
        .map_err(while_doing("creating the legacy schema"))?;

    // Largest tables first, a few at a time: the database ingests one COPY per core.
    let mut order: Vec<&'static TableSpec> = TABLES.iter().collect();
    order.sort_by_key(|t| std::cmp::Reverse(world.rows(t.name)));
    let mut checksums = BTreeMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut queue = order.into_iter();
    let progress = &progress;
    loop {
        while tasks.len() < 3 {
            let Some(spec) = queue.next() else { break };
            let (pool, world) = (pool.clone(), world.clone());
            tasks.spawn(async move {
                load_table(&pool, world, spec).await.map(|(sum, secs)| (spec, sum, secs))
            });
        }
        let Some(done) = tasks.join_next().await else { break };
        let (spec, sum, secs) =
            done.map_err(|e| ToolError::system(format!("a loader task failed: {e}")))??;
        progress(&format!("{:<28} {:>9} rows in {:>6.2}s", spec.name, world.rows(spec.name), secs));
        checksums.insert(spec.name.to_owned(), sum);
    }
    sqlx::raw_sql(LEGACY_CONSTRAINTS)
        .execute(pool)
        .await
        .map_err(while_doing("adding the legacy foreign keys"))?;
    sqlx::raw_sql("ANALYZE")
        .execute(pool)
        .await
        .map_err(while_doing("analyzing the legacy tables"))?;
    let mut report = world.report(opts.scale, &checksums);
    report.seconds = started.elapsed().as_secs_f64();
    let stamp = serde_json::json!({"agentctl_dataset": {"scale": report.scale, "seed": report.seed, "checksum": report.checksum, "rows": report.rows}});
    sqlx::raw_sql(&format!(
        "DO $$ BEGIN EXECUTE format('COMMENT ON DATABASE %I IS %L', current_database(), {}); \
            END $$",
        literal(&stamp.to_string())
    ))
    .execute(pool)
    .await
    .map_err(while_doing("stamping the database with the dataset's identity"))?;
    Ok(report)
}

/// Streams one table into the database; returns the checksum of its COPY text and the seconds.
async fn load_table(
    pool: &PgPool,
    world: std::sync::Arc<World>,
    spec: &'static TableSpec,
) -> Result<(String, f64), ToolError> {
    let started = Instant::now();
    let what = format!("loading {}", spec.name);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
    let n = world.rows(spec.name);
    let producer = tokio::task::spawn_blocking(move || {
        let mut hash = Sha256::new();
        let mut from = 1;
        while from <= n {
            let mut buf = Vec::with_capacity(CHUNK + 4096);
            let mut to = from;
            // Write rows until the chunk is full; rows are small, so check every 256 of them.
            while to <= n && buf.len() < CHUNK {
                let end = (to + 255).min(n);
                world.write_rows(spec, to, end, &mut buf);
                to = end + 1;
            }
            hash.update(&buf);
            if tx.blocking_send(buf).is_err() {
                break;
            }
            from = to;
        }
        hex::encode(hash.finalize())
    });
    let mut conn = pool.acquire().await.map_err(while_doing(&what))?;
    // TRUNCATE in the same transaction lets COPY FREEZE write the rows already frozen, so
    // the first reader does not have to set hint bits on 3 million rows.
    sqlx::query("BEGIN").execute(&mut *conn).await.map_err(while_doing(&what))?;
    sqlx::query(&format!("TRUNCATE {}", spec.name))
        .execute(&mut *conn)
        .await
        .map_err(while_doing(&what))?;
    let mut copy = conn
        .copy_in_raw(&format!(
            "COPY {} ({}) FROM STDIN WITH (FREEZE)",
            spec.name,
            spec.columns.join(", ")
        ))
        .await
        .map_err(while_doing(&what))?;
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = copy.send(chunk).await {
            let _ = copy.abort("agentctl: loading failed").await;
            return Err(ToolError::system(format!("while {what}: {}", describe(&e))));
        }
    }
    copy.finish().await.map_err(while_doing(&what))?;
    sqlx::query("COMMIT").execute(&mut *conn).await.map_err(while_doing(&what))?;
    let sum = producer
        .await
        .map_err(|e| ToolError::system(format!("while {what}: the row generator failed: {e}")))?;
    Ok((sum, started.elapsed().as_secs_f64()))
}

/// Creates the (empty) modern schema in `pool`'s database.
pub async fn apply_target_schema(pool: &PgPool, replace: bool) -> Result<(), ToolError> {
    let existing: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname = ANY($1)",
    )
    .bind(TABLES.iter().map(|t| t.target).collect::<Vec<_>>())
    .fetch_one(pool)
    .await
    .map_err(while_doing("checking for an existing target schema"))?;
    if existing > 0 {
        if !replace {
            return Err(ToolError::system(format!(
                "the target database already has {existing} of the modern tables; pass --replace \
                    to drop and recreate them (their rows are lost)"
            )));
        }
        // Only what the modern schema defines: anything else in the database stays.
        let tables: Vec<&str> = TABLES.iter().map(|t| t.target).collect();
        let drop = format!(
            "DROP TABLE IF EXISTS {} CASCADE; DROP DOMAIN IF EXISTS plausible_ts, email_address CASCADE; \
             DROP TYPE IF EXISTS doctor_status, profile_role, sex, order_status, jaw_kind, project_status, case_status, \
             case_state, task_status, message_level, payment_method, payment_status CASCADE;",
            tables.join(", ")
        );
        sqlx::raw_sql(&drop)
            .execute(pool)
            .await
            .map_err(while_doing("dropping the old target schema"))?;
    }
    sqlx::raw_sql(TARGET_SCHEMA)
        .execute(pool)
        .await
        .map_err(while_doing("creating the target schema"))?;
    Ok(())
}

/// The tables of the database that are none of `known` (outside agentctl's own schemas and
/// the system's), schema-qualified: what a command that regenerates the reference dataset
/// there must not drop.
pub async fn other_tables(pool: &PgPool, known: &[&str]) -> Result<Vec<String>, ToolError> {
    sqlx::query_scalar(&format!(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'f') AND NOT c.relispartition AND {USER_SCHEMAS} \
               AND n.nspname <> 'agentctl_bench' \
               AND NOT (n.nspname = 'public' AND c.relname = ANY($1)) \
             ORDER BY 1"
    ))
    .bind(known)
    .fetch_all(pool)
    .await
    .map_err(while_doing("listing the database's tables"))
}

/// The identity stamped on a generated database, if it has one.
pub async fn stamp(pool: &PgPool) -> Result<Option<serde_json::Value>, ToolError> {
    let text: Option<String> = sqlx::query_scalar(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE \
            datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .map_err(while_doing("reading the dataset stamp"))?;
    Ok(text
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("agentctl_dataset").cloned()))
}

#[cfg(test)]
mod tests;
