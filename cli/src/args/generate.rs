//! `loopwatch rules` and `loopwatch dashboard`: the generators' common flags.

use std::path::PathBuf;

use clap::Args;

/// Where `loopwatch rules` and `loopwatch dashboard` write, and with which
/// thresholds.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Repository root to write under.
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
    /// Thresholds file (loopwatch.toml), as the monitor reads it; default: the
    /// requirements' numbers.
    #[arg(long, env = "LOOPWATCH_CONFIG")]
    pub config: Option<PathBuf>,
}

impl GenerateArgs {
    /// The thresholds to generate with: the config file's, or the defaults.
    pub fn thresholds(&self) -> Result<loopwatch::Thresholds, loopwatch::Error> {
        super::thresholds(self.config.as_deref())
    }
}
