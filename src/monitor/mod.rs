//! [`Monitor`]: the handle a loop holds, the only module that knows the whole. It
//! assembles the pipeline, the samplers, the evaluator, the containers feature and
//! the exporters, and owns the background work that connects them.

mod background;
mod builder;
mod findings;
mod hub;
mod intake;
mod iteration;
mod judge;
mod ledger;
mod publish;
mod reasons;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::metrics::Meter;
use tokio_util::sync::CancellationToken;

pub use builder::{MonitorBuilder, Signals};
pub use intake::Intake;
pub use iteration::Iteration;

use crate::alerts::AlertName;
use crate::config::Settings;
use crate::error::{CollectError, Error};
use crate::export::alertmanager::{self, AlertIdentity};
use crate::export::files::FinalExport;
use crate::export::http::{self, EndpointCounters};
use crate::export::Source;
use crate::pipeline::Pipeline;
use crate::run::{RunIdentity, RunSummary};
use crate::sample::HostSampler;
use hub::{Parts, Shared};

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
/// an async loop can use it from any task (recording never blocks). Shutting down, or
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
    shared: Arc<Shared>,
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
            .field("run_id", &self.shared.identity.run_id)
            .field("local_addr", &self.shared.local_addr)
            .finish_non_exhaustive()
    }
}

/// Binds the endpoint's address (port 0: a free port) for the runtime to serve.
fn bind(addr: SocketAddr) -> Result<(std::net::TcpListener, SocketAddr), Error> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| Error::Bind { addr, source })?;
    listener.set_nonblocking(true).map_err(Error::Runtime)?;
    let local_addr = listener.local_addr().map_err(Error::Runtime)?;
    Ok((listener, local_addr))
}

/// Starts Alertmanager delivery on the runtime, when URLs are configured.
fn start_alert_sink(
    settings: &Settings,
    identity: &RunIdentity,
    local_addr: SocketAddr,
    pipeline: &Pipeline,
    runtime: &tokio::runtime::Runtime,
    cancel: &CancellationToken,
) -> Option<alertmanager::AlertSink> {
    if settings.alertmanager_urls.is_empty() {
        return None;
    }
    Some(alertmanager::start(
        runtime.handle(),
        &settings.alertmanager_urls,
        AlertIdentity {
            run_id: identity.run_id.clone(),
            instance: identity.owner.host.clone(),
            loop_labels: identity
                .loop_labels()
                .into_iter()
                .map(|(k, v)| (k, v.to_string()))
                .collect(),
            generator_url: format!("http://{local_addr}/metrics"),
        },
        alertmanager::Pacing {
            resend: settings.thresholds.alert_resend_interval(),
            resolve_hold: settings.thresholds.alert_resolve_hold(),
        },
        pipeline
            .instruments
            .loopwatch_alert_deliveries_total
            .clone(),
        cancel.clone(),
    ))
}

/// Loads the endpoint's access control (TLS, basic auth), if a file is named.
fn load_access(settings: &Settings) -> Result<Option<http::Access>, Error> {
    let Some(path) = settings.web_config.as_deref() else {
        return Ok(None);
    };
    #[cfg(feature = "web-config")]
    return http::auth::WebConfig::load(path).map(Some);
    #[cfg(not(feature = "web-config"))]
    return Err(Error::InvalidSetting {
        variable: crate::config::ENV_WEB_CONFIG,
        value: path.display().to_string(),
        reason: "loopwatch was built without the `web-config` feature".into(),
    });
}

impl Monitor {
    /// A builder with every setting at its default or environment override.
    pub fn builder() -> MonitorBuilder {
        MonitorBuilder::default()
    }

    fn start(settings: Settings) -> Result<Monitor, Error> {
        let access = load_access(&settings)?;
        let (listener, local_addr) = bind(settings.listen)?;
        let started_at = SystemTime::now();
        if settings.otlp && !cfg!(feature = "otlp") {
            tracing::warn!("OTLP export was asked for, but loopwatch was built without the `otlp` feature; only /metrics serves the metrics");
        }
        let mut identity = RunIdentity::of_this_process();
        identity.experiment = settings.experiment.clone();
        identity.loop_name = settings.loop_name.clone();
        let pipeline = Pipeline::new(settings.otlp, &settings.alertmanager_urls, &identity)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("loopwatch")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(Error::Runtime)?
        };
        let cancel = CancellationToken::new();

        let alert_sink = start_alert_sink(
            &settings, &identity, local_addr, &pipeline, &runtime, &cancel,
        );
        #[cfg(feature = "docker")]
        let containers = Arc::new(crate::containers::Containers::new(
            identity.clone(),
            runtime.handle().clone(),
            crate::containers::CleanupCounters::of(&pipeline.instruments),
            settings.container_stats,
        ));
        let scrapes = Arc::new(http::ScrapeClock::default());
        let endpoint_counters = EndpointCounters {
            renders: pipeline.instruments.loopwatch_metrics_renders_total.clone(),
            rejected: pipeline.instruments.loopwatch_http_rejected_total.clone(),
            scrapes: Arc::clone(&scrapes),
        };
        let shared = Arc::new(Shared::new(Parts {
            settings,
            identity,
            pipeline,
            local_addr,
            host_sampler: HostSampler::for_current_process(),
            started_at,
            alert_sink,
            #[cfg(feature = "docker")]
            containers,
        }));
        let source: Arc<dyn Source> = Arc::clone(&shared) as Arc<dyn Source>;
        runtime.spawn(http::serve(
            listener,
            source,
            access,
            endpoint_counters,
            cancel.clone(),
        ));
        background::spawn_all(&runtime, &shared, &cancel);
        let registration = shared.settings.register_dir.as_deref().and_then(|dir| {
            crate::export::register::Registration::register(dir, &shared.identity, local_addr)
        });
        tracing::info!(
            run_id = %shared.identity.run_id,
            listen = %local_addr,
            output_dir = %shared.settings.output_dir.display(),
            "loopwatch serving metrics at http://{local_addr}/metrics"
        );
        Ok(Monitor {
            shared,
            runtime: Some(runtime),
            cancel,
            registration,
            scrapes,
        })
    }

    /// Starts the next iteration: sets `iteration_number` and starts its timer.
    pub fn start_iteration(&self) -> Iteration<'_> {
        let number = self.shared.next_iteration.fetch_add(1, Ordering::Relaxed);
        Iteration::start(&self.shared, number)
    }

    /// A meter for the loop's own instruments; they are served on the same endpoint.
    ///
    /// Counters get no `_total` and no unit suffix added: name them as they should be
    /// exported. Names loopwatch already exports are refused (logged, not exported).
    pub fn meter(&self) -> Meter {
        self.shared.pipeline().user_meter().clone()
    }

    /// The address the metrics endpoint actually listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// This run's identity (run id, host, pid, process start time).
    pub fn identity(&self) -> &RunIdentity {
        &self.shared.identity
    }

    /// The run so far, summarised.
    pub fn summary(&self) -> RunSummary {
        self.shared.summary()
    }

    /// The alerts firing now.
    pub fn firing_alerts(&self) -> Vec<AlertName> {
        self.shared.evaluation().firing()
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
        self.shared.llm_call(call);
    }

    /// A handle that records LLM calls into this run from another task or thread
    /// (what the metering proxy holds): calls, and calls in flight.
    pub fn llm_recorder(&self) -> LlmRecorder {
        LlmRecorder {
            shared: Arc::clone(&self.shared),
        }
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
        self.shared.judge.is_firing(alert)
    }

    /// Whether the loop has said it is done ([`Monitor::done`], or the protocol's
    /// `done`).
    pub fn said_done(&self) -> bool {
        self.shared.judge.is_done()
    }

    /// The thresholds in force (from the builder, `loopwatch.toml` or the defaults).
    pub fn thresholds(&self) -> &crate::config::Thresholds {
        &self.shared.settings.thresholds
    }

    /// Says the loop is done: no more iterations are coming (the run may still linger
    /// to be scraped), so waiting from now on is not a stall. Shutting down implies it.
    pub fn done(&self) {
        self.shared.done();
    }

    /// Feeds the count of orphaned containers left after a cleanup sweep to the
    /// ContainerCleanupFailures rule. The containers feature does this after each of
    /// its sweeps; loops that run their own cleanup (with
    /// [`MonitorBuilder::containers`] off) call it instead.
    pub fn report_orphaned_containers(&self, orphans: u64) {
        self.shared.report_orphans(orphans);
    }

    /// An intake for reports from a loop in another process, in the line protocol of
    /// [`crate::protocol`]; `loopwatch run` feeds it from its socket. Every intake of
    /// a monitor reports into the same run; keep one per run and share it.
    pub fn intake(&self) -> Intake {
        Intake::new(Arc::clone(&self.shared))
    }

    /// Watches a loop running in another process (a supervised child) and every
    /// process below it: `memory_usage_bytes` and `cpu_usage_percent` become their
    /// sums, `loopwatch_loop_processes` their count. The `process_*` metrics stay
    /// this process's own.
    pub fn watch_process_tree(&self, root_pid: u32) {
        self.shared.watch_process_tree(root_pid);
    }

    /// A supervised loop's process starts (again, after [`Monitor::loop_restarting`]):
    /// watches its process tree ([`Monitor::watch_process_tree`]), publishes
    /// `loopwatch_loop_start_timestamp_seconds`, and waiting for its first iteration
    /// counts toward a stall from now. A restart is counted in
    /// `loopwatch_loop_restarts_total` and evaluated for LoopCrashLooping.
    pub fn loop_started(&self, root_pid: u32) {
        self.shared.watch_process_tree(root_pid);
        self.shared.loop_started();
    }

    /// Says that the supervised loop has no way to report (`loopwatch run` could make
    /// no socket for it): its silence then says nothing about its progress, so
    /// LoopStalled is not evaluated from now on, restarts included, and cannot set
    /// off a stall action. Every other rule stays.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let monitor = loopwatch::Monitor::builder()
    /// #     .listen("127.0.0.1:0".parse().unwrap()).output_dir(dir.path()).build().unwrap();
    /// monitor.loop_cannot_report();
    /// monitor.loop_started(std::process::id());
    /// assert!(!monitor.is_firing(loopwatch::AlertName::LoopStalled));
    /// # monitor.shutdown();
    /// ```
    pub fn loop_cannot_report(&self) {
        self.shared.loop_cannot_report();
    }

    /// Records how a supervised loop's process ended when the supervisor is going to
    /// start it again: the exit joins `summary.exits`, LoopExited is not raised (a
    /// restart answers it; LoopCrashLooping watches the restarts), and stall checks
    /// pause until [`Monitor::loop_started`]. Should the restart be called off,
    /// [`Monitor::loop_exited`] with the same exit records it as the last.
    pub fn loop_restarting(&self, exit: crate::run::LoopExit) {
        self.shared.loop_restarting(exit);
    }

    /// Removes every container of this run (`loopwatch run` does it before it
    /// restarts a loop, whose containers are then nobody's); returns how many were
    /// removed. Docker down or the containers feature off: nothing is removed.
    pub fn clean_up_run_containers(&self) -> usize {
        #[cfg(feature = "docker")]
        if self.shared.settings.containers {
            let containers = &self.shared.containers;
            let report = crate::containers::block_on(
                containers.runtime(),
                containers.remove_run_containers(),
            );
            return report.removed.len();
        }
        0
    }

    /// Records how a supervised loop's process ended, and raises LoopExited when it
    /// failed (non-zero, or by a signal) without having said it was done. The exit is
    /// in the final export; stall checks stop.
    pub fn loop_exited(&self, exit: crate::run::LoopExit) {
        self.shared.loop_exited(exit);
    }

    /// Marks a command with this run's identity (`LOOPWATCH_RUN_ID`, `LOOPWATCH_OWNER`)
    /// so that the process and its descendants are found by the process sweeps: if
    /// they outlive this process, the next monitor on the host (or `loopwatch cleanup`)
    /// terminates them.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let monitor = loopwatch::Monitor::builder()
    /// #     .listen("127.0.0.1:0".parse().unwrap()).output_dir(dir.path()).build().unwrap();
    /// let mut worker = std::process::Command::new("true");
    /// monitor.identify(&mut worker);
    /// assert!(worker.status().unwrap().success());
    /// # monitor.shutdown();
    /// ```
    pub fn identify<'c>(
        &self,
        command: &'c mut std::process::Command,
    ) -> &'c mut std::process::Command {
        command
            .env(crate::processes::ENV_RUN_ID, &self.shared.identity.run_id)
            .env(
                crate::processes::ENV_OWNER,
                self.shared.identity.owner.env_value(),
            )
    }

    /// Terminates the processes of this run that are still alive (SIGTERM, `grace`,
    /// then SIGKILL): those marked with its identity, and every process below this one
    /// whatever its environment. What `loopwatch run` does once its loop has exited,
    /// since anything of the run left running then is an orphan. Each is logged and
    /// counted; any that survive are listed in the final export. Blocks until they are
    /// gone or given up on (`grace` and 2 s at most).
    pub fn clean_up_run_processes(
        &self,
        grace: std::time::Duration,
    ) -> crate::processes::ProcessSweepReport {
        let run_id = self.shared.identity.run_id.clone();
        self.shared.sweep_processes(Some(&run_id), grace)
    }

    /// The exposition `GET /metrics` would serve now.
    pub fn render_metrics(&self) -> Result<String, CollectError> {
        self.shared.exposition()
    }

    /// Whether a stop was requested by a signal (see
    /// [`MonitorBuilder::handle_signals`]). Loops check it between iterations and end
    /// cleanly.
    pub fn stop_requested(&self) -> bool {
        self.shared.stop_requested.load(Ordering::SeqCst)
    }

    /// Takes a last sample, writes the final export, and stops the endpoint and the
    /// samplers. Never fails: each file's outcome is in the report.
    pub fn shutdown(mut self) -> ShutdownReport {
        self.close()
    }

    fn close(&mut self) -> ShutdownReport {
        let files = if self.shared.closed.swap(true, Ordering::SeqCst) {
            None
        } else {
            self.shared.done();
            let done_at = std::time::Instant::now();
            let files = background::finish_run(&self.shared);
            // A scraper that is there sees `loopwatch_loop_done` once more before the
            // endpoint goes: the run ended on purpose, and LoopDown stays quiet.
            if !std::thread::panicking() && self.scrapes.wait_for_scrape_after(done_at) {
                tracing::debug!("the final state was scraped");
            }
            files
        };
        if let (Some(runtime), Some(sink)) = (&self.runtime, self.shared.alert_sink()) {
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
        self.shared.pipeline().shutdown();
        ShutdownReport {
            summary: self.shared.summary(),
            files,
        }
    }
}

/// Containers: sampling, sweeps, the sandbox launcher (cargo feature `docker`).
#[cfg(feature = "docker")]
#[cfg_attr(docsrs, doc(cfg(feature = "docker")))]
impl Monitor {
    /// The containers of this run, when the containers feature samples and sweeps.
    fn watched_containers(&self) -> Option<&Arc<crate::containers::Containers>> {
        self.shared
            .settings
            .containers
            .then_some(&self.shared.containers)
    }

    /// The ownership labels (Contract 4) for containers this loop creates itself;
    /// containers carrying them are sampled, and removed at shutdown.
    pub fn labels(&self) -> std::collections::HashMap<String, String> {
        crate::containers::labels::ownership_labels(&self.shared.identity)
    }

    /// The sandbox launcher: labelled, resource-limited containers run to completion.
    pub fn sandbox(&self) -> crate::sandbox::Sandbox {
        crate::sandbox::Sandbox {
            containers: Arc::clone(&self.shared.containers),
        }
    }

    /// Takes one container sample now and waits for it (the sampler does this every
    /// tick): this run's running containers, their stats read concurrently.
    pub fn sample_containers_now(&self) {
        if let Some(containers) = self.watched_containers() {
            let sample = crate::containers::block_on(containers.runtime(), containers.sample());
            self.shared.publish_containers(containers, sample);
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

/// Records LLM calls into a run; cheap to clone. See [`Monitor::llm_recorder`].
#[derive(Clone)]
pub struct LlmRecorder {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LlmRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmRecorder")
            .field("run_id", &self.shared.identity.run_id)
            .finish()
    }
}

impl crate::llm::CallRecorder for LlmRecorder {
    /// Records one finished call (see [`Monitor::llm_call`]).
    fn record(&self, call: &crate::llm::LlmCall) {
        self.shared.llm_call(call);
    }

    /// A call starts: it counts in `loopwatch_llm_in_flight` until the returned id
    /// is passed to `ended`.
    fn started(&self) -> u64 {
        let id = self.shared.llm.call_started();
        let (calls, oldest) = self.shared.llm.in_flight();
        self.shared.publisher.llm_in_flight(calls, oldest);
        id
    }

    /// A call is no longer in flight (answered, failed or abandoned).
    fn ended(&self, id: u64) {
        self.shared.llm.call_ended(id);
        let (calls, oldest) = self.shared.llm.in_flight();
        self.shared.publisher.llm_in_flight(calls, oldest);
    }
}
