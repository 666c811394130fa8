//! [`Thinned`]: a sequence kept evenly over its whole length within a fixed bound.
//!
//! Points are kept one in `stride` (the 0th, the `stride`-th, the `2·stride`-th …),
//! starting with every one. When the bound is reached, every second kept point is
//! dropped and the stride doubles, so what is kept is always the ordinals that are
//! multiples of a power of two: spread evenly from the first point to the latest,
//! however long the sequence runs. The latest point is always there besides, so the
//! end of a curve is never stale. The storage is reserved once, at construction:
//! pushing never allocates.

/// Points of a sequence, thinned evenly to at most `capacity` (and the latest).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Thinned<T> {
    /// Every `stride`-th point (ordinals 0, `stride`, 2·`stride` …), oldest first.
    kept: Vec<T>,
    /// The latest point, when `kept` does not end with it.
    latest: Option<T>,
    /// Points pushed.
    seen: u64,
    /// Keep one point in this many (a power of two).
    stride: u64,
    /// Points kept at most, besides the latest.
    capacity: usize,
}

impl<T: Copy> Thinned<T> {
    /// An empty sequence keeping at most `capacity` points (at least 2) and the
    /// latest, its storage reserved now.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(2);
        Thinned {
            kept: Vec::with_capacity(capacity),
            latest: None,
            seen: 0,
            stride: 1,
            capacity,
        }
    }

    /// Keeps a point: each `stride`-th one, and always the latest. Never allocates.
    pub(crate) fn push(&mut self, point: T) {
        let ordinal = self.seen;
        self.seen += 1;
        if ordinal % self.stride != 0 {
            self.latest = Some(point);
            return;
        }
        if self.kept.len() >= self.capacity {
            // Kept are the ordinals 0, stride, 2·stride …: keep every second one.
            self.stride *= 2;
            let mut index = 0;
            self.kept.retain(|_| {
                index += 1;
                index % 2 == 1
            });
            if ordinal % self.stride != 0 {
                self.latest = Some(point);
                return;
            }
        }
        self.kept.push(point);
        self.latest = None;
    }

    /// The points kept, oldest first: the thinned ones and the latest.
    pub(crate) fn points(&self) -> Vec<T> {
        let mut points = Vec::with_capacity(self.len());
        points.extend(self.kept.iter().copied().chain(self.latest));
        points
    }

    /// How many points [`points`](Self::points) returns.
    pub(crate) fn len(&self) -> usize {
        self.kept.len() + usize::from(self.latest.is_some())
    }

    /// Points pushed and left out of [`points`](Self::points) to keep the bound.
    pub(crate) fn dropped(&self) -> u64 {
        self.seen - self.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_point_is_kept_until_the_bound() {
        let mut thinned = Thinned::with_capacity(600);
        for i in 0..600u64 {
            thinned.push(i);
        }
        assert_eq!(thinned.points(), (0..600).collect::<Vec<_>>());
        assert_eq!(thinned.dropped(), 0);
    }

    #[test]
    fn past_the_bound_the_points_stay_even_over_the_whole_run_and_bounded() {
        let capacity = 600;
        let mut thinned = Thinned::with_capacity(capacity);
        let reserved = thinned.kept.capacity();
        let total = 200_000u64;
        for i in 0..total {
            thinned.push(i);
            assert!(thinned.len() <= capacity + 1, "bounded at {i}");
            assert_eq!(thinned.points().last(), Some(&i), "the latest is kept");
        }
        assert_eq!(
            thinned.kept.capacity(),
            reserved,
            "the storage never grew: pushing does not allocate"
        );
        let points = thinned.points();
        assert_eq!(points[0], 0, "the first stays");
        assert_eq!(points.len() as u64 + thinned.dropped(), total);
        assert!(points.windows(2).all(|w| w[0] < w[1]), "in order");
        // Even: every gap but the last (to the latest) is the same power of two.
        let stride = points[1] - points[0];
        assert!(stride.is_power_of_two());
        assert!(points[..points.len() - 1]
            .windows(2)
            .all(|w| w[1] - w[0] == stride));
        assert!(points[points.len() - 1] - points[points.len() - 2] <= stride);
        // Not bunched: at least half the bound is in use.
        assert!(points.len() > capacity / 2, "{} points", points.len());
    }

    #[test]
    fn a_tiny_bound_still_keeps_the_first_and_the_latest() {
        let mut thinned = Thinned::with_capacity(0);
        for i in 0..1000u64 {
            thinned.push(i);
        }
        let points = thinned.points();
        assert_eq!(points.first(), Some(&0));
        assert_eq!(points.last(), Some(&999));
        assert!(points.len() <= 3);
    }
}
