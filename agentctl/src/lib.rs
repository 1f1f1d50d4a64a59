//! The `agentctl` command: parses nothing itself (that is [`cli::Opt`]), resolves the
//! configuration, and runs one command. The library part exists so the integration tests can
//! drive a session in-process; `main.rs` only maps the result to an exit code.

pub mod audit;
pub mod chat;
pub mod cli;
pub mod dataset;
pub mod exit;
mod html;
pub mod plan_run;
pub mod proof;
pub mod sandbox_cmd;
pub mod session;
pub mod sync;

use std::future::Future;

use runtime::config::{Config, DbFlags, Vars};
use runtime::RunId;
use serde::Serialize;

use crate::cli::{Command, Opt};
use crate::exit::Exit;

pub async fn run(opt: Opt) -> Result<(), Exit> {
    let vars = Vars::load(&opt.db.env_file).map_err(Exit::config)?;
    let flags = DbFlags { source: opt.db.source.clone(), target: opt.db.target.clone() };
    let mut config = Config::resolve(&flags, &vars).map_err(Exit::config)?;
    config.llm.record = opt.llm.llm_record.clone();
    config.llm.replay = opt.llm.llm_replay.clone();
    config.llm.max_tokens_total = opt.llm.max_tokens_total;
    match opt.command {
        Command::Run(o) => plan_run::run(&config, o).await,
        Command::Plan(o) => plan_run::plan(&config, o).await,
        Command::Analyze(o) => plan_run::analyze(&config, o).await,
        Command::Profile(o) => plan_run::profile(&config, o).await,
        Command::Status(o) => audit::status(&config, o).await,
        Command::Validate(o) => proof::validate(&config, o).await,
        Command::Report(o) => proof::report(&config, o).await,
        Command::Rollback(o) => proof::rollback(&config, o).await,
        Command::Audit(cmd) => audit::audit(&config, cmd).await,
        Command::Dataset(cmd) => dataset::dataset(&config, cmd).await,
        Command::Mapping(cmd) => plan_run::mapping(&config, cmd).await,
        Command::Bench(cmd) => dataset::bench(&config, cmd).await,
        Command::Schema(cmd) => plan_run::schema(&config, cmd).await,
        Command::Demo(o) => dataset::demo(o).await,
        Command::Chat(o) => chat::chat(&config, o).await,
        Command::Llm(cmd) => chat::llm(&config, cmd).await,
        Command::Sandbox(cmd) => sandbox_cmd::sandbox(cmd).await,
        Command::Diff(cmd) => sync::diff(&config, cmd).await,
        Command::Conflict(cmd) => sync::conflict(&config, cmd).await,
        Command::Sync(cmd) => sync::sync(&config, cmd).await,
    }
}

/// Races a run's work against Ctrl-C. On Ctrl-C the work is dropped (an agent's request in
/// flight is abandoned, never half-applied) and the caller still ends the session, so the trail
/// records the cancellation and every event is written.
pub async fn interruptible<T>(
    work: impl Future<Output = Result<T, Exit>>,
    run_id: RunId,
) -> Result<T, Exit> {
    tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(Exit::interrupted(format!(
            "interrupted; run {run_id} was recorded as cancelled, every committed batch kept (a \
                batch in flight commits whole or not at all), foreign keys set aside for the \
                load stay aside until it is carried on (`agentctl status` lists them): carry it \
                on with `{}`",
            carry_on(run_id)
        ))),
    }
}

/// How an interrupted run is carried on, in words: `run` puts the exact command in its place
/// (`plan_run::with_resume`), which only it knows.
pub(crate) fn carry_on(run_id: RunId) -> String {
    format!("agentctl run --goal ... --resume {run_id}")
}

/// Prints one JSON document on stdout (the `--format json` contract).
pub fn print_json(value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("agentctl: could not render JSON: {e}"),
    }
}
