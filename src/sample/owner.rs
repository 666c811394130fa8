//! Whether the process that owns something (a container, a registration, a worker
//! process) still runs: its pid, checked against the start time recorded with it so
//! that a reused pid is not mistaken for the owner.

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// Seconds of disagreement tolerated between a recorded and a measured process start
/// time (both come from the kernel's boot-relative tick count, rounded to seconds).
const START_TIME_TOLERANCE: u64 = 2;

/// Looks processes up to decide whether an owner is alive.
pub(crate) trait ProcessTable {
    /// Start time (seconds since the epoch) of the process with this pid, if one runs.
    fn start_time(&mut self, pid: u32) -> Option<u64>;
}

/// The live process table, through sysinfo (one process refreshed per look-up).
pub(crate) struct LiveProcesses(System);

impl LiveProcesses {
    pub(crate) fn new() -> Option<Self> {
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
        self.0.process(pid).map(|p| p.start_time())
    }
}

/// Whether the process `pid` still runs with the recorded start time.
pub(crate) fn owner_alive(processes: &mut dyn ProcessTable, pid: u32, started: u64) -> bool {
    processes
        .start_time(pid)
        .is_some_and(|actual| actual.abs_diff(started) <= START_TIME_TOLERANCE)
}
