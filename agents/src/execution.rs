//! The migration execution agent: moves one planned entity at a time from source to target.
//!
//! It reads the source in legacy key order, a page of `batch_size` rows after the last
//! committed key (so a resumed or repeated run continues where the checkpoint says), maps each
//! row with the same [`RowMapper`] the forecast used, and hands the batch to the [`Target`]
//! port, which writes it together with its rejects, records and checkpoint in one transaction.
//! Second-pass references (self-references, broken cycles) go in empty and are filled once the
//! entity is loaded. At the end it checks the accounting: every source row read is migrated or
//! rejected, and the target holds exactly the migrated ones.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use runtime::context::RunContext;
use runtime::domain::{PlannedEntity, SchemaReport, TableName};
use runtime::envelope::{AgentError, Envelope};
use runtime::events::RunEvent;
use runtime::mapping::MappingSpec;
use runtime::ports::{row_json, Batch, RejectedRow, Rows, Scan, Target};
use runtime::AgentName;
use serde::{Deserialize, Serialize};

use crate::transform::{Keys, RowMapper};

const ME: AgentName = AgentName::Execution;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MigrateEntity {
    pub entity: PlannedEntity,
    pub spec: MappingSpec,
    /// The target table of every source table this entity references.
    pub parents: Vec<(TableName, TableName)>,
    pub keys: Keys,
    /// The target's report (the table, its enums and domains).
    pub target: SchemaReport,
}

/// What migrating one entity did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EntityResult {
    pub source: Option<TableName>,
    pub target: Option<TableName>,
    pub rows_read: i64,
    pub migrated: i64,
    pub rejected: i64,
    /// Rejections by rule.
    pub rejected_by_rule: BTreeMap<String, i64>,
    pub batches: i64,
    pub retries: u32,
    pub second_pass_filled: i64,
    pub seconds: f64,
    /// Rows of the target made from this source, all runs (the accounting's other side).
    pub target_rows: i64,
}

pub enum ExecutionMsg {
    Migrate(Box<Envelope<MigrateEntity>>, RpcReplyPort<Result<EntityResult, AgentError>>),
}

#[derive(Clone)]
pub struct ExecutionAgent;

#[derive(Clone)]
pub struct ExecutionArgs {
    pub ctx: Arc<RunContext>,
    pub source_rows: Arc<dyn Rows>,
    pub target: Option<Arc<dyn Target>>,
}

impl Actor for ExecutionAgent {
    type Msg = ExecutionMsg;
    type State = ExecutionArgs;
    type Arguments = ExecutionArgs;

    async fn pre_start(&self, _: ActorRef<ExecutionMsg>, args: ExecutionArgs) -> Result<ExecutionArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(&self, _: ActorRef<ExecutionMsg>, msg: ExecutionMsg, state: &mut ExecutionArgs) -> Result<(), ActorProcessingErr> {
        match msg {
            ExecutionMsg::Migrate(env, reply) => {
                // Each entity migrates in a task of its own, so the entities of a wave run side
                // by side; the reply goes out from the task.
                let (ctx, rows, target) = (state.ctx.clone(), state.source_rows.clone(), state.target.clone());
                tokio::spawn(async move {
                    let result = match &target {
                        Some(target) => migrate(&ctx, rows.as_ref(), target.as_ref(), &env.body).await,
                        None => Err("no target database to write to".to_owned()),
                    };
                    let _ = reply.send(result.map_err(|e| AgentError::new(ME, format!("migrating {}: {e}", env.body.entity.table))));
                });
            }
        }
        Ok(())
    }
}

async fn migrate(ctx: &RunContext, rows: &dyn Rows, target: &dyn Target, req: &MigrateEntity) -> Result<EntityResult, String> {
    let started = Instant::now();
    let spec = &req.spec;
    let table = req.target.table(&spec.target).ok_or_else(|| format!("the target has no table {}", spec.target))?;
    let mut mapper = RowMapper::new(spec, table, &req.target, req.keys)?;
    // Parents that were in the target before agentctl keep their UUIDs; children point at them.
    for (parent_source, parent_target) in &req.parents {
        let deriver = runtime::mapping::KeyDeriver::new(req.keys.layout, req.keys.namespace, parent_source);
        let kept: std::collections::HashMap<String, String> = target
            .kept_rows(parent_target)
            .await
            .map_err(|e| e.0)?
            .into_iter()
            .filter(|(legacy, id)| deriver.derive(&legacy.split('|').collect::<Vec<_>>()).to_string() != *id)
            .collect();
        if !kept.is_empty() {
            ctx.decision(
                ME,
                format!("{}: {} rows of {parent_target} keep the UUIDs they had", spec.target.name, kept.len()),
                "they were in the target before agentctl, matched by legacy_id; references to them use their UUIDs",
                serde_json::json!({"parent": parent_target, "rows": kept.len()}),
            );
        }
        mapper.keep_parent_ids(parent_source.clone(), kept);
    }
    let out_cols: Vec<(String, String)> = mapper
        .target_columns()
        .iter()
        .map(|c| (c.to_string(), table.column(c).map(|col| col.data_type.clone()).unwrap_or_else(|| "text".into())))
        .collect();
    let id_col = out_cols
        .iter()
        .position(|(c, _)| table.primary_key.len() == 1 && *c == table.primary_key[0])
        .ok_or("the target table has no single-column key")?;
    // References to this same table go in empty and are filled in a second pass; references
    // to other tables are checked against the target before each insert.
    let mut deferred_cols = Vec::new();
    let mut references = Vec::new();
    for r in mapper.references() {
        let parent_target = if r.parent == spec.source {
            deferred_cols.push(r.column);
            continue;
        } else {
            req.target.tables.iter().find(|t| t.name == r.parent).map(|t| t.name.clone())
        };
        let fk_target = table.foreign_keys.iter().find(|fk| fk.columns == [r.target_column.clone()]).map(|fk| fk.references.clone());
        if let Some(p) = fk_target.or(parent_target) {
            references.push((r.column, p));
        }
    }
    let scan_cols = spec.source_columns();
    let before = target.checkpoint(ctx.run_id, &spec.source).await.map_err(|e| e.0)?;
    let resumed = before.is_some();
    let mut checkpoint = before.unwrap_or_default();
    target
        .set_state(ctx.run_id, &spec.source, &spec.target, "running", None, resumed.then_some("resumed from its checkpoint"))
        .await
        .map_err(|e| e.0)?;
    let mut result = EntityResult { source: Some(spec.source.clone()), target: Some(spec.target.clone()), ..EntityResult::default() };
    let batch_size = req.entity.batch_size.max(1);
    loop {
        let scan = Scan {
            table: spec.source.clone(),
            columns: scan_cols.clone(),
            joins: spec.joins.clone(),
            key: spec.key.clone(),
            after: (!checkpoint.last_key.is_empty()).then(|| checkpoint.last_key.clone()),
            limit: Some(batch_size),
        };
        let page = rows.page(&scan, batch_size).await.map_err(|e| e.0)?;
        let Some(last) = page.last() else { break };
        let page_len = page.len();
        let last_key: Vec<String> =
            mapper.key(&last.iter().map(|v| v.as_deref()).collect::<Vec<_>>()).iter().map(|s| s.to_string()).collect();
        let mut batch = Batch {
            run_id: ctx.run_id,
            source: spec.source.clone(),
            target: spec.target.clone(),
            columns: out_cols.clone(),
            rows: Vec::with_capacity(page_len),
            keys: Vec::with_capacity(page_len),
            ids: Vec::with_capacity(page_len),
            source_rows: Vec::with_capacity(page_len),
            source_columns: scan_cols.clone(),
            rejected: Vec::new(),
            deferred: Vec::new(),
            references: references.clone(),
            before: checkpoint.clone(),
            last_key,
            rows_read: page_len as i64,
        };
        for row in page {
            let refs: Vec<Option<&str>> = row.iter().map(|v| v.as_deref()).collect();
            let key = mapper.key(&refs).join("|");
            let mapped = mapper.map(&refs);
            drop(refs);
            match mapped {
                Ok(mut values) => {
                    let id = values[id_col].clone().unwrap_or_default();
                    for &c in &deferred_cols {
                        if let Some(parent) = values[c].take() {
                            batch.deferred.push((id.clone(), out_cols[c].0.clone(), parent));
                        }
                    }
                    batch.rows.push(values);
                    batch.keys.push(key);
                    batch.ids.push(id);
                    batch.source_rows.push(row);
                }
                Err(r) => {
                    *result.rejected_by_rule.entry(r.rule.split(':').next().unwrap_or("").to_owned()).or_default() += 1;
                    batch.rejected.push(RejectedRow {
                        legacy_key: key,
                        column: r.column,
                        rule: r.rule,
                        reason: r.reason,
                        row: row_json(&scan_cols, &row),
                    });
                }
            }
        }
        let written = target.write(&batch).await.map_err(|e| e.0)?;
        for r in &written.refused {
            *result.rejected_by_rule.entry(r.rule.clone()).or_default() += 1;
        }
        result.retries += written.retries;
        checkpoint = written.checkpoint;
        ctx.audit.record(runtime::audit::AuditRecord::new(
            ME,
            runtime::audit::EventKind::Batch,
            format!(
                "{}: batch {} wrote {} rows, {} already present, {} rejected",
                spec.target.name,
                checkpoint.batches,
                written.inserted,
                written.present,
                batch.rejected.len() + written.refused.len()
            ),
            serde_json::json!({"entity": spec.source, "batch": checkpoint.batches, "last_key": checkpoint.last_key,
                "inserted": written.inserted, "present": written.present, "rejected": batch.rejected.len() + written.refused.len(), "retries": written.retries}),
        ));
        ctx.events.publish(RunEvent::Progress {
            run_id: ctx.run_id,
            entity: spec.target.name.clone(),
            rows_done: checkpoint.rows_read as u64,
            rows_total: req.entity.forecast.as_ref().map(|f| f.rows as u64),
        });
        if page_len < batch_size {
            break;
        }
    }
    for &c in &deferred_cols {
        let (filled, orphaned) = target.fill_deferred(ctx.run_id, &spec.source, &spec.target, &out_cols[c].0).await.map_err(|e| e.0)?;
        result.second_pass_filled += filled;
        checkpoint.migrated -= orphaned.len() as i64;
        checkpoint.rejected += orphaned.len() as i64;
    }
    result.rows_read = checkpoint.rows_read;
    result.migrated = checkpoint.migrated;
    result.rejected = checkpoint.rejected;
    result.batches = checkpoint.batches;
    result.seconds = started.elapsed().as_secs_f64();
    result.target_rows = target.mapped_rows(&spec.source).await.map_err(|e| e.0)?;
    let balanced = result.rows_read == result.migrated + result.rejected && result.target_rows >= result.migrated;
    let detail = format!(
        "{} read = {} migrated + {} rejected; {} rows of {} made from {} in the target",
        result.rows_read, result.migrated, result.rejected, result.target_rows, spec.target, spec.source
    );
    target
        .set_state(ctx.run_id, &spec.source, &spec.target, if balanced { "done" } else { "failed" }, Some(result.rows_read), Some(&detail))
        .await
        .map_err(|e| e.0)?;
    ctx.decision(
        ME,
        format!("{}: {detail}", spec.target.name),
        "every source row is accounted for: migrated, or rejected with its reason",
        &result,
    );
    if !balanced {
        return Err(format!("the accounting does not balance: {detail}"));
    }
    Ok(result)
}
