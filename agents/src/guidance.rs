//! The user guidance agent: explains, in words an office manager understands, what is about to
//! happen and what happened. This is its offline voice (templates over the typed plan); an LLM
//! may make it more fluent later, never more or less accurate.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use runtime::context::RunContext;
use runtime::domain::{Inclusion, MigrationPlan};
use runtime::envelope::{AgentError, Envelope};
use runtime::AgentName;

pub enum GuidanceMsg {
    ExplainPlan(Envelope<MigrationPlan>, RpcReplyPort<Result<String, AgentError>>),
}

#[derive(Clone)]
pub struct GuidanceAgent;

#[derive(Clone)]
pub struct GuidanceArgs {
    pub ctx: Arc<RunContext>,
}

impl Actor for GuidanceAgent {
    type Msg = GuidanceMsg;
    type State = GuidanceArgs;
    type Arguments = GuidanceArgs;

    async fn pre_start(&self, _: ActorRef<GuidanceMsg>, args: GuidanceArgs) -> Result<GuidanceArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(&self, _: ActorRef<GuidanceMsg>, msg: GuidanceMsg, state: &mut GuidanceArgs) -> Result<(), ActorProcessingErr> {
        match msg {
            GuidanceMsg::ExplainPlan(env, reply) => {
                let text = explain_plan(&env.body);
                state.ctx.decision(
                    AgentName::Guidance,
                    "explained the plan to the operator",
                    "the operator approves what they understand; the explanation is built from the plan itself",
                    &text,
                );
                let _ = reply.send(Ok(text));
            }
        }
        Ok(())
    }
}

/// The plan in plain words.
pub fn explain_plan(plan: &MigrationPlan) -> String {
    let entities: Vec<_> = plan.entities().collect();
    let mut out = format!(
        "I will copy {} {} (about {} rows) in {} {}.",
        entities.len(),
        if entities.len() == 1 { "table" } else { "tables" },
        plan.estimated_rows(),
        plan.waves.len(),
        if plan.waves.len() == 1 { "step" } else { "steps" },
    );
    for (i, wave) in plan.waves.iter().enumerate() {
        let names: Vec<String> = wave.iter().map(|e| e.table.to_string()).collect();
        out.push_str(&format!("\nStep {}: {}.", i + 1, names.join(", ")));
    }
    let added: Vec<String> = entities
        .iter()
        .filter_map(|e| match &e.inclusion {
            Inclusion::RequiredBy { entities } => Some(format!(
                "{} (because {} point to it)",
                e.table,
                entities.iter().map(ToString::to_string).collect::<Vec<_>>().join(" and ")
            )),
            Inclusion::Requested => None,
        })
        .collect();
    if !added.is_empty() {
        out.push_str(&format!(
            "\nI added {} you did not name: {}.",
            if added.len() == 1 { "one table" } else { "tables" },
            added.join("; ")
        ));
    }
    let rejected: Vec<String> = entities
        .iter()
        .filter_map(|e| e.forecast.as_ref().filter(|f| f.reject > 0).map(|f| (e, f)))
        .map(|(e, f)| {
            let first = f.reasons.first().map(|r| r.reason.as_str()).unwrap_or("");
            format!("{} of {} {} (mostly: {first})", f.reject, f.rows, e.target.as_ref().unwrap_or(&e.table))
        })
        .collect();
    if rejected.is_empty() && entities.iter().any(|e| e.forecast.is_some()) {
        out.push_str("\nI read every row ahead: all of them fit the new database.");
    } else if !rejected.is_empty() {
        out.push_str(&format!(
            "\nI read every row ahead. {} rows will not fit the new database and will be set aside with the reason, not lost: {}.",
            plan.expected_rejected(),
            rejected.join("; ")
        ));
    }
    if entities.iter().any(|e| !e.deferred_foreign_keys.is_empty()) {
        out.push_str("\nSome rows point to other rows of the same kind; I copy them first and connect them in a second pass.");
    }
    out
}
