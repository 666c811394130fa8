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
    /// Records one finished call (see [`Monitor::llm_call`](crate::Monitor::llm_call)).
    fn record(&self, call: &crate::llm::LlmCall) {
        self.call(call.clone());
    }

    /// A call starts: it counts in `loopwatch_llm_in_flight` until the returned id
    /// is passed to `ended`.
    fn started(&self) -> u64 {
        let id = self.hub.next_llm_call();
        self.hub.send(Event::LlmStarted {
            id,
            at: self.hub.clock.now(),
        });
        id
    }

    /// A call is no longer in flight (answered, failed or abandoned).
    fn ended(&self, id: u64) {
        self.hub.send(Event::LlmEnded {
            id,
            at: self.hub.clock.now(),
        });
    }
}
