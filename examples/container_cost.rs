//! What watching sandbox containers costs, on each source of their numbers: starts N
//! idle containers owned by this loop, lets loopwatch sample them every second for a
//! while, and prints dockerd's CPU (from /proc) and loopwatch's own time per container
//! per sample. `scripts/container-cost N` runs it on both sources.
//!
//! ```sh
//! LOOPWATCH_CONTAINER_STATS=cgroup cargo run --release --example container_cost -- 40 30
//! ```

use std::process::Command;
use std::time::{Duration, Instant};

use loopwatch::Monitor;

/// CPU ticks (user + system) dockerd has used, from /proc/<pid>/stat.
fn dockerd_ticks() -> u64 {
    let pid = Command::new("pgrep")
        .args(["-x", "dockerd"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .expect("dockerd runs");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("dockerd's stat");
    // Fields after the command name: state is field 3, utime 14, stime 15.
    let after = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(40);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let image = std::env::var("LOOPWATCH_SANDBOX_IMAGE").unwrap_or("loopwatch-sandbox:1".into());
    let source = std::env::var("LOOPWATCH_CONTAINER_STATS").unwrap_or("auto".into());
    let monitor = Monitor::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .final_export(false)
        .build()
        .expect("loopwatch starts");
    let labels: Vec<String> = monitor
        .labels()
        .into_iter()
        .flat_map(|(k, v)| ["--label".to_string(), format!("{k}={v}")])
        .collect();
    for _ in 0..n {
        let status = Command::new("docker")
            .args(["run", "-d", "--network", "none"])
            .args(&labels)
            .args([&image, "sleep", "3600"])
            .output()
            .expect("docker runs");
        assert!(status.status.success(), "docker run failed");
    }
    // Until every container is followed and has a CPU reading.
    let active = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("container_cpu_usage{"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while active(&monitor.render_metrics().unwrap_or_default()) < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    let hz = 100.0; // USER_HZ on Linux
    let ticks_before = dockerd_ticks();
    let started = Instant::now();
    let mut spent = Duration::ZERO;
    let mut samples = 0u32;
    while started.elapsed() < Duration::from_secs(seconds) {
        let t = Instant::now();
        monitor.sample_containers_now();
        spent += t.elapsed();
        samples += 1;
        std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
    }
    let wall = started.elapsed().as_secs_f64();
    let dockerd_percent = (dockerd_ticks() - ticks_before) as f64 / hz / wall * 100.0;
    let per_container_us = spent.as_secs_f64() * 1e6 / f64::from(samples) / n as f64;
    println!(
        "source={source} containers={n} samples={samples} dockerd_cpu_percent={dockerd_percent:.2} loopwatch_us_per_container={per_container_us:.1}"
    );
    // Shutdown removes this run's containers.
    monitor.shutdown();
}
