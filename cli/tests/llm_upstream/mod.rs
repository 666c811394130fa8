//! A stand-in for an LLM provider on a loopback port: OpenAI's chat completions,
//! completions, Responses API and embeddings, and Anthropic's messages, plain and
//! streamed; the models, files and batches lists of both APIs, Anthropic's
//! `count_tokens` and legacy `complete`. It is the one fake of the LLM tests (no
//! provider can be made to fail on cue); the SDKs, the proxy and the monitor in front
//! of it are real. It speaks plain HTTP, or HTTPS with a certificate of the test's
//! own CA ([`Upstream::start_tls`]); `network` has the rest of the network a proxy
//! meets (a CA, a forward proxy).
//!
//! The request's `model` picks the behaviour, by its part before `/`:
//! `ok` (usage as below), `stream` (server-sent events with usage),
//! `stream-no-usage`, `rate-limited` (429, Retry-After: 2), `server-error` (500),
//! `down` (503), `slow` (first byte after 600 ms), `hang` (no answer for a minute),
//! `cut` (a stream that stops half-way), `garbage-usage` (a usage object of the wrong
//! types), `garbage` (bytes that are not HTTP); `huge` (a chat answer of
//! [`HUGE_ANSWER_BYTES`], more than any socket buffers, its usage at the end), `big`
//! (700 embeddings of 1536 dimensions, about 10 MiB, usage at the end), `html` (a 200
//! that is not JSON), `gzip` (a JSON answer compressed although `identity` was asked
//! for), `incomplete` and `failed` (Responses API streams ending in
//! `response.incomplete`, cut by `max_output_tokens`, and `response.failed`),
//! `stream-asked` (a chat stream that carries usage only when the request asked for
//! it with `stream_options.include_usage`, as OpenAI's does), `held` (answered as
//! `ok` once the test releases the upstream's [`Gate`]: the test sees how many
//! requests are open at once), `evolve` (a chat answer
//! whose program, in OpenEvolve's evolve block, returns a number that rises with each
//! such request: [`evolved_program`]), `countdown` (rate limits that count down
//! with each request of the model, then 429s: [`countdown`]).

pub mod network;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the upstream saw it, and what it answered.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// The request's method.
    pub method: String,
    /// The request's path (an absolute-form target, as a forward proxy sends it, is
    /// read for its path).
    pub path: String,
    /// The request target as it came.
    pub target: String,
    pub model: String,
    pub authorization: Option<String>,
    pub api_key: Option<String>,
    pub anthropic_version: Option<String>,
    pub proxy_authorization: Option<String>,
    pub accept_encoding: Option<String>,
    /// Every header name the request carried, lower-case.
    #[allow(dead_code)] // read by the roles test
    pub header_names: Vec<String>,
    pub body_len: usize,
    /// The request's `stream_options`, as it came.
    pub stream_options: Option<serde_json::Value>,
    /// The answer's body as sent (the events of a stream, concatenated).
    pub answered: String,
}

/// The `evolve` requests answered so far by every stand-in of the process, by model
/// (so that runs of different models beside each other each get every fifth program
/// raising).
static EVOLVE_REQUESTS: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());

/// The number of this `evolve` request of `model`, from 0.
fn next_evolve_request(model: &str) -> u64 {
    let mut requests = EVOLVE_REQUESTS.lock().unwrap();
    if let Some((_, n)) = requests.iter_mut().find(|(m, _)| m == model) {
        *n += 1;
        return *n;
    }
    requests.push((model.to_string(), 0));
    0
}

/// The program of the `n`th `evolve` answer, in OpenEvolve's evolve block: `f()`
/// returns `10 + n`, except every fifth (`n % 5 == 3`), which raises.
pub fn evolved_program(n: u64) -> String {
    let body = if n % 5 == 3 {
        format!("def f():\n    raise ValueError('bad program {n}')\n")
    } else {
        format!("def f():\n    return {}\n", 10 + n)
    };
    format!("# EVOLVE-BLOCK-START\n{body}# EVOLVE-BLOCK-END\n")
}

/// A loop script of the LLM tests, kept beside the stand-in.
pub fn script(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/llm_upstream")
        .join(name)
}

/// The usage each API answers with for `ok`.
pub const CHAT_USAGE: (u64, u64) = (11, 7);
pub const ANTHROPIC_USAGE: (u64, u64) = (13, 5);
pub const RESPONSES_USAGE: (u64, u64, u64) = (9, 4, 3);
pub const EMBEDDING_TOKENS: u64 = 6;
/// The usage a `huge` answer carries at its end, and its size.
pub const HUGE_USAGE: (u64, u64) = (31, 4_000_000);
pub const HUGE_ANSWER_BYTES: usize = 32 * 1024 * 1024;
/// The embeddings of a `big` answer, and their dimensions.
pub const BIG_EMBEDDINGS: u64 = 700;
pub const BIG_DIMENSIONS: usize = 1536;
/// The usage an `incomplete` Responses stream ends with.
pub const INCOMPLETE_USAGE: (u64, u64, u64) = (19, 64, 48);
/// The usage a `stream` answers with.
pub const STREAM_USAGE: (u64, u64) = (21, 3);
pub const ANTHROPIC_STREAM_USAGE: (u64, u64) = (17, 15);

pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Where `held` requests wait.
    #[allow(dead_code)] // held only by the budget tests
    pub gate: Arc<Gate>,
    tls: bool,
}

/// Holds the `held` requests until the test releases them, counting those open.
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<GateState>,
    changed: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    /// Requests held now.
    open: usize,
    /// The most held at once.
    most: usize,
    released: bool,
}

/// How long a `held` request waits at most: a test that never releases it fails
/// on its answer instead of hanging.
const HELD_AT_MOST: Duration = Duration::from_secs(60);

#[allow(dead_code)] // waited on and released only by the budget tests
impl Gate {
    /// Holds one request until released.
    fn pass(&self) {
        let mut state = self.state.lock().unwrap();
        state.open += 1;
        state.most = state.most.max(state.open);
        self.changed.notify_all();
        let (mut state, _) = self
            .changed
            .wait_timeout_while(state, HELD_AT_MOST, |s| !s.released)
            .unwrap();
        state.open -= 1;
        self.changed.notify_all();
    }

    /// Waits until `n` requests are held at once (false past `timeout`).
    pub fn wait_open(&self, n: usize, timeout: Duration) -> bool {
        let state = self.state.lock().unwrap();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |s| s.open < n)
            .unwrap();
        state.open >= n
    }

    /// The most requests held at once so far.
    pub fn most_open(&self) -> usize {
        self.state.lock().unwrap().most
    }

    /// Lets the held requests, and every later one, through.
    pub fn release(&self) {
        self.state.lock().unwrap().released = true;
        self.changed.notify_all();
    }
}

impl Upstream {
    pub fn start() -> Self {
        Self::listen(None)
    }

    /// An upstream speaking HTTPS with `certificate` (for `localhost` and
    /// 127.0.0.1, issued by the test's CA).
    pub fn start_tls(certificate: &network::ServerCertificate) -> Self {
        Self::listen(Some(certificate.server_config()))
    }

    fn listen(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let gate: Arc<Gate> = Arc::default();
        let record = Arc::clone(&seen);
        let held = Arc::clone(&gate);
        let is_tls = tls.is_some();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let record = Arc::clone(&record);
                let held = Arc::clone(&held);
                let tls = tls.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_nodelay(true);
                    match tls {
                        None => serve(BufReader::new(stream), &record, &held),
                        Some(config) => {
                            let Ok(connection) = rustls::ServerConnection::new(config) else {
                                return;
                            };
                            let tls = rustls::StreamOwned::new(connection, stream);
                            serve(BufReader::new(tls), &record, &held)
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            seen,
            gate,
            tls: is_tls,
        }
    }

    /// Its base URL on 127.0.0.1.
    pub fn url(&self) -> String {
        self.url_at("127.0.0.1")
    }

    /// Its base URL with `host` (`localhost`, `127.0.0.1`) for its address.
    pub fn url_at(&self, host: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{host}:{}", self.addr.port())
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A connection the upstream answers on: plain TCP or TLS over it.
pub trait Wire: Read + Write {
    /// Ends the connection abruptly, mid-answer.
    fn cut(&mut self);
}

impl Wire for TcpStream {
    fn cut(&mut self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
}

impl Wire for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn cut(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

fn serve<W: Wire>(mut reader: BufReader<W>, record: &Mutex<Vec<Seen>>, gate: &Gate) {
    // Keep-alive: requests one after another on the connection.
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut words = request_line.split_whitespace();
        let method = words.next().unwrap_or("").to_string();
        let target = words.next().unwrap_or("/").to_string();
        // An absolute-form target (from a forward proxy) names the same path.
        let path = match target.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("/", |at| &rest[at..]).to_string(),
            None => target.clone(),
        };
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end().to_string();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            read_chunked(&mut reader)
        } else {
            let len: usize = header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            body
        };
        let model = model_of(&body);
        let stream_options = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("stream_options").cloned());
        let mut seen = Seen {
            method: method.clone(),
            path: path.clone(),
            target,
            model: model.clone(),
            authorization: header("authorization"),
            api_key: header("x-api-key"),
            anthropic_version: header("anthropic-version"),
            proxy_authorization: header("proxy-authorization"),
            accept_encoding: header("accept-encoding"),
            header_names: headers.iter().map(|(k, _)| k.clone()).collect(),
            body_len: body.len(),
            stream_options,
            answered: String::new(),
        };
        let scenario = model.split('/').next().unwrap_or("").to_string();
        let keep = match listing(&method, &path, seen.anthropic_version.is_some()) {
            Some(body) => {
                seen.answered = body.clone();
                write_json(reader.get_mut(), "200 OK", "", &body)
            }
            None if scenario == "countdown" => {
                let earlier = record
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|s| s.model == model)
                    .count() as u64;
                countdown(reader.get_mut(), &path, &model, earlier, &mut seen)
            }
            None => {
                if scenario == "held" {
                    gate.pass();
                }
                answer(reader.get_mut(), &path, &model, &scenario, &mut seen)
            }
        };
        record.lock().unwrap().push(seen);
        if !keep {
            return;
        }
    }
}

pub fn read_chunked(reader: &mut impl BufRead) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        if reader.read_line(&mut size).unwrap_or(0) == 0 {
            return body;
        }
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        let mut chunk = vec![0; size + 2];
        if reader.read_exact(&mut chunk).is_err() {
            return body;
        }
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

fn model_of(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["model"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The model the answer names: the request's, with a dated suffix, as providers do.
fn answered_model(model: &str) -> String {
    format!("{model}-2025")
}

fn json_answer(path: &str, model: &str, usage_override: Option<&str>) -> String {
    let m = answered_model(model);
    let usage = |default: String| usage_override.map_or(default, str::to_string);
    match path {
        "/v1/messages" => format!(
            r#"{{"id":"msg_1","type":"message","role":"assistant","model":"{m}","content":[{{"type":"text","text":"def f(): return 1"}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{}}}"#,
            usage(format!(
                r#"{{"input_tokens":{},"output_tokens":{}}}"#,
                ANTHROPIC_USAGE.0, ANTHROPIC_USAGE.1
            ))
        ),
        "/v1/responses" => format!(
            r#"{{"id":"resp_1","object":"response","created_at":1,"status":"completed","model":"{m}","output":[{{"type":"message","id":"m1","status":"completed","role":"assistant","content":[{{"type":"output_text","text":"hi","annotations":[]}}]}}],"usage":{}}}"#,
            usage(format!(
                r#"{{"input_tokens":{},"input_tokens_details":{{"cached_tokens":{}}},"output_tokens":{},"output_tokens_details":{{"reasoning_tokens":0}},"total_tokens":{}}}"#,
                RESPONSES_USAGE.0,
                RESPONSES_USAGE.2,
                RESPONSES_USAGE.1,
                RESPONSES_USAGE.0 + RESPONSES_USAGE.1
            ))
        ),
        "/v1/embeddings" => format!(
            r#"{{"object":"list","data":[{{"object":"embedding","index":0,"embedding":[0.1,0.2]}}],"model":"{m}","usage":{}}}"#,
            usage(format!(
                r#"{{"prompt_tokens":{EMBEDDING_TOKENS},"total_tokens":{EMBEDDING_TOKENS}}}"#
            ))
        ),
        "/v1/completions" => format!(
            r#"{{"id":"cmpl-1","object":"text_completion","created":1,"model":"{m}","choices":[{{"text":"hi","index":0,"logprobs":null,"finish_reason":"stop"}}],"usage":{}}}"#,
            usage(format!(
                r#"{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{}}}"#,
                CHAT_USAGE.0,
                CHAT_USAGE.1,
                CHAT_USAGE.0 + CHAT_USAGE.1
            ))
        ),
        _ => format!(
            r#"{{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"{m}","choices":[{{"index":0,"message":{{"role":"assistant","content":"```python\ndef f():\n    return 1\n```"}},"finish_reason":"stop"}}],"usage":{}}}"#,
            usage(format!(
                r#"{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{}}}"#,
                CHAT_USAGE.0,
                CHAT_USAGE.1,
                CHAT_USAGE.0 + CHAT_USAGE.1
            ))
        ),
    }
}

/// The events of a streamed answer.
fn stream_events(path: &str, model: &str, with_usage: bool) -> Vec<String> {
    let m = answered_model(model);
    if path == "/v1/messages" {
        let (input, output) = ANTHROPIC_STREAM_USAGE;
        return vec![
            format!("event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"{m}\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{{\"input_tokens\":{input},\"output_tokens\":1}}}}}}\n\n"),
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".to_string(),
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hello\"}}\n\n".to_string(),
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n".to_string(),
            format!("event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{output}}}}}\n\n"),
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".to_string(),
        ];
    }
    let chunk = |delta: &str| {
        format!("data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"{m}\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":null}}]}}\n\n")
    };
    let mut events = vec![
        chunk(r#"{"role":"assistant","content":""}"#),
        chunk(r#"{"content":"hel"}"#),
        chunk(r#"{"content":"lo"}"#),
    ];
    if with_usage {
        let (input, output) = STREAM_USAGE;
        events.push(format!("data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"{m}\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{input},\"completion_tokens\":{output},\"total_tokens\":{}}}}}\n\n", input + output));
    }
    events.push("data: [DONE]\n\n".to_string());
    events
}

/// A plain chat answer of [`HUGE_ANSWER_BYTES`] (its text), usage at the end.
fn huge_answer(model: &str) -> String {
    let m = answered_model(model);
    let text = "x".repeat(HUGE_ANSWER_BYTES);
    let (input, output) = HUGE_USAGE;
    format!(
        r#"{{"id":"chatcmpl-h","object":"chat.completion","created":1,"model":"{m}","choices":[{{"index":0,"message":{{"role":"assistant","content":"{text}"}},"finish_reason":"length"}}],"usage":{{"prompt_tokens":{input},"completion_tokens":{output},"total_tokens":{}}}}}"#,
        input + output
    )
}

/// [`BIG_EMBEDDINGS`] embeddings of [`BIG_DIMENSIONS`], usage at the end, as OpenAI
/// orders the fields.
fn big_embeddings(model: &str) -> String {
    let m = answered_model(model);
    let vector = vec!["-0.012345678"; BIG_DIMENSIONS].join(",");
    let data: Vec<String> = (0..BIG_EMBEDDINGS)
        .map(|i| format!(r#"{{"object":"embedding","index":{i},"embedding":[{vector}]}}"#))
        .collect();
    format!(
        r#"{{"object":"list","data":[{}],"model":"{m}","usage":{{"prompt_tokens":{BIG_EMBEDDINGS},"total_tokens":{BIG_EMBEDDINGS}}}}}"#,
        data.join(",")
    )
}

/// A Responses API stream ending in `response.incomplete` (with usage) or
/// `response.failed` (a server error).
fn responses_events(model: &str, incomplete: bool) -> Vec<String> {
    let m = answered_model(model);
    let (input, output, reasoning) = INCOMPLETE_USAGE;
    let end = if incomplete {
        format!(
            r#"{{"type":"response.incomplete","sequence_number":3,"response":{{"id":"resp_1","object":"response","created_at":1,"status":"incomplete","incomplete_details":{{"reason":"max_output_tokens"}},"error":null,"model":"{m}","output":[],"usage":{{"input_tokens":{input},"input_tokens_details":{{"cached_tokens":0}},"output_tokens":{output},"output_tokens_details":{{"reasoning_tokens":{reasoning}}},"total_tokens":{}}}}}}}"#,
            input + output
        )
    } else {
        format!(
            r#"{{"type":"response.failed","sequence_number":3,"response":{{"id":"resp_1","object":"response","created_at":1,"status":"failed","error":{{"code":"server_error","message":"The model failed"}},"incomplete_details":null,"model":"{m}","output":[],"usage":null}}}}"#
        )
    };
    let end_name = if incomplete {
        "response.incomplete"
    } else {
        "response.failed"
    };
    vec![
        format!("event: response.created\ndata: {{\"type\":\"response.created\",\"sequence_number\":0,\"response\":{{\"id\":\"resp_1\",\"object\":\"response\",\"created_at\":1,\"status\":\"in_progress\",\"model\":\"{m}\",\"output\":[],\"usage\":null}}}}\n\n"),
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"item_id\":\"m1\",\"output_index\":0,\"content_index\":0,\"delta\":\"def f\"}\n\n".to_string(),
        format!("event: {end_name}\ndata: {end}\n\n"),
    ]
}

/// Writes a streamed answer's events, 20 ms apart.
fn write_events(writer: &mut impl Wire, events: &[String], seen: &mut Seen) -> bool {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";
    if writer.write_all(head.as_bytes()).is_err() {
        return false;
    }
    for event in events {
        std::thread::sleep(Duration::from_millis(20));
        seen.answered.push_str(event);
        if !write_chunk(writer, event) {
            return false;
        }
    }
    writer.write_all(b"0\r\n\r\n").is_ok()
}

/// `data` as a gzip member of stored (uncompressed) deflate blocks: a real gzip
/// stream, made without a compressor.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let blocks: Vec<&[u8]> = if data.is_empty() {
        vec![&[][..]]
    } else {
        data.chunks(65_535).collect()
    };
    for (i, block) in blocks.iter().enumerate() {
        out.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    out.extend_from_slice(&(!crc).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// The answers to the APIs' other requests (lists, token counts, Anthropic's legacy
/// completions, OpenAI's stored chat completions: a GET of its chat path), in the
/// shape of the API the request speaks (`anthropic`: it carried `anthropic-version`);
/// `None` for the metered paths.
fn listing(method: &str, path: &str, anthropic: bool) -> Option<String> {
    let path = path.split('?').next().unwrap_or(path);
    if method == "GET" && path == "/v1/chat/completions" && !anthropic {
        return Some(
            r#"{"object":"list","data":[],"first_id":null,"last_id":null,"has_more":false}"#
                .to_string(),
        );
    }
    Some(match (path, anthropic) {
        ("/v1/models", false) => {
            r#"{"object":"list","data":[{"id":"ok/chat","object":"model","created":1,"owned_by":"stand-in"}]}"#.to_string()
        }
        ("/v1/models", true) => {
            r#"{"data":[{"type":"model","id":"ok/messages","display_name":"Stand-in","created_at":"2025-01-01T00:00:00Z"}],"has_more":false,"first_id":"ok/messages","last_id":"ok/messages"}"#.to_string()
        }
        ("/v1/messages/count_tokens", _) => r#"{"input_tokens":42}"#.to_string(),
        ("/v1/complete", _) => {
            r#"{"type":"completion","id":"compl_1","completion":" hi","stop_reason":"stop_sequence","model":"ok/complete"}"#.to_string()
        }
        ("/v1/files", false) | ("/v1/batches", false) => {
            r#"{"object":"list","data":[],"first_id":null,"last_id":null,"has_more":false}"#.to_string()
        }
        ("/v1/files", true) | ("/v1/messages/batches", true) => {
            r#"{"data":[],"has_more":false,"first_id":null,"last_id":null}"#.to_string()
        }
        _ => return None,
    })
}

/// The rate limits a plain answer states, as each API writes them: plenty left.
pub const OPENAI_RATE_LIMITS: &str = "x-ratelimit-limit-requests: 10000\r\nx-ratelimit-remaining-requests: 9999\r\nx-ratelimit-reset-requests: 6ms\r\nx-ratelimit-limit-tokens: 2000000\r\nx-ratelimit-remaining-tokens: 1999000\r\nx-ratelimit-reset-tokens: 30ms\r\n";
pub const ANTHROPIC_RATE_LIMITS: &str = "anthropic-ratelimit-requests-limit: 4000\r\nanthropic-ratelimit-requests-remaining: 3999\r\nanthropic-ratelimit-requests-reset: 2099-01-01T00:00:00Z\r\nanthropic-ratelimit-input-tokens-limit: 400000\r\nanthropic-ratelimit-input-tokens-remaining: 399000\r\nanthropic-ratelimit-input-tokens-reset: 2099-01-01T00:00:00Z\r\n";

/// The rate-limit headers of a plain answer on `path`.
fn rate_limit_headers(path: &str) -> &'static str {
    if path == "/v1/messages" {
        ANTHROPIC_RATE_LIMITS
    } else {
        OPENAI_RATE_LIMITS
    }
}

/// The requests a `countdown` model may make in its window, and the tokens.
pub const COUNTDOWN_REQUESTS: u64 = 10;
pub const COUNTDOWN_TOKENS: u64 = 1000;
/// Each `countdown` request's tokens, as the limit counts them: its usage.
pub const COUNTDOWN_TOKENS_PER_CALL: u64 = CHAT_USAGE.0 + CHAT_USAGE.1;
/// The wait a `countdown` 429 asks for (`retry-after-ms`).
pub const COUNTDOWN_RETRY_MS: u64 = 2000;

/// `at` as RFC 3339 (UTC, whole seconds), as Anthropic writes its resets.
pub fn rfc3339(at: std::time::SystemTime) -> String {
    let secs = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// A provider whose rate limits count down: the `earlier`-th request of a
/// `countdown` model before this one leaves `COUNTDOWN_REQUESTS - earlier - 1`
/// requests and `COUNTDOWN_TOKENS_PER_CALL` fewer tokens, said in each API's headers
/// (OpenAI's with Go durations, Anthropic's with RFC 3339 times a minute ahead);
/// past the limit it answers 429, with `retry-after-ms` (and a longer `Retry-After`, which the SDKs read second).
fn countdown(
    writer: &mut impl Wire,
    path: &str,
    model: &str,
    earlier: u64,
    seen: &mut Seen,
) -> bool {
    let used = earlier + 1;
    let requests_left = COUNTDOWN_REQUESTS.saturating_sub(used);
    let tokens_left =
        COUNTDOWN_TOKENS.saturating_sub(COUNTDOWN_TOKENS_PER_CALL * used.min(COUNTDOWN_REQUESTS));
    let headers = if path == "/v1/messages" {
        let reset = rfc3339(std::time::SystemTime::now() + Duration::from_secs(60));
        format!(
            "anthropic-ratelimit-requests-limit: {COUNTDOWN_REQUESTS}\r\nanthropic-ratelimit-requests-remaining: {requests_left}\r\nanthropic-ratelimit-requests-reset: {reset}\r\nanthropic-ratelimit-tokens-limit: {COUNTDOWN_TOKENS}\r\nanthropic-ratelimit-tokens-remaining: {tokens_left}\r\nanthropic-ratelimit-tokens-reset: {reset}\r\n"
        )
    } else {
        format!(
            "x-ratelimit-limit-requests: {COUNTDOWN_REQUESTS}\r\nx-ratelimit-remaining-requests: {requests_left}\r\nx-ratelimit-reset-requests: 1m0s\r\nx-ratelimit-limit-tokens: {COUNTDOWN_TOKENS}\r\nx-ratelimit-remaining-tokens: {tokens_left}\r\nx-ratelimit-reset-tokens: 6m0s\r\n"
        )
    };
    if used > COUNTDOWN_REQUESTS {
        let body = r#"{"error":{"message":"Rate limit reached for requests","type":"requests","code":"rate_limit_exceeded"}}"#;
        seen.answered = body.to_string();
        // Only the waits, as many servers' 429s: the limits stated before still hold.
        let extra = format!("retry-after-ms: {COUNTDOWN_RETRY_MS}\r\nretry-after: 5\r\n");
        return write_json(writer, "429 Too Many Requests", &extra, body);
    }
    let body = json_answer(path, model, None);
    seen.answered = body.clone();
    write_json(writer, "200 OK", &headers, &body)
}

fn write_json(writer: &mut impl Write, status: &str, extra: &str, body: &str) -> bool {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n",
        body.len()
    );
    writer.write_all(head.as_bytes()).is_ok() && writer.write_all(body.as_bytes()).is_ok()
}

fn write_chunk(writer: &mut impl Write, data: &str) -> bool {
    writer
        .write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())
        .is_ok()
        && writer.flush().is_ok()
}

/// Answers one request; false when the connection is to be closed.
fn answer(
    writer: &mut impl Wire,
    path: &str,
    model: &str,
    scenario: &str,
    seen: &mut Seen,
) -> bool {
    match scenario {
        "rate-limited" => {
            let body = r#"{"error":{"message":"Rate limit reached","type":"rate_limit_error","code":"rate_limit_exceeded"}}"#;
            seen.answered = body.to_string();
            write_json(writer, "429 Too Many Requests", "retry-after: 2\r\n", body)
        }
        "server-error" => {
            let body = r#"{"error":{"message":"internal","type":"server_error"}}"#;
            seen.answered = body.to_string();
            write_json(writer, "500 Internal Server Error", "", body)
        }
        "down" => {
            let body = r#"{"error":{"message":"overloaded","type":"overloaded_error"}}"#;
            seen.answered = body.to_string();
            write_json(writer, "503 Service Unavailable", "", body)
        }
        "hang" => {
            std::thread::sleep(Duration::from_secs(60));
            false
        }
        "garbage" => {
            let _ = writer.write_all(b"GARBAGE\x00\xff not http at all\r\n\r\n");
            false
        }
        "incomplete" | "failed" => {
            let events = responses_events(model, scenario == "incomplete");
            write_events(writer, &events, seen)
        }
        "huge" => {
            let body = huge_answer(model);
            seen.answered = format!("{} bytes", body.len());
            write_json(writer, "200 OK", "", &body)
        }
        "big" => {
            let body = big_embeddings(model);
            seen.answered = format!("{} bytes", body.len());
            write_json(writer, "200 OK", "", &body)
        }
        "html" => {
            let body = "<html><body>maintenance</body></html>";
            seen.answered = body.to_string();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            writer.write_all(head.as_bytes()).is_ok() && writer.write_all(body.as_bytes()).is_ok()
        }
        "gzip" => {
            let json = json_answer(path, model, None);
            seen.answered = json.clone();
            let body = gzip(json.as_bytes());
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            writer.write_all(head.as_bytes()).is_ok() && writer.write_all(&body).is_ok()
        }
        "stream-asked" => {
            let asked = seen
                .stream_options
                .as_ref()
                .and_then(|o| o.get("include_usage"))
                == Some(&serde_json::Value::Bool(true));
            let events = stream_events(path, model, asked);
            write_events(writer, &events, seen)
        }
        "stream" | "stream-no-usage" | "cut" => {
            let events = stream_events(path, model, scenario == "stream");
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";
            if writer.write_all(head.as_bytes()).is_err() {
                return false;
            }
            let upto = if scenario == "cut" { 2 } else { events.len() };
            for event in &events[..upto] {
                std::thread::sleep(Duration::from_millis(20));
                seen.answered.push_str(event);
                if !write_chunk(writer, event) {
                    return false;
                }
            }
            if scenario == "cut" {
                // Gone mid-stream: no closing event, no last chunk.
                writer.cut();
                return false;
            }
            writer.write_all(b"0\r\n\r\n").is_ok()
        }
        "evolve" => {
            let n = next_evolve_request(model);
            let content = format!("```python\n{}```", evolved_program(n));
            let answer = serde_json::json!({
                "id": format!("chatcmpl-evolve-{n}"),
                "object": "chat.completion",
                "created": 1,
                "model": answered_model(model),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": CHAT_USAGE.0, "completion_tokens": CHAT_USAGE.1,
                          "total_tokens": CHAT_USAGE.0 + CHAT_USAGE.1},
            });
            let body = answer.to_string();
            seen.answered = body.clone();
            write_json(writer, "200 OK", "", &body)
        }
        _ => {
            if scenario == "slow" {
                std::thread::sleep(Duration::from_millis(600));
            }
            let usage = (scenario == "garbage-usage")
                .then_some(r#"{"prompt_tokens":"many","completion_tokens":-1}"#);
            let body = json_answer(path, model, usage);
            seen.answered = body.clone();
            write_json(writer, "200 OK", rate_limit_headers(path), &body)
        }
    }
}
