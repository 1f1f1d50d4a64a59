//! The user guidance agent: explains, in words an office manager understands, what is about to
//! happen and what happened (templates over the typed plan), and understands what the operator
//! asks in the chat: the common phrasings by an offline parser, the rest, when a model is
//! configured, by the model's typed reading.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use runtime::context::RunContext;
use runtime::domain::CodeRequest;
use runtime::domain::{Inclusion, MigrationPlan, TableName};
use runtime::envelope::{AgentError, Envelope};
use runtime::AgentName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub enum GuidanceMsg {
    ExplainPlan(Envelope<MigrationPlan>, RpcReplyPort<Result<String, AgentError>>),
    /// Code that answers a question about a table, written by the model through the `run_code`
    /// tool; `None` without a model (the caller falls back to built-in statistics).
    WriteCode(Envelope<CodeQuestion>, RpcReplyPort<Result<Option<CodeRequest>, AgentError>>),
}

/// A question about a legacy table, to be answered by code run on sample rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CodeQuestion {
    pub question: String,
    pub table: TableName,
    pub columns: Vec<String>,
    pub sample: usize,
}

#[derive(Clone)]
pub struct GuidanceAgent;

#[derive(Clone)]
pub struct GuidanceArgs {
    pub ctx: Arc<RunContext>,
    /// Writes the plan's risk narrative, when configured.
    pub llm: Option<Arc<dyn runtime::ports::Llm>>,
}

impl Actor for GuidanceAgent {
    type Msg = GuidanceMsg;
    type State = GuidanceArgs;
    type Arguments = GuidanceArgs;

    async fn pre_start(
        &self,
        _: ActorRef<GuidanceMsg>,
        args: GuidanceArgs,
    ) -> Result<GuidanceArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _: ActorRef<GuidanceMsg>,
        msg: GuidanceMsg,
        state: &mut GuidanceArgs,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            GuidanceMsg::ExplainPlan(env, reply) => {
                let mut text = explain_plan(&env.body);
                if let Some(llm) = &state.llm {
                    // The model adds its narrative of the risks; the facts above stay the
                    // template's.
                    let facts = serde_json::json!({"plan": render_facts(&env.body)}).to_string();
                    let system = prompts::fill(prompts::RISKS, &[]).unwrap_or_default();
                    match crate::llm::ask_text(
                        &state.ctx,
                        llm.as_ref(),
                        AgentName::Guidance,
                        "risk narrative",
                        &system,
                        &facts,
                        None,
                    )
                    .await
                    {
                        Ok(narrative) => text.push_str(&format!(
                            "\nWhat to watch, in the model's words: {}",
                            narrative.trim()
                        )),
                        Err(why) => state.ctx.decision(
                            AgentName::Guidance,
                            "explained the plan without the model",
                            format!("the model failed: {why}"),
                            (),
                        ),
                    }
                }
                state.ctx.decision(
                    AgentName::Guidance,
                    "explained the plan to the operator",
                    "the operator approves what they understand; the explanation is built from \
                        the plan itself",
                    &text,
                );
                let _ = reply.send(Ok(text));
            }
            GuidanceMsg::WriteCode(env, reply) => {
                let q = env.body;
                let Some(llm) = &state.llm else {
                    let _ = reply.send(Ok(None));
                    return Ok(());
                };
                let system = prompts::fill(
                    prompts::CODE,
                    &[
                        ("table", &q.table.to_string()),
                        ("columns", &q.columns.join(", ")),
                        ("sample", &q.sample.to_string()),
                    ],
                )
                .unwrap_or_default();
                let written = crate::llm::ask_typed::<CodeRequest>(
                    &state.ctx,
                    llm.as_ref(),
                    AgentName::Guidance,
                    crate::code::RUN_CODE,
                    crate::code::RUN_CODE_DESCRIPTION,
                    &system,
                    &q.question,
                )
                .await;
                let _ = reply.send(match written {
                    Ok(code) => {
                        state.ctx.decision(
                            AgentName::Guidance,
                            format!("the model wrote {} code to answer: {}", code.lang, q.question),
                            "a question about the data is answered by code run on sample rows in \
                                the sandbox",
                            &code,
                        );
                        Ok(Some(code))
                    }
                    Err(why) => Err(AgentError::of(
                        AgentName::Guidance,
                        why.context("the model wrote no code"),
                    )),
                });
            }
        }
        Ok(())
    }
}

/// The facts of a plan a narrative may use: entities, rows, what will be refused and why.
fn render_facts(plan: &MigrationPlan) -> serde_json::Value {
    let entities: Vec<serde_json::Value> = plan
        .entities()
        .map(|e| {
            let f = e.forecast.as_ref();
            serde_json::json!({"table": e.table.to_string(), "rows": e.estimated_rows,
                "will_move": f.map(|f| f.migrate), "will_be_refused": f.map(|f| f.reject),
                "reasons": f.map(|f| f.reasons.iter().map(|r| r.reason.clone()).collect::<Vec<_>>())})
        })
        .collect();
    serde_json::json!({"goal": plan.goal, "steps": plan.waves.len(), "entities": entities})
}

/// The plan in plain words.
pub fn explain_plan(plan: &MigrationPlan) -> String {
    let entities: Vec<_> = plan.entities().collect();
    let mut out = format!(
        "I will copy {} {} (about {} rows) in {} {}.",
        entities.len(),
        if entities.len() == 1 { "table" } else { "tables" },
        plan.estimated_rows(),
        plan.waves.len(),
        if plan.waves.len() == 1 { "step" } else { "steps" },
    );
    for (i, wave) in plan.waves.iter().enumerate() {
        let names: Vec<String> = wave.iter().map(|e| e.table.to_string()).collect();
        out.push_str(&format!("\nStep {}: {}.", i + 1, names.join(", ")));
    }
    let added: Vec<String> = entities
        .iter()
        .filter_map(|e| match &e.inclusion {
            Inclusion::RequiredBy { entities } => Some(format!(
                "{} (because {} point to it)",
                e.table,
                entities.iter().map(ToString::to_string).collect::<Vec<_>>().join(" and ")
            )),
            Inclusion::Requested => None,
        })
        .collect();
    if !added.is_empty() {
        out.push_str(&format!(
            "\nI added {} you did not name: {}.",
            if added.len() == 1 { "one table" } else { "tables" },
            added.join("; ")
        ));
    }
    let rejected: Vec<String> = entities
        .iter()
        .filter_map(|e| e.forecast.as_ref().filter(|f| f.reject > 0).map(|f| (e, f)))
        .map(|(e, f)| {
            let first = f.reasons.first().map(|r| r.reason.as_str()).unwrap_or("");
            format!(
                "{} of {} {} (mostly: {first})",
                f.reject,
                f.rows,
                e.target.as_ref().unwrap_or(&e.table)
            )
        })
        .collect();
    if entities.iter().any(|e| e.forecast.is_none()) {
        out.push_str(
            "\nI did not read the rows ahead, as you approved already: any row that does not \
                fit the new database will be set aside with the reason, not lost.",
        );
    } else if rejected.is_empty() {
        out.push_str("\nI read every row ahead: all of them fit the new database.");
    } else {
        out.push_str(&format!(
            "\nI read every row ahead. {} rows will not fit the new database and will be set \
                aside with the reason, not lost: {}.",
            plan.expected_rejected(),
            rejected.join("; ")
        ));
    }
    if entities.iter().any(|e| !e.deferred_foreign_keys.is_empty()) {
        out.push_str(
            "\nSome rows point to other rows of the same kind; I copy them first and \
            connect them in a second pass.",
        );
    }
    if let Some(room) = room(entities.iter().map(|e| e.bytes).sum()) {
        out.push('\n');
        out.push_str(&room);
    }
    out
}

/// What the load will need on the target's disk, said when it is enough to matter (100 MB).
fn room(bytes: i64) -> Option<String> {
    (bytes >= 100_000_000).then(|| {
        format!(
            "The new database needs room for more than {} (what these tables take in the old one; \
                the new keys are larger). PostgreSQL does not tell me how much room its disk has \
                left, so I cannot check that: make sure it has it. If the disk fills up, I stop \
                with that reason, and nothing is lost.",
            size(bytes)
        )
    })
}

/// A size in the unit an operator reads: `740 kB`, `12.3 MB`, `1.8 GB`.
fn size(bytes: i64) -> String {
    let b = bytes as f64;
    if b < 1e6 {
        format!("{:.0} kB", (b / 1e3).max(1.0))
    } else if b < 1e9 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.1} GB", b / 1e9)
    }
}

/// What an operator asks or commands, in plain words, understood.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "intent", rename_all = "snake_case")]
pub enum Intent {
    /// Move these tables (in the words `run --goal` takes), with what they need.
    Migrate {
        goal: String,
    },
    /// How the current or latest migration is going.
    Status,
    /// Why rows were not moved, for one table or all.
    WhyFailed {
        entity: Option<String>,
    },
    /// One row that was not moved, with its reason.
    ShowFailed {
        entity: Option<String>,
    },
    /// Take back what was moved of these tables.
    Undo {
        goal: String,
    },
    /// What the data of one legacy table looks like; with a question about it (how many phone
    /// numbers look invalid, which countries are most common), answered by code run on sample
    /// rows.
    Profile {
        table: Option<String>,
        question: Option<String>,
    },
    /// What changed in the old system since the last sync, for these tables (empty: all);
    /// nothing is changed.
    Changes {
        goal: String,
    },
    /// Bring the new system up to date with the old one's changes, for these tables (empty:
    /// all).
    Sync {
        goal: String,
    },
    /// What an agent decided, and why.
    Decisions {
        agent: Option<String>,
    },
    /// Keep these tables (empty: all) in step on a schedule: `every` an interval (`1h`, `1d`)
    /// or a cron expression in UTC (`0 2 * * *`).
    Schedule {
        goal: String,
        every: String,
    },
    /// What tables a database holds, with their rows: the old one, or the new one.
    Tables {
        new: bool,
    },
    /// How many rows of one table there are, in both databases.
    Count {
        entity: String,
    },
    /// How the last migration ended: rows moved and set aside, its validation.
    Outcome,
    /// Whether anything was lost: every row accounted for, validated, the trail intact.
    Safety,
    Help,
    Exit,
    /// Not understood.
    Unknown,
}

/// The offline intent parser: the common phrasings, by their words.
pub fn parse_intent(text: &str) -> Intent {
    let t = text
        .trim()
        .to_lowercase()
        .replace("what's", "what is")
        .replace("how's", "how is")
        .replace('\u{2019}', "'");
    let t = t.trim_end_matches(['?', '!', '.']).trim();
    // Each word as typed, or the word it is a slip of the keyboard for.
    let words: Vec<&str> = t
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty())
        .map(corrected)
        .collect();
    let text = words.join(" ");
    let said = Said { text: &text, words: &words };
    conversation(&said)
        .or_else(|| question(&said))
        .or_else(|| action(&said))
        .unwrap_or(Intent::Unknown)
}

/// What the operator said: the words, slips corrected, and all of them as one text.
struct Said<'a> {
    text: &'a str,
    words: &'a [&'a str],
}

impl Said<'_> {
    fn has(&self, word: &str) -> bool {
        self.words.contains(&word)
    }

    /// The words after the first of `keys`, less articles and "please".
    fn after(&self, keys: &[&str]) -> Option<String> {
        let i = self.words.iter().position(|w| keys.contains(w))?;
        let rest: Vec<&str> = self.words[i + 1..]
            .iter()
            .copied()
            .filter(|w| !matches!(*w, "the" | "a" | "an" | "some" | "of" | "please"))
            .collect();
        (!rest.is_empty()).then(|| rest.join(" "))
    }

    /// The table named after the first of `keys`: [`Said::after`] less the words about rows
    /// that failed or moved.
    fn entity_after(&self, keys: &[&str]) -> Option<String> {
        self.after(keys)
            .map(|s| {
                s.split(' ')
                    .filter(|w| {
                        !matches!(
                            *w,
                            "fail"
                                | "failed"
                                | "rows"
                                | "row"
                                | "rejected"
                                | "not"
                                | "move"
                                | "moved"
                                | "migrate"
                                | "migrated"
                                | "did"
                                | "were"
                                | "was"
                                | "me"
                                | "one"
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .filter(|s| !s.is_empty())
    }

    /// It starts with a greeting.
    fn greeting(&self) -> bool {
        self.words.first().is_some_and(|w| {
            matches!(*w, "hi" | "hello" | "hey" | "hiya" | "morning" | "afternoon")
        })
    }
}

/// Greetings, help and leaving; what the operator asks to count.
fn conversation(w: &Said<'_>) -> Option<Intent> {
    Some(match () {
        _ if w.text.is_empty() => Intent::Unknown,
        _ if matches!(w.text, "exit" | "quit" | "bye" | "q" | "goodbye") => Intent::Exit,
        _ if matches!(w.text, "help" | "?" | "what can you do" | "what can i ask")
            || w.text.contains("what can you do")
            || w.text.contains("what can i") =>
        {
            Intent::Help
        }
        _ if w.greeting() && w.words.len() <= 3 => Intent::Help,
        _ if w.has("how") && w.has("many") && !w.has("failed") && !w.has("rejected") => {
            Intent::Count {
                entity: w.entity_after(&["many"]).map(|e| strip_filler(&e)).unwrap_or_default(),
            }
        }
        _ if (w.has("number") && w.has("of")) || w.has("count") => Intent::Count {
            entity: w.entity_after(&["of", "count"]).map(|e| strip_filler(&e)).unwrap_or_default(),
        },
        _ => return None,
    })
}

/// Questions about the data, the outcome, the decisions and the failures.
fn question(w: &Said<'_>) -> Option<Intent> {
    Some(match () {
        _ if (w.has("safe")
            || w.has("lost")
            || w.has("lose")
            || w.has("trust")
            || w.has("intact")
            || w.has("complete"))
            || (w.has("anything") && w.has("missing"))
            || (w.has("data")
                && (w.has("ok") || w.has("okay") || w.has("correct") || w.has("right"))) =>
        {
            Intent::Safety
        }
        _ if (w.has("did") && (w.has("go") || w.has("work") || w.has("succeed")))
            || w.has("successful")
            || w.has("result")
            || w.has("results")
            || w.has("outcome")
            || w.has("summary") =>
        {
            Intent::Outcome
        }
        _ if (w.has("what") || w.has("which") || w.has("list") || w.has("show"))
            && (w.has("tables") || w.has("database") || w.has("system") || w.has("data"))
            && !w.has("changed")
            && !w.has("changes")
            && !w.has("decide")
            && !w.has("decided") =>
        {
            Intent::Tables { new: w.has("new") || w.has("modern") || w.has("target") }
        }
        _ if w.has("why")
            && (w.has("decide")
                || w.has("decided")
                || w.has("before")
                || w.has("first")
                || w.has("order")) =>
        {
            Intent::Decisions {
                agent: w
                    .words
                    .iter()
                    .find(|w| ["planning", "execution", "validation", "mapping"].contains(w))
                    .map(|w| w.to_string()),
            }
        }
        _ if (w.has("what") || w.has("show"))
            && (w.has("decide") || w.has("decided") || w.has("decision") || w.has("decisions")) =>
        {
            Intent::Decisions {
                agent: w
                    .words
                    .iter()
                    .find(|w| ["planning", "execution", "validation", "mapping"].contains(w))
                    .map(|w| w.to_string()),
            }
        }
        _ if w.has("why") => Intent::WhyFailed {
            entity: w
                .entity_after(&["some", "why", "did", "were", "the"])
                .map(|e| strip_leading(&e)),
        },
        _ if (w.has("show") || w.has("see") || w.has("example"))
            && (w.has("failed") || w.has("rejected") || w.has("bad")) =>
        {
            Intent::ShowFailed { entity: w.entity_after(&["failed", "rejected", "bad"]) }
        }
        _ if w.has("profile") || w.has("statistics") || w.has("stats") => Intent::Profile {
            table: w
                .after(&["profile", "statistics", "stats", "of", "for", "on"])
                .map(|s| {
                    s.split(' ')
                        .filter(|w| !matches!(*w, "of" | "for" | "on" | "table"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .filter(|s| !s.is_empty()),
            question: None,
        },
        _ => return None,
    })
}

/// Requests to act (undo, schedule, sync, migrate) and to know how it goes.
fn action(w: &Said<'_>) -> Option<Intent> {
    Some(match () {
        _ if w.has("undo")
            || w.has("rollback")
            || (w.has("roll") && w.has("back"))
            || w.has("remove") =>
        {
            Intent::Undo {
                goal: w.after(&["undo", "rollback", "back", "remove"]).unwrap_or_default(),
            }
        }
        // "Sync the orders every night", "a nightly sync of the patients": a job, not a sync now.
        _ if (w.has("every")
            || w.has("nightly")
            || w.has("daily")
            || w.has("hourly")
            || w.has("weekly")
            || w.has("schedule"))
            && (w.has("sync")
                || w.has("synchronize")
                || w.has("update")
                || w.has("schedule")
                || w.has("step")) =>
        {
            Intent::Schedule { goal: scheduled(w.words), every: interval(w.words) }
        }
        // "What changed since the last sync?" asks; "sync the orders", "apply the changes" act.
        _ if (w.has("changed") || w.has("changes") || w.has("new"))
            && (w.has("what") || w.has("anything") || w.has("which") || w.has("show")) =>
        {
            changes(w.entity_after(&["in", "to", "for"]).unwrap_or_default())
        }
        _ if w.has("sync")
            || w.has("synchronize")
            || w.has("resync")
            || (w.has("catch") && w.has("up"))
            || (w.has("up") && w.has("date"))
            || (w.has("apply") && w.has("changes")) =>
        {
            let goal =
                w.after(&["sync", "synchronize", "resync", "up", "date"]).unwrap_or_default();
            let goal = goal.trim_start_matches("to date").trim().to_owned();
            Intent::Sync { goal: if goal == "everything" { String::new() } else { goal } }
        }
        _ if w.has("changed") || w.has("changes") => {
            changes(w.entity_after(&["in", "to", "for"]).unwrap_or_default())
        }
        _ if w.has("status")
            || w.has("progress")
            || (w.has("how") && (w.has("going") || w.has("far")))
            || w.has("done") =>
        {
            Intent::Status
        }
        _ if w.has("migrate") || w.has("move") || w.has("copy") || w.has("transfer") => {
            let goal = w.after(&["migrate", "move", "copy", "transfer"]).unwrap_or_default();
            let goal = goal.trim_end_matches(" over").trim_end_matches(" first").to_owned();
            if goal.is_empty() {
                Intent::Unknown
            } else {
                Intent::Migrate { goal }
            }
        }
        _ => return None,
    })
}

/// The keywords a slip of the keyboard is taken back to: one letter off, or two in a long word.
const KEYWORDS: [&str; 26] = [
    "migrate",
    "status",
    "progress",
    "failed",
    "rejected",
    "profile",
    "rollback",
    "changes",
    "changed",
    "decide",
    "decided",
    "decision",
    "decisions",
    "synchronize",
    "tables",
    "database",
    "safe",
    "many",
    "example",
    "show",
    "everything",
    "migration",
    "successful",
    "results",
    "happened",
    "statistics",
];

fn corrected(word: &str) -> &str {
    if word.len() < 4 || KEYWORDS.contains(&word) {
        return word;
    }
    let allowed = if word.len() >= 8 { 2 } else { 1 };
    KEYWORDS
        .iter()
        .copied()
        .find(|k| k.len().abs_diff(word.len()) <= allowed && edits(word, k) <= allowed)
        .unwrap_or(word)
}

/// The edit distance between two words (insertions, deletions, substitutions, swaps).
pub fn edits(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// The tables a scheduling request names: the words that are neither its verbs nor its times.
fn scheduled(words: &[&str]) -> String {
    let skip = [
        "sync",
        "synchronize",
        "update",
        "schedule",
        "a",
        "an",
        "the",
        "of",
        "every",
        "each",
        "night",
        "nightly",
        "day",
        "daily",
        "hour",
        "hourly",
        "week",
        "weekly",
        "minute",
        "minutes",
        "hours",
        "days",
        "please",
        "keep",
        "in",
        "step",
        "up",
        "to",
        "date",
        "at",
        "job",
        "everything",
        "all",
        "and",
    ];
    let goal: Vec<&str> = words
        .iter()
        .copied()
        .filter(|w| !skip.contains(w) && !w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    goal.join(" ")
}

/// The schedule a request names: "every night" at 02:00 UTC, "hourly", "every 15 minutes".
fn interval(words: &[&str]) -> String {
    let has = |w: &str| words.contains(&w);
    let n = words.iter().find_map(|w| w.parse::<u32>().ok());
    match () {
        _ if has("night") || has("nightly") => "0 2 * * *".into(),
        _ if has("minute") || has("minutes") => format!("{}m", n.unwrap_or(1)),
        _ if has("hour") || has("hours") || has("hourly") => format!("{}h", n.unwrap_or(1)),
        _ if has("week") || has("weekly") => format!("{}d", 7 * n.unwrap_or(1)),
        _ => format!("{}d", n.unwrap_or(1)),
    }
}

/// "patients do we have in the old system" → "patients".
fn strip_filler(s: &str) -> String {
    s.split(' ')
        .filter(|w| {
            !matches!(
                *w,
                "do" | "we"
                    | "have"
                    | "are"
                    | "there"
                    | "in"
                    | "is"
                    | "old"
                    | "new"
                    | "database"
                    | "system"
                    | "total"
                    | "now"
                    | "got"
                    | "does"
                    | "it"
                    | "hold"
                    | "table"
                    | "rows"
                    | "records"
                    | "of"
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `Intent::Changes` of the tables named, without the words around them.
fn changes(named: String) -> Intent {
    let goal: Vec<&str> = named
        .split(' ')
        .filter(|w| {
            !matches!(*w, "since" | "last" | "the" | "sync" | "old" | "system" | "legacy" | "")
        })
        .collect();
    Intent::Changes { goal: goal.join(" ") }
}

/// "some orders fail" → "orders".
fn strip_leading(s: &str) -> String {
    s.split(' ').filter(|w| !matches!(*w, "some" | "did" | "the")).collect::<Vec<_>>().join(" ")
}

/// What the operator said, understood: by the model when one is configured (its answer is an
/// [`Intent`] through a typed tool call), else, or when the model fails, by the offline parser.
pub async fn understand(
    ctx: &RunContext,
    llm: Option<&dyn runtime::ports::Llm>,
    text: &str,
    entities: &[String],
) -> Intent {
    let offline = parse_intent(text);
    let Some(llm) = llm else { return offline };
    // "How many" of something that is no table ("in how many countries are our customers?") is
    // a question about the data: the model's to read.
    let counts_a_table = |entity: &str| {
        let key = runtime::mapping::entity_key(entity);
        entities.iter().any(|e| {
            runtime::mapping::entity_key(e.trim_start_matches("dispatch_")) == key
                || runtime::mapping::entity_key(e) == key
        })
    };
    let settled = match &offline {
        Intent::Unknown => false,
        Intent::Count { entity } => counts_a_table(entity),
        _ => true,
    };
    if settled {
        return offline;
    }
    let system = match prompts::fill(prompts::INTENT, &[("entities", &entities.join(", "))]) {
        Ok(s) => s,
        Err(e) => return fail_offline(ctx, text, &e.to_string(), offline),
    };
    match crate::llm::ask_typed::<Intent>(
        ctx,
        llm,
        AgentName::Guidance,
        "operator_intent",
        "What the operator wants",
        &system,
        text,
    )
    .await
    {
        Ok(intent) => intent,
        Err(why) => fail_offline(ctx, text, &why.message, offline),
    }
}

fn fail_offline(ctx: &RunContext, text: &str, why: &str, offline: Intent) -> Intent {
    ctx.decision(
        AgentName::Guidance,
        "understood the operator without the model",
        format!("the model failed: {why}"),
        text,
    );
    offline
}

#[cfg(test)]
mod intent_tests {
    use super::*;

    #[test]
    fn sizes_read_in_the_unit_an_operator_expects() {
        assert_eq!(size(0), "1 kB");
        assert_eq!(size(740_000), "740 kB");
        assert_eq!(size(12_345_678), "12.3 MB");
        assert_eq!(size(1_800_000_000), "1.8 GB");
        assert_eq!(room(99_000_000), None, "a small load needs no warning");
        assert!(room(1_800_000_000)
            .is_some_and(|r| r.starts_with("The new database needs room for more than 1.8 GB")));
    }

    #[test]
    fn common_phrasings_map_to_their_intents() {
        let migrate = |g: &str| Intent::Migrate { goal: g.into() };
        let cases: Vec<(&str, Intent)> = vec![
            (
                "migrate the doctors and everything they need",
                migrate("doctors and everything they need"),
            ),
            ("please move the patients over", migrate("patients")),
            ("copy technician_roles", migrate("technician_roles")),
            ("Migrate everything except messages", migrate("everything except messages")),
            ("how is it going?", Intent::Status),
            ("status", Intent::Status),
            ("how far along are we", Intent::Status),
            ("why did some orders fail?", Intent::WhyFailed { entity: Some("orders".into()) }),
            ("why did rows fail", Intent::WhyFailed { entity: None }),
            ("show me a failed payment", Intent::ShowFailed { entity: Some("payment".into()) }),
            ("show me a rejected row", Intent::ShowFailed { entity: None }),
            ("undo the doctors", Intent::Undo { goal: "doctors".into() }),
            ("roll back offices", Intent::Undo { goal: "offices".into() }),
            (
                "what did the planning agent decide and why?",
                Intent::Decisions { agent: Some("planning".into()) },
            ),
            ("why were offices migrated before doctors?", Intent::Decisions { agent: None }),
            (
                "profile the customers",
                Intent::Profile { table: Some("customers".into()), question: None },
            ),
            (
                "show statistics for technician_roles",
                Intent::Profile { table: Some("technician_roles".into()), question: None },
            ),
            ("what changed since the last sync?", Intent::Changes { goal: String::new() }),
            ("what changed in the patients", Intent::Changes { goal: "patients".into() }),
            ("sync the orders", Intent::Sync { goal: "orders".into() }),
            ("catch up", Intent::Sync { goal: String::new() }),
            ("bring everything up to date", Intent::Sync { goal: String::new() }),
            ("apply the changes", Intent::Sync { goal: String::new() }),
            ("anything new in the old system?", Intent::Changes { goal: String::new() }),
            ("help", Intent::Help),
            ("exit", Intent::Exit),
            ("quit", Intent::Exit),
            ("the weather is nice", Intent::Unknown),
            ("hi, what can you do?", Intent::Help),
            ("hello", Intent::Help),
            ("what's in the old database?", Intent::Tables { new: false }),
            ("which tables are in the new system", Intent::Tables { new: true }),
            ("how many patients do we have?", Intent::Count { entity: "patients".into() }),
            (
                "how many pateints are there in the new database",
                Intent::Count { entity: "pateints".into() },
            ),
            ("number of doctors", Intent::Count { entity: "doctors".into() }),
            ("how did it go?", Intent::Outcome),
            ("did the migartion work", Intent::Outcome),
            ("is everything safe?", Intent::Safety),
            ("did we lose anything", Intent::Safety),
            ("stauts", Intent::Status),
            (
                "sync the orders every night",
                Intent::Schedule { goal: "orders".into(), every: "0 2 * * *".into() },
            ),
            (
                "schedule a sync of the patients every 15 minutes",
                Intent::Schedule { goal: "patients".into(), every: "15m".into() },
            ),
            (
                "keep everything in step hourly",
                Intent::Schedule { goal: String::new(), every: "1h".into() },
            ),
            ("why did some ordres fail", Intent::WhyFailed { entity: Some("ordres".into()) }),
            ("migrate", Intent::Unknown),
        ];
        for (text, want) in cases {
            assert_eq!(parse_intent(text), want, "{text:?}");
        }
    }
}
