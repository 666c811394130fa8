//! promtool, Prometheus's own parser and linter, as an independent judge of every kind
//! of text loopwatch writes: the live exposition with user metrics and escaped labels,
//! hostile label values, and the final export file of a run fed bad input.
//! (The in-process tests judge the same texts with the strict parser in `support`.)

mod support;

use std::time::Duration;

use loopwatch::opentelemetry::KeyValue;
use loopwatch::{Monitor, Population, PROMETHEUS_FINAL_FILE};
use proptest::prelude::*;
use support::*;

#[test]
fn promtool_accepts_the_exposition_including_user_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let monitor = monitor_in(dir.path());
    let meter = monitor.meter();
    let backtests = meter
        .u64_counter("backtests_run_total")
        .with_description("Back-tests run by the loop (back-tests).")
        .with_unit("{backtest}")
        .build();
    backtests.add(3, &[KeyValue::new("market", "BTC \"perp\"\\\nusd")]);
    for _ in 0..3 {
        let mut it = monitor.start_iteration();
        it.record_success(1.5, 0.2);
        it.record_population(Population::new(4, 3, 0.66).with_champion("ß-strategy \"x\""));
    }
    let text = scrape(monitor.local_addr());
    assert_promtool_accepts(&text);
    let e = parse(&text).unwrap();
    assert_eq!(
        e["backtests_run_total"].value_with(&[("market", "BTC \"perp\"\\\nusd")]),
        Some(3.0),
        "label values survive escaping"
    );
    monitor.shutdown();
}

#[test]
fn the_final_file_of_a_run_fed_bad_input_passes_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let monitor = monitor_in(dir.path());
    for (i, (sharpe, drawdown, diversity)) in [
        (f64::NAN, 0.1, 0.5),
        (1.0, -0.3, 0.5),
        (f64::INFINITY, f64::NAN, 1.5),
        (0.7, 0.2, f64::NEG_INFINITY),
    ]
    .into_iter()
    .enumerate()
    {
        let mut it = monitor.start_iteration();
        it.record_success(sharpe, drawdown);
        it.record_failure("a reason with \"quotes\" and <markup>");
        it.record_population(Population::new(5, 9, diversity).with_champion(&format!("c{i}")));
        it.finish();
    }
    monitor.shutdown();
    let text = std::fs::read_to_string(dir.path().join(PROMETHEUS_FINAL_FILE)).unwrap();
    assert_promtool_accepts(&text);
    let e = assert_well_formed(&text);
    let rejected: f64 = e["loopwatch_rejected_observations_total"]
        .samples
        .iter()
        .map(|(_, v)| v)
        .sum();
    // Sharpe NaN; drawdown -0.3; Sharpe ∞, drawdown NaN and diversity 1.5; diversity
    // -∞; and 9 distinct of 5 in each of the four iterations.
    assert_eq!(rejected, 10.0, "every bad value counted");
}

fn monitor() -> Monitor {
    Monitor::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .final_export(false)
        .sample_interval(Duration::from_millis(100))
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    #[test]
    fn hostile_label_values_keep_the_exposition_valid(values in proptest::collection::vec(any::<String>(), 1..4)) {
        static MONITOR: std::sync::OnceLock<Monitor> = std::sync::OnceLock::new();
        let monitor = MONITOR.get_or_init(monitor);
        let counter = monitor.meter().u64_counter("user_hostile_labels_total").with_description("Hostile label values.").build();
        for value in &values {
            counter.add(1, &[KeyValue::new("value", value.clone())]);
        }
        let text = scrape(monitor.local_addr());
        assert_promtool_accepts(&text);
        let e = parse(&text).map_err(TestCaseError::fail)?;
        let family = &e["user_hostile_labels_total"];
        for value in &values {
            prop_assert!(family.value_with(&[("value", value)]).is_some(), "{value:?} did not survive:\n{text}");
        }
    }
}
