//! The error type of loopwatch's fallible boundaries: start-up and final export.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can go wrong when starting a monitor or writing its final export.
///
/// Recording observations never fails: bad values are rejected, counted in
/// `loopwatch_rejected_observations_total` and logged instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting (environment variable or builder value) could not be parsed.
    #[error("invalid value {value:?} for {variable}: {reason}")]
    InvalidSetting {
        /// Environment variable (or builder method) the value came from.
        variable: &'static str,
        /// The offending value.
        value: String,
        /// What was expected instead.
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
    /// The background runtime (threads for the endpoint and samplers) did not start.
    #[error("cannot start loopwatch's background runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The OpenTelemetry to Prometheus pipeline could not be assembled.
    #[error("cannot set up the metrics pipeline: {0}")]
    Pipeline(String),
    /// Docker could not be reached or refused a request.
    #[error("Docker is unreachable: {0}; is dockerd running and DOCKER_HOST right?")]
    Docker(String),
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

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
