//! Timestamped events for dashboard annotations: champion changes, alert transitions
//! and warnings, kept in memory within a bound and written to `metrics_final.json`.

use std::collections::VecDeque;
use std::time::SystemTime;

use serde::Serialize;

use crate::evaluate::{AlertName, AlertState, Watched};

/// Events kept in memory; the oldest are dropped first (and counted).
pub const MAX_EVENTS: usize = 1024;

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// The champion changed.
    ChampionChanged {
        /// The new champion's identity.
        champion: String,
    },
    /// An alert changed state.
    Alert {
        /// Which alert.
        alertname: AlertName,
        /// The state it entered.
        state: AlertState,
        /// The fixed message.
        message: &'static str,
        /// The value the rule looked at (absent when it resolved).
        value: Option<f64>,
        /// Its threshold.
        threshold: f64,
    },
    /// A degradation or slowdown warning started or cleared.
    Warning {
        /// The quantity.
        metric: &'static str,
        /// The fixed warning text.
        message: &'static str,
        /// True when it started, false when it cleared.
        started: bool,
        /// The rolling value.
        value: f64,
        /// The baseline.
        baseline: f64,
    },
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// When it happened.
    #[serde(serialize_with = "crate::evaluate::serialize_time")]
    pub at: SystemTime,
    /// The iteration it belongs to.
    pub iteration: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The bounded event log.
#[derive(Debug, Default)]
pub(crate) struct EventLog {
    events: VecDeque<Event>,
    dropped: u64,
}

impl EventLog {
    pub(crate) fn push(&mut self, event: Event) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.events.push_back(event);
    }

    pub(crate) fn snapshot(&self) -> Vec<Event> {
        self.events.iter().cloned().collect()
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }
}

impl Watched {
    pub(crate) fn event(self, started: bool, value: f64, baseline: f64) -> EventKind {
        EventKind::Warning {
            metric: self.metric(),
            message: self.warning(),
            started,
            value,
            baseline,
        }
    }
}
