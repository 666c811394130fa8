//! The wire protocol of `loopwatch run`: what a supervised loop writes to the Unix
//! socket named by `LOOPWATCH_SOCKET`, one JSON object per line (docs/protocol.md).
//!
//! Every line carries the protocol version `"v": 1` and a `"type"`. Lines are parsed
//! here into a [`Message`], or turned away with a [`LineError`] that names what was
//! wrong; the supervisor counts each one in `loopwatch_rejected_observations_total`
//! and reads on.
//!
//! ```
//! use loopwatch::protocol::{parse_line, Message};
//!
//! let message = parse_line(br#"{"v":1,"type":"success","sharpe":1.3,"drawdown":0.18}"#);
//! assert_eq!(message, Ok(Message::Success { sharpe: 1.3, drawdown: Some(0.18) }));
//! assert!(parse_line(br#"{"v":1,"type":"teleport"}"#).is_err());
//! ```

use serde::Deserialize;

/// The protocol version this build speaks.
pub const VERSION: u64 = 1;

/// The longest line accepted, newline excluded: 64 KiB.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// The most series of its own a loop may declare with `metric` messages.
pub const MAX_USER_SERIES: usize = 100;

/// The longest evaluation id, worker name or failure reason an `evaluation_start` or
/// `evaluation_end` line may carry, in characters (the Python client's bound on every
/// text it sends).
pub const MAX_EVALUATION_TEXT: usize = 256;

/// The longest framework version an `instrumentation` line may carry, in characters.
pub const MAX_INSTRUMENTATION_VERSION: usize = 64;

/// The largest count a line may state (2^53, the largest integer a JSON number
/// holds exactly in every language): outcomes, failures, dropped events, tokens. A
/// larger one makes the line `malformed`, so that no count the monitor sums from the
/// lines can come near wrapping.
pub const MAX_LINE_COUNT: u64 = 1 << 53;

/// The most errors one `instrumentation_error` line counts; a larger count is taken
/// as this many.
pub const MAX_INSTRUMENTATION_ERRORS: u64 = 1_000_000;

/// The kind of a loop's own metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// A value that goes up and down; each message sets it.
    Gauge,
    /// A running total; each message adds its (non-negative) value.
    Counter,
}

/// One message from a loop.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Message {
    /// An iteration begins; `at` is when, by the loop's clock (Unix seconds), if the
    /// line says (`"t"`), so that its duration does not depend on delivery.
    IterationStart {
        /// When it began.
        at: Option<f64>,
    },
    /// A strategy completed. Non-finite values arrive as `null` and read NaN here; the
    /// monitor counts the success and rejects the value.
    Success {
        /// Its Sharpe ratio (or the loop's own score, higher is better).
        sharpe: f64,
        /// Its max drawdown, a positive fraction of peak equity; `None` when the line
        /// has no `drawdown` (a loop that measures none).
        drawdown: Option<f64>,
    },
    /// A strategy failed.
    Failure {
        /// Why, from a small fixed vocabulary ("too few trades").
        reason: String,
    },
    /// Many outcomes of the iteration at once, summarised by the client: what a
    /// client sends instead of a line per strategy.
    Outcomes(OutcomeSummary),
    /// The population after this iteration.
    Population {
        /// Strategies in it.
        size: u64,
        /// Distinct strategies among them.
        unique: u64,
        /// Diversity from 0 (clones) to 1.
        diversity: f64,
        /// The champion's identity, if the loop has one.
        champion: Option<String>,
    },
    /// The iteration ends; `at` as for [`Message::IterationStart`].
    IterationEnd {
        /// When it ended.
        at: Option<f64>,
    },
    /// The loop has finished its work: no more iterations are coming, and an exit
    /// from now on is expected.
    Done,
    /// A value of the loop's own metric.
    Metric {
        /// Its exported name (`[a-zA-Z_][a-zA-Z0-9_]*`, not loopwatch's own).
        name: String,
        /// Gauge or counter.
        kind: MetricKind,
        /// The gauge's value, or the counter's increment.
        value: f64,
        /// Its UCUM unit (`By`, `s`, `{token}`), for the HELP text.
        unit: String,
        /// What it measures.
        description: String,
    },
    /// Many complete iterations at once, merged by a client that could not write as
    /// fast as its loop ran: their count, total time and outcomes are exact.
    Iterations(IterationBatch),
    /// An LLM call the loop made and measured itself (not through the metering
    /// proxy): its model, tokens, time, outcome and, if known, cost.
    LlmCall(Box<crate::llm::LlmCall>),
    /// Events the client dropped (its buffer was full or the socket away), reported
    /// when it could write again.
    Dropped {
        /// How many since its previous report.
        count: u64,
    },
    /// One evaluation (a candidate's back-test, a program's run) begins.
    EvaluationStart(EvaluationStart),
    /// An evaluation ends, with its outcome.
    EvaluationEnd(EvaluationEnd),
    /// A framework was instrumented by `loopwatch run --instrument`, or left alone.
    Instrumentation(Instrumentation),
    /// Errors caught inside a framework's instrumentation since its previous report.
    InstrumentationError {
        /// The framework whose instrumentation raised.
        framework: Framework,
        /// How many errors, 1 to [`MAX_INSTRUMENTATION_ERRORS`].
        count: u64,
    },
}

/// A framework the zero-code instrumentation knows (`loopwatch run --instrument`);
/// any other name a line carries reads [`Framework::Other`], so that the label it
/// becomes stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, enum_map::Enum)]
#[non_exhaustive]
pub enum Framework {
    /// OpenEvolve.
    OpenEvolve,
    /// ShinkaEvolve.
    Shinka,
    /// Optuna.
    Optuna,
    /// DEAP.
    Deap,
    /// Nevergrad.
    Nevergrad,
    /// A name the protocol does not know.
    Other,
}

impl Framework {
    /// Every framework, [`Framework::Other`] last.
    pub const ALL: [Framework; 6] = [
        Framework::OpenEvolve,
        Framework::Shinka,
        Framework::Optuna,
        Framework::Deap,
        Framework::Nevergrad,
        Framework::Other,
    ];

    /// The framework's name as the protocol, `--instrument` and the
    /// `framework` label write it.
    ///
    /// ```
    /// use loopwatch::protocol::Framework;
    /// assert_eq!(Framework::parse("openevolve").as_str(), "openevolve");
    /// assert_eq!(Framework::parse("Optuna"), Framework::Other);
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Framework::OpenEvolve => "openevolve",
            Framework::Shinka => "shinka",
            Framework::Optuna => "optuna",
            Framework::Deap => "deap",
            Framework::Nevergrad => "nevergrad",
            Framework::Other => "other",
        }
    }

    /// The framework a name stands for: one of the known names exactly, else
    /// [`Framework::Other`].
    pub fn parse(name: &str) -> Framework {
        Framework::ALL
            .into_iter()
            .find(|f| *f != Framework::Other && f.as_str() == name)
            .unwrap_or(Framework::Other)
    }
}

impl std::fmt::Display for Framework {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the instrumentation did with a framework (docs/protocol.md,
/// `instrumentation`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Instrumentation {
    /// The framework.
    pub framework: Framework,
    /// Its installed version, at most [`MAX_INSTRUMENTATION_VERSION`] characters;
    /// empty when unknown.
    pub version: String,
    /// Whether it was instrumented.
    pub state: InstrumentationState,
    /// Why it was left alone, at most [`MAX_EVALUATION_TEXT`] characters.
    pub reason: Option<String>,
}

/// Whether a framework was instrumented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum InstrumentationState {
    /// Its hook points are patched: it reports.
    Active,
    /// Imported, but left alone: a version outside the tested range, or a hook point
    /// missing.
    Skipped,
    /// Imported, and not selected: `auto` leaves a framework without a passing test
    /// off.
    Off,
}

impl InstrumentationState {
    /// The state as the protocol writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            InstrumentationState::Active => "active",
            InstrumentationState::Skipped => "skipped",
            InstrumentationState::Off => "off",
        }
    }
}

/// An evaluation begins (docs/protocol.md, `evaluation_start`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EvaluationStart {
    /// Its id: 1 to [`MAX_EVALUATION_TEXT`] characters, unique among the run's
    /// evaluations in flight.
    pub id: String,
    /// The process that runs it, if the loop said.
    pub pid: Option<u32>,
    /// The worker that runs it (a pool worker's or a thread's name), if the loop said.
    pub worker: Option<String>,
    /// When it was queued (Unix seconds, by the loop's clock), if the loop said: never
    /// after `at`.
    pub queued: Option<f64>,
    /// When it began (Unix seconds, by the loop's clock), if the line says.
    pub at: Option<f64>,
    /// Whether the process `pid` ends the evaluation, as timed out, on `SIGUSR2` (the
    /// Python client's handler), so that a supervisor may interrupt it before it ends
    /// the process; `false` unless the line says `true`.
    pub interruptible: bool,
}

/// An evaluation ends (docs/protocol.md, `evaluation_end`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EvaluationEnd {
    /// The id its `evaluation_start` carried.
    pub id: String,
    /// The process that ran it, if the loop said.
    pub pid: Option<u32>,
    /// The worker that ran it, if the loop said.
    pub worker: Option<String>,
    /// How it ended.
    pub outcome: EvaluationOutcome,
    /// When it ended (Unix seconds, by the loop's clock), if the line says.
    pub at: Option<f64>,
}

/// How an evaluation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EvaluationOutcome {
    /// It completed (whatever the candidate scored).
    Ok,
    /// It failed: the evaluator raised, or the candidate could not be run.
    Failed {
        /// Why, from a small fixed vocabulary (the Python client sends the exception's
        /// type), at most [`MAX_EVALUATION_TEXT`] characters.
        reason: Option<String>,
    },
    /// It ran out of its time.
    Timeout,
}

impl EvaluationOutcome {
    /// The outcome as the protocol writes it: `ok`, `failed` or `timeout`.
    pub fn as_str(&self) -> &'static str {
        match self {
            EvaluationOutcome::Ok => "ok",
            EvaluationOutcome::Failed { .. } => "failed",
            EvaluationOutcome::Timeout => "timeout",
        }
    }
}

/// A batch of outcomes, summarised: the counts and sums the monitor keeps, with the
/// values it would reject listed one by one so that each is still counted and logged.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct OutcomeSummary {
    /// Strategies that succeeded, valid values or not.
    pub successes: u64,
    /// How many finite Sharpe ratios, their sum and their maximum.
    pub sharpe: (u64, f64, Option<f64>),
    /// How many valid drawdowns (finite, non-negative), and their sum.
    pub drawdown: (u64, f64),
    /// Sharpe ratios that were not finite.
    pub rejected_sharpe: u64,
    /// Drawdowns that were not valid: NaN for one not finite, else the negative value.
    pub rejected_drawdown: Vec<f64>,
    /// Failures: each reason with how many strategies failed for it.
    pub failures: Vec<(String, u64)>,
}

impl OutcomeSummary {
    /// Whether the numbers can be true of some batch of outcomes.
    fn consistent(&self) -> bool {
        let (n, sum, max) = self.sharpe;
        let (dn, dsum) = self.drawdown;
        let sharpe_ok = n.checked_add(self.rejected_sharpe) == Some(self.successes)
            && sum.is_finite()
            && match max {
                Some(max) => n > 0 && max.is_finite(),
                None => n == 0,
            };
        let drawdown_ok = dn
            .checked_add(self.rejected_drawdown.len() as u64)
            .is_some_and(|total| total <= self.successes)
            && dsum.is_finite()
            && dsum >= 0.0
            && self
                .rejected_drawdown
                .iter()
                .all(|d| d.is_nan() || *d < 0.0 || d.is_infinite());
        let failures = self
            .failures
            .iter()
            .try_fold(0u64, |sum, (_, n)| sum.checked_add(*n));
        sharpe_ok
            && drawdown_ok
            && self.successes <= MAX_LINE_COUNT
            && failures.is_some_and(|n| n <= MAX_LINE_COUNT)
    }
}

/// Complete iterations merged into one message (docs/protocol.md, `iterations`).
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct IterationBatch {
    /// How many iterations (at least 1).
    pub count: u64,
    /// Their wall-clock time, summed, in seconds.
    pub seconds: f64,
    /// Their outcomes, summarised.
    pub outcomes: OutcomeSummary,
    /// The population after the last of them, if any was reported.
    pub population: Option<BatchPopulation>,
    /// The champions reported among them, if any.
    pub champions: Option<BatchChampions>,
}

/// The population after the last iteration of a batch.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BatchPopulation {
    /// Strategies in it.
    pub size: u64,
    /// Distinct strategies among them.
    pub unique: u64,
    /// Diversity from 0 to 1 (NaN when it was not a number).
    pub diversity: f64,
}

/// The champions of a batch: the first reported, and the changes after it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BatchChampions {
    /// The first champion reported in the batch.
    pub first: String,
    /// Its iteration within the batch (0-based).
    pub first_at: u64,
    /// The champion after the last iteration.
    pub last: String,
    /// Changes of champion after the first one reported.
    pub changes: u64,
    /// The iteration within the batch of the last of those changes, if any.
    pub last_change_at: Option<u64>,
}

impl IterationBatch {
    /// The most iterations one batch may merge (10^9): a client merges what it could
    /// not send within a few writes, and iteration numbers must never wrap.
    pub const MAX_COUNT: u64 = 1_000_000_000;

    /// Whether the numbers can be true of some iterations (at most
    /// [`IterationBatch::MAX_COUNT`] of them). `count` iterations change
    /// the champion at most `count` times: the first champion reported (a change when
    /// it is new) and fewer than `count` changes after it.
    fn consistent(&self) -> bool {
        let within = |at: u64| at < self.count;
        let champions_ok = self.champions.as_ref().is_none_or(|c| {
            within(c.first_at)
                && c.changes < self.count
                && match c.last_change_at {
                    Some(at) => c.changes > 0 && within(at) && at >= c.first_at,
                    None => c.changes == 0 && c.first == c.last,
                }
        });
        (1..=Self::MAX_COUNT).contains(&self.count)
            && self.seconds.is_finite()
            && self.seconds >= 0.0
            && self.seconds <= self.count as f64 * 1e9
            && self.outcomes.consistent()
            && champions_ok
    }
}

/// Why a line was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// Not a JSON object with the fields its type needs, of the right types.
    #[error("not a JSON object with the fields its type needs")]
    Malformed,
    /// A `"v"` other than the one this build speaks.
    #[error("an unsupported protocol version")]
    UnsupportedVersion,
    /// A `"type"` this build does not know.
    #[error("an unknown message type")]
    UnknownType,
    /// Longer than [`MAX_LINE_BYTES`].
    #[error("a line longer than 64 KiB")]
    TooLong,
}

/// The part of every line read first: its version and type.
#[derive(Deserialize)]
struct Envelope<'a> {
    v: u64,
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
}

/// A number that may arrive as `null` (the client's encoding of NaN and infinities).
fn nan_if_null(value: Option<f64>) -> f64 {
    value.unwrap_or(f64::NAN)
}

#[derive(Deserialize)]
struct SuccessBody {
    sharpe: Option<f64>,
    /// Absent: not reported; `null`: reported, not finite.
    #[serde(default, deserialize_with = "present")]
    drawdown: Option<Option<f64>>,
}

/// Deserialises a field that is present (possibly `null`) as `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct MomentBody {
    /// Unix seconds.
    #[serde(default)]
    t: Option<f64>,
    /// Unix nanoseconds, as a whole number (cheaper for a client to write).
    #[serde(default)]
    t_ns: Option<u64>,
}

impl MomentBody {
    /// The moment in Unix seconds: `t`, else `t_ns`.
    fn at(&self) -> Option<f64> {
        self.t.or(self.t_ns.map(|ns| ns as f64 / 1e9))
    }
}

#[derive(Deserialize)]
struct OutcomesBody {
    #[serde(default)]
    successes: u64,
    /// `[count, sum, max]`, max `null` when the count is 0.
    #[serde(default)]
    sharpe: Option<(u64, f64, Option<f64>)>,
    /// `[count, sum]`.
    #[serde(default)]
    drawdown: Option<(u64, f64)>,
    #[serde(default)]
    rejected_sharpe: u64,
    /// `null` for a drawdown that was not finite, else the negative value.
    #[serde(default)]
    rejected_drawdown: Vec<Option<f64>>,
    #[serde(default)]
    failures: std::collections::BTreeMap<String, u64>,
}

#[derive(Deserialize)]
struct IterationsBody {
    count: u64,
    seconds: f64,
    #[serde(flatten)]
    outcomes: OutcomesBody,
    /// Rejected drawdowns past those listed: `[not finite, negative]`.
    #[serde(default)]
    rejected_drawdown_more: (u64, u64),
    #[serde(default)]
    population: Option<PopulationBody>,
    #[serde(default)]
    champions: Option<ChampionsBody>,
}

#[derive(Deserialize)]
struct ChampionsBody {
    first: String,
    first_at: u64,
    last: String,
    changes: u64,
    #[serde(default)]
    last_change_at: Option<u64>,
}

/// Most rejected values the monitor replays from one line's counts.
const MAX_REPLAYED_REJECTIONS: u64 = 1_000_000;

impl OutcomesBody {
    fn summary(self) -> OutcomeSummary {
        OutcomeSummary {
            successes: self.successes,
            sharpe: self.sharpe.unwrap_or((0, 0.0, None)),
            drawdown: self.drawdown.unwrap_or((0, 0.0)),
            rejected_sharpe: self.rejected_sharpe,
            rejected_drawdown: self
                .rejected_drawdown
                .into_iter()
                .map(nan_if_null)
                .collect(),
            failures: self.failures.into_iter().collect(),
        }
    }
}

#[derive(Deserialize)]
struct FailureBody {
    reason: String,
}

#[derive(Deserialize)]
struct PopulationBody {
    size: u64,
    unique: u64,
    diversity: Option<f64>,
    #[serde(default)]
    champion: Option<String>,
}

#[derive(Deserialize)]
struct MetricBody {
    name: String,
    kind: MetricKind,
    value: Option<f64>,
    #[serde(default)]
    unit: String,
    #[serde(default)]
    description: String,
}

/// The longest model or provider name an `llm_call` line may carry.
const MAX_LLM_NAME: usize = 256;

#[derive(Deserialize)]
struct LlmCallBody {
    model: String,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cached_input_tokens: Option<u64>,
    seconds: Option<f64>,
    #[serde(default)]
    time_to_first_chunk: Option<f64>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    cost_usd: Option<f64>,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    operation: Option<String>,
    /// The call's role (`loopwatch.llm_role`); one that is not a role name is booked
    /// as `invalid`, never refused.
    #[serde(default)]
    role: Option<String>,
}

impl LlmCallBody {
    /// The call, or `None` when a value is out of range: no model, a time that is not
    /// a finite non-negative number, a negative cost, an unknown operation.
    fn call(self) -> Option<crate::llm::LlmCall> {
        let seconds = |s: f64| {
            (s.is_finite() && s >= 0.0).then(|| std::time::Duration::from_secs_f64(s.min(1e9)))
        };
        let model = self.model.trim();
        if model.is_empty() || model.len() > MAX_LLM_NAME {
            return None;
        }
        let mut call = crate::llm::LlmCall::new(model, seconds(self.seconds?)?);
        if let Some(provider) = self.provider.filter(|p| !p.trim().is_empty()) {
            if provider.len() > MAX_LLM_NAME {
                return None;
            }
            call.provider = provider;
        }
        if let Some(operation) = self.operation {
            call.operation = crate::llm::Operation::parse(&operation)?;
        }
        let tokens = [
            self.input_tokens,
            self.output_tokens,
            self.cached_input_tokens,
        ];
        if tokens.into_iter().flatten().any(|n| n > MAX_LINE_COUNT) {
            return None;
        }
        call.input_tokens = self.input_tokens;
        call.output_tokens = self.output_tokens;
        call.cached_input_tokens = self.cached_input_tokens;
        call.time_to_first_chunk = match self.time_to_first_chunk {
            Some(t) => Some(seconds(t)?),
            None => None,
        };
        call.error = self
            .error
            .filter(|e| !e.is_empty())
            .map(|e| crate::llm::LlmError::parse(&e));
        call.cost_usd = match self.cost_usd {
            Some(cost) if cost.is_finite() && cost >= 0.0 => Some(cost),
            Some(_) => return None,
            None => None,
        };
        // Kept to a role name's length and one more: a longer one stays invalid.
        call.role = self
            .role
            .map(|role| role.chars().take(crate::llm::MAX_ROLE_CHARS + 1).collect());
        Some(call)
    }
}

#[derive(Deserialize)]
struct DroppedBody {
    count: u64,
}

/// The fields `evaluation_start` and `evaluation_end` share, and their own.
#[derive(Deserialize)]
struct EvaluationBody {
    id: String,
    #[serde(default)]
    pid: Option<u32>,
    #[serde(default)]
    worker: Option<String>,
    /// When it began or ended, in Unix seconds …
    #[serde(default)]
    t: Option<f64>,
    /// … or in whole Unix nanoseconds.
    #[serde(default)]
    t_ns: Option<u64>,
    /// `evaluation_start`: when it was queued, in Unix seconds …
    #[serde(default)]
    queued: Option<f64>,
    /// … or in whole Unix nanoseconds.
    #[serde(default)]
    queued_ns: Option<u64>,
    /// `evaluation_end`: `ok`, `failed` or `timeout`.
    #[serde(default)]
    outcome: Option<String>,
    /// `evaluation_end` with `failed`: why.
    #[serde(default)]
    reason: Option<String>,
    /// `evaluation_start`: whether its process ends it on `SIGUSR2`.
    #[serde(default)]
    interruptible: Option<bool>,
}

/// Whether `text` is at most [`MAX_EVALUATION_TEXT`] characters.
fn within_evaluation_bound(text: &str) -> bool {
    within(text, MAX_EVALUATION_TEXT)
}

/// A time a line carries: finite and not before the Unix epoch.
fn valid_time(at: Option<f64>) -> bool {
    at.is_none_or(|t| t.is_finite() && t >= 0.0)
}

impl EvaluationBody {
    /// When it began or ended, in Unix seconds: `t`, else `t_ns`.
    fn at(&self) -> Option<f64> {
        self.t.or(self.t_ns.map(|ns| ns as f64 / 1e9))
    }

    /// The id, pid and worker, or `None` when one is out of range: an empty or too
    /// long id or worker name, pid 0, a time that is not a finite Unix time.
    fn common(&self) -> Option<()> {
        let id_ok = !self.id.is_empty() && within_evaluation_bound(&self.id);
        let worker_ok = self
            .worker
            .as_deref()
            .is_none_or(|w| !w.is_empty() && within_evaluation_bound(w));
        (id_ok && worker_ok && self.pid != Some(0) && valid_time(self.at())).then_some(())
    }

    fn start(self) -> Option<EvaluationStart> {
        self.common()?;
        if self.outcome.is_some() || self.reason.is_some() {
            return None; // an end's fields on a start: a client mixing the two up
        }
        let queued = self.queued.or(self.queued_ns.map(|ns| ns as f64 / 1e9));
        let at = self.at();
        if !valid_time(queued) || matches!((queued, at), (Some(q), Some(t)) if q > t) {
            return None;
        }
        Some(EvaluationStart {
            id: self.id,
            pid: self.pid,
            worker: self.worker,
            queued,
            at,
            interruptible: self.interruptible.unwrap_or(false),
        })
    }

    fn end(self) -> Option<EvaluationEnd> {
        self.common()?;
        if self.queued.is_some() || self.queued_ns.is_some() || self.interruptible.is_some() {
            return None; // a start's field on an end
        }
        let at = self.at();
        let outcome = match (self.outcome.as_deref()?, self.reason) {
            ("ok", None) => EvaluationOutcome::Ok,
            ("timeout", None) => EvaluationOutcome::Timeout,
            ("failed", reason) => {
                if reason
                    .as_deref()
                    .is_some_and(|r| !within_evaluation_bound(r))
                {
                    return None;
                }
                EvaluationOutcome::Failed {
                    reason: reason.filter(|r| !r.is_empty()),
                }
            }
            _ => return None,
        };
        Some(EvaluationEnd {
            id: self.id,
            pid: self.pid,
            worker: self.worker,
            outcome,
            at,
        })
    }
}

#[derive(Deserialize)]
struct InstrumentationBody {
    framework: String,
    #[serde(default)]
    version: String,
    state: InstrumentationState,
    #[serde(default)]
    reason: Option<String>,
}

/// Whether `text` is at most `bound` characters.
fn within(text: &str, bound: usize) -> bool {
    // Cheap first: a string of at most that many bytes has at most that many characters.
    text.len() <= bound || text.chars().count() <= bound
}

impl InstrumentationBody {
    /// The message, or `None` when a text is over its bound.
    fn instrumentation(self) -> Option<Instrumentation> {
        if !within(&self.version, MAX_INSTRUMENTATION_VERSION)
            || self
                .reason
                .as_deref()
                .is_some_and(|r| !within(r, MAX_EVALUATION_TEXT))
        {
            return None;
        }
        Some(Instrumentation {
            framework: Framework::parse(&self.framework),
            version: self.version,
            state: self.state,
            reason: self.reason.filter(|r| !r.is_empty()),
        })
    }
}

#[derive(Deserialize)]
struct InstrumentationErrorBody {
    framework: String,
    count: u64,
}

fn body<'a, T: Deserialize<'a>>(line: &'a [u8]) -> Result<T, LineError> {
    serde_json::from_slice(line).map_err(|_| LineError::Malformed)
}

/// Parses one line (without its newline).
pub fn parse_line(line: &[u8]) -> Result<Message, LineError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(LineError::TooLong);
    }
    let envelope: Envelope<'_> = body(line)?;
    if envelope.v != VERSION {
        return Err(LineError::UnsupportedVersion);
    }
    Ok(match envelope.kind.as_ref() {
        "iteration_start" => Message::IterationStart {
            at: body::<MomentBody>(line)?.at(),
        },
        "iteration_end" => Message::IterationEnd {
            at: body::<MomentBody>(line)?.at(),
        },
        "done" => Message::Done,
        "success" => {
            let b: SuccessBody = body(line)?;
            Message::Success {
                sharpe: nan_if_null(b.sharpe),
                drawdown: b.drawdown.map(nan_if_null),
            }
        }
        "outcomes" => {
            let summary = body::<OutcomesBody>(line)?.summary();
            if !summary.consistent() {
                return Err(LineError::Malformed);
            }
            Message::Outcomes(summary)
        }
        "iterations" => {
            let b: IterationsBody = body(line)?;
            let mut outcomes = b.outcomes.summary();
            let (not_finite, negative) = b.rejected_drawdown_more;
            let more = not_finite.saturating_add(negative);
            if more > MAX_REPLAYED_REJECTIONS {
                return Err(LineError::Malformed);
            }
            outcomes.rejected_drawdown.extend(
                std::iter::repeat_n(f64::NAN, not_finite as usize)
                    .chain(std::iter::repeat_n(-1.0, negative as usize)),
            );
            let batch = IterationBatch {
                count: b.count,
                seconds: b.seconds,
                outcomes,
                population: b.population.map(|p| BatchPopulation {
                    size: p.size,
                    unique: p.unique,
                    diversity: nan_if_null(p.diversity),
                }),
                champions: b.champions.map(|c| BatchChampions {
                    first: c.first,
                    first_at: c.first_at,
                    last: c.last,
                    changes: c.changes,
                    last_change_at: c.last_change_at,
                }),
            };
            if !batch.consistent() {
                return Err(LineError::Malformed);
            }
            Message::Iterations(batch)
        }
        "failure" => Message::Failure {
            reason: body::<FailureBody>(line)?.reason,
        },
        "population" => {
            let b: PopulationBody = body(line)?;
            Message::Population {
                size: b.size,
                unique: b.unique,
                diversity: nan_if_null(b.diversity),
                champion: b.champion,
            }
        }
        "metric" => {
            let b: MetricBody = body(line)?;
            Message::Metric {
                name: b.name,
                kind: b.kind,
                value: nan_if_null(b.value),
                unit: b.unit,
                description: b.description,
            }
        }
        "dropped" => {
            let count = body::<DroppedBody>(line)?.count;
            if count > MAX_LINE_COUNT {
                return Err(LineError::Malformed);
            }
            Message::Dropped { count }
        }
        "llm_call" => Message::LlmCall(Box::new(
            body::<LlmCallBody>(line)?
                .call()
                .ok_or(LineError::Malformed)?,
        )),
        "evaluation_start" => Message::EvaluationStart(
            body::<EvaluationBody>(line)?
                .start()
                .ok_or(LineError::Malformed)?,
        ),
        "evaluation_end" => Message::EvaluationEnd(
            body::<EvaluationBody>(line)?
                .end()
                .ok_or(LineError::Malformed)?,
        ),
        "instrumentation" => Message::Instrumentation(
            body::<InstrumentationBody>(line)?
                .instrumentation()
                .ok_or(LineError::Malformed)?,
        ),
        "instrumentation_error" => {
            let b: InstrumentationErrorBody = body(line)?;
            if b.count == 0 {
                return Err(LineError::Malformed);
            }
            Message::InstrumentationError {
                framework: Framework::parse(&b.framework),
                count: b.count.min(MAX_INSTRUMENTATION_ERRORS),
            }
        }
        _ => return Err(LineError::UnknownType),
    })
}

/// Whether `name` may name a loop's own metric: a Prometheus metric name
/// (`[a-zA-Z_][a-zA-Z0-9_]*`, at most 200 bytes) that is not one of loopwatch's (its
/// catalog, the `loopwatch_` prefix, the `process_` standard metrics).
///
/// ```
/// assert!(loopwatch::protocol::valid_metric_name("llm_tokens_total"));
/// assert!(!loopwatch::protocol::valid_metric_name("memory_usage_bytes"));
/// assert!(!loopwatch::protocol::valid_metric_name("2fast"));
/// ```
pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    let well_formed = name.len() <= 200
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    well_formed
        && !name.starts_with("loopwatch_")
        && !name.starts_with("process_")
        && crate::catalog::find_exported(name).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    /// A number as the vectors write it: NaN, which JSON lacks, as the string "NaN".
    fn number(value: f64) -> Value {
        if value.is_nan() {
            json!("NaN")
        } else {
            json!(value)
        }
    }

    /// An outcome summary as the vectors describe it (failures sorted by reason).
    fn outcomes(o: &OutcomeSummary) -> Value {
        let mut failures = o.failures.clone();
        failures.sort();
        json!({
            "successes": o.successes,
            "sharpe": [o.sharpe.0, o.sharpe.1, o.sharpe.2],
            "drawdown": [o.drawdown.0, o.drawdown.1],
            "rejected_sharpe": o.rejected_sharpe,
            "rejected_drawdown": o.rejected_drawdown.iter().map(|d| number(*d)).collect::<Vec<_>>(),
            "failures": failures,
        })
    }

    /// A message as the vectors in `tests/data/protocol/valid.jsonl` describe it.
    fn describe(message: &Message) -> Value {
        match message {
            Message::IterationStart { at } => json!({"type": "iteration_start", "at": at}),
            Message::IterationEnd { at } => json!({"type": "iteration_end", "at": at}),
            Message::Success { sharpe, drawdown } => json!({
                "type": "success",
                "sharpe": number(*sharpe),
                "drawdown": drawdown.map_or(json!("absent"), number),
            }),
            Message::Failure { reason } => json!({"type": "failure", "reason": reason}),
            Message::Outcomes(o) => {
                let mut value = outcomes(o);
                value["type"] = json!("outcomes");
                value
            }
            Message::Iterations(batch) => json!({
                "type": "iterations",
                "count": batch.count,
                "seconds": batch.seconds,
                "outcomes": outcomes(&batch.outcomes),
                "population": batch.population.as_ref().map(|p| json!({
                    "size": p.size, "unique": p.unique, "diversity": number(p.diversity),
                })),
                "champions": batch.champions.as_ref().map(|c| json!({
                    "first": c.first, "first_at": c.first_at, "last": c.last,
                    "changes": c.changes, "last_change_at": c.last_change_at,
                })),
            }),
            Message::Population {
                size,
                unique,
                diversity,
                champion,
            } => json!({
                "type": "population",
                "size": size,
                "unique": unique,
                "diversity": number(*diversity),
                "champion": champion,
            }),
            Message::Done => json!({"type": "done"}),
            Message::Metric {
                name,
                kind,
                value,
                unit,
                description,
            } => json!({
                "type": "metric",
                "name": name,
                "kind": match kind { MetricKind::Gauge => "gauge", MetricKind::Counter => "counter" },
                "value": number(*value),
                "unit": unit,
                "description": description,
            }),
            Message::Dropped { count } => json!({"type": "dropped", "count": count}),
            Message::EvaluationStart(e) => json!({
                "type": "evaluation_start",
                "id": e.id,
                "pid": e.pid,
                "worker": e.worker,
                "queued": e.queued,
                "at": e.at,
                "interruptible": e.interruptible,
            }),
            Message::EvaluationEnd(e) => json!({
                "type": "evaluation_end",
                "id": e.id,
                "pid": e.pid,
                "worker": e.worker,
                "outcome": e.outcome.as_str(),
                "reason": match &e.outcome {
                    EvaluationOutcome::Failed { reason } => json!(reason),
                    _ => json!("absent"),
                },
                "at": e.at,
            }),
            Message::Instrumentation(i) => json!({
                "type": "instrumentation",
                "framework": i.framework.as_str(),
                "version": i.version,
                "state": i.state.as_str(),
                "reason": i.reason,
            }),
            Message::InstrumentationError { framework, count } => json!({
                "type": "instrumentation_error",
                "framework": framework.as_str(),
                "count": count,
            }),
            Message::LlmCall(call) => {
                let mut message = json!({
                "type": "llm_call",
                "model": call.request_model,
                "provider": call.provider,
                "operation": call.operation.as_str(),
                "input_tokens": call.input_tokens,
                "output_tokens": call.output_tokens,
                "cached_input_tokens": call.cached_input_tokens,
                "seconds": call.duration.as_secs_f64(),
                "time_to_first_chunk": call.time_to_first_chunk.map(|t| t.as_secs_f64()),
                "error": call.error.map(|e| e.as_label().into_owned()),
                "cost_usd": call.cost_usd,
                });
                if let Some(role) = &call.role {
                    message["role"] = json!(role);
                }
                message
            }
        }
    }

    /// The vectors of one file; a vector's line is `line`, or `line_prefix`, `pad`
    /// x's and `line_suffix`.
    fn vectors(file: &str) -> Vec<(String, Value)> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/protocol")
            .join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        text.lines()
            .map(|line| {
                let vector: Value = serde_json::from_str(line).unwrap();
                let text = match vector["line"].as_str() {
                    Some(line) => line.to_string(),
                    None => format!(
                        "{}{}{}",
                        vector["line_prefix"].as_str().unwrap(),
                        "x".repeat(vector["pad"].as_u64().unwrap() as usize),
                        vector["line_suffix"].as_str().unwrap()
                    ),
                };
                (text, vector)
            })
            .collect()
    }

    /// The shared test vectors (the Python client's tests read the same files).
    #[test]
    fn the_shared_vectors_parse_as_they_say() {
        let valid = vectors("valid.jsonl");
        assert!(valid.len() >= 15);
        for (line, vector) in valid {
            let parsed =
                parse_line(line.as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", vector["name"]));
            assert_eq!(describe(&parsed), vector["message"], "{}", vector["name"]);
        }
        let invalid = vectors("invalid.jsonl");
        assert!(invalid.len() >= 10);
        for (line, vector) in invalid {
            let expected = match vector["error"].as_str().unwrap() {
                "malformed" => LineError::Malformed,
                "unsupported_version" => LineError::UnsupportedVersion,
                "unknown_type" => LineError::UnknownType,
                "too_long" => LineError::TooLong,
                other => panic!("unknown error {other}"),
            };
            assert_eq!(
                parse_line(line.as_bytes()),
                Err(expected),
                "{}",
                vector["name"]
            );
        }
    }

    #[test]
    fn every_documented_message_parses() {
        let cases: [(&str, Message); 9] = [
            (
                r#"{"v":1,"type":"outcomes","successes":3,"sharpe":[2,2.0,1.5],"drawdown":[1,0.2],"rejected_sharpe":1,"rejected_drawdown":[null],"failures":{"too few trades":4}}"#,
                Message::Outcomes(OutcomeSummary {
                    successes: 3,
                    sharpe: (2, 2.0, Some(1.5)),
                    drawdown: (1, 0.2),
                    rejected_sharpe: 1,
                    rejected_drawdown: vec![f64::NAN],
                    failures: vec![("too few trades".into(), 4)],
                }),
            ),
            (
                r#"{"v":1,"type":"iteration_start","t":1764380000.5}"#,
                Message::IterationStart {
                    at: Some(1764380000.5),
                },
            ),
            (
                r#"{"v":1,"type":"success","sharpe":1.3,"drawdown":0.18}"#,
                Message::Success {
                    sharpe: 1.3,
                    drawdown: Some(0.18),
                },
            ),
            (
                r#"{"v":1,"type":"failure","reason":"too few trades"}"#,
                Message::Failure {
                    reason: "too few trades".into(),
                },
            ),
            (
                r#"{"v":1,"type":"population","size":50,"unique":41,"diversity":0.62,"champion":"ma-10-50"}"#,
                Message::Population {
                    size: 50,
                    unique: 41,
                    diversity: 0.62,
                    champion: Some("ma-10-50".into()),
                },
            ),
            (
                r#"{"v":1,"type":"iteration_end"}"#,
                Message::IterationEnd { at: None },
            ),
            (r#"{"v":1,"type":"done"}"#, Message::Done),
            (
                r#"{"v":1,"type":"metric","name":"llm_tokens","kind":"gauge","value":1234,"unit":"{token}","description":"Tokens used"}"#,
                Message::Metric {
                    name: "llm_tokens".into(),
                    kind: MetricKind::Gauge,
                    value: 1234.0,
                    unit: "{token}".into(),
                    description: "Tokens used".into(),
                },
            ),
            (
                r#"{"v":1,"type":"dropped","count":7}"#,
                Message::Dropped { count: 7 },
            ),
        ];
        for (line, expected) in cases {
            let parsed = parse_line(line.as_bytes());
            // NaN is not equal to itself: compare the debug forms.
            assert_eq!(
                format!("{parsed:?}"),
                format!("{:?}", Ok::<_, LineError>(expected)),
                "{line}"
            );
        }
        for bad in [
            // counts that cannot add up, a maximum without values, a valid value
            // listed as rejected, a negative count
            r#"{"v":1,"type":"outcomes","successes":1,"sharpe":[2,1.0,1.0]}"#,
            r#"{"v":1,"type":"outcomes","successes":0,"sharpe":[0,0.0,1.0]}"#,
            r#"{"v":1,"type":"outcomes","successes":2,"sharpe":[2,1.0,1.0],"drawdown":[2,0.1],"rejected_drawdown":[null]}"#,
            r#"{"v":1,"type":"outcomes","successes":1,"sharpe":[1,1.0,1.0],"rejected_drawdown":[0.5]}"#,
            r#"{"v":1,"type":"outcomes","failures":{"x":-1}}"#,
        ] {
            assert_eq!(
                parse_line(bad.as_bytes()),
                Err(LineError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn null_numbers_read_nan_and_bad_lines_say_why() {
        let Ok(Message::Success { sharpe, drawdown }) =
            parse_line(br#"{"v":1,"type":"success","sharpe":null,"drawdown":0.1}"#)
        else {
            panic!("a null Sharpe is a success with a NaN Sharpe");
        };
        assert!(sharpe.is_nan());
        assert_eq!(drawdown, Some(0.1));
        assert_eq!(
            parse_line(br#"{"v":1,"type":"success","sharpe":2}"#),
            Ok(Message::Success {
                sharpe: 2.0,
                drawdown: None
            })
        );
        let Ok(Message::Success {
            drawdown: Some(d), ..
        }) = parse_line(br#"{"v":1,"type":"success","sharpe":2,"drawdown":null}"#)
        else {
            panic!("a null drawdown is reported and not finite");
        };
        assert!(d.is_nan());
        let bad: [(&[u8], LineError); 9] = [
            (b"", LineError::Malformed),
            (
                b"{\"v\":1,\"type\":\"success\",\"sharpe\":NaN,\"drawdown\":0}",
                LineError::Malformed,
            ),
            (
                b"{\"v\":1,\"type\":\"success\",\"sharpe\":\"high\",\"drawdown\":0}",
                LineError::Malformed,
            ),
            (b"{\"v\":1,\"type\":\"failure\"}", LineError::Malformed),
            (
                b"{\"v\":1,\"type\":\"population\",\"size\":-1,\"unique\":0,\"diversity\":0}",
                LineError::Malformed,
            ),
            (b"{\"v\":1,\"type\":\"iteration_st", LineError::Malformed),
            (b"{\"type\":\"done\"}", LineError::Malformed),
            (
                b"{\"v\":2,\"type\":\"done\"}",
                LineError::UnsupportedVersion,
            ),
            (b"{\"v\":1,\"type\":\"teleport\"}", LineError::UnknownType),
        ];
        for (line, why) in bad {
            assert_eq!(
                parse_line(line),
                Err(why),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        let long = format!(
            r#"{{"v":1,"type":"failure","reason":"{}"}}"#,
            "x".repeat(MAX_LINE_BYTES)
        );
        assert_eq!(parse_line(long.as_bytes()), Err(LineError::TooLong));
    }

    #[test]
    fn evaluation_texts_are_bounded_in_characters_not_bytes() {
        let line = |field: &str, text: &str| {
            let mut value =
                json!({"v": 1, "type": "evaluation_end", "id": "a", "outcome": "failed"});
            value[field] = json!(text);
            parse_line(value.to_string().as_bytes())
        };
        for field in ["id", "worker", "reason"] {
            for unit in ["x", "é", "🦀"] {
                let at_bound = unit.repeat(MAX_EVALUATION_TEXT);
                assert!(line(field, &at_bound).is_ok(), "{field} of {unit}");
                let past = unit.repeat(MAX_EVALUATION_TEXT + 1);
                assert_eq!(
                    line(field, &past),
                    Err(LineError::Malformed),
                    "{field} of {unit}"
                );
            }
        }
        let Ok(Message::EvaluationEnd(end)) = line("reason", "") else {
            panic!("an empty reason is a failure without one");
        };
        assert_eq!(end.outcome, EvaluationOutcome::Failed { reason: None });
        // A start queued and begun at the same moment is fine; 1 ns later is not.
        let start = |queued_ns: u64| {
            parse_line(
                format!(r#"{{"v":1,"type":"evaluation_start","id":"a","queued_ns":{queued_ns},"t_ns":1764380000125000000}}"#)
                    .as_bytes(),
            )
        };
        assert!(start(1764380000125000000).is_ok());
        assert_eq!(start(1764380001125000000), Err(LineError::Malformed));
    }

    #[test]
    fn metric_names_follow_prometheus_and_stay_clear_of_loopwatch() {
        for good in ["llm_tokens", "_private", "evals_total", "a1"] {
            assert!(valid_metric_name(good), "{good}");
        }
        for bad in [
            "",
            "9lives",
            "has-dash",
            "has space",
            "colon:name",
            "loopwatch_anything",
            "process_open_fds",
            "sharpe_ratio",
            "ünïcode",
        ] {
            assert!(!valid_metric_name(bad), "{bad}");
        }
        assert!(!valid_metric_name(&"a".repeat(201)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(line in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_line(&line);
        }

        #[test]
        fn arbitrary_evaluation_fields_never_panic(
            id in ".{0,300}",
            pid in any::<i64>(),
            t in any::<f64>(),
            queued in any::<f64>(),
            outcome in prop_oneof![Just("ok".to_string()), Just("failed".to_string()), Just("timeout".to_string()), ".*"],
        ) {
            for kind in ["evaluation_start", "evaluation_end"] {
                let line = serde_json::json!({
                    "v": 1, "type": kind, "id": id, "pid": pid, "t": t, "queued": queued,
                    "outcome": outcome,
                });
                let _ = parse_line(line.to_string().as_bytes());
            }
        }

        #[test]
        fn arbitrary_json_values_never_panic(reason in ".*", number in any::<f64>()) {
            let line = serde_json::json!({"v": 1, "type": "failure", "reason": reason, "x": number.to_string()});
            prop_assert!(parse_line(line.to_string().as_bytes()).is_ok());
        }
    }
}
