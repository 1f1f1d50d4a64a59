//! The data mapping agent: turns each planned entity into a column-by-column mapping with its transforms. Its requests arrive with issue 4; today it is started and supervised with the team but is asked for nothing.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use runtime::context::RunContext;

/// No requests yet: the enum has no variants, so nothing can be sent that is not handled.
pub enum DataMappingMsg {}

#[derive(Clone)]
pub struct DataMappingAgent;

#[derive(Clone)]
pub struct DataMappingArgs {
    pub ctx: Arc<RunContext>,
}

impl Actor for DataMappingAgent {
    type Msg = DataMappingMsg;
    type State = DataMappingArgs;
    type Arguments = DataMappingArgs;

    async fn pre_start(&self, _: ActorRef<DataMappingMsg>, args: DataMappingArgs) -> Result<DataMappingArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(&self, _: ActorRef<DataMappingMsg>, msg: DataMappingMsg, _: &mut DataMappingArgs) -> Result<(), ActorProcessingErr> {
        match msg {}
    }
}
