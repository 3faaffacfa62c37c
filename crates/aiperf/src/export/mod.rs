//! Results out: the console table and the artifacts in AIPerf's layout.

pub mod console;
pub mod jsonl;
pub mod outputs;
mod spec;
pub mod tap;
pub mod timeslices;

pub use spec::{ArtifactNames, ExportLevel, LogLevel, OutputSpec, UiType};

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use aiperf_plugin::PhaseStats;
use serde::Serialize;
use serde_json::Value;

use crate::dataset::Dataset;
use crate::metrics::stats::PERCENTILES;
use crate::metrics::{
    ErrorSummaryJson, MetricInfo, MetricKind, MetricValue, MetricsJson, PhaseKind, PhaseSummary,
};
use crate::plugin::PluginsReport;
use crate::timing::health::ClientHealth;

pub const JSON_FILE: &str = "profile_export_aiperf.json";
pub const CSV_FILE: &str = "profile_export_aiperf.csv";
pub const JSONL_FILE: &str = "profile_export.jsonl";
pub const CONSOLE_FILE: &str = "profile_export_console.txt";
pub const INPUTS_FILE: &str = "inputs.json";
pub const TIMESLICES_JSON_FILE: &str = "profile_export_aiperf_timeslices.json";
pub const TIMESLICES_CSV_FILE: &str = "profile_export_aiperf_timeslices.csv";

/// Everything a finished (or interrupted) run reports. Serialises as
/// `profile_export_aiperf.json` (see [`ReportJson`] for the layout).
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
    pub plugins: PluginsReport,
    /// Phase stats as the plugin hooks saw them, warmup first.
    pub phase_stats: BTreeMap<PhaseKind, PhaseStats>,
    /// Whether the client kept up (see `timing::health`).
    pub client_health: ClientHealth,
    /// The `server_metrics` section, when server metrics were scraped.
    pub server_metrics: Option<Value>,
    /// The `gpu_telemetry` section, when GPU telemetry was collected (or asked for).
    pub gpu_telemetry: Option<Value>,
    /// The `shard` section: which part of a sharded run this is (`--shard`), or the shards
    /// an `aiperf merge` merged.
    pub shard: Option<Value>,
}

impl Serialize for RunReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ReportJson::from(self).serialize(s)
    }
}

/// The layout of `profile_export_aiperf.json` (AIPerf's): the profiling phase's metrics at
/// the top level, keyed by tag, then its errors and the run's details.
#[derive(Serialize)]
struct ReportJson<'a> {
    schema_version: &'static str,
    aiperf_version: &'static str,
    benchmark_id: &'a str,
    #[serde(flatten)]
    metrics: MetricsJson<'a>,
    error_summary: ErrorSummaryJson<'a>,
    was_cancelled: bool,
    /// AIPerf's: the run finished without being interrupted.
    is_complete: bool,
    run_info: RunInfo<'a>,
    start_time: &'a str,
    end_time: &'a str,
    per_url: Vec<UrlCounts<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warmup: Option<WarmupJson<'a>>,
    phase_stats: &'a BTreeMap<PhaseKind, PhaseStats>,
    warnings: &'a [String],
    client_health: &'a ClientHealth,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_metrics: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gpu_telemetry: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shard: Option<&'a Value>,
    plugins: &'a PluginsReport,
    input_config: &'a Value,
}

/// AIPerf's `run_info`: the run's id, seed and command line (one trial per run).
#[derive(Serialize)]
struct RunInfo<'a> {
    benchmark_id: &'a str,
    random_seed: &'a Value,
    trial: u32,
    cli_command: &'a Value,
}

/// The `warmup` section: its metrics, then its errors.
#[derive(Serialize)]
struct WarmupJson<'a> {
    #[serde(flatten)]
    metrics: MetricsJson<'a>,
    error_summary: ErrorSummaryJson<'a>,
}

/// One entry of `per_url`: the profiling phase's successes and errors at one URL.
#[derive(Serialize)]
struct UrlCounts<'a> {
    url: Option<&'a String>,
    request_count: u64,
    error_request_count: u64,
}

impl<'a> From<&'a RunReport> for ReportJson<'a> {
    fn from(r: &'a RunReport) -> Self {
        let p = &r.profiling;
        ReportJson {
            schema_version: "1.0",
            aiperf_version: env!("CARGO_PKG_VERSION"),
            benchmark_id: &r.benchmark_id,
            metrics: MetricsJson(&p.metrics),
            error_summary: ErrorSummaryJson(&p.errors),
            was_cancelled: r.was_cancelled,
            is_complete: !r.was_cancelled,
            run_info: RunInfo {
                benchmark_id: &r.benchmark_id,
                random_seed: &r.input_config["input"]["random_seed"],
                trial: 0,
                cli_command: &r.input_config["cli_command"],
            },
            start_time: &r.start_time,
            end_time: &r.end_time,
            per_url: p
                .per_url
                .iter()
                .map(|(i, (ok, err))| UrlCounts {
                    url: r.urls.get(*i),
                    request_count: *ok,
                    error_request_count: *err,
                })
                .collect(),
            warmup: r.warmup.as_ref().map(|w| WarmupJson {
                metrics: MetricsJson(&w.metrics),
                error_summary: ErrorSummaryJson(&w.errors),
            }),
            phase_stats: &r.phase_stats,
            warnings: &r.warnings,
            client_health: &r.client_health,
            server_metrics: r.server_metrics.as_ref(),
            gpu_telemetry: r.gpu_telemetry.as_ref(),
            shard: r.shard.as_ref(),
            plugins: &r.plugins,
            input_config: &r.input_config,
        }
    }
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

/// A CSV cell: two decimals, as AIPerf writes its (floating-point) values.
fn fmt_num(v: f64) -> String {
    format!("{v:.2}")
}

/// A CSV row's label: `Header (unit)`, without the unit for counts (`count`, `requests`),
/// as AIPerf labels them.
fn csv_label(info: &MetricInfo) -> String {
    if info.unit.is_empty() || matches!(info.unit, "count" | "requests") {
        info.header.to_string()
    } else {
        format!("{} ({})", info.header, info.unit)
    }
}

/// `profile_export_aiperf.csv` in AIPerf's layout: the statistics block, a blank line, then
/// the aggregates (`Metric,Value`), each block sorted by metric tag.
pub fn report_csv(s: &PhaseSummary) -> String {
    let mut sorted: Vec<_> = s.metrics.iter().collect();
    sorted.sort_by_key(|m| m.info.tag);
    let mut out = String::from("Metric,avg,min,max,sum,p1,p5,p10,p25,p50,p75,p90,p95,p99,std\n");
    for m in &sorted {
        if let MetricValue::Stats(st) = &m.stats {
            out.push_str(&csv_label(m.info));
            let mut cells = vec![st.avg, st.min, st.max, st.sum];
            cells.extend(PERCENTILES.iter().map(|(p, _)| st.percentile(*p)));
            cells.push(st.std);
            for c in cells {
                out.push(',');
                out.push_str(&fmt_num(c));
            }
            out.push('\n');
        }
    }
    out.push_str("\nMetric,Value\n");
    for m in &sorted {
        if let (MetricValue::Avg(v), MetricKind::Aggregate) = (&m.stats, m.info.kind) {
            out.push_str(&format!("{},{}\n", csv_label(m.info), fmt_num(*v)));
        }
    }
    out
}

/// Writes `profile_export_aiperf.json` and `.csv` (or their `--profile-export-prefix`
/// names).
pub fn write_reports(dir: &Path, names: &ArtifactNames, r: &RunReport) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(r)?;
    write_atomic(dir, &names.json, &json)?;
    write_atomic(dir, &names.csv, report_csv(&r.profiling).as_bytes())
}

/// The mergeable summary's file name, after the summary's: `profile_export_aiperf_hdr.json`.
pub fn hdr_file_name(json_name: &str) -> String {
    let stem = json_name.strip_suffix(".json").unwrap_or(json_name);
    format!("{stem}_hdr.json")
}

/// Writes the shard's mergeable summary (`metrics::hdr`): per phase, per metric, an HDR
/// histogram with the exact count, sum, sum of squares, min and max; with the run id and
/// the shard, for `aiperf merge` when records are not kept.
pub fn write_hdr(dir: &Path, names: &ArtifactNames, r: &RunReport) -> std::io::Result<String> {
    let name = hdr_file_name(&names.json);
    let mut phases = serde_json::Map::new();
    phases.insert("profiling".into(), serde_json::to_value(&r.profiling.hdr)?);
    if let Some(w) = &r.warmup {
        phases.insert("warmup".into(), serde_json::to_value(&w.hdr)?);
    }
    let doc = serde_json::json!({
        "run_id": r.benchmark_id,
        "shard": r.shard,
        "error_bound": "count, mean, min, max, std exact; percentiles: a value at the rank (nearest rank), within 0.1 %",
        "phases": phases,
    });
    write_atomic(dir, &name, &serde_json::to_vec(&doc)?)?;
    Ok(name)
}

/// Writes `profile_export_console.txt`: the console summary as printed.
pub fn write_console_text(dir: &Path, names: &ArtifactNames, text: &str) -> std::io::Result<()> {
    write_atomic(dir, &names.console_txt, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{ErrorDetails, MetricSummary, Stats, METRICS};
    use crate::plugin::{HookCounts, PluginKind, PluginStatus};
    use crate::timing::health::{RuntimeLag, Verdict};
    use aiperf_plugin::Hook;

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
            "Time to First Token (ms),2.00,1.00,3.00,6.00,1.02,1.10,1.20,1.50,2.00,2.50,2.80,2.90,2.98,0.82"
        );
        assert_eq!(lines[2], "");
        assert_eq!(lines[3], "Metric,Value");
        assert_eq!(lines[4], "Request Count,3.00");
    }

    fn fixed_summary(k: f64) -> PhaseSummary {
        let ttft = METRICS
            .iter()
            .find(|m| m.tag == "time_to_first_token")
            .unwrap();
        let rc = METRICS.iter().find(|m| m.tag == "request_count").unwrap();
        PhaseSummary {
            metrics: vec![
                MetricSummary {
                    info: ttft,
                    stats: MetricValue::Stats(Stats::compute(&mut [k, 2.0, 3.5]).unwrap()),
                },
                MetricSummary {
                    info: rc,
                    stats: MetricValue::Avg(3.0),
                },
            ],
            errors: vec![
                (ErrorDetails::new(Some(500), "ServerError", "boom"), 2),
                (ErrorDetails::new(None, "RequestTimeout", "slow"), 1),
            ],
            success: 3,
            error_count: 3,
            cancelled: 0,
            per_url: [(0usize, (2u64, 1u64)), (1, (1, 2))].into_iter().collect(),
            count_mismatches: 0,
            hdr: Default::default(),
        }
    }

    fn fixed_stats(phase: &str, sent: u64) -> PhaseStats {
        PhaseStats {
            phase: phase.into(),
            sent,
            completed: sent - 1,
            errors: 1,
            cancelled: 1,
            in_flight: 0,
            expected: Some(sent),
            duration_sec: 1.25,
            start_time_ns: 1_700_000_000_000_000_000,
            sending_complete_time_ns: Some(1_700_000_001_000_000_000),
            end_time_ns: None,
            timed_out: false,
            late_sends: 2,
            max_send_lag_ms: Some(1.5),
        }
    }

    /// Active, failed and disabled plugins, listed in configuration order (not by name).
    fn fixed_plugins() -> PluginsReport {
        let status = |name: &str, kind, active, reason: Option<&str>| PluginStatus {
            name: name.into(),
            kind,
            path: None,
            version: None,
            active,
            reason: reason.map(String::from),
            failed: false,
            hooks: BTreeMap::new(),
            records: None,
            progress: None,
            report: None,
        };
        let counts = |calls, errors| HookCounts {
            calls,
            errors,
            timeouts: 0,
        };
        let mut event_log = status("event_log", Some(PluginKind::Builtin), true, None);
        event_log.version = Some("0.1.0".into());
        event_log.hooks = [
            (Hook::PhaseStart, counts(2, 0)),
            (Hook::BenchmarkStart, counts(1, 1)),
        ]
        .into_iter()
        .collect();
        event_log.records = Some(crate::plugin::feed::RecordCounts {
            delivered: 90,
            dropped: 10,
            dropped_batches: 1,
        });
        event_log.progress = Some(crate::plugin::feed::ProgressCounts {
            sent: 4,
            skipped: 1,
        });
        event_log.report = Some(aiperf_plugin::PluginReport {
            metrics: [("slo_violations".to_string(), serde_json::json!(3))]
                .into_iter()
                .collect(),
            notes: vec!["3 requests over the TTFT SLO".into()],
        });
        let why = Some("hook phase_start timed out");
        let mut zeta = status("zeta", Some(PluginKind::External), false, why);
        zeta.path = Some("/bin/zeta".into());
        zeta.failed = true;
        let alpha = status("alpha", None, false, Some("enabled: false"));
        PluginsReport {
            plugins: vec![event_log, zeta, alpha],
        }
    }

    fn fixed_health() -> ClientHealth {
        ClientHealth {
            verdict: Verdict::ClientMayBeTheBottleneck,
            reasons: vec!["requests left late (send lag p99 2.00 ms)".into()],
            notes: vec![],
            runtime_lag_ms: RuntimeLag {
                p50: Some(1.0),
                p99: Some(1.735),
                max: Some(1.75),
                samples: 2,
            },
            send_lag_p99_ms: Some(2.0),
            read_lag_p99_ms: Some(0.5),
            process_cpu_percent: Some(50.0),
            process_cpu_percent_of_machine: Some(25.0),
            machine_cpu_busy_percent: None,
            cores: 2.0,
            worker_threads: Some(2),
        }
    }

    /// A report of fixed data covering every section: two URLs, errors, a warmup, both
    /// phases' stats, a suspect client, and active, failed and disabled plugins.
    fn full_report() -> RunReport {
        RunReport {
            benchmark_id: "00000000-0000-4000-8000-000000000000".into(),
            input_config: serde_json::json!({"model": "m", "url": ["mock"], "cli_command": "aiperf profile"}),
            profiling: fixed_summary(1.0),
            warmup: Some(fixed_summary(0.5)),
            was_cancelled: true,
            start_time: "2024-01-01T00:00:00.000000".into(),
            end_time: "2024-01-01T00:00:01.500000".into(),
            urls: vec!["http://a".into(), "http://b".into()],
            warnings: vec!["w1".into()],
            plugins: fixed_plugins(),
            // Inserted profiling first: the export lists warmup first all the same.
            phase_stats: [
                (PhaseKind::Profiling, fixed_stats("profiling", 6)),
                (PhaseKind::Warmup, fixed_stats("warmup", 4)),
            ]
            .into_iter()
            .collect(),
            client_health: fixed_health(),
            server_metrics: None,
            gpu_telemetry: None,
            shard: None,
        }
    }

    /// The expected file, byte for byte (captured from the `serde_json::Value`-built export
    /// this replaced).
    fn golden(text: &str) -> String {
        text.replace("@VERSION@", env!("CARGO_PKG_VERSION"))
    }

    #[test]
    fn json_report_layout_is_unchanged() {
        let r = full_report();
        let json = String::from_utf8(serde_json::to_vec_pretty(&r).unwrap()).unwrap();
        assert_eq!(json, golden(include_str!("testdata/report_full.json")));
    }

    #[test]
    fn json_report_without_warmup_or_plugins() {
        let mut r = full_report();
        r.warmup = None;
        r.phase_stats.remove(&PhaseKind::Warmup);
        r.plugins = PluginsReport::default();
        let json = String::from_utf8(serde_json::to_vec_pretty(&r).unwrap()).unwrap();
        assert_eq!(json, golden(include_str!("testdata/report_minimal.json")));
    }

    #[test]
    fn json_report_top_level_keys_in_order() {
        let v = serde_json::to_value(full_report()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "schema_version",
                "aiperf_version",
                "benchmark_id",
                "time_to_first_token",
                "request_count",
                "error_summary",
                "was_cancelled",
                "is_complete",
                "run_info",
                "start_time",
                "end_time",
                "per_url",
                "warmup",
                "phase_stats",
                "warnings",
                "client_health",
                "plugins",
                "input_config"
            ]
        );
    }

    #[test]
    fn the_files_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let r = full_report();
        write_reports(dir.path(), &ArtifactNames::default(), &r).unwrap();
        let json = std::fs::read_to_string(dir.path().join(JSON_FILE)).unwrap();
        assert_eq!(json, golden(include_str!("testdata/report_full.json")));
        let csv = std::fs::read_to_string(dir.path().join(CSV_FILE)).unwrap();
        assert_eq!(csv, report_csv(&r.profiling));
    }
}
