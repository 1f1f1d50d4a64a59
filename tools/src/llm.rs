//! The language model client: any OpenAI-compatible endpoint (OpenAI, Azure OpenAI's `/openai/v1`
//! endpoint, Ollama, vLLM, llama.cpp's server) through async-openai's chat API, which retries 429
//! and 5xx answers
//! with backoff, honouring `Retry-After`. On top of it: a timeout a request, a token budget for
//! the run, and recording or replaying exchanges keyed by a hash of the request, so a run can be
//! replayed offline and deterministically.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_openai::config::OpenAIConfig;
use async_openai::Client;
use async_trait::async_trait;
use futures::StreamExt;
use runtime::domain::{LlmReply, LlmRequest};
use runtime::ports::{Llm, ToolError};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Where and how to reach the model.
#[derive(Clone, Debug)]
pub struct LlmSettings {
    pub base_url: String,
    pub api_key: Option<String>,
    pub model: String,
    pub timeout: Duration,
    /// Stop asking once this many tokens were used in the run.
    pub max_tokens_total: Option<u64>,
    pub record: Option<PathBuf>,
    pub replay: Option<PathBuf>,
    /// US dollars per million prompt and completion tokens, when known.
    pub price: Option<(f64, f64)>,
}

impl LlmSettings {
    pub const DEFAULT_BASE: &str = "https://api.openai.com/v1";
    pub const DEFAULT_MODEL: &str = "gpt-4o-mini";

    /// From `OPENAI_API_KEY`, `OPENAI_BASE_URL` and `AGENTCTL_MODEL` (any source the caller
    /// looked up); `None` when neither a key, a base URL nor a replay directory is given: the
    /// agents then work offline.
    pub fn resolve(
        api_key: Option<String>,
        base_url: Option<String>,
        model: Option<String>,
        record: Option<PathBuf>,
        replay: Option<PathBuf>,
    ) -> Option<LlmSettings> {
        if api_key.is_none() && base_url.is_none() && replay.is_none() {
            return None;
        }
        Some(LlmSettings {
            base_url: base_url
                .unwrap_or_else(|| Self::DEFAULT_BASE.into())
                .trim_end_matches('/')
                .to_owned(),
            api_key,
            model: model.unwrap_or_else(|| Self::DEFAULT_MODEL.into()),
            timeout: Duration::from_secs(60),
            max_tokens_total: None,
            record,
            replay,
            price: None,
        })
    }
}

pub struct OpenAiLlm {
    client: Client<OpenAIConfig>,
    settings: LlmSettings,
    used: AtomicU64,
}

impl OpenAiLlm {
    pub fn new(settings: LlmSettings) -> Result<OpenAiLlm, ToolError> {
        let http = reqwest::Client::builder().timeout(settings.timeout).build().map_err(|e| {
            ToolError::system(format!("setting up the HTTP client for {}: {e}", settings.base_url))
        })?;
        let key = settings.api_key.clone().unwrap_or_default();
        let mut config =
            OpenAIConfig::new().with_api_base(&settings.base_url).with_api_key(key.clone());
        // Azure OpenAI's OpenAI-compatible endpoint (`https://NAME.openai.azure.com/openai/v1`)
        // takes its key in an `api-key` header.
        if settings.base_url.contains("/openai/") && !key.is_empty() {
            config = config.with_header("api-key", key).map_err(|e| {
                ToolError::system(format!("the API key cannot be sent as a header: {e}"))
            })?;
        }
        Ok(OpenAiLlm { client: Client::build(http, config), settings, used: AtomicU64::new(0) })
    }

    /// The chat completion request, as the API takes it.
    fn body(&self, request: &LlmRequest) -> Value {
        let mut messages = vec![json!({"role": "system", "content": request.system})];
        messages.extend(
            request.turns.iter().map(|(role, text)| json!({"role": role, "content": text})),
        );
        let mut body = json!({"model": self.settings.model, "messages": messages, "temperature": 0, "stream": false});
        if let Some(tool) = &request.tool {
            body["tools"] = json!([{"type": "function", "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters}}]);
            body["tool_choice"] = json!({"type": "function", "function": {"name": tool.name}});
        }
        body
    }

    fn check_budget(&self) -> Result<(), ToolError> {
        match self.settings.max_tokens_total {
            Some(budget) if self.used.load(Ordering::Relaxed) >= budget => {
                Err(ToolError::system(format!(
                    "the run's token budget is spent ({} of {budget} tokens)",
                    self.used.load(Ordering::Relaxed)
                )))
            }
            _ => Ok(()),
        }
    }

    /// Stores an exchange under the request's hash, when recording.
    fn record(&self, body: &Value, response: &Value) -> Result<(), ToolError> {
        let Some(dir) = &self.settings.record else { return Ok(()) };
        std::fs::create_dir_all(dir)
            .map_err(|e| ToolError::system(format!("creating {}: {e}", dir.display())))?;
        let path = Self::recording(dir, body);
        // Masked as the audit trail masks: an endpoint may echo the key or an Authorization
        // header in its reply. (The file's name is the hash of the request as sent.)
        let redactor = runtime::redact::Redactor::new(self.settings.api_key.iter());
        let exchange = redactor.json(&json!({"request": body, "response": response}));
        let text = serde_json::to_string_pretty(&exchange).unwrap_or_default();
        std::fs::write(&path, text)
            .map_err(|e| ToolError::system(format!("writing {}: {e}", path.display())))
    }

    fn recording(dir: &std::path::Path, body: &Value) -> PathBuf {
        let hash = hex::encode(Sha256::digest(body.to_string().as_bytes()));
        dir.join(format!("{}.json", &hash[..32]))
    }
}

/// The reply's parts out of a chat completion response.
fn reply(model: &str, response: &Value, millis: u64, replayed: bool) -> LlmReply {
    let message = &response["choices"][0]["message"];
    let usage = &response["usage"];
    LlmReply {
        model: response["model"].as_str().unwrap_or(model).to_owned(),
        text: message["content"].as_str().map(str::to_owned),
        arguments: message["tool_calls"][0]["function"]["arguments"].as_str().map(str::to_owned),
        prompt_tokens: usage["prompt_tokens"].as_u64().unwrap_or(0),
        completion_tokens: usage["completion_tokens"].as_u64().unwrap_or(0),
        millis,
        replayed,
    }
}

#[async_trait]
impl Llm for OpenAiLlm {
    fn describe(&self) -> String {
        match &self.settings.replay {
            Some(dir) => format!("{} replayed from {}", self.settings.model, dir.display()),
            None => format!("{} at {}", self.settings.model, self.settings.base_url),
        }
    }

    fn tokens(&self) -> (u64, Option<u64>) {
        (self.used.load(Ordering::Relaxed), self.settings.max_tokens_total)
    }

    fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> Option<f64> {
        self.settings
            .price
            .map(|(p, c)| (prompt_tokens as f64 * p + completion_tokens as f64 * c) / 1e6)
    }

    async fn ask_streaming(
        &self,
        request: &LlmRequest,
        on_text: &mut (dyn for<'t> FnMut(&'t str) + Send),
    ) -> Result<LlmReply, ToolError> {
        if request.tool.is_some() || self.settings.replay.is_some() {
            // A tool call is only useful whole; a replay has it whole already.
            let reply = self.ask(request).await?;
            on_text(reply.text.as_deref().unwrap_or(""));
            return Ok(reply);
        }
        self.check_budget()?;
        let mut body = self.body(request);
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let started = Instant::now();
        let mut stream = self
            .client
            .chat()
            .create_stream_byot::<Value, Value>(body.clone())
            .await
            .map_err(|e| ToolError::system(format!("asking {}: {e}", self.describe())))?;
        let (mut text, mut model, mut usage) =
            (String::new(), self.settings.model.clone(), Value::Null);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                ToolError::system(format!("while {} answered: {e}", self.describe()))
            })?;
            if let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str() {
                on_text(piece);
                text.push_str(piece);
            }
            if let Some(m) = chunk["model"].as_str() {
                model = m.to_owned();
            }
            if chunk["usage"].is_object() {
                usage = chunk["usage"].clone();
            }
        }
        // Kept as the whole answer it amounts to, so a replay serves it like any other.
        let whole = json!({"model": model, "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}], "usage": usage});
        body["stream"] = json!(false);
        body.as_object_mut().map(|b| b.remove("stream_options"));
        self.record(&body, &whole)?;
        let reply =
            reply(&self.settings.model, &whole, started.elapsed().as_millis() as u64, false);
        self.used.fetch_add(reply.prompt_tokens + reply.completion_tokens, Ordering::Relaxed);
        Ok(reply)
    }

    async fn ask(&self, request: &LlmRequest) -> Result<LlmReply, ToolError> {
        self.check_budget()?;
        let body = self.body(request);
        let started = Instant::now();
        let (response, replayed) = match &self.settings.replay {
            Some(dir) => {
                let path = Self::recording(dir, &body);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    ToolError::system(format!(
                        "no recorded answer for this request in {} ({e})",
                        path.display()
                    ))
                })?;
                let recorded: Value = serde_json::from_str(&text).map_err(|e| {
                    ToolError::system(format!("the recording {} is not JSON: {e}", path.display()))
                })?;
                (recorded["response"].clone(), true)
            }
            None => {
                let response: Value =
                    self.client.chat().create_byot(body.clone()).await.map_err(|e| {
                        ToolError::system(format!("asking {}: {e}", self.describe()))
                    })?;
                self.record(&body, &response)?;
                (response, false)
            }
        };
        let reply =
            reply(&self.settings.model, &response, started.elapsed().as_millis() as u64, replayed);
        self.used.fetch_add(reply.prompt_tokens + reply.completion_tokens, Ordering::Relaxed);
        if reply.text.is_none() && reply.arguments.is_none() {
            return Err(ToolError::system(format!(
                "{} answered with neither text nor a tool call",
                self.describe()
            )));
        }
        Ok(reply)
    }
}
