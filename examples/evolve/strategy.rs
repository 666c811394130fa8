//! Trading rules, their parameters, and a back-test that scores them.

use crate::prices::Rng;

use serde::{Deserialize, Serialize};

/// A parameterised trading rule (long or flat, daily).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Rule {
    /// Long while the fast moving average is above the slow one.
    MaCrossover { fast: usize, slow: usize },
    /// Long while the return over `lookback` days exceeds `threshold`.
    Momentum { lookback: usize, threshold: f64 },
    /// Long when the price is `entry_z` standard deviations below its `window`-day
    /// mean; flat again once it is back within `exit_z`.
    MeanReversion {
        window: usize,
        entry_z: f64,
        exit_z: f64,
    },
}

/// Allowed parameter ranges (mutation and diversity scale by them).
pub const WINDOW: (usize, usize) = (2, 200);
pub const THRESHOLD: (f64, f64) = (-0.05, 0.15);
pub const Z: (f64, f64) = (0.0, 3.0);

/// Back-test outcome of a strategy that could be scored.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Score {
    /// Annualised Sharpe ratio, mean over the original series and its resamples.
    pub sharpe: f64,
    /// Worst maximum drawdown over those series, as a positive fraction.
    pub max_drawdown: f64,
    /// Round trips on the original series.
    pub trades: usize,
}

/// Why a strategy could not be scored (reported to loopwatch as a failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Failure {
    DegenerateParameters,
    TooFewTrades,
    NoVariance,
    /// The back-test's sandbox container could not run or answer.
    SandboxUnavailable,
}

impl Failure {
    pub fn reason(self) -> &'static str {
        match self {
            Failure::DegenerateParameters => "degenerate parameters",
            Failure::TooFewTrades => "too few trades",
            Failure::NoVariance => "no return variance",
            Failure::SandboxUnavailable => "sandbox unavailable",
        }
    }
}

impl Rule {
    pub fn random(rng: &mut Rng) -> Rule {
        match rng.range(0, 2) {
            0 => Rule::MaCrossover {
                fast: rng.range(2, 60),
                slow: rng.range(10, 200),
            },
            1 => Rule::Momentum {
                lookback: rng.range(5, 120),
                threshold: THRESHOLD.0 + rng.uniform() * (THRESHOLD.1 - THRESHOLD.0),
            },
            _ => Rule::MeanReversion {
                window: rng.range(5, 100),
                entry_z: 0.5 + rng.uniform() * 2.0,
                exit_z: rng.uniform() * 1.0,
            },
        }
    }

    /// A stable identity: the rule and its rounded parameters.
    pub fn fingerprint(&self) -> String {
        match self {
            Rule::MaCrossover { fast, slow } => format!("ma-cross-{fast}-{slow}"),
            Rule::Momentum {
                lookback,
                threshold,
            } => format!("momentum-{lookback}-{threshold:.3}"),
            Rule::MeanReversion {
                window,
                entry_z,
                exit_z,
            } => {
                format!("mean-rev-{window}-{entry_z:.2}-{exit_z:.2}")
            }
        }
    }

    /// The rule as a point in [0, 1]^4 (kind, then its parameters scaled by their
    /// ranges), for `loopwatch::diversity::mean_pairwise_distance`.
    pub fn vector(&self) -> [f64; 4] {
        let w = |v: usize| (v - WINDOW.0) as f64 / (WINDOW.1 - WINDOW.0) as f64;
        let t = |v: f64| (v - THRESHOLD.0) / (THRESHOLD.1 - THRESHOLD.0);
        let z = |v: f64| (v - Z.0) / (Z.1 - Z.0);
        match *self {
            Rule::MaCrossover { fast, slow } => [0.0, w(fast), w(slow), 0.0],
            Rule::Momentum {
                lookback,
                threshold,
            } => [0.5, w(lookback), t(threshold), 0.0],
            Rule::MeanReversion {
                window,
                entry_z,
                exit_z,
            } => [1.0, w(window), z(entry_z), z(exit_z)],
        }
    }

    /// A nearby rule: each parameter nudged, clamped to its range.
    pub fn mutate(&self, rng: &mut Rng) -> Rule {
        let nudge = |v: usize, rng: &mut Rng| {
            let step = (v as f64 * 0.25).max(2.0);
            ((v as f64 + (rng.uniform() * 2.0 - 1.0) * step).round() as usize)
                .clamp(WINDOW.0, WINDOW.1)
        };
        let jitter = |v: f64, range: (f64, f64), rng: &mut Rng| {
            (v + (rng.uniform() * 2.0 - 1.0) * (range.1 - range.0) * 0.1).clamp(range.0, range.1)
        };
        if rng.uniform() < 0.05 {
            return Rule::random(rng);
        }
        match *self {
            Rule::MaCrossover { fast, slow } => Rule::MaCrossover {
                fast: nudge(fast, rng),
                slow: nudge(slow, rng),
            },
            Rule::Momentum {
                lookback,
                threshold,
            } => Rule::Momentum {
                lookback: nudge(lookback, rng),
                threshold: jitter(threshold, THRESHOLD, rng),
            },
            Rule::MeanReversion {
                window,
                entry_z,
                exit_z,
            } => Rule::MeanReversion {
                window: nudge(window, rng),
                entry_z: jitter(entry_z, Z, rng),
                exit_z: jitter(exit_z, Z, rng),
            },
        }
    }

    /// A child of two rules: parameters blended when both are of one kind, otherwise
    /// one parent's rule.
    pub fn crossover(&self, other: &Rule, rng: &mut Rng) -> Rule {
        let mix = |a: usize, b: usize, rng: &mut Rng| if rng.uniform() < 0.5 { a } else { b };
        let blend = |a: f64, b: f64, rng: &mut Rng| {
            let w = rng.uniform();
            a * w + b * (1.0 - w)
        };
        match (self, other) {
            (
                Rule::MaCrossover { fast: f1, slow: s1 },
                Rule::MaCrossover { fast: f2, slow: s2 },
            ) => Rule::MaCrossover {
                fast: mix(*f1, *f2, rng),
                slow: mix(*s1, *s2, rng),
            },
            (
                Rule::Momentum {
                    lookback: l1,
                    threshold: t1,
                },
                Rule::Momentum {
                    lookback: l2,
                    threshold: t2,
                },
            ) => Rule::Momentum {
                lookback: mix(*l1, *l2, rng),
                threshold: blend(*t1, *t2, rng),
            },
            (
                Rule::MeanReversion {
                    window: w1,
                    entry_z: e1,
                    exit_z: x1,
                },
                Rule::MeanReversion {
                    window: w2,
                    entry_z: e2,
                    exit_z: x2,
                },
            ) => Rule::MeanReversion {
                window: mix(*w1, *w2, rng),
                entry_z: blend(*e1, *e2, rng),
                exit_z: blend(*x1, *x2, rng),
            },
            _ => {
                if rng.uniform() < 0.5 {
                    self.clone()
                } else {
                    other.clone()
                }
            }
        }
    }

    /// Daily positions (1 long, 0 flat) decided at each close.
    fn positions(&self, prices: &[f64]) -> Result<Vec<u8>, Failure> {
        let n = prices.len();
        let mut positions = vec![0u8; n];
        match *self {
            Rule::MaCrossover { fast, slow } => {
                if fast >= slow || slow >= n {
                    return Err(Failure::DegenerateParameters);
                }
                let mut prefix = vec![0.0; n + 1];
                for (i, p) in prices.iter().enumerate() {
                    prefix[i + 1] = prefix[i] + p;
                }
                let ma = |i: usize, w: usize| (prefix[i + 1] - prefix[i + 1 - w]) / w as f64;
                for (i, position) in positions.iter_mut().enumerate().skip(slow - 1) {
                    *position = u8::from(ma(i, fast) > ma(i, slow));
                }
            }
            Rule::Momentum {
                lookback,
                threshold,
            } => {
                if lookback >= n {
                    return Err(Failure::DegenerateParameters);
                }
                for i in lookback..n {
                    positions[i] = u8::from(prices[i] / prices[i - lookback] - 1.0 > threshold);
                }
            }
            Rule::MeanReversion {
                window,
                entry_z,
                exit_z,
            } => {
                if exit_z >= entry_z || window < 5 || window >= n {
                    return Err(Failure::DegenerateParameters);
                }
                let mut long = false;
                let (mut sum, mut sum_sq) = (0.0, 0.0);
                for i in 0..n {
                    sum += prices[i];
                    sum_sq += prices[i] * prices[i];
                    if i >= window {
                        sum -= prices[i - window];
                        sum_sq -= prices[i - window] * prices[i - window];
                    }
                    if i + 1 < window {
                        continue;
                    }
                    let mean = sum / window as f64;
                    let sd = (sum_sq / window as f64 - mean * mean).max(0.0).sqrt();
                    if sd > 0.0 {
                        let z = (prices[i] - mean) / sd;
                        if !long && z < -entry_z {
                            long = true;
                        } else if long && z > -exit_z {
                            long = false;
                        }
                    }
                    positions[i] = u8::from(long);
                }
            }
        }
        Ok(positions)
    }
}

/// Sharpe, max drawdown and round trips of a rule on one price path.
fn run_path(rule: &Rule, prices: &[f64], cost: f64) -> Result<(f64, f64, usize), Failure> {
    let positions = rule.positions(prices)?;
    let (mut sum, mut sum_sq, mut trades) = (0.0, 0.0, 0usize);
    let (mut equity, mut peak, mut drawdown) = (1.0f64, 1.0f64, 0.0f64);
    for t in 1..prices.len() {
        let held = f64::from(positions[t - 1]);
        let switched = t >= 2 && positions[t - 1] != positions[t - 2];
        if switched && positions[t - 1] == 1 {
            trades += 1;
        }
        let r = held * (prices[t] / prices[t - 1] - 1.0) - if switched { cost } else { 0.0 };
        sum += r;
        sum_sq += r * r;
        equity *= 1.0 + r;
        peak = peak.max(equity);
        drawdown = drawdown.max(1.0 - equity / peak);
    }
    let days = (prices.len() - 1) as f64;
    let mean = sum / days;
    let sd = (sum_sq / days - mean * mean).max(0.0).sqrt();
    if sd < 1e-12 {
        return Err(Failure::NoVariance);
    }
    Ok((mean / sd * 252f64.sqrt(), drawdown, trades))
}

/// Resampled price paths for robustness: a stationary block bootstrap of the daily
/// returns (blocks of about 20 days), each rebuilt into prices from 100.
pub fn resample(prices: &[f64], paths: usize, rng: &mut Rng) -> Vec<Vec<f64>> {
    let returns: Vec<f64> = prices.windows(2).map(|w| w[1] / w[0]).collect();
    (0..paths)
        .map(|_| {
            let mut path = Vec::with_capacity(prices.len());
            let mut price = 100.0;
            path.push(price);
            let mut i = rng.range(0, returns.len() - 1);
            while path.len() < prices.len() {
                price *= returns[i];
                path.push(price);
                i = if rng.uniform() < 0.05 {
                    rng.range(0, returns.len() - 1)
                } else {
                    (i + 1) % returns.len()
                };
            }
            path
        })
        .collect()
}

/// Scores a rule on the original series (which decides the trade count) and on
/// each resampled path: mean Sharpe, worst drawdown.
pub fn backtest(
    rule: &Rule,
    prices: &[f64],
    resamples: &[Vec<f64>],
    min_trades: usize,
) -> Result<Score, Failure> {
    const COST: f64 = 0.0005; // 5 basis points per switch
    let (sharpe, drawdown, trades) = run_path(rule, prices, COST)?;
    if trades < min_trades {
        return Err(Failure::TooFewTrades);
    }
    let (mut total, mut worst) = (sharpe, drawdown);
    for path in resamples {
        let (s, d, _) = run_path(rule, path, COST)?;
        total += s;
        worst = worst.max(d);
    }
    Ok(Score {
        sharpe: total / (resamples.len() + 1) as f64,
        max_drawdown: worst,
        trades,
    })
}
