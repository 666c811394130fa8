//! Settings of a monitor and the thresholds of its alerts, in one place: documented
//! defaults, `LOOPWATCH_*` environment overrides, and the precedence between them.
//!
//! Precedence, highest first: a value set explicitly on the builder, then the
//! environment variable, then the documented default. Programs built on loopwatch thus
//! honour the environment unless their own code (a command-line flag, say) chose a value.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::alerts::AlertName;
use crate::error::Error;

/// Default address of the metrics endpoint (requirement 1.1: port 8000).
pub(crate) const DEFAULT_LISTEN: &str = "0.0.0.0:8000";
/// Default period of the host, process and container samplers.
pub(crate) const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Default period between orphan sweeps (one also runs at start-up).
pub(crate) const DEFAULT_ORPHAN_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
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
/// Environment variable naming the web configuration file (TLS, basic auth).
pub(crate) const ENV_WEB_CONFIG: &str = "LOOPWATCH_WEB_CONFIG";
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
}

/// Thresholds, windows and intervals of the evaluator. The defaults are the numbers of
/// the requirements; the generated Prometheus rules and dashboard use the same values.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    /// by more than this fraction (0.20) of the baseline's magnitude.
    pub degradation_fraction: f64,
    /// Smallest baseline magnitude degradation is measured against (0.1), so a
    /// baseline near zero (a Sharpe of 0.01, say) does not make noise a "degradation".
    pub baseline_floor: f64,
    /// "Performance slowdown detected": mean iteration time above this multiple of
    /// the baseline (1.5).
    pub slowdown_factor: f64,
    /// Period of the long-run statistics log line (6 h).
    #[serde(serialize_with = "seconds")]
    pub stats_interval: Duration,
    /// Period at which firing alerts are re-sent to Alertmanager (15 s).
    #[serde(serialize_with = "seconds")]
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
            stats_interval: Duration::from_secs(6 * 3600),
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
        }
    }

    /// Checks the values make sense together; the error names the field.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let bad = |field: &'static str, value: String, reason: &str| {
            Err(Error::InvalidSetting {
                variable: field,
                value,
                reason: reason.into(),
            })
        };
        if self.window == 0 {
            return bad(
                "Thresholds::window",
                "0".into(),
                "the window needs at least one iteration",
            );
        }
        if !(0.0 < self.memory_fraction && self.memory_fraction <= 1.0) {
            return bad(
                "Thresholds::memory_fraction",
                self.memory_fraction.to_string(),
                "expected a fraction in (0, 1]",
            );
        }
        if !(0.0 <= self.memory_clear_fraction
            && self.memory_clear_fraction <= self.memory_fraction)
        {
            return bad(
                "Thresholds::memory_clear_fraction",
                self.memory_clear_fraction.to_string(),
                "expected a fraction no higher than memory_fraction",
            );
        }
        if self.diversity_iterations == 0 || self.staleness_iterations == 0 {
            return bad(
                "Thresholds::diversity_iterations/staleness_iterations",
                "0".into(),
                "expected at least 1",
            );
        }
        let sane = self.slowdown_factor > 1.0
            && self.degradation_fraction > 0.0
            && self.baseline_floor >= 0.0;
        if !sane {
            return bad(
                "Thresholds::slowdown_factor/degradation_fraction/baseline_floor",
                format!(
                    "{}/{}/{}",
                    self.slowdown_factor, self.degradation_fraction, self.baseline_floor
                ),
                "expected a factor above 1, a positive fraction and a non-negative floor",
            );
        }
        if self.stats_interval.is_zero() || self.alert_resend_interval.is_zero() {
            return bad(
                "Thresholds::stats_interval/alert_resend_interval",
                "0s".into(),
                "expected a positive period",
            );
        }
        Ok(())
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
