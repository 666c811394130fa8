//! Starting a monitor: the settings resolved into a background runtime, the
//! pipeline, the hub, the endpoint, Alertmanager delivery, the containers feature,
//! the periodic tasks and the registration.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::containers::{CleanupCounters, Containers};
use crate::error::Error;
use crate::export::alertmanager::{self, AlertIdentity};
use crate::export::http::{self, EndpointCounters};
use crate::export::Source;
use crate::pipeline::Pipeline;
use crate::records::RunIdentity;
use crate::sample::HostSampler;

use super::background;
use super::handle::Monitor;
use super::hub::{Hub, Parts};

/// Binds the endpoint's address (port 0: a free port) for the runtime to serve.
fn bind(addr: SocketAddr) -> Result<(std::net::TcpListener, SocketAddr), Error> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| Error::Bind { addr, source })?;
    listener.set_nonblocking(true).map_err(Error::Runtime)?;
    let local_addr = listener.local_addr().map_err(Error::Runtime)?;
    Ok((listener, local_addr))
}

/// Starts Alertmanager delivery on the runtime, when URLs are configured.
fn start_alert_sink(
    settings: &Settings,
    identity: &RunIdentity,
    local_addr: SocketAddr,
    pipeline: &Pipeline,
    runtime: &tokio::runtime::Runtime,
    cancel: &CancellationToken,
) -> Option<alertmanager::AlertSink> {
    if settings.alertmanager_urls.is_empty() {
        return None;
    }
    Some(alertmanager::start(
        runtime.handle(),
        &settings.alertmanager_urls,
        AlertIdentity {
            run_id: identity.run_id.clone(),
            instance: identity.owner.host.clone(),
            loop_labels: identity
                .loop_labels()
                .into_iter()
                .map(|(k, v)| (k, v.to_string()))
                .collect(),
            generator_url: format!("http://{local_addr}/metrics"),
        },
        alertmanager::Pacing {
            resend: settings.thresholds.alert_resend_interval(),
            resolve_hold: settings.thresholds.alert_resolve_hold(),
        },
        pipeline
            .instruments
            .loopwatch_alert_deliveries_total
            .clone(),
        cancel.clone(),
    ))
}

/// Loads the endpoint's access control (TLS, basic auth), if a file is named.
fn load_access(settings: &Settings) -> Result<Option<http::Access>, Error> {
    let Some(path) = settings.web_config.as_deref() else {
        return Ok(None);
    };
    #[cfg(feature = "web-config")]
    return http::auth::WebConfig::load(path).map(Some);
    #[cfg(not(feature = "web-config"))]
    return Err(Error::InvalidSetting {
        variable: crate::config::ENV_WEB_CONFIG,
        value: path.display().to_string(),
        reason: "loopwatch was built without the `web-config` feature".into(),
    });
}

/// Starts a monitor with these settings.
pub(super) fn start(settings: Settings) -> Result<Monitor, Error> {
    let access = load_access(&settings)?;
    let (listener, local_addr) = bind(settings.listen)?;
    let started_at = SystemTime::now();
    if settings.otlp && !cfg!(feature = "otlp") {
        tracing::warn!("OTLP export was asked for, but loopwatch was built without the `otlp` feature; only /metrics serves the metrics");
    }
    let mut identity = RunIdentity::of_this_process();
    identity.experiment = settings.experiment.clone();
    identity.loop_name = settings.loop_name.clone();
    let pipeline = Pipeline::new(
        settings.otlp,
        &settings.alertmanager_urls,
        &identity,
        settings.genai,
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("loopwatch")
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let listener = {
        let _guard = runtime.enter();
        tokio::net::TcpListener::from_std(listener).map_err(Error::Runtime)?
    };
    let cancel = CancellationToken::new();

    let alert_sink = start_alert_sink(
        &settings, &identity, local_addr, &pipeline, &runtime, &cancel,
    );
    let containers = Arc::new(Containers::new(
        identity.clone(),
        runtime.handle().clone(),
        CleanupCounters::of(&pipeline.instruments),
        settings.container_stats,
    ));
    let scrapes = Arc::new(http::ScrapeClock::default());
    let endpoint_counters = EndpointCounters {
        renders: pipeline.instruments.loopwatch_metrics_renders_total.clone(),
        rejected: pipeline.instruments.loopwatch_http_rejected_total.clone(),
        scrapes: Arc::clone(&scrapes),
    };
    let hub = Arc::new(Hub::new(Parts {
        settings,
        identity,
        pipeline,
        local_addr,
        host_sampler: HostSampler::for_current_process(),
        started_at,
        alert_sink,
        containers,
    }));
    let source: Arc<dyn Source> = Arc::clone(&hub) as Arc<dyn Source>;
    runtime.spawn(http::serve(
        listener,
        source,
        access,
        endpoint_counters,
        cancel.clone(),
    ));
    background::spawn_all(&runtime, &hub, &cancel);
    let registration = hub.settings.register_dir.as_deref().and_then(|dir| {
        crate::export::register::Registration::register(dir, &hub.identity, local_addr)
    });
    tracing::info!(
        run_id = %hub.identity.run_id,
        listen = %local_addr,
        output_dir = %hub.settings.output_dir.display(),
        "loopwatch serving metrics at http://{local_addr}/metrics"
    );
    Ok(Monitor::assemble(
        hub,
        runtime,
        cancel,
        registration,
        scrapes,
    ))
}
