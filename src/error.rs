//! The error types of loopwatch's fallible boundaries: start-up, collection, the final
//! export and sandbox runs. Recording observations never fails: bad values are
//! rejected, counted in `loopwatch_rejected_observations_total` and logged instead.

use std::net::SocketAddr;
use std::path::PathBuf;

/// The underlying error of a dependency (the OpenTelemetry SDK, Docker's client,
/// the Prometheus encoder), kept as a source so that its type is not part of
/// loopwatch's API: read it through [`std::error::Error::source`].
pub type ErrorSource = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong when starting a monitor or writing its final export.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting (environment variable, builder value or file) could not be used.
    #[error("invalid value {value:?} for {variable}: {reason}")]
    InvalidSetting {
        /// Environment variable, builder method or file the value came from.
        variable: &'static str,
        /// The offending value.
        value: String,
        /// What was expected instead.
        reason: String,
    },
    /// The thresholds file could not be read or holds an invalid key or value.
    #[error("cannot use the thresholds file {path}: {reason}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it, naming the key.
        reason: String,
    },
    /// The metrics endpoint could not bind its address.
    #[error(
        "cannot serve metrics on {addr}: {source}; is another loop already using it? \
         Choose another address with LOOPWATCH_LISTEN or MonitorBuilder::listen"
    )]
    Bind {
        /// The address that could not be bound.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The LLM metering proxy could not bind its address.
    #[error("cannot start the LLM metering proxy on {addr}: {source}; choose another address with --llm-proxy-listen")]
    ProxyBind {
        /// The address that could not be bound.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// An upstream URL of the LLM metering proxy cannot be used: it does not parse,
    /// is the proxy's own address, or is reached through a proxy loopwatch cannot
    /// speak to.
    #[error("cannot use {url:?} as the LLM proxy's {api} upstream (from {from}): {reason}")]
    ProxyUpstream {
        /// Which upstream: `OpenAI` or `Anthropic`.
        api: &'static str,
        /// Where the URL came from: `--llm-upstream`, `OPENAI_BASE_URL` …
        from: &'static str,
        /// The URL, any credentials in it hidden.
        url: String,
        /// What is wrong with it, and what to do.
        reason: String,
    },
    /// The LLM metering proxy's TLS client could not be set up.
    #[error("cannot set up the LLM metering proxy's TLS client: {0}")]
    ProxyTls(#[source] ErrorSource),
    /// The background runtime (threads for the endpoint and samplers) did not start.
    #[error("cannot start loopwatch's background runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The OpenTelemetry SDK refused to build an exporter.
    #[error("cannot set up the {exporter} exporter: {source}")]
    Exporter {
        /// Which exporter: `Prometheus` or `OTLP`.
        exporter: &'static str,
        /// The SDK's reason.
        #[source]
        source: ErrorSource,
    },
    /// The metrics could not be collected for the final export.
    #[error("cannot collect the metrics: {0}")]
    Collect(#[from] CollectError),
    /// The final JSON document could not be serialised.
    #[error("cannot serialise the final JSON document: {0}")]
    Json(#[source] ErrorSource),
    /// Docker could not be reached or refused a request.
    #[cfg(feature = "docker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "docker")))]
    #[error("Docker is unreachable: {0}; is dockerd running and DOCKER_HOST right?")]
    Docker(#[source] ErrorSource),
    /// What was asked for needs a cargo feature loopwatch was built without.
    #[error("loopwatch was built without the `{feature}` feature; rebuild it with `--features {feature}`")]
    WithoutFeature {
        /// The cargo feature.
        feature: &'static str,
    },
    /// A final export file could not be written.
    #[error("cannot write {path}: {source}; check that the directory exists and is writable, or set LOOPWATCH_OUTPUT_DIR")]
    Write {
        /// The file that was being written.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
}

/// Why a collection produced no usable exposition.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CollectError {
    /// Collecting loopwatch's own metrics panicked.
    #[error("collecting loopwatch's metrics panicked; see the log for the panic message")]
    Panicked,
    /// The collection returned without loopwatch's metrics (the SDK failed internally).
    #[error("the metrics collection came back without loopwatch's own metrics")]
    Incomplete,
    /// The collection did not finish (its task was cancelled or panicked).
    #[error("the collection task did not finish")]
    Aborted,
}

/// Why a sandbox run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// No Docker client could be configured (see `loopwatch_docker_up`).
    #[error("no Docker client could be configured: {0}")]
    NoDocker(#[source] std::sync::Arc<dyn std::error::Error + Send + Sync>),
    /// Docker refused or failed a step.
    #[error("sandbox container {step} failed: {source}")]
    Docker {
        /// The step: create, start, wait.
        step: &'static str,
        /// Docker's answer.
        #[source]
        source: ErrorSource,
    },
    /// Docker's wait for the container ended without an answer.
    #[error("Docker ended the wait for the sandbox container without an exit code")]
    NoExitCode,
    /// The sandbox task on loopwatch's runtime did not finish (the monitor shut down).
    #[error("the sandbox task did not finish: {0}")]
    Task(#[source] ErrorSource),
    /// loopwatch was built without the `docker` feature: there is no sandbox.
    #[error("loopwatch was built without the `docker` feature; rebuild it with `--features docker` to run sandboxes")]
    WithoutDocker,
}
