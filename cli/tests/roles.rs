//! Spend by role under `loopwatch run --llm-proxy`: a loop calls a stand-in provider
//! on loopback (`llm_upstream`, the only fake) through the metering proxy, naming its
//! calls' roles by the `X-Loopwatch-Role` header (plain urllib) and by
//! `loopwatch.llm_role` around the real openai and anthropic SDKs, sync and in two
//! asyncio tasks at once. Checked: exact calls, tokens and cost per role in the final
//! JSON and the exported counters; a role that is not a role name booked as `invalid`
//! and counted; the header never reaching the provider, on metered and unmetered
//! paths alike.

mod support;

#[allow(dead_code)]
mod llm_upstream;

use std::time::Duration;

use llm_upstream::{script, Upstream, ANTHROPIC_USAGE, CHAT_USAGE};
use support::*;

/// Per million input and output tokens, for every model the loop calls.
const PRICE: (f64, f64) = (2.0, 8.0);

#[test]
fn spend_is_booked_by_role_from_the_header_and_the_python_helper_and_the_header_never_reaches_the_provider(
) {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("loopwatch.toml");
    let mut prices = String::new();
    for model in ["ok/chat", "ok/messages"] {
        prices.push_str(&format!(
            "[llm.prices.\"{model}\"]\ninput_per_million = {}\noutput_per_million = {}\n\n",
            PRICE.0, PRICE.1
        ));
    }
    std::fs::write(&config, prices).unwrap();
    let mut run = Supervised::metered(
        dir.path(),
        &[
            &format!("--llm-upstream={}", upstream.url()),
            &format!("--config={}", config.display()),
        ],
        &[],
        &script("roles.py"),
        &[],
    );
    let status = run.wait(Duration::from_secs(120));
    let log = run.log();
    assert_eq!(status.code(), Some(0), "{log}");
    let json = run.final_json();

    // What each role was booked: its calls, then its input and output tokens.
    let chat = CHAT_USAGE;
    let messages = ANTHROPIC_USAGE;
    let expected: [(&str, u64, (u64, u64)); 6] = [
        ("mutation", 2, (2 * chat.0, 2 * chat.1)),
        ("meta", 1, messages),
        ("novelty", 3, (3 * chat.0, 3 * chat.1)),
        ("judge", 1, messages),
        ("none", 2, (2 * chat.0, 2 * chat.1)),
        ("invalid", 1, chat),
    ];
    let by_role = &json["summary"]["llm"]["by_role"];
    assert_eq!(
        by_role.as_object().unwrap().len(),
        expected.len(),
        "{by_role}"
    );
    for (role, calls, (input, output)) in expected {
        let tally = &by_role[role];
        assert_eq!(tally["calls"], calls, "{role}: {tally}");
        assert_eq!(tally["errors"], 0, "{role}: {tally}");
        assert_eq!(tally["input_tokens"], input, "{role}: {tally}");
        assert_eq!(tally["output_tokens"], output, "{role}: {tally}");
        let cost = (input as f64 * PRICE.0 + output as f64 * PRICE.1) / 1e6;
        let booked = tally["cost_usd"].as_f64().unwrap();
        assert!((booked - cost).abs() < 1e-12, "{role}: {booked} != {cost}");
        // The exported counters say the same, by role.
        let role_label = [("role", role)];
        assert_eq!(
            final_sum(&json, "loopwatch_llm_calls_total", &role_label),
            calls as f64,
            "{role}"
        );
        for (kind, tokens) in [("input", input), ("output", output)] {
            assert_eq!(
                final_sum(
                    &json,
                    "loopwatch_llm_tokens_total",
                    &[("role", role), ("type", kind)]
                ),
                tokens as f64,
                "{role} {kind}"
            );
        }
        let exported = final_sum(&json, "loopwatch_llm_cost_usd_total", &role_label);
        assert!((exported - cost).abs() < 1e-12, "{role}: {exported}");
    }
    assert_eq!(json["summary"]["llm"]["calls"], 10);
    // The role that was not a role name is counted as a fallback, none overflowed.
    assert_eq!(json["summary"]["llm"]["role_fallbacks"]["invalid"], 1);
    assert_eq!(
        final_sum(
            &json,
            "loopwatch_llm_role_fallbacks_total",
            &[("reason", "invalid")]
        ),
        1.0
    );
    assert_eq!(
        final_sum(
            &json,
            "loopwatch_llm_role_fallbacks_total",
            &[("reason", "overflow")]
        ),
        0.0
    );

    // The provider saw every request, metered or not, and never the header.
    let seen = upstream.seen();
    assert_eq!(seen.len(), 11, "ten calls and a list of models: {seen:?}");
    assert!(
        seen.iter()
            .any(|s| s.method == "GET" && s.path.starts_with("/v1/models")),
        "{seen:?}"
    );
    for request in &seen {
        assert!(
            !request
                .header_names
                .iter()
                .any(|name| name.contains("loopwatch")),
            "{} {} carried {:?}",
            request.method,
            request.path,
            request.header_names
        );
    }
}
