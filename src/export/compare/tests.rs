use std::path::Path;

use serde_json::{json, Value};

use super::*;

/// A final JSON as loopwatch writes it now (the keys the comparison reads).
fn final_json(run_id: &str, points: Value, cost: f64) -> Value {
    json!({
        "loopwatch_version": "0.1.0",
        "identity": { "run_id": run_id, "experiment": "exp", "loop": "evolve" },
        "summary": {
            "run_id": run_id,
            "started_at": "2025-01-01T00:00:00.000Z",
            "elapsed_seconds": 12.5,
            "iterations": 30,
            "success_rate": 0.625,
            "mean_execution_time_seconds": 0.4,
            "champion_changes": 4,
            "best_sharpe": 1.75,
            "llm": { "calls": 9, "cost_usd": cost },
        },
        "best_so_far": { "score": "best_sharpe", "points": points, "points_dropped": 0 },
        "evaluation": { "alerts": { "LowSuccessRate": "firing", "DiversityCollapse": "inactive" } },
        "alert_history": [
            { "alertname": "LowSuccessRate", "state": "firing" },
            { "alertname": "LowSuccessRate", "state": "resolved" },
            { "alertname": "LowSuccessRate", "state": "firing" },
        ],
        "events_dropped": 0,
    })
}

fn points() -> Value {
    json!([
        { "iteration": 1, "elapsed_seconds": 0.5, "llm_cost_usd": 0.01, "best_sharpe": 0.5 },
        { "iteration": 7, "elapsed_seconds": 3.0, "llm_cost_usd": 0.05, "best_sharpe": 1.75 },
    ])
}

fn run(json: &Value) -> Result<FinalRun, String> {
    FinalRun::from_text(&json.to_string(), Path::new("runs/a/metrics_final.json"))
}

#[test]
fn figures_are_the_files_values() {
    let r = run(&final_json("a", points(), 0.25)).unwrap();
    let f = &r.figures;
    assert_eq!(f.run_id, "a");
    assert_eq!(f.label(), "exp · evolve · a");
    assert_eq!(f.iterations, 30);
    assert_eq!(f.success_rate, Some(0.625));
    assert_eq!(f.best_sharpe, Some(1.75));
    assert_eq!(f.wall_time_seconds, 12.5);
    assert_eq!(f.mean_iteration_seconds, Some(0.4));
    assert_eq!((f.llm_calls, f.llm_cost_usd), (Some(9), Some(0.25)));
    assert_eq!(f.alerts_fired, 2);
    assert_eq!(f.alerts_firing_at_end, ["LowSuccessRate"]);
    assert!(f.notes.is_empty(), "{:?}", f.notes);
    // The curve holds its last value to the run's end.
    let curve = r.curve.unwrap();
    assert_eq!(curve.len(), 3);
    assert_eq!(
        curve[2],
        CurvePoint {
            iteration: 30.0,
            seconds: 12.5,
            spend_usd: 0.25,
            best: 1.75
        }
    );
}

#[test]
fn an_older_file_gets_its_row_and_notes_never_an_error() {
    let mut old = final_json("old", Value::Null, 0.0);
    let root = old.as_object_mut().unwrap();
    root.remove("best_so_far");
    let summary = root["summary"].as_object_mut().unwrap();
    summary.remove("best_sharpe");
    summary.remove("llm");
    let r = run(&old).unwrap();
    assert!(!r.has_curve());
    assert_eq!(r.figures.best_sharpe, None);
    assert_eq!(r.figures.llm_calls, None);
    assert_eq!(r.figures.iterations, 30);
    let notes = r.figures.notes.join("\n");
    assert!(notes.contains("no best-so-far curve"), "{notes}");
    assert!(notes.contains("no best Sharpe"), "{notes}");
    assert!(notes.contains("no LLM figures"), "{notes}");
    // On the page: a table row, and a note in each chart instead of a line.
    let page = Comparison::new(vec![r]).unwrap().html();
    assert!(page.contains("<tr data-run=\"old\">"));
    assert_eq!(page.matches("<polyline").count(), 0);
    assert_eq!(page.matches("data-left-out=\"old\"").count(), 3);
}

#[test]
fn a_run_without_any_sharpe_has_no_curve_and_says_so() {
    let r = run(&final_json("none", json!([]), 0.0)).unwrap();
    assert!(!r.has_curve());
    assert!(r.figures.notes.iter().any(|n| n.contains("no strategy")));
}

#[test]
fn other_json_is_an_error_naming_the_key() {
    for (json, key) in [
        (json!([1, 2]), "not a JSON object"),
        (json!({ "name": "other tool" }), "loopwatch_version"),
        (json!({ "loopwatch_version": "0.1.0" }), "summary"),
        (
            json!({ "loopwatch_version": "0.1.0", "summary": { "run_id": "x", "iterations": -1, "elapsed_seconds": 1 } }),
            "summary.iterations",
        ),
        (
            json!({ "loopwatch_version": "0.1.0", "summary": { "run_id": "x", "iterations": 1, "elapsed_seconds": 1 },
                    "best_so_far": { "points": [{ "iteration": 1, "elapsed_seconds": "soon" }] } }),
            "best_so_far.points[0].elapsed_seconds",
        ),
    ] {
        let err = run(&json).unwrap_err();
        assert!(err.contains(key), "{err} should name {key}");
    }
}

#[test]
fn the_same_run_twice_names_both_files() {
    let a = run(&final_json("a", points(), 0.0)).unwrap();
    let mut again = a.clone();
    again.figures.file = "elsewhere/metrics_final.json".into();
    let err = Comparison::new(vec![a, again]).unwrap_err().to_string();
    assert!(err.contains("runs/a/metrics_final.json"), "{err}");
    assert!(err.contains("elsewhere/metrics_final.json"), "{err}");
    assert!(err.contains("same run (a)"), "{err}");
    assert!(matches!(
        Comparison::new(Vec::new()),
        Err(CompareError::NoRuns)
    ));
}

#[test]
fn the_page_draws_one_step_line_per_run_on_each_axis() {
    let runs = vec![
        run(&final_json("a", points(), 0.25)).unwrap(),
        run(&final_json("b", points(), 0.0)).unwrap(),
    ];
    let page = Comparison::new(runs).unwrap().html();
    let panel = |title: &str| {
        let start = page.find(&format!("data-panel=\"{title}\"")).unwrap();
        let end = start + page[start..].find("</section>").unwrap();
        page[start..end].to_string()
    };
    let iterations = panel("Best Sharpe so far by iteration");
    assert_eq!(iterations.matches("<polyline class=\"run").count(), 2);
    assert!(iterations.contains("data-curves=\"2\""));
    assert_eq!(
        panel("Best Sharpe so far by wall time")
            .matches("<polyline")
            .count(),
        2
    );
    // Only the run that spent is drawn against spend; the other is named.
    let spend = panel("Best Sharpe so far by LLM spend");
    assert_eq!(spend.matches("<polyline").count(), 1);
    assert!(spend.contains("data-left-out=\"b\""));
    assert!(spend.contains("no LLM spend"));
    // Each improvement is a step: three points become five (up, across, up, across).
    let line = iterations.split(" points=\"").nth(1).unwrap();
    let line = &line[..line.find('"').unwrap()];
    assert_eq!(line.split(' ').count(), 5, "{line}");
    // Offline: no scripts, no external assets, no refresh.
    assert!(!page.contains("<script"));
    assert!(!page.contains("http://") && !page.contains("https://"));
    assert!(!page.contains("http-equiv"));
    // The table carries each figure exactly.
    assert!(page.contains("data-field=\"best_sharpe\" data-value=\"1.75\""));
    assert!(page.contains("data-field=\"wall_time_seconds\" data-value=\"12.5\""));
    assert!(page.contains("data-field=\"alerts_fired\" data-value=\"2\""));
}

#[test]
fn strings_from_the_files_are_escaped() {
    let mut json = final_json("<script>alert(1)</script>", points(), 0.0);
    json["identity"]["experiment"] = json!("\"quoted\" </svg><b>bold</b>");
    let page = Comparison::new(vec![run(&json).unwrap()]).unwrap().html();
    assert!(!page.contains("<script>alert(1)"));
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!page.contains("</svg><b>bold</b>"));
}

#[test]
fn steps_hold_each_value_until_the_next() {
    let p = |x: f64, y: f64| CurvePoint {
        iteration: x,
        seconds: x,
        spend_usd: x,
        best: y,
    };
    let line = page::steps(
        &[p(1.0, 5.0), p(3.0, 7.0), p(9.0, 7.0)],
        |p| p.iteration,
        |p| p.best,
    );
    assert_eq!(line, "1.0,5.0 3.0,5.0 3.0,7.0 9.0,7.0 9.0,7.0");
}

#[test]
fn figures_are_read_to_the_last_digit() {
    // Numbers serde_json's own float parsing reads one ulp off (2.597639773290682,
    // 0.104940354630095): the figures must be the file's, exactly.
    let mut json = final_json("exact", points(), 1.0047215172171107);
    json["summary"]["best_sharpe"] = json!(2.5976397732906826);
    json["summary"]["elapsed_seconds"] = json!(0.10494035463009499);
    let text = json.to_string();
    assert!(text.contains("2.5976397732906826") && text.contains("0.10494035463009499"));
    let lossy: Value = serde_json::from_str(&text).unwrap();
    assert_ne!(
        lossy["summary"]["best_sharpe"].as_f64(),
        Some(2.5976397732906826),
        "serde_json's default parsing is still lossy here; pick other numbers"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(JSON_FINAL_FILE);
    std::fs::write(&file, &text).unwrap();
    let f = FinalRun::read(dir.path()).unwrap().figures;
    assert_eq!(f.file, file);
    assert_eq!(f.best_sharpe, Some(2.5976397732906826));
    assert_eq!(f.wall_time_seconds, 0.10494035463009499);
    assert_eq!(f.llm_cost_usd, Some(1.0047215172171107));
    let table = serde_json::to_string(&f).unwrap();
    for written in [
        "2.5976397732906826",
        "0.10494035463009499",
        "1.0047215172171107",
    ] {
        assert!(table.contains(written), "{written} in {table}");
    }
}
