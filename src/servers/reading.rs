//! What one read of a model server found: its own numbers, cumulative as it reports
//! them, or why it could not be read.

use serde::Serialize;

/// A histogram's running sum and count, as a server exports them (`_sum`, `_count`),
/// summed over its series (engines, models).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SumCount {
    /// The sum of the observations (seconds).
    pub sum: f64,
    /// How many observations.
    pub count: f64,
}

impl SumCount {
    /// The mean of the observations made since `earlier`, when any were; when the
    /// count or the sum went down (the server restarted), the mean since the restart.
    ///
    /// ```
    /// use loopwatch::servers::SumCount;
    /// let before = SumCount { sum: 10.0, count: 4.0 };
    /// let after = SumCount { sum: 13.0, count: 6.0 };
    /// assert_eq!(after.mean_since(Some(before)), Some(1.5));
    /// assert_eq!(after.mean_since(Some(after)), None);
    /// assert_eq!(before.mean_since(Some(after)), Some(2.5));
    /// assert_eq!(before.mean_since(None), Some(2.5));
    /// ```
    pub fn mean_since(self, earlier: Option<SumCount>) -> Option<f64> {
        let SumCount { sum, count } = self.since(earlier).unwrap_or(self);
        (count > 0.0).then(|| (sum / count).max(0.0))
    }

    /// What was added since `earlier`: the difference, or after a restart everything
    /// since the restart; `None` without an earlier reading (where counting starts).
    /// A restart shows as the count going down, or the sum (observations are times,
    /// never negative: a sum that falls was started again, even when the count has
    /// already passed where it was).
    ///
    /// ```
    /// use loopwatch::servers::SumCount;
    /// let before = SumCount { sum: 10.0, count: 4.0 };
    /// let after = SumCount { sum: 13.0, count: 6.0 };
    /// assert_eq!(after.since(Some(before)), Some(SumCount { sum: 3.0, count: 2.0 }));
    /// assert_eq!(before.since(Some(after)), Some(before));
    /// assert_eq!(after.since(None), None);
    /// // Restarted, and more requests since than before: the sum tells.
    /// let restarted = SumCount { sum: 2.0, count: 7.0 };
    /// assert_eq!(restarted.since(Some(after)), Some(restarted));
    /// ```
    pub fn since(self, earlier: Option<SumCount>) -> Option<SumCount> {
        let earlier = earlier?;
        Some(if self.count >= earlier.count && self.sum >= earlier.sum {
            SumCount {
                sum: (self.sum - earlier.sum).max(0.0),
                count: self.count - earlier.count,
            }
        } else {
            self
        })
    }
}

/// How a server reports its prefix cache.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefixCache {
    /// Running counts of tokens looked up and found (vLLM's `prefix_cache_queries`
    /// and `prefix_cache_hits`; SGLang's `prompt_tokens` and `cached_tokens`).
    Counters {
        /// Tokens found in the cache.
        hits: f64,
        /// Tokens looked up.
        queries: f64,
    },
    /// A hit rate the server computes itself (older vLLM's
    /// `gpu_prefix_cache_hit_rate`, SGLang's `cache_hit_rate`).
    Rate(f64),
}

/// A model Ollama has loaded, from `/api/ps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LoadedModel {
    /// Its name (`name`, else `model`).
    pub name: String,
    /// Memory it takes in all (`size`), bytes.
    pub size_bytes: u64,
    /// The part of it in GPU memory (`size_vram`), bytes; the rest is in host memory,
    /// where it runs slower.
    pub vram_bytes: u64,
}

/// What a server said in one read, in its own terms: gauges as they are, counters
/// and histograms cumulative. `None` where this server (or its version) reports no
/// such number.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Reading {
    /// Requests being processed.
    pub running: Option<f64>,
    /// Requests waiting in the server's queue.
    pub waiting: Option<f64>,
    /// The fraction of the KV cache in use, 0 to 1 (the fullest engine's).
    pub kv_cache_usage: Option<f64>,
    /// The fraction of the KV cache in use of the fullest engine that has requests
    /// waiting, its waiting and its cache paired by their labels; `None` while no
    /// engine has any waiting (or none can be paired). With several engines (data
    /// parallel), requests waiting at one and another's full cache are not "waiting
    /// while full".
    pub waiting_kv_cache_usage: Option<f64>,
    /// Preemptions (vLLM) or retractions (SGLang) since the server started.
    pub preemptions: Option<f64>,
    /// SGLang without a retraction counter (`num_retracted_requests_total`): the
    /// requests its scheduler retracted in the batch it last logged, from its older
    /// gauge `num_retracted_reqs` (reset after each time it is written). Above 0, it
    /// retracted requests, how many since the previous read unknown.
    pub retracting: Option<f64>,
    /// The prefix cache's counts, or its hit rate.
    pub prefix_cache: Option<PrefixCache>,
    /// Time to first token, seconds.
    pub time_to_first_token: Option<SumCount>,
    /// Time requests waited in the queue, seconds.
    pub queue_time: Option<SumCount>,
    /// Ollama: the models loaded (`/api/ps`).
    pub models: Option<Vec<LoadedModel>>,
    /// SGLang: requests it finished and tokens it generated, summed
    /// (`num_requests_total`, `generation_tokens_total`): a count that moves while it
    /// works. SGLang writes its gauges (running, waiting, KV cache) only when its
    /// scheduler logs a batch, so an idle server keeps their last values; with this,
    /// they are told from current ones.
    pub work: Option<f64>,
}

/// Why a server could not be read. Its `reason` is the `reason` label of
/// `loopwatch_llm_server_read_errors_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadFailure {
    /// No connection: refused, reset, unreachable.
    Connection(String),
    /// No complete answer within the read's time limit.
    Timeout,
    /// An HTTP status other than 200.
    Status(u16),
    /// An answer longer than loopwatch reads.
    TooLarge,
    /// An answer that is not the server's format (not Prometheus text with the
    /// server's metrics, not Ollama's JSON).
    Garbage(String),
}

impl ReadFailure {
    /// Every `reason` label value, in a fixed order.
    pub const REASONS: [&'static str; 5] =
        ["connection", "timeout", "status", "too_large", "garbage"];

    /// The `reason` label value.
    pub fn reason(&self) -> &'static str {
        match self {
            ReadFailure::Connection(_) => "connection",
            ReadFailure::Timeout => "timeout",
            ReadFailure::Status(_) => "status",
            ReadFailure::TooLarge => "too_large",
            ReadFailure::Garbage(_) => "garbage",
        }
    }
}

impl std::fmt::Display for ReadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadFailure::Connection(why) => write!(f, "no connection ({why})"),
            ReadFailure::Timeout => f.write_str("no answer in time"),
            ReadFailure::Status(404) => {
                f.write_str("HTTP 404 (an SGLang server serves /metrics only when started with --enable-metrics)")
            }
            ReadFailure::Status(status) => write!(f, "HTTP {status}"),
            ReadFailure::TooLarge => f.write_str("an answer too large to read"),
            ReadFailure::Garbage(why) => write!(f, "an answer loopwatch cannot read: {why}"),
        }
    }
}
