//! Bad observations are rejected, counted and logged; the exposition stays valid.

mod support;

use loopwatch::{Monitor, Population};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use support::*;

fn rejected(e: &Exposition, field: &str, reason: &str) -> f64 {
    e["loopwatch_rejected_observations_total"]
        .value_with(&[("field", field), ("reason", reason)])
        .unwrap_or_else(|| panic!("no series for {field}/{reason}"))
}

#[test]
fn each_kind_of_bad_input_is_rejected_and_counted() {
    struct Case {
        name: &'static str,
        record: fn(&mut loopwatch::Iteration<'_>),
        field: &'static str,
        reason: &'static str,
    }
    let cases = [
        Case {
            name: "NaN Sharpe",
            record: |it| it.record_success(f64::NAN, 0.1),
            field: "sharpe_ratio",
            reason: "not_finite",
        },
        Case {
            name: "+Inf Sharpe",
            record: |it| it.record_success(f64::INFINITY, 0.1),
            field: "sharpe_ratio",
            reason: "not_finite",
        },
        Case {
            name: "-Inf Sharpe",
            record: |it| it.record_success(f64::NEG_INFINITY, 0.1),
            field: "sharpe_ratio",
            reason: "not_finite",
        },
        Case {
            name: "NaN drawdown",
            record: |it| it.record_success(1.0, f64::NAN),
            field: "max_drawdown",
            reason: "not_finite",
        },
        Case {
            name: "negative drawdown",
            record: |it| it.record_success(1.0, -0.2),
            field: "max_drawdown",
            reason: "out_of_range",
        },
        Case {
            name: "diversity above 1",
            record: |it| it.record_population(Population::new(5, 5, 1.5)),
            field: "population_diversity",
            reason: "out_of_range",
        },
        Case {
            name: "negative diversity",
            record: |it| it.record_population(Population::new(5, 5, -0.1)),
            field: "population_diversity",
            reason: "out_of_range",
        },
        Case {
            name: "NaN diversity",
            record: |it| it.record_population(Population::new(5, 5, f64::NAN)),
            field: "population_diversity",
            reason: "not_finite",
        },
        Case {
            name: "more unique than the population",
            record: |it| it.record_population(Population::new(5, 6, 0.5)),
            field: "unique_strategy_count",
            reason: "out_of_range",
        },
    ];
    for case in cases {
        let dir = tempfile::tempdir().unwrap();
        let monitor = monitor_in(dir.path());
        let mut it = monitor.start_iteration();
        it.record_success(2.0, 0.2);
        it.record_population(Population::new(5, 3, 0.4));
        (case.record)(&mut it);
        it.finish();
        let text = scrape(monitor.local_addr());
        let e = parse(&text).unwrap();
        assert_eq!(rejected(&e, case.field, case.reason), 1.0, "{}", case.name);
        let total: f64 = e["loopwatch_rejected_observations_total"]
            .samples
            .iter()
            .map(|(_, v)| v)
            .sum();
        assert_eq!(total, 1.0, "{}: exactly one rejection", case.name);
        // The valid values of the iteration are still there, untouched by the bad one.
        let sharpe = e["sharpe_ratio"].value();
        assert!(sharpe.is_finite(), "{}: sharpe {sharpe}", case.name);
        let diversity = e["population_diversity"].value();
        assert!(
            (0.0..=1.0).contains(&diversity),
            "{}: diversity {diversity}",
            case.name
        );
        assert!(e["unique_strategy_count"].value() <= 5.0, "{}", case.name);
        assert_well_formed(&text);
        monitor.shutdown();
    }
}

/// A merged batch claiming more champion changes than it has iterations cannot be
/// true: it is rejected as malformed, counted, and changes no count (the most changes
/// a number can hold, twice over, would have overflowed the run's).
#[test]
fn merged_iterations_changing_the_champion_more_often_than_they_number_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let monitor = monitor_in(dir.path());
    let intake = monitor.supervision().intake();
    let batch = |changes: u64| {
        format!(
            r#"{{"v":1,"type":"iterations","count":3,"seconds":1.5,"champions":{{"first":"a","first_at":0,"last":"b","changes":{changes},"last_change_at":2}}}}"#
        )
    };
    intake.handle_line(batch(2).as_bytes());
    for changes in [3, u64::MAX, u64::MAX] {
        intake.handle_line(batch(changes).as_bytes());
    }
    let summary = monitor.summary();
    assert_eq!(summary.iterations, 3, "the first batch alone");
    assert_eq!(summary.champion_changes, 3, "\"a\", then two changes");
    let text = scrape(monitor.local_addr());
    let e = parse(&text).unwrap();
    assert_eq!(rejected(&e, "message", "malformed"), 3.0);
    assert_eq!(e["loopwatch_champion_changes_total"].value(), 3.0);
    assert_well_formed(&text);
    monitor.shutdown();
}

/// What the monitor should have rejected, computed independently.
fn expected_rejections(sharpe: f64, drawdown: f64, diversity: f64, size: u64, unique: u64) -> u64 {
    u64::from(!sharpe.is_finite())
        + u64::from(!drawdown.is_finite() || drawdown < 0.0)
        + u64::from(!(0.0..=1.0).contains(&diversity))
        + u64::from(unique > size)
}

fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        -10.0..10.0f64,
        any::<f64>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/bad_input.txt",
        ))),
        ..ProptestConfig::default()
    })]
    #[test]
    fn arbitrary_observations_never_break_the_exposition(
        observations in proptest::collection::vec((any_f64(), any_f64(), any_f64(), 0u64..20, 0u64..25), 1..6)
    ) {
        let monitor = Monitor::builder()
            .listen("127.0.0.1:0".parse().unwrap())
            .final_export(false)
            .build()
            .unwrap();
        let mut expected = 0;
        for &(sharpe, drawdown, diversity, size, unique) in &observations {
            let mut it = monitor.start_iteration();
            it.record_success(sharpe, drawdown);
            it.record_population(Population::new(size, unique, diversity));
            expected += expected_rejections(sharpe, drawdown, diversity, size, unique);
        }
        let text = scrape(monitor.local_addr());
        let e = parse(&text).map_err(TestCaseError::fail)?;
        let counted: f64 = e["loopwatch_rejected_observations_total"].samples.iter().map(|(_, v)| v).sum();
        prop_assert_eq!(counted, expected as f64);
        prop_assert_eq!(e["strategy_success_total"].value(), observations.len() as f64);
        let diversity = e["population_diversity"].value();
        prop_assert!((0.0..=1.0).contains(&diversity));
        prop_assert!(e["sharpe_ratio"].value().is_finite());
        monitor.shutdown();
    }
}

/// Iterations the loop says lasted absurdly long (ends 1.8e19 s after their starts)
/// are booked, their durations bounded: nothing overflows, and the run goes on.
#[test]
fn absurd_iteration_durations_saturate_and_never_panic() {
    let monitor = quiet_monitor().build().unwrap();
    let intake = monitor.supervision().intake();
    for _ in 0..3 {
        intake.handle_line(br#"{"v":1,"type":"iteration_start","t":0}"#);
        intake.handle_line(br#"{"v":1,"type":"success","sharpe":1.0,"drawdown":0.1}"#);
        intake.handle_line(br#"{"v":1,"type":"iteration_end","t":1.8e19}"#);
    }
    let text = monitor.render_metrics().unwrap();
    let e = parse(&text).unwrap();
    assert_eq!(e["iteration_number"].value(), 3.0, "{text}");
    assert_well_formed(&text);
    let summary = monitor.summary();
    assert_eq!(summary.iterations, 3);
    let mean = summary.mean_execution_time_seconds.unwrap();
    assert!(mean.is_finite() && mean <= 1e9, "{mean}");
    monitor.shutdown();
}
