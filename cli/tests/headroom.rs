//! Rate-limit headroom under `loopwatch run --llm-proxy`: the real openai and
//! anthropic SDKs call a stand-in provider on loopback (`llm_upstream`, the only
//! fake: no provider's limits can be run down on cue) whose rate-limit headers count
//! down with each request (`countdown`: OpenAI's with Go durations, Anthropic's with
//! RFC 3339 times), then answer 429 with only their waits. Checked: the gauges of
//! remaining requests and tokens, limits and seconds to reset, exactly as the last
//! answer of each provider and model stated them; the limits kept through a 429 that
//! states none, the alert still firing at it; the least headroom as the evidence; the
//! wait of a 429 from `retry-after-ms` before `Retry-After`; the page's panel beside the 429s; and
//! LLMRateLimitNear at a real Alertmanager before the provider's first 429.

mod support;

#[allow(dead_code)]
mod llm_upstream;

use std::time::Duration;

use llm_upstream::{
    Upstream, COUNTDOWN_REQUESTS, COUNTDOWN_RETRY_MS, COUNTDOWN_TOKENS, COUNTDOWN_TOKENS_PER_CALL,
};
use support::services::Alertmanager;
use support::*;

/// The value of the final JSON's one sample of `name` whose labels include `labels`.
fn final_value(json: &serde_json::Value, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = final_samples(json, name, labels)
        .iter()
        .filter_map(|s| s["value"].as_f64())
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{name} {labels:?}: {}",
        json["metrics"][name]
    );
    found[0]
}

#[test]
fn the_gauges_say_what_each_providers_last_answer_said_of_its_limits() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("calls.py");
    std::fs::write(
        &script,
        r#"import sys, urllib.request, anthropic, openai
MESSAGES = [{"role": "user", "content": "x"}]
oa = openai.OpenAI(api_key="sk-test", max_retries=0)
an = anthropic.Anthropic(api_key="sk-ant-test", max_retries=0)
for _ in range(4):
    oa.chat.completions.create(model="countdown/chat", messages=MESSAGES)
for _ in range(3):
    an.messages.create(model="countdown/messages", max_tokens=8, messages=MESSAGES)
for _ in range(11):
    try:
        oa.chat.completions.create(model="countdown/burst", messages=MESSAGES)
    except openai.RateLimitError:
        pass
# The page as it stands now, for the test.
with urllib.request.urlopen(sys.argv[1][: -len("/metrics")] + "/") as page:
    open("page.html", "wb").write(page.read())
"#,
    )
    .unwrap();
    let mut run = Supervised::metered(
        dir.path(),
        &[&format!("--llm-upstream={}", upstream.url())],
        &[],
        &script,
        &["{metrics}"],
    );
    let status = run.wait(Duration::from_secs(120));
    assert_eq!(status.code(), Some(0), "{}", run.log());
    let json = run.final_json();

    // OpenAI-style, as its fourth answer said: 6 requests and 4 calls' tokens fewer,
    // a minute and six minutes to reset (`1m0s`, `6m0s`) when it came.
    let chat = [("provider", "openai"), ("model", "countdown/chat")];
    let with = |labels: &[(&'static str, &'static str)], limit: &'static str| {
        let mut all = labels.to_vec();
        all.push(("limit", limit));
        all
    };
    assert_eq!(
        final_value(&json, "loopwatch_llm_ratelimit_remaining_requests", &chat),
        (COUNTDOWN_REQUESTS - 4) as f64
    );
    assert_eq!(
        final_value(&json, "loopwatch_llm_ratelimit_limit_requests", &chat),
        COUNTDOWN_REQUESTS as f64
    );
    assert_eq!(
        final_value(
            &json,
            "loopwatch_llm_ratelimit_remaining_tokens",
            &with(&chat, "tokens")
        ),
        (COUNTDOWN_TOKENS - 4 * COUNTDOWN_TOKENS_PER_CALL) as f64
    );
    assert_eq!(
        final_value(
            &json,
            "loopwatch_llm_ratelimit_limit_tokens",
            &with(&chat, "tokens")
        ),
        COUNTDOWN_TOKENS as f64
    );
    // The resets as of the call's end, a moment after its headers.
    for (limit, stated) in [("requests", 60.0), ("tokens", 360.0)] {
        let reset = final_value(
            &json,
            "loopwatch_llm_ratelimit_reset_seconds",
            &with(&chat, limit),
        );
        assert!(stated - 1.0 < reset && reset <= stated, "{limit}: {reset}");
    }

    // Anthropic, as its third answer said; its resets are times a minute after the
    // answer (whole seconds), read against this host's clock.
    let messages = [("provider", "anthropic"), ("model", "countdown/messages")];
    assert_eq!(
        final_value(
            &json,
            "loopwatch_llm_ratelimit_remaining_requests",
            &messages
        ),
        (COUNTDOWN_REQUESTS - 3) as f64
    );
    assert_eq!(
        final_value(
            &json,
            "loopwatch_llm_ratelimit_remaining_tokens",
            &with(&messages, "tokens")
        ),
        (COUNTDOWN_TOKENS - 3 * COUNTDOWN_TOKENS_PER_CALL) as f64
    );
    let reset = final_value(
        &json,
        "loopwatch_llm_ratelimit_reset_seconds",
        &with(&messages, "requests"),
    );
    assert!((58.0..=60.0).contains(&reset), "{reset}");

    // The burst ran out: its eleventh call was a 429 whose wait is retry-after-ms's
    // (2 s), not Retry-After's (5 s); its last word is no requests left.
    let burst = [("provider", "openai"), ("model", "countdown/burst")];
    assert_eq!(
        final_value(&json, "loopwatch_llm_ratelimit_remaining_requests", &burst),
        0.0
    );
    assert_eq!(
        final_value(
            &json,
            "loopwatch_llm_retry_after_seconds",
            &[("model", "countdown/burst")]
        ),
        COUNTDOWN_RETRY_MS as f64 / 1000.0
    );
    assert_eq!(
        final_value(
            &json,
            "loopwatch_llm_rate_limited_total",
            &[("model", "countdown/burst")]
        ),
        1.0
    );

    // The summary: each provider's and model's last word, most constrained first,
    // and the least headroom in force as the evidence.
    let llm = &json["summary"]["llm"];
    let limits = llm["rate_limits"].as_array().unwrap();
    assert_eq!(limits.len(), 3, "{llm}");
    assert_eq!(limits[0]["model"], "countdown/burst", "{llm}");
    assert_eq!(limits[0]["headroom"], 0.0, "{llm}");
    assert_eq!(limits[0]["retry_after_seconds"], 2.0, "{llm}");
    let chat_limits = limits
        .iter()
        .find(|l| l["model"] == "countdown/chat")
        .unwrap();
    assert_eq!(chat_limits["limits"]["requests"]["remaining"], 6, "{llm}");
    assert_eq!(chat_limits["limits"]["requests"]["limit"], 10, "{llm}");
    assert_eq!(llm["rate_limit_headroom"], 0.0, "{llm}");
    assert_eq!(
        final_value(&json, "loopwatch_llm_ratelimit_headroom_ratio", &[]),
        0.0
    );

    // The page: the panel beside the 429s.
    let page = std::fs::read_to_string(dir.path().join("page.html")).unwrap();
    assert!(page.contains("data-panel=\"LLM rate limits\""), "{page}");
    assert!(page.contains("data-rate-limited=\"1\""), "{page}");
    assert!(page.contains("data-rate-limits=\"3\""), "{page}");
    assert!(page.contains("6 / 10, resets in"), "{page}");
}

#[test]
fn llm_rate_limit_near_reaches_alertmanager_before_the_first_429() {
    let upstream = Upstream::start();
    let alertmanager = Alertmanager::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("loopwatch.toml");
    // Less than a quarter of a limit left, for two seconds.
    std::fs::write(
        &config,
        "llm_headroom_fraction = 0.25\nllm_headroom_for = \"2s\"\n",
    )
    .unwrap();
    let script = dir.path().join("calls.py");
    std::fs::write(
        &script,
        r#"import os, time, openai
MESSAGES = [{"role": "user", "content": "x"}]
oa = openai.OpenAI(api_key="sk-test", max_retries=0)
log = open("calls.txt", "a")

def call():
    try:
        oa.chat.completions.create(model="countdown/chat", messages=MESSAGES)
        log.write("ok\n")
    except openai.RateLimitError:
        log.write("429\n")
    log.flush()

# Eight of the ten requests: two left, 20% of the limit.
for _ in range(8):
    call()
# The test says when to go on.
while not os.path.exists("go"):
    time.sleep(0.05)
# The last two, then a 429.
for _ in range(3):
    call()
"#,
    )
    .unwrap();
    let mut run = Supervised::metered(
        dir.path(),
        &[
            &format!("--llm-upstream={}", upstream.url()),
            &format!("--config={}", config.display()),
            &format!("--alertmanager={}", alertmanager.url()),
        ],
        &[],
        &script,
        &[],
    );
    wait_until(
        Duration::from_secs(60),
        "LLMRateLimitNear at Alertmanager",
        || alertmanager.alert("LLMRateLimitNear").is_some(),
    );
    // It fired on the headroom alone: the provider had answered no 429 yet.
    let seen = upstream.seen();
    assert_eq!(seen.len(), 8, "{seen:?}");
    assert!(
        seen.iter()
            .all(|s| !s.answered.contains("Rate limit reached")),
        "{seen:?}"
    );
    assert!(
        !scrape(run.addr).contains("loopwatch_llm_rate_limited_total{"),
        "no 429 was booked yet"
    );
    let alert = alertmanager.alert("LLMRateLimitNear").unwrap();
    assert_eq!(alert["annotations"]["summary"], "LLM rate limit near");
    assert_eq!(alert["labels"]["severity"], "warning");
    let value: f64 = alert["annotations"]["value"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((value - 0.2).abs() < 1e-9, "{alert}");

    // Then the 429 the alert warned of.
    std::fs::write(dir.path().join("go"), "").unwrap();
    let status = run.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{}", run.log());
    let calls = std::fs::read_to_string(dir.path().join("calls.txt")).unwrap();
    assert_eq!(calls.lines().filter(|l| *l == "ok").count(), 10, "{calls}");
    assert_eq!(calls.lines().last(), Some("429"), "{calls}");
    let json = run.final_json();
    assert_eq!(
        final_value(
            &json,
            "loopwatch_llm_rate_limited_total",
            &[("model", "countdown/chat")]
        ),
        1.0
    );
    // The 429 carried only its waits: the limits the answers before it stated still
    // hold, and the alert is still firing, not resolved as the 429s start.
    assert_eq!(
        json["summary"]["llm"]["rate_limit_headroom"], 0.0,
        "{}",
        json["summary"]["llm"]
    );
    assert!(
        !json["events"].as_array().unwrap().iter().any(|e| {
            e["kind"] == "alert" && e["alertname"] == "LLMRateLimitNear" && e["state"] == "resolved"
        }),
        "{}",
        json["events"]
    );
    // The event log has it firing, with the headroom as its value.
    let events = json["events"].as_array().unwrap();
    let fired = events
        .iter()
        .find(|e| {
            e["kind"] == "alert" && e["alertname"] == "LLMRateLimitNear" && e["state"] == "firing"
        })
        .unwrap_or_else(|| panic!("{events:?}"));
    assert!(
        (fired["value"].as_f64().unwrap() - 0.2).abs() < 1e-9,
        "{fired}"
    );
}
