//! The monitor: the only module that knows the whole. A loop holds a [`Monitor`];
//! everything that happens to the run — the loop's iterations, the samplers'
//! readings, the supervisor's news, LLM calls, the clock — is an [`Event`] sent to
//! the [`Hub`], which applies each to the run's one state ([`RunState`]), then
//! publishes what changed and delivers what the rules found.
//!
//! The files, in the order an event travels:
//!
//! | file | what it holds |
//! |---|---|
//! | `handle.rs` | [`Monitor`], the loop's handle: each method sends an event or reads |
//! | `builder.rs`, `start.rs` | [`MonitorBuilder`], and starting a monitor from its settings |
//! | `iteration.rs` | [`Iteration`]: the loop's thread, atomics and events only |
//! | `evaluation.rs` | [`Evaluation`]: one evaluation in flight, a guard that sends events |
//! | `intake.rs` | [`Intake`]: protocol lines from a loop in another process, as events |
//! | `supervision.rs` | [`Supervision`]: a supervisor's calls, as events |
//! | `recorder.rs` | [`LlmRecorder`]: LLM calls, as events |
//! | `background.rs` | the clock, the samplers and sweeps, signals, the final export |
//! | `event.rs` | [`Event`]: everything that happens to a run |
//! | `hub.rs` | [`Hub`]: the queue, the state's lock, settling, the sinks, snapshots |
//! | `state/` | [`RunState`] and its pure `apply`, with the ledger, liveness, housekeeping, evaluations |
//! | `publish.rs`, `deliver.rs` | instruments from what `apply` returned; findings to the log, gauges, Alertmanager |
//! | `clock.rs`, `reasons.rs`, `sync.rs` | the clock, interned failure reasons, the locking rule |
//!
//! [`Event`]: event::Event
//! [`Hub`]: hub::Hub
//! [`RunState`]: state::RunState

mod background;
mod builder;
mod clock;
mod deliver;
mod evaluation;
mod event;
#[cfg(feature = "gpu")]
mod gpu;
mod handle;
mod hub;
mod intake;
mod iteration;
mod publish;
mod reasons;
mod recorder;
mod servers;
mod start;
mod state;
mod supervision;
mod sync;

pub use builder::{MonitorBuilder, Signals};
pub use evaluation::Evaluation;
pub use handle::{Monitor, ShutdownReport};
pub use intake::Intake;
pub use iteration::Iteration;
pub use recorder::LlmRecorder;
pub use supervision::Supervision;
