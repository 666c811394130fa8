//! What the page and `GET /api/v1/snapshot` show, derived from a [`Snapshot`]: alert
//! intervals over the iterations, the alerts firing with since-when and value, and
//! the top failure reasons. One place, so the page and the JSON cannot disagree.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{json, Value};

use crate::alerts::{AlertName, AlertState};
use crate::export::Snapshot;
use crate::records::LogEntryKind;

/// Failure reasons shown by name; the rest are summed as `other`.
pub(crate) const TOP_REASONS: usize = 8;

use crate::records::unix_seconds as unix;

/// One stretch of iterations during which an alert fired.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Interval {
    pub(crate) from_iteration: u64,
    pub(crate) from: f64,
    /// `None` while it still fires.
    pub(crate) to_iteration: Option<u64>,
    pub(crate) to: Option<f64>,
}

/// An alert firing now: since when, and its value against its threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Firing {
    pub(crate) alertname: AlertName,
    pub(crate) message: &'static str,
    pub(crate) since_iteration: u64,
    pub(crate) since: f64,
    pub(crate) value: Option<f64>,
    pub(crate) threshold: f64,
}

/// The firing intervals of every alert, from the events.
pub(crate) fn intervals(snapshot: &Snapshot) -> BTreeMap<AlertName, Vec<Interval>> {
    let mut lanes: BTreeMap<AlertName, Vec<Interval>> =
        AlertName::ALL.iter().map(|a| (*a, Vec::new())).collect();
    for event in &snapshot.events {
        let LogEntryKind::Alert {
            alertname, state, ..
        } = &event.kind
        else {
            continue;
        };
        let lane = lanes.entry(*alertname).or_default();
        match state {
            AlertState::Firing => lane.push(Interval {
                from_iteration: event.iteration,
                from: unix(event.at),
                to_iteration: None,
                to: None,
            }),
            AlertState::Inactive => {
                if let Some(open) = lane.last_mut().filter(|i| i.to.is_none()) {
                    open.to_iteration = Some(event.iteration);
                    open.to = Some(unix(event.at));
                }
            }
            AlertState::Pending => {}
        }
    }
    lanes
}

/// A restart of the loop by `loopwatch run`, for the alert timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Restart {
    /// The last iteration before it.
    pub(crate) iteration: u64,
    /// When it happened, Unix seconds.
    pub(crate) at: f64,
    /// Why the previous process ended.
    pub(crate) reason: crate::records::ExitReason,
    /// The previous process's exit status.
    pub(crate) status: i32,
}

/// The restarts of the loop, from the events.
pub(crate) fn restarts(snapshot: &Snapshot) -> Vec<Restart> {
    snapshot
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            LogEntryKind::Restarted { reason, status, .. } => Some(Restart {
                iteration: e.iteration,
                at: unix(e.at),
                reason: *reason,
                status: *status,
            }),
            _ => None,
        })
        .collect()
}

/// A mark of the LLM budget, for the alert timeline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct BudgetMarkView {
    /// The iteration it belongs to.
    pub(crate) iteration: u64,
    /// When it happened, Unix seconds.
    pub(crate) at: f64,
    /// What it marks.
    pub(crate) mark: crate::llm::budget::BudgetMark,
}

/// The budget's marks (warnings, the first refusal), from the events.
pub(crate) fn budget_marks(snapshot: &Snapshot) -> Vec<BudgetMarkView> {
    snapshot
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            LogEntryKind::LlmBudget(mark) => Some(BudgetMarkView {
                iteration: e.iteration,
                at: unix(e.at),
                mark: *mark,
            }),
            _ => None,
        })
        .collect()
}

/// The alerts firing now, with the event that started each.
pub(crate) fn firing(snapshot: &Snapshot) -> Vec<Firing> {
    snapshot
        .evaluation
        .firing()
        .into_iter()
        .map(|alert| {
            let started = snapshot.events.iter().rev().find_map(|e| match &e.kind {
                LogEntryKind::Alert {
                    alertname,
                    state: AlertState::Firing,
                    value,
                    threshold,
                    ..
                } if *alertname == alert => Some((e.iteration, unix(e.at), *value, *threshold)),
                _ => None,
            });
            let (since_iteration, since, value, threshold) = started.unwrap_or((
                snapshot.summary.iterations,
                unix(SystemTime::now()),
                None,
                alert.threshold(&snapshot.thresholds),
            ));
            Firing {
                alertname: alert,
                message: alert.message(),
                since_iteration,
                since,
                value,
                threshold,
            }
        })
        .collect()
}

/// The most frequent reasons, largest first, the rest summed as `other`.
pub(crate) fn top_reasons(reasons: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
    let mut sorted: Vec<(&String, &u64)> = reasons.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut top: Vec<(String, u64)> = sorted
        .iter()
        .take(TOP_REASONS)
        .map(|(r, c)| ((*r).clone(), **c))
        .collect();
    let rest: u64 = sorted.iter().skip(TOP_REASONS).map(|(_, c)| **c).sum();
    if rest > 0 {
        match top.iter_mut().find(|(r, _)| r == "other") {
            Some((_, count)) => *count += rest,
            None => top.push(("other".to_string(), rest)),
        }
    }
    top
}

/// The frameworks instrumented now, as the page's header names them ("optuna
/// 5.1.0, deap 1.4.4"), and the errors their instrumentation caught in all.
pub(crate) fn instrumented(snapshot: &Snapshot) -> (String, u64) {
    let active: Vec<String> = snapshot
        .instrumentation
        .iter()
        .filter(|f| f.state == Some(crate::protocol::InstrumentationState::Active))
        .map(|f| match f.version.as_deref() {
            Some(version) if !version.is_empty() => format!("{} {version}", f.framework),
            _ => f.framework.to_string(),
        })
        .collect();
    let errors = snapshot
        .instrumentation
        .iter()
        .fold(0u64, |sum, f| sum.saturating_add(f.errors));
    (active.join(", "), errors)
}

/// `GET /api/v1/snapshot`: the data the page draws.
pub(crate) fn snapshot_json(snapshot: &Snapshot) -> Value {
    let reasons = |map: &BTreeMap<String, u64>| -> Vec<Value> {
        top_reasons(map)
            .into_iter()
            .map(|(reason, count)| json!({"reason": reason, "count": count}))
            .collect()
    };
    let alerts: Vec<Value> = intervals(snapshot)
        .into_iter()
        .map(|(alert, lane)| {
            json!({
                "alertname": alert,
                "state": snapshot.evaluation.alerts[alert],
                "message": alert.message(),
                "threshold": alert.threshold(&snapshot.thresholds),
                "intervals": lane,
            })
        })
        .collect();
    json!({
        "loopwatch_version": env!("CARGO_PKG_VERSION"),
        "identity": snapshot.identity,
        "summary": snapshot.summary,
        "rolling": snapshot.evaluation.rolling,
        "thresholds": snapshot.thresholds,
        "alerts": alerts,
        "firing": firing(snapshot),
        "failure_reasons": {
            "run": reasons(&snapshot.summary.failure_reasons),
            "recent": reasons(&snapshot.recent_failure_reasons),
            "recent_iterations": snapshot.recent_iterations,
        },
        "processes": snapshot.processes,
        "instrumentation": snapshot.instrumentation,
        "gpus": snapshot.gpus,
        "containers": {
            "live": snapshot.live_containers,
            "state": snapshot.containers,
        },
        "evaluations": snapshot.evaluations,
        "model_servers": snapshot.model_servers,
        "history": snapshot.history,
        "samples": snapshot.samples,
        "samples_dropped": snapshot.samples_dropped,
        "best_so_far": snapshot.progress,
        "events": snapshot.events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_reasons_keep_the_largest_and_sum_the_rest() {
        let reasons: BTreeMap<String, u64> = (0..12)
            .map(|i| (format!("r{i:02}"), 100 - i))
            .chain([("other".to_string(), 1)])
            .collect();
        let top = top_reasons(&reasons);
        assert_eq!(top.len(), TOP_REASONS + 1);
        assert_eq!(top[0], ("r00".to_string(), 100));
        let other = top.iter().find(|(r, _)| r == "other").unwrap().1;
        assert_eq!(
            other,
            1 + 92 + 91 + 90 + 89,
            "the four smallest and the old other"
        );
    }
}
