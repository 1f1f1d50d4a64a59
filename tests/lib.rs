//! Fixtures for agentctl's integration tests: real PostgreSQL 15 clusters started from the
//! machine's own binaries, the shared public datasets, and the `agentctl` binary.
//!
//! A cluster lives in a temporary directory on a free port. It is started as a child of a
//! dedicated thread with a parent-death signal, so it dies with the test process however that
//! process ends; directories left by a killed run are removed by the next one. As root (CI),
//! initdb refuses to run, so the cluster runs as the `postgres` user.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tools::cluster;

/// Where PostgreSQL's binaries are (see `tools::cluster::bin_dir`).
pub fn pg_bin() -> PathBuf {
    cluster::bin_dir().unwrap_or_else(|e| panic!("{e}"))
}

const ROOT: &str = "/tmp/agentctl-test-pg";

pub struct PgCluster {
    pub port: u16,
    dir: PathBuf,
    child: Mutex<Option<u32>>,
    /// Databases created so far, to name the next one.
    dbs: AtomicU32,
}

/// The cluster that tests share: one per test binary, a fresh database per test.
pub fn shared() -> &'static PgCluster {
    static SHARED: OnceLock<PgCluster> = OnceLock::new();
    SHARED.get_or_init(|| {
        PgCluster::start().unwrap_or_else(|e| panic!("could not start the test cluster: {e}"))
    })
}

fn run_as() -> Option<(u32, u32)> {
    cluster::server_user().unwrap_or_else(|e| panic!("{e}"))
}

/// Removes cluster directories whose test process is gone.
fn reap_stale() {
    let Ok(entries) = std::fs::read_dir(ROOT) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        #[allow(unsafe_code)]
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl PgCluster {
    /// Initialises and starts a new cluster.
    pub fn start() -> Result<PgCluster, String> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        reap_stale();
        let dir = PathBuf::from(ROOT).join(format!(
            "{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(ROOT).map_err(|e| format!("creating {ROOT}: {e}"))?;
        cluster::initdb(&pg_bin(), &dir, run_as()).map_err(|e| e.to_string())?;
        let pg = PgCluster { port: 0, dir, child: Mutex::new(None), dbs: AtomicU32::new(0) };
        pg.launch(cluster::free_port().map_err(|e| e.to_string())?)
    }

    fn launch(mut self, port: u16) -> Result<PgCluster, String> {
        self.port = port;
        let (tx, rx) = mpsc::channel();
        let (bin, dir, user) = (pg_bin(), self.dir.clone(), run_as());
        // The postmaster is a child of this thread, which lives as long as the postmaster: the
        // parent-death signal is tied to the spawning thread, not to the process.
        std::thread::spawn(move || {
            let mut cmd = cluster::command(&bin.join("postgres"), user);
            cmd.args([
                "-D",
                "data",
                "-p",
                &port.to_string(),
                "-k",
                ".",
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .args([
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=128MB",
                "-c",
                "max_wal_size=4GB",
            ])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.join("postgres.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            );
            {
                use std::os::unix::process::CommandExt;
                #[allow(unsafe_code)]
                // SAFETY: prctl is async-signal-safe; it runs after the uid switch, which would
                // otherwise clear the parent-death signal.
                unsafe {
                    cmd.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
                        Ok(())
                    });
                }
            }
            let child: Result<Child, _> = cmd.spawn();
            match child {
                Ok(mut c) => {
                    let _ = tx.send(Ok(c.id()));
                    let _ = c.wait();
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("starting postgres: {e}")));
                }
            }
        });
        let pid = rx.recv().map_err(|e| e.to_string())??;
        *self.child.lock().unwrap() = Some(pid);
        self.wait_ready()?;
        Ok(self)
    }

    /// Stops the server (fast shutdown: every connection is cut) and starts it again on the
    /// same port, as an operator's restart or a crash-and-recover would.
    pub fn restart(self) -> Result<PgCluster, String> {
        self.restart_after(Duration::ZERO)
    }

    /// [`PgCluster::restart`], the server staying down for `down` before it starts again.
    pub fn restart_after(self, down: Duration) -> Result<PgCluster, String> {
        let pid = self.child.lock().unwrap().take().ok_or("the cluster is not running")?;
        #[allow(unsafe_code)]
        // SAFETY: signalling our own child process.
        unsafe {
            libc::kill(pid as i32, libc::SIGINT);
        }
        #[allow(unsafe_code)]
        // SAFETY: signal 0 only checks whether the process still exists.
        let gone =
            wait_until(Duration::from_secs(60), || unsafe { libc::kill(pid as i32, 0) } != 0);
        if !gone {
            return Err(format!("postgres (pid {pid}) did not stop"));
        }
        std::thread::sleep(down);
        let port = self.port;
        self.launch(port)
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new(pg_bin().join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres"])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
                return Err(format!("postgres on port {} did not become ready: {log}", self.port));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A source database that `sql` makes, and a target whose schema `agentctl schema generate`
    /// made from it: their URLs.
    pub fn generated_pair(&self, name: &str, sql: &str) -> (String, String) {
        let source = self.create_db(name);
        self.psql(source.rsplit('/').next().expect("a database name"), sql);
        let target = self.create_db(&format!("{name}_target"));
        let out =
            agentctl_on(&source, &target, &["schema", "generate", "--from-source", "--apply"]);
        assert_eq!(out.code, 0, "schema generate: {out:?}");
        (source, target)
    }

    /// Creates an empty database with a fresh name and returns its URL.
    pub fn create_db(&self, prefix: &str) -> String {
        let name = format!("{prefix}_{}", self.dbs.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// psql connected to `db` of this cluster, as the superuser, without a `.psqlrc`: for a
    /// session a test drives itself (one that holds a lock, one whose error it reads).
    pub fn psql_command(&self, db: &str) -> Command {
        let mut psql = Command::new(pg_bin().join("psql"));
        let port = self.port.to_string();
        psql.args(["-X", "-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-d", db]);
        psql
    }

    fn run_psql(&self, db: &str, sql: &str) -> std::process::Output {
        Command::new(pg_bin().join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .expect("psql runs")
    }

    /// Runs SQL with psql; `None` when it fails (a table that does not exist yet).
    pub fn try_psql(&self, db: &str, sql: &str) -> Option<String> {
        let out = self.run_psql(db, sql);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Runs SQL with psql and returns its unaligned output; panics with psql's message on error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self.run_psql(db, sql);
        assert!(
            out.status.success(),
            "psql failed on {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Runs a SQL file with psql from `cwd` (for scripts that `\i` their siblings).
    pub fn psql_file(&self, db: &str, file: &Path, cwd: &Path) {
        let out = Command::new(pg_bin().join("psql"))
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-f",
            ])
            .arg(file)
            .current_dir(cwd)
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql -f {} failed: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Chinook as the source and an empty database with the target schema agentctl generates
    /// from it; returns both URLs.
    pub fn chinook_pair(&self) -> (String, String) {
        let source = self.chinook();
        let target = self.create_db("chinook_target");
        let out = agentctl(&[
            "--source",
            &source,
            "--target",
            &target,
            "schema",
            "generate",
            "--from-source",
            "--apply",
        ]);
        assert_eq!(out.code, 0, "{out:?}");
        (source, target)
    }

    /// Employee as the source, with a generated target; returns both URLs.
    pub fn employee_pair(&self) -> (String, String) {
        let source = self.create_db("employee");
        let db = source.rsplit('/').next().unwrap().to_owned();
        let dir = datasets().join("employee");
        self.psql_file(&db, &dir.join("employee.sql"), &dir);
        let target = self.create_db("employee_target");
        let out = agentctl(&[
            "--source",
            &source,
            "--target",
            &target,
            "schema",
            "generate",
            "--from-source",
            "--apply",
        ]);
        assert_eq!(out.code, 0, "{out:?}");
        (source, target)
    }

    /// The reference dispatch database at `scale` with its modern target schema; returns both
    /// URLs and the generator's report.
    pub fn reference_pair(&self, scale: &str) -> (String, String, serde_json::Value) {
        let (source, target) = (self.create_db("legacy"), self.create_db("modern"));
        let out = agentctl(&[
            "--source", &source, "--target", &target, "dataset", "generate", "--scale", scale,
            "--format", "json",
        ]);
        assert_eq!(out.code, 0, "{out:?}");
        (source, target, serde_json::from_str(&out.stdout).expect("the report is JSON"))
    }

    /// Loads the shared Chinook dataset into a database of its own; returns its URL.
    pub fn chinook(&self) -> String {
        let url = self.create_db("chinook");
        let db = url.rsplit('/').next().unwrap().to_owned();
        // The script drops and recreates a database named chinook and connects to it; load it
        // into ours instead, skipping those lines.
        let script = std::fs::read_to_string(datasets().join("chinook/Chinook_PostgreSql.sql"))
            .expect("the Chinook script is readable");
        let body: String = script
            .lines()
            .filter(|l| {
                let t = l.trim_start().to_ascii_uppercase();
                !(t.starts_with("DROP DATABASE")
                    || t.starts_with("CREATE DATABASE")
                    || t.starts_with("\\C"))
            })
            .collect::<Vec<_>>()
            .join("\n");
        let tmp = tempfile::NamedTempFile::new().expect("a temp file");
        std::fs::write(tmp.path(), body).expect("write the script");
        self.psql_file(&db, tmp.path(), &datasets());
        url
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(pid) = self.child.lock().unwrap().take() {
            #[allow(unsafe_code)]
            // SAFETY: signalling our own child process.
            unsafe {
                libc::kill(pid as i32, libc::SIGQUIT);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A configuration naming these databases, as `--source` and `--target` would.
pub fn config(source: &str, target: &str) -> runtime::config::Config {
    let flags = runtime::config::DbFlags {
        source: Some(source.to_owned()),
        target: Some(target.to_owned()),
    };
    runtime::config::Config::resolve(&flags, &runtime::config::Vars::default())
        .expect("test URLs are valid")
}

/// What a test needs and this machine lacks: the test skips, saying so, but under `CI=true`,
/// where `.ci/run` provides everything, it fails with `under_ci`.
pub fn unavailable(under_ci: &str, skipped: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{under_ci}");
    }
    eprintln!("SKIPPED: {skipped}");
}

/// A program on the PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
}

/// Debian's `chromium`, for the tests that look at a page as a person would; `None` (the test
/// then skips) without it, but under `CI=true`, where `.ci/run` installs it, a missing browser
/// fails the test.
pub fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser"].iter().find_map(|name| on_path(name));
    if found.is_none() {
        unavailable(
            "CI installs chromium: the audit page test reads the page in it",
            "no chromium",
        );
    }
    found
}

/// `shared/datasets` beside the checkout.
pub fn datasets() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = here.join("../../shared/datasets");
    assert!(dir.exists(), "the shared datasets are expected at {}", dir.display());
    dir
}

/// The `agentctl` binary of this build, built on first use.
pub fn agentctl_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's path");
        // target/<profile>/deps/it-<hash> -> target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary lives in target/<profile>/deps");
        let target_dir = profile_dir.parent().expect("target dir");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "agentctl", "--bin", "agentctl"])
            .env("CARGO_TARGET_DIR", target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "building agentctl failed");
        profile_dir.join("agentctl")
    })
    .clone()
}

/// What a finished `agentctl` process said.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `agentctl` with `args` in an empty directory (so no stray `.env` is read) and no
/// database variables from the environment.
pub fn agentctl(args: &[&str]) -> Output {
    agentctl_with(args, &[])
}

/// [`agentctl`] on a source and a target: `--source source --target target args...`.
pub fn agentctl_on(source: &str, target: &str, args: &[&str]) -> Output {
    agentctl(&[&["--source", source, "--target", target], args].concat())
}

/// [`agentctl`] with extra environment variables.
pub fn agentctl_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("a temp dir");
    let out = Command::new(agentctl_bin())
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir.path())
        .env_remove("SOURCE_DATABASE_URL")
        .env_remove("TARGET_DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .expect("agentctl runs");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    condition()
}

/// One scripted answer of [`FakeOpenAi`].
#[derive(Clone, Debug)]
pub struct Scripted {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
    /// Wait this long before answering (to test timeouts).
    pub delay: Duration,
    /// Server-sent events to send instead of `body` (a streamed answer).
    pub events: Option<String>,
}

impl Scripted {
    /// A 200 chat completion whose message calls `tool` with `arguments` (JSON text, valid or not).
    pub fn tool_call(tool: &str, arguments: &str) -> Scripted {
        Scripted::ok(serde_json::json!({
            "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "test-model",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": tool, "arguments": arguments}}]}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
        }))
    }

    /// A 200 chat completion answering in text.
    pub fn text(content: &str) -> Scripted {
        Scripted::ok(serde_json::json!({
            "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "test-model",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
        }))
    }

    pub fn ok(body: serde_json::Value) -> Scripted {
        Scripted { status: 200, headers: Vec::new(), body, delay: Duration::ZERO, events: None }
    }

    /// A streamed chat completion: one chunk a piece, then the usage, then `[DONE]`.
    pub fn stream(pieces: &[&str]) -> Scripted {
        let chunk = |delta: serde_json::Value, usage: serde_json::Value| {
            serde_json::json!({"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0, "model": "test-model",
                "choices": if delta.is_null() { serde_json::json!([]) } else { serde_json::json!([{"index": 0, "delta": delta, "finish_reason": null}]) },
                "usage": usage})
        };
        let mut events = String::new();
        for p in pieces {
            events.push_str(&format!(
                "data: {}\n\n",
                chunk(serde_json::json!({"content": p}), serde_json::Value::Null)
            ));
        }
        let usage = serde_json::json!({"prompt_tokens": 50, "completion_tokens": pieces.len(), "total_tokens": 50 + pieces.len()});
        events.push_str(&format!(
            "data: {}\n\ndata: [DONE]\n\n",
            chunk(serde_json::Value::Null, usage)
        ));
        Scripted { events: Some(events), ..Scripted::ok(serde_json::Value::Null) }
    }

    /// 429 Too Many Requests, asking to come back after `seconds`.
    pub fn rate_limited(seconds: u64) -> Scripted {
        Scripted {
            status: 429,
            headers: vec![("Retry-After".into(), seconds.to_string())],
            body: serde_json::json!({"error": {"message": "Rate limit reached", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}),
            delay: Duration::ZERO,
            events: None,
        }
    }
}

/// A real HTTP server speaking the OpenAI chat completions API on loopback: it answers from a
/// script, in order (the last answer repeats), and keeps every request it received, with when.
pub struct FakeOpenAi {
    pub url: String,
    received: std::sync::Arc<Mutex<Vec<(Instant, serde_json::Value)>>>,
    headers: std::sync::Arc<Mutex<Vec<Headers>>>,
}

/// One request's headers: (lower-case name, value).
pub type Headers = Vec<(String, String)>;

impl FakeOpenAi {
    pub fn start(script: Vec<Scripted>) -> FakeOpenAi {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let received: std::sync::Arc<Mutex<Vec<(Instant, serde_json::Value)>>> = Default::default();
        let headers: std::sync::Arc<Mutex<Vec<Headers>>> = Default::default();
        let (log, script, header_log) =
            (received.clone(), std::sync::Arc::new(script), headers.clone());
        let next = std::sync::Arc::new(AtomicU32::new(0));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, script, next, header_log) =
                    (log.clone(), script.clone(), next.clone(), header_log.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("a socket"));
                    let mut stream = stream;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut length = 0usize;
                        let mut seen = Vec::new();
                        loop {
                            let mut header = String::new();
                            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                                return;
                            }
                            let header = header.trim_end();
                            if header.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = header.split_once(':') {
                                if k.eq_ignore_ascii_case("content-length") {
                                    length = v.trim().parse().unwrap_or(0);
                                }
                                seen.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
                            }
                        }
                        let mut body = vec![0; length];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        log.lock().unwrap().push((
                            Instant::now(),
                            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                        ));
                        header_log.lock().unwrap().push(seen);
                        let n = next.fetch_add(1, Ordering::SeqCst) as usize;
                        let answer = script[n.min(script.len() - 1)].clone();
                        std::thread::sleep(answer.delay);
                        let (kind, text) = match &answer.events {
                            Some(events) => ("text/event-stream", events.clone()),
                            None => ("application/json", answer.body.to_string()),
                        };
                        let mut head = format!(
                            "HTTP/1.1 {} X\r\ncontent-type: {kind}\r\ncontent-length: {}\r\n",
                            answer.status,
                            text.len()
                        );
                        for (k, v) in &answer.headers {
                            head.push_str(&format!("{k}: {v}\r\n"));
                        }
                        head.push_str("\r\n");
                        if stream
                            .write_all(head.as_bytes())
                            .and_then(|_| stream.write_all(text.as_bytes()))
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        FakeOpenAi { url, received, headers }
    }

    /// The headers of each request received so far (names in lower case).
    pub fn headers(&self) -> Vec<Headers> {
        self.headers.lock().unwrap().clone()
    }

    /// The requests received so far, with when each arrived.
    pub fn requests(&self) -> Vec<(Instant, serde_json::Value)> {
        self.received.lock().unwrap().clone()
    }
}

/// The sandbox image's name once it is built (by `sandbox::image::build`, offline here), or
/// `None` with a visible message when no Docker engine answers. Under CI (`CI=true`) a missing
/// engine fails the test instead: CI machines run one.
pub fn sandbox_image() -> Option<String> {
    static IMAGE: OnceLock<Result<String, String>> = OnceLock::new();
    // Built on a thread of its own: callers are often inside a runtime already.
    let built = IMAGE.get_or_init(|| {
        std::thread::spawn(build_sandbox_image).join().expect("the image build does not panic")
    });
    match built {
        Ok(image) => Some(image.clone()),
        Err(error) => {
            unavailable(
                &format!("CI needs a Docker engine for the sandbox tests: {error}"),
                &format!("no Docker engine for the sandbox tests ({error})"),
            );
            None
        }
    }
}

fn build_sandbox_image() -> Result<String, String> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        if let Some(error) = sandbox::Sandbox::status(&sandbox::image::tag()).await.error {
            return Err(error);
        }
        let say = |line: &str| eprintln!("sandbox image: {line}");
        let built = sandbox::image::build(&say)
            .await
            .unwrap_or_else(|e| panic!("building the sandbox image: {e}"));
        Ok(built.image)
    })
}

/// The Python that has Django and Wagtail (`AGENTCTL_DJANGO_PYTHON`, else the virtualenv
/// `.ci/run` makes at `/var/tmp/agentctl-django`), or `None` with a visible message. Under CI
/// (`CI=true`) a missing one fails the test instead: `.ci/run` installs it.
pub fn django_python() -> Option<PathBuf> {
    let python = std::env::var_os("AGENTCTL_DJANGO_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/tmp/agentctl-django/bin/python".into());
    let works = Command::new(&python)
        .args(["-c", "import wagtail, psycopg"])
        .output()
        .is_ok_and(|o| o.status.success());
    match works {
        true => Some(python),
        false => {
            unavailable(
                &format!(
                    "CI needs Django and Wagtail at {}: .ci/run installs them",
                    python.display()
                ),
                &format!(
                    "no Python with Django and Wagtail at {} (.ci/run installs them)",
                    python.display()
                ),
            );
            None
        }
    }
}

impl PgCluster {
    /// A database whose schema Django's own migrations built (a Wagtail site's) and whose rows
    /// the site's models wrote (`tests/corpus/django/fill.py`); returns its URL.
    pub fn django(&self, python: &Path) -> String {
        let url = self.create_db("wagtail");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/django");
        for args in [&["-m", "django", "migrate", "-v", "0"][..], &["fill.py"][..]] {
            let out = Command::new(python)
                .args(args)
                .current_dir(&dir)
                .env("DJANGO_SETTINGS_MODULE", "settings")
                .env("PYTHONPATH", &dir)
                .env("PGHOST", "127.0.0.1")
                .env("PGPORT", self.port.to_string())
                .env("PGUSER", "postgres")
                .env("PGDATABASE", url.rsplit('/').next().unwrap())
                .output()
                .expect("python runs");
            assert!(
                out.status.success(),
                "{args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        url
    }
}

/// `agentctl run --goal "migrate everything" --yes` started in the background, with small
/// batches (so that it is under way for a while), its stderr piped.
pub fn spawn_run(source: &str, target: &str) -> Child {
    Command::new(agentctl_bin())
        .args([
            "--source",
            source,
            "--target",
            target,
            "run",
            "--goal",
            "migrate everything",
            "--yes",
        ])
        .env("BATCH_SIZE", "250")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("agentctl starts")
}

/// Batches committed so far in the target `db`.
pub fn committed(pg: &PgCluster, db: &str) -> i64 {
    pg.try_psql(db, "SELECT coalesce(sum(batches), 0) FROM agentctl.migration_checkpoints")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
