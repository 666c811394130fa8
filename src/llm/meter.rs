//! The run's books of LLM calls: totals by model for the snapshot and the final
//! files, the recent calls LLMErrors judges, the spend LLMBudget and
//! LLMSpendWithoutProgress judge, and the calls in flight.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use serde::Serialize;

use super::budget::{Budget, BudgetBook, BudgetRefusal, BudgetSummary};
use super::headroom::Headroom;
use super::{
    bounded_name, valid_role, LlmCall, LlmError, Pricing, INVALID_ROLE, MAX_MODELS, MAX_ROLES,
    NO_ROLE, OTHER_MODEL, OTHER_ROLE,
};

/// Calls older than this leave the error window, so an outage the loop stopped
/// calling into does not keep LLMErrors firing forever.
pub(crate) const ERROR_WINDOW_MAX_AGE: Duration = Duration::from_secs(15 * 60);

/// Spending is kept per minute for the last hour's rate.
const MINUTE: Duration = Duration::from_secs(60);
const HOUR_MINUTES: usize = 60;

/// One model's (or one role's) calls, tokens and spend. Token counts saturate at
/// `u64::MAX`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ModelTally {
    /// Calls made.
    pub calls: u64,
    /// Calls that failed, for any reason.
    pub errors: u64,
    /// Failures by error type (`429`, `503`, `stream_cut` …).
    pub errors_by_type: BTreeMap<String, u64>,
    /// Calls cut short by the loop or by loopwatch before their answer ended:
    /// neither successes nor failures.
    pub abandoned: u64,
    /// Calls the budget refused for good: never sent, neither successes nor
    /// failures.
    pub blocked: u64,
    /// Calls the budget deferred (a retriable refusal while the calls in flight could
    /// pass it): never sent, neither successes nor failures.
    pub deferred: u64,
    /// Calls the provider may have billed whose usage is unknown (no usage in the
    /// answer, or abandoned before it): their cost is not in `cost_usd`.
    pub usage_missing: u64,
    /// Input tokens, cached ones included.
    pub input_tokens: u64,
    /// Output tokens, reasoning ones included.
    pub output_tokens: u64,
    /// Input tokens read from the provider's cache.
    pub cached_input_tokens: u64,
    /// Input tokens written to the provider's cache.
    pub cache_write_input_tokens: u64,
    /// Reasoning tokens (a part of the output tokens).
    pub reasoning_tokens: u64,
    /// Cost in US dollars of the priced tokens.
    pub cost_usd: f64,
    /// Tokens without a price: those of a model without one, and cache writes whose
    /// price is not set.
    pub unpriced_tokens: u64,
}

/// The LLM calls of a run, as `summary.llm` in the snapshot and the final files.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct LlmSummary {
    /// Calls made.
    pub calls: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Calls cut short by the loop or by loopwatch: not failures.
    pub abandoned: u64,
    /// Calls the budget refused for good (`[llm.budget] action = "block"` or
    /// `"stop"`, once spent): never sent.
    pub blocked: u64,
    /// Calls the budget deferred: refused with a retriable error while the calls in
    /// flight could have passed it; never sent.
    pub deferred: u64,
    /// Calls the provider may have billed whose usage is unknown.
    pub usage_missing: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Reasoning tokens (a part of the output tokens).
    pub reasoning_tokens: u64,
    /// Cost in US dollars of the priced tokens.
    pub cost_usd: f64,
    /// Tokens without a price.
    pub unpriced_tokens: u64,
    /// Whether the spend is a lower bound: some calls had no usage to price, or some
    /// tokens no price.
    pub spend_is_lower_bound: bool,
    /// Spend since the champion last changed (or the start).
    pub spend_since_champion_usd: f64,
    /// Spend divided by the champion's changes (the first report included), when it
    /// has changed.
    pub spend_per_champion_change_usd: Option<f64>,
    /// By model (at most 32 names, then `other`).
    pub by_model: BTreeMap<String, ModelTally>,
    /// By role (`X-Loopwatch-Role`, `loopwatch.llm_role`): at most 16 names, then
    /// `other`; `none` for calls without one, `invalid` for calls whose role was not
    /// a role name.
    pub by_role: BTreeMap<String, ModelTally>,
    /// Calls whose role was turned into a fallback label: `invalid` (not a role
    /// name) and `overflow` (past the 16 role names kept, labelled `other`).
    pub role_fallbacks: BTreeMap<String, u64>,
    /// The median duration of the last 512 calls, in seconds.
    pub p50_seconds: Option<f64>,
    /// The 95th percentile duration of the last 512 calls, in seconds.
    pub p95_seconds: Option<f64>,
    /// The last hour's calls, tokens and spend, minute by minute (minutes without a
    /// call left out), most recent first.
    pub last_hour: Vec<MinuteTally>,
    /// The budget, when one is set: its amount and action, the spend against it, the
    /// reservations of the calls in flight, the warnings given and the calls refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSummary>,
    /// The rate limits the providers stated on their last answer, by provider and
    /// model (the model asked for), most constrained first.
    pub rate_limits: Vec<RateLimitTally>,
    /// The least headroom (remaining over limit, 0 to 1) of the limits still in force:
    /// what LLMRateLimitNear judges; `None` when no answer stated one.
    pub rate_limit_headroom: Option<f64>,
}

/// The rate limits one provider stated for one model on its last answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RateLimitTally {
    /// The provider.
    pub provider: String,
    /// The model asked for.
    pub model: String,
    /// Seconds since that answer.
    pub age_seconds: f64,
    /// The least headroom of its limits still in force (0 to 1); `None` when none
    /// is (all reset since, or none stated both figures).
    pub headroom: Option<f64>,
    /// Each limit it stated: `requests`, `tokens`, `input_tokens`, `output_tokens`.
    pub limits: BTreeMap<String, LimitTally>,
    /// The wait it asked for (`retry-after-ms`, `Retry-After`), in seconds.
    pub retry_after_seconds: Option<f64>,
}

/// One limit as an answer stated it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct LimitTally {
    /// The limit (requests or tokens per window).
    pub limit: Option<u64>,
    /// What was left of it.
    pub remaining: Option<u64>,
    /// Seconds until it resets, as the answer said.
    pub reset_seconds: Option<f64>,
    /// Seconds until it resets from now (0 once it has).
    pub resets_in_seconds: Option<f64>,
}

/// One minute of LLM calls, for the page's per-minute view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct MinuteTally {
    /// Minutes before now (0: the current minute).
    pub minutes_ago: u64,
    /// Calls that succeeded.
    pub ok: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Calls abandoned.
    pub abandoned: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Spend in US dollars.
    pub cost_usd: f64,
}

/// Durations of the recent calls kept for their quantiles.
const DURATIONS_KEPT: usize = 512;

/// What the LLM alerts judge, at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct LlmEvidence {
    /// Calls in the error window.
    pub(crate) recent_calls: u64,
    /// Failed calls (outages) in the error window.
    pub(crate) recent_failures: u64,
    /// Spend so far.
    pub(crate) spend_usd: f64,
    /// The spend counted against the budget: `spend_usd` and the worst cases charged
    /// for calls that ended with their usage unknown (none without a budget).
    pub(crate) budget_spend_usd: f64,
    /// Spend in the last hour.
    pub(crate) spend_last_hour_usd: f64,
    /// Spend since the champion last changed.
    pub(crate) spend_since_champion_usd: f64,
    /// Whether the spend is a lower bound (calls without usage, tokens without a
    /// price).
    pub(crate) spend_is_lower_bound: bool,
    /// The least rate-limit headroom (remaining over limit, 0 to 1) of the limits
    /// the providers stated that are still in force; `None` when there is none.
    pub(crate) headroom: Option<f64>,
}

/// The label values a rate-limit reading is published under, each bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeadroomLabels {
    /// The provider.
    pub(crate) provider: String,
    /// The model asked for.
    pub(crate) model: String,
}

/// The label values a call is published under, each bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallLabels {
    /// The model that answered (else the one asked for).
    pub(crate) model: String,
    /// The model asked for.
    pub(crate) request_model: String,
    /// The provider.
    pub(crate) provider: String,
    /// The role (see [`role_label`]).
    pub(crate) role: String,
    /// Why the role is a fallback label, when it is: [`RoleFallback`].
    pub(crate) role_fallback: Option<RoleFallback>,
}

/// Why a call's role was not kept as its own label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum RoleFallback {
    /// Not a role name ([`valid_role`]): labelled [`INVALID_ROLE`].
    Invalid,
    /// A role name past the [`MAX_ROLES`] kept: labelled [`OTHER_ROLE`].
    Overflow,
}

impl RoleFallback {
    /// Both, for the series that exist from start-up.
    pub(crate) const ALL: [RoleFallback; 2] = [RoleFallback::Invalid, RoleFallback::Overflow];

    /// The `reason` label of `loopwatch_llm_role_fallbacks_total`.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            RoleFallback::Invalid => "invalid",
            RoleFallback::Overflow => "overflow",
        }
    }
}

/// Most distinct provider names kept as label values; further ones are `other`.
const MAX_PROVIDERS: usize = 8;

/// The tallies of the calls that ended.
#[derive(Debug, Default)]
struct CallBooks {
    by_model: BTreeMap<String, ModelTally>,
    by_role: BTreeMap<String, ModelTally>,
    role_fallbacks: BTreeMap<String, u64>,
    /// The names kept as label values, each set bounded (see [`bounded_label`]).
    models: BTreeSet<String>,
    request_models: BTreeSet<String>,
    providers: BTreeSet<String>,
    roles: BTreeSet<String>,
    /// The error window: when each recent call ended (monotonic) and whether it
    /// failed.
    recent: VecDeque<(Duration, bool)>,
    /// Calls that ended, of every model.
    calls: u64,
    spend_usd: f64,
    /// Calls without usage or tokens without a price so far.
    spend_is_lower_bound: bool,
    spend_at_champion_usd: f64,
    champion_changes: u64,
    /// The last hour, per minute: the minute's number since the monitor's clock
    /// started, and its tally.
    minutes: VecDeque<(u64, MinuteTally)>,
    /// Durations of the recent calls, in seconds.
    durations: VecDeque<f64>,
    /// The last rate-limit reading of each provider and model (bounded labels), and
    /// when it came.
    headroom: BTreeMap<(String, String), (Headroom, Duration)>,
}

/// A name kept as a label value if already known or while fewer than `max` are;
/// else [`OTHER_MODEL`].
fn bounded_label(known: &mut BTreeSet<String>, name: &str, max: usize) -> String {
    let name = bounded_name(name);
    if known.contains(&name) {
        return name;
    }
    if known.len() < max {
        known.insert(name.clone());
        return name;
    }
    OTHER_MODEL.to_string()
}

/// The label of a call's role: [`NO_ROLE`] without one; its name when it is a role
/// name ([`valid_role`], leading and trailing spaces aside) and one of the first
/// [`MAX_ROLES`] seen; else a fallback, and why: [`OTHER_ROLE`] past them,
/// [`INVALID_ROLE`] for what is not a role name.
fn role_label(known: &mut BTreeSet<String>, role: Option<&str>) -> (String, Option<RoleFallback>) {
    let Some(role) = role else {
        return (NO_ROLE.to_string(), None);
    };
    let role = role.trim();
    if !valid_role(role) {
        return (INVALID_ROLE.to_string(), Some(RoleFallback::Invalid));
    }
    if known.contains(role) {
        return (role.to_string(), None);
    }
    if known.len() < MAX_ROLES {
        known.insert(role.to_string());
        return (role.to_string(), None);
    }
    (OTHER_ROLE.to_string(), Some(RoleFallback::Overflow))
}

/// Adds one call to a tally (of its model, or of its role); token sums saturate.
fn tally_call(
    tally: &mut ModelTally,
    call: &LlmCall,
    pricing: Pricing,
    usage_missing: bool,
    abandoned: bool,
) {
    tally.calls = tally.calls.saturating_add(1);
    if call.refused() {
        let count = if call.blocked {
            &mut tally.blocked
        } else {
            &mut tally.deferred
        };
        *count = count.saturating_add(1);
        return;
    }
    if let Some(error) = call.error {
        tally.errors = tally.errors.saturating_add(1);
        let by_type = tally
            .errors_by_type
            .entry(error.as_label().into_owned())
            .or_default();
        *by_type = by_type.saturating_add(1);
    } else if abandoned {
        tally.abandoned = tally.abandoned.saturating_add(1);
    }
    if usage_missing {
        tally.usage_missing = tally.usage_missing.saturating_add(1);
    }
    let add = |sum: &mut u64, n: Option<u64>| *sum = sum.saturating_add(n.unwrap_or(0));
    add(&mut tally.input_tokens, call.input_tokens);
    add(&mut tally.output_tokens, call.output_tokens);
    add(&mut tally.cached_input_tokens, call.cached_input_tokens);
    add(
        &mut tally.cache_write_input_tokens,
        call.cache_write_input_tokens,
    );
    add(&mut tally.reasoning_tokens, call.reasoning_tokens);
    add(&mut tally.unpriced_tokens, Some(pricing.unpriced_tokens));
    tally.cost_usd += pricing.cost_usd.unwrap_or(0.0);
}

/// The run's LLM calls: the books of those that ended, and those in flight. Plain
/// state: time comes in as the monitor clock's monotonic reading (`now`, time since
/// the clock started), and whoever owns the meter keeps it behind its own lock.
#[derive(Debug, Default)]
pub(crate) struct LlmMeter {
    books: CallBooks,
    /// Calls in flight by id, with when each started.
    in_flight: BTreeMap<u64, Duration>,
    any_calls: bool,
    /// The budget, the reservations of the calls in flight, the warnings given.
    budget: BudgetBook,
}

/// The minute of `now` since the clock started.
fn minute_of(now: Duration) -> u64 {
    now.as_secs() / MINUTE.as_secs()
}

impl LlmMeter {
    /// The books of a run with `budget`.
    pub(crate) fn new(budget: Option<Budget>) -> Self {
        LlmMeter {
            budget: BudgetBook::new(budget),
            ..LlmMeter::default()
        }
    }

    /// Books one call at its price; returns the label its model is published
    /// under and the evidence after it. An abandoned call stays out of the error
    /// window and the durations; token sums saturate.
    pub(crate) fn record(
        &mut self,
        call: &LlmCall,
        pricing: Pricing,
        window_calls: u64,
        now: Duration,
    ) -> (CallLabels, LlmEvidence) {
        self.any_calls = true;
        let books = &mut self.books;
        let model = bounded_label(&mut books.models, call.model(), MAX_MODELS);
        let (role, role_fallback) = role_label(&mut books.roles, call.role.as_deref());
        let labels = CallLabels {
            request_model: bounded_label(
                &mut books.request_models,
                &call.request_model,
                MAX_MODELS,
            ),
            provider: bounded_label(&mut books.providers, &call.provider, MAX_PROVIDERS),
            model: model.clone(),
            role: role.clone(),
            role_fallback,
        };
        if let Some(fallback) = role_fallback {
            let count = books
                .role_fallbacks
                .entry(fallback.as_str().to_string())
                .or_default();
            *count = count.saturating_add(1);
        }
        let input = call.input_tokens.unwrap_or(0);
        let output = call.output_tokens.unwrap_or(0);
        let usage_missing = call.usage_missing();
        let abandoned = call.abandoned && call.error.is_none();
        for tally in [
            books.by_model.entry(model).or_default(),
            books.by_role.entry(role).or_default(),
        ] {
            tally_call(tally, call, pricing, usage_missing, abandoned);
        }
        books.calls = books.calls.saturating_add(1);
        if call.refused() {
            // Never sent: no tokens, no cost, no duration, outside the error window.
            return (labels, self.evidence(now));
        }
        let cost = pricing.cost_usd.unwrap_or(0.0);
        books.spend_usd += cost;
        books.spend_is_lower_bound |= usage_missing || pricing.unpriced_tokens > 0;
        let minute = minute_of(now);
        if books.minutes.back().is_none_or(|(m, _)| *m != minute) {
            books.minutes.push_back((minute, MinuteTally::default()));
        }
        if let Some((_, tally)) = books.minutes.back_mut() {
            tally.cost_usd += cost;
            tally.input_tokens = tally.input_tokens.saturating_add(input);
            tally.output_tokens = tally.output_tokens.saturating_add(output);
            let count = if call.error.is_some() {
                &mut tally.errors
            } else if abandoned {
                &mut tally.abandoned
            } else {
                &mut tally.ok
            };
            *count = count.saturating_add(1);
        }
        if !abandoned {
            if books.durations.len() == DURATIONS_KEPT {
                books.durations.pop_front();
            }
            books.durations.push_back(call.duration.as_secs_f64());
            let failed = call.error.is_some_and(LlmError::is_outage);
            books.recent.push_back((now, failed));
            while books.recent.len() as u64 > window_calls {
                books.recent.pop_front();
            }
        }
        (labels, self.evidence(now))
    }

    /// Merges what an answer of `provider` for `model` said of its rate limits, as of
    /// `now`, into what earlier answers said ([`Headroom::merged`]: a figure it does
    /// not state keeps its older value until that limit resets); returns the labels
    /// it is published under.
    pub(crate) fn headroom(
        &mut self,
        provider: &str,
        model: &str,
        headroom: &Headroom,
        now: Duration,
    ) -> HeadroomLabels {
        let books = &mut self.books;
        let labels = HeadroomLabels {
            provider: bounded_label(&mut books.providers, provider, MAX_PROVIDERS),
            model: bounded_label(&mut books.request_models, model, MAX_MODELS),
        };
        let merged = match books
            .headroom
            .get(&(labels.provider.clone(), labels.model.clone()))
        {
            Some((older, at)) => older.merged(headroom, now.saturating_sub(*at)),
            None => headroom.clone(),
        };
        books.headroom.insert(
            (labels.provider.clone(), labels.model.clone()),
            (merged, now),
        );
        labels
    }

    /// The least headroom at `now` of the limits still in force.
    fn least_headroom(&self, now: Duration) -> Option<f64> {
        self.books
            .headroom
            .values()
            .filter_map(|(headroom, at)| headroom.fraction_after(now.saturating_sub(*at)))
            .min_by(f64::total_cmp)
    }

    /// The spend so far in US dollars.
    pub(crate) fn spend_usd(&self) -> f64 {
        self.books.spend_usd
    }

    /// The calls that ended so far, of every model.
    pub(crate) fn calls(&self) -> u64 {
        self.books.calls
    }

    /// Whether any call was recorded (the LLM alerts have nothing to judge before).
    pub(crate) fn any_calls(&self) -> bool {
        self.any_calls
    }

    /// The champion changed `changes` times (more than once for a merged batch), the
    /// last at `now`: spending without progress starts again from zero.
    pub(crate) fn champion_changed(&mut self, changes: u64, now: Duration) -> LlmEvidence {
        let books = &mut self.books;
        books.spend_at_champion_usd = books.spend_usd;
        books.champion_changes = books.champion_changes.saturating_add(changes);
        self.evidence(now)
    }

    /// The evidence at `now`: calls and spending age out of their windows.
    pub(crate) fn evidence(&mut self, now: Duration) -> LlmEvidence {
        let books = &mut self.books;
        while books
            .recent
            .front()
            .is_some_and(|(at, _)| now.saturating_sub(*at) > ERROR_WINDOW_MAX_AGE)
        {
            books.recent.pop_front();
        }
        let minute = minute_of(now);
        while books
            .minutes
            .front()
            .is_some_and(|(m, _)| minute.saturating_sub(*m) >= HOUR_MINUTES as u64)
        {
            books.minutes.pop_front();
        }
        let headroom = self.least_headroom(now);
        let books = &mut self.books;
        LlmEvidence {
            headroom,
            recent_calls: books.recent.len() as u64,
            recent_failures: books.recent.iter().filter(|(_, failed)| *failed).count() as u64,
            spend_usd: books.spend_usd,
            budget_spend_usd: self.budget.spent_usd(books.spend_usd),
            spend_last_hour_usd: books.minutes.iter().map(|(_, m)| m.cost_usd).sum(),
            spend_since_champion_usd: books.spend_usd - books.spend_at_champion_usd,
            spend_is_lower_bound: books.spend_is_lower_bound,
        }
    }

    /// The run's calls so far, as of `now` (a reader's look: the last hour is read
    /// from the minutes still in it, nothing is aged out).
    pub(crate) fn summary(&self, now: Duration) -> LlmSummary {
        let books = &self.books;
        let minute = minute_of(now);
        let mut durations: Vec<f64> = books.durations.iter().copied().collect();
        durations.sort_by(f64::total_cmp);
        let quantile = |q: f64| {
            (!durations.is_empty()).then(|| {
                let at = ((durations.len() - 1) as f64 * q).round() as usize;
                durations[at]
            })
        };
        let mut summary = LlmSummary {
            p50_seconds: quantile(0.5),
            p95_seconds: quantile(0.95),
            last_hour: books
                .minutes
                .iter()
                .rev()
                .filter(|(m, _)| minute.saturating_sub(*m) < HOUR_MINUTES as u64)
                .map(|(m, tally)| MinuteTally {
                    minutes_ago: minute.saturating_sub(*m),
                    ..*tally
                })
                .collect(),
            spend_since_champion_usd: books.spend_usd - books.spend_at_champion_usd,
            spend_per_champion_change_usd: (books.champion_changes > 0)
                .then(|| books.spend_usd / books.champion_changes as f64),
            by_model: books.by_model.clone(),
            by_role: books.by_role.clone(),
            role_fallbacks: books.role_fallbacks.clone(),
            spend_is_lower_bound: books.spend_is_lower_bound,
            ..LlmSummary::default()
        };
        summary.budget = self.budget.summary(books.spend_usd);
        summary.rate_limit_headroom = self.least_headroom(now);
        summary.rate_limits = books
            .headroom
            .iter()
            .map(|((provider, model), (headroom, at))| {
                let age = now.saturating_sub(*at);
                RateLimitTally {
                    provider: provider.clone(),
                    model: model.clone(),
                    age_seconds: age.as_secs_f64(),
                    headroom: headroom.fraction_after(age),
                    limits: headroom
                        .limits
                        .iter()
                        .map(|(resource, limit)| {
                            (
                                resource.as_str().to_string(),
                                LimitTally {
                                    limit: limit.limit,
                                    remaining: limit.remaining,
                                    reset_seconds: limit.reset.map(|r| r.as_secs_f64()),
                                    resets_in_seconds: limit
                                        .reset
                                        .map(|r| r.saturating_sub(age).as_secs_f64()),
                                },
                            )
                        })
                        .collect(),
                    retry_after_seconds: headroom.retry_after.map(|r| r.as_secs_f64()),
                }
            })
            .collect();
        summary.rate_limits.sort_by(|a, b| {
            a.headroom
                .unwrap_or(f64::INFINITY)
                .total_cmp(&b.headroom.unwrap_or(f64::INFINITY))
                .then_with(|| (&a.provider, &a.model).cmp(&(&b.provider, &b.model)))
        });
        for tally in books.by_model.values() {
            for (sum, n) in [
                (&mut summary.calls, tally.calls),
                (&mut summary.errors, tally.errors),
                (&mut summary.abandoned, tally.abandoned),
                (&mut summary.blocked, tally.blocked),
                (&mut summary.deferred, tally.deferred),
                (&mut summary.usage_missing, tally.usage_missing),
                (&mut summary.input_tokens, tally.input_tokens),
                (&mut summary.output_tokens, tally.output_tokens),
                (&mut summary.reasoning_tokens, tally.reasoning_tokens),
                (&mut summary.unpriced_tokens, tally.unpriced_tokens),
            ] {
                *sum = sum.saturating_add(n);
            }
            summary.cost_usd += tally.cost_usd;
        }
        summary
    }

    /// Call `id` asks to start at `now`, worth at most `worst_usd`: in flight, its
    /// worst case reserved against the budget, or refused by a budget that blocks.
    pub(crate) fn call_started(
        &mut self,
        id: u64,
        now: Duration,
        worst_usd: f64,
    ) -> Result<(), BudgetRefusal> {
        self.budget.admit(id, worst_usd, self.books.spend_usd)?;
        self.in_flight.insert(id, now);
        Ok(())
    }

    /// Call `id` is booked: its reservation gives way to its cost, or, when its
    /// usage is unknown and a budget is set, is charged to the budget's spend.
    pub(crate) fn settle_reservation(&mut self, id: u64, usage_missing: bool) {
        self.budget.settle(id, usage_missing);
    }

    /// How call `id` was refused, if it was the last call refused.
    pub(crate) fn refusal_of(&self, id: u64) -> Option<BudgetRefusal> {
        self.budget.refusal_of(id)
    }

    /// Whether call `id` was admitted and is still in flight.
    pub(crate) fn is_in_flight(&self, id: u64) -> bool {
        self.in_flight.contains_key(&id)
    }

    /// Call `id` is no longer in flight (however it ended): its reservation is
    /// released (its cost, once booked, counts instead).
    pub(crate) fn call_ended(&mut self, id: u64) {
        self.in_flight.remove(&id);
        self.budget.release(id);
    }

    /// The budget's warnings that the spend so far reaches and that were not given
    /// yet (each once), with the budget.
    pub(crate) fn new_budget_warnings(&mut self) -> (Vec<u8>, Option<Budget>) {
        (
            self.budget.new_warnings(self.books.spend_usd),
            self.budget.budget,
        )
    }

    /// The budget's figures now.
    pub(crate) fn budget_summary(&self) -> Option<BudgetSummary> {
        self.budget.summary(self.books.spend_usd)
    }

    /// Calls in flight at `now`, and the age of the oldest.
    pub(crate) fn in_flight(&self, now: Duration) -> (usize, Duration) {
        let oldest = self
            .in_flight
            .values()
            .min()
            .map_or(Duration::ZERO, |started| now.saturating_sub(*started));
        (self.in_flight.len(), oldest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(cost_usd: Option<f64>) -> Pricing {
        Pricing {
            cost_usd,
            unpriced_tokens: 0,
        }
    }

    #[test]
    fn the_error_window_holds_the_last_calls_and_only_outages_fail() {
        let mut meter = LlmMeter::default();
        let call = |error| {
            let call = LlmCall::new("m", Duration::ZERO);
            match error {
                Some(e) => call.with_error(e),
                None => call,
            }
        };
        for _ in 0..25 {
            meter.record(&call(None), cost(None), 20, Duration::ZERO);
        }
        let (_, e) = meter.record(
            &call(Some(LlmError::Status(400))),
            cost(None),
            20,
            Duration::ZERO,
        );
        assert_eq!((e.recent_calls, e.recent_failures), (20, 0));
        let (_, e) = meter.record(
            &call(Some(LlmError::Status(503))),
            cost(None),
            20,
            Duration::ZERO,
        );
        assert_eq!((e.recent_calls, e.recent_failures), (20, 1));
        assert_eq!(meter.summary(Duration::ZERO).errors, 2);
    }

    #[test]
    fn spend_since_the_champion_restarts_at_each_change() {
        let mut meter = LlmMeter::default();
        let call = LlmCall::new("m", Duration::ZERO).with_tokens(10, 10);
        meter.record(&call, cost(Some(1.5)), 20, Duration::ZERO);
        let e = meter.champion_changed(1, Duration::ZERO);
        assert_eq!(e.spend_since_champion_usd, 0.0);
        let (_, e) = meter.record(&call, cost(Some(0.5)), 20, Duration::ZERO);
        assert_eq!(
            (
                e.spend_usd,
                e.spend_since_champion_usd,
                e.spend_last_hour_usd
            ),
            (2.0, 0.5, 2.0)
        );
        let unpriced = Pricing {
            cost_usd: None,
            unpriced_tokens: 20,
        };
        let (_, e) = meter.record(&call, unpriced, 20, Duration::ZERO);
        assert_eq!(e.spend_usd, 2.0);
        assert!(e.spend_is_lower_bound);
        let summary = meter.summary(Duration::ZERO);
        assert_eq!(summary.unpriced_tokens, 20);
        assert_eq!(summary.spend_per_champion_change_usd, Some(2.0));
    }

    #[test]
    fn windows_age_by_the_time_they_are_given() {
        let mut meter = LlmMeter::default();
        let failed = LlmCall::new("m", Duration::ZERO).with_error(LlmError::Status(503));
        meter.record(&failed, cost(Some(2.0)), 20, Duration::from_secs(30));
        let e = meter.evidence(Duration::from_secs(30) + ERROR_WINDOW_MAX_AGE);
        assert_eq!((e.recent_calls, e.recent_failures), (1, 1));
        assert_eq!(e.spend_last_hour_usd, 2.0);
        let later = Duration::from_secs(31) + ERROR_WINDOW_MAX_AGE;
        assert_eq!(meter.evidence(later).recent_calls, 0, "out of the window");
        // A reader an hour later sees no spend in the last hour; the total stays.
        let hour_later = Duration::from_secs(3600 + 60);
        let summary = meter.summary(hour_later);
        assert!(summary.last_hour.is_empty());
        assert_eq!(summary.cost_usd, 2.0);
        let e = meter.evidence(hour_later);
        assert_eq!((e.spend_last_hour_usd, e.spend_usd), (0.0, 2.0));
    }

    #[test]
    fn calls_in_flight_age_from_their_start() {
        let mut meter = LlmMeter::default();
        meter.call_started(1, Duration::from_secs(10), 0.0).unwrap();
        meter.call_started(2, Duration::from_secs(12), 0.0).unwrap();
        assert_eq!(
            meter.in_flight(Duration::from_secs(15)),
            (2, Duration::from_secs(5))
        );
        meter.call_ended(1);
        meter.call_ended(7);
        assert_eq!(
            meter.in_flight(Duration::from_secs(15)),
            (1, Duration::from_secs(3))
        );
    }

    #[test]
    fn model_labels_are_bounded() {
        let mut meter = LlmMeter::default();
        for i in 0..(MAX_MODELS + 5) {
            let call = LlmCall::new(format!("model-{i}"), Duration::ZERO);
            meter.record(&call, cost(None), 20, Duration::ZERO);
        }
        let summary = meter.summary(Duration::ZERO);
        assert_eq!(summary.by_model.len(), MAX_MODELS + 1);
        assert_eq!(summary.by_model[OTHER_MODEL].calls, 5);
    }

    #[test]
    fn roles_are_bounded_and_what_is_not_a_role_name_is_a_counted_fallback() {
        fn labels(meter: &mut LlmMeter, role: Option<&str>) -> (String, Option<RoleFallback>) {
            let mut call = LlmCall::new("m", Duration::ZERO).with_tokens(3, 2);
            call.role = role.map(str::to_string);
            let (labels, _) = meter.record(&call, cost(Some(1.0)), 20, Duration::ZERO);
            (labels.role, labels.role_fallback)
        }
        let mut meter = LlmMeter::default();
        assert_eq!(labels(&mut meter, None), ("none".into(), None));
        assert_eq!(
            labels(&mut meter, Some(" mutation ")),
            ("mutation".into(), None)
        );
        for garbage in [
            "",
            "two words",
            "a,b",
            "none",
            "Other",
            "\u{0}",
            "é",
            &"x".repeat(65),
        ] {
            assert_eq!(
                labels(&mut meter, Some(garbage)),
                (INVALID_ROLE.into(), Some(RoleFallback::Invalid)),
                "{garbage:?}"
            );
        }
        for i in 1..MAX_ROLES {
            assert_eq!(labels(&mut meter, Some(&format!("r{i}"))).1, None);
        }
        assert_eq!(
            labels(&mut meter, Some("one-too-many")),
            (OTHER_ROLE.into(), Some(RoleFallback::Overflow))
        );
        assert_eq!(
            labels(&mut meter, Some("mutation")),
            ("mutation".into(), None)
        );
        let summary = meter.summary(Duration::ZERO);
        assert_eq!(summary.by_role["mutation"].calls, 2);
        assert_eq!(summary.by_role["mutation"].input_tokens, 6);
        assert_eq!(summary.by_role["mutation"].output_tokens, 4);
        assert_eq!(summary.by_role["mutation"].cost_usd, 2.0);
        assert_eq!(summary.by_role[INVALID_ROLE].calls, 8);
        assert_eq!(summary.by_role[OTHER_ROLE].calls, 1);
        assert_eq!(
            summary.by_role.len(),
            MAX_ROLES + 3,
            "kept, none, invalid, other"
        );
        assert_eq!(summary.role_fallbacks["invalid"], 8);
        assert_eq!(summary.role_fallbacks["overflow"], 1);
        let by_role: u64 = summary.by_role.values().map(|t| t.calls).sum();
        assert_eq!(by_role, summary.calls);
    }

    proptest::proptest! {
        /// Any role, however odd, books a call under a bounded label and never
        /// panics.
        #[test]
        fn any_role_is_booked_under_a_bounded_label(roles in proptest::collection::vec(".{0,80}", 1..40)) {
            let mut meter = LlmMeter::default();
            for role in &roles {
                let call = LlmCall::new("m", Duration::ZERO).with_role(role.clone());
                let (labels, _) = meter.record(&call, cost(None), 20, Duration::ZERO);
                proptest::prop_assert!(labels.role.len() <= crate::llm::MAX_ROLE_CHARS);
                proptest::prop_assert!(valid_role(&labels.role) || labels.role_fallback.is_some());
            }
            proptest::prop_assert!(meter.summary(Duration::ZERO).by_role.len() <= MAX_ROLES + 2);
        }
    }

    /// Each provider's and model's last word counts until its limits reset; the
    /// least headroom of what still counts is the evidence.
    #[test]
    fn the_least_headroom_in_force_is_the_evidence() {
        use crate::llm::headroom::Headroom;
        let reading = |remaining: &str, reset: &str| {
            let mut headers = hyper::HeaderMap::new();
            for (name, value) in [
                ("x-ratelimit-limit-requests", "100"),
                ("x-ratelimit-remaining-requests", remaining),
                ("x-ratelimit-reset-requests", reset),
            ] {
                headers.insert(name, value.parse().unwrap());
            }
            Headroom::read(&headers, std::time::UNIX_EPOCH).unwrap()
        };
        let mut meter = LlmMeter::default();
        assert_eq!(meter.evidence(Duration::ZERO).headroom, None);
        let at = Duration::from_secs(100);
        let labels = meter.headroom("openai", "a", &reading("50", "10s"), at);
        assert_eq!(
            (labels.provider.as_str(), labels.model.as_str()),
            ("openai", "a")
        );
        assert_eq!(meter.evidence(at).headroom, Some(0.5));
        meter.headroom("openai", "b", &reading("5", "30s"), at);
        assert_eq!(meter.evidence(at).headroom, Some(0.05));
        // The next answer of `b` is its last word.
        meter.headroom("openai", "b", &reading("20", "30s"), at);
        assert_eq!(meter.evidence(at).headroom, Some(0.2));
        // `a` resets after 10 s, `b` after 30 s: then all is whole again.
        assert_eq!(
            meter.evidence(at + Duration::from_secs(11)).headroom,
            Some(0.2)
        );
        assert_eq!(meter.evidence(at + Duration::from_secs(31)).headroom, None);
        let summary = meter.summary(at + Duration::from_secs(5));
        assert_eq!(summary.rate_limits.len(), 2);
        assert_eq!(summary.rate_limits[0].model, "b", "most constrained first");
        let requests = summary.rate_limits[0].limits["requests"];
        assert_eq!((requests.limit, requests.remaining), (Some(100), Some(20)));
        assert_eq!(requests.resets_in_seconds, Some(25.0));
        assert_eq!(summary.rate_limit_headroom, Some(0.2));
    }

    /// An answer that states fewer figures than the one before (a 429 with only a
    /// wait, remaining without the limit) leaves the older figures in force until
    /// their limit resets; a figure it does state replaces the older one.
    #[test]
    fn a_reading_is_merged_limit_by_limit_into_the_last_word() {
        use crate::llm::headroom::Headroom;
        let read = |pairs: &[(&str, &str)]| {
            let mut headers = hyper::HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(
                    hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    value.parse().unwrap(),
                );
            }
            Headroom::read(&headers, std::time::UNIX_EPOCH).unwrap()
        };
        let mut meter = LlmMeter::default();
        let at = Duration::from_secs(100);
        meter.headroom(
            "openai",
            "m",
            &read(&[
                ("x-ratelimit-limit-requests", "100"),
                ("x-ratelimit-remaining-requests", "5"),
                ("x-ratelimit-reset-requests", "30s"),
                ("x-ratelimit-limit-tokens", "1000"),
                ("x-ratelimit-remaining-tokens", "900"),
            ]),
            at,
        );
        assert_eq!(meter.evidence(at).headroom, Some(0.05));
        // A 429 with only a wait: the limits stay, the wait is its own.
        let later = at + Duration::from_secs(10);
        meter.headroom("openai", "m", &read(&[("retry-after-ms", "1500")]), later);
        assert_eq!(meter.evidence(later).headroom, Some(0.05));
        let summary = meter.summary(later);
        assert_eq!(summary.rate_limits[0].retry_after_seconds, Some(1.5));
        let requests = summary.rate_limits[0].limits["requests"];
        assert_eq!(requests.resets_in_seconds, Some(20.0));
        // Remaining without the limit: the limit known before is used with it.
        meter.headroom(
            "openai",
            "m",
            &read(&[("x-ratelimit-remaining-requests", "2")]),
            later,
        );
        assert_eq!(meter.evidence(later).headroom, Some(0.02));
        assert_eq!(
            meter.summary(later).rate_limits[0].retry_after_seconds,
            None
        );
        // The undated tokens limit counts a minute from its own answer, not longer.
        let tokens = |now| {
            meter.summary(now).rate_limits[0]
                .limits
                .get("tokens")
                .copied()
        };
        assert!(tokens(later).is_some());
        meter.headroom(
            "openai",
            "m",
            &read(&[("x-ratelimit-remaining-requests", "1")]),
            at + Duration::from_secs(29),
        );
        assert_eq!(
            meter.evidence(at + Duration::from_secs(29)).headroom,
            Some(0.01)
        );
        // Once the requests limit resets, its older figures are gone: a later answer
        // stating only what remains has no limit to set it against.
        let reset = at + Duration::from_secs(31);
        meter.headroom(
            "openai",
            "m",
            &read(&[("x-ratelimit-remaining-requests", "1")]),
            reset,
        );
        assert_eq!(
            meter.evidence(reset).headroom,
            Some(0.9),
            "tokens still count"
        );
        let summary = meter.summary(reset);
        let requests = summary.rate_limits[0].limits["requests"];
        assert_eq!((requests.limit, requests.remaining), (None, Some(1)));
        assert_eq!(
            meter.evidence(at + Duration::from_secs(61)).headroom,
            None,
            "the undated tokens limit lapses a minute after it was stated"
        );
    }

    #[test]
    fn abandoned_calls_are_counted_apart_and_stay_out_of_the_error_window() {
        let mut meter = LlmMeter::default();
        let ok = LlmCall::new("m", Duration::from_secs(1)).with_tokens(1, 1);
        meter.record(&ok, cost(Some(0.0)), 20, Duration::ZERO);
        for _ in 0..4 {
            let abandoned = LlmCall::new("m", Duration::from_millis(1)).with_abandoned();
            let (_, e) = meter.record(&abandoned, cost(None), 20, Duration::ZERO);
            assert_eq!((e.recent_calls, e.recent_failures), (1, 0));
            assert!(e.spend_is_lower_bound, "its usage is unknown");
        }
        let summary = meter.summary(Duration::ZERO);
        assert_eq!(
            (summary.calls, summary.errors, summary.abandoned),
            (5, 0, 4)
        );
        assert_eq!(summary.usage_missing, 4);
        assert_eq!(summary.by_model["m"].errors_by_type.len(), 0);
        assert_eq!(summary.last_hour[0].abandoned, 4);
        assert_eq!(summary.last_hour[0].ok, 1);
        // The durations are those of calls that ended.
        assert_eq!(summary.p50_seconds, Some(1.0));
    }

    proptest::proptest! {
        /// Absurd token counts neither wrap nor panic: the sums stop at the top.
        #[test]
        fn token_sums_saturate(
            counts in proptest::collection::vec(
                (proptest::option::of(proptest::num::u64::ANY), proptest::option::of(proptest::num::u64::ANY), proptest::num::u64::ANY),
                1..6,
            )
        ) {
            let mut meter = LlmMeter::default();
            let mut input = 0u128;
            let mut output = 0u128;
            for (i, o, reasoning) in &counts {
                let mut call = LlmCall::new("m", Duration::ZERO);
                call.input_tokens = *i;
                call.output_tokens = *o;
                call.reasoning_tokens = Some(*reasoning);
                call.cached_input_tokens = *i;
                call.cache_write_input_tokens = *o;
                let pricing = crate::llm::LlmConfig::default()
                    .with_price("m", crate::llm::Price::per_million(1.0, 1.0))
                    .pricing(&call);
                meter.record(&call, pricing, 20, Duration::ZERO);
                input += u128::from(i.unwrap_or(0));
                output += u128::from(o.unwrap_or(0));
            }
            let summary = meter.summary(Duration::ZERO);
            let top = |sum: u128| u64::try_from(sum).unwrap_or(u64::MAX);
            proptest::prop_assert_eq!(summary.input_tokens, top(input));
            proptest::prop_assert_eq!(summary.output_tokens, top(output));
            proptest::prop_assert_eq!(summary.last_hour[0].input_tokens, top(input));
            proptest::prop_assert!(summary.cost_usd.is_finite());
        }
    }
}
