//! [`Shared`]: what the loop's handle, the endpoint and the background tasks share,
//! and the steps that join the monitor's three parts — the [`Judge`] decides, the
//! [`Publisher`] records instruments, the [`Ledger`] keeps the run's books — when an
//! iteration ends, a sample arrives or a sweep finishes. It is the exporters'
//! [`Source`]: they read snapshots of it, never its fields.
//!
//! # Locks
//!
//! The run's books (the ledger's run and latest readings with the judge's evaluator),
//! the ledger's housekeeping, and the host sampler are each behind their own mutex.
//! No step holds two at once (settling, below, holds only its own ordering lock
//! besides): each takes one, copies or decides what it needs, and lets it go before
//! the next. Findings are dispatched with no lock held (the event
//! log takes the books' lock for itself). So there is no lock order to keep, and none
//! can deadlock.
//!
//! # The iteration's path
//!
//! Starting an iteration reads the monotonic clock once and stores two gauges.
//! Outcomes are summed in the iteration itself, failure reasons by interned number.
//! A champion reported again is recognised by its fingerprint without a lock.
//! Finishing reads the clock once, stamps liveness and staleness in atomics, and
//! queues the completed iteration under one short lock, with no allocation once the
//! queue has grown to its working size.
//!
//! Everything derived — the run's books, the evaluator's windows and rules, the
//! history point, the published gauges, the delivery of what the rules found — is
//! done by [`Shared::settle`], off the loop's thread: the background clock settles
//! every [`SETTLE_EVERY`], and every reader (a scrape, the page, a snapshot, the
//! summary, the alert state) settles first, so nothing anyone reads lags the loop.
//! The queue is settled on the loop's thread only when it reaches [`MAX_PENDING`],
//! so it stays bounded however fast the loop runs and nothing is dropped.
//!
//! Settling holds the settle lock while it books, so iterations are applied in the
//! order they finished; it takes the queue's and the books' locks one after the
//! other, never together.

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::alerts::AlertName;
use crate::config::Settings;
use crate::error::CollectError;
use crate::evaluate::Findings;
use crate::export::alertmanager::AlertSink;
use crate::export::{Evaluation, Snapshot, Source};
use crate::pipeline::Pipeline;
use crate::record::Rejections;
use crate::run::{HistoryPoint, IterationSummary, LoopExit, RunIdentity, RunSummary};
use crate::sample::{CgroupMemory, HostSampler};

use super::findings::{dispatch, FindingSink, Log};
use super::judge::{lock, Judge, Judged};
use super::ledger::{Books, Latest, Ledger, RunLedger};
use super::publish::Publisher;
use super::reasons::ReasonCounts;

/// How often the background clock settles completed iterations.
pub(super) const SETTLE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Completed iterations queued at most before the loop's thread settles them itself.
const MAX_PENDING: usize = 256;

/// A completed iteration (or a merged batch of them), queued to be booked, judged and
/// published by [`Shared::settle`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Completed {
    /// What the loop is told about it.
    pub(super) summary: IterationSummary,
    /// Iterations it stands for (more than one for a merged batch).
    pub(super) count: u64,
    /// Their wall-clock time in all.
    pub(super) duration: std::time::Duration,
    /// Its failures by reason.
    pub(super) reasons: ReasonCounts,
    /// The best Sharpe ratio reported in it.
    pub(super) best_sharpe: Option<f64>,
    /// The run's LLM spend when it ended, in US dollars.
    pub(super) spend_usd: f64,
    /// When it ended, as a stamp of the judge's clock.
    pub(super) ended: u64,
}

/// Shared between the loop's handle, the endpoint and the background tasks.
pub(super) struct Shared {
    pub(super) settings: Settings,
    pub(super) identity: RunIdentity,
    pub(super) publisher: Publisher,
    pub(super) judge: Judge,
    pub(super) ledger: Ledger,
    pub(super) rejections: Rejections,
    pub(super) local_addr: SocketAddr,
    pub(super) next_iteration: AtomicU64,
    /// The [`fingerprint`] of the champion the books hold; 0 before any.
    pub(super) champion_fingerprint: AtomicU64,
    /// Completed iterations since the champion last changed.
    pub(super) staleness: AtomicU64,
    /// Completed iterations waiting to be settled.
    pending: Mutex<Vec<Completed>>,
    /// The batch being settled; its lock keeps settling in order.
    settling: Mutex<Vec<Completed>>,
    pub(super) stop_requested: AtomicBool,
    pub(super) closed: AtomicBool,
    #[cfg(feature = "docker")]
    pub(super) containers: std::sync::Arc<crate::containers::Containers>,
    /// The run's LLM calls.
    pub(super) llm: crate::llm::meter::LlmMeter,
    host_sampler: Mutex<HostSampler>,
    /// The loop's memory cgroup, whose limit HighMemoryUsage uses when it is lower
    /// than host memory.
    cgroup: Option<CgroupMemory>,
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
        let books = Arc::new(Mutex::new(Books {
            run: RunLedger::new(parts.started_at),
            evaluator: crate::evaluate::Evaluator::new(&parts.settings.thresholds),
            latest: Latest::default(),
        }));
        let shared = Shared {
            judge: Judge::new(parts.settings.thresholds.clone(), Arc::clone(&books)),
            settings: parts.settings,
            identity: parts.identity,
            publisher: Publisher {
                pipeline: parts.pipeline,
            },
            ledger: Ledger::new(books),
            rejections,
            local_addr: parts.local_addr,
            next_iteration: AtomicU64::new(1),
            champion_fingerprint: AtomicU64::new(0),
            staleness: AtomicU64::new(0),
            pending: Mutex::new(Vec::with_capacity(64)),
            settling: Mutex::new(Vec::with_capacity(64)),
            stop_requested: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            #[cfg(feature = "docker")]
            containers: parts.containers,
            llm: crate::llm::meter::LlmMeter::default(),
            host_sampler: Mutex::new(parts.host_sampler),
            cgroup: CgroupMemory::of_current_process(),
            alert_sink: parts.alert_sink,
        };
        shared.publisher.loop_started(parts.started_at);
        shared.sample_host();
        shared
    }

    /// The pipeline serving loopwatch's and the user's instruments.
    pub(super) fn pipeline(&self) -> &Pipeline {
        &self.publisher.pipeline
    }

    pub(super) fn request_stop(&self) -> bool {
        self.stop_requested.swap(true, Ordering::SeqCst)
    }

    /// The run so far, summarised.
    pub(super) fn summary(&self) -> RunSummary {
        self.settle();
        let mut summary = self.ledger.run().summary(&self.identity.run_id);
        summary.llm = self.llm.summary();
        summary
    }

    /// The evaluator's whole state at this instant.
    pub(super) fn evaluation(&self) -> Evaluation {
        self.settle();
        self.judge.evaluation()
    }

    /// Hands what an evaluation found to the log, the gauges, the event log and
    /// Alertmanager.
    fn deliver(&self, findings: &Findings) {
        if findings.transitions.is_empty() && findings.warnings.is_empty() {
            return;
        }
        let log = Log {
            run_id: &self.identity.run_id,
        };
        let alertmanager = self
            .alert_sink
            .as_ref()
            .map(|sink| sink as &dyn FindingSink);
        dispatch(
            findings,
            &log,
            &[Some(&self.publisher), Some(&self.ledger), alertmanager],
        );
    }

    /// A completed iteration: its end stamped for LoopStalled, and queued to be
    /// settled.
    pub(super) fn iteration_completed(&self, completed: Completed) {
        self.judge.iteration_ended(completed.ended);
        let backlog = {
            let mut pending = lock(&self.pending);
            pending.push(completed);
            pending.len()
        };
        if backlog >= MAX_PENDING {
            self.settle();
        }
    }

    /// Books, judges, keeps and publishes the completed iterations queued so far, in
    /// the order they finished, and delivers what the rules found.
    pub(super) fn settle(&self) {
        let mut batch = lock(&self.settling);
        std::mem::swap(&mut *lock(&self.pending), &mut *batch);
        for completed in batch.drain(..) {
            self.apply(&completed);
        }
    }

    /// One completed iteration, settled.
    fn apply(&self, completed: &Completed) {
        let summary = &completed.summary;
        let at = self.judge.clock.unix_seconds(completed.ended);
        let (findings, judged) = {
            let mut books = self.ledger.books();
            let books = &mut *books;
            if let Some(best) = completed.best_sharpe {
                books
                    .run
                    .observe_sharpe(best, summary.number, at, completed.spend_usd);
            }
            books.run.complete(
                completed.count,
                completed.duration,
                summary,
                &completed.reasons,
            );
            let (findings, judged) = self.judge.iteration(books, summary);
            let point = history_point(summary, &judged, &books.latest, books.run.best_sharpe, at);
            books.run.push_history(point);
            (findings, judged)
        };
        self.publisher.iteration(summary, at);
        self.publisher.judged(&judged);
        self.deliver(&findings);
    }

    /// An iteration starts at clock stamp `at`: stamps it, and re-evaluates
    /// LoopStalled if it fires (a loop stuck between iterations is stuck no more).
    pub(super) fn iteration_started(&self, number: u64, at: u64) {
        self.publisher
            .iteration_started(number, self.judge.clock.unix_seconds(at));
        if self.judge.iteration_started(at) {
            self.check_liveness();
        }
    }

    /// Evaluates LoopStalled now.
    pub(super) fn check_liveness(&self) {
        let findings = self.judge.clock();
        self.deliver(&findings);
    }

    /// What the background task evaluates about once a second: LoopStalled, and
    /// LoopCrashLooping as restarts leave the window.
    pub(super) fn check_clock(&self) {
        self.judge.clock.resync();
        self.settle();
        self.check_liveness();
        let (calls, oldest) = self.llm.in_flight();
        self.publisher.llm_in_flight(calls, oldest);
        if self.llm.any_calls() {
            let evidence = self.llm.evidence();
            self.publisher.llm_evidence(&evidence);
            self.judge_llm(&evidence);
        }
        let (findings, recent) = self.judge.restart_window();
        self.publisher.recent_restarts(recent);
        self.deliver(&findings);
    }

    /// One LLM call: priced, booked, published and judged.
    pub(super) fn llm_call(&self, call: &crate::llm::LlmCall) {
        let thresholds = &self.settings.thresholds;
        let pricing = thresholds.llm().pricing(call);
        let (labels, evidence) = self.llm.record(call, pricing, thresholds.llm_error_calls());
        self.publisher.llm_call(call, &labels, pricing, &evidence);
        self.judge_llm(&evidence);
    }

    /// The champion changed: LLM spending without progress starts again.
    pub(super) fn llm_champion_changed(&self) {
        if self.llm.any_calls() {
            let evidence = self.llm.champion_changed();
            self.publisher.llm_evidence(&evidence);
            self.judge_llm(&evidence);
        } else {
            self.llm.champion_changed();
        }
    }

    /// The LLM alerts on this evidence; a budget about to be passed is said in the log.
    fn judge_llm(&self, evidence: &crate::llm::meter::LlmEvidence) {
        let mut findings = self.judge.llm(evidence);
        if evidence.spend_is_lower_bound {
            for t in &mut findings.transitions {
                if matches!(
                    t.alert,
                    AlertName::LLMBudget | AlertName::LLMSpendWithoutProgress
                ) {
                    t.note = Some(crate::llm::SPEND_LOWER_BOUND);
                }
            }
        }
        for t in &findings.transitions {
            if t.alert == AlertName::LLMBudget && t.state == crate::alerts::AlertState::Pending {
                tracing::warn!(
                    run_id = %self.identity.run_id,
                    spend_usd = evidence.spend_usd,
                    projected_usd = t.value,
                    budget_usd = t.threshold,
                    horizon = %humantime::format_duration(self.settings.thresholds.llm_budget_horizon()),
                    note = t.note.unwrap_or_default(),
                    "LLM budget will be exceeded within the horizon at the last hour's rate"
                );
            }
        }
        self.deliver(&findings);
    }

    /// A supervised loop's process ended and the supervisor will start it again:
    /// records the exit, and stops stall checks until the new process starts.
    pub(super) fn loop_restarting(&self, mut exit: LoopExit) {
        self.settle();
        exit.said_done |= self.judge.is_done();
        exit.restarted = true;
        self.judge.loop_down();
        self.ledger.run().record_exit(exit);
        tracing::warn!(code = ?exit.code, signal = ?exit.signal, reason = ?exit.reason, "the loop ended; it will be started again");
    }

    /// The supervised loop has no way to report: no stall checks for it, and a
    /// LoopStalled already raised resolves.
    pub(super) fn loop_cannot_report(&self) {
        self.judge.loop_unreported();
        self.check_liveness();
    }

    /// A supervised loop's process started (again, after [`Shared::loop_restarting`]):
    /// publishes its start, counts the restart and evaluates LoopCrashLooping.
    pub(super) fn loop_started(&self) {
        let now = SystemTime::now();
        self.judge.loop_started();
        self.publisher.loop_started(now);
        // A stall of the previous process is over.
        self.check_liveness();
        let restarted = self.ledger.run().exits_pending_restart();
        let Some(exit) = restarted else {
            return;
        };
        let (findings, recent) = self.judge.restarted();
        self.publisher
            .restarted(exit.reason.restart_label(), recent);
        let iteration = self
            .next_iteration
            .load(Ordering::Relaxed)
            .saturating_sub(1);
        self.ledger.push_event(
            iteration,
            crate::run::EventKind::Restarted {
                reason: exit.reason,
                status: exit.shell_status(),
                recent_restarts: recent,
            },
        );
        self.deliver(&findings);
    }

    /// A supervised loop's process ended for good: records how, evaluates LoopExited,
    /// and stops stall checks (nothing more is coming).
    pub(super) fn loop_exited(&self, mut exit: LoopExit) {
        self.settle();
        let findings = self.judge.exit(&mut exit);
        exit.restarted = false;
        {
            let mut run = self.ledger.run();
            run.loop_exit = Some(exit);
            run.record_exit(exit);
        }
        if exit.unexpected() {
            tracing::error!(code = ?exit.code, signal = ?exit.signal, "the loop exited before it said it was done");
        } else {
            tracing::info!(code = ?exit.code, signal = ?exit.signal, said_done = exit.said_done, "the loop exited");
        }
        self.deliver(&findings);
        self.done();
    }

    /// Runs a process sweep (blocking: it waits out the grace period of any process it
    /// terminates) and publishes what it found: `run` is this run's id once its loop
    /// has exited, `None` for a sweep for dead owners only.
    pub(super) fn sweep_processes(
        &self,
        run: Option<&str>,
        grace: std::time::Duration,
    ) -> crate::processes::ProcessSweepReport {
        let skip = self.ledger.processes_given_up();
        let report = crate::processes::sweep(run, false, &skip, grace);
        let (cleaned, failed) = (report.cleaned.len(), report.failed.len());
        self.publisher
            .process_sweep(cleaned, failed, report.remaining());
        self.ledger.process_sweep(
            crate::processes::given_up(&report),
            cleaned,
            failed,
            report.remaining(),
        );
        if run.is_some() {
            self.ledger.run().processes_left_behind =
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
        self.settle();
        if self.judge.done() {
            self.publisher.done();
            self.check_liveness();
        }
    }

    /// Takes one host and process sample, publishes it and evaluates HighMemoryUsage.
    pub(super) fn sample_host(&self) {
        let sample = catch_unwind(AssertUnwindSafe(|| lock(&self.host_sampler).tick()));
        let Ok(sample) = sample else {
            tracing::error!("the host sampler panicked; its gauges keep their last values");
            return;
        };
        // The limit that kills: the cgroup's, when it is below host memory.
        let host = (
            sample.host_memory_used_bytes,
            sample.host_memory_total_bytes,
        );
        let (used, limit) = match self.cgroup.as_ref().and_then(CgroupMemory::read) {
            Some(reading) => match reading.limit_bytes {
                Some(limit) if limit < sample.host_memory_total_bytes => {
                    (reading.working_set_bytes, limit)
                }
                _ => host,
            },
            None => host,
        };
        self.publisher.host(&sample, used, limit);
        self.ledger
            .update_latest(|latest| latest.host = Some(sample));
        let findings = self.judge.host_memory(used, limit);
        self.deliver(&findings);
    }

    /// Feeds the orphans left after a sweep to ContainerCleanupFailures and the gauge.
    pub(super) fn report_orphans(&self, orphans: u64) {
        self.publisher.orphaned_containers(orphans);
        let findings = self.judge.orphans(orphans);
        self.deliver(&findings);
    }

    /// Publishes one container sample (or Docker being down).
    #[cfg(feature = "docker")]
    pub(super) fn publish_containers(
        &self,
        containers: &crate::containers::Containers,
        sample: Option<crate::containers::ContainerSample>,
    ) {
        self.publisher.containers(containers, sample.as_ref());
        let cleanup_failures = containers.cleanup_failures();
        self.ledger.update_latest(|latest| {
            latest.cleanup_failures = cleanup_failures;
            if let Some(sample) = &sample {
                latest.active_containers = sample.active;
                latest.container_memory_bytes = sample.stats.iter().map(|s| s.memory_bytes).sum();
            }
        });
        if let Some(sample) = &sample {
            self.ledger.live_containers(&sample.stats);
        }
    }

    /// The Alertmanager delivery, when URLs are configured.
    pub(super) fn alert_sink(&self) -> Option<&AlertSink> {
        self.alert_sink.as_ref()
    }

    /// Whether the alert is firing now.
    pub(super) fn is_firing(&self, alert: AlertName) -> bool {
        self.settle();
        self.judge.is_firing(alert)
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

/// The point the page draws for a completed iteration.
fn history_point(
    summary: &IterationSummary,
    judged: &Judged,
    latest: &Latest,
    best_sharpe: Option<f64>,
    at: f64,
) -> HistoryPoint {
    let host = latest.host.unwrap_or_default();
    HistoryPoint {
        iteration: summary.number,
        at,
        best_sharpe,
        execution_time_seconds: summary.duration.as_secs_f64(),
        memory_usage_bytes: host.loop_rss_bytes as f64,
        cpu_usage_percent: host.loop_cpu_percent,
        success_rate_10iter: judged.rolling.success_rate,
        sharpe_ratio: summary.mean_sharpe,
        max_drawdown: summary.mean_max_drawdown,
        population_diversity: summary.diversity,
        unique_strategy_count: summary.unique_strategies,
        champion_staleness_iterations: summary.champion_staleness,
        champion_changed: summary.champion_changed,
        active_containers: latest.active_containers as f64,
        container_memory_bytes: latest.container_memory_bytes as f64,
        cleanup_failures: latest.cleanup_failures as f64,
        alerts_firing: judged.firing,
    }
}

impl Source for Shared {
    fn identity(&self) -> &RunIdentity {
        &self.identity
    }

    fn exposition(&self) -> Result<String, CollectError> {
        self.settle();
        let families = self.pipeline().gather()?;
        Ok(self.pipeline().text.encode(&families))
    }

    fn snapshot(&self) -> Snapshot {
        let evaluation = self.evaluation();
        let (mut summary, history, progress, (events, events_dropped), recent_failure_reasons) = {
            let run = self.ledger.run();
            (
                run.summary(&self.identity.run_id),
                run.history(),
                run.progress.clone(),
                run.events(),
                run.recent_failure_reasons(),
            )
        };
        summary.llm = self.llm.summary();
        Snapshot {
            identity: self.identity.clone(),
            summary,
            thresholds: self.settings.thresholds.clone(),
            evaluation,
            history,
            progress,
            events,
            events_dropped,
            containers: self.containers_json(),
            live_containers: self.ledger.containers(),
            processes: self.ledger.process_tally(),
            recent_failure_reasons,
            recent_iterations: super::ledger::RECENT_ITERATIONS,
        }
    }
}

/// A champion's fingerprint: a 64-bit hash of its name (eight bytes at a time, then
/// mixed as MurmurHash3's finaliser does), never 0. The iteration compares it with the
/// books' champion's without a lock; only a different one takes the lock and compares
/// the names themselves, so a change is missed only if two names share all 64 bits.
pub(super) fn fingerprint(champion: &str) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes = champion.as_bytes();
    let mut hash = (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        hash = (hash ^ word).wrapping_mul(K).rotate_left(31);
    }
    let mut last = [0u8; 8];
    last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    hash = (hash ^ u64::from_le_bytes(last)).wrapping_mul(K);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    hash | 1
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    #[test]
    fn fingerprints_tell_similar_names_apart() {
        let names: Vec<String> = (0..20_000)
            .map(|i| format!("ma-cross-{}-{}", i % 200, i / 200))
            .chain((0..64).map(|n| "x".repeat(n)))
            .collect();
        let mut prints: Vec<u64> = names.iter().map(|n| fingerprint(n)).collect();
        assert!(prints.iter().all(|p| p & 1 == 1));
        prints.sort_unstable();
        prints.dedup();
        assert_eq!(
            prints.len(),
            names.len(),
            "no two names share a fingerprint"
        );
    }
}
