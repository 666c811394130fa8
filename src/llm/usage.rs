//! Reading what an LLM answer says about itself — the model that answered and the
//! tokens it counted — from the bytes passing through, without holding them back.
//!
//! A plain JSON answer is copied aside (up to [`MAX_COPIED_BODY`]) and read when it
//! ends. A streamed answer (server-sent events) is read event by event as it passes:
//! OpenAI's last chunk carries `usage` (with `stream_options.include_usage`), the
//! Responses API's `response.completed` event carries the response's, and Anthropic's
//! `message_start` and `message_delta` carry the input and the running output counts.
//! A stream that ends without its closing event (`data: [DONE]`, `message_stop`,
//! `response.completed`) was cut off.
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

/// The most of a plain (not streamed) answer copied aside to read its usage; the
/// rest passes through unread.
pub const MAX_COPIED_BODY: usize = 8 * 1024 * 1024;

/// The longest server-sent-event line read; longer ones (a huge content delta) pass
/// through unread.
pub const MAX_EVENT_LINE: usize = 1024 * 1024;

/// What an answer said about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Usage {
    /// The model that answered.
    pub response_model: Option<String>,
    /// Input tokens, cached ones included.
    pub input_tokens: Option<u64>,
    /// Output tokens.
    pub output_tokens: Option<u64>,
    /// Input tokens read from the provider's cache.
    pub cached_input_tokens: Option<u64>,
    /// Whether the answer ended as it should: a plain answer that parsed, a stream
    /// with its closing event.
    pub complete: bool,
    /// Whether a stream carried an error event.
    pub stream_error: bool,
    /// Whether a usage object was present but could not be read.
    pub malformed: bool,
}

/// Reads an answer's usage from its bytes as they pass.
#[derive(Debug)]
pub struct UsageReader {
    streaming: bool,
    /// A plain answer's bytes, or a stream's current line.
    buffer: Vec<u8>,
    /// The current stream line is too long and is being skipped to its end.
    skipping: bool,
    /// A plain answer longer than [`MAX_COPIED_BODY`].
    overflowed: bool,
    usage: Usage,
}

impl UsageReader {
    /// A reader for a streamed (server-sent events) or a plain JSON answer.
    pub fn new(streaming: bool) -> Self {
        UsageReader {
            streaming,
            buffer: Vec::new(),
            skipping: false,
            overflowed: false,
            usage: Usage::default(),
        }
    }

    /// Reads the next bytes of the answer.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        if !self.streaming {
            let room = MAX_COPIED_BODY.saturating_sub(self.buffer.len());
            if bytes.len() > room {
                self.overflowed = true;
            }
            self.buffer
                .extend_from_slice(&bytes[..bytes.len().min(room)]);
            return;
        }
        while !bytes.is_empty() {
            let (line, rest, ended) = match bytes.iter().position(|b| *b == b'\n') {
                Some(at) => (&bytes[..at], &bytes[at + 1..], true),
                None => (bytes, &[][..], false),
            };
            if !self.skipping {
                if self.buffer.len() + line.len() > MAX_EVENT_LINE {
                    self.skipping = true;
                    self.buffer.clear();
                } else {
                    self.buffer.extend_from_slice(line);
                }
            }
            if ended {
                if !self.skipping {
                    let line = std::mem::take(&mut self.buffer);
                    self.event_line(&line);
                    self.buffer = line;
                    self.buffer.clear();
                }
                self.skipping = false;
            }
            bytes = rest;
        }
    }

    /// The usage, once the answer has ended.
    pub fn finish(mut self) -> Usage {
        if self.streaming {
            if !self.skipping && !self.buffer.is_empty() {
                let line = std::mem::take(&mut self.buffer);
                self.event_line(&line);
            }
        } else if !self.overflowed {
            match serde_json::from_slice::<Value>(&self.buffer) {
                Ok(value) => {
                    self.usage.complete = true;
                    read_json(&value, &mut self.usage);
                }
                Err(_) => self.usage.malformed = true,
            }
        }
        self.usage
    }

    /// One line of a stream: a `data:` line's JSON is read; other fields are skipped.
    fn event_line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.strip_prefix(b" ").unwrap_or(data);
        if data == b"[DONE]" {
            self.usage.complete = true;
            return;
        }
        let Ok(value) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        match value.get("type").and_then(Value::as_str) {
            Some("message_stop" | "response.completed") => self.usage.complete = true,
            Some("error" | "response.failed") => self.usage.stream_error = true,
            _ => {}
        }
        read_json(&value, &mut self.usage);
    }
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
    let nested_cached = |key: &str| {
        fields
            .get(key)
            .and_then(|d| d.get("cached_tokens"))
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
        let anthropic_extra = cache_read.unwrap_or(0) + cache_write.unwrap_or(0);
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
        .or_else(|| nested_cached("prompt_tokens_details"))
        .or_else(|| nested_cached("input_tokens_details"));
    if let Some(cached) = cached {
        usage.cached_input_tokens = Some(cached);
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
        assert!(garbage.malformed && !garbage.complete);
        let bad_usage =
            read(r#"{"model":"m","usage":{"prompt_tokens":"many","completion_tokens":-1}}"#);
        assert!(bad_usage.malformed);
        assert_eq!(bad_usage.input_tokens, None);
        let not_an_object = read(r#"{"model":"m","usage":[1,2]}"#);
        assert!(not_an_object.malformed);
    }

    #[test]
    fn overlong_lines_and_bodies_are_skipped_not_kept() {
        let mut reader = UsageReader::new(true);
        let long = vec![b'x'; MAX_EVENT_LINE + 10];
        reader.feed(b"data: ");
        reader.feed(&long);
        reader.feed(b"\ndata: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n");
        assert!(reader.buffer.capacity() <= MAX_EVENT_LINE + 64 * 1024);
        assert_eq!(reader.finish().input_tokens, Some(1));

        let mut plain = UsageReader::new(false);
        plain.feed(&vec![b' '; MAX_COPIED_BODY + 1]);
        assert!(plain.buffer.len() <= MAX_COPIED_BODY);
        assert!(!plain.finish().complete);
    }
}
