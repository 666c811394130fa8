//! The sandbox launcher's work on Docker: create the container with this run's
//! labels and the spec's limits, wait for it (killing a runaway), collect its output
//! and remove it.

use std::sync::Arc;
use std::time::Instant;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, LogsOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt as _;

use super::sweep::remove_container;
use super::{block_on, Containers};
use super::{SandboxOutput, SandboxSpec};
use crate::error::SandboxError;

/// Runs `spec` to completion, blocking the calling thread.
pub(crate) fn run_sandbox(
    containers: &Containers,
    spec: &SandboxSpec,
) -> Result<SandboxOutput, SandboxError> {
    block_on(containers.runtime(), run(containers, spec))
}

/// Runs `spec` to completion on the containers' runtime, from async code.
pub(crate) async fn run_sandbox_async(
    containers: Arc<Containers>,
    spec: SandboxSpec,
) -> Result<SandboxOutput, SandboxError> {
    let runtime = containers.runtime().clone();
    runtime
        .spawn(async move { run(&containers, &spec).await })
        .await
        .unwrap_or_else(|e| Err(SandboxError::Task(Box::new(e))))
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
    let mut labels = containers.identity().container_labels();
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
