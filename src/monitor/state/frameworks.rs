//! What the zero-code instrumentation of `loopwatch run --instrument` said about the
//! loop's frameworks: which were instrumented, at which version, which were left
//! alone and why, and the errors their instrumentation caught. Part of the
//! [`RunState`](super::RunState); bounded by [`Framework`]'s few values.

use enum_map::EnumMap;

use crate::export::InstrumentedFramework;
use crate::protocol::{Framework, Instrumentation};

/// One framework's last report and its errors.
#[derive(Debug, Clone, Default)]
struct Entry {
    /// What the instrumentation last said of it, if anything.
    report: Option<Instrumentation>,
    /// Errors its instrumentation caught, over the run.
    errors: u64,
}

/// Every framework's last report and errors.
#[derive(Debug, Default)]
pub(crate) struct Frameworks {
    entries: EnumMap<Framework, Entry>,
}

impl Frameworks {
    /// Keeps `report` as its framework's; returns whether its state is news (a first
    /// report, or a state other than the last), which is what gets logged: a report
    /// repeated by a restarted loop is not.
    pub(crate) fn report(&mut self, report: &Instrumentation) -> bool {
        let entry = &mut self.entries[report.framework];
        let news = entry
            .report
            .as_ref()
            .is_none_or(|last| last.state != report.state || last.version != report.version);
        entry.report = Some(report.clone());
        news
    }

    /// Adds `count` caught errors to `framework`'s; returns its total.
    pub(crate) fn errors(&mut self, framework: Framework, count: u64) -> u64 {
        let entry = &mut self.entries[framework];
        entry.errors = entry.errors.saturating_add(count);
        entry.errors
    }

    /// The frameworks reported on or with errors, in [`Framework::ALL`] order.
    pub(crate) fn list(&self) -> Vec<InstrumentedFramework> {
        self.entries
            .iter()
            .filter(|(_, entry)| entry.report.is_some() || entry.errors > 0)
            .map(|(framework, entry)| InstrumentedFramework {
                framework: framework.as_str(),
                version: entry.report.as_ref().map(|r| r.version.clone()),
                state: entry.report.as_ref().map(|r| r.state),
                reason: entry.report.as_ref().and_then(|r| r.reason.clone()),
                errors: entry.errors,
            })
            .collect()
    }

    /// Whether `framework` is instrumented now.
    #[cfg(test)]
    pub(crate) fn is_active(&self, framework: Framework) -> bool {
        self.entries[framework]
            .report
            .as_ref()
            .is_some_and(|r| r.state == crate::protocol::InstrumentationState::Active)
    }
}
