//! Settings of a monitor: documented defaults, `LOOPWATCH_*` environment overrides and
//! the precedence between them.
//!
//! Precedence, highest first: a value set explicitly on the builder, then the
//! environment variable, then the documented default. Programs built on loopwatch thus
//! honour the environment unless their own code (a command-line flag, say) chose a value.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;

/// Default address of the metrics endpoint (requirement 1.1: port 8000).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8000";
/// Default period of the host, process and container samplers.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Default period between orphan sweeps (one also runs at start-up).
pub const DEFAULT_ORPHAN_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Default directory of the final export files: the current directory.
pub const DEFAULT_OUTPUT_DIR: &str = ".";

/// Environment variable naming the metrics endpoint's address.
pub const ENV_LISTEN: &str = "LOOPWATCH_LISTEN";
/// Environment variable naming the final export directory.
pub const ENV_OUTPUT_DIR: &str = "LOOPWATCH_OUTPUT_DIR";
/// Environment variable listing Alertmanager base URLs, comma-separated.
pub const ENV_ALERTMANAGER_URLS: &str = "LOOPWATCH_ALERTMANAGER_URLS";
/// Environment variable giving the sampler period, e.g. `1s` or `500ms`.
pub const ENV_SAMPLE_INTERVAL: &str = "LOOPWATCH_SAMPLE_INTERVAL";

/// Shortest sampler period accepted; faster ticks would cost more than they tell.
pub const MIN_SAMPLE_INTERVAL: Duration = Duration::from_millis(10);

/// Settings resolved from the builder, the environment and the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Address the metrics endpoint listens on.
    pub listen: SocketAddr,
    /// Directory receiving `prometheus_metrics_final.txt` and `metrics_final.json`.
    pub output_dir: PathBuf,
    /// Alertmanager base URLs (e.g. `http://127.0.0.1:9093`); empty means log only.
    pub alertmanager_urls: Vec<String>,
    /// Period of the host, process and container samplers.
    pub sample_interval: Duration,
    /// Whether SIGINT and SIGTERM are caught to request a clean stop.
    pub handle_signals: bool,
    /// Whether shutdown writes the final export files.
    pub final_export: bool,
    /// Thresholds, windows and intervals of the evaluator.
    pub thresholds: crate::evaluate::Thresholds,
    /// Whether the containers feature (Docker stats, orphan sweeps, shutdown
    /// verification) runs.
    pub containers: bool,
    /// Period between orphan sweeps.
    pub orphan_sweep_interval: Duration,
    /// Whether every metric is also exported over OTLP/HTTP (feature `otlp`).
    pub otlp: bool,
    /// Web configuration file (TLS, basic auth) of the endpoint, if any.
    pub web_config: Option<PathBuf>,
}

/// Standard variables whose presence switches the OTLP export on.
pub const OTLP_ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
];

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
