//! The `--help` of `loopwatch` and of each of its commands, as the binary prints it,
//! against the snapshots in `cli/tests/snapshots/`: a changed flag, help text, heading
//! or default is a reviewed change. After changing the command line on purpose,
//! rewrite the snapshots and read their diff:
//!
//! ```text
//! LOOPWATCH_UPDATE_SNAPSHOTS=1 cargo test -p loopwatch-cli --test help
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;
use loopwatch_cli::args::Cli;

const UPDATE: &str = "LOOPWATCH_UPDATE_SNAPSHOTS";

fn snapshots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots")
}

/// The commands whose help is held: `loopwatch` itself, then each command.
fn commands() -> Vec<Vec<String>> {
    let mut commands = vec![vec![]];
    commands.extend(
        Cli::command()
            .get_subcommands()
            .map(|command| vec![command.get_name().to_string()]),
    );
    commands
}

fn snapshot_file(command: &[String]) -> PathBuf {
    let name = if command.is_empty() {
        "loopwatch".to_string()
    } else {
        format!("loopwatch-{}", command.join("-"))
    };
    snapshots().join(format!("{name}.help"))
}

/// `loopwatch [command] --help`, with no variable of the environment shown in it.
fn help(command: &[String]) -> String {
    let mut run = Command::new(env!("CARGO_BIN_EXE_loopwatch"));
    // A variable named by a flag's `env` would show its value in the help.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LOOPWATCH_") {
            run.env_remove(name);
        }
    }
    let output = run
        .env_remove("CLICOLOR_FORCE")
        .args(command)
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success(), "{command:?}: {output:?}");
    assert!(output.stderr.is_empty(), "{command:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// The first line where two texts differ, both sides shown.
fn first_difference(expected: &str, actual: &str) -> String {
    let mut expected_lines = expected.lines();
    let mut actual_lines = actual.lines();
    for line in 1.. {
        match (expected_lines.next(), actual_lines.next()) {
            (None, None) => break,
            (e, a) if e != a => {
                return format!(
                    "line {line}:\n  snapshot: {}\n  now:      {}",
                    e.unwrap_or("(end)"),
                    a.unwrap_or("(end)")
                )
            }
            _ => {}
        }
    }
    "(only the line ends differ)".into()
}

#[test]
fn every_commands_help_is_its_snapshot() {
    let update = std::env::var_os(UPDATE).is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for command in commands() {
        let file = snapshot_file(&command);
        let actual = help(&command);
        if update {
            std::fs::create_dir_all(snapshots()).unwrap();
            std::fs::write(&file, &actual).unwrap();
            continue;
        }
        match std::fs::read_to_string(&file) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => stale.push(format!(
                "{}: {}",
                file.display(),
                first_difference(&expected, &actual)
            )),
            Err(e) => stale.push(format!("{}: {e}", file.display())),
        }
    }
    assert!(
        stale.is_empty(),
        "the help differs from its snapshot; if the change is meant, run \
         `{UPDATE}=1 cargo test -p loopwatch-cli --test help` and review the diff:\n{}",
        stale.join("\n")
    );
}

#[test]
fn every_snapshot_belongs_to_a_command() {
    let expected: Vec<PathBuf> = commands().iter().map(|c| snapshot_file(c)).collect();
    let orphans: Vec<PathBuf> = std::fs::read_dir(snapshots())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "help"))
        .filter(|path| !expected.contains(path))
        .collect();
    assert!(
        orphans.is_empty(),
        "snapshots of commands that no longer exist (remove them): {orphans:?}"
    );
}

/// A flag's `env` is part of its contract: a set variable shows in the help, so the
/// snapshots are taken without them.
#[test]
fn a_flags_variable_would_show_in_the_help() {
    let output = Command::new(env!("CARGO_BIN_EXE_loopwatch"))
        .env("LOOPWATCH_REGISTER_DIR", "/somewhere/targets")
        .args(["ps", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("[env: LOOPWATCH_REGISTER_DIR=/somewhere/targets]"),
        "{text}"
    );
}
