//! The validation agent: proves an entity's migration by accounting, integrity and content.
//!
//! It reads every source row in key order, maps it with the same [`RowMapper`] the migration
//! used, and has the target compare each page of expected rows with the rows it holds, typed,
//! in one statement a page ([`Target::compare`]): numbers by value, JSON by content, times as
//! instants, so a value that only looks different is not a difference. A page the load
//! recorded, read again unchanged under the same mapping, is proven by that record instead
//! ([`Target::prove_by_record`]): the target's rows hash to what the load wrote from it. From
//! the answers:
//!
//! - accounting: every source row is migrated (its target row holds the mapped values),
//!   rejected (absent, with a recorded reason), kept (a row that was in the target before
//!   agentctl), or missing, which fails the validation; target rows with a legacy key no source
//!   row has are extra;
//! - content: the differing rows, each with its first differing column (the first 20 listed);
//! - money: every amount column's total (cents turned into amounts, and every two-decimal
//!   column) over the migrated rows, both sides, to the cent;
//! - integrity: no reference of the target table points at no row: guaranteed by a validated
//!   foreign key on the column, else counted set-based in the target;
//! - links: for every reference (a uuid the mapping makes, or a foreign key the target declares
//!   on copied columns), the migrated source rows that set it, counted as they pass, equal the
//!   target rows made from them that point at a row of the parent, counted in the target.

use runtime::error::ToolError;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use runtime::context::RunContext;
use runtime::domain::{
    cents, Compared, Difference, EntityDiff, EntityValidation, Expected, Links, MoneyTotal,
    Orphans, PageRecord, ProvenPage, RecordedPage, Scan, TableName,
};
use runtime::envelope::{AgentError, Envelope};
use runtime::jobs::{end_workers, JobName, Jobs};
use runtime::mapping::{KeyDeriver, Transform};
use runtime::ports::{Rows, Target};
use runtime::supervise::RestartPolicy;
use runtime::AgentName;

use crate::differential::DiffEntity;
use crate::pipeline::{
    expect, money_columns, page_of, prepare, read_ahead_in, reference_parents, soft_delete,
    GenericCheck, InPageOrder, MigrateEntity, Pages, Prepared, COMPARES_IN_FLIGHT,
};
use crate::transform::{amount, Reference, RowMapper};
use runtime::text_rows::TextRows;

const ME: AgentName = AgentName::Validation;

/// Source rows compared a page.
const PAGE: usize = 5_000;

/// Differences listed by key.
const LISTED: usize = 20;

pub enum ValidationMsg {
    Validate(Box<Envelope<MigrateEntity>>, RpcReplyPort<Result<EntityValidation, AgentError>>),
    /// What changed in the source since the last sync (`agentctl diff analyze`).
    Diff(Box<Envelope<DiffEntity>>, RpcReplyPort<Result<EntityDiff, AgentError>>),
}

#[derive(Clone)]
pub struct ValidationAgent;

#[derive(Clone)]
pub struct ValidationArgs {
    pub ctx: Arc<RunContext>,
    pub source_rows: Arc<dyn Rows>,
    pub target: Option<Arc<dyn Target>>,
    /// How often a failed entity's worker is started again.
    pub policy: RestartPolicy,
}

impl ValidationArgs {
    /// The target to compare with; the one place its absence becomes an error.
    fn target(&self) -> Result<Arc<dyn Target>, ToolError> {
        self.target
            .clone()
            .ok_or_else(|| ToolError::not_configured("no target database to compare with"))
    }
}

/// The agent's state: what it was started with, and the entity work it supervises.
pub struct Validation {
    args: ValidationArgs,
    jobs: Jobs,
}

impl Actor for ValidationAgent {
    type Msg = ValidationMsg;
    type State = Validation;
    type Arguments = ValidationArgs;

    async fn pre_start(
        &self,
        _: ActorRef<ValidationMsg>,
        args: ValidationArgs,
    ) -> Result<Validation, ActorProcessingErr> {
        Ok(Validation { jobs: Jobs::new(args.ctx.clone(), ME, args.policy), args })
    }

    async fn handle(
        &self,
        myself: ActorRef<ValidationMsg>,
        msg: ValidationMsg,
        state: &mut Validation,
    ) -> Result<(), ActorProcessingErr> {
        let (ctx, rows, target) =
            (state.args.ctx.clone(), state.args.source_rows.clone(), state.args.target());
        // Entities are validated (and analysed) side by side, each in a worker of its own. A
        // lost connection or a restarting target is outlived like in the migration: doing it
        // again reads nothing it has not read before.
        match msg {
            ValidationMsg::Validate(env, reply) => {
                let req = env.body;
                let name = job_name(&req, "validating");
                let work = move |_| {
                    let (ctx, rows, target, req) =
                        (ctx.clone(), rows.clone(), target.clone(), req.clone());
                    async move { validate(&ctx, rows, target?, &req).await }
                };
                state.jobs.start(&myself.get_cell(), name, reply, work).await?;
            }
            ValidationMsg::Diff(env, reply) => {
                let req = env.body;
                let name = job_name(&req.entity, "analysing");
                let work = move |_| {
                    let (ctx, rows, target, req) =
                        (ctx.clone(), rows.clone(), target.clone(), req.clone());
                    async move { crate::differential::analyze(&ctx, rows, target?, &req).await }
                };
                state.jobs.start(&myself.get_cell(), name, reply, work).await?;
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<ValidationMsg>,
        event: SupervisionEvent,
        state: &mut Validation,
    ) -> Result<(), ActorProcessingErr> {
        state.jobs.on_event(event, &myself.get_cell()).await;
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<ValidationMsg>,
        _: &mut Validation,
    ) -> Result<(), ActorProcessingErr> {
        end_workers(&myself.get_cell()).await;
        Ok(())
    }
}

/// An entity's validation or analysis, as the trail names it; started again when it fails.
fn job_name(req: &MigrateEntity, doing: &str) -> JobName {
    JobName {
        entity: req.spec.source.to_string(),
        table: req.spec.target.name.clone(),
        again: Some(format!("{doing} again")),
        doing: format!("{doing} {}", req.entity.table),
    }
}

pub async fn validate(
    ctx: &RunContext,
    rows: Arc<dyn Rows>,
    target: Arc<dyn Target>,
    req: &MigrateEntity,
) -> Result<EntityValidation, ToolError> {
    let started = Instant::now();
    let spec = &req.spec;
    let Prepared { mapper, out_cols, id_col, deferred_cols, references, generic, seal, .. } =
        prepare(ctx, ME, target.as_ref(), req).await?;
    let legacy_col = out_cols
        .iter()
        .position(|(c, _)| c == "legacy_id")
        .ok_or_else(|| ToolError::system(format!("{} has no legacy_id column", spec.target)))?;
    let money = money_columns(spec, &out_cols);
    let mut rejected_keys: HashSet<String> =
        target.rejected_keys(&spec.source).await?.into_iter().map(|(k, _)| k).collect();
    // A row a sync rejected and a later sync held is held, not rejected: it is missing, and
    // says why ([`held_by_sync`]).
    let rejected: Vec<String> = rejected_keys.iter().cloned().collect();
    let held_since: HashMap<String, String> = match rejected.is_empty() {
        true => HashMap::new(),
        false => target.held_reasons(&spec.source, &rejected).await?.into_iter().collect(),
    };
    rejected_keys.retain(|key| !held_since.contains_key(key));
    let mut v = empty(spec, &out_cols, &money);
    let mapping =
        Mapping { mapper: &mapper, out_cols: &out_cols, id_col, legacy_col, money: &money };
    let records = Records::of(target.as_ref(), req, seal, &mapping).await?;
    // The stages overlap: the source server reads the next page while this task maps one (or
    // fingerprints it, to prove it by the load's record) and the target compares the ones
    // before, [`COMPARES_IN_FLIGHT`] at a time, tallied in order.
    let linked = links_of(req, &mapper, spec);
    let mut counted = Counted { source_links: vec![0; linked.len()], ..Counted::default() };
    let page = page_of(req, PAGE);
    let (mut pages, reader) = read_ahead_in(rows, Scan::entity(spec), records.pages(), page);
    let mut compares: InPageOrder<(Checked, Vec<Vec<bool>>)> = InPageOrder::new(COMPARES_IN_FLIGHT);
    loop {
        let page = match pages.recv().await {
            Some(page) => page?,
            None => TextRows::default(),
        };
        let next = (!page.is_empty()).then(|| {
            let set = references_set(&page, &linked);
            (records.check(&mapping, page), set)
        });
        while let Some((checked, set)) = compares.done(next.is_none()).await? {
            let against = match &checked {
                Checked::Compared(..) if records.any() => Against::Source,
                Checked::Compared(..) => Against::Unknown,
                Checked::Proven(..) | Checked::Unproven(_) => Against::Target,
            };
            let (expected, answers, recorded_cents) =
                answered(checked, &mut pages, &mut v, &mapping, target.as_ref()).await?;
            counted.page(&expected, &answers, &set);
            let page = Tallied { expected: &expected, answers: &answers, recorded_cents };
            let wrong = v.missing + v.rows_differing;
            tally(&mut v, page, &rejected_keys, target.as_ref(), &out_cols, legacy_col, &money)
                .await?;
            against.count(&mut v, wrong);
        }
        let Some((check, set)) = next else { break };
        let (target, table) = (target.clone(), spec.target.clone());
        compares.start(async move { Ok((check.run(target.as_ref(), &table).await?, set)) });
    }
    reader.await.map_err(|e| ToolError::system(format!("the reader stopped: {e}")))?;
    held_by_sync(target.as_ref(), &spec.source, &held_since, &mut v).await?;
    let references = (references.as_slice(), deferred_cols.as_slice(), generic.as_slice());
    v.orphans = orphans(target.as_ref(), req, references, &out_cols).await?;
    (v.links, v.target_rows) =
        count_links(target.as_ref(), req, &linked, counted.source_links, &counted.kept_keys)
            .await?;
    v.extra = (v.target_rows - counted.found_in_target).max(0);
    judge(&mut v);
    v.seconds = started.elapsed().as_secs_f64();
    target.save_validation(ctx.run_id, &v).await?;
    let by_record = match v.rows_by_record {
        0 => String::new(),
        n => format!(
            "; {n} of the rows proven by the load's record of their page (the page read again \
                unchanged under the same mapping, the target's rows hashed by the server against \
                the hashes the load recorded of what it wrote)"
        ),
    };
    ctx.decision(
        ME,
        format!(
            "{}: {} — {}",
            spec.target.name,
            if v.passed { "validated" } else { "validation FAILED" },
            v.detail
        ),
        format!(
            "accounting, typed value comparison of every row, money totals and references, all \
                read from the databases{by_record}"
        ),
        &v,
    );
    Ok(v)
}

/// How the validation maps a page it cannot prove by the load's record.
struct Mapping<'a> {
    mapper: &'a RowMapper,
    out_cols: &'a [(String, String)],
    id_col: usize,
    legacy_col: usize,
    money: &'a [usize],
}

impl Mapping<'_> {
    fn expect(&self, page: TextRows) -> Expected {
        expect(self.mapper, self.out_cols, self.id_col, self.legacy_col, self.money, page, None)
    }
}

/// The load's records of the entity's source pages, by fingerprint, and what proving a page by
/// one needs: the pages' sizes, the key column and the derivation of each row's UUID.
struct Records {
    by_fingerprint: HashMap<i64, PageRecord>,
    /// The size of each page the load recorded, in key order: read in pages of these sizes
    /// (keyset pages, each after the last key of the one before), the same rows make the same
    /// pages, whatever batch size the load had (a resumed run's can differ).
    pages: Vec<usize>,
    seal: u64,
    key: Option<usize>,
    deriver: KeyDeriver,
    columns: Vec<(String, String)>,
    id_column: usize,
    legacy_column: usize,
    returned: Vec<usize>,
}

impl Records {
    async fn of(
        target: &dyn Target,
        req: &MigrateEntity,
        seal: u64,
        mapping: &Mapping<'_>,
    ) -> Result<Records, ToolError> {
        let spec = &req.spec;
        let records = target.page_records(&spec.target).await?;
        let key = match spec.key.as_slice() {
            [key] => spec.source_columns().iter().position(|c| c == key),
            _ => None,
        };
        Ok(Records {
            pages: records.iter().map(|r| r.rows as usize).collect(),
            by_fingerprint: records.into_iter().map(|r| (r.fingerprint, r)).collect(),
            seal,
            key,
            deriver: KeyDeriver::new(req.keys.layout, req.keys.namespace, &spec.source),
            columns: mapping.out_cols.to_vec(),
            id_column: mapping.id_col,
            legacy_column: mapping.legacy_col,
            returned: mapping.money.to_vec(),
        })
    }

    fn pages(&self) -> Vec<usize> {
        self.pages.clone()
    }

    /// Whether the load recorded its pages (then a page it has no record of was read otherwise).
    fn any(&self) -> bool {
        !self.by_fingerprint.is_empty()
    }

    /// What to do with a page read: prove it by its record, if the load recorded one of it
    /// as it is now under the same mapping, else map it and compare it.
    fn check(&self, mapping: &Mapping<'_>, page: TextRows) -> Check {
        match self.recorded(&page) {
            Some(recorded) => Check::Prove(recorded, page),
            None => Check::Compare(mapping.expect(page)),
        }
    }

    fn recorded(&self, page: &TextRows) -> Option<RecordedPage> {
        if self.by_fingerprint.is_empty() {
            return None;
        }
        let key = self.key?;
        let record = *self.by_fingerprint.get(&page.fingerprint(self.seal))?;
        if record.rows != page.len() as i64 {
            return None;
        }
        let keys: Vec<i64> =
            page.column(key).map(|k| k?.parse().ok()).collect::<Option<Vec<i64>>>()?;
        let ids = page.column(key).map(|k| self.deriver.derive(&[k.unwrap_or_default()])).collect();
        Some(RecordedPage {
            record,
            columns: self.columns.clone(),
            id_column: self.id_column,
            legacy_column: self.legacy_column,
            keys,
            ids,
            returned: self.returned.clone(),
        })
    }
}

/// A page's expected rows and the target's answers: compared; proven by the load's record
/// (with the record's money totals); or, its target rows not what the record says, mapped and
/// compared now.
async fn answered(
    checked: Checked,
    pages: &mut Pages,
    v: &mut EntityValidation,
    mapping: &Mapping<'_>,
    target: &dyn Target,
) -> Result<(Expected, Vec<Compared>, Option<(Vec<i64>, Vec<i64>)>), ToolError> {
    Ok(match checked {
        Checked::Compared(expected, answers) => (expected, answers, None),
        Checked::Proven(expected, proven, page) => {
            pages.recycle(page);
            v.rows_by_record += expected.keys.len() as i64;
            let answers = proven
                .recorded
                .iter()
                .map(|&r| Compared { present: r, ours: r, ..Compared::default() })
                .collect();
            (expected, answers, Some((proven.source_cents, proven.target_cents)))
        }
        Checked::Unproven(page) => {
            let expected = mapping.expect(page);
            let answers = target.compare(&v.target, &expected).await?;
            (expected, answers, None)
        }
    })
}

/// Which side changed since the load, by a page that does not agree with the target: the
/// load recorded none of the page as it reads now (the source changed), or its record matches
/// the source, so what disagrees is the target's rows; unknown without records.
enum Against {
    Source,
    Target,
    Unknown,
}

impl Against {
    /// Counts the page where its tally (`v`'s missing and differing rows, `before` it) found
    /// rows that do not agree.
    fn count(self, v: &mut EntityValidation, before: i64) {
        let wrong = v.missing + v.rows_differing > before;
        match self {
            Against::Source if wrong => v.source_changed_pages += 1,
            Against::Target if wrong => v.target_changed_pages += 1,
            _ => {}
        }
    }
}

/// A page on its way to the target.
enum Check {
    /// Mapped, to compare row by row.
    Compare(Expected),
    /// Read again as the load recorded it, to prove by the record (the page kept in case the
    /// target's rows are not what the record says).
    Prove(RecordedPage, TextRows),
}

/// A page's answer from the target.
enum Checked {
    Compared(Expected, Vec<Compared>),
    /// Proven by the record: the page's keys (nothing else of an `Expected` is filled), the
    /// answers and the record's money totals; and the page read, done with.
    Proven(Expected, ProvenPage, TextRows),
    /// The target's rows are not what the record says: the page is mapped and compared.
    Unproven(TextRows),
}

impl Check {
    async fn run(self, target: &dyn Target, table: &TableName) -> Result<Checked, ToolError> {
        Ok(match self {
            Check::Compare(expected) => {
                let answers = target.compare(table, &expected).await?;
                Checked::Compared(expected, answers)
            }
            Check::Prove(recorded, page) => match target.prove_by_record(table, &recorded).await? {
                Some(proven) => Checked::Proven(
                    Expected {
                        keys: recorded.keys.iter().map(i64::to_string).collect(),
                        wanted: proven.recorded.clone(),
                        ..Expected::default()
                    },
                    proven,
                    page,
                ),
                None => Checked::Unproven(page),
            },
        })
    }
}

/// What the validation counts as pages pass: the rows found in the target, the rows kept from
/// before agentctl, and each reference's links in the source.
#[derive(Default)]
struct Counted {
    found_in_target: i64,
    kept_keys: Vec<String>,
    source_links: Vec<i64>,
}

impl Counted {
    fn page(&mut self, expected: &Expected, answers: &[Compared], set: &[Vec<bool>]) {
        self.found_in_target += answers.iter().filter(|a| a.present).count() as i64;
        for (r, a) in answers.iter().enumerate() {
            match (expected.wanted[r], a.present, a.ours) {
                (_, true, false) => self.kept_keys.push(expected.keys[r].clone()),
                (true, true, true) => {
                    for (count, set) in self.source_links.iter_mut().zip(set) {
                        *count += i64::from(set[r]);
                    }
                }
                _ => {}
            }
        }
    }
}

/// A reference whose links are counted: the target columns holding it, and the source columns
/// they are made from (by name, and by index into the scanned row).
struct Linked {
    inputs: Vec<usize>,
    source_columns: Vec<String>,
    columns: Vec<String>,
    parent: TableName,
    referenced: Vec<String>,
}

/// Every reference an entity's target rows make: each the mapping turns into a parent's UUID
/// (self-references included), and each foreign key the target declares on columns copied as
/// they are (a composite key, a key to a unique rule).
fn links_of(
    req: &MigrateEntity,
    mapper: &RowMapper,
    spec: &runtime::mapping::MappingSpec,
) -> Vec<Linked> {
    let target_of = |source: &TableName| {
        if *source == spec.source {
            Some(spec.target.clone())
        } else {
            req.parents.iter().find(|(s, _)| s == source).map(|(_, t)| t.clone())
        }
    };
    let scanned = spec.source_columns();
    let named = |inputs: &[usize]| inputs.iter().map(|&i| scanned[i].clone()).collect();
    let references = mapper.references();
    let mut out: Vec<Linked> = references
        .iter()
        .filter_map(|r: &Reference| {
            target_of(&r.parent).map(|parent| Linked {
                inputs: r.inputs.clone(),
                source_columns: named(&r.inputs),
                columns: vec![r.target_column.clone()],
                parent,
                referenced: vec!["id".to_owned()],
            })
        })
        .collect();
    let copied = |column: &String| {
        spec.columns.iter().find(|m| &m.target == column).and_then(|m| match &m.feed {
            // Copied, or through steps that keep a value a value and NULL NULL.
            runtime::mapping::Feed::Column { column }
                if m.transforms.iter().all(|t| {
                    matches!(t, Transform::Trim | Transform::Lower | Transform::Upper)
                }) =>
            {
                scanned.iter().position(|s| s == column)
            }
            _ => None,
        })
    };
    for fk in req.target.table(&spec.target).map(|t| t.foreign_keys.as_slice()).unwrap_or_default()
    {
        if references.iter().any(|r| fk.columns == [r.target_column.clone()]) {
            continue;
        }
        if let Some(inputs) = fk.columns.iter().map(copied).collect::<Option<Vec<usize>>>() {
            out.push(Linked {
                source_columns: named(&inputs),
                inputs,
                columns: fk.columns.clone(),
                parent: fk.references.clone(),
                referenced: fk.referenced_columns.clone(),
            });
        }
    }
    out
}
/// A validation of the entity with nothing counted yet.
fn empty(
    spec: &runtime::mapping::MappingSpec,
    out_cols: &[(String, String)],
    money: &[usize],
) -> EntityValidation {
    EntityValidation {
        source: spec.source.clone(),
        target: spec.target.clone(),
        passed: false,
        source_rows: 0,
        migrated: 0,
        rejected: 0,
        kept: 0,
        missing: 0,
        held: 0,
        source_changed_pages: 0,
        target_changed_pages: 0,
        target_rows: 0,
        extra: 0,
        rows_compared: 0,
        rows_differing: 0,
        kept_differing: 0,
        differences: Vec::new(),
        orphans: Vec::new(),
        links: Vec::new(),
        money: money
            .iter()
            .map(|&i| MoneyTotal {
                column: out_cols[i].0.clone(),
                source_cents: 0,
                target_cents: 0,
            })
            .collect(),
        rows_by_record: 0,
        detail: String::new(),
        seconds: 0.0,
    }
}

/// The missing rows listed that the last sync held for an operator: each says why, which is
/// not a row lost but one waiting for what its reason asks. `known`: the rows rejected once and
/// held since, with their reasons, read already; the others are asked about.
async fn held_by_sync(
    target: &dyn Target,
    source: &TableName,
    known: &HashMap<String, String>,
    v: &mut EntityValidation,
) -> Result<(), ToolError> {
    let missing = |d: &&Difference| d.found.as_deref() == Some(MISSING);
    let unknown: Vec<String> = v
        .differences
        .iter()
        .filter(missing)
        .filter(|d| !known.contains_key(&d.legacy_key))
        .map(|d| d.legacy_key.clone())
        .collect();
    let asked: HashMap<String, String> = match unknown.is_empty() {
        true => HashMap::new(),
        false => target.held_reasons(source, &unknown).await?.into_iter().collect(),
    };
    for d in &mut v.differences {
        let held = known.get(&d.legacy_key).or_else(|| asked.get(&d.legacy_key));
        if let Some(why) = held.filter(|_| d.found.as_deref() == Some(MISSING)) {
            d.found = Some(format!("neither: the last sync held it: {why}"));
            v.held += 1;
        }
    }
    Ok(())
}

/// What a difference finds of a source row that is neither in the target nor rejected.
const MISSING: &str = "neither: the row is missing";

/// Every reference the mapping makes (to other tables, to its own in `deferred`, and the
/// generic ones, each value in one of its parents), and every foreign key the target declares:
/// the target rows that point at no row (none to count where a validated foreign key
/// guarantees it).
async fn orphans(
    target: &dyn Target,
    req: &MigrateEntity,
    (references, deferred, generic): (&[(usize, TableName)], &[usize], &[GenericCheck]),
    out_cols: &[(String, String)],
) -> Result<Vec<Orphans>, ToolError> {
    let mut found_orphans = Vec::new();
    let table = req
        .target
        .table(&req.spec.target)
        .ok_or_else(|| ToolError::system(format!("the target has no table {}", req.spec.target)))?;
    let own = &req.spec.target;
    let mut checks: Vec<(String, Vec<TableName>)> = reference_parents(references, generic)
        .into_iter()
        .chain(deferred.iter().map(|&c| (c, vec![own.clone()])))
        .map(|(c, parents)| (out_cols[c].0.clone(), parents))
        .collect();
    for fk in &table.foreign_keys {
        if let [column] = fk.columns.as_slice() {
            checks.push((column.clone(), vec![fk.references.clone()]));
        }
    }
    checks.sort();
    checks.dedup();
    for (column, parents) in checks {
        let found = target.orphans(&req.spec.target, &column, &parents).await?;
        let enforced = found.is_none();
        let (count, examples) = found.unwrap_or_default();
        found_orphans.push(Orphans { column, parents, count, examples, enforced });
    }
    Ok(found_orphans)
}

/// Each reference's links counted in the target: the rows with a legacy key, but those kept
/// from before agentctl, whose reference points at a row of the parent; and the target's rows
/// (live ones, under soft deletes), counted in the same scan.
async fn count_links(
    target: &dyn Target,
    req: &MigrateEntity,
    linked: &[Linked],
    source_links: Vec<i64>,
    kept_keys: &[String],
) -> Result<(Vec<Links>, i64), ToolError> {
    let mut links: Vec<Links> = linked
        .iter()
        .zip(source_links)
        .map(|(l, source)| Links {
            columns: l.columns.clone(),
            parent: l.parent.clone(),
            referenced: l.referenced.clone(),
            source_columns: l.source_columns.clone(),
            source,
            target: 0,
        })
        .collect();
    let rows = target.links(&req.spec.target, &mut links, soft_delete(req), kept_keys).await?;
    Ok((links, rows))
}

/// Whether the validation passed, and the one line that says what passed or what did not.
fn judge(v: &mut EntityValidation) {
    let lost: Vec<String> = v
        .links
        .iter()
        .filter(|l| l.source != l.target)
        .map(|l| {
            format!(
                "{} links of {} to {} in the source but {} in the target",
                l.source,
                l.columns.join(", "),
                l.parent,
                l.target
            )
        })
        .collect();
    let links: i64 = v.links.iter().map(|l| l.target).sum();
    let orphaned: i64 = v.orphans.iter().map(|o| o.count).sum();
    let money_equal = v.money.iter().all(|m| m.source_cents == m.target_cents);
    let balanced = v.source_rows == v.migrated + v.rejected + v.kept + v.rows_differing + v.missing;
    v.passed = balanced
        && v.missing == 0
        && v.rows_differing == 0
        && v.extra == 0
        && orphaned == 0
        && lost.is_empty()
        && money_equal;
    v.detail = if v.passed {
        format!(
            "{} source rows: {} migrated with equal values, {} rejected with reasons{}; {}no \
                orphan; {}",
            v.source_rows,
            v.migrated,
            v.rejected,
            if v.kept > 0 { format!(", {} kept from before", v.kept) } else { String::new() },
            if v.links.is_empty() {
                String::new()
            } else {
                format!(
                    "{links} links of {} \
                references equal on both sides; ",
                    v.links.len()
                )
            },
            if v.money.is_empty() {
                "no money column".to_owned()
            } else {
                "money totals equal to the cent".to_owned()
            }
        )
    } else {
        let mut wrong = Vec::new();
        if v.missing > 0 {
            wrong.push(format!("{} rows missing (neither migrated nor rejected)", v.missing));
        }
        if v.rows_differing > 0 {
            wrong.push(format!("{} rows differ from their source", v.rows_differing));
        }
        if v.extra > 0 {
            wrong.push(format!("{} target rows have no source row", v.extra));
        }
        if orphaned > 0 {
            wrong.push(format!("{orphaned} references point at no row"));
        }
        wrong.extend(lost);
        for m in v.money.iter().filter(|m| m.source_cents != m.target_cents) {
            wrong.push(format!(
                "{} totals {} in the source but {} in the target",
                m.column,
                amount(m.source_cents),
                amount(m.target_cents)
            ));
        }
        wrong.join("; ")
    };
}

/// For each reference, whether each row of the page sets every column it is made from.
fn references_set(page: &TextRows, linked: &[Linked]) -> Vec<Vec<bool>> {
    linked
        .iter()
        .map(|l| {
            (0..page.len())
                .map(|seq| l.inputs.iter().all(|&i| page.get(seq, i).is_some()))
                .collect()
        })
        .collect()
}

/// A compared page: its expected rows and the target's answers, and with a page proven by the
/// load's record, the money totals of its recorded rows, the record's and the target's (its
/// `expected` then holds only keys and whether each is wanted, and no answer differs or
/// returns values).
struct Tallied<'a> {
    expected: &'a Expected,
    answers: &'a [Compared],
    recorded_cents: Option<(Vec<i64>, Vec<i64>)>,
}

/// Books one compared page into the validation.
async fn tally(
    v: &mut EntityValidation,
    page: Tallied<'_>,
    rejected_keys: &HashSet<String>,
    target: &dyn Target,
    out_cols: &[(String, String)],
    legacy_col: usize,
    money: &[usize],
) -> Result<(), ToolError> {
    let Tallied { expected, answers, recorded_cents } = page;
    if let Some((source, target)) = &recorded_cents {
        for ((total, s), t) in v.money.iter_mut().zip(source).zip(target) {
            total.add(*s, *t);
        }
    }
    for (r, a) in answers.iter().enumerate() {
        v.source_rows += 1;
        let key = &expected.keys[r];
        let note = |v: &mut EntityValidation, column: &str, expected: &str, found: &str| {
            if v.differences.len() < LISTED {
                v.differences.push(Difference {
                    legacy_key: key.clone(),
                    column: column.into(),
                    expected: Some(expected.into()),
                    found: Some(found.into()),
                });
            }
        };
        // The first differing column of a row that is in the target, and whether agentctl
        // kept that row from before (it is compared all the same: the source says otherwise).
        let mut differing = None;
        match (expected.wanted[r], a.present, a.ours) {
            (true, true, false) if a.differs.is_some() => differing = a.differs.map(|c| (c, true)),
            (_, true, false) => v.kept += 1,
            (true, true, true) => {
                v.rows_compared += 1;
                match a.differs {
                    Some(col) => differing = Some((col, false)),
                    None => v.migrated += 1,
                }
                if recorded_cents.is_none() {
                    for (m, total) in v.money.iter_mut().enumerate() {
                        total.add(
                            cents(expected.values.get(r, money[m])),
                            cents(a.returned[m].as_deref()),
                        );
                    }
                }
            }
            (false, true, true) => {
                v.rows_differing += 1;
                note(v, "(row)", "not in the target: the mapping rejects it", "in the target");
            }
            (_, false, _) if rejected_keys.contains(key) => v.rejected += 1,
            (_, false, _) => {
                v.missing += 1;
                note(v, "(row)", "in the target, or rejected with a reason", MISSING);
            }
        }
        if let Some((col, kept)) = differing {
            v.rows_differing += 1;
            v.kept_differing += i64::from(kept);
            if v.differences.len() < LISTED {
                let found = target
                    .value_of(&v.target, &out_cols[col].0, &out_cols[legacy_col].1, key)
                    .await?;
                let column = match kept {
                    true => format!(
                        "{} (of a row that was in the target before agentctl, which never \
                            overwrites it)",
                        out_cols[col].0
                    ),
                    false => out_cols[col].0.clone(),
                };
                v.differences.push(Difference {
                    legacy_key: key.clone(),
                    column,
                    expected: expected.values.get(r, col).map(str::to_owned),
                    found,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_show_their_cents() {
        assert_eq!(amount(-1250), "-12.50");
        assert_eq!(amount(7), "0.07");
    }
}
