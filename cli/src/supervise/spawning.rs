//! Starting the loop's command: its environment (the socket, the run's identity and
//! labels, the restart count, the metering proxy), its own process group with the
//! terminal's foreground, a waiter that sees it exit without reaping it; and, once it
//! has exited, its status read and its group's id given back.

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::time::{Duration, Instant};

use loopwatch::llm::proxy::{LlmProxy, ProxyConfig};
use loopwatch::supervise::{ExitReason, Intake, LoopExit, Supervision};
use loopwatch::Monitor;
use nix::sys::signal::Signal;

use super::family::{self, Family};
use super::signals::{self, OperatorSignals};
use super::terminal::Terminal;
use super::{
    LlmProxyOptions, RunOptions, ENV_LABELS, ENV_LLM_PROXY, ENV_ON_HUNG_EVALUATION, ENV_RESTARTS,
    ENV_SOCKET,
};

/// The waiter's word that the loop's direct child has exited (not yet reaped).
pub(super) type Exited = tokio::sync::oneshot::Receiver<nix::Result<()>>;

/// How one start of the loop ended.
pub(super) struct ChildEnd {
    pub(super) exit: LoopExit,
    pub(super) ran_for: Duration,
}

/// Starts the metering proxy. A setting it cannot use (an upstream URL that does not
/// parse or is the proxy's own address, a proxy variable or `SSL_CERT_FILE` that
/// cannot be used) is an error, and the loop is not started; a port in use is said,
/// and the loop runs with its LLM calls unmetered.
pub(super) fn start_llm_proxy(
    monitor: &Monitor,
    options: &LlmProxyOptions,
) -> Result<Option<LlmProxy>, loopwatch::Error> {
    let mut config = ProxyConfig::default()
        .upstreams(options.upstream.as_deref(), |key| std::env::var(key).ok())
        .with_request_usage(options.request_usage);
    if let Some(listen) = options.listen {
        config = config.with_listen(listen);
    }
    match LlmProxy::start(monitor.llm_recorder(), config) {
        Ok(proxy) => {
            tracing::info!(proxy = %proxy.base_url(), "metering the loop's LLM calls");
            Ok(Some(proxy))
        }
        Err(e @ (loopwatch::Error::ProxyBind { .. } | loopwatch::Error::Runtime(_))) => {
            tracing::error!(error = %e, "the LLM metering proxy did not start; the loop runs with its LLM calls unmetered");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The loop's command, and what each of its starts is given.
pub(super) struct Launch<'a> {
    pub(super) monitor: &'a Monitor,
    pub(super) supervision: &'a Supervision,
    /// What the loop writes to its socket is applied through it; it knows the
    /// processes that reported the loop's iterations.
    pub(super) intake: &'a Intake,
    pub(super) options: &'a RunOptions,
    pub(super) program: &'a OsString,
    pub(super) args: &'a [OsString],
    pub(super) socket: Option<&'a Path>,
    pub(super) llm_proxy: Option<&'a LlmProxy>,
    /// The zero-code instrumentation, when a Python child gets it.
    pub(super) instrumentation: Option<&'a super::instrument::Instrumentation>,
    /// loopwatch's controlling terminal: the loop gets its foreground whenever
    /// loopwatch has it.
    pub(super) terminal: Option<&'a Terminal>,
    /// Set when the LLM budget (`action = "stop"`) ended the loop: the run exits
    /// with [`loopwatch::llm::budget::BUDGET_EXIT_STATUS`].
    pub(super) budget_stopped: std::cell::Cell<bool>,
}

/// One start of the loop, running.
struct Started {
    child: std::process::Child,
    family: Family,
    exited: Exited,
    at: Instant,
}

impl Launch<'_> {
    /// The LLM budget, when its action is `stop` and it is spent (LLMBudget fires):
    /// the loop is to be ended, and not started again.
    pub(super) fn budget_spent_stops(&self) -> Option<loopwatch::llm::Budget> {
        self.monitor
            .thresholds()
            .llm_budget()
            .filter(|b| b.action == loopwatch::llm::BudgetAction::Stop)
            .filter(|_| self.monitor.is_firing(loopwatch::AlertName::LLMBudget))
    }

    /// One start: starts the child, watches it until it and (when loopwatch ended it)
    /// the rest of its processes have exited, and reads its end; `None` when it could
    /// not be started.
    pub(super) async fn supervise(
        &self,
        signals: &mut OperatorSignals,
        restarts: u64,
    ) -> Option<ChildEnd> {
        let Started {
            child,
            mut family,
            exited,
            at,
        } = self.start(signals, restarts)?;
        let ending = signals::watch(self, &family, exited, signals).await;
        if let Some(proxy) = self.llm_proxy {
            // The loop's process has exited: calls cut by its end (a crash, a Ctrl-C
            // at the terminal, its workers swept) are abandoned, not timeouts.
            proxy.loop_ending(true);
        }
        let exit = self.reap(child, &mut family, signals, ending);
        Some(ChildEnd {
            exit,
            ran_for: at.elapsed(),
        })
    }

    /// The command with the run's environment, in a process group of its own.
    fn command(&self, restarts: u64) -> std::process::Command {
        let monitor = self.monitor;
        let mut command = std::process::Command::new(self.program);
        // The run's identity (LOOPWATCH_RUN_ID, LOOPWATCH_OWNER) marks the child and
        // all it starts, so that whatever of it escapes loopwatch's process tree is
        // still found and cleaned up.
        self.supervision
            .identify(&mut command)
            .args(self.args)
            .env(
                ENV_LABELS,
                serde_json::to_string(&monitor.labels()).unwrap_or_default(),
            )
            .env(ENV_RESTARTS, restarts.to_string())
            .process_group(0);
        match self.socket {
            Some(path) => command.env(ENV_SOCKET, path),
            None => command.env_remove(ENV_SOCKET),
        };
        // The Python client makes its evaluations interruptible (its SIGUSR2 handler)
        // only when loopwatch will act on a hung one.
        match self.options.on_hung_evaluation {
            super::OnHungEvaluation::Kill => command.env(ENV_ON_HUNG_EVALUATION, "kill"),
            _ => command.env_remove(ENV_ON_HUNG_EVALUATION),
        };
        if let Some(proxy) = self.llm_proxy {
            through_the_proxy(&mut command, proxy);
        }
        super::instrument::Instrumentation::apply_to(self.instrumentation, &mut command);
        command
    }

    /// Spawns the child, hands it the terminal and starts its waiter; `None`, said,
    /// when it could not be started.
    fn start(&self, signals: &mut OperatorSignals, restarts: u64) -> Option<Started> {
        let child = match self.command(restarts).spawn() {
            Ok(child) => child,
            Err(e) => {
                eprintln!(
                    "error: could not start {}: {e}",
                    self.program.to_string_lossy()
                );
                return None;
            }
        };
        let at = Instant::now();
        let family = Family::new(child.id());
        let leader = family.leader();
        // Before anything awaits: the reaper must leave the child to its waiter.
        signals.keep = Some(leader);
        if let Some(terminal) = self.terminal {
            terminal.pass_on(leader);
        }
        self.supervision.loop_started(child.id());
        if let Some(proxy) = self.llm_proxy {
            // A new start: a call it gives up on before its provider answers is a timeout.
            proxy.loop_ending(false);
        }
        tracing::info!(pid = child.id(), restarts, command = %self.program.to_string_lossy(), "started the loop");
        let (exited_tx, exited) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = exited_tx.send(family::wait_for_exit(leader));
        });
        Some(Started {
            child,
            family,
            exited,
            at,
        })
    }

    /// After the child has exited: takes the terminal back, reaps the child (its
    /// group's id is free from then on) and the orphans, and reads its exit. A
    /// terminal's Ctrl-C or Ctrl-\ that ended a loop holding its foreground is the
    /// operator's stop.
    fn reap(
        &self,
        mut child: std::process::Child,
        family: &mut Family,
        signals: &mut OperatorSignals,
        mut ending: Option<ExitReason>,
    ) -> LoopExit {
        let leader = family.leader();
        let held_the_terminal = self
            .terminal
            .is_some_and(|terminal| terminal.take_back(leader));
        // The direct child has exited: this reaps it, and its group's id is free.
        let status = child.wait();
        family.leader_reaped();
        signals.keep = None;
        family::reap_orphans(None);
        let exit = match status {
            Ok(status) => LoopExit::new(status.code(), status.signal()),
            Err(e) => unknown_exit(&e.to_string()),
        };
        if ending.is_none()
            && held_the_terminal
            && matches!(exit.signal, Some(s) if s == Signal::SIGINT as i32 || s == Signal::SIGQUIT as i32)
        {
            tracing::info!("the loop was interrupted from the terminal");
            ending = Some(ExitReason::Stopped);
        }
        exit.with_reason(ending.unwrap_or(ExitReason::Exited))
    }
}

/// Points the loop's LLM clients at the metering proxy.
fn through_the_proxy(command: &mut std::process::Command, proxy: &LlmProxy) {
    command
        .env("OPENAI_BASE_URL", proxy.openai_base_url())
        // The older name, still read by OpenEvolve, LiteLLM and LangChain.
        .env("OPENAI_API_BASE", proxy.openai_base_url())
        .env("ANTHROPIC_BASE_URL", proxy.base_url())
        .env(ENV_LLM_PROXY, proxy.base_url());
    // The loop reaches the proxy directly, whatever HTTP_PROXY says: a network's
    // proxy cannot reach this host's loopback.
    let ip = proxy.local_addr().ip().to_string();
    for name in ["NO_PROXY", "no_proxy"] {
        let value = match std::env::var(name) {
            Ok(list) if !list.trim().is_empty() => format!("{list},{ip}"),
            _ => ip.clone(),
        };
        command.env(name, value);
    }
}

/// The exit of a child whose status could not be read: a failure.
fn unknown_exit(reason: &str) -> LoopExit {
    tracing::error!(reason, "could not wait for the loop");
    LoopExit::new(Some(1), None)
}
