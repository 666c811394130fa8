//! Optional access control with real clients: curl, openssl s_client and a real
//! Prometheus, over TLS (rustls) with bcrypt basic auth from a web config file.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use loopwatch::Monitor;
use support::services::Prometheus;
use support::*;

const USER: &str = "prometheus";
const PASSWORD: &str = "s3cret-scrape";

/// A CA and a server certificate for 127.0.0.1, made with the openssl CLI.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl CLI");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=loopwatch test CA",
        "-days",
        "2",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    (
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    )
}

/// A monitor serving TLS with basic auth; returns it and the CA to trust.
fn secured(dir: &Path, cost: u32) -> (Monitor, PathBuf) {
    let (ca, _cert, _key) = certificates(dir);
    let hash = bcrypt::hash(PASSWORD, cost).unwrap();
    let config = dir.join("web.yml");
    std::fs::write(
        &config,
        format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS12\nbasic_auth_users:\n  {USER}: {hash}\n"),
    )
    .unwrap();
    let monitor = quiet_monitor().web_config(&config).build().unwrap();
    (monitor, ca)
}

/// curl's HTTP status for a URL (0 when the connection failed).
fn curl(ca: &Path, url: &str, extra: &[&str]) -> u16 {
    let output = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "--cacert",
        ])
        .arg(ca)
        .args(extra)
        .arg(url)
        .output()
        .expect("curl installed");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn curl_with_right_wrong_and_missing_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let (monitor, ca) = secured(dir.path(), 6);
    let base = format!("https://127.0.0.1:{}", monitor.local_addr().port());
    let right = format!("{USER}:{PASSWORD}");
    let wrong = format!("{USER}:nope");
    assert_eq!(curl(&ca, &format!("{base}/metrics"), &["-u", &right]), 200);
    assert_eq!(curl(&ca, &format!("{base}/"), &["-u", &right]), 200);
    assert_eq!(curl(&ca, &format!("{base}/metrics"), &["-u", &wrong]), 401);
    assert_eq!(
        curl(&ca, &format!("{base}/metrics"), &["-u", "intruder:x"]),
        401
    );
    assert_eq!(curl(&ca, &format!("{base}/metrics"), &[]), 401);
    assert_eq!(curl(&ca, &format!("{base}/"), &[]), 401);
    assert_eq!(
        curl(&ca, &format!("{base}/healthz"), &[]),
        200,
        "/healthz is exempt, as documented"
    );
    // Plain HTTP to the TLS port gets nowhere.
    assert_eq!(
        curl(
            &ca,
            &format!("http://127.0.0.1:{}/metrics", monitor.local_addr().port()),
            &["-u", &right]
        ),
        0
    );
    monitor.shutdown();
}

#[test]
fn unknown_users_take_as_long_as_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (monitor, ca) = secured(dir.path(), 10);
    let url = format!("https://127.0.0.1:{}/metrics", monitor.local_addr().port());
    let time = |credentials: &str| {
        let started = Instant::now();
        for _ in 0..4 {
            assert_eq!(curl(&ca, &url, &["-u", credentials]), 401);
        }
        started.elapsed() / 4
    };
    let known = time(&format!("{USER}:wrong"));
    let unknown = time("nobody:wrong");
    println!("401 for a known user: {known:?}; for an unknown user: {unknown:?}");
    // bcrypt at cost 10 dominates both; an unknown user that skipped it would answer
    // an order of magnitude faster.
    assert!(
        unknown * 2 > known,
        "unknown {unknown:?} vs known {known:?}"
    );
    monitor.shutdown();
}

#[test]
fn tls_below_1_2_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (monitor, ca) = secured(dir.path(), 4);
    let connect = format!("127.0.0.1:{}", monitor.local_addr().port());
    let s_client = |version: &str| {
        let output = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &connect,
                version,
                "-cipher",
                "DEFAULT@SECLEVEL=0",
                "-CAfile",
            ])
            .arg(&ca)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl CLI");
        (
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    };
    let (ok, out) = s_client("-tls1_1");
    assert!(!ok, "a TLS 1.1 handshake succeeded:\n{out}");
    assert!(
        out.contains("Cipher is (NONE)") && out.contains("alert"),
        "no session, an alert: {out}"
    );
    let (ok, out) = s_client("-tls1_2");
    assert!(ok && out.contains("TLSv1.2"), "TLS 1.2 works:\n{out}");
    monitor.shutdown();
}

#[test]
fn prometheus_scrapes_with_credentials_and_is_refused_without() {
    let dir = tempfile::tempdir().unwrap();
    let (monitor, ca) = secured(dir.path(), 6);
    let target = format!("127.0.0.1:{}", monitor.local_addr().port());
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n\
         \x20 - job_name: with_credentials\n    scheme: https\n    tls_config:\n      ca_file: ca.crt\n    basic_auth:\n      username: {USER}\n      password: {PASSWORD}\n    static_configs:\n      - targets: ['{target}']\n\
         \x20 - job_name: without_credentials\n    scheme: https\n    tls_config:\n      ca_file: ca.crt\n    static_configs:\n      - targets: ['{target}']\n"
    );
    let prometheus = Prometheus::start_with(&config, &[("ca.crt", &std::fs::read(&ca).unwrap())]);
    let health = |job: &str| {
        prometheus.api("/api/v1/targets")["activeTargets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["labels"]["job"] == job)
            .map(|t| {
                (
                    t["health"].as_str().unwrap_or("").to_string(),
                    t["lastError"].as_str().unwrap_or("").to_string(),
                )
            })
            .unwrap_or_default()
    };
    wait_until(Duration::from_secs(30), "both targets scraped", || {
        health("with_credentials").0 != "unknown"
            && !health("with_credentials").0.is_empty()
            && health("without_credentials").0 != "unknown"
            && !health("without_credentials").0.is_empty()
    });
    let (up, error) = health("with_credentials");
    assert_eq!(up, "up", "{error}");
    let (down, error) = health("without_credentials");
    assert_eq!(down, "down");
    assert!(error.contains("401"), "{error}");
    monitor.shutdown();
}

#[test]
fn a_bad_web_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("web.yml");
    std::fs::write(&config, "basic_auth_users:\n  alice: not-a-hash\n").unwrap();
    let err = Monitor::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .web_config(&config)
        .build()
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("LOOPWATCH_WEB_CONFIG") && message.contains("bcrypt"),
        "{message}"
    );
    std::fs::write(
        &config,
        "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
    )
    .unwrap();
    let err = Monitor::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .web_config(&config)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("missing.crt"), "{err}");
}
