//! LLM calls: what one call cost in tokens, time and money, and whether it failed.
//!
//! Calls arrive from the metering proxy of `loopwatch run --llm-proxy` (the `proxy`
//! module, feature `llm-proxy`), from the protocol's `llm_call` message, or from
//! [`crate::Monitor::llm_call`]. Each is priced from the `[llm.prices]` table of
//! `loopwatch.toml` ([`LlmConfig`]), published under the OpenTelemetry GenAI names
//! (`gen_ai.client.token.usage`, `gen_ai.client.operation.duration`) and loopwatch's
//! own (`loopwatch_llm_*`), kept by model for the snapshot and the final files, and
//! judged by LLMErrors, LLMSpendWithoutProgress and LLMBudget.
//!
//! ```
//! use std::time::Duration;
//! use loopwatch::llm::{LlmCall, LlmConfig, Price};
//!
//! let prices = LlmConfig::default().with_price("gpt-4o", Price::per_million(2.5, 10.0));
//! let call = LlmCall::new("gpt-4o", Duration::from_millis(800)).with_tokens(1_000, 200);
//! let cost = prices.cost(&call).unwrap();
//! assert!((cost - (1_000.0 * 2.5 + 200.0 * 10.0) / 1e6).abs() < 1e-12);
//! ```

pub mod budget;
pub mod headroom;
pub(crate) mod meter;
pub use budget::{Admission, Budget, BudgetAction, BudgetRefusal, BudgetSummary, CallRequest};
pub use headroom::Headroom;
pub use meter::{LimitTally, LlmSummary, MinuteTally, ModelTally, RateLimitTally};
#[cfg(feature = "llm-proxy")]
pub mod proxy;
#[cfg(feature = "llm-proxy")]
pub mod route;
mod scan;
#[cfg(feature = "llm-proxy")]
pub mod upstream;
pub mod usage;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Most distinct model names kept as label values; calls of further models are
/// published under [`OTHER_MODEL`], so a stream of odd names cannot grow the series.
pub const MAX_MODELS: usize = 32;

/// The model label of calls past [`MAX_MODELS`] distinct names, and of calls that
/// named none.
pub const OTHER_MODEL: &str = "other";

/// LLMErrors needs at least this many failed calls in its window, so that one early
/// failure out of one call is not an outage.
pub const LLM_ERRORS_MIN_FAILURES: u64 = 3;

/// What LLMBudget and LLMSpendWithoutProgress say beside their message, and the
/// page beside the spend, when some call's usage was unknown or some tokens had no
/// price: the spend they judge counts neither.
pub const SPEND_LOWER_BOUND: &str =
    "the spend is a lower bound: some LLM calls reported no usage or had tokens without a price";

/// The longest model or provider name kept; longer ones are cut.
const MAX_NAME_CHARS: usize = 128;

/// The request header that names a call's role (`mutation`, `judge` …) for the
/// metering proxy, which reads it and strips it: it never reaches the provider.
pub const ROLE_HEADER: &str = "x-loopwatch-role";

/// Most distinct role names kept as label values; calls of further roles are
/// published under [`OTHER_ROLE`] and counted as an overflow, so that a stream of odd
/// names cannot grow the series.
pub const MAX_ROLES: usize = 16;

/// The longest role name taken; a longer one is not a role name ([`INVALID_ROLE`]).
pub const MAX_ROLE_CHARS: usize = 64;

/// The role label of calls that named none.
pub const NO_ROLE: &str = "none";

/// The role label of calls past [`MAX_ROLES`] distinct role names.
pub const OTHER_ROLE: &str = "other";

/// The role label of calls whose role is not a role name: empty, too long, characters
/// other than ASCII letters, digits and `_ - . : /`, several values at once, or one of
/// the reserved labels [`NO_ROLE`], [`OTHER_ROLE`] and `invalid` itself.
pub const INVALID_ROLE: &str = "invalid";

/// Whether `name` is a role name a call may carry as its label: 1 to
/// [`MAX_ROLE_CHARS`] ASCII letters, digits, `_`, `-`, `.`, `:` or `/`, and none of
/// the reserved labels (`none`, `other`, `invalid`, in any case).
///
/// ```
/// use loopwatch::llm::valid_role;
/// assert!(valid_role("mutation"));
/// assert!(valid_role("judge/v2"));
/// assert!(!valid_role(""));
/// assert!(!valid_role("two words"));
/// assert!(!valid_role("Other"));
/// assert!(!valid_role(&"x".repeat(65)));
/// ```
pub fn valid_role(name: &str) -> bool {
    (1..=MAX_ROLE_CHARS).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/'))
        && ![NO_ROLE, OTHER_ROLE, INVALID_ROLE]
            .iter()
            .any(|reserved| name.eq_ignore_ascii_case(reserved))
}

/// Where measured calls go: the run's books and instruments
/// ([`crate::LlmRecorder`], from [`crate::Monitor::llm_recorder`]).
pub trait CallRecorder: Send + Sync + 'static {
    /// A call asks to start: admitted (its id ends it, and its worst case is
    /// reserved against the budget until then) or, under a budget that blocks and is
    /// spent, refused (it is then counted as `blocked` and must not be sent).
    fn started(&self, request: &CallRequest) -> Admission;
    /// Call `id` is over, as `call` says: it is booked and no longer in flight. Its
    /// reservation gives way to its cost; when its usage is unknown
    /// ([`LlmCall::usage_missing`]) and a budget is set, the reservation, its worst
    /// case, is charged against the budget instead (an estimate: the reported cost
    /// stays without it).
    fn ended(&self, id: u64, call: &LlmCall);
    /// Whether the metering proxy asks streamed requests for their usage, as
    /// `--llm-request-usage` does: a budget is set, and a call whose usage is unknown
    /// would count at its worst case. No by default.
    fn asks_for_usage(&self) -> bool {
        false
    }
}

/// What kind of request a call was (`gen_ai.operation.name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Operation {
    /// Chat completions (OpenAI `/v1/chat/completions`, Anthropic `/v1/messages`).
    Chat,
    /// Text completions (`/v1/completions`).
    TextCompletion,
    /// The Responses API (`/v1/responses`).
    GenerateContent,
    /// Embeddings (`/v1/embeddings`).
    Embeddings,
}

impl Operation {
    /// The `gen_ai.operation.name` value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::TextCompletion => "text_completion",
            Operation::GenerateContent => "generate_content",
            Operation::Embeddings => "embeddings",
        }
    }

    /// The operation named by its `gen_ai.operation.name` value.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Operation::Chat,
            Operation::TextCompletion,
            Operation::GenerateContent,
            Operation::Embeddings,
        ]
        .into_iter()
        .find(|op| op.as_str() == name)
    }
}

/// Why a call failed (`error.type`): an HTTP status, or a failure before one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum LlmError {
    /// The upstream answered with this status (400 or above).
    Status(u16),
    /// No answer in time.
    Timeout,
    /// The upstream could not be reached, or the connection failed.
    Connection,
    /// A streamed answer stopped before its end.
    StreamCut,
    /// The provider said the call failed inside an answer whose status was a
    /// success (a Responses API `response.failed`, an `error` event mid-stream):
    /// its error type, one of [`PROVIDER_ERRORS`] or `provider_error`.
    Provider(&'static str),
    /// Any other failure the loop reported.
    Other,
}

/// The error types a provider names inside an answer ([`LlmError::Provider`]), and
/// whether each is an outage (the provider's fault) rather than the request's.
/// Others are `provider_error`, an outage.
pub const PROVIDER_ERRORS: [(&str, bool); 15] = [
    // OpenAI (error objects, and the Responses API's error codes).
    ("server_error", true),
    ("rate_limit_exceeded", true),
    ("vector_store_timeout", true),
    ("invalid_prompt", false),
    ("invalid_request_error", false),
    ("context_length_exceeded", false),
    // Anthropic.
    ("api_error", true),
    ("overloaded_error", true),
    ("rate_limit_error", true),
    ("timeout_error", true),
    ("authentication_error", false),
    ("permission_error", false),
    ("not_found_error", false),
    ("request_too_large", false),
    ("billing_error", false),
];

/// The error type of a provider's failure it did not name, or named otherwise.
const PROVIDER_ERROR: &str = "provider_error";

impl LlmError {
    /// The `error.type` value: the status code (`"429"`, `"503"`), the provider's
    /// error type (`server_error`, `overloaded_error`), or `timeout`, `connection`,
    /// `stream_cut`, `other`.
    pub fn as_label(self) -> std::borrow::Cow<'static, str> {
        match self {
            LlmError::Status(code) => code.to_string().into(),
            LlmError::Timeout => "timeout".into(),
            LlmError::Connection => "connection".into(),
            LlmError::StreamCut => "stream_cut".into(),
            LlmError::Provider(kind) => kind.into(),
            LlmError::Other => "other".into(),
        }
    }

    /// The failure a provider named inside an answer: its type when it is one of
    /// [`PROVIDER_ERRORS`], else `provider_error` (labels stay bounded).
    ///
    /// ```
    /// use loopwatch::llm::LlmError;
    /// assert_eq!(LlmError::provider("server_error").as_label(), "server_error");
    /// assert_eq!(LlmError::provider("something new").as_label(), "provider_error");
    /// ```
    pub fn provider(kind: &str) -> Self {
        LlmError::Provider(
            PROVIDER_ERRORS
                .iter()
                .find(|(name, _)| *name == kind)
                .map_or(PROVIDER_ERROR, |(name, _)| name),
        )
    }

    /// Reads an `error.type` as a loop reports it: a status code, `timeout`,
    /// `connection`, `stream_cut`, `rate_limit` (429), a provider's error type of
    /// [`PROVIDER_ERRORS`]; anything else is `other`.
    ///
    /// ```
    /// use loopwatch::llm::LlmError;
    /// assert_eq!(LlmError::parse("429"), LlmError::Status(429));
    /// assert_eq!(LlmError::parse("rate_limit"), LlmError::Status(429));
    /// assert_eq!(LlmError::parse("APIConnectionError"), LlmError::Other);
    /// ```
    pub fn parse(text: &str) -> Self {
        match text.trim().to_ascii_lowercase().as_str() {
            "timeout" | "timed_out" => LlmError::Timeout,
            "connection" | "connection_error" => LlmError::Connection,
            "stream_cut" => LlmError::StreamCut,
            "rate_limit" | "rate_limited" => LlmError::Status(429),
            PROVIDER_ERROR => LlmError::Provider(PROVIDER_ERROR),
            other => match other.parse::<u16>() {
                Ok(code) if (400..=599).contains(&code) => LlmError::Status(code),
                _ if PROVIDER_ERRORS.iter().any(|(name, _)| *name == other) => {
                    LlmError::provider(other)
                }
                _ => LlmError::Other,
            },
        }
    }

    /// Whether the failure is the provider's or the network's, and so counts toward
    /// LLMErrors: 5xx, 429, timeouts, connection failures, cut-off streams and
    /// failures the loop reported without a status. Other 4xx answers are the
    /// request's own fault and are counted as errors but not as an outage.
    pub fn is_outage(self) -> bool {
        match self {
            LlmError::Status(code) => code == 429 || code >= 500,
            LlmError::Provider(kind) => PROVIDER_ERRORS
                .iter()
                .find(|(name, _)| *name == kind)
                .is_none_or(|(_, outage)| *outage),
            _ => true,
        }
    }
}

/// One LLM call, as measured.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LlmCall {
    /// Who served it (`gen_ai.provider.name`): `openai`, `anthropic` …
    pub provider: String,
    /// What kind of request it was.
    pub operation: Operation,
    /// The model asked for.
    pub request_model: String,
    /// The model that answered, when the answer says.
    pub response_model: Option<String>,
    /// Input (prompt) tokens, when the answer says.
    pub input_tokens: Option<u64>,
    /// Output (completion) tokens, when the answer says.
    pub output_tokens: Option<u64>,
    /// Input tokens read from the provider's cache (a part of `input_tokens`), when
    /// the answer says.
    pub cached_input_tokens: Option<u64>,
    /// Input tokens written to the provider's cache (a part of `input_tokens`;
    /// Anthropic's `cache_creation_input_tokens`), billed at a price of their own.
    pub cache_write_input_tokens: Option<u64>,
    /// Reasoning tokens (a part of `output_tokens`), when the answer says.
    pub reasoning_tokens: Option<u64>,
    /// From the request to the end of the answer (or the failure).
    pub duration: Duration,
    /// From the request to the first chunk of a streamed answer.
    pub time_to_first_chunk: Option<Duration>,
    /// Why it failed, if it did.
    pub error: Option<LlmError>,
    /// The wait a 429 asked for (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// Its cost in US dollars when the caller knows it; otherwise it is priced from
    /// the `[llm.prices]` table.
    pub cost_usd: Option<f64>,
    /// Cut short before its answer ended, by the loop (it hung up) or by loopwatch
    /// (a stop, kill, restart or exit timeout of the loop, the proxy's end): neither
    /// a success nor a failure, and outside LLMErrors. `error` is `None` then.
    pub abandoned: bool,
    /// Refused by a spent budget (`[llm.budget] action = "block"` or `"stop"`) and
    /// never sent: not a failure, outside LLMErrors, free. `error` is `None` then.
    pub blocked: bool,
    /// Deferred by the budget and never sent: refused for now with a retriable
    /// error, because the calls in flight could take the spend past the budget. Not a
    /// failure, outside LLMErrors, free. `error` is `None` then.
    pub deferred: bool,
    /// The role the caller gave the call (the `X-Loopwatch-Role` header, Python's
    /// `loopwatch.llm_role`), as given: the books label it by it when it is a role
    /// name ([`valid_role`]), else by [`INVALID_ROLE`]; [`NO_ROLE`] when `None`.
    pub role: Option<String>,
    /// What its answer stated of the provider's rate limits, as of when the call is
    /// booked (see [`Headroom::aged`]): the last word of its provider and the model it
    /// asked for, until the next.
    pub headroom: Option<Headroom>,
}

impl LlmCall {
    /// A chat call to `model` that took `duration`, provider `unknown`, no usage yet.
    pub fn new(model: impl Into<String>, duration: Duration) -> Self {
        LlmCall {
            provider: "unknown".into(),
            operation: Operation::Chat,
            request_model: model.into(),
            response_model: None,
            input_tokens: None,
            output_tokens: None,
            cached_input_tokens: None,
            cache_write_input_tokens: None,
            reasoning_tokens: None,
            duration,
            time_to_first_chunk: None,
            error: None,
            retry_after: None,
            cost_usd: None,
            abandoned: false,
            blocked: false,
            deferred: false,
            role: None,
            headroom: None,
        }
    }

    /// With what its answer stated of the provider's rate limits.
    pub fn with_headroom(mut self, headroom: Headroom) -> Self {
        self.headroom = Some(headroom);
        self
    }

    /// With the role the caller gave it (see [`LlmCall::role`]).
    pub fn with_role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }

    /// With the input and output tokens the answer reported.
    pub fn with_tokens(mut self, input: u64, output: u64) -> Self {
        self.input_tokens = Some(input);
        self.output_tokens = Some(output);
        self
    }

    /// With the provider's name.
    pub fn with_provider(mut self, provider: impl Into<String>) -> Self {
        self.provider = provider.into();
        self
    }

    /// With the kind of request.
    pub fn with_operation(mut self, operation: Operation) -> Self {
        self.operation = operation;
        self
    }

    /// As failed.
    pub fn with_error(mut self, error: LlmError) -> Self {
        self.error = Some(error);
        self
    }

    /// With a cost known to the caller.
    pub fn with_cost_usd(mut self, cost: f64) -> Self {
        self.cost_usd = Some(cost);
        self
    }

    /// As cut short before its answer ended (see [`LlmCall::abandoned`]).
    pub fn with_abandoned(mut self) -> Self {
        self.abandoned = true;
        self
    }

    /// As refused by the budget (see [`LlmCall::blocked`]).
    pub fn with_blocked(mut self) -> Self {
        self.blocked = true;
        self
    }

    /// As deferred by the budget (see [`LlmCall::deferred`]).
    pub fn with_deferred(mut self) -> Self {
        self.deferred = true;
        self
    }

    /// Whether the budget turned it away (blocked or deferred): it was never sent.
    pub fn refused(&self) -> bool {
        (self.blocked || self.deferred) && self.error.is_none()
    }

    /// The `outcome` label of `loopwatch_llm_calls_total`: `ok`, `abandoned`,
    /// `blocked`, `deferred`, or the error type.
    pub fn outcome(&self) -> std::borrow::Cow<'static, str> {
        match self.error {
            Some(error) => error.as_label(),
            None if self.blocked => "blocked".into(),
            None if self.deferred => "deferred".into(),
            None if self.abandoned => "abandoned".into(),
            None => "ok".into(),
        }
    }

    /// Whether the provider may have billed the call while its usage is unknown: it
    /// did not fail, or failed in a way a provider still bills (a timeout: the
    /// provider may have finished it; a cut stream: what was generated), reported no
    /// cost, and lacks its input or output count (an embedding has no output). Its spend is not known, so the run's is a lower
    /// bound.
    ///
    /// ```
    /// use std::time::Duration;
    /// use loopwatch::llm::LlmCall;
    /// let call = LlmCall::new("llama3", Duration::ZERO);
    /// assert!(call.usage_missing());
    /// assert!(!call.clone().with_tokens(3, 4).usage_missing());
    /// assert!(call.clone().with_abandoned().usage_missing());
    /// assert!(call.clone().with_error(loopwatch::llm::LlmError::Timeout).usage_missing());
    /// assert!(!call.with_error(loopwatch::llm::LlmError::Status(503)).usage_missing());
    /// ```
    pub fn usage_missing(&self) -> bool {
        let counted = self.input_tokens.is_some()
            && (self.output_tokens.is_some() || self.operation == Operation::Embeddings);
        // A call that timed out or whose stream was cut may have been billed (the
        // provider finished it, or billed what it generated): unknown, not free.
        let billable = matches!(
            self.error,
            None | Some(LlmError::Timeout | LlmError::StreamCut)
        );
        billable && !self.blocked && !self.deferred && self.cost_usd.is_none() && !counted
    }

    /// The model it is priced and labelled by: the one that answered, else the one
    /// asked for.
    pub fn model(&self) -> &str {
        self.response_model
            .as_deref()
            .filter(|m| !m.is_empty())
            .unwrap_or(&self.request_model)
    }
}

/// A model's price in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Price {
    /// Per million input tokens.
    pub input_per_million: f64,
    /// Per million output tokens.
    pub output_per_million: f64,
    /// Per million input tokens read from the provider's cache; the input price when
    /// not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_million: Option<f64>,
    /// Per million input tokens written to the provider's cache (Anthropic bills them
    /// at 1.25 or 2 times the input price). Without it, such tokens are counted as
    /// unpriced, never as plain input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_input_per_million: Option<f64>,
}

impl Price {
    /// A price per million input and output tokens.
    pub fn per_million(input: f64, output: f64) -> Self {
        Price {
            input_per_million: input,
            output_per_million: output,
            cached_input_per_million: None,
            cache_write_input_per_million: None,
        }
    }

    /// With a price per million cached input tokens.
    pub fn with_cached_input(mut self, per_million: f64) -> Self {
        self.cached_input_per_million = Some(per_million);
        self
    }

    /// With a price per million input tokens written to the cache.
    pub fn with_cache_write_input(mut self, per_million: f64) -> Self {
        self.cache_write_input_per_million = Some(per_million);
        self
    }

    fn valid(&self) -> bool {
        [self.input_per_million, self.output_per_million]
            .into_iter()
            .chain(self.cached_input_per_million)
            .chain(self.cache_write_input_per_million)
            .all(|p| p.is_finite() && p >= 0.0)
    }
}

/// What a call cost at the table's prices.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct Pricing {
    /// Its cost in US dollars: the caller's figure, or its priced tokens at their
    /// prices; `None` when its model has no price or it reported no usage.
    pub cost_usd: Option<f64>,
    /// Tokens it reported that have no price: all of them when its model has none,
    /// else its cache writes when the model's price has no key for them.
    pub unpriced_tokens: u64,
}

/// The `[llm]` table of `loopwatch.toml`:
///
/// ```toml
/// [llm.prices."claude-sonnet-4"]
/// input_per_million = 3.00
/// output_per_million = 15.00
/// cached_input_per_million = 0.30
/// cache_write_input_per_million = 3.75
/// ```
///
/// A model is priced by its exact name, else by the longest priced name it extends
/// with a date or version suffix only (`gpt-4o` prices `gpt-4o-2024-08-06`, not
/// `gpt-4o-mini`). A model without a price is never guessed: its tokens are counted
/// in `loopwatch_llm_unpriced_tokens_total`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "LlmConfigFile")]
#[non_exhaustive]
pub struct LlmConfig {
    /// Prices by model name.
    pub prices: BTreeMap<String, Price>,
    /// `[llm.budget] action`: what happens when the budget is spent. The amount is
    /// the thresholds' (see [`crate::Thresholds::llm_budget`]).
    #[serde(skip_serializing_if = "is_warn")]
    pub(crate) budget_action: BudgetAction,
    /// `[llm.budget] usd` as written, until the thresholds take it over.
    #[serde(skip)]
    pub(crate) budget_usd: Option<f64>,
    /// `[[llm.servers]]`: the local model servers read at the sampling interval,
    /// checked on the way in (at most eight, each name once): set through
    /// [`LlmConfig::with_server`] or the file, read through [`LlmConfig::servers`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) servers: Vec<crate::servers::ModelServer>,
}

fn is_warn(action: &BudgetAction) -> bool {
    *action == BudgetAction::Warn
}

/// [`LlmConfig`] as written, checked on the way in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LlmConfigFile {
    #[serde(default)]
    prices: BTreeMap<String, Price>,
    #[serde(default)]
    budget: Option<BudgetFile>,
    #[serde(default)]
    servers: Vec<crate::servers::ModelServer>,
}

/// `[llm.budget]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetFile {
    usd: Option<f64>,
    #[serde(default)]
    action: Option<String>,
}

impl TryFrom<LlmConfigFile> for LlmConfig {
    type Error = String;

    fn try_from(file: LlmConfigFile) -> Result<Self, String> {
        if let Some((model, _)) = file.prices.iter().find(|(_, p)| !p.valid()) {
            return Err(format!(
                "llm.prices.\"{model}\": prices must be finite and zero or more"
            ));
        }
        let (mut budget_usd, mut budget_action) = (None, BudgetAction::Warn);
        if let Some(budget) = file.budget {
            if let Some(usd) = budget.usd {
                if !(usd.is_finite() && usd > 0.0) {
                    return Err(format!(
                        "llm.budget.usd: expected a positive amount of US dollars, not {usd}"
                    ));
                }
                budget_usd = Some(usd);
            }
            if let Some(action) = budget.action {
                budget_action = action
                    .parse()
                    .map_err(|e: String| format!("llm.budget.action: {e}"))?;
            }
        }
        crate::servers::check(&file.servers).map_err(|e| format!("llm.servers: {e}"))?;
        Ok(LlmConfig {
            prices: file.prices,
            budget_action,
            budget_usd,
            servers: file.servers,
        })
    }
}

/// Whether `rest`, what a model's name adds to a priced name, is a date or version
/// suffix only: segments after `-`, `@` or `:`, each a date or build number (three
/// digits or more: `-20250514`, `-0125`, `-001`, and the month and day of
/// `-2024-08-06`), `v` and digits (`-v1`), a number after `:` (`-v2:0`) or `latest`.
/// A short number (`claude-3` and `-5`) or a word (`gpt-4o` and `-mini`, `o1` and
/// `-mini`) names another model.
fn version_suffix(rest: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let mut rest = rest;
    let mut after_digits = false;
    let mut any = false;
    while let Some(separator) = rest.chars().next() {
        if !matches!(separator, '-' | '@' | ':') {
            return false;
        }
        let tail = &rest[1..];
        let end = tail.find(['-', '@', ':']).unwrap_or(tail.len());
        let segment = &tail[..end];
        let ok = if digits(segment) {
            segment.len() >= 3 || separator == ':' || after_digits
        } else {
            segment == "latest" || segment.strip_prefix('v').is_some_and(digits)
        };
        if !ok {
            return false;
        }
        after_digits = digits(segment);
        any = true;
        rest = &tail[end..];
    }
    any
}

impl LlmConfig {
    /// With one more model server to read (`[[llm.servers]]`): at most
    /// [`MAX_SERVERS`](crate::servers::MAX_SERVERS), each name once.
    ///
    /// ```
    /// use loopwatch::llm::LlmConfig;
    /// let config = LlmConfig::default()
    ///     .with_server("vllm=http://127.0.0.1:8001".parse().unwrap())
    ///     .unwrap();
    /// assert_eq!(config.servers().len(), 1);
    /// let again = config.with_server("sglang=http://127.0.0.1:8001".parse().unwrap());
    /// assert!(again.unwrap_err().to_string().contains("own name"));
    /// ```
    pub fn with_server(
        mut self,
        server: crate::servers::ModelServer,
    ) -> Result<Self, crate::error::Error> {
        let value = server.endpoint();
        self.servers.push(server);
        crate::servers::check(&self.servers).map_err(|reason| {
            crate::error::Error::InvalidSetting {
                variable: "llm.servers",
                value,
                reason,
            }
        })?;
        Ok(self)
    }

    /// The local model servers to read (`[[llm.servers]]`), in their order.
    pub fn servers(&self) -> &[crate::servers::ModelServer] {
        &self.servers
    }

    /// With a price for `model`.
    pub fn with_price(mut self, model: impl Into<String>, price: Price) -> Self {
        self.prices.insert(model.into(), price);
        self
    }

    /// The price of a model: its own, else that of the longest priced name it extends
    /// with a date or version suffix only (`gpt-4o` prices `gpt-4o-2024-08-06` but
    /// not `gpt-4o-mini`; `o1` prices `o1-2024-12-17` but not `o1-mini`).
    ///
    /// ```
    /// use loopwatch::llm::{LlmConfig, Price};
    /// let config = LlmConfig::default().with_price("gpt-4o", Price::per_million(2.5, 10.0));
    /// assert!(config.price("gpt-4o-2024-08-06").is_some());
    /// assert!(config.price("gpt-4o-mini").is_none());
    /// ```
    pub fn price(&self, model: &str) -> Option<&Price> {
        self.prices.get(model).or_else(|| {
            self.prices
                .iter()
                .filter(|(name, _)| {
                    model
                        .strip_prefix(name.as_str())
                        .is_some_and(version_suffix)
                })
                .max_by_key(|(name, _)| name.len())
                .map(|(_, price)| price)
        })
    }

    /// The cost of a call in US dollars: [`LlmConfig::pricing`]'s `cost_usd`.
    pub fn cost(&self, call: &LlmCall) -> Option<f64> {
        self.pricing(call).cost_usd
    }

    /// What a call cost: the caller's own figure, else its tokens at its model's
    /// price (cache reads and writes at theirs); `None` when its model has no price,
    /// or it reported neither tokens nor a cost (unknown is not zero). Tokens without
    /// a price (all of an unpriced model's, or cache writes whose price is not set)
    /// are counted apart, never priced as something else.
    pub fn pricing(&self, call: &LlmCall) -> Pricing {
        if let Some(cost) = call.cost_usd.filter(|c| c.is_finite() && *c >= 0.0) {
            return Pricing {
                cost_usd: Some(cost),
                unpriced_tokens: 0,
            };
        }
        if call.input_tokens.is_none() && call.output_tokens.is_none() {
            return Pricing::default();
        }
        let input = call.input_tokens.unwrap_or(0);
        let output = call.output_tokens.unwrap_or(0);
        let Some(price) = self
            .price(call.model())
            .or_else(|| self.price(&call.request_model))
        else {
            return Pricing {
                cost_usd: None,
                unpriced_tokens: input.saturating_add(output),
            };
        };
        let cached = call.cached_input_tokens.unwrap_or(0).min(input);
        let written = call
            .cache_write_input_tokens
            .unwrap_or(0)
            .min(input - cached);
        let plain = input - cached - written;
        let cached_price = price
            .cached_input_per_million
            .unwrap_or(price.input_per_million);
        let (written_cost, unpriced_tokens) = match price.cache_write_input_per_million {
            Some(per_million) => (written as f64 * per_million, 0),
            None => (0.0, written),
        };
        Pricing {
            cost_usd: Some(
                (plain as f64 * price.input_per_million
                    + cached as f64 * cached_price
                    + written_cost
                    + output as f64 * price.output_per_million)
                    / 1e6,
            ),
            unpriced_tokens,
        }
    }
}

/// A label value from a name the outside world chose: cut to a bounded length, and
/// empty made [`OTHER_MODEL`].
pub(crate) fn bounded_name(name: &str) -> String {
    let name = name.trim();
    if name.is_empty() {
        return OTHER_MODEL.to_string();
    }
    name.chars().take(MAX_NAME_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_by_exact_name_then_longest_prefix_and_never_guesses() {
        let config = LlmConfig::default()
            .with_price("gpt-4o", Price::per_million(2.5, 10.0))
            .with_price("gpt-4o-mini", Price::per_million(0.15, 0.6))
            .with_price(
                "claude-sonnet-4",
                Price::per_million(3.0, 15.0).with_cached_input(0.3),
            );
        let mini = LlmCall::new("gpt-4o-mini-2024-07-18", Duration::ZERO).with_tokens(1_000_000, 0);
        assert_eq!(config.cost(&mini), Some(0.15));
        let mut cached = LlmCall::new("claude-sonnet-4-20250514", Duration::ZERO)
            .with_tokens(1_000_000, 1_000_000);
        cached.cached_input_tokens = Some(500_000);
        assert!((config.cost(&cached).unwrap() - (1.5 + 0.15 + 15.0)).abs() < 1e-9);
        let unknown = LlmCall::new("llama-3", Duration::ZERO).with_tokens(10, 10);
        assert_eq!(config.cost(&unknown), None);
        let known = unknown.with_cost_usd(0.25);
        assert_eq!(config.cost(&known), Some(0.25));
    }

    #[test]
    fn a_prefix_price_crosses_only_a_date_or_version_suffix() {
        let config = LlmConfig::default()
            .with_price("gpt-4o", Price::per_million(2.5, 10.0))
            .with_price("o1", Price::per_million(15.0, 60.0))
            .with_price("claude-3", Price::per_million(1.0, 1.0))
            .with_price("claude-sonnet-4", Price::per_million(3.0, 15.0))
            .with_price("anthropic.claude-3-sonnet", Price::per_million(3.0, 15.0))
            .with_price("llama3", Price::per_million(0.0, 0.0));
        for (model, priced_as) in [
            ("gpt-4o-2024-08-06", Some("gpt-4o")),
            ("gpt-4o-mini", None),
            ("gpt-4o-mini-2024-07-18", None),
            ("o1-2024-12-17", Some("o1")),
            ("o1-mini", None),
            ("o1-preview", None),
            ("o1pro", None),
            ("claude-3-5", None),
            ("claude-3-haiku-20240307", None),
            ("claude-sonnet-4-20250514", Some("claude-sonnet-4")),
            ("claude-sonnet-4@20250514", Some("claude-sonnet-4")),
            ("claude-sonnet-4-5", None),
            ("claude-sonnet-4-latest", Some("claude-sonnet-4")),
            (
                "anthropic.claude-3-sonnet-20240229-v1:0",
                Some("anthropic.claude-3-sonnet"),
            ),
            ("llama3:latest", Some("llama3")),
            ("llama3:70b", None),
            ("gpt-4o.1", None),
        ] {
            assert_eq!(
                config.price(model),
                priced_as.map(|name| &config.prices[name]),
                "{model}"
            );
        }
    }

    #[test]
    fn cache_writes_have_their_own_price_or_none_never_the_input_price() {
        let mut call = LlmCall::new("claude-sonnet-4-20250514", Duration::ZERO)
            .with_tokens(1_000_000 + 200_000 + 400_000, 0);
        call.cached_input_tokens = Some(200_000);
        call.cache_write_input_tokens = Some(400_000);
        let base = Price::per_million(3.0, 15.0).with_cached_input(0.3);
        let priced = LlmConfig::default()
            .with_price("claude-sonnet-4", base.with_cache_write_input(3.75))
            .pricing(&call);
        assert_eq!(priced.unpriced_tokens, 0);
        assert!((priced.cost_usd.unwrap() - (3.0 + 0.06 + 1.5)).abs() < 1e-9);
        let unpriced = LlmConfig::default()
            .with_price("claude-sonnet-4", base)
            .pricing(&call);
        assert_eq!(unpriced.unpriced_tokens, 400_000);
        assert!((unpriced.cost_usd.unwrap() - (3.0 + 0.06)).abs() < 1e-9);
        let t: crate::Thresholds = "[llm.prices.m]\ninput_per_million = 3\noutput_per_million = 15\ncache_write_input_per_million = 3.75\n"
            .parse()
            .unwrap();
        assert_eq!(
            t.llm().price("m").unwrap().cache_write_input_per_million,
            Some(3.75)
        );
    }

    #[test]
    fn a_call_without_usage_has_no_cost_not_a_zero_one() {
        let config = LlmConfig::default().with_price("gpt-4o", Price::per_million(2.5, 10.0));
        let call = LlmCall::new("gpt-4o", Duration::ZERO);
        assert_eq!(config.pricing(&call), Pricing::default());
        assert!(call.usage_missing());
        let mut embedding = LlmCall::new("e", Duration::ZERO).with_operation(Operation::Embeddings);
        embedding.input_tokens = Some(5);
        assert!(!embedding.usage_missing());
    }

    #[test]
    fn a_price_table_is_read_and_checked() {
        let t: crate::Thresholds =
            "[llm.prices.\"gpt-4o\"]\ninput_per_million = 2.5\noutput_per_million = 10\n"
                .parse()
                .unwrap();
        assert_eq!(
            t.llm().price("gpt-4o"),
            Some(&Price::per_million(2.5, 10.0))
        );
        let err = "[llm.prices.m]\ninput_per_million = -1\noutput_per_million = 1\n"
            .parse::<crate::Thresholds>()
            .unwrap_err();
        assert!(err.to_string().contains("llm.prices"), "{err}");
        assert!("[llm.prices.m]\ninput_per_million = 1\n"
            .parse::<crate::Thresholds>()
            .is_err());
    }

    #[test]
    fn outages_are_5xx_429_and_failures_without_a_status() {
        assert!(LlmError::Status(503).is_outage());
        assert!(LlmError::Status(429).is_outage());
        assert!(!LlmError::Status(400).is_outage());
        assert!(LlmError::Timeout.is_outage());
        assert_eq!(LlmError::Status(503).as_label(), "503");
    }
}
