//! A request to a language model and its reply.

use serde::{Deserialize, Serialize};

/// A function the model is asked to call, with a JSON schema for its arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlmTool {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
}

/// One request to a language model: a system prompt, the conversation so far (user turns and
/// the model's earlier answers), and optionally a tool it must call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlmRequest {
    pub system: String,
    /// (role, text): `user` or `assistant`.
    pub turns: Vec<(String, String)>,
    pub tool: Option<LlmTool>,
}

/// What the model answered.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LlmReply {
    pub model: String,
    pub text: Option<String>,
    /// The tool call's arguments, as the JSON text the model wrote (maybe not valid JSON).
    pub arguments: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub millis: u64,
    /// Served from a recording, not the endpoint.
    pub replayed: bool,
}
