//! The Prometheus alerting rules and their `promtool test rules` unit tests, mirroring
//! the in-process evaluator: same names, messages, severities and thresholds, reading
//! the same iteration-based gauges so that "N consecutive iterations" means iterations.
//! Both files are built as data and serialised with serde, never spliced as text.

use std::collections::BTreeMap;

use loopwatch::{catalog, AlertName, Thresholds};
use serde::Serialize;

/// Path of the rules file, relative to the repository.
pub const RULES_FILE: &str = "prometheus/loopwatch.rules.yml";
/// Path of the rules' unit tests, relative to the repository.
pub const RULES_TEST_FILE: &str = "prometheus/tests/loopwatch.rules_test.yml";

/// Name of the recording rule for the memory fraction HighMemoryUsage watches.
pub const MEMORY_RATIO_RECORD: &str = "loopwatch:memory_used:ratio";

#[derive(Serialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Serialize)]
struct RuleGroup {
    name: &'static str,
    interval: &'static str,
    rules: Vec<Rule>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Rule {
    Record {
        record: &'static str,
        expr: String,
    },
    Alert {
        alert: &'static str,
        expr: String,
        #[serde(rename = "for")]
        pending_for: &'static str,
        labels: BTreeMap<&'static str, &'static str>,
        annotations: BTreeMap<&'static str, String>,
    },
}

/// The PromQL expression of each alert: its condition, labelled like loopwatch's own
/// alert for the same condition. `loopwatch_run_info` is joined in for `run_id`, and
/// `instance` becomes the loop's host name, so with both paths pointed at one
/// Alertmanager the two are one alert there and notify once.
pub fn alert_expression(alert: AlertName, t: &Thresholds) -> String {
    format!(
        "max without (hostname) (label_replace(({}) * on(instance, job) group_left(run_id, hostname) {}, \"instance\", \"$1\", \"hostname\", \"(.*)\"))",
        condition(alert, t),
        catalog::RUN_INFO.name
    )
}

/// How long a loop may wait, in PromQL: the stall factor times the rolling mean
/// iteration time, at least the floor, as the evaluator computes it.
fn stall_limit(t: &Thresholds) -> String {
    format!(
        "clamp_min({} * {}, {})",
        t.stall_factor,
        catalog::ROLLING_EXECUTION_TIME_SECONDS.name,
        t.stall_floor.as_secs_f64()
    )
}

/// The condition of each alert, written in the evaluator's own terms.
pub fn condition(alert: AlertName, t: &Thresholds) -> String {
    match alert {
        AlertName::HighMemoryUsage => format!(
            "{} / {} > {}",
            catalog::MEMORY_USED_BYTES.name,
            catalog::MEMORY_LIMIT_BYTES.name,
            t.memory_fraction
        ),
        AlertName::DiversityCollapse => format!(
            "{} >= {}",
            catalog::LOW_DIVERSITY_STREAK_ITERATIONS.name,
            t.diversity_iterations
        ),
        AlertName::ChampionStaleness => format!(
            "{} >= {}",
            catalog::CHAMPION_STALENESS_ITERATIONS.name,
            t.staleness_iterations
        ),
        AlertName::LowSuccessRate => format!(
            "{} < {} and on(instance, job) {} >= {}",
            catalog::SUCCESS_RATE_10ITER.name,
            t.success_rate_floor,
            catalog::ROLLING_WINDOW_ITERATIONS.name,
            t.window
        ),
        AlertName::ContainerCleanupFailures => {
            format!("{} > {}", catalog::ORPHANED_CONTAINERS.name, t.orphan_limit)
        }
        AlertName::LoopStalled => {
            let start = catalog::ITERATION_START_TIMESTAMP_SECONDS.name;
            let end = catalog::ITERATION_END_TIMESTAMP_SECONDS.name;
            let limit = stall_limit(t);
            format!(
                "((time() - {start} > on(instance, job) {limit} \
                 and on(instance, job) {start} > {end}) \
                 or (time() - {end} > on(instance, job) {limit} \
                 and on(instance, job) {end} >= {start} and on(instance, job) {end} > 0)) \
                 and on(instance, job) {} == 0",
                catalog::LOOP_DONE.name
            )
        }
        // Only the supervisor sees a child's exit status; the rule carries its verdict
        // for the seconds `loopwatch run` lingers (LoopDown covers the time after).
        AlertName::LoopExited => format!(
            "{}{{alertname=\"LoopExited\"}} == 1",
            catalog::ALERT_FIRING.name
        ),
    }
}

/// The Prometheus-only alert for a loop whose target is down or gone.
const LOOP_DOWN: &str = "LoopDown";
const LOOP_DOWN_EXPR: &str =
    "up{job=~\"loopwatch|loopwatch-discovered\"} == 0 or absent(up{job=\"loopwatch\"})";

/// The README section explaining an alert.
fn runbook(alertname: &str) -> String {
    format!("README.md#{}", alertname.to_ascii_lowercase())
}

fn description(alert: AlertName, t: &Thresholds) -> String {
    match alert {
        AlertName::HighMemoryUsage => format!(
            "Memory in use is {{{{ $value | humanizePercentage }}}} of the limit that kills the loop, its cgroup's or the host's (threshold {}%).",
            t.memory_fraction * 100.0
        ),
        AlertName::DiversityCollapse => format!(
            "Population diversity has been below {} for {{{{ $value }}}} consecutive iterations (threshold {}).",
            t.diversity_floor, t.diversity_iterations
        ),
        AlertName::ChampionStaleness => format!(
            "The champion has not changed for {{{{ $value }}}} iterations (threshold {}).",
            t.staleness_iterations
        ),
        AlertName::LowSuccessRate => format!(
            "Strategy success rate over the last {} iterations is {{{{ $value | humanizePercentage }}}} (threshold {}%).",
            t.window,
            t.success_rate_floor * 100.0
        ),
        AlertName::ContainerCleanupFailures => format!(
            "{{{{ $value }}}} orphaned containers could not be removed (threshold {}).",
            t.orphan_limit
        ),
        AlertName::LoopStalled => format!(
            "The loop has waited {{{{ $value }}}} s without an iteration starting or ending (limit: {} times the mean iteration time, at least {} s).",
            t.stall_factor,
            t.stall_floor.as_secs_f64()
        ),
        AlertName::LoopExited => "The loop under loopwatch run exited non-zero or by a signal before it said it was done; its exit status is in metrics_final.json.".to_string(),
    }
}

fn yaml(header: &str, value: &impl Serialize) -> String {
    let body = serde_yaml_ng::to_string(value).expect("rule files are plain maps and strings");
    format!("{header}{body}")
}

/// The rules file: a recording rule for the memory fraction, and the five alerts.
pub fn prometheus_rules(t: &Thresholds) -> String {
    let mut rules = vec![Rule::Record {
        record: MEMORY_RATIO_RECORD,
        expr: format!(
            "{} / {}",
            catalog::MEMORY_USED_BYTES.name,
            catalog::MEMORY_LIMIT_BYTES.name
        ),
    }];
    rules.extend(AlertName::ALL.into_iter().map(|alert| Rule::Alert {
        alert: alert.as_str(),
        expr: alert_expression(alert, t),
        pending_for: "0s",
        labels: BTreeMap::from([("severity", alert.severity())]),
        annotations: BTreeMap::from([
            ("summary", alert.message().to_string()),
            ("description", description(alert, t)),
            ("runbook", runbook(alert.as_str())),
        ]),
    }));
    rules.push(Rule::Alert {
        alert: LOOP_DOWN,
        expr: LOOP_DOWN_EXPR.to_string(),
        pending_for: "1m",
        labels: BTreeMap::from([("severity", "critical")]),
        annotations: BTreeMap::from([
            ("summary", "Loop target down".to_string()),
            (
                "description",
                "Prometheus has not scraped the loop for a minute: it crashed, hangs outside loopwatch, or its host is unreachable.".to_string(),
            ),
            ("runbook", runbook(LOOP_DOWN)),
        ]),
    });
    yaml(
        "# Generated by `loopwatch rules` from the catalog and loopwatch::Thresholds; do not edit.\n\
         # The alerts mirror loopwatch's in-process evaluator: same names, summaries,\n\
         # severities and thresholds, on the iteration-based gauges it exports.\n",
        &RuleFile {
            groups: vec![RuleGroup {
                name: "loopwatch",
                interval: "5s",
                rules,
            }],
        },
    )
}

#[derive(Serialize)]
struct TestFile {
    rule_files: Vec<&'static str>,
    evaluation_interval: &'static str,
    tests: Vec<TestCase>,
}

#[derive(Serialize)]
struct TestCase {
    name: String,
    interval: &'static str,
    input_series: Vec<InputSeries>,
    alert_rule_test: Vec<AlertTest>,
}

#[derive(Serialize)]
struct InputSeries {
    series: String,
    values: String,
}

#[derive(Serialize)]
struct AlertTest {
    eval_time: String,
    alertname: &'static str,
    exp_alerts: Vec<ExpectedAlert>,
}

#[derive(Serialize)]
struct ExpectedAlert {
    exp_labels: BTreeMap<&'static str, &'static str>,
    exp_annotations: BTreeMap<&'static str, String>,
}

/// The run identity the test series carry, and the labels the alerts get from it.
const TEST_RUN_ID: &str = "run-1";
const TEST_HOST: &str = "host-a";

/// One boundary test: quiet at each of `quiet_at`, firing with `value` at `fire_at`,
/// labelled with the loop's run id and host name as loopwatch's own alert is.
fn boundary(
    alert: AlertName,
    mut input_series: Vec<InputSeries>,
    quiet_at: &[&str],
    fire_at: &str,
    described: String,
) -> TestCase {
    input_series.push(InputSeries {
        series: format!(
            "{}{{instance=\"loop:8000\", job=\"loopwatch\", run_id=\"{TEST_RUN_ID}\", hostname=\"{TEST_HOST}\"}}",
            catalog::RUN_INFO.name
        ),
        values: "1+0x10".into(),
    });
    let mut checks: Vec<AlertTest> = quiet_at
        .iter()
        .map(|at| AlertTest {
            eval_time: at.to_string(),
            alertname: alert.as_str(),
            exp_alerts: Vec::new(),
        })
        .collect();
    checks.push(AlertTest {
        eval_time: fire_at.to_string(),
        alertname: alert.as_str(),
        exp_alerts: vec![ExpectedAlert {
            exp_labels: BTreeMap::from([
                ("severity", alert.severity()),
                ("instance", TEST_HOST),
                ("job", "loopwatch"),
                ("run_id", TEST_RUN_ID),
            ]),
            exp_annotations: BTreeMap::from([
                ("summary", alert.message().to_string()),
                ("description", described),
                ("runbook", runbook(alert.as_str())),
            ]),
        }],
    });
    TestCase {
        name: format!("{} fires at its threshold, not before", alert.as_str()),
        interval: "1m",
        input_series,
        alert_rule_test: checks,
    }
}

fn series(name: &str, values: String) -> InputSeries {
    InputSeries {
        series: format!("{name}{{instance=\"loop:8000\", job=\"loopwatch\"}}"),
        values,
    }
}

/// Boundary tests for every alert: it fires at its threshold and not one step before.
pub fn promtool_tests(t: &Thresholds) -> String {
    let below_memory = t.memory_fraction - 0.001;
    let above_memory = t.memory_fraction + 0.001;
    let n = t.diversity_iterations;
    let s = t.staleness_iterations;
    let w = t.window;
    let low_rate = t.success_rate_floor - 0.01;
    let described = |alert, placeholder: &str, value: String| {
        description(alert, t).replace(placeholder, &value)
    };
    let tests = vec![
        // Memory: just below, then just above the fraction (total 1e9 bytes).
        boundary(
            AlertName::HighMemoryUsage,
            vec![
                series(
                    catalog::MEMORY_USED_BYTES.name,
                    format!(
                        "{} {}",
                        (below_memory * 1e9) as u64,
                        (above_memory * 1e9) as u64
                    ),
                ),
                series(
                    catalog::MEMORY_LIMIT_BYTES.name,
                    "1000000000 1000000000".into(),
                ),
            ],
            &["0m"],
            "1m",
            described(
                AlertName::HighMemoryUsage,
                "{{ $value | humanizePercentage }}",
                format!("{}%", trim(above_memory * 100.0)),
            ),
        ),
        boundary(
            AlertName::DiversityCollapse,
            vec![series(
                catalog::LOW_DIVERSITY_STREAK_ITERATIONS.name,
                format!("{} {}", n - 1, n),
            )],
            &["0m"],
            "1m",
            described(AlertName::DiversityCollapse, "{{ $value }}", n.to_string()),
        ),
        boundary(
            AlertName::ChampionStaleness,
            vec![series(
                catalog::CHAMPION_STALENESS_ITERATIONS.name,
                format!("{} {}", s - 1, s),
            )],
            &["0m"],
            "1m",
            described(AlertName::ChampionStaleness, "{{ $value }}", s.to_string()),
        ),
        // Success rate: exactly at the floor is quiet; below it fires only with a full
        // window.
        boundary(
            AlertName::LowSuccessRate,
            vec![
                series(
                    catalog::SUCCESS_RATE_10ITER.name,
                    format!("{} {} {}", t.success_rate_floor, low_rate, low_rate),
                ),
                series(
                    catalog::ROLLING_WINDOW_ITERATIONS.name,
                    format!("{w} {} {w}", w - 1),
                ),
            ],
            &["0m", "1m"],
            "2m",
            described(
                AlertName::LowSuccessRate,
                "{{ $value | humanizePercentage }}",
                format!("{}%", trim(low_rate * 100.0)),
            ),
        ),
        boundary(
            AlertName::ContainerCleanupFailures,
            vec![series(
                catalog::ORPHANED_CONTAINERS.name,
                format!("{} {}", t.orphan_limit, t.orphan_limit + 1),
            )],
            &["0m"],
            "1m",
            described(
                AlertName::ContainerCleanupFailures,
                "{{ $value }}",
                (t.orphan_limit + 1).to_string(),
            ),
        ),
        stall_test(t, &described),
        boundary(
            AlertName::LoopExited,
            vec![InputSeries {
                series: format!(
                    "{}{{alertname=\"LoopExited\", instance=\"loop:8000\", job=\"loopwatch\"}}",
                    catalog::ALERT_FIRING.name
                ),
                values: "0 1".into(),
            }],
            &["0m"],
            "1m",
            description(AlertName::LoopExited, t),
        ),
    ];
    let mut tests = tests;
    tests.push(loop_down_test());
    yaml(
        "# Generated by `loopwatch rules` from loopwatch::Thresholds; do not edit.\n\
         # Each alert at its boundary: quiet one step before the threshold, firing at it.\n",
        &TestFile {
            rule_files: vec!["../loopwatch.rules.yml"],
            evaluation_interval: "5s",
            tests,
        },
    )
}

/// LoopStalled: an iteration that started at t = 60 s and never ends, after
/// iterations of 1 s. The limit is the larger of the factor times 1 s and the floor;
/// quiet at the limit, firing at the next evaluation (rules run every 5 s).
fn stall_test(t: &Thresholds, described: &dyn Fn(AlertName, &str, String) -> String) -> TestCase {
    let limit = (t.stall_factor * 1.0)
        .max(t.stall_floor.as_secs_f64())
        .ceil() as u64;
    let started = 60u64;
    let at_limit = format!("{}s", started + limit);
    let past = format!("{}s", started + limit + 5);
    let samples = started + limit + 6;
    let mut case = boundary(
        AlertName::LoopStalled,
        vec![
            series(
                catalog::ITERATION_START_TIMESTAMP_SECONDS.name,
                format!("{started}+0x{samples}"),
            ),
            series(
                catalog::ITERATION_END_TIMESTAMP_SECONDS.name,
                format!("{}+0x{samples}", started - 1),
            ),
            series(
                catalog::ROLLING_EXECUTION_TIME_SECONDS.name,
                format!("1+0x{samples}"),
            ),
            series(catalog::LOOP_DONE.name, format!("0+0x{samples}")),
        ],
        &[&at_limit],
        &past,
        described(
            AlertName::LoopStalled,
            "{{ $value }}",
            (limit + 5).to_string(),
        ),
    );
    case.interval = "1s";
    case.input_series.last_mut().unwrap().values = format!("1+0x{samples}");
    case
}

/// LoopDown: the target down for a minute fires; just gone down does not yet.
fn loop_down_test() -> TestCase {
    TestCase {
        name: format!("{LOOP_DOWN} fires after a minute down"),
        interval: "1m",
        input_series: vec![series("up", "1 0 0 0".into())],
        alert_rule_test: vec![
            AlertTest {
                eval_time: "1m".into(),
                alertname: LOOP_DOWN,
                exp_alerts: Vec::new(),
            },
            AlertTest {
                eval_time: "2m".into(),
                alertname: LOOP_DOWN,
                exp_alerts: vec![ExpectedAlert {
                    exp_labels: BTreeMap::from([
                        ("severity", "critical"),
                        ("instance", "loop:8000"),
                        ("job", "loopwatch"),
                    ]),
                    exp_annotations: BTreeMap::from([
                        ("summary", "Loop target down".to_string()),
                        (
                            "description",
                            "Prometheus has not scraped the loop for a minute: it crashed, hangs outside loopwatch, or its host is unreachable.".to_string(),
                        ),
                        ("runbook", runbook(LOOP_DOWN)),
                    ]),
                }],
            },
        ],
    }
}

/// Formats a percentage as Prometheus's humanizePercentage does for these values.
fn trim(percent: f64) -> String {
    let mut text = format!("{percent:.4}");
    while text.ends_with('0') {
        text.pop();
    }
    if text.ends_with('.') {
        text.pop();
    }
    text
}
