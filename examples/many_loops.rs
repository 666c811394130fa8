//! Many light loops in one process, each with its own monitor registered for file
//! discovery: the fleet a host's Prometheus agent scrapes in `scripts/fleet-load`.
//!
//! ```sh
//! cargo run --release --example many_loops -- 100 /tmp/targets
//! ```

use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(100);
    let dir = args.next().unwrap_or_else(|| "prometheus/targets".into());
    let out = std::env::temp_dir().join(format!("many-loops-{}", std::process::id()));
    let monitors: Vec<loopwatch::Monitor> = (0..count)
        .map(|i| {
            loopwatch::Monitor::builder()
                .listen("127.0.0.1:0".parse().unwrap())
                .output_dir(out.join(i.to_string()))
                .register(&dir)
                .experiment(format!("exp-{}", i % 10))
                .loop_name(format!("loop-{i}"))
                .containers(false)
                .final_export(false)
                .signals(loopwatch::Signals::Off)
                .build()
                .expect("a monitor starts")
        })
        .collect();
    eprintln!("{count} loops registered in {dir}");
    // One iteration a second each, as a light loop reports.
    let mut generation = 0u64;
    loop {
        for monitor in &monitors {
            let mut iteration = monitor.start_iteration();
            iteration.record_success(1.0, 0.1);
            iteration.record_failure("too few trades");
            let champion = format!("c{}", generation / 10);
            iteration.record_population(
                loopwatch::Population::new(20, 15, 0.5).with_champion(&champion),
            );
            iteration.finish();
        }
        generation += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
}
