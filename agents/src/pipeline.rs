//! The read-and-map pipeline that the migration, the validation and the differential sync all
//! stand on: an entity to move ([`MigrateEntity`]), its mapper set up against the target
//! ([`prepare`]), the source read a page ahead ([`read_ahead`]), pages compared in the target
//! a few at a time and answered in key order ([`InPageOrder`]), and the target row a page should
//! become ([`expect`]). The tasks it starts end when what holds them is dropped, so an entity's
//! worker that is stopped leaves nothing running. Agents import this module; it imports no
//! agent.

use std::collections::BTreeMap;
use std::sync::Arc;

use runtime::context::RunContext;
use runtime::domain::{
    key_parts, legacy_key, Expected, PlannedEntity, Scan, SchemaReport, TableName,
};
use runtime::error::ToolError;
use runtime::mapping::{KeyDeriver, MappingSpec};
use runtime::ports::{Rows, Target};
use runtime::text_rows::TextRows;
use runtime::AgentName;
use serde::{Deserialize, Serialize};
use tokio_util::task::AbortOnDropHandle;

use crate::transform::{GenericReference, ReferenceMemo, RowMapper};
use runtime::mapping::Keys;

/// Source pages read ahead of the mapping and writing: one in the channel, one being read.
const READ_AHEAD: usize = 1;

/// Pages the validation and the differential analysis have compared in the target at once,
/// each on a connection of its own, so that the largest table's comparison, the last one
/// running, has two target backends at work; their pages are half the size of the
/// one-at-a-time design's, so as many rows are in memory as there (bench/RESULTS.md).
pub(crate) const COMPARES_IN_FLIGHT: usize = 2;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MigrateEntity {
    pub entity: PlannedEntity,
    pub spec: MappingSpec,
    /// The target table of every source table this entity references.
    pub parents: Vec<(TableName, TableName)>,
    pub keys: Keys,
    /// The target's report (the table, its enums and domains).
    pub target: SchemaReport,
    /// The table's foreign keys are set aside for the load: self-references are written as
    /// they are, and the rows left pointing at nothing are removed afterwards, instead of
    /// deferring every self-reference to a second pass of updates.
    pub constraints_suspended: bool,
}

/// A mapper set up for one entity, with what the writer needs to know of its columns.
pub struct Prepared {
    pub mapper: RowMapper,
    /// Target columns with their `format_type` text.
    pub out_cols: Vec<(String, String)>,
    pub id_col: usize,
    /// Columns referencing the entity's own table, filled in a second pass.
    pub deferred_cols: Vec<usize>,
    /// Whether the target's own validated foreign key on `id` covers each of those columns (as
    /// the catalog read at the start of the load had it), so putting it back proves that no
    /// row points at a row that is not there.
    pub self_refs_checked: bool,
    /// Columns referencing another target table, checked before each insert.
    pub references: Vec<(usize, TableName)>,
    /// The generic references, each row checked against the parent its `by` value names.
    pub generic: Vec<GenericCheck>,
    /// What the mapping of a source row depends on, as a number: agentctl's version, the
    /// mapping, the target table's columns (without their statistics) and CHECKs, the target's
    /// types, the key derivation and the parents' rows that keep their UUIDs. A page's fingerprint is sealed
    /// with it ([`TextRows::fingerprint`]): a page read again under another seal is mapped again.
    pub seal: u64,
}

/// Sets up the mapper of an entity the way its migration uses it: references to parent rows
/// that were in the target before agentctl use the UUIDs those rows have.
pub async fn prepare(
    ctx: &RunContext,
    agent: AgentName,
    target: &dyn Target,
    req: &MigrateEntity,
) -> Result<Prepared, ToolError> {
    let spec = &req.spec;
    let table = req
        .target
        .table(&spec.target)
        .ok_or_else(|| ToolError::system(format!("the target has no table {}", spec.target)))?;
    let mut mapper = RowMapper::new(spec, table, &req.target, req.keys)?;
    let mut seal = Seal::new(req, table);
    for (parent_source, parent_target) in &req.parents {
        let deriver = KeyDeriver::new(req.keys.layout, req.keys.namespace, parent_source);
        let kept: std::collections::HashMap<String, String> = target
            .kept_rows(parent_target, deriver.range())
            .await?
            .into_iter()
            .filter(|(legacy, id)| deriver.derive_stored(legacy).to_string() != *id)
            .collect();
        if !kept.is_empty() {
            ctx.decision(
                agent,
                format!(
                    "{}: {} rows of {parent_target} keep the UUIDs they had",
                    spec.target.name,
                    kept.len()
                ),
                "they were in the target before agentctl, matched by legacy_id; references to \
                    them use their UUIDs",
                serde_json::json!({"parent": parent_target, "rows": kept.len()}),
            );
        }
        seal.kept(parent_source, &kept);
        mapper.keep_parent_ids(parent_source.clone(), kept);
    }
    let out_cols: Vec<(String, String)> = mapper
        .target_columns()
        .iter()
        .map(|c| {
            (
                c.to_string(),
                table.column(c).map(|col| col.data_type.clone()).unwrap_or_else(|| "text".into()),
            )
        })
        .collect();
    let id_col = out_cols
        .iter()
        .position(|(c, _)| table.primary_key.len() == 1 && *c == table.primary_key[0])
        // A partitioned table's primary key includes its partition columns beside id.
        .or_else(|| out_cols.iter().position(|(c, _)| c == "id" && table.primary_key.contains(c)))
        .ok_or_else(|| ToolError::bad_input("the target table has no single-column key"))?;
    let mut deferred_cols = Vec::new();
    let mut self_refs_checked = true;
    let mut references = Vec::new();
    for r in mapper.references() {
        if r.parent == spec.source {
            deferred_cols.push(r.column);
            self_refs_checked &= table.foreign_keys.iter().any(|fk| {
                fk.columns == [r.target_column.clone()]
                    && fk.references == spec.target
                    && fk.referenced_columns == ["id"]
                    && fk.validated
            });
            continue;
        }
        // A parent that loads after this entity (a broken cycle): its rows are not there to
        // check against yet; the reference goes in as it is and its key proves it later.
        if req.entity.later_parents.contains(&r.parent) {
            continue;
        }
        // The parent's target by the mappings, which stay true while the target's foreign keys
        // are set aside (a resumed run analyzes the target without them); else by the catalog.
        let mapped = req
            .parents
            .iter()
            .find(|(source, _)| *source == r.parent)
            .map(|(_, target)| target.clone());
        let fk_target = table
            .foreign_keys
            .iter()
            .find(|fk| fk.columns == [r.target_column.clone()])
            .map(|fk| fk.references.clone());
        if let Some(p) = mapped.or(fk_target) {
            references.push((r.column, p));
        }
    }
    let seal = seal.of(&out_cols);
    Ok(Prepared {
        generic: generic_checks(&mapper, req),
        mapper,
        out_cols,
        id_col,
        deferred_cols,
        self_refs_checked,
        references,
        seal,
    })
}

/// The entity's generic references, each parent with where it is when the entity loads.
fn generic_checks(mapper: &RowMapper, req: &MigrateEntity) -> Vec<GenericCheck> {
    let spec = &req.spec;
    mapper
        .generic_references()
        .into_iter()
        .map(|reference| {
            let parents = reference
                .parents
                .values()
                .map(|p| {
                    let target = req.parents.iter().find(|(s, _)| s == p).map(|(_, t)| t.clone());
                    let later = p == &spec.source || req.entity.later_parents.contains(p);
                    let parent = match target {
                        Some(t) if later => GenericParent::Later(t),
                        Some(t) => GenericParent::Loaded(t),
                        None => GenericParent::NotMigrated,
                    };
                    (p.clone(), parent)
                })
                .collect();
            GenericCheck { reference, parents }
        })
        .collect()
}

/// A generic reference as the load checks it.
pub struct GenericCheck {
    pub reference: GenericReference,
    /// What becomes of a reference to each parent, by its source table.
    pub parents: BTreeMap<TableName, GenericParent>,
}

/// Where a generic reference's parent is when the entity loads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GenericParent {
    /// In the target before this entity: each reference checked before its batch is written.
    Loaded(TableName),
    /// The entity's own table, or one that loads after it (a broken cycle): not there to check
    /// against yet; validation counts what points at no row of it.
    Later(TableName),
    /// No entity of the migration: a row pointing into it is rejected.
    NotMigrated,
}

impl GenericParent {
    /// The target table, wherever it loads.
    pub fn target(&self) -> Option<&TableName> {
        match self {
            GenericParent::Loaded(t) | GenericParent::Later(t) => Some(t),
            GenericParent::NotMigrated => None,
        }
    }
}

/// Each reference column with the target tables its values must be in one of: a foreign key's
/// parent, or every parent of a generic reference.
pub fn reference_parents(
    references: &[(usize, TableName)],
    generic: &[GenericCheck],
) -> Vec<(usize, Vec<TableName>)> {
    references
        .iter()
        .map(|(c, p)| (*c, vec![p.clone()]))
        .chain(generic.iter().map(|g| (g.reference.column, g.targets())))
        .collect()
}

impl GenericCheck {
    /// Every target table a value may point into: a generic reference's UUID is derived for one
    /// table only, so it is in that table or in none.
    pub fn targets(&self) -> Vec<TableName> {
        let mut targets: Vec<TableName> =
            self.parents.values().filter_map(GenericParent::target).cloned().collect();
        targets.sort();
        targets.dedup();
        targets
    }
}

/// The makings of [`Prepared::seal`].
struct Seal(sha2::Sha256);

impl Seal {
    fn new(req: &MigrateEntity, table: &runtime::domain::Table) -> Seal {
        use sha2::Digest;
        // What the mapper reads of the table: its columns (less the statistics, which change
        // with every ANALYZE) and its CHECKs; not its keys and indexes, which a load sets
        // aside and a resumed run's plan reads without.
        let columns: Vec<runtime::domain::Column> = table
            .columns
            .iter()
            .map(|c| runtime::domain::Column { stats: None, ..c.clone() })
            .collect();
        let t = &req.target;
        let parts = serde_json::json!([
            env!("CARGO_PKG_VERSION"),
            req.spec,
            table.name,
            columns,
            table.checks,
            t.enums,
            t.domains,
            t.types,
            t.collations,
            req.keys,
            req.parents,
        ]);
        Seal(sha2::Sha256::new_with_prefix(parts.to_string()))
    }

    /// A parent's rows that keep the UUIDs they had, in key order.
    fn kept(&mut self, parent: &TableName, kept: &std::collections::HashMap<String, String>) {
        use sha2::Digest;
        let mut kept: Vec<(&String, &String)> = kept.iter().collect();
        kept.sort();
        self.0.update(serde_json::json!([parent, kept]).to_string());
    }

    fn of(mut self, out_cols: &[(String, String)]) -> u64 {
        use sha2::Digest;
        self.0.update(serde_json::json!(out_cols).to_string());
        let digest = self.0.finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("a SHA-256 digest has 32 bytes"))
    }
}

/// The amount columns: cents turned into amounts, and every column of a two-decimal type.
pub fn money_columns(spec: &MappingSpec, out_cols: &[(String, String)]) -> Vec<usize> {
    (0..out_cols.len())
        .filter(|&i| {
            let (name, ty) = &out_cols[i];
            let cents = spec.columns.iter().any(|m| {
                m.target == *name && m.transforms.contains(&runtime::mapping::Transform::Cents)
            });
            cents || ty == "money" || (ty.starts_with("numeric(") && ty.ends_with(",2)"))
        })
        .collect()
}

/// Pages of a scan's rows in key order after `scan.after`, read by a task of its own a page
/// ahead of the consumer; the channel ends after the last page (or the first error).
pub fn read_ahead(
    rows: Arc<dyn Rows>,
    scan: Scan,
    page_size: usize,
) -> (Pages, AbortOnDropHandle<()>) {
    read_ahead_in(rows, scan, Vec::new(), page_size)
}

/// The pages a reader ahead sends ([`read_ahead`]), and the way back for pages done with.
pub struct Pages {
    pages: tokio::sync::mpsc::Receiver<Result<TextRows, ToolError>>,
    done_with: tokio::sync::mpsc::Sender<TextRows>,
}

impl Pages {
    /// The next page; `None` after the last one.
    pub async fn recv(&mut self) -> Option<Result<TextRows, ToolError>> {
        self.pages.recv().await
    }

    /// Hands a page the consumer is done with back to the reader, which fills its buffers with
    /// a page to come instead of taking fresh memory: each fresh page was faulted in anew,
    /// about half the page faults of a load (bench/RESULTS.md).
    pub fn recycle(&self, page: TextRows) {
        // With the reader gone, or pages enough waiting, the page is simply freed.
        let _ = self.done_with.try_send(page);
    }
}

/// About the most text a page read ahead holds: twice what a batch is planned to hold
/// ([`crate::planning::batch_size`]), so a page whose rows are wider than its planned size
/// allows for (a sample of the table's first rows narrower than the rest) is followed by
/// smaller ones. No page of the reference data comes near it.
const PAGE_BYTES: usize = 8 << 20;

/// The rows of the next page: the `planned` ones, or fewer where the page before (`read` rows
/// in `bytes` of text) says that many would hold more than [`PAGE_BYTES`]; at least one.
fn page_rows(planned: usize, read: usize, bytes: usize) -> usize {
    match (read, bytes) {
        (0, _) | (_, 0) => planned,
        _ => (PAGE_BYTES.saturating_mul(read) / bytes).clamp(1, planned.max(1)),
    }
}

/// Rows a page of a validation, an analysis or a second read of the entity holds: `at_most`,
/// or fewer where the plan puts fewer in a batch, its rows being wide (60 rows of 12 MB held
/// 2 GB as one page of the whole table).
pub(crate) fn page_of(req: &MigrateEntity, at_most: usize) -> usize {
    at_most.min(req.entity.batch_size.max(1))
}

/// [`read_ahead`] in pages of these sizes first, in order (the pages a load read, to read the
/// same rows again in the same pages), then of `then` rows.
pub fn read_ahead_in(
    rows: Arc<dyn Rows>,
    scan: Scan,
    sizes: Vec<usize>,
    then: usize,
) -> (Pages, AbortOnDropHandle<()>) {
    let mut scan = scan;
    let key_idx: Vec<usize> =
        scan.key.iter().filter_map(|k| scan.columns.iter().position(|c| c == k)).collect();
    let (pages_tx, pages) = tokio::sync::mpsc::channel(READ_AHEAD);
    // No more pages are kept for reuse than are read ahead: the memory a load holds is what
    // it was without reuse.
    let (done_with, mut reusable) = tokio::sync::mpsc::channel(READ_AHEAD);
    let reader = AbortOnDropHandle::new(tokio::spawn(async move {
        let mut sizes = sizes.into_iter();
        let mut next = then;
        loop {
            let page_size = sizes.next().unwrap_or(next);
            scan.limit = Some(page_size);
            let into = reusable.try_recv().unwrap_or_default();
            let page = rows.page(&scan, page_size, into).await;
            let after: Option<Vec<String>> = match &page {
                Ok(p) if p.len() == page_size && page_size > 0 => {
                    Some(key_parts(p, page_size - 1, &key_idx))
                }
                _ => None,
            };
            if let Ok(p) = &page {
                next = page_rows(then, p.len(), p.text_len());
            }
            let last = after.is_none();
            if pages_tx.send(page).await.is_err() || last {
                return;
            }
            scan.after = after;
        }
    }));
    (Pages { pages, done_with }, reader)
}

/// Comparisons of pages in the target, up to a number at once, each a task of its own (and so
/// a connection of its own), whose answers are taken in the order the pages were read: the
/// validation and the differential analysis tally pages in key order while the target works on
/// the next ones.
pub(crate) struct InPageOrder<T> {
    at_once: usize,
    running: std::collections::VecDeque<AbortOnDropHandle<Result<T, ToolError>>>,
}

impl<T: Send + 'static> InPageOrder<T> {
    pub(crate) fn new(at_once: usize) -> InPageOrder<T> {
        InPageOrder { at_once: at_once.max(1), running: std::collections::VecDeque::new() }
    }

    /// The oldest page's answer when there is no room for another page, or, after the last
    /// page (`last`), while any is still running; `None` when the next page may start.
    pub(crate) async fn done(&mut self, last: bool) -> Result<Option<T>, ToolError> {
        let full = self.running.len() >= self.at_once;
        if !full && !last {
            return Ok(None);
        }
        match self.running.pop_front() {
            Some(oldest) => oldest
                .await
                .map_err(|e| ToolError::system(format!("a comparison stopped: {e}")))?
                .map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn start(
        &mut self,
        compare: impl std::future::Future<Output = Result<T, ToolError>> + Send + 'static,
    ) {
        self.running.push_back(AbortOnDropHandle::new(tokio::spawn(compare)));
    }
}

/// The mapped columns the baseline covers: all but the key and the legacy key.
pub fn synced_columns(out_cols: &[(String, String)], id_col: usize) -> Vec<usize> {
    (0..out_cols.len()).filter(|&i| i != id_col && out_cols[i].0 != "legacy_id").collect()
}

/// Whether the entity's target table has a `deleted_at` column for soft deletes: one of its
/// own, not one the mapping fills from the source (a source's own `deleted_at`, its
/// application's soft delete, is data: the rows it marks are live rows to keep in step).
pub fn soft_delete(req: &MigrateEntity) -> bool {
    req.target
        .table(&req.spec.target)
        .is_some_and(|t| t.columns.iter().any(|c| c.name == "deleted_at"))
        && !req.spec.columns.iter().any(|m| m.target == "deleted_at")
}

/// The expected target rows of a page of source rows; with `reasons`, why each row the
/// mapping rejects is rejected (by row).
pub(crate) fn expect(
    mapper: &RowMapper,
    out_cols: &[(String, String)],
    id_col: usize,
    legacy_col: usize,
    money: &[usize],
    page: TextRows,
    mut reasons: Option<&mut Vec<(usize, String)>>,
) -> Expected {
    let uuids = out_cols.iter().filter(|(_, ty)| ty == "uuid").count();
    let mut expected = Expected {
        columns: out_cols.to_vec(),
        id_column: id_col,
        legacy_column: legacy_col,
        keys: Vec::with_capacity(page.len()),
        wanted: Vec::with_capacity(page.len()),
        // The source's text, and room for a UUID a uuid column: a page grows no buffer.
        values: TextRows::with_capacity(
            out_cols.len(),
            page.len(),
            page.text_len() + page.len() * uuids * 36,
        ),
        returned: money.to_vec(),
    };
    let mut refs: Vec<Option<&str>> = Vec::with_capacity(page.width());
    let mut memo = ReferenceMemo::default();
    for seq in 0..page.len() {
        refs.clear();
        refs.extend(page.row(seq));
        let key = legacy_key(&page, seq, mapper.key_columns());
        match mapper.map_into(&refs, &mut expected.values, &mut memo) {
            Ok(()) => expected.wanted.push(true),
            Err(rejection) => {
                if let Some(reasons) = reasons.as_deref_mut() {
                    reasons.push((expected.keys.len(), rejection.reason));
                }
                // A rejected row is still looked for (it must be absent), by key and UUID.
                expected.wanted.push(false);
                let id = mapper.id(&refs);
                expected.values.push_row((0..out_cols.len()).map(|i| match i {
                    _ if i == id_col => Some(id.as_str()),
                    _ if i == legacy_col => Some(key.as_str()),
                    _ => None,
                }));
            }
        }
        expected.keys.push(key);
    }
    expected
}

#[cfg(test)]
mod tests;
