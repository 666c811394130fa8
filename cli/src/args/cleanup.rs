//! `loopwatch cleanup`.

use clap::Args;

/// The flags of `loopwatch cleanup`.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Only list the orphans; remove and terminate nothing.
    #[arg(long)]
    pub dry_run: bool,
}
