//! The endpoint under load and attack: coalesced renders, the in-flight cap, slow
//! clients, arbitrary bytes, and hostile label values.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use loopwatch::Monitor;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use support::*;

/// The endpoint's documented limits (docs/endpoint.md, "Reliability").
const MAX_IN_FLIGHT: usize = 128;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

fn monitor() -> Monitor {
    quiet_monitor().build().unwrap()
}

/// A user gauge whose callback takes `delay`: every render takes at least that long.
/// (The SDK keeps the callback registered after the handle is dropped.)
fn slow_render(monitor: &Monitor, delay: Duration) {
    monitor
        .meter()
        .f64_observable_gauge("user_slow_gauge")
        .with_description("A gauge whose callback is slow.")
        .with_callback(move |observer| {
            std::thread::sleep(delay);
            observer.observe(1.0, &[]);
        })
        .build();
}

fn renders(addr: std::net::SocketAddr) -> f64 {
    parse(&scrape(addr)).unwrap()["loopwatch_metrics_renders_total"].value()
}

#[test]
fn concurrent_scrapes_share_one_render() {
    let monitor = monitor();
    slow_render(&monitor, Duration::from_millis(300));
    let addr = monitor.local_addr();
    let before = renders(addr);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..24)
            .map(|_| scope.spawn(|| http_get(addr, "/metrics").status))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // The 24 scrapes, plus this one, took far fewer than 25 renders.
    let used = renders(addr) - before;
    assert!(used <= 6.0, "24 concurrent scrapes used {used} renders");
    monitor.shutdown();
}

#[test]
fn past_the_in_flight_cap_requests_get_a_quick_503() {
    let monitor = monitor();
    slow_render(&monitor, Duration::from_secs(2));
    let addr = monitor.local_addr();
    let results: Vec<(u16, Duration)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..(MAX_IN_FLIGHT + 16))
            .map(|_| {
                scope.spawn(|| {
                    let started = Instant::now();
                    (http_get(addr, "/metrics").status, started.elapsed())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<Duration> = results
        .iter()
        .filter(|(s, _)| *s == 503)
        .map(|(_, d)| *d)
        .collect();
    assert!(ok >= 1, "{results:?}");
    assert!(
        !refused.is_empty(),
        "some requests were past the cap: {results:?}"
    );
    assert_eq!(ok + refused.len(), results.len(), "{results:?}");
    assert!(
        refused.iter().all(|d| *d < Duration::from_secs(2)),
        "503s come before the render ends: {refused:?}"
    );
    let e = parse(&scrape(addr)).unwrap();
    assert!(
        e["loopwatch_http_rejected_total"]
            .value_with(&[("reason", "overload")])
            .unwrap()
            >= refused.len() as f64
    );
    monitor.shutdown();
}

#[test]
fn slow_clients_cannot_hold_the_endpoint() {
    let monitor = monitor();
    let addr = monitor.local_addr();
    // Fifty clients that send their request head a byte at a time and never finish.
    let mut slow: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHo").unwrap();
            s
        })
        .collect();
    for round in 0..4 {
        for s in &mut slow {
            let _ = s.write_all(b"s");
        }
        // A normal scrape still succeeds, promptly, while they dawdle.
        let started = Instant::now();
        assert_eq!(http_get(addr, "/metrics").status, 200, "round {round}");
        assert!(started.elapsed() < Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(500));
    }
    // Past the header-read timeout the server has closed them.
    std::thread::sleep(HEADER_READ_TIMEOUT + Duration::from_secs(1));
    let mut still_open = 0;
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        // Closed means end of stream (after any error response) or a reset; a read
        // that merely times out means the server is still holding the connection.
        let mut rest = Vec::new();
        match s.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                still_open += 1
            }
            Err(_) => {}
        }
    }
    assert_eq!(still_open, 0, "slow connections the server kept open");
    monitor.shutdown();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/hardening.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_crash_the_endpoint(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        static MONITOR: std::sync::OnceLock<Monitor> = std::sync::OnceLock::new();
        let monitor = MONITOR.get_or_init(monitor);
        let addr = monitor.local_addr();
        if let Ok(mut stream) = TcpStream::connect(addr) {
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = stream.write_all(&bytes);
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            let head = String::from_utf8_lossy(&answer);
            if let Some(status) = head.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok()) {
                prop_assert!(status < 500, "{status} for {bytes:?}");
            }
        }
        prop_assert_eq!(http_get(addr, "/healthz").status, 200);
    }
}
