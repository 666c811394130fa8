//! `loopwatch run -- <command>`: a loop in any language, supervised.
//!
//! The command runs as a child with `LOOPWATCH_SOCKET` (a Unix socket in a private
//! directory, [`socket`]), `LOOPWATCH_RUN_ID`, `LOOPWATCH_OWNER` (see
//! [`loopwatch::Monitor::identify`]), `LOOPWATCH_LABELS` and `LOOPWATCH_RESTARTS` in
//! its environment. What it writes to the socket (docs/protocol.md) feeds a
//! [`loopwatch::Monitor`] through its [`loopwatch::supervise::Intake`]; the monitor samples the
//! child's whole process tree, serves /metrics and the dashboard, evaluates the alerts
//! and sweeps orphans, exactly as for a Rust loop.
//!
//! The child runs in a process group of its own, with the terminal's foreground when
//! loopwatch has it ([`terminal`]), and loopwatch is the subreaper of everything below
//! it ([`family`]): signals to loopwatch reach the loop's whole process tree at once,
//! and so do SIGTERM and, after the grace period, SIGKILL when loopwatch ends it
//! ([`signals`]). Each start of the command is [`spawning`]'s.
//!
//! When the child ends, its leftover processes are cleaned up. Under a restart policy
//! ([`RestartPolicy`], [`restarts`]) or `--on-stall restart` it is started again after a backoff,
//! with the same run and iteration numbers that continue, once its processes and
//! containers are gone; otherwise LoopExited is raised if it failed without saying it
//! was done, the final files are written, and loopwatch exits with the child's status.
//! A loop still running `--exit-timeout` after it said it was done is terminated, and
//! the run counts as completed.

mod family;
mod hung;
pub(crate) mod instrument;
mod restarts;
mod signals;
mod socket;
mod spawning;
mod terminal;

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use loopwatch::llm::proxy::LlmProxy;
use loopwatch::supervise::{ExitReason, Intake, LoopExit, Supervision};
use loopwatch::{Monitor, MonitorBuilder};

pub use hung::OnHungEvaluation;
pub use restarts::{OnStall, Restart, RestartPolicy, MAX_RESTART_DELAY};

use signals::OperatorSignals;
use socket::{Readers, SocketDir, READ_REMAINING_TIMEOUT};
use spawning::Launch;
use terminal::Terminal;

/// Environment variable naming the socket a supervised loop reports to.
pub const ENV_SOCKET: &str = "LOOPWATCH_SOCKET";
/// Environment variable carrying the container ownership labels ([`loopwatch::cleanup::Owner`]) as a
/// JSON object, for the loop's `docker run --label` or docker-py's `labels=`.
pub const ENV_LABELS: &str = "LOOPWATCH_LABELS";

/// Environment variable telling the loop how many times it has been restarted (0 at
/// the first start), so that it can resume from its own checkpoint.
pub const ENV_RESTARTS: &str = "LOOPWATCH_RESTARTS";

/// Environment variable set to `kill` under `--on-hung-evaluation kill` (and unset
/// otherwise): the Python client then makes its evaluations interruptible, with a
/// `SIGUSR2` handler that ends a hung one before its process is.
pub const ENV_ON_HUNG_EVALUATION: &str = "LOOPWATCH_ON_HUNG_EVALUATION";

/// How `loopwatch run` runs its command.
#[derive(Debug)]
pub struct RunOptions {
    /// The monitor's settings (listen address, output directory, Alertmanager …).
    pub monitor: MonitorBuilder,
    /// How long to keep serving /metrics after the child exits, so Prometheus scrapes
    /// the final values.
    pub linger: Duration,
    /// How long a child may take to exit after a forwarded signal, or after loopwatch
    /// terminated it, before it is killed.
    pub grace: Duration,
    /// When the child is started again after it ends.
    pub restart: RestartPolicy,
    /// What to do once LoopStalled has fired.
    pub on_stall: OnStall,
    /// What to do with the evaluations EvaluationHung finds.
    pub on_hung_evaluation: OnHungEvaluation,
    /// How long a child may keep running after it said it was done before it is
    /// terminated; `None` never.
    pub exit_timeout: Option<Duration>,
    /// The LLM metering proxy, when the loop's LLM calls are to be metered.
    pub llm_proxy: Option<LlmProxyOptions>,
    /// `--instrument`: the frameworks to instrument (`LOOPWATCH_INSTRUMENT`), `None`
    /// for none.
    pub instrument: Option<String>,
    /// The command and its arguments.
    pub command: Vec<OsString>,
}

/// Environment variable naming the metering proxy's base URL for the loop (set with
/// `--llm-proxy`), for tools configured with an `api_base` rather than the SDKs'
/// variables.
pub const ENV_LLM_PROXY: &str = "LOOPWATCH_LLM_PROXY";

/// `--llm-proxy`: where the proxy listens and where it forwards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LlmProxyOptions {
    /// The address to listen on; default 127.0.0.1 on a free port.
    pub listen: Option<std::net::SocketAddr>,
    /// One upstream serving both APIs (OpenAI under `URL/v1`, Anthropic under `URL`);
    /// default: the loop's own `OPENAI_BASE_URL` and `ANTHROPIC_BASE_URL`, else the
    /// providers' public endpoints.
    pub upstream: Option<String>,
    /// Whether streamed chat and completion requests are asked for their usage
    /// (`--llm-request-usage`).
    pub request_usage: bool,
}

/// Runs the command under a monitor and returns the exit status to leave with.
pub fn run(options: RunOptions) -> u8 {
    let Some((program, args)) = options.command.split_first() else {
        eprintln!("error: no command to run; usage: loopwatch run [flags] -- <command> [args...]");
        return 2;
    };
    let (session, mut signals) = match Session::open(&options) {
        Ok(opened) => opened,
        Err(status) => return status,
    };
    let socket = session.socket_dir.as_ref().map(SocketDir::socket);
    let launch = Launch {
        monitor: &session.monitor,
        supervision: &session.supervision,
        intake: &session.intake,
        options: &options,
        program,
        args,
        socket: socket.as_deref(),
        llm_proxy: session.llm_proxy.as_ref(),
        instrumentation: session.instrumentation.as_ref(),
        terminal: session.terminal.as_ref(),
        budget_stopped: std::cell::Cell::new(false),
    };
    match restarts::until_the_last_end(&session, &launch, &mut signals) {
        Some(exit) => {
            let budget_stopped = launch.budget_stopped.get();
            let status = session.close(exit, &options, &mut signals);
            if budget_stopped {
                let status = loopwatch::llm::budget::BUDGET_EXIT_STATUS;
                tracing::warn!(status, "the LLM budget was spent and stopped the run");
                return status;
            }
            status
        }
        None => {
            // The command could not be started.
            drop(session.monitor.shutdown());
            127
        }
    }
}

/// What one `loopwatch run` holds from its start to its end, whatever the restarts:
/// the monitor, the loop's socket and its readers, the runtime, the metering proxy
/// and the terminal.
struct Session {
    monitor: Monitor,
    /// The monitor's supervisor-only calls.
    supervision: Supervision,
    intake: Arc<Intake>,
    readers: Arc<Readers>,
    socket_dir: Option<SocketDir>,
    runtime: tokio::runtime::Runtime,
    llm_proxy: Option<LlmProxy>,
    /// The zero-code instrumentation, installed in the socket's directory.
    instrumentation: Option<instrument::Instrumentation>,
    terminal: Option<Terminal>,
}

impl Session {
    /// Builds the monitor, makes the loop's socket (without it the loop runs
    /// unreported, which is said, not fatal), becomes the subreaper of the loop's
    /// processes, installs the signal handlers and starts the metering proxy; the exit
    /// status to leave with when one of them fails.
    fn open(options: &RunOptions) -> Result<(Session, OperatorSignals), u8> {
        let monitor = options.monitor.clone().build().map_err(|e| {
            eprintln!("error: {e}");
            2u8
        })?;
        let supervision = monitor.supervision();
        let intake = Arc::new(supervision.intake());
        let readers = Arc::new(Readers::default());
        let socket_dir = socket::open(monitor.identity(), &intake, &readers);
        if socket_dir.is_none() {
            supervision.loop_cannot_report();
        }
        // Orphans of the loop are re-parented to loopwatch, not to init: signalled
        // with the loop, and reaped here.
        family::become_subreaper();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                eprintln!("error: {e}");
                2u8
            })?;
        // Handlers before the first spawn, so that no signal kills loopwatch and
        // orphans the child; kept for the whole run, backoff waits included.
        let signals = {
            let _entered = runtime.enter();
            OperatorSignals::install()
        };
        let Some(signals) = signals else {
            eprintln!("error: could not install signal handlers");
            drop(monitor.shutdown());
            return Err(2);
        };
        let llm_proxy = match options.llm_proxy.as_ref() {
            None => None,
            Some(proxy) => match spawning::start_llm_proxy(&monitor, proxy) {
                Ok(proxy) => proxy,
                Err(e) => {
                    eprintln!("error: {e}");
                    drop(monitor.shutdown());
                    return Err(2);
                }
            },
        };
        if llm_proxy.is_none()
            && monitor
                .thresholds()
                .llm_budget()
                .is_some_and(|b| b.action == loopwatch::llm::BudgetAction::Block)
        {
            tracing::warn!("the LLM budget's action is block, but no metering proxy runs (--llm-proxy): calls are not refused, only counted, and LLMBudget fires when they are spent");
        }
        let instrumentation = instrument(options, socket_dir.as_ref());
        let session = Session {
            monitor,
            supervision,
            intake,
            readers,
            socket_dir,
            runtime,
            llm_proxy,
            instrumentation,
            terminal: Terminal::controlling(),
        };
        Ok((session, signals))
    }

    /// Applies what the loop wrote before it exited, which may still be in the
    /// socket, before its exit is judged; `done` counts wherever it was said.
    fn apply_what_was_written(&self, exit: &mut LoopExit) {
        if !self.readers.wait_until_read(READ_REMAINING_TIMEOUT) {
            tracing::warn!("processes the loop left running still hold its socket open; going on without their further reports");
        }
        self.intake.close();
        exit.said_done |= self.monitor.said_done();
    }

    /// Nothing of the ended loop may outlive it into the next start: its processes,
    /// then (as none is left to start another) its containers.
    fn clear_for_a_restart(&self, grace: Duration) {
        clean_up_after(&self.supervision, grace);
        let removed = self.supervision.clean_up_run_containers();
        if removed > 0 {
            tracing::info!(
                removed,
                "removed the containers of the loop before restarting it"
            );
        }
    }

    /// The end of the run: LoopExited (when it applies), what the loop left running
    /// terminated, the metering proxy stopped, the final metrics served for
    /// `--linger`, the final files written. Returns the exit status to leave with.
    fn close(self, exit: LoopExit, options: &RunOptions, signals: &mut OperatorSignals) -> u8 {
        let Session {
            monitor,
            supervision,
            runtime,
            llm_proxy,
            socket_dir,
            ..
        } = self;
        supervision.loop_exited(exit);
        clean_up_after(&supervision, options.grace);
        // Calls still in flight (a worker left running) end here: plain answers that came
        // whole are read for their usage, the rest recorded as abandoned.
        drop(llm_proxy);
        if !options.linger.is_zero() {
            tracing::info!(
                seconds = options.linger.as_secs_f64(),
                "the loop has exited; serving its final metrics a little longer"
            );
            runtime.block_on(signals.wait(options.linger));
        }
        let report = monitor.shutdown();
        if let Some(files) = &report.files {
            tracing::info!(?files, "final export written");
        }
        drop(socket_dir);
        if exit.reason == ExitReason::ExitTimeout {
            // Done, then terminated for hanging on: a completed run.
            return 0;
        }
        // Statuses above 255 do not exist on Unix; keep the low byte as a shell would.
        (exit.shell_status() & 0xff) as u8
    }
}

/// Terminates what the loop left running: every process below loopwatch and every
/// process marked with the run's identity, SIGTERM, then SIGKILL after `grace`.
fn clean_up_after(supervision: &Supervision, grace: Duration) {
    let swept = supervision.clean_up_run_processes(grace);
    family::reap_orphans(None);
    if !swept.orphans.is_empty() {
        tracing::info!(
            left_running = swept.orphans.len(),
            cleaned = swept.cleaned.len(),
            failed = swept.failed.len(),
            "processes of the loop were still running after it exited"
        );
    }
}

/// Installs the instrumentation `--instrument` asks for in the run's private
/// directory; none without a socket (it reports through it), and none, said, when the
/// directory cannot be written: the loop then runs uninstrumented.
fn instrument(
    options: &RunOptions,
    socket_dir: Option<&SocketDir>,
) -> Option<instrument::Instrumentation> {
    let selection = options.instrument.clone()?;
    let dir = socket_dir?.dir().join("python");
    match instrument::Instrumentation::install(&dir, selection) {
        Ok(installed) => Some(installed),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "the zero-code instrumentation could not be written; the loop runs uninstrumented");
            None
        }
    }
}
