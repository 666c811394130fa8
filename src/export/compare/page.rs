//! The comparison page: the runs' best-so-far curves overlaid against iterations, wall
//! time and LLM spend, and the table of final figures. Drawn as inline SVG with the
//! embedded dashboard's style, axes and number formats: no scripts, no external
//! assets, so the file opens offline. maud escapes every string from the files.

use std::fmt::Write as _;

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::{CurvePoint, FinalRun, RunFigures};
use crate::export::http::page::{clip, short, thinned, ticks, Unit, MAX_HOVER_POINTS, STYLE};

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 34.0;

/// Line colours, one per run; past them the colours repeat dashed.
const COLOURS: [&str; 8] = [
    "#5ab0f0", "#3fb950", "#f0883e", "#d2a8ff", "#e3b341", "#ff7b72", "#56d4dd", "#c9d1d9",
];

/// The comparison's own rules, after the embedded page's.
fn style() -> String {
    let mut style = String::from(concat!(
        ".run{fill:none;stroke-width:1.8}.dashed{stroke-dasharray:6 3}",
        ".swatch{display:inline-block;width:14px;height:3px;vertical-align:middle;margin-right:4px}",
        ".runs{list-style:none;padding:0;margin:6px 0 10px}.runs li{margin:2px 0}",
        ".notes{font-size:12px;color:#8a93a3;margin:4px 0 0;padding-left:16px}",
        ".figures td,.figures th{white-space:nowrap}.figures{overflow-x:auto}",
        ".wide{grid-column:1/-1}",
    ));
    for (i, colour) in COLOURS.iter().enumerate() {
        let _ = write!(
            style,
            ".r{i}{{stroke:{colour}}}.s{i}{{background:{colour}}}.d{i}{{fill:{colour}}}\
             .s{i}.dashed{{background:repeating-linear-gradient(90deg,{colour} 0 5px,transparent 5px 8px)}}"
        );
    }
    style
}

/// A run's colour class and whether its line is dashed.
fn colour(i: usize) -> (usize, bool) {
    (i % COLOURS.len(), (i / COLOURS.len()) % 2 == 1)
}

/// The classes of a run's swatch in the legend and the table.
fn swatch(colour: usize, dashed: bool) -> String {
    format!("swatch s{colour}{}", if dashed { " dashed" } else { "" })
}

/// The x axis of a chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Axis {
    Iterations,
    WallTime,
    Spend,
}

impl Axis {
    fn title(self) -> &'static str {
        match self {
            Axis::Iterations => "Best Sharpe so far by iteration",
            Axis::WallTime => "Best Sharpe so far by wall time",
            Axis::Spend => "Best Sharpe so far by LLM spend",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Axis::Iterations => "iteration",
            Axis::WallTime => "wall time since the start",
            Axis::Spend => "cumulative LLM spend",
        }
    }

    fn x(self, p: &CurvePoint) -> f64 {
        match self {
            Axis::Iterations => p.iteration,
            Axis::WallTime => p.seconds,
            Axis::Spend => p.spend_usd,
        }
    }

    /// The unit an axis reaching `max` reads in, in the axis's own units: seconds,
    /// minutes or hours on the wall-time axis, 1 elsewhere.
    fn tick_unit(self, max: f64) -> f64 {
        match self {
            Axis::WallTime if max >= 7200.0 => 3600.0,
            Axis::WallTime if max >= 120.0 => 60.0,
            _ => 1.0,
        }
    }

    /// A tick's label, every tick of an axis reaching `max` in one unit.
    fn format_tick(self, x: f64, max: f64) -> String {
        match (self, self.tick_unit(max)) {
            (Axis::Iterations, _) => Unit::Count.format(x),
            (Axis::WallTime, unit) if unit >= 3600.0 => format!("{} h", short(x / 3600.0)),
            (Axis::WallTime, unit) if unit >= 60.0 => format!("{} min", short(x / 60.0)),
            (Axis::WallTime, _) if max < 1.0 => format!("{} ms", short(x * 1000.0)),
            (Axis::WallTime, _) => format!("{} s", short(x)),
            (Axis::Spend, _) if max < 0.1 => format!("${x:.3}"),
            (Axis::Spend, _) => usd(x),
        }
    }
}

/// Seconds, humanised: 850 ms, 42 s, 12.5 min, 3.2 h.
fn duration(seconds: f64) -> String {
    match seconds {
        s if s != 0.0 && s.abs() < 1.0 => format!("{} ms", short(s * 1000.0)),
        s if s < 120.0 => format!("{} s", short(s)),
        s if s < 7200.0 => format!("{} min", short(s / 60.0)),
        s => format!("{} h", short(s / 3600.0)),
    }
}

fn usd(value: f64) -> String {
    if value != 0.0 && value.abs() < 0.01 {
        format!("${value:.4}")
    } else {
        format!("${value:.2}")
    }
}

/// One chart: the runs that have a curve on this axis, overlaid as step lines.
fn chart(axis: Axis, runs: &[FinalRun]) -> Markup {
    let drawn: Vec<(usize, &FinalRun, &[CurvePoint])> = runs
        .iter()
        .enumerate()
        .filter(|(_, r)| axis != Axis::Spend || r.has_spend())
        .filter_map(|(i, r)| Some((i, r, r.curve.as_deref()?)))
        .collect();
    let left_out: Vec<(&FinalRun, &'static str)> = runs
        .iter()
        .filter(|r| !drawn.iter().any(|(_, d, _)| std::ptr::eq(*d, *r)))
        .map(|r| {
            let why = if r.curve.is_none() {
                "no best-so-far curve in its file"
            } else {
                "no LLM spend"
            };
            (r, why)
        })
        .collect();
    let view_box = format!("0 0 {WIDTH} {HEIGHT}");
    let points = || drawn.iter().flat_map(|(_, _, c)| c.iter());
    let body = if drawn.is_empty() {
        let why = if axis == Axis::Spend && runs.iter().any(FinalRun::has_curve) {
            "No run spent anything on LLM calls."
        } else {
            "No run has a best-so-far curve."
        };
        html! { div class="key" { (why) } }
    } else {
        let (mut x0, mut x1) = (0.0f64, f64::NEG_INFINITY);
        let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
        for p in points() {
            x0 = x0.min(axis.x(p));
            x1 = x1.max(axis.x(p));
            y0 = y0.min(p.best);
            y1 = y1.max(p.best);
        }
        if x1 - x0 < 1e-12 {
            x1 = x0 + 1.0;
        }
        if y1 - y0 < 1e-9 {
            let pad = if y0 == 0.0 { 1.0 } else { y0.abs() * 0.2 };
            (y0, y1) = (y0 - pad, y1 + pad);
        } else {
            let pad = (y1 - y0) * 0.08;
            (y0, y1) = (y0 - pad, y1 + pad);
        }
        let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * (WIDTH - LEFT - RIGHT);
        let sy = |y: f64| HEIGHT - BOTTOM - (y - y0) / (y1 - y0) * (HEIGHT - TOP - BOTTOM);
        let mut grid = String::new();
        for tick in ticks(y0, y1, 4) {
            let _ = write!(
                grid,
                r#"<line class="grid-line" x1="{LEFT}" x2="{:.0}" y1="{y:.1}" y2="{y:.1}"/><text class="axis axis-y" x="{:.0}" y="{:.1}" text-anchor="end">{}</text>"#,
                WIDTH - RIGHT,
                LEFT - 4.0,
                sy(tick) + 3.0,
                Unit::Plain.format(tick),
                y = sy(tick),
            );
        }
        // Round ticks in the unit the axis reads in (minutes for a 30-minute run).
        let scale = axis.tick_unit(x1);
        let mut x_ticks: Vec<f64> = ticks(x0 / scale, x1 / scale, 6)
            .into_iter()
            .map(|t| t * scale)
            .collect();
        if axis == Axis::Iterations {
            x_ticks = x_ticks.iter().map(|t| t.round()).collect();
            x_ticks.dedup();
        }
        for tick in x_ticks {
            let _ = write!(
                grid,
                r#"<text class="axis axis-x" x="{:.1}" y="{:.0}" text-anchor="middle">{}</text>"#,
                sx(tick),
                HEIGHT - BOTTOM + 14.0,
                axis.format_tick(tick, x1),
            );
        }
        let _ = write!(
            grid,
            r#"<text class="axis" x="{:.0}" y="{:.0}" text-anchor="middle">{}</text>"#,
            LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
            HEIGHT - 4.0,
            axis.name(),
        );
        html! {
            svg viewBox=(view_box) role="img" aria-label=(axis.title()) {
                (PreEscaped(grid))
                @for (i, run, curve) in &drawn {
                    @let (c, dashed) = colour(*i);
                    @let label = run.figures.label();
                    polyline class=(format!("run r{c}{}", if dashed { " dashed" } else { "" }))
                        data-run=(run.figures.run_id) data-points=(curve.len())
                        points=(steps(curve, |p| sx(axis.x(p)), |p| sy(p.best))) {
                        title { (clip(&label)) }
                    }
                    // Hover labels at the improvements (the last point is the run's end).
                    @for k in thinned(curve.len().saturating_sub(1), MAX_HOVER_POINTS) {
                        @let p = &curve[k];
                        circle class=(format!("dot d{c}")) cx=(format!("{:.1}", sx(axis.x(p)))) cy=(format!("{:.1}", sy(p.best))) r="3" {
                            title {
                                (clip(&label)) ": best Sharpe " (short(p.best)) " at iteration " (p.iteration)
                                " · " (duration(p.seconds)) " · " (usd(p.spend_usd))
                            }
                        }
                    }
                }
            }
        }
    };
    html! {
        section class="panel" data-panel=(axis.title()) data-curves=(drawn.len()) {
            h2 { (axis.title()) }
            (body)
            @if !left_out.is_empty() {
                ul class="notes" {
                    @for (run, why) in &left_out {
                        li data-left-out=(run.figures.run_id) { (clip(&run.figures.label())) ": " (why) }
                    }
                }
            }
        }
    }
}

/// The points of a step line through `curve`: each value holds until the next.
pub(super) fn steps(
    curve: &[CurvePoint],
    x: impl Fn(&CurvePoint) -> f64,
    y: impl Fn(&CurvePoint) -> f64,
) -> String {
    let mut out = String::with_capacity(curve.len() * 24);
    let mut previous: Option<f64> = None;
    for p in curve {
        let (px, py) = (x(p), y(p));
        if let Some(held) = previous {
            let _ = write!(out, "{px:.1},{held:.1} ");
        }
        let _ = write!(out, "{px:.1},{py:.1} ");
        previous = Some(py);
    }
    out.truncate(out.trim_end().len());
    out
}

/// A cell of the figures table: the exact value in `data-value`, a readable one shown.
fn cell(field: &str, exact: Option<String>, shown: Option<String>) -> Markup {
    html! {
        td data-field=(field) data-value=[exact] { (shown.unwrap_or_else(|| "—".into())) }
    }
}

fn exact<T: serde::Serialize>(value: &Option<T>) -> Option<String> {
    value.as_ref().and_then(|v| serde_json::to_string(v).ok())
}

/// The table of final figures, one row per run.
fn table(runs: &[FinalRun]) -> Markup {
    html! {
        section class="panel wide" data-panel="Final figures" {
            h2 { "Final figures" }
            div class="figures" {
                table {
                    tr {
                        th { "run" } th { "iterations" } th { "success rate" } th { "best Sharpe" }
                        th { "champion changes" } th { "wall time" } th { "time per iteration" }
                        th { "LLM calls" } th { "LLM spend" } th { "alerts fired" } th { "firing at the end" }
                    }
                    @for (i, run) in runs.iter().enumerate() {
                        @let f: &RunFigures = &run.figures;
                        @let (c, dashed) = colour(i);
                        tr data-run=(f.run_id) {
                            td data-field="label" title=(f.file.display().to_string()) {
                                span class=(swatch(c, dashed)) {} (clip(&f.label()))
                            }
                            (cell("iterations", Some(f.iterations.to_string()), Some(f.iterations.to_string())))
                            (cell("success_rate", exact(&f.success_rate), f.success_rate.map(|r| format!("{:.1}%", r * 100.0))))
                            (cell("best_sharpe", exact(&f.best_sharpe), f.best_sharpe.map(short)))
                            (cell("champion_changes", exact(&f.champion_changes), f.champion_changes.map(|n| n.to_string())))
                            (cell("wall_time_seconds", exact(&Some(f.wall_time_seconds)), Some(duration(f.wall_time_seconds))))
                            (cell("mean_iteration_seconds", exact(&f.mean_iteration_seconds), f.mean_iteration_seconds.map(duration)))
                            (cell("llm_calls", exact(&f.llm_calls), f.llm_calls.map(|n| n.to_string())))
                            (cell("llm_cost_usd", exact(&f.llm_cost_usd), f.llm_cost_usd.map(usd)))
                            (cell("alerts_fired", Some(f.alerts_fired.to_string()), Some(f.alerts_fired.to_string())))
                            td data-field="alerts_firing_at_end" {
                                @if f.alerts_firing_at_end.is_empty() { "none" } @else { (f.alerts_firing_at_end.join(", ")) }
                            }
                        }
                    }
                }
            }
            @let noted: Vec<&RunFigures> = runs.iter().map(|r| &r.figures).filter(|f| !f.notes.is_empty()).collect();
            @if !noted.is_empty() {
                ul class="notes" {
                    @for f in noted {
                        @for note in &f.notes {
                            li data-note=(f.run_id) { (clip(&f.label())) ": " (note) }
                        }
                    }
                }
            }
        }
    }
}

/// Renders the whole page.
pub(super) fn render(runs: &[FinalRun]) -> String {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "loopwatch compare: " (runs.len()) " runs" }
                style { (PreEscaped(STYLE)) (PreEscaped(style())) }
            }
            body {
                h1 { "loopwatch compare" }
                div class="meta" {
                    (runs.len()) " runs. Best Sharpe so far: the best Sharpe ratio of any strategy up to that point, "
                    "held until a better one; one line per run, labelled by experiment, loop and run id."
                }
                ul class="runs" {
                    @for (i, run) in runs.iter().enumerate() {
                        @let (c, dashed) = colour(i);
                        li data-run=(run.figures.run_id) {
                            span class=(swatch(c, dashed)) {} (clip(&run.figures.label()))
                        }
                    }
                }
                div class="grid" {
                    @for axis in [Axis::Iterations, Axis::WallTime, Axis::Spend] { (chart(axis, runs)) }
                    (table(runs))
                }
                p class="meta" { "Hover a point for its run, best Sharpe, iteration, wall time and spend." }
            }
        }
    };
    page.into_string()
}
