//! `loopwatch run --instrument`: a Python loop written without any loopwatch import,
//! on the real Optuna of the test environment, reports its trials through the
//! instrumentation that `loopwatch run` writes and puts on its `PYTHONPATH`; `none`
//! reports nothing; an error inside the instrumentation is counted and the loop
//! finishes; a site's own `sitecustomize` still runs.

mod support;

use std::ffi::OsString;
use std::time::Duration;

use support::*;

/// A study that knows nothing of loopwatch: 12 trials, some pruned or failed. It
/// prints Optuna's own account of it. `{prelude}` is code run before the study.
const STUDY: &str = r#"
import json, optuna
{prelude}
optuna.logging.set_verbosity(optuna.logging.WARNING)

def objective(trial):
    x = trial.suggest_float("x", -10, 10)
    if x > 7:
        raise optuna.TrialPruned()
    if x < -7:
        raise RuntimeError("diverged")
    return (x - 2) ** 2

study = optuna.create_study(direction="minimize", sampler=optuna.samplers.RandomSampler(seed=3))
study.optimize(objective, n_trials=12, catch=(RuntimeError,))
print(json.dumps({"trials": len(study.trials), "version": optuna.__version__,
                  "complete": sum(t.state.name == "COMPLETE" for t in study.trials)}))
"#;

/// Runs `script` under `loopwatch run` with `flags` and `launch`, to its end.
fn run(dir: &std::path::Path, flags: &[&str], launch: &Launch, script: &str) -> Supervised {
    let path = dir.join("study.py");
    std::fs::write(&path, script).unwrap();
    let command = vec![python().into_os_string(), path.into_os_string()];
    let mut run = Supervised::launch(dir, launch, flags, &command);
    let status = run.wait(Duration::from_secs(180));
    assert!(status.success(), "{status:?}; log:\n{}", run.log());
    run
}

fn framework<'a>(json: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    json["instrumentation"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["framework"] == name)
}

#[test]
fn a_study_without_any_loopwatch_import_reports_its_trials() {
    let dir = tempfile::tempdir().unwrap();
    let run = run(
        dir.path(),
        &[],
        &Launch::default(),
        &STUDY.replace("{prelude}", ""),
    );
    let json = run.final_json();
    assert_eq!(json["summary"]["iterations"], 12, "{}", run.log());
    let optuna = framework(&json, "optuna").unwrap_or_else(|| panic!("{json:#}"));
    assert_eq!(optuna["state"], "active", "{optuna}");
    assert_eq!(optuna["version"], "5.1.0", "{optuna}");
    assert_eq!(optuna["errors"], 0, "{optuna}");
    // Every trial is an outcome: completed ones successes, pruned and failed ones
    // failures.
    let total = |name: &str| {
        json["metrics"][name]["samples"][0]["value"]
            .as_f64()
            .unwrap()
    };
    assert!(total("strategy_success_total") > 0.0, "{json:#}");
    assert_eq!(
        total("strategy_success_total") + total("strategy_failure_total"),
        12.0
    );
}

#[test]
fn none_instruments_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let run = run(
        dir.path(),
        &["--instrument=none"],
        &Launch::default(),
        &STUDY.replace("{prelude}", ""),
    );
    let json = run.final_json();
    assert_eq!(json["summary"]["iterations"], 0, "{}", run.log());
    assert_eq!(json["instrumentation"], serde_json::json!([]));
}

#[test]
fn an_error_inside_the_instrumentation_is_counted_and_the_loop_finishes() {
    let dir = tempfile::tempdir().unwrap();
    // A fault no real framework shows at a tested version: the adapter's diversity
    // function raises.
    let prelude = "import loopwatch.optuna\n\
        def broken(trials):\n    raise ZeroDivisionError('broken diversity')\n\
        loopwatch.optuna.parameter_diversity = broken\n";
    let run = run(
        dir.path(),
        &[],
        &Launch::default(),
        &STUDY.replace("{prelude}", prelude),
    );
    let json = run.final_json();
    assert_eq!(json["summary"]["iterations"], 12, "the loop finished");
    let optuna = framework(&json, "optuna").unwrap();
    assert!(optuna["errors"].as_u64().unwrap() > 0, "{optuna}");
    let counted = json["metrics"]["loopwatch_instrumentation_errors_total"]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["labels"]["framework"] == "optuna")
        .unwrap()["value"]
        .as_f64()
        .unwrap();
    assert_eq!(counted, optuna["errors"].as_f64().unwrap());
}

#[test]
fn a_sites_own_sitecustomize_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    let marker = dir.path().join("site-ran");
    std::fs::write(
        site.join("sitecustomize.py"),
        format!(
            "open({:?}, 'w').write('yes')\n",
            marker.display().to_string()
        ),
    )
    .unwrap();
    let launch = Launch {
        env: vec![(OsString::from("PYTHONPATH"), site.into_os_string())],
        ..Launch::default()
    };
    let run = run(dir.path(), &[], &launch, &STUDY.replace("{prelude}", ""));
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "yes");
    assert_eq!(run.final_json()["summary"]["iterations"], 12);
}
