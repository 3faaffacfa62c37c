//! A sweep's report, from `sweep_aggregate.json` at the top of its artifact directory:
//! throughput against latency with the Pareto front marked, each key metric against the
//! swept parameter (with its confidence band when points were run more than once), and a
//! link to every run's own report.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::chart::{Chart, Kind, Series};
use super::html::{self, esc, Section};
use super::{num, Built, REPORT_FILE};

pub const SWEEP_FILE: &str = "sweep_aggregate.json";

/// The parameters a sweep varies, in the order a point's label shows them.
const PARAMS: &[&str] = &["concurrency", "request_rate", "isl", "osl"];

/// Key metrics drawn against the swept parameter: column, title, unit.
const CURVES: &[(&str, &str, &str)] = &[
    ("request_throughput", "Request throughput", "requests/s"),
    (
        "output_token_throughput",
        "Output token throughput",
        "tokens/s",
    ),
    ("time_to_first_token_p50", "TTFT p50", "ms"),
    ("time_to_first_token_p99", "TTFT p99", "ms"),
    ("inter_token_latency_p50", "ITL p50", "ms"),
    ("request_latency_p50", "Request latency p50", "ms"),
    ("request_latency_p99", "Request latency p99", "ms"),
    ("error_request_count", "Errors", "requests"),
];

struct Point {
    index: usize,
    label: String,
    params: Value,
    metrics: Value,
    confidence: Value,
    dir: String,
    pareto: Option<bool>,
}

fn label(params: &Value) -> String {
    let parts: Vec<String> = PARAMS
        .iter()
        .filter_map(|p| {
            let v = params.get(*p).filter(|v| !v.is_null())?;
            Some(format!("{} {}", p.replace('_', " "), v))
        })
        .collect();
    if parts.is_empty() {
        "run".into()
    } else {
        parts.join(", ")
    }
}

/// The reports of a point's runs that exist, relative to the sweep's directory.
fn reports_of(base: &Path, dir: &str) -> Vec<String> {
    let point = base.join(dir);
    if point.join(REPORT_FILE).is_file() {
        return vec![format!("{dir}/{REPORT_FILE}")];
    }
    let mut out: Vec<String> = std::fs::read_dir(point.join("profile_runs"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join(REPORT_FILE).is_file())
        .map(|e| {
            format!(
                "{dir}/profile_runs/{}/{REPORT_FILE}",
                e.file_name().to_string_lossy()
            )
        })
        .collect();
    out.sort();
    out
}

fn metric(p: &Point, col: &str) -> Option<f64> {
    p.metrics.get(col).and_then(Value::as_f64)
}

/// The one parameter that varies across points, if exactly one does.
fn swept(points: &[Point]) -> Option<&'static str> {
    let varying: Vec<&str> = PARAMS
        .iter()
        .copied()
        .filter(|p| {
            let vals: std::collections::BTreeSet<String> = points
                .iter()
                .map(|pt| pt.params.get(*p).map(|v| v.to_string()).unwrap_or_default())
                .collect();
            vals.len() > 1
        })
        .collect();
    (varying.len() == 1).then(|| varying[0])
}

/// A sweep's report.
pub fn sweep_report(dir: &Path) -> Result<Built, String> {
    let path = dir.join(SWEEP_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let agg: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    let list = agg
        .get("points")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{} has no `points` list", path.display()))?;
    let points: Vec<Point> = list
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let params = p.get("parameters").cloned().unwrap_or(Value::Null);
            Point {
                index: p
                    .get("index")
                    .and_then(Value::as_u64)
                    .map_or(i, |v| v as usize),
                label: label(&params),
                params,
                metrics: p.get("metrics").cloned().unwrap_or(Value::Null),
                confidence: p.get("confidence").cloned().unwrap_or(Value::Null),
                dir: p
                    .get("artifact_dir")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                pareto: p.get("pareto").and_then(Value::as_bool),
            }
        })
        .collect();
    if points.is_empty() {
        return Err(format!("{} lists no points", path.display()));
    }
    let mut charts = Vec::new();
    // Throughput against latency: each curve in sweep order, the front marked.
    let mut pareto_marks = Vec::new();
    for (id, lat_col, lat_name) in [
        (
            "sweep_throughput_vs_latency",
            "request_latency_p99",
            "request latency p99",
        ),
        (
            "sweep_throughput_vs_ttft",
            "time_to_first_token_p99",
            "TTFT p99",
        ),
    ] {
        let pts: Vec<(f64, f64)> = points
            .iter()
            .map(|p| {
                (
                    metric(p, "output_token_throughput")
                        .or_else(|| metric(p, "request_throughput"))
                        .unwrap_or(f64::NAN),
                    metric(p, lat_col).unwrap_or(f64::NAN),
                )
            })
            .collect();
        if pts.iter().all(|p| p.0.is_nan() || p.1.is_nan()) {
            continue;
        }
        let tokens = points
            .iter()
            .any(|p| metric(p, "output_token_throughput").is_some());
        // The aggregate's own marks when it has them (for its latency, request latency
        // p99), else computed here.
        let front: Vec<bool> =
            if lat_col == "request_latency_p99" && points.iter().all(|p| p.pareto.is_some()) {
                points.iter().map(|p| p.pareto == Some(true)).collect()
            } else {
                crate::sweep::aggregate::pareto_front(&pts)
            };
        if lat_col == "request_latency_p99" {
            pareto_marks = front.clone();
        }
        let mut c = Chart::new(
            id,
            &format!("Throughput vs {lat_name}"),
            if tokens {
                "output token throughput (tokens/s)"
            } else {
                "request throughput (requests/s)"
            },
            &format!("{lat_name} (ms)"),
        );
        let valid: Vec<(f64, f64)> = pts
            .iter()
            .copied()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        c.series.push(Series {
            name: "points (sweep order)".into(),
            kind: Kind::Line,
            color: 0,
            points: valid,
        });
        let mut on: Vec<(f64, f64)> = pts
            .iter()
            .zip(&front)
            .filter(|(_, f)| **f)
            .map(|(p, _)| *p)
            .collect();
        on.sort_by(|a, b| a.0.total_cmp(&b.0));
        c.series.push(Series {
            name: "Pareto front".into(),
            kind: Kind::Points,
            color: 1,
            points: on.clone(),
        });
        c.series.push(Series {
            name: String::new(),
            kind: Kind::Line,
            color: 1,
            points: on,
        });
        charts.push(c);
    }
    // Each key metric against the swept parameter (or the point's index).
    let x_param = swept(&points);
    let xs: Vec<f64> = points
        .iter()
        .map(|p| {
            x_param
                .and_then(|k| p.params.get(k)?.as_f64())
                .unwrap_or(p.index as f64)
        })
        .collect();
    let x_label = x_param.map_or_else(|| "point".to_string(), |k| k.replace('_', " "));
    for &(col, title, unit) in CURVES {
        let mut line = Vec::new();
        let mut lo = Vec::new();
        let mut hi = Vec::new();
        for (p, &x) in points.iter().zip(&xs) {
            if let Some(v) = metric(p, col) {
                line.push((x, v));
                if let Some(c) = p.confidence.get(col) {
                    let l = c.get("ci_low").and_then(Value::as_f64).unwrap_or(v);
                    let h = c.get("ci_high").and_then(Value::as_f64).unwrap_or(v);
                    lo.push((x, l.max(0.0)));
                    hi.push(h);
                }
            }
        }
        if line.is_empty() {
            continue;
        }
        let mut c = Chart::new(
            &format!("sweep_{col}"),
            &format!("{title} by {x_label}"),
            &x_label,
            unit,
        );
        if x_param.is_none() {
            c.categories = points.iter().map(|p| format!("#{}", p.index)).collect();
        }
        if lo.len() == line.len() {
            c.series.push(Series {
                name: "confidence interval".into(),
                kind: Kind::Band { high: hi },
                color: 0,
                points: lo,
            });
        }
        c.series.push(Series {
            name: String::new(),
            kind: Kind::Line,
            color: 0,
            points: line.clone(),
        });
        c.series.push(Series {
            name: String::new(),
            kind: Kind::Points,
            color: 0,
            points: line,
        });
        charts.push(c);
    }
    // The table of points, with links to their reports.
    let base = dir;
    let mut head = vec!["#".to_string(), "point".to_string(), "Pareto".to_string()];
    head.extend(["req/s", "TTFT p99 ms", "latency p99 ms", "errors", "report"].map(String::from));
    let mut rows = Vec::new();
    let mut pdata = Vec::new();
    for (i, p) in points.iter().enumerate() {
        let links = reports_of(base, &p.dir);
        let on = pareto_marks.get(i).copied();
        let cell = |c: &str| metric(p, c).map_or_else(|| "–".into(), num);
        rows.push(vec![
            p.index.to_string(),
            esc(&p.label),
            match on {
                Some(true) => "★".into(),
                Some(false) => String::new(),
                None => "–".into(),
            },
            cell("request_throughput"),
            cell("time_to_first_token_p99"),
            cell("request_latency_p99"),
            cell("error_request_count"),
            links
                .iter()
                .enumerate()
                .map(|(k, l)| {
                    format!(
                        "<a href=\"{}\">{}</a>",
                        esc(l),
                        if links.len() > 1 {
                            format!("run {}", k + 1)
                        } else {
                            "report".into()
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join(" "),
        ]);
        pdata.push(json!({
            "index": p.index, "label": p.label, "parameters": p.params, "metrics": p.metrics,
            "pareto": on, "reports": links,
        }));
    }
    let sections = vec![
        Section::new("points", "Points", html::table(&head, &rows, "points")),
        Section::new("curves", "Curves", html::charts(&charts)?),
    ];
    let data = json!({
        "kind": "sweep",
        "generator": format!("aiperf {}", env!("CARGO_PKG_VERSION")),
        "swept": x_param,
        "points": pdata,
        "charts": charts.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
    });
    let sub = format!(
        "{} points, {} run(s) each, {} sweep",
        points.len(),
        agg.get("runs_per_point")
            .and_then(Value::as_u64)
            .unwrap_or(1),
        agg.get("sweep_type")
            .and_then(Value::as_str)
            .unwrap_or("grid")
    );
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| PathBuf::from(dir).display().to_string());
    Ok(Built {
        html: html::page(&format!("aiperf sweep: {name}"), &sub, &sections, &data),
        charts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_front_is_computed_when_the_aggregate_has_none_and_runs_are_linked() {
        let d = tempfile::tempdir().unwrap();
        let pts: Vec<Value> = [(1, 10.0, 100.0), (2, 20.0, 110.0), (4, 25.0, 300.0), (8, 24.0, 400.0)]
            .iter()
            .enumerate()
            .map(|(i, &(c, tp, lat))| {
                json!({"index": i, "parameters": {"concurrency": c}, "artifact_dir": format!("concurrency_{c}"),
                       "runs": 1, "metrics": {"request_throughput": tp, "request_latency_p99": lat}})
            })
            .collect();
        std::fs::write(
            d.path().join(SWEEP_FILE),
            json!({"sweep_type": "grid", "points": pts}).to_string(),
        )
        .unwrap();
        std::fs::create_dir_all(d.path().join("concurrency_2")).unwrap();
        std::fs::write(d.path().join("concurrency_2").join(REPORT_FILE), "x").unwrap();
        let b = sweep_report(d.path()).unwrap();
        let data = html::extract_data(&b.html).unwrap();
        let front: Vec<Value> = data["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["pareto"].clone())
            .collect();
        assert_eq!(
            front,
            vec![json!(true), json!(true), json!(true), json!(false)]
        );
        assert_eq!(data["swept"], "concurrency");
        assert_eq!(
            data["points"][1]["reports"],
            json!(["concurrency_2/report.html"])
        );
        assert!(b.html.contains("href=\"concurrency_2/report.html\""));
        assert!(b.charts.iter().any(|c| c.id == "sweep_request_throughput"));
    }

    #[test]
    fn the_aggregates_marks_win_and_confidence_becomes_a_band() {
        let d = tempfile::tempdir().unwrap();
        let pts = json!([
            {"index": 0, "parameters": {"request_rate": 5.0}, "artifact_dir": "a", "pareto": false,
             "metrics": {"request_throughput": 5.0, "request_latency_p99": 10.0},
             "confidence": {"request_throughput": {"ci_low": 4.0, "ci_high": 6.0}}},
            {"index": 1, "parameters": {"request_rate": 10.0}, "artifact_dir": "b", "pareto": true,
             "metrics": {"request_throughput": 9.0, "request_latency_p99": 20.0},
             "confidence": {"request_throughput": {"ci_low": 8.0, "ci_high": 10.0}}}
        ]);
        std::fs::write(
            d.path().join(SWEEP_FILE),
            json!({"points": pts}).to_string(),
        )
        .unwrap();
        let b = sweep_report(d.path()).unwrap();
        let data = html::extract_data(&b.html).unwrap();
        assert_eq!(data["points"][0]["pareto"], false, "as the aggregate says");
        let c = b
            .charts
            .iter()
            .find(|c| c.id == "sweep_request_throughput")
            .unwrap();
        assert!(matches!(&c.series[0].kind, Kind::Band { high } if high == &vec![6.0, 10.0]));
        std::fs::write(d.path().join(SWEEP_FILE), "{\"points\": []}").unwrap();
        assert!(sweep_report(d.path()).is_err());
    }
}
