//! `loopwatch run -- <command>`: a loop in any language, supervised.
//!
//! The command runs as a child with `LOOPWATCH_SOCKET` (a Unix socket in a private
//! directory), `LOOPWATCH_RUN_ID`, `LOOPWATCH_OWNER` (see
//! [`loopwatch::Monitor::identify`]), `LOOPWATCH_LABELS` and `LOOPWATCH_RESTARTS` in
//! its environment. What it writes to the socket (docs/protocol.md) feeds a
//! [`loopwatch::Monitor`] through its [`loopwatch::Intake`]; the monitor samples the
//! child's whole process tree, serves /metrics and the dashboard, evaluates the alerts
//! and sweeps orphans, exactly as for a Rust loop. Signals to loopwatch are forwarded
//! to the child.
//!
//! When the child ends, its leftover processes are cleaned up. Under a restart policy
//! ([`RestartPolicy`]) or `--on-stall restart` it is started again after a backoff,
//! with the same run and iteration numbers that continue; otherwise LoopExited is
//! raised if it failed without saying it was done, the final files are written, and
//! loopwatch exits with the child's status. A loop still running `--exit-timeout` after
//! it said it was done is terminated, and the run counts as completed.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loopwatch::protocol::MAX_LINE_BYTES;
use loopwatch::{AlertName, ExitReason, Intake, LoopExit, Monitor, MonitorBuilder};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};

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

/// Most connections read at once (a loop and its worker processes); past it, new
/// connections are closed, logged.
const MAX_CONNECTIONS: usize = 256;

/// When a loop that ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Restart {
    /// Never (the default): the run ends with the loop.
    #[default]
    Never,
    /// After a non-zero or signalled exit without `done`.
    OnFailure,
    /// After any exit, except one the operator asked for.
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
        .upstreams(options.upstream.as_deref(), |key| std::env::var(key).ok());
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

/// A private directory holding the socket, removed when dropped.
struct SocketDir(PathBuf);

impl SocketDir {
    /// A new 0700 directory under `$XDG_RUNTIME_DIR`, or the temporary directory,
    /// named after this process ([`loopwatch::Owner::file_stem`]: short, as Unix socket
    /// paths are limited to about 100 bytes, and unique).
    fn create(identity: &loopwatch::RunIdentity) -> std::io::Result<Self> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(identity.owner.file_stem());
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(SocketDir(dir))
    }

    fn socket(&self) -> PathBuf {
        self.0.join("socket")
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads one connection's lines into the intake until it closes. A line longer than
/// [`MAX_LINE_BYTES`] is skipped to its newline and rejected, never buffered whole.
fn read_connection(stream: UnixStream, intake: &Intake) {
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut line: Vec<u8> = Vec::with_capacity(1024);
    let mut overlong = 0usize;
    loop {
        let chunk = match reader.fill_buf() {
            Ok([]) => break,
            Ok(chunk) => chunk,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!(error = %e, "a reporting connection failed");
                break;
            }
        };
        let (take, newline) = match chunk.iter().position(|b| *b == b'\n') {
            Some(at) => (at, true),
            None => (chunk.len(), false),
        };
        if overlong > 0 || line.len() + take > MAX_LINE_BYTES {
            overlong += line.len() + take;
            line.clear();
        } else {
            line.extend_from_slice(&chunk[..take]);
        }
        reader.consume(take + usize::from(newline));
        if newline {
            if overlong > 0 {
                intake.reject_too_long(overlong);
                overlong = 0;
            } else if !line.iter().all(u8::is_ascii_whitespace) {
                intake.handle_line(&line);
            }
            line.clear();
        }
    }
    // A last line without its newline (the writer was cut off) is still read.
    if overlong > 0 {
        intake.reject_too_long(overlong);
    } else if !line.iter().all(u8::is_ascii_whitespace) {
        intake.handle_line(&line);
    }
}

/// The reporting connections being read, so that the loop's exit waits until what it
/// wrote before exiting has been applied.
#[derive(Default)]
struct Readers {
    open: std::sync::Mutex<usize>,
    idle: std::sync::Condvar,
}

impl Readers {
    fn opened(&self) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }

    fn closed(&self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        *open = open.saturating_sub(1);
        if *open == 0 {
            self.idle.notify_all();
        }
    }

    /// Waits until every connection has been read to its end, `timeout` at most (a
    /// process the loop left running may hold one open); returns whether they were.
    fn wait_until_read(&self, timeout: Duration) -> bool {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (open, _) = self
            .idle
            .wait_timeout_while(open, timeout, |open| *open > 0)
            .unwrap_or_else(|e| e.into_inner());
        *open == 0
    }
}

/// How long the loop's exit waits for its reports still in the socket to be read.
const READ_REMAINING_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts connections on the socket, each read on a thread of its own.
fn serve_socket(listener: UnixListener, intake: Arc<Intake>, readers: Arc<Readers>) {
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a reporting connection failed");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(
                limit = MAX_CONNECTIONS,
                "too many reporting connections; closing a new one"
            );
            continue;
        }
        let intake = Arc::clone(&intake);
        let connections = Arc::clone(&open);
        let reader = Arc::clone(&readers);
        readers.opened();
        let spawned = std::thread::Builder::new()
            .name("loopwatch-conn".into())
            .spawn(move || {
                read_connection(stream, &intake);
                connections.fetch_sub(1, Ordering::SeqCst);
                reader.closed();
            });
        if let Err(e) = spawned {
            open.fetch_sub(1, Ordering::SeqCst);
            readers.closed();
            tracing::warn!(error = %e, "could not start a reader for a reporting connection");
        }
    }
}

/// Whether SIGINT most likely reached the child already: loopwatch is in the
/// terminal's foreground process group, which the terminal signals as a whole on ^C.
fn terminal_signals_the_child_too() -> bool {
    let stdin = std::io::stdin();
    matches!(nix::unistd::tcgetpgrp(&stdin), Ok(group) if group == nix::unistd::getpgrp())
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
    /// never does, and any other exit as the policy says.
    fn wanted(&self, end: &ChildEnd, on_stall: OnStall) -> bool {
        match end.exit.reason {
            ExitReason::Stopped | ExitReason::ExitTimeout => false,
            ExitReason::Stalled => on_stall == OnStall::Restart,
            _ => match self.policy.when {
                Restart::Never => false,
                Restart::OnFailure => end.exit.unexpected(),
                Restart::Always => true,
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
    let socket_dir = SocketDir::create(&identity)
        .map_err(|e| tracing::error!(error = %e, "could not create the socket directory; the loop's reports will be lost"))
        .ok();
    let socket_path = socket_dir.as_ref().and_then(|dir| {
        let path = dir.socket();
        match UnixListener::bind(&path) {
            Ok(listener) => {
                let intake = Arc::clone(&intake);
                let readers = Arc::clone(&readers);
                std::thread::Builder::new()
                    .name("loopwatch-socket".into())
                    .spawn(move || serve_socket(listener, intake, readers))
                    .map_err(|e| tracing::error!(error = %e, "could not start the socket reader"))
                    .ok()?;
                Some(path)
            }
            Err(e) => {
                tracing::error!(error = %e, path = %path.display(), "could not listen on the socket; the loop's reports will be lost");
                None
            }
        }
    });

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
    let child = Child {
        monitor: &monitor,
        options: &options,
        program,
        args,
        socket: socket_path.as_deref(),
        llm_proxy: llm_proxy.as_ref(),
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
        if !restarts.wanted(&end, options.on_stall) {
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
        clean_up_after(&monitor);
        tracing::info!(delay = %humantime::format_duration(delay), restarts = restarts.total + 1, "restarting the loop");
        if runtime.block_on(signals.wait(delay)) {
            tracing::info!("stopped during the wait before a restart; not restarting");
            break end.exit;
        }
        restarts.record();
        last = Some(end.exit);
    };
    monitor.loop_exited(exit);
    clean_up_after(&monitor);
    // Calls still in flight (a worker left running) end here, recorded as abandoned.
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

/// Terminates what the loop left running.
fn clean_up_after(monitor: &Monitor) {
    let swept = monitor.clean_up_run_processes();
    if !swept.orphans.is_empty() {
        tracing::info!(
            left_running = swept.orphans.len(),
            cleaned = swept.cleaned.len(),
            failed = swept.failed.len(),
            "processes of the loop were still running after it exited"
        );
    }
}

/// SIGINT, SIGTERM and SIGHUP to loopwatch: the operator's.
struct OperatorSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl OperatorSignals {
    /// Installs the handlers (inside a runtime).
    fn install() -> Option<Self> {
        Some(OperatorSignals {
            int: signal(SignalKind::interrupt()).ok()?,
            term: signal(SignalKind::terminate()).ok()?,
            hup: signal(SignalKind::hangup()).ok()?,
        })
    }

    /// The next signal.
    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.int.recv() => Signal::SIGINT,
            _ = self.term.recv() => Signal::SIGTERM,
            _ = self.hup.recv() => Signal::SIGHUP,
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

/// Sends `signal` to the child and every process below it.
fn signal_tree(root: Pid, signal: Signal) {
    // The tree is read before the first signal, so that no child is missed as its
    // parent dies.
    let tree = u32::try_from(root.as_raw()).map_or_else(|_| Vec::new(), loopwatch::process_tree);
    for pid in tree {
        let _ = kill(Pid::from_raw(pid as i32), signal);
    }
}

/// One start of the loop's command, and what watches it.
struct Child<'a> {
    monitor: &'a Monitor,
    options: &'a RunOptions,
    program: &'a OsString,
    args: &'a [OsString],
    socket: Option<&'a Path>,
    llm_proxy: Option<&'a loopwatch::llm::proxy::LlmProxy>,
}

impl Child<'_> {
    /// Starts the child, forwards signals to it, acts on a stall or a hang after
    /// `done`, and waits for it; `None` when it could not be started.
    async fn supervise(&self, signals: &mut OperatorSignals, restarts: u64) -> Option<ChildEnd> {
        let (monitor, options) = (self.monitor, self.options);
        let mut command = std::process::Command::new(self.program);
        // The run's identity (LOOPWATCH_RUN_ID, LOOPWATCH_OWNER) marks the child and
        // all it starts, so that whatever of it outlives the loop is found and cleaned
        // up.
        monitor
            .identify(&mut command)
            .args(self.args)
            .env(
                ENV_LABELS,
                serde_json::to_string(&monitor.labels()).unwrap_or_default(),
            )
            .env(ENV_RESTARTS, restarts.to_string());
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
        let mut child = match command.spawn() {
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
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        monitor.loop_started(child.id());
        tracing::info!(pid = child.id(), restarts, command = %self.program.to_string_lossy(), "started the loop");

        let (exited_tx, mut exited) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = exited_tx.send(child.wait());
        });

        let mut signals_seen = 0u32;
        let mut ending: Option<ExitReason> = None;
        let mut done_since: Option<Instant> = None;
        let mut watch = tokio::time::interval(WATCH_PERIOD);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let kill_deadline = tokio::time::sleep(Duration::MAX / 4);
        tokio::pin!(kill_deadline);
        let status = loop {
            let received = tokio::select! {
                status = &mut exited => break status,
                received = signals.next() => received,
                () = &mut kill_deadline => {
                    tracing::warn!(grace = ?options.grace, "the loop did not exit in time; killing it");
                    signal_tree(pid, Signal::SIGKILL);
                    kill_deadline.as_mut().reset(tokio::time::Instant::now() + Duration::MAX / 4);
                    continue;
                }
                _ = watch.tick() => {
                    if ending.is_none() {
                        ending = self.verdict(&mut done_since);
                        if ending.is_some() {
                            signal_tree(pid, Signal::SIGTERM);
                            kill_deadline.as_mut().reset(tokio::time::Instant::now() + options.grace);
                        }
                    }
                    continue;
                }
            };
            ending = Some(ExitReason::Stopped);
            signals_seen += 1;
            if signals_seen > 1 {
                tracing::warn!(signal = %received, "second signal: killing the loop");
                signal_tree(pid, Signal::SIGKILL);
                continue;
            }
            if received == Signal::SIGINT && terminal_signals_the_child_too() {
                tracing::info!("interrupted from the terminal, which signalled the loop too; waiting for it to exit");
            } else {
                tracing::info!(signal = %received, "forwarding the signal to the loop and waiting for it to exit");
                let _ = kill(pid, received);
            }
            kill_deadline
                .as_mut()
                .reset(tokio::time::Instant::now() + options.grace);
        };
        let exit = match status {
            Ok(Ok(status)) => LoopExit::new(status.code(), status.signal()),
            Ok(Err(e)) => unknown_exit(&e.to_string()),
            Err(_) => unknown_exit("the waiting thread ended"),
        };
        Some(ChildEnd {
            exit: exit.with_reason(ending.unwrap_or(ExitReason::Exited)),
            ran_for: started.elapsed(),
        })
    }

    /// Whether loopwatch ends the child now, and why: LoopStalled fires under
    /// `--on-stall kill|restart`, or it said it was done `--exit-timeout` ago.
    fn verdict(&self, done_since: &mut Option<Instant>) -> Option<ExitReason> {
        let (monitor, options) = (self.monitor, self.options);
        if options.on_stall != OnStall::None && monitor.is_firing(AlertName::LoopStalled) {
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

/// The exit of a child whose status could not be read: a failure.
fn unknown_exit(reason: &str) -> LoopExit {
    tracing::error!(reason, "could not wait for the loop");
    LoopExit::new(Some(1), None)
}
