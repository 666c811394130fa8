//! Containers: ownership labels, the stats sampler, orphan sweeps, the sandbox
//! launcher, and shutdown verification, on a real Docker Engine through bollard.
//!
//! Docker being absent or unreachable degrades only this feature:
//! `loopwatch_docker_up` reads 0, one log line says so, and everything recovers on
//! its own when the daemon answers again.

pub(crate) mod cleanup;
pub(crate) mod labels;
pub(crate) mod sandbox;
pub(crate) mod stats;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bollard::Docker;
use opentelemetry::metrics::{Counter, Meter, ObservableGauge};
use opentelemetry::KeyValue;
use serde::Serialize;

use crate::catalog;
use crate::instruments::{counter, observable_gauge};
use crate::monitor::RunIdentity;
use cleanup::SweepReport;
use labels::LABEL_RUN_ID;
use stats::{ContainerStat, StatsSampler};

/// What shutdown found of this run's containers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ContainerShutdownReport {
    /// Containers of this run still present at shutdown and removed then.
    pub removed: Vec<String>,
    /// Containers of this run that could not be removed (also logged).
    pub left_behind: Vec<(String, String)>,
    /// Whether Docker could be asked at all.
    pub docker_reachable: bool,
}

/// The containers feature's state, shared by the sampler, the sweeps and the sandbox.
pub(crate) struct Containers {
    client: Option<Docker>,
    up: AtomicBool,
    /// Whether a "down" has been logged since Docker was last reachable.
    down_logged: AtomicBool,
    pub(crate) active: AtomicU64,
    pub(crate) memory_bytes: AtomicU64,
    orphans: AtomicU64,
    cleanup_failures_seen: AtomicU64,
    readings: Mutex<Vec<ContainerStat>>,
    created: Mutex<HashSet<String>>,
    sequence: AtomicU64,
    stats: Mutex<StatsSampler>,
    /// Held for a whole sweep, and by shutdown verification, so shutdown waits for a
    /// sweep in flight instead of cutting it short.
    sweeping: Arc<tokio::sync::Mutex<()>>,
    last_sweep: Mutex<Option<SweepReport>>,
    shutdown: Mutex<Option<ContainerShutdownReport>>,
    cleanup_failures: Counter<u64>,
    cleaned: Counter<u64>,
    _gauges: Mutex<Vec<ObservableGauge<f64>>>,
}

impl std::fmt::Debug for Containers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containers").finish_non_exhaustive()
    }
}

impl Containers {
    /// Connects lazily (no request is made) and registers the container metrics.
    pub(crate) fn new(meter: &Meter) -> Arc<Self> {
        let client = match Docker::connect_with_local_defaults() {
            Ok(docker) => Some(docker.with_timeout(std::time::Duration::from_secs(30))),
            Err(e) => {
                tracing::error!(error = %e, "no Docker client can be configured; container features are down");
                None
            }
        };
        let containers = Arc::new(Containers {
            client,
            up: AtomicBool::new(false),
            down_logged: AtomicBool::new(false),
            active: AtomicU64::new(0),
            memory_bytes: AtomicU64::new(0),
            orphans: AtomicU64::new(0),
            cleanup_failures_seen: AtomicU64::new(0),
            readings: Mutex::new(Vec::new()),
            created: Mutex::new(HashSet::new()),
            sequence: AtomicU64::new(0),
            stats: Mutex::new(StatsSampler::default()),
            sweeping: Arc::new(tokio::sync::Mutex::new(())),
            last_sweep: Mutex::new(None),
            shutdown: Mutex::new(None),
            cleanup_failures: counter(meter, &catalog::CONTAINER_CLEANUP_FAILURES_TOTAL),
            cleaned: counter(meter, &catalog::CONTAINERS_CLEANED_TOTAL),
            _gauges: Mutex::new(Vec::new()),
        });
        containers.cleanup_failures.add(0, &[]);
        containers.cleaned.add(0, &[]);
        let weak = Arc::downgrade(&containers);
        let read = move |f: fn(&Containers) -> f64| {
            let weak = weak.clone();
            move || weak.upgrade().map_or(0.0, |c| f(&c))
        };
        let mut gauges = vec![
            observable_gauge(
                meter,
                &catalog::ACTIVE_CONTAINERS,
                read(|c| c.active.load(Ordering::Relaxed) as f64),
            ),
            observable_gauge(
                meter,
                &catalog::ORPHANED_CONTAINERS,
                read(|c| c.orphans.load(Ordering::Relaxed) as f64),
            ),
            observable_gauge(
                meter,
                &catalog::DOCKER_UP,
                read(|c| f64::from(u8::from(c.up.load(Ordering::Relaxed)))),
            ),
        ];
        for (spec, memory) in [
            (&catalog::CONTAINER_MEMORY_USAGE, true),
            (&catalog::CONTAINER_CPU_USAGE, false),
        ] {
            let weak = Arc::downgrade(&containers);
            gauges.push(
                meter
                    .f64_observable_gauge(spec.name)
                    .with_unit(spec.unit)
                    .with_description(spec.description)
                    .with_callback(move |observer| {
                        let Some(c) = weak.upgrade() else { return };
                        for stat in c
                            .readings
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .iter()
                        {
                            let value = if memory {
                                Some(stat.memory_bytes as f64)
                            } else {
                                stat.cpu_percent
                            };
                            if let Some(value) = value {
                                observer
                                    .observe(value, &[KeyValue::new("name", stat.name.clone())]);
                            }
                        }
                    })
                    .build(),
            );
        }
        *containers
            ._gauges
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = gauges;
        containers
    }

    /// The Docker client, if one could be configured.
    pub(crate) fn client(&self) -> Option<Docker> {
        self.client.clone()
    }

    /// Whether the last request to Docker succeeded.
    pub(crate) fn is_up(&self) -> bool {
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
        self.readings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
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

    /// A fresh container name for this run: `loopwatch-<pid>-<n>`.
    pub(crate) fn next_name(&self, identity: &RunIdentity) -> String {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        format!(
            "loopwatch-{}-{}-{n}",
            identity.pid, identity.process_start_time
        )
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

    pub(crate) fn count_cleanup_failure(&self) {
        self.cleanup_failures.add(1, &[]);
        self.cleanup_failures_seen.fetch_add(1, Ordering::Relaxed);
    }

    /// Cleanup failures so far (for the dashboard's history).
    pub(crate) fn cleanup_failures(&self) -> u64 {
        self.cleanup_failures_seen.load(Ordering::Relaxed)
    }

    /// One sampler tick: this run's running containers and their stats.
    pub(crate) async fn sample(&self, identity: &RunIdentity) {
        let Some(docker) = &self.client else { return };
        let listed = cleanup::managed_containers(
            docker,
            Some(format!("{LABEL_RUN_ID}={}", identity.run_id)),
            true,
        )
        .await;
        let running: Vec<(String, String)> = match listed {
            Ok(list) => {
                self.mark_up();
                list.into_iter()
                    .map(|(id, name, _, _)| (id, name))
                    .collect()
            }
            Err(e) => return self.mark_down(&e),
        };
        let stats = self
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sample(docker, &running);
        self.active.store(running.len() as u64, Ordering::Relaxed);
        self.memory_bytes.store(
            stats.iter().map(|s| s.memory_bytes).sum(),
            Ordering::Relaxed,
        );
        *self.readings.lock().unwrap_or_else(PoisonError::into_inner) = stats;
    }

    /// Claims the sweep lock now, before the start-up sweep's task is scheduled, so
    /// a shutdown that comes first still waits for that sweep.
    pub(crate) fn claim_sweep(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        Arc::clone(&self.sweeping).try_lock_owned().ok()
    }

    /// One orphan sweep; returns the orphans still present, or `None` if Docker is down.
    pub(crate) async fn sweep(
        &self,
        identity: &RunIdentity,
        claimed: Option<tokio::sync::OwnedMutexGuard<()>>,
    ) -> Option<SweepReport> {
        let docker = self.client.as_ref()?;
        let _sweeping = match claimed {
            Some(guard) => guard,
            None => Arc::clone(&self.sweeping).lock_owned().await,
        };
        match cleanup::sweep(docker, Some(identity), &identity.hostname, false).await {
            Ok(report) => {
                self.mark_up();
                self.orphans
                    .store(report.remaining() as u64, Ordering::Relaxed);
                self.cleaned.add(report.removed.len() as u64, &[]);
                for _ in &report.failed {
                    self.count_cleanup_failure();
                }
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

    /// The last sweep's report.
    pub(crate) fn last_sweep(&self) -> Option<SweepReport> {
        self.last_sweep
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// At shutdown: removes every container of this run still present and reports
    /// what could not be removed.
    pub(crate) async fn verify_cleaned_up(
        &self,
        identity: &RunIdentity,
    ) -> ContainerShutdownReport {
        let mut report = ContainerShutdownReport::default();
        let Some(docker) = &self.client else {
            return report;
        };
        let _sweeping = self.sweeping.lock().await;
        let listed = cleanup::managed_containers(
            docker,
            Some(format!("{LABEL_RUN_ID}={}", identity.run_id)),
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
                tracing::error!(error = %e, containers = ids.len(), "cannot verify this run's containers at shutdown: Docker is unreachable");
                report.left_behind = ids.into_iter().map(|id| (id, e.to_string())).collect();
                return report;
            }
        }
        let removals = ids.into_iter().map(|id| async move {
            let outcome = cleanup::remove_container(docker, &id).await;
            (id, outcome)
        });
        for (id, outcome) in futures_util::future::join_all(removals).await {
            match outcome {
                Ok(()) => {
                    self.untrack(&id);
                    report.removed.push(id);
                }
                Err(reason) => {
                    self.count_cleanup_failure();
                    tracing::error!(container = %id, error = %reason, "a container of this run could not be removed at shutdown");
                    report.left_behind.push((id, reason));
                }
            }
        }
        if !report.removed.is_empty() {
            tracing::info!(
                removed = report.removed.len(),
                "removed this run's remaining containers at shutdown"
            );
        }
        *self.shutdown.lock().unwrap_or_else(PoisonError::into_inner) = Some(report.clone());
        report
    }

    /// What shutdown verification found, once it ran.
    pub(crate) fn shutdown_report(&self) -> Option<ContainerShutdownReport> {
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
pub fn cleanup_orphans(dry_run: bool) -> Result<SweepReport, crate::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(crate::Error::Runtime)?;
    let docker = Docker::connect_with_local_defaults()
        .map_err(|e| crate::Error::Docker(e.to_string()))?
        .with_timeout(std::time::Duration::from_secs(30));
    let hostname = sysinfo::System::host_name().unwrap_or_else(|_| "unknown-host".into());
    runtime
        .block_on(cleanup::sweep(&docker, None, &hostname, dry_run))
        .map_err(|e| crate::Error::Docker(e.to_string()))
}
