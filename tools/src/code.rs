//! The code-interpreter port over the Docker sandbox. Connects on first use, so agentctl starts
//! (and does everything but run custom code) without a Docker engine.

use std::time::Duration;

use async_trait::async_trait;
use runtime::domain::{CodeFile, CodeRequest, CodeResult};
use runtime::error::BadInput;
use runtime::ports::{CodeRunner, CodeStream, ToolError};
use sandbox::{Job, Lang, Limits, Sandbox, StreamSession};

pub struct SandboxRunner {
    config: sandbox::Config,
    sandbox: tokio::sync::OnceCell<Result<Sandbox, ToolError>>,
}

impl SandboxRunner {
    pub fn new(config: sandbox::Config) -> SandboxRunner {
        SandboxRunner { config, sandbox: tokio::sync::OnceCell::new() }
    }

    /// The default configuration with AGENTCTL_SANDBOX_IMAGE, AGENTCTL_SANDBOX_POOL (ready
    /// containers), AGENTCTL_SANDBOX_TIMEOUT (seconds), AGENTCTL_SANDBOX_MEMORY (MiB) and
    /// AGENTCTL_SANDBOX_LIFETIME (seconds a container lives at most) applied.
    pub fn from_env() -> Result<SandboxRunner, BadInput> {
        let number = |name: &str| -> Result<Option<u64>, BadInput> {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| BadInput(format!("{name}={v}: expected a whole number"))),
                Err(_) => Ok(None),
            }
        };
        let mut config = sandbox::Config::default();
        if let Ok(image) = std::env::var("AGENTCTL_SANDBOX_IMAGE") {
            config.image = image;
        }
        if let Some(pool) = number("AGENTCTL_SANDBOX_POOL")? {
            config.pool_size = pool as usize;
        }
        if let Some(secs) = number("AGENTCTL_SANDBOX_TIMEOUT")? {
            config.limits.timeout = Duration::from_secs(secs);
        }
        if let Some(mib) = number("AGENTCTL_SANDBOX_MEMORY")? {
            config.limits.memory = mib << 20;
        }
        if let Some(secs) = number("AGENTCTL_SANDBOX_LIFETIME")? {
            config.max_lifetime = Duration::from_secs(secs);
        }
        Ok(SandboxRunner::new(config))
    }

    async fn sandbox(&self) -> Result<&Sandbox, ToolError> {
        let connected = self
            .sandbox
            .get_or_init(|| async {
                Sandbox::connect(self.config.clone())
                    .await
                    .map_err(|e| ToolError::system(e.to_string()))
            })
            .await;
        connected.as_ref().map_err(Clone::clone)
    }

    /// Removes the pool's containers, if it was ever connected.
    pub async fn shutdown(&self) {
        if let Some(Ok(sandbox)) = self.sandbox.get() {
            sandbox.shutdown().await;
        }
    }
}

fn job(request: &CodeRequest) -> Result<Job, ToolError> {
    let lang: Lang =
        request.lang.parse().map_err(|e: sandbox::Error| ToolError::bad_input(e.to_string()))?;
    let mut job = Job::new(lang, request.code.clone());
    job.stdin = request.stdin.clone().into_bytes();
    job.files =
        request.files.iter().map(|f| (f.name.clone(), f.content.clone().into_bytes())).collect();
    Ok(job)
}

fn limits_json(limits: &Limits) -> serde_json::Value {
    serde_json::json!({
        "memory_mib": limits.memory >> 20, "cpus": limits.cpus, "pids": limits.pids,
        "timeout_s": limits.timeout.as_secs_f64(), "output_bytes": limits.output, "files_bytes": limits.files,
        "work_dir_mib": limits.work_dir >> 20, "network": "none",
    })
}

#[async_trait]
impl CodeRunner for SandboxRunner {
    fn limits(&self) -> serde_json::Value {
        limits_json(&self.config.limits)
    }

    async fn run(&self, request: &CodeRequest) -> Result<CodeResult, ToolError> {
        let job = job(request)?;
        let outcome =
            self.sandbox().await?.run(&job).await.map_err(|e| ToolError::system(e.to_string()))?;
        Ok(CodeResult {
            exit_code: outcome.exit_code,
            stdout: outcome.stdout,
            stderr: outcome.stderr,
            stdout_truncated: outcome.stdout_truncated,
            stderr_truncated: outcome.stderr_truncated,
            files: outcome
                .files
                .into_iter()
                .map(|(name, bytes)| CodeFile {
                    name,
                    content: String::from_utf8_lossy(&bytes).into_owned(),
                })
                .collect(),
            duration_ms: outcome.duration.as_millis() as u64,
            limits_hit: outcome
                .limits_hit
                .iter()
                .map(|l| {
                    serde_json::to_value(l)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                })
                .collect(),
        })
    }

    fn stream_lifetime(&self) -> Duration {
        self.config.stream_lifetime()
    }

    async fn open(&self, request: &CodeRequest) -> Result<Box<dyn CodeStream>, ToolError> {
        let job = job(request)?;
        let session = self
            .sandbox()
            .await?
            .open_stream(&job)
            .await
            .map_err(|e| ToolError::system(e.to_string()))?;
        Ok(Box::new(Stream(session)))
    }
}

struct Stream(StreamSession);

#[async_trait]
impl CodeStream for Stream {
    async fn exchange(&mut self, line: &str) -> Result<String, ToolError> {
        let answer =
            self.0.exchange(line.as_bytes()).await.map_err(|e| ToolError::system(e.to_string()))?;
        String::from_utf8(answer)
            .map_err(|_| ToolError::system("the script answered with bytes that are not UTF-8"))
    }

    async fn close(self: Box<Self>) {
        self.0.close().await;
    }
}
