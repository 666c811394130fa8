//! [`Inner`]: the state shared by the loop's handle, the endpoint and the background
//! tasks, and what happens when an iteration ends or a sample arrives.

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use crate::config::Settings;
use crate::docker::Containers;
use crate::evaluate::{
    AlertState, Evaluator, Event, EventKind, EventLog, Findings, RollingValues, Watched,
};
use crate::export::alertmanager::AlertSink;
use crate::instruments::Instruments;
use crate::pipeline::{CollectError, Pipeline};
use crate::sample::{HostReadings, HostSampler};

use super::history::{History, HistoryPoint};
use super::state::{IterationSummary, RunState, RunSummary};
use super::RunIdentity;

/// Records a value into a gauge when there is one; otherwise the gauge keeps its last.
fn record_present(gauge: &opentelemetry::metrics::Gauge<f64>, value: Option<f64>) {
    if let Some(value) = value {
        gauge.record(value, &[]);
    }
}

/// Shared between the loop's handle, the endpoint and the background tasks.
pub(crate) struct Inner {
    pub(crate) settings: Settings,
    pub(crate) identity: RunIdentity,
    pub(crate) pipeline: Pipeline,
    pub(crate) instruments: Instruments,
    pub(super) host: Arc<HostReadings>,
    pub(super) host_sampler: Mutex<HostSampler>,
    pub(super) state: Mutex<RunState>,
    pub(super) evaluator: Mutex<Evaluator>,
    pub(super) events: Mutex<EventLog>,
    pub(super) history: Mutex<History>,
    pub(crate) containers: Arc<Containers>,
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) alert_sink: Option<AlertSink>,
    pub(super) next_iteration: AtomicU64,
    pub(super) stop_requested: AtomicBool,
    pub(super) closed: AtomicBool,
    pub(super) local_addr: SocketAddr,
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
        self.apply(findings);
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
        record_present(&g.success_rate, rolling.success_rate);
        record_present(&g.avg_sharpe, rolling.avg_sharpe);
        record_present(&g.avg_diversity, rolling.avg_diversity);
        record_present(&g.rolling_execution_time, rolling.mean_seconds);
        g.low_diversity_streak
            .record(evaluator.low_diversity_streak() as f64, &[]);
        for (watched, baseline) in Watched::ALL.into_iter().zip(evaluator.baselines()) {
            if let Some(baseline) = baseline {
                g.set_baseline(watched, baseline);
            }
        }
    }

    /// Logs, exports, records and delivers what an evaluation found.
    pub(super) fn apply(&self, findings: Findings) {
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
        record_present(&i.sharpe_ratio, summary.mean_sharpe);
        record_present(&i.max_drawdown, summary.mean_max_drawdown);
        record_present(&i.population_diversity, summary.diversity);
        record_present(
            &i.unique_strategy_count,
            summary.unique_strategies.map(|u| u as f64),
        );
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
        self.apply(findings);
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
                self.apply(findings);
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

    pub(super) fn request_stop(&self) -> bool {
        self.stop_requested.swap(true, Ordering::SeqCst)
    }
}
