//! The OpenTelemetry → Prometheus pipeline: two meter providers bridged into two
//! Prometheus registries, and the guarded collection that turns them into exposition.
//!
//! loopwatch's own instruments live on the *core* provider, which runs no user code.
//! Instruments users add through [`Monitor::meter`](crate::Monitor::meter) live on a
//! separate *user* provider, so a panic in a user's observable callback (which poisons
//! that provider's locks for good) costs only the user's metrics, never loopwatch's.

use std::panic::{catch_unwind, AssertUnwindSafe};

use opentelemetry::metrics::{Counter, Meter, MeterProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::proto::MetricFamily;
use prometheus::{Registry, TextEncoder};

use crate::catalog;
use crate::error::Error;

/// Name of the instrumentation scope of loopwatch's own instruments.
pub(crate) const CORE_SCOPE: &str = "loopwatch";
/// Name of the instrumentation scope handed to users.
pub(crate) const USER_SCOPE: &str = "loopwatch.user";

/// Why a collection produced no usable exposition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollectError {
    /// Collecting loopwatch's own metrics panicked.
    #[error("collecting loopwatch's metrics panicked; see the log for the panic message")]
    Panicked,
    /// The collection returned without loopwatch's metrics (the SDK failed internally).
    #[error("the metrics collection came back without loopwatch's own metrics")]
    Incomplete,
    /// The collected families could not be encoded as text.
    #[error("encoding the exposition failed: {0}")]
    Encode(String),
}

/// The two providers and registries, and the counter of failed collections.
pub(crate) struct Pipeline {
    core_provider: SdkMeterProvider,
    user_provider: SdkMeterProvider,
    core_registry: Registry,
    user_registry: Registry,
    core_meter: Meter,
    user_meter: Meter,
    collection_errors: Counter<u64>,
    user_poisoned: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
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
    let exporter = builder
        .build()
        .map_err(|e| Error::Pipeline(format!("OTLP exporter: {e}")))?;
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
        .map_err(|e| Error::Pipeline(e.to_string()))?;
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
    /// Builds both providers; with `otlp`, each also exports over OTLP/HTTP.
    pub(crate) fn new(otlp: bool) -> Result<Self, Error> {
        let (core_provider, core_registry) = bridged_provider(otlp)?;
        let (user_provider, user_registry) = bridged_provider(otlp)?;
        let core_meter = core_provider.meter(CORE_SCOPE);
        let user_meter = user_provider.meter(USER_SCOPE);
        let collection_errors =
            crate::instruments::counter(&core_meter, &catalog::COLLECTION_ERRORS_TOTAL);
        for source in ["core", "user"] {
            collection_errors.add(0, &[KeyValue::new("source", source)]);
        }
        Ok(Pipeline {
            core_provider,
            user_provider,
            core_registry,
            user_registry,
            core_meter,
            user_meter,
            collection_errors,
            user_poisoned: Default::default(),
        })
    }

    /// The meter loopwatch's own instruments are created on.
    pub(crate) fn core_meter(&self) -> &Meter {
        &self.core_meter
    }

    /// The meter handed to users for their own instruments.
    pub(crate) fn user_meter(&self) -> &Meter {
        &self.user_meter
    }

    /// Collects every metric family, loopwatch's first, sorted by name.
    ///
    /// Fails rather than return a partial answer when loopwatch's own metrics are
    /// missing; user metrics that fail to collect are dropped, counted and logged.
    pub(crate) fn gather(&self) -> Result<Vec<MetricFamily>, CollectError> {
        let mut families = match catch_unwind(AssertUnwindSafe(|| self.core_registry.gather())) {
            Ok(families) => families,
            Err(_) => {
                self.collection_errors
                    .add(1, &[KeyValue::new("source", "core")]);
                tracing::error!("collecting loopwatch's own metrics panicked");
                return Err(CollectError::Panicked);
            }
        };
        if !families
            .iter()
            .any(|f| f.name() == catalog::ITERATION_NUMBER.name)
        {
            self.collection_errors
                .add(1, &[KeyValue::new("source", "core")]);
            return Err(CollectError::Incomplete);
        }
        match catch_unwind(AssertUnwindSafe(|| self.user_registry.gather())) {
            Ok(user) => {
                for family in user {
                    if catalog::find(family.name()).is_some() {
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
                self.collection_errors
                    .add(1, &[KeyValue::new("source", "user")]);
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
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Encodes metric families in the Prometheus text exposition format.
pub(crate) fn encode_text(families: &[MetricFamily]) -> Result<String, CollectError> {
    TextEncoder::new()
        .encode_to_string(families)
        .map_err(|e| CollectError::Encode(e.to_string()))
}
