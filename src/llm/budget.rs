//! The LLM budget, `[llm.budget]` of `loopwatch.toml` (or `loopwatch run
//! --llm-budget-usd` / `--llm-budget-action`): how much a run may spend on LLM calls,
//! and what loopwatch does when it is spent.
//!
//! - `warn` (the default): LLMBudget fires at the budget; one-time warnings at 50% and
//!   80% go to the event log, the log and the page before it.
//! - `block`: the metering proxy answers new calls with an error in the provider's own
//!   format, without forwarding them; calls already in flight finish.
//! - `stop`: `loopwatch run` ends the loop as an operator's SIGTERM would, writes the
//!   final files and exits with [`BUDGET_EXIT_STATUS`]; until the loop has ended, the
//!   metering proxy refuses its new calls as under `block`, so that nothing more is
//!   sent once the budget is spent.
//!
//! The block decision counts the calls in flight at their worst case ([`worst_case_usd`]):
//! the request's maximum output at the model's output price, plus its input, estimated
//! from the request body's size at [`BYTES_PER_TOKEN`], at the input price. A new call is
//! refused for good once the spend alone has reached the budget; while it is only the
//! reservations of the calls in flight that would pass it, the call is deferred (a
//! retriable refusal: sent again once those calls settle, it may go through). So
//! parallel calls overshoot the budget by at most one call's worst case.
//!
//! A call that ends with its usage unknown (a stream without usage, a call cut short,
//! a timeout) is charged its reservation, its worst case, against the budget: the
//! budget's spend is the cost booked plus these estimates, while the reported cost
//! stays a lower bound without them. Under a budget, the proxy asks streamed
//! requests for their usage, so that few calls end without it.
//!
//! ```
//! use loopwatch::llm::{budget::{worst_case_usd, CallRequest}, LlmConfig, Price};
//!
//! let prices = LlmConfig::default().with_price("gpt-4o", Price::per_million(2.5, 10.0));
//! // 4 000 bytes of request (about 1 000 tokens), at most 500 tokens of answer.
//! let request = CallRequest::new("gpt-4o", 4_000).with_max_output_tokens(500);
//! let worst = worst_case_usd(&request, &prices);
//! assert!((worst - (1_000.0 * 2.5 + 500.0 * 10.0) / 1e6).abs() < 1e-12);
//! // A model without a price reserves nothing.
//! assert_eq!(worst_case_usd(&CallRequest::new("llama3", 4_000), &prices), 0.0);
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{LlmConfig, Operation};

/// The status `loopwatch run` exits with when a budget under `action = "stop"` ended
/// the run, whatever status the loop's process left with.
pub const BUDGET_EXIT_STATUS: u8 = 3;

/// The shares of the budget, in percent, at which a one-time warning is given.
pub const BUDGET_WARNINGS: [u8; 2] = [50, 80];

/// How many bytes of a request body are taken for one token when its input is
/// estimated for a reservation (the usual rule of thumb for English text and JSON).
pub const BYTES_PER_TOKEN: u64 = 4;

/// What loopwatch does when the budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BudgetAction {
    /// LLMBudget fires (the default); warnings at 50% and 80% before it.
    #[default]
    Warn,
    /// The metering proxy refuses new calls; calls in flight finish.
    Block,
    /// `loopwatch run` stops the loop and exits with [`BUDGET_EXIT_STATUS`]; the
    /// metering proxy refuses new calls from then on.
    Stop,
}

impl BudgetAction {
    /// The name `loopwatch.toml` and `--llm-budget-action` use.
    pub const fn as_str(self) -> &'static str {
        match self {
            BudgetAction::Warn => "warn",
            BudgetAction::Block => "block",
            BudgetAction::Stop => "stop",
        }
    }
}

impl std::str::FromStr for BudgetAction {
    type Err = String;

    /// `warn`, `block` or `stop`.
    ///
    /// ```
    /// use loopwatch::llm::budget::BudgetAction;
    /// assert_eq!("block".parse::<BudgetAction>(), Ok(BudgetAction::Block));
    /// assert!("halt".parse::<BudgetAction>().unwrap_err().contains("warn, block or stop"));
    /// ```
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "warn" => Ok(BudgetAction::Warn),
            "block" => Ok(BudgetAction::Block),
            "stop" => Ok(BudgetAction::Stop),
            other => Err(format!(
                "{other:?} is not a budget action: expected warn, block or stop"
            )),
        }
    }
}

impl std::fmt::Display for BudgetAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run's LLM budget: US dollars, and what happens when they are spent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Budget {
    /// The amount, in US dollars (positive).
    pub usd: f64,
    /// What happens when it is spent.
    pub action: BudgetAction,
}

impl Budget {
    /// A budget of `usd` with `action`.
    pub fn new(usd: f64, action: BudgetAction) -> Self {
        Budget { usd, action }
    }

    /// What a new call gets with `spent_usd` counted against the budget and
    /// `reserved_usd` reserved by the calls in flight. Under `block`: refused once
    /// the spend alone has reached the budget; deferred while it is only the
    /// reservations that would pass it; admitted otherwise. Under `stop`: refused
    /// once the spend has reached the budget (the loop is being stopped), admitted
    /// before. Under `warn` every call is admitted.
    ///
    /// ```
    /// use loopwatch::llm::budget::{Budget, BudgetAction, BudgetDecision};
    /// let budget = Budget::new(1.0, BudgetAction::Block);
    /// assert_eq!(budget.decide(0.6, 0.3), BudgetDecision::Admit);
    /// assert_eq!(budget.decide(0.6, 0.4), BudgetDecision::Defer);
    /// assert_eq!(budget.decide(1.0, 0.0), BudgetDecision::Refuse);
    /// let stop = Budget::new(1.0, BudgetAction::Stop);
    /// assert_eq!(stop.decide(0.6, 0.4), BudgetDecision::Admit);
    /// assert_eq!(stop.decide(1.0, 0.0), BudgetDecision::Refuse);
    /// assert_eq!(Budget::new(1.0, BudgetAction::Warn).decide(5.0, 0.0), BudgetDecision::Admit);
    /// ```
    pub fn decide(&self, spent_usd: f64, reserved_usd: f64) -> BudgetDecision {
        match self.action {
            BudgetAction::Warn => BudgetDecision::Admit,
            BudgetAction::Block | BudgetAction::Stop if spent_usd >= self.usd => {
                BudgetDecision::Refuse
            }
            BudgetAction::Stop => BudgetDecision::Admit,
            BudgetAction::Block if spent_usd + reserved_usd >= self.usd => BudgetDecision::Defer,
            BudgetAction::Block => BudgetDecision::Admit,
        }
    }

    /// The warnings of [`BUDGET_WARNINGS`] that a spend of `spent_usd` has reached.
    pub fn warnings_reached(&self, spent_usd: f64) -> impl Iterator<Item = u8> + '_ {
        BUDGET_WARNINGS
            .into_iter()
            .filter(move |percent| spent_usd >= self.usd * f64::from(*percent) / 100.0)
    }
}

/// What a budget makes of a new call ([`Budget::decide`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BudgetDecision {
    /// It goes on, its worst case reserved.
    Admit,
    /// Not now: with what the calls in flight reserved it could pass the budget. It is
    /// refused with a retriable error, and may go through once they settle.
    Defer,
    /// The spend has reached the budget: refused for good.
    Refuse,
}

/// What a metered call asks for, read from its request before it is forwarded: what
/// its reservation is priced from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallRequest {
    /// Who serves it (`gen_ai.provider.name`).
    pub provider: String,
    /// What kind of request it is.
    pub operation: Operation,
    /// The model asked for.
    pub model: String,
    /// The size of the request body in bytes.
    pub body_bytes: u64,
    /// The most output tokens it allows (`max_tokens`, `max_completion_tokens`,
    /// `max_output_tokens`), when it says.
    pub max_output_tokens: Option<u64>,
    /// The role its caller gave it (see [`super::LlmCall::role`]).
    pub role: Option<String>,
}

impl CallRequest {
    /// A chat request to `model` of `body_bytes`, provider `unknown`, no maximum.
    pub fn new(model: impl Into<String>, body_bytes: u64) -> Self {
        CallRequest {
            provider: "unknown".into(),
            operation: Operation::Chat,
            model: model.into(),
            body_bytes,
            max_output_tokens: None,
            role: None,
        }
    }

    /// With the role its caller gave it.
    pub fn with_role(mut self, role: Option<String>) -> Self {
        self.role = role;
        self
    }

    /// With the most output tokens it allows.
    pub fn with_max_output_tokens(mut self, tokens: u64) -> Self {
        self.max_output_tokens = Some(tokens);
        self
    }

    /// With the provider and the kind of request.
    pub fn with_provider(mut self, provider: impl Into<String>, operation: Operation) -> Self {
        self.provider = provider.into();
        self.operation = operation;
        self
    }

    /// Its input estimated from its size: a token per [`BYTES_PER_TOKEN`] bytes,
    /// rounded up. The body holds more than the prompt (JSON, parameters), so this
    /// errs high for text.
    pub fn estimated_input_tokens(&self) -> u64 {
        self.body_bytes.div_ceil(BYTES_PER_TOKEN)
    }
}

/// The most a call may cost, in US dollars: its estimated input at its model's input
/// price plus its maximum output at the output price. A call whose model has no
/// price reserves 0 (its cost is not known afterwards either); one without a maximum
/// reserves its input alone.
pub fn worst_case_usd(request: &CallRequest, prices: &LlmConfig) -> f64 {
    let Some(price) = prices.price(&request.model) else {
        return 0.0;
    };
    let input = request.estimated_input_tokens() as f64 * price.input_per_million;
    let output = request.max_output_tokens.unwrap_or(0) as f64 * price.output_per_million;
    let worst = (input + output) / 1e6;
    if worst.is_finite() {
        worst
    } else {
        0.0
    }
}

/// Whether a call may go on, as the run's books decide when it starts.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Admission {
    /// It goes on; its id ends it ([`super::CallRecorder::ended`]).
    Admitted(u64),
    /// The budget refuses it: it is not forwarded. For good, or, when
    /// [`BudgetRefusal::deferred`], until the calls in flight settle.
    Blocked(BudgetRefusal),
}

/// Why a call was refused: the budget, the spend and the reservations then, and
/// whether it is only deferred.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct BudgetRefusal {
    /// The budget, in US dollars.
    pub budget_usd: f64,
    /// The spend counted against the budget, in US dollars.
    pub spent_usd: f64,
    /// The reservations of the calls in flight, in US dollars.
    pub reserved_usd: f64,
    /// Deferred, not refused for good: the spend is below the budget, but the
    /// reservations of the calls in flight could take it past. Sent again once they
    /// settle, the call may go through.
    pub deferred: bool,
}

impl std::fmt::Display for BudgetRefusal {
    /// The message the loop's SDK shows: the budget, and how to raise it (refused),
    /// or why to wait (deferred).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.deferred {
            return write!(
                f,
                "loopwatch LLM budget of ${:.4}: ${:.4} spent and ${:.4} reserved by calls in \
                 flight could pass it, so this call was not sent to the provider yet. Retry \
                 it once the calls in flight have ended (Retry-After: 1).",
                self.budget_usd, self.spent_usd, self.reserved_usd
            );
        }
        write!(
            f,
            "loopwatch LLM budget of ${:.4} reached (${:.4} spent, ${:.4} reserved by calls in flight): \
             this call was not sent to the provider. Raise the budget with \
             `loopwatch run --llm-budget-usd <USD>` or `usd` under [llm.budget] in loopwatch.toml.",
            self.budget_usd, self.spent_usd, self.reserved_usd
        )
    }
}

/// The calls in flight and what each reserved, the warnings given, and the refusals:
/// the budget's books, kept in the run's LLM meter. Plain state.
#[derive(Debug, Default)]
pub(crate) struct BudgetBook {
    /// The run's budget, if it has one.
    pub(crate) budget: Option<Budget>,
    /// Reservations of the calls in flight, by id, in US dollars.
    reserved: BTreeMap<u64, f64>,
    /// The reservations charged for calls that ended with their usage unknown: the
    /// part of the budget's spend that is an estimate, not a booked cost.
    estimated_usd: f64,
    /// The warnings of [`BUDGET_WARNINGS`] given so far.
    warned: Vec<u8>,
    /// Calls refused for good.
    pub(crate) blocked: u64,
    /// Calls deferred (refused for now, retriable).
    pub(crate) deferred: u64,
    /// The last call refused, and how: what its start decided.
    last_refused: Option<(u64, BudgetRefusal)>,
}

impl BudgetBook {
    /// The books of `budget`.
    pub(crate) fn new(budget: Option<Budget>) -> Self {
        BudgetBook {
            budget,
            ..BudgetBook::default()
        }
    }

    /// The reservations of the calls in flight (0, not -0, with none: a float sum of
    /// nothing is -0, which a message would show as `$-0.0000`).
    pub(crate) fn reserved_usd(&self) -> f64 {
        self.reserved.values().fold(0.0, |sum, usd| sum + usd)
    }

    /// The spend counted against the budget with `booked_usd` booked: that and the
    /// reservations charged for calls whose usage is unknown.
    pub(crate) fn spent_usd(&self, booked_usd: f64) -> f64 {
        booked_usd + self.estimated_usd
    }

    /// A call asks to start, worth at most `worst_usd`, with `booked_usd` booked:
    /// `Ok` (its reservation kept under `id`) or the refusal.
    pub(crate) fn admit(
        &mut self,
        id: u64,
        worst_usd: f64,
        booked_usd: f64,
    ) -> Result<(), BudgetRefusal> {
        let spent_usd = self.spent_usd(booked_usd);
        let reserved_usd = self.reserved_usd();
        if let Some(budget) = self.budget {
            let decision = budget.decide(spent_usd, reserved_usd);
            if decision != BudgetDecision::Admit {
                let deferred = decision == BudgetDecision::Defer;
                let count = if deferred {
                    &mut self.deferred
                } else {
                    &mut self.blocked
                };
                *count = count.saturating_add(1);
                let refusal = BudgetRefusal {
                    budget_usd: budget.usd,
                    spent_usd,
                    reserved_usd,
                    deferred,
                };
                self.last_refused = Some((id, refusal));
                return Err(refusal);
            }
        }
        self.reserved.insert(id, worst_usd.max(0.0));
        Ok(())
    }

    /// How call `id` was refused, if it was the last call refused.
    pub(crate) fn refusal_of(&self, id: u64) -> Option<BudgetRefusal> {
        self.last_refused
            .filter(|(refused, _)| *refused == id)
            .map(|(_, refusal)| refusal)
    }

    /// Call `id` is over (booked, or given up): its reservation is released.
    pub(crate) fn release(&mut self, id: u64) {
        self.reserved.remove(&id);
    }

    /// Call `id` is booked: its reservation is released, its cost counting instead;
    /// but when its usage is unknown (`usage_missing`) and a budget is set, the
    /// reservation, its worst case, is charged to the budget's spend as an estimate.
    /// Returns what was charged.
    pub(crate) fn settle(&mut self, id: u64, usage_missing: bool) -> f64 {
        let reserved = self.reserved.remove(&id).unwrap_or(0.0);
        if usage_missing && self.budget.is_some() {
            self.estimated_usd += reserved;
            reserved
        } else {
            0.0
        }
    }

    /// Whether call `id` holds a reservation (it was admitted and has not ended).
    #[cfg(test)]
    pub(crate) fn holds(&self, id: u64) -> bool {
        self.reserved.contains_key(&id)
    }

    /// The warnings the spend reaches, with `booked_usd` booked, that were not given
    /// yet; each is given once.
    pub(crate) fn new_warnings(&mut self, booked_usd: f64) -> Vec<u8> {
        let Some(budget) = self.budget else {
            return Vec::new();
        };
        let spent_usd = self.spent_usd(booked_usd);
        let new: Vec<u8> = budget
            .warnings_reached(spent_usd)
            .filter(|p| !self.warned.contains(p))
            .collect();
        self.warned.extend(&new);
        new
    }

    /// The budget's figures for the summary, with `booked_usd` booked.
    pub(crate) fn summary(&self, booked_usd: f64) -> Option<BudgetSummary> {
        let spent_usd = self.spent_usd(booked_usd);
        self.budget.map(|budget| BudgetSummary {
            usd: budget.usd,
            action: budget.action,
            spent_usd,
            estimated_usd: self.estimated_usd,
            reserved_usd: self.reserved_usd(),
            spent: spent_usd >= budget.usd,
            warned_at_percent: self.warned.clone(),
            blocked_calls: self.blocked,
            deferred_calls: self.deferred,
        })
    }
}

/// A mark of the budget in the run's event log (`kind: "llm_budget"`), the log and
/// the page: a warning at a share of it, or the first call it refused.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct BudgetMark {
    /// What happened.
    pub(crate) event: BudgetEvent,
    /// The share of the budget spent, in percent, for a warning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) percent: Option<u8>,
    /// The spend booked then.
    pub(crate) spent_usd: f64,
    /// The budget.
    pub(crate) budget_usd: f64,
    /// Its action.
    pub(crate) action: BudgetAction,
}

/// What a [`BudgetMark`] marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum BudgetEvent {
    /// A share of the budget ([`BUDGET_WARNINGS`]) is spent.
    Warning,
    /// The first call was refused for good: the proxy refuses new calls from now on.
    Blocking,
}

/// The budget as `summary.llm.budget` shows it in the snapshot and the final files.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct BudgetSummary {
    /// The budget, in US dollars.
    pub usd: f64,
    /// What happens when it is spent.
    pub action: BudgetAction,
    /// The spend counted against the budget: the cost booked (`summary.llm.cost_usd`)
    /// and `estimated_usd`.
    pub spent_usd: f64,
    /// Of `spent_usd`, the worst cases charged for calls that ended with their usage
    /// unknown (a stream without usage, a call cut short, a timeout): an estimate,
    /// not in `summary.llm.cost_usd`, which stays a lower bound.
    pub estimated_usd: f64,
    /// The reservations of the calls in flight.
    pub reserved_usd: f64,
    /// Whether the spend has reached the budget.
    pub spent: bool,
    /// The warnings given (percent of the budget).
    pub warned_at_percent: Vec<u8>,
    /// Calls the proxy refused for good (under `block` or `stop`, once the spend
    /// reached the budget).
    pub blocked_calls: u64,
    /// Calls the proxy deferred (under `block`, while the reservations of the calls
    /// in flight could have passed the budget): answered with a retriable error.
    pub deferred_calls: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Price;

    #[test]
    fn the_worst_case_is_the_input_estimate_and_the_maximum_output_at_their_prices() {
        let prices =
            LlmConfig::default().with_price("claude-sonnet-4", Price::per_million(3.0, 15.0));
        let request =
            CallRequest::new("claude-sonnet-4-20250514", 401).with_max_output_tokens(1_000);
        // 401 bytes are 101 tokens (rounded up).
        assert_eq!(request.estimated_input_tokens(), 101);
        let expected = (101.0 * 3.0 + 1_000.0 * 15.0) / 1e6;
        assert!((worst_case_usd(&request, &prices) - expected).abs() < 1e-15);
        let without_maximum = CallRequest::new("claude-sonnet-4", 400);
        assert!((worst_case_usd(&without_maximum, &prices) - 100.0 * 3.0 / 1e6).abs() < 1e-15);
        assert_eq!(
            worst_case_usd(&CallRequest::new("unpriced", 1 << 20), &prices),
            0.0
        );
    }

    /// Parallel calls: each admitted while spend plus reservations is below the
    /// budget, so what is committed passes it by at most the last call's worst case.
    /// Those the reservations alone turn away are deferred; refusals for good start
    /// only once the spend has reached the budget.
    #[test]
    fn parallel_calls_overshoot_by_at_most_one_worst_case() {
        // Amounts exact in binary, so that the sums are too.
        let mut book = BudgetBook::new(Some(Budget::new(1.0, BudgetAction::Block)));
        let worst = 0.375;
        let admitted: Vec<u64> = (0..10)
            .filter(|id| book.admit(*id, worst, 0.0).is_ok())
            .collect();
        assert_eq!(
            admitted,
            [0, 1, 2],
            "0.75 reserved admits a third, 1.125 none"
        );
        assert!(book.reserved_usd() < 1.0 + worst);
        assert_eq!((book.blocked, book.deferred), (0, 7), "nothing spent yet");
        let refusal = book.refusal_of(9).unwrap();
        assert!(refusal.deferred);
        assert_eq!((refusal.spent_usd, refusal.reserved_usd), (0.0, 1.125));
        assert_eq!(book.refusal_of(8), None, "only the last is kept");
        // The first ends, having cost 0.25: its reservation is released, its cost
        // booked.
        book.release(0);
        assert_eq!(book.reserved_usd(), 0.75);
        assert!(
            book.admit(10, worst, 0.25).is_err_and(|r| r.deferred),
            "0.25 + 0.75 reaches the budget: deferred"
        );
        book.release(1);
        let admitted = book.admit(11, worst, 0.375).map(|()| 11);
        assert_eq!(admitted, Ok(11), "0.375 + 0.375 is below it");
        assert!(book.holds(11) && !book.holds(10));
        // Spent: refused for good, whatever is in flight.
        for id in [2, 11] {
            book.release(id);
        }
        let refusal = book.admit(12, worst, 1.0).unwrap_err();
        assert!(!refusal.deferred);
        assert_eq!((book.blocked, book.deferred), (1, 8));
    }

    /// `warn` never refuses; `stop` refuses for good once the budget is spent (the
    /// loop is being stopped), never defers; `block` does both.
    #[test]
    fn block_and_stop_refuse_and_a_refusal_names_the_budget_and_how_to_raise_it() {
        let mut warn = BudgetBook::new(Some(Budget::new(1.0, BudgetAction::Warn)));
        assert!(warn.admit(0, 5.0, 10.0).is_ok());
        let mut stop = BudgetBook::new(Some(Budget::new(1.0, BudgetAction::Stop)));
        assert!(stop.admit(0, 5.0, 0.5).is_ok(), "reservations never defer");
        assert!(stop.admit(1, 5.0, 0.5).is_ok());
        let refusal = stop.admit(2, 0.1, 1.0).unwrap_err();
        assert!(!refusal.deferred);
        assert_eq!((stop.blocked, stop.deferred), (1, 0));
        let mut none = BudgetBook::new(None);
        assert!(none.admit(0, 5.0, 10.0).is_ok());
        let mut book = BudgetBook::new(Some(Budget::new(2.5, BudgetAction::Block)));
        let refusal = book.admit(0, 0.0, 2.5).unwrap_err();
        let message = refusal.to_string();
        assert!(refusal.reserved_usd.is_sign_positive(), "{message}");
        for part in [
            "$2.5000",
            "$0.0000 reserved",
            "--llm-budget-usd",
            "[llm.budget]",
            "not sent",
        ] {
            assert!(message.contains(part), "{part}: {message}");
        }
        // A deferral names the budget and says to wait, not to raise it.
        book.release(0);
        book.admit(1, 2.0, 0.0).unwrap();
        let deferral = book.admit(2, 1.0, 1.0).unwrap_err();
        assert!(deferral.deferred);
        let message = deferral.to_string();
        for part in ["$2.5000", "$1.0000 spent", "$2.0000 reserved", "Retry"] {
            assert!(message.contains(part), "{part}: {message}");
        }
        assert!(!message.contains("reached"), "{message}");
    }

    #[test]
    fn each_warning_is_given_once_in_order() {
        let mut book = BudgetBook::new(Some(Budget::new(10.0, BudgetAction::Warn)));
        assert!(book.new_warnings(4.99).is_empty());
        assert_eq!(book.new_warnings(5.0), [50]);
        assert!(book.new_warnings(6.0).is_empty());
        assert_eq!(book.new_warnings(9.0), [80]);
        let mut jump = BudgetBook::new(Some(Budget::new(10.0, BudgetAction::Warn)));
        assert_eq!(jump.new_warnings(12.0), [50, 80], "one call past both");
        let summary = jump.summary(12.0).unwrap();
        assert!(summary.spent);
        assert_eq!(summary.warned_at_percent, [50, 80]);
        assert!(BudgetBook::new(None).new_warnings(100.0).is_empty());
    }
}
