//! Stand-ins for local model servers on loopback: a vLLM or SGLang `/metrics` page,
//! Ollama's `/api/ps`, each the servers' own format (the pages in
//! `tests/data/model_servers/`, written after vLLM's `vllm/v1/metrics/loggers.py` and
//! `vllm/engine/metrics.py`, SGLang's `collector.py` and production metrics page, and
//! Ollama's `docs/api.md`). They are the fake of these tests: no model server runs
//! here (no GPU), and none fails on cue. What the stand-in answers can be changed
//! while it runs: another page, an HTTP error, garbage, no answer at all.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A page of `tests/data/model_servers/`.
pub fn page(name: &str) -> String {
    let path = super::repo_root()
        .join("tests/data/model_servers")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The vLLM page `name` with no request waiting and its KV cache at `kv` on every
/// engine: the server idle, its counters as they were.
pub fn idle_vllm_page(name: &str, kv: f64) -> String {
    page(name)
        .lines()
        .map(|line| {
            let value = |v: String| format!("{} {v}", line.rsplit_once(' ').unwrap().0);
            if line.starts_with("vllm:num_requests_waiting{") {
                value("0.0".into())
            } else if line.starts_with("vllm:kv_cache_usage_perc{")
                || line.starts_with("vllm:gpu_cache_usage_perc{")
            {
                value(kv.to_string())
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// What a stand-in answers.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 200 with this body (Prometheus text, or JSON for Ollama).
    Body(String),
    /// This HTTP status, with a short text body.
    Status(u16),
    /// 200 with these bytes as the body.
    Bytes(Vec<u8>),
    /// Bytes that are not HTTP at all, then the connection closed.
    NotHttp(Vec<u8>),
    /// No answer: the connection is held open until the stand-in stops.
    Hang,
}

/// A request held back: the next one to arrive once armed, answered (with what the
/// stand-in answered when it arrived) only once released.
#[derive(Debug, Default)]
struct Hold {
    /// The next request is to be held.
    armed: bool,
    /// A request is held now.
    holding: bool,
}

/// What the serving threads share.
#[derive(Debug, Default)]
struct Shared {
    hold: Mutex<Hold>,
    released: Condvar,
    /// Requests for the path that arrived.
    arrived: AtomicUsize,
    /// Requests for the path answered.
    answered: AtomicUsize,
}

/// A model server's stand-in on a loopback port; stopped when dropped.
pub struct StandIn {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
}

impl StandIn {
    /// Serves `answer` on `path` (404 elsewhere).
    pub fn start(path: &'static str, answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(answer));
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared::default());
        let (served, stopping, sharing) =
            (Arc::clone(&answer), Arc::clone(&stop), Arc::clone(&shared));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (served, stopping, sharing) = (
                    Arc::clone(&served),
                    Arc::clone(&stopping),
                    Arc::clone(&sharing),
                );
                std::thread::spawn(move || serve(stream, path, &served, &stopping, &sharing));
            }
        });
        StandIn {
            addr,
            answer,
            stop,
            shared,
        }
    }

    /// Holds the next request for the path back: it gets what the stand-in answers
    /// when it arrives, once [`StandIn::release`] is called.
    pub fn hold_next(&self) {
        self.shared.hold.lock().unwrap().armed = true;
    }

    /// Whether a request is held now.
    pub fn holding(&self) -> bool {
        self.shared.hold.lock().unwrap().holding
    }

    /// Lets the held request (if any) be answered.
    pub fn release(&self) {
        let mut hold = self.shared.hold.lock().unwrap();
        hold.armed = false;
        hold.holding = false;
        self.shared.released.notify_all();
    }

    /// Requests for the path that arrived so far.
    pub fn arrived(&self) -> usize {
        self.shared.arrived.load(Ordering::SeqCst)
    }

    /// Requests for the path answered so far.
    pub fn answered(&self) -> usize {
        self.shared.answered.load(Ordering::SeqCst)
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers `answer` from now on.
    pub fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.release();
        // Wakes the accepting thread, which then sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Answers the requests of one connection (kept alive, as loopwatch's client keeps
/// it), until it closes or the stand-in stops.
fn serve(
    mut stream: TcpStream,
    path: &str,
    answer: &Mutex<Answer>,
    stop: &AtomicBool,
    shared: &Shared,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = stream.set_nodelay(true);
    let mut buffer = Vec::new();
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
        buffer.drain(..end + 4);
        let target = head.split_whitespace().nth(1).unwrap_or("");
        let current = answer.lock().unwrap().clone();
        if target == path {
            shared.arrived.fetch_add(1, Ordering::SeqCst);
            let mut hold = shared.hold.lock().unwrap();
            if hold.armed {
                hold.armed = false;
                hold.holding = true;
                while hold.holding && !stop.load(Ordering::SeqCst) {
                    hold = shared.released.wait(hold).unwrap();
                }
            }
        }
        let (status, body): (u16, Vec<u8>) = if target != path {
            (404, b"not found\n".to_vec())
        } else {
            match current {
                Answer::Body(text) => (200, text.into_bytes()),
                Answer::Bytes(bytes) => (200, bytes),
                Answer::Status(status) => (status, format!("status {status}\n").into_bytes()),
                Answer::NotHttp(bytes) => {
                    let _ = stream.write_all(&bytes);
                    return;
                }
                Answer::Hang => {
                    while !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    return;
                }
            }
        };
        let content_type = if path == "/api/ps" {
            "application/json; charset=utf-8"
        } else {
            "text/plain; version=0.0.4; charset=utf-8"
        };
        // One write of head and body, so that no delayed acknowledgement holds the
        // answer back.
        let mut answer = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        answer.extend_from_slice(&body);
        if stream.write_all(&answer).is_err() {
            return;
        }
        if target == path {
            shared.answered.fetch_add(1, Ordering::SeqCst);
        }
    }
}
