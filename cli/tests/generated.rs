//! The generated rules and dashboard: committed as generated, naming only metrics that
//! exist (each expression parsed by promql-parser, an independent PromQL parser), and
//! valid for Grafana 9+. promtool and amtool judge them in `stack.rs`.

mod support;

use std::collections::HashSet;
use std::path::PathBuf;

use loopwatch::{catalog, AlertName, RuleSpec, Thresholds, ALERTS};
use loopwatch_cli::generate::{self, DASHBOARD_FILE, RULES_FILE, RULES_TEST_FILE};
use promql_parser::parser::{self, Expr};
use promql_parser::util::{walk_expr, ExprVisitor};
use support::quiet_monitor;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Collects the metric names an expression selects.
struct Selected(Vec<String>);

impl ExprVisitor for Selected {
    type Error = ();

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, ()> {
        let selector = match expr {
            Expr::VectorSelector(vs) => Some(vs),
            Expr::MatrixSelector(ms) => Some(&ms.vs),
            _ => None,
        };
        if let Some(name) = selector.and_then(|vs| vs.name.clone()) {
            self.0.push(name);
        }
        Ok(true)
    }
}

/// Metric names an expression reads, from its parse tree.
fn metric_names(expr: &str) -> Vec<String> {
    let tree = parser::parse(expr).unwrap_or_else(|e| panic!("`{expr}` is not PromQL: {e}"));
    let mut selected = Selected(Vec::new());
    walk_expr(&mut selected, &tree).unwrap();
    selected.0
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
    let fleet: serde_json::Value =
        serde_json::from_str(&committed(generate::FLEET_DASHBOARD_FILE)).unwrap();
    assert_eq!(
        fleet,
        generate::grafana_fleet_dashboard(&t),
        "{} is stale; {regenerate}",
        generate::FLEET_DASHBOARD_FILE
    );
}

/// The rules of the generated rules file, parsed as YAML.
fn rules_of(text: &str) -> Vec<serde_yaml_ng::Value> {
    let file: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).expect("the rules are YAML");
    file["groups"][0]["rules"].as_sequence().unwrap().clone()
}

fn field<'a>(rule: &'a serde_yaml_ng::Value, key: &str) -> Option<&'a str> {
    rule.get(key).and_then(|v| v.as_str())
}

#[test]
fn every_expression_names_only_metrics_that_exist() {
    let t = Thresholds::default();
    let rules = rules_of(&generate::prometheus_rules(&t));
    let recorded: HashSet<&str> = rules.iter().filter_map(|r| field(r, "record")).collect();
    let mut expressions: Vec<String> = rules
        .iter()
        .map(|r| field(r, "expr").unwrap().to_string())
        .collect();
    expressions.extend(generate::dashboard_expressions(
        &generate::grafana_dashboard(&t),
    ));
    expressions.extend(generate::dashboard_expressions(
        &generate::grafana_fleet_dashboard(&t),
    ));
    assert!(expressions.len() >= 20, "{expressions:#?}");
    for expr in &expressions {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{expr} reads no metric");
        for name in names {
            // A histogram's series: `_bucket`, `_sum` and `_count` of its name.
            // Names of the newest GenAI conventions count: loopwatch exports them
            // instead of the default ones under OTEL_SEMCONV_STABILITY_OPT_IN.
            let histogram = ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .and_then(catalog::find_exported)
                    .is_some_and(|spec| spec.kind == catalog::MetricKind::Histogram)
            });
            let known = catalog::find_exported(&name).is_some()
                || histogram
                || recorded.contains(name.as_str())
                // Series Prometheus itself makes: alert states and scrape health.
                || name == "ALERTS"
                || name == "up";
            assert!(
                known,
                "`{expr}` reads `{name}`, which loopwatch does not export"
            );
        }
    }
    // The tokens and durations of LLM calls are read under either GenAI conventions.
    let reads = |expr: &str, spec: &catalog::MetricSpec| {
        metric_names(expr).iter().any(|n| n.starts_with(spec.name))
    };
    for expr in &expressions {
        for (default, latest) in [
            (
                &catalog::GEN_AI_CLIENT_TOKEN_USAGE,
                &[
                    &catalog::GEN_AI_CLIENT_INFERENCE_USAGE_INPUT_TOKENS_TOTAL,
                    &catalog::GEN_AI_CLIENT_INFERENCE_USAGE_OUTPUT_TOKENS_TOTAL,
                ],
            ),
            (
                &catalog::GEN_AI_CLIENT_OPERATION_DURATION_SECONDS,
                &[
                    &catalog::GEN_AI_CLIENT_INFERENCE_DURATION_SECONDS,
                    &catalog::GEN_AI_CLIENT_EMBEDDINGS_DURATION_SECONDS,
                ],
            ),
        ] {
            if reads(expr, default) {
                assert!(latest.iter().all(|spec| reads(expr, spec)), "{expr}");
            }
        }
    }
    // And the check itself can fail.
    assert_eq!(
        metric_names("sum by (name) (rate(no_such_metric_total[5m])) / on() bar > 3"),
        vec!["no_such_metric_total".to_string(), "bar".to_string()]
    );
}

#[test]
fn rules_mirror_the_evaluator() {
    let t = Thresholds::default();
    let rules = rules_of(&generate::prometheus_rules(&t));
    for spec in ALERTS {
        let rule = rules.iter().find(|r| field(r, "alert") == Some(spec.name));
        let RuleSpec::Rule { expr, .. } = spec.rule else {
            assert!(rule.is_none(), "{} is in-process only", spec.name);
            continue;
        };
        let rule = rule.unwrap_or_else(|| panic!("no rule for {}", spec.name));
        assert_eq!(field(&rule["annotations"], "summary"), Some(spec.message));
        assert_eq!(field(&rule["annotations"], "runbook"), Some(spec.runbook));
        assert_eq!(
            field(&rule["labels"], "severity"),
            Some(spec.severity.as_str())
        );
        assert_eq!(field(rule, "expr"), Some(expr(&t).as_str()));
    }
    for alert in AlertName::ALL {
        assert_eq!(alert.spec().name, alert.as_str());
    }
    // Thresholds come from the configuration, not from literals in the generator.
    let custom = Thresholds::default().with_staleness_iterations(33).unwrap();
    let custom_rules = rules_of(&generate::prometheus_rules(&custom));
    assert!(custom_rules
        .iter()
        .any(|r| field(r, "expr")
            .is_some_and(|e| e.contains("(champion_staleness_iterations >= 33)"))));
}

/// Every row of the alert table has what an operator needs: a runbook section in
/// docs/runbooks.md and, for a rule, a promtool boundary test (the in-process evaluator's test
/// per alert is `evaluate::tests::every_alert_fires_in_process`).
#[test]
fn every_alert_has_a_runbook_and_a_boundary_test() {
    let runbooks = committed("docs/runbooks.md");
    let tests = generate::promtool_tests(&Thresholds::default());
    for spec in ALERTS {
        assert_eq!(
            spec.runbook,
            format!("docs/runbooks.md#{}", spec.name.to_ascii_lowercase()),
            "{}'s runbook is its section of docs/runbooks.md",
            spec.name
        );
        assert!(
            runbooks
                .lines()
                .any(|line| line.strip_prefix("## ") == Some(spec.name)),
            "docs/runbooks.md has no section for {}",
            spec.name
        );
        if matches!(spec.rule, RuleSpec::Rule { .. }) {
            assert!(
                tests.contains(&format!("alertname: {}\n", spec.name)),
                "no promtool test for {}",
                spec.name
            );
        }
    }
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
            "Container Stats",
            "LLM Calls",
            "LLM Spend and Latency",
            "Evaluations",
            "LLM Progress per Dollar ($instance)",
            "Model Servers",
            "LLM Rate Limits",
            "GPUs"
        ]
    );
    // Progress per dollar is an XY chart: its queries joined on their time into one
    // frame, the spend on x (one of its queries' legends), the rest on y.
    let xy = &panels[7];
    assert_eq!(xy["type"], "xychart");
    // The join pairs rows by time alone, so one loop per chart: the panel repeats for
    // each value of the instance variable, across the full width, and each query
    // gives one series of the one instance a copy selects.
    assert_eq!(xy["repeat"], "instance");
    assert_eq!(xy["repeatDirection"], "h");
    assert!(dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == "instance" && v["includeAll"] == true));
    assert_eq!(
        (&xy["gridPos"]["x"], &xy["gridPos"]["w"]),
        (&0.into(), &24.into())
    );
    for target in xy["targets"].as_array().unwrap() {
        let expr = target["expr"].as_str().unwrap();
        assert!(
            expr.starts_with("max by (instance) (") && expr.contains("instance=~\"$instance\""),
            "{expr}"
        );
    }
    assert!(
        xy["description"]
            .as_str()
            .unwrap()
            .contains("cannot mark the champion's changes"),
        "{}",
        xy["description"]
    );
    assert_eq!(xy["transformations"][0]["id"], "seriesToColumns");
    assert_eq!(xy["transformations"][0]["options"]["byField"], "Time");
    assert_eq!(xy["options"]["seriesMapping"], "auto");
    let x = xy["options"]["dims"]["x"].as_str().unwrap();
    let legends: Vec<&str> = xy["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["legendFormat"].as_str().unwrap())
        .collect();
    assert_eq!(
        legends,
        [x, "best Sharpe so far", "spend per champion change (USD)"]
    );
    assert!(xy["targets"][0]["expr"]
        .as_str()
        .unwrap()
        .starts_with("max by (instance) ((loopwatch_llm_spend_usd{"));
    assert!(xy["targets"][1]["expr"]
        .as_str()
        .unwrap()
        .starts_with("max by (instance) ((loopwatch_best_sharpe{"));
    // No two panels share a cell of the grid; Grafana lays a panel repeated across
    // from x 0 over the whole width, so nothing else is on its rows.
    let cells = |p: &serde_json::Value| {
        let g = &p["gridPos"];
        let at = |k: &str| g[k].as_u64().unwrap();
        (at("x"), at("y"), at("w"), at("h"))
    };
    for (i, a) in panels.iter().enumerate() {
        for b in &panels[i + 1..] {
            let ((ax, ay, aw, ah), (bx, by, bw, bh)) = (cells(a), cells(b));
            let apart = ax + aw <= bx || bx + bw <= ax || ay + ah <= by || by + bh <= ay;
            assert!(apart, "{} overlaps {}", a["title"], b["title"]);
        }
    }
    // The GPU panels are in a collapsed row: queried only once it is opened.
    let row = panels.last().unwrap();
    assert_eq!(
        (&row["type"], &row["collapsed"]),
        (&"row".into(), &true.into())
    );
    let panels = generate::dashboard_panels(&dashboard);
    let titles: Vec<&str> = panels[10..]
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["GPU Memory", "GPU Load and Errors"]);
    let mut ids: HashSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    ids.insert(row["id"].as_u64().unwrap());
    assert_eq!(ids.len(), panels.len() + 1, "unique panel ids");
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

#[test]
fn a_threshold_in_a_config_file_moves_the_alert_the_rule_and_the_dashboard_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("loopwatch.toml");
    std::fs::write(
        &config,
        "staleness_iterations = 7\ndiversity_floor = 0.25\n",
    )
    .unwrap();

    // The in-process alert: stale for 7 iterations fires, 6 does not.
    let monitor = quiet_monitor().config_file(&config).build().unwrap();
    for i in 0..=7 {
        let mut it = monitor.start_iteration();
        it.record_success(1.0, 0.1);
        it.record_population(loopwatch::Population::new(4, 4, 0.5).with_champion("same"));
        it.finish();
        let stale = monitor
            .firing_alerts()
            .contains(&AlertName::ChampionStaleness);
        assert_eq!(stale, i >= 7, "after {} stale iterations", i);
    }
    monitor.shutdown();

    // The generated rule and the dashboard's threshold line, through the command.
    for command in ["rules", "dashboard"] {
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_loopwatch"))
            .args([command, "--root"])
            .arg(dir.path())
            .arg("--config")
            .arg(&config)
            .status()
            .unwrap();
        assert!(status.success(), "loopwatch {command}");
    }
    let rules = rules_of(&std::fs::read_to_string(dir.path().join(RULES_FILE)).unwrap());
    assert!(rules
        .iter()
        .any(|r| field(r, "expr")
            .is_some_and(|e| e.contains("(champion_staleness_iterations >= 7)"))));
    let dashboard = std::fs::read_to_string(dir.path().join(DASHBOARD_FILE)).unwrap();
    assert!(dashboard.contains("\"value\": 0.25"), "the diversity line");
    assert!(
        !dashboard.contains("\"value\": 0.1,"),
        "not the default line"
    );

    // A bad file is a clear error naming the key, from the library and the command.
    std::fs::write(&config, "staleness_iterations = 7\nstale_iterations = 3\n").unwrap();
    let err = loopwatch::Thresholds::from_file(&config)
        .unwrap_err()
        .to_string();
    assert!(err.contains("stale_iterations"), "{err}");
    std::fs::write(&config, "memory_fraction = 1.5\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_loopwatch"))
        .args(["rules", "--root"])
        .arg(dir.path())
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("memory_fraction") && stderr.contains("(0, 1)"),
        "{stderr}"
    );
}

/// Every threshold key can be set alone in `loopwatch.toml`: the library, the builder
/// and `loopwatch rules --config` accept it (a dependent default follows it).
#[test]
fn every_threshold_key_can_be_set_alone_in_the_file_and_on_the_builder() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("loopwatch.toml");
    let defaults = serde_json::to_value(Thresholds::default()).unwrap();
    for key in Thresholds::KEYS {
        // A value other than the default, in range: durations doubled, fractions
        // halved, counts and factors raised.
        let value = match &defaults[key] {
            serde_json::Value::Number(n) if n.is_u64() => (n.as_u64().unwrap() + 1).to_string(),
            serde_json::Value::Number(n) => {
                let v = n.as_f64().unwrap();
                if key.ends_with("_floor") || key.contains("fraction") || key.ends_with("_rate") {
                    (v / 2.0).to_string()
                } else if key.contains("interval") || key.contains("hold") || key == &"stall_floor"
                {
                    format!("\"{}s\"", v * 2.0)
                } else {
                    (v + 1.0).to_string()
                }
            }
            // A limit that is off until set.
            serde_json::Value::Null => "5".to_string(),
            other => panic!("{key}: {other}"),
        };
        let text = format!("{key} = {value}\n");
        std::fs::write(&config, &text).unwrap();
        let from_file = Thresholds::from_file(&config).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_ne!(from_file, Thresholds::default(), "{text} was applied");
        let monitor = quiet_monitor()
            .thresholds(from_file)
            .build()
            .unwrap_or_else(|e| panic!("the builder refused {text}: {e}"));
        monitor.shutdown();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_loopwatch"))
            .args(["rules", "--root"])
            .arg(dir.path())
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "loopwatch rules --config with {text}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The example configuration of an LLM-driven loop parses, sets the spending limits and
/// prices the models it lists (a dated model by its longest prefix).
#[test]
fn the_example_config_sets_the_llm_limits_and_prices() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("examples/loopwatch.toml");
    let t = Thresholds::from_file(&path).unwrap();
    assert_eq!(t.llm_spend_without_progress_usd(), Some(5.0));
    assert_eq!(t.llm_budget_usd(), Some(25.0));
    for model in [
        "gpt-4o-2024-08-06",
        "gpt-4o-mini",
        "claude-sonnet-4-20250514",
    ] {
        assert!(t.llm().price(model).is_some(), "{model} has no price");
    }
    assert_eq!(
        t.llm().price("gpt-4o-mini-2024-07-18"),
        t.llm().price("gpt-4o-mini"),
        "the longest prefix prices a dated model"
    );
}

/// The package's description, which `loopwatch --help` opens with, names every
/// command the help lists.
#[test]
fn the_description_names_every_command() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_loopwatch"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    let description = env!("CARGO_PKG_DESCRIPTION");
    assert!(help.starts_with(description), "{help}");
    let words: HashSet<&str> = description
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '-')
        .collect();
    let commands: Vec<&str> = help
        .split("Commands:\n")
        .nth(1)
        .expect("a list of commands")
        .lines()
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|command| *command != "help")
        .collect();
    assert!(commands.len() >= 8, "{commands:?}");
    for command in commands {
        assert!(
            words.contains(command),
            "cli/Cargo.toml's description does not name `{command}`: {description}"
        );
    }
}
