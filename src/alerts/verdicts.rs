//! Verdicts: what an alert's condition concludes from the [`Evidence`]. Each row of the
//! alert table names its verdict, a pure function of the evidence and the thresholds:
//! a closure in the row when it is one comparison ([`Verdict::firing_if`]), else a
//! function here. The evaluator applies the verdicts to each alert's lifecycle.

use super::evidence::Evidence;
use crate::config::Thresholds;

/// What an alert's condition concludes from the latest evidence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Verdict {
    /// The condition does not hold: the alert clears.
    Clear,
    /// The condition holds, not yet for long enough (a streak still short, a window
    /// still filling): the alert is pending, with this value. A firing alert stays
    /// firing.
    Pending(f64),
    /// The condition holds: the alert fires, or stays firing, with this value.
    Firing(f64),
    /// Hysteresis: the value is past the level at which a firing alert clears but not
    /// past the one at which it fires. A firing alert stays firing; any other clears.
    Holding(f64),
    /// The evidence says nothing new about this alert (an iteration without a
    /// diversity report): its state stays as it is.
    Unchanged,
}

impl Verdict {
    /// Firing with `value` when `condition` holds, else clear: the verdict of an alert
    /// that is one comparison.
    pub(crate) fn firing_if(condition: bool, value: f64) -> Verdict {
        if condition {
            Verdict::Firing(value)
        } else {
            Verdict::Clear
        }
    }
}

/// HighMemoryUsage, with hysteresis: above `memory_fraction` for `memory_samples`
/// consecutive samples fires; once firing, it clears only below
/// `memory_clear_fraction`.
pub(crate) fn high_memory(e: &Evidence, th: &Thresholds) -> Verdict {
    let fraction = e.memory_fraction;
    if fraction > th.memory_fraction() {
        if e.memory_streak >= th.memory_samples() {
            Verdict::Firing(fraction)
        } else {
            Verdict::Pending(fraction)
        }
    } else if fraction >= th.memory_clear_fraction() {
        Verdict::Holding(fraction)
    } else {
        Verdict::Clear
    }
}

/// DiversityCollapse: below the floor in each of the last `diversity_iterations`; its
/// value is the diversity. An iteration without a diversity report changes nothing.
pub(crate) fn diversity_collapse(e: &Evidence, th: &Thresholds) -> Verdict {
    let Some(diversity) = e.diversity else {
        return Verdict::Unchanged;
    };
    match e.low_diversity_streak {
        0 => Verdict::Clear,
        n if n >= th.diversity_iterations() => Verdict::Firing(diversity),
        _ => Verdict::Pending(diversity),
    }
}

/// LowSuccessRate: below the floor over a full window; pending while it fills. A
/// window without outcomes has no rate, and so no verdict but clear.
pub(crate) fn low_success_rate(e: &Evidence, th: &Thresholds) -> Verdict {
    match e.rolling.success_rate {
        Some(rate) if rate < th.success_rate_floor() && e.window_full => Verdict::Firing(rate),
        Some(rate) if rate < th.success_rate_floor() => Verdict::Pending(rate),
        _ => Verdict::Clear,
    }
}

/// LoopStalled: the loop has waited (running one iteration, or between two) longer
/// than the stall limit; its value is the wait in seconds.
pub(crate) fn loop_stalled(e: &Evidence, _: &Thresholds) -> Verdict {
    match e.waited {
        Some(waited) => Verdict::firing_if(waited > e.stall_limit, waited.as_secs_f64()),
        None => Verdict::Clear,
    }
}

/// LLMErrors: at least `llm_error_rate` of the calls in the window (the last
/// `llm_error_calls` of the last 15 minutes) failed, and at least three did; its
/// value is the failed share.
pub(crate) fn llm_errors(e: &Evidence, th: &Thresholds) -> Verdict {
    let (failures, calls) = (e.llm.recent_failures, e.llm.recent_calls);
    if calls == 0 {
        return Verdict::Clear;
    }
    let share = failures as f64 / calls as f64;
    Verdict::firing_if(
        failures >= crate::llm::LLM_ERRORS_MIN_FAILURES && share >= th.llm_error_rate(),
        share,
    )
}

/// LLMSpendWithoutProgress: spend since the champion last changed at or above
/// `llm_spend_without_progress_usd`; never while that key is unset.
pub(crate) fn llm_spend_without_progress(e: &Evidence, th: &Thresholds) -> Verdict {
    let spend = e.llm.spend_since_champion_usd;
    match th.llm_spend_without_progress_usd() {
        Some(limit) => Verdict::firing_if(spend >= limit, spend),
        None => Verdict::Clear,
    }
}

/// LLMBudget: spend at or above `llm_budget_usd` fires; before that, pending (a
/// warning) while the last hour's spending would reach it within
/// `llm_budget_horizon`, with the projected spend as its value. Never while the
/// budget is unset.
pub(crate) fn llm_budget(e: &Evidence, th: &Thresholds) -> Verdict {
    let Some(budget) = th.llm_budget_usd() else {
        return Verdict::Clear;
    };
    let (spend, spend_last_hour) = (e.llm.budget_spend_usd, e.llm.spend_last_hour_usd);
    let hours = th.llm_budget_horizon().as_secs_f64() / 3600.0;
    let projected = spend + spend_last_hour * hours;
    if spend >= budget {
        Verdict::Firing(spend)
    } else if spend_last_hour > 0.0 && projected >= budget {
        Verdict::Pending(projected)
    } else {
        Verdict::Clear
    }
}

/// LLMRateLimitNear: the least rate-limit headroom below `llm_headroom_fraction`
/// for `llm_headroom_for` without a break fires; below it for less, pending; its value
/// is the headroom.
pub(crate) fn llm_rate_limit_near(e: &Evidence, th: &Thresholds) -> Verdict {
    match (e.llm.headroom, e.headroom_low_for) {
        (Some(headroom), Some(low_for)) if low_for >= th.llm_headroom_for() => {
            Verdict::Firing(headroom)
        }
        (Some(headroom), Some(_)) => Verdict::Pending(headroom),
        _ => Verdict::Clear,
    }
}

/// The note of the LLM spend alerts: their spend is a lower bound while calls came
/// without usage or tokens without a price.
pub(crate) fn spend_note(e: &Evidence) -> Option<&'static str> {
    e.llm
        .spend_is_lower_bound
        .then_some(crate::llm::SPEND_LOWER_BOUND)
}

/// GPUMemoryHigh: a GPU the loop's processes use has had more than
/// `gpu_memory_fraction` of its video memory in use for `gpu_memory_for`; pending
/// before that. Its value is the fraction.
pub(crate) fn gpu_memory_high(e: &Evidence, th: &Thresholds) -> Verdict {
    match e.gpu_memory_fraction {
        Some(fraction) if fraction > th.gpu_memory_fraction() => {
            if e.gpu_memory_high_for >= th.gpu_memory_for() {
                Verdict::Firing(fraction)
            } else {
                Verdict::Pending(fraction)
            }
        }
        _ => Verdict::Clear,
    }
}

/// EvaluationHung: the oldest evaluation in flight has run longer than the limit; its
/// value is that evaluation's age.
pub(crate) fn evaluation_hung(e: &Evidence, _: &Thresholds) -> Verdict {
    match e.oldest_evaluation {
        Some(age) => Verdict::firing_if(age > e.evaluation_limit, age.as_secs_f64()),
        None => Verdict::Clear,
    }
}

/// LLMServerSaturated: a model server saturated at every read for
/// `llm_server_saturated_for` fires, pending before; its value is that server's
/// KV-cache usage.
pub(crate) fn llm_server_saturated(e: &Evidence, th: &Thresholds) -> Verdict {
    let usage = e.server_kv_cache_usage;
    match e.server_saturated_for {
        Some(held) if held >= th.llm_server_saturated_for() => Verdict::Firing(usage),
        Some(_) => Verdict::Pending(usage),
        None => Verdict::Clear,
    }
}
