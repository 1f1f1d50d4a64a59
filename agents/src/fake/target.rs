//! A target database in memory: the four roles of the target port over tables of rows held
//! in a map, for the unit tests of the load and its proof. It keeps no constraints (so it
//! proves nothing a constraint would: the load checks its rows itself) and no baseline (the
//! differential sync's store answers that it is not configured, and a validation finds no
//! load record to prove a page by, so it compares every row).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use runtime::domain::{
    Batch, Checkpoint, Compared, DiffApplied, DiffBatch, Diffed, Differential, EntityDiff,
    EntityValidation, Expected, KeysAside, Links, PageRecord, ProvenPage, RecordedPage,
    ReferenceCheck, RejectedRow, RollbackEntity, RolledBack, SyncMark, TableName, Written,
};
use runtime::error::ToolError;
use runtime::ports::{ConstraintStore, DiffStore, Loader, Verifier};
use runtime::RunId;

/// A row in memory: its UUID, legacy key and values by column.
#[derive(Clone, Debug)]
pub struct MemRow {
    pub id: String,
    pub legacy: String,
    pub values: BTreeMap<String, Option<String>>,
}

#[derive(Default)]
struct State {
    tables: HashMap<TableName, Vec<MemRow>>,
    checkpoints: HashMap<(RunId, TableName), Checkpoint>,
    /// By source table: each rejected row's legacy key and rule.
    rejected: HashMap<TableName, Vec<(String, String)>>,
    /// (target table, column, child id, parent id) filled in a second pass.
    deferred: Vec<(TableName, String, String, String)>,
    states: HashMap<TableName, String>,
    validations: Vec<EntityValidation>,
}

/// A target in memory.
#[derive(Default)]
pub struct MemTarget {
    state: Mutex<State>,
}

impl MemTarget {
    /// The rows of a table, in the order they were written.
    pub fn rows(&self, table: &TableName) -> Vec<MemRow> {
        self.state.lock().unwrap().tables.get(table).cloned().unwrap_or_default()
    }

    /// The rejected rows of a source table: (legacy key, rule).
    pub fn rejected(&self, source: &TableName) -> Vec<(String, String)> {
        self.state.lock().unwrap().rejected.get(source).cloned().unwrap_or_default()
    }

    /// The state the load last recorded for a source table.
    pub fn entity_state(&self, source: &TableName) -> Option<String> {
        self.state.lock().unwrap().states.get(source).cloned()
    }

    /// [`State::drop_dangling`], its rows taken off the entity's checkpoint and recorded.
    fn drop_dangling_locked(
        state: &mut State,
        run: RunId,
        (source, target): (&TableName, &TableName),
        column: &str,
        parents: &[TableName],
    ) -> Vec<RejectedRow> {
        let removed = state.drop_dangling(target, column, parents);
        if let Some(c) = state.checkpoints.get_mut(&(run, source.clone())) {
            c.migrated -= removed.len() as i64;
            c.rejected += removed.len() as i64;
        }
        state.reject(source, &removed);
        removed
    }
}

impl State {
    fn has_id(&self, table: &TableName, id: &str) -> bool {
        self.tables.get(table).is_some_and(|rows| rows.iter().any(|r| r.id == id))
    }

    fn reject(&mut self, source: &TableName, rows: &[RejectedRow]) {
        let list = self.rejected.entry(source.clone()).or_default();
        for r in rows {
            if !list.iter().any(|(k, _)| *k == r.legacy_key) {
                list.push((r.legacy_key.clone(), r.rule.clone()));
            }
        }
    }

    /// Removes the rows of `target` whose `column` points at no row of any of `parents`, again
    /// until none is left; returns them as rejects.
    fn drop_dangling(
        &mut self,
        target: &TableName,
        column: &str,
        parents: &[TableName],
    ) -> Vec<RejectedRow> {
        let mut removed = Vec::new();
        loop {
            let rows = self.tables.get(target).cloned().unwrap_or_default();
            let (bad, good): (Vec<MemRow>, Vec<MemRow>) = rows.into_iter().partition(|r| {
                r.values
                    .get(column)
                    .cloned()
                    .flatten()
                    .is_some_and(|p| !parents.iter().any(|t| self.has_id(t, &p)))
            });
            if bad.is_empty() {
                return removed;
            }
            self.tables.insert(target.clone(), good);
            removed.extend(bad.into_iter().map(|r| RejectedRow {
                legacy_key: r.legacy.clone(),
                column: Some(column.to_owned()),
                rule: format!("reference:{column}"),
                reason: format!(
                    "{}.{column}: the row it points at is not in the target",
                    target.name
                ),
                row: serde_json::Value::Null,
            }));
        }
    }

    /// Writes one row of a batch, unless its legacy key is there already: `None` when written,
    /// else whether the row there has a UUID of its own (kept from before agentctl).
    fn insert(&mut self, b: &Batch, seq: usize, row: &[Option<&str>]) -> Option<bool> {
        let legacy = b.legacy_key(seq);
        let table = self.tables.entry(b.target.clone()).or_default();
        let id = row[b.id_column].unwrap_or_default().to_owned();
        if let Some(there) = table.iter().find(|r| r.legacy == legacy) {
            return Some(there.id != id);
        }
        let values = b.columns.iter().zip(row).map(|((c, _), v)| (c.clone(), v.map(str::to_owned)));
        table.push(MemRow { id, legacy, values: values.collect() });
        None
    }
}

#[async_trait]
impl Loader for MemTarget {
    async fn checkpoint(
        &self,
        run: RunId,
        source: &TableName,
    ) -> Result<Option<Checkpoint>, ToolError> {
        Ok(self.state.lock().unwrap().checkpoints.get(&(run, source.clone())).cloned())
    }

    async fn write(&self, b: &Batch) -> Result<Written, ToolError> {
        let mut state = self.state.lock().unwrap();
        let stored = state.checkpoints.get(&(b.run_id, b.source.clone())).cloned();
        if stored.unwrap_or_default() != b.before {
            return Err(ToolError::system("the checkpoint moved under the batch"));
        }
        let mut written = Written::default();
        for seq in 0..b.rows.len() {
            let row: Vec<Option<&str>> = b.rows.row(seq).collect();
            let orphan = b.references.iter().find(|r| {
                r.rows.as_ref().is_none_or(|rows| rows.contains(&seq))
                    && row[r.column].is_some_and(|id| !state.has_id(&r.parent, id))
            });
            if let Some(ReferenceCheck { column: col, parent, .. }) = orphan {
                written.refused.push(RejectedRow {
                    legacy_key: b.legacy_key(seq),
                    column: None,
                    rule: "reference".into(),
                    reason: format!(
                        "{}.{}: the {} row it points at is not in the target",
                        b.target.name, b.columns[*col].0, parent.name
                    ),
                    row: b.source_json(seq),
                });
            } else {
                match state.insert(b, seq, &row) {
                    None => written.inserted += 1,
                    Some(kept) => {
                        written.present += 1;
                        written.kept += i64::from(kept);
                    }
                }
            }
        }
        for (child, column, parent) in &b.deferred {
            state.deferred.push((b.target.clone(), column.clone(), child.clone(), parent.clone()));
        }
        let rejects: Vec<RejectedRow> =
            b.rejected.iter().chain(&written.refused).cloned().collect();
        state.reject(&b.source, &rejects);
        written.checkpoint = Checkpoint {
            last_key: b.last_key.clone(),
            rows_read: b.before.rows_read + b.rows_read,
            migrated: b.before.migrated + written.inserted + written.present,
            kept: b.before.kept + written.kept,
            rejected: b.before.rejected + rejects.len() as i64,
            batches: b.before.batches + 1,
        };
        state.checkpoints.insert((b.run_id, b.source.clone()), written.checkpoint.clone());
        Ok(written)
    }

    async fn fill_deferred(
        &self,
        run: RunId,
        source: &TableName,
        target: &TableName,
        column: &str,
    ) -> Result<(i64, Vec<RejectedRow>), ToolError> {
        let mut state = self.state.lock().unwrap();
        let pending: Vec<(String, String)> = state
            .deferred
            .iter()
            .filter(|(t, c, _, _)| t == target && c == column)
            .map(|(_, _, child, parent)| (child.clone(), parent.clone()))
            .collect();
        let mut filled = 0;
        for (child, parent) in pending {
            if state.has_id(target, &parent) {
                let rows = state.tables.get_mut(target).expect("the table of its rows");
                if let Some(r) = rows.iter_mut().find(|r| r.id == child) {
                    r.values.insert(column.to_owned(), Some(parent));
                    filled += 1;
                }
            }
        }
        let own = std::slice::from_ref(target);
        let rejected =
            MemTarget::drop_dangling_locked(&mut state, run, (source, target), column, own);
        Ok((filled, rejected))
    }

    async fn drop_dangling(
        &self,
        run: RunId,
        tables: (&TableName, &TableName),
        column: &str,
        parents: &[TableName],
    ) -> Result<Vec<RejectedRow>, ToolError> {
        let mut state = self.state.lock().unwrap();
        Ok(MemTarget::drop_dangling_locked(&mut state, run, tables, column, parents))
    }

    async fn record_source_rows(
        &self,
        _: RunId,
        _: &TableName,
        _: &[(String, serde_json::Value)],
    ) -> Result<(), ToolError> {
        // A rejected row is kept here as its key and rule only: there is no source row to set.
        Ok(())
    }

    async fn kept_rows(
        &self,
        target: &TableName,
        ours: Option<(uuid::Uuid, uuid::Uuid)>,
    ) -> Result<Vec<(String, String)>, ToolError> {
        let outside = |id: &str| {
            let id = uuid::Uuid::parse_str(id).ok();
            ours.is_none_or(|(first, last)| id.is_none_or(|id| id < first || id > last))
        };
        Ok(self
            .rows(target)
            .into_iter()
            .filter(|r| outside(&r.id))
            .map(|r| (r.legacy, r.id))
            .collect())
    }

    async fn table_rows(&self, target: &TableName, _live: bool) -> Result<i64, ToolError> {
        Ok(self.rows(target).len() as i64)
    }

    /// Memory grants everything: no privilege is missing.
    async fn preflight(&self, _: &[TableName], _: bool) -> Result<Vec<String>, ToolError> {
        Ok(Vec::new())
    }

    /// Memory keeps no sequences.
    async fn restart_sequences(&self, _: &TableName) -> Result<Vec<(String, i64)>, ToolError> {
        Ok(Vec::new())
    }

    async fn set_state(
        &self,
        _: RunId,
        source: &TableName,
        _: &TableName,
        state: &str,
        _: Option<i64>,
        _: Option<&str>,
    ) -> Result<(), ToolError> {
        self.state.lock().unwrap().states.insert(source.clone(), state.to_owned());
        Ok(())
    }
}

/// Memory keeps no constraints: there is nothing to set aside or put back, and putting back
/// proves nothing, so the load checks its self-references itself.
#[async_trait]
impl ConstraintStore for MemTarget {
    async fn suspend_constraints(&self, _: RunId, _: &TableName) -> Result<Vec<String>, ToolError> {
        Ok(Vec::new())
    }
    async fn restore_constraints(&self, _: &TableName) -> Result<Vec<String>, ToolError> {
        Ok(Vec::new())
    }
    async fn restore_constraints_unless_refused(
        &self,
        _: &TableName,
    ) -> Result<(Vec<String>, bool), ToolError> {
        Ok((Vec::new(), false))
    }
    async fn restore_constraints_but_refused(
        &self,
        _: &TableName,
    ) -> Result<Vec<String>, ToolError> {
        Ok(Vec::new())
    }
    async fn suspend_keys(&self, _: RunId, _: &TableName) -> Result<KeysAside, ToolError> {
        Ok(KeysAside::default())
    }
    async fn restore_keys(&self, _: &TableName) -> Result<(), ToolError> {
        Ok(())
    }
    async fn rollback(
        &self,
        _: RunId,
        entities: &[RollbackEntity],
    ) -> Result<Vec<RolledBack>, ToolError> {
        let mut state = self.state.lock().unwrap();
        let mut done = Vec::new();
        for e in entities {
            let rows = state.tables.remove(&e.target).unwrap_or_default();
            let (ours, kept): (Vec<MemRow>, Vec<MemRow>) = rows
                .into_iter()
                .partition(|r| e.deriver.derive_stored(&r.legacy).to_string() == r.id);
            done.push(RolledBack {
                source: e.source.clone(),
                target: e.target.clone(),
                deleted: ours.len() as i64,
                kept: kept.len() as i64,
            });
            state.tables.insert(e.target.clone(), kept);
        }
        Ok(done)
    }
}

#[async_trait]
impl Verifier for MemTarget {
    /// Values compared as the text the rows were written with (the database compares typed).
    async fn compare(
        &self,
        target: &TableName,
        page: &Expected,
    ) -> Result<Vec<Compared>, ToolError> {
        let rows = self.rows(target);
        let compared = |r: usize, row: &MemRow| {
            let value = |i: usize| row.values.get(&page.columns[i].0).cloned().flatten();
            let ours = page.values.get(r, page.id_column) == Some(row.id.as_str());
            let differs = (0..page.columns.len())
                .filter(|&i| i != page.id_column && i != page.legacy_column)
                .find(|&i| ours && page.wanted[r] && value(i).as_deref() != page.values.get(r, i));
            let returned = page.returned.iter().map(|&i| value(i)).collect();
            Compared { present: true, ours, differs, returned }
        };
        Ok(page
            .keys
            .iter()
            .enumerate()
            .map(|(r, key)| match rows.iter().find(|row| row.legacy == *key) {
                None => Compared::default(),
                Some(row) => compared(r, row),
            })
            .collect())
    }

    async fn page_records(&self, _: &TableName) -> Result<Vec<PageRecord>, ToolError> {
        Ok(Vec::new())
    }

    async fn prove_by_record(
        &self,
        _: &TableName,
        _: &RecordedPage,
    ) -> Result<Option<ProvenPage>, ToolError> {
        Ok(None)
    }

    async fn value_of(
        &self,
        target: &TableName,
        column: &str,
        _: &str,
        key: &str,
    ) -> Result<Option<String>, ToolError> {
        let row = self.rows(target).into_iter().find(|r| r.legacy == key);
        Ok(row.and_then(|r| r.values.get(column).cloned().flatten()))
    }

    async fn rejected_keys(&self, source: &TableName) -> Result<Vec<(String, bool)>, ToolError> {
        let rejected = self.rejected(source).into_iter();
        Ok(rejected.map(|(k, rule)| (k, rule.starts_with("reference"))).collect())
    }

    /// This target's syncs hold no row (its `apply_diff` settles every one).
    async fn held_reasons(
        &self,
        _source: &TableName,
        _keys: &[String],
    ) -> Result<Vec<(String, String)>, ToolError> {
        Ok(Vec::new())
    }

    async fn existing_ids(
        &self,
        table: &TableName,
        ids: &[String],
    ) -> Result<Vec<String>, ToolError> {
        let rows = self.rows(table);
        Ok(ids.iter().filter(|id| rows.iter().any(|r| r.id == **id)).cloned().collect())
    }

    async fn all_ids(
        &self,
        table: &TableName,
        at_most: usize,
    ) -> Result<Option<Vec<uuid::Uuid>>, ToolError> {
        let rows = self.rows(table);
        let ids = || rows.iter().filter_map(|r| uuid::Uuid::try_parse(&r.id).ok()).collect();
        Ok((rows.len() <= at_most).then(ids))
    }

    async fn orphans(
        &self,
        child: &TableName,
        column: &str,
        parents: &[TableName],
    ) -> Result<Option<(i64, Vec<String>)>, ToolError> {
        let state = self.state.lock().unwrap();
        let orphans: Vec<String> = state
            .tables
            .get(child)
            .into_iter()
            .flatten()
            .filter(|r| {
                r.values
                    .get(column)
                    .cloned()
                    .flatten()
                    .is_some_and(|id| !parents.iter().any(|parent| state.has_id(parent, &id)))
            })
            .map(|r| r.legacy.clone())
            .collect();
        Ok(Some((orphans.len() as i64, orphans.into_iter().take(5).collect())))
    }

    async fn links(
        &self,
        child: &TableName,
        links: &mut [Links],
        _live: bool,
        except: &[String],
    ) -> Result<i64, ToolError> {
        let children = self.rows(child);
        for link in links {
            let parents = self.rows(&link.parent);
            let points = |r: &MemRow, p: &MemRow| {
                link.columns.iter().zip(&link.referenced).all(|(c, rc)| {
                    let value = r.values.get(c).cloned().flatten();
                    let at = if rc == "id" {
                        Some(p.id.clone())
                    } else {
                        p.values.get(rc).cloned().flatten()
                    };
                    value.is_some() && value == at
                })
            };
            let linked = children
                .iter()
                .filter(|r| !except.contains(&r.legacy) && parents.iter().any(|p| points(r, p)));
            link.target = linked.count() as i64;
        }
        Ok(children.len() as i64)
    }

    async fn save_validation(&self, _: RunId, report: &EntityValidation) -> Result<(), ToolError> {
        self.state.lock().unwrap().validations.push(report.clone());
        Ok(())
    }
}

/// Memory keeps no sync baseline: the load records none (and says so by `hashes_rows`), and
/// the differential sync's store is not configured.
#[async_trait]
impl DiffStore for MemTarget {
    async fn record_baseline(
        &self,
        target: &TableName,
        _: &str,
        _: &[(String, String)],
    ) -> Result<i64, ToolError> {
        Ok(self.rows(target).len() as i64)
    }
    async fn hashes_rows(&self, _: &TableName, _: &[(String, String)]) -> Result<bool, ToolError> {
        Ok(false)
    }
    async fn differ(
        &self,
        _: &TableName,
        _: &Expected,
        _: &[usize],
        _: bool,
    ) -> Result<Vec<Diffed>, ToolError> {
        Err(not_kept())
    }
    async fn live_keys(
        &self,
        _: &TableName,
        _: Option<(uuid::Uuid, uuid::Uuid)>,
        _: bool,
    ) -> Result<Vec<(String, uuid::Uuid)>, ToolError> {
        Err(not_kept())
    }
    async fn live_keys_between(
        &self,
        _: &TableName,
        _: Option<&str>,
        _: Option<&str>,
        _: &[String],
        _: bool,
    ) -> Result<Vec<(String, uuid::Uuid)>, ToolError> {
        Err(not_kept())
    }
    async fn save_analysis(&self, _: &EntityDiff, _: &[Differential]) -> Result<(), ToolError> {
        Err(not_kept())
    }
    async fn pending_analysis(
        &self,
        _: &TableName,
        _: &TableName,
    ) -> Result<Option<(EntityDiff, Vec<Differential>)>, ToolError> {
        Err(not_kept())
    }
    async fn apply_diff(&self, _: &DiffBatch) -> Result<DiffApplied, ToolError> {
        Err(not_kept())
    }
    async fn sync_mark(&self, _: &TableName) -> Result<SyncMark, ToolError> {
        Err(not_kept())
    }
    async fn close_analysis(&self, _: RunId, _: &TableName, _: RunId) -> Result<(), ToolError> {
        Err(not_kept())
    }
    async fn reopen_refused(&self, _: RunId, _: &TableName, _: RunId) -> Result<u64, ToolError> {
        Err(not_kept())
    }
}

fn not_kept() -> ToolError {
    ToolError::not_configured("the in-memory target keeps no sync baseline")
}
