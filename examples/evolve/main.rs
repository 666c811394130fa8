//! The main job: an evolutionary search over trading strategies, watched by loopwatch.
//!
//! A population of parameterised rules (moving-average crossover, momentum, mean
//! reversion) is back-tested on daily prices, scored by annualised Sharpe and max
//! drawdown, and evolved by tournament selection, crossover and mutation while a
//! champion is kept (`search.rs`). This file is the part that concerns loopwatch:
//! build a monitor, report each generation to it, shut it down. loopwatch serves the
//! metrics on :8000/metrics and a live dashboard on http://localhost:8000/, evaluates
//! the alerts, and writes the final export when the run ends (also on Ctrl-C).
//!
//! ```sh
//! cargo run --example evolve                               # 100 generations
//! cargo run --example evolve -- --scenario diversity-collapse
//! cargo run --example evolve -- --prices prices.csv --iterations 50
//! cargo run --example evolve -- --iterations 0             # until Ctrl-C
//! cargo run --example evolve -- --linger forever           # the dashboard stays up
//! ```
//! Prometheus, Alertmanager and Grafana can watch it with the files in `prometheus/`
//! and `grafana/`; see docs/evolve.md.

mod prices;
mod sandbox;
mod search;
mod strategy;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use loopwatch::sample::HostSampler;
use loopwatch::{Monitor, Population, Thresholds};

use search::{Backtests, Generation, Scenario, Search};

/// An evolutionary strategy search watched by loopwatch.
#[derive(Debug, Parser)]
#[command(
    name = "evolve",
    version,
    about = "An evolutionary search over trading strategies, watched by loopwatch"
)]
struct Args {
    /// Generations to run; 0 runs until stopped (Ctrl-C or SIGTERM ends the search
    /// after its generation, cleanly).
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
    /// Keep serving /metrics and the dashboard this long after the last generation
    /// ("5m"), or `forever`: until Ctrl-C or SIGTERM.
    #[arg(long, value_parser = parse_linger, default_value = "0s")]
    linger: Duration,
}

/// `--linger`: a duration, or `forever` (read as [`Duration::MAX`]).
fn parse_linger(text: &str) -> Result<Duration, String> {
    if text == "forever" {
        return Ok(Duration::MAX);
    }
    humantime::parse_duration(text).map_err(|e| format!("{e} (or `forever`)"))
}

/// The generation numbers of a run: 1 to `iterations`, or without end for 0.
fn generations(iterations: u64) -> impl Iterator<Item = u64> {
    (1..).take_while(move |number| iterations == 0 || *number <= iterations)
}

fn main() {
    if let Some(job) = sandbox::worker_job() {
        // Inside a sandbox container: back-test one job and print the outcomes.
        exit_on_error(sandbox::work(&job));
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    exit_on_error(if args.no_monitor {
        run_unmonitored(&args)
    } else {
        run(&args)
    });
}

fn exit_on_error(result: Result<(), String>) {
    if let Err(message) = result {
        eprintln!("error: {message}");
        std::process::exit(2);
    }
}

fn new_search(args: &Args) -> Result<Search, String> {
    if args.population < 4 {
        return Err("--population must be at least 4".into());
    }
    let prices = match &args.prices {
        Some(path) => prices::load_csv(path)?,
        None => prices::generate(args.days.max(300), args.seed),
    };
    Ok(Search::new(
        prices,
        args.scenario,
        args.population,
        args.seed,
        args.window,
        args.resamples,
        args.iterations,
    ))
}

/// The monitor: the flags that override loopwatch's settings, signals handled.
fn build_monitor(args: &Args) -> Result<Monitor, loopwatch::Error> {
    let mut builder = Monitor::builder().signals(loopwatch::Signals::Graceful);
    if let Some(listen) = args.listen {
        builder = builder.listen(listen);
    }
    if let Some(dir) = &args.output_dir {
        builder = builder.output_dir(dir);
    }
    if !args.alertmanager.is_empty() {
        builder = builder.alertmanager_urls(args.alertmanager.clone());
    }
    if args.scenario == Some(Scenario::MemoryLeak) {
        // Demonstration only: fire once the leak has grown by 1% of host memory.
        let used = HostSampler::for_current_process()
            .tick()
            .host_memory_fraction();
        let threshold = (used + 0.01).min(0.99);
        eprintln!(
            "memory-leak scenario: HighMemoryUsage threshold lowered to {:.1}% of host memory",
            threshold * 100.0
        );
        builder = builder.thresholds(
            Thresholds::default()
                .with_memory_fraction(threshold)
                .unwrap()
                .with_memory_clear_fraction(threshold - 0.005)
                .unwrap(),
        );
    }
    if args.scenario == Some(Scenario::Hang) {
        // Demonstration only: generations take a fraction of a second, so a stall
        // floor of 5 s (instead of 60 s) shows LoopStalled within seconds.
        eprintln!("hang scenario: LoopStalled floor lowered to 5 s");
        builder = builder.thresholds(
            Thresholds::default()
                .with_stall_floor(Duration::from_secs(5))
                .unwrap(),
        );
    }
    builder.build()
}

/// The search, watched: each generation is one loopwatch iteration.
fn run(args: &Args) -> Result<(), String> {
    let mut search = new_search(args)?;
    let monitor = build_monitor(args).map_err(|e| e.to_string())?;
    let backtests = match args.sandbox {
        Some(_) => Backtests::Sandboxed(sandbox::SandboxedBacktests {
            sandbox: monitor.sandbox(),
            image: args.sandbox_image.clone(),
            workers: args.sandbox_workers.max(1),
        }),
        None => Backtests::Local,
    };
    eprintln!(
        "dashboard: http://{0}/   metrics: http://{0}/metrics",
        monitor.local_addr()
    );
    let started = Instant::now();
    let mut completed = 0;
    for number in generations(args.iterations) {
        if monitor.stop_requested() {
            eprintln!("stopping after generation {completed} as requested");
            break;
        }
        let mut iteration = monitor.start_iteration();
        let generation = search.generation(number, &backtests);
        for outcome in &generation.outcomes {
            match outcome {
                Ok(score) => iteration.record_success(score.sharpe, score.max_drawdown),
                Err(failure) => iteration.record_failure(failure.reason()),
            }
        }
        let mut population = Population::new(
            generation.size as u64,
            generation.unique as u64,
            generation.diversity,
        );
        if let Some(champion) = &generation.champion {
            population = population.with_champion(champion);
        }
        iteration.record_population(population);
        let summary = iteration.finish();
        let firing: Vec<&str> = monitor.firing_alerts().iter().map(|a| a.as_str()).collect();
        println!(
            "{} | stale {:>3} | alerts: {}",
            progress(number, &generation),
            summary.champion_staleness,
            if firing.is_empty() {
                "-".to_string()
            } else {
                firing.join(",")
            },
        );
        completed = number;
    }
    report_end(&search, completed, started);
    // No more iterations: lingering to be scraped is not a stall.
    monitor.done();

    if !args.linger.is_zero() && !monitor.stop_requested() {
        // `forever` (or any duration past the clock's range) lingers until stopped.
        let until = Instant::now().checked_add(args.linger);
        match until {
            Some(_) => eprintln!("serving for {:?} more (Ctrl-C to end now)", args.linger),
            None => eprintln!("serving until stopped (Ctrl-C to end)"),
        }
        while until.is_none_or(|until| Instant::now() < until) && !monitor.stop_requested() {
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
    Ok(())
}

/// The same search without loopwatch, for overhead comparisons.
fn run_unmonitored(args: &Args) -> Result<(), String> {
    if args.sandbox.is_some() {
        return Err("--sandbox needs loopwatch (drop --no-monitor)".into());
    }
    let mut search = new_search(args)?;
    let started = Instant::now();
    let mut completed = 0;
    for number in generations(args.iterations) {
        let generation = search.generation(number, &Backtests::Local);
        println!("{}", progress(number, &generation));
        completed = number;
    }
    report_end(&search, completed, started);
    Ok(())
}

/// The line printed per generation: best Sharpe, success rate, diversity.
fn progress(number: u64, generation: &Generation) -> String {
    let successes = generation.outcomes.iter().filter(|o| o.is_ok()).count();
    format!(
        "gen {number:>4} | best Sharpe {:>6} | success {:>5.1}% | diversity {:.3}",
        generation
            .best
            .map_or("-".to_string(), |s| format!("{:.2}", s.sharpe)),
        100.0 * successes as f64 / generation.size as f64,
        generation.diversity,
    )
}

fn report_end(search: &Search, completed: u64, started: Instant) {
    match search.champion() {
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
        started.elapsed().as_secs_f64()
    );
}
