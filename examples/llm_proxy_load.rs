//! The metering proxy under load, against calls made directly to a stand-in upstream
//! on loopback (`benches/support/llm_upstream.rs`): the latency it adds to a plain call
//! and to a stream's first chunk (p50 and p99 over 5,000 sequential calls each), the
//! CPU it costs per call, and the memory it holds for 200 concurrent streams.
//!
//! ```sh
//! cargo run --release --example llm_proxy_load
//! ```

#[path = "../benches/support/llm_upstream.rs"]
mod llm_upstream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;

const CALLS: usize = 5_000;
const STREAMS: usize = 200;

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// CPU time of this process so far (user + system).
fn cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage works on Linux");
    let tv =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, (t.tv_usec() * 1000) as u32);
    tv(usage.user_time()) + tv(usage.system_time())
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let release = Arc::new(tokio::sync::Notify::new());
    let upstream = llm_upstream::start(&runtime, Arc::clone(&release));
    let dir = std::env::temp_dir().join(format!("llm-proxy-load-{}", std::process::id()));
    let (monitor, proxy) = llm_upstream::metered_proxy(upstream, &dir);
    let client = llm_upstream::client();
    let direct = format!("http://{upstream}");
    let proxied = proxy.base_url();

    // Sequential calls: each one's latency, and the process's CPU over all of them.
    let measure = |base: &str, stream: bool| {
        let mut times = Vec::with_capacity(CALLS);
        let cpu_before = cpu();
        for _ in 0..CALLS {
            let started = Instant::now();
            runtime.block_on(async {
                let response = client
                    .request(llm_upstream::request(base, stream, "bench"))
                    .await
                    .unwrap();
                let mut body = response.into_body();
                body.frame().await;
                if !stream {
                    while body.frame().await.is_some() {}
                }
                times.push(started.elapsed());
                while body.frame().await.is_some() {}
            });
        }
        let cpu = cpu() - cpu_before;
        times.sort();
        (times, cpu)
    };
    for (what, stream) in [("plain call", false), ("stream, first chunk", true)] {
        measure(&direct, stream); // warm both paths
        measure(&proxied, stream);
        let (direct_times, direct_cpu) = measure(&direct, stream);
        let (proxied_times, proxied_cpu) = measure(&proxied, stream);
        for q in [0.5, 0.99] {
            let d = percentile(&direct_times, q);
            let p = percentile(&proxied_times, q);
            println!(
                "{what}: p{:.0} direct {:.0} µs, through the proxy {:.0} µs, added {:.0} µs",
                q * 100.0,
                d.as_secs_f64() * 1e6,
                p.as_secs_f64() * 1e6,
                (p.as_secs_f64() - d.as_secs_f64()) * 1e6
            );
        }
        println!(
            "{what}: CPU per call direct {:.0} µs, through the proxy {:.0} µs, added {:.0} µs",
            direct_cpu.as_secs_f64() / CALLS as f64 * 1e6,
            proxied_cpu.as_secs_f64() / CALLS as f64 * 1e6,
            (proxied_cpu.as_secs_f64() - direct_cpu.as_secs_f64()) / CALLS as f64 * 1e6
        );
    }

    // Memory: 200 streams held open at once, directly and through the proxy.
    let hold = |base: &str| {
        let before = rss_bytes();
        let bodies = runtime.block_on(async {
            let calls = (0..STREAMS).map(|_| {
                let client = client.clone();
                let request = llm_upstream::request(base, true, "hold");
                async move {
                    let mut body = client.request(request).await.unwrap().into_body();
                    body.frame().await;
                    body
                }
            });
            futures_util::future::join_all(calls).await
        });
        let during = rss_bytes();
        release.notify_waiters();
        runtime.block_on(async {
            for mut body in bodies {
                while body.frame().await.is_some() {}
            }
        });
        during.saturating_sub(before)
    };
    hold(&direct);
    hold(&proxied);
    let direct_memory = hold(&direct);
    let proxied_memory = hold(&proxied);
    println!(
        "{STREAMS} concurrent streams: RSS grew {:.1} MiB direct, {:.1} MiB through the proxy (added {:.1} MiB)",
        direct_memory as f64 / 1048576.0,
        proxied_memory as f64 / 1048576.0,
        (proxied_memory as f64 - direct_memory as f64) / 1048576.0
    );
    let summary = monitor.summary();
    println!(
        "metered: {} calls, {} input tokens, {} errors",
        summary.llm.calls, summary.llm.input_tokens, summary.llm.errors
    );
    drop(proxy);
    monitor.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
