//! What the command's integration tests share: the library's test framework
//! (`tests/support`: HTTP on loopback, the exposition parser, Prometheus and
//! Alertmanager), a `loopwatch run` of a command ([`Supervised`]), the test virtual
//! environment's Python and a process's resident memory.
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
