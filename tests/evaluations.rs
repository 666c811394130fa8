//! Evaluations end to end in one process: protocol lines through the intake and the
//! Rust guard become evaluations the monitor applies, and what it exports stays a
//! fixed set of series however many evaluations, and however bad, it is sent.

#[path = "support/quiet.rs"]
mod quiet;

use std::collections::BTreeSet;

use loopwatch::Monitor;
use quiet::quiet_monitor;

/// Every series of the exposition (name and labels), without values.
fn series(monitor: &Monitor) -> BTreeSet<String> {
    monitor
        .render_metrics()
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| line.rsplit_once(' ').unwrap().0.to_string())
        .collect()
}

/// The value of one series of the exposition.
fn value(monitor: &Monitor, series: &str) -> f64 {
    let text = monitor.render_metrics().unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn protocol_lines_become_evaluations() {
    let monitor = quiet_monitor().build().unwrap();
    let intake = monitor.supervision().intake();
    intake.handle_line(
        br#"{"v":1,"type":"evaluation_start","id":"prog-1","pid":4242,"worker":"pool-1","queued":1764380000.0,"t":1764380002.5}"#,
    );
    intake.handle_line(
        br#"{"v":1,"type":"evaluation_start","id":"prog-2","pid":4243,"t":1764380010.0}"#,
    );
    assert_eq!(value(&monitor, "loopwatch_evaluations_in_flight"), 2.0);
    assert_eq!(value(&monitor, "loopwatch_evaluation_workers"), 2.0);
    assert_eq!(
        value(&monitor, "loopwatch_evaluation_worker_occupancy"),
        1.0
    );
    // Timed by the loop's clock: 0.25 s and 1 s; prog-1 queued 2.5 s before its start.
    intake.handle_line(
        br#"{"v":1,"type":"evaluation_end","id":"prog-1","outcome":"ok","t":1764380002.75}"#,
    );
    intake.handle_line(
        br#"{"v":1,"type":"evaluation_end","id":"prog-2","outcome":"failed","reason":"SyntaxError","t":1764380011.0}"#,
    );
    assert_eq!(value(&monitor, "loopwatch_evaluations_in_flight"), 0.0);
    assert_eq!(
        value(&monitor, "loopwatch_evaluations_total{outcome=\"ok\"}"),
        1.0
    );
    assert_eq!(
        value(&monitor, "loopwatch_evaluations_total{outcome=\"failed\"}"),
        1.0
    );
    assert_eq!(
        value(&monitor, "loopwatch_evaluation_duration_seconds_count"),
        2.0
    );
    assert_eq!(
        value(
            &monitor,
            "loopwatch_evaluation_duration_seconds_bucket{le=\"0.3\"}"
        ),
        1.0,
        "prog-1 took 0.25 s by the loop's clock"
    );
    assert_eq!(
        value(&monitor, "loopwatch_evaluation_duration_seconds_sum"),
        1.25,
        "and prog-2 1 s"
    );
    assert_eq!(
        value(&monitor, "loopwatch_evaluation_queue_wait_seconds_sum"),
        2.5
    );
    assert_eq!(
        value(&monitor, "loopwatch_evaluation_worker_occupancy"),
        0.0
    );
    // An end without a start, and a second start of an id in flight: counted.
    intake.handle_line(br#"{"v":1,"type":"evaluation_end","id":"ghost","outcome":"timeout"}"#);
    intake.handle_line(br#"{"v":1,"type":"evaluation_start","id":"prog-3"}"#);
    intake.handle_line(br#"{"v":1,"type":"evaluation_start","id":"prog-3"}"#);
    let rejected = |reason: &str| {
        value(
            &monitor,
            &format!(
                "loopwatch_rejected_observations_total{{field=\"evaluation\",reason=\"{reason}\"}}"
            ),
        )
    };
    assert_eq!(rejected("unknown_id"), 1.0);
    assert_eq!(rejected("duplicate_id"), 1.0);
    assert_eq!(value(&monitor, "loopwatch_evaluations_in_flight"), 1.0);
    monitor.shutdown();
}

#[test]
fn the_rust_guard_ends_a_dropped_evaluation_as_failed() {
    let monitor = quiet_monitor().build().unwrap();
    {
        let iteration = monitor.start_iteration();
        let kept = iteration.evaluation("outlives-its-iteration").pid(7);
        {
            let _dropped = iteration.evaluation("dropped").worker("w1");
        }
        iteration.finish();
        assert_eq!(value(&monitor, "loopwatch_evaluations_in_flight"), 1.0);
        kept.timeout();
    }
    monitor
        .evaluation("queued")
        .queued_for(std::time::Duration::from_secs(3))
        .ok();
    for (outcome, count) in [
        ("failed", 1.0),
        ("timeout", 1.0),
        ("ok", 1.0),
        ("killed", 0.0),
    ] {
        assert_eq!(
            value(
                &monitor,
                &format!("loopwatch_evaluations_total{{outcome=\"{outcome}\"}}")
            ),
            count,
            "{outcome}"
        );
    }
    assert_eq!(value(&monitor, "loopwatch_evaluations_killed_total"), 0.0);
    assert_eq!(
        value(&monitor, "loopwatch_evaluation_queue_wait_seconds_sum"),
        3.0
    );
    monitor.shutdown();
}

/// 100,000 evaluations with unique ids, from the guard and from protocol lines, a
/// third never ended and ends without a start among them: the exposition's series
/// are the same set after them as after the first few.
#[test]
fn a_hundred_thousand_unique_ids_leave_the_series_fixed() {
    let monitor = quiet_monitor().build().unwrap();
    let intake = monitor.supervision().intake();
    let mut hung = Vec::new();
    let mut run = |from: u32, to: u32| {
        for i in from..to {
            let id = format!("prog-{i}");
            match i % 3 {
                0 => hung.push(monitor.evaluation(&id).pid(1000 + i % 500)),
                1 => monitor
                    .evaluation(&id)
                    .worker(&format!("w{}", i % 5000))
                    .ok(),
                _ => {
                    intake.handle_line(
                        format!(r#"{{"v":1,"type":"evaluation_start","id":"{id}","queued":1.0}}"#)
                            .as_bytes(),
                    );
                    intake.handle_line(
                        format!(
                            r#"{{"v":1,"type":"evaluation_end","id":"{id}","outcome":"timeout"}}"#
                        )
                        .as_bytes(),
                    );
                    intake.handle_line(
                        format!(
                            r#"{{"v":1,"type":"evaluation_end","id":"ghost-{i}","outcome":"ok"}}"#
                        )
                        .as_bytes(),
                    );
                }
            }
        }
    };
    run(0, 30);
    let first = series(&monitor);
    run(30, 100_000);
    let after = series(&monitor);
    assert_eq!(first, after, "the same series");
    assert!(
        !after.iter().any(|s| s.contains("prog-")),
        "no series per evaluation"
    );
    assert_eq!(value(&monitor, "loopwatch_evaluations_in_flight"), 10_000.0);
    assert!(
        value(
            &monitor,
            "loopwatch_rejected_observations_total{field=\"evaluation\",reason=\"over_limit\"}"
        ) > 20_000.0
    );
    drop(hung);
    monitor.shutdown();
}

/// The start time of the process an evaluation names is read when its start (or
/// its pid) arrives, and carried by the hung evaluation a supervisor acts on: none
/// for a pid under which nothing ran then.
#[test]
fn a_reported_pid_is_pinned_to_its_process_by_start_time_on_receipt() {
    let thresholds = loopwatch::Thresholds::default()
        .with_evaluation_floor(std::time::Duration::from_millis(1))
        .unwrap();
    let monitor = quiet_monitor()
        .sample_interval(std::time::Duration::from_millis(20))
        .thresholds(thresholds)
        .build()
        .unwrap();
    let supervision = monitor.supervision();
    let intake = supervision.intake();
    let me = std::process::id();
    let mut exited = std::process::Command::new("true").spawn().unwrap();
    let gone = exited.id();
    exited.wait().unwrap();
    for (id, pid) in [("mine", me), ("gone", gone)] {
        intake.handle_line(
            format!(r#"{{"v":1,"type":"evaluation_start","id":"{id}","pid":{pid}}}"#).as_bytes(),
        );
    }
    let guarded = monitor.evaluation("guarded").pid(me);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let hung = loop {
        let hung = supervision.hung_evaluations();
        if hung.len() == 3 {
            break hung;
        }
        assert!(std::time::Instant::now() < deadline, "{hung:?}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let mine = loopwatch::cleanup::ProcessId::running(me)
        .unwrap()
        .start_ticks;
    let pinned: Vec<(&str, Option<u64>)> = hung
        .iter()
        .map(|h| (h.id.as_str(), h.pid_start_ticks))
        .collect();
    assert_eq!(
        pinned,
        [
            ("mine", Some(mine)),
            ("gone", None),
            ("guarded", Some(mine))
        ]
    );
    drop(guarded);
    monitor.shutdown();
}
