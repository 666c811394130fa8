//! Runs compared (`loopwatch compare`): each run's `metrics_final.json` read back, its
//! final figures as one row of a table, and one self-contained page that overlays the
//! runs' best-so-far curves against iterations, wall time and LLM spend.
//!
//! The reader accepts every `metrics_final.json` loopwatch has written: a file from
//! before the best-so-far curve (`best_so_far`) or `summary.best_sharpe` were kept gets
//! its table row and a note saying what it lacks, never an error. A file that is not
//! JSON, or JSON that is not a loopwatch final export, is an error naming the file.

mod page;

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::export::files::JSON_FINAL_FILE;

/// Why runs could not be compared; each names the file or directory at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompareError {
    /// The file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The path given.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A directory without a final export in it.
    #[error(
        "{} holds no {JSON_FINAL_FILE}: pass a run's output directory (LOOPWATCH_OUTPUT_DIR) or the file itself",
        path.display()
    )]
    NoFinalFile {
        /// The directory.
        path: PathBuf,
    },
    /// The file is not JSON.
    #[error("{} is not JSON ({reason}): pass a {JSON_FINAL_FILE} written by loopwatch", path.display())]
    NotJson {
        /// The file.
        path: PathBuf,
        /// Where and why parsing failed.
        reason: String,
    },
    /// The file is JSON, but not a final export of loopwatch.
    #[error("{} is not a {JSON_FINAL_FILE} written by loopwatch: {reason}", path.display())]
    NotFinalJson {
        /// The file.
        path: PathBuf,
        /// The key that is missing or of the wrong type.
        reason: String,
    },
    /// The same run was given twice.
    #[error(
        "{} and {} are the same run ({run_id}): pass each run once",
        first.display(),
        second.display()
    )]
    DuplicateRun {
        /// The run's id.
        run_id: String,
        /// The file read first.
        first: PathBuf,
        /// The file that repeats it.
        second: PathBuf,
    },
    /// No run was given.
    #[error("nothing to compare: pass one or more runs (a {JSON_FINAL_FILE} or the directory holding it)")]
    NoRuns,
}

/// A run's final figures: one row of the comparison table, as `loopwatch compare
/// --json` prints it. Every figure is the value in the run's `metrics_final.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RunFigures {
    /// The run's id (`summary.run_id`).
    pub run_id: String,
    /// Its experiment (`identity.experiment`), if named.
    pub experiment: Option<String>,
    /// Its loop's name (`identity.loop`), if named.
    #[serde(rename = "loop")]
    pub loop_name: Option<String>,
    /// The file it was read from.
    pub file: PathBuf,
    /// When it started, RFC 3339 (`summary.started_at`).
    pub started_at: Option<String>,
    /// Completed iterations (`summary.iterations`).
    pub iterations: u64,
    /// Successes over successes and failures, over the run (`summary.success_rate`).
    pub success_rate: Option<f64>,
    /// The best Sharpe ratio of any strategy (`summary.best_sharpe`).
    pub best_sharpe: Option<f64>,
    /// Times the champion changed (`summary.champion_changes`).
    pub champion_changes: Option<u64>,
    /// Wall time from the monitor's start to the final export, in seconds
    /// (`summary.elapsed_seconds`).
    pub wall_time_seconds: f64,
    /// Mean wall time of an iteration, in seconds (`summary.mean_execution_time_seconds`).
    pub mean_iteration_seconds: Option<f64>,
    /// LLM calls (`summary.llm.calls`).
    pub llm_calls: Option<u64>,
    /// LLM spend in US dollars (`summary.llm.cost_usd`).
    pub llm_cost_usd: Option<f64>,
    /// Alerts that fired over the run: the `firing` entries of `alert_history`.
    pub alerts_fired: u64,
    /// Alerts still firing at the end (`evaluation.alerts`).
    pub alerts_firing_at_end: Vec<String>,
    /// What the file lacks for the table or the charts, in words.
    pub notes: Vec<String>,
}

impl RunFigures {
    /// The run's label on the page: experiment, loop and run id, those that are set.
    pub fn label(&self) -> String {
        [
            self.experiment.as_deref(),
            self.loop_name.as_deref(),
            Some(self.run_id.as_str()),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" · ")
    }
}

/// One point of a best-so-far curve: iteration, seconds since the start, spend, best.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CurvePoint {
    iteration: f64,
    seconds: f64,
    spend_usd: f64,
    best: f64,
}

/// A run read back from its `metrics_final.json`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FinalRun {
    /// Its final figures.
    pub figures: RunFigures,
    /// Its best-so-far curve, ending at the run's end; `None` when the file has none.
    curve: Option<Vec<CurvePoint>>,
}

/// What the reader found wrong at a key.
fn wrong(key: &str, expected: &str) -> String {
    format!("`{key}` is missing or not {expected}")
}

fn optional_f64(value: &Value, key: &str) -> Result<Option<f64>, String> {
    match value {
        Value::Null => Ok(None),
        v => v.as_f64().map(Some).ok_or_else(|| wrong(key, "a number")),
    }
}

fn optional_u64(value: &Value, key: &str) -> Result<Option<u64>, String> {
    match value {
        Value::Null => Ok(None),
        v => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| wrong(key, "a whole number")),
    }
}

fn optional_string(value: &Value, key: &str) -> Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        v => v
            .as_str()
            .map(|s| Some(s.to_string()))
            .ok_or_else(|| wrong(key, "a string")),
    }
}

impl FinalRun {
    /// Reads a run from its `metrics_final.json`, or from the directory holding one.
    pub fn read(path: &Path) -> Result<FinalRun, CompareError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| CompareError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let metadata = std::fs::metadata(path).map_err(|source| CompareError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let (file, bytes) = if metadata.is_dir() {
            let file = path.join(JSON_FINAL_FILE);
            if !file.is_file() {
                return Err(CompareError::NoFinalFile {
                    path: path.to_path_buf(),
                });
            }
            let bytes = read(&file)?;
            (file, bytes)
        } else {
            (path.to_path_buf(), read(path)?)
        };
        let json: Value = serde_json::from_slice(&bytes).map_err(|e| CompareError::NotJson {
            path: file.clone(),
            reason: e.to_string(),
        })?;
        FinalRun::from_json(&json, &file).map_err(|reason| CompareError::NotFinalJson {
            path: file.clone(),
            reason,
        })
    }

    /// Reads a run from the JSON of its `metrics_final.json`, read from `file`.
    fn from_json(json: &Value, file: &Path) -> Result<FinalRun, String> {
        if !json.is_object() {
            return Err("it is not a JSON object".into());
        }
        if !json["loopwatch_version"].is_string() {
            return Err(format!(
                "{} (is it another tool's file?)",
                wrong("loopwatch_version", "a string")
            ));
        }
        let summary = &json["summary"];
        if !summary.is_object() {
            return Err(wrong("summary", "an object"));
        }
        let run_id = optional_string(&summary["run_id"], "summary.run_id")?
            .ok_or_else(|| wrong("summary.run_id", "a string"))?;
        let iterations = optional_u64(&summary["iterations"], "summary.iterations")?
            .ok_or_else(|| wrong("summary.iterations", "a whole number"))?;
        let wall_time_seconds =
            optional_f64(&summary["elapsed_seconds"], "summary.elapsed_seconds")?
                .ok_or_else(|| wrong("summary.elapsed_seconds", "a number"))?;
        let mut notes = Vec::new();
        let llm = &summary["llm"];
        let (llm_calls, llm_cost_usd) = if llm.is_null() {
            notes.push("no LLM figures (written before loopwatch metered LLM calls)".into());
            (None, None)
        } else {
            (
                optional_u64(&llm["calls"], "summary.llm.calls")?,
                optional_f64(&llm["cost_usd"], "summary.llm.cost_usd")?,
            )
        };
        let best_sharpe = match summary.get("best_sharpe") {
            Some(v) => optional_f64(v, "summary.best_sharpe")?,
            None => {
                notes.push(
                    "no best Sharpe (written before loopwatch kept summary.best_sharpe)".into(),
                );
                None
            }
        };
        let alert_history = &json["alert_history"];
        let alerts_fired = match alert_history {
            Value::Null => 0,
            Value::Array(entries) => {
                entries.iter().filter(|e| e["state"] == "firing").count() as u64
            }
            _ => return Err(wrong("alert_history", "a list")),
        };
        if json["events_dropped"].as_u64().is_some_and(|n| n > 0) {
            notes.push(format!(
                "alerts fired counts the events kept; {} older events were dropped",
                json["events_dropped"]
            ));
        }
        let alerts_firing_at_end = json["evaluation"]["alerts"]
            .as_object()
            .map(|alerts| {
                alerts
                    .iter()
                    .filter(|(_, state)| *state == "firing")
                    .map(|(name, _)| name.clone())
                    .collect()
            })
            .unwrap_or_default();
        let identity = &json["identity"];
        let figures = RunFigures {
            experiment: optional_string(&identity["experiment"], "identity.experiment")?,
            loop_name: optional_string(&identity["loop"], "identity.loop")?,
            file: file.to_path_buf(),
            started_at: optional_string(&summary["started_at"], "summary.started_at")?,
            iterations,
            success_rate: optional_f64(&summary["success_rate"], "summary.success_rate")?,
            best_sharpe,
            champion_changes: optional_u64(
                &summary["champion_changes"],
                "summary.champion_changes",
            )?,
            wall_time_seconds,
            mean_iteration_seconds: optional_f64(
                &summary["mean_execution_time_seconds"],
                "summary.mean_execution_time_seconds",
            )?,
            llm_calls,
            llm_cost_usd,
            alerts_fired,
            alerts_firing_at_end,
            notes,
            run_id,
        };
        let mut run = FinalRun {
            figures,
            curve: None,
        };
        run.curve = run.read_curve(&json["best_so_far"])?;
        Ok(run)
    }

    /// The best-so-far curve of `best_so_far`, closed by the run's end; notes what is
    /// missing.
    fn read_curve(&mut self, progress: &Value) -> Result<Option<Vec<CurvePoint>>, String> {
        let f = &mut self.figures;
        if progress.is_null() {
            f.notes.push(
                "no best-so-far curve (written before loopwatch kept best_so_far): table row only"
                    .into(),
            );
            return Ok(None);
        }
        let points = progress["points"]
            .as_array()
            .ok_or_else(|| wrong("best_so_far.points", "a list"))?;
        let mut curve = Vec::with_capacity(points.len() + 1);
        for (i, p) in points.iter().enumerate() {
            let key = |field: &str| format!("best_so_far.points[{i}].{field}");
            let number = |field: &str| {
                optional_f64(&p[field], &key(field))?.ok_or_else(|| wrong(&key(field), "a number"))
            };
            let iteration = optional_u64(&p["iteration"], &key("iteration"))?
                .ok_or_else(|| wrong(&key("iteration"), "a whole number"))?;
            curve.push(CurvePoint {
                iteration: iteration as f64,
                seconds: number("elapsed_seconds")?,
                spend_usd: number("llm_cost_usd")?,
                best: number("best_sharpe")?,
            });
        }
        if let Some(dropped) = progress["points_dropped"].as_u64().filter(|n| *n > 0) {
            f.notes.push(format!(
                "{dropped} improvements thinned out of its curve (it keeps 512 at most)"
            ));
        }
        let Some(last) = curve.last().copied() else {
            f.notes
                .push("no best-so-far curve: no strategy reported a Sharpe ratio".into());
            return Ok(None);
        };
        // The curve holds its last value to the run's end.
        curve.push(CurvePoint {
            iteration: (f.iterations as f64).max(last.iteration),
            seconds: f.wall_time_seconds.max(last.seconds),
            spend_usd: f.llm_cost_usd.unwrap_or(last.spend_usd).max(last.spend_usd),
            best: last.best,
        });
        Ok(Some(curve))
    }

    /// Whether the file holds a best-so-far curve.
    pub fn has_curve(&self) -> bool {
        self.curve.is_some()
    }

    /// Whether the run spent anything on LLM calls (its curve against spend is drawn).
    fn has_spend(&self) -> bool {
        self.figures.llm_cost_usd.is_some_and(|c| c > 0.0)
    }
}

/// Runs to compare: at least one, each run once.
#[derive(Debug, Clone)]
pub struct Comparison {
    runs: Vec<FinalRun>,
}

impl Comparison {
    /// The runs, in the order given; the same run id twice is an error naming both
    /// files.
    pub fn new(runs: Vec<FinalRun>) -> Result<Comparison, CompareError> {
        if runs.is_empty() {
            return Err(CompareError::NoRuns);
        }
        for (i, run) in runs.iter().enumerate() {
            if let Some(first) = runs[..i]
                .iter()
                .find(|r| r.figures.run_id == run.figures.run_id)
            {
                return Err(CompareError::DuplicateRun {
                    run_id: run.figures.run_id.clone(),
                    first: first.figures.file.clone(),
                    second: run.figures.file.clone(),
                });
            }
        }
        Ok(Comparison { runs })
    }

    /// Reads each path (a `metrics_final.json` or the directory holding it) and
    /// compares the runs.
    pub fn read<P: AsRef<Path>>(paths: &[P]) -> Result<Comparison, CompareError> {
        let runs = paths
            .iter()
            .map(|p| FinalRun::read(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Comparison::new(runs)
    }

    /// The runs, in the order given.
    pub fn runs(&self) -> &[FinalRun] {
        &self.runs
    }

    /// The table of final figures, one row per run.
    pub fn table(&self) -> Vec<&RunFigures> {
        self.runs.iter().map(|r| &r.figures).collect()
    }

    /// The comparison page: self-contained HTML (inline SVG and CSS, no scripts, no
    /// external assets), for a browser offline.
    pub fn html(&self) -> String {
        page::render(&self.runs)
    }
}

#[cfg(test)]
mod tests;
