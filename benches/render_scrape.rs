//! Cost of serving one scrape: collecting every instrument of the catalog through the
//! OpenTelemetry SDK and the Prometheus bridge, and writing the text exposition.
//!
//! Target: under 1 ms, and per family 5× cheaper than prometheus_client's render in
//! the Python stack. Results are in docs/performance.md; reproduce with
//! `cargo bench --bench render_scrape`, or `scripts/yardstick` for the
//! comparison.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use loopwatch::{Monitor, Population};

fn render_scrape(c: &mut Criterion) {
    let monitor = Monitor::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .final_export(false)
        .build()
        .unwrap();
    for _ in 0..10 {
        let mut iteration = monitor.start_iteration();
        iteration.record_success(1.1, 0.2);
        iteration.record_failure("too few trades");
        iteration.record_population(Population::new(20, 15, 0.7).with_champion("c"));
    }
    // The families a render holds, for the per-family comparison.
    let families = monitor.render_metrics().unwrap().matches("# TYPE ").count();
    eprintln!("render_scrape families={families}");
    c.bench_function("render_full_catalog", |b| {
        b.iter(|| black_box(monitor.render_metrics().unwrap()))
    });
    monitor.shutdown();
}

criterion_group!(benches, render_scrape);
criterion_main!(benches);
