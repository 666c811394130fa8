//! The main job: an evolutionary search over trading strategies, watched by loopwatch.
//!
//! A population of parameterised rules (moving-average crossover, momentum, mean
//! reversion) is back-tested on daily prices, scored by annualised Sharpe and max
//! drawdown, and evolved by tournament selection, crossover and mutation while a
//! champion is kept. loopwatch serves the metrics on :8000/metrics and a live
//! dashboard on http://localhost:8000/, evaluates the alerts, and writes the final
//! export when the run ends (also on Ctrl-C).
//!
//! ```sh
//! cargo run --example evolve                               # 100 generations
//! cargo run --example evolve -- --scenario diversity-collapse
//! cargo run --example evolve -- --prices prices.csv --iterations 50
//! ```
//! Prometheus, Alertmanager and Grafana can watch it with the files in `prometheus/`
//! and `grafana/`; see the README.

mod prices;
mod sandbox;
mod strategy;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use loopwatch::{diversity, HostSampler, Monitor, Population, Thresholds};

use prices::Rng;
use strategy::{Failure, Rule, Score};

/// Failure modes the search can be pushed into on purpose, each provoking one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
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
}

/// An evolutionary strategy search watched by loopwatch.
#[derive(Debug, Parser)]
#[command(
    name = "evolve",
    version,
    about = "An evolutionary search over trading strategies, watched by loopwatch"
)]
struct Args {
    /// Generations to run.
    #[arg(long, default_value_t = 100)]
    iterations: u64,
    /// Strategies per generation.
    #[arg(long, default_value_t = 80)]
    population: usize,
    /// Seed of the price generator and the search.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Daily prices from a CSV file (one close per line, or a header with a `close`
    /// column as in OHLC exports) instead of the seeded generator.
    #[arg(long)]
    prices: Option<PathBuf>,
    /// Days of generated prices.
    #[arg(long, default_value_t = 2000)]
    days: usize,
    /// Days each generation back-tests on; the window walks forward through the
    /// prices over the run, so strategies must keep working on new data.
    #[arg(long, default_value_t = 750)]
    window: usize,
    /// Bootstrap resamples of the window each strategy is also back-tested on.
    #[arg(long, default_value_t = 48)]
    resamples: usize,
    /// Address of /metrics and the dashboard (default 0.0.0.0:8000, or LOOPWATCH_LISTEN).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Directory of the final export (default ., or LOOPWATCH_OUTPUT_DIR).
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Alertmanager base URL (repeatable; default LOOPWATCH_ALERTMANAGER_URLS).
    #[arg(long)]
    alertmanager: Vec<String>,
    /// Provoke one alert on purpose.
    #[arg(long, value_enum)]
    scenario: Option<Scenario>,
    /// Run the same search without loopwatch (for overhead comparisons).
    #[arg(long)]
    no_monitor: bool,
    /// Run each generation's back-tests in sandbox containers (the only backend:
    /// `docker`), through loopwatch's labelled sandbox launcher.
    #[arg(long, value_parser = ["docker"])]
    sandbox: Option<String>,
    /// Image of the sandbox containers (built by scripts/sandbox-image).
    #[arg(long, env = "LOOPWATCH_SANDBOX_IMAGE", default_value = sandbox::DEFAULT_IMAGE)]
    sandbox_image: String,
    /// Concurrent sandbox containers per generation.
    #[arg(long, default_value_t = 4)]
    sandbox_workers: usize,
    /// Abort the process (as a crash would) in this generation, while its sandbox
    /// containers run: they are left as orphans for the next start to clean up.
    #[arg(long)]
    crash_in_generation: Option<u64>,
    /// Internal: run as a sandbox back-test worker (reads EVOLVE_JOB).
    #[arg(long, hide = true)]
    worker: bool,
    /// Keep serving /metrics and the dashboard this long after the last generation.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    linger: Duration,
}

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
        }
    }
}

fn tournament<'a>(
    scored: &'a [(Rule, Result<Score, Failure>)],
    size: usize,
    rng: &mut Rng,
) -> &'a Rule {
    let fitness = |i: usize| scored[i].1.map_or(f64::NEG_INFINITY, |s| s.sharpe);
    let mut best = rng.range(0, scored.len() - 1);
    for _ in 1..size.max(1) {
        let other = rng.range(0, scored.len() - 1);
        if fitness(other) > fitness(best) {
            best = other;
        }
    }
    &scored[best].0
}

fn next_generation(
    scored: &[(Rule, Result<Score, Failure>)],
    knobs: &Knobs,
    rng: &mut Rng,
) -> Vec<Rule> {
    if knobs.frozen {
        return scored.iter().map(|(r, _)| r.clone()).collect();
    }
    let mut ranked: Vec<&(Rule, Result<Score, Failure>)> = scored.iter().collect();
    ranked.sort_by(|a, b| {
        let f = |x: &Result<Score, Failure>| x.map_or(f64::NEG_INFINITY, |s| s.sharpe);
        f(&b.1).total_cmp(&f(&a.1))
    });
    // Elitism: the two best survive unchanged; a few newcomers keep exploring.
    let mut next: Vec<Rule> = ranked.iter().take(2).map(|(r, _)| r.clone()).collect();
    let newcomers = (scored.len() as f64 * knobs.immigrants).round() as usize;
    next.extend((0..newcomers).map(|_| Rule::random(rng)));
    while next.len() < scored.len() {
        let parent = tournament(scored, knobs.tournament, rng);
        let mut child = if rng.uniform() < knobs.crossover_rate {
            parent.crossover(tournament(scored, knobs.tournament, rng), rng)
        } else {
            parent.clone()
        };
        if rng.uniform() < knobs.mutation_rate {
            child = child.mutate(rng);
        }
        next.push(child);
    }
    next
}

fn build_monitor(args: &Args, leak: bool) -> Result<Monitor, loopwatch::Error> {
    let mut builder = Monitor::builder().handle_signals(true);
    if let Some(listen) = args.listen {
        builder = builder.listen(listen);
    }
    if let Some(dir) = &args.output_dir {
        builder = builder.output_dir(dir);
    }
    if !args.alertmanager.is_empty() {
        builder = builder.alertmanager_urls(args.alertmanager.clone());
    }
    if leak {
        // Demonstration only: fire once the leak has grown by 1% of host memory.
        let used = HostSampler::for_current_process()
            .tick()
            .host_memory_fraction();
        let threshold = (used + 0.01).min(0.99);
        eprintln!(
            "memory-leak scenario: HighMemoryUsage threshold lowered to {:.1}% of host memory",
            threshold * 100.0
        );
        builder = builder.thresholds(Thresholds {
            memory_fraction: threshold,
            memory_clear_fraction: threshold - 0.005,
            ..Thresholds::default()
        });
    }
    builder.build()
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let result = if args.worker {
        sandbox::worker()
    } else {
        run(&args)
    };
    if let Err(message) = result {
        eprintln!("error: {message}");
        std::process::exit(2);
    }
}

fn run(args: &Args) -> Result<(), String> {
    if args.population < 4 {
        return Err("--population must be at least 4".into());
    }
    let prices = match &args.prices {
        Some(path) => prices::load_csv(path)?,
        None => prices::generate(args.days.max(300), args.seed),
    };
    let knobs = Knobs::for_scenario(args.scenario, args.population);
    let monitor = if args.no_monitor {
        None
    } else {
        Some(build_monitor(args, knobs.leak).map_err(|e| e.to_string())?)
    };
    let sandboxed = match (&args.sandbox, &monitor) {
        (Some(_), Some(m)) => Some(sandbox::SandboxedBacktests {
            sandbox: m.sandbox(),
            image: args.sandbox_image.clone(),
            workers: args.sandbox_workers.max(1),
        }),
        (Some(_), None) => return Err("--sandbox needs loopwatch (drop --no-monitor)".into()),
        _ => None,
    };
    if let Some(m) = &monitor {
        eprintln!(
            "dashboard: http://{0}/   metrics: http://{0}/metrics",
            m.local_addr()
        );
    }

    let mut rng = Rng::new(args.seed ^ 0xA5A5);
    let window = args.window.clamp(300, prices.len());
    let step = (prices.len() - window) / args.iterations.max(1) as usize;
    let mut population: Vec<Rule> = (0..args.population)
        .map(|_| Rule::random(&mut rng))
        .collect();
    let mut champion: Option<(Rule, Score)> = None;
    let mut leaked: Vec<Vec<f64>> = Vec::new();
    let started = Instant::now();
    let mut completed = 0;

    for generation in 1..=args.iterations {
        if monitor.as_ref().is_some_and(Monitor::stop_requested) {
            eprintln!("stopping after generation {completed} as requested");
            break;
        }
        let mut iteration = monitor.as_ref().map(Monitor::start_iteration);
        // Walk forward: this generation's data, and resamples of it.
        let start = if knobs.frozen {
            0
        } else {
            (generation as usize - 1) * step
        };
        let data = &prices[start..start + window];
        let resample_seed = args.seed ^ if knobs.frozen { 0 } else { generation };
        if args.crash_in_generation == Some(generation) {
            if let Some(runner) = &sandboxed {
                // Start this generation's containers (held busy, so they are still
                // running), then die the way a crash does.
                let rules = population.clone();
                let data = data.to_vec();
                std::thread::scope(|scope| {
                    scope.spawn(|| {
                        runner.run(
                            &rules,
                            &data,
                            resample_seed,
                            args.resamples,
                            knobs.min_trades,
                            300,
                        )
                    });
                    std::thread::sleep(Duration::from_secs(3));
                    eprintln!("crashing on purpose in generation {generation}");
                    std::process::abort();
                });
            }
            eprintln!("crashing on purpose in generation {generation}");
            std::process::abort();
        }
        let outcomes: Vec<Result<Score, Failure>> = match &sandboxed {
            Some(runner) => runner.run(
                &population,
                data,
                resample_seed,
                args.resamples,
                knobs.min_trades,
                0,
            ),
            None => {
                let resamples =
                    strategy::resample(data, args.resamples, &mut Rng::new(resample_seed));
                population
                    .iter()
                    .map(|rule| strategy::backtest(rule, data, &resamples, knobs.min_trades))
                    .collect()
            }
        };
        let scored: Vec<(Rule, Result<Score, Failure>)> =
            population.iter().cloned().zip(outcomes).collect();
        // The champion is the best strategy on this generation's data: the incumbent
        // (kept by elitism) must defend its place on every new window.
        let mut successes = 0u32;
        let mut best: Option<(&Rule, Score)> = None;
        for (rule, outcome) in &scored {
            match outcome {
                Ok(score) => {
                    successes += 1;
                    if let Some(it) = iteration.as_mut() {
                        it.record_success(score.sharpe, score.max_drawdown);
                    }
                    let incumbent = champion.as_ref().is_some_and(|(c, _)| c == rule);
                    let better = best.is_none_or(|(_, b)| score.sharpe > b.sharpe);
                    let tie_to_incumbent =
                        best.is_some_and(|(_, b)| score.sharpe == b.sharpe) && incumbent;
                    if better || tie_to_incumbent {
                        best = Some((rule, *score));
                    }
                    if knobs.leak {
                        // The bug: every equity curve is cached and none is evicted.
                        leaked.push(data.iter().map(|p| p * score.sharpe).collect());
                    }
                }
                Err(failure) => {
                    if let Some(it) = iteration.as_mut() {
                        it.record_failure(failure.reason());
                    }
                }
            }
        }
        if knobs.leak {
            // … and each generation's cache entry is padded to 40 MiB of f64s, touched
            // so that it is resident, as a real cache of intraday curves would be.
            leaked.push(vec![1.0; 40 << 17]);
        }
        let best_sharpe = best.map_or("-".to_string(), |(_, s)| format!("{:.2}", s.sharpe));
        if let Some((rule, score)) = best {
            champion = Some((rule.clone(), score));
        }
        let fingerprints: Vec<String> = population.iter().map(Rule::fingerprint).collect();
        let vectors: Vec<[f64; 4]> = population.iter().map(Rule::vector).collect();
        let spread = diversity::mean_pairwise_distance(&vectors, &[(0.0, 1.0); 4]).unwrap_or(0.0);
        let unique = diversity::unique_count(fingerprints.iter());
        let champion_id = champion.as_ref().map(|(r, _)| r.fingerprint());
        if let Some(mut it) = iteration.take() {
            let mut report = Population::new(population.len() as u64, unique as u64, spread);
            if let Some(id) = &champion_id {
                report = report.with_champion(id);
            }
            it.record_population(report);
            let summary = it.finish();
            let m = monitor.as_ref().expect("an iteration implies a monitor");
            let firing: Vec<&str> = m.firing_alerts().iter().map(|a| a.as_str()).collect();
            println!(
                "gen {generation:>4} | best Sharpe {best_sharpe:>6} | success {:>5.1}% | diversity {spread:.3} | stale {:>3} | alerts: {}",
                100.0 * f64::from(successes) / population.len() as f64,
                summary.champion_staleness,
                if firing.is_empty() { "-".to_string() } else { firing.join(",") },
            );
        } else {
            println!(
                "gen {generation:>4} | best Sharpe {best_sharpe:>6} | success {:>5.1}% | diversity {spread:.3}",
                100.0 * f64::from(successes) / population.len() as f64
            );
        }
        completed = generation;
        population = next_generation(&scored, &knobs, &mut rng);
    }

    let wall = started.elapsed();
    match &champion {
        Some((rule, score)) => println!(
            "champion: {} (Sharpe {:.3}, max drawdown {:.1}%, {} trades)",
            rule.fingerprint(),
            score.sharpe,
            score.max_drawdown * 100.0,
            score.trades
        ),
        None => println!("champion: none (no strategy succeeded)"),
    }
    println!(
        "generations: {completed}, wall time {:.3} s",
        wall.as_secs_f64()
    );
    if let Some(monitor) = monitor {
        if !args.linger.is_zero() && !monitor.stop_requested() {
            eprintln!("serving for {:?} more (Ctrl-C to end now)", args.linger);
            let until = Instant::now() + args.linger;
            while Instant::now() < until && !monitor.stop_requested() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let report = monitor.shutdown();
        if let Some(files) = report.files {
            for (what, outcome) in [("metrics", files.prometheus_text), ("summary", files.json)] {
                match outcome {
                    Ok(path) => println!("final {what}: {}", path.display()),
                    Err(err) => println!("final {what} not written: {err}"),
                }
            }
        }
    }
    drop(leaked);
    Ok(())
}
