//! The monitor's background work: periodic samplers and sweeps, long-run statistics,
//! signal handling, and the last sample and final export of a run.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::docker::ContainerShutdownReport;
use crate::export::final_export::{self, FinalExport};

use super::inner::Inner;

/// The last sample and the final export, run once per monitor.
pub(super) fn finish_run(inner: &Inner) -> Option<FinalExport> {
    inner.sample_host();
    if inner.settings.containers {
        let report: ContainerShutdownReport =
            inner.block_on(inner.containers.verify_cleaned_up(&inner.identity));
        if !report.left_behind.is_empty() {
            tracing::error!(
                left_behind = report.left_behind.len(),
                "containers of this run are left behind; `loopwatch cleanup` removes them once this process has exited"
            );
        }
    }
    if !inner.settings.final_export {
        return None;
    }
    let export = final_export::write(inner);
    for (file, outcome) in [("text", &export.prometheus_text), ("json", &export.json)] {
        match outcome {
            Ok(path) => tracing::info!(file, path = %path.display(), "final metrics written"),
            Err(err) => tracing::error!(file, error = %err, "final metrics not written"),
        }
    }
    Some(export)
}

pub(super) async fn sample_host_periodically(inner: Arc<Inner>, cancel: CancellationToken) {
    let mut ticker = tokio::time::interval(inner.settings.sample_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => inner.sample_host(),
        }
    }
}

pub(super) async fn sample_containers_periodically(inner: Arc<Inner>, cancel: CancellationToken) {
    let mut ticker = tokio::time::interval(inner.settings.sample_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => inner.containers.sample(&inner.identity).await,
        }
    }
}

/// Sweeps for orphans at start-up and then every `orphan_sweep_interval`.
pub(super) async fn sweep_orphans_periodically(
    inner: Arc<Inner>,
    cancel: CancellationToken,
    mut claimed: Option<tokio::sync::OwnedMutexGuard<()>>,
) {
    let mut ticker = tokio::time::interval(inner.settings.orphan_sweep_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The start-up sweep (holding the lock claimed at start) is not cancellable;
        // later ones wait for their tick.
        if claimed.is_none() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
        } else {
            ticker.tick().await;
        }
        // A sweep, once begun, runs to the end: shutdown waits for it.
        if let Some(report) = inner
            .containers
            .sweep(&inner.identity, claimed.take())
            .await
        {
            inner.report_orphans(report.remaining() as u64);
        }
    }
}

/// Logs the long-run statistics (requirement 5.4) every `stats_interval`.
pub(super) async fn log_long_run_statistics(inner: Arc<Inner>, cancel: CancellationToken) {
    let period = inner.settings.thresholds.stats_interval;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let summary = inner.summary();
        tracing::info!(
            run_id = %inner.identity.run_id,
            total_iterations = summary.iterations,
            avg_execution_time_seconds = summary.mean_execution_time_seconds.unwrap_or(0.0),
            success_rate = summary.success_rate.unwrap_or(0.0),
            champion_staleness_iterations = summary.champion_staleness_iterations,
            elapsed_seconds = summary.elapsed_seconds,
            "Long-run statistics"
        );
    }
}

pub(super) async fn watch_signals(inner: Arc<Inner>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install SIGINT/SIGTERM handlers; stop the loop by other means");
        return;
    };
    loop {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        if inner.request_stop() {
            tracing::warn!("second stop signal: writing the final export and exiting");
            if !inner.closed.swap(true, Ordering::SeqCst) {
                finish_run(&inner);
            }
            std::process::exit(130);
        }
        tracing::warn!("stop requested; the loop ends after its current iteration (signal again to exit at once)");
    }
}
