//! Settings of a monitor and the thresholds of its alerts, in one place: documented
//! defaults, `LOOPWATCH_*` environment overrides, and the precedence between them.
//!
//! Precedence, highest first: a value set explicitly on the builder, then the
//! environment variable, then the documented default. Programs built on loopwatch thus
//! honour the environment unless their own code (a command-line flag, say) chose a value.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize as _, Serialize};

use crate::alerts::AlertName;
use crate::error::Error;

/// Default address of the metrics endpoint (requirement 1.1: port 8000).
pub(crate) const DEFAULT_LISTEN: &str = "0.0.0.0:8000";
/// Default period of the host, process and container samplers.
pub(crate) const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Default period between orphan sweeps (one also runs at start-up).
pub(crate) const DEFAULT_ORPHAN_SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Default directory of the final export files: the current directory.
pub(crate) const DEFAULT_OUTPUT_DIR: &str = ".";

/// Environment variable naming the metrics endpoint's address.
pub(crate) const ENV_LISTEN: &str = "LOOPWATCH_LISTEN";
/// Environment variable naming the final export directory.
pub(crate) const ENV_OUTPUT_DIR: &str = "LOOPWATCH_OUTPUT_DIR";
/// Environment variable listing Alertmanager base URLs, comma-separated.
pub(crate) const ENV_ALERTMANAGER_URLS: &str = "LOOPWATCH_ALERTMANAGER_URLS";
/// Environment variable giving the sampler period, e.g. `1s` or `500ms`.
pub(crate) const ENV_SAMPLE_INTERVAL: &str = "LOOPWATCH_SAMPLE_INTERVAL";
/// Environment variable naming the thresholds file (`loopwatch.toml`).
pub(crate) const ENV_CONFIG: &str = "LOOPWATCH_CONFIG";
/// Environment variable naming the web configuration file (TLS, basic auth).
pub(crate) const ENV_WEB_CONFIG: &str = "LOOPWATCH_WEB_CONFIG";
/// Environment override of [`MonitorBuilder::register`](crate::MonitorBuilder::register).
pub(crate) const ENV_REGISTER_DIR: &str = "LOOPWATCH_REGISTER_DIR";
/// Standard variables whose presence switches the OTLP export on.
pub(crate) const OTLP_ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
];

/// Shortest sampler period accepted; faster ticks would cost more than they tell.
pub(crate) const MIN_SAMPLE_INTERVAL: Duration = Duration::from_millis(10);

/// Settings resolved from the builder, the environment and the defaults.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    /// Address the metrics endpoint listens on.
    pub(crate) listen: SocketAddr,
    /// Directory receiving `prometheus_metrics_final.txt` and `metrics_final.json`.
    pub(crate) output_dir: PathBuf,
    /// Alertmanager base URLs (e.g. `http://127.0.0.1:9093`); empty means log only.
    pub(crate) alertmanager_urls: Vec<String>,
    /// Period of the host, process and container samplers.
    pub(crate) sample_interval: Duration,
    /// Whether SIGINT and SIGTERM are caught to request a clean stop.
    pub(crate) handle_signals: bool,
    /// Whether shutdown writes the final export files.
    pub(crate) final_export: bool,
    /// Thresholds, windows and intervals of the evaluator, the generated rules and
    /// the dashboard.
    pub(crate) thresholds: Thresholds,
    /// Whether the containers feature (Docker stats, orphan sweeps, shutdown
    /// verification) runs; always false without the `docker` cargo feature.
    pub(crate) containers: bool,
    /// Period between orphan sweeps.
    pub(crate) orphan_sweep_interval: Duration,
    /// Whether every metric is also exported over OTLP/HTTP (feature `otlp`).
    pub(crate) otlp: bool,
    /// Web configuration file (TLS, basic auth) of the endpoint, if any.
    pub(crate) web_config: Option<PathBuf>,
    /// Directory of Prometheus file_sd targets this loop registers in, if any.
    pub(crate) register_dir: Option<PathBuf>,
}

/// Thresholds, windows and intervals of the evaluator. The defaults are the numbers of
/// the requirements; the generated Prometheus rules and dashboard use the same values.
///
/// A TOML file with keys named after the fields sets any of them (the rest keep their
/// defaults); durations are written like `"6h"` or `"90s"`:
///
/// ```
/// let t: loopwatch::Thresholds = "staleness_iterations = 30\nstall_floor = \"2m\"".parse().unwrap();
/// assert_eq!(t.staleness_iterations, 30);
/// assert_eq!(t.stall_floor, std::time::Duration::from_secs(120));
/// assert_eq!(t.memory_fraction, 0.8);
/// let err = "memory_fraction = 1.5".parse::<loopwatch::Thresholds>().unwrap_err();
/// assert!(err.to_string().contains("memory_fraction"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Iterations in the rolling windows (default 10).
    pub window: usize,
    /// HighMemoryUsage fires when host memory in use exceeds this fraction (0.80).
    pub memory_fraction: f64,
    /// …and resolves only once it falls below this fraction (0.78), so memory that
    /// hovers at the threshold does not flap.
    pub memory_clear_fraction: f64,
    /// Consecutive samples above the threshold before HighMemoryUsage fires (1).
    pub memory_samples: u32,
    /// DiversityCollapse: diversity below this (0.1) …
    pub diversity_floor: f64,
    /// … in each of this many consecutive iterations (5).
    pub diversity_iterations: u64,
    /// ChampionStaleness: iterations since the champion last changed (20).
    pub staleness_iterations: u64,
    /// LowSuccessRate: success rate over a full window below this (0.20).
    pub success_rate_floor: f64,
    /// ContainerCleanupFailures: orphaned containers above this (3).
    pub orphan_limit: u64,
    /// "Performance degradation detected": a rolling average worse than its baseline
    /// by more than this fraction (0.20) of the baseline (of its magnitude, for the
    /// signed mean Sharpe).
    pub degradation_fraction: f64,
    /// Smallest baseline magnitude the mean Sharpe's degradation is measured against
    /// (0.1), so a baseline near zero (0.01, say) does not make noise a degradation.
    /// Success rate and diversity, non-negative ratios, have no floor.
    pub baseline_floor: f64,
    /// "Performance slowdown detected": mean iteration time above this multiple of
    /// the baseline (1.5).
    pub slowdown_factor: f64,
    /// LoopStalled: an iteration running, or no new one started after the last ended,
    /// for longer than this multiple of the rolling mean iteration time (10) …
    pub stall_factor: f64,
    /// … or than this floor, whichever is longer (60 s), so that a loop of very fast
    /// iterations is not called stalled by a garbage-collection pause.
    #[serde(serialize_with = "seconds", deserialize_with = "duration")]
    pub stall_floor: Duration,
    /// Period of the long-run statistics log line (6 h).
    #[serde(serialize_with = "seconds", deserialize_with = "duration")]
    pub stats_interval: Duration,
    /// How long a resolved alert is held back before its resolution is sent (15 s):
    /// longer than a Prometheus rule on the same condition takes to notice (a 5 s
    /// scrape plus a 5 s evaluation), so that with both paths pointed at one
    /// Alertmanager the rule resolves first and the problem is resolved once.
    #[serde(serialize_with = "seconds", deserialize_with = "duration")]
    pub alert_resolve_hold: Duration,
    /// Period at which firing alerts are re-sent to Alertmanager (15 s).
    #[serde(serialize_with = "seconds", deserialize_with = "duration")]
    pub alert_resend_interval: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            window: 10,
            memory_fraction: 0.80,
            memory_clear_fraction: 0.78,
            memory_samples: 1,
            diversity_floor: 0.1,
            diversity_iterations: 5,
            staleness_iterations: 20,
            success_rate_floor: 0.20,
            orphan_limit: 3,
            degradation_fraction: 0.20,
            baseline_floor: 0.1,
            slowdown_factor: 1.5,
            stall_factor: 10.0,
            stall_floor: Duration::from_secs(60),
            stats_interval: Duration::from_secs(6 * 3600),
            alert_resolve_hold: Duration::from_secs(15),
            alert_resend_interval: Duration::from_secs(15),
        }
    }
}

impl Thresholds {
    /// The threshold an alert compares against, as shown with its value.
    pub(crate) fn threshold_of(&self, alert: AlertName) -> f64 {
        match alert {
            AlertName::HighMemoryUsage => self.memory_fraction,
            AlertName::DiversityCollapse => self.diversity_floor,
            AlertName::ChampionStaleness => self.staleness_iterations as f64,
            AlertName::LowSuccessRate => self.success_rate_floor,
            AlertName::ContainerCleanupFailures => self.orphan_limit as f64,
            AlertName::LoopStalled => self.stall_floor.as_secs_f64(),
            // Any failing exit status.
            AlertName::LoopExited => 0.0,
        }
    }

    /// Checks each value; the error names the key and says what is expected.
    pub(crate) fn check(&self) -> Result<(), ThresholdError> {
        let fraction = |v: f64| 0.0 < v && v <= 1.0;
        let checks: [(&'static str, bool, String, &'static str); 14] = [
            (
                "window",
                self.window >= 1,
                self.window.to_string(),
                "at least one iteration",
            ),
            (
                "memory_fraction",
                fraction(self.memory_fraction),
                self.memory_fraction.to_string(),
                "a fraction in (0, 1]",
            ),
            (
                "memory_clear_fraction",
                0.0 <= self.memory_clear_fraction
                    && self.memory_clear_fraction <= self.memory_fraction,
                self.memory_clear_fraction.to_string(),
                "a fraction no higher than memory_fraction",
            ),
            (
                "memory_samples",
                self.memory_samples >= 1,
                self.memory_samples.to_string(),
                "at least 1",
            ),
            (
                "diversity_floor",
                fraction(self.diversity_floor),
                self.diversity_floor.to_string(),
                "a fraction in (0, 1]",
            ),
            (
                "diversity_iterations",
                self.diversity_iterations >= 1,
                self.diversity_iterations.to_string(),
                "at least 1",
            ),
            (
                "staleness_iterations",
                self.staleness_iterations >= 1,
                self.staleness_iterations.to_string(),
                "at least 1",
            ),
            (
                "success_rate_floor",
                fraction(self.success_rate_floor),
                self.success_rate_floor.to_string(),
                "a fraction in (0, 1]",
            ),
            (
                "degradation_fraction",
                fraction(self.degradation_fraction),
                self.degradation_fraction.to_string(),
                "a fraction in (0, 1]",
            ),
            (
                "baseline_floor",
                self.baseline_floor >= 0.0,
                self.baseline_floor.to_string(),
                "a non-negative number",
            ),
            (
                "slowdown_factor",
                self.slowdown_factor > 1.0,
                self.slowdown_factor.to_string(),
                "a factor above 1",
            ),
            (
                "stall_factor",
                self.stall_factor >= 1.0,
                self.stall_factor.to_string(),
                "a factor of at least 1",
            ),
            (
                "stall_floor",
                !self.stall_floor.is_zero(),
                format!("{:?}", self.stall_floor),
                "a positive duration",
            ),
            (
                "stats_interval",
                !self.stats_interval.is_zero() && !self.alert_resend_interval.is_zero(),
                format!("{:?}/{:?}", self.stats_interval, self.alert_resend_interval),
                "positive durations (stats_interval, alert_resend_interval)",
            ),
        ];
        match checks.into_iter().find(|(_, ok, _, _)| !ok) {
            None => Ok(()),
            Some((key, _, value, expected)) => Err(ThresholdError {
                key,
                value,
                expected,
            }),
        }
    }

    /// Reads thresholds from a TOML file: keys named after the fields, the rest at
    /// their defaults. Unknown keys and out-of-range values are errors naming the key.
    pub fn from_file(path: &std::path::Path) -> Result<Thresholds, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigFile {
            path: path.to_path_buf(),
            reason: source.to_string(),
        })?;
        text.parse().map_err(|e: Error| Error::ConfigFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

impl std::str::FromStr for Thresholds {
    type Err = Error;

    /// Parses the TOML text of a `loopwatch.toml`.
    fn from_str(text: &str) -> Result<Thresholds, Error> {
        let thresholds: Thresholds = toml::from_str(text).map_err(|e| Error::InvalidSetting {
            variable: "loopwatch.toml",
            value: e.span().map_or(String::new(), |span| {
                text.get(span).unwrap_or_default().to_string()
            }),
            reason: e.message().to_string(),
        })?;
        thresholds.check()?;
        Ok(thresholds)
    }
}

/// A threshold outside its range: which key, its value, what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ThresholdError {
    pub(crate) key: &'static str,
    pub(crate) value: String,
    pub(crate) expected: &'static str,
}

impl From<ThresholdError> for Error {
    fn from(e: ThresholdError) -> Error {
        Error::InvalidSetting {
            variable: e.key,
            value: e.value,
            reason: format!("expected {}", e.expected),
        }
    }
}

/// Reads a duration written as `"90s"`, `"6h"` or a number of seconds.
fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Written {
        Text(String),
        Seconds(f64),
    }
    match Written::deserialize(d)? {
        Written::Text(text) => humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("{text:?} is not a duration like \"90s\": {e}"))
        }),
        Written::Seconds(s) if s.is_finite() && s >= 0.0 => Ok(Duration::from_secs_f64(s)),
        Written::Seconds(s) => Err(serde::de::Error::custom(format!(
            "{s} is not a number of seconds"
        ))),
    }
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Reads one environment variable; unset and empty both mean "not given".
pub(crate) fn env_var(name: &'static str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn invalid(variable: &'static str, value: &str, reason: impl Into<String>) -> Error {
    Error::InvalidSetting {
        variable,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Parses a listen address such as `0.0.0.0:8000`, `127.0.0.1:0` or `localhost:9000`.
pub(crate) fn parse_listen(variable: &'static str, value: &str) -> Result<SocketAddr, Error> {
    value
        .to_socket_addrs()
        .map_err(|e| invalid(variable, value, format!("expected HOST:PORT ({e})")))?
        .next()
        .ok_or_else(|| invalid(variable, value, "the address resolved to nothing"))
}

/// Parses a period such as `1s`, `250ms` or `2m`.
pub(crate) fn parse_interval(variable: &'static str, value: &str) -> Result<Duration, Error> {
    let interval = humantime::parse_duration(value).map_err(|e| {
        invalid(
            variable,
            value,
            format!("expected a duration like 1s or 500ms ({e})"),
        )
    })?;
    if interval < MIN_SAMPLE_INTERVAL {
        return Err(invalid(variable, value, "the period must be at least 10ms"));
    }
    Ok(interval)
}

/// Parses a comma-separated list of Alertmanager base URLs.
pub(crate) fn parse_alertmanager_urls(
    variable: &'static str,
    value: &str,
) -> Result<Vec<String>, Error> {
    let mut urls = Vec::new();
    for url in value.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| invalid(variable, value, format!("{url:?} must start with http://")))?;
        if rest.trim_end_matches('/').is_empty() {
            return Err(invalid(variable, value, format!("{url:?} has no host")));
        }
        urls.push(url.trim_end_matches('/').to_string());
    }
    Ok(urls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen(ENV_LISTEN, "127.0.0.1:9100").unwrap(),
            "127.0.0.1:9100".parse::<SocketAddr>().unwrap()
        );
        let err = parse_listen(ENV_LISTEN, "8000").unwrap_err().to_string();
        assert!(err.contains("LOOPWATCH_LISTEN"), "{err}");
        assert!(err.contains("\"8000\""), "{err}");
    }

    #[test]
    fn intervals() {
        assert_eq!(
            parse_interval(ENV_SAMPLE_INTERVAL, "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            parse_interval(ENV_SAMPLE_INTERVAL, "2s").unwrap(),
            Duration::from_secs(2)
        );
        for bad in ["fast", "1ms", "-1s", "10"] {
            let err = parse_interval(ENV_SAMPLE_INTERVAL, bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains("LOOPWATCH_SAMPLE_INTERVAL"), "{bad}: {err}");
        }
    }

    #[test]
    fn alertmanager_urls() {
        assert_eq!(
            parse_alertmanager_urls(ENV_ALERTMANAGER_URLS, "http://a:9093/, http://b:9094")
                .unwrap(),
            vec!["http://a:9093".to_string(), "http://b:9094".to_string()]
        );
        assert!(parse_alertmanager_urls(ENV_ALERTMANAGER_URLS, "https://a:9093").is_err());
        assert!(parse_alertmanager_urls(ENV_ALERTMANAGER_URLS, "http://").is_err());
    }
}
