//! What the containers feature and its stand-in (built without the `docker` feature)
//! share: the readings the monitor receives, the reports it keeps, and the counters
//! cleanup adds to. Nothing here talks to Docker.

use opentelemetry::metrics::Counter;
use serde::Serialize;

use crate::owner::SweepReport;

/// What one container sweep found and did: orphans are container ids.
pub type ContainerSweepReport = SweepReport<String>;

/// One container's reading.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ContainerStat {
    /// Container name (the metrics' `name` label).
    pub(crate) name: String,
    /// Working-set memory: usage minus inactive file cache, in bytes.
    pub(crate) memory_bytes: u64,
    /// CPU since the previous sample, 100 = one core; `None` on a first sample.
    pub(crate) cpu_percent: Option<f64>,
}

/// This run's running containers at one sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ContainerSample {
    /// Running containers of this run.
    pub(crate) active: u64,
    /// The latest reading of each container that has one.
    pub(crate) stats: Vec<ContainerStat>,
}

/// Where container numbers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatsSource {
    /// The kernel's cgroup files, read by loopwatch: no work for dockerd.
    Cgroup,
    /// Docker's stats API, one stream per container: where the cgroup files cannot be
    /// seen from here (a remote or rootless daemon), or when asked for.
    DockerApi,
}

impl StatsSource {
    /// Every source, in the order of `loopwatch_container_stats_source`'s series.
    pub(crate) const ALL: [StatsSource; 2] = [StatsSource::Cgroup, StatsSource::DockerApi];

    /// The `source` label of `loopwatch_container_stats_source`.
    pub(crate) const fn label(self) -> &'static str {
        match self {
            StatsSource::Cgroup => "cgroup",
            StatsSource::DockerApi => "docker_api",
        }
    }
}

/// What the containers feature read at one sampler tick: whether Docker answers,
/// where the numbers come from, the sample (none while Docker is down) and the
/// containers whose removal failed so far.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ContainerReading {
    /// Whether Docker is reachable.
    pub(crate) up: bool,
    /// Where the numbers come from.
    pub(crate) source: StatsSource,
    /// The sample, `None` while Docker is down.
    pub(crate) sample: Option<ContainerSample>,
    /// Containers whose removal failed, each counted once.
    pub(crate) cleanup_failures: u64,
}

/// What shutdown found of this run's containers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct ContainerShutdownReport {
    /// Containers of this run still present at shutdown and removed then.
    pub(crate) removed: Vec<String>,
    /// Containers of this run that could not be removed (also logged).
    pub(crate) left_behind: Vec<(String, String)>,
    /// Whether Docker could be asked at all.
    pub(crate) docker_reachable: bool,
}

/// The counters container cleanup adds to, wherever it happens.
#[derive(Debug, Clone)]
pub(crate) struct CleanupCounters {
    /// `loopwatch_container_cleanup_failures_total`.
    pub(crate) failures: Counter<u64>,
    /// `loopwatch_containers_cleaned_total`.
    pub(crate) cleaned: Counter<u64>,
}

impl CleanupCounters {
    /// The counters among loopwatch's instruments.
    pub(crate) fn of(instruments: &crate::catalog::Instruments) -> Self {
        CleanupCounters {
            failures: instruments
                .loopwatch_container_cleanup_failures_total
                .clone(),
            cleaned: instruments.loopwatch_containers_cleaned_total.clone(),
        }
    }
}

/// Where the periodic work reports: each sample, and the orphans left after each
/// sweep.
pub(crate) struct Reports {
    /// A sample was read (or Docker is down).
    pub(crate) reading: Box<dyn Fn(ContainerReading) + Send + Sync>,
    /// A sweep left this many orphans.
    pub(crate) orphans: Box<dyn Fn(u64) + Send + Sync>,
}
