//! [`Monitor`]: the handle a loop holds, and the background work it owns.

mod builder;
mod history;
mod iteration;
mod state;

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::metrics::Meter;
use tokio_util::sync::CancellationToken;

pub use builder::MonitorBuilder;
pub use history::{HistoryPoint, HISTORY_LEN};
pub use iteration::{Iteration, Population};
pub use state::{IterationSummary, RunSummary, MAX_FAILURE_REASONS};

use crate::config::Settings;
use crate::docker::cleanup::SweepReport;
use crate::docker::labels::ownership_labels;
use crate::docker::sandbox::Sandbox;
use crate::docker::{ContainerShutdownReport, Containers};
use crate::error::Error;
use crate::evaluate::{
    AlertName, AlertState, Evaluator, Event, EventKind, EventLog, Findings, RollingValues, Watched,
};
use crate::export::alertmanager::{self, AlertIdentity, AlertSink};
use crate::export::final_export::{self, FinalExport};
use crate::export::server;
use crate::instruments::Instruments;
use crate::pipeline::{CollectError, Pipeline};
use crate::sample::{HostReadings, HostSampler};
use history::History;
use state::RunState;

/// Who this run is: the identity carried by its labels, alerts and exports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunIdentity {
    /// Unique id of this run: `<hostname>-<pid>-<start in Unix milliseconds>`.
    pub run_id: String,
    /// Host name of the machine running the loop.
    pub hostname: String,
    /// Process id of the loop.
    pub pid: u32,
    /// Start time of the loop's process, in seconds since the Unix epoch, so that a
    /// reused pid is not mistaken for this process.
    pub process_start_time: u64,
}

/// What [`Monitor::shutdown`] did: the run's summary and the files it wrote.
#[derive(Debug)]
pub struct ShutdownReport {
    /// The run, summarised at shutdown.
    pub summary: RunSummary,
    /// Paths of the final export files, or why each could not be written.
    /// `None` when the final export was switched off.
    pub files: Option<FinalExport>,
}

/// Shared between the loop's handle, the endpoint and the background tasks.
pub(crate) struct Inner {
    pub(crate) settings: Settings,
    pub(crate) identity: RunIdentity,
    pub(crate) pipeline: Pipeline,
    pub(crate) instruments: Instruments,
    host: Arc<HostReadings>,
    host_sampler: Mutex<HostSampler>,
    state: Mutex<RunState>,
    evaluator: Mutex<Evaluator>,
    events: Mutex<EventLog>,
    history: Mutex<History>,
    pub(crate) containers: Arc<Containers>,
    runtime: tokio::runtime::Handle,
    alert_sink: Option<AlertSink>,
    next_iteration: AtomicU64,
    stop_requested: AtomicBool,
    closed: AtomicBool,
    local_addr: SocketAddr,
}

impl Inner {
    pub(crate) fn lock_state(&self) -> MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs a future to completion from any thread, inside or outside a runtime.
    pub(crate) fn block_on<F>(&self, future: F) -> F::Output
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            // Blocking inside a runtime is not allowed: wait on a helper thread.
            std::thread::scope(|scope| {
                scope
                    .spawn(|| self.runtime.block_on(future))
                    .join()
                    .expect("the helper thread does not panic")
            })
        } else {
            self.runtime.block_on(future)
        }
    }

    /// Spawns a task on loopwatch's runtime.
    pub(crate) fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.spawn(future)
    }

    /// Feeds the orphans left after a sweep to the ContainerCleanupFailures rule.
    pub(crate) fn report_orphans(&self, orphans: u64) {
        let findings = self.lock_evaluator().on_orphans(orphans);
        if !findings.is_empty() {
            self.apply(findings);
        }
    }

    pub(crate) fn lock_evaluator(&self) -> MutexGuard<'_, Evaluator> {
        self.evaluator
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn push_event(&self, iteration: u64, kind: EventKind) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Event {
                at: SystemTime::now(),
                iteration,
                kind,
            });
    }

    /// Events recorded so far (oldest first) and how many were dropped for the bound.
    pub(crate) fn events(&self) -> (Vec<Event>, u64) {
        let log = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        (log.snapshot(), log.dropped())
    }

    /// Publishes the evaluator's rolling values, baselines and streak to the gauges.
    fn publish_evaluation(&self, evaluator: &Evaluator) {
        let g = &self.instruments.evaluation;
        let rolling = evaluator.rolling();
        g.window_iterations.record(rolling.iterations as f64, &[]);
        if let Some(rate) = rolling.success_rate {
            g.success_rate.record(rate, &[]);
        }
        if let Some(sharpe) = rolling.avg_sharpe {
            g.avg_sharpe.record(sharpe, &[]);
        }
        if let Some(diversity) = rolling.avg_diversity {
            g.avg_diversity.record(diversity, &[]);
        }
        if let Some(seconds) = rolling.mean_seconds {
            g.rolling_execution_time.record(seconds, &[]);
        }
        g.low_diversity_streak
            .record(evaluator.low_diversity_streak() as f64, &[]);
        for (watched, baseline) in Watched::ALL.into_iter().zip(evaluator.baselines()) {
            if let Some(baseline) = baseline {
                g.set_baseline(watched, baseline);
            }
        }
    }

    /// Logs, exports, records and delivers what an evaluation found.
    fn apply(&self, findings: Findings) {
        for t in findings.transitions {
            let name = t.alert.as_str();
            match t.state {
                AlertState::Firing => tracing::warn!(
                    run_id = %self.identity.run_id,
                    alertname = name,
                    severity = t.alert.severity(),
                    value = t.value,
                    threshold = t.threshold,
                    iteration = t.iteration,
                    "{}",
                    t.alert.message()
                ),
                AlertState::Inactive if t.is_resolution() => tracing::info!(
                    run_id = %self.identity.run_id,
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
            if t.state == AlertState::Pending
                || !(t.state == AlertState::Firing || t.is_resolution())
            {
                continue;
            }
            self.instruments
                .evaluation
                .set_firing(t.alert, t.state == AlertState::Firing);
            if let Some(sink) = &self.alert_sink {
                sink.update(&t);
            }
            self.push_event(
                t.iteration,
                EventKind::Alert {
                    alertname: t.alert,
                    state: t.state,
                    message: t.alert.message(),
                    value: t.value.is_finite().then_some(t.value),
                    threshold: t.threshold,
                },
            );
        }
        for w in findings.warnings {
            if w.started {
                tracing::warn!(
                    run_id = %self.identity.run_id,
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
                    run_id = %self.identity.run_id,
                    metric = w.watched.metric(),
                    value = w.value,
                    baseline = w.baseline,
                    iteration = w.iteration,
                    "cleared: {}",
                    w.watched.warning()
                );
            }
            self.instruments
                .evaluation
                .set_warning(w.watched, w.started);
            self.push_event(w.iteration, w.watched.event(w.started, w.value, w.baseline));
        }
    }

    /// Records a completed iteration's values into the instruments.
    pub(crate) fn record_iteration(&self, summary: &IterationSummary) {
        let i = &self.instruments;
        i.execution_time.record(summary.duration.as_secs_f64(), &[]);
        i.strategy_success.add(summary.successes, &[]);
        i.strategy_failure.add(summary.failures, &[]);
        // An iteration without valid values leaves the previous ones standing.
        if let Some(sharpe) = summary.mean_sharpe {
            i.sharpe_ratio.record(sharpe, &[]);
        }
        if let Some(drawdown) = summary.mean_max_drawdown {
            i.max_drawdown.record(drawdown, &[]);
        }
        if let Some(diversity) = summary.diversity {
            i.population_diversity.record(diversity, &[]);
        }
        if let Some(unique) = summary.unique_strategies {
            i.unique_strategy_count.record(unique as f64, &[]);
        }
        i.champion_staleness
            .record(summary.champion_staleness as f64, &[]);
        let (findings, rolling, alerts_firing) = {
            let mut evaluator = self.lock_evaluator();
            let findings = evaluator.on_iteration(summary);
            self.publish_evaluation(&evaluator);
            let firing = evaluator
                .states()
                .iter()
                .filter(|s| **s == AlertState::Firing)
                .count();
            (findings, evaluator.rolling(), firing as u8)
        };
        if !findings.is_empty() {
            self.apply(findings);
        }
        self.record_history(summary, &rolling, alerts_firing);
    }

    fn record_history(
        &self,
        summary: &IterationSummary,
        rolling: &RollingValues,
        alerts_firing: u8,
    ) {
        let point = HistoryPoint {
            iteration: summary.number,
            execution_time_seconds: summary.duration.as_secs_f64(),
            memory_usage_bytes: self.host.process_rss_bytes.get(),
            cpu_usage_percent: self.host.process_cpu_percent.get(),
            success_rate_10iter: rolling.success_rate,
            sharpe_ratio: summary.mean_sharpe,
            max_drawdown: summary.mean_max_drawdown,
            population_diversity: summary.diversity,
            unique_strategy_count: summary.unique_strategies,
            champion_staleness_iterations: summary.champion_staleness,
            champion_changed: summary.champion_changed,
            active_containers: self.containers.active.load(Ordering::Relaxed) as f64,
            container_memory_bytes: self.containers.memory_bytes.load(Ordering::Relaxed) as f64,
            cleanup_failures: self.containers.cleanup_failures() as f64,
            alerts_firing,
        };
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(point);
    }

    /// The recent iterations, oldest first.
    pub(crate) fn history(&self) -> Vec<HistoryPoint> {
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .points()
    }

    /// Takes one host and process sample and publishes it to the gauges.
    pub(crate) fn sample_host(&self) {
        let result = catch_unwind(AssertUnwindSafe(|| {
            let sample = self
                .host_sampler
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .tick();
            self.host.publish(&sample);
            sample
        }));
        match result {
            Ok(sample) => {
                self.instruments.sampler_ticks.add(1, &[]);
                let findings = self.lock_evaluator().on_host_memory(
                    sample.host_memory_used_bytes,
                    sample.host_memory_total_bytes,
                );
                if !findings.is_empty() {
                    self.apply(findings);
                }
            }
            Err(_) => {
                tracing::error!("the host sampler panicked; its gauges keep their last values")
            }
        }
    }

    /// Collects every metric and renders the Prometheus text exposition.
    pub(crate) fn render(&self) -> Result<String, CollectError> {
        crate::pipeline::encode_text(&self.pipeline.gather()?)
    }

    pub(crate) fn summary(&self) -> RunSummary {
        self.lock_state().summary(&self.identity.run_id)
    }

    fn request_stop(&self) -> bool {
        self.stop_requested.swap(true, Ordering::SeqCst)
    }
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
    inner: Arc<Inner>,
    runtime: Option<tokio::runtime::Runtime>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("run_id", &self.inner.identity.run_id)
            .field("local_addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl Monitor {
    /// A builder with every setting at its default or environment override.
    pub fn builder() -> MonitorBuilder {
        MonitorBuilder::default()
    }

    fn start(settings: Settings) -> Result<Monitor, Error> {
        let web = settings
            .web_config
            .as_deref()
            .map(crate::export::web_config::WebConfig::load)
            .transpose()?;
        let listener =
            std::net::TcpListener::bind(settings.listen).map_err(|source| Error::Bind {
                addr: settings.listen,
                source,
            })?;
        listener.set_nonblocking(true).map_err(Error::Runtime)?;
        let local_addr = listener.local_addr().map_err(Error::Runtime)?;

        let started_at = SystemTime::now();
        if settings.otlp && !cfg!(feature = "otlp") {
            tracing::warn!("OTLP export was asked for, but loopwatch was built without the `otlp` feature; only /metrics serves the metrics");
        }
        let pipeline = Pipeline::new(settings.otlp && cfg!(feature = "otlp"))?;
        let host = Arc::new(HostReadings::default());
        let mut host_sampler = HostSampler::for_current_process();
        host.publish(&host_sampler.tick());
        let instruments = Instruments::new(pipeline.core_meter(), &host);
        let containers = Containers::new(pipeline.core_meter());

        let pid = std::process::id();
        let hostname = sysinfo::System::host_name().unwrap_or_else(|_| "unknown-host".into());
        let identity = RunIdentity {
            run_id: format!(
                "{hostname}-{pid}-{}",
                started_at
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis()
            ),
            process_start_time: host_sampler
                .process_start_time()
                .unwrap_or_else(|| unix_seconds(started_at)),
            hostname,
            pid,
        };

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("loopwatch")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        let cancel = CancellationToken::new();

        let alert_sink = (!settings.alertmanager_urls.is_empty()).then(|| {
            alertmanager::start(
                &runtime,
                &settings.alertmanager_urls,
                AlertIdentity {
                    run_id: identity.run_id.clone(),
                    instance: identity.hostname.clone(),
                    generator_url: format!("http://{local_addr}/metrics"),
                },
                settings.thresholds.alert_resend_interval,
                instruments.evaluation.alert_deliveries.clone(),
                cancel.clone(),
            )
        });

        let evaluator = Evaluator::new(settings.thresholds.clone());
        let inner = Arc::new(Inner {
            settings,
            identity,
            pipeline,
            instruments,
            host,
            host_sampler: Mutex::new(host_sampler),
            state: Mutex::new(RunState::new(started_at)),
            evaluator: Mutex::new(evaluator),
            events: Mutex::new(EventLog::default()),
            history: Mutex::new(History::default()),
            containers,
            runtime: runtime.handle().clone(),
            alert_sink,
            next_iteration: AtomicU64::new(1),
            stop_requested: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            local_addr,
        });

        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(Error::Runtime)?
        };
        runtime.spawn(server::serve(
            listener,
            Arc::clone(&inner),
            web,
            cancel.clone(),
        ));
        runtime.spawn(sample_host_periodically(Arc::clone(&inner), cancel.clone()));
        runtime.spawn(log_long_run_statistics(Arc::clone(&inner), cancel.clone()));
        if inner.settings.containers {
            runtime.spawn(sample_containers_periodically(
                Arc::clone(&inner),
                cancel.clone(),
            ));
            let claimed = inner.containers.claim_sweep();
            runtime.spawn(sweep_orphans_periodically(
                Arc::clone(&inner),
                cancel.clone(),
                claimed,
            ));
        }
        if inner.settings.handle_signals {
            runtime.spawn(watch_signals(Arc::clone(&inner)));
        }
        tracing::info!(
            run_id = %inner.identity.run_id,
            listen = %local_addr,
            output_dir = %inner.settings.output_dir.display(),
            "loopwatch serving metrics at http://{local_addr}/metrics"
        );
        Ok(Monitor {
            inner,
            runtime: Some(runtime),
            cancel,
        })
    }

    /// Starts the next iteration: sets `iteration_number` and starts its timer.
    pub fn start_iteration(&self) -> Iteration<'_> {
        let number = self.inner.next_iteration.fetch_add(1, Ordering::Relaxed);
        Iteration::start(&self.inner, number)
    }

    /// A meter for the loop's own instruments; they are served on the same endpoint.
    ///
    /// Counters get no `_total` and no unit suffix added: name them as they should be
    /// exported. Names loopwatch already exports are refused (logged, not exported).
    pub fn meter(&self) -> Meter {
        self.inner.pipeline.user_meter().clone()
    }

    /// The address the metrics endpoint actually listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The settings this monitor runs with.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// This run's identity (run id, host, pid, process start time).
    pub fn identity(&self) -> &RunIdentity {
        &self.inner.identity
    }

    /// The run so far, summarised.
    pub fn summary(&self) -> RunSummary {
        self.inner.summary()
    }

    /// The recent iterations the embedded dashboard draws (the last
    /// [`HISTORY_LEN`]), oldest first.
    pub fn history(&self) -> Vec<HistoryPoint> {
        self.inner.history()
    }

    /// The rolling values of the evaluator's window.
    pub fn rolling(&self) -> RollingValues {
        self.inner.lock_evaluator().rolling()
    }

    /// The state of every alert, in [`AlertName::ALL`] order.
    pub fn alerts(&self) -> Vec<(AlertName, AlertState)> {
        let states = self.inner.lock_evaluator().states();
        AlertName::ALL.into_iter().zip(states).collect()
    }

    /// The alerts firing now.
    pub fn firing_alerts(&self) -> Vec<AlertName> {
        self.alerts()
            .into_iter()
            .filter(|(_, state)| *state == AlertState::Firing)
            .map(|(name, _)| name)
            .collect()
    }

    /// Champion changes, alert transitions and warnings so far, oldest first (the
    /// last [`MAX_EVENTS`](crate::MAX_EVENTS)).
    pub fn events(&self) -> Vec<Event> {
        self.inner.events().0
    }

    /// Feeds the count of orphaned containers left after a cleanup sweep to the
    /// ContainerCleanupFailures rule. The containers feature does this after each of
    /// its sweeps; loops that run their own cleanup (with
    /// [`MonitorBuilder::containers`] off) call it instead.
    pub fn report_orphaned_containers(&self, orphans: u64) {
        self.inner.report_orphans(orphans);
    }

    /// The ownership labels (Contract 4) for containers this loop creates itself;
    /// containers carrying them are sampled, and removed at shutdown.
    pub fn labels(&self) -> std::collections::HashMap<String, String> {
        ownership_labels(&self.inner.identity)
    }

    /// The sandbox launcher: labelled, resource-limited containers run to completion.
    pub fn sandbox(&self) -> Sandbox {
        Sandbox {
            inner: Arc::clone(&self.inner),
        }
    }

    /// Runs an orphan sweep now and waits for it; `None` when Docker is unreachable or
    /// the containers feature is off.
    pub fn sweep_orphans(&self) -> Option<SweepReport> {
        if !self.inner.settings.containers {
            return None;
        }
        let report = self
            .inner
            .block_on(self.inner.containers.sweep(&self.inner.identity, None))?;
        self.inner.report_orphans(report.remaining() as u64);
        Some(report)
    }

    /// Takes one container sample now and waits for it (the sampler does this every
    /// tick): this run's running containers, their stats read concurrently.
    pub fn sample_containers_now(&self) {
        if self.inner.settings.containers {
            self.inner
                .block_on(self.inner.containers.sample(&self.inner.identity));
        }
    }

    /// Whether Docker answered the last request (`loopwatch_docker_up`).
    pub fn docker_up(&self) -> bool {
        self.inner.containers.is_up()
    }

    /// The exposition `GET /metrics` would serve now.
    pub fn render_metrics(&self) -> Result<String, CollectError> {
        self.inner.render()
    }

    /// Whether a stop was requested, by a signal (see
    /// [`MonitorBuilder::handle_signals`]) or by [`request_stop`](Self::request_stop).
    /// Loops check it between iterations and end cleanly.
    pub fn stop_requested(&self) -> bool {
        self.inner.stop_requested.load(Ordering::SeqCst)
    }

    /// Asks the loop to stop after its current iteration.
    pub fn request_stop(&self) {
        self.inner.request_stop();
    }

    /// Takes a last sample, writes the final export, and stops the endpoint and the
    /// samplers. Never fails: each file's outcome is in the report.
    pub fn shutdown(mut self) -> ShutdownReport {
        self.close()
    }

    fn close(&mut self) -> ShutdownReport {
        let files = if self.inner.closed.swap(true, Ordering::SeqCst) {
            None
        } else {
            finish_run(&self.inner)
        };
        self.cancel.cancel();
        if let Some(runtime) = self.runtime.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                runtime.shutdown_background();
            } else {
                runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            }
        }
        self.inner.pipeline.shutdown();
        ShutdownReport {
            summary: self.inner.summary(),
            files,
        }
    }
}

/// The last sample and the final export, run once per monitor.
fn finish_run(inner: &Inner) -> Option<FinalExport> {
    inner.sample_host();
    if inner.settings.containers {
        let report: ContainerShutdownReport =
            inner.block_on(inner.containers.verify_cleaned_up(&inner.identity));
        if !report.left_behind.is_empty() {
            tracing::error!(
                left_behind = report.left_behind.len(),
                "containers of this run are left behind; `loopwatch cleanup` removes them once this process has exited"
            );
        }
    }
    if !inner.settings.final_export {
        return None;
    }
    let export = final_export::write(inner);
    for (file, outcome) in [("text", &export.prometheus_text), ("json", &export.json)] {
        match outcome {
            Ok(path) => tracing::info!(file, path = %path.display(), "final metrics written"),
            Err(err) => tracing::error!(file, error = %err, "final metrics not written"),
        }
    }
    Some(export)
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

async fn sample_host_periodically(inner: Arc<Inner>, cancel: CancellationToken) {
    let mut ticker = tokio::time::interval(inner.settings.sample_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => inner.sample_host(),
        }
    }
}

async fn sample_containers_periodically(inner: Arc<Inner>, cancel: CancellationToken) {
    let mut ticker = tokio::time::interval(inner.settings.sample_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => inner.containers.sample(&inner.identity).await,
        }
    }
}

/// Sweeps for orphans at start-up and then every `orphan_sweep_interval`.
async fn sweep_orphans_periodically(
    inner: Arc<Inner>,
    cancel: CancellationToken,
    mut claimed: Option<tokio::sync::OwnedMutexGuard<()>>,
) {
    let mut ticker = tokio::time::interval(inner.settings.orphan_sweep_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The start-up sweep (holding the lock claimed at start) is not cancellable;
        // later ones wait for their tick.
        if claimed.is_none() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
        } else {
            ticker.tick().await;
        }
        // A sweep, once begun, runs to the end: shutdown waits for it.
        if let Some(report) = inner
            .containers
            .sweep(&inner.identity, claimed.take())
            .await
        {
            inner.report_orphans(report.remaining() as u64);
        }
    }
}

/// Logs the long-run statistics (requirement 5.4) every `stats_interval`.
async fn log_long_run_statistics(inner: Arc<Inner>, cancel: CancellationToken) {
    let period = inner.settings.thresholds.stats_interval;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let summary = inner.summary();
        tracing::info!(
            run_id = %inner.identity.run_id,
            total_iterations = summary.iterations,
            avg_execution_time_seconds = summary.mean_execution_time_seconds.unwrap_or(0.0),
            success_rate = summary.success_rate.unwrap_or(0.0),
            champion_staleness_iterations = summary.champion_staleness_iterations,
            elapsed_seconds = summary.elapsed_seconds,
            "Long-run statistics"
        );
    }
}

async fn watch_signals(inner: Arc<Inner>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install SIGINT/SIGTERM handlers; stop the loop by other means");
        return;
    };
    loop {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        if inner.request_stop() {
            tracing::warn!("second stop signal: writing the final export and exiting");
            if !inner.closed.swap(true, Ordering::SeqCst) {
                finish_run(&inner);
            }
            std::process::exit(130);
        }
        tracing::warn!("stop requested; the loop ends after its current iteration (signal again to exit at once)");
    }
}
