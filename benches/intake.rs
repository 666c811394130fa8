//! Cost, inside `loopwatch run`, of one iteration reported by a supervised loop (16
//! successes, 4 failures, the population), each line parsed and applied by the intake:
//! as the Python client writes it (start, population, one summarised `outcomes` line,
//! end) and as a minimal client would (a line per strategy: 23 lines).
//!
//! Measured on 2 vCPU AMD EPYC (Linux 6.18, Rust 1.95, release): 2.2 µs and 6.4 µs.
//!
//! At 100 iterations per second this is the supervisor's whole per-iteration work
//! apart from reading the socket; `scripts/python-bench` measures the process end to
//! end. Reproduce with `cargo bench --bench intake`.

#[path = "../tests/support/quiet.rs"]
mod quiet;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use quiet::quiet_monitor;

fn python_client_lines() -> Vec<Vec<u8>> {
    vec![
        br#"{"v":1,"type":"iteration_start","t":1764380000.125}"#.to_vec(),
        br#"{"v":1,"type":"population","size":20,"unique":17,"diversity":0.62,"champion":"ma-10-50"}"#.to_vec(),
        br#"{"v":1,"type":"outcomes","successes":16,"sharpe":[16,12.0,1.5],"drawdown":[16,1.2000000000000002],"rejected_sharpe":0,"rejected_drawdown":[],"failures":{"too few trades":4}}"#.to_vec(),
        br#"{"v":1,"type":"iteration_end","t":1764380000.75}"#.to_vec(),
    ]
}

fn line_per_strategy() -> Vec<Vec<u8>> {
    let mut lines = vec![br#"{"v":1,"type":"iteration_start","t":1764380000.125}"#.to_vec()];
    for i in 0..16 {
        lines.push(
            format!(
                r#"{{"v":1,"type":"success","sharpe":{},"drawdown":{}}}"#,
                0.1 * f64::from(i),
                0.01 * f64::from(i)
            )
            .into_bytes(),
        );
    }
    for _ in 0..4 {
        lines.push(br#"{"v":1,"type":"failure","reason":"too few trades"}"#.to_vec());
    }
    lines.push(
        br#"{"v":1,"type":"population","size":20,"unique":17,"diversity":0.62,"champion":"ma-10-50"}"#
            .to_vec(),
    );
    lines.push(br#"{"v":1,"type":"iteration_end","t":1764380000.75}"#.to_vec());
    lines
}

fn intake(c: &mut Criterion) {
    let monitor = quiet_monitor().build().unwrap();
    let intake = monitor.supervision().intake();
    for (name, lines) in [
        ("intake_iteration_python_client", python_client_lines()),
        ("intake_iteration_line_per_strategy", line_per_strategy()),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| {
                for line in &lines {
                    intake.handle_line(black_box(line));
                }
            })
        });
    }
    monitor.shutdown();
}

criterion_group!(benches, intake);
criterion_main!(benches);
