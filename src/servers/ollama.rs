//! Ollama's `GET /api/ps` (docs/api.md, "List Running Models"; `ProcessResponse` in
//! api/types.go): the models loaded, each with its memory (`size`) and the part of it
//! in GPU memory (`size_vram`). Ollama has no metrics endpoint, so this is all
//! loopwatch reads of it.
//!
//! ```
//! use loopwatch::servers::ollama;
//! let answer = r#"{"models":[{"name":"mistral:latest","model":"mistral:latest",
//!     "size":5137025024,"size_vram":5137025024,"expires_at":"2024-06-04T14:38:31-07:00"}]}"#;
//! let reading = ollama::read(answer).unwrap();
//! let models = reading.models.unwrap();
//! assert_eq!(models[0].name, "mistral:latest");
//! assert_eq!(models[0].vram_bytes, 5_137_025_024);
//! assert!(ollama::read("vllm:num_requests_running 1").is_err());
//! ```

use serde::Deserialize;

use super::{LoadedModel, ReadFailure, Reading};

/// The longest model name kept (a label value).
const MAX_NAME_CHARS: usize = 128;

/// The name of a model listed without one (a name no Ollama model has).
const UNNAMED: &str = "(unnamed)";

/// The answer, as far as loopwatch reads it; other fields are ignored.
#[derive(Deserialize)]
struct Running {
    models: Vec<Model>,
}

#[derive(Deserialize)]
struct Model {
    #[serde(default)]
    name: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    size: Option<serde_json::Number>,
    #[serde(default)]
    size_vram: Option<serde_json::Number>,
}

/// A byte count as Ollama writes it (an integer; a negative or fractional one is
/// taken as zero, or rounded down).
fn bytes(number: Option<serde_json::Number>) -> u64 {
    number.map_or(0, |n| {
        n.as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|v| v.is_finite() && *v > 0.0)
                    .map(|v| v as u64)
            })
            .unwrap_or(0)
    })
}

/// Reads an `/api/ps` answer. Anything but a JSON object with a `models` list is
/// [`ReadFailure::Garbage`].
pub fn read(text: &str) -> Result<Reading, ReadFailure> {
    let running: Running = serde_json::from_str(text).map_err(|e| {
        ReadFailure::Garbage(format!(
            "not Ollama's /api/ps answer ({})",
            e.classify_name()
        ))
    })?;
    let models = running
        .models
        .into_iter()
        .map(|m| {
            let name: String = if m.name.trim().is_empty() {
                m.model
            } else {
                m.name
            }
            .trim()
            .chars()
            .take(MAX_NAME_CHARS)
            .collect();
            LoadedModel {
                name: if name.is_empty() {
                    UNNAMED.to_string()
                } else {
                    name
                },
                size_bytes: bytes(m.size),
                vram_bytes: bytes(m.size_vram),
            }
        })
        .collect();
    // Names cut to the same first characters, or given twice: one entry each.
    let models = super::book::merged(models);
    Ok(Reading {
        models: Some(models),
        ..Reading::default()
    })
}

/// How a JSON error is named in a log line, without the answer's text.
trait Classify {
    fn classify_name(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "JSON without a list of models",
            serde_json::error::Category::Eof => "JSON cut short",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_and_odd_ones_refused() {
        let r = read(
            r#"{"models":[
                {"name":"","model":"qwen3:8b","size":6000000000,"size_vram":4000000000.0,"details":{"family":"qwen3"}},
                {"name":"gemma3:27b","size":-5,"size_vram":null,"context_length":8192}
            ]}"#,
        )
        .unwrap();
        let models = r.models.unwrap();
        assert_eq!(models[0].name, "qwen3:8b");
        assert_eq!(
            (models[0].size_bytes, models[0].vram_bytes),
            (6_000_000_000, 4_000_000_000)
        );
        assert_eq!((models[1].size_bytes, models[1].vram_bytes), (0, 0));
        assert_eq!(read(r#"{"models":[]}"#).unwrap().models, Some(vec![]));
        for (bad, says) in [
            ("", "JSON cut short"),
            ("<html>", "not JSON"),
            ("{}", "without a list of models"),
            (r#"{"models":{}}"#, "without a list of models"),
            (r#"{"models":[1]}"#, "without a list of models"),
            ("[]", "without a list of models"),
        ] {
            match read(bad) {
                Err(ReadFailure::Garbage(why)) => assert!(why.contains(says), "{bad}: {why}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_answer_is_read_without_a_panic(text in ".{0,300}") {
            let _ = read(&text);
        }
    }
}
