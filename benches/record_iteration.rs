//! Cost of recording one whole iteration on the loop's thread: start, 20 strategy
//! outcomes (15 successes, 5 failures), the population with its champion, finish.
//!
//! Two measurements, because the work is split between two threads:
//!
//! - `record_iteration_20_outcomes`: what the loop's thread pays. Finishing queues the
//!   completed iteration; the books, rules, history and gauges are settled off the
//!   loop's thread (every 250 ms, or by whoever reads first). Batches of 100 are timed,
//!   and the queue is settled between batches, untimed, as the background clock does
//!   for a loop of up to 400 iterations a second (a faster one fills the queue of 512
//!   events, one an iteration, and settles it on its own thread).
//! - `settle_iteration`: what settling one of those iterations costs the thread that
//!   does it (the evaluator included), timed over the same batches.
//!
//! Results are in docs/performance.md with the machine they ran on;
//! reproduce with `cargo bench --bench record_iteration`, or `scripts/yardstick` for
//! the side-by-side comparison with the Python stack.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use loopwatch::{Monitor, Population};

/// Iterations recorded between two settles.
const BATCH: u64 = 100;

fn record_one(monitor: &Monitor, n: u64) {
    const CHAMPIONS: [&str; 2] = ["ma-cross-10-50", "momentum-20"];
    let mut iteration = monitor.start_iteration();
    for i in 0..20 {
        if i % 4 == 3 {
            iteration.record_failure(black_box("too few trades"));
        } else {
            iteration.record_success(black_box(1.0 + i as f64 * 0.01), black_box(0.12));
        }
    }
    // The champion changes now and then, as in a real search.
    let champion = CHAMPIONS[(n / 50) as usize % 2];
    iteration.record_population(Population::new(20, 17, 0.8).with_champion(champion));
    black_box(iteration.finish());
}

fn record_iteration(c: &mut Criterion) {
    let monitor = Monitor::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .final_export(false)
        .build()
        .unwrap();
    let mut n = 0u64;
    c.bench_function("record_iteration_20_outcomes", |b| {
        b.iter_custom(|iters| {
            let mut recording = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let batch = BATCH.min(iters - done);
                let start = Instant::now();
                for _ in 0..batch {
                    n += 1;
                    record_one(&monitor, n);
                }
                recording += start.elapsed();
                done += batch;
                // Settles the queue, as the background clock would.
                black_box(monitor.firing_alerts());
            }
            recording
        })
    });
    c.bench_function("settle_iteration", |b| {
        b.iter_custom(|iters| {
            let mut settling = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let batch = BATCH.min(iters - done);
                for _ in 0..batch {
                    n += 1;
                    record_one(&monitor, n);
                }
                let start = Instant::now();
                black_box(monitor.firing_alerts());
                settling += start.elapsed();
                done += batch;
            }
            settling
        })
    });
    monitor.shutdown();
}

criterion_group!(benches, record_iteration);
criterion_main!(benches);
