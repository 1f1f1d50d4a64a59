//! Differential migration: what changed in the source since the last sync, and applying it.
//!
//! The validation agent analyses ([`analyze`]): every source row is mapped with the same
//! [`RowMapper`] the migration uses, and the target compares each page of expected rows with
//! its rows and with the sync baseline (a hash of what agentctl last wrote to each row,
//! recorded at the end of the full load and with every differential write), one statement a
//! page ([`Target::differ`]). [`classify`] turns each answer into a [`Change`]; rows agentctl
//! created that no source row has any more are deletes. The analysis and every row out of step
//! go to `data_differentials`.
//!
//! The execution agent applies ([`apply`]) an entity's pending analysis in batches, one
//! transaction each with its conflict records, rejects, baseline and each row's outcome, so a
//! crash leaves a batch applied whole or not at all and a repeated apply skips what is done.
//! The orchestrator applies inserts and updates parents first and deletes children first.

use runtime::error::ToolError;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use runtime::context::RunContext;
use runtime::domain::{
    integer_key, Change, DiffApplied, DiffBatch, Diffed, Differential, EntityDiff, Scan, SyncMark,
    TableName,
};
use runtime::events::RunEvent;
use runtime::mapping::{KeyDeriver, MappingSpec};
use runtime::ports::{Rows, Target};
use runtime::{AgentName, RunId};

use crate::pipeline::{
    expect, page_of, prepare, read_ahead, reference_parents, soft_delete, synced_columns,
    GenericCheck, InPageOrder, MigrateEntity, Prepared, COMPARES_IN_FLIGHT,
};
use runtime::text_rows::TextRows;

/// Source rows compared a page.
const PAGE: usize = 5_000;
/// Differential rows applied a transaction.
const APPLY_BATCH: usize = 5_000;

/// What a source row asks of its target row, given how the target compares with it and with
/// what agentctl last wrote; `None` when they are in step (or the row is not agentctl's).
pub fn classify(wanted: bool, d: &Diffed, already_rejected: bool) -> Option<Change> {
    if !wanted {
        // The mapping rejects the row as it is now: news only if not recorded before, or if
        // the target still holds an earlier version of it.
        return match (d.present, d.ours) {
            (true, true) => Some(Change::Rejected),
            (false, _) if !already_rejected => Some(Change::Rejected),
            _ => None,
        };
    }
    match (d.present, d.ours, d.deleted) {
        // Absent: rejected before with its reason (it stays so), or written once and deleted
        // in the target since, or new in the source.
        (false, _, _) if already_rejected => None,
        (false, _, _) => {
            Some(if d.baseline.is_some() { Change::TargetChanged } else { Change::Insert })
        }
        // A row that was in the target before agentctl is never touched; one whose values are
        // not the source's is reported as the target's own (validation fails on it too).
        (true, false, _) => d.differs.then_some(Change::TargetChanged),
        // Marked deleted: by agentctl (which drops the row's baseline) when its source row
        // went, and the row is back; else by the target's own users.
        (true, true, true) => {
            Some(if d.baseline.is_none() { Change::Update } else { Change::TargetChanged })
        }
        (true, true, false) if !d.differs => None,
        (true, true, false) => match d.baseline {
            // Never synced since a migration that kept no baseline: the source is the truth.
            None => Some(Change::Update),
            Some(b) if Some(b) == d.target_hash => Some(Change::Update),
            Some(b) if Some(b) == d.expected_hash => Some(Change::TargetChanged),
            Some(_) => Some(Change::Conflict),
        },
    }
}

/// How long a full analysis' trust in `updated_at` lasts: after that the next is full again.
const FULL_EVERY: f64 = 24.0 * 3600.0;

/// An entity to analyse; `full` reads every source row even where `updated_at` is trusted.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct DiffEntity {
    pub entity: MigrateEntity,
    pub full: bool,
}

/// The position of the mapped table's own `updated_at` among the scanned columns, where it can
/// tell changed rows: not for a table read with joins (a joined row's change does not move it).
fn updated_at(spec: &MappingSpec) -> Option<usize> {
    if !spec.joins.is_empty() {
        return None;
    }
    spec.source_columns().iter().position(|c| c == "updated_at")
}

/// `stamp` is before `watermark` less [`CHANGED_SINCE_MARGIN`] (both as the source prints a
/// `timestamp`; a stamp that does not parse counts as before).
fn before_watermark(stamp: Option<&str>, watermark: &str) -> bool {
    let parse = |s: &str| {
        chrono::NaiveDateTime::parse_from_str(s.get(..19).unwrap_or(s), "%Y-%m-%d %H:%M:%S")
            .or_else(|_| {
                chrono::DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z")
                    .map(|d| d.naive_utc())
            })
    };
    let margin = chrono::Duration::minutes(5);
    match (stamp.map(parse), parse(watermark)) {
        (Some(Ok(s)), Ok(w)) => s < w - margin,
        (_, Ok(_)) => true,
        (_, Err(_)) => false,
    }
}

/// Analyses one entity: stores and returns what is out of step. Where the table has an
/// `updated_at` that earlier full analyses found moving with every change, and the last full
/// analysis is less than a day old, only the rows stamped since the watermark are compared
/// (the deletes are still found from every key).
pub async fn analyze(
    ctx: &RunContext,
    rows: Arc<dyn Rows>,
    target: Arc<dyn Target>,
    req: &DiffEntity,
) -> Result<EntityDiff, ToolError> {
    let started = Instant::now();
    let DiffEntity { entity: req, full } = req;
    let spec = &req.spec;
    let stamp_col = updated_at(spec);
    let (mark, fast) = how_fast(target.as_ref(), spec, *full, stamp_col).await?;
    let Prepared { mapper, out_cols, id_col, references, generic, deferred_cols, .. } =
        prepare(ctx, AgentName::Validation, target.as_ref(), req).await?;
    let references = awaited_parents(&references, &generic, &deferred_cols, &spec.target);
    let legacy_col = out_cols
        .iter()
        .position(|(c, _)| c == "legacy_id")
        .ok_or_else(|| ToolError::system(format!("{} has no legacy_id column", spec.target)))?;
    let hashed = synced_columns(&out_cols, id_col);
    let soft = soft_delete(req);
    let (for_parents, rejected_keys) = rejected(target.as_ref(), &spec.source).await?;
    let diff = new_analysis(ctx.run_id, fast, spec, &out_cols);
    let deriver = KeyDeriver::new(req.keys.layout, req.keys.namespace, &spec.source);
    // Rows gone from the source: with an integer key, each page asks the target for its live
    // rows in the page's key range that the page does not have (both sides in key order);
    // otherwise every live key of the target is checked against the source's keys at the end.
    let mut ranged = !fast && spec.key.len() == 1 && integer_key(&out_cols[legacy_col].1);
    // The latest stamp read, and the changes whose stamp did not move (a full analysis checks
    // `updated_at` against the previous watermark).
    let mut tally = Tally::new(diff, fast, stamp_col.is_some(), &mark);
    let mut last_key: Option<i64> = None;
    let mut gone: Vec<(String, uuid::Uuid)> = Vec::new();
    // As in validation: the source reads the next page while this task maps one and the
    // target compares the ones before, two at a time, answered in page order.
    let scan = Scan {
        changed_since: if fast {
            mark.watermark.clone().map(|w| ("updated_at".to_owned(), w))
        } else {
            None
        },
        ..Scan::entity(spec)
    };
    let (mut pages, reader) = read_ahead(rows.clone(), scan, page_of(req, PAGE));
    let mut compares: InPageOrder<PageAnswer> = InPageOrder::new(COMPARES_IN_FLIGHT);
    loop {
        let page = match pages.recv().await {
            Some(page) => page?,
            None => TextRows::default(),
        };
        let next = (!page.is_empty())
            .then(|| expected_page(&mapper, &out_cols, id_col, legacy_col, stamp_col, page));
        while let Some((expected, reasons, answers, missing, stamps)) =
            compares.done(next.is_none()).await?
        {
            gone.extend(missing);
            let retry =
                parents_arrived(target.as_ref(), &expected, &answers, &for_parents, &references)
                    .await?;
            let page =
                Page { expected: &expected, answers: &answers, stamps: &stamps, retry: &retry };
            tally.page(&page, reasons, &rejected_keys, id_col);
        }
        let keys = next.as_ref().map(|(expected, _, _)| expected.keys.as_slice());
        let range = page_range(keys, &mut ranged, &mut last_key);
        let Some((expected, reasons, stamps)) = next else { break };
        let ask = Ask {
            target: target.clone(),
            table: spec.target.clone(),
            hashed: hashed.clone(),
            soft,
        };
        compares.start(ask.page(expected, reasons, stamps, range));
    }
    reader.await.map_err(|e| ToolError::system(format!("the reader stopped: {e}")))?;
    let gone = match ranged {
        // Past the last source key.
        true => {
            let after = last_key.map(|k| k.to_string());
            gone.extend(
                target.live_keys_between(&spec.target, after.as_deref(), None, &[], soft).await?,
            );
            gone.into_iter()
                .filter(|(k, id)| deriver.derive_stored(k) == *id)
                .map(|(k, _)| k)
                .collect()
        }
        false => gone_by_keys(rows, spec, target.as_ref(), &deriver, soft).await?,
    };
    let Tally { mut diff, mut found, latest, unmoved, .. } = tally;
    add_deletes(&mut diff, &mut found, gone, &deriver);
    if stamp_col.is_some() {
        diff.watermark = latest;
        diff.trusted = trust(fast, &mark, &unmoved);
    }
    diff.seconds = started.elapsed().as_secs_f64();
    target.save_analysis(&diff, &found).await?;
    record_analysis(ctx, spec, &diff, fast, &unmoved);
    Ok(diff)
}

/// A new analysis of the entity, nothing counted yet.
fn new_analysis(
    run_id: RunId,
    fast: bool,
    spec: &MappingSpec,
    out_cols: &[(String, String)],
) -> EntityDiff {
    EntityDiff {
        analysis_id: RunId::new(),
        run_id,
        mode: if fast { "fast" } else { "full" }.to_owned(),
        watermark: None,
        trusted: None,
        source: spec.source.clone(),
        target: spec.target.clone(),
        columns: out_cols.to_vec(),
        source_rows: 0,
        in_step: 0,
        inserts: 0,
        updates: 0,
        deletes: 0,
        conflicts: 0,
        target_changed: 0,
        rejected: 0,
        seconds: 0.0,
    }
}

/// The rows agentctl created whose source row is gone, in key order, as deletes.
fn add_deletes(
    diff: &mut EntityDiff,
    found: &mut Vec<Differential>,
    mut gone: Vec<String>,
    deriver: &KeyDeriver,
) {
    gone.sort();
    for key in gone {
        diff.count(Change::Delete);
        found.push(Differential {
            target_id: Some(deriver.derive_stored(&key).to_string()),
            legacy_key: key,
            change: Change::Delete,
            values: None,
            target_hash: None,
            expected_hash: None,
            reason: None,
        });
    }
}

/// What the earlier analyses learnt of the entity's `updated_at`, and whether this analysis
/// may read only the rows stamped since the watermark: not when asked for a full one, not
/// before the stamp is trusted, not when the last full analysis is a day old.
async fn how_fast(
    target: &dyn Target,
    spec: &MappingSpec,
    full: bool,
    stamp_col: Option<usize>,
) -> Result<(SyncMark, bool), ToolError> {
    let mark = match stamp_col {
        Some(_) => target.sync_mark(&spec.source).await?,
        None => SyncMark::default(),
    };
    let fast = !full
        && mark.trusted == Some(true)
        && mark.watermark.is_some()
        && mark.full_age_seconds.is_some_and(|age| age < FULL_EVERY);
    Ok((mark, fast))
}

/// The legacy keys of the source table's rejected rows, and those of them tried again once
/// their parents are in (`Target::rejected_keys`: a missing parent, or another row's unique
/// value at a sync).
async fn rejected(
    target: &dyn Target,
    source: &TableName,
) -> Result<(HashSet<String>, HashSet<String>), ToolError> {
    let rejected = target.rejected_keys(source).await?;
    let for_parents: HashSet<String> =
        rejected.iter().filter(|(_, parent)| *parent).map(|(k, _)| k.clone()).collect();
    let rejected_keys: HashSet<String> = rejected.into_iter().map(|(k, _)| k).collect();
    Ok((for_parents, rejected_keys))
}

/// A page's expected rows, the mapping's reason for each row it rejects, and each row's stamp.
type PageAnswer = (
    runtime::domain::Expected,
    Vec<(usize, String)>,
    Vec<Diffed>,
    Vec<(String, uuid::Uuid)>,
    Vec<Option<String>>,
);

/// A page of source rows as the target should hold them, with the mapping's reasons for the
/// rows it rejects and each row's `updated_at`.
fn expected_page(
    mapper: &crate::transform::RowMapper,
    out_cols: &[(String, String)],
    id_col: usize,
    legacy_col: usize,
    stamp_col: Option<usize>,
    page: TextRows,
) -> (runtime::domain::Expected, Vec<(usize, String)>, Vec<Option<String>>) {
    let stamps: Vec<Option<String>> = stamp_col
        .map(|i| page.column(i).map(|v| v.map(str::to_owned)).collect())
        .unwrap_or_default();
    let mut reasons = Vec::new();
    let expected = expect(mapper, out_cols, id_col, legacy_col, &[], page, Some(&mut reasons));
    (expected, reasons, stamps)
}

/// What the target is asked of each page of an analysis.
struct Ask {
    target: Arc<dyn Target>,
    table: TableName,
    hashed: Vec<usize>,
    soft: bool,
}

impl Ask {
    /// Where each of the page's rows stands in the target, and, with the page's key range,
    /// the live target rows in it that the page does not have (gone from the source).
    async fn page(
        self,
        expected: runtime::domain::Expected,
        reasons: Vec<(usize, String)>,
        stamps: Vec<Option<String>>,
        range: Option<(Option<String>, Option<String>)>,
    ) -> Result<PageAnswer, ToolError> {
        let Ask { target, table, hashed, soft } = self;
        let answers = target.differ(&table, &expected, &hashed, soft).await?;
        let missing = match range {
            Some((after, upto)) => {
                target
                    .live_keys_between(
                        &table,
                        after.as_deref(),
                        upto.as_deref(),
                        &expected.keys,
                        soft,
                    )
                    .await?
            }
            None => Vec::new(),
        };
        Ok((expected, reasons, answers, missing, stamps))
    }
}

/// Whether `updated_at` is trusted after this analysis. Trust is earned: a full analysis after
/// an earlier one checks that every change it found was stamped after that one's watermark.
fn trust(fast: bool, mark: &SyncMark, unmoved: &[String]) -> Option<bool> {
    match (fast, &mark.watermark) {
        (true, _) => mark.trusted,
        (false, Some(_)) => Some(unmoved.is_empty()),
        (false, None) => None,
    }
}

/// One page's answers from the target, with what tallying them needs.
struct Page<'a> {
    expected: &'a runtime::domain::Expected,
    answers: &'a [Diffed],
    /// Each row's `updated_at`, when the table has one.
    stamps: &'a [Option<String>],
    /// The rows rejected for a missing parent, or for another row's unique value at a sync,
    /// whose parents are in.
    retry: &'a HashSet<usize>,
}

/// What an analysis found so far, page by page in key order.
struct Tally {
    diff: EntityDiff,
    found: Vec<Differential>,
    /// The latest `updated_at` read.
    latest: Option<String>,
    /// Changes whose stamp did not move past the previous watermark.
    unmoved: Vec<String>,
    fast: bool,
    /// The table has an `updated_at`.
    stamped: bool,
    /// The previous analysis' watermark.
    watermark: Option<String>,
}

impl Tally {
    /// Nothing booked yet. The latest stamp starts at the watermark for a fast analysis.
    fn new(diff: EntityDiff, fast: bool, stamped: bool, mark: &SyncMark) -> Tally {
        Tally {
            diff,
            found: Vec::new(),
            latest: if fast { mark.watermark.clone() } else { None },
            unmoved: Vec::new(),
            fast,
            stamped,
            watermark: mark.watermark.clone(),
        }
    }

    /// Books each row of a page: in step, or the change it asks for (with the mapping's reason
    /// for a row it rejects).
    fn page(
        &mut self,
        page: &Page<'_>,
        reasons: Vec<(usize, String)>,
        rejected_keys: &HashSet<String>,
        id_col: usize,
    ) {
        if let Some(max) = page.stamps.iter().flatten().max() {
            if self.latest.as_ref().is_none_or(|l| max > l) {
                self.latest = Some(max.clone());
            }
        }
        let mut reasons = reasons.into_iter().peekable();
        for (r, d) in page.answers.iter().enumerate() {
            let key = &page.expected.keys[r];
            let reason = match reasons.peek() {
                Some((at, _)) if *at == r => reasons.next().map(|(_, why)| why),
                _ => None,
            };
            self.diff.source_rows += 1;
            let Some(change) = classify(
                page.expected.wanted[r],
                d,
                rejected_keys.contains(key) && !page.retry.contains(&r),
            ) else {
                self.diff.in_step += 1;
                continue;
            };
            self.diff.count(change);
            let source_change = matches!(
                change,
                Change::Insert | Change::Update | Change::Conflict | Change::Rejected
            );
            if let (false, true, Some(w)) =
                (self.fast, source_change && self.stamped, &self.watermark)
            {
                if before_watermark(page.stamps[r].as_deref(), w) {
                    self.unmoved.push(key.clone());
                }
            }
            let carries_values =
                matches!(change, Change::Insert | Change::Update | Change::Conflict);
            self.found.push(Differential {
                legacy_key: key.clone(),
                change,
                target_id: page.expected.values.get(r, id_col).map(str::to_owned),
                values: carries_values
                    .then(|| page.expected.values.row(r).map(|v| v.map(str::to_owned)).collect()),
                target_hash: d.target_hash,
                expected_hash: d.expected_hash,
                reason,
            });
        }
    }
}

/// The page's key range while the analysis reads ranges (its keys integers in ascending order
/// after the last page's); a page that is not stops the ranges for the rest of the analysis.
fn page_range(
    keys: Option<&[String]>,
    ranged: &mut bool,
    last_key: &mut Option<i64>,
) -> Option<(Option<String>, Option<String>)> {
    let keys = keys.filter(|_| *ranged)?;
    let range = key_range(keys, *last_key);
    match &range {
        Some((_, upto)) => *last_key = upto.as_ref().and_then(|k| k.parse().ok()),
        None => *ranged = false,
    }
    range
}

/// The key range of a page whose keys are integers in ascending order after `last_key`:
/// (after, up to), as text; `None` otherwise.
fn key_range(keys: &[String], last_key: Option<i64>) -> Option<(Option<String>, Option<String>)> {
    let ints: Vec<i64> = keys.iter().map(|k| k.parse::<i64>().ok()).collect::<Option<_>>()?;
    let ascending = ints.windows(2).all(|w| w[0] < w[1])
        && last_key.is_none_or(|l| ints.first().is_some_and(|f| *f > l));
    ascending.then(|| (last_key.map(|k| k.to_string()), ints.last().map(|k| k.to_string())))
}

/// The analysis' decisions in the trail: what it found, and a watermark it stops trusting.
fn record_analysis(
    ctx: &RunContext,
    spec: &MappingSpec,
    diff: &EntityDiff,
    fast: bool,
    unmoved: &[String],
) {
    if !unmoved.is_empty() {
        ctx.decision(
        AgentName::Validation,
        format!("{}: updated_at is not trusted: {} changes kept an older stamp (key {})", spec.target.name, unmoved.len(), unmoved[0]),
        "a fast analysis would have missed them, so the entity's analyses read every row \
            until it is trusted again",
        serde_json::json!({"entity": spec.source, "unmoved": unmoved.iter().take(20).collect::<Vec<_>>()}),
    );
    }
    ctx.decision(
        AgentName::Validation,
        format!(
            "{} ({}): {} new, {} changed, {} deleted, {} conflicts, {} changed in the target \
            only, {} rejected; {} in step",
            spec.target.name,
            diff.mode,
            diff.inserts,
            diff.updates,
            diff.deletes,
            diff.conflicts,
            diff.target_changed,
            diff.rejected,
            diff.in_step
        ),
        if fast {
            "the source rows stamped since the watermark (updated_at, trusted by the full \
            analyses) mapped and compared with their target rows (typed) and with the hash \
            of what agentctl last wrote there; every key read for the deletes"
        } else {
            "every source row mapped and compared with its target row (typed) and with the hash \
            of what agentctl last wrote there"
        },
        diff,
    );
}

/// The parents a row rejected for a missing one waits for, by column: each reference's table,
/// the tables a generic reference can name, and the entity's own (`own`) for its
/// self-references (`own_refs`), so that a reply to a row that never existed is tried again
/// once that row is in the target, not at every analysis.
fn awaited_parents(
    references: &[(usize, TableName)],
    generic: &[GenericCheck],
    own_refs: &[usize],
    own: &TableName,
) -> Vec<(usize, Vec<TableName>)> {
    let mut parents = reference_parents(references, generic);
    parents.extend(own_refs.iter().map(|&c| (c, vec![own.clone()])));
    parents
}

/// The rows of a page (by index) that are absent from the target, were rejected for nothing
/// but a missing parent, and whose parents are all in the target now.
async fn parents_arrived(
    target: &dyn Target,
    expected: &runtime::domain::Expected,
    answers: &[Diffed],
    for_parents: &HashSet<String>,
    references: &[(usize, Vec<TableName>)],
) -> Result<HashSet<usize>, ToolError> {
    let mut waiting: HashSet<usize> = (0..answers.len())
        .filter(|&r| {
            expected.wanted[r] && !answers[r].present && for_parents.contains(&expected.keys[r])
        })
        .collect();
    for (col, parents) in references {
        if waiting.is_empty() {
            break;
        }
        let ids: Vec<String> = waiting
            .iter()
            .filter_map(|&r| expected.values.get(r, *col).map(str::to_owned))
            .collect();
        if ids.is_empty() {
            continue;
        }
        let mut found: HashSet<String> = HashSet::new();
        for parent in parents {
            found.extend(target.existing_ids(parent, &ids).await?);
        }
        waiting.retain(|&r| expected.values.get(r, *col).is_none_or(|id| found.contains(id)));
    }
    Ok(waiting)
}

/// The legacy keys of the rows agentctl created that no source row has: every source key read
/// (a narrow scan of the key columns), every live target key checked against them.
async fn gone_by_keys(
    rows: Arc<dyn Rows>,
    spec: &MappingSpec,
    target: &dyn Target,
    deriver: &KeyDeriver,
    soft: bool,
) -> Result<Vec<String>, ToolError> {
    let scan = Scan {
        columns: spec.key.clone(),
        joins: Vec::new(),
        scripts: Vec::new(),
        ..Scan::entity(spec)
    };
    let mut keys: HashSet<String> = HashSet::new();
    rows.scan(&scan, &mut |r: &[Option<&str>]| {
        keys.insert(runtime::mapping::key_text(
            &r.iter().map(|v| v.unwrap_or("")).collect::<Vec<_>>(),
        ));
    })
    .await?;
    let live = target.live_keys(&spec.target, deriver.range(), soft).await?;
    Ok(live
        .into_iter()
        .filter(|(k, id)| !keys.contains(k) && deriver.derive_stored(k) == *id)
        .map(|(k, _)| k)
        .collect())
}

/// Which rows of a pending analysis an apply pass takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Pass {
    /// Inserts, updates, conflicts and rejects (parents first).
    Writes,
    /// Deletes (children first).
    Deletes,
    /// The writes refused before the deletes for what the sync's own order left in their way
    /// (parents first, once every entity's deletes are done); closes the analysis.
    Retries,
}

/// Applies one pass of an entity's pending analysis. `None` when it has none.
pub async fn apply(
    ctx: &RunContext,
    target: &dyn Target,
    req: &MigrateEntity,
    pass: Pass,
) -> Result<Option<DiffApplied>, ToolError> {
    let spec = &req.spec;
    let Some((analysis, mut pending)) = target.pending_analysis(&spec.source, &spec.target).await?
    else {
        return Ok(None);
    };
    // The retries: the writes this run saw refused for what the sync's order left in their way,
    // made pending again (most syncs have none: the analysis is closed without more).
    let mut reopened = 0;
    if pass == Pass::Retries {
        reopened =
            target.reopen_refused(analysis.analysis_id, &spec.source, ctx.run_id).await? as i64;
        if reopened > 0 {
            pending = target
                .pending_analysis(&spec.source, &spec.target)
                .await?
                .map(|(_, rows)| rows)
                .unwrap_or_default();
        } else {
            target.close_analysis(analysis.analysis_id, &spec.source, ctx.run_id).await?;
            return Ok(Some(DiffApplied::default()));
        }
    }
    let Prepared { out_cols, id_col, references, generic, .. } =
        prepare(ctx, AgentName::Execution, target, req).await?;
    let references = reference_parents(&references, &generic);
    if out_cols != analysis.columns {
        return Err(ToolError::system(format!(
            "the mapping of {} changed since analysis {}: analyse again (agentctl diff analyze)",
            spec.source, analysis.analysis_id
        )));
    }
    let legacy_col = out_cols
        .iter()
        .position(|(c, _)| c == "legacy_id")
        .ok_or_else(|| ToolError::system(format!("{} has no legacy_id", spec.target)))?;
    let (hashed, soft) = (synced_columns(&out_cols, id_col), soft_delete(req));
    let batch = |rows: &[Differential], after_deletes: bool| DiffBatch {
        run_id: ctx.run_id,
        analysis: analysis.clone(),
        legacy_column: legacy_col,
        references: references.clone(),
        hashed: hashed.clone(),
        policy: spec.sync,
        soft_delete: soft,
        after_deletes,
        rows: rows.to_vec(),
    };
    let (deletes, retry) = (pass == Pass::Deletes, pass == Pass::Retries);
    let rows: Vec<Differential> =
        pending.into_iter().filter(|r| (r.change == Change::Delete) == deletes).collect();
    let mut done = apply_rows(ctx, target, &spec.target.name, &rows, &|r| batch(r, retry)).await?;
    if retry {
        retried(&spec.source, reopened, &mut done);
        target.close_analysis(analysis.analysis_id, &spec.source, ctx.run_id).await?;
    }
    ctx.decision(
        AgentName::Execution,
        format!(
            "{} ({}): {} inserted, {} updated, {} deleted, {} conflicts ({} by {}), {} held, {} \
                rejected, {} stale{}",
            spec.target.name,
            match pass {
                Pass::Writes => "writes",
                Pass::Deletes => "deletes",
                Pass::Retries => "tried again",
            },
            done.inserted,
            done.updated,
            done.deleted,
            done.conflicted,
            done.conflicted - done.held.min(done.conflicted),
            spec.sync.conflicts.as_str(),
            done.held,
            done.rejected + reopened,
            done.stale,
            match reopened {
                0 => String::new(),
                n => format!("; {n} writes refused before the deletes tried again after them"),
            }
        ),
        format!(
            "analysis {}: each batch applied in one transaction with its conflict records, \
                rejects, baseline and outcomes; deletes are {}",
            analysis.analysis_id,
            spec.sync.delete.as_str()
        ),
        serde_json::json!({"entity": spec.source, "analysis": analysis.analysis_id, "applied": done}),
    );
    Ok(Some(done))
}

/// What the retries came to (`done`, the `reopened` writes tried again after every entity's
/// deletes: what a unique rule refused before them, or a parent not in the target yet, parents
/// tried first), noted, and the rejections the writes pass counted of them taken back.
fn retried(source: &TableName, reopened: i64, done: &mut DiffApplied) {
    done.note(format!(
        "{}: {reopened} writes refused before the deletes (by a unique rule, or for a parent not \
            written yet), tried again after them: {} went in, {} held, {} rejected",
        source.name,
        done.inserted + done.updated,
        done.held,
        done.rejected
    ));
    done.rejected -= reopened;
}

/// Applies `rows` of an analysis batch by batch (`batch` makes each), publishing progress.
async fn apply_rows(
    ctx: &RunContext,
    target: &dyn Target,
    entity: &str,
    rows: &[Differential],
    batch: &(dyn Fn(&[Differential]) -> DiffBatch + Sync),
) -> Result<DiffApplied, ToolError> {
    let mut done = DiffApplied::default();
    for (i, chunk) in rows.chunks(APPLY_BATCH).enumerate() {
        done.add(&target.apply_diff(&batch(chunk)).await?);
        ctx.events.publish(RunEvent::Progress {
            run_id: ctx.run_id,
            entity: entity.to_owned(),
            rows_done: ((i + 1) * APPLY_BATCH).min(rows.len()) as u64,
            rows_total: Some(rows.len() as u64),
        });
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        present: bool,
        ours: bool,
        deleted: bool,
        differs: bool,
        t: Option<i64>,
        e: Option<i64>,
        b: Option<i64>,
    ) -> Diffed {
        Diffed { present, ours, deleted, differs, target_hash: t, expected_hash: e, baseline: b }
    }

    #[test]
    fn a_row_is_classified_by_what_changed_since_the_last_sync() {
        // In step.
        assert_eq!(classify(true, &row(true, true, false, false, None, None, None), false), None);
        // New in the source; absent after agentctl wrote it: the target deleted it.
        assert_eq!(
            classify(true, &row(false, false, false, false, None, None, None), false),
            Some(Change::Insert)
        );
        assert_eq!(
            classify(true, &row(false, false, false, false, None, None, Some(7)), false),
            Some(Change::TargetChanged)
        );
        // Rejected by the target before (a missing parent, say): recorded, not retried each sync.
        assert_eq!(classify(true, &row(false, false, false, false, None, None, None), true), None);
        // The target still holds what agentctl wrote: the source changed.
        assert_eq!(
            classify(true, &row(true, true, false, true, Some(1), Some(2), Some(1)), false),
            Some(Change::Update)
        );
        // The source still maps to what agentctl wrote: the target changed.
        assert_eq!(
            classify(true, &row(true, true, false, true, Some(3), Some(1), Some(1)), false),
            Some(Change::TargetChanged)
        );
        // Both moved.
        assert_eq!(
            classify(true, &row(true, true, false, true, Some(3), Some(2), Some(1)), false),
            Some(Change::Conflict)
        );
        // No baseline: the source is the truth.
        assert_eq!(
            classify(true, &row(true, true, false, true, Some(3), Some(2), None), false),
            Some(Change::Update)
        );
        // Kept rows are never touched: equal, in step; differing, the target's own.
        assert_eq!(classify(true, &row(true, false, false, false, None, None, None), false), None);
        assert_eq!(
            classify(true, &row(true, false, false, true, Some(3), Some(2), None), false),
            Some(Change::TargetChanged)
        );
        // Soft-deleted by agentctl (no baseline left) and back in the source; by the target's
        // users.
        assert_eq!(
            classify(true, &row(true, true, true, false, None, None, None), false),
            Some(Change::Update)
        );
        assert_eq!(
            classify(true, &row(true, true, true, false, None, None, Some(1)), false),
            Some(Change::TargetChanged)
        );
    }

    #[test]
    fn a_rejected_row_is_news_once() {
        let absent = row(false, false, false, false, None, None, None);
        assert_eq!(classify(false, &absent, false), Some(Change::Rejected));
        assert_eq!(classify(false, &absent, true), None);
        // The target holds an earlier version the mapping now rejects.
        assert_eq!(
            classify(false, &row(true, true, false, false, None, None, Some(1)), true),
            Some(Change::Rejected)
        );
    }
}
