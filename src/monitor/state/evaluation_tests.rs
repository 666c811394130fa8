//! Evaluations through `apply`: events in, findings and gauges out. Every time is the
//! events'.

use std::time::{Duration, SystemTime};

use super::*;

/// The moment `secs` seconds after the clock started (wall clock: a fixed day).
fn at(secs: f64) -> Moment {
    let mono = Duration::from_secs_f64(secs);
    Moment::new(
        mono,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000) + mono,
    )
}

fn start(id: &str, secs: f64) -> Event {
    Event::EvaluationStarted {
        id: id.into(),
        pid: None,
        pid_start: None,
        worker: None,
        queued: None,
        reported: None,
        interruptible: false,
        at: at(secs),
    }
}

fn end(id: &str, secs: f64) -> Event {
    Event::EvaluationEnded {
        id: id.into(),
        outcome: Ended::Ok,
        reason: None,
        reported: None,
        at: at(secs),
    }
}

fn tick(secs: f64) -> Event {
    Event::Tick { at: at(secs) }
}

/// The EvaluationHung transitions applying `event` made: (state, value, subject).
fn hung(
    state: &mut RunState,
    th: &Thresholds,
    event: Event,
) -> Vec<(AlertState, f64, Option<String>)> {
    state
        .apply(event, th)
        .findings
        .transitions
        .into_iter()
        .filter(|t| t.alert == AlertName::EvaluationHung)
        .map(|t| (t.state, t.value, t.subject.as_deref().map(str::to_string)))
        .collect()
}

#[test]
fn a_hung_evaluation_fires_past_the_floor_naming_itself_and_resolves_when_it_ends() {
    let th = Thresholds::default();
    assert_eq!(th.evaluation_floor(), Duration::from_secs(600));
    let mut state = RunState::new(at(0.0).wall, &th);
    let started = state.apply(
        Event::EvaluationStarted {
            id: "prog-17".into(),
            pid: Some(4242),
            pid_start: None,
            worker: Some("pool-3".into()),
            queued: Some(Duration::from_millis(1500)),
            reported: None,
            interruptible: false,
            at: at(0.0),
        },
        &th,
    );
    assert!(
        matches!(started.publish, Publish::Evaluations),
        "{:?}",
        started.publish
    );
    let gauges = &state.published().evaluations;
    assert_eq!((gauges.in_flight, gauges.workers), (1, (1, 1)));
    assert_eq!(gauges.queued, Some(Duration::from_millis(1500)));
    assert!(hung(&mut state, &th, tick(599.0)).is_empty());
    assert!(
        hung(&mut state, &th, tick(600.0)).is_empty(),
        "at the floor: not past it"
    );
    let fired = hung(&mut state, &th, tick(600.5));
    assert_eq!(
        fired,
        [(
            AlertState::Firing,
            600.5,
            Some("evaluation prog-17 (worker pool-3, pid 4242)".to_string())
        )]
    );
    assert!(hung(&mut state, &th, tick(900.0)).is_empty(), "fires once");
    // The tick publishes the age and the limit the rule compares.
    let ticked = state.apply(tick(901.0), &th).publish;
    assert!(matches!(ticked, Publish::Tick { .. }), "a tick publishes");
    let evaluations = &state.published().evaluations;
    assert_eq!(evaluations.oldest, Duration::from_secs(901));
    assert_eq!(evaluations.limit, Some(Duration::from_secs(600)));
    // It ends: resolved at once, on the end, not the next tick.
    let resolved = hung(&mut state, &th, end("prog-17", 950.0));
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].0, AlertState::Inactive);
    assert!(!state.is_firing(AlertName::EvaluationHung));
    // Both are in the event log, the firing one naming the evaluation.
    let (events, _) = state.events();
    let subjects: Vec<(AlertState, Option<String>)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            LogEntryKind::Alert {
                alertname: AlertName::EvaluationHung,
                state,
                subject,
                ..
            } => Some((*state, subject.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        subjects,
        [
            (
                AlertState::Firing,
                Some("evaluation prog-17 (worker pool-3, pid 4242)".to_string())
            ),
            (AlertState::Inactive, None)
        ]
    );
}

/// Twenty finished evaluations of 200 s: the limit is 5 × 200 s, above the floor.
/// With one fewer, only the floor applies.
#[test]
fn the_limit_is_the_factor_times_the_p95_once_twenty_have_finished() {
    let th = Thresholds::default();
    for (finished, limit) in [(19u32, 600.0), (20, 1000.0)] {
        let mut state = RunState::new(at(0.0).wall, &th);
        for i in 0..finished {
            let id = format!("done-{i}");
            let from = f64::from(i) * 200.0;
            state.apply(start(&id, from), &th);
            state.apply(end(&id, from + 200.0), &th);
        }
        let t0 = f64::from(finished) * 200.0;
        state.apply(start("slow", t0), &th);
        assert!(
            hung(&mut state, &th, tick(t0 + limit)).is_empty(),
            "{finished} finished: quiet at {limit} s"
        );
        let fired = hung(&mut state, &th, tick(t0 + limit + 1.0));
        assert_eq!(
            fired.iter().map(|f| (f.0, f.1)).collect::<Vec<_>>(),
            [(AlertState::Firing, limit + 1.0)],
            "{finished} finished: firing past {limit} s"
        );
        let ticked = state.apply(tick(t0 + limit + 2.0), &th).publish;
        assert!(matches!(ticked, Publish::Tick { .. }), "a tick publishes");
        let evaluations = &state.published().evaluations;
        assert_eq!(evaluations.limit, Some(Duration::from_secs_f64(limit)));
    }
}

/// Firing while any evaluation is over the limit: the first hung one ending leaves
/// the second over it; the alert resolves when the last ends.
#[test]
fn it_resolves_once_no_evaluation_is_over_the_limit() {
    let th = Thresholds::default();
    let mut state = RunState::new(at(0.0).wall, &th);
    state.apply(start("a", 0.0), &th);
    state.apply(start("b", 10.0), &th);
    state.apply(start("quick", 20.0), &th);
    assert_eq!(hung(&mut state, &th, tick(700.0)).len(), 1);
    assert!(hung(&mut state, &th, end("quick", 701.0)).is_empty());
    assert!(
        hung(&mut state, &th, end("a", 702.0)).is_empty(),
        "b is still over"
    );
    assert!(state.is_firing(AlertName::EvaluationHung));
    let resolved = hung(&mut state, &th, end("b", 703.0));
    assert_eq!(resolved.first().map(|r| r.0), Some(AlertState::Inactive));
}

/// An end without a start and a second start of an id in flight are turned away,
/// each counted by its kind; neither panics nor restarts anything.
#[test]
fn bad_evaluation_events_are_rejected_and_change_nothing() {
    let th = Thresholds::default();
    let mut state = RunState::new(at(0.0).wall, &th);
    let orphan = state.apply(end("never-started", 1.0), &th);
    assert_eq!(
        orphan.rejected.map(|r| r.kind),
        Some(Rejection::EvaluationUnknown)
    );
    assert!(matches!(orphan.publish, Publish::Nothing));
    state.apply(start("a", 0.0), &th);
    let twice = state.apply(start("a", 500.0), &th);
    assert_eq!(
        twice.rejected.map(|r| r.kind),
        Some(Rejection::EvaluationDuplicate)
    );
    // Still aged from its first start: past the floor at 600.5 s, not at 1100 s.
    assert_eq!(hung(&mut state, &th, tick(600.5)).len(), 1);
    assert!(state.apply(end("a", 601.0), &th).rejected.is_none());
    let again = state.apply(end("a", 602.0), &th);
    assert_eq!(
        again.rejected.map(|r| r.kind),
        Some(Rejection::EvaluationUnknown),
        "an evaluation ends once"
    );
    assert_eq!(state.evaluations.ended(Ended::Ok), 1);
}

/// A rejection carries the iteration its event was sent in (the last started before
/// it in the queue), not the one current when the queue is settled.
#[test]
fn a_rejection_names_the_iteration_its_event_was_sent_in() {
    let th = Thresholds::default();
    let mut state = RunState::new(at(0.0).wall, &th);
    let before_any = state.apply(end("ghost", 0.5), &th).rejected;
    assert_eq!(before_any.map(|r| r.iteration), Some(0));
    let started = |number: u64, secs: f64| Event::IterationStarted {
        number,
        at: at(secs),
    };
    // Queued in this order: iteration 7 starts, a bad end is sent during it, then
    // iterations 8 and 9 start before anything is settled.
    let events = [
        started(7, 1.0),
        end("ghost", 1.5),
        started(8, 2.0),
        started(9, 3.0),
    ];
    let rejected: Vec<_> = events
        .into_iter()
        .filter_map(|event| state.apply(event, &th).rejected)
        .map(|r| (r.kind, r.iteration))
        .collect();
    assert_eq!(rejected, [(Rejection::EvaluationUnknown, 7)]);
}

/// 100,000 evaluations with unique ids, a third never ended, some of whose ends
/// arrive without a start: what the state keeps stays within its bounds.
#[test]
fn a_hundred_thousand_unique_ids_keep_the_state_bounded() {
    let th = Thresholds::default();
    let mut state = RunState::new(at(0.0).wall, &th);
    let mut rejected = std::collections::HashMap::new();
    for i in 0..100_000u32 {
        let id = format!("prog-{i}");
        let t = f64::from(i) * 0.01;
        let mut events = vec![Event::EvaluationStarted {
            id: id.as_str().into(),
            pid: Some(1000 + i % 3000),
            pid_start: None,
            worker: None,
            queued: None,
            reported: None,
            interruptible: false,
            at: at(t),
        }];
        if i % 3 != 0 {
            events.push(end(&id, t + 0.005));
        } else if i % 2 == 0 {
            events.push(end(&format!("ghost-{i}"), t));
        }
        for event in events {
            if let Some(Rejected { kind, .. }) = state.apply(event, &th).rejected {
                *rejected.entry(kind).or_insert(0u32) += 1;
            }
        }
        if i % 1000 == 0 {
            state.apply(tick(t), &th);
        }
    }
    let [in_flight, order, workers, finished, refused] = state.evaluations.sizes();
    assert_eq!(in_flight, evaluations::MAX_IN_FLIGHT);
    assert!(refused <= evaluations::REFUSED_REMEMBERED, "{refused}");
    assert!(order <= 2 * evaluations::MAX_IN_FLIGHT + 64, "{order}");
    assert!(workers <= evaluations::MAX_WORKERS, "{workers}");
    assert_eq!(finished, evaluations::FINISHED_WINDOW);
    // The 10,000th never-ended evaluation starts at i = 29,997; every start after it
    // is refused, and counted once: its end is not counted again. Ghost ends: every
    // sixth i.
    assert_eq!(
        rejected.get(&Rejection::EvaluationOverLimit).copied(),
        Some(70_002)
    );
    assert_eq!(
        rejected.get(&Rejection::EvaluationUnknown).copied(),
        Some(16_667)
    );
    assert_eq!(state.evaluations.ended(Ended::Ok), 19_998);
}

/// A start refused because the most evaluations are in flight is counted once: its
/// end, when it comes, is no second rejection (an unknown id), and changes nothing.
#[test]
fn the_end_of_a_start_refused_past_the_bound_is_not_counted_again() {
    let th = Thresholds::default();
    let mut state = RunState::new(at(0.0).wall, &th);
    for i in 0..evaluations::MAX_IN_FLIGHT {
        let applied = state.apply(start(&format!("x{i}"), 0.0), &th);
        assert!(applied.rejected.is_none());
    }
    let refused = state.apply(start("one-too-many", 1.0), &th);
    assert_eq!(
        refused.rejected.map(|r| r.kind),
        Some(Rejection::EvaluationOverLimit)
    );
    let its_end = state.apply(end("one-too-many", 2.0), &th);
    assert!(its_end.rejected.is_none(), "{:?}", its_end.rejected);
    assert!(matches!(its_end.publish, Publish::Nothing));
    assert_eq!(state.evaluations.in_flight(), evaluations::MAX_IN_FLIGHT);
    assert_eq!(state.evaluations.ended(Ended::Ok), 0);
    let again = state.apply(end("one-too-many", 3.0), &th);
    assert_eq!(
        again.rejected.map(|r| r.kind),
        Some(Rejection::EvaluationUnknown),
        "a second end is one too many"
    );
}

/// A loop whose evaluations all hang: its iteration never ends either. LoopStalled
/// fires for the loop (past its 60 s floor), EvaluationHung for the evaluation (past
/// 600 s), each with its own message, and only EvaluationHung names an evaluation.
#[test]
fn a_loop_whose_evaluations_all_hang_raises_both_alerts_each_with_its_message() {
    let th = Thresholds::default();
    let mut state = RunState::new(at(0.0).wall, &th);
    state.apply(
        Event::IterationStarted {
            number: 1,
            at: at(0.0),
        },
        &th,
    );
    for worker in 0..4 {
        state.apply(
            Event::EvaluationStarted {
                id: format!("gen-1-{worker}").into(),
                pid: Some(100 + worker),
                pid_start: None,
                worker: None,
                queued: None,
                reported: None,
                interruptible: false,
                at: at(1.0),
            },
            &th,
        );
    }
    let mut fired = Vec::new();
    for second in (0..=700).step_by(1) {
        let applied = state.apply(tick(f64::from(second)), &th);
        fired.extend(
            applied
                .findings
                .transitions
                .into_iter()
                .map(|t| (t.alert, t.state, second, t.subject)),
        );
    }
    assert_eq!(
        fired.iter().map(|f| (f.0, f.1, f.2)).collect::<Vec<_>>(),
        [
            (AlertName::LoopStalled, AlertState::Firing, 61),
            (AlertName::EvaluationHung, AlertState::Firing, 602),
        ]
    );
    assert_eq!(fired[0].3, None);
    assert_eq!(fired[1].3.as_deref(), Some("evaluation gen-1-0 (pid 100)"));
    assert_ne!(
        AlertName::LoopStalled.message(),
        AlertName::EvaluationHung.message()
    );
    let (events, _) = state.events();
    let messages: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.kind {
            LogEntryKind::Alert { message, .. } => Some(*message),
            _ => None,
        })
        .collect();
    assert_eq!(
        messages,
        [
            AlertName::LoopStalled.message(),
            AlertName::EvaluationHung.message()
        ]
    );
}

/// The loop's process ends while evaluations are in flight (a crash, an exit): they
/// end with it, as failed with the reason `process gone`, so EvaluationHung resolves
/// and the gauges drop. Their durations stay out of the p95; an end arriving
/// afterwards is an unknown id.
#[test]
fn evaluations_in_flight_end_as_failed_when_the_loops_process_ends() {
    let th = Thresholds::default();
    for restarting in [true, false] {
        let mut state = RunState::new(at(0.0).wall, &th);
        state.apply(Event::LoopStarted { at: at(0.0) }, &th);
        state.apply(start("hung", 0.0), &th);
        state.apply(start("young", 650.0), &th);
        assert_eq!(hung(&mut state, &th, tick(700.0)).len(), 1);
        let exit = LoopExit::new(Some(1), None);
        let event = if restarting {
            Event::LoopRestarting {
                exit,
                at: at(701.0),
            }
        } else {
            Event::LoopExited {
                exit,
                at: at(701.0),
            }
        };
        let applied = state.apply(event, &th);
        assert_eq!(
            applied
                .findings
                .transitions
                .iter()
                .filter(|t| t.alert == AlertName::EvaluationHung)
                .map(|t| t.state)
                .collect::<Vec<_>>(),
            [AlertState::Inactive],
            "restarting: {restarting}"
        );
        match applied.publish {
            Publish::LoopRestarting { evaluations, .. }
            | Publish::LoopExited { evaluations, .. } => assert!(evaluations, "published"),
            other => panic!("{other:?}"),
        }
        let gauges = &state.published().evaluations;
        assert_eq!((gauges.in_flight, gauges.oldest), (0, Duration::ZERO));
        assert_eq!(gauges.workers.1, 0);
        assert_eq!(
            gauges.gone.iter().map(|f| f.duration).collect::<Vec<_>>(),
            [Duration::from_secs(701), Duration::from_secs(51)],
            "oldest first"
        );
        assert!(gauges.finished.is_none());
        assert_eq!(state.evaluations.ended(Ended::Failed), 2);
        assert_eq!(state.evaluations.ended(Ended::Killed), 0, "not killed");
        assert_eq!(state.evaluations.sizes()[..2], [0, 0]);
        assert_eq!(state.evaluations.sizes()[3], 0, "kept out of the p95");
        let view = state.evaluations_view(at(702.0));
        assert_eq!(view.slowest[0].outcome, Some("failed"));
        assert!(view.killed.is_empty());
        assert!(!state.is_firing(AlertName::EvaluationHung));
        let late = state.apply(end("hung", 702.0), &th);
        assert_eq!(
            late.rejected.map(|r| r.kind),
            Some(Rejection::EvaluationUnknown)
        );
        // With none in flight, nothing evaluation-wise is published.
        let again = state.apply(
            Event::LoopRestarting {
                exit,
                at: at(710.0),
            },
            &th,
        );
        assert!(matches!(
            again.publish,
            Publish::LoopRestarting {
                evaluations: false,
                ..
            }
        ));
    }
}

/// The supervisor found one evaluation's process gone: it alone ends, as failed,
/// resolving EvaluationHung; an id no longer in flight is not a rejection.
#[test]
fn an_evaluation_whose_process_is_gone_ends_as_failed() {
    let th = Thresholds::default();
    let mut state = RunState::new(at(0.0).wall, &th);
    state.apply(start("hung", 0.0), &th);
    state.apply(start("other", 600.0), &th);
    assert_eq!(hung(&mut state, &th, tick(601.0)).len(), 1);
    let gone = Event::EvaluationGone {
        id: "hung".into(),
        at: at(602.0),
    };
    let applied = state.apply(gone, &th);
    assert!(applied.rejected.is_none());
    assert_eq!(
        applied
            .findings
            .transitions
            .iter()
            .map(|t| (t.alert, t.state))
            .collect::<Vec<_>>(),
        [(AlertName::EvaluationHung, AlertState::Inactive)]
    );
    assert!(
        matches!(applied.publish, Publish::Evaluations),
        "{:?}",
        applied.publish
    );
    let gauges = &state.published().evaluations;
    assert_eq!(gauges.in_flight, 1);
    assert_eq!(
        gauges.gone,
        [Finished {
            outcome: Ended::Failed,
            duration: Duration::from_secs(602),
            interrupted: false
        }]
    );
    assert_eq!(state.evaluations.ended(Ended::Failed), 1);
    let again = state.apply(
        Event::EvaluationGone {
            id: "hung".into(),
            at: at(603.0),
        },
        &th,
    );
    assert!(again.rejected.is_none());
    assert!(matches!(again.publish, Publish::Nothing));
    assert_eq!(state.evaluations.in_flight(), 1);
}

/// The start time read with an evaluation's pid (at receipt, by the intake or the
/// guard) is what its hung evaluation carries, so that a supervisor signals that
/// process only; a pid assigned later replaces it with its own start time.
#[test]
fn a_hung_evaluation_carries_the_start_time_of_its_reported_process() {
    let th = Thresholds::default();
    let mut state = RunState::new(at(0.0).wall, &th);
    for (id, pid, pid_start) in [("a", 4242, Some(777)), ("b", 4243, None)] {
        state.apply(
            Event::EvaluationStarted {
                id: id.into(),
                pid: Some(pid),
                pid_start,
                worker: None,
                queued: None,
                reported: None,
                interruptible: false,
                at: at(0.0),
            },
            &th,
        );
    }
    assert_eq!(hung(&mut state, &th, tick(601.0)).len(), 1);
    let carried = |state: &RunState| -> Vec<(String, Option<u32>, Option<u64>)> {
        state
            .hung_evaluations(at(602.0))
            .into_iter()
            .map(|h| (h.id, h.pid, h.pid_start_ticks))
            .collect()
    };
    assert_eq!(
        carried(&state),
        [
            ("a".to_string(), Some(4242), Some(777)),
            ("b".to_string(), Some(4243), None)
        ]
    );
    let assign = |pid: Option<u32>, pid_start: Option<u64>, worker: Option<&str>| {
        Event::EvaluationAssigned {
            id: "a".into(),
            pid,
            pid_start,
            worker: worker.map(Into::into),
            queued: None,
            at: at(601.5),
        }
    };
    state.apply(assign(Some(5000), Some(888), None), &th);
    assert_eq!(carried(&state)[0], ("a".to_string(), Some(5000), Some(888)));
    state.apply(assign(None, None, Some("w1")), &th);
    assert_eq!(
        carried(&state)[0],
        ("a".to_string(), Some(5000), Some(888)),
        "a worker alone leaves the process as it was"
    );
    state.apply(assign(Some(5001), None, None), &th);
    assert_eq!(
        carried(&state)[0],
        ("a".to_string(), Some(5001), None),
        "a new pid's start time, not the old one's"
    );
}

/// An evaluation started by a process that ends it on `SIGUSR2`: once the supervisor
/// interrupted it, its own end (`timeout`, as the Python client sends it) counts as
/// killed, kept out of the 95th percentile, and is published for the log with its id
/// and age; so does one whose process is then gone, or that ends with the loop's
/// process. An interrupt of an id no longer in flight changes nothing.
#[test]
fn an_interrupted_evaluation_ends_as_killed_and_says_so() {
    let th = Thresholds::default();
    let mut state = RunState::new(at(0.0).wall, &th);
    let interruptible = |id: &str, pid: u32| Event::EvaluationStarted {
        id: id.into(),
        pid: Some(pid),
        pid_start: Some(u64::from(pid) * 10),
        worker: None,
        queued: None,
        reported: None,
        interruptible: true,
        at: at(0.0),
    };
    for (id, pid) in [("hung", 7), ("gone", 8), ("with-the-loop", 9)] {
        state.apply(interruptible(id, pid), &th);
    }
    assert_eq!(hung(&mut state, &th, tick(601.0)).len(), 1);
    let hung_now = state.hung_evaluations(at(601.0));
    assert!(hung_now.iter().all(|h| h.interruptible), "{hung_now:?}");
    let interrupt = |id: &str, secs: f64| Event::EvaluationInterrupted {
        id: id.into(),
        at: at(secs),
    };
    for id in ["hung", "gone", "with-the-loop", "never-started"] {
        let applied = state.apply(interrupt(id, 601.5), &th);
        assert!(applied.rejected.is_none());
        assert!(matches!(applied.publish, Publish::Nothing));
    }
    let applied = state.apply(
        Event::EvaluationEnded {
            id: "hung".into(),
            outcome: Ended::Timeout,
            reason: None,
            reported: None,
            at: at(602.0),
        },
        &th,
    );
    assert!(
        matches!(applied.publish, Publish::Evaluations),
        "{:?}",
        applied.publish
    );
    let gauges = &state.published().evaluations;
    let (finished, _) = gauges.finished.as_ref().unwrap();
    assert_eq!(
        (finished.outcome, finished.interrupted),
        (Ended::Killed, true)
    );
    assert_eq!(
        gauges.interrupted,
        [(Arc::from("hung"), Duration::from_secs(602))]
    );
    let applied = state.apply(
        Event::EvaluationGone {
            id: "gone".into(),
            at: at(603.0),
        },
        &th,
    );
    assert!(
        matches!(applied.publish, Publish::Evaluations),
        "{:?}",
        applied.publish
    );
    let gauges = &state.published().evaluations;
    assert_eq!(gauges.gone[0].outcome, Ended::Killed);
    assert_eq!(gauges.interrupted[0].0.as_ref(), "gone");
    let exit = LoopExit::new(Some(0), None);
    let applied = state.apply(
        Event::LoopExited {
            exit,
            at: at(604.0),
        },
        &th,
    );
    let Publish::LoopExited { evaluations, .. } = applied.publish else {
        panic!("{:?}", applied.publish);
    };
    assert!(evaluations, "published");
    let gauges = &state.published().evaluations;
    assert_eq!(gauges.gone[0].outcome, Ended::Killed);
    assert_eq!(
        gauges.interrupted,
        [(Arc::from("with-the-loop"), Duration::from_secs(604))]
    );
    assert_eq!(state.evaluations.ended(Ended::Killed), 3);
    assert_eq!(state.evaluations.ended(Ended::Timeout), 0);
    assert_eq!(state.evaluations.ended(Ended::Failed), 0);
    assert_eq!(state.evaluations.killed().1, 3);
}
