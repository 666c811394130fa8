//! The GPUs against a real Prometheus and real Alertmanagers, from a monitor whose
//! GPU sampler loads the stand-in NVML (no machine here has a GPU; the stand-in, a C
//! library the test builds, serves scripted devices, processes and Xid errors): every
//! query of the dashboard's GPU panels returns data, one series per device; and
//! GPUMemoryHigh and GPUErrors reach Alertmanager both from loopwatch's own evaluator
//! and from the generated rules.

mod support;

use std::time::{Duration, Instant};

use loopwatch_cli::generate::{dashboard_panels, grafana_dashboard, with_variables};
use support::nvml_standin::{build_standin, write_script, Standin};
use support::services::{Alertmanager, Prometheus};
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

/// Waits (up to `limit`) until `am` holds `alert`, and returns it.
fn received(am: &Alertmanager, alert: &str, limit: Duration) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = am.alert(alert) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{alert} did not reach Alertmanager; it holds {:#?}",
            am.alerts()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn gpu_memory_high_and_gpu_errors_reach_alertmanager_from_loopwatch_and_from_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let library = build_standin(dir.path(), Standin::Whole);
    let me = std::process::id();
    let gib: u64 = 1 << 30;
    // GPU 0, which this process uses, 97% full; GPU 1 as full, but not the loop's.
    let devices = |used0: u64| {
        format!(
            "device GPU-66666666-aaaa-4000-8000-000000000001 total={} used={used0} util=90 power_mw=250000 temp=70 ecc_corrected=0 ecc_uncorrected=0\n\
             device GPU-66666666-bbbb-4000-8000-000000000002 total={} used={} util=90 power_mw=250000 temp=70 ecc_corrected=0 ecc_uncorrected=0\n\
             process 0 compute {me} {}\n\
             process 1 compute 4000001 {}\n",
            16 * gib,
            16 * gib,
            16 * gib * 97 / 100,
            2 * gib,
            8 * gib,
        )
    };
    write_script(&library, &devices(16 * gib * 97 / 100));
    let (direct, ruled) = (Alertmanager::start(), Alertmanager::start());
    let thresholds = loopwatch::Thresholds::default()
        .with_gpu_memory_for(Duration::from_secs(1))
        .unwrap()
        .with_alert_resolve_hold(Duration::from_millis(100))
        .unwrap();
    let monitor = quiet_monitor()
        .sample_interval(Duration::from_millis(100))
        .gpu_library(&library)
        .thresholds(thresholds)
        .alertmanager_urls([direct.url()])
        .build()
        .unwrap();
    let run_id = monitor.identity().run_id.clone();
    let prometheus = Prometheus::start(monitor.local_addr(), Some(ruled.addr));

    // In process: held a second above 95%, then Xid errors: one GPUErrors counts (a
    // fatal one on the loop's GPU 0), two it does not (GPU 1 is not the loop's; 43 is a
    // killed CUDA process's).
    let memory = received(&direct, "GPUMemoryHigh", Duration::from_secs(30));
    assert_eq!(memory["labels"]["severity"], "warning");
    assert_eq!(memory["labels"]["run_id"], run_id.as_str());
    assert_eq!(memory["annotations"]["summary"], "GPU memory nearly full");
    assert!(direct.alert("GPUErrors").is_none(), "no error yet");
    // Prometheus sees the error counters at 0 first: a counter first scraped at 1
    // shows no rise.
    let deadline = Instant::now() + Duration::from_secs(60);
    while prometheus
        .query("loopwatch_gpu_alerting_errors_total{gpu_index=\"0\"} == 0")
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the GPUs"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let xids = "xid 1 79\nxid 0 43\nxid 0 79\n";
    write_script(&library, &format!("{}{xids}", devices(16 * gib * 97 / 100)));
    let errors = received(&direct, "GPUErrors", Duration::from_secs(30));
    assert_eq!(errors["labels"]["severity"], "critical");
    assert_eq!(errors["annotations"]["summary"], "GPU errors detected");
    assert_eq!(errors["annotations"]["value"], "1", "{errors}");

    // Through Prometheus: the same two, from the generated rules (GPUMemoryHigh after
    // its minute).
    for alert in ["GPUErrors", "GPUMemoryHigh"] {
        let from_rule = received(&ruled, alert, Duration::from_secs(150));
        assert_eq!(from_rule["labels"]["run_id"], run_id.as_str(), "{alert}");
        assert_eq!(from_rule["labels"]["job"], "loopwatch", "{alert}");
    }
    let description = ruled.alert("GPUErrors").unwrap()["annotations"]["description"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(description.starts_with("1 fatal Xid"), "{description}");

    // The loop's GPU frees its memory: GPUMemoryHigh resolves in process.
    write_script(&library, &format!("{}{xids}", devices(2 * gib)));
    let deadline = Instant::now() + Duration::from_secs(30);
    while direct.alert("GPUMemoryHigh").is_some() {
        assert!(Instant::now() < deadline, "GPUMemoryHigh did not resolve");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(prometheus);
    monitor.shutdown();
}

/// `loopwatch run` in `dir` with the stand-in NVML at `library` for the GPUs' library,
/// none of the machine's network, GPU or config variables passed on.
fn gpu_launch(dir: &std::path::Path, library: &std::path::Path) -> Launch {
    let mut launch = Launch::without_network_settings(dir);
    launch
        .env_remove
        .extend(["LOOPWATCH_GPU", "LOOPWATCH_CONFIG"].map(Into::into));
    launch
        .env
        .push(("LOOPWATCH_GPU_LIBRARY".into(), library.into()));
    launch
}

/// `loopwatch run` samples the GPUs unless `LOOPWATCH_GPU=off` or `[gpu] enabled =
/// false` says otherwise, the variable over the file.
#[test]
fn loopwatch_run_samples_the_gpus_unless_turned_off_by_the_environment_or_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let library = build_standin(dir.path(), Standin::Whole);
    write_script(
        &library,
        "device GPU-dddddddd-aaaa-4000-8000-000000000001 total=17179869184 used=1073741824 util=5 power_mw=60000 temp=41 ecc_corrected=0 ecc_uncorrected=0\n",
    );
    let config = dir.path().join("loopwatch.toml");
    std::fs::write(&config, "[gpu]\nenabled = false\n").unwrap();
    let config_flag = format!("--config={}", config.display());
    let cases: [(&str, Option<&str>, Option<&str>, bool); 4] = [
        ("by default", None, None, true),
        ("LOOPWATCH_GPU=off", Some("off"), None, false),
        ("[gpu] enabled = false", None, Some(&config_flag), false),
        (
            "LOOPWATCH_GPU=on over the file",
            Some("on"),
            Some(&config_flag),
            true,
        ),
    ];
    for (n, (case, variable, flag, sampled)) in cases.into_iter().enumerate() {
        let run_dir = dir.path().join(format!("run-{n}"));
        std::fs::create_dir(&run_dir).unwrap();
        let stop = run_dir.join("stop");
        let mut launch = gpu_launch(&run_dir, &library);
        if let Some(value) = variable {
            launch.env.push(("LOOPWATCH_GPU".into(), value.into()));
        }
        // The loop runs until the test says stop.
        let command: Vec<std::ffi::OsString> = vec![
            "sh".into(),
            "-c".into(),
            "while [ ! -e \"$0\" ]; do sleep 0.05; done".into(),
            stop.clone().into_os_string(),
        ];
        let flags: Vec<&str> = flag.into_iter().collect();
        let mut run = Supervised::launch(&run_dir, &launch, &flags, &command);
        run.wait_serving();
        if sampled {
            wait_until(Duration::from_secs(30), "the GPU is sampled", || {
                run.metric("loopwatch_gpu_devices") == Some(1.0)
            });
        } else {
            wait_until(Duration::from_secs(30), "GPU sampling is said off", || {
                run.log().contains("GPU sampling is turned off")
            });
            assert_eq!(run.metric("loopwatch_gpu_devices"), Some(0.0), "{case}");
            assert!(
                !run.log().contains("sampling GPUs"),
                "{case}: {}",
                run.log()
            );
        }
        std::fs::write(&stop, "").unwrap();
        assert!(
            run.wait(Duration::from_secs(30)).success(),
            "{case}: {}",
            run.log()
        );
    }
}

/// Between the loop's exit and its restart, nothing is the loop's: its pid, which the
/// kernel may give to any process, is not counted on the GPUs.
#[test]
fn a_loop_that_exited_has_no_video_memory_until_it_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let library = build_standin(dir.path(), Standin::Whole);
    let device = |util: u32| {
        format!("device GPU-eeeeeeee-aaaa-4000-8000-000000000001 total=17179869184 used=8589934592 util={util} power_mw=60000 temp=41 ecc_corrected=0 ecc_uncorrected=0\n")
    };
    write_script(&library, &device(5));
    let pid_file = dir.path().join("loop.pid");
    let mut launch = gpu_launch(dir.path(), &library);
    launch
        .env
        .push(("LOOPWATCH_SAMPLE_INTERVAL".into(), "50ms".into()));
    // The loop notes its pid and ends at once; its restart is a long way off.
    let command: Vec<std::ffi::OsString> = vec![
        "sh".into(),
        "-c".into(),
        "echo $$ > \"$0\"".into(),
        pid_file.clone().into_os_string(),
    ];
    let run = Supervised::launch(
        dir.path(),
        &launch,
        &["--restart=always", "--restart-delay=5m"],
        &command,
    );
    run.wait_serving();
    let mut pid = String::new();
    wait_until(Duration::from_secs(30), "the loop noted its pid", || {
        pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
        pid.ends_with('\n')
    });
    let pid = pid.trim();
    wait_until(
        Duration::from_secs(30),
        "the loop's process is gone",
        || !std::path::Path::new(&format!("/proc/{pid}")).exists(),
    );
    // NVML lists a process by the pid the loop had: the pid of another process, in
    // time.
    let gib: u64 = 1 << 30;
    for util in [10, 20] {
        write_script(
            &library,
            &format!("{}process 0 compute {pid} {gib}\n", device(util)),
        );
        wait_until(Duration::from_secs(30), "a sample after the exit", || {
            let e = parse(&scrape(run.addr)).unwrap();
            e.get("hw_gpu_utilization_ratio")
                .and_then(|m| m.value_with(&[("gpu_index", "0")]))
                == Some(f64::from(util) / 100.0)
        });
        let e = parse(&scrape(run.addr)).unwrap();
        let on_gpu = |metric: &str| {
            e.get(metric)
                .and_then(|m| m.value_with(&[("gpu_index", "0")]))
        };
        assert_eq!(
            on_gpu("loopwatch_gpu_loop_memory_bytes"),
            Some(0.0),
            "{}",
            run.log()
        );
        assert_eq!(on_gpu("loopwatch_gpu_loop_processes"), Some(0.0));
    }
}
