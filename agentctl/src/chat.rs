//! `agentctl chat`: a REPL in which an operator who is not an engineer migrates, asks how it
//! goes, why rows failed, and takes work back, in plain words; and `agentctl llm check`.
//!
//! Each line is understood by the guidance agent's intent parser (and, when a model is
//! configured and the parser does not understand, by the model through a typed tool call). The
//! answers come from real state: the plan, the control tables, the audit trail. Nothing that
//! changes data starts without an explicit `yes` to a question that restates what will happen.
//! On a terminal: line editing and history; without one, lines are read from stdin, so a
//! conversation can be scripted.

use std::io::{BufRead, IsTerminal, Write};

use agents::guidance::{understand, Intent};
use agents::orchestrator::{DiffGoal, PlanGoal};
use runtime::config::Config;
use runtime::RunId;
use serde_json::json;
use tools::control::{ControlStore, EventFilter};

use crate::cli::{ChatOpts, Format, LlmCmd};
use crate::exit::Exit;
use crate::plan_run::{end, mapping_file, print_results};
use crate::print_json;
use crate::session::{llm as configured_llm, Connections, Session, SessionOptions};

/// How long a question may take before the operator is told it did not work.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether the conversation goes on after an action.
enum Continue {
    Yes,
    No,
}

/// Where the operator's lines come from.
enum Lines {
    Editor(Box<rustyline::DefaultEditor>),
    Stdin(std::io::Lines<std::io::StdinLock<'static>>),
}

enum Line {
    Text(String),
    /// Ctrl-C at the prompt: nothing to cancel, ask again.
    Interrupted,
    End,
}

/// Reads the operator's lines on a thread of its own, so the conversation can go on while a
/// migration runs.
fn spawn_reader(prompt: String) -> tokio::sync::mpsc::Receiver<Line> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    std::thread::spawn(move || {
        let mut lines = Lines::open();
        loop {
            let line = lines.read(&prompt);
            let end = matches!(line, Line::End);
            if tx.blocking_send(line).is_err() || end {
                return;
            }
        }
    });
    rx
}

impl Lines {
    fn open() -> Lines {
        if std::io::stdin().is_terminal() {
            if let Ok(editor) = rustyline::DefaultEditor::new() {
                return Lines::Editor(Box::new(editor));
            }
        }
        Lines::Stdin(std::io::stdin().lock().lines())
    }

    fn read(&mut self, prompt: &str) -> Line {
        match self {
            Lines::Editor(editor) => match editor.readline(prompt) {
                Ok(line) => {
                    let _ = editor.add_history_entry(line.as_str());
                    Line::Text(line)
                }
                Err(rustyline::error::ReadlineError::Interrupted) => Line::Interrupted,
                Err(_) => Line::End,
            },
            Lines::Stdin(lines) => match lines.next() {
                Some(Ok(line)) => Line::Text(line),
                _ => Line::End,
            },
        }
    }
}

struct Chat<'a> {
    /// Whether lines come from a terminal (they are not echoed then).
    interactive: bool,
    config: &'a Config,
    session: &'a Session,
    store: ControlStore,
    mapping: runtime::mapping::MappingFile,
    mapping_origin: String,
    llm: Option<std::sync::Arc<dyn runtime::ports::Llm>>,
    entities: Vec<String>,
}

/// The terminal's mode when the chat began, put back on every way out (`exit`, Ctrl-D, Ctrl-C,
/// an error, a panic): the line editor leaves it raw while it waits for the next line.
struct TerminalMode(Option<nix::sys::termios::Termios>);

impl TerminalMode {
    fn save() -> TerminalMode {
        TerminalMode(nix::sys::termios::tcgetattr(std::io::stdin()).ok())
    }
}

impl Drop for TerminalMode {
    fn drop(&mut self) {
        if let Some(mode) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                mode,
            );
        }
    }
}

pub async fn chat(config: &Config, opts: ChatOpts) -> Result<(), Exit> {
    let _mode = TerminalMode::save();
    let conns = Connections::open(config, true).await?;
    let (mapping, mapping_origin) = mapping_file(&opts.mapping, &conns).await?;
    let tools = conns.tools()?;
    let llm = tools.llm.clone();
    let session =
        Session::start(&conns, "chat", None, tools, SessionOptions::from_config(config)).await?;
    let store = session.store.clone();
    let goal = PlanGoal {
        goal: String::new(),
        only: false,
        mapping: mapping.clone(),
        mapping_origin: mapping_origin.clone(),
        batch_size: None,
        unattended: false,
    };
    let entities = match session.map(goal).await {
        // Pairs: each legacy table, then the modern one it becomes.
        Ok(set) => {
            set.specs.iter().flat_map(|s| [s.source.name.clone(), s.target.name.clone()]).collect()
        }
        Err(e) => {
            eprintln!("note: could not read the mappings ({e}); table names will not be suggested");
            Vec::new()
        }
    };
    let interactive = std::io::stdin().is_terminal();
    let chat = Chat {
        interactive,
        config,
        session: &session,
        store,
        mapping,
        mapping_origin,
        llm,
        entities,
    };
    let result = chat.repl().await;
    end(session, result, "ended").await
}

impl Chat<'_> {
    fn databases(&self) -> String {
        let loc = |r: Result<&runtime::config::DbUrl, _>| {
            r.map(|u| u.location()).unwrap_or_else(|_| "?".into())
        };
        format!("{} → {}", loc(self.config.source()), loc(self.config.target()))
    }

    async fn repl(&self) -> Result<(), Exit> {
        let model = self
            .llm
            .as_ref()
            .map(|l| l.describe())
            .unwrap_or_else(|| "no language model, offline".into());
        println!(
            "agentctl chat: {} ({model}). Type `help` for what you can say.",
            self.databases()
        );
        // A migration left half done is the first thing to know.
        if let Some(run) = self.store.latest_migration_run().await? {
            if let Some(how) = self.interrupted(run).await? {
                println!("{}", interrupted_note(&how));
            }
        }
        let prompt =
            if self.interactive { format!("[{}] > ", self.databases()) } else { String::new() };
        let mut lines = spawn_reader(prompt);
        while let Some(line) = lines.recv().await {
            let text = match line {
                Line::Text(t) => t,
                Line::Interrupted => continue,
                Line::End => break,
            };
            if text.trim().is_empty() {
                continue;
            }
            self.echo(&text);
            let intent =
                understand(&self.session.ctx, self.llm.as_deref(), &text, &self.entities).await;
            if intent == Intent::Exit {
                break;
            }
            // Ctrl-C cancels the action, not the conversation.
            let answer = tokio::select! {
                r = self.act(&intent, &text, &mut lines) => r,
                _ = tokio::signal::ctrl_c() => Err(Exit::interrupted("cancelled; what was \
                    committed stays, and you can ask how it stands")),
            };
            match answer {
                Ok(Continue::Yes) => {}
                Ok(Continue::No) => break,
                // A lost database or a refused action is reported; the conversation goes on.
                Err(e) => println!("Sorry, that did not work: {}", e.message),
            }
            let _ = std::io::stdout().flush();
        }
        println!("Goodbye.");
        Ok(())
    }

    /// Shows a scripted line, so a transcript reads as a conversation.
    fn echo(&self, text: &str) {
        if !self.interactive {
            println!("> {}", text.trim());
        }
    }

    /// Asks a yes/no question; only `yes` (or `y`) is yes.
    async fn confirm(&self, lines: &mut tokio::sync::mpsc::Receiver<Line>, question: &str) -> bool {
        println!("{question}");
        let Some(Line::Text(answer)) = lines.recv().await else { return false };
        self.echo(&answer);
        matches!(answer.trim().to_lowercase().as_str(), "yes" | "y")
    }

    fn goal(&self, goal: &str, only: bool) -> PlanGoal {
        PlanGoal {
            goal: goal.to_owned(),
            only,
            mapping: self.mapping.clone(),
            mapping_origin: self.mapping_origin.clone(),
            batch_size: None,
            unattended: false,
        }
    }

    /// Three of this database's tables, in the new system's words, for examples.
    fn examples(&self) -> [String; 3] {
        let mut names = self.entities.iter().skip(1).step_by(2).map(|n| n.replace('_', " "));
        let mut next = |fallback: &str| names.next().unwrap_or_else(|| fallback.to_owned());
        [next("customers"), next("orders"), next("payments")]
    }

    /// What the operator can say, with this database's own tables.
    fn help(&self) -> String {
        let [a, b, c] = self.examples();
        let lines = [
            ("what is in the old database?".to_owned(), "(or the new one)"),
            (format!("how many {a} are there?"), ""),
            (
                format!("migrate the {b} and everything they need"),
                "(asks before it changes anything)",
            ),
            ("how is it going?  /  how did it go?  /  is everything safe?".to_owned(), ""),
            (format!("why did some {c} fail?"), ""),
            (format!("show me a failed row of {c}"), ""),
            (format!("undo the {b}"), "(asks before it deletes anything)"),
            ("what did the planning agent decide and why?".to_owned(), ""),
            (format!("profile the {a}"), "(what the data looks like)"),
            (
                "what changed since the last sync?".to_owned(),
                "(in the old system; changes nothing)",
            ),
            (format!("sync the {c}"), "(asks before it changes anything)"),
            (format!("sync the {c} every night"), "(a sync job; asks first)"),
            ("exit".to_owned(), ""),
        ];
        let width = lines.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(0);
        let body: Vec<String> = lines
            .iter()
            .map(|(l, note)| format!("  {l:<width$}  {note}").trim_end().to_owned())
            .collect();
        format!("You can say, for example:\n{}", body.join("\n"))
    }

    /// The tables of one database, each with its rows counted.
    async fn tables(&self, new: bool) -> Result<(), Exit> {
        let side =
            if new { runtime::config::DbRole::Target } else { runtime::config::DbRole::Source };
        let report = self.session.analyze(side, true).await.map_err(Exit::agent)?;
        let tables: Vec<String> = report
            .tables
            .iter()
            .map(|t| format!("{} ({} rows)", t.name, t.exact_rows.unwrap_or(t.estimated_rows)))
            .collect();
        let rows: i64 =
            report.tables.iter().map(|t| t.exact_rows.unwrap_or(t.estimated_rows)).sum();
        println!(
            "The {} database ({}) holds {} tables, {rows} rows in all: {}.",
            if new { "new" } else { "old" },
            report.database,
            tables.len(),
            tables.join(", ")
        );
        Ok(())
    }

    /// How many rows one table has, in the old database and in the new one, counted now.
    async fn count(&self, entity: &str) -> Result<(), Exit> {
        let pair =
            self.entities.chunks(2).find(|pair| pair.iter().any(|name| names_match(entity, name)));
        let Some([old, new]) = pair else {
            let [a, b, c] = self.examples();
            let which = if entity.is_empty() {
                "Of which table?".to_owned()
            } else {
                format!("I know no table called {entity}.")
            };
            println!("{which} For example: how many {a}, {b} or {c} are there?");
            return Ok(());
        };
        let counted = |report: &runtime::domain::SchemaReport, name: &str| {
            report
                .tables
                .iter()
                .find(|t| t.name.name == name)
                .map(|t| t.exact_rows.unwrap_or(t.estimated_rows))
        };
        let source = self
            .session
            .analyze(runtime::config::DbRole::Source, true)
            .await
            .map_err(Exit::agent)?;
        let target = self
            .session
            .analyze(runtime::config::DbRole::Target, true)
            .await
            .map_err(Exit::agent)?;
        match (counted(&source, old), counted(&target, new)) {
            (Some(o), Some(n)) => {
                println!(
                    "The old database has {o} {} (table {old}); the new one has {n} (table {new}).",
                    new.replace('_', " ")
                )
            }
            (Some(o), None) => {
                println!(
                    "The old database has {o} {} (table {old}); the new one has no table for \
                    them yet.",
                    old.replace('_', " ")
                )
            }
            _ => println!("The old database has no table {old}."),
        }
        Ok(())
    }

    /// How the last migration ended; with `safety`, said as whether anything was lost.
    async fn outcome(&self, safety: bool) -> Result<(), Exit> {
        let Some(run) = self.run_in_question().await? else {
            println!(
                "Nothing has been moved yet, so nothing can have been lost: the old database \
                is as it was."
            );
            return Ok(());
        };
        let row = self.store.find_run(Some(&run.to_string())).await?;
        let entities = self.store.report(run).await?;
        let totals = tools::control::Totals::of(&entities);
        let (source, rejected) = (totals.source_rows, totals.rejected);
        // Rows kept from before agentctl are in the new system too, but were not moved.
        let (in_target, migrated) = (totals.in_target(), totals.migrated);
        let kept = match totals.kept {
            0 => String::new(),
            n => format!(" ({n} of them were there before and kept as they were)"),
        };
        let validated = entities.iter().filter(|e| e.validated == Some(true)).count();
        let failed: Vec<&str> = entities
            .iter()
            .filter(|e| e.validated == Some(false))
            .map(|e| e.target_table.as_str())
            .collect();
        let events = self.store.events(run, &EventFilter::default()).await?;
        let head = self.store.chain_head(run).await?;
        let chain = runtime::audit::verify_chain(run, &events, &head);
        let accounted = totals.accounted();
        let whole = accounted
            && failed.is_empty()
            && chain.first_bad.is_none()
            && row.outcome == "succeeded";
        if safety {
            println!(
                "{} Of the {source} rows of the old system, {in_target} are in the new one{kept} \
                    and {rejected} were set aside, each with its reason ({}).",
                if whole { "Yes." } else { "Not yet." },
                if accounted {
                    "every row is accounted for"
                } else {
                    "some rows are NOT accounted for"
                }
            );
        } else {
            println!(
                "The last migration ({}, run {run}) {}: {migrated} rows moved, {}{rejected} set \
                    aside with their reasons, of {source}{}.",
                row.started_at.format("%Y-%m-%d %H:%M"),
                row.outcome,
                match totals.kept {
                    0 => String::new(),
                    n => format!("{n} already there and kept, "),
                },
                if accounted {
                    "; every row is accounted for"
                } else {
                    "; some rows are NOT accounted for"
                }
            );
        }
        match failed.is_empty() {
            true => println!(
                "The new system was checked against the old one, row by row: \
                {validated} of {} tables match.",
                entities.len()
            ),
            false => println!(
                "The check against the old system FAILED for {}; {validated} of {} tables match.",
                failed.join(", "),
                entities.len()
            ),
        }
        match &chain.first_bad {
            None => println!(
                "The record of everything that was done is intact ({} entries, verified just now).",
                chain.events
            ),
            Some(b) => println!("The record of what was done is NOT intact: {b}."),
        }
        if let Some(how) = self.interrupted(run).await? {
            println!("{}", interrupted_note(&how));
        }
        Ok(())
    }

    /// For a migration whose program was stopped before it ended, the command that finishes it.
    async fn interrupted(&self, run: RunId) -> Result<Option<String>, Exit> {
        let row = self.store.find_run(Some(&run.to_string())).await?;
        Ok(crate::audit::resume_command(&row, self.config))
    }

    /// The run to answer questions about: this conversation's, if it migrated, else the latest.
    async fn run_in_question(&self) -> Result<Option<RunId>, Exit> {
        let mine = self.store.progress(self.session.run_id).await?;
        if !mine.is_empty() {
            return Ok(Some(self.session.run_id));
        }
        self.store.latest_migration_run().await.map_err(Exit::from)
    }

    /// A question no intent covers, answered by the model in words, streamed as it comes, from
    /// the facts given to it (the tables, the latest migration's state).
    async fn answer_in_words(
        &self,
        llm: &dyn runtime::ports::Llm,
        question: &str,
    ) -> Result<(), Exit> {
        let status = match self.run_in_question().await? {
            None => "nothing has been migrated yet".to_owned(),
            Some(run) => {
                let rows = self.store.progress(run).await?;
                let parts: Vec<String> = rows
                    .iter()
                    .map(|p| {
                        format!(
                            "{} {} ({} moved, {} kept from before, {} refused)",
                            p.target_table, p.state, p.migrated, p.kept, p.rejected
                        )
                    })
                    .collect();
                parts.join("; ")
            }
        };
        let system = prompts::fill(
            prompts::ANSWER,
            &[("entities", &self.entities.join(", ")), ("status", &status)],
        )
        .map_err(Exit::failed)?;
        let mut out = std::io::stdout();
        let mut show = |piece: &str| {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        };
        let answered = agents::llm::ask_text(
            &self.session.ctx,
            llm,
            runtime::AgentName::Guidance,
            "answer",
            &system,
            question,
            Some(&mut show),
        )
        .await;
        println!();
        answered.map(|_| ()).map_err(|why| {
            Exit::failed(format!("the model did not answer ({why}). {}", self.help()))
        })
    }

    /// Carries out what changes data (after a yes); everything else is [`Chat::answer`].
    async fn act(
        &self,
        intent: &Intent,
        question: &str,
        lines: &mut tokio::sync::mpsc::Receiver<Line>,
    ) -> Result<Continue, Exit> {
        match intent {
            Intent::Migrate { goal } => self.migrate(goal, lines).await,
            Intent::Undo { goal } => self.undo(goal, lines).await.map(|_| Continue::Yes),
            Intent::Sync { goal } => self.sync(goal, lines).await.map(|_| Continue::Yes),
            Intent::Schedule { goal, every } => {
                self.schedule(goal, every, lines).await.map(|_| Continue::Yes)
            }
            Intent::Changes { goal } => self.changes(goal).await.map(|_| ()).map(|_| Continue::Yes),
            _ => match tokio::time::timeout(ANSWER_TIMEOUT, self.answer(intent, question)).await {
                Ok(answered) => answered.map(|_| Continue::Yes),
                Err(_) => Err(Exit::failed(format!(
                    "no answer within {}s; is the database reachable?",
                    ANSWER_TIMEOUT.as_secs()
                ))),
            },
        }
    }

    async fn migrate(
        &self,
        goal: &str,
        lines: &mut tokio::sync::mpsc::Receiver<Line>,
    ) -> Result<Continue, Exit> {
        let outcome = self.session.plan(self.goal(goal, false)).await.map_err(Exit::agent)?;
        println!("{}", outcome.explanation);
        let question = format!(
            "This will copy {} tables (about {} rows: {} expected to move, {} that the new system \
                will refuse) into {}. Type yes to go ahead.",
            outcome.plan.entities().count(),
            outcome.plan.estimated_rows(),
            outcome.plan.expected_migrated(),
            outcome.plan.expected_rejected(),
            self.config.target().map(|t| t.location()).unwrap_or_default()
        );
        if !self.confirm(lines, &question).await {
            println!("All right, nothing was changed.");
            return Ok(Continue::Yes);
        }
        let Some(_writing) = self.writer_lock().await? else { return Ok(Continue::Yes) };
        self.session.operator_decision(
            format!("approved plan {} in the chat", &outcome.hash[..12]),
            "the operator answered yes to the restated plan",
            json!({"hash": outcome.hash, "goal": goal}),
        );
        // Progress shows inline, and the operator can ask about the run while it goes.
        let progress = self.inline_progress();
        let execution = self.session.execute(&outcome, Default::default());
        tokio::pin!(execution);
        let mut then = Continue::Yes;
        let results = loop {
            tokio::select! {
                results = &mut execution => break results,
                line = lines.recv() => match line {
                    Some(Line::Text(text)) if !text.trim().is_empty() => {
                        self.echo(&text);
                        match understand(&self.session.ctx, self.llm.as_deref(), &text, &self.entities).await {
                            Intent::Exit => {
                                println!("I will stop talking once the migration is done.");
                                then = Continue::No;
                            }
                            Intent::Migrate { .. } | Intent::Undo { .. } | Intent::Sync { .. } | Intent::Changes { .. } | Intent::Schedule { .. } => println!("A \
                                migration is running; that can wait until it is done."),
                            intent => {
                                if let Err(e) = self.answer(&intent, &text).await {
                                    println!("Sorry, that did not work: {}", e.message);
                                }
                            }
                        }
                    }
                    Some(_) => {}
                    None => then = Continue::No,
                },
            }
        };
        progress.abort();
        let results = results.map_err(Exit::failed)?;
        print_results(&results, &outcome.plan.left_out, self.session.run_id);
        let failed: Vec<String> = results
            .iter()
            .filter_map(|r| r.validation.as_ref())
            .filter(|v| !v.passed)
            .map(|v| format!("{}: {}", v.target.name, v.detail))
            .collect();
        if failed.is_empty() {
            println!(
                "Done, and checked: every row that moved holds the same values as in the old \
                system."
            );
        } else {
            println!("Done, but the check found problems: {}", failed.join("; "));
        }
        Ok(then)
    }

    /// A line per entity at most every two seconds while it migrates, and when it is done.
    fn inline_progress(&self) -> tokio::task::JoinHandle<()> {
        let mut events = self.session.ctx.events.subscribe();
        tokio::spawn(async move {
            let mut last: std::collections::HashMap<String, std::time::Instant> =
                Default::default();
            while let Ok(e) = events.recv().await {
                let runtime::events::RunEvent::Progress { entity, rows_done, rows_total, .. } = e
                else {
                    continue;
                };
                let done = rows_total.is_some_and(|t| rows_done >= t);
                let now = std::time::Instant::now();
                if done
                    || last.get(&entity).is_none_or(|at| {
                        now.duration_since(*at) >= std::time::Duration::from_secs(2)
                    })
                {
                    println!(
                        "  ... {entity}: {rows_done}{} rows read",
                        rows_total.map(|t| format!(" of {t}")).unwrap_or_default()
                    );
                    last.insert(entity, now);
                }
            }
        })
    }

    /// A differential run of the tables named (none: everything), analysing only.
    fn diff_goal(&self, goal: &str) -> DiffGoal {
        let goal = if goal.trim().is_empty() { "everything" } else { goal };
        DiffGoal {
            goal: self.goal(goal, goal != "everything"),
            analyze: true,
            apply: false,
            full: false,
        }
    }

    /// What changed in the old system since the last sync, said in words; nothing is changed.
    async fn changes(&self, goal: &str) -> Result<i64, Exit> {
        let how = self.diff_goal(goal);
        let report = self.session.diff(how).await.map_err(Exit::agent)?;
        let mut out_of_step = 0;
        for a in report.analyses.iter().filter(|a| a.out_of_step() + a.target_changed > 0) {
            out_of_step += a.out_of_step();
            println!(
                "  {}: {} new, {} changed, {} deleted, {} changed on both sides, {} refused{}",
                a.target.name,
                a.inserts,
                a.updates,
                a.deletes,
                a.conflicts,
                a.rejected,
                if a.target_changed > 0 {
                    format!(
                        " ({} changed only in the new system, left as they are)",
                        a.target_changed
                    )
                } else {
                    String::new()
                }
            );
        }
        if out_of_step == 0 {
            println!("Nothing changed in the old system that the new one does not have.");
        }
        Ok(out_of_step)
    }

    /// Brings the new system up to date with the old one's changes, after a yes.
    /// A sync job that keeps `goal` in step on a schedule, after a yes.
    async fn schedule(
        &self,
        goal: &str,
        every: &str,
        lines: &mut tokio::sync::mpsc::Receiver<Line>,
    ) -> Result<(), Exit> {
        let schedule = match every.contains(' ') {
            true => tools::sync::Schedule::cron(every),
            false => tools::sync::Schedule::every(every),
        };
        let schedule = match schedule {
            Ok(s) => s,
            Err(e) => {
                println!(
                    "I could not read that schedule ({e}). For example: sync the orders \
                    every night."
                );
                return Ok(());
            }
        };
        let what = if goal.is_empty() { "everything".to_owned() } else { goal.to_owned() };
        let name = format!("chat-{}", what.split_whitespace().collect::<Vec<_>>().join("-"));
        let question = format!(
            "This keeps {what} in step with the old system {}, as the sync job {name} (it runs \
                while `agentctl sync daemon` runs). Type yes to go ahead.",
            schedule.describe()
        );
        if !self.confirm(lines, &question).await {
            println!("All right, nothing was scheduled.");
            return Ok(());
        }
        let target = self.config.target().map_err(Exit::config)?;
        let store = tools::sync::SyncStore::new(tools::pg::connect(target, 1).await?);
        let job = store.create_job(&name, &what, &schedule).await?;
        self.session.operator_decision(
            format!("scheduled the sync job {} in the chat", job.name),
            "the operator answered yes to keeping these tables in step on a schedule",
            json!({"job": job.name, "goal": job.goal, "schedule": job.schedule.describe()}),
        );
        println!(
            "Done: {} is kept in step {}; the first run is at {}.",
            job.goal,
            job.schedule.describe(),
            job.next_run_at.format("%Y-%m-%d %H:%M UTC")
        );
        Ok(())
    }

    async fn sync(
        &self,
        goal: &str,
        lines: &mut tokio::sync::mpsc::Receiver<Line>,
    ) -> Result<(), Exit> {
        let waiting = self.changes(goal).await?;
        if waiting == 0 {
            return Ok(());
        }
        let question = format!(
            "This applies these {waiting} changes to {} (deleted rows are marked deleted or \
                removed, as the mapping says). Type yes to go ahead.",
            self.config.target().map(|t| t.location()).unwrap_or_default()
        );
        if !self.confirm(lines, &question).await {
            println!("All right, nothing was changed.");
            return Ok(());
        }
        let Some(_writing) = self.writer_lock().await? else { return Ok(()) };
        let how = DiffGoal { analyze: false, apply: true, ..self.diff_goal(goal) };
        let report = self.session.diff(how).await.map_err(Exit::agent)?;
        let t = report.total();
        println!(
            "Done: {} added, {} updated, {} deleted, {} changed on both sides, {} held for you, \
                {} refused with a reason.",
            t.inserted, t.updated, t.deleted, t.conflicted, t.held, t.rejected
        );
        if t.held > 0 {
            println!("`agentctl conflict report` lists what is held.");
        }
        Ok(())
    }

    async fn undo(
        &self,
        goal: &str,
        lines: &mut tokio::sync::mpsc::Receiver<Line>,
    ) -> Result<(), Exit> {
        if goal.trim().is_empty() {
            println!("Which tables should I take back? For example: undo the doctors.");
            return Ok(());
        }
        let question = format!(
            "This deletes from {} every row agentctl created of {goal} (rows it did not create \
                stay). Type yes to go ahead.",
            self.config.target().map(|t| t.location()).unwrap_or_default()
        );
        if !self.confirm(lines, &question).await {
            println!("All right, nothing was deleted.");
            return Ok(());
        }
        let Some(_writing) = self.writer_lock().await? else { return Ok(()) };
        let mut goal = goal.to_owned();
        // Rows of another table that still point at these: offered as a question, not a flag.
        loop {
            match self.session.rollback(self.goal(&goal, true)).await {
                Ok(done) => {
                    for d in &done {
                        println!(
                            "  {}: {} rows deleted, {} kept",
                            d.target.name, d.deleted, d.kept
                        );
                    }
                    return Ok(());
                }
                Err(e) => {
                    let Some(child) = e
                        .message
                        .contains("not part of this rollback")
                        .then(|| e.message.split("rows of ").nth(1))
                        .flatten()
                        .and_then(|r| r.split(" still reference them").next())
                    else {
                        return Err(Exit::agent(e));
                    };
                    let child = child.rsplit('.').next().unwrap_or(child).to_owned();
                    let question = format!(
                        "The {child} in the new system still point at these {goal}, so I deleted \
                            nothing. Undo the {child} too? Type yes to go ahead."
                    );
                    if !self.confirm(lines, &question).await {
                        println!("All right, nothing was deleted.");
                        return Ok(());
                    }
                    goal = format!("{goal}, {child}");
                }
            }
        }
    }

    /// The target's writer lock for one action that changes data, taken after the operator's
    /// yes and let go when the action ends; `None`, said in words, when another agentctl holds
    /// it.
    async fn writer_lock(&self) -> Result<Option<tools::control::WriterLock>, Exit> {
        match self.session.store.writer_lock(self.session.run_id, "chat").await {
            Ok(lock) => Ok(Some(lock)),
            Err(tools::control::Attend::Held(who)) => {
                println!(
                    "I cannot change anything now: {who}. Nothing was changed; ask me again \
                    once it is done."
                );
                Ok(None)
            }
            Err(tools::control::Attend::Db(e)) => Err(Exit::failed(e)),
        }
    }

    /// Answers what only reads: status, reasons, a refused row, decisions, help.
    async fn answer(&self, intent: &Intent, question: &str) -> Result<(), Exit> {
        match intent {
            Intent::Help
            | Intent::Exit
            | Intent::Migrate { .. }
            | Intent::Undo { .. }
            | Intent::Sync { .. }
            | Intent::Changes { .. }
            | Intent::Schedule { .. } => {
                println!("{}", self.help())
            }
            Intent::Unknown => match &self.llm {
                None => {
                    let [a, _, c] = self.examples();
                    println!(
                        "I'm not sure what you mean. Do you want to know how the migration went, \
                            what the old database holds, how many {a} there are, or why some {c} \
                            were not moved? Say `help` for everything I can do."
                    );
                }
                Some(llm) => self.answer_in_words(llm.as_ref(), question).await?,
            },
            Intent::Tables { new } => self.tables(*new).await?,
            Intent::Count { entity } => self.count(entity).await?,
            Intent::Outcome => self.outcome(false).await?,
            Intent::Safety => self.outcome(true).await?,
            Intent::Profile { table, question } => {
                self.profile(table.clone(), question.clone()).await?
            }
            Intent::Status => self.status().await?,
            Intent::WhyFailed { entity } => self.why_failed(entity.as_deref()).await?,
            Intent::ShowFailed { entity } => self.show_failed(entity.as_deref()).await?,
            Intent::Decisions { agent } => self.decisions(agent.clone()).await?,
        }
        Ok(())
    }

    /// "Profile the customers": the column statistics, or code run on sample rows.
    async fn profile(&self, table: Option<String>, question: Option<String>) -> Result<(), Exit> {
        let Some(table) = table else {
            println!("Which table? For example: profile the customers.");
            return Ok(());
        };
        // The operator may name the legacy table or the modern one; profiles read the
        // source.
        let table = self
            .entities
            .chunks(2)
            .find(|pair| pair.iter().any(|name| names_match(&table, name)))
            .map(|pair| pair[0].clone())
            .unwrap_or(table);
        let question = question.filter(|_| self.llm.is_some());
        let asked = question.is_some();
        let goal = agents::orchestrator::ProfileGoal {
            table,
            sample: agents::schema_analysis::PROFILE_SAMPLE,
            code: None,
            question,
        };
        let (profile, report) = self.session.profile(goal).await.map_err(Exit::agent)?;
        if let Err(e) = crate::plan_run::print_profile(&profile, &report, asked) {
            println!("{e}");
        }
        Ok(())
    }

    /// "How is it going?": each entity of the run in question.
    async fn status(&self) -> Result<(), Exit> {
        let Some(run) = self.run_in_question().await? else {
            println!("Nothing has been migrated yet.");
            return Ok(());
        };
        let stopped = self.interrupted(run).await?;
        for p in self.store.progress(run).await? {
            println!(
                "  {}: {} — {} of {} rows moved{}, {} could not be moved",
                p.target_table.trim_start_matches("public."),
                if stopped.is_some() && p.state == "running" {
                    "stopped part-way"
                } else {
                    p.state.as_str()
                },
                p.migrated,
                p.rows_read,
                match p.kept {
                    0 => String::new(),
                    n => format!(", {n} already there before and kept as they were"),
                },
                p.rejected
            );
        }
        if let Some(how) = stopped {
            println!("{}", interrupted_note(&how));
        }
        Ok(())
    }

    /// "Why did some orders fail?": the reasons, grouped, with what to do about each.
    async fn why_failed(&self, entity: Option<&str>) -> Result<(), Exit> {
        let Some(run) = self.run_in_question().await? else {
            println!("Nothing has been migrated yet, so nothing has failed.");
            return Ok(());
        };
        let groups = self.store.rejection_groups(run).await?;
        let groups: Vec<_> = groups
            .iter()
            .filter(|g| entity.is_none_or(|e| names_match(e, &g.source_table)))
            .collect();
        if groups.is_empty() {
            println!(
                "No rows{} were refused.",
                entity.map(|e| format!(" of {e}")).unwrap_or_default()
            );
        }
        for g in groups {
            println!(
                "  {} rows of {} were not moved: {} (for example rows {}). {}",
                g.count,
                g.source_table.trim_start_matches("public."),
                g.example_reason,
                g.example_keys.join(", "),
                advice(&g.rule)
            );
        }
        Ok(())
    }

    /// "Show me a failed task": one refused row, with what the old system holds.
    async fn show_failed(&self, entity: Option<&str>) -> Result<(), Exit> {
        let Some(run) = self.run_in_question().await? else {
            println!("Nothing has been migrated yet.");
            return Ok(());
        };
        let groups = self.store.rejection_groups(run).await?;
        let table = groups
            .iter()
            .find(|g| entity.is_none_or(|e| names_match(e, &g.source_table)))
            .map(|g| g.source_table.clone());
        let Some(table) = table else {
            println!(
                "No refused row{} to show.",
                entity.map(|e| format!(" of {e}")).unwrap_or_default()
            );
            return Ok(());
        };
        if let Some((key, reason, row)) = self.store.rejected_example(run, &table).await? {
            println!("Row {key} of {table} was not moved: {reason}\nWhat the old system holds:");
            print_json(&row);
        }
        Ok(())
    }

    /// "What did the planning agent decide and why?": its last decisions with their reasons.
    async fn decisions(&self, agent: Option<String>) -> Result<(), Exit> {
        let Some(run) = self.run_in_question().await? else {
            println!("No migration has been planned yet.");
            return Ok(());
        };
        let agent = agent.unwrap_or_else(|| "planning".into());
        self.session.flush_audit().await?;
        let filter = EventFilter { agent: Some(agent.clone()), kind: Some("decision".into()) };
        let events = self.store.events(run, &filter).await?;
        if events.is_empty() {
            println!("The {agent} agent recorded no decision in that run.");
        }
        for e in events.iter().rev().take(8).rev() {
            let detail: serde_json::Value = serde_json::from_str(&e.detail).unwrap_or_default();
            println!(
                "  {}\n    because {}",
                e.summary,
                detail["rationale"].as_str().unwrap_or("(no reason recorded)")
            );
        }
        Ok(())
    }
}

/// Whether an operator's word for a table names this table ("orders", "order", "dispatch_order").
/// What an operator is told of a migration stopped before its end.
fn interrupted_note(how: &str) -> String {
    format!(
        "The last migration stopped before it finished (its program was closed or killed). \
            Everything it saved is kept, and nothing is half written. To finish it, run: {how}"
    )
}

/// Whether the operator's word names the table: its name in any spelling the goals take
/// (singular, plural, without the `dispatch_` prefix), or one slip of the keyboard from it.
fn names_match(word: &str, table: &str) -> bool {
    let table = table.rsplit('.').next().unwrap_or(table);
    let key = runtime::mapping::entity_key(word);
    [
        runtime::mapping::entity_key(table),
        runtime::mapping::entity_key(table.trim_start_matches("dispatch_")),
    ]
    .iter()
    .any(|k| {
        *k == key
            || (key.len() >= 5
                && agents::guidance::edits(&key, k) <= if key.len() >= 8 { 2 } else { 1 })
    })
}

/// What an operator can do about a kind of rejection.
fn advice(rule: &str) -> &'static str {
    match rule.split(':').next().unwrap_or("") {
        "reference" => {
            "Their parent row did not move (it was refused too, or is missing in the old system); \
                fix the parent, then migrate again."
        }
        "not_null" => {
            "A value the new system requires is empty in the old one; fill it in there, \
            or set a default in the mapping file."
        }
        "enum" | "values" => {
            "The value is not one the new system knows; map it to a known value \
            in the mapping file."
        }
        "check" | "domain" => {
            "The value breaks a rule of the new system; correct it in the old \
            system."
        }
        "refused_by_target" => {
            "The new database refused it, usually a duplicate; decide which row is right and \
                remove the other in the old system."
        }
        _ => "Correct the row in the old system, then migrate again.",
    }
}

/// `agentctl llm check`: which model is active and whether it answers.
pub async fn llm(config: &Config, cmd: LlmCmd) -> Result<(), Exit> {
    let LlmCmd::Check { format } = cmd;
    let Some(llm) = configured_llm(config)? else {
        let text = "no language model is configured (set OPENAI_API_KEY, or OPENAI_BASE_URL for a \
            local server such as Ollama or vLLM, and AGENTCTL_MODEL); the agents work offline";
        match format {
            Format::Json => print_json(&json!({"configured": false, "detail": text})),
            Format::Text => println!("{text}"),
        }
        return Ok(());
    };
    let request = runtime::domain::LlmRequest {
        system: "Answer briefly.".into(),
        turns: vec![("user".into(), "Say OK.".into())],
        tool: None,
    };
    match llm.ask(&request).await {
        Ok(reply) => {
            match format {
                Format::Json => print_json(
                    &json!({"configured": true, "provider": llm.describe(), "answers": true, "reply": reply}),
                ),
                Format::Text => println!(
                    "{} answers ({} ms, {} + {} tokens): {}",
                    llm.describe(),
                    reply.millis,
                    reply.prompt_tokens,
                    reply.completion_tokens,
                    reply.text.unwrap_or_default().trim()
                ),
            }
            Ok(())
        }
        Err(e) => Err(Exit::from(e.context(format!("{} does not answer", llm.describe())))),
    }
}
