//! The schema analysis agent: reads the source and target databases' structure through the
//! [`Catalog`] port and keeps each report for the rest of the run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use runtime::config::DbRole;
use runtime::context::RunContext;
use runtime::domain::{CodeRequest, CodeResult, Scan};
use runtime::domain::{Forecast, SchemaReport, TableName};
use runtime::envelope::{AgentError, Envelope};
use runtime::error::ToolError;
use runtime::ports::{Catalog, CodeRunner, Rows};
use runtime::AgentName;
use serde::{Deserialize, Serialize};

use crate::forecast::forecast;
use runtime::mapping::MappingSet;

const ME: AgentName = AgentName::SchemaAnalysis;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AnalyzeRequest {
    pub side: DbRole,
    /// Count every table's rows instead of relying on the planner's estimates.
    pub exact_counts: bool,
}

/// Read every planned entity's rows through its mapping: how many will migrate, and why the
/// others will not.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForecastRequest {
    pub order: Vec<TableName>,
    pub mappings: MappingSet,
    pub target: SchemaReport,
}

/// Rows a profile samples unless told otherwise.
pub const PROFILE_SAMPLE: usize = 1000;

/// Profile a source table: run code on sample rows in the sandbox, or, without code or without
/// the sandbox, give the built-in statistics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfileRequest {
    pub table: TableName,
    pub columns: Vec<String>,
    pub key: Vec<String>,
    pub sample: usize,
    pub code: Option<CodeRequest>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub table: TableName,
    pub rows_sampled: usize,
    pub code: Option<CodeRequest>,
    /// What the code did in the sandbox.
    pub result: Option<CodeResult>,
    /// Why there is no result, when code was given: the sandbox's error.
    pub fallback: Option<String>,
}

pub enum SchemaMsg {
    Analyze(Envelope<AnalyzeRequest>, RpcReplyPort<Result<SchemaReport, AgentError>>),
    Profile(Envelope<ProfileRequest>, RpcReplyPort<Result<Profile, AgentError>>),
    /// Boxed: the request (two reports and the mappings) is far larger than the other variant.
    Forecast(
        Box<Envelope<ForecastRequest>>,
        RpcReplyPort<Result<Vec<(TableName, Forecast)>, AgentError>>,
    ),
}

#[derive(Clone)]
pub struct SchemaAnalysisAgent;

#[derive(Clone)]
pub struct SchemaAnalysisArgs {
    pub ctx: Arc<RunContext>,
    pub source: Arc<dyn Catalog>,
    pub target: Option<Arc<dyn Catalog>>,
    pub source_rows: Arc<dyn Rows>,
    /// The sandbox, for profiling scripts.
    pub code: Option<Arc<dyn CodeRunner>>,
}

pub struct SchemaAnalysisState {
    args: SchemaAnalysisArgs,
    /// Reports already read in this run, by side: the schema does not change under a run.
    cache: HashMap<AnalyzeRequest, SchemaReport>,
}

impl Actor for SchemaAnalysisAgent {
    type Msg = SchemaMsg;
    type State = SchemaAnalysisState;
    type Arguments = SchemaAnalysisArgs;

    async fn pre_start(
        &self,
        _: ActorRef<SchemaMsg>,
        args: SchemaAnalysisArgs,
    ) -> Result<SchemaAnalysisState, ActorProcessingErr> {
        Ok(SchemaAnalysisState { args, cache: HashMap::new() })
    }

    async fn handle(
        &self,
        _: ActorRef<SchemaMsg>,
        msg: SchemaMsg,
        state: &mut SchemaAnalysisState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SchemaMsg::Forecast(env, reply) => {
                let req = env.body;
                let started = Instant::now();
                let result = forecast(
                    &req.order,
                    &req.mappings,
                    &req.target,
                    state.args.source_rows.as_ref(),
                )
                .await;
                let rows: i64 =
                    result.as_ref().map(|f| f.iter().map(|(_, f)| f.rows).sum()).unwrap_or(0);
                state.args.ctx.tool_call(
                    ME,
                    "rows.scan",
                    serde_json::json!({"entities": req.order.len()}),
                    result
                        .as_ref()
                        .map(|_| format!("read {rows} source rows through their mappings")),
                    started,
                );
                if let Ok(forecasts) = &result {
                    for (t, f) in forecasts {
                        let reasons: Vec<String> = f
                            .reasons
                            .iter()
                            .map(|r| format!("{} rows: {}", r.count, r.reason))
                            .collect();
                        state.args.ctx.decision(
                            ME,
                            format!(
                                "{t}: {} of {} rows fit the target, {} will be rejected",
                                f.migrate, f.rows, f.reject
                            ),
                            if reasons.is_empty() {
                                "every row passed the mapping and the target's rules".to_owned()
                            } else {
                                reasons.join("; ")
                            },
                            f,
                        );
                    }
                }
                let _ = reply.send(result.map_err(|e| {
                    AgentError::of(ME, e.context("could not forecast the migration"))
                }));
            }
            SchemaMsg::Profile(env, reply) => {
                let _ = reply.send(profile(&state.args, env.body).await);
            }
            SchemaMsg::Analyze(env, reply) => {
                let request = env.body;
                let result = match state.cache.get(&request) {
                    Some(report) => Ok(report.clone()),
                    None => analyze(&state.args, request).await,
                };
                if let Ok(report) = &result {
                    state.cache.insert(request, report.clone());
                }
                let _ = reply.send(result);
            }
        }
        Ok(())
    }
}

/// Runs the profiling code on the table's first `sample` rows, given to it on stdin as JSON
/// lines; without code, or when the sandbox cannot run it, only the rows are counted and the
/// caller shows the built-in statistics (saying why).
async fn profile(args: &SchemaAnalysisArgs, req: ProfileRequest) -> Result<Profile, AgentError> {
    let scan = Scan {
        limit: Some(req.sample),
        ..Scan::plain(req.table.clone(), req.columns.clone(), req.key.clone())
    };
    let mut lines = String::new();
    let mut rows_sampled = 0;
    let started = Instant::now();
    let read = args
        .source_rows
        .scan(&scan, &mut |row: &[Option<&str>]| {
            let object: serde_json::Map<String, serde_json::Value> = req
                .columns
                .iter()
                .zip(row)
                .map(|(c, v)| (c.clone(), v.map_or(serde_json::Value::Null, |v| v.into())))
                .collect();
            lines.push_str(&serde_json::Value::Object(object).to_string());
            lines.push('\n');
            rows_sampled += 1;
        })
        .await;
    args.ctx.tool_call(
        ME,
        "rows.scan",
        serde_json::json!({"table": req.table, "limit": req.sample}),
        read.as_ref().map(|n| format!("sampled {n} rows")),
        started,
    );
    read.map_err(|e| AgentError::of(ME, e.context(format!("could not sample {}", req.table))))?;
    let mut profile = Profile {
        table: req.table.clone(),
        rows_sampled,
        code: req.code.clone(),
        result: None,
        fallback: None,
    };
    let Some(mut code) = req.code else { return Ok(profile) };
    let Some(runner) = &args.code else {
        profile.fallback = Some("no sandbox is configured".into());
        return Ok(profile);
    };
    code.stdin = lines;
    match crate::code::run_code(
        &args.ctx,
        runner.as_ref(),
        ME,
        &format!("profile {}", req.table),
        &code,
    )
    .await
    {
        Ok(result) => profile.result = Some(result),
        Err(why) => {
            args.ctx.decision(
                ME,
                format!("profiled {} without the sandbox", req.table),
                format!("the sandbox could not run the code: {why}"),
                (),
            );
            profile.fallback = Some(why.message);
        }
    }
    Ok(profile)
}

async fn analyze(
    args: &SchemaAnalysisArgs,
    request: AnalyzeRequest,
) -> Result<SchemaReport, AgentError> {
    let side = request.side;
    let catalog = match side {
        DbRole::Source => &args.source,
        DbRole::Target => args.target.as_ref().ok_or_else(|| {
            AgentError::of(
                ME,
                ToolError::not_configured(
                    "no target database is configured, so its schema cannot be read",
                ),
            )
        })?,
    };
    let started = Instant::now();
    let result = catalog.introspect(request.exact_counts).await;
    args.ctx.tool_call(
        ME,
        "catalog.introspect",
        serde_json::json!({"side": side, "exact_counts": request.exact_counts}),
        result.as_ref().map(|r| format!("{} tables in {}", r.tables.len(), r.database)),
        started,
    );
    result.map_err(|e| AgentError::of(ME, e.context(format!("could not read the {side} schema"))))
}
