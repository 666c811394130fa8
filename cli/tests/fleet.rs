//! A fleet on one machine: two hosts as network namespaces, each with its own host
//! name (a UTS namespace), two loops under `loopwatch run --register` and a real
//! Prometheus agent with the shipped `agent.yml`; a central Prometheus with the
//! remote-write receiver and the shipped `central.yml`; a real Alertmanager with the
//! shipped routing. Needs root (`ip netns`, `unshare`), as scripts/test runs.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::services::{free_port, url_encode};
use support::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn ip(args: &[&str]) {
    let status = Command::new("ip")
        .args(args)
        .status()
        .expect("iproute2 is installed");
    assert!(status.success(), "ip {args:?} failed");
}

/// A host: a network namespace joined to this one by a veth pair, and a host name
/// its processes see.
struct Host {
    netns: String,
    veth: String,
    /// This side's address, which the host reaches the central services at.
    gateway: String,
    name: String,
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl Host {
    fn create(index: u8, subnet: u8) -> Self {
        let tag = std::process::id() % 10_000;
        let netns = format!("lw{tag}h{index}");
        let veth = format!("lw{tag}v{index}");
        let gateway = format!("10.{subnet}.{index}.1");
        let _ = Command::new("ip").args(["netns", "del", &netns]).status();
        ip(&["netns", "add", &netns]);
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ]);
        ip(&["addr", "add", &format!("{gateway}/24"), "dev", &veth]);
        ip(&["link", "set", &veth, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &netns, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&[
            "addr",
            "add",
            &format!("10.{subnet}.{index}.2/24"),
            "dev",
            "eth0",
        ]);
        inside(&["link", "set", "eth0", "up"]);
        inside(&["link", "set", "lo", "up"]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("targets")).unwrap();
        Host {
            netns,
            veth,
            gateway,
            name: format!("host-{index}"),
            dir,
            children: Vec::new(),
        }
    }

    /// A command run on the host, under its host name, in its own process group.
    fn command(&self, program: &Path, args: &[String]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.netns, "unshare", "--uts", "sh", "-c"])
            .arg(format!("hostname {} && exec \"$@\"", self.name))
            .arg("sh")
            .arg(program)
            .args(args)
            .process_group(0);
        command
    }

    fn spawn(&mut self, command: &mut Command, log: &str) -> u32 {
        let log = std::fs::File::create(self.dir.path().join(log)).unwrap();
        let child = command.stdout(Stdio::null()).stderr(log).spawn().unwrap();
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Prometheus in agent mode with the shipped agent.yml, writing to `central`.
    fn start_agent(&mut self, central_port: u16) {
        let config = std::fs::read_to_string(repo().join("prometheus/agent.yml"))
            .unwrap()
            .replace(
                "http://central.example:9090/api/v1/write",
                &format!("http://{}:{central_port}/api/v1/write", self.gateway),
            );
        assert!(
            config.contains(&self.gateway),
            "agent.yml names its central store"
        );
        std::fs::write(self.dir.path().join("agent.yml"), config).unwrap();
        let args = vec![
            "--enable-feature=agent".to_string(),
            format!(
                "--config.file={}",
                self.dir.path().join("agent.yml").display()
            ),
            format!(
                "--storage.agent.path={}",
                self.dir.path().join("agent-data").display()
            ),
            "--web.listen-address=127.0.0.1:9095".to_string(),
        ];
        let mut command = self.command(Path::new("prometheus"), &args);
        self.spawn(&mut command, "agent.log");
    }

    /// A loop under `loopwatch run --register`; returns the process group to kill.
    fn start_loop(&mut self, experiment: &str, name: &str, mode: &str, alertmanager: u16) -> u32 {
        let script = self.dir.path().join("loop.py");
        std::fs::write(&script, LOOP).unwrap();
        let args = vec![
            "run".to_string(),
            "--listen=127.0.0.1:0".to_string(),
            format!("--output-dir={}", self.dir.path().join(name).display()),
            format!("--register={}", self.dir.path().join("targets").display()),
            format!("--experiment={experiment}"),
            format!("--loop-name={name}"),
            format!("--alertmanager=http://{}:{alertmanager}", self.gateway),
            "--".to_string(),
            python().display().to_string(),
            script.display().to_string(),
            mode.to_string(),
            self.dir.path().display().to_string(),
            name.to_string(),
        ];
        let mut command = self.command(Path::new(env!("CARGO_BIN_EXE_loopwatch")), &args);
        command.env("RUST_LOG", "info");
        self.spawn(&mut command, &format!("{name}.log"))
    }

    /// `loopwatch ps --json` run on the host.
    fn ps(&self) -> (Option<i32>, serde_json::Value) {
        let output = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                env!("CARGO_BIN_EXE_loopwatch"),
                "ps",
                "--json",
                "--register",
            ])
            .arg(self.dir.path().join("targets"))
            .output()
            .unwrap();
        (
            output.status.code(),
            serde_json::from_slice(&output.stdout).unwrap_or_default(),
        )
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                out += &format!(
                    "== {} {}\n{}\n",
                    self.name,
                    entry.path().display(),
                    std::fs::read_to_string(entry.path()).unwrap_or_default()
                );
            }
        }
        out
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for child in &mut self.children {
            // Each child leads its own process group (the loop and its Python).
            let group = child.id();
            assert!(group > 1, "a process group of its own");
            let _ = nix_kill_group(group);
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// The loops: `steady` runs until `<dir>/stop-<name>` exists (its champion changing
/// every five iterations); `collapse` reports a population of clones (diversity
/// 0.01); `finish` runs until `<dir>/finish-<name>` exists, then says it is done.
const LOOP: &str = r#"import os, sys, time
import loopwatch
mode, out, name = sys.argv[1], sys.argv[2], sys.argv[3]
i = 0
while not os.path.exists(os.path.join(out, ("finish-" if mode == "finish" else "stop-") + name)):
    i += 1
    with loopwatch.iteration() as it:
        it.success(sharpe=1.0 + i * 0.01, drawdown=0.1)
        diversity = 0.01 if mode == "collapse" else 0.5
        it.population(size=20, unique=1 if mode == "collapse" else 15, diversity=diversity, champion="c%d" % (i // 5))
        time.sleep(0.2)
loopwatch.done()
"#;

/// A webhook receiver recording every notification Alertmanager posts.
struct Webhook {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Webhook {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let record = Arc::clone(&received);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_ok() {
                    if let Ok(json) = serde_json::from_slice(&body) {
                        record.lock().unwrap().push(json);
                    }
                }
                let mut stream = stream;
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        Webhook { addr, received }
    }

    fn notifications(&self) -> Vec<serde_json::Value> {
        self.received.lock().unwrap().clone()
    }
}

/// A process of the central side, killed when dropped.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The shipped alertmanager.yml, its receiver pointed at `webhook`, on every interface.
fn start_alertmanager(dir: &Path, port: u16, webhook: SocketAddr) -> Service {
    let shipped = std::fs::read_to_string(repo().join("prometheus/alertmanager.yml")).unwrap();
    let route = &shipped[..shipped.find("receivers:").unwrap()];
    let config = format!(
        "{route}receivers:\n  - name: operator\n    webhook_configs:\n      - url: http://{webhook}/\n        send_resolved: true\n"
    );
    std::fs::write(dir.join("alertmanager.yml"), config).unwrap();
    let log = std::fs::File::create(dir.join("alertmanager.log")).unwrap();
    let child = Command::new("prometheus-alertmanager")
        .arg(format!(
            "--config.file={}",
            dir.join("alertmanager.yml").display()
        ))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address=0.0.0.0:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prometheus-alertmanager is installed (scripts/test installs it)");
    wait_until(Duration::from_secs(30), "Alertmanager", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Service(child)
}

/// The shipped central.yml with the rule pack, alerting `alertmanager`.
fn start_central(dir: &Path, port: u16, alertmanager: u16) -> Service {
    let config = std::fs::read_to_string(repo().join("prometheus/central.yml"))
        .unwrap()
        .replace("127.0.0.1:9093", &format!("127.0.0.1:{alertmanager}"));
    std::fs::write(dir.join("central.yml"), config).unwrap();
    std::fs::copy(
        repo().join("prometheus/loopwatch.rules.yml"),
        dir.join("loopwatch.rules.yml"),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("central.log")).unwrap();
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("central.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("central-data").display()
        ))
        .arg(format!("--web.listen-address=0.0.0.0:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prometheus is installed (scripts/test installs it)");
    wait_until(Duration::from_secs(30), "the central Prometheus", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Service(child)
}

fn query(port: u16, expr: &str) -> Vec<serde_json::Value> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let response = http_get(addr, &format!("/api/v1/query?query={}", url_encode(expr)));
    let body: serde_json::Value = serde_json::from_str(&response.body).unwrap_or_default();
    body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_fleet_of_two_hosts_reports_to_one_central_prometheus_and_alertmanager() {
    let subnet = 200 + (std::process::id() % 50) as u8;
    let work = tempfile::tempdir().unwrap();
    let (central_port, am_port) = (free_port(), free_port());
    let webhook = Webhook::start();
    let _alertmanager = start_alertmanager(work.path(), am_port, webhook.addr);
    let _central = start_central(work.path(), central_port, am_port);
    let mut hosts = [Host::create(1, subnet), Host::create(2, subnet)];
    for host in &mut hosts {
        host.start_agent(central_port);
    }
    hosts[0].start_loop("exp-a", "l1", "steady", am_port);
    hosts[0].start_loop("exp-b", "l2", "finish", am_port);
    hosts[1].start_loop("exp-a", "l3", "collapse", am_port);
    let killed = hosts[1].start_loop("exp-b", "l4", "steady", am_port);
    let logs = |hosts: &[Host]| hosts.iter().map(Host::logs).collect::<String>();

    // Every series of the four loops arrives with its experiment, host and loop.
    let deadline = Instant::now() + Duration::from_secs(90);
    let expected = [
        ("exp-a", "l1", "host-1"),
        ("exp-b", "l2", "host-1"),
        ("exp-a", "l3", "host-2"),
        ("exp-b", "l4", "host-2"),
    ];
    loop {
        let loops = query(
            central_port,
            "count by (experiment, loop, host) (loopwatch_run_info)",
        );
        let mut seen: Vec<(String, String, String)> = loops
            .iter()
            .map(|s| {
                let m = &s["metric"];
                (
                    m["experiment"].as_str().unwrap_or("").to_string(),
                    m["loop"].as_str().unwrap_or("").to_string(),
                    m["host"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        seen.sort();
        let mut want: Vec<(String, String, String)> = expected
            .iter()
            .map(|(e, l, h)| (e.to_string(), l.to_string(), h.to_string()))
            .collect();
        want.sort();
        if seen == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the central Prometheus has {seen:?}\n{}",
            logs(&hosts)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for label in ["experiment", "loop", "host"] {
        let unlabelled = query(
            central_port,
            &format!("count({{job=\"loopwatch-discovered\", {label}=\"\"}})"),
        );
        assert!(
            unlabelled.is_empty(),
            "series without {label}: {unlabelled:?}"
        );
    }
    // Labels per loop, never per trial: a bounded set of series per loop.
    let per_loop = query(
        central_port,
        "count by (loop) ({job=\"loopwatch-discovered\"})",
    );
    assert_eq!(per_loop.len(), 4);
    for sample in &per_loop {
        let series: f64 = sample["value"][1].as_str().unwrap().parse().unwrap();
        assert!(series <= 300.0, "{} series for one loop: {sample}", series);
        eprintln!("series of loop {}: {series}", sample["metric"]["loop"]);
    }

    // Every fleet-dashboard query has a row per loop.
    let fleet = loopwatch_cli::generate::grafana_fleet_dashboard(&loopwatch::Thresholds::default());
    for expr in loopwatch_cli::generate::dashboard_expressions(&fleet) {
        let expr = loopwatch_cli::generate::with_variables(&expr, &[]);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let rows = query(central_port, &expr);
            if rows.len() == 4 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "`{expr}` has {} rows: {rows:?}",
                rows.len()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    // `loopwatch ps` on each host lists its two loops.
    for (host, names) in hosts.iter().zip([["l1", "l2"], ["l3", "l4"]]) {
        let (code, listed) = host.ps();
        assert_eq!(code, Some(0), "{listed}\n{}", host.logs());
        let loops: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["loop"].as_str().unwrap())
            .collect();
        assert_eq!(loops.len(), 2, "{listed}");
        for name in names {
            assert!(loops.contains(&name), "{name} not in {listed}");
        }
        assert!(listed
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["state"]["iteration"].as_u64().unwrap() > 0));
    }

    // `loopwatch fleet` on host-1 serves its loops; the page, checked in Chromium.
    let fleet_port = free_port();
    let mut fleet_command = hosts[0].command(
        Path::new(env!("CARGO_BIN_EXE_loopwatch")),
        &[
            "fleet".to_string(),
            format!(
                "--register={}",
                hosts[0].dir.path().join("targets").display()
            ),
            format!("--listen=0.0.0.0:{fleet_port}"),
        ],
    );
    hosts[0].spawn(&mut fleet_command, "fleet.log");
    let page_url = format!("http://10.{subnet}.1.2:{fleet_port}/");
    wait_until(Duration::from_secs(30), "the fleet page", || {
        std::net::TcpStream::connect((format!("10.{subnet}.1.2").as_str(), fleet_port)).is_ok()
    });
    let dom = chromium_dom(&page_url);
    assert_eq!(dom.matches("data-state=\"running\"").count(), 2, "{dom}");
    for name in ["l1", "l2"] {
        assert!(
            dom.contains(&format!("<td>{name}</td>")),
            "{name} not on the page: {dom}"
        );
    }

    // The collapse on host-2 is one notification, grouped under its experiment, though
    // both the loop and the central rules raise it.
    let first = Instant::now();
    let collapse = |n: &serde_json::Value| {
        n["groupLabels"]["alertname"] == "DiversityCollapse" && n["status"] == "firing"
    };
    wait_until(
        Duration::from_secs(60),
        "DiversityCollapse at the webhook",
        || webhook.notifications().iter().any(collapse),
    );
    // The central rule fires too, and reaches Alertmanager as the same alert.
    wait_until(
        Duration::from_secs(60),
        "the central rule's DiversityCollapse",
        || {
            !query(
                central_port,
                "ALERTS{alertname=\"DiversityCollapse\", alertstate=\"firing\"}",
            )
            .is_empty()
        },
    );
    // Once the central Prometheus has delivered its alert, Alertmanager holds both
    // paths' alerts: one, when their labels agree.
    let central_addr = SocketAddr::from(([127, 0, 0, 1], central_port));
    wait_until(
        Duration::from_secs(30),
        "the central Prometheus's notification",
        || {
            http_get(central_addr, "/metrics")
                .body
                .lines()
                .filter(|l| l.starts_with("prometheus_notifications_sent_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
                >= 1.0
        },
    );
    let held = http_get(
        SocketAddr::from(([127, 0, 0, 1], am_port)),
        "/api/v2/alerts?filter=alertname%3D%22DiversityCollapse%22",
    );
    let held: serde_json::Value = serde_json::from_str(&held.body).unwrap();
    assert_eq!(
        held.as_array().unwrap().len(),
        1,
        "Alertmanager holds one alert: {held:#}"
    );
    eprintln!(
        "DiversityCollapse notified {:.1} s after the first check",
        first.elapsed().as_secs_f64()
    );
    let notifications: Vec<serde_json::Value> = webhook
        .notifications()
        .into_iter()
        .filter(collapse)
        .collect();
    assert_eq!(notifications.len(), 1, "{notifications:#?}");
    let group = &notifications[0];
    assert_eq!(group["groupLabels"]["experiment"], "exp-a", "{group}");
    let alerts = group["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "both paths' alerts are one: {alerts:#?}");
    assert_eq!(alerts[0]["labels"]["loop"], "l3");
    assert_eq!(alerts[0]["labels"]["instance"], "host-2");

    // A loop killed with -9 raises the dead-man alert; one that finishes cleanly does not.
    std::fs::write(hosts[0].dir.path().join("finish-l2"), "").unwrap();
    nix_kill_group(killed).unwrap();
    let down = |n: &serde_json::Value, name: &str| {
        n["status"] == "firing"
            && n["alerts"].as_array().into_iter().flatten().any(|a| {
                ["LoopDown", "LoopVanished"]
                    .contains(&a["labels"]["alertname"].as_str().unwrap_or(""))
                    && a["labels"]["loop"] == name
            })
    };
    wait_until(
        Duration::from_secs(120),
        "LoopDown for the killed loop",
        || webhook.notifications().iter().any(|n| down(n, "l4")),
    );
    let killed_alert = webhook
        .notifications()
        .into_iter()
        .find(|n| down(n, "l4"))
        .unwrap();
    assert_eq!(killed_alert["alerts"][0]["labels"]["experiment"], "exp-b");
    assert_eq!(killed_alert["alerts"][0]["labels"]["host"], "host-2");
    // The clean one had as long: nothing for it.
    assert!(
        !webhook.notifications().iter().any(|n| down(n, "l2")),
        "{:#?}",
        webhook.notifications()
    );
    let (code, listed) = hosts[1].ps();
    assert_eq!(code, Some(1), "a gone owner is reported: {listed}");
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["loop"] == "l4" && l["alive"] == false));
}

/// SIGKILL to a process group (never this process's own).
fn nix_kill_group(group: u32) -> std::io::Result<()> {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::{getpgrp, Pid};
    let group = Pid::from_raw(i32::try_from(group).map_err(std::io::Error::other)?);
    assert!(
        group.as_raw() > 1 && group != getpgrp(),
        "not the test's own process group"
    );
    killpg(group, Signal::SIGKILL).map_err(std::io::Error::other)
}
