//! The part of the monitor that publishes: loopwatch's instruments, recorded from
//! what the loop reported, what the samplers read and what the judge decided. It
//! holds no state of its own beyond the pipeline.

use std::time::SystemTime;

use opentelemetry::KeyValue;

use crate::alerts::AlertState;
use crate::evaluate::{Transition, WarningChange};
use crate::pipeline::Pipeline;
use crate::run::{unix_seconds, IterationSummary};
use crate::sample::HostSample;

use super::findings::FindingSink;
use super::judge::Judged;

/// loopwatch's instruments and the pipeline that serves them.
#[derive(Debug)]
pub(super) struct Publisher {
    pub(super) pipeline: Pipeline,
}

impl Publisher {
    /// An iteration starts, at `at` (Unix seconds).
    pub(super) fn iteration_started(&self, number: u64, at: f64) {
        let i = &self.pipeline.instruments;
        i.iteration_number.set(number as f64);
        i.loopwatch_iteration_start_timestamp_seconds.set(at);
    }

    /// A completed iteration's values; it ended at `at` (Unix seconds).
    pub(super) fn iteration(&self, summary: &IterationSummary, at: f64) {
        let i = &self.pipeline.instruments;
        i.loopwatch_iteration_end_timestamp_seconds.set(at);
        i.execution_time_seconds.set(summary.duration.as_secs_f64());
        i.strategy_success_total.add(summary.successes);
        i.strategy_failure_total.add(summary.failures);
        // An iteration without valid values leaves the previous ones standing.
        i.sharpe_ratio.set_present(summary.mean_sharpe);
        i.max_drawdown.set_present(summary.mean_max_drawdown);
        i.population_diversity.set_present(summary.diversity);
        i.unique_strategy_count
            .set_present(summary.unique_strategies.map(|u| u as f64));
        i.champion_staleness_iterations
            .set(summary.champion_staleness as f64);
    }

    /// The champion changed `changes` times, the last just now.
    pub(super) fn champion_changed(&self, changes: u64) {
        let i = &self.pipeline.instruments;
        i.loopwatch_champion_changes_total.add(changes);
        i.loopwatch_champion_changed_timestamp_seconds
            .set(unix_seconds(SystemTime::now()));
    }

    /// The evaluator's rolling values, streak, and baselines when one was captured.
    pub(super) fn judged(&self, judged: &Judged) {
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
    pub(super) fn host(&self, sample: &HostSample, memory_used: u64, memory_limit: u64) {
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
        i.loopwatch_memory_used_bytes.set(memory_used as f64);
        i.loopwatch_memory_limit_bytes.set(memory_limit as f64);
    }

    /// What a process sweep found and did.
    pub(super) fn process_sweep(&self, cleaned: usize, failed: usize, remaining: usize) {
        let i = &self.pipeline.instruments;
        i.loopwatch_processes_cleaned_total.add(cleaned as u64, &[]);
        i.loopwatch_process_cleanup_failures_total
            .add(failed as u64, &[]);
        i.orphaned_processes.record(remaining as f64, &[]);
    }

    /// The orphaned containers left after a sweep.
    pub(super) fn orphaned_containers(&self, orphans: u64) {
        self.pipeline
            .instruments
            .orphaned_containers
            .set(orphans as f64);
    }

    /// The loop has said it is done.
    pub(super) fn done(&self) {
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
    pub(super) fn restarted(&self, reason: &'static str, recent: u64) {
        let i = &self.pipeline.instruments;
        i.loopwatch_loop_restarts_total
            .add(1, &[KeyValue::new("reason", reason)]);
        self.recent_restarts(recent);
    }

    /// Restarts within the restart window.
    pub(super) fn recent_restarts(&self, recent: u64) {
        self.pipeline
            .instruments
            .loopwatch_loop_restarts_recent
            .record(recent as f64, &[]);
    }

    /// One LLM call: the GenAI histograms, the calls, cost, token and rate-limit
    /// counters, and the evidence gauges after it. An abandoned call did not end, so
    /// it has no operation duration; it is counted under its own outcome.
    pub(super) fn llm_call(
        &self,
        call: &crate::llm::LlmCall,
        labels: &crate::llm::meter::CallLabels,
        pricing: crate::llm::Pricing,
        evidence: &crate::llm::meter::LlmEvidence,
    ) {
        let i = &self.pipeline.instruments;
        let model = [KeyValue::new("model", labels.model.clone())];
        let mut genai = vec![
            KeyValue::new("gen_ai.operation.name", call.operation.as_str()),
            KeyValue::new("gen_ai.provider.name", labels.provider.clone()),
            KeyValue::new("gen_ai.request.model", labels.request_model.clone()),
            KeyValue::new("gen_ai.response.model", labels.model.clone()),
        ];
        for (kind, tokens) in [("input", call.input_tokens), ("output", call.output_tokens)] {
            if let Some(tokens) = tokens {
                let mut attributes = genai.clone();
                attributes.push(KeyValue::new("gen_ai.token.type", kind));
                i.gen_ai_client_token_usage
                    .record(tokens as f64, &attributes);
            }
        }
        let outcome = call.outcome().into_owned();
        if let Some(error) = call.error {
            genai.push(KeyValue::new("error.type", error.as_label().into_owned()));
        }
        if !call.abandoned || call.error.is_some() {
            i.gen_ai_client_operation_duration_seconds
                .record(call.duration.as_secs_f64(), &genai);
        }
        if let Some(first) = call.time_to_first_chunk {
            i.loopwatch_llm_time_to_first_chunk_seconds
                .record(first.as_secs_f64(), &model);
        }
        i.loopwatch_llm_calls_total.add(
            1,
            &[
                KeyValue::new("model", labels.model.clone()),
                KeyValue::new("outcome", outcome),
            ],
        );
        if let Some(cost) = pricing.cost_usd {
            i.loopwatch_llm_cost_usd_total.add(cost, &model);
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

    /// What the LLM alerts judge.
    pub(super) fn llm_evidence(&self, evidence: &crate::llm::meter::LlmEvidence) {
        let i = &self.pipeline.instruments;
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
    pub(super) fn llm_in_flight(&self, calls: usize, oldest: std::time::Duration) {
        let i = &self.pipeline.instruments;
        i.loopwatch_llm_in_flight.record(calls as f64, &[]);
        i.loopwatch_llm_oldest_in_flight_seconds
            .record(oldest.as_secs_f64(), &[]);
    }

    /// One container sample (or Docker being down: `None`).
    #[cfg(feature = "docker")]
    pub(super) fn containers(
        &self,
        containers: &crate::containers::Containers,
        sample: Option<&crate::containers::ContainerSample>,
    ) {
        use crate::containers::StatsSource;
        let i = &self.pipeline.instruments;
        i.loopwatch_docker_up
            .set(f64::from(u8::from(containers.is_up())));
        let source = containers.stats_source();
        i.loopwatch_container_stats_source.set_series(
            [StatsSource::Cgroup, StatsSource::DockerApi]
                .map(|s| {
                    (
                        vec![KeyValue::new("source", s.label())],
                        f64::from(u8::from(s == source)),
                    )
                })
                .to_vec(),
        );
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
