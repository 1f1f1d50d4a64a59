//! Code the agents did not ship with, run in the sandbox: the `run_code` tool (for agents and,
//! through tool calling, the model), and mapping transforms written in Python, applied to a
//! column's values as the source is read. Every execution is in the audit trail: the code, its
//! hash, a summary of its inputs, the limits, the exit, the duration and the (truncated) output.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use runtime::audit::{AuditRecord, EventKind};
use runtime::context::RunContext;
use runtime::domain::{CodeFile, CodeRequest, CodeResult, Scan};
use runtime::mapping::{Answered, Preview, Sample};
use runtime::mapping::{MappingSpec, ScriptAnswer, ScriptColumn};
use runtime::ports::{CodeRunner, CodeStream, Rows, ToolError};
use runtime::text_rows::TextRows;
use runtime::AgentName;
use serde_json::json;
use sha2::{Digest, Sha256};

/// How the `run_code` tool is described to the model.
pub const RUN_CODE: &str = "run_code";
pub const RUN_CODE_DESCRIPTION: &str =
    "Run a short Python 3 (or POSIX sh) program in an isolated sandbox: no network, \
     limited memory and time. Sample rows arrive on stdin when given; print the answer to stdout.";

/// The program that runs a mapping's transform script in the sandbox, a batch of values a line.
pub const TRANSFORM_DRIVER: &str = include_str!("code/transform_driver.py");

/// Values sent to a transform script per call.
const SCRIPT_BATCH: usize = 5_000;
/// Output kept in the audit trail, per stream.
const AUDIT_OUTPUT: usize = 2_048;

pub fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn clip(text: &str) -> String {
    match text.char_indices().nth(AUDIT_OUTPUT) {
        Some((at, _)) => format!("{}… ({} bytes in all)", &text[..at], text.len()),
        None => text.to_owned(),
    }
}

/// Runs code in the sandbox and records it in the audit trail.
pub async fn run_code(
    ctx: &RunContext,
    runner: &dyn CodeRunner,
    agent: AgentName,
    purpose: &str,
    request: &CodeRequest,
) -> Result<CodeResult, ToolError> {
    let started = Instant::now();
    let result = runner.run(request).await;
    let inputs = json!({
        "stdin_bytes": request.stdin.len(),
        "files": request.files.iter().map(|f| json!({"name": f.name, "bytes": f.content.len()})).collect::<Vec<_>>(),
    });
    let (summary, outcome) = match &result {
        Ok(r) => {
            let ended = match r.exit_code {
                Some(code) => format!("exited {code}"),
                None => "killed at the timeout".into(),
            };
            let limits = if r.limits_hit.is_empty() {
                String::new()
            } else {
                format!(", limits hit: {}", r.limits_hit.join(", "))
            };
            (
                format!("{RUN_CODE} ({purpose}): {ended} in {} ms{limits}", r.duration_ms),
                json!({"exit_code": r.exit_code, "duration_ms": r.duration_ms, "limits_hit": r.limits_hit,
                    "stdout": clip(&r.stdout), "stderr": clip(&r.stderr), "stdout_truncated": r.stdout_truncated,
                    "stderr_truncated": r.stderr_truncated, "files": r.files.iter().map(|f| &f.name).collect::<Vec<_>>()}),
            )
        }
        Err(e) => {
            (format!("{RUN_CODE} ({purpose}): could not run: {e}"), json!({"error": e.message}))
        }
    };
    ctx.audit.record(AuditRecord::new(
        agent,
        EventKind::Tool,
        summary,
        json!({"tool": RUN_CODE, "purpose": purpose, "lang": request.lang, "code": request.code, "code_sha256": sha256(&request.code),
            "inputs": inputs, "limits": runner.limits(), "result": outcome,
            "wall_ms": started.elapsed().as_millis() as u64}),
    ));
    result
}

/// The source's rows with the mapping's script transforms applied: a scan that names scripts is
/// read a batch at a time, each script's column sent to its script in the sandbox (one running
/// container per script and reader, reused across scans), and the answers appended as the
/// scan's output columns. Scans without scripts pass straight through.
pub struct ScriptedRows {
    inner: Arc<dyn Rows>,
    runner: Option<Arc<dyn CodeRunner>>,
    ctx: Arc<RunContext>,
    agent: AgentName,
    /// Running scripts not in use, by the hash of their code, with when each was started.
    idle: Mutex<HashMap<String, Vec<Running>>>,
}

/// A checked-out running script and when it was started.
type Running = (Instant, Box<dyn CodeStream>);

impl ScriptedRows {
    pub fn new(
        inner: Arc<dyn Rows>,
        runner: Option<Arc<dyn CodeRunner>>,
        ctx: Arc<RunContext>,
        agent: AgentName,
    ) -> ScriptedRows {
        ScriptedRows { inner, runner, ctx, agent, idle: Mutex::new(HashMap::new()) }
    }

    async fn checkout(&self, script: &ScriptColumn) -> Result<Running, ToolError> {
        let hash = sha256(&script.code);
        let Some(runner) = &self.runner else {
            return Err(ToolError::system(format!(
                "{}: the transform {} needs the sandbox, which is not configured",
                script.column, script.path
            )));
        };
        loop {
            let idle = self.idle.lock().expect("idle lock").get_mut(&hash).and_then(Vec::pop);
            match idle {
                // Retired before its container reaches the end of its lifetime mid-batch.
                Some((started, stream)) if started.elapsed() >= runner.stream_lifetime() => {
                    stream.close().await
                }
                Some(running) => return Ok(running),
                None => break,
            }
        }
        let request = CodeRequest {
            lang: "python".into(),
            code: TRANSFORM_DRIVER.into(),
            stdin: String::new(),
            files: vec![CodeFile { name: "transform.py".into(), content: script.code.clone() }],
        };
        let opened = runner.open(&request).await;
        self.ctx.audit.record(AuditRecord::new(
            self.agent,
            EventKind::Tool,
            match &opened {
                Ok(_) => format!("{RUN_CODE}: started {} for {} in the sandbox", script.path, script.column),
                Err(e) => format!("{RUN_CODE}: could not start {}: {e}", script.path),
            },
            json!({"tool": RUN_CODE, "purpose": "transform", "path": script.path, "column": script.column,
                "code": script.code, "code_sha256": hash, "limits": runner.limits(), "error": opened.as_ref().err().map(|e| &e.message)}),
        ));
        let stream = opened
            .map_err(|e| e.context(format!("{}: the transform {}", script.column, script.path)))?;
        Ok((Instant::now(), stream))
    }

    fn checkin(&self, script: &ScriptColumn, running: Running) {
        self.idle.lock().expect("idle lock").entry(sha256(&script.code)).or_default().push(running);
    }

    /// Sends one column of a batch through its script; the answers, tagged (`=`/`!`).
    async fn apply(
        stream: &mut dyn CodeStream,
        script: &ScriptColumn,
        values: Vec<Option<&str>>,
    ) -> Result<Vec<Option<String>>, ToolError> {
        let fail = |why: String| {
            ToolError::system(format!("{}: the transform {}: {why}", script.column, script.path))
        };
        let line = serde_json::to_string(&values).map_err(|e| fail(e.to_string()))?;
        let answer = stream.exchange(&line).await.map_err(|e| fail(e.message))?;
        let answers: Vec<Option<String>> = serde_json::from_str(&answer)
            .map_err(|e| fail(format!("its answer is not the driver's JSON ({e})")))?;
        if answers.len() != values.len() {
            return Err(fail(format!("{} answers to {} values", answers.len(), values.len())));
        }
        Ok(answers)
    }

    /// Stops the running scripts not in use; the orchestrator calls it when the run is over.
    pub async fn close(&self) {
        let idle: Vec<Running> =
            self.idle.lock().expect("idle lock").drain().flat_map(|(_, v)| v).collect();
        for (_, stream) in idle {
            stream.close().await;
        }
    }

    /// Reads a scan that names scripts a batch at a time, each script's column through its
    /// running script, and hands on each row with the answers in the output columns.
    async fn read_scripted(
        &self,
        scan: &Scan,
        streams: &mut [Running],
        each: &mut (dyn for<'r> FnMut(&'r [Option<&'r str>]) + Send),
    ) -> Result<u64, ToolError> {
        let outputs: Vec<String> = scan.scripts.iter().map(ScriptColumn::output).collect();
        let columns: Vec<String> =
            scan.columns.iter().filter(|c| !outputs.contains(c)).cloned().collect();
        let position = |name: &str| {
            columns.iter().position(|c| c == name).ok_or_else(|| {
                ToolError::system(format!("{}: column {name} is not scanned", scan.table))
            })
        };
        let inputs: Vec<usize> =
            scan.scripts.iter().map(|s| position(&s.column)).collect::<Result<_, _>>()?;
        let keys: Vec<usize> = scan.key.iter().map(|k| position(k)).collect::<Result<_, _>>()?;
        // The scanned columns' order: the plain ones, then each script's answers.
        let order: Vec<usize> = scan
            .columns
            .iter()
            .map(|c| match outputs.iter().position(|o| o == c) {
                Some(o) => columns.len() + o,
                None => columns.iter().position(|p| p == c).expect("a plain column"),
            })
            .collect();
        let lifetime =
            self.runner.as_ref().map_or(std::time::Duration::MAX, |r| r.stream_lifetime());
        let mut plain = Scan { columns, scripts: Vec::new(), ..scan.clone() };
        let mut left = scan.limit.unwrap_or(usize::MAX);
        let mut count = 0u64;
        let mut done_with = TextRows::default();
        while left > 0 {
            let want = left.min(SCRIPT_BATCH);
            let page = self.inner.page(&plain, want, std::mem::take(&mut done_with)).await?;
            // A long scan changes scripts before their containers reach the end of their lifetime.
            for (running, script) in streams.iter_mut().zip(&scan.scripts) {
                if running.0.elapsed() >= lifetime {
                    let fresh = self.checkout(script).await?;
                    std::mem::replace(running, fresh).1.close().await;
                }
            }
            let mut answers = Vec::with_capacity(streams.len());
            for (((_, stream), script), &input) in
                streams.iter_mut().zip(&scan.scripts).zip(&inputs)
            {
                answers.push(
                    Self::apply(stream.as_mut(), script, page.column(input).collect()).await?,
                );
            }
            for (i, row) in page.rows().enumerate() {
                let plain: Vec<Option<&str>> = row.collect();
                let refs: Vec<Option<&str>> = order
                    .iter()
                    .map(|&o| {
                        if o < plain.len() {
                            plain[o]
                        } else {
                            answers[o - plain.len()][i].as_deref()
                        }
                    })
                    .collect();
                each(&refs);
            }
            count += page.len() as u64;
            left -= page.len();
            match page.len().checked_sub(1) {
                Some(last) if page.len() == want => {
                    plain.after = Some(runtime::domain::key_parts(&page, last, &keys))
                }
                _ => break,
            }
            done_with = page;
        }
        Ok(count)
    }
}

#[async_trait]
impl Rows for ScriptedRows {
    async fn scan(
        &self,
        scan: &Scan,
        each: &mut (dyn for<'r> FnMut(&'r [Option<&'r str>]) + Send),
    ) -> Result<u64, ToolError> {
        if scan.scripts.is_empty() {
            return self.inner.scan(scan, each).await;
        }
        if scan.key.is_empty() {
            // Read a batch at a time after the last key: without a key there is no "after".
            return Err(ToolError::system(format!(
                "{}: a transform script needs the table to have a key",
                scan.table
            )));
        }
        let mut streams = Vec::with_capacity(scan.scripts.len());
        for script in &scan.scripts {
            streams.push(self.checkout(script).await?);
        }
        let read = self.read_scripted(scan, &mut streams, each).await;
        // A script whose scan failed is not reused (its state is unknown): dropped, its
        // container is removed.
        if read.is_ok() {
            for (script, stream) in scan.scripts.iter().zip(streams) {
                self.checkin(script, stream);
            }
        }
        read
    }

    async fn page(&self, scan: &Scan, limit: usize, into: TextRows) -> Result<TextRows, ToolError> {
        if scan.scripts.is_empty() {
            // Read straight into the page, as the plain reader does.
            return self.inner.page(scan, limit, into).await;
        }
        runtime::ports::page_by_scan(self, scan, limit, into).await
    }
}

/// Runs each of the mapping's scripts on its first `n` rows; an error when a script cannot run
/// at all (it does not load, or the sandbox is away).
pub async fn preview(
    rows: &ScriptedRows,
    spec: &MappingSpec,
    n: usize,
) -> Result<Vec<Preview>, ToolError> {
    let scripts = spec.scripts();
    if scripts.is_empty() {
        return Ok(Vec::new());
    }
    let scan = Scan { limit: Some(n), ..Scan::entity(spec) };
    let columns = scan.columns.clone();
    let mut sampled: Vec<Vec<Option<String>>> = Vec::new();
    rows.scan(&scan, &mut |r: &[Option<&str>]| {
        sampled.push(r.iter().map(|v| v.map(str::to_owned)).collect())
    })
    .await?;
    Ok(scripts
        .iter()
        .map(|s| {
            let before = columns
                .iter()
                .position(|c| *c == s.column)
                .expect("the script's column is scanned");
            let after = columns
                .iter()
                .position(|c| *c == s.output())
                .expect("the script's answer is scanned");
            let samples = sampled
                .iter()
                .map(|r| {
                    let answer = match r[after].as_deref() {
                        None => Answered::Value(None),
                        Some(a) => match ScriptAnswer::read(a) {
                            ScriptAnswer::Value(v) => Answered::Value(Some(v.to_owned())),
                            ScriptAnswer::Raised(e) => Answered::Rejected(e.to_owned()),
                            ScriptAnswer::Untagged => {
                                Answered::Rejected(format!("untagged answer `{a}`"))
                            }
                        },
                    };
                    Sample { before: r[before].clone(), after: answer }
                })
                .collect();
            Preview { column: s.column.clone(), path: s.path.clone(), samples }
        })
        .collect())
}

/// A preview as the operator reads it.
pub fn render_preview(spec: &MappingSpec, preview: &Preview) -> String {
    let mut out = format!(
        "{}.{} through {} (tried in the sandbox on {} sample rows):\n",
        spec.source.name,
        preview.column,
        preview.path,
        preview.samples.len()
    );
    let show = |v: &Option<String>| v.as_deref().map_or("NULL".to_owned(), |s| format!("{s:?}"));
    for sample in &preview.samples {
        match &sample.after {
            Answered::Value(after) => {
                out.push_str(&format!("  {} -> {}\n", show(&sample.before), show(after)))
            }
            Answered::Rejected(e) => {
                out.push_str(&format!("  {} -> rejected: {e}\n", show(&sample.before)))
            }
        }
    }
    out
}
