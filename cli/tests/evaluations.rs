//! Evaluations under `loopwatch run`: a real OpenEvolve 0.4.1 run whose decorated
//! evaluator hangs in its own process pool (OpenEvolve #409 in miniature) raising
//! EvaluationHung at a real Alertmanager and, under `--on-hung-evaluation kill`, its
//! hung evaluations interrupted in their workers while the loop goes on; a real DEAP
//! loop with a `multiprocessing` pool, whose worker occupancy loopwatch follows; and a
//! pid outside the loop's process tree, which is never signalled, beside a worker
//! that cannot be interrupted and is ended. The LLM provider is the one
//! stand-in (`llm_upstream`); everything else is real.

mod support;

#[allow(dead_code)]
mod llm_upstream;

use std::path::Path;
use std::time::{Duration, Instant};

use llm_upstream::Upstream;
use support::services::{free_port, Alertmanager};
use support::*;

/// One test at a time: every loopwatch sweeps the host for orphaned processes, and
/// these tests count the processes of their runs.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The value of a series of the live exposition, when it is there.
fn live(run: &Supervised, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let exposition = parse(&scrape(run.addr)).ok()?;
    exposition.get(name)?.value_with(labels)
}

/// The single value of a metric family in the final JSON whose labels include
/// `labels`.
fn final_value(json: &serde_json::Value, name: &str, labels: &[(&str, &str)]) -> f64 {
    json["metrics"][name]["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("no {name} in the final JSON"))
        .iter()
        .find(|s| labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .and_then(|s| s["value"].as_f64())
        .unwrap_or_else(|| panic!("no {name}{labels:?} in the final JSON"))
}

/// The processes on the host carrying `run_id` in their environment.
fn processes_of_run(run_id: &str) -> Vec<u32> {
    let needle = format!("LOOPWATCH_RUN_ID={run_id}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ
                    .split(|b| *b == 0)
                    .any(|var| var == needle.as_bytes())
            })
        })
        .collect()
}

// --- OpenEvolve #409 in miniature ---------------------------------------------------

/// How long an evaluation may run before EvaluationHung, in these runs.
const FLOOR: Duration = Duration::from_secs(3);

/// The evaluator: decorated, run by OpenEvolve in its pool's workers; one evaluation
/// in five in a worker hangs, the first, the sixth … (it says so in `hung-<n>`), until
/// `release` exists. The first is certain to come: OpenEvolve's first iterations all
/// rewrite the initial program (later ones may rewrite a program into itself, which
/// OpenEvolve turns away unevaluated). The evaluation of the initial program, in
/// OpenEvolve's own process, never hangs.
const EVALUATOR: &str = r#"import importlib.util, multiprocessing, os, time
import loopwatch

def _claim():
    n = 1
    while True:
        try:
            os.close(os.open("slots/%d" % n, os.O_CREAT | os.O_EXCL))
            return n
        except FileExistsError:
            n += 1

@loopwatch.evaluated
def evaluate(program_path):
    if multiprocessing.parent_process() is not None:
        n = _claim()
        if n % 5 == 1:
            with open("hung-%d" % n, "w") as f:
                f.write(str(os.getpid()))
            while not os.path.exists("release"):
                time.sleep(0.05)
    spec = importlib.util.spec_from_file_location("candidate", program_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {"combined_score": float(module.f())}
"#;

/// The evaluator of the recipe for candidates that may not be interruptible: each
/// candidate runs in a child process of the pool's worker, which reports the
/// evaluation itself (so its own pid); one in five hangs, as in [`EVALUATOR`]. A
/// child interrupted or ended is a failed evaluation to OpenEvolve, whose worker goes
/// on.
const EVALUATOR_IN_CHILD: &str = r#"import multiprocessing, os, subprocess, sys

CHILD = '''
import importlib.util, os, sys, time
import loopwatch
path, n = sys.argv[1], int(sys.argv[2])
with loopwatch.evaluation(path, worker=str(os.getppid())):
    if n % 5 == 1:
        with open("hung-%d" % n, "w") as f:
            f.write(str(os.getpid()))
        while not os.path.exists("release"):
            time.sleep(0.05)
    spec = importlib.util.spec_from_file_location("candidate", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    print(float(module.f()))
'''

def _claim():
    n = 1
    while True:
        try:
            os.close(os.open("slots/%d" % n, os.O_CREAT | os.O_EXCL))
            return n
        except FileExistsError:
            n += 1

def evaluate(program_path):
    n = _claim() if multiprocessing.parent_process() is not None else 0
    run = subprocess.run([sys.executable, "-c", CHILD, program_path, str(n)], capture_output=True, text=True)
    if run.returncode != 0:
        return {"combined_score": 0.0, "error": 1.0}
    return {"combined_score": float(run.stdout)}
"#;

/// An OpenEvolve run of `iterations` under `loopwatch run --llm-proxy`, alerting
/// `alertmanager`, with `evaluator` and `flags`.
fn openevolve(
    dir: &Path,
    upstream: &Upstream,
    alertmanager: &Alertmanager,
    (iterations, evaluator): (u32, &str),
    flags: &[&str],
) -> Supervised {
    let port = free_port();
    std::fs::create_dir(dir.join("slots")).unwrap();
    std::fs::write(
        dir.join("initial.py"),
        "# EVOLVE-BLOCK-START\ndef f():\n    return 0\n# EVOLVE-BLOCK-END\n",
    )
    .unwrap();
    std::fs::write(dir.join("evaluator.py"), evaluator).unwrap();
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            r#"max_iterations: {iterations}
checkpoint_interval: 100
diff_based_evolution: false
llm:
  api_base: "http://127.0.0.1:{port}/v1"
  api_key: "sk-openevolve"
  models:
    - name: "ok/openevolve"
      weight: 1.0
  timeout: 20
  retries: 0
database:
  population_size: 10
  num_islands: 1
evaluator:
  parallel_evaluations: 2
  cascade_evaluation: false
  timeout: 300
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("loopwatch.toml"),
        format!("evaluation_floor = \"{}s\"\n", FLOOR.as_secs()),
    )
    .unwrap();
    std::fs::write(
        dir.join("openevolve_run.py"),
        "import sys\nfrom openevolve.cli import main\nsys.exit(main())\n",
    )
    .unwrap();
    let mut all_flags = vec![
        format!("--llm-upstream={}", upstream.url()),
        format!("--llm-proxy-listen=127.0.0.1:{port}"),
        format!("--alertmanager={}", alertmanager.url()),
        "--config=loopwatch.toml".to_string(),
    ];
    all_flags.extend(flags.iter().map(|f| f.to_string()));
    let flags: Vec<&str> = all_flags.iter().map(String::as_str).collect();
    let iterations = iterations.to_string();
    Supervised::metered(
        dir,
        &flags,
        &[],
        Path::new("openevolve_run.py"),
        &[
            "initial.py",
            "evaluator.py",
            "--config",
            "config.yaml",
            "--iterations",
            &iterations,
            "--output",
            "out",
        ],
    )
}

/// OpenEvolve's own log of a run in `dir`.
fn openevolve_log(dir: &Path) -> String {
    std::fs::read_dir(dir.join("out/logs"))
        .map(|entries| {
            entries
                .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                .collect::<String>()
        })
        .unwrap_or_default()
}

/// The pids of every hung evaluation of a run in `dir` (its `hung-<n>` files), by `n`.
fn hung_pids(dir: &Path) -> Vec<u32> {
    let mut hung: Vec<(u32, u32)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let n = entry
                .file_name()
                .to_str()?
                .strip_prefix("hung-")?
                .parse()
                .ok()?;
            let pid = std::fs::read_to_string(entry.path()).ok()?.parse().ok()?;
            Some((n, pid))
        })
        .collect();
    hung.sort_unstable();
    hung.into_iter().map(|(_, pid)| pid).collect()
}

/// Asserts that OpenEvolve's log `said` it completed all its `iterations`, each
/// accounted for.
fn assert_completed(said: &str, iterations: u32, log: &str) {
    assert!(
        said.contains("Evolution completed - Maximum iterations reached")
            && !said.contains("Evolution stopped due to shutdown request"),
        "OpenEvolve's log:\n{said}\nloopwatch's:\n{log}"
    );
    for k in 1..=iterations {
        assert!(
            said.contains(&format!("Iteration {k}: Program"))
                || said.contains(&format!("Iteration {k} error")),
            "iteration {k} not accounted for; OpenEvolve's log:\n{said}"
        );
    }
}

/// The first hung evaluation of a run in `dir`: when the test saw it hang, and its
/// worker's pid.
fn first_hang(dir: &Path, run: &mut Supervised) -> (Instant, u32) {
    let hung = dir.join("hung-1");
    let mut exited = None;
    wait_until(
        Duration::from_secs(180),
        "OpenEvolve's first evaluation in a worker to hang",
        || {
            exited = run.child.try_wait().unwrap();
            exited.is_some() || std::fs::read_to_string(&hung).is_ok_and(|pid| !pid.is_empty())
        },
    );
    if let Some(status) = exited {
        panic!(
            "the run ended ({status}) before an evaluation hung; OpenEvolve's log:\n{}\nloopwatch's:\n{}",
            openevolve_log(dir),
            run.log()
        );
    }
    let pid = std::fs::read_to_string(&hung).unwrap().parse().unwrap();
    (Instant::now(), pid)
}

/// The EvaluationHung alert of `run_id` at Alertmanager, if it holds one.
fn evaluation_hung(alertmanager: &Alertmanager, run_id: &str) -> Option<serde_json::Value> {
    alertmanager
        .alerts()
        .into_iter()
        .find(|a| a["labels"]["alertname"] == "EvaluationHung" && a["labels"]["run_id"] == run_id)
}

/// The run id of a live `loopwatch run`, from its exposition.
fn live_run_id(run: &Supervised) -> String {
    let exposition = parse(&scrape(run.addr)).unwrap();
    let info = &exposition["loopwatch_run_info"];
    info.samples[0].0["run_id"].clone()
}

#[test]
fn a_hung_openevolve_evaluation_reaches_alertmanager_and_is_ended_under_kill() {
    let _serial = serial();
    let upstream = Upstream::start();
    let alertmanager = Alertmanager::start();

    // Without an action: EvaluationHung reaches Alertmanager within the floor and
    // 10 s of the hang, and stays while the evaluation hangs.
    let watched = tempfile::tempdir().unwrap();
    let mut run = openevolve(
        watched.path(),
        &upstream,
        &alertmanager,
        (6, EVALUATOR),
        &[],
    );
    let (hung_at, worker) = first_hang(watched.path(), &mut run);
    let run_id = live_run_id(&run);
    wait_until(
        FLOOR + Duration::from_secs(10),
        "EvaluationHung at Alertmanager",
        || evaluation_hung(&alertmanager, &run_id).is_some(),
    );
    let latency = hung_at.elapsed();
    let alert = evaluation_hung(&alertmanager, &run_id).unwrap();
    assert!(
        alert["annotations"]["description"]
            .as_str()
            .is_some_and(|s| s.contains(&format!("pid {worker}"))),
        "{alert}"
    );
    assert!(
        loopwatch::cleanup::ProcessId::running(worker).is_some(),
        "nothing ended it"
    );
    eprintln!("EvaluationHung at Alertmanager {latency:?} after the hang (floor {FLOOR:?})");
    // Released, the evaluations end and the run completes all its iterations.
    std::fs::write(watched.path().join("release"), "").unwrap();
    let status = run.wait(Duration::from_secs(180));
    assert_eq!(status.code(), Some(0), "{}", run.log());
    let json = run.final_json();
    assert_eq!(json["evaluations"]["killed_total"], 0);
    assert_eq!(json["evaluation"]["alerts"]["EvaluationHung"], "inactive");

    // With --on-hung-evaluation kill: each hung evaluation is interrupted in its
    // worker (SIGUSR2, on which the decorated evaluator raises EvaluationInterrupted, a
    // TimeoutError), which OpenEvolve takes as its own timeout; the worker and the
    // pool go on, and OpenEvolve completes all its iterations.
    let killing = tempfile::tempdir().unwrap();
    let mut run = openevolve(
        killing.path(),
        &upstream,
        &alertmanager,
        (6, EVALUATOR),
        &["--on-hung-evaluation=kill", "--grace=2s"],
    );
    first_hang(killing.path(), &mut run);
    let status = run.wait(Duration::from_secs(180));
    let log = run.log();
    assert_eq!(status.code(), Some(0), "{log}");
    let json = run.final_json();
    let run_id = run.run_id();
    let said = openevolve_log(killing.path());
    assert_completed(&said, 6, &log);
    // Every hung evaluation ended, interrupted: counted as killed, with its worker's
    // pid, and taken by OpenEvolve as timed out; no process was ended for it.
    let hung = hung_pids(killing.path());
    assert!(!hung.is_empty());
    let killed = json["evaluations"]["killed"].as_array().unwrap();
    let total = json["evaluations"]["killed_total"].as_u64().unwrap();
    assert_eq!(total as usize, hung.len(), "{}", json["evaluations"]);
    assert_eq!(killed.len(), hung.len(), "{}", json["evaluations"]);
    for (row, pid) in killed.iter().zip(&hung) {
        assert_eq!(row["pid"], *pid, "{}", json["evaluations"]);
        assert_eq!(row["outcome"], "killed", "{}", json["evaluations"]);
        assert!(row["seconds"].as_f64().unwrap() >= FLOOR.as_secs_f64());
    }
    assert_eq!(
        final_value(&json, "loopwatch_evaluations_killed_total", &[]),
        total as f64
    );
    assert_eq!(
        final_value(
            &json,
            "loopwatch_evaluations_total",
            &[("outcome", "killed")]
        ),
        total as f64
    );
    assert_eq!(
        said.matches("Evaluation timed out").count(),
        hung.len(),
        "OpenEvolve's log:\n{said}"
    );
    for pid in &hung {
        assert!(
            log.contains("interrupting a hung evaluation") && log.contains(&format!("pid={pid}")),
            "{log}"
        );
    }
    assert_eq!(
        log.matches("a hung evaluation ended after loopwatch interrupted it")
            .count(),
        hung.len(),
        "{log}"
    );
    assert!(!log.contains("ending a hung evaluation"), "{log}");
    // No worker survives the run.
    for pid in &hung {
        assert!(loopwatch::cleanup::ProcessId::running(*pid).is_none());
    }
    assert_eq!(
        json["processes"]["orphaned_now"], 0,
        "{}",
        json["processes"]
    );
    assert_eq!(processes_of_run(&run_id), Vec::<u32>::new());

    // The recipe for an evaluator whose candidate runs in a child process of the
    // worker, which reports its own evaluation: the child is interrupted (it exits,
    // raising), the evaluation fails in OpenEvolve's eyes, and the run completes all
    // its iterations.
    let recipe = tempfile::tempdir().unwrap();
    let mut run = openevolve(
        recipe.path(),
        &upstream,
        &alertmanager,
        (6, EVALUATOR_IN_CHILD),
        &["--on-hung-evaluation=kill", "--grace=2s"],
    );
    let (_, child) = first_hang(recipe.path(), &mut run);
    let status = run.wait(Duration::from_secs(180));
    let log = run.log();
    assert_eq!(status.code(), Some(0), "{log}");
    let json = run.final_json();
    assert_eq!(
        json["evaluations"]["killed"][0]["pid"], child,
        "{}",
        json["evaluations"]
    );
    let said = self::openevolve_log(recipe.path());
    assert_completed(&said, 6, &log);
    assert_eq!(processes_of_run(&run.run_id()), Vec::<u32>::new());
}

// --- A DEAP loop with a multiprocessing pool ----------------------------------------

/// A DEAP loop with a pool of three workers, its evaluations reported through the
/// adapter. Generation `g` evaluates individuals that each wait for `release-<g>`:
/// generation 1 has six (all three workers busy), generation 2 one (the pool
/// starved).
const DEAP_LOOP: &str = r#"import multiprocessing, os, time
from deap import base, creator
import loopwatch, loopwatch.deap

creator.create("FitnessMax", base.Fitness, weights=(1.0,))
creator.create("Individual", list, fitness=creator.FitnessMax)

def evaluate(individual):
    while not os.path.exists("release-%d" % individual[0]):
        time.sleep(0.02)
    return (float(sum(individual)),)

if __name__ == "__main__":
    toolbox = base.Toolbox()
    toolbox.register("evaluate", evaluate)
    loopwatch.deap.evaluations(toolbox)
    with multiprocessing.get_context("fork").Pool(3) as pool:
        toolbox.register("map", pool.map)
        for generation, size in ((1, 6), (2, 1)):
            with loopwatch.iteration() as it:
                population = [creator.Individual([generation, i]) for i in range(size)]
                for individual, fitness in zip(population, toolbox.map(toolbox.evaluate, population, 1)):
                    individual.fitness.values = fitness
                it.success(sharpe=max(i.fitness.values[0] for i in population))
                it.population(size=size, unique=size, diversity=1.0, champion="g%d" % generation)
    loopwatch.done()
"#;

#[test]
fn a_deap_pools_occupancy_is_full_while_every_worker_is_busy_and_falls_when_starved() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("deap_pool.py"), DEAP_LOOP).unwrap();
    let launch = Launch {
        current_dir: Some(dir.path().to_path_buf()),
        ..Launch::default()
    };
    let command = [python().into_os_string(), "deap_pool.py".into()];
    let mut run = Supervised::launch(dir.path(), &launch, &[], &command);
    run.wait_serving();
    let in_flight = |n: f64| live(&run, "loopwatch_evaluations_in_flight", &[]) == Some(n);
    // Generation 1: six evaluations for three workers, none of which can end.
    wait_until(
        Duration::from_secs(60),
        "three evaluations in flight",
        || in_flight(3.0),
    );
    assert_eq!(live(&run, "loopwatch_evaluation_workers", &[]), Some(3.0));
    assert_eq!(
        live(&run, "loopwatch_evaluation_worker_occupancy", &[]),
        Some(1.0)
    );
    std::fs::write(dir.path().join("release-1"), "").unwrap();
    // Generation 2: one evaluation; the three workers were all seen within the minute.
    wait_until(
        Duration::from_secs(60),
        "generation 2's evaluation alone",
        || {
            live(&run, "loopwatch_evaluations_total", &[("outcome", "ok")]) == Some(6.0)
                && in_flight(1.0)
        },
    );
    assert_eq!(live(&run, "loopwatch_evaluation_workers", &[]), Some(3.0));
    let occupancy = live(&run, "loopwatch_evaluation_worker_occupancy", &[]).unwrap();
    assert!((occupancy - 1.0 / 3.0).abs() < 1e-9, "{occupancy}");
    // The page's line: generation 1 had every worker busy at once.
    let snapshot: serde_json::Value =
        serde_json::from_str(&http_get(run.addr, "/api/v1/snapshot").body).unwrap();
    assert_eq!(
        snapshot["history"][0]["evaluation_occupancy"], 1.0,
        "{}",
        snapshot["history"]
    );
    assert_eq!(
        snapshot["evaluations"]["oldest"].as_array().unwrap().len(),
        1
    );
    std::fs::write(dir.path().join("release-2"), "").unwrap();
    assert_eq!(
        run.wait(Duration::from_secs(60)).code(),
        Some(0),
        "{}",
        run.log()
    );
    let json = run.final_json();
    assert_eq!(
        final_value(&json, "loopwatch_evaluations_total", &[("outcome", "ok")]),
        7.0
    );
    let buckets = json["evaluations"]["durations"].as_array().unwrap();
    let counted: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, 7, "{}", json["evaluations"]);
}

// --- A pid outside the loop's tree --------------------------------------------------

/// A loop with two hung evaluations: one in a worker of its own, which says it can be
/// interrupted but blocks `SIGUSR2` (as a worker stuck where the interrupt cannot
/// land), one that names a process outside its tree (written as the protocol says).
/// It waits for its worker to end, then for `may-exit`.
const FOREIGN: &str = r#"import json, os, socket, subprocess, sys, time
import loopwatch

foreign = int(sys.argv[1])
worker = subprocess.Popen([sys.executable, "-c",
    "import loopwatch, signal, time\nwith loopwatch.evaluation('in-tree'):\n"
    "    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2])\n    time.sleep(3600)\n"])
line = {"v": 1, "type": "evaluation_start", "id": "foreign", "pid": foreign, "t": time.time()}
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
    s.connect(os.environ["LOOPWATCH_SOCKET"])
    s.sendall((json.dumps(line) + "\n").encode())
    with open("worker-status", "w") as f:
        f.write(str(worker.wait()))
    while not os.path.exists("may-exit"):
        time.sleep(0.05)
loopwatch.done()
"#;

/// The foreign pid is never signalled; the worker is interrupted first, and its
/// processes ended once the grace period passed without the evaluation's end.
#[test]
fn a_hung_evaluations_pid_outside_the_loops_tree_is_never_signalled() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("foreign.py"), FOREIGN).unwrap();
    std::fs::write(
        dir.path().join("loopwatch.toml"),
        "evaluation_floor = \"1s\"\n",
    )
    .unwrap();
    // The test's own process, not the loop's.
    let mut outsider = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let before = loopwatch::cleanup::ProcessId::running(outsider.id()).unwrap();
    let launch = Launch {
        current_dir: Some(dir.path().to_path_buf()),
        ..Launch::default()
    };
    let command = [
        python().into_os_string(),
        "foreign.py".into(),
        outsider.id().to_string().into(),
    ];
    let mut run = Supervised::launch(
        dir.path(),
        &launch,
        &[
            "--config=loopwatch.toml",
            "--on-hung-evaluation=kill",
            "--grace=2s",
        ],
        &command,
    );
    let refused = [("field", "evaluation"), ("reason", "pid_outside_tree")];
    wait_until(
        Duration::from_secs(60),
        "the worker ended and the foreign pid refused",
        || {
            dir.path().join("worker-status").exists()
                && live(&run, "loopwatch_rejected_observations_total", &refused) == Some(1.0)
        },
    );
    assert!(before.is_running(), "the outsider was signalled");
    std::fs::write(dir.path().join("may-exit"), "").unwrap();
    assert_eq!(
        run.wait(Duration::from_secs(60)).code(),
        Some(0),
        "{}",
        run.log()
    );
    assert!(before.is_running(), "the outsider was signalled");
    let status = std::fs::read_to_string(dir.path().join("worker-status")).unwrap();
    assert_eq!(status, "-15", "the worker ended by SIGTERM");
    let json = run.final_json();
    assert_eq!(
        final_value(&json, "loopwatch_rejected_observations_total", &refused),
        1.0,
        "refused once, not on every look"
    );
    assert_eq!(
        final_value(&json, "loopwatch_evaluations_killed_total", &[]),
        1.0
    );
    let evaluations = &json["evaluations"];
    assert_eq!(evaluations["killed"][0]["id"], "in-tree", "{evaluations}");
    // Still in flight when the loop exited: it ended with it, as failed.
    assert_eq!(evaluations["in_flight"], 0, "{evaluations}");
    let foreign = evaluations["slowest"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "foreign")
        .unwrap_or_else(|| panic!("{evaluations}"));
    assert_eq!(foreign["outcome"], "failed", "{evaluations}");
    let log = run.log();
    assert!(log.contains("outside the loop's process tree"), "{log}");
    let interrupting = log
        .find("interrupting a hung evaluation")
        .unwrap_or_else(|| panic!("{log}"));
    let ending = log
        .find("ending a hung evaluation")
        .unwrap_or_else(|| panic!("{log}"));
    assert!(interrupting < ending, "{log}");
    assert!(log[ending..].contains("interrupted=true"), "{log}");
    assert!(
        log.contains("evaluation=\"in-tree\"") || log.contains("evaluation=in-tree"),
        "{log}"
    );
    outsider.kill().unwrap();
    outsider.wait().unwrap();
}
