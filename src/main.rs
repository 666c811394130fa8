//! The `loopwatch` command: operator tools around the loopwatch SDK.

use clap::{Parser, Subcommand};

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
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Metrics => print!("{}", loopwatch::catalog::markdown_table()),
    }
}
