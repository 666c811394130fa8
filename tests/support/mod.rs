//! A small test framework of loopwatch's own: real HTTP on loopback, a Prometheus
//! text-format parser, and `promtool` as an independent judge of the exposition.
#![allow(dead_code, unreachable_pub)]

pub mod model_servers;
mod quiet;
pub mod services;

#[allow(unused_imports)] // not every test target builds one
pub use quiet::quiet_monitor;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loopwatch::Monitor;

/// The repository's root, whichever package's tests are running (the root package's
/// or `cli/`'s).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if manifest.join("prometheus").is_dir() {
        manifest
    } else {
        manifest
            .parent()
            .expect("cli/ sits in the repository")
            .to_path_buf()
    }
}

/// A monitor on a free loopback port writing into `dir`, with a fast sampler.
pub fn monitor_in(dir: &Path) -> Monitor {
    Monitor::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .output_dir(dir)
        .sample_interval(Duration::from_millis(50))
        .build()
        .expect("monitor starts")
}

/// An HTTP response as read off the socket.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

/// Sends raw bytes as a request and reads the whole response (the server closes).
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect::<BTreeMap<_, _>>();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// `GET path` over a fresh connection.
pub fn http_get(addr: SocketAddr, path: &str) -> Response {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    http_raw(addr, request.as_bytes()).expect("HTTP request succeeds")
}

/// Scrapes `/metrics`, asserting a 200.
pub fn scrape(addr: SocketAddr) -> String {
    let response = http_get(addr, "/metrics");
    assert_eq!(response.status, 200, "scrape failed: {}", response.body);
    response.body
}

/// One metric family of a parsed exposition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Family {
    pub help: Option<String>,
    pub kind: Option<String>,
    pub samples: Vec<(BTreeMap<String, String>, f64)>,
}

impl Family {
    /// The value of the series without labels (or the only series).
    pub fn value(&self) -> f64 {
        assert_eq!(self.samples.len(), 1, "expected one series: {self:?}");
        self.samples[0].1
    }

    /// The value of the series carrying every given label.
    pub fn value_with(&self, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(l, _)| {
                labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, v)| *v)
    }
}

/// A parsed Prometheus text exposition.
pub type Exposition = BTreeMap<String, Family>;

fn unescape(value: &str, quotes: bool) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('\\') => out.push('\\'),
                Some('"') if quotes => out.push('"'),
                Some(other) => {
                    out.push('\\');
                    out.push(other)
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        other => other
            .parse()
            .map_err(|e| format!("bad value {other:?}: {e}")),
    }
}

/// Parses `name{a="b",c="d"} value` label sets, honouring escapes.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after) = rest
            .split_once("=\"")
            .ok_or_else(|| format!("bad label in {text:?}"))?;
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end.ok_or_else(|| format!("unterminated label value in {text:?}"))?;
        labels.insert(name.to_string(), unescape(&after[..end], true));
        rest = &after[end + 1..];
    }
}

/// Parses an exposition strictly: any line it does not understand is an error.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut families = Exposition::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            families.entry(name.to_string()).or_default().help = Some(unescape(help, false));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| format!("bad TYPE: {line}"))?;
            families.entry(name.to_string()).or_default().kind = Some(kind.to_string());
        } else if line.starts_with('#') {
            continue;
        } else {
            let name_end = line
                .find(['{', ' '])
                .ok_or_else(|| format!("bad sample: {line}"))?;
            let name = &line[..name_end];
            let (labels, rest) = if line[name_end..].starts_with('{') {
                parse_labels(&line[name_end + 1..])?
            } else {
                (BTreeMap::new(), &line[name_end..])
            };
            let value = rest
                .split_whitespace()
                .next()
                .ok_or_else(|| format!("no value: {line}"))?;
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|s| name.strip_suffix(s))
                .find(|base| {
                    families.get(*base).and_then(|f| f.kind.as_deref()) == Some("histogram")
                })
                .unwrap_or(name)
                .to_string();
            families
                .entry(family)
                .or_default()
                .samples
                .push((labels, parse_value(value)?));
        }
    }
    Ok(families)
}

/// Runs `promtool check metrics` on the text; returns its verdict and output.
pub fn promtool_check_metrics(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/test installs the Debian package `prometheus`)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let mut report = String::from_utf8_lossy(&output.stdout).into_owned();
    report.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), report)
}

/// promtool lint findings that are accepted: the names are fixed by the exported
/// contract (`unique_strategy_count` is a gauge that ends in `_count`).
pub const ACCEPTED_LINT: &[&str] = &[
    r#"unique_strategy_count non-histogram and non-summary metrics should not have "_count" suffix"#,
];

/// Asserts that `promtool check metrics` finds nothing wrong beyond [`ACCEPTED_LINT`].
pub fn assert_promtool_accepts(text: &str) {
    let (ok, report) = promtool_check_metrics(text);
    if ok {
        return;
    }
    let unexpected: Vec<&str> = report
        .lines()
        .filter(|line| !line.trim().is_empty() && !ACCEPTED_LINT.contains(&line.trim()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "promtool check metrics rejected the exposition:\n{report}\n--- exposition ---\n{text}"
    );
}

/// Asserts the exposition parses strictly and every family has `# HELP` and `# TYPE`:
/// the in-process judge; `tests/promtool.rs` has promtool judge the same kinds of text.
pub fn assert_well_formed(text: &str) -> Exposition {
    let exposition = parse(text).unwrap_or_else(|e| panic!("{e}\n--- exposition ---\n{text}"));
    for (name, family) in &exposition {
        assert!(family.help.is_some(), "{name} has no HELP");
        assert!(family.kind.is_some(), "{name} has no TYPE");
    }
    exposition
}

/// Waits until `condition` holds, polling; panics with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed and reaped when dropped, pass or fail. A test holds what an
/// observer (Prometheus, Alertmanager, Chromium, the test itself) waits for open until
/// the observation is made and then ends it; this guard ends it on a failure too, so a
/// loop that runs until stopped never outlives its test.
pub struct Stopped(pub std::process::Child);

impl Stopped {
    /// Sends SIGTERM (a clean stop, for a loop that handles it) and waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "SIGTERM to {}", self.0.id());
        self.0.wait().unwrap()
    }
}

impl std::ops::Deref for Stopped {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Stopped {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Path of a compiled example binary (`cargo test` builds them; `cargo test
/// --all-targets` does not, which is why scripts/test runs `cargo build --examples`).
pub fn example_path(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().unwrap();
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "example {name} not built at {}; run `cargo build --examples` first",
        path.display()
    );
    path
}

/// One chart of the embedded page, as served: what it says of itself and draws.
#[derive(Debug, Clone)]
pub struct PageChart {
    /// Its `data-axis`: `time` or `iteration`.
    pub axis: String,
    /// Its `data-points`: the points of its lines.
    pub points: usize,
    /// The points of each line drawn (`<polyline points="…">`), in order.
    pub lines: Vec<usize>,
    /// The labels of its x axis, left to right.
    pub x_labels: Vec<String>,
    /// Its markup, from its `data-series` to the end of its SVG.
    pub markup: String,
}

/// The chart titled `title` on the page `body` (served by `GET /` or dumped by
/// Chromium), if there is one.
pub fn page_chart(body: &str, title: &str) -> Option<PageChart> {
    let start = body.find(&format!("data-series=\"{title}\""))?;
    let rest = &body[start..];
    let markup = &rest[..rest.find("</svg>")?];
    let attribute = |name: &str| -> Option<String> {
        let at = markup.find(&format!("{name}=\""))? + name.len() + 2;
        Some(markup[at..at + markup[at..].find('"')?].to_string())
    };
    let between = |open: &str, close: &str| -> Vec<String> {
        markup
            .split(open)
            .skip(1)
            .filter_map(|part| Some(part[..part.find(close)?].to_string()))
            .collect()
    };
    Some(PageChart {
        axis: attribute("data-axis")?,
        points: attribute("data-points")?.parse().ok()?,
        lines: between("<polyline", ">")
            .iter()
            .filter_map(|tag| {
                let at = tag.find("points=\"")? + "points=\"".len();
                Some(
                    tag[at..at + tag[at..].find('"')?]
                        .split_whitespace()
                        .count(),
                )
            })
            .collect(),
        x_labels: between("class=\"axis axis-x\"", "</text>")
            .iter()
            .filter_map(|tag| Some(tag[tag.find('>')? + 1..].to_string()))
            .collect(),
        markup: markup.to_string(),
    })
}

/// Whether `label` reads as a time since the start on a page's axis: `0s`, `30s`,
/// `1m30s`, `2h`, `1d6h`.
pub fn is_time_label(label: &str) -> bool {
    let mut digits = false;
    let mut units = 0;
    for c in label.chars() {
        match c {
            '0'..='9' => digits = true,
            'd' | 'h' | 'm' | 's' if digits => {
                digits = false;
                units += 1;
            }
            _ => return false,
        }
    }
    !digits && units > 0
}

/// The DOM headless Chromium renders for `url` (`chromium` on PATH: `scripts/test`
/// installs Debian's).
pub fn chromium_dom(url: &str) -> String {
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
        .arg(url)
        .stderr(Stdio::null())
        .output()
        .expect("chromium is installed (scripts/test installs Debian's chromium)");
    assert!(output.status.success(), "chromium --dump-dom failed");
    String::from_utf8(output.stdout).unwrap()
}

pub mod nvml_standin;
