//! The embedded dashboard at `GET /`, for people who never open Grafana: the four
//! panels of the Grafana dashboard with readable charts (iteration axis, y from zero for
//! quantities that cannot be negative, humanised units, labelled thresholds, each point's
//! iteration, value and time on hover), the best Sharpe so far, why strategies fail,
//! an alert timeline, and this run's containers. Drawn as inline SVG on the server from
//! a [`Snapshot`]: no scripts, no external assets, so it works offline; it refreshes
//! every 5 s and reflows from 1280 px down to a 390 px phone. maud escapes every string,
//! so text from the loop (champion ids, failure reasons) cannot inject markup.

use std::fmt::Write as _;

use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::alerts::AlertName;
use crate::export::view::{self, Interval, Restart};
use crate::export::{GpuReadings, Snapshot};
use crate::records::{HistoryPoint, TimePoint};

mod servers;

const WIDTH: f64 = 440.0;
const HEIGHT: f64 = 130.0;
const LEFT: f64 = 58.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 22.0;
/// Points drawn per line at most (the history holds up to 600).
const MAX_LINE_POINTS: usize = 200;
/// Characters of a champion id, failure reason or container name shown on the page.
pub(crate) const MAX_TEXT: usize = 120;
/// Points per line carrying a hover label.
pub(crate) const MAX_HOVER_POINTS: usize = 30;

pub(crate) const STYLE: &str = concat!(
    "body{font:14px system-ui,sans-serif;margin:12px;background:#111418;color:#d8dee9}",
    "h1{font-size:18px;margin:0 0 4px}.meta{color:#8a93a3;margin-bottom:8px}",
    ".grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,460px),1fr));gap:12px}",
    ".panel{background:#1b1f26;border:1px solid #2b313b;border-radius:6px;padding:8px;min-width:0}",
    ".panel h2{font-size:15px;margin:0 0 6px}.legend{font-size:12px;color:#aab3c2}",
    "svg{display:block;width:100%;height:auto}.axis{fill:#8a93a3;font-size:10px}",
    ".grid-line{stroke:#2b313b}.l0{fill:none;stroke:#5ab0f0;stroke-width:1.5}",
    ".l1{fill:none;stroke:#3fb950;stroke-width:1.5}.dot{fill:transparent}.dot:hover{fill:#fff}",
    ".champion{stroke:#3fb950;stroke-width:1;stroke-dasharray:2 3}",
    ".threshold{stroke:#e3b341;stroke-dasharray:4 3}.tlabel{fill:#e3b341;font-size:10px}",
    ".empty{fill:#8a93a3;font-size:12px}.alerts{margin:6px 0 12px}.alerts li{color:#f85149}",
    ".ok{color:#3fb950}.lane{fill:#f85149}.lane-bg{fill:#222831}",
    ".bars{font-size:12px}.bar{display:flex;gap:6px;align-items:center;margin:2px 0}",
    ".bar .fill{background:#f0883e;height:10px;border-radius:2px}",
    ".bar .reason{flex:0 0 45%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}",
    "table{border-collapse:collapse;font-size:12px;width:100%}td,th{text-align:left;padding:2px 6px}",
    "th{color:#8a93a3}.key{color:#8a93a3;font-size:12px}tr.hung td{color:#f85149}",
    ".panel h3{font-size:13px;margin:8px 0 2px}td.down{color:#f85149}",
);

/// How a chart's numbers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Bytes,
    Percent,
    Seconds,
    Count,
    Ratio,
    Plain,
    /// US dollars.
    Usd,
}

impl Unit {
    /// A value with its unit, humanised: 13.2 MiB, 87%, 350 ms.
    pub(crate) fn format(self, value: f64) -> String {
        match self {
            Unit::Bytes => {
                let units = ["B", "KiB", "MiB", "GiB", "TiB"];
                let mut v = value;
                let mut i = 0;
                while v.abs() >= 1024.0 && i < units.len() - 1 {
                    v /= 1024.0;
                    i += 1;
                }
                format!("{} {}", short(v), units[i])
            }
            Unit::Percent => format!("{}%", short(value)),
            Unit::Seconds if value != 0.0 && value.abs() < 1.0 => {
                format!("{} ms", short(value * 1000.0))
            }
            Unit::Seconds => format!("{} s", short(value)),
            Unit::Count => format!("{}", value.round()),
            Unit::Ratio | Unit::Plain => short(value),
            Unit::Usd => format!("${}", short(value)),
        }
    }

    /// Whether the quantity cannot be negative, so its axis starts at zero.
    fn starts_at_zero(self) -> bool {
        !matches!(self, Unit::Plain)
    }
}

/// Three significant digits at most, no trailing noise.
pub(crate) fn short(value: f64) -> String {
    if !value.is_finite() {
        return "—".into();
    }
    // No "-0" on an axis.
    let value = if value == 0.0 { 0.0 } else { value };
    if value == value.trunc() && value.abs() < 1e9 {
        return format!("{value:.0}");
    }
    let magnitude = value.abs().log10().floor() as i32;
    let decimals = (2 - magnitude).clamp(0, 4) as usize;
    format!("{value:.decimals$}")
}

/// Text from the loop, cut to `MAX_TEXT` characters for the page (the JSON has it all).
pub(crate) fn clip(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(MAX_TEXT) {
        Some((end, _)) => format!("{}…", &text[..end]).into(),
        None => text.into(),
    }
}

/// Local wall-clock time of a Unix timestamp, `HH:MM:SS` (UTC).
fn clock(unix: f64) -> String {
    let secs = unix.max(0.0) as u64 % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// What a chart's x axis counts.
///
/// Until the first iteration, what the samplers read on the clock — the loop's memory
/// and CPU, the containers, the LLM calls — and the alert timeline are drawn against
/// the time since the run started: a plain command, or a loop before its first
/// iteration, has nothing else to be drawn against. Once iterations arrive every chart
/// is on the iteration axis, lined up with the per-iteration charts (time per
/// iteration, the strategies' performance, diversity): each sample at the number of
/// iterations completed when it was taken, from the first iteration the page still
/// draws (the latest 600).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Axis {
    /// Iteration numbers: whole, each label once.
    Iteration,
    /// Seconds since the run started, labelled `0s 30s 1m 1m30s … 2h`.
    Time,
    /// The run's cumulative LLM spend, in US dollars, labelled `$0 $0.05 $0.10 …`.
    Spend,
}

impl Axis {
    /// Its name, as the page's `data-axis` says it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Axis::Iteration => "iteration",
            Axis::Time => "time",
            Axis::Spend => "spend",
        }
    }

    /// The narrowest range of x the axis spreads over its width: one iteration or one
    /// second, a billionth of a dollar.
    fn min_span(self) -> f64 {
        match self {
            Axis::Iteration | Axis::Time => 1.0,
            Axis::Spend => 1e-9,
        }
    }

    /// About `count` tick positions between `from` and `to`, with their labels: whole
    /// iterations, or round times since the start. No label is printed twice.
    pub(crate) fn ticks(self, from: f64, to: f64, count: usize) -> Vec<(f64, String)> {
        match self {
            Axis::Iteration => iteration_ticks(from, to, count)
                .into_iter()
                .map(|i| (i as f64, i.to_string()))
                .collect(),
            Axis::Time => time_ticks(from, to, count)
                .into_iter()
                .map(|t| (t, elapsed(t)))
                .collect(),
            Axis::Spend => spend_ticks(from, to, count),
        }
    }

    /// Where a point at `x` is, for its hover label.
    fn place(self, x: f64) -> String {
        match self {
            Axis::Iteration => format!("iteration {}", x.round()),
            Axis::Time => format!("{} since the start", elapsed(x)),
            Axis::Spend => format!("{} spent", Unit::Usd.format(x)),
        }
    }
}

/// The axis of what is drawn over the run rather than at an iteration (the samples'
/// charts and the alert timeline): the time since the start until the first
/// iteration, then the iterations. Never the spend: the spend axis is the best Sharpe
/// so far's alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SampleAxis {
    /// The iterations completed.
    Iteration,
    /// Seconds since the run started.
    Time,
}

impl From<SampleAxis> for Axis {
    fn from(axis: SampleAxis) -> Axis {
        match axis {
            SampleAxis::Iteration => Axis::Iteration,
            SampleAxis::Time => Axis::Time,
        }
    }
}

/// Round amounts of dollars between `from` and `to`, about `count` of them, each
/// printed with the decimals its step needs (`$0.05`, `$0.00002`, `$20`): never one
/// label twice.
pub(crate) fn spend_ticks(from: f64, to: f64, count: usize) -> Vec<(f64, String)> {
    if !(from.is_finite() && to.is_finite()) || to < from {
        return Vec::new();
    }
    let positions = ticks(from, to, count);
    let step = match positions.as_slice() {
        [a, b, ..] => b - a,
        _ => (to - from).max(1e-9),
    };
    let decimals = (-step.log10()).ceil().clamp(0.0, 12.0) as usize;
    positions
        .into_iter()
        .map(|x| {
            // No "$-0.00" for a tick a rounding error below zero.
            let x = if x.abs() < step * 1e-6 { 0.0 } else { x };
            (x, format!("${x:.decimals$}"))
        })
        .collect()
}

/// One line of a chart: (x on its axis, value, Unix time) per point.
struct Series {
    label: &'static str,
    points: Vec<(f64, f64, f64)>,
}

/// A change of the champion, marked on a chart: where it is on the chart's axis, and
/// the iteration it came in.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Mark {
    x: f64,
    iteration: u64,
}

/// One chart: its axis, lines, unit, threshold and the champion changes to mark, and
/// whether its lines are steps (each value held until the next point: a best so far
/// known at its improvements) or join their points.
struct Chart<'a> {
    title: &'static str,
    axis: Axis,
    unit: Unit,
    series: Vec<Series>,
    threshold: Option<(f64, String)>,
    fixed_max: Option<f64>,
    marks: &'a [Mark],
    step: bool,
}

/// A line over the iterations kept.
fn series(
    label: &'static str,
    history: &[HistoryPoint],
    value: impl Fn(&HistoryPoint) -> Option<f64>,
) -> Series {
    Series {
        label,
        points: history
            .iter()
            .filter_map(|p| {
                value(p)
                    .filter(|v| v.is_finite())
                    .map(|v| (p.iteration as f64, v, p.at))
            })
            .collect(),
    }
}

/// A line over the samples kept, against seconds since the start.
fn over_time(
    label: &'static str,
    samples: &[TimePoint],
    value: impl Fn(&TimePoint) -> Option<f64>,
) -> Series {
    Series {
        label,
        points: samples
            .iter()
            .filter_map(|p| {
                value(p)
                    .filter(|v| v.is_finite())
                    .map(|v| (p.elapsed_seconds, v, p.at))
            })
            .collect(),
    }
}

/// A line over the samples kept, against the iterations completed when each was
/// taken, from `first` on (the first iteration the page still draws).
fn over_iterations(
    label: &'static str,
    samples: &[TimePoint],
    first: f64,
    value: impl Fn(&TimePoint) -> Option<f64>,
) -> Series {
    Series {
        label,
        points: samples
            .iter()
            .filter(|p| p.iterations as f64 >= first)
            .filter_map(|p| {
                value(p)
                    .filter(|v| v.is_finite())
                    .map(|v| (p.iterations as f64, v, p.at))
            })
            .collect(),
    }
}

/// A line over the samples kept, on `axis`: against the time since the start, or
/// against the iterations completed (from the first the page draws, whose range is
/// `ranges`).
fn sampled(
    label: &'static str,
    samples: &[TimePoint],
    axis: SampleAxis,
    ranges: Ranges,
    value: impl Fn(&TimePoint) -> Option<f64>,
) -> Series {
    match axis {
        SampleAxis::Time => over_time(label, samples, value),
        SampleAxis::Iteration => over_iterations(label, samples, ranges.iteration.0, value),
    }
}

/// The x ranges of the page's axes, and whether any iteration was kept.
#[derive(Debug, Clone, Copy)]
struct Ranges {
    iteration: (f64, f64),
    time: (f64, f64),
    spend: (f64, f64),
    iterations: bool,
}

impl Ranges {
    fn of(self, axis: Axis) -> (f64, f64) {
        match axis {
            Axis::Iteration => self.iteration,
            Axis::Time => self.time,
            Axis::Spend => self.spend,
        }
    }
}

/// Every `step`-th index of `len`, the last always included.
pub(crate) fn thinned(len: usize, most: usize) -> impl Iterator<Item = usize> {
    let step = len.div_ceil(most.max(1)).max(1);
    (0..len).filter(move |i| i % step == 0 || *i + 1 == len)
}

/// The points of a step line through `points` (x, value, time), on the chart's scales:
/// each value holds until the next point's x, then steps to its value.
fn steps(points: &[(f64, f64, f64)], sx: impl Fn(f64) -> f64, sy: impl Fn(f64) -> f64) -> String {
    let mut out = String::with_capacity(points.len() * 24);
    let mut held: Option<f64> = None;
    for &(x, y, _) in points {
        if let Some(held) = held {
            let _ = write!(out, "{:.1},{:.1} ", sx(x), sy(held));
        }
        let _ = write!(out, "{:.1},{:.1} ", sx(x), sy(y));
        held = Some(y);
    }
    out.truncate(out.trim_end().len());
    out
}

/// The round step (1, 2 or 5 times a power of ten) at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw > 0.0 && raw.is_finite()) {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(raw)
}

/// Round tick positions between `from` and `to`, about `count` of them.
pub(crate) fn ticks(from: f64, to: f64, count: usize) -> Vec<f64> {
    let span = (to - from).max(1e-9);
    let step = nice_step(span / count.max(1) as f64);
    let mut tick = (from / step).ceil() * step;
    let mut out = Vec::new();
    while tick <= to + step * 1e-9 && out.len() < 12 {
        out.push(tick);
        tick += step;
    }
    out
}

/// Whole iteration numbers between `from` and `to`, about `count` of them, a round
/// step (1, 2, 5, 10, 20 …) apart: never a fraction, never one twice.
pub(crate) fn iteration_ticks(from: f64, to: f64, count: usize) -> Vec<u64> {
    if !(from.is_finite() && to.is_finite()) {
        return Vec::new();
    }
    let (first, last) = (from.max(0.0).ceil() as u64, to.max(0.0).floor() as u64);
    if last < first {
        return Vec::new();
    }
    let step = nice_step((last - first) as f64 / count.max(1) as f64).max(1.0) as u64;
    let start = first.div_ceil(step) * step;
    (start..=last)
        .step_by(step as usize)
        .take(2 * count + 2)
        .collect()
}

/// Round steps of a time axis, in seconds: seconds, minutes and hours a clock reads.
const TIME_STEPS: [f64; 18] = [
    1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
    10_800.0, 21_600.0, 43_200.0, 86_400.0,
];

/// Times between `from` and `to` seconds, about `count` of them, a round step (1 s,
/// 5 s, 30 s, 1 min, 5 min, 1 h … then whole days) apart: whole seconds, never one
/// twice.
pub(crate) fn time_ticks(from: f64, to: f64, count: usize) -> Vec<f64> {
    if !(from.is_finite() && to.is_finite()) || to < from {
        return Vec::new();
    }
    let raw = (to - from) / count.max(1) as f64;
    let step = TIME_STEPS
        .iter()
        .copied()
        .find(|s| *s >= raw)
        .unwrap_or_else(|| nice_step(raw / 86_400.0).max(1.0).round() * 86_400.0);
    let mut tick = (from / step).ceil() * step;
    let mut out = Vec::new();
    while tick <= to && out.len() < 2 * count + 2 {
        out.push(tick);
        tick += step;
    }
    out
}

/// Seconds since the start, as a clock's reader says them: `0s`, `45s`, `1m30s`,
/// `2h`, `1d6h` (rounded to the second; each whole second reads differently).
pub(crate) fn elapsed(seconds: f64) -> String {
    let total = if seconds.is_finite() {
        seconds.max(0.0).round() as u64
    } else {
        0
    };
    let parts = [
        (total / 86_400, 'd'),
        (total / 3600 % 24, 'h'),
        (total / 60 % 60, 'm'),
        (total % 60, 's'),
    ];
    let (Some(first), Some(last)) = (
        parts.iter().position(|(n, _)| *n > 0),
        parts.iter().rposition(|(n, _)| *n > 0),
    ) else {
        return "0s".into();
    };
    parts[first..=last]
        .iter()
        .fold(String::new(), |mut out, (n, unit)| {
            let _ = write!(out, "{n}{unit}");
            out
        })
}

fn chart(c: &Chart<'_>, ranges: Ranges) -> Markup {
    let points: usize = c.series.iter().map(|s| s.points.len()).sum();
    let latest = |s: &Series| {
        s.points
            .last()
            .map_or("—".to_string(), |p| c.unit.format(p.1))
    };
    let legend = html! {
        div class="legend" {
            b { (c.title) } " "
            @for (i, s) in c.series.iter().enumerate() {
                @if c.series.len() > 1 { span class=(format!("key k{i}")) { " · " (s.label) " " } }
                b { (latest(s)) }
            }
        }
    };
    let view_box = format!("0 0 {WIDTH} {HEIGHT}");
    if points == 0 {
        let empty = match (c.axis, ranges.iterations) {
            (Axis::Iteration, false) => "no iterations yet",
            (Axis::Spend, _) => "no spend or no Sharpe ratio yet",
            _ => "no data yet",
        };
        return html! {
            div class="series" data-series=(c.title) data-axis=(c.axis.as_str()) data-points="0" {
                (legend)
                svg viewBox=(view_box) role="img" aria-label=(c.title) {
                    text x="60" y="60" class="empty" { (empty) }
                }
            }
        };
    }
    let values = || c.series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let mut y_max = values().fold(f64::NEG_INFINITY, f64::max);
    let mut y_min = if c.unit.starts_at_zero() {
        0.0f64.min(values().fold(f64::INFINITY, f64::min))
    } else {
        values().fold(f64::INFINITY, f64::min)
    };
    if let Some((t, _)) = &c.threshold {
        y_max = y_max.max(*t);
        y_min = y_min.min(*t);
    }
    if let Some(fixed) = c.fixed_max {
        y_max = y_max.max(fixed);
    }
    if y_max - y_min < 1e-9 {
        let unit_span = match c.unit {
            Unit::Bytes => 1024.0 * 1024.0,
            Unit::Count => 2.0,
            _ => 1.0,
        };
        y_max = y_min
            + if y_min == 0.0 {
                unit_span
            } else {
                y_min.abs() * 0.2
            };
    } else if c.fixed_max.is_none() {
        y_max += (y_max - y_min) * 0.08;
    }
    let (x0, x1) = ranges.of(c.axis);
    let span = (x1 - x0).max(c.axis.min_span());
    let sx = |x: f64| LEFT + (x - x0) / span * (WIDTH - LEFT - RIGHT);
    let sy = |y: f64| HEIGHT - BOTTOM - (y - y_min) / (y_max - y_min) * (HEIGHT - TOP - BOTTOM);
    let mut grid = String::new();
    let y_ticks = ticks(y_min, y_max, 3);
    let y_ticks = if c.unit == Unit::Count {
        // Whole numbers only: no "1, 1" from ticks at 0.5.
        let mut whole: Vec<f64> = y_ticks.iter().map(|t| t.round()).collect();
        whole.dedup();
        whole
    } else {
        y_ticks
    };
    for tick in y_ticks {
        let _ = write!(
            grid,
            r#"<line class="grid-line" x1="{LEFT}" x2="{:.0}" y1="{y:.1}" y2="{y:.1}"/><text class="axis axis-y" x="{:.0}" y="{:.1}" text-anchor="end">{}</text>"#,
            WIDTH - RIGHT,
            LEFT - 4.0,
            sy(tick) + 3.0,
            c.unit.format(tick),
            y = sy(tick),
        );
    }
    for (tick, label) in c.axis.ticks(x0, x1, 5) {
        let _ = write!(
            grid,
            r#"<text class="axis axis-x" x="{:.1}" y="{:.0}" text-anchor="middle">{label}</text>"#,
            sx(tick),
            HEIGHT - 6.0,
        );
    }
    html! {
        div class="series" data-series=(c.title) data-axis=(c.axis.as_str()) data-points=(points) {
            (legend)
            svg viewBox=(view_box) role="img" aria-label=(c.title) {
                (PreEscaped(grid))
                @for m in c.marks.iter().filter(|m| m.x >= x0) {
                    @let exact = c.step.then_some(m.x);
                    line class="champion" data-iteration=[exact.map(|_| m.iteration)] data-x=[exact]
                        x1=(format!("{:.1}", sx(m.x))) x2=(format!("{:.1}", sx(m.x)))
                        y1=(TOP) y2=(HEIGHT - BOTTOM) {
                        title {
                            "champion changed at iteration " (m.iteration)
                            @if c.axis == Axis::Spend { ", " (Unit::Usd.format(m.x)) " spent" }
                        }
                    }
                }
                @if let Some((t, label)) = &c.threshold {
                    line class="threshold" x1=(LEFT) x2=(WIDTH - RIGHT)
                        y1=(format!("{:.1}", sy(*t))) y2=(format!("{:.1}", sy(*t))) {}
                    text class="tlabel" x=(WIDTH - RIGHT - 2.0) y=(format!("{:.1}", sy(*t) - 3.0)) text-anchor="end" { (label) }
                }
                @for (i, s) in c.series.iter().enumerate() {
                    polyline class=(format!("l{}", i.min(1))) points=(
                        if c.step { steps(&s.points, sx, sy) } else {
                            thinned(s.points.len(), MAX_LINE_POINTS)
                                .map(|k| format!("{:.1},{:.1}", sx(s.points[k].0), sy(s.points[k].1)))
                                .collect::<Vec<_>>()
                                .join(" ")
                        }
                    ) {}
                    @for k in thinned(s.points.len(), MAX_HOVER_POINTS) {
                        @let (x, y, at) = s.points[k];
                        // A step line's points are few and exact: each says its values.
                        @let exact = c.step.then_some((x, y));
                        circle class="dot" data-x=[exact.map(|e| e.0)] data-y=[exact.map(|e| e.1)]
                            cx=(format!("{:.1}", sx(x))) cy=(format!("{:.1}", sy(y))) r="3" {
                            title { (s.label) ": " (c.unit.format(y)) " · " (c.axis.place(x)) " · " (clock(at)) }
                        }
                    }
                }
            }
        }
    }
}

/// The alert timeline: one lane per alert, its firing intervals over `axis` (the
/// iterations, or the time since the run started at `start`, Unix seconds). A lane
/// marks each restart of the loop by `loopwatch run`, and, when the run has an LLM
/// budget, a last one its warnings and its first refusal.
fn timeline(
    lanes: &std::collections::BTreeMap<AlertName, Vec<Interval>>,
    restarts: &[Restart],
    budget: Option<&[view::BudgetMarkView]>,
    axis: SampleAxis,
    x_range: (f64, f64),
    start: f64,
) -> Markup {
    let (x0, x1) = x_range;
    let lane_height = 16.0;
    let extra = 1 + usize::from(budget.is_some());
    let height = lane_height * (lanes.len() + extra) as f64 + 22.0;
    let restart_y = lanes.len() as f64 * lane_height + 4.0;
    let budget_y = restart_y + lane_height;
    let left = 150.0;
    let sx = |x: f64| left + (x.clamp(x0, x1) - x0) / (x1 - x0).max(1.0) * (WIDTH - left - RIGHT);
    // Where something that happened in iteration `iteration` at `at` is on the axis,
    // and how its hover label says when.
    let x = |iteration: u64, at: f64| match axis {
        SampleAxis::Iteration => iteration as f64,
        SampleAxis::Time => at - start,
    };
    let when = |iteration: u64, at: f64| match axis {
        SampleAxis::Iteration => format!("iteration {iteration} ({})", clock(at)),
        SampleAxis::Time => format!("{} ({})", elapsed(at - start), clock(at)),
    };
    let axis = Axis::from(axis);
    html! {
        svg class="timeline" data-axis=(axis.as_str()) viewBox=(format!("0 0 {WIDTH} {height}")) role="img" aria-label="alert timeline" {
            @for (row, (alert, intervals)) in lanes.iter().enumerate() {
                @let y = row as f64 * lane_height + 4.0;
                g data-lane=(alert.as_str()) data-intervals=(intervals.len()) {
                    text class="axis" x="0" y=(format!("{:.0}", y + 10.0)) { (alert.as_str()) }
                    rect class="lane-bg" x=(left) y=(y) width=(WIDTH - left - RIGHT) height=(lane_height - 4.0) {}
                    @for i in intervals {
                        @let from = x(i.from_iteration, i.from);
                        @let to = match (i.to_iteration, i.to) { (Some(t), Some(at)) => x(t, at), _ => x1 };
                        rect class="lane" x=(format!("{:.1}", sx(from)))
                            y=(y) width=(format!("{:.1}", (sx(to) - sx(from)).max(2.0)))
                            height=(lane_height - 4.0) {
                            title {
                                (alert.as_str()) " from " (when(i.from_iteration, i.from))
                                @if let (Some(t), Some(at)) = (i.to_iteration, i.to) { " to " (when(t, at)) } @else { ", still firing" }
                            }
                        }
                    }
                }
            }
            g data-lane="Restarts" data-restarts=(restarts.len()) {
                text class="axis" x="0" y=(format!("{:.0}", restart_y + 10.0)) { "Restarts" }
                rect class="lane-bg" x=(left) y=(restart_y) width=(WIDTH - left - RIGHT) height=(lane_height - 4.0) {}
                @for r in restarts {
                    rect class="lane restart" x=(format!("{:.1}", sx(x(r.iteration, r.at)) - 1.0))
                        y=(restart_y) width="3" height=(lane_height - 4.0) {
                        title {
                            "restarted after iteration " (r.iteration) " (" (clock(r.at)) "): "
                            (match r.reason { crate::records::ExitReason::Stalled => "stalled", _ => "exited" })
                            ", status " (r.status)
                        }
                    }
                }
            }
            @if let Some(marks) = budget {
                g data-lane="LLM budget" data-budget-marks=(marks.len()) {
                    text class="axis" x="0" y=(format!("{:.0}", budget_y + 10.0)) { "LLM budget" }
                    rect class="lane-bg" x=(left) y=(budget_y) width=(WIDTH - left - RIGHT) height=(lane_height - 4.0) {}
                    @for m in marks {
                        @let (event, label) = match m.mark.event {
                            crate::llm::budget::BudgetEvent::Warning => ("warning", format!("{}% of the LLM budget spent", m.mark.percent.unwrap_or(0))),
                            crate::llm::budget::BudgetEvent::Blocking => ("blocking", "LLM budget spent: new calls refused".to_string()),
                        };
                        rect class=(format!("lane budget-{event}")) data-budget-event=(event) data-percent=[m.mark.percent]
                            x=(format!("{:.1}", sx(x(m.iteration, m.at)) - 1.0))
                            y=(budget_y) width="3" height=(lane_height - 4.0) {
                            title {
                                (label) " at " (when(m.iteration, m.at)) ": $"
                                (format!("{:.4}", m.mark.spent_usd)) " of $" (format!("{:.4}", m.mark.budget_usd))
                            }
                        }
                    }
                }
            }
            @for (tick, label) in axis.ticks(x0, x1, 5) {
                text class="axis axis-x" x=(format!("{:.1}", sx(tick))) y=(format!("{:.0}", height - 4.0)) text-anchor="middle" { (label) }
            }
        }
    }
}

/// The LLM calls: totals against the alerts' thresholds (the spend said to be a lower
/// bound when some calls had no usage or tokens no price), the last hour minute by
/// minute (calls ok, failed and abandoned), and each model's calls, tokens, errors
/// and cost.
fn llm_calls(llm: &crate::llm::LlmSummary, t: &crate::config::Thresholds) -> Markup {
    let usd = |v: f64| format!("${v:.4}");
    let seconds = |v: Option<f64>| v.map_or("—".to_string(), |s| format!("{s:.2} s"));
    let most = llm
        .last_hour
        .iter()
        .map(|m| m.ok.saturating_add(m.errors).saturating_add(m.abandoned))
        .max()
        .unwrap_or(1)
        .max(1);
    let (bar_width, height) = (WIDTH / 60.0, 60.0);
    html! {
        div class="key" {
            (llm.calls) " calls, " (llm.errors) " failed"
            @if llm.abandoned > 0 { ", " (llm.abandoned) " abandoned (cut short, not failures)" }
            @if llm.blocked > 0 { ", " (llm.blocked) " blocked by the budget (never sent)" }
            @if llm.deferred > 0 { ", " (llm.deferred) " deferred by the budget (never sent, retriable)" }
            " · tokens " (llm.input_tokens) " in, "
            (llm.output_tokens) " out"
            @if llm.reasoning_tokens > 0 { " (" (llm.reasoning_tokens) " reasoning)" }
            " · spend " (usd(llm.cost_usd))
            @if let Some(budget) = &llm.budget {
                " of " (usd(budget.usd)) " (" (budget.action.as_str()) ")"
                @if budget.estimated_usd > 0.0 { ", " (usd(budget.spent_usd)) " counted against it with " (usd(budget.estimated_usd)) " estimated for calls without usage" }
                @if budget.reserved_usd > 0.0 { ", " (usd(budget.reserved_usd)) " reserved by calls in flight" }
                @for percent in &budget.warned_at_percent { b class="budget-warning" data-percent=(percent) { " · " (percent) "% reached" } }
                @if budget.blocked_calls > 0 { b class="budget-blocked" { " · " (budget.blocked_calls) " calls refused" } }
            }
            @if llm.spend_is_lower_bound {
                b class="lower-bound" {
                    " — a lower bound: " (llm.usage_missing) " calls without usage, "
                    (llm.unpriced_tokens) " tokens without a price"
                }
            }
            " · since the champion changed " (usd(llm.spend_since_champion_usd))
            @if let Some(per) = llm.spend_per_champion_change_usd { " · per champion change " (usd(per)) }
            " · p50 " (seconds(llm.p50_seconds)) ", p95 " (seconds(llm.p95_seconds))
            " · LLMErrors at " (short(t.llm_error_rate() * 100.0)) "% of the last " (t.llm_error_calls()) " calls"
        }
        svg class="llm-minutes" viewBox=(format!("0 0 {WIDTH} {}", height + 14.0)) role="img" aria-label="LLM calls per minute" {
            @for m in &llm.last_hour {
                @let x = WIDTH - (m.minutes_ago as f64 + 1.0) * bar_width;
                @let ok_h = m.ok as f64 / most as f64 * height;
                @let err_h = m.errors as f64 / most as f64 * height;
                @let left_h = m.abandoned as f64 / most as f64 * height;
                g data-minute=(m.minutes_ago) {
                    rect class="ok" fill="#4c9a6a" x=(format!("{x:.1}")) y=(format!("{:.1}", height - ok_h)) width=(format!("{:.1}", bar_width - 1.0)) height=(format!("{ok_h:.1}")) {}
                    rect class="err" fill="#c0504d" x=(format!("{x:.1}")) y=(format!("{:.1}", height - ok_h - err_h)) width=(format!("{:.1}", bar_width - 1.0)) height=(format!("{err_h:.1}")) {}
                    rect class="abandoned" fill="#9a9a9a" x=(format!("{x:.1}")) y=(format!("{:.1}", height - ok_h - err_h - left_h)) width=(format!("{:.1}", bar_width - 1.0)) height=(format!("{left_h:.1}")) {}
                    title { (m.minutes_ago) " min ago: " (m.ok) " ok, " (m.errors) " failed, " (m.abandoned) " abandoned, " (m.input_tokens.saturating_add(m.output_tokens)) " tokens, " (usd(m.cost_usd)) }
                }
            }
            text class="axis" x="0" y=(format!("{:.0}", height + 12.0)) { "calls per minute, last hour (green ok, red failed, grey abandoned); now at the right" }
        }
        table class="containers" {
            tr { th { "model" } th { "calls" } th { "errors" } th { "abandoned" } th { "tokens in / out" } th { "cost" } }
            @for (model, m) in &llm.by_model {
                tr data-model=(clip(model)) {
                    td { (clip(model)) } td { (m.calls) }
                    td { (m.errors) @for (kind, n) in &m.errors_by_type { " · " (kind) " ×" (n) } }
                    td { (m.abandoned) }
                    td { (m.input_tokens) " / " (m.output_tokens) }
                    td {
                        @if m.unpriced_tokens > 0 && m.cost_usd == 0.0 { "no price" } @else { (usd(m.cost_usd)) }
                        @if m.usage_missing > 0 || (m.unpriced_tokens > 0 && m.cost_usd > 0.0) { " or more" }
                    }
                }
            }
        }
        @if llm.by_role.keys().any(|role| role != crate::llm::NO_ROLE) {
            table class="containers" data-roles=(llm.by_role.len()) {
                tr { th { "role" } th { "calls" } th { "errors" } th { "tokens in / out" } th { "cost" } }
                @for (role, m) in &llm.by_role {
                    tr data-role=(clip(role)) {
                        td { (clip(role)) } td { (m.calls) } td { (m.errors) }
                        td { (m.input_tokens) " / " (m.output_tokens) }
                        td { (usd(m.cost_usd)) @if m.usage_missing > 0 || m.unpriced_tokens > 0 { " or more" } }
                    }
                }
            }
        }
    }
}

/// The calls answered 429 Too Many Requests, of every model.
fn rate_limited(llm: &crate::llm::LlmSummary) -> u64 {
    llm.by_model
        .values()
        .filter_map(|m| m.errors_by_type.get("429"))
        .fold(0u64, |sum, n| sum.saturating_add(*n))
}

/// The rate limits the providers stated, beside the 429s: the least headroom still
/// in force against LLMRateLimitNear's threshold, and each provider's and model's last word (each limit's remaining over
/// its limit and when it resets, the wait asked for), most constrained first.
fn rate_limits(llm: &crate::llm::LlmSummary, t: &crate::config::Thresholds) -> Markup {
    use crate::llm::headroom::Resource;
    let percent = |h: Option<f64>| h.map_or("—".to_string(), |h| format!("{:.1}%", h * 100.0));
    let figures = |limits: &std::collections::BTreeMap<String, crate::llm::LimitTally>,
                   resource: Resource| {
        limits.get(resource.as_str()).map_or("—".to_string(), |l| {
            let count = |n: Option<u64>| n.map_or("?".to_string(), |n| n.to_string());
            let mut text = format!("{} / {}", count(l.remaining), count(l.limit));
            if let Some(resets) = l.resets_in_seconds {
                text.push_str(&format!(", resets in {}", age(resets)));
            }
            text
        })
    };
    html! {
        div class="key" {
            (rate_limited(llm)) " calls answered 429"
            " · least headroom in force " (percent(llm.rate_limit_headroom))
            " · LLMRateLimitNear below " (short(t.llm_headroom_fraction() * 100.0)) "% for "
            (age(t.llm_headroom_for().as_secs_f64()))
        }
        @if !llm.rate_limits.is_empty() {
            table class="containers" data-rate-limits=(llm.rate_limits.len()) {
                tr {
                    th { "provider · model" } th { "headroom" } th { "requests left" } th { "tokens left" }
                    th { "input tokens left" } th { "output tokens left" } th { "wait asked" } th { "said" }
                }
                @for r in &llm.rate_limits {
                    tr data-model=(clip(&r.model)) data-provider=(clip(&r.provider))
                        data-headroom=(r.headroom.map_or("none".to_string(), |h| format!("{h:.4}"))) {
                        td { (clip(&r.provider)) " · " (clip(&r.model)) }
                        td { (percent(r.headroom)) }
                        @for resource in Resource::ALL { td { (figures(&r.limits, resource)) } }
                        td { (r.retry_after_seconds.map_or("—".to_string(), |s| format!("{s:.1} s"))) }
                        td { (age(r.age_seconds)) " ago" }
                    }
                }
            }
        }
    }
}

/// Failure reasons as bars, largest first.
fn bars(title: String, reasons: &[(String, u64)]) -> Markup {
    let most = reasons.iter().map(|(_, c)| *c).max().unwrap_or(1).max(1);
    html! {
        div class="bars" {
            div class="legend" { b { (title) } }
            @if reasons.is_empty() { div class="key" { "no failures" } }
            @for (reason, count) in reasons {
                div class="bar" data-reason=(clip(reason)) {
                    span class="reason" title=(clip(reason)) { (clip(reason)) }
                    span class="fill" style=(format!("width:{:.0}%", *count as f64 / most as f64 * 50.0)) {}
                    span { (count) }
                }
            }
        }
    }
}

/// The evaluations: in flight against the EvaluationHung limit, the oldest in flight
/// (id, age, worker, pid), the duration distribution, occupancy over the iterations,
/// and the slowest and killed ones.
fn evaluations(snapshot: &Snapshot, ranges: Ranges) -> Markup {
    let e = &snapshot.evaluations;
    let limit = e.hung_limit_seconds;
    let most = e
        .durations
        .iter()
        .map(|b| b.count)
        .max()
        .unwrap_or(1)
        .max(1);
    let (height, bar_width) = (60.0, WIDTH / e.durations.len().max(1) as f64);
    let occupancy = Chart {
        title: "worker occupancy (highest in each iteration)",
        axis: Axis::Iteration,
        unit: Unit::Percent,
        series: vec![series("occupancy", &snapshot.history, |p| {
            p.evaluation_occupancy.map(|o| o * 100.0)
        })],
        threshold: None,
        fixed_max: Some(100.0),
        marks: &[],
        step: false,
    };
    let bound = |le: Option<f64>| {
        le.map_or("more".to_string(), |le| {
            format!("≤{}", Unit::Seconds.format(le))
        })
    };
    let rows = |title: &str, rows: &[crate::export::EvaluationRow], kind: &str| {
        html! {
            table class="containers" data-evaluations=(kind) data-rows=(rows.len()) {
                tr { th { (title) } th { "seconds" } th { "worker" } th { "pid" } }
                @for r in rows {
                    tr data-evaluation=(clip(&r.id)) class=[(r.outcome.is_none() && r.seconds > limit).then_some("hung")] {
                        td { (clip(&r.id)) @if let Some(outcome) = r.outcome { " (" (outcome) ")" } }
                        td { (age(r.seconds)) }
                        td { (clip(r.worker.as_deref().unwrap_or("—"))) }
                        td { (r.pid.map_or("—".to_string(), |p| p.to_string())) }
                    }
                }
                @if rows.is_empty() { tr { td colspan="4" class="key" { "none" } } }
            }
        }
    };
    html! {
        div class="key" {
            (e.in_flight) " in flight · EvaluationHung past " (age(limit))
            " · workers " (e.busy_workers) " busy of " (e.workers) " seen in the last minute"
            " · " (e.killed_total) " killed by loopwatch"
        }
        (rows("oldest in flight", &e.oldest, "in-flight"))
        svg class="durations" viewBox=(format!("0 0 {WIDTH} {}", height + 26.0)) role="img" aria-label="evaluation durations" {
            @for (i, b) in e.durations.iter().enumerate() {
                @let h = b.count as f64 / most as f64 * height;
                @let x = i as f64 * bar_width;
                g data-bucket=(bound(b.le)) data-count=(b.count) {
                    rect class="ok" fill="#5ab0f0" x=(format!("{x:.1}")) y=(format!("{:.1}", height - h)) width=(format!("{:.1}", bar_width - 2.0)) height=(format!("{h:.1}")) {}
                    title { (b.count) " evaluations " (bound(b.le)) }
                    @if i % 2 == 0 {
                        text class="axis" x=(format!("{x:.1}")) y=(format!("{:.0}", height + 11.0)) { (bound(b.le)) }
                    }
                }
            }
            text class="axis" x="0" y=(format!("{:.0}", height + 24.0)) { "ended evaluations by duration" }
        }
        (chart(&occupancy, ranges))
        (rows("slowest", &e.slowest, "slowest"))
        (rows("killed", &e.killed, "killed"))
    }
}

/// What a GPU's row says instead of its readings when they are not current: the
/// last ones taken would read as the device's state now.
fn not_current(readings: GpuReadings) -> Option<&'static str> {
    match readings {
        GpuReadings::Current => None,
        GpuReadings::Stale => Some(
            "no current reading: no sample came for five sampling periods (the sampler blocked inside NVML?)",
        ),
        GpuReadings::Ended => Some("no current reading: the GPU sampler ended"),
    }
}

/// The GPUs: each device's latest reading and errors over the run, the loop's
/// share of its memory, and the loop's video memory over the samples; a device's
/// readings give way to a note while they are not current.
fn gpus(snapshot: &Snapshot, axis: SampleAxis, ranges: Ranges) -> Markup {
    let none: [Mark; 0] = [];
    let memory = Chart {
        title: "video memory of the loop's processes",
        axis: axis.into(),
        unit: Unit::Bytes,
        series: vec![sampled("loop", &snapshot.samples, axis, ranges, |p| {
            p.gpu_loop_memory_bytes
        })],
        threshold: None,
        fixed_max: None,
        marks: &none,
        step: false,
    };
    let or_dash = |value: Option<String>| value.unwrap_or_else(|| "—".to_string());
    html! {
        table class="containers" data-gpus=(snapshot.gpus.len()) {
            tr { th { "GPU" } th { "busy" } th { "memory" } th { "the loop's" } th { "power" } th { "temp." } th { "errors" } }
            @for g in &snapshot.gpus {
                tr data-gpu=(clip(&g.uuid)) data-readings=(g.readings.as_str())
                    class=[(g.lost || g.xid_errors > 0 || g.ecc_uncorrected > 0).then_some("hung")] {
                    td title=(clip(&g.uuid)) { (g.index) @if g.lost { " (lost)" } }
                    @if let Some(note) = not_current(g.readings) {
                        td colspan="5" class="key" { (note) }
                    } @else {
                        td { (or_dash(g.utilization.map(|u| Unit::Percent.format(u * 100.0)))) }
                        td {
                            (or_dash(g.memory_used_bytes.map(|b| Unit::Bytes.format(b as f64))))
                            " of " (or_dash(g.memory_total_bytes.map(|b| Unit::Bytes.format(b as f64))))
                        }
                        td {
                            @match g.loop_memory_bytes {
                                Some(bytes) => { (Unit::Bytes.format(bytes as f64)) " (" (g.loop_processes) " processes)" }
                                None => span title="NVML could not list this GPU's processes" { "—" }
                            }
                        }
                        td { (or_dash(g.power_watts.map(|w| format!("{w:.0} W")))) }
                        td { (or_dash(g.temperature_celsius.map(|c| format!("{c:.0} °C")))) }
                    }
                    td data-xid=(g.xid_errors) {
                        (g.xid_errors) " Xid"
                        @if let Some(code) = g.last_xid { " (last " (code) ")" }
                        " · ECC " (g.ecc_uncorrected) " uncorrected, " (g.ecc_corrected) " corrected"
                    }
                }
            }
        }
        (chart(&memory, ranges))
    }
}

fn age(seconds: f64) -> String {
    match seconds {
        s if s < 90.0 => format!("{s:.0} s"),
        s if s < 5400.0 => format!("{:.0} min", s / 60.0),
        s => format!("{:.1} h", s / 3600.0),
    }
}

/// Progress per dollar: the best Sharpe so far against the run's cumulative LLM spend,
/// one point per improvement at the spend when its iteration ended (the best-so-far
/// record's points, thinned as it thins them) and the run's end, the spend now, where
/// the best holds; and the champion's changes at the spend when each came. No points
/// while nothing was spent or no strategy reported a Sharpe ratio.
fn progress_by_spend(snapshot: &Snapshot) -> (Series, Vec<Mark>) {
    let spent = snapshot.summary.llm.cost_usd;
    let spent_any = spent > 0.0;
    let improvements = snapshot.progress.points();
    let at = |elapsed: f64| snapshot.started_at + elapsed;
    let mut points: Vec<(f64, f64, f64)> = improvements
        .iter()
        .map(|p| (p.llm_cost_usd, p.best_sharpe, at(p.elapsed_seconds)))
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    if let Some(&(x, best, then)) = points.last() {
        points.push((
            spent.max(x),
            best,
            at(snapshot.summary.elapsed_seconds).max(then),
        ));
    }
    if !spent_any {
        points.clear();
    }
    let marks = snapshot
        .progress
        .champion_changes()
        .iter()
        .filter(|m| spent_any && m.llm_cost_usd.is_finite())
        .map(|m| Mark {
            x: m.llm_cost_usd,
            iteration: m.iteration,
        })
        .collect();
    (
        Series {
            label: "best so far",
            points,
        },
        marks,
    )
}

/// Renders the whole page.
pub(crate) fn render(snapshot: &Snapshot) -> String {
    let history = &snapshot.history;
    let summary = &snapshot.summary;
    let t = &snapshot.thresholds;
    let samples = &snapshot.samples;
    let x_range = match (history.first(), history.last()) {
        (Some(a), Some(b)) => (
            a.iteration as f64,
            (b.iteration as f64).max(a.iteration as f64 + 1.0),
        ),
        _ => (0.0, 1.0),
    };
    let (by_spend, champions_by_spend) = progress_by_spend(snapshot);
    let ranges = Ranges {
        iteration: x_range,
        // From the start to now.
        time: (
            0.0,
            summary
                .elapsed_seconds
                .max(samples.last().map_or(0.0, |p| p.elapsed_seconds))
                .max(1.0),
        ),
        // From nothing spent to the spend now.
        spend: (
            0.0,
            by_spend
                .points
                .iter()
                .map(|p| p.0)
                .chain(champions_by_spend.iter().map(|m| m.x))
                .fold(summary.llm.cost_usd, f64::max),
        ),
        iterations: !history.is_empty(),
    };
    // The alert timeline and the charts of the samples (resources, containers, LLM
    // calls) are on time until the first iteration, then on iterations like the rest.
    let sample_axis = if ranges.iterations {
        SampleAxis::Iteration
    } else {
        SampleAxis::Time
    };
    let champions: Vec<Mark> = history
        .iter()
        .filter(|p| p.champion_changed)
        .map(|p| Mark {
            x: p.iteration as f64,
            iteration: p.iteration,
        })
        .collect();
    let none: [Mark; 0] = [];

    let firing = view::firing(snapshot);
    let lanes = view::intervals(snapshot);
    let latest_time = history.last().map(|p| clock(p.at));
    let (instrumented, instrumentation_errors) = view::instrumented(snapshot);
    let success_rate = summary
        .success_rate
        .map_or("—".to_string(), |r| format!("{:.1}%", r * 100.0));
    let panels: [(&str, Vec<Chart<'_>>); 4] = [
        (
            "Resource Usage",
            vec![
                Chart {
                    title: "memory usage",
                    axis: sample_axis.into(),
                    unit: Unit::Bytes,
                    series: vec![sampled("memory", samples, sample_axis, ranges, |p| {
                        Some(p.memory_usage_bytes)
                    })],
                    threshold: None,
                    fixed_max: None,
                    marks: &none,
                    step: false,
                },
                Chart {
                    title: "CPU usage",
                    axis: sample_axis.into(),
                    unit: Unit::Percent,
                    series: vec![sampled("CPU", samples, sample_axis, ranges, |p| {
                        Some(p.cpu_usage_percent)
                    })],
                    threshold: None,
                    fixed_max: None,
                    marks: &none,
                    step: false,
                },
                Chart {
                    title: "time per iteration",
                    axis: Axis::Iteration,
                    unit: Unit::Seconds,
                    series: vec![series("time", history, |p| Some(p.execution_time_seconds))],
                    threshold: None,
                    fixed_max: None,
                    marks: &none,
                    step: false,
                },
            ],
        ),
        (
            "Strategy Performance",
            vec![
                Chart {
                    title: "success rate (10 iterations)",
                    axis: Axis::Iteration,
                    unit: Unit::Percent,
                    series: vec![series("success rate", history, |p| {
                        p.success_rate_10iter.map(|r| r * 100.0)
                    })],
                    threshold: Some((
                        t.success_rate_floor() * 100.0,
                        format!(
                            "LowSuccessRate below {}%",
                            short(t.success_rate_floor() * 100.0)
                        ),
                    )),
                    fixed_max: Some(100.0),
                    marks: &none,
                    step: false,
                },
                Chart {
                    title: "Sharpe ratio",
                    axis: Axis::Iteration,
                    unit: Unit::Plain,
                    series: vec![
                        series("mean", history, |p| p.sharpe_ratio),
                        series("best so far", history, |p| p.best_sharpe),
                    ],
                    threshold: None,
                    fixed_max: None,
                    marks: &champions,
                    step: false,
                },
                Chart {
                    title: "max drawdown",
                    axis: Axis::Iteration,
                    unit: Unit::Percent,
                    series: vec![series("max drawdown", history, |p| {
                        p.max_drawdown.map(|d| d * 100.0)
                    })],
                    threshold: None,
                    fixed_max: None,
                    marks: &none,
                    step: false,
                },
            ],
        ),
        (
            "Diversity Metrics",
            vec![
                Chart {
                    title: "population diversity",
                    axis: Axis::Iteration,
                    unit: Unit::Ratio,
                    series: vec![series("diversity", history, |p| p.population_diversity)],
                    threshold: Some((
                        t.diversity_floor(),
                        format!("collapse below {}", short(t.diversity_floor())),
                    )),
                    fixed_max: Some(1.0),
                    marks: &none,
                    step: false,
                },
                Chart {
                    title: "unique strategies",
                    axis: Axis::Iteration,
                    unit: Unit::Count,
                    series: vec![series("unique", history, |p| {
                        p.unique_strategy_count.map(|u| u as f64)
                    })],
                    threshold: None,
                    fixed_max: None,
                    marks: &none,
                    step: false,
                },
                Chart {
                    title: "champion age (iterations)",
                    axis: Axis::Iteration,
                    unit: Unit::Count,
                    series: vec![series("champion age", history, |p| {
                        Some(p.champion_staleness_iterations as f64)
                    })],
                    threshold: Some((
                        t.staleness_iterations() as f64,
                        format!("stale at {}", t.staleness_iterations()),
                    )),
                    fixed_max: None,
                    marks: &champions,
                    step: false,
                },
            ],
        ),
        (
            "Container Stats",
            vec![
                Chart {
                    title: "active containers",
                    axis: sample_axis.into(),
                    unit: Unit::Count,
                    series: vec![sampled("active", samples, sample_axis, ranges, |p| {
                        Some(p.active_containers as f64)
                    })],
                    threshold: None,
                    fixed_max: None,
                    marks: &none,
                    step: false,
                },
                Chart {
                    title: "container memory",
                    axis: sample_axis.into(),
                    unit: Unit::Bytes,
                    series: vec![sampled("memory", samples, sample_axis, ranges, |p| {
                        Some(p.container_memory_bytes as f64)
                    })],
                    threshold: None,
                    fixed_max: None,
                    marks: &none,
                    step: false,
                },
                Chart {
                    title: "container CPU",
                    axis: sample_axis.into(),
                    unit: Unit::Percent,
                    series: vec![sampled("CPU", samples, sample_axis, ranges, |p| {
                        p.container_cpu_percent
                    })],
                    threshold: None,
                    fixed_max: None,
                    marks: &none,
                    step: false,
                },
                Chart {
                    title: "cleanup failures",
                    axis: sample_axis.into(),
                    unit: Unit::Count,
                    series: vec![sampled("failures", samples, sample_axis, ranges, |p| {
                        Some(p.cleanup_failures as f64)
                    })],
                    threshold: Some((
                        t.orphan_limit() as f64,
                        format!("alert above {}", t.orphan_limit()),
                    )),
                    fixed_max: None,
                    marks: &none,
                    step: false,
                },
            ],
        ),
    ];
    let llm_charts = [
        Chart {
            title: "LLM calls so far",
            axis: sample_axis.into(),
            unit: Unit::Count,
            series: vec![sampled("calls", samples, sample_axis, ranges, |p| {
                Some(p.llm_calls as f64)
            })],
            threshold: None,
            fixed_max: None,
            marks: &none,
            step: false,
        },
        Chart {
            title: "LLM spend so far",
            axis: sample_axis.into(),
            unit: Unit::Usd,
            series: vec![sampled("spend", samples, sample_axis, ranges, |p| {
                Some(p.llm_cost_usd)
            })],
            threshold: t
                .llm_budget_usd()
                .map(|budget| (budget, format!("LLMBudget at {}", Unit::Usd.format(budget)))),
            fixed_max: None,
            marks: &none,
            step: false,
        },
        Chart {
            title: "best Sharpe so far by LLM spend",
            axis: Axis::Spend,
            unit: Unit::Plain,
            series: vec![by_spend],
            threshold: None,
            fixed_max: None,
            marks: &champions_by_spend,
            step: true,
        },
    ];
    let last_sweep = &snapshot.containers["last_sweep"];
    let evaluations_seen = snapshot.evaluations.in_flight > 0
        || snapshot.evaluations.workers > 0
        || snapshot.evaluations.durations.iter().any(|b| b.count > 0);
    let orphans_found = last_sweep["orphans"].as_array().map_or(0, Vec::len);
    let orphans_removed = last_sweep["removed"].as_array().map_or(0, Vec::len);
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content="5";
                title { "loopwatch" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "loopwatch" }
                div class="meta" {
                    "run " code { (summary.run_id) } " · " (summary.iterations) " iterations · champion "
                    code { (clip(summary.champion.as_deref().unwrap_or("—"))) }
                    " · staleness " (summary.champion_staleness_iterations)
                    " · success rate " (success_rate)
                    @if !instrumented.is_empty() {
                        " · instrumented: " span data-instrumented=(instrumented) { (instrumented) }
                    }
                    @if instrumentation_errors > 0 {
                        " · " span data-instrumentation-errors=(instrumentation_errors) {
                            (instrumentation_errors) " instrumentation errors"
                        }
                    }
                    @if let Some(at) = &latest_time { " · latest iteration at " (at) " UTC" }
                    " · refreshes every 5 s · " a href="/metrics" { "/metrics" } " · " a href="/api/v1/snapshot" { "JSON" }
                }
                @if firing.is_empty() {
                    div class="alerts ok" id="alerts" { "No alerts firing." }
                } @else {
                    div class="alerts" id="alerts" {
                        b { "Firing:" }
                        ul {
                            @for f in &firing {
                                li data-alert=(f.alertname.as_str()) {
                                    b { (f.alertname.as_str()) } ": " (f.message)
                                    " since iteration " (f.since_iteration) " (" (clock(f.since)) " UTC)"
                                    @if let Some(v) = f.value { " · value " (short(v)) } " · threshold " (short(f.threshold))
                                }
                            }
                        }
                    }
                }
                div class="grid" {
                    @for (title, charts) in &panels {
                        section class="panel" data-panel=(title)
                            data-points=(charts.iter().flat_map(|c| &c.series).map(|s| s.points.len()).sum::<usize>()) {
                            h2 { (title) }
                            @for c in charts { (chart(c, ranges)) }
                            @if *title == "Container Stats" {
                                table class="containers" {
                                    tr { th { "container" } th { "memory" } th { "CPU" } th { "age" } }
                                    @for c in &snapshot.live_containers {
                                        tr data-container=(clip(&c.name)) {
                                            td { (clip(&c.name)) } td { (Unit::Bytes.format(c.memory_bytes as f64)) }
                                            td { (c.cpu_percent.map_or("—".to_string(), |p| Unit::Percent.format(p))) }
                                            td { (age(c.age_seconds)) }
                                        }
                                    }
                                    @if snapshot.live_containers.is_empty() { tr { td colspan="4" class="key" { "no running containers" } } }
                                }
                                div class="key" { "orphans at the last sweep: " (orphans_found) " found, " (orphans_removed) " cleaned" }
                                div class="key" data-processes=(snapshot.processes.cleaned_total) {
                                    "orphaned processes: " (snapshot.processes.orphaned_now) " left now, "
                                    (snapshot.processes.cleaned_total) " terminated, "
                                    (snapshot.processes.failures_total) " could not be"
                                }
                            }
                        }
                    }
                    section class="panel" data-panel="Why strategies fail" {
                        h2 { "Why strategies fail" }
                        (bars("whole run".into(), &view::top_reasons(&summary.failure_reasons)))
                        (bars(format!("last {} iterations", snapshot.recent_iterations), &view::top_reasons(&snapshot.recent_failure_reasons)))
                    }
                    @if summary.llm.calls > 0 {
                        section class="panel" data-panel="LLM calls" data-calls=(summary.llm.calls)
                            data-abandoned=(summary.llm.abandoned) data-usage-missing=(summary.llm.usage_missing)
                            data-spend-lower-bound=(summary.llm.spend_is_lower_bound)
                            data-spend-per-champion-change=[summary.llm.spend_per_champion_change_usd] {
                            h2 { "LLM calls" }
                            (llm_calls(&summary.llm, t))
                            @for c in &llm_charts { (chart(c, ranges)) }
                        }
                    }
                    @if !summary.llm.rate_limits.is_empty() || rate_limited(&summary.llm) > 0 {
                        section class="panel" data-panel="LLM rate limits"
                            data-rate-limited=(rate_limited(&summary.llm))
                            data-headroom=(summary.llm.rate_limit_headroom.map_or("none".to_string(), |h| format!("{h:.4}"))) {
                            h2 { "LLM rate limits" }
                            (rate_limits(&summary.llm, t))
                        }
                    }
                    @if !snapshot.gpus.is_empty() {
                        section class="panel" data-panel="GPUs" {
                            h2 { "GPUs" }
                            (gpus(snapshot, sample_axis, ranges))
                        }
                    }
                    @if !snapshot.model_servers.servers.is_empty() {
                        section class="panel" data-panel="Model servers"
                            data-servers=(snapshot.model_servers.servers.len()) {
                            h2 { "Model servers" }
                            (servers::panel(&snapshot.model_servers, sample_axis, ranges, Some(t.llm_server_kv_cache_fraction())))
                        }
                    }
                    @if evaluations_seen {
                        section class="panel" data-panel="Evaluations" data-in-flight=(snapshot.evaluations.in_flight)
                            data-killed=(snapshot.evaluations.killed_total) {
                            h2 { "Evaluations" }
                            (evaluations(snapshot, ranges))
                        }
                    }
                    section class="panel" data-panel="Alert timeline" {
                        h2 { "Alert timeline" }
                        (timeline(
                            &lanes,
                            &view::restarts(snapshot),
                            summary.llm.budget.is_some().then_some(view::budget_marks(snapshot).as_slice()),
                            sample_axis,
                            ranges.of(sample_axis.into()),
                            snapshot.started_at,
                        ))
                    }
                }
                p class="meta" {
                    "x: the iteration (for samples: the iterations completed when each was taken); "
                    "before the first iteration, the time since the run started. "
                    "Green dashed lines: champion changes (on the chart by LLM spend, at the spend when each came). "
                    "Yellow dashed lines: alert thresholds. "
                    "Hover a point for its value, place and time."
                }
            }
        }
    };
    page.into_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The labels an axis prints between `from` and `to`.
    fn labels(axis: Axis, from: f64, to: f64) -> Vec<String> {
        axis.ticks(from, to, 5)
            .into_iter()
            .map(|(_, l)| l)
            .collect()
    }

    fn assert_unique(labels: &[String]) {
        let mut seen = labels.to_vec();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), labels.len(), "a label twice: {labels:?}");
    }

    #[test]
    fn iteration_axes_print_whole_numbers_each_once() {
        for (to, expected) in [
            (1.0, vec!["0", "1"]),
            (3.0, vec!["0", "1", "2", "3"]),
            (7.0, vec!["0", "2", "4", "6"]),
            (1000.0, vec!["0", "200", "400", "600", "800", "1000"]),
        ] {
            assert_eq!(labels(Axis::Iteration, 0.0, to), expected, "0..{to}");
        }
        // Any range the page can draw: a kept window of iterations, one iteration, a
        // long run.
        for (from, to) in [(1.0, 2.0), (5.0, 6.0), (1.0, 601.0), (401.0, 1000.0)]
            .into_iter()
            .chain((1..=2000).map(|n| (0.0, n as f64)))
            .chain((1..=50).map(|n| (n as f64 * 37.0, n as f64 * 37.0 + 600.0)))
        {
            let ticks = Axis::Iteration.ticks(from, to, 5);
            let labels: Vec<String> = ticks.iter().map(|(_, l)| l.clone()).collect();
            assert!(
                !ticks.is_empty() && ticks.len() <= 12,
                "{from}..{to}: {labels:?}"
            );
            assert!(
                labels.iter().all(|l| l.parse::<u64>().is_ok()),
                "{from}..{to}: a fraction in {labels:?}"
            );
            assert!(
                ticks.iter().all(|(x, _)| *x >= from && *x <= to),
                "{from}..{to}: {labels:?}"
            );
            assert_unique(&labels);
        }
    }

    #[test]
    fn time_axes_read_as_a_clock_does() {
        assert_eq!(labels(Axis::Time, 0.0, 1.0), ["0s", "1s"]);
        assert_eq!(labels(Axis::Time, 0.0, 7.0), ["0s", "2s", "4s", "6s"]);
        assert_eq!(
            labels(Axis::Time, 0.0, 150.0),
            ["0s", "30s", "1m", "1m30s", "2m", "2m30s"]
        );
        assert_eq!(
            labels(Axis::Time, 0.0, 600.0),
            ["0s", "2m", "4m", "6m", "8m", "10m"]
        );
        assert_eq!(
            labels(Axis::Time, 0.0, 4.0 * 3600.0),
            ["0s", "1h", "2h", "3h", "4h"]
        );
        assert_eq!(
            labels(Axis::Time, 0.0, 10.0 * 86_400.0),
            ["0s", "2d", "4d", "6d", "8d", "10d"]
        );
        for to in (1..=5000)
            .map(f64::from)
            .chain([0.3, 59.9, 3599.5, 86_399.0, 1e7])
        {
            let labels = labels(Axis::Time, 0.0, to);
            assert!(
                !labels.is_empty() && labels.len() <= 12,
                "0..{to}: {labels:?}"
            );
            assert!(
                labels.iter().all(|l| !l.contains('.')),
                "0..{to}: a fraction in {labels:?}"
            );
            assert_unique(&labels);
        }
    }

    #[test]
    fn spend_axes_print_dollars_each_once() {
        for (to, expected) in [
            (
                0.1,
                vec!["$0.00", "$0.02", "$0.04", "$0.06", "$0.08", "$0.10"],
            ),
            (3.0, vec!["$0", "$1", "$2", "$3"]),
            (
                0.25,
                vec!["$0.00", "$0.05", "$0.10", "$0.15", "$0.20", "$0.25"],
            ),
            (40.0, vec!["$0", "$10", "$20", "$30", "$40"]),
        ] {
            assert_eq!(labels(Axis::Spend, 0.0, to), expected, "0..{to}");
        }
        for to in (1..=400)
            .map(|n| n as f64 * 0.000_37)
            .chain([1e-9, 2.5e-7, 0.001, 0.0123, 7.77, 1234.5, 1e6])
        {
            let ticks = Axis::Spend.ticks(0.0, to, 5);
            let labels: Vec<String> = ticks.iter().map(|(_, l)| l.clone()).collect();
            assert!(
                !ticks.is_empty() && ticks.len() <= 12,
                "0..{to}: {labels:?}"
            );
            assert!(
                ticks.iter().all(|(x, l)| *x >= 0.0
                    && *x <= to * (1.0 + 1e-9)
                    && l.starts_with('$')
                    && !l.contains('-')),
                "0..{to}: {labels:?}"
            );
            assert_unique(&labels);
        }
    }

    #[test]
    fn a_step_line_holds_each_value_until_the_next_point() {
        let points = [(0.0, 1.0, 0.0), (2.0, 3.0, 0.0), (5.0, 4.0, 0.0)];
        assert_eq!(
            steps(&points, |x| x * 10.0, |y| y),
            "0.0,1.0 20.0,1.0 20.0,3.0 50.0,3.0 50.0,4.0"
        );
        assert_eq!(steps(&[], |x| x, |y| y), "");
    }

    #[test]
    fn elapsed_times_read_in_their_largest_units() {
        for (seconds, expected) in [
            (0.0, "0s"),
            (0.4, "0s"),
            (45.0, "45s"),
            (60.0, "1m"),
            (90.0, "1m30s"),
            (3600.0, "1h"),
            (3605.0, "1h0m5s"),
            (5400.0, "1h30m"),
            (86_400.0 + 6.0 * 3600.0, "1d6h"),
            (-3.0, "0s"),
            (f64::NAN, "0s"),
        ] {
            assert_eq!(elapsed(seconds), expected, "{seconds}");
        }
    }
}
