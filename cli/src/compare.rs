//! `loopwatch compare`: finished runs side by side, from their `metrics_final.json`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use loopwatch::compare::Comparison;

/// The page's file name when `--output` is not given.
pub const DEFAULT_OUTPUT: &str = "compare.html";

/// Reads the runs, then prints the table of final figures as JSON (`json`) and writes
/// the page to `output` (`None`: [`DEFAULT_OUTPUT`] unless `json`). Returns the exit
/// status: 0, 2 for a run that cannot be read (the message names the file), 1 when
/// the page cannot be written.
pub fn run(runs: &[PathBuf], json: bool, output: Option<&Path>) -> u8 {
    let comparison = match Comparison::read(runs) {
        Ok(comparison) => comparison,
        Err(err) => {
            eprintln!("error: {err}");
            return 2;
        }
    };
    if json {
        match serde_json::to_string_pretty(&comparison.table()) {
            Ok(table) => {
                let mut stdout = std::io::stdout().lock();
                if writeln!(stdout, "{table}").is_err() {
                    return 1;
                }
            }
            Err(err) => {
                eprintln!("error: cannot encode the table: {err}");
                return 1;
            }
        }
    }
    let output = match output {
        Some(path) => path,
        None if json => return 0,
        None => Path::new(DEFAULT_OUTPUT),
    };
    if let Err(err) = std::fs::write(output, comparison.html()) {
        eprintln!("error: cannot write {}: {err}", output.display());
        return 1;
    }
    let shown = std::path::absolute(output).unwrap_or_else(|_| output.to_path_buf());
    let line = format!(
        "wrote {} ({} runs)",
        shown.display(),
        comparison.runs().len()
    );
    // With --json, stdout holds the JSON alone.
    if json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
    0
}
