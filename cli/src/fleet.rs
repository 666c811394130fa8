//! The loops on this host: `loopwatch ps` lists them, `loopwatch fleet` serves a page of
//! them. Both read the registration files of a directory (`--register DIR`, the
//! file_sd targets each loop writes) and ask each loop's endpoint for its snapshot.
//!
//! A registration file is named after its owner process and port (`loopwatch-<pid>-
//! <start time>-<port>.json`); one whose owner is gone is reported as such (the next loop registered
//! there removes it), and a loop that does not answer is listed without its state.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

/// How long a loop's endpoint may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest snapshot read from a loop.
const MAX_SNAPSHOT_BYTES: u64 = 16 * 1024 * 1024;

/// One registered loop, as its file and its endpoint describe it.
#[derive(Debug, Clone, Serialize)]
pub struct LoopEntry {
    /// The registration file.
    pub file: PathBuf,
    /// The owner process's pid, from the file's name.
    pub pid: Option<u32>,
    /// Whether the owner process is alive.
    pub alive: bool,
    /// The `host:port` Prometheus scrapes.
    pub endpoint: Option<String>,
    /// The run id, from the file's labels.
    pub run_id: Option<String>,
    /// The experiment, when the loop names one.
    pub experiment: Option<String>,
    /// The loop's name, when it has one.
    #[serde(rename = "loop")]
    pub loop_name: Option<String>,
    /// What the loop's snapshot says, when it answered.
    pub state: Option<LoopState>,
    /// Why there is no state: the owner is gone, the file is unreadable, the endpoint
    /// did not answer.
    pub problem: Option<String>,
}

/// A running loop's state, from its `/api/v1/snapshot`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LoopState {
    /// The last completed iteration.
    pub iteration: u64,
    /// Iterations per second over the last minute of history (else the whole run).
    pub iterations_per_second: Option<f64>,
    /// Strategies that succeeded over the whole run.
    pub success_rate: Option<f64>,
    /// The alerts firing now.
    pub alerts_firing: Vec<String>,
    /// Seconds since the loop's monitor started.
    pub uptime_seconds: f64,
    /// LLM spend so far, when the loop makes metered LLM calls.
    pub llm_spend_usd: Option<f64>,
}

/// Reads every registration file of `dir` and asks each live loop for its state, in
/// file-name order. An unreadable directory is an error.
pub fn list(dir: &Path) -> std::io::Result<Vec<LoopEntry>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    files.sort();
    let mut processes = loopwatch::cleanup::LiveProcesses::new();
    Ok(files
        .into_iter()
        .map(|file| entry(file, processes.as_mut()))
        .collect())
}

fn entry(file: PathBuf, processes: Option<&mut loopwatch::cleanup::LiveProcesses>) -> LoopEntry {
    let owner = file
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(loopwatch::cleanup::Owner::from_file_stem);
    let alive = match (&owner, processes) {
        (Some(owner), Some(processes)) => owner.is_alive(processes),
        _ => false,
    };
    let mut entry = LoopEntry {
        file: file.clone(),
        pid: owner.as_ref().map(|o| o.pid),
        alive,
        endpoint: None,
        run_id: None,
        experiment: None,
        loop_name: None,
        state: None,
        problem: None,
    };
    let group = std::fs::read_to_string(&file)
        .map_err(|e| e.to_string())
        .and_then(|text| {
            serde_json::from_str::<serde_json::Value>(&text).map_err(|e| e.to_string())
        });
    let group = match group {
        Ok(group) => group,
        Err(e) => {
            entry.problem = Some(format!("unreadable registration: {e}"));
            return entry;
        }
    };
    let target = &group[0];
    entry.endpoint = target["targets"][0].as_str().map(str::to_string);
    let label = |name: &str| target["labels"][name].as_str().map(str::to_string);
    entry.run_id = label("loopwatch_run_id");
    entry.experiment = label("experiment");
    entry.loop_name = label("loop");
    if !alive {
        entry.problem =
            Some("its process is gone; the next loop registered here removes the file".into());
        return entry;
    }
    match entry.endpoint.as_deref().map(ask) {
        Some(Ok(snapshot)) => entry.state = Some(state_of(&snapshot)),
        Some(Err(e)) => entry.problem = Some(format!("the endpoint did not answer: {e}")),
        None => entry.problem = Some("the registration names no endpoint".into()),
    }
    entry
}

/// A loop's state from its snapshot.
fn state_of(snapshot: &serde_json::Value) -> LoopState {
    let summary = &snapshot["summary"];
    let history = snapshot["history"].as_array().cloned().unwrap_or_default();
    let uptime = summary["elapsed_seconds"].as_f64().unwrap_or(0.0);
    let iteration = summary["iterations"].as_u64().unwrap_or(0);
    // The rate over the last minute of history, else over the whole run.
    let recent = history.last().and_then(|last| {
        let at = last["at"].as_f64()?;
        let first = history
            .iter()
            .find(|p| p["at"].as_f64().is_some_and(|t| at - t <= 60.0))?;
        let span = at - first["at"].as_f64()?;
        let done = last["iteration"].as_u64()? - first["iteration"].as_u64()?;
        (span > 0.0).then(|| done as f64 / span)
    });
    LoopState {
        iteration,
        iterations_per_second: recent
            .or_else(|| (uptime > 0.0 && iteration > 0).then(|| iteration as f64 / uptime)),
        success_rate: summary["success_rate"].as_f64(),
        alerts_firing: snapshot["firing"]
            .as_array()
            .map(|firing| {
                firing
                    .iter()
                    .filter_map(|f| f["alertname"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        uptime_seconds: uptime,
        llm_spend_usd: summary["llm"]["calls"]
            .as_u64()
            .filter(|calls| *calls > 0)
            .and(summary["llm"]["cost_usd"].as_f64()),
    }
}

/// `GET /api/v1/snapshot` of a loop's endpoint, plain HTTP on this host.
fn ask(endpoint: &str) -> Result<serde_json::Value, String> {
    let addr: SocketAddr = endpoint
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let mut stream = TcpStream::connect_timeout(&addr, ASK_TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(ASK_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(
            format!(
                "GET /api/v1/snapshot HTTP/1.1\r\nHost: {endpoint}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream
        .take(MAX_SNAPSHOT_BYTES)
        .read_to_end(&mut raw)
        .map_err(|e| e.to_string())?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP answer")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or("").to_string());
    }
    serde_json::from_slice(&raw[split + 4..]).map_err(|e| e.to_string())
}

/// A duration as the table shows it.
fn age(seconds: f64) -> String {
    match seconds {
        s if s < 90.0 => format!("{s:.0}s"),
        s if s < 5400.0 => format!("{:.0}m", s / 60.0),
        s => format!("{:.1}h", s / 3600.0),
    }
}

/// The loops as a text table, one line each.
pub fn table(entries: &[LoopEntry]) -> String {
    let mut out = format!(
        "{:<8} {:<14} {:<14} {:<30} {:>9} {:>7} {:>7} {:<24} {:>7} {}\n",
        "PID",
        "EXPERIMENT",
        "LOOP",
        "RUN ID",
        "ITERATION",
        "IT/S",
        "SUCCESS",
        "ALERTS",
        "UPTIME",
        "ENDPOINT"
    );
    let dash = || "-".to_string();
    for e in entries {
        let s = e.state.as_ref();
        out.push_str(&format!(
            "{:<8} {:<14} {:<14} {:<30} {:>9} {:>7} {:>7} {:<24} {:>7} {}{}\n",
            e.pid.map_or_else(dash, |p| p.to_string()),
            e.experiment.clone().unwrap_or_else(dash),
            e.loop_name.clone().unwrap_or_else(dash),
            e.run_id.clone().unwrap_or_else(dash),
            s.map_or_else(dash, |s| s.iteration.to_string()),
            s.and_then(|s| s.iterations_per_second)
                .map_or_else(dash, |r| format!("{r:.2}")),
            s.and_then(|s| s.success_rate)
                .map_or_else(dash, |r| format!("{:.0}%", r * 100.0)),
            s.map_or_else(dash, |s| if s.alerts_firing.is_empty() {
                "none".into()
            } else {
                s.alerts_firing.join(",")
            }),
            s.map_or_else(dash, |s| age(s.uptime_seconds)),
            e.endpoint.clone().unwrap_or_else(dash),
            e.problem
                .as_ref()
                .map_or_else(String::new, |p| format!("  ({p})")),
        ));
    }
    out
}

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The fleet page: one row per loop, with links to each loop's own page.
pub fn page(entries: &[LoopEntry], dir: &Path) -> String {
    let mut rows = String::new();
    for e in entries {
        let s = e.state.as_ref();
        let text = |v: Option<String>| escape(&v.unwrap_or_else(|| "—".into()));
        let state = match (e.alive, s) {
            (false, _) => "gone",
            (true, None) => "not answering",
            (true, Some(s)) if !s.alerts_firing.is_empty() => "alerting",
            (true, Some(_)) => "running",
        };
        let link = e
            .endpoint
            .as_ref()
            .filter(|_| e.alive)
            .map(|ep| format!("<a href=\"http://{0}/\">{0}</a>", escape(ep)))
            .unwrap_or_else(|| text(e.endpoint.clone()));
        rows.push_str(&format!(
            "<tr data-run=\"{run}\" data-state=\"{state}\"><td>{pid}</td><td>{exp}</td><td>{name}</td><td><code>{run}</code></td><td>{state}</td><td>{it}</td><td>{rate}</td><td>{success}</td><td>{alerts}</td><td>{spend}</td><td>{uptime}</td><td>{link}</td></tr>\n",
            run = text(e.run_id.clone()),
            pid = e.pid.map_or_else(|| "—".into(), |p| p.to_string()),
            exp = text(e.experiment.clone()),
            name = text(e.loop_name.clone()),
            it = s.map_or_else(|| "—".into(), |s| s.iteration.to_string()),
            rate = s.and_then(|s| s.iterations_per_second).map_or_else(|| "—".into(), |r| format!("{r:.2}")),
            success = s.and_then(|s| s.success_rate).map_or_else(|| "—".into(), |r| format!("{:.0}%", r * 100.0)),
            alerts = s.map_or_else(|| "—".into(), |s| if s.alerts_firing.is_empty() { "none".into() } else { escape(&s.alerts_firing.join(", ")) }),
            spend = s.and_then(|s| s.llm_spend_usd).map_or_else(|| "—".into(), |v| format!("${v:.2}")),
            uptime = s.map_or_else(|| "—".into(), |s| age(s.uptime_seconds)),
        ));
    }
    if entries.is_empty() {
        rows.push_str("<tr><td colspan=\"12\">no loop registered here</td></tr>\n");
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <title>loopwatch fleet</title><style>body{{font:14px system-ui,sans-serif;margin:12px;background:#111418;color:#d8dee9}}\
         table{{border-collapse:collapse}}td,th{{padding:3px 8px;border-bottom:1px solid #2b313b;text-align:left}}\
         a{{color:#8fbcbb}}tr[data-state=alerting] td{{color:#ebcb8b}}tr[data-state=gone] td{{color:#8a93a3}}</style></head>\
         <body><h1>loopwatch fleet</h1><p>{count} loops registered in <code>{dir}</code> · refreshes every 5 s · \
         <a href=\"/api/v1/loops\">JSON</a></p>\n<table id=\"loops\"><tr><th>pid</th><th>experiment</th><th>loop</th>\
         <th>run id</th><th>state</th><th>iteration</th><th>it/s</th><th>success</th><th>alerts firing</th>\
         <th>LLM spend</th><th>uptime</th><th>endpoint</th></tr>\n{rows}</table></body></html>\n",
        count = entries.len(),
        dir = escape(&dir.display().to_string()),
    )
}

/// Serves the fleet page (`/`) and its JSON (`/api/v1/loops`) until the process ends.
pub fn serve(dir: PathBuf, listen: SocketAddr) -> std::io::Result<()> {
    use axum::routing::get;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        tracing::info!(addr = %listener.local_addr()?, dir = %dir.display(), "serving the fleet page");
        let page_dir = dir.clone();
        let app = axum::Router::new()
            .route(
                "/",
                get(move || {
                    let dir = page_dir.clone();
                    async move {
                        let html = tokio::task::spawn_blocking(move || {
                            list(&dir).map(|entries| page(&entries, &dir))
                        })
                        .await;
                        match html {
                            Ok(Ok(html)) => axum::response::Html(html).into_response(),
                            Ok(Err(e)) => error(e.to_string()),
                            Err(e) => error(e.to_string()),
                        }
                    }
                }),
            )
            .route(
                "/api/v1/loops",
                get(move || {
                    let dir = dir.clone();
                    async move {
                        let entries = tokio::task::spawn_blocking(move || list(&dir)).await;
                        match entries {
                            Ok(Ok(entries)) => axum::Json(entries).into_response(),
                            Ok(Err(e)) => error(e.to_string()),
                            Err(e) => error(e.to_string()),
                        }
                    }
                }),
            );
        axum::serve(listener, app).await
    })
}

use axum::response::IntoResponse;

fn error(message: String) -> axum::response::Response {
    (
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        format!("cannot read the registrations: {message}\n"),
    )
        .into_response()
}
