//! The command line of `loopwatch`: one file per command, each command's flags grouped
//! under help headings.
//!
//! A command's arguments parse into its `*Args` type, which converts itself into what
//! the command runs on ([`RunArgs::into_options`] for `loopwatch run`); the binary only
//! dispatches. `--help` of every command is held by snapshot tests
//! (`cli/tests/help.rs`, files under `cli/tests/snapshots/`).

mod cleanup;
mod compare;
mod fleet;
mod generate;
mod ps;
mod run;

use std::path::Path;

use clap::{Parser, Subcommand};

pub use cleanup::CleanupArgs;
pub use compare::CompareArgs;
pub use fleet::FleetArgs;
pub use generate::GenerateArgs;
pub use ps::PsArgs;
pub use run::{LlmProxyFlags, MonitorFlags, OutputFlags, RestartFlags, RunArgs, SupervisionFlags};

/// Operator tools for loops watched by loopwatch.
#[derive(Debug, Parser)]
#[command(name = "loopwatch", version, about)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands of `loopwatch`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a loop in any language under loopwatch: its reports arrive on a Unix socket
    /// (LOOPWATCH_SOCKET), its process tree is sampled, /metrics and the dashboard are
    /// served, alerts raised, and the final files written when it exits. Exits with
    /// the loop's status (128 + signal when a signal ended it), or 3 when an LLM
    /// budget under --llm-budget-action stop ended the run.
    Run(Box<RunArgs>),
    /// List the loops registered on this host: pid, experiment, loop, run id,
    /// iteration, iterations per second, success rate, alerts firing, uptime and
    /// endpoint. Exits 0 when every registered loop answered, 1 when a registration's
    /// owner is gone or a loop did not answer (they are listed), 2 when the directory
    /// cannot be read.
    Ps(PsArgs),
    /// Serve one page listing this host's registered loops, their state and links to
    /// each loop's own page (and /api/v1/loops as JSON); no Grafana needed.
    Fleet(FleetArgs),
    /// Compare finished runs: one self-contained HTML page (it opens offline) that
    /// overlays each run's best Sharpe so far against iterations, wall time and LLM
    /// spend, labelled by experiment, loop and run id, above a table of their final
    /// figures. Exits 2 when a run cannot be read (the message names the file), 1 when
    /// the page cannot be written.
    Compare(CompareArgs),
    /// Print the table of every exported metric, then the names of the LLM calls'
    /// metrics under the default and the newest OpenTelemetry GenAI conventions
    /// (Markdown, as in docs/metrics.md).
    Metrics,
    /// Print every setting of a monitor: the environment variables and the
    /// loopwatch.toml keys, with their defaults (Markdown, as in docs/configuration.md).
    Config,
    /// Regenerate the Prometheus rules and their promtool tests (prometheus/).
    Rules(GenerateArgs),
    /// Regenerate the Grafana dashboards (grafana/dashboards/loopwatch.json and
    /// loopwatch-fleet.json).
    Dashboard(GenerateArgs),
    /// Remove orphaned containers and terminate orphaned processes of dead loops on
    /// this host (after a crash, say). Those of live loops, of other hosts, and
    /// unmarked ones are never touched.
    Cleanup(CleanupArgs),
}

/// The thresholds of a loopwatch.toml, or the defaults without one.
pub fn thresholds(config: Option<&Path>) -> Result<loopwatch::Thresholds, loopwatch::Error> {
    match config {
        None => Ok(loopwatch::Thresholds::default()),
        Some(path) => loopwatch::Thresholds::from_file(path),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
