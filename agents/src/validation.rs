//! The validation agent: proves an entity's migration by accounting, integrity and content.
//!
//! It reads every source row in key order, maps it with the same [`RowMapper`] the migration
//! used, and has the target compare each page of expected rows with the rows it holds, typed,
//! in one statement a page ([`Target::compare`]): numbers by value, JSON by content, times as
//! instants, so a value that only looks different is not a difference. From the answers:
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
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use runtime::context::RunContext;
use runtime::domain::{
    Compared, Difference, EntityDiff, EntityValidation, Expected, Links, MoneyTotal, Orphans, Scan,
};
use runtime::envelope::{AgentError, Envelope};
use runtime::jobs::{end_workers, JobName, Jobs};
use runtime::mapping::Transform;
use runtime::ports::{Rows, Target};
use runtime::supervise::RestartPolicy;
use runtime::AgentName;

use crate::differential::DiffEntity;
use crate::pipeline::{
    expect, prepare, read_ahead, soft_delete, InPageOrder, MigrateEntity, Prepared,
    COMPARES_IN_FLIGHT,
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
    let Prepared { mapper, out_cols, id_col, deferred_cols, references, .. } =
        prepare(ctx, ME, target.as_ref(), req).await?;
    let legacy_col = out_cols
        .iter()
        .position(|(c, _)| c == "legacy_id")
        .ok_or_else(|| ToolError::system(format!("{} has no legacy_id column", spec.target)))?;
    let money = money_columns(spec, &out_cols);
    let rejected_keys: HashSet<String> =
        target.rejected_keys(&spec.source).await?.into_iter().map(|(k, _)| k).collect();
    let mut v = empty(spec, &out_cols, &money);
    // The stages overlap: the source server reads the next page while this task maps one and
    // the target compares the ones before, [`COMPARES_IN_FLIGHT`] at a time, tallied in order.
    let linked = links_of(req, &mapper, spec);
    let mut source_links = vec![0i64; linked.len()];
    let mut kept_keys: Vec<String> = Vec::new();
    let (mut pages, reader) = read_ahead(rows, Scan::entity(spec), PAGE);
    let mut found_in_target = 0i64;
    let mut compares: InPageOrder<ComparedPage> = InPageOrder::new(COMPARES_IN_FLIGHT);
    loop {
        let page = match pages.recv().await {
            Some(page) => page?,
            None => TextRows::default(),
        };
        let next = (!page.is_empty()).then(|| {
            let set = references_set(&page, &linked);
            (expect(&mapper, &out_cols, id_col, legacy_col, &money, page, None), set)
        });
        while let Some((expected, set, answers)) = compares.done(next.is_none()).await? {
            found_in_target += answers.iter().filter(|a| a.present).count() as i64;
            for (r, a) in answers.iter().enumerate() {
                match (expected.wanted[r], a.present, a.ours) {
                    (_, true, false) => kept_keys.push(expected.keys[r].clone()),
                    (true, true, true) => {
                        for (count, set) in source_links.iter_mut().zip(&set) {
                            *count += i64::from(set[r]);
                        }
                    }
                    _ => {}
                }
            }
            tally(
                &mut v,
                &expected,
                &answers,
                &rejected_keys,
                target.as_ref(),
                &out_cols,
                legacy_col,
                &money,
            )
            .await?;
        }
        let Some((expected, set)) = next else { break };
        let (target, table) = (target.clone(), spec.target.clone());
        compares.start(async move {
            let answers = target.compare(&table, &expected).await?;
            Ok((expected, set, answers))
        });
    }
    reader.await.map_err(|e| ToolError::system(format!("the reader stopped: {e}")))?;
    v.target_rows = target.table_rows(&spec.target, soft_delete(req)).await?;
    v.extra = (v.target_rows - found_in_target).max(0);
    v.orphans = orphans(target.as_ref(), req, &references, &deferred_cols, &out_cols).await?;
    v.links = count_links(target.as_ref(), req, &linked, source_links, &kept_keys).await?;
    judge(&mut v);
    v.seconds = started.elapsed().as_secs_f64();
    target.save_validation(ctx.run_id, &v).await?;
    ctx.decision(
        ME,
        format!(
            "{}: {} — {}",
            spec.target.name,
            if v.passed { "validated" } else { "validation FAILED" },
            v.detail
        ),
        "accounting, typed value comparison of every row, money totals and references, all read \
            from the databases",
        &v,
    );
    Ok(v)
}

/// A page of expected rows, whether each row sets each reference, and the target's answers.
type ComparedPage = (Expected, Vec<Vec<bool>>, Vec<Compared>);

/// A reference whose links are counted: the target columns holding it, and the source columns
/// they are made from (by name, and by index into the scanned row).
struct Linked {
    inputs: Vec<usize>,
    source_columns: Vec<String>,
    columns: Vec<String>,
    parent: runtime::domain::TableName,
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
    let target_of = |source: &runtime::domain::TableName| {
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
/// The amount columns: cents turned into amounts, and every column of a two-decimal type.
fn money_columns(
    spec: &runtime::mapping::MappingSpec,
    out_cols: &[(String, String)],
) -> Vec<usize> {
    (0..out_cols.len())
        .filter(|&i| {
            let (name, ty) = &out_cols[i];
            let cents = spec
                .columns
                .iter()
                .any(|m| m.target == *name && m.transforms.contains(&Transform::Cents));
            cents || ty == "money" || (ty.starts_with("numeric(") && ty.ends_with(",2)"))
        })
        .collect()
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
        target_rows: 0,
        extra: 0,
        rows_compared: 0,
        rows_differing: 0,
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
        detail: String::new(),
        seconds: 0.0,
    }
}

/// Every reference the mapping makes, and every foreign key the target declares: the target
/// rows that point at no row (none to count where a validated foreign key guarantees it).
async fn orphans(
    target: &dyn Target,
    req: &MigrateEntity,
    references: &[(usize, runtime::domain::TableName)],
    deferred_cols: &[usize],
    out_cols: &[(String, String)],
) -> Result<Vec<Orphans>, ToolError> {
    let mut found_orphans = Vec::new();
    let table = req
        .target
        .table(&req.spec.target)
        .ok_or_else(|| ToolError::system(format!("the target has no table {}", req.spec.target)))?;
    let mut checks: Vec<(String, runtime::domain::TableName)> =
        references.iter().map(|(c, p)| (out_cols[*c].0.clone(), p.clone())).collect();
    checks.extend(deferred_cols.iter().map(|&c| (out_cols[c].0.clone(), req.spec.target.clone())));
    for fk in &table.foreign_keys {
        if let [column] = fk.columns.as_slice() {
            checks.push((column.clone(), fk.references.clone()));
        }
    }
    checks.sort();
    checks.dedup();
    for (column, parent) in checks {
        let found = target.orphans(&req.spec.target, &column, &parent).await?;
        let enforced = found.is_none();
        let (count, examples) = found.unwrap_or_default();
        found_orphans.push(Orphans { column, parent, count, examples, enforced });
    }
    Ok(found_orphans)
}

/// Each reference's links counted in the target: the rows with a legacy key, but those kept
/// from before agentctl, whose reference points at a row of the parent.
async fn count_links(
    target: &dyn Target,
    req: &MigrateEntity,
    linked: &[Linked],
    source_links: Vec<i64>,
    kept_keys: &[String],
) -> Result<Vec<Links>, ToolError> {
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
    target.links(&req.spec.target, &mut links, soft_delete(req), kept_keys).await?;
    Ok(links)
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

/// Books one compared page into the validation.
#[allow(clippy::too_many_arguments)]
async fn tally(
    v: &mut EntityValidation,
    expected: &Expected,
    answers: &[Compared],
    rejected_keys: &HashSet<String>,
    target: &dyn Target,
    out_cols: &[(String, String)],
    legacy_col: usize,
    money: &[usize],
) -> Result<(), ToolError> {
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
        match (expected.wanted[r], a.present, a.ours) {
            (_, true, false) => v.kept += 1,
            (true, true, true) => {
                v.rows_compared += 1;
                match a.differs {
                    Some(col) => {
                        v.rows_differing += 1;
                        if v.differences.len() < LISTED {
                            let found = target
                                .value_of(&v.target, &out_cols[col].0, &out_cols[legacy_col].1, key)
                                .await?;
                            v.differences.push(Difference {
                                legacy_key: key.clone(),
                                column: out_cols[col].0.clone(),
                                expected: expected.values.get(r, col).map(str::to_owned),
                                found,
                            });
                        }
                    }
                    None => v.migrated += 1,
                }
                for (m, total) in v.money.iter_mut().enumerate() {
                    total.source_cents += cents(expected.values.get(r, money[m]));
                    total.target_cents += cents(a.returned[m].as_deref());
                }
            }
            (false, true, true) => {
                v.rows_differing += 1;
                note(v, "(row)", "not in the target: the mapping rejects it", "in the target");
            }
            (_, false, _) if rejected_keys.contains(key) => v.rejected += 1,
            (_, false, _) => {
                v.missing += 1;
                note(
                    v,
                    "(row)",
                    "in the target, or rejected with a reason",
                    "neither: the row is missing",
                );
            }
        }
    }
    Ok(())
}

/// A decimal amount in whole cents (`12.5` is 1250); NULL counts as nothing.
fn cents(v: Option<&str>) -> i64 {
    let Some(s) = v.map(str::trim) else { return 0 };
    let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let frac: String = frac.chars().chain(std::iter::repeat('0')).take(2).collect();
    let c = whole.parse::<i64>().unwrap_or(0) * 100 + frac.parse::<i64>().unwrap_or(0);
    if neg {
        -c
    } else {
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_count_in_whole_cents() {
        assert_eq!(cents(Some("12.5")), 1250);
        assert_eq!(cents(Some("12.50")), 1250);
        assert_eq!(cents(Some("-0.07")), -7);
        assert_eq!(cents(Some("3")), 300);
        assert_eq!(cents(None), 0);
        assert_eq!(amount(-1250), "-12.50");
        assert_eq!(amount(7), "0.07");
    }
}
