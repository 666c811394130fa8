//! Daily price series: a seeded generator with market regimes, or a CSV file.

use std::path::Path;

/// A small, fast, seedable generator (xorshift64*), so runs are reproducible.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in [low, high].
    pub fn range(&mut self, low: usize, high: usize) -> usize {
        low + (self.next_u64() % (high - low + 1) as u64) as usize
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// A market regime: daily drift and volatility of log returns.
#[derive(Debug, Clone, Copy)]
struct Regime {
    drift: f64,
    volatility: f64,
    /// Probability of leaving the regime on any day.
    exit: f64,
}

const REGIMES: [Regime; 3] = [
    // Bull: steady gains, calm.
    Regime {
        drift: 0.0006,
        volatility: 0.009,
        exit: 0.01,
    },
    // Bear: losses, turbulent.
    Regime {
        drift: -0.0009,
        volatility: 0.022,
        exit: 0.03,
    },
    // Sideways: no drift, mean-reverting noise.
    Regime {
        drift: 0.0,
        volatility: 0.007,
        exit: 0.02,
    },
];

/// Generates `days` daily closes with regime switching (a Markov chain over bull,
/// bear and sideways markets) and fat-tailed shocks, starting at 100.
pub fn generate(days: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    let mut regime = 0usize;
    let mut price = 100.0f64;
    let mut prices = Vec::with_capacity(days);
    let mut sideways_anchor = price;
    for _ in 0..days {
        if rng.uniform() < REGIMES[regime].exit {
            regime = (regime + 1 + rng.range(0, 1)) % REGIMES.len();
            sideways_anchor = price;
        }
        let r = REGIMES[regime];
        // Occasional jumps give the fat tails of real daily returns.
        let shock = if rng.uniform() < 0.01 {
            rng.normal() * 4.0
        } else {
            rng.normal()
        };
        let pull = if regime == 2 {
            0.05 * (sideways_anchor / price).ln()
        } else {
            0.0
        };
        price *= (r.drift + pull + r.volatility * shock).exp();
        prices.push(price);
    }
    prices
}

/// Loads closes from a CSV file: either one number per line, or a header naming a
/// `close` (or `adj close`) column, as in OHLC exports. Errors name the line.
pub fn load_csv(path: &Path) -> Result<Vec<f64>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, first)) = lines.next() else {
        return Err(format!("{}: the file is empty", path.display()));
    };
    let columns: Vec<String> = first
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    let (close_column, mut prices) = if columns.iter().any(|c| c.parse::<f64>().is_err()) {
        let column = columns
            .iter()
            .position(|c| c == "close" || c == "adj close" || c == "adj_close")
            .or_else(|| (columns.len() == 1).then_some(0))
            .ok_or_else(|| {
                format!(
                    "{}: line 1: no `close` column in the header {first:?}",
                    path.display()
                )
            })?;
        (column, Vec::new())
    } else {
        let close = if columns.len() >= 5 {
            4
        } else {
            columns.len() - 1
        };
        (close, vec![parse_price(path, 1, first, close)?])
    };
    for (index, line) in lines {
        prices.push(parse_price(path, index + 1, line, close_column)?);
    }
    if prices.len() < 300 {
        return Err(format!(
            "{}: {} prices; at least 300 daily closes are needed to back-test",
            path.display(),
            prices.len()
        ));
    }
    Ok(prices)
}

fn parse_price(path: &Path, line_number: usize, line: &str, column: usize) -> Result<f64, String> {
    let field = line.split(',').nth(column).ok_or_else(|| {
        format!(
            "{}: line {line_number}: no column {} in {line:?}",
            path.display(),
            column + 1
        )
    })?;
    let price: f64 = field.trim().parse().map_err(|_| {
        format!(
            "{}: line {line_number}: {:?} is not a number",
            path.display(),
            field.trim()
        )
    })?;
    if !(price.is_finite() && price > 0.0) {
        return Err(format!(
            "{}: line {line_number}: a price must be positive, got {price}",
            path.display()
        ));
    }
    Ok(price)
}
