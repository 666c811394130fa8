//! The catalog: one declarative table of every metric loopwatch exports.
//!
//! The table is the single source for instrument registration, the README's metric
//! table, the generated Prometheus rules and dashboard, and the tests that check all of
//! them against each other. Names here are the exact Prometheus names: the exporter is
//! configured not to append unit or `_total` suffixes, so the OTel instrument and the
//! exposition share one name while the instrument still carries its UCUM unit for OTLP.

use std::fmt::Write as _;

/// The OpenTelemetry instrument kind behind a metric, and so its Prometheus `# TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A monotonic counter (`# TYPE counter`).
    Counter,
    /// A gauge (`# TYPE gauge`), synchronous or observable.
    Gauge,
}

impl MetricKind {
    /// The Prometheus `# TYPE` keyword for this kind.
    pub const fn prometheus_type(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        }
    }
}

/// One exported metric: its name, kind, unit, description and labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricSpec {
    /// Exact Prometheus metric name.
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: MetricKind,
    /// UCUM unit carried by the OTel instrument (`s`, `By`, `%`, `1`, `{strategy}` …).
    pub unit: &'static str,
    /// Human description, used as `# HELP`; it names the unit in words.
    pub description: &'static str,
    /// Label names the metric's series carry (empty for a single series).
    pub labels: &'static [&'static str],
    /// The requirement of the original specification this metric answers, if any.
    pub requirement: Option<&'static str>,
}

macro_rules! catalog {
    ($( $(#[$doc:meta])* $ident:ident = $name:literal, $kind:ident, $unit:literal, $labels:expr, $req:expr, $desc:literal; )*) => {
        $(
            $(#[$doc])*
            pub const $ident: MetricSpec = MetricSpec {
                name: $name,
                kind: MetricKind::$kind,
                unit: $unit,
                description: $desc,
                labels: $labels,
                requirement: $req,
            };
        )*
        /// Every metric loopwatch exports, in README order.
        pub const CATALOG: &[MetricSpec] = &[$($ident),*];
    };
}

catalog! {
    /// Number of the iteration in progress (1-based).
    ITERATION_NUMBER = "iteration_number", Gauge, "{iteration}", &[], Some("1.2"),
        "Number of the iteration in progress, 1-based (iterations).";
    /// Wall-clock duration of the last completed iteration.
    EXECUTION_TIME_SECONDS = "execution_time_seconds", Gauge, "s", &[], Some("1.2"),
        "Wall-clock duration of the last completed iteration; 0 before the first (seconds).";
    /// Resident set size of the loop's process.
    MEMORY_USAGE_BYTES = "memory_usage_bytes", Gauge, "By", &[], Some("1.2"),
        "Resident set size of the loop process (bytes).";
    /// CPU used by the loop's process; 100 means one full core.
    CPU_USAGE_PERCENT = "cpu_usage_percent", Gauge, "%", &[], Some("1.2"),
        "CPU used by the loop process since the previous sample, 100 = one full core (percent).";
    /// Strategies that completed successfully.
    STRATEGY_SUCCESS_TOTAL = "strategy_success_total", Counter, "{strategy}", &[], Some("1.3"),
        "Strategies whose evaluation completed successfully (strategies).";
    /// Strategies that failed.
    STRATEGY_FAILURE_TOTAL = "strategy_failure_total", Counter, "{strategy}", &[], Some("1.3"),
        "Strategies whose evaluation failed (strategies).";
    /// Mean Sharpe ratio of the last iteration's successful strategies.
    SHARPE_RATIO = "sharpe_ratio", Gauge, "1", &[], Some("1.3"),
        "Mean annualised Sharpe ratio of the successful strategies of the last completed iteration that had any; 0 before the first (dimensionless ratio).";
    /// Mean max drawdown of the last iteration's successful strategies.
    MAX_DRAWDOWN = "max_drawdown", Gauge, "1", &[], Some("1.3"),
        "Mean maximum drawdown of the successful strategies of the last completed iteration that had any, as a positive fraction of peak equity; 0 before the first (ratio 0-1).";
    /// Diversity of the population, 0 (clones) to 1 (all different).
    POPULATION_DIVERSITY = "population_diversity", Gauge, "1", &[], Some("1.4"),
        "Diversity of the population at the last report, 0 = all clones, 1 = all different; 0 before the first report (ratio 0-1).";
    /// Distinct strategies in the population.
    UNIQUE_STRATEGY_COUNT = "unique_strategy_count", Gauge, "{strategy}", &[], Some("1.4"),
        "Distinct strategies in the population at the last report; 0 before the first report (strategies).";
    /// Completed iterations since the champion last changed.
    CHAMPION_STALENESS_ITERATIONS = "champion_staleness_iterations", Gauge, "{iteration}", &[], Some("1.4"),
        "Completed iterations since the champion last changed (iterations).";
    /// Host memory in use, total minus available.
    HOST_MEMORY_USED_BYTES = "host_memory_used_bytes", Gauge, "By", &[], Some("3.1"),
        "Host memory in use, total minus available (bytes).";
    /// Total host memory.
    HOST_MEMORY_TOTAL_BYTES = "host_memory_total_bytes", Gauge, "By", &[], Some("3.1"),
        "Total host memory (bytes).";
    /// Times the champion changed.
    CHAMPION_CHANGES_TOTAL = "loopwatch_champion_changes_total", Counter, "{change}", &[], None,
        "Times the champion strategy changed, for dashboard annotations (changes).";
    /// Observations rejected as invalid.
    REJECTED_OBSERVATIONS_TOTAL = "loopwatch_rejected_observations_total", Counter, "{observation}", &["field", "reason"], None,
        "Observations rejected as invalid, by field and reason (observations).";
    /// Metric collections that failed or panicked.
    COLLECTION_ERRORS_TOTAL = "loopwatch_collection_errors_total", Counter, "{error}", &["source"], None,
        "Metric collections that failed or panicked, by source: core or user (errors).";
    /// Sampler ticks run.
    SAMPLER_TICKS_TOTAL = "loopwatch_sampler_ticks_total", Counter, "{tick}", &[], None,
        "Host and process sampler ticks completed (ticks).";
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

/// Renders the catalog as the Markdown table the README carries.
///
/// ```
/// let table = loopwatch::catalog::markdown_table();
/// assert!(table.contains("| `sharpe_ratio` | gauge |"));
/// ```
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| metric | type | unit | labels | requirement | description |\n|---|---|---|---|---|---|\n",
    );
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
            "| `{}` | {} | `{}` | {} | {} | {} |",
            spec.name,
            spec.kind.prometheus_type(),
            spec.unit,
            labels,
            spec.requirement.unwrap_or("—"),
            spec.description
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
                spec.description.ends_with(").") || spec.description.ends_with(")."),
                "{}: the description must end by naming the unit in parentheses",
                spec.name
            );
        }
    }

    #[test]
    fn names_are_unique_snake_case_and_counters_end_in_total() {
        let mut seen = HashSet::new();
        for spec in CATALOG {
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
                assert!(spec.name.starts_with("loopwatch_"), "{}", spec.name);
            }
        }
    }
}
