//! `apply`, tested as the evaluator is: a sequence of events in, the findings and the
//! state out. No monitor, no threads, no clock: every time is the events'.

use std::time::{Duration, SystemTime};

use super::*;
use crate::export::GpuReadings;
use crate::llm::{LlmConfig, LlmError, Price};
use crate::monitor::reasons::ReasonChunk;

/// The moment `secs` seconds after the clock started (wall clock: a fixed day).
fn at(secs: f64) -> Moment {
    let mono = Duration::from_secs_f64(secs);
    Moment::new(
        mono,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000) + mono,
    )
}

fn started() -> SystemTime {
    at(0.0).wall
}

/// An iteration `number` that ran from `from` to `to` seconds, with 3 successes and
/// 1 failure.
fn iteration(number: u64, to: f64, duration: f64) -> Completed {
    Completed {
        summary: IterationSummary {
            number,
            duration: Duration::from_secs_f64(duration),
            successes: 3,
            failures: 1,
            mean_sharpe: Some(1.0),
            mean_max_drawdown: Some(0.1),
            diversity: Some(0.5),
            unique_strategies: Some(4),
            champion_changed: false,
            champion_staleness: 0,
        },
        count: 1,
        duration: Duration::from_secs_f64(duration),
        reasons: ReasonChunk::default(),
        best_sharpe: Some(1.5),
        ended: at(to),
    }
}

/// Applies the events in order; returns every transition as (alert, state).
fn apply_all(
    state: &mut RunState,
    th: &Thresholds,
    events: impl IntoIterator<Item = Event>,
) -> Vec<(AlertName, AlertState)> {
    events
        .into_iter()
        .flat_map(|event| state.apply(event, th).findings.transitions)
        .map(|t| (t.alert, t.state))
        .collect()
}

/// Iterations 1..=n of one second each, back to back from 0 s.
fn iterations(n: u64) -> Vec<Event> {
    (1..=n)
        .flat_map(|i| {
            [
                Event::IterationStarted {
                    number: i,
                    at: at(i as f64 - 1.0),
                },
                Event::Iteration(iteration(i, i as f64, 1.0)),
            ]
        })
        .collect()
}

#[test]
fn an_iteration_is_booked_judged_kept_and_published() {
    let th = Thresholds::default();
    let mut state = RunState::new(started(), &th);
    let applied = state.apply(
        Event::IterationStarted {
            number: 1,
            at: at(0.0),
        },
        &th,
    );
    assert!(matches!(
        applied.publish,
        Publish::IterationStarted { number: 1, .. }
    ));
    let applied = state.apply(Event::Iteration(iteration(1, 2.0, 2.0)), &th);
    assert!(
        matches!(applied.publish, Publish::Iteration),
        "an iteration publishes its values: {:?}",
        applied.publish
    );
    let values = state.published().iteration.as_ref().expect("its values");
    assert_eq!(
        (values.summary.number, values.ended),
        (1, unix_seconds(at(2.0).wall))
    );
    assert_eq!(values.judged.rolling.iterations, 1);
    let names = ReasonNames::default();
    let summary = state.summary("run", &names, at(10.0));
    assert_eq!(summary.iterations, 1);
    assert_eq!(
        (summary.strategy_successes, summary.strategy_failures),
        (3, 1)
    );
    assert_eq!(summary.best_sharpe, Some(1.5));
    assert_eq!(summary.elapsed_seconds, 10.0, "as of the reader's moment");
    let history = state.history();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].at, unix_seconds(at(2.0).wall));
}

/// The hub notes the latest start whenever it settles, after the queue: a start
/// noted after its iteration ended, or noted again, changes nothing; a later one
/// seen before an earlier iteration's end stays in progress after it.
#[test]
fn a_start_noted_late_or_twice_changes_nothing() {
    let th = Thresholds::default()
        .with_stall_floor(Duration::from_secs(5))
        .unwrap();
    let mut state = RunState::new(started(), &th);
    state.apply(Event::Iteration(iteration(1, 1.0, 1.0)), &th);
    let late = state.apply(
        Event::IterationStarted {
            number: 1,
            at: at(0.0),
        },
        &th,
    );
    assert!(
        matches!(late.publish, Publish::Nothing),
        "{:?}",
        late.publish
    );
    let idle = state.liveness.activity(at(3.0).mono);
    assert_eq!(idle.idle_for, Some(Duration::from_secs(2)), "{idle:?}");
    // Iteration 3 seen running before iteration 2's end was applied.
    let started = Event::IterationStarted {
        number: 3,
        at: at(4.0),
    };
    assert!(matches!(
        state.apply(started, &th).publish,
        Publish::IterationStarted { number: 3, .. }
    ));
    let again = Event::IterationStarted {
        number: 3,
        at: at(4.0),
    };
    assert!(matches!(state.apply(again, &th).publish, Publish::Nothing));
    let applied = state.apply(Event::Iteration(iteration(2, 3.9, 1.0)), &th);
    assert!(
        matches!(applied.publish, Publish::Iteration),
        "iteration 2 is published"
    );
    let latest = state.published().iteration.as_ref().map(|v| v.latest);
    assert_eq!(
        latest,
        Some(3),
        "the iteration number shown does not go back"
    );
    let running = state.liveness.activity(at(10.0).mono);
    assert_eq!(
        running.running_for,
        Some(Duration::from_secs(6)),
        "{running:?}"
    );
}

#[test]
fn a_stall_fires_on_the_clock_and_ends_when_the_loop_moves() {
    let th = Thresholds::default()
        .with_stall_floor(Duration::from_secs(5))
        .unwrap()
        .with_stall_factor(1.0)
        .unwrap();
    let mut state = RunState::new(started(), &th);
    apply_all(&mut state, &th, iterations(2));
    // Waiting between iterations: 4.9 s is no stall, 5.1 s is (the floor, above the
    // mean iteration of 1 s times the factor).
    assert!(apply_all(&mut state, &th, [Event::Tick { at: at(6.9) }]).is_empty());
    let stalled = state.apply(Event::Tick { at: at(7.1) }, &th);
    let fired = &stalled.findings.transitions;
    assert_eq!(
        fired
            .iter()
            .map(|t| (t.alert, t.state, t.at))
            .collect::<Vec<_>>(),
        [(AlertName::LoopStalled, AlertState::Firing, at(7.1).wall)],
        "fired at the tick's moment"
    );
    assert!(state.is_firing(AlertName::LoopStalled));
    // The loop starts an iteration: the stall is over, at once.
    let resolved = apply_all(
        &mut state,
        &th,
        [Event::IterationStarted {
            number: 3,
            at: at(8.0),
        }],
    );
    assert_eq!(resolved, [(AlertName::LoopStalled, AlertState::Inactive)]);
    // Both are in the event log, at their events' moments.
    let (events, _) = state.events();
    let alerts: Vec<(SystemTime, AlertState)> = events
        .iter()
        .filter_map(|e| match e.kind {
            LogEntryKind::Alert { state, .. } => Some((e.at, state)),
            _ => None,
        })
        .collect();
    assert_eq!(
        alerts,
        [
            (at(7.1).wall, AlertState::Firing),
            (at(8.0).wall, AlertState::Inactive)
        ]
    );
}

#[test]
fn a_loop_that_said_it_is_done_or_cannot_report_never_stalls() {
    let th = Thresholds::default()
        .with_stall_floor(Duration::from_secs(5))
        .unwrap();
    for last in [
        Event::Done { at: at(2.0) },
        Event::LoopCannotReport { at: at(2.0) },
    ] {
        let mut state = RunState::new(started(), &th);
        apply_all(&mut state, &th, iterations(1));
        apply_all(&mut state, &th, [last]);
        assert!(
            apply_all(&mut state, &th, [Event::Tick { at: at(3600.0) }]).is_empty(),
            "an hour of silence is no stall"
        );
    }
    let mut state = RunState::new(started(), &th);
    let applied = state.apply(Event::Done { at: at(1.0) }, &th);
    assert!(matches!(applied.publish, Publish::Done));
    assert!(state.is_done());
    let again = state.apply(Event::Done { at: at(2.0) }, &th);
    assert!(matches!(again.publish, Publish::Nothing), "done once");
}

#[test]
fn restarts_are_counted_exits_kept_and_a_failing_exit_fires() {
    let th = Thresholds::default().with_max_restarts(2).unwrap();
    let mut state = RunState::new(started(), &th);
    apply_all(&mut state, &th, [Event::LoopStarted { at: at(0.0) }]);
    apply_all(&mut state, &th, iterations(1));
    let crashed = LoopExit::new(Some(1), None);
    let applied = state.apply(
        Event::LoopRestarting {
            exit: crashed,
            at: at(2.0),
        },
        &th,
    );
    assert!(
        matches!(applied.publish, Publish::LoopRestarting { exit, evaluations: false } if exit.restarted)
    );
    // Between the processes: waiting is the supervisor's, not a stall.
    assert!(state.liveness.activity(at(500.0).mono).done);
    let applied = state.apply(Event::LoopStarted { at: at(3.0) }, &th);
    assert_eq!(
        applied
            .findings
            .transitions
            .iter()
            .map(|t| (t.alert, t.state))
            .collect::<Vec<_>>(),
        [(AlertName::LoopCrashLooping, AlertState::Firing)],
        "one restart fires with two allowed"
    );
    let Publish::LoopStarted {
        restart: Some((reason, recent)),
        ..
    } = applied.publish
    else {
        panic!("a restart is published: {:?}", applied.publish);
    };
    assert_eq!((reason, recent), (ExitReason::Exited, 1));
    // The restart leaves the window an hour later.
    let window = apply_all(&mut state, &th, [Event::Tick { at: at(3604.0) }]);
    assert!(window.contains(&(AlertName::LoopCrashLooping, AlertState::Inactive)));
    // The new process dies by a signal without having said it was done.
    let killed = LoopExit::new(None, Some(9));
    let applied = state.apply(
        Event::LoopExited {
            exit: killed,
            at: at(3700.0),
        },
        &th,
    );
    assert!(applied
        .findings
        .transitions
        .iter()
        .any(|t| t.alert == AlertName::LoopExited && t.state == AlertState::Firing));
    assert!(matches!(
        applied.publish,
        Publish::LoopExited {
            newly_done: true,
            ..
        }
    ));
    let summary = state.summary("run", &ReasonNames::default(), at(3701.0));
    assert_eq!(summary.exits.len(), 2);
    assert_eq!(summary.loop_exit.map(|e| e.signal), Some(Some(9)));
    let (events, _) = state.events();
    assert!(events.iter().any(|e| matches!(
        e.kind,
        LogEntryKind::Restarted {
            recent_restarts: 1,
            ..
        }
    ) && e.iteration == 1));
}

#[test]
fn an_exit_after_done_is_expected() {
    let th = Thresholds::default();
    let mut state = RunState::new(started(), &th);
    apply_all(&mut state, &th, [Event::Done { at: at(1.0) }]);
    let findings = apply_all(
        &mut state,
        &th,
        [Event::LoopExited {
            exit: LoopExit::new(Some(1), None),
            at: at(2.0),
        }],
    );
    assert!(findings.is_empty(), "{findings:?}");
    assert_eq!(
        state
            .summary("run", &ReasonNames::default(), at(2.0))
            .loop_exit
            .map(|e| e.said_done),
        Some(true)
    );
}

#[test]
fn llm_calls_are_priced_booked_and_judged_by_their_moments() {
    let th = Thresholds::default()
        .with_llm(LlmConfig::default().with_price("m", Price::per_million(1.0, 2.0)))
        .with_llm_budget_usd(5.0)
        .unwrap();
    let mut state = RunState::new(started(), &th);
    let call = |error: Option<LlmError>| {
        let call = LlmCall::new("m", Duration::from_secs(1)).with_tokens(1_000_000, 1_000_000);
        Box::new(match error {
            Some(e) => call.with_error(e),
            None => call,
        })
    };
    let applied = state.apply(
        Event::Llm {
            call: call(None),
            at: at(1.0),
        },
        &th,
    );
    let Publish::Llm(llm) = &applied.publish else {
        panic!("a call is published: {:?}", applied.publish);
    };
    assert_eq!(llm.pricing.cost_usd, Some(3.0));
    assert_eq!(state.published().llm.spend_usd, 3.0);
    // $3 in the first minute: at that rate the $5 budget goes within the hour.
    assert_eq!(
        applied
            .findings
            .transitions
            .iter()
            .map(|t| (t.alert, t.state))
            .collect::<Vec<_>>(),
        [(AlertName::LLMBudget, AlertState::Pending)]
    );
    // Outages: three failed of four is above the half that fires LLMErrors.
    let mut transitions = Vec::new();
    for i in 0..3 {
        transitions.extend(apply_all(
            &mut state,
            &th,
            [Event::Llm {
                call: call(Some(LlmError::Status(503))),
                at: at(2.0 + f64::from(i)),
            }],
        ));
    }
    assert!(transitions.contains(&(AlertName::LLMErrors, AlertState::Firing)));
    assert!(transitions.contains(&(AlertName::LLMBudget, AlertState::Firing)));
    // Fifteen minutes later the failures have left the window: the clock resolves it.
    let later = apply_all(
        &mut state,
        &th,
        [Event::Tick {
            at: at(16.0 * 60.0),
        }],
    );
    assert!(later.contains(&(AlertName::LLMErrors, AlertState::Inactive)));
    let summary = state.summary("run", &ReasonNames::default(), at(16.0 * 60.0));
    assert_eq!((summary.llm.calls, summary.llm.errors), (4, 3));
}

#[test]
fn spend_alerts_say_when_the_spend_is_a_lower_bound() {
    let th = Thresholds::default().with_llm_budget_usd(1.0).unwrap();
    let mut state = RunState::new(started(), &th);
    let priced = LlmCall::new("m", Duration::ZERO).with_cost_usd(2.0);
    let applied = state.apply(
        Event::Llm {
            call: Box::new(priced),
            at: at(1.0),
        },
        &th,
    );
    assert_eq!(applied.findings.transitions[0].note, None);
    let mut state = RunState::new(started(), &th);
    state.apply(
        Event::Llm {
            call: Box::new(LlmCall::new("m", Duration::ZERO).with_abandoned()),
            at: at(0.5),
        },
        &th,
    );
    let applied = state.apply(
        Event::Llm {
            call: Box::new(LlmCall::new("m", Duration::ZERO).with_cost_usd(2.0)),
            at: at(1.0),
        },
        &th,
    );
    let budget = &applied.findings.transitions[0];
    assert_eq!(budget.alert, AlertName::LLMBudget);
    assert_eq!(budget.note, Some(crate::llm::SPEND_LOWER_BOUND));
}

#[test]
fn the_champion_changes_in_the_ledger_and_the_llm_spend_starts_again() {
    let th = Thresholds::default();
    let mut state = RunState::new(started(), &th);
    state.apply(
        Event::Llm {
            call: Box::new(LlmCall::new("m", Duration::ZERO).with_cost_usd(4.0)),
            at: at(1.0),
        },
        &th,
    );
    let applied = state.apply(
        Event::ChampionChanged(ChampionChange {
            champion: "momentum-20".into(),
            iteration: 7,
            changes: 3,
            at: at(2.0),
        }),
        &th,
    );
    assert!(
        matches!(applied.publish, Publish::ChampionChanged { llm: true }),
        "the LLM evidence after the change: {:?}",
        applied.publish
    );
    assert_eq!(state.published().llm.spend_since_champion_usd, 0.0);
    let summary = state.summary("run", &ReasonNames::default(), at(3.0));
    assert_eq!(summary.champion.as_deref(), Some("momentum-20"));
    assert_eq!(
        (summary.champion_since_iteration, summary.champion_changes),
        (Some(7), 3)
    );
    assert_eq!(summary.llm.spend_since_champion_usd, 0.0);
    // A merged batch's three changes are three in the spend per change too, as in
    // summary.champion_changes and loopwatch_champion_changes_total.
    assert_eq!(summary.llm.spend_per_champion_change_usd, Some(4.0 / 3.0));
}

#[test]
fn host_memory_fires_on_a_sample_above_the_limit_and_history_carries_it() {
    let th = Thresholds::default();
    let mut state = RunState::new(started(), &th);
    let sample = crate::sample::HostSample {
        loop_rss_bytes: 123,
        ..Default::default()
    };
    let reading = |used: u64, secs: f64| {
        Event::Host(HostReading {
            sample,
            memory_used: used,
            memory_limit: 100,
            file_descriptors: None,
            at: at(secs),
        })
    };
    assert!(apply_all(&mut state, &th, [reading(79, 1.0)]).is_empty());
    assert_eq!(
        apply_all(&mut state, &th, [reading(81, 2.0)]),
        [(AlertName::HighMemoryUsage, AlertState::Firing)]
    );
    apply_all(&mut state, &th, iterations(1));
    assert_eq!(state.history()[0].memory_usage_bytes, 123.0);
}

/// A run with no iterations still has its samples: one time point per host reading,
/// with the containers, the LLM calls and the alerts as they stood, seconds since the
/// start; bounded over a long run and spread over all of it.
#[test]
fn host_samples_make_a_bounded_time_series_without_iterations() {
    let th = Thresholds::default();
    let mut state = RunState::new(started(), &th);
    let reading = |rss: u64, cpu: f64, secs: f64| {
        Event::Host(HostReading {
            sample: crate::sample::HostSample {
                loop_rss_bytes: rss,
                loop_cpu_percent: cpu,
                ..Default::default()
            },
            memory_used: 10,
            memory_limit: 100,
            file_descriptors: None,
            at: at(secs),
        })
    };
    state.apply(reading(1_000, 5.0, 0.5), &th);
    state.apply(
        Event::Containers {
            reading: ContainerReading {
                up: true,
                source: crate::containers::StatsSource::Cgroup,
                sample: Some(crate::containers::ContainerSample {
                    active: 2,
                    stats: vec![
                        crate::containers::ContainerStat {
                            name: "a".into(),
                            memory_bytes: 5,
                            cpu_percent: Some(10.0),
                        },
                        crate::containers::ContainerStat {
                            name: "b".into(),
                            memory_bytes: 7,
                            cpu_percent: Some(20.0),
                        },
                    ],
                }),
                cleanup_failures: 1,
            },
            at: at(0.7),
        },
        &th,
    );
    let priced = LlmCall::new("m", Duration::from_secs(1))
        .with_tokens(10, 5)
        .with_cost_usd(0.25);
    state.apply(
        Event::Llm {
            call: Box::new(priced),
            at: at(0.8),
        },
        &th,
    );
    state.apply(reading(2_000, 50.0, 1.5), &th);
    let (samples, dropped) = state.samples();
    assert_eq!(dropped, 0);
    assert_eq!(state.history().len(), 0, "no iterations");
    assert_eq!(samples.len(), 2);
    let (first, second) = (samples[0], samples[1]);
    assert_eq!(
        (
            first.elapsed_seconds,
            first.memory_usage_bytes,
            first.cpu_usage_percent
        ),
        (0.5, 1_000.0, 5.0)
    );
    assert_eq!((first.active_containers, first.llm_calls), (0, 0));
    assert_eq!(second.elapsed_seconds, 1.5);
    assert_eq!(second.at, unix_seconds(at(1.5).wall));
    assert_eq!(
        (second.memory_usage_bytes, second.cpu_usage_percent),
        (2_000.0, 50.0)
    );
    assert_eq!(
        (
            second.active_containers,
            second.container_memory_bytes,
            second.container_cpu_percent,
            second.cleanup_failures
        ),
        (2, 12, Some(30.0), 1)
    );
    assert_eq!((second.llm_calls, second.llm_cost_usd), (1, 0.25));

    // A day of samples a second: bounded, the first and the latest kept, evenly.
    for s in 2..86_400u64 {
        state.apply(reading(s, 1.0, s as f64), &th);
    }
    let (samples, dropped) = state.samples();
    assert!(samples.len() <= MAX_TIME_POINTS + 1, "{}", samples.len());
    assert!(samples.len() > MAX_TIME_POINTS / 2, "{}", samples.len());
    assert_eq!(samples.len() as u64 + dropped, 86_400);
    assert_eq!(samples[0].elapsed_seconds, 0.5);
    assert_eq!(samples.last().unwrap().elapsed_seconds, 86_399.0);
    assert!(samples
        .windows(2)
        .all(|w| w[0].elapsed_seconds < w[1].elapsed_seconds));
}

#[test]
fn sweeps_and_samples_keep_the_housekeeping() {
    let th = Thresholds::default();
    let mut state = RunState::new(started(), &th);
    let sweep = |given_up: Vec<(u32, u64)>, left_behind| {
        Event::ProcessSweep(ProcessSweep {
            given_up,
            cleaned: 2,
            failed: 1,
            remaining: 1,
            left_behind,
            at: at(1.0),
        })
    };
    state.apply(sweep(vec![(42, 7)], None), &th);
    state.apply(sweep(vec![], Some(vec![])), &th);
    let tally = state.process_tally();
    assert_eq!(
        (
            tally.cleaned_total,
            tally.failures_total,
            tally.orphaned_now
        ),
        (4, 2, 1)
    );
    assert!(state.processes_given_up().contains(&(42, 7)));
    let reading = |secs: f64| Event::Containers {
        reading: ContainerReading {
            up: true,
            source: crate::containers::StatsSource::Cgroup,
            sample: Some(crate::containers::ContainerSample {
                active: 1,
                stats: vec![crate::containers::ContainerStat {
                    name: "c1".into(),
                    memory_bytes: 5,
                    cpu_percent: None,
                }],
            }),
            cleanup_failures: 0,
        },
        at: at(secs),
    };
    state.apply(reading(10.0), &th);
    state.apply(reading(25.0), &th);
    let live = state.live_containers();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].age_seconds, 15.0, "aged by the samples' moments");
    assert_eq!(
        apply_all(
            &mut state,
            &th,
            [Event::Orphans {
                count: 4,
                at: at(26.0)
            }]
        ),
        [(AlertName::ContainerCleanupFailures, AlertState::Firing)]
    );
}

/// The same events give the same state and findings, whenever they are applied:
/// `apply` reads no clock.
#[test]
fn apply_is_a_function_of_the_events() {
    let th = Thresholds::default()
        .with_stall_floor(Duration::from_secs(1))
        .unwrap();
    let events = || {
        let mut events = iterations(12);
        events.push(Event::Tick { at: at(100.0) });
        events.push(Event::Llm {
            call: Box::new(LlmCall::new("m", Duration::ZERO).with_error(LlmError::Status(500))),
            at: at(101.0),
        });
        events
    };
    let run = || {
        let mut state = RunState::new(started(), &th);
        let findings: Vec<_> = events()
            .into_iter()
            .flat_map(|e| state.apply(e, &th).findings.transitions)
            .collect();
        let summary = state.summary("run", &ReasonNames::default(), at(200.0));
        (findings, summary, state.history(), state.events().0)
    };
    assert_eq!(run(), run());
}

#[test]
fn instrumented_frameworks_are_kept_news_said_once_and_errors_summed() {
    use crate::protocol::{Framework, Instrumentation, InstrumentationState, Message};
    let th = Thresholds::default();
    let mut state = RunState::new(started(), &th);
    let report = |framework, version: &str, state| Instrumentation {
        framework,
        version: version.into(),
        state,
        reason: (state != InstrumentationState::Active).then(|| "version outside".into()),
    };
    let news = |state: &mut RunState, r: Instrumentation, secs: f64| match state
        .apply(
            Event::Reported {
                message: Box::new(Message::Instrumentation(r)),
                at: at(secs),
            },
            &th,
        )
        .publish
    {
        Publish::Instrumentation(news) => news.is_some(),
        other => panic!("{other:?}"),
    };
    let optuna = report(Framework::Optuna, "5.1.0", InstrumentationState::Active);
    assert!(
        news(&mut state, optuna.clone(), 1.0),
        "a first report is news"
    );
    assert!(
        !news(&mut state, optuna, 2.0),
        "the same report again (a restarted loop) is not"
    );
    let deap = report(Framework::Deap, "1.3.0", InstrumentationState::Skipped);
    assert!(news(&mut state, deap.clone(), 3.0));
    assert!(!news(&mut state, deap, 4.0));
    assert!(state.frameworks.is_active(Framework::Optuna));
    assert!(!state.frameworks.is_active(Framework::Deap));

    for (count, expected_total) in [(2, 2), (u64::MAX, u64::MAX)] {
        let applied = state.apply(
            Event::Reported {
                message: Box::new(Message::InstrumentationError {
                    framework: Framework::Other,
                    count,
                }),
                at: at(5.0),
            },
            &th,
        );
        match applied.publish {
            Publish::InstrumentationErrors {
                count: c, total, ..
            } => {
                assert_eq!((c, total), (count, expected_total), "summed, saturating");
            }
            other => panic!("{other:?}"),
        }
    }
    let list = state.instrumentation();
    let names: Vec<&str> = list.iter().map(|f| f.framework).collect();
    assert_eq!(
        names,
        ["optuna", "deap", "other"],
        "in Framework::ALL order"
    );
    assert_eq!(list[0].version.as_deref(), Some("5.1.0"));
    assert_eq!(list[0].state, Some(InstrumentationState::Active));
    assert_eq!(list[1].reason.as_deref(), Some("version outside"));
    assert_eq!(
        (list[2].version.as_deref(), list[2].errors),
        (None, u64::MAX)
    );
    // Nothing of it touches the run's iterations.
    assert_eq!(state.history().len(), 0);
}

/// An iteration with more distinct failure reasons than one event carries sends the
/// rest ahead of it: the run's reasons are the same as if they had come in one.
#[test]
fn failure_reasons_sent_ahead_of_their_iteration_are_booked_with_it() {
    use crate::monitor::reasons::ReasonCounts;
    let th = Thresholds::default();
    let mut state = RunState::new(started(), &th);
    let names = ReasonNames::default();
    let mut counts = ReasonCounts::default();
    for i in 0..9u64 {
        counts.add(names.id(&format!("reason {i}")), i + 1);
    }
    let (first, rest) = ReasonChunk::split(&counts);
    let mut events: Vec<Event> = rest.map(Event::Reasons).collect();
    assert_eq!(
        events.len(),
        2,
        "9 reasons: 4 with the iteration, 5 ahead of it"
    );
    let mut completed = iteration(1, 1.0, 1.0);
    completed.reasons = first;
    events.push(Event::Iteration(completed));
    apply_all(&mut state, &th, events);
    // The next iteration carries only its own.
    apply_all(&mut state, &th, [Event::Iteration(iteration(2, 2.0, 1.0))]);
    let summary = state.summary("run", &names, at(3.0));
    assert_eq!(summary.failure_reasons.len(), 9);
    for i in 0..9u64 {
        assert_eq!(
            summary.failure_reasons[&format!("reason {i}")],
            i + 1,
            "reason {i}"
        );
    }
}

/// A budget that blocks: calls in flight reserve their worst case, a call that
/// would pass the budget with them is deferred (free, not an error, not marked), an
/// ended call's reservation gives way to its cost; once the spend itself reaches the
/// budget, calls are refused for good and booked as `blocked` (the first refusal
/// marked once); a restart of the loop keeps all of it.
#[test]
fn a_blocking_budget_reserves_refuses_and_outlives_a_restart() {
    use crate::llm::{Admission, BudgetAction, CallRequest};
    let th = Thresholds::default()
        .with_llm(LlmConfig::default().with_price("m", Price::per_million(1.0, 1.0)))
        .with_llm_budget_usd(1.0)
        .and_then(|t| t.with_llm_budget_action(BudgetAction::Block))
        .unwrap();
    let mut state = RunState::new(started(), &th);
    // 400 bytes (100 tokens) and at most 374 999 out: 0.375 each at most.
    let request = || Box::new(CallRequest::new("m", 400).with_max_output_tokens(374_900));
    let start = |state: &mut RunState, id: u64, secs: f64| {
        state.apply(
            Event::LlmStarted {
                id,
                request: request(),
                at: at(secs),
            },
            &th,
        );
        state.llm_admission(id)
    };
    let end = |state: &mut RunState, id: u64, secs: f64, tokens: u64| {
        let cost = LlmCall::new("m", Duration::from_secs(1)).with_tokens(tokens, tokens);
        state.apply(
            Event::LlmFinished {
                id,
                call: Box::new(cost),
                at: at(secs),
            },
            &th,
        );
        state.apply(Event::LlmEnded { id, at: at(secs) }, &th);
    };
    assert_eq!(start(&mut state, 1, 1.0), Admission::Admitted(1));
    assert_eq!(start(&mut state, 2, 1.1), Admission::Admitted(2));
    assert_eq!(start(&mut state, 3, 1.2), Admission::Admitted(3));
    let Admission::Blocked(refusal) = start(&mut state, 4, 1.3) else {
        panic!("1.125 reserved turns a fourth away");
    };
    assert!(refusal.deferred, "nothing is spent yet: deferred");
    assert_eq!((refusal.spent_usd, refusal.reserved_usd), (0.0, 1.125));
    // The first call ends: 0.25 booked, its reservation released.
    end(&mut state, 1, 2.0, 125_000);
    assert!(
        matches!(start(&mut state, 5, 2.1), Admission::Blocked(r) if r.deferred),
        "0.25 + 0.75"
    );
    // The loop crashes and is restarted: its calls in flight end, the books stay.
    state.apply(
        Event::LoopRestarting {
            exit: LoopExit::new(Some(1), None),
            at: at(3.0),
        },
        &th,
    );
    for id in [2, 3] {
        state.apply(Event::LlmEnded { id, at: at(3.0) }, &th);
    }
    state.apply(Event::LoopStarted { at: at(3.5) }, &th);
    assert_eq!(
        start(&mut state, 6, 4.0),
        Admission::Admitted(6),
        "0.25 + 0"
    );
    assert_eq!(
        start(&mut state, 7, 4.1),
        Admission::Admitted(7),
        "0.25 + 0.375"
    );
    assert!(
        matches!(start(&mut state, 8, 4.2), Admission::Blocked(r) if r.deferred),
        "0.25 + 0.75"
    );
    let summary = state.summary("run", &ReasonNames::default(), at(5.0)).llm;
    assert_eq!(
        (
            summary.calls,
            summary.blocked,
            summary.deferred,
            summary.errors
        ),
        (4, 0, 3, 0)
    );
    assert_eq!(summary.cost_usd, 0.25);
    let budget = summary.budget.unwrap();
    assert_eq!((budget.spent_usd, budget.reserved_usd), (0.25, 0.75));
    assert_eq!((budget.blocked_calls, budget.deferred_calls), (0, 3));
    assert_eq!(budget.warned_at_percent, Vec::<u8>::new());
    // The calls in flight end at 0.375 and 0.5: the spend, 1.125, has reached the
    // budget; from now on calls are refused for good, with nothing in flight.
    end(&mut state, 6, 5.0, 187_500);
    end(&mut state, 7, 5.0, 250_000);
    for (id, secs) in [(9, 6.0), (10, 6.1)] {
        let Admission::Blocked(refusal) = start(&mut state, id, secs) else {
            panic!("spent");
        };
        assert!(!refusal.deferred);
        assert_eq!((refusal.spent_usd, refusal.reserved_usd), (1.125, 0.0));
    }
    let summary = state.summary("run", &ReasonNames::default(), at(7.0)).llm;
    assert_eq!((summary.blocked, summary.deferred), (2, 3));
    let (events, _) = state.events();
    let marks: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            LogEntryKind::LlmBudget(mark) if mark.event == BudgetEvent::Blocking => {
                Some(mark.spent_usd)
            }
            _ => None,
        })
        .collect();
    assert_eq!(marks, [1.125], "the first refusal for good, once");
}

/// The warnings at 50% and 80%, each once, whatever the action, in the event log
/// and published with the call that reached them.
#[test]
fn budget_warnings_are_given_once_at_half_and_four_fifths() {
    let th = Thresholds::default().with_llm_budget_usd(1.0).unwrap();
    let mut state = RunState::new(started(), &th);
    let mut published = Vec::new();
    for (i, cost) in [0.25, 0.25, 0.125, 0.25, 0.25].into_iter().enumerate() {
        let applied = state.apply(
            Event::Llm {
                call: Box::new(LlmCall::new("m", Duration::ZERO).with_cost_usd(cost)),
                at: at(1.0 + i as f64),
            },
            &th,
        );
        let Publish::Llm(llm) = applied.publish else {
            panic!("a call is published");
        };
        published.push(llm.budget.iter().map(|m| m.percent).collect::<Vec<_>>());
    }
    assert_eq!(
        published,
        [vec![], vec![Some(50)], vec![], vec![Some(80)], vec![]]
    );
    let (events, _) = state.events();
    let spent: Vec<f64> = events
        .iter()
        .filter_map(|e| match &e.kind {
            LogEntryKind::LlmBudget(mark) => Some(mark.spent_usd),
            _ => None,
        })
        .collect();
    assert_eq!(spent, [0.5, 0.875]);
}

/// A call the proxy started whose usage is unknown (a stream without usage, a call
/// cut short, a timeout) is charged its reservation, its worst case, against the
/// budget: the budget's spend grows, its warnings and LLMBudget count it, and a
/// blocking budget refuses once it is spent. The reported cost stays a lower bound,
/// without it. A call with its usage gives way to its cost; without a budget nothing
/// is charged.
#[test]
fn a_call_without_usage_is_charged_its_worst_case_against_the_budget() {
    use crate::llm::{Admission, BudgetAction, CallRequest};
    let prices = LlmConfig::default().with_price("m", Price::per_million(1.0, 1.0));
    let th = Thresholds::default()
        .with_llm(prices.clone())
        .with_llm_budget_usd(1.0)
        .and_then(|t| t.with_llm_budget_action(BudgetAction::Block))
        .unwrap();
    let mut state = RunState::new(started(), &th);
    // 400 bytes (100 tokens) and at most 374 900 out: 0.375 each at most.
    let request = || Box::new(CallRequest::new("m", 400).with_max_output_tokens(374_900));
    let call = |state: &mut RunState, id: u64, secs: f64, answer: LlmCall| {
        state.apply(
            Event::LlmStarted {
                id,
                request: request(),
                at: at(secs),
            },
            &th,
        );
        if state.llm_admission(id) != Admission::Admitted(id) {
            return false;
        }
        state.apply(
            Event::LlmFinished {
                id,
                call: Box::new(answer),
                at: at(secs + 0.5),
            },
            &th,
        );
        state.apply(
            Event::LlmEnded {
                id,
                at: at(secs + 0.5),
            },
            &th,
        );
        true
    };
    // A stream that ended without its usage, then one with it (0.25), then a timeout.
    let no_usage = || LlmCall::new("m", Duration::from_secs(1));
    assert!(call(&mut state, 1, 1.0, no_usage()));
    let budget = state.summary("run", &ReasonNames::default(), at(2.0)).llm;
    let b = budget.budget.unwrap();
    assert_eq!(
        (b.spent_usd, b.estimated_usd, b.reserved_usd),
        (0.375, 0.375, 0.0)
    );
    assert_eq!(budget.cost_usd, 0.0, "the reported cost is without it");
    assert!(budget.spend_is_lower_bound);
    let with_usage = LlmCall::new("m", Duration::from_secs(1)).with_tokens(125_000, 125_000);
    assert!(call(&mut state, 2, 2.0, with_usage));
    let timeout = no_usage().with_error(LlmError::Timeout);
    assert!(call(&mut state, 3, 3.0, timeout));
    // 0.375 + 0.25 + 0.375: the budget is spent; the next call is refused.
    let summary = state.summary("run", &ReasonNames::default(), at(4.0)).llm;
    let b = summary.budget.unwrap();
    assert_eq!((b.spent_usd, b.estimated_usd), (1.0, 0.75));
    assert!(b.spent);
    assert_eq!(b.warned_at_percent, [50, 80]);
    assert_eq!(summary.cost_usd, 0.25);
    assert!(!call(&mut state, 4, 4.0, no_usage()), "refused once spent");
    assert_eq!(
        state.evaluator.state(crate::AlertName::LLMBudget),
        crate::AlertState::Firing
    );

    // Without a budget, nothing is charged.
    let th = Thresholds::default().with_llm(prices);
    let mut state = RunState::new(started(), &th);
    state.apply(
        Event::LlmStarted {
            id: 1,
            request: request(),
            at: at(1.0),
        },
        &th,
    );
    state.apply(
        Event::LlmFinished {
            id: 1,
            call: Box::new(no_usage()),
            at: at(1.5),
        },
        &th,
    );
    let summary = state.summary("run", &ReasonNames::default(), at(2.0)).llm;
    assert_eq!((summary.cost_usd, summary.budget), (0.0, None));
    assert_eq!(state.llm.evidence(at(2.0).mono).budget_spend_usd, 0.0);
}

/// Under `stop`, calls are admitted whatever is in flight until the spend reaches
/// the budget; from then on, while the loop is being stopped, they are refused for
/// good, booked as `blocked`, the first marked with the action.
#[test]
fn a_stop_budget_refuses_new_calls_once_spent() {
    use crate::llm::{Admission, BudgetAction, CallRequest};
    let th = Thresholds::default()
        .with_llm(LlmConfig::default().with_price("m", Price::per_million(1.0, 1.0)))
        .with_llm_budget_usd(1.0)
        .and_then(|t| t.with_llm_budget_action(BudgetAction::Stop))
        .unwrap();
    let mut state = RunState::new(started(), &th);
    let start = |state: &mut RunState, id: u64| {
        let request = CallRequest::new("m", 400).with_max_output_tokens(374_900);
        state.apply(
            Event::LlmStarted {
                id,
                request: Box::new(request),
                at: at(1.0),
            },
            &th,
        );
        state.llm_admission(id)
    };
    for id in 1..=4 {
        assert_eq!(
            start(&mut state, id),
            Admission::Admitted(id),
            "never deferred"
        );
    }
    state.apply(
        Event::LlmFinished {
            id: 1,
            call: Box::new(LlmCall::new("m", Duration::ZERO).with_cost_usd(1.0)),
            at: at(2.0),
        },
        &th,
    );
    let Admission::Blocked(refusal) = start(&mut state, 5) else {
        panic!("spent");
    };
    assert!(!refusal.deferred);
    assert!(matches!(start(&mut state, 6), Admission::Blocked(_)));
    let summary = state.summary("run", &ReasonNames::default(), at(3.0)).llm;
    assert_eq!((summary.blocked, summary.deferred), (2, 0));
    let (events, _) = state.events();
    let blocking: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            LogEntryKind::LlmBudget(mark) if mark.event == BudgetEvent::Blocking => {
                Some(mark.action)
            }
            _ => None,
        })
        .collect();
    assert_eq!(blocking, [BudgetAction::Stop]);
}

/// A GPU sample of one device 97% full, which the loop uses, taken at `secs`, by a
/// sampler reading every second.
fn full_gpu(secs: f64) -> Event {
    let mut device = crate::sample::GpuDevice::reading(0, "GPU-a", 97, 100);
    device.loop_processes = 1;
    device.loop_memory_bytes = Some(10);
    Event::Gpu {
        sample: crate::sample::GpuSample {
            devices: vec![device],
        },
        at: at(secs),
        period: Duration::from_secs(1),
    }
}

#[test]
fn gpu_readings_no_sample_renews_stop_standing_on_the_clock() {
    let th = Thresholds::default()
        .with_gpu_memory_for(Duration::from_secs(1))
        .unwrap();
    let mut state = RunState::new(started(), &th);
    let fired = apply_all(&mut state, &th, (0..=2).map(|s| full_gpu(s as f64)));
    assert!(fired.contains(&(AlertName::GPUMemoryHigh, AlertState::Firing)));
    // Ticks within five periods of the last sample change nothing.
    let quiet = state.apply(Event::Tick { at: at(6.5) }, &th);
    assert!(quiet.findings.transitions.is_empty());
    assert!(matches!(
        quiet.publish,
        Publish::Tick { gpu_gone: None, .. }
    ));
    // Past them (5 s, the floor), the readings stop standing, once.
    let stale = state.apply(Event::Tick { at: at(7.5) }, &th);
    assert!(stale
        .findings
        .transitions
        .iter()
        .any(|t| t.alert == AlertName::GPUMemoryHigh && t.state == AlertState::Inactive));
    assert!(matches!(
        stale.publish,
        Publish::Tick {
            gpu_gone: Some(_),
            ..
        }
    ));
    assert!(matches!(
        state.apply(Event::Tick { at: at(9.0) }, &th).publish,
        Publish::Tick { gpu_gone: None, .. }
    ));
    assert!(state.gpus.answering().is_empty());
    assert_eq!(state.gpus.loop_memory_bytes(), None);
    let readings = |state: &RunState| state.gpus().iter().map(|g| g.readings).collect::<Vec<_>>();
    assert_eq!(
        readings(&state),
        [GpuReadings::Stale],
        "the page and the JSON say the last readings are not current"
    );
    // A sample again: the readings stand again, and the alert waits out its `for`.
    let applied = state.apply(full_gpu(10.0), &th);
    assert!(matches!(
        applied.publish,
        Publish::Gpu { resumed: true, .. }
    ));
    assert_eq!(state.gpus.answering().len(), 1);
    assert_eq!(readings(&state), [GpuReadings::Current]);
    assert_eq!(
        apply_all(&mut state, &th, [full_gpu(11.5)]),
        [(AlertName::GPUMemoryHigh, AlertState::Firing)]
    );
}

#[test]
fn gpu_errors_resolve_on_the_clock_and_an_ended_sampler_resolves_gpu_memory_high() {
    let th = Thresholds::default()
        .with_gpu_memory_for(Duration::from_secs(1))
        .unwrap();
    let mut state = RunState::new(started(), &th);
    apply_all(&mut state, &th, (0..=2).map(|s| full_gpu(s as f64)));
    let xid = Event::GpuXid {
        xid: crate::sample::GpuXid {
            gpu: Some(crate::sample::GpuId::new(0, "GPU-a")),
            code: Some(79),
        },
        at: at(3.0),
    };
    assert!(apply_all(&mut state, &th, [xid]).contains(&(AlertName::GPUErrors, AlertState::Firing)));
    assert_eq!(state.gpus()[0].readings, GpuReadings::Current);
    let ended = state.apply(Event::GpuEnded { at: at(3.5) }, &th);
    assert!(matches!(ended.publish, Publish::GpuGone { quiet: None }));
    assert_eq!(state.gpus()[0].readings, GpuReadings::Ended);
    let resolved: Vec<_> = ended
        .findings
        .transitions
        .iter()
        .map(|t| (t.alert, t.state))
        .collect();
    assert_eq!(
        resolved,
        [(AlertName::GPUMemoryHigh, AlertState::Inactive)],
        "the error happened: GPUErrors stands until its window ends"
    );
    // No GPU event comes any more; the clock ends GPUErrors' window.
    assert!(apply_all(&mut state, &th, [Event::Tick { at: at(300.0) }]).is_empty());
    assert_eq!(
        apply_all(&mut state, &th, [Event::Tick { at: at(303.5) }]),
        [(AlertName::GPUErrors, AlertState::Inactive)]
    );
}
