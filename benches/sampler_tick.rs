//! Cost of one host and process sampler tick: host memory plus this process's RSS and
//! CPU time, read through one reused sysinfo `System`.
//!
//! Target: under 200 µs of CPU. Results are in the README's "Performance" section;
//! reproduce with `cargo bench --bench sampler_tick`.
//!
//! Measured on 2 vCPU AMD EPYC (Linux 6.18, Rust 1.95, release): 44 µs per tick.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use loopwatch::HostSampler;

fn sampler_tick(c: &mut Criterion) {
    let mut sampler = HostSampler::for_current_process();
    sampler.tick();
    c.bench_function("host_sampler_tick", |b| {
        b.iter(|| black_box(sampler.tick()))
    });
}

criterion_group!(benches, sampler_tick);
criterion_main!(benches);
