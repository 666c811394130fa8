//! [`Monitor`]: the handle a loop holds. Thin: each method sends an event to the
//! hub, or reads what the hub has settled.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use opentelemetry::metrics::Meter;
use tokio_util::sync::CancellationToken;

use crate::alerts::AlertName;
use crate::error::CollectError;
use crate::export::files::FinalExport;
use crate::export::http;
use crate::export::Source as _;
use crate::records::{RunIdentity, RunSummary};

use super::background;
use super::evaluation::Evaluation;
use super::event::Event;
use super::hub::Hub;
use super::iteration::Iteration;
use super::recorder::LlmRecorder;
use super::supervision::Supervision;

/// Longest wait for Alertmanager to take the final alert state when a monitor closes.
const FINAL_ALERTS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// What [`Monitor::shutdown`] did: the run's summary and the files it wrote.
#[derive(Debug)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// The run, summarised at shutdown.
    pub summary: RunSummary,
    /// Paths of the final export files, or why each could not be written.
    /// `None` when the final export was switched off.
    pub files: Option<FinalExport>,
}

/// The handle a loop holds: start iterations, report outcomes, shut down.
///
/// Building a monitor starts the metrics endpoint and the samplers on a small
/// background runtime of its own, so a plain synchronous loop needs no async code, and
/// an async loop can use it from any task (recording waits only when it finds the
/// event queue full and settles it: see [`Iteration`]). Shutting down, or
/// dropping the monitor (also while unwinding from a panic), writes the final export.
///
/// ```
/// use loopwatch::{Monitor, Population};
///
/// let dir = tempfile::tempdir().unwrap();
/// let monitor = Monitor::builder()
///     .listen("127.0.0.1:0".parse().unwrap())
///     .output_dir(dir.path())
///     .build()
///     .unwrap();
/// for generation in 0..3 {
///     let mut iteration = monitor.start_iteration();
///     iteration.record_success(1.2, 0.1);
///     iteration.record_failure("too few trades");
///     iteration.record_population(Population::new(2, 2, 1.0).with_champion("s1"));
///     let summary = iteration.finish();
///     assert_eq!(summary.number, generation + 1);
/// }
/// let report = monitor.shutdown();
/// assert_eq!(report.summary.iterations, 3);
/// assert_eq!(report.summary.champion_staleness_iterations, 2);
/// assert!(dir.path().join("metrics_final.json").exists());
/// ```
pub struct Monitor {
    hub: Arc<Hub>,
    runtime: Option<tokio::runtime::Runtime>,
    cancel: CancellationToken,
    /// The file_sd registration, removed when the monitor closes.
    registration: Option<crate::export::register::Registration>,
    /// When the endpoint rendered, so that shutdown can let a scraper see the end.
    scrapes: Arc<http::ScrapeClock>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("run_id", &self.hub.identity.run_id)
            .field("local_addr", &self.hub.local_addr)
            .finish_non_exhaustive()
    }
}

impl Monitor {
    /// Puts a started monitor's parts together.
    pub(super) fn assemble(
        hub: Arc<Hub>,
        runtime: tokio::runtime::Runtime,
        cancel: CancellationToken,
        registration: Option<crate::export::register::Registration>,
        scrapes: Arc<http::ScrapeClock>,
    ) -> Self {
        Monitor {
            hub,
            runtime: Some(runtime),
            cancel,
            registration,
            scrapes,
        }
    }

    /// Starts the next iteration: sets `iteration_number` and starts its timer.
    pub fn start_iteration(&self) -> Iteration<'_> {
        let number = self.hub.next_iteration.fetch_add(1, Ordering::Relaxed);
        Iteration::start(&self.hub, number)
    }

    /// Starts evaluation `id` (a candidate's back-test, a program's run) now, for an
    /// evaluation that may outlive an iteration; end it through the guard (see
    /// [`Evaluation`]). Ids must be unique among the evaluations in flight; at most
    /// 10,000 are in flight, and starts past that are counted and logged as rejected.
    #[inline]
    pub fn evaluation(&self, id: &str) -> Evaluation<'_> {
        Evaluation::start(&self.hub, id)
    }

    /// A meter for the loop's own instruments; they are served on the same endpoint.
    ///
    /// Counters get no `_total` and no unit suffix added: name them as they should be
    /// exported. Names loopwatch already exports are refused (logged, not exported).
    pub fn meter(&self) -> Meter {
        self.hub.pipeline().user_meter().clone()
    }

    /// The address the metrics endpoint actually listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.hub.local_addr
    }

    /// This run's identity (run id, host, pid, process start time).
    pub fn identity(&self) -> &RunIdentity {
        &self.hub.identity
    }

    /// The run so far, summarised.
    pub fn summary(&self) -> RunSummary {
        self.hub.summary()
    }

    /// The alerts firing now.
    pub fn firing_alerts(&self) -> Vec<AlertName> {
        self.hub.evaluation().firing()
    }

    /// Records one LLM call the loop made by other means than the metering proxy of
    /// `loopwatch run --llm-proxy`: its tokens, duration and outcome feed the GenAI
    /// metrics, the cost counters (priced from `[llm.prices]` unless the call carries
    /// its cost), `summary.llm`, and LLMErrors, LLMSpendWithoutProgress and LLMBudget.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let monitor = loopwatch::Monitor::builder()
    /// #     .listen("127.0.0.1:0".parse().unwrap()).output_dir(dir.path()).build().unwrap();
    /// use std::time::Duration;
    /// use loopwatch::llm::LlmCall;
    /// monitor.llm_call(&LlmCall::new("gpt-4o", Duration::from_millis(900)).with_tokens(1200, 300).with_provider("openai"));
    /// assert_eq!(monitor.summary().llm.input_tokens, 1200);
    /// # monitor.shutdown();
    /// ```
    pub fn llm_call(&self, call: &crate::llm::LlmCall) {
        self.llm_recorder().call(call.clone());
    }

    /// A handle that records LLM calls into this run from another task or thread
    /// (what the metering proxy holds): calls, and calls in flight.
    pub fn llm_recorder(&self) -> LlmRecorder {
        LlmRecorder::new(Arc::clone(&self.hub))
    }

    /// Whether the alert is firing now (cheaper than [`Monitor::firing_alerts`]).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let monitor = loopwatch::Monitor::builder()
    /// #     .listen("127.0.0.1:0".parse().unwrap()).output_dir(dir.path()).build().unwrap();
    /// assert!(!monitor.is_firing(loopwatch::AlertName::LoopStalled));
    /// # monitor.shutdown();
    /// ```
    pub fn is_firing(&self, alert: AlertName) -> bool {
        self.hub.is_firing(alert)
    }

    /// Whether the loop has said it is done ([`Monitor::done`], or the protocol's
    /// `done`).
    pub fn said_done(&self) -> bool {
        self.hub.said_done()
    }

    /// The thresholds in force (from the builder, `loopwatch.toml` or the defaults).
    pub fn thresholds(&self) -> &crate::config::Thresholds {
        &self.hub.settings.thresholds
    }

    /// Says the loop is done: no more iterations are coming (the run may still linger
    /// to be scraped), so waiting from now on is not a stall. Shutting down implies it.
    pub fn done(&self) {
        self.hub.done();
    }

    /// Feeds the count of orphaned containers left after a cleanup sweep to the
    /// ContainerCleanupFailures rule. The containers feature does this after each of
    /// its sweeps; loops that run their own cleanup (with
    /// [`MonitorBuilder::containers`](crate::MonitorBuilder::containers) off) call it
    /// instead.
    pub fn report_orphaned_containers(&self, orphans: u64) {
        self.hub.send(Event::Orphans {
            count: orphans,
            at: self.hub.clock.now(),
        });
    }

    /// The handle of a supervisor that runs the loop as a child process
    /// (`loopwatch run`): the child's starts, exits and restarts, its process tree,
    /// its socket's intake, and the cleanup of what the run leaves behind.
    pub fn supervision(&self) -> Supervision {
        Supervision::new(Arc::clone(&self.hub))
    }

    /// The ownership labels (`loopwatch.managed`, `loopwatch.run_id`, the owner's
    /// identity; see docs/containers.md, "Orphan cleanup") for containers this loop creates
    /// itself; containers carrying them are sampled, and removed at shutdown.
    pub fn labels(&self) -> std::collections::HashMap<String, String> {
        self.hub.identity.container_labels()
    }

    /// The sandbox launcher: labelled, resource-limited containers run to completion
    /// (built without the `docker` feature, every run fails and says why).
    pub fn sandbox(&self) -> crate::sandbox::Sandbox {
        crate::sandbox::Sandbox {
            containers: Arc::clone(&self.hub.containers),
        }
    }

    /// Takes one container sample now and waits for it (the sampler does this every
    /// tick): this run's running containers, their stats read concurrently. Nothing
    /// happens with the containers feature off.
    pub fn sample_containers_now(&self) {
        if self.hub.settings.containers {
            let reading = self.hub.containers.reading_now();
            let at = self.hub.clock.now();
            self.hub.send(Event::Containers { reading, at });
        }
    }

    /// Reads every model server configured (`[[llm.servers]]`) once now, concurrently,
    /// and waits until what they said is applied (the readers do this at every
    /// sampling interval). Each read is bounded by its time limit (twice the sampling
    /// interval, 2 to 10 s); a server the readers are reading at that moment is read
    /// once that read is applied (one read of a server at a time, applied in the
    /// order they were made). Nothing happens without servers. Call it from a thread
    /// outside loopwatch's runtime, as a loop's own thread is.
    pub fn read_model_servers_now(&self) {
        if let Some(runtime) = &self.runtime {
            super::servers::read_all_now(&self.hub, runtime);
            self.hub.settle();
        }
    }

    /// The exposition `GET /metrics` would serve now.
    pub fn render_metrics(&self) -> Result<String, CollectError> {
        self.hub.exposition()
    }

    /// Whether a stop was requested by a signal (see
    /// [`Signals::Graceful`](crate::Signals::Graceful)). Loops check it between
    /// iterations and end cleanly.
    pub fn stop_requested(&self) -> bool {
        self.hub.stop_requested.load(Ordering::SeqCst)
    }

    /// Takes a last sample, writes the final export, and stops the endpoint and the
    /// samplers. Never fails: each file's outcome is in the report.
    pub fn shutdown(mut self) -> ShutdownReport {
        self.close()
    }

    fn close(&mut self) -> ShutdownReport {
        let files = if self.hub.closed.swap(true, Ordering::SeqCst) {
            None
        } else {
            self.hub.done();
            let done_at = std::time::Instant::now();
            let files = background::finish_run(&self.hub);
            // A scraper that is there sees `loopwatch_loop_done` once more before the
            // endpoint goes: the run ended on purpose, and LoopDown stays quiet.
            if !std::thread::panicking() && self.scrapes.wait_for_scrape_after(done_at) {
                tracing::debug!("the final state was scraped");
            }
            files
        };
        if let (Some(runtime), Some(sink)) = (&self.runtime, self.hub.alert_sink()) {
            // The final alert state, best effort and bounded (also while a panic
            // unwinds), on a helper thread so that this works inside a runtime too.
            std::thread::scope(|scope| {
                let _ = scope
                    .spawn(|| runtime.block_on(sink.flush(FINAL_ALERTS_TIMEOUT)))
                    .join();
            });
        }
        self.cancel.cancel();
        self.registration = None;
        if let Some(runtime) = self.runtime.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                runtime.shutdown_background();
            } else {
                runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            }
        }
        self.hub.pipeline().shutdown();
        ShutdownReport {
            summary: self.hub.summary(),
            files,
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if self.runtime.is_some() {
            if std::thread::panicking() {
                tracing::error!(
                    "the loop panicked; writing the final export before unwinding further"
                );
            }
            self.close();
        }
    }
}
