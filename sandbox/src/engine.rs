//! The engine side: containers made, pooled, used once, and removed.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    StatsOptionsBuilder,
};
use bollard::Docker;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::{docker_err, Config, Error, Job, Limit, Outcome, Result, DEFAULT_SOCKET};

/// Every container of ours carries this label; the owner label names the process that made it.
const LABEL: &str = "agentctl.sandbox";
const OWNER: &str = "agentctl.sandbox.owner";
/// The unprivileged user the image defines.
const USER: &str = "10001:10001";
const WORK: &str = "/work";

/// A connection to the engine and a pool of ready containers. Cheap to clone; clones share
/// the pool.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    docker: Docker,
    config: Config,
    owner: String,
    pool: Mutex<Vec<Warm>>,
    /// Containers being made for the pool.
    filling: AtomicUsize,
    /// Removals under way, awaited by [`Sandbox::shutdown`].
    removing: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

struct Warm {
    id: String,
    born: Instant,
}

/// What `agentctl sandbox status` shows.
#[derive(Debug, serde::Serialize)]
pub struct Status {
    pub endpoint: String,
    /// The engine's version, when it answered.
    pub engine: Option<String>,
    /// Why it did not, when it did not.
    pub error: Option<String>,
    pub image: String,
    pub image_present: bool,
    /// Sandbox containers on the engine now, and how many of them belong to live processes.
    pub containers: usize,
    pub containers_live: usize,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("image", &self.inner.config.image)
            .field("owner", &self.inner.owner)
            .finish()
    }
}

/// Where the engine is: `DOCKER_HOST`, or the local socket.
fn endpoint() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| DEFAULT_SOCKET.to_owned())
}

/// The engine at [`endpoint`], with the API version both speak.
pub(crate) async fn engine() -> Result<Docker> {
    let endpoint = endpoint();
    let unreachable = |reason: String| Error::Unreachable { endpoint: endpoint.clone(), reason };
    let docker = Docker::connect_with_local_defaults().map_err(|e| unreachable(e.to_string()))?;
    let docker = tokio::time::timeout(Duration::from_secs(5), docker.negotiate_version())
        .await
        .map_err(|_| unreachable("no answer in 5 s".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    Ok(docker)
}

pub(crate) async fn image_present(docker: &Docker, image: &str) -> Result<bool> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
            Ok(false)
        }
        Err(e) => Err(docker_err(format!("inspecting image {image}"))(e)),
    }
}

impl Sandbox {
    /// Connects to the engine, checks the image is there, removes containers left by processes
    /// that are gone, and starts filling the pool.
    pub async fn connect(config: Config) -> Result<Sandbox> {
        let docker = engine().await?;
        if !image_present(&docker, &config.image).await? {
            return Err(Error::ImageMissing { image: config.image });
        }
        let sandbox = Sandbox {
            inner: Arc::new(Inner {
                docker,
                config,
                owner: owner_label(),
                pool: Mutex::new(Vec::new()),
                filling: AtomicUsize::new(0),
                removing: Mutex::new(Vec::new()),
            }),
        };
        sandbox.reap().await?;
        sandbox.fill();
        Ok(sandbox)
    }

    /// The engine, the image and the containers, without failing when the engine is away.
    pub async fn status(image: &str) -> Status {
        let mut status = Status {
            endpoint: endpoint(),
            engine: None,
            error: None,
            image: image.to_owned(),
            image_present: false,
            containers: 0,
            containers_live: 0,
        };
        let docker = match engine().await {
            Ok(docker) => docker,
            Err(e) => {
                status.error = Some(e.to_string());
                return status;
            }
        };
        let answer = async {
            let version =
                docker.version().await.map_err(docker_err("reading the engine's version"))?;
            status.engine = version.version;
            status.image_present = image_present(&docker, image).await?;
            let ours = list_ours(&docker).await?;
            status.containers = ours.len();
            status.containers_live = ours.iter().filter(|(_, owner)| owner_alive(owner)).count();
            Ok::<_, Error>(())
        };
        if let Err(e) = answer.await {
            status.error = Some(e.to_string());
        }
        status
    }

    /// Containers ready now.
    pub fn ready(&self) -> usize {
        self.inner.pool.lock().expect("pool lock").len()
    }

    /// Waits until the pool holds its configured number of containers (or `within` passes).
    pub async fn warm(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        self.fill();
        while self.ready() < self.inner.config.pool_size {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Removes the sandbox containers of processes that are gone (agentctl killed, say);
    /// returns how many.
    pub async fn reap(&self) -> Result<usize> {
        let mut removed = 0;
        for (id, owner) in list_ours(&self.inner.docker).await? {
            if !owner_alive(&owner) {
                remove(&self.inner.docker, &id).await;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed sandbox containers left by processes that are gone");
        }
        Ok(removed)
    }

    /// Removes the pool's containers and waits for the removals under way. Containers in use
    /// are removed by their runs.
    pub async fn shutdown(&self) {
        let warm: Vec<Warm> = std::mem::take(&mut *self.inner.pool.lock().expect("pool lock"));
        futures::future::join_all(warm.iter().map(|w| remove(&self.inner.docker, &w.id))).await;
        let removing: Vec<_> =
            std::mem::take(&mut *self.inner.removing.lock().expect("removals lock"));
        futures::future::join_all(removing).await;
    }

    /// Removes a used container in the background.
    fn discard(&self, id: String) {
        let docker = self.inner.docker.clone();
        let task = tokio::spawn(async move { remove(&docker, &id).await });
        let mut removing = self.inner.removing.lock().expect("removals lock");
        removing.retain(|t| !t.is_finished());
        removing.push(task);
    }

    /// Runs the job in a container of its own and removes the container.
    pub async fn run(&self, job: &Job) -> Result<Outcome> {
        let id = self.take().await?;
        let outcome = self.execute(&id, job).await;
        self.discard(id);
        self.fill();
        outcome
    }

    /// Starts the job and keeps it running to exchange lines with: the code reads a line on
    /// stdin and answers with a line on stdout, for as long as the caller has lines.
    /// A stream gets a new container, not a pooled one: it may be used for up to half the
    /// container's lifetime (see [`Config::stream_lifetime`]).
    pub async fn open_stream(&self, job: &Job) -> Result<StreamSession> {
        let id = self.create().await?;
        let session = async {
            self.place(&id, job).await?;
            let exec = self.create_exec(&id, job.lang.command(WORK), true).await?;
            match self
                .inner
                .docker
                .start_exec(&exec, None)
                .await
                .map_err(docker_err("starting the script"))?
            {
                StartExecResults::Attached { output, input } => Ok((output, input)),
                StartExecResults::Detached => {
                    Err(Error::Other("the engine started the script detached".into()))
                }
            }
        };
        match session.await {
            Ok((output, input)) => Ok(StreamSession {
                sandbox: self.clone(),
                id: Some(id),
                output,
                input,
                buffer: Vec::new(),
                stderr: Vec::new(),
            }),
            Err(e) => {
                remove(&self.inner.docker, &id).await;
                Err(e)
            }
        }
    }

    /// A pooled container young enough to outlive the job, or a new one.
    async fn take(&self) -> Result<String> {
        let config = &self.inner.config;
        let fresh_enough =
            config.max_lifetime.saturating_sub(config.limits.timeout + Duration::from_secs(60));
        loop {
            let warm = self.inner.pool.lock().expect("pool lock").pop();
            match warm {
                Some(w) if w.born.elapsed() < fresh_enough => return Ok(w.id),
                Some(w) => remove(&self.inner.docker, &w.id).await,
                None => return self.create().await,
            }
        }
    }

    /// Tops the pool up in the background.
    fn fill(&self) {
        let want = self.inner.config.pool_size;
        loop {
            let have = self.ready() + self.inner.filling.load(Ordering::SeqCst);
            if have >= want {
                return;
            }
            self.inner.filling.fetch_add(1, Ordering::SeqCst);
            let sandbox = self.clone();
            tokio::spawn(async move {
                let made = sandbox.create().await;
                sandbox.inner.filling.fetch_sub(1, Ordering::SeqCst);
                match made {
                    Ok(id) => sandbox
                        .inner
                        .pool
                        .lock()
                        .expect("pool lock")
                        .push(Warm { id, born: Instant::now() }),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not start a sandbox container for the \
                            pool")
                    }
                }
            });
        }
    }

    /// Creates and starts one hardened container that only sleeps until it is used.
    async fn create(&self) -> Result<String> {
        let config = &self.inner.config;
        let limits = &config.limits;
        let memory = limits.memory as i64;
        let labels = HashMap::from([
            (LABEL.to_owned(), "1".to_owned()),
            (OWNER.to_owned(), self.inner.owner.clone()),
        ]);
        let body = ContainerCreateBody {
            image: Some(config.image.clone()),
            cmd: Some(vec!["sleep".into(), config.max_lifetime.as_secs().to_string()]),
            user: Some(USER.into()),
            working_dir: Some(WORK.into()),
            network_disabled: Some(true),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                memory: Some(memory),
                memory_swap: Some(memory),
                nano_cpus: Some((limits.cpus * 1e9) as i64),
                pids_limit: Some(limits.pids),
                readonly_rootfs: Some(true),
                tmpfs: Some(HashMap::from([(
                    WORK.to_owned(),
                    format!(
                        "rw,nosuid,nodev,noexec,size={},uid=10001,gid=10001,mode=0700",
                        limits.work_dir
                    ),
                )])),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                init: Some(true),
                auto_remove: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let docker = &self.inner.docker;
        let made = docker
            .create_container(None, body)
            .await
            .map_err(docker_err("creating a container"))?;
        if let Err(e) = docker.start_container(&made.id, None).await {
            remove(docker, &made.id).await;
            return Err(docker_err("starting a container")(e));
        }
        Ok(made.id)
    }

    async fn create_exec(&self, id: &str, cmd: Vec<String>, stdin: bool) -> Result<String> {
        let options = CreateExecOptions {
            cmd: Some(cmd),
            attach_stdin: Some(stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            working_dir: Some(WORK.to_owned()),
            user: Some(USER.to_owned()),
            ..Default::default()
        };
        Ok(self
            .inner
            .docker
            .create_exec(id, options)
            .await
            .map_err(docker_err("creating an exec"))?
            .id)
    }

    /// Runs a command to its end, feeding it `stdin`, keeping at most `cap` bytes of each
    /// output stream.
    async fn exec(&self, id: &str, cmd: Vec<String>, stdin: &[u8], cap: usize) -> Result<Captured> {
        self.exec_until(id, cmd, stdin, cap, None).await
    }

    /// [`Sandbox::exec`] that stops reading at `deadline`, keeping what came before it
    /// (`Captured::timed_out`); the caller kills what is still running.
    async fn exec_until(
        &self,
        id: &str,
        cmd: Vec<String>,
        stdin: &[u8],
        cap: usize,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Captured> {
        let exec = self.create_exec(id, cmd, true).await?;
        let (output, mut input) = match self
            .inner
            .docker
            .start_exec(&exec, None)
            .await
            .map_err(docker_err("starting an exec"))?
        {
            StartExecResults::Attached { output, input } => (output, input),
            StartExecResults::Detached => {
                return Err(Error::Other("the engine started an exec detached".into()))
            }
        };
        let stdin = stdin.to_vec();
        // The code may never read its stdin: write it beside reading the output, not before.
        let writer = tokio::spawn(async move {
            let _ = input.write_all(&stdin).await;
            let _ = input.shutdown().await;
        });
        let mut captured = Captured::new(cap);
        match deadline {
            Some(deadline) => {
                captured.timed_out =
                    tokio::time::timeout_at(deadline, captured.drain(output)).await.is_err()
            }
            None => captured.drain(output).await,
        }
        writer.abort();
        if captured.timed_out {
            return Ok(captured);
        }
        let inspected = self
            .inner
            .docker
            .inspect_exec(&exec)
            .await
            .map_err(docker_err("inspecting an exec"))?;
        captured.exit = inspected.exit_code;
        Ok(captured)
    }

    /// Puts the code and the input files into the container's work dir, with an empty `out/`.
    async fn place(&self, id: &str, job: &Job) -> Result<()> {
        let archive = input_archive(job)?;
        let placed = self
            .exec(
                id,
                vec!["tar".into(), "-x".into(), "-f".into(), "-".into(), "-C".into(), WORK.into()],
                &archive,
                64 << 10,
            )
            .await?;
        if placed.exit != Some(0) {
            return Err(Error::Other(format!(
                "could not place the input files (they may not fit the {} MiB work dir): {}",
                self.inner.config.limits.work_dir >> 20,
                String::from_utf8_lossy(&placed.stderr).trim()
            )));
        }
        Ok(())
    }

    async fn execute(&self, id: &str, job: &Job) -> Result<Outcome> {
        let limits = &self.inner.config.limits;
        self.place(id, job).await?;
        // The limit holds inside the container too, a little after agentctl's own (which
        // reports it): killed, agentctl cannot stop the code, and a loop would otherwise burn a
        // core until the container's lifetime ends.
        let mut cmd = vec![
            "timeout".to_owned(),
            "-s".into(),
            "KILL".into(),
            (limits.timeout.as_secs_f64().ceil() as u64 + 2).to_string(),
        ];
        cmd.extend(job.lang.command(WORK));
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + limits.timeout;
        let captured = self.exec_until(id, cmd, &job.stdin, limits.output, Some(deadline)).await?;
        let duration = started.elapsed();
        let mut limits_hit = Vec::new();
        if captured.timed_out {
            let _ = self
                .inner
                .docker
                .kill_container(id, Some(KillContainerOptionsBuilder::new().signal("KILL").build()))
                .await;
            limits_hit.push(Limit::Timeout);
        }
        let mut files = Vec::new();
        if limits_hit.is_empty() {
            // A SIGKILL (137) is the kernel's at the memory limit, or someone's stopping the
            // container; the engine may take a moment to show the container stopped.
            if captured.exit.is_none_or(|code| code == 137) && self.stopped(id).await {
                return Err(Error::ContainerGone { id: short(id) });
            }
            if captured.exit == Some(137) && self.memory_exhausted(id).await {
                limits_hit.push(Limit::Memory);
            }
            let (collected, complete) = match self.collect(id).await {
                Ok(collected) => collected,
                Err(_) if !self.running(id).await => {
                    return Err(Error::ContainerGone { id: short(id) })
                }
                Err(e) => return Err(e),
            };
            files = collected;
            if !complete {
                limits_hit.push(Limit::Files);
            }
        }
        let stdout_truncated = captured.stdout_bytes > captured.stdout.len() as u64;
        let stderr_truncated = captured.stderr_bytes > captured.stderr.len() as u64;
        if stdout_truncated || stderr_truncated {
            limits_hit.push(Limit::Output);
        }
        Ok(Outcome {
            exit_code: captured.exit,
            stdout: String::from_utf8_lossy(&captured.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&captured.stderr).into_owned(),
            stdout_bytes: captured.stdout_bytes,
            stderr_bytes: captured.stderr_bytes,
            stdout_truncated,
            stderr_truncated,
            files,
            duration,
            limits_hit,
        })
    }

    /// The files under `/work/out`, up to the files cap; false when some were left out.
    async fn collect(&self, id: &str) -> Result<(Vec<(String, Vec<u8>)>, bool)> {
        let cap = self.inner.config.limits.files;
        let cmd = vec![
            "tar".into(),
            "-c".into(),
            "-f".into(),
            "-".into(),
            "-C".into(),
            format!("{WORK}/out"),
            ".".into(),
        ];
        // Tar adds a header of 512 bytes a file and pads to 512; leave room for them.
        let tarred = self.exec(id, cmd, &[], cap + (cap / 8).max(64 << 10)).await?;
        if tarred.exit != Some(0) {
            // No out dir (the code removed it) or no process slot left: nothing to collect.
            return Ok((Vec::new(), tarred.stdout_bytes == 0));
        }
        let mut complete = tarred.stdout_bytes == tarred.stdout.len() as u64;
        let mut files = Vec::new();
        let mut total = 0usize;
        let mut archive = tar::Archive::new(tarred.stdout.as_slice());
        let Ok(entries) = archive.entries() else { return Ok((files, false)) };
        for entry in entries {
            let Ok(mut entry) = entry else {
                complete = false;
                break;
            };
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = entry
                .path()
                .map(|p| p.to_string_lossy().trim_start_matches("./").to_owned())
                .unwrap_or_default();
            let size = entry.header().size().unwrap_or(u64::MAX) as usize;
            if total + size > cap {
                complete = false;
                continue;
            }
            let mut bytes = Vec::with_capacity(size);
            if std::io::Read::read_to_end(&mut entry, &mut bytes).is_err() {
                complete = false;
                break;
            }
            total += bytes.len();
            files.push((name, bytes));
        }
        Ok((files, complete))
    }

    /// Whether the container stops within a short grace.
    async fn stopped(&self, id: &str) -> bool {
        for _ in 0..5 {
            if !self.running(id).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    async fn running(&self, id: &str) -> bool {
        match self.inner.docker.inspect_container(id, None).await {
            Ok(c) => c.state.and_then(|s| s.running).unwrap_or(false),
            Err(_) => false,
        }
    }

    /// Whether the container's memory use reached its limit (a SIGKILL then is the kernel's).
    async fn memory_exhausted(&self, id: &str) -> bool {
        let options = StatsOptionsBuilder::new().stream(false).one_shot(true).build();
        let mut stats = self.inner.docker.stats(id, Some(options));
        let Some(Ok(stats)) = stats.next().await else { return false };
        let Some(memory) = stats.memory_stats else { return false };
        let limit = memory.limit.unwrap_or(self.inner.config.limits.memory);
        // cgroup v1 reports the peak; v2 reports an OOM kill count among the stats.
        memory.max_usage.is_some_and(|peak| peak + (1 << 20) >= limit)
            || memory.stats.as_ref().and_then(|s| s.get("oom_kill")).is_some_and(|n| *n > 0)
    }
}

/// A running script exchanging lines; see [`Sandbox::open_stream`]. Closing (or dropping)
/// removes its container.
pub struct StreamSession {
    sandbox: Sandbox,
    id: Option<String>,
    output: Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>,
    input: Pin<Box<dyn AsyncWrite + Send>>,
    /// Stdout read past the last line returned.
    buffer: Vec<u8>,
    /// The script's stderr, the last 64 KiB of it.
    stderr: Vec<u8>,
}

impl std::fmt::Debug for StreamSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSession").field("id", &self.id).finish()
    }
}

impl StreamSession {
    /// Sends one line (without its newline) and waits for the script's one-line answer, for at
    /// most the timeout of the sandbox's limits.
    pub async fn exchange(&mut self, line: &[u8]) -> Result<Vec<u8>> {
        let timeout = self.sandbox.inner.config.limits.timeout;
        let cap = self.sandbox.inner.config.limits.output;
        match tokio::time::timeout(timeout, self.round_trip(line, cap)).await {
            Ok(answer) => answer,
            Err(_) => Err(Error::Other(format!(
                "the script did not answer within {} s",
                timeout.as_secs()
            ))),
        }
    }

    async fn round_trip(&mut self, line: &[u8], cap: usize) -> Result<Vec<u8>> {
        let written = async {
            self.input.write_all(line).await?;
            self.input.write_all(b"\n").await?;
            self.input.flush().await
        };
        if written.await.is_err() {
            return Err(self.ended().await);
        }
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let mut answer: Vec<u8> = self.buffer.drain(..=end).collect();
                answer.pop();
                return Ok(answer);
            }
            if self.buffer.len() > cap {
                return Err(Error::Other(format!(
                    "the script's answer is longer than {cap} bytes"
                )));
            }
            match self.output.next().await {
                Some(Ok(LogOutput::StdOut { message })) => self.buffer.extend_from_slice(&message),
                Some(Ok(LogOutput::StdErr { message })) => {
                    self.stderr.extend_from_slice(&message);
                    let excess = self.stderr.len().saturating_sub(64 << 10);
                    self.stderr.drain(..excess);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Err(self.ended().await),
            }
        }
    }

    /// The error for a script that stopped answering: its exit and the end of its stderr.
    async fn ended(&mut self) -> Error {
        while let Some(Ok(frame)) = self.output.next().await {
            if let LogOutput::StdErr { message } = frame {
                self.stderr.extend_from_slice(&message);
            }
        }
        let stderr = String::from_utf8_lossy(&self.stderr);
        let last = stderr.trim().lines().last().unwrap_or("").to_owned();
        match &self.id {
            Some(id) if !self.sandbox.running(id).await => Error::ContainerGone { id: short(id) },
            _ if last.is_empty() => Error::Other("the script exited without answering".into()),
            _ => Error::Other(format!("the script exited: {last}")),
        }
    }

    pub async fn close(mut self) {
        if let Some(id) = self.id.take() {
            remove(&self.sandbox.inner.docker, &id).await;
        }
    }
}

impl Drop for StreamSession {
    fn drop(&mut self) {
        if let (Some(id), Ok(_)) = (self.id.take(), tokio::runtime::Handle::try_current()) {
            self.sandbox.discard(id);
        }
    }
}

/// One exec's output, capped.
struct Captured {
    cap: usize,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    stdout_bytes: u64,
    stderr_bytes: u64,
    exit: Option<i64>,
    timed_out: bool,
}

impl Captured {
    fn new(cap: usize) -> Captured {
        Captured {
            cap,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            exit: None,
            timed_out: false,
        }
    }

    async fn drain(
        &mut self,
        mut output: impl Stream<Item = Result<LogOutput, bollard::errors::Error>> + Unpin,
    ) {
        while let Some(Ok(frame)) = output.next().await {
            let (kept, count, message) = match frame {
                LogOutput::StdOut { message } => {
                    (&mut self.stdout, &mut self.stdout_bytes, message)
                }
                LogOutput::StdErr { message } => {
                    (&mut self.stderr, &mut self.stderr_bytes, message)
                }
                _ => continue,
            };
            *count += message.len() as u64;
            let room = self.cap.saturating_sub(kept.len());
            kept.extend_from_slice(&message[..room.min(message.len())]);
        }
    }
}

/// A tar of the code, the input files and an empty `out/`, owned by the sandbox user.
fn input_archive(job: &Job) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |name: &str, bytes: &[u8], kind: tar::EntryType| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(bytes.len() as u64);
        header.set_mode(if kind.is_dir() { 0o700 } else { 0o600 });
        header.set_uid(10001);
        header.set_gid(10001);
        header.set_mtime(0);
        builder
            .append_data(&mut header, name, bytes)
            .map_err(|e| Error::Input { name: name.to_owned(), reason: e.to_string() })
    };
    add("out/", &[], tar::EntryType::Directory)?;
    add(job.lang.file(), job.code.as_bytes(), tar::EntryType::Regular)?;
    for (name, bytes) in &job.files {
        check_name(name)?;
        add(name, bytes, tar::EntryType::Regular)?;
    }
    builder.into_inner().map_err(|e| Error::Other(format!("building the input archive: {e}")))
}

/// An input file's name is a plain relative path inside the work dir, and not the code's.
fn check_name(name: &str) -> Result<()> {
    let bad = |reason: &str| Err(Error::Input { name: name.to_owned(), reason: reason.to_owned() });
    let path = std::path::Path::new(name);
    if name.is_empty() || path.is_absolute() {
        return bad("must be a relative path inside the work dir");
    }
    if path.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        return bad("must not contain `..` or `.`");
    }
    if name == "main.py" || name == "main.sh" || name.starts_with("out/") {
        return bad("the name is the sandbox's own");
    }
    Ok(())
}

fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

/// Removes a container whatever its state; gone already is fine.
async fn remove(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
    match docker.remove_container(id, Some(options)).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404 | 409, ..
        }) => {}
        Err(e) => {
            tracing::warn!(container = %short(id), error = %e, "could not remove a sandbox container")
        }
    }
}

/// Our containers (running or not) and their owners.
async fn list_ours(docker: &Docker) -> Result<Vec<(String, String)>> {
    let filters = HashMap::from([("label", vec![LABEL])]);
    let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
    let containers = docker
        .list_containers(Some(options))
        .await
        .map_err(docker_err("listing sandbox containers"))?;
    Ok(containers
        .into_iter()
        .filter_map(|c| {
            let owner = c.labels.as_ref().and_then(|l| l.get(OWNER)).cloned().unwrap_or_default();
            Some((c.id?, owner))
        })
        .collect())
}

/// `host/pid/start time`: a process is the owner only while that pid has that start time.
fn owner_label() -> String {
    let pid = std::process::id();
    format!("{}/{pid}/{}", hostname(), start_time(pid).unwrap_or_default())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    stat.rsplit_once(')')?.1.split_whitespace().nth(19).map(str::to_owned)
}

/// Whether the owner is alive. Owners on other hosts are presumed alive: their containers
/// remove themselves at the end of their lifetime.
fn owner_alive(owner: &str) -> bool {
    let mut parts = owner.splitn(3, '/');
    let (Some(host), Some(pid), Some(start)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    if host != hostname() {
        return true;
    }
    pid.parse::<u32>().ok().and_then(start_time).is_some_and(|s| s == start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Lang;

    #[test]
    fn input_names_stay_inside_the_work_dir() {
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./x", "main.py", "out/x"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["rows.json", "data/rows.csv"] {
            check_name(good).unwrap();
        }
    }

    #[test]
    fn the_archive_holds_the_code_the_files_and_an_out_dir() {
        let mut job = Job::new(Lang::Python, "print(1)");
        job.files.push(("rows.json".into(), b"[1]".to_vec()));
        let bytes = input_archive(&job).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let names: Vec<(String, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().to_string_lossy().into_owned(), e.header().uid().unwrap())
            })
            .collect();
        assert_eq!(
            names,
            [("out/".into(), 10001), ("main.py".into(), 10001), ("rows.json".into(), 10001)]
        );
    }

    #[test]
    fn the_owner_is_this_process_while_it_lives() {
        let me = owner_label();
        assert!(owner_alive(&me));
        let (host, rest) = me.split_once('/').unwrap();
        let (pid, _) = rest.split_once('/').unwrap();
        assert!(!owner_alive(&format!("{host}/{pid}/1")), "another start time is another process");
        assert!(!owner_alive("garbage"));
        assert!(
            owner_alive(&format!("another-host/{pid}/1")),
            "another host's owner is presumed alive"
        );
    }
}
