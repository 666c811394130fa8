//! The monitor's clock: one monotonic reading per event, and its wall-clock time
//! without reading the wall clock. The offset between the two clocks is taken at
//! start-up and again about once a second ([`Clock::resync`], by the background
//! clock), so a stepped system clock is followed within a second while the loop's
//! thread reads one monotonic clock per event.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::records::Moment;

/// Monotonic time since the clock started, with the wall-clock time of that start.
#[derive(Debug)]
pub(super) struct Clock {
    epoch: Instant,
    /// Unix time of `epoch` in nanoseconds, as of the last resync.
    offset_ns: AtomicI64,
}

impl Clock {
    /// A clock starting now.
    pub(super) fn new() -> Self {
        let clock = Clock {
            epoch: Instant::now(),
            offset_ns: AtomicI64::new(0),
        };
        clock.resync();
        clock
    }

    /// Takes the offset between the monotonic and the wall clock again.
    pub(super) fn resync(&self) {
        let mono = nanos(self.epoch.elapsed());
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, nanos);
        self.offset_ns
            .store(wall.saturating_sub(mono), Ordering::Relaxed);
    }

    /// Now: one monotonic reading, and its wall-clock time.
    #[inline]
    pub(super) fn now(&self) -> Moment {
        self.moment_at(self.epoch.elapsed())
    }

    /// The moment `mono` after the clock started, with its wall-clock time.
    #[inline]
    pub(super) fn moment_at(&self, mono: Duration) -> Moment {
        let wall_ns = self
            .offset_ns
            .load(Ordering::Relaxed)
            .saturating_add(nanos(mono));
        let wall = UNIX_EPOCH + Duration::from_nanos(u64::try_from(wall_ns).unwrap_or(0));
        Moment::new(mono, wall)
    }
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_follow_both_clocks() {
        let clock = Clock::new();
        let first = clock.now();
        let second = clock.now();
        assert!(second.mono >= first.mono);
        let wall = SystemTime::now();
        let off = wall
            .duration_since(second.wall)
            .unwrap_or_else(|e| e.duration());
        assert!(off < Duration::from_secs(1), "{off:?}");
    }
}
