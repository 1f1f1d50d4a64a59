//! The migration execution agent: streams each entity from source to target in checkpointed batches. Its requests arrive with issue 5; today it is started and supervised with the team but is asked for nothing.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use runtime::context::RunContext;

/// No requests yet: the enum has no variants, so nothing can be sent that is not handled.
pub enum ExecutionMsg {}

#[derive(Clone)]
pub struct ExecutionAgent;

#[derive(Clone)]
pub struct ExecutionArgs {
    pub ctx: Arc<RunContext>,
}

impl Actor for ExecutionAgent {
    type Msg = ExecutionMsg;
    type State = ExecutionArgs;
    type Arguments = ExecutionArgs;

    async fn pre_start(&self, _: ActorRef<ExecutionMsg>, args: ExecutionArgs) -> Result<ExecutionArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(&self, _: ActorRef<ExecutionMsg>, msg: ExecutionMsg, _: &mut ExecutionArgs) -> Result<(), ActorProcessingErr> {
        match msg {}
    }
}
