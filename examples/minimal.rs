//! The shortest real loop watched by loopwatch: a random search over one parameter.
//!
//! Run with `cargo run --example minimal`; metrics are served on :8000/metrics (or
//! `LOOPWATCH_LISTEN`) while it runs, and the final export lands in the current
//! directory (or `LOOPWATCH_OUTPUT_DIR`) when it ends.

use loopwatch::{diversity, Monitor, Population};

fn main() -> Result<(), loopwatch::Error> {
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(std::io::stderr)
        .init();
    let monitor = Monitor::builder()
        .signals(loopwatch::Signals::Graceful)
        .build()?;
    let mut rng: u64 = 42;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % 10_000) as f64 / 10_000.0
    };
    let mut champion = (f64::MIN, String::new());

    for _ in 0..20 {
        if monitor.stop_requested() {
            break;
        }
        let mut iteration = monitor.start_iteration();
        let population: Vec<f64> = (0..16).map(|_| (next() * 20.0).round() / 20.0).collect();
        for &weight in &population {
            std::thread::sleep(std::time::Duration::from_millis(5)); // the "back-test"
            if weight < 0.1 {
                iteration.record_failure("weight too small to trade");
                continue;
            }
            let sharpe = 2.0 * weight - weight * weight + 0.3 * (next() - 0.5);
            iteration.record_success(sharpe, 0.3 * (1.0 - weight));
            if sharpe > champion.0 {
                champion = (sharpe, format!("weight-{weight:.2}"));
            }
        }
        let fingerprints = population.iter().map(|w| w.to_bits());
        iteration.record_population(
            Population::new(
                population.len() as u64,
                diversity::unique_count(fingerprints.clone()) as u64,
                diversity::distinct_fraction(fingerprints),
            )
            .with_champion(&champion.1),
        );
        let summary = iteration.finish();
        println!(
            "iteration {:>2}: {} ok, {} failed, champion {} (Sharpe {:.2})",
            summary.number, summary.successes, summary.failures, champion.1, champion.0
        );
    }

    let report = monitor.shutdown();
    if let Some(files) = report.files {
        for path in [files.prometheus_text, files.json].into_iter().flatten() {
            println!("final metrics: {}", path.display());
        }
    }
    Ok(())
}
