//! Local model servers (`[[llm.servers]]`): stand-in vLLM (its current and its older
//! metric names), SGLang and Ollama servers on loopback serve the servers' own formats
//! (`tests/support/model_servers.rs`; no model server runs here, and none fails on
//! cue); the monitor, its readers and its endpoint are real. Checked: each reading
//! republished exactly under loopwatch's names, counters turned into interval values;
//! a server that is down, times out, answers an error, garbage or too much degrades
//! its own readings only, with one log line and a counted error, the exposition
//! still well formed.

mod support;

use std::time::Duration;

use loopwatch::llm::LlmConfig;
use loopwatch::servers::ModelServer;
use loopwatch::{Monitor, Thresholds};
use support::model_servers::{page, Answer, StandIn};
use support::services::logs;
use support::*;

/// A monitor reading `servers` every second (so each read may take 2 s); the test
/// also reads when it wants, with `read_model_servers_now`.
fn monitor_of(servers: &[(&str, String)]) -> Monitor {
    monitor_reading_every(Duration::from_secs(1), servers)
}

/// A monitor reading `servers` every `interval` (the first read at once).
fn monitor_reading_every(interval: Duration, servers: &[(&str, String)]) -> Monitor {
    let mut llm = LlmConfig::default();
    for (spec, url) in servers {
        let (name, kind) = spec.split_once(':').unwrap();
        let server: ModelServer = format!("{name}:{kind}={url}").parse().unwrap();
        llm = llm.with_server(server).unwrap();
    }
    quiet_monitor()
        .sample_interval(interval)
        .thresholds(Thresholds::default().with_llm(llm))
        .build()
        .unwrap()
}

/// The exposition, parsed and checked well formed.
fn exposition(monitor: &Monitor) -> Exposition {
    assert_well_formed(&monitor.render_metrics().unwrap())
}

/// A server's series of `metric`, if it has one.
fn value(e: &Exposition, metric: &str, server: &str) -> Option<f64> {
    e.get(metric)?.value_with(&[("server", server)])
}

/// Waits until every server named has been read (up or not).
fn wait_read(monitor: &Monitor, servers: &[&str]) {
    wait_until(Duration::from_secs(20), "the first reads", || {
        let e = exposition(monitor);
        servers.iter().all(|s| {
            value(&e, "loopwatch_llm_server_up", s) == Some(1.0)
                || e["loopwatch_llm_server_read_errors_total"]
                    .samples
                    .iter()
                    .any(|(l, v)| l.get("server").map(String::as_str) == Some(s) && *v > 0.0)
        })
    });
}

#[test]
fn each_servers_readings_are_republished_exactly() {
    let vllm = StandIn::start("/metrics", Answer::Body(page("vllm-current-1.txt")));
    let older = StandIn::start("/metrics", Answer::Body(page("vllm-older.txt")));
    let sglang = StandIn::start("/metrics", Answer::Body(page("sglang.txt")));
    let ollama = StandIn::start("/api/ps", Answer::Body(page("ollama-ps.json")));
    // Read once at the start, then only when the test asks: each page is read when
    // the test says, and the history has one point per read asked for.
    let monitor = monitor_reading_every(
        Duration::from_secs(3600),
        &[
            ("vllm:vllm", vllm.url()),
            ("older:vllm", older.url()),
            ("sglang:sglang", sglang.url()),
            ("ollama:ollama", ollama.url()),
        ],
    );
    wait_read(&monitor, &["vllm", "older", "sglang", "ollama"]);
    let e = exposition(&monitor);
    let check = |e: &Exposition, server: &str, expected: &[(&str, f64)]| {
        for (metric, v) in expected {
            assert_eq!(
                value(e, &format!("loopwatch_llm_server_{metric}"), server),
                Some(*v),
                "{server}: {metric}"
            );
        }
    };
    for server in ["vllm", "older", "sglang", "ollama"] {
        check(&e, server, &[("up", 1.0)]);
    }
    // vLLM, current names, two engines: gauges summed (the cache: the fullest),
    // the first read's interval values since the server started; its preemptions
    // (17 since it started) are where counting starts, not new ones.
    check(
        &e,
        "vllm",
        &[
            ("requests_running", 8.0),
            ("requests_waiting", 6.0),
            ("kv_cache_usage_ratio", 0.93),
            ("waiting_kv_cache_usage_ratio", 0.93),
            ("preemptions_total", 0.0),
            ("queue_seconds_total", 0.0),
            ("queued_requests_total", 0.0),
            ("prefix_cache_hit_ratio", 4000.0 / 10000.0),
            ("time_to_first_token_seconds", 10.0 / 50.0),
            ("queue_time_seconds", 30.0 / 50.0),
        ],
    );
    // vLLM's older names: gpu_cache_usage_perc, gpu_prefix_cache_hit_rate.
    check(
        &e,
        "older",
        &[
            ("requests_running", 4.0),
            ("requests_waiting", 11.0),
            ("kv_cache_usage_ratio", 0.985),
            ("preemptions_total", 0.0),
            ("prefix_cache_hit_ratio", 0.35),
            ("time_to_first_token_seconds", 540.0 / 900.0),
            ("queue_time_seconds", 1125.0 / 900.0),
        ],
    );
    // SGLang: its gauges are left out until its counters are seen moving (it writes
    // them only while it works; the first read cannot tell).
    for gauge in [
        "requests_running",
        "requests_waiting",
        "kv_cache_usage_ratio",
    ] {
        let series = format!("loopwatch_llm_server_{gauge}");
        assert_eq!(value(&e, &series, "sglang"), None, "{gauge}");
    }
    check(
        &e,
        "sglang",
        &[
            ("preemptions_total", 0.0),
            ("prefix_cache_hit_ratio", 2032225.0 / 8128902.0),
            ("time_to_first_token_seconds", 27520.0 / 11008.0),
            ("queue_time_seconds", 5504.0 / 11008.0),
        ],
    );
    check(&e, "ollama", &[("models_loaded", 2.0)]);
    let memory = &e["loopwatch_llm_server_model_memory_bytes"];
    for (model, placement, bytes) in [
        ("qwen2.5-coder:7b", "total", 6654289920.0),
        ("qwen2.5-coder:7b", "vram", 6654289920.0),
        ("gemma3:27b", "total", 21718968320.0),
        ("gemma3:27b", "vram", 14495514624.0),
    ] {
        assert_eq!(
            memory.value_with(&[
                ("server", "ollama"),
                ("model", model),
                ("memory", placement)
            ]),
            Some(bytes),
            "{model} {placement}"
        );
    }
    // Ollama reports none of the queue's numbers; vLLM and SGLang no models.
    assert_eq!(
        value(&e, "loopwatch_llm_server_requests_waiting", "ollama"),
        None
    );
    assert_eq!(
        value(&e, "loopwatch_llm_server_models_loaded", "vllm"),
        None
    );
    for (name, family) in &e {
        if name.starts_with("loopwatch_llm_server_") {
            for (labels, _) in &family.samples {
                let kind = labels.get("kind").map(String::as_str);
                let expected = match labels["server"].as_str() {
                    "vllm" | "older" => "vllm",
                    other => other,
                };
                assert_eq!(kind, Some(expected), "{name} {labels:?}");
            }
        }
    }

    // Two streamed calls through the proxy meanwhile: their first chunks go beside
    // the server's queue time of the same interval.
    for first_chunk in [0.75, 1.25] {
        let mut call = loopwatch::llm::LlmCall::new("qwen", Duration::from_secs(2));
        call.time_to_first_chunk = Some(Duration::from_secs_f64(first_chunk));
        monitor.llm_call(&call);
    }
    // The next page: gauges as they are, the counters' interval since the first read.
    vllm.set(Answer::Body(page("vllm-current-2.txt")));
    sglang.set(Answer::Body(sglang_page(11010.0, 0.28)));
    monitor.read_model_servers_now();
    let e = exposition(&monitor);
    check(
        &e,
        "vllm",
        &[
            ("requests_running", 8.0),
            ("requests_waiting", 10.0),
            ("kv_cache_usage_ratio", 0.97),
            ("preemptions_total", 3.0),
            ("prefix_cache_hit_ratio", 900.0 / 1000.0),
            ("time_to_first_token_seconds", 3.0 / 10.0),
            ("queue_time_seconds", 4.0 / 10.0),
        ],
    );
    // The running sums and counts: what the server measured since the first read.
    for (metric, v) in [
        ("loopwatch_llm_server_queue_seconds_total", 4.0),
        ("loopwatch_llm_server_queued_requests_total", 10.0),
        ("loopwatch_llm_server_first_token_seconds_total", 3.0),
        ("loopwatch_llm_server_first_tokens_total", 10.0),
    ] {
        let got = value(&e, metric, "vllm").unwrap();
        assert!((got - v).abs() < 1e-9, "{metric}: {got}");
        assert_eq!(value(&e, metric, "sglang"), Some(0.0), "{metric}");
        assert_eq!(value(&e, metric, "ollama"), None, "{metric}");
    }
    // Nothing new at the other servers: their interval values stand. SGLang finished
    // two requests: its gauges are current.
    check(&e, "older", &[("queue_time_seconds", 1125.0 / 900.0)]);
    check(
        &e,
        "sglang",
        &[
            ("time_to_first_token_seconds", 27520.0 / 11008.0),
            ("requests_running", 162.0),
            ("requests_waiting", 2826.0),
            ("kv_cache_usage_ratio", 0.28),
        ],
    );
    // The same in the snapshot the page and the JSON read.
    let body = http_get(monitor.local_addr(), "/api/v1/snapshot").body;
    let snapshot: serde_json::Value = serde_json::from_str(&body).unwrap();
    let servers = snapshot["model_servers"]["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 4);
    assert_eq!(servers[0]["name"], "vllm");
    assert_eq!(servers[0]["health"], "up");
    assert_eq!(servers[0]["waiting"], 10.0);
    assert_eq!(servers[0]["queue_time_seconds"], 0.4);
    assert_eq!(
        snapshot["model_servers"]["points"][0]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    monitor.shutdown();
}

/// The SGLang page with `requests` finished since it started and its KV cache at
/// `usage` (2826 requests waiting).
fn sglang_page(requests: f64, usage: f64) -> String {
    let model = r#"{model_name="meta-llama/Llama-3.1-8B-Instruct"}"#;
    let text = page("sglang.txt");
    for line in [
        format!("sglang:num_requests_total{model} 11008.0"),
        format!("sglang:token_usage{model} 0.28"),
    ] {
        assert!(text.contains(&line), "{line}");
    }
    text.replace(
        &format!("sglang:num_requests_total{model} 11008.0"),
        &format!("sglang:num_requests_total{model} {requests:?}"),
    )
    .replace(
        &format!("sglang:token_usage{model} 0.28"),
        &format!("sglang:token_usage{model} {usage:?}"),
    )
}

/// An SGLang server that stopped working keeps the gauges of its last batch: here
/// 2826 requests waiting at a 99% full cache, its counters standing still. It is not
/// saturated however long that lasts (its gauges are left out, so the generated rule
/// does not see them either); once its counters move, the same gauges count, and
/// LLMServerSaturated fires.
#[test]
fn an_idle_sglang_server_with_saturated_gauges_raises_nothing() {
    let sglang = StandIn::start("/metrics", Answer::Body(sglang_page(11008.0, 0.99)));
    let llm = LlmConfig::default()
        .with_server(format!("s:sglang={}", sglang.url()).parse().unwrap())
        .unwrap();
    let held = Duration::from_secs(1);
    // Read once at the start, then when the test asks.
    let monitor = quiet_monitor()
        .sample_interval(Duration::from_secs(3600))
        .thresholds(
            Thresholds::default()
                .with_llm(llm)
                .with_llm_server_saturated_for(held)
                .unwrap(),
        )
        .build()
        .unwrap();
    wait_read(&monitor, &["s"]);
    let saturated = |monitor: &Monitor| {
        monitor
            .firing_alerts()
            .contains(&loopwatch::AlertName::LLMServerSaturated)
    };
    // Reads over more than the time it takes, the counters standing still.
    let start = std::time::Instant::now();
    let mut reads = 0;
    wait_until(Duration::from_secs(30), "reads over twice the time", || {
        monitor.read_model_servers_now();
        reads += 1;
        assert!(!saturated(&monitor), "after {:?}", start.elapsed());
        let e = exposition(&monitor);
        assert_eq!(value(&e, "loopwatch_llm_server_up", "s"), Some(1.0));
        assert_eq!(
            value(&e, "loopwatch_llm_server_requests_waiting", "s"),
            None
        );
        assert_eq!(
            value(&e, "loopwatch_llm_server_kv_cache_usage_ratio", "s"),
            None
        );
        start.elapsed() > held * 2 && reads >= 3
    });
    // The server works: its requests finish, the same gauges now count.
    let mut requests = 11008.0;
    let start = std::time::Instant::now();
    wait_until(Duration::from_secs(30), "LLMServerSaturated", || {
        requests += 1.0;
        sglang.set(Answer::Body(sglang_page(requests, 0.99)));
        monitor.read_model_servers_now();
        saturated(&monitor)
    });
    assert!(start.elapsed() >= held);
    let e = exposition(&monitor);
    assert_eq!(
        value(&e, "loopwatch_llm_server_requests_waiting", "s"),
        Some(2826.0)
    );
    monitor.shutdown();
}

/// A loopback port that refuses connections for as long as this is held: a socket
/// bound to it and never listening, so that no other program can take the port
/// meanwhile (a port found free and let go could be).
struct RefusingPort {
    _socket: socket2::Socket,
    port: u16,
}

impl RefusingPort {
    fn bind() -> Self {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let any: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
        socket.bind(&any.into()).unwrap();
        let port = socket.local_addr().unwrap().as_socket().unwrap().port();
        // Refused, not accepted: nothing listens there.
        let refused = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        RefusingPort {
            _socket: socket,
            port,
        }
    }
}

/// A small vLLM page: nothing waiting, the cache half full, `preemptions` since the
/// server started.
fn preempted_page(preemptions: u32) -> String {
    format!(
        "vllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0.5\n\
         vllm:num_preemptions_total {preemptions}\n"
    )
}

#[test]
fn reads_of_one_server_are_applied_in_the_order_they_were_made() {
    let vllm = StandIn::start("/metrics", Answer::Body(preempted_page(40)));
    let monitor = monitor_of(&[("qwen:vllm", vllm.url())]);
    wait_read(&monitor, &["qwen"]);
    let preemptions = |monitor: &Monitor| {
        value(
            &exposition(monitor),
            "loopwatch_llm_server_preemptions_total",
            "qwen",
        )
    };
    let before = preemptions(&monitor).unwrap();
    // A periodic read in flight, its answer (the older page) held back at the server;
    // meanwhile the server preempts once more, and the loop asks for a read now.
    vllm.hold_next();
    wait_until(Duration::from_secs(20), "a periodic read held", || {
        vllm.holding()
    });
    let (arrived, answered) = (vllm.arrived(), vllm.answered());
    vllm.set(Answer::Body(preempted_page(41)));
    std::thread::scope(|scope| {
        let now = scope.spawn(|| monitor.read_model_servers_now());
        // The read asked for waits for the one in flight: no second request reaches
        // the server while the first is held. (A window in which a second request
        // would arrive, were reads to overlap; with one read at a time it never
        // does, however fast or slow the machine.)
        let window = std::time::Instant::now() + Duration::from_secs(1);
        while std::time::Instant::now() < window && !now.is_finished() {
            assert_eq!(
                vllm.arrived(),
                arrived,
                "a second read while one is in flight"
            );
            std::thread::yield_now();
        }
        assert!(
            !now.is_finished(),
            "the read now waits for the one in flight"
        );
        vllm.release();
        now.join().unwrap();
    });
    wait_until(
        Duration::from_secs(20),
        "the held read and the read now answered",
        || vllm.answered() >= answered + 2,
    );
    // The older page was applied first, the newer after it: one preemption, not the
    // server's lifetime again as after a restart.
    assert_eq!(preemptions(&monitor), Some(before + 1.0));
    let body = http_get(monitor.local_addr(), "/api/v1/snapshot").body;
    let snapshot: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        snapshot["model_servers"]["servers"][0]["preemptions"],
        before + 1.0
    );
    monitor.shutdown();
}

#[test]
fn a_server_down_or_answering_garbage_degrades_its_own_readings_only() {
    logs();
    let ok = StandIn::start("/metrics", Answer::Body(page("vllm-current-1.txt")));
    let html = StandIn::start(
        "/metrics",
        Answer::Body("<html><body>Bad gateway</body></html>".into()),
    );
    let json = StandIn::start("/api/ps", Answer::Body("{\"error\":\"busy\"}".into()));
    let failing = StandIn::start("/metrics", Answer::Status(500));
    let hanging = StandIn::start("/metrics", Answer::Hang);
    let huge = StandIn::start(
        "/metrics",
        Answer::Body("vllm:num_requests_waiting 1\n".repeat(400_000)),
    );
    let not_http = StandIn::start("/metrics", Answer::NotHttp(b"\x16\x03\x01garbage".to_vec()));
    let refusing = RefusingPort::bind();
    let down = format!("http://127.0.0.1:{}", refusing.port);
    let monitor = monitor_of(&[
        ("ok:vllm", ok.url()),
        ("html:sglang", html.url()),
        ("json:ollama", json.url()),
        ("failing:vllm", failing.url()),
        ("hanging:vllm", hanging.url()),
        ("huge:vllm", huge.url()),
        ("nothttp:vllm", not_http.url()),
        ("down:ollama", down.clone()),
    ]);
    let broken = [
        ("html", "garbage"),
        ("json", "garbage"),
        ("failing", "status"),
        ("hanging", "timeout"),
        ("huge", "too_large"),
        ("nothttp", "garbage"),
        ("down", "connection"),
    ];
    wait_read(
        &monitor,
        &[
            "ok", "html", "json", "failing", "hanging", "huge", "nothttp", "down",
        ],
    );
    // Another round of reads: each failure counted again, logged once.
    monitor.read_model_servers_now();
    let e = exposition(&monitor);
    assert_eq!(value(&e, "loopwatch_llm_server_up", "ok"), Some(1.0));
    assert_eq!(
        value(&e, "loopwatch_llm_server_requests_waiting", "ok"),
        Some(6.0),
        "the server that answers keeps its readings"
    );
    let errors = &e["loopwatch_llm_server_read_errors_total"];
    for (server, reason) in broken {
        assert_eq!(
            value(&e, "loopwatch_llm_server_up", server),
            Some(0.0),
            "{server}"
        );
        for metric in [
            "requests_waiting",
            "kv_cache_usage_ratio",
            "queue_time_seconds",
            "models_loaded",
        ] {
            assert_eq!(
                value(&e, &format!("loopwatch_llm_server_{metric}"), server),
                None,
                "{server} has no {metric} while it cannot be read"
            );
        }
        let failed = errors.value_with(&[("server", server), ("reason", reason)]);
        assert!(
            failed >= Some(2.0),
            "{server}: two reads (at least) failed for {reason}: {failed:?}"
        );
        let lines =
            logs().lines_with(&["cannot read the model server", &format!("server={server}")]);
        assert_eq!(
            lines.len(),
            1,
            "{server}: one clear line, not one per read: {lines:?}"
        );
        assert!(lines[0].contains("WARN"), "{lines:?}");
    }
    assert_eq!(
        errors.value_with(&[("server", "ok"), ("reason", "connection")]),
        Some(0.0)
    );
    let said = |server: &str| {
        logs().lines_with(&["cannot read the model server", &format!("server={server}")])[0].clone()
    };
    assert!(said("failing").contains("HTTP 500"), "{}", said("failing"));
    assert!(said("down").contains("no connection"), "{}", said("down"));
    assert!(
        said("html").contains("not Prometheus text"),
        "{}",
        said("html")
    );
    assert!(
        said("hanging").contains("no answer in time"),
        "{}",
        said("hanging")
    );
    assert!(said("down").contains(&down), "{}", said("down"));
    // The servers come back: readings again, and one line saying so.
    html.set(Answer::Body(page("sglang.txt")));
    failing.set(Answer::Body(page("vllm-older.txt")));
    monitor.read_model_servers_now();
    let e = exposition(&monitor);
    assert_eq!(value(&e, "loopwatch_llm_server_up", "html"), Some(1.0));
    assert_eq!(
        value(&e, "loopwatch_llm_server_queue_time_seconds", "html"),
        Some(5504.0 / 11008.0)
    );
    assert_eq!(
        value(&e, "loopwatch_llm_server_requests_waiting", "failing"),
        Some(11.0)
    );
    assert_eq!(
        logs()
            .lines_with(&["answers again", "server=failing"])
            .len(),
        1
    );
    // The page says which cannot be read, and why.
    let page = http_get(monitor.local_addr(), "/");
    assert_eq!(page.status, 200);
    assert!(page.body.contains(r#"data-server="ok" data-health="up""#));
    assert!(page
        .body
        .contains(r#"data-server="down" data-health="down""#));
    assert!(page.body.contains("cannot be read: no connection"));
    drop(hanging);
    monitor.shutdown();
}
