//! The monitor's background work: periodic samplers and sweeps, long-run statistics,
//! signal handling, and the last sample and final export of a run.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::export::files::{self, FinalExport};
use crate::export::Source as _;

use super::hub::Shared;

/// Longest time between two full orphan sweeps.
#[cfg(feature = "docker")]
const FULL_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// First wait before a sweep that failed to remove an orphan is retried.
#[cfg(feature = "docker")]
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);

/// Period of the sweep for processes of dead loops (one also runs at start-up).
const PROCESS_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Longest period between two LoopStalled checks.
const LIVENESS_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// Starts every periodic task the settings ask for.
pub(super) fn spawn_all(
    runtime: &tokio::runtime::Runtime,
    shared: &Arc<Shared>,
    cancel: &CancellationToken,
) {
    runtime.spawn(every(
        shared.settings.sample_interval,
        Arc::clone(shared),
        cancel.clone(),
        |shared| shared.sample_host(),
    ));
    runtime.spawn(every(
        shared.settings.sample_interval.min(LIVENESS_PERIOD),
        Arc::clone(shared),
        cancel.clone(),
        |shared| shared.check_clock(),
    ));
    runtime.spawn(every(
        super::hub::SETTLE_EVERY,
        Arc::clone(shared),
        cancel.clone(),
        |shared| shared.settle(),
    ));
    runtime.spawn(log_long_run_statistics(Arc::clone(shared), cancel.clone()));
    runtime.spawn(sweep_processes_periodically(
        Arc::clone(shared),
        cancel.clone(),
    ));
    #[cfg(feature = "docker")]
    if shared.settings.containers {
        let containers = std::sync::Arc::clone(&shared.containers);
        let stop = cancel.clone();
        runtime.spawn(async move { containers.watch(stop).await });
        runtime.spawn(sample_containers_periodically(
            Arc::clone(shared),
            cancel.clone(),
        ));
        let claimed = shared.containers.claim_sweep();
        runtime.spawn(sweep_orphans_periodically(
            Arc::clone(shared),
            cancel.clone(),
            claimed,
        ));
    }
    if shared.settings.signals != crate::config::Signals::Off {
        runtime.spawn(watch_signals(Arc::clone(shared)));
    }
}

/// The last sample, container verification and the final export, run once per monitor.
pub(super) fn finish_run(shared: &Shared) -> Option<FinalExport> {
    shared.done();
    shared.sample_host();
    #[cfg(feature = "docker")]
    if shared.settings.containers {
        let containers = &shared.containers;
        let report =
            crate::containers::block_on(containers.runtime(), containers.verify_cleaned_up());
        if !report.left_behind.is_empty() {
            tracing::error!(
                left_behind = report.left_behind.len(),
                "containers of this run are left behind; `loopwatch cleanup` removes them once this process has exited"
            );
        }
    }
    if !shared.settings.final_export {
        return None;
    }
    let export = files::write(
        &shared.settings.output_dir,
        &shared.snapshot(),
        shared.pipeline().gather(),
    );
    for (file, outcome) in [("text", &export.prometheus_text), ("json", &export.json)] {
        match outcome {
            Ok(path) => tracing::info!(file, path = %path.display(), "final metrics written"),
            Err(err) => tracing::error!(file, error = %err, "final metrics not written"),
        }
    }
    Some(export)
}

/// Sweeps for processes of dead loops at start-up and every
/// [`PROCESS_SWEEP_EVERY`], off the async workers (a sweep may wait out a grace period).
async fn sweep_processes_periodically(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut ticker = tokio::time::interval(PROCESS_SWEEP_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let sweeping = Arc::clone(&shared);
        let report = tokio::task::spawn_blocking(move || {
            sweeping.sweep_processes(None, crate::processes::TERMINATE_GRACE)
        })
        .await;
        if let Ok(report) = report {
            if !report.orphans.is_empty() {
                tracing::info!(
                    orphans = report.orphans.len(),
                    cleaned = report.cleaned.len(),
                    failed = report.failed.len(),
                    "swept orphaned processes of dead loops"
                );
            }
        }
    }
}

async fn every(
    period: std::time::Duration,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tick: impl Fn(&Shared),
) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => tick(&shared),
        }
    }
}

#[cfg(feature = "docker")]
async fn sample_containers_periodically(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut ticker = tokio::time::interval(shared.settings.sample_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {
                let sample = shared.containers.sample().await;
                shared.publish_containers(&shared.containers, sample);
            }
        }
    }
}

/// Sweeps for orphans at start-up, then whenever the owner of another loop's
/// container dies (checked in the process table every `orphan_sweep_interval`, 5 s,
/// with no Docker request), when one of this run's own containers could not be
/// removed, and every minute as a safety net. While orphans are left (another loop's
/// or this run's own), the next sweep comes after 1 s, 2 s, 4 s … (never later than
/// the interval), so a removal that fails only briefly is retried at once.
#[cfg(feature = "docker")]
async fn sweep_orphans_periodically(
    shared: Arc<Shared>,
    cancel: CancellationToken,
    mut claimed: Option<tokio::sync::OwnedMutexGuard<()>>,
) {
    let interval = shared.settings.orphan_sweep_interval;
    let full_every = (interval * 12).max(FULL_SWEEP_EVERY);
    let mut retry = RETRY_FIRST;
    loop {
        // A sweep, once begun, runs to the end: shutdown waits for it. The start-up
        // sweep holds the lock claimed at start.
        let report = shared.containers.sweep(claimed.take()).await;
        let swept = tokio::time::Instant::now();
        let mut failed = false;
        if let Some(report) = report {
            let left = shared.containers.orphans_left(&report);
            failed = left > 0;
            shared.report_orphans(left);
        }
        // Until the next sweep is due: a failed removal to retry, an owner that died,
        // or the safety net.
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
                // publish it) now.
                _ = shared.containers.own_removal_failure() => break,
            }
            if failed || swept.elapsed() >= full_every || shared.containers.an_owner_died() {
                break;
            }
            wait = interval;
        }
    }
}

/// Logs the long-run statistics (requirement 5.4) every `stats_interval`.
async fn log_long_run_statistics(shared: Arc<Shared>, cancel: CancellationToken) {
    let period = shared.settings.thresholds.stats_interval();
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let summary = shared.summary();
        tracing::info!(
            run_id = %shared.identity.run_id,
            total_iterations = summary.iterations,
            avg_execution_time_seconds = summary.mean_execution_time_seconds.unwrap_or(0.0),
            success_rate = summary.success_rate.unwrap_or(0.0),
            champion_staleness_iterations = summary.champion_staleness_iterations,
            elapsed_seconds = summary.elapsed_seconds,
            "Long-run statistics"
        );
    }
}

async fn watch_signals(shared: Arc<Shared>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install SIGINT/SIGTERM handlers; stop the loop by other means");
        return;
    };
    let graceful = shared.settings.signals == crate::config::Signals::Graceful;
    loop {
        let signal = tokio::select! {
            _ = terminate.recv() => libc_signal::SIGTERM,
            _ = interrupt.recv() => libc_signal::SIGINT,
        };
        let stalled = shared.is_firing(crate::alerts::AlertName::LoopStalled);
        let again = shared.request_stop();
        if graceful && !again && !stalled {
            tracing::warn!("stop requested; the loop ends after its current iteration (signal again to exit at once)");
            continue;
        }
        if stalled {
            tracing::warn!(
                "stop signal while the loop is stalled: writing the final export and exiting"
            );
        } else if graceful {
            tracing::warn!("second stop signal: writing the final export and exiting");
        } else {
            tracing::warn!(signal, "stop signal: writing the final export and exiting");
        }
        if !shared.closed.swap(true, Ordering::SeqCst) {
            shared.done();
            // The final export waits on Docker and the disk: hand this worker's
            // queued tasks to the other worker while it does, so none of them
            // (a Docker request's connection, say) is stranded behind it.
            tokio::task::block_in_place(|| finish_run(&shared));
        }
        std::process::exit(128 + signal);
    }
}

/// The numbers of the signals loopwatch handles, for the exit status they imply.
mod libc_signal {
    pub(super) const SIGINT: i32 = 2;
    pub(super) const SIGTERM: i32 = 15;
}
