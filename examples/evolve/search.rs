//! The search itself, without any monitoring: a population of rules back-tested on a
//! window that walks forward through the prices, a champion that must defend its
//! place on each new window, and tournament selection, crossover, mutation, elitism
//! and newcomers to breed the next generation.

use clap::ValueEnum;
use loopwatch::diversity;

use crate::prices::Rng;
use crate::sandbox::SandboxedBacktests;
use crate::strategy::{self, Failure, Rule, Score};

/// Failure modes the search can be pushed into on purpose, each provoking one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// No mutation, no crossover, the fittest always selected: the population
    /// collapses into clones of one strategy (DiversityCollapse).
    DiversityCollapse,
    /// The proposer keeps returning the same candidates: the population never
    /// changes, so the champion never does (ChampionStaleness).
    StaleChampion,
    /// A misconfigured trade filter makes almost every back-test fail
    /// (LowSuccessRate).
    LowSuccess,
    /// An equity-curve cache that never evicts, with the memory threshold set just
    /// above the host's use at start-up (HighMemoryUsage).
    MemoryLeak,
    /// In generation 10 one back-test never returns, as an evaluation stuck on a
    /// lock or a dead data feed does (LoopStalled).
    Hang,
}

/// The generation whose back-test hangs in the hang scenario.
const HANGING_GENERATION: u64 = 10;

/// Search settings a scenario may change.
#[derive(Debug, Clone, Copy)]
struct Knobs {
    mutation_rate: f64,
    crossover_rate: f64,
    /// Fraction of each generation replaced by fresh random strategies.
    immigrants: f64,
    tournament: usize,
    min_trades: usize,
    /// The population and the back-test window never change.
    frozen: bool,
    leak: bool,
    hang: bool,
}

impl Knobs {
    fn for_scenario(scenario: Option<Scenario>, population: usize) -> Knobs {
        let normal = Knobs {
            mutation_rate: 0.5,
            crossover_rate: 0.6,
            immigrants: 0.2,
            tournament: 3,
            min_trades: 5,
            frozen: false,
            leak: false,
            hang: false,
        };
        match scenario {
            None => normal,
            Some(Scenario::DiversityCollapse) => Knobs {
                mutation_rate: 0.0,
                crossover_rate: 0.0,
                immigrants: 0.0,
                tournament: population,
                ..normal
            },
            Some(Scenario::StaleChampion) => Knobs {
                frozen: true,
                ..normal
            },
            Some(Scenario::LowSuccess) => Knobs {
                min_trades: 150,
                ..normal
            },
            Some(Scenario::MemoryLeak) => Knobs {
                leak: true,
                ..normal
            },
            Some(Scenario::Hang) => Knobs {
                hang: true,
                ..normal
            },
        }
    }
}

/// Where the back-tests run: in this process, or in sandbox containers.
pub enum Backtests {
    Local,
    Sandboxed(SandboxedBacktests),
}

/// What one generation produced.
pub struct Generation {
    /// Each strategy's outcome.
    pub outcomes: Vec<Result<Score, Failure>>,
    /// The best strategy's score on this generation's window.
    pub best: Option<Score>,
    /// Strategies in the population.
    pub size: usize,
    /// Distinct strategies among them.
    pub unique: usize,
    /// Mean pairwise distance of their scaled parameters, 0–1.
    pub diversity: f64,
    /// The champion's fingerprint.
    pub champion: Option<String>,
}

/// The search's state between generations.
pub struct Search {
    prices: Vec<f64>,
    knobs: Knobs,
    seed: u64,
    window: usize,
    step: usize,
    resamples: usize,
    rng: Rng,
    population: Vec<Rule>,
    champion: Option<(Rule, Score)>,
    /// The memory-leak scenario's cache that is never evicted.
    leaked: Vec<Vec<f64>>,
}

impl Search {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        prices: Vec<f64>,
        scenario: Option<Scenario>,
        population: usize,
        seed: u64,
        window: usize,
        resamples: usize,
        generations: u64,
    ) -> Search {
        let mut rng = Rng::new(seed ^ 0xA5A5);
        let window = window.clamp(300, prices.len());
        // A search without end (0 generations) walks at the pace of the default 100
        // and starts over at the beginning of the prices when it reaches their end.
        let pace = if generations == 0 { 100 } else { generations };
        Search {
            step: (prices.len() - window) / pace as usize,
            knobs: Knobs::for_scenario(scenario, population),
            population: (0..population).map(|_| Rule::random(&mut rng)).collect(),
            prices,
            seed,
            window,
            resamples,
            rng,
            champion: None,
            leaked: Vec::new(),
        }
    }

    /// The champion so far.
    pub fn champion(&self) -> Option<&(Rule, Score)> {
        self.champion.as_ref()
    }

    /// Back-tests the population on generation `number`'s window (and resamples of
    /// it), keeps the champion, and breeds the next population.
    pub fn generation(&mut self, number: u64, backtests: &Backtests) -> Generation {
        let frozen = self.knobs.frozen;
        let start = if frozen {
            0
        } else {
            (number as usize - 1) * self.step % (self.prices.len() - self.window + 1)
        };
        let data = &self.prices[start..start + self.window];
        let resample_seed = self.seed ^ if frozen { 0 } else { number };
        if self.knobs.hang && number == HANGING_GENERATION {
            eprintln!("hang scenario: a back-test of generation {number} never returns");
            loop {
                std::thread::park();
            }
        }
        let outcomes: Vec<Result<Score, Failure>> = match backtests {
            Backtests::Sandboxed(runner) => runner.run(
                &self.population,
                data,
                resample_seed,
                self.resamples,
                self.knobs.min_trades,
            ),
            Backtests::Local => {
                let resamples =
                    strategy::resample(data, self.resamples, &mut Rng::new(resample_seed));
                self.population
                    .iter()
                    .map(|rule| strategy::backtest(rule, data, &resamples, self.knobs.min_trades))
                    .collect()
            }
        };
        if self.knobs.leak {
            // The bug: every equity curve is cached and none is evicted, and each
            // generation's entry is padded to 40 MiB of f64s, touched so it is resident.
            for score in outcomes.iter().flatten() {
                self.leaked
                    .push(data.iter().map(|p| p * score.sharpe).collect());
            }
            self.leaked.push(vec![1.0; 40 << 17]);
        }
        let scored: Vec<(Rule, Result<Score, Failure>)> = self
            .population
            .iter()
            .cloned()
            .zip(outcomes.clone())
            .collect();
        let best = self.crown(&scored);
        let vectors: Vec<[f64; 4]> = self.population.iter().map(Rule::vector).collect();
        let generation = Generation {
            outcomes,
            best,
            size: self.population.len(),
            unique: diversity::unique_count(self.population.iter().map(Rule::fingerprint)),
            diversity: diversity::mean_pairwise_distance(&vectors, &[(0.0, 1.0); 4]).unwrap_or(0.0),
            champion: self.champion.as_ref().map(|(rule, _)| rule.fingerprint()),
        };
        self.population = self.next_population(&scored);
        generation
    }

    /// The champion is the best strategy on this generation's data: the incumbent
    /// (kept by elitism) must defend its place on every new window, and keeps it on a tie.
    fn crown(&mut self, scored: &[(Rule, Result<Score, Failure>)]) -> Option<Score> {
        let mut best: Option<(&Rule, Score)> = None;
        for (rule, outcome) in scored {
            let Ok(score) = outcome else { continue };
            let incumbent = self.champion.as_ref().is_some_and(|(c, _)| c == rule);
            let better = best.is_none_or(|(_, b)| score.sharpe > b.sharpe);
            let tie_to_incumbent = best.is_some_and(|(_, b)| score.sharpe == b.sharpe) && incumbent;
            if better || tie_to_incumbent {
                best = Some((rule, *score));
            }
        }
        let (rule, score) = best?;
        self.champion = Some((rule.clone(), score));
        Some(score)
    }

    fn tournament<'a>(&mut self, scored: &'a [(Rule, Result<Score, Failure>)]) -> &'a Rule {
        let fitness = |i: usize| scored[i].1.map_or(f64::NEG_INFINITY, |s| s.sharpe);
        let mut best = self.rng.range(0, scored.len() - 1);
        for _ in 1..self.knobs.tournament.max(1) {
            let other = self.rng.range(0, scored.len() - 1);
            if fitness(other) > fitness(best) {
                best = other;
            }
        }
        &scored[best].0
    }

    fn next_population(&mut self, scored: &[(Rule, Result<Score, Failure>)]) -> Vec<Rule> {
        if self.knobs.frozen {
            return scored.iter().map(|(r, _)| r.clone()).collect();
        }
        let fitness = |x: &Result<Score, Failure>| x.map_or(f64::NEG_INFINITY, |s| s.sharpe);
        let mut ranked: Vec<&(Rule, Result<Score, Failure>)> = scored.iter().collect();
        ranked.sort_by(|a, b| fitness(&b.1).total_cmp(&fitness(&a.1)));
        // Elitism: the two best survive unchanged; a few newcomers keep exploring.
        let mut next: Vec<Rule> = ranked.iter().take(2).map(|(r, _)| r.clone()).collect();
        let newcomers = (scored.len() as f64 * self.knobs.immigrants).round() as usize;
        next.extend((0..newcomers).map(|_| Rule::random(&mut self.rng)));
        while next.len() < scored.len() {
            let parent = self.tournament(scored);
            let mut child = if self.rng.uniform() < self.knobs.crossover_rate {
                let other = self.tournament(scored);
                parent.crossover(other, &mut self.rng)
            } else {
                parent.clone()
            };
            if self.rng.uniform() < self.knobs.mutation_rate {
                child = child.mutate(&mut self.rng);
            }
            next.push(child);
        }
        next
    }
}
