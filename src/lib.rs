//! loopwatch keeps long-running autonomous iteration loops honest.
//!
//! A loop — an LLM or a genetic algorithm proposing trading strategies, back-testing
//! them and keeping a champion for hundreds of generations — holds a [`Monitor`] and
//! reports each iteration to it. loopwatch records OpenTelemetry instruments (every one
//! declared in the [`catalog`] with its unit and description), samples the host and the
//! process in the background, and serves everything in the Prometheus text format on
//! `:8000/metrics`. When the loop stops it writes `prometheus_metrics_final.txt` and
//! `metrics_final.json`.
//!
//! ```
//! use loopwatch::{diversity, Monitor, Population};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let monitor = Monitor::builder()
//!     .listen("127.0.0.1:0".parse().unwrap())
//!     .output_dir(dir.path())
//!     .build()
//!     .unwrap();
//! let population = ["ma-5-20", "ma-5-20", "momentum-10"];
//! let mut iteration = monitor.start_iteration();
//! iteration.record_success(1.4, 0.12);
//! iteration.record_success(0.8, 0.20);
//! iteration.record_failure("too few trades");
//! iteration.record_population(
//!     Population::new(3, diversity::unique_count(population) as u64,
//!                     diversity::distinct_fraction(population))
//!         .with_champion("ma-5-20"),
//! );
//! iteration.finish();
//!
//! let exposition = monitor.render_metrics().unwrap();
//! assert!(exposition.contains("strategy_success_total 2"));
//! assert!(exposition.contains("sharpe_ratio 1.1"));
//! monitor.shutdown();
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![forbid(unsafe_code)]

pub mod catalog;
pub mod config;
pub mod diversity;
mod docker;
mod error;
mod evaluate;
mod export;
pub mod generate;
mod instruments;
mod monitor;
mod pipeline;
mod sample;

pub use docker::cleanup::SweepReport;
pub use docker::labels::{
    ownership_labels, Ownership, LABEL_MANAGED, LABEL_OWNER_HOST, LABEL_OWNER_PID,
    LABEL_OWNER_START_TIME, LABEL_RUN_ID,
};
pub use docker::sandbox::{Sandbox, SandboxError, SandboxOutput, SandboxSpec};
pub use docker::{cleanup_orphans, ContainerShutdownReport};
pub use error::{Error, Result};
pub use evaluate::{
    AlertName, AlertState, Event, EventKind, RollingValues, Thresholds, Transition, WarningChange,
    Watched, MAX_EVENTS,
};
pub use export::dashboard::html_escape;
pub use export::final_export::{FinalExport, JSON_FINAL_FILE, PROMETHEUS_FINAL_FILE};
pub use export::web_config::ENV_WEB_CONFIG;
pub use export::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS, MAX_IN_FLIGHT, REQUEST_TIMEOUT};
pub use monitor::{
    HistoryPoint, Iteration, IterationSummary, Monitor, MonitorBuilder, Population, RunIdentity,
    RunSummary, ShutdownReport, HISTORY_LEN, MAX_FAILURE_REASONS,
};
pub use pipeline::{CollectError, PROMETHEUS_CONTENT_TYPE};
pub use sample::{HostSample, HostSampler};

/// Re-exported so users can add their own instruments without a separate dependency.
pub use opentelemetry;
