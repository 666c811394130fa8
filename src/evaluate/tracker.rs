//! Alert lifecycle: inactive → pending → firing → resolved, one transition at a time.

use std::time::SystemTime;

use crate::alerts::{AlertName, AlertState, Verdict};

/// A change of an alert's state, with the evidence behind it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Transition {
    /// Which alert.
    pub(crate) alert: AlertName,
    /// The state it entered: pending, firing, or inactive (resolved).
    pub(crate) state: AlertState,
    /// The value the rule looked at (a fraction, a streak, a count).
    pub(crate) value: f64,
    /// The threshold it compares against.
    pub(crate) threshold: f64,
    /// The last completed iteration when it happened.
    pub(crate) iteration: u64,
    /// When it happened.
    pub(crate) at: SystemTime,
    /// When the alert started firing (set on firing and resolved transitions).
    pub(crate) firing_since: Option<SystemTime>,
    /// A qualification of the value, said beside the fixed message (the LLM spend
    /// alerts' [`crate::llm::SPEND_LOWER_BOUND`]).
    pub(crate) note: Option<&'static str>,
    /// What the alert is about, when it is about one thing among many (EvaluationHung:
    /// the evaluation's id, worker and pid), said beside the fixed message.
    pub(crate) subject: Option<std::sync::Arc<str>>,
}

impl Transition {
    /// Whether this transition is news beyond the log: the alert fired, or a firing
    /// alert resolved (pending states and quiet clears are not).
    pub(crate) fn fires_or_resolves(&self) -> bool {
        self.state == AlertState::Firing || self.is_resolution()
    }

    /// Whether this transition resolves a firing alert.
    pub(crate) fn is_resolution(&self) -> bool {
        self.state == AlertState::Inactive && self.firing_since.is_some()
    }
}

/// One alert's state machine.
#[derive(Debug, Clone)]
pub(crate) struct AlertTracker {
    pub(crate) alert: AlertName,
    pub(crate) state: AlertState,
    pub(crate) firing_since: Option<SystemTime>,
}

impl AlertTracker {
    pub(crate) fn new(alert: AlertName) -> Self {
        AlertTracker {
            alert,
            state: AlertState::Inactive,
            firing_since: None,
        }
    }

    /// Applies a verdict reached at `at`; returns the transition when the state
    /// changed.
    pub(crate) fn update(
        &mut self,
        verdict: Verdict,
        threshold: f64,
        iteration: u64,
        at: SystemTime,
    ) -> Option<Transition> {
        let firing = self.state == AlertState::Firing;
        let (next, value) = match verdict {
            Verdict::Unchanged => return None,
            Verdict::Clear => (AlertState::Inactive, f64::NAN),
            // A firing alert whose rule says "pending" has not cleared: it stays firing.
            Verdict::Pending(v) if firing => (AlertState::Firing, v),
            Verdict::Pending(v) => (AlertState::Pending, v),
            Verdict::Firing(v) => (AlertState::Firing, v),
            // Past the clear level, short of the firing one: a firing alert holds.
            Verdict::Holding(v) if firing => (AlertState::Firing, v),
            Verdict::Holding(_) => (AlertState::Inactive, f64::NAN),
        };
        if next == self.state {
            return None;
        }
        let firing_since = match next {
            AlertState::Firing => {
                self.firing_since = Some(at);
                Some(at)
            }
            AlertState::Inactive => self.firing_since.take(),
            AlertState::Pending => None,
        };
        self.state = next;
        Some(Transition {
            alert: self.alert,
            state: next,
            value,
            threshold,
            iteration,
            at,
            firing_since,
            note: None,
            subject: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_fires_once_and_resolves_once() {
        let mut t = AlertTracker::new(AlertName::DiversityCollapse);
        let p = t
            .update(Verdict::Pending(0.05), 0.1, 1, SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(p.state, AlertState::Pending);
        assert!(t
            .update(Verdict::Pending(0.04), 0.1, 2, SystemTime::UNIX_EPOCH)
            .is_none());
        let f = t
            .update(Verdict::Firing(0.03), 0.1, 5, SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(f.state, AlertState::Firing);
        assert!(f.firing_since.is_some());
        assert!(
            t.update(Verdict::Firing(0.02), 0.1, 6, SystemTime::UNIX_EPOCH)
                .is_none(),
            "fires once"
        );
        assert!(
            t.update(Verdict::Pending(0.02), 0.1, 7, SystemTime::UNIX_EPOCH)
                .is_none(),
            "stays firing"
        );
        let r = t
            .update(Verdict::Clear, 0.1, 8, SystemTime::UNIX_EPOCH)
            .unwrap();
        assert!(r.is_resolution());
        assert_eq!(r.firing_since, f.firing_since);
        assert!(t
            .update(Verdict::Clear, 0.1, 9, SystemTime::UNIX_EPOCH)
            .is_none());
    }

    #[test]
    fn a_pending_alert_that_clears_is_not_a_resolution() {
        let mut t = AlertTracker::new(AlertName::LowSuccessRate);
        t.update(Verdict::Pending(0.1), 0.2, 3, SystemTime::UNIX_EPOCH);
        let cleared = t
            .update(Verdict::Clear, 0.2, 4, SystemTime::UNIX_EPOCH)
            .unwrap();
        assert!(!cleared.is_resolution());
    }
}
