//! The differential sync's store, over the statements of [`crate::diff`].

use async_trait::async_trait;
use runtime::domain::TableName;
use runtime::domain::{
    DiffApplied, DiffBatch, Diffed, Differential, EntityDiff, Expected, SyncMark,
};
use runtime::ports::{DiffStore, ToolError};
use runtime::RunId;

use crate::pg::while_doing;

use super::PgTarget;

#[async_trait]
impl DiffStore for PgTarget {
    async fn record_baseline(
        &self,
        target: &TableName,
        legacy_type: &str,
        columns: &[(String, String)],
    ) -> Result<i64, ToolError> {
        crate::diff::record_baseline(&self.pool, target, legacy_type, columns).await
    }
    async fn hashes_rows(
        &self,
        target: &TableName,
        columns: &[(String, String)],
    ) -> Result<bool, ToolError> {
        let what = format!("reading how {target}'s columns hash");
        let mut c = self.pool.acquire().await.map_err(while_doing(&what))?;
        let base = crate::binary::base_columns(&mut c, target).await.map_err(while_doing(&what))?;
        Ok(crate::row_hash::column_hashes(&mut c, &base, columns)
            .await
            .map_err(while_doing(&what))?
            .is_some())
    }
    async fn differ(
        &self,
        target: &TableName,
        page: &Expected,
        hashed: &[usize],
        soft_delete: bool,
    ) -> Result<Vec<Diffed>, ToolError> {
        crate::diff::differ(&self.pool, target, page, hashed, soft_delete).await
    }
    async fn live_keys(
        &self,
        target: &TableName,
        ours: Option<(uuid::Uuid, uuid::Uuid)>,
        soft_delete: bool,
    ) -> Result<Vec<(String, uuid::Uuid)>, ToolError> {
        crate::diff::live_keys(&self.pool, target, ours, soft_delete).await
    }
    async fn live_keys_between(
        &self,
        target: &TableName,
        after: Option<&str>,
        upto: Option<&str>,
        present: &[String],
        soft_delete: bool,
    ) -> Result<Vec<(String, uuid::Uuid)>, ToolError> {
        crate::diff::live_keys_between(&self.pool, target, after, upto, present, soft_delete).await
    }
    async fn save_analysis(
        &self,
        analysis: &EntityDiff,
        rows: &[Differential],
    ) -> Result<(), ToolError> {
        crate::diff::save_analysis(&self.pool, analysis, rows).await
    }
    async fn pending_analysis(
        &self,
        source: &TableName,
        target: &TableName,
    ) -> Result<Option<(EntityDiff, Vec<Differential>)>, ToolError> {
        crate::diff::pending_analysis(&self.pool, source, target).await
    }
    async fn apply_diff(&self, batch: &DiffBatch) -> Result<DiffApplied, ToolError> {
        crate::diff::apply_diff(&self.pool, batch, self.max_retries).await
    }
    async fn sync_mark(&self, source: &TableName) -> Result<SyncMark, ToolError> {
        crate::diff::sync_mark(&self.pool, source).await
    }
    async fn close_analysis(
        &self,
        analysis: RunId,
        source: &TableName,
        run: RunId,
    ) -> Result<(), ToolError> {
        crate::diff::close_analysis(&self.pool, analysis, source, run).await
    }
    async fn reopen_refused(
        &self,
        analysis: RunId,
        source: &TableName,
        run: RunId,
    ) -> Result<u64, ToolError> {
        crate::diff::reopen_refused(&self.pool, analysis, source, run).await
    }
}
