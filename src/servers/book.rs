//! [`ServerBook`]: what the monitor knows of its model servers, from their readings
//! in the order they arrive. Pure: no I/O, no clock (times arrive with the readings).
//!
//! Gauges are republished as the server said them. Counters and histograms, which a
//! server reports since its own start, are turned into what the last interval saw:
//! the mean time to first token and queue time of the requests since the previous
//! read that had any, and the prefix-cache hit rate of the lookups since then (the
//! first read, or a read after the server restarted, counts from the server's start).
//! Preemptions are kept as loopwatch's own counter, from 0 at the first read (those
//! the server made before are not new), which goes on rising across a restart of the
//! server.
//!
//! ```
//! use loopwatch::servers::book::{ServerBook, Health};
//! use loopwatch::servers::{exposition, ServerKind};
//! let server = "vllm=http://127.0.0.1:8001".parse().unwrap();
//! let mut book = ServerBook::new(&[server]);
//! let page = |ttft_sum: f64, ttft_count: f64| format!(
//!     "vllm:time_to_first_token_seconds_sum {ttft_sum}\n\
//!      vllm:time_to_first_token_seconds_count {ttft_count}\n");
//! book.read(0, exposition::read(ServerKind::Vllm, &page(30.0, 10.0)), 100.0);
//! assert_eq!(book.views()[0].time_to_first_token_seconds, Some(3.0));
//! book.read(0, exposition::read(ServerKind::Vllm, &page(31.0, 12.0)), 101.0);
//! assert_eq!(book.views()[0].time_to_first_token_seconds, Some(0.5));
//! book.read(0, exposition::read(ServerKind::Vllm, "<html>"), 102.0);
//! assert_eq!(book.views()[0].health, Health::Down);
//! assert_eq!(book.views()[0].time_to_first_token_seconds, None);
//! ```

use serde::Serialize;

use super::{LoadedModel, ModelServer, PrefixCache, ReadFailure, Reading, ServerKind, SumCount};

/// Models of one Ollama server published by name at most; the rest are summed
/// under [`OTHER_MODELS`].
pub const MAX_MODELS: usize = 8;

/// The model label of an Ollama server's models past [`MAX_MODELS`]: a name no
/// Ollama model has (its names have no spaces or parentheses).
pub const OTHER_MODELS: &str = "(other models)";

/// How long, in seconds, an SGLang server's gauges count after a read found its
/// request and token counters moved since the read before. SGLang writes its gauges
/// (running, waiting, KV cache) only when its scheduler logs a batch, so an idle
/// server keeps the values of its last busy moment: they are left out (and it is not
/// saturated by them) until its counters are seen moving, and again this long after
/// they stop.
pub const SGLANG_GAUGES_FOR: f64 = 30.0;

/// Whether a server is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not read yet.
    Unread,
    /// Its last read succeeded.
    Up,
    /// Its last read failed: its readings are left out until it answers again.
    Down,
}

/// A server as the page, `/api/v1/snapshot` and the final JSON show it, and as its
/// series are published: its last reading, with the interval values worked out.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ServerView {
    /// The `server` label.
    pub name: String,
    /// Its kind.
    pub kind: ServerKind,
    /// The URL read.
    pub endpoint: String,
    /// Whether it is read.
    pub health: Health,
    /// Why its last read failed, while it is down.
    pub error: Option<String>,
    /// Reads that failed, over the run.
    pub failures: u64,
    /// When it was last read successfully, Unix seconds.
    pub read_at: Option<f64>,
    /// Requests being processed.
    pub running: Option<f64>,
    /// Requests waiting in its queue.
    pub waiting: Option<f64>,
    /// Fraction of its KV cache in use, 0 to 1.
    pub kv_cache_usage: Option<f64>,
    /// Fraction of the KV cache in use of its fullest engine that has requests
    /// waiting (`None` while none has).
    pub waiting_kv_cache_usage: Option<f64>,
    /// SGLang: its request and token counters were not seen moving between reads
    /// within [`SGLANG_GAUGES_FOR`] (or not yet), so its gauges may be what its
    /// scheduler wrote when it last worked, and are left out (`running`, `waiting`
    /// and `kv_cache_usage` are `None`).
    pub gauges_stale: bool,
    /// SGLang without a retraction counter: the requests its scheduler retracted in
    /// the batch it last logged (its gauge `num_retracted_reqs`), while its gauges
    /// are current.
    pub retracting: Option<f64>,
    /// Preemptions (SGLang: retractions) since loopwatch first read it (0 at that
    /// read: those before are not counted), counted on across its restarts.
    pub preemptions: Option<f64>,
    /// Prefix-cache hits over lookups, of the lookups since the previous read that had
    /// any (or the server's own rate).
    pub prefix_cache_hit_ratio: Option<f64>,
    /// Mean time to first token of the requests since the previous read that had any,
    /// seconds.
    pub time_to_first_token_seconds: Option<f64>,
    /// Mean time in its queue of the requests since the previous read that had any,
    /// seconds.
    pub queue_time_seconds: Option<f64>,
    /// Ollama: the models loaded (at most [`MAX_MODELS`] by name, then
    /// [`OTHER_MODELS`]).
    pub models: Option<Vec<LoadedModel>>,
}

/// One point of a server's history, for the page's charts: the server's numbers at
/// a read, beside the metering proxy's time to first chunk over the same interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ServerPoint {
    /// When, Unix seconds.
    pub at: f64,
    /// Seconds since the run started.
    pub elapsed_seconds: f64,
    /// Iterations the loop had completed.
    pub iterations: u64,
    /// Requests waiting.
    pub waiting: Option<f64>,
    /// KV-cache usage, 0 to 1.
    pub kv_cache_usage: Option<f64>,
    /// The server's mean queue time over the interval, seconds.
    pub queue_time_seconds: Option<f64>,
    /// The server's mean time to first token over the interval, seconds.
    pub time_to_first_token_seconds: Option<f64>,
    /// The metering proxy's mean time to first chunk of the streamed calls that
    /// ended over the interval, seconds.
    pub proxy_first_chunk_seconds: Option<f64>,
    /// Ollama: GPU memory of the loaded models, bytes.
    pub vram_bytes: Option<f64>,
}

/// What a read changed that is said once: in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum News {
    /// The first read succeeded.
    FirstRead,
    /// It cannot be read (or now for another reason): why.
    Down(String),
    /// It answers again after it could not be read.
    Up,
}

/// What applying one read changed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Change {
    /// The server's position in the configuration.
    pub index: usize,
    /// Preemptions to add to its counter.
    pub preemptions_added: f64,
    /// Time to first token to add to its running sum and count (none at the first
    /// read, where counting starts; after a restart, what came since).
    pub time_to_first_token_added: SumCount,
    /// Queue time to add to its running sum and count, likewise.
    pub queue_time_added: SumCount,
    /// The `reason` of a read that failed.
    pub failure: Option<&'static str>,
    /// What to log, if anything.
    pub news: Option<News>,
    /// The point its history gains (a read that succeeded).
    pub point: Option<ServerPoint>,
}

/// Where the run stands when a read arrives, for its point.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct When {
    /// Unix seconds.
    pub at: f64,
    /// Seconds since the run started.
    pub elapsed_seconds: f64,
    /// Iterations completed.
    pub iterations: u64,
}

impl From<f64> for When {
    fn from(at: f64) -> Self {
        When {
            at,
            ..When::default()
        }
    }
}

/// One server's books.
#[derive(Debug, Clone)]
struct Entry {
    view: ServerView,
    /// The server's cumulative numbers at its last successful read.
    ttft: Option<SumCount>,
    queue: Option<SumCount>,
    prefix: Option<(f64, f64)>,
    preemptions: Option<f64>,
    /// SGLang: its work counters at its last read (finished requests and generated
    /// tokens, first tokens, prompt tokens), and when they last moved.
    work: Option<[f64; 3]>,
    worked_at: Option<f64>,
    /// The reason of the failure it is down for.
    down_for: Option<&'static str>,
    /// The metering proxy's time to first chunk at this server's last point.
    proxy_mark: SumCount,
}

/// Every configured server's books, in the configuration's order.
#[derive(Debug, Clone, Default)]
pub struct ServerBook {
    entries: Vec<Entry>,
    /// Time to first chunk of the metering proxy's streamed calls, cumulative.
    proxy: SumCount,
}

impl ServerBook {
    /// The books of `servers`, none read yet.
    pub fn new(servers: &[ModelServer]) -> Self {
        ServerBook {
            entries: servers
                .iter()
                .map(|server| Entry {
                    view: ServerView {
                        name: server.name().to_string(),
                        kind: server.kind(),
                        endpoint: server.endpoint(),
                        health: Health::Unread,
                        error: None,
                        failures: 0,
                        read_at: None,
                        running: None,
                        waiting: None,
                        kv_cache_usage: None,
                        waiting_kv_cache_usage: None,
                        gauges_stale: false,
                        retracting: None,
                        preemptions: None,
                        prefix_cache_hit_ratio: None,
                        time_to_first_token_seconds: None,
                        queue_time_seconds: None,
                        models: None,
                    },
                    ttft: None,
                    queue: None,
                    prefix: None,
                    preemptions: None,
                    work: None,
                    worked_at: None,
                    down_for: None,
                    proxy_mark: SumCount::default(),
                })
                .collect(),
            proxy: SumCount::default(),
        }
    }

    /// Whether no server is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A streamed call through the metering proxy got its first chunk after
    /// `seconds`.
    pub fn proxy_first_chunk(&mut self, seconds: f64) {
        if seconds.is_finite() && seconds >= 0.0 {
            self.proxy.sum += seconds;
            self.proxy.count += 1.0;
        }
    }

    /// Applies one read of server `index` (its position in the configuration);
    /// `None` for an index no server has.
    pub fn read(
        &mut self,
        index: usize,
        outcome: Result<Reading, ReadFailure>,
        at: impl Into<When>,
    ) -> Option<Change> {
        let at = at.into();
        let proxy = self.proxy;
        let entry = self.entries.get_mut(index)?;
        let change = match outcome {
            Ok(reading) => {
                let news = match entry.view.health {
                    Health::Unread => Some(News::FirstRead),
                    Health::Down => Some(News::Up),
                    Health::Up => None,
                };
                let added = entry.apply(reading, at.at);
                let view = &entry.view;
                let point = ServerPoint {
                    at: at.at,
                    elapsed_seconds: at.elapsed_seconds,
                    iterations: at.iterations,
                    waiting: view.waiting,
                    kv_cache_usage: view.kv_cache_usage,
                    queue_time_seconds: view.queue_time_seconds,
                    time_to_first_token_seconds: view.time_to_first_token_seconds,
                    proxy_first_chunk_seconds: proxy.mean_since(Some(entry.proxy_mark)),
                    vram_bytes: view
                        .models
                        .as_ref()
                        .map(|models| models.iter().map(|m| m.vram_bytes as f64).sum()),
                };
                entry.proxy_mark = proxy;
                Change {
                    index,
                    preemptions_added: added.preemptions,
                    time_to_first_token_added: added.time_to_first_token,
                    queue_time_added: added.queue_time,
                    failure: None,
                    news,
                    point: Some(point),
                }
            }
            Err(failure) => {
                let reason = failure.reason();
                let news =
                    (entry.down_for != Some(reason)).then(|| News::Down(failure.to_string()));
                let view = &mut entry.view;
                view.health = Health::Down;
                view.error = Some(failure.to_string());
                view.failures += 1;
                view.running = None;
                view.waiting = None;
                view.kv_cache_usage = None;
                view.waiting_kv_cache_usage = None;
                view.retracting = None;
                view.gauges_stale = false;
                view.prefix_cache_hit_ratio = None;
                view.time_to_first_token_seconds = None;
                view.queue_time_seconds = None;
                view.models = None;
                entry.down_for = Some(reason);
                Change {
                    index,
                    preemptions_added: 0.0,
                    time_to_first_token_added: SumCount::default(),
                    queue_time_added: SumCount::default(),
                    failure: Some(reason),
                    news,
                    point: None,
                }
            }
        };
        Some(change)
    }

    /// Every server, in the configuration's order.
    pub fn views(&self) -> Vec<ServerView> {
        self.entries.iter().map(|e| e.view.clone()).collect()
    }

    /// Each server's view, without a copy.
    pub fn iter(&self) -> impl Iterator<Item = &ServerView> {
        self.entries.iter().map(|e| &e.view)
    }
}

/// What one read adds to a server's running totals.
#[derive(Debug, Clone, Copy, Default)]
struct Added {
    preemptions: f64,
    time_to_first_token: SumCount,
    queue_time: SumCount,
}

impl Entry {
    /// Takes a successful reading in; returns what it adds to the running totals.
    fn apply(&mut self, reading: Reading, at: f64) -> Added {
        let mut added = Added::default();
        let view = &mut self.view;
        view.health = Health::Up;
        view.error = None;
        view.read_at = Some(at);
        // SGLang's gauges count while its counters move: from a read that finds them
        // moved since the one before (the first read cannot tell) until
        // SGLANG_GAUGES_FOR after the last such read.
        let stale = match reading.work {
            Some(work) => {
                let counters = [
                    work,
                    reading.time_to_first_token.map_or(-1.0, |t| t.count),
                    match reading.prefix_cache {
                        Some(PrefixCache::Counters { queries, .. }) => queries,
                        _ => -1.0,
                    },
                ];
                if self.work.is_some_and(|before| before != counters) {
                    self.worked_at = Some(at);
                }
                self.work = Some(counters);
                !self
                    .worked_at
                    .is_some_and(|since| at - since < SGLANG_GAUGES_FOR)
            }
            None => {
                (self.work, self.worked_at) = (None, None);
                false
            }
        };
        view.gauges_stale = stale;
        let current = |gauge: Option<f64>| gauge.filter(|_| !stale);
        view.running = current(reading.running);
        view.waiting = current(reading.waiting);
        view.kv_cache_usage = current(reading.kv_cache_usage);
        view.waiting_kv_cache_usage = current(reading.waiting_kv_cache_usage);
        view.retracting = current(reading.retracting);
        // Interval values: kept from the previous read while nothing new happened.
        if let Some(now) = reading.time_to_first_token {
            if let Some(mean) = now.mean_since(self.ttft) {
                view.time_to_first_token_seconds = Some(mean);
            }
            added.time_to_first_token = now.since(self.ttft).unwrap_or_default();
            self.ttft = Some(now);
        }
        if let Some(now) = reading.queue_time {
            if let Some(mean) = now.mean_since(self.queue) {
                view.queue_time_seconds = Some(mean);
            }
            added.queue_time = now.since(self.queue).unwrap_or_default();
            self.queue = Some(now);
        }
        match reading.prefix_cache {
            Some(PrefixCache::Counters { hits, queries }) => {
                let (h, q) = match self.prefix {
                    Some((h0, q0)) if queries >= q0 && hits >= h0 => (hits - h0, queries - q0),
                    _ => (hits, queries),
                };
                if q > 0.0 {
                    view.prefix_cache_hit_ratio = Some((h / q).clamp(0.0, 1.0));
                }
                self.prefix = Some((hits, queries));
            }
            // The server's own rate, held to a ratio whatever it says.
            Some(PrefixCache::Rate(rate)) => {
                view.prefix_cache_hit_ratio = Some(rate.clamp(0.0, 1.0));
            }
            None => {}
        }
        view.models = reading.models.map(bounded_models);
        // The first read is where counting starts (the preemptions the server made
        // before loopwatch read it are not new); after a restart (its counter went
        // down), those since the restart are.
        added.preemptions = match (reading.preemptions, self.preemptions) {
            (Some(now), Some(before)) if now >= before => now - before,
            (Some(now), Some(_)) => now,
            (Some(_), None) | (None, _) => 0.0,
        };
        if let Some(now) = reading.preemptions {
            self.preemptions = Some(now);
            view.preemptions = Some(view.preemptions.unwrap_or(0.0) + added.preemptions);
        }
        self.down_for = None;
        added
    }
}

/// At most [`MAX_MODELS`] models by name, those with the most GPU memory first; the
/// rest summed under [`OTHER_MODELS`].
fn bounded_models(models: Vec<LoadedModel>) -> Vec<LoadedModel> {
    let mut models = merged(models);
    if models.len() <= MAX_MODELS {
        return models;
    }
    models.sort_by(|a, b| {
        b.vram_bytes
            .cmp(&a.vram_bytes)
            .then(b.size_bytes.cmp(&a.size_bytes))
    });
    let rest = models.split_off(MAX_MODELS - 1);
    models.push(LoadedModel {
        name: OTHER_MODELS.to_string(),
        size_bytes: rest
            .iter()
            .map(|m| m.size_bytes)
            .fold(0, u64::saturating_add),
        vram_bytes: rest
            .iter()
            .map(|m| m.vram_bytes)
            .fold(0, u64::saturating_add),
    });
    // A model that calls itself the overflow's name joins it: one series a name.
    merged(models)
}

/// The models with one entry per name, those of the same name summed (in the order
/// of their first): each name is one `model` label, so never two series alike (two
/// names cut to the same first 128 characters are one).
pub(crate) fn merged(models: Vec<LoadedModel>) -> Vec<LoadedModel> {
    let mut out: Vec<LoadedModel> = Vec::with_capacity(models.len());
    for model in models {
        match out.iter_mut().find(|m| m.name == model.name) {
            Some(same) => {
                same.size_bytes = same.size_bytes.saturating_add(model.size_bytes);
                same.vram_bytes = same.vram_bytes.saturating_add(model.vram_bytes);
            }
            None => out.push(model),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servers::{exposition, ollama};

    fn book() -> ServerBook {
        ServerBook::new(&[
            "vllm=http://127.0.0.1:8001".parse().unwrap(),
            "ollama=http://127.0.0.1:11434".parse().unwrap(),
        ])
    }

    #[test]
    fn counters_become_interval_values_and_preemptions_survive_a_restart() {
        let mut book = book();
        let page = |preempt: f64, hits: f64, queries: f64, qsum: f64, qcount: f64| {
            format!(
                "vllm:num_preemptions_total {preempt}\n\
                 vllm:prefix_cache_hits_total {hits}\nvllm:prefix_cache_queries_total {queries}\n\
                 vllm:request_queue_time_seconds_sum {qsum}\nvllm:request_queue_time_seconds_count {qcount}\n"
            )
        };
        let read = |book: &mut ServerBook, text: String, at: f64| {
            book.read(0, exposition::read(ServerKind::Vllm, &text), at)
                .unwrap()
        };
        let first = read(&mut book, page(5.0, 50.0, 100.0, 8.0, 4.0), 1.0);
        assert_eq!(first.news, Some(News::FirstRead));
        assert_eq!(first.preemptions_added, 0.0, "the first read is a baseline");
        assert_eq!(first.queue_time_added, SumCount::default());
        let v = &book.views()[0];
        assert_eq!(
            (
                v.preemptions,
                v.prefix_cache_hit_ratio,
                v.queue_time_seconds
            ),
            (Some(0.0), Some(0.5), Some(2.0))
        );
        let second = read(&mut book, page(7.0, 140.0, 200.0, 11.0, 5.0), 2.0);
        assert_eq!((second.news, second.preemptions_added), (None, 2.0));
        assert_eq!(
            second.queue_time_added,
            SumCount {
                sum: 3.0,
                count: 1.0
            }
        );
        let v = &book.views()[0];
        assert_eq!(
            (
                v.preemptions,
                v.prefix_cache_hit_ratio,
                v.queue_time_seconds
            ),
            (Some(2.0), Some(0.9), Some(3.0))
        );
        // Nothing new: the interval values stay.
        read(&mut book, page(7.0, 140.0, 200.0, 11.0, 5.0), 3.0);
        assert_eq!(book.views()[0].queue_time_seconds, Some(3.0));
        // Restarted, with more requests since than before it: the queue time's sum
        // fell, so its count is since the restart too.
        let after_restart = read(&mut book, page(7.0, 140.0, 200.0, 1.5, 6.0), 3.5);
        assert_eq!(book.views()[0].queue_time_seconds, Some(0.25));
        assert_eq!(
            after_restart.queue_time_added,
            SumCount {
                sum: 1.5,
                count: 6.0
            }
        );
        // The server restarted: its counters start again; loopwatch's goes on.
        let restarted = read(&mut book, page(1.0, 1.0, 4.0, 0.5, 1.0), 4.0);
        assert_eq!(restarted.preemptions_added, 1.0);
        assert_eq!(
            restarted.queue_time_added,
            SumCount {
                sum: 0.5,
                count: 1.0
            },
            "since the restart"
        );
        let v = &book.views()[0];
        assert_eq!(
            (
                v.preemptions,
                v.prefix_cache_hit_ratio,
                v.queue_time_seconds
            ),
            (Some(3.0), Some(0.25), Some(0.5))
        );
    }

    #[test]
    fn a_failure_degrades_that_server_only_and_is_news_once_per_reason() {
        let mut book = book();
        book.read(1, ollama::read(r#"{"models":[]}"#), 1.0);
        book.read(
            0,
            exposition::read(ServerKind::Vllm, "vllm:num_requests_waiting 3\n"),
            1.0,
        );
        let down = book.read(0, Err(ReadFailure::Timeout), 2.0).unwrap();
        assert_eq!(down.failure, Some("timeout"));
        assert!(matches!(down.news, Some(News::Down(_))));
        let again = book.read(0, Err(ReadFailure::Timeout), 3.0).unwrap();
        assert_eq!(again.news, None, "said once");
        let other = book.read(0, Err(ReadFailure::Status(500)), 4.0).unwrap();
        assert!(matches!(other.news, Some(News::Down(ref why)) if why.contains("500")));
        let views = book.views();
        assert_eq!(
            (views[0].health, views[0].waiting, views[0].failures),
            (Health::Down, None, 3)
        );
        assert_eq!(
            views[1].health,
            Health::Up,
            "the other server is unaffected"
        );
        let up = book
            .read(
                0,
                exposition::read(ServerKind::Vllm, "vllm:num_requests_waiting 1\n"),
                5.0,
            )
            .unwrap();
        assert_eq!(up.news, Some(News::Up));
        assert_eq!(book.views()[0].waiting, Some(1.0));
        assert!(book.read(7, Err(ReadFailure::Timeout), 6.0).is_none());
    }

    #[test]
    fn the_proxys_first_chunks_are_averaged_over_each_servers_interval() {
        let mut book = book();
        book.proxy_first_chunk(1.0);
        book.proxy_first_chunk(3.0);
        let ok = || exposition::read(ServerKind::Vllm, "vllm:num_requests_waiting 0\n");
        let point = book.read(0, ok(), 1.0).unwrap().point.unwrap();
        assert_eq!(point.proxy_first_chunk_seconds, Some(2.0));
        let point = book.read(0, ok(), 2.0).unwrap().point.unwrap();
        assert_eq!(point.proxy_first_chunk_seconds, None, "no call since");
        book.proxy_first_chunk(0.5);
        let point = book.read(0, ok(), 3.0).unwrap().point.unwrap();
        assert_eq!(point.proxy_first_chunk_seconds, Some(0.5));
    }

    #[test]
    fn sglangs_gauges_count_only_while_its_counters_move() {
        let mut book = ServerBook::new(&["sglang=http://127.0.0.1:30000".parse().unwrap()]);
        let page = |requests: f64, tokens: f64| {
            exposition::read(
                ServerKind::Sglang,
                &format!(
                    "sglang:num_queue_reqs 40\nsglang:token_usage 0.97\nsglang:num_running_reqs 8\n\
                     sglang:num_requests_total {requests}\nsglang:generation_tokens_total {tokens}\n"
                ),
            )
        };
        let gauges = |book: &ServerBook| {
            let v = &book.views()[0];
            (v.waiting, v.kv_cache_usage, v.running, v.gauges_stale)
        };
        let stale = (None, None, None, true);
        let current = (Some(40.0), Some(0.97), Some(8.0), false);
        // The first read cannot tell whether it works: its gauges may be old.
        book.read(0, page(10.0, 500.0), 0.0);
        assert_eq!(gauges(&book), stale);
        // Counters standing still: an idle server, its gauges as it left them.
        book.read(0, page(10.0, 500.0), 1.0);
        assert_eq!(gauges(&book), stale);
        // Moving: current, and for SGLANG_GAUGES_FOR after the last move.
        book.read(0, page(11.0, 500.0), 2.0);
        assert_eq!(gauges(&book), current);
        book.read(0, page(11.0, 520.0), 3.0);
        book.read(0, page(11.0, 520.0), 3.0 + SGLANG_GAUGES_FOR - 0.5);
        assert_eq!(gauges(&book), current);
        book.read(0, page(11.0, 520.0), 3.0 + SGLANG_GAUGES_FOR);
        assert_eq!(gauges(&book), stale);
        // A server without these counters cannot be judged: its gauges stand.
        let without = exposition::read(
            ServerKind::Sglang,
            "sglang:num_queue_reqs 40\nsglang:token_usage 0.97\n",
        );
        book.read(0, without, 100.0);
        assert_eq!(gauges(&book), (Some(40.0), Some(0.97), None, false));
        // vLLM writes its gauges at every step: never stale.
        let mut book = book_of_vllm();
        book.read(
            0,
            exposition::read(ServerKind::Vllm, "vllm:num_requests_waiting 2\n"),
            0.0,
        );
        assert_eq!(book.views()[0].waiting, Some(2.0));
    }

    fn book_of_vllm() -> ServerBook {
        ServerBook::new(&["vllm=http://127.0.0.1:8001".parse().unwrap()])
    }

    #[test]
    fn ollamas_models_are_bounded() {
        let mut book = book();
        let models: Vec<String> = (0..12)
            .map(|i| format!(r#"{{"name":"m{i}","size":{},"size_vram":{}}}"#, 10 + i, i))
            .collect();
        let answer = format!(r#"{{"models":[{}]}}"#, models.join(","));
        let change = book.read(1, ollama::read(&answer), 1.0).unwrap();
        let models = book.views()[1].models.clone().unwrap();
        assert_eq!(models.len(), MAX_MODELS);
        assert_eq!(models[0].name, "m11");
        let other = models.last().unwrap();
        assert_eq!(other.name, OTHER_MODELS);
        assert_eq!(other.vram_bytes, (0..=4).sum::<u64>());
        assert_eq!(
            change.point.unwrap().vram_bytes,
            Some((0..12).sum::<u64>() as f64)
        );
    }

    #[test]
    fn a_servers_own_hit_rate_is_held_to_a_ratio() {
        let mut book = book();
        for (rate, ratio) in [("0.35", 0.35), ("1.7", 1.0), ("1e9", 1.0), ("0", 0.0)] {
            let page = format!("vllm:gpu_prefix_cache_hit_rate {rate}\n");
            book.read(0, exposition::read(ServerKind::Vllm, &page), 1.0);
            assert_eq!(
                book.views()[0].prefix_cache_hit_ratio,
                Some(ratio),
                "{rate}"
            );
        }
    }

    #[test]
    fn ollamas_model_names_are_one_series_each() {
        let mut book = book();
        let long = "x".repeat(200);
        // Two names alike in their first 128 characters, a name given twice, one
        // named as the overflow is, and nine others: one entry a name.
        let mut models = vec![
            format!(r#"{{"name":"{long}a","size":10,"size_vram":1}}"#),
            format!(r#"{{"name":"{long}b","size":20,"size_vram":2}}"#),
            r#"{"name":"qwen3:8b","size":5,"size_vram":5}"#.to_string(),
            r#"{"name":"qwen3:8b","size":5,"size_vram":5}"#.to_string(),
            format!(r#"{{"name":"{OTHER_MODELS}","size":1,"size_vram":0}}"#),
        ];
        models.extend((0..9).map(|i| format!(r#"{{"name":"m{i}","size":1,"size_vram":0}}"#)));
        let answer = format!(r#"{{"models":[{}]}}"#, models.join(","));
        book.read(1, ollama::read(&answer), 1.0).unwrap();
        let models = book.views()[1].models.clone().unwrap();
        let mut names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count, "no name twice: {names:?}");
        assert!(count <= MAX_MODELS, "{count}");
        let cut = models.iter().find(|m| m.name.starts_with('x')).unwrap();
        assert_eq!((cut.size_bytes, cut.vram_bytes), (30, 3));
        let qwen = models.iter().find(|m| m.name == "qwen3:8b").unwrap();
        assert_eq!(qwen.size_bytes, 10);
        let total: u64 = models.iter().map(|m| m.size_bytes).sum();
        assert_eq!(total, 30 + 10 + 1 + 9, "nothing lost");
    }
}
