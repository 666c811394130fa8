//! The final export: `prometheus_metrics_final.txt` and `metrics_final.json`, written
//! atomically when the loop stops.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use prometheus::proto::{MetricFamily, MetricType};
use serde_json::{json, Map, Value};

use crate::alerts::{AlertName, Watched};
use crate::catalog;
use crate::error::{CollectError, Error};
use crate::export::Snapshot;
use crate::records::LogEntryKind;

/// File name of the final Prometheus text exposition.
pub const PROMETHEUS_FINAL_FILE: &str = "prometheus_metrics_final.txt";
/// File name of the final JSON summary and metric values.
pub const JSON_FINAL_FILE: &str = "metrics_final.json";

/// Outcome of the final export, file by file: one failing does not stop the other.
#[derive(Debug)]
#[non_exhaustive]
pub struct FinalExport {
    /// Path of `prometheus_metrics_final.txt`, or why it was not written.
    pub prometheus_text: Result<PathBuf, Error>,
    /// Path of `metrics_final.json`, or why it was not written.
    pub json: Result<PathBuf, Error>,
}

/// Writes `bytes` to `dir/name` atomically: a temporary file in the same directory is
/// written and synced, then renamed over the target, so readers see the old file or
/// the whole new one, never a part.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, Error> {
    let path = dir.join(name);
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write_err = |source| Error::Write {
        path: path.clone(),
        source,
    };
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, &path)
    })();
    if let Err(source) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(write_err(source));
    }
    // Make the rename itself durable; a failure here loses nothing already visible.
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(path)
}

fn number(value: f64) -> Value {
    serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
}

/// Every metric family as JSON: type, help, unit and each series' labels and value.
/// Values that JSON cannot hold (NaN, ±Inf) become `null`.
pub(crate) fn families_to_json(families: &[MetricFamily]) -> Value {
    let mut metrics = Map::new();
    for family in families {
        let samples: Vec<Value> = family
            .get_metric()
            .iter()
            .map(|metric| {
                let labels: BTreeMap<&str, &str> = metric
                    .get_label()
                    .iter()
                    .map(|l| (l.name(), l.value()))
                    .collect();
                let value = match family.get_field_type() {
                    MetricType::COUNTER => number(metric.get_counter().get_value()),
                    MetricType::GAUGE => number(metric.get_gauge().get_value()),
                    MetricType::HISTOGRAM => json!({
                        "count": metric.get_histogram().get_sample_count(),
                        "sum": number(metric.get_histogram().get_sample_sum()),
                    }),
                    _ => Value::Null,
                };
                json!({ "labels": labels, "value": value })
            })
            .collect();
        let kind = crate::pipeline::type_name(family.get_field_type());
        metrics.insert(
            family.name().to_string(),
            json!({
                "type": kind,
                "help": family.help(),
                "unit": catalog::find_exported(family.name()).map(|spec| spec.unit),
                "samples": samples,
            }),
        );
    }
    Value::Object(metrics)
}

/// The evaluator's view: rolling values, baselines, warnings, alert states, thresholds.
fn evaluation_json(snapshot: &Snapshot) -> Value {
    let e = &snapshot.evaluation;
    let mut baselines = Map::new();
    let mut warnings = Map::new();
    for watched in Watched::ALL {
        baselines.insert(
            watched.metric().into(),
            e.baselines[watched].map_or(Value::Null, number),
        );
        warnings.insert(watched.metric().into(), Value::Bool(e.warnings[watched]));
    }
    let alerts: Map<String, Value> = AlertName::ALL
        .into_iter()
        .map(|name| (name.as_str().to_string(), json!(e.alerts[name])))
        .collect();
    json!({
        "rolling": e.rolling,
        "baselines": baselines,
        "warnings_active": warnings,
        "alerts": alerts,
        "low_diversity_streak_iterations": e.low_diversity_streak,
        "thresholds": snapshot.thresholds,
    })
}

/// Writes both files into `dir` from one snapshot and one collection, so they agree.
pub(crate) fn write(
    dir: &Path,
    snapshot: &Snapshot,
    families: Result<Vec<MetricFamily>, CollectError>,
) -> FinalExport {
    let families = match families {
        Ok(families) => families,
        Err(err) => {
            return FinalExport {
                prometheus_text: Err(Error::Collect(err.clone())),
                json: Err(Error::Collect(err)),
            };
        }
    };
    let text = crate::pipeline::TextWriter::default().encode(&families);
    let prometheus_text = write_atomically(dir, PROMETHEUS_FINAL_FILE, text.as_bytes());
    let alert_history: Vec<_> = snapshot
        .events
        .iter()
        .filter(|e| matches!(e.kind, LogEntryKind::Alert { .. }))
        .collect();
    let document = json!({
        "loopwatch_version": env!("CARGO_PKG_VERSION"),
        "identity": snapshot.identity,
        "summary": snapshot.summary,
        "best_so_far": snapshot.progress,
        "evaluation": evaluation_json(snapshot),
        "containers": snapshot.containers,
        "processes": snapshot.processes,
        "evaluations": snapshot.evaluations,
        "instrumentation": snapshot.instrumentation,
        "gpus": snapshot.gpus,
        "model_servers": snapshot.model_servers.servers,
        "alert_history": alert_history,
        "events": snapshot.events,
        "events_dropped": snapshot.events_dropped,
        "metrics": families_to_json(&families),
    });
    let json = serde_json::to_vec_pretty(&document)
        .map_err(|e| Error::Json(Box::new(e)))
        .and_then(|bytes| write_atomically(dir, JSON_FINAL_FILE, &bytes));
    FinalExport {
        prometheus_text,
        json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        write_atomically(dir.path(), "f.txt", b"first version").unwrap();
        write_atomically(dir.path(), "f.txt", b"second").unwrap();
        assert_eq!(std::fs::read(dir.path().join("f.txt")).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f.txt")]);
    }

    #[test]
    fn interrupted_write_leaves_the_previous_file_intact() {
        let dir = tempfile::tempdir().unwrap();
        write_atomically(dir.path(), "f.txt", b"complete old contents").unwrap();
        // A directory where the temporary file must go makes the write fail midway,
        // as a crash or a full disk would, before the rename.
        let temp = dir
            .path()
            .join(format!(".f.txt.{}.tmp", std::process::id()));
        std::fs::create_dir(&temp).unwrap();
        let err = write_atomically(dir.path(), "f.txt", b"new").unwrap_err();
        assert!(err.to_string().contains("f.txt"), "{err}");
        assert_eq!(
            std::fs::read(dir.path().join("f.txt")).unwrap(),
            b"complete old contents"
        );
    }

    #[test]
    fn missing_directory_is_a_clear_error() {
        let err =
            write_atomically(Path::new("/nonexistent/loopwatch"), "x.json", b"{}").unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("/nonexistent/loopwatch/x.json"),
            "{message}"
        );
        assert!(message.contains("LOOPWATCH_OUTPUT_DIR"), "{message}");
    }
}
