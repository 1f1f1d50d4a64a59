//! `agentctl dataset` and `agentctl demo`: the reference legacy database, and the whole job on
//! a private PostgreSQL cluster.

use std::path::{Path, PathBuf};

use agents::orchestrator::PlanGoal;
use runtime::config::{Config, DbFlags, Vars};
use tools::cluster::{ensure_database, DaemonCluster};
use tools::dataset::faults::FaultProfile;
use tools::dataset::{self, DatasetReport, GenerateOptions, World};

use crate::cli::{BenchCmd, DatasetCmd, DatasetShape, DemoOpts, Format};
use crate::exit::Exit;
use crate::print_json;
use crate::session::{Connections, Session, SessionOptions};

fn profile(shape: &DatasetShape) -> Result<FaultProfile, Exit> {
    if shape.no_faults {
        return Ok(FaultProfile::clean());
    }
    let base = FaultProfile::production();
    match &shape.faults {
        None => Ok(base),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Exit::config(format!("reading {}: {e}", path.display())))?;
            base.with_overrides(&text, &path.display().to_string()).map_err(Exit::config)
        }
    }
}

pub async fn dataset(config: &Config, cmd: DatasetCmd) -> Result<(), Exit> {
    match cmd {
        DatasetCmd::Faults { shape, format } => {
            let world =
                World::build(shape.scale, shape.seed, &profile(&shape)?).map_err(Exit::config)?;
            let report = world.report(shape.scale, &Default::default());
            match format {
                Format::Json => print_json(&report),
                Format::Text => print!("{}", report.render()),
            }
            Ok(())
        }
        DatasetCmd::Change { rows, format } => {
            let source = tools::pg::connect(config.source().map_err(Exit::config)?, 1)
                .await
                .map_err(Exit::config)?;
            if dataset::stamp(&source).await?.is_none() {
                return Err(Exit::config(
                    "the source does not hold the reference dataset (agentctl dataset generate)",
                ));
            }
            let report = dataset::changes::apply(&source, rows).await?;
            match format {
                Format::Json => print_json(&report),
                Format::Text => {
                    for t in &report.tables {
                        println!(
                            "{:<28} {:>7} inserted {:>7} updated {:>7} deleted",
                            t.table, t.inserted, t.updated, t.deleted
                        );
                    }
                    println!("{} rows changed in {:.1}s", report.total(), report.seconds);
                }
            }
            Ok(())
        }
        DatasetCmd::Generate { shape, replace, format } => {
            let opts = GenerateOptions {
                scale: shape.scale,
                seed: shape.seed,
                faults: profile(&shape)?,
                replace,
            };
            let source = tools::pg::connect(config.source().map_err(Exit::config)?, 4)
                .await
                .map_err(Exit::config)?;
            let target = match &config.target {
                Some(url) => Some(tools::pg::connect(url, 2).await.map_err(Exit::config)?),
                None => None,
            };
            let report = dataset::generate(&source, &opts, |line| eprintln!("  {line}")).await?;
            if let Some(target) = &target {
                dataset::apply_target_schema(target, replace).await?;
            }
            match format {
                Format::Json => print_json(&report),
                Format::Text => {
                    print!("{}", report.render());
                    println!("generated in {:.1}s", report.seconds);
                    if target.is_some() {
                        println!(
                            "the modern target schema is in place; next: agentctl plan \
                            --goal \"migrate everything\""
                        );
                    }
                }
            }
            Ok(())
        }
    }
}

fn demo_dir(opts: &DemoOpts) -> PathBuf {
    if let Some(dir) = &opts.data_dir {
        return dir.clone();
    }
    if let Some(dir) = std::env::var_os("AGENTCTL_DEMO_DIR") {
        return PathBuf::from(dir);
    }
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    match std::env::var_os("HOME") {
        // Root's home is closed to the postgres user the server runs as.
        Some(home) if !root => PathBuf::from(home).join(".local/share/agentctl/demo"),
        _ => PathBuf::from("/var/lib/agentctl/demo"),
    }
}

pub async fn demo(opts: DemoOpts) -> Result<(), Exit> {
    let dir = demo_dir(&opts);
    if opts.fresh && dir.exists() {
        if let Ok((old, _)) = DaemonCluster::open(&dir) {
            old.stop()?;
        }
        std::fs::remove_dir_all(&dir)
            .map_err(|e| Exit::failed(format!("removing {}: {e}", dir.display())))?;
    }
    let (cluster, created) =
        tokio::task::block_in_place(|| DaemonCluster::open(&dir)).map_err(Exit::config)?;
    println!(
        "PostgreSQL {} in {} on port {}",
        if created { "created" } else { "reused" },
        dir.display(),
        cluster.port
    );
    let config = demo_config(&cluster).await?;
    let conns = Connections::open(&config, true).await?;
    let source = conns.source.clone().expect("opened with the source");

    let report = demo_dataset(&source, &opts).await?;
    fresh_target(&conns.target).await?;
    println!(
        "\nWhat the legacy data holds, and what a migration must do with it:\n{}",
        report.render()
    );

    let (mapping, mapping_origin) =
        crate::plan_run::mapping_file(&Default::default(), &conns).await?;
    let session = Session::start(
        &conns,
        "demo",
        Some("migrate everything"),
        conns.tools()?,
        SessionOptions::from_config(&config),
    )
    .await?;
    let goal = PlanGoal {
        goal: "migrate everything".into(),
        only: false,
        mapping,
        mapping_origin,
        batch_size: None,
        unattended: false,
    };
    let work = async {
        let planned = session.plan(goal).await.map_err(Exit::agent)?;
        println!("{}\n", planned.explanation);
        print!("{}", agents::planning::render(&planned.plan));
        session.operator_decision(
            format!("approved plan {} for the demo", &planned.hash[..12]),
            "the demo migrates its own private databases",
            serde_json::json!({"hash": planned.hash}),
        );
        let results = session.execute(&planned, Default::default()).await.map_err(Exit::agent)?;
        Ok::<_, Exit>((results, planned.plan.left_out))
    };
    let result = crate::interruptible(work, session.run_id).await;
    let run_id = session.run_id;
    let (results, left_out) = crate::plan_run::end(session, result, "succeeded").await?;
    crate::plan_run::print_results(&results, &left_out, run_id);
    let validations: Vec<&runtime::domain::EntityValidation> =
        results.iter().filter_map(|r| r.validation.as_ref()).collect();
    crate::proof::print_validations(&validations);
    println!(
        "\nThe whole run is in the audit trail: agentctl --target {} audit show {run_id}\n",
        cluster.url("modern")
    );
    println!("The report: agentctl --target {} report {run_id}\n", cluster.url("modern"));
    if let Some(failed) = crate::proof::validation_failure(&validations) {
        return Err(failed);
    }
    println!(
        "Look around:\n  psql -h 127.0.0.1 -p {} -U postgres -d legacy   # the legacy data\n  \
        psql -h 127.0.0.1 -p {} -U postgres -d modern   # the target schema and agentctl's \
        control tables\nStop the server:\n  {}",
        cluster.port,
        cluster.port,
        cluster.stop_command()
    );
    Ok(())
}

/// The demo cluster's `legacy` and `modern` databases, made if missing, as a configuration.
async fn demo_config(cluster: &DaemonCluster) -> Result<Config, Exit> {
    let admin_cfg = Config::resolve(
        &DbFlags { source: None, target: Some(cluster.url("postgres")) },
        &Vars::default(),
    )
    .map_err(Exit::config)?;
    let admin = tools::pg::connect(admin_cfg.target().map_err(Exit::config)?, 1).await?;
    for db in ["legacy", "modern"] {
        ensure_database(&admin, db).await?;
    }
    admin.close().await;
    let config = Config::resolve(
        &DbFlags { source: Some(cluster.url("legacy")), target: Some(cluster.url("modern")) },
        &Vars::default(),
    )
    .map_err(Exit::config)?;
    Ok(config)
}

/// The reference dataset in the demo's source: generated, unless the one stamped there is the
/// one asked for.
async fn demo_dataset(source: &tools::pg::Pool, opts: &DemoOpts) -> Result<DatasetReport, Exit> {
    // Regenerate only when the stamped dataset is not the one asked for.
    let wanted =
        World::build(opts.scale, opts.seed, &FaultProfile::production()).map_err(Exit::config)?;
    let expected = wanted.report(opts.scale, &Default::default());
    let stamp = dataset::stamp(source).await?;
    let same = stamp.as_ref().is_some_and(|s| {
        s["scale"] == serde_json::json!(opts.scale) && s["seed"] == serde_json::json!(opts.seed)
    });
    Ok(if same {
        println!("reference dataset already loaded (scale {}, seed {})", opts.scale, opts.seed);
        expected
    } else {
        println!("generating the reference dataset at scale {} ...", opts.scale);
        let gen = GenerateOptions {
            scale: opts.scale,
            seed: opts.seed,
            faults: FaultProfile::production(),
            replace: true,
        };
        let r = dataset::generate(source, &gen, |line| println!("  {line}")).await?;
        println!(
            "  {} rows in {:.1}s ({:.0} rows/s)",
            r.rows,
            r.seconds,
            r.rows as f64 / r.seconds
        );
        r
    })
}

/// A child agentctl's exit, stdout, wall time, CPU time (user and system) and peak RSS.
struct Measured {
    code: i32,
    stdout: String,
    stderr: String,
    seconds: f64,
    cpu_seconds: f64,
    peak_rss_kb: i64,
}

/// Runs this same binary with `args` as a child and measures it (its own CPU time and peak
/// RSS, from wait4).
fn measure(config: &Config, args: &[&str]) -> Result<Measured, Exit> {
    let source = config.source().map_err(Exit::config)?.expose().to_owned();
    let target = config.target().map_err(Exit::config)?.expose().to_owned();
    let exe = std::env::current_exe()
        .map_err(|e| Exit::failed(format!("finding agentctl's own binary: {e}")))?;
    let started = std::time::Instant::now();
    let mut child = std::process::Command::new(exe)
        .args(["--source", &source, "--target", &target])
        .args(args)
        .env_remove("BATCH_SIZE")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Exit::failed(format!("starting agentctl {}: {e}", args.join(" "))))?;
    let (mut out, mut err) = (String::new(), String::new());
    use std::io::Read;
    let stdout = child
        .stdout
        .take()
        .map(|mut s| std::thread::spawn(move || s.read_to_string(&mut out).map(|_| out)));
    let stderr = child
        .stderr
        .take()
        .map(|mut s| std::thread::spawn(move || s.read_to_string(&mut err).map(|_| err)));
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    #[allow(unsafe_code)]
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, with pointers to live locals.
    #[allow(unsafe_code)]
    let waited = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    if waited < 0 {
        return Err(Exit::failed(format!(
            "waiting for agentctl {}: {}",
            args.join(" "),
            std::io::Error::last_os_error()
        )));
    }
    let seconds = started.elapsed().as_secs_f64();
    let text = |h: Option<std::thread::JoinHandle<std::io::Result<String>>>| {
        h.and_then(|h| h.join().ok()).and_then(Result::ok).unwrap_or_default()
    };
    Ok(Measured {
        code: if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 },
        stdout: text(stdout),
        stderr: text(stderr),
        seconds,
        cpu_seconds: [usage.ru_utime, usage.ru_stime]
            .iter()
            .map(|t| t.tv_sec as f64 + t.tv_usec as f64 / 1e6)
            .sum(),
        peak_rss_kb: usage.ru_maxrss,
    })
}

/// The CPU time every process on this machine has used so far (user, nice, system, interrupts,
/// steal; `/proc/stat`), in seconds: read before and after a command, what it cost the whole
/// machine, its database servers' work included. `None` where the kernel does not say.
fn machine_cpu() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    // user, nice, system, idle, iowait, irq, softirq, steal
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().map(|&i| ticks.get(i).copied().unwrap_or(0)).sum();
    // SAFETY: sysconf reads a constant of the system; it has no preconditions.
    #[allow(unsafe_code)]
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| busy as f64 / per_second as f64)
}

/// `f` run, with what it cost the whole machine in CPU seconds (see [`machine_cpu`]).
async fn costing<T>(f: impl std::future::Future<Output = T>) -> (T, Option<f64>) {
    let before = machine_cpu();
    let out = f.await;
    (out, machine_cpu().zip(before).map(|(after, before)| after - before))
}

/// `f` run, with the MB of WAL it made the target's server write.
async fn wal_written<T>(
    target: &tools::pg::Pool,
    f: impl std::future::Future<Output = T>,
) -> (T, Option<f64>) {
    let before = tools::bench::wal_bytes(target).await;
    let out = f.await;
    let after = tools::bench::wal_bytes(target).await;
    (out, after.zip(before).map(|(a, b)| (a - b) as f64 / (1024.0 * 1024.0)))
}

/// pgcopydb, the PostgreSQL-to-PostgreSQL copier users pick instead (Debian's `pgcopydb`), when
/// it is installed: the bench installs nothing.
fn pgcopydb() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|d| d.join("pgcopydb")).find(|p| p.is_file())
    })
}

/// What `pgcopydb clone` made: its seconds, and how many of the clone's foreign keys there are
/// and how many of them it validated (it recreates each as the source has it: a source whose
/// keys are `NOT VALID`, as the reference dataset's, gets unchecked ones, where agentctl
/// validates every key of its target).
struct Cloned {
    seconds: f64,
    foreign_keys: i64,
    validated: i64,
}

/// One `pgcopydb clone` of the source into a database of its own on the target's server (same
/// schema, integer keys, every row, indexes and foreign keys made), timed; the database is
/// dropped again afterwards.
async fn pgcopydb_clone(
    bin: &Path,
    config: &Config,
    admin: &tools::pg::Pool,
    jobs: &str,
) -> Result<Cloned, Exit> {
    let (source, target) =
        (config.source().map_err(Exit::config)?, config.target().map_err(Exit::config)?);
    let name = format!("{}_pgcopydb", target.database());
    let (url, query) =
        target.expose().split_once('?').map_or((target.expose(), ""), |(u, q)| (u, q));
    let base = url.rsplit_once('/').map_or(url, |(b, _)| b);
    let clone_url = format!("{base}/{name}{}{query}", if query.is_empty() { "" } else { "?" });
    tools::cluster::scratch_database(admin, &name, CLONE_MARK).await?;
    // pgcopydb's work files: a directory of its own, empty, removed after.
    let dir = std::env::temp_dir().join(format!("agentctl-pgcopydb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let started = std::time::Instant::now();
    let out = std::process::Command::new(bin)
        .args([
            "clone",
            "--source",
            source.expose(),
            "--target",
            &clone_url,
            "--table-jobs",
            jobs,
            "--index-jobs",
            jobs,
        ])
        .args(["--no-owner", "--no-acl", "--dir"])
        .arg(&dir)
        .output()
        .map_err(|e| Exit::failed(format!("starting pgcopydb: {e}")))?;
    let seconds = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    let keys = match out.status.success() {
        true => clone_keys(&clone_url).await,
        false => Ok((0, 0)),
    };
    tools::cluster::drop_database(admin, &name).await?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        let last = said
            .lines()
            .rev()
            .find(|l| l.contains("ERROR"))
            .unwrap_or_else(|| said.lines().last().unwrap_or(""));
        return Err(Exit::failed(format!("pgcopydb clone failed: {}", last.trim())));
    }
    let (foreign_keys, validated) = keys?;
    Ok(Cloned { seconds, foreign_keys, validated })
}

/// The foreign keys of the clone at `url`, and how many of them are validated.
async fn clone_keys(url: &str) -> Result<(i64, i64), Exit> {
    let db =
        runtime::config::DbUrl::parse(runtime::config::DbRole::Target, url, "pgcopydb's clone")
            .map_err(Exit::config)?;
    Ok(tools::cluster::foreign_keys(&db).await?)
}

/// `bench` regenerates the reference dataset in the source and empties the target: it refuses
/// databases that hold anything else (a legacy table of the dataset's names in a source that
/// `dataset generate` did not stamp, or any other table), before it touches either.
async fn scratch_pair(conns: &Connections) -> Result<(), Exit> {
    let source = conns.source.as_ref().expect("opened with the source");
    let legacy: Vec<&str> = match dataset::stamp(source).await? {
        Some(_) => dataset::TABLES.iter().map(|t| t.name).collect(),
        None => Vec::new(),
    };
    let modern: Vec<&str> = dataset::TABLES.iter().map(|t| t.target).collect();
    for (side, pool, known) in [("source", source, legacy), ("target", &conns.target, modern)] {
        let others = dataset::other_tables(pool, &known).await?;
        if let Some(first) = others.first() {
            return Err(Exit::config(format!(
                "bench regenerates the reference dataset in the source and empties the target, \
                    but the {side} holds {} table(s) it did not generate ({first}{}): point \
                    --source and --target at scratch databases",
                others.len(),
                if others.len() > 1 { ", ..." } else { "" }
            )));
        }
    }
    Ok(())
}

/// The comment `bench migrate` gives the scratch database it clones into with pgcopydb; one
/// of that name without it is not dropped.
const CLONE_MARK: &str = "agentctl bench: pgcopydb's clone, dropped after";

/// One round of `bench migrate`: the raw pipe, pgcopydb (when installed), then agentctl's
/// migration of the same data, without and with validation.
struct Round {
    pipe: tools::bench::PipeFigure,
    /// The run's JSON document, the source rows it read, its execution phase in seconds, and
    /// the whole command's.
    doc: serde_json::Value,
    rows_read: i64,
    execute: f64,
    whole: f64,
    /// The whole command's CPU time, user and system: agentctl's own work, which a slow spell
    /// of the machine stretches less than the wall time.
    cpu: f64,
    peak_rss_kb: i64,
    /// The whole machine's CPU for the run without validation (every process, the database
    /// servers' included).
    machine_cpu: Option<f64>,
    /// `pgcopydb clone` of the same source, when it is installed: seconds, and the whole
    /// machine's CPU for it.
    pgcopydb: Option<f64>,
    pgcopydb_cpu: Option<f64>,
    /// The clone's foreign keys, and how many of them pgcopydb validated.
    pgcopydb_keys: (i64, i64),
    /// The MB of WAL the target's server wrote for the run without validation, and for the
    /// clone.
    wal_mb: Option<f64>,
    pgcopydb_wal_mb: Option<f64>,
    /// The whole `run` with every entity validated as it loads (the default): seconds,
    /// agentctl's CPU, and the whole machine's.
    validated: f64,
    validated_cpu: f64,
    validated_machine_cpu: Option<f64>,
}

impl Round {
    fn rate(&self) -> f64 {
        self.rows_read as f64 / self.execute.max(1e-9)
    }

    fn ratio(&self) -> f64 {
        self.rate() / self.pipe.rows_per_second
    }

    /// The CPU the run without validation and the validated run cost every process but
    /// agentctl (the databases' servers): what no work of agentctl's own can take away.
    fn servers_cpu(&self) -> (Option<f64>, Option<f64>) {
        (
            self.machine_cpu.map(|m| (m - self.cpu).max(0.0)),
            self.validated_machine_cpu.map(|m| (m - self.validated_cpu).max(0.0)),
        )
    }
}

#[allow(clippy::too_many_arguments)]
async fn bench_migrate(
    config: &Config,
    scale: f64,
    seed: u64,
    jobs: usize,
    rounds: usize,
    results: Option<PathBuf>,
    format: Format,
) -> Result<(), Exit> {
    let conns = Connections::open(config, true).await?;
    scratch_pair(&conns).await?;
    let source = conns.source.clone().expect("opened with the source");
    eprintln!("generating the reference dataset at scale {scale} ...");
    let gen = GenerateOptions { scale, seed, faults: FaultProfile::production(), replace: true };
    let report = dataset::generate(&source, &gen, |_| ()).await?;
    eprintln!("  {} rows in {:.1}s", report.rows, report.seconds);
    let copier = pgcopydb();
    if copier.is_none() {
        eprintln!(
            "pgcopydb is not installed (apt-get install pgcopydb): the comparison with it \
            is left out"
        );
    }
    // pgcopydb as users run it on a 2-core machine: two tables and two indexes at a time.
    let copier_jobs = jobs.clamp(1, 2).to_string();
    // The pipe and the run take turns, so that a slow spell of the machine weighs on both.
    let mut done: Vec<Round> = Vec::new();
    let bench = Bench {
        config,
        conns: &conns,
        source: &source,
        jobs,
        copier: copier.as_deref(),
        copier_jobs: &copier_jobs,
    };
    for round in 1..=rounds.max(1) {
        done.push(bench.round(round).await?);
    }
    // The round of median ratio stands for the run; every round is listed beside it.
    let mut by_ratio: Vec<&Round> = done.iter().collect();
    by_ratio.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
    let median = by_ratio[(by_ratio.len() - 1) / 2];
    // Accounting and validation are of the last run, whose rows the target holds.
    let last = done.last().expect("at least one round");
    let entities = last.doc["entities"].as_array().cloned().unwrap_or_default();
    let total = |f: &str| entities.iter().filter_map(|e| e[f].as_i64()).sum::<i64>();
    let expected = |f: fn(&dataset::TableReport) -> Option<i64>| {
        report.tables.iter().filter_map(f).sum::<i64>()
    };
    let (expected_migrated, expected_rejected) =
        (expected(|t| t.expected_migrated), expected(|t| t.expected_rejected));
    let (read, migrated, rejected) = (last.rows_read, total("migrated"), total("rejected"));
    eprintln!("agentctl validate ...");
    let validate = measure(config, &["validate", "--format", "json"])?;
    let passed = validate.code == 0;
    let peak_rss_mb = done.iter().map(|r| r.peak_rss_kb).max().unwrap_or(0) / 1024;
    let summary = Summary {
        done: &done,
        median,
        jobs,
        copier_jobs: &copier_jobs,
        peak_rss_mb,
        migrated,
        rejected,
        expected: (expected_migrated, expected_rejected),
        validate: &validate,
        wal_level: tools::bench::wal_level(&conns.target).await,
    };
    let figures = figures_json(&summary, scale, report.rows, read);
    let md = markdown(&summary);
    match format {
        Format::Json => print_json(&figures),
        Format::Text => print!("{md}"),
    }
    if let Some(path) = results {
        let section = format!(
            "\n## `agentctl bench migrate --scale {scale} --rounds {rounds}`, {}\n\n{md}",
            chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
        );
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| Exit::failed(format!("opening {}: {e}", path.display())))?;
        std::io::Write::write_all(&mut file, section.as_bytes())
            .map_err(|e| Exit::failed(format!("writing {}: {e}", path.display())))?;
    }
    if !passed {
        return Err(Exit {
            code: Exit::VALIDATION,
            message: format!("validation failed: {}", validate.stderr.trim()),
        });
    }
    Ok(())
}

/// What the figures table of `bench migrate` is made of.
struct Summary<'a> {
    done: &'a [Round],
    median: &'a Round,
    jobs: usize,
    copier_jobs: &'a str,
    peak_rss_mb: i64,
    migrated: i64,
    rejected: i64,
    /// What the generator says migrates and is rejected.
    expected: (i64, i64),
    validate: &'a Measured,
    /// The target server's `wal_level`, which decides what pgcopydb's clone logs.
    wal_level: Option<String>,
}

/// The figures of `bench migrate` as one JSON document.
fn figures_json(s: &Summary<'_>, scale: f64, rows_generated: i64, read: i64) -> serde_json::Value {
    let Summary { done, median, peak_rss_mb, migrated, rejected, validate, .. } = *s;
    let (expected_migrated, expected_rejected) = s.expected;
    let passed = validate.code == 0;
    let (servers, servers_validated) = median.servers_cpu();
    serde_json::json!({
        "scale": scale, "rows_generated": rows_generated,
        "rounds": done.iter().map(|r| serde_json::json!({
            "raw_pipe": r.pipe,
            "execute_seconds": r.execute, "rows_per_second": r.rate(), "ratio": r.ratio(),
            "whole_command_seconds": r.whole, "cpu_seconds": r.cpu, "peak_rss_mb": r.peak_rss_kb / 1024,
        })).collect::<Vec<_>>(),
        "raw_pipe": median.pipe,
        "agentctl": {"rows_read": read, "migrated": migrated, "rejected": rejected,
            "expected_migrated": expected_migrated, "expected_rejected": expected_rejected,
            "execute_seconds": median.execute, "rows_per_second": median.rate(),
            "whole_command_seconds": median.whole, "cpu_seconds": median.cpu, "peak_rss_mb": peak_rss_mb,
            "machine_cpu_seconds": median.machine_cpu, "wal_mb": median.wal_mb},
        "wal_level": s.wal_level,
        "ratio": median.ratio(),
        "validation": {"passed": passed, "seconds": validate.seconds, "peak_rss_mb": validate.peak_rss_kb / 1024},
        "validated_run_seconds": median.validated,
        "validated_run_cpu_seconds": median.validated_cpu,
        "validated_run_machine_cpu_seconds": median.validated_machine_cpu,
        "servers_cpu_seconds": {"without_validation": servers, "validated": servers_validated},
        "pgcopydb": median.pgcopydb.map(|p| serde_json::json!({
            "seconds": p,
            "machine_cpu_seconds": median.pgcopydb_cpu,
            "wal_mb": median.pgcopydb_wal_mb,
            "foreign_keys": median.pgcopydb_keys.0,
            "foreign_keys_validated": median.pgcopydb_keys.1,
            "ratio_without_validation": median.whole / p,
            "ratio_with_validation": median.validated / p,
            "ratio_if_agentctl_cost_nothing": {
                "without_validation": floor_ratio(servers, Some(p)),
                "validated": floor_ratio(servers_validated, Some(p)),
            },
            "rounds": done.iter().map(|r| r.pgcopydb).collect::<Vec<_>>(),
        })),
    })
}

/// Every round's figure, in round order: the brackets beside the median round's.
fn every_round(done: &[Round], f: &dyn Fn(&Round) -> String) -> String {
    done.iter().map(f).collect::<Vec<_>>().join(", ")
}

/// Every round's figure `f` to `decimals` places, empty where a round has none.
fn every_round_of(done: &[Round], decimals: usize, f: &dyn Fn(&Round) -> Option<f64>) -> String {
    every_round(done, &|r| f(r).map(|v| format!("{v:.decimals$}")).unwrap_or_default())
}

/// The machine's cores, which the CPU a run costs is spread over.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The shortest `cpu` seconds of CPU can take on this machine's cores, as a ratio to
/// pgcopydb's clone where it ran.
fn floor_ratio(cpu: Option<f64>, pgcopydb: Option<f64>) -> Option<f64> {
    Some(cpu? / cores() as f64 / pgcopydb?)
}

/// The rows of what the runs cost the whole machine in CPU, with the shortest each could take
/// on this machine's cores for that CPU, and of the databases' share of it: the ratio to
/// pgcopydb no work of agentctl's own can go below (empty where the kernel does not say).
fn machine_cpu_row(s: &Summary<'_>) -> String {
    let (done, median) = (s.done, s.median);
    let (Some(cpu), Some(validated), (Some(servers), Some(servers_validated))) =
        (median.machine_cpu, median.validated_machine_cpu, median.servers_cpu())
    else {
        return String::new();
    };
    let listed = |f: &dyn Fn(&Round) -> Option<f64>| every_round_of(done, 1, f);
    let cores = cores();
    let copier = match median.pgcopydb_cpu {
        Some(p) => format!("; pgcopydb clone: {p:.1} s ({} s)", listed(&|r| r.pgcopydb_cpu)),
        None => String::new(),
    };
    let share = |servers: f64| {
        let floor = match floor_ratio(Some(servers), median.pgcopydb) {
            Some(ratio) => format!(", {ratio:.2} times pgcopydb's clone"),
            None => String::new(),
        };
        format!("{servers:.1} s, so no sooner than {:.1} s{floor}", servers / cores as f64)
    };
    format!(
        "| CPU of the whole machine, every process (the databases' included) | agentctl run without validation: {cpu:.1} s ({} s), so no sooner than {:.1} s on {cores} cores; validated: {validated:.1} s ({} s), no sooner than {:.1} s{copier} |\n\
         | the databases' share: the whole machine's CPU less agentctl's (what agentctl costing nothing would leave) | without validation: {} ({} s); validated: {} ({} s) |\n",
        listed(&|r| r.machine_cpu),
        cpu / cores as f64,
        listed(&|r| r.validated_machine_cpu),
        validated / cores as f64,
        share(servers),
        listed(&|r| r.servers_cpu().0),
        share(servers_validated),
        listed(&|r| r.servers_cpu().1),
    )
}

/// The row of the WAL the target's server wrote for each (empty where the server does not say).
fn wal_row(s: &Summary<'_>) -> String {
    let Some(mb) = s.median.wal_mb else { return String::new() };
    let listed = |f: &dyn Fn(&Round) -> Option<f64>| every_round_of(s.done, 0, f);
    let copier = match s.median.pgcopydb_wal_mb {
        Some(p) => format!("; pgcopydb clone: {p:.0} MB ({} MB)", listed(&|r| r.pgcopydb_wal_mb)),
        None => String::new(),
    };
    format!(
        "| WAL the target's server wrote (`wal_level` {}) | agentctl run without validation: {mb:.0} MB ({} MB){copier} |\n",
        s.wal_level.as_deref().unwrap_or("unknown"),
        listed(&|r| r.wal_mb),
    )
}

/// The figures of `bench migrate` as a Markdown table: the round of median ratio, every
/// round's figure in brackets.
fn markdown(s: &Summary<'_>) -> String {
    let Summary { done, median, jobs, copier_jobs, peak_rss_mb, migrated, rejected, .. } = *s;
    let (expected_migrated, expected_rejected) = s.expected;
    let validate = s.validate;
    let listed = |f: &dyn Fn(&Round) -> String| every_round(done, f);
    let copier_rows = match median.pgcopydb {
        Some(p) => format!(
            "| (c) `pgcopydb clone`, {copier_jobs} tables and indexes at a time (integer keys, every row, indexes built, {} of {} foreign keys validated as the source has them; agentctl validates all of its target's) | {p:.1} s ({} s) |\n\
             | agentctl whole run without validation / pgcopydb | {:.2} ({}) |\n\
             | agentctl whole run with validation (the default) / pgcopydb | {:.1} s, {:.2} ({}) |\n",
            median.pgcopydb_keys.1,
            median.pgcopydb_keys.0,
            every_round_of(done, 1, &|r| r.pgcopydb),
            median.whole / p,
            every_round_of(done, 2, &|r| r.pgcopydb.map(|s| r.whole / s)),
            median.validated,
            median.validated / p,
            every_round_of(done, 2, &|r| r.pgcopydb.map(|s| r.validated / s)),
        ),
        None => "| (c) pgcopydb | not installed (`apt-get install pgcopydb`): no comparison |\n".to_owned(),
    };
    let cpu_row = machine_cpu_row(s) + &wal_row(s);
    format!(
        "| what | figure (the round of median ratio; every round in brackets) |\n| --- | --- |\n\
         | (a) raw pipe, {} tables, {jobs} at a time | {} rows in {:.1} s, {:.0} rows/s ({} s) |\n\
         | (b) agentctl migration (execution phase) | {} rows in {:.1} s, {:.0} rows/s ({} s) |\n\
         | ratio b/a | {:.2} ({}) |\n\
         | agentctl whole command without validation (plan, migration) | {:.1} s, {:.1} s of CPU ({} s), peak RSS {peak_rss_mb} MB over the rounds |\n\
         | accounting (last round) | {migrated} migrated + {rejected} rejected (generator: {} + {}) |\n\
         | validation of every row (`agentctl validate`) | {}, {:.1} s, peak RSS {} MB |\n{copier_rows}{cpu_row}",
        median.pipe.tables,
        median.pipe.rows,
        median.pipe.seconds,
        median.pipe.rows_per_second,
        listed(&|r| format!("{:.1}", r.pipe.seconds)),
        median.rows_read,
        median.execute,
        median.rate(),
        listed(&|r| format!("{:.1}", r.execute)),
        median.ratio(),
        listed(&|r| format!("{:.2}", r.ratio())),
        median.whole,
        median.cpu,
        listed(&|r| format!("{:.1}", r.cpu)),
        expected_migrated,
        expected_rejected,
        if s.validate.code == 0 { "passed" } else { "FAILED" },
        validate.seconds,
        validate.peak_rss_kb / 1024
    )
}

/// What every round of `bench migrate` measures against.
struct Bench<'a> {
    config: &'a Config,
    conns: &'a Connections,
    source: &'a tools::pg::Pool,
    jobs: usize,
    copier: Option<&'a Path>,
    /// How many tables and indexes pgcopydb works on at once.
    copier_jobs: &'a str,
}

impl Bench<'_> {
    /// One round, in turns: the raw pipe, pgcopydb, agentctl without and with validation, each
    /// into a fresh target on a settled machine.
    async fn round(&self, round: usize) -> Result<Round, Exit> {
        let (jobs, copier_jobs) = (self.jobs, self.copier_jobs);
        // The previous round's target goes before the pipe, so that neither measurement shares
        // the machine with autovacuum clearing up after the one before it.
        fresh_target(&self.conns.target).await?;
        tools::bench::settle(self.source, &self.conns.target).await?;
        eprintln!(
            "round {round}: raw pipe, COPY out of the source and into the target, {jobs} \
            tables at a time ..."
        );
        let pipe = tools::bench::raw_pipe(self.source, &self.conns.target, self.jobs).await?;
        eprintln!("  {} rows in {:.1}s", pipe.rows, pipe.seconds);
        tools::bench::settle(self.source, &self.conns.target).await?;
        let target = &self.conns.target;
        let (pgcopydb, pgcopydb_cpu, pgcopydb_keys, pgcopydb_wal_mb) = match self.copier {
            Some(bin) => {
                eprintln!(
                    "round {round}: pgcopydb clone, {copier_jobs} tables and indexes at a time ..."
                );
                let ((cloned, cpu), wal) = wal_written(
                    target,
                    costing(pgcopydb_clone(bin, self.config, target, copier_jobs)),
                )
                .await;
                let Cloned { seconds, foreign_keys, validated } = cloned?;
                eprintln!("  {seconds:.1}s");
                tools::bench::settle(self.source, target).await?;
                (Some(seconds), cpu, (foreign_keys, validated), wal)
            }
            None => (None, None, (0, 0), None),
        };
        eprintln!(
            "round {round}: agentctl run --goal \"migrate everything\" --skip-validation ..."
        );
        let (run, wal_mb) = wal_written(target, self.agentctl_run(&["--skip-validation"])).await;
        let (run, doc, machine_cpu) = run?;
        let execute = doc["execute_seconds"].as_f64().unwrap_or(run.seconds);
        let rows_read = doc["entities"]
            .as_array()
            .map(|es| es.iter().filter_map(|e| e["rows_read"].as_i64()).sum())
            .unwrap_or(0);
        eprintln!("  {rows_read} rows in {execute:.1}s; agentctl's CPU {:.1}s", run.cpu_seconds);
        // The same run as a user starts it: every entity validated as soon as it is loaded.
        fresh_target(&self.conns.target).await?;
        tools::bench::settle(self.source, &self.conns.target).await?;
        eprintln!("round {round}: agentctl run --goal \"migrate everything\" (validated) ...");
        let (validated, doc, validated_machine_cpu) = self.agentctl_run(&[]).await?;
        eprintln!("  {:.1}s", validated.seconds);
        let r = Round {
            pipe,
            doc,
            rows_read,
            execute,
            whole: run.seconds,
            cpu: run.cpu_seconds,
            peak_rss_kb: run.peak_rss_kb.max(validated.peak_rss_kb),
            machine_cpu,
            pgcopydb,
            pgcopydb_cpu,
            pgcopydb_keys,
            wal_mb,
            pgcopydb_wal_mb,
            validated: validated.seconds,
            validated_cpu: validated.cpu_seconds,
            validated_machine_cpu,
        };
        Ok(r)
    }

    /// `agentctl run --goal "migrate everything" --yes` with `extra` arguments, measured: the
    /// child's figures, its JSON document, and what it cost the whole machine in CPU.
    async fn agentctl_run(
        &self,
        extra: &[&str],
    ) -> Result<(Measured, serde_json::Value, Option<f64>), Exit> {
        let jobs = self.jobs.clamp(1, 8).to_string();
        let mut args = vec!["run", "--goal", "migrate everything", "--yes"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--jobs", &jobs, "--format", "json"]);
        let (run, machine_cpu) = costing(async { measure(self.config, &args) }).await;
        let run = run?;
        if run.code != 0 {
            return Err(Exit::failed(format!(
                "the benchmarked run failed (exit {}): {}",
                run.code,
                run.stderr.trim()
            )));
        }
        let doc = serde_json::from_str(&run.stdout)
            .map_err(|e| Exit::failed(format!("reading the run's JSON: {e}")))?;
        Ok((run, doc, machine_cpu))
    }
}

/// The reference target schema created anew, and the control schema's records of the rows the
/// old tables held forgotten.
async fn fresh_target(target: &tools::pg::Pool) -> Result<(), Exit> {
    dataset::apply_target_schema(target, true).await?;
    tools::control::ControlStore::open(target.clone())
        .await?
        .forget_migrated_rows()
        .await
        .map_err(Exit::from)
}

async fn bench_diff(
    config: &Config,
    scale: f64,
    seed: u64,
    changes: u64,
    format: Format,
) -> Result<(), Exit> {
    let conns = Connections::open(config, true).await?;
    scratch_pair(&conns).await?;
    let source = conns.source.clone().expect("opened with the source");
    eprintln!("generating the reference dataset at scale {scale} ...");
    let gen = GenerateOptions { scale, seed, faults: FaultProfile::production(), replace: true };
    let report = dataset::generate(&source, &gen, |_| ()).await?;
    fresh_target(&conns.target).await?;
    eprintln!("  {} rows; migrating them all ...", report.rows);
    let run =
        measure(config, &["run", "--goal", "migrate everything", "--yes", "--format", "json"])?;
    if run.code != 0 {
        return Err(Exit::failed(format!("the full migration failed: {}", run.stderr.trim())));
    }
    eprintln!("  {:.1}s; changing {changes} source rows ...", run.seconds);
    let changed = dataset::changes::apply(&source, changes).await?;
    tools::pg::run_script(&source, "ANALYZE", "analyzing the source").await?;
    let mut figures = Vec::new();
    for (name, args) in [
        ("diff analyze", &["diff", "analyze", "--format", "json"][..]),
        ("diff migrate", &["diff", "migrate", "--format", "json"][..]),
        ("diff validate", &["diff", "validate", "--format", "json"][..]),
    ] {
        eprintln!("{name} ...");
        let m = measure(config, args)?;
        if m.code != 0 {
            return Err(Exit::failed(format!("{name} failed: {}", m.stderr.trim())));
        }
        eprintln!("  {:.1}s, peak RSS {} MB", m.seconds, m.peak_rss_kb / 1024);
        let doc: serde_json::Value = serde_json::from_str(&m.stdout).unwrap_or_default();
        figures.push(serde_json::json!({"step": name, "seconds": m.seconds, "max_rss_mb": m.peak_rss_kb / 1024, "total": doc["total"],
            "out_of_step": doc["analyses"].as_array().map(|a| a.iter().map(|e|
                e["inserts"].as_i64().unwrap_or(0) + e["updates"].as_i64().unwrap_or(0) + e["deletes"].as_i64().unwrap_or(0)
                + e["conflicts"].as_i64().unwrap_or(0) + e["rejected"].as_i64().unwrap_or(0)).sum::<i64>())}));
    }
    let doc = serde_json::json!({"scale": scale, "source_rows": report.rows, "full_migration_seconds": run.seconds, "changed": changed.total(),
        "changes": changed.tables, "steps": figures});
    match format {
        Format::Json => print_json(&doc),
        Format::Text => {
            println!(
                "reference dataset at scale {scale}: {} rows, migrated in {:.1}s",
                report.rows, run.seconds
            );
            println!("{} source rows changed", changed.total());
            for f in &figures {
                println!(
                    "{:<14} {:>7.1} s  peak RSS {:>5} MB",
                    f["step"].as_str().unwrap_or(""),
                    f["seconds"].as_f64().unwrap_or(0.0),
                    f["max_rss_mb"]
                );
            }
        }
    }
    Ok(())
}

pub async fn bench(config: &Config, cmd: BenchCmd) -> Result<(), Exit> {
    match cmd {
        BenchCmd::Migrate { scale, seed, jobs, rounds, results, format } => {
            bench_migrate(config, scale, seed, jobs, rounds, results, format).await
        }
        BenchCmd::Diff { scale, seed, changes, format } => {
            bench_diff(config, scale, seed, changes, format).await
        }
        BenchCmd::Sandbox { runs, values } => crate::sandbox_cmd::bench(runs, values).await,
        BenchCmd::Uuid { rows, format } => {
            let target = tools::pg::connect(config.target().map_err(Exit::config)?, 1)
                .await
                .map_err(Exit::config)?;
            let figures = tools::bench::uuid_layouts(&target, rows).await?;
            match format {
                Format::Json => print_json(&figures),
                Format::Text => {
                    for f in &figures {
                        println!(
                            "{:<8} {:>9} rows in {:>6.2}s  {:>9.0} rows/s  primary key index \
                                {:>5} MiB",
                            format!("{:?}", f.layout).to_lowercase(),
                            f.rows,
                            f.seconds,
                            f.rows_per_second,
                            f.index_bytes >> 20
                        );
                    }
                }
            }
            Ok(())
        }
    }
}
