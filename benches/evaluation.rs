//! Cost of recording one evaluation from Rust: `Monitor::evaluation(id)` and `ok()`,
//! a start and an end, on the loop's (or a worker's) thread. Each sends an event; the
//! id, copied once into an `Arc<str>`, is the only allocation. The state's side
//! (`settle_evaluation`: the bounded map, the workers, the durations, the gauges) is
//! timed apart, as the background clock pays it.
//!
//! Results are in docs/performance.md ("The benches") with the machine they ran on;
//! reproduce with `cargo bench --bench evaluation`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use loopwatch::Monitor;

/// Evaluations recorded between two settles (two events each: within the queue).
const BATCH: u64 = 200;

fn evaluation(c: &mut Criterion) {
    let owned = Monitor::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .final_export(false)
        .build()
        .unwrap();
    let ids: Vec<String> = (0..BATCH).map(|i| format!("prog-{i}")).collect();
    let (monitor, ids) = (&owned, &ids);
    let timed = |settled: bool| {
        move |b: &mut criterion::Bencher<'_>| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let batch = BATCH.min(iters - done);
                    let start = Instant::now();
                    for id in &ids[..batch as usize] {
                        monitor.evaluation(black_box(id)).ok();
                    }
                    let recorded = start.elapsed();
                    // Settles the queue, as the background clock would.
                    let start = Instant::now();
                    black_box(monitor.firing_alerts());
                    spent += if settled { start.elapsed() } else { recorded };
                    done += batch;
                }
                spent
            })
        }
    };
    c.bench_function("record_evaluation_start_end", timed(false));
    c.bench_function("settle_evaluation", timed(true));
    owned.shutdown();
}

criterion_group!(benches, evaluation);
criterion_main!(benches);
