//! The evaluator end to end: alerts from real samples and real iterations, logged and
//! delivered to real Alertmanagers (Debian's `prometheus-alertmanager`).

mod support;

use std::time::{Duration, Instant};

use loopwatch::llm::{Headroom, LlmCall, LlmConfig, LlmError};
use loopwatch::sample::HostSampler;
use loopwatch::{AlertName, Monitor, Population, Thresholds};
use support::model_servers::{idle_vllm_page, page, Answer, StandIn};
use support::services::{logs, Alertmanager};
use support::*;

fn monitor_with(thresholds: Thresholds, alertmanagers: &[&Alertmanager]) -> Monitor {
    logs();
    Monitor::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .final_export(false)
        .sample_interval(Duration::from_millis(50))
        .alertmanager_urls(alertmanagers.iter().map(|am| am.url()))
        .thresholds(thresholds)
        // Orphan counts are fed by hand here; no sweep may overwrite them.
        .containers(false)
        .build()
        .unwrap()
}

/// One iteration with the given outcome counts, diversity and champion.
fn iterate(monitor: &Monitor, ok: u32, failed: u32, diversity: f64, champion: &str) {
    let mut it = monitor.start_iteration();
    for i in 0..ok {
        it.record_success(1.0 + f64::from(i % 3) * 0.1, 0.1);
    }
    for _ in 0..failed {
        it.record_failure("too few trades");
    }
    it.record_population(Population::new(20, 12, diversity).with_champion(champion));
}

fn wait_for(am: &Alertmanager, what: &str, mut present: impl FnMut(&Alertmanager) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !present(am) {
        if Instant::now() > deadline {
            logs().dump();
            panic!(
                "timed out waiting for {what}; Alertmanager holds {:#?}; its log: {}",
                am.alerts(),
                std::fs::read_to_string(am.log_path()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A call whose answer said of its provider's limits: `remaining` of 100 requests
/// left, for ten minutes.
fn rate_limited_call(remaining: &str) -> LlmCall {
    let mut headers = hyper::HeaderMap::new();
    headers.insert("x-ratelimit-limit-requests", "100".parse().unwrap());
    headers.insert("x-ratelimit-remaining-requests", remaining.parse().unwrap());
    headers.insert("x-ratelimit-reset-requests", "10m0s".parse().unwrap());
    let headroom = Headroom::read(&headers, std::time::SystemTime::now()).unwrap();
    LlmCall::new("m", Duration::from_secs(1))
        .with_provider("openai")
        .with_headroom(headroom)
}

/// The two tests that read host memory run one at a time: one holds 4 GiB of ballast.
static HOST_MEMORY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn current_memory_fraction() -> f64 {
    HostSampler::for_current_process()
        .tick()
        .host_memory_fraction()
}

#[test]
fn each_alert_reaches_alertmanager_with_its_exact_summary_and_resolves() {
    let _memory = HOST_MEMORY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let am = Alertmanager::start();
    // Memory: fire only while this test holds 4 GiB of ballast. Host memory is shared
    // with the other tests (their Alertmanagers, say), so the margins are wide: fire
    // 2 GiB above the start, resolve once back within 1 GiB of it.
    const BALLAST: usize = 4 << 30;
    let total = HostSampler::for_current_process()
        .tick()
        .host_memory_total_bytes as f64;
    let ballast_fraction = BALLAST as f64 / total;
    let base = current_memory_fraction();
    // A vLLM server (a stand-in on loopback) with requests waiting at a full cache.
    let vllm = StandIn::start("/metrics", Answer::Body(page("vllm-current-1.txt")));
    let servers = LlmConfig::default()
        .with_server(format!("qwen:vllm={}", vllm.url()).parse().unwrap())
        .unwrap();
    let thresholds = Thresholds::default()
        .with_llm(servers)
        .with_memory_fraction(base + ballast_fraction / 2.0)
        .and_then(|t| t.with_memory_clear_fraction(base + ballast_fraction / 4.0))
        .and_then(|t| t.with_alert_resend_interval(Duration::from_secs(30)))
        .and_then(|t| t.with_alert_resolve_hold(Duration::from_secs(1)))
        // Iterations here take microseconds: the loop is stalled after 2 s idle.
        .and_then(|t| t.with_stall_floor(Duration::from_secs(2)))
        // An evaluation is hung after 1 s.
        .and_then(|t| t.with_evaluation_floor(Duration::from_secs(1)))
        // One restart is crash-looping; it leaves the window 10 s later.
        .and_then(|t| t.with_max_restarts(2))
        .and_then(|t| t.with_restart_window(Duration::from_secs(10)))
        .and_then(|t| t.with_llm_spend_without_progress_usd(1.0))
        .and_then(|t| t.with_llm_budget_usd(1.0))
        // A rate limit near for 1 s is LLMRateLimitNear.
        .and_then(|t| t.with_llm_headroom_for(Duration::from_secs(1)))
        // The server is saturated once it has been for a second.
        .and_then(|t| t.with_llm_server_saturated_for(Duration::from_secs(1)))
        .unwrap();
    let monitor = monitor_with(thresholds, &[&am]);
    let run_id = monitor.identity().run_id.clone();

    // Provoke every in-process alert but LoopExited and the GPUs'; LoopStalled comes by itself once the loop
    // sits idle. All resolve but LLMBudget (spending never goes down). LoopExited ends a supervised run and never resolves within it:
    // cli/tests/python.rs has it reach Alertmanager from a killed loop. GPUMemoryHigh and
    // GPUErrors need a GPU: cli/tests/gpu.rs has them reach Alertmanager from a stand-in
    // NVML's devices.
    let provoked: Vec<AlertName> = AlertName::ALL
        .into_iter()
        .filter(|alert| {
            !matches!(
                alert,
                AlertName::LoopExited | AlertName::GPUMemoryHigh | AlertName::GPUErrors
            )
        })
        .collect();
    let ballast = vec![1u8; BALLAST];
    for _ in 0..21 {
        iterate(&monitor, 1, 9, 0.05, "same-champion");
    }
    monitor.report_orphaned_containers(4);
    // LLM calls: three failures, then a call of US$1.50, past both spending limits.
    for _ in 0..3 {
        monitor
            .llm_call(&LlmCall::new("m", Duration::from_secs(1)).with_error(LlmError::Status(503)));
    }
    monitor.llm_call(&LlmCall::new("m", Duration::from_secs(1)).with_cost_usd(1.5));
    // A provider's answer: 3 requests of 100 left for ten minutes.
    monitor.llm_call(&rate_limited_call("3"));
    // A supervisor's restart.
    let supervision = monitor.supervision();
    supervision.loop_restarting(loopwatch::supervise::LoopExit::new(Some(1), None));
    supervision.loop_started(std::process::id());
    // An evaluation of the restarted loop hangs (a restart ends the evaluations of the
    // process before it as "process gone").
    let hung = monitor.evaluation("prog-hung").worker("pool-1").pid(4242);

    for alert in provoked.iter().copied() {
        wait_for(&am, alert.as_str(), |am| am.alert(alert.as_str()).is_some());
        let delivered = am.alert(alert.as_str()).unwrap();
        assert_eq!(
            delivered["annotations"]["summary"],
            alert.message(),
            "{delivered:#}"
        );
        assert_eq!(delivered["labels"]["severity"], alert.severity());
        assert_eq!(delivered["labels"]["run_id"], run_id.as_str());
        assert!(delivered["annotations"]["value"].as_str().is_some());
        let logged = logs().lines_with(&[&run_id, alert.message(), "WARN"]);
        assert_eq!(
            logged.len(),
            1,
            "{alert:?} is logged once when it fires: {logged:#?}"
        );
        assert!(logged[0].contains("threshold="), "{}", logged[0]);
    }
    // The hung evaluation is named, in the log and in Alertmanager.
    let named = "evaluation prog-hung (worker pool-1, pid 4242)";
    let delivered = am.alert(AlertName::EvaluationHung.as_str()).unwrap();
    assert!(
        delivered["annotations"]["description"]
            .as_str()
            .is_some_and(|d| d.contains(named)),
        "{delivered:#}"
    );
    assert_eq!(
        logs()
            .lines_with(&[&run_id, AlertName::EvaluationHung.message(), named])
            .len(),
        1
    );
    let firing = parse(&scrape(monitor.local_addr())).unwrap();
    for alert in provoked.iter().copied() {
        assert_eq!(
            firing["loopwatch_alert_firing"].value_with(&[("alertname", alert.as_str())]),
            Some(1.0),
            "{alert:?}"
        );
    }

    // Clear all six; each resolution reaches Alertmanager (the alert leaves its
    // active list long before its endsAt of two minutes would expire it).
    drop(ballast);
    for i in 0..10 {
        iterate(&monitor, 9, 1, 0.6, &format!("champion-{i}"));
    }
    monitor.report_orphaned_containers(0);
    hung.ok();
    vllm.set(Answer::Body(idle_vllm_page("vllm-current-1.txt", 0.2)));
    for _ in 0..20 {
        monitor.llm_call(&LlmCall::new("m", Duration::from_secs(1)));
    }
    monitor.llm_call(&rate_limited_call("100"));
    // No more iterations are coming: waiting for the resolutions is not a stall.
    monitor.done();
    // Spending never goes down: a budget once passed stays passed for the run.
    let resolving: Vec<AlertName> = provoked
        .iter()
        .copied()
        .filter(|alert| *alert != AlertName::LLMBudget)
        .collect();
    for alert in resolving.iter().copied() {
        wait_for(&am, &format!("{alert:?} to resolve"), |am| {
            am.alert(alert.as_str()).is_none()
        });
        assert_eq!(
            logs()
                .lines_with(&[&run_id, &format!("resolved: {}", alert.message())])
                .len(),
            1
        );
    }
    let resolved = parse(&scrape(monitor.local_addr())).unwrap();
    for alert in resolving.iter().copied() {
        assert_eq!(
            resolved["loopwatch_alert_firing"].value_with(&[("alertname", alert.as_str())]),
            Some(0.0),
            "{alert:?} resolved"
        );
    }
    monitor.shutdown();
}

#[test]
fn an_alert_firing_while_alertmanager_is_down_is_there_after_it_returns() {
    let mut am = Alertmanager::start();
    let thresholds = Thresholds::default()
        .with_alert_resend_interval(Duration::from_secs(2))
        .unwrap();
    let monitor = monitor_with(thresholds, &[&am]);
    am.stop();
    for _ in 0..5 {
        iterate(&monitor, 5, 5, 0.01, "c");
    }
    assert_eq!(monitor.firing_alerts(), vec![AlertName::DiversityCollapse]);
    // Let a few deliveries fail, then bring Alertmanager back with empty storage.
    std::thread::sleep(Duration::from_secs(2));
    am.restart();
    wait_for(&am, "DiversityCollapse after the restart", |am| {
        am.alert("DiversityCollapse").is_some()
    });
    let e = parse(&scrape(monitor.local_addr())).unwrap();
    let failures = e["loopwatch_alert_deliveries_total"]
        .value_with(&[("url", &am.url()), ("outcome", "failure")])
        .unwrap();
    assert!(
        failures >= 1.0,
        "deliveries failed while it was down: {failures}"
    );
    monitor.shutdown();
}

#[test]
fn two_alertmanagers_both_receive_it() {
    let (a, b) = (Alertmanager::start(), Alertmanager::start());
    let monitor = monitor_with(Thresholds::default(), &[&a, &b]);
    monitor.report_orphaned_containers(5);
    for am in [&a, &b] {
        wait_for(am, "ContainerCleanupFailures", |am| {
            am.alert("ContainerCleanupFailures").is_some()
        });
    }
    monitor.shutdown();
}

#[test]
fn latency_from_condition_to_alertmanager_is_well_under_ten_seconds() {
    let am = Alertmanager::start();
    let monitor = monitor_with(Thresholds::default(), &[&am]);
    for _ in 0..4 {
        iterate(&monitor, 5, 5, 0.01, "c");
    }
    assert!(
        monitor.firing_alerts().is_empty(),
        "four low iterations are not a collapse"
    );
    let condition = Instant::now();
    iterate(&monitor, 5, 5, 0.01, "c");
    let in_process = condition.elapsed();
    assert_eq!(monitor.firing_alerts(), vec![AlertName::DiversityCollapse]);
    wait_for(&am, "DiversityCollapse", |am| {
        am.alert("DiversityCollapse").is_some()
    });
    let delivered = condition.elapsed();
    println!(
        "alert latency: in-process {in_process:?}, visible in Alertmanager's API {delivered:?}"
    );
    assert!(delivered < Duration::from_secs(10), "{delivered:?}");
    monitor.shutdown();
}

#[test]
fn the_memory_alert_is_driven_by_the_real_sampler() {
    let _memory = HOST_MEMORY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let fraction = current_memory_fraction();
    let thresholds = Thresholds::default()
        .with_memory_fraction(fraction * 0.98)
        .unwrap()
        .with_memory_clear_fraction(fraction * 0.97)
        .unwrap();
    let started = Instant::now();
    let monitor = monitor_with(thresholds, &[]);
    wait_until(
        Duration::from_secs(5),
        "HighMemoryUsage from a sampler tick",
        || {
            monitor
                .firing_alerts()
                .contains(&AlertName::HighMemoryUsage)
        },
    );
    println!(
        "HighMemoryUsage fired {:?} after start-up",
        started.elapsed()
    );
    let run_id = &monitor.identity().run_id;
    let line = logs().lines_with(&[run_id, "High memory usage detected"]);
    assert_eq!(line.len(), 1, "{line:?}");
    assert!(line[0].contains("value=0."), "{}", line[0]);
    monitor.shutdown();
}

/// A realistic, healthy search: noisy outcomes, a champion that improves now and then,
/// diversity that wanders but never collapses.
#[test]
fn a_healthy_two_hundred_iteration_run_raises_no_alert() {
    let monitor = monitor_with(Thresholds::default(), &[]);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut champion = 0;
    for generation in 0..200 {
        let mut it = monitor.start_iteration();
        for _ in 0..20 {
            if uniform() < 0.7 {
                it.record_success(0.8 + 0.6 * uniform(), 0.05 + 0.2 * uniform());
            } else {
                it.record_failure("too few trades");
            }
        }
        if uniform() < 0.15 || generation % 15 == 0 {
            champion += 1;
        }
        let diversity = 0.45 + 0.2 * uniform();
        it.record_population(
            Population::new(20, 14, diversity).with_champion(&format!("c{champion}")),
        );
        it.finish();
    }
    let run_id = monitor.identity().run_id.clone();
    for alert in AlertName::ALL {
        let fired = logs().lines_with(&[&run_id, alert.message()]);
        assert!(fired.is_empty(), "false positive: {fired:#?}");
    }
    let degradations = logs().lines_with(&[&run_id, "Performance degradation detected"]);
    assert!(
        degradations.is_empty(),
        "false degradation warnings: {degradations:#?}"
    );
    assert_eq!(monitor.summary().iterations, 200);
    monitor.shutdown();
}

#[test]
fn long_run_statistics_are_logged_every_interval() {
    let thresholds = Thresholds::default()
        .with_stats_interval(Duration::from_millis(300))
        .unwrap();
    let monitor = monitor_with(thresholds, &[]);
    for _ in 0..3 {
        iterate(&monitor, 3, 1, 0.5, "c");
    }
    let run_id = monitor.identity().run_id.clone();
    wait_until(Duration::from_secs(5), "two statistics lines", || {
        logs().lines_with(&[&run_id, "Long-run statistics"]).len() >= 2
    });
    let line = &logs().lines_with(&[&run_id, "Long-run statistics"])[0];
    for field in [
        "total_iterations=3",
        "avg_execution_time_seconds=",
        "success_rate=0.75",
        "champion_staleness_iterations=2",
    ] {
        assert!(line.contains(field), "{field} missing from {line}");
    }
    monitor.shutdown();
}

#[test]
fn a_hung_iteration_fires_loop_stalled_within_the_limit_and_two_seconds() {
    let am = Alertmanager::start();
    // Default sampler period (1 s), so the liveness check runs at its default pace.
    let monitor = quiet_monitor()
        .alertmanager_urls([am.url()])
        .thresholds(
            Thresholds::default()
                .with_stall_floor(Duration::from_secs(2))
                .unwrap(),
        )
        .build()
        .unwrap();
    for _ in 0..10 {
        let it = monitor.start_iteration();
        std::thread::sleep(Duration::from_millis(10));
        it.finish();
    }
    // Iterations of 10 ms: the limit is max(10 x 10 ms, 2 s) = 2 s.
    let hung = monitor.start_iteration();
    let started = Instant::now();
    wait_for(&am, "LoopStalled", |am| am.alert("LoopStalled").is_some());
    let latency = started.elapsed();
    println!("LoopStalled at Alertmanager {latency:?} after the iteration began (limit 2 s)");
    assert!(
        latency > Duration::from_secs(2),
        "not before the limit: {latency:?}"
    );
    assert!(
        latency < Duration::from_secs(4),
        "within the limit + 2 s: {latency:?}"
    );
    let delivered = am.alert("LoopStalled").unwrap();
    assert_eq!(delivered["annotations"]["summary"], "Loop stall detected");
    assert_eq!(
        delivered["annotations"]["runbook"],
        "docs/runbooks.md#loopstalled"
    );
    // The iteration finishing resolves it.
    hung.finish();
    assert!(!monitor.firing_alerts().contains(&AlertName::LoopStalled));
    monitor.shutdown();
}

#[test]
fn a_slow_but_healthy_loop_is_never_called_stalled() {
    // Iteration times varying 3x around their mean, with pauses between iterations,
    // and a floor low enough that the factor (10x the mean) is what decides.
    let monitor = monitor_with(
        Thresholds::default()
            .with_stall_floor(Duration::from_millis(50))
            .unwrap(),
        &[],
    );
    let run_id = monitor.identity().run_id.clone();
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    for _ in 0..200 {
        let it = monitor.start_iteration();
        // 20 to 60 ms: a mean of 40 ms (a limit of 400 ms), the slowest 3x the fastest.
        std::thread::sleep(Duration::from_micros(
            20_000 + (40_000.0 * uniform()) as u64,
        ));
        it.finish();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(!monitor.firing_alerts().contains(&AlertName::LoopStalled));
    let stalls = logs().lines_with(&[&run_id, "Loop stall detected"]);
    assert!(stalls.is_empty(), "false stalls: {stalls:#?}");
    monitor.shutdown();
}

/// Run as a child process by the test below: an alert fires and the loop panics at
/// once, so only the final word of the dropped monitor can deliver it.
fn panicking_loop(alertmanager: &str) -> ! {
    let monitor = quiet_monitor()
        .alertmanager_urls([alertmanager])
        .build()
        .unwrap();
    monitor.report_orphaned_containers(4);
    panic!("a bug in the loop");
}

#[test]
fn a_panicking_loop_sends_its_final_alert_state_within_two_seconds() {
    const CHILD: &str = "LOOPWATCH_TEST_PANICKING_LOOP";
    if let Ok(url) = std::env::var(CHILD) {
        panicking_loop(&url);
    }
    let run_child = |alertmanager: &str| {
        let started = Instant::now();
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_panicking_loop_sends_its_final_alert_state_within_two_seconds",
                "--nocapture",
            ])
            .env(CHILD, alertmanager)
            .output()
            .unwrap();
        assert!(!output.status.success(), "the loop panicked");
        started.elapsed()
    };
    // A real Alertmanager has the alert the moment the process is gone.
    let am = Alertmanager::start();
    run_child(&am.url());
    assert!(
        am.alert("ContainerCleanupFailures").is_some(),
        "the final alert state was delivered before the process ended"
    );
    // One that accepts connections but never answers holds the exit for 2 s at most.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let took = run_child(&format!("http://{}", silent.local_addr().unwrap()));
    println!("a panicking loop with a silent Alertmanager ended after {took:?}");
    assert!(took < Duration::from_secs(6), "{took:?}");
}
