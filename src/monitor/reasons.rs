//! Failure reasons, interned: the first [`MAX_FAILURE_REASONS`] distinct reasons of a
//! run get a number each, and every later one counts as `other`. A failure is then
//! tallied in a fixed array by that number, with no lock and no allocation once its
//! reason has been seen.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::records::MAX_FAILURE_REASONS;

use super::sync::lock;

/// The number of every reason past the first [`MAX_FAILURE_REASONS`].
pub(crate) const OTHER: usize = MAX_FAILURE_REASONS;

/// The reasons' names by number. Lookups read the names published so far without a
/// lock; only a reason not seen before takes the lock, to add it.
pub(crate) struct ReasonNames {
    names: [OnceLock<Box<str>>; MAX_FAILURE_REASONS],
    /// Names published so far: `names[..len]` are set.
    len: AtomicUsize,
    adding: Mutex<()>,
}

impl std::fmt::Debug for ReasonNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries((0..self.len.load(Ordering::Acquire)).map(|id| self.name(id)))
            .finish()
    }
}

impl Default for ReasonNames {
    fn default() -> Self {
        ReasonNames {
            names: std::array::from_fn(|_| OnceLock::new()),
            len: AtomicUsize::new(0),
            adding: Mutex::new(()),
        }
    }
}

impl ReasonNames {
    /// The number of `reason`, adding it when it is new and there is room; [`OTHER`]
    /// when there is none.
    #[inline]
    pub(crate) fn id(&self, reason: &str) -> usize {
        let published = self.len.load(Ordering::Acquire);
        if let Some(id) = self.find(reason, 0, published) {
            return id;
        }
        let _adding = lock(&self.adding);
        let len = self.len.load(Ordering::Acquire);
        // Another thread may have added it since.
        if let Some(id) = self.find(reason, published, len) {
            return id;
        }
        if len == MAX_FAILURE_REASONS {
            return OTHER;
        }
        let _ = self.names[len].set(reason.into());
        self.len.store(len + 1, Ordering::Release);
        len
    }

    fn find(&self, reason: &str, from: usize, to: usize) -> Option<usize> {
        (from..to).find(|&id| self.names[id].get().is_some_and(|name| **name == *reason))
    }

    /// The name of reason number `id`.
    pub(crate) fn name(&self, id: usize) -> &str {
        match self.names.get(id).and_then(OnceLock::get) {
            Some(name) => name,
            None => "other",
        }
    }
}

/// A count a [`Tally`] keeps: 32 bits for an iteration (small to carry), 64 for
/// the run.
pub(crate) trait Count: Copy + Default + Into<u64> {
    /// `self + n`, saturating at the type's maximum.
    fn plus(self, n: u64) -> Self;
}

impl Count for u32 {
    fn plus(self, n: u64) -> Self {
        self.saturating_add(u32::try_from(n).unwrap_or(u32::MAX))
    }
}

impl Count for u64 {
    fn plus(self, n: u64) -> Self {
        self.saturating_add(n)
    }
}

/// Failures counted by reason number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally<C> {
    counts: [C; MAX_FAILURE_REASONS + 1],
    /// Which numbers have a count, one bit each, so that folding and naming visit
    /// only those.
    present: u64,
}

/// One iteration's failures by reason number.
pub(crate) type ReasonCounts = Tally<u32>;
/// The run's failures by reason number.
pub(crate) type ReasonTotals = Tally<u64>;

impl<C: Count> Default for Tally<C> {
    fn default() -> Self {
        Tally {
            counts: [C::default(); MAX_FAILURE_REASONS + 1],
            present: 0,
        }
    }
}

impl<C: Count> Tally<C> {
    /// Counts `n` failures of reason number `id`.
    #[inline]
    pub(crate) fn add(&mut self, id: usize, n: u64) {
        let id = id.min(OTHER);
        self.counts[id] = self.counts[id].plus(n);
        self.present |= 1 << id;
    }

    /// Whether it counts no failure.
    pub(crate) fn is_empty(&self) -> bool {
        self.present == 0
    }

    /// Adds every count of `other`.
    pub(crate) fn add_all<D: Count>(&mut self, other: &Tally<D>) {
        for (id, count) in other.iter() {
            self.add(id, count);
        }
    }

    /// The reason numbers with a count, and their counts.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let mut present = self.present;
        std::iter::from_fn(move || {
            (present != 0).then(|| {
                let id = present.trailing_zeros() as usize;
                present &= present - 1;
                (id, self.counts[id].into())
            })
        })
    }

    /// The counts by name (a reason named "other" shares the overflow's row).
    pub(crate) fn by_name(&self, names: &ReasonNames) -> BTreeMap<String, u64> {
        let mut named = BTreeMap::new();
        for (id, count) in self.iter() {
            let total: &mut u64 = named.entry(names.name(id).to_string()).or_default();
            *total = total.saturating_add(count);
        }
        named
    }
}

/// Failure reasons an event carries: at most [`ReasonChunk::CAPACITY`] of them (a
/// reason's number and its count), so that a completed iteration stays small on its
/// way through the queue. An iteration with more distinct reasons sends the rest in
/// chunks of their own ([`ReasonChunk::split`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ReasonChunk {
    ids: [u8; ReasonChunk::CAPACITY],
    counts: [u32; ReasonChunk::CAPACITY],
    len: u8,
}

// A reason's number fits the chunk's byte: the interned reasons and `other`.
const _: () = assert!(MAX_FAILURE_REASONS < u8::MAX as usize);

impl ReasonChunk {
    /// Reasons one chunk carries.
    pub(crate) const CAPACITY: usize = 4;

    /// The reasons of `counts` in chunks: the first (possibly empty) and the rest, in
    /// as few further chunks as they need.
    pub(crate) fn split(
        counts: &ReasonCounts,
    ) -> (ReasonChunk, impl Iterator<Item = ReasonChunk> + '_) {
        let mut reasons = counts.iter();
        let first = ReasonChunk::fill(&mut reasons);
        let rest = std::iter::from_fn(move || {
            let chunk = ReasonChunk::fill(&mut reasons);
            (chunk.len > 0).then_some(chunk)
        });
        (first, rest)
    }

    fn fill(reasons: &mut impl Iterator<Item = (usize, u64)>) -> ReasonChunk {
        let mut chunk = ReasonChunk::default();
        for (id, count) in reasons.take(Self::CAPACITY) {
            let at = usize::from(chunk.len);
            chunk.ids[at] = u8::try_from(id).unwrap_or(OTHER as u8);
            chunk.counts[at] = u32::try_from(count).unwrap_or(u32::MAX);
            chunk.len += 1;
        }
        chunk
    }

    /// Adds its reasons to `counts`.
    pub(crate) fn add_to(&self, counts: &mut ReasonCounts) {
        for at in 0..usize::from(self.len) {
            counts.add(usize::from(self.ids[at]), u64::from(self.counts[at]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_travel_in_chunks_and_add_up_to_the_same_counts() {
        for distinct in [0, 1, 4, 5, 9, MAX_FAILURE_REASONS + 1] {
            let mut counts = ReasonCounts::default();
            for id in 0..distinct {
                counts.add(id, id as u64 + 1);
            }
            let (first, rest) = ReasonChunk::split(&counts);
            let rest: Vec<ReasonChunk> = rest.collect();
            assert_eq!(
                rest.len(),
                distinct.saturating_sub(1) / ReasonChunk::CAPACITY,
                "{distinct}"
            );
            let mut again = ReasonCounts::default();
            first.add_to(&mut again);
            for chunk in &rest {
                chunk.add_to(&mut again);
            }
            assert_eq!(again, counts, "{distinct} reasons");
        }
    }

    #[test]
    fn reasons_past_the_limit_count_as_other() {
        let names = ReasonNames::default();
        let mut counts = ReasonCounts::default();
        for i in 0..100 {
            counts.add(names.id(&format!("reason {i}")), 1);
        }
        counts.add(names.id("reason 0"), 1);
        let mut totals = ReasonTotals::default();
        totals.add_all(&counts);
        totals.add_all(&counts);
        assert_eq!(totals.by_name(&names)["reason 0"], 4);
        let named = counts.by_name(&names);
        assert_eq!(named.len(), MAX_FAILURE_REASONS + 1);
        assert_eq!(named["reason 0"], 2);
        assert_eq!(named["other"], 100 - MAX_FAILURE_REASONS as u64);
        assert_eq!(names.id("reason 5"), 5);
        assert_eq!(names.id("never seen"), OTHER);
    }

    #[test]
    fn threads_adding_the_same_reasons_agree_on_their_numbers() {
        let names = ReasonNames::default();
        let ids: Vec<Vec<usize>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..20).map(|i| names.id(&format!("r{i}"))).collect()))
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
        assert_eq!(names.len.load(Ordering::Relaxed), 20);
    }
}
