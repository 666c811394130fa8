//! [`MonitorBuilder`]: settings with documented defaults and environment overrides.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{self, Settings, Thresholds};
use crate::error::Error;
use crate::monitor::Monitor;

/// Configures and starts a [`Monitor`].
///
/// Every setting has a documented default. Four have an environment override, which
/// a value set here wins over: `LOOPWATCH_LISTEN`, `LOOPWATCH_OUTPUT_DIR`,
/// `LOOPWATCH_ALERTMANAGER_URLS` and `LOOPWATCH_SAMPLE_INTERVAL`; so do the thresholds
/// file (`LOOPWATCH_CONFIG`), the web configuration (`LOOPWATCH_WEB_CONFIG`) and the
/// OTLP export (the standard `OTEL_EXPORTER_OTLP_*` variables). The others (signals,
/// final export, containers, sweep period) are the program's choice.
///
/// ```
/// use std::time::Duration;
/// let monitor = loopwatch::Monitor::builder()
///     .listen("127.0.0.1:0".parse().unwrap())
///     .output_dir(std::env::temp_dir())
///     .sample_interval(Duration::from_millis(500))
///     .build()
///     .unwrap();
/// assert_ne!(monitor.local_addr().port(), 0);
/// # monitor.shutdown();
/// ```
#[derive(Debug, Clone, Default)]
pub struct MonitorBuilder {
    listen: Option<SocketAddr>,
    output_dir: Option<PathBuf>,
    alertmanager_urls: Option<Vec<String>>,
    sample_interval: Option<Duration>,
    handle_signals: bool,
    final_export: Option<bool>,
    thresholds: Option<Thresholds>,
    config_file: Option<PathBuf>,
    containers: Option<bool>,
    orphan_sweep_interval: Option<Duration>,
    otlp: Option<bool>,
    web_config: Option<PathBuf>,
    register_dir: Option<PathBuf>,
}

impl MonitorBuilder {
    /// Address of `GET /metrics` (default `0.0.0.0:8000`, env `LOOPWATCH_LISTEN`).
    /// Port 0 picks a free port; read it back with [`Monitor::local_addr`].
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// Directory of the final export files (default the current directory, env
    /// `LOOPWATCH_OUTPUT_DIR`).
    pub fn output_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.output_dir = Some(dir.into());
        self
    }

    /// Alertmanager base URLs such as `http://127.0.0.1:9093` (default none, env
    /// `LOOPWATCH_ALERTMANAGER_URLS`, comma-separated).
    pub fn alertmanager_urls<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.alertmanager_urls = Some(urls.into_iter().map(Into::into).collect());
        self
    }

    /// Period of the host, process and container samplers (default 1 s, env
    /// `LOOPWATCH_SAMPLE_INTERVAL`, at least 10 ms).
    pub fn sample_interval(mut self, interval: Duration) -> Self {
        self.sample_interval = Some(interval);
        self
    }

    /// Catch SIGINT and SIGTERM: the first asks the loop to stop (see
    /// [`Monitor::stop_requested`]), a second writes the final export and exits with
    /// status 130. Off by default, since it replaces the process's own handlers.
    pub fn handle_signals(mut self, on: bool) -> Self {
        self.handle_signals = on;
        self
    }

    /// Whether shutting down writes the final export files (default on).
    pub fn final_export(mut self, on: bool) -> Self {
        self.final_export = Some(on);
        self
    }

    /// Thresholds, windows and intervals of the evaluator. They win over a thresholds
    /// file; without either, [`Thresholds::default`] (the numbers of the requirements).
    pub fn thresholds(mut self, thresholds: Thresholds) -> Self {
        self.thresholds = Some(thresholds);
        self
    }

    /// A thresholds file (`loopwatch.toml`, see [`Thresholds::from_file`]), also read
    /// by `loopwatch rules --config` and `loopwatch dashboard --config` so the
    /// in-process alerts, the Prometheus rules and the dashboard use the same numbers
    /// (default none, env `LOOPWATCH_CONFIG`).
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_file = Some(path.into());
        self
    }

    /// Whether the containers feature runs: Docker stats on every sampler tick, orphan
    /// sweeps, and removal of this run's containers at shutdown (default on with the
    /// `docker` cargo feature; with no Docker it reports itself down and costs nothing
    /// else).
    pub fn containers(mut self, on: bool) -> Self {
        self.containers = Some(on);
        self
    }

    /// Period between orphan sweeps (default 5 s, so ContainerCleanupFailures fires
    /// within 10 s of orphans appearing); one also runs at start-up, and after a sweep
    /// that failed to remove an orphan the next comes sooner (1 s, doubling).
    pub fn orphan_sweep_interval(mut self, interval: Duration) -> Self {
        self.orphan_sweep_interval = Some(interval);
        self
    }

    /// Also export every metric over OTLP/HTTP to an OpenTelemetry Collector (needs
    /// the `otlp` feature). Default: on when `OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` is set; the other standard
    /// `OTEL_EXPORTER_OTLP_*` variables and `OTEL_METRIC_EXPORT_INTERVAL` apply.
    pub fn otlp(mut self, on: bool) -> Self {
        self.otlp = Some(on);
        self
    }

    /// A web configuration file for the endpoint (TLS, basic auth), in the format of
    /// Prometheus's exporter-toolkit (default none, env `LOOPWATCH_WEB_CONFIG`).
    pub fn web_config(mut self, path: impl Into<PathBuf>) -> Self {
        self.web_config = Some(path.into());
        self
    }

    /// Registers this loop for Prometheus file-based service discovery: a target file
    /// in `dir`, written atomically at start, removed at shutdown; files of loops that
    /// died are removed by the next start (default none, env `LOOPWATCH_REGISTER_DIR`).
    /// Point a `file_sd_configs` job at the directory and one Prometheus scrapes every
    /// loop on the host, each on its own port (`listen` port 0).
    pub fn register(mut self, dir: impl Into<PathBuf>) -> Self {
        self.register_dir = Some(dir.into());
        self
    }

    /// Resolves every setting: builder value, else environment, else default.
    pub(crate) fn settings(&self) -> Result<Settings, Error> {
        let listen = match self.listen {
            Some(addr) => addr,
            None => match config::env_var(config::ENV_LISTEN) {
                Some(value) => config::parse_listen(config::ENV_LISTEN, &value)?,
                None => config::parse_listen("DEFAULT_LISTEN", config::DEFAULT_LISTEN)?,
            },
        };
        let output_dir = match &self.output_dir {
            Some(dir) => dir.clone(),
            None => config::env_var(config::ENV_OUTPUT_DIR)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(config::DEFAULT_OUTPUT_DIR)),
        };
        let alertmanager_urls = match &self.alertmanager_urls {
            Some(urls) => config::parse_alertmanager_urls(
                "MonitorBuilder::alertmanager_urls",
                &urls.join(","),
            )?,
            None => match config::env_var(config::ENV_ALERTMANAGER_URLS) {
                Some(value) => {
                    config::parse_alertmanager_urls(config::ENV_ALERTMANAGER_URLS, &value)?
                }
                None => Vec::new(),
            },
        };
        let sample_interval = match self.sample_interval {
            Some(interval) if interval < config::MIN_SAMPLE_INTERVAL => {
                return Err(Error::InvalidSetting {
                    variable: "MonitorBuilder::sample_interval",
                    value: format!("{interval:?}"),
                    reason: "the period must be at least 10ms".into(),
                })
            }
            Some(interval) => interval,
            None => match config::env_var(config::ENV_SAMPLE_INTERVAL) {
                Some(value) => config::parse_interval(config::ENV_SAMPLE_INTERVAL, &value)?,
                None => config::DEFAULT_SAMPLE_INTERVAL,
            },
        };
        let config_file = self
            .config_file
            .clone()
            .or_else(|| config::env_var(config::ENV_CONFIG).map(PathBuf::from));
        let thresholds = match (&self.thresholds, config_file) {
            (Some(thresholds), _) => {
                thresholds.check_relations()?;
                thresholds.clone()
            }
            (None, Some(path)) => Thresholds::from_file(&path)?,
            (None, None) => Thresholds::default(),
        };
        Ok(Settings {
            listen,
            output_dir,
            alertmanager_urls,
            sample_interval,
            handle_signals: self.handle_signals,
            final_export: self.final_export.unwrap_or(true),
            thresholds,
            containers: cfg!(feature = "docker") && self.containers.unwrap_or(true),
            orphan_sweep_interval: self
                .orphan_sweep_interval
                .unwrap_or(config::DEFAULT_ORPHAN_SWEEP_INTERVAL)
                .max(config::MIN_SAMPLE_INTERVAL),
            web_config: self
                .web_config
                .clone()
                .or_else(|| config::env_var(config::ENV_WEB_CONFIG).map(PathBuf::from)),
            register_dir: self
                .register_dir
                .clone()
                .or_else(|| config::env_var(config::ENV_REGISTER_DIR).map(PathBuf::from)),
            otlp: self.otlp.unwrap_or_else(|| {
                config::OTLP_ENDPOINT_VARIABLES
                    .iter()
                    .any(|v| std::env::var_os(v).is_some_and(|value| !value.is_empty()))
            }),
        })
    }

    /// Starts the monitor: binds the endpoint, takes a first host sample, and starts
    /// the background runtime. Fails with a clear error on a bad setting or a busy port.
    pub fn build(self) -> Result<Monitor, Error> {
        Monitor::start(self.settings()?)
    }
}
