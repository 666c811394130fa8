//! [`Shared`]: the state the loop's handle and the background tasks share, and what
//! happens when an iteration ends or a sample arrives. It is the exporters'
//! [`Source`]: they read snapshots of it, never its fields.

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::metrics::Gauge;
use opentelemetry::KeyValue;

use crate::alerts::AlertState;
use crate::config::Settings;
use crate::error::CollectError;
use crate::evaluate::{Activity, Evaluator, Findings};
use crate::export::alertmanager::AlertSink;
use crate::export::{Evaluation, Snapshot, Source};
use crate::pipeline::{encode_text, Pipeline};
use crate::record::Rejections;
use crate::run::{
    unix_seconds, Event, EventKind, HistoryPoint, IterationSummary, RunIdentity, RunSummary,
};
use crate::sample::{CgroupMemory, HostSample, HostSampler};

use super::state::RunState;

/// Locks a mutex, taking the data even if a panicking thread poisoned it: every value
/// behind these locks is valid after any single update.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Records a value into a gauge when there is one; otherwise the gauge keeps its last.
fn record_present(gauge: &Gauge<f64>, value: Option<f64>) {
    if let Some(value) = value {
        gauge.record(value, &[]);
    }
}

/// The latest sampler readings, for the history points of the dashboard.
#[derive(Debug, Clone, Default)]
struct Latest {
    host: Option<HostSample>,
    active_containers: u64,
    container_memory_bytes: u64,
    cleanup_failures: u64,
    /// This run's running containers, with when loopwatch first saw each.
    containers: Vec<crate::export::LiveContainer>,
    first_seen: std::collections::HashMap<String, SystemTime>,
}

/// When iterations start and end, for LoopStalled: nanoseconds since `epoch`, plus
/// one so that 0 means "never" (atomics, so the loop's thread takes no lock).
#[derive(Debug)]
struct Liveness {
    epoch: Instant,
    running_since: AtomicU64,
    last_end: AtomicU64,
    done: AtomicBool,
    /// Whether LoopStalled fires, so that starting an iteration re-evaluates it only
    /// then (the loop's thread takes the evaluator's lock no more than it must).
    stalled: AtomicBool,
}

impl Liveness {
    fn stamp(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    fn since(&self, stamp: u64, now: Instant) -> Option<Duration> {
        (stamp != 0).then(|| {
            now.duration_since(self.epoch)
                .saturating_sub(Duration::from_nanos(stamp - 1))
        })
    }

    fn activity(&self, now: Instant) -> Activity {
        let running = self.since(self.running_since.load(Ordering::Relaxed), now);
        Activity {
            running_for: running,
            idle_for: running
                .is_none()
                .then(|| self.since(self.last_end.load(Ordering::Relaxed), now))
                .flatten(),
            done: self.done.load(Ordering::Relaxed),
        }
    }
}

/// Shared between the loop's handle, the endpoint and the background tasks.
pub(super) struct Shared {
    pub(super) settings: Settings,
    pub(super) identity: RunIdentity,
    pub(super) pipeline: Pipeline,
    pub(super) rejections: Rejections,
    pub(super) local_addr: SocketAddr,
    pub(super) next_iteration: AtomicU64,
    pub(super) stop_requested: AtomicBool,
    /// Processes (pid, start ticks) that could not be terminated: not retried.
    processes_given_up: Mutex<std::collections::HashSet<(u32, u64)>>,
    /// What the process sweeps found and did.
    process_tally: Mutex<crate::export::ProcessTally>,
    pub(super) closed: AtomicBool,
    #[cfg(feature = "docker")]
    pub(super) containers: std::sync::Arc<crate::containers::Containers>,
    liveness: Liveness,
    run: Mutex<RunState>,
    evaluator: Mutex<Evaluator>,
    host_sampler: Mutex<HostSampler>,
    /// The loop's memory cgroup, whose limit HighMemoryUsage uses when it is lower
    /// than host memory.
    cgroup: Option<CgroupMemory>,
    latest: Mutex<Latest>,
    alert_sink: Option<AlertSink>,
}

/// The parts a [`Shared`] is assembled from.
pub(super) struct Parts {
    pub(super) settings: Settings,
    pub(super) identity: RunIdentity,
    pub(super) pipeline: Pipeline,
    pub(super) local_addr: SocketAddr,
    pub(super) host_sampler: HostSampler,
    pub(super) started_at: SystemTime,
    pub(super) alert_sink: Option<AlertSink>,
    #[cfg(feature = "docker")]
    pub(super) containers: std::sync::Arc<crate::containers::Containers>,
}

impl Shared {
    pub(super) fn new(parts: Parts) -> Self {
        let rejections = Rejections::new(
            parts
                .pipeline
                .instruments
                .loopwatch_rejected_observations_total
                .clone(),
        );
        let shared = Shared {
            evaluator: Mutex::new(Evaluator::new(&parts.settings.thresholds)),
            settings: parts.settings,
            identity: parts.identity,
            pipeline: parts.pipeline,
            rejections,
            local_addr: parts.local_addr,
            next_iteration: AtomicU64::new(1),
            stop_requested: AtomicBool::new(false),
            processes_given_up: Mutex::new(std::collections::HashSet::new()),
            process_tally: Mutex::new(crate::export::ProcessTally::default()),
            closed: AtomicBool::new(false),
            #[cfg(feature = "docker")]
            containers: parts.containers,
            liveness: Liveness {
                epoch: Instant::now(),
                running_since: AtomicU64::new(0),
                last_end: AtomicU64::new(0),
                done: AtomicBool::new(false),
                stalled: AtomicBool::new(false),
            },
            run: Mutex::new(RunState::new(parts.started_at)),
            host_sampler: Mutex::new(parts.host_sampler),
            cgroup: CgroupMemory::of_current_process(),
            latest: Mutex::default(),
            alert_sink: parts.alert_sink,
        };
        shared.sample_host();
        shared
    }

    pub(super) fn lock_run(&self) -> MutexGuard<'_, RunState> {
        lock(&self.run)
    }

    pub(super) fn request_stop(&self) -> bool {
        self.stop_requested.swap(true, Ordering::SeqCst)
    }

    /// The run so far, summarised.
    pub(super) fn summary(&self) -> RunSummary {
        self.lock_run().summary(&self.identity.run_id)
    }

    /// The evaluator's whole state at this instant.
    pub(super) fn evaluation(&self) -> Evaluation {
        let evaluator = lock(&self.evaluator);
        Evaluation {
            rolling: evaluator.rolling(),
            alerts: evaluator.states(),
            baselines: evaluator.baselines(),
            warnings: evaluator.warnings_active(),
            low_diversity_streak: evaluator.low_diversity_streak(),
        }
    }

    pub(super) fn push_event(&self, iteration: u64, kind: EventKind) {
        self.lock_run().push_event(Event {
            at: SystemTime::now(),
            iteration,
            kind,
        });
    }

    /// Logs, exports, records and delivers what an evaluation found.
    fn apply(&self, findings: Findings) {
        let instruments = &self.pipeline.instruments;
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
            if !(t.state == AlertState::Firing || t.is_resolution()) {
                continue;
            }
            if t.alert == crate::alerts::AlertName::LoopStalled {
                self.liveness
                    .stalled
                    .store(t.state == AlertState::Firing, Ordering::Relaxed);
            }
            instruments.loopwatch_alert_firing.record(
                f64::from(u8::from(t.state == AlertState::Firing)),
                &[KeyValue::new("alertname", name)],
            );
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
            instruments.loopwatch_performance_warning.record(
                f64::from(u8::from(w.started)),
                &[KeyValue::new("metric", w.watched.metric())],
            );
            self.push_event(
                w.iteration,
                EventKind::Warning {
                    metric: w.watched.metric(),
                    message: w.watched.warning(),
                    started: w.started,
                    value: w.value,
                    baseline: w.baseline,
                },
            );
        }
    }

    /// Evaluates a completed iteration, records its values into the instruments, and
    /// keeps its history point.
    pub(super) fn record_iteration(&self, summary: &IterationSummary) {
        self.iteration_ended();
        let i = &self.pipeline.instruments;
        i.execution_time_seconds
            .record(summary.duration.as_secs_f64(), &[]);
        i.strategy_success_total.add(summary.successes, &[]);
        i.strategy_failure_total.add(summary.failures, &[]);
        // An iteration without valid values leaves the previous ones standing.
        record_present(&i.sharpe_ratio, summary.mean_sharpe);
        record_present(&i.max_drawdown, summary.mean_max_drawdown);
        record_present(&i.population_diversity, summary.diversity);
        record_present(
            &i.unique_strategy_count,
            summary.unique_strategies.map(|u| u as f64),
        );
        i.champion_staleness_iterations
            .record(summary.champion_staleness as f64, &[]);
        let activity = self.liveness.activity(Instant::now());
        let (findings, rolling, alerts_firing) = {
            let mut evaluator = lock(&self.evaluator);
            let th = &self.settings.thresholds;
            let mut findings = evaluator.on_iteration(summary, th);
            // LoopStalled too, now that this iteration's time is in the rolling mean.
            findings
                .transitions
                .extend(evaluator.on_clock(activity, th).transitions);
            self.publish_evaluation(&evaluator);
            let firing = evaluator
                .states()
                .values()
                .filter(|s| **s == AlertState::Firing)
                .count();
            (findings, evaluator.rolling(), firing as u8)
        };
        self.apply(findings);
        let latest = {
            let latest = lock(&self.latest);
            Latest {
                host: latest.host,
                active_containers: latest.active_containers,
                container_memory_bytes: latest.container_memory_bytes,
                cleanup_failures: latest.cleanup_failures,
                ..Latest::default()
            }
        };
        let host = latest.host.unwrap_or_default();
        let mut run = self.lock_run();
        let best_sharpe = run.best_sharpe;
        run.push_history(HistoryPoint {
            iteration: summary.number,
            at: unix_seconds(SystemTime::now()),
            best_sharpe,
            execution_time_seconds: summary.duration.as_secs_f64(),
            memory_usage_bytes: host.loop_rss_bytes as f64,
            cpu_usage_percent: host.loop_cpu_percent,
            success_rate_10iter: rolling.success_rate,
            sharpe_ratio: summary.mean_sharpe,
            max_drawdown: summary.mean_max_drawdown,
            population_diversity: summary.diversity,
            unique_strategy_count: summary.unique_strategies,
            champion_staleness_iterations: summary.champion_staleness,
            champion_changed: summary.champion_changed,
            active_containers: latest.active_containers as f64,
            container_memory_bytes: latest.container_memory_bytes as f64,
            cleanup_failures: latest.cleanup_failures as f64,
            alerts_firing,
        });
    }

    /// An iteration starts: stamps it and re-evaluates LoopStalled (a loop stuck
    /// between iterations is stuck no more).
    pub(super) fn iteration_started(&self, number: u64) {
        let i = &self.pipeline.instruments;
        i.iteration_number.record(number as f64, &[]);
        i.loopwatch_iteration_start_timestamp_seconds
            .record(unix_seconds(SystemTime::now()), &[]);
        let stamp = self.liveness.stamp(Instant::now());
        self.liveness.running_since.store(stamp, Ordering::Relaxed);
        if self.liveness.stalled.load(Ordering::Relaxed) {
            self.check_liveness();
        }
    }

    /// An iteration ends: stamps it (LoopStalled is re-evaluated once the iteration's
    /// time is in the rolling mean).
    fn iteration_ended(&self) {
        self.pipeline
            .instruments
            .loopwatch_iteration_end_timestamp_seconds
            .record(unix_seconds(SystemTime::now()), &[]);
        let stamp = self.liveness.stamp(Instant::now());
        self.liveness.last_end.store(stamp, Ordering::Relaxed);
        self.liveness.running_since.store(0, Ordering::Relaxed);
    }

    /// Evaluates LoopStalled now.
    pub(super) fn check_liveness(&self) {
        let activity = self.liveness.activity(Instant::now());
        let findings = lock(&self.evaluator).on_clock(activity, &self.settings.thresholds);
        self.apply(findings);
    }

    /// A supervised loop's process ended: records how, evaluates LoopExited, and
    /// stops stall checks (nothing more is coming).
    pub(super) fn loop_exited(&self, mut exit: crate::run::LoopExit) {
        exit.said_done |= self.liveness.done.load(Ordering::Relaxed);
        self.lock_run().loop_exit = Some(exit);
        if exit.unexpected() {
            tracing::error!(code = ?exit.code, signal = ?exit.signal, "the loop exited before it said it was done");
        } else {
            tracing::info!(code = ?exit.code, signal = ?exit.signal, said_done = exit.said_done, "the loop exited");
        }
        let findings = lock(&self.evaluator).on_exit(&exit, &self.settings.thresholds);
        self.apply(findings);
        self.done();
    }

    /// Runs a process sweep (blocking: it waits out the grace period of any process it
    /// terminates) and publishes what it found: `run` is this run's id once its loop
    /// has exited, `None` for a sweep for dead owners only.
    pub(super) fn sweep_processes(
        &self,
        run: Option<&str>,
    ) -> crate::processes::ProcessSweepReport {
        let skip = lock(&self.processes_given_up).clone();
        let report = crate::processes::sweep(run, false, &skip);
        lock(&self.processes_given_up).extend(crate::processes::given_up(&report));
        let i = &self.pipeline.instruments;
        i.loopwatch_processes_cleaned_total
            .add(report.cleaned.len() as u64, &[]);
        i.loopwatch_process_cleanup_failures_total
            .add(report.failed.len() as u64, &[]);
        i.orphaned_processes.record(report.remaining() as f64, &[]);
        {
            let mut tally = lock(&self.process_tally);
            tally.orphaned_now = report.remaining() as u64;
            tally.cleaned_total += report.cleaned.len() as u64;
            tally.failures_total += report.failed.len() as u64;
        }
        if run.is_some() {
            self.lock_run().processes_left_behind =
                report.failed.iter().map(|(p, _)| p.clone()).collect();
        }
        report
    }

    /// Watches a supervised loop's process tree instead of this process.
    pub(super) fn watch_process_tree(&self, root_pid: u32) {
        *lock(&self.host_sampler) = HostSampler::for_process_tree(root_pid);
    }

    /// The loop has said it is done: waiting from now on is not a stall.
    pub(super) fn done(&self) {
        if !self.liveness.done.swap(true, Ordering::Relaxed) {
            self.pipeline
                .instruments
                .loopwatch_loop_done
                .record(1.0, &[]);
            self.check_liveness();
        }
    }

    /// Publishes the evaluator's rolling values, baselines and streak to the gauges.
    fn publish_evaluation(&self, evaluator: &Evaluator) {
        let i = &self.pipeline.instruments;
        let rolling = evaluator.rolling();
        i.loopwatch_rolling_window_iterations
            .record(rolling.iterations as f64, &[]);
        record_present(&i.success_rate_10iter, rolling.success_rate);
        record_present(&i.avg_sharpe_10iter, rolling.avg_sharpe);
        record_present(&i.avg_diversity_10iter, rolling.avg_diversity);
        record_present(
            &i.loopwatch_rolling_execution_time_seconds,
            rolling.mean_seconds,
        );
        i.loopwatch_low_diversity_streak_iterations
            .record(evaluator.low_diversity_streak() as f64, &[]);
        for (watched, baseline) in evaluator.baselines() {
            if let Some(baseline) = baseline {
                i.loopwatch_baseline
                    .record(baseline, &[KeyValue::new("metric", watched.metric())]);
            }
        }
    }

    /// Takes one host and process sample, publishes it and evaluates HighMemoryUsage.
    pub(super) fn sample_host(&self) {
        let sample = catch_unwind(AssertUnwindSafe(|| lock(&self.host_sampler).tick()));
        let Ok(sample) = sample else {
            tracing::error!("the host sampler panicked; its gauges keep their last values");
            return;
        };
        let i = &self.pipeline.instruments;
        i.memory_usage_bytes.set(sample.loop_rss_bytes as f64);
        i.cpu_usage_percent.set(sample.loop_cpu_percent);
        i.loopwatch_loop_processes.set(sample.loop_processes as f64);
        i.host_memory_used_bytes
            .set(sample.host_memory_used_bytes as f64);
        i.host_memory_total_bytes
            .set(sample.host_memory_total_bytes as f64);
        i.process_cpu_seconds_total.set(sample.process_cpu_seconds);
        i.process_resident_memory_bytes
            .set(sample.process_rss_bytes as f64);
        i.process_virtual_memory_bytes
            .set(sample.process_virtual_memory_bytes as f64);
        i.process_start_time_seconds
            .set(sample.process_start_time_seconds as f64);
        if let Some((open, max)) = crate::sample::file_descriptors() {
            i.process_open_fds.set(open as f64);
            i.process_max_fds.set(max as f64);
        }
        i.loopwatch_sampler_ticks_total.add(1, &[]);
        lock(&self.latest).host = Some(sample);
        // The limit that kills: the cgroup's, when it is below host memory.
        let cgroup = self.cgroup.as_ref().and_then(CgroupMemory::read);
        let (used, limit) = match cgroup {
            Some(reading) => match reading.limit_bytes {
                Some(limit) if limit < sample.host_memory_total_bytes => {
                    (reading.working_set_bytes, limit)
                }
                _ => (
                    sample.host_memory_used_bytes,
                    sample.host_memory_total_bytes,
                ),
            },
            None => (
                sample.host_memory_used_bytes,
                sample.host_memory_total_bytes,
            ),
        };
        i.loopwatch_memory_used_bytes.set(used as f64);
        i.loopwatch_memory_limit_bytes.set(limit as f64);
        let findings = lock(&self.evaluator).on_host_memory(used, limit, &self.settings.thresholds);
        self.apply(findings);
    }

    /// Feeds the orphans left after a sweep to ContainerCleanupFailures and the gauge.
    pub(super) fn report_orphans(&self, orphans: u64) {
        self.pipeline
            .instruments
            .orphaned_containers
            .set(orphans as f64);
        let findings = lock(&self.evaluator).on_orphans(orphans, &self.settings.thresholds);
        self.apply(findings);
    }

    /// Publishes one container sample (or Docker being down).
    #[cfg(feature = "docker")]
    pub(super) fn publish_containers(
        &self,
        containers: &crate::containers::Containers,
        sample: Option<crate::containers::ContainerSample>,
    ) {
        let i = &self.pipeline.instruments;
        i.loopwatch_docker_up
            .set(f64::from(u8::from(containers.is_up())));
        let source = containers.stats_source();
        i.loopwatch_container_stats_source.set_series(
            [
                crate::containers::StatsSource::Cgroup,
                crate::containers::StatsSource::DockerApi,
            ]
            .map(|s| {
                (
                    vec![KeyValue::new("source", s.label())],
                    f64::from(u8::from(s == source)),
                )
            })
            .to_vec(),
        );
        let mut latest = lock(&self.latest);
        latest.cleanup_failures = containers.cleanup_failures();
        let Some(sample) = sample else {
            // Docker is down: the per-container series go, the count keeps its last.
            i.container_memory_usage.set_series(Vec::new());
            i.container_cpu_usage.set_series(Vec::new());
            return;
        };
        i.active_containers.set(sample.active as f64);
        let name = |stat: &crate::containers::stats::ContainerStat| {
            vec![KeyValue::new("name", stat.name.clone())]
        };
        i.container_memory_usage.set_series(
            sample
                .stats
                .iter()
                .map(|s| (name(s), s.memory_bytes as f64))
                .collect(),
        );
        i.container_cpu_usage.set_series(
            sample
                .stats
                .iter()
                .filter_map(|s| s.cpu_percent.map(|cpu| (name(s), cpu)))
                .collect(),
        );
        latest.active_containers = sample.active;
        latest.container_memory_bytes = sample.stats.iter().map(|s| s.memory_bytes).sum();
        let now = SystemTime::now();
        latest
            .first_seen
            .retain(|name, _| sample.stats.iter().any(|s| &s.name == name));
        let mut live = Vec::with_capacity(sample.stats.len());
        for stat in &sample.stats {
            let since = *latest.first_seen.entry(stat.name.clone()).or_insert(now);
            live.push(crate::export::LiveContainer {
                name: stat.name.clone(),
                memory_bytes: stat.memory_bytes,
                cpu_percent: stat.cpu_percent,
                age_seconds: now.duration_since(since).unwrap_or_default().as_secs_f64(),
            });
        }
        live.sort_by(|a, b| a.name.cmp(&b.name));
        latest.containers = live;
    }

    /// The Alertmanager delivery, when URLs are configured.
    pub(super) fn alert_sink(&self) -> Option<&AlertSink> {
        self.alert_sink.as_ref()
    }

    /// Whether the alert is firing now.
    pub(super) fn is_firing(&self, alert: crate::alerts::AlertName) -> bool {
        lock(&self.evaluator).states()[alert] == AlertState::Firing
    }

    /// The containers feature's state, as written to `metrics_final.json`.
    fn containers_json(&self) -> serde_json::Value {
        #[cfg(feature = "docker")]
        if self.settings.containers {
            let c = &self.containers;
            return serde_json::json!({
                "enabled": true,
                "docker_up": c.is_up(),
                "last_sweep": c.last_sweep(),
                "shutdown": c.shutdown_report(),
            });
        }
        serde_json::json!({ "enabled": false })
    }
}

impl Source for Shared {
    fn identity(&self) -> &RunIdentity {
        &self.identity
    }

    fn exposition(&self) -> Result<String, CollectError> {
        encode_text(&self.pipeline.gather()?)
    }

    fn snapshot(&self) -> Snapshot {
        let evaluation = self.evaluation();
        let (summary, history, (events, events_dropped), recent_failure_reasons) = {
            let run = self.lock_run();
            (
                run.summary(&self.identity.run_id),
                run.history(),
                run.events(),
                run.recent_failure_reasons(),
            )
        };
        Snapshot {
            identity: self.identity.clone(),
            summary,
            thresholds: self.settings.thresholds.clone(),
            evaluation,
            history,
            events,
            events_dropped,
            containers: self.containers_json(),
            live_containers: lock(&self.latest).containers.clone(),
            processes: *lock(&self.process_tally),
            recent_failure_reasons,
            recent_iterations: super::state::RECENT_ITERATIONS,
        }
    }
}
