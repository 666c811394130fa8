//! The containers feature's periodic work for a monitor — the events watcher, the
//! sampler and the orphan sweeps — and its blocking steps (a sample now, the removals
//! at a restart and at shutdown). What they find goes to the monitor through the two
//! callbacks it hands over; nothing here knows the monitor.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{block_on, ContainerReading, ContainerShutdownReport, Containers, Reports};

/// Longest time between two full orphan sweeps.
const FULL_SWEEP_EVERY: Duration = Duration::from_secs(60);

/// First wait before a sweep that failed to remove an orphan is retried.
const RETRY_FIRST: Duration = Duration::from_secs(1);

impl Containers {
    /// Starts the events watcher, the sampler (every `sample_every`) and the orphan
    /// sweeps (checked every `sweep_every`) on the containers' runtime, until
    /// `cancel`. The start-up sweep's lock is taken before this returns, so a
    /// shutdown that comes first still waits for it.
    pub(crate) fn spawn_tasks(
        self: &Arc<Self>,
        sample_every: Duration,
        sweep_every: Duration,
        cancel: &CancellationToken,
        reports: Reports,
    ) {
        let reports = Arc::new(reports);
        let runtime = self.runtime().clone();
        let (watched, stop) = (Arc::clone(self), cancel.clone());
        runtime.spawn(async move { watched.watch(stop).await });
        runtime.spawn(Arc::clone(self).sample_periodically(
            sample_every,
            cancel.clone(),
            Arc::clone(&reports),
        ));
        let claimed = self.claim_sweep();
        runtime.spawn(Arc::clone(self).sweep_orphans_periodically(
            sweep_every,
            cancel.clone(),
            claimed,
            reports,
        ));
    }

    /// What a sampler tick reads now: Docker's state and this run's containers.
    pub(crate) async fn reading(&self) -> ContainerReading {
        let sample = self.sample().await;
        ContainerReading {
            up: self.is_up(),
            source: self.stats_source(),
            sample,
            cleanup_failures: self.cleanup_failures(),
        }
    }

    /// Takes one sample now, waiting for it (from any thread).
    pub(crate) fn reading_now(&self) -> ContainerReading {
        block_on(self.runtime(), self.reading())
    }

    /// At shutdown: removes every container of this run still present, waiting for
    /// a sweep in flight, and logs any left behind.
    pub(crate) fn verify_cleaned_up_now(&self) -> ContainerShutdownReport {
        let report = block_on(self.runtime(), self.verify_cleaned_up());
        if !report.left_behind.is_empty() {
            tracing::error!(
                left_behind = report.left_behind.len(),
                "containers of this run are left behind; `loopwatch cleanup` removes them once this process has exited"
            );
        }
        report
    }

    /// Removes every container of this run now (before a restart); returns how many
    /// were removed.
    pub(crate) fn remove_run_containers_now(&self) -> usize {
        block_on(self.runtime(), self.remove_run_containers())
            .removed
            .len()
    }

    /// The feature's state as `metrics_final.json` and the page show it.
    pub(crate) fn state_json(&self) -> serde_json::Value {
        serde_json::json!({
            "enabled": true,
            "docker_up": self.is_up(),
            "last_sweep": self.last_sweep(),
            "shutdown": self.shutdown_report(),
        })
    }

    async fn sample_periodically(
        self: Arc<Self>,
        period: Duration,
        cancel: CancellationToken,
        reports: Arc<Reports>,
    ) {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => (reports.reading)(self.reading().await),
            }
        }
    }

    /// Sweeps for orphans at start-up, then whenever the owner of another loop's
    /// container dies (checked in the process table every `interval`, with no Docker
    /// request), when one of this run's own containers could not be removed, and every
    /// minute as a safety net. While orphans are left (another loop's or this run's
    /// own), the next sweep comes after 1 s, 2 s, 4 s … (never later than the
    /// interval), so a removal that fails only briefly is retried at once.
    async fn sweep_orphans_periodically(
        self: Arc<Self>,
        interval: Duration,
        cancel: CancellationToken,
        mut claimed: Option<tokio::sync::OwnedMutexGuard<()>>,
        reports: Arc<Reports>,
    ) {
        let full_every = (interval * 12).max(FULL_SWEEP_EVERY);
        let mut retry = RETRY_FIRST;
        loop {
            // A sweep, once begun, runs to the end: shutdown waits for it. The start-up
            // sweep holds the lock claimed at start.
            let report = self.sweep_orphans(claimed.take()).await;
            let swept = tokio::time::Instant::now();
            let mut failed = false;
            if let Some(report) = report {
                let left = self.orphans_left(&report);
                failed = left > 0;
                (reports.orphans)(left);
            }
            // Until the next sweep is due: a failed removal to retry, an owner that
            // died, or the safety net.
            let mut wait = interval;
            if failed {
                wait = retry.min(interval);
                retry = (retry * 2).min(interval);
            } else {
                retry = RETRY_FIRST;
            }
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                    // One of this run's containers could not be removed: sweep (and
                    // report it) now.
                    _ = self.own_removal_failure() => break,
                }
                if failed || swept.elapsed() >= full_every || self.an_owner_died() {
                    break;
                }
                wait = interval;
            }
        }
    }
}
