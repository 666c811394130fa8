//! Generated configuration: the Prometheus rules (with their promtool unit tests) and
//! the Grafana dashboards (one loop's, the fleet's), both derived from the catalog and [`Thresholds`], so names
//! and numbers cannot drift from what the library exports and evaluates.
//!
//! `loopwatch rules` and `loopwatch dashboard` regenerate the committed files; a test
//! fails when the committed files differ from what this module produces.

mod dashboard;
mod rules;

use std::path::Path;

use loopwatch::Thresholds;

pub use dashboard::{
    dashboard_expressions, dashboard_panels, grafana_dashboard, grafana_fleet_dashboard,
    with_variables, DASHBOARD_FILE, FLEET_DASHBOARD_FILE, MODEL_SERVERS_PANEL,
};
pub use rules::{
    expected_description, prometheus_rules, promtool_tests, MEMORY_RATIO_RECORD, RULES_FILE,
    RULES_TEST_FILE,
};

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
    write_file(root, DASHBOARD_FILE, &text)?;
    let mut fleet = serde_json::to_string_pretty(&grafana_fleet_dashboard(thresholds))
        .map_err(std::io::Error::other)?;
    fleet.push('\n');
    write_file(root, FLEET_DASHBOARD_FILE, &fleet)
}
