//! `agentctl plan`, `agentctl run` and `agentctl analyze`: a session that asks the orchestrator
//! for a plan (and, for `run`, an approval tied to the plan's hash).

use std::io::{BufRead, IsTerminal, Write};

use agents::orchestrator::{PlanGoal, PlanOutcome};
use agents::planning::render;
use runtime::config::{Config, DbRole};
use serde_json::json;

use crate::cli::{AnalyzeOpts, Format, PlanOpts, RunOpts};
use crate::exit::Exit;
use crate::session::{Connections, Session, SessionOptions};
use crate::{interruptible, print_json};

async fn start(config: &Config, command: &str, goal: Option<&str>) -> Result<Session, Exit> {
    let conns = Connections::open(config, true).await?;
    let tools = conns.tools()?;
    Session::start(&conns, command, goal, tools, SessionOptions::from_config(config)).await
}

/// Ends the session with the work's outcome; the work's error, if any, is what the caller sees.
async fn end<T>(session: Session, result: Result<T, Exit>, success: &str) -> Result<T, Exit> {
    let (outcome, detail) = match &result {
        Ok(_) => (success, None),
        Err(e) if e.code == Exit::INTERRUPTED => ("cancelled", Some(e.message.as_str())),
        Err(e) => ("failed", Some(e.message.as_str())),
    };
    let finished = session.finish(outcome, detail).await;
    let value = result?;
    finished?;
    Ok(value)
}

pub async fn plan(config: &Config, opts: PlanOpts) -> Result<(), Exit> {
    let session = start(config, "plan", Some(&opts.goal.goal)).await?;
    let run_id = session.run_id;
    let goal = PlanGoal { goal: opts.goal.goal.clone(), only: opts.goal.only };
    let result = interruptible(async { session.plan(goal).await.map_err(Exit::failed) }, run_id).await;
    let outcome = end(session, result, "planned").await?;
    match opts.format {
        Format::Json => {
            print_json(&json!({"run_id": run_id, "hash": outcome.hash, "plan": outcome.plan, "explanation": outcome.explanation}))
        }
        Format::Text => print_plan(&outcome),
    }
    Ok(())
}

fn print_plan(outcome: &PlanOutcome) {
    println!("{}", outcome.explanation);
    println!();
    print!("{}", render(&outcome.plan));
    for line in &outcome.plan.rationale {
        println!("  - {line}");
    }
}

pub async fn run(config: &Config, opts: RunOpts) -> Result<(), Exit> {
    let session = start(config, "run", Some(&opts.goal.goal)).await?;
    let run_id = session.run_id;
    let goal = PlanGoal { goal: opts.goal.goal.clone(), only: opts.goal.only };
    let result = interruptible(
        async {
            let outcome = session.plan(goal).await.map_err(Exit::failed)?;
            if opts.format == Format::Text {
                print_plan(&outcome);
            }
            approve(&session, &outcome, opts.yes).await?;
            // The approved plan is recorded; carrying it out is the execution agent's work,
            // which this version does not have yet.
            Err::<PlanOutcome, Exit>(Exit::failed(format!(
                "plan {} is approved and recorded in run {run_id}, but this version of agentctl cannot execute plans yet",
                &outcome.hash[..12]
            )))
        },
        run_id,
    )
    .await;
    end(session, result, "succeeded").await.map(|_| ())
}

/// Asks the operator to approve the plan, unless `--yes`; refuses without a terminal.
async fn approve(session: &Session, outcome: &PlanOutcome, yes: bool) -> Result<(), Exit> {
    let short = &outcome.hash[..12];
    if yes {
        session.operator_decision(
            format!("approved plan {short} with --yes"),
            "the operator approved in advance on the command line",
            json!({"hash": outcome.hash}),
        );
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        session.operator_decision(
            format!("plan {short} was not approved"),
            "no terminal to ask on and no --yes",
            json!({"hash": outcome.hash}),
        );
        return Err(Exit::config(format!(
            "refusing to run plan {short} without approval: there is no terminal to ask on; review it with `agentctl plan` and pass --yes"
        )));
    }
    eprint!("Approve plan {short} ({} entities, about {} rows)? [y/N] ", outcome.plan.entities().count(), outcome.plan.estimated_rows());
    let _ = std::io::stderr().flush();
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map(|_| line)
    })
    .await
    .map_err(|e| Exit::failed(format!("while reading the approval: {e}")))?
    .map_err(|e| Exit::failed(format!("while reading the approval: {e}")))?;
    if matches!(answer.trim().to_lowercase().as_str(), "y" | "yes") {
        session.operator_decision(
            format!("approved plan {short}"),
            "the operator answered yes at the prompt",
            json!({"hash": outcome.hash}),
        );
        Ok(())
    } else {
        session.operator_decision(
            format!("declined plan {short}"),
            format!("the operator answered {:?}", answer.trim()),
            json!({"hash": outcome.hash}),
        );
        Err(Exit::failed(format!("plan {short} was not approved; nothing was changed")))
    }
}

pub async fn analyze(config: &Config, opts: AnalyzeOpts) -> Result<(), Exit> {
    let session = start(config, "analyze", None).await?;
    let run_id = session.run_id;
    let side = if opts.of_target { DbRole::Target } else { DbRole::Source };
    let result = interruptible(async { session.analyze(side).await.map_err(Exit::failed) }, run_id).await;
    let report = end(session, result, "succeeded").await?;
    match opts.format {
        Format::Json => print_json(&report),
        Format::Text => {
            println!("{} ({} tables)", report.database, report.tables.len());
            for t in &report.tables {
                let fks: Vec<String> = t.foreign_keys.iter().map(|f| format!("{} -> {}", f.columns.join(","), f.references)).collect();
                println!(
                    "  {:<36} ~{:>9} rows  {:>2} columns  pk({}){}",
                    t.name.to_string(),
                    t.estimated_rows,
                    t.columns.len(),
                    t.primary_key.join(","),
                    if fks.is_empty() { String::new() } else { format!("  refs: {}", fks.join("; ")) }
                );
            }
        }
    }
    Ok(())
}
