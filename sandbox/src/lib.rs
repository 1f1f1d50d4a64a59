//! Runs untrusted code (custom transforms, ad-hoc profiling scripts) in a hardened Docker
//! container driven by bollard. Knows nothing about agents or LLMs.
//!
//! Every execution gets a container of its own, used once and removed: no network, a memory
//! limit with no swap, a CPU quota, a pids limit, a read-only root filesystem with a small tmpfs
//! work dir (`/work`), an unprivileged user, no capabilities, `no-new-privileges`, and a
//! wall-clock timeout after which the container is killed. Containers are started ahead of need
//! (the warm pool) running only `sleep`; the code runs in one through `exec`. Each container is
//! labelled with its owner process; leftovers of an owner that is gone are removed by the next
//! [`Sandbox::connect`], and every container removes itself after [`Config::max_lifetime`].

mod engine;
pub mod image;

use std::time::Duration;

pub use engine::{Sandbox, Status, StreamSession};

/// Where a Docker engine is expected when `DOCKER_HOST` is not set.
pub const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

/// The resource limits of one execution; each is on by default.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Memory in bytes, with no swap on top.
    pub memory: u64,
    /// CPUs (1.0 is one core's worth of time).
    pub cpus: f64,
    /// Processes and threads at once.
    pub pids: i64,
    /// Wall clock from the start of the code to its kill.
    pub timeout: Duration,
    /// Bytes kept of stdout, and again of stderr; the rest is counted and dropped.
    pub output: usize,
    /// Bytes kept of the files written to `/work/out`, all together.
    pub files: usize,
    /// Size of the tmpfs work dir, in bytes.
    pub work_dir: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory: 256 << 20,
            cpus: 1.0,
            pids: 64,
            timeout: Duration::from_secs(10),
            output: 1 << 20,
            files: 8 << 20,
            work_dir: 64 << 20,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    /// The image to run, built by [`image::build`].
    pub image: String,
    pub limits: Limits,
    /// Containers kept started and idle, ready for the next execution.
    pub pool_size: usize,
    /// A container removes itself after this long, whatever becomes of agentctl.
    pub max_lifetime: Duration,
}

impl Config {
    /// How long a stream may be used before its container nears the end of its lifetime: the
    /// caller opens a new one after that.
    pub fn stream_lifetime(&self) -> Duration {
        self.max_lifetime / 2
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            image: image::tag(),
            limits: Limits::default(),
            pool_size: 2,
            max_lifetime: Duration::from_secs(3600),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Python,
    Sh,
}

impl Lang {
    /// The code's file name in the work dir.
    fn file(self) -> &'static str {
        match self {
            Lang::Python => "main.py",
            Lang::Sh => "main.sh",
        }
    }

    /// The command that runs the code once it is in `work`.
    fn command(self, work: &str) -> Vec<String> {
        let interpreter = match self {
            Lang::Python => "python3",
            Lang::Sh => "sh",
        };
        vec![interpreter.to_owned(), format!("{work}/{}", self.file())]
    }
}

impl std::str::FromStr for Lang {
    type Err = Error;
    fn from_str(s: &str) -> Result<Lang> {
        match s {
            "python" | "py" | "python3" => Ok(Lang::Python),
            "sh" | "shell" => Ok(Lang::Sh),
            other => Err(Error::Lang(other.to_owned())),
        }
    }
}

/// What to run: the code, bytes for its stdin, and files placed in `/work` beside it.
#[derive(Clone, Debug)]
pub struct Job {
    pub lang: Lang,
    pub code: String,
    pub stdin: Vec<u8>,
    pub files: Vec<(String, Vec<u8>)>,
}

impl Job {
    pub fn new(lang: Lang, code: impl Into<String>) -> Job {
        Job { lang, code: code.into(), stdin: Vec::new(), files: Vec::new() }
    }
}

/// A limit an execution ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// Killed at the wall-clock timeout.
    Timeout,
    /// Killed by the kernel for using all its memory.
    Memory,
    /// Wrote more than [`Limits::output`] to stdout or stderr (the rest was dropped).
    Output,
    /// Wrote more than [`Limits::files`] to `/work/out` (files past the cap were dropped).
    Files,
}

/// What an execution did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Outcome {
    /// The exit code; `None` when the code was killed at the timeout.
    pub exit_code: Option<i64>,
    pub stdout: String,
    pub stderr: String,
    /// Bytes written to stdout and stderr, including what was dropped past the cap.
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Files the code wrote to `/work/out`, by name relative to it.
    pub files: Vec<(String, Vec<u8>)>,
    #[serde(serialize_with = "millis")]
    pub duration: Duration,
    pub limits_hit: Vec<Limit>,
}

impl Outcome {
    /// Exited by itself with code 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Docker engine not reachable at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("sandbox image {image} is not built: run `agentctl sandbox build`")]
    ImageMissing { image: String },
    #[error("sandbox container {id} was stopped from outside during the run")]
    ContainerGone { id: String },
    #[error("sandbox input file `{name}`: {reason}")]
    Input { name: String, reason: String },
    #[error("sandbox: {what}: {source}")]
    Docker {
        what: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("unknown language `{0}`: python or sh")]
    Lang(String),
    #[error("sandbox: {0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn docker_err(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Error {
    let what = what.into();
    move |source| Error::Docker { what, source }
}
