//! `agentctl plan`, `agentctl run` and `agentctl analyze`: a session that asks the orchestrator
//! for a plan (and, for `run`, an approval tied to the plan's hash).

use std::io::{BufRead, IsTerminal, Write};
use std::sync::{Arc, Mutex};

use agents::data_mapping;
use agents::orchestrator::{PlanGoal, PlanOutcome};
use agents::planning::render;
use runtime::config::{Config, DbRole};
use runtime::mapping::MappingFile;
use serde_json::json;

use crate::cli::{
    AnalyzeOpts, Format, GoalOpts, MappingCmd, MappingOpt, PlanOpts, ProfileOpts, RunOpts,
    SchemaCmd,
};
use crate::exit::Exit;
use crate::session::{Connections, Execution, Session, SessionOptions};
use crate::{interruptible, print_json};

/// The reference database's own mapping, built in so the demo and the tests need no file.
pub const DISPATCH_MAPPING: &str = include_str!("../../mappings/dispatch.toml");

/// The mapping rules for this source: the file named, else the built-in one when the source is
/// the reference dataset, else none (everything inferred).
pub async fn mapping_file(
    opt: &MappingOpt,
    conns: &Connections,
) -> Result<(MappingFile, String), Exit> {
    if let Some(path) = &opt.mapping {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Exit::config(format!("reading the mapping file {}: {e}", path.display()))
        })?;
        let origin = path.display().to_string();
        let mut file = MappingFile::parse(&text, &origin).map_err(Exit::config)?;
        file.load_scripts(path.parent().unwrap_or(std::path::Path::new(".")), &origin)
            .map_err(Exit::config)?;
        return Ok((file, origin));
    }
    let source = conns
        .source
        .as_ref()
        .ok_or_else(|| Exit::config("this command needs the source database"))?;
    if tools::dataset::stamp(source).await?.is_some() {
        let origin = "the built-in mappings/dispatch.toml".to_owned();
        return Ok((MappingFile::parse(DISPATCH_MAPPING, &origin).map_err(Exit::failed)?, origin));
    }
    Ok((MappingFile::default(), "inferred (no mapping file)".into()))
}

async fn start(
    config: &Config,
    command: &str,
    goal: Option<&str>,
    mapping: &MappingOpt,
) -> Result<(Session, MappingFile, String), Exit> {
    start_or_resume(config, command, goal, mapping, None).await
}

async fn start_or_resume(
    config: &Config,
    command: &str,
    goal: Option<&str>,
    mapping: &MappingOpt,
    resume: Option<String>,
) -> Result<(Session, MappingFile, String), Exit> {
    let conns = Connections::open(config, true).await?;
    let (file, origin) = mapping_file(mapping, &conns).await?;
    let tools = conns.tools()?;
    let options = SessionOptions { resume, ..SessionOptions::from_config(config) };
    let session = Session::start(&conns, command, goal, tools, options).await?;
    Ok((session, file, origin))
}

fn plan_goal(
    goal: &GoalOpts,
    config: &Config,
    mapping: MappingFile,
    mapping_origin: String,
    unattended: bool,
) -> PlanGoal {
    PlanGoal {
        goal: goal.goal.clone(),
        only: goal.only,
        mapping,
        mapping_origin,
        batch_size: config.batch_size,
        unattended,
    }
}

/// Ends the session with the work's outcome; the work's error, if any, is what the caller sees.
pub async fn end<T>(session: Session, result: Result<T, Exit>, success: &str) -> Result<T, Exit> {
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

/// A run that stopped after it began to load (interrupted, or failed on a fault of the system)
/// ends with the exact command that carries it on.
async fn with_resume(
    mut e: Exit,
    store: &tools::control::ControlStore,
    goal: &str,
    run_id: runtime::RunId,
    config: &Config,
) -> Exit {
    let command = crate::audit::resume_line(goal, run_id, config);
    match e.code {
        Exit::INTERRUPTED => e.message = e.message.replace(&crate::carry_on(run_id), &command),
        Exit::FAILED if store.progress(run_id).await.is_ok_and(|p| !p.is_empty()) => {
            e.message =
                format!("{}; once the cause is fixed, carry it on with: {command}", e.message);
        }
        _ => {}
    }
    e
}

pub async fn plan(config: &Config, opts: PlanOpts) -> Result<(), Exit> {
    let (session, file, origin) =
        start(config, "plan", Some(&opts.goal.goal), &opts.goal.mapping).await?;
    let run_id = session.run_id;
    let goal = plan_goal(&opts.goal, config, file, origin, false);
    let result =
        interruptible(async { session.plan(goal).await.map_err(Exit::agent) }, run_id).await;
    let outcome = end(session, result, "planned").await?;
    match opts.format {
        Format::Json => print_json(&json!({
            "run_id": run_id,
            "hash": outcome.hash,
            "plan": outcome.plan,
            "rollback_order": outcome.plan.rollback_order(),
            "expected": {"migrated": outcome.plan.expected_migrated(), "rejected": outcome.plan.expected_rejected()},
            "explanation": outcome.explanation,
        })),
        Format::Text => print_plan(&outcome),
    }
    Ok(())
}

/// The custom transforms of these tables (all when `None`), as tried on sample rows.
fn print_previews(
    set: &runtime::mapping::MappingSet,
    tables: Option<&[&runtime::domain::TableName]>,
) {
    for (table, preview) in &set.previews {
        if tables.is_some_and(|t| !t.contains(&table)) {
            continue;
        }
        if let Some(spec) = set.spec(table) {
            println!("{}", agents::code::render_preview(spec, preview));
        }
    }
}

fn print_plan(outcome: &PlanOutcome) {
    println!("{}", outcome.explanation);
    println!();
    let planned: Vec<&runtime::domain::TableName> =
        outcome.plan.entities().map(|e| &e.table).collect();
    print_previews(&outcome.mappings, Some(&planned));
    print!("{}", render(&outcome.plan));
    for line in &outcome.plan.rationale {
        println!("  - {line}");
    }
}

pub async fn run(config: &Config, opts: RunOpts) -> Result<(), Exit> {
    let (session, file, origin) = start_or_resume(
        config,
        "run",
        Some(&opts.goal.goal),
        &opts.goal.mapping,
        opts.resume.clone(),
    )
    .await?;
    let run_id = session.run_id;
    let store = session.store.clone();
    // Approved ahead, the plan is not waited on: it skips the forecast nobody would read.
    let goal = plan_goal(&opts.goal, config, file, origin, opts.yes);
    let result = interruptible(
        async {
            let outcome = session.plan(goal).await.map_err(Exit::agent)?;
            if opts.format == Format::Text {
                print_plan(&outcome);
            }
            approve(&session, &outcome, opts.yes, opts.approve.as_deref()).await?;
            let progress = Progress::show(&session, opts.format);
            let how = Execution {
                jobs: usize::from(opts.jobs),
                suspend_constraints: !opts.keep_constraints,
                validate: !opts.skip_validation,
            };
            let started = std::time::Instant::now();
            let results = session.execute(&outcome, how).await.map_err(Exit::agent);
            let execute_seconds = started.elapsed().as_secs_f64();
            drop(progress);
            let results = results?;
            let validations: Vec<&runtime::domain::EntityValidation> =
                results.iter().filter_map(|r| r.validation.as_ref()).collect();
            if let Some(failed) = crate::proof::validation_failure(&validations) {
                show_results(&outcome, &results, run_id, opts.format, execute_seconds, config);
                return Err(failed);
            }
            Ok::<_, Exit>((outcome, results, execute_seconds))
        },
        run_id,
    )
    .await;
    let ended = end(session, result, "succeeded").await;
    let (outcome, results, execute_seconds) = match ended {
        Ok(done) => done,
        Err(e) => return Err(with_resume(e, &store, &opts.goal.goal, run_id, config).await),
    };
    show_results(&outcome, &results, run_id, opts.format, execute_seconds, config);
    // The trail's head, to keep outside the database: `audit verify RUN --expect-head HASH`
    // then tells a trail that was rewritten or cut since.
    if opts.format == Format::Text {
        let head = store.chain_head(run_id).await?;
        println!(
            "Audit trail head: {} (keep it elsewhere; agentctl audit verify {run_id} \
                --expect-head {}{})",
            head.head_hash,
            head.head_hash,
            config.target().map(|t| t.as_given()).unwrap_or_default()
        );
    }
    Ok(())
}

fn show_results(
    outcome: &PlanOutcome,
    results: &[agents::execution::EntityResult],
    run_id: runtime::RunId,
    format: Format,
    execute_seconds: f64,
    config: &Config,
) {
    match format {
        Format::Json => print_json(
            &json!({"run_id": run_id, "hash": outcome.hash, "entities": results, "left_out": outcome.plan.left_out, "execute_seconds": execute_seconds}),
        ),
        Format::Text => {
            print_results(results, &outcome.plan.left_out, run_id);
            let validations: Vec<&runtime::domain::EntityValidation> =
                results.iter().filter_map(|r| r.validation.as_ref()).collect();
            if !validations.is_empty() {
                crate::proof::print_validations(&validations);
            }
            println!(
                "The report: agentctl report {run_id}{}",
                config.target().map(|t| t.as_given()).unwrap_or_default()
            );
        }
    }
}

/// Progress while entities migrate: on a terminal, one bar per running entity (rows, rows/s,
/// ETA); otherwise a plain line per entity at most every five seconds, and when it is done.
/// Dropped (the work done, failed or interrupted), it stops and takes its bars off the screen,
/// so that what is printed next is the last thing there.
struct Progress {
    task: tokio::task::JoinHandle<()>,
    bars: indicatif::MultiProgress,
    /// Held while a line is drawn; set once the bars are gone. The drawing task may still be
    /// running on another thread when it is aborted: it draws nothing after this is set.
    stopped: Arc<Mutex<bool>>,
}

impl Drop for Progress {
    fn drop(&mut self) {
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        *stopped = true;
        let _ = self.bars.clear();
        // The task's bars draw themselves once more when they are dropped, whenever the
        // aborted task is: by then they draw nowhere.
        self.bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        self.task.abort();
    }
}

impl Progress {
    fn show(session: &Session, format: Format) -> Progress {
        let bars = indicatif::MultiProgress::new();
        let stopped = Arc::new(Mutex::new(false));
        let events = session.ctx.events.subscribe();
        let task = tokio::spawn(draw(events, bars.clone(), stopped.clone(), format));
        Progress { task, bars, stopped }
    }
}

/// Draws [`Progress`] from the run's events until it is dropped.
async fn draw(
    mut events: tokio::sync::broadcast::Receiver<runtime::events::RunEvent>,
    bars: indicatif::MultiProgress,
    stopped: Arc<Mutex<bool>>,
    format: Format,
) {
    if format != Format::Text {
        return;
    }
    let terminal = std::io::stderr().is_terminal();
    // Rows a second as the summary prints them: a whole number.
    let style = indicatif::ProgressStyle::with_template(
        "  {prefix:<22} [{bar:30}] {human_pos:>10}/{human_len:<10} {rate:>14} ETA {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .with_key("rate", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = w.write_fmt(format_args!("{:.0} rows/s", state.per_sec()));
    })
    .progress_chars("=> ");
    // Without a forecast (a run approved ahead) the total is not known: rows and rate only.
    let counting = style.clone().template("  {prefix:<22} {human_pos:>10} rows {rate:>14}");
    let counting = counting.unwrap_or_else(|_| style.clone());
    let mut shown: std::collections::HashMap<String, (indicatif::ProgressBar, std::time::Instant)> =
        Default::default();
    while let Ok(e) = events.recv().await {
        let runtime::events::RunEvent::Progress { entity, rows_done, rows_total, .. } = e else {
            continue;
        };
        let done = rows_total.is_some_and(|t| rows_done >= t);
        let stopped = stopped.lock().unwrap_or_else(|e| e.into_inner());
        if *stopped {
            return;
        }
        if terminal {
            let (bar, _) = shown.entry(entity.clone()).or_insert_with(|| {
                let bar = bars.add(
                    indicatif::ProgressBar::new(rows_total.unwrap_or(0))
                        .with_style(if rows_total.is_some() { &style } else { &counting }.clone())
                        .with_prefix(entity.clone()),
                );
                (bar, std::time::Instant::now())
            });
            bar.set_position(rows_done);
            if let (true, Some(total)) = (done, rows_total) {
                bar.set_length(total);
                bar.finish();
            }
        } else {
            let now = std::time::Instant::now();
            let last = shown.get(&entity).map(|(_, at)| *at);
            if done
                || last.is_none_or(|at| now.duration_since(at) >= std::time::Duration::from_secs(5))
            {
                eprintln!(
                    "  {entity}: {rows_done}{} rows read",
                    rows_total.map(|t| format!(" of {t}")).unwrap_or_default()
                );
                shown.insert(entity, (indicatif::ProgressBar::hidden(), now));
            }
        }
    }
}

pub fn print_results(
    results: &[agents::execution::EntityResult],
    left_out: &[runtime::domain::LeftOut],
    run_id: runtime::RunId,
) {
    // The kept column only where a row was kept: the common case reads as before.
    let any_kept = results.iter().any(|r| r.kept > 0);
    let kept_cell = |n: i64| if any_kept { format!(" {n:>8}") } else { String::new() };
    println!(
        "\n{:<24} {:>10} {:>10}{} {:>9} {:>8} {:>10}",
        "entity",
        "source",
        "migrated",
        if any_kept { format!(" {:>8}", "kept") } else { String::new() },
        "rejected",
        "seconds",
        "rows/s"
    );
    let (mut read, mut migrated, mut kept, mut rejected, mut seconds) = (0, 0, 0, 0, 0.0);
    for r in results {
        let name = r.target.as_ref().map(ToString::to_string).unwrap_or_default();
        println!(
            "{name:<24} {:>10} {:>10}{} {:>9} {:>8.2} {:>10.0}",
            r.rows_read,
            r.migrated,
            kept_cell(r.kept),
            r.rejected,
            r.seconds,
            r.rows_read as f64 / r.seconds.max(1e-6)
        );
        read += r.rows_read;
        migrated += r.migrated;
        kept += r.kept;
        rejected += r.rejected;
        seconds += r.seconds;
    }
    println!(
        "{:<24} {read:>10} {migrated:>10}{} {rejected:>9} {seconds:>8.2} {:>10.0}",
        "total",
        kept_cell(kept),
        read as f64 / f64::max(seconds, 1e-6)
    );
    // Every source table has an outcome: the ones above, or left out for the reason given.
    let mut by_reason: std::collections::BTreeMap<&str, Vec<String>> =
        std::collections::BTreeMap::new();
    for l in left_out {
        by_reason.entry(l.reason.as_str()).or_default().push(l.table.to_string());
    }
    for (reason, tables) in &by_reason {
        match left_out.iter().any(|l| l.merged && l.reason == *reason) {
            true => println!("{reason}: {}", tables.join(", ")),
            false => println!("not migrated ({reason}): {}", tables.join(", ")),
        }
    }
    let whose = match left_out.iter().all(|l| l.merged) {
        true => "every source row".to_owned(),
        false => format!("every row of the {} tables above", results.len()),
    };
    let kept = runtime::domain::kept_term(kept);
    println!(
        "{whose} is accounted for: {read} = {migrated} migrated{kept} + {rejected} rejected \
        (agentctl.rejected_rows, run {run_id})"
    );
    if any_kept {
        println!(
            "Kept rows were in the new database before agentctl, under ids of their own: \
            agentctl never overwrites them, and only validation compares them with the old rows."
        );
    }
}

/// Who approves: the operating system's user running agentctl.
fn operator() -> String {
    let named =
        ["USER", "LOGNAME"].iter().find_map(|v| std::env::var(v).ok().filter(|n| !n.is_empty()));
    named.unwrap_or_else(|| {
        let uid = nix::unistd::getuid();
        nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map_or_else(|| format!("uid {uid}"), |u| u.name)
    })
}

/// Asks the operator to approve the plan, unless `--yes` or `--approve HASH`; refuses without a
/// terminal. An approval given by hash holds only for that exact plan.
async fn approve(
    session: &Session,
    outcome: &PlanOutcome,
    yes: bool,
    approved: Option<&str>,
) -> Result<(), Exit> {
    let short = &outcome.hash[..12];
    if let Some(h) = approved {
        let h = h.trim().to_lowercase();
        if h.len() >= 12 && outcome.hash.starts_with(&h) {
            session.operator_decision(
                format!("approved plan {short} by its hash"),
                "the hash given with --approve is this plan's",
                json!({"hash": outcome.hash, "by": operator()}),
            );
            return Ok(());
        }
        session.operator_decision(
            format!("the approval of plan {h} does not hold"),
            format!(
                "the plan is now {short}: the data, the schemas or the mapping changed since \
                it was approved"
            ),
            json!({"approved": h, "hash": outcome.hash}),
        );
        return Err(Exit::failed(format!(
            "the plan changed since it was approved (approved {h}, now {short}): review it again \
                with `agentctl plan` and approve the new hash"
        )));
    }
    if yes {
        session.operator_decision(
            format!("approved plan {short} with --yes"),
            "the operator approved in advance on the command line",
            json!({"hash": outcome.hash, "by": operator()}),
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
            "refusing to run plan {short} without approval: there is no terminal to ask on; \
                review it with `agentctl plan` and pass --yes"
        )));
    }
    eprint!(
        "Approve plan {short} ({} entities, about {} rows)? [y/N] ",
        outcome.plan.entities().count(),
        outcome.plan.estimated_rows()
    );
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
            json!({"hash": outcome.hash, "by": operator()}),
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
    let report = match (config.target(), opts.of_target) {
        // The source alone: read, printed, and recorded nowhere, for there is no target yet to
        // keep an audit trail in.
        (Err(_), false) => {
            let url = config.source().map_err(Exit::config)?;
            let pool = tools::pg::connect(url, 2).await.map_err(Exit::config)?;
            let catalog = tools::catalog::PgCatalog::new(pool, url.location());
            let report = runtime::ports::Catalog::introspect(&catalog, opts.exact_counts).await?;
            eprintln!(
                "note: no target database is configured, so this analysis is in no audit trail"
            );
            report
        }
        _ => {
            let (session, _, _) = start(config, "analyze", None, &MappingOpt::default()).await?;
            let run_id = session.run_id;
            let side = if opts.of_target { DbRole::Target } else { DbRole::Source };
            let result = interruptible(
                async { session.analyze(side, opts.exact_counts).await.map_err(Exit::agent) },
                run_id,
            )
            .await;
            end(session, result, "succeeded").await?
        }
    };
    match opts.format {
        Format::Json => print_json(&report),
        Format::Text => {
            println!("{} ({} tables)", report.database, report.tables.len());
            for t in &report.tables {
                let fks: Vec<String> = t
                    .foreign_keys
                    .iter()
                    .map(|f| format!("{} -> {}", f.columns.join(","), f.references))
                    .collect();
                println!(
                    "  {:<36} ~{:>9} rows  {:>2} columns  pk({}){}",
                    t.name.to_string(),
                    t.estimated_rows,
                    t.columns.len(),
                    t.primary_key.join(","),
                    if fks.is_empty() {
                        String::new()
                    } else {
                        format!("  refs: {}", fks.join("; "))
                    }
                );
            }
            for loose in report.loose_references() {
                println!("  note: {loose}");
            }
        }
    }
    Ok(())
}

pub async fn profile(config: &Config, opts: ProfileOpts) -> Result<(), Exit> {
    let code = match &opts.script {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Exit::config(format!("{}: {e}", path.display())))?;
            let lang = if path.extension().is_some_and(|e| e == "sh") { "sh" } else { "python" };
            Some(runtime::domain::CodeRequest {
                lang: lang.into(),
                code: text,
                stdin: String::new(),
                files: Vec::new(),
            })
        }
        None => None,
    };
    if opts.ask.is_some() && crate::session::llm(config)?.is_none() {
        return Err(Exit::config(
            "--ask needs a language model (OPENAI_API_KEY or \
            OPENAI_BASE_URL); --script runs your own code",
        ));
    }
    let (session, _, _) = start(config, "profile", None, &MappingOpt::default()).await?;
    let run_id = session.run_id;
    let goal = agents::orchestrator::ProfileGoal {
        table: opts.table.clone(),
        sample: opts.sample,
        code,
        question: opts.ask.clone(),
    };
    let result =
        interruptible(async { session.profile(goal).await.map_err(Exit::agent) }, run_id).await;
    let (profile, report) = end(session, result, "succeeded").await?;
    if let Format::Json = opts.format {
        let table = report.tables.iter().find(|t| t.name == profile.table);
        print_json(&json!({"profile": profile, "statistics": table.map(|t| &t.columns)}));
        return Ok(());
    }
    print_profile(&profile, &report, opts.ask.is_some())
}

/// A profile as the operator reads it: the model's code when it wrote it, what the code printed,
/// or the database's column statistics (and why, when code could not run). An error when the
/// code failed.
pub fn print_profile(
    profile: &agents::schema_analysis::Profile,
    report: &runtime::domain::SchemaReport,
    asked: bool,
) -> Result<(), Exit> {
    let table = report.tables.iter().find(|t| t.name == profile.table);
    if let Some(code) = profile.code.as_ref().filter(|_| asked) {
        println!("The model wrote this {} code:\n{}\n", code.lang, code.code.trim_end());
    }
    match (&profile.result, &profile.fallback) {
        (Some(result), _) => {
            println!(
                "Ran on {} sample rows of {} in the sandbox:",
                profile.rows_sampled, profile.table
            );
            print!("{}", result.stdout);
            if !result.stderr.trim().is_empty() {
                eprint!("{}", result.stderr);
            }
            let ended = match result.exit_code {
                Some(0) => None,
                Some(code) => Some(format!("the code exited {code}")),
                None => Some("the code was killed at the timeout".to_owned()),
            };
            if let Some(ended) = ended {
                return Err(Exit::failed(format!(
                    "{ended} (limits hit: {})",
                    result.limits_hit.join(", ")
                )));
            }
        }
        (None, fallback) => {
            if let Some(why) = fallback {
                println!(
                    "The sandbox could not run the code ({why}); the database's own \
                    statistics instead:"
                );
            }
            println!(
                "{} ({} rows sampled; statistics from ANALYZE):",
                profile.table, profile.rows_sampled
            );
            for c in table.map(|t| t.columns.as_slice()).unwrap_or_default() {
                match &c.stats {
                    Some(s) => println!(
                        "  {:<24} {:>5.1}% null  {:>10} distinct  min {}  max {}",
                        c.name,
                        s.null_fraction * 100.0,
                        if s.distinct < 0.0 {
                            format!("{:.0}% rows", -s.distinct * 100.0)
                        } else {
                            format!("{:.0}", s.distinct)
                        },
                        s.min.as_deref().unwrap_or("-"),
                        s.max.as_deref().unwrap_or("-")
                    ),
                    None => println!("  {:<24} no statistics (run ANALYZE on the source)", c.name),
                }
            }
        }
    }
    Ok(())
}

pub async fn mapping(config: &Config, cmd: MappingCmd) -> Result<(), Exit> {
    let (opt, command) = match &cmd {
        MappingCmd::Show { mapping, .. } => (mapping, "mapping show"),
        MappingCmd::Init { mapping, .. } => (mapping, "mapping init"),
    };
    let (session, file, origin) = start(config, command, None, opt).await?;
    let run_id = session.run_id;
    let goal = PlanGoal {
        goal: String::new(),
        only: false,
        mapping: file,
        mapping_origin: origin,
        batch_size: None,
        unattended: false,
    };
    let result =
        interruptible(async { session.map(goal).await.map_err(Exit::agent) }, run_id).await;
    let set = end(session, result, "succeeded").await?;
    match cmd {
        MappingCmd::Show { entity, format, .. } => {
            let specs: Vec<_> = match &entity {
                None => set.specs.iter().collect(),
                Some(name) => {
                    let key = runtime::mapping::entity_key(name);
                    let found: Vec<_> = set
                        .specs
                        .iter()
                        .filter(|s| {
                            [&s.source.name, &s.target.name]
                                .iter()
                                .any(|n| *n == name || runtime::mapping::entity_key(n) == key)
                        })
                        .collect();
                    if found.is_empty() {
                        let names: Vec<String> =
                            set.specs.iter().map(|s| s.target.name.clone()).collect();
                        return Err(Exit::config(format!(
                            "no mapped entity is called `{name}`; mapped: {}",
                            names.join(", ")
                        )));
                    }
                    found
                }
            };
            match format {
                Format::Json => print_json(&specs),
                Format::Text => {
                    for s in &specs {
                        println!("{}", data_mapping::render(s));
                    }
                    let shown: Vec<&runtime::domain::TableName> =
                        specs.iter().map(|s| &s.source).collect();
                    print_previews(&set, Some(&shown));
                    if entity.is_none() {
                        for (t, why) in &set.unmapped {
                            println!("{t}: not migrated on its own ({why})");
                        }
                    }
                }
            }
        }
        MappingCmd::Init { output, force, .. } => {
            if output.exists() && !force {
                return Err(Exit::config(format!(
                    "{} exists; pass --force to overwrite it",
                    output.display()
                )));
            }
            let text = toml::to_string_pretty(&data_mapping::to_file(&set))
                .map_err(|e| Exit::failed(format!("rendering the mapping: {e}")))?;
            let header = "# agentctl mapping file: every rule below was inferred or taken from the previous file.\n\
                          # Edit what is wrong, delete what is right (it will be inferred again), then use it with --mapping.\n\n";
            std::fs::write(&output, format!("{header}{text}"))
                .map_err(|e| Exit::failed(format!("writing {}: {e}", output.display())))?;
            println!("wrote the mapping of {} entities to {}", set.specs.len(), output.display());
        }
    }
    Ok(())
}

pub async fn schema(config: &Config, cmd: SchemaCmd) -> Result<(), Exit> {
    let SchemaCmd::Generate { output, apply, mapping, .. } = cmd;
    let conns = Connections::open(config, true).await?;
    let (file, origin) = mapping_file(&mapping, &conns).await?;
    let session = Session::start(
        &conns,
        "schema generate",
        None,
        conns.tools()?,
        SessionOptions::from_config(config),
    )
    .await?;
    let run_id = session.run_id;
    let result = interruptible(
        async { session.analyze(DbRole::Source, false).await.map_err(Exit::agent) },
        run_id,
    )
    .await;
    let result = result.and_then(|report| {
        data_mapping::declare_references(&report, &file)
            .map_err(|p| Exit::config(data_mapping::problems_error(&origin, &p).message))
    });
    let generated = result.and_then(|report| {
        agents::schema_gen::generate(&report).map_err(|refused| {
            Exit::failed(format!("cannot generate the target schema: {}", refused.join("; ")))
        })
    });
    if let Ok((ddl, notes)) = &generated {
        session.operator_decision(
            format!(
                "generated a UUID-keyed target schema ({} statements)",
                ddl.matches(';').count()
            ),
            if notes.is_empty() {
                "every table, key and constraint carried over".to_owned()
            } else {
                notes.join("; ")
            },
            serde_json::json!({"ddl": ddl, "apply": apply}),
        );
    }
    let applied = match &generated {
        Ok((ddl, _)) if apply => {
            tools::pg::run_script(&conns.target, ddl, "creating the generated target schema")
                .await
                .map_err(Exit::from)
        }
        _ => Ok(()),
    };
    let result = generated.and_then(|g| applied.map(|_| g));
    let (ddl, notes) = end(session, result, "succeeded").await?;
    for n in &notes {
        eprintln!("note: {n}");
    }
    match (output, apply) {
        (Some(path), _) => {
            std::fs::write(&path, &ddl)
                .map_err(|e| Exit::failed(format!("writing {}: {e}", path.display())))?;
            println!("wrote the target schema to {}", path.display());
        }
        (None, true) => println!(
            "created the target schema in {}",
            config.target().map_err(Exit::config)?.location()
        ),
        (None, false) => print!("{ddl}"),
    }
    Ok(())
}
