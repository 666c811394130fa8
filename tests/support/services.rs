//! Real services started by tests on free loopback ports: Alertmanager (Debian's
//! `prometheus-alertmanager`), and a log capture for asserting on loopwatch's log.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::{http_get, wait_until};

/// A free TCP port on 127.0.0.1 (bound, then released for the service to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until a Prometheus-family service answers `GET /-/ready` with 200.
fn wait_ready(addr: SocketAddr, service: &str) {
    wait_until(
        Duration::from_secs(30),
        &format!("{service} to be ready"),
        || {
            let request =
                format!("GET /-/ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            super::http_raw(addr, request.as_bytes())
                .map(|r| r.status == 200)
                .unwrap_or(false)
        },
    );
}

/// A private Alertmanager process; killed when dropped.
pub struct Alertmanager {
    pub addr: SocketAddr,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts one on a free port and waits until it is ready.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts one on the given port and waits until it is ready.
    pub fn start_on(port: u16) -> Self {
        Self::start_with_config(
            port,
            "route:\n  receiver: 'null'\n  group_wait: 1s\n  group_interval: 5s\nreceivers:\n  - name: 'null'\n",
        )
    }

    /// Starts one on the given port with the given configuration text.
    pub fn start_with_config(port: u16, config_text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(&config, config_text).unwrap();
        let mut am = Alertmanager {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child: None,
            dir,
        };
        am.spawn(&config);
        am
    }

    fn spawn(&mut self, config: &std::path::Path) {
        let log = std::fs::File::create(self.dir.path().join("alertmanager.log")).unwrap();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={}", self.addr))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus-alertmanager is installed (scripts/test installs it)");
        self.child = Some(child);
        wait_ready(self.addr, "Alertmanager");
    }

    /// Its base URL, as loopwatch is configured with.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the process (the data directory stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let config = self.dir.path().join("alertmanager.yml");
        self.spawn(&config);
    }

    /// The active alerts Alertmanager holds, as JSON.
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        let response = http_get(self.addr, "/api/v2/alerts");
        assert_eq!(response.status, 200, "{}", response.body);
        serde_json::from_str(&response.body).unwrap()
    }

    /// The active alert with this name, if Alertmanager holds one.
    pub fn alert(&self, name: &str) -> Option<serde_json::Value> {
        self.alerts()
            .into_iter()
            .find(|a| a["labels"]["alertname"] == name)
    }

    /// Its log file, for failure messages.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("alertmanager.log")
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Everything loopwatch logged in this test process, as plain text lines.
pub struct LogCapture {
    lines: Mutex<Vec<u8>>,
}

struct CaptureWriter(&'static LogCapture);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lines.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capture as the process's global subscriber (once) and returns it.
pub fn logs() -> &'static LogCapture {
    static CAPTURE: OnceLock<&'static LogCapture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture: &'static LogCapture = Box::leak(Box::new(LogCapture {
            lines: Mutex::new(Vec::new()),
        }));
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || CaptureWriter(capture))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
        capture
    })
}

impl LogCapture {
    /// Lines containing every one of `needles`.
    pub fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.lines.lock().unwrap()).into_owned();
        text.lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_string)
            .collect()
    }

    /// Echoes the capture to stderr (for a failing test's output).
    pub fn dump(&self) {
        let _ = std::io::stderr().write_all(&self.lines.lock().unwrap());
    }
}

/// Percent-encodes a query-string value.
pub fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A private Prometheus (Debian's 2.42) running the repository's configuration, with
/// its targets pointed at the test's own loop and Alertmanager; killed when dropped.
pub struct Prometheus {
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts it with `prometheus/prometheus.yml` and the rules, scraping `target` and
    /// alerting `alertmanager`.
    pub fn start(target: SocketAddr, alertmanager: Option<SocketAddr>) -> Self {
        let repo = super::repo_root().join("prometheus");
        let dir = tempfile::tempdir().unwrap();
        let mut config = std::fs::read_to_string(repo.join("prometheus.yml")).unwrap();
        assert!(config.contains("127.0.0.1:8000") && config.contains("127.0.0.1:9093"));
        config = config.replace("127.0.0.1:8000", &target.to_string());
        if let Some(am) = alertmanager {
            config = config.replace("127.0.0.1:9093", &am.to_string());
        }
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        std::fs::copy(
            repo.join("loopwatch.rules.yml"),
            dir.path().join("loopwatch.rules.yml"),
        )
        .unwrap();
        Self::launch(dir)
    }

    /// Starts one with the given configuration text (files it names resolve relative
    /// to a fresh directory, where `extra` files, and their directories, are written
    /// first).
    pub fn start_with(config: &str, extra: &[(&str, &[u8])]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        for (name, bytes) in extra {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        Self::launch(dir)
    }

    fn launch(dir: tempfile::TempDir) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--storage.tsdb.retention.time=30d")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus is installed (scripts/test installs it)");
        wait_ready(addr, "Prometheus");
        Prometheus { addr, child, dir }
    }

    /// GETs an API path, returning the `data` of a successful answer.
    pub fn api(&self, path: &str) -> serde_json::Value {
        let response = http_get(self.addr, path);
        assert_eq!(response.status, 200, "{path}: {}", response.body);
        let body: serde_json::Value = serde_json::from_str(&response.body).unwrap();
        assert_eq!(body["status"], "success", "{path}: {body}");
        body["data"].clone()
    }

    /// Runs an instant query; returns its result vector.
    pub fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(expr)));
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// Its log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
