//! The Prometheus text exposition (format 0.0.4), written from collected metric
//! families into one buffer. What does not change between scrapes — each family's
//! `# HELP` and `# TYPE` lines, with the help text escaped — is kept from the first
//! scrape that wrote it; values are formatted in place, with no allocation per
//! sample.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};

use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};

/// A family's header lines, and the help and type they were made from.
#[derive(Debug)]
struct Header {
    help: String,
    kind: MetricType,
    lines: String,
}

/// Writes exposition text, keeping each family's header lines between calls.
#[derive(Debug, Default)]
pub(crate) struct TextWriter {
    headers: Mutex<HashMap<String, Header>>,
}

impl TextWriter {
    /// The exposition of `families`, in their order.
    pub(crate) fn encode(&self, families: &[MetricFamily]) -> String {
        let mut out = String::with_capacity(families.len() * 256);
        let mut headers = self.headers.lock().unwrap_or_else(PoisonError::into_inner);
        for family in families {
            let name = family.name();
            let kind = family.get_field_type();
            let fresh = headers
                .get(name)
                .is_none_or(|h| h.kind != kind || h.help != family.help());
            if fresh {
                headers.insert(
                    name.to_string(),
                    Header {
                        help: family.help().to_string(),
                        kind,
                        lines: header_lines(family),
                    },
                );
            }
            out.push_str(&headers[name].lines);
            for metric in family.get_metric() {
                write_metric(&mut out, name, kind, metric);
            }
        }
        out
    }
}

/// `# HELP` (when there is help) and `# TYPE` lines of a family.
fn header_lines(family: &MetricFamily) -> String {
    let mut lines = String::new();
    let name = family.name();
    if !family.help().is_empty() {
        let _ = writeln!(lines, "# HELP {name} {}", escape(family.help(), false));
    }
    let kind = type_name(family.get_field_type());
    let _ = writeln!(lines, "# TYPE {name} {kind}");
    lines
}

/// The exposition's word for a family's type.
pub(crate) fn type_name(kind: MetricType) -> &'static str {
    match kind {
        MetricType::COUNTER => "counter",
        MetricType::GAUGE => "gauge",
        MetricType::HISTOGRAM => "histogram",
        MetricType::SUMMARY => "summary",
        MetricType::UNTYPED => "untyped",
    }
}

fn write_metric(out: &mut String, name: &str, kind: MetricType, metric: &Metric) {
    let labels = metric.get_label();
    match kind {
        MetricType::COUNTER => write_sample(
            out,
            name,
            "",
            labels,
            None,
            metric.get_counter().get_value(),
        ),
        MetricType::HISTOGRAM => {
            let h = metric.get_histogram();
            let mut bound = String::new();
            let mut inf_seen = false;
            for bucket in h.get_bucket() {
                let upper = bucket.upper_bound();
                bound.clear();
                write_value(&mut bound, upper);
                inf_seen |= upper == f64::INFINITY;
                let count = bucket.cumulative_count() as f64;
                write_sample(out, name, "_bucket", labels, Some(&bound), count);
            }
            if !inf_seen {
                let count = h.get_sample_count() as f64;
                write_sample(out, name, "_bucket", labels, Some("+Inf"), count);
            }
            write_sample(out, name, "_sum", labels, None, h.get_sample_sum());
            let count = h.get_sample_count() as f64;
            write_sample(out, name, "_count", labels, None, count);
        }
        // loopwatch's bridge makes counters, gauges and histograms only; anything
        // else is written as the gauge value it carries.
        _ => write_sample(out, name, "", labels, None, metric.get_gauge().get_value()),
    }
}

fn write_sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[LabelPair],
    le: Option<&str>,
    value: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || le.is_some() {
        let mut separator = '{';
        for label in labels {
            out.push(separator);
            out.push_str(label.name());
            out.push_str("=\"");
            out.push_str(&escape(label.value(), true));
            out.push('"');
            separator = ',';
        }
        if let Some(le) = le {
            out.push(separator);
            out.push_str("le=\"");
            out.push_str(le);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    write_value(out, value);
    out.push('\n');
}

/// A sample value as the exposition format spells it.
fn write_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{value}");
    }
}

/// Escapes backslashes and newlines (and double quotes in label values).
fn escape(text: &str, quotes: bool) -> std::borrow::Cow<'_, str> {
    let special = |c: char| c == '\\' || c == '\n' || (quotes && c == '"');
    if !text.contains(special) {
        return text.into();
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '"' if quotes => escaped.push_str("\\\""),
            c => escaped.push(c),
        }
    }
    escaped.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder as _, TextEncoder};

    fn families() -> Vec<MetricFamily> {
        let registry = prometheus::Registry::new();
        let counter = prometheus::IntCounterVec::new(
            prometheus::Opts::new("jobs_total", "Jobs done,\nby \"kind\" \\ path"),
            &["kind"],
        )
        .unwrap();
        counter
            .with_label_values(&["a \"quoted\"\nvalue"])
            .inc_by(3);
        counter.with_label_values(&["plain"]).inc();
        let gauge = prometheus::Gauge::new("temperature", "Degrees").unwrap();
        gauge.set(-12.5e-7);
        let histogram = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new("latency_seconds", "Latency").buckets(vec![0.1, 1.0]),
        )
        .unwrap();
        histogram.observe(0.5);
        histogram.observe(7.0);
        registry.register(Box::new(counter)).unwrap();
        registry.register(Box::new(gauge)).unwrap();
        registry.register(Box::new(histogram)).unwrap();
        registry.gather()
    }

    #[test]
    fn the_text_is_the_prometheus_crates_byte_for_byte() {
        let families = families();
        let mut expected = Vec::new();
        TextEncoder::new().encode(&families, &mut expected).unwrap();
        let writer = TextWriter::default();
        // Twice: the second from the kept headers.
        assert_eq!(
            writer.encode(&families),
            String::from_utf8(expected.clone()).unwrap()
        );
        assert_eq!(
            writer.encode(&families),
            String::from_utf8(expected).unwrap()
        );
    }

    #[test]
    fn a_family_whose_help_changed_gets_new_headers() {
        let writer = TextWriter::default();
        let mut families = families();
        writer.encode(&families);
        families[0].set_help("Other help".to_string());
        assert!(writer
            .encode(&families)
            .contains("# HELP jobs_total Other help\n"));
    }

    #[test]
    fn special_values_are_spelled_as_the_format_says() {
        let mut out = String::new();
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.25, 3.0] {
            write_value(&mut out, v);
            out.push(' ');
        }
        assert_eq!(out, "NaN +Inf -Inf 0.25 3 ");
    }
}
