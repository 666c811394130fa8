//! The main job, run as a real process: the evolve example with loopwatch on its
//! embedded default, its dashboard in headless Chromium, and each alert scenario.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use support::services::Alertmanager;
use support::*;

/// A running evolve process with its output lines streamed to channels.
struct Evolve {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
    stdout_seen: Vec<String>,
}

fn stream(reader: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Evolve {
    fn start(dir: &Path, args: &[&str]) -> Evolve {
        let mut child = Command::new(example_path("evolve"))
            .args(args)
            .env("LOOPWATCH_LISTEN", "127.0.0.1:0")
            .env("LOOPWATCH_OUTPUT_DIR", dir)
            .env("LOOPWATCH_SAMPLE_INTERVAL", "100ms")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = stream(child.stdout.take().unwrap());
        let stderr = stream(child.stderr.take().unwrap());
        Evolve {
            child,
            stdout,
            stderr,
            stderr_seen: Vec::new(),
            stdout_seen: Vec::new(),
        }
    }

    /// Reads stderr until a line contains `needle`; returns that line.
    fn stderr_until(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.stderr_seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no {needle:?} on stderr; saw:\n{}",
                    self.stderr_seen.join("\n")
                ),
            }
        }
    }

    /// Reads stdout until a line starts with `prefix`; returns that line.
    fn stdout_until(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    self.stdout_seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no {prefix:?} on stdout; saw:\n{}",
                    self.stdout_seen.join("\n")
                ),
            }
        }
    }

    /// The endpoint's address, from the "dashboard: http://…/" line.
    fn addr(&mut self) -> SocketAddr {
        let line = self.stderr_until("dashboard: http://", Duration::from_secs(60));
        let rest = line.split("dashboard: http://").nth(1).unwrap();
        rest.split('/').next().unwrap().parse().unwrap()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.wait()
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        let status = self.child.wait().unwrap();
        // Drain what is left of stdout.
        while let Ok(line) = self.stdout.recv_timeout(Duration::from_secs(2)) {
            self.stdout_seen.push(line);
        }
        status
    }
}

impl Drop for Evolve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SMALL: [&str; 6] = ["--population", "24", "--resamples", "4", "--window", "400"];

/// Runs headless Chromium on the page: (dumped DOM, screenshot path).
fn chromium(url: &str, screenshot: &Path) -> String {
    chromium_at(url, screenshot, 1000, 1250)
}

/// Headless Chromium at a given window size: (dumped DOM), screenshot written.
fn chromium_at(url: &str, screenshot: &Path, width: u32, height: u32) -> String {
    let profile = tempfile::tempdir().unwrap();
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ];
    let size = format!("--window-size={width},{height}");
    let run = |extra: &[String]| {
        Command::new("chromium")
            .args(common)
            .arg(&size)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(url)
            .stderr(Stdio::null())
            .output()
            .expect("chromium is installed (scripts/test installs Debian's chromium)")
    };
    let shot = run(&[format!("--screenshot={}", screenshot.display())]);
    assert!(shot.status.success(), "chromium --screenshot failed");
    let dom = run(&["--dump-dom".to_string()]);
    assert!(dom.status.success(), "chromium --dump-dom failed");
    String::from_utf8(dom.stdout).unwrap()
}

#[test]
fn thirty_generations_serve_metrics_and_dashboard_and_export_what_was_printed() {
    let dir = tempfile::tempdir().unwrap();
    // Serving after the search until the test has read it and ends it.
    let mut args = vec!["--iterations", "30", "--linger", "forever"];
    args.extend(SMALL);
    let mut evolve = Evolve::start(dir.path(), &args);
    let addr = evolve.addr();
    let last = evolve.stdout_until("gen   30 |", Duration::from_secs(120));
    let champion_line = evolve.stdout_until("champion: ", Duration::from_secs(10));
    let champion = champion_line
        .strip_prefix("champion: ")
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let staleness: u64 = last
        .split("stale")
        .nth(1)
        .unwrap()
        .split('|')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // While it lingers: /metrics holds the run, / shows four panels with data.
    let metrics = parse(&scrape(addr)).unwrap();
    assert_eq!(metrics["iteration_number"].value(), 30.0);
    assert_eq!(
        metrics["champion_staleness_iterations"].value(),
        staleness as f64
    );
    assert_promtool_accepts(&scrape(addr));
    let page = http_get(addr, "/");
    assert_eq!(page.status, 200);
    assert!(page.headers["content-type"].starts_with("text/html"));
    // The four panels of the Grafana dashboard, failure reasons and the alert timeline.
    assert_eq!(page.body.matches("<section class=\"panel\"").count(), 6);
    let escaped = champion
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    assert!(
        page.body.contains(&escaped),
        "the champion {champion} is shown"
    );

    let screenshot = dir.path().join("dashboard.png");
    let dom = chromium(&format!("http://{addr}/"), &screenshot);
    for panel in [
        "Resource Usage",
        "Strategy Performance",
        "Diversity Metrics",
        "Container Stats",
    ] {
        let marker = format!("data-panel=\"{panel}\" data-points=\"");
        let points: usize = dom
            .split(&marker)
            .nth(1)
            .unwrap_or_else(|| panic!("panel {panel} missing from the DOM"))
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(points >= 30, "{panel} shows {points} points");
    }
    let png = std::fs::read(&screenshot).unwrap();
    assert!(
        png.len() > 10_000 && png.starts_with(b"\x89PNG"),
        "a real screenshot"
    );

    // Ctrl-C (SIGTERM) ends the linger; the final files match what was printed.
    let status = evolve.terminate();
    assert!(status.success(), "{status:?}");
    let json: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("metrics_final.json")).unwrap())
            .unwrap();
    assert_eq!(json["summary"]["iterations"], 30);
    assert_eq!(json["summary"]["champion"], champion.as_str());
    assert!(dir.path().join("prometheus_metrics_final.txt").exists());
    assert!(evolve
        .stdout_seen
        .iter()
        .any(|l| l.starts_with("final summary: ") && l.ends_with("metrics_final.json")));
}

#[test]
fn the_page_reads_at_desktop_and_phone_widths_during_alert_scenarios() {
    for (scenario, alert, reason) in [
        ("diversity-collapse", "DiversityCollapse", "data-reason="),
        (
            "low-success",
            "LowSuccessRate",
            "data-reason=\"too few trades\"",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec![
            "--scenario",
            scenario,
            "--iterations",
            "30",
            "--linger",
            "forever",
        ];
        args.extend(SMALL);
        let mut evolve = Evolve::start(dir.path(), &args);
        let addr = evolve.addr();
        evolve.stdout_until("generations:", Duration::from_secs(120));
        for (width, height) in [(1280, 1600), (390, 3000)] {
            let shot = dir.path().join(format!("{scenario}-{width}.png"));
            let dom = chromium_at(&format!("http://{addr}/"), &shot, width, height);
            assert!(
                dom.contains("class=\"axis axis-x\""),
                "{scenario} at {width}: an iteration axis"
            );
            assert!(
                dom.contains(reason),
                "{scenario} at {width}: failure reasons as bars"
            );
            assert!(
                dom.contains(&format!("data-lane=\"{alert}\" data-intervals=\"1\"")),
                "{scenario} at {width}: the alert's lane shows its interval"
            );
            assert!(
                dom.contains(&format!("data-alert=\"{alert}\"")),
                "listed as firing"
            );
            let png = std::fs::read(&shot).unwrap();
            assert!(
                png.len() > 10_000 && png.starts_with(b"\x89PNG"),
                "a real screenshot"
            );
        }
        evolve.terminate();
    }
}

#[test]
fn each_scenario_makes_its_alert_fire() {
    let cases = [
        ("diversity-collapse", "12", "Diversity collapse detected"),
        ("stale-champion", "24", "Champion staleness detected"),
        ("low-success", "12", "Low success rate detected"),
        ("memory-leak", "30", "High memory usage detected"),
    ];
    for (scenario, iterations, message) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec![
            "--scenario",
            scenario,
            "--iterations",
            iterations,
            "--linger",
            "forever",
        ];
        args.extend(SMALL);
        let mut evolve = Evolve::start(dir.path(), &args);
        let line = evolve.stderr_until(message, Duration::from_secs(120));
        assert!(line.contains("WARN"), "{scenario}: {line}");
        assert!(line.contains("threshold="), "{scenario}: {line}");
        evolve.terminate();
    }
}

#[test]
fn a_hung_evaluation_shows_loop_stalled_within_fifteen_seconds_and_ctrl_c_still_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let am = Alertmanager::start();
    let mut args = vec!["--scenario", "hang", "--alertmanager"];
    let url = am.url();
    args.push(&url);
    args.extend(SMALL);
    let mut evolve = Evolve::start(dir.path(), &args);
    let addr = evolve.addr();
    evolve.stderr_until(
        "a back-test of generation 10 never returns",
        Duration::from_secs(120),
    );
    let hung = std::time::Instant::now();
    wait_until(
        Duration::from_secs(15),
        "LoopStalled at Alertmanager",
        || am.alert("LoopStalled").is_some(),
    );
    println!(
        "hang scenario: LoopStalled at Alertmanager {:?} after the hang",
        hung.elapsed()
    );
    let page = http_get(addr, "/");
    assert!(
        page.body.contains("data-alert=\"LoopStalled\""),
        "the dashboard lists it"
    );
    assert!(hung.elapsed() < Duration::from_secs(15));
    // One Ctrl-C stops a stalled loop: the final files are written, status 130.
    Command::new("kill")
        .args(["-INT", &evolve.child.id().to_string()])
        .status()
        .unwrap();
    let status = evolve.wait();
    assert_eq!(status.code(), Some(130), "{status:?}");
    let json: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("metrics_final.json")).unwrap())
            .unwrap();
    assert_eq!(json["summary"]["iterations"], 9);
    assert!(dir.path().join("prometheus_metrics_final.txt").exists());
}

#[test]
fn a_malformed_price_file_is_a_clear_error_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("prices.csv");
    let mut text = String::from("date,open,high,low,close,volume\n");
    for day in 0..400 {
        if day == 7 {
            text.push_str("2020-01-08,1,1,1,n/a,100\n");
        } else {
            text.push_str(&format!(
                "2020-01-{day},1,1,1,{},100\n",
                100.0 + day as f64 * 0.1
            ));
        }
    }
    std::fs::write(&csv, text).unwrap();
    let output = Command::new(example_path("evolve"))
        .args(["--prices", csv.to_str().unwrap(), "--no-monitor"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 9"), "{stderr}");
    assert!(stderr.contains("\"n/a\" is not a number"), "{stderr}");
}

#[test]
fn real_ohlc_data_and_the_unmonitored_baseline_run() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("prices.csv");
    let mut text = String::from("Date,Open,High,Low,Close,Adj Close,Volume\n");
    let mut price = 50.0f64;
    for day in 0..500 {
        price *= 1.0 + 0.01 * ((day as f64 * 0.7).sin() + 0.2 * (day as f64 * 3.1).cos());
        text.push_str(&format!("d{day},{p},{p},{p},{p},{p},1000\n", p = price));
    }
    std::fs::write(&csv, text).unwrap();
    let output = Command::new(example_path("evolve"))
        .args([
            "--prices",
            csv.to_str().unwrap(),
            "--no-monitor",
            "--iterations",
            "5",
        ])
        .args(SMALL)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("generations: 5"), "{stdout}");
    assert!(
        !stdout.contains("final summary"),
        "no monitor, no export: {stdout}"
    );
}
