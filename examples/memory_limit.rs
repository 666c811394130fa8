//! A loop whose memory grows by 16 MiB per iteration, watched by loopwatch. Run it in a
//! memory-limited container to see HighMemoryUsage compare the container's working set
//! with the container's limit (the one the OOM killer enforces) rather than with the
//! host's memory:
//!
//! ```sh
//! docker run --rm --memory 256m --network host \
//!   -v "$PWD/target/debug/examples:/x:ro" -v /usr/lib:/usr/lib:ro -v /usr/lib64:/usr/lib64:ro \
//!   loopwatch-sandbox:1 /x/memory_limit
//! ```
//! then watch `loopwatch_memory_used_bytes`, `loopwatch_memory_limit_bytes` and
//! `loopwatch_alert_firing{alertname="HighMemoryUsage"}` on :8000/metrics.

use std::time::Duration;

use loopwatch::{Monitor, Population};

/// Memory added per iteration.
const STEP: usize = 16 << 20;

fn main() {
    let iterations: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(14);
    let monitor = Monitor::builder()
        .containers(false)
        .final_export(false)
        .sample_interval(Duration::from_millis(200))
        .build()
        .unwrap_or_else(|e| panic!("cannot start loopwatch: {e}"));
    let mut held: Vec<Vec<u8>> = Vec::new();
    for _ in 0..iterations {
        let mut iteration = monitor.start_iteration();
        // Touched, so that the pages are resident.
        held.push(vec![1u8; STEP]);
        iteration.record_success(1.0, 0.1);
        iteration.record_population(Population::new(2, 2, 0.5).with_champion("grower"));
        iteration.finish();
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!("holding {} MiB", (held.len() * STEP) >> 20);
    monitor.done();
    // Stay up to be scraped until killed.
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
