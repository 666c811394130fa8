//! Local model servers under `loopwatch run` and in the stack: stand-in vLLM, SGLang
//! and Ollama servers on loopback (`tests/support/model_servers.rs`, the servers' own
//! formats; no model server runs here) read through `--llm-server` and
//! `[[llm.servers]]`; the dashboard's model servers panel queried on a real
//! Prometheus; the shipped Prometheus configuration scraping a server directly.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use loopwatch::llm::{LlmCall, LlmConfig};
use loopwatch::Thresholds;
use loopwatch_cli::generate::{
    dashboard_expressions, grafana_dashboard, with_variables, MODEL_SERVERS_PANEL,
};
use support::model_servers::{idle_vllm_page, page, Answer, StandIn};
use support::services::Prometheus;
use support::*;

/// Waits until Prometheus answers `expr` with data; the test fails with its log after
/// `timeout`.
fn eventually_data(prometheus: &Prometheus, expr: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while prometheus.query(expr).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no data for `{expr}`; Prometheus log:\n{}",
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn loopwatch_run_reads_the_servers_of_its_flags_and_its_config() {
    let vllm = StandIn::start("/metrics", Answer::Body(page("vllm-current-1.txt")));
    let ollama = StandIn::start("/api/ps", Answer::Body(page("ollama-ps.json")));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("loopwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[[llm.servers]]\nkind = \"ollama\"\nurl = \"{}\"\nname = \"local\"\n",
            ollama.url()
        ),
    )
    .unwrap();
    let run = Supervised::launch(
        dir.path(),
        &Launch::without_network_settings(dir.path()),
        &[
            &format!("--config={}", config.display()),
            &format!("--llm-server=gpu:vllm={}/metrics", vllm.url()),
        ],
        &[
            "sh".into(),
            "-c".into(),
            "while [ ! -e stop ]; do sleep 0.1; done".into(),
        ],
    );
    run.wait_serving();
    wait_until(Duration::from_secs(30), "both servers read", || {
        let e = parse(&scrape(run.addr)).unwrap();
        ["gpu", "local"].iter().all(|s| {
            e.get("loopwatch_llm_server_up")
                .and_then(|f| f.value_with(&[("server", s)]))
                == Some(1.0)
        })
    });
    let e = assert_well_formed(&scrape(run.addr));
    let value = |metric: &str, server: &str| e[metric].value_with(&[("server", server)]);
    assert_eq!(
        value("loopwatch_llm_server_requests_waiting", "gpu"),
        Some(6.0)
    );
    assert_eq!(
        value("loopwatch_llm_server_models_loaded", "local"),
        Some(2.0)
    );
    assert_eq!(
        e["loopwatch_llm_server_up"].value_with(&[("server", "gpu"), ("kind", "vllm")]),
        Some(1.0)
    );
    assert!(
        run.log().contains("reading the model server"),
        "{}",
        run.log()
    );
    std::fs::write(dir.path().join("stop"), "").unwrap();
    let mut run = run;
    assert!(run.wait(Duration::from_secs(30)).success());
    // The final files carry each server as it last stood.
    let servers = run.final_json()["model_servers"].clone();
    assert_eq!(servers[0]["name"], "local");
    assert_eq!(servers[1]["name"], "gpu");
    assert_eq!(servers[1]["kv_cache_usage"], 0.93);
}

#[test]
fn a_bad_server_flag_or_config_stops_loopwatch_run_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    for (flags, says) in [
        (
            vec!["--llm-server=tgi=http://127.0.0.1:1"],
            "unknown model server kind",
        ),
        (
            vec!["--llm-server=vllm=https://127.0.0.1:1"],
            "https is not read",
        ),
        (
            vec![
                "--llm-server=vllm=http://127.0.0.1:1",
                "--llm-server=sglang=http://127.0.0.1:1",
            ],
            "give each its own name",
        ),
        (
            // vLLM's default port is loopwatch's: loopwatch would read itself.
            vec![
                "--listen=0.0.0.0:8000",
                "--llm-server=vllm=http://127.0.0.1:8000",
            ],
            "loopwatch's own address",
        ),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_loopwatch"))
            .arg("run")
            .args(&flags)
            .args(["--", "true"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flags:?}");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
    }
    let config = dir.path().join("loopwatch.toml");
    std::fs::write(
        &config,
        "[[llm.servers]]\nkind = \"vllm\"\nurl = \"localhost\"\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_loopwatch"))
        .args([
            "run",
            &format!("--config={}", config.display()),
            "--",
            "true",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("expected a base URL"), "{stderr}");
    assert!(stderr.contains("loopwatch.toml"), "{stderr}");
}

/// The dashboard's model servers panel over a loop with a vLLM server and metered
/// streamed calls, scraped by a real Prometheus: every query returns data.
#[test]
fn every_model_servers_panel_query_returns_data_from_a_real_scrape() {
    let vllm = StandIn::start("/metrics", Answer::Body(page("vllm-current-1.txt")));
    let llm = LlmConfig::default()
        .with_server(format!("vllm={}", vllm.url()).parse().unwrap())
        .unwrap();
    let monitor = quiet_monitor()
        .sample_interval(Duration::from_millis(500))
        .thresholds(Thresholds::default().with_llm(llm))
        .build()
        .unwrap();
    let prometheus = Prometheus::start(monitor.local_addr(), None);
    let dashboard = grafana_dashboard(&Thresholds::default());
    let panel: Vec<&serde_json::Value> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["title"] == MODEL_SERVERS_PANEL)
        .collect();
    let expressions = dashboard_expressions(&serde_json::json!({ "panels": panel }));
    assert_eq!(expressions.len(), 4);
    // Streamed calls through the proxy, and the server's pages moving on, while the
    // queries wait for their data.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut next = 0;
    for expr in expressions {
        let expr = with_variables(&expr, &[]);
        while prometheus.query(&expr).is_empty() {
            assert!(
                Instant::now() < deadline,
                "no data for `{expr}`; Prometheus log:\n{}",
                prometheus.log()
            );
            let mut call = LlmCall::new("qwen", Duration::from_secs(1));
            call.time_to_first_chunk = Some(Duration::from_millis(300));
            monitor.llm_call(&call);
            next += 1;
            let pages = ["vllm-current-1.txt", "vllm-current-2.txt"];
            vllm.set(Answer::Body(page(pages[next % 2])));
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    monitor.shutdown();
}

/// The shipped `prometheus/prometheus.yml` scrapes a model server directly, as
/// docs/model-servers.md says: a target file in `model-servers/`.
#[test]
fn the_shipped_prometheus_config_scrapes_a_server_directly() {
    let vllm = StandIn::start("/metrics", Answer::Body(page("vllm-current-1.txt")));
    let config = std::fs::read_to_string(repo_root().join("prometheus/prometheus.yml")).unwrap();
    let target = format!(
        r#"[{{"targets": ["{}"], "labels": {{"server": "qwen", "kind": "vllm"}}}}]"#,
        vllm.url().trim_start_matches("http://")
    );
    let loop_addr: SocketAddr = ([127, 0, 0, 1], support::services::free_port()).into();
    let config = config.replace("127.0.0.1:8000", &loop_addr.to_string());
    let prometheus = Prometheus::start_with(
        &config,
        &[
            (
                "loopwatch.rules.yml",
                &std::fs::read(repo_root().join("prometheus/loopwatch.rules.yml")).unwrap(),
            ),
            ("model-servers/qwen.json", target.as_bytes()),
        ],
    );
    eventually_data(
        &prometheus,
        r#"vllm:num_requests_waiting{job="model-servers", server="qwen", kind="vllm"}"#,
        Duration::from_secs(60),
    );
    let waiting: f64 = prometheus
        .query(r#"sum(vllm:num_requests_waiting{job="model-servers", server="qwen"})"#)[0]["value"]
        [1]
    .as_str()
    .unwrap()
    .parse()
    .unwrap();
    assert_eq!(waiting, 6.0);
    // The server is scraped by the model-servers job, not a loop's: LoopDown and the
    // dashboards' `up` read the loopwatch jobs only.
    let instance = vllm.url().trim_start_matches("http://").to_string();
    let up = prometheus.query(&format!(
        r#"up{{job="model-servers", instance="{instance}"}}"#
    ));
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0]["value"][1], "1", "{up:?}");
    assert!(prometheus
        .query(&format!(
            r#"up{{job=~"loopwatch.*", instance="{instance}"}}"#
        ))
        .is_empty());
}

/// LLMServerSaturated from loopwatch's own evaluator at a real Alertmanager: a vLLM
/// server with requests waiting and its KV cache 93% full, held for
/// `llm_server_saturated_for`, fires naming the server; idle again, it resolves.
#[test]
fn llm_server_saturated_fires_at_alertmanager_and_resolves() {
    let alertmanager = support::services::Alertmanager::start();
    let vllm = StandIn::start(
        "/metrics",
        Answer::Body(idle_vllm_page("vllm-current-1.txt", 0.2)),
    );
    let llm = LlmConfig::default()
        .with_server(format!("qwen:vllm={}", vllm.url()).parse().unwrap())
        .unwrap();
    let thresholds = Thresholds::default()
        .with_llm(llm)
        .with_llm_server_saturated_for(Duration::from_secs(3))
        .unwrap()
        .with_alert_resolve_hold(Duration::from_secs(1))
        .unwrap();
    let monitor = quiet_monitor()
        .sample_interval(Duration::from_millis(250))
        .alertmanager_urls([alertmanager.url()])
        .thresholds(thresholds)
        .build()
        .unwrap();
    let firing = || {
        parse(&monitor.render_metrics().unwrap()).unwrap()["loopwatch_alert_firing"]
            .value_with(&[("alertname", "LLMServerSaturated")])
    };
    wait_until(Duration::from_secs(20), "the idle server read", || {
        parse(&monitor.render_metrics().unwrap()).unwrap()["loopwatch_llm_server_up"].value() == 1.0
    });
    assert_eq!(firing(), Some(0.0), "an idle server is not saturated");
    // Requests waiting with the cache 93% full (the page's two engines: 0.93, 0.71).
    let saturated_at = Instant::now();
    vllm.set(Answer::Body(page("vllm-current-1.txt")));
    wait_until(
        Duration::from_secs(30),
        "LLMServerSaturated at Alertmanager",
        || alertmanager.alert("LLMServerSaturated").is_some(),
    );
    assert!(
        saturated_at.elapsed() >= Duration::from_secs(3),
        "not before it was held for llm_server_saturated_for"
    );
    let alert = alertmanager.alert("LLMServerSaturated").unwrap();
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(
        alert["annotations"]["summary"],
        "LLM model server saturated"
    );
    let description = alert["annotations"]["description"].as_str().unwrap();
    assert!(
        description.contains("qwen"),
        "the server is named: {description}"
    );
    assert!(
        description.contains("0.93"),
        "its KV-cache usage: {description}"
    );
    assert_eq!(firing(), Some(1.0));
    // Idle again: the alert resolves at Alertmanager.
    vllm.set(Answer::Body(idle_vllm_page("vllm-current-1.txt", 0.2)));
    wait_until(
        Duration::from_secs(30),
        "LLMServerSaturated resolved",
        || alertmanager.alert("LLMServerSaturated").is_none(),
    );
    assert_eq!(firing(), Some(0.0));
    monitor.shutdown();
}
