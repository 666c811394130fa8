//! Generated configuration: the Prometheus rules (with their promtool unit tests) and
//! the Grafana dashboard, both derived from the catalog and [`Thresholds`], so names
//! and numbers cannot drift from what the code exports and evaluates.
//!
//! `loopwatch rules` and `loopwatch dashboard` regenerate the committed files; a test
//! fails when the committed files differ from what this module produces.

mod dashboard;
mod rules;

use std::path::Path;

pub use dashboard::{dashboard_expressions, grafana_dashboard, DASHBOARD_FILE};
pub use rules::{alert_expression, prometheus_rules, promtool_tests, RULES_FILE, RULES_TEST_FILE};

use crate::evaluate::Thresholds;

/// Metric names an expression reads: identifiers that are not functions, keywords,
/// label names (inside `{…}`, `by (…)`, `on (…)` …), strings or durations.
///
/// ```
/// let names = loopwatch::generate::metric_names("sum by (name) (rate(foo_total[5m])) / on() bar > 3");
/// assert_eq!(names, vec!["foo_total".to_string(), "bar".to_string()]);
/// ```
pub fn metric_names(expr: &str) -> Vec<String> {
    // Operators and modifiers that read like identifiers.
    const KEYWORDS: [&str; 6] = ["and", "or", "unless", "bool", "offset", "inf"];
    // Modifiers whose parenthesised list holds label names, not metrics.
    const LABEL_LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Aggregations may put `by (…)` between their name and their parentheses.
    const AGGREGATIONS: [&str; 12] = [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let mut depth_braces = 0;
    let mut label_list = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '{' => {
                depth_braces += 1;
                i += 1;
            }
            '}' => {
                depth_braces -= 1;
                i += 1;
            }
            '[' => {
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
            }
            ')' => {
                label_list = false;
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j] == ' ' {
                    j += 1;
                }
                let called = j < chars.len() && chars[j] == '(';
                let lower = word.to_ascii_lowercase();
                if LABEL_LISTS.contains(&lower.as_str()) {
                    label_list = true;
                } else if depth_braces == 0
                    && !label_list
                    && !called
                    && !KEYWORDS.contains(&lower.as_str())
                    && !AGGREGATIONS.contains(&lower.as_str())
                {
                    names.push(word);
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                // A number, possibly with an exponent (1e9) or a duration suffix.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Writes `text` to `file` under `root`, creating its directory.
fn write_file(root: &Path, file: &str, text: &str) -> std::io::Result<()> {
    let path = root.join(file);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}

/// Writes the rules file and its unit tests under `root` (the repository).
pub fn write_rules(root: &Path, thresholds: &Thresholds) -> std::io::Result<()> {
    write_file(root, RULES_FILE, &prometheus_rules(thresholds))?;
    write_file(root, RULES_TEST_FILE, &promtool_tests(thresholds))
}

/// Writes the dashboard under `root` (the repository).
pub fn write_dashboard(root: &Path, thresholds: &Thresholds) -> std::io::Result<()> {
    let mut text = serde_json::to_string_pretty(&grafana_dashboard(thresholds))
        .map_err(std::io::Error::other)?;
    text.push('\n');
    write_file(root, DASHBOARD_FILE, &text)
}
