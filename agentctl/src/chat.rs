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
use agents::orchestrator::PlanGoal;
use runtime::config::Config;
use runtime::RunId;
use serde_json::json;
use tools::control::{ControlStore, EventFilter};

use crate::cli::{ChatOpts, Format, LlmCmd};
use crate::exit::Exit;
use crate::plan_run::{end, mapping_file, print_results};
use crate::print_json;
use crate::session::{llm as configured_llm, Connections, Session, SessionOptions};

const HELP: &str = "You can say, for example:
  migrate the doctors and everything they need      (asks before it changes anything)
  how is it going?
  why did some orders fail?
  show me a failed payment
  undo the doctors                                   (asks before it deletes anything)
  what did the planning agent decide and why?
  exit";

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
    config: &'a Config,
    session: &'a Session,
    store: ControlStore,
    mapping: agents::data_mapping::MappingFile,
    mapping_origin: String,
    llm: Option<std::sync::Arc<dyn runtime::ports::Llm>>,
    entities: Vec<String>,
}

pub async fn chat(config: &Config, opts: ChatOpts) -> Result<(), Exit> {
    let conns = Connections::open(config, true).await?;
    let (mapping, mapping_origin) = mapping_file(&opts.mapping, &conns).await?;
    let tools = conns.tools()?;
    let llm = tools.llm.clone();
    let session = Session::start(&conns, "chat", None, tools, SessionOptions::from_config(config)).await?;
    let store = session.store.clone();
    let goal =
        PlanGoal { goal: String::new(), only: false, mapping: mapping.clone(), mapping_origin: mapping_origin.clone(), batch_size: None };
    let entities = match session.map(goal).await {
        Ok(set) => set.specs.iter().flat_map(|s| [s.source.name.clone(), s.target.name.clone()]).collect(),
        Err(e) => {
            eprintln!("note: could not read the mappings ({e}); table names will not be suggested");
            Vec::new()
        }
    };
    let chat = Chat { config, session: &session, store, mapping, mapping_origin, llm, entities };
    let result = chat.repl().await;
    end(session, result, "ended").await
}

impl Chat<'_> {
    fn databases(&self) -> String {
        let loc = |r: Result<&runtime::config::DbUrl, _>| r.map(|u| u.location()).unwrap_or_else(|_| "?".into());
        format!("{} → {}", loc(self.config.source()), loc(self.config.target()))
    }

    async fn repl(&self) -> Result<(), Exit> {
        let mut lines = Lines::open();
        let interactive = matches!(lines, Lines::Editor(_));
        let model = self.llm.as_ref().map(|l| l.describe()).unwrap_or_else(|| "no language model, offline".into());
        println!("agentctl chat: {} ({model}). Type `help` for what you can say.", self.databases());
        let prompt = if interactive { format!("[{}] > ", self.databases()) } else { String::new() };
        loop {
            let text = match tokio::task::block_in_place(|| lines.read(&prompt)) {
                Line::Text(t) => t,
                Line::Interrupted => continue,
                Line::End => break,
            };
            if text.trim().is_empty() {
                continue;
            }
            if !interactive {
                println!("> {}", text.trim());
            }
            let llm = self.llm.as_deref();
            let intent = understand(&self.session.ctx, llm, &text, &self.entities).await;
            if intent == Intent::Exit {
                break;
            }
            // Ctrl-C cancels the action, not the conversation.
            let answer = tokio::select! {
                r = self.act(&intent, &mut lines) => r,
                _ = tokio::signal::ctrl_c() => Err(Exit::interrupted("cancelled; what was committed stays, and you can ask how it stands")),
            };
            if let Err(e) = answer {
                // A lost database or a refused action is reported; the conversation goes on.
                println!("Sorry, that did not work: {}", e.message);
            }
            let _ = std::io::stdout().flush();
        }
        println!("Goodbye.");
        Ok(())
    }

    /// Asks a yes/no question; only `yes` (or `y`) is yes.
    fn confirm(&self, lines: &mut Lines, question: &str) -> bool {
        println!("{question}");
        let answer = match tokio::task::block_in_place(|| lines.read("yes/no > ")) {
            Line::Text(t) => t,
            _ => return false,
        };
        if !matches!(lines, Lines::Editor(_)) {
            println!("> {}", answer.trim());
        }
        matches!(answer.trim().to_lowercase().as_str(), "yes" | "y")
    }

    fn goal(&self, goal: &str, only: bool) -> PlanGoal {
        PlanGoal {
            goal: goal.to_owned(),
            only,
            mapping: self.mapping.clone(),
            mapping_origin: self.mapping_origin.clone(),
            batch_size: None,
        }
    }

    /// The run to answer questions about: this conversation's, if it migrated, else the latest.
    async fn run_in_question(&self) -> Result<Option<RunId>, Exit> {
        let mine = self.store.progress(self.session.run_id).await.map_err(Exit::failed)?;
        if !mine.is_empty() {
            return Ok(Some(self.session.run_id));
        }
        self.store.latest_migration_run().await.map_err(Exit::failed)
    }

    async fn act(&self, intent: &Intent, lines: &mut Lines) -> Result<(), Exit> {
        match intent {
            Intent::Help | Intent::Exit => println!("{HELP}"),
            Intent::Unknown => println!("I did not understand that. {HELP}"),
            Intent::Migrate { goal } => {
                let outcome = self.session.plan(self.goal(goal, false)).await.map_err(Exit::failed)?;
                println!("{}", outcome.explanation);
                let question = format!(
                    "This will copy {} tables (about {} rows: {} expected to move, {} that the new system will refuse) into {}. Type yes to go ahead.",
                    outcome.plan.entities().count(),
                    outcome.plan.estimated_rows(),
                    outcome.plan.expected_migrated(),
                    outcome.plan.expected_rejected(),
                    self.config.target().map(|t| t.location()).unwrap_or_default()
                );
                if !self.confirm(lines, &question) {
                    println!("All right, nothing was changed.");
                    return Ok(());
                }
                self.session.operator_decision(
                    format!("approved plan {} in the chat", &outcome.hash[..12]),
                    "the operator answered yes to the restated plan",
                    json!({"hash": outcome.hash, "goal": goal}),
                );
                let results = self.session.execute(&outcome, Default::default()).await.map_err(Exit::failed)?;
                print_results(&results, self.session.run_id);
                let failed: Vec<String> = results
                    .iter()
                    .filter_map(|r| r.validation.as_ref())
                    .filter(|v| !v.passed)
                    .map(|v| format!("{}: {}", v.target.name, v.detail))
                    .collect();
                if failed.is_empty() {
                    println!("Done, and checked: every row that moved holds the same values as in the old system.");
                } else {
                    println!("Done, but the check found problems: {}", failed.join("; "));
                }
            }
            Intent::Status => {
                let Some(run) = self.run_in_question().await? else {
                    println!("Nothing has been migrated yet.");
                    return Ok(());
                };
                for p in self.store.progress(run).await.map_err(Exit::failed)? {
                    println!(
                        "  {}: {} — {} of {} rows moved, {} could not be moved",
                        p.target_table.trim_start_matches("public."),
                        p.state,
                        p.migrated,
                        p.rows_read,
                        p.rejected
                    );
                }
            }
            Intent::WhyFailed { entity } => {
                let Some(run) = self.run_in_question().await? else {
                    println!("Nothing has been migrated yet, so nothing has failed.");
                    return Ok(());
                };
                let groups = self.store.rejection_groups(run).await.map_err(Exit::failed)?;
                let groups: Vec<_> = groups.iter().filter(|g| entity.as_deref().is_none_or(|e| names_match(e, &g.source_table))).collect();
                if groups.is_empty() {
                    println!("No rows{} were refused.", entity.as_ref().map(|e| format!(" of {e}")).unwrap_or_default());
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
            }
            Intent::ShowFailed { entity } => {
                let Some(run) = self.run_in_question().await? else {
                    println!("Nothing has been migrated yet.");
                    return Ok(());
                };
                let groups = self.store.rejection_groups(run).await.map_err(Exit::failed)?;
                let table = groups
                    .iter()
                    .find(|g| entity.as_deref().is_none_or(|e| names_match(e, &g.source_table)))
                    .map(|g| g.source_table.clone());
                let Some(table) = table else {
                    println!("No refused row{} to show.", entity.as_ref().map(|e| format!(" of {e}")).unwrap_or_default());
                    return Ok(());
                };
                if let Some((key, reason, row)) = self.store.rejected_example(run, &table).await.map_err(Exit::failed)? {
                    println!("Row {key} of {table} was not moved: {reason}\nWhat the old system holds:");
                    print_json(&row);
                }
            }
            Intent::Undo { goal } => {
                if goal.trim().is_empty() {
                    println!("Which tables should I take back? For example: undo the doctors.");
                    return Ok(());
                }
                let question = format!(
                    "This deletes from {} every row agentctl created of {goal} (rows it did not create stay). Type yes to go ahead.",
                    self.config.target().map(|t| t.location()).unwrap_or_default()
                );
                if !self.confirm(lines, &question) {
                    println!("All right, nothing was deleted.");
                    return Ok(());
                }
                let done = self.session.rollback(self.goal(goal, true)).await.map_err(Exit::failed)?;
                for d in &done {
                    println!("  {}: {} rows deleted, {} kept", d.target.name, d.deleted, d.kept);
                }
            }
            Intent::Decisions { agent } => {
                let Some(run) = self.run_in_question().await? else {
                    println!("No migration has been planned yet.");
                    return Ok(());
                };
                let agent = agent.clone().unwrap_or_else(|| "planning".into());
                self.session.flush_audit().await?;
                let filter = EventFilter { agent: Some(agent.clone()), kind: Some("decision".into()) };
                let events = self.store.events(run, &filter).await.map_err(Exit::failed)?;
                if events.is_empty() {
                    println!("The {agent} agent recorded no decision in that run.");
                }
                for e in events.iter().rev().take(8).rev() {
                    let detail: serde_json::Value = serde_json::from_str(&e.detail).unwrap_or_default();
                    println!("  {}\n    because {}", e.summary, detail["rationale"].as_str().unwrap_or("(no reason recorded)"));
                }
            }
        }
        Ok(())
    }
}

/// Whether an operator's word for a table names this table ("orders", "order", "dispatch_order").
fn names_match(word: &str, table: &str) -> bool {
    let table = table.rsplit('.').next().unwrap_or(table);
    let key = agents::planning::entity_key(word);
    key == agents::planning::entity_key(table) || key == agents::planning::entity_key(table.trim_start_matches("dispatch_"))
}

/// What an operator can do about a kind of rejection.
fn advice(rule: &str) -> &'static str {
    match rule.split(':').next().unwrap_or("") {
        "reference" => {
            "Their parent row did not move (it was refused too, or is missing in the old system); fix the parent, then migrate again."
        }
        "not_null" => "A value the new system requires is empty in the old one; fill it in there, or set a default in the mapping file.",
        "enum" | "values" => "The value is not one the new system knows; map it to a known value in the mapping file.",
        "check" | "domain" => "The value breaks a rule of the new system; correct it in the old system.",
        "refused_by_target" => {
            "The new database refused it, usually a duplicate; decide which row is right and remove the other in the old system."
        }
        _ => "Correct the row in the old system, then migrate again.",
    }
}

/// `agentctl llm check`: which model is active and whether it answers.
pub async fn llm(config: &Config, cmd: LlmCmd) -> Result<(), Exit> {
    let LlmCmd::Check { format } = cmd;
    let Some(llm) = configured_llm(config)? else {
        let text = "no language model is configured (set OPENAI_API_KEY, or OPENAI_BASE_URL for a local server such as Ollama or vLLM, and AGENTCTL_MODEL); the agents work offline";
        match format {
            Format::Json => print_json(&json!({"configured": false, "detail": text})),
            Format::Text => println!("{text}"),
        }
        return Ok(());
    };
    let request =
        runtime::ports::LlmRequest { system: "Answer briefly.".into(), turns: vec![("user".into(), "Say OK.".into())], tool: None };
    match llm.ask(&request).await {
        Ok(reply) => {
            match format {
                Format::Json => print_json(&json!({"configured": true, "provider": llm.describe(), "answers": true, "reply": reply})),
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
        Err(e) => Err(Exit::failed(format!("{} does not answer: {}", llm.describe(), e.0))),
    }
}
