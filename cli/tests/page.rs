//! The page of a loop that reports nothing: `loopwatch run` of a plain command still
//! serves its memory and CPU, sampled from the command's process tree, on a time axis;
//! checked over HTTP and in headless Chromium.

mod support;

use std::ffi::OsString;
use std::time::Duration;

use support::*;

/// `loopwatch run -- sh -c '…'` of a command that never reports an iteration and
/// runs until the test has seen its page: the Resource Usage panel draws memory and
/// CPU against the time since the start, in the served page and as Chromium renders
/// it; then the command ends and `loopwatch run` exits with it.
#[test]
fn a_plain_command_shows_memory_and_cpu_on_a_time_axis() {
    let dir = tempfile::tempdir().unwrap();
    let stop = dir.path().join("stop");
    // Alive until the test creates `stop`.
    let script = format!("while [ ! -e '{}' ]; do sleep 0.05; done", stop.display());
    let launch = Launch {
        env: vec![("LOOPWATCH_SAMPLE_INTERVAL".into(), "100ms".into())],
        ..Launch::default()
    };
    let command: Vec<OsString> = ["sh", "-c", &script].iter().map(OsString::from).collect();
    let mut run = Supervised::launch(dir.path(), &launch, &[], &command);
    run.wait_serving();
    let mut page = String::new();
    wait_until(Duration::from_secs(60), "three samples on the page", || {
        page = http_get(run.addr, "/").body;
        page_chart(&page, "memory usage").is_some_and(|c| c.points >= 3)
            && page_chart(&page, "CPU usage").is_some_and(|c| c.points >= 3)
    });
    let served = |page: &str, title: &str| {
        let chart = page_chart(page, title)
            .unwrap_or_else(|| panic!("no {title} chart; log:\n{}", run.log()));
        assert_eq!(chart.axis, "time", "{title}: {}", chart.markup);
        assert_eq!(chart.lines.len(), 1, "{title}: {}", chart.markup);
        assert!(chart.lines[0] >= 3, "{title}: a line: {chart:?}");
        assert!(
            chart.x_labels.len() >= 2 && chart.x_labels.iter().all(|l| is_time_label(l)),
            "{title}: a time axis: {:?}",
            chart.x_labels
        );
        chart
    };
    served(&page, "memory usage");
    served(&page, "CPU usage");
    let resources = &page[page.find("data-panel=\"Resource Usage\"").unwrap()..];
    assert!(
        !resources[..resources.find("</section>").unwrap()].contains("no data yet"),
        "memory and CPU are drawn"
    );
    // What the line draws is the command's tree: its memory, sampled.
    let json: serde_json::Value =
        serde_json::from_str(&http_get(run.addr, "/api/v1/snapshot").body).unwrap();
    assert_eq!(json["summary"]["iterations"], 0);
    let samples = json["samples"].as_array().unwrap();
    assert!(samples.len() >= 3, "{samples:?}");
    assert!(
        samples
            .iter()
            .any(|s| s["memory_usage_bytes"].as_f64().is_some_and(|m| m > 0.0)),
        "the command's memory: {samples:?}"
    );

    // As a browser renders it.
    let dom = chromium_dom(&format!("http://{}/", run.addr));
    served(&dom, "memory usage");
    served(&dom, "CPU usage");
    assert!(
        dom.contains("no iterations yet"),
        "time per iteration waits"
    );

    // Seen: the command ends, and `loopwatch run` with it.
    std::fs::write(&stop, b"").unwrap();
    let status = run.wait(Duration::from_secs(60));
    assert!(status.success(), "{status:?}; log:\n{}", run.log());
    assert_eq!(run.final_json()["summary"]["iterations"], 0);
}
