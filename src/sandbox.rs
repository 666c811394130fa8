//! The sandbox launcher: run a command in a labelled, resource-limited container,
//! collect its exit code and output, and remove it. Built without the `docker`
//! feature, every run fails with [`SandboxError::WithoutDocker`].

use std::sync::Arc;

use crate::containers::Containers;
pub use crate::containers::{SandboxOutput, SandboxSpec};
pub use crate::error::SandboxError;

/// Starts sandbox containers for the loop; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Sandbox {
    pub(crate) containers: Arc<Containers>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Runs the spec to completion, blocking the calling thread (not the monitor).
    pub fn run(&self, spec: &SandboxSpec) -> Result<SandboxOutput, SandboxError> {
        crate::containers::run_sandbox(&self.containers, spec)
    }

    /// Runs the spec to completion from async code.
    pub async fn run_async(&self, spec: &SandboxSpec) -> Result<SandboxOutput, SandboxError> {
        crate::containers::run_sandbox_async(Arc::clone(&self.containers), spec.clone()).await
    }
}
