//! A real OpenEvolve run under `loopwatch run --llm-proxy`, with no change to its files
//! and no loopwatch import anywhere: the zero-code instrumentation reports its
//! iterations, champion, best score and diversity, which equal OpenEvolve's own
//! account (its log and `best_program_info.json`), and the page shows the search, in
//! the served markup and as headless Chromium renders it. The LLM provider is the one
//! stand-in (`llm_upstream`, whose `evolve` answers are programs with rising scores,
//! one in five raising); OpenEvolve, its process pool, the proxy and the monitor are
//! real.

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

/// The version of `package` installed in the tests' Python environment.
fn installed_version(package: &str) -> String {
    let output = std::process::Command::new(python())
        .args([
            "-c",
            &format!("import importlib.metadata as m; print(m.version({package:?}))"),
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
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
    let launch = Launch {
        env_remove: [
            "OPENAI_BASE_URL",
            "OPENAI_API_BASE",
            "HTTPS_PROXY",
            "HTTP_PROXY",
            "https_proxy",
            "http_proxy",
            "ALL_PROXY",
            "all_proxy",
            "LOOPWATCH_INSTRUMENT",
        ]
        .iter()
        .map(OsString::from)
        .collect(),
        current_dir: Some(dir.path().to_path_buf()),
        ..Launch::default()
    };
    let flags = [
        "--llm-proxy".to_string(),
        format!("--llm-upstream={}", upstream.url()),
        format!("--llm-proxy-listen=127.0.0.1:{port}"),
        "--experiment=openevolve-demo".to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let command: Vec<OsString> = [
        python().as_os_str(),
        "openevolve_run.py".as_ref(),
        "initial.py".as_ref(),
        "evaluator.py".as_ref(),
        "--config".as_ref(),
        "config.yaml".as_ref(),
        "--output".as_ref(),
        "out".as_ref(),
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    let mut run = Supervised::launch(dir.path(), &launch, &flags, &command);
    let finished = dir.path().join("finished");
    let mut exited = None;
    wait_until(
        Duration::from_secs(300),
        "OpenEvolve to finish its run",
        || {
            exited = run.child.try_wait().unwrap();
            exited.is_some() || finished.exists()
        },
    );
    let account = openevolve_account(dir.path());
    if let Some(status) = exited {
        panic!(
            "loopwatch run ended ({status}) before OpenEvolve finished; OpenEvolve's log:\n{}\nloopwatch's:\n{}",
            account.log,
            run.log()
        );
    }
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
    let snapshot = || -> serde_json::Value {
        serde_json::from_str(&http_get(run.addr, "/api/v1/snapshot").body).unwrap()
    };
    let mut live = snapshot();
    wait_until(
        Duration::from_secs(30),
        "the run's iterations applied",
        || {
            live = snapshot();
            live["summary"]["iterations"] == ITERATIONS as u64
        },
    );
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
    // Diversity, from the programs' code, is within 0–1 and not nil once programs
    // differ.
    let diversity: Vec<f64> = live["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["population_diversity"].as_f64())
        .collect();
    assert!(!diversity.is_empty(), "{}", context());
    assert!(
        diversity.iter().all(|d| (0.0..=1.0).contains(d)),
        "{diversity:?}"
    );
    assert!(diversity.last().is_some_and(|d| *d > 0.0), "{diversity:?}");
    // The framework is named with its version, and its instrumentation caught nothing.
    let version = installed_version("openevolve");
    let openevolve = live["instrumentation"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["framework"] == "openevolve")
        .unwrap_or_else(|| panic!("{}", context()))
        .clone();
    assert_eq!(openevolve["state"], "active", "{openevolve}");
    assert_eq!(openevolve["version"], version.as_str(), "{openevolve}");
    assert_eq!(openevolve["errors"], 0, "{openevolve}");
    // Every LLM call OpenEvolve made was metered.
    let calls = upstream
        .seen()
        .into_iter()
        .filter(|s| s.model == "evolve/openevolve")
        .count() as u64;
    assert_eq!(
        summary["llm"]["by_model"]["evolve/openevolve-2025"]["calls"],
        calls,
        "{}",
        context()
    );

    // The page shows the search, served and as Chromium renders it.
    let header = format!("openevolve {version}");
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
            page.contains(&format!("{ITERATIONS} iterations")),
            "{source}: the header counts {ITERATIONS} iterations"
        );
    };
    shows_the_search(&http_get(run.addr, "/").body, "served page");
    shows_the_search(
        &chromium_dom(&format!("http://{}/", run.addr)),
        "Chromium's DOM",
    );

    // Released: OpenEvolve's process exits 0, and the final files agree with the live
    // snapshot.
    std::fs::write(dir.path().join("stop"), b"").unwrap();
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
