//! The `loopwatch` command: operator tools around the loopwatch SDK.
#![warn(clippy::too_many_lines)]

use std::process::ExitCode;

use clap::Parser;
use loopwatch_cli::args::{Cli, Command, CompareArgs, FleetArgs, PsArgs};
use loopwatch_cli::{compare, fleet, generate, supervise};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Metrics => {
            print!(
                "{}\n{}",
                loopwatch::catalog::markdown_table(),
                loopwatch::catalog::genai_mapping_table()
            );
            ExitCode::SUCCESS
        }
        Command::Config => {
            print!(
                "{}\n{}",
                loopwatch::EnvVariable::markdown_table(),
                loopwatch::Thresholds::markdown_table()
            );
            ExitCode::SUCCESS
        }
        Command::Rules(rules) => match rules.thresholds() {
            Ok(t) => written(
                generate::write_rules(&rules.root, &t),
                &[generate::RULES_FILE, generate::RULES_TEST_FILE],
            ),
            Err(err) => invalid(&err),
        },
        Command::Dashboard(dashboard) => match dashboard.thresholds() {
            Ok(t) => written(
                generate::write_dashboard(&dashboard.root, &t),
                &[generate::DASHBOARD_FILE, generate::FLEET_DASHBOARD_FILE],
            ),
            Err(err) => invalid(&err),
        },
        Command::Cleanup(cleanup_args) => cleanup(cleanup_args.dry_run),
        Command::Ps(PsArgs { register, json }) => ps(&register, json),
        Command::Compare(CompareArgs { runs, output, json }) => {
            ExitCode::from(compare::run(&runs, json, output.as_deref()))
        }
        Command::Fleet(FleetArgs { register, listen }) => match fleet::serve(register, listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: cannot serve the fleet page on {listen}: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run(run) => match run.into_options() {
            Ok(options) => ExitCode::from(supervise::run(options)),
            Err(err) => invalid(&err),
        },
    }
}

/// A setting that cannot be used (a config file, a value out of range): said, and exit
/// code 2.
fn invalid(err: &loopwatch::Error) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(2)
}

fn ps(register: &std::path::Path, json: bool) -> ExitCode {
    let entries = match fleet::list(register) {
        Ok(entries) => entries,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", register.display());
            return ExitCode::from(2);
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&entries).unwrap_or_default()
        );
    } else {
        print!("{}", fleet::table(&entries));
    }
    if entries.iter().any(|e| e.problem.is_some()) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn cleanup(dry_run: bool) -> ExitCode {
    let processes = loopwatch::cleanup::orphaned_processes(dry_run);
    print_sweep(
        &processes,
        ("would terminate process", "terminated process"),
        "orphaned processes",
        "live or remote owners",
    );
    let containers = match loopwatch::cleanup::orphaned_containers(dry_run) {
        Ok(report) => report,
        Err(err) => {
            eprintln!("error: containers not swept: {err}");
            return ExitCode::from(2);
        }
    };
    print_sweep(
        &containers,
        ("would remove container", "removed container"),
        "orphaned containers",
        "live, remote or unverifiable owners",
    );
    if containers.failed.is_empty() && processes.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Prints what one sweep did with each orphan, then its totals.
fn print_sweep<T: PartialEq + std::fmt::Display>(
    report: &loopwatch::cleanup::SweepReport<T>,
    (would, did): (&str, &str),
    what: &str,
    alone: &str,
) {
    for orphan in &report.orphans {
        let verdict = match (report.dry_run, report.cleaned.contains(orphan)) {
            (true, _) => would,
            (false, true) => did,
            (false, false) => "FAILED",
        };
        println!("{verdict} {orphan}");
    }
    println!(
        "{} {what}, {} cleaned up, {} failed, {} left alone ({alone})",
        report.orphans.len(),
        report.cleaned.len(),
        report.failed.len(),
        report.left_alone
    );
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
