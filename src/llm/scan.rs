//! A JSON object read as its bytes pass, keeping only a few of its fields: the
//! values of chosen keys of the top-level object and of chosen objects inside it
//! (`response`, `message`), each up to [`MAX_CAPTURED_VALUE`] bytes. Everything else
//! — an answer's text, a batch of embeddings — is stepped over and never kept, so an
//! answer of any size is read in bounded memory.
//!
//! The scan finds where values start and end (strings, escapes, nesting); it does not
//! check everything a full parser would. What it keeps is parsed by `serde_json`, and
//! it reports whether the object closed.

use serde_json::{Map, Value};

/// The most bytes kept of one value (a `usage` object, a model name, an error); a
/// longer value is dropped, not cut.
pub(crate) const MAX_CAPTURED_VALUE: usize = 64 * 1024;

/// The keys whose values are kept, at the top level and inside [`NESTED`].
const KEPT: [&str; 6] = ["model", "usage", "status", "error", "type", "code"];

/// The top-level keys whose object values are read for [`KEPT`] keys in turn: the
/// Responses API's events carry the response under `response`, Anthropic's
/// `message_start` the message under `message`.
const NESTED: [&str; 2] = ["response", "message"];

/// The longest key compared with [`KEPT`] and [`NESTED`]; longer keys are neither.
const MAX_KEY: usize = 16;

/// Where the scan is in an object it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Before a key, or the object's end.
    Key,
    /// After a key, before its colon.
    Colon,
    /// After a colon, before the value.
    Value,
    /// Inside a number, `true`, `false` or `null`.
    Scalar,
    /// After a value, before a comma or the object's end.
    Next,
}

/// An object the scan reads key by key: the top-level one, or one of [`NESTED`].
#[derive(Debug)]
struct Frame {
    /// `None` at the top level, else the key it is the value of.
    parent: Option<&'static str>,
    at: At,
    key: Vec<u8>,
}

/// How far the scan has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    /// Before the first `{`.
    #[default]
    Before,
    /// Inside the object.
    Inside,
    /// The object closed.
    Done,
    /// The bytes are not a JSON object.
    NotObject,
}

/// Bytes of the chunk being scanned: the next position of each byte the scan stops
/// at, found once and reused until passed, so a chunk is searched in one pass
/// whatever its mix of strings and nesting.
struct Marks<'a> {
    bytes: &'a [u8],
    quote: Option<usize>,
    backslash: Option<usize>,
    square: Option<usize>,
    curly: Option<usize>,
}

impl<'a> Marks<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Marks {
            bytes,
            quote: None,
            backslash: None,
            square: None,
            curly: None,
        }
    }

    /// The first position at or after `from` of a byte in the set, searched again
    /// only once `from` has passed the one found before; the length when there is
    /// none.
    fn next(&mut self, from: usize, which: Mark) -> usize {
        let (cached, find): (&mut Option<usize>, Find) = match which {
            Mark::Quote => (&mut self.quote, |b| memchr::memchr(b'"', b)),
            Mark::Backslash => (&mut self.backslash, |b| memchr::memchr(b'\\', b)),
            Mark::Square => (&mut self.square, |b| memchr::memchr2(b'[', b']', b)),
            Mark::Curly => (&mut self.curly, |b| memchr::memchr2(b'{', b'}', b)),
        };
        match *cached {
            Some(at) if at >= from => at,
            _ => {
                let at = find(&self.bytes[from..]).map_or(self.bytes.len(), |at| from + at);
                *cached = Some(at);
                at
            }
        }
    }
}

/// Finds the first byte of a set.
type Find = fn(&[u8]) -> Option<usize>;

#[derive(Clone, Copy)]
enum Mark {
    Quote,
    Backslash,
    Square,
    Curly,
}

/// Scans one JSON object, keeping the values of [`KEPT`] keys.
#[derive(Debug, Default)]
pub(crate) struct JsonScan {
    phase: Phase,
    /// Objects read key by key, outermost first (at most two).
    frames: Vec<Frame>,
    /// Depth inside a value stepped over (an array, an object not read).
    skipped: usize,
    in_string: bool,
    /// The string being read is a key of the innermost frame.
    in_key: bool,
    /// The last byte was a backslash inside a string.
    escaped: bool,
    /// The value being kept.
    keeping: Option<Kept>,
    kept: Vec<Kept>,
}

/// A value kept: its key, the key of the object it is in (`None` at the top level),
/// and its bytes (`None` once they passed [`MAX_CAPTURED_VALUE`]).
#[derive(Debug)]
struct Kept {
    parent: Option<&'static str>,
    key: &'static str,
    bytes: Option<Vec<u8>>,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

impl JsonScan {
    /// Whether the object closed.
    pub(crate) fn closed(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Whether the bytes so far began something other than an object.
    pub(crate) fn not_an_object(&self) -> bool {
        self.phase == Phase::NotObject
    }

    /// Reads the next bytes.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        let mut marks = Marks::new(bytes);
        let mut i = 0;
        while i < bytes.len() {
            match self.phase {
                Phase::Done | Phase::NotObject => return,
                Phase::Before => {
                    match bytes[i] {
                        // Whitespace, and a UTF-8 byte-order mark.
                        b if is_space(b) || matches!(b, 0xEF | 0xBB | 0xBF) => {}
                        b'{' => {
                            self.phase = Phase::Inside;
                            self.frames.push(Frame {
                                parent: None,
                                at: At::Key,
                                key: Vec::new(),
                            });
                        }
                        _ => self.phase = Phase::NotObject,
                    }
                    i += 1;
                }
                Phase::Inside if self.escaped => {
                    self.keep(&bytes[i..=i]);
                    self.escaped = false;
                    i += 1;
                }
                Phase::Inside if self.in_string => {
                    let end = marks
                        .next(i, Mark::Quote)
                        .min(marks.next(i, Mark::Backslash));
                    if end == bytes.len() {
                        self.string_bytes(&bytes[i..]);
                        i = end;
                        continue;
                    }
                    self.string_bytes(&bytes[i..end]);
                    if bytes[end] == b'\\' {
                        if self.in_key {
                            // An escaped key is none of the names looked for.
                            self.string_bytes(&[0xFF]);
                        }
                        self.keep(b"\\");
                        self.escaped = true;
                    } else {
                        self.end_string();
                    }
                    i = end + 1;
                }
                Phase::Inside if self.skipped > 0 => {
                    let end = marks
                        .next(i, Mark::Quote)
                        .min(marks.next(i, Mark::Square))
                        .min(marks.next(i, Mark::Curly));
                    let stop = (end + 1).min(bytes.len());
                    self.keep(&bytes[i..stop]);
                    if end < bytes.len() {
                        match bytes[end] {
                            b'"' => self.in_string = true,
                            b'[' | b'{' => self.skipped += 1,
                            _ => self.skipped -= 1,
                        }
                    }
                    i = stop;
                }
                Phase::Inside => {
                    self.structural(bytes[i]);
                    i += 1;
                }
            }
        }
    }

    /// Bytes inside a string: a key's (kept for comparison, bounded) or a value's.
    fn string_bytes(&mut self, bytes: &[u8]) {
        if self.in_key {
            if let Some(frame) = self.frames.last_mut() {
                let room = (MAX_KEY + 1).saturating_sub(frame.key.len());
                frame.key.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
        } else {
            self.keep(bytes);
        }
    }

    fn end_string(&mut self) {
        self.in_string = false;
        if self.in_key {
            self.in_key = false;
            if let Some(frame) = self.frames.last_mut() {
                frame.at = At::Colon;
            }
        } else {
            self.keep(b"\"");
        }
    }

    /// One byte between the values of a frame read key by key.
    fn structural(&mut self, b: u8) {
        let Some(frame) = self.frames.last_mut() else {
            self.phase = Phase::Done;
            return;
        };
        match (frame.at, b) {
            (At::Scalar, b',') => {
                self.end_value();
                self.set(At::Key);
            }
            (At::Scalar, b'}') => {
                self.end_value();
                self.close_frame();
            }
            (At::Scalar, b) if is_space(b) => {
                self.end_value();
                self.set(At::Next);
            }
            (At::Scalar, _) => self.keep(&[b]),
            (_, b) if is_space(b) => {}
            (At::Key, b'"') => {
                frame.key.clear();
                self.in_string = true;
                self.in_key = true;
            }
            (At::Key | At::Next, b'}') => {
                self.end_value();
                self.close_frame();
            }
            (At::Next, b',') => {
                self.end_value();
                self.set(At::Key);
            }
            (At::Colon, b':') => frame.at = At::Value,
            (At::Value, b) => self.start_value(b),
            _ => self.phase = Phase::NotObject,
        }
    }

    fn set(&mut self, at: At) {
        if let Some(frame) = self.frames.last_mut() {
            frame.at = at;
        }
    }

    /// The first byte of a value: an object of [`NESTED`] is read key by key, the
    /// value of a [`KEPT`] key is kept; anything else is stepped over.
    fn start_value(&mut self, b: u8) {
        let Some(frame) = self.frames.last_mut() else {
            return;
        };
        let key = frame.key.as_slice();
        let name = |names: &[&'static str]| -> Option<&'static str> {
            names.iter().copied().find(|n| n.as_bytes() == key)
        };
        if frame.parent.is_none() && b == b'{' {
            if let Some(nested) = name(&NESTED) {
                frame.at = At::Next;
                self.frames.push(Frame {
                    parent: Some(nested),
                    at: At::Key,
                    key: Vec::new(),
                });
                return;
            }
        }
        if let Some(kept) = name(&KEPT) {
            self.keeping = Some(Kept {
                parent: frame.parent,
                key: kept,
                bytes: Some(Vec::new()),
            });
        }
        frame.at = match b {
            b'"' => {
                self.in_string = true;
                At::Next
            }
            b'{' | b'[' => {
                self.skipped = 1;
                At::Next
            }
            _ => At::Scalar,
        };
        self.keep(&[b]);
    }

    fn close_frame(&mut self) {
        self.frames.pop();
        if self.frames.is_empty() {
            self.phase = Phase::Done;
        }
    }

    /// A value ended: what was kept of it is put aside, in place of an earlier value
    /// of the same key (the last one counts, as for a parser), so that an answer
    /// repeating a key however often keeps one value of it.
    fn end_value(&mut self) {
        if let Some(kept) = self.keeping.take().filter(|k| k.bytes.is_some()) {
            self.kept
                .retain(|k| (k.parent, k.key) != (kept.parent, kept.key));
            self.kept.push(kept);
        }
    }

    fn keep(&mut self, bytes: &[u8]) {
        if let Some(kept) = self.keeping.as_mut() {
            if let Some(buffer) = kept.bytes.as_mut() {
                if buffer.len() + bytes.len() > MAX_CAPTURED_VALUE {
                    kept.bytes = None;
                } else {
                    buffer.extend_from_slice(bytes);
                }
            }
        }
    }

    /// The kept values as an object (`{"model": …, "usage": …, "response": {…}}`);
    /// values that do not parse are left out. `None` unless the object closed.
    pub(crate) fn finish(self) -> Option<Value> {
        if self.phase != Phase::Done {
            return None;
        }
        let mut top = Map::new();
        for Kept { parent, key, bytes } in self.kept {
            let Some(Ok(value)) = bytes.map(|b| serde_json::from_slice::<Value>(&b)) else {
                continue;
            };
            match parent {
                None => {
                    top.insert(key.to_string(), value);
                }
                Some(parent) => {
                    let nested = top
                        .entry(parent.to_string())
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(nested) = nested {
                        nested.insert(key.to_string(), value);
                    }
                }
            }
        }
        Some(Value::Object(top))
    }

    /// Bytes held now (what is kept, and the keys being compared): bounded whatever
    /// was fed.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        let capacity = |kept: &Kept| kept.bytes.as_ref().map_or(0, Vec::capacity);
        self.keeping.as_ref().map_or(0, capacity)
            + self.kept.iter().map(capacity).sum::<usize>()
            + self.frames.iter().map(|f| f.key.capacity()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in(chunks: &[&[u8]]) -> Option<Value> {
        let mut scan = JsonScan::default();
        for chunk in chunks {
            scan.feed(chunk);
        }
        scan.finish()
    }

    fn scan(text: &str) -> Option<Value> {
        scan_in(&[text.as_bytes()])
    }

    #[test]
    fn keeps_the_chosen_fields_and_steps_over_the_rest() {
        let text = r#"{"id":"x","data":[{"embedding":[0.1,-2e-3,{"usage":1}],"model":"inner"}],
            "content":"a \"usage\": {\"prompt_tokens\": 9} \\ ]}[{",
            "model" : "text-embedding-3-small", "n": 12, "ok": true,
            "usage":{"prompt_tokens":7,"total_tokens":7}, "status": null }"#;
        let value = scan(text).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "model": "text-embedding-3-small",
                "usage": {"prompt_tokens": 7, "total_tokens": 7},
                "status": null,
            })
        );
        // Any split of the bytes reads the same.
        for at in 0..text.len() {
            let (a, b) = text.as_bytes().split_at(at);
            assert_eq!(scan_in(&[a, b]).as_ref(), Some(&value), "split at {at}");
        }
    }

    #[test]
    fn reads_the_response_and_message_objects_inside() {
        let value = scan(
            r#"{"type":"response.completed","sequence_number":9,"response":{"id":"r","instructions":"be {brief}","model":"gpt-4.1","output":[],"usage":{"input_tokens":9},"metadata":{"usage":"x"}}}"#,
        )
        .unwrap();
        assert_eq!(value["type"], "response.completed");
        assert_eq!(value["response"]["model"], "gpt-4.1");
        assert_eq!(value["response"]["usage"]["input_tokens"], 9);
    }

    #[test]
    fn what_is_not_a_closed_object_is_said() {
        for text in [
            "<html>bad gateway</html>",
            "[1,2]",
            "\"x\"",
            "{\"model\":\"m\"",
        ] {
            let mut scan = JsonScan::default();
            scan.feed(text.as_bytes());
            assert!(!scan.closed(), "{text}");
            assert!(scan.finish().is_none(), "{text}");
        }
        let mut scan = JsonScan::default();
        scan.feed(b"<html>");
        assert!(scan.not_an_object());
    }

    #[test]
    fn a_key_repeated_however_often_keeps_one_value_the_last() {
        let mut scan = JsonScan::default();
        scan.feed(b"{");
        for i in 0..100_000 {
            scan.feed(format!("\"model\":\"m{i}\",").as_bytes());
        }
        scan.feed(br#""usage":{"prompt_tokens":1}}"#);
        assert!(scan.held() < 1024, "{} bytes held", scan.held());
        let value = scan.finish().unwrap();
        assert_eq!(value["model"], "m99999");
    }

    #[test]
    fn a_huge_answer_is_read_in_bounded_memory() {
        let mut scan = JsonScan::default();
        scan.feed(br#"{"object":"list","data":["#);
        let embedding = format!(
            "{{\"object\":\"embedding\",\"index\":0,\"embedding\":[{}]}},",
            vec!["-0.0123456789"; 1536].join(",")
        );
        let mut fed = 0;
        while fed < 10 * 1024 * 1024 {
            scan.feed(embedding.as_bytes());
            fed += embedding.len();
        }
        scan.feed(
            br#"{"index":700}],"model":"m","usage":{"prompt_tokens":700,"total_tokens":700}}"#,
        );
        assert!(scan.held() < 1024, "{} bytes held", scan.held());
        assert_eq!(scan.finish().unwrap()["usage"]["prompt_tokens"], 700);
        // A kept value over the bound is dropped, not cut.
        let long = format!(
            r#"{{"model":"{}","usage":{{"prompt_tokens":1}}}}"#,
            "m".repeat(MAX_CAPTURED_VALUE)
        );
        let value = scan_in(&[long.as_bytes()]).unwrap();
        assert!(value.get("model").is_none());
        assert_eq!(value["usage"]["prompt_tokens"], 1);
    }

    proptest::proptest! {
        /// Whatever JSON object, split anywhere: what is kept is what a full parser
        /// reads at those keys.
        #[test]
        fn agrees_with_serde_json(value in arbitrary_object(), split in 0usize..4096) {
            let text = serde_json::to_string(&value).unwrap();
            let at = split.min(text.len());
            let (a, b) = text.as_bytes().split_at(at);
            let kept = scan_in(&[a, b]).unwrap();
            let full: Value = serde_json::from_str(&text).unwrap();
            for key in KEPT {
                proptest::prop_assert_eq!(kept.get(key), full.get(key), "{}", key);
            }
        }
    }

    fn arbitrary_object() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "[a-z\"\\\\{}\\[\\],: \u{e9}\u{1F600}]{0,12}".prop_map(Value::String),
        ];
        let value = leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("usage".to_string()),
                        Just("model".to_string()),
                        "[a-z\"]{0,6}"
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        proptest::collection::btree_map(
            prop_oneof![
                Just("usage".to_string()),
                Just("model".to_string()),
                Just("status".to_string()),
                Just("error".to_string()),
                "[a-z\"]{0,6}"
            ],
            value,
            0..8,
        )
        .prop_map(|m| Value::Object(m.into_iter().collect()))
    }
}
