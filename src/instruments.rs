//! loopwatch's own OpenTelemetry instruments, created from the catalog.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use opentelemetry::metrics::{Counter, Gauge, Meter, ObservableGauge};
use opentelemetry::KeyValue;

use crate::catalog::{self, MetricKind, MetricSpec};
use crate::evaluate::{AlertName, Watched};
use crate::sample::HostReadings;

/// Creates the synchronous gauge a catalog entry describes.
pub(crate) fn gauge(meter: &Meter, spec: &'static MetricSpec) -> Gauge<f64> {
    debug_assert_eq!(spec.kind, MetricKind::Gauge, "{}", spec.name);
    meter
        .f64_gauge(spec.name)
        .with_unit(spec.unit)
        .with_description(spec.description)
        .build()
}

/// Creates the counter a catalog entry describes.
pub(crate) fn counter(meter: &Meter, spec: &'static MetricSpec) -> Counter<u64> {
    debug_assert_eq!(spec.kind, MetricKind::Counter, "{}", spec.name);
    meter
        .u64_counter(spec.name)
        .with_unit(spec.unit)
        .with_description(spec.description)
        .build()
}

/// Creates an observable gauge reporting whatever `read` returns at collection time.
pub(crate) fn observable_gauge(
    meter: &Meter,
    spec: &'static MetricSpec,
    read: impl Fn() -> f64 + Send + Sync + 'static,
) -> ObservableGauge<f64> {
    debug_assert_eq!(spec.kind, MetricKind::Gauge, "{}", spec.name);
    meter
        .f64_observable_gauge(spec.name)
        .with_unit(spec.unit)
        .with_description(spec.description)
        .with_callback(move |observer| observer.observe(read(), &[]))
        .build()
}

/// A kind of invalid observation: which field, and what was wrong with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// A Sharpe ratio that is NaN or infinite.
    SharpeNotFinite,
    /// A max drawdown that is NaN or infinite.
    DrawdownNotFinite,
    /// A negative max drawdown.
    DrawdownNegative,
    /// A diversity that is NaN or infinite.
    DiversityNotFinite,
    /// A diversity outside 0–1.
    DiversityOutOfRange,
    /// More distinct strategies than the population holds.
    UniqueAboveSize,
}

impl Rejection {
    /// Every kind, in the order of their discriminants.
    const ALL: [Rejection; 6] = [
        Rejection::SharpeNotFinite,
        Rejection::DrawdownNotFinite,
        Rejection::DrawdownNegative,
        Rejection::DiversityNotFinite,
        Rejection::DiversityOutOfRange,
        Rejection::UniqueAboveSize,
    ];

    /// The `field` label: the metric the value was meant for.
    fn field(self) -> &'static str {
        match self {
            Rejection::SharpeNotFinite => catalog::SHARPE_RATIO.name,
            Rejection::DrawdownNotFinite | Rejection::DrawdownNegative => {
                catalog::MAX_DRAWDOWN.name
            }
            Rejection::DiversityNotFinite | Rejection::DiversityOutOfRange => {
                catalog::POPULATION_DIVERSITY.name
            }
            Rejection::UniqueAboveSize => catalog::UNIQUE_STRATEGY_COUNT.name,
        }
    }

    /// The `reason` label.
    fn reason(self) -> &'static str {
        match self {
            Rejection::SharpeNotFinite
            | Rejection::DrawdownNotFinite
            | Rejection::DiversityNotFinite => "not_finite",
            Rejection::DrawdownNegative
            | Rejection::DiversityOutOfRange
            | Rejection::UniqueAboveSize => "out_of_range",
        }
    }

    /// What a valid value looks like, for the warning.
    fn expectation(self) -> &'static str {
        match self {
            Rejection::SharpeNotFinite => "a finite number",
            Rejection::DrawdownNotFinite | Rejection::DrawdownNegative => {
                "a finite positive fraction of peak equity (0.25 for a 25% drawdown)"
            }
            Rejection::DiversityNotFinite | Rejection::DiversityOutOfRange => {
                "a number from 0.0 to 1.0"
            }
            Rejection::UniqueAboveSize => "at most the population size",
        }
    }
}

/// Counts and logs rejected observations.
///
/// The log is thinned so a loop that sends NaN on every iteration cannot flood it: a
/// warning is written for the 1st, 2nd, 4th, 8th … rejection of each kind, each
/// carrying the running count. The counter always counts every one.
pub(crate) struct Rejections {
    counter: Counter<u64>,
    attributes: [[KeyValue; 2]; 6],
    counts: [AtomicU64; 6],
}

impl Rejections {
    fn new(meter: &Meter) -> Self {
        let counter = counter(meter, &catalog::REJECTED_OBSERVATIONS_TOTAL);
        let attributes = Rejection::ALL.map(|kind| {
            [
                KeyValue::new("field", kind.field()),
                KeyValue::new("reason", kind.reason()),
            ]
        });
        for attrs in &attributes {
            counter.add(0, attrs);
        }
        Rejections {
            counter,
            attributes,
            counts: Default::default(),
        }
    }

    /// Counts one rejected observation, logging it when the count is a power of two.
    pub(crate) fn reject(&self, kind: Rejection, value: f64, iteration: u64) {
        let index = kind as usize;
        self.counter.add(1, &self.attributes[index]);
        let count = self.counts[index].fetch_add(1, Ordering::Relaxed) + 1;
        if count.is_power_of_two() {
            tracing::warn!(
                field = kind.field(),
                reason = kind.reason(),
                value,
                iteration,
                rejected_so_far = count,
                "rejected an invalid observation; expected {}",
                kind.expectation()
            );
        }
    }
}

/// Handles to every instrument loopwatch records into.
pub(crate) struct Instruments {
    pub(crate) iteration_number: Gauge<f64>,
    pub(crate) execution_time: Gauge<f64>,
    pub(crate) strategy_success: Counter<u64>,
    pub(crate) strategy_failure: Counter<u64>,
    pub(crate) sharpe_ratio: Gauge<f64>,
    pub(crate) max_drawdown: Gauge<f64>,
    pub(crate) population_diversity: Gauge<f64>,
    pub(crate) unique_strategy_count: Gauge<f64>,
    pub(crate) champion_staleness: Gauge<f64>,
    pub(crate) champion_changes: Counter<u64>,
    pub(crate) sampler_ticks: Counter<u64>,
    pub(crate) rejections: Rejections,
    pub(crate) evaluation: EvaluationInstruments,
    _observed: Vec<ObservableGauge<f64>>,
}

/// The evaluator's gauges: rolling values, baselines, streaks, alert and warning state.
pub(crate) struct EvaluationInstruments {
    pub(crate) success_rate: Gauge<f64>,
    pub(crate) avg_sharpe: Gauge<f64>,
    pub(crate) avg_diversity: Gauge<f64>,
    pub(crate) window_iterations: Gauge<f64>,
    pub(crate) rolling_execution_time: Gauge<f64>,
    pub(crate) low_diversity_streak: Gauge<f64>,
    baseline: Gauge<f64>,
    warning: Gauge<f64>,
    alert_firing: Gauge<f64>,
    pub(crate) alert_deliveries: Counter<u64>,
    watched_attributes: [[KeyValue; 1]; 4],
    alert_attributes: [[KeyValue; 1]; 5],
}

impl EvaluationInstruments {
    fn new(meter: &Meter) -> Self {
        let instruments = EvaluationInstruments {
            success_rate: gauge(meter, &catalog::SUCCESS_RATE_10ITER),
            avg_sharpe: gauge(meter, &catalog::AVG_SHARPE_10ITER),
            avg_diversity: gauge(meter, &catalog::AVG_DIVERSITY_10ITER),
            window_iterations: gauge(meter, &catalog::ROLLING_WINDOW_ITERATIONS),
            rolling_execution_time: gauge(meter, &catalog::ROLLING_EXECUTION_TIME_SECONDS),
            low_diversity_streak: gauge(meter, &catalog::LOW_DIVERSITY_STREAK_ITERATIONS),
            baseline: gauge(meter, &catalog::BASELINE),
            warning: gauge(meter, &catalog::PERFORMANCE_WARNING),
            alert_firing: gauge(meter, &catalog::ALERT_FIRING),
            alert_deliveries: counter(meter, &catalog::ALERT_DELIVERIES_TOTAL),
            watched_attributes: Watched::ALL.map(|w| [KeyValue::new("metric", w.metric())]),
            alert_attributes: AlertName::ALL.map(|a| [KeyValue::new("alertname", a.as_str())]),
        };
        for gauge in [
            &instruments.success_rate,
            &instruments.avg_sharpe,
            &instruments.avg_diversity,
            &instruments.window_iterations,
            &instruments.rolling_execution_time,
            &instruments.low_diversity_streak,
        ] {
            gauge.record(0.0, &[]);
        }
        for watched in Watched::ALL {
            instruments.set_baseline(watched, 0.0);
            instruments.set_warning(watched, false);
        }
        for alert in AlertName::ALL {
            instruments.set_firing(alert, false);
        }
        instruments
    }

    pub(crate) fn set_baseline(&self, watched: Watched, value: f64) {
        self.baseline
            .record(value, &self.watched_attributes[watched as usize]);
    }

    pub(crate) fn set_warning(&self, watched: Watched, active: bool) {
        self.warning.record(
            f64::from(u8::from(active)),
            &self.watched_attributes[watched as usize],
        );
    }

    pub(crate) fn set_firing(&self, alert: AlertName, firing: bool) {
        self.alert_firing.record(
            f64::from(u8::from(firing)),
            &self.alert_attributes[alert as usize],
        );
    }
}

impl Instruments {
    /// Creates every instrument and gives each its start-up value, so that every
    /// metric is exported with HELP and TYPE before the first iteration.
    pub(crate) fn new(meter: &Meter, host: &Arc<HostReadings>) -> Self {
        let observed = vec![
            {
                let host = Arc::clone(host);
                observable_gauge(meter, &catalog::MEMORY_USAGE_BYTES, move || {
                    host.process_rss_bytes.get()
                })
            },
            {
                let host = Arc::clone(host);
                observable_gauge(meter, &catalog::CPU_USAGE_PERCENT, move || {
                    host.process_cpu_percent.get()
                })
            },
            {
                let host = Arc::clone(host);
                observable_gauge(meter, &catalog::HOST_MEMORY_USED_BYTES, move || {
                    host.host_memory_used_bytes.get()
                })
            },
            {
                let host = Arc::clone(host);
                observable_gauge(meter, &catalog::HOST_MEMORY_TOTAL_BYTES, move || {
                    host.host_memory_total_bytes.get()
                })
            },
        ];
        let instruments = Instruments {
            iteration_number: gauge(meter, &catalog::ITERATION_NUMBER),
            execution_time: gauge(meter, &catalog::EXECUTION_TIME_SECONDS),
            strategy_success: counter(meter, &catalog::STRATEGY_SUCCESS_TOTAL),
            strategy_failure: counter(meter, &catalog::STRATEGY_FAILURE_TOTAL),
            sharpe_ratio: gauge(meter, &catalog::SHARPE_RATIO),
            max_drawdown: gauge(meter, &catalog::MAX_DRAWDOWN),
            population_diversity: gauge(meter, &catalog::POPULATION_DIVERSITY),
            unique_strategy_count: gauge(meter, &catalog::UNIQUE_STRATEGY_COUNT),
            champion_staleness: gauge(meter, &catalog::CHAMPION_STALENESS_ITERATIONS),
            champion_changes: counter(meter, &catalog::CHAMPION_CHANGES_TOTAL),
            sampler_ticks: counter(meter, &catalog::SAMPLER_TICKS_TOTAL),
            rejections: Rejections::new(meter),
            evaluation: EvaluationInstruments::new(meter),
            _observed: observed,
        };
        // Start-up values, so every metric is served before the first iteration. The
        // SDK drops non-finite gauge values, so "nothing reported yet" is 0, which the
        // descriptions state; the evaluator keeps its own notion of "no data".
        instruments.iteration_number.record(0.0, &[]);
        instruments.execution_time.record(0.0, &[]);
        instruments.strategy_success.add(0, &[]);
        instruments.strategy_failure.add(0, &[]);
        instruments.sharpe_ratio.record(0.0, &[]);
        instruments.max_drawdown.record(0.0, &[]);
        instruments.population_diversity.record(0.0, &[]);
        instruments.unique_strategy_count.record(0.0, &[]);
        instruments.champion_staleness.record(0.0, &[]);
        instruments.champion_changes.add(0, &[]);
        instruments.sampler_ticks.add(0, &[]);
        instruments
    }
}
