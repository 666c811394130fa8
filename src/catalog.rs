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
    /// When the metric is exported.
    pub presence: Presence,
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
}

macro_rules! catalog {
    ($( $(#[$doc:meta])* $ident:ident = $name:literal, $kind:ident, $unit:literal, $labels:expr, $req:expr, $presence:ident, $desc:literal; )*) => {
        $(
            $(#[$doc])*
            pub const $ident: MetricSpec = MetricSpec {
                name: $name,
                kind: MetricKind::$kind,
                unit: $unit,
                description: $desc,
                labels: $labels,
                requirement: $req,
                presence: Presence::$presence,
            };
        )*
        /// Every metric loopwatch exports, in README order.
        pub const CATALOG: &[MetricSpec] = &[$($ident),*];
    };
}

catalog! {
    /// Number of the iteration in progress (1-based).
    ITERATION_NUMBER = "iteration_number", Gauge, "{iteration}", &[], Some("1.2"), Always,
        "Number of the iteration in progress, 1-based (iterations).";
    /// Wall-clock duration of the last completed iteration.
    EXECUTION_TIME_SECONDS = "execution_time_seconds", Gauge, "s", &[], Some("1.2"), Always,
        "Wall-clock duration of the last completed iteration; 0 before the first (seconds).";
    /// Resident set size of the loop's process.
    MEMORY_USAGE_BYTES = "memory_usage_bytes", Gauge, "By", &[], Some("1.2"), Always,
        "Resident set size of the loop process (bytes).";
    /// CPU used by the loop's process; 100 means one full core.
    CPU_USAGE_PERCENT = "cpu_usage_percent", Gauge, "%", &[], Some("1.2"), Always,
        "CPU used by the loop process since the previous sample, 100 = one full core (percent).";
    /// Strategies that completed successfully.
    STRATEGY_SUCCESS_TOTAL = "strategy_success_total", Counter, "{strategy}", &[], Some("1.3"), Always,
        "Strategies whose evaluation completed successfully (strategies).";
    /// Strategies that failed.
    STRATEGY_FAILURE_TOTAL = "strategy_failure_total", Counter, "{strategy}", &[], Some("1.3"), Always,
        "Strategies whose evaluation failed (strategies).";
    /// Mean Sharpe ratio of the last iteration's successful strategies.
    SHARPE_RATIO = "sharpe_ratio", Gauge, "1", &[], Some("1.3"), Always,
        "Mean annualised Sharpe ratio of the successful strategies of the last completed iteration that had any; 0 before the first (dimensionless ratio).";
    /// Mean max drawdown of the last iteration's successful strategies.
    MAX_DRAWDOWN = "max_drawdown", Gauge, "1", &[], Some("1.3"), Always,
        "Mean maximum drawdown of the successful strategies of the last completed iteration that had any, as a positive fraction of peak equity; 0 before the first (ratio 0-1).";
    /// Diversity of the population, 0 (clones) to 1 (all different).
    POPULATION_DIVERSITY = "population_diversity", Gauge, "1", &[], Some("1.4"), Always,
        "Diversity of the population at the last report, 0 = all clones, 1 = all different; 0 before the first report (ratio 0-1).";
    /// Distinct strategies in the population.
    UNIQUE_STRATEGY_COUNT = "unique_strategy_count", Gauge, "{strategy}", &[], Some("1.4"), Always,
        "Distinct strategies in the population at the last report; 0 before the first report (strategies).";
    /// Completed iterations since the champion last changed.
    CHAMPION_STALENESS_ITERATIONS = "champion_staleness_iterations", Gauge, "{iteration}", &[], Some("1.4"), Always,
        "Completed iterations since the champion last changed (iterations).";
    /// Running containers of this run.
    ACTIVE_CONTAINERS = "active_containers", Gauge, "{container}", &[], Some("1.5"), Always,
        "Running loopwatch-managed containers of this run at the last container sample; the last known value while Docker is unreachable (containers).";
    /// Working-set memory per container.
    CONTAINER_MEMORY_USAGE = "container_memory_usage", Gauge, "By", &["name"], Some("1.5"), PerContainer,
        "Working-set memory of a running container of this run (usage minus inactive file cache, as docker stats reports), by container name (bytes).";
    /// CPU per container.
    CONTAINER_CPU_USAGE = "container_cpu_usage", Gauge, "%", &["name"], Some("1.5"), PerContainer,
        "CPU used by a running container of this run since the previous sample, 100 = one full core, by container name (percent).";
    /// Orphans left after the last sweep.
    ORPHANED_CONTAINERS = "orphaned_containers", Gauge, "{container}", &[], Some("1.5"), Always,
        "Orphaned containers of dead loops on this host still present after the last cleanup sweep (containers).";
    /// Containers that could not be removed.
    CONTAINER_CLEANUP_FAILURES_TOTAL = "loopwatch_container_cleanup_failures_total", Counter, "{container}", &[], Some("4.4"), Always,
        "Attempts to remove an orphaned or finished container that failed (containers).";
    /// Orphans removed.
    CONTAINERS_CLEANED_TOTAL = "loopwatch_containers_cleaned_total", Counter, "{container}", &[], Some("4.2"), Always,
        "Orphaned containers of dead loops removed by cleanup sweeps (containers).";
    /// Whether Docker answers.
    DOCKER_UP = "loopwatch_docker_up", Gauge, "1", &[], None, Always,
        "1 while the Docker Engine answered the last request, else 0; container metrics pause while it is 0 (boolean).";
    /// Success rate over the rolling window.
    SUCCESS_RATE_10ITER = "success_rate_10iter", Gauge, "1", &[], Some("5.1"), Always,
        "Strategy success rate over the last 10 completed iterations, successes / (successes + failures); 0 before any outcome (ratio 0-1).";
    /// Mean Sharpe ratio over the rolling window.
    AVG_SHARPE_10ITER = "avg_sharpe_10iter", Gauge, "1", &[], Some("5.1"), Always,
        "Mean of the per-iteration mean Sharpe ratios over the last 10 completed iterations; 0 before any (dimensionless ratio).";
    /// Mean diversity over the rolling window.
    AVG_DIVERSITY_10ITER = "avg_diversity_10iter", Gauge, "1", &[], Some("5.1"), Always,
        "Mean population diversity over the last 10 completed iterations; 0 before any report (ratio 0-1).";
    /// Host memory in use, total minus available.
    HOST_MEMORY_USED_BYTES = "host_memory_used_bytes", Gauge, "By", &[], Some("3.1"), Always,
        "Host memory in use, total minus available (bytes).";
    /// Total host memory.
    HOST_MEMORY_TOTAL_BYTES = "host_memory_total_bytes", Gauge, "By", &[], Some("3.1"), Always,
        "Total host memory (bytes).";
    /// Iterations in the rolling window.
    ROLLING_WINDOW_ITERATIONS = "loopwatch_rolling_window_iterations", Gauge, "{iteration}", &[], None, Always,
        "Completed iterations in the rolling window, up to its size; rules on rolling values wait for a full window (iterations).";
    /// Mean iteration time over the rolling window.
    ROLLING_EXECUTION_TIME_SECONDS = "loopwatch_rolling_execution_time_seconds", Gauge, "s", &[], None, Always,
        "Mean wall-clock iteration time over the rolling window; 0 before any (seconds).";
    /// Consecutive iterations with diversity below the collapse floor.
    LOW_DIVERSITY_STREAK_ITERATIONS = "loopwatch_low_diversity_streak_iterations", Gauge, "{iteration}", &[], None, Always,
        "Consecutive completed iterations whose population diversity was below the collapse floor (iterations).";
    /// Baselines of the rolling values.
    BASELINE = "loopwatch_baseline", Gauge, "1", &["metric"], None, Always,
        "Baseline of a rolling value, taken from the first full window, by metric; execution_time_seconds is in seconds, the others are ratios; 0 until taken (value of the metric).";
    /// Active degradation and slowdown warnings.
    PERFORMANCE_WARNING = "loopwatch_performance_warning", Gauge, "1", &["metric"], None, Always,
        "1 while a rolling value is worse than its baseline allows (degradation, or slowdown for execution_time_seconds), else 0 (boolean).";
    /// Alert state, per alert.
    ALERT_FIRING = "loopwatch_alert_firing", Gauge, "1", &["alertname"], None, Always,
        "1 while the in-process evaluator has the alert firing, else 0 (boolean).";
    /// Alert deliveries to Alertmanager.
    ALERT_DELIVERIES_TOTAL = "loopwatch_alert_deliveries_total", Counter, "{request}", &["url", "outcome"], None, WithAlertmanager,
        "Requests sending alerts to an Alertmanager, by its URL and outcome: success or failure (requests).";
    /// Times the champion changed.
    CHAMPION_CHANGES_TOTAL = "loopwatch_champion_changes_total", Counter, "{change}", &[], None, Always,
        "Times the champion strategy changed, for dashboard annotations (changes).";
    /// Observations rejected as invalid.
    REJECTED_OBSERVATIONS_TOTAL = "loopwatch_rejected_observations_total", Counter, "{observation}", &["field", "reason"], None, Always,
        "Observations rejected as invalid, by field and reason (observations).";
    /// Metric collections that failed or panicked.
    COLLECTION_ERRORS_TOTAL = "loopwatch_collection_errors_total", Counter, "{error}", &["source"], None, Always,
        "Metric collections that failed or panicked, by source: core or user (errors).";
    /// Renders of the exposition.
    METRICS_RENDERS_TOTAL = "loopwatch_metrics_renders_total", Counter, "{render}", &[], None, Always,
        "Collections rendered for GET /metrics; concurrent scrapes share one render (renders).";
    /// HTTP requests refused.
    HTTP_REJECTED_TOTAL = "loopwatch_http_rejected_total", Counter, "{request}", &["reason"], None, Always,
        "HTTP requests or connections refused, by reason: overload (503 past the in-flight cap) or connections (past the connection cap) (requests).";
    /// Sampler ticks run.
    SAMPLER_TICKS_TOTAL = "loopwatch_sampler_ticks_total", Counter, "{tick}", &[], None, Always,
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
            match spec.presence {
                Presence::Always => spec.description.to_string(),
                Presence::WithAlertmanager => format!(
                    "{} Exported when Alertmanager URLs are set.",
                    spec.description
                ),
                Presence::PerContainer =>
                    format!("{} One series per running container.", spec.description),
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
