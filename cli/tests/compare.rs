//! `loopwatch compare` on real runs: the example strategy search run three times with
//! different seeds, compared; the page checked in headless Chromium; loops that pay for
//! LLM calls compared against their spend; and bad input, each refused with the file
//! named and status 2.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::Value;
use support::example_path;

/// Runs the example search to its end (30 small generations) into `dir`.
fn evolve(dir: &Path, seed: u64, extra: &[&str]) {
    let status = Command::new(example_path("evolve"))
        .args(["--seed", &seed.to_string(), "--iterations", "30"])
        .args(extra)
        .args(["--population", "24", "--resamples", "4", "--window", "400"])
        .env("LOOPWATCH_LISTEN", "127.0.0.1:0")
        .env("LOOPWATCH_OUTPUT_DIR", dir)
        .env("LOOPWATCH_EXPERIMENT", "seeds")
        .env("LOOPWATCH_LOOP_NAME", format!("evolve-seed-{seed}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "evolve --seed {seed}: {status}");
}

/// `loopwatch compare` with `args`, in `cwd`.
fn compare(cwd: &Path, args: &[&Path]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_loopwatch"))
        .arg("compare")
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    output
}

fn final_text(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(loopwatch::JSON_FINAL_FILE)).unwrap()
}

fn final_json(dir: &Path) -> Value {
    serde_json::from_str(&final_text(dir)).unwrap()
}

/// Each value of a JSON object, as written (numbers to the last digit: serde_json's
/// own float parsing may land one ulp away, so figures are compared as text).
fn as_written(map: BTreeMap<String, Box<RawValue>>) -> BTreeMap<String, String> {
    map.into_iter()
        .map(|(k, v)| (k, v.get().to_string()))
        .collect()
}

/// The alerts firing at the end of a run, as its final JSON says.
fn firing_at_end(json: &Value) -> Value {
    json["evaluation"]["alerts"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, state)| *state == "firing")
        .map(|(name, _)| Value::from(name.as_str()))
        .collect()
}

/// The object at `path` in a JSON text, each value as written.
fn written(text: &str, path: &[&str]) -> BTreeMap<String, String> {
    let mut text = text.to_string();
    for key in path {
        let map: BTreeMap<String, Box<RawValue>> = serde_json::from_str(&text).unwrap();
        text = map[*key].get().to_string();
    }
    as_written(serde_json::from_str(&text).unwrap())
}

/// The rows of `loopwatch compare --json`, each value as written.
fn table_rows(stdout: &[u8]) -> Vec<BTreeMap<String, String>> {
    let rows: Vec<BTreeMap<String, Box<RawValue>>> = serde_json::from_slice(stdout).unwrap();
    rows.into_iter().map(as_written).collect()
}

/// What the table must say of a run: each figure as its final JSON writes it.
fn expected_row(text: &str) -> Vec<(&'static str, String)> {
    let json: Value = serde_json::from_str(text).unwrap();
    let s = written(text, &["summary"]);
    let llm = written(text, &["summary", "llm"]);
    let identity = written(text, &["identity"]);
    let fired = json["alert_history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["state"] == "firing")
        .count();
    vec![
        ("run_id", s["run_id"].clone()),
        ("experiment", identity["experiment"].clone()),
        ("loop", identity["loop"].clone()),
        ("started_at", s["started_at"].clone()),
        ("iterations", s["iterations"].clone()),
        ("success_rate", s["success_rate"].clone()),
        ("best_sharpe", s["best_sharpe"].clone()),
        ("champion_changes", s["champion_changes"].clone()),
        ("wall_time_seconds", s["elapsed_seconds"].clone()),
        (
            "mean_iteration_seconds",
            s["mean_execution_time_seconds"].clone(),
        ),
        ("llm_calls", llm["calls"].clone()),
        ("llm_cost_usd", llm["cost_usd"].clone()),
        ("alerts_fired", fired.to_string()),
    ]
}

/// The DOM headless Chromium renders for a file.
fn chromium_dom(file: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}", file.display()))
        .stderr(Stdio::null())
        .output()
        .expect("chromium is installed (scripts/test installs Debian's chromium)");
    assert!(output.status.success(), "chromium --dump-dom failed");
    String::from_utf8(output.stdout).unwrap()
}

/// The markup of the element that opens with `open` (a `<section` or `<tr`), up to its
/// closing tag.
fn element<'a>(dom: &'a str, open: &str, close: &str) -> &'a str {
    let start = dom
        .find(open)
        .unwrap_or_else(|| panic!("{open} missing from the DOM"));
    let end = start + dom[start..].find(close).unwrap();
    &dom[start..end]
}

/// The value of attribute `name` in the first tag of `markup` that has it after
/// `after`.
fn attribute<'a>(markup: &'a str, after: &str, name: &str) -> &'a str {
    let from = markup
        .find(after)
        .unwrap_or_else(|| panic!("{after} missing in {markup}"));
    let rest = &markup[from..];
    let at = rest
        .find(&format!(" {name}=\""))
        .unwrap_or_else(|| panic!("{name} missing after {after}"));
    let value = &rest[at + name.len() + 3..];
    &value[..value.find('"').unwrap()]
}

#[test]
fn three_seeds_compared_with_each_final_jsons_figures_and_checked_in_chromium() {
    let root = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (1..=3)
        .map(|s| root.path().join(format!("seed-{s}")))
        .collect();
    for (dir, seed) in dirs.iter().zip(1..) {
        std::fs::create_dir(dir).unwrap();
        // The third search collapses, so that a run has alerts to count.
        let scenario: &[&str] = if seed == 3 {
            &["--scenario", "diversity-collapse"]
        } else {
            &[]
        };
        evolve(dir, seed, scenario);
    }
    let texts: Vec<String> = dirs.iter().map(|d| final_text(d)).collect();
    let files: Vec<Value> = dirs.iter().map(|d| final_json(d)).collect();
    // A directory, a file, a directory: both are accepted.
    let second_file = dirs[1].join(loopwatch::JSON_FINAL_FILE);
    let page = root.path().join("page.html");
    let output = compare(
        root.path(),
        &[
            Path::new("--json"),
            Path::new("--output"),
            &page,
            &dirs[0],
            &second_file,
            &dirs[2],
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("wrote {} (3 runs)", page.display())),
        "says where the page went: {stderr}"
    );

    // (1) The table: each run's figures, exactly as its final JSON holds them.
    let rows = table_rows(&output.stdout);
    assert_eq!(rows.len(), 3);
    for ((row, text), dir) in rows.iter().zip(&texts).zip(&dirs) {
        for (field, expected) in expected_row(text) {
            assert_eq!(row[field], expected, "{field} of {}", row["run_id"]);
        }
        assert!(
            row["best_sharpe"].parse::<f64>().is_ok(),
            "a strategy succeeded: {row:?}"
        );
        assert_eq!(row["llm_calls"], "0", "the example makes no LLM calls");
        assert_eq!(row["notes"], "[]", "a current file lacks nothing");
        let firing: Value = serde_json::from_str(&row["alerts_firing_at_end"]).unwrap();
        assert_eq!(firing, firing_at_end(&serde_json::from_str(text).unwrap()));
        // The curve ends at the run's best.
        let points: Vec<BTreeMap<String, Box<RawValue>>> =
            serde_json::from_str(&written(text, &["best_so_far"])["points"]).unwrap();
        assert_eq!(
            points.last().unwrap()["best_sharpe"].get(),
            row["best_sharpe"]
        );
        assert!(
            row["file"].contains(&*dir.to_string_lossy()),
            "{}",
            row["file"]
        );
    }
    assert_eq!(rows[0]["alerts_fired"], "0", "{:?}", rows[0]);
    assert!(
        rows[2]["alerts_fired"].parse::<u64>().unwrap() >= 1,
        "the collapsing search fired DiversityCollapse: {:?}",
        rows[2]
    );
    let best: Vec<&String> = rows.iter().map(|r| &r["best_sharpe"]).collect();
    assert!(
        best[0] != best[1] || best[1] != best[2],
        "three seeds, three searches: {best:?}"
    );

    // (2) The page in Chromium: three curves per chart it can draw, and the figures.
    let dom = chromium_dom(&page);
    for title in [
        "Best Sharpe so far by iteration",
        "Best Sharpe so far by wall time",
    ] {
        let panel = element(&dom, &format!("data-panel=\"{title}\""), "</section>");
        assert_eq!(
            attribute(panel, "data-panel", "data-curves"),
            "3",
            "{title}"
        );
        assert_eq!(panel.matches("<polyline class=\"run").count(), 3, "{title}");
        for json in &files {
            let run_id = json["summary"]["run_id"].as_str().unwrap();
            let line = format!("data-run=\"{run_id}\"");
            // One point per improvement and the run's end.
            let points = json["best_so_far"]["points"].as_array().unwrap().len() + 1;
            assert_eq!(
                attribute(panel, &line, "data-points"),
                points.to_string(),
                "{title}: {run_id}"
            );
        }
    }
    // Against spend: no run spent anything, and each is named as left out.
    let spend = element(
        &dom,
        "data-panel=\"Best Sharpe so far by LLM spend\"",
        "</section>",
    );
    assert_eq!(attribute(spend, "data-panel", "data-curves"), "0");
    assert_eq!(spend.matches("data-left-out=").count(), 3);
    let figures = element(&dom, "data-panel=\"Final figures\"", "</section>");
    for (json, text) in files.iter().zip(&texts) {
        let run_id = json["summary"]["run_id"].as_str().unwrap();
        let row = element(figures, &format!("<tr data-run=\"{run_id}\""), "</tr>");
        assert!(row.contains("seeds · evolve-seed-"), "labelled: {row}");
        let mut numbers = 0;
        for (field, expected) in expected_row(text) {
            // The numbers, each cell holding the file's to the last digit.
            if expected.parse::<f64>().is_err() || field == "run_id" {
                continue;
            }
            let shown = attribute(row, &format!("data-field=\"{field}\""), "data-value");
            assert_eq!(shown, expected, "{field} of {run_id} on the page");
            numbers += 1;
        }
        assert_eq!(numbers, 9, "every figure is on the page: {row}");
        let iterations = json["summary"]["iterations"].to_string();
        assert!(row.contains(&format!(">{iterations}</td>")), "shown: {row}");
    }
    assert!(
        !dom.contains("<script"),
        "no scripts: the page works offline"
    );

    // Without --output, without --json: compare.html in the current directory.
    let output = compare(root.path(), &[&dirs[0], &dirs[1], &dirs[2]]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let default = root.path().join("compare.html");
    assert!(String::from_utf8_lossy(&output.stdout)
        .contains(&format!("wrote {} (3 runs)", default.display())));
    assert_eq!(
        std::fs::read_to_string(default).unwrap(),
        std::fs::read_to_string(&page).unwrap(),
        "the same runs, the same page"
    );
}

/// A loop that pays for its LLM calls: `calls[i]` calls of `cost` before iteration
/// `i + 1`, whose best strategy scores `sharpe[i]`.
fn paying_loop(dir: &Path, name: &str, cost: f64, calls: &[u32], sharpe: &[f64]) {
    let monitor = loopwatch::Monitor::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .output_dir(dir)
        .experiment("llm")
        .loop_name(name)
        .build()
        .unwrap();
    for (n, s) in calls.iter().zip(sharpe) {
        for _ in 0..*n {
            monitor.llm_call(
                &loopwatch::llm::LlmCall::new("stand-in", Duration::from_millis(5))
                    .with_tokens(1000, 200)
                    .with_cost_usd(cost),
            );
        }
        let mut iteration = monitor.start_iteration();
        iteration.record_success(*s, 0.1);
        iteration.finish();
    }
    let report = monitor.shutdown();
    report.files.unwrap().json.unwrap();
}

#[test]
fn loops_that_pay_for_llm_calls_are_drawn_against_their_spend() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    paying_loop(&a, "cheap", 0.25, &[1, 2, 0, 3], &[0.5, 0.4, 1.5, 2.0]);
    paying_loop(&b, "dear", 1.5, &[2, 0, 1], &[1.0, 1.25, 0.75]);
    // The curve's points carry the spend when each improvement's iteration ended.
    let spend_at = |json: &Value| -> Vec<(u64, f64)> {
        json["best_so_far"]["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["iteration"].as_u64().unwrap(),
                    p["llm_cost_usd"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let (json_a, json_b) = (final_json(&a), final_json(&b));
    assert_eq!(spend_at(&json_a), [(1, 0.25), (3, 0.75), (4, 1.5)]);
    assert_eq!(spend_at(&json_b), [(1, 3.0), (2, 3.0)]);
    assert_eq!(json_b["summary"]["best_sharpe"], 1.25);

    let page = root.path().join("spend.html");
    let output = compare(
        root.path(),
        &[Path::new("--json"), Path::new("-o"), &page, &a, &b],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let rows = table_rows(&output.stdout);
    for (row, dir) in rows.iter().zip([&a, &b]) {
        for (field, expected) in expected_row(&final_text(dir)) {
            assert_eq!(row[field], expected, "{field}");
        }
        assert_eq!(row["alerts_firing_at_end"], "[]");
    }
    assert_eq!(rows[0]["llm_cost_usd"], "1.5");
    assert_eq!(rows[1]["llm_calls"], "3");
    let dom = chromium_dom(&page);
    let spend = element(
        &dom,
        "data-panel=\"Best Sharpe so far by LLM spend\"",
        "</section>",
    );
    assert_eq!(attribute(spend, "data-panel", "data-curves"), "2");
    assert_eq!(spend.matches("<polyline class=\"run").count(), 2);
    assert!(!spend.contains("data-left-out"));
    // The axis reads in dollars.
    assert!(
        spend.contains(">$1.00<") || spend.contains(">$2.00<"),
        "{spend}"
    );
}

#[test]
fn bad_input_is_refused_with_the_file_named_and_status_2() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let good = dir.join("good");
    std::fs::create_dir(&good).unwrap();
    paying_loop(&good, "good", 0.0, &[0, 0], &[0.5, 0.7]);
    let good_file = good.join(loopwatch::JSON_FINAL_FILE);
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let missing = dir.join("missing.json");
    let empty_dir = dir.join("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    let not_json = write("notes.txt", "best run: seed 2\n");
    let other_tool = write(
        "package.json",
        r#"{"name": "left-pad", "version": "1.3.0"}"#,
    );
    let truncated = write(
        "truncated.json",
        &std::fs::read_to_string(&good_file).unwrap()[..200],
    );
    let cases: [(&[&Path], &[&str]); 6] = [
        (&[&good, &missing], &["missing.json", "No such file"]),
        (&[&empty_dir], &["empty", "holds no metrics_final.json"]),
        (&[&not_json], &["notes.txt", "is not JSON"]),
        (
            &[&other_tool],
            &[
                "package.json",
                "not a metrics_final.json written by loopwatch",
                "loopwatch_version",
            ],
        ),
        (&[&truncated], &["truncated.json", "is not JSON"]),
        (
            &[&good, &good_file],
            &["same run", "good/metrics_final.json", "pass each run once"],
        ),
    ];
    for (args, said) in cases {
        let output = compare(dir, args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        for words in said {
            assert!(
                stderr.contains(words),
                "{args:?}: {stderr} should say {words}"
            );
        }
        assert!(!dir.join("compare.html").exists(), "no page for bad input");
    }
    // No run at all is clap's usage error, status 2 too.
    let output = compare(dir, &[]);
    assert_eq!(output.status.code(), Some(2));

    // A file from before the best-so-far curve: its row and a note, not an error.
    let mut old = final_json(&good);
    old.as_object_mut().unwrap().remove("best_so_far");
    old["summary"]
        .as_object_mut()
        .unwrap()
        .remove("best_sharpe");
    let old_file = write("old.json", &old.to_string());
    let output = compare(dir, &[Path::new("--json"), &old_file]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let table: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(table[0]["iterations"], 2);
    assert!(table[0]["best_sharpe"].is_null());
    let notes = table[0]["notes"].to_string();
    assert!(notes.contains("no best-so-far curve"), "{notes}");
    let output = compare(dir, &[&old_file]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let page = std::fs::read_to_string(dir.join("compare.html")).unwrap();
    assert!(page.contains("no best-so-far curve"));
    assert!(!page.contains("<polyline"));

    // A page that cannot be written: status 1, the path named.
    let output = compare(
        dir,
        &[
            Path::new("-o"),
            Path::new("/nonexistent/dir/page.html"),
            &good,
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/dir/page.html"));
}
