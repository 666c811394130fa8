//! Table-driven tests of each rule at its boundary.

use std::time::Duration;

use super::*;

fn defaults() -> Thresholds {
    Thresholds::default()
}

/// `seconds` after the clock's start.
fn at(seconds: u64) -> Moment {
    Moment::new(
        Duration::from_secs(seconds),
        std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(seconds),
    )
}

/// GPUMemoryHigh: held above the fraction for `gpu_memory_for` on a GPU the loop
/// uses fires; a dip below starts the wait again; a GPU the loop does not use (no
/// fraction) clears it.
#[test]
fn gpu_memory_high_fires_once_held_and_a_dip_starts_the_wait_again() {
    let th = defaults();
    let (full, ok) = (Some(Some(0.97)), Some(Some(0.5)));
    let mut e = Evaluator::new(&th);
    let state = |e: &Evaluator| e.states()[AlertName::GPUMemoryHigh];
    e.on_gpu(full, 0, &th, at(0));
    assert_eq!(state(&e), AlertState::Pending);
    e.on_gpu(ok, 0, &th, at(30));
    assert_eq!(state(&e), AlertState::Inactive);
    e.on_gpu(full, 0, &th, at(40));
    e.on_gpu(full, 0, &th, at(99));
    assert_eq!(state(&e), AlertState::Pending, "59 s since the dip");
    e.on_gpu(None, 3, &th, at(100));
    assert_eq!(
        state(&e),
        AlertState::Pending,
        "an Xid error brings no memory reading"
    );
    e.on_gpu(full, 0, &th, at(101));
    assert_eq!(state(&e), AlertState::Firing, "held for 61 s");
    e.on_gpu(Some(None), 0, &th, at(102));
    assert_eq!(state(&e), AlertState::Inactive, "the loop left the GPU");
}

/// GPUErrors: fires with the count of errors in the window, resolves once the last
/// is five minutes old.
#[test]
fn gpu_errors_fire_with_the_count_and_resolve_after_the_window() {
    let th = defaults();
    let mut e = Evaluator::new(&th);
    let state = |e: &Evaluator| e.states()[AlertName::GPUErrors];
    e.on_gpu(Some(None), 0, &th, at(0));
    assert_eq!(state(&e), AlertState::Inactive);
    let fired = e.on_gpu(None, 1, &th, at(10));
    let transition = fired
        .transitions
        .iter()
        .find(|t| t.alert == AlertName::GPUErrors)
        .expect("GPUErrors fired");
    assert_eq!(
        (transition.state, transition.value),
        (AlertState::Firing, 1.0)
    );
    e.on_gpu(Some(None), 2, &th, at(100));
    assert_eq!(state(&e), AlertState::Firing);
    e.on_gpu(Some(None), 0, &th, at(309));
    assert_eq!(
        state(&e),
        AlertState::Firing,
        "the errors at 100 s are in the window"
    );
    e.on_gpu(Some(None), 0, &th, at(400));
    assert_eq!(state(&e), AlertState::Inactive);
}

/// GPUErrors' count saturates: errors near the top of u64 never panic.
#[test]
fn gpu_errors_near_the_top_of_u64_saturate() {
    let th = defaults();
    let mut e = Evaluator::new(&th);
    e.on_gpu(None, u64::MAX, &th, at(0));
    e.on_gpu(None, u64::MAX, &th, at(1));
    assert_eq!(e.states()[AlertName::GPUErrors], AlertState::Firing);
}

/// A moment for rules that do not look at the clock.
fn now() -> Moment {
    Moment::new(Duration::ZERO, std::time::SystemTime::UNIX_EPOCH)
}

fn summary(number: u64) -> IterationSummary {
    IterationSummary {
        number,
        duration: Duration::from_millis(100),
        successes: 8,
        failures: 2,
        mean_sharpe: Some(1.0),
        mean_max_drawdown: Some(0.1),
        diversity: Some(0.5),
        unique_strategies: Some(8),
        champion_changed: false,
        champion_staleness: 0,
    }
}

fn fired(findings: &Findings, alert: AlertName) -> bool {
    findings
        .transitions
        .iter()
        .any(|t| t.alert == alert && t.state == AlertState::Firing)
}

/// Runs `n` iterations shaped by `shape` and reports whether `alert` fired at any point
/// and whether it is firing at the end.
fn run(alert: AlertName, n: u64, shape: impl Fn(u64, &mut IterationSummary)) -> (bool, AlertState) {
    let mut evaluator = Evaluator::new(&defaults());
    let mut ever = false;
    for i in 1..=n {
        let mut s = summary(i);
        shape(i, &mut s);
        ever |= fired(&evaluator.on_iteration(&s, &defaults(), now()), alert);
    }
    (ever, evaluator.states()[alert])
}

#[test]
fn diversity_collapse_needs_five_consecutive_iterations_below_the_floor() {
    let cases = [
        (4, 0.05, false),
        (5, 0.05, true),
        (5, 0.0999, true),
        (5, 0.1, false), // at the floor is not below it
        (20, 0.2, false),
    ];
    for (iterations, diversity, expect) in cases {
        let (ever, _) = run(AlertName::DiversityCollapse, iterations, |_, s| {
            s.diversity = Some(diversity)
        });
        assert_eq!(ever, expect, "{iterations} iterations at {diversity}");
    }
    // A healthy iteration in between breaks the streak.
    let (ever, _) = run(AlertName::DiversityCollapse, 9, |i, s| {
        s.diversity = Some(if i == 5 { 0.5 } else { 0.05 })
    });
    assert!(!ever);
    // An iteration that reports no diversity neither extends nor breaks it.
    let (ever, state) = run(AlertName::DiversityCollapse, 6, |i, s| {
        s.diversity = if i == 3 { None } else { Some(0.05) }
    });
    assert!(ever);
    assert_eq!(state, AlertState::Firing);
}

#[test]
fn champion_staleness_fires_at_twenty() {
    for (staleness, expect) in [(19, false), (20, true), (35, true)] {
        let (ever, _) = run(AlertName::ChampionStaleness, 1, |_, s| {
            s.champion_staleness = staleness
        });
        assert_eq!(ever, expect, "staleness {staleness}");
    }
}

#[test]
fn low_success_rate_needs_a_full_window_strictly_below_the_floor() {
    // (iterations, successes, failures per iteration, fires)
    let cases = [
        (10, 2, 8, false),  // exactly 0.2
        (10, 1, 9, true),   // 0.1
        (9, 0, 10, false),  // window not yet full: pending only
        (10, 19, 81, true), // 0.19
    ];
    for (iterations, ok, failed, expect) in cases {
        let (ever, state) = run(AlertName::LowSuccessRate, iterations, |_, s| {
            s.successes = ok;
            s.failures = failed;
        });
        assert_eq!(
            ever,
            expect,
            "{iterations} iterations of {ok}/{}",
            ok + failed
        );
        if iterations < 10 && ok * 5 < ok + failed {
            assert_eq!(state, AlertState::Pending);
        }
    }
}

#[test]
fn high_memory_fires_above_eighty_percent_with_hysteresis() {
    let total = 100_000u64;
    let mut evaluator = Evaluator::new(&defaults());
    assert!(
        !fired(
            &evaluator.on_host_memory(79_900, total, &defaults(), now()),
            AlertName::HighMemoryUsage
        ),
        "79.9%"
    );
    assert!(
        fired(
            &evaluator.on_host_memory(80_100, total, &defaults(), now()),
            AlertName::HighMemoryUsage
        ),
        "80.1%"
    );
    // Hovering just below the threshold does not resolve it …
    assert!(evaluator
        .on_host_memory(79_000, total, &defaults(), now())
        .transitions
        .is_empty());
    assert!(
        evaluator
            .on_host_memory(80_500, total, &defaults(), now())
            .transitions
            .is_empty(),
        "fires once"
    );
    // … falling below the clear fraction does.
    let resolved = evaluator.on_host_memory(77_000, total, &defaults(), now());
    assert!(resolved.transitions[0].is_resolution());
    assert_eq!(
        evaluator.states()[AlertName::HighMemoryUsage],
        AlertState::Inactive
    );
}

#[test]
fn cleanup_failures_fire_above_three_orphans() {
    for (orphans, expect) in [(3, false), (4, true)] {
        let mut evaluator = Evaluator::new(&defaults());
        assert_eq!(
            fired(
                &evaluator.on_orphans(orphans, &defaults(), now()),
                AlertName::ContainerCleanupFailures
            ),
            expect,
            "{orphans}"
        );
    }
}

fn warnings_after(values: &[(f64, f64)]) -> Vec<WarningChange> {
    // (sharpe, seconds) per iteration; the first 10 form the baseline.
    let mut evaluator = Evaluator::new(&defaults());
    let mut out = Vec::new();
    for (i, &(sharpe, seconds)) in values.iter().enumerate() {
        let mut s = summary(i as u64 + 1);
        s.mean_sharpe = Some(sharpe);
        s.duration = Duration::from_secs_f64(seconds);
        out.extend(evaluator.on_iteration(&s, &defaults(), now()).warnings);
    }
    out
}

#[test]
fn degradation_is_measured_against_the_first_full_window_sign_safely() {
    // Baseline Sharpe 1.0: a window mean of 0.81 is fine, 0.79 is degraded.
    let mut v = vec![(1.0, 0.1); 10];
    v.extend(vec![(0.81, 0.1); 10]);
    assert!(warnings_after(&v).is_empty());
    let mut v = vec![(1.0, 0.1); 10];
    v.extend(vec![(0.79, 0.1); 10]);
    let w = warnings_after(&v);
    assert_eq!(w.len(), 1, "logged once, not every iteration: {w:?}");
    assert_eq!(w[0].watched, Watched::AvgSharpe);
    assert!(w[0].started);
    // A negative baseline: -1.0 → worse is below -1.2, better (-0.5) is fine.
    let mut v = vec![(-1.0, 0.1); 10];
    v.extend(vec![(-0.5, 0.1); 10]);
    assert!(warnings_after(&v).is_empty());
    let mut v = vec![(-1.0, 0.1); 10];
    v.extend(vec![(-1.3, 0.1); 10]);
    assert_eq!(warnings_after(&v).len(), 1);
    // A baseline near zero uses the floor: 0.01 → limit 0.01 - 0.2 * 0.1 = -0.01.
    let mut v = vec![(0.01, 0.1); 10];
    v.extend(vec![(0.0, 0.1); 10]);
    assert!(
        warnings_after(&v).is_empty(),
        "noise around zero is not a degradation"
    );
    // Hovering just above the limit does not clear it (hysteresis) …
    let mut v = vec![(1.0, 0.1); 10];
    v.extend(vec![(0.7, 0.1); 10]);
    v.extend(vec![(0.85, 0.1); 10]);
    assert_eq!(warnings_after(&v).len(), 1);
    // … recovery clears it, once.
    let mut v = vec![(1.0, 0.1); 10];
    v.extend(vec![(0.5, 0.1); 10]);
    v.extend(vec![(1.0, 0.1); 10]);
    let w = warnings_after(&v);
    assert_eq!(
        w.iter().map(|w| w.started).collect::<Vec<_>>(),
        vec![true, false]
    );
}

#[test]
fn slowdown_is_more_than_half_again_the_baseline_time() {
    let mut v = vec![(1.0, 1.0); 10];
    v.extend(vec![(1.0, 1.5); 10]);
    assert!(
        warnings_after(&v).is_empty(),
        "exactly 1.5x is not more than 50% slower"
    );
    let mut v = vec![(1.0, 1.0); 10];
    v.extend(vec![(1.0, 1.6); 10]);
    let w = warnings_after(&v);
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].watched, Watched::ExecutionTime);
    assert_eq!(w[0].watched.warning(), "Performance slowdown detected");
}

#[test]
fn thresholds_are_configurable() {
    let thresholds = Thresholds::default()
        .with_staleness_iterations(3)
        .unwrap()
        .with_diversity_iterations(2)
        .unwrap();
    let mut evaluator = Evaluator::new(&thresholds);
    let mut s = summary(1);
    s.champion_staleness = 3;
    s.diversity = Some(0.0);
    evaluator.on_iteration(&s, &thresholds, now());
    s.number = 2;
    let findings = evaluator.on_iteration(&s, &thresholds, now());
    assert!(fired(&findings, AlertName::DiversityCollapse));
    assert_eq!(
        evaluator.states()[AlertName::ChampionStaleness],
        AlertState::Firing
    );
}

#[test]
fn a_stall_is_a_wait_beyond_ten_times_the_mean_and_at_least_the_floor() {
    let th = defaults().with_stall_floor(Duration::from_secs(2)).unwrap();
    let mut evaluator = Evaluator::new(&th);
    let running = |secs: f64| Activity {
        running_for: Some(Duration::from_secs_f64(secs)),
        ..Activity::default()
    };
    // No iteration completed yet: the floor alone.
    assert!(!fired(
        &evaluator.on_clock(running(1.9), &th, now()),
        AlertName::LoopStalled
    ));
    assert!(fired(
        &evaluator.on_clock(running(2.1), &th, now()),
        AlertName::LoopStalled
    ));
    let resolved = evaluator.on_clock(Activity::default(), &th, now());
    assert!(
        resolved.transitions[0].is_resolution(),
        "resolves when it finishes"
    );
    // Iterations of 0.5 s: the limit is 10 x 0.5 = 5 s, above the 2 s floor.
    for i in 1..=10 {
        let mut s = summary(i);
        s.duration = Duration::from_millis(500);
        evaluator.on_iteration(&s, &th, now());
    }
    assert_eq!(evaluator.stall_limit(&th), Duration::from_secs(5));
    assert!(!fired(
        &evaluator.on_clock(running(4.9), &th, now()),
        AlertName::LoopStalled
    ));
    let stuck_between = Activity {
        idle_for: Some(Duration::from_secs(6)),
        ..Activity::default()
    };
    let findings = evaluator.on_clock(stuck_between, &th, now());
    assert!(
        fired(&findings, AlertName::LoopStalled),
        "stuck between iterations"
    );
    assert_eq!(findings.transitions[0].threshold, 5.0);
    // Once the loop said it is done, waiting is not a stall.
    let done = Activity {
        done: true,
        ..stuck_between
    };
    assert!(evaluator.on_clock(done, &th, now()).transitions[0].is_resolution());
}

/// Warnings on diversity after a baseline window at `baseline` and a window at `then`.
fn diversity_warnings(baseline: f64, then: f64) -> Vec<WarningChange> {
    let mut evaluator = Evaluator::new(&defaults());
    let mut out = Vec::new();
    for i in 1..=20 {
        let mut s = summary(i);
        s.diversity = Some(if i <= 10 { baseline } else { then });
        out.extend(evaluator.on_iteration(&s, &defaults(), now()).warnings);
    }
    out.retain(|w| w.watched == Watched::AvgDiversity);
    out
}

#[test]
fn diversity_degrades_at_twenty_percent_of_its_own_baseline_with_no_floor() {
    // A baseline of 0.0435: the limit is 0.0348 (the old floor of 0.1 put it at 0.0235).
    assert!(diversity_warnings(0.0435, 0.0349).is_empty(), "19.8% lower");
    let w = diversity_warnings(0.0435, 0.0347);
    assert_eq!(w.len(), 1, "20.2% lower");
    assert!((w[0].limit - 0.0348).abs() < 1e-12, "{}", w[0].limit);
    assert!(diversity_warnings(0.5, 0.401).is_empty());
    assert_eq!(diversity_warnings(0.5, 0.399).len(), 1);
}

#[test]
fn success_rate_degrades_at_twenty_percent_of_its_own_baseline() {
    // Baseline 8/10 = 0.8: the limit is 0.64.
    let run = |then_ok: u64| {
        let mut evaluator = Evaluator::new(&defaults());
        let mut out = Vec::new();
        for i in 1..=20 {
            let mut s = summary(i);
            s.successes = if i <= 10 { 80 } else { then_ok };
            s.failures = 100 - s.successes;
            out.extend(evaluator.on_iteration(&s, &defaults(), now()).warnings);
        }
        out.retain(|w| w.watched == Watched::SuccessRate);
        out
    };
    assert!(run(65).is_empty(), "0.65 is within 20% of 0.8");
    let w = run(63);
    assert_eq!(w.len(), 1, "0.63 is not");
    assert!((w[0].limit - 0.64).abs() < 1e-12, "{}", w[0].limit);
}

#[test]
fn sharpe_keeps_its_floor_near_zero() {
    // A Sharpe baseline of 0.05 is measured against the 0.1 floor: limit 0.05 - 0.02.
    let mut v = vec![(0.05, 0.1); 10];
    v.extend(vec![(0.031, 0.1); 10]);
    assert!(warnings_after(&v).is_empty());
    let mut v = vec![(0.05, 0.1); 10];
    v.extend(vec![(0.029, 0.1); 10]);
    assert_eq!(warnings_after(&v).len(), 1);
}

/// Every alert the table marks as raised in process fires from its evaluation. The
/// match has no wildcard: a new alert does not compile until it has a case here.
#[test]
fn every_alert_fires_in_process() {
    let th = defaults();
    for alert in AlertName::ALL {
        let mut evaluator = Evaluator::new(&th);
        let findings = match alert {
            AlertName::HighMemoryUsage => evaluator.on_host_memory(90, 100, &th, now()),
            AlertName::DiversityCollapse => {
                let mut last = Findings::default();
                for i in 1..=th.diversity_iterations() {
                    let mut s = summary(i);
                    s.diversity = Some(0.0);
                    last = evaluator.on_iteration(&s, &th, now());
                }
                last
            }
            AlertName::ChampionStaleness => {
                let mut s = summary(1);
                s.champion_staleness = th.staleness_iterations();
                evaluator.on_iteration(&s, &th, now())
            }
            AlertName::LowSuccessRate => {
                let mut last = Findings::default();
                for i in 1..=th.window() {
                    let mut s = summary(i);
                    s.successes = 0;
                    last = evaluator.on_iteration(&s, &th, now());
                }
                last
            }
            AlertName::ContainerCleanupFailures => {
                evaluator.on_orphans(th.orphan_limit() + 1, &th, now())
            }
            AlertName::LoopStalled => evaluator.on_clock(
                Activity {
                    running_for: Some(th.stall_floor() * 2),
                    ..Activity::default()
                },
                &th,
                now(),
            ),
            AlertName::LoopExited => {
                evaluator.on_exit(&crate::records::LoopExit::new(None, Some(9)), &th, now())
            }
            AlertName::LLMErrors => evaluator.on_llm(
                &crate::llm::meter::LlmEvidence {
                    recent_calls: th.llm_error_calls(),
                    recent_failures: th.llm_error_calls(),
                    ..Default::default()
                },
                &th,
                now(),
            ),
            AlertName::LLMSpendWithoutProgress => {
                let th = th.clone().with_llm_spend_without_progress_usd(5.0).unwrap();
                evaluator.on_llm(
                    &crate::llm::meter::LlmEvidence {
                        spend_since_champion_usd: 5.0,
                        spend_usd: 5.0,
                        ..Default::default()
                    },
                    &th,
                    now(),
                )
            }
            AlertName::LLMBudget => {
                let th = th.clone().with_llm_budget_usd(10.0).unwrap();
                evaluator.on_llm(
                    &crate::llm::meter::LlmEvidence {
                        spend_usd: 10.0,
                        budget_spend_usd: 10.0,
                        ..Default::default()
                    },
                    &th,
                    now(),
                )
            }
            AlertName::LLMRateLimitNear => {
                let low = crate::llm::meter::LlmEvidence {
                    headroom: Some(th.llm_headroom_fraction() / 2.0),
                    ..Default::default()
                };
                let first = evaluator.on_llm(&low, &th, now());
                assert!(!fired(&first, alert), "fired before it was sustained");
                let later = Moment::new(th.llm_headroom_for(), std::time::SystemTime::UNIX_EPOCH);
                evaluator.on_llm(&low, &th, later)
            }
            AlertName::LoopCrashLooping => {
                for _ in 1..th.crash_loop_restarts() {
                    let findings = evaluator.on_restart(&th, now());
                    assert!(!fired(&findings, alert), "fired below the threshold");
                }
                evaluator.on_restart(&th, now())
            }
            AlertName::EvaluationHung => {
                let limit = super::evaluation_limit(None, &th);
                let at_limit =
                    evaluator.on_evaluations(Some(limit), limit, || "e".into(), &th, now());
                assert!(!fired(&at_limit, alert), "fired at the limit");
                evaluator.on_evaluations(
                    Some(limit + Duration::from_millis(1)),
                    limit,
                    || "e".into(),
                    &th,
                    now(),
                )
            }
            AlertName::GPUMemoryHigh => {
                let full = Some(Some(th.gpu_memory_fraction() + 0.01));
                let first = evaluator.on_gpu(full, 0, &th, now());
                assert!(!fired(&first, alert), "fired before it was held");
                let held = Moment::new(th.gpu_memory_for(), std::time::SystemTime::UNIX_EPOCH);
                evaluator.on_gpu(full, 0, &th, held)
            }
            AlertName::GPUErrors => evaluator.on_gpu(None, 1, &th, now()),
            AlertName::LLMServerSaturated => {
                let held = th.llm_server_saturated_for();
                let short = evaluator.on_model_servers(
                    Some((held - Duration::from_millis(1), 0.95)),
                    || "qwen".into(),
                    &th,
                    now(),
                );
                assert!(
                    !fired(&short, alert),
                    "fired before it was held long enough"
                );
                assert_eq!(evaluator.states()[alert], AlertState::Pending);
                let findings =
                    evaluator.on_model_servers(Some((held, 0.95)), || "qwen".into(), &th, now());
                assert_eq!(
                    findings.transitions[0].subject.as_deref(),
                    Some("qwen"),
                    "the server is named"
                );
                findings
            }
        };
        assert!(fired(&findings, alert), "{alert:?} did not fire");
        assert_eq!(evaluator.states()[alert], AlertState::Firing);
    }
}

/// LLMRateLimitNear: below the fraction without a break for `llm_headroom_for`; a
/// reading at the fraction or none (the limits reset) breaks it, and it starts again.
#[test]
fn llm_rate_limit_near_needs_its_headroom_low_without_a_break() {
    let th = defaults();
    let mut evaluator = Evaluator::new(&th);
    let at = |seconds: u64| {
        Moment::new(
            Duration::from_secs(seconds),
            std::time::SystemTime::UNIX_EPOCH,
        )
    };
    let evidence = |headroom: Option<f64>| crate::llm::meter::LlmEvidence {
        headroom,
        ..Default::default()
    };
    let fraction = th.llm_headroom_fraction() / 2.0;
    let low = Some(fraction);
    let sustained = th.llm_headroom_for().as_secs();
    let alert = AlertName::LLMRateLimitNear;
    evaluator.on_llm(&evidence(low), &th, at(0));
    assert_eq!(evaluator.states()[alert], AlertState::Pending);
    // At the fraction: not below it; the streak is broken.
    evaluator.on_llm(
        &evidence(Some(th.llm_headroom_fraction())),
        &th,
        at(sustained - 1),
    );
    assert_eq!(evaluator.states()[alert], AlertState::Inactive);
    evaluator.on_llm(&evidence(low), &th, at(sustained));
    evaluator.on_llm(&evidence(low), &th, at(2 * sustained - 1));
    assert_eq!(evaluator.states()[alert], AlertState::Pending, "not yet");
    let fired = evaluator.on_llm(&evidence(low), &th, at(2 * sustained));
    assert_eq!(evaluator.states()[alert], AlertState::Firing);
    assert_eq!(fired.transitions[0].value, fraction);
    // Every limit reset: nothing known is low; it resolves.
    let resolved = evaluator.on_llm(&evidence(None), &th, at(3 * sustained));
    assert!(resolved.transitions[0].is_resolution());
}

/// The limit of EvaluationHung: the floor until the p95 is known, then the factor
/// times the p95 when that is longer.
#[test]
fn the_evaluation_limit_is_the_factor_times_the_p95_at_least_the_floor() {
    let th = defaults();
    let floor = th.evaluation_floor();
    assert_eq!(super::evaluation_limit(None, &th), floor);
    assert_eq!(
        super::evaluation_limit(Some(Duration::from_secs(10)), &th),
        floor,
        "5 × 10 s is below the floor"
    );
    assert_eq!(
        super::evaluation_limit(Some(Duration::from_secs(200)), &th),
        Duration::from_secs(1000)
    );
    let mut evaluator = Evaluator::new(&th);
    let fired = evaluator.on_evaluations(
        Some(floor * 2),
        floor,
        || "evaluation prog-1 (pid 9)".into(),
        &th,
        now(),
    );
    assert_eq!(
        fired.transitions[0].subject.as_deref(),
        Some("evaluation prog-1 (pid 9)")
    );
    let resolved = evaluator.on_evaluations(None, floor, || unreachable!(), &th, now());
    assert!(resolved.transitions[0].is_resolution());
}
