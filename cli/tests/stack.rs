//! The full stack against a real Prometheus (Debian's 2.42) and Alertmanager: the
//! committed prometheus.yml scrapes the example loop, every dashboard query returns
//! data, and the committed rules fire and reach Alertmanager.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loopwatch::Thresholds;
use loopwatch_cli::generate::{dashboard_expressions, grafana_dashboard};
use support::services::{free_port, Alertmanager, Prometheus};
use support::*;

/// Starts the evolve example on a chosen port, lingering so it stays scrapeable.
fn evolve(addr: SocketAddr, args: &[&str], dir: &std::path::Path) -> Child {
    Command::new(example_path("evolve"))
        .args(args)
        .args(["--linger", "180s"])
        .env("LOOPWATCH_LISTEN", addr.to_string())
        .env("LOOPWATCH_OUTPUT_DIR", dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn eventually(
    prometheus: &Prometheus,
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\nPrometheus log:\n{}",
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let loop_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let prometheus = Prometheus::start(loop_addr, None);
    // The default search (about 15 s here) spans several 5 s scrapes while the
    // champion keeps changing.
    let mut child = evolve(loop_addr, &["--iterations", "100"], dir.path());
    eventually(
        &prometheus,
        "the loop to be scraped",
        Duration::from_secs(60),
        || !prometheus.query("up{job=\"loopwatch\"} == 1").is_empty(),
    );
    let dashboard = grafana_dashboard(&Thresholds::default());
    let expressions = dashboard_expressions(&dashboard);
    let panel_count: usize = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["targets"].as_array().unwrap().len())
        .sum();
    for expr in expressions.iter().take(panel_count) {
        eventually(
            &prometheus,
            &format!("data for `{expr}`"),
            Duration::from_secs(60),
            || !prometheus.query(expr).is_empty(),
        );
    }
    // The champion-update annotation sees the champion change between scrapes.
    let champion_annotation = &expressions[panel_count];
    assert!(champion_annotation.starts_with("changes("));
    eventually(
        &prometheus,
        "a champion change",
        Duration::from_secs(60),
        || !prometheus.query(champion_annotation).is_empty(),
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn prometheus_rules_fire_on_a_collapsing_loop_and_reach_alertmanager() {
    let dir = tempfile::tempdir().unwrap();
    let alertmanager = Alertmanager::start();
    let loop_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let prometheus = Prometheus::start(loop_addr, Some(alertmanager.addr));
    // loopwatch itself is not given the Alertmanager: what arrives there comes from
    // Prometheus's rules.
    let mut child = evolve(
        loop_addr,
        &[
            "--scenario",
            "diversity-collapse",
            "--iterations",
            "40",
            "--population",
            "24",
            "--resamples",
            "2",
        ],
        dir.path(),
    );
    let firing = |name: &str| {
        prometheus.api("/api/v1/alerts")["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
    };
    for alert in ["DiversityCollapse", "ChampionStaleness"] {
        eventually(
            &prometheus,
            &format!("{alert} firing in Prometheus"),
            Duration::from_secs(60),
            || firing(alert),
        );
        eventually(
            &prometheus,
            &format!("{alert} in Alertmanager"),
            Duration::from_secs(60),
            || alertmanager.alert(alert).is_some(),
        );
        let delivered = alertmanager.alert(alert).unwrap();
        let expected = if alert == "DiversityCollapse" {
            "Diversity collapse detected"
        } else {
            "Champion staleness detected"
        };
        assert_eq!(delivered["annotations"]["summary"], expected);
        assert_eq!(delivered["labels"]["job"], "loopwatch");
    }
    assert!(
        !firing("LowSuccessRate") && !firing("HighMemoryUsage"),
        "only what the loop provoked"
    );
    // The alert annotation's query sees them once the rule's ALERTS samples are stored.
    let alerts_annotation = "ALERTS{alertstate=\"firing\", job=\"loopwatch\"}";
    eventually(
        &prometheus,
        "ALERTS samples",
        Duration::from_secs(30),
        || !prometheus.query(alerts_annotation).is_empty(),
    );
    let _ = child.kill();
    let _ = child.wait();
}

fn tool(program: &str, args: &[&str], dir: &std::path::Path) {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} is installed (scripts/test installs it): {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn promtool_and_amtool_accept_the_configuration_and_the_rule_tests_pass() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("prometheus");
    tool("promtool", &["check", "config", "prometheus.yml"], &dir);
    tool("promtool", &["check", "rules", "loopwatch.rules.yml"], &dir);
    tool(
        "promtool",
        &["test", "rules", "tests/loopwatch.rules_test.yml"],
        &dir,
    );
    tool("amtool", &["check-config", "alertmanager.yml"], &dir);
}
