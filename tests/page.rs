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

/// Calls cut short are shown apart from failures, and the spend is said to be a
/// lower bound, on the page, in its JSON and in the final file, once a call's usage
/// is unknown.
#[test]
fn the_llm_panel_shows_abandoned_calls_and_a_spend_that_is_a_lower_bound() {
    use loopwatch::llm::LlmCall;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let monitor = monitor_in(dir.path());
    let priced = LlmCall::new("m", Duration::from_secs(1))
        .with_tokens(10, 5)
        .with_cost_usd(0.5);
    monitor.llm_call(&priced);
    let panel = |body: &str| {
        let at = body.find("data-panel=\"LLM calls\"").expect("an LLM panel");
        body[at..at + body[at..].find("</section>").unwrap()].to_string()
    };
    let page = http_get(monitor.local_addr(), "/").body;
    assert!(panel(&page).contains("data-spend-lower-bound=\"false\""));
    assert!(!panel(&page).contains("a lower bound"));
    // A call whose answer carried no usage, and one the loop hung up on.
    monitor.llm_call(&LlmCall::new("m", Duration::from_secs(1)));
    monitor.llm_call(&LlmCall::new("m", Duration::from_secs(1)).with_abandoned());
    let page = http_get(monitor.local_addr(), "/").body;
    let panel = panel(&page);
    for expected in [
        "data-abandoned=\"1\"",
        "data-usage-missing=\"2\"",
        "data-spend-lower-bound=\"true\"",
        "1 abandoned",
        "a lower bound: 2 calls without usage",
    ] {
        assert!(panel.contains(expected), "{expected} in {panel}");
    }
    let json: Value =
        serde_json::from_str(&http_get(monitor.local_addr(), "/api/v1/snapshot").body).unwrap();
    let llm = &json["summary"]["llm"];
    assert_eq!(
        (&llm["calls"], &llm["errors"], &llm["abandoned"]),
        (&Value::from(3), &Value::from(0), &Value::from(1))
    );
    assert_eq!(llm["spend_is_lower_bound"], true);
    monitor.shutdown();
    let final_json: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("metrics_final.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(final_json["summary"]["llm"]["spend_is_lower_bound"], true);
    assert_eq!(final_json["summary"]["llm"]["usage_missing"], 2);
    let outcomes = final_json["metrics"]["loopwatch_llm_calls_total"]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["labels"]["outcome"].as_str().unwrap().to_string(),
                s["value"].as_f64().unwrap(),
            )
        })
        .collect::<std::collections::BTreeMap<_, _>>();
    assert_eq!(outcomes["abandoned"], 1.0, "{outcomes:?}");
    assert_eq!(outcomes["ok"], 2.0, "{outcomes:?}");
}

/// Evaluations on the page and in the JSON: the oldest in flight with age, worker and
/// pid (at most ten), the duration distribution, occupancy over the iterations, the
/// slowest and the killed, and EvaluationHung's lane in the alert timeline.
#[test]
fn the_evaluations_panel_shows_the_oldest_in_flight_the_durations_and_the_killed() {
    let dir = tempfile::tempdir().unwrap();
    let monitor = monitor_in(dir.path());
    let supervision = monitor.supervision();
    let mut hanging = Vec::new();
    for i in 0..3u32 {
        let it = monitor.start_iteration();
        // Four workers busy at once.
        let batch: Vec<_> = (0..4u32)
            .map(|k| {
                monitor
                    .evaluation(&format!("prog-{i}-{k}"))
                    .worker(&format!("pool-{k}"))
                    .pid(1000 + k)
            })
            .collect();
        if i == 2 {
            hanging.extend(batch);
        } else {
            batch.into_iter().for_each(|e| e.ok());
        }
        it.finish();
    }
    for i in 0..12 {
        hanging.push(
            monitor
                .evaluation(&format!("<b>late-{i}</b>"))
                .pid(2000 + i),
        );
    }
    supervision.evaluation_killed("prog-2-3");
    let page = http_get(monitor.local_addr(), "/").body;
    assert!(
        page.contains("data-panel=\"Evaluations\" data-in-flight=\"15\" data-killed=\"1\""),
        "{page}"
    );
    assert!(
        page.contains("data-evaluations=\"in-flight\" data-rows=\"10\""),
        "at most ten"
    );
    assert!(page.contains("data-evaluation=\"prog-2-0\""));
    assert!(
        page.contains("<td>pool-0</td><td>1000</td>"),
        "worker and pid"
    );
    assert!(page.contains("data-evaluations=\"killed\" data-rows=\"1\""));
    assert!(
        page.contains("data-bucket=\"≤10 ms\""),
        "the distribution's bars"
    );
    assert!(page.contains("data-lane=\"EvaluationHung\""));
    assert!(!page.contains("<b>late"), "escaped");
    let json: Value =
        serde_json::from_str(&http_get(monitor.local_addr(), "/api/v1/snapshot").body).unwrap();
    let e = &json["evaluations"];
    assert_eq!(e["in_flight"], 15);
    assert_eq!(e["oldest"][0]["id"], "prog-2-0");
    assert_eq!(e["oldest"][0]["worker"], "pool-0");
    assert_eq!(e["killed"][0]["id"], "prog-2-3");
    assert_eq!(e["killed"][0]["outcome"], "killed");
    assert_eq!(e["killed_total"], 1);
    let ended: u64 = e["durations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(ended, 9, "eight ok and one killed: {e}");
    assert_eq!(e["slowest"].as_array().unwrap().len(), 9);
    assert_eq!(e["workers"], 4 + 12);
    // The highest occupancy of each iteration: the four workers were busy at once.
    let occupancy: Vec<_> = json["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["evaluation_occupancy"].clone())
        .collect();
    assert_eq!(occupancy, [1.0, 1.0, 1.0], "{occupancy:?}");
    drop(hanging);
    monitor.shutdown();
    let text = std::fs::read_to_string(dir.path().join("metrics_final.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["evaluations"]["killed"][0]["id"], "prog-2-3");
}

/// A loop that reports no iterations (a plain command under `loopwatch run`, or any
/// loop before its first iteration) still has its memory and CPU drawn, against the
/// time since the run started; the per-iteration charts wait for iterations. When
/// iterations come, every chart and the alert timeline switch to the iteration axis
/// (whole numbers, each once): the samples are drawn at the iterations completed when
/// each was taken.
#[test]
fn without_iterations_memory_and_cpu_are_drawn_on_a_time_axis() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    // Samples every 50 ms: the page is read once it has drawn three.
    let monitor = monitor_in(dir.path());
    let addr = monitor.local_addr();
    let mut page = String::new();
    wait_until(Duration::from_secs(30), "three samples on the page", || {
        page = http_get(addr, "/").body;
        page_chart(&page, "memory usage").is_some_and(|c| c.points >= 3)
    });
    for title in ["memory usage", "CPU usage"] {
        let chart = page_chart(&page, title).unwrap();
        assert_eq!(chart.axis, "time", "{title}: {}", chart.markup);
        assert_eq!(chart.lines.len(), 1, "{title}: one line");
        assert!(chart.lines[0] > 1, "{title}: a line, not a dot: {chart:?}");
        assert!(!chart.x_labels.is_empty(), "{title}: an x axis");
        assert!(
            chart.x_labels.iter().all(|l| is_time_label(l)),
            "{title}: times since the start: {:?}",
            chart.x_labels
        );
        assert_eq!(chart.x_labels[0], "0s", "{title}: from the start");
    }
    let memory = page_chart(&page, "memory usage").unwrap();
    assert!(
        !memory.markup.contains("no data yet"),
        "memory is drawn: {}",
        memory.markup
    );
    assert!(
        memory.markup.contains("since the start"),
        "hover labels say when"
    );
    // The panels carry the samples; the per-iteration charts wait for iterations.
    let time_per_iteration = page_chart(&page, "time per iteration").unwrap();
    assert_eq!(time_per_iteration.axis, "iteration");
    assert!(time_per_iteration.markup.contains("no iterations yet"));
    assert!(page_chart(&page, "active containers").unwrap().axis == "time");
    assert!(
        page.contains("class=\"timeline\" data-axis=\"time\""),
        "the alert timeline on time before the first iteration"
    );
    let json: Value = serde_json::from_str(&http_get(addr, "/api/v1/snapshot").body).unwrap();
    let samples = json["samples"].as_array().unwrap();
    assert!(samples.len() >= 3, "{samples:?}");
    assert!(samples
        .windows(2)
        .all(|w| w[0]["elapsed_seconds"].as_f64() <= w[1]["elapsed_seconds"].as_f64()));
    assert!(samples
        .iter()
        .all(|s| s["memory_usage_bytes"].as_f64() > Some(0.0)));
    assert_eq!(json["history"].as_array().unwrap().len(), 0);

    // Seven iterations: every chart and the timeline go to the iteration axis, whole
    // numbers each once; memory and CPU are drawn once a sample has seen them.
    for _ in 0..7 {
        let mut it = monitor.start_iteration();
        it.record_success(1.0, 0.1);
        it.finish();
    }
    let page = http_get(addr, "/").body;
    let time_per_iteration = page_chart(&page, "time per iteration").unwrap();
    assert_eq!(time_per_iteration.axis, "iteration");
    assert_eq!(time_per_iteration.points, 7);
    let labels = &time_per_iteration.x_labels;
    assert!(
        labels.iter().all(|l| l.parse::<u64>().is_ok()),
        "whole iterations: {labels:?}"
    );
    let mut unique = labels.clone();
    unique.dedup();
    assert_eq!(&unique, labels, "each iteration once");
    assert!(page.contains("class=\"timeline\" data-axis=\"iteration\""));
    let mut page = page;
    wait_until(
        Duration::from_secs(30),
        "a sample after the iterations",
        || {
            page = http_get(addr, "/").body;
            page_chart(&page, "memory usage").is_some_and(|c| c.points >= 1)
        },
    );
    for title in ["memory usage", "CPU usage", "active containers"] {
        let chart = page_chart(&page, title).unwrap();
        assert_eq!(chart.axis, "iteration", "{title}: {}", chart.markup);
        let labels = &chart.x_labels;
        assert!(
            labels.iter().all(|l| l.parse::<u64>().is_ok()),
            "{title}: whole iterations: {labels:?}"
        );
        let mut unique = labels.clone();
        unique.dedup();
        assert_eq!(&unique, labels, "{title}: each iteration once");
    }
    monitor.shutdown();
}

/// The row of the GPU `uuid` in the page's GPU panel.
#[cfg(feature = "gpu")]
fn gpu_row(page: &str, uuid: &str) -> Option<String> {
    let start = page.find(&format!("<tr data-gpu=\"{uuid}\""))?;
    let end = page[start..].find("</tr>")?;
    Some(page[start..start + end].to_string())
}

/// A GPU's readings stop standing when no sample comes (the stand-in NVML's driver
/// hangs: every call on the device blocks): the row says they are not current, with
/// no frozen number in their place, and the snapshot says `stale`; they are shown
/// again with the next sample. Against the stand-in NVML of tests/gpu.rs.
#[cfg(feature = "gpu")]
#[test]
fn the_gpu_panel_shows_readings_that_went_stale_as_not_current() {
    use std::time::Duration;
    use support::nvml_standin::{build_standin, write_script, Standin};
    let dir = tempfile::tempdir().unwrap();
    let library = build_standin(dir.path(), Standin::Whole);
    let uuid = "GPU-aaaaaaaa-aaaa-4000-8000-000000000001";
    let script = format!(
        "device {uuid} total={} used={} util=73 power_mw=187000 temp=64 ecc_corrected=0 ecc_uncorrected=0\n",
        16u64 << 30,
        4u64 << 30
    );
    write_script(&library, &script);
    let monitor = quiet_monitor()
        .sample_interval(Duration::from_millis(50))
        .gpu_library(&library)
        .build()
        .expect("the monitor starts");
    let addr = monitor.local_addr();
    let readings = || {
        let snapshot: Value =
            serde_json::from_str(&http_get(addr, "/api/v1/snapshot").body).unwrap();
        snapshot["gpus"][0]["readings"].as_str().map(str::to_string)
    };
    let wait = Duration::from_secs(30);
    let mut row = String::new();
    wait_until(wait, "the GPU's readings on the page", || {
        row = gpu_row(&http_get(addr, "/").body, uuid).unwrap_or_default();
        row.contains("data-readings=\"current\"")
    });
    for shown in ["73%", "64 °C", "187 W"] {
        assert!(row.contains(shown), "{shown} in {row}");
    }
    assert_eq!(readings().as_deref(), Some("current"));
    // The driver hangs: no sample comes, and past five periods (at least 5 s) the
    // readings are stale.
    write_script(&library, &format!("{script}hang\n"));
    wait_until(wait, "the page says the readings are stale", || {
        row = gpu_row(&http_get(addr, "/").body, uuid).unwrap_or_default();
        row.contains("data-readings=\"stale\"")
    });
    assert!(row.contains("no current reading"), "{row}");
    for frozen in ["73%", "°C", " W<", "GiB"] {
        assert!(!row.contains(frozen), "no frozen {frozen:?} in {row}");
    }
    assert_eq!(readings().as_deref(), Some("stale"));
    // The driver answers again: the readings are current again.
    write_script(&library, &script);
    wait_until(wait, "the page shows the readings again", || {
        row = gpu_row(&http_get(addr, "/").body, uuid).unwrap_or_default();
        row.contains("data-readings=\"current\"")
    });
    assert!(row.contains("64 °C"), "{row}");
    assert_eq!(readings().as_deref(), Some("current"));
    monitor.shutdown();
}
