//! The run's best-so-far curve: the best Sharpe ratio of any strategy against the
//! iterations, the wall time and the LLM spend, as `metrics_final.json` keeps it for
//! `loopwatch compare`, with the champion's changes at the same three places (the
//! page marks them on its curve against the spend).
//!
//! Best-so-far is a step function: it changes only when a strategy beats every one
//! before it. So one point per improvement, plus the run's end (its summary), draws the
//! whole curve exactly, however long the run. The points are bounded: once
//! [`MAX_PROGRESS_POINTS`] are kept, every second one is dropped and from then on only
//! every second improvement is kept (then every fourth, and so on), while the latest
//! improvement is always there. So a run that improves on every one of a million
//! iterations still keeps the curve's shape evenly over its whole length, at a coarser
//! step, and says how many points it dropped ([`Thinned`] keeps them). The champion's
//! changes are kept the same way, within the same bound.

use serde::Serialize;

use super::thinned::Thinned;

/// Points of the best-so-far curve kept at most (the latest improvement besides).
pub(crate) const MAX_PROGRESS_POINTS: usize = 512;

/// One improvement of the best Sharpe ratio so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct ProgressPoint {
    /// The iteration in which it improved.
    pub(crate) iteration: u64,
    /// When that iteration ended, in seconds since the run started.
    pub(crate) elapsed_seconds: f64,
    /// The run's LLM spend when that iteration ended, in US dollars (0 without calls).
    pub(crate) llm_cost_usd: f64,
    /// The best Sharpe ratio so far, from that iteration on.
    pub(crate) best_sharpe: f64,
}

/// One change of the champion (the last of a batch the loop merged).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct ChampionMark {
    /// The iteration in which it changed.
    pub(crate) iteration: u64,
    /// When the change was reported, in seconds since the run started.
    pub(crate) elapsed_seconds: f64,
    /// The run's LLM spend at that moment, in US dollars (0 without calls).
    pub(crate) llm_cost_usd: f64,
}

/// The improvements of a run and its champion's changes, each bounded to
/// [`MAX_PROGRESS_POINTS`] and the latest, thinned as [`Thinned`] thins.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Progress {
    points: Thinned<ProgressPoint>,
    champions: Thinned<ChampionMark>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            points: Thinned::with_capacity(MAX_PROGRESS_POINTS),
            champions: Thinned::with_capacity(MAX_PROGRESS_POINTS),
        }
    }
}

impl Progress {
    /// Keeps an improvement: each `stride`-th one, and always the latest.
    pub(crate) fn push(&mut self, point: ProgressPoint) {
        self.points.push(point);
    }

    /// The points of the curve, oldest first: the kept ones and the latest.
    pub(crate) fn points(&self) -> Vec<ProgressPoint> {
        self.points.points()
    }

    /// Improvements left out of [`points`](Self::points) to keep the bound.
    pub(crate) fn points_dropped(&self) -> u64 {
        self.points.dropped()
    }

    /// Keeps a change of the champion: each `stride`-th one, and always the latest.
    pub(crate) fn push_champion(&mut self, mark: ChampionMark) {
        self.champions.push(mark);
    }

    /// The champion's changes, oldest first: the kept ones and the latest.
    pub(crate) fn champion_changes(&self) -> Vec<ChampionMark> {
        self.champions.points()
    }

    /// Champion changes left out of [`champion_changes`](Self::champion_changes) to
    /// keep the bound.
    pub(crate) fn champion_changes_dropped(&self) -> u64 {
        self.champions.dropped()
    }
}

impl Serialize for Progress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut progress = s.serialize_struct("Progress", 5)?;
        progress.serialize_field("score", "best_sharpe")?;
        progress.serialize_field("points", &self.points())?;
        progress.serialize_field("points_dropped", &self.points_dropped())?;
        progress.serialize_field("champion_changes", &self.champion_changes())?;
        progress.serialize_field("champion_changes_dropped", &self.champion_changes_dropped())?;
        progress.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(i: u64) -> ProgressPoint {
        ProgressPoint {
            iteration: i,
            elapsed_seconds: i as f64 * 0.5,
            llm_cost_usd: i as f64 * 0.01,
            best_sharpe: i as f64,
        }
    }

    #[test]
    fn points_are_kept_until_the_bound() {
        let mut progress = Progress::default();
        for i in 1..=MAX_PROGRESS_POINTS as u64 {
            progress.push(point(i));
        }
        let points = progress.points();
        assert_eq!(points.len(), MAX_PROGRESS_POINTS);
        assert_eq!(progress.points_dropped(), 0);
        assert!(points.iter().zip(1..).all(|(p, i)| p.iteration == i));
    }

    #[test]
    fn past_the_bound_every_second_point_goes_and_the_ends_stay() {
        let mut progress = Progress::default();
        let total = 100_000u64;
        for i in 1..=total {
            progress.push(point(i));
            let points = progress.points();
            assert!(points.len() <= MAX_PROGRESS_POINTS + 1);
            assert_eq!(points.last().unwrap().iteration, i, "the latest is kept");
        }
        let points = progress.points();
        assert_eq!(points.first().unwrap().iteration, 1, "the first stays");
        assert_eq!(points.last().unwrap().iteration, total, "the latest stays");
        assert_eq!(
            points.len() as u64 + progress.points_dropped(),
            total,
            "every point is kept or counted"
        );
        assert!(
            points.windows(2).all(|w| w[0].iteration < w[1].iteration),
            "still in order"
        );
        // Spread over the whole run, not bunched at one end: no gap is more than a
        // few times the mean gap.
        let mean_gap = total as f64 / points.len() as f64;
        let widest = points
            .windows(2)
            .map(|w| w[1].iteration - w[0].iteration)
            .max()
            .unwrap();
        assert!(
            (widest as f64) <= 2.0 * mean_gap,
            "widest gap {widest}, mean {mean_gap}"
        );
        assert!(points.len() > MAX_PROGRESS_POINTS / 2);
    }

    #[test]
    fn serialised_with_its_score_its_champion_changes_and_what_it_dropped() {
        let mut progress = Progress::default();
        progress.push(point(3));
        progress.push_champion(ChampionMark {
            iteration: 2,
            elapsed_seconds: 1.0,
            llm_cost_usd: 0.02,
        });
        let json = serde_json::to_value(&progress).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "score": "best_sharpe",
                "points": [{"iteration": 3, "elapsed_seconds": 1.5, "llm_cost_usd": 0.03, "best_sharpe": 3.0}],
                "points_dropped": 0,
                "champion_changes": [{"iteration": 2, "elapsed_seconds": 1.0, "llm_cost_usd": 0.02}],
                "champion_changes_dropped": 0,
            })
        );
    }

    #[test]
    fn champion_changes_are_bounded_like_the_points() {
        let mut progress = Progress::default();
        let total = 10_000u64;
        for i in 1..=total {
            progress.push_champion(ChampionMark {
                iteration: i,
                elapsed_seconds: i as f64,
                llm_cost_usd: i as f64 * 0.001,
            });
        }
        let marks = progress.champion_changes();
        assert!(marks.len() <= MAX_PROGRESS_POINTS + 1);
        assert_eq!(marks.first().unwrap().iteration, 1);
        assert_eq!(marks.last().unwrap().iteration, total);
        assert_eq!(
            marks.len() as u64 + progress.champion_changes_dropped(),
            total
        );
    }
}
