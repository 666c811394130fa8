//! The terminal, for a loop that runs in a process group of its own.
//!
//! When loopwatch's stdin is its controlling terminal and loopwatch has the terminal's
//! foreground (at start, or later from the shell's `fg`), it passes the foreground on
//! to the loop's group while the loop runs (`tcsetpgrp`), as a shell gives it to a
//! job: the loop reads the terminal, and the terminal's Ctrl-C and Ctrl-\ reach the
//! loop's whole group at once. loopwatch takes the foreground back when the loop
//! ends. Being in the background meanwhile, loopwatch blocks SIGTTOU around its own
//! `tcsetpgrp`, which would otherwise stop it.
//!
//! Ctrl-Z stops the loop's group; loopwatch then takes the terminal back and stops
//! itself, so that the shell sees its job stopped. Continued in the foreground
//! (`fg`), it gives the terminal to the loop again and continues it; continued in the
//! background (`bg`), it continues the loop there.

use std::io::IsTerminal;

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, SigSet, SigmaskHow, Signal};
use nix::sys::termios::tcgetsid;
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{getpgid, getpgrp, getppid, getsid, tcgetpgrp, tcsetpgrp, Pid};

/// loopwatch's controlling terminal, on its stdin.
#[derive(Debug)]
pub(crate) struct Terminal {
    /// loopwatch's own process group.
    ours: Pid,
}

impl Terminal {
    /// The terminal on stdin, when it is loopwatch's controlling terminal.
    pub(crate) fn controlling() -> Option<Terminal> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let session = getsid(None).ok()?;
        (tcgetsid(&stdin).ok()? == session).then_some(Terminal { ours: getpgrp() })
    }

    /// Whether `group` holds the terminal's foreground now.
    fn held_by(group: Pid) -> bool {
        tcgetpgrp(std::io::stdin()).is_ok_and(|holder| holder == group)
    }

    /// Passes the foreground on to `group` if loopwatch holds it, then continues the
    /// group: it may have stopped on reading the terminal before it had it.
    pub(crate) fn pass_on(&self, group: Pid) {
        if Self::held_by(self.ours) && set_foreground(group) {
            let _ = killpg(group, Signal::SIGCONT);
        }
    }

    /// Takes the foreground back for loopwatch if the loop's `group` holds it;
    /// returns whether it did.
    pub(crate) fn take_back(&self, group: Pid) -> bool {
        Self::held_by(group) && set_foreground(self.ours)
    }

    /// Keeps job control working across the two groups; called while the loop runs.
    /// A loop stopped from the terminal stops loopwatch too, until the shell continues
    /// it; a foreground given back to loopwatch (`fg` after `bg`) is passed on.
    pub(crate) fn follow(&self, group: Pid) {
        if stopped(group) {
            self.take_back(group);
            if !in_job_control() {
                // Nobody would continue a stopped loopwatch: the stop is undone, as
                // the kernel does for the job of a shell that has gone.
                let _ = killpg(group, Signal::SIGCONT);
                return;
            }
            tracing::info!("the loop was stopped from the terminal; stopping too");
            let _ = kill(Pid::this(), Signal::SIGSTOP);
            // Continued by the shell: in the foreground (`fg`), where the loop gets
            // the terminal again, or in the background (`bg`).
            self.pass_on(group);
            let _ = killpg(group, Signal::SIGCONT);
            tracing::info!("continued; so is the loop");
        } else {
            self.pass_on(group);
        }
    }
}

/// Whether the loop's leader `group` has stopped (Ctrl-Z, or reading the terminal
/// from the background); its stop stays to be read again.
fn stopped(group: Pid) -> bool {
    matches!(
        waitid(
            Id::Pid(group),
            WaitPidFlag::WSTOPPED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT
        ),
        Ok(WaitStatus::Stopped(..))
    )
}

/// Whether a shell's job control will continue loopwatch once it stops: its parent is
/// in its session, in another process group (its group is not orphaned).
fn in_job_control() -> bool {
    let parent = getppid();
    let (Ok(parent_session), Ok(session), Ok(parent_group)) =
        (getsid(Some(parent)), getsid(None), getpgid(Some(parent)))
    else {
        return false;
    };
    parent_session == session && parent_group != getpgrp()
}

/// Makes `group` the terminal's foreground, SIGTTOU blocked meanwhile (a `tcsetpgrp`
/// from the background raises it otherwise); whether it did.
fn set_foreground(group: Pid) -> bool {
    let mut ttou = SigSet::empty();
    ttou.add(Signal::SIGTTOU);
    let mut before = SigSet::empty();
    let blocked =
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut before));
    let set = tcsetpgrp(std::io::stdin(), group);
    if blocked.is_ok() {
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&before), None);
    }
    match set {
        Ok(()) => true,
        Err(Errno::ENOTTY | Errno::EIO) => false,
        Err(e) => {
            tracing::debug!(error = %e, %group, "could not pass the terminal's foreground");
            false
        }
    }
}
