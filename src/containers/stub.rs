//! The containers feature's stand-in when loopwatch is built without the `docker`
//! feature: the same interface, doing nothing. The monitor starts no container work
//! (its `containers` setting is off), a sample reads Docker as down, nothing is ever
//! removed, and the sandbox launcher and `loopwatch cleanup`'s container sweep say
//! that loopwatch was built without Docker.

mod common;
mod spec;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use common::ContainerSweepReport;
pub(crate) use common::{
    CleanupCounters, ContainerReading, ContainerSample, ContainerShutdownReport, ContainerStat,
    Reports, StatsSource,
};
pub use spec::{SandboxOutput, SandboxSpec};

use crate::error::SandboxError;
use crate::records::RunIdentity;

/// The containers feature of a run, built without Docker.
#[derive(Debug)]
pub(crate) struct Containers {
    identity: RunIdentity,
}

impl Containers {
    /// The stand-in for the run `identity`.
    pub(crate) fn new(
        identity: RunIdentity,
        _runtime: tokio::runtime::Handle,
        _counters: CleanupCounters,
        _source: crate::config::ContainerStats,
    ) -> Self {
        Containers { identity }
    }

    /// The run these containers would belong to.
    pub(crate) fn identity(&self) -> &RunIdentity {
        &self.identity
    }

    /// Starts nothing: there is no Docker to watch.
    pub(crate) fn spawn_tasks(
        self: &Arc<Self>,
        _sample_every: Duration,
        _sweep_every: Duration,
        _cancel: &CancellationToken,
        _reports: Reports,
    ) {
    }

    /// Docker is down, always.
    pub(crate) fn reading_now(&self) -> ContainerReading {
        ContainerReading {
            up: false,
            source: StatsSource::Cgroup,
            sample: None,
            cleanup_failures: 0,
        }
    }

    /// Nothing to remove.
    pub(crate) fn verify_cleaned_up_now(&self) -> ContainerShutdownReport {
        ContainerShutdownReport::default()
    }

    /// Nothing to remove.
    pub(crate) fn remove_run_containers_now(&self) -> usize {
        0
    }

    /// The feature's state: off, and why.
    pub(crate) fn state_json(&self) -> serde_json::Value {
        serde_json::json!({ "enabled": false, "reason": "built without the docker feature" })
    }
}

/// Fails: there is no Docker.
pub(crate) fn run_sandbox(
    _containers: &Containers,
    _spec: &SandboxSpec,
) -> Result<SandboxOutput, SandboxError> {
    Err(SandboxError::WithoutDocker)
}

/// Fails: there is no Docker.
pub(crate) async fn run_sandbox_async(
    _containers: Arc<Containers>,
    _spec: SandboxSpec,
) -> Result<SandboxOutput, SandboxError> {
    Err(SandboxError::WithoutDocker)
}

/// Fails: loopwatch was built without the `docker` feature.
pub fn cleanup_orphans(_dry_run: bool) -> Result<ContainerSweepReport, crate::Error> {
    Err(crate::Error::WithoutFeature { feature: "docker" })
}
