//! The Prometheus text exposition (format 0.0.4), written from collected metric
//! families into one buffer. What does not change between scrapes — each family's
//! `# HELP` and `# TYPE` lines, with the help text escaped — is kept from the first
//! scrape that wrote it; values are formatted in place, with no allocation per
//! sample, and the buffer is sized from the last exposition.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};

/// A family's header lines, and the name, help and type they were made from.
#[derive(Debug)]
struct Header {
    name: String,
    help: String,
    kind: MetricType,
    lines: String,
}

impl Header {
    fn new(family: &MetricFamily) -> Self {
        Header {
            name: family.name().to_string(),
            help: family.help().to_string(),
            kind: family.get_field_type(),
            lines: header_lines(family),
        }
    }

    fn made_from(&self, family: &MetricFamily) -> bool {
        self.kind == family.get_field_type() && self.help == family.help()
    }
}

/// Writes exposition text, keeping each family's header lines between calls.
#[derive(Debug, Default)]
pub(crate) struct TextWriter {
    /// The header lines written so far, sorted by family name: families come sorted
    /// by name too, so each one's header is found where the previous one's ended.
    headers: Mutex<Vec<Header>>,
    /// The length of the last exposition written, which the next one's buffer is
    /// sized from.
    last_len: AtomicUsize,
}

impl TextWriter {
    /// The exposition of `families`, in their order.
    pub(crate) fn encode(&self, families: &[MetricFamily]) -> String {
        let last = self.last_len.load(Ordering::Relaxed);
        let mut out = String::with_capacity((last + last / 4).max(families.len() * 256));
        let mut headers = self.headers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = 0;
        for family in families {
            let name = family.name();
            let at = match headers.get(next) {
                Some(header) if header.name == name => next,
                _ => match headers.binary_search_by(|h| h.name.as_str().cmp(name)) {
                    Ok(at) => at,
                    Err(at) => {
                        headers.insert(at, Header::new(family));
                        at
                    }
                },
            };
            let header = &mut headers[at];
            if !header.made_from(family) {
                *header = Header::new(family);
            }
            out.push_str(&header.lines);
            next = at + 1;
            let kind = header.kind;
            for metric in family.get_metric() {
                write_metric(&mut out, name, kind, metric);
            }
        }
        self.last_len.store(out.len(), Ordering::Relaxed);
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
    } else if value.fract() == 0.0
        && value.abs() < 1e15
        && !(value == 0.0 && value.is_sign_negative())
    {
        // A whole number (most samples: counts, sizes, flags), spelled as `{value}`
        // spells it — its digits, no fraction — without formatting a float.
        write_whole(out, value as i64);
    } else {
        let _ = write!(out, "{value}");
    }
}

/// The decimal digits of `value`, with its sign.
fn write_whole(out: &mut String, value: i64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut rest = value.unsigned_abs();
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if value < 0 {
        out.push('-');
    }
    out.push_str(std::str::from_utf8(&digits[start..]).unwrap_or_default());
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
    fn values_are_spelled_as_rusts_display_spells_them() {
        let values = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            7.0,
            10.0,
            -250.0,
            25_276_203_008.0,
            999_999_999_999_999.0,
            1e15,
            -1e15,
            9_007_199_254_740_993.0,
            1e21,
            0.5,
            -0.25,
            1e-7,
            0.1 + 0.2,
            1.7e308,
            f64::MIN_POSITIVE,
            u64::MAX as f64,
            i64::MIN as f64,
        ];
        for value in values {
            let mut out = String::new();
            write_value(&mut out, value);
            assert_eq!(out, format!("{value}"), "{value:?}");
        }
    }

    #[test]
    fn families_out_of_order_or_new_find_their_headers() {
        let writer = TextWriter::default();
        let mut families = families();
        let sorted = writer.encode(&families);
        families.reverse();
        let reversed = writer.encode(&families);
        let mut expected = Vec::new();
        TextEncoder::new().encode(&families, &mut expected).unwrap();
        assert_eq!(reversed, String::from_utf8(expected).unwrap());
        families.reverse();
        assert_eq!(writer.encode(&families), sorted);
        assert_eq!(
            writer.encode(&families[1..]),
            sorted[sorted.find("# HELP latency_seconds").unwrap()..]
        );
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
