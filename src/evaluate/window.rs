//! Rolling windows over the last N completed iterations (10 by default), summed afresh
//! once per iteration, when one enters, so that the averages are exact; reading them
//! is a copy.

use std::collections::VecDeque;

use crate::alerts::RollingValues;

/// One iteration's contribution to the rolling averages.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Entry {
    pub(crate) successes: u64,
    pub(crate) failures: u64,
    pub(crate) sharpe: Option<f64>,
    pub(crate) diversity: Option<f64>,
    pub(crate) seconds: f64,
}

/// The last `size` iterations.
#[derive(Debug, Clone)]
pub(crate) struct RollingWindow {
    size: usize,
    entries: VecDeque<Entry>,
    /// The values of `entries`, summed when the last one entered.
    values: RollingValues,
}

impl RollingWindow {
    pub(crate) fn new(size: usize) -> Self {
        let size = size.max(1);
        RollingWindow {
            size,
            entries: VecDeque::with_capacity(size),
            values: RollingValues::default(),
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.entries.len() == self.size
    }

    /// Adds an iteration, evicting the oldest when full.
    pub(crate) fn push(&mut self, entry: Entry) {
        if self.entries.len() == self.size {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
        self.values = self.sum();
    }

    /// The window's rolling values.
    pub(crate) fn values(&self) -> RollingValues {
        self.values
    }

    /// The window's rolling values, summed afresh from its few entries in one pass:
    /// each mean is taken relative to its first value, so a window of zeros reads
    /// exactly 0 and a window of equal values exactly that value.
    fn sum(&self) -> RollingValues {
        let (mut successes, mut failures) = (0u64, 0u64);
        let mut sharpe = RelativeMean::default();
        let mut diversity = RelativeMean::default();
        let mut seconds = RelativeMean::default();
        for e in &self.entries {
            successes = successes.saturating_add(e.successes);
            failures = failures.saturating_add(e.failures);
            if let Some(v) = e.sharpe {
                sharpe.add(v);
            }
            if let Some(v) = e.diversity {
                diversity.add(v);
            }
            seconds.add(e.seconds);
        }
        let outcomes = successes.saturating_add(failures);
        RollingValues {
            iterations: self.entries.len(),
            outcomes,
            success_rate: (outcomes > 0).then(|| successes as f64 / outcomes as f64),
            avg_sharpe: sharpe.mean(),
            avg_diversity: diversity.mean(),
            mean_seconds: seconds.mean(),
        }
    }
}

/// A mean taken relative to the first value: `first + Σ(v − first) / n`, so that
/// equal values give exactly that value, with no rounding residue.
#[derive(Debug, Default, Clone, Copy)]
struct RelativeMean {
    first: f64,
    offsets: f64,
    count: u32,
}

impl RelativeMean {
    #[inline]
    fn add(&mut self, v: f64) {
        if self.count == 0 {
            self.first = v;
        }
        self.offsets += v - self.first;
        self.count += 1;
    }

    fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.first + self.offsets / f64::from(self.count))
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

    #[test]
    fn averages_are_exact_after_values_leave_the_window() {
        let mut w = RollingWindow::new(10);
        for v in [
            0.1,
            0.7,
            0.3,
            0.9,
            0.123456789,
            1e-9,
            0.5,
            0.25,
            0.6,
            0.05,
            0.33,
        ] {
            let mut e = entry(1, 0, Some(v), 1.0);
            e.diversity = Some(v);
            w.push(e);
        }
        for _ in 0..10 {
            let mut e = entry(0, 0, Some(0.0), 0.1);
            e.diversity = Some(0.0);
            w.push(e);
        }
        let v = w.values();
        assert_eq!(v.avg_diversity, Some(0.0), "ten zeros read exactly 0");
        assert_eq!(v.avg_sharpe, Some(0.0));
        for _ in 0..10 {
            let mut e = entry(1, 1, Some(0.3), 0.1);
            e.diversity = Some(0.3);
            w.push(e);
        }
        let v = w.values();
        assert_eq!(
            v.avg_diversity,
            Some(0.3),
            "ten equal values read that value"
        );
        assert_eq!(v.mean_seconds, Some(0.1));
    }

    proptest! {
        #[test]
        fn the_window_holds_the_last_entries_and_averages_them(
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
