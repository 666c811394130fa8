//! Cost of recording one whole iteration on the loop's thread: start, 20 strategy
//! outcomes (15 successes, 5 failures), the population with its champion, finish.
//!
//! Target: under 5 µs (0.0005% of a 1 s iteration). Results are in the README's
//! "Performance" section with the machine they ran on; reproduce with
//! `cargo bench --bench record_iteration`.
//!
//! Measured on 2 vCPU AMD EPYC (Linux 6.18, Rust 1.95, release): 0.81 µs per
//! whole iteration, evaluator included.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use loopwatch::{Monitor, Population};

fn record_iteration(c: &mut Criterion) {
    let monitor = Monitor::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .final_export(false)
        .build()
        .unwrap();
    let champions = ["ma-cross-10-50", "momentum-20"];
    let mut n = 0usize;
    c.bench_function("record_iteration_20_outcomes", |b| {
        b.iter(|| {
            n += 1;
            let mut iteration = monitor.start_iteration();
            for i in 0..20 {
                if i % 4 == 3 {
                    iteration.record_failure(black_box("too few trades"));
                } else {
                    iteration.record_success(black_box(1.0 + i as f64 * 0.01), black_box(0.12));
                }
            }
            // The champion changes now and then, as in a real search.
            let champion = champions[(n / 50) % 2];
            iteration.record_population(Population::new(20, 17, 0.8).with_champion(champion));
            black_box(iteration.finish())
        })
    });
    monitor.shutdown();
}

criterion_group!(benches, record_iteration);
criterion_main!(benches);
