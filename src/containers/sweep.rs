//! Orphan sweeps and safe container removal.

use std::collections::HashMap;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use bollard::Docker;

use super::labels::{classify, Ownership};
use crate::owner::{LiveProcesses, Owner, LABEL_MANAGED};

use super::ContainerSweepReport;
use crate::records::RunIdentity;

/// Longest wait for any one Docker request, so a stuck daemon cannot hang cleanup.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts at a removal Docker reports as already in progress (HTTP 409).
const REMOVAL_ATTEMPTS: u32 = 6;

/// A sweep's report, with the owners of the live loops' containers it left alone (by
/// container), so that their deaths can be noticed without asking Docker.
pub(crate) struct Swept {
    pub(crate) report: ContainerSweepReport,
    pub(crate) live_owners: Vec<(String, Owner)>,
}

fn status_of(error: &DockerError) -> Option<u16> {
    match error {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Kills and removes a container in one forced removal (its owner is gone or done
/// with it, so no graceful stop is owed, and none can get stuck). 404 counts as done;
/// 409 "removal in progress" is retried; every request has a timeout.
pub(crate) async fn remove_container(docker: &Docker, id: &str) -> Result<(), String> {
    let mut backoff = Duration::from_millis(200);
    for _ in 0..REMOVAL_ATTEMPTS {
        let remove = docker.remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                link: false,
            }),
        );
        match tokio::time::timeout(REQUEST_TIMEOUT, remove).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) if status_of(&e) == Some(404) => return Ok(()),
            Ok(Err(e)) if status_of(&e) == Some(409) && e.to_string().contains("in progress") => {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("no answer from Docker within {REQUEST_TIMEOUT:?}")),
        }
    }
    Err("removal still in progress after retries".into())
}

/// Lists loopwatch-managed containers (running or not) with their labels and
/// creation time (seconds since the epoch).
pub(crate) async fn managed_containers(
    docker: &Docker,
    extra_label: Option<String>,
    running_only: bool,
) -> Result<Vec<(String, String, HashMap<String, String>, i64)>, DockerError> {
    let mut labels = vec![format!("{LABEL_MANAGED}=true")];
    labels.extend(extra_label);
    let mut filters = HashMap::from([("label".to_string(), labels)]);
    if running_only {
        filters.insert("status".to_string(), vec!["running".to_string()]);
    }
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    let list = tokio::time::timeout(REQUEST_TIMEOUT, docker.list_containers(Some(options)))
        .await
        .map_err(|_| DockerError::RequestTimeoutError)??;
    Ok(list
        .into_iter()
        .filter_map(|c| {
            let id = c.id?;
            let name = c
                .names
                .and_then(|n| n.into_iter().next())
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_else(|| id.chars().take(12).collect());
            Some((
                id,
                name,
                c.labels.unwrap_or_default(),
                c.created.unwrap_or(0),
            ))
        })
        .collect())
}

/// Finds the orphans of dead loops on this host and removes them (unless `dry_run`).
///
/// Only managed containers whose owner process is gone are touched; never:
/// unlabelled containers, containers of live loops (this one included), containers
/// of other hosts, and containers whose labels name no owner.
///
/// A dead owner (its pid gone, or reused by a process started at another time) is
/// final, so its containers go whenever they were created: a crashed loop restarted
/// within the same second loses all of its predecessor's orphans at the new start.
/// No creation-time rule is needed to protect a live loop: its containers are judged
/// by their owner's pid and start time, which a container created while the sweep runs
/// names just as well.
pub(crate) async fn remove_orphans(
    docker: &Docker,
    us: Option<&RunIdentity>,
    hostname: &str,
    dry_run: bool,
) -> Result<Swept, DockerError> {
    let containers = managed_containers(docker, None, false).await?;
    let mut report = ContainerSweepReport::new(dry_run);
    let mut live_owners = Vec::new();
    let Some(mut processes) = LiveProcesses::new() else {
        tracing::error!("cannot read the process table; no container is treated as an orphan");
        report.left_alone = containers.len();
        return Ok(Swept {
            report,
            live_owners,
        });
    };
    for (id, _name, labels, _created) in containers {
        match classify(&labels, us, hostname, &mut processes) {
            Ownership::Orphan => report.orphans.push(id),
            Ownership::Ours | Ownership::Unmanaged => {}
            Ownership::LiveOwner => {
                report.left_alone += 1;
                if let Some(owner) = Owner::from_labels(&labels) {
                    live_owners.push((id, owner));
                }
            }
            _ => report.left_alone += 1,
        }
    }
    tracing::info!(
        orphans = report.orphans.len(),
        left_alone = report.left_alone,
        dry_run,
        "found {} orphaned containers from previous runs",
        report.orphans.len()
    );
    if dry_run {
        return Ok(Swept {
            report,
            live_owners,
        });
    }
    let removals = report
        .orphans
        .iter()
        .map(|id| async move { (id.clone(), remove_container(docker, id).await) });
    for (id, outcome) in futures_util::future::join_all(removals).await {
        match outcome {
            Ok(()) => {
                tracing::info!(container = %id, "Cleaned up orphaned container {id}");
                report.cleaned.push(id);
            }
            Err(reason) => {
                // Logged by the caller, which knows whether this one failed before.
                report.failed.push((id, reason));
            }
        }
    }
    Ok(Swept {
        report,
        live_owners,
    })
}
