//! [`LlmRecorder`]: LLM calls into a run from any task or thread (what the metering
//! proxy holds); each call, start and end is an event.

use std::sync::Arc;

use super::event::Event;
use super::hub::Hub;

/// Records LLM calls into a run; cheap to clone. See
/// [`Monitor::llm_recorder`](crate::Monitor::llm_recorder).
#[derive(Clone)]
pub struct LlmRecorder {
    hub: Arc<Hub>,
}

impl LlmRecorder {
    pub(super) fn new(hub: Arc<Hub>) -> Self {
        LlmRecorder { hub }
    }

    /// Records one finished call (see [`Monitor::llm_call`](crate::Monitor::llm_call)).
    pub(super) fn call(&self, call: crate::llm::LlmCall) {
        self.hub.send(Event::Llm {
            call: Box::new(call),
            at: self.hub.clock.now(),
        });
    }
}

impl std::fmt::Debug for LlmRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmRecorder")
            .field("run_id", &self.hub.identity.run_id)
            .finish()
    }
}

impl crate::llm::CallRecorder for LlmRecorder {
    /// A call asks to start: it counts in `loopwatch_llm_in_flight`, its worst case
    /// reserved against the budget, until the returned id is passed to `ended`. Under
    /// a budget that may refuse (`block`, `stop`), its start is applied at once and
    /// the state's decision returned; otherwise nothing refuses it and its start is
    /// only queued.
    fn started(&self, request: &crate::llm::CallRequest) -> crate::llm::Admission {
        let id = self.hub.next_llm_call();
        let event = Event::LlmStarted {
            id,
            request: Box::new(request.clone()),
            at: self.hub.clock.now(),
        };
        let may_refuse = self
            .hub
            .settings
            .thresholds
            .llm_budget()
            .is_some_and(|b| b.action != crate::llm::BudgetAction::Warn);
        if may_refuse {
            return self.hub.apply_now(event, |state| state.llm_admission(id));
        }
        self.hub.send(event);
        crate::llm::Admission::Admitted(id)
    }

    /// A call is over (answered, failed or abandoned): booked, its reservation
    /// settled (given way to its cost, or charged when its usage is unknown), then no
    /// longer in flight.
    fn ended(&self, id: u64, call: &crate::llm::LlmCall) {
        let at = self.hub.clock.now();
        self.hub.send(Event::LlmFinished {
            id,
            call: Box::new(call.clone()),
            at,
        });
        self.hub.send(Event::LlmEnded { id, at });
    }

    /// Yes when the run has an LLM budget, whatever its action.
    fn asks_for_usage(&self) -> bool {
        self.hub.settings.thresholds.llm_budget().is_some()
    }
}
