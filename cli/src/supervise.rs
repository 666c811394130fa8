//! `loopwatch run -- <command>`: a loop in any language, supervised.
//!
//! The command runs as a child with `LOOPWATCH_SOCKET` (a Unix socket in a private
//! directory), `LOOPWATCH_RUN_ID`, `LOOPWATCH_OWNER` (see
//! [`loopwatch::Monitor::identify`]) and `LOOPWATCH_LABELS` in its environment. What it writes to the socket (docs/protocol.md) feeds a
//! [`loopwatch::Monitor`] through its [`loopwatch::Intake`]; the monitor samples the
//! child's whole process tree, serves /metrics and the dashboard, evaluates the alerts
//! and sweeps orphans, exactly as for a Rust loop. Signals to loopwatch are forwarded
//! to the child; when it exits, LoopExited is raised if it failed without saying it
//! was done, its leftover processes are cleaned up, the final files are written, and
//! loopwatch exits with the child's status.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use loopwatch::protocol::MAX_LINE_BYTES;
use loopwatch::{Intake, LoopExit, Monitor, MonitorBuilder};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};

/// Environment variable naming the socket a supervised loop reports to.
pub const ENV_SOCKET: &str = "LOOPWATCH_SOCKET";
/// Environment variable carrying the container ownership labels (Contract 4) as a
/// JSON object, for the loop's `docker run --label` or docker-py's `labels=`.
pub const ENV_LABELS: &str = "LOOPWATCH_LABELS";

/// Most connections read at once (a loop and its worker processes); past it, new
/// connections are closed, logged.
const MAX_CONNECTIONS: usize = 256;

/// How `loopwatch run` runs its command.
#[derive(Debug)]
pub struct RunOptions {
    /// The monitor's settings (listen address, output directory, Alertmanager …).
    pub monitor: MonitorBuilder,
    /// How long to keep serving /metrics after the child exits, so Prometheus scrapes
    /// the final values.
    pub linger: Duration,
    /// How long a child may take to exit after a forwarded signal before it is killed.
    pub grace: Duration,
    /// The command and its arguments.
    pub command: Vec<OsString>,
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
    let exit = runtime.block_on(supervise(
        &monitor,
        &options,
        program,
        args,
        socket_path.as_deref(),
    ));
    let Some(exit) = exit else {
        drop(monitor.shutdown());
        return 127;
    };
    // What the loop wrote before it exited may still be in the socket: apply it all
    // before the run is judged and written down.
    if !readers.wait_until_read(READ_REMAINING_TIMEOUT) {
        tracing::warn!("processes the loop left running still hold its socket open; closing the run without their further reports");
    }
    intake.close();
    monitor.loop_exited(exit);
    let swept = monitor.clean_up_run_processes();
    if !swept.orphans.is_empty() {
        tracing::info!(
            left_running = swept.orphans.len(),
            cleaned = swept.cleaned.len(),
            failed = swept.failed.len(),
            "processes of the loop were still running after it exited"
        );
    }
    if !options.linger.is_zero() {
        tracing::info!(
            seconds = options.linger.as_secs_f64(),
            "the loop has exited; serving its final metrics a little longer"
        );
        runtime.block_on(linger(options.linger));
    }
    let report = monitor.shutdown();
    if let Some(files) = &report.files {
        tracing::info!(?files, "final export written");
    }
    drop(socket_dir);
    // Statuses above 255 do not exist on Unix; keep the low byte as a shell would.
    (exit.shell_status() & 0xff) as u8
}

/// Waits out the linger period, cut short by a signal.
async fn linger(period: Duration) {
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tokio::time::sleep(period).await;
        return;
    };
    tokio::select! {
        _ = tokio::time::sleep(period) => {}
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

/// Starts the child, forwards signals to it and waits for it; `None` when it could
/// not be started.
async fn supervise(
    monitor: &Monitor,
    options: &RunOptions,
    program: &OsString,
    args: &[OsString],
    socket: Option<&Path>,
) -> Option<LoopExit> {
    // Handlers first, so that no signal between the spawn and here kills loopwatch
    // and orphans the child.
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        eprintln!("error: could not install signal handlers");
        return None;
    };
    let mut command = std::process::Command::new(program);
    // The run's identity (LOOPWATCH_RUN_ID, LOOPWATCH_OWNER) marks the child and all it
    // starts, so that whatever of it outlives the loop is found and cleaned up.
    monitor.identify(&mut command).args(args).env(
        ENV_LABELS,
        serde_json::to_string(&monitor.labels()).unwrap_or_default(),
    );
    match socket {
        Some(path) => command.env(ENV_SOCKET, path),
        None => command.env_remove(ENV_SOCKET),
    };
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("error: could not start {}: {e}", program.to_string_lossy());
            return None;
        }
    };
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    monitor.watch_process_tree(child.id());
    tracing::info!(pid = child.id(), command = %program.to_string_lossy(), "started the loop");

    let (exited_tx, mut exited) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = exited_tx.send(child.wait());
    });

    let mut signals_seen = 0u32;
    let kill_deadline = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(kill_deadline);
    let status = loop {
        let received = tokio::select! {
            status = &mut exited => break status,
            _ = int.recv() => Signal::SIGINT,
            _ = term.recv() => Signal::SIGTERM,
            _ = hup.recv() => Signal::SIGHUP,
            () = &mut kill_deadline => {
                tracing::warn!(grace = ?options.grace, "the loop did not exit in time after the signal; killing it");
                let _ = kill(pid, Signal::SIGKILL);
                kill_deadline.as_mut().reset(tokio::time::Instant::now() + Duration::MAX / 4);
                continue;
            }
        };
        signals_seen += 1;
        if signals_seen > 1 {
            tracing::warn!(signal = %received, "second signal: killing the loop");
            let _ = kill(pid, Signal::SIGKILL);
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
    let status = match status {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Some(unknown_exit(&e.to_string())),
        Err(_) => return Some(unknown_exit("the waiting thread ended")),
    };
    Some(LoopExit::new(status.code(), status.signal()))
}

/// The exit of a child whose status could not be read: a failure.
fn unknown_exit(reason: &str) -> LoopExit {
    tracing::error!(reason, "could not wait for the loop");
    LoopExit::new(Some(1), None)
}
