//! The socket a supervised loop reports to: made in a private directory, read line by
//! line into the monitor's [`Intake`].
//!
//! A Unix socket's path holds at most [`MAX_SOCKET_PATH`] bytes. The directory goes
//! under the first place where that path fits and a private directory can be made and
//! listened in: `$XDG_RUNTIME_DIR`, the temporary directory (`$TMPDIR`), then the
//! short `/tmp`, `/dev/shm` and `/var/tmp`. Each place passed over is logged with the
//! reason; when none will do, the caller is told every reason.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use loopwatch::cleanup::ProcessId;
use loopwatch::protocol::MAX_LINE_BYTES;
use loopwatch::supervise::Intake;

/// The longest path a Unix socket can be bound at: `sun_path` holds 108 bytes, the
/// last a NUL.
pub(crate) const MAX_SOCKET_PATH: usize = 107;

/// Short places to fall back to, after `$XDG_RUNTIME_DIR` and the temporary directory.
const FALLBACK_BASES: [&str; 3] = ["/tmp", "/dev/shm", "/var/tmp"];

/// Most connections read at once (a loop and its worker processes); past it, new
/// connections are closed, logged.
const MAX_CONNECTIONS: usize = 256;

/// How long the loop's exit waits for its reports still in the socket to be read.
pub(crate) const READ_REMAINING_TIMEOUT: Duration = Duration::from_secs(5);

/// Makes the loop's socket and starts reading it; `None`, said loudly, when no socket
/// could be made anywhere.
pub(crate) fn open(
    identity: &loopwatch::RunIdentity,
    intake: &Arc<Intake>,
    readers: &Arc<Readers>,
) -> Option<SocketDir> {
    let (made, refused) = SocketDir::create(&candidate_bases(), &identity.owner.file_stem());
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

/// The places to try for the socket's directory, best first, each once.
pub(crate) fn candidate_bases() -> Vec<PathBuf> {
    let mut bases: Vec<PathBuf> = Vec::new();
    let preferred = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from);
    for base in preferred
        .into_iter()
        .chain([std::env::temp_dir()])
        .chain(FALLBACK_BASES.iter().map(PathBuf::from))
    {
        if !bases.contains(&base) {
            bases.push(base);
        }
    }
    bases
}

/// A place passed over, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) base: PathBuf,
    pub(crate) reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.base.display(), self.reason)
    }
}

/// The listening socket in its private directory; the directory is removed when
/// dropped.
#[derive(Debug)]
pub(crate) struct SocketDir {
    dir: PathBuf,
    listener: Option<UnixListener>,
}

impl SocketDir {
    /// Makes a 0700 directory named `name` under the first of `bases` where the
    /// socket's path fits and it can be listened on; every place passed over is in
    /// the answer, and all of them when none would do.
    pub(crate) fn create(bases: &[PathBuf], name: &str) -> (Option<SocketDir>, Vec<Refusal>) {
        let mut refused = Vec::new();
        for base in bases {
            match Self::create_in(base, name) {
                Ok(made) => return (Some(made), refused),
                Err(reason) => refused.push(Refusal {
                    base: base.clone(),
                    reason,
                }),
            }
        }
        (None, refused)
    }

    fn create_in(base: &Path, name: &str) -> Result<SocketDir, String> {
        let dir = base.join(name);
        let socket = dir.join("socket");
        let length = socket.as_os_str().len();
        if length > MAX_SOCKET_PATH {
            return Err(format!(
                "the socket's path would be {length} bytes, over the {MAX_SOCKET_PATH} a Unix socket allows"
            ));
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot make a private directory there: {e}"))?;
        // From here on, dropping it removes the directory.
        let mut made = SocketDir {
            dir,
            listener: None,
        };
        made.listener =
            Some(UnixListener::bind(&socket).map_err(|e| format!("cannot listen there: {e}"))?);
        Ok(made)
    }

    /// The run's private directory the socket is in.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The socket's path: what `LOOPWATCH_SOCKET` names.
    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.join("socket")
    }

    /// Reads every connection to the socket into `intake` on threads of its own,
    /// `readers` counting the open ones.
    pub(crate) fn serve(
        &mut self,
        intake: Arc<Intake>,
        readers: Arc<Readers>,
    ) -> std::io::Result<()> {
        let Some(listener) = self.listener.take() else {
            return Ok(());
        };
        std::thread::Builder::new()
            .name("loopwatch-socket".into())
            .spawn(move || serve_socket(listener, intake, readers))
            .map(drop)
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The process at the other end of `stream` (the one that connected), as the kernel
/// says (`SO_PEERCRED`), with its start time; `None` when it cannot be told or has
/// already exited.
pub(crate) fn sender(stream: &UnixStream) -> Option<ProcessId> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let credentials = getsockopt(stream, PeerCredentials)
        .inspect_err(
            |e| tracing::debug!(error = %e, "could not read a reporting connection's sender"),
        )
        .ok()?;
    ProcessId::running(u32::try_from(credentials.pid()).ok()?)
}

/// Reads one connection's lines into the intake until it closes, each as written by
/// the process that connected. A line longer than [`MAX_LINE_BYTES`] is skipped to
/// its newline and rejected, never buffered whole.
fn read_connection(stream: UnixStream, intake: &Intake) {
    let sender = sender(&stream);
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
                intake.handle_line_from(&line, sender);
            }
            line.clear();
        }
    }
    // A last line without its newline (the writer was cut off) is still read.
    if overlong > 0 {
        intake.reject_too_long(overlong);
    } else if !line.iter().all(u8::is_ascii_whitespace) {
        intake.handle_line_from(&line, sender);
    }
}

/// The reporting connections being read, so that the loop's exit waits until what it
/// wrote before exiting has been applied.
#[derive(Debug, Default)]
pub(crate) struct Readers {
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
    pub(crate) fn wait_until_read(&self, timeout: Duration) -> bool {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (open, _) = self
            .idle
            .wait_timeout_while(open, timeout, |open| *open > 0)
            .unwrap_or_else(|e| e.into_inner());
        *open == 0
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory whose own path is `length` bytes long (at least 2 more than
    /// `root`'s).
    fn deep_dir(root: &Path, length: usize) -> PathBuf {
        let mut dir = root.to_path_buf();
        loop {
            let remaining = length - dir.as_os_str().len();
            // Each part costs its length and a separator; never leave 1 byte over.
            let part = match remaining {
                0 => break,
                2..=61 => remaining - 1,
                62..=63 => 50,
                _ => 60,
            };
            dir.push("d".repeat(part));
        }
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_path_too_long_for_a_socket_falls_back_to_a_short_place() {
        let root = tempfile::tempdir().unwrap();
        let deep = deep_dir(root.path(), 131);
        let short = tempfile::tempdir_in("/tmp").unwrap();
        let name = "loopwatch-1-2";
        let (made, refused) = SocketDir::create(&[deep.clone(), short.path().to_path_buf()], name);
        let made = made.expect("the short place is used");
        assert_eq!(made.socket(), short.path().join(name).join("socket"));
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].base, deep);
        assert!(refused[0].reason.contains("over the 107"), "{}", refused[0]);
        assert!(
            !deep.join(name).exists(),
            "nothing made where it would not fit"
        );
        // A real socket, private.
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let dir = short.path().join(name);
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(std::fs::metadata(made.socket())
            .unwrap()
            .file_type()
            .is_socket());
        drop(made);
        assert!(!dir.exists(), "removed when dropped");
    }

    #[test]
    fn a_socket_path_of_exactly_the_limit_is_used() {
        let root = tempfile::tempdir_in("/tmp").unwrap();
        let name = "loopwatch-1-2";
        // <base>/<name>/socket at exactly 107 bytes.
        let base_length = MAX_SOCKET_PATH - name.len() - "/socket".len() - 1;
        let base = deep_dir(root.path(), base_length);
        assert_eq!(base.as_os_str().len(), base_length);
        let (made, refused) = SocketDir::create(std::slice::from_ref(&base), name);
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(made.unwrap().socket().as_os_str().len(), MAX_SOCKET_PATH);
    }

    #[test]
    fn unusable_places_are_each_refused_with_the_reason() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let missing = root.path().join("missing");
        let deep = deep_dir(root.path(), 140);
        let (made, refused) = SocketDir::create(&[file.clone(), missing.clone(), deep], "x");
        assert!(made.is_none());
        assert_eq!(refused.len(), 3, "{refused:?}");
        assert_eq!(refused[0].base, file);
        assert!(
            refused[0].reason.contains("private directory"),
            "{}",
            refused[0]
        );
        assert_eq!(refused[1].base, missing);
        assert!(refused[2].reason.contains("bytes"), "{}", refused[2]);
    }

    #[test]
    fn a_connections_sender_is_the_process_that_connected() {
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let path = dir.path().join("socket");
        let listener = UnixListener::bind(&path).unwrap();
        let _client = UnixStream::connect(&path).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let me = ProcessId::running(std::process::id()).unwrap();
        assert_eq!(sender(&accepted), Some(me));
    }

    #[test]
    fn the_short_places_are_always_tried_after_the_configured_ones() {
        let bases = candidate_bases();
        for fallback in FALLBACK_BASES {
            assert!(bases.contains(&PathBuf::from(fallback)), "{bases:?}");
        }
        let unique: std::collections::HashSet<&PathBuf> = bases.iter().collect();
        assert_eq!(unique.len(), bases.len(), "each place once: {bases:?}");
    }
}
