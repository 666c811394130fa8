//! The GPU sampler against a stand-in NVML: a C library built by the test
//! (`tests/fixtures/nvml-standin/standin.c`), loaded through the same configurable
//! path as the driver's library, serving scripted devices, processes and Xid errors.
//! No machine here has a GPU; NVML itself is the one part a test cannot run, so the
//! stand-in takes its place, and everything from the library's loading on is real.
//!
//! Checked: the video memory per loop is that of the loop's own process tree and no
//! other process's; the device readings, Xid and ECC errors reach the exposition,
//! the snapshot, the event log and the page; and a missing library, a library missing
//! a symbol and a device lost mid-run each degrade with one clear log line while the
//! rest runs on.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use support::nvml_standin::{build_standin, write_script, Standin};
use support::{http_get, parse, quiet_monitor, scrape, wait_until, Exposition};

const WAIT: Duration = Duration::from_secs(30);
const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// Every log line of this test binary, from every thread (the GPU sampler logs from
/// its own): a global subscriber writing here.
fn logs() -> String {
    static LINES: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    let lines = LINES.get_or_init(|| {
        let lines: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        struct Sink(&'static Mutex<Vec<u8>>);
        impl Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Sink(lines))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        lines
    });
    String::from_utf8_lossy(&lines.lock().unwrap()).into_owned()
}

/// The log lines holding every one of `words`.
fn lines_with(words: &[&str]) -> Vec<String> {
    logs()
        .lines()
        .filter(|line| words.iter().all(|w| line.contains(w)))
        .map(str::to_string)
        .collect()
}

fn exposition(monitor: &loopwatch::Monitor) -> Exposition {
    parse(&scrape(monitor.local_addr())).expect("a well-formed exposition")
}

/// The value of `metric`'s series on GPU `index`, if it has one.
fn on_gpu(e: &Exposition, metric: &str, index: &str, more: &[(&str, &str)]) -> Option<f64> {
    let mut labels = vec![("gpu_index", index)];
    labels.extend_from_slice(more);
    e.get(metric)?.value_with(&labels)
}

fn device(uuid: &str, used: u64, util: u32, corrected: u64, uncorrected: u64) -> String {
    format!(
        "device {uuid} total={} used={used} util={util} power_mw=187500 temp=64 ecc_corrected={corrected} ecc_uncorrected={uncorrected}\n",
        16 * GIB
    )
}

/// A process outside this test's process tree: started by a shell that exits at
/// once, so it is re-parented away from us. Killed when dropped.
struct Unrelated(u32);

impl Unrelated {
    fn start() -> Self {
        let out = Command::new("sh")
            .args(["-c", "sleep 120 >/dev/null 2>&1 & echo $!"])
            .stdout(Stdio::piped())
            .output()
            .expect("sh runs");
        let pid = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a pid");
        Unrelated(pid)
    }
}

impl Drop for Unrelated {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.to_string()).status();
    }
}

/// A child of this process (so in the loop's tree), killed and reaped when dropped.
struct Child(std::process::Child);

impl Child {
    fn start() -> Self {
        Child(
            Command::new("sleep")
                .arg("120")
                .spawn()
                .expect("sleep starts"),
        )
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A monitor sampling the stand-in NVML at `library` every 50 ms; add what the test
/// needs, then `build()`.
fn gpu_builder(library: &Path) -> loopwatch::MonitorBuilder {
    quiet_monitor()
        .sample_interval(Duration::from_millis(50))
        .gpu_library(library)
}

fn gpu_monitor(library: &Path) -> loopwatch::Monitor {
    gpu_builder(library).build().expect("the monitor starts")
}

/// The monitor's snapshot (`/api/v1/snapshot`).
fn snapshot(monitor: &loopwatch::Monitor) -> serde_json::Value {
    serde_json::from_str(&http_get(monitor.local_addr(), "/api/v1/snapshot").body).unwrap()
}

/// Whether GPU 0's last sample reads `util` percent busy: a sample taken after the
/// script said so.
fn sampled_at(monitor: &loopwatch::Monitor, util: u32) -> bool {
    on_gpu(&exposition(monitor), "hw_gpu_utilization_ratio", "0", &[])
        == Some(f64::from(util) / 100.0)
}

#[test]
fn vram_per_loop_is_that_of_the_loops_own_processes_and_errors_are_counted() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let library = build_standin(dir.path(), Standin::Whole);
    let (worker, evaluator) = (Child::start(), Child::start());
    let stranger = Unrelated::start();
    let tree = loopwatch::sample::process_tree(std::process::id());
    assert!(tree.contains(&worker.pid()) && tree.contains(&evaluator.pid()));
    assert!(
        !tree.contains(&stranger.0),
        "the stranger is outside this process's tree"
    );
    let me = std::process::id();
    let (a, b) = (
        "GPU-11111111-aaaa-4000-8000-000000000001",
        "GPU-11111111-bbbb-4000-8000-000000000002",
    );
    let processes = format!(
        "process 0 compute {w} {}\n\
         process 0 graphics {w} {}\n\
         process 0 compute {e} {}\n\
         process 0 compute {s} {}\n\
         process 1 compute {e} {}\n\
         process 1 graphics {me} {}\n\
         process 1 compute {s} {}\n",
        3 * GIB,
        3 * GIB, // the worker in both lists: counted once
        512 * MIB,
        6 * GIB, // the stranger, never counted
        256 * MIB,
        128 * MIB,
        GIB,
        w = worker.pid(),
        e = evaluator.pid(),
        s = stranger.0,
    );
    write_script(
        &library,
        &format!(
            "{}{}{processes}",
            device(a, 10 * GIB, 55, 5, 0),
            device(b, 2 * GIB, 7, 0, 0)
        ),
    );
    let monitor = gpu_monitor(&library);
    let mut e = Exposition::new();
    wait_until(WAIT, "both GPUs are sampled", || {
        e = exposition(&monitor);
        on_gpu(&e, "loopwatch_gpu_loop_memory_bytes", "1", &[]).is_some()
    });
    assert_eq!(e["loopwatch_gpu_devices"].value(), 2.0);
    assert_eq!(
        on_gpu(&e, "loopwatch_gpu_loop_memory_bytes", "0", &[("hw_id", a)]),
        Some((3 * GIB + 512 * MIB) as f64),
        "the worker once and the evaluator; not the stranger"
    );
    assert_eq!(
        on_gpu(&e, "loopwatch_gpu_loop_memory_bytes", "1", &[("hw_id", b)]),
        Some((256 * MIB + 128 * MIB) as f64),
        "the evaluator and this process; not the stranger"
    );
    assert_eq!(
        on_gpu(&e, "hw_gpu_memory_usage_bytes", "0", &[]),
        Some((10 * GIB) as f64)
    );
    assert_eq!(
        on_gpu(&e, "hw_gpu_memory_limit_bytes", "0", &[]),
        Some((16 * GIB) as f64)
    );
    assert_eq!(on_gpu(&e, "hw_gpu_utilization_ratio", "0", &[]), Some(0.55));
    assert_eq!(
        on_gpu(&e, "hw_power_watts", "1", &[("hw_type", "gpu")]),
        Some(187.5)
    );
    assert_eq!(on_gpu(&e, "hw_temperature_celsius", "1", &[]), Some(64.0));
    for kind in ["xid", "corrected", "uncorrected"] {
        assert_eq!(
            on_gpu(&e, "hw_errors_total", "0", &[("error_type", kind)]),
            Some(0.0),
            "{kind}: counted from loopwatch's start, the driver's earlier 5 corrected left out"
        );
    }
    support::assert_promtool_accepts(&scrape(monitor.local_addr()));

    // An Xid error on GPU 1 and two uncorrected ECC errors on GPU 0.
    write_script(
        &library,
        &format!(
            "{}{}{processes}xid 1 79\n",
            device(a, 10 * GIB, 55, 6, 2),
            device(b, 2 * GIB, 7, 0, 0)
        ),
    );
    wait_until(WAIT, "the errors are counted", || {
        e = exposition(&monitor);
        on_gpu(&e, "hw_errors_total", "1", &[("error_type", "xid")]) == Some(1.0)
            && on_gpu(&e, "hw_errors_total", "0", &[("error_type", "uncorrected")]) == Some(2.0)
    });
    assert_eq!(
        on_gpu(&e, "hw_errors_total", "0", &[("error_type", "corrected")]),
        Some(1.0)
    );
    let snapshot = snapshot(&monitor);
    let gpus = snapshot["gpus"]
        .as_array()
        .expect("the snapshot lists the GPUs");
    assert_eq!(gpus.len(), 2);
    assert_eq!(gpus[1]["xid_errors"], 1);
    assert_eq!(gpus[1]["last_xid"], 79);
    assert_eq!(gpus[0]["ecc_uncorrected"], 2);
    assert_eq!(gpus[0]["loop_memory_bytes"], 3 * GIB + 512 * MIB);
    let events = snapshot["events"].as_array().unwrap();
    for (gpu, error) in [(1, "xid"), (0, "uncorrected")] {
        assert!(
            events
                .iter()
                .any(|e| e["kind"] == "gpu_error" && e["gpu"] == gpu && e["error"] == error),
            "{error} in the event log: {events:?}"
        );
    }
    assert_eq!(
        lines_with(&[b, "critical Xid error"]).len(),
        1,
        "{}",
        logs()
    );
    let page = http_get(monitor.local_addr(), "/").body;
    assert!(
        page.contains("data-panel=\"GPUs\""),
        "the page has a GPU panel"
    );
    assert!(page.contains(&format!("data-gpu=\"{a}\"")));
    monitor.shutdown();
}

#[test]
fn without_a_library_gpu_sampling_is_off_with_one_log_line_and_the_rest_runs_on() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-libnvidia-ml.so.1");
    let shown = missing.display().to_string();
    let monitor = gpu_monitor(&missing);
    wait_until(WAIT, "the sampler says it is off", || {
        !lines_with(&["GPU sampling is off", &shown]).is_empty()
    });
    let lines = lines_with(&["GPU sampling is off", &shown]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("cannot be loaded"), "{}", lines[0]);
    monitor.start_iteration().finish();
    let e = exposition(&monitor);
    assert_eq!(e["iteration_number"].value(), 1.0, "the rest runs on");
    assert_eq!(e["loopwatch_gpu_devices"].value(), 0.0);
    assert!(!e.contains_key("hw_gpu_utilization_ratio"), "no GPU series");
    let page = http_get(monitor.local_addr(), "/").body;
    assert!(
        !page.contains("data-panel=\"GPUs\""),
        "no GPU panel without a GPU"
    );
    monitor.shutdown();
}

#[test]
fn a_library_missing_a_symbol_leaves_that_reading_out_with_one_log_line() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let library = build_standin(dir.path(), Standin::WithoutPower);
    let uuid = "GPU-22222222-aaaa-4000-8000-000000000001";
    write_script(&library, &device(uuid, GIB, 10, 0, 0));
    let monitor = gpu_monitor(&library);
    let shown = library.display().to_string();
    // Three changes of the reading, each seen: many samples, one line.
    for util in [20, 30, 40] {
        write_script(&library, &device(uuid, GIB, util, 0, 0));
        wait_until(WAIT, "the new reading is sampled", || {
            sampled_at(&monitor, util)
        });
    }
    let lines = lines_with(&["lacks a function", &shown]);
    assert_eq!(lines.len(), 1, "one line however many samples: {}", logs());
    assert!(lines[0].contains("nvmlDeviceGetPowerUsage"), "{}", lines[0]);
    let e = exposition(&monitor);
    assert!(
        !e.contains_key("hw_power_watts"),
        "the power reading is left out"
    );
    assert_eq!(on_gpu(&e, "hw_temperature_celsius", "0", &[]), Some(64.0));
    assert_eq!(
        on_gpu(&e, "hw_gpu_memory_usage_bytes", "0", &[]),
        Some(GIB as f64)
    );
    monitor.shutdown();
}

#[test]
fn a_gpu_lost_mid_run_leaves_with_one_log_line_and_the_others_are_still_sampled() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let library = build_standin(dir.path(), Standin::Whole);
    let (a, b) = (
        "GPU-33333333-aaaa-4000-8000-000000000001",
        "GPU-33333333-bbbb-4000-8000-000000000002",
    );
    write_script(
        &library,
        &format!("{}{}", device(a, GIB, 10, 0, 0), device(b, GIB, 10, 0, 0)),
    );
    let monitor = gpu_monitor(&library);
    wait_until(WAIT, "both GPUs are sampled", || {
        exposition(&monitor)["loopwatch_gpu_devices"].value() == 2.0
    });
    write_script(
        &library,
        &format!(
            "{}{}lost 1\n",
            device(a, GIB, 10, 0, 0),
            device(b, GIB, 10, 0, 0)
        ),
    );
    wait_until(WAIT, "GPU 1 leaves the exposition", || {
        let e = exposition(&monitor);
        e["loopwatch_gpu_devices"].value() == 1.0
            && on_gpu(&e, "hw_gpu_utilization_ratio", "1", &[]).is_none()
    });
    for util in [20, 30, 40] {
        write_script(
            &library,
            &format!(
                "{}{}lost 1\n",
                device(a, GIB, util, 0, 0),
                device(b, GIB, 10, 0, 0)
            ),
        );
        wait_until(WAIT, "GPU 0 is still sampled", || {
            sampled_at(&monitor, util)
        });
    }
    let lines = lines_with(&["stopped answering", b]);
    assert_eq!(lines.len(), 1, "one line however many samples: {}", logs());
    assert!(lines_with(&["stopped answering", a]).is_empty());
    let snapshot = snapshot(&monitor);
    assert_eq!(snapshot["gpus"][1]["lost"], true);
    assert!(snapshot["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "gpu_lost" && e["uuid"] == b));
    monitor.start_iteration().finish();
    assert_eq!(
        exposition(&monitor)["iteration_number"].value(),
        1.0,
        "the rest runs on"
    );
    monitor.shutdown();
}

/// A device and the Xid errors counted on it, from the exposition.
fn xids_on(monitor: &loopwatch::Monitor, index: &str) -> Option<f64> {
    on_gpu(
        &exposition(monitor),
        "hw_errors_total",
        index,
        &[("error_type", "xid")],
    )
}

#[test]
fn a_failed_xid_registration_leaves_out_that_gpu_alone() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let library = build_standin(dir.path(), Standin::Whole);
    let shown = library.display().to_string();
    let uuids = [
        "GPU-77777777-aaaa-4000-8000-000000000001",
        "GPU-77777777-bbbb-4000-8000-000000000002",
        "GPU-77777777-cccc-4000-8000-000000000003",
    ];
    let devices: String = uuids.iter().map(|u| device(u, GIB, 10, 0, 0)).collect();
    // NVML refuses GPU 1's registration, which frees the event set GPU 0 was
    // already registered in.
    write_script(&library, &format!("{devices}register_fails 1\n"));
    let monitor = gpu_monitor(&library);
    wait_until(WAIT, "the Xid watch is set up", || {
        !lines_with(&["watching critical Xid errors", &shown]).is_empty()
    });
    let watching = lines_with(&["watching critical Xid errors", &shown]);
    assert_eq!(watching.len(), 1, "{watching:?}");
    assert!(
        watching[0].contains("gpus=2"),
        "only the GPUs in the final set are counted: {}",
        watching[0]
    );
    let refused = lines_with(&["Xid errors of this GPU are not watched", uuids[1]]);
    assert_eq!(refused.len(), 1, "{}", logs());
    wait_until(WAIT, "every GPU is sampled", || {
        exposition(&monitor)["loopwatch_gpu_devices"].value() == 3.0
    });
    write_script(
        &library,
        &format!("{devices}register_fails 1\nxid 0 48\nxid 1 48\nxid 2 79\n"),
    );
    wait_until(WAIT, "the Xid errors of GPUs 0 and 2 are counted", || {
        xids_on(&monitor, "0") == Some(1.0) && xids_on(&monitor, "2") == Some(1.0)
    });
    assert_eq!(xids_on(&monitor, "1"), Some(0.0), "GPU 1 is not watched");
    monitor.shutdown();
}

/// The stand-in at `dir` scripted with GPUs `a` and `b`, and a monitor sampling it,
/// once its log says the Xid errors of both are watched: the library, its script and
/// the monitor.
fn two_watched_gpus(dir: &Path, a: &str, b: &str) -> (PathBuf, String, loopwatch::Monitor) {
    let library = build_standin(dir, Standin::Whole);
    let shown = library.display().to_string();
    let devices = format!("{}{}", device(a, GIB, 10, 0, 0), device(b, GIB, 10, 0, 0));
    write_script(&library, &devices);
    let monitor = gpu_monitor(&library);
    wait_until(WAIT, "both GPUs are watched", || {
        lines_with(&["watching critical Xid errors", &shown, "gpus=2"]).len() == 1
    });
    (library, devices, monitor)
}

#[test]
fn a_gpu_lost_while_its_xid_errors_are_watched_leaves_the_others_watched() {
    logs();
    let (a, b) = (
        "GPU-88888888-aaaa-4000-8000-000000000001",
        "GPU-88888888-bbbb-4000-8000-000000000002",
    );
    let dir = tempfile::tempdir().unwrap();
    let (library, devices, monitor) = two_watched_gpus(dir.path(), a, b);
    let shown = library.display().to_string();
    // GPU 1 falls off the bus: NVML's wait answers "GPU is lost" from then on.
    write_script(&library, &format!("{devices}lost 1\n"));
    wait_until(WAIT, "the watch goes on without GPU 1", || {
        lines_with(&["watching critical Xid errors again", &shown, "gpus=1"]).len() == 1
    });
    // The script's Xid lines are delivered in order, each once: each script holds
    // the earlier ones.
    let mut xids = String::new();
    for code in [48, 79] {
        xids.push_str(&format!("xid 0 {code}\n"));
        write_script(&library, &format!("{devices}lost 1\n{xids}"));
        wait_until(WAIT, "GPU 0's Xid errors are still counted", || {
            lines_with(&[a, "critical Xid error", &format!("xid={code}")]).len() == 1
        });
    }
    assert_eq!(xids_on(&monitor, "0"), Some(2.0));
    let failed = lines_with(&["waiting for Xid errors failed", &shown]);
    assert_eq!(failed.len(), 1, "logged once: {}", logs());
    assert!(failed[0].contains("fell off the bus"), "{}", failed[0]);
    monitor.shutdown();
}

#[test]
fn the_xid_error_of_a_gpu_that_fell_off_the_bus_is_counted_on_it() {
    logs();
    let (a, b) = (
        "GPU-99999999-aaaa-4000-8000-000000000001",
        "GPU-99999999-bbbb-4000-8000-000000000002",
    );
    let dir = tempfile::tempdir().unwrap();
    let (library, devices, monitor) = two_watched_gpus(dir.path(), a, b);
    // GPU 1 falls off the bus with Xid 79: its handle is all the event names it by
    // (its UUID and index no longer answer).
    write_script(&library, &format!("{devices}lost 1\nxid 1 79\n"));
    wait_until(WAIT, "the Xid error is counted on GPU 1", || {
        xids_on(&monitor, "1") == Some(1.0)
    });
    let lines = lines_with(&[b, "critical Xid error", "xid=79"]);
    assert_eq!(lines.len(), 1, "{}", logs());
    // An event on a device none of NVML's lists named: counted on an unknown GPU.
    write_script(&library, &format!("{devices}lost 1\nxid 1 79\nxid -1 48\n"));
    wait_until(WAIT, "the Xid error is counted on an unknown GPU", || {
        on_gpu(
            &exposition(&monitor),
            "hw_errors_total",
            "unknown",
            &[("hw_id", "unknown"), ("error_type", "xid")],
        ) == Some(1.0)
    });
    assert_eq!(xids_on(&monitor, "0"), Some(0.0));
    assert_eq!(
        lines_with(&["matches none NVML found at start-up", "xid=48"]).len(),
        1,
        "{}",
        logs()
    );
    let snapshot = snapshot(&monitor);
    assert!(snapshot["events"].as_array().unwrap().iter().any(|e| {
        e["kind"] == "gpu_error" && e["gpu"].is_null() && e["uuid"].is_null() && e["code"] == 48
    }));
    monitor.shutdown();
}

/// Whether `alert` is firing in the monitor's own evaluator.
fn firing(monitor: &loopwatch::Monitor, alert: &str) -> bool {
    exposition(monitor)["loopwatch_alert_firing"].value_with(&[("alertname", alert)]) == Some(1.0)
}

#[test]
fn a_sampler_blocked_inside_nvml_lets_gpu_memory_high_resolve_and_the_series_go() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let library = build_standin(dir.path(), Standin::Whole);
    let uuid = "GPU-aaaaaaaa-aaaa-4000-8000-000000000001";
    let me = std::process::id();
    let full = format!(
        "{}process 0 compute {me} {}\n",
        device(uuid, 16 * GIB * 97 / 100, 90, 0, 0),
        GIB
    );
    write_script(&library, &full);
    let thresholds = loopwatch::Thresholds::default()
        .with_gpu_memory_for(Duration::from_millis(200))
        .unwrap()
        .with_alert_resolve_hold(Duration::from_millis(100))
        .unwrap();
    let monitor = gpu_builder(&library)
        .thresholds(thresholds)
        .build()
        .expect("the monitor starts");
    wait_until(WAIT, "GPUMemoryHigh fires", || {
        firing(&monitor, "GPUMemoryHigh")
    });
    // The driver hangs: every NVML call on the device blocks, and no sample comes.
    write_script(&library, &format!("{full}hang\n"));
    wait_until(WAIT, "GPUMemoryHigh resolves and the series go", || {
        let e = exposition(&monitor);
        e["loopwatch_alert_firing"].value_with(&[("alertname", "GPUMemoryHigh")]) == Some(0.0)
            && e["loopwatch_gpu_devices"].value() == 0.0
            && on_gpu(&e, "hw_gpu_memory_usage_bytes", "0", &[("hw_id", uuid)]).is_none()
    });
    let stale = lines_with(&["no GPU sample came"]);
    assert_eq!(stale.len(), 1, "{}", logs());
    // The driver answers again: the series come back, and the alert with its `for`.
    write_script(&library, &full);
    wait_until(
        WAIT,
        "the series come back and GPUMemoryHigh fires again",
        || {
            firing(&monitor, "GPUMemoryHigh")
                && on_gpu(
                    &exposition(&monitor),
                    "hw_gpu_memory_usage_bytes",
                    "0",
                    &[("hw_id", uuid)],
                )
                .is_some()
        },
    );
    assert_eq!(lines_with(&["no GPU sample came"]).len(), 1, "once");
    monitor.shutdown();
}

/// The errors GPUErrors counts on GPU `index`, from the exposition.
fn alerting_on(monitor: &loopwatch::Monitor, index: &str) -> Option<f64> {
    on_gpu(
        &exposition(monitor),
        "loopwatch_gpu_alerting_errors_total",
        index,
        &[],
    )
}

#[test]
fn only_fatal_xids_on_the_loops_gpus_raise_gpu_errors_and_a_fault_counts_once() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let library = build_standin(dir.path(), Standin::Whole);
    let (a, b) = (
        "GPU-bbbbbbbb-aaaa-4000-8000-000000000001",
        "GPU-bbbbbbbb-bbbb-4000-8000-000000000002",
    );
    let me = std::process::id();
    // The loop (this process) is on GPU 0 only.
    let devices = |uncorrected: u64| {
        format!(
            "{}{}process 0 compute {me} {GIB}\n",
            device(a, GIB, 10, 0, uncorrected),
            device(b, GIB, 10, 0, 0)
        )
    };
    write_script(&library, &devices(0));
    let monitor = gpu_monitor(&library);
    wait_until(
        WAIT,
        "both GPUs are sampled, the loop's memory read",
        || {
            alerting_on(&monitor, "1") == Some(0.0)
                && on_gpu(
                    &exposition(&monitor),
                    "loopwatch_gpu_loop_memory_bytes",
                    "0",
                    &[],
                ) == Some(GIB as f64)
        },
    );
    // A CUDA process of the loop killed (Xid 43), and a fatal Xid on a GPU the loop
    // does not use: both counted, neither alerts.
    let mut xids = String::from("xid 0 43\nxid 1 79\n");
    write_script(&library, &format!("{}{xids}", devices(0)));
    wait_until(WAIT, "both Xid errors are counted", || {
        xids_on(&monitor, "0") == Some(1.0) && xids_on(&monitor, "1") == Some(1.0)
    });
    assert_eq!(alerting_on(&monitor, "0"), Some(0.0));
    assert_eq!(alerting_on(&monitor, "1"), Some(0.0));
    assert!(!firing(&monitor, "GPUErrors"));
    assert_eq!(
        lines_with(&[a, "not in the fatal set", "xid=43", "class=\"other\""]).len(),
        1,
        "{}",
        logs()
    );
    // A double-bit ECC error on the loop's GPU: Xid 48 and the uncorrected count's
    // rise, one fault.
    xids.push_str("xid 0 48\n");
    write_script(&library, &format!("{}{xids}", devices(1)));
    wait_until(WAIT, "the ECC fault is counted", || {
        let e = exposition(&monitor);
        on_gpu(&e, "hw_errors_total", "0", &[("error_type", "xid")]) == Some(2.0)
            && on_gpu(&e, "hw_errors_total", "0", &[("error_type", "uncorrected")]) == Some(1.0)
    });
    assert!(firing(&monitor, "GPUErrors"));
    // A few samples on, it still counts once.
    for util in [20, 30] {
        write_script(
            &library,
            &format!(
                "{}{}process 0 compute {me} {GIB}\n{xids}",
                device(a, GIB, util, 0, 1),
                device(b, GIB, 10, 0, 0)
            ),
        );
        wait_until(WAIT, "a later sample", || sampled_at(&monitor, util));
    }
    assert_eq!(alerting_on(&monitor, "0"), Some(1.0));
    let snapshot = snapshot(&monitor);
    let alerting: u64 = snapshot["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "gpu_error" && e["uuid"] == a)
        .map(|e| e["alerting"].as_u64().unwrap())
        .sum();
    assert_eq!(alerting, 1, "{snapshot}");
    monitor.shutdown();
}

#[test]
fn a_gpu_whose_processes_nvml_cannot_list_has_no_loop_memory_and_is_not_the_loops() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let library = build_standin(dir.path(), Standin::Whole);
    let (a, b) = (
        "GPU-cccccccc-aaaa-4000-8000-000000000001",
        "GPU-cccccccc-bbbb-4000-8000-000000000002",
    );
    let me = std::process::id();
    // This process on both GPUs; GPU 1 is full, but NVML cannot list its processes.
    let script = |util: u32| {
        format!(
            "{}{}process 0 compute {me} {GIB}\nprocess 1 compute {me} {GIB}\nprocesses_fail 1\n",
            device(a, GIB, util, 0, 0),
            device(b, 16 * GIB * 99 / 100, 10, 0, 0)
        )
    };
    write_script(&library, &script(10));
    let thresholds = loopwatch::Thresholds::default()
        .with_gpu_memory_for(Duration::from_millis(100))
        .unwrap();
    let monitor = gpu_builder(&library)
        .thresholds(thresholds)
        .build()
        .expect("the monitor starts");
    for util in [20, 30, 40] {
        write_script(&library, &script(util));
        wait_until(WAIT, "a new sample", || sampled_at(&monitor, util));
    }
    let e = exposition(&monitor);
    assert_eq!(
        on_gpu(&e, "loopwatch_gpu_loop_memory_bytes", "0", &[]),
        Some(GIB as f64)
    );
    assert_eq!(
        on_gpu(&e, "loopwatch_gpu_loop_memory_bytes", "1", &[]),
        None,
        "unknown, not 0"
    );
    assert_eq!(
        on_gpu(&e, "loopwatch_gpu_loop_processes", "0", &[]),
        Some(1.0)
    );
    assert_eq!(
        on_gpu(&e, "loopwatch_gpu_loop_processes", "1", &[]),
        Some(0.0)
    );
    assert_eq!(
        on_gpu(&e, "hw_gpu_memory_usage_bytes", "1", &[("hw_id", b)]),
        Some((16 * GIB * 99 / 100) as f64),
        "the GPU's own numbers are read"
    );
    assert!(
        !firing(&monitor, "GPUMemoryHigh"),
        "GPU 1 is full, but nothing says it is the loop's"
    );
    let snapshot = snapshot(&monitor);
    let memory_high = snapshot["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["alertname"] == "GPUMemoryHigh")
        .unwrap();
    assert_eq!(memory_high["state"], "inactive", "not even pending");
    assert!(snapshot["gpus"][1]["loop_memory_bytes"].is_null());
    assert_eq!(snapshot["gpus"][0]["loop_memory_bytes"], GIB);
    monitor.shutdown();
}
