//! The monitor's background work: the clock (settling the queue, ticking), the
//! samplers and sweeps (each sends what it found as an event), long-run statistics,
//! signal handling, and the last sample and final export of a run.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::containers::Reports;
use crate::export::files::{self, FinalExport};
use crate::export::Source as _;

use super::event::Event;
use super::hub::Hub;

/// Period of the sweep for processes of dead loops (one also runs at start-up).
const PROCESS_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Longest period between two ticks of the clock (a LoopStalled check each).
const TICK_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// Starts every periodic task the settings ask for.
pub(super) fn spawn_all(
    runtime: &tokio::runtime::Runtime,
    hub: &Arc<Hub>,
    cancel: &CancellationToken,
) {
    let settings = &hub.settings;
    runtime.spawn(every(
        settings.sample_interval,
        Arc::clone(hub),
        cancel.clone(),
        Hub::sample_host,
    ));
    runtime.spawn(every(
        settings.sample_interval.min(TICK_PERIOD),
        Arc::clone(hub),
        cancel.clone(),
        Hub::tick,
    ));
    runtime.spawn(every(
        super::hub::SETTLE_EVERY,
        Arc::clone(hub),
        cancel.clone(),
        Hub::settle,
    ));
    runtime.spawn(log_long_run_statistics(Arc::clone(hub), cancel.clone()));
    runtime.spawn(sweep_processes_periodically(
        Arc::clone(hub),
        cancel.clone(),
    ));
    if settings.containers {
        let (readings, orphans) = (Arc::clone(hub), Arc::clone(hub));
        hub.containers.spawn_tasks(
            settings.sample_interval,
            settings.orphan_sweep_interval,
            cancel,
            Reports {
                reading: Box::new(move |reading| {
                    let at = readings.clock.now();
                    readings.send(Event::Containers { reading, at });
                }),
                orphans: Box::new(move |count| {
                    let at = orphans.clock.now();
                    orphans.send(Event::Orphans { count, at });
                }),
            },
        );
    }
    #[cfg(feature = "gpu")]
    if settings.gpu {
        super::gpu::spawn(runtime, hub, cancel);
    } else {
        tracing::info!(
            "GPU sampling is turned off ([gpu] enabled = false, LOOPWATCH_GPU=off or MonitorBuilder::gpu(false))"
        );
    }
    super::servers::spawn_readers(runtime, hub, cancel);
    if settings.signals != crate::config::Signals::Off {
        runtime.spawn(watch_signals(Arc::clone(hub)));
    }
}

/// The last sample, container verification and the final export, run once per monitor.
pub(super) fn finish_run(hub: &Hub) -> Option<FinalExport> {
    hub.done();
    hub.sample_host();
    if hub.settings.containers {
        hub.containers.verify_cleaned_up_now();
    }
    if !hub.settings.final_export {
        return None;
    }
    let export = files::write(
        &hub.settings.output_dir,
        &hub.snapshot(),
        hub.pipeline().gather(),
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
async fn sweep_processes_periodically(hub: Arc<Hub>, cancel: CancellationToken) {
    let mut ticker = tokio::time::interval(PROCESS_SWEEP_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let sweeping = Arc::clone(&hub);
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
    hub: Arc<Hub>,
    cancel: CancellationToken,
    tick: impl Fn(&Hub),
) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => tick(&hub),
        }
    }
}

/// Logs the long-run statistics (iterations, rates, memory, uptime) every `stats_interval`.
async fn log_long_run_statistics(hub: Arc<Hub>, cancel: CancellationToken) {
    let period = hub.settings.thresholds.stats_interval();
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let summary = hub.summary();
        tracing::info!(
            run_id = %hub.identity.run_id,
            total_iterations = summary.iterations,
            avg_execution_time_seconds = summary.mean_execution_time_seconds.unwrap_or(0.0),
            success_rate = summary.success_rate.unwrap_or(0.0),
            champion_staleness_iterations = summary.champion_staleness_iterations,
            elapsed_seconds = summary.elapsed_seconds,
            "Long-run statistics"
        );
    }
}

async fn watch_signals(hub: Arc<Hub>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install SIGINT/SIGTERM handlers; stop the loop by other means");
        return;
    };
    let graceful = hub.settings.signals == crate::config::Signals::Graceful;
    loop {
        let signal = tokio::select! {
            _ = terminate.recv() => libc_signal::SIGTERM,
            _ = interrupt.recv() => libc_signal::SIGINT,
        };
        let stalled = hub.is_firing(crate::alerts::AlertName::LoopStalled);
        let again = hub.request_stop();
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
        if !hub.closed.swap(true, Ordering::SeqCst) {
            hub.done();
            // The final export waits on Docker and the disk: hand this worker's
            // queued tasks to the other worker while it does, so none of them
            // (a Docker request's connection, say) is stranded behind it.
            tokio::task::block_in_place(|| finish_run(&hub));
        }
        std::process::exit(128 + signal);
    }
}

/// The numbers of the signals loopwatch handles, for the exit status they imply.
mod libc_signal {
    pub(super) const SIGINT: i32 = 2;
    pub(super) const SIGTERM: i32 = 15;
}
