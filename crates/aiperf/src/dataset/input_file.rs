//! `--input-file` loaders (`--custom-dataset-type`).
//!
//! - `single_turn`: JSONL, each line `{"text": ...}` or `{"texts": [...]}` (joined with a
//!   space), optional `output_length`.
//! - `mooncake_trace`: JSONL, each line `{"input_length", "output_length"?, "hash_ids"?,
//!   "timestamp"? (ms)}`; prompts are synthetic with exactly `input_length` tokens, and
//!   timestamps drive the fixed schedule.

use std::path::Path;

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Deserialize;

use super::{entry, Dataset, PromptGenerator};
use crate::cli::CustomDatasetType;
use crate::config::BenchmarkConfig;
use crate::tokenizer::Tokenizer;

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read --input-file {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}:{line}: {message}")]
    Line {
        path: String,
        line: usize,
        message: String,
    },
    #[error("--input-file {0} holds no requests")]
    Empty(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SingleTurn {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    texts: Option<Vec<String>>,
    #[serde(default)]
    output_length: Option<u32>,
    #[serde(default)]
    session_id: Option<String>,
}

#[derive(Deserialize)]
struct MooncakeLine {
    input_length: u32,
    #[serde(default)]
    output_length: Option<u32>,
    #[serde(default)]
    #[allow(dead_code)] // prefix sharing by hash id is not modelled yet
    hash_ids: Option<Vec<u64>>,
    #[serde(default)]
    timestamp: Option<f64>,
}

pub fn load(
    cfg: &BenchmarkConfig,
    path: &Path,
    tokenizer: &Tokenizer,
) -> Result<Dataset, DatasetError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| DatasetError::Read {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    let kind = cfg
        .custom_dataset_type
        .unwrap_or(CustomDatasetType::SingleTurn);
    let generator = PromptGenerator::new(tokenizer.clone());
    let mut rng = StdRng::seed_from_u64(cfg.random_seed);
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| DatasetError::Line {
            path: shown.clone(),
            line: line_no,
            message,
        };
        let n = entries.len();
        match kind {
            CustomDatasetType::SingleTurn => {
                let row: SingleTurn = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
                let prompt = match (row.text, row.texts) {
                    (Some(t), None) => t,
                    (None, Some(ts)) if !ts.is_empty() => ts.join(" "),
                    _ => return Err(bad("expected `text` or a non-empty `texts`".into())),
                };
                let isl = tokenizer.count(&prompt) as u32;
                let osl = row.output_length.or(cfg.osl);
                let id = row.session_id.unwrap_or_else(|| format!("conv-{n}"));
                entries.push(entry(cfg, id, &prompt, isl, osl, None));
            }
            CustomDatasetType::MooncakeTrace => {
                let row: MooncakeLine =
                    serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
                if row.input_length == 0 {
                    return Err(bad("`input_length` must be at least 1".into()));
                }
                if let Some(t) = row.timestamp {
                    if !(t.is_finite() && t >= 0.0) {
                        return Err(bad(format!("`timestamp` must be ≥ 0 ms, got {t}")));
                    }
                }
                let start = generator.random_start(&mut rng);
                let prompt = generator.prompt(start, row.input_length as usize);
                let osl = row.output_length.or(cfg.osl);
                entries.push(entry(
                    cfg,
                    format!("conv-{n}"),
                    &prompt,
                    row.input_length,
                    osl,
                    row.timestamp,
                ));
            }
        }
    }
    if entries.is_empty() {
        return Err(DatasetError::Empty(shown));
    }
    Ok(Dataset { entries })
}
