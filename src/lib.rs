//! loopwatch keeps long-running autonomous iteration loops honest.
//!
//! A loop — an LLM or a genetic algorithm proposing trading strategies, back-testing
//! them and keeping a champion for hundreds of generations — holds a [`Monitor`] and
//! reports each iteration to it. loopwatch records OpenTelemetry instruments (every one
//! declared in the [`catalog`] with its unit and description), samples the host and the
//! process in the background, evaluates the alerts, and serves everything in the
//! Prometheus text format on `:8000/metrics`. When the loop stops it writes
//! `prometheus_metrics_final.txt` and `metrics_final.json`.
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
//!
//! Cargo features: `docker` (default: container sampling, orphan cleanup and the
//! sandbox launcher), `web-config` (default: TLS and basic auth for the endpoint),
//! `llm-proxy` (default: the metering proxy of LLM calls, `llm::proxy`), `otlp`
//! (export to an OpenTelemetry Collector), `gpu` (the GPU sampler, NVML loaded at run
//! time through nvml-wrapper: `sample::GpuSampler`; on in the `loopwatch` command).
//!
//! The public API grows without breaking: the types that may gain fields or variants
//! are `#[non_exhaustive]` and built through constructors and `with_*` setters, and
//! errors keep their dependencies' errors as sources ([`ErrorSource`]), not as types.
//! One dependency is part of the API on purpose: [`opentelemetry`], re-exported for
//! [`Monitor::meter`]. loopwatch 0.1 uses opentelemetry 0.33; a loopwatch release that
//! moves to another 0.x opentelemetry is a breaking release, and says so in its
//! changelog.
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The data flow, bottom up: shared records and vocabulary; what the loop reports and
// what is sampled; the pure evaluator; the exporters; the monitor that joins them.
pub mod alerts;
pub mod catalog;
mod config;
mod error;
mod owner;
mod records;

pub mod diversity;
pub mod llm;
mod pipeline;
mod processes;
pub mod protocol;
mod reported;
pub mod sample;
pub mod servers;

// Containers on Docker, or their stand-in without the `docker` feature: the same
// interface either way, so that nothing above carries a `cfg`.
#[cfg(feature = "docker")]
mod containers;
#[cfg(not(feature = "docker"))]
#[path = "containers/stub.rs"]
mod containers;
pub mod sandbox;

mod evaluate;
mod export;
mod monitor;

// Monitoring: what a loop that holds a monitor uses.
pub use alerts::{AlertName, AlertSpec, AlertState, Evaluated, RuleSpec, Severity, ALERTS};
pub use config::{EnvVariable, GpuConfig, Thresholds, DEFAULT_FATAL_XIDS, ENVIRONMENT};
pub use error::{CollectError, Error, ErrorSource};
pub use export::files::{FinalExport, JSON_FINAL_FILE, PROMETHEUS_FINAL_FILE};
pub use monitor::{
    Evaluation, Iteration, LlmRecorder, Monitor, MonitorBuilder, ShutdownReport, Signals,
};
pub use records::{IterationSummary, RunIdentity, RunSummary};
pub use reported::Population;

/// Re-exported so users can add their own instruments ([`Monitor::meter`]) without a
/// separate dependency, and with the same version loopwatch uses (0.33).
pub use opentelemetry;

pub mod supervise {
    //! Running a loop as a child process, as `loopwatch run` does: the
    //! [`Supervision`] handle of a monitor ([`Monitor::supervision`](crate::Monitor::supervision))
    //! for the child's starts, exits and restarts, the [`Intake`] for what it writes
    //! to its socket, and how a process ended ([`LoopExit`]).
    pub use crate::monitor::{Intake, Supervision};
    pub use crate::records::{ExitReason, HungEvaluation, KillRefused, LoopExit};
}

pub mod cleanup {
    //! What a run leaves behind, and how it is found: orphaned containers and
    //! processes of loops that died, the ownership that tells them apart (the
    //! labels and environment a run marks them with), and the sweeps' reports.
    //! `loopwatch cleanup` runs [`orphaned_containers`] and [`orphaned_processes`].
    pub use crate::containers::{cleanup_orphans as orphaned_containers, ContainerSweepReport};
    pub use crate::owner::{
        LiveProcesses, Owner, ProcessTable, SweepReport, LABEL_MANAGED, LABEL_OWNER_HOST,
        LABEL_OWNER_PID, LABEL_OWNER_START_TIME, LABEL_RUN_ID,
    };
    pub use crate::processes::{
        cleanup_orphaned_processes as orphaned_processes, descendants, zombie_children,
        MarkedProcess, ProcessId, ProcessSweepReport, ENV_OWNER, ENV_RUN_ID,
    };
}

pub mod compare {
    //! Runs side by side, from their final export files: what `loopwatch compare`
    //! reads ([`Comparison`]) and the figures it compares.
    pub use crate::export::compare::{CompareError, Comparison, FinalRun, RunFigures};
}

/// The Rust snippets of the README and of the pages of docs/, compiled (and run unless
/// marked `no_run`) as doc tests, so that they name the API as it is; a test in
/// `tests/readme.rs` checks that every page is listed here.
#[cfg(doctest)]
mod documentation {
    macro_rules! pages {
        ($($page:ident = $path:literal;)*) => {
            $(
                #[doc = include_str!($path)]
                struct $page;
            )*
        };
    }
    pages! {
        Readme = "../README.md";
        Alerts = "../docs/alerts.md";
        Architecture = "../docs/architecture.md";
        Compare = "../docs/compare.md";
        Configuration = "../docs/configuration.md";
        Containers = "../docs/containers.md";
        Endpoint = "../docs/endpoint.md";
        Evolve = "../docs/evolve.md";
        Fleets = "../docs/fleets.md";
        Frameworks = "../docs/frameworks.md";
        Gpu = "../docs/gpu.md";
        Index = "../docs/README.md";
        Kubernetes = "../docs/kubernetes.md";
        LlmProxy = "../docs/llm-proxy.md";
        Metrics = "../docs/metrics.md";
        ModelServers = "../docs/model-servers.md";
        Performance = "../docs/performance.md";
        Protocol = "../docs/protocol.md";
        Python = "../docs/python.md";
        Restarts = "../docs/restarts.md";
        Runbooks = "../docs/runbooks.md";
        Rust = "../docs/rust.md";
        Stack = "../docs/stack.md";
        Testing = "../docs/testing.md";
    }
}
