//! Real OpenEvolve and ShinkaEvolve runs under `loopwatch run --llm-proxy`, with no
//! change to their files and no loopwatch import anywhere: the zero-code
//! instrumentation reports their iterations, champion, best score and diversity, which
//! equal each framework's own account (OpenEvolve's log and `best_program_info.json`,
//! ShinkaEvolve's program database), and the page shows the search, in the served
//! markup and as headless Chromium renders it. The LLM provider is the one stand-in
//! (`llm_upstream`, whose `evolve` answers are programs with rising scores, one in five
//! raising); the frameworks, their process pools and job runners, the proxy and the
//! monitor are real.

mod support;

#[allow(dead_code)]
mod llm_upstream;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use llm_upstream::Upstream;
use support::services::free_port;
use support::*;

/// OpenEvolve's iterations in the run.
const ITERATIONS: usize = 12;

/// The evaluator, as an OpenEvolve user writes it: no loopwatch in it.
const EVALUATOR: &str = r#"import importlib.util

def evaluate(program_path):
    spec = importlib.util.spec_from_file_location("candidate", program_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {"combined_score": float(module.f())}
"#;

/// OpenEvolve's own command line, run to its end; then held (`finished` says so) until
/// the test has seen the page and writes `stop`.
const HELD_OPENEVOLVE: &str = r#"import os, sys, time
from openevolve.cli import main
code = main()
open("finished", "w").close()
while not os.path.exists("stop"):
    time.sleep(0.05)
sys.exit(code)
"#;

/// What OpenEvolve's own log says of a run in `dir`: the iterations whose program it
/// evaluated, those that ended in an error before evaluation, and the evaluations
/// that failed.
struct OpenEvolveAccount {
    evaluated: BTreeSet<u64>,
    failed_iterations: BTreeSet<u64>,
    evaluation_failures: usize,
    log: String,
}

fn openevolve_account(dir: &Path) -> OpenEvolveAccount {
    let log: String = std::fs::read_dir(dir.join("out/logs"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .collect();
    // "Iteration 3: Program <id> (parent: …)" and "Iteration 4 error: …".
    let numbers_after = |prefix: &str, suffix: &str| -> BTreeSet<u64> {
        log.split(prefix)
            .skip(1)
            .filter_map(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                rest[digits.len()..]
                    .starts_with(suffix)
                    .then(|| digits.parse().ok())
                    .flatten()
            })
            .collect()
    };
    OpenEvolveAccount {
        evaluated: numbers_after("Iteration ", ": Program "),
        failed_iterations: numbers_after("Iteration ", " error"),
        evaluation_failures: log.matches("All evaluation attempts failed").count(),
        log,
    }
}

/// The version of `package` installed in `python`'s environment.
fn installed_version(python: &Path, package: &str) -> String {
    let output = std::process::Command::new(python)
        .args([
            "-c",
            &format!("import importlib.metadata as m; print(m.version({package:?}))"),
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// The environment of a framework's run: no proxy or base URL of the test's own, and
/// no instrumentation choice but `loopwatch run`'s default (`auto`).
fn launch_in(dir: &Path) -> Launch {
    let mut launch = Launch::without_network_settings(dir);
    launch.env_remove.push("LOOPWATCH_INSTRUMENT".into());
    launch
}

/// `loopwatch run --llm-proxy` of `command` in `dir`, its proxy on `port` in front of
/// `upstream`; returns once the command wrote `finished` (it is then held until the
/// test writes `stop`). `account` reads the framework's own log for a failure message.
fn run_held(
    dir: &Path,
    upstream: &Upstream,
    port: u16,
    command: &[&std::ffi::OsStr],
    account: impl Fn() -> String,
) -> Supervised {
    let flags = [
        "--llm-proxy".to_string(),
        format!("--llm-upstream={}", upstream.url()),
        format!("--llm-proxy-listen=127.0.0.1:{port}"),
        "--experiment=zero-code".to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let command: Vec<OsString> = command.iter().map(OsString::from).collect();
    let mut run = Supervised::launch(dir, &launch_in(dir), &flags, &command);
    let finished = dir.join("finished");
    let mut exited = None;
    wait_until(
        Duration::from_secs(300),
        "the framework to finish its run",
        || {
            exited = run.child.try_wait().unwrap();
            exited.is_some() || finished.exists()
        },
    );
    if let Some(status) = exited {
        panic!(
            "loopwatch run ended ({status}) before the framework finished; its log:\n{}\nloopwatch's:\n{}",
            account(),
            run.log()
        );
    }
    run
}

/// The live snapshot of `run`, once it has applied `iterations` iterations.
fn snapshot_at(run: &Supervised, iterations: u64) -> serde_json::Value {
    let snapshot = || -> serde_json::Value {
        serde_json::from_str(&http_get(run.addr, "/api/v1/snapshot").body).unwrap()
    };
    let mut live = snapshot();
    wait_until(
        Duration::from_secs(30),
        "the run's iterations applied",
        || {
            live = snapshot();
            live["summary"]["iterations"] == iterations
        },
    );
    live
}

/// Diversity is within 0–1 on every iteration that reported it, and above 0 at the
/// end, once programs differ.
fn check_diversity(live: &serde_json::Value) {
    let diversity: Vec<f64> = live["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["population_diversity"].as_f64())
        .collect();
    assert!(!diversity.is_empty(), "{live:#}");
    assert!(
        diversity.iter().all(|d| (0.0..=1.0).contains(d)),
        "{diversity:?}"
    );
    assert!(diversity.last().is_some_and(|d| *d > 0.0), "{diversity:?}");
}

/// `framework` is instrumented at `version`, and its instrumentation caught nothing.
fn check_instrumented(live: &serde_json::Value, framework: &str, version: &str) {
    let entry = live["instrumentation"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["framework"] == framework)
        .unwrap_or_else(|| panic!("no {framework} in {live:#}"));
    assert_eq!(entry["state"], "active", "{entry}");
    assert_eq!(entry["version"], version, "{entry}");
    assert_eq!(entry["errors"], 0, "{entry}");
}

/// The page of `run` shows the search of `iterations` iterations by `header` (the
/// framework and its version), served and as Chromium renders it: charts on the
/// iteration axis with a line, whole labels never repeated.
fn check_page(run: &Supervised, header: &str, iterations: u64) {
    let shows_the_search = |page: &str, source: &str| {
        assert!(
            page.contains(&format!("data-instrumented=\"{header}\"")),
            "{source}: the header names {header}"
        );
        for title in [
            "Sharpe ratio",
            "population diversity",
            "success rate (10 iterations)",
        ] {
            let chart =
                page_chart(page, title).unwrap_or_else(|| panic!("{source}: no {title} chart"));
            assert_eq!(
                chart.axis, "iteration",
                "{source}: {title}: {}",
                chart.markup
            );
            assert!(
                chart.lines.iter().any(|points| *points >= 2),
                "{source}: {title} draws a line: {chart:?}"
            );
            let mut labels = chart.x_labels.clone();
            labels.dedup();
            assert_eq!(
                labels, chart.x_labels,
                "{source}: {title}: no repeated iteration labels"
            );
            assert!(
                chart.x_labels.iter().all(|l| l.parse::<u64>().is_ok()),
                "{source}: {title}: whole iteration labels: {:?}",
                chart.x_labels
            );
        }
        assert!(
            page.contains(&format!("{iterations} iterations")),
            "{source}: the header counts {iterations} iterations"
        );
    };
    shows_the_search(&http_get(run.addr, "/").body, "served page");
    shows_the_search(
        &chromium_dom(&format!("http://{}/", run.addr)),
        "Chromium's DOM",
    );
}

/// Releases the held command: it exits 0, and the final files agree with `live`.
fn release(dir: &Path, mut run: Supervised, live: &serde_json::Value) {
    std::fs::write(dir.join("stop"), b"").unwrap();
    let status = run.wait(Duration::from_secs(60));
    assert!(status.success(), "{status:?}; log:\n{}", run.log());
    let json = run.final_json();
    for key in [
        "iterations",
        "strategy_successes",
        "strategy_failures",
        "champion",
        "best_sharpe",
    ] {
        assert_eq!(json["summary"][key], live["summary"][key], "{key}");
    }
}

/// The LLM calls of `model` the stand-in answered were all metered.
fn check_metered(live: &serde_json::Value, upstream: &Upstream, model: &str) {
    let calls = upstream
        .seen()
        .into_iter()
        .filter(|s| s.model == model)
        .count() as u64;
    assert!(calls > 0);
    assert_eq!(
        live["summary"]["llm"]["by_model"][format!("{model}-2025")]["calls"],
        calls,
        "{}",
        live["summary"]["llm"]
    );
}

#[test]
fn a_real_openevolve_run_shows_its_search_with_no_change_to_it() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("initial.py"),
        "# EVOLVE-BLOCK-START\ndef f():\n    return 1\n# EVOLVE-BLOCK-END\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("evaluator.py"), EVALUATOR).unwrap();
    std::fs::write(
        dir.path().join("config.yaml"),
        format!(
            r#"max_iterations: {ITERATIONS}
checkpoint_interval: 1000
random_seed: 7
diff_based_evolution: false
llm:
  api_base: "http://127.0.0.1:{port}/v1"
  api_key: "sk-openevolve"
  models:
    - name: "evolve/openevolve"
      weight: 1.0
  timeout: 30
  retries: 0
database:
  population_size: 50
  num_islands: 2
evaluator:
  parallel_evaluations: 2
  cascade_evaluation: false
  timeout: 120
  max_retries: 0
"#
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("openevolve_run.py"), HELD_OPENEVOLVE).unwrap();
    let python = python();
    let run = run_held(
        dir.path(),
        &upstream,
        port,
        &[
            python.as_os_str(),
            "openevolve_run.py".as_ref(),
            "initial.py".as_ref(),
            "evaluator.py".as_ref(),
            "--config".as_ref(),
            "config.yaml".as_ref(),
            "--output".as_ref(),
            "out".as_ref(),
        ],
        || openevolve_account(dir.path()).log,
    );
    let account = openevolve_account(dir.path());
    let best: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out/best/best_program_info.json")).unwrap(),
    )
    .unwrap();
    let iterations: BTreeSet<u64> = account
        .evaluated
        .union(&account.failed_iterations)
        .copied()
        .collect();
    assert_eq!(
        iterations.len(),
        ITERATIONS,
        "OpenEvolve's log:\n{}",
        account.log
    );
    assert!(
        account.evaluation_failures > 0,
        "one program in five raises: {}",
        account.log
    );

    // The live snapshot, read once OpenEvolve said its run is over (the instrumentation
    // reports `done` before OpenEvolve's main returns).
    let live = snapshot_at(&run, ITERATIONS as u64);
    let summary = &live["summary"];
    let context = || format!("{summary:#}\nloopwatch's log:\n{}", run.log());
    // Successes plus failures are the programs evaluated, and the iterations that
    // ended before an evaluation; the failed evaluations are failures.
    assert_eq!(
        summary["strategy_successes"],
        (account.evaluated.len() - account.evaluation_failures) as u64,
        "{}",
        context()
    );
    assert_eq!(
        summary["strategy_failures"],
        (account.failed_iterations.len() + account.evaluation_failures) as u64,
        "{}",
        context()
    );
    assert!(
        summary["failure_reasons"]
            .as_object()
            .unwrap()
            .keys()
            .any(|reason| reason.starts_with("evaluator: ValueError")),
        "{}",
        context()
    );
    // The champion and its score are OpenEvolve's best program.
    assert_eq!(summary["champion"], best["id"], "{}", context());
    assert_eq!(
        summary["best_sharpe"].as_f64(),
        best["metrics"]["combined_score"].as_f64(),
        "{}",
        context()
    );
    check_diversity(&live);
    let version = installed_version(&python, "openevolve");
    check_instrumented(&live, "openevolve", &version);
    check_metered(&live, &upstream, "evolve/openevolve");
    check_page(&run, &format!("openevolve {version}"), ITERATIONS as u64);
    release(dir.path(), run, &live);
}

/// ShinkaEvolve's generations in the run.
const GENERATIONS: u64 = 6;

/// The evaluation job ShinkaEvolve runs for each program: it writes the two files
/// ShinkaEvolve reads (what its `run_shinka_eval` writes), with the standard library
/// only and no loopwatch in it.
const SHINKA_EVALUATE: &str = r#"import argparse, importlib.util, json, os
parser = argparse.ArgumentParser()
parser.add_argument("--program_path")
parser.add_argument("--results_dir")
args = parser.parse_args()
os.makedirs(args.results_dir, exist_ok=True)
try:
    spec = importlib.util.spec_from_file_location("candidate", args.program_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    score, correct = float(module.f()), {"correct": True, "error": None}
except Exception as error:
    score, correct = 0.0, {"correct": False, "error": "%s: %s" % (type(error).__name__, error)}
with open(os.path.join(args.results_dir, "metrics.json"), "w") as f:
    json.dump({"combined_score": score, "public": {}, "private": {}}, f)
with open(os.path.join(args.results_dir, "correct.json"), "w") as f:
    json.dump(correct, f)
"#;

/// ShinkaEvolve's runner, as its documentation writes one, for `{generations}` against
/// the model `{model}`; then held until the test has seen the page.
const HELD_SHINKA: &str = r#"import os, sys, time
from shinka.core import ShinkaEvolveRunner, EvolutionConfig
from shinka.launch import LocalJobConfig
from shinka.database import DatabaseConfig

evo = EvolutionConfig(
    num_generations={generations}, patch_types=["full"], patch_type_probs=[1.0],
    max_patch_resamples=1, max_novelty_attempts=1, llm_models=["{model}"],
    llm_dynamic_selection=None, meta_rec_interval=None, embedding_model=None,
    init_program_path="initial.py", results_dir="results",
    llm_kwargs=dict(temperatures=[0.0], max_tokens=512),
)
ShinkaEvolveRunner(
    evo_config=evo,
    job_config=LocalJobConfig(eval_program_path="evaluate.py"),
    db_config=DatabaseConfig(db_path="evolution_db.sqlite", num_islands=1, archive_size=20),
    max_evaluation_jobs=2, max_proposal_jobs=2, verbose=False,
).run()
open("finished", "w").close()
while not os.path.exists("stop"):
    time.sleep(0.05)
"#;

/// What ShinkaEvolve's own database says of a run, read with its Python: the evolved
/// programs (generation above 0) and their correctness, the failed attempts, the best
/// program's id, the best correct score and the programs in all.
const SHINKA_ACCOUNT: &str = r#"import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
programs = db.execute("SELECT id, generation, correct, combined_score FROM programs").fetchall()
evolved = [p for p in programs if p[1] > 0]
print(json.dumps({
    "evolved": len(evolved),
    "evolved_correct": sum(1 for p in evolved if p[2]),
    "failed_attempts": db.execute("SELECT COUNT(*) FROM attempt_log WHERE status = 'failed'").fetchone()[0],
    "best_id": db.execute("SELECT value FROM metadata_store WHERE key = 'best_program_id'").fetchone()[0],
    "best_score": max(p[3] for p in programs if p[2]),
    "programs": len(programs),
}))
"#;

#[test]
fn a_real_shinkaevolve_run_shows_its_search_with_no_change_to_it() {
    let shinka_python =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/venv-shinka/bin/python");
    assert!(
        shinka_python.exists(),
        "no ShinkaEvolve environment at {}: scripts/test makes it (ensure_python_env)",
        shinka_python.display()
    );
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("initial.py"),
        "# EVOLVE-BLOCK-START\ndef f():\n    return 1\n# EVOLVE-BLOCK-END\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("evaluate.py"), SHINKA_EVALUATE).unwrap();
    let model = format!("local/evolve/shinka@http://127.0.0.1:{port}/v1");
    std::fs::write(
        dir.path().join("shinka_run.py"),
        HELD_SHINKA
            .replace("{generations}", &GENERATIONS.to_string())
            .replace("{model}", &model),
    )
    .unwrap();
    let run = run_held(
        dir.path(),
        &upstream,
        port,
        &[shinka_python.as_os_str(), "shinka_run.py".as_ref()],
        String::new,
    );
    let output = std::process::Command::new(&shinka_python)
        .args(["-c", SHINKA_ACCOUNT])
        .arg(dir.path().join("results/programs.sqlite"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let account: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let number = |key: &str| account[key].as_u64().unwrap();

    // Every evolved program and every failed attempt is an iteration; the correct
    // programs are successes.
    let iterations = number("evolved") + number("failed_attempts");
    let live = snapshot_at(&run, iterations);
    let summary = &live["summary"];
    let context = || format!("{account}\n{summary:#}\nloopwatch's log:\n{}", run.log());
    assert_eq!(
        summary["strategy_successes"],
        number("evolved_correct"),
        "{}",
        context()
    );
    assert_eq!(
        summary["strategy_failures"],
        iterations - number("evolved_correct"),
        "{}",
        context()
    );
    assert!(
        summary["failure_reasons"]
            .as_object()
            .unwrap()
            .keys()
            .any(|reason| reason.starts_with("evaluation: ValueError")),
        "one program in five raises: {}",
        context()
    );
    // The champion and its score are ShinkaEvolve's best program.
    assert_eq!(summary["champion"], account["best_id"], "{}", context());
    assert_eq!(
        summary["best_sharpe"].as_f64(),
        account["best_score"].as_f64(),
        "{}",
        context()
    );
    check_diversity(&live);
    let version = installed_version(&shinka_python, "shinka-evolve");
    check_instrumented(&live, "shinka", &version);
    check_metered(&live, &upstream, "evolve/shinka");
    check_page(&run, &format!("shinka {version}"), iterations);
    release(dir.path(), run, &live);
}
