//! The generated rules and dashboard: committed as generated, naming only metrics that
//! exist, valid for promtool, amtool and Grafana 9+.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use loopwatch::generate::{self, DASHBOARD_FILE, RULES_FILE, RULES_TEST_FILE};
use loopwatch::{catalog, AlertName, Thresholds};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn committed(file: &str) -> String {
    std::fs::read_to_string(root().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn committed_files_are_what_the_code_generates() {
    let t = Thresholds::default();
    let regenerate = "regenerate with `cargo run -- rules` and `cargo run -- dashboard`";
    assert_eq!(
        committed(RULES_FILE),
        generate::prometheus_rules(&t),
        "{RULES_FILE} is stale; {regenerate}"
    );
    assert_eq!(
        committed(RULES_TEST_FILE),
        generate::promtool_tests(&t),
        "{RULES_TEST_FILE} is stale; {regenerate}"
    );
    let dashboard: serde_json::Value = serde_json::from_str(&committed(DASHBOARD_FILE)).unwrap();
    assert_eq!(
        dashboard,
        generate::grafana_dashboard(&t),
        "{DASHBOARD_FILE} is stale; {regenerate}"
    );
}

fn rule_expressions(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_expression_names_only_metrics_that_exist() {
    let t = Thresholds::default();
    let rules = generate::prometheus_rules(&t);
    let recorded: HashSet<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .map(str::to_string)
        .collect();
    let mut expressions = rule_expressions(&rules);
    expressions.extend(generate::dashboard_expressions(
        &generate::grafana_dashboard(&t),
    ));
    assert!(expressions.len() >= 20, "{expressions:#?}");
    for expr in &expressions {
        let names = generate::metric_names(expr);
        assert!(!names.is_empty(), "{expr} reads no metric");
        for name in names {
            let known =
                catalog::find(&name).is_some() || recorded.contains(&name) || name == "ALERTS";
            assert!(
                known,
                "`{expr}` reads `{name}`, which loopwatch does not export"
            );
        }
    }
    // And the check itself can fail.
    assert_eq!(
        generate::metric_names("no_such_metric > 1"),
        vec!["no_such_metric".to_string()]
    );
}

#[test]
fn rules_mirror_the_evaluator() {
    let t = Thresholds::default();
    let rules = generate::prometheus_rules(&t);
    for alert in AlertName::ALL {
        let block = rules
            .split(&format!("- alert: {}\n", alert.as_str()))
            .nth(1)
            .unwrap();
        let block = block.split("- alert:").next().unwrap();
        assert!(
            block.contains(&format!("summary: \"{}\"", alert.message())),
            "{alert:?}"
        );
        assert!(
            block.contains(&format!("severity: {}", alert.severity())),
            "{alert:?}"
        );
        assert!(
            block.contains(&generate::alert_expression(alert, &t)),
            "{alert:?}"
        );
    }
    // Thresholds come from the configuration, not from literals in the generator.
    let custom = Thresholds {
        staleness_iterations: 33,
        ..Thresholds::default()
    };
    assert!(generate::prometheus_rules(&custom).contains("champion_staleness_iterations >= 33"));
}

fn tool(program: &str, args: &[&str], dir: &Path) {
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
    let dir = root().join("prometheus");
    tool("promtool", &["check", "config", "prometheus.yml"], &dir);
    tool("promtool", &["check", "rules", "loopwatch.rules.yml"], &dir);
    tool(
        "promtool",
        &["test", "rules", "tests/loopwatch.rules_test.yml"],
        &dir,
    );
    tool("amtool", &["check-config", "alertmanager.yml"], &dir);
}

#[test]
fn the_dashboard_is_valid_for_grafana_9() {
    let dashboard: serde_json::Value = serde_json::from_str(&committed(DASHBOARD_FILE)).unwrap();
    assert!(
        dashboard["schemaVersion"].as_u64().unwrap() >= 36,
        "Grafana 9 schema"
    );
    assert_eq!(dashboard["refresh"], "5s");
    let variable = &dashboard["templating"]["list"][0];
    assert_eq!(variable["type"], "datasource");
    assert_eq!(variable["query"], "prometheus");
    let panels = dashboard["panels"].as_array().unwrap();
    let titles: Vec<&str> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        [
            "Resource Usage",
            "Strategy Performance",
            "Diversity Metrics",
            "Container Stats"
        ]
    );
    let ids: HashSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "unique panel ids");
    let datasource = format!("${{{}}}", variable["name"].as_str().unwrap());
    for panel in panels {
        for key in ["h", "w", "x", "y"] {
            assert!(
                panel["gridPos"][key].is_u64(),
                "{} gridPos.{key}",
                panel["title"]
            );
        }
        assert_eq!(panel["datasource"]["uid"], datasource.as_str());
        let targets = panel["targets"].as_array().unwrap();
        assert!(targets.len() >= 3, "{}", panel["title"]);
        for target in targets {
            assert_eq!(target["datasource"]["uid"], datasource.as_str());
        }
        let units: Vec<&str> = panel["fieldConfig"]["overrides"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["properties"][0]["value"].as_str().unwrap())
            .collect();
        assert!(
            units.iter().all(|u| !u.is_empty()),
            "every query has a unit"
        );
    }
    // Threshold lines sit at the alert thresholds.
    let text = committed(DASHBOARD_FILE);
    for threshold in [
        "\"value\": 20.0",
        "\"value\": 0.1",
        "\"value\": 3.0",
        "\"value\": 80.0",
    ] {
        assert!(text.contains(threshold), "missing threshold {threshold}");
    }
    let annotations = dashboard["annotations"]["list"].as_array().unwrap();
    assert_eq!(annotations.len(), 2);
}
