//! Orphaned processes: the worker pools, evaluation subprocesses and daemons a loop
//! started and left running when it ended or died.
//!
//! Every process of a run carries the run's identity in its environment:
//! `LOOPWATCH_RUN_ID` and `LOOPWATCH_OWNER` (`<host>:<pid>:<start time>` of the process
//! that owns the run, as the containers' ownership labels hold it: [`crate::owner`]). `loopwatch run` sets both on its
//! child, and children inherit them (forked workers, double-forked daemons, shells);
//! [`Supervision::identify`](crate::supervise::Supervision::identify) sets them on a
//! `Command`.
//!
//! Processes are found by reading `/proc/<pid>/environ` (readable for one's own
//! processes, and for every process as root), and, for the run of this process, by
//! descent: every process below this one is of its run, whatever its environment
//! (`env -i`, `subprocess(env={})` and sudo scrub it; `loopwatch run` is the subreaper
//! of its loop, so double-forked daemons stay below it). A process is cleaned up
//! (SIGTERM, a grace period, then SIGKILL) when its run is this one and the loop has
//! exited, or when its owner is gone. Never touched: a process neither marked nor
//! below this one, one whose owner is alive or on another host, this process itself;
//! a process that cannot be signalled is counted as a failure once and not retried.
//! Every signal goes to a process whose start time was checked just before it, so a
//! pid reused meanwhile is never signalled.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;

use crate::owner::{host_name, LiveProcesses, Owner, ProcessTable, SweepReport};
use crate::sample::{children, process_ids, process_tree, read_stat};

/// Environment variable carrying the run id to every process of the run.
pub const ENV_RUN_ID: &str = "LOOPWATCH_RUN_ID";
/// Environment variable carrying the owner identity, `<host>:<pid>:<start time>`.
pub const ENV_OWNER: &str = "LOOPWATCH_OWNER";

/// How long an orphan of a dead run has between SIGTERM and SIGKILL (the processes of
/// this run get the grace the caller gives).
pub(crate) const TERMINATE_GRACE: Duration = Duration::from_secs(3);

/// A process told apart from any later one that reuses its pid: its pid and the start
/// time (clock ticks after boot) the kernel gave it. A pid read a while ago is checked
/// with [`ProcessId::is_running`] right before it is signalled.
///
/// ```
/// let me = loopwatch::cleanup::ProcessId::running(std::process::id()).unwrap();
/// assert!(me.is_running());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ProcessId {
    /// Its process id.
    pub pid: u32,
    /// Its start time after boot, in clock ticks (`/proc/<pid>/stat`).
    pub start_ticks: u64,
}

impl ProcessId {
    /// The process running under `pid` now; `None` when there is none, or when it has
    /// exited and waits for its parent to reap it (a zombie).
    pub fn running(pid: u32) -> Option<ProcessId> {
        let stat = read_stat(pid)?;
        (!stat.zombie).then_some(ProcessId {
            pid,
            start_ticks: stat.start_ticks,
        })
    }

    /// Whether this very process still runs: its pid is alive, not a zombie, and not
    /// taken by another process since.
    pub fn is_running(&self) -> bool {
        read_stat(self.pid).is_some_and(|stat| !stat.zombie && stat.start_ticks == self.start_ticks)
    }
}

/// Every process below `root` that runs now (children, grandchildren …; `root`
/// excluded), each with its start time. Below a subreaper (`loopwatch run`) this
/// includes the orphans re-parented to it.
///
/// ```
/// let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
/// let below = loopwatch::cleanup::descendants(std::process::id());
/// assert!(below.iter().any(|p| p.pid == child.id()));
/// # child.kill().unwrap();
/// # child.wait().unwrap();
/// ```
pub fn descendants(root: u32) -> Vec<ProcessId> {
    process_tree(root)
        .into_iter()
        .skip(1)
        .filter_map(ProcessId::running)
        .collect()
}

/// The children of this process that have exited and wait to be reaped (zombies), for
/// a subreaper to reap by pid, each on its own, leaving alone the children some other
/// part of the program waits for.
pub fn zombie_children() -> Vec<u32> {
    let me = std::process::id();
    children(me)
        .into_iter()
        .filter(|pid| read_stat(*pid).is_some_and(|stat| stat.zombie && stat.parent == me))
        .collect()
}

/// A process carrying a run's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MarkedProcess {
    /// Its process id.
    pub pid: u32,
    /// Its command line (arguments joined by spaces, at most 200 characters).
    pub command: String,
    /// The run it belongs to (`LOOPWATCH_RUN_ID`).
    pub run_id: String,
    #[serde(skip)]
    owner: Option<Owner>,
    #[serde(skip)]
    start_ticks: u64,
    /// Below this process: of this process's run, whatever its environment says.
    #[serde(skip)]
    below: bool,
}

/// What one process sweep found and did.
pub type ProcessSweepReport = SweepReport<MarkedProcess>;

impl std::fmt::Display for MarkedProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, run {})", self.pid, self.command, self.run_id)
    }
}

/// The `KEY=value` entries of an environment block.
fn environment_value<'a>(environ: &'a [u8], key: &str) -> Option<&'a str> {
    environ.split(|b| *b == 0).find_map(|entry| {
        let rest = entry.strip_prefix(key.as_bytes())?.strip_prefix(b"=")?;
        std::str::from_utf8(rest).ok()
    })
}

fn command_of(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut command: String = raw
        .split(|b| *b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    if command.chars().count() > 200 {
        command = command.chars().take(200).collect();
    }
    command
}

/// Every live process carrying a run identity, this process excluded.
pub(crate) fn marked_processes() -> Vec<MarkedProcess> {
    let me = std::process::id();
    let mut found = Vec::new();
    for pid in process_ids() {
        if pid == me {
            continue;
        }
        // Other users' processes are unreadable without privileges: not ours to judge.
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let Some(run_id) = environment_value(&environ, ENV_RUN_ID) else {
            continue;
        };
        let Some(stat) = read_stat(pid) else {
            continue;
        };
        if stat.zombie {
            continue; // already dead, waiting for its parent to reap it
        }
        found.push(MarkedProcess {
            pid,
            command: command_of(pid),
            run_id: run_id.to_string(),
            owner: environment_value(&environ, ENV_OWNER).and_then(Owner::from_env_value),
            start_ticks: stat.start_ticks,
            below: false,
        });
    }
    found
}

/// Whose a marked process is, for cleanup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// Of the given run: cleaned up once that run's loop has exited.
    OfRun,
    /// Owner gone: an orphan.
    Orphan,
    /// Owner alive, on another host, or not recorded: left alone.
    LeaveAlone,
}

/// The processes of this run: the marked ones found by [`marked_processes`], and
/// every process below this one, marked or not (counted as of `run`).
fn processes_of_run(mut marked: Vec<MarkedProcess>, run: &str) -> Vec<MarkedProcess> {
    for below in descendants(std::process::id()) {
        match marked.iter_mut().find(|p| p.pid == below.pid) {
            Some(found) => found.below = true,
            None => marked.push(MarkedProcess {
                pid: below.pid,
                command: command_of(below.pid),
                run_id: run.to_string(),
                owner: None,
                start_ticks: below.start_ticks,
                below: true,
            }),
        }
    }
    marked
}

/// Decides about one marked process. `run` is the run being cleaned up after its loop
/// exited, if any: the processes below this one are of it too.
pub(crate) fn disposition(
    process: &MarkedProcess,
    run: Option<&str>,
    hostname: &str,
    table: &mut dyn ProcessTable,
) -> Disposition {
    if run.is_some() && process.below || run == Some(process.run_id.as_str()) {
        return Disposition::OfRun;
    }
    match &process.owner {
        Some(owner) if owner.is_on(hostname) => {
            if owner.is_alive(table) {
                Disposition::LeaveAlone
            } else {
                Disposition::Orphan
            }
        }
        _ => Disposition::LeaveAlone,
    }
}

/// Whether `process` (pid plus start) is still alive and not a zombie.
fn still_alive(process: &MarkedProcess) -> bool {
    process.id().is_running()
}

impl MarkedProcess {
    fn id(&self) -> ProcessId {
        ProcessId {
            pid: self.pid,
            start_ticks: self.start_ticks,
        }
    }
}

/// Terminates processes: SIGTERM (and SIGCONT) to all, up to `grace` for them to exit,
/// then SIGKILL to the rest. Returns the pids that ended and the failures.
pub(crate) fn terminate(
    processes: &[MarkedProcess],
    grace: Duration,
) -> (Vec<u32>, Vec<(u32, String)>) {
    let mut failed = Vec::new();
    let mut signalled = Vec::new();
    for process in processes {
        if !still_alive(process) {
            continue;
        }
        match kill(Pid::from_raw(process.pid as i32), Signal::SIGTERM) {
            Ok(()) => signalled.push(process),
            Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => failed.push((process.pid, e.desc().to_string())),
        }
    }
    // A stopped process acts on its SIGTERM only once continued.
    for process in &signalled {
        if still_alive(process) {
            let _ = kill(Pid::from_raw(process.pid as i32), Signal::SIGCONT);
        }
    }
    let deadline = Instant::now() + grace;
    while signalled.iter().any(|p| still_alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stubborn: Vec<u32> = signalled
        .iter()
        .filter(|p| still_alive(p))
        .map(|p| p.pid)
        .collect();
    if !stubborn.is_empty() {
        tracing::warn!(
            pids = ?stubborn,
            grace = %humantime::format_duration(grace),
            "processes still running a grace period after their SIGTERM; killing them"
        );
    }
    let mut killed = Vec::new();
    for process in signalled.iter().filter(|p| still_alive(p)) {
        match kill(Pid::from_raw(process.pid as i32), Signal::SIGKILL) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => killed.push(*process),
            Err(e) => failed.push((process.pid, e.desc().to_string())),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while killed.iter().any(|p| still_alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for process in killed.iter().filter(|p| still_alive(p)) {
        failed.push((process.pid, "still alive after SIGKILL".to_string()));
    }
    let failed_pids: HashSet<u32> = failed.iter().map(|(pid, _)| *pid).collect();
    let cleaned = processes
        .iter()
        .map(|p| p.pid)
        .filter(|pid| !failed_pids.contains(pid))
        .collect();
    (cleaned, failed)
}

/// Finds the processes to clean up (of `run` once its loop has exited, those below this
/// process included, and those whose owner is gone) and, unless `dry_run`, terminates
/// them, giving each `grace` between SIGTERM and SIGKILL. `skip` holds processes given
/// up on before (pid, start ticks): they are not signalled again.
pub(crate) fn sweep_processes(
    run: Option<&str>,
    dry_run: bool,
    skip: &HashSet<(u32, u64)>,
    grace: Duration,
) -> ProcessSweepReport {
    let hostname = host_name();
    let mut report = ProcessSweepReport::new(dry_run);
    let Some(mut table) = LiveProcesses::new() else {
        return report;
    };
    let found = match run {
        Some(run) => processes_of_run(marked_processes(), run),
        None => marked_processes(),
    };
    for process in found {
        if skip.contains(&(process.pid, process.start_ticks)) {
            continue;
        }
        match disposition(&process, run, &hostname, &mut table) {
            Disposition::OfRun | Disposition::Orphan => report.orphans.push(process),
            Disposition::LeaveAlone => report.left_alone += 1,
        }
    }
    if dry_run || report.orphans.is_empty() {
        return report;
    }
    let (cleaned, failed) = terminate(&report.orphans, grace);
    let find = |pid: u32| report.orphans.iter().find(|p| p.pid == pid).cloned();
    let cleaned: Vec<MarkedProcess> = cleaned.into_iter().filter_map(find).collect();
    let failed: Vec<(MarkedProcess, String)> = failed
        .into_iter()
        .filter_map(|(pid, reason)| Some((find(pid)?, reason)))
        .collect();
    for process in &cleaned {
        tracing::info!(
            pid = process.pid,
            "Cleaned up orphaned process {}",
            process.pid
        );
    }
    for (process, reason) in &failed {
        let pid = process.pid;
        tracing::error!(pid, error = %reason, "failed to clean up orphaned process {pid}");
    }
    report.cleaned = cleaned;
    report.failed = failed;
    report
}

/// The identity of the processes given up on in a report, to skip them from now on.
pub(crate) fn given_up(report: &ProcessSweepReport) -> impl Iterator<Item = (u32, u64)> + '_ {
    report
        .failed
        .iter()
        .map(|(process, _)| (process.pid, process.start_ticks))
}

/// Terminates the processes of dead loops on this host: what `loopwatch cleanup` runs
/// after a crash. With `dry_run` it only reports them.
///
/// ```no_run
/// let report = loopwatch::cleanup::orphaned_processes(true);
/// for process in &report.orphans {
///     println!("would terminate {} ({})", process.pid, process.command);
/// }
/// ```
pub fn cleanup_orphaned_processes(dry_run: bool) -> ProcessSweepReport {
    sweep_processes(None, dry_run, &HashSet::new(), TERMINATE_GRACE)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::process::ExitStatusExt;

    use crate::owner::FixedTable as Table;

    fn marked(run_id: &str, owner: Option<(&str, u32, u64)>) -> MarkedProcess {
        MarkedProcess {
            pid: 4242,
            command: "python worker.py".into(),
            run_id: run_id.into(),
            owner: owner.map(|(h, p, s)| Owner::new(h, p, s)),
            start_ticks: 1,
            below: false,
        }
    }

    fn below(mut process: MarkedProcess) -> MarkedProcess {
        process.below = true;
        process
    }

    /// Waits (bounded) for `found` to hold of a fresh scan.
    fn wait_for<T>(what: &str, mut found: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(value) = found() {
                return value;
            }
            assert!(Instant::now() < deadline, "{what} not seen in time");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_child_with_a_scrubbed_environment_is_of_the_run_by_descent() {
        let mut child = std::process::Command::new("env")
            .args(["-i", "sleep", "30"])
            .spawn()
            .unwrap();
        let pid = child.id();
        // Once `env` has exec'd sleep, nothing in the environment says whose it is.
        let process = wait_for("the scrubbed child", || {
            processes_of_run(Vec::new(), "run-a")
                .into_iter()
                .find(|p| p.pid == pid && p.command.starts_with("sleep"))
        });
        assert!(!marked_processes().iter().any(|p| p.pid == pid));
        assert_eq!(process.run_id, "run-a");
        let mut table = crate::owner::FixedTable(Vec::new());
        assert_eq!(
            disposition(&process, Some("run-a"), "h", &mut table),
            Disposition::OfRun
        );
        assert_eq!(
            disposition(&process, None, "h", &mut table),
            Disposition::LeaveAlone
        );
        let (cleaned, failed) = terminate(&[process], Duration::from_secs(3));
        assert_eq!((cleaned, failed), (vec![pid], vec![]));
        assert!(child.wait().unwrap().signal().is_some());
    }

    #[test]
    fn a_child_that_exited_is_a_zombie_child_until_reaped_and_never_running() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        wait_for("the zombie", || {
            zombie_children().contains(&pid).then_some(())
        });
        assert_eq!(ProcessId::running(pid), None);
        assert!(child.wait().unwrap().success());
        assert!(!zombie_children().contains(&pid));
    }

    #[test]
    fn a_process_id_is_not_running_once_its_pid_has_another_start() {
        let me = ProcessId::running(std::process::id()).unwrap();
        assert!(me.is_running());
        let reused = ProcessId {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!reused.is_running());
    }

    #[test]
    fn environment_blocks_parse() {
        let environ =
            b"PATH=/bin\0LOOPWATCH_RUN_ID=host-1-2\0LOOPWATCH_OWNER=my:host:77:1700000000\0";
        assert_eq!(environment_value(environ, ENV_RUN_ID), Some("host-1-2"));
        assert_eq!(environment_value(environ, "LOOPWATCH"), None);
        assert_eq!(
            environment_value(environ, ENV_OWNER).and_then(Owner::from_env_value),
            Some(Owner::new("my:host", 77, 1_700_000_000))
        );
    }

    #[test]
    fn only_the_exited_run_and_dead_owners_are_cleaned() {
        let mut table = Table(vec![(10, 1000)]);
        let alive = Some(("h", 10, 1000));
        let dead = Some(("h", 11, 1000));
        let reused = Some(("h", 10, 9999));
        let remote = Some(("other", 11, 1000));
        let cases = [
            (marked("run-a", alive), Some("run-a"), Disposition::OfRun),
            (
                marked("run-b", alive),
                Some("run-a"),
                Disposition::LeaveAlone,
            ),
            (marked("run-b", dead), None, Disposition::Orphan),
            (marked("run-b", reused), None, Disposition::Orphan),
            (marked("run-b", remote), None, Disposition::LeaveAlone),
            (marked("run-b", None), None, Disposition::LeaveAlone),
            // Below this process: of the run being cleaned up, whatever it says.
            (
                below(marked("run-b", alive)),
                Some("run-a"),
                Disposition::OfRun,
            ),
            (
                below(marked("run-b", None)),
                Some("run-a"),
                Disposition::OfRun,
            ),
            (below(marked("run-b", alive)), None, Disposition::LeaveAlone),
        ];
        for (process, run, expected) in cases {
            assert_eq!(
                disposition(&process, run, "h", &mut table),
                expected,
                "{process:?}"
            );
        }
    }

    #[test]
    fn a_real_process_is_terminated_and_reported() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(ENV_RUN_ID, "unit-test-run")
            .spawn()
            .unwrap();
        let pid = child.id();
        // Reap it in the background so that it does not linger as a zombie.
        let reaper = std::thread::spawn(move || child.wait());
        // The scan sees it once its exec has replaced the parent's environment.
        let deadline = Instant::now() + Duration::from_secs(5);
        let process = loop {
            if let Some(found) = marked_processes().into_iter().find(|p| p.pid == pid) {
                break found;
            }
            assert!(
                Instant::now() < deadline,
                "{pid} not found by its environment"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let process = &process;
        assert_eq!(process.run_id, "unit-test-run");
        assert!(process.command.starts_with("sleep 30"));
        let (cleaned, failed) = terminate(std::slice::from_ref(process), Duration::from_secs(3));
        assert_eq!((cleaned, failed), (vec![pid], vec![]));
        assert!(reaper.join().unwrap().is_ok());
    }
}
