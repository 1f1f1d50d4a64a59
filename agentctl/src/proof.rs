//! `agentctl validate`, `agentctl report` and `agentctl rollback`: proving what a migration did,
//! telling it, and undoing it.

use std::io::{BufRead, IsTerminal, Write};

use agents::orchestrator::PlanGoal;
use agents::transform::amount;
use runtime::config::Config;
use runtime::domain::EntityValidation;
use serde_json::json;

use crate::audit::store;
use crate::cli::{EntitiesOpts, Format, ReportFormat, ReportOpts, RollbackOpts};
use crate::exit::Exit;
use crate::plan_run::{end, mapping_file};
use crate::session::{Connections, Session, SessionOptions};
use crate::{interruptible, print_json};

pub(crate) async fn start(
    config: &Config,
    command: &str,
    goal: &str,
    mapping: &crate::cli::MappingOpt,
) -> Result<(Session, PlanGoal), Exit> {
    let conns = Connections::open(config, true).await?;
    let (file, origin) = mapping_file(mapping, &conns).await?;
    let session = Session::start(
        &conns,
        command,
        Some(goal),
        conns.tools()?,
        SessionOptions::from_config(config),
    )
    .await?;
    let only = goal != "everything";
    Ok((
        session,
        PlanGoal {
            goal: goal.to_owned(),
            only,
            mapping: file,
            mapping_origin: origin,
            batch_size: None,
            unattended: false,
        },
    ))
}

fn pages(n: i64) -> String {
    match n {
        1 => "1 page".to_owned(),
        n => format!("{n} pages"),
    }
}

/// The exit for failed validations: the entities, then the first differing keys and the count.
pub fn validation_failure(results: &[&EntityValidation]) -> Option<Exit> {
    let failed: Vec<&&EntityValidation> = results.iter().filter(|v| !v.passed).collect();
    if failed.is_empty() {
        return None;
    }
    let parts: Vec<String> = failed
        .iter()
        .map(|v| {
            let keys: Vec<&str> = v.differences.iter().map(|d| d.legacy_key.as_str()).collect();
            let listed = if keys.is_empty() {
                String::new()
            } else {
                format!(
                    " (keys {}{})",
                    keys.join(", "),
                    if v.rows_differing + v.missing > keys.len() as i64 { ", ..." } else { "" }
                )
            };
            format!("{}: {}{listed}", v.target, v.detail)
        })
        .collect();
    // Rows missing, added or different are what an old database still in use does to a copy
    // read while it changed: the usual next step, which a person new to it would not guess.
    let out_of_step =
        failed.iter().any(|v| v.missing - v.held + v.extra + v.rows_differing > v.kept_differing);
    // Which side changed since the load, where the load's record of its pages tells.
    let source: i64 = failed.iter().map(|v| v.source_changed_pages).sum();
    let target: i64 = failed.iter().map(|v| v.target_changed_pages).sum();
    let mut next = String::new();
    if out_of_step && source > 0 {
        next.push_str(&format!(
            "; the old database changed after the load read it ({} read otherwise now): \
                `agentctl diff analyze` lists its changes and `agentctl diff migrate` carries them \
                over",
            pages(source)
        ));
    }
    if out_of_step && target > 0 {
        next.push_str(&format!(
            "; the new database changed after the load wrote it ({} whose rows are not what \
                the load wrote, the old rows read as they were): something other than agentctl \
                wrote to it, and `agentctl diff analyze` lists those rows",
            pages(target)
        ));
    }
    match (out_of_step, source + target > 0) {
        (true, true) => next.push_str("; then run `agentctl validate` again"),
        (true, false) => next.push_str(
            "; if the old database changed after it was read (it was in use), `agentctl diff \
                analyze` lists its changes and `agentctl diff migrate` carries them over; then \
                run `agentctl validate` again",
        ),
        (false, _) => {}
    }
    // Rows a sync held wait for what their reasons ask, not for another sync.
    let held: i64 = failed.iter().map(|v| v.held).sum();
    if held > 0 {
        next.push_str(&format!(
            "; the last sync held {held} of the missing rows for an operator, each for the reason \
                shown with its key: do what it asks, then `agentctl diff migrate` puts them in"
        ));
    }
    Some(Exit {
        code: Exit::VALIDATION,
        message: format!(
            "validation failed for {} entities: {}{next}",
            failed.len(),
            parts.join("; ")
        ),
    })
}

pub fn print_validations(results: &[&EntityValidation]) {
    println!(
        "\n{:<24} {:>10} {:>10} {:>9} {:>6} {:>8} {:>7} {:>9}  result",
        "entity", "source", "migrated", "rejected", "kept", "differ", "orphans", "links"
    );
    for v in results {
        let orphans: i64 = v.orphans.iter().map(|o| o.count).sum();
        let links: i64 = v.links.iter().map(|l| l.target).sum();
        println!(
            "{:<24} {:>10} {:>10} {:>9} {:>6} {:>8} {:>7} {:>9}  {}",
            v.target.to_string(),
            v.source_rows,
            v.migrated,
            v.rejected,
            v.kept,
            v.rows_differing + v.missing,
            orphans,
            links,
            if v.passed { "passed" } else { "FAILED" }
        );
        for l in v.links.iter().filter(|l| l.source != l.target) {
            println!(
                "  {:<22} links of {} to {}: source {} target {} (DIFFERENT)",
                "",
                l.columns.join(", "),
                l.parent,
                l.source,
                l.target
            );
        }
        for m in &v.money {
            println!(
                "  {:<22} money {}: source {} target {}{}",
                "",
                m.column,
                amount(m.source_cents),
                amount(m.target_cents),
                if m.source_cents == m.target_cents { " (equal)" } else { " (DIFFERENT)" }
            );
        }
        for d in &v.differences {
            println!(
                "  {:<22} key {}: {} expected {} found {}",
                "",
                d.legacy_key,
                d.column,
                d.expected.as_deref().unwrap_or("NULL"),
                d.found.as_deref().unwrap_or("NULL")
            );
        }
    }
}

pub async fn validate(config: &Config, opts: EntitiesOpts) -> Result<(), Exit> {
    validate_as(config, opts, "validate").await
}

/// `validate`, recorded as `command` (`diff validate` checks the same after applying changes).
pub async fn validate_as(config: &Config, opts: EntitiesOpts, command: &str) -> Result<(), Exit> {
    let goal = opts.entities.join(", ");
    let (session, goal) = start(config, command, &goal, &opts.mapping).await?;
    let run_id = session.run_id;
    let started = std::time::Instant::now();
    let result = interruptible(
        async {
            let results = session.validate(goal).await.map_err(Exit::agent)?;
            let refs: Vec<&EntityValidation> = results.iter().collect();
            match validation_failure(&refs) {
                Some(e) => {
                    show_validations(&results, opts.format, run_id, started);
                    Err(e)
                }
                None => Ok(results),
            }
        },
        run_id,
    )
    .await;
    let results = end(session, result, "validated").await?;
    show_validations(&results, opts.format, run_id, started);
    Ok(())
}

fn show_validations(
    results: &[EntityValidation],
    format: Format,
    run_id: runtime::RunId,
    started: std::time::Instant,
) {
    match format {
        Format::Json => print_json(
            &json!({"run_id": run_id, "passed": results.iter().all(|v| v.passed), "entities": results,
            "seconds": started.elapsed().as_secs_f64()}),
        ),
        Format::Text => {
            print_validations(&results.iter().collect::<Vec<_>>());
            let rows: i64 = results.iter().map(|v| v.source_rows).sum();
            println!(
                "{rows} source rows validated in {:.1} s (run {run_id})",
                started.elapsed().as_secs_f64()
            );
        }
    }
}

pub async fn rollback(config: &Config, opts: RollbackOpts) -> Result<(), Exit> {
    let goal = if opts.all { "everything".to_owned() } else { opts.entities.join(", ") };
    let target_location = config.target().map_err(Exit::config)?.location();
    if !opts.yes {
        confirm(&format!(
            "Delete every row agentctl migrated of {goal} from {target_location}? \
            Rows it did not create stay. [y/N] "
        ))?;
    }
    let (session, goal) = start(config, "rollback", &goal, &opts.mapping).await?;
    let run_id = session.run_id;
    session.operator_decision(
        format!("roll back {}", goal.goal),
        if opts.yes { "approved with --yes" } else { "the operator answered yes at the prompt" },
        json!({"goal": goal.goal, "target": target_location}),
    );
    let result =
        interruptible(async { session.rollback(goal).await.map_err(Exit::agent) }, run_id).await;
    let done = end(session, result, "rolled back").await?;
    match opts.format {
        Format::Json => print_json(&json!({"run_id": run_id, "entities": done})),
        Format::Text => {
            println!("{:<24} {:>10} {:>10}", "entity", "deleted", "kept");
            for d in &done {
                println!("{:<24} {:>10} {:>10}", d.target.to_string(), d.deleted, d.kept);
            }
            let deleted: i64 = done.iter().map(|d| d.deleted).sum();
            println!(
                "deleted {deleted} rows agentctl had created, children first, in one \
                transaction (run {run_id})"
            );
        }
    }
    Ok(())
}

/// Asks on the terminal; no terminal, no yes.
fn confirm(question: &str) -> Result<(), Exit> {
    if !std::io::stdin().is_terminal() {
        return Err(Exit::config(
            "refusing to delete without confirmation: there is no terminal to ask on; pass --yes",
        ));
    }
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Exit::failed(format!("while reading the answer: {e}")))?;
    if matches!(line.trim().to_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(Exit::failed("not confirmed; nothing was deleted"))
    }
}

/// The source tables the run's plan left out, with why, from the planning agent's last decision
/// in the run's trail (the plan it made).
async fn left_out(
    store: &tools::control::ControlStore,
    run: runtime::RunId,
) -> Result<Vec<runtime::domain::LeftOut>, Exit> {
    let filter = tools::control::EventFilter {
        agent: Some("planning".into()),
        kind: Some("decision".into()),
    };
    let events = store.events(run, &filter).await?;
    Ok(events
        .iter()
        .rev()
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(&e.detail).ok())
        .find_map(|d| {
            d.get("detail").and_then(|p| {
                p.get("waves").map(|_| p.get("left_out").cloned().unwrap_or_default())
            })
        })
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default())
}

pub async fn report(config: &Config, opts: ReportOpts) -> Result<(), Exit> {
    let store = store(config).await?;
    let run = match &opts.run {
        Some(id) => store.find_run(Some(id)).await,
        None => store.latest_run("run").await,
    }?;
    let entities = store.report(run.run_id).await?;
    let rejections = store.rejection_groups(run.run_id).await?;
    let (llm_calls, prompt_tokens, completion_tokens, cost) = store.llm_usage(run.run_id).await?;
    let left_out = left_out(&store, run.run_id).await?;
    let totals = tools::control::Totals::of(&entities);
    let (source, migrated, rejected) = (totals.source_rows, totals.migrated, totals.rejected);
    let wall = run.finished_at.unwrap_or_else(chrono::Utc::now) - run.started_at;
    let wall = wall.num_milliseconds() as f64 / 1000.0;
    let rate = |n: i64, d: i64| if d == 0 { 100.0 } else { n as f64 * 100.0 / d as f64 };
    match opts.format {
        ReportFormat::Json => print_json(&json!({
            "run": run, "entities": entities, "left_out": left_out, "rejections": rejections,
            "totals": {"source_rows": source, "migrated": migrated, "kept": totals.kept, "rejected": rejected,
                "success_rate": rate(totals.in_target(), source), "accounted": totals.accounted(), "wall_seconds": wall},
            "llm": {"calls": llm_calls, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "cost_usd": cost},
        })),
        ReportFormat::Md | ReportFormat::Text => {
            let md = opts.format == ReportFormat::Md;
            let strong = |s: String| if md { format!("**{s}**") } else { s };
            println!("{}Migration report, run {}\n", if md { "# " } else { "" }, run.run_id);
            let command = format!(
                "agentctl {}{}",
                run.command,
                run.goal.as_ref().map(|g| format!(" --goal \"{g}\"")).unwrap_or_default()
            );
            println!(
                "{}, {} to {}, outcome {}.\n",
                if md { format!("`{command}`") } else { command },
                run.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                run.finished_at
                    .map(|t| t.format("%H:%M:%S").to_string())
                    .unwrap_or_else(|| "(still running)".into()),
                strong(run.outcome.clone())
            );
            let rows = entity_rows(&entities, &totals, wall, md);
            let header = [
                "entity",
                "migrated / source",
                "success",
                "rejected",
                "money preserved",
                "validation",
                "seconds",
                "rows/s",
            ];
            print_table(md, &header, &[false, true, true, true, false, false, true, true], &rows);
            print_left_out(md, &left_out);
            let whose = if left_out.iter().all(|l| l.merged) {
                "Every source row"
            } else {
                "Every row of the entities above"
            };
            println!(
                "\n{whose} is {}: {source} = {migrated} migrated{} + {rejected} rejected.",
                if totals.accounted() { "accounted for" } else { "NOT accounted for" },
                runtime::domain::kept_term(totals.kept)
            );
            if llm_calls > 0 {
                println!(
                    "\nThe language model was asked {llm_calls} times: {prompt_tokens} prompt and \
                        {completion_tokens} completion tokens{} (each call is in the audit \
                        trail).",
                    cost.map(|c| format!(", about ${c:.4}")).unwrap_or_default()
                );
            }
            print_rejections(md, &rejections, run.run_id);
        }
    }
    Ok(())
}

/// The report's table rows: one an entity, then the totals.
fn entity_rows(
    entities: &[tools::control::ReportEntity],
    totals: &tools::control::Totals,
    wall: f64,
    md: bool,
) -> Vec<Vec<String>> {
    // Rows kept from before agentctl are in the target but not agentctl's: said apart.
    let in_target = |migrated: i64, kept: i64| match kept {
        0 => migrated.to_string(),
        kept => format!("{migrated} + {kept} kept"),
    };
    let rate = |n: i64, d: i64| if d == 0 { 100.0 } else { n as f64 * 100.0 / d as f64 };
    let strong = |s: String| if md { format!("**{s}**") } else { s };
    let mut rows: Vec<Vec<String>> = entities
        .iter()
        .map(|e| {
            vec![
                e.target_table.trim_start_matches("public.").to_owned(),
                format!("{} / {}", in_target(e.migrated, e.kept), e.source_rows),
                format!("{:.3}%", rate(e.migrated + e.kept, e.source_rows)),
                e.rejected.to_string(),
                money_cell(e.money.as_ref()),
                match e.validated {
                    Some(true) => "passed",
                    Some(false) => "FAILED",
                    None => "not validated",
                }
                .to_owned(),
                format!("{:.1}", e.seconds),
                format!("{:.0}", e.source_rows as f64 / e.seconds.max(1e-3)),
            ]
        })
        .collect();
    rows.push(vec![
        strong("total".into()),
        strong(format!("{} / {}", in_target(totals.migrated, totals.kept), totals.source_rows)),
        strong(format!("{:.3}%", rate(totals.in_target(), totals.source_rows))),
        strong(totals.rejected.to_string()),
        String::new(),
        String::new(),
        format!("{wall:.1} (wall)"),
        format!("{:.0}", totals.source_rows as f64 / wall.max(1e-3)),
    ]);
    rows
}

/// The rejections, grouped by table and rule, with an example reason and keys of each.
fn print_rejections(
    md: bool,
    rejections: &[tools::control::RejectionGroup],
    run_id: runtime::RunId,
) {
    if rejections.is_empty() {
        return;
    }
    println!("\n{}Rejections by reason\n", if md { "## " } else { "" });
    let rows: Vec<Vec<String>> = rejections
        .iter()
        .map(|g| {
            vec![
                g.source_table.trim_start_matches("public.").to_owned(),
                g.rule.clone(),
                g.count.to_string(),
                g.example_reason.clone(),
                g.example_keys.join(", "),
            ]
        })
        .collect();
    print_table(
        md,
        &["table", "rule", "rows", "example reason", "example keys"],
        &[false, false, true, false, false],
        &rows,
    );
    let table = if md { "`agentctl.rejected_rows`" } else { "agentctl.rejected_rows" };
    println!("\nEach rejected row, with its source row, is in {table} (run {}).", run_id);
}

/// Every source table that is no entity, with its outcome: every source table has one.
fn print_left_out(md: bool, left_out: &[runtime::domain::LeftOut]) {
    for l in left_out {
        let how = if l.merged { "its rows are in another entity's" } else { "not migrated" };
        match md {
            true => {
                println!(
                    "| {} | {how}: {} | | | | | | |",
                    l.table.to_string().replace('|', "\\|"),
                    l.reason.replace('|', "\\|")
                )
            }
            false => println!("{}: {how}: {}", l.table, l.reason),
        }
    }
}

/// A table as Markdown, or with its columns aligned for a terminal (`right`: which columns
/// are numbers, aligned right).
pub(crate) fn print_table(md: bool, header: &[&str], right: &[bool], rows: &[Vec<String>]) {
    if md {
        let cell = |s: &str| s.replace('|', "\\|");
        println!("| {} |", header.join(" | "));
        println!(
            "| {} |",
            right.iter().map(|&r| if r { "---:" } else { "---" }).collect::<Vec<_>>().join(" | ")
        );
        for row in rows {
            println!("| {} |", row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | "));
        }
        return;
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .zip(right)
            .map(|((c, &w), &r)| if r { format!("{c:>w$}") } else { format!("{c:<w$}") })
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(&header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>());
    line(&widths.iter().map(|&w| "-".repeat(w)).collect::<Vec<_>>());
    for row in rows {
        line(row);
    }
}

fn money_cell(money: Option<&serde_json::Value>) -> String {
    let Some(cols) = money.and_then(|m| m.as_array()) else { return "-".into() };
    if cols.is_empty() {
        return "-".into();
    }
    cols.iter()
        .map(|m| {
            let (s, t) =
                (m["source_cents"].as_i64().unwrap_or(0), m["target_cents"].as_i64().unwrap_or(-1));
            format!(
                "{} {}{}",
                m["column"].as_str().unwrap_or(""),
                amount(t),
                if s == t { " ✓" } else { " ✗ (source differs)" }
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}
