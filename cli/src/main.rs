//! The `loopwatch` command: operator tools around the loopwatch SDK.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use loopwatch_cli::generate;

/// Operator tools for loops watched by loopwatch.
#[derive(Debug, Parser)]
#[command(name = "loopwatch", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the table of every exported metric (Markdown, as in the README).
    Metrics,
    /// Regenerate the Prometheus rules and their promtool tests (prometheus/).
    Rules {
        /// Repository root to write under.
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// Thresholds file (loopwatch.toml), as the monitor reads it; default: the
        /// requirements' numbers.
        #[arg(long, env = "LOOPWATCH_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Regenerate the Grafana dashboard (grafana/dashboards/loopwatch.json).
    Dashboard {
        /// Repository root to write under.
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// Thresholds file (loopwatch.toml), as the monitor reads it; default: the
        /// requirements' numbers.
        #[arg(long, env = "LOOPWATCH_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Remove orphaned containers of dead loops on this host (after a crash, say).
    /// Containers of live loops, of other hosts and unlabelled ones are never touched.
    Cleanup {
        /// Only list the orphans; remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Metrics => {
            print!("{}", loopwatch::catalog::markdown_table());
            ExitCode::SUCCESS
        }
        Command::Rules { root, config } => match thresholds(config) {
            Ok(t) => written(
                generate::write_rules(&root, &t),
                &[generate::RULES_FILE, generate::RULES_TEST_FILE],
            ),
            Err(code) => code,
        },
        Command::Dashboard { root, config } => match thresholds(config) {
            Ok(t) => written(
                generate::write_dashboard(&root, &t),
                &[generate::DASHBOARD_FILE],
            ),
            Err(code) => code,
        },
        Command::Cleanup { dry_run } => cleanup(dry_run),
    }
}

/// The thresholds of a file, or the defaults without one; a bad file is exit code 2.
fn thresholds(config: Option<PathBuf>) -> Result<loopwatch::Thresholds, ExitCode> {
    match config {
        None => Ok(loopwatch::Thresholds::default()),
        Some(path) => loopwatch::Thresholds::from_file(&path).map_err(|err| {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }),
    }
}

fn cleanup(dry_run: bool) -> ExitCode {
    let report = match loopwatch::cleanup_orphans(dry_run) {
        Ok(report) => report,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    for id in &report.orphans {
        let verdict = if dry_run {
            "would remove"
        } else if report.removed.contains(id) {
            "removed"
        } else {
            "FAILED"
        };
        println!("{verdict} {id}");
    }
    println!(
        "{} orphaned, {} removed, {} failed, {} left alone (live, remote or unverifiable owners)",
        report.orphans.len(),
        report.removed.len(),
        report.failed.len(),
        report.left_alone
    );
    if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn written(result: std::io::Result<()>, files: &[&str]) -> ExitCode {
    match result {
        Ok(()) => {
            for file in files {
                println!("wrote {file}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
