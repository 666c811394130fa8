//! Runs compared (`loopwatch compare`): each run's `metrics_final.json` read back, its
//! final figures as one row of a table, and one self-contained page that overlays the
//! runs' best-so-far curves against iterations, wall time and LLM spend.
//!
//! The reader accepts every `metrics_final.json` loopwatch has written: a file from
//! before the best-so-far curve (`best_so_far`) or `summary.best_sharpe` were kept gets
//! its table row and a note saying what it lacks, never an error. A file that is not
//! JSON, or JSON that is not a loopwatch final export, is an error naming the file.

mod page;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::value::RawValue;
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

/// A JSON object whose values are kept as written, so that numbers are parsed with
/// `str::parse`, exactly (serde_json's own float parsing may land one ulp away): the
/// figures are the file's numbers to the last digit.
struct Fields<'a> {
    /// The object's key path, for messages (empty at the root).
    path: String,
    map: BTreeMap<String, &'a RawValue>,
}

impl<'a> Fields<'a> {
    /// The object in `text`, found at `path`.
    fn parse(text: &'a str, path: String) -> Result<Fields<'a>, String> {
        let map = serde_json::from_str(text).map_err(|_| {
            if path.is_empty() {
                "it is not a JSON object".to_string()
            } else {
                wrong(&path, "an object")
            }
        })?;
        Ok(Fields { path, map })
    }

    fn key(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    /// Whether the key is there (`null` included).
    fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// The value's text, when it is there and not `null`.
    fn raw(&self, name: &str) -> Option<&'a str> {
        self.map
            .get(name)
            .map(|raw| raw.get().trim())
            .filter(|text| *text != "null")
    }

    fn object(&self, name: &str) -> Result<Option<Fields<'a>>, String> {
        self.raw(name)
            .map(|text| Fields::parse(text, self.key(name)))
            .transpose()
    }

    fn list(&self, name: &str) -> Result<Option<Vec<&'a RawValue>>, String> {
        self.raw(name)
            .map(|text| serde_json::from_str(text).map_err(|_| wrong(&self.key(name), "a list")))
            .transpose()
    }

    fn f64(&self, name: &str) -> Result<Option<f64>, String> {
        self.raw(name)
            .map(|text| {
                text.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && !text.starts_with(['+', 'i', 'I', 'n', 'N']))
                    .ok_or_else(|| wrong(&self.key(name), "a number"))
            })
            .transpose()
    }

    fn u64(&self, name: &str) -> Result<Option<u64>, String> {
        self.raw(name)
            .map(|text| {
                text.parse::<u64>()
                    .ok()
                    .filter(|_| !text.starts_with('+'))
                    .ok_or_else(|| wrong(&self.key(name), "a whole number"))
            })
            .transpose()
    }

    fn string(&self, name: &str) -> Result<Option<String>, String> {
        self.raw(name)
            .map(|text| serde_json::from_str(text).map_err(|_| wrong(&self.key(name), "a string")))
            .transpose()
    }

    /// Any value (`null` when it is not there).
    fn value(&self, name: &str) -> Value {
        self.raw(name)
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or(Value::Null)
    }

    fn required<T>(&self, name: &str, expected: &str, value: Option<T>) -> Result<T, String> {
        value.ok_or_else(|| wrong(&self.key(name), expected))
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
        let not_json = |reason: String| CompareError::NotJson {
            path: file.clone(),
            reason,
        };
        let text = std::str::from_utf8(&bytes).map_err(|e| not_json(e.to_string()))?;
        serde_json::from_str::<&RawValue>(text).map_err(|e| not_json(e.to_string()))?;
        FinalRun::from_text(text, &file).map_err(|reason| CompareError::NotFinalJson {
            path: file.clone(),
            reason,
        })
    }

    /// Reads a run from the text of its `metrics_final.json` (JSON), read from `file`.
    fn from_text(text: &str, file: &Path) -> Result<FinalRun, String> {
        let root = Fields::parse(text, String::new())?;
        if root.string("loopwatch_version").ok().flatten().is_none() {
            return Err(format!(
                "{} (is it another tool's file?)",
                wrong("loopwatch_version", "a string")
            ));
        }
        let summary = root
            .object("summary")?
            .ok_or_else(|| wrong("summary", "an object"))?;
        let run_id = summary.required("run_id", "a string", summary.string("run_id")?)?;
        let iterations =
            summary.required("iterations", "a whole number", summary.u64("iterations")?)?;
        let wall_time_seconds = summary.required(
            "elapsed_seconds",
            "a number",
            summary.f64("elapsed_seconds")?,
        )?;
        let mut notes = Vec::new();
        let (llm_calls, llm_cost_usd) = match summary.object("llm")? {
            None => {
                notes.push("no LLM figures (written before loopwatch metered LLM calls)".into());
                (None, None)
            }
            Some(llm) => (llm.u64("calls")?, llm.f64("cost_usd")?),
        };
        if !summary.has("best_sharpe") {
            notes.push("no best Sharpe (written before loopwatch kept summary.best_sharpe)".into());
        }
        let alerts_fired = match root.list("alert_history")? {
            None => 0,
            Some(entries) => entries
                .iter()
                .filter(|e| {
                    serde_json::from_str::<Value>(e.get()).is_ok_and(|e| e["state"] == "firing")
                })
                .count() as u64,
        };
        if let Some(dropped) = root.u64("events_dropped").ok().flatten().filter(|n| *n > 0) {
            notes.push(format!(
                "alerts fired counts the events kept; {dropped} older events were dropped"
            ));
        }
        let alerts_firing_at_end = root.value("evaluation")["alerts"]
            .as_object()
            .map(|alerts| {
                alerts
                    .iter()
                    .filter(|(_, state)| *state == "firing")
                    .map(|(name, _)| name.clone())
                    .collect()
            })
            .unwrap_or_default();
        let identity = root.object("identity")?;
        let name = |key: &str| match &identity {
            Some(identity) => identity.string(key),
            None => Ok(None),
        };
        let figures = RunFigures {
            experiment: name("experiment")?,
            loop_name: name("loop")?,
            file: file.to_path_buf(),
            started_at: summary.string("started_at")?,
            iterations,
            success_rate: summary.f64("success_rate")?,
            best_sharpe: summary.f64("best_sharpe")?,
            champion_changes: summary.u64("champion_changes")?,
            wall_time_seconds,
            mean_iteration_seconds: summary.f64("mean_execution_time_seconds")?,
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
        run.curve = run.read_curve(root.object("best_so_far")?)?;
        Ok(run)
    }

    /// The best-so-far curve of `best_so_far`, closed by the run's end; notes what is
    /// missing.
    fn read_curve(
        &mut self,
        progress: Option<Fields<'_>>,
    ) -> Result<Option<Vec<CurvePoint>>, String> {
        let f = &mut self.figures;
        let Some(progress) = progress else {
            f.notes.push(
                "no best-so-far curve (written before loopwatch kept best_so_far): table row only"
                    .into(),
            );
            return Ok(None);
        };
        let points = progress
            .list("points")?
            .ok_or_else(|| wrong("best_so_far.points", "a list"))?;
        let mut curve = Vec::with_capacity(points.len() + 1);
        for (i, raw) in points.iter().enumerate() {
            let p = Fields::parse(raw.get(), format!("best_so_far.points[{i}]"))?;
            let number = |name: &str| p.required(name, "a number", p.f64(name)?);
            curve.push(CurvePoint {
                iteration: p.required("iteration", "a whole number", p.u64("iteration")?)? as f64,
                seconds: number("elapsed_seconds")?,
                spend_usd: number("llm_cost_usd")?,
                best: number("best_sharpe")?,
            });
        }
        if let Some(dropped) = progress.u64("points_dropped")?.filter(|n| *n > 0) {
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
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let monitor = loopwatch::Monitor::builder()
///     .listen("127.0.0.1:0".parse().unwrap())
///     .output_dir(dir.path())
///     .build()
///     .unwrap();
/// for sharpe in [0.8, 1.5, 1.2] {
///     let mut iteration = monitor.start_iteration();
///     iteration.record_success(sharpe, 0.1);
///     iteration.finish();
/// }
/// monitor.shutdown(); // writes metrics_final.json into dir
///
/// let comparison = loopwatch::compare::Comparison::read(&[dir.path()]).unwrap();
/// let row = comparison.table()[0];
/// assert_eq!(row.iterations, 3);
/// assert_eq!(row.best_sharpe, Some(1.5));
/// assert!(row.notes.is_empty());
/// let page = comparison.html();
/// assert!(page.contains(r#"data-panel="Best Sharpe so far by iteration" data-curves="1""#));
/// ```
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
