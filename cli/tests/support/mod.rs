//! What the command's integration tests share: the library's test framework
//! (`tests/support`: HTTP on loopback, the exposition parser, Prometheus and
//! Alertmanager), a `loopwatch run` of a command ([`Supervised`]), the test virtual
//! environment's Python, a process's resident memory and the samples of a final JSON.
#![allow(dead_code, unreachable_pub)]

#[path = "../../../tests/support/mod.rs"]
mod common;
mod supervised;

use std::path::PathBuf;

pub use common::*;
#[allow(unused_imports)] // not every test target starts `loopwatch run`
pub use supervised::{Launch, Supervised, NETWORK_VARIABLES};

/// The test virtual environment's Python, with loopwatch, deap, optuna, openai and
/// anthropic installed (`scripts/test` makes it).
pub fn python() -> PathBuf {
    PathBuf::from(std::env::var_os("LOOPWATCH_TEST_PYTHON").expect(
        "LOOPWATCH_TEST_PYTHON names the test virtual environment's python; scripts/test makes it",
    ))
}

/// Resident memory of a process now, from `/proc/<pid>/status`, in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no VmRSS for {pid}:\n{status}"))
        * 1024
}

/// The samples of a metric family in a run's final JSON whose labels include `labels`.
pub fn final_samples<'a>(
    json: &'a serde_json::Value,
    name: &str,
    labels: &[(&str, &str)],
) -> Vec<&'a serde_json::Value> {
    json["metrics"][name]["samples"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|s| labels.iter().all(|(k, v)| s["labels"][*k] == *v))
                .collect()
        })
        .unwrap_or_default()
}

/// The values of those samples, summed (0 when there is none).
pub fn final_sum(json: &serde_json::Value, name: &str, labels: &[(&str, &str)]) -> f64 {
    final_samples(json, name, labels)
        .iter()
        .filter_map(|s| s["value"].as_f64())
        .sum()
}
