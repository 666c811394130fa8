//! [`Monitor`]: the handle a loop holds, and the background work it owns.

mod background;
mod builder;
mod history;
mod inner;
mod iteration;
mod state;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
use crate::docker::Containers;
use crate::error::Error;
use crate::evaluate::{AlertName, AlertState, Evaluator, Event, EventLog, RollingValues};
use crate::export::alertmanager::{self, AlertIdentity};
use crate::export::final_export::FinalExport;
use crate::export::server;
use crate::instruments::Instruments;
use crate::pipeline::{CollectError, Pipeline};
use crate::sample::{HostReadings, HostSampler};
use background::{
    finish_run, log_long_run_statistics, sample_containers_periodically, sample_host_periodically,
    sweep_orphans_periodically, watch_signals,
};
use history::History;
pub(crate) use inner::Inner;
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
