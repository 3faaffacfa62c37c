//! Results out: the console table and the artifacts in AIPerf's layout.

pub mod console;
pub mod jsonl;
mod spec;

pub use spec::{OutputSpec, UiType};

use std::io::Write;
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::dataset::Dataset;
use crate::metrics::stats::PERCENTILES;
use crate::metrics::{MetricKind, MetricValue, PhaseSummary};

pub const JSON_FILE: &str = "profile_export_aiperf.json";
pub const CSV_FILE: &str = "profile_export_aiperf.csv";
pub const JSONL_FILE: &str = "profile_export.jsonl";
pub const INPUTS_FILE: &str = "inputs.json";

/// Everything a finished (or interrupted) run reports.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub benchmark_id: String,
    pub input_config: Value,
    pub profiling: PhaseSummary,
    pub warmup: Option<PhaseSummary>,
    pub was_cancelled: bool,
    pub start_time: String,
    pub end_time: String,
    pub urls: Vec<String>,
    pub warnings: Vec<String>,
    /// Plugin status and hook counts (the `plugins` section).
    pub plugins: Value,
    /// Phase stats as the plugin hooks saw them.
    pub phase_stats: Map<String, Value>,
    /// Whether the client kept up (see `timing::health`).
    pub client_health: Value,
}

/// Writes `bytes` to `dir/name` via a temporary file, so a reader never sees half a file.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all().ok();
    }
    std::fs::rename(&tmp, dir.join(name))
}

/// `inputs.json`: the exact payloads, `{"data": [{"session_id", "payloads": [...]}]}`.
/// Written before the run; rewritten after it when multi-turn conversations added the later
/// turns' payloads (which carry the server's replies).
pub fn write_inputs(dir: &Path, dataset: &Dataset) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(dataset.entries.iter().map(|e| e.payload.len() + 64).sum());
    buf.extend_from_slice(b"{\"data\":[");
    for (i, e) in dataset.entries.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(b"{\"session_id\":");
        serde_json::to_writer(&mut buf, &e.conversation_id)?;
        buf.extend_from_slice(b",\"payloads\":[");
        // Payloads are already JSON: written byte for byte as they were sent.
        buf.extend_from_slice(&e.payload);
        for later in e.later_payloads.get().into_iter().flatten() {
            buf.push(b',');
            buf.extend_from_slice(later);
        }
        buf.extend_from_slice(b"]}");
    }
    buf.extend_from_slice(b"]}\n");
    write_atomic(dir, INPUTS_FILE, &buf)
}

pub fn report_json(r: &RunReport) -> Value {
    let mut out = Map::new();
    out.insert("schema_version".into(), json!("1.0"));
    out.insert("aiperf_version".into(), json!(env!("CARGO_PKG_VERSION")));
    out.insert("benchmark_id".into(), json!(r.benchmark_id));
    out.extend(r.profiling.metrics_json());
    out.insert("error_summary".into(), r.profiling.errors_json());
    out.insert("was_cancelled".into(), json!(r.was_cancelled));
    out.insert("start_time".into(), json!(r.start_time));
    out.insert("end_time".into(), json!(r.end_time));
    let per_url: Vec<Value> = r
        .profiling
        .per_url
        .iter()
        .map(|(i, (ok, err))| json!({"url": r.urls.get(*i), "request_count": ok, "error_request_count": err}))
        .collect();
    out.insert("per_url".into(), Value::Array(per_url));
    if let Some(w) = &r.warmup {
        let mut warm = w.metrics_json();
        warm.insert("error_summary".into(), w.errors_json());
        out.insert("warmup".into(), Value::Object(warm));
    }
    out.insert("phase_stats".into(), Value::Object(r.phase_stats.clone()));
    out.insert("warnings".into(), json!(r.warnings));
    out.insert("client_health".into(), r.client_health.clone());
    out.insert("plugins".into(), r.plugins.clone());
    out.insert("input_config".into(), r.input_config.clone());
    Value::Object(out)
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// `profile_export_aiperf.csv`: the statistics block, a blank line, then the aggregates.
pub fn report_csv(s: &PhaseSummary) -> String {
    let mut out = String::from("Metric,avg,min,max,sum,p1,p5,p10,p25,p50,p75,p90,p95,p99,std\n");
    for m in &s.metrics {
        if let MetricValue::Stats(st) = &m.stats {
            out.push_str(&format!("{} ({}),", m.info.header, m.info.unit));
            let mut cells = vec![st.avg, st.min, st.max, st.sum];
            cells.extend(PERCENTILES.iter().map(|(p, _)| st.percentile(*p)));
            cells.push(st.std);
            out.push_str(
                &cells
                    .iter()
                    .map(|c| fmt_num(*c))
                    .collect::<Vec<_>>()
                    .join(","),
            );
            out.push('\n');
        }
    }
    out.push_str("\nMetric,Value\n");
    for m in &s.metrics {
        if let (MetricValue::Avg(v), MetricKind::Aggregate) = (&m.stats, m.info.kind) {
            out.push_str(&format!(
                "{} ({}),{}\n",
                m.info.header,
                m.info.unit,
                fmt_num(*v)
            ));
        }
    }
    out
}

/// Writes `profile_export_aiperf.json` and `.csv`.
pub fn write_reports(dir: &Path, r: &RunReport) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(&report_json(r))?;
    write_atomic(dir, JSON_FILE, &json)?;
    write_atomic(dir, CSV_FILE, report_csv(&r.profiling).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{MetricSummary, Stats, METRICS};

    fn summary() -> PhaseSummary {
        let ttft = METRICS
            .iter()
            .find(|m| m.tag == "time_to_first_token")
            .unwrap();
        let rc = METRICS.iter().find(|m| m.tag == "request_count").unwrap();
        PhaseSummary {
            metrics: vec![
                MetricSummary {
                    info: ttft,
                    stats: MetricValue::Stats(Stats::compute(&mut [1.0, 2.0, 3.0]).unwrap()),
                },
                MetricSummary {
                    info: rc,
                    stats: MetricValue::Avg(3.0),
                },
            ],
            success: 3,
            ..Default::default()
        }
    }

    #[test]
    fn csv_layout() {
        let csv = report_csv(&summary());
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "Metric,avg,min,max,sum,p1,p5,p10,p25,p50,p75,p90,p95,p99,std"
        );
        assert_eq!(
            lines[1],
            "Time to First Token (ms),2,1,3,6,1.02,1.10,1.20,1.50,2,2.50,2.80,2.90,2.98,0.82"
        );
        assert_eq!(lines[2], "");
        assert_eq!(lines[3], "Metric,Value");
        assert_eq!(lines[4], "Request Count (requests),3");
    }
}
