//! Cost of one read of a local model server: a realistic vLLM `/metrics` page (598
//! lines: two engines, the V1 engine's names beside the deprecated ones, Python's and
//! the HTTP server's metrics; `tests/data/model_servers/vllm-current-1.txt`).
//!
//! `model_server/parse` reads the page into a reading (`servers::exposition::read`);
//! `model_server/parse_and_book` adds the interval values (`servers::book`);
//! `model_server/read` is the whole read a monitor makes at each sampling interval:
//! the GET over loopback to a stand-in serving the page (in this process, sharing the
//! CPUs), the parse, the event applied off the loop's thread and the series
//! republished (`Monitor::read_model_servers_now`). Results and the machine are in
//! docs/performance.md. Reproduce with `cargo bench --bench model_server_read`.

// The stand-in serves one page here: its other answers are the tests'.
#[allow(dead_code)]
#[path = "../tests/support/model_servers.rs"]
mod model_servers;

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use loopwatch::llm::LlmConfig;
use loopwatch::servers::book::ServerBook;
use loopwatch::servers::{exposition, ServerKind};
use loopwatch::{Monitor, Thresholds};
use model_servers::{page, Answer, StandIn};

/// The repository's root, for the stand-in's pages.
fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model_server_read(c: &mut Criterion) {
    let text = page("vllm-current-1.txt");
    assert_eq!(
        exposition::read(ServerKind::Vllm, &text).unwrap().waiting,
        Some(6.0)
    );
    c.bench_function("model_server/parse", |b| {
        b.iter(|| black_box(exposition::read(ServerKind::Vllm, black_box(&text))))
    });
    let server = "vllm=http://127.0.0.1:8001".parse().unwrap();
    let mut book = ServerBook::new(&[server]);
    let mut at = 0.0;
    c.bench_function("model_server/parse_and_book", |b| {
        b.iter(|| {
            at += 1.0;
            black_box(book.read(0, exposition::read(ServerKind::Vllm, &text), at))
        })
    });
    let stand_in = StandIn::start("/metrics", Answer::Body(text.clone()));
    let llm = LlmConfig::default()
        .with_server(format!("vllm={}", stand_in.url()).parse().unwrap())
        .unwrap();
    // The readers' own reads an hour apart: the bench's reads are the only ones.
    let monitor = Monitor::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .final_export(false)
        .containers(false)
        .sample_interval(Duration::from_secs(3600))
        .thresholds(Thresholds::default().with_llm(llm))
        .build()
        .unwrap();
    monitor.read_model_servers_now();
    assert!(monitor
        .render_metrics()
        .unwrap()
        .contains("loopwatch_llm_server_requests_waiting{kind=\"vllm\""));
    c.bench_function("model_server/read", |b| {
        b.iter(|| monitor.read_model_servers_now())
    });
    monitor.shutdown();
}

criterion_group!(benches, model_server_read);
criterion_main!(benches);
