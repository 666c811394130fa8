//! Alert delivery to Alertmanager through its v2 API (`POST /api/v2/alerts`).
//!
//! The loop's thread only updates a small table of each alert's latest state and bumps
//! a generation counter; one background task per Alertmanager sends that state. So
//! delivery never blocks the loop, and while an Alertmanager is down its task retries
//! with backoff and then sends the *current* state: nothing is lost, and nothing is
//! queued up to be replayed as duplicates. Firing alerts are re-sent periodically with
//! `endsAt` in the future (so they expire if the loop dies); resolved alerts are sent
//! with `endsAt` at the resolution time until each Alertmanager has accepted them, after
//! a hold that lets a Prometheus rule on the same condition resolve first.
//!
//! The labels (`alertname`, `severity`, `job="loopwatch"`, `run_id`, and `instance`
//! set to the host name) are exactly those of the generated Prometheus rules, which
//! join `loopwatch_run_info`: with both paths pointed at one Alertmanager, each
//! problem is one alert there, and notifies once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::metrics::Counter;
use opentelemetry::KeyValue;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::alerts::{AlertName, AlertState};
use crate::evaluate::Transition;

/// Longest wait between retries while an Alertmanager is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Per-request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The latest state of one alert, as delivered.
#[derive(Debug, Clone)]
struct AlertRecord {
    firing_since: SystemTime,
    resolved_at: Option<SystemTime>,
    value: f64,
    threshold: f64,
    iteration: u64,
    note: Option<&'static str>,
    /// What the alert is about, when it is one thing among many.
    subject: Option<Arc<str>>,
    /// Bumped on every change, so each receiver knows what it has not yet accepted.
    generation: u64,
}

#[derive(Debug, Default)]
struct Table {
    alerts: BTreeMap<AlertName, AlertRecord>,
    generation: u64,
}

/// Identity labels every alert carries.
#[derive(Debug, Clone)]
pub(crate) struct AlertIdentity {
    pub(crate) run_id: String,
    pub(crate) instance: String,
    /// The loop labels that are set (`experiment`, `loop`).
    pub(crate) loop_labels: Vec<(&'static str, String)>,
    pub(crate) generator_url: String,
}

/// How delivery is paced.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pacing {
    /// Period at which firing alerts are re-sent.
    pub(crate) resend: Duration,
    /// How long a resolution is held back before it is sent.
    pub(crate) resolve_hold: Duration,
}

/// The loop-side handle: records transitions, wakes the senders.
#[derive(Debug, Clone)]
pub(crate) struct AlertSink {
    table: Arc<Mutex<Table>>,
    wake: Arc<watch::Sender<u64>>,
    urls: Vec<String>,
    identity: AlertIdentity,
    pacing: Pacing,
}

impl AlertSink {
    /// Records a firing or resolved transition (pending ones are not delivered).
    pub(crate) fn update(&self, transition: &Transition) {
        let generation = {
            let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
            table.generation += 1;
            let generation = table.generation;
            match transition.state {
                AlertState::Firing => {
                    table.alerts.insert(
                        transition.alert,
                        AlertRecord {
                            firing_since: transition.firing_since.unwrap_or(transition.at),
                            resolved_at: None,
                            value: transition.value,
                            threshold: transition.threshold,
                            iteration: transition.iteration,
                            note: transition.note,
                            subject: transition.subject.clone(),
                            generation,
                        },
                    );
                }
                AlertState::Inactive if transition.is_resolution() => {
                    if let Some(record) = table.alerts.get_mut(&transition.alert) {
                        record.resolved_at = Some(transition.at);
                        record.iteration = transition.iteration;
                        record.generation = generation;
                    }
                }
                _ => return,
            }
            generation
        };
        self.wake.send_replace(generation);
    }

    /// Sends the current state (firing alerts, and resolutions even if still held) to
    /// every Alertmanager once, waiting at most `timeout` in all: the last word of a
    /// monitor that is closing, a panicking loop's included.
    pub(crate) async fn flush(&self, timeout: Duration) {
        let now = SystemTime::now();
        let alerts = payload(&self.table, &self.identity, self.pacing, None, now, true).0;
        if alerts.is_empty() {
            return;
        }
        let body = serde_json::to_vec(&alerts).unwrap_or_default();
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let posts = self.urls.iter().map(|url| {
            let endpoint = format!("{url}/api/v2/alerts");
            let body = body.clone();
            let client = client.clone();
            async move {
                match post(&client, url, &endpoint, body).await {
                    Ok(()) => tracing::info!(url = %url, "final alert state delivered"),
                    Err(PostError::Unreachable(e) | PostError::Rejected(e)) => {
                        tracing::error!(url = %url, error = %e, "final alert state not delivered")
                    }
                }
            }
        });
        if tokio::time::timeout(timeout, futures_util::future::join_all(posts))
            .await
            .is_err()
        {
            tracing::error!(
                ?timeout,
                "final alert state: Alertmanager did not answer in time"
            );
        }
    }
}

/// Starts one sender task per Alertmanager and returns the loop-side handle.
pub(crate) fn start(
    runtime: &tokio::runtime::Handle,
    urls: &[String],
    identity: AlertIdentity,
    pacing: Pacing,
    deliveries: Counter<u64>,
    cancel: CancellationToken,
) -> AlertSink {
    let table = Arc::new(Mutex::new(Table::default()));
    let (wake, _) = watch::channel(0u64);
    let wake = Arc::new(wake);
    for url in urls {
        let sender = Sender {
            url: url.clone(),
            endpoint: format!("{url}/api/v2/alerts"),
            table: Arc::clone(&table),
            identity: identity.clone(),
            pacing,
            deliveries: deliveries.clone(),
            delivered: BTreeMap::new(),
        };
        runtime.spawn(sender.run(wake.subscribe(), cancel.clone()));
    }
    AlertSink {
        table,
        wake,
        urls: urls.to_vec(),
        identity,
        pacing,
    }
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// Why a delivery failed: worth retrying, or not.
enum PostError {
    /// Connection refused, timed out, or a server error: retried with backoff.
    Unreachable(String),
    /// A 4xx answer: the payload itself was refused.
    Rejected(String),
}

struct Sender {
    url: String,
    endpoint: String,
    table: Arc<Mutex<Table>>,
    identity: AlertIdentity,
    pacing: Pacing,
    deliveries: Counter<u64>,
    /// Generation of each alert this Alertmanager has accepted.
    delivered: BTreeMap<AlertName, u64>,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The alerts to send now, and the generations they carry: every firing alert, and the
/// resolutions not yet accepted (`delivered`, none for a flush) whose hold has passed
/// (or all of them, with `final_word`). Also the time the next held resolution is due.
fn payload(
    table: &Mutex<Table>,
    identity: &AlertIdentity,
    pacing: Pacing,
    delivered: Option<&BTreeMap<AlertName, u64>>,
    now: SystemTime,
    final_word: bool,
) -> (Vec<Value>, Vec<(AlertName, u64)>, Option<SystemTime>) {
    let table = table.lock().unwrap_or_else(PoisonError::into_inner);
    let mut alerts = Vec::new();
    let mut generations = Vec::new();
    let mut next_due: Option<SystemTime> = None;
    for (name, record) in &table.alerts {
        let accepted = delivered.and_then(|d| d.get(name).copied()).unwrap_or(0);
        if let Some(resolved_at) = record.resolved_at {
            if accepted >= record.generation {
                continue;
            }
            let due = resolved_at + pacing.resolve_hold;
            if !final_word && due > now {
                next_due = Some(next_due.map_or(due, |d| d.min(due)));
                continue;
            }
        }
        // Alertmanager refuses a batch holding an alert whose end is not after its
        // start, so a resolution in the same instant ends a millisecond later.
        let ends_at = record
            .resolved_at
            .unwrap_or(now + pacing.resend * 4)
            .max(record.firing_since + Duration::from_millis(1));
        let value = if record.value.is_finite() {
            record.value
        } else {
            0.0
        };
        let mut labels = json!({
            "alertname": name.as_str(),
            "severity": name.severity(),
            "job": "loopwatch",
            "run_id": identity.run_id,
            "instance": identity.instance,
        });
        for (key, value) in &identity.loop_labels {
            labels[*key] = json!(value);
        }
        alerts.push(json!({
            "labels": labels,
            "annotations": {
                "summary": name.message(),
                "description": format!(
                    "{}{}: value {value} against threshold {} at iteration {}{}",
                    name.message(),
                    record.subject.as_deref().map(|subject| format!(" ({subject})")).unwrap_or_default(),
                    record.threshold, record.iteration,
                    record.note.map(|note| format!(" ({note})")).unwrap_or_default()
                ),
                "value": value.to_string(),
                "threshold": record.threshold.to_string(),
                "iteration": record.iteration.to_string(),
                "runbook": name.spec().runbook,
            },
            "startsAt": rfc3339(record.firing_since),
            "endsAt": rfc3339(ends_at),
            "generatorURL": identity.generator_url,
        }));
        generations.push((*name, record.generation));
    }
    (alerts, generations, next_due)
}

/// Posts alerts to one Alertmanager.
async fn post(
    client: &HttpClient,
    url: &str,
    endpoint: &str,
    body: Vec<u8>,
) -> Result<(), PostError> {
    let request = hyper::Request::post(endpoint)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| PostError::Rejected(format!("bad Alertmanager URL {url}: {e}")))?;
    let response = tokio::time::timeout(REQUEST_TIMEOUT, client.request(request))
        .await
        .map_err(|_| PostError::Unreachable("timed out".to_string()))?
        .map_err(|e| PostError::Unreachable(e.to_string()))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    let message = format!("HTTP {status}: {}", body.trim());
    if status.is_client_error() {
        Err(PostError::Rejected(message))
    } else {
        Err(PostError::Unreachable(message))
    }
}

impl Sender {
    async fn run(mut self, mut wake: watch::Receiver<u64>, cancel: CancellationToken) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let mut backoff = Duration::from_secs(1);
        let mut down_since: Option<SystemTime> = None;
        loop {
            let now = SystemTime::now();
            let (alerts, generations, next_due) = payload(
                &self.table,
                &self.identity,
                self.pacing,
                Some(&self.delivered),
                now,
                false,
            );
            let mut wait = self.pacing.resend;
            if let Some(due) = next_due {
                // Wake when the next held resolution is due.
                wait = wait
                    .min(due.duration_since(now).unwrap_or_default() + Duration::from_millis(10));
            }
            if !alerts.is_empty() {
                let body = serde_json::to_vec(&alerts).unwrap_or_default();
                match post(&client, &self.url, &self.endpoint, body).await {
                    Ok(()) => {
                        self.deliveries.add(
                            1,
                            &[
                                KeyValue::new("url", self.url.clone()),
                                KeyValue::new("outcome", "success"),
                            ],
                        );
                        for (name, generation) in generations {
                            self.delivered.insert(name, generation);
                        }
                        if down_since.take().is_some() {
                            tracing::info!(url = %self.url, "Alertmanager reachable again; current alert state delivered");
                        }
                        backoff = Duration::from_secs(1);
                    }
                    Err(PostError::Rejected(err)) => {
                        // Sending the same payload again would be refused again: log it,
                        // count it and move on rather than block every later alert.
                        self.deliveries.add(
                            1,
                            &[
                                KeyValue::new("url", self.url.clone()),
                                KeyValue::new("outcome", "failure"),
                            ],
                        );
                        tracing::error!(url = %self.url, error = %err, "Alertmanager refused the alerts");
                        for (name, generation) in generations {
                            self.delivered.insert(name, generation);
                        }
                    }
                    Err(PostError::Unreachable(err)) => {
                        self.deliveries.add(
                            1,
                            &[
                                KeyValue::new("url", self.url.clone()),
                                KeyValue::new("outcome", "failure"),
                            ],
                        );
                        if down_since.is_none() {
                            down_since = Some(SystemTime::now());
                            tracing::error!(url = %self.url, error = %err, "cannot deliver alerts to Alertmanager; retrying with backoff");
                        }
                        wait = backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = wake.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
