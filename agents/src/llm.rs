//! Asking the language model for a typed answer: the answer's JSON schema (generated from the
//! Rust type) is the one tool the model must call; a reply that is not valid JSON or does not
//! fit the type is asked again with the error, at most twice; every call is in the audit trail
//! (model, the rendered prompt, the reply, tokens, latency). The caller falls back to its
//! offline path when this returns an error, and says why.

use runtime::audit::{AuditRecord, EventKind};
use runtime::context::RunContext;
use runtime::domain::{LlmReply, LlmRequest, LlmTool};
use runtime::ports::{Llm, ToolError};
use runtime::AgentName;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::json;

/// How many times a reply that does not parse is asked again.
pub const REASKS: usize = 2;

pub async fn ask_typed<T: DeserializeOwned + JsonSchema>(
    ctx: &RunContext,
    llm: &dyn Llm,
    agent: AgentName,
    tool: &str,
    description: &str,
    system: &str,
    user: &str,
) -> Result<T, ToolError> {
    let parameters = serde_json::to_value(schemars::schema_for!(T))
        .map_err(|e| ToolError::system(format!("the schema of {tool}: {e}")))?;
    let mut request = LlmRequest {
        system: system.to_owned(),
        turns: vec![("user".into(), user.to_owned())],
        tool: Some(LlmTool {
            name: tool.to_owned(),
            description: description.to_owned(),
            parameters,
        }),
    };
    let mut last_error = String::new();
    for attempt in 0..=REASKS {
        let reply = llm.ask(&request).await;
        record_call(ctx, llm, agent, tool, Some(attempt + 1), &request, &reply);
        let reply = reply?;
        let Some(arguments) = reply.arguments.clone() else {
            last_error = format!("it answered in text instead of calling {tool}");
            request.turns.push(("assistant".into(), reply.text.unwrap_or_default()));
            request.turns.push(("user".into(), format!("Answer by calling the function {tool}.")));
            continue;
        };
        match serde_json::from_str::<T>(&arguments) {
            Ok(value) => return Ok(value),
            Err(e) => {
                last_error = format!("its arguments do not fit {tool}: {e}");
                request.turns.push(("assistant".into(), arguments));
                request.turns.push((
                    "user".into(),
                    format!(
                        "Those arguments are not valid: {e}. Call {tool} again with arguments \
                        that match its schema."
                    ),
                ));
            }
        }
    }
    Err(ToolError::system(format!("after {} attempts {last_error}", REASKS + 1)))
}

/// Asks for words (a narrative, an answer), streamed piece by piece to `on_text` when given;
/// recorded in the audit trail like every call.
pub async fn ask_text(
    ctx: &RunContext,
    llm: &dyn Llm,
    agent: AgentName,
    purpose: &str,
    system: &str,
    user: &str,
    on_text: Option<&mut (dyn for<'t> FnMut(&'t str) + Send)>,
) -> Result<String, ToolError> {
    let request = LlmRequest {
        system: system.to_owned(),
        turns: vec![("user".into(), user.to_owned())],
        tool: None,
    };
    let reply = match on_text {
        Some(on_text) => llm.ask_streaming(&request, on_text).await,
        None => llm.ask(&request).await,
    };
    record_call(ctx, llm, agent, purpose, None, &request, &reply);
    let reply = reply?;
    reply
        .text
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| ToolError::system("the model answered without words"))
}

/// One call in the audit trail: the model, the rendered prompt, the reply or why there was
/// none, tokens, latency, cost, and the run's tokens against its budget.
fn record_call(
    ctx: &RunContext,
    llm: &dyn Llm,
    agent: AgentName,
    purpose: &str,
    attempt: Option<usize>,
    request: &LlmRequest,
    reply: &Result<LlmReply, ToolError>,
) {
    let (tokens, budget) = llm.tokens();
    let summary = match reply {
        Ok(r) => format!(
            "{purpose}: {} answered in {} ms ({} + {} tokens)",
            r.model, r.millis, r.prompt_tokens, r.completion_tokens
        ),
        Err(e) => format!("{purpose}: no answer: {e}"),
    };
    ctx.audit.record(AuditRecord::new(
        agent,
        EventKind::Llm,
        summary,
        json!({"llm": llm.describe(), "attempt": attempt, "request": request, "reply": reply.as_ref().ok(),
            "cost_usd": reply.as_ref().ok().and_then(|r| llm.cost(r.prompt_tokens, r.completion_tokens)),
            "error": reply.as_ref().err().map(|e| e.message.clone()), "run_tokens": tokens, "token_budget": budget}),
    ));
}
