//! The command line. Doc comments here are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use runtime::audit::EventKind;
use runtime::AgentName;

/// Migrate a live legacy PostgreSQL database into a modern UUID-keyed schema, with a team of
/// agents that plan, map, move and prove every row, and keep an audit trail of every decision.
#[derive(Debug, Parser)]
#[command(name = "agentctl", version, propagate_version = true, max_term_width = 100)]
pub struct Opt {
    #[command(flatten)]
    pub db: DbOpts,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone, Default)]
pub struct DbOpts {
    /// The legacy database, as postgres://user:password@host:port/name (default:
    /// SOURCE_DATABASE_URL, or SOURCE_DB_HOST/PORT/USER/PASSWORD/NAME; a .env file is read).
    #[arg(long, global = true, value_name = "URL")]
    pub source: Option<String>,

    /// The modern database, which also holds agentctl's control schema (default:
    /// TARGET_DATABASE_URL, or TARGET_DB_HOST/PORT/USER/PASSWORD/NAME).
    #[arg(long, global = true, value_name = "URL")]
    pub target: Option<String>,

    /// The .env file to read.
    #[arg(long, global = true, value_name = "FILE", default_value = ".env")]
    pub env_file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Format {
    /// For people.
    #[default]
    Text,
    /// One JSON document on stdout, for scripts.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Plan, approve and carry out a migration goal, then report.
    Run(RunOpts),
    /// Show the plan for a goal without changing anything.
    Plan(PlanOpts),
    /// Show what the schema analysis agent finds in the source (or target) database.
    Analyze(AnalyzeOpts),
    /// Show the state of a run (the latest by default), from the control tables.
    Status(StatusOpts),
    /// Review the audit trail: every message, decision, tool call and batch of every run.
    #[command(subcommand)]
    Audit(AuditCmd),
}

#[derive(Debug, Args)]
pub struct GoalOpts {
    /// What to migrate, in words: "migrate technician_roles", "doctors and patients",
    /// "everything".
    #[arg(long, short)]
    pub goal: String,

    /// Plan only the named entities, not the parents they reference.
    #[arg(long)]
    pub only: bool,
}

#[derive(Debug, Args)]
pub struct RunOpts {
    #[command(flatten)]
    pub goal: GoalOpts,

    /// Approve the plan without asking. Without it, agentctl asks on the terminal, and refuses
    /// when there is no terminal to ask on.
    #[arg(long, short)]
    pub yes: bool,

    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct PlanOpts {
    #[command(flatten)]
    pub goal: GoalOpts,

    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct AnalyzeOpts {
    /// Read the target database instead of the source.
    #[arg(long)]
    pub of_target: bool,

    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct StatusOpts {
    /// The run's id or a unique prefix of it (default: the latest run).
    pub run: Option<String>,

    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// List runs: id, command and goal, start, end, outcome.
    List {
        /// How many runs, newest first.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// A run's events as a readable timeline.
    Show {
        /// The run's id or a unique prefix of it (default: the latest run).
        run: Option<String>,
        /// Only this agent's events (orchestrator, schema_analysis, planning, data_mapping,
        /// execution, validation, guidance, operator, runtime).
        #[arg(long)]
        agent: Option<AgentName>,
        /// Only events of this kind: run, message, decision, tool, llm, batch, error.
        #[arg(long)]
        kind: Option<EventKind>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Write a run's trail to stdout as JSON lines, or as one self-contained HTML page.
    Export {
        /// The run's id or a unique prefix of it.
        run: String,
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
    },
    /// Check that no event was edited, deleted or reordered; names the first bad one.
    Verify {
        /// The run to check (default: every run).
        run: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Html,
}
