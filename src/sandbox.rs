//! The sandbox launcher: run a command in a labelled, resource-limited container,
//! collect its exit code and output, and remove it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, LogsOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt as _;

use crate::containers::labels::ownership_labels;
use crate::containers::sweep::remove_container;
use crate::containers::{block_on, Containers};
use crate::error::SandboxError;

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
/// let spec = loopwatch::SandboxSpec::new("loopwatch-sandbox:1", ["sh", "-c", "echo hi"])
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

/// Starts sandbox containers for the loop; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Sandbox {
    pub(crate) containers: Arc<Containers>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Runs the spec to completion, blocking the calling thread (not the monitor).
    pub fn run(&self, spec: &SandboxSpec) -> Result<SandboxOutput, SandboxError> {
        block_on(self.containers.runtime(), run(&self.containers, spec))
    }

    /// Runs the spec to completion from async code.
    pub async fn run_async(&self, spec: &SandboxSpec) -> Result<SandboxOutput, SandboxError> {
        let containers = Arc::clone(&self.containers);
        let spec = spec.clone();
        self.containers
            .runtime()
            .spawn(async move { run(&containers, &spec).await })
            .await
            .unwrap_or_else(|e| Err(SandboxError::Task(Box::new(e))))
    }
}

fn docker_step(step: &'static str) -> impl Fn(bollard::errors::Error) -> SandboxError {
    move |source| SandboxError::Docker {
        step,
        source: Box::new(source),
    }
}

async fn collect_logs(docker: &Docker, id: &str) -> (String, String) {
    let mut logs = docker.logs(
        id,
        Some(LogsOptions {
            stdout: true,
            stderr: true,
            ..Default::default()
        }),
    );
    let (mut stdout, mut stderr) = (String::new(), String::new());
    while let Some(Ok(chunk)) = logs.next().await {
        match chunk {
            bollard::container::LogOutput::StdErr { message } => {
                stderr.push_str(&String::from_utf8_lossy(&message))
            }
            other => stdout.push_str(&String::from_utf8_lossy(&other.into_bytes())),
        }
    }
    (stdout, stderr)
}

async fn run(containers: &Containers, spec: &SandboxSpec) -> Result<SandboxOutput, SandboxError> {
    let docker = containers
        .client()
        .map_err(|e| SandboxError::NoDocker(e as Arc<dyn std::error::Error + Send + Sync>))?;
    let name = containers.next_name();
    let mut labels = ownership_labels(containers.identity());
    labels.extend(spec.labels.clone());
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: Some(spec.command.clone()),
        env: Some(spec.env.clone()),
        labels: Some(labels),
        network_disabled: Some(!spec.network),
        host_config: Some(HostConfig {
            memory: Some(spec.memory_bytes),
            nano_cpus: Some((spec.cpus * 1e9) as i64),
            pids_limit: Some(spec.pids),
            network_mode: Some(if spec.network { "bridge" } else { "none" }.to_string()),
            binds: (!spec.binds.is_empty()).then(|| spec.binds.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            }),
            body,
        )
        .await
        .map_err(|e| {
            containers.mark_down_if_unreachable(&e);
            docker_step("create")(e)
        })?;
    let id = created.id;
    containers.track(&id);
    let outcome = async {
        docker.start_container(&id, None).await.map_err(docker_step("start"))?;
        let started = Instant::now();
        let mut wait = docker.wait_container(
            &id,
            Some(WaitContainerOptions {
                condition: "not-running".into(),
            }),
        );
        let (exit_code, timed_out) = match tokio::time::timeout(spec.timeout, wait.next()).await {
            Ok(Some(Ok(response))) => (response.status_code, false),
            // A non-zero exit arrives as an error carrying the code.
            Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => (code, false),
            Ok(Some(Err(e))) => return Err(docker_step("wait")(e)),
            Ok(None) => return Err(SandboxError::NoExitCode),
            Err(_) => {
                tracing::warn!(container = %name, timeout = ?spec.timeout, "sandbox container exceeded its timeout; killing it");
                let _ = docker
                    .kill_container(&id, Some(KillContainerOptions { signal: "SIGKILL".into() }))
                    .await;
                (137, true)
            }
        };
        let duration = started.elapsed();
        let (stdout, stderr) = collect_logs(&docker, &id).await;
        Ok(SandboxOutput {
            name: name.clone(),
            exit_code,
            stdout,
            stderr,
            duration,
            timed_out,
        })
    }
    .await;
    match remove_container(&docker, &id).await {
        Ok(()) => containers.own_removed(&id),
        Err(reason) => {
            tracing::error!(container = %name, error = %reason, "could not remove a sandbox container; it counts as an orphan and is retried by every sweep");
            containers.own_removal_failed(&id, &reason);
        }
    }
    outcome
}
