//! Diversity measures for a population of strategies, each bounded to [0, 1], so that
//! loops need not invent their own before reporting `population_diversity`.
//!
//! * [`distinct_fraction`]: how many strategies are genuinely different, by fingerprint.
//! * [`mean_pairwise_distance`]: how far apart the strategies' parameters are, on
//!   average, with each parameter scaled by its allowed range.

use std::collections::HashSet;
use std::hash::Hash;

/// The number of distinct items (by equality of their fingerprints).
///
/// ```
/// assert_eq!(loopwatch::diversity::unique_count(["a", "b", "a"]), 2);
/// ```
pub fn unique_count<T: Hash + Eq>(fingerprints: impl IntoIterator<Item = T>) -> usize {
    fingerprints.into_iter().collect::<HashSet<_>>().len()
}

/// Fraction of the population that is distinct: `(unique − 1) / (n − 1)`.
///
/// 0.0 means every strategy is a clone of one; 1.0 means all differ. Populations of
/// fewer than two have no diversity (0.0). Subtracting the first strategy makes a
/// population of clones read 0 whatever its size; the plainer `unique / n` would read
/// 0.1 for ten clones, exactly at the collapse threshold.
///
/// ```
/// use loopwatch::diversity::distinct_fraction;
/// assert_eq!(distinct_fraction(["x"; 10]), 0.0);
/// assert_eq!(distinct_fraction(["a", "b", "c", "d"]), 1.0);
/// assert_eq!(distinct_fraction(["a", "a", "b"]), 0.5);
/// ```
pub fn distinct_fraction<T: Hash + Eq>(fingerprints: impl IntoIterator<Item = T>) -> f64 {
    let mut seen = HashSet::new();
    let mut n = 0usize;
    for fingerprint in fingerprints {
        n += 1;
        seen.insert(fingerprint);
    }
    if n < 2 {
        return 0.0;
    }
    (seen.len() - 1) as f64 / (n - 1) as f64
}

/// Why a distance-based diversity could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DiversityError {
    /// A parameter vector's length differs from the number of bounds.
    #[error("strategy {index} has {found} parameters, the bounds describe {expected}")]
    Dimension {
        /// Position of the offending vector.
        index: usize,
        /// Its length.
        found: usize,
        /// The number of bounds.
        expected: usize,
    },
    /// A bound is not finite or its upper end is not above its lower end.
    #[error("bound {index} ({low}, {high}) must be finite with low < high")]
    Bound {
        /// Position of the offending bound.
        index: usize,
        /// Its lower end.
        low: f64,
        /// Its upper end.
        high: f64,
    },
    /// A parameter is NaN or infinite.
    #[error("strategy {index} has a parameter that is not a finite number")]
    NotFinite {
        /// Position of the offending vector.
        index: usize,
    },
}

/// Mean pairwise distance between parameter vectors, normalised to [0, 1].
///
/// Each parameter is scaled by its range in `bounds` (values outside are clamped), the
/// Euclidean distance of two scaled vectors is divided by its largest possible value
/// `√dims`, and the result is averaged over every pair. 0.0 means all vectors are
/// equal; 1.0 is reached only by two strategies at opposite corners of the space.
/// Fewer than two vectors, or no dimensions, give 0.0. Cost is O(n² · dims).
///
/// ```
/// use loopwatch::diversity::mean_pairwise_distance;
/// let bounds = [(0.0, 10.0), (0.0, 1.0)];
/// // Two strategies at opposite corners: as far apart as the space allows.
/// let d = mean_pairwise_distance(&[vec![0.0, 0.0], vec![10.0, 1.0]], &bounds).unwrap();
/// assert!((d - 1.0).abs() < 1e-12);
/// // Identical strategies.
/// assert_eq!(mean_pairwise_distance(&[[5.0, 0.5]; 3], &bounds).unwrap(), 0.0);
/// ```
pub fn mean_pairwise_distance<V: AsRef<[f64]>>(
    vectors: &[V],
    bounds: &[(f64, f64)],
) -> Result<f64, DiversityError> {
    for (index, &(low, high)) in bounds.iter().enumerate() {
        if !(low.is_finite() && high.is_finite() && low < high) {
            return Err(DiversityError::Bound { index, low, high });
        }
    }
    let mut scaled: Vec<Vec<f64>> = Vec::with_capacity(vectors.len());
    for (index, vector) in vectors.iter().enumerate() {
        let vector = vector.as_ref();
        if vector.len() != bounds.len() {
            return Err(DiversityError::Dimension {
                index,
                found: vector.len(),
                expected: bounds.len(),
            });
        }
        if vector.iter().any(|v| !v.is_finite()) {
            return Err(DiversityError::NotFinite { index });
        }
        scaled.push(
            vector
                .iter()
                .zip(bounds)
                .map(|(&v, &(low, high))| ((v - low) / (high - low)).clamp(0.0, 1.0))
                .collect(),
        );
    }
    if scaled.len() < 2 || bounds.is_empty() {
        return Ok(0.0);
    }
    let max_distance = (bounds.len() as f64).sqrt();
    let mut total = 0.0;
    let mut pairs = 0u64;
    for (i, a) in scaled.iter().enumerate() {
        for b in &scaled[i + 1..] {
            let squared: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
            total += squared.sqrt() / max_distance;
            pairs += 1;
        }
    }
    Ok((total / pairs as f64).clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn distinct_fraction_known_answers() {
        let cases: &[(&[u32], f64)] = &[
            (&[], 0.0),
            (&[7], 0.0),
            (&[1, 1], 0.0),
            (&[1, 2], 1.0),
            (&[1, 1, 1, 1, 2], 0.25),
            (&[1, 2, 3, 1, 2], 0.5),
            (&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 1.0),
        ];
        for (population, expected) in cases {
            assert_eq!(
                distinct_fraction(population.iter()),
                *expected,
                "{population:?}"
            );
        }
    }

    #[test]
    fn pairwise_distance_known_answers() {
        let bounds = [(0.0, 4.0)];
        // One dimension: pairs (0,2)=0.5, (0,4)=1, (2,4)=0.5 → mean 2/3.
        let d = mean_pairwise_distance(&[[0.0], [2.0], [4.0]], &bounds).unwrap();
        assert!((d - 2.0 / 3.0).abs() < 1e-12, "{d}");
        // Two dimensions, one step along one axis: 1/√2 of the diagonal.
        let d =
            mean_pairwise_distance(&[[0.0, 0.0], [1.0, 0.0]], &[(0.0, 1.0), (0.0, 1.0)]).unwrap();
        assert!((d - 1.0 / 2f64.sqrt()).abs() < 1e-12, "{d}");
        // Values outside the bounds are clamped to them.
        let d = mean_pairwise_distance(&[[-10.0], [10.0]], &bounds).unwrap();
        assert_eq!(d, 1.0);
    }

    #[test]
    fn pairwise_distance_rejects_bad_input() {
        assert!(matches!(
            mean_pairwise_distance(&[vec![1.0], vec![1.0, 2.0]], &[(0.0, 1.0)]),
            Err(DiversityError::Dimension { index: 1, .. })
        ));
        assert!(matches!(
            mean_pairwise_distance(&[[f64::NAN]], &[(0.0, 1.0)]),
            Err(DiversityError::NotFinite { index: 0 })
        ));
        assert!(matches!(
            mean_pairwise_distance(&[[0.5]], &[(1.0, 1.0)]),
            Err(DiversityError::Bound { index: 0, .. })
        ));
    }

    proptest! {
        #[test]
        fn both_measures_stay_in_unit_interval(
            population in proptest::collection::vec(proptest::collection::vec(-1e6f64..1e6, 3), 0..30),
            fingerprints in proptest::collection::vec(0u8..8, 0..50),
        ) {
            let bounds = [(-10.0, 10.0), (0.0, 1.0), (-1e3, 1e3)];
            let d = mean_pairwise_distance(&population, &bounds).unwrap();
            prop_assert!((0.0..=1.0).contains(&d));
            let f = distinct_fraction(fingerprints.iter());
            prop_assert!((0.0..=1.0).contains(&f));
        }
    }
}
