//! The samplers' latest readings and what the sweeps found: the host sample and the
//! container numbers the history points carry, the process sweeps' tally and the
//! processes given up on, and this run's running containers with their ages. Part of
//! the [`RunState`](super::RunState).

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use crate::containers::ContainerReading;
use crate::export::{LiveContainer, ProcessTally};
use crate::sample::HostSample;

/// The latest sampler readings, for the history points and the page.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Latest {
    pub(crate) host: Option<HostSample>,
    pub(crate) active_containers: u64,
    pub(crate) container_memory_bytes: u64,
    /// CPU of the containers, summed; `None` until a sample has read any.
    pub(crate) container_cpu_percent: Option<f64>,
    pub(crate) cleanup_failures: u64,
}

/// What the process sweeps found and did, the processes given up on, and this run's
/// running containers.
#[derive(Debug, Default)]
pub(crate) struct Housekeeping {
    pub(crate) tally: ProcessTally,
    /// Processes (pid, start ticks) that could not be terminated: not retried.
    pub(crate) given_up: HashSet<(u32, u64)>,
    /// This run's running containers, with when loopwatch first saw each.
    pub(crate) containers: Vec<LiveContainer>,
    first_seen: HashMap<String, SystemTime>,
}

impl Housekeeping {
    /// Folds a process sweep into the tally.
    pub(crate) fn process_sweep(
        &mut self,
        given_up: impl IntoIterator<Item = (u32, u64)>,
        cleaned: usize,
        failed: usize,
        remaining: usize,
    ) {
        self.given_up.extend(given_up);
        self.tally.orphaned_now = remaining as u64;
        self.tally.cleaned_total += cleaned as u64;
        self.tally.failures_total += failed as u64;
    }

    /// Keeps this run's running containers as a sample `at` found them, each with
    /// when it was first seen.
    pub(crate) fn containers(&mut self, reading: &ContainerReading, at: SystemTime) {
        let Some(sample) = &reading.sample else {
            return;
        };
        let stats = &sample.stats;
        self.first_seen
            .retain(|name, _| stats.iter().any(|s| &s.name == name));
        let mut live = Vec::with_capacity(stats.len());
        for stat in stats {
            let since = *self.first_seen.entry(stat.name.clone()).or_insert(at);
            live.push(LiveContainer {
                name: stat.name.clone(),
                memory_bytes: stat.memory_bytes,
                cpu_percent: stat.cpu_percent,
                age_seconds: at.duration_since(since).unwrap_or_default().as_secs_f64(),
            });
        }
        live.sort_by(|a, b| a.name.cmp(&b.name));
        self.containers = live;
    }
}

impl Latest {
    /// Keeps a container reading's numbers.
    pub(crate) fn containers(&mut self, reading: &ContainerReading) {
        self.cleanup_failures = reading.cleanup_failures;
        if let Some(sample) = &reading.sample {
            self.active_containers = sample.active;
            self.container_memory_bytes = sample.stats.iter().map(|s| s.memory_bytes).sum();
            self.container_cpu_percent = sample
                .stats
                .iter()
                .filter_map(|s| s.cpu_percent)
                .fold(None, |sum, cpu| Some(sum.unwrap_or(0.0) + cpu));
        }
    }
}
