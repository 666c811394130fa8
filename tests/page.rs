//! The embedded page and its JSON, over real HTTP: what a person (or a notebook) sees
//! of a run, escaped, bounded, and drawn from the same data.

mod support;

use serde_json::Value;
use support::*;

/// A run of 600 iterations with hostile strings from the loop: markup, quotes and
/// 10 KB champion ids and failure reasons.
fn hostile_run(dir: &std::path::Path) -> loopwatch::Monitor {
    let monitor = monitor_in(dir);
    let huge = "x".repeat(10_000);
    let hostile = [
        "<script>alert(1)</script>".to_string(),
        "\"quoted\" & 'single' </svg><b>bold</b>".to_string(),
        huge.clone(),
    ];
    for i in 0..600u64 {
        let mut it = monitor.start_iteration();
        for k in 0..4 {
            it.record_success(0.5 + (i % 7) as f64 * 0.1 + k as f64 * 0.01, 0.1);
        }
        it.record_failure(&hostile[(i % 3) as usize]);
        it.record_failure("too few trades");
        let champion = format!("{}-{}", hostile[(i / 50 % 3) as usize], i / 50);
        it.record_population(loopwatch::Population::new(10, 5, 0.05).with_champion(&champion));
        it.finish();
    }
    monitor
}

#[test]
fn the_page_escapes_what_the_loop_sends_and_stays_small_with_600_iterations() {
    let dir = tempfile::tempdir().unwrap();
    let monitor = hostile_run(dir.path());
    let page = http_get(monitor.local_addr(), "/");
    assert_eq!(page.status, 200);
    assert!(page.headers["content-type"].starts_with("text/html"));
    let body = &page.body;
    assert!(
        !body.contains("<script>alert(1)</script>"),
        "markup is escaped"
    );
    assert!(
        body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "and shown"
    );
    assert!(!body.contains("</svg><b>bold</b>"));
    assert!(
        !body.contains("<script"),
        "no script at all: the page works offline"
    );
    assert!(
        !body.contains("http://") && !body.contains("https://"),
        "no external assets"
    );
    assert!(body.len() <= 150_000, "page of {} bytes", body.len());
    // Axes, the best-so-far line, failure bars, the alert lanes, the firing list.
    assert!(body.contains("class=\"axis axis-x\""), "an iteration axis");
    assert!(body.contains("best so far"));
    assert!(
        body.contains("data-reason=\"too few trades\""),
        "failure reasons as bars"
    );
    assert!(body.contains("data-lane=\"DiversityCollapse\" data-intervals=\"1\""));
    assert!(body.contains("data-alert=\"DiversityCollapse\""));
    assert!(body.contains("since iteration 5"), "firing since when");
    assert!(body.contains("<title>"), "hover labels");
    assert!(body.contains("http-equiv=\"refresh\" content=\"5\""));
    monitor.shutdown();
}

#[test]
fn the_json_snapshot_serves_what_the_page_draws() {
    let dir = tempfile::tempdir().unwrap();
    let monitor = hostile_run(dir.path());
    let response = http_get(monitor.local_addr(), "/api/v1/snapshot");
    assert_eq!(response.status, 200);
    assert_eq!(response.headers["content-type"], "application/json");
    let json: Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(json["summary"]["iterations"], 600);
    assert_eq!(
        json["history"].as_array().unwrap().len(),
        600,
        "the last 600 iterations"
    );
    let last = &json["history"][599];
    assert_eq!(last["iteration"], 600);
    assert!(
        last["best_sharpe"].as_f64().unwrap() >= 1.1,
        "best so far: {last}"
    );
    assert!(last["at"].as_f64().unwrap() > 1.7e9, "a Unix time");
    assert!(json["rolling"]["success_rate"].as_f64().is_some());
    // Hostile strings come back intact (JSON escapes them, the page HTML-escapes them).
    let reasons = json["failure_reasons"]["run"].as_array().unwrap();
    assert!(reasons
        .iter()
        .any(|r| r["reason"] == "<script>alert(1)</script>"));
    assert!(reasons
        .iter()
        .any(|r| r["reason"].as_str().is_some_and(|s| s.len() == 10_000)));
    let recent = json["failure_reasons"]["recent"].as_array().unwrap();
    let recent_total: u64 = recent.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert_eq!(
        recent_total, 20,
        "two failures in each of the last 10 iterations"
    );
    // Alerts with their intervals; the firing list says since when, value, threshold.
    let collapse = json["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["alertname"] == "DiversityCollapse")
        .unwrap();
    assert_eq!(collapse["state"], "firing");
    assert_eq!(collapse["intervals"][0]["from_iteration"], 5);
    assert!(collapse["intervals"][0]["to"].is_null(), "still firing");
    let firing = json["firing"].as_array().unwrap();
    let entry = firing
        .iter()
        .find(|f| f["alertname"] == "DiversityCollapse")
        .unwrap();
    assert_eq!(entry["since_iteration"], 5);
    assert_eq!(entry["threshold"], 0.1);
    assert!(json["containers"]["live"].as_array().is_some());
    monitor.shutdown();
}

#[test]
fn the_page_size_with_600_iterations_is_printed_for_the_readme() {
    let dir = tempfile::tempdir().unwrap();
    let monitor = hostile_run(dir.path());
    let page = http_get(monitor.local_addr(), "/");
    println!(
        "page with 600 iterations of history: {} bytes",
        page.body.len()
    );
    assert!(page.body.len() <= 150_000);
    monitor.shutdown();
}
