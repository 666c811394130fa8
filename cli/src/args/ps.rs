//! `loopwatch ps`.

use std::path::PathBuf;

use clap::Args;

/// The flags of `loopwatch ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// The registration directory: the loops' --register.
    #[arg(
        long,
        env = "LOOPWATCH_REGISTER_DIR",
        default_value = "prometheus/targets"
    )]
    pub register: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}
