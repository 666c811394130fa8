//! The GPU sampler's thread (feature `gpu`): it opens NVML, then samples every GPU
//! at the sampling interval and, in between, waits for Xid errors on NVML's event
//! set; each reading and each error goes to the hub as an event. It has a thread of
//! its own because NVML's wait blocks, and its handles live as long as the thread
//! does. Without a driver or a library it says so once and ends; the rest runs on.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::sample::{in_nested_pid_namespace, process_tree, GpuSampler};

use super::event::Event;
use super::hub::Hub;

/// Longest single wait on NVML's event set, so that a stop is seen within it.
const WAIT_SLICE: Duration = Duration::from_millis(200);

/// Longest single park between samples when no Xid error is watched (a stop
/// unparks it sooner).
const PARK_SLICE: Duration = Duration::from_secs(60);

/// When the next sample is due, `period` after `now`; `None` when that is past what
/// the clock can hold (a period of centuries): no sample is due any more.
fn next_sample(now: Instant, period: Duration) -> Option<Instant> {
    now.checked_add(period)
}

/// How long to wait now for the sample due at `next`: until then, at most `slice`.
fn wait_for(next: Option<Instant>, now: Instant, slice: Duration) -> Duration {
    next.map_or(slice, |next| next.saturating_duration_since(now).min(slice))
}

/// Starts the thread; it ends once `cancel` is cancelled.
pub(super) fn spawn(runtime: &tokio::runtime::Runtime, hub: &Arc<Hub>, cancel: &CancellationToken) {
    let (sampling, stop) = (Arc::clone(hub), cancel.clone());
    let spawned = std::thread::Builder::new()
        .name("loopwatch-gpu".into())
        .spawn(move || {
            let ran = catch_unwind(AssertUnwindSafe(|| run(&sampling, &stop)));
            if stop.is_cancelled() {
                return; // the monitor stops: the last readings go to the final files
            }
            if ran.is_err() {
                tracing::error!("the GPU sampler panicked: GPU sampling ended, its series are dropped and GPUMemoryHigh resolves");
            }
            // However it ended, its readings would otherwise stand, and GPUMemoryHigh
            // with them (nothing to drop when it never read a GPU).
            sampling.send(Event::GpuEnded {
                at: sampling.clock.now(),
            });
        });
    match spawned {
        Ok(handle) => {
            // A thread parked between samples wakes up at once when the monitor stops.
            let thread = handle.thread().clone();
            let cancel = cancel.clone();
            runtime.spawn(async move {
                cancel.cancelled().await;
                thread.unpark();
            });
        }
        Err(e) => {
            tracing::error!(error = %e, "the GPU sampler's thread cannot start; GPUs are not sampled")
        }
    }
}

fn run(hub: &Hub, cancel: &CancellationToken) {
    let sampler = match GpuSampler::open(hub.settings.gpu_library.as_deref()) {
        Ok(sampler) => sampler,
        Err(e) => {
            tracing::info!(library = %e.library, reason = %e.reason, "GPU sampling is off; everything else runs on");
            return;
        }
    };
    if sampler.device_count() == 0 {
        tracing::info!(
            library = sampler.library(),
            "NVML found no GPU; GPU sampling is off"
        );
        return;
    }
    tracing::info!(
        gpus = sampler.device_count(),
        library = sampler.library(),
        "sampling GPUs"
    );
    if in_nested_pid_namespace() {
        tracing::warn!(
            "this process runs in a pid namespace other than the host's (a container without --pid=host): \
             NVML names processes by the host's pids, so the loop's video memory (loopwatch_gpu_loop_memory_bytes) reads 0 \
             and GPUMemoryHigh never fires; each GPU's own numbers are sampled"
        );
    }
    let mut watch = sampler.xid_watch();
    let period = hub.settings.sample_interval;
    while !cancel.is_cancelled() {
        // No root (the loop's process ended): nothing is the loop's.
        let pids = hub.loop_root().map(process_tree).unwrap_or_default();
        let sample = sampler.sample(&pids);
        hub.send(Event::Gpu {
            sample,
            at: hub.clock.now(),
            period,
        });
        let next = next_sample(Instant::now(), period);
        loop {
            if cancel.is_cancelled() {
                return;
            }
            let now = Instant::now();
            if watch.is_watching() {
                // At least one wait between two samples, however long the sample
                // took: an Xid error already pending is taken before the next one, so
                // an ECC Xid and the count's rise it goes with are a sample apart at
                // most.
                if let Some(xid) = watch.wait(wait_for(next, now, WAIT_SLICE)) {
                    hub.send(Event::GpuXid {
                        xid,
                        at: hub.clock.now(),
                    });
                }
            } else {
                let left = wait_for(next, now, PARK_SLICE);
                if !left.is_zero() {
                    std::thread::park_timeout(left);
                }
            }
            if next.is_some_and(|next| Instant::now() >= next) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_past_what_the_clock_holds_means_no_sample_is_due_and_waits_stay_short() {
        let now = Instant::now();
        assert_eq!(next_sample(now, Duration::MAX), None);
        assert_eq!(wait_for(None, now, WAIT_SLICE), WAIT_SLICE);
        let next = next_sample(now, Duration::from_secs(1));
        assert_eq!(wait_for(next, now, WAIT_SLICE), WAIT_SLICE);
        assert_eq!(
            wait_for(next, now + Duration::from_secs(2), WAIT_SLICE),
            Duration::ZERO,
            "overdue"
        );
    }
}
