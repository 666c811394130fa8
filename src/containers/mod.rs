//! Containers of this run on a real Docker Engine, through bollard: ownership labels,
//! the stats sampler, orphan sweeps and shutdown verification. The sandbox launcher
//! starts its containers through the same handle.
//!
//! Docker being absent or unreachable degrades only this feature:
//! `loopwatch_docker_up` reads 0, one log line says so, and everything recovers on
//! its own when the daemon answers again.

mod cgroup;
mod common;
mod labels;
mod sandbox;
mod spec;
mod stats;
mod sweep;
mod tasks;

pub use common::ContainerSweepReport;
pub(crate) use common::{
    CleanupCounters, ContainerReading, ContainerSample, ContainerShutdownReport, ContainerStat,
    Reports, StatsSource,
};
pub(crate) use sandbox::{run_sandbox, run_sandbox_async};
pub use spec::{SandboxOutput, SandboxSpec};

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::owner::{LiveProcesses, Owner, LABEL_RUN_ID};
use crate::records::RunIdentity;
use bollard::Docker;
use cgroup::CgroupStats;
use stats::StatsSampler;

/// Period of the safety-net re-list beside the events stream.
const RELIST_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// A running container of this run, and how its numbers are read.
#[derive(Debug)]
struct Tracked {
    name: String,
    /// Its cgroup files; `None` when its numbers come from the Docker stats API.
    cgroup: Option<CgroupStats>,
}

/// The containers feature's state, shared by the sampler, the sweeps and the sandbox.
pub(crate) struct Containers {
    /// The client, or why none could be configured.
    client: Result<Docker, Arc<bollard::errors::Error>>,
    identity: RunIdentity,
    runtime: tokio::runtime::Handle,
    up: AtomicBool,
    /// Whether a "down" has been logged since Docker was last reachable.
    down_logged: AtomicBool,
    created: Mutex<HashSet<String>>,
    sequence: AtomicU64,
    /// This run's running containers, kept by the events stream and re-lists.
    tracked: Mutex<std::collections::HashMap<String, Tracked>>,
    /// Forced Docker stats API (by `LOOPWATCH_CONTAINER_STATS=docker_api`, or after a
    /// container whose cgroup could not be read).
    use_docker_api: AtomicBool,
    /// Whether the cgroup source was insisted on (`LOOPWATCH_CONTAINER_STATS=cgroup`).
    cgroup_only: bool,
    stats: Mutex<StatsSampler>,
    /// Held for a whole sweep, and by shutdown verification, so shutdown waits for a
    /// sweep in flight instead of cutting it short.
    sweeping: Arc<tokio::sync::Mutex<()>>,
    last_sweep: Mutex<Option<ContainerSweepReport>>,
    shutdown: Mutex<Option<ContainerShutdownReport>>,
    counters: CleanupCounters,
    cleanup_failures_seen: AtomicU64,
    /// The owners of other live loops' containers on this host, by container: when
    /// one of them dies its containers are orphans, noticed from the process table
    /// without asking Docker.
    foreign_owners: Mutex<std::collections::HashMap<String, Owner>>,
    /// Failed removal attempts per container (an orphan, or one of this run's), so
    /// that each is counted in `loopwatch_container_cleanup_failures_total` once and
    /// logged at its 1st, 2nd, 4th, 8th … attempt rather than at every sweep.
    failed_removals: Mutex<std::collections::HashMap<String, u64>>,
    /// This run's own containers whose removal failed: orphans too,
    /// retried by every sweep until they go.
    stuck: Mutex<HashSet<String>>,
    /// Wakes the sweeper early: one of this run's containers could not be removed.
    sweep_soon: tokio::sync::Notify,
}

impl std::fmt::Debug for Containers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containers")
            .field("run_id", &self.identity.run_id)
            .finish_non_exhaustive()
    }
}

/// A Docker client for the local daemon (no request is made yet).
pub(crate) fn connect() -> Result<Docker, bollard::errors::Error> {
    Docker::connect_with_local_defaults()
        .map(|docker| docker.with_timeout(std::time::Duration::from_secs(30)))
}

/// Runs a future to completion on `runtime` from any thread, inside or outside a
/// runtime (inside one, a helper thread does the waiting, as blocking is not allowed).
pub(crate) fn block_on<F>(runtime: &tokio::runtime::Handle, future: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(future))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    } else {
        runtime.block_on(future)
    }
}

impl Containers {
    /// Connects lazily (no request is made) on behalf of the run `identity`.
    pub(crate) fn new(
        identity: RunIdentity,
        runtime: tokio::runtime::Handle,
        counters: CleanupCounters,
        source: crate::config::ContainerStats,
    ) -> Self {
        let client = connect().map_err(|e| {
            tracing::error!(error = %e, "no Docker client can be configured; container features are down");
            Arc::new(e)
        });
        Containers {
            client,
            identity,
            runtime,
            up: AtomicBool::new(false),
            down_logged: AtomicBool::new(false),
            created: Mutex::new(HashSet::new()),
            sequence: AtomicU64::new(0),
            tracked: Mutex::default(),
            use_docker_api: AtomicBool::new(source == crate::config::ContainerStats::DockerApi),
            cgroup_only: source == crate::config::ContainerStats::CgroupOnly,
            stats: Mutex::new(StatsSampler::default()),
            sweeping: Arc::new(tokio::sync::Mutex::new(())),
            last_sweep: Mutex::new(None),
            shutdown: Mutex::new(None),
            counters,
            cleanup_failures_seen: AtomicU64::new(0),
            failed_removals: Mutex::default(),
            stuck: Mutex::default(),
            sweep_soon: tokio::sync::Notify::new(),
            foreign_owners: Mutex::default(),
        }
    }

    /// The run these containers belong to.
    pub(crate) fn identity(&self) -> &RunIdentity {
        &self.identity
    }

    /// The runtime container work runs on.
    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// The Docker client, or why none could be configured.
    pub(crate) fn client(&self) -> Result<Docker, Arc<bollard::errors::Error>> {
        self.client.clone()
    }

    /// Whether the last request to Docker succeeded.
    fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) && self.down_logged.swap(false, Ordering::Relaxed)
        {
            tracing::info!("Docker is reachable again; container metrics and cleanup resumed");
        }
    }

    fn mark_down(&self, error: &dyn std::fmt::Display) {
        self.up.store(false, Ordering::Relaxed);
        if !self.down_logged.swap(true, Ordering::Relaxed) {
            tracing::error!(error = %error, "Docker is unreachable; container metrics and cleanup are paused until it answers (loopwatch_docker_up 0)");
        }
    }

    /// Marks Docker down when an error shows it cannot be reached at all.
    pub(crate) fn mark_down_if_unreachable(&self, error: &bollard::errors::Error) {
        if !matches!(
            error,
            bollard::errors::Error::DockerResponseServerError { .. }
        ) {
            self.mark_down(error);
        }
    }

    /// A fresh container name for this run: `loopwatch-<pid>-<start time>-<n>`.
    pub(crate) fn next_name(&self) -> String {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}-{n}", self.identity.owner.file_stem())
    }

    pub(crate) fn track(&self, id: &str) {
        self.created
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_string());
    }

    pub(crate) fn untrack(&self, id: &str) {
        self.created
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// A removal of container `id` failed: counted once per container, logged (with
    /// `what` was being removed) at the 1st, 2nd, 4th … failure of the same one.
    fn removal_failed(&self, id: &str, reason: &str, what: &'static str) {
        let attempts = {
            let mut failed = self
                .failed_removals
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let attempts = failed.entry(id.to_string()).or_insert(0);
            *attempts += 1;
            *attempts
        };
        if attempts == 1 {
            self.counters.failures.add(1, &[]);
            self.cleanup_failures_seen.fetch_add(1, Ordering::Relaxed);
        }
        if attempts.is_power_of_two() {
            tracing::error!(container = %id, error = %reason, attempts, "failed to clean up {what} {id}");
        }
    }

    /// A container is gone: it no longer counts as a failure or as stuck.
    fn removed(&self, id: &str) {
        self.failed_removals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        self.stuck
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        self.untrack(id);
    }

    /// One of this run's containers could not be removed: it is an orphan until a
    /// sweep removes it, and the sweeper is woken to publish it now.
    pub(crate) fn own_removal_failed(&self, id: &str, reason: &str) {
        self.removal_failed(id, reason, "this run's container");
        self.stuck
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_string());
        self.sweep_soon.notify_one();
    }

    /// One of this run's containers was removed.
    pub(crate) fn own_removed(&self, id: &str) {
        self.removed(id);
    }

    /// Waits until one of this run's containers could not be removed.
    async fn own_removal_failure(&self) {
        self.sweep_soon.notified().await;
    }

    /// The orphans left now: a sweep's that could not be removed, and this run's own
    /// containers whose removal failed.
    fn orphans_left(&self, report: &ContainerSweepReport) -> u64 {
        let stuck = self
            .stuck
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        (report.remaining() + stuck) as u64
    }

    /// Containers whose removal failed, each counted once (for the page's history).
    fn cleanup_failures(&self) -> u64 {
        self.cleanup_failures_seen.load(Ordering::Relaxed)
    }

    /// Where this run's container numbers come from.
    fn stats_source(&self) -> StatsSource {
        if self.use_docker_api.load(Ordering::Relaxed) {
            StatsSource::DockerApi
        } else {
            StatsSource::Cgroup
        }
    }

    /// Starts tracking a running container of this run: finds its cgroup files
    /// through its init process, or falls back (once, logged) to the stats API.
    async fn follow(&self, docker: &Docker, id: &str, name: Option<String>) {
        if self
            .tracked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(id)
        {
            return;
        }
        let inspected = docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await;
        let Ok(inspected) = inspected else { return };
        let state = inspected.state.unwrap_or_default();
        if state.running != Some(true) {
            return;
        }
        let name = name
            .or(inspected
                .name
                .map(|n| n.trim_start_matches('/').to_string()))
            .unwrap_or_else(|| id.chars().take(12).collect());
        let cgroup = if self.use_docker_api.load(Ordering::Relaxed) {
            None
        } else {
            let pid = state.pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0);
            let found = CgroupStats::of_container(id, pid);
            if found.is_none()
                && !self.cgroup_only
                && !self.use_docker_api.swap(true, Ordering::Relaxed)
            {
                tracing::warn!(container = %name, "the cgroup files of this run's containers cannot be read from here (a remote or rootless Docker?); container numbers come from the Docker stats API instead (loopwatch_container_stats_source{{source=\"docker_api\"}})");
            }
            found
        };
        self.tracked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_string(), Tracked { name, cgroup });
    }

    fn untrack_running(&self, id: &str) {
        self.tracked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// Lists this run's running containers and brings the tracked set in line.
    async fn relist(&self, docker: &Docker) -> Result<(), bollard::errors::Error> {
        let listed = sweep::managed_containers(
            docker,
            Some(format!("{LABEL_RUN_ID}={}", self.identity.run_id)),
            true,
        )
        .await?;
        let running: HashSet<&str> = listed.iter().map(|(id, ..)| id.as_str()).collect();
        self.tracked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|id, _| running.contains(id.as_str()));
        for (id, name, ..) in &listed {
            self.follow(docker, id, Some(name.clone())).await;
        }
        Ok(())
    }

    /// Keeps the tracked set current until `cancel`: a list, then Docker's events
    /// stream (start, die, destroy of this run's containers), re-listing every 30 s ([`RELIST_EVERY`])
    /// as a safety net and after any break in the stream. Docker is asked for no
    /// numbers here; `loopwatch_docker_up` follows its answers.
    async fn watch(&self, cancel: tokio_util::sync::CancellationToken) {
        use futures_util::StreamExt as _;
        let Ok(docker) = self.client.clone() else {
            return;
        };
        let mut backoff = std::time::Duration::from_millis(500);
        loop {
            if let Err(e) = self.relist(&docker).await {
                self.mark_down(&e);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                continue;
            }
            self.mark_up();
            backoff = std::time::Duration::from_millis(500);
            // Every loop's containers: this run's are followed; others' owners are
            // remembered, so that their deaths are noticed without asking Docker.
            let filters = std::collections::HashMap::from([
                ("type".to_string(), vec!["container".to_string()]),
                (
                    "label".to_string(),
                    vec![format!("{}=true", crate::owner::LABEL_MANAGED)],
                ),
                (
                    "event".to_string(),
                    vec!["start".into(), "die".into(), "destroy".into()],
                ),
            ]);
            let mut events = docker.events(Some(bollard::query_parameters::EventsOptions {
                filters: Some(filters),
                ..Default::default()
            }));
            let relist = tokio::time::sleep(RELIST_EVERY);
            tokio::pin!(relist);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = &mut relist => break,
                    event = events.next() => match event {
                        Some(Ok(event)) => {
                            let actor = event.actor.unwrap_or_default();
                            let id = actor.id.unwrap_or_default();
                            let attributes = actor.attributes.unwrap_or_default();
                            let ours = attributes.get(LABEL_RUN_ID) == Some(&self.identity.run_id);
                            match (ours, event.action.as_deref()) {
                                (true, Some("start")) => self.follow(&docker, &id, None).await,
                                (true, Some("die" | "destroy")) => self.untrack_running(&id),
                                (false, Some("start")) => {
                                    if let Some(owner) = Owner::from_labels(&attributes).filter(|o| o.is_on(&self.identity.owner.host)) {
                                        self.foreign_owners
                                            .lock()
                                            .unwrap_or_else(PoisonError::into_inner)
                                            .insert(id, owner);
                                    }
                                }
                                (false, Some("destroy")) => {
                                    self.foreign_owners
                                        .lock()
                                        .unwrap_or_else(PoisonError::into_inner)
                                        .remove(&id);
                                }
                                _ => {}
                            }
                        }
                        Some(Err(e)) => {
                            self.mark_down_if_unreachable(&e);
                            break;
                        }
                        None => break,
                    }
                }
            }
        }
    }

    /// One sampler tick: the tracked containers' numbers, from their cgroup files
    /// (microseconds, no Docker request) or, on the fallback, the stats streams.
    async fn sample(&self) -> Option<ContainerSample> {
        let mut stats = Vec::new();
        let mut via_api: Vec<(String, String)> = Vec::new();
        let active = {
            let mut tracked = self.tracked.lock().unwrap_or_else(PoisonError::into_inner);
            let mut gone = Vec::new();
            for (id, container) in tracked.iter_mut() {
                match &mut container.cgroup {
                    Some(cgroup) => match cgroup.read(&container.name) {
                        Some(stat) => stats.push(stat),
                        // Its cgroup is gone: the container has stopped.
                        None => gone.push(id.clone()),
                    },
                    None => via_api.push((id.clone(), container.name.clone())),
                }
            }
            for id in gone {
                tracked.remove(&id);
            }
            tracked.len() as u64
        };
        if let Ok(docker) = &self.client {
            let streamed = self
                .stats
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .sample(docker, &via_api);
            stats.extend(streamed);
        }
        Some(ContainerSample { active, stats })
    }

    /// Claims the sweep lock now, before the start-up sweep's task is scheduled, so
    /// a shutdown that comes first still waits for that sweep.
    fn claim_sweep(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        Arc::clone(&self.sweeping).try_lock_owned().ok()
    }

    /// One orphan sweep; returns what it found and did, or `None` if Docker is down.
    async fn sweep_orphans(
        &self,
        claimed: Option<tokio::sync::OwnedMutexGuard<()>>,
    ) -> Option<ContainerSweepReport> {
        let docker = self.client.as_ref().ok()?;
        let _sweeping = match claimed {
            Some(guard) => guard,
            None => Arc::clone(&self.sweeping).lock_owned().await,
        };
        match sweep::remove_orphans(
            docker,
            Some(&self.identity),
            &self.identity.owner.host,
            false,
        )
        .await
        {
            Ok(sweep::Swept {
                report,
                live_owners,
            }) => {
                self.mark_up();
                self.counters.cleaned.add(report.cleaned.len() as u64, &[]);
                for id in &report.cleaned {
                    self.removed(id);
                }
                for (id, reason) in &report.failed {
                    self.removal_failed(id, reason, "orphaned container");
                }
                self.retry_stuck(docker).await;
                // Forget failures of containers gone some other way.
                let stuck = self
                    .stuck
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                self.failed_removals
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .retain(|id, _| {
                        stuck.contains(id) || report.failed.iter().any(|(f, _)| f == id)
                    });
                *self
                    .foreign_owners
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = live_owners
                    .into_iter()
                    .filter(|(_, owner)| owner.is_on(&self.identity.owner.host))
                    .collect();
                *self
                    .last_sweep
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(report.clone());
                Some(report)
            }
            Err(e) => {
                self.mark_down(&e);
                None
            }
        }
    }

    /// Tries again to remove this run's containers whose removal failed.
    async fn retry_stuck(&self, docker: &Docker) {
        let stuck: Vec<String> = self
            .stuck
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        for id in stuck {
            match sweep::remove_container(docker, &id).await {
                Ok(()) => {
                    tracing::info!(container = %id, "removed this run's container {id} at a retry");
                    self.counters.cleaned.add(1, &[]);
                    self.removed(&id);
                }
                Err(reason) => self.removal_failed(&id, &reason, "this run's container"),
            }
        }
    }

    /// Whether the owner of another loop's container has died since it was seen
    /// alive: a question for the process table, not for Docker.
    fn an_owner_died(&self) -> bool {
        let owners: Vec<Owner> = self
            .foreign_owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        if owners.is_empty() {
            return false;
        }
        let Some(mut processes) = LiveProcesses::new() else {
            return false;
        };
        owners
            .into_iter()
            .any(|owner| !owner.is_alive(&mut processes))
    }

    /// The last sweep's report.
    fn last_sweep(&self) -> Option<ContainerSweepReport> {
        self.last_sweep
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// At shutdown: removes every container of this run still present and reports
    /// what could not be removed.
    async fn verify_cleaned_up(&self) -> ContainerShutdownReport {
        let report = self.remove_run_containers().await;
        *self.shutdown.lock().unwrap_or_else(PoisonError::into_inner) = Some(report.clone());
        report
    }

    /// Removes every container of this run still present (those it created and those
    /// Docker lists with its run id) and reports what could not be removed.
    async fn remove_run_containers(&self) -> ContainerShutdownReport {
        let mut report = ContainerShutdownReport::default();
        let Ok(docker) = &self.client else {
            return report;
        };
        let _sweeping = self.sweeping.lock().await;
        let listed = sweep::managed_containers(
            docker,
            Some(format!("{LABEL_RUN_ID}={}", self.identity.run_id)),
            false,
        )
        .await;
        let mut ids: HashSet<String> = self
            .created
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match listed {
            Ok(list) => {
                report.docker_reachable = true;
                ids.extend(list.into_iter().map(|(id, ..)| id));
            }
            Err(e) => {
                tracing::error!(error = %e, containers = ids.len(), "cannot remove this run's remaining containers: Docker is unreachable");
                report.left_behind = ids.into_iter().map(|id| (id, e.to_string())).collect();
                return report;
            }
        }
        let removals = ids.into_iter().map(|id| async move {
            let outcome = sweep::remove_container(docker, &id).await;
            (id, outcome)
        });
        for (id, outcome) in futures_util::future::join_all(removals).await {
            match outcome {
                Ok(()) => {
                    self.removed(&id);
                    report.removed.push(id);
                }
                Err(reason) => {
                    self.removal_failed(&id, &reason, "this run's remaining container");
                    report.left_behind.push((id, reason));
                }
            }
        }
        if !report.removed.is_empty() {
            tracing::info!(
                removed = report.removed.len(),
                "removed this run's remaining containers"
            );
        }
        report
    }

    /// What shutdown verification found, once it ran.
    fn shutdown_report(&self) -> Option<ContainerShutdownReport> {
        self.shutdown
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Sweeps this host for orphaned loopwatch containers once, outside any loop: what
/// `loopwatch cleanup` runs after a crash. With `dry_run` it only reports them.
///
/// The caller owns no run, so every managed container whose owner process is gone is
/// an orphan; containers of live loops, other hosts and unlabelled containers are
/// never touched.
pub fn cleanup_orphans(dry_run: bool) -> Result<ContainerSweepReport, crate::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(crate::Error::Runtime)?;
    let docker = connect().map_err(|e| crate::Error::Docker(Box::new(e)))?;
    let report = runtime
        .block_on(sweep::remove_orphans(
            &docker,
            None,
            &crate::owner::host_name(),
            dry_run,
        ))
        .map_err(|e| crate::Error::Docker(Box::new(e)))?
        .report;
    for (id, reason) in &report.failed {
        tracing::error!(container = %id, error = %reason, "failed to clean up orphaned container {id}");
    }
    Ok(report)
}
