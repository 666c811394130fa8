//! The GPU panels of the Grafana dashboard against a real Prometheus scraping a
//! monitor whose GPU sampler loads the stand-in NVML (no machine here has a GPU; the
//! stand-in, a C library the test builds, serves two scripted devices): every query
//! of the panels returns data, one series per device.

mod support;

use std::time::{Duration, Instant};

use loopwatch_cli::generate::{dashboard_panels, grafana_dashboard, with_variables};
use support::nvml_standin::{build_standin, write_script, Standin};
use support::services::Prometheus;
use support::*;

#[test]
fn every_gpu_panel_query_returns_a_series_per_device_from_a_real_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let library = build_standin(dir.path(), Standin::Whole);
    let me = std::process::id();
    write_script(
        &library,
        &format!(
            "device GPU-44444444-aaaa-4000-8000-000000000001 total=17179869184 used=8589934592 util=40 power_mw=120000 temp=55 ecc_corrected=0 ecc_uncorrected=0\n\
             device GPU-44444444-bbbb-4000-8000-000000000002 total=17179869184 used=1073741824 util=5 power_mw=60000 temp=41 ecc_corrected=0 ecc_uncorrected=0\n\
             process 0 compute {me} 2147483648\n\
             process 1 compute {me} 268435456\n"
        ),
    );
    let monitor = quiet_monitor()
        .sample_interval(Duration::from_millis(100))
        .gpu_library(&library)
        .build()
        .unwrap();
    let prometheus = Prometheus::start(monitor.local_addr(), None);
    let dashboard = grafana_dashboard(&loopwatch::Thresholds::default());
    let queries: Vec<String> = dashboard_panels(&dashboard)
        .iter()
        .filter(|p| p["title"].as_str().unwrap().starts_with("GPU"))
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| with_variables(t["expr"].as_str().unwrap(), &[]))
        .collect();
    assert_eq!(queries.len(), 7, "{queries:#?}");
    for query in &queries {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let result = prometheus.query(query);
            let devices: std::collections::BTreeSet<&str> = result
                .iter()
                .filter_map(|s| s["metric"]["gpu_index"].as_str())
                .collect();
            // The errors' query has a series per device and error type.
            if devices.len() == 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "`{query}` has no series per device: {result:?}\nPrometheus log:\n{}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let loop_memory = prometheus.query(&queries[1]);
    let on = |index: &str| {
        loop_memory
            .iter()
            .find(|s| s["metric"]["gpu_index"] == index)
            .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok())
    };
    assert_eq!(on("0"), Some(2.147483648), "GB of this process on GPU 0");
    assert_eq!(on("1"), Some(0.268435456));
    monitor.shutdown();
}
