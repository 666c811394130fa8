//! Cost of serving the embedded page with a full history: 600 iterations drawn (the
//! history's bound), every panel, the failure reasons, the alert timeline, requested
//! over loopback HTTP as a browser would (`GET /`, one connection per request).
//!
//! Target: 5 ms per render, a page of at most 150 KB. Reproduce with
//! `cargo bench --bench render_page`.
//!
//! Measured on 2 vCPU AMD EPYC (Linux 6.18, Rust 1.95, release): see
//! docs/performance.md.

#[path = "../tests/support/quiet.rs"]
mod quiet;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;

use criterion::{criterion_group, criterion_main, Criterion};
use loopwatch::Population;
use quiet::quiet_monitor;

fn get_page(addr: std::net::SocketAddr) -> usize {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(
            format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let mut body = Vec::with_capacity(128 << 10);
    stream.read_to_end(&mut body).unwrap();
    body.len()
}

fn render_page(c: &mut Criterion) {
    let monitor = quiet_monitor().build().unwrap();
    for i in 0..600u64 {
        let mut it = monitor.start_iteration();
        for k in 0..10 {
            it.record_success(0.5 + (i % 13) as f64 * 0.05 + k as f64 * 0.01, 0.1);
        }
        it.record_failure(
            [
                "too few trades",
                "no return variance",
                "degenerate parameters",
            ][(i % 3) as usize],
        );
        let champion = format!("strategy-{}", i / 25);
        it.record_population(
            Population::new(20, 12, 0.3 + (i % 5) as f64 * 0.05).with_champion(&champion),
        );
        it.finish();
    }
    let addr = monitor.local_addr();
    let size = get_page(addr);
    assert!(size < 150_000, "page of {size} bytes");
    c.bench_function("render_page_600_iterations", |b| b.iter(|| get_page(addr)));
    monitor.shutdown();
}

criterion_group!(benches, render_page);
criterion_main!(benches);
