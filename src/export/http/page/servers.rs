//! The page's model servers panel, drawn only when servers are configured: a table of
//! each server's last reading, and for each vLLM or SGLang server the metering proxy's
//! time to first chunk beside the server's queue time (a slow first chunk with a long
//! queue is a busy server; with a short one, a slow model), its waiting requests and
//! its KV-cache usage; for each Ollama server the GPU memory of its loaded models.

use maud::{html, Markup};

use super::{chart, clip, Chart, Mark, Ranges, SampleAxis, Series, Unit};
use crate::export::ModelServersView;
use crate::servers::book::{Health, ServerPoint, ServerView};
use crate::servers::ServerKind;

/// A line over a server's reads, on `axis` (from the first iteration the page draws).
fn over_reads(
    label: &'static str,
    points: &[ServerPoint],
    axis: SampleAxis,
    ranges: Ranges,
    value: impl Fn(&ServerPoint) -> Option<f64>,
) -> Series {
    Series {
        label,
        points: points
            .iter()
            .filter(|p| axis == SampleAxis::Time || p.iterations as f64 >= ranges.iteration.0)
            .filter_map(|p| {
                let x = match axis {
                    SampleAxis::Time => p.elapsed_seconds,
                    SampleAxis::Iteration => p.iterations as f64,
                };
                value(p).filter(|v| v.is_finite()).map(|v| (x, v, p.at))
            })
            .collect(),
    }
}

/// A value in `unit`, or a dash.
fn shown(value: Option<f64>, unit: Unit) -> String {
    value.map_or("—".to_string(), |v| unit.format(v))
}

/// The table's row of one server.
fn row(s: &ServerView) -> Markup {
    let vram: Option<f64> = s
        .models
        .as_ref()
        .map(|models| models.iter().map(|m| m.vram_bytes as f64).sum());
    html! {
        tr data-server=(clip(&s.name)) data-health=(match s.health { Health::Up => "up", Health::Down => "down", Health::Unread => "unread" }) {
            td { (clip(&s.name)) " (" (s.kind.as_str()) ")" }
            @match s.health {
                Health::Up if s.kind == ServerKind::Ollama => {
                    td colspan="6" {
                        (s.models.as_ref().map_or(0, Vec::len)) " models loaded, "
                        (shown(vram, Unit::Bytes)) " in GPU memory"
                    }
                }
                Health::Up => {
                    @if s.gauges_stale {
                        td data-value="waiting" class="key" { "no work seen: its gauges may be old" }
                    } @else {
                        td data-value="waiting" { (shown(s.waiting, Unit::Count)) " waiting, " (shown(s.running, Unit::Count)) " running" }
                    }
                    td data-value="kv" { (shown(s.kv_cache_usage.map(|k| k * 100.0), Unit::Percent)) }
                    td data-value="queue" { (shown(s.queue_time_seconds, Unit::Seconds)) }
                    td { (shown(s.time_to_first_token_seconds, Unit::Seconds)) }
                    td { (shown(s.prefix_cache_hit_ratio.map(|r| r * 100.0), Unit::Percent)) }
                    td { (shown(s.preemptions, Unit::Count)) }
                }
                Health::Down => {
                    td colspan="6" class="down" { "cannot be read: " (clip(s.error.as_deref().unwrap_or("unknown"))) }
                }
                Health::Unread => { td colspan="6" class="key" { "not read yet" } }
            }
        }
    }
}

/// The panel's content.
pub(super) fn panel(
    view: &ModelServersView,
    axis: SampleAxis,
    ranges: Ranges,
    kv_threshold: Option<f64>,
) -> Markup {
    let none: [Mark; 0] = [];
    html! {
        table class="containers servers" {
            tr { th { "server" } th { "requests" } th { "KV cache" } th { "queue time" } th { "first token" } th { "prefix hits" } th { "preemptions" } }
            @for s in &view.servers { (row(s)) }
        }
        div class="key" {
            "queue time, first token and prefix hits: over the requests since the previous read; "
            "preemptions: since loopwatch first read the server; "
            "the proxy's first chunk: the streamed calls through loopwatch run --llm-proxy over the same interval"
        }
        @for (s, points) in view.servers.iter().zip(&view.points) {
            h3 data-server-charts=(clip(&s.name)) { (clip(&s.name)) " (" (s.kind.as_str()) ")" }
            @if s.kind == ServerKind::Ollama {
                (chart(&Chart {
                    title: "GPU memory of the loaded models",
                    axis: axis.into(),
                    unit: Unit::Bytes,
                    series: vec![over_reads("GPU memory", points, axis, ranges, |p| p.vram_bytes)],
                    threshold: None,
                    fixed_max: None,
                    marks: &none,
                    step: false,
                }, ranges))
            } @else {
                (chart(&Chart {
                    title: "proxy first chunk vs server queue time",
                    axis: axis.into(),
                    unit: Unit::Seconds,
                    series: vec![
                        over_reads("proxy: first chunk", points, axis, ranges, |p| p.proxy_first_chunk_seconds),
                        over_reads("server: queue time", points, axis, ranges, |p| p.queue_time_seconds),
                    ],
                    threshold: None,
                    fixed_max: None,
                    marks: &none,
                    step: false,
                }, ranges))
                (chart(&Chart {
                    title: "requests waiting",
                    axis: axis.into(),
                    unit: Unit::Count,
                    series: vec![over_reads("waiting", points, axis, ranges, |p| p.waiting)],
                    threshold: None,
                    fixed_max: None,
                    marks: &none,
                    step: false,
                }, ranges))
                (chart(&Chart {
                    title: "KV-cache usage",
                    axis: axis.into(),
                    unit: Unit::Percent,
                    series: vec![over_reads("KV cache", points, axis, ranges, |p| p.kv_cache_usage.map(|k| k * 100.0))],
                    threshold: kv_threshold.map(|t| (t * 100.0, format!("LLMServerSaturated at {}% with requests waiting", super::short(t * 100.0)))),
                    fixed_max: Some(100.0),
                    marks: &none,
                    step: false,
                }, ranges))
            }
        }
    }
}
