//! Containers against a real Docker Engine (started by scripts/test): stats, the
//! sandbox launcher, orphan cleanup and its safety, real removal failures, crash
//! recovery, a 100-generation sandboxed run, and Docker going down mid-run.
//!
//! The tests share one daemon and each Monitor sweeps for orphans, so they run one at
//! a time (a process-wide lock).

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use loopwatch::sandbox::SandboxSpec;
use loopwatch::{AlertName, Monitor};

/// The ownership labels every managed container carries.
const LABEL_MANAGED: &str = "loopwatch.managed";
const LABEL_RUN_ID: &str = "loopwatch.run_id";
use support::services::{logs, Alertmanager};
use support::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn image() -> String {
    std::env::var("LOOPWATCH_SANDBOX_IMAGE").unwrap_or_else(|_| "loopwatch-sandbox:1".into())
}

/// Runs the docker CLI, asserting success; returns trimmed stdout.
fn docker(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI installed");
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn exists(id: &str) -> bool {
    Command::new("docker")
        .args(["inspect", "--format", "{{.Id}}", id])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Starts a detached container with the given labels running `script` in sh.
fn run_labelled(labels: &HashMap<String, String>, script: &str) -> String {
    let mut args: Vec<String> = vec!["run".into(), "-d".into(), "--network".into(), "none".into()];
    for (k, v) in labels {
        args.push("--label".into());
        args.push(format!("{k}={v}"));
    }
    args.extend([image(), "sh".into(), "-c".into(), script.into()]);
    docker(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn monitor() -> Monitor {
    logs();
    Monitor::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .final_export(false)
        .sample_interval(Duration::from_millis(200))
        .build()
        .unwrap()
}

/// A monitor that delivers its alerts to `am`, once Docker has answered it.
fn alerting_monitor(am: &Alertmanager) -> Monitor {
    logs();
    let monitor = Monitor::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .final_export(false)
        .sample_interval(Duration::from_millis(200))
        .alertmanager_urls([am.url()])
        .build()
        .unwrap();
    let addr = monitor.local_addr();
    wait_until(Duration::from_secs(20), "the start-up sweep", || {
        parse(&scrape(addr)).unwrap()["loopwatch_docker_up"].value() == 1.0
    });
    monitor
}

fn hostname() -> String {
    sysinfo::System::host_name().unwrap()
}

/// Start time of a live process, as loopwatch records it.
fn start_time_of(pid: u32) -> u64 {
    let mut system = sysinfo::System::new().unwrap();
    let pid = sysinfo::Pid::from_u32(pid);
    system.refresh_processes_specifics(
        sysinfo::ProcessesToUpdate::Some(&[pid]),
        true,
        sysinfo::ProcessRefreshKind::nothing(),
    );
    system.process(pid).expect("process is alive").start_time()
}

fn owner_labels(run_id: &str, host: &str, pid: u32, start_time: u64) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_RUN_ID.to_string(), run_id.to_string()),
        ("loopwatch.owner.host".to_string(), host.to_string()),
        ("loopwatch.owner.pid".to_string(), pid.to_string()),
        (
            "loopwatch.owner.start_time".to_string(),
            start_time.to_string(),
        ),
    ])
}

/// The pid of a process that has exited (its owner is certainly gone).
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn managed_ids(filter: &str) -> Vec<String> {
    docker(&["ps", "-aq", "--no-trunc", "--filter", filter])
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn stats_show_a_busy_container_and_vanish_when_it_goes() {
    let _serial = serial();
    busy_container_stats("cgroup");
}

#[test]
fn the_docker_stats_fallback_shows_the_same() {
    let _serial = serial();
    busy_container_stats("docker_api");
}

/// A busy container's numbers from the given source (`LOOPWATCH_CONTAINER_STATS`,
/// read when the monitor starts; container tests run one at a time).
fn busy_container_stats(source: &str) {
    // `yes` wants a whole core, but the host may give it less (other work on a small
    // machine): what is asserted is that the reading is a busy container's, far from an
    // idle one's (under 1%), and not over the two cores such a machine has.
    const BUSY: f64 = 10.0;
    std::env::set_var("LOOPWATCH_CONTAINER_STATS", source);
    let monitor = monitor();
    std::env::remove_var("LOOPWATCH_CONTAINER_STATS");
    let addr = monitor.local_addr();
    // 64 MiB held by dd (its pipe reader never reads) and one core burnt by yes.
    let id = run_labelled(
        &monitor.labels(),
        "yes > /dev/null & dd if=/dev/zero bs=64M count=1 | sleep 300",
    );
    let name = docker(&["inspect", "--format", "{{.Name}}", &id])
        .trim_start_matches('/')
        .to_string();
    let (mut memory, mut cpu) = (0.0, 0.0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while (memory < 60e6 || cpu < BUSY) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        let e = parse(&scrape(addr)).unwrap();
        memory = e
            .get("container_memory_usage")
            .and_then(|f| f.value_with(&[("name", &name)]))
            .unwrap_or(0.0);
        cpu = e
            .get("container_cpu_usage")
            .and_then(|f| f.value_with(&[("name", &name)]))
            .unwrap_or(0.0);
    }
    let e = parse(&scrape(addr)).unwrap();
    docker(&["rm", "-f", &id]);
    assert!(
        (60e6..512e6).contains(&memory),
        "working set of 64 MiB held: {memory}"
    );
    assert!((BUSY..=210.0).contains(&cpu), "one core busy: {cpu}%");
    assert_eq!(e["active_containers"].value(), 1.0);
    assert_eq!(e["loopwatch_docker_up"].value(), 1.0);
    assert_eq!(
        e["loopwatch_container_stats_source"].value_with(&[("source", source)]),
        Some(1.0),
        "numbers from {source}"
    );
    wait_until(
        Duration::from_secs(10),
        "the container's series to vanish",
        || {
            let text = scrape(addr);
            !text.contains(&format!("name=\"{name}\""))
                && parse(&text).unwrap()["active_containers"].value() == 0.0
        },
    );
    monitor.shutdown();
}

#[test]
fn the_sandbox_runs_limits_collects_and_removes() {
    let _serial = serial();
    let monitor = monitor();
    let sandbox = monitor.sandbox();
    let ok = sandbox
        .run(
            &SandboxSpec::new(image(), ["sh", "-c", "echo hello; echo oops >&2; exit 3"])
                .with_memory_bytes(32 << 20),
        )
        .unwrap();
    assert_eq!(ok.exit_code, 3);
    assert_eq!(ok.stdout.trim(), "hello");
    assert_eq!(ok.stderr.trim(), "oops");
    assert!(!ok.timed_out);
    // No network by default.
    let net = sandbox
        .run(&SandboxSpec::new(
            image(),
            ["sh", "-c", "cat /sys/class/net/*/operstate | wc -l"],
        ))
        .unwrap();
    assert_eq!(
        net.stdout.trim(),
        "1",
        "only the loopback interface: {net:?}"
    );
    // A runaway is killed at its timeout.
    let started = Instant::now();
    let runaway = sandbox
        .run(&SandboxSpec::new(image(), ["sleep", "300"]).with_timeout(Duration::from_secs(1)))
        .unwrap();
    assert!(runaway.timed_out);
    assert!(started.elapsed() < Duration::from_secs(30));
    let run = format!("label={LABEL_RUN_ID}={}", monitor.identity().run_id);
    assert!(
        managed_ids(&run).is_empty(),
        "every sandbox container removed"
    );
    monitor.shutdown();
}

#[test]
fn orphans_of_dead_owners_are_removed_and_nothing_else_is_touched() {
    let _serial = serial();
    logs();
    let host = hostname();
    // Another loop, alive, in another process: the evolve example lingering until
    // the test ends it.
    let dir = tempfile::tempdir().unwrap();
    let mut live_loop = Stopped(
        Command::new(example_path("evolve"))
            .args([
                "--iterations",
                "1",
                "--population",
                "8",
                "--resamples",
                "1",
                "--linger",
                "forever",
            ])
            .env("LOOPWATCH_LISTEN", "127.0.0.1:0")
            .env("LOOPWATCH_OUTPUT_DIR", dir.path())
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Keep draining its stderr (it must not die of a closed pipe), and wait for its own
    // start-up sweep, so that it cannot race ours.
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = live_loop.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next_line = |needle: &str| loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the live loop is talking");
        if line.contains(needle) {
            return line;
        }
    };
    let run_line = next_line("run_id=");
    let live_run_id = run_line
        .split("run_id=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    next_line("orphaned containers from previous runs");
    let live_pid = live_loop.id();
    let live_start = start_time_of(live_pid);

    // An unrelated process whose pid an old loop once had.
    let mut unrelated = Command::new("sleep").arg("300").spawn().unwrap();
    let unrelated_pid = unrelated.id();
    let unrelated_start = start_time_of(unrelated_pid);

    let dead = [
        run_labelled(
            &owner_labels("dead-run-a", &host, dead_pid(), 1_600_000_000),
            "sleep 300",
        ),
        run_labelled(
            &owner_labels("dead-run-b", &host, dead_pid(), 1_600_000_100),
            "sleep 300",
        ),
        // pid reused: the pid is alive, but its process started at another time.
        run_labelled(
            &owner_labels("dead-run-c", &host, unrelated_pid, unrelated_start - 3600),
            "sleep 300",
        ),
    ];
    let kept = [
        run_labelled(&HashMap::new(), "sleep 300"),
        run_labelled(
            &owner_labels(&live_run_id, &host, live_pid, live_start),
            "sleep 300",
        ),
        // The same live pid with its true start time: alive, not an orphan.
        run_labelled(
            &owner_labels("sleeper-run", &host, unrelated_pid, unrelated_start),
            "sleep 300",
        ),
        run_labelled(
            &owner_labels("remote-run", "another-host", dead_pid(), 1_600_000_000),
            "sleep 300",
        ),
    ];
    // Removed at the end whatever happens, so that a failure here leaves no strays
    // for the other tests to trip over.
    let _kept_removed: Vec<Removed> = kept.iter().map(|id| Removed(id.clone())).collect();
    let monitor = monitor();
    wait_until(
        Duration::from_secs(60),
        "the dead owners' containers to go",
        || dead.iter().all(|id| !exists(id)),
    );
    // Either loop may clean them up (the live one notices dead owners too, from its
    // process table); each is cleaned, and logged, exactly once.
    // The live loop's lines arrive through its pipe and a reader thread: wait for
    // each removal's line, from either loop, before counting them.
    let mut theirs: Vec<String> = Vec::new();
    let logged = |id: &str, theirs: &[String]| {
        let needle = format!("Cleaned up orphaned container {id}");
        logs().lines_with(&[&needle]).len() + theirs.iter().filter(|l| l.contains(&needle)).count()
    };
    wait_until(Duration::from_secs(30), "each removal's log line", || {
        theirs.extend(rx.try_iter());
        dead.iter().all(|id| logged(id, &theirs) > 0)
    });
    theirs.extend(rx.try_iter());
    for id in &dead {
        assert_eq!(logged(id, &theirs), 1, "{id}: logged once");
    }
    assert!(!logs()
        .lines_with(&["orphaned containers from previous runs"])
        .is_empty());
    for id in &kept {
        assert!(exists(id), "{id} must be left alone");
    }
    let e = parse(&scrape(monitor.local_addr())).unwrap();
    assert_eq!(e["orphaned_containers"].value(), 0.0);
    assert!(e["loopwatch_containers_cleaned_total"].value() >= 3.0);
    monitor.shutdown();

    let _ = unrelated.kill();
    let _ = live_loop.kill();
    let _ = live_loop.wait();
    let _ = unrelated.wait();
}

/// Makes a container's removal fail for real: an immutable file in its writable layer
/// stops Docker from deleting the layer ("operation not permitted").
fn make_unremovable(id: &str) -> String {
    let upper = docker(&["inspect", "--format", "{{.GraphDriver.Data.UpperDir}}", id]);
    let file = format!("{upper}/pinned");
    std::fs::write(&file, b"pinned").unwrap();
    let status = Command::new("chattr")
        .args(["+i", &file])
        .status()
        .expect("chattr (e2fsprogs)");
    assert!(status.success(), "chattr +i {file}");
    file
}

/// Containers made unremovable, released (and removed) when dropped, pass or fail.
struct Pinned(Vec<(String, String)>);

impl Drop for Pinned {
    fn drop(&mut self) {
        for (id, file) in &self.0 {
            let _ = Command::new("chattr").args(["-i", file]).status();
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
    }
}

#[test]
fn removal_that_fails_for_real_is_counted_logged_and_alerted_within_ten_seconds() {
    let _serial = serial();
    let am = Alertmanager::start();
    logs();
    let monitor = alerting_monitor(&am);
    let addr = monitor.local_addr();
    // Four loops die mid-run, each leaving a container Docker cannot remove.
    let host = hostname();
    let mut pinned = Pinned(Vec::new());
    for i in 0..4 {
        let id = run_labelled(
            &owner_labels(&format!("stuck-{i}"), &host, dead_pid(), 1_600_000_000),
            "sleep 300",
        );
        let file = make_unremovable(&id);
        pinned.0.push((id, file));
    }
    // The condition (more than 3 orphans that cannot be removed) holds from here.
    let condition = Instant::now();
    wait_until(
        Duration::from_secs(30),
        "ContainerCleanupFailures at Alertmanager",
        || {
            am.alerts()
                .iter()
                .any(|a| a["labels"]["alertname"] == "ContainerCleanupFailures")
        },
    );
    let latency = condition.elapsed();
    println!("ContainerCleanupFailures: condition to Alertmanager in {latency:?}");
    assert!(latency < Duration::from_secs(10), "{latency:?}");
    // Retried sweep after sweep (1 s, 2 s, 4 s …), each container still counts once.
    wait_until(Duration::from_secs(30), "a second attempt at each", || {
        pinned.0.iter().all(|(id, _)| {
            !logs()
                .lines_with(&[
                    &format!("failed to clean up orphaned container {id}"),
                    "attempts=2",
                ])
                .is_empty()
        })
    });
    let e = parse(&scrape(addr)).unwrap();
    assert_eq!(e["orphaned_containers"].value(), 4.0);
    assert_eq!(
        e["loopwatch_container_cleanup_failures_total"].value(),
        4.0,
        "one per container, not one per attempt"
    );
    for (id, _) in &pinned.0 {
        let lines = logs().lines_with(&[
            "ERROR",
            &format!("failed to clean up orphaned container {id}"),
        ]);
        assert!(!lines.is_empty(), "no error logged for {id}");
    }
    assert!(
        monitor
            .firing_alerts()
            .contains(&AlertName::ContainerCleanupFailures),
        "4 > 3 orphans"
    );
    monitor.shutdown();
}

#[test]
fn a_killed_loop_leaves_orphans_that_the_next_start_removes() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut drill = Command::new(example_path("crash_drill"))
        .arg("3")
        .env("LOOPWATCH_LISTEN", "127.0.0.1:0")
        .env("LOOPWATCH_OUTPUT_DIR", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let drill_pid = drill.id();
    let status = drill.wait().unwrap();
    assert!(!status.success(), "the loop crashed");
    // The drill's own containers, whatever other loops on this host have running.
    let left = managed_ids(&format!("label=loopwatch.owner.pid={drill_pid}"));
    assert!(
        !left.is_empty(),
        "its running sandbox containers are left behind"
    );
    assert!(
        !dir.path().join("metrics_final.json").exists(),
        "a crash writes no export"
    );

    // Restarted at once, as systemd's 100 ms RestartSec does.
    let monitor = monitor();
    wait_until(
        Duration::from_secs(60),
        "the crash's orphans to be removed",
        || left.iter().all(|id| !exists(id)),
    );
    for id in &left {
        assert_eq!(
            logs()
                .lines_with(&[&format!("Cleaned up orphaned container {id}")])
                .len(),
            1
        );
    }
    monitor.shutdown();
}

/// The second (since the Unix epoch) Docker says a container was created in.
fn created_second(id: &str) -> u64 {
    let created = docker(&["inspect", "-f", "{{.Created}}", id]);
    humantime::parse_rfc3339_weak(created.trim())
        .unwrap_or_else(|e| panic!("{created:?}: {e}"))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn now_second() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_crashed_run_restarted_in_the_same_second_loses_its_orphans_at_the_new_start() {
    let _serial = serial();
    logs();
    let host = hostname();
    // A dead loop's orphans, and the next loop started within the same second they
    // were created in (tried again should the second roll over first).
    for _ in 0..20 {
        let orphans: Vec<String> = (0..2)
            .map(|_| {
                run_labelled(
                    &owner_labels("crashed-run", &host, dead_pid(), 1_600_000_000),
                    "sleep 300",
                )
            })
            .collect();
        let _removed: Vec<Removed> = orphans.iter().map(|id| Removed(id.clone())).collect();
        let newest = orphans.iter().map(|id| created_second(id)).max().unwrap();
        if now_second() != newest {
            continue;
        }
        let monitor = monitor();
        let started = now_second();
        if started != newest {
            monitor.shutdown();
            continue;
        }
        // The start-up sweep, not the minute's safety net, removes them.
        wait_until(Duration::from_secs(20), "the orphans to go", || {
            orphans.iter().all(|id| !exists(id))
        });
        for id in &orphans {
            assert_eq!(
                logs()
                    .lines_with(&[&format!("Cleaned up orphaned container {id}")])
                    .len(),
                1
            );
        }
        monitor.shutdown();
        return;
    }
    panic!("could not start a loop within the second its orphans were created in");
}

/// This run's own containers that cannot be removed are orphans: shown in
/// `orphaned_containers`, counted once each, and alerted past the limit.
#[test]
fn own_containers_that_cannot_be_removed_are_orphans_counted_once_and_alerted() {
    let _serial = serial();
    let am = Alertmanager::start();
    logs();
    let monitor = alerting_monitor(&am);
    let addr = monitor.local_addr();
    let run = format!("label={LABEL_RUN_ID}={}", monitor.identity().run_id);
    let pinned = Mutex::new(Pinned(Vec::new()));
    let sandbox = monitor.sandbox();
    // Four sandbox runs, each pinned while it runs so that its removal fails.
    let finished = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    // A minute at most, so that a failure below ends the test soon.
                    sandbox
                        .run(
                            &SandboxSpec::new(
                                image(),
                                ["sh", "-c", "until [ -e /tmp/go ]; do sleep 0.05; done"],
                            )
                            .with_timeout(Duration::from_secs(60)),
                        )
                        .unwrap()
                })
            })
            .collect();
        wait_until(Duration::from_secs(30), "four sandbox containers", || {
            managed_ids(&run).len() == 4
        });
        for id in managed_ids(&run) {
            let file = make_unremovable(&id);
            pinned.lock().unwrap().0.push((id.clone(), file));
            docker(&["exec", &id, "sh", "-c", ": > /tmp/go"]);
        }
        for run in runs {
            assert_eq!(run.join().unwrap().exit_code, 0);
        }
        Instant::now()
    });
    let pinned = pinned.into_inner().unwrap();
    wait_until(
        Duration::from_secs(30),
        "ContainerCleanupFailures at Alertmanager",
        || am.alert("ContainerCleanupFailures").is_some(),
    );
    let latency = finished.elapsed();
    println!("ContainerCleanupFailures (own containers): condition to Alertmanager in {latency:?}");
    assert!(latency < Duration::from_secs(10), "{latency:?}");
    wait_until(Duration::from_secs(30), "a retry of each", || {
        pinned.0.iter().all(|(id, _)| {
            !logs()
                .lines_with(&[
                    &format!("failed to clean up this run's container {id}"),
                    "attempts=2",
                ])
                .is_empty()
        })
    });
    let e = parse(&scrape(addr)).unwrap();
    assert_eq!(e["orphaned_containers"].value(), 4.0);
    assert_eq!(e["loopwatch_container_cleanup_failures_total"].value(), 4.0);
    drop(pinned);
    monitor.shutdown();
}

#[test]
fn a_hundred_sandboxed_generations_leave_zero_containers() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(example_path("evolve"))
        .args([
            "--iterations",
            "100",
            "--population",
            "8",
            "--resamples",
            "1",
            "--window",
            "300",
        ])
        .args(["--sandbox", "docker", "--sandbox-workers", "2"])
        .env("LOOPWATCH_LISTEN", "127.0.0.1:0")
        .env("LOOPWATCH_OUTPUT_DIR", dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("generations: 100"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("metrics_final.json")).unwrap())
            .unwrap();
    // Its own containers, whatever other loops on this host have running.
    let run_id = json["identity"]["run_id"].as_str().unwrap();
    assert!(
        managed_ids(&format!("label={LABEL_RUN_ID}={run_id}")).is_empty(),
        "zero containers of the run left"
    );
    assert!(
        json["summary"]["strategy_successes"].as_u64().unwrap() > 100,
        "back-tests ran: {json:#}"
    );
    assert!(
        json["summary"]["failure_reasons"]
            .get("sandbox unavailable")
            .is_none(),
        "every sandbox answered: {:#}",
        json["summary"]["failure_reasons"]
    );
    assert_eq!(
        json["containers"]["shutdown"]["left_behind"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
}

fn docker_answers() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn docker_going_down_mid_run_degrades_only_containers_and_recovers() {
    let _serial = serial();
    let monitor = monitor();
    let addr = monitor.local_addr();
    let docker_up = || parse(&scrape(addr)).unwrap()["loopwatch_docker_up"].value() == 1.0;
    wait_until(Duration::from_secs(10), "docker up", docker_up);

    // Stop the daemon (SIGTERM: a clean stop, as an operator's would be).
    Command::new("pkill")
        .args(["-TERM", "-x", "dockerd"])
        .status()
        .unwrap();
    wait_until(Duration::from_secs(30), "dockerd to stop", || {
        !docker_answers()
    });
    wait_until(Duration::from_secs(10), "loopwatch_docker_up 0", || {
        parse(&scrape(addr)).unwrap()["loopwatch_docker_up"].value() == 0.0
    });
    // The loop carries on, and so does everything else.
    for _ in 0..5 {
        let mut it = monitor.start_iteration();
        it.record_success(1.0, 0.1);
    }
    let e = parse(&scrape(addr)).unwrap();
    assert_eq!(e["strategy_success_total"].value(), 5.0);
    assert_eq!(
        logs()
            .lines_with(&["Docker is unreachable; container metrics"])
            .len(),
        1,
        "said once"
    );

    // Bring it back once the old daemon has fully exited: container metrics recover
    // without restarting the loop.
    wait_until(Duration::from_secs(120), "the old dockerd to exit", || {
        !Command::new("pgrep")
            .args(["-x", "dockerd"])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success()
    });
    Command::new("sh")
        .args([
            "-c",
            "rm -f /var/run/docker.pid; nohup dockerd >/tmp/loopwatch-dockerd.log 2>&1 &",
        ])
        .status()
        .unwrap();
    wait_until(
        Duration::from_secs(60),
        "dockerd to answer again",
        docker_answers,
    );
    let id = run_labelled(&monitor.labels(), "sleep 300");
    wait_until(
        Duration::from_secs(20),
        "container metrics to recover",
        || {
            let e = parse(&scrape(addr)).unwrap();
            e["loopwatch_docker_up"].value() == 1.0 && e["active_containers"].value() == 1.0
        },
    );
    assert!(!logs().lines_with(&["Docker is reachable again"]).is_empty());
    docker(&["rm", "-f", &id]);
    monitor.shutdown();
}

#[test]
fn a_stats_sweep_of_twenty_containers_is_concurrent() {
    let _serial = serial();
    let monitor = monitor();
    let ids: Vec<String> = (0..20)
        .map(|_| run_labelled(&monitor.labels(), "sleep 300"))
        .collect();
    // The first sample starts one stats stream per container; wait for all readings.
    let addr = monitor.local_addr();
    wait_until(
        Duration::from_secs(30),
        "readings of all 20 containers",
        || {
            monitor.sample_containers_now();
            parse(&scrape(addr))
                .unwrap()
                .get("container_memory_usage")
                .is_some_and(|f| f.samples.len() == 20)
        },
    );
    let mut timings = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        monitor.sample_containers_now();
        timings.push(started.elapsed());
    }
    let e = parse(&scrape(monitor.local_addr())).unwrap();
    assert_eq!(e["active_containers"].value(), 20.0);
    assert_eq!(e["container_memory_usage"].samples.len(), 20);
    timings.sort();
    // A measurement for docs/containers.md, not a pass/fail threshold.
    println!(
        "stats sweep of 20 running containers: median {:?}, max {:?}",
        timings[2], timings[4]
    );
    for id in &ids {
        docker(&["rm", "-f", id]);
    }
    monitor.shutdown();
}

/// Removes a container when dropped, whatever the test's outcome.
struct Removed(String);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

#[test]
fn high_memory_compares_with_the_container_limit_not_the_host() {
    let _serial = serial();
    let port = support::services::free_port();
    let examples = example_path("memory_limit");
    let examples = examples.parent().unwrap();
    let name = format!("loopwatch-memory-limit-{port}");
    // A loop growing to 224 MiB in a container limited to 256 MiB (no swap): 87% of
    // what kills it, while the host (24 GiB here) is nowhere near 80%.
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--memory",
        "256m",
        "--memory-swap",
        "256m",
        "--network",
        "host",
        "-e",
        &format!("LOOPWATCH_LISTEN=127.0.0.1:{port}"),
        "-v",
        &format!("{}:/x:ro", examples.display()),
        "-v",
        "/usr/lib:/usr/lib:ro",
        "-v",
        "/usr/lib64:/usr/lib64:ro",
        &image(),
        "/x/memory_limit",
    ]);
    let _removed = Removed(name.clone());
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // The alert as the evaluator decided it: the value and threshold it fired on,
    // not a later sample, which may already read lower.
    let firing = || {
        let request =
            format!("GET /api/v1/snapshot HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let response = http_raw(addr, request.as_bytes()).ok()?;
        let snapshot: serde_json::Value = serde_json::from_str(&response.body).ok()?;
        snapshot["firing"]
            .as_array()?
            .iter()
            .find(|f| f["alertname"] == "HighMemoryUsage")
            .cloned()
            .map(|alert| (alert, snapshot))
    };
    let mut seen = None;
    wait_until(
        Duration::from_secs(60),
        "HighMemoryUsage inside the memory-limited container",
        || {
            seen = firing();
            seen.is_some()
        },
    );
    let (alert, _) = seen.unwrap();
    let fired_at = alert["value"].as_f64().unwrap();
    assert!(fired_at > 0.8, "fired on {alert}");
    assert_eq!(alert["threshold"].as_f64(), Some(0.8));
    let e = parse(&scrape(addr)).unwrap();
    assert_eq!(
        e["loopwatch_memory_limit_bytes"].value(),
        (256u64 << 20) as f64,
        "the container's limit"
    );
    let host = e["host_memory_used_bytes"].value() / e["host_memory_total_bytes"].value();
    assert!(host < 0.8, "the host is far below 80% ({host})");
}

/// What `loopwatch run` calls before it restarts a loop: every container of this run
/// goes, running or not, and nothing else does (a live owner's other run, an
/// unlabelled container).
#[test]
fn clean_up_run_containers_removes_this_runs_containers_and_nothing_else() {
    let _serial = serial();
    let monitor = monitor();
    let ours: Vec<String> = (0..3)
        .map(|_| run_labelled(&monitor.labels(), "sleep 300"))
        .collect();
    // One of this run that has already exited, as a crashed sandbox's would.
    let exited = run_labelled(&monitor.labels(), "exit 3");
    wait_until(Duration::from_secs(30), "the short one to exit", || {
        docker(&["inspect", "-f", "{{.State.Running}}", &exited]) == "false"
    });
    let me = std::process::id();
    let other_run = run_labelled(
        &owner_labels("another-run", &hostname(), me, start_time_of(me)),
        "sleep 300",
    );
    let unlabelled = docker(&["run", "-d", "--network", "none", &image(), "sleep", "300"]);

    assert_eq!(monitor.supervision().clean_up_run_containers(), 4);
    for id in ours.iter().chain([&exited]) {
        assert!(!exists(id), "{id} of this run is still there");
    }
    assert!(exists(&other_run), "another run's container was removed");
    assert!(exists(&unlabelled), "an unlabelled container was removed");
    // Nothing is left to remove, and the monitor goes on.
    assert_eq!(monitor.supervision().clean_up_run_containers(), 0);
    monitor.shutdown();
    assert!(exists(&other_run) && exists(&unlabelled));
    docker(&["rm", "-f", &other_run, &unlabelled]);
}
