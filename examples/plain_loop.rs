//! A loop that does nothing special about signals: SIGINT or SIGTERM still leaves both
//! final files, because the monitor's default ([`loopwatch::Signals::Exit`]) writes
//! them and ends the process with the signal's status (130 or 143).
//!
//! Run with `cargo run --example plain_loop -- 1000`: that many iterations of 10 ms
//! (or until a signal), metrics on :8000 (or `LOOPWATCH_LISTEN`), the final files in
//! the current directory (or `LOOPWATCH_OUTPUT_DIR`).

use std::time::Duration;

use loopwatch::{Monitor, Population};

fn main() -> Result<(), loopwatch::Error> {
    let iterations: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let monitor = Monitor::builder().build()?;
    println!("serving on {}", monitor.local_addr());
    for i in 0..iterations {
        let mut iteration = monitor.start_iteration();
        std::thread::sleep(Duration::from_millis(10));
        iteration.record_success(1.0 + (i % 7) as f64 / 10.0, 0.1);
        iteration.record_failure("too few trades");
        iteration.record_population(Population::new(2, 2, 1.0).with_champion("plain"));
        iteration.finish();
    }
    monitor.shutdown();
    Ok(())
}
