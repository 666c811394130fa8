//! Recording stays exact however it is made fast: random runs recorded through the
//! monitor (outcomes, invalid values, failure reasons past the named limit, champions,
//! reads in between that settle the queue) against a naive reference that keeps
//! every iteration in a list and recomputes everything from it. Counts, failure
//! reasons (the run's and the last ten iterations'), champion tracking, staleness and
//! the rolling values must agree: mid-run through the summary and the exposition,
//! and at the end in both final files.

mod support;

use std::collections::BTreeMap;

use loopwatch::{Monitor, Population};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::Value;
use support::parse;

/// Reasons named by the run before the rest count as `other`.
const NAMED_REASONS: usize = 32;
/// The rolling window, in iterations (the default threshold).
const WINDOW: usize = 10;
/// Reasons the page lists before it sums the rest as `other`.
const TOP_REASONS: usize = 8;

/// One outcome as the loop reports it.
#[derive(Debug, Clone)]
enum Outcome {
    Success { sharpe: f64, drawdown: f64 },
    Failure { reason: usize },
}

/// One iteration as the loop reports it, and whether the test reads the monitor
/// after it.
#[derive(Debug, Clone)]
struct Reported {
    outcomes: Vec<Outcome>,
    population: Option<(u64, u64, f64, Option<usize>)>,
    read_after: bool,
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => -3.0f64..3.0,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
    ]
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        3 => (value(), prop_oneof![4 => 0.0f64..1.0, 1 => Just(-0.5), 1 => Just(f64::NAN)])
            .prop_map(|(sharpe, drawdown)| Outcome::Success { sharpe, drawdown }),
        // More reasons than the run names, so that some count as `other`.
        2 => (0usize..40).prop_map(|reason| Outcome::Failure { reason }),
    ]
}

fn iteration() -> impl Strategy<Value = Reported> {
    (
        proptest::collection::vec(outcome(), 0..12),
        proptest::option::weighted(
            0.8,
            (
                1u64..30,
                0u64..35,
                prop_oneof![6 => 0.0f64..1.0, 1 => Just(1.5), 1 => Just(f64::NAN)],
                proptest::option::weighted(0.9, 0usize..3),
            ),
        ),
        proptest::bool::weighted(0.15),
    )
        .prop_map(|(outcomes, population, read_after)| Reported {
            outcomes,
            population,
            read_after,
        })
}

fn reason_name(reason: usize) -> String {
    format!("reason {reason}")
}

fn champion_name(champion: usize) -> String {
    format!("champion-{champion}")
}

/// What the reference keeps of one iteration: recomputed from the report alone.
#[derive(Debug, Clone, Default)]
struct Kept {
    successes: u64,
    failures: u64,
    mean_sharpe: Option<f64>,
    diversity: Option<f64>,
    reasons: Vec<usize>,
}

/// The naive reference: every iteration in a list, everything recomputed.
#[derive(Debug, Default)]
struct Reference {
    iterations: Vec<Kept>,
    /// Reasons in the order the run first saw them.
    reasons_seen: Vec<usize>,
    champion: Option<usize>,
    champion_changes: u64,
    /// Index of the iteration whose report changed the champion last.
    changed_in: Option<usize>,
    best_sharpe: Option<f64>,
}

impl Reference {
    fn record(&mut self, reported: &Reported) {
        let mut kept = Kept::default();
        let mut sharpes = Vec::new();
        for outcome in &reported.outcomes {
            match *outcome {
                Outcome::Success { sharpe, .. } => {
                    kept.successes += 1;
                    if sharpe.is_finite() {
                        sharpes.push(sharpe);
                        self.best_sharpe = Some(self.best_sharpe.map_or(sharpe, |b| b.max(sharpe)));
                    }
                }
                Outcome::Failure { reason } => {
                    kept.failures += 1;
                    kept.reasons.push(reason);
                    if !self.reasons_seen.contains(&reason) {
                        self.reasons_seen.push(reason);
                    }
                }
            }
        }
        kept.mean_sharpe =
            (!sharpes.is_empty()).then(|| sharpes.iter().sum::<f64>() / sharpes.len() as f64);
        if let Some((size, unique, diversity, champion)) = reported.population {
            let _ = (size, unique);
            kept.diversity =
                (diversity.is_finite() && (0.0..=1.0).contains(&diversity)).then_some(diversity);
            if let Some(champion) = champion {
                if self.champion != Some(champion) {
                    self.champion = Some(champion);
                    self.champion_changes += 1;
                    self.changed_in = Some(self.iterations.len());
                }
            }
        }
        self.iterations.push(kept);
    }

    /// A reason's name as the run reports it: its own among the first 32 seen.
    fn named(&self, reason: usize) -> String {
        match self.reasons_seen.iter().position(|&r| r == reason) {
            Some(i) if i < NAMED_REASONS => reason_name(reason),
            _ => "other".to_string(),
        }
    }

    fn reasons_over(&self, iterations: &[Kept]) -> BTreeMap<String, u64> {
        let mut tally = BTreeMap::new();
        for kept in iterations {
            for &reason in &kept.reasons {
                *tally.entry(self.named(reason)).or_insert(0) += 1;
            }
        }
        tally
    }

    fn recent(&self) -> &[Kept] {
        &self.iterations[self.iterations.len().saturating_sub(WINDOW)..]
    }

    fn staleness(&self) -> u64 {
        self.changed_in
            .map_or(0, |i| (self.iterations.len() - 1 - i) as u64)
    }

    fn successes(&self) -> u64 {
        self.iterations.iter().map(|k| k.successes).sum()
    }

    fn failures(&self) -> u64 {
        self.iterations.iter().map(|k| k.failures).sum()
    }

    fn success_rate(&self) -> Option<f64> {
        let s: u64 = self.recent().iter().map(|k| k.successes).sum();
        let f: u64 = self.recent().iter().map(|k| k.failures).sum();
        (s + f > 0).then(|| s as f64 / (s + f) as f64)
    }

    fn mean_of(values: Vec<f64>) -> Option<f64> {
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    }

    fn avg_sharpe(&self) -> Option<f64> {
        Self::mean_of(self.recent().iter().filter_map(|k| k.mean_sharpe).collect())
    }

    fn avg_diversity(&self) -> Option<f64> {
        Self::mean_of(self.recent().iter().filter_map(|k| k.diversity).collect())
    }
}

fn report(monitor: &Monitor, reported: &Reported) {
    let mut iteration = monitor.start_iteration();
    for outcome in &reported.outcomes {
        match *outcome {
            Outcome::Success { sharpe, drawdown } => iteration.record_success(sharpe, drawdown),
            Outcome::Failure { reason } => iteration.record_failure(&reason_name(reason)),
        }
    }
    if let Some((size, unique, diversity, champion)) = reported.population {
        let name = champion.map(champion_name);
        let mut population = Population::new(size, unique, diversity);
        if let Some(name) = &name {
            population = population.with_champion(name);
        }
        iteration.record_population(population);
    }
    iteration.finish();
}

fn close(actual: Option<f64>, expected: Option<f64>) -> bool {
    match (actual, expected) {
        (None, None) => true,
        (Some(a), Some(e)) => (a - e).abs() <= 1e-9 * e.abs().max(1.0),
        _ => false,
    }
}

/// The summary's counts, reasons and champion against the reference's.
fn check_summary(summary: &Value, reference: &Reference) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        summary["iterations"].as_u64(),
        Some(reference.iterations.len() as u64)
    );
    prop_assert_eq!(
        summary["strategy_successes"].as_u64(),
        Some(reference.successes())
    );
    prop_assert_eq!(
        summary["strategy_failures"].as_u64(),
        Some(reference.failures())
    );
    let reasons: BTreeMap<String, u64> =
        serde_json::from_value(summary["failure_reasons"].clone()).unwrap();
    prop_assert_eq!(reasons, reference.reasons_over(&reference.iterations));
    prop_assert_eq!(
        summary["champion"].as_str().map(str::to_string),
        reference.champion.map(champion_name)
    );
    prop_assert_eq!(
        summary["champion_changes"].as_u64(),
        Some(reference.champion_changes)
    );
    prop_assert_eq!(
        summary["champion_staleness_iterations"].as_u64(),
        Some(reference.staleness())
    );
    Ok(())
}

/// The rolling values as the evaluator holds them against the reference's.
fn check_rolling(rolling: &Value, reference: &Reference) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        rolling["iterations"].as_u64(),
        Some(reference.recent().len() as u64)
    );
    prop_assert!(
        close(rolling["success_rate"].as_f64(), reference.success_rate()),
        "{rolling}"
    );
    prop_assert!(
        close(rolling["avg_sharpe"].as_f64(), reference.avg_sharpe()),
        "{rolling}"
    );
    prop_assert!(
        close(rolling["avg_diversity"].as_f64(), reference.avg_diversity()),
        "{rolling}"
    );
    Ok(())
}

/// The exposition's counters and gauges against the reference's.
fn check_exposition(text: &str, reference: &Reference) -> Result<(), TestCaseError> {
    let exposition = parse(text).unwrap();
    let value = |name: &str| exposition[name].value();
    prop_assert_eq!(
        value("strategy_success_total"),
        reference.successes() as f64
    );
    prop_assert_eq!(value("strategy_failure_total"), reference.failures() as f64);
    prop_assert_eq!(value("iteration_number"), reference.iterations.len() as f64);
    prop_assert_eq!(
        value("champion_staleness_iterations"),
        reference.staleness() as f64
    );
    prop_assert_eq!(
        value("loopwatch_champion_changes_total"),
        reference.champion_changes as f64
    );
    prop_assert_eq!(
        value("loopwatch_rolling_window_iterations"),
        reference.recent().len() as f64
    );
    if let Some(rate) = reference.success_rate() {
        prop_assert!(close(Some(value("success_rate_10iter")), Some(rate)));
    }
    if let Some(avg) = reference.avg_sharpe() {
        prop_assert!(close(Some(value("avg_sharpe_10iter")), Some(avg)));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 40,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/exactness.txt",
        ))),
        ..ProptestConfig::default()
    })]
    #[test]
    fn a_random_run_agrees_with_the_naive_reference(
        run in proptest::collection::vec(iteration(), 1..60)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let monitor = Monitor::builder()
            .listen("127.0.0.1:0".parse().unwrap())
            .output_dir(dir.path())
            .containers(false)
            .build()
            .unwrap();
        let mut reference = Reference::default();
        for reported in &run {
            report(&monitor, reported);
            reference.record(reported);
            if reported.read_after {
                // A read settles whatever is queued: it sees every iteration so far.
                check_summary(&serde_json::to_value(monitor.summary()).unwrap(), &reference)?;
                check_exposition(&monitor.render_metrics().unwrap(), &reference)?;
            }
        }
        // The last ten iterations' failure reasons, as the page shows them (its top
        // reasons, the rest summed as `other`).
        let snapshot: Value = serde_json::from_str(
            &support::http_get(monitor.local_addr(), "/api/v1/snapshot").body,
        )
        .unwrap();
        let shown: BTreeMap<String, u64> = snapshot["failure_reasons"]["recent"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["reason"].as_str().unwrap().to_string(), r["count"].as_u64().unwrap()))
            .collect();
        let recent = reference.reasons_over(reference.recent());
        prop_assert_eq!(shown.values().sum::<u64>(), recent.values().sum::<u64>());
        if recent.len() <= TOP_REASONS {
            prop_assert_eq!(&shown, &recent);
        }
        let report = monitor.shutdown();
        check_summary(&serde_json::to_value(&report.summary).unwrap(), &reference)?;
        let files = report.files.expect("the final export is on");
        let json: Value =
            serde_json::from_str(&std::fs::read_to_string(files.json.unwrap()).unwrap()).unwrap();
        check_summary(&json["summary"], &reference)?;
        check_rolling(&json["evaluation"]["rolling"], &reference)?;
        let text = std::fs::read_to_string(files.prometheus_text.unwrap()).unwrap();
        check_exposition(&text, &reference)?;
    }
}
