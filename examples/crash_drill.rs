//! A crash drill: a loop that dies the way a crash does (abort, no unwinding, no
//! shutdown) while its sandbox containers run. The containers are left behind as
//! orphans; the next loopwatch start on this host (or `loopwatch cleanup`) removes
//! them. The container tests run it; it is also a quick way to see cleanup work:
//!
//! ```sh
//! cargo run --example crash_drill      # leaves 3 orphaned containers
//! cargo run --example evolve           # its start-up sweep logs "Cleaned up orphaned container …"
//! ```

use std::time::Duration;

use loopwatch::sandbox::SandboxSpec;
use loopwatch::Monitor;

fn main() {
    let image = std::env::var("LOOPWATCH_SANDBOX_IMAGE").unwrap_or("loopwatch-sandbox:1".into());
    let containers: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let monitor = Monitor::builder()
        .build()
        .unwrap_or_else(|e| panic!("cannot start loopwatch: {e}"));
    let sandbox = monitor.sandbox();
    for _ in 0..containers {
        let sandbox = sandbox.clone();
        let spec = SandboxSpec::new(&image, ["sleep", "300"]);
        std::thread::spawn(move || sandbox.run(&spec));
    }
    // Wait until every container runs, then die without any cleanup.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        monitor.sample_containers_now();
        let running = monitor
            .render_metrics()
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("active_containers "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        if running as usize >= containers {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("crashing on purpose with {containers} sandbox containers running");
    std::process::abort();
}
