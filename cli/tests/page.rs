//! The page of a loop that reports nothing: `loopwatch run` of a plain command still
//! serves its memory and CPU, sampled from the command's process tree, on a time axis;
//! and progress per dollar, the best Sharpe so far against the LLM spend with the
//! champion's changes marked, point for point the run's figures. Checked over HTTP
//! and in headless Chromium.

mod support;

use std::ffi::OsString;
use std::time::Duration;

use support::*;

/// `loopwatch run -- sh -c '…'` of a command that never reports an iteration and
/// runs until the test has seen its page: the Resource Usage panel draws memory and
/// CPU against the time since the start, in the served page and as Chromium renders
/// it; then the command ends and `loopwatch run` exits with it.
#[test]
fn a_plain_command_shows_memory_and_cpu_on_a_time_axis() {
    let dir = tempfile::tempdir().unwrap();
    let stop = dir.path().join("stop");
    // Alive until the test creates `stop`.
    let script = format!("while [ ! -e '{}' ]; do sleep 0.05; done", stop.display());
    let launch = Launch {
        env: vec![("LOOPWATCH_SAMPLE_INTERVAL".into(), "100ms".into())],
        ..Launch::default()
    };
    let command: Vec<OsString> = ["sh", "-c", &script].iter().map(OsString::from).collect();
    let mut run = Supervised::launch(dir.path(), &launch, &[], &command);
    run.wait_serving();
    let mut page = String::new();
    wait_until(Duration::from_secs(60), "three samples on the page", || {
        page = http_get(run.addr, "/").body;
        page_chart(&page, "memory usage").is_some_and(|c| c.points >= 3)
            && page_chart(&page, "CPU usage").is_some_and(|c| c.points >= 3)
    });
    let served = |page: &str, title: &str| {
        let chart = page_chart(page, title)
            .unwrap_or_else(|| panic!("no {title} chart; log:\n{}", run.log()));
        assert_eq!(chart.axis, "time", "{title}: {}", chart.markup);
        assert_eq!(chart.lines.len(), 1, "{title}: {}", chart.markup);
        assert!(chart.lines[0] >= 3, "{title}: a line: {chart:?}");
        assert!(
            chart.x_labels.len() >= 2 && chart.x_labels.iter().all(|l| is_time_label(l)),
            "{title}: a time axis: {:?}",
            chart.x_labels
        );
        chart
    };
    served(&page, "memory usage");
    served(&page, "CPU usage");
    let resources = &page[page.find("data-panel=\"Resource Usage\"").unwrap()..];
    assert!(
        !resources[..resources.find("</section>").unwrap()].contains("no data yet"),
        "memory and CPU are drawn"
    );
    // What the line draws is the command's tree: its memory, sampled.
    let json: serde_json::Value =
        serde_json::from_str(&http_get(run.addr, "/api/v1/snapshot").body).unwrap();
    assert_eq!(json["summary"]["iterations"], 0);
    let samples = json["samples"].as_array().unwrap();
    assert!(samples.len() >= 3, "{samples:?}");
    assert!(
        samples
            .iter()
            .any(|s| s["memory_usage_bytes"].as_f64().is_some_and(|m| m > 0.0)),
        "the command's memory: {samples:?}"
    );

    // As a browser renders it.
    let dom = chromium_dom(&format!("http://{}/", run.addr));
    served(&dom, "memory usage");
    served(&dom, "CPU usage");
    assert!(
        dom.contains("no iterations yet"),
        "time per iteration waits"
    );

    // Seen: the command ends, and `loopwatch run` with it.
    std::fs::write(&stop, b"").unwrap();
    let status = run.wait(Duration::from_secs(60));
    assert!(status.success(), "{status:?}; log:\n{}", run.log());
    assert_eq!(run.final_json()["summary"]["iterations"], 0);
}

/// The attribute `name` of each tag `tag` in `markup` that has it, in order.
fn attributes(markup: &str, tag: &str, name: &str) -> Vec<String> {
    markup
        .split(&format!("<{tag} "))
        .skip(1)
        .filter_map(|rest| {
            let tag = &rest[..rest.find('>')?];
            let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
            Some(tag[at..at + tag[at..].find('"')?].to_string())
        })
        .collect()
}

fn numbers(values: &[String]) -> Vec<f64> {
    values.iter().map(|v| v.parse().unwrap()).collect()
}

/// The same number, as written on the page and as serde_json reads it back from the
/// JSON (its default parser may land one unit in the last place away).
fn same(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 2.0 * f64::EPSILON * a.abs().max(b.abs())
}

/// The same points, each coordinate [`same`].
fn same_points<T: PartialEq + std::fmt::Debug>(a: &[(f64, T)], b: &[(f64, T)]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same(a.0, b.0) && a.1 == b.1)
}

/// What a chart by spend draws: its points (x, y) and its champion marks (x, iteration).
type SpendFigures = (Vec<(f64, f64)>, Vec<(f64, u64)>);

/// The x and y of each point of the step line (its hover dots: every point when there
/// are fewer than thirty), and the x and iteration of each champion mark.
fn spend_chart_figures(markup: &str) -> SpendFigures {
    let xs = numbers(&attributes(markup, "circle", "data-x"));
    let ys = numbers(&attributes(markup, "circle", "data-y"));
    assert_eq!(xs.len(), ys.len(), "{markup}");
    let marks_x = numbers(&attributes(markup, "line", "data-x"));
    let marks_iteration = attributes(markup, "line", "data-iteration");
    assert_eq!(marks_x.len(), marks_iteration.len(), "{markup}");
    (
        xs.into_iter().zip(ys).collect(),
        marks_x
            .into_iter()
            .zip(marks_iteration.iter().map(|i| i.parse().unwrap()))
            .collect(),
    )
}

/// Progress per dollar on the page: a loop whose LLM calls cost a known amount before
/// each iteration, whose best Sharpe improves now and then and whose champion changes
/// three times. The chart "best Sharpe so far by LLM spend" (only once a call was
/// made) draws one step per improvement at the spend when its iteration ended, held
/// to the spend now, and marks each champion change at the spend when it came: every
/// point and mark equal to the run's figures in `/api/v1/snapshot` and, after the
/// shutdown, in `metrics_final.json`; the spend per champion change is the summary's.
/// The same as Chromium renders it.
#[test]
fn progress_per_dollar_is_drawn_point_for_point_from_the_runs_figures() {
    use loopwatch::llm::LlmCall;
    use loopwatch::Population;
    use serde_json::Value;

    const TITLE: &str = "best Sharpe so far by LLM spend";
    let dir = tempfile::tempdir().unwrap();
    let monitor = monitor_in(dir.path());
    let iterate = |sharpe: f64, champion: &str| {
        let mut it = monitor.start_iteration();
        it.record_success(sharpe, 0.1);
        it.record_success(sharpe - 0.5, 0.2);
        it.record_population(Population::new(4, 4, 0.5).with_champion(champion));
        it.finish();
    };
    // Before any call: no LLM panel, so no chart by spend.
    iterate(0.1, "a");
    let page = http_get(monitor.local_addr(), "/").body;
    assert!(page_chart(&page, TITLE).is_none(), "no calls, no chart");
    // Each iteration after a call of its own; improvements in iterations 2, 3, 5, 7
    // (not 4 nor 6, which only equal or fall short of the best).
    let runs = [
        (0.5, "a", 0.013),
        (0.75, "a", 0.02),
        (0.75, "b", 0.007),
        (1.25, "b", 0.031),
        (1.0, "c", 0.004),
        (1.5, "d", 0.0111),
    ];
    for (sharpe, champion, cost) in runs {
        monitor.llm_call(
            &LlmCall::new("m", Duration::from_millis(300))
                .with_tokens(100, 20)
                .with_cost_usd(cost),
        );
        iterate(sharpe, champion);
    }
    let addr = monitor.local_addr();
    let page = http_get(addr, "/").body;
    let snapshot: Value = serde_json::from_str(&http_get(addr, "/api/v1/snapshot").body).unwrap();
    // What the run's figures say the chart must hold.
    let expected = |json: &Value| {
        let progress = &json["best_so_far"];
        let mut points: Vec<(f64, f64)> = progress["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["llm_cost_usd"].as_f64().unwrap(),
                    p["best_sharpe"].as_f64().unwrap(),
                )
            })
            .collect();
        points.push((
            json["summary"]["llm"]["cost_usd"].as_f64().unwrap(),
            json["summary"]["best_sharpe"].as_f64().unwrap(),
        ));
        let marks: Vec<(f64, u64)> = progress["champion_changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["llm_cost_usd"].as_f64().unwrap(),
                    m["iteration"].as_u64().unwrap(),
                )
            })
            .collect();
        (points, marks)
    };
    let (points, marks) = expected(&snapshot);
    // The figures themselves: five improvements (the first at no spend), the run's end,
    // four champions (a, then b, c, d), each at the spend then.
    let spent = [0.013, 0.02, 0.007, 0.031, 0.004, 0.0111];
    let spend_after = |n: usize| spent[..n].iter().sum::<f64>();
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    let figures = [
        (0.0, 0.1),
        (spend_after(1), 0.5),
        (spend_after(2), 0.75),
        (spend_after(4), 1.25),
        (spend_after(6), 1.5),
        (spend_after(6), 1.5),
    ];
    assert_eq!(points.len(), figures.len(), "{points:?}");
    for (got, want) in points.iter().zip(figures) {
        assert!(close(got.0, want.0) && got.1 == want.1, "{points:?}");
    }
    let iterations: Vec<u64> = marks.iter().map(|m| m.1).collect();
    assert_eq!(iterations, [1, 4, 6, 7], "{marks:?}");
    assert!(marks
        .iter()
        .zip([0.0, spend_after(3), spend_after(5), spend_after(6)])
        .all(|(m, s)| close(m.0, s)));

    let check = |page: &str, json: &Value| {
        let (points, marks) = expected(json);
        let chart = page_chart(page, TITLE).unwrap_or_else(|| panic!("no {TITLE} chart:\n{page}"));
        assert_eq!(chart.axis, "spend", "{}", chart.markup);
        assert_eq!(chart.points, points.len(), "{}", chart.markup);
        assert_eq!(
            chart.lines,
            [2 * points.len() - 1],
            "one step per point: {}",
            chart.markup
        );
        assert!(
            chart.x_labels.len() >= 2 && chart.x_labels.iter().all(|l| l.starts_with('$')),
            "dollars on the x axis: {:?}",
            chart.x_labels
        );
        let (drawn, marked) = spend_chart_figures(&chart.markup);
        let drawn: Vec<(f64, u64)> = drawn.iter().map(|p| (p.0, p.1.to_bits())).collect();
        let points: Vec<(f64, u64)> = points.iter().map(|p| (p.0, p.1.to_bits())).collect();
        assert!(
            same_points(&drawn, &points),
            "the chart's points are the run's: {drawn:?} != {points:?}"
        );
        assert!(
            same_points(&marked, &marks),
            "the champion's changes, at the spend then: {marked:?} != {marks:?}"
        );
        // The spend per champion change, as the summary has it.
        let per_change = json["summary"]["llm"]["spend_per_champion_change_usd"]
            .as_f64()
            .unwrap();
        let panel = &page[page.find("data-panel=\"LLM calls\"").unwrap()..];
        let shown: f64 = panel[panel.find("data-spend-per-champion-change=\"").unwrap() + 32..]
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(same(shown, per_change), "{shown} != {per_change}");
        assert!(panel.contains(&format!("per champion change ${per_change:.4}")));
    };
    check(&page, &snapshot);
    assert!(close(
        snapshot["summary"]["llm"]["spend_per_champion_change_usd"]
            .as_f64()
            .unwrap(),
        spend_after(6) / 4.0
    ));

    // The best so far is exported too, for the dashboard's chart by spend.
    let exposition = http_get(addr, "/metrics").body;
    let best = exposition
        .lines()
        .find_map(|l| l.strip_prefix("loopwatch_best_sharpe "))
        .unwrap_or_else(|| panic!("no loopwatch_best_sharpe:\n{exposition}"));
    assert_eq!(best.parse::<f64>().unwrap(), 1.5);

    // As a browser renders it.
    let dom = chromium_dom(&format!("http://{addr}/"));
    check(&dom, &snapshot);

    // The final file keeps the same record.
    monitor.shutdown();
    let final_json: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("metrics_final.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(expected(&final_json), expected(&snapshot));
    assert_eq!(final_json["best_so_far"]["champion_changes_dropped"], 0);
}
