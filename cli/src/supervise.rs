//! `loopwatch run -- <command>`: a loop in any language, supervised.
//!
//! The command runs as a child with `LOOPWATCH_SOCKET` (a Unix socket in a private
//! directory, [`socket`]), `LOOPWATCH_RUN_ID`, `LOOPWATCH_OWNER` (see
//! [`loopwatch::Monitor::identify`]), `LOOPWATCH_LABELS` and `LOOPWATCH_RESTARTS` in
//! its environment. What it writes to the socket (docs/protocol.md) feeds a
//! [`loopwatch::Monitor`] through its [`loopwatch::Intake`]; the monitor samples the
//! child's whole process tree, serves /metrics and the dashboard, evaluates the alerts
//! and sweeps orphans, exactly as for a Rust loop.
//!
//! The child runs in a process group of its own, with the terminal's foreground when
//! loopwatch has it ([`terminal`]), and loopwatch is the subreaper of everything below
//! it ([`family`]): signals to loopwatch reach the loop's whole process tree at once,
//! and so do SIGTERM and, after the grace period, SIGKILL when loopwatch ends it.
//!
//! When the child ends, its leftover processes are cleaned up. Under a restart policy
//! ([`RestartPolicy`]) or `--on-stall restart` it is started again after a backoff,
//! with the same run and iteration numbers that continue, once its processes and
//! containers are gone; otherwise LoopExited is raised if it failed without saying it
//! was done, the final files are written, and loopwatch exits with the child's status.
//! A loop still running `--exit-timeout` after it said it was done is terminated, and
//! the run counts as completed.

mod family;
mod socket;
mod terminal;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loopwatch::{AlertName, ExitReason, Intake, LoopExit, Monitor, MonitorBuilder};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};

use family::Family;
use socket::{Readers, SocketDir, READ_REMAINING_TIMEOUT};
use terminal::Terminal;

/// Environment variable naming the socket a supervised loop reports to.
pub const ENV_SOCKET: &str = "LOOPWATCH_SOCKET";
/// Environment variable carrying the container ownership labels (Contract 4) as a
/// JSON object, for the loop's `docker run --label` or docker-py's `labels=`.
pub const ENV_LABELS: &str = "LOOPWATCH_LABELS";

/// Environment variable telling the loop how many times it has been restarted (0 at
/// the first start), so that it can resume from its own checkpoint.
pub const ENV_RESTARTS: &str = "LOOPWATCH_RESTARTS";

/// The longest wait between two starts of a loop that keeps failing.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(300);

/// How often the supervisor looks at the monitor's verdicts (LoopStalled, `done`).
const WATCH_PERIOD: Duration = Duration::from_millis(200);

/// When a loop that ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Restart {
    /// Never (the default): the run ends with the loop.
    #[default]
    Never,
    /// After a non-zero or signalled exit without `done`.
    OnFailure,
    /// After any exit, except one the operator asked for and the end of a finished
    /// search (it said `done`, then exited 0).
    Always,
}

/// What to do with a loop once LoopStalled has fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OnStall {
    /// Nothing beyond the alert (the default).
    #[default]
    None,
    /// Terminate its process tree (SIGTERM, SIGKILL after the grace period).
    Kill,
    /// Terminate it and start it again, whatever the restart policy.
    Restart,
}

/// When and how fast a loop is restarted. How many restarts are allowed, and within
/// what window, are the thresholds `max_restarts` and `restart_window` (also read by
/// LoopCrashLooping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Which exits are followed by a restart.
    pub when: Restart,
    /// The first wait before a restart; it doubles with each restart in a row, up to
    /// [`MAX_RESTART_DELAY`].
    pub delay: Duration,
    /// A loop that ran this long before it ended is restarted after `delay` again.
    pub reset_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            when: Restart::Never,
            delay: Duration::from_secs(1),
            reset_after: Duration::from_secs(600),
        }
    }
}

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
    /// How long a child may keep running after it said it was done before it is
    /// terminated; `None` never.
    pub exit_timeout: Option<Duration>,
    /// The LLM metering proxy, when the loop's LLM calls are to be metered.
    pub llm_proxy: Option<LlmProxyOptions>,
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

/// Starts the metering proxy. A setting it cannot use (an upstream URL that does not
/// parse or is the proxy's own address, a proxy variable or `SSL_CERT_FILE` that
/// cannot be used) is an error, and the loop is not started; a port in use is said,
/// and the loop runs with its LLM calls unmetered.
fn start_llm_proxy(
    monitor: &Monitor,
    options: &LlmProxyOptions,
) -> Result<Option<loopwatch::llm::proxy::LlmProxy>, loopwatch::Error> {
    let mut config = loopwatch::llm::proxy::ProxyConfig::default()
        .upstreams(options.upstream.as_deref(), |key| std::env::var(key).ok())
        .with_request_usage(options.request_usage);
    if let Some(listen) = options.listen {
        config = config.with_listen(listen);
    }
    match loopwatch::llm::proxy::LlmProxy::start(monitor.llm_recorder(), config) {
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

/// The restarts within the window and the next backoff.
struct Restarts {
    policy: RestartPolicy,
    max: u64,
    window: Duration,
    recent: VecDeque<Instant>,
    next_delay: Duration,
    total: u64,
}

impl Restarts {
    fn new(policy: RestartPolicy, thresholds: &loopwatch::Thresholds) -> Self {
        Restarts {
            policy,
            max: thresholds.max_restarts(),
            window: thresholds.restart_window(),
            recent: VecDeque::new(),
            next_delay: policy.delay,
            total: 0,
        }
    }

    /// Whether this end of the loop calls for a restart: an operator's stop never
    /// does, a stall does under `--on-stall restart`, a loop terminated after `done`
    /// never does, a finished search (`done`, then exit 0) never does, and any other
    /// exit as the policy says.
    fn wanted(&self, exit: &LoopExit, on_stall: OnStall) -> bool {
        match exit.reason {
            ExitReason::Stopped | ExitReason::ExitTimeout => false,
            ExitReason::Stalled => on_stall == OnStall::Restart,
            _ => match self.policy.when {
                Restart::Never => false,
                Restart::OnFailure => exit.unexpected(),
                Restart::Always => !(exit.said_done && exit.code == Some(0)),
            },
        }
    }

    /// The wait before the next restart, or `None` when the restarts within the
    /// window have reached the limit. `ran_for` is how long the loop ran this time.
    fn next(&mut self, ran_for: Duration) -> Option<Duration> {
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= self.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() as u64 >= self.max {
            return None;
        }
        if ran_for >= self.policy.reset_after {
            self.next_delay = self.policy.delay;
        }
        let delay = self.next_delay;
        self.next_delay = (self.next_delay * 2).min(MAX_RESTART_DELAY);
        Some(delay)
    }

    /// A restart happens now.
    fn record(&mut self) {
        self.recent.push_back(Instant::now());
        self.total += 1;
    }
}

/// How one process of the loop ended.
struct ChildEnd {
    exit: LoopExit,
    ran_for: Duration,
}

/// Runs the command under a monitor and returns the exit status to leave with.
pub fn run(options: RunOptions) -> u8 {
    let Some((program, args)) = options.command.split_first() else {
        eprintln!("error: no command to run; usage: loopwatch run [flags] -- <command> [args...]");
        return 2;
    };
    let monitor = match options.monitor.clone().build() {
        Ok(monitor) => monitor,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let identity = monitor.identity().clone();
    let intake = Arc::new(monitor.intake());
    let readers = Arc::new(Readers::default());

    // The socket: without it the loop runs unreported, which is said, not fatal.
    let socket_dir = open_socket(&identity, &intake, &readers);
    if socket_dir.is_none() {
        monitor.loop_cannot_report();
    }
    // Orphans of the loop are re-parented to loopwatch, not to init: signalled with
    // the loop, and reaped here.
    family::become_subreaper();

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    // Handlers before the first spawn, so that no signal kills loopwatch and orphans
    // the child; kept for the whole run, backoff waits included.
    let signals = {
        let _entered = runtime.enter();
        OperatorSignals::install()
    };
    let Some(mut signals) = signals else {
        eprintln!("error: could not install signal handlers");
        drop(monitor.shutdown());
        return 2;
    };
    let llm_proxy = match options.llm_proxy.as_ref() {
        None => None,
        Some(proxy) => match start_llm_proxy(&monitor, proxy) {
            Ok(proxy) => proxy,
            Err(e) => {
                eprintln!("error: {e}");
                drop(monitor.shutdown());
                return 2;
            }
        },
    };
    let socket_path = socket_dir.as_ref().map(SocketDir::socket);
    let terminal = Terminal::controlling();
    let child = Child {
        monitor: &monitor,
        options: &options,
        program,
        args,
        socket: socket_path.as_deref(),
        llm_proxy: llm_proxy.as_ref(),
        terminal: terminal.as_ref(),
    };
    let mut restarts = Restarts::new(options.restart, monitor.thresholds());
    let mut last: Option<LoopExit> = None;
    let exit = loop {
        let end = runtime.block_on(child.supervise(&mut signals, restarts.total));
        let Some(mut end) = end else {
            // The command could not be started (again).
            match last {
                Some(exit) => break exit,
                None => {
                    drop(monitor.shutdown());
                    return 127;
                }
            }
        };
        // What the loop wrote before it exited may still be in the socket: apply it
        // all before the exit is judged.
        if !readers.wait_until_read(READ_REMAINING_TIMEOUT) {
            tracing::warn!("processes the loop left running still hold its socket open; going on without their further reports");
        }
        intake.close();
        end.exit.said_done |= monitor.said_done();
        if !restarts.wanted(&end.exit, options.on_stall) {
            if options.restart.when == Restart::Always
                && end.exit.said_done
                && end.exit.code == Some(0)
            {
                tracing::info!("the loop said it was done and exited 0: its search is finished; not restarting it");
            }
            break end.exit;
        }
        let Some(delay) = restarts.next(end.ran_for) else {
            tracing::error!(
                restarts = restarts.max,
                window = %humantime::format_duration(restarts.window),
                "the loop was restarted as often as allowed within the window; giving up"
            );
            break end.exit;
        };
        monitor.loop_restarting(end.exit);
        // Nothing of the ended loop may outlive it into the next start: its
        // processes, then (as none is left to start another) its containers.
        clean_up_after(&monitor, options.grace);
        let removed = monitor.clean_up_run_containers();
        if removed > 0 {
            tracing::info!(
                removed,
                "removed the containers of the loop before restarting it"
            );
        }
        tracing::info!(delay = %humantime::format_duration(delay), restarts = restarts.total + 1, "restarting the loop");
        if runtime.block_on(signals.wait(delay)) {
            tracing::info!("stopped during the wait before a restart; not restarting");
            break end.exit;
        }
        restarts.record();
        last = Some(end.exit);
    };
    monitor.loop_exited(exit);
    clean_up_after(&monitor, options.grace);
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

/// Makes the loop's socket and starts reading it; `None`, said loudly, when no socket
/// could be made anywhere.
fn open_socket(
    identity: &loopwatch::RunIdentity,
    intake: &Arc<Intake>,
    readers: &Arc<Readers>,
) -> Option<SocketDir> {
    let (made, refused) =
        SocketDir::create(&socket::candidate_bases(), &identity.owner.file_stem());
    let Some(mut dir) = made else {
        let tried: Vec<String> = refused.iter().map(ToString::to_string).collect();
        tracing::error!(
            tried = %tried.join("; "),
            "no socket could be made for the loop's reports: it runs unreported (no iterations, no outcomes), LoopStalled is not evaluated and --on-stall does nothing"
        );
        return None;
    };
    for refusal in &refused {
        tracing::warn!(place = %refusal.base.display(), reason = %refusal.reason, "the loop's socket cannot go here");
    }
    if !refused.is_empty() {
        tracing::info!(socket = %dir.socket().display(), "the loop's socket is in a fallback directory");
    }
    if let Err(e) = dir.serve(Arc::clone(intake), Arc::clone(readers)) {
        tracing::error!(error = %e, "could not start the socket reader: the loop runs unreported, LoopStalled is not evaluated and --on-stall does nothing");
        return None;
    }
    Some(dir)
}

/// Terminates what the loop left running: every process below loopwatch and every
/// process marked with the run's identity, SIGTERM, then SIGKILL after `grace`.
fn clean_up_after(monitor: &Monitor, grace: Duration) {
    let swept = monitor.clean_up_run_processes(grace);
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

/// SIGINT, SIGTERM and SIGHUP to loopwatch: the operator's; and SIGCHLD, on which
/// the zombies of orphans re-parented to loopwatch are reaped.
struct OperatorSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    child: tokio::signal::unix::Signal,
    /// The loop's direct child while it runs or waits to be reaped by its waiter:
    /// never reaped here.
    keep: Option<Pid>,
}

impl OperatorSignals {
    /// Installs the handlers (inside a runtime).
    fn install() -> Option<Self> {
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
    async fn wait(&mut self, period: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(period) => false,
            _ = self.next() => true,
        }
    }
}

/// How far away an unarmed deadline is.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// One start of the loop's command, and what watches it.
struct Child<'a> {
    monitor: &'a Monitor,
    options: &'a RunOptions,
    program: &'a OsString,
    args: &'a [OsString],
    socket: Option<&'a Path>,
    llm_proxy: Option<&'a loopwatch::llm::proxy::LlmProxy>,
    /// loopwatch's controlling terminal: the loop gets its foreground whenever
    /// loopwatch has it.
    terminal: Option<&'a Terminal>,
}

impl Child<'_> {
    /// The command with the run's environment, in a process group of its own.
    fn command(&self, restarts: u64) -> std::process::Command {
        let monitor = self.monitor;
        let mut command = std::process::Command::new(self.program);
        // The run's identity (LOOPWATCH_RUN_ID, LOOPWATCH_OWNER) marks the child and
        // all it starts, so that whatever of it escapes loopwatch's process tree is
        // still found and cleaned up.
        monitor
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
        if let Some(proxy) = self.llm_proxy {
            command
                .env("OPENAI_BASE_URL", proxy.openai_base_url())
                // The older name, still read by OpenEvolve, LiteLLM and LangChain.
                .env("OPENAI_API_BASE", proxy.openai_base_url())
                .env("ANTHROPIC_BASE_URL", proxy.base_url())
                .env(ENV_LLM_PROXY, proxy.base_url());
            // The loop reaches the proxy directly, whatever HTTP_PROXY says: a
            // network's proxy cannot reach this host's loopback.
            let ip = proxy.local_addr().ip().to_string();
            for name in ["NO_PROXY", "no_proxy"] {
                let value = match std::env::var(name) {
                    Ok(list) if !list.trim().is_empty() => format!("{list},{ip}"),
                    _ => ip.clone(),
                };
                command.env(name, value);
            }
        }
        command
    }

    /// Starts the child, passes signals on to its processes, acts on a stall or a
    /// hang after `done`, and waits for it; `None` when it could not be started.
    async fn supervise(&self, signals: &mut OperatorSignals, restarts: u64) -> Option<ChildEnd> {
        let (monitor, options) = (self.monitor, self.options);
        let mut child = match self.command(restarts).spawn() {
            Ok(child) => child,
            Err(e) => {
                eprintln!(
                    "error: could not start {}: {e}",
                    self.program.to_string_lossy()
                );
                return None;
            }
        };
        let started = Instant::now();
        let mut family = Family::new(child.id());
        let leader = family.leader();
        // Before anything awaits: the reaper must leave the child to its waiter.
        signals.keep = Some(leader);
        if let Some(terminal) = self.terminal {
            terminal.pass_on(leader);
        }
        monitor.loop_started(child.id());
        self.loop_ending(false);
        tracing::info!(pid = child.id(), restarts, command = %self.program.to_string_lossy(), "started the loop");

        let (exited_tx, mut exited) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = exited_tx.send(family::wait_for_exit(leader));
        });

        let mut signals_seen = 0u32;
        let mut ending: Option<ExitReason> = None;
        let mut killed = false;
        let mut done_since: Option<Instant> = None;
        let mut watch = tokio::time::interval(WATCH_PERIOD);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let kill_deadline = tokio::time::sleep(NEVER);
        tokio::pin!(kill_deadline);
        let waited = loop {
            let received = tokio::select! {
                waited = &mut exited => break waited,
                received = signals.next() => received,
                () = &mut kill_deadline => {
                    tracing::warn!(grace = ?options.grace, "the loop did not exit in time; killing its processes");
                    family.signal(Signal::SIGKILL);
                    killed = true;
                    kill_deadline.as_mut().reset(tokio::time::Instant::now() + NEVER);
                    continue;
                }
                _ = watch.tick() => {
                    if let Some(terminal) = self.terminal {
                        terminal.follow(leader);
                    }
                    if ending.is_none() {
                        ending = self.verdict(&mut done_since);
                        if ending.is_some() {
                            self.loop_ending(true);
                            family.signal(Signal::SIGTERM);
                            kill_deadline.as_mut().reset(tokio::time::Instant::now() + options.grace);
                        }
                    }
                    continue;
                }
            };
            ending = Some(ExitReason::Stopped);
            self.loop_ending(true);
            signals_seen += 1;
            if signals_seen > 1 {
                tracing::warn!(signal = %received, "second signal: killing the loop's processes");
                family.signal(Signal::SIGKILL);
                killed = true;
                continue;
            }
            tracing::info!(signal = %received, "forwarding the signal to the loop's processes and waiting for them to exit");
            family.signal(received);
            kill_deadline
                .as_mut()
                .reset(tokio::time::Instant::now() + options.grace);
        };
        if let Ok(Err(e)) | Err(e) = waited.map_err(|_| nix::errno::Errno::ECHILD) {
            tracing::error!(error = %e, "could not wait for the loop's exit without reaping it");
        }
        if ending.is_some() {
            // The grace period covers the whole tree, not only the direct child.
            wait_for_the_rest(&family, signals, kill_deadline.as_mut(), killed).await;
        }
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
            // The terminal's Ctrl-C (or Ctrl-\) reached the loop's group, which held
            // its foreground: the operator's stop.
            tracing::info!("the loop was interrupted from the terminal");
            ending = Some(ExitReason::Stopped);
        }
        Some(ChildEnd {
            exit: exit.with_reason(ending.unwrap_or(ExitReason::Exited)),
            ran_for: started.elapsed(),
        })
    }

    /// Tells the metering proxy whether loopwatch is ending the loop, so that the
    /// calls it cuts are booked as abandoned, not as the provider's timeouts.
    fn loop_ending(&self, ending: bool) {
        if let Some(proxy) = self.llm_proxy {
            proxy.loop_ending(ending);
        }
    }

    /// Whether loopwatch ends the child now, and why: LoopStalled fires under
    /// `--on-stall kill|restart` (never for a loop without a socket, which cannot
    /// report), or it said it was done `--exit-timeout` ago.
    fn verdict(&self, done_since: &mut Option<Instant>) -> Option<ExitReason> {
        let (monitor, options) = (self.monitor, self.options);
        if options.on_stall != OnStall::None
            && self.socket.is_some()
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
}

/// How often the rest of an ending loop's processes are looked for.
const REST_POLL: Duration = Duration::from_millis(20);

/// After the direct child of a loop being ended has exited: waits for the rest of its
/// processes until `kill_deadline` (what is left of the grace period), then kills
/// them; an operator's further signal kills them at once. Gives up
/// [`family::KILL_WAIT`] after the kill (the process sweep then tries again, and lists
/// what survives).
async fn wait_for_the_rest(
    family: &Family,
    signals: &mut OperatorSignals,
    mut kill_deadline: Pin<&mut tokio::time::Sleep>,
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

/// The exit of a child whose status could not be read: a failure.
fn unknown_exit(reason: &str) -> LoopExit {
    tracing::error!(reason, "could not wait for the loop");
    LoopExit::new(Some(1), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restarts(when: Restart) -> Restarts {
        Restarts::new(
            RestartPolicy {
                when,
                ..RestartPolicy::default()
            },
            &loopwatch::Thresholds::default(),
        )
    }

    fn exit(code: Option<i32>, signal: Option<i32>, said_done: bool) -> LoopExit {
        let mut exit = LoopExit::new(code, signal);
        exit.said_done = said_done;
        exit
    }

    #[test]
    fn a_finished_search_is_not_restarted_even_under_always() {
        let always = restarts(Restart::Always);
        let on_failure = restarts(Restart::OnFailure);
        let never = restarts(Restart::Never);
        let cases = [
            // (exit, always, on-failure, never)
            (exit(Some(0), None, true), false, false, false),
            (exit(Some(0), None, false), true, false, false),
            (exit(Some(3), None, false), true, true, false),
            (exit(None, Some(9), false), true, true, false),
            // Done, then a failure on the way out: not a clean end.
            (exit(Some(1), None, true), true, false, false),
        ];
        for (exit, under_always, under_on_failure, under_never) in cases {
            assert_eq!(
                always.wanted(&exit, OnStall::None),
                under_always,
                "{exit:?}"
            );
            assert_eq!(
                on_failure.wanted(&exit, OnStall::None),
                under_on_failure,
                "{exit:?}"
            );
            assert_eq!(never.wanted(&exit, OnStall::None), under_never, "{exit:?}");
        }
        let stopped = exit(None, Some(15), false).with_reason(ExitReason::Stopped);
        assert!(!always.wanted(&stopped, OnStall::Restart));
        let stalled = exit(None, Some(15), false).with_reason(ExitReason::Stalled);
        assert!(never.wanted(&stalled, OnStall::Restart));
        assert!(!always.wanted(&stalled, OnStall::Kill));
    }
}
