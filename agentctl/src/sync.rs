//! `agentctl diff`, `agentctl conflict` and `agentctl sync`: keeping the target in step with a
//! source that stays live after the migration.

use std::time::{Duration, Instant};

use agents::orchestrator::{DiffGoal, DiffReport};
use runtime::config::Config;
use runtime::domain::DiffApplied;
use serde_json::json;
use tools::sync::{Claim, Conflict, JobRun, RunCounts, Schedule, SyncStore};

use crate::cli::{
    ConflictCmd, DiffCmd, EntitiesOpts, Format, MappingOpt, ReportFormat, Side, SyncCmd,
};
use crate::exit::Exit;
use crate::plan_run::end;
use crate::proof::{start, validate_as};
use crate::session::Connections;
use crate::{interruptible, print_json};

pub async fn diff(config: &Config, cmd: DiffCmd) -> Result<(), Exit> {
    match cmd {
        DiffCmd::Analyze(opts) => {
            let started = Instant::now();
            let (run_id, report) = diff_run(
                config,
                &opts.diff,
                "diff analyze",
                Steps { analyze: true, apply: false, full: opts.full },
            )
            .await?;
            show(&report, opts.diff.format, run_id, started, false);
            Ok(())
        }
        DiffCmd::Migrate(opts) => {
            let started = Instant::now();
            let steps = Steps { analyze: opts.analyze, apply: true, full: opts.full };
            let (run_id, report) = diff_run(config, &opts.diff, "diff migrate", steps).await?;
            show(&report, opts.diff.format, run_id, started, true);
            Ok(())
        }
        DiffCmd::Validate(opts) => validate_as(config, opts, "diff validate").await,
    }
}

/// What a differential run does (see [`DiffGoal`]).
#[derive(Clone, Copy, Debug)]
struct Steps {
    analyze: bool,
    apply: bool,
    full: bool,
}

async fn diff_run(
    config: &Config,
    opts: &EntitiesOpts,
    command: &str,
    steps: Steps,
) -> Result<(runtime::RunId, DiffReport), Exit> {
    let Steps { analyze, apply, full } = steps;
    let goal = opts.entities.join(", ");
    let (session, goal) = start(config, command, &goal, &opts.mapping).await?;
    let run_id = session.run_id;
    if apply {
        session.operator_decision(
            format!("apply the source's changes to {}", goal.goal),
            "the operator ran agentctl diff migrate",
            json!({"goal": goal.goal, "analyze_first": analyze, "full": full}),
        );
    }
    let result = interruptible(
        async { session.diff(DiffGoal { goal, analyze, apply, full }).await.map_err(Exit::agent) },
        run_id,
    )
    .await;
    let report = end(session, result, if apply { "synchronized" } else { "analyzed" }).await?;
    Ok((run_id, report))
}

fn show(
    report: &DiffReport,
    format: Format,
    run_id: runtime::RunId,
    started: Instant,
    applied: bool,
) {
    let seconds = started.elapsed().as_secs_f64();
    if format == Format::Json {
        let applied: Vec<serde_json::Value> =
            report.applied.iter().map(|(t, a)| json!({"entity": t, "applied": a})).collect();
        print_json(
            &json!({"run_id": run_id, "analyses": report.analyses, "applied": applied, "total": report.total(), "seconds": seconds}),
        );
        return;
    }
    if !report.analyses.is_empty() {
        println!(
            "{:<24} {:>10} {:>8} {:>8} {:>8} {:>9} {:>12} {:>8} {:>10}",
            "entity",
            "source",
            "new",
            "changed",
            "deleted",
            "conflicts",
            "target-only",
            "rejected",
            "in step"
        );
        for a in &report.analyses {
            println!(
                "{:<24} {:>10} {:>8} {:>8} {:>8} {:>9} {:>12} {:>8} {:>10}",
                a.target.to_string(),
                a.source_rows,
                a.inserts,
                a.updates,
                a.deletes,
                a.conflicts,
                a.target_changed,
                a.rejected,
                a.in_step
            );
        }
        let out: i64 = report.analyses.iter().map(|a| a.out_of_step()).sum();
        let rows: i64 = report.analyses.iter().map(|a| a.source_rows).sum();
        println!("{rows} source rows compared: {out} out of step (analysis {run_id})");
    }
    if applied {
        println!(
            "\n{:<24} {:>9} {:>8} {:>8} {:>9} {:>6} {:>8} {:>6}",
            "entity", "inserted", "updated", "deleted", "conflicts", "held", "rejected", "stale"
        );
        for (t, a) in &report.applied {
            println!(
                "{:<24} {:>9} {:>8} {:>8} {:>9} {:>6} {:>8} {:>6}",
                t.name, a.inserted, a.updated, a.deleted, a.conflicted, a.held, a.rejected, a.stale
            );
        }
        let total = report.total();
        for note in &total.notes {
            println!("  {note}");
        }
        println!("{}", summary(&total));
        if total.held > 0 {
            println!(
                "{} rows held for an operator, each with its reason: `agentctl conflict report` \
                lists the conflicts and `agentctl conflict resolve` settles one; the others are \
                tried again at the next sync",
                total.held
            );
        }
    }
    println!("{seconds:.1} s (run {run_id})");
}

fn summary(t: &DiffApplied) -> String {
    format!(
        "{} inserted, {} updated, {} deleted, {} conflicts, {} held, {} rejected, {} stale",
        t.inserted, t.updated, t.deleted, t.conflicted, t.held, t.rejected, t.stale
    )
}

async fn sync_store(config: &Config) -> Result<SyncStore, Exit> {
    let conns = Connections::open(config, false).await?;
    // Opening the control store brings its schema up to date.
    tools::control::ControlStore::open(conns.target.clone()).await?;
    Ok(SyncStore::new(conns.target))
}

pub async fn conflict(config: &Config, cmd: ConflictCmd) -> Result<(), Exit> {
    match cmd {
        ConflictCmd::Report { format, all } => {
            let store = sync_store(config).await?;
            let conflicts = store.conflicts(all).await?;
            match format {
                ReportFormat::Json => {
                    print_json(&json!({"conflicts": conflicts.iter().map(|c| json!({
                    "conflict": c, "differing": c.differing().iter().map(|(n, s, t)| json!({"column": n, "source": s, "target": t})).collect::<Vec<_>>(),
                })).collect::<Vec<_>>()}))
                }
                ReportFormat::Md => print_conflicts(&conflicts, all, true),
                ReportFormat::Text => print_conflicts(&conflicts, all, false),
            }
            Ok(())
        }
        ConflictCmd::Resolve { id, take } => {
            let store = sync_store(config).await?;
            // Checked before a session starts, so a wrong number costs nothing.
            let before = store.conflict(id).await?;
            let (session, _) = start(
                config,
                "conflict resolve",
                &before.source_table,
                &MappingOpt { mapping: None },
            )
            .await?;
            let by = std::env::var("USER").unwrap_or_else(|_| "operator".into());
            let result = store.resolve(id, take == Side::Source, &by).await.map_err(Exit::from);
            if let Ok(c) = &result {
                session.operator_decision(
                    format!(
                        "conflict {id} ({} {}): took the {} values",
                        c.target_table,
                        c.legacy_key,
                        if take == Side::Source { "source's" } else { "target's" }
                    ),
                    format!("resolved by {by} with agentctl conflict resolve"),
                    json!({"conflict": c}),
                );
            }
            let c = end(session, result, "resolved").await?;
            println!(
                "conflict {id}: {} {} {}",
                c.target_table,
                c.legacy_key,
                if take == Side::Source {
                    "now holds the source's values"
                } else {
                    "keeps the target's values until the source changes it again"
                }
            );
            Ok(())
        }
    }
}

fn print_conflicts(conflicts: &[Conflict], all: bool, md: bool) {
    let open = conflicts.iter().filter(|c| c.status == "open").count();
    let (h1, h2, code) = if md { ("# ", "## ", "`") } else { ("", "", "") };
    println!("{h1}Conflicts\n");
    println!(
        "{open} held for an operator{}.\n",
        if all { format!(", {} settled", conflicts.len() - open) } else { String::new() }
    );
    for c in conflicts {
        println!(
            "{h2}#{} {} {} ({}, {})\n",
            c.conflict_id, c.target_table, c.legacy_key, c.status, c.policy
        );
        println!(
            "Detected {} by analysis {}{}.\n",
            c.detected_at.format("%Y-%m-%d %H:%M:%S UTC"),
            c.analysis_id,
            c.resolved_at
                .map(|t| format!(
                    "; resolved {} by {}",
                    t.format("%Y-%m-%d %H:%M:%S UTC"),
                    c.resolved_by.clone().unwrap_or_default()
                ))
                .unwrap_or_default()
        );
        let rows: Vec<Vec<String>> = c
            .differing()
            .into_iter()
            .map(|(column, source, target)| {
                vec![
                    column,
                    source.unwrap_or_else(|| "NULL".into()),
                    target.unwrap_or_else(|| "NULL".into()),
                ]
            })
            .collect();
        crate::proof::print_table(
            md,
            &["column", "source", "target"],
            &[false, false, false],
            &rows,
        );
        if c.status == "open" {
            println!(
                "\n{code}agentctl conflict resolve {} --take source{code} or {code}--take \
                target{code}",
                c.conflict_id
            );
        }
        println!();
    }
}

pub async fn sync(config: &Config, cmd: SyncCmd) -> Result<(), Exit> {
    match cmd {
        SyncCmd::CreateJob { name, entities, every, cron } => {
            create_job(config, &name, &entities, every, cron).await
        }
        SyncCmd::ListJobs { format } => list_jobs(config, format).await,
        SyncCmd::PauseJob { name } => pause(config, &name, false).await,
        SyncCmd::ResumeJob { name } => pause(config, &name, true).await,
        SyncCmd::DeleteJob { name } => {
            let store = sync_store(config).await?;
            store.delete_job(&name).await?;
            println!("sync job {name} deleted with its history (its runs stay in the audit trail)");
            Ok(())
        }
        SyncCmd::JobStatus { name, format } => {
            let store = sync_store(config).await?;
            let job = store.job(&name).await?;
            let runs = store.history(&name, 10).await?;
            match format {
                Format::Json => print_json(&json!({"job": job, "runs": runs})),
                Format::Text => {
                    println!(
                        "sync job {}: {} {}, next run {}{}",
                        job.name,
                        job.goal,
                        job.schedule.describe_as(job.enabled),
                        job.next_run_at.format("%Y-%m-%d %H:%M:%S UTC"),
                        match (&job.lease_owner, job.lease_expires_at) {
                            (Some(o), Some(t)) =>
                                format!("; held by {o} until {}", t.format("%H:%M:%S")),
                            _ => String::new(),
                        }
                    );
                    for r in &runs {
                        print_run(r);
                    }
                }
            }
            Ok(())
        }
        SyncCmd::RunJob { name, mapping, format } => {
            let store = sync_store(config).await?;
            let lease = Duration::from_secs(60);
            let claim = store.claim_now(&name, &owner(), lease).await?;
            let run = run_claim(config, &store, claim, &mapping, lease, None).await?;
            match format {
                Format::Json => print_json(&run),
                Format::Text => print_run(&run),
            }
            if run.outcome == "succeeded" {
                Ok(())
            } else {
                Err(Exit::failed(format!(
                    "sync job {name} {}: {}",
                    run.outcome,
                    run.detail.unwrap_or_default()
                )))
            }
        }
        SyncCmd::Daemon { poll, lease, mapping } => daemon(config, poll, lease, &mapping).await,
    }
}

/// `sync create-job`: a job that keeps the entities in step on a schedule.
async fn create_job(
    config: &Config,
    name: &str,
    entities: &[String],
    every: Option<String>,
    cron: Option<String>,
) -> Result<(), Exit> {
    let schedule = match (every, cron) {
        (Some(e), _) => Schedule::every(&e),
        (None, Some(c)) => Schedule::cron(&c),
        (None, None) => Err(runtime::error::BadInput("give --every or --cron".into())),
    }
    .map_err(Exit::config)?;
    if name.trim().is_empty() {
        return Err(Exit::config("--name: a job needs a name"));
    }
    let store = sync_store(config).await?;
    let job = store.create_job(name.trim(), &entities.join(", "), &schedule).await?;
    println!(
        "sync job {} keeps {} in step {}; first run {}",
        job.name,
        job.goal,
        job.schedule.describe(),
        job.next_run_at.to_rfc3339()
    );
    Ok(())
}

/// `sync list-jobs`: every job with its last run.
async fn list_jobs(config: &Config, format: Format) -> Result<(), Exit> {
    let store = sync_store(config).await?;
    let jobs = store.jobs().await?;
    let mut last = Vec::with_capacity(jobs.len());
    for j in &jobs {
        last.push(store.history(&j.name, 1).await?.into_iter().next());
    }
    match format {
        Format::Json => print_json(
            &json!({"jobs": jobs.iter().zip(&last).map(|(j, l)| json!({"job": j, "last_run": l})).collect::<Vec<_>>()}),
        ),
        Format::Text => {
            println!(
                "{:<20} {:<28} {:<20} {:<26} {:<12} last run",
                "job", "entities", "schedule", "next run", "running"
            );
            for (j, l) in jobs.iter().zip(&last) {
                let running = match (&j.lease_owner, j.lease_expires_at) {
                    (Some(_), Some(t)) if t > chrono::Utc::now() => "yes",
                    _ => "no",
                };
                println!(
                    "{:<20} {:<28} {:<20} {:<26} {:<12} {}",
                    j.name,
                    j.goal,
                    j.schedule.describe_as(j.enabled),
                    j.next_run_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    running,
                    l.as_ref().map(|r| r.outcome.as_str()).unwrap_or("never")
                );
            }
        }
    }
    Ok(())
}

async fn pause(config: &Config, name: &str, resume: bool) -> Result<(), Exit> {
    let store = sync_store(config).await?;
    let job = store.set_enabled(name, resume).await?;
    if resume {
        println!("sync job {} resumed: next run {}", job.name, job.next_run_at.to_rfc3339());
    } else {
        println!(
            "sync job {} paused: no scheduled run until `agentctl sync resume-job {}`",
            job.name, job.name
        );
    }
    Ok(())
}

fn print_run(r: &JobRun) {
    println!(
        "  {} {:<10} {} inserted, {} updated, {} deleted, {} conflicts, {} rejected{} (by {}{})",
        r.started_at.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default(),
        r.outcome,
        r.inserted,
        r.updated,
        r.deleted,
        r.conflicted,
        r.rejected,
        r.detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default(),
        r.owner,
        r.run_id.map(|id| format!(", run {id}")).unwrap_or_default()
    );
}

/// Who holds a lease: host, process and a random tag (a restarted daemon is someone else).
fn owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    let tag = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &tag[..8])
}

/// Runs a claimed job: a differential run that analyses and applies, its lease renewed every
/// third of its length meanwhile, and its outcome in the history. `stop` cancels it.
async fn run_claim(
    config: &Config,
    store: &SyncStore,
    claim: Claim,
    mapping: &MappingOpt,
    lease: Duration,
    stop: Option<&mut tokio::sync::watch::Receiver<bool>>,
) -> Result<JobRun, Exit> {
    if claim.abandoned > 0 {
        eprintln!(
            "agentctl: sync job {}: {} run(s) of a daemon that died marked abandoned",
            claim.job.name, claim.abandoned
        );
    }
    let heartbeat = {
        let (held, store) = (claim.clone(), store.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                match store.renew(&held, lease).await {
                    Ok(true) => {}
                    Ok(false) => eprintln!(
                        "agentctl: sync job {}: lost its lease (another daemon took it)",
                        held.job.name
                    ),
                    Err(e) => eprintln!("agentctl: sync job {}: {e}", held.job.name),
                }
            }
        })
    };
    let work = async {
        let (session, goal) = start(config, "sync", &claim.job.goal, mapping).await?;
        store.started(&claim, session.run_id.0).await?;
        let run_id = session.run_id;
        let result = interruptible(
            async {
                session
                    .diff(DiffGoal { goal, analyze: true, apply: true, full: false })
                    .await
                    .map_err(Exit::agent)
            },
            run_id,
        )
        .await;
        end(session, result, "synchronized").await
    };
    let result = match stop {
        Some(stop) => tokio::select! {
            r = work => r,
            _ = stop.changed() => Err(Exit::interrupted("stopped by a signal; every applied batch \
                is kept, the next run carries on")),
        },
        None => work.await,
    };
    heartbeat.abort();
    let (outcome, counts, detail) = match &result {
        Ok(report) => {
            let t = report.total();
            let counts = RunCounts {
                inserted: t.inserted,
                updated: t.updated,
                deleted: t.deleted,
                conflicted: t.conflicted,
                rejected: t.rejected,
            };
            ("succeeded", counts, Some(summary(&t)))
        }
        Err(e) if e.code == Exit::INTERRUPTED => {
            ("cancelled", RunCounts::default(), Some(e.message.clone()))
        }
        Err(e) => ("failed", RunCounts::default(), Some(e.message.clone())),
    };
    store.finish(&claim, outcome, &counts, detail.as_deref()).await.map_err(Exit::from)
}

async fn daemon(config: &Config, poll: f64, lease: f64, mapping: &MappingOpt) -> Result<(), Exit> {
    if !(poll > 0.0 && lease >= 1.0) {
        return Err(Exit::config("--poll must be above 0 and --lease at least 1 second"));
    }
    let (poll, lease) = (Duration::from_secs_f64(poll), Duration::from_secs_f64(lease));
    let store = sync_store(config).await?;
    let me = owner();
    // Ctrl-C or SIGTERM: the job in flight stops (its batches are whole) and the daemon ends.
    let (tx, mut stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let _ = tx.send(true);
    });
    println!(
        "sync daemon {me}: looking for due jobs every {:.1} s (leases of {:.0} s)",
        poll.as_secs_f64(),
        lease.as_secs_f64()
    );
    loop {
        if *stop.borrow() {
            break;
        }
        match store.claim_due(&me, lease).await {
            Ok(Some(claim)) => {
                let name = claim.job.name.clone();
                println!("sync daemon: running {name}");
                match run_claim(config, &store, claim, mapping, lease, Some(&mut stop)).await {
                    Ok(run) => println!(
                        "sync daemon: {name} {}: {}",
                        run.outcome,
                        run.detail.unwrap_or_default()
                    ),
                    Err(e) => eprintln!("agentctl: sync job {name}: {}", e.message),
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => eprintln!("agentctl: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = stop.changed() => {}
        }
    }
    println!("sync daemon {me}: stopped");
    Ok(())
}
