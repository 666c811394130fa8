//! LLM calls under `loopwatch run --llm-proxy`: the real openai and anthropic SDKs (in
//! the test virtual environment) call through the metering proxy to a stand-in
//! provider on loopback (`llm_upstream`, the only fake: no provider fails on cue).
//! Checked: exact tokens, costs and error types; bodies and streams passed through
//! unchanged; secrets never kept; each provider's key reaching only that provider
//! (two stand-ins on two ports); the network's proxy (a forward proxy on loopback,
//! `llm_upstream::network`), a private CA through `SSL_CERT_FILE`, upstream URLs
//! checked at start; LLMErrors and LLMBudget at a real Alertmanager; hostile traffic;
//! a real OpenEvolve run.

mod support;

mod llm_upstream;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use llm_upstream::{script, Upstream};
use support::services::{free_port, Alertmanager, Prometheus};
use support::*;

/// `loopwatch run --llm-proxy [flags] -- python <script> <args>`, none of the
/// machine's [`NETWORK_VARIABLES`] passed on, in `dir`.
fn metered(dir: &Path, flags: &[&str], script: &Path, args: &[&str]) -> Supervised {
    Supervised::metered(dir, flags, &[], script, args)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

/// The stand-in answers `<model>-2025`: each priced by its name, a date suffix apart.
const PRICES: &str = r#"
[llm.prices."ok/chat"]
input_per_million = 2.0
output_per_million = 8.0
cached_input_per_million = 0.5

[llm.prices."ok/complete"]
input_per_million = 2.0
output_per_million = 8.0
cached_input_per_million = 0.5

[llm.prices."ok/messages"]
input_per_million = 2.0
output_per_million = 8.0
cached_input_per_million = 0.5

[llm.prices."ok/embed"]
input_per_million = 2.0
output_per_million = 8.0
cached_input_per_million = 0.5

[llm.prices."ok/responses"]
input_per_million = 2.0
output_per_million = 8.0
cached_input_per_million = 0.5

[llm.prices."ok/parsed"]
input_per_million = 2.0
output_per_million = 8.0
cached_input_per_million = 0.5

[llm.prices."ok/big"]
input_per_million = 2.0
output_per_million = 8.0
cached_input_per_million = 0.5

[llm.prices."stream/chat"]
input_per_million = 1.0
output_per_million = 4.0

[llm.prices."stream/messages"]
input_per_million = 1.0
output_per_million = 4.0
"#;

#[test]
fn the_sdks_calls_are_metered_exactly_and_passed_through_unchanged() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("loopwatch.toml");
    std::fs::write(&config, PRICES).unwrap();
    let out = dir.path().join("received.json");
    let mut run = metered(
        dir.path(),
        &[
            &format!("--llm-upstream={}", upstream.url()),
            &format!("--config={}", config.display()),
        ],
        &script("sdk_calls.py"),
        &[out.to_str().unwrap(), "{metrics}"],
    );
    let status = run.wait(Duration::from_secs(120));
    let log = run.log();
    assert_eq!(status.code(), Some(0), "{log}");
    let received: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let seen = upstream.seen();
    let sent = |model: &str| {
        seen.iter()
            .find(|s| s.model == model)
            .unwrap_or_else(|| panic!("the upstream never saw {model}: {seen:?}"))
            .clone()
    };

    // What the loop received is what the upstream sent, byte for byte, and streams
    // event for event as they were sent (spread over time, not buffered whole).
    for (name, model) in [
        ("chat", "ok/chat"),
        ("completion", "ok/complete"),
        ("responses", "ok/responses"),
        ("embeddings", "ok/embed"),
        ("messages", "ok/messages"),
        ("slow", "slow/chat"),
        ("garbage_usage", "garbage-usage/chat"),
    ] {
        assert_eq!(received[name]["ok"], true, "{name}: {}", received[name]);
        assert_eq!(
            received[name]["body"],
            sent(model).answered.as_str(),
            "{name}"
        );
    }
    for (name, model) in [
        ("chat_stream", "stream/chat"),
        ("messages_stream", "stream/messages"),
        ("no_usage_stream", "stream-no-usage/chat"),
    ] {
        let body = &received[name]["body"];
        assert_eq!(received[name]["ok"], true, "{name}: {}", received[name]);
        let text = body["text"].as_str().unwrap();
        let events: Vec<&str> = text.split_inclusive("\n\n").collect();
        let upstream_text = sent(model).answered;
        let upstream_events: Vec<&str> = upstream_text.split_inclusive("\n\n").collect();
        assert_eq!(events, upstream_events, "{name}");
        // Five or more events 20 ms apart: not held back until the end.
        assert!(
            body["spread"].as_f64().unwrap() >= 0.04,
            "{name} arrived at once: {body}"
        );
    }
    assert_eq!(
        received["parsed"]["body"],
        "```python\ndef f():\n    return 1\n```"
    );
    // Failures reach the loop as they would without the proxy.
    assert_eq!(received["rate_limited"]["status"], 429);
    assert_eq!(received["server_error"]["status"], 500);
    assert_eq!(received["hang"]["error"], "APITimeoutError");
    assert_eq!(received["cut"]["ok"], false, "{}", received["cut"]);
    assert_eq!(received["garbage"]["error"], "APIConnectionError");
    assert_eq!(received["oversized"]["ok"], true);
    assert!(sent("ok/big").body_len > 5 * 1024 * 1024);

    // Keys passed through untouched (the anthropic SDK sends its key as x-api-key or,
    // in recent versions, as a bearer token); answers asked for uncompressed; neither the keys
    // nor any body kept by loopwatch.
    assert!(seen
        .iter()
        .filter(|s| s.path == "/v1/chat/completions")
        .all(|s| s.authorization.as_deref() == Some("Bearer sk-test-secret")));
    let anthropic_keys: Vec<_> = seen
        .iter()
        .filter(|s| s.path == "/v1/messages")
        .map(|s| (s.api_key.clone(), s.authorization.clone()))
        .collect();
    assert!(
        anthropic_keys
            .iter()
            .all(|(key, bearer)| key.as_deref() == Some("sk-ant-test-secret")
                || bearer.as_deref() == Some("Bearer sk-ant-test-secret")),
        "{anthropic_keys:?}"
    );
    assert!(
        seen.iter()
            .all(|s| s.accept_encoding.as_deref() == Some("identity")),
        "{seen:?}"
    );
    let final_text = std::fs::read_to_string(dir.path().join("metrics_final.json")).unwrap()
        + &std::fs::read_to_string(dir.path().join("prometheus_metrics_final.txt")).unwrap()
        + &log;
    for secret in ["sk-test-secret", "sk-ant-test-secret", "write f", "def f()"] {
        assert!(
            !final_text.contains(secret),
            "{secret} leaked into loopwatch's files or log"
        );
    }

    // Exact tokens and costs, by the model that answered.
    let json = run.final_json();
    let llm = &json["summary"]["llm"];
    let by_model = &llm["by_model"];
    let tally = |model: &str| {
        let t = &by_model[model];
        assert!(!t.is_null(), "no {model} in {by_model}");
        t
    };
    let expect = |model: &str, input: u64, output: u64, cost: f64| {
        let t = tally(model);
        assert_eq!(t["input_tokens"], input, "{model}: {t}");
        assert_eq!(t["output_tokens"], output, "{model}: {t}");
        assert!(
            close(t["cost_usd"].as_f64().unwrap(), cost),
            "{model}: {t} (expected {cost})"
        );
        assert_eq!(t["errors"], 0, "{model}: {t}");
    };
    use llm_upstream::*;
    expect(
        "ok/chat-2025",
        CHAT_USAGE.0,
        CHAT_USAGE.1,
        (11.0 * 2.0 + 7.0 * 8.0) / 1e6,
    );
    expect(
        "ok/complete-2025",
        CHAT_USAGE.0,
        CHAT_USAGE.1,
        (11.0 * 2.0 + 7.0 * 8.0) / 1e6,
    );
    expect(
        "ok/messages-2025",
        ANTHROPIC_USAGE.0,
        ANTHROPIC_USAGE.1,
        (13.0 * 2.0 + 5.0 * 8.0) / 1e6,
    );
    expect("ok/embed-2025", EMBEDDING_TOKENS, 0, 6.0 * 2.0 / 1e6);
    // Cached input at its own price.
    expect(
        "ok/responses-2025",
        RESPONSES_USAGE.0,
        RESPONSES_USAGE.1,
        (6.0 * 2.0 + 3.0 * 0.5 + 4.0 * 8.0) / 1e6,
    );
    assert_eq!(
        tally("ok/responses-2025")["cached_input_tokens"],
        RESPONSES_USAGE.2
    );
    expect(
        "stream/chat-2025",
        STREAM_USAGE.0,
        STREAM_USAGE.1,
        (21.0 + 3.0 * 4.0) / 1e6,
    );
    expect(
        "stream/messages-2025",
        ANTHROPIC_STREAM_USAGE.0,
        ANTHROPIC_STREAM_USAGE.1,
        (17.0 + 15.0 * 4.0) / 1e6,
    );
    // No price, no guess: counted as unpriced.
    assert_eq!(
        tally("slow/chat-2025")["unpriced_tokens"],
        CHAT_USAGE.0 + CHAT_USAGE.1
    );
    assert_eq!(tally("slow/chat-2025")["cost_usd"], 0.0);
    // No usage to read: counted as such, not as tokens.
    for model in ["stream-no-usage/chat-2025", "garbage-usage/chat-2025"] {
        assert_eq!(tally(model)["input_tokens"], 0, "{model}");
        let missing = final_samples(
            &json,
            "loopwatch_llm_usage_missing_total",
            &[("model", model)],
        );
        assert_eq!(missing[0]["value"], 1.0, "{model}");
    }
    // Errors by their type.
    let errors = |model: &str| tally(model)["errors_by_type"].clone();
    assert_eq!(errors("rate-limited/chat"), serde_json::json!({"429": 1}));
    assert_eq!(
        errors("server-error/messages"),
        serde_json::json!({"500": 1})
    );
    // The loop gave up on a call the provider never answered: a timeout, the sign of
    // a hung provider (when loopwatch stops the loop, such calls are abandoned).
    assert_eq!(errors("hang/chat"), serde_json::json!({"timeout": 1}));
    assert_eq!(tally("hang/chat")["abandoned"], 0);
    assert_eq!(
        errors("cut/chat-2025"),
        serde_json::json!({"stream_cut": 1})
    );
    assert_eq!(errors("garbage/chat"), serde_json::json!({"connection": 1}));
    let retry = final_samples(
        &json,
        "loopwatch_llm_retry_after_seconds",
        &[("model", "rate-limited/chat")],
    );
    assert_eq!(retry[0]["value"], 2.0);
    assert_eq!(llm["calls"], 17, "{llm}");
    assert_eq!(llm["errors"], 5, "{llm}");
    assert_eq!(llm["abandoned"], 0, "{llm}");
    // Durations within tolerance: the slow answer's first byte came after 600 ms.
    let slow = final_samples(
        &json,
        "gen_ai_client_operation_duration_seconds",
        &[("gen_ai_request_model", "slow/chat")],
    );
    let seconds = slow[0]["value"]["sum"].as_f64().unwrap();
    assert!((0.6..2.6).contains(&seconds), "slow call took {seconds} s");
    let first_chunks = final_samples(
        &json,
        "loopwatch_llm_time_to_first_chunk_seconds",
        &[("model", "stream/chat-2025")],
    );
    assert_eq!(first_chunks[0]["value"]["count"], 1);
    let tokens = final_samples(
        &json,
        "gen_ai_client_token_usage",
        &[
            ("gen_ai_token_type", "input"),
            ("gen_ai_provider_name", "anthropic"),
            ("gen_ai_response_model", "ok/messages-2025"),
        ],
    );
    assert_eq!(tokens[0]["value"]["sum"], ANTHROPIC_USAGE.0 as f64);
    assert_eq!(
        json["metrics"]["loopwatch_llm_in_flight"]["samples"][0]["value"],
        0.0
    );
}

/// A loop writing `calls` LLM calls of `model`, `pause` seconds apart, its first
/// call's time in `dir/first_call`.
fn calling_loop(dir: &Path, model: &str, calls: u32, pause: f64) -> PathBuf {
    let path = dir.join("calls.py");
    std::fs::write(
        &path,
        format!(
            r#"import time, openai, loopwatch
client = openai.OpenAI(api_key="k", max_retries=0, timeout=5)
with open("first_call", "w") as f:
    f.write(repr(time.time()))
for i in range({calls}):
    with loopwatch.iteration() as it:
        try:
            client.chat.completions.create(model="{model}", messages=[{{"role": "user", "content": "x"}}])
            it.success(1.0)
        except openai.APIError as e:
            it.failure(type(e).__name__)
        time.sleep({pause})
loopwatch.done()
"#
        ),
    )
    .unwrap();
    path
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn an_outage_raises_llm_errors_at_alertmanager_within_ten_seconds() {
    let upstream = Upstream::start();
    let alertmanager = Alertmanager::start();
    let dir = tempfile::tempdir().unwrap();
    let script = calling_loop(dir.path(), "down/chat", 200, 0.2);
    let mut run = metered(
        dir.path(),
        &[
            &format!("--llm-upstream={}", upstream.url()),
            &format!("--alertmanager={}", alertmanager.url()),
        ],
        &script,
        &[],
    );
    let first = dir.path().join("first_call");
    wait_until(Duration::from_secs(30), "the loop's first call", || {
        std::fs::read_to_string(&first).is_ok_and(|t| t.parse::<f64>().is_ok())
    });
    let first: f64 = std::fs::read_to_string(&first).unwrap().parse().unwrap();
    let mut raised_after = None;
    while unix_now() < first + 10.0 {
        if alertmanager.alert("LLMErrors").is_some() {
            raised_after = Some(unix_now() - first);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let raised_after = raised_after.unwrap_or_else(|| {
        panic!(
            "no LLMErrors at Alertmanager within 10 s; log:\n{}",
            run.log()
        )
    });
    let alert = alertmanager.alert("LLMErrors").unwrap();
    assert_eq!(alert["annotations"]["summary"], "LLM error rate high");
    assert_eq!(alert["labels"]["severity"], "critical");
    eprintln!("LLMErrors reached Alertmanager {raised_after:.1} s after the first call");
    let _ = run.child.kill();
}

#[test]
fn spending_past_the_budget_raises_llm_budget() {
    let upstream = Upstream::start();
    let alertmanager = Alertmanager::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("loopwatch.toml");
    // Each call costs 11 × 2 + 7 × 8 = 78 µ$: the fourth passes 300 µ$.
    std::fs::write(
        &config,
        format!("llm_budget_usd = 0.0003\nllm_spend_without_progress_usd = 0.0002\n{PRICES}"),
    )
    .unwrap();
    let script = calling_loop(dir.path(), "ok/chat", 6, 0.05);
    // First a priced call whose answer's usage cannot be read: the spend is a lower
    // bound from then on.
    let text = std::fs::read_to_string(&script).unwrap().replacen(
        "for i in",
        "client.chat.completions.with_raw_response.create(model=\"garbage-usage/chat\", messages=[{\"role\": \"user\", \"content\": \"x\"}])\nfor i in",
        1,
    );
    std::fs::write(&script, text).unwrap();
    let mut run = metered(
        dir.path(),
        &[
            &format!("--llm-upstream={}", upstream.url()),
            &format!("--alertmanager={}", alertmanager.url()),
            &format!("--config={}", config.display()),
        ],
        &script,
        &[],
    );
    assert_eq!(
        run.wait(Duration::from_secs(60)).code(),
        Some(0),
        "{}",
        run.log()
    );
    let json = run.final_json();
    assert!(close(
        json["summary"]["llm"]["cost_usd"].as_f64().unwrap(),
        6.0 * 78e-6
    ));
    let alerts = &json["evaluation"]["alerts"];
    assert_eq!(alerts["LLMBudget"], "firing", "{alerts}");
    // No champion was ever reported: all of it is spend without progress.
    assert_eq!(alerts["LLMSpendWithoutProgress"], "firing", "{alerts}");
    let budget = alertmanager
        .alert("LLMBudget")
        .unwrap_or_else(|| panic!("no LLMBudget at Alertmanager; log:\n{}", run.log()));
    assert_eq!(budget["annotations"]["summary"], "LLM budget exceeded");
    // Its spend is a lower bound, and it says so: at Alertmanager, in the alert
    // history, the summary and the log.
    let description = budget["annotations"]["description"].as_str().unwrap();
    assert!(description.contains("lower bound"), "{description}");
    assert_eq!(json["summary"]["llm"]["spend_is_lower_bound"], true);
    assert_eq!(json["summary"]["llm"]["usage_missing"], 1);
    for alert in ["LLMBudget", "LLMSpendWithoutProgress"] {
        let fired = json["alert_history"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["alertname"] == alert && e["state"] == "firing")
            .unwrap_or_else(|| panic!("{alert} never fired: {}", json["alert_history"]));
        assert!(
            fired["note"].as_str().unwrap().contains("lower bound"),
            "{fired}"
        );
    }
    assert!(
        run.log().contains("the spend is a lower bound"),
        "{}",
        run.log()
    );
    // Before it fired, the projection warned (it was pending).
    assert!(
        run.log().contains("LLM budget will be exceeded"),
        "{}",
        run.log()
    );
}

#[test]
fn an_unreachable_upstream_is_a_connection_error_for_the_loop_and_the_meter() {
    let closed = free_port();
    let dir = tempfile::tempdir().unwrap();
    let script = calling_loop(dir.path(), "ok/chat", 2, 0.0);
    let mut run = metered(
        dir.path(),
        &[&format!("--llm-upstream=http://127.0.0.1:{closed}")],
        &script,
        &[],
    );
    assert_eq!(
        run.wait(Duration::from_secs(60)).code(),
        Some(0),
        "{}",
        run.log()
    );
    let json = run.final_json();
    let calls = final_samples(
        &json,
        "loopwatch_llm_calls_total",
        &[("outcome", "connection")],
    );
    assert_eq!(calls[0]["value"], 2.0, "{}", run.log());
    // The loop saw the failure as its own: APIConnectionError, a failed strategy.
    assert_eq!(json["summary"]["failure_reasons"]["APIConnectionError"], 2);
}

#[test]
fn five_hundred_concurrent_streams_are_all_counted_and_memory_stays_flat() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("burst.py");
    std::fs::write(
        &script,
        r#"import asyncio, os, sys, openai, loopwatch

async def one(client, i):
    async with client.chat.completions.with_streaming_response.create(
        model="stream/burst", messages=[{"role": "user", "content": "x"}], stream=True
    ) as response:
        return len(await response.read())

async def burst():
    client = openai.AsyncOpenAI(api_key="k", max_retries=0, timeout=60)
    sizes = await asyncio.gather(*(one(client, i) for i in range(500)))
    assert all(size > 0 for size in sizes), sizes

for round in range(3):
    asyncio.run(burst())
    with open("round", "w") as f:
        f.write(str(round))
    # Wait for the test to read loopwatch's memory after this round.
    while not os.path.exists("read-%d" % round):
        import time; time.sleep(0.05)
loopwatch.done()
"#,
    )
    .unwrap();
    let mut run = metered(
        dir.path(),
        &[&format!("--llm-upstream={}", upstream.url())],
        &script,
        &[],
    );
    let mut rss = Vec::new();
    for round in 0..3 {
        wait_until(Duration::from_secs(120), "a burst of 500 streams", || {
            std::fs::read_to_string(dir.path().join("round")).is_ok_and(|r| r == round.to_string())
        });
        rss.push(rss_bytes(run.child.id()));
        std::fs::write(dir.path().join(format!("read-{round}")), "").unwrap();
    }
    assert_eq!(
        run.wait(Duration::from_secs(60)).code(),
        Some(0),
        "{}",
        run.log()
    );
    let json = run.final_json();
    let calls = final_samples(
        &json,
        "loopwatch_llm_calls_total",
        &[("model", "stream/burst-2025"), ("outcome", "ok")],
    );
    assert_eq!(calls[0]["value"], 1500.0, "{}", run.log());
    let tally = &json["summary"]["llm"]["by_model"]["stream/burst-2025"];
    assert_eq!(tally["input_tokens"], 1500 * llm_upstream::STREAM_USAGE.0);
    // The first burst sizes the pools; later ones add nothing that stays.
    let growth = rss[2].saturating_sub(rss[1]);
    assert!(
        growth < 16 * 1024 * 1024,
        "loopwatch grew {growth} bytes between bursts: {rss:?}"
    );
    eprintln!("loopwatch RSS after each burst of 500 streams: {rss:?}");
}

/// A real OpenEvolve run (pip `openevolve`), a few iterations against the stand-in
/// provider through the proxy: every LLM call it makes is metered, with no change to
/// OpenEvolve beyond its usual `api_base`.
#[test]
fn a_real_openevolve_run_is_metered_through_the_proxy() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("initial.py"),
        "# EVOLVE-BLOCK-START\ndef f():\n    return 0\n# EVOLVE-BLOCK-END\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("evaluator.py"),
        r#"import importlib.util

def evaluate(program_path):
    spec = importlib.util.spec_from_file_location("candidate", program_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {"combined_score": float(module.f())}
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config.yaml"),
        format!(
            r#"max_iterations: 3
checkpoint_interval: 100
diff_based_evolution: false
llm:
  api_base: "http://127.0.0.1:{port}/v1"
  api_key: "sk-openevolve"
  models:
    - name: "ok/openevolve"
      weight: 1.0
  timeout: 20
  retries: 0
database:
  population_size: 10
  num_islands: 1
evaluator:
  parallel_evaluations: 1
  cascade_evaluation: false
"#
        ),
    )
    .unwrap();
    let wrapper = dir.path().join("openevolve_run.py");
    std::fs::write(
        &wrapper,
        "import sys\nfrom openevolve.cli import main\nsys.exit(main())\n",
    )
    .unwrap();
    let mut run = metered(
        dir.path(),
        &[
            &format!("--llm-upstream={}", upstream.url()),
            &format!("--llm-proxy-listen=127.0.0.1:{port}"),
        ],
        &wrapper,
        &[
            "initial.py",
            "evaluator.py",
            "--config",
            "config.yaml",
            "--iterations",
            "3",
            "--output",
            "out",
        ],
    );
    let status = run.wait(Duration::from_secs(180));
    let log = run.log();
    assert_eq!(status.code(), Some(0), "{log}");
    let calls: Vec<_> = upstream
        .seen()
        .into_iter()
        .filter(|s| s.model == "ok/openevolve")
        .collect();
    assert!(
        calls.len() >= 3,
        "OpenEvolve made {} LLM calls; log:\n{log}",
        calls.len()
    );
    assert!(calls
        .iter()
        .all(|c| c.authorization.as_deref() == Some("Bearer sk-openevolve")));
    let json = run.final_json();
    let tally = &json["summary"]["llm"]["by_model"]["ok/openevolve-2025"];
    assert_eq!(
        tally["calls"],
        calls.len() as u64,
        "{}",
        json["summary"]["llm"]
    );
    assert_eq!(
        tally["input_tokens"],
        calls.len() as u64 * llm_upstream::CHAT_USAGE.0
    );
    assert_eq!(tally["errors"], 0);
}

/// A loop that calls an LLM on every iteration (every fourth call fails) and reports
/// `sign` times the iteration's number as its Sharpe ratio, until a file `stop`
/// appears in `dir`; `env` is set for loopwatch.
fn steady_loop(dir: &Path, upstream: &Upstream, sign: &str, env: &[(&str, &str)]) -> Supervised {
    let config = dir.join("loopwatch.toml");
    std::fs::write(&config, PRICES).unwrap();
    let script = dir.join("steady.py");
    std::fs::write(
        &script,
        r#"import os, time, openai, loopwatch
client = openai.OpenAI(api_key="k", max_retries=0, timeout=5)
i = 0
while not os.path.exists("stop"):
    i += 1
    with loopwatch.iteration() as it:
        model = "server-error/chat" if i % 4 == 0 else "ok/chat"
        try:
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
            it.success(SIGN float(i))
        except openai.APIError:
            it.failure("llm")
        it.population(size=4, unique=4, diversity=0.5, champion="c%d" % (i // 5))
        time.sleep(0.1)
loopwatch.done()
"#
        .replace("SIGN", sign),
    )
    .unwrap();
    Supervised::metered(
        dir,
        &[
            &format!("--llm-upstream={}", upstream.url()),
            &format!("--config={}", config.display()),
        ],
        env,
        &script,
        &[],
    )
}

/// The dashboard's LLM panels over two metered loops scraped by one real Prometheus
/// (the repository's configuration, both loops its static targets), one under the
/// default GenAI names and one under the newest (`OTEL_SEMCONV_STABILITY_OPT_IN`):
/// every query returns data for each loop, and each copy of the progress-per-dollar
/// XY chart (repeated for each `instance`) gets one series a query, its own loop's.
#[test]
fn every_llm_panel_query_returns_data_from_a_real_scrape() {
    use loopwatch_cli::generate::{dashboard_expressions, grafana_dashboard, with_variables};
    let upstream = Upstream::start();
    let (dir, other_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // One loop whose strategies all score above zero, one whose all score below, the
    // latter's LLM calls under the newest GenAI names.
    let mut run = steady_loop(dir.path(), &upstream, "", &[]);
    let opt_in = [(
        "OTEL_SEMCONV_STABILITY_OPT_IN",
        loopwatch::catalog::GenAiConventions::OPT_IN,
    )];
    let mut other = steady_loop(other_dir.path(), &upstream, "-", &opt_in);
    let repo = repo_root().join("prometheus");
    let config = std::fs::read_to_string(repo.join("prometheus.yml")).unwrap();
    assert!(config.contains(r#"["127.0.0.1:8000"]"#));
    let config = config.replace(
        r#"["127.0.0.1:8000"]"#,
        &format!(r#"["{}", "{}"]"#, run.addr, other.addr),
    );
    let rules = std::fs::read(repo.join("loopwatch.rules.yml")).unwrap();
    let prometheus = Prometheus::start_with(&config, &[("loopwatch.rules.yml", &rules)]);
    let logs = || {
        format!(
            "Prometheus log:\n{}\nloopwatch logs:\n{}\n{}",
            prometheus.log(),
            run.log(),
            other.log()
        )
    };
    // The first answer of `expr` that has data.
    let data = |expr: &str| {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let result = prometheus.query(expr);
            if !result.is_empty() {
                return result;
            }
            assert!(
                Instant::now() < deadline,
                "no data for `{expr}`; {}",
                logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let dashboard = grafana_dashboard(&loopwatch::Thresholds::default());
    let llm_panels: Vec<&serde_json::Value> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["title"].as_str().unwrap().starts_with("LLM"))
        .collect();
    assert_eq!(llm_panels.len(), 4);
    let panel_expressions = dashboard_expressions(&serde_json::json!({ "panels": llm_panels }));
    assert_eq!(panel_expressions.len(), 14);
    for expr in panel_expressions {
        data(&with_variables(&expr, &[]));
    }
    // Progress per dollar: with every loop selected each query has a series per loop,
    // which one XY frame would pair by time alone; each copy of the repeated panel
    // selects one instance (as Grafana writes a repeated value: its regex escaped),
    // and each of its queries gives that loop's one series.
    let xy = llm_panels
        .iter()
        .find(|p| p["type"] == "xychart")
        .expect("the XY chart");
    assert_eq!(xy["repeat"], "instance");
    let xy_expressions = dashboard_expressions(&serde_json::json!({ "panels": [xy] }));
    for expr in &xy_expressions {
        let deadline = Instant::now() + Duration::from_secs(90);
        while prometheus.query(&with_variables(expr, &[])).len() < 2 {
            assert!(
                Instant::now() < deadline,
                "not both loops in `{expr}`; {}",
                logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    for (loop_run, above_zero) in [(&run, true), (&other, false)] {
        let instance = loop_run.addr.to_string();
        let selected = instance.replace('.', r"\\.");
        for (expr, legend) in xy_expressions.iter().zip(xy["targets"].as_array().unwrap()) {
            let expr = with_variables(expr, &[("instance", &selected)]);
            let result = data(&expr);
            assert_eq!(result.len(), 1, "`{expr}`: {result:?}");
            assert_eq!(
                result[0]["metric"]["instance"],
                instance.as_str(),
                "`{expr}`"
            );
            if legend["legendFormat"] == "best Sharpe so far" {
                let best: f64 = result[0]["value"][1].as_str().unwrap().parse().unwrap();
                assert_eq!(best > 0.0, above_zero, "{instance}'s best: {best}");
            }
        }
    }
    // Each loop's LLM panels have data, under the default GenAI names or the newest;
    // the tokens by type under both.
    let token_usage = loopwatch::catalog::GEN_AI_CLIENT_TOKEN_USAGE.name;
    let latest_tokens = loopwatch::catalog::GEN_AI_CLIENT_INFERENCE_USAGE_INPUT_TOKENS_TOTAL.name;
    for (loop_run, exported, absent) in [
        (&run, token_usage, latest_tokens),
        (&other, latest_tokens, token_usage),
    ] {
        let instance = loop_run.addr.to_string();
        let selected = instance.replace('.', r"\\.");
        // A histogram's series are its name's `_bucket`, `_sum` and `_count`.
        data(&format!(
            "{{__name__=~\"{exported}.*\", instance=\"{instance}\"}}"
        ));
        assert!(prometheus
            .query(&format!(
                "{{__name__=~\"{absent}.*\", instance=\"{instance}\"}}"
            ))
            .is_empty());
        for expr in dashboard_expressions(&serde_json::json!({ "panels": llm_panels })) {
            let expr = with_variables(&expr, &[("instance", &selected)]);
            let result = data(&expr);
            if expr.contains(token_usage) {
                let mut types: Vec<&str> = result
                    .iter()
                    .map(|s| s["metric"]["gen_ai_token_type"].as_str().unwrap())
                    .collect();
                types.sort_unstable();
                assert_eq!(types, ["input", "output"], "`{expr}`: {result:?}");
            }
        }
    }
    // The embedded page has the same section, by model.
    let page = http_get(run.addr, "/").body;
    assert!(page.contains("data-panel=\"LLM calls\""), "{page}");
    assert!(page.contains("data-model=\"ok/chat-2025\""), "{page}");
    assert!(page.contains("500 ×"), "the 500s by model: {page}");
    // Beside them, the rate limits the stand-in stated.
    assert!(page.contains("data-panel=\"LLM rate limits\""), "{page}");
    assert!(
        page.contains("data-provider=\"openai\"") && page.contains("9999 / 10000"),
        "{page}"
    );
    let snapshot: serde_json::Value =
        serde_json::from_str(&http_get(run.addr, "/api/v1/snapshot").body).unwrap();
    let llm = &snapshot["summary"]["llm"];
    assert!(llm["calls"].as_u64().unwrap() > 0, "{llm}");
    assert!(llm["p95_seconds"].as_f64().is_some(), "{llm}");
    assert!(!llm["last_hour"].as_array().unwrap().is_empty(), "{llm}");
    for (loop_run, dir) in [(&mut run, dir.path()), (&mut other, other_dir.path())] {
        std::fs::write(dir.join("stop"), "").unwrap();
        assert_eq!(
            loop_run.wait(Duration::from_secs(30)).code(),
            Some(0),
            "{}",
            loop_run.log()
        );
    }
}

/// The keys that reached an upstream: every `Authorization` and `x-api-key` value.
fn keys(seen: &[llm_upstream::Seen]) -> Vec<String> {
    seen.iter()
        .flat_map(|s| [s.authorization.clone(), s.api_key.clone()])
        .flatten()
        .collect()
}

/// Two providers on two ports, the real SDKs calling every kind of request through the
/// proxy: each key reaches only its own provider, whichever header carries it, and a
/// request the proxy cannot place reaches neither.
#[test]
fn each_providers_key_reaches_only_that_provider() {
    let openai = Upstream::start();
    let anthropic = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("received.json");
    let openai_base = format!("{}/v1", openai.url());
    let anthropic_base = anthropic.url();
    let mut run = Supervised::metered(
        dir.path(),
        &[],
        &[
            ("OPENAI_BASE_URL", &openai_base),
            ("ANTHROPIC_BASE_URL", &anthropic_base),
        ],
        &script("routing.py"),
        &[out.to_str().unwrap()],
    );
    let status = run.wait(Duration::from_secs(120));
    let log = run.log();
    assert_eq!(status.code(), Some(0), "{log}");
    let received: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let (to_openai, to_anthropic) = (openai.seen(), anthropic.seen());

    // Every SDK call succeeded, each at its own provider.
    for name in [
        "anthropic_messages",
        "anthropic_models",
        "anthropic_count_tokens",
        "anthropic_complete",
        "anthropic_files",
        "anthropic_batches",
        "openai_chat",
        "openai_models",
        "openai_files",
        "openai_batches",
        "x_api_key_messages",
        "x_api_key_models",
    ] {
        assert_eq!(received[name]["ok"], true, "{name}: {}", received[name]);
    }
    let paths = |seen: &[llm_upstream::Seen]| {
        let mut paths: Vec<String> = seen
            .iter()
            .map(|s| s.path.split('?').next().unwrap().to_string())
            .collect();
        paths.sort();
        paths.dedup();
        paths
    };
    assert_eq!(
        paths(&to_anthropic),
        [
            "/v1/complete",
            "/v1/files",
            "/v1/messages",
            "/v1/messages/batches",
            "/v1/messages/count_tokens",
            "/v1/models",
        ],
        "{to_anthropic:?}"
    );
    assert_eq!(
        paths(&to_openai),
        [
            "/v1/batches",
            "/v1/chat/completions",
            "/v1/files",
            "/v1/models"
        ],
        "{to_openai:?}"
    );
    // The keys: the OpenAI one only at the OpenAI-side provider, the Anthropic one
    // only at Anthropic's, in the header the SDK chose.
    let openai_keys = keys(&to_openai);
    assert!(
        openai_keys.iter().all(|k| k == "Bearer sk-openai-secret"),
        "{openai_keys:?}"
    );
    let anthropic_keys = keys(&to_anthropic);
    assert!(
        anthropic_keys
            .iter()
            .all(|k| k == "Bearer sk-ant-secret" || k == "sk-ant-secret"),
        "{anthropic_keys:?}"
    );
    // Both styles of Anthropic key were exercised: the installed SDK's bearer token
    // beside anthropic-version, and an older SDK's x-api-key.
    assert!(to_anthropic.iter().any(|s| s.path == "/v1/models"
        && s.authorization.as_deref() == Some("Bearer sk-ant-secret")
        && s.anthropic_version.is_some()));
    assert!(to_anthropic.iter().any(|s| s.path == "/v1/models"
        && s.api_key.as_deref() == Some("sk-ant-secret")
        && s.anthropic_version.is_none()));
    // Each went with its own method: the lists as GETs, the generations as POSTs.
    for s in to_anthropic.iter().chain(&to_openai) {
        let generates = ["/v1/messages", "/v1/chat/completions", "/v1/complete"]
            .contains(&s.path.as_str())
            || s.path == "/v1/messages/count_tokens";
        let expected = if generates { "POST" } else { "GET" };
        assert_eq!(s.method, expected, "{s:?}");
    }

    // Refused with a 400 naming the reason, not to be retried, sent nowhere.
    for (name, reason) in [
        ("two_keys", "both x-api-key and Authorization"),
        ("basic", "not a Bearer token"),
        ("azure_key", "api-key header"),
    ] {
        let answer = &received[name];
        assert_eq!(answer["status"], 400, "{name}: {answer}");
        assert_eq!(answer["should_retry"], "false", "{name}: {answer}");
        let body: serde_json::Value =
            serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{name}: {message}");
    }
    for key in openai_keys.iter().chain(&anthropic_keys) {
        assert!(
            !key.contains("refused") && !key.contains("c2stcmVmdXNlZDp4"),
            "a refused request's key was forwarded: {key}"
        );
    }
    assert!(log.contains("cannot place"), "{log}");
    for secret in ["sk-openai-secret", "sk-ant-secret", "sk-refused"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
    // Metered under the API each call spoke.
    let json = run.final_json();
    let by_provider = |provider: &str| {
        final_samples(
            &json,
            "gen_ai_client_token_usage",
            &[
                ("gen_ai_token_type", "input"),
                ("gen_ai_provider_name", provider),
            ],
        )
        .iter()
        .map(|s| {
            s["labels"]["gen_ai_response_model"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect::<Vec<_>>()
    };
    assert_eq!(by_provider("openai"), ["ok/chat-2025"]);
    assert_eq!(by_provider("anthropic"), ["ok/messages-2025"]);
}

/// A loop making one OpenAI and one Anthropic call, then done.
fn two_calls(dir: &Path) -> PathBuf {
    let path = dir.join("two_calls.py");
    std::fs::write(
        &path,
        r#"import anthropic, openai, loopwatch
with loopwatch.iteration() as it:
    openai.OpenAI(api_key="sk-openai-secret", max_retries=0, timeout=10).chat.completions.create(
        model="ok/chat", messages=[{"role": "user", "content": "x"}])
    anthropic.Anthropic(api_key="sk-ant-secret", max_retries=0, timeout=10).messages.create(
        model="ok/messages", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    it.success(1.0)
loopwatch.done()
"#,
    )
    .unwrap();
    path
}

/// An upstream whose certificate a private CA issued: not trusted by the bundled
/// roots (the loop sees a connection error and the log says why, in full), trusted
/// once `SSL_CERT_FILE` names the CA.
#[test]
fn a_private_ca_is_trusted_through_ssl_cert_file_and_tls_failures_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let certificate = llm_upstream::network::ServerCertificate::make(dir.path());
    let upstream = Upstream::start_tls(&certificate);
    let url = upstream.url_at("localhost");
    let calls = calling_loop(dir.path(), "ok/chat", 1, 0.0);

    let untrusted = dir.path().join("untrusted");
    std::fs::create_dir(&untrusted).unwrap();
    let mut run = metered(&untrusted, &[&format!("--llm-upstream={url}")], &calls, &[]);
    assert_eq!(run.wait(Duration::from_secs(60)).code(), Some(0));
    let log = run.log();
    let json = run.final_json();
    assert_eq!(
        json["summary"]["failure_reasons"]["APIConnectionError"], 1,
        "{log}"
    );
    // The cause, not just "client error (Connect)".
    assert!(
        log.contains("invalid peer certificate") && log.contains("UnknownIssuer"),
        "{log}"
    );

    let trusted = dir.path().join("trusted");
    std::fs::create_dir(&trusted).unwrap();
    let ca = certificate.ca.to_str().unwrap();
    let mut run = Supervised::metered(
        &trusted,
        &[&format!("--llm-upstream={url}")],
        &[("SSL_CERT_FILE", ca)],
        &calls,
        &[],
    );
    assert_eq!(run.wait(Duration::from_secs(60)).code(), Some(0));
    let json = run.final_json();
    let tally = &json["summary"]["llm"]["by_model"]["ok/chat-2025"];
    assert_eq!(tally["calls"], 1, "{}", run.log());
    assert_eq!(tally["errors"], 0, "{}", run.log());
    // The refused handshake never became a request.
    assert_eq!(keys(&upstream.seen()), ["Bearer k"]);
}

/// HTTPS upstreams through `HTTPS_PROXY` (a `CONNECT` tunnel with the proxy's
/// credential), except those `NO_PROXY` names, which are reached directly.
#[test]
fn https_upstreams_go_through_https_proxy_unless_no_proxy_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let certificate = llm_upstream::network::ServerCertificate::make(dir.path());
    let behind_proxy = Upstream::start_tls(&certificate);
    let direct = Upstream::start_tls(&certificate);
    let proxy = llm_upstream::network::ForwardProxy::start();
    let proxy_url = proxy.url("proxyuser:proxy-s3cret");
    let openai_base = format!("{}/v1", behind_proxy.url_at("localhost"));
    let anthropic_base = direct.url_at("127.0.0.1");
    let mut run = Supervised::metered(
        dir.path(),
        &[],
        &[
            ("OPENAI_BASE_URL", &openai_base),
            ("ANTHROPIC_BASE_URL", &anthropic_base),
            ("HTTPS_PROXY", &proxy_url),
            ("NO_PROXY", "127.0.0.1"),
            ("SSL_CERT_FILE", certificate.ca.to_str().unwrap()),
        ],
        &two_calls(dir.path()),
        &[],
    );
    let status = run.wait(Duration::from_secs(60));
    let log = run.log();
    assert_eq!(status.code(), Some(0), "{log}");
    let at_proxy = proxy.seen();
    let tunnel = format!("CONNECT localhost:{} HTTP/1.1", behind_proxy.addr.port());
    assert!(
        !at_proxy.is_empty() && at_proxy.iter().all(|s| s.request_line == tunnel),
        "{at_proxy:?}"
    );
    // Basic base64("proxyuser:proxy-s3cret")
    assert_eq!(
        at_proxy[0].proxy_authorization.as_deref(),
        Some("Basic cHJveHl1c2VyOnByb3h5LXMzY3JldA==")
    );
    assert_eq!(keys(&behind_proxy.seen()), ["Bearer sk-openai-secret"]);
    assert_eq!(keys(&direct.seen()), ["Bearer sk-ant-secret"]);
    assert!(log.contains("openai_via=http://127.0.0.1:"), "{log}");
    assert!(log.contains("anthropic_via=direct"), "{log}");
    assert!(!log.contains("proxy-s3cret"), "{log}");
    let json = run.final_json();
    assert_eq!(json["summary"]["llm"]["calls"], 2, "{log}");
    assert_eq!(json["summary"]["llm"]["errors"], 0, "{log}");
}

/// Plain-HTTP upstreams through `HTTP_PROXY`: the request goes to the proxy whole, in
/// absolute form, with the proxy's credential; `NO_PROXY` ones directly.
#[test]
fn http_upstreams_go_through_http_proxy_in_absolute_form() {
    let dir = tempfile::tempdir().unwrap();
    let behind_proxy = Upstream::start();
    let direct = Upstream::start();
    let proxy = llm_upstream::network::ForwardProxy::start();
    let proxy_url = proxy.url("proxyuser:proxy-s3cret");
    let openai_base = format!("{}/v1", behind_proxy.url_at("localhost"));
    let anthropic_base = direct.url_at("127.0.0.1");
    let mut run = Supervised::metered(
        dir.path(),
        &[],
        &[
            ("OPENAI_BASE_URL", &openai_base),
            ("ANTHROPIC_BASE_URL", &anthropic_base),
            ("http_proxy", &proxy_url),
            ("no_proxy", "127.0.0.1"),
        ],
        &two_calls(dir.path()),
        &[],
    );
    let status = run.wait(Duration::from_secs(60));
    let log = run.log();
    assert_eq!(status.code(), Some(0), "{log}");
    let at_proxy = proxy.seen();
    let request = format!(
        "POST http://localhost:{}/v1/chat/completions HTTP/1.1",
        behind_proxy.addr.port()
    );
    assert_eq!(at_proxy.len(), 1, "{at_proxy:?}");
    assert_eq!(at_proxy[0].request_line, request);
    assert_eq!(
        at_proxy[0].proxy_authorization.as_deref(),
        Some("Basic cHJveHl1c2VyOnByb3h5LXMzY3JldA==")
    );
    assert_eq!(keys(&behind_proxy.seen()), ["Bearer sk-openai-secret"]);
    assert_eq!(keys(&direct.seen()), ["Bearer sk-ant-secret"]);
    // Only requests through the proxy carry its credential.
    assert!(direct.seen()[0].proxy_authorization.is_none());
    assert!(!log.contains("proxy-s3cret"), "{log}");
}

/// Upstream URLs that cannot work stop `loopwatch run` before the loop starts, with a
/// message naming the URL, where it came from, and why.
#[test]
fn bad_upstream_urls_stop_loopwatch_run_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    /// Flags, environment, and what the error must say.
    type Case = (
        Vec<String>,
        Vec<(&'static str, &'static str)>,
        &'static [&'static str],
    );
    let cases: [Case; 4] = [
        (
            vec!["--llm-upstream=http://exa mple.com".into()],
            vec![],
            &["--llm-upstream", "is not a URL"],
        ),
        (
            vec![
                format!("--llm-proxy-listen=127.0.0.1:{port}"),
                format!("--llm-upstream=http://127.0.0.1:{port}"),
            ],
            vec![],
            &["--llm-upstream", "the proxy's own address"],
        ),
        (
            vec![],
            vec![("OPENAI_BASE_URL", "localhost:8000/v1")],
            &["OPENAI_BASE_URL", "no scheme"],
        ),
        (
            vec![],
            vec![("ANTHROPIC_BASE_URL", "ftp://user:url-s3cret@models.example")],
            &["ANTHROPIC_BASE_URL", "scheme is ftp", "***@models.example"],
        ),
    ];
    for (flags, env, expected) in cases {
        let started = dir.path().join("started");
        let output = Command::new(env!("CARGO_BIN_EXE_loopwatch"))
            .arg("run")
            .arg(format!("--listen=127.0.0.1:{}", free_port()))
            .arg(format!("--output-dir={}", dir.path().display()))
            .arg("--llm-proxy")
            .args(&flags)
            .arg("--")
            .args(["touch", started.to_str().unwrap()])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flags:?} {env:?}: {stderr}");
        assert!(!started.exists(), "{flags:?} {env:?}: the loop was started");
        for text in expected {
            assert!(
                stderr.contains(text),
                "{flags:?} {env:?}: no {text:?} in {stderr}"
            );
        }
        assert!(!stderr.contains("url-s3cret"), "{stderr}");
    }
}

/// Credentials in an upstream URL are sent as the upstream's Basic credential to
/// requests without one of their own, and never appear in the log: not when the
/// proxy starts, not when the upstream cannot be reached.
#[test]
fn credentials_in_upstream_urls_never_reach_the_log() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("calls.py");
    std::fs::write(
        &script,
        r#"import json, os, urllib.request, openai, loopwatch
with loopwatch.iteration() as it:
    try:
        openai.OpenAI(api_key="sk-openai-secret", max_retries=0, timeout=5).chat.completions.create(
            model="ok/chat", messages=[{"role": "user", "content": "x"}])
        request = urllib.request.Request(os.environ["LOOPWATCH_LLM_PROXY"] + "/v1/models")
        urllib.request.urlopen(request, timeout=5).read()
        it.success(1.0)
    except Exception as e:
        it.failure(type(e).__name__)
loopwatch.done()
"#,
    )
    .unwrap();
    let reachable = dir.path().join("reachable");
    std::fs::create_dir(&reachable).unwrap();
    let with_credentials = format!(
        "http://lwuser:url-s3cret@127.0.0.1:{}",
        upstream.addr.port()
    );
    let mut run = metered(
        &reachable,
        &[&format!("--llm-upstream={with_credentials}")],
        &script,
        &[],
    );
    assert_eq!(run.wait(Duration::from_secs(60)).code(), Some(0));
    let log = run.log();
    let seen = upstream.seen();
    // The SDK's own key goes unchanged; the request without one gets the URL's,
    // as Basic base64("lwuser:url-s3cret"); no request line carries it.
    assert_eq!(
        keys(&seen),
        ["Bearer sk-openai-secret", "Basic bHd1c2VyOnVybC1zM2NyZXQ="],
        "{log}"
    );
    assert!(
        seen.iter().all(|s| !s.target.contains("s3cret")),
        "{seen:?}"
    );
    assert!(log.contains("***@127.0.0.1"), "{log}");
    assert!(
        !log.contains("url-s3cret") && !log.contains("lwuser"),
        "{log}"
    );

    let unreachable = dir.path().join("unreachable");
    std::fs::create_dir(&unreachable).unwrap();
    let closed = format!("http://lwuser:url-s3cret@127.0.0.1:{}", free_port());
    let mut run = metered(
        &unreachable,
        &[&format!("--llm-upstream={closed}")],
        &script,
        &[],
    );
    assert_eq!(run.wait(Duration::from_secs(60)).code(), Some(0));
    let log = run.log();
    // The failure is logged with its cause and the upstream, credentials hidden.
    assert!(log.contains("could not be reached"), "{log}");
    assert!(log.contains("Connection refused"), "{log}");
    assert!(
        !log.contains("url-s3cret") && !log.contains("lwuser"),
        "{log}"
    );
}

/// The upstream side of loopwatch's TCP connections to `port` in `/proc/net/tcp`:
/// each one's `tr` column (0: no timer, 2: the keepalive timer armed).
fn connections_to(port: u16) -> Vec<u8> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = u16::from_str_radix(fields[2].rsplit(':').next()?, 16).ok()?;
            let established = fields[3] == "01";
            let timer = fields[5].split(':').next()?.parse::<u8>().ok()?;
            (remote_port == port && established).then_some(timer)
        })
        .collect()
}

/// A pooled connection to an upstream stays open between calls, with TCP keepalive
/// armed, so that a NAT or firewall on the way does not drop it unseen.
#[test]
fn pooled_upstream_connections_have_tcp_keepalive() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("call_and_wait.py");
    std::fs::write(
        &script,
        r#"import os, time, openai, loopwatch
openai.OpenAI(api_key="k", max_retries=0, timeout=10).chat.completions.create(
    model="ok/chat", messages=[{"role": "user", "content": "x"}])
open("called", "w").close()
while not os.path.exists("checked"):
    time.sleep(0.05)
loopwatch.done()
"#,
    )
    .unwrap();
    let mut run = metered(
        dir.path(),
        &[&format!("--llm-upstream={}", upstream.url())],
        &script,
        &[],
    );
    wait_until(Duration::from_secs(60), "the loop's call", || {
        dir.path().join("called").exists()
    });
    let timers = connections_to(upstream.addr.port());
    std::fs::write(dir.path().join("checked"), "").unwrap();
    assert_eq!(
        run.wait(Duration::from_secs(60)).code(),
        Some(0),
        "{}",
        run.log()
    );
    assert_eq!(timers, [2], "loopwatch's pooled connection and its timer");
}

/// An upstream that never answers a connection attempt (its accept queue full: the
/// kernel drops the SYNs) is given up after the connect timeout, as a connection
/// error, long before the loop's own 60 s timeout would call it a timeout.
#[test]
fn a_connection_attempt_that_hangs_is_given_up_after_the_connect_timeout() {
    // A listener with a backlog of 0 that never accepts: one connection fills it.
    let mut listener = Command::new(python())
        .args([
            "-c",
            "import socket, sys\n\
             s = socket.socket()\n\
             s.bind(('127.0.0.1', 0))\n\
             s.listen(0)\n\
             print(s.getsockname()[1], flush=True)\n\
             sys.stdin.read()\n",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(listener.stdout.take().unwrap()),
        &mut port,
    )
    .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", port.trim()).parse().unwrap();
    // Fill its queue until a connection attempt is no longer answered.
    let mut held = Vec::new();
    loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(stream) => held.push(stream),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
            Err(e) => panic!("connecting to the full listener: {e}"),
        }
        assert!(held.len() < 64, "the listener's queue never filled");
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("one_call.py");
    std::fs::write(
        &script,
        r#"import openai, loopwatch
with loopwatch.iteration() as it:
    try:
        openai.OpenAI(api_key="k", max_retries=0, timeout=60).chat.completions.create(
            model="ok/chat", messages=[{"role": "user", "content": "x"}])
        it.success(1.0)
    except openai.APIError as e:
        it.failure(type(e).__name__)
loopwatch.done()
"#,
    )
    .unwrap();
    let mut run = metered(
        dir.path(),
        &[&format!("--llm-upstream=http://{addr}")],
        &script,
        &[],
    );
    assert_eq!(
        run.wait(Duration::from_secs(120)).code(),
        Some(0),
        "{}",
        run.log()
    );
    let log = run.log();
    let json = run.final_json();
    assert_eq!(
        json["summary"]["failure_reasons"]["APIConnectionError"], 1,
        "{log}"
    );
    let calls = final_samples(
        &json,
        "loopwatch_llm_calls_total",
        &[("outcome", "connection")],
    );
    assert_eq!(calls[0]["value"], 1.0, "{log}");
    // The connect timeout's error, with its cause.
    assert!(
        log.contains("tcp connect error: deadline has elapsed"),
        "{log}"
    );
    drop(held);
    let _ = listener.kill();
    let _ = listener.wait();
}

/// Under a network's `HTTP_PROXY`, the loop still reaches the metering proxy
/// directly: loopwatch adds the proxy's address to the loop's `NO_PROXY`, since the
/// network's proxy cannot reach this host's loopback. Only loopwatch's own requests
/// to the upstream go through the network's proxy.
#[test]
fn the_loop_reaches_the_metering_proxy_directly_under_http_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start();
    let proxy = llm_upstream::network::ForwardProxy::start();
    let proxy_url = proxy.url("proxyuser:proxy-s3cret");
    let mut run = Supervised::metered(
        dir.path(),
        &[&format!("--llm-upstream={}", upstream.url_at("localhost"))],
        &[("HTTP_PROXY", &proxy_url), ("NO_PROXY", "example.invalid")],
        &two_calls(dir.path()),
        &[],
    );
    let status = run.wait(Duration::from_secs(60));
    let log = run.log();
    assert_eq!(status.code(), Some(0), "{log}");
    let upstream_prefix = format!("POST http://localhost:{}/v1/", upstream.addr.port());
    let at_proxy = proxy.seen();
    assert!(!at_proxy.is_empty());
    assert!(
        at_proxy
            .iter()
            .all(|s| s.request_line.starts_with(&upstream_prefix)),
        "the loop's own requests went through the network's proxy: {at_proxy:?}"
    );
    assert_eq!(
        keys(&upstream.seen()),
        ["Bearer sk-openai-secret", "Bearer sk-ant-secret"]
    );
}

/// The final JSON's `summary.llm.by_model[model]`, or a panic naming what there is.
fn model_tally<'a>(json: &'a serde_json::Value, model: &str) -> &'a serde_json::Value {
    let tally = &json["summary"]["llm"]["by_model"][model];
    assert!(
        !tally.is_null(),
        "no {model} in {}",
        json["summary"]["llm"]["by_model"]
    );
    tally
}

/// What the provider finished is booked as finished, whatever the loop read of it:
/// answers dropped unread (32 MiB each, more than any socket holds, so the loop hangs
/// up long before their end), 10 MiB of embeddings, 200s that are not JSON or come
/// compressed (usage missing, not errors), a Responses stream cut by
/// `max_output_tokens` (ok, with its usage) and one that failed (an error of its type).
#[test]
fn finished_calls_are_booked_as_finished_whatever_the_loop_read() {
    use llm_upstream::*;
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("seen.json");
    let mut run = metered(
        dir.path(),
        &[&format!("--llm-upstream={}", upstream.url())],
        &script("accounting.py"),
        &[out.to_str().unwrap(), "{metrics}"],
    );
    let status = run.wait(Duration::from_secs(180));
    assert_eq!(status.code(), Some(0), "{}", run.log());
    let seen: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(seen["status_only"], serde_json::json!([200, 200, 200]));
    assert_eq!(
        seen["big"],
        serde_json::json!([BIG_EMBEDDINGS, BIG_DIMENSIONS])
    );
    assert_eq!(seen["html"][0], 200);
    // The compressed answer reached the loop as the upstream sent it.
    assert_eq!(seen["gzip"]["prompt_tokens"], CHAT_USAGE.0);
    assert_eq!(
        seen["incomplete"].as_array().unwrap().last().unwrap(),
        "response.incomplete",
        "{seen}"
    );
    let json = run.final_json();
    let llm = &json["summary"]["llm"];
    // The unread answers: read to their end by the proxy, their usage booked.
    let huge = model_tally(&json, "huge/chat-2025");
    assert_eq!(
        (&huge["calls"], &huge["errors"], &huge["abandoned"]),
        (&3.into(), &0.into(), &0.into()),
        "{huge}"
    );
    assert_eq!(huge["input_tokens"], 3 * HUGE_USAGE.0);
    assert_eq!(huge["output_tokens"], 3 * HUGE_USAGE.1);
    let big = model_tally(&json, "big/embed-2025");
    assert_eq!(
        (&big["errors"], &big["input_tokens"]),
        (&0.into(), &BIG_EMBEDDINGS.into()),
        "{big}"
    );
    for model in ["html/chat", "gzip/chat"] {
        let t = model_tally(&json, model);
        assert_eq!(
            (&t["calls"], &t["errors"], &t["usage_missing"]),
            (&1.into(), &0.into(), &1.into()),
            "{model}: {t}"
        );
        let missing = final_samples(
            &json,
            "loopwatch_llm_usage_missing_total",
            &[("model", model)],
        );
        assert_eq!(missing[0]["value"], 1.0, "{model}");
    }
    let incomplete = model_tally(&json, "incomplete/responses-2025");
    assert_eq!(incomplete["errors"], 0, "{incomplete}");
    assert_eq!(incomplete["input_tokens"], INCOMPLETE_USAGE.0);
    assert_eq!(incomplete["output_tokens"], INCOMPLETE_USAGE.1);
    assert_eq!(incomplete["reasoning_tokens"], INCOMPLETE_USAGE.2);
    let reasoning = final_samples(
        &json,
        "loopwatch_llm_reasoning_tokens_total",
        &[("model", "incomplete/responses-2025")],
    );
    assert_eq!(reasoning[0]["value"], INCOMPLETE_USAGE.2 as f64);
    assert_eq!(
        model_tally(&json, "failed/responses-2025")["errors_by_type"],
        serde_json::json!({"server_error": 1})
    );
    assert_eq!(llm["errors"], 1, "{llm}");
    assert_eq!(llm["abandoned"], 0, "{llm}");
    assert_eq!(
        llm["spend_is_lower_bound"], true,
        "two answers had no usage"
    );
    // Nothing of the answers was kept.
    assert!(
        !std::fs::read_to_string(dir.path().join("metrics_final.json"))
            .unwrap()
            .contains("xxxxxxxx")
    );
}

/// Calls in flight when the loop is stopped are abandoned, not an outage: four calls
/// waiting on the provider and a SIGTERM to `loopwatch run`, the loop's
/// `--exit-timeout` after it said it was done, or the loop dying on its own (a crash:
/// loopwatch learns of it only as its process exits, after the calls were cut) leave
/// no LLMErrors in the alert history, and four abandoned calls.
#[test]
fn calls_in_flight_at_a_stop_are_abandoned_not_an_outage() {
    for (exit_timeout, crash) in [(false, false), (true, false), (false, true)] {
        let upstream = Upstream::start();
        let dir = tempfile::tempdir().unwrap();
        let upstream_flag = format!("--llm-upstream={}", upstream.url());
        let mut flags = vec![upstream_flag.as_str(), "--linger=0s"];
        let mut args = vec![];
        if exit_timeout {
            flags.push("--exit-timeout=1s");
            args = vec!["done", "{metrics}"];
        }
        if crash {
            args = vec!["crash", "{metrics}"];
        }
        let mut run = metered(dir.path(), &flags, &script("in_flight.py"), &args);
        if !exit_timeout && !crash {
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let request = format!(
                    "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                    run.addr
                );
                // Not listening yet is not an answer yet.
                let in_flight = http_raw(run.addr, request.as_bytes())
                    .ok()
                    .and_then(|response| parse(&response.body).ok())
                    .and_then(|m| {
                        m.get("loopwatch_llm_in_flight")
                            .and_then(|f| f.value_with(&[]))
                    });
                if in_flight == Some(4.0) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "never four calls in flight; log:\n{}",
                    run.log()
                );
                assert!(
                    run.child.try_wait().unwrap().is_none(),
                    "loopwatch ended; log:\n{}",
                    run.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(run.child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )
            .unwrap();
        }
        let status = run.wait(Duration::from_secs(120));
        if exit_timeout {
            assert_eq!(status.code(), Some(0), "a completed run; {}", run.log());
        }
        let json = run.final_json();
        let llm = &json["summary"]["llm"];
        assert_eq!(
            (&llm["calls"], &llm["abandoned"], &llm["errors"]),
            (&4.into(), &4.into(), &0.into()),
            "exit timeout {exit_timeout}, crash {crash}: {llm}"
        );
        let history = json["alert_history"].as_array().unwrap();
        assert!(
            history.iter().all(|e| e["alertname"] != "LLMErrors"),
            "{history:#?}"
        );
        let abandoned = final_samples(
            &json,
            "loopwatch_llm_calls_total",
            &[("model", "hang/chat"), ("outcome", "abandoned")],
        );
        assert_eq!(abandoned[0]["value"], 4.0);
        assert_eq!(
            json["metrics"]["loopwatch_llm_recent_failures"]["samples"][0]["value"],
            0.0
        );
        assert!(
            final_samples(&json, "gen_ai_client_operation_duration_seconds", &[]).is_empty(),
            "abandoned calls did not end: no operation duration"
        );
    }
}

/// Guards the booking of calls cut by loopwatch's own stall action as `abandoned`: the
/// supervisor tells the proxy before its SIGTERM (`tell_the_proxy`), so the calls are
/// not taken for the provider's timeouts, and LLMErrors stays silent. A loop stalls
/// with four calls in flight to the stand-in (`hang`, never answered); LoopStalled
/// fires and `--on-stall kill` ends it, or `--on-stall restart` ends it and starts it
/// again. A worker of the loop ignores SIGTERM, so the grace period (6 s) runs after the
/// loop's own process, and its calls, have died: longer than the proxy waits
/// (`SETTLE_WAIT`) to learn whether a left call was cut by the loop's end. The calls'
/// outcome is decided while the loop is being ended, not when it is over.
#[test]
fn calls_in_flight_when_a_stalled_loop_is_killed_or_restarted_are_abandoned() {
    for on_stall in ["kill", "restart"] {
        let upstream = Upstream::start();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("loopwatch.toml");
        std::fs::write(&config, "stall_floor = \"3s\"\nstall_factor = 1.0\n").unwrap();
        let config_flag = format!("--config={}", config.display());
        let upstream_flag = format!("--llm-upstream={}", upstream.url());
        let on_stall_flag = format!("--on-stall={on_stall}");
        let mut run = metered(
            dir.path(),
            &[
                &upstream_flag,
                &config_flag,
                &on_stall_flag,
                "--grace=6s",
                "--restart-delay=100ms",
                "--linger=0s",
            ],
            &script("stalled_in_flight.py"),
            &["{metrics}"],
        );
        let status = run.wait(Duration::from_secs(120));
        let log = run.log();
        assert!(
            log.contains("the loop stalled; terminating its processes"),
            "{on_stall}: {log}"
        );
        // The premise: the grace period ran on after the loop's own process died.
        assert!(
            log.contains("processes of the loop still running at the end of the grace period"),
            "{on_stall}: {log}"
        );
        let json = run.final_json();
        let exits = json["summary"]["exits"].as_array().unwrap();
        assert_eq!(
            exits[0]["reason"], "stalled",
            "{on_stall}: {exits:?}; {log}"
        );
        if on_stall == "restart" {
            assert_eq!(exits.len(), 2, "{exits:?}; {log}");
            assert_eq!(exits[1]["reason"], "exited", "{exits:?}; {log}");
            assert_eq!(status.code(), Some(0), "{log}");
        } else {
            assert_eq!(exits.len(), 1, "{exits:?}; {log}");
        }
        let llm = &json["summary"]["llm"];
        assert_eq!(
            (&llm["calls"], &llm["abandoned"], &llm["errors"]),
            (&4.into(), &4.into(), &0.into()),
            "--on-stall {on_stall}: {llm}"
        );
        let abandoned = final_samples(
            &json,
            "loopwatch_llm_calls_total",
            &[("model", "hang/chat"), ("outcome", "abandoned")],
        );
        assert_eq!(abandoned[0]["value"], 4.0, "{on_stall}");
        assert!(
            final_samples(
                &json,
                "loopwatch_llm_calls_total",
                &[("model", "hang/chat"), ("outcome", "timeout")]
            )
            .is_empty(),
            "{on_stall}: {}",
            json["metrics"]["loopwatch_llm_calls_total"]
        );
        let history = json["alert_history"].as_array().unwrap();
        assert!(
            history.iter().all(|e| e["alertname"] != "LLMErrors"),
            "{on_stall}: {history:#?}"
        );
        assert!(
            history.iter().any(|e| e["alertname"] == "LoopStalled"),
            "{on_stall}: {history:#?}"
        );
    }
}

/// `--llm-request-usage` asks a streamed chat request that lacks
/// `stream_options.include_usage` for its usage, and leaves alone one that declined
/// it and a plain request; without the flag nothing is added and such a stream's usage
/// is missing.
#[test]
fn llm_request_usage_asks_streams_for_their_usage_only_when_set() {
    use llm_upstream::*;
    let options = |seen: &[llm_upstream::Seen], model: &str| {
        seen.iter()
            .find(|s| s.model == model)
            .unwrap_or_else(|| panic!("{model} never arrived: {seen:?}"))
            .stream_options
            .clone()
    };
    for asked in [false, true] {
        let upstream = Upstream::start();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("seen.json");
        let upstream_flag = format!("--llm-upstream={}", upstream.url());
        let mut flags = vec![upstream_flag.as_str()];
        if asked {
            flags.push("--llm-request-usage");
        }
        let mut run = metered(
            dir.path(),
            &flags,
            &script("stream_usage.py"),
            &[out.to_str().unwrap()],
        );
        assert_eq!(
            run.wait(Duration::from_secs(60)).code(),
            Some(0),
            "{}",
            run.log()
        );
        let loop_saw: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        let seen = upstream.seen();
        let json = run.final_json();
        let usage_missing = |model: &str| model_tally(&json, model)["usage_missing"].clone();
        // The text of every stream reaches the loop whole either way.
        for name in ["bare", "declined", "options"] {
            assert_eq!(loop_saw[name]["text"], "hello", "{name}: {loop_saw}");
        }
        assert_eq!(
            options(&seen, "stream-asked/declined"),
            Some(serde_json::json!({"include_usage": false}))
        );
        assert_eq!(options(&seen, "ok/chat"), None);
        assert_eq!(loop_saw["plain"], CHAT_USAGE.0);
        if asked {
            assert_eq!(
                options(&seen, "stream-asked/bare"),
                Some(serde_json::json!({"include_usage": true}))
            );
            assert_eq!(
                options(&seen, "stream-asked/options"),
                Some(serde_json::json!({"include_usage": true}))
            );
            assert_eq!(loop_saw["bare"]["usage"], STREAM_USAGE.0);
            let bare = model_tally(&json, "stream-asked/bare-2025");
            assert_eq!(
                (&bare["input_tokens"], &bare["output_tokens"]),
                (&STREAM_USAGE.0.into(), &STREAM_USAGE.1.into()),
                "{bare}"
            );
            assert_eq!(usage_missing("stream-asked/bare-2025"), 0);
        } else {
            assert_eq!(options(&seen, "stream-asked/bare"), None);
            assert_eq!(
                options(&seen, "stream-asked/options"),
                Some(serde_json::json!({}))
            );
            assert_eq!(loop_saw["bare"]["usage"], serde_json::Value::Null);
            assert_eq!(usage_missing("stream-asked/bare-2025"), 1);
        }
        assert_eq!(usage_missing("stream-asked/declined-2025"), 1);
    }
}
