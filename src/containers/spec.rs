//! What a sandbox run is given and what it gives back: the container to start (its
//! image, command, limits and timeout) and its exit code and output. The sandbox
//! launcher (`loopwatch::sandbox`) hands these to the containers feature, which runs
//! them on Docker, or, built without the `docker` feature, refuses them.

use std::collections::HashMap;
use std::time::Duration;

/// Default memory limit: 256 MiB.
const DEFAULT_MEMORY_BYTES: i64 = 256 << 20;
/// Default limit on processes in the container.
const DEFAULT_PIDS: i64 = 64;
/// Default time before a runaway container is killed.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// What to run in a sandbox container: [`SandboxSpec::new`] gives the defaults (256 MiB,
/// one core, 64 processes, no network, killed after 300 s); the `with_*` methods
/// change them.
///
/// ```
/// use std::time::Duration;
/// let spec = loopwatch::sandbox::SandboxSpec::new("loopwatch-sandbox:1", ["sh", "-c", "echo hi"])
///     .with_memory_bytes(64 << 20)
///     .with_cpus(0.5)
///     .with_timeout(Duration::from_secs(30))
///     .bind_read_only("/usr/lib", "/usr/lib");
/// assert_eq!(spec.pids, 64);
/// assert_eq!(spec.binds, ["/usr/lib:/usr/lib:ro"]);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SandboxSpec {
    /// The image to run.
    pub image: String,
    /// The command and its arguments.
    pub command: Vec<String>,
    /// Environment variables, each `KEY=value`.
    pub env: Vec<String>,
    /// Extra labels; loopwatch's ownership labels are always added.
    pub labels: HashMap<String, String>,
    /// Memory limit in bytes.
    pub memory_bytes: i64,
    /// CPU limit in cores (0.5 = half a core).
    pub cpus: f64,
    /// Limit on processes.
    pub pids: i64,
    /// Whether the container gets the default bridge network.
    pub network: bool,
    /// Time before the container is killed as a runaway.
    pub timeout: Duration,
    /// Bind mounts in Docker's `host:container[:ro]` form.
    pub binds: Vec<String>,
}

impl SandboxSpec {
    /// Runs `command` in `image`, with no network and the default limits.
    pub fn new<I, S>(image: impl Into<String>, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        SandboxSpec {
            image: image.into(),
            command: command.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            labels: HashMap::new(),
            memory_bytes: DEFAULT_MEMORY_BYTES,
            cpus: 1.0,
            pids: DEFAULT_PIDS,
            network: false,
            timeout: DEFAULT_TIMEOUT,
            binds: Vec::new(),
        }
    }

    /// Adds an environment variable.
    pub fn with_env(mut self, key: &str, value: impl std::fmt::Display) -> Self {
        self.env.push(format!("{key}={value}"));
        self
    }

    /// Adds a label (loopwatch's ownership labels are added anyway).
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Sets the memory limit in bytes.
    pub fn with_memory_bytes(mut self, bytes: i64) -> Self {
        self.memory_bytes = bytes;
        self
    }

    /// Sets the CPU limit in cores.
    pub fn with_cpus(mut self, cpus: f64) -> Self {
        self.cpus = cpus;
        self
    }

    /// Sets the limit on processes.
    pub fn with_pids(mut self, pids: i64) -> Self {
        self.pids = pids;
        self
    }

    /// Gives the container the default bridge network (none by default).
    pub fn with_network(mut self, on: bool) -> Self {
        self.network = on;
        self
    }

    /// Sets the time before the container is killed as a runaway.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Mounts a host path into the container, read-only (code or data to run on).
    pub fn bind_read_only(mut self, host: impl AsRef<std::path::Path>, container: &str) -> Self {
        self.binds
            .push(format!("{}:{container}:ro", host.as_ref().display()));
        self
    }
}

/// What a sandbox run produced.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SandboxOutput {
    /// The container's name (the `name` label of its metrics).
    pub name: String,
    /// Exit code of the command (137 when killed).
    pub exit_code: i64,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// Wall-clock time from start to exit.
    pub duration: Duration,
    /// Whether it was killed for exceeding its timeout.
    pub timed_out: bool,
}
