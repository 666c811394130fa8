//! One pure function per alert: the evidence in, the verdict out. The [`Evaluator`]
//! keeps the evidence (streaks, windows, the clock) and applies the verdicts to each
//! alert's lifecycle; adding an alert means a row of the alert table and a function
//! here.
//!
//! [`Evaluator`]: super::Evaluator

use std::time::Duration;

use super::tracker::Verdict;
use crate::config::Thresholds;
use crate::records::LoopExit;

/// HighMemoryUsage, with hysteresis: above `memory_fraction` for `memory_samples`
/// consecutive samples fires; once firing, it clears only below
/// `memory_clear_fraction`. `streak` counts this sample.
pub(crate) fn high_memory(fraction: f64, streak: u64, firing: bool, th: &Thresholds) -> Verdict {
    if fraction > th.memory_fraction() {
        if streak >= th.memory_samples() {
            Verdict::Firing(fraction)
        } else {
            Verdict::Pending(fraction)
        }
    } else if firing && fraction >= th.memory_clear_fraction() {
        Verdict::Firing(fraction)
    } else {
        Verdict::Clear
    }
}

/// DiversityCollapse: below the floor in each of the last `diversity_iterations`.
pub(crate) fn diversity_collapse(streak: u64, diversity: f64, th: &Thresholds) -> Verdict {
    match streak {
        0 => Verdict::Clear,
        n if n >= th.diversity_iterations() => Verdict::Firing(diversity),
        _ => Verdict::Pending(diversity),
    }
}

/// ChampionStaleness: `staleness_iterations` since the champion last changed.
pub(crate) fn champion_staleness(staleness: u64, th: &Thresholds) -> Verdict {
    if staleness >= th.staleness_iterations() {
        Verdict::Firing(staleness as f64)
    } else {
        Verdict::Clear
    }
}

/// LowSuccessRate: below the floor over a full window; pending while it fills. A
/// window without outcomes has no rate, and so no verdict but clear.
pub(crate) fn low_success_rate(rate: Option<f64>, window_full: bool, th: &Thresholds) -> Verdict {
    match rate {
        Some(rate) if rate < th.success_rate_floor() && window_full => Verdict::Firing(rate),
        Some(rate) if rate < th.success_rate_floor() => Verdict::Pending(rate),
        _ => Verdict::Clear,
    }
}

/// ContainerCleanupFailures: more orphans left after a sweep than the limit.
pub(crate) fn cleanup_failures(orphans: u64, th: &Thresholds) -> Verdict {
    if orphans > th.orphan_limit() {
        Verdict::Firing(orphans as f64)
    } else {
        Verdict::Clear
    }
}

/// LoopStalled: the loop has waited (running one iteration, or between two) longer
/// than the stall limit. `waited` is `None` when it is done or has not started.
pub(crate) fn loop_stalled(waited: Option<Duration>, limit: Duration) -> Verdict {
    match waited {
        Some(waited) if waited > limit => Verdict::Firing(waited.as_secs_f64()),
        _ => Verdict::Clear,
    }
}

/// LoopExited: a failing exit the loop had not announced; its value is the shell
/// status.
pub(crate) fn loop_exited(exit: &LoopExit) -> Verdict {
    if exit.unexpected() {
        Verdict::Firing(f64::from(exit.shell_status()))
    } else {
        Verdict::Clear
    }
}

/// LoopCrashLooping: the supervisor restarted the loop `crash_loop_restarts` times
/// (one fewer than `max_restarts`) within `restart_window`; its value is that count.
pub(crate) fn crash_looping(recent_restarts: u64, th: &Thresholds) -> Verdict {
    if recent_restarts >= th.crash_loop_restarts() {
        Verdict::Firing(recent_restarts as f64)
    } else {
        Verdict::Clear
    }
}

/// LLMErrors: at least `llm_error_rate` of the calls in the window (the last
/// `llm_error_calls` of the last 15 minutes) failed, and at least three did; its
/// value is the failed share.
pub(crate) fn llm_errors(failures: u64, calls: u64, th: &Thresholds) -> Verdict {
    if calls == 0 {
        return Verdict::Clear;
    }
    let share = failures as f64 / calls as f64;
    if failures >= crate::llm::LLM_ERRORS_MIN_FAILURES && share >= th.llm_error_rate() {
        Verdict::Firing(share)
    } else {
        Verdict::Clear
    }
}

/// LLMSpendWithoutProgress: spend since the champion last changed at or above
/// `llm_spend_without_progress_usd`; never while that key is unset.
pub(crate) fn llm_spend_without_progress(spend_since_champion: f64, th: &Thresholds) -> Verdict {
    match th.llm_spend_without_progress_usd() {
        Some(limit) if spend_since_champion >= limit => Verdict::Firing(spend_since_champion),
        _ => Verdict::Clear,
    }
}

/// LLMBudget: spend at or above `llm_budget_usd` fires; before that, pending (a
/// warning) while the last hour's spending would reach it within
/// `llm_budget_horizon`, with the projected spend as its value. Never while the
/// budget is unset.
pub(crate) fn llm_budget(spend: f64, spend_last_hour: f64, th: &Thresholds) -> Verdict {
    let Some(budget) = th.llm_budget_usd() else {
        return Verdict::Clear;
    };
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

/// EvaluationHung: the oldest evaluation in flight has run longer than the limit; its
/// value is that evaluation's age. `oldest` is `None` with none in flight.
pub(crate) fn evaluation_hung(oldest: Option<Duration>, limit: Duration) -> Verdict {
    match oldest {
        Some(age) if age > limit => Verdict::Firing(age.as_secs_f64()),
        _ => Verdict::Clear,
    }
}
