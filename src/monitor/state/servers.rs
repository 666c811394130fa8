//! The model servers' part of the run's state: each server's books
//! ([`ServerBook`]), its history of points for the page, thinned like the host
//! samples, and how long it has been saturated, for LLMServerSaturated.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::alerts::LLM_SERVER_PREEMPTION_WINDOW;
use crate::config::Thresholds;
use crate::export::ModelServersView;
use crate::records::thinned::Thinned;
use crate::records::MAX_TIME_POINTS;
use crate::servers::book::{Change, ServerBook, ServerPoint, ServerView, When};
use crate::servers::{ModelServer, ReadFailure, Reading};

/// Whether one server is saturated: requests waiting at an engine whose KV cache is
/// nearly full, or preemptions within [`LLM_SERVER_PREEMPTION_WINDOW`], at each read.
#[derive(Debug, Default)]
struct Saturation {
    /// Since when (monotonic) every read found it saturated; `None` while it is not,
    /// or cannot be read.
    since: Option<Duration>,
    /// Its KV-cache usage at the last read.
    usage: f64,
    /// When preemptions were added, and how many, within the window (the first read
    /// adds none: it is where counting starts).
    preempted: VecDeque<(Duration, f64)>,
}

impl Saturation {
    /// A read of the server `at` (monotonic): saturated or not, from its view and the
    /// preemptions the read added; a failed read (`view` not up) knows nothing.
    fn read(&mut self, view: &ServerView, change: &Change, fraction: f64, at: Duration) {
        if change.failure.is_some() {
            self.since = None;
            return;
        }
        if change.preemptions_added > 0.0 {
            self.preempted.push_back((at, change.preemptions_added));
        }
        // SGLang without its retraction counter: its older gauge above 0 says it
        // retracted requests in the batch it last logged.
        if let Some(retracted) = view.retracting.filter(|r| *r > 0.0) {
            self.preempted.push_back((at, retracted));
        }
        while let Some(&(when, _)) = self.preempted.front() {
            if at.saturating_sub(when) < LLM_SERVER_PREEMPTION_WINDOW {
                break;
            }
            self.preempted.pop_front();
        }
        self.usage = view.kv_cache_usage.unwrap_or(0.0);
        // Requests waiting at an engine whose own cache is full (not one engine's
        // queue beside another's full cache).
        let waiting_while_full = view.waiting_kv_cache_usage.is_some_and(|k| k >= fraction);
        let saturated = waiting_while_full || !self.preempted.is_empty();
        self.since = if saturated {
            self.since.or(Some(at))
        } else {
            None
        };
    }
}

/// The model servers, as far as their reads have arrived.
#[derive(Debug)]
pub(super) struct Servers {
    book: ServerBook,
    /// One history per server, in the configuration's order.
    history: Vec<Thinned<ServerPoint>>,
    /// One per server, in the configuration's order.
    saturation: Vec<Saturation>,
}

impl Servers {
    /// The books of `servers`, none read yet.
    pub(super) fn new(servers: &[ModelServer]) -> Self {
        Servers {
            book: ServerBook::new(servers),
            history: servers
                .iter()
                .map(|_| Thinned::with_capacity(MAX_TIME_POINTS))
                .collect(),
            saturation: servers.iter().map(|_| Saturation::default()).collect(),
        }
    }

    /// Whether any server is configured.
    pub(super) fn any(&self) -> bool {
        !self.book.is_empty()
    }

    /// A streamed call through the metering proxy got its first chunk after
    /// `seconds`.
    pub(super) fn proxy_first_chunk(&mut self, seconds: f64) {
        if self.any() {
            self.book.proxy_first_chunk(seconds);
        }
    }

    /// Applies a read of server `index` that ended `at` (`mono`: the monitor's
    /// clock): what changed, and every server as it now stands; `None` for an index
    /// no server has.
    pub(super) fn read(
        &mut self,
        index: usize,
        outcome: Result<Reading, ReadFailure>,
        at: When,
        mono: Duration,
        th: &Thresholds,
    ) -> Option<(Change, Vec<ServerView>)> {
        let change = self.book.read(index, outcome, at)?;
        if let (Some(point), Some(history)) = (change.point, self.history.get_mut(index)) {
            history.push(point);
        }
        let views = self.book.views();
        if let (Some(saturation), Some(view)) = (self.saturation.get_mut(index), views.get(index)) {
            saturation.read(view, &change, th.llm_server_kv_cache_fraction(), mono);
        }
        Some((change, views))
    }

    /// The server saturated the longest at `now`: its name, how long, and its
    /// KV-cache usage; `None` while none is.
    pub(super) fn most_saturated(&self, now: Duration) -> Option<(Arc<str>, Duration, f64)> {
        self.saturation
            .iter()
            .zip(self.book.iter())
            .filter_map(|(s, view)| {
                s.since
                    .map(|since| (view, now.saturating_sub(since), s.usage))
            })
            .max_by(|a, b| a.1.cmp(&b.1).then(a.2.total_cmp(&b.2)))
            .map(|(view, held, usage)| (Arc::from(view.name.as_str()), held, usage))
    }

    /// The servers and their histories, for the page and the JSON.
    pub(super) fn view(&self) -> ModelServersView {
        ModelServersView {
            servers: self.book.views(),
            points: self.history.iter().map(Thinned::points).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servers::exposition;
    use crate::servers::ServerKind;

    fn page(waiting: f64, kv: f64, preemptions: f64) -> Result<Reading, ReadFailure> {
        exposition::read(
            ServerKind::Vllm,
            &format!(
                "vllm:num_requests_waiting {waiting}\nvllm:kv_cache_usage_perc {kv}\n\
                 vllm:num_preemptions_total {preemptions}\n"
            ),
        )
    }

    fn seconds(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_server_is_saturated_while_requests_wait_at_a_full_cache_or_it_preempts() {
        let th = Thresholds::default();
        let mut servers = Servers::new(&[
            "a:vllm=http://127.0.0.1:1".parse().unwrap(),
            "b:vllm=http://127.0.0.1:2".parse().unwrap(),
        ]);
        let read = |servers: &mut Servers, index, outcome, at: u64| {
            servers
                .read(index, outcome, When::default(), seconds(at), &th)
                .unwrap();
        };
        // Preemptions from before loopwatch read it are where counting starts.
        read(&mut servers, 0, page(0.0, 0.5, 40.0), 0);
        read(&mut servers, 1, page(2.0, 0.95, 0.0), 0);
        read(&mut servers, 0, page(0.0, 0.5, 40.0), 10);
        read(&mut servers, 1, page(3.0, 0.97, 0.0), 10);
        let (name, held, usage) = servers.most_saturated(seconds(10)).unwrap();
        assert_eq!((&*name, held, usage), ("b", seconds(10), 0.97));
        // The cache below the fraction: b is not saturated any more.
        read(&mut servers, 1, page(3.0, 0.89, 0.0), 20);
        assert!(servers.most_saturated(seconds(20)).is_none());
        // a preempts: saturated from then on, for as long as preemptions are within
        // the window.
        read(&mut servers, 0, page(0.0, 0.5, 43.0), 30);
        read(&mut servers, 0, page(0.0, 0.5, 43.0), 80);
        assert_eq!(servers.most_saturated(seconds(80)).unwrap().1, seconds(50));
        read(&mut servers, 0, page(0.0, 0.5, 43.0), 91);
        assert!(
            servers.most_saturated(seconds(91)).is_none(),
            "the window passed"
        );
        // A read that fails knows nothing: saturation ends.
        read(&mut servers, 1, page(3.0, 0.99, 0.0), 100);
        assert!(servers.most_saturated(seconds(100)).is_some());
        read(&mut servers, 1, Err(ReadFailure::Timeout), 101);
        assert!(servers.most_saturated(seconds(101)).is_none());
    }

    /// An older SGLang, without its retraction counter: its gauge above 0 (the batch
    /// it last logged retracted requests) is preempting, within the minute after;
    /// at 0, nothing.
    #[test]
    fn an_older_sglangs_retraction_gauge_counts_as_preempting() {
        let th = Thresholds::default();
        let mut servers = Servers::new(&["s:sglang=http://127.0.0.1:1".parse().unwrap()]);
        let page = |requests: u64, retracted: u32| {
            exposition::read(
                ServerKind::Sglang,
                &format!(
                    "sglang:num_queue_reqs 0\nsglang:token_usage 0.5\n\
                     sglang:num_retracted_reqs {retracted}\n\
                     sglang:num_requests_total {requests}\nsglang:generation_tokens_total 9000\n"
                ),
            )
        };
        let mut read = |requests, retracted, at: u64| {
            servers
                .read(
                    0,
                    page(requests, retracted),
                    When::from(at as f64),
                    seconds(at),
                    &th,
                )
                .unwrap();
            servers.most_saturated(seconds(at)).map(|s| s.1)
        };
        assert_eq!(read(1, 0, 0), None);
        assert_eq!(read(2, 0, 1), None, "working, nothing retracted");
        assert_eq!(read(3, 3, 2), Some(seconds(0)));
        assert_eq!(read(4, 0, 30), Some(seconds(28)));
        assert_eq!(read(5, 0, 62), None, "the minute passed");
    }

    /// Two engines: requests waiting at the one with room, the other's cache full
    /// with none waiting. Not saturated; waiting at the full one, saturated.
    #[test]
    fn waiting_while_full_is_one_engines() {
        let th = Thresholds::default();
        let mut servers = Servers::new(&["s:vllm=http://127.0.0.1:1".parse().unwrap()]);
        let page = |waiting: [u32; 2]| {
            exposition::read(
                ServerKind::Vllm,
                &format!(
                    "vllm:num_requests_waiting{{engine=\"0\"}} {}\n\
                     vllm:num_requests_waiting{{engine=\"1\"}} {}\n\
                     vllm:kv_cache_usage_perc{{engine=\"0\"}} 0.3\n\
                     vllm:kv_cache_usage_perc{{engine=\"1\"}} 0.98\n",
                    waiting[0], waiting[1]
                ),
            )
        };
        for at in 0..300 {
            servers
                .read(0, page([5, 0]), When::from(at as f64), seconds(at), &th)
                .unwrap();
            assert!(servers.most_saturated(seconds(at)).is_none(), "at {at} s");
        }
        servers
            .read(0, page([5, 1]), When::from(300.0), seconds(300), &th)
            .unwrap();
        assert!(servers.most_saturated(seconds(300)).is_some());
    }

    /// An idle SGLang server keeps the gauges of its last busy moment: requests
    /// waiting at a full cache, its counters standing still. Not saturated, however
    /// long; once its counters move, its gauges count.
    #[test]
    fn an_idle_sglang_server_with_old_gauges_is_not_saturated() {
        let th = Thresholds::default();
        let mut servers = Servers::new(&["s:sglang=http://127.0.0.1:1".parse().unwrap()]);
        let page = |requests: u64| {
            exposition::read(
                ServerKind::Sglang,
                &format!(
                    "sglang:num_queue_reqs 12\nsglang:token_usage 0.99\n\
                     sglang:num_requests_total {requests}\nsglang:generation_tokens_total 9000\n"
                ),
            )
        };
        for at in 0..600 {
            servers
                .read(0, page(100), When::from(at as f64), seconds(at), &th)
                .unwrap();
            assert!(servers.most_saturated(seconds(at)).is_none(), "at {at} s");
        }
        for at in 600..700 {
            servers
                .read(0, page(100 + at), When::from(at as f64), seconds(at), &th)
                .unwrap();
        }
        assert_eq!(servers.most_saturated(seconds(699)).unwrap().1, seconds(99));
    }
}
