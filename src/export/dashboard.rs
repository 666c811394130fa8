//! The embedded dashboard at `GET /`: the four panels of the Grafana dashboard, drawn
//! as inline SVG on the server from the in-memory history. No scripts, no external
//! assets (the page works offline); it refreshes itself every 5 seconds.

use std::fmt::Write as _;

use crate::evaluate::{AlertName, AlertState, Event, EventKind};
use crate::monitor::{HistoryPoint, Inner};

/// Escapes text for HTML element content and attribute values.
///
/// ```
/// assert_eq!(loopwatch::html_escape("<b>\"x\" & 'y'</b>"),
///            "&lt;b&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/b&gt;");
/// ```
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

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
fn chart(series: &Series, x_range: (f64, f64), champions: &[f64], alerts: &[f64]) -> String {
    let mut svg = String::new();
    let latest = series.points.last().map(|p| p.1);
    let _ = write!(
        svg,
        r#"<div class="series" data-series="{}" data-points="{}"><div class="legend">{} <b>{}</b> {}</div>"#,
        html_escape(series.label),
        series.points.len(),
        html_escape(series.label),
        latest.map_or("—".to_string(), format_value),
        html_escape(series.unit)
    );
    let _ = write!(
        svg,
        r#"<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{}">"#,
        html_escape(series.label)
    );
    if series.points.is_empty() {
        svg.push_str(r#"<text x="60" y="50" class="empty">no data yet</text></svg></div>"#);
        return svg;
    }
    let (x0, x1) = x_range;
    let mut y0 = series
        .points
        .iter()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min);
    let mut y1 = series
        .points
        .iter()
        .map(|p| p.1)
        .fold(f64::NEG_INFINITY, f64::max);
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
    let _ = write!(
        svg,
        r#"<text x="2" y="{:.1}" class="axis">{}</text><text x="2" y="{:.1}" class="axis">{}</text>"#,
        PAD_Y + 4.0,
        format_value(y1),
        HEIGHT - PAD_Y,
        format_value(y0)
    );
    for &x in champions {
        let _ = write!(
            svg,
            r#"<line class="champion" x1="{0:.1}" x2="{0:.1}" y1="0" y2="{HEIGHT}"/>"#,
            sx(x)
        );
    }
    for &x in alerts {
        let _ = write!(
            svg,
            r#"<line class="alert" x1="{0:.1}" x2="{0:.1}" y1="0" y2="{HEIGHT}"/>"#,
            sx(x)
        );
    }
    if let Some(t) = series.threshold {
        let _ = write!(
            svg,
            r#"<line class="threshold" x1="{PAD_LEFT}" x2="{:.1}" y1="{1:.1}" y2="{1:.1}"/>"#,
            WIDTH - PAD_RIGHT,
            sy(t)
        );
    }
    svg.push_str(r#"<polyline class="line" points=""#);
    for &(x, y) in &series.points {
        let _ = write!(svg, "{:.1},{:.1} ", sx(x), sy(y));
    }
    svg.push_str(r#""/></svg></div>"#);
    svg
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

/// Renders the whole page.
pub(crate) fn render(inner: &Inner) -> String {
    let history = inner.history();
    let (events, _) = inner.events();
    let (firing, thresholds) = {
        let evaluator = inner.lock_evaluator();
        let states = evaluator.states();
        let firing: Vec<AlertName> = AlertName::ALL
            .into_iter()
            .zip(states)
            .filter(|(_, s)| *s == AlertState::Firing)
            .map(|(a, _)| a)
            .collect();
        (firing, evaluator.thresholds.clone())
    };
    let summary = inner.summary();
    let x_range = match (history.first(), history.last()) {
        (Some(a), Some(b)) => (
            a.iteration as f64,
            (b.iteration as f64).max(a.iteration as f64 + 1.0),
        ),
        _ => (0.0, 1.0),
    };
    let in_range = |e: &&Event| e.iteration as f64 >= x_range.0;
    let champions: Vec<f64> = events
        .iter()
        .filter(in_range)
        .filter(|e| matches!(e.kind, EventKind::ChampionChanged { .. }))
        .map(|e| e.iteration as f64)
        .collect();
    let alerts: Vec<f64> = events
        .iter()
        .filter(in_range)
        .filter(|e| matches!(e.kind, EventKind::Alert { .. }))
        .map(|e| e.iteration as f64)
        .collect();

    let panels: [(&str, Vec<Series>); 4] = [
        (
            "Resource Usage",
            vec![
                series("memory usage", "GB", &history, |p| {
                    Some(p.memory_usage_bytes / 1e9)
                }),
                series("CPU usage", "%", &history, |p| Some(p.cpu_usage_percent)),
                series("execution time per iteration", "s", &history, |p| {
                    Some(p.execution_time_seconds)
                }),
            ],
        ),
        (
            "Strategy Performance",
            vec![
                with_threshold(
                    series("success rate (10 iterations)", "%", &history, |p| {
                        p.success_rate_10iter.map(|r| r * 100.0)
                    }),
                    thresholds.success_rate_floor * 100.0,
                ),
                series("Sharpe ratio", "", &history, |p| p.sharpe_ratio),
                series("max drawdown", "fraction", &history, |p| p.max_drawdown),
            ],
        ),
        (
            "Diversity Metrics",
            vec![
                with_threshold(
                    series("population diversity", "0–1", &history, |p| {
                        p.population_diversity
                    }),
                    thresholds.diversity_floor,
                ),
                series("unique strategies", "", &history, |p| {
                    p.unique_strategy_count.map(|u| u as f64)
                }),
                with_threshold(
                    series("champion age", "iterations", &history, |p| {
                        Some(p.champion_staleness_iterations as f64)
                    }),
                    thresholds.staleness_iterations as f64,
                ),
            ],
        ),
        (
            "Container Stats",
            vec![
                series("active containers", "", &history, |p| {
                    Some(p.active_containers)
                }),
                series("container memory", "MB", &history, |p| {
                    Some(p.container_memory_bytes / 1e6)
                }),
                with_threshold(
                    series("cleanup failures", "", &history, |p| {
                        Some(p.cleanup_failures)
                    }),
                    thresholds.orphan_limit as f64,
                ),
            ],
        ),
    ];

    let mut page = String::with_capacity(64 * 1024);
    page.push_str(concat!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta http-equiv=\"refresh\" content=\"5\"><title>loopwatch</title><style>",
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
        "</style></head><body>"
    ));
    let _ = write!(
        page,
        "<h1>loopwatch</h1><div class=\"meta\">run <code>{}</code> · {} iterations · champion <code>{}</code> · \
         staleness {} · success rate {} · refreshes every 5 s · <a href=\"/metrics\">/metrics</a></div>",
        html_escape(&summary.run_id),
        summary.iterations,
        html_escape(summary.champion.as_deref().unwrap_or("—")),
        summary.champion_staleness_iterations,
        summary
            .success_rate
            .map_or("—".to_string(), |r| format!("{:.1}%", r * 100.0)),
    );
    if firing.is_empty() {
        page.push_str("<div class=\"alerts ok\" id=\"alerts\">No alerts firing.</div>");
    } else {
        page.push_str("<div class=\"alerts\" id=\"alerts\"><b>Firing:</b><ul>");
        for alert in &firing {
            let _ = write!(
                page,
                "<li data-alert=\"{0}\">{0}: {1}</li>",
                html_escape(alert.as_str()),
                html_escape(alert.message())
            );
        }
        page.push_str("</ul></div>");
    }
    page.push_str("<div class=\"grid\">");
    for (title, series) in &panels {
        let points: usize = series.iter().map(|s| s.points.len()).sum();
        let _ = write!(
            page,
            "<section class=\"panel\" data-panel=\"{0}\" data-points=\"{points}\"><h2>{0}</h2>",
            html_escape(title)
        );
        for s in series {
            page.push_str(&chart(s, x_range, &champions, &alerts));
        }
        page.push_str("</section>");
    }
    page.push_str("</div><p class=\"meta\">Green dashed lines: champion changes. Red lines: alert transitions. \
                   Yellow dashed lines: alert thresholds.</p></body></html>");
    page
}
