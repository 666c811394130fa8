//! Cost of one container sample on the cgroup source: ten idle containers of this run,
//! each one's memory (usage, inactive file cache, limit) and CPU time read from its
//! cgroup files, with no request to Docker. Needs a running Docker Engine
//! (`scripts/test` starts one).
//!
//! Target: 10 µs per container per sample. Reproduce with
//! `cargo bench --bench container_read`; `scripts/container-cost N` measures the same
//! in a live loop beside dockerd's own CPU.
//!
//! Measured on 2 vCPU AMD EPYC (Linux 6.18, Rust 1.95, release, cgroup v1): see the
//! docs/containers.md.

use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use loopwatch::Monitor;

const CONTAINERS: usize = 10;

fn container_read(c: &mut Criterion) {
    std::env::set_var("LOOPWATCH_CONTAINER_STATS", "cgroup");
    let monitor = Monitor::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .final_export(false)
        .build()
        .unwrap();
    let image = std::env::var("LOOPWATCH_SANDBOX_IMAGE").unwrap_or("loopwatch-sandbox:1".into());
    let labels: Vec<String> = monitor
        .labels()
        .into_iter()
        .flat_map(|(k, v)| ["--label".to_string(), format!("{k}={v}")])
        .collect();
    for _ in 0..CONTAINERS {
        let run = Command::new("docker")
            .args(["run", "-d", "--network", "none"])
            .args(&labels)
            .args([&image, "sleep", "600"])
            .output()
            .expect("the docker CLI (this bench needs a running Docker Engine)");
        assert!(
            run.status.success(),
            "docker run failed: is dockerd running?"
        );
    }
    let followed = || {
        monitor
            .render_metrics()
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("container_memory_usage{"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while followed() < CONTAINERS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(followed(), CONTAINERS, "every container followed");
    c.bench_function("container_sample_10_containers", |b| {
        b.iter(|| monitor.sample_containers_now());
    });
    black_box(&monitor);
    // Shutdown removes this run's containers.
    monitor.shutdown();
}

criterion_group!(benches, container_read);
criterion_main!(benches);
