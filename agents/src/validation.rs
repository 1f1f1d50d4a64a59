//! The validation agent: proves a migration by accounting, integrity and content checks. Its requests arrive with issue 5; today it is started and supervised with the team but is asked for nothing.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use runtime::context::RunContext;

/// No requests yet: the enum has no variants, so nothing can be sent that is not handled.
pub enum ValidationMsg {}

#[derive(Clone)]
pub struct ValidationAgent;

#[derive(Clone)]
pub struct ValidationArgs {
    pub ctx: Arc<RunContext>,
}

impl Actor for ValidationAgent {
    type Msg = ValidationMsg;
    type State = ValidationArgs;
    type Arguments = ValidationArgs;

    async fn pre_start(&self, _: ActorRef<ValidationMsg>, args: ValidationArgs) -> Result<ValidationArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(&self, _: ActorRef<ValidationMsg>, msg: ValidationMsg, _: &mut ValidationArgs) -> Result<(), ActorProcessingErr> {
        match msg {}
    }
}
