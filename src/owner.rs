//! The owner of a run: the process (host, pid, start time) whose death makes the run's
//! containers, worker processes and registration files orphans. One type with every
//! encoding the run leaves behind, so they cannot drift apart:
//!
//! | where | encoding |
//! |---|---|
//! | worker processes' environment (`LOOPWATCH_OWNER`) | `<host>:<pid>:<start time>` |
//! | container labels | `loopwatch.owner.host`, `.pid`, `.start_time` |
//! | file_sd registration files | `loopwatch-<pid>-<start time>-<port>.json` |
//! | `loopwatch run`'s socket directory | `loopwatch-<pid>-<start time>` |
//!
//! The start time (seconds since the Unix epoch) makes a reused pid a different owner.
//! Whether an owner is alive is decided by [`Owner::is_alive`] against a
//! [`ProcessTable`], so the decision is testable without real processes.

use std::collections::HashMap;

use serde::Serialize;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// Seconds of disagreement tolerated between a recorded and a measured process start
/// time (both come from the kernel's boot-relative tick count, rounded to seconds).
const START_TIME_TOLERANCE: u64 = 2;

/// Label marking a container as started through (or labelled by) loopwatch.
pub const LABEL_MANAGED: &str = "loopwatch.managed";
/// Label carrying the run id of the loop that owns the container.
pub const LABEL_RUN_ID: &str = "loopwatch.run_id";
/// Label carrying the owner's host name.
pub const LABEL_OWNER_HOST: &str = "loopwatch.owner.host";
/// Label carrying the owner's process id.
pub const LABEL_OWNER_PID: &str = "loopwatch.owner.pid";
/// Label carrying the owner's process start time, seconds since the Unix epoch.
pub const LABEL_OWNER_START_TIME: &str = "loopwatch.owner.start_time";

/// Prefix of registration files and socket directories named after their owner.
const NAME_PREFIX: &str = "loopwatch-";

/// The process that owns a run.
///
/// ```
/// let owner = loopwatch::cleanup::Owner::new("box-1", 4242, 1_700_000_000);
/// assert_eq!(owner.env_value(), "box-1:4242:1700000000");
/// assert_eq!(loopwatch::cleanup::Owner::from_env_value("box-1:4242:1700000000"), Some(owner.clone()));
/// assert_eq!(owner.file_stem(), "loopwatch-4242-1700000000");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub struct Owner {
    /// Host name of the machine the owner runs on.
    #[serde(rename = "hostname")]
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// Its start time, in seconds since the Unix epoch.
    #[serde(rename = "process_start_time")]
    pub start_time: u64,
}

impl Owner {
    /// An owner from its three parts.
    pub fn new(host: impl Into<String>, pid: u32, start_time: u64) -> Self {
        Owner {
            host: host.into(),
            pid,
            start_time,
        }
    }

    /// The current process, on this host.
    pub fn of_this_process() -> Self {
        let pid = std::process::id();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Owner::new(host_name(), pid, process_start_time(pid).unwrap_or(now))
    }

    /// The value of `LOOPWATCH_OWNER`: `<host>:<pid>:<start time>`.
    pub fn env_value(&self) -> String {
        format!("{}:{}:{}", self.host, self.pid, self.start_time)
    }

    /// Parses a `LOOPWATCH_OWNER` value; the host may itself hold colons.
    pub fn from_env_value(value: &str) -> Option<Owner> {
        let (rest, start) = value.rsplit_once(':')?;
        let (host, pid) = rest.rsplit_once(':')?;
        Some(Owner::new(host, pid.parse().ok()?, start.parse().ok()?))
    }

    /// The container labels naming this owner (without the run's own labels).
    pub fn labels(&self) -> [(&'static str, String); 3] {
        [
            (LABEL_OWNER_HOST, self.host.clone()),
            (LABEL_OWNER_PID, self.pid.to_string()),
            (LABEL_OWNER_START_TIME, self.start_time.to_string()),
        ]
    }

    /// The owner named by a container's labels, if all three are there and readable.
    pub fn from_labels(labels: &HashMap<String, String>) -> Option<Owner> {
        Some(Owner::new(
            labels.get(LABEL_OWNER_HOST)?.as_str(),
            labels.get(LABEL_OWNER_PID)?.parse().ok()?,
            labels.get(LABEL_OWNER_START_TIME)?.parse().ok()?,
        ))
    }

    /// The name of files and directories this owner keeps on its own host
    /// (registration files add `-<port>.json`): `loopwatch-<pid>-<start time>`. Short, as Unix
    /// socket paths must be.
    pub fn file_stem(&self) -> String {
        format!("{NAME_PREFIX}{}-{}", self.pid, self.start_time)
    }

    /// The pid and start time a [`file_stem`](Self::file_stem) names, on this host; a
    /// further `-<n>` (a registration of one of several monitors of the process) is
    /// allowed.
    pub fn from_file_stem(stem: &str) -> Option<Owner> {
        let (pid, rest) = stem.strip_prefix(NAME_PREFIX)?.split_once('-')?;
        let start = rest.split_once('-').map_or(rest, |(start, _)| start);
        Some(Owner::new(
            host_name(),
            pid.parse().ok()?,
            start.parse().ok()?,
        ))
    }

    /// Whether this owner runs on `hostname`.
    pub(crate) fn is_on(&self, hostname: &str) -> bool {
        self.host == hostname
    }

    /// Whether the owner still runs: its pid is alive with the recorded start time.
    /// Only meaningful for an owner on this host.
    pub fn is_alive(&self, processes: &mut dyn ProcessTable) -> bool {
        processes
            .start_time(self.pid)
            .is_some_and(|actual| actual.abs_diff(self.start_time) <= START_TIME_TOLERANCE)
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on {} (started {})",
            self.pid, self.host, self.start_time
        )
    }
}

/// Looks processes up to decide whether an owner is alive.
pub trait ProcessTable {
    /// Start time (seconds since the epoch) of the process with this pid, if one runs.
    fn start_time(&mut self, pid: u32) -> Option<u64>;
}

/// The live process table, through sysinfo (one process refreshed per look-up).
#[derive(Debug)]
pub struct LiveProcesses(System);

impl LiveProcesses {
    /// The process table of this host, or `None` where it cannot be read.
    pub fn new() -> Option<Self> {
        System::new().ok().map(LiveProcesses)
    }
}

impl ProcessTable for LiveProcesses {
    fn start_time(&mut self, pid: u32) -> Option<u64> {
        let pid = Pid::from_u32(pid);
        self.0.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            true,
            ProcessRefreshKind::nothing(),
        );
        // A zombie has exited; only its parent has not read its status yet.
        self.0
            .process(pid)
            .filter(|p| p.status() != sysinfo::ProcessStatus::Zombie)
            .map(|p| p.start_time())
    }
}

/// Start time of a process in seconds since the Unix epoch, if it runs.
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    LiveProcesses::new()?.start_time(pid)
}

/// This machine's host name, or `unknown-host`.
pub(crate) fn host_name() -> String {
    System::host_name().unwrap_or_else(|_| "unknown-host".into())
}

/// What one sweep for orphans (containers or processes) found and did. `T` is what was
/// swept: a container id, or a [`MarkedProcess`](crate::cleanup::MarkedProcess).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SweepReport<T> {
    /// Orphans found.
    pub orphans: Vec<T>,
    /// Orphans cleaned up (or found gone meanwhile).
    pub cleaned: Vec<T>,
    /// Orphans that could not be cleaned up, with the reason.
    pub failed: Vec<(T, String)>,
    /// Items of loopwatch left alone: their owner is alive, remote, or unreadable.
    pub left_alone: usize,
    /// True when nothing was cleaned up on purpose (`--dry-run`).
    pub dry_run: bool,
}

impl<T> Default for SweepReport<T> {
    fn default() -> Self {
        SweepReport {
            orphans: Vec::new(),
            cleaned: Vec::new(),
            failed: Vec::new(),
            left_alone: 0,
            dry_run: false,
        }
    }
}

impl<T> SweepReport<T> {
    /// An empty report, `dry_run` or not.
    pub(crate) fn new(dry_run: bool) -> Self {
        SweepReport {
            dry_run,
            ..SweepReport::default()
        }
    }

    /// Orphans still present after the sweep.
    pub fn remaining(&self) -> usize {
        if self.dry_run {
            self.orphans.len()
        } else {
            self.failed.len()
        }
    }
}

/// A process table with fixed start times, for tests of owner checks.
#[cfg(test)]
pub(crate) struct FixedTable(pub(crate) Vec<(u32, u64)>);

#[cfg(test)]
impl ProcessTable for FixedTable {
    fn start_time(&mut self, pid: u32) -> Option<u64> {
        self.0.iter().find(|(p, _)| *p == pid).map(|(_, s)| *s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_encoding_reads_back() {
        let owner = Owner::new("my:host", 77, 1_700_000_000);
        assert_eq!(
            Owner::from_env_value(&owner.env_value()),
            Some(owner.clone())
        );
        assert_eq!(Owner::from_env_value("host:notapid:1"), None);
        let labels: HashMap<String, String> = owner
            .labels()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(Owner::from_labels(&labels), Some(owner.clone()));
        let here = Owner::new(host_name(), 77, 1_700_000_000);
        assert_eq!(Owner::from_file_stem(&here.file_stem()), Some(here));
        assert_eq!(Owner::from_file_stem("loopwatch-x-1"), None);
        assert_eq!(Owner::from_file_stem("other-1-2"), None);
    }

    #[test]
    fn a_reused_pid_is_another_owner() {
        let mut table = FixedTable(vec![(10, 1000)]);
        assert!(Owner::new("h", 10, 1000).is_alive(&mut table));
        assert!(
            Owner::new("h", 10, 1002).is_alive(&mut table),
            "within tolerance"
        );
        assert!(!Owner::new("h", 10, 9999).is_alive(&mut table));
        assert!(!Owner::new("h", 11, 1000).is_alive(&mut table));
    }

    #[test]
    fn this_process_is_alive() {
        let me = Owner::of_this_process();
        assert!(me.is_alive(&mut LiveProcesses::new().unwrap()));
    }
}
