//! The model servers' part of the monitor: one reader per server at the sampling
//! interval, on loopwatch's runtime (never the loop's thread), each read sent as an
//! [`Event::ModelServer`]; and what the publisher makes of a read: the servers'
//! series, their error counter, and one log line when a server stops or starts
//! answering.
//!
//! One server is read once at a time: a read holds that server's lock from its
//! request until its event is sent, so the periodic reader and
//! [`read_all_now`] never overlap on a server and its reads arrive in the order they
//! were made. (Two reads in flight at once could land out of order, an older page
//! after a newer one, and the server's counters would seem to have gone back: a
//! restart, its lifetime preemptions counted as new ones.)

use std::sync::Arc;

use opentelemetry::KeyValue;
use tokio_util::sync::CancellationToken;

use crate::servers::book::{Change, Health, News, ServerView};
use crate::servers::{ReadFailure, ServerKind};

use super::event::{Event, ServerRead};
use super::hub::Hub;
use super::publish::Publisher;

/// Starts one reader per configured server.
pub(super) fn spawn_readers(
    runtime: &tokio::runtime::Runtime,
    hub: &Arc<Hub>,
    cancel: &CancellationToken,
) {
    for index in 0..hub.model_servers.servers.len() {
        runtime.spawn(read_periodically(Arc::clone(hub), index, cancel.clone()));
    }
}

/// Reads server `index` at the sampling interval until cancelled; a read that takes
/// longer delays the next one.
async fn read_periodically(hub: Arc<Hub>, index: usize, cancel: CancellationToken) {
    let mut ticker = tokio::time::interval(hub.settings.sample_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            () = read_and_send(&hub, index) => {}
        }
    }
}

/// Reads server `index` once, in its turn, and sends what it said before the next
/// read of it may start.
async fn read_and_send(hub: &Hub, index: usize) {
    let _turn = hub.model_servers.turns[index].lock().await;
    let outcome = hub.model_servers.read(index).await;
    send(hub, index, outcome);
}

/// Sends one read's outcome.
fn send(hub: &Hub, index: usize, outcome: Result<crate::servers::Reading, ReadFailure>) {
    hub.send(Event::ModelServer(Box::new(ServerRead {
        index,
        outcome,
        at: hub.clock.now(),
    })));
}

/// Reads every server once, concurrently, on `runtime`, and sends the reads in the
/// configuration's order; returns once all are sent (each read is bounded by its
/// time limit). A server the periodic reader is reading is read again once that
/// read is sent: every server's turn is taken first, in the configuration's order
/// (as every caller takes them, so two callers never wait on each other in a
/// circle), and given back once the reads are sent.
pub(super) fn read_all_now(hub: &Arc<Hub>, runtime: &tokio::runtime::Runtime) {
    let count = hub.model_servers.servers.len();
    if count == 0 {
        return;
    }
    let (sender, receiver) = std::sync::mpsc::channel();
    let reader = Arc::clone(hub);
    runtime.spawn(async move {
        let hub = reader;
        let mut turns = Vec::with_capacity(count);
        for turn in &hub.model_servers.turns {
            turns.push(Arc::clone(turn).lock_owned().await);
        }
        let reads = (0..count).map(|index| {
            let hub = Arc::clone(&hub);
            async move { hub.model_servers.read(index).await }
        });
        let outcomes = futures_util::future::join_all(reads).await;
        for (index, outcome) in outcomes.into_iter().enumerate() {
            send(&hub, index, outcome);
        }
        drop(turns);
        let _ = sender.send(());
    });
    // The task ends by sending, or is dropped with its sender when the runtime
    // shuts down: either way this returns.
    let _ = receiver.recv();
}

/// The labels of a server's series.
fn labels(server: &ServerView) -> Vec<KeyValue> {
    vec![
        KeyValue::new("server", server.name.clone()),
        KeyValue::new("kind", server.kind.as_str()),
    ]
}

impl Publisher {
    /// Every configured server's series from the start: not up yet, no error, no
    /// preemption.
    pub(super) fn model_servers_configured(&self, servers: &[ServerView]) {
        let i = &self.pipeline.instruments;
        for server in servers {
            i.loopwatch_llm_server_preemptions_total
                .add(0, &labels(server));
            if server.kind != ServerKind::Ollama {
                i.loopwatch_llm_server_queue_seconds_total
                    .add(0.0, &labels(server));
                i.loopwatch_llm_server_queued_requests_total
                    .add(0, &labels(server));
                i.loopwatch_llm_server_first_token_seconds_total
                    .add(0.0, &labels(server));
                i.loopwatch_llm_server_first_tokens_total
                    .add(0, &labels(server));
            }
            for reason in ReadFailure::REASONS {
                let mut labels = labels(server);
                labels.push(KeyValue::new("reason", reason));
                i.loopwatch_llm_server_read_errors_total.add(0, &labels);
            }
        }
        self.model_server_series(servers);
    }

    /// What a read changed: the counters, every server's gauges, and the log line of
    /// a server that stopped or started answering.
    pub(super) fn model_server(&self, change: &Change, servers: &[ServerView]) {
        let Some(server) = servers.get(change.index) else {
            return;
        };
        let i = &self.pipeline.instruments;
        if change.preemptions_added > 0.0 {
            i.loopwatch_llm_server_preemptions_total
                .add(change.preemptions_added.round() as u64, &labels(server));
        }
        for (added, seconds, requests) in [
            (
                change.queue_time_added,
                &i.loopwatch_llm_server_queue_seconds_total,
                &i.loopwatch_llm_server_queued_requests_total,
            ),
            (
                change.time_to_first_token_added,
                &i.loopwatch_llm_server_first_token_seconds_total,
                &i.loopwatch_llm_server_first_tokens_total,
            ),
        ] {
            if added.count > 0.0 || added.sum > 0.0 {
                seconds.add(added.sum, &labels(server));
                requests.add(added.count.round() as u64, &labels(server));
            }
        }
        if let Some(reason) = change.failure {
            let mut labels = labels(server);
            labels.push(KeyValue::new("reason", reason));
            i.loopwatch_llm_server_read_errors_total.add(1, &labels);
        }
        self.model_server_series(servers);
        match &change.news {
            Some(News::FirstRead) => tracing::info!(
                server = %server.name,
                kind = server.kind.as_str(),
                url = %server.endpoint,
                "reading the model server"
            ),
            Some(News::Up) => tracing::info!(
                server = %server.name,
                kind = server.kind.as_str(),
                url = %server.endpoint,
                "the model server answers again; its readings are back"
            ),
            Some(News::Down(why)) => tracing::warn!(
                server = %server.name,
                kind = server.kind.as_str(),
                url = %server.endpoint,
                "cannot read the model server: {why}; its readings are left out until it answers (loopwatch_llm_server_up 0)"
            ),
            None => {}
        }
    }

    /// Every server's gauges: a server that is not up has only `up`, at 0.
    fn model_server_series(&self, servers: &[ServerView]) {
        let i = &self.pipeline.instruments;
        let series = |value: &dyn Fn(&ServerView) -> Option<f64>| {
            servers
                .iter()
                .filter(|s| s.health == Health::Up)
                .filter_map(|s| value(s).map(|v| (labels(s), v)))
                .collect::<Vec<_>>()
        };
        i.loopwatch_llm_server_up.set_series(
            servers
                .iter()
                .map(|s| (labels(s), f64::from(u8::from(s.health == Health::Up))))
                .collect(),
        );
        i.loopwatch_llm_server_requests_running
            .set_series(series(&|s| s.running));
        i.loopwatch_llm_server_requests_waiting
            .set_series(series(&|s| s.waiting));
        i.loopwatch_llm_server_kv_cache_usage_ratio
            .set_series(series(&|s| s.kv_cache_usage));
        i.loopwatch_llm_server_waiting_kv_cache_usage_ratio
            .set_series(series(&|s| s.waiting_kv_cache_usage));
        i.loopwatch_llm_server_retracted_requests
            .set_series(series(&|s| s.retracting));
        i.loopwatch_llm_server_prefix_cache_hit_ratio
            .set_series(series(&|s| s.prefix_cache_hit_ratio));
        i.loopwatch_llm_server_time_to_first_token_seconds
            .set_series(series(&|s| s.time_to_first_token_seconds));
        i.loopwatch_llm_server_queue_time_seconds
            .set_series(series(&|s| s.queue_time_seconds));
        i.loopwatch_llm_server_models_loaded
            .set_series(series(&|s| s.models.as_ref().map(|m| m.len() as f64)));
        let mut memory = Vec::new();
        for server in servers.iter().filter(|s| s.health == Health::Up) {
            for model in server.models.iter().flatten() {
                for (placement, bytes) in [("total", model.size_bytes), ("vram", model.vram_bytes)]
                {
                    let mut labels = labels(server);
                    labels.push(KeyValue::new("model", model.name.clone()));
                    labels.push(KeyValue::new("memory", placement));
                    memory.push((labels, bytes as f64));
                }
            }
        }
        i.loopwatch_llm_server_model_memory_bytes.set_series(memory);
    }
}
