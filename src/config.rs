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

use crate::catalog::GenAiConventions;
use crate::error::Error;

/// Default address of the metrics endpoint (port 8000, where Prometheus expects it).
pub(crate) const DEFAULT_LISTEN: &str = "0.0.0.0:8000";
/// Default period of the host, process and container samplers.
pub(crate) const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Default period of the owner checks that decide whether an orphan sweep is due
/// (full sweeps: at start-up, when an owner died, after a failed removal, every minute).
pub(crate) const DEFAULT_ORPHAN_SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Default directory of the final export files: the current directory.
pub(crate) const DEFAULT_OUTPUT_DIR: &str = ".";

/// The longest experiment or loop name: label values stay short.
const MAX_LOOP_LABEL: usize = 128;

/// One environment variable a monitor reads, one row of [`ENVIRONMENT`]: its name, the
/// [`MonitorBuilder`](crate::MonitorBuilder) method whose value wins over it, its
/// default and what it sets.
///
/// ```
/// let listen = loopwatch::ENVIRONMENT
///     .iter()
///     .find(|v| v.name == "LOOPWATCH_LISTEN")
///     .unwrap();
/// assert_eq!(listen.setter, Some("listen"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnvVariable {
    /// The variable's name.
    pub name: &'static str,
    /// The builder method whose value wins over the variable, if there is one.
    pub setter: Option<&'static str>,
    /// What applies when neither is given, as docs/configuration.md shows it.
    pub default: &'static str,
    /// What it sets (Markdown, one sentence or two).
    pub meaning: &'static str,
}

/// Declares the environment variables: one row per variable, with the constant the
/// code reads it by, the builder method that wins over it (or `-`), its default and
/// its meaning. The rows become the constants and [`ENVIRONMENT`], which the environment
/// table of docs/configuration.md is generated from; a test checks that [`resolve`] reads
/// exactly these variables.
macro_rules! environment {
    ($($constant:ident = $name:literal, setter $setter:tt, default $default:literal, $meaning:literal;)*) => {
        $(
            #[doc = concat!("`", $name, "`: ", $meaning)]
            pub(crate) const $constant: &str = $name;
        )*

        /// Every environment variable a monitor reads, in the order of the environment
        /// table of docs/configuration.md. A value set on the [`MonitorBuilder`](crate::MonitorBuilder)
        /// wins over the variable, the variable over the default; an invalid value
        /// stops start-up with an error naming the variable.
        pub const ENVIRONMENT: &[EnvVariable] = &[$(EnvVariable {
            name: $name,
            setter: environment!(@setter $setter),
            default: $default,
            meaning: $meaning,
        },)*];
    };
    (@setter -) => { None };
    (@setter $setter:ident) => { Some(stringify!($setter)) };
}

environment! {
    ENV_LISTEN = "LOOPWATCH_LISTEN", setter listen, default "`0.0.0.0:8000`",
        "Address of `GET /metrics`, `GET /healthz` and the page; port 0 picks a free port.";
    ENV_OUTPUT_DIR = "LOOPWATCH_OUTPUT_DIR", setter output_dir, default "the current directory",
        "Where the final export files are written.";
    ENV_ALERTMANAGER_URLS = "LOOPWATCH_ALERTMANAGER_URLS", setter alertmanager_urls, default "unset (log only)",
        "Comma-separated Alertmanager base URLs, e.g. `http://127.0.0.1:9093`.";
    ENV_SAMPLE_INTERVAL = "LOOPWATCH_SAMPLE_INTERVAL", setter sample_interval, default "`1s`",
        "Period of the host, process and container samplers, e.g. `500ms` (at least `10ms`).";
    ENV_CONFIG = "LOOPWATCH_CONFIG", setter config_file, default "unset (the defaults below)",
        "A thresholds file, `loopwatch.toml`, with the keys below.";
    ENV_WEB_CONFIG = "LOOPWATCH_WEB_CONFIG", setter web_config, default "unset",
        "TLS and basic auth for the endpoint (see \"Access control\" in docs/endpoint.md).";
    ENV_REGISTER_DIR = "LOOPWATCH_REGISTER_DIR", setter register, default "unset",
        "A directory of Prometheus `file_sd` targets to register this loop in (see docs/fleets.md).";
    ENV_EXPERIMENT = "LOOPWATCH_EXPERIMENT", setter experiment, default "unset",
        "The experiment the loop belongs to: the `experiment` label of its run info, alerts, registration and final files (at most 128 characters).";
    ENV_LOOP_NAME = "LOOPWATCH_LOOP_NAME", setter loop_name, default "unset",
        "The loop's name within its experiment: the `loop` label, carried like `experiment` (at most 128 characters).";
    ENV_GPU = "LOOPWATCH_GPU", setter gpu, default "`[gpu] enabled`, else `on`",
        "With the `gpu` feature, whether the GPU sampler runs: `on` or `off` (see docs/gpu.md).";
    ENV_GPU_LIBRARY = "LOOPWATCH_GPU_LIBRARY", setter gpu_library, default "`[gpu] library`, else `libnvidia-ml.so.1`",
        "With the `gpu` feature, the NVIDIA management library (NVML) the GPU sampler loads: a path, or a file name the dynamic linker looks up (see docs/gpu.md).";
    ENV_CONTAINER_STATS = "LOOPWATCH_CONTAINER_STATS", setter -, default "`auto`",
        "Where container numbers come from: `auto` (the cgroup files, else Docker's stats API), `cgroup` (never the stats API) or `docker_api` (always the stats API).";
    ENV_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT", setter otlp, default "unset",
        "With the `otlp` feature, also export every metric over OTLP/HTTP there; the other standard `OTEL_EXPORTER_OTLP_*` variables and `OTEL_METRIC_EXPORT_INTERVAL` apply.";
    ENV_OTLP_METRICS_ENDPOINT = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", setter otlp, default "unset",
        "The same, for metrics alone.";
    ENV_SEMCONV_STABILITY_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN", setter genai_conventions, default "unset (loopwatch's GenAI names)",
        "Comma-separated; with `gen_ai_latest_experimental` among its values, the instruments of LLM calls take the names of the newest OpenTelemetry GenAI conventions (the mapping is in docs/metrics.md); other values are ignored.";
}

impl EnvVariable {
    /// Renders [`ENVIRONMENT`] as the Markdown table docs/configuration.md carries
    /// (`loopwatch config` prints it).
    ///
    /// ```
    /// let table = loopwatch::EnvVariable::markdown_table();
    /// assert!(table.contains("| `LOOPWATCH_EXPERIMENT` | `MonitorBuilder::experiment` |"));
    /// ```
    pub fn markdown_table() -> String {
        let mut out =
            String::from("| variable | builder method | default | meaning |\n|---|---|---|---|\n");
        for v in ENVIRONMENT {
            let setter = v
                .setter
                .map_or("—".to_string(), |s| format!("`MonitorBuilder::{s}`"));
            out.push_str(&format!(
                "| `{}` | {setter} | {} | {} |\n",
                v.name, v.default, v.meaning
            ));
        }
        out
    }
}

/// The Xid codes that raise GPUErrors unless `[gpu] fatal_xids` says otherwise: those
/// DCGM treats as fatal, each a fault of the GPU, its memory, its firmware or its
/// links, none a program's: 48 (double-bit ECC error), 61 and 62 (internal
/// micro-controller breakpoint, halt), 63 and 64 (ECC page retirement or row
/// remapping recorded, failed), 74 (NVLink error), 79 (fallen off the bus), 92 (high
/// single-bit ECC error rate), 94 and 95 (contained, uncontained ECC error). Left
/// out, among others: 13, 31, 43 and 45, which a program's fault or its end (a
/// killed CUDA process, which loopwatch itself may kill) raise.
pub const DEFAULT_FATAL_XIDS: [u64; 10] = [48, 61, 62, 63, 64, 74, 79, 92, 94, 95];

/// The `[gpu]` table of `loopwatch.toml`.
///
/// ```
/// let gpu = loopwatch::GpuConfig::default();
/// assert!(gpu.enabled && gpu.library.is_none());
/// assert!(gpu.fatal_xids.contains(&79) && !gpu.fatal_xids.contains(&43));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct GpuConfig {
    /// Whether the GPU sampler runs (`enabled`, default true);
    /// `LOOPWATCH_GPU` and `MonitorBuilder::gpu` go over it.
    pub enabled: bool,
    /// The NVML library to load (`library`): a path, or a file name the dynamic
    /// linker looks up; unset for the driver's `libnvidia-ml.so.1`.
    pub library: Option<PathBuf>,
    /// The Xid codes that raise GPUErrors (`fatal_xids`); every Xid is counted and
    /// logged, these alone alert. Default [`DEFAULT_FATAL_XIDS`].
    pub fatal_xids: Vec<u64>,
}

impl Default for GpuConfig {
    fn default() -> Self {
        GpuConfig {
            enabled: true,
            library: None,
            fatal_xids: DEFAULT_FATAL_XIDS.to_vec(),
        }
    }
}

impl GpuConfig {
    /// Whether an Xid of `code` raises GPUErrors; one NVML could not name does not.
    pub(crate) fn is_fatal(&self, code: Option<u64>) -> bool {
        code.is_some_and(|code| self.fatal_xids.contains(&code))
    }
}

/// Standard variables whose presence switches the OTLP export on.
pub(crate) const OTLP_ENDPOINT_VARIABLES: [&str; 2] =
    [ENV_OTLP_ENDPOINT, ENV_OTLP_METRICS_ENDPOINT];

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
    /// What SIGINT and SIGTERM do.
    pub(crate) signals: Signals,
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
    /// Where container numbers come from.
    pub(crate) container_stats: ContainerStats,
    /// The experiment the loop belongs to (the `experiment` label), if named.
    pub(crate) experiment: Option<String>,
    /// The loop's name within it (the `loop` label), if named.
    pub(crate) loop_name: Option<String>,
    /// Whether the GPU sampler runs; always false without the `gpu` cargo feature.
    pub(crate) gpu: bool,
    /// The NVML library the GPU sampler loads; `None` for the system's.
    pub(crate) gpu_library: Option<PathBuf>,
    /// The OpenTelemetry GenAI conventions the instruments of LLM calls follow.
    pub(crate) genai: GenAiConventions,
}

/// What SIGINT and SIGTERM do to a process holding a [`Monitor`](crate::Monitor).
///
/// ```no_run
/// // A loop that finishes its iteration first: it checks `stop_requested()`.
/// let monitor = loopwatch::Monitor::builder()
///     .signals(loopwatch::Signals::Graceful)
///     .build()
///     .unwrap();
/// while !monitor.stop_requested() {
///     let iteration = monitor.start_iteration();
///     // ...
///     iteration.finish();
/// }
/// monitor.shutdown();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Signals {
    /// The default: the signal writes both final files and ends the process with the
    /// status the signal implies (130 for SIGINT, 143 for SIGTERM), so a loop that
    /// does nothing special still leaves its final export.
    #[default]
    Exit,
    /// The first signal asks the loop to stop ([`Monitor::stop_requested`](crate::Monitor::stop_requested)),
    /// so it ends after its iteration and shuts down itself; a second, or one while
    /// the loop is stalled, writes the final export and exits as [`Signals::Exit`] does.
    Graceful,
    /// loopwatch installs no handler: the program's own (or the default) apply, and
    /// the final export is written only by `shutdown()` or when the monitor is dropped.
    Off,
}

/// Where container numbers come from (`LOOPWATCH_CONTAINER_STATS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum ContainerStats {
    /// The cgroup files, falling back to Docker's stats API where they cannot be read.
    #[default]
    Automatic,
    /// The cgroup files only.
    CgroupOnly,
    /// Docker's stats API only.
    DockerApi,
}

/// What a program chose on the builder; `None` leaves the setting to the environment
/// and then the default.
#[derive(Debug, Clone, Default)]
pub(crate) struct Choices {
    pub(crate) listen: Option<SocketAddr>,
    pub(crate) output_dir: Option<PathBuf>,
    pub(crate) alertmanager_urls: Option<Vec<String>>,
    pub(crate) sample_interval: Option<Duration>,
    pub(crate) signals: Option<Signals>,
    pub(crate) final_export: Option<bool>,
    pub(crate) thresholds: Option<Thresholds>,
    pub(crate) config_file: Option<PathBuf>,
    pub(crate) containers: Option<bool>,
    pub(crate) orphan_sweep_interval: Option<Duration>,
    pub(crate) otlp: Option<bool>,
    pub(crate) web_config: Option<PathBuf>,
    pub(crate) register_dir: Option<PathBuf>,
    pub(crate) experiment: Option<String>,
    pub(crate) loop_name: Option<String>,
    pub(crate) gpu: Option<bool>,
    pub(crate) gpu_library: Option<PathBuf>,
    pub(crate) genai: Option<GenAiConventions>,
}

/// A loop label's value: the builder's, else the variable's; at most 128 characters,
/// no control characters.
fn loop_label(
    chosen: &Option<String>,
    variable: &'static str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, Error> {
    let value = chosen
        .clone()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .or_else(|| env(variable));
    match value {
        Some(v) if v.chars().count() > MAX_LOOP_LABEL || v.chars().any(char::is_control) => {
            Err(invalid(
                variable,
                &v,
                "expected a name of at most 128 characters, without control characters",
            ))
        }
        other => Ok(other),
    }
}

/// Reads the process environment; unset and empty (or blank) both mean "not given".
pub(crate) fn process_environment(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Resolves every setting, the one place that does: the builder's choice, else the
/// environment variable (read through `env`, so tests need no process environment),
/// else the documented default. Every `LOOPWATCH_*` variable is read here.
pub(crate) fn resolve(
    choices: &Choices,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, Error> {
    let listen = match choices.listen {
        Some(addr) => addr,
        None => match env(ENV_LISTEN) {
            Some(value) => parse_listen(ENV_LISTEN, &value)?,
            None => parse_listen("DEFAULT_LISTEN", DEFAULT_LISTEN)?,
        },
    };
    let alertmanager_urls = match &choices.alertmanager_urls {
        Some(urls) => {
            parse_alertmanager_urls("MonitorBuilder::alertmanager_urls", &urls.join(","))?
        }
        None => match env(ENV_ALERTMANAGER_URLS) {
            Some(value) => parse_alertmanager_urls(ENV_ALERTMANAGER_URLS, &value)?,
            None => Vec::new(),
        },
    };
    let sample_interval = match choices.sample_interval {
        Some(interval) if interval < MIN_SAMPLE_INTERVAL => {
            return Err(invalid(
                "MonitorBuilder::sample_interval",
                &format!("{interval:?}"),
                "the period must be at least 10ms",
            ))
        }
        Some(interval) => interval,
        None => match env(ENV_SAMPLE_INTERVAL) {
            Some(value) => parse_interval(ENV_SAMPLE_INTERVAL, &value)?,
            None => DEFAULT_SAMPLE_INTERVAL,
        },
    };
    let config_file = choices
        .config_file
        .clone()
        .or_else(|| env(ENV_CONFIG).map(PathBuf::from));
    let thresholds = match (&choices.thresholds, config_file) {
        (Some(thresholds), _) => thresholds.clone(),
        (None, Some(path)) => Thresholds::from_file(&path)?,
        (None, None) => Thresholds::default(),
    };
    thresholds.check()?;
    crate::servers::check_listen(&thresholds.llm().servers, listen)
        .map_err(|(url, reason)| invalid("llm.servers", &url, reason))?;
    let container_stats = match env(ENV_CONTAINER_STATS).as_deref() {
        None | Some("auto") => ContainerStats::Automatic,
        Some("cgroup") => ContainerStats::CgroupOnly,
        Some("docker_api") => ContainerStats::DockerApi,
        Some(other) => {
            return Err(invalid(
                ENV_CONTAINER_STATS,
                other,
                "expected auto, cgroup or docker_api",
            ))
        }
    };
    let gpu = match choices.gpu {
        Some(on) => on,
        None => match env(ENV_GPU).as_deref() {
            Some("on") => true,
            Some("off") => false,
            Some(other) => return Err(invalid(ENV_GPU, other, "expected on or off")),
            None => thresholds.gpu().enabled,
        },
    };
    let path_setting = |chosen: &Option<PathBuf>, variable: &str| {
        chosen.clone().or_else(|| env(variable).map(PathBuf::from))
    };
    Ok(Settings {
        listen,
        output_dir: path_setting(&choices.output_dir, ENV_OUTPUT_DIR)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_OUTPUT_DIR)),
        alertmanager_urls,
        sample_interval,
        signals: choices.signals.unwrap_or_default(),
        final_export: choices.final_export.unwrap_or(true),
        containers: cfg!(feature = "docker") && choices.containers.unwrap_or(true),
        orphan_sweep_interval: choices
            .orphan_sweep_interval
            .unwrap_or(DEFAULT_ORPHAN_SWEEP_INTERVAL)
            .max(MIN_SAMPLE_INTERVAL),
        web_config: path_setting(&choices.web_config, ENV_WEB_CONFIG),
        register_dir: path_setting(&choices.register_dir, ENV_REGISTER_DIR),
        otlp: choices
            .otlp
            .unwrap_or_else(|| OTLP_ENDPOINT_VARIABLES.iter().any(|v| env(v).is_some())),
        container_stats,
        experiment: loop_label(&choices.experiment, ENV_EXPERIMENT, env)?,
        loop_name: loop_label(&choices.loop_name, ENV_LOOP_NAME, env)?,
        gpu: cfg!(feature = "gpu") && gpu,
        gpu_library: path_setting(&choices.gpu_library, ENV_GPU_LIBRARY)
            .or_else(|| thresholds.gpu().library.clone()),
        genai: choices.genai.unwrap_or_else(|| {
            env(ENV_SEMCONV_STABILITY_OPT_IN).map_or_else(GenAiConventions::default, |v| {
                GenAiConventions::from_opt_in(&v)
            })
        }),
        thresholds,
    })
}

/// How far below `memory_fraction` HighMemoryUsage resolves when
/// `memory_clear_fraction` is not set: 0.02, so the default 0.80 clears below 0.78.
pub(crate) const MEMORY_CLEAR_MARGIN: f64 = 0.02;

/// Threshold values that check themselves: each type accepts only its range, so a
/// [`Thresholds`] can hold nothing out of range, whether it came from a file or a
/// setter. Private: users see plain numbers and durations.
mod value {
    use std::time::Duration;

    use serde::{Deserialize, Serialize};

    /// A checked value and the plain type it holds.
    pub(crate) trait Checked: Sized + Copy {
        type Plain;
        fn new(plain: Self::Plain) -> Result<Self, String>;
        fn get(self) -> Self::Plain;
    }

    macro_rules! checked {
        ($(#[$doc:meta])* $name:ident($plain:ty) as $written:literal, $ok:expr, $expected:literal) => {
            $(#[$doc])*
            #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
            #[serde(try_from = $written, into = $written)]
            pub(crate) struct $name($plain);

            impl Checked for $name {
                type Plain = $plain;
                fn new(plain: $plain) -> Result<Self, String> {
                    let ok: fn(&$plain) -> bool = $ok;
                    if ok(&plain) {
                        Ok($name(plain))
                    } else {
                        Err(format!("expected {}, not {}", $expected, Written(plain)))
                    }
                }
                fn get(self) -> $plain {
                    self.0
                }
            }

            impl TryFrom<Written<$plain>> for $name {
                type Error = String;
                fn try_from(written: Written<$plain>) -> Result<Self, String> {
                    $name::new(written.0)
                }
            }

            impl From<$name> for Written<$plain> {
                fn from(value: $name) -> Self {
                    Written(value.0)
                }
            }
        };
    }

    checked!(
        /// A fraction in (0, 1].
        Fraction(f64) as "Written<f64>", |v| *v > 0.0 && *v <= 1.0, "a fraction in (0, 1]"
    );
    checked!(
        /// A fraction of a whole that usage never exceeds, for an alert that fires
        /// above it: in (0, 1).
        UsageFraction(f64) as "Written<f64>", |v| *v > 0.0 && *v < 1.0,
        "a fraction in (0, 1) (the alert fires when usage is above it, and usage never exceeds the whole: at 1 or more it could never fire)"
    );
    checked!(
        /// A number of zero or more.
        NonNegative(f64) as "Written<f64>", |v| *v >= 0.0 && v.is_finite(), "a number of zero or more"
    );
    checked!(
        /// A factor above 1.
        FactorAboveOne(f64) as "Written<f64>", |v| *v > 1.0 && v.is_finite(), "a factor above 1"
    );
    checked!(
        /// A factor of at least 1.
        FactorAtLeastOne(f64) as "Written<f64>", |v| *v >= 1.0 && v.is_finite(), "a factor of at least 1"
    );
    checked!(
        /// A positive amount (US dollars).
        Amount(f64) as "Written<f64>", |v| *v > 0.0 && v.is_finite(), "a positive amount"
    );
    checked!(
        /// A count of at least 1.
        AtLeastOne(u64) as "Written<u64>", |v| *v >= 1, "at least 1"
    );
    checked!(
        /// LLMErrors' window: at least the failures it needs before it fires.
        ErrorWindow(u64) as "Written<u64>", |v| *v >= crate::llm::LLM_ERRORS_MIN_FAILURES,
        "at least 3: LLMErrors fires only once three calls in its window have failed, so a window of fewer calls could never fire"
    );
    checked!(
        /// Any count, zero included.
        Count(u64) as "Written<u64>", |_| true, "a count"
    );
    checked!(
        /// A positive duration, written `"90s"`, `"6h"` or as a number of seconds.
        Positive(Duration) as "Written<Duration>", |d| !d.is_zero(), "a positive duration"
    );

    /// How a value is written in `loopwatch.toml`: numbers as numbers, durations as
    /// `"90s"` or a number of seconds (serialised as seconds).
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Written<T>(pub(crate) T);

    impl std::fmt::Display for Written<f64> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}", self.0)
        }
    }

    impl std::fmt::Display for Written<u64> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}", self.0)
        }
    }

    impl std::fmt::Display for Written<Duration> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}", humantime::format_duration(self.0))
        }
    }

    /// A value as a `loopwatch.toml` line writes it: numbers bare, durations quoted.
    pub(crate) trait Toml {
        fn toml(&self) -> String;
    }

    impl Toml for Written<f64> {
        fn toml(&self) -> String {
            self.to_string()
        }
    }

    impl Toml for Written<u64> {
        fn toml(&self) -> String {
            self.to_string()
        }
    }

    impl Toml for Written<Duration> {
        fn toml(&self) -> String {
            format!("\"{self}\"")
        }
    }

    impl<'de> Deserialize<'de> for Written<f64> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            f64::deserialize(d).map(Written)
        }
    }

    impl<'de> Deserialize<'de> for Written<u64> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            u64::deserialize(d).map(Written)
        }
    }

    impl<'de> Deserialize<'de> for Written<Duration> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            #[derive(Deserialize)]
            #[serde(untagged)]
            enum Form {
                Text(String),
                Seconds(f64),
            }
            match Form::deserialize(d)? {
                Form::Text(text) => humantime::parse_duration(&text).map(Written).map_err(|e| {
                    serde::de::Error::custom(format!(
                        "{text:?} is not a duration like \"90s\": {e}"
                    ))
                }),
                Form::Seconds(s) if s.is_finite() && s >= 0.0 => {
                    Ok(Written(Duration::from_secs_f64(s)))
                }
                Form::Seconds(s) => Err(serde::de::Error::custom(format!(
                    "{s} is not a number of seconds"
                ))),
            }
        }
    }

    impl Serialize for Written<f64> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_f64(self.0)
        }
    }

    impl Serialize for Written<u64> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_u64(self.0)
        }
    }

    impl Serialize for Written<Duration> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_f64(self.0.as_secs_f64())
        }
    }
}

use value::{
    Amount, AtLeastOne, Checked, Count, ErrorWindow, FactorAboveOne, FactorAtLeastOne, Fraction,
    NonNegative, Positive, UsageFraction,
};

/// Declares the thresholds: one row per key, with its checked type, plain type,
/// default and documentation. The row becomes a field, its default, a getter, a
/// `with_*` setter that checks the value, and an entry of [`Thresholds::KEYS`].
macro_rules! thresholds {
    ($(
        $(#[doc = $doc:literal])*
        $key:ident, $setter:ident: $checked:ident($plain:ty) = $default:expr;
    )*
    @optional {$(
        $(#[doc = $odoc:literal])*
        $okey:ident, $osetter:ident: $ochecked:ident($oplain:ty);
    )*}) => {
        /// Thresholds, windows and intervals of the evaluator. The defaults are the
        /// numbers of the requirements; the generated Prometheus rules and dashboard use
        /// the same values.
        ///
        /// Every value is checked when it is set: from a `loopwatch.toml` (keys named
        /// after the getters; each key can be set alone, the rest keep their defaults,
        /// and `memory_clear_fraction` follows `memory_fraction` unless it is set too)
        /// or through the `with_*` setters. Durations are written like `"6h"` or `"90s"`:
        ///
        /// ```
        /// use std::time::Duration;
        /// let t: loopwatch::Thresholds = "staleness_iterations = 30\nstall_floor = \"2m\"".parse().unwrap();
        /// assert_eq!(t.staleness_iterations(), 30);
        /// assert_eq!(t.stall_floor(), Duration::from_secs(120));
        /// assert_eq!(t.memory_fraction(), 0.8);
        /// let err = "memory_fraction = 1.5".parse::<loopwatch::Thresholds>().unwrap_err();
        /// assert!(err.to_string().contains("memory_fraction"));
        ///
        /// let t = loopwatch::Thresholds::default().with_memory_fraction(0.55).unwrap();
        /// assert!((t.memory_clear_fraction() - 0.53).abs() < 1e-9);
        /// assert!(loopwatch::Thresholds::default().with_window(0).is_err());
        /// ```
        #[derive(Debug, Clone, PartialEq, serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        #[non_exhaustive]
        pub struct Thresholds {
            $($key: $checked,)*
            $($okey: Option<$ochecked>,)*
            /// Set explicitly, else `memory_fraction` less [`MEMORY_CLEAR_MARGIN`].
            memory_clear_fraction: Option<Fraction>,
            /// The `[llm]` table: prices of the models.
            llm: crate::llm::LlmConfig,
            /// The `[gpu]` table: where NVML is loaded from.
            gpu: GpuConfig,
        }

        impl Default for Thresholds {
            fn default() -> Self {
                Thresholds {
                    $($key: $checked::new($default).expect("the defaults are in range"),)*
                    $($okey: None,)*
                    memory_clear_fraction: None,
                    llm: crate::llm::LlmConfig::default(),
                    gpu: GpuConfig::default(),
                }
            }
        }

        /// Every value as it applies (a dependent default resolved), keyed like the file.
        impl Serialize for Thresholds {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap as _;
                let mut map = s.serialize_map(Some(Self::KEYS.len()))?;
                $(map.serialize_entry(stringify!($key), &self.$key)?;)*
                $(map.serialize_entry(stringify!($okey), &self.$okey)?;)*
                map.serialize_entry("memory_clear_fraction", &self.memory_clear_fraction())?;
                map.serialize_entry("llm", &self.llm)?;
                map.serialize_entry("gpu", &self.gpu)?;
                map.end()
            }
        }

        impl Thresholds {
            /// Every key a `loopwatch.toml` may hold.
            pub const KEYS: &'static [&'static str] =
                &[$(stringify!($key),)* $(stringify!($okey),)* "memory_clear_fraction"];

            /// Each row's key, its default as `loopwatch.toml` writes it (none: off
            /// until set) and its documentation, in the order of the rows.
            fn documented_keys() -> Vec<(&'static str, Option<String>, &'static str)> {
                use value::Toml as _;
                vec![
                    $((
                        stringify!($key),
                        Some(value::Written(Thresholds::default().$key()).toml()),
                        concat!($($doc, "\n",)*),
                    ),)*
                    $((stringify!($okey), None, concat!($($odoc, "\n",)*)),)*
                ]
            }

            $(
                $(#[doc = $odoc])*
                pub fn $okey(&self) -> Option<$oplain> {
                    self.$okey.map(|v| v.get())
                }

                #[doc = concat!("Sets `", stringify!($okey), "`; a value out of range is an error naming the key.")]
                pub fn $osetter(mut self, value: $oplain) -> Result<Self, Error> {
                    self.$okey = Some($ochecked::new(value).map_err(|reason| Error::InvalidSetting {
                        variable: stringify!($okey),
                        value: value::Written(value).to_string(),
                        reason,
                    })?);
                    self.check_relations()?;
                    Ok(self)
                }
            )*

            $(
                $(#[doc = $doc])*
                pub fn $key(&self) -> $plain {
                    self.$key.get()
                }

                #[doc = concat!("Sets `", stringify!($key), "`; a value out of range is an error naming the key.")]
                pub fn $setter(mut self, value: $plain) -> Result<Self, Error> {
                    self.$key = $checked::new(value).map_err(|reason| Error::InvalidSetting {
                        variable: stringify!($key),
                        value: value::Written(value).to_string(),
                        reason,
                    })?;
                    self.check_relations()?;
                    Ok(self)
                }
            )*
        }
    };
}

thresholds! {
    /// Iterations in the rolling windows (default 10).
    window, with_window: AtLeastOne(u64) = 10;
    /// HighMemoryUsage fires when memory in use exceeds this fraction of the limit
    /// that kills the loop (0.80); below 1 (memory in use never exceeds the limit).
    memory_fraction, with_memory_fraction: UsageFraction(f64) = 0.80;
    /// Consecutive samples above the threshold before HighMemoryUsage fires (1).
    memory_samples, with_memory_samples: AtLeastOne(u64) = 1;
    /// DiversityCollapse: diversity below this (0.1) …
    diversity_floor, with_diversity_floor: Fraction(f64) = 0.1;
    /// … in each of this many consecutive iterations (5).
    diversity_iterations, with_diversity_iterations: AtLeastOne(u64) = 5;
    /// ChampionStaleness: iterations since the champion last changed (20).
    staleness_iterations, with_staleness_iterations: AtLeastOne(u64) = 20;
    /// LowSuccessRate: success rate over a full window below this (0.20).
    success_rate_floor, with_success_rate_floor: Fraction(f64) = 0.20;
    /// ContainerCleanupFailures: orphaned containers above this (3).
    orphan_limit, with_orphan_limit: Count(u64) = 3;
    /// "Performance degradation detected": a rolling average worse than its baseline
    /// by more than this fraction (0.20) of the baseline (of its magnitude, for the
    /// signed mean Sharpe).
    degradation_fraction, with_degradation_fraction: Fraction(f64) = 0.20;
    /// Smallest baseline magnitude the mean Sharpe's degradation is measured against
    /// (0.1), so a baseline near zero (0.01, say) does not make noise a degradation.
    /// Success rate and diversity, non-negative ratios, have no floor.
    baseline_floor, with_baseline_floor: NonNegative(f64) = 0.1;
    /// "Performance slowdown detected": mean iteration time above this multiple of
    /// the baseline (1.5).
    slowdown_factor, with_slowdown_factor: FactorAboveOne(f64) = 1.5;
    /// LoopStalled: an iteration running, or no new one started after the last ended,
    /// for longer than this multiple of the rolling mean iteration time (10) …
    stall_factor, with_stall_factor: FactorAtLeastOne(f64) = 10.0;
    /// … or than this floor, whichever is longer (60 s), so that a loop of very fast
    /// iterations is not called stalled by a garbage-collection pause.
    stall_floor, with_stall_floor: Positive(Duration) = Duration::from_secs(60);
    /// EvaluationHung: an evaluation running longer than this multiple (5) of the
    /// 95th percentile duration of the last finished evaluations (once 20 have
    /// finished) …
    evaluation_factor, with_evaluation_factor: FactorAtLeastOne(f64) = 5.0;
    /// … or than this floor, whichever is longer (10 min): twice OpenEvolve's default
    /// evaluator timeout (300 s), so an evaluation past it is one whose own timeout
    /// did not end it.
    evaluation_floor, with_evaluation_floor: Positive(Duration) = Duration::from_secs(600);
    /// LoopCrashLooping and `loopwatch run --restart`: restarts allowed within
    /// `restart_window` (5); the alert fires one before the limit, and past the limit
    /// the supervisor gives up.
    max_restarts, with_max_restarts: AtLeastOne(u64) = 5;
    /// … the window the restarts are counted over (1 h).
    restart_window, with_restart_window: Positive(Duration) = Duration::from_secs(3600);
    /// Period of the long-run statistics log line (6 h).
    stats_interval, with_stats_interval: Positive(Duration) = Duration::from_secs(6 * 3600);
    /// How long a resolved alert is held back before its resolution is sent (15 s):
    /// longer than a Prometheus rule on the same condition takes to notice (a 2 s
    /// scrape plus a 2 s evaluation with the shipped configuration, and room for a
    /// slower one), so that with both paths pointed at one
    /// Alertmanager the rule resolves first and the problem is resolved once.
    alert_resolve_hold, with_alert_resolve_hold: Positive(Duration) = Duration::from_secs(15);
    /// Period at which firing alerts are re-sent to Alertmanager (15 s).
    alert_resend_interval, with_alert_resend_interval: Positive(Duration) = Duration::from_secs(15);
    /// LLMErrors: the share of failed LLM calls (HTTP 5xx, 429, timeouts, connection
    /// errors, cut-off streams) among the recent ones at which it fires (0.5) …
    llm_error_rate, with_llm_error_rate: Fraction(f64) = 0.5;
    /// … over the last this many calls (20), at least three of them failed; so at
    /// least 3 (a window of fewer calls could never fire).
    llm_error_calls, with_llm_error_calls: ErrorWindow(u64) = 20;
    /// LLMBudget warns (pending) when the last hour's spending rate would pass the
    /// budget within this horizon (1 h).
    llm_budget_horizon, with_llm_budget_horizon: Positive(Duration) = Duration::from_secs(3600);
    /// LLMRateLimitNear: the least rate-limit headroom a provider's answers state
    /// (remaining over limit, of any limit not yet reset) below this fraction (0.1) …
    llm_headroom_fraction, with_llm_headroom_fraction: Fraction(f64) = 0.1;
    /// … without a break for this long (30 s), so that one answer near a limit that
    /// resets at once raises nothing.
    llm_headroom_for, with_llm_headroom_for: Positive(Duration) = Duration::from_secs(30);
    /// GPUMemoryHigh: video memory in use above this fraction (0.95) of a GPU's own,
    /// on a GPU the loop's processes use (feature `gpu`); below 1; above vLLM's
    /// default preallocation of 0.9 …
    gpu_memory_fraction, with_gpu_memory_fraction: UsageFraction(f64) = 0.95;
    /// … for this long (1 min). The generated Prometheus rule waits 1 min (its `for`)
    /// whatever this says.
    gpu_memory_for, with_gpu_memory_for: Positive(Duration) = Duration::from_secs(60);
    /// LLMServerSaturated: a local model server's KV cache at least this full (0.9)
    /// while requests wait in its queue, or preemptions within the minute before, at
    /// every read …
    llm_server_kv_cache_fraction, with_llm_server_kv_cache_fraction: Fraction(f64) = 0.9;
    /// … for this long (2 min): the rule's `for`.
    llm_server_saturated_for, with_llm_server_saturated_for: Positive(Duration) = Duration::from_secs(120);
    @optional {
        /// LLMSpendWithoutProgress: US dollars spent on LLM calls since the champion last
        /// changed (or since the start) at which it fires; off until set.
        llm_spend_without_progress_usd, with_llm_spend_without_progress_usd: Amount(f64);
        /// The LLM budget in US dollars: LLMBudget fires when it is spent, and
        /// `[llm.budget] action` says what else happens; off until set. The same as
        /// `usd` under `[llm.budget]`, the documented spelling: set one of them.
        llm_budget_usd, with_llm_budget_usd: Amount(f64);
    }
}

impl Thresholds {
    /// Renders every key of `loopwatch.toml` as the Markdown table docs/configuration.md carries
    /// (`loopwatch config` prints it): its default and its documentation.
    ///
    /// ```
    /// let table = loopwatch::Thresholds::markdown_table();
    /// assert!(table.contains("| `stall_floor` | `\"1m\"` |"));
    /// ```
    pub fn markdown_table() -> String {
        let mut out = String::from("| `loopwatch.toml` key | default | meaning |\n|---|---|---|\n");
        let cell = |text: &str| {
            text.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .replace('|', "\\|")
        };
        let mut row = |key: &str, default: &str, meaning: &str| {
            out.push_str(&format!("| `{key}` | {default} | {} |\n", cell(meaning)));
        };
        for (key, default, doc) in Thresholds::documented_keys() {
            let default = default.map_or("off until set".to_string(), |d| format!("`{d}`"));
            row(key, &default, doc);
            if key == "memory_fraction" {
                row(
                    "memory_clear_fraction",
                    &format!("`memory_fraction` − {MEMORY_CLEAR_MARGIN}"),
                    "HighMemoryUsage, once firing, resolves only below this fraction, so \
                     memory that hovers at the threshold does not flap; at most \
                     `memory_fraction`.",
                );
            }
        }
        row(
            "[llm.budget] usd",
            "off until set",
            "The LLM budget in US dollars: LLMBudget fires when it is spent, with one-time \
             warnings at 50% and 80% before it (see \"Budget\" in docs/llm-proxy.md); \
             `loopwatch run --llm-budget-usd` goes over it. `llm_budget_usd` at the top \
             level is the same key: set one of them.",
        );
        row(
            "[llm.budget] action",
            "`\"warn\"`",
            "What happens when the budget is spent: `\"warn\"` (LLMBudget and the \
             warnings), `\"block\"` (the metering proxy refuses new calls in the \
             provider's error format; calls in flight finish) or `\"stop\"` (`loopwatch \
             run` stops the loop as the operator's SIGTERM would, never restarts it, writes \
             the final files and exits with status 3; the proxy refuses new calls \
             meanwhile); `--llm-budget-action` goes over it. `\"block\"` and `\"stop\"` \
             need an amount.",
        );
        row(
            "[gpu] enabled",
            "`true`",
            "With the `gpu` feature, whether the GPU sampler runs (`loopwatch run` and \
             every monitor); `false` turns it off, for a host whose NVML misbehaves or a \
             loop that has nothing to do with its GPUs. `LOOPWATCH_GPU=on|off` and \
             `MonitorBuilder::gpu` go over it (see docs/gpu.md).",
        );
        row(
            "[gpu] fatal_xids",
            "`[48, 61, 62, 63, 64, 74, 79, 92, 94, 95]`",
            "With the `gpu` feature, the Xid codes that raise GPUErrors (by default those \
             DCGM treats as fatal: faults of the GPU, its memory, firmware or links); every \
             other Xid, such as 13, 31, 43 and 45 that a program's fault or its end raises, \
             is counted and logged but alerts nobody (see docs/gpu.md).",
        );
        row(
            "[gpu] library",
            "`\"libnvidia-ml.so.1\"`",
            "With the `gpu` feature, the NVIDIA management library the GPU sampler \
             loads: a path, or a file name the dynamic linker looks up; \
             `LOOPWATCH_GPU_LIBRARY` and `MonitorBuilder::gpu_library` go over it (see \
             docs/gpu.md).",
        );
        row(
            "[llm.prices.\"<model>\"]",
            "none",
            "What a model's tokens cost, per million (see \"Prices\" in docs/llm-proxy.md); a model \
             without a price is never guessed.",
        );
        row(
            "[[llm.servers]] kind",
            "none",
            "A local model server to read at the sampling interval (see docs/model-servers.md): \
             `\"vllm\"` or `\"sglang\"` (its Prometheus `/metrics`) or `\"ollama\"` (its \
             `/api/ps`); one `[[llm.servers]]` table per server, at most 8; `loopwatch run \
             --llm-server KIND=URL` adds one.",
        );
        row(
            "[[llm.servers]] url",
            "none",
            "The server's base URL, plain `http://HOST:PORT` with any path prefix (a trailing \
             `/metrics` or `/api/ps` is taken off); loopwatch's own listen address is refused \
             (start vLLM with `--port 8001`: its default, 8000, is loopwatch's).",
        );
        row(
            "[[llm.servers]] name",
            "the URL's `host:port`",
            "The `server` label of its series, at most 64 characters; each server's name must \
             differ from the others'.",
        );
        out
    }

    /// The `[gpu]` table of `loopwatch.toml`: where the GPU sampler loads NVML from.
    ///
    /// ```
    /// let t: loopwatch::Thresholds = "[gpu]\nlibrary = \"/opt/nvidia/libnvidia-ml.so.1\"\n".parse().unwrap();
    /// assert_eq!(t.gpu().library.as_deref(), Some(std::path::Path::new("/opt/nvidia/libnvidia-ml.so.1")));
    /// ```
    pub fn gpu(&self) -> &GpuConfig {
        &self.gpu
    }

    /// Sets the `[gpu]` table.
    pub fn with_gpu(mut self, gpu: GpuConfig) -> Self {
        self.gpu = gpu;
        self
    }

    /// The `[llm]` table of `loopwatch.toml`: what each model costs.
    pub fn llm(&self) -> &crate::llm::LlmConfig {
        &self.llm
    }

    /// Sets the `[llm]` table (the prices of the models).
    pub fn with_llm(mut self, llm: crate::llm::LlmConfig) -> Self {
        self.llm = llm;
        self
    }

    /// The LLM budget: `usd` under `[llm.budget]` (or the top-level
    /// `llm_budget_usd`, the same key), with its `action`; `None` while no amount is
    /// set.
    ///
    /// ```
    /// use loopwatch::llm::BudgetAction;
    /// let t: loopwatch::Thresholds = "[llm.budget]\nusd = 5.0\naction = \"block\"\n".parse().unwrap();
    /// let budget = t.llm_budget().unwrap();
    /// assert_eq!((budget.usd, budget.action), (5.0, BudgetAction::Block));
    /// assert_eq!(t.llm_budget_usd(), Some(5.0));
    /// let err = "llm_budget_usd = 5\n[llm.budget]\nusd = 6\n".parse::<loopwatch::Thresholds>().unwrap_err();
    /// assert!(err.to_string().contains("set the LLM budget once"), "{err}");
    /// ```
    pub fn llm_budget(&self) -> Option<crate::llm::Budget> {
        self.llm_budget_usd()
            .map(|usd| crate::llm::Budget::new(usd, self.llm.budget_action))
    }

    /// Sets what happens when the LLM budget is spent (`[llm.budget] action`). An
    /// action other than `warn` needs an amount: set [`Thresholds::with_llm_budget_usd`]
    /// first.
    pub fn with_llm_budget_action(
        mut self,
        action: crate::llm::BudgetAction,
    ) -> Result<Self, Error> {
        self.llm.budget_action = action;
        self.check()?;
        Ok(self)
    }

    /// LoopCrashLooping fires at this many restarts within `restart_window`: one fewer
    /// than `max_restarts` (at least 1), so it warns before the supervisor gives up.
    ///
    /// ```
    /// let t = loopwatch::Thresholds::default();
    /// assert_eq!(t.crash_loop_restarts(), 4);
    /// assert_eq!(t.with_max_restarts(1).unwrap().crash_loop_restarts(), 1);
    /// ```
    pub fn crash_loop_restarts(&self) -> u64 {
        self.max_restarts().saturating_sub(1).max(1)
    }

    /// HighMemoryUsage, once firing, resolves only below this fraction, so memory that
    /// hovers at the threshold does not flap: the value set, else `memory_fraction`
    /// less 0.02 (0.78 by default).
    pub fn memory_clear_fraction(&self) -> f64 {
        self.memory_clear_fraction.map_or_else(
            || (self.memory_fraction() - MEMORY_CLEAR_MARGIN).max(0.0),
            Checked::get,
        )
    }

    /// Sets `memory_clear_fraction`; it must be no higher than `memory_fraction`.
    pub fn with_memory_clear_fraction(mut self, value: f64) -> Result<Self, Error> {
        self.memory_clear_fraction =
            Some(
                Fraction::new(value).map_err(|reason| Error::InvalidSetting {
                    variable: "memory_clear_fraction",
                    value: value.to_string(),
                    reason,
                })?,
            );
        self.check_relations()?;
        Ok(self)
    }

    /// Checks thresholds as a monitor will use them: the checks between values, and
    /// that an LLM budget action other than `warn` has an amount. A file, and every
    /// setter but [`Thresholds::with_llm_budget_action`], leave the second to this,
    /// since the amount may come after them (`loopwatch run --llm-budget-usd` over a
    /// file that sets the action); the monitor's builder runs it on the thresholds
    /// it is given or reads.
    ///
    /// ```
    /// let t: loopwatch::Thresholds = "[llm.budget]\naction = \"block\"\n".parse().unwrap();
    /// let err = t.check().unwrap_err().to_string();
    /// assert!(err.contains("needs an amount"), "{err}");
    /// assert!(t.with_llm_budget_usd(5.0).unwrap().check().is_ok());
    /// ```
    pub fn check(&self) -> Result<(), Error> {
        self.check_relations()?;
        if self.llm_budget_usd.is_none() && self.llm.budget_action != crate::llm::BudgetAction::Warn
        {
            return Err(Error::InvalidSetting {
                variable: "llm.budget.action",
                value: self.llm.budget_action.to_string(),
                reason: "a budget action needs an amount: set `usd` under [llm.budget] in \
                         loopwatch.toml, or `loopwatch run --llm-budget-usd`"
                    .to_string(),
            });
        }
        Ok(())
    }

    /// The checks between values that hold whatever is set later, in one place (each
    /// value's own range is checked by its type): run by every setter and when a
    /// file is read. See [`Thresholds::check`] for the rest.
    pub(crate) fn check_relations(&self) -> Result<(), Error> {
        if self.memory_clear_fraction() > self.memory_fraction() {
            return Err(Error::InvalidSetting {
                variable: "memory_clear_fraction",
                value: self.memory_clear_fraction().to_string(),
                reason: format!(
                    "expected a fraction no higher than memory_fraction ({})",
                    self.memory_fraction()
                ),
            });
        }
        Ok(())
    }

    /// Reads thresholds from a TOML file: keys named after the getters, the rest at
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
        let thresholds: Thresholds = toml::from_str(text).map_err(|e| {
            // The key on the offending line, so that the error names it.
            let key = e.span().and_then(|span| {
                let at = span.start.min(text.len());
                let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
                let line = text[line_start..].lines().next()?;
                Some(line.split_once('=')?.0.trim().to_string())
            });
            let message = e.message().trim();
            Error::InvalidSetting {
                variable: "loopwatch.toml",
                value: e
                    .span()
                    .and_then(|span| text.get(span))
                    .unwrap_or_default()
                    .to_string(),
                reason: match key {
                    Some(key) => format!("{key}: {message}"),
                    None => message.to_string(),
                },
            }
        })?;
        let thresholds = thresholds.with_budget_table()?;
        thresholds.check_relations()?;
        Ok(thresholds)
    }
}

impl Thresholds {
    /// Takes `usd` of `[llm.budget]` as the budget's amount: one amount, read by
    /// [`Thresholds::llm_budget`]; set both ways, it is refused.
    fn with_budget_table(mut self) -> Result<Thresholds, Error> {
        let Some(usd) = self.llm.budget_usd.take() else {
            return Ok(self);
        };
        if let Some(top) = self.llm_budget_usd() {
            return Err(Error::InvalidSetting {
                variable: "llm.budget.usd",
                value: usd.to_string(),
                reason: format!(
                    "set the LLM budget once: `usd` under [llm.budget], or the older \
                     top-level llm_budget_usd (here {top}), not both"
                ),
            });
        }
        self.with_llm_budget_usd(usd)
    }
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
    fn the_builder_wins_over_the_environment_which_wins_over_the_defaults() {
        let env = |name: &str| match name {
            ENV_LISTEN => Some("127.0.0.1:9100".to_string()),
            ENV_SAMPLE_INTERVAL => Some("250ms".to_string()),
            ENV_CONTAINER_STATS => Some("cgroup".to_string()),
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4318".to_string()),
            _ => None,
        };
        let from_env = resolve(&Choices::default(), &env).unwrap();
        assert_eq!(from_env.listen, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(from_env.sample_interval, Duration::from_millis(250));
        assert_eq!(from_env.container_stats, ContainerStats::CgroupOnly);
        assert!(from_env.otlp);
        let chosen = Choices {
            listen: Some("127.0.0.1:9200".parse().unwrap()),
            otlp: Some(false),
            ..Choices::default()
        };
        let from_builder = resolve(&chosen, &env).unwrap();
        assert_eq!(from_builder.listen, "127.0.0.1:9200".parse().unwrap());
        assert!(!from_builder.otlp);
        let defaults = resolve(&Choices::default(), &|_: &str| None).unwrap();
        assert_eq!(defaults.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(defaults.output_dir, PathBuf::from(DEFAULT_OUTPUT_DIR));
        assert_eq!(defaults.thresholds, Thresholds::default());
        assert_eq!(defaults.container_stats, ContainerStats::Automatic);
        let bad = |name: &str| (name == ENV_CONTAINER_STATS).then(|| "gpu".to_string());
        let err = resolve(&Choices::default(), &bad).unwrap_err().to_string();
        assert!(err.contains(ENV_CONTAINER_STATS), "{err}");
    }

    /// `gen_ai_latest_experimental` anywhere in `OTEL_SEMCONV_STABILITY_OPT_IN`
    /// chooses the newest GenAI conventions; other values, none, or the builder's
    /// choice keep (or choose) what they say.
    #[test]
    fn the_semconv_opt_in_chooses_the_newest_genai_conventions() {
        let with = |value: &'static str, chosen: Option<GenAiConventions>| {
            let choices = Choices {
                genai: chosen,
                ..Choices::default()
            };
            resolve(&choices, &move |name: &str| {
                (name == ENV_SEMCONV_STABILITY_OPT_IN && !value.is_empty())
                    .then(|| value.to_string())
            })
            .unwrap()
            .genai
        };
        for (value, expected) in [
            ("", GenAiConventions::Default),
            (
                "gen_ai_latest_experimental",
                GenAiConventions::LatestExperimental,
            ),
            (
                "http, gen_ai_latest_experimental",
                GenAiConventions::LatestExperimental,
            ),
            (
                "http,gen_ai_latest_experimental,database",
                GenAiConventions::LatestExperimental,
            ),
            ("http/dup", GenAiConventions::Default),
            ("gen_ai_latest_experimental_not", GenAiConventions::Default),
            ("GEN_AI_LATEST_EXPERIMENTAL", GenAiConventions::Default),
            (",,,", GenAiConventions::Default),
        ] {
            assert_eq!(with(value, None), expected, "{value:?}");
        }
        assert_eq!(
            with(
                "gen_ai_latest_experimental",
                Some(GenAiConventions::Default)
            ),
            GenAiConventions::Default,
            "the builder's choice wins"
        );
        assert_eq!(
            with("", Some(GenAiConventions::LatestExperimental)),
            GenAiConventions::LatestExperimental
        );
    }

    /// The table docs/configuration.md is generated from is the code:
    /// `resolve` reads exactly its variables, and its defaults are the constants'.
    #[test]
    fn the_environment_table_is_what_resolve_reads() {
        let read = std::sync::Mutex::new(std::collections::BTreeSet::new());
        resolve(&Choices::default(), &|name: &str| {
            read.lock().unwrap().insert(name.to_string());
            None
        })
        .unwrap();
        let listed: std::collections::BTreeSet<String> =
            ENVIRONMENT.iter().map(|v| v.name.to_string()).collect();
        assert_eq!(read.into_inner().unwrap(), listed);
        let row = |name: &str| ENVIRONMENT.iter().find(|v| v.name == name).unwrap();
        assert!(row(ENV_LISTEN).default.contains(DEFAULT_LISTEN));
        let interval = row(ENV_SAMPLE_INTERVAL);
        assert!(interval
            .default
            .contains(&humantime::format_duration(DEFAULT_SAMPLE_INTERVAL).to_string()));
        assert!(interval.meaning.contains(&format!(
            "at least `{}`",
            humantime::format_duration(MIN_SAMPLE_INTERVAL)
        )));
        // Every value the container-stats row names is accepted, its default is the
        // default's, and nothing else is.
        let stats = row(ENV_CONTAINER_STATS);
        let with = |value: &str| {
            let value = value.to_string();
            resolve(&Choices::default(), &move |name: &str| {
                (name == ENV_CONTAINER_STATS).then(|| value.clone())
            })
        };
        let named: Vec<&str> = stats.meaning.split('`').skip(1).step_by(2).collect();
        assert_eq!(named, ["auto", "cgroup", "docker_api"]);
        for value in named {
            assert!(with(value).is_ok(), "{value}");
        }
        assert_eq!(
            with(stats.default.trim_matches('`'))
                .unwrap()
                .container_stats,
            ContainerStats::default()
        );
        let table = EnvVariable::markdown_table();
        assert_eq!(table.lines().count(), ENVIRONMENT.len() + 2, "{table}");
    }

    /// The keys' table has a row per key, and each default it shows, written in a
    /// `loopwatch.toml`, is the default.
    #[test]
    fn the_keys_table_shows_every_key_with_its_default() {
        let table = Thresholds::markdown_table();
        let mut rows: Vec<(String, String)> = table
            .lines()
            .skip(2)
            .map(|line| {
                let cells: Vec<&str> = line.split(" | ").collect();
                (
                    cells[0]
                        .trim_start_matches("| ")
                        .trim_matches('`')
                        .to_string(),
                    cells[1].to_string(),
                )
            })
            .collect();
        assert_eq!(rows.pop().unwrap().0, "[[llm.servers]] name");
        assert_eq!(rows.pop().unwrap().0, "[[llm.servers]] url");
        assert_eq!(rows.pop().unwrap().0, "[[llm.servers]] kind");
        assert_eq!(rows.pop().unwrap().0, "[llm.prices.\"<model>\"]");
        assert_eq!(rows.pop().unwrap().0, "[gpu] library");
        let (key, default) = rows.pop().unwrap();
        assert_eq!(key, "[gpu] fatal_xids");
        let written = default.trim_matches('`');
        let parsed: Thresholds = format!("[gpu]\nfatal_xids = {written}").parse().unwrap();
        assert_eq!(
            parsed,
            Thresholds::default(),
            "the fatal set's default is the default"
        );
        let (key, default) = rows.pop().unwrap();
        assert_eq!(key, "[gpu] enabled");
        let parsed: Thresholds = format!("[gpu]\nenabled = {}", default.trim_matches('`'))
            .parse()
            .unwrap();
        assert_eq!(parsed, Thresholds::default());
        assert_eq!(rows.pop().unwrap().0, "[llm.budget] action");
        assert_eq!(rows.pop().unwrap().0, "[llm.budget] usd");
        let mut keys: Vec<&str> = rows.iter().map(|(key, _)| key.as_str()).collect();
        keys.sort_unstable();
        let mut expected = Thresholds::KEYS.to_vec();
        expected.sort_unstable();
        assert_eq!(keys, expected);
        for (key, default) in &rows {
            if let Some(value) = default.strip_prefix('`').and_then(|d| d.strip_suffix('`')) {
                let parsed: Thresholds = format!("{key} = {value}")
                    .parse()
                    .unwrap_or_else(|e| panic!("{key} = {value}: {e}"));
                assert_eq!(parsed, Thresholds::default(), "{key} = {value}");
            } else if key != "memory_clear_fraction" {
                assert_eq!(default, "off until set", "{key}");
            }
        }
    }

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

    /// Every key can be set alone, in a file and through its setter; a dependent
    /// default follows what was set.
    #[test]
    fn every_key_can_be_set_alone() {
        let values = [
            ("window", "4"),
            ("memory_fraction", "0.55"),
            ("memory_clear_fraction", "0.5"),
            ("memory_samples", "3"),
            ("diversity_floor", "0.3"),
            ("diversity_iterations", "2"),
            ("staleness_iterations", "7"),
            ("success_rate_floor", "0.5"),
            ("orphan_limit", "0"),
            ("degradation_fraction", "0.4"),
            ("baseline_floor", "0"),
            ("slowdown_factor", "3"),
            ("stall_factor", "1"),
            ("stall_floor", "\"5s\""),
            ("evaluation_factor", "2.5"),
            ("evaluation_floor", "\"90s\""),
            ("max_restarts", "2"),
            ("llm_error_rate", "0.3"),
            ("llm_error_calls", "5"),
            ("llm_budget_horizon", "\"30m\""),
            ("llm_headroom_fraction", "0.25"),
            ("llm_headroom_for", "\"5s\""),
            ("llm_server_kv_cache_fraction", "0.75"),
            ("llm_server_saturated_for", "\"30s\""),
            ("llm_spend_without_progress_usd", "2.5"),
            ("llm_budget_usd", "40"),
            ("restart_window", "\"10m\""),
            ("stats_interval", "\"1h\""),
            ("alert_resolve_hold", "\"1s\""),
            ("alert_resend_interval", "\"2m\""),
            ("gpu_memory_fraction", "0.8"),
            ("gpu_memory_for", "\"5m\""),
        ];
        let mut covered: Vec<&str> = values.iter().map(|(key, _)| *key).collect();
        covered.sort_unstable();
        let mut keys = Thresholds::KEYS.to_vec();
        keys.sort_unstable();
        assert_eq!(covered, keys, "every key is tried");
        for (key, value) in values {
            let parsed: Result<Thresholds, _> = format!("{key} = {value}").parse();
            let parsed = parsed.unwrap_or_else(|e| panic!("{key} = {value}: {e}"));
            assert_ne!(parsed, Thresholds::default(), "{key} was applied");
        }
        let t: Thresholds = "memory_fraction = 0.55".parse().unwrap();
        assert!((t.memory_clear_fraction() - 0.53).abs() < 1e-9);
        let err = "memory_fraction = 0.5\nmemory_clear_fraction = 0.6"
            .parse::<Thresholds>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("memory_clear_fraction"), "{err}");
        for (text, key) in [
            ("window = 0", "window"),
            ("stall_floor = \"0s\"", "stall_floor"),
            ("evaluation_floor = \"0s\"", "evaluation_floor"),
            ("evaluation_factor = 0.5", "evaluation_factor"),
            ("alert_resolve_hold = 0", "alert_resolve_hold"),
            ("slowdown_factor = 1.0", "slowdown_factor"),
            ("nonsense = 1", "nonsense"),
        ] {
            let err = text.parse::<Thresholds>().unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    /// A setting under which an alert could never fire is refused, and the reason
    /// says why.
    #[test]
    fn settings_that_would_silence_an_alert_are_refused_with_the_reason() {
        for calls in [1, 2] {
            let err = format!("llm_error_calls = {calls}")
                .parse::<Thresholds>()
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("llm_error_calls") && err.contains("could never fire"),
                "{calls}: {err}"
            );
            let err = Thresholds::default()
                .with_llm_error_calls(calls)
                .unwrap_err()
                .to_string();
            assert!(err.contains("could never fire"), "{calls}: {err}");
        }
        let t: Thresholds = "llm_error_calls = 3".parse().unwrap();
        assert_eq!(t.llm_error_calls(), 3);
        // Usage never exceeds the whole: an alert above all of it could never fire.
        for key in ["memory_fraction", "gpu_memory_fraction"] {
            let err = format!("{key} = 1.0")
                .parse::<Thresholds>()
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(key) && err.contains("could never fire"),
                "{key}: {err}"
            );
        }
        let t: Thresholds = "memory_fraction = 0.99\ngpu_memory_fraction = 0.99"
            .parse()
            .unwrap();
        assert_eq!((t.memory_fraction(), t.gpu_memory_fraction()), (0.99, 0.99));
        assert!(Thresholds::default().with_gpu_memory_fraction(1.0).is_err());
        assert!(Thresholds::default().with_memory_fraction(1.0).is_err());
    }

    /// `[[llm.servers]]`: each server read with its kind, base URL and name; bad ones
    /// refused with what is wrong, never a panic.
    #[test]
    fn model_servers_are_read_and_bad_ones_refused() {
        let t: Thresholds = "[[llm.servers]]\nkind = \"vllm\"\nurl = \"http://127.0.0.1:8001/metrics\"\n\
                             [[llm.servers]]\nkind = \"ollama\"\nurl = \"http://127.0.0.1:11434\"\nname = \"local\"\n"
            .parse()
            .unwrap();
        let servers = &t.llm().servers;
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].kind().as_str(), "vllm");
        assert_eq!(servers[0].endpoint(), "http://127.0.0.1:8001/metrics");
        assert_eq!(servers[0].name(), "127.0.0.1:8001");
        assert_eq!(
            (servers[1].kind().as_str(), servers[1].name()),
            ("ollama", "local")
        );
        let server = |body: &str| format!("[[llm.servers]]\n{body}\n");
        for (text, says) in [
            (
                server("kind = \"tgi\"\nurl = \"http://a:1\""),
                "unknown model server kind",
            ),
            (
                server("kind = \"vllm\"\nurl = \"https://a:1\""),
                "https is not read",
            ),
            (
                server("kind = \"vllm\"\nurl = \"a:1\""),
                "expected a base URL",
            ),
            (server("kind = \"vllm\""), "url"),
            (server("url = \"http://a:1\""), "kind"),
            (
                server("kind = \"vllm\"\nurl = \"http://a:1\"\nport = 3"),
                "port",
            ),
            (
                server("kind = \"vllm\"\nurl = \"http://a:1\"\nname = \"\""),
                "model server name",
            ),
            (server("kind = 3\nurl = \"http://a:1\""), "kind"),
            (
                server("kind = \"vllm\"\nurl = \"http://a:1\"").repeat(2),
                "give each its own name",
            ),
            (
                (0..9)
                    .map(|i| server(&format!("kind = \"vllm\"\nurl = \"http://a:{i}\"")))
                    .collect::<String>(),
                "at most 8",
            ),
        ] {
            let err = text.parse::<Thresholds>().unwrap_err().to_string();
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }

    /// A model server at loopwatch's own listen address (vLLM's documented port is
    /// loopwatch's default) stops start-up, naming the URL; another port does not.
    #[test]
    fn a_model_server_at_loopwatchs_own_address_is_refused() {
        let with = |url: &str, listen: Option<&str>| {
            let thresholds: Thresholds =
                format!("[[llm.servers]]\nkind = \"vllm\"\nurl = \"{url}\"\n")
                    .parse()
                    .unwrap();
            let choices = Choices {
                thresholds: Some(thresholds),
                listen: listen.map(|l| l.parse().unwrap()),
                ..Choices::default()
            };
            resolve(&choices, &|_: &str| None)
        };
        let err = with("http://127.0.0.1:8000", None).unwrap_err().to_string();
        assert!(
            err.contains("llm.servers")
                && err.contains("http://127.0.0.1:8000")
                && err.contains("listens on 0.0.0.0:8000")
                && err.contains("--port 8001"),
            "{err}"
        );
        assert!(with("http://localhost:9100", Some("127.0.0.1:9100")).is_err());
        assert!(with("http://127.0.0.1:8001", None).is_ok());
        assert!(with("http://127.0.0.1:8000", Some("127.0.0.1:9100")).is_ok());
    }

    /// `[llm.budget]`: its amount and action read, bad ones refused with the key
    /// named, never a panic.
    #[test]
    fn the_llm_budget_table_is_read_and_bad_values_are_refused() {
        use crate::llm::BudgetAction;
        let t: Thresholds = "[llm.budget]\nusd = 2.5\naction = \"stop\"\n"
            .parse()
            .unwrap();
        let budget = t.llm_budget().unwrap();
        assert_eq!((budget.usd, budget.action), (2.5, BudgetAction::Stop));
        // The amount alone: warn. The older spelling: the same budget.
        let t: Thresholds = "[llm.budget]\nusd = 1\n".parse().unwrap();
        assert_eq!(t.llm_budget().unwrap().action, BudgetAction::Warn);
        let t: Thresholds = "llm_budget_usd = 1\n".parse().unwrap();
        assert_eq!(t.llm_budget().unwrap().usd, 1.0);
        assert!(Thresholds::default().llm_budget().is_none());
        for (text, names) in [
            ("[llm.budget]\nusd = 0\n", "llm.budget.usd"),
            ("[llm.budget]\nusd = -3\n", "llm.budget.usd"),
            ("[llm.budget]\nusd = nan\n", "llm.budget.usd"),
            ("[llm.budget]\nusd = inf\n", "llm.budget.usd"),
            ("[llm.budget]\nusd = \"five\"\n", "usd"),
            (
                "[llm.budget]\nusd = 1\naction = \"halt\"\n",
                "llm.budget.action",
            ),
            ("[llm.budget]\nusd = 1\naction = 3\n", "action"),
            ("[llm.budget]\nusd = 1\nlimit = 3\n", "limit"),
            (
                "llm_budget_usd = 1\n[llm.budget]\nusd = 1\n",
                "llm.budget.usd",
            ),
        ] {
            let err = text.parse::<Thresholds>().unwrap_err().to_string();
            assert!(err.contains(names), "{text:?}: {err}");
        }
        // An action without an amount through its setter too.
        let err = Thresholds::default()
            .with_llm_budget_action(BudgetAction::Block)
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs an amount"), "{err}");
        // In a file it is read, since the amount may come later (a flag), and other
        // setters leave it; a monitor's settings refuse it while no amount came.
        let t: Thresholds = "[llm.budget]\naction = \"block\"\n".parse().unwrap();
        let t = t.with_max_restarts(3).unwrap();
        let choices = Choices {
            thresholds: Some(t.clone()),
            ..Choices::default()
        };
        let err = resolve(&choices, &|_: &str| None).unwrap_err().to_string();
        assert!(err.contains("llm.budget.action"), "{err}");
        assert!(err.contains("needs an amount"), "{err}");
        let t = t.with_llm_budget_usd(2.0).unwrap();
        assert_eq!(t.llm_budget().unwrap().action, BudgetAction::Block);
        let choices = Choices {
            thresholds: Some(t),
            ..Choices::default()
        };
        assert!(resolve(&choices, &|_: &str| None).is_ok());
    }

    /// The GPU sampler: the builder's choice, else `LOOPWATCH_GPU`, else `[gpu]
    /// enabled`, else on (always off without the feature).
    #[test]
    fn the_gpu_sampler_is_switched_by_the_builder_the_environment_and_the_file() {
        let off_in_file: Thresholds = "[gpu]\nenabled = false\n".parse().unwrap();
        let gpu = |builder: Option<bool>, variable: Option<&str>, file: &Thresholds| {
            let choices = Choices {
                gpu: builder,
                thresholds: Some(file.clone()),
                ..Choices::default()
            };
            let variable = variable.map(str::to_string);
            resolve(&choices, &move |name: &str| {
                (name == ENV_GPU).then(|| variable.clone()).flatten()
            })
            .map(|s| s.gpu)
        };
        let on = cfg!(feature = "gpu");
        let defaults = Thresholds::default();
        assert_eq!(gpu(None, None, &defaults).unwrap(), on);
        assert!(!gpu(None, None, &off_in_file).unwrap());
        assert_eq!(gpu(None, Some("on"), &off_in_file).unwrap(), on);
        assert!(!gpu(None, Some("off"), &defaults).unwrap());
        assert_eq!(gpu(Some(true), Some("off"), &off_in_file).unwrap(), on);
        assert!(!gpu(Some(false), Some("on"), &defaults).unwrap());
        let err = gpu(None, Some("no"), &defaults).unwrap_err().to_string();
        assert!(
            err.contains("LOOPWATCH_GPU") && err.contains("on or off"),
            "{err}"
        );
    }
}
