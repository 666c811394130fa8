//! The final export: both files, their agreement, failures, panics and signals.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use loopwatch::{Population, JSON_FINAL_FILE, PROMETHEUS_FINAL_FILE};
use serde_json::Value;
use support::*;

/// Metrics the background samplers and sweeps refresh on their own schedule (and at
/// shutdown, which also marks the loop done), so they may differ from a prior scrape.
const SAMPLED: [&str; 19] = [
    "loopwatch_loop_done",
    "loopwatch_container_stats_source",
    "loopwatch_memory_used_bytes",
    "loopwatch_memory_limit_bytes",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "memory_usage_bytes",
    "cpu_usage_percent",
    "host_memory_used_bytes",
    "host_memory_total_bytes",
    "loopwatch_sampler_ticks_total",
    "loopwatch_docker_up",
    "active_containers",
    "orphaned_containers",
    "loopwatch_containers_cleaned_total",
    "loopwatch_container_cleanup_failures_total",
];

fn json_value(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Equal as written: serde_json's default float parsing may land one ulp away from
/// the correctly rounded value, so "the same number" allows a relative 1e-12.
fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

/// Asserts that every series of `exposition` has the same value in the JSON document.
fn assert_json_agrees(json: &Value, exposition: &Exposition, skip: &[&str]) {
    let metrics = json["metrics"].as_object().unwrap();
    for (name, family) in exposition {
        if skip.contains(&name.as_str()) {
            continue;
        }
        let entry = &metrics[name];
        assert_eq!(entry["help"].as_str(), family.help.as_deref(), "{name}");
        assert_eq!(entry["type"].as_str(), family.kind.as_deref(), "{name}");
        for (labels, value) in &family.samples {
            let sample = entry["samples"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| {
                    let l = s["labels"].as_object().unwrap();
                    l.len() == labels.len() && labels.iter().all(|(k, v)| l[k] == *v)
                })
                .unwrap_or_else(|| panic!("{name}{labels:?} missing from the JSON"));
            assert!(
                same(json_value(&sample["value"]), *value),
                "{name}{labels:?}"
            );
        }
    }
}

fn run_loop(monitor: &loopwatch::Monitor, iterations: usize) {
    for i in 0..iterations {
        let mut it = monitor.start_iteration();
        it.record_success(1.0 + i as f64, 0.1);
        it.record_failure("degenerate window");
        it.record_population(Population::new(5, 4, 0.8).with_champion(if i < 2 {
            "a"
        } else {
            "b"
        }));
    }
}

#[test]
fn both_files_are_written_parse_and_agree_with_the_last_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let monitor = monitor_in(dir.path());
    run_loop(&monitor, 5);
    let last_scrape = parse(&scrape(monitor.local_addr())).unwrap();
    let report = monitor.shutdown();
    let files = report.files.expect("final export on by default");
    let text_path = files.prometheus_text.unwrap();
    let json_path = files.json.unwrap();
    assert_eq!(text_path, dir.path().join(PROMETHEUS_FINAL_FILE));
    assert_eq!(json_path, dir.path().join(JSON_FINAL_FILE));

    let text = std::fs::read_to_string(&text_path).unwrap();
    let final_exposition = assert_well_formed(&text);
    let json: Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();

    // The two files come from one collection: they agree on everything.
    assert_json_agrees(&json, &final_exposition, &[]);
    // The JSON agrees with the last scrape on all but the freshly sampled gauges.
    assert_json_agrees(&json, &last_scrape, &SAMPLED);

    let summary = &json["summary"];
    assert_eq!(summary["iterations"], 5);
    assert_eq!(summary["strategy_successes"], 5);
    assert_eq!(summary["strategy_failures"], 5);
    assert_eq!(summary["success_rate"], 0.5);
    assert_eq!(summary["champion"], "b");
    assert_eq!(summary["champion_staleness_iterations"], 2);
    assert!(summary["mean_execution_time_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(summary["failure_reasons"]["degenerate window"], 5);
    assert_eq!(json["metrics"]["execution_time_seconds"]["unit"], "s");
}

#[test]
fn an_unwritable_target_is_a_clear_error_and_the_other_file_is_still_written() {
    let dir = tempfile::tempdir().unwrap();
    // A directory squatting on the text file's name makes its rename fail for real
    // (running as root, permission bits would not stop a write).
    std::fs::create_dir(dir.path().join(PROMETHEUS_FINAL_FILE)).unwrap();
    let monitor = monitor_in(dir.path());
    run_loop(&monitor, 2);
    let files = monitor.shutdown().files.unwrap();
    let err = files.prometheus_text.unwrap_err().to_string();
    assert!(err.contains(PROMETHEUS_FINAL_FILE), "{err}");
    assert!(err.contains("LOOPWATCH_OUTPUT_DIR"), "{err}");
    let json: Value = serde_json::from_slice(&std::fs::read(files.json.unwrap()).unwrap()).unwrap();
    assert_eq!(json["summary"]["iterations"], 2);

    let missing = Path::new("/nonexistent-loopwatch-dir");
    let monitor = loopwatch::Monitor::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .output_dir(missing)
        .build()
        .unwrap();
    let files = monitor.shutdown().files.unwrap();
    assert!(files
        .prometheus_text
        .unwrap_err()
        .to_string()
        .contains("/nonexistent-loopwatch-dir"));
    assert!(files.json.is_err());
}

#[test]
fn the_export_happens_when_the_loop_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let outcome = std::panic::catch_unwind(move || {
        let monitor = monitor_in(&path);
        run_loop(&monitor, 3);
        let _unfinished = monitor.start_iteration();
        panic!("the loop's own bug");
    });
    assert!(outcome.is_err());
    let json: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(JSON_FINAL_FILE)).unwrap()).unwrap();
    assert_eq!(
        json["summary"]["iterations"], 4,
        "the unfinished iteration is finished on unwind"
    );
    let text = std::fs::read_to_string(dir.path().join(PROMETHEUS_FINAL_FILE)).unwrap();
    assert!(text.contains("iteration_number 4"));
}

fn run_minimal(dir: &Path) -> std::process::Child {
    Command::new(example_path("minimal"))
        .env("LOOPWATCH_LISTEN", "127.0.0.1:0")
        .env("LOOPWATCH_OUTPUT_DIR", dir)
        .env("LOOPWATCH_SAMPLE_INTERVAL", "100ms")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn the_minimal_example_ends_on_its_own_and_honours_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_minimal(dir.path()).wait_with_output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("iteration 20:"), "{stdout}");
    let json: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(JSON_FINAL_FILE)).unwrap()).unwrap();
    assert_eq!(json["summary"]["iterations"], 20);
    let champion = json["summary"]["champion"].as_str().unwrap();
    assert!(
        stdout.contains(&format!("champion {champion} ")),
        "{stdout}"
    );
}

#[test]
fn sigterm_stops_the_example_cleanly_with_the_final_export() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = run_minimal(dir.path());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("iteration  1:"), "{first}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "a clean stop, not a kill: {status:?}");
    let completed = 1 + rest.iter().filter(|l| l.starts_with("iteration")).count();
    assert!(
        completed < 20,
        "the loop stopped early ({completed} iterations)"
    );
    let json: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(JSON_FINAL_FILE)).unwrap()).unwrap();
    assert_eq!(json["summary"]["iterations"], completed as u64);
    assert!(dir.path().join(PROMETHEUS_FINAL_FILE).exists());
}

/// A loop that does nothing about signals, stopped by `signal`: both final files, and
/// the status the signal implies.
fn plain_loop_stopped_by(signal: &str, status: i32) {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(example_path("plain_loop"))
        .arg("100000")
        .env("LOOPWATCH_LISTEN", "127.0.0.1:0")
        .env("LOOPWATCH_OUTPUT_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let serving = lines.next().unwrap().unwrap();
    let addr: std::net::SocketAddr = serving
        .strip_prefix("serving on ")
        .unwrap()
        .parse()
        .unwrap();
    wait_until(
        std::time::Duration::from_secs(30),
        "a few iterations",
        || {
            parse(&scrape(addr))
                // The fourth in progress: three completed.
                .map(|e| e["iteration_number"].value() >= 4.0)
                .unwrap_or(false)
        },
    );
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(status), "{signal}: {exit:?}");
    let json: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(JSON_FINAL_FILE)).unwrap()).unwrap();
    assert!(
        json["summary"]["iterations"].as_u64().unwrap() >= 3,
        "{json}"
    );
    let text = std::fs::read_to_string(dir.path().join(PROMETHEUS_FINAL_FILE)).unwrap();
    assert!(text.contains("loopwatch_loop_done 1"), "marked done");
}

#[test]
fn a_plain_loop_stopped_by_sigterm_writes_both_files_and_exits_143() {
    plain_loop_stopped_by("TERM", 143);
}

#[test]
fn a_plain_loop_stopped_by_sigint_writes_both_files_and_exits_130() {
    plain_loop_stopped_by("INT", 130);
}
