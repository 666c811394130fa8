//! Rolling windows over the last N completed iterations, O(1) per iteration.

use std::collections::VecDeque;

use crate::alerts::Watched;

/// Pushes between exact recomputations of the running sums, so that floating-point
/// drift from adding and subtracting cannot accumulate over a run of days.
const RESUM_EVERY: u64 = 4096;

/// One iteration's contribution to the rolling averages.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Entry {
    pub(crate) successes: u64,
    pub(crate) failures: u64,
    pub(crate) sharpe: Option<f64>,
    pub(crate) diversity: Option<f64>,
    pub(crate) seconds: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Sums {
    successes: u64,
    failures: u64,
    sharpe: f64,
    sharpe_count: u64,
    diversity: f64,
    diversity_count: u64,
    seconds: f64,
}

impl Sums {
    fn add(&mut self, e: &Entry) {
        self.successes += e.successes;
        self.failures += e.failures;
        if let Some(s) = e.sharpe {
            self.sharpe += s;
            self.sharpe_count += 1;
        }
        if let Some(d) = e.diversity {
            self.diversity += d;
            self.diversity_count += 1;
        }
        self.seconds += e.seconds;
    }

    fn remove(&mut self, e: &Entry) {
        self.successes -= e.successes;
        self.failures -= e.failures;
        if let Some(s) = e.sharpe {
            self.sharpe -= s;
            self.sharpe_count -= 1;
        }
        if let Some(d) = e.diversity {
            self.diversity -= d;
            self.diversity_count -= 1;
        }
        self.seconds -= e.seconds;
    }
}

/// The rolling values of a window (each `None` when the window holds no data for it).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub(crate) struct RollingValues {
    /// Iterations currently in the window (up to its size).
    pub(crate) iterations: usize,
    /// successes / (successes + failures) over the window.
    pub(crate) success_rate: Option<f64>,
    /// Mean of the per-iteration mean Sharpe ratios in the window.
    pub(crate) avg_sharpe: Option<f64>,
    /// Mean of the per-iteration diversities in the window.
    pub(crate) avg_diversity: Option<f64>,
    /// Mean wall-clock iteration time in the window, in seconds.
    pub(crate) mean_seconds: Option<f64>,
}

impl RollingValues {
    /// The rolling value a warning watches.
    pub(crate) fn of(&self, watched: Watched) -> Option<f64> {
        match watched {
            Watched::SuccessRate => self.success_rate,
            Watched::AvgSharpe => self.avg_sharpe,
            Watched::AvgDiversity => self.avg_diversity,
            Watched::ExecutionTime => self.mean_seconds,
        }
    }
}

/// The last `size` iterations and their running sums.
#[derive(Debug, Clone)]
pub(crate) struct RollingWindow {
    size: usize,
    entries: VecDeque<Entry>,
    sums: Sums,
    pushes: u64,
}

impl RollingWindow {
    pub(crate) fn new(size: usize) -> Self {
        let size = size.max(1);
        RollingWindow {
            size,
            entries: VecDeque::with_capacity(size),
            sums: Sums::default(),
            pushes: 0,
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.entries.len() == self.size
    }

    /// Adds an iteration, evicting the oldest when full: constant work per call.
    pub(crate) fn push(&mut self, entry: Entry) {
        if self.entries.len() == self.size {
            if let Some(old) = self.entries.pop_front() {
                self.sums.remove(&old);
            }
        }
        self.sums.add(&entry);
        self.entries.push_back(entry);
        self.pushes += 1;
        if self.pushes % RESUM_EVERY == 0 {
            // Amortised: one pass over the window every RESUM_EVERY pushes.
            let mut exact = Sums::default();
            self.entries.iter().for_each(|e| exact.add(e));
            self.sums = exact;
        }
    }

    pub(crate) fn values(&self) -> RollingValues {
        let s = &self.sums;
        let outcomes = s.successes + s.failures;
        let n = self.entries.len();
        RollingValues {
            iterations: n,
            success_rate: (outcomes > 0).then(|| s.successes as f64 / outcomes as f64),
            avg_sharpe: (s.sharpe_count > 0).then(|| s.sharpe / s.sharpe_count as f64),
            avg_diversity: (s.diversity_count > 0).then(|| s.diversity / s.diversity_count as f64),
            mean_seconds: (n > 0).then(|| s.seconds / n as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(successes: u64, failures: u64, sharpe: Option<f64>, seconds: f64) -> Entry {
        Entry {
            successes,
            failures,
            sharpe,
            diversity: sharpe.map(|s| s.abs().min(1.0)),
            seconds,
        }
    }

    #[test]
    fn window_keeps_only_the_last_n() {
        let mut w = RollingWindow::new(3);
        for i in 0..5u64 {
            w.push(entry(i, 1, Some(i as f64), 1.0 + i as f64));
        }
        // Entries 2, 3, 4 remain.
        let v = w.values();
        assert_eq!(v.iterations, 3);
        assert_eq!(v.success_rate, Some(9.0 / 12.0));
        assert_eq!(v.avg_sharpe, Some(3.0));
        assert_eq!(v.mean_seconds, Some(4.0));
        assert!(w.is_full());
    }

    #[test]
    fn missing_values_are_left_out_not_counted_as_zero() {
        let mut w = RollingWindow::new(4);
        w.push(entry(0, 0, None, 1.0));
        w.push(entry(1, 0, Some(2.0), 1.0));
        let v = w.values();
        assert_eq!(v.avg_sharpe, Some(2.0));
        assert_eq!(v.success_rate, Some(1.0));
        let empty = RollingWindow::new(4).values();
        assert_eq!(empty.success_rate, None);
        assert_eq!(empty.mean_seconds, None);
    }

    proptest! {
        #[test]
        fn running_sums_match_a_recount(
            entries in proptest::collection::vec((0u64..20, 0u64..20, proptest::option::of(-5.0f64..5.0), 0.0f64..10.0), 1..200),
            size in 1usize..15,
        ) {
            let mut w = RollingWindow::new(size);
            for &(s, f, sharpe, secs) in &entries {
                w.push(entry(s, f, sharpe, secs));
            }
            let tail: Vec<_> = entries.iter().rev().take(size).collect();
            let succ: u64 = tail.iter().map(|e| e.0).sum();
            let fail: u64 = tail.iter().map(|e| e.1).sum();
            let v = w.values();
            prop_assert_eq!(v.iterations, tail.len());
            if succ + fail > 0 {
                prop_assert!((v.success_rate.unwrap() - succ as f64 / (succ + fail) as f64).abs() < 1e-12);
            }
            let sharpes: Vec<f64> = tail.iter().filter_map(|e| e.2).collect();
            match v.avg_sharpe {
                Some(avg) => prop_assert!((avg - sharpes.iter().sum::<f64>() / sharpes.len() as f64).abs() < 1e-9),
                None => prop_assert!(sharpes.is_empty()),
            }
        }
    }
}
