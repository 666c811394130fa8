//! Reading what an LLM answer says about itself — the model that answered, the
//! tokens it counted, whether it failed — from the bytes passing through, without
//! holding them back and without keeping them.
//!
//! A plain JSON answer is scanned as it passes for its top-level `model`, `usage`,
//! `status` and `error` (an embeddings batch of 10 MiB is read in a few kilobytes of
//! memory). A streamed answer (server-sent events) is read event by event the same
//! way: OpenAI's last chunk carries `usage` (with `stream_options.include_usage`),
//! the Responses API's `response.completed` and `response.incomplete` events carry
//! the response's, and Anthropic's `message_start` and `message_delta` carry the
//! input and the running output counts. A stream that ends without its closing event
//! (`data: [DONE]`, `message_stop`, `response.completed`, `response.incomplete`) was
//! cut off; one that carries an error event (`response.failed`, Anthropic's `error`,
//! an `error` object) failed, with the provider's error type. A compressed answer is
//! not read ([`UsageReader::unreadable`]).
//!
//! ```
//! use loopwatch::llm::usage::UsageReader;
//!
//! let mut reader = UsageReader::new(true);
//! reader.feed(b"data: {\"model\":\"gpt-4o-2024-08-06\",\"choices\":[]}\n\n");
//! reader.feed(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":5}}\n\ndata: [DONE]\n\n");
//! let usage = reader.finish();
//! assert_eq!((usage.input_tokens, usage.output_tokens), (Some(12), Some(5)));
//! assert_eq!(usage.response_model.as_deref(), Some("gpt-4o-2024-08-06"));
//! assert!(usage.complete);
//! ```

use serde_json::Value;

use super::scan::JsonScan;

/// The longest provider error type kept (`overloaded_error`, `server_error`).
const MAX_ERROR_TYPE: usize = 64;

/// What an answer said about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Usage {
    /// The model that answered.
    pub response_model: Option<String>,
    /// Input tokens, cached ones (read and written) included.
    pub input_tokens: Option<u64>,
    /// Output tokens, reasoning ones included.
    pub output_tokens: Option<u64>,
    /// Input tokens read from the provider's cache.
    pub cached_input_tokens: Option<u64>,
    /// Input tokens written to the provider's cache.
    pub cache_write_input_tokens: Option<u64>,
    /// Reasoning tokens.
    pub reasoning_tokens: Option<u64>,
    /// Whether the answer ended as it should: a plain answer that is a whole JSON
    /// object, a stream with its closing event.
    pub complete: bool,
    /// The error type the answer carried although its status was a success (a
    /// stream's `response.failed` or `error` event, a plain answer's `error` object
    /// or failed status): the provider's own (`server_error`, `overloaded_error`),
    /// or `error` when it named none.
    pub failure: Option<String>,
    /// Whether a usage object was present but could not be read.
    pub malformed: bool,
}

/// How the answer is read.
#[derive(Debug)]
enum Reading {
    /// A plain JSON answer.
    Plain(JsonScan),
    /// Server-sent events.
    Stream(Events),
    /// Bytes that cannot be read (compressed).
    Unreadable,
}

/// Where a stream's reading is: the start of the current line (to tell its field),
/// and the scan of a `data:` line's JSON.
#[derive(Debug, Default)]
struct Events {
    /// The first bytes of the current line, until its field is known.
    start: Vec<u8>,
    /// The line is a `data:` line whose JSON is being scanned.
    data: Option<JsonScan>,
    /// The line is one whose rest is stepped over (another field, or data that is
    /// not JSON).
    skipping: bool,
}

/// Bytes of a line's start looked at to tell its field: `data: [DONE]`.
const LINE_START: usize = 16;

/// Reads an answer's usage from its bytes as they pass.
#[derive(Debug)]
pub struct UsageReader {
    reading: Reading,
    usage: Usage,
}

impl UsageReader {
    /// A reader for a streamed (server-sent events) or a plain JSON answer.
    pub fn new(streaming: bool) -> Self {
        UsageReader {
            reading: if streaming {
                Reading::Stream(Events::default())
            } else {
                Reading::Plain(JsonScan::default())
            },
            usage: Usage::default(),
        }
    }

    /// A reader of an answer whose bytes cannot be read (compressed): it finds no
    /// usage.
    pub fn unreadable() -> Self {
        UsageReader {
            reading: Reading::Unreadable,
            usage: Usage::default(),
        }
    }

    /// Whether the answer is streamed.
    pub fn streaming(&self) -> bool {
        matches!(self.reading, Reading::Stream(_))
    }

    /// Whether it scans a plain JSON answer (one worth reading to its end for its
    /// usage).
    pub fn scanning_plain(&self) -> bool {
        matches!(self.reading, Reading::Plain(_))
    }

    /// Whether all the answer says has been read: a plain answer's object closed, a
    /// stream's closing event passed.
    pub fn complete(&self) -> bool {
        match &self.reading {
            Reading::Plain(scan) => scan.closed(),
            Reading::Stream(_) => self.usage.complete,
            Reading::Unreadable => false,
        }
    }

    /// Reads the next bytes of the answer.
    pub fn feed(&mut self, bytes: &[u8]) {
        match &mut self.reading {
            Reading::Plain(scan) => scan.feed(bytes),
            Reading::Stream(events) => {
                let mut bytes = bytes;
                while !bytes.is_empty() {
                    let (line, rest, ended) = match memchr::memchr(b'\n', bytes) {
                        Some(at) => (&bytes[..at], &bytes[at + 1..], true),
                        None => (bytes, &[][..], false),
                    };
                    events.line_bytes(line);
                    if ended {
                        if let Some(value) = events.end_line(&mut self.usage) {
                            event(&value, &mut self.usage);
                        }
                    }
                    bytes = rest;
                }
            }
            Reading::Unreadable => {}
        }
    }

    /// The usage, once the answer has ended (or been left).
    pub fn finish(mut self) -> Usage {
        match self.reading {
            Reading::Plain(scan) => {
                if let Some(value) = scan.finish() {
                    self.usage.complete = true;
                    read_json(&value, &mut self.usage);
                    if let Some(kind) = plain_failure(&value) {
                        self.usage.failure = Some(kind);
                    }
                }
            }
            Reading::Stream(mut events) => {
                // A last line without its newline.
                if let Some(value) = events.end_line(&mut self.usage) {
                    event(&value, &mut self.usage);
                }
            }
            Reading::Unreadable => {}
        }
        self.usage
    }
}

impl Events {
    /// More bytes of the current line.
    fn line_bytes(&mut self, bytes: &[u8]) {
        if self.skipping || bytes.is_empty() {
            return;
        }
        if let Some(scan) = self.data.as_mut() {
            scan.feed(bytes);
            if scan.not_an_object() {
                self.data = None;
                self.skipping = true;
            }
            return;
        }
        let room = LINE_START - self.start.len();
        let (head, tail) = bytes.split_at(bytes.len().min(room));
        self.start.extend_from_slice(head);
        let Some(data) = self.start.strip_prefix(b"data:") else {
            // Another field (`event:`, `id:`, a comment), or not yet known.
            if !b"data:".starts_with(&self.start[..self.start.len().min(5)]) {
                self.skipping = true;
            }
            return;
        };
        let data = data.strip_prefix(b" ").unwrap_or(data);
        // `[DONE]` is told at the line's end; JSON is scanned from its first byte.
        if data.first().is_some_and(|b| *b != b'[') || !tail.is_empty() {
            let mut scan = JsonScan::default();
            scan.feed(data);
            scan.feed(tail);
            self.start.clear();
            if scan.not_an_object() {
                self.skipping = true;
            } else {
                self.data = Some(scan);
            }
        }
    }

    /// The current line ended: the event it carried, if it was JSON; `[DONE]` marks
    /// the stream complete.
    fn end_line(&mut self, usage: &mut Usage) -> Option<Value> {
        let start = std::mem::take(&mut self.start);
        let scan = self.data.take();
        self.skipping = false;
        if let Some(data) = start.strip_prefix(b"data:") {
            let data = data.strip_prefix(b" ").unwrap_or(data);
            let data = data.strip_suffix(b"\r").unwrap_or(data);
            if data == b"[DONE]" {
                usage.complete = true;
                return None;
            }
            if !data.is_empty() {
                // A short line not yet handed to a scan.
                let mut scan = JsonScan::default();
                scan.feed(data);
                return scan.finish();
            }
        }
        scan.and_then(JsonScan::finish)
    }
}

/// One event of a stream: its closing or failing type, and its model and usage.
fn event(value: &Value, usage: &mut Usage) {
    match value.get("type").and_then(Value::as_str) {
        Some("message_stop" | "response.completed" | "response.incomplete") => {
            usage.complete = true;
        }
        Some("response.failed") => {
            usage.failure = Some(error_type(
                value.get("response").and_then(|r| r.get("error")),
            ));
        }
        Some("error") => {
            // Anthropic: `error.type`; the Responses API: `code` beside the type.
            let named = value.get("error").or(Some(value));
            usage.failure = Some(error_type(named));
        }
        _ => {
            if let Some(error) = value.get("error").filter(|e| e.is_object()) {
                usage.failure = Some(error_type(Some(error)));
            }
        }
    }
    read_json(value, usage);
}

/// A plain answer's failure despite its success status: an `error` object, or a
/// Responses API answer whose status is `failed`.
fn plain_failure(value: &Value) -> Option<String> {
    let error = value.get("error").filter(|e| e.is_object());
    let failed = value.get("status").and_then(Value::as_str) == Some("failed");
    (error.is_some() || failed).then(|| error_type(error))
}

/// The provider's name for an error: its `type`, else its `code`; `error` without.
fn error_type(error: Option<&Value>) -> String {
    let named = |key: &str| {
        error
            .and_then(|e| e.get(key))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty() && *t != "error")
    };
    named("type")
        .or_else(|| named("code"))
        .unwrap_or("error")
        .chars()
        .take(MAX_ERROR_TYPE)
        .collect()
}

/// Reads a model and a usage object from an answer or one of its events: at the top,
/// or under `message` (Anthropic's `message_start`) or `response` (the Responses API).
fn read_json(value: &Value, usage: &mut Usage) {
    for holder in [Some(value), value.get("message"), value.get("response")]
        .into_iter()
        .flatten()
    {
        if let Some(model) = holder.get("model").and_then(Value::as_str) {
            if !model.is_empty() {
                usage.response_model = Some(model.to_string());
            }
        }
        match holder.get("usage") {
            None | Some(Value::Null) => {}
            Some(Value::Object(fields)) => read_usage(fields, usage),
            Some(_) => usage.malformed = true,
        }
    }
}

/// A token count: a non-negative whole number; anything else is malformed.
fn count(fields: &serde_json::Map<String, Value>, key: &str, malformed: &mut bool) -> Option<u64> {
    match fields.get(key) {
        None | Some(Value::Null) => None,
        Some(value) => {
            let n = value.as_u64();
            if n.is_none() {
                *malformed = true;
            }
            n
        }
    }
}

/// The counts of one usage object, in either vocabulary; a count present replaces
/// the one read before (Anthropic's running output count).
fn read_usage(fields: &serde_json::Map<String, Value>, usage: &mut Usage) {
    let mut malformed = false;
    let nested = |holder: &str, key: &str| {
        fields
            .get(holder)
            .and_then(|d| d.get(key))
            .and_then(Value::as_u64)
    };
    // OpenAI chat, completions and embeddings.
    let prompt = count(fields, "prompt_tokens", &mut malformed);
    let completion = count(fields, "completion_tokens", &mut malformed);
    // The Responses API and Anthropic.
    let input = count(fields, "input_tokens", &mut malformed);
    let output = count(fields, "output_tokens", &mut malformed);
    // Anthropic counts cache reads and writes apart from input_tokens.
    let cache_read = count(fields, "cache_read_input_tokens", &mut malformed);
    let cache_write = count(fields, "cache_creation_input_tokens", &mut malformed);
    if let Some(prompt) = prompt {
        usage.input_tokens = Some(prompt);
    }
    if let Some(input) = input {
        let anthropic_extra = cache_read
            .unwrap_or(0)
            .saturating_add(cache_write.unwrap_or(0));
        usage.input_tokens = Some(input.saturating_add(anthropic_extra));
    }
    if let Some(output) = completion.or(output) {
        usage.output_tokens = Some(output);
    }
    if prompt.is_some() && completion.is_none() && output.is_none() {
        // Embeddings: input only.
        usage.output_tokens.get_or_insert(0);
    }
    let cached = cache_read
        .or_else(|| nested("prompt_tokens_details", "cached_tokens"))
        .or_else(|| nested("input_tokens_details", "cached_tokens"));
    if let Some(cached) = cached {
        usage.cached_input_tokens = Some(cached);
    }
    if let Some(written) = cache_write {
        usage.cache_write_input_tokens = Some(written);
    }
    let reasoning = nested("completion_tokens_details", "reasoning_tokens")
        .or_else(|| nested("output_tokens_details", "reasoning_tokens"));
    if let Some(reasoning) = reasoning {
        usage.reasoning_tokens = Some(reasoning);
    }
    usage.malformed |= malformed;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(chunks: &[&[u8]]) -> Usage {
        let mut reader = UsageReader::new(true);
        for chunk in chunks {
            reader.feed(chunk);
        }
        reader.finish()
    }

    #[test]
    fn an_anthropic_stream_gives_input_from_its_start_and_output_from_its_last_delta() {
        let usage = stream(&[
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-20250514\",\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":100,\"output_tokens\":1}}}\n\n",
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"hi\"}}\n\n",
            b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":",
            b"15}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ]);
        assert_eq!(usage.input_tokens, Some(125));
        assert_eq!(usage.cached_input_tokens, Some(100));
        assert_eq!(usage.output_tokens, Some(15));
        assert_eq!(
            usage.response_model.as_deref(),
            Some("claude-sonnet-4-20250514")
        );
        assert!(usage.complete);
    }

    #[test]
    fn a_responses_stream_reads_its_completed_event() {
        let usage = stream(&[
            b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"model\":\"gpt-4.1\",\"usage\":null}}\n\n",
            b"event: response.completed\r\ndata: {\"type\":\"response.completed\",\"response\":{\"model\":\"gpt-4.1\",\"usage\":{\"input_tokens\":9,\"input_tokens_details\":{\"cached_tokens\":4},\"output_tokens\":3}}}\r\n\r\n",
        ]);
        assert_eq!(
            (
                usage.input_tokens,
                usage.output_tokens,
                usage.cached_input_tokens
            ),
            (Some(9), Some(3), Some(4))
        );
        assert!(usage.complete);
    }

    #[test]
    fn a_stream_without_its_closing_event_is_cut_off() {
        let usage = stream(&[b"data: {\"model\":\"m\",\"choices\":[{\"delta\":{}}]}\n\n"]);
        assert!(!usage.complete);
        assert_eq!(usage.input_tokens, None);
    }

    #[test]
    fn plain_answers_of_every_api_are_read() {
        let read = |body: &str| {
            let mut reader = UsageReader::new(false);
            reader.feed(body.as_bytes());
            reader.finish()
        };
        let chat = read(
            r#"{"model":"gpt-4o-mini","usage":{"prompt_tokens":10,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":8}}}"#,
        );
        assert_eq!(
            (
                chat.input_tokens,
                chat.output_tokens,
                chat.cached_input_tokens
            ),
            (Some(10), Some(2), Some(8))
        );
        let embeddings = read(
            r#"{"model":"text-embedding-3-small","usage":{"prompt_tokens":7,"total_tokens":7}}"#,
        );
        assert_eq!(
            (embeddings.input_tokens, embeddings.output_tokens),
            (Some(7), Some(0))
        );
        let garbage = read("<html>bad gateway</html>");
        assert!(!garbage.complete && garbage.input_tokens.is_none());
        let bad_usage =
            read(r#"{"model":"m","usage":{"prompt_tokens":"many","completion_tokens":-1}}"#);
        assert!(bad_usage.malformed);
        assert_eq!(bad_usage.input_tokens, None);
        let not_an_object = read(r#"{"model":"m","usage":[1,2]}"#);
        assert!(not_an_object.malformed);
    }

    #[test]
    fn answers_of_any_size_are_read_without_keeping_them() {
        // A stream event far over any line bound: a Responses API completion echoing
        // a long text.
        let mut reader = UsageReader::new(true);
        reader.feed(b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"output\":[{\"text\":\"");
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..64 {
            reader.feed(&chunk);
        }
        reader.feed(b"\"}],\"model\":\"gpt-4.1\",\"usage\":{\"input_tokens\":3,\"output_tokens\":4194304}}}\n\n");
        let usage = reader.finish();
        assert!(usage.complete);
        assert_eq!(usage.output_tokens, Some(4_194_304));

        let mut plain = UsageReader::new(false);
        plain.feed(b"{\"data\":[");
        let floats = vec!["0.25"; 256 * 1024].join(",");
        for _ in 0..10 {
            plain.feed(floats.as_bytes());
            plain.feed(b",");
        }
        plain.feed(b"1],\"model\":\"e\",\"usage\":{\"prompt_tokens\":700,\"total_tokens\":700}}");
        assert!(plain.complete());
        let usage = plain.finish();
        assert_eq!(
            (usage.input_tokens, usage.output_tokens),
            (Some(700), Some(0))
        );
    }

    #[test]
    fn incomplete_responses_end_their_stream_and_failed_ones_carry_their_type() {
        let incomplete = stream(&[
            b"data: {\"type\":\"response.created\",\"response\":{\"model\":\"gpt-4.1\",\"usage\":null}}\n\n",
            b"data: {\"type\":\"response.incomplete\",\"response\":{\"status\":\"incomplete\",\"incomplete_details\":{\"reason\":\"max_output_tokens\"},\"model\":\"gpt-4.1\",\"usage\":{\"input_tokens\":9,\"output_tokens\":16,\"output_tokens_details\":{\"reasoning_tokens\":12}}}}\n\n",
        ]);
        assert!(incomplete.complete);
        assert_eq!(incomplete.failure, None);
        assert_eq!(
            (incomplete.output_tokens, incomplete.reasoning_tokens),
            (Some(16), Some(12))
        );
        let failed = stream(&[
            b"data: {\"type\":\"response.failed\",\"response\":{\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"boom\"},\"usage\":null}}\n\n",
        ]);
        assert_eq!(failed.failure.as_deref(), Some("server_error"));
        let overloaded = stream(&[
            b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        ]);
        assert_eq!(overloaded.failure.as_deref(), Some("overloaded_error"));
        let chat =
            stream(&[b"data: {\"error\":{\"message\":\"x\",\"type\":\"server_error\"}}\n\n"]);
        assert_eq!(chat.failure.as_deref(), Some("server_error"));
    }

    #[test]
    fn anthropic_cache_writes_are_counted_apart() {
        let mut reader = UsageReader::new(false);
        reader.feed(br#"{"type":"message","model":"claude-sonnet-4-20250514","content":[],"usage":{"input_tokens":10,"cache_creation_input_tokens":300,"cache_read_input_tokens":200,"output_tokens":5}}"#);
        let usage = reader.finish();
        assert_eq!(usage.input_tokens, Some(510));
        assert_eq!(usage.cached_input_tokens, Some(200));
        assert_eq!(usage.cache_write_input_tokens, Some(300));
    }

    #[test]
    fn what_cannot_be_read_is_neither_usage_nor_a_failure() {
        let mut html = UsageReader::new(false);
        html.feed(b"<html>ok</html>");
        assert!(!html.complete());
        let usage = html.finish();
        assert_eq!((usage.input_tokens, usage.failure), (None, None));
        let mut gzip = UsageReader::unreadable();
        gzip.feed(b"\x1f\x8b\x08\x00");
        assert_eq!(gzip.finish(), Usage::default());
        // A stream line of data that is not JSON is stepped over.
        let odd = stream(&[b"data: hello\n\n: comment\nid: 7\ndata: [DONE]\n\n"]);
        assert!(odd.complete);
    }
}
