//! [`MonitorBuilder`]: settings with documented defaults and environment overrides,
//! and [`Monitor::builder`], where every monitor starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::config::Signals;
use crate::config::{self, Choices, Settings, Thresholds};
use crate::error::Error;

use super::handle::Monitor;
use super::start::start;

impl Monitor {
    /// A builder with every setting at its default or environment override.
    pub fn builder() -> MonitorBuilder {
        MonitorBuilder::default()
    }
}

/// Configures and starts a [`Monitor`].
///
/// Every setting has a documented default. These have an environment override, which
/// a value set here wins over (the variables are the rows of [`ENVIRONMENT`](crate::ENVIRONMENT)):
/// the address (`LOOPWATCH_LISTEN`), the output directory (`LOOPWATCH_OUTPUT_DIR`),
/// Alertmanager (`LOOPWATCH_ALERTMANAGER_URLS`), the sampler period
/// (`LOOPWATCH_SAMPLE_INTERVAL`), the thresholds file (`LOOPWATCH_CONFIG`), the web
/// configuration (`LOOPWATCH_WEB_CONFIG`), the registration directory
/// (`LOOPWATCH_REGISTER_DIR`), the experiment (`LOOPWATCH_EXPERIMENT`), the loop's
/// name (`LOOPWATCH_LOOP_NAME`), the GPU sampler (`LOOPWATCH_GPU`) and its NVML
/// library (`LOOPWATCH_GPU_LIBRARY`), the OTLP export (`OTEL_EXPORTER_OTLP_ENDPOINT`,
/// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`) and the GenAI conventions of LLM calls'
/// instruments (`OTEL_SEMCONV_STABILITY_OPT_IN`). Where container numbers come from is the
/// environment's alone (`LOOPWATCH_CONTAINER_STATS`). The others (signals, final
/// export, containers, sweep period) are the program's choice.
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
    choices: Choices,
}

impl MonitorBuilder {
    /// Address of `GET /metrics` (default `0.0.0.0:8000`, env `LOOPWATCH_LISTEN`).
    /// Port 0 picks a free port; read it back with [`Monitor::local_addr`].
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.choices.listen = Some(addr);
        self
    }

    /// Directory of the final export files (default the current directory, env
    /// `LOOPWATCH_OUTPUT_DIR`).
    pub fn output_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.choices.output_dir = Some(dir.into());
        self
    }

    /// Alertmanager base URLs such as `http://127.0.0.1:9093` (default none, env
    /// `LOOPWATCH_ALERTMANAGER_URLS`, comma-separated).
    pub fn alertmanager_urls<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.choices.alertmanager_urls = Some(urls.into_iter().map(Into::into).collect());
        self
    }

    /// Period of the host, process and container samplers (default 1 s, env
    /// `LOOPWATCH_SAMPLE_INTERVAL`, at least 10 ms).
    pub fn sample_interval(mut self, interval: Duration) -> Self {
        self.choices.sample_interval = Some(interval);
        self
    }

    /// What SIGINT and SIGTERM do (default [`Signals::Exit`]: the final export, then
    /// exit with the signal's status). [`Signals::Graceful`] makes the first signal
    /// ask the loop to stop (see [`Monitor::stop_requested`]), so it finishes its
    /// iteration and shuts down; a second (or one while the loop is stalled) writes
    /// the final export and exits. [`Signals::Off`] leaves the signals to the program.
    pub fn signals(mut self, signals: Signals) -> Self {
        self.choices.signals = Some(signals);
        self
    }

    /// Whether shutting down writes the final export files (default on).
    pub fn final_export(mut self, on: bool) -> Self {
        self.choices.final_export = Some(on);
        self
    }

    /// Thresholds, windows and intervals of the evaluator. They win over a thresholds
    /// file; without either, [`Thresholds::default`] (the numbers of the requirements).
    pub fn thresholds(mut self, thresholds: Thresholds) -> Self {
        self.choices.thresholds = Some(thresholds);
        self
    }

    /// A thresholds file (`loopwatch.toml`, see [`Thresholds::from_file`]), also read
    /// by `loopwatch rules --config` and `loopwatch dashboard --config` so the
    /// in-process alerts, the Prometheus rules and the dashboard use the same numbers
    /// (default none, env `LOOPWATCH_CONFIG`).
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.choices.config_file = Some(path.into());
        self
    }

    /// Whether the containers feature runs: Docker stats on every sampler tick, orphan
    /// sweeps, and removal of this run's containers at shutdown (default on with the
    /// `docker` cargo feature; with no Docker it reports itself down and costs nothing
    /// else).
    pub fn containers(mut self, on: bool) -> Self {
        self.choices.containers = Some(on);
        self
    }

    /// Whether the GPU sampler runs (needs the `gpu` cargo feature; default
    /// `[gpu] enabled` of the config file, else on; env `LOOPWATCH_GPU=on|off`): each
    /// GPU's utilisation, memory, power, temperature and errors, and the video memory
    /// of the loop's own processes, at the sampling interval. Without an NVIDIA driver
    /// it says so once in the log and costs nothing else.
    pub fn gpu(mut self, on: bool) -> Self {
        self.choices.gpu = Some(on);
        self
    }

    /// The NVIDIA management library (NVML) the GPU sampler loads: a path, or a file
    /// name the dynamic linker looks up (default `[gpu] library` of the config file,
    /// else the driver's `libnvidia-ml.so.1`; env `LOOPWATCH_GPU_LIBRARY`).
    pub fn gpu_library(mut self, path: impl Into<PathBuf>) -> Self {
        self.choices.gpu_library = Some(path.into());
        self
    }

    /// Period at which the owners of other loops' containers are checked in the
    /// process table (default 5 s, no Docker request): a full orphan sweep follows
    /// when one has died, so ContainerCleanupFailures fires within 10 s of orphans
    /// appearing. Full sweeps also run at start-up, every minute (at least every 12
    /// periods) as a safety net, and after a sweep that failed to remove an orphan
    /// (1 s, doubling, up to the period).
    pub fn orphan_sweep_interval(mut self, interval: Duration) -> Self {
        self.choices.orphan_sweep_interval = Some(interval);
        self
    }

    /// Also export every metric over OTLP/HTTP to an OpenTelemetry Collector (needs
    /// the `otlp` feature). Default: on when `OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` is set; the other standard
    /// `OTEL_EXPORTER_OTLP_*` variables and `OTEL_METRIC_EXPORT_INTERVAL` apply.
    pub fn otlp(mut self, on: bool) -> Self {
        self.choices.otlp = Some(on);
        self
    }

    /// The OpenTelemetry GenAI conventions that name the instruments of LLM calls, over
    /// OTLP and in the exposition alike. Default: the newest experimental ones when
    /// `OTEL_SEMCONV_STABILITY_OPT_IN` holds `gen_ai_latest_experimental`, else
    /// loopwatch's (`gen_ai.client.token.usage`, `gen_ai.client.operation.duration`);
    /// the mapping is [`GenAiConventions::rows`](crate::catalog::GenAiConventions::rows).
    pub fn genai_conventions(mut self, conventions: crate::catalog::GenAiConventions) -> Self {
        self.choices.genai = Some(conventions);
        self
    }

    /// A web configuration file for the endpoint (TLS, basic auth), in the format of
    /// Prometheus's exporter-toolkit (default none, env `LOOPWATCH_WEB_CONFIG`).
    pub fn web_config(mut self, path: impl Into<PathBuf>) -> Self {
        self.choices.web_config = Some(path.into());
        self
    }

    /// Registers this loop for Prometheus file-based service discovery: a target file
    /// in `dir`, written atomically at start, removed at shutdown; files of loops that
    /// died are removed by the next start (default none, env `LOOPWATCH_REGISTER_DIR`).
    /// Point a `file_sd_configs` job at the directory and one Prometheus scrapes every
    /// loop on the host, each on its own port (`listen` port 0).
    pub fn register(mut self, dir: impl Into<PathBuf>) -> Self {
        self.choices.register_dir = Some(dir.into());
        self
    }

    /// The experiment this loop belongs to: the `experiment` label of
    /// `loopwatch_run_info`, of its alerts, of its registration's target (so every
    /// series scraped through it) and of its final files (default none, env
    /// `LOOPWATCH_EXPERIMENT`). One Alertmanager groups alerts by it.
    pub fn experiment(mut self, name: impl Into<String>) -> Self {
        self.choices.experiment = Some(name.into());
        self
    }

    /// The loop's name within its experiment: the `loop` label, carried like
    /// `experiment` (default none, env `LOOPWATCH_LOOP_NAME`). A name for the loop,
    /// never for a trial or a strategy: one value per loop keeps the series bounded.
    pub fn loop_name(mut self, name: impl Into<String>) -> Self {
        self.choices.loop_name = Some(name.into());
        self
    }

    /// Resolves every setting: builder value, else environment, else default.
    pub(crate) fn settings(&self) -> Result<Settings, Error> {
        config::resolve(&self.choices, &config::process_environment)
    }

    /// Starts the monitor: binds the endpoint, takes a first host sample, and starts
    /// the background runtime. Fails with a clear error on a bad setting or a busy port.
    pub fn build(self) -> Result<Monitor, Error> {
        start(self.settings()?)
    }
}

#[cfg(test)]
mod tests {
    /// The builder's documentation, above, and each method's documentation name the
    /// environment variables as `config::ENVIRONMENT` has them: none is left out when
    /// one is added.
    #[test]
    fn the_documentation_names_every_environment_variable() {
        let source = include_str!("builder.rs");
        let struct_doc = &source[..source.find("pub struct MonitorBuilder").unwrap()];
        for variable in crate::ENVIRONMENT {
            assert!(
                struct_doc.contains(&format!("`{}`", variable.name)),
                "the MonitorBuilder documentation does not name {}",
                variable.name
            );
            let Some(setter) = variable.setter else {
                continue;
            };
            let at = ["(", "<"]
                .iter()
                .find_map(|after| source.find(&format!("    pub fn {setter}{after}")))
                .unwrap_or_else(|| panic!("no MonitorBuilder::{setter} for {}", variable.name));
            let doc: Vec<&str> = source[..at]
                .lines()
                .rev()
                .take_while(|line| line.trim_start().starts_with("///"))
                .collect();
            let names = |name: &str| doc.iter().any(|line| line.contains(name));
            assert!(
                names(variable.name)
                    || (variable.name.starts_with("OTEL_EXPORTER_OTLP_")
                        && names("OTEL_EXPORTER_OTLP_")),
                "MonitorBuilder::{setter} does not name {}",
                variable.name
            );
        }
    }
}
