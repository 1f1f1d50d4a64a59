//! `agentctl audit` and `agentctl status`: reading the control tables, never changing them.

use runtime::audit::{verify_chain, AuditEvent, Verification};
use runtime::config::Config;
use serde_json::{json, Value};
use tools::control::{ControlStore, EventFilter, RunRow};

use crate::cli::{AuditCmd, ExportFormat, Format, StatusOpts};
use crate::exit::Exit;
use crate::print_json;
use crate::session::Connections;

pub async fn store(config: &Config) -> Result<ControlStore, Exit> {
    let conns = Connections::open(config, false).await?;
    ControlStore::open(conns.target).await.map_err(Exit::from)
}

pub async fn audit(config: &Config, cmd: AuditCmd) -> Result<(), Exit> {
    let store = store(config).await?;
    match cmd {
        AuditCmd::List { limit, format } => {
            let runs = store.runs(limit).await?;
            match format {
                Format::Json => print_json(&runs),
                Format::Text => {
                    println!(
                        "{:<36}  {:<19}  {:<19}  {:<10}  {:>6}  command",
                        "run", "started", "ended", "outcome", "events"
                    );
                    for r in &runs {
                        println!(
                            "{:<36}  {:<19}  {:<19}  {:<10}  {:>6}  {}{}",
                            r.run_id,
                            r.started_at.format("%Y-%m-%d %H:%M:%S"),
                            r.finished_at
                                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                                .unwrap_or_else(|| "-".into()),
                            r.outcome,
                            r.event_count,
                            r.command,
                            r.goal.as_ref().map(|g| format!(" \"{g}\"")).unwrap_or_default()
                        );
                    }
                    for r in &runs {
                        if let Some(how) = resume_command(r, config) {
                            println!("run {} was interrupted; carry it on with: {how}", r.run_id);
                        }
                    }
                }
            }
        }
        AuditCmd::Show { run, agent, kind, format } => {
            let run = store.find_run(run.as_deref()).await?;
            let filter = EventFilter {
                agent: agent.map(|a| a.as_str().to_owned()),
                kind: kind.map(|k| k.as_str().to_owned()),
            };
            let events = store.events(run.run_id, &filter).await?;
            match format {
                Format::Json => print_json(
                    &json!({"run": run, "events": events.iter().map(event_json).collect::<Vec<_>>()}),
                ),
                Format::Text => {
                    print_run_header(&run, config);
                    for e in &events {
                        print!("{}", timeline_line(e));
                    }
                }
            }
        }
        AuditCmd::Export { run, format } => {
            let run = store.find_run(Some(&run)).await?;
            let events = store.events(run.run_id, &EventFilter::default()).await?;
            match format {
                ExportFormat::Jsonl => {
                    for e in &events {
                        println!("{}", event_json(e));
                    }
                }
                ExportFormat::Html => {
                    let head = store.chain_head(run.run_id).await?;
                    let entities = store.report(run.run_id).await?;
                    let rejections = store.rejection_groups(run.run_id).await?;
                    let llm = store.llm_usage(run.run_id).await?;
                    let facts =
                        crate::html::Facts { entities: &entities, rejections: &rejections, llm };
                    print!(
                        "{}",
                        crate::html::page(
                            &run,
                            &events,
                            &verify_chain(run.run_id, &events, &head),
                            &facts
                        )
                    );
                }
            }
        }
        AuditCmd::Verify { run, expect_head, format } => {
            verify(&store, run, expect_head, format).await?
        }
    }
    Ok(())
}

/// `audit verify`: each run's chain, the run ledger that chains the runs, and the runs the
/// control tables still name but `runs` no longer holds.
async fn verify(
    store: &ControlStore,
    run: Option<String>,
    expect_head: Option<String>,
    format: Format,
) -> Result<(), Exit> {
    let whole = run.is_none();
    let runs = match run {
        Some(id) => vec![store.find_run(Some(&id)).await?],
        None => store.runs(i64::MAX).await?,
    };
    let ledger = store.ledger().await?;
    let mut results: Vec<Verification> = Vec::with_capacity(runs.len());
    // Where each run's chain has to pass: the heads the ledger recorded as it ended.
    let mut rewritten: Vec<String> = Vec::new();
    for r in &runs {
        let events = store.events(r.run_id, &EventFilter::default()).await?;
        let head = store.chain_head(r.run_id).await?;
        for e in ledger.iter().filter(|e| e.run_id == r.run_id && e.event_count > 0) {
            let at = usize::try_from(e.event_count - 1).ok().and_then(|i| events.get(i));
            if at.map(|a| &a.hash) != Some(&e.head_hash) {
                rewritten.push(format!(
                    "run {}: its trail no longer passes through the head it was {} at (event #{}, \
                        {}): rewritten or cut since",
                    r.run_id, e.entry, e.event_count, e.head_hash
                ));
            }
        }
        results.push(verify_chain(r.run_id, &events, &head));
    }
    let bad = results.iter().filter(|v| v.first_bad.is_some()).count();
    let ledger_break = runtime::audit::verify_ledger(&ledger);
    let ledger_head = ledger.last().map_or(runtime::audit::GENESIS, |e| e.hash.as_str());
    // A run removed whole leaves no chain to break, but the ledger and the rows it wrote still
    // name it.
    let vanished = store.vanished_runs().await?;
    match format {
        Format::Json => print_json(
            &json!({"runs": results, "tampered": bad, "removed": vanished, "rewritten": rewritten,
            "ledger": {"entries": ledger.len(), "head": ledger_head, "first_bad": ledger_break}}),
        ),
        Format::Text => {
            print_verification(&vanished, &rewritten, &results, &ledger, ledger_break.as_ref())
        }
    }
    if let Some((id, tables)) = vanished.first() {
        return Err(Exit::failed(format!(
            "{} run(s) were removed from the audit trail; first: run {id}, still named by {}",
            vanished.len(),
            tables.join(", ")
        )));
    }
    if let Some(b) = &ledger_break {
        return Err(Exit::failed(format!(
            "the run ledger does not verify: entry #{}: {}",
            b.seq, b.reason
        )));
    }
    if let Some(expected) = expect_head.as_deref() {
        check_head(expected, whole, results.first(), &ledger)?;
    }
    if let Some(first) = rewritten.first() {
        return Err(Exit::failed(format!(
            "{} run(s) changed after they ended; first: {first}",
            rewritten.len()
        )));
    }
    if bad > 0 {
        let first = results
            .iter()
            .find_map(|v| v.first_bad.as_ref().map(|b| (v.run_id, b)))
            .expect("bad > 0");
        return Err(Exit::failed(format!(
            "the audit trail of {bad} run(s) does not verify; first: run {}, {}",
            first.0, first.1
        )));
    }
    Ok(())
}

/// What `audit verify` found, one line a finding.
fn print_verification(
    vanished: &[(String, Vec<String>)],
    rewritten: &[String],
    results: &[Verification],
    ledger: &[runtime::audit::LedgerEntry],
    ledger_break: Option<&runtime::audit::ChainBreak>,
) {
    let ledger_head = ledger.last().map_or(runtime::audit::GENESIS, |e| e.hash.as_str());
    for (id, tables) in vanished {
        println!(
            "run {id}: REMOVED: named by {}, but its record and trail are gone",
            tables.join(", ")
        );
    }
    for line in rewritten {
        println!("{line}");
    }
    for v in results {
        match &v.first_bad {
            None => println!("run {}: intact, {} events, head {}", v.run_id, v.events, v.head_hash),
            Some(b) => println!("run {}: TAMPERED at {b}", v.run_id),
        }
    }
    match ledger_break {
        None => {
            println!("run ledger: intact, {} entries, head {ledger_head}", ledger.len())
        }
        Some(b) => println!("run ledger: TAMPERED at entry #{}: {}", b.seq, b.reason),
    }
}

/// Whether the trail passes through a head kept elsewhere: with a run, that run's head;
/// without, the ledger's.
fn check_head(
    expected: &str,
    whole: bool,
    run: Option<&Verification>,
    ledger: &[runtime::audit::LedgerEntry],
) -> Result<(), Exit> {
    let expected = expected.trim().to_lowercase();
    let ledger_head = ledger.last().map_or(runtime::audit::GENESIS, |e| e.hash.as_str());
    // With a run: that run's head. Without: the ledger must pass through the head kept.
    let (what, found) = match (whole, run) {
        (false, Some(v)) => (
            format!("run {}'s trail ends at {}", v.run_id, v.head_hash),
            v.head_hash.starts_with(&expected),
        ),
        _ => (
            format!("the run ledger ends at {ledger_head}"),
            ledger.iter().any(|e| e.hash.starts_with(&expected)),
        ),
    };
    if expected.len() < 12 || !found {
        return Err(Exit::failed(format!(
            "{what}, not at the head {expected} you kept: it was rewritten or cut since"
        )));
    }
    Ok(())
}

pub async fn status(config: &Config, opts: StatusOpts) -> Result<(), Exit> {
    let store = store(config).await?;
    let run = store.find_run(opts.run.as_deref()).await?;
    let events = store.events(run.run_id, &EventFilter::default()).await?;
    let recent: Vec<&AuditEvent> = events.iter().rev().take(10).rev().collect();
    let mut progress = store.progress(run.run_id).await?;
    // An entity left loading by a run that is no longer going stopped with it.
    if run.outcome != "running" {
        for p in progress.iter_mut().filter(|p| p.state == "running") {
            p.state = run.outcome.clone();
        }
    }
    let suspended = store.suspended().await?;
    let suspended_json: Vec<Value> =
        suspended.iter().map(|(table, name, kind, run)| json!({"table": table, "name": name, "kind": kind, "run_id": run})).collect();
    match opts.format {
        Format::Json => print_json(&json!({
            "run": run,
            "entities": progress,
            "suspended_constraints": suspended_json,
            "recent_events": recent.iter().map(|e| event_json(e)).collect::<Vec<_>>(),
        })),
        Format::Text => {
            print_run_header(&run, config);
            if !progress.is_empty() {
                println!(
                    "\n  {:<24} {:<11} {:>10} {:>10} {:>8} {:>9} {:>8}  last batch",
                    "entity", "state", "read", "migrated", "kept", "rejected", "batches"
                );
                for p in &progress {
                    println!(
                        "  {:<24} {:<11} {:>10} {:>10} {:>8} {:>9} {:>8}  {}",
                        p.target_table.trim_start_matches("public."),
                        p.state,
                        p.rows_read,
                        p.migrated,
                        p.kept,
                        p.rejected,
                        p.batches,
                        p.updated_at
                            .map(|t| t.format("%H:%M:%S").to_string())
                            .unwrap_or_else(|| "-".into())
                    );
                }
                println!();
            }
            if !suspended.is_empty() {
                let names: Vec<String> = suspended
                    .iter()
                    .map(|(table, name, _, _)| format!("{name} ({table})"))
                    .collect();
                println!(
                    "  set aside for a load and not yet put back (resuming the run or `agentctl \
                        rollback` restores them): {}\n",
                    names.join(", ")
                );
            }
            for e in recent {
                print!("{}", timeline_line(e));
            }
        }
    }
    Ok(())
}

fn print_run_header(run: &RunRow, config: &Config) {
    println!(
        "run {} — agentctl {}{} — {} — started {}{}",
        run.run_id,
        run.command,
        run.goal.as_ref().map(|g| format!(" \"{g}\"")).unwrap_or_default(),
        run.outcome,
        run.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
        run.finished_at.map(|t| format!(", ended {}", t.format("%H:%M:%S"))).unwrap_or_default()
    );
    if let Some(d) = &run.outcome_detail {
        println!("  {d}");
    }
    if let Some(how) = resume_command(run, config) {
        println!("  its process is gone before it ended; carry it on with: {how}");
    }
}

/// For a run interrupted before its end (its process killed), the command that carries it on.
pub fn resume_command(run: &RunRow, config: &Config) -> Option<String> {
    (run.outcome == "interrupted" && run.command == "run")
        .then(|| resume_line(run.goal.as_deref().unwrap_or("everything"), run.run_id, config))
}

/// The command that carries a run of `goal` on, as a shell takes it, connecting as this one did.
pub fn resume_line(goal: &str, run_id: runtime::RunId, config: &Config) -> String {
    format!(
        "agentctl run --goal \"{}\" --resume {run_id}{}",
        goal.replace('"', "\\\""),
        config.as_given()
    )
}

/// `#12 14:02:03.123 planning decision planned ...`, then the rationale of a decision.
fn timeline_line(e: &AuditEvent) -> String {
    let mut line = format!(
        "#{:<4} {} {:<15} {:<8} {}\n",
        e.seq,
        e.at.format("%H:%M:%S%.3f"),
        e.agent,
        e.kind,
        e.summary
    );
    if e.kind == "decision" {
        if let Some(r) = serde_json::from_str::<Value>(&e.detail)
            .ok()
            .and_then(|d| d["rationale"].as_str().map(str::to_owned))
        {
            line.push_str(&format!("{:>35}why: {r}\n", ""));
        }
    }
    line
}

/// An event with its detail as JSON rather than as the text that was hashed.
pub fn event_json(e: &AuditEvent) -> Value {
    json!({
        "run_id": e.run_id, "seq": e.seq, "at": e.at, "agent": e.agent, "kind": e.kind,
        "correlation_id": e.correlation_id, "summary": e.summary,
        "detail": serde_json::from_str::<Value>(&e.detail).unwrap_or(Value::String(e.detail.clone())),
        "prev_hash": e.prev_hash, "hash": e.hash,
    })
}
