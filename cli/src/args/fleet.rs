//! `loopwatch fleet`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

/// The flags of `loopwatch fleet`.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// The registration directory: the loops' --register.
    #[arg(
        long,
        env = "LOOPWATCH_REGISTER_DIR",
        default_value = "prometheus/targets"
    )]
    pub register: PathBuf,
    /// Address of the page.
    #[arg(long, default_value = "127.0.0.1:8100")]
    pub listen: SocketAddr,
}
