//! The full stack against a real Prometheus (Debian's 2.42) and Alertmanager: the
//! committed prometheus.yml scrapes the example loop, every dashboard query returns
//! data, and the committed rules fire and reach Alertmanager.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loopwatch::Thresholds;
use loopwatch_cli::generate::{
    dashboard_expressions, dashboard_panels, grafana_dashboard, with_variables,
};
use support::services::{free_port, Alertmanager, Prometheus};
use support::*;

/// Starts the evolve example on a chosen port, serving after its search until the test
/// ends it, so it stays scrapeable whatever the machine's speed.
fn evolve(addr: SocketAddr, args: &[&str], dir: &std::path::Path) -> Stopped {
    Stopped(
        Command::new(example_path("evolve"))
            .args(args)
            .args(["--linger", "forever"])
            .env("LOOPWATCH_LISTEN", addr.to_string())
            .env("LOOPWATCH_OUTPUT_DIR", dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
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
    // A search without end: it runs, its champion changing now and then, until every
    // query below has had its data.
    let _child = evolve(loop_addr, &["--iterations", "0"], dir.path());
    eventually(
        &prometheus,
        "the loop to be scraped",
        Duration::from_secs(60),
        || !prometheus.query("up{job=\"loopwatch\"} == 1").is_empty(),
    );
    let dashboard = grafana_dashboard(&Thresholds::default());
    let expressions: Vec<String> = dashboard_expressions(&dashboard)
        .iter()
        .map(|expr| with_variables(expr, &[]))
        .collect();
    let panel_count: usize = dashboard_panels(&dashboard)
        .iter()
        .map(|p| p["targets"].as_array().unwrap().len())
        .sum();
    // The LLM panels read the calls of a metered loop, the GPU panels the GPUs of a
    // loop with a GPU and the model servers' panel the servers of a loop that has
    // some, which this one is none of: the LLM tests (`llm.rs`), the GPU tests
    // (`gpu.rs`) and the model servers' tests (`model_servers.rs`) query them. The
    // expressions come panel by panel, target by target.
    let of_llm_panels: Vec<bool> = dashboard_panels(&dashboard)
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap();
            let elsewhere = title.starts_with("LLM")
                || title.starts_with("GPU")
                || title == loopwatch_cli::generate::MODEL_SERVERS_PANEL;
            vec![elsewhere; p["targets"].as_array().unwrap().len()]
        })
        .collect();
    for (expr, _) in expressions
        .iter()
        .zip(&of_llm_panels)
        .filter(|(_, llm)| !**llm)
    {
        eventually(
            &prometheus,
            &format!("data for `{expr}`"),
            Duration::from_secs(60),
            || !prometheus.query(expr).is_empty(),
        );
    }
    // The champion-update annotation: the time of the last change, in milliseconds,
    // which Grafana places the mark at (one mark per change, at its moment).
    let champion_annotation = &expressions[panel_count];
    assert!(champion_annotation.contains("loopwatch_champion_changed_timestamp_seconds{"));
    eventually(
        &prometheus,
        "a champion change",
        Duration::from_secs(60),
        || {
            prometheus.query(champion_annotation).iter().any(|sample| {
                let at_ms: f64 = sample["value"][1].as_str().unwrap().parse().unwrap();
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as f64;
                (now_ms - at_ms).abs() < 600_000.0
            })
        },
    );
}

#[test]
fn prometheus_rules_fire_on_a_collapsing_loop_and_reach_alertmanager() {
    let dir = tempfile::tempdir().unwrap();
    let alertmanager = Alertmanager::start();
    let loop_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let prometheus = Prometheus::start(loop_addr, Some(alertmanager.addr));
    // loopwatch itself is not given the Alertmanager: what arrives there comes from
    // Prometheus's rules. The alerts hold on the gauges the search leaves, and the
    // loop serves them until the test is done.
    let _child = evolve(
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
    // The dashboard's alert annotation sees them once the rule's ALERTS samples are
    // stored.
    let dashboard = grafana_dashboard(&Thresholds::default());
    let annotation = dashboard_expressions(&dashboard)
        .into_iter()
        .find(|expr| expr.starts_with("ALERTS{"))
        .expect("an alert annotation");
    let alerts_annotation = with_variables(&annotation, &[]);
    eventually(
        &prometheus,
        "ALERTS samples",
        Duration::from_secs(30),
        || !prometheus.query(&alerts_annotation).is_empty(),
    );
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

/// The LLM spending alerts are off by default; with their limits set, their rules and
/// boundary tests are generated from the same thresholds and pass promtool too.
#[test]
fn the_llm_spending_rules_pass_promtool_with_their_limits_set() {
    let dir = tempfile::tempdir().unwrap();
    let t: loopwatch::Thresholds =
        "llm_spend_without_progress_usd = 5\nllm_budget_usd = 20\nllm_error_rate = 0.4\n"
            .parse()
            .unwrap();
    loopwatch_cli::generate::write_rules(dir.path(), &t).unwrap();
    let rules =
        std::fs::read_to_string(dir.path().join(loopwatch_cli::generate::RULES_FILE)).unwrap();
    assert!(rules.contains("loopwatch_llm_spend_usd >= 20"), "{rules}");
    tool(
        "promtool",
        &["test", "rules", "tests/loopwatch.rules_test.yml"],
        &dir.path().join("prometheus"),
    );
}

/// A webhook receiver on a free loopback port: records every notification
/// Alertmanager sends it as (alertname, status, number of alerts).
struct Webhook {
    addr: SocketAddr,
    received: std::sync::Arc<std::sync::Mutex<Vec<(String, String, usize)>>>,
}

impl Webhook {
    fn start() -> Self {
        use std::io::{BufRead as _, BufReader, Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = std::sync::Arc::clone(&received);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        if name.eq_ignore_ascii_case("content-length") {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_ok() {
                    if let Ok(note) = serde_json::from_slice::<serde_json::Value>(&body) {
                        log.lock().unwrap().push((
                            note["groupLabels"]["alertname"]
                                .as_str()
                                .unwrap_or("")
                                .to_string(),
                            note["status"].as_str().unwrap_or("").to_string(),
                            note["alerts"].as_array().map_or(0, Vec::len),
                        ));
                    }
                }
                let _ = reader.get_mut().write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Webhook { addr, received }
    }

    /// The notifications about `alertname` so far: (status, alerts in it).
    fn about(&self, alertname: &str) -> Vec<(String, usize)> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(name, ..)| name == alertname)
            .map(|(_, status, alerts)| (status.clone(), *alerts))
            .collect()
    }
}

/// The shipped Alertmanager configuration, its commented webhook receiver switched on
/// and pointed at `webhook`.
fn shipped_alertmanager_config(webhook: SocketAddr) -> String {
    let shipped = std::fs::read_to_string(repo_root().join("prometheus/alertmanager.yml")).unwrap();
    let receivers = shipped.find("receivers:").expect("a receivers section");
    format!(
        "{}receivers:\n  - name: operator\n    webhook_configs:\n      - url: http://{webhook}/loopwatch\n        send_resolved: true\n",
        &shipped[..receivers]
    )
}

/// One iteration of `ok` successes and `failed` failures, with a population.
fn iterate(monitor: &loopwatch::Monitor, ok: u64, failed: u64, diversity: f64, champion: &str) {
    let mut it = monitor.start_iteration();
    for _ in 0..ok {
        it.record_success(1.0, 0.1);
    }
    for _ in 0..failed {
        it.record_failure("too few trades");
    }
    it.record_population(loopwatch::Population::new(10, 8, diversity).with_champion(champion));
    it.finish();
}

/// A monitor with `t`, a real Alertmanager on the shipped configuration with a webhook
/// receiver, and a real Prometheus on the shipped configuration and rules generated
/// from `t`, scraping the monitor and alerting that Alertmanager. With
/// `in_process`, the monitor pushes its own alerts to the same Alertmanager.
fn shipped_stack(
    t: &Thresholds,
    in_process: bool,
) -> (Webhook, loopwatch::Monitor, Prometheus, Alertmanager) {
    let webhook = Webhook::start();
    let alertmanager =
        Alertmanager::start_with_config(free_port(), &shipped_alertmanager_config(webhook.addr));
    let mut builder = loopwatch::Monitor::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .final_export(false)
        .containers(false)
        .thresholds(t.clone());
    if in_process {
        builder = builder.alertmanager_urls([alertmanager.url()]);
    }
    let monitor = builder.build().unwrap();
    let shipped = std::fs::read_to_string(repo_root().join("prometheus/prometheus.yml")).unwrap();
    let config = shipped
        .replace("127.0.0.1:8000", &monitor.local_addr().to_string())
        .replace("127.0.0.1:9093", &alertmanager.addr.to_string());
    let rules = loopwatch_cli::generate::prometheus_rules(t);
    let prometheus = Prometheus::start_with(&config, &[("loopwatch.rules.yml", rules.as_bytes())]);
    (webhook, monitor, prometheus, alertmanager)
}

/// A loop watched by both alert paths at once: its monitor pushes to a real
/// Alertmanager running the shipped configuration (with a webhook receiver), and a
/// real Prometheus scrapes it with rules generated from the same thresholds and
/// alerts the same Alertmanager.
struct BothPaths {
    webhook: Webhook,
    monitor: loopwatch::Monitor,
    prometheus: Prometheus,
    _alertmanager: Alertmanager,
}

impl BothPaths {
    fn start(t: &Thresholds) -> Self {
        let (webhook, monitor, prometheus, alertmanager) = shipped_stack(t, true);
        BothPaths {
            webhook,
            monitor,
            prometheus,
            _alertmanager: alertmanager,
        }
    }

    fn rule_firing(&self, name: &str) -> bool {
        self.prometheus.api("/api/v1/alerts")["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
    }

    fn iterate(&self, ok: u64, failed: u64, diversity: f64, champion: &str) {
        iterate(&self.monitor, ok, failed, diversity, champion);
    }

    /// Provokes `alerts`, waits until the rules fire them too and they are notified,
    /// clears them, and waits for their resolutions to be notified.
    fn phase(&self, alerts: &[&str], provoke: &dyn Fn(), clear: &dyn Fn()) {
        provoke();
        for alert in alerts {
            eventually(
                &self.prometheus,
                &format!("{alert} from the rules"),
                Duration::from_secs(60),
                || self.rule_firing(alert),
            );
            eventually(
                &self.prometheus,
                &format!("{alert} notified"),
                Duration::from_secs(30),
                || {
                    self.webhook
                        .about(alert)
                        .iter()
                        .any(|(status, _)| status == "firing")
                },
            );
        }
        clear();
        for alert in alerts {
            eventually(
                &self.prometheus,
                &format!("{alert} resolution notified"),
                Duration::from_secs(120),
                || {
                    self.webhook
                        .about(alert)
                        .iter()
                        .any(|(status, _)| status == "resolved")
                },
            );
        }
    }

    /// After a quiet group interval (30 s), each alert was notified exactly once
    /// firing and once resolved, each notification holding one alert: the two paths'
    /// alerts were the same alert in Alertmanager.
    fn assert_notified_once(&self, alerts: &[&str]) {
        std::thread::sleep(Duration::from_secs(35));
        for alert in alerts {
            assert_eq!(
                self.webhook.about(alert),
                vec![("firing".to_string(), 1), ("resolved".to_string(), 1)],
                "{alert}: one firing and one resolved notification"
            );
        }
    }
}

#[test]
fn both_alert_paths_notify_once_when_a_problem_fires_and_once_when_it_resolves() {
    let (_memory, fire_at) = memory_test();
    // Thresholds a test reaches quickly; the stall floor is out of reach here (the
    // next test covers LoopStalled).
    let t = Thresholds::default()
        .with_window(5)
        .unwrap()
        .with_staleness_iterations(5)
        .unwrap()
        .with_diversity_iterations(3)
        .unwrap()
        .with_stall_floor(Duration::from_secs(3600))
        .unwrap()
        .with_memory_fraction(fire_at)
        .unwrap()
        .with_memory_clear_fraction(fire_at - 0.001)
        .unwrap();
    let paths = BothPaths::start(&t);
    // The shipped inhibition (high memory mutes staleness and low success) sets the
    // phases.
    let ballast = std::sync::Mutex::new(None::<Vec<u8>>);
    paths.phase(
        &[
            "HighMemoryUsage",
            "DiversityCollapse",
            "ContainerCleanupFailures",
        ],
        &|| {
            *ballast.lock().unwrap() = Some(vec![1u8; BALLAST]);
            for i in 0..4 {
                paths.iterate(8, 2, 0.05, &format!("c{i}"));
            }
            paths.monitor.report_orphaned_containers(4);
        },
        &|| {
            *ballast.lock().unwrap() = None;
            paths.iterate(8, 2, 0.6, "c9");
            paths.monitor.report_orphaned_containers(0);
        },
    );
    paths.phase(
        &["ChampionStaleness", "LowSuccessRate"],
        &|| {
            for _ in 0..6 {
                paths.iterate(1, 9, 0.6, "same");
            }
        },
        &|| {
            for i in 0..6 {
                paths.iterate(9, 1, 0.6, &format!("new-{i}"));
            }
        },
    );
    paths.assert_notified_once(&[
        "HighMemoryUsage",
        "DiversityCollapse",
        "ContainerCleanupFailures",
        "ChampionStaleness",
        "LowSuccessRate",
    ]);
}

#[test]
fn a_stalled_loop_is_notified_once_by_both_paths() {
    let t = Thresholds::default()
        .with_stall_floor(Duration::from_secs(4))
        .unwrap();
    let paths = BothPaths::start(&t);
    paths.phase(
        &["LoopStalled"],
        &|| {
            for i in 0..3 {
                paths.iterate(8, 2, 0.6, &format!("c{i}"));
            }
            // Then nothing: stalled between iterations after 4 s.
        },
        &|| paths.monitor.done(),
    );
    paths.assert_notified_once(&["LoopStalled"]);
}

/// A loop watched by the Prometheus path alone: the shipped prometheus.yml (2 s scrape
/// and evaluation) and rules, and the shipped Alertmanager configuration (1 s
/// group_wait). The monitor is given no Alertmanager, so what arrives there comes
/// from the rules.
struct RulesPath {
    monitor: loopwatch::Monitor,
    prometheus: Prometheus,
    alertmanager: Alertmanager,
}

impl RulesPath {
    fn start(t: &Thresholds) -> Self {
        let (_webhook, monitor, prometheus, alertmanager) = shipped_stack(t, false);
        eventually(
            &prometheus,
            "the loop to be scraped",
            Duration::from_secs(30),
            || !prometheus.query("up{job=\"loopwatch\"} == 1").is_empty(),
        );
        RulesPath {
            monitor,
            prometheus,
            alertmanager,
        }
    }

    fn iterate(&self, ok: u64, failed: u64, diversity: f64, champion: &str) {
        iterate(&self.monitor, ok, failed, diversity, champion);
    }

    /// Time from `condition` until Alertmanager holds `alert`.
    fn delivered(&self, alert: &str, condition: Instant) -> Duration {
        eventually(
            &self.prometheus,
            &format!("{alert} at Alertmanager"),
            Duration::from_secs(60),
            || self.alertmanager.alert(alert).is_some(),
        );
        let latency = condition.elapsed();
        println!("{alert}: condition to Alertmanager through Prometheus in {latency:.1?}");
        latency
    }
}

/// Every rule but LoopDown (whose `for: 30s` is its definition) reaches Alertmanager
/// within 10 s of its condition through the shipped Prometheus and Alertmanager
/// configurations.
#[test]
fn every_rule_reaches_alertmanager_within_ten_seconds_through_prometheus() {
    let (_memory, fire_at) = memory_test();
    let t = Thresholds::default()
        .with_window(5)
        .unwrap()
        .with_staleness_iterations(5)
        .unwrap()
        .with_diversity_iterations(3)
        .unwrap()
        .with_stall_floor(Duration::from_secs(3600))
        .unwrap()
        .with_memory_fraction(fire_at)
        .unwrap()
        .with_max_restarts(2)
        .unwrap()
        .with_llm_spend_without_progress_usd(1.0)
        .unwrap()
        .with_llm_budget_usd(2.0)
        .unwrap();
    let path = RulesPath::start(&t);
    let mut latencies = Vec::new();

    // Iteration-based rules: each condition holds from the iteration that completes it.
    for i in 0..2 {
        path.iterate(8, 2, 0.05, &format!("c{i}"));
    }
    path.iterate(8, 2, 0.05, "c2");
    let condition = Instant::now();
    latencies.push((
        "DiversityCollapse",
        path.delivered("DiversityCollapse", condition),
    ));
    // The sixth iteration with one champion is the fifth since it changed.
    for _ in 0..5 {
        path.iterate(1, 9, 0.6, "same");
    }
    path.iterate(1, 9, 0.6, "same");
    let condition = Instant::now();
    for alert in ["ChampionStaleness", "LowSuccessRate"] {
        latencies.push((alert, path.delivered(alert, condition)));
    }
    path.monitor.report_orphaned_containers(4);
    let condition = Instant::now();
    latencies.push((
        "ContainerCleanupFailures",
        path.delivered("ContainerCleanupFailures", condition),
    ));
    let ballast = vec![1u8; BALLAST];
    let condition = Instant::now();
    latencies.push((
        "HighMemoryUsage",
        path.delivered("HighMemoryUsage", condition),
    ));
    drop(ballast);
    // LLM calls: three failures out of three, then spending past both limits.
    use loopwatch::llm::{LlmCall, LlmError};
    for _ in 0..3 {
        path.monitor
            .llm_call(&LlmCall::new("m", Duration::from_secs(1)).with_error(LlmError::Status(503)));
    }
    let condition = Instant::now();
    latencies.push(("LLMErrors", path.delivered("LLMErrors", condition)));
    path.monitor
        .llm_call(&LlmCall::new("m", Duration::from_secs(1)).with_cost_usd(2.5));
    let condition = Instant::now();
    for alert in ["LLMSpendWithoutProgress", "LLMBudget"] {
        latencies.push((alert, path.delivered(alert, condition)));
    }
    // A restart by the supervisor: one fewer than max_restarts (2) is crash-looping.
    let supervision = path.monitor.supervision();
    supervision.loop_restarting(loopwatch::supervise::LoopExit::new(Some(1), None));
    supervision.loop_started(std::process::id());
    let condition = Instant::now();
    latencies.push((
        "LoopCrashLooping",
        path.delivered("LoopCrashLooping", condition),
    ));
    supervision.loop_exited(loopwatch::supervise::LoopExit::new(None, Some(9)));
    let condition = Instant::now();
    latencies.push(("LoopExited", path.delivered("LoopExited", condition)));

    // LoopStalled and EvaluationHung: their own tests below (a short stall or
    // evaluation floor would fire them here). The GPU alerts need the stand-in NVML
    // (cli/tests/gpu.rs has both reach Alertmanager through Prometheus's rules);
    // LLMServerSaturated a stand-in model server (cli/tests/model_servers.rs);
    // LLMRateLimitNear a provider's headers (cli/tests/headroom.rs).
    let rules: Vec<&str> = loopwatch::ALERTS
        .iter()
        .filter(|spec| matches!(spec.rule, loopwatch::RuleSpec::Rule { .. }))
        .map(|spec| spec.name)
        .filter(|name| {
            ![
                "LoopDown",
                "LoopVanished",
                "LoopStalled",
                "EvaluationHung",
                "GPUMemoryHigh",
                "GPUErrors",
                "LLMServerSaturated",
                "LLMRateLimitNear",
            ]
            .contains(name)
        })
        .collect();
    for rule in &rules {
        assert!(
            latencies.iter().any(|(alert, _)| alert == rule),
            "{rule} was not measured"
        );
    }
    for (alert, latency) in latencies {
        assert!(latency <= Duration::from_secs(10), "{alert}: {latency:?}");
    }
}

#[test]
fn a_stall_reaches_alertmanager_within_ten_seconds_through_prometheus() {
    let t = Thresholds::default()
        .with_stall_floor(Duration::from_secs(3))
        .unwrap();
    let path = RulesPath::start(&t);
    // No iteration for the 3 s floor after this one ends.
    path.iterate(8, 2, 0.6, "c1");
    let condition = Instant::now() + Duration::from_secs(3);
    let latency = path.delivered("LoopStalled", condition);
    assert!(
        latency <= Duration::from_secs(10),
        "LoopStalled: {latency:?}"
    );
}

#[test]
fn an_evaluation_hang_reaches_alertmanager_within_ten_seconds_through_prometheus() {
    let t = Thresholds::default()
        .with_evaluation_floor(Duration::from_secs(3))
        .unwrap();
    let path = RulesPath::start(&t);
    // In flight past the 3 s floor from now; ended only once delivered.
    let hung = path.monitor.evaluation("prog-hung").worker("pool-1");
    let condition = Instant::now() + Duration::from_secs(3);
    let latency = path.delivered("EvaluationHung", condition);
    assert!(
        latency <= Duration::from_secs(10),
        "EvaluationHung: {latency:?}"
    );
    hung.ok();
}

#[test]
fn a_hung_evaluation_is_notified_once_by_both_paths() {
    let t = Thresholds::default()
        .with_evaluation_floor(Duration::from_secs(4))
        .unwrap();
    let paths = BothPaths::start(&t);
    let hung = std::sync::Mutex::new(None);
    paths.phase(
        &["EvaluationHung"],
        &|| *hung.lock().unwrap() = Some(paths.monitor.evaluation("prog-hung").worker("pool-1")),
        &|| {
            if let Some(evaluation) = hung.lock().unwrap().take() {
                evaluation.ok();
            }
        },
    );
    paths.assert_notified_once(&["EvaluationHung"]);
}

/// What a memory test allocates to move host memory past its threshold.
const BALLAST: usize = 2 << 30;

/// The start of a test that allocates [`BALLAST`] to fire HighMemoryUsage: its turn
/// (they run one at a time, so that one's ballast does not fire the other's alert,
/// nor count in the other's probe), and the host memory fraction halfway between now
/// and with the ballast, probed once the turn is taken.
fn memory_test() -> (std::sync::MutexGuard<'static, ()>, f64) {
    static MEMORY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let turn = MEMORY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let probe = loopwatch::sample::HostSampler::for_current_process().tick();
    let ballast_fraction = BALLAST as f64 / probe.host_memory_total_bytes as f64;
    (turn, probe.host_memory_fraction() + ballast_fraction / 2.0)
}

/// A loop on the shipped configuration's target: a search that runs until the test
/// stops it (SIGTERM: it ends after its generation, says it is done and exits 0) or
/// kills it.
fn endless_loop(addr: SocketAddr, dir: &std::path::Path) -> Stopped {
    Stopped(
        Command::new(example_path("evolve"))
            .args(["--iterations", "0"])
            .env("LOOPWATCH_LISTEN", addr.to_string())
            .env("LOOPWATCH_OUTPUT_DIR", dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// At least two successful scrapes of each target of `job`, `targets` of them: the
/// loops have been seen running, and each has seen the scrape interval, so that a
/// clean end waits for the scrape that carries `loopwatch_loop_done` away.
fn scraped_twice(prometheus: &Prometheus, job: &str, targets: usize) -> bool {
    prometheus
        .query(&format!("sum_over_time(up{{job=\"{job}\"}}[1m]) >= 2"))
        .len()
        == targets
}

/// Whether Prometheus has LoopDown pending or firing.
fn loop_down_raised(prometheus: &Prometheus) -> bool {
    !prometheus
        .query("ALERTS{alertname=\"LoopDown\"}")
        .is_empty()
}

#[test]
fn a_loop_that_ends_cleanly_raises_no_loop_down() {
    let dir = tempfile::tempdir().unwrap();
    let loop_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let prometheus = Prometheus::start(loop_addr, None);
    // Running until Prometheus has scraped it, then ended cleanly: however fast or
    // slow the search, it is seen running before it ends.
    let mut child = endless_loop(loop_addr, dir.path());
    eventually(
        &prometheus,
        "the loop to be scraped",
        Duration::from_secs(60),
        || scraped_twice(&prometheus, "loopwatch", 1),
    );
    let status = child.terminate();
    assert!(status.success(), "a clean end: {status:?}");
    let ended = Instant::now();
    eventually(
        &prometheus,
        "the target to be down",
        Duration::from_secs(30),
        || !prometheus.query("up{job=\"loopwatch\"} == 0").is_empty(),
    );
    // The last scrape carried the end, which is what keeps LoopDown quiet.
    let done = prometheus.query("last_over_time(loopwatch_loop_done{job=\"loopwatch\"}[1d])");
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0]["value"][1], "1", "{done:?}");
    // Two minutes after a clean end: never pending, never firing.
    while ended.elapsed() < Duration::from_secs(120) {
        assert!(
            !loop_down_raised(&prometheus),
            "LoopDown after a clean end ({:?} later)",
            ended.elapsed()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
fn a_killed_loop_raises_loop_down_within_seventy_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let alertmanager = Alertmanager::start();
    let loop_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let prometheus = Prometheus::start(loop_addr, Some(alertmanager.addr));
    let mut child = endless_loop(loop_addr, dir.path());
    eventually(
        &prometheus,
        "the loop to be scraped",
        Duration::from_secs(60),
        || !prometheus.query("up{job=\"loopwatch\"} == 1").is_empty(),
    );
    child.kill().unwrap();
    let killed = Instant::now();
    child.wait().unwrap();
    eventually(
        &prometheus,
        "LoopDown at Alertmanager",
        Duration::from_secs(90),
        || alertmanager.alert("LoopDown").is_some(),
    );
    let latency = killed.elapsed();
    println!("LoopDown: SIGKILL to Alertmanager in {latency:.1?}");
    assert!(latency < Duration::from_secs(70), "{latency:?}");
}

#[test]
fn with_no_loop_at_all_nothing_fires() {
    let loop_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let prometheus = Prometheus::start(loop_addr, None);
    eventually(
        &prometheus,
        "a few scrapes of the empty target",
        Duration::from_secs(30),
        || {
            prometheus
                .query("count_over_time(up{job=\"loopwatch\"}[1m]) >= 5")
                .len()
                == 1
        },
    );
    // Past LoopDown's `for: 30s` with the target down all along.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(45) {
        let alerts = prometheus.query("ALERTS");
        assert!(alerts.is_empty(), "{alerts:?}");
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Two loops scraped by one Prometheus: every panel query, with the dashboard's
/// variables set to one loop (by instance, or by run), returns that loop's series only.
#[test]
fn dashboard_variables_select_one_loop_of_two() {
    let monitors: Vec<loopwatch::Monitor> = (0..2)
        .map(|_| {
            loopwatch::Monitor::builder()
                .listen("127.0.0.1:0".parse().unwrap())
                .final_export(false)
                .containers(false)
                .build()
                .unwrap()
        })
        .collect();
    let targets: Vec<String> = monitors
        .iter()
        .map(|m| format!("\"{}\"", m.local_addr()))
        .collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [loopwatch.rules.yml]\nscrape_configs:\n  - job_name: loopwatch\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    );
    let rules = loopwatch_cli::generate::prometheus_rules(&Thresholds::default());
    let prometheus = Prometheus::start_with(&config, &[("loopwatch.rules.yml", rules.as_bytes())]);
    for (n, monitor) in monitors.iter().enumerate() {
        for i in 0..3 {
            let mut it = monitor.start_iteration();
            it.record_success(1.0 + n as f64, 0.1);
            it.record_failure("too few trades");
            it.record_population(
                loopwatch::Population::new(10, 8, 0.5).with_champion(&format!("c{n}-{i}")),
            );
            it.finish();
        }
    }
    eventually(
        &prometheus,
        "both loops scraped",
        Duration::from_secs(30),
        || {
            prometheus
                .query("loopwatch_rolling_window_iterations{job=\"loopwatch\"} == 3")
                .len()
                == 2
        },
    );
    let dashboard = grafana_dashboard(&Thresholds::default());
    let panel_queries: Vec<String> = dashboard_panels(&dashboard)
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    for (n, monitor) in monitors.iter().enumerate() {
        let instance = monitor.local_addr().to_string();
        let other = monitors[1 - n].local_addr().to_string();
        let run_id = monitor.identity().run_id.clone();
        for selection in [
            vec![("instance", instance.as_str())],
            vec![("run_id", run_id.as_str())],
        ] {
            let mut seen = 0;
            for expr in &panel_queries {
                let query = with_variables(expr, &selection);
                for series in prometheus.query(&query) {
                    let labels = &series["metric"];
                    if labels.get("instance").is_none() {
                        continue; // the `or on() vector(0)` fallback of an empty panel
                    }
                    assert_eq!(
                        labels["instance"],
                        instance.as_str(),
                        "`{query}` returned {other}'s series: {series}"
                    );
                    seen += 1;
                }
            }
            assert!(seen >= 10, "{selection:?}: only {seen} series");
        }
    }
}

/// One recorded run fed to both sides: the monitor judges it in process, its gauges
/// after each iteration become promtool's input series (one a minute), and the rules
/// must fire exactly when the evaluator fired, iteration by iteration (windows without
/// outcomes included).
#[test]
fn one_recorded_run_fires_the_same_intervals_in_process_and_through_the_rules() {
    use loopwatch::AlertName;
    let t = Thresholds::default()
        .with_window(4)
        .unwrap()
        .with_staleness_iterations(6)
        .unwrap()
        .with_diversity_iterations(3)
        .unwrap()
        .with_stall_floor(Duration::from_secs(3600))
        .unwrap();
    let monitor = loopwatch::Monitor::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .final_export(false)
        .containers(false)
        .thresholds(t.clone())
        .build()
        .unwrap();
    let compared = [
        AlertName::DiversityCollapse,
        AlertName::ChampionStaleness,
        AlertName::LowSuccessRate,
        AlertName::ContainerCleanupFailures,
    ];
    let gauges = [
        "success_rate_10iter",
        "loopwatch_rolling_window_iterations",
        "loopwatch_rolling_window_outcomes",
        "loopwatch_low_diversity_streak_iterations",
        "champion_staleness_iterations",
        "orphaned_containers",
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); gauges.len()];
    let mut firing: Vec<Vec<(AlertName, f64)>> = Vec::new();
    let value_of = |text: &str, name: &str| -> f64 {
        text.lines()
            .find(|l| l.split([' ', '{']).next() == Some(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in the exposition"))
    };
    // The run: phases of good and bad iterations, collapsing and recovering
    // diversity, a champion that changes then sticks, windows without any outcome,
    // and orphans reported between iterations.
    for i in 0..48u32 {
        let mut it = monitor.start_iteration();
        let (ok, failed) = match i {
            10..=21 => (0, 9),
            22..=27 => (0, 0),
            28..=33 => (1, 9),
            _ => (8, 2),
        };
        for _ in 0..ok {
            it.record_success(1.0, 0.1);
        }
        for _ in 0..failed {
            it.record_failure("too few trades");
        }
        let diversity = if (5..=12).contains(&i) || (36..=40).contains(&i) {
            0.02
        } else {
            0.6
        };
        let champion = if i < 20 {
            format!("c{}", i / 3)
        } else {
            "kept".to_string()
        };
        it.record_population(loopwatch::Population::new(10, 8, diversity).with_champion(&champion));
        it.finish();
        monitor.report_orphaned_containers(match i {
            14..=19 => 5,
            30 => 4,
            _ => 0,
        });
        let text = monitor.render_metrics().unwrap();
        for (series, name) in samples.iter_mut().zip(gauges) {
            series.push(value_of(&text, name));
        }
        let now = monitor.firing_alerts();
        firing.push(
            compared
                .iter()
                .filter(|alert| now.contains(alert))
                .map(|alert| {
                    let value = match alert {
                        AlertName::DiversityCollapse => value_of(&text, "population_diversity"),
                        AlertName::ChampionStaleness => {
                            value_of(&text, "champion_staleness_iterations")
                        }
                        AlertName::LowSuccessRate => value_of(&text, "success_rate_10iter"),
                        _ => value_of(&text, "orphaned_containers"),
                    };
                    (*alert, value)
                })
                .collect(),
        );
    }
    monitor.shutdown();
    let every_alert_fired = compared
        .iter()
        .all(|alert| firing.iter().any(|f| f.iter().any(|(a, _)| a == alert)));
    assert!(
        every_alert_fired,
        "the run provokes each compared alert: {firing:?}"
    );

    // The same run through the generated rules, evaluated once a minute.
    let labels = "instance=\"loop:8000\", job=\"loopwatch\"";
    let mut input = vec![serde_json::json!({
        "series": format!("loopwatch_run_info{{{labels}, run_id=\"run-1\", hostname=\"host-a\"}}"),
        "values": format!("1+0x{}", firing.len()),
    })];
    for (name, values) in gauges.iter().zip(&samples) {
        let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        input.push(serde_json::json!({
            "series": format!("{name}{{{labels}}}"),
            "values": values.join(" "),
        }));
    }
    let mut checks = Vec::new();
    for (minute, now) in firing.iter().enumerate() {
        for alert in compared {
            let expected: Vec<serde_json::Value> = now
                .iter()
                .filter(|(a, _)| *a == alert)
                .map(|(a, value)| {
                    // DiversityCollapse's value in PromQL is the streak, in process the
                    // diversity: compare what the rule reports.
                    let value = if *a == AlertName::DiversityCollapse {
                        samples[3][minute]
                    } else {
                        *value
                    };
                    serde_json::json!({
                        "exp_labels": {"severity": a.severity(), "instance": "host-a", "job": "loopwatch", "run_id": "run-1"},
                        "exp_annotations": {
                            "summary": a.message(),
                            "description": loopwatch_cli::generate::expected_description(*a, &t, value),
                            "runbook": a.spec().runbook,
                        },
                    })
                })
                .collect();
            checks.push(serde_json::json!({
                "eval_time": format!("{minute}m"),
                "alertname": alert.as_str(),
                "exp_alerts": expected,
            }));
        }
    }
    let test = serde_json::json!({
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": input, "alert_rule_test": checks}],
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yml"),
        loopwatch_cli::generate::prometheus_rules(&t),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("recorded_test.yml"),
        serde_yaml_ng::to_string(&test).unwrap(),
    )
    .unwrap();
    tool(
        "promtool",
        &["test", "rules", "recorded_test.yml"],
        dir.path(),
    );
}

/// Registered loops follow the same logic: one that ends cleanly removes its file and
/// raises nothing; one killed leaves its file behind, and LoopDown fires for it.
#[test]
fn registered_loops_killed_raise_loop_down_and_clean_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let targets = dir.path().join("targets");
    let alertmanager = Alertmanager::start();
    let shipped = std::fs::read_to_string(repo_root().join("prometheus/prometheus.yml")).unwrap();
    let config = shipped
        .replace("127.0.0.1:9093", &alertmanager.addr.to_string())
        .replace("targets/*.json", &format!("{}/*.json", targets.display()));
    let rules = loopwatch_cli::generate::prometheus_rules(&Thresholds::default());
    let prometheus = Prometheus::start_with(&config, &[("loopwatch.rules.yml", rules.as_bytes())]);
    // Both run until the test has seen them scraped, then one is killed and the other
    // stopped cleanly.
    let registered = || {
        Stopped(
            Command::new(example_path("evolve"))
                .args(["--iterations", "0"])
                .env("LOOPWATCH_LISTEN", "127.0.0.1:0")
                .env("LOOPWATCH_REGISTER_DIR", &targets)
                .env("LOOPWATCH_OUTPUT_DIR", dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut clean = registered();
    let mut killed = registered();
    eventually(
        &prometheus,
        "both loops discovered and scraped",
        Duration::from_secs(60),
        || scraped_twice(&prometheus, "loopwatch-discovered", 2),
    );
    killed.kill().unwrap();
    let killed_at = Instant::now();
    killed.wait().unwrap();
    let status = clean.terminate();
    assert!(status.success(), "a clean end: {status:?}");
    eventually(
        &prometheus,
        "LoopDown at Alertmanager",
        Duration::from_secs(90),
        || alertmanager.alert("LoopDown").is_some(),
    );
    println!(
        "LoopDown (registered loop): SIGKILL to Alertmanager in {:.1?}",
        killed_at.elapsed()
    );
    assert!(killed_at.elapsed() < Duration::from_secs(70));
    // Only the killed loop: one LoopDown, for its target.
    let down = prometheus.query("ALERTS{alertname=\"LoopDown\"}");
    assert_eq!(down.len(), 1, "{down:?}");
    let files: Vec<_> = std::fs::read_dir(&targets).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "the clean loop removed its registration");
}
