//! The embedded dashboard at `GET /`: the four panels of the Grafana dashboard, drawn
//! as inline SVG on the server from a [`Snapshot`]. No scripts, no external assets (the
//! page works offline); it refreshes itself every 5 seconds. Every string is escaped by
//! maud, so text from the loop (champion ids, failure reasons) cannot inject markup.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::export::Snapshot;
use crate::run::{EventKind, HistoryPoint};

/// One series of a panel.
struct Series {
    label: &'static str,
    unit: &'static str,
    points: Vec<(f64, f64)>,
    /// Horizontal threshold line (an alert threshold), if any.
    threshold: Option<f64>,
}

const WIDTH: f64 = 440.0;
const HEIGHT: f64 = 96.0;
const PAD_LEFT: f64 = 52.0;
const PAD_RIGHT: f64 = 8.0;
const PAD_Y: f64 = 10.0;

const STYLE: &str = concat!(
    "body{font:14px system-ui,sans-serif;margin:16px;background:#111418;color:#d8dee9}",
    "h1{font-size:18px;margin:0 0 4px}.meta{color:#8a93a3;margin-bottom:10px}",
    ".grid{display:grid;grid-template-columns:repeat(2,460px);gap:12px}",
    ".panel{background:#1b1f26;border:1px solid #2b313b;border-radius:6px;padding:8px}",
    ".panel h2{font-size:15px;margin:0 0 6px}.legend{font-size:12px;color:#aab3c2}",
    "svg{display:block}.line{fill:none;stroke:#5ab0f0;stroke-width:1.5}",
    ".champion{stroke:#3fb950;stroke-width:1;stroke-dasharray:2 3}",
    ".alert{stroke:#f85149;stroke-width:1.5}.threshold{stroke:#e3b341;stroke-dasharray:4 3}",
    ".axis{fill:#8a93a3;font-size:10px}.empty{fill:#8a93a3;font-size:12px}",
    ".alerts{margin:8px 0 12px}.alerts li{color:#f85149}.ok{color:#3fb950}",
);

/// Four significant digits at most, no trailing noise for whole numbers.
fn format_value(value: f64) -> String {
    if value == value.trunc() && value.abs() < 1e15 {
        return format!("{value:.0}");
    }
    let magnitude = value.abs().log10().floor() as i32;
    let decimals = (3 - magnitude).clamp(0, 6) as usize;
    format!("{value:.decimals$}")
}

/// Draws one series as a small line chart with its own scale, with champion changes
/// (green) and alert transitions (red) marked as vertical lines.
fn chart(series: &Series, x_range: (f64, f64), champions: &[f64], alerts: &[f64]) -> Markup {
    let latest = series
        .points
        .last()
        .map_or("—".to_string(), |p| format_value(p.1));
    let view_box = format!("0 0 {WIDTH} {HEIGHT}");
    let legend = html! {
        div class="legend" { (series.label) " " b { (latest) } " " (series.unit) }
    };
    if series.points.is_empty() {
        return html! {
            div class="series" data-series=(series.label) data-points="0" {
                (legend)
                svg viewBox=(view_box) width=(WIDTH) height=(HEIGHT) role="img" aria-label=(series.label) {
                    text x="60" y="50" class="empty" { "no data yet" }
                }
            }
        };
    }
    let (x0, x1) = x_range;
    let values = || series.points.iter().map(|p| p.1);
    let mut y0 = values().fold(f64::INFINITY, f64::min);
    let mut y1 = values().fold(f64::NEG_INFINITY, f64::max);
    if let Some(t) = series.threshold {
        y0 = y0.min(t);
        y1 = y1.max(t);
    }
    if (y1 - y0).abs() < 1e-12 {
        if y0 == 0.0 {
            // A flat zero (no containers, say): draw it on the floor of a 0–1 scale.
            y1 = 1.0;
        } else {
            // Another flat series: centre it, with a margin relative to its size.
            let pad = y0.abs() * 0.1;
            y0 -= pad;
            y1 += pad;
        }
    }
    let sx = |x: f64| PAD_LEFT + (x - x0) / (x1 - x0).max(1.0) * (WIDTH - PAD_LEFT - PAD_RIGHT);
    let sy = |y: f64| HEIGHT - PAD_Y - (y - y0) / (y1 - y0) * (HEIGHT - 2.0 * PAD_Y);
    let points: String = series
        .points
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1} ", sx(x), sy(y)))
        .collect();
    html! {
        div class="series" data-series=(series.label) data-points=(series.points.len()) {
            (legend)
            svg viewBox=(view_box) width=(WIDTH) height=(HEIGHT) role="img" aria-label=(series.label) {
                text x="2" y=(format!("{:.1}", PAD_Y + 4.0)) class="axis" { (format_value(y1)) }
                text x="2" y=(format!("{:.1}", HEIGHT - PAD_Y)) class="axis" { (format_value(y0)) }
                @for &x in champions {
                    line class="champion" x1=(format!("{:.1}", sx(x))) x2=(format!("{:.1}", sx(x))) y1="0" y2=(HEIGHT) {}
                }
                @for &x in alerts {
                    line class="alert" x1=(format!("{:.1}", sx(x))) x2=(format!("{:.1}", sx(x))) y1="0" y2=(HEIGHT) {}
                }
                @if let Some(t) = series.threshold {
                    line class="threshold" x1=(PAD_LEFT) x2=(format!("{:.1}", WIDTH - PAD_RIGHT))
                        y1=(format!("{:.1}", sy(t))) y2=(format!("{:.1}", sy(t))) {}
                }
                polyline class="line" points=(points) {}
            }
        }
    }
}

fn series(
    label: &'static str,
    unit: &'static str,
    history: &[HistoryPoint],
    value: impl Fn(&HistoryPoint) -> Option<f64>,
) -> Series {
    Series {
        label,
        unit,
        points: history
            .iter()
            .filter_map(|p| {
                value(p)
                    .filter(|v| v.is_finite())
                    .map(|v| (p.iteration as f64, v))
            })
            .collect(),
        threshold: None,
    }
}

fn with_threshold(mut series: Series, threshold: f64) -> Series {
    series.threshold = Some(threshold);
    series
}

/// The four panels, as in the Grafana dashboard.
fn panels(snapshot: &Snapshot) -> [(&'static str, Vec<Series>); 4] {
    let history = &snapshot.history;
    let t = &snapshot.thresholds;
    [
        (
            "Resource Usage",
            vec![
                series("memory usage", "GB", history, |p| {
                    Some(p.memory_usage_bytes / 1e9)
                }),
                series("CPU usage", "%", history, |p| Some(p.cpu_usage_percent)),
                series("execution time per iteration", "s", history, |p| {
                    Some(p.execution_time_seconds)
                }),
            ],
        ),
        (
            "Strategy Performance",
            vec![
                with_threshold(
                    series("success rate (10 iterations)", "%", history, |p| {
                        p.success_rate_10iter.map(|r| r * 100.0)
                    }),
                    t.success_rate_floor * 100.0,
                ),
                series("Sharpe ratio", "", history, |p| p.sharpe_ratio),
                series("max drawdown", "fraction", history, |p| p.max_drawdown),
            ],
        ),
        (
            "Diversity Metrics",
            vec![
                with_threshold(
                    series("population diversity", "0–1", history, |p| {
                        p.population_diversity
                    }),
                    t.diversity_floor,
                ),
                series("unique strategies", "", history, |p| {
                    p.unique_strategy_count.map(|u| u as f64)
                }),
                with_threshold(
                    series("champion age", "iterations", history, |p| {
                        Some(p.champion_staleness_iterations as f64)
                    }),
                    t.staleness_iterations as f64,
                ),
            ],
        ),
        (
            "Container Stats",
            vec![
                series("active containers", "", history, |p| {
                    Some(p.active_containers)
                }),
                series("container memory", "MB", history, |p| {
                    Some(p.container_memory_bytes / 1e6)
                }),
                with_threshold(
                    series("cleanup failures", "", history, |p| {
                        Some(p.cleanup_failures)
                    }),
                    t.orphan_limit as f64,
                ),
            ],
        ),
    ]
}

/// Renders the whole page.
pub(crate) fn render(snapshot: &Snapshot) -> String {
    let history = &snapshot.history;
    let summary = &snapshot.summary;
    let firing = snapshot.evaluation.firing();
    let x_range = match (history.first(), history.last()) {
        (Some(a), Some(b)) => (
            a.iteration as f64,
            (b.iteration as f64).max(a.iteration as f64 + 1.0),
        ),
        _ => (0.0, 1.0),
    };
    let marks = |wanted: fn(&EventKind) -> bool| -> Vec<f64> {
        snapshot
            .events
            .iter()
            .filter(|e| e.iteration as f64 >= x_range.0 && wanted(&e.kind))
            .map(|e| e.iteration as f64)
            .collect()
    };
    let champions = marks(|k| matches!(k, EventKind::ChampionChanged { .. }));
    let alerts = marks(|k| matches!(k, EventKind::Alert { .. }));
    let success_rate = summary
        .success_rate
        .map_or("—".to_string(), |r| format!("{:.1}%", r * 100.0));
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content="5";
                title { "loopwatch" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "loopwatch" }
                div class="meta" {
                    "run " code { (summary.run_id) } " · " (summary.iterations) " iterations · champion "
                    code { (summary.champion.as_deref().unwrap_or("—")) }
                    " · staleness " (summary.champion_staleness_iterations)
                    " · success rate " (success_rate)
                    " · refreshes every 5 s · " a href="/metrics" { "/metrics" }
                }
                @if firing.is_empty() {
                    div class="alerts ok" id="alerts" { "No alerts firing." }
                } @else {
                    div class="alerts" id="alerts" {
                        b { "Firing:" }
                        ul {
                            @for alert in &firing {
                                li data-alert=(alert.as_str()) { (alert.as_str()) ": " (alert.message()) }
                            }
                        }
                    }
                }
                div class="grid" {
                    @for (title, series) in panels(snapshot) {
                        section class="panel" data-panel=(title)
                            data-points=(series.iter().map(|s| s.points.len()).sum::<usize>()) {
                            h2 { (title) }
                            @for s in &series {
                                (chart(s, x_range, &champions, &alerts))
                            }
                        }
                    }
                }
                p class="meta" {
                    "Green dashed lines: champion changes. Red lines: alert transitions. \
                     Yellow dashed lines: alert thresholds."
                }
            }
        }
    };
    page.into_string()
}
