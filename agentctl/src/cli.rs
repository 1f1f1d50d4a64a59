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

    #[command(flatten)]
    pub llm: LlmOpts,

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

/// The language model the planning and guidance agents may use (configured by
/// OPENAI_API_KEY, OPENAI_BASE_URL and AGENTCTL_MODEL; without them they work offline).
#[derive(Debug, Args, Clone, Default)]
pub struct LlmOpts {
    /// Store every exchange with the model in DIR, keyed by a hash of the request.
    #[arg(long, global = true, value_name = "DIR", conflicts_with = "llm_replay")]
    pub llm_record: Option<PathBuf>,

    /// Answer from the exchanges stored in DIR instead of asking the model (offline,
    /// deterministic).
    #[arg(long, global = true, value_name = "DIR")]
    pub llm_replay: Option<PathBuf>,

    /// Tokens the run may spend; once spent, the agents carry on offline and say so.
    #[arg(long, global = true, value_name = "N")]
    pub max_tokens_total: Option<u64>,
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
    /// Profile a source table: a script run on sample rows in the sandbox (--script), or code the
    /// model writes to answer a question (--ask); without either, or without the sandbox, the
    /// database's own column statistics.
    Profile(ProfileOpts),
    /// Show the state of a run (the latest by default), from the control tables.
    Status(StatusOpts),
    /// Prove what the target holds: accounting, every row's values, money totals, references.
    Validate(EntitiesOpts),
    /// The migration report of a run: per entity and overall, rejections grouped by reason.
    Report(ReportOpts),
    /// Delete what agentctl migrated (never rows it did not create), children before parents.
    Rollback(RollbackOpts),
    /// Review the audit trail: every message, decision, tool call and batch of every run.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// How each legacy table maps onto its modern table.
    #[command(subcommand)]
    Mapping(MappingCmd),
    /// The reference legacy database: generate it, or show its expected fault report.
    #[command(subcommand)]
    Dataset(DatasetCmd),
    /// Write a UUID-keyed target schema for a source that has none.
    #[command(subcommand)]
    Schema(SchemaCmd),
    /// Measurements (figures for bench/RESULTS.md).
    #[command(subcommand)]
    Bench(BenchCmd),
    /// The whole job on a private PostgreSQL: reference data, target schema, migration, report.
    Demo(DemoOpts),
    /// Talk to agentctl in plain words: migrate, ask how it goes, why rows failed, undo.
    Chat(ChatOpts),
    /// Which language model is configured, and whether it answers.
    #[command(subcommand)]
    Llm(LlmCmd),
    /// Run untrusted code (custom transforms, ad-hoc scripts) in the hardened Docker sandbox.
    #[command(subcommand)]
    Sandbox(SandboxCmd),
    /// Keep the target in step after the migration: what changed in the source, and applying it.
    #[command(subcommand)]
    Diff(DiffCmd),
    /// Rows changed on both sides since the last sync: list them, settle the held ones.
    #[command(subcommand)]
    Conflict(ConflictCmd),
    /// Scheduled synchronization jobs, and the daemon that runs them.
    #[command(subcommand)]
    Sync(SyncCmd),
}

#[derive(Debug, Subcommand)]
pub enum DiffCmd {
    /// List, per entity, the rows new, changed and deleted in the source and the conflicts,
    /// without changing anything (stored in agentctl.data_differentials for `diff migrate`).
    Analyze(DiffAnalyzeOpts),
    /// Apply what the last analysis found (analysing first the entities it did not cover):
    /// inserts, updates, deletes (soft or hard, per entity), conflicts by each entity's policy.
    Migrate(DiffMigrateOpts),
    /// After applying: source and target agree for every entity (the validation agent's checks).
    Validate(EntitiesOpts),
}

#[derive(Debug, Args)]
pub struct DiffAnalyzeOpts {
    #[command(flatten)]
    pub diff: EntitiesOpts,

    /// Read every source row, also of tables whose trusted `updated_at` allows reading only
    /// the rows stamped since the last analysis.
    #[arg(long)]
    pub full: bool,
}

#[derive(Debug, Args)]
pub struct DiffMigrateOpts {
    #[command(flatten)]
    pub diff: EntitiesOpts,

    /// With --analyze: read every source row (see `diff analyze --full`).
    #[arg(long, requires = "analyze")]
    pub full: bool,

    /// Analyse every entity again first, instead of applying the pending analysis.
    #[arg(long)]
    pub analyze: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConflictCmd {
    /// The conflicts: open (held) ones first, each with the values of both sides.
    Report {
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
        /// Resolved ones too.
        #[arg(long)]
        all: bool,
    },
    /// Settle a held conflict: write the source's values, or keep the target's.
    Resolve {
        /// The conflict's number, as `conflict report` shows it.
        id: i64,
        #[arg(long, value_enum)]
        take: Side,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Side {
    Source,
    Target,
}

#[derive(Debug, Subcommand)]
pub enum SyncCmd {
    /// A job that keeps entities in step on a schedule.
    CreateJob {
        #[arg(long)]
        name: String,
        /// The entities, comma-separated, in the words `run --goal` takes.
        #[arg(long, value_delimiter = ',', required = true)]
        entities: Vec<String>,
        /// An interval: 30s, 15m, 2h, 1d.
        #[arg(long, conflicts_with = "cron", required_unless_present = "cron")]
        every: Option<String>,
        /// A five-field cron expression, in UTC: "0 2 * * *".
        #[arg(long)]
        cron: Option<String>,
    },
    /// Every job: schedule, next run, who holds it, the last outcome.
    ListJobs {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Run a job now (refused while a daemon runs it).
    RunJob {
        name: String,
        #[command(flatten)]
        mapping: MappingOpt,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Stop a job's scheduled runs (`run-job` still runs it) until `resume-job`.
    PauseJob { name: String },
    /// Schedule a paused job again, from now.
    ResumeJob { name: String },
    /// Delete a job and its history (the runs stay in the audit trail).
    DeleteJob { name: String },
    /// A job and its latest runs.
    JobStatus {
        name: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Run due jobs until stopped (Ctrl-C or SIGTERM), one at a time; any number of daemons
    /// may run: a job is run by one of them at a time.
    Daemon {
        /// How often to look for due jobs, in seconds.
        #[arg(long, default_value_t = 5.0)]
        poll: f64,
        /// How long a job's lease lasts without renewal, in seconds: a daemon that dies is
        /// replaced on its jobs after this.
        #[arg(long, default_value_t = 60.0)]
        lease: f64,
        #[command(flatten)]
        mapping: MappingOpt,
    },
}

#[derive(Debug, Subcommand)]
pub enum SandboxCmd {
    /// Build the sandbox image unless it is there (offline through debootstrap when no
    /// registry answers).
    Build {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Whether the engine answers, the image is built, and which sandbox containers exist.
    Status {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Run code in the sandbox and print what it did: stdout, stderr, exit, duration, limits hit.
    Run(SandboxRunOpts),
}

#[derive(Debug, Args)]
pub struct SandboxRunOpts {
    /// The code's language.
    #[arg(long, default_value = "python")]
    pub lang: sandbox::Lang,
    /// The code, or - for stdin.
    pub file: PathBuf,
    /// A file to feed the code on its stdin.
    #[arg(long, value_name = "FILE")]
    pub stdin: Option<PathBuf>,
    /// A file to place in the work dir beside the code, as NAME=PATH (repeatable).
    #[arg(long = "input", value_name = "NAME=PATH")]
    pub inputs: Vec<String>,
    /// Where to write the files the code leaves in /work/out.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Seconds before the code is killed.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// Memory in MiB (no swap).
    #[arg(long, default_value_t = 256)]
    pub memory: u64,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum SchemaCmd {
    /// From the source's structure: every key becomes `id uuid` plus `legacy_id`, foreign keys
    /// point at the new ids, other constraints are kept. Prints the DDL unless --apply.
    Generate {
        /// Required: the schema is generated from the source database.
        #[arg(long, required = true)]
        from_source: bool,
        /// Write the DDL to this file instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Create the schema in the target database (in one transaction).
        #[arg(long)]
        apply: bool,
        /// The references a mapping file declares (`references = { page_id = "wagtailcore_page" }`)
        /// become uuid columns with foreign keys, like declared ones.
        #[command(flatten)]
        mapping: MappingOpt,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Generate the reference dataset in the source, then measure in one go: (a) a raw COPY pipe
    /// of its tables into the target (UUIDs computed in SQL; the ceiling), (b) agentctl's whole
    /// migration of the same data into a fresh target schema, in turns (ROUNDS of each, both
    /// databases vacuumed and analyzed before each measurement), then (c) validating all of it.
    /// Prints rows/s of both, the ratio b/a (the round of median ratio, and every round's),
    /// agentctl's peak RSS and the validation time. REPLACES the source's reference tables and
    /// the target's schema.
    Migrate {
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        #[arg(long, default_value_t = 20240601)]
        seed: u64,
        /// Tables (raw pipe) and entities (agentctl) at once; by default as `run` has it.
        #[arg(long, default_value_t = usize::from(default_jobs()))]
        jobs: usize,
        /// Rounds of (a) then (b): a round's ratio moves by a tenth or more from one to the next
        /// on a 2-core machine, so one round says little.
        #[arg(long, default_value_t = 5, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=20))]
        rounds: usize,
        /// Append the figures, as a Markdown section, to this file (bench/RESULTS.md).
        #[arg(long, value_name = "FILE")]
        results: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Differential migration: generate the reference dataset, migrate it all, change CHANGES
    /// source rows (edits, inserts, deletes), then time `diff analyze`, `diff migrate` and
    /// `diff validate` as child processes. REPLACES the source's reference tables and the
    /// target's schema.
    Diff {
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        #[arg(long, default_value_t = 20240601)]
        seed: u64,
        #[arg(long, default_value_t = 50_000)]
        changes: u64,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Time COPY into a uuid primary key with each UUID layout (v5 and time-ordered v8), in
    /// legacy key order, in the target database.
    Uuid {
        #[arg(long, default_value_t = 2_000_000)]
        rows: i64,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Sandbox latency (p50/p95 of a trivial Python run from a cold container and from the
    /// warm pool), 8 runs at once, and a transform script's throughput in values per second.
    Sandbox {
        /// Runs measured for each of cold and warm.
        #[arg(long, default_value_t = 30)]
        runs: usize,
        /// Values sent through the transform script.
        #[arg(long, default_value_t = 500_000)]
        values: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum MappingCmd {
    /// Print an entity's mapping: each target column, where it comes from, the transforms, why.
    Show {
        /// The entity: a source or target table name ("doctors", "dispatch_doctor"); all if
        /// omitted.
        entity: Option<String>,
        #[command(flatten)]
        mapping: MappingOpt,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Write the inferred mapping (with the current file's rules) as a TOML file to edit.
    Init {
        /// Where to write it.
        #[arg(long, short, default_value = "mapping.toml")]
        output: PathBuf,
        /// Overwrite the file if it exists.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        mapping: MappingOpt,
    },
}

#[derive(Debug, Args, Clone)]
pub struct DatasetShape {
    /// Size relative to production (1.0 = 3.47M rows); small tables keep a handful of rows.
    #[arg(long, default_value_t = 0.01)]
    pub scale: f64,

    /// The random seed: the same seed, scale and faults give the same data.
    #[arg(long, default_value_t = 20_240_601)]
    pub seed: u64,

    /// A TOML file of fault rates that override production's
    /// (`[dispatch_offer]` then `duplicate_unique = 0.5`).
    #[arg(long, value_name = "FILE")]
    pub faults: Option<PathBuf>,

    /// Generate clean data, with no injected faults.
    #[arg(long, conflicts_with = "faults")]
    pub no_faults: bool,
}

#[derive(Debug, Subcommand)]
pub enum DatasetCmd {
    /// Load the legacy schema into the source database and fill it through COPY; with a target
    /// configured, also create the empty modern schema there.
    Generate {
        #[command(flatten)]
        shape: DatasetShape,
        /// Drop and recreate legacy (and target) tables that already exist.
        #[arg(long)]
        replace: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Change about ROWS rows of a generated source the way its application would: edits,
    /// new patients with new orders, deleted leaf rows (for trying `agentctl diff`).
    Change {
        #[arg(long, default_value_t = 1000)]
        rows: u64,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Print, without touching a database, how many rows each table would have, how many are
    /// clean, how many carry each fault, and the expected migrated and rejected counts.
    Faults {
        #[command(flatten)]
        shape: DatasetShape,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

#[derive(Debug, Args)]
pub struct DemoOpts {
    #[arg(long, default_value_t = 0.01)]
    pub scale: f64,

    #[arg(long, default_value_t = 20_240_601)]
    pub seed: u64,

    /// Delete the demo's PostgreSQL cluster and start from nothing.
    #[arg(long)]
    pub fresh: bool,

    /// Where the demo keeps its cluster (default: $AGENTCTL_DEMO_DIR, else
    /// ~/.local/share/agentctl/demo, or /var/lib/agentctl/demo as root).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
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

    #[command(flatten)]
    pub mapping: MappingOpt,
}

#[derive(Debug, Args, Clone, Default)]
pub struct MappingOpt {
    /// A mapping file (TOML) with the rules inference cannot guess (default: AGENTCTL_MAPPING;
    /// for the reference dispatch database, the built-in mappings/dispatch.toml).
    #[arg(long, value_name = "FILE", env = "AGENTCTL_MAPPING")]
    pub mapping: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunOpts {
    #[command(flatten)]
    pub goal: GoalOpts,

    /// Approve the plan without asking. Without it, agentctl asks on the terminal, and refuses
    /// when there is no terminal to ask on.
    #[arg(long, short, conflicts_with = "approve")]
    pub yes: bool,

    /// Carry on a run that was interrupted or killed (its id, or a unique prefix): every entity
    /// continues after its last committed batch.
    #[arg(long, value_name = "RUN")]
    pub resume: Option<String>,

    /// How many entities migrate at once (1 to 8; by default the machine's cores, at most 4);
    /// each starts once its parents are loaded.
    #[arg(long, short, default_value_t = default_jobs(), value_parser = clap::value_parser!(u8).range(1..=8))]
    pub jobs: u8,

    /// Keep each table's foreign keys and plain indexes in place while it loads (slower). By
    /// default they are set aside and put back, validated, when the table is loaded: right for a
    /// target nothing else writes to during the migration.
    #[arg(long)]
    pub keep_constraints: bool,

    /// Do not validate each entity once it is loaded (validate later with `agentctl validate`).
    #[arg(long)]
    pub skip_validation: bool,

    /// Approve exactly the plan with this hash (at least its first 12 characters, as `plan`
    /// prints it); if the plan has changed since, nothing runs.
    #[arg(long, value_name = "HASH")]
    pub approve: Option<String>,

    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct ChatOpts {
    #[command(flatten)]
    pub mapping: MappingOpt,
}

#[derive(Debug, Subcommand)]
pub enum LlmCmd {
    /// Say which provider and model are active and ask it one small question.
    Check {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

#[derive(Debug, Args)]
/// Which entities, the mapping, and the output format (`validate`, `diff`).
pub struct EntitiesOpts {
    /// The entities, in the words `run --goal` takes (default: everything mapped).
    #[arg(default_value = "everything")]
    pub entities: Vec<String>,

    #[command(flatten)]
    pub mapping: MappingOpt,

    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct ReportOpts {
    /// The run's id or a unique prefix of it (default: the latest `run`).
    pub run: Option<String>,

    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Aligned for a terminal.
    Text,
    Md,
    Json,
}

#[derive(Debug, Args)]
pub struct RollbackOpts {
    /// The entities to delete, comma-separated (legacy or modern table names).
    #[arg(long, value_delimiter = ',', required_unless_present = "all", conflicts_with = "all")]
    pub entities: Vec<String>,

    /// Every entity agentctl migrated.
    #[arg(long)]
    pub all: bool,

    /// Do it without asking.
    #[arg(long, short)]
    pub yes: bool,

    #[command(flatten)]
    pub mapping: MappingOpt,

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

    /// Count every table's rows (one `count(*)` each) instead of using the planner's estimates.
    #[arg(long)]
    pub exact_counts: bool,

    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct ProfileOpts {
    /// The source table.
    pub table: String,
    /// A Python (.py) or shell (.sh) script; the sample arrives on its stdin as JSON lines.
    #[arg(long, value_name = "FILE", conflicts_with = "ask")]
    pub script: Option<PathBuf>,
    /// A question the model answers by writing code (needs a configured model).
    #[arg(long, value_name = "QUESTION")]
    pub ask: Option<String>,
    /// Rows in the sample (the first ones by key).
    #[arg(long, default_value_t = agents::schema_analysis::PROFILE_SAMPLE)]
    pub sample: usize,
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
        /// A head you kept elsewhere: with RUN, the one `run` printed, where that run's trail
        /// must end; without, one `audit verify` printed for the run ledger, which the ledger
        /// must pass through. A trail or ledger rewritten or cut since has another head.
        #[arg(long, value_name = "HASH")]
        expect_head: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Html,
}

/// Entities migrated at once unless `--jobs` says otherwise: one a core, at most 4. A load is
/// CPU-bound (each entity's stream keeps about a core busy between agentctl and the two
/// servers), so more streams than cores only share the cores and hold more batches in memory
/// (bench/RESULTS.md: on 2 cores, 2 at once ran as fast as 4 with 110 MB instead of 140 MB).
pub fn default_jobs() -> u8 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    u8::try_from(cores.clamp(1, 4)).expect("at most 4")
}
