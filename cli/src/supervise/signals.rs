//! Ending the loop's processes: the operator's signals passed on to the whole process
//! tree at once, loopwatch's own terminations (LoopStalled under `--on-stall`, a hang
//! after `done` past `--exit-timeout`), and SIGKILL for what outlives the grace period
//! or meets a second signal.
//!
//! The handlers are installed before the first start and kept for the whole run, so
//! that no signal kills loopwatch and orphans the loop; meanwhile they reap the
//! zombies of orphans re-parented to loopwatch (SIGCHLD).

use std::pin::Pin;
use std::time::{Duration, Instant};

use loopwatch::llm::proxy::LlmProxy;
use loopwatch::supervise::ExitReason;
use loopwatch::AlertName;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Sleep;

use super::family::{self, Family};
use super::hung::{HungEvaluations, OnHungEvaluation};
use super::restarts::OnStall;
use super::spawning::{Exited, Launch};

/// How often the supervisor looks at the monitor's verdicts (LoopStalled, `done`).
const WATCH_PERIOD: Duration = Duration::from_millis(200);

/// How often the rest of an ending loop's processes are looked for.
const REST_POLL: Duration = Duration::from_millis(20);

/// How far away an unarmed deadline is.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// SIGINT, SIGTERM and SIGHUP to loopwatch: the operator's; and SIGCHLD, on which
/// the zombies of orphans re-parented to loopwatch are reaped.
pub(super) struct OperatorSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    child: tokio::signal::unix::Signal,
    /// The loop's direct child while it runs or waits to be reaped by its waiter:
    /// never reaped here.
    pub(super) keep: Option<Pid>,
}

impl OperatorSignals {
    /// Installs the handlers (inside a runtime).
    pub(super) fn install() -> Option<Self> {
        Some(OperatorSignals {
            int: signal(SignalKind::interrupt()).ok()?,
            term: signal(SignalKind::terminate()).ok()?,
            hup: signal(SignalKind::hangup()).ok()?,
            child: signal(SignalKind::child()).ok()?,
            keep: None,
        })
    }

    /// The next signal of the operator; orphans are reaped meanwhile.
    async fn next(&mut self) -> Signal {
        loop {
            tokio::select! {
                _ = self.int.recv() => return Signal::SIGINT,
                _ = self.term.recv() => return Signal::SIGTERM,
                _ = self.hup.recv() => return Signal::SIGHUP,
                _ = self.child.recv() => {
                    family::reap_orphans(self.keep);
                }
            }
        }
    }

    /// Waits `period`; true when a signal cut it short.
    pub(super) async fn wait(&mut self, period: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(period) => false,
            _ = self.next() => true,
        }
    }
}

/// Watches one start of the loop until its direct child has exited (`exited`), and,
/// when loopwatch ended it, until the rest of its processes have too: passes the
/// operator's signals on, terminates it on a verdict ([`verdict`]), kills what is
/// left at the end of the grace period. Returns why loopwatch ended it, if it did.
pub(super) async fn watch(
    launch: &Launch<'_>,
    family: &Family,
    mut exited: Exited,
    signals: &mut OperatorSignals,
) -> Option<ExitReason> {
    let mut ending = Ending::new(family, launch.options.grace, launch.llm_proxy);
    let mut done_since: Option<Instant> = None;
    let mut hung = HungEvaluations::default();
    let mut ticks = tokio::time::interval(WATCH_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let waited = loop {
        tokio::select! {
            waited = &mut exited => break waited,
            received = signals.next() => ending.forward(received),
            () = ending.kill_deadline.as_mut() => ending.grace_over(),
            _ = ticks.tick() => {
                if let Some(terminal) = launch.terminal {
                    terminal.follow(family.leader());
                }
                if ending.reason.is_none() {
                    if let Some(reason) = verdict(launch, &mut done_since) {
                        ending.terminate(reason);
                    } else if launch.options.on_hung_evaluation == OnHungEvaluation::Kill {
                        hung.tick(
                            launch.supervision,
                            launch.intake,
                            family.leader(),
                            launch.options.grace,
                        );
                    }
                }
            }
        }
    };
    if let Ok(Err(e)) | Err(e) = waited.map_err(|_| nix::errno::Errno::ECHILD) {
        tracing::error!(error = %e, "could not wait for the loop's exit without reaping it");
    }
    if ending.reason.is_some() {
        // The grace period covers the whole tree, not only the direct child.
        wait_for_the_rest(
            family,
            signals,
            ending.kill_deadline.as_mut(),
            ending.killed,
        )
        .await;
    }
    ending.reason
}

/// A loop being ended: why, and when what is left of it is killed.
struct Ending<'a> {
    family: &'a Family,
    /// Told when loopwatch starts ending the loop: the calls it cuts are abandoned.
    llm_proxy: Option<&'a LlmProxy>,
    grace: Duration,
    reason: Option<ExitReason>,
    signals_seen: u32,
    killed: bool,
    kill_deadline: Pin<Box<Sleep>>,
}

impl<'a> Ending<'a> {
    fn new(family: &'a Family, grace: Duration, llm_proxy: Option<&'a LlmProxy>) -> Self {
        Ending {
            family,
            llm_proxy,
            grace,
            reason: None,
            signals_seen: 0,
            killed: false,
            kill_deadline: Box::pin(tokio::time::sleep(NEVER)),
        }
    }

    /// The operator's signal: passed on to the loop's processes, which then have the
    /// grace period to exit; a second one kills them at once.
    fn forward(&mut self, received: Signal) {
        self.reason = Some(ExitReason::Stopped);
        self.tell_the_proxy();
        self.signals_seen += 1;
        if self.signals_seen > 1 {
            tracing::warn!(signal = %received, "second signal: killing the loop's processes");
            self.kill();
            return;
        }
        tracing::info!(signal = %received, "forwarding the signal to the loop's processes and waiting for them to exit");
        self.family.signal(received);
        self.arm();
    }

    /// loopwatch's own verdict: SIGTERM, SIGKILL after the grace period.
    fn terminate(&mut self, reason: ExitReason) {
        self.reason = Some(reason);
        self.tell_the_proxy();
        self.family.signal(Signal::SIGTERM);
        self.arm();
    }

    /// Tells the metering proxy that loopwatch is ending the loop, so that the calls
    /// it cuts are booked as abandoned, not as the provider's timeouts.
    fn tell_the_proxy(&self) {
        if let Some(proxy) = self.llm_proxy {
            proxy.loop_ending(true);
        }
    }

    /// The grace period is over and the direct child still runs.
    fn grace_over(&mut self) {
        tracing::warn!(grace = ?self.grace, "the loop did not exit in time; killing its processes");
        self.kill();
        let never = tokio::time::Instant::now() + NEVER;
        self.kill_deadline.as_mut().reset(never);
    }

    fn kill(&mut self) {
        self.family.signal(Signal::SIGKILL);
        self.killed = true;
    }

    /// The grace period starts now.
    fn arm(&mut self) {
        let deadline = tokio::time::Instant::now() + self.grace;
        self.kill_deadline.as_mut().reset(deadline);
    }
}

/// Whether loopwatch ends the child now, and why: the LLM budget under
/// `action = "stop"` is spent (booked as an operator's stop: never restarted, not
/// LoopExited), LoopStalled fires under `--on-stall kill|restart` (never for a loop
/// without a socket, which cannot report), or it said it was done `--exit-timeout`
/// ago.
fn verdict(launch: &Launch<'_>, done_since: &mut Option<Instant>) -> Option<ExitReason> {
    let (monitor, options) = (launch.monitor, launch.options);
    if let Some(budget) = launch.budget_spent_stops() {
        tracing::warn!(
            budget_usd = budget.usd,
            grace = ?options.grace,
            "the LLM budget is spent; stopping the loop (action = \"stop\")"
        );
        launch.budget_stopped.set(true);
        return Some(ExitReason::Stopped);
    }
    if options.on_stall != OnStall::None
        && launch.socket.is_some()
        && monitor.is_firing(AlertName::LoopStalled)
    {
        tracing::warn!(on_stall = ?options.on_stall, grace = ?options.grace, "the loop stalled; terminating its processes");
        return Some(ExitReason::Stalled);
    }
    let timeout = options.exit_timeout?;
    if !monitor.said_done() {
        return None;
    }
    let since = *done_since.get_or_insert_with(Instant::now);
    (since.elapsed() >= timeout).then(|| {
        tracing::warn!(
            exit_timeout = %humantime::format_duration(timeout),
            "the loop said it was done but is still running; terminating its processes"
        );
        ExitReason::ExitTimeout
    })
}

/// After the direct child of a loop being ended has exited: waits for the rest of its
/// processes until `kill_deadline` (what is left of the grace period), then kills
/// them; an operator's further signal kills them at once. Gives up
/// [`family::KILL_WAIT`] after the kill (the process sweep then tries again, and lists
/// what survives).
async fn wait_for_the_rest(
    family: &Family,
    signals: &mut OperatorSignals,
    mut kill_deadline: Pin<&mut Sleep>,
    mut killed: bool,
) {
    let mut give_up = killed.then(|| Instant::now() + family::KILL_WAIT);
    let mut poll = tokio::time::interval(REST_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while family.any_left() {
        if give_up.is_some_and(|at| Instant::now() >= at) {
            tracing::warn!("processes of the loop are still there after SIGKILL");
            return;
        }
        let kill = tokio::select! {
            _ = poll.tick() => false,
            () = &mut kill_deadline, if !killed => {
                tracing::warn!("processes of the loop still running at the end of the grace period; killing them");
                true
            }
            received = signals.next() => {
                tracing::warn!(signal = %received, "another signal: killing the loop's processes");
                true
            }
        };
        if kill {
            family.signal(Signal::SIGKILL);
            killed = true;
            give_up.get_or_insert_with(|| Instant::now() + family::KILL_WAIT);
        }
    }
}
