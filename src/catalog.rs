//! The catalog: one declarative table of every metric loopwatch exports.
//!
//! The table is the single source of the exported names, kinds, units, descriptions and
//! labels. From it come the public [`MetricSpec`] constants and [`CATALOG`], the
//! crate's instruments struct with one field per row (created, registered and given its
//! start-up value in one place), the metric table of docs/metrics.md, and the checks that the
//! generated Prometheus rules and Grafana dashboard name only metrics that exist.
//!
//! Names here are the exact Prometheus names: the exporter is configured not to append
//! unit or `_total` suffixes, so the OTel instrument and the exposition share one name
//! while the instrument still carries its UCUM unit for OTLP.
//!
//! The instruments of LLM calls follow the OpenTelemetry GenAI conventions: by default
//! the two GenAI rows of the table, or, on request, the newest experimental ones
//! ([`GEN_AI_LATEST`]); [`GenAiConventions::rows`] maps what of a call each records.
//!
//! ```
//! use loopwatch::catalog::{self, MetricKind};
//! assert_eq!(catalog::STRATEGY_SUCCESS_TOTAL.kind, MetricKind::Counter);
//! assert_eq!(catalog::find("memory_usage_bytes"), Some(&catalog::MEMORY_USAGE_BYTES));
//! ```

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use opentelemetry::metrics::{self as otel, Meter, ObservableGauge};
use opentelemetry::KeyValue;

/// The OpenTelemetry instrument kind behind a metric, and so its Prometheus `# TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A monotonic counter (`# TYPE counter`).
    Counter,
    /// A gauge (`# TYPE gauge`), synchronous or observable.
    Gauge,
    /// A histogram (`# TYPE histogram`): `_bucket`, `_sum` and `_count` series.
    Histogram,
}

impl MetricKind {
    /// The Prometheus `# TYPE` keyword for this kind.
    pub const fn prometheus_type(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One exported metric: its name, kind, unit, description and labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricSpec {
    /// Exact Prometheus metric name.
    pub name: &'static str,
    /// The OpenTelemetry instrument's name: the Prometheus name, or the dotted name
    /// of an OpenTelemetry semantic convention (`gen_ai.client.token.usage`), which the
    /// exporter writes with underscores.
    pub instrument: &'static str,
    /// Counter or gauge.
    pub kind: MetricKind,
    /// UCUM unit carried by the OTel instrument (`s`, `By`, `%`, `1`, `{strategy}` …).
    pub unit: &'static str,
    /// Human description, used as `# HELP`; it names the unit in words.
    pub description: &'static str,
    /// Label names the metric's series carry (empty for a single series).
    pub labels: &'static [&'static str],
    /// Set when the metric's name is fixed by the specification loopwatch was first
    /// written to, which existing dashboards and queries follow; the value is the
    /// number of that specification's section, kept for the record (the document is
    /// not in this repository). Only whether it is set matters: it is what
    /// [`MetricSpec::has_fixed_name`] reports, and a test holds every metric without it
    /// to loopwatch's own prefix (`loopwatch_`), a standard process metric's
    /// (`process_`) or an OpenTelemetry convention's name.
    pub(crate) requirement: Option<&'static str>,
    /// When the metric is exported.
    pub presence: Presence,
}

impl MetricSpec {
    /// Whether the metric's name is one that dashboards and queries were written
    /// against before loopwatch existed (`sharpe_ratio`, `memory_usage_bytes`, …):
    /// such a name is kept exactly, most without the `loopwatch_` prefix loopwatch's
    /// own metrics carry, and never changes.
    ///
    /// ```
    /// use loopwatch::catalog::{find, SHARPE_RATIO};
    /// assert!(SHARPE_RATIO.has_fixed_name());
    /// assert!(!find("loopwatch_docker_up").unwrap().has_fixed_name());
    /// ```
    pub const fn has_fixed_name(&self) -> bool {
        self.requirement.is_some()
    }
}

/// When a metric is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// From start-up, before the first iteration.
    Always,
    /// Once Alertmanager URLs are configured.
    WithAlertmanager,
    /// One series per running container of this run; none while there is none.
    PerContainer,
    /// Series per model (and outcome) once an LLM call was recorded; none before.
    PerLlmCall,
    /// A histogram of evaluations, whose series appear with its first observation.
    WithEvaluations,
    /// One series per GPU (and error type) once the GPU sampler read a device; none
    /// without one.
    PerGpu,
    /// Series per model server configured (`[[llm.servers]]`); none without.
    PerModelServer,
    /// Its one series from the first value set; absent before, where no value would
    /// be true (a best so far before anything was scored).
    OnceSet,
}

/// A counter row: counts events as they happen.
pub(crate) type Counter = otel::Counter<u64>;
/// A gauge row recorded by loopwatch as events happen.
pub(crate) type Gauge = otel::Gauge<f64>;
/// A counter row of fractional amounts (US dollars).
pub(crate) type CounterF64 = otel::Counter<f64>;
/// A histogram row; its bucket boundaries are [`histogram_boundaries`]'s.
pub(crate) type Histogram = otel::Histogram<f64>;

/// Token counts: powers of 4 from 1 to 4^13 (67 M), as the GenAI semantic conventions
/// advise for `gen_ai.client.token.usage`.
const TOKEN_BOUNDARIES: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// Seconds: doubling from 10 ms to 82 s, as the GenAI semantic conventions advise
/// for `gen_ai.client.operation.duration`.
const SECONDS_BOUNDARIES: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// Evaluation seconds: 10 ms to an hour, about three steps a decade, with OpenEvolve's
/// default evaluator timeout (300 s) and the default `evaluation_floor` (600 s) as
/// boundaries.
pub(crate) const EVALUATION_SECONDS_BOUNDARIES: [f64; 15] = [
    0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];

/// The bucket boundaries of a histogram row: evaluations' seconds, other seconds, or
/// tokens.
pub fn histogram_boundaries(spec: &MetricSpec) -> &'static [f64] {
    if spec.presence == Presence::WithEvaluations {
        &EVALUATION_SECONDS_BOUNDARIES
    } else if spec.unit == "s" {
        &SECONDS_BOUNDARIES
    } else {
        &TOKEN_BOUNDARIES
    }
}

/// How a row of the table is recorded: what its field in the instruments struct is.
pub(crate) trait Instrument: Sized {
    /// The exported kind.
    const KIND: MetricKind;
    /// Creates and registers the instrument the row describes.
    fn create(meter: &Meter, spec: &'static MetricSpec) -> Self;
    /// Gives each start-up series its zero, so it is exported before any data.
    fn start(&self, series: &[Vec<KeyValue>]);
}

impl Instrument for Counter {
    const KIND: MetricKind = MetricKind::Counter;

    fn create(meter: &Meter, spec: &'static MetricSpec) -> Self {
        meter
            .u64_counter(spec.instrument)
            .with_unit(spec.unit)
            .with_description(spec.description)
            .build()
    }

    fn start(&self, series: &[Vec<KeyValue>]) {
        for labels in series {
            self.add(0, labels);
        }
    }
}

impl Instrument for CounterF64 {
    const KIND: MetricKind = MetricKind::Counter;

    fn create(meter: &Meter, spec: &'static MetricSpec) -> Self {
        meter
            .f64_counter(spec.instrument)
            .with_unit(spec.unit)
            .with_description(spec.description)
            .build()
    }

    fn start(&self, series: &[Vec<KeyValue>]) {
        for labels in series {
            self.add(0.0, labels);
        }
    }
}

impl Instrument for Histogram {
    const KIND: MetricKind = MetricKind::Histogram;

    fn create(meter: &Meter, spec: &'static MetricSpec) -> Self {
        meter
            .f64_histogram(spec.instrument)
            .with_unit(spec.unit)
            .with_description(spec.description)
            .with_boundaries(histogram_boundaries(spec).to_vec())
            .build()
    }

    /// A histogram has no series until its first observation.
    fn start(&self, _series: &[Vec<KeyValue>]) {}
}

impl Instrument for Gauge {
    const KIND: MetricKind = MetricKind::Gauge;

    fn create(meter: &Meter, spec: &'static MetricSpec) -> Self {
        meter
            .f64_gauge(spec.instrument)
            .with_unit(spec.unit)
            .with_description(spec.description)
            .build()
    }

    fn start(&self, series: &[Vec<KeyValue>]) {
        for labels in series {
            self.record(0.0, labels);
        }
    }
}

/// The labelled values of an observed gauge.
type Series = Vec<(Vec<KeyValue>, f64)>;

/// An observable gauge whose series are whatever a sampler last published: the SDK
/// reads them at collection time, and a series not published again disappears (a
/// container that is gone takes its series with it).
pub(crate) struct Observed {
    series: Arc<Mutex<Series>>,
    _gauge: ObservableGauge<f64>,
}

impl Observed {
    /// Publishes the single, unlabelled series: in place once it exists, so that a
    /// sample published on the loop's thread (which settles the monitor's queue when
    /// it finds it full) allocates nothing.
    pub(crate) fn set(&self, value: f64) {
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        match series.as_mut_slice() {
            [(labels, current)] if labels.is_empty() => *current = value,
            _ => *series = vec![(Vec::new(), value)],
        }
    }

    /// Publishes every series at once, replacing the previous ones.
    pub(crate) fn set_series(&self, series: Series) {
        *self.series.lock().unwrap_or_else(PoisonError::into_inner) = series;
    }
}

/// An observable counter whose value a sampler last published (a cumulative total
/// kept elsewhere, such as the process's CPU time).
pub(crate) struct ObservedCounter {
    value: Arc<Mutex<f64>>,
    _counter: otel::ObservableCounter<f64>,
}

impl ObservedCounter {
    /// Publishes the running total.
    pub(crate) fn set(&self, total: f64) {
        *self.value.lock().unwrap_or_else(PoisonError::into_inner) = total;
    }
}

impl Instrument for ObservedCounter {
    const KIND: MetricKind = MetricKind::Counter;

    fn create(meter: &Meter, spec: &'static MetricSpec) -> Self {
        let value: Arc<Mutex<f64>> = Arc::default();
        let read = Arc::clone(&value);
        let counter = meter
            .f64_observable_counter(spec.instrument)
            .with_unit(spec.unit)
            .with_description(spec.description)
            .with_callback(move |observer| {
                observer.observe(*read.lock().unwrap_or_else(PoisonError::into_inner), &[]);
            })
            .build();
        ObservedCounter {
            value,
            _counter: counter,
        }
    }

    fn start(&self, _series: &[Vec<KeyValue>]) {}
}

impl Instrument for Observed {
    const KIND: MetricKind = MetricKind::Gauge;

    fn create(meter: &Meter, spec: &'static MetricSpec) -> Self {
        let series: Arc<Mutex<Series>> = Arc::default();
        let read = Arc::clone(&series);
        let gauge = meter
            .f64_observable_gauge(spec.instrument)
            .with_unit(spec.unit)
            .with_description(spec.description)
            .with_callback(move |observer| {
                for (labels, value) in read.lock().unwrap_or_else(PoisonError::into_inner).iter() {
                    observer.observe(*value, labels);
                }
            })
            .build();
        Observed {
            series,
            _gauge: gauge,
        }
    }

    fn start(&self, series: &[Vec<KeyValue>]) {
        self.set_series(series.iter().map(|labels| (labels.clone(), 0.0)).collect());
    }
}

/// A gauge recorded once per iteration when the monitor settles it: the value lives in
/// an atomic that setting stores to (no lock, no attribute lookup, no allocation), and
/// the SDK reads it through an observable gauge at collection time. The OTel
/// instrument, its unit and its description are the same as a synchronous gauge's.
/// A row of [`Presence::OnceSet`] starts at [`UNSET`], which the collection skips:
/// its series appears with the first value set.
pub(crate) struct AtomicGauge {
    bits: Arc<AtomicU64>,
    _gauge: ObservableGauge<f64>,
}

/// The bits of an [`AtomicGauge`] not yet set: a NaN whose payload no arithmetic
/// makes (theirs is the quiet NaN's), so no value set is mistaken for it.
const UNSET: u64 = 0x7ff8_0000_dead_beef;

impl AtomicGauge {
    /// Sets the value.
    #[inline]
    pub(crate) fn set(&self, value: f64) {
        self.bits.store(value.to_bits(), Ordering::Relaxed);
    }

    /// Sets the value when there is one; otherwise the gauge keeps its last.
    #[inline]
    pub(crate) fn set_present(&self, value: Option<f64>) {
        if let Some(value) = value {
            self.set(value);
        }
    }
}

impl Instrument for AtomicGauge {
    const KIND: MetricKind = MetricKind::Gauge;

    fn create(meter: &Meter, spec: &'static MetricSpec) -> Self {
        let start = match spec.presence {
            Presence::OnceSet => UNSET,
            _ => 0.0f64.to_bits(),
        };
        let bits = Arc::new(AtomicU64::new(start));
        let read = Arc::clone(&bits);
        let gauge = meter
            .f64_observable_gauge(spec.instrument)
            .with_unit(spec.unit)
            .with_description(spec.description)
            .with_callback(move |observer| {
                let bits = read.load(Ordering::Relaxed);
                if bits != UNSET {
                    observer.observe(f64::from_bits(bits), &[]);
                }
            })
            .build();
        AtomicGauge {
            bits,
            _gauge: gauge,
        }
    }

    /// Exported at zero from start-up (the callback observes it), or, for a row of
    /// [`Presence::OnceSet`], from its first value.
    fn start(&self, _series: &[Vec<KeyValue>]) {}
}

/// A counter added to often (as each iteration is settled, on every sampler tick): one
/// atomic add, or one store of a total kept elsewhere, read through an observable
/// counter at collection time (see [`AtomicGauge`]).
pub(crate) struct AtomicCounter {
    count: Arc<AtomicU64>,
    _counter: otel::ObservableCounter<u64>,
}

impl AtomicCounter {
    /// Adds `n`.
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.count.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets the count to `total`, a count its caller keeps (and that never goes
    /// down): a plain store, cheaper than an add's read-modify-write.
    #[inline]
    pub(crate) fn set_total(&self, total: u64) {
        self.count.store(total, Ordering::Relaxed);
    }
}

impl Instrument for AtomicCounter {
    const KIND: MetricKind = MetricKind::Counter;

    fn create(meter: &Meter, spec: &'static MetricSpec) -> Self {
        let count: Arc<AtomicU64> = Arc::default();
        let read = Arc::clone(&count);
        let counter = meter
            .u64_observable_counter(spec.instrument)
            .with_unit(spec.unit)
            .with_description(spec.description)
            .with_callback(move |observer| observer.observe(read.load(Ordering::Relaxed), &[]))
            .build();
        AtomicCounter {
            count,
            _counter: counter,
        }
    }

    fn start(&self, _series: &[Vec<KeyValue>]) {}
}

/// The place of a GenAI row in the instruments struct: its instrument is not made
/// there but by [`GenAiInstruments`](crate::pipeline::GenAiInstruments), under the
/// conventions the monitor was given ([`GenAiConventions`]): the default names are
/// these rows', the latest experimental ones [`GEN_AI_LATEST`]'s. Its kind is the
/// histogram of both default rows.
pub(crate) struct GenAiSlot;

impl Instrument for GenAiSlot {
    const KIND: MetricKind = MetricKind::Histogram;

    fn create(_meter: &Meter, _spec: &'static MetricSpec) -> Self {
        GenAiSlot
    }

    fn start(&self, _series: &[Vec<KeyValue>]) {}
}

/// A row's instrument name: its OpenTelemetry name when it has one, else its
/// Prometheus name.
macro_rules! instrument_name {
    ($otel:literal, $name:literal) => {
        $otel
    };
    (, $name:literal) => {
        $name
    };
}

macro_rules! catalog {
    ($(
        $(#[$doc:meta])*
        $konst:ident / $field:ident: $instrument:ident = $name:literal $(as $otel:literal)?, $unit:literal,
            [$($label:literal),*], $req:expr, $presence:ident, $desc:literal;
    )*) => {
        $(
            $(#[$doc])*
            pub const $konst: MetricSpec = MetricSpec {
                name: $name,
                instrument: instrument_name!($($otel)?, $name),
                kind: <$instrument as Instrument>::KIND,
                unit: $unit,
                description: $desc,
                labels: &[$($label),*],
                requirement: $req,
                presence: Presence::$presence,
            };
        )*

        /// Every metric loopwatch exports, in the order of docs/metrics.md.
        pub const CATALOG: &[MetricSpec] = &[$($konst),*];

        /// Each row's field in [`Instruments`] and its metric name, which must agree.
        #[cfg(test)]
        const FIELDS: &[(&str, &str)] = &[$((stringify!($field), $name)),*];

        /// One instrument per row of the table.
        pub(crate) struct Instruments {
            $(
                $(#[$doc])*
                pub(crate) $field: $instrument,
            )*
        }

        impl Instruments {
            /// Creates every instrument on `meter` and gives each start-up series its
            /// zero. `start_series` names the label sets of a labelled metric that exist
            /// from start-up (an unlabelled metric has its one series).
            pub(crate) fn new(
                meter: &Meter,
                start_series: &dyn Fn(&'static MetricSpec) -> Vec<Vec<KeyValue>>,
            ) -> Self {
                let instruments = Instruments {
                    $( $field: Instrument::create(meter, &$konst), )*
                };
                $(
                    let series = if $konst.labels.is_empty() && $konst.presence == Presence::Always {
                        vec![Vec::new()]
                    } else {
                        start_series(&$konst)
                    };
                    instruments.$field.start(&series);
                )*
                instruments
            }
        }
    };
}

// Kinds: `Counter`, `CounterF64`, `Gauge` and `Histogram` are recorded by loopwatch as
// events happen; `AtomicGauge` and `AtomicCounter` are the unlabelled ones recorded on
// every iteration, kept in atomics and read at collection time; `Observed` gauges are
// published by the samplers and read at collection time; `GenAiSlot` rows are the
// OpenTelemetry GenAI instruments, made under the conventions chosen (see
// [`GenAiConventions`]).
catalog! {
    /// Number of the iteration in progress (1-based).
    ITERATION_NUMBER / iteration_number: AtomicGauge = "iteration_number", "{iteration}", [], Some("1.2"), Always,
        "Number of the iteration in progress, 1-based (iterations).";
    /// Wall-clock duration of the last completed iteration.
    EXECUTION_TIME_SECONDS / execution_time_seconds: AtomicGauge = "execution_time_seconds", "s", [], Some("1.2"), Always,
        "Wall-clock duration of the last completed iteration; 0 before the first (seconds).";
    /// Resident set size of the loop's process.
    MEMORY_USAGE_BYTES / memory_usage_bytes: Observed = "memory_usage_bytes", "By", [], Some("1.2"), Always,
        "Resident set size of the loop: its process, or under loopwatch run the sum over the loop's process tree, workers included (bytes).";
    /// CPU used by the loop's process; 100 means one full core.
    CPU_USAGE_PERCENT / cpu_usage_percent: Observed = "cpu_usage_percent", "%", [], Some("1.2"), Always,
        "CPU used by the loop since the previous sample, summed over its process tree under loopwatch run, 100 = one full core (percent).";
    /// Strategies that completed successfully.
    STRATEGY_SUCCESS_TOTAL / strategy_success_total: AtomicCounter = "strategy_success_total", "{strategy}", [], Some("1.3"), Always,
        "Strategies whose evaluation completed successfully (strategies).";
    /// Strategies that failed.
    STRATEGY_FAILURE_TOTAL / strategy_failure_total: AtomicCounter = "strategy_failure_total", "{strategy}", [], Some("1.3"), Always,
        "Strategies whose evaluation failed (strategies).";
    /// Mean Sharpe ratio of the last iteration's successful strategies.
    SHARPE_RATIO / sharpe_ratio: AtomicGauge = "sharpe_ratio", "1", [], Some("1.3"), Always,
        "Mean annualised Sharpe ratio of the successful strategies of the last completed iteration that had any; 0 before the first (dimensionless ratio).";
    /// Mean max drawdown of the last iteration's successful strategies.
    MAX_DRAWDOWN / max_drawdown: AtomicGauge = "max_drawdown", "1", [], Some("1.3"), Always,
        "Mean maximum drawdown of the successful strategies of the last completed iteration that had any, as a positive fraction of peak equity; 0 before the first (ratio 0-1).";
    /// Diversity of the population, 0 (clones) to 1 (all different).
    POPULATION_DIVERSITY / population_diversity: AtomicGauge = "population_diversity", "1", [], Some("1.4"), Always,
        "Diversity of the population at the last report, 0 = all clones, 1 = all different; 0 before the first report (ratio 0-1).";
    /// Distinct strategies in the population.
    UNIQUE_STRATEGY_COUNT / unique_strategy_count: AtomicGauge = "unique_strategy_count", "{strategy}", [], Some("1.4"), Always,
        "Distinct strategies in the population at the last report; 0 before the first report (strategies).";
    /// Completed iterations since the champion last changed.
    CHAMPION_STALENESS_ITERATIONS / champion_staleness_iterations: AtomicGauge = "champion_staleness_iterations", "{iteration}", [], Some("1.4"), Always,
        "Completed iterations since the champion last changed (iterations).";
    /// Running containers of this run.
    ACTIVE_CONTAINERS / active_containers: Observed = "active_containers", "{container}", [], Some("1.5"), Always,
        "Running loopwatch-managed containers of this run at the last container sample; the last known value while Docker is unreachable (containers).";
    /// Working-set memory per container.
    CONTAINER_MEMORY_USAGE / container_memory_usage: Observed = "container_memory_usage", "By", ["name"], Some("1.5"), PerContainer,
        "Working-set memory of a running container of this run (usage minus inactive file cache, as docker stats reports), by container name (bytes).";
    /// CPU per container.
    CONTAINER_CPU_USAGE / container_cpu_usage: Observed = "container_cpu_usage", "%", ["name"], Some("1.5"), PerContainer,
        "CPU used by a running container of this run since the previous sample, 100 = one full core, by container name (percent).";
    /// Orphans left after the last sweep.
    ORPHANED_CONTAINERS / orphaned_containers: Observed = "orphaned_containers", "{container}", [], Some("1.5"), Always,
        "Orphaned containers still present after the last cleanup sweep: those of dead loops on this host, and this run's own whose removal failed (containers).";
    /// Containers that could not be removed.
    CONTAINER_CLEANUP_FAILURES_TOTAL / loopwatch_container_cleanup_failures_total: Counter = "loopwatch_container_cleanup_failures_total", "{container}", [], Some("4.4"), Always,
        "Containers whose removal failed (orphans of dead loops, or this run's own), each counted once however often it is retried (containers).";
    /// Orphans removed.
    CONTAINERS_CLEANED_TOTAL / loopwatch_containers_cleaned_total: Counter = "loopwatch_containers_cleaned_total", "{container}", [], Some("4.2"), Always,
        "Orphaned containers removed by cleanup sweeps: those of dead loops, and this run's own removed at a retry (containers).";
    /// Where container numbers come from.
    CONTAINER_STATS_SOURCE / loopwatch_container_stats_source: Observed = "loopwatch_container_stats_source", "1", ["source"], None, Always,
        "1 for the source of this run's container numbers, 0 for the other: cgroup (the kernel's files, read by loopwatch) or docker_api (Docker's stats streams, where the cgroup files cannot be read) (boolean).";
    /// Whether Docker answers.
    DOCKER_UP / loopwatch_docker_up: Observed = "loopwatch_docker_up", "1", [], None, Always,
        "1 while the Docker Engine answered the last request, else 0; container metrics pause while it is 0 (boolean).";
    /// Success rate over the rolling window.
    SUCCESS_RATE_10ITER / success_rate_10iter: AtomicGauge = "success_rate_10iter", "1", [], Some("5.1"), Always,
        "Strategy success rate over the last 10 completed iterations, successes / (successes + failures); 0 before any outcome (ratio 0-1).";
    /// Mean Sharpe ratio over the rolling window.
    AVG_SHARPE_10ITER / avg_sharpe_10iter: AtomicGauge = "avg_sharpe_10iter", "1", [], Some("5.1"), Always,
        "Mean of the per-iteration mean Sharpe ratios over the last 10 completed iterations; 0 before any (dimensionless ratio).";
    /// Mean diversity over the rolling window.
    AVG_DIVERSITY_10ITER / avg_diversity_10iter: AtomicGauge = "avg_diversity_10iter", "1", [], Some("5.1"), Always,
        "Mean population diversity over the last 10 completed iterations; 0 before any report (ratio 0-1).";
    /// Host memory in use, total minus available.
    HOST_MEMORY_USED_BYTES / host_memory_used_bytes: Observed = "host_memory_used_bytes", "By", [], Some("3.1"), Always,
        "Host memory in use, total minus available (bytes).";
    /// Total host memory.
    HOST_MEMORY_TOTAL_BYTES / host_memory_total_bytes: Observed = "host_memory_total_bytes", "By", [], Some("3.1"), Always,
        "Total host memory (bytes).";
    /// The memory HighMemoryUsage compares with its limit.
    MEMORY_USED_BYTES / loopwatch_memory_used_bytes: Observed = "loopwatch_memory_used_bytes", "By", [], Some("3.1"), Always,
        "Memory in use that HighMemoryUsage compares with loopwatch_memory_limit_bytes: the working set of the loop's memory cgroup when that cgroup is limited below host memory (as the OOM killer sees it), else host memory in use (bytes).";
    /// The limit HighMemoryUsage compares against.
    MEMORY_LIMIT_BYTES / loopwatch_memory_limit_bytes: Observed = "loopwatch_memory_limit_bytes", "By", [], Some("3.1"), Always,
        "The memory limit that kills the loop: its cgroup's limit when below host memory (a container's --memory, say), else total host memory (bytes).";
    /// The standard process metrics every Prometheus exporter offers.
    PROCESS_CPU_SECONDS_TOTAL / process_cpu_seconds_total: ObservedCounter = "process_cpu_seconds_total", "s", [], None, Always,
        "User and system CPU time this process (the loop, or loopwatch run supervising it) has spent, as every Prometheus client exports it (seconds).";
    /// Resident memory, under its standard name.
    PROCESS_RESIDENT_MEMORY_BYTES / process_resident_memory_bytes: Observed = "process_resident_memory_bytes", "By", [], None, Always,
        "Resident memory of this process (the loop, or loopwatch run supervising it), under its standard name (bytes).";
    /// Virtual memory.
    PROCESS_VIRTUAL_MEMORY_BYTES / process_virtual_memory_bytes: Observed = "process_virtual_memory_bytes", "By", [], None, Always,
        "Virtual memory of this process (bytes).";
    /// Open file descriptors.
    PROCESS_OPEN_FDS / process_open_fds: Observed = "process_open_fds", "{file}", [], None, Always,
        "Open file descriptors of this process (files).";
    /// The file descriptor limit.
    PROCESS_MAX_FDS / process_max_fds: Observed = "process_max_fds", "{file}", [], None, Always,
        "Soft limit on open file descriptors of this process (files).";
    /// When the process started.
    PROCESS_START_TIME_SECONDS / process_start_time_seconds: Observed = "process_start_time_seconds", "s", [], None, Always,
        "Start time of this process since the Unix epoch (seconds).";
    /// Orphaned processes found and not yet removed.
    ORPHANED_PROCESSES / orphaned_processes: Gauge = "orphaned_processes", "{process}", [], Some("4"), Always,
        "Processes of exited or dead loops on this host (carrying a run identity whose owner is gone) found by the last process sweep and not removed (processes).";
    /// Orphaned processes terminated.
    PROCESSES_CLEANED_TOTAL / loopwatch_processes_cleaned_total: Counter = "loopwatch_processes_cleaned_total", "{process}", [], None, Always,
        "Orphaned processes terminated (SIGTERM, then SIGKILL after a grace period): left running by this run's loop when it exited, or by dead loops (processes).";
    /// Orphaned processes that could not be terminated.
    PROCESS_CLEANUP_FAILURES_TOTAL / loopwatch_process_cleanup_failures_total: Counter = "loopwatch_process_cleanup_failures_total", "{process}", [], None, Always,
        "Orphaned processes that could not be terminated (not permitted, or alive after SIGKILL); each is counted once and not retried (processes).";
    /// Processes of the loop.
    LOOP_PROCESSES / loopwatch_loop_processes: Observed = "loopwatch_loop_processes", "{process}", [], None, Always,
        "Processes of the loop: 1 for a loop that links loopwatch; under loopwatch run, the loop's process and every process below it, 0 once it has exited (processes).";
    /// Events a client dropped.
    CLIENT_DROPPED_EVENTS_TOTAL / loopwatch_client_dropped_events_total: Counter = "loopwatch_client_dropped_events_total", "{event}", [], None, Always,
        "Events a loop's client library dropped rather than block the loop (its buffer full, the socket away), as the client reported them (events).";
    /// Errors caught inside the zero-code instrumentation, by framework.
    INSTRUMENTATION_ERRORS_TOTAL / loopwatch_instrumentation_errors_total: Counter = "loopwatch_instrumentation_errors_total", "{error}", ["framework"], None, Always,
        "Exceptions raised inside the zero-code instrumentation of loopwatch run --instrument and caught before they reached the loop, by framework: openevolve, shinka, optuna, deap, nevergrad or other; what the instrumentation would have reported may be missing (errors).";
    /// Iterations in the rolling window.
    ROLLING_WINDOW_ITERATIONS / loopwatch_rolling_window_iterations: AtomicGauge = "loopwatch_rolling_window_iterations", "{iteration}", [], None, Always,
        "Completed iterations in the rolling window, up to its size; rules on rolling values wait for a full window (iterations).";
    /// Outcomes in the rolling window.
    ROLLING_WINDOW_OUTCOMES / loopwatch_rolling_window_outcomes: AtomicGauge = "loopwatch_rolling_window_outcomes", "{outcome}", [], None, Always,
        "Strategy outcomes (successes and failures) in the rolling window; without any the window has no success rate, and LowSuccessRate does not fire (outcomes).";
    /// Mean iteration time over the rolling window.
    ROLLING_EXECUTION_TIME_SECONDS / loopwatch_rolling_execution_time_seconds: AtomicGauge = "loopwatch_rolling_execution_time_seconds", "s", [], None, Always,
        "Mean wall-clock iteration time over the rolling window; 0 before any (seconds).";
    /// Consecutive iterations with diversity below the collapse floor.
    LOW_DIVERSITY_STREAK_ITERATIONS / loopwatch_low_diversity_streak_iterations: AtomicGauge = "loopwatch_low_diversity_streak_iterations", "{iteration}", [], None, Always,
        "Consecutive completed iterations whose population diversity was below the collapse floor (iterations).";
    /// Baselines of the rolling values.
    BASELINE / loopwatch_baseline: Gauge = "loopwatch_baseline", "1", ["metric"], None, Always,
        "Baseline of a rolling value, taken from the first full window, by metric; execution_time_seconds is in seconds, the others are ratios; 0 until taken (value of the metric).";
    /// Active degradation and slowdown warnings.
    PERFORMANCE_WARNING / loopwatch_performance_warning: Gauge = "loopwatch_performance_warning", "1", ["metric"], None, Always,
        "1 while a rolling value is worse than its baseline allows (degradation, or slowdown for execution_time_seconds), else 0 (boolean).";
    /// Alert state, per alert.
    ALERT_FIRING / loopwatch_alert_firing: Gauge = "loopwatch_alert_firing", "1", ["alertname"], None, Always,
        "1 while the in-process evaluator has the alert firing, else 0 (boolean).";
    /// Alert deliveries to Alertmanager.
    ALERT_DELIVERIES_TOTAL / loopwatch_alert_deliveries_total: Counter = "loopwatch_alert_deliveries_total", "{request}", ["url", "outcome"], None, WithAlertmanager,
        "Requests sending alerts to an Alertmanager, by its URL and outcome: success or failure (requests).";
    /// Times the champion changed.
    CHAMPION_CHANGES_TOTAL / loopwatch_champion_changes_total: AtomicCounter = "loopwatch_champion_changes_total", "{change}", [], None, Always,
        "Times the champion strategy changed, for dashboard annotations (changes).";
    /// When the champion last changed.
    CHAMPION_CHANGED_TIMESTAMP_SECONDS / loopwatch_champion_changed_timestamp_seconds: AtomicGauge = "loopwatch_champion_changed_timestamp_seconds", "s", [], None, Always,
        "Unix time of the last champion change, so that each change is one dashboard annotation at its moment; 0 before the first (seconds).";
    /// The best Sharpe ratio of any strategy so far.
    BEST_SHARPE / loopwatch_best_sharpe: AtomicGauge = "loopwatch_best_sharpe", "1", [], None, OnceSet,
        "The best Sharpe ratio of any successful strategy so far, as summary.best_sharpe and the best-so-far curve have it: it changes only when a strategy beats every one before it (dimensionless ratio).";
    /// Observations rejected as invalid.
    REJECTED_OBSERVATIONS_TOTAL / loopwatch_rejected_observations_total: Counter = "loopwatch_rejected_observations_total", "{observation}", ["field", "reason"], None, Always,
        "Observations rejected as invalid, by field and reason (observations).";
    /// Metric collections that failed or panicked.
    COLLECTION_ERRORS_TOTAL / loopwatch_collection_errors_total: Counter = "loopwatch_collection_errors_total", "{error}", ["source"], None, Always,
        "Metric collections that failed or panicked, by source: core or user (errors).";
    /// Renders of the exposition.
    METRICS_RENDERS_TOTAL / loopwatch_metrics_renders_total: Counter = "loopwatch_metrics_renders_total", "{render}", [], None, Always,
        "Collections rendered for GET /metrics; concurrent scrapes share one render (renders).";
    /// HTTP requests refused.
    HTTP_REJECTED_TOTAL / loopwatch_http_rejected_total: Counter = "loopwatch_http_rejected_total", "{request}", ["reason"], None, Always,
        "HTTP requests or connections refused, by reason: overload (503 past the in-flight cap) or connections (past the connection cap) (requests).";
    /// Sampler ticks run.
    SAMPLER_TICKS_TOTAL / loopwatch_sampler_ticks_total: AtomicCounter = "loopwatch_sampler_ticks_total", "{tick}", [], None, Always,
        "Host and process sampler ticks completed (ticks).";
    /// When the iteration in progress, or the last one, started.
    ITERATION_START_TIMESTAMP_SECONDS / loopwatch_iteration_start_timestamp_seconds: AtomicGauge = "loopwatch_iteration_start_timestamp_seconds", "s", [], None, Always,
        "Unix time at which the iteration in progress, or the last one, started; 0 before the first (seconds).";
    /// When the last iteration ended.
    ITERATION_END_TIMESTAMP_SECONDS / loopwatch_iteration_end_timestamp_seconds: AtomicGauge = "loopwatch_iteration_end_timestamp_seconds", "s", [], None, Always,
        "Unix time at which the last iteration ended; 0 before the first; older than the start while one runs (seconds).";
    /// The identity the in-process alerts carry.
    RUN_INFO / loopwatch_run_info: Gauge = "loopwatch_run_info", "1", ["run_id", "hostname", "experiment", "loop"], None, Always,
        "Always 1; carries the run id, host name, experiment and loop name that loopwatch's own alerts are labelled with (run_id, instance = hostname, experiment, loop; the last two empty when not named), for the Prometheus rules to join, so both paths send the same alert (info).";
    /// Whether the loop has said it is done.
    LOOP_DONE / loopwatch_loop_done: Gauge = "loopwatch_loop_done", "1", [], None, Always,
        "1 once the loop has said it is done (Monitor::done, or shutdown), after which it is not called stalled, else 0 (boolean).";
    /// Tokens of each LLM call (OpenTelemetry GenAI).
    GEN_AI_CLIENT_TOKEN_USAGE / gen_ai_client_token_usage: GenAiSlot = "gen_ai_client_token_usage" as "gen_ai.client.token.usage", "{token}", ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_token_type", "gen_ai_request_model", "gen_ai_response_model"], None, PerLlmCall,
        "Tokens used by each LLM call, by token type (input, output), as the answer reported them (tokens).";
    /// Duration of each LLM call (OpenTelemetry GenAI).
    GEN_AI_CLIENT_OPERATION_DURATION_SECONDS / gen_ai_client_operation_duration_seconds: GenAiSlot = "gen_ai_client_operation_duration_seconds" as "gen_ai.client.operation.duration", "s", ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_response_model", "error_type"], None, PerLlmCall,
        "Duration of each LLM call that ended, from the request to the end of the answer (abandoned calls and those the budget blocked or deferred are not in it); error_type is the HTTP status, the provider's error type, or timeout, connection, stream_cut, other on failures, empty otherwise (seconds).";
    /// Time to the first chunk of a streamed LLM answer.
    LLM_TIME_TO_FIRST_CHUNK_SECONDS / loopwatch_llm_time_to_first_chunk_seconds: Histogram = "loopwatch_llm_time_to_first_chunk_seconds", "s", ["model"], None, PerLlmCall,
        "Time from an LLM request to the first chunk of its streamed answer (seconds).";
    /// LLM calls by outcome.
    LLM_CALLS_TOTAL / loopwatch_llm_calls_total: Counter = "loopwatch_llm_calls_total", "{call}", ["model", "outcome", "role"], None, PerLlmCall,
        "LLM calls by model, outcome and role (the X-Loopwatch-Role header or Python's loopwatch.llm_role: at most 16 names, then other; none without one, invalid for what is not a role name). Outcomes: ok, abandoned (cut short by the loop or by loopwatch before the answer ended: not a failure), blocked (refused for good by a spent LLM budget under action = \"block\" or \"stop\" and never sent: free, not a failure), deferred (refused with a retriable 429 while the calls in flight could take the spend past such a budget, never sent: free, not a failure), or the error type (an HTTP status such as 429 or 503, the provider's error type, timeout, connection, stream_cut, other) (calls).";
    /// Spend on LLM calls.
    LLM_COST_USD_TOTAL / loopwatch_llm_cost_usd_total: CounterF64 = "loopwatch_llm_cost_usd_total", "USD", ["model", "role"], None, PerLlmCall,
        "Cost of LLM calls by model and role, from the tokens at the [llm.prices] of loopwatch.toml or the cost the loop reported (US dollars).";
    /// Tokens of LLM calls by role.
    LLM_TOKENS_TOTAL / loopwatch_llm_tokens_total: Counter = "loopwatch_llm_tokens_total", "{token}", ["model", "role", "type"], None, PerLlmCall,
        "Tokens of LLM calls as the answers reported them, by model, role and type: input (cached included) or output (reasoning included) (tokens).";
    /// Roles turned into a fallback label.
    LLM_ROLE_FALLBACKS_TOTAL / loopwatch_llm_role_fallbacks_total: Counter = "loopwatch_llm_role_fallbacks_total", "{call}", ["reason"], None, Always,
        "LLM calls whose role was not kept as its own label, by reason: invalid (not a role name of 1 to 64 ASCII letters, digits and _ - . : /, or a reserved one: labelled invalid) or overflow (past the 16 role names kept: labelled other) (calls).";
    /// Tokens of models without a price.
    LLM_UNPRICED_TOKENS_TOTAL / loopwatch_llm_unpriced_tokens_total: Counter = "loopwatch_llm_unpriced_tokens_total", "{token}", ["model"], None, PerLlmCall,
        "Tokens of LLM calls without a price in loopwatch.toml: all of a model without one, and cache writes when cache_write_input_per_million is not set; their cost is not guessed, so the spend is a lower bound (tokens).";
    /// Reasoning tokens.
    LLM_REASONING_TOKENS_TOTAL / loopwatch_llm_reasoning_tokens_total: Counter = "loopwatch_llm_reasoning_tokens_total", "{token}", ["model"], None, PerLlmCall,
        "Reasoning tokens of LLM calls as the answer reported them (completion_tokens_details or output_tokens_details); already counted in the output tokens (tokens).";
    /// Answers whose usage could not be read.
    LLM_USAGE_MISSING_TOTAL / loopwatch_llm_usage_missing_total: Counter = "loopwatch_llm_usage_missing_total", "{call}", ["model"], None, PerLlmCall,
        "LLM calls the provider may have billed whose usage is unknown: answers without readable usage (a stream without include_usage, an answer that is not JSON or is compressed, a malformed usage object), abandoned calls, and timeouts and cut streams (a provider may bill those); they have no cost, so while this is above zero the spend is a lower bound (calls).";
    /// 429 answers.
    LLM_RATE_LIMITED_TOTAL / loopwatch_llm_rate_limited_total: Counter = "loopwatch_llm_rate_limited_total", "{call}", ["model"], None, PerLlmCall,
        "LLM calls answered 429 Too Many Requests (calls).";
    /// The last Retry-After.
    LLM_RETRY_AFTER_SECONDS / loopwatch_llm_retry_after_seconds: Gauge = "loopwatch_llm_retry_after_seconds", "s", ["model"], None, PerLlmCall,
        "The wait the last 429 answer asked for in its Retry-After header (seconds).";
    /// Requests left before a provider's rate limit.
    LLM_RATELIMIT_REMAINING_REQUESTS / loopwatch_llm_ratelimit_remaining_requests: Gauge = "loopwatch_llm_ratelimit_remaining_requests", "{request}", ["provider", "model"], None, PerLlmCall,
        "Requests the provider will still take before its request limit resets, as its last answer for the model stated them (x-ratelimit-remaining-requests, anthropic-ratelimit-requests-remaining) (requests).";
    /// A provider's request limit.
    LLM_RATELIMIT_LIMIT_REQUESTS / loopwatch_llm_ratelimit_limit_requests: Gauge = "loopwatch_llm_ratelimit_limit_requests", "{request}", ["provider", "model"], None, PerLlmCall,
        "The provider's request limit per window, as its last answer for the model stated it (x-ratelimit-limit-requests, anthropic-ratelimit-requests-limit) (requests).";
    /// Tokens left before a provider's rate limit.
    LLM_RATELIMIT_REMAINING_TOKENS / loopwatch_llm_ratelimit_remaining_tokens: Gauge = "loopwatch_llm_ratelimit_remaining_tokens", "{token}", ["provider", "model", "limit"], None, PerLlmCall,
        "Tokens the provider will still take before a token limit resets, as its last answer for the model stated them, by limit: tokens (OpenAI's tokens per minute, Anthropic's most restrictive token limit), input_tokens or output_tokens (Anthropic's) (tokens).";
    /// A provider's token limits.
    LLM_RATELIMIT_LIMIT_TOKENS / loopwatch_llm_ratelimit_limit_tokens: Gauge = "loopwatch_llm_ratelimit_limit_tokens", "{token}", ["provider", "model", "limit"], None, PerLlmCall,
        "The provider's token limit per window, as its last answer for the model stated it, by limit: tokens, input_tokens or output_tokens (tokens).";
    /// Time to a rate limit's reset.
    LLM_RATELIMIT_RESET_SECONDS / loopwatch_llm_ratelimit_reset_seconds: Gauge = "loopwatch_llm_ratelimit_reset_seconds", "s", ["provider", "model", "limit"], None, PerLlmCall,
        "Time until a rate limit is whole again, as the provider's last answer for the model stated it (a duration such as 6m0s, or an RFC 3339 time taken against the answer's Date) and counted down to the end of that call, by limit: requests, tokens, input_tokens or output_tokens (seconds).";
    /// The least rate-limit headroom, for LLMRateLimitNear.
    LLM_RATELIMIT_HEADROOM_RATIO / loopwatch_llm_ratelimit_headroom_ratio: Gauge = "loopwatch_llm_ratelimit_headroom_ratio", "1", [], None, PerLlmCall,
        "The least rate-limit headroom of any provider and model, for LLMRateLimitNear: remaining over limit of each limit their last answers stated that has not reset since (a limit stated without a reset counts for a minute); 1 while none is known; exported from the first LLM call (ratio 0-1).";
    /// LLM calls in flight.
    LLM_IN_FLIGHT / loopwatch_llm_in_flight: Gauge = "loopwatch_llm_in_flight", "{call}", [], None, Always,
        "LLM calls in flight through the metering proxy now (calls).";
    /// Age of the oldest LLM call in flight.
    LLM_OLDEST_IN_FLIGHT_SECONDS / loopwatch_llm_oldest_in_flight_seconds: Gauge = "loopwatch_llm_oldest_in_flight_seconds", "s", [], None, Always,
        "Age of the oldest LLM call in flight through the metering proxy, at the last sample; 0 with none (seconds).";
    /// Recent LLM calls, for LLMErrors.
    LLM_RECENT_CALLS / loopwatch_llm_recent_calls: Gauge = "loopwatch_llm_recent_calls", "{call}", [], None, Always,
        "LLM calls in the error window: the last llm_error_calls (20) calls of the last 15 minutes (calls).";
    /// Recent failed LLM calls, for LLMErrors.
    LLM_RECENT_FAILURES / loopwatch_llm_recent_failures: Gauge = "loopwatch_llm_recent_failures", "{call}", [], None, Always,
        "Failed LLM calls in the error window (HTTP 5xx, 429, timeouts, connection errors, cut-off streams, the provider's server errors); abandoned calls are not in the window (calls).";
    /// Spend on LLM calls so far.
    LLM_SPEND_USD / loopwatch_llm_spend_usd: Gauge = "loopwatch_llm_spend_usd", "USD", [], None, Always,
        "Cost of all LLM calls of the run so far, for LLMBudget; a lower bound while loopwatch_llm_usage_missing_total or loopwatch_llm_unpriced_tokens_total is above zero (US dollars).";
    /// Spend on LLM calls in the last hour.
    LLM_SPEND_LAST_HOUR_USD / loopwatch_llm_spend_last_hour_usd: Gauge = "loopwatch_llm_spend_last_hour_usd", "USD", [], None, Always,
        "Cost of the LLM calls of the last hour: the rate LLMBudget projects (US dollars).";
    /// Spend on LLM calls since the champion last changed.
    LLM_SPEND_SINCE_CHAMPION_USD / loopwatch_llm_spend_since_champion_usd: Gauge = "loopwatch_llm_spend_since_champion_usd", "USD", [], None, Always,
        "Cost of the LLM calls since the champion last changed (or the start), for LLMSpendWithoutProgress (US dollars).";
    /// Whether a model server could be read.
    LLM_SERVER_UP / loopwatch_llm_server_up: Observed = "loopwatch_llm_server_up", "1", ["server", "kind"], None, PerModelServer,
        "1 while the last read of a local model server ([[llm.servers]], loopwatch run --llm-server) succeeded, 0 before the first and while it cannot be read (down, timing out, or answering what loopwatch cannot read), by server name and kind: vllm, sglang or ollama (boolean).";
    /// Failed reads of a model server.
    LLM_SERVER_READ_ERRORS_TOTAL / loopwatch_llm_server_read_errors_total: Counter = "loopwatch_llm_server_read_errors_total", "{error}", ["server", "kind", "reason"], None, PerModelServer,
        "Reads of a model server that failed, by reason: connection, timeout, status (an HTTP status other than 200), too_large (over 8 MiB) or garbage (not the server's format); its readings are left out until it answers again (errors).";
    /// Requests a model server is processing.
    LLM_SERVER_REQUESTS_RUNNING / loopwatch_llm_server_requests_running: Observed = "loopwatch_llm_server_requests_running", "{request}", ["server", "kind"], None, PerModelServer,
        "Requests a vLLM or SGLang server is processing, at its last read, summed over its engines (vllm:num_requests_running, sglang:num_running_reqs; SGLang's only while it is seen working, see docs/model-servers.md) (requests).";
    /// Requests waiting in a model server's queue.
    LLM_SERVER_REQUESTS_WAITING / loopwatch_llm_server_requests_waiting: Observed = "loopwatch_llm_server_requests_waiting", "{request}", ["server", "kind"], None, PerModelServer,
        "Requests waiting in a vLLM or SGLang server's queue, at its last read, summed over its engines (vllm:num_requests_waiting, sglang:num_queue_reqs; SGLang's only while it is seen working) (requests).";
    /// KV-cache usage of a model server.
    LLM_SERVER_KV_CACHE_USAGE_RATIO / loopwatch_llm_server_kv_cache_usage_ratio: Observed = "loopwatch_llm_server_kv_cache_usage_ratio", "1", ["server", "kind"], None, PerModelServer,
        "Fraction of a vLLM or SGLang server's KV cache in use at its last read, its fullest engine's (vllm:kv_cache_usage_perc, older vllm:gpu_cache_usage_perc; sglang:token_usage, only while it is seen working) (ratio 0-1).";
    /// KV-cache usage of a model server's fullest engine with requests waiting.
    LLM_SERVER_WAITING_KV_CACHE_USAGE_RATIO / loopwatch_llm_server_waiting_kv_cache_usage_ratio: Observed = "loopwatch_llm_server_waiting_kv_cache_usage_ratio", "1", ["server", "kind"], None, PerModelServer,
        "Fraction of the KV cache in use of a vLLM or SGLang server's fullest engine that has requests waiting, at its last read, each engine's waiting and cache paired by their labels: what LLMServerSaturated compares with llm_server_kv_cache_fraction (requests waiting at one engine beside another's full cache are not waiting while full); absent while no engine has requests waiting (ratio 0-1).";
    /// Preemptions of a model server.
    LLM_SERVER_PREEMPTIONS_TOTAL / loopwatch_llm_server_preemptions_total: Counter = "loopwatch_llm_server_preemptions_total", "{preemption}", ["server", "kind"], None, PerModelServer,
        "Requests a vLLM server preempted (vllm:num_preemptions_total) or an SGLang server retracted (sglang:num_retracted_requests_total) to make room in its KV cache, since loopwatch first read it (the first read is where counting starts: those before are not new); it goes on rising across the server's restarts (preemptions).";
    /// Requests an SGLang server retracted in its last logged batch.
    LLM_SERVER_RETRACTED_REQUESTS / loopwatch_llm_server_retracted_requests: Observed = "loopwatch_llm_server_retracted_requests", "{request}", ["server", "kind"], None, PerModelServer,
        "For an SGLang server without sglang:num_retracted_requests_total (older versions): the requests its scheduler retracted in the batch it last logged, at the last read (sglang:num_retracted_reqs, a gauge SGLang resets each time it writes it; only while the server is seen working); above 0 within the minute before counts as preempting for LLMServerSaturated, as loopwatch_llm_server_preemptions_total rising does (requests).";
    /// Prefix-cache hit rate of a model server.
    LLM_SERVER_PREFIX_CACHE_HIT_RATIO / loopwatch_llm_server_prefix_cache_hit_ratio: Observed = "loopwatch_llm_server_prefix_cache_hit_ratio", "1", ["server", "kind"], None, PerModelServer,
        "Prefix-cache hits over lookups of a vLLM or SGLang server, in tokens, over the lookups since the previous read that had any (vllm:prefix_cache_hits_total over vllm:prefix_cache_queries_total, older vllm:gpu_prefix_cache_hit_rate; sglang:cached_tokens_total over sglang:prompt_tokens_total, else sglang:cache_hit_rate) (ratio 0-1).";
    /// Time to first token at a model server.
    LLM_SERVER_TIME_TO_FIRST_TOKEN_SECONDS / loopwatch_llm_server_time_to_first_token_seconds: Observed = "loopwatch_llm_server_time_to_first_token_seconds", "s", ["server", "kind"], None, PerModelServer,
        "Mean time to first token a vLLM or SGLang server measured for the requests since its previous read that had any (its time_to_first_token_seconds histogram); compare with loopwatch_llm_time_to_first_chunk_seconds, the proxy's view (seconds).";
    /// Queue time at a model server.
    LLM_SERVER_QUEUE_TIME_SECONDS / loopwatch_llm_server_queue_time_seconds: Observed = "loopwatch_llm_server_queue_time_seconds", "s", ["server", "kind"], None, PerModelServer,
        "Mean time requests waited in a vLLM or SGLang server's queue, for the requests since its previous read that had any (vllm:request_queue_time_seconds, older vllm:time_in_queue_requests; sglang:queue_time_seconds): a slow first token with a long queue is a busy server, with a short one a slow model (seconds).";
    /// Queue time at a model server, summed.
    LLM_SERVER_QUEUE_SECONDS_TOTAL / loopwatch_llm_server_queue_seconds_total: CounterF64 = "loopwatch_llm_server_queue_seconds_total", "s", ["server", "kind"], None, PerModelServer,
        "Time requests waited in a vLLM or SGLang server's queue, summed over the requests since loopwatch first read it (its queue-time histogram's _sum, counted on across the server's restarts); divided by loopwatch_llm_server_queued_requests_total, their mean over any window: rate(…[5m]) / rate(…[5m]) (seconds).";
    /// Requests whose queue time a model server measured.
    LLM_SERVER_QUEUED_REQUESTS_TOTAL / loopwatch_llm_server_queued_requests_total: Counter = "loopwatch_llm_server_queued_requests_total", "{request}", ["server", "kind"], None, PerModelServer,
        "Requests whose time in the queue a vLLM or SGLang server measured, since loopwatch first read it (its queue-time histogram's _count, counted on across the server's restarts) (requests).";
    /// Time to first token at a model server, summed.
    LLM_SERVER_FIRST_TOKEN_SECONDS_TOTAL / loopwatch_llm_server_first_token_seconds_total: CounterF64 = "loopwatch_llm_server_first_token_seconds_total", "s", ["server", "kind"], None, PerModelServer,
        "Time to first token a vLLM or SGLang server measured, summed over the requests since loopwatch first read it (its time_to_first_token_seconds histogram's _sum, counted on across the server's restarts); divided by loopwatch_llm_server_first_tokens_total, the mean over any window, comparable with the proxy's loopwatch_llm_time_to_first_chunk_seconds over the same window (seconds).";
    /// Requests whose time to first token a model server measured.
    LLM_SERVER_FIRST_TOKENS_TOTAL / loopwatch_llm_server_first_tokens_total: Counter = "loopwatch_llm_server_first_tokens_total", "{request}", ["server", "kind"], None, PerModelServer,
        "Requests whose time to first token a vLLM or SGLang server measured, since loopwatch first read it (its time_to_first_token_seconds histogram's _count, counted on across the server's restarts) (requests).";
    /// Models an Ollama server has loaded.
    LLM_SERVER_MODELS_LOADED / loopwatch_llm_server_models_loaded: Observed = "loopwatch_llm_server_models_loaded", "{model}", ["server", "kind"], None, PerModelServer,
        "Models an Ollama server has loaded, from its /api/ps at the last read (models).";
    /// Memory of the models an Ollama server has loaded.
    LLM_SERVER_MODEL_MEMORY_BYTES / loopwatch_llm_server_model_memory_bytes: Observed = "loopwatch_llm_server_model_memory_bytes", "By", ["server", "kind", "model", "memory"], None, PerModelServer,
        "Memory of a model an Ollama server has loaded, from its /api/ps at the last read, by model (at most 8 by name, the rest as (other models); names cut at 128 characters, a name once) and memory: total (size) or vram (size_vram, the part in GPU memory; the rest runs from host memory, slower) (bytes).";
    /// When the loop (its current process, under `loopwatch run`) started.
    LOOP_START_TIMESTAMP_SECONDS / loopwatch_loop_start_timestamp_seconds: Gauge = "loopwatch_loop_start_timestamp_seconds", "s", [], None, Always,
        "Unix time at which the loop started: the monitor's start, or under loopwatch run the start of its current process, restarts included (seconds).";
    /// Restarts by `loopwatch run --restart` or `--on-stall restart`.
    LOOP_RESTARTS_TOTAL / loopwatch_loop_restarts_total: Counter = "loopwatch_loop_restarts_total", "{restart}", ["reason"], None, Always,
        "Times loopwatch run started the loop again, by reason: exit (it exited, under --restart) or stall (loopwatch ended it after LoopStalled, --on-stall restart) (restarts).";
    /// Restarts within the restart window, for LoopCrashLooping.
    LOOP_RESTARTS_RECENT / loopwatch_loop_restarts_recent: Gauge = "loopwatch_loop_restarts_recent", "{restart}", [], None, Always,
        "Restarts of the loop within the last restart_window (1 h by default), as LoopCrashLooping counts them (restarts).";
    /// Evaluations in flight.
    EVALUATIONS_IN_FLIGHT / loopwatch_evaluations_in_flight: Gauge = "loopwatch_evaluations_in_flight", "{evaluation}", [], None, Always,
        "Evaluations (a candidate's back-test, a program's run) started and not yet ended; at most 10,000 are tracked, and starts past that are rejected (evaluations).";
    /// Age of the oldest evaluation in flight.
    EVALUATION_OLDEST_SECONDS / loopwatch_evaluation_oldest_seconds: Gauge = "loopwatch_evaluation_oldest_seconds", "s", [], None, Always,
        "Age of the oldest evaluation in flight, as of the last start, end or clock tick (about once a second); 0 with none (seconds).";
    /// How long an evaluation may run before EvaluationHung.
    EVALUATION_HUNG_LIMIT_SECONDS / loopwatch_evaluation_hung_limit_seconds: Gauge = "loopwatch_evaluation_hung_limit_seconds", "s", [], None, Always,
        "How long an evaluation may run before EvaluationHung fires: evaluation_factor times the 95th percentile duration of the last 1,000 finished evaluations once 20 have finished, never less than evaluation_floor (seconds).";
    /// Duration of each finished evaluation.
    EVALUATION_DURATION_SECONDS / loopwatch_evaluation_duration_seconds: Histogram = "loopwatch_evaluation_duration_seconds", "s", [], None, WithEvaluations,
        "Duration of each evaluation that ended, from its start to its end, by the loop's clock when both ends carry a time (seconds).";
    /// Evaluations by outcome.
    EVALUATIONS_TOTAL / loopwatch_evaluations_total: Counter = "loopwatch_evaluations_total", "{evaluation}", ["outcome"], None, Always,
        "Evaluations that ended, by outcome: ok, failed, timeout (the loop's own timeout ended it) or killed (loopwatch ended it) (evaluations).";
    /// Time evaluations waited in a queue before they started.
    EVALUATION_QUEUE_WAIT_SECONDS / loopwatch_evaluation_queue_wait_seconds: Histogram = "loopwatch_evaluation_queue_wait_seconds", "s", [], None, WithEvaluations,
        "Time from an evaluation's queueing to its start, for evaluations whose start reported when they were queued (seconds).";
    /// Workers seen in the last minute.
    EVALUATION_WORKERS / loopwatch_evaluation_workers: Gauge = "loopwatch_evaluation_workers", "{worker}", [], None, Always,
        "Workers that ran an evaluation in the last minute or run one now, each known by the worker name, else the pid, its evaluations reported; at most 1,024 are tracked (workers).";
    /// Busy workers over the workers seen in the last minute.
    EVALUATION_WORKER_OCCUPANCY / loopwatch_evaluation_worker_occupancy: Gauge = "loopwatch_evaluation_worker_occupancy", "1", [], None, Always,
        "Workers running an evaluation now over loopwatch_evaluation_workers; 0 with none (ratio 0-1).";
    /// Evaluations loopwatch ended.
    EVALUATIONS_KILLED_TOTAL / loopwatch_evaluations_killed_total: Counter = "loopwatch_evaluations_killed_total", "{evaluation}", [], None, Always,
        "Hung evaluations whose processes loopwatch ended; 0 while nothing asks loopwatch to end them (evaluations).";
    /// GPUs the sampler reads.
    GPU_DEVICES / loopwatch_gpu_devices: Observed = "loopwatch_gpu_devices", "{gpu}", [], None, Always,
        "GPUs the GPU sampler reads (feature gpu): those NVML found at start-up that still answer; 0 without the feature, an NVIDIA driver or a device (GPUs).";
    /// Utilisation per GPU.
    HW_GPU_UTILIZATION_RATIO / hw_gpu_utilization_ratio: Observed = "hw_gpu_utilization_ratio" as "hw.gpu.utilization", "1", ["hw_id", "gpu_index"], None, PerGpu,
        "Fraction of NVML's last sample period in which a kernel ran on the GPU, by device UUID (hw_id) and NVML index (ratio 0-1).";
    /// Video memory in use per GPU.
    HW_GPU_MEMORY_USAGE_BYTES / hw_gpu_memory_usage_bytes: Observed = "hw_gpu_memory_usage_bytes" as "hw.gpu.memory.usage", "By", ["hw_id", "gpu_index"], None, PerGpu,
        "Video memory in use on the GPU, by every process on it, the loop's or not (bytes).";
    /// Video memory per GPU.
    HW_GPU_MEMORY_LIMIT_BYTES / hw_gpu_memory_limit_bytes: Observed = "hw_gpu_memory_limit_bytes" as "hw.gpu.memory.limit", "By", ["hw_id", "gpu_index"], None, PerGpu,
        "Video memory of the GPU in all (bytes).";
    /// Power per GPU.
    HW_POWER_WATTS / hw_power_watts: Observed = "hw_power_watts" as "hw.power", "W", ["hw_id", "gpu_index", "hw_type"], None, PerGpu,
        "Power the GPU draws now, as NVML reads it; hw_type is gpu (watts).";
    /// Temperature per GPU.
    HW_TEMPERATURE_CELSIUS / hw_temperature_celsius: Observed = "hw_temperature_celsius" as "hw.temperature", "Cel", ["hw_id", "gpu_index"], None, PerGpu,
        "Temperature of the GPU's die (degrees Celsius).";
    /// Errors per GPU.
    HW_ERRORS_TOTAL / hw_errors_total: Counter = "hw_errors_total" as "hw.errors", "{error}", ["hw_id", "gpu_index", "hw_type", "error_type"], None, PerGpu,
        "Errors on the GPU since loopwatch started, by error_type: xid (every critical Xid error NVML reported, fatal or not; gpu_index and hw_id are unknown for one of a device NVML no longer names), uncorrected and corrected (ECC errors the driver's volatile counts grew by); hw_type is gpu. What GPUErrors counts is loopwatch_gpu_alerting_errors_total (errors).";
    /// The GPU errors GPUErrors counts, per GPU.
    GPU_ALERTING_ERRORS_TOTAL / loopwatch_gpu_alerting_errors_total: Counter = "loopwatch_gpu_alerting_errors_total", "{error}", ["hw_id", "gpu_index"], None, PerGpu,
        "The GPU errors GPUErrors counts, since loopwatch started: Xid errors in the fatal set ([gpu] fatal_xids) and uncorrected ECC errors, on the GPUs the loop's processes use when they use any, else on every GPU; an ECC Xid and the uncorrected count's rise for the same fault count once. Every error is in hw_errors_total; gpu_index and hw_id are unknown for an Xid of a device NVML no longer names (errors).";
    /// Video memory of the loop's processes per GPU.
    GPU_LOOP_MEMORY_BYTES / loopwatch_gpu_loop_memory_bytes: Observed = "loopwatch_gpu_loop_memory_bytes", "By", ["hw_id", "gpu_index"], None, PerGpu,
        "Video memory of the loop's own processes on the GPU: NVML's compute and graphics processes whose pids are in the loop's process tree, summed (a process whose memory NVML cannot give counts 0); 0 in a pid namespace other than the host's, whose pids NVML's never match; no series for a GPU whose processes NVML cannot list (bytes).";
    /// Processes of the loop's tree per GPU.
    GPU_LOOP_PROCESSES / loopwatch_gpu_loop_processes: Observed = "loopwatch_gpu_loop_processes", "{process}", ["hw_id", "gpu_index"], None, PerGpu,
        "Processes of the loop's process tree in NVML's compute and graphics lists of the GPU (one in both counted once): above 0, the loop uses the GPU (GPUMemoryHigh and GPUErrors look at those); 0 when NVML cannot list its processes, and in a pid namespace other than the host's (processes).";
}

/// A metric of the newest experimental OpenTelemetry GenAI conventions: exported,
/// when they are chosen, instead of the GenAI rows of [`CATALOG`].
macro_rules! genai_latest {
    ($(
        $(#[$doc:meta])*
        $konst:ident = $name:literal as $otel:literal, $kind:ident, $unit:literal, $labels:expr, $desc:literal;
    )*) => {
        $(
            $(#[$doc])*
            pub const $konst: MetricSpec = MetricSpec {
                name: $name,
                instrument: $otel,
                kind: MetricKind::$kind,
                unit: $unit,
                description: $desc,
                labels: &$labels,
                requirement: None,
                presence: Presence::PerLlmCall,
            };
        )*

        /// The metrics of LLM calls under the newest experimental OpenTelemetry GenAI
        /// conventions ([`GenAiConventions::LatestExperimental`]), exported instead of
        /// [`GEN_AI_CLIENT_TOKEN_USAGE`] and [`GEN_AI_CLIENT_OPERATION_DURATION_SECONDS`].
        pub const GEN_AI_LATEST: &[MetricSpec] = &[$($konst),*];
    };
}

/// The labels of the per-call instruments of the newest GenAI conventions: a call's
/// operation, provider, models and error type.
const GEN_AI_CALL_LABELS: [&str; 5] = [
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_response_model",
    "error_type",
];

/// The labels of the usage counters of the newest GenAI conventions: the calls'
/// operation, provider, token modality and models.
const GEN_AI_USAGE_LABELS: [&str; 5] = [
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_token_modality",
    "gen_ai_request_model",
    "gen_ai_response_model",
];

genai_latest! {
    /// Duration of each inference call (latest GenAI conventions).
    GEN_AI_CLIENT_INFERENCE_DURATION_SECONDS = "gen_ai_client_inference_duration_seconds" as "gen_ai.client.inference.duration", Histogram, "s",
        GEN_AI_CALL_LABELS,
        "Duration of each LLM inference call (chat, text completion, responses) that ended, from the request to the end of the answer (abandoned calls and those the budget blocked or deferred are not in it); error_type is the HTTP status, the provider's error type, or timeout, connection, stream_cut, other on failures (seconds).";
    /// Time to the first chunk of a streamed inference answer (latest GenAI conventions).
    GEN_AI_CLIENT_INFERENCE_TIME_TO_FIRST_CHUNK_SECONDS = "gen_ai_client_inference_time_to_first_chunk_seconds" as "gen_ai.client.inference.time_to_first_chunk", Histogram, "s",
        ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_response_model"],
        "Time from the request to the first chunk of each streamed LLM answer (seconds).";
    /// Input tokens of each inference call (latest GenAI conventions).
    GEN_AI_CLIENT_INFERENCE_OPERATION_INPUT_TOKENS = "gen_ai_client_inference_operation_input_tokens" as "gen_ai.client.inference.operation.input_tokens", Histogram, "{token}",
        GEN_AI_CALL_LABELS,
        "Input tokens of each LLM inference call whose answer reported them, cache reads and writes included: their distribution, not their total (tokens).";
    /// Output tokens of each inference call (latest GenAI conventions).
    GEN_AI_CLIENT_INFERENCE_OPERATION_OUTPUT_TOKENS = "gen_ai_client_inference_operation_output_tokens" as "gen_ai.client.inference.operation.output_tokens", Histogram, "{token}",
        GEN_AI_CALL_LABELS,
        "Output tokens of each LLM inference call whose answer reported them, reasoning included: their distribution, not their total (tokens).";
    /// Input tokens of inference calls (latest GenAI conventions).
    GEN_AI_CLIENT_INFERENCE_USAGE_INPUT_TOKENS_TOTAL = "gen_ai_client_inference_usage_input_tokens_total" as "gen_ai.client.inference.usage.input_tokens", Counter, "{token}",
        GEN_AI_USAGE_LABELS,
        "Input tokens of LLM inference calls as the answers reported them, cache reads and writes included; gen_ai_token_modality is unknown, as the answers are not broken down by modality (tokens).";
    /// Output tokens of inference calls (latest GenAI conventions).
    GEN_AI_CLIENT_INFERENCE_USAGE_OUTPUT_TOKENS_TOTAL = "gen_ai_client_inference_usage_output_tokens_total" as "gen_ai.client.inference.usage.output_tokens", Counter, "{token}",
        GEN_AI_USAGE_LABELS,
        "Output tokens of LLM inference calls as the answers reported them, reasoning included; gen_ai_token_modality is unknown (tokens).";
    /// Input tokens read from the provider's cache (latest GenAI conventions).
    GEN_AI_CLIENT_INFERENCE_USAGE_CACHE_READ_INPUT_TOKENS_TOTAL = "gen_ai_client_inference_usage_cache_read_input_tokens_total" as "gen_ai.client.inference.usage.cache_read.input_tokens", Counter, "{token}",
        GEN_AI_USAGE_LABELS,
        "Input tokens of LLM inference calls served from the provider's cache (cached_tokens, cache_read_input_tokens), a part of the input tokens (tokens).";
    /// Input tokens written to the provider's cache (latest GenAI conventions).
    GEN_AI_CLIENT_INFERENCE_USAGE_CACHE_WRITE_INPUT_TOKENS_TOTAL = "gen_ai_client_inference_usage_cache_write_input_tokens_total" as "gen_ai.client.inference.usage.cache_write.input_tokens", Counter, "{token}",
        GEN_AI_USAGE_LABELS,
        "Input tokens of LLM inference calls written to the provider's cache (cache_creation_input_tokens), a part of the input tokens (tokens).";
    /// Reasoning tokens (latest GenAI conventions).
    GEN_AI_CLIENT_INFERENCE_USAGE_REASONING_OUTPUT_TOKENS_TOTAL = "gen_ai_client_inference_usage_reasoning_output_tokens_total" as "gen_ai.client.inference.usage.reasoning.output_tokens", Counter, "{token}",
        GEN_AI_USAGE_LABELS,
        "Output tokens of LLM inference calls spent on reasoning (reasoning_tokens), a part of the output tokens (tokens).";
    /// Duration of each embeddings call (latest GenAI conventions).
    GEN_AI_CLIENT_EMBEDDINGS_DURATION_SECONDS = "gen_ai_client_embeddings_duration_seconds" as "gen_ai.client.embeddings.duration", Histogram, "s",
        GEN_AI_CALL_LABELS,
        "Duration of each embeddings call that ended, from the request to the end of the answer; error_type as for inference calls (seconds).";
    /// Input tokens of each embeddings call (latest GenAI conventions).
    GEN_AI_CLIENT_EMBEDDINGS_OPERATION_INPUT_TOKENS = "gen_ai_client_embeddings_operation_input_tokens" as "gen_ai.client.embeddings.operation.input_tokens", Histogram, "{token}",
        GEN_AI_CALL_LABELS,
        "Input tokens of each embeddings call whose answer reported them (tokens).";
}

/// Which OpenTelemetry GenAI semantic conventions name the instruments of LLM calls.
///
/// The default is the names loopwatch has always exported, those of the conventions
/// as last published in open-telemetry/semantic-conventions (v1.41):
/// `gen_ai.client.token.usage` and `gen_ai.client.operation.duration`. The GenAI
/// conventions have since moved to their own repository
/// (open-telemetry/semantic-conventions-genai) and renamed and split these; with
/// `gen_ai_latest_experimental` in `OTEL_SEMCONV_STABILITY_OPT_IN` (or
/// [`MonitorBuilder::genai_conventions`](crate::MonitorBuilder::genai_conventions))
/// loopwatch exports those instead ([`GEN_AI_LATEST`]). [`GenAiConventions::rows`]
/// is the mapping: which instrument records what of a call, in each.
///
/// ```
/// use loopwatch::catalog::GenAiConventions;
/// assert_eq!(GenAiConventions::from_opt_in("http, gen_ai_latest_experimental"), GenAiConventions::LatestExperimental);
/// assert_eq!(GenAiConventions::from_opt_in("http/dup"), GenAiConventions::Default);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum GenAiConventions {
    /// `gen_ai.client.token.usage` and `gen_ai.client.operation.duration`, as
    /// [`CATALOG`] lists them.
    #[default]
    Default,
    /// The newest experimental names, [`GEN_AI_LATEST`]: `gen_ai.client.inference.*`
    /// (duration, time to the first chunk, tokens per call, and the usage counters of
    /// input, output, cache-read, cache-write and reasoning tokens) and
    /// `gen_ai.client.embeddings.*`.
    LatestExperimental,
}

impl GenAiConventions {
    /// The value of `OTEL_SEMCONV_STABILITY_OPT_IN` that chooses the newest
    /// experimental GenAI conventions.
    pub const OPT_IN: &'static str = "gen_ai_latest_experimental";

    /// The conventions `OTEL_SEMCONV_STABILITY_OPT_IN` chooses: the newest when one of
    /// its comma-separated values is [`OPT_IN`](Self::OPT_IN), else the default (the
    /// values of other signals, such as `http`, are not loopwatch's and are ignored).
    pub fn from_opt_in(value: &str) -> Self {
        if value.split(',').any(|v| v.trim() == Self::OPT_IN) {
            GenAiConventions::LatestExperimental
        } else {
            GenAiConventions::Default
        }
    }

    /// The mapping under these conventions: one row per instrument a call's
    /// measurement is recorded on.
    pub fn rows(self) -> &'static [GenAiRow] {
        match self {
            GenAiConventions::Default => DEFAULT_GENAI_ROWS,
            GenAiConventions::LatestExperimental => LATEST_GENAI_ROWS,
        }
    }

    /// The metrics of LLM calls these conventions export (each once).
    pub fn metrics(self) -> Vec<&'static MetricSpec> {
        let mut specs: Vec<&'static MetricSpec> = Vec::new();
        for row in self.rows() {
            if !specs.iter().any(|s| s.name == row.metric.name) {
                specs.push(row.metric);
            }
        }
        specs
    }
}

/// What of an LLM call a row of the GenAI mapping records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GenAiMeasure {
    /// The call's duration, from the request to the end of the answer: for a call that
    /// ended (failed ones included), not for one abandoned, blocked or deferred.
    Duration,
    /// Time to the first chunk of a streamed answer.
    TimeToFirstChunk,
    /// Input tokens, as the answer reported them (cache reads and writes included).
    InputTokens,
    /// Output tokens, as the answer reported them (reasoning included).
    OutputTokens,
    /// Input tokens read from the provider's cache.
    CacheReadInputTokens,
    /// Input tokens written to the provider's cache.
    CacheWriteInputTokens,
    /// Output tokens spent on reasoning.
    ReasoningOutputTokens,
}

impl GenAiMeasure {
    /// In words, for the mapping's table.
    pub const fn describe(self) -> &'static str {
        match self {
            GenAiMeasure::Duration => "duration",
            GenAiMeasure::TimeToFirstChunk => "time to the first chunk",
            GenAiMeasure::InputTokens => "input tokens",
            GenAiMeasure::OutputTokens => "output tokens",
            GenAiMeasure::CacheReadInputTokens => "cache-read input tokens",
            GenAiMeasure::CacheWriteInputTokens => "cache-write input tokens",
            GenAiMeasure::ReasoningOutputTokens => "reasoning output tokens",
        }
    }
}

/// Which calls a row of the GenAI mapping records (`gen_ai.operation.name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GenAiCalls {
    /// Every call.
    All,
    /// Inference calls: chat, text completions, the Responses API.
    Inference,
    /// Embeddings calls.
    Embeddings,
}

impl GenAiCalls {
    /// Whether a call (an embeddings call, or not) is among these.
    pub const fn include(self, embeddings: bool) -> bool {
        match self {
            GenAiCalls::All => true,
            GenAiCalls::Inference => !embeddings,
            GenAiCalls::Embeddings => embeddings,
        }
    }

    const fn describe(self) -> &'static str {
        match self {
            GenAiCalls::All => "every call",
            GenAiCalls::Inference => "inference calls",
            GenAiCalls::Embeddings => "embeddings calls",
        }
    }
}

/// One row of the GenAI mapping: what of which calls is recorded on which metric, with
/// which attributes beside the call's own (`gen_ai.operation.name`,
/// `gen_ai.provider.name`, `gen_ai.request.model`, `gen_ai.response.model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct GenAiRow {
    /// What of the call.
    pub measure: GenAiMeasure,
    /// Which calls.
    pub calls: GenAiCalls,
    /// The metric (its OpenTelemetry instrument, and its Prometheus name).
    pub metric: &'static MetricSpec,
    /// Attributes of fixed value the row adds (`gen_ai.token.type = input`).
    pub attributes: &'static [(&'static str, &'static str)],
    /// Whether a failed call's `error.type` is among its attributes.
    pub error_type: bool,
}

const fn row(
    measure: GenAiMeasure,
    calls: GenAiCalls,
    metric: &'static MetricSpec,
    attributes: &'static [(&'static str, &'static str)],
    error_type: bool,
) -> GenAiRow {
    GenAiRow {
        measure,
        calls,
        metric,
        attributes,
        error_type,
    }
}

/// The token counters' modality: the answers read do not break usage down by it.
const UNKNOWN_MODALITY: &[(&str, &str)] = &[("gen_ai.token.modality", "unknown")];

/// The default names: what loopwatch has always exported.
const DEFAULT_GENAI_ROWS: &[GenAiRow] = {
    use GenAiCalls::All;
    use GenAiMeasure::*;
    &[
        row(
            Duration,
            All,
            &GEN_AI_CLIENT_OPERATION_DURATION_SECONDS,
            &[],
            true,
        ),
        row(
            InputTokens,
            All,
            &GEN_AI_CLIENT_TOKEN_USAGE,
            &[("gen_ai.token.type", "input")],
            false,
        ),
        row(
            OutputTokens,
            All,
            &GEN_AI_CLIENT_TOKEN_USAGE,
            &[("gen_ai.token.type", "output")],
            false,
        ),
    ]
};

/// The newest experimental names (`gen_ai_latest_experimental`).
const LATEST_GENAI_ROWS: &[GenAiRow] = {
    use GenAiCalls::{Embeddings, Inference};
    use GenAiMeasure::*;
    &[
        row(
            Duration,
            Inference,
            &GEN_AI_CLIENT_INFERENCE_DURATION_SECONDS,
            &[],
            true,
        ),
        row(
            TimeToFirstChunk,
            Inference,
            &GEN_AI_CLIENT_INFERENCE_TIME_TO_FIRST_CHUNK_SECONDS,
            &[],
            false,
        ),
        row(
            InputTokens,
            Inference,
            &GEN_AI_CLIENT_INFERENCE_OPERATION_INPUT_TOKENS,
            &[],
            true,
        ),
        row(
            OutputTokens,
            Inference,
            &GEN_AI_CLIENT_INFERENCE_OPERATION_OUTPUT_TOKENS,
            &[],
            true,
        ),
        row(
            InputTokens,
            Inference,
            &GEN_AI_CLIENT_INFERENCE_USAGE_INPUT_TOKENS_TOTAL,
            UNKNOWN_MODALITY,
            false,
        ),
        row(
            OutputTokens,
            Inference,
            &GEN_AI_CLIENT_INFERENCE_USAGE_OUTPUT_TOKENS_TOTAL,
            UNKNOWN_MODALITY,
            false,
        ),
        row(
            CacheReadInputTokens,
            Inference,
            &GEN_AI_CLIENT_INFERENCE_USAGE_CACHE_READ_INPUT_TOKENS_TOTAL,
            UNKNOWN_MODALITY,
            false,
        ),
        row(
            CacheWriteInputTokens,
            Inference,
            &GEN_AI_CLIENT_INFERENCE_USAGE_CACHE_WRITE_INPUT_TOKENS_TOTAL,
            UNKNOWN_MODALITY,
            false,
        ),
        row(
            ReasoningOutputTokens,
            Inference,
            &GEN_AI_CLIENT_INFERENCE_USAGE_REASONING_OUTPUT_TOKENS_TOTAL,
            UNKNOWN_MODALITY,
            false,
        ),
        row(
            Duration,
            Embeddings,
            &GEN_AI_CLIENT_EMBEDDINGS_DURATION_SECONDS,
            &[],
            true,
        ),
        row(
            InputTokens,
            Embeddings,
            &GEN_AI_CLIENT_EMBEDDINGS_OPERATION_INPUT_TOKENS,
            &[],
            true,
        ),
    ]
};

/// Renders the GenAI mapping as the Markdown table docs/metrics.md carries
/// (`loopwatch metrics --genai-mapping` prints it): for each measurement of a call,
/// the metric it is recorded on by default and under `gen_ai_latest_experimental`.
///
/// ```
/// let table = loopwatch::catalog::genai_mapping_table();
/// assert!(table.contains("`gen_ai.client.inference.usage.cache_read.input_tokens`"));
/// ```
pub fn genai_mapping_table() -> String {
    let cell = |rows: &[&GenAiRow]| -> String {
        if rows.is_empty() {
            return "—".to_string();
        }
        rows.iter()
            .map(|r| {
                let mut attributes: Vec<String> = r
                    .attributes
                    .iter()
                    .map(|(k, v)| format!("`{k}={v}`"))
                    .collect();
                if r.error_type {
                    attributes.push("`error.type` on failures".to_string());
                }
                let scope = if r.calls == GenAiCalls::All {
                    String::new()
                } else {
                    format!(" ({})", r.calls.describe())
                };
                let with = if attributes.is_empty() {
                    String::new()
                } else {
                    format!(", {}", attributes.join(", "))
                };
                format!(
                    "`{}` {} → `{}`{scope}{with}",
                    r.metric.instrument,
                    r.metric.kind.prometheus_type(),
                    r.metric.name
                )
            })
            .collect::<Vec<_>>()
            .join("<br>")
    };
    let mut out =
        String::from("| of a call | default | `gen_ai_latest_experimental` |\n|---|---|---|\n");
    for measure in [
        GenAiMeasure::Duration,
        GenAiMeasure::TimeToFirstChunk,
        GenAiMeasure::InputTokens,
        GenAiMeasure::OutputTokens,
        GenAiMeasure::CacheReadInputTokens,
        GenAiMeasure::CacheWriteInputTokens,
        GenAiMeasure::ReasoningOutputTokens,
    ] {
        let of = |conventions: GenAiConventions| -> Vec<&GenAiRow> {
            conventions
                .rows()
                .iter()
                .filter(|r| r.measure == measure)
                .collect()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            measure.describe(),
            cell(&of(GenAiConventions::Default)),
            cell(&of(GenAiConventions::LatestExperimental))
        );
    }
    out
}

/// The name the OpenTelemetry Prometheus exporter writes an instrument under: its
/// name with dots made underscores (it is configured to append no unit suffix).
fn exporter_name(spec: &MetricSpec) -> String {
    spec.instrument.replace('.', "_")
}

/// The name the OpenTelemetry to Prometheus translation (the collector's, with its
/// suffixes on) gives a semantic convention's instrument: dots made underscores, the
/// unit appended in words (`s` seconds, `By` bytes, `W` watts, `Cel` celsius, `1`
/// ratio for a gauge; an annotation such as `{error}` is dropped), and `_total` for
/// a counter.
#[cfg(test)]
fn translated_name(spec: &MetricSpec) -> String {
    let mut name = exporter_name(spec);
    let unit = match (spec.unit, spec.kind) {
        ("s", _) => "seconds",
        ("By", _) => "bytes",
        ("W", _) => "watts",
        ("Cel", _) => "celsius",
        ("1", MetricKind::Gauge) => "ratio",
        _ => "",
    };
    if !unit.is_empty() {
        name = format!("{name}_{unit}");
    }
    if spec.kind == MetricKind::Counter {
        name.push_str("_total");
    }
    name
}

/// The exposition name of a family the exporter wrote as `written`, where the two
/// differ: a semantic convention's instrument whose unit or counter suffix the
/// OpenTelemetry to Prometheus translation appends (`gen_ai.client.operation.duration`,
/// unit `s`, is `gen_ai_client_operation_duration_seconds`, as the collector and the
/// shared design write it; the counter `gen_ai.client.inference.usage.input_tokens` is
/// `gen_ai_client_inference_usage_input_tokens_total`; `hw.gpu.memory.usage`, unit
/// `By`, is `hw_gpu_memory_usage_bytes`). The instrument keeps its own name for OTLP.
///
/// ```
/// use loopwatch::catalog;
/// assert_eq!(
///     catalog::exposition_name("gen_ai_client_operation_duration"),
///     Some(catalog::GEN_AI_CLIENT_OPERATION_DURATION_SECONDS.name)
/// );
/// assert_eq!(catalog::exposition_name("hw_errors"), Some("hw_errors_total"));
/// assert_eq!(catalog::exposition_name("gen_ai_client_token_usage"), None);
/// ```
pub fn exposition_name(written: &str) -> Option<&'static str> {
    static RENAMED: std::sync::OnceLock<Vec<(String, &'static str)>> = std::sync::OnceLock::new();
    if !written.starts_with("gen_ai_") && !written.starts_with("hw_") {
        return None;
    }
    RENAMED
        .get_or_init(|| {
            CATALOG
                .iter()
                .chain(GEN_AI_LATEST)
                .filter(|spec| exporter_name(spec) != spec.name)
                .map(|spec| (exporter_name(spec), spec.name))
                .collect()
        })
        .iter()
        .find(|(from, _)| from == written)
        .map(|(_, to)| *to)
}

/// Looks a metric up by its exact Prometheus name.
///
/// ```
/// let spec = loopwatch::catalog::find("execution_time_seconds").unwrap();
/// assert_eq!(spec.unit, "s");
/// assert!(loopwatch::catalog::find("no_such_metric").is_none());
/// ```
pub fn find(name: &str) -> Option<&'static MetricSpec> {
    CATALOG.iter().find(|spec| spec.name == name)
}

/// Looks a metric up by its exact Prometheus name among every name loopwatch may
/// export: [`CATALOG`]'s and, under the newest GenAI conventions, [`GEN_AI_LATEST`]'s.
///
/// ```
/// use loopwatch::catalog;
/// assert!(catalog::find("gen_ai_client_inference_duration_seconds").is_none());
/// assert!(catalog::find_exported("gen_ai_client_inference_duration_seconds").is_some());
/// ```
pub fn find_exported(name: &str) -> Option<&'static MetricSpec> {
    find(name).or_else(|| GEN_AI_LATEST.iter().find(|spec| spec.name == name))
}

/// Renders the catalog as the Markdown table docs/metrics.md carries.
///
/// ```
/// let table = loopwatch::catalog::markdown_table();
/// assert!(table.contains("| `sharpe_ratio` | gauge |"));
/// ```
pub fn markdown_table() -> String {
    let mut out =
        String::from("| metric | type | unit | labels | description |\n|---|---|---|---|---|\n");
    for spec in CATALOG {
        let labels = if spec.labels.is_empty() {
            "—".to_string()
        } else {
            spec.labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | `{}` | {} | {} |",
            spec.name,
            spec.kind.prometheus_type(),
            spec.unit,
            labels,
            match spec.presence {
                Presence::Always => spec.description.to_string(),
                Presence::WithAlertmanager => format!(
                    "{} Exported when Alertmanager URLs are set.",
                    spec.description
                ),
                Presence::PerContainer =>
                    format!("{} One series per running container.", spec.description),
                Presence::PerLlmCall => format!(
                    "{} Series appear with the first LLM call.",
                    spec.description
                ),
                Presence::WithEvaluations => format!(
                    "{} Series appear with the first observation.",
                    spec.description
                ),
                Presence::PerGpu => format!(
                    "{} One series per GPU, with the feature gpu and a driver (see docs/gpu.md).",
                    spec.description
                ),
                Presence::PerModelServer =>
                    format!("{} Series per model server configured.", spec.description),
                Presence::OnceSet => format!("{} Absent until its first value.", spec.description),
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_metric_has_unit_and_description_naming_it() {
        for spec in CATALOG {
            assert!(!spec.unit.is_empty(), "{} has no unit", spec.name);
            assert!(
                spec.description.len() > 20,
                "{} has no real description",
                spec.name
            );
            assert!(
                spec.description.ends_with(")."),
                "{}: the description must end by naming the unit in parentheses",
                spec.name
            );
        }
    }

    #[test]
    fn each_instrument_field_is_named_after_its_metric() {
        assert_eq!(FIELDS.len(), CATALOG.len());
        for (field, name) in FIELDS {
            assert_eq!(field, name);
        }
    }

    #[test]
    fn names_are_unique_snake_case_and_counters_end_in_total() {
        let mut seen = HashSet::new();
        for spec in CATALOG.iter().chain(GEN_AI_LATEST) {
            assert!(seen.insert(spec.name), "duplicate {}", spec.name);
            assert!(
                spec.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{} is not snake_case",
                spec.name
            );
            if spec.kind == MetricKind::Counter {
                assert!(spec.name.ends_with("_total"), "{}", spec.name);
            }
            if spec.requirement.is_none() {
                // loopwatch's own, the standard process metrics of every client, or an
                // OpenTelemetry semantic convention's, under its own name.
                assert!(
                    spec.name.starts_with("loopwatch_")
                        || spec.name.starts_with("process_")
                        || spec.instrument.starts_with("gen_ai.")
                        || spec.instrument.starts_with("hw."),
                    "{}",
                    spec.name
                );
            }
            // The exporter's name, else (renamed on collection) the OpenTelemetry to
            // Prometheus translation's: a dotted instrument with its unit's suffix.
            let written = exporter_name(spec);
            if spec.instrument.contains('.') {
                assert_eq!(spec.name, translated_name(spec), "{}", spec.instrument);
            }
            if written == spec.name {
                assert_eq!(exposition_name(&written), None);
            } else {
                assert!(
                    spec.instrument.contains('.') && spec.name == translated_name(spec),
                    "the exporter writes {} as {written}, not {}",
                    spec.instrument,
                    spec.name
                );
                assert_eq!(exposition_name(&written), Some(spec.name));
            }
        }
    }

    /// The mapping: each convention's rows name only its own metrics, each metric's
    /// labels are the call's own, its fixed attributes' and `error_type` when the row
    /// carries it, and each metric of the latest conventions is recorded.
    #[test]
    fn the_genai_mapping_names_each_conventions_metrics_with_their_labels() {
        let label = |key: &str| key.replace('.', "_");
        let call = [
            "gen_ai_operation_name",
            "gen_ai_provider_name",
            "gen_ai_request_model",
            "gen_ai_response_model",
        ];
        for (conventions, metrics) in [
            (
                GenAiConventions::Default,
                vec![
                    &GEN_AI_CLIENT_TOKEN_USAGE,
                    &GEN_AI_CLIENT_OPERATION_DURATION_SECONDS,
                ],
            ),
            (
                GenAiConventions::LatestExperimental,
                GEN_AI_LATEST.iter().collect(),
            ),
        ] {
            let mut named = conventions.metrics();
            named.sort_by_key(|s| s.name);
            let mut expected = metrics.clone();
            expected.sort_by_key(|s| s.name);
            assert_eq!(named, expected, "{conventions:?}");
            for spec in metrics {
                let rows: Vec<&GenAiRow> = conventions
                    .rows()
                    .iter()
                    .filter(|r| r.metric.name == spec.name)
                    .collect();
                let mut labels: Vec<String> = call.iter().map(|l| l.to_string()).collect();
                for r in &rows {
                    labels.extend(r.attributes.iter().map(|(k, _)| label(k)));
                    if r.error_type {
                        labels.push("error_type".to_string());
                    }
                }
                labels.sort();
                labels.dedup();
                let mut declared: Vec<String> = spec.labels.iter().map(|l| l.to_string()).collect();
                declared.sort();
                assert_eq!(labels, declared, "{}", spec.name);
                assert!(rows.iter().all(|r| r.metric.kind == spec.kind));
            }
        }
        // The kinds the conventions give: counters of usage, histograms of a call.
        for spec in GEN_AI_LATEST {
            let usage = spec
                .instrument
                .starts_with("gen_ai.client.inference.usage.");
            assert_eq!(
                spec.kind,
                if usage {
                    MetricKind::Counter
                } else {
                    MetricKind::Histogram
                },
                "{}",
                spec.name
            );
        }
    }
}
