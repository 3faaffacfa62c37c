//! A run's artifacts read back: the summary JSON (`profile_export_aiperf.json`, this tool's or
//! Python AIPerf's: the same layout) and the per-request records (`profile_export.jsonl`).
//! The in-run report and `aiperf plot` both start here, so both show the same thing.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// Defined with the JSONL writer, which keeps them for the run's report.
pub use crate::export::jsonl::{KeptRecords, Rec};

/// Why a run's artifacts could not be read: the message names the file (and line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError(pub String);

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The default file names (AIPerf's): what `aiperf plot` looks for.
pub const SUMMARY_FILE: &str = crate::export::JSON_FILE;
pub const RECORDS_FILE: &str = crate::export::JSONL_FILE;

/// One run: where it came from, its summary, its records.
#[derive(Debug, Clone)]
pub struct RunData {
    pub dir: PathBuf,
    /// How the run is named in a comparison: its directory's name.
    pub label: String,
    /// The summary's file name (`profile_export_aiperf.json`, or the prefixed one): the
    /// run's other artifacts are named after it.
    pub summary_file: String,
    pub summary: Value,
    /// Empty when the run wrote no records (`--export-level summary`).
    pub records: Vec<Rec>,
    /// Whether a records file was found.
    pub has_records: bool,
}

#[derive(Deserialize)]
struct Line {
    metadata: Meta,
    /// Null for a failed request in AIPerf's records.
    #[serde(default)]
    metrics: Option<Metrics>,
    #[serde(default)]
    error: Option<ErrorLine>,
}

#[derive(Deserialize)]
struct Meta {
    request_start_ns: u64,
    request_end_ns: u64,
    #[serde(default)]
    benchmark_phase: Option<String>,
    #[serde(default)]
    send_lag_ms: Option<f64>,
}

#[derive(Deserialize)]
struct ErrorLine {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    code: Option<Value>,
}

/// The metrics the plots use; the others are skipped unparsed (a run's records file is read
/// back whole after the run, so this is per-request cost).
#[derive(Deserialize, Default)]
struct Metrics {
    #[serde(default)]
    time_to_first_token: Option<Value>,
    #[serde(default)]
    inter_token_latency: Option<Value>,
    #[serde(default)]
    request_latency: Option<Value>,
}

/// A metric's value in a record: `{"value": v, "unit": u}` (a number; lists are skipped).
fn metric(m: &Option<Value>) -> Option<f64> {
    m.as_ref()?.get("value")?.as_f64().filter(|v| v.is_finite())
}

/// Reads `dir/json_name` (required) and `dir/jsonl_name` (optional).
pub fn load_run(dir: &Path, json_name: &str, jsonl_name: &str) -> Result<RunData, LoadError> {
    load_run_with(dir, json_name, jsonl_name, None)
}

/// [`load_run`], with the records already in hand (`kept`, the run's own: then the records
/// file is not read back).
pub fn load_run_with(
    dir: &Path,
    json_name: &str,
    jsonl_name: &str,
    kept: Option<Vec<Rec>>,
) -> Result<RunData, LoadError> {
    let json_path = dir.join(json_name);
    let text = std::fs::read_to_string(&json_path).map_err(|e| {
        LoadError(format!(
            "cannot read {}: {e} (an artifact directory of `aiperf profile` holds {json_name})",
            json_path.display()
        ))
    })?;
    let summary: Value = serde_json::from_str(&text)
        .map_err(|e| LoadError(format!("{} is not valid JSON: {e}", json_path.display())))?;
    if !summary.is_object() {
        return Err(LoadError(format!(
            "{} is not a run's summary (a JSON object)",
            json_path.display()
        )));
    }
    let jsonl_path = dir.join(jsonl_name);
    let (records, has_records) = match kept {
        Some(records) => (records, true),
        None => match std::fs::File::open(&jsonl_path) {
            Ok(f) => (read_records(std::io::BufReader::new(f), &jsonl_path)?, true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), false),
            Err(e) => {
                return Err(LoadError(format!(
                    "cannot read {}: {e}",
                    jsonl_path.display()
                )))
            }
        },
    };
    let label = dir
        .canonicalize()
        .unwrap_or_else(|_| dir.to_path_buf())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    Ok(RunData {
        dir: dir.to_path_buf(),
        label,
        summary_file: json_name.to_string(),
        summary,
        records,
        has_records,
    })
}

/// Every line of a records file; a line that is not a record is an error naming it.
pub fn read_records(mut r: impl BufRead, path: &Path) -> Result<Vec<Rec>, LoadError> {
    let mut out = Vec::new();
    let mut line = String::new();
    for i in 0usize.. {
        line.clear();
        let n = r
            .read_line(&mut line)
            .map_err(|e| LoadError(format!("cannot read {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        let l: Line = serde_json::from_str(&line).map_err(|e| {
            LoadError(format!(
                "{}:{}: not a request record: {e}",
                path.display(),
                i + 1
            ))
        })?;
        let error = l.error.map(|e| {
            e.kind.unwrap_or_else(|| match e.code {
                Some(c) if !c.is_null() => format!("code {c}"),
                _ => "error".into(),
            })
        });
        let m = l.metrics.unwrap_or_default();
        out.push(Rec {
            start_ns: l.metadata.request_start_ns,
            end_ns: l.metadata.request_end_ns.max(l.metadata.request_start_ns),
            warmup: l.metadata.benchmark_phase.as_deref() == Some("warmup"),
            ttft_ms: metric(&m.time_to_first_token),
            itl_ms: metric(&m.inter_token_latency),
            latency_ms: metric(&m.request_latency),
            send_lag_ms: l.metadata.send_lag_ms.filter(|v| v.is_finite()),
            error,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_read_with_their_phase_metrics_and_errors() {
        let text = concat!(
            r#"{"metadata":{"request_start_ns":10,"request_end_ns":30,"benchmark_phase":"warmup","send_lag_ms":0.5},"metrics":{"time_to_first_token":{"value":1.5,"unit":"ms"},"request_latency":{"value":20.0,"unit":"ms"},"inter_chunk_latency":{"value":[1,2],"unit":"ms"}},"error":null}"#,
            "\n\n",
            r#"{"metadata":{"request_start_ns":40,"request_end_ns":35,"benchmark_phase":"profiling"},"metrics":{},"error":{"code":500,"type":"InternalServerError","message":"x"}}"#,
            "\n",
            // Values that are no number are skipped; the last line needs no newline.
            r#"{"metadata":{"request_start_ns":1,"request_end_ns":2},"metrics":{"time_to_first_token":7,"inter_token_latency":{"value":[1,2]},"request_latency":{"value":3.0,"unit":"ms"}}}"#,
        );
        let recs = read_records(text.as_bytes(), Path::new("f.jsonl")).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(
            (recs[2].ttft_ms, recs[2].itl_ms, recs[2].latency_ms),
            (None, None, Some(3.0))
        );
        assert!(recs[0].warmup && !recs[1].warmup);
        assert_eq!(recs[0].ttft_ms, Some(1.5));
        assert_eq!(recs[0].latency_ms, Some(20.0));
        assert_eq!(recs[0].send_lag_ms, Some(0.5));
        assert_eq!(recs[1].error.as_deref(), Some("InternalServerError"));
        // An end before the start is clamped, never a negative duration.
        assert_eq!(recs[1].end_ns, 40);
    }

    #[test]
    fn a_corrupt_line_is_named() {
        let text =
            "{\"metadata\":{\"request_start_ns\":1,\"request_end_ns\":2},\"metrics\":{}}\n{oops\n";
        let e = read_records(text.as_bytes(), Path::new("r.jsonl")).unwrap_err();
        assert!(e.0.starts_with("r.jsonl:2: not a request record"), "{e}");
    }

    #[test]
    fn a_missing_summary_or_corrupt_json_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let e = load_run(d.path(), SUMMARY_FILE, RECORDS_FILE).unwrap_err();
        assert!(e.0.contains("profile_export_aiperf.json"), "{e}");
        std::fs::write(d.path().join(SUMMARY_FILE), "{not json").unwrap();
        let e = load_run(d.path(), SUMMARY_FILE, RECORDS_FILE).unwrap_err();
        assert!(e.0.contains("is not valid JSON"), "{e}");
        std::fs::write(d.path().join(SUMMARY_FILE), "[1]").unwrap();
        assert!(load_run(d.path(), SUMMARY_FILE, RECORDS_FILE).is_err());
        std::fs::write(d.path().join(SUMMARY_FILE), "{}").unwrap();
        let r = load_run(d.path(), SUMMARY_FILE, RECORDS_FILE).unwrap();
        assert!(!r.has_records && r.records.is_empty());
    }
}
