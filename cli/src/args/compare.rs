//! `loopwatch compare`.

use std::path::PathBuf;

use clap::Args;

/// The runs and outputs of `loopwatch compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The runs: each a metrics_final.json, or the output directory holding one
    /// (the run's --output-dir, LOOPWATCH_OUTPUT_DIR).
    #[arg(required = true, value_name = "RUN")]
    pub runs: Vec<PathBuf>,
    /// Where to write the page (default compare.html in the current directory;
    /// with --json, a page is written only when this is given).
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Print the table of final figures as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}
