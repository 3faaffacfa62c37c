//! Sections built from the run directory's other artifacts: the server's metrics and the
//! GPU telemetry over time (`server_metrics_export.json` and `gpu_telemetry_export.json`,
//! their `timeline`) and the time slices (`<summary>_timeslices.json`). Each is optional: a
//! run without the file gets no section, a file that cannot be read gets a note saying so
//! and the rest of the report stands.

use std::path::Path;

use serde_json::Value;

use super::chart::{Chart, Kind, Series};
use super::data::RunData;
use super::html::{self, esc, Section};
use super::model::RunModel;
use super::num;

/// The timeline charts, in the order shown: (key in the file, chart title, y label).
const SERVER_CHARTS: &[(&str, &str, &str)] = &[
    (
        "requests",
        "Server: requests running and waiting",
        "requests",
    ),
    ("kv_cache", "Server: KV-cache usage", "%"),
    ("token_throughput", "Server: token throughput", "tokens/s"),
    ("preemptions", "Server: preemptions", "preemptions/s"),
    ("ttft", "Server: TTFT (mean between scrapes)", "ms"),
];
const GPU_CHARTS: &[(&str, &str, &str)] = &[
    ("gpu_utilization", "GPU utilization", "%"),
    ("gpu_memory_used", "GPU memory used", "MiB"),
    ("power_usage", "GPU power", "W"),
    ("sm_clock", "GPU SM clock", "MHz"),
    ("gpu_temperature", "GPU temperature", "°C"),
];

const X_LABEL: &str = "time (s since the first request)";

/// What the artifact sections add to the page's data (for tests and tools reading it).
#[derive(Debug, Default)]
pub struct Added {
    pub sections: Vec<Section>,
    pub charts: Vec<Chart>,
    /// `{"server_metrics": file, "gpu_telemetry": file, "timeslices": file, "slices": n}`.
    pub data: serde_json::Map<String, Value>,
}

/// Reads `dir/name` as JSON: `Ok(None)` when it is absent, `Err` (a note for the page)
/// when it cannot be read.
fn read_json(dir: &Path, name: &str) -> Result<Option<Value>, String> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| format!("{name} could not be read ({e}); its section is left out")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!(
            "{name} could not be read ({e}); its section is left out"
        )),
    }
}

/// The JSON file a section of the summary lists in its `files` (the run's own name, a
/// prefix included), else `default`.
fn listed_json(summary: &Value, section: &str, default: &str) -> String {
    summary
        .pointer(&format!("/{section}/files"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|f| f.ends_with(".json"))
        .unwrap_or(default)
        .to_string()
}

fn note(text: &str) -> String {
    format!("<p class=\"note\">{}</p>", esc(text))
}

/// Charts of a `timeline` list (`[{chart, name, unit, points: [[wall_ns, v], …]}]`), x in
/// seconds since `origin_ns`, the warmup shaded.
fn timeline_charts(
    timeline: &[Value],
    specs: &[(&str, &str, &str)],
    id_prefix: &str,
    origin_ns: u64,
    warmup_s: Option<(f64, f64)>,
) -> Vec<Chart> {
    let mut out = Vec::new();
    for &(key, title, y) in specs {
        let mut c = Chart::new(&format!("{id_prefix}{key}"), title, X_LABEL, y);
        for (i, l) in timeline
            .iter()
            .filter(|l| l.get("chart").and_then(Value::as_str) == Some(key))
            .enumerate()
        {
            let points: Vec<(f64, f64)> = l
                .get("points")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let t = p.get(0)?.as_u64()?;
                    let v = p.get(1)?.as_f64()?;
                    // Scrapes before the first request (the baseline) are left of zero.
                    let x = (t as f64 - origin_ns as f64) / 1e9;
                    (v.is_finite() && x >= 0.0).then_some((x, v))
                })
                .collect();
            c.series.push(Series {
                name: l
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                kind: Kind::Line,
                color: i,
                points,
            });
        }
        if c.is_empty() {
            continue;
        }
        if c.series.len() == 1 {
            // One line: the title says what it is.
            c.series[0].name.clear();
        }
        if let Some((a, b)) = warmup_s {
            c.shaded.push((a, b, "warmup".into()));
        }
        out.push(c);
    }
    out
}

/// The left edge of the timelines: the first request, else the first sample.
fn origin(m: &RunModel, timeline: &[Value]) -> u64 {
    if m.records > 0 {
        return m.origin_ns;
    }
    timeline
        .iter()
        .filter_map(|l| l.pointer("/points/0/0")?.as_u64())
        .min()
        .unwrap_or(0)
}

/// The timeline charts of the run's JSON file `file` (its `timeline`): `Ok(None)` when the
/// file is absent, `Err` (a note for the page) when it cannot be read.
fn file_charts(
    run: &RunData,
    m: &RunModel,
    file: &str,
    specs: &[(&str, &str, &str)],
    id_prefix: &str,
) -> Result<Option<Vec<Chart>>, String> {
    let Some(v) = read_json(&run.dir, file)? else {
        return Ok(None);
    };
    let timeline = v
        .get("timeline")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    Ok(Some(timeline_charts(
        &timeline,
        specs,
        id_prefix,
        origin(m, &timeline),
        m.warmup_s,
    )))
}

fn server_section(run: &RunData, m: &RunModel, added: &mut Added) -> Result<(), String> {
    let Some(sec) = run.summary.get("server_metrics") else {
        return Ok(());
    };
    let file = listed_json(&run.summary, "server_metrics", "server_metrics_export.json");
    let mut body = String::new();
    // The console's friendly rows, from the summary.
    let rows: Vec<Vec<String>> = sec
        .get("highlights")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|h| {
            let f = |k: &str| {
                h.get(k)
                    .and_then(Value::as_f64)
                    .map_or_else(String::new, num)
            };
            vec![
                esc(h.get("label").and_then(Value::as_str).unwrap_or("")),
                esc(h.get("unit").and_then(Value::as_str).unwrap_or("")),
                f("avg"),
                f("max"),
                f("total"),
                f("p50"),
                f("p99"),
            ]
        })
        .collect();
    if !rows.is_empty() {
        let head = ["", "unit", "avg", "max", "total", "p50", "p99"].map(String::from);
        body.push_str(&html::table(&head, &rows, "server"));
    }
    let endpoints: Vec<Vec<String>> = sec
        .get("endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| {
            let n = |k: &str| e.get(k).and_then(Value::as_u64).unwrap_or(0).to_string();
            vec![
                esc(e.get("url").and_then(Value::as_str).unwrap_or("")),
                n("scrapes"),
                n("ok"),
                n("refused"),
                n("timeouts"),
                n("http_errors"),
                n("garbage"),
                esc(e.get("last_error").and_then(Value::as_str).unwrap_or("")),
            ]
        })
        .collect();
    if !endpoints.is_empty() {
        let head = [
            "endpoint",
            "scrapes",
            "ok",
            "refused",
            "timeouts",
            "HTTP errors",
            "no samples",
            "last error",
        ]
        .map(String::from);
        body.push_str(&html::table(&head, &endpoints, "endpoints"));
    }
    match file_charts(run, m, &file, SERVER_CHARTS, "server_") {
        Ok(Some(charts)) => {
            if charts.is_empty() {
                body.push_str(&note(&format!(
                    "{file} has no timeline of the known server metrics (running and waiting \
                     requests, KV-cache usage, tokens, TTFT): the table is the window's summary."
                )));
            }
            body.push_str(&html::charts(&charts)?);
            added.charts.extend(charts);
            added
                .data
                .insert("server_metrics".into(), file.clone().into());
        }
        Ok(None) => body.push_str(&note(&format!(
            "{file} is not in the run directory (written with --server-metrics-formats json): \
             no timeline."
        ))),
        Err(e) => body.push_str(&note(&e)),
    }
    body.push_str(&note(&format!(
        "Every series over the profiling window: {file} and its CSV. The timelines show each \
         scrape (gauges as read, counters as the rate between scrapes)."
    )));
    added
        .sections
        .push(Section::new("server-metrics", "Server metrics", body));
    Ok(())
}

fn gpu_section(run: &RunData, m: &RunModel, added: &mut Added) -> Result<(), String> {
    let Some(sec) = run.summary.get("gpu_telemetry") else {
        return Ok(());
    };
    let mut body = String::new();
    let gpus: Vec<&Value> = sec
        .get("gpus")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    if gpus.is_empty() {
        body.push_str(&note(
            "GPU telemetry was asked for, but no DCGM exporter answered (see the run's \
             endpoints in the summary JSON).",
        ));
    } else {
        let mut head = vec!["GPU".to_string()];
        head.extend(GPU_CHARTS.iter().map(|c| format!("{} avg / max", c.1)));
        let rows: Vec<Vec<String>> = gpus
            .iter()
            .map(|g| {
                let s = |k: &str| g.get(k).and_then(Value::as_str).unwrap_or("");
                let mut r = vec![esc(&format!(
                    "{} {} {}",
                    s("gpu"),
                    s("model_name"),
                    s("hostname")
                ))];
                for &(key, _, unit) in GPU_CHARTS {
                    let f = |st: &str| {
                        g.pointer(&format!("/metrics/{key}/{st}"))
                            .and_then(Value::as_f64)
                    };
                    r.push(match (f("avg"), f("max")) {
                        (Some(a), Some(b)) => format!("{} / {} {}", num(a), num(b), esc(unit)),
                        _ => "–".into(),
                    });
                }
                r
            })
            .collect();
        body.push_str(&html::table(&head, &rows, "gpus"));
    }
    let file = listed_json(&run.summary, "gpu_telemetry", "gpu_telemetry_export.json");
    match file_charts(run, m, &file, GPU_CHARTS, "") {
        Ok(Some(charts)) => {
            body.push_str(&html::charts(&charts)?);
            added.charts.extend(charts);
            added.data.insert("gpu_telemetry".into(), file.into());
        }
        Ok(None) => {}
        Err(e) => body.push_str(&note(&e)),
    }
    added
        .sections
        .push(Section::new("gpu-telemetry", "GPU telemetry", body));
    Ok(())
}

/// The time slices' file, named after the summary (`…_aiperf.json` → `…_aiperf_timeslices.json`).
fn timeslices_file(summary_file: &str) -> String {
    let stem = summary_file.strip_suffix(".json").unwrap_or(summary_file);
    format!("{stem}_timeslices.json")
}

/// Per-slice statistics drawn: (metric tag, statistic, series name).
const SLICE_LATENCY: &[(&str, &str, &str)] = &[
    ("time_to_first_token", "p50", "TTFT p50"),
    ("time_to_first_token", "p99", "TTFT p99"),
    ("inter_token_latency", "p50", "ITL p50"),
    ("request_latency", "p50", "latency p50"),
    ("request_latency", "p99", "latency p99"),
];

fn slices_section(run: &RunData, m: &RunModel, added: &mut Added) -> Result<(), String> {
    let file = timeslices_file(&run.summary_file);
    let doc = match read_json(&run.dir, &file) {
        Ok(Some(v)) => v,
        Ok(None) => return Ok(()),
        Err(e) => {
            added
                .sections
                .push(Section::new("timeslices", "Time slices", note(&e)));
            return Ok(());
        }
    };
    let slices: Vec<&Value> = doc
        .get("timeslices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let origin = if m.records > 0 {
        m.origin_ns
    } else {
        slices
            .iter()
            .filter_map(|s| s.get("start_ns")?.as_u64())
            .min()
            .unwrap_or(0)
    };
    // x: the slice's middle, seconds since the first request.
    let mid = |s: &Value| -> Option<f64> {
        let a = s.get("start_ns")?.as_u64()? as f64;
        let b = s.get("end_ns")?.as_u64()? as f64;
        Some(((a + b) / 2.0 - origin as f64) / 1e9)
    };
    let stat = |s: &Value, tag: &str, st: &str| {
        s.get(tag)?
            .get(st)
            .and_then(Value::as_f64)
            .filter(|v| v.is_finite())
    };
    let mut lat = Chart::new(
        "slices_latency",
        "Latency per time slice",
        "time slice middle (s since the first request)",
        "ms",
    );
    for (i, &(tag, st, name)) in SLICE_LATENCY.iter().enumerate() {
        let points: Vec<(f64, f64)> = slices
            .iter()
            .filter_map(|s| Some((mid(s)?, stat(s, tag, st)?)))
            .collect();
        if !points.is_empty() {
            lat.series.push(Series {
                name: name.into(),
                kind: Kind::Line,
                color: i,
                points,
            });
        }
    }
    let mut tp = Chart::new(
        "slices_throughput",
        "Request throughput per time slice",
        "time slice middle (s since the first request)",
        "requests/s",
    );
    tp.series.push(Series {
        name: String::new(),
        kind: Kind::Line,
        color: 0,
        points: slices
            .iter()
            .filter_map(|s| Some((mid(s)?, stat(s, "request_throughput", "avg")?)))
            .collect(),
    });
    let charts: Vec<Chart> = [lat, tp].into_iter().filter(|c| !c.is_empty()).collect();
    let head = [
        "slice",
        "start (s)",
        "requests",
        "TTFT p50 (ms)",
        "TTFT p99 (ms)",
        "ITL p50 (ms)",
        "latency p50 (ms)",
        "requests/s",
    ]
    .map(String::from);
    let rows: Vec<Vec<String>> = slices
        .iter()
        .map(|s| {
            let f = |tag: &str, st: &str| stat(s, tag, st).map_or_else(|| "–".into(), num);
            let start = s
                .get("start_ns")
                .and_then(Value::as_u64)
                .map_or_else(|| "–".into(), |a| num((a as f64 - origin as f64) / 1e9));
            vec![
                s.get("timeslice_index")
                    .map_or_else(String::new, |v| v.to_string()),
                start,
                f("request_count", "avg"),
                f("time_to_first_token", "p50"),
                f("time_to_first_token", "p99"),
                f("inter_token_latency", "p50"),
                f("request_latency", "p50"),
                f("request_throughput", "avg"),
            ]
        })
        .collect();
    let mut body = html::charts(&charts)?;
    body.push_str(&html::table(&head, &rows, "slices"));
    body.push_str(&note(&format!(
        "{} slices from {file}; each slice's server metrics are in the file too.",
        slices.len()
    )));
    added.charts.extend(charts);
    added.data.insert("timeslices".into(), file.into());
    added.data.insert("slices".into(), slices.len().into());
    added
        .sections
        .push(Section::new("timeslices", "Time slices", body));
    Ok(())
}

/// Every artifact section of one run, in order: server metrics, GPU telemetry, time slices.
pub fn sections(run: &RunData, m: &RunModel) -> Result<Added, String> {
    let mut added = Added::default();
    server_section(run, m, &mut added)?;
    gpu_section(run, m, &mut added)?;
    slices_section(run, m, &mut added)?;
    Ok(added)
}

/// For tests: the series of every chart, by chart id.
#[cfg(test)]
pub fn series_by_chart(
    charts: &[Chart],
) -> std::collections::BTreeMap<String, Vec<(String, usize)>> {
    charts
        .iter()
        .map(|c| {
            (
                c.id.clone(),
                c.series
                    .iter()
                    .map(|s| (s.name.clone(), s.points.len()))
                    .collect(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run_in(dir: &Path, summary: Value) -> RunData {
        RunData {
            dir: dir.to_path_buf(),
            label: "r".into(),
            summary_file: "profile_export_aiperf.json".into(),
            summary,
            records: Vec::new(),
            has_records: false,
        }
    }

    #[test]
    fn server_and_gpu_timelines_and_slices_become_charts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("server_metrics_export.json"),
            json!({"timeline": [
                {"chart": "requests", "name": "vllm:num_requests_running", "unit": "requests",
                 "points": [[1_000_000_000u64, 2.0], [2_000_000_000u64, 4.0]]},
                {"chart": "requests", "name": "vllm:num_requests_waiting", "unit": "requests",
                 "points": [[1_000_000_000u64, 0.0], [2_000_000_000u64, 1.0]]},
                {"chart": "ttft", "name": "vllm:time_to_first_token_seconds", "unit": "ms",
                 "points": [[2_000_000_000u64, 21.0]]}
            ]})
            .to_string(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("gpu_telemetry_export.json"),
            json!({"timeline": [{"chart": "gpu_utilization", "name": "GPU 0", "unit": "%",
                                 "points": [[1_500_000_000u64, 80.0]]}]})
            .to_string(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("profile_export_aiperf_timeslices.json"),
            json!({"timeslices": [
                {"timeslice_index": 0, "start_ns": 1_000_000_000u64, "end_ns": 2_000_000_000u64,
                 "time_to_first_token": {"unit": "ms", "p50": 20.0, "p99": 25.0},
                 "request_throughput": {"unit": "requests/sec", "avg": 40.0}},
                {"timeslice_index": 1, "start_ns": 2_000_000_000u64, "end_ns": 3_000_000_000u64,
                 "time_to_first_token": {"unit": "ms", "p50": 30.0, "p99": 35.0},
                 "request_throughput": {"unit": "requests/sec", "avg": 38.0}}
            ]})
            .to_string(),
        )
        .unwrap();
        let run = run_in(
            dir.path(),
            json!({
                "server_metrics": {"files": ["server_metrics_export.json"],
                    "highlights": [{"label": "Running requests", "unit": "requests", "avg": 3.5, "max": 4.0}],
                    "endpoints": [{"url": "http://h/metrics", "scrapes": 3, "ok": 3}]},
                "gpu_telemetry": {"gpus": [{"gpu": "0", "model_name": "H100", "hostname": "n1",
                    "metrics": {"gpu_utilization": {"avg": 80.0, "max": 90.0}}}]}
            }),
        );
        let m = RunModel::of(&run);
        let a = sections(&run, &m).unwrap();
        let by = series_by_chart(&a.charts);
        assert_eq!(
            by["server_requests"],
            vec![
                ("vllm:num_requests_running".to_string(), 2),
                ("vllm:num_requests_waiting".to_string(), 2)
            ]
        );
        assert_eq!(by["server_ttft"], vec![(String::new(), 1)]);
        assert_eq!(by["gpu_utilization"], vec![(String::new(), 1)]);
        assert_eq!(
            by["slices_latency"],
            vec![("TTFT p50".to_string(), 2), ("TTFT p99".to_string(), 2)]
        );
        assert_eq!(by["slices_throughput"], vec![(String::new(), 2)]);
        // Without records the timelines start at the first sample: x = 0 and 1 s.
        let req = &a
            .charts
            .iter()
            .find(|c| c.id == "server_requests")
            .unwrap()
            .series[0];
        assert_eq!(req.points, vec![(0.0, 2.0), (1.0, 4.0)]);
        let ids: Vec<&str> = a.sections.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["server-metrics", "gpu-telemetry", "timeslices"]);
        assert!(a.sections[0].html.contains("Running requests"));
        assert!(
            a.sections[1].html.contains("80 / 90 %"),
            "{}",
            a.sections[1].html
        );
        assert_eq!(a.data["slices"], 2);
    }

    #[test]
    fn a_corrupt_artifact_is_a_note_and_a_missing_one_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("server_metrics_export.json"), "{not json").unwrap();
        std::fs::write(
            dir.path().join("profile_export_aiperf_timeslices.json"),
            "[",
        )
        .unwrap();
        let run = run_in(dir.path(), json!({"server_metrics": {"highlights": []}}));
        let a = sections(&run, &RunModel::of(&run)).unwrap();
        assert!(a.charts.is_empty());
        assert!(a.sections[0].html.contains("could not be read"));
        assert!(a.sections[1].html.contains("could not be read"));
        let empty = tempfile::tempdir().unwrap();
        let run = run_in(empty.path(), json!({}));
        assert!(sections(&run, &RunModel::of(&run))
            .unwrap()
            .sections
            .is_empty());
    }

    #[test]
    fn timeslices_are_named_after_the_summary() {
        assert_eq!(
            timeslices_file("profile_export_aiperf.json"),
            "profile_export_aiperf_timeslices.json"
        );
        assert_eq!(timeslices_file("x_aiperf.json"), "x_aiperf_timeslices.json");
    }
}
