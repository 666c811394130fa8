//! How an evaluation's findings reach their consumers. The run's state decides (and
//! keeps them in its event log); each consumer — the log, the gauges, Alertmanager —
//! implements [`FindingSink`] and is handed every transition that matters to it by
//! [`dispatch`].

use crate::alerts::AlertState;
use crate::evaluate::{Findings, Transition, WarningChange};
use crate::export::alertmanager::AlertSink;

/// A consumer of findings: alert transitions that fire or resolve, and warnings that
/// start or clear.
pub(super) trait FindingSink {
    /// An alert fired or resolved.
    fn transition(&self, transition: &Transition);
    /// A degradation or slowdown warning started or cleared.
    fn warning(&self, warning: &WarningChange);
}

/// Hands every finding to the log (all transitions, pending ones at debug level) and
/// the firing and resolving ones to each sink present.
pub(super) fn dispatch(findings: &Findings, log: &Log<'_>, sinks: &[Option<&dyn FindingSink>]) {
    for transition in &findings.transitions {
        log.transition(transition);
        if transition.fires_or_resolves() {
            for sink in sinks.iter().flatten() {
                sink.transition(transition);
            }
        }
    }
    for warning in &findings.warnings {
        log.warning(warning);
        for sink in sinks.iter().flatten() {
            sink.warning(warning);
        }
    }
}

/// The log: each transition and warning through `tracing`, with the fixed message and
/// the run id, value, threshold and iteration as fields.
#[derive(Debug)]
pub(super) struct Log<'a> {
    pub(super) run_id: &'a str,
}

impl FindingSink for Log<'_> {
    fn transition(&self, t: &Transition) {
        let name = t.alert.as_str();
        match t.state {
            AlertState::Firing => tracing::warn!(
                run_id = %self.run_id,
                alertname = name,
                severity = t.alert.severity(),
                value = t.value,
                threshold = t.threshold,
                iteration = t.iteration,
                note = t.note.unwrap_or_default(),
                subject = t.subject.as_deref().unwrap_or_default(),
                "{}",
                t.alert.message()
            ),
            AlertState::Pending if t.alert.pending_message().is_some() => tracing::warn!(
                run_id = %self.run_id,
                alertname = name,
                value = t.value,
                threshold = t.threshold,
                iteration = t.iteration,
                note = t.note.unwrap_or_default(),
                "{}",
                t.alert.pending_message().unwrap_or_default()
            ),
            AlertState::Inactive if t.is_resolution() => tracing::info!(
                run_id = %self.run_id,
                alertname = name,
                threshold = t.threshold,
                iteration = t.iteration,
                "resolved: {}",
                t.alert.message()
            ),
            _ => {
                tracing::debug!(alertname = name, state = ?t.state, value = t.value, "alert state")
            }
        }
    }

    fn warning(&self, w: &WarningChange) {
        if w.started {
            tracing::warn!(
                run_id = %self.run_id,
                metric = w.watched.metric(),
                value = w.value,
                baseline = w.baseline,
                limit = w.limit,
                iteration = w.iteration,
                "{}",
                w.watched.warning()
            );
        } else {
            tracing::info!(
                run_id = %self.run_id,
                metric = w.watched.metric(),
                value = w.value,
                baseline = w.baseline,
                iteration = w.iteration,
                "cleared: {}",
                w.watched.warning()
            );
        }
    }
}

/// Alertmanager: alerts only; warnings are not alerts.
impl FindingSink for AlertSink {
    fn transition(&self, transition: &Transition) {
        self.update(transition);
    }

    fn warning(&self, _: &WarningChange) {}
}
