//! The OpenTelemetry → Prometheus pipeline: two meter providers bridged into two
//! Prometheus registries, loopwatch's instruments (made from the catalog), and the
//! guarded collection that turns them into exposition.
//!
//! loopwatch's own instruments live on the *core* provider, which runs no user code.
//! Instruments users add through [`Monitor::meter`](crate::Monitor::meter) live on a
//! separate *user* provider, so a panic in a user's observable callback (which poisons
//! that provider's locks for good) costs only the user's metrics, never loopwatch's.

use std::panic::{catch_unwind, AssertUnwindSafe};

use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::proto::MetricFamily;
use prometheus::Registry;

use crate::alerts::{AlertName, Watched};
use crate::catalog::{self, GenAiConventions, GenAiMeasure, GenAiRow, Instruments, MetricSpec};
use crate::error::{CollectError, Error};
use crate::records::RunIdentity;
use crate::reported::Rejection;

mod text;

pub(crate) use text::{type_name, TextWriter};

/// Name of the instrumentation scope of loopwatch's own instruments.
pub(crate) const CORE_SCOPE: &str = "loopwatch";
/// Name of the instrumentation scope handed to users.
pub(crate) const USER_SCOPE: &str = "loopwatch.user";

/// The two providers and registries, and the counter of failed collections.
pub(crate) struct Pipeline {
    core_provider: SdkMeterProvider,
    user_provider: SdkMeterProvider,
    core_registry: Registry,
    user_registry: Registry,
    user_meter: Meter,
    /// loopwatch's own instruments, on the core provider.
    pub(crate) instruments: Instruments,
    /// The OpenTelemetry GenAI instruments of LLM calls, under the conventions chosen.
    pub(crate) genai: GenAiInstruments,
    /// The text exposition's writer, with the families' header lines it keeps.
    pub(crate) text: TextWriter,
    user_poisoned: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

/// The OpenTelemetry GenAI instruments of LLM calls under the conventions chosen: each
/// row of their mapping ([`GenAiConventions::rows`]) with its instrument, one
/// instrument per metric. The one place a call's GenAI measurements are recorded, so
/// the conventions differ by their table alone.
pub(crate) struct GenAiInstruments {
    rows: Vec<(&'static GenAiRow, GenAiInstrument)>,
}

/// A GenAI metric's instrument: a histogram of each call, or a counter of usage.
#[derive(Clone)]
enum GenAiInstrument {
    Histogram(catalog::Histogram),
    Counter(catalog::Counter),
}

impl GenAiInstrument {
    fn create(meter: &Meter, spec: &'static MetricSpec) -> Self {
        use catalog::Instrument as _;
        match spec.kind {
            catalog::MetricKind::Counter => {
                GenAiInstrument::Counter(catalog::Counter::create(meter, spec))
            }
            _ => GenAiInstrument::Histogram(catalog::Histogram::create(meter, spec)),
        }
    }

    fn record(&self, value: f64, attributes: &[KeyValue]) {
        match self {
            GenAiInstrument::Histogram(h) => h.record(value, attributes),
            // Token counts: whole, far below 2^53.
            GenAiInstrument::Counter(c) => c.add(value as u64, attributes),
        }
    }
}

impl GenAiInstruments {
    /// The instruments of `conventions`, made on `meter`.
    fn new(meter: &Meter, conventions: GenAiConventions) -> Self {
        let mut made: Vec<(&'static str, GenAiInstrument)> = Vec::new();
        let rows = conventions
            .rows()
            .iter()
            .map(|row| {
                let name = row.metric.name;
                let instrument = match made.iter().find(|(n, _)| *n == name) {
                    Some((_, instrument)) => instrument.clone(),
                    None => {
                        let instrument = GenAiInstrument::create(meter, row.metric);
                        made.push((name, instrument.clone()));
                        instrument
                    }
                };
                (row, instrument)
            })
            .collect();
        GenAiInstruments { rows }
    }

    /// Records one call (an embeddings call, or not): on each row for such calls, the
    /// row's measure when the call has it (`measure`), with the call's attributes
    /// (`call`), the row's own, and `error` (the call's `error.type`, if it failed)
    /// where the row carries it.
    pub(crate) fn record(
        &self,
        embeddings: bool,
        call: &[KeyValue],
        error: Option<&KeyValue>,
        measure: impl Fn(GenAiMeasure) -> Option<f64>,
    ) {
        for (row, instrument) in &self.rows {
            if !row.calls.include(embeddings) {
                continue;
            }
            let Some(value) = measure(row.measure) else {
                continue;
            };
            let mut attributes = Vec::with_capacity(call.len() + row.attributes.len() + 1);
            attributes.extend_from_slice(call);
            attributes.extend(row.attributes.iter().map(|(k, v)| KeyValue::new(*k, *v)));
            if row.error_type {
                attributes.extend(error.cloned());
            }
            instrument.record(value, &attributes);
        }
    }
}

/// The optional OTLP/HTTP reader: exports every metric periodically from its own
/// thread (the loop never waits on it), configured by the standard
/// `OTEL_EXPORTER_OTLP_*` and `OTEL_METRIC_EXPORT_INTERVAL` variables.
#[cfg(feature = "otlp")]
fn otlp_reader(
) -> Result<opentelemetry_sdk::metrics::PeriodicReader<opentelemetry_otlp::MetricExporter>, Error> {
    use opentelemetry_otlp::WithExportConfig as _;
    let mut builder = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_temporality(opentelemetry_sdk::metrics::Temporality::Cumulative);
    let timeout_set = [
        "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some());
    if !timeout_set {
        // A collector that is down must not hold a shutdown for the SDK's default 10 s.
        builder = builder.with_timeout(std::time::Duration::from_secs(2));
    }
    let exporter = builder.build().map_err(|e| Error::Exporter {
        exporter: "OTLP",
        source: Box::new(e),
    })?;
    Ok(opentelemetry_sdk::metrics::PeriodicReader::builder(exporter).build())
}

fn bridged_provider(otlp: bool) -> Result<(SdkMeterProvider, Registry), Error> {
    let registry = Registry::new();
    let exporter = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .without_units()
        .without_counter_suffixes()
        .without_target_info()
        .scope_info_enabled(false)
        .build()
        .map_err(|e| Error::Exporter {
            exporter: "Prometheus",
            source: Box::new(e),
        })?;
    let builder = SdkMeterProvider::builder().with_reader(exporter);
    #[cfg(feature = "otlp")]
    let builder = if otlp {
        builder.with_reader(otlp_reader()?)
    } else {
        builder
    };
    #[cfg(not(feature = "otlp"))]
    let _ = otlp;
    Ok((builder.build(), registry))
}

impl Pipeline {
    /// Builds both providers and loopwatch's instruments, those of LLM calls under the
    /// GenAI `conventions`; with `otlp`, each provider also exports over OTLP/HTTP.
    /// Delivery counters start at zero for each of `alertmanager_urls`.
    pub(crate) fn new(
        otlp: bool,
        alertmanager_urls: &[String],
        identity: &RunIdentity,
        conventions: GenAiConventions,
    ) -> Result<Self, Error> {
        let (core_provider, core_registry) = bridged_provider(otlp)?;
        let (user_provider, user_registry) = bridged_provider(otlp)?;
        let core_meter = core_provider.meter(CORE_SCOPE);
        let instruments = Instruments::new(&core_meter, &|spec| {
            start_series(spec, alertmanager_urls, identity)
        });
        let genai = GenAiInstruments::new(&core_meter, conventions);
        instruments
            .loopwatch_run_info
            .record(1.0, &run_info_labels(identity));
        Ok(Pipeline {
            user_meter: user_provider.meter(USER_SCOPE),
            core_provider,
            user_provider,
            core_registry,
            user_registry,
            instruments,
            genai,
            text: Default::default(),
            user_poisoned: Default::default(),
        })
    }

    /// The meter handed to users for their own instruments.
    pub(crate) fn user_meter(&self) -> &Meter {
        &self.user_meter
    }

    fn count_collection_error(&self, source: &'static str) {
        self.instruments
            .loopwatch_collection_errors_total
            .add(1, &[KeyValue::new("source", source)]);
    }

    /// Collects every metric family, loopwatch's first, sorted by name.
    ///
    /// Fails rather than return a partial answer when loopwatch's own metrics are
    /// missing; user metrics that fail to collect are dropped, counted and logged.
    pub(crate) fn gather(&self) -> Result<Vec<MetricFamily>, CollectError> {
        let mut families = match catch_unwind(AssertUnwindSafe(|| self.core_registry.gather())) {
            Ok(families) => families,
            Err(_) => {
                self.count_collection_error("core");
                tracing::error!("collecting loopwatch's own metrics panicked");
                return Err(CollectError::Panicked);
            }
        };
        for family in &mut families {
            if let Some(name) = catalog::exposition_name(family.name()) {
                family.set_name(name.to_string());
            }
        }
        if !families
            .iter()
            .any(|f| f.name() == catalog::ITERATION_NUMBER.name)
        {
            self.count_collection_error("core");
            return Err(CollectError::Incomplete);
        }
        match catch_unwind(AssertUnwindSafe(|| self.user_registry.gather())) {
            Ok(user) => {
                for family in user {
                    if catalog::find_exported(family.name()).is_some() {
                        tracing::warn!(
                            metric = family.name(),
                            "a user instrument reuses a loopwatch metric name; it is not exported"
                        );
                        continue;
                    }
                    families.push(family);
                }
            }
            Err(_) => {
                self.count_collection_error("user");
                if !self
                    .user_poisoned
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::error!(
                        "an observable callback registered on Monitor::meter panicked; \
                         metrics from that meter are no longer exported, loopwatch's own continue"
                    );
                }
            }
        }
        families.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(families)
    }

    /// Shuts both providers down, flushing any periodic readers.
    pub(crate) fn shutdown(&self) {
        let _ = self.core_provider.shutdown();
        let _ = self.user_provider.shutdown();
    }
}

/// The Content-Type of the Prometheus text exposition format.
pub(crate) const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The label sets of a labelled metric that exist from start-up, each exported at zero
/// before anything happens, so rules and dashboards resolve at once.
fn start_series(
    spec: &'static MetricSpec,
    alertmanager_urls: &[String],
    identity: &RunIdentity,
) -> Vec<Vec<KeyValue>> {
    let one = |key: &'static str, value: &'static str| vec![KeyValue::new(key, value)];
    match spec.name {
        name if name == catalog::ALERT_FIRING.name => AlertName::ALL
            .iter()
            .map(|a| one("alertname", a.as_str()))
            .collect(),
        name if name == catalog::BASELINE.name || name == catalog::PERFORMANCE_WARNING.name => {
            Watched::ALL
                .iter()
                .map(|w| one("metric", w.metric()))
                .collect()
        }
        name if name == catalog::REJECTED_OBSERVATIONS_TOTAL.name => Rejection::all_labels(),
        name if name == catalog::COLLECTION_ERRORS_TOTAL.name => {
            vec![one("source", "core"), one("source", "user")]
        }
        name if name == catalog::LOOP_RESTARTS_TOTAL.name => {
            vec![one("reason", "exit"), one("reason", "stall")]
        }
        name if name == catalog::EVALUATIONS_TOTAL.name => crate::records::Ended::ALL
            .iter()
            .map(|outcome| one("outcome", outcome.as_str()))
            .collect(),
        name if name == catalog::INSTRUMENTATION_ERRORS_TOTAL.name => {
            crate::protocol::Framework::ALL
                .iter()
                .map(|f| one("framework", f.as_str()))
                .collect()
        }
        name if name == catalog::LLM_ROLE_FALLBACKS_TOTAL.name => {
            crate::llm::meter::RoleFallback::ALL
                .iter()
                .map(|reason| one("reason", reason.as_str()))
                .collect()
        }
        name if name == catalog::HTTP_REJECTED_TOTAL.name => {
            vec![one("reason", "overload"), one("reason", "connections")]
        }
        name if name == catalog::ALERT_DELIVERIES_TOTAL.name => alertmanager_urls
            .iter()
            .flat_map(|url| {
                ["success", "failure"].map(|outcome| {
                    vec![
                        KeyValue::new("url", url.clone()),
                        KeyValue::new("outcome", outcome),
                    ]
                })
            })
            .collect(),
        name if name == catalog::RUN_INFO.name => vec![run_info_labels(identity)],
        name if name == catalog::CONTAINER_STATS_SOURCE.name => {
            vec![one("source", "cgroup"), one("source", "docker_api")]
        }
        // Per-container series appear with their containers.
        _ => Vec::new(),
    }
}

/// The labels of `loopwatch_run_info`.
fn run_info_labels(identity: &RunIdentity) -> Vec<KeyValue> {
    vec![
        KeyValue::new("run_id", identity.run_id.clone()),
        KeyValue::new("hostname", identity.owner.host.clone()),
        KeyValue::new(
            "experiment",
            identity.experiment.clone().unwrap_or_default(),
        ),
        KeyValue::new("loop", identity.loop_name.clone().unwrap_or_default()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Presence, CATALOG};

    #[test]
    fn every_catalog_row_is_exported_from_start_up_with_its_labels() {
        let urls = ["http://127.0.0.1:9093".to_string()];
        let pipeline = Pipeline::new(
            false,
            &urls,
            &RunIdentity::of_this_process(),
            GenAiConventions::Default,
        )
        .unwrap();
        let families = pipeline.gather().unwrap();
        for spec in CATALOG {
            let family = families.iter().find(|f| f.name() == spec.name);
            if matches!(
                spec.presence,
                Presence::PerContainer
                    | Presence::PerLlmCall
                    | Presence::WithEvaluations
                    | Presence::PerGpu
                    | Presence::PerModelServer
                    | Presence::OnceSet
            ) {
                assert!(family.is_none(), "{} has no series yet", spec.name);
                continue;
            }
            let family = family.unwrap_or_else(|| panic!("{} is not exported", spec.name));
            assert_eq!(family.help(), spec.description, "{}", spec.name);
            for metric in family.get_metric() {
                let mut labels: Vec<&str> = metric.get_label().iter().map(|l| l.name()).collect();
                labels.sort_unstable();
                let mut expected = spec.labels.to_vec();
                expected.sort_unstable();
                assert_eq!(labels, expected, "{}", spec.name);
            }
        }
        assert_eq!(
            families.len(),
            CATALOG
                .iter()
                .filter(|s| !matches!(
                    s.presence,
                    Presence::PerContainer
                        | Presence::PerLlmCall
                        | Presence::WithEvaluations
                        | Presence::PerGpu
                        | Presence::PerModelServer
                        | Presence::OnceSet
                ))
                .count(),
            "nothing outside the catalog"
        );
        pipeline.shutdown();
    }

    /// `gen_ai.client.operation.duration` (unit `s`) is exposed as the OpenTelemetry
    /// to Prometheus translation names it, its unit appended; its buckets, sum and
    /// count follow.
    #[test]
    fn the_genai_duration_is_exposed_with_its_unit_suffix() {
        let pipeline = Pipeline::new(
            false,
            &[],
            &RunIdentity::of_this_process(),
            GenAiConventions::Default,
        )
        .unwrap();
        pipeline.genai.record(
            false,
            &[KeyValue::new("gen_ai.operation.name", "chat")],
            None,
            |m| (m == GenAiMeasure::Duration).then_some(0.5),
        );
        let families = pipeline.gather().unwrap();
        let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
        assert!(
            names.contains(&"gen_ai_client_operation_duration_seconds"),
            "{names:?}"
        );
        assert!(!names.contains(&"gen_ai_client_operation_duration"));
        let text = crate::pipeline::TextWriter::default().encode(&families);
        assert!(
            text.contains(
                "gen_ai_client_operation_duration_seconds_count{gen_ai_operation_name=\"chat\"} 1"
            ),
            "{text}"
        );
        pipeline.shutdown();
    }

    /// What the test calls measure: a second, a tenth to the first chunk, 100 tokens in
    /// (30 read from the cache, 20 written to it), 40 out (10 of them reasoning).
    fn measured(measure: GenAiMeasure) -> Option<f64> {
        Some(match measure {
            GenAiMeasure::Duration => 1.0,
            GenAiMeasure::TimeToFirstChunk => 0.1,
            GenAiMeasure::InputTokens => 100.0,
            GenAiMeasure::OutputTokens => 40.0,
            GenAiMeasure::CacheReadInputTokens => 30.0,
            GenAiMeasure::CacheWriteInputTokens => 20.0,
            GenAiMeasure::ReasoningOutputTokens => 10.0,
        })
    }

    /// Series of each GenAI family, by name: labels, and a counter's value or a
    /// histogram's count and sum.
    type GenAiSeries = std::collections::BTreeMap<
        String,
        Vec<(std::collections::BTreeMap<String, String>, f64, f64)>,
    >;

    /// A failed chat call (error.type 429) and an embeddings call, recorded under
    /// `conventions`: the GenAI families collected, by name, with each series' labels
    /// and its value (a counter's) or its count and sum (a histogram's).
    fn genai_series(conventions: GenAiConventions) -> GenAiSeries {
        let pipeline =
            Pipeline::new(false, &[], &RunIdentity::of_this_process(), conventions).unwrap();
        let call = |operation: &'static str| {
            [
                KeyValue::new("gen_ai.operation.name", operation),
                KeyValue::new("gen_ai.provider.name", "openai"),
                KeyValue::new("gen_ai.request.model", "gpt-x"),
                KeyValue::new("gen_ai.response.model", "gpt-x-1"),
            ]
        };
        let error = KeyValue::new("error.type", "429");
        pipeline
            .genai
            .record(false, &call("chat"), Some(&error), measured);
        pipeline
            .genai
            .record(true, &call("embeddings"), None, |m| match m {
                GenAiMeasure::Duration | GenAiMeasure::InputTokens => measured(m),
                _ => None,
            });
        let families = pipeline.gather().unwrap();
        // The exposition is well formed under either conventions' names.
        let text = crate::pipeline::TextWriter::default().encode(&families);
        assert!(
            !text.contains("gen_ai_client_inference_duration{"),
            "{text}"
        );
        pipeline.shutdown();
        families
            .iter()
            .filter(|f| f.name().starts_with("gen_ai_"))
            .map(|f| {
                let series = f
                    .get_metric()
                    .iter()
                    .map(|m| {
                        let labels = m
                            .get_label()
                            .iter()
                            .map(|l| (l.name().to_string(), l.value().to_string()))
                            .collect();
                        let (a, b) = match f.get_field_type() {
                            prometheus::proto::MetricType::COUNTER => {
                                (m.get_counter().get_value(), 0.0)
                            }
                            _ => (
                                m.get_histogram().get_sample_count() as f64,
                                m.get_histogram().get_sample_sum(),
                            ),
                        };
                        (labels, a, b)
                    })
                    .collect();
                assert_eq!(
                    catalog::find_exported(f.name()).map(|s| s.description),
                    Some(f.help()),
                    "{}",
                    f.name()
                );
                (f.name().to_string(), series)
            })
            .collect()
    }

    fn labels(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The call's labels, as both conventions give them, and `more`.
    fn of_call(
        operation: &str,
        more: &[(&str, &str)],
    ) -> std::collections::BTreeMap<String, String> {
        let mut all = labels(&[
            ("gen_ai_operation_name", operation),
            ("gen_ai_provider_name", "openai"),
            ("gen_ai_request_model", "gpt-x"),
            ("gen_ai_response_model", "gpt-x-1"),
        ]);
        all.extend(labels(more));
        all
    }

    /// By default the two GenAI histograms keep their names, attributes and values: the
    /// exposition loopwatch has always written (the golden file holds its start).
    #[test]
    fn by_default_llm_calls_are_recorded_under_loopwatchs_genai_names() {
        let series = genai_series(GenAiConventions::Default);
        assert_eq!(
            series.keys().collect::<Vec<_>>(),
            [
                "gen_ai_client_operation_duration_seconds",
                "gen_ai_client_token_usage"
            ]
        );
        let duration = &series["gen_ai_client_operation_duration_seconds"];
        assert!(duration.contains(&(of_call("chat", &[("error_type", "429")]), 1.0, 1.0)));
        assert!(duration.contains(&(of_call("embeddings", &[]), 1.0, 1.0)));
        assert_eq!(duration.len(), 2);
        let tokens = &series["gen_ai_client_token_usage"];
        for (operation, kind, sum) in [
            ("chat", "input", 100.0),
            ("chat", "output", 40.0),
            ("embeddings", "input", 100.0),
        ] {
            assert!(
                tokens.contains(&(of_call(operation, &[("gen_ai_token_type", kind)]), 1.0, sum)),
                "{tokens:?}"
            );
        }
        assert_eq!(tokens.len(), 3);
    }

    /// With `gen_ai_latest_experimental`, the newest conventions' metrics and only
    /// them: inference and embeddings apart, tokens per call as histograms (with the
    /// error), usage as counters of input, output, cache-read, cache-write and
    /// reasoning tokens (with their modality).
    #[test]
    fn opted_in_llm_calls_are_recorded_under_the_newest_genai_names() {
        let series = genai_series(GenAiConventions::LatestExperimental);
        let mut expected: Vec<&str> = GEN_AI_LATEST_NAMES.to_vec();
        expected.sort_unstable();
        assert_eq!(series.keys().collect::<Vec<_>>(), expected);
        let failed = of_call("chat", &[("error_type", "429")]);
        let chat = of_call("chat", &[]);
        let usage = of_call("chat", &[("gen_ai_token_modality", "unknown")]);
        let embeddings = of_call("embeddings", &[]);
        for (name, labels, a, b) in [
            (
                "gen_ai_client_inference_duration_seconds",
                &failed,
                1.0,
                1.0,
            ),
            (
                "gen_ai_client_inference_time_to_first_chunk_seconds",
                &chat,
                1.0,
                0.1,
            ),
            (
                "gen_ai_client_inference_operation_input_tokens",
                &failed,
                1.0,
                100.0,
            ),
            (
                "gen_ai_client_inference_operation_output_tokens",
                &failed,
                1.0,
                40.0,
            ),
            (
                "gen_ai_client_inference_usage_input_tokens_total",
                &usage,
                100.0,
                0.0,
            ),
            (
                "gen_ai_client_inference_usage_output_tokens_total",
                &usage,
                40.0,
                0.0,
            ),
            (
                "gen_ai_client_inference_usage_cache_read_input_tokens_total",
                &usage,
                30.0,
                0.0,
            ),
            (
                "gen_ai_client_inference_usage_cache_write_input_tokens_total",
                &usage,
                20.0,
                0.0,
            ),
            (
                "gen_ai_client_inference_usage_reasoning_output_tokens_total",
                &usage,
                10.0,
                0.0,
            ),
            (
                "gen_ai_client_embeddings_duration_seconds",
                &embeddings,
                1.0,
                1.0,
            ),
            (
                "gen_ai_client_embeddings_operation_input_tokens",
                &embeddings,
                1.0,
                100.0,
            ),
        ] {
            assert_eq!(series[name], [(labels.clone(), a, b)], "{name}");
        }
    }

    /// The Prometheus names of the newest conventions' metrics.
    const GEN_AI_LATEST_NAMES: [&str; 11] = [
        "gen_ai_client_inference_duration_seconds",
        "gen_ai_client_inference_time_to_first_chunk_seconds",
        "gen_ai_client_inference_operation_input_tokens",
        "gen_ai_client_inference_operation_output_tokens",
        "gen_ai_client_inference_usage_input_tokens_total",
        "gen_ai_client_inference_usage_output_tokens_total",
        "gen_ai_client_inference_usage_cache_read_input_tokens_total",
        "gen_ai_client_inference_usage_cache_write_input_tokens_total",
        "gen_ai_client_inference_usage_reasoning_output_tokens_total",
        "gen_ai_client_embeddings_duration_seconds",
        "gen_ai_client_embeddings_operation_input_tokens",
    ];
}
