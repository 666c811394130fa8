//! The part of the monitor that publishes: loopwatch's instruments, recorded from
//! what applying an event returned ([`Publish`]), and the log lines that go with it.
//! It holds no state of its own beyond the pipeline.

use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;

use crate::alerts::AlertState;
use crate::catalog::GenAiMeasure;
use crate::containers::{ContainerReading, StatsSource};
use crate::evaluate::{Transition, WarningChange};
use crate::pipeline::Pipeline;
use crate::records::{unix_seconds, Ended, IterationSummary, LoopExit};

use super::deliver::FindingSink;
use super::event::{ChampionChange, HostReading};
use super::state::{
    EvaluationGauges, GpuErrorKind, GpuErrors, Judged, Publish, Published, PROCESS_GONE,
};
use crate::protocol::{Framework, Instrumentation, InstrumentationState};

/// loopwatch's instruments and the pipeline that serves them.
#[derive(Debug)]
pub(super) struct Publisher {
    pub(super) pipeline: Pipeline,
}

impl Publisher {
    /// How long an evaluation may run before EvaluationHung fires.
    pub(super) fn evaluation_limit(&self, limit: std::time::Duration) {
        self.pipeline
            .instruments
            .loopwatch_evaluation_hung_limit_seconds
            .record(limit.as_secs_f64(), &[]);
    }

    /// Shows what applying one event changed: `publish`, and the values it names in
    /// `published` (the state's, read by reference while the hub holds the state).
    pub(super) fn publish(&self, publish: &Publish, published: &Published) {
        match publish {
            Publish::Nothing => {}
            Publish::IterationStarted { number, at } => self.iteration_started(*number, *at),
            Publish::Iteration => {
                if let Some(values) = &published.iteration {
                    let i = &self.pipeline.instruments;
                    i.iteration_number.set(values.latest as f64);
                    i.loopwatch_best_sharpe.set_present(values.best_sharpe);
                    self.iteration(&values.summary, values.outcomes, values.ended);
                    self.judged(&values.judged);
                }
            }
            Publish::ChampionChanged { llm } => {
                if let Some(change) = &published.champion {
                    self.champion_changed(change);
                }
                if *llm {
                    self.llm_evidence(&published.llm);
                }
            }
            Publish::Host => {
                if let Some(reading) = &published.host {
                    self.host(reading);
                }
            }
            Publish::Containers(reading) => self.containers(reading),
            Publish::Gpu { resumed } => {
                let gpu = &published.gpu;
                if *resumed {
                    tracing::info!(
                        gpus = gpu.devices.len(),
                        "GPU samples come again; the GPU series are back"
                    );
                }
                self.gpus(&gpu.devices);
                gpu.errors.iter().for_each(|e| self.gpu_errors(e));
                for device in &gpu.lost {
                    tracing::error!(
                        gpu = device.index,
                        uuid = &*device.uuid,
                        "a GPU stopped answering (NVML: GPU is lost); its series are dropped, the other GPUs are still sampled"
                    );
                }
            }
            Publish::GpuXid(errors) => self.gpu_errors(errors),
            Publish::GpuGone { quiet } => self.gpus_gone(*quiet),
            Publish::Orphans(orphans) => self.orphaned_containers(*orphans),
            Publish::ProcessSweep {
                cleaned,
                failed,
                remaining,
            } => self.process_sweep(*cleaned, *failed, *remaining),
            Publish::LoopStarted { at, restart } => {
                self.loop_started(*at);
                if let Some((reason, recent)) = restart {
                    self.restarted(reason.restart_label(), *recent);
                }
            }
            Publish::LoopRestarting { exit, evaluations } => {
                tracing::warn!(code = ?exit.code, signal = ?exit.signal, reason = ?exit.reason, "the loop ended; it will be started again");
                if *evaluations {
                    self.evaluations(&published.evaluations);
                }
            }
            Publish::LoopExited {
                exit,
                newly_done,
                evaluations,
            } => {
                log_exit(exit);
                if *newly_done {
                    self.done();
                }
                if *evaluations {
                    self.evaluations(&published.evaluations);
                }
            }
            Publish::Done => self.done(),
            Publish::Llm(llm) => {
                if let (Some(labels), Some(headroom)) = (&llm.headroom, &llm.call.headroom) {
                    self.llm_headroom(labels, headroom);
                }
                self.llm_call(&llm.call, &llm.labels, llm.pricing, &published.llm);
                llm.budget.iter().for_each(log_budget_mark);
            }
            Publish::InFlight { calls, oldest } => self.llm_in_flight(*calls, *oldest),
            Publish::Evaluations => self.evaluations(&published.evaluations),
            Publish::Instrumentation(news) => {
                if let Some(report) = news {
                    log_instrumentation(report);
                }
            }
            Publish::InstrumentationErrors {
                framework,
                count,
                total,
            } => self.instrumentation_errors(*framework, *count, *total),
            Publish::ModelServer => {
                if let Some(read) = &published.model_server {
                    self.model_server(&read.change, &read.servers);
                }
            }
            Publish::Tick {
                calls,
                oldest,
                llm,
                recent_restarts,
                gpu_gone,
            } => {
                self.llm_in_flight(*calls, *oldest);
                if *llm {
                    self.llm_evidence(&published.llm);
                }
                self.recent_restarts(*recent_restarts);
                self.evaluations(&published.evaluations);
                if gpu_gone.is_some() {
                    self.gpus_gone(*gpu_gone);
                }
            }
        }
    }

    /// Errors caught inside a framework's instrumentation: counted, and logged the
    /// first time (the child logs each of its own once too).
    fn instrumentation_errors(&self, framework: Framework, count: u64, total: u64) {
        let i = &self.pipeline.instruments;
        i.loopwatch_instrumentation_errors_total
            .add(count, &[KeyValue::new("framework", framework.as_str())]);
        if total == count {
            tracing::warn!(
                framework = framework.as_str(),
                count,
                "the loop's {framework} instrumentation raised (caught: the loop runs on, what it would have reported may be missing); counted in loopwatch_instrumentation_errors_total"
            );
        }
    }

    /// An iteration starts, at `at`.
    fn iteration_started(&self, number: u64, at: SystemTime) {
        let i = &self.pipeline.instruments;
        i.iteration_number.set(number as f64);
        i.loopwatch_iteration_start_timestamp_seconds
            .set(unix_seconds(at));
    }

    /// A completed iteration's values, and the run's strategy `outcomes` (successes,
    /// failures) after it; it ended at `ended` (seconds since the Unix epoch).
    fn iteration(&self, summary: &IterationSummary, outcomes: (u64, u64), ended: f64) {
        let i = &self.pipeline.instruments;
        i.loopwatch_iteration_end_timestamp_seconds.set(ended);
        i.execution_time_seconds.set(summary.duration.as_secs_f64());
        // The run's totals, as the ledger counts them: a store each, not an add.
        i.strategy_success_total.set_total(outcomes.0);
        i.strategy_failure_total.set_total(outcomes.1);
        // An iteration without valid values leaves the previous ones standing.
        i.sharpe_ratio.set_present(summary.mean_sharpe);
        i.max_drawdown.set_present(summary.mean_max_drawdown);
        i.population_diversity.set_present(summary.diversity);
        i.unique_strategy_count
            .set_present(summary.unique_strategies.map(|u| u as f64));
        i.champion_staleness_iterations
            .set(summary.champion_staleness as f64);
    }

    /// The champion changed (`changes` times, the last as the change says).
    fn champion_changed(&self, change: &ChampionChange) {
        let i = &self.pipeline.instruments;
        i.loopwatch_champion_changes_total.add(change.changes);
        i.loopwatch_champion_changed_timestamp_seconds
            .set(unix_seconds(change.at.wall));
        tracing::info!(
            iteration = change.iteration,
            champion = &*change.champion,
            "champion changed"
        );
    }

    /// The evaluator's rolling values, streak, and baselines when one was captured.
    fn judged(&self, judged: &Judged) {
        let i = &self.pipeline.instruments;
        let rolling = &judged.rolling;
        i.loopwatch_rolling_window_iterations
            .set(rolling.iterations as f64);
        i.loopwatch_rolling_window_outcomes
            .set(rolling.outcomes as f64);
        i.success_rate_10iter.set_present(rolling.success_rate);
        i.avg_sharpe_10iter.set_present(rolling.avg_sharpe);
        i.avg_diversity_10iter.set_present(rolling.avg_diversity);
        i.loopwatch_rolling_execution_time_seconds
            .set_present(rolling.mean_seconds);
        i.loopwatch_low_diversity_streak_iterations
            .set(judged.low_diversity_streak as f64);
        if judged.new_baseline {
            for (watched, baseline) in judged.baselines {
                if let Some(baseline) = baseline {
                    i.loopwatch_baseline
                        .record(baseline, &[KeyValue::new("metric", watched.metric())]);
                }
            }
        }
    }

    /// One host and process sample, and the memory HighMemoryUsage compares.
    fn host(&self, reading: &HostReading) {
        let i = &self.pipeline.instruments;
        let sample = &reading.sample;
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
        if let Some((open, max)) = reading.file_descriptors {
            i.process_open_fds.set(open as f64);
            i.process_max_fds.set(max as f64);
        }
        i.loopwatch_sampler_ticks_total.add(1);
        i.loopwatch_memory_used_bytes
            .set(reading.memory_used as f64);
        i.loopwatch_memory_limit_bytes
            .set(reading.memory_limit as f64);
    }

    /// What a process sweep found and did.
    fn process_sweep(&self, cleaned: usize, failed: usize, remaining: usize) {
        let i = &self.pipeline.instruments;
        i.loopwatch_processes_cleaned_total.add(cleaned as u64, &[]);
        i.loopwatch_process_cleanup_failures_total
            .add(failed as u64, &[]);
        i.orphaned_processes.record(remaining as f64, &[]);
    }

    /// The orphaned containers left after a sweep.
    fn orphaned_containers(&self, orphans: u64) {
        self.pipeline
            .instruments
            .orphaned_containers
            .set(orphans as f64);
    }

    /// The loop has said it is done.
    fn done(&self) {
        self.pipeline
            .instruments
            .loopwatch_loop_done
            .record(1.0, &[]);
    }

    /// The loop (a supervised loop's new process) starts now: it is not done.
    pub(super) fn loop_started(&self, at: SystemTime) {
        let i = &self.pipeline.instruments;
        i.loopwatch_loop_start_timestamp_seconds
            .record(unix_seconds(at), &[]);
        i.loopwatch_loop_done.record(0.0, &[]);
    }

    /// The supervisor restarted the loop; `recent` restarts are within the window.
    fn restarted(&self, reason: &'static str, recent: u64) {
        let i = &self.pipeline.instruments;
        i.loopwatch_loop_restarts_total
            .add(1, &[KeyValue::new("reason", reason)]);
        self.recent_restarts(recent);
    }

    /// Restarts within the restart window.
    fn recent_restarts(&self, recent: u64) {
        self.pipeline
            .instruments
            .loopwatch_loop_restarts_recent
            .record(recent as f64, &[]);
    }

    /// One LLM call: the GenAI histograms, the calls, cost, token and rate-limit
    /// counters (calls, cost and tokens by role too), and the evidence gauges after
    /// it. An abandoned call did not end, so
    /// it has no operation duration; it is counted under its own outcome.
    fn llm_call(
        &self,
        call: &crate::llm::LlmCall,
        labels: &crate::llm::meter::CallLabels,
        pricing: crate::llm::Pricing,
        evidence: &crate::llm::meter::LlmEvidence,
    ) {
        let i = &self.pipeline.instruments;
        let model = [KeyValue::new("model", labels.model.clone())];
        let role = KeyValue::new("role", labels.role.clone());
        let genai = [
            KeyValue::new("gen_ai.operation.name", call.operation.as_str()),
            KeyValue::new("gen_ai.provider.name", labels.provider.clone()),
            KeyValue::new("gen_ai.request.model", labels.request_model.clone()),
            KeyValue::new("gen_ai.response.model", labels.model.clone()),
        ];
        let error = call
            .error
            .map(|e| KeyValue::new("error.type", e.as_label().into_owned()));
        self.pipeline.genai.record(
            call.operation == crate::llm::Operation::Embeddings,
            &genai,
            error.as_ref(),
            |measure| genai_measure(call, measure),
        );
        let outcome = call.outcome().into_owned();
        if let Some(first) = call.time_to_first_chunk {
            i.loopwatch_llm_time_to_first_chunk_seconds
                .record(first.as_secs_f64(), &model);
        }
        i.loopwatch_llm_calls_total.add(
            1,
            &[
                KeyValue::new("model", labels.model.clone()),
                KeyValue::new("outcome", outcome),
                role.clone(),
            ],
        );
        if let Some(cost) = pricing.cost_usd {
            i.loopwatch_llm_cost_usd_total
                .add(cost, &[model[0].clone(), role.clone()]);
        }
        for (kind, tokens) in [("input", call.input_tokens), ("output", call.output_tokens)] {
            if let Some(tokens) = tokens {
                i.loopwatch_llm_tokens_total.add(
                    tokens,
                    &[model[0].clone(), role.clone(), KeyValue::new("type", kind)],
                );
            }
        }
        if let Some(fallback) = labels.role_fallback {
            i.loopwatch_llm_role_fallbacks_total
                .add(1, &[KeyValue::new("reason", fallback.as_str())]);
        }
        if pricing.unpriced_tokens > 0 {
            i.loopwatch_llm_unpriced_tokens_total
                .add(pricing.unpriced_tokens, &model);
        }
        if let Some(reasoning) = call.reasoning_tokens {
            i.loopwatch_llm_reasoning_tokens_total
                .add(reasoning, &model);
        }
        if call.usage_missing() {
            i.loopwatch_llm_usage_missing_total.add(1, &model);
        }
        if call.error == Some(crate::llm::LlmError::Status(429)) {
            i.loopwatch_llm_rate_limited_total.add(1, &model);
            if let Some(wait) = call.retry_after {
                i.loopwatch_llm_retry_after_seconds
                    .record(wait.as_secs_f64(), &model);
            }
        }
        self.llm_evidence(evidence);
    }

    /// The rate limits an answer stated: each figure it gave, by provider and model.
    fn llm_headroom(
        &self,
        labels: &crate::llm::meter::HeadroomLabels,
        headroom: &crate::llm::Headroom,
    ) {
        use crate::llm::headroom::Resource;
        let i = &self.pipeline.instruments;
        let who = [
            KeyValue::new("provider", labels.provider.clone()),
            KeyValue::new("model", labels.model.clone()),
        ];
        for (resource, limit) in &headroom.limits {
            let mut attributes = who.to_vec();
            attributes.push(KeyValue::new("limit", resource.as_str()));
            if let Some(reset) = limit.reset {
                i.loopwatch_llm_ratelimit_reset_seconds
                    .record(reset.as_secs_f64(), &attributes);
            }
            let (remaining, of) = if *resource == Resource::Requests {
                (
                    &i.loopwatch_llm_ratelimit_remaining_requests,
                    &i.loopwatch_llm_ratelimit_limit_requests,
                )
            } else {
                (
                    &i.loopwatch_llm_ratelimit_remaining_tokens,
                    &i.loopwatch_llm_ratelimit_limit_tokens,
                )
            };
            let attributes = if *resource == Resource::Requests {
                &who[..]
            } else {
                &attributes[..]
            };
            if let Some(n) = limit.remaining {
                remaining.record(n as f64, attributes);
            }
            if let Some(n) = limit.limit {
                of.record(n as f64, attributes);
            }
        }
    }

    /// What the LLM alerts judge.
    fn llm_evidence(&self, evidence: &crate::llm::meter::LlmEvidence) {
        let i = &self.pipeline.instruments;
        i.loopwatch_llm_ratelimit_headroom_ratio
            .record(evidence.headroom.unwrap_or(1.0), &[]);
        i.loopwatch_llm_recent_calls
            .record(evidence.recent_calls as f64, &[]);
        i.loopwatch_llm_recent_failures
            .record(evidence.recent_failures as f64, &[]);
        i.loopwatch_llm_spend_usd.record(evidence.spend_usd, &[]);
        i.loopwatch_llm_spend_last_hour_usd
            .record(evidence.spend_last_hour_usd, &[]);
        i.loopwatch_llm_spend_since_champion_usd
            .record(evidence.spend_since_champion_usd, &[]);
    }

    /// LLM calls in flight and the age of the oldest.
    fn llm_in_flight(&self, calls: usize, oldest: std::time::Duration) {
        let i = &self.pipeline.instruments;
        i.loopwatch_llm_in_flight.record(calls as f64, &[]);
        i.loopwatch_llm_oldest_in_flight_seconds
            .record(oldest.as_secs_f64(), &[]);
    }

    /// The evaluations in flight, their workers and limit, and what an event added:
    /// an evaluation that ended (its duration and outcome), a queue wait.
    fn evaluations(&self, gauges: &EvaluationGauges) {
        let i = &self.pipeline.instruments;
        i.loopwatch_evaluations_in_flight
            .record(gauges.in_flight as f64, &[]);
        i.loopwatch_evaluation_oldest_seconds
            .record(gauges.oldest.as_secs_f64(), &[]);
        let (workers, busy) = gauges.workers;
        i.loopwatch_evaluation_workers.record(workers as f64, &[]);
        let occupancy = if workers == 0 {
            0.0
        } else {
            busy as f64 / workers as f64
        };
        i.loopwatch_evaluation_worker_occupancy
            .record(occupancy, &[]);
        if let Some(limit) = gauges.limit {
            self.evaluation_limit(limit);
        }
        if let Some((finished, reason)) = &gauges.finished {
            i.loopwatch_evaluation_duration_seconds
                .record(finished.duration.as_secs_f64(), &[]);
            i.loopwatch_evaluations_total
                .add(1, &[KeyValue::new("outcome", finished.outcome.as_str())]);
            if finished.outcome == Ended::Killed {
                i.loopwatch_evaluations_killed_total.add(1, &[]);
            }
            if let Some(reason) = reason {
                tracing::debug!(reason = &**reason, "an evaluation failed");
            }
        }
        let mut failed = 0;
        for finished in &gauges.gone {
            i.loopwatch_evaluation_duration_seconds
                .record(finished.duration.as_secs_f64(), &[]);
            i.loopwatch_evaluations_total
                .add(1, &[KeyValue::new("outcome", finished.outcome.as_str())]);
            if finished.outcome == Ended::Killed {
                i.loopwatch_evaluations_killed_total.add(1, &[]);
            } else {
                failed += 1;
            }
        }
        if failed > 0 {
            tracing::warn!(
                evaluations = failed,
                reason = PROCESS_GONE,
                "evaluations in flight ended as failed: the process that ran them ended without their end"
            );
        }
        for (id, duration) in &gauges.interrupted {
            let age = humantime::format_duration(Duration::from_secs(duration.as_secs()));
            tracing::warn!(
                evaluation = &**id,
                %age,
                ended = "interrupted",
                "a hung evaluation ended after loopwatch interrupted it; counted as killed"
            );
        }
        if let Some(wait) = gauges.queued {
            i.loopwatch_evaluation_queue_wait_seconds
                .record(wait.as_secs_f64(), &[]);
        }
    }

    /// The GPUs still answering: each one's series, from its latest reading.
    fn gpus(&self, devices: &[crate::sample::GpuDevice]) {
        let i = &self.pipeline.instruments;
        i.loopwatch_gpu_devices.set(devices.len() as f64);
        let labels = |d: &crate::sample::GpuDevice| {
            vec![
                KeyValue::new("hw.id", d.uuid.to_string()),
                KeyValue::new("gpu.index", d.index.to_string()),
            ]
        };
        let series = |value: &dyn Fn(&crate::sample::GpuDevice) -> Option<f64>| {
            devices
                .iter()
                .filter_map(|d| value(d).map(|v| (labels(d), v)))
                .collect::<Vec<_>>()
        };
        i.hw_gpu_utilization_ratio
            .set_series(series(&|d| d.utilization));
        i.hw_gpu_memory_usage_bytes
            .set_series(series(&|d| d.memory_used_bytes.map(|b| b as f64)));
        i.hw_gpu_memory_limit_bytes
            .set_series(series(&|d| d.memory_total_bytes.map(|b| b as f64)));
        i.hw_temperature_celsius
            .set_series(series(&|d| d.temperature_celsius));
        i.loopwatch_gpu_loop_memory_bytes
            .set_series(series(&|d| d.loop_memory_bytes.map(|b| b as f64)));
        i.loopwatch_gpu_loop_processes
            .set_series(series(&|d| Some(f64::from(d.loop_processes))));
        i.hw_power_watts.set_series(
            devices
                .iter()
                .filter_map(|d| {
                    let mut labels = labels(d);
                    labels.push(KeyValue::new("hw.type", "gpu"));
                    d.power_watts.map(|w| (labels, w))
                })
                .collect(),
        );
        // Each error series from zero, so that its first error is an increase.
        for d in devices {
            for kind in [
                GpuErrorKind::Xid,
                GpuErrorKind::Uncorrected,
                GpuErrorKind::Corrected,
            ] {
                i.hw_errors_total.add(
                    0,
                    &error_labels(d.index.to_string(), d.uuid.to_string(), kind),
                );
            }
            i.loopwatch_gpu_alerting_errors_total.add(0, &labels(d));
        }
    }

    /// The GPUs' readings are gone (no sample for `quiet`, or the sampler ended): the
    /// per-device series go, so that neither the page nor a rule judges old numbers.
    /// The error counters stay.
    fn gpus_gone(&self, quiet: Option<Duration>) {
        self.gpus(&[]);
        if let Some(quiet) = quiet {
            tracing::warn!(
                quiet_for = %humantime::format_duration(Duration::from_millis(
                    u64::try_from(quiet.as_millis()).unwrap_or(u64::MAX)
                )),
                "no GPU sample came (the GPU sampler is blocked inside NVML?): the GPU series are dropped and GPUMemoryHigh resolves until samples come again"
            );
        }
    }

    /// New errors of a GPU: counted, and logged when they are Xid or uncorrected
    /// ECC errors.
    fn gpu_errors(&self, errors: &GpuErrors) {
        let (index, uuid) = match &errors.gpu {
            Some(gpu) => (gpu.index.to_string(), gpu.uuid.to_string()),
            None => (UNKNOWN_GPU.to_string(), UNKNOWN_GPU.to_string()),
        };
        let i = &self.pipeline.instruments;
        i.hw_errors_total.add(
            errors.count,
            &error_labels(index.clone(), uuid.clone(), errors.kind),
        );
        if errors.alerting > 0 {
            i.loopwatch_gpu_alerting_errors_total.add(
                errors.alerting,
                &[
                    KeyValue::new("hw.id", uuid.clone()),
                    KeyValue::new("gpu.index", index.clone()),
                ],
            );
        }
        let class = if errors.fatal { "fatal" } else { "other" };
        match (errors.kind, &errors.gpu) {
            (GpuErrorKind::Xid, Some(_)) if errors.fatal => tracing::error!(
                gpu = %index,
                uuid,
                xid = errors.code,
                class,
                alerting = errors.alerting,
                "a critical Xid error on a GPU"
            ),
            (GpuErrorKind::Xid, Some(_)) => tracing::warn!(
                gpu = %index,
                uuid,
                xid = errors.code,
                class,
                "an Xid error on a GPU, not in the fatal set ([gpu] fatal_xids): counted, no alert (often a program's fault or its end)"
            ),
            (GpuErrorKind::Xid, None) => tracing::error!(
                gpu = UNKNOWN_GPU,
                xid = errors.code,
                class,
                alerting = errors.alerting,
                "a critical Xid error on a GPU that matches none NVML found at start-up; counted against gpu_index=\"unknown\""
            ),
            (GpuErrorKind::Uncorrected, _) => tracing::error!(
                gpu = %index,
                uuid,
                count = errors.count,
                alerting = errors.alerting,
                "uncorrected ECC errors on a GPU"
            ),
            (GpuErrorKind::Corrected, _) => {}
        }
    }

    /// One container sample (or Docker being down).
    fn containers(&self, reading: &ContainerReading) {
        let i = &self.pipeline.instruments;
        i.loopwatch_docker_up.set(f64::from(u8::from(reading.up)));
        let source = reading.source;
        i.loopwatch_container_stats_source.set_series(
            StatsSource::ALL
                .map(|s| {
                    (
                        vec![KeyValue::new("source", s.label())],
                        f64::from(u8::from(s == source)),
                    )
                })
                .to_vec(),
        );
        let Some(sample) = &reading.sample else {
            // Docker is down: the per-container series go, the count keeps its last.
            i.container_memory_usage.set_series(Vec::new());
            i.container_cpu_usage.set_series(Vec::new());
            return;
        };
        i.active_containers.set(sample.active as f64);
        let name = |stat: &crate::containers::ContainerStat| {
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
    }
}

/// What labels an Xid error of a device NVML no longer names: `gpu_index` and
/// `hw_id` both.
const UNKNOWN_GPU: &str = "unknown";

/// The labels of a GPU's error series.
fn error_labels(index: String, uuid: String, kind: GpuErrorKind) -> [KeyValue; 4] {
    [
        KeyValue::new("hw.id", uuid),
        KeyValue::new("gpu.index", index),
        KeyValue::new("hw.type", "gpu"),
        KeyValue::new("error.type", kind.as_str()),
    ]
}

/// What the GenAI conventions measure of a call, when it has it: the one place their
/// mapping ([`GenAiConventions::rows`](crate::catalog::GenAiConventions::rows)) meets
/// the call. An abandoned call did not end, and a call the budget blocked or deferred
/// was never sent: neither has a duration, unless it failed.
fn genai_measure(call: &crate::llm::LlmCall, measure: GenAiMeasure) -> Option<f64> {
    let tokens = |t: Option<u64>| t.map(|t| t as f64);
    match measure {
        GenAiMeasure::Duration => {
            let ended = !(call.abandoned || call.blocked || call.deferred) || call.error.is_some();
            ended.then_some(call.duration.as_secs_f64())
        }
        GenAiMeasure::TimeToFirstChunk => call.time_to_first_chunk.map(|d| d.as_secs_f64()),
        GenAiMeasure::InputTokens => tokens(call.input_tokens),
        GenAiMeasure::OutputTokens => tokens(call.output_tokens),
        GenAiMeasure::CacheReadInputTokens => tokens(call.cached_input_tokens),
        GenAiMeasure::CacheWriteInputTokens => tokens(call.cache_write_input_tokens),
        GenAiMeasure::ReasoningOutputTokens => tokens(call.reasoning_tokens),
    }
}

/// Logs a mark of the LLM budget: a warning at a share of it, or the first call it
/// refused.
fn log_budget_mark(mark: &crate::llm::budget::BudgetMark) {
    use crate::llm::budget::BudgetEvent;
    let (spent, budget) = (mark.spent_usd, mark.budget_usd);
    match mark.event {
        BudgetEvent::Warning => tracing::warn!(
            percent = mark.percent.unwrap_or(0),
            spent_usd = spent,
            budget_usd = budget,
            action = %mark.action,
            "LLM budget warning: {}% of the budget is spent",
            mark.percent.unwrap_or(0)
        ),
        BudgetEvent::Blocking => tracing::warn!(
            spent_usd = spent,
            budget_usd = budget,
            action = %mark.action,
            "LLM budget spent: the proxy refuses new LLM calls (calls in flight finish); raise it with --llm-budget-usd or usd under [llm.budget]"
        ),
    }
}

/// Logs how a supervised loop's process ended for good.
fn log_exit(exit: &LoopExit) {
    if exit.unexpected() {
        tracing::error!(code = ?exit.code, signal = ?exit.signal, "the loop exited before it said it was done");
    } else {
        tracing::info!(code = ?exit.code, signal = ?exit.signal, said_done = exit.said_done, "the loop exited");
    }
}

/// The gauges of alerts and warnings: `loopwatch_alert_firing{alertname}` and
/// `loopwatch_performance_warning{metric}`.
impl FindingSink for Publisher {
    fn transition(&self, t: &Transition) {
        self.pipeline.instruments.loopwatch_alert_firing.record(
            f64::from(u8::from(t.state == AlertState::Firing)),
            &[KeyValue::new("alertname", t.alert.as_str())],
        );
    }

    fn warning(&self, w: &WarningChange) {
        self.pipeline
            .instruments
            .loopwatch_performance_warning
            .record(
                f64::from(u8::from(w.started)),
                &[KeyValue::new("metric", w.watched.metric())],
            );
    }
}

/// What the instrumentation did with a framework, said once per state.
fn log_instrumentation(report: &Instrumentation) {
    let framework = report.framework.as_str();
    let version = if report.version.is_empty() {
        "(version unknown)"
    } else {
        report.version.as_str()
    };
    let reason = report.reason.as_deref().unwrap_or("no reason given");
    match report.state {
        InstrumentationState::Active => {
            tracing::info!(
                framework,
                version,
                "the loop's {framework} {version} is instrumented"
            );
        }
        InstrumentationState::Skipped => {
            tracing::warn!(framework, version, reason, "the loop's {framework} {version} is not instrumented ({reason}); it runs as it is, unreported");
        }
        InstrumentationState::Off => {
            tracing::info!(framework, reason, "the loop's {framework} is not instrumented ({reason}); --instrument {framework} turns it on");
        }
    }
}
