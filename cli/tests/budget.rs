//! The LLM budget under `loopwatch run --llm-proxy`: a loop using the real openai and
//! anthropic SDKs (in the test virtual environment, their retries at their defaults)
//! spends through the metering proxy at a stand-in provider that bills known tokens
//! (`llm_upstream`, the only fake), with a budget that runs out after a few calls.
//! Checked, for each action:
//! - `block`: with calls in parallel (the SDK's, and a real OpenEvolve run's), the
//!   provider's own ledger never passes the budget by more than one call's worst
//!   case; calls the calls in flight could take past it are deferred (a retriable
//!   429 the SDKs retry); once the spend has reached the budget the loop gets each
//!   SDK's error with the budget's message, never a retry, and goes on; refusals and
//!   deferrals are free and outside LLMErrors; a streamed call without usage counts
//!   its worst case;
//! - `stop`: the spend of a start before a restart counts; nothing is sent once the
//!   budget is spent; the loop is stopped once, not restarted, and loopwatch writes
//!   both final files and exits with status 3;
//! - `warn`: the warnings at 50% and 80% (event, log line, page mark), then LLMBudget
//!   at a real Alertmanager.

mod support;

#[allow(dead_code)]
mod llm_upstream;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use llm_upstream::{script, Upstream, CHAT_USAGE, STREAM_USAGE};
use support::services::Alertmanager;
use support::*;

/// The price of the stand-in's chat models, per million input and output tokens:
/// a call of [`CHAT_USAGE`] (11 in, 7 out) costs $0.039.
const PRICE: (f64, f64) = (1_000.0, 4_000.0);

/// The cost of one call answered with [`CHAT_USAGE`].
fn call_usd() -> f64 {
    (CHAT_USAGE.0 as f64 * PRICE.0 + CHAT_USAGE.1 as f64 * PRICE.1) / 1e6
}

/// `loopwatch.toml`: the stand-in's chat models priced at [`PRICE`], then `more`.
fn config(dir: &Path, more: &str) -> PathBuf {
    let path = dir.join("loopwatch.toml");
    let mut text = String::new();
    for model in [
        "ok/chat",
        "held/chat",
        "ok/messages",
        "stream-asked/chat",
        "stream-no-usage/chat",
    ] {
        text.push_str(&format!(
            "[llm.prices.\"{model}\"]\ninput_per_million = {}\noutput_per_million = {}\n\n",
            PRICE.0, PRICE.1
        ));
    }
    text.push_str(more);
    std::fs::write(&path, text).unwrap();
    path
}

/// `loopwatch run --llm-proxy --llm-upstream=<upstream> --config=<config> [flags] --
/// python budget.py <args>` in `dir`, none of the machine's provider or network
/// variables passed on.
fn metered(
    dir: &Path,
    upstream: &Upstream,
    config: &Path,
    flags: &[&str],
    args: &[&str],
) -> Supervised {
    let upstream = format!("--llm-upstream={}", upstream.url());
    let config = format!("--config={}", config.display());
    let flags: Vec<&str> = [upstream.as_str(), &config]
        .into_iter()
        .chain(flags.iter().copied())
        .collect();
    Supervised::metered(dir, &flags, &[], &script("budget.py"), args)
}

/// What the loop wrote of what it saw.
fn outcomes(dir: &Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(dir.join("outcomes.json")).expect("the loop wrote outcomes.json");
    serde_json::from_str(&text).unwrap()
}

/// The budget's marks in the final event log: (event, percent).
fn budget_marks(json: &serde_json::Value) -> Vec<(String, Option<u64>)> {
    json["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "llm_budget")
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_string(),
                e["percent"].as_u64(),
            )
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn block_refuses_new_calls_in_the_providers_format_and_parallel_calls_overshoot_by_one_worst_case()
{
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    // Eight workers at once against a budget of about two and a half calls: only
    // the reservations of the calls in flight keep the first wave from all going out.
    let budget = 0.1;
    let config = config(
        dir.path(),
        &format!("[llm.budget]\nusd = {budget}\naction = \"block\"\n"),
    );
    let workers = 8;
    let mut run = metered(
        dir.path(),
        &upstream,
        &config,
        &[],
        &["parallel", &workers.to_string(), "{metrics}"],
    );
    // The stand-in holds the first calls. Two are admitted at once (each reserves
    // about $0.06 of the $0.10); while they are held, the other workers' calls can
    // only be deferred. Once loopwatch has counted a deferral, the held calls go.
    assert!(
        upstream.gate.wait_open(2, Duration::from_secs(60)),
        "two calls in flight at the stand-in; log:\n{}",
        run.log()
    );
    wait_until(Duration::from_secs(60), "a deferred call", || {
        scrape(run.addr).lines().any(|line| {
            line.starts_with("loopwatch_llm_calls_total{") && line.contains("outcome=\"deferred\"")
        })
    });
    assert_eq!(
        upstream.gate.most_open(),
        2,
        "reservations held the rest back"
    );
    upstream.gate.release();
    let status = run.wait(Duration::from_secs(120));
    let log = run.log();
    assert_eq!(status.code(), Some(0), "{log}");
    let seen = outcomes(dir.path());
    let json = run.final_json();

    // Each worker's calls went through until one was refused for good: a 429 with
    // `insufficient_quota` naming the budget and how to raise it, raised by the SDK
    // without a retry (the provider never saw more calls than went through), and
    // only once the spend itself had reached the budget. Before that, a call the
    // reservations of the calls in flight turned away was deferred: a retriable 429
    // the SDK retried after its Retry-After; one still deferred after the SDK's
    // retries reached the worker as `rate_limit_exceeded`, and it went on.
    let chat = seen["chat"].as_array().unwrap();
    let (ok, not_ok): (Vec<_>, Vec<_>) = chat.iter().partition(|c| c["ok"] == true);
    let (deferred, refused): (Vec<_>, Vec<_>) = not_ok
        .into_iter()
        .partition(|c| c["code"] == "rate_limit_exceeded");
    assert_eq!(refused.len(), workers, "one refusal per worker: {chat:?}");
    let spent_then = |message: &str| -> f64 {
        let (before, _) = message.split_once(" spent,").unwrap();
        before.rsplit_once('$').unwrap().1.parse().unwrap()
    };
    for r in &refused {
        assert_eq!(r["error"], "RateLimitError", "{r}");
        assert_eq!(r["status"], 429, "{r}");
        assert_eq!(r["code"], "insufficient_quota", "{r}");
        assert_eq!(r["body"]["type"], "insufficient_quota", "{r}");
        let message = r["body"]["message"].as_str().unwrap();
        for part in ["LLM budget of $0.1000", "--llm-budget-usd", "[llm.budget]"] {
            assert!(message.contains(part), "{part}: {message}");
        }
        assert!(
            spent_then(message) >= budget,
            "refused before the spend: {message}"
        );
    }
    for d in &deferred {
        assert_eq!(
            (&d["error"], &d["status"]),
            (&"RateLimitError".into(), &429.into()),
            "{d}"
        );
        let message = d["body"]["message"].as_str().unwrap();
        assert!(message.contains("LLM budget of $0.1000"), "{message}");
        assert!(
            spent_then(message) < budget,
            "deferred although spent: {message}"
        );
    }
    // Anthropic's own shape: a 400 `invalid_request_error`, as for a spend limit.
    let messages = &seen["messages"];
    assert_eq!(messages["error"], "BadRequestError", "{messages}");
    assert_eq!(messages["status"], 400, "{messages}");
    assert_eq!(messages["body"]["type"], "error", "{messages}");
    assert_eq!(
        messages["body"]["error"]["type"], "invalid_request_error",
        "{messages}"
    );
    assert!(
        messages["body"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--llm-budget-usd"),
        "{messages}"
    );

    // The provider's ledger: every call it answered, billed at its usage. The calls
    // it saw are those that went through (none refused reached it), and they passed
    // the budget by at most one call's worst case: its request's size at the input
    // price and its max_tokens (10) at the output price.
    let ledger: Vec<_> = upstream
        .seen()
        .into_iter()
        .filter(|s| s.path == "/v1/chat/completions")
        .collect();
    assert_eq!(ledger.len(), ok.len(), "{ledger:?}");
    assert!(upstream.seen().iter().all(|s| s.path != "/v1/messages"));
    let billed = ledger.len() as f64 * call_usd();
    let worst = ledger
        .iter()
        .map(|s| ((s.body_len as u64).div_ceil(4) as f64 * PRICE.0 + 10.0 * PRICE.1) / 1e6)
        .fold(0.0, f64::max);
    assert!(
        billed <= budget + worst + 1e-9,
        "billed ${billed} for a budget of ${budget}, one worst case ${worst}: {} calls",
        ledger.len()
    );
    assert!(billed >= budget - worst, "the budget was spent: ${billed}");
    // The calls overlapped (the stand-in held two while the others were deferred):
    // without reservations, the first wave alone, eight calls, would have passed the
    // budget by more than one worst case.
    assert!(workers as f64 * call_usd() > budget + worst);
    let llm = &json["summary"]["llm"];
    let deferrals = llm["deferred"].as_u64().unwrap();
    assert!(deferrals >= 1, "{llm}");
    assert!(
        deferrals >= deferred.len() as u64 * 3,
        "each raised after three tries"
    );

    // loopwatch booked the same spend; the refusals as `blocked`, the deferrals as
    // `deferred`: free, not errors.
    assert!(close(llm["cost_usd"].as_f64().unwrap(), billed), "{llm}");
    assert_eq!(llm["blocked"], workers as u64 + 1, "{llm}");
    assert_eq!(llm["errors"], 0, "{llm}");
    assert_eq!(llm["budget"]["action"], "block", "{llm}");
    assert_eq!(llm["budget"]["blocked_calls"], workers as u64 + 1, "{llm}");
    assert_eq!(llm["budget"]["deferred_calls"], deferrals, "{llm}");
    assert_eq!(
        final_sum(
            &json,
            "loopwatch_llm_calls_total",
            &[("outcome", "deferred")]
        ),
        deferrals as f64
    );
    assert!(
        close(llm["budget"]["spent_usd"].as_f64().unwrap(), billed),
        "{llm}"
    );
    assert_eq!(llm["budget"]["reserved_usd"], 0.0, "{llm}");
    assert_eq!(
        final_sum(
            &json,
            "loopwatch_llm_calls_total",
            &[("outcome", "blocked")]
        ),
        (workers + 1) as f64
    );
    assert_eq!(json["evaluation"]["alerts"]["LLMErrors"], "inactive");
    assert_eq!(json["evaluation"]["alerts"]["LLMBudget"], "firing");
    // The first refusal is marked once, in the events and the log.
    let blocking: Vec<_> = budget_marks(&json)
        .into_iter()
        .filter(|(event, _)| event == "blocking")
        .collect();
    assert_eq!(blocking.len(), 1, "{}", json["events"]);
    assert_eq!(
        log.matches("LLM budget spent: the proxy refuses new LLM calls")
            .count(),
        1,
        "{log}"
    );
    // loopwatch kept serving while the loop went on after its refusals.
    let metrics = seen["metrics"].as_str().unwrap();
    assert!(metrics.contains("outcome=\"blocked\""), "{metrics}");
    assert_eq!(json["summary"]["iterations"], 2);
    assert_eq!(json["summary"]["loop_exit"]["code"], 0);
}

/// Under a budget, streamed calls are asked for their usage (as
/// `--llm-request-usage` does); a call that still ends without it (here a provider
/// that never sends it) is charged its worst case against the budget, so `block`
/// refuses once those charges reach it. The reported cost stays a lower bound.
#[test]
fn a_streamed_call_without_usage_counts_its_worst_case_against_the_budget() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let budget = 0.2;
    let config = config(
        dir.path(),
        &format!("[llm.budget]\nusd = {budget}\naction = \"block\"\n"),
    );
    let mut run = metered(dir.path(), &upstream, &config, &[], &["streamed"]);
    let status = run.wait(Duration::from_secs(120));
    let log = run.log();
    assert_eq!(status.code(), Some(0), "{log}");
    let seen = outcomes(dir.path());
    let json = run.final_json();

    // The first stream was asked for its usage, without --llm-request-usage, and
    // its usage booked.
    assert_eq!(seen["asked"]["ok"], true, "{seen}");
    let asked: Vec<_> = upstream
        .seen()
        .into_iter()
        .filter(|s| s.model == "stream-asked/chat")
        .collect();
    assert_eq!(asked.len(), 1);
    assert_eq!(
        asked[0].stream_options,
        Some(serde_json::json!({"include_usage": true}))
    );
    let asked_usd = (STREAM_USAGE.0 as f64 * PRICE.0 + STREAM_USAGE.1 as f64 * PRICE.1) / 1e6;
    // The streams that never carry usage: each charged its worst case, its request's
    // size as the loop sent it (before the proxy added stream_options) at the input
    // price and its max_tokens (10) at the output price; refused once the budget is
    // spent, as the provider's ledger shows.
    let without = seen["without"].as_array().unwrap();
    let (last, answered) = without.split_last().unwrap();
    assert!(answered.iter().all(|c| c["ok"] == true), "{seen}");
    assert_eq!(last["code"], "insufficient_quota", "refused: {seen}");
    let added = r#""stream_options":{"include_usage":true},"#.len();
    let worst: Vec<f64> = upstream
        .seen()
        .iter()
        .filter(|s| s.model == "stream-no-usage/chat")
        .map(|s| ((s.body_len - added).div_ceil(4) as f64 * PRICE.0 + 10.0 * PRICE.1) / 1e6)
        .collect();
    assert_eq!(worst.len(), answered.len(), "the refused call was not sent");
    let estimated: f64 = worst.iter().sum();
    assert!(asked_usd + estimated >= budget, "{estimated}");
    assert!(
        asked_usd + estimated - worst[worst.len() - 1] < budget,
        "refused at the first call past the budget: {estimated}"
    );
    let llm = &json["summary"]["llm"];
    assert!(close(llm["cost_usd"].as_f64().unwrap(), asked_usd), "{llm}");
    assert_eq!(llm["spend_is_lower_bound"], true, "{llm}");
    assert_eq!(llm["usage_missing"], answered.len() as u64, "{llm}");
    let b = &llm["budget"];
    assert!(
        close(b["estimated_usd"].as_f64().unwrap(), estimated),
        "{b}"
    );
    assert!(
        close(b["spent_usd"].as_f64().unwrap(), asked_usd + estimated),
        "{b}"
    );
    assert_eq!(b["spent"], true, "{b}");
    assert_eq!(json["evaluation"]["alerts"]["LLMBudget"], "firing");
    // With the budget spent, a GET of the chat path (the list of stored
    // completions) went to the provider untouched, neither refused nor metered.
    assert_eq!(seen["stored"]["ok"], true, "{seen}");
    assert!(
        upstream
            .seen()
            .iter()
            .any(|s| s.method == "GET" && s.path.starts_with("/v1/chat/completions")),
        "the GET reached the provider"
    );
    assert_eq!(llm["blocked"], 1, "{llm}");
    assert_eq!(
        llm["calls"].as_u64().unwrap(),
        1 + without.len() as u64,
        "the GET is not a call: {llm}"
    );
}

/// A real OpenEvolve run (pip `openevolve`, its retries at its default, three, one
/// second apart, four workers) through the proxy under `block`: the calls deferred
/// while others are in flight are retried (by the SDK, after their Retry-After) and
/// go through; once the budget is spent OpenEvolve gets the refusals as errors of its
/// iterations, finishes its run, and loopwatch with it; the provider's ledger stays
/// within the budget and one call's worst case.
#[test]
fn openevolve_under_block_sees_the_refusals_and_finishes_its_run() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let port = support::services::free_port();
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
    let max_tokens = 10;
    std::fs::write(
        dir.path().join("config.yaml"),
        format!(
            r#"max_iterations: 12
checkpoint_interval: 100
diff_based_evolution: false
llm:
  api_base: "http://127.0.0.1:{port}/v1"
  api_key: "sk-openevolve"
  models:
    - name: "slow/openevolve"
      weight: 1.0
  timeout: 20
  retries: 3
  retry_delay: 1
  max_tokens: {max_tokens}
database:
  population_size: 10
  num_islands: 1
evaluator:
  parallel_evaluations: 4
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
    // Input cheap, output dear: OpenEvolve's prompts are kilobytes, its answers
    // (as the stand-in bills them) 11 tokens in and 7 out.
    let price = (1.0, 4_000.0);
    let call_usd = (CHAT_USAGE.0 as f64 * price.0 + CHAT_USAGE.1 as f64 * price.1) / 1e6;
    let budget = 0.1;
    let config = dir.path().join("loopwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[llm.budget]\nusd = {budget}\naction = \"block\"\n\n[llm.prices.\"slow/openevolve\"]\ninput_per_million = {}\noutput_per_million = {}\n",
            price.0, price.1
        ),
    )
    .unwrap();
    let launch = Launch {
        env_remove: ["OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"]
            .iter()
            .map(OsString::from)
            .collect(),
        current_dir: Some(dir.path().to_path_buf()),
        ..Launch::default()
    };
    let command: Vec<OsString> = [
        python().into_os_string(),
        wrapper.into_os_string(),
        "initial.py".into(),
        "evaluator.py".into(),
        "--config".into(),
        "config.yaml".into(),
        "--output".into(),
        "out".into(),
    ]
    .into();
    let mut run = Supervised::launch(
        dir.path(),
        &launch,
        &[
            &format!("--llm-upstream={}", upstream.url()),
            &format!("--llm-proxy-listen=127.0.0.1:{port}"),
            &format!("--config={}", config.display()),
        ],
        &command,
    );
    let status = run.wait(Duration::from_secs(300));
    let log = run.log();
    assert_eq!(status.code(), Some(0), "OpenEvolve finished its run: {log}");
    // OpenEvolve saw the refusal, the budget's message in its error, and went on.
    assert!(
        log.contains("Error code: 429 - loopwatch LLM budget of $0.1000 reached"),
        "{log}"
    );
    assert!(log.contains("Evolution completed"), "{log}");
    let ledger: Vec<_> = upstream
        .seen()
        .into_iter()
        .filter(|s| s.model == "slow/openevolve")
        .collect();
    assert!(!ledger.is_empty(), "{log}");
    let billed = ledger.len() as f64 * call_usd;
    let worst = ledger
        .iter()
        .map(|s| {
            ((s.body_len as u64).div_ceil(4) as f64 * price.0 + f64::from(max_tokens) * price.1)
                / 1e6
        })
        .fold(0.0, f64::max);
    assert!(
        billed <= budget + worst + 1e-9,
        "billed ${billed} for ${budget}, one worst case ${worst}"
    );
    let json = run.final_json();
    let llm = &json["summary"]["llm"];
    assert!(close(llm["cost_usd"].as_f64().unwrap(), billed), "{llm}");
    assert!(llm["blocked"].as_u64().unwrap() >= 1, "{llm}");
    assert_eq!(llm["errors"], 0, "{llm}");
    assert_eq!(json["evaluation"]["alerts"]["LLMErrors"], "inactive");
}

#[test]
fn stop_ends_the_run_with_status_3_counting_the_spend_before_a_restart() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    // Five calls' worth and a bit: the sixth call spends it. The first start makes
    // three calls and crashes; the restarted start calls until it is stopped.
    let budget = 0.2;
    let config = config(dir.path(), "");
    let mut run = metered(
        dir.path(),
        &upstream,
        &config,
        &[
            &format!("--llm-budget-usd={budget}"),
            "--llm-budget-action=stop",
            "--restart=always",
            "--restart-delay=100ms",
            "--grace=5s",
        ],
        &["restarted", "3"],
    );
    let status = run.wait(Duration::from_secs(120));
    let log = run.log();
    assert_eq!(
        status.code(),
        Some(i32::from(loopwatch::llm::budget::BUDGET_EXIT_STATUS)),
        "{log}"
    );
    assert_eq!(status.code(), Some(3));
    for file in ["metrics_final.json", "prometheus_metrics_final.txt"] {
        assert!(dir.path().join(file).is_file(), "{file}; {log}");
    }
    let json = run.final_json();
    // Two starts: the crash restarted, the stop not, although --restart=always.
    let exits = json["summary"]["exits"].as_array().unwrap();
    assert_eq!(exits.len(), 2, "{exits:?}");
    assert_eq!(exits[0]["restarted"], true, "{exits:?}");
    assert_eq!(exits[0]["status"], 1, "{exits:?}");
    assert_eq!(exits[1]["restarted"], false, "{exits:?}");
    assert_eq!(exits[1]["reason"], "stopped", "{exits:?}");
    assert_eq!(
        log.matches("the LLM budget is spent; stopping the loop")
            .count(),
        1,
        "{log}"
    );
    // The spend is the whole run's, the first start's calls included: every call
    // the provider answered, and at least the budget. The provider answered exactly
    // the six calls that spent it: from the sixth's end to the loop's, the proxy
    // refused the loop's calls (as under block), sending nothing more.
    let answered = upstream
        .seen()
        .iter()
        .filter(|s| s.path == "/v1/chat/completions")
        .count();
    assert_eq!(answered, 6, "{log}");
    let llm = &json["summary"]["llm"];
    let spent = llm["budget"]["spent_usd"].as_f64().unwrap();
    assert!(spent >= budget, "{llm}");
    assert!(close(llm["cost_usd"].as_f64().unwrap(), spent), "{llm}");
    let booked = llm["calls"].as_u64().unwrap()
        - llm["abandoned"].as_u64().unwrap()
        - llm["blocked"].as_u64().unwrap();
    assert_eq!(booked, 6, "{llm}");
    assert!(close(spent, booked as f64 * call_usd()), "{llm}");
    assert_eq!(llm["deferred"], 0, "{llm}");
    assert_eq!(llm["budget"]["action"], "stop", "{llm}");
    // The warnings: 50% in the first start (the third call), 80% in the second;
    // then, if the loop called again before it ended, the first refusal.
    let blocked = llm["blocked"].as_u64().unwrap();
    let mut expected = vec![
        ("warning".to_string(), Some(50)),
        ("warning".to_string(), Some(80)),
    ];
    if blocked > 0 {
        expected.push(("blocking".to_string(), None));
    }
    assert_eq!(budget_marks(&json), expected);
    // In the event log, the restart comes between the warnings; each warning's
    // spend is that of the call that reached it: the third, then the fifth.
    let events = json["events"].as_array().unwrap();
    let warning = |e: &&serde_json::Value| e["kind"] == "llm_budget" && e["event"] == "warning";
    let kinds: Vec<&str> = events
        .iter()
        .filter(|e| warning(e) || e["kind"] == "restarted")
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["llm_budget", "restarted", "llm_budget"],
        "{events:?}"
    );
    let spent_at: Vec<f64> = events
        .iter()
        .filter(warning)
        .map(|e| e["spent_usd"].as_f64().unwrap())
        .collect();
    assert!(
        close(spent_at[0], 3.0 * call_usd()) && close(spent_at[1], 5.0 * call_usd()),
        "{spent_at:?}"
    );
}

#[test]
fn warn_gives_both_warnings_then_llm_budget_at_alertmanager() {
    let upstream = Upstream::start();
    let alertmanager = Alertmanager::start();
    let dir = tempfile::tempdir().unwrap();
    // Ten calls' worth: 50% at the fifth call, 80% at the eighth, spent at the tenth
    // (the default action: warn). Twelve calls, all answered.
    let budget = 10.0 * call_usd() - 1e-6;
    let config = config(dir.path(), &format!("[llm.budget]\nusd = {budget}\n"));
    let mut run = metered(
        dir.path(),
        &upstream,
        &config,
        &[&format!("--alertmanager={}", alertmanager.url())],
        &["sequential", "12", "{metrics}"],
    );
    let status = run.wait(Duration::from_secs(120));
    let log = run.log();
    assert_eq!(status.code(), Some(0), "{log}");
    let calls = outcomes(dir.path());
    assert!(
        calls.as_array().unwrap().iter().all(|c| c["ok"] == true),
        "warn never refuses: {calls}"
    );
    let json = run.final_json();

    // The event log: the warnings in order, then LLMBudget firing.
    let events = json["events"].as_array().unwrap();
    let position = |pred: &dyn Fn(&serde_json::Value) -> bool| {
        events
            .iter()
            .position(pred)
            .unwrap_or_else(|| panic!("not in the events: {events:?}"))
    };
    let at_50 = position(&|e| e["kind"] == "llm_budget" && e["percent"] == 50);
    let at_80 = position(&|e| e["kind"] == "llm_budget" && e["percent"] == 80);
    let fired = position(&|e| {
        e["kind"] == "alert" && e["alertname"] == "LLMBudget" && e["state"] == "firing"
    });
    assert!(at_50 < at_80 && at_80 < fired, "{events:?}");
    assert_eq!(
        budget_marks(&json),
        [
            ("warning".to_string(), Some(50)),
            ("warning".to_string(), Some(80))
        ]
    );
    // Each at the call that reached it: the fifth, then the eighth.
    for (at, calls) in [(at_50, 5.0), (at_80, 8.0)] {
        assert_eq!(events[at]["action"], "warn");
        assert!(close(events[at]["budget_usd"].as_f64().unwrap(), budget));
        let spent = events[at]["spent_usd"].as_f64().unwrap();
        assert!(close(spent, calls * call_usd()), "{}", events[at]);
    }
    // The log: each warning once, before LLMBudget fired.
    let line = |needle: &str| {
        let lines: Vec<usize> = log
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains(needle))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(lines.len(), 1, "{needle}: {log}");
        lines[0]
    };
    let logged_50 = line("LLM budget warning: 50% of the budget is spent");
    let logged_80 = line("LLM budget warning: 80% of the budget is spent");
    let logged_fired = line("LLM budget exceeded");
    assert!(logged_50 < logged_80 && logged_80 < logged_fired, "{log}");
    // The page: both marks on the alert timeline's budget lane.
    let page = std::fs::read_to_string(dir.path().join("page.html")).unwrap();
    assert!(page.contains("data-budget-marks=\"2\""), "{page}");
    for percent in [50, 80] {
        assert!(
            page.contains(&format!(
                "data-budget-event=\"warning\" data-percent=\"{percent}\""
            )),
            "{percent}"
        );
    }
    // LLMBudget reached Alertmanager.
    wait_until(Duration::from_secs(10), "LLMBudget at Alertmanager", || {
        alertmanager.alert("LLMBudget").is_some()
    });
    let alert = alertmanager.alert("LLMBudget").unwrap();
    assert_eq!(alert["annotations"]["summary"], "LLM budget exceeded");
    let llm = &json["summary"]["llm"];
    assert_eq!(
        llm["budget"]["warned_at_percent"],
        serde_json::json!([50, 80])
    );
    assert_eq!(llm["budget"]["spent"], true);
    assert_eq!(llm["blocked"], 0);
    assert!(close(
        llm["budget"]["spent_usd"].as_f64().unwrap(),
        12.0 * call_usd()
    ));
}
