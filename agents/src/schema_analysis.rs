//! The schema analysis agent: reads the source and target databases' structure through the
//! [`Catalog`] port and keeps each report for the rest of the run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use runtime::config::DbRole;
use runtime::context::RunContext;
use runtime::domain::SchemaReport;
use runtime::envelope::{AgentError, Envelope};
use runtime::ports::Catalog;
use runtime::AgentName;
use serde::{Deserialize, Serialize};

const ME: AgentName = AgentName::SchemaAnalysis;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalyzeRequest {
    pub side: DbRole,
}

pub enum SchemaMsg {
    Analyze(Envelope<AnalyzeRequest>, RpcReplyPort<Result<SchemaReport, AgentError>>),
}

#[derive(Clone)]
pub struct SchemaAnalysisAgent;

#[derive(Clone)]
pub struct SchemaAnalysisArgs {
    pub ctx: Arc<RunContext>,
    pub source: Arc<dyn Catalog>,
    pub target: Option<Arc<dyn Catalog>>,
}

pub struct SchemaAnalysisState {
    args: SchemaAnalysisArgs,
    /// Reports already read in this run, by side: the schema does not change under a run.
    cache: HashMap<DbRole, SchemaReport>,
}

impl Actor for SchemaAnalysisAgent {
    type Msg = SchemaMsg;
    type State = SchemaAnalysisState;
    type Arguments = SchemaAnalysisArgs;

    async fn pre_start(&self, _: ActorRef<SchemaMsg>, args: SchemaAnalysisArgs) -> Result<SchemaAnalysisState, ActorProcessingErr> {
        Ok(SchemaAnalysisState { args, cache: HashMap::new() })
    }

    async fn handle(&self, _: ActorRef<SchemaMsg>, msg: SchemaMsg, state: &mut SchemaAnalysisState) -> Result<(), ActorProcessingErr> {
        match msg {
            SchemaMsg::Analyze(env, reply) => {
                let side = env.body.side;
                let result = match state.cache.get(&side) {
                    Some(report) => Ok(report.clone()),
                    None => analyze(&state.args, side).await,
                };
                if let Ok(report) = &result {
                    state.cache.insert(side, report.clone());
                }
                let _ = reply.send(result);
            }
        }
        Ok(())
    }
}

async fn analyze(args: &SchemaAnalysisArgs, side: DbRole) -> Result<SchemaReport, AgentError> {
    let catalog = match side {
        DbRole::Source => &args.source,
        DbRole::Target => {
            args.target.as_ref().ok_or_else(|| AgentError::new(ME, "no target database is configured, so its schema cannot be read"))?
        }
    };
    let started = Instant::now();
    let result = catalog.introspect().await;
    args.ctx.tool_call(
        ME,
        "catalog.introspect",
        serde_json::json!({"side": side}),
        result.as_ref().map(|r| format!("{} tables in {}", r.tables.len(), r.database)).map_err(|e| e.to_string()),
        started,
    );
    result.map_err(|e| AgentError::new(ME, format!("could not read the {side} schema: {e}")))
}
