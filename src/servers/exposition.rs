//! The Prometheus text format as vLLM and SGLang serve it on `/metrics`, read into a
//! [`Reading`].
//!
//! A small parser of its own rather than a crate's: the crates found either do not
//! accept the colons of `vllm:` and `sglang:` names, or split label values on commas
//! without regard to quoting. This one reads a line at a time without allocating;
//! a line it cannot read is skipped and counted, never a panic (proptests hold it to
//! that, and to reading back whatever a writer of the format writes).
//!
//! ```
//! use loopwatch::servers::{exposition, ServerKind};
//! let page = "# TYPE vllm:num_requests_waiting gauge\n\
//!             vllm:num_requests_waiting{engine=\"0\",model_name=\"qwen\"} 3.0\n\
//!             vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"qwen\"} 0.92\n";
//! let reading = exposition::read(ServerKind::Vllm, page).unwrap();
//! assert_eq!(reading.waiting, Some(3.0));
//! assert_eq!(reading.kv_cache_usage, Some(0.92));
//! assert!(exposition::read(ServerKind::Vllm, "<html>busy</html>").is_err());
//! ```

use super::{PrefixCache, ReadFailure, Reading, ServerKind, SumCount};

/// One sample line: its metric name, its labels as written between the braces, and
/// its value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample<'a> {
    /// The metric name (`vllm:num_requests_running`, `…_bucket`, `…_sum`).
    pub name: &'a str,
    /// The label pairs as written, without the braces (empty without labels).
    pub labels: &'a str,
    /// The value.
    pub value: f64,
}

impl<'a> Sample<'a> {
    /// The label pairs, their values unescaped.
    pub fn label_pairs(&self) -> Vec<(&'a str, String)> {
        let mut pairs = Vec::new();
        let mut rest = self.labels;
        while let Some(Ok((name, value, after))) = label_pair(rest) {
            pairs.push((name, unescape(value)));
            rest = after;
        }
        pairs
    }
}

/// What reading a page found: lines read as samples, and lines that could not be
/// read (comments and blank lines are neither).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lines {
    /// Sample lines read.
    pub samples: usize,
    /// Lines that are neither comments, blank, nor samples.
    pub unreadable: usize,
}

/// Calls `each` with every sample line of `text`, in order; lines that are not
/// samples (nor comments or blank) are skipped and counted.
///
/// ```
/// use loopwatch::servers::exposition::samples;
/// let mut seen = Vec::new();
/// let lines = samples("a{x=\"1 } 2\"} 5\n# HELP a …\nb 1e3 1700000000000\n!!\n", |s| {
///     seen.push((s.name.to_string(), s.value))
/// });
/// assert_eq!(seen, [("a".to_string(), 5.0), ("b".to_string(), 1000.0)]);
/// assert_eq!((lines.samples, lines.unreadable), (2, 1));
/// ```
pub fn samples<'a>(text: &'a str, mut each: impl FnMut(Sample<'a>)) -> Lines {
    let mut lines = Lines::default();
    for line in text.split('\n') {
        let line = line.trim_matches([' ', '\t', '\r']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match sample(line) {
            Some(s) => {
                lines.samples += 1;
                each(s);
            }
            None => lines.unreadable += 1,
        }
    }
    lines
}

/// One sample line, leading and trailing blanks removed.
fn sample(line: &str) -> Option<Sample<'_>> {
    let name_end = line
        .char_indices()
        .find(|&(i, c)| {
            !(c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()))
        })
        .map_or(line.len(), |(i, _)| i);
    if name_end == 0 {
        return None;
    }
    let (name, after_name) = line.split_at(name_end);
    let trimmed = after_name.trim_start_matches([' ', '\t']);
    let (labels, rest) = match trimmed.strip_prefix('{') {
        Some(inside) => {
            let end = labels_end(inside)?;
            (&inside[..end], &inside[end + 1..])
        }
        // A blank between the name and the value.
        None if trimmed.len() < after_name.len() => ("", trimmed),
        None => return None,
    };
    let mut fields = rest.split([' ', '\t']).filter(|f| !f.is_empty());
    let value = number(fields.next()?)?;
    if let Some(timestamp) = fields.next() {
        timestamp.parse::<i64>().ok()?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Where the label block that starts `inside` (after its `{`) ends: the index of its
/// closing `}`, quoted values skipped; `None` when it is not well formed.
fn labels_end(inside: &str) -> Option<usize> {
    let mut rest = inside;
    loop {
        let trimmed = rest.trim_start_matches([' ', '\t']);
        if let Some(after) = trimmed.strip_prefix('}') {
            return Some(inside.len() - after.len() - 1);
        }
        let (_, _, after) = label_pair(trimmed)?.ok()?;
        rest = after;
    }
}

/// The label pair at the start of `text`: its name, its value as written (escapes
/// kept) and what follows it (past a comma, if any). `None` at the end of the block
/// (`}`, or nothing left); `Some(Err)` when the pair is not well formed.
#[allow(clippy::type_complexity)]
fn label_pair(text: &str) -> Option<Result<(&str, &str, &str), ()>> {
    let text = text.trim_start_matches([' ', '\t']);
    if text.is_empty() || text.starts_with('}') {
        return None;
    }
    Some((|| {
        let name_end = text
            .char_indices()
            .find(|&(i, c)| !(c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
            .map_or(text.len(), |(i, _)| i);
        if name_end == 0 {
            return Err(());
        }
        let name = &text[..name_end];
        let rest = text[name_end..].trim_start_matches([' ', '\t']);
        let rest = rest.strip_prefix('=').ok_or(())?;
        let rest = rest.trim_start_matches([' ', '\t']);
        let quoted = rest.strip_prefix('"').ok_or(())?;
        let mut escaped = false;
        let close = quoted
            .char_indices()
            .find(|&(_, c)| {
                let end = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                end || c == '\n'
            })
            .map(|(i, _)| i)
            .ok_or(())?;
        if quoted[close..].starts_with('\n') {
            return Err(());
        }
        let value = &quoted[..close];
        let after = quoted[close + 1..].trim_start_matches([' ', '\t']);
        let after = match after.strip_prefix(',') {
            Some(next) => next,
            None if after.is_empty() || after.starts_with('}') => after,
            None => return Err(()),
        };
        Ok((name, value, after))
    })())
}

/// A label value with its escapes (`\\`, `\"`, `\n`) undone.
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// A sample value: a float as Go and Python write them, `NaN`, `+Inf`, `-Inf`.
fn number(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ if text
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
        {
            text.parse().ok()
        }
        _ => None,
    }
}

/// What a sample counts towards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Running,
    Waiting,
    Kv,
    KvOlder,
    Preemptions,
    Hits,
    Queries,
    HitsOlder,
    QueriesOlder,
    HitRate,
    TtftSum,
    TtftCount,
    QueueSum,
    QueueCount,
    QueueOlderSum,
    QueueOlderCount,
    Work,
    RetractingNow,
}

const SLOTS: usize = 18;

/// How a slot's series (engines, models) combine: summed, or the largest kept.
fn sums(slot: Slot) -> bool {
    !matches!(
        slot,
        Slot::Kv | Slot::KvOlder | Slot::HitRate | Slot::RetractingNow
    )
}

/// vLLM's names, after `vllm:`. Current names first; the older ones are read only
/// when the current one is absent. Sources: vllm/v1/metrics/loggers.py (V1 engine:
/// `kv_cache_usage_perc`, `prefix_cache_hits`/`_queries`, with `gpu_cache_usage_perc`
/// and `gpu_prefix_cache_hits`/`_queries` deprecated in 0.9) and vllm/engine/metrics.py
/// (V0 engine: `gpu_cache_usage_perc`, `gpu_prefix_cache_hit_rate`,
/// `time_in_queue_requests`). Counters carry `_total` as prometheus_client writes them.
const VLLM: &[(&str, Slot)] = &[
    ("num_requests_running", Slot::Running),
    ("num_requests_waiting", Slot::Waiting),
    ("kv_cache_usage_perc", Slot::Kv),
    ("gpu_cache_usage_perc", Slot::KvOlder),
    ("num_preemptions_total", Slot::Preemptions),
    ("prefix_cache_hits_total", Slot::Hits),
    ("prefix_cache_queries_total", Slot::Queries),
    ("gpu_prefix_cache_hits_total", Slot::HitsOlder),
    ("gpu_prefix_cache_queries_total", Slot::QueriesOlder),
    ("gpu_prefix_cache_hit_rate", Slot::HitRate),
    ("time_to_first_token_seconds_sum", Slot::TtftSum),
    ("time_to_first_token_seconds_count", Slot::TtftCount),
    ("request_queue_time_seconds_sum", Slot::QueueSum),
    ("request_queue_time_seconds_count", Slot::QueueCount),
    ("time_in_queue_requests_sum", Slot::QueueOlderSum),
    ("time_in_queue_requests_count", Slot::QueueOlderCount),
];

/// SGLang's names, after `sglang:` (python/sglang/srt/metrics/collector.py;
/// SchedulerMetricsCollector and TokenizerMetricsCollector). Retractions are its
/// preemptions (counted by `num_retracted_requests_total`; without it, the older
/// gauge `num_retracted_reqs`, the retractions of the batch last logged, says only
/// whether there were any); the prefix cache is read from its cached and prompt token counters,
/// else its `cache_hit_rate` gauge. Its finished requests and generated tokens tell
/// whether it works, and so whether its gauges are current.
const SGLANG: &[(&str, Slot)] = &[
    ("num_running_reqs", Slot::Running),
    ("num_queue_reqs", Slot::Waiting),
    ("token_usage", Slot::Kv),
    ("num_retracted_requests_total", Slot::Preemptions),
    ("num_retracted_reqs", Slot::RetractingNow),
    ("cached_tokens_total", Slot::Hits),
    ("prompt_tokens_total", Slot::Queries),
    ("cache_hit_rate", Slot::HitRate),
    ("time_to_first_token_seconds_sum", Slot::TtftSum),
    ("time_to_first_token_seconds_count", Slot::TtftCount),
    ("queue_time_seconds_sum", Slot::QueueSum),
    ("queue_time_seconds_count", Slot::QueueCount),
    ("num_requests_total", Slot::Work),
    ("generation_tokens_total", Slot::Work),
];

/// The name prefixes of a kind's metrics: vLLM's `vllm:`; SGLang's `sglang:`, and
/// `sglang_`, which dashboards downstream report some deployments to use.
fn prefixes(kind: ServerKind) -> &'static [&'static str] {
    match kind {
        ServerKind::Vllm => &["vllm:"],
        ServerKind::Sglang => &["sglang:", "sglang_"],
        ServerKind::Ollama => &[],
    }
}

/// Adds a sample's value to its slot: summed, or the largest kept.
fn accumulate(slots: &mut [Option<f64>; SLOTS], slot: Slot, value: f64) {
    if !(value.is_finite() && value >= 0.0) {
        return;
    }
    let held = &mut slots[slot as usize];
    *held = Some(match *held {
        None => value,
        Some(v) if sums(slot) => v + value,
        Some(v) => v.max(value),
    });
}

/// The slot of a sample named `name` (its kind's prefix taken off), if loopwatch
/// reads it.
fn slot(table: &[(&str, Slot)], name: &str) -> Option<Slot> {
    table
        .iter()
        .find(|(n, _)| n.len() == name.len() && *n == name)
        .map(|&(_, slot)| slot)
}

/// The length of the metric name at the start of `text`.
fn name_length(text: &str) -> usize {
    text.bytes()
        .position(|b| !(b == b'_' || b == b':' || b.is_ascii_alphanumeric()))
        .unwrap_or(text.len())
}

/// Reads a `/metrics` page of a vLLM or SGLang server. A page with no sample of
/// the server's own and none of its metrics declared (`# TYPE vllm:…`: an idle
/// server's page may declare them before it has samples), or with no readable line
/// at all, is [`ReadFailure::Garbage`];
/// values that are not finite and zero or more are left out.
///
/// Only the lines of the samples loopwatch reads are parsed whole (a vLLM page has
/// some 600 lines, mostly histogram buckets): the others are passed over by their
/// name.
pub fn read(kind: ServerKind, text: &str) -> Result<Reading, ReadFailure> {
    let table = match kind {
        ServerKind::Vllm => VLLM,
        ServerKind::Sglang => SGLANG,
        ServerKind::Ollama => {
            return Err(ReadFailure::Garbage(
                "Ollama serves no metrics page".to_string(),
            ))
        }
    };
    let mut slots = [None::<f64>; SLOTS];
    let mut engines = Engines::default();
    let mut own = 0usize;
    for line in text.split('\n') {
        let line = line.trim_matches([' ', '\t', '\r']);
        // The server's own metrics declared without samples yet (an idle server's
        // histograms and labelled gauges): its page, with nothing to read yet.
        if let Some(declared) = line
            .strip_prefix("# TYPE ")
            .or_else(|| line.strip_prefix("# HELP "))
        {
            let declared = declared.trim_start_matches([' ', '\t']);
            if prefixes(kind).iter().any(|p| declared.starts_with(p)) {
                own += 1;
            }
            continue;
        }
        let Some(rest) = prefixes(kind).iter().find_map(|p| line.strip_prefix(p)) else {
            continue;
        };
        own += 1;
        let Some(slot) = slot(table, &rest[..name_length(rest)]) else {
            continue;
        };
        if let Some(sample) = sample(line) {
            accumulate(&mut slots, slot, sample.value);
            engines.add(slot, &sample);
        }
    }
    if own == 0 {
        let lines = samples(text, |_| {});
        let why = if lines.samples == 0 {
            "not Prometheus text".to_string()
        } else {
            format!(
                "no {} metric among its {} samples: is this a {kind} server?",
                prefixes(kind)[0],
                lines.samples
            )
        };
        return Err(ReadFailure::Garbage(why));
    }
    let mut reading = reading(&slots);
    reading.waiting_kv_cache_usage = engines.waiting_kv_cache_usage();
    Ok(reading)
}

/// Engines (series of one label set) tracked at most for pairing: a page with more is
/// paired on its first ones.
const MAX_ENGINES: usize = 64;

/// Each engine's requests waiting and KV-cache usage, by its label set (the pairs
/// sorted, values unescaped), so that "waiting while full" is judged engine by engine.
#[derive(Debug, Default)]
struct Engines {
    waiting: Vec<(Vec<(String, String)>, f64)>,
    kv: Vec<(Vec<(String, String)>, f64)>,
    kv_older: Vec<(Vec<(String, String)>, f64)>,
}

impl Engines {
    /// Notes a sample of a waiting or KV-cache slot.
    fn add(&mut self, slot: Slot, sample: &Sample<'_>) {
        let list = match slot {
            Slot::Waiting => &mut self.waiting,
            Slot::Kv => &mut self.kv,
            Slot::KvOlder => &mut self.kv_older,
            _ => return,
        };
        if !(sample.value.is_finite() && sample.value >= 0.0) {
            return;
        }
        let mut key: Vec<(String, String)> = sample
            .label_pairs()
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect();
        key.sort();
        let full = list.len() >= MAX_ENGINES;
        match list.iter_mut().find(|(k, _)| *k == key) {
            // The same engine twice: as the slots combine its series.
            Some((_, held)) if slot == Slot::Waiting => *held += sample.value,
            Some((_, held)) => *held = held.max(sample.value),
            None if !full => list.push((key, sample.value)),
            None => {}
        }
    }

    /// The KV-cache usage of the fullest engine with requests waiting (the current
    /// name's series where there are any, else the older name's).
    fn waiting_kv_cache_usage(&self) -> Option<f64> {
        let kv = if self.kv.is_empty() {
            &self.kv_older
        } else {
            &self.kv
        };
        self.waiting
            .iter()
            .filter(|(_, waiting)| *waiting > 0.0)
            .filter_map(|(key, _)| kv.iter().find(|(k, _)| k == key).map(|(_, usage)| *usage))
            .reduce(f64::max)
    }
}

/// The reading the slots make: current names over older ones.
fn reading(slots: &[Option<f64>; SLOTS]) -> Reading {
    let get = |slot: Slot| slots[slot as usize];
    let pair = |sum: Slot, count: Slot| match (get(sum), get(count)) {
        (Some(sum), Some(count)) => Some(SumCount { sum, count }),
        _ => None,
    };
    let counters = |hits: Slot, queries: Slot| match (get(hits), get(queries)) {
        (Some(hits), Some(queries)) => Some(PrefixCache::Counters { hits, queries }),
        _ => None,
    };
    Reading {
        running: get(Slot::Running),
        waiting: get(Slot::Waiting),
        kv_cache_usage: get(Slot::Kv).or(get(Slot::KvOlder)),
        waiting_kv_cache_usage: None,
        preemptions: get(Slot::Preemptions),
        retracting: get(Slot::RetractingNow).filter(|_| get(Slot::Preemptions).is_none()),
        prefix_cache: counters(Slot::Hits, Slot::Queries)
            .or_else(|| counters(Slot::HitsOlder, Slot::QueriesOlder))
            .or_else(|| get(Slot::HitRate).map(PrefixCache::Rate)),
        time_to_first_token: pair(Slot::TtftSum, Slot::TtftCount),
        queue_time: pair(Slot::QueueSum, Slot::QueueCount)
            .or_else(|| pair(Slot::QueueOlderSum, Slot::QueueOlderCount)),
        models: None,
        work: get(Slot::Work),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn lines_are_read_as_the_format_says() {
        fn read(line: &str) -> Option<(&str, &str, f64)> {
            sample(line.trim()).map(|s| (s.name, s.labels, s.value))
        }
        assert_eq!(read("a 1"), Some(("a", "", 1.0)));
        assert_eq!(read("a\t-2.5e-3"), Some(("a", "", -0.0025)));
        assert_eq!(read("vllm:x{} 3"), Some(("vllm:x", "", 3.0)));
        assert_eq!(read("a{b=\"c\"} 4"), Some(("a", "b=\"c\"", 4.0)));
        assert_eq!(
            read("a {b=\"c\",} 4 1700000000000"),
            Some(("a", "b=\"c\",", 4.0))
        );
        assert_eq!(
            read(r#"a{b="}\"{",c = "x y"} 5"#),
            Some(("a", r#"b="}\"{",c = "x y""#, 5.0))
        );
        assert_eq!(read("a +Inf").map(|s| s.2), Some(f64::INFINITY));
        assert!(read("a NaN").unwrap().2.is_nan());
        for bad in [
            "1a 1",
            "a",
            "a{b=\"c\"}",
            "a{b=c} 1",
            "a{b=\"c} 1",
            "a{=\"c\"} 1",
            "a{b=\"c\" d=\"e\"} 1",
            "a 1 2 3",
            "a 1 x",
            "a one",
            "a 0x10",
            "a{b=\"c\"}d 1",
            "a-b 1",
        ] {
            assert_eq!(read(bad), None, "{bad}");
        }
        let s = sample(r#"m{path="/a\\b",q="say \"hi\"\n"} 1"#).unwrap();
        assert_eq!(
            s.label_pairs(),
            [
                ("path", "/a\\b".to_string()),
                ("q", "say \"hi\"\n".to_string())
            ]
        );
    }

    #[test]
    fn an_answer_without_the_servers_metrics_is_garbage() {
        for (kind, text, says) in [
            (ServerKind::Vllm, "", "not Prometheus text"),
            (
                ServerKind::Vllm,
                "<html><body>502</body></html>",
                "not Prometheus text",
            ),
            (ServerKind::Vllm, "{\"models\": []}", "not Prometheus text"),
            (
                ServerKind::Vllm,
                "node_load1 0.5\n",
                "is this a vllm server?",
            ),
            (
                ServerKind::Sglang,
                "vllm:num_requests_running 1\n",
                "is this a sglang server?",
            ),
        ] {
            match read(kind, text) {
                Err(ReadFailure::Garbage(why)) => assert!(why.contains(says), "{text:?}: {why}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_page_that_declares_the_servers_metrics_without_samples_is_read() {
        let idle = "# HELP sglang:num_queue_reqs The number of requests in the waiting queue\n\
                    # TYPE sglang:num_queue_reqs gauge\n\
                    # HELP sglang:time_to_first_token_seconds Histogram of time to first token\n\
                    # TYPE sglang:time_to_first_token_seconds histogram\n\
                    python_info{version=\"3.12\"} 1.0\n";
        assert_eq!(read(ServerKind::Sglang, idle), Ok(Reading::default()));
        // Another program's declarations are not the server's.
        let other = "# TYPE node_load1 gauge\nnode_load1 0.5\n";
        assert!(read(ServerKind::Vllm, other).is_err());
        assert!(read(ServerKind::Vllm, "# TYPE vllm:num_requests_waiting gauge\n").is_ok());
    }

    #[test]
    fn series_add_up_and_the_fullest_cache_counts() {
        let page = "vllm:num_requests_waiting{engine=\"0\"} 2\n\
                    vllm:num_requests_waiting{engine=\"1\"} 5\n\
                    vllm:kv_cache_usage_perc{engine=\"0\"} 0.4\n\
                    vllm:kv_cache_usage_perc{engine=\"1\"} 0.97\n\
                    vllm:num_requests_running{engine=\"0\"} NaN\n\
                    vllm:num_requests_running{engine=\"1\"} -1\n";
        let r = read(ServerKind::Vllm, page).unwrap();
        assert_eq!(r.waiting, Some(7.0));
        assert_eq!(r.kv_cache_usage, Some(0.97));
        assert_eq!(r.running, None, "no finite value of zero or more");
        assert_eq!(r.waiting_kv_cache_usage, Some(0.97));
    }

    #[test]
    fn an_older_sglangs_retraction_gauge_is_read_without_its_counter() {
        let older = "sglang:num_retracted_reqs{tp_rank=\"0\"} 2\nsglang:num_retracted_reqs{tp_rank=\"1\"} 2\n";
        let r = read(ServerKind::Sglang, older).unwrap();
        assert_eq!((r.preemptions, r.retracting), (None, Some(2.0)));
        let both = format!("{older}sglang:num_retracted_requests_total 37\n");
        let r = read(ServerKind::Sglang, &both).unwrap();
        assert_eq!(
            (r.preemptions, r.retracting),
            (Some(37.0), None),
            "the counter wins"
        );
    }

    #[test]
    fn waiting_while_full_is_judged_engine_by_engine() {
        // Requests wait at engine 0, whose cache has room; engine 1's is full with
        // none waiting: not "waiting while full".
        let page = "vllm:num_requests_waiting{model_name=\"m\",engine=\"0\"} 4\n\
                    vllm:num_requests_waiting{model_name=\"m\",engine=\"1\"} 0\n\
                    vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.4\n\
                    vllm:kv_cache_usage_perc{engine=\"1\",model_name=\"m\"} 0.99\n";
        let r = read(ServerKind::Vllm, page).unwrap();
        assert_eq!((r.waiting, r.kv_cache_usage), (Some(4.0), Some(0.99)));
        assert_eq!(r.waiting_kv_cache_usage, Some(0.4));
        // Older names, no labels: one engine.
        let older = "vllm:num_requests_waiting 2\nvllm:gpu_cache_usage_perc 0.95\n";
        let r = read(ServerKind::Vllm, older).unwrap();
        assert_eq!(r.waiting_kv_cache_usage, Some(0.95));
        // None waiting, or a waiting series with no cache of the same labels: none.
        let idle =
            "vllm:num_requests_waiting{engine=\"0\"} 0\nvllm:kv_cache_usage_perc{engine=\"0\"} 1\n";
        assert_eq!(
            read(ServerKind::Vllm, idle).unwrap().waiting_kv_cache_usage,
            None
        );
        let unpaired =
            "vllm:num_requests_waiting{engine=\"0\"} 3\nvllm:kv_cache_usage_perc{engine=\"1\"} 1\n";
        assert_eq!(
            read(ServerKind::Vllm, unpaired)
                .unwrap()
                .waiting_kv_cache_usage,
            None
        );
        // SGLang: one scheduler's labels.
        let sglang = "sglang:num_queue_reqs{model_name=\"m\",tp_rank=\"0\"} 9\n\
                      sglang:token_usage{model_name=\"m\",tp_rank=\"0\"} 0.93\n";
        let r = read(ServerKind::Sglang, sglang).unwrap();
        assert_eq!(r.waiting_kv_cache_usage, Some(0.93));
    }

    /// A label value as a writer of the format escapes it.
    fn escape(value: &str) -> String {
        value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-zA-Z_:][a-zA-Z0-9_:]{0,20}"
    }

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>().prop_filter("finite", |v| v.is_finite()),
            (0u32..1_000_000).prop_map(f64::from),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
        ]
    }

    /// The reading of a page as every sample line parsed whole would make it: what
    /// [`read`], which parses only the lines it reads, must agree with.
    fn reference(kind: ServerKind, text: &str) -> Option<Reading> {
        let table = if kind == ServerKind::Vllm {
            VLLM
        } else {
            SGLANG
        };
        let mut slots = [None::<f64>; SLOTS];
        let mut engines = Engines::default();
        let mut own = 0;
        samples(text, |s| {
            let Some(name) = prefixes(kind).iter().find_map(|p| s.name.strip_prefix(p)) else {
                return;
            };
            own += 1;
            if let Some(slot) = slot(table, name) {
                accumulate(&mut slots, slot, s.value);
                engines.add(slot, &s);
            }
        });
        (own > 0).then(|| {
            let mut reading = reading(&slots);
            reading.waiting_kv_cache_usage = engines.waiting_kv_cache_usage();
            reading
        })
    }

    #[test]
    fn the_stand_in_pages_read_as_every_line_parsed_whole_would() {
        for (kind, name) in [
            (ServerKind::Vllm, "vllm-current-1.txt"),
            (ServerKind::Vllm, "vllm-current-2.txt"),
            (ServerKind::Vllm, "vllm-older.txt"),
            (ServerKind::Sglang, "sglang.txt"),
        ] {
            let path = format!(
                "{}/tests/data/model_servers/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            let text = std::fs::read_to_string(path).unwrap();
            let read = read(kind, &text).unwrap();
            assert_eq!(Some(read.clone()), reference(kind, &text), "{name}");
            assert!(
                read.waiting.is_some() && read.queue_time.is_some(),
                "{name}: {read:?}"
            );
        }
    }

    /// Samples of the names loopwatch reads, and of others, in odd spellings.
    fn page_lines() -> impl Strategy<Value = String> {
        let names: Vec<&str> = VLLM.iter().chain(SGLANG).map(|(n, _)| *n).collect();
        proptest::collection::vec(
            (
                prop_oneof![
                    Just("vllm:"),
                    Just("sglang:"),
                    Just("sglang_"),
                    Just("other_")
                ],
                prop_oneof![
                    proptest::sample::select(names),
                    Just("something_else"),
                    Just("")
                ],
                prop_oneof![
                    Just(String::new()),
                    Just("{engine=\"0\"}".to_string()),
                    Just("{a=\"} 9\",b=\"x\"}".to_string()),
                    Just("{bad".to_string()),
                ],
                prop_oneof![
                    value().prop_map(|v| format!(" {v:?}")),
                    Just(" NaN".to_string()),
                    Just(" x".to_string()),
                    Just(String::new())
                ],
            )
                .prop_map(|(prefix, name, labels, value)| format!("{prefix}{name}{labels}{value}")),
            0..40,
        )
        .prop_map(|lines| lines.join("\n"))
    }

    proptest! {
        /// Reading only the lines it needs gives what parsing every line would.
        #[test]
        fn reading_agrees_with_every_line_parsed_whole(text in page_lines(), sglang in any::<bool>()) {
            let kind = if sglang { ServerKind::Sglang } else { ServerKind::Vllm };
            let fast = read(kind, &text).ok();
            let slow = reference(kind, &text);
            match (&fast, &slow) {
                (Some(f), Some(s)) => {
                    // NaN never reaches a slot: plain equality holds.
                    prop_assert_eq!(f, s);
                }
                (None, None) => {}
                // A line of the server's prefix that is not a sample counts as its own
                // for `read` (it is not garbage), not for the reference.
                (Some(f), None) => prop_assert_eq!(f, &reading(&[None; SLOTS])),
                (None, Some(_)) => prop_assert!(false, "read refused a page with own samples"),
            }
        }

        /// Whatever arrives, reading it ends without a panic, every line either a
        /// sample or counted as unreadable.
        #[test]
        fn any_text_is_read_without_a_panic(text in ".{0,400}", kind in 0usize..3) {
            let mut seen = 0;
            let lines = samples(&text, |_| seen += 1);
            prop_assert_eq!(lines.samples, seen);
            let _ = read(ServerKind::ALL[kind], &text);
        }

        /// Text shaped like the format, with its special characters in odd places.
        #[test]
        fn near_misses_are_read_without_a_panic(
            text in proptest::collection::vec(prop_oneof![
                Just("vllm:a".to_string()), Just("{".to_string()), Just("}".to_string()),
                Just("=".to_string()), Just("\"".to_string()), Just("\\".to_string()),
                Just(",".to_string()), Just(" ".to_string()), Just("\n".to_string()),
                Just("1.5".to_string()), Just("#".to_string()), Just("b".to_string()),
                Just("é".to_string()),
            ], 0..60).prop_map(|parts| parts.concat())
        ) {
            let _ = read(ServerKind::Vllm, &text);
            let _ = samples(&text, |s| { let _ = s.label_pairs(); });
        }

        /// What a writer of the format writes is read back: names, label values
        /// (quotes, backslashes, newlines, braces, commas) and values.
        #[test]
        fn written_samples_are_read_back(
            rows in proptest::collection::vec(
                (name(), proptest::collection::vec(("[a-zA-Z_][a-zA-Z0-9_]{0,8}", "\\PC{0,12}|[\\\\\"{},= \n]{0,6}"), 0..4), value(), any::<bool>()),
                1..20,
            )
        ) {
            let mut text = String::from("# HELP x something\n# TYPE x gauge\n");
            for (name, labels, value, timestamp) in &rows {
                text.push_str(name);
                if !labels.is_empty() {
                    let pairs: Vec<String> = labels
                        .iter()
                        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                        .collect();
                    text.push_str(&format!("{{{}}}", pairs.join(",")));
                }
                let written = if value.is_infinite() {
                    if *value > 0.0 { "+Inf".to_string() } else { "-Inf".to_string() }
                } else {
                    format!("{value:?}")
                };
                text.push_str(&format!(" {written}"));
                if *timestamp {
                    text.push_str(" 1700000000123");
                }
                text.push('\n');
            }
            let mut read_back = Vec::new();
            let lines = samples(&text, |s| {
                read_back.push((s.name.to_string(), s.label_pairs(), s.value));
            });
            prop_assert_eq!(lines.unreadable, 0);
            prop_assert_eq!(read_back.len(), rows.len());
            for ((name, labels, value, _), (n, l, v)) in rows.iter().zip(&read_back) {
                prop_assert_eq!(name, n);
                let labels: Vec<(&str, String)> =
                    labels.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
                prop_assert_eq!(&labels, l);
                prop_assert_eq!(value.to_bits(), v.to_bits());
            }
        }
    }
}
