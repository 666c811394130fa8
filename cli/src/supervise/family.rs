//! The loop's processes, held as a whole.
//!
//! The loop's command runs in a process group of its own, and loopwatch is the child
//! subreaper of everything it starts (`PR_SET_CHILD_SUBREAPER`): a process whose
//! parent dies is re-parented to loopwatch, not to init, so it stays below loopwatch
//! however it was started (a double-forked daemon, a `setsid` worker, a process with
//! a scrubbed environment). A signal to the loop goes to its group in one call, then
//! to every process below loopwatch that left the group, each checked by start time
//! right before it is signalled.
//!
//! The zombies of orphans re-parented to loopwatch are reaped one by one, by pid, as
//! they appear (as PID 1 in a container too). The loop's direct child is never among
//! them: its exit status is its waiter's, and it is reaped only when the supervisor
//! is done with its process group, so that the group's id cannot be taken by another
//! process while the group is signalled.

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{getpgid, Pid};

/// How long processes killed with SIGKILL are waited for before they are given up
/// (a process in uninterruptible sleep dies only when its I/O ends).
pub(crate) const KILL_WAIT: Duration = Duration::from_secs(2);

/// Makes loopwatch the subreaper of everything below it; said when it cannot be.
pub(crate) fn become_subreaper() {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "could not become the subreaper of the loop's processes: orphans of the loop are found by their environment only");
    }
}

/// The pid as nix takes it.
fn pid(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX))
}

/// One start of the loop: its process group, led by the direct child, and every
/// process below loopwatch.
#[derive(Debug)]
pub(crate) struct Family {
    leader: Pid,
    /// Whether the leader has been reaped: its group's id may then be taken by
    /// another process, so the group is no longer signalled as a whole.
    leader_reaped: bool,
}

impl Family {
    /// The family led by `leader`, started in a group of its own (`process_group(0)`).
    pub(crate) fn new(leader: u32) -> Self {
        Family {
            leader: pid(leader),
            leader_reaped: false,
        }
    }

    /// The direct child's pid, which is also its group's id.
    pub(crate) fn leader(&self) -> Pid {
        self.leader
    }

    /// Sends `signal` to the whole family at once, once to each process: to the
    /// process group in one call while its leader is not reaped, then to every other
    /// process below loopwatch (those that left the group), each checked by start
    /// time just before. A terminating signal is followed by SIGCONT, so that a
    /// stopped process acts on it. Returns how many processes were signalled one by
    /// one.
    pub(crate) fn signal(&self, signal: Signal) -> usize {
        let group_signalled = !self.leader_reaped
            && match killpg(self.leader, signal) {
                Ok(()) => true,
                Err(Errno::ESRCH) => false,
                Err(e) => {
                    tracing::debug!(error = %e, %signal, "could not signal the loop's process group");
                    false
                }
            };
        let mut signalled = 0;
        for process in loopwatch::cleanup::descendants(std::process::id()) {
            let target = pid(process.pid);
            if group_signalled && getpgid(Some(target)) == Ok(self.leader) {
                continue; // the group's signal reached it
            }
            if process.is_running() && kill(target, signal).is_ok() {
                signalled += 1;
            }
        }
        if signal != Signal::SIGKILL && signal != Signal::SIGCONT {
            self.signal(Signal::SIGCONT);
        }
        signalled
    }

    /// Whether any process below loopwatch still runs.
    pub(crate) fn any_left(&self) -> bool {
        !loopwatch::cleanup::descendants(std::process::id()).is_empty()
    }

    /// Notes that the leader has been reaped (its exit is waited for with
    /// [`wait_for_exit`], which leaves it to be reaped).
    pub(crate) fn leader_reaped(&mut self) {
        self.leader_reaped = true;
    }
}

/// Waits, without reaping it, until the child `leader` has exited (blocking; on a
/// thread of its own). Its zombie keeps its pid, and so its group's id, from being
/// taken until it is reaped.
pub(crate) fn wait_for_exit(leader: Pid) -> nix::Result<()> {
    loop {
        match waitid(Id::Pid(leader), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
            Ok(_) => return Ok(()),
        }
    }
}

/// Reaps the zombie children of loopwatch (orphans re-parented to it), each by its
/// pid, all but `keep`: the loop's direct child, whose status is its waiter's.
/// Returns how many were reaped.
pub(crate) fn reap_orphans(keep: Option<Pid>) -> usize {
    let mut reaped = 0;
    for zombie in loopwatch::cleanup::zombie_children() {
        let zombie = pid(zombie);
        if Some(zombie) == keep {
            continue;
        }
        match waitpid(zombie, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => {}
            Ok(_) => reaped += 1,
        }
    }
    if reaped > 0 {
        tracing::debug!(reaped, "reaped orphaned processes of the loop");
    }
    reaped
}
