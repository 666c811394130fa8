//! [`RunState`]: everything the monitor knows about the run, changed only by
//! [`RunState::apply`], one [`Event`] at a time. `apply` is pure: no locks, no I/O, no
//! clock (time arrives in the events). It returns what changed — the alerts' and
//! warnings' [`Findings`] and what to [`Publish`] — for the hub to publish and deliver.
//!
//! The parts: the [`ledger`] (totals, champion, history, event log, exits), the
//! evaluator (windows, baselines, alert states), the samplers' latest readings and the
//! sweeps' housekeeping ([`housekeeping`]), the LLM meter, the loop's [`liveness`],
//! the [`evaluations`] in flight, and what the zero-code instrumentation said of the
//! loop's [`frameworks`].

mod evaluations;
mod frameworks;
mod gpu;
mod housekeeping;
mod ledger;
mod liveness;
mod servers;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use enum_map::EnumMap;

use crate::alerts::{AlertName, AlertState, RollingValues, Watched};
use crate::config::Thresholds;
use crate::containers::ContainerReading;
use crate::evaluate::{evaluation_limit, Evaluator, Findings};
use crate::export::{DurationBucket, Evaluation, EvaluationsView, LiveContainer, ProcessTally};
use crate::llm::budget::{worst_case_usd, BudgetEvent, BudgetMark};
use crate::llm::meter::{CallLabels, LlmEvidence, LlmMeter};
use crate::llm::{CallRequest, LlmCall, Pricing};
use crate::records::progress::Progress;
use crate::records::thinned::Thinned;
use crate::records::{
    unix_seconds, Ended, ExitReason, HistoryPoint, HungEvaluation, IterationSummary, LogEntry,
    LogEntryKind, LoopExit, Moment, RunSummary, TimePoint, MAX_TIME_POINTS,
};
use crate::reported::Rejection;

use super::event::{ChampionChange, Completed, Event, HostReading, ProcessSweep, ServerRead};
use super::reasons::{ReasonCounts, ReasonNames};
use evaluations::{Evaluations, Oldest, Refused};
use frameworks::Frameworks;
use gpu::GpuBooks;
use housekeeping::{Housekeeping, Latest};
use ledger::RunLedger;
use liveness::Liveness;
use servers::Servers;

pub(super) use evaluations::{Finished, PROCESS_GONE};
pub(crate) use gpu::{GpuErrorKind, GpuErrors};
pub(super) use ledger::RECENT_ITERATIONS;

/// The evaluator's published quantities after an iteration: rolling values,
/// baselines and the low-diversity streak.
#[derive(Debug, Clone, Copy)]
pub(super) struct Judged {
    pub(super) rolling: RollingValues,
    pub(super) baselines: EnumMap<Watched, Option<f64>>,
    /// Whether a baseline was captured in this iteration.
    pub(super) new_baseline: bool,
    pub(super) low_diversity_streak: u64,
    /// Alerts firing after the iteration.
    pub(super) firing: u8,
}

/// What applying one event changed, for the hub to publish and deliver. Small, so
/// that returning it copies little: the values an instrument shows that are large
/// (an iteration's summary and what the evaluator made of it, a host reading, the
/// evaluations' gauges, the LLM evidence) stay in the state's [`Published`], which
/// the hub hands the publisher by reference while it holds the state.
#[derive(Debug)]
pub(super) struct Applied {
    /// Alerts that changed state and warnings that started or cleared.
    pub(super) findings: Findings,
    /// What the instruments (and the log) are to show of it.
    pub(super) publish: Publish,
    /// An observation the event carried that was turned away, for the hub to count
    /// and log.
    pub(super) rejected: Option<Rejected>,
}

/// An observation an event carried that was turned away.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rejected {
    pub(super) kind: Rejection,
    /// The value to log.
    pub(super) value: f64,
    /// The iteration the event belonged to, as the state knew it when applying the
    /// event: the last one completed before it (events are applied in the order they
    /// were sent), or a later one the hub had noted running; 0 before the first. Not
    /// the iteration current when the queue is settled, which may be hundreds later.
    pub(super) iteration: u64,
}

/// The evaluations' gauges after an evaluation event or a tick, and what an event
/// added: an evaluation that ended, a queue wait.
#[derive(Debug, Default)]
pub(super) struct EvaluationGauges {
    pub(super) in_flight: usize,
    /// The age of the oldest in flight; zero with none.
    pub(super) oldest: Duration,
    /// Workers seen, and those busy.
    pub(super) workers: (usize, usize),
    /// How long an evaluation may run before EvaluationHung (computed on a tick).
    pub(super) limit: Option<Duration>,
    /// An evaluation that ended, and why it failed if it did and the loop said.
    pub(super) finished: Option<(Finished, Option<Box<str>>)>,
    /// A queue wait reported.
    pub(super) queued: Option<Duration>,
    /// Evaluations that ended because their process is gone: as failed, or as
    /// killed when the supervisor had interrupted them.
    pub(super) gone: Vec<Finished>,
    /// Evaluations that ended after the supervisor interrupted them (each counted
    /// as killed, in `finished` or `gone`): their ids and durations, for the log.
    pub(super) interrupted: Vec<(Arc<str>, Duration)>,
}

/// The values of the last events of each kind that the instruments show, kept in the
/// state for the publisher to read by reference: what [`Publish`] names but does not
/// carry.
#[derive(Debug, Default)]
pub(super) struct Published {
    /// The last completed iteration (or batch) and what the evaluator made of it.
    pub(super) iteration: Option<IterationValues>,
    /// The last champion change.
    pub(super) champion: Option<ChampionChange>,
    /// The last host and process sample.
    pub(super) host: Option<HostReading>,
    /// The evaluations' gauges after the last evaluation event, tick or exit that
    /// changed them, and what that event added.
    pub(super) evaluations: EvaluationGauges,
    /// The LLM evidence after the last call, champion change or tick that judged it.
    pub(super) llm: LlmEvidence,
    /// The last GPU sample.
    pub(super) gpu: GpuPublished,
    /// The last read of a model server that changed anything.
    pub(super) model_server: Option<ModelServerPublished>,
}

/// A GPU sample as the instruments show it.
#[derive(Debug, Default)]
pub(super) struct GpuPublished {
    /// The devices still answering (their latest readings).
    pub(super) devices: Vec<crate::sample::GpuDevice>,
    /// The errors the sample found.
    pub(super) errors: Vec<GpuErrors>,
    /// The devices the sample found lost.
    pub(super) lost: Vec<crate::sample::GpuDevice>,
}

/// A read of a model server (or a failure to read it) as the instruments show it.
#[derive(Debug)]
pub(super) struct ModelServerPublished {
    /// What changed.
    pub(super) change: crate::servers::book::Change,
    /// Every server as it now stands.
    pub(super) servers: Vec<crate::servers::book::ServerView>,
}

/// A completed iteration (or batch) as the instruments show it.
#[derive(Debug)]
pub(super) struct IterationValues {
    /// The highest iteration number seen (this one, or one started since).
    pub(super) latest: u64,
    /// Strategy successes and failures of the run so far, this iteration's included.
    pub(super) outcomes: (u64, u64),
    pub(super) summary: IterationSummary,
    /// When it ended, in seconds since the Unix epoch.
    pub(super) ended: f64,
    pub(super) judged: Judged,
    /// The best Sharpe ratio of any strategy so far.
    pub(super) best_sharpe: Option<f64>,
}

/// An LLM call as the instruments show it: its label values, price, and the budget's
/// marks it made (warnings reached, the first refusal). The evidence after it is in
/// [`Published::llm`].
#[derive(Debug)]
pub(super) struct LlmPublish {
    pub(super) call: Box<LlmCall>,
    pub(super) labels: CallLabels,
    pub(super) pricing: Pricing,
    pub(super) budget: Vec<BudgetMark>,
    /// The labels of the rate limits its answer stated (`call.headroom`), when it did.
    pub(super) headroom: Option<crate::llm::meter::HeadroomLabels>,
}

/// What the instruments are to show of an applied event. Small values travel in it;
/// the large ones it names are in the state's [`Published`]. The publisher keeps no
/// state of its own.
#[derive(Debug)]
pub(super) enum Publish {
    /// Nothing beyond the findings.
    Nothing,
    /// An iteration started.
    IterationStarted { number: u64, at: SystemTime },
    /// An iteration (or a batch) completed: [`Published::iteration`].
    Iteration,
    /// The champion changed ([`Published::champion`]); `llm` when calls were made
    /// ([`Published::llm`]).
    ChampionChanged { llm: bool },
    /// A host and process sample: [`Published::host`].
    Host,
    /// A container sample (or Docker down).
    Containers(ContainerReading),
    /// A GPU sample: [`Published::gpu`]; `resumed` when samples come again after
    /// the readings went stale.
    Gpu { resumed: bool },
    /// The GPUs' readings are gone: no sample came for `quiet`, or (`None`) the
    /// sampler ended.
    GpuGone { quiet: Option<Duration> },
    /// A critical Xid error.
    GpuXid(GpuErrors),
    /// The orphaned containers a sweep left.
    Orphans(u64),
    /// What a process sweep did.
    ProcessSweep {
        cleaned: usize,
        failed: usize,
        remaining: usize,
    },
    /// A supervised loop's process started; `restart` when it was a restart: why the
    /// previous one ended, and the restarts within the window.
    LoopStarted {
        at: SystemTime,
        restart: Option<(ExitReason, u64)>,
    },
    /// A supervised loop's process ended and will be started again; `evaluations`
    /// when evaluations were in flight (they ended with it: [`Published::evaluations`]).
    LoopRestarting { exit: LoopExit, evaluations: bool },
    /// A supervised loop's process ended for good; `newly_done` when that is what
    /// made the run done; `evaluations` when evaluations were in flight (they ended
    /// with it: [`Published::evaluations`]).
    LoopExited {
        exit: LoopExit,
        newly_done: bool,
        evaluations: bool,
    },
    /// The loop said it is done (the first time).
    Done,
    /// An LLM call, and the labels of the rate limits its answer stated
    /// (`call.headroom`), when it did; the evidence after it is [`Published::llm`].
    Llm(Box<LlmPublish>),
    /// LLM calls in flight, and the age of the oldest.
    InFlight { calls: usize, oldest: Duration },
    /// The evaluations' gauges, and what the event added: [`Published::evaluations`].
    Evaluations,
    /// The zero-code instrumentation reported on a framework: its report when its
    /// state is new (to be logged).
    Instrumentation(Option<Box<crate::protocol::Instrumentation>>),
    /// Errors caught inside a framework's instrumentation, and its total so far.
    InstrumentationErrors {
        framework: crate::protocol::Framework,
        count: u64,
        total: u64,
    },
    /// A model server was read (or could not be): what changed, and every server
    /// as it now stands, in [`Published::model_server`].
    ModelServer,
    /// The background clock's tick: calls in flight, the LLM evidence when calls
    /// were made ([`Published::llm`]), the restarts within the window and the
    /// evaluations ([`Published::evaluations`]).
    Tick {
        calls: usize,
        oldest: Duration,
        llm: bool,
        recent_restarts: u64,
        /// The GPUs' readings went stale: no sample for this long.
        gpu_gone: Option<Duration>,
    },
}

impl Applied {
    /// An event turned away, changing nothing.
    fn rejected(rejected: Rejected) -> Self {
        Applied {
            findings: Findings::default(),
            publish: Publish::Nothing,
            rejected: Some(rejected),
        }
    }

    /// An event that found nothing.
    fn just(publish: Publish) -> Self {
        Applied {
            findings: Findings::default(),
            publish,
            rejected: None,
        }
    }
}

/// Everything the monitor knows about the run.
#[derive(Debug)]
pub(super) struct RunState {
    ledger: RunLedger,
    evaluator: Evaluator,
    latest: Latest,
    housekeeping: Housekeeping,
    llm: LlmMeter,
    liveness: Liveness,
    evaluations: Evaluations,
    /// How long an evaluation may run before EvaluationHung, as last judged.
    hung_limit: Duration,
    /// One point per host sample over the whole run, thinned to [`MAX_TIME_POINTS`]:
    /// the page's time axis, which needs no iterations.
    samples: Thinned<TimePoint>,
    frameworks: Frameworks,
    /// The GPUs the sampler read.
    gpus: GpuBooks,
    /// Failure reasons sent ahead of the iteration they belong to ([`Event::Reasons`]).
    more_reasons: ReasonCounts,
    /// The model servers read.
    servers: Servers,
    /// What the instruments show of the last events, for the publisher.
    published: Published,
}

impl RunState {
    /// A run started at `started_at`, its windows sized by `thresholds`.
    pub(super) fn new(started_at: SystemTime, thresholds: &Thresholds) -> Self {
        RunState {
            ledger: RunLedger::new(started_at),
            evaluator: Evaluator::new(thresholds),
            latest: Latest::default(),
            housekeeping: Housekeeping::default(),
            llm: LlmMeter::new(thresholds.llm_budget()),
            liveness: Liveness::default(),
            evaluations: Evaluations::default(),
            hung_limit: thresholds.evaluation_floor(),
            samples: Thinned::with_capacity(MAX_TIME_POINTS),
            frameworks: Frameworks::default(),
            gpus: GpuBooks::default(),
            more_reasons: ReasonCounts::default(),
            servers: Servers::new(&thresholds.llm().servers),
            published: Published::default(),
        }
    }

    /// What the instruments show of the last events: what a [`Publish`] names.
    pub(super) fn published(&self) -> &Published {
        &self.published
    }

    /// Applies one event: the only way the run's state changes. Pure: what it
    /// returns is all it did besides changing the state.
    pub(super) fn apply(&mut self, event: Event, th: &Thresholds) -> Applied {
        // Each arm's value is the result, built where it is returned: `Applied` is not
        // moved again after it is made.
        match event {
            Event::IterationStarted { number, at } => self.iteration_started(number, at, th),
            Event::Reasons(chunk) => {
                chunk.add_to(&mut self.more_reasons);
                Applied::just(Publish::Nothing)
            }
            Event::Iteration(completed) => self.apply_iteration(&completed, th),
            Event::ChampionChanged(change) => self.champion_changed(change, th),
            Event::Host(reading) => self.host(reading, th),
            Event::Containers { reading, at } => {
                self.latest.containers(&reading);
                self.housekeeping.containers(&reading, at.wall);
                Applied::just(Publish::Containers(reading))
            }
            Event::Gpu { sample, at, period } => self.gpu_sample(&sample, period, th, at),
            Event::GpuEnded { at } => {
                self.gpus.ended();
                let findings = self.evaluator.on_gpu(Some(None), 0, th, at);
                self.found(findings, at, Publish::GpuGone { quiet: None })
            }
            Event::GpuXid { xid, at } => {
                let errors = self.gpus.xid(&xid, th.gpu().is_fatal(xid.code));
                self.gpu_events(std::slice::from_ref(&errors), at);
                let findings = self.evaluator.on_gpu(None, errors.alerting, th, at);
                self.found(findings, at, Publish::GpuXid(errors))
            }
            Event::Orphans { count, at } => {
                let findings = self.evaluator.on_orphans(count, th, at);
                self.found(findings, at, Publish::Orphans(count))
            }
            Event::ProcessSweep(sweep) => self.process_sweep(sweep),
            Event::LoopStarted { at } => self.loop_started(at, th),
            Event::LoopRestarting { exit, at } => self.loop_restarting(exit, th, at),
            Event::LoopExited { exit, at } => self.loop_exited(exit, th, at),
            Event::LoopCannotReport { at } => {
                self.liveness.unreported();
                let findings = self.stall(th, at);
                self.found(findings, at, Publish::Nothing)
            }
            Event::Done { at } => self.done(th, at),
            Event::Llm { call, at } => self.llm_call(call, None, None, th, at),
            Event::LlmFinished { id, call, at } => self.llm_call(call, Some(id), None, th, at),
            Event::LlmStarted { id, request, at } => self.llm_started(id, request, th, at),
            Event::LlmEnded { id, at } => {
                self.llm.call_ended(id);
                self.in_flight(at)
            }
            Event::EvaluationStarted {
                id,
                pid,
                pid_start,
                worker,
                queued,
                reported,
                interruptible,
                at,
            } => {
                let process = pid.map(|pid| (pid, pid_start));
                let started =
                    self.evaluations
                        .start(&id, process, worker, reported, interruptible, at.mono);
                match started {
                    Ok(()) => {
                        self.evaluation_gauges(at, None, None, queued);
                        Applied::just(Publish::Evaluations)
                    }
                    Err(refused) => self.refused(refused),
                }
            }
            Event::EvaluationAssigned {
                id,
                pid,
                pid_start,
                worker,
                queued,
                at,
            } => {
                let process = pid.map(|pid| (pid, pid_start));
                self.evaluations.assign(&id, process, worker, at.mono);
                self.evaluation_gauges(at, None, None, queued);
                Applied::just(Publish::Evaluations)
            }
            Event::EvaluationEnded {
                id,
                outcome,
                reason,
                reported,
                at,
            } => self.evaluation_ended(&id, outcome, reason, reported, th, at),
            Event::EvaluationGone { id, at } => self.evaluation_gone(&id, th, at),
            Event::EvaluationInterrupted { id, at } => {
                // Nothing to show until it ends; an id no longer in flight ended first.
                self.evaluations.interrupt(&id);
                self.found(Findings::default(), at, Publish::Nothing)
            }
            Event::Reported { message, at } => self.reported(*message, at),
            Event::ModelServer(read) => self.model_server(*read, th),
            Event::Tick { at } => self.tick(th, at),
        }
    }

    /// Applies a message from the loop that the intake passed on as said (see
    /// [`Event::Reported`]).
    fn reported(&mut self, message: crate::protocol::Message, at: Moment) -> Applied {
        use crate::protocol::Message;
        let publish = match message {
            Message::Instrumentation(report) => {
                let news = self.frameworks.report(&report).then(|| Box::new(report));
                Publish::Instrumentation(news)
            }
            Message::InstrumentationError { framework, count } => Publish::InstrumentationErrors {
                framework,
                count,
                total: self.frameworks.errors(framework, count),
            },
            // The intake keeps these itself and does not pass them on. Listed, not
            // matched by `_`: a new message is a compile error here until the state
            // says what it does with it.
            Message::IterationStart { .. }
            | Message::Success { .. }
            | Message::Failure { .. }
            | Message::Outcomes(_)
            | Message::Population { .. }
            | Message::IterationEnd { .. }
            | Message::Done
            | Message::Metric { .. }
            | Message::Iterations(_)
            | Message::LlmCall(_)
            | Message::Dropped { .. }
            | Message::EvaluationStart(_)
            | Message::EvaluationEnd(_) => {
                tracing::error!(
                    ?message,
                    "a message the intake keeps reached the state; ignored"
                );
                Publish::Nothing
            }
        };
        self.found(Findings::default(), at, publish)
    }

    /// What applying an event of `at` changed: the rules' `findings`, kept in the
    /// event log (the alerts that fired or resolved, the warnings), and `publish`.
    /// The last step of applying an event, so that the event log keeps the order in
    /// which things happened.
    fn found(&mut self, findings: Findings, at: Moment, publish: Publish) -> Applied {
        self.keep(&findings, at);
        Applied {
            findings,
            publish,
            rejected: None,
        }
    }

    /// Keeps what the rules found applying an event of `at` in the event log.
    fn keep(&mut self, findings: &Findings, at: Moment) {
        if !findings.is_empty() {
            self.ledger.log_findings(findings, at.wall);
        }
    }

    /// LoopStalled on the liveness at `at`.
    fn stall(&mut self, th: &Thresholds, at: Moment) -> Findings {
        self.evaluator
            .on_clock(self.liveness.activity(at.mono), th, at)
    }

    /// LoopStalled again after an iteration started or ended, when it is raised: a
    /// loop that moves has not stalled. (Quiet otherwise, to keep the loop's events
    /// cheap; the clock evaluates it anyway.)
    fn stall_over(&mut self, th: &Thresholds, at: Moment, findings: &mut Findings) {
        if self.evaluator.state(AlertName::LoopStalled) != AlertState::Inactive {
            findings.extend(self.stall(th, at));
        }
    }

    fn iteration_started(&mut self, number: u64, at: Moment, th: &Thresholds) -> Applied {
        // Seen already, or ended already: the hub notes the latest start whenever it
        // settles, whether or not its iteration has ended since.
        if number <= self.ledger.last_iteration {
            return Applied::just(Publish::Nothing);
        }
        self.liveness.iteration_started(number, at.mono);
        self.ledger.last_iteration = number;
        let mut findings = Findings::default();
        self.stall_over(th, at, &mut findings);
        // Built in place: see the end of `apply_iteration`.
        self.keep(&findings, at);
        Applied {
            findings,
            publish: Publish::IterationStarted {
                number,
                at: at.wall,
            },
            rejected: None,
        }
    }

    /// Applies [`Event::Iteration`] by reference: what [`RunState::apply`] does with
    /// it, for the hub, which thus need not move it out of what the queue handed over.
    pub(super) fn apply_iteration(&mut self, completed: &Completed, th: &Thresholds) -> Applied {
        let summary = &completed.summary;
        let at = completed.ended;
        let unix = unix_seconds(at.wall);
        if let Some(best) = completed.best_sharpe {
            let spend = self.llm.spend_usd();
            self.ledger
                .observe_sharpe(best, summary.number, unix, spend);
        }
        let more = &mut self.more_reasons;
        self.ledger
            .complete(completed.count, completed.duration, summary, |entry| {
                entry.add_all(more);
                completed.reasons.add_to(entry);
            });
        if !more.is_empty() {
            *more = ReasonCounts::default();
        }
        self.ledger.last_iteration = self.ledger.last_iteration.max(summary.number);
        self.liveness.iteration_ended(summary.number, at.mono);
        let mut findings = self.evaluator.on_iteration(summary, th, at);
        self.stall_over(th, at, &mut findings);
        let evaluator = &mut self.evaluator;
        let judged = Judged {
            rolling: evaluator.rolling(),
            baselines: evaluator.baselines(),
            new_baseline: evaluator.take_new_baseline(),
            low_diversity_streak: evaluator.low_diversity_streak(),
            firing: evaluator.firing(),
        };
        let point = history_point(
            summary,
            &judged,
            &self.latest,
            self.ledger.best_sharpe,
            unix,
        );
        let point = HistoryPoint {
            evaluation_occupancy: self.evaluations.take_peak_occupancy(),
            ..point
        };
        self.ledger.push_history(point);
        self.published.iteration = Some(IterationValues {
            latest: self.ledger.last_iteration,
            outcomes: (self.ledger.successes, self.ledger.failures),
            summary: *summary,
            ended: unix,
            judged,
            best_sharpe: self.ledger.best_sharpe,
        });
        // Built in place rather than through `found`, as on every path an iteration
        // takes: a `Publish` made first and moved into `Applied` is read back (16 bytes
        // at a time) just after its tag was stored (one byte), a store-forwarding
        // stall as costly as the rest of the move.
        self.keep(&findings, at);
        Applied {
            findings,
            publish: Publish::Iteration,
            rejected: None,
        }
    }

    fn champion_changed(&mut self, change: ChampionChange, th: &Thresholds) -> Applied {
        let at = change.at;
        let spend = self.llm.spend_usd();
        self.ledger.champion_changed(
            &change.champion,
            change.iteration,
            change.changes,
            at.wall,
            spend,
        );
        let evidence = self.llm.champion_changed(change.changes, at.mono);
        let mut findings = Findings::default();
        let llm = self.llm.any_calls();
        if llm {
            findings = self.evaluator.on_llm(&evidence, th, at);
            self.published.llm = evidence;
        }
        self.published.champion = Some(change);
        self.found(findings, at, Publish::ChampionChanged { llm })
    }

    fn host(&mut self, reading: HostReading, th: &Thresholds) -> Applied {
        self.latest.host = Some(reading.sample);
        let findings = self.evaluator.on_host_memory(
            reading.memory_used,
            reading.memory_limit,
            th,
            reading.at,
        );
        let point = self.time_point(&reading);
        self.samples.push(point);
        self.published.host = Some(reading);
        self.found(findings, reading.at, Publish::Host)
    }

    /// The point the page's time axis draws for a host reading: the reading, and the
    /// containers, LLM calls, iterations and alerts as they stand.
    fn time_point(&self, reading: &HostReading) -> TimePoint {
        let at = reading.at.wall;
        let latest = &self.latest;
        TimePoint {
            elapsed_seconds: at
                .duration_since(self.ledger.started_at)
                .unwrap_or_default()
                .as_secs_f64(),
            at: unix_seconds(at),
            memory_usage_bytes: reading.sample.loop_rss_bytes as f64,
            cpu_usage_percent: reading.sample.loop_cpu_percent,
            active_containers: latest.active_containers,
            container_memory_bytes: latest.container_memory_bytes,
            container_cpu_percent: latest.container_cpu_percent,
            cleanup_failures: latest.cleanup_failures,
            llm_calls: self.llm.calls(),
            llm_cost_usd: self.llm.spend_usd(),
            iterations: self.ledger.iterations,
            alerts_firing: self.evaluator.firing(),
            gpu_loop_memory_bytes: self.gpus.loop_memory_bytes().map(|b| b as f64),
        }
    }

    /// Keeps a GPU sample: the new ECC errors are counted (the uncorrected ones
    /// also in the event log), a device newly lost goes to the event log, and
    /// GPUMemoryHigh and GPUErrors are judged on it.
    fn gpu_sample(
        &mut self,
        sample: &crate::sample::GpuSample,
        period: Duration,
        th: &Thresholds,
        at: Moment,
    ) -> Applied {
        let resumed = self.gpus.sampled(at.mono, period);
        let (errors, lost) = self.gpus.sample(sample);
        self.gpu_events(&errors, at);
        let alerting = errors
            .iter()
            .fold(0u64, |sum, e| sum.saturating_add(e.alerting));
        let findings =
            self.evaluator
                .on_gpu(Some(self.gpus.loop_memory_fraction()), alerting, th, at);
        for device in &lost {
            self.ledger.push_event(LogEntry {
                at: at.wall,
                iteration: self.ledger.last_iteration,
                kind: LogEntryKind::GpuLost {
                    gpu: device.index,
                    uuid: device.uuid.to_string(),
                },
            });
        }
        self.published.gpu = GpuPublished {
            devices: self.gpus.answering(),
            errors,
            lost,
        };
        self.found(findings, at, Publish::Gpu { resumed })
    }

    /// Keeps Xid errors and uncorrected ECC errors in the event log (corrected ones
    /// are only counted: a device may correct many, and each is harmless).
    fn gpu_events(&mut self, errors: &[GpuErrors], at: Moment) {
        for e in errors.iter().filter(|e| e.kind != GpuErrorKind::Corrected) {
            self.ledger.push_event(LogEntry {
                at: at.wall,
                iteration: self.ledger.last_iteration,
                kind: LogEntryKind::GpuError {
                    gpu: e.gpu.as_ref().map(|g| g.index),
                    uuid: e.gpu.as_ref().map(|g| g.uuid.to_string()),
                    error: e.kind.as_str(),
                    count: e.count,
                    alerting: e.alerting,
                    code: e.code,
                },
            });
        }
    }

    /// A read of a model server, placed on the page's axes as the run stands; then
    /// LLMServerSaturated on the servers' saturation.
    fn model_server(&mut self, read: ServerRead, th: &Thresholds) -> Applied {
        let at = read.at.wall;
        let when = crate::servers::book::When {
            at: unix_seconds(at),
            elapsed_seconds: at
                .duration_since(self.ledger.started_at)
                .unwrap_or_default()
                .as_secs_f64(),
            iterations: self.ledger.iterations,
        };
        let Some((change, servers)) =
            self.servers
                .read(read.index, read.outcome, when, read.at.mono, th)
        else {
            return Applied::just(Publish::Nothing);
        };
        let saturated = self.servers.most_saturated(read.at.mono);
        let subject = saturated.as_ref().map(|(name, _, _)| Arc::clone(name));
        let findings = self.evaluator.on_model_servers(
            saturated.map(|(_, held, usage)| (held, usage)),
            || subject.unwrap_or_else(|| Arc::from("model server")),
            th,
            read.at,
        );
        self.published.model_server = Some(ModelServerPublished { change, servers });
        self.found(findings, read.at, Publish::ModelServer)
    }

    fn process_sweep(&mut self, sweep: ProcessSweep) -> Applied {
        self.housekeeping.process_sweep(
            sweep.given_up,
            sweep.cleaned,
            sweep.failed,
            sweep.remaining,
        );
        if let Some(left_behind) = sweep.left_behind {
            self.ledger.processes_left_behind = left_behind;
        }
        let publish = Publish::ProcessSweep {
            cleaned: sweep.cleaned,
            failed: sweep.failed,
            remaining: sweep.remaining,
        };
        self.found(Findings::default(), sweep.at, publish)
    }

    fn loop_started(&mut self, at: Moment, th: &Thresholds) -> Applied {
        self.liveness.loop_started(at.mono);
        // A stall of the previous process is over.
        let mut findings = self.stall(th, at);
        let restart = self.ledger.exits_pending_restart().map(|exit| {
            findings.extend(self.evaluator.on_restart(th, at));
            let recent = self.evaluator.recent_restarts();
            self.ledger.push_event(LogEntry {
                at: at.wall,
                iteration: self.ledger.last_iteration,
                kind: LogEntryKind::Restarted {
                    reason: exit.reason,
                    status: exit.shell_status(),
                    recent_restarts: recent,
                },
            });
            (exit.reason, recent)
        });
        self.found(
            findings,
            at,
            Publish::LoopStarted {
                at: at.wall,
                restart,
            },
        )
    }

    fn loop_restarting(&mut self, mut exit: LoopExit, th: &Thresholds, at: Moment) -> Applied {
        exit.said_done |= self.liveness.is_done();
        exit.restarted = true;
        self.liveness.loop_down();
        self.ledger.record_exit(exit);
        let (findings, evaluations) = self.all_evaluations_gone(th, at);
        self.found(findings, at, Publish::LoopRestarting { exit, evaluations })
    }

    fn loop_exited(&mut self, mut exit: LoopExit, th: &Thresholds, at: Moment) -> Applied {
        exit.said_done |= self.liveness.is_done();
        let mut findings = self.evaluator.on_exit(&exit, th, at);
        exit.restarted = false;
        self.ledger.loop_exit = Some(exit);
        self.ledger.record_exit(exit);
        // Nothing more is coming.
        let newly_done = self.liveness.say_done();
        if newly_done {
            findings.extend(self.stall(th, at));
        }
        let (gone, evaluations) = self.all_evaluations_gone(th, at);
        findings.extend(gone);
        self.found(
            findings,
            at,
            Publish::LoopExited {
                exit,
                newly_done,
                evaluations,
            },
        )
    }

    /// The loop's process ended, and its evaluations in flight with it: each ends as
    /// failed, its process gone. EvaluationHung again when it is raised; the gauges
    /// when any evaluation ended.
    fn all_evaluations_gone(&mut self, th: &Thresholds, at: Moment) -> (Findings, bool) {
        let gone = self.evaluations.all_gone(at.mono);
        if gone.is_empty() {
            return (Findings::default(), false);
        }
        let (findings, limit) = self.hung_again(th, at);
        let gauges = self.evaluation_gauges(at, limit, None, None);
        for (id, finished) in gone {
            if finished.interrupted {
                gauges.interrupted.push((id, finished.duration));
            }
            gauges.gone.push(finished);
        }
        (findings, true)
    }

    /// The supervisor found evaluation `id`'s process gone: it ends as failed. An id
    /// no longer in flight (it ended meanwhile) changes nothing and is not counted:
    /// the loop sent nothing wrong.
    fn evaluation_gone(&mut self, id: &str, th: &Thresholds, at: Moment) -> Applied {
        let Ok(finished) = self.evaluations.gone(id, at.mono) else {
            return Applied::just(Publish::Nothing);
        };
        let (findings, limit) = self.hung_again(th, at);
        let gauges = self.evaluation_gauges(at, limit, None, None);
        if finished.interrupted {
            gauges.interrupted.push((id.into(), finished.duration));
        }
        gauges.gone.push(finished);
        self.found(findings, at, Publish::Evaluations)
    }

    fn done(&mut self, th: &Thresholds, at: Moment) -> Applied {
        if !self.liveness.say_done() {
            return Applied::just(Publish::Nothing);
        }
        let findings = self.stall(th, at);
        self.found(findings, at, Publish::Done)
    }

    /// Books an LLM call: one the loop reported (`started` is `None`), one the proxy
    /// refused, or one the proxy started as `started`, whose reservation is settled
    /// first (given way to its cost, or charged to the budget when its usage is
    /// unknown), so that the evidence and the warnings count it. `blocking` is the
    /// mark of the budget's first refusal for good, when this call is it: kept after
    /// the warnings it reached.
    fn llm_call(
        &mut self,
        call: Box<LlmCall>,
        started: Option<u64>,
        blocking: Option<BudgetMark>,
        th: &Thresholds,
        at: Moment,
    ) -> Applied {
        if let Some(id) = started {
            self.llm.settle_reservation(id, call.usage_missing());
        }
        // What its answer said of the rate limits, first: the evidence counts it.
        let headroom = call.headroom.as_ref().map(|headroom| {
            self.llm
                .headroom(&call.provider, &call.request_model, headroom, at.mono)
        });
        if let Some(first) = call.time_to_first_chunk {
            self.servers.proxy_first_chunk(first.as_secs_f64());
        }
        let pricing = th.llm().pricing(&call);
        let (labels, evidence) = self
            .llm
            .record(&call, pricing, th.llm_error_calls(), at.mono);
        let findings = self.evaluator.on_llm(&evidence, th, at);
        self.published.llm = evidence;
        let (warnings, budget) = self.llm.new_budget_warnings();
        let marks: Vec<BudgetMark> = budget
            .into_iter()
            .flat_map(|budget| {
                warnings.iter().map(move |percent| BudgetMark {
                    event: BudgetEvent::Warning,
                    percent: Some(*percent),
                    spent_usd: evidence.budget_spend_usd,
                    budget_usd: budget.usd,
                    action: budget.action,
                })
            })
            .chain(blocking)
            .collect();
        self.budget_marks(&marks, at);
        self.found(
            findings,
            at,
            Publish::Llm(Box::new(LlmPublish {
                call,
                labels,
                pricing,
                budget: marks,
                headroom,
            })),
        )
    }

    /// A call asks to start: in flight, its worst case reserved, or refused by a
    /// budget that blocks and booked as `blocked` (the first refusal for good marked)
    /// or `deferred`.
    fn llm_started(
        &mut self,
        id: u64,
        request: Box<CallRequest>,
        th: &Thresholds,
        at: Moment,
    ) -> Applied {
        let worst = worst_case_usd(&request, th.llm());
        let Err(refusal) = self.llm.call_started(id, at.mono, worst) else {
            return self.in_flight(at);
        };
        let CallRequest {
            provider,
            operation,
            model,
            role,
            ..
        } = *request;
        let mut call = LlmCall::new(model, Duration::ZERO)
            .with_provider(provider)
            .with_operation(operation);
        call.role = role;
        let call = if refusal.deferred {
            call.with_deferred()
        } else {
            call.with_blocked()
        };
        let first = !refusal.deferred
            && self
                .llm
                .budget_summary()
                .is_some_and(|b| b.blocked_calls == 1);
        let blocking = first.then(|| BudgetMark {
            event: BudgetEvent::Blocking,
            percent: None,
            spent_usd: refusal.spent_usd,
            budget_usd: refusal.budget_usd,
            action: th
                .llm_budget()
                .map_or(crate::llm::BudgetAction::Block, |b| b.action),
        });
        self.llm_call(Box::new(call), None, blocking, th, at)
    }

    /// Keeps the budget's marks in the event log.
    fn budget_marks(&mut self, marks: &[BudgetMark], at: Moment) {
        for mark in marks {
            self.ledger.push_event(LogEntry {
                at: at.wall,
                iteration: self.ledger.last_iteration,
                kind: LogEntryKind::LlmBudget(*mark),
            });
        }
    }

    /// Whether call `id` was admitted (it is in flight) or refused (a refused call
    /// never is), as its start was just applied.
    pub(super) fn llm_admission(&self, id: u64) -> crate::llm::Admission {
        match self.llm.refusal_of(id) {
            Some(refusal) if !self.llm.is_in_flight(id) => crate::llm::Admission::Blocked(refusal),
            _ => crate::llm::Admission::Admitted(id),
        }
    }

    fn in_flight(&self, at: Moment) -> Applied {
        let (calls, oldest) = self.llm.in_flight(at.mono);
        Applied::just(Publish::InFlight { calls, oldest })
    }

    /// An evaluation ended: EvaluationHung again when it is raised (the hung
    /// evaluation may be the one that ended).
    fn evaluation_ended(
        &mut self,
        id: &str,
        outcome: Ended,
        reason: Option<Box<str>>,
        reported: Option<f64>,
        th: &Thresholds,
        at: Moment,
    ) -> Applied {
        let finished = match self.evaluations.end(id, outcome, reported, at.mono) {
            Ok(finished) => finished,
            Err(refused) => return self.refused(refused),
        };
        let (findings, limit) = self.hung_again(th, at);
        let gauges = self.evaluation_gauges(at, limit, Some((finished, reason)), None);
        if finished.interrupted {
            gauges.interrupted.push((id.into(), finished.duration));
        }
        self.found(findings, at, Publish::Evaluations)
    }

    /// EvaluationHung again after evaluations ended, when it is raised (the hung
    /// evaluation may be one that ended), and the limit it was judged against.
    fn hung_again(&mut self, th: &Thresholds, at: Moment) -> (Findings, Option<Duration>) {
        if self.evaluator.state(AlertName::EvaluationHung) == AlertState::Inactive {
            return (Findings::default(), None);
        }
        let (findings, limit) = self.hung(th, at);
        (findings, Some(limit))
    }

    /// An evaluation event turned away, in the iteration it was sent in.
    fn refused(&self, refused: Refused) -> Applied {
        let (kind, value) = match refused {
            Refused::OverLimit => (
                Rejection::EvaluationOverLimit,
                self.evaluations.in_flight() as f64,
            ),
            Refused::Duplicate => (Rejection::EvaluationDuplicate, f64::NAN),
            Refused::Unknown => (Rejection::EvaluationUnknown, f64::NAN),
            // Counted with its start.
            Refused::EndOfOverLimit => return Applied::just(Publish::Nothing),
        };
        Applied::rejected(Rejected {
            kind,
            value,
            iteration: self.ledger.last_iteration,
        })
    }

    /// EvaluationHung at `at`, and the limit it was judged against.
    fn hung(&mut self, th: &Thresholds, at: Moment) -> (Findings, Duration) {
        let limit = evaluation_limit(self.evaluations.p95(), th);
        self.hung_limit = limit;
        let oldest = self.evaluations.oldest(at.mono);
        let findings = self.evaluator.on_evaluations(
            oldest.as_ref().map(|o| o.age),
            limit,
            || {
                oldest
                    .as_ref()
                    .map_or_else(|| Arc::from("evaluation"), Oldest::subject)
            },
            th,
            at,
        );
        (findings, limit)
    }

    /// The evaluations' gauges at `at`, with what an event added, as published (the
    /// ones published before replaced); the caller adds the evaluations that ended.
    fn evaluation_gauges(
        &mut self,
        at: Moment,
        limit: Option<Duration>,
        finished: Option<(Finished, Option<Box<str>>)>,
        queued: Option<Duration>,
    ) -> &mut EvaluationGauges {
        let gauges = &mut self.published.evaluations;
        gauges.in_flight = self.evaluations.in_flight();
        gauges.oldest = self.evaluations.oldest_age(at.mono).unwrap_or_default();
        gauges.workers = self.evaluations.workers();
        gauges.limit = limit;
        gauges.finished = finished;
        gauges.queued = queued;
        // Cleared, not replaced: their room is kept for the next.
        gauges.gone.clear();
        gauges.interrupted.clear();
        gauges
    }

    /// What changes with time alone: a stall, the LLM windows, the restart window,
    /// the evaluations' ages and workers.
    fn tick(&mut self, th: &Thresholds, at: Moment) -> Applied {
        let mut findings = self.stall(th, at);
        // The GPU alerts on the clock too: GPUErrors' window moves on, and readings
        // no sample renewed (a sampler blocked inside NVML) stop standing.
        let mut gpu_gone = None;
        if self.gpus.seen() {
            gpu_gone = self.gpus.gone_stale(at.mono);
            let memory = gpu_gone.map(|_| None);
            findings.extend(self.evaluator.on_gpu(memory, 0, th, at));
        }
        self.evaluations.forget_idle_workers(at.mono);
        let (hung, limit) = self.hung(th, at);
        findings.extend(hung);
        self.evaluation_gauges(at, Some(limit), None, None);
        let (calls, oldest) = self.llm.in_flight(at.mono);
        let llm = self.llm.any_calls();
        if llm {
            let evidence = self.llm.evidence(at.mono);
            findings.extend(self.evaluator.on_llm(&evidence, th, at));
            self.published.llm = evidence;
        }
        findings.extend(self.evaluator.on_restart_window(th, at));
        let recent_restarts = self.evaluator.recent_restarts();
        self.found(
            findings,
            at,
            Publish::Tick {
                calls,
                oldest,
                llm,
                recent_restarts,
                gpu_gone,
            },
        )
    }

    // What readers see. None of these changes the state.

    /// The run so far, summarised at `now`, failure reasons named by `names`.
    pub(super) fn summary(&self, run_id: &str, names: &ReasonNames, now: Moment) -> RunSummary {
        let mut summary = self.ledger.summary(run_id, names, now.wall);
        summary.llm = self.llm.summary(now.mono);
        summary
    }

    /// The evaluator's whole state.
    pub(super) fn evaluation(&self) -> Evaluation {
        let evaluator = &self.evaluator;
        Evaluation {
            rolling: evaluator.rolling(),
            alerts: evaluator.states(),
            baselines: evaluator.baselines(),
            warnings: evaluator.warnings_active(),
            low_diversity_streak: evaluator.low_diversity_streak(),
        }
    }

    /// While EvaluationHung fires: the evaluations in flight at `now` past its limit,
    /// oldest first.
    pub(super) fn hung_evaluations(&self, now: Moment) -> Vec<HungEvaluation> {
        if !self.is_firing(AlertName::EvaluationHung) {
            return Vec::new();
        }
        self.evaluations.over(self.hung_limit, now.mono)
    }

    /// The evaluations, as the page and the JSON show them, at `now`.
    pub(super) fn evaluations_view(&self, now: Moment) -> EvaluationsView {
        let (workers, busy_workers) = self.evaluations.workers();
        let (killed, killed_total) = self.evaluations.killed();
        let bounds = crate::catalog::EVALUATION_SECONDS_BOUNDARIES;
        let durations = self
            .evaluations
            .buckets()
            .into_iter()
            .enumerate()
            .map(|(i, count)| DurationBucket {
                le: bounds.get(i).copied(),
                count,
            })
            .collect();
        EvaluationsView {
            in_flight: self.evaluations.in_flight(),
            oldest: self.evaluations.oldest_rows(now.mono),
            hung_limit_seconds: self.hung_limit.as_secs_f64(),
            workers,
            busy_workers,
            slowest: self.evaluations.slowest(),
            killed,
            killed_total,
            durations,
        }
    }

    /// Whether the alert is firing.
    pub(super) fn is_firing(&self, alert: AlertName) -> bool {
        self.evaluator.state(alert) == AlertState::Firing
    }

    /// Whether the loop has said it is done.
    pub(super) fn is_done(&self) -> bool {
        self.liveness.is_done()
    }

    /// When the run started.
    pub(super) fn started_at(&self) -> SystemTime {
        self.ledger.started_at
    }

    /// The recent iterations' points, oldest first.
    pub(super) fn history(&self) -> Vec<HistoryPoint> {
        self.ledger.history()
    }

    /// The host samples over the whole run, thinned, oldest first; and how many were
    /// left out to keep the bound.
    pub(super) fn samples(&self) -> (Vec<TimePoint>, u64) {
        (self.samples.points(), self.samples.dropped())
    }

    /// The best-so-far curve.
    pub(super) fn progress(&self) -> Progress {
        self.ledger.progress.clone()
    }

    /// The event log, oldest first, and how many entries were dropped for its bound.
    pub(super) fn events(&self) -> (Vec<LogEntry>, u64) {
        self.ledger.events()
    }

    /// Failure reasons over the last completed iterations, named by `names`.
    pub(super) fn recent_failure_reasons(
        &self,
        names: &ReasonNames,
    ) -> std::collections::BTreeMap<String, u64> {
        self.ledger.recent_failure_reasons(names)
    }

    /// This run's running containers at the last sample.
    /// Every GPU the sampler read.
    pub(super) fn gpus(&self) -> Vec<crate::export::LiveGpu> {
        self.gpus.view()
    }

    pub(super) fn live_containers(&self) -> Vec<LiveContainer> {
        self.housekeeping.containers.clone()
    }

    /// What the process sweeps found and did.
    pub(super) fn process_tally(&self) -> ProcessTally {
        self.housekeeping.tally
    }

    /// The model servers and their histories.
    pub(super) fn model_servers(&self) -> crate::export::ModelServersView {
        self.servers.view()
    }

    /// The frameworks the zero-code instrumentation reported on.
    pub(super) fn instrumentation(&self) -> Vec<crate::export::InstrumentedFramework> {
        self.frameworks.list()
    }

    /// The processes the sweeps gave up on: not to be signalled again.
    pub(super) fn processes_given_up(&self) -> std::collections::HashSet<(u32, u64)> {
        self.housekeeping.given_up.clone()
    }
}

/// The point the page draws for a completed iteration, which ended at `at` (Unix
/// seconds).
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
        evaluation_occupancy: None,
    }
}

#[cfg(test)]
mod evaluation_tests;
#[cfg(test)]
mod tests;
