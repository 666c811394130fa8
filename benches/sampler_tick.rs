//! Cost of one host and process sampler tick: host memory plus this process's RSS and
//! CPU time, read from `/proc/self/stat` and `/proc/meminfo` through files kept open.
//!
//! Target: under 200 µs of CPU, and 4× cheaper than the Python stack's psutil tick.
//! Results are in docs/performance.md; reproduce with
//! `cargo bench --bench sampler_tick`, or `scripts/yardstick` for the comparison.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use loopwatch::sample::HostSampler;

fn sampler_tick(c: &mut Criterion) {
    let mut sampler = HostSampler::for_current_process();
    sampler.tick();
    c.bench_function("host_sampler_tick", |b| {
        b.iter(|| black_box(sampler.tick()))
    });
}

criterion_group!(benches, sampler_tick);
criterion_main!(benches);
