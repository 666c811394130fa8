//! Loops in another language under `loopwatch run`: real DEAP and Optuna loops in the
//! test virtual environment (scripts/test makes it: `pip install .`, deap, optuna),
//! scraped by a real Prometheus, alerting a real Alertmanager; deaths, hangs, orphaned
//! workers, hostile socket input, and file-based discovery of two loops; restarts; the
//! supervisor's hold on the whole process tree (wrappers; scrubbed and re-parented
//! escapees; SIGKILL after the grace, below loopwatch and for an escapee outside its
//! tree found by the run's marker; PID 1 in `unshare --pid`; the terminal in a real
//! interactive bash under `script`), and the socket's fallback directories (in a mount
//! namespace of `unshare --mount`, as root, for none at all).

mod support;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::services::{Alertmanager, Prometheus};
use support::*;

/// The tests of this file run one at a time: every loopwatch sweeps the host for
/// orphaned processes, and one test plants orphans on purpose.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn script(name: &str) -> PathBuf {
    repo_root().join("examples/python").join(name)
}

/// Writes `dir/name`: a loop of `iterations` iterations of one success each, taking
/// `pause` seconds, followed by the Python statements of `then`; with no count, the
/// iterations go on until the test stops the loop.
fn steady_loop(dir: &Path, name: &str, iterations: Option<u32>, pause: f64, then: &str) -> PathBuf {
    let path = dir.join(name);
    let iterations = iterations.map_or("itertools.count()".to_string(), |n| format!("range({n})"));
    std::fs::write(
        &path,
        format!(
            "import itertools, loopwatch, time\n\
             for i in {iterations}:\n\
             \x20   with loopwatch.iteration() as it:\n\
             \x20       it.success(sharpe=1.0, drawdown=0.1)\n\
             \x20       time.sleep({pause})\n\
             {then}\n"
        ),
    )
    .unwrap();
    path
}

/// Every metric with a fixed name (`MetricSpec::has_fixed_name`: the names of
/// docs/metrics.md that dashboards and queries were written against) has data in
/// Prometheus for this target; the per-container rows have a series per running
/// sandbox container, and these loops start none (the evolve example's stack test
/// covers them).
fn assert_fixed_names_have_data(prometheus: &Prometheus, addr: SocketAddr) {
    use loopwatch::catalog::Presence;
    for spec in loopwatch::catalog::CATALOG
        .iter()
        .filter(|s| s.has_fixed_name() && s.presence != Presence::PerContainer)
    {
        let query = format!("{}{{instance=\"{addr}\"}}", spec.name);
        let result = prometheus.query(&query);
        assert!(
            !result.is_empty(),
            "{} has no data in Prometheus",
            spec.name
        );
    }
}

#[test]
fn deap_and_optuna_loops_are_scraped_by_a_real_prometheus() {
    let _serial = serial();
    for (name, args) in [
        (
            "DEAP",
            vec!["deap_loop.py", "--generations", "40", "--pause", "0.1"],
        ),
        (
            "Optuna",
            vec!["optuna_loop.py", "--trials", "60", "--pause", "0.05"],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let script_path = script(args[0]);
        let mut script_args: Vec<&str> = vec![script_path.to_str().unwrap()];
        script_args.extend(&args[1..]);
        // Serving after the loop's end until the test has seen every name in
        // Prometheus; the test then stops it.
        let mut run = Supervised::start(dir.path(), &["--linger=1h"], &script_args);
        run.wait_serving();
        let prometheus = Prometheus::start(run.addr, None);
        let iterations = |p: &Prometheus| {
            p.query(&format!("iteration_number{{instance=\"{}\"}}", run.addr))
                .first()
                .and_then(|r| r["value"][1].as_str()?.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let expected = if name == "DEAP" { 40.0 } else { 60.0 };
        wait_until(
            Duration::from_secs(40),
            "Prometheus to scrape the last iteration",
            || iterations(&prometheus) >= expected,
        );
        assert_fixed_names_have_data(&prometheus, run.addr);
        Command::new("kill")
            .args(["-TERM", &run.child.id().to_string()])
            .status()
            .unwrap();
        let status = run.wait(Duration::from_secs(60));
        assert_eq!(status.code(), Some(0), "{name}: {}", run.log());
        let summary = &run.final_json()["summary"];
        assert_eq!(summary["iterations"], expected as u64, "{name}");
        assert!(summary["champion"].is_string(), "{name}: {summary}");
        assert_eq!(summary["loop_exit"]["code"], 0);
        assert_eq!(summary["loop_exit"]["said_done"], true);
    }
}

#[test]
fn a_deap_population_without_variation_raises_diversity_collapse_at_alertmanager() {
    let _serial = serial();
    let alertmanager = Alertmanager::start();
    let dir = tempfile::tempdir().unwrap();
    let script_path = script("deap_loop.py");
    let mut run = Supervised::start(
        dir.path(),
        &[
            &format!("--alertmanager={}", alertmanager.url()),
            "--linger=2s",
        ],
        &[
            script_path.to_str().unwrap(),
            "--generations",
            "30",
            "--no-variation",
        ],
    );
    assert_eq!(
        run.wait(Duration::from_secs(60)).code(),
        Some(0),
        "{}",
        run.log()
    );
    let run_id = run.run_id();
    let alert = alertmanager.alerts().into_iter().find(|a| {
        a["labels"]["alertname"] == "DiversityCollapse" && a["labels"]["run_id"] == run_id.as_str()
    });
    assert!(
        alert.is_some(),
        "no DiversityCollapse for {run_id} at Alertmanager: {:?}",
        alertmanager.alerts()
    );
    // A loop that said it was done and exited 0 raises no LoopExited.
    assert!(!alertmanager
        .alerts()
        .iter()
        .any(|a| a["labels"]["alertname"] == "LoopExited"
            && a["labels"]["run_id"] == run_id.as_str()));
}

#[test]
fn a_loop_killed_mid_run_raises_loop_exited_and_loopwatch_exits_137() {
    let _serial = serial();
    let alertmanager = Alertmanager::start();
    let dir = tempfile::tempdir().unwrap();
    let loop_file = steady_loop(dir.path(), "loop.py", None, 0.05, "");
    let mut run = Supervised::start(
        dir.path(),
        &[&format!("--alertmanager={}", alertmanager.url())],
        &[loop_file.to_str().unwrap()],
    );
    run.wait_serving();
    wait_until(Duration::from_secs(20), "a few iterations", || {
        run.metric("iteration_number").unwrap_or(0.0) >= 5.0
    });
    let python_pid = pid_of_child(run.child.id());
    Command::new("kill")
        .args(["-KILL", &python_pid.to_string()])
        .status()
        .unwrap();
    let status = run.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(137), "{}", run.log());
    let summary = &run.final_json()["summary"];
    assert_eq!(summary["loop_exit"]["signal"], 9);
    assert_eq!(summary["loop_exit"]["said_done"], false);
    let alerts = &run.final_json()["evaluation"]["alerts"];
    assert_eq!(alerts["LoopExited"], "firing", "{alerts}");
    let run_id = run.run_id();
    // Delivered before loopwatch exited: Alertmanager already holds it.
    let alert = alertmanager.alerts().into_iter().find(|a| {
        a["labels"]["alertname"] == "LoopExited" && a["labels"]["run_id"] == run_id.as_str()
    });
    let alert =
        alert.unwrap_or_else(|| panic!("no LoopExited at Alertmanager; log:\n{}", run.log()));
    assert_eq!(
        alert["annotations"]["summary"],
        "Unexpected loop exit detected"
    );
}

/// The pid of the single child process of `parent`.
fn pid_of_child(parent: u32) -> u32 {
    let mut found = None;
    wait_until(Duration::from_secs(10), "the loop's process", || {
        let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        found = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok());
        found.is_some()
    });
    found.unwrap()
}

#[test]
fn a_hanging_python_evaluation_raises_loop_stalled_and_a_signal_ends_it() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("loopwatch.toml");
    std::fs::write(&config, "stall_floor = \"2s\"\nstall_factor = 5.0\n").unwrap();
    let loop_file = steady_loop(
        dir.path(),
        "hang.py",
        Some(5),
        0.05,
        "with loopwatch.iteration() as it:\n    time.sleep(3600)  # the evaluation that never returns",
    );
    let mut run = Supervised::start(
        dir.path(),
        &[&format!("--config={}", config.display()), "--grace=5s"],
        &[loop_file.to_str().unwrap()],
    );
    run.wait_serving();
    wait_until(Duration::from_secs(20), "LoopStalled to fire", || {
        scrape(run.addr).contains("loopwatch_alert_firing{alertname=\"LoopStalled\"} 1")
    });
    // SIGTERM to loopwatch is forwarded; Python dies of it; loopwatch reports 143.
    Command::new("kill")
        .args(["-TERM", &run.child.id().to_string()])
        .status()
        .unwrap();
    let status = run.wait(Duration::from_secs(20));
    assert_eq!(status.code(), Some(143), "{}", run.log());
    assert!(run.log().contains("forwarding the signal"), "{}", run.log());
    assert_eq!(run.final_json()["summary"]["loop_exit"]["signal"], 15);
}

#[test]
fn workers_and_daemons_left_running_by_the_loop_are_terminated_when_it_exits() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let loop_file = dir.path().join("orphans.py");
    std::fs::write(
        &loop_file,
        r#"import multiprocessing, os, sys, time
import loopwatch

def work(_):
    time.sleep(600)

def daemon(out):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            with open(out + "/daemon.pid", "w") as f:
                f.write(str(os.getpid()))
            time.sleep(600)
        os._exit(0)

if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    pool = multiprocessing.Pool(2)
    pool.map_async(work, range(2))
    daemon(sys.argv[1])
    with loopwatch.iteration() as it:
        it.success(1.0)
    while not os.path.exists(sys.argv[1] + "/daemon.pid"):
        time.sleep(0.01)
    with open(sys.argv[1] + "/pool.pids", "w") as f:
        f.write(" ".join(str(p.pid) for p in pool._pool))
    loopwatch.done()
    os._exit(0)  # neither joined nor terminated
"#,
    )
    .unwrap();
    let mut run = Supervised::start(
        dir.path(),
        &[],
        &[loop_file.to_str().unwrap(), dir.path().to_str().unwrap()],
    );
    assert_eq!(
        run.wait(Duration::from_secs(60)).code(),
        Some(0),
        "{}",
        run.log()
    );
    let mut pids: Vec<u32> = std::fs::read_to_string(dir.path().join("pool.pids"))
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    pids.push(
        std::fs::read_to_string(dir.path().join("daemon.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap(),
    );
    let log = run.log();
    for pid in &pids {
        assert!(!alive(*pid), "process {pid} outlived the loop; log:\n{log}");
        assert!(
            log.contains(&format!("Cleaned up orphaned process {pid}")),
            "{pid} not logged:\n{log}"
        );
    }
    let cleaned = run.final_json()["metrics"]["loopwatch_processes_cleaned_total"]["samples"][0]
        ["value"]
        .as_f64()
        .unwrap();
    assert!(cleaned >= 3.0, "{cleaned}");
}

/// Alive and not a zombie waiting to be reaped.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace()
                .next()
                .map(|state| state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// A loop with a pool of two sleeping workers; writes their pids to `<dir>/pool.pids`.
const POOL_LOOP: &str = r#"import multiprocessing, os, sys, time
import loopwatch

def work(_):
    time.sleep(600)

if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    pool = multiprocessing.Pool(2)
    pool.map_async(work, range(2))
    with loopwatch.iteration() as it:
        it.success(1.0)
    with open(sys.argv[1] + "/pool.pids.tmp", "w") as f:
        f.write(" ".join(str(p.pid) for p in pool._pool))
    os.rename(sys.argv[1] + "/pool.pids.tmp", sys.argv[1] + "/pool.pids")
    time.sleep(600)
"#;

fn pool_pids(dir: &Path) -> Vec<u32> {
    let file = dir.join("pool.pids");
    wait_until(Duration::from_secs(30), "the pool to start", || {
        file.exists()
    });
    std::fs::read_to_string(file)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

/// SIGKILLs a supervised run and its loop at once, as a crash or an OOM kill of the
/// supervisor would: the loop's workers are left running.
fn crash(run: &mut Supervised) {
    let python = pid_of_child(run.child.id());
    Command::new("kill")
        // The supervisor first, so that it cannot see its loop die and clean up.
        .args(["-KILL", &run.child.id().to_string(), &python.to_string()])
        .status()
        .unwrap();
    let _ = run.child.wait();
}

#[test]
fn workers_of_a_crashed_run_are_removed_by_the_next_start_and_by_cleanup() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let script_file = root.path().join("pool.py");
    std::fs::write(&script_file, POOL_LOOP).unwrap();
    let start = |name: &str| {
        let dir = root.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        let run = Supervised::start(
            &dir,
            &[],
            &[script_file.to_str().unwrap(), dir.to_str().unwrap()],
        );
        let pids = pool_pids(&dir);
        (run, pids)
    };
    let (mut first, first_workers) = start("first");
    let (mut second, second_workers) = start("second");
    crash(&mut first);
    assert!(
        first_workers.iter().all(|pid| alive(*pid)),
        "the crash left the workers running"
    );

    // The next loopwatch to start sweeps the crashed run's workers at start-up.
    let (mut live, live_workers) = start("live");
    wait_until(
        Duration::from_secs(15),
        "the next start to remove the workers",
        || first_workers.iter().all(|pid| !alive(*pid)),
    );
    for pid in &first_workers {
        assert!(
            live.log()
                .contains(&format!("Cleaned up orphaned process {pid}")),
            "{}",
            live.log()
        );
    }

    // An unrelated process with the same command line and its own pool, unmarked.
    let unrelated_dir = root.path().join("unrelated");
    std::fs::create_dir(&unrelated_dir).unwrap();
    let mut unrelated = Command::new(python())
        .args([
            script_file.to_str().unwrap(),
            unrelated_dir.to_str().unwrap(),
        ])
        .env_remove(loopwatch::cleanup::ENV_RUN_ID)
        .env_remove(loopwatch::cleanup::ENV_OWNER)
        .env_remove("LOOPWATCH_SOCKET")
        .process_group(0)
        .spawn()
        .unwrap();
    let unrelated_workers = pool_pids(&unrelated_dir);

    // `loopwatch cleanup` after the second crash: the dry run lists, the real one
    // terminates; the live run's workers and the unrelated ones are left alone.
    crash(&mut second);
    let cleanup = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_loopwatch"))
            .arg("cleanup")
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = cleanup(&["--dry-run"]);
    for pid in &second_workers {
        assert!(
            listed.contains(&format!("would terminate process {pid} ")),
            "{listed}"
        );
        assert!(alive(*pid), "the dry run terminated {pid}");
    }
    let done = cleanup(&[]);
    for pid in &second_workers {
        assert!(
            done.contains(&format!("terminated process {pid} ")),
            "{done}"
        );
        assert!(!alive(*pid), "{pid} survived loopwatch cleanup");
    }
    for pid in live_workers.iter().chain(&unrelated_workers) {
        assert!(alive(*pid), "{pid} was touched:\n{listed}\n{done}");
        assert!(!done.contains(&format!("process {pid} ")), "{done}");
    }
    assert!(alive(unrelated.id()));

    Command::new("kill")
        .args(["-TERM", &live.child.id().to_string()])
        .status()
        .unwrap();
    live.wait(Duration::from_secs(20));
    assert!(
        live_workers.iter().all(|pid| !alive(*pid)),
        "the live run cleans up its own at exit"
    );
    let group = nix::unistd::Pid::from_raw(unrelated.id() as i32);
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = unrelated.wait();
}

#[test]
fn hostile_socket_input_is_rejected_and_counted_while_metrics_stay_valid() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let loop_file = dir.path().join("hostile.py");
    std::fs::write(
        &loop_file,
        r#"import json, multiprocessing, os, random, socket, sys, threading, time

PATH = os.environ["LOOPWATCH_SOCKET"]

def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(PATH)
    return s

def flood(seed):
    # 10,000 lines per second for 3 seconds from each process, valid and not.
    rng = random.Random(seed)
    s = connect()
    good = b'{"v":1,"type":"metric","name":"flood_total","kind":"counter","value":1}\n'
    bad = [b'{"v":1,"type":"success","sharpe":NaN}\n', b'{"v":1,"type":"nope"}\n',
           b'{"v":2,"type":"done"}\n', b'{"v":1,"type":"failure"}\n', b'\xff\xfe garbage\n',
           b'{"v":1,"type":"metric","name":"sharpe_ratio","kind":"gauge","value":1}\n']
    end = time.time() + 3
    sent = 0
    while time.time() < end:
        lines = [good if rng.random() < 0.5 else rng.choice(bad) for _ in range(1000)]
        sent += lines.count(good)
        s.sendall(b"".join(lines))
        time.sleep(0.1)
    s.close()
    with open("%s/good-%d" % (sys.argv[1], seed), "w") as f:
        f.write(str(sent))

if __name__ == "__main__":
    s = connect()
    s.sendall(os.urandom(100_000) + b"\n")
    s.sendall(b'{"v":1,"type":"iteration_st')  # truncated, then the connection closes
    s.close()
    s = connect()
    for _ in range(3):
        s.sendall(b'{"v":1,"type":"failure","reason":"' + b"x" * (1 << 20) + b'"}\n')
    # 99 series of its own; the flood's counter is the 100th, the limit.
    for i in range(99):
        s.sendall(json.dumps({"v": 1, "type": "metric", "name": "m%d" % i, "kind": "gauge", "value": i}).encode() + b"\n")
    s.sendall(b'{"v":1,"type":"iteration_start"}\n{"v":1,"type":"success","sharpe":1.5,"drawdown":0.1}\n{"v":1,"type":"iteration_end"}\n')
    s.close()
    good_total = 0
    for round in range(2):
        seeds = [round * 10 + i for i in range(4)]
        workers = [multiprocessing.Process(target=flood, args=(seed,)) for seed in seeds]
        for w in workers: w.start()
        for w in workers: w.join()
        for seed in seeds:
            with open("%s/good-%d" % (sys.argv[1], seed)) as f:
                good_total += int(f.read())
        if round == 1:
            s = connect()
            s.sendall(b'{"v":1,"type":"metric","name":"one_too_many","kind":"gauge","value":1}\n'
                      b'{"v":1,"type":"metric","name":"two_too_many","kind":"gauge","value":1}\n')
            s.close()
        # The valid lines sent so far, for the test to wait for exactly.
        with open(sys.argv[1] + "/round%d.tmp" % round, "w") as f:
            f.write(str(good_total))
        os.rename(sys.argv[1] + "/round%d.tmp" % round, sys.argv[1] + "/round%d" % round)
        time.sleep(1.5)
    threading.Event().wait()  # until the test, done reading, stops it
"#,
    )
    .unwrap();
    let mut run = Supervised::start(
        dir.path(),
        &[],
        &[loop_file.to_str().unwrap(), dir.path().to_str().unwrap()],
    );
    run.wait_serving();
    // Each round ends when every valid line the floods sent has been counted.
    let flooded = |round: u32| {
        let file = dir.path().join(format!("round{round}"));
        wait_until(Duration::from_secs(40), "a flood to be sent", || {
            file.exists()
        });
        let sent: f64 = std::fs::read_to_string(&file).unwrap().parse().unwrap();
        wait_until(
            Duration::from_secs(40),
            "the flood's valid lines to be counted",
            || run.metric("flood_total") == Some(sent),
        );
    };
    let loopwatch_pid = run.child.id();
    flooded(0);
    let rss_after_first = rss_bytes(loopwatch_pid);
    flooded(1);
    wait_until(
        Duration::from_secs(10),
        "the two metrics past the limit",
        || {
            scrape(run.addr).contains(
                "loopwatch_rejected_observations_total{field=\"metric\",reason=\"over_limit\"} 2",
            )
        },
    );
    let text = scrape(run.addr);
    assert_promtool_accepts(&text);
    let rejected = |field: &str, reason: &str| -> f64 {
        let needle = format!(
            "loopwatch_rejected_observations_total{{field=\"{field}\",reason=\"{reason}\"}} "
        );
        text.lines()
            .find(|l| l.starts_with(&needle))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(rejected("message", "too_long") >= 3.0, "{text}");
    assert!(rejected("message", "malformed") > 1000.0);
    assert!(rejected("message", "unknown_type") > 1000.0);
    assert!(rejected("message", "unsupported_version") > 1000.0);
    assert!(rejected("metric", "invalid") > 1000.0);
    assert_eq!(rejected("metric", "over_limit"), 2.0);
    // The valid lines amid the garbage all arrived (flood_total counted every one).
    assert_eq!(run.metric("iteration_number"), Some(1.0));
    assert!(run.metric("flood_total").unwrap() > 1000.0);
    let rss_after_second = rss_bytes(loopwatch_pid);
    assert!(
        rss_after_second < rss_after_first + 8 * 1024 * 1024,
        "memory grew from {rss_after_first} to {rss_after_second} bytes over a second flood"
    );
    Command::new("kill")
        .args(["-TERM", &run.child.id().to_string()])
        .status()
        .unwrap();
    run.wait(Duration::from_secs(20));
}

#[test]
fn two_loops_registered_in_one_directory_are_discovered_by_one_prometheus() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(repo_root().join("prometheus/prometheus.yml")).unwrap();
    assert!(
        config.contains("targets/*.json"),
        "the shipped config discovers registered loops"
    );
    let config = config.replace("refresh_interval: 5s", "refresh_interval: 1s");
    let targets = dir.path().join("targets");
    std::fs::create_dir(&targets).unwrap();
    let loop_file = steady_loop(dir.path(), "slow.py", None, 0.1, "");
    let register = format!("--register={}", targets.display());
    let runs: Vec<Supervised> = (0..2)
        .map(|i| {
            let out = dir.path().join(format!("loop{i}"));
            std::fs::create_dir(&out).unwrap();
            let run = Supervised::start(&out, &[&register], &[loop_file.to_str().unwrap()]);
            run.wait_serving();
            run
        })
        .collect();
    // Prometheus reads file_sd paths relative to its config file: point it at ours.
    let config = config.replace("targets/*.json", &format!("{}/*.json", targets.display()));
    let prometheus = Prometheus::start_with(&config.replace("  - loopwatch.rules.yml\n", ""), &[]);
    wait_until(Duration::from_secs(30), "both loops scraped", || {
        let up = prometheus.query("up{job=\"loopwatch-discovered\"} == 1");
        up.len() == 2
    });
    let instances: Vec<String> = prometheus
        .query("iteration_number{job=\"loopwatch-discovered\"}")
        .iter()
        .map(|r| r["metric"]["instance"].as_str().unwrap().to_string())
        .collect();
    for run in &runs {
        assert!(instances.contains(&run.addr.to_string()), "{instances:?}");
    }
    assert_eq!(std::fs::read_dir(&targets).unwrap().count(), 2);
    // Each removes its file when it ends.
    for mut run in runs {
        Command::new("kill")
            .args(["-TERM", &run.child.id().to_string()])
            .status()
            .unwrap();
        run.wait(Duration::from_secs(20));
    }
    assert_eq!(std::fs::read_dir(&targets).unwrap().count(), 0);
}

#[test]
fn containers_started_with_the_runs_labels_are_sampled_and_removed_at_exit() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let image = std::env::var("LOOPWATCH_SANDBOX_IMAGE")
        .expect("LOOPWATCH_SANDBOX_IMAGE names the sandbox image scripts/test builds");
    let loop_file = dir.path().join("containers.py");
    std::fs::write(
        &loop_file,
        r#"import os, subprocess, sys, time
import loopwatch

args = ["docker", "run", "-d"]
for key, value in loopwatch.labels().items():
    args += ["--label", "%s=%s" % (key, value)]
container = subprocess.check_output(args + [sys.argv[2], "sleep", "300"]).decode().strip()
with open(sys.argv[1] + "/container.id", "w") as f:
    f.write(container)
with loopwatch.iteration() as it:
    it.success(1.0)
deadline = time.time() + 60
while not os.path.exists(sys.argv[1] + "/seen") and time.time() < deadline:
    time.sleep(0.05)  # until the test has seen it sampled
loopwatch.done()  # and exits without removing it
"#,
    )
    .unwrap();
    let mut run = Supervised::start(
        dir.path(),
        &[],
        &[
            loop_file.to_str().unwrap(),
            dir.path().to_str().unwrap(),
            &image,
        ],
    );
    run.wait_serving();
    wait_until(
        Duration::from_secs(30),
        "the container to be sampled",
        || run.metric("active_containers") == Some(1.0),
    );
    std::fs::write(dir.path().join("seen"), "").unwrap();
    assert_eq!(
        run.wait(Duration::from_secs(60)).code(),
        Some(0),
        "{}",
        run.log()
    );
    let id = std::fs::read_to_string(dir.path().join("container.id")).unwrap();
    let inspect = Command::new("docker")
        .args(["inspect", id.trim()])
        .output()
        .unwrap();
    if inspect.status.success() {
        let _ = Command::new("docker")
            .args(["rm", "-f", id.trim()])
            .status();
        panic!("the run's container outlived it; log:\n{}", run.log());
    }
}

/// A loop far faster than the socket (no work at all) loses nothing: the client merges
/// the complete iterations it cannot send in time, so the final counts are exact.
#[test]
fn a_loop_with_no_work_loses_no_iteration_and_no_outcome() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fast.py");
    std::fs::write(
        &path,
        "import loopwatch\n\
         for i in range(20000):\n\
         \x20   with loopwatch.iteration() as it:\n\
         \x20       for _ in range(4):\n\
         \x20           it.success(sharpe=1.0, drawdown=0.1)\n\
         \x20       it.failure('too few trades')\n\
         \x20       it.population(8, 4, 0.5, champion='c%d' % (i // 1000))\n\
         loopwatch.done()\n",
    )
    .unwrap();
    let mut run = Supervised::start(dir.path(), &[], &[path.to_str().unwrap()]);
    let status = run.wait(Duration::from_secs(120));
    assert!(status.success(), "{status:?}\n{}", run.log());
    let summary = &run.final_json()["summary"];
    assert_eq!(summary["iterations"], 20_000, "{}", run.log());
    assert_eq!(summary["strategy_successes"], 80_000);
    assert_eq!(summary["strategy_failures"], 20_000);
    assert_eq!(summary["failure_reasons"]["too few trades"], 20_000);
    assert_eq!(summary["champion_changes"], 20, "{summary}");
    assert_eq!(summary["champion"], "c19");
    assert_eq!(summary["champion_staleness_iterations"], 999);
    let text = std::fs::read_to_string(dir.path().join("prometheus_metrics_final.txt")).unwrap();
    assert!(
        text.lines()
            .any(|l| l == "loopwatch_client_dropped_events_total 0"),
        "nothing dropped"
    );
}

/// Writes `dir/name`: a loop that appends `<restarts> <start time>` to `dir/starts`,
/// runs iterations of 0.1 s for `seconds`, appends its end time to `dir/ends`, and
/// then runs the Python statements of `then`.
fn logged_loop(dir: &Path, name: &str, seconds: f64, then: &str) -> PathBuf {
    let path = dir.join(name);
    let dir = dir.display();
    std::fs::write(
        &path,
        format!(
            "import loopwatch, os, sys, time\n\
             with open('{dir}/starts', 'a') as f:\n\
             \x20   f.write(os.environ['LOOPWATCH_RESTARTS'] + ' ' + repr(time.time()) + '\\n')\n\
             end = time.time() + {seconds}\n\
             while time.time() < end:\n\
             \x20   with loopwatch.iteration() as it:\n\
             \x20       it.success(sharpe=1.0, drawdown=0.1)\n\
             \x20       time.sleep(0.1)\n\
             with open('{dir}/ends', 'a') as f:\n\
             \x20   f.write(repr(time.time()) + '\\n')\n\
             {then}\n"
        ),
    )
    .unwrap();
    path
}

/// The lines of `dir/name` as numbers: (restarts, time) for `starts`, time for `ends`.
fn times(dir: &Path, name: &str) -> Vec<Vec<f64>> {
    std::fs::read_to_string(dir.join(name))
        .unwrap_or_default()
        .lines()
        .map(|line| {
            line.split_whitespace()
                .map(|v| v.parse().unwrap())
                .collect()
        })
        .collect()
}

/// A counter's value with one label in the final JSON.
fn final_counter(json: &serde_json::Value, name: &str, label: (&str, &str)) -> f64 {
    json["metrics"][name]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["labels"][label.0] == label.1)
        .and_then(|s| s["value"].as_f64())
        .unwrap_or_else(|| panic!("no {name}{{{}={}}}", label.0, label.1))
}

#[test]
fn a_crashing_loop_is_restarted_with_doubling_backoff_until_the_limit() {
    let _serial = serial();
    let alertmanager = Alertmanager::start();
    let dir = tempfile::tempdir().unwrap();
    // The last start waits, once it has logged its end, until the test has seen the
    // restarts in the snapshot and on the page: the run cannot end before.
    let loop_file = logged_loop(
        dir.path(),
        "crash.py",
        2.0,
        &format!(
            "while os.environ['LOOPWATCH_RESTARTS'] == '3' and not os.path.exists('{}/seen'):\n\
             \x20   time.sleep(0.05)\n\
             sys.exit(3)",
            dir.path().display()
        ),
    );
    let mut run = Supervised::start(
        dir.path(),
        &[
            &format!("--alertmanager={}", alertmanager.url()),
            "--restart=on-failure",
            "--max-restarts=3",
        ],
        &[loop_file.to_str().unwrap()],
    );
    // While it runs, the snapshot lists the exits so far and the page marks the
    // restarts on its alert timeline.
    run.wait_serving();
    wait_until(Duration::from_secs(30), "a restart in the snapshot", || {
        let Ok(response) = http_raw(
            run.addr,
            format!(
                "GET /api/v1/snapshot HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                run.addr
            )
            .as_bytes(),
        ) else {
            return false;
        };
        let snapshot: serde_json::Value = serde_json::from_str(&response.body).unwrap_or_default();
        snapshot["summary"]["exits"][0]["restarted"] == true
            && snapshot["summary"]["exits"][0]["status"] == 3
    });
    wait_until(Duration::from_secs(10), "the restart on the page", || {
        let page = http_get(run.addr, "/").body;
        page.contains("data-lane=\"Restarts\" data-restarts=\"")
            && !page.contains("data-restarts=\"0\"")
    });
    std::fs::write(dir.path().join("seen"), "").unwrap();
    let status = run.wait(Duration::from_secs(90));
    let log = run.log();
    // Started four times (the first start and three restarts), then given up with the
    // loop's own status.
    assert_eq!(status.code(), Some(3), "{log}");
    assert!(log.contains("giving up"), "{log}");
    let starts = times(dir.path(), "starts");
    let ends = times(dir.path(), "ends");
    let restarts: Vec<f64> = starts.iter().map(|s| s[0]).collect();
    assert_eq!(restarts, [0.0, 1.0, 2.0, 3.0], "LOOPWATCH_RESTARTS; {log}");
    // The backoff doubles from the default 1 s: each wait at least its delay, and
    // not much more (a Python start-up, on a loaded machine).
    for (i, delay) in [1.0, 2.0, 4.0].into_iter().enumerate() {
        let waited = starts[i + 1][1] - ends[i][0];
        assert!(
            waited >= delay && waited < delay + 2.5,
            "wait {i}: {waited:.2} s for a delay of {delay} s; {log}"
        );
    }
    let json = run.final_json();
    assert_eq!(
        final_counter(&json, "loopwatch_loop_restarts_total", ("reason", "exit")),
        3.0
    );
    assert_eq!(
        final_counter(&json, "loopwatch_loop_restarts_total", ("reason", "stall")),
        0.0
    );
    // Every exit is listed, the last one final; the run's iteration numbers keep
    // rising across the restarts.
    let exits = json["summary"]["exits"].as_array().unwrap();
    assert_eq!(exits.len(), 4, "{exits:?}");
    for (i, exit) in exits.iter().enumerate() {
        assert_eq!(exit["status"], 3);
        assert_eq!(exit["reason"], "exited");
        assert_eq!(exit["restarted"], i < 3);
    }
    let restarted_at: Vec<u64> = json["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "restarted")
        .map(|e| e["iteration"].as_u64().unwrap())
        .collect();
    assert_eq!(restarted_at.len(), 3, "{restarted_at:?}");
    assert!(
        restarted_at.windows(2).all(|w| w[0] < w[1]) && restarted_at[0] > 0,
        "{restarted_at:?}"
    );
    let iterations = json["summary"]["iterations"].as_u64().unwrap();
    assert!(
        iterations > restarted_at[2],
        "{iterations} {restarted_at:?}"
    );
    // LoopCrashLooping fired at the second restart (max − 1) and reached
    // Alertmanager before loopwatch gave up; the final exit raised LoopExited.
    assert_eq!(json["evaluation"]["alerts"]["LoopCrashLooping"], "firing");
    assert_eq!(json["evaluation"]["alerts"]["LoopExited"], "firing");
    let run_id = run.run_id();
    let alert = alertmanager.alerts().into_iter().find(|a| {
        a["labels"]["alertname"] == "LoopCrashLooping" && a["labels"]["run_id"] == run_id.as_str()
    });
    let alert = alert.unwrap_or_else(|| panic!("no LoopCrashLooping at Alertmanager; {log}"));
    assert_eq!(
        alert["annotations"]["summary"],
        "Loop restarting repeatedly"
    );
}

#[test]
fn a_stalled_loop_is_killed_with_its_workers_and_restarted() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("loopwatch.toml");
    std::fs::write(&config, "stall_floor = \"2s\"\nstall_factor = 1.0\n").unwrap();
    let loop_file = dir.path().join("hang.py");
    let out = dir.path().display();
    std::fs::write(
        &loop_file,
        format!(
            r#"import multiprocessing, os, time
import loopwatch

def work(_):
    time.sleep(600)

if __name__ == "__main__":
    with open("{out}/starts", "a") as f:
        f.write(os.environ["LOOPWATCH_RESTARTS"] + " " + repr(time.time()) + "\n")
    if os.environ["LOOPWATCH_RESTARTS"] != "0":
        with loopwatch.iteration() as it:
            it.success(1.0)
        loopwatch.done()
        raise SystemExit(0)
    multiprocessing.set_start_method("fork")
    pool = multiprocessing.Pool(2)
    pool.map_async(work, range(2))
    for _ in range(3):
        with loopwatch.iteration() as it:
            it.success(1.0)
            time.sleep(0.05)
    with open("{out}/pool.pids.tmp", "w") as f:
        f.write(" ".join(str(p.pid) for p in pool._pool))
    os.rename("{out}/pool.pids.tmp", "{out}/pool.pids")
    with open("{out}/hang", "w") as f:
        f.write(repr(time.time()))
    with loopwatch.iteration() as it:
        time.sleep(3600)  # the evaluation that never returns
"#
        ),
    )
    .unwrap();
    let mut run = Supervised::start(
        dir.path(),
        &[
            &format!("--config={}", config.display()),
            "--on-stall=restart",
            "--grace=2s",
            // The restart itself waits as little as possible: what is measured is
            // the stall's detection and the tree's termination.
            "--restart-delay=100ms",
        ],
        &[loop_file.to_str().unwrap()],
    );
    let status = run.wait(Duration::from_secs(60));
    let log = run.log();
    assert_eq!(status.code(), Some(0), "{log}");
    let starts = times(dir.path(), "starts");
    assert_eq!(starts.len(), 2, "{log}");
    let hung_at: f64 = std::fs::read_to_string(dir.path().join("hang"))
        .unwrap()
        .parse()
        .unwrap();
    // Killed and started again within the floor (2 s), the grace (2 s) and 2 s.
    let restarted_after = starts[1][1] - hung_at;
    assert!(
        restarted_after < 2.0 + 2.0 + 2.0,
        "restarted {restarted_after:.2} s after the hang; {log}"
    );
    for pid in pool_pids(dir.path()) {
        assert!(
            !alive(pid),
            "pool worker {pid} outlived the stalled loop; {log}"
        );
    }
    let json = run.final_json();
    assert_eq!(
        final_counter(&json, "loopwatch_loop_restarts_total", ("reason", "stall")),
        1.0
    );
    let exits = json["summary"]["exits"].as_array().unwrap();
    assert_eq!(exits[0]["reason"], "stalled", "{exits:?}");
    assert_eq!(exits[0]["signal"], 15, "{exits:?}");
    assert_eq!(exits[1]["reason"], "exited", "{exits:?}");
    assert_eq!(json["evaluation"]["alerts"]["LoopStalled"], "inactive");
    assert_eq!(json["evaluation"]["alerts"]["LoopExited"], "inactive");
}

#[test]
fn a_loop_that_hangs_after_done_is_terminated_after_the_exit_timeout() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let loop_file = logged_loop(
        dir.path(),
        "linger.py",
        0.5,
        "loopwatch.done()\ntime.sleep(3600)  # a pool that never shuts down",
    );
    let mut run = Supervised::start(
        dir.path(),
        &["--exit-timeout=2s", "--grace=2s"],
        &[loop_file.to_str().unwrap()],
    );
    let status = run.wait(Duration::from_secs(30));
    let ended = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let log = run.log();
    // Terminated, and still a completed run.
    assert_eq!(status.code(), Some(0), "{log}");
    let done_at = times(dir.path(), "ends")[0][0];
    assert!(
        ended - done_at >= 2.0,
        "terminated {:.2} s after done",
        ended - done_at
    );
    assert!(log.contains("still running; terminating"), "{log}");
    let json = run.final_json();
    let exit = &json["summary"]["loop_exit"];
    assert_eq!(exit["reason"], "exit_timeout", "{exit}");
    assert_eq!(exit["said_done"], true, "{exit}");
    assert_eq!(exit["signal"], 15, "{exit}");
    assert_eq!(json["evaluation"]["alerts"]["LoopExited"], "inactive");
}

#[test]
fn a_signal_during_the_wait_before_a_restart_ends_the_run_without_it() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let loop_file = logged_loop(dir.path(), "crash.py", 0.3, "sys.exit(5)");
    let mut run = Supervised::start(
        dir.path(),
        &["--restart=always", "--restart-delay=60s"],
        &[loop_file.to_str().unwrap()],
    );
    wait_until(Duration::from_secs(30), "the wait before a restart", || {
        run.log().contains("restarting the loop")
    });
    Command::new("kill")
        .args(["-TERM", &run.child.id().to_string()])
        .status()
        .unwrap();
    let status = run.wait(Duration::from_secs(20));
    let log = run.log();
    assert_eq!(status.code(), Some(5), "{log}");
    assert!(log.contains("not restarting"), "{log}");
    assert_eq!(times(dir.path(), "starts").len(), 1, "{log}");
    let json = run.final_json();
    assert_eq!(
        final_counter(&json, "loopwatch_loop_restarts_total", ("reason", "exit")),
        0.0
    );
    let exits = json["summary"]["exits"].as_array().unwrap();
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert_eq!(exits[0]["restarted"], false);
    assert_eq!(json["summary"]["loop_exit"]["code"], 5);
}

#[test]
fn a_loop_that_exits_0_under_on_failure_is_not_restarted() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let loop_file = logged_loop(dir.path(), "ok.py", 0.3, "sys.exit(0)");
    let mut run = Supervised::start(
        dir.path(),
        &["--restart=on-failure", "--restart-delay=100ms"],
        &[loop_file.to_str().unwrap()],
    );
    let status = run.wait(Duration::from_secs(30));
    let log = run.log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert_eq!(times(dir.path(), "starts").len(), 1, "{log}");
    assert!(!log.contains("restarting the loop"), "{log}");
    let json = run.final_json();
    assert_eq!(json["summary"]["exits"].as_array().unwrap().len(), 1);
    assert_eq!(json["evaluation"]["alerts"]["LoopCrashLooping"], "inactive");
}

// The supervisor holds the loop's whole process tree: its own process group, loopwatch
// its subreaper, every descendant signalled and reaped.

/// Waits for `path` to be written (atomically, by a rename) and reads it.
fn read_when_written(path: &Path) -> String {
    wait_until(
        Duration::from_secs(30),
        &format!("{} to be written", path.display()),
        || path.exists(),
    );
    std::fs::read_to_string(path).unwrap()
}

/// The parent of a process, from `/proc/<pid>/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Python that writes its pid to `argv[1]` (atomically), records a SIGTERM in
/// `argv[1].term` and exits on it, and otherwise sleeps.
const SLEEPER: &str = "import os, signal, sys, time\n\
def term(*_):\n\
\x20   open(sys.argv[1] + '.term', 'w').close()\n\
\x20   os._exit(0)\n\
signal.signal(signal.SIGTERM, term)\n\
with open(sys.argv[1] + '.tmp', 'w') as f:\n\
\x20   f.write(str(os.getpid()))\n\
os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n\
time.sleep(600)\n";

/// A loop that stops cleanly on SIGTERM or SIGINT: it reports an iteration failed
/// "stopped by SIG…", writes the signal's name to `<dir>/stopped`, says it is done and
/// exits 0. `<dir>/ready` appears after three iterations.
const STOPPABLE_LOOP: &str = r#"import os, signal, sys, time
import loopwatch

out = sys.argv[1]
received = []
signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
i = 0
while not received:
    with loopwatch.iteration() as it:
        it.success(sharpe=1.0, drawdown=0.1)
    i += 1
    if i == 3:
        open(out + "/ready", "w").close()
    time.sleep(0.05)
name = signal.Signals(received[0]).name
with loopwatch.iteration() as it:
    it.failure("stopped by " + name)
with open(out + "/stopped.tmp", "w") as f:
    f.write(name)
os.rename(out + "/stopped.tmp", out + "/stopped")
loopwatch.done()
"#;

/// Before: the operator's signal went to the wrapper only. SIGTERM killed bash and the
/// loop ran on, holding its socket, until the exit sweep found it 5 s later; SIGINT
/// left bash waiting for a loop that never got it, until SIGKILL after the grace.
#[test]
fn the_operators_sigterm_and_sigint_reach_a_loop_behind_a_bash_wrapper_at_once() {
    let _serial = serial();
    for (signal, status) in [("TERM", 143), ("INT", 0)] {
        let dir = tempfile::tempdir().unwrap();
        let loop_file = dir.path().join("loop.py");
        std::fs::write(&loop_file, STOPPABLE_LOOP).unwrap();
        let wrapped = format!(
            "{} {} {}; true",
            python().display(),
            loop_file.display(),
            dir.path().display()
        );
        let mut run = Supervised::launch(
            dir.path(),
            &Launch::default(),
            // A grace long enough that only the signal itself can end the loop in time.
            &["--grace=60s", "--restart=always"],
            &["bash".into(), "-c".into(), wrapped.into()],
        );
        read_when_written(&dir.path().join("ready"));
        Command::new("kill")
            .args([&format!("-{signal}"), &run.child.id().to_string()])
            .status()
            .unwrap();
        let exit = run.wait(Duration::from_secs(30));
        let log = run.log();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("stopped")).ok(),
            Some(format!("SIG{signal}")),
            "the loop behind bash got the signal; {log}"
        );
        // bash dies of SIGTERM; after an interrupt its child handled, it goes on.
        assert_eq!(exit.code(), Some(status), "SIG{signal}: {log}");
        assert!(!log.contains("still hold its socket open"), "{log}");
        assert!(
            !log.contains("restarting the loop"),
            "an operator's stop; {log}"
        );
        let summary = &run.final_json()["summary"];
        assert_eq!(summary["loop_exit"]["reason"], "stopped", "{summary}");
        assert_eq!(
            summary["failure_reasons"][format!("stopped by SIG{signal}")],
            1,
            "the loop's last report was read before its exit was judged: {summary}"
        );
    }
}

/// Before: the operator's SIGTERM reached the direct child only, the exit sweep knew
/// processes by their environment only, and the daemon was re-parented to init: both
/// escapees ran on.
#[test]
fn a_scrubbed_grandchild_and_a_reparented_daemon_are_signalled_and_reaped() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let sleeper = dir.path().join("sleeper.py");
    std::fs::write(&sleeper, SLEEPER).unwrap();
    let loop_file = dir.path().join("escapees.py");
    std::fs::write(
        &loop_file,
        r#"import os, subprocess, sys, time
import loopwatch

out, sleeper = sys.argv[1], sys.argv[2]
# A grandchild started with a scrubbed environment: nothing in it says whose it is.
subprocess.Popen(["env", "-i", sys.executable, sleeper, out + "/scrubbed"])
# A daemon: double fork, its own session, a scrubbed environment; its parent exits.
middle = os.fork()
if middle == 0:
    os.setsid()
    if os.fork() == 0:
        os.execve(sys.executable, [sys.executable, sleeper, out + "/daemon"], {})
    os._exit(0)
os.waitpid(middle, 0)
while not (os.path.exists(out + "/scrubbed") and os.path.exists(out + "/daemon")):
    time.sleep(0.01)
with loopwatch.iteration() as it:
    it.success(1.0)
open(out + "/ready", "w").close()
time.sleep(600)
"#,
    )
    .unwrap();
    let mut run = Supervised::start(
        dir.path(),
        &["--grace=10s", "--linger=60s"],
        &[
            loop_file.to_str().unwrap(),
            dir.path().to_str().unwrap(),
            sleeper.to_str().unwrap(),
        ],
    );
    read_when_written(&dir.path().join("ready"));
    let pid = |name: &str| -> u32 {
        read_when_written(&dir.path().join(name))
            .trim()
            .parse()
            .unwrap()
    };
    let (scrubbed, daemon) = (pid("scrubbed"), pid("daemon"));
    assert!(alive(scrubbed) && alive(daemon));
    // The daemon's parent exited: it is loopwatch's now, not init's.
    assert_eq!(
        parent_of(daemon),
        Some(run.child.id()),
        "re-parented to loopwatch; {}",
        run.log()
    );
    Command::new("kill")
        .args(["-TERM", &run.child.id().to_string()])
        .status()
        .unwrap();
    // Lingering: the loop has ended and its processes have been cleaned up.
    wait_until(Duration::from_secs(30), "the linger", || {
        run.log()
            .contains("serving its final metrics a little longer")
    });
    let log = run.log();
    for (name, pid) in [("scrubbed", scrubbed), ("daemon", daemon)] {
        assert!(
            dir.path().join(format!("{name}.term")).exists(),
            "the {name} process got the operator's SIGTERM; {log}"
        );
        assert!(!alive(pid), "{name} {pid} outlived the loop; {log}");
    }
    // loopwatch, still running, reaped the daemon's zombie: the pid is gone.
    assert!(
        !Path::new(&format!("/proc/{daemon}")).exists(),
        "the daemon's zombie was not reaped: parent {:?}; {log}",
        parent_of(daemon)
    );
    Command::new("kill")
        .args(["-TERM", &run.child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(run.wait(Duration::from_secs(30)).code(), Some(143), "{log}");
}

/// Before: the grace ran for the direct child only; a grandchild with a scrubbed
/// environment that ignores SIGTERM was never killed.
#[test]
fn sigkill_after_the_grace_covers_a_grandchild_that_ignores_sigterm() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let loop_file = dir.path().join("stubborn.py");
    std::fs::write(
        &loop_file,
        r#"import os, subprocess, sys, time
import loopwatch

out = sys.argv[1]
STUBBORN = (
    "import os, signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid()))\n"
    "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
    "time.sleep(600)\n"
)
subprocess.Popen(["env", "-i", sys.executable, "-c", STUBBORN, out + "/stubborn"])
while not os.path.exists(out + "/stubborn"):
    time.sleep(0.01)
with loopwatch.iteration() as it:
    it.success(1.0)
open(out + "/ready", "w").close()
time.sleep(600)  # SIGTERM ends it
"#,
    )
    .unwrap();
    let grace = Duration::from_secs(3);
    let mut run = Supervised::start(
        dir.path(),
        &["--grace=3s"],
        &[loop_file.to_str().unwrap(), dir.path().to_str().unwrap()],
    );
    read_when_written(&dir.path().join("ready"));
    let stubborn: u32 = read_when_written(&dir.path().join("stubborn"))
        .trim()
        .parse()
        .unwrap();
    let signalled = Instant::now();
    Command::new("kill")
        .args(["-TERM", &run.child.id().to_string()])
        .status()
        .unwrap();
    let status = run.wait(Duration::from_secs(30));
    let log = run.log();
    assert!(!alive(stubborn), "the grandchild survived; {log}");
    assert!(
        signalled.elapsed() >= grace,
        "killed before its grace was over; {log}"
    );
    assert!(
        log.contains("still running at the end of the grace period; killing them"),
        "{log}"
    );
    // The loop itself died of the operator's SIGTERM.
    assert_eq!(status.code(), Some(143), "{log}");
    assert_eq!(run.final_json()["summary"]["loop_exit"]["signal"], 15);
}

/// Now on the system's monotonic clock (`CLOCK_MONOTONIC`, Python's `time.monotonic()`),
/// in seconds: times a Python process records and times the test reads on one scale.
fn monotonic_now() -> f64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    now.tv_sec() as f64 + now.tv_nsec() as f64 * 1e-9
}

/// Guards the exit sweep's use of `--grace` for the processes it finds by the run's
/// environment marker only (`LOOPWATCH_RUN_ID`): the net for escapees that are not below
/// loopwatch, which the tree walk never sees. Before: that sweep gave them a fixed 3 s
/// between SIGTERM and SIGKILL whatever `--grace` said.
///
/// The escapee is the test's own child, started with the marker the loop reads from its
/// environment; it records when its SIGTERM came and ignores it. With `--grace=6s` it
/// must die of SIGKILL, no earlier than 6 s after that SIGTERM.
#[test]
fn the_marker_sweep_gives_an_escapee_outside_the_tree_the_grace_before_sigkill() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let loop_file = dir.path().join("marked.py");
    std::fs::write(
        &loop_file,
        r#"import json, os, sys, time
import loopwatch

out = sys.argv[1]
# The marker every process of the run carries, for the test to give its escapee.
marker = {k: os.environ[k] for k in ("LOOPWATCH_RUN_ID", "LOOPWATCH_OWNER")}
with open(out + "/marker.tmp", "w") as f:
    json.dump(marker, f)
os.rename(out + "/marker.tmp", out + "/marker")
with loopwatch.iteration() as it:
    it.success(1.0)
supervisor = os.getppid()
# Gives up when loopwatch is gone (a failed test killed it): no loop left behind.
while not os.path.exists(out + "/escapee") and os.getppid() == supervisor:
    time.sleep(0.01)
loopwatch.done()
"#,
    )
    .unwrap();
    let grace = Duration::from_secs(6);
    let mut run = Supervised::start(
        dir.path(),
        &["--grace=6s"],
        &[loop_file.to_str().unwrap(), dir.path().to_str().unwrap()],
    );
    let marker: serde_json::Value =
        serde_json::from_str(&read_when_written(&dir.path().join("marker"))).unwrap();
    let escapee_file = dir.path().join("escapee");
    // Not below loopwatch: a child of the test, so only the marker can find it. Killed
    // and reaped when the guard drops, pass or fail.
    let mut escapee = Stopped(
        Command::new(python())
            .arg("-c")
            .arg(
                "import os, signal, sys, time\n\
                 def term(*_):\n\
                 \x20   t = time.monotonic()\n\
                 \x20   with open(sys.argv[1] + '.term.tmp', 'w') as f:\n\
                 \x20       f.write(repr(t))\n\
                 \x20   os.rename(sys.argv[1] + '.term.tmp', sys.argv[1] + '.term')\n\
                 signal.signal(signal.SIGTERM, term)\n\
                 with open(sys.argv[1] + '.tmp', 'w') as f:\n\
                 \x20   f.write(str(os.getpid()))\n\
                 os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n\
                 while True:\n\
                 \x20   time.sleep(600)\n",
            )
            .arg(&escapee_file)
            .env(
                "LOOPWATCH_RUN_ID",
                marker["LOOPWATCH_RUN_ID"].as_str().unwrap(),
            )
            .env(
                "LOOPWATCH_OWNER",
                marker["LOOPWATCH_OWNER"].as_str().unwrap(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let escapee_pid = escapee.id();
    assert_eq!(
        read_when_written(&escapee_file).trim(),
        escapee_pid.to_string()
    );
    // The loop ends (done) on the escapee's pid file; the exit sweep then finds it.
    let mut died: Option<(std::process::ExitStatus, f64)> = None;
    wait_until(Duration::from_secs(60), "the escapee to be killed", || {
        if let Some(status) = escapee.try_wait().unwrap() {
            died = Some((status, monotonic_now()));
        }
        died.is_some()
    });
    let (status, died_at) = died.unwrap();
    let log = run.log();
    let term = dir.path().join("escapee.term");
    assert!(term.exists(), "the escapee never got SIGTERM; {log}");
    let termed_at: f64 = std::fs::read_to_string(&term).unwrap().parse().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status:?}; {log}");
    // From the escapee's own record of its SIGTERM to its death as the test saw it; the
    // record is taken when its handler runs, a scheduling delay after the signal, and
    // that delay is all the tolerance is for (the old fixed grace was 3 s short of it).
    let waited = died_at - termed_at;
    assert!(
        waited >= grace.as_secs_f64() - 0.5,
        "SIGKILL {waited:.2} s after SIGTERM, under --grace=6s; {log}"
    );
    let exit = run.wait(Duration::from_secs(60));
    let log = run.log();
    assert_eq!(exit.code(), Some(0), "{log}");
    assert!(
        log.contains(&format!("Cleaned up orphaned process {escapee_pid}")),
        "{log}"
    );
    assert!(
        log.contains("processes of the loop were still running after it exited"),
        "{log}"
    );
    assert!(
        log.lines().any(|line| line
            .contains("processes still running a grace period after their SIGTERM; killing them")
            && line.contains(&format!("pids=[{escapee_pid}]"))
            && line.contains("grace=6s")),
        "{log}"
    );
    let cleaned = run.final_json()["metrics"]["loopwatch_processes_cleaned_total"]["samples"][0]
        ["value"]
        .as_f64()
        .unwrap();
    assert_eq!(cleaned, 1.0, "{log}");
}

/// Makes a directory whose path is longer than `length` bytes.
fn deep_directory(root: &Path, length: usize) -> PathBuf {
    let mut dir = root.to_path_buf();
    while dir.as_os_str().len() <= length {
        dir.push("a-directory-deep-down-where-no-unix-socket-fits");
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Before: no socket was made (its path was over 107 bytes), and the loop ran
/// unreported: 0 of 10 iterations.
#[test]
fn a_deep_runtime_and_temporary_directory_lose_no_report() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let runtime = deep_directory(&dir.path().join("runtime"), 130);
    let temporary = deep_directory(&dir.path().join("tmp"), 130);
    let loop_file = steady_loop(dir.path(), "loop.py", Some(10), 0.01, "loopwatch.done()");
    let mut run = Supervised::launch(
        dir.path(),
        &Launch {
            env: vec![
                ("XDG_RUNTIME_DIR".into(), runtime.clone().into()),
                ("TMPDIR".into(), temporary.clone().into()),
            ],
            ..Launch::default()
        },
        &[],
        &[python().into(), loop_file.into()],
    );
    let status = run.wait(Duration::from_secs(60));
    let log = run.log();
    assert_eq!(status.code(), Some(0), "{log}");
    let summary = &run.final_json()["summary"];
    assert_eq!(summary["iterations"], 10, "{log}");
    assert_eq!(summary["strategy_successes"], 10, "{log}");
    assert!(log.contains("fallback directory"), "{log}");
    assert!(log.contains(&runtime.display().to_string()), "{log}");
}

/// Before: a loop without a socket could not report, LoopStalled fired after the stall
/// floor, and `--on-stall restart` restarted the healthy loop again and again.
#[test]
fn a_loop_that_cannot_report_is_said_loudly_and_never_stall_killed() {
    let _serial = serial();
    // Every place a socket could go is made read-only in a mount namespace of its own,
    // in place (a checkout under /tmp stays visible); the test's own directory is then
    // bound writable again on top.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::write(
        dir.path().join("loopwatch.toml"),
        "stall_floor = \"1s\"\nstall_factor = 1.0\n",
    )
    .unwrap();
    let loop_file = logged_loop(dir.path(), "quiet.py", 4.0, "sys.exit(0)");
    let config = format!("--config={}", dir.path().join("loopwatch.toml").display());
    let read_only = "keep=$1; shift; \
                     for place in /tmp /dev/shm /var/tmp /run/user; do \
                     [ -d \"$place\" ] || continue; \
                     mount --bind \"$place\" \"$place\" && \
                     mount -o remount,bind,ro \"$place\" || exit 97; done; \
                     mount --bind \"$keep\" \"$keep\" && \
                     mount -o remount,bind,rw \"$keep\" || exit 98; \
                     exec \"$@\"";
    let mut run = Supervised::launch(
        dir.path(),
        &Launch {
            wrapper: [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                read_only,
                "sh",
            ]
            .map(OsString::from)
            .into_iter()
            .chain([dir.path().as_os_str().to_owned()])
            .collect(),
            env: vec![("XDG_RUNTIME_DIR".into(), "/run/user".into())],
            ..Launch::default()
        },
        &[&config, "--on-stall=restart", "--restart-delay=100ms"],
        &[python().into(), loop_file.into()],
    );
    let status = run.wait(Duration::from_secs(60));
    let log = run.log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("no socket could be made"), "{log}");
    assert!(
        log.contains("/tmp: cannot make a private directory there"),
        "{log}"
    );
    assert_eq!(
        times(dir.path(), "starts").len(),
        1,
        "never restarted; {log}"
    );
    assert!(!log.contains("the loop stalled"), "{log}");
    let json = run.final_json();
    assert_eq!(json["evaluation"]["alerts"]["LoopStalled"], "inactive");
    assert_eq!(json["summary"]["exits"].as_array().unwrap().len(), 1);
}

/// Before: `--restart always` restarted a finished search up to `max_restarts` and
/// then raised LoopCrashLooping.
#[test]
fn a_finished_search_is_not_restarted_under_restart_always() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let loop_file = logged_loop(dir.path(), "done.py", 0.3, "loopwatch.done()\nsys.exit(0)");
    let mut run = Supervised::start(
        dir.path(),
        &["--restart=always", "--restart-delay=100ms"],
        &[loop_file.to_str().unwrap()],
    );
    let status = run.wait(Duration::from_secs(30));
    let log = run.log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert_eq!(times(dir.path(), "starts").len(), 1, "{log}");
    assert!(
        log.contains("its search is finished; not restarting"),
        "{log}"
    );
    let json = run.final_json();
    assert_eq!(json["summary"]["exits"].as_array().unwrap().len(), 1);
    assert_eq!(json["summary"]["loop_exit"]["said_done"], true);
    assert_eq!(json["evaluation"]["alerts"]["LoopCrashLooping"], "inactive");
}

/// The ids of the running containers labelled with `run_id`.
fn run_containers(run_id: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=loopwatch.run_id={run_id}"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Before: the crashed start's three containers were still running during the second
/// start, beside its own three.
#[test]
fn a_crashed_loops_containers_are_removed_before_it_is_restarted() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let image = std::env::var("LOOPWATCH_SANDBOX_IMAGE")
        .expect("LOOPWATCH_SANDBOX_IMAGE names the sandbox image scripts/test builds");
    let loop_file = dir.path().join("sandboxes.py");
    std::fs::write(
        &loop_file,
        r#"import json, os, subprocess, sys
import loopwatch

out, image = sys.argv[1], sys.argv[2]
labels = loopwatch.labels()
args = ["docker", "run", "-d"]
for key, value in labels.items():
    args += ["--label", "%s=%s" % (key, value)]
for _ in range(3):
    subprocess.check_output(args + [image, "sleep", "300"])
running = subprocess.check_output(
    ["docker", "ps", "-q", "--filter", "label=loopwatch.run_id=" + labels["loopwatch.run_id"]]
).split()
start = os.environ["LOOPWATCH_RESTARTS"]
with open(out + "/running-" + start, "w") as f:
    f.write(str(len(running)))
with loopwatch.iteration() as it:
    it.success(1.0)
if start == "0":
    sys.exit(3)  # crashes, its containers left running
loopwatch.done()
"#,
    )
    .unwrap();
    let mut run = Supervised::start(
        dir.path(),
        &["--restart=on-failure", "--restart-delay=100ms"],
        &[
            loop_file.to_str().unwrap(),
            dir.path().to_str().unwrap(),
            &image,
        ],
    );
    let status = run.wait(Duration::from_secs(90));
    let log = run.log();
    let running = |start: u32| std::fs::read_to_string(dir.path().join(format!("running-{start}")));
    assert_eq!(status.code(), Some(0), "{log}");
    assert_eq!(running(0).unwrap(), "3", "{log}");
    assert_eq!(
        running(1).unwrap(),
        "3",
        "the second start saw the first one's containers too; {log}"
    );
    assert!(
        log.contains("removed the containers of the loop before restarting it"),
        "{log}"
    );
    assert!(run_containers(&run.run_id()).is_empty(), "{log}");
}

/// Before: loopwatch as PID 1 (a container's entrypoint) never reaped the zombies of
/// orphans re-parented to it.
#[test]
fn as_pid_1_loopwatch_reaps_orphans_zombies() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let loop_file = dir.path().join("orphans.py");
    std::fs::write(
        &loop_file,
        r#"import os, sys, time
import loopwatch

out = sys.argv[1]
assert os.getppid() == 1, "loopwatch is PID 1"
pids = []
for _ in range(5):
    read, write = os.pipe()
    middle = os.fork()
    if middle == 0:
        orphan = os.fork()
        if orphan == 0:
            # Exits once it is an orphan, re-parented to PID 1.
            while os.getppid() != 1:
                time.sleep(0.001)
            os._exit(0)
        os.write(write, str(orphan).encode())
        os._exit(0)
    os.waitpid(middle, 0)
    pids.append(int(os.read(read, 32)))
def state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        # Reading the stat of a process being reaped at that moment fails with ESRCH.
        return "reaped"
deadline = time.time() + 20
while any(state(p) != "reaped" for p in pids) and time.time() < deadline:
    time.sleep(0.01)
with open(out + "/orphans.tmp", "w") as f:
    f.write(" ".join(state(p) for p in pids))
os.rename(out + "/orphans.tmp", out + "/orphans")
with loopwatch.iteration() as it:
    it.success(1.0)
loopwatch.done()
"#,
    )
    .unwrap();
    let mut run = Supervised::launch(
        dir.path(),
        &Launch {
            wrapper: ["unshare", "--pid", "--fork", "--mount-proc"]
                .map(OsString::from)
                .to_vec(),
            ..Launch::default()
        },
        &[],
        &[python().into(), loop_file.into(), dir.path().into()],
    );
    let status = run.wait(Duration::from_secs(60));
    let log = run.log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert_eq!(
        read_when_written(&dir.path().join("orphans")),
        "reaped reaped reaped reaped reaped",
        "{log}"
    );
}

/// The state letter of a process (`S`, `R`, `T` for stopped …), from `/proc/<pid>/stat`.
fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// An interactive bash in a terminal of its own (util-linux `script` makes the pty),
/// typed at through a pipe; what the terminal shows is gathered as it comes.
struct Shell {
    child: Child,
    input: std::process::ChildStdin,
    shown: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Shell {
    /// The prompt.
    const PROMPT: &'static str = "%% ";

    fn start(dir: &Path) -> Self {
        let rc = dir.join("bashrc");
        std::fs::write(&rc, format!("PS1='{}'\n", Self::PROMPT)).unwrap();
        let mut child = Command::new("script")
            .arg("-qfec")
            .arg(format!("bash --noprofile --rcfile {} -i", rc.display()))
            .arg("/dev/null")
            .current_dir(dir)
            .env("TERM", "dumb")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let input = child.stdin.take().unwrap();
        let mut output = child.stdout.take().unwrap();
        let shown = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let gathered = std::sync::Arc::clone(&shown);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(read @ 1..) = std::io::Read::read(&mut output, &mut buffer) {
                gathered
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..read]));
            }
        });
        Shell {
            child,
            input,
            shown,
        }
    }

    fn type_in(&mut self, keys: &str) {
        std::io::Write::write_all(&mut self.input, keys.as_bytes()).unwrap();
        std::io::Write::flush(&mut self.input).unwrap();
    }

    fn shown(&self) -> String {
        self.shown.lock().unwrap().clone()
    }

    /// How much the terminal has shown so far, to look for what comes after it.
    fn mark(&self) -> usize {
        self.shown.lock().unwrap().len()
    }

    fn wait_for(&self, text: &str) {
        self.wait_for_after(0, text);
    }

    /// Waits for `text` to show after the `mark`.
    fn wait_for_after(&self, mark: usize, text: &str) {
        let mut seen = String::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !seen.get(mark..).is_some_and(|new| new.contains(text)) {
            assert!(
                Instant::now() < deadline,
                "the terminal never showed {text:?}; it showed:\n{seen}"
            );
            std::thread::sleep(Duration::from_millis(20));
            seen = self.shown();
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The terminal's foreground (docs/python.md, "The whole process tree"): a loop in a
/// process group of its own gets the terminal's foreground (it reads the terminal),
/// Ctrl-Z and `fg` stop and continue it with loopwatch as a shell's job, and the terminal's Ctrl-C, which reaches the loop's group only, is the
/// operator's stop: no restart, even under `--restart always`. Before, the loop ran in
/// loopwatch's own group.
#[test]
fn a_loop_in_its_own_group_holds_the_terminal_and_job_control_works() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let loop_file = dir.path().join("interactive.py");
    std::fs::write(
        &loop_file,
        r#"import os, sys, time
import loopwatch

out = sys.argv[1]
with open(out + "/starts", "a") as f:
    f.write("%d %d\n" % (os.getpid(), os.getppid()))
# Built here, so that the typed command line never shows the words looked for.
print("OWN" + "GROUP=%s FORE" % (os.getpgrp() == os.getpid()) + "GROUND=%s" % (os.tcgetpgrp(0) == os.getpgrp()), flush=True)
answer = sys.stdin.readline()  # only the terminal's foreground may read it
print("READ=" + answer.strip().upper(), flush=True)
ticks = 0
while True:
    with loopwatch.iteration() as it:
        it.success(1.0)
    ticks += 1
    with open(out + "/ticks.tmp", "w") as f:
        f.write(str(ticks))
    os.rename(out + "/ticks.tmp", out + "/ticks")
    time.sleep(0.05)
"#,
    )
    .unwrap();
    let ticks = || -> u64 {
        std::fs::read_to_string(dir.path().join("ticks"))
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0)
    };
    let mut shell = Shell::start(dir.path());
    shell.wait_for(Shell::PROMPT);
    shell.type_in(&format!(
        "{} run --listen=127.0.0.1:0 --output-dir={} --restart=always --restart-delay=100ms -- {} {} {} 2>loopwatch.log\n",
        env!("CARGO_BIN_EXE_loopwatch"),
        dir.path().display(),
        python().display(),
        loop_file.display(),
        dir.path().display(),
    ));
    shell.wait_for("OWNGROUP=True FOREGROUND=True");
    shell.type_in("hello\n");
    shell.wait_for("READ=HELLO");
    let starts = std::fs::read_to_string(dir.path().join("starts")).unwrap();
    let (loop_pid, loopwatch_pid): (u32, u32) = {
        let mut parts = starts.split_whitespace().map(|p| p.parse().unwrap());
        (parts.next().unwrap(), parts.next().unwrap())
    };
    wait_until(Duration::from_secs(30), "iterations", || ticks() >= 3);

    // Ctrl-Z: the loop stops, and so does loopwatch, which its shell sees.
    let stopped = shell.mark();
    shell.type_in("\x1a");
    shell.wait_for_after(stopped, "Stopped");
    wait_until(Duration::from_secs(10), "both stopped", || {
        state_of(loop_pid) == Some('T') && state_of(loopwatch_pid) == Some('T')
    });
    // fg: both go on, the loop in the foreground again.
    shell.type_in("fg\n");
    let before = ticks();
    wait_until(Duration::from_secs(30), "the loop to go on", || {
        ticks() > before + 2
    });
    assert_ne!(state_of(loopwatch_pid), Some('T'));

    // Ctrl-C: the operator's stop, not a crash to restart.
    let interrupted = shell.mark();
    shell.type_in("\x03");
    shell.wait_for_after(interrupted, Shell::PROMPT);
    shell.type_in("echo STATUS=$((1000 + $?))\n");
    shell.wait_for_after(interrupted, "STATUS=1130");
    let log = std::fs::read_to_string(dir.path().join("loopwatch.log")).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("starts"))
            .unwrap()
            .lines()
            .count(),
        1,
        "restarted after the terminal's Ctrl-C; {log}"
    );
    assert!(log.contains("interrupted from the terminal"), "{log}");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("metrics_final.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["summary"]["loop_exit"]["reason"], "stopped", "{log}");
    assert_eq!(json["summary"]["loop_exit"]["signal"], 2, "{log}");
    shell.type_in("exit\n");
}

/// A loop started in the background (`&`) cannot read the terminal and stops with its
/// job; `fg` gives loopwatch the terminal, and loopwatch passes it on to the loop.
#[test]
fn a_loop_started_in_the_background_gets_the_terminal_at_fg() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let loop_file = dir.path().join("later.py");
    std::fs::write(
        &loop_file,
        r#"import os, sys
import loopwatch

with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(os.getppid()))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
print("FORE" + "GROUND=%s" % (os.tcgetpgrp(0) == os.getpgrp()), flush=True)
answer = sys.stdin.readline()  # stops the job until it is in the foreground
print("READ=" + answer.strip().upper(), flush=True)
with loopwatch.iteration() as it:
    it.success(1.0)
loopwatch.done()
"#,
    )
    .unwrap();
    let mut shell = Shell::start(dir.path());
    shell.wait_for(Shell::PROMPT);
    let started = shell.mark();
    shell.type_in(&format!(
        "{} run --listen=127.0.0.1:0 --output-dir={} -- {} {} {} 2>loopwatch.log &\n",
        env!("CARGO_BIN_EXE_loopwatch"),
        dir.path().display(),
        python().display(),
        loop_file.display(),
        dir.path().join("supervisor").display(),
    ));
    shell.wait_for_after(started, "FOREGROUND=False");
    let loopwatch_pid: u32 = read_when_written(&dir.path().join("supervisor"))
        .parse()
        .unwrap();
    // Reading the terminal from the background stops the loop, and its job with it.
    wait_until(Duration::from_secs(30), "loopwatch to stop", || {
        state_of(loopwatch_pid) == Some('T')
    });
    let stopped = shell.mark();
    shell.type_in("jobs\n");
    shell.wait_for_after(stopped, "Stopped");
    shell.type_in("fg\n");
    shell.type_in("hello\n");
    shell.wait_for_after(stopped, "READ=HELLO");
    let finished = shell.mark();
    shell.type_in("echo STATUS=$((1000 + $?))\n");
    shell.wait_for_after(finished, "STATUS=1000");
    let log = std::fs::read_to_string(dir.path().join("loopwatch.log")).unwrap();
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("metrics_final.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["summary"]["iterations"], 1, "{log}");
    shell.type_in("exit\n");
}
