//! The numbers of a sweep: a point's key metrics from its `profile_export_aiperf.json`
//! ([`key_metrics`]), the confidence interval of a statistic over repeated runs
//! ([`Confidence::of`], Student t), the repeated runs' aggregate ([`runs_aggregate`], every
//! statistic of every metric) and the files: `aggregate/profile_export_aiperf_aggregate.json`
//! and `.csv`, `sweep_aggregate.json` and `.csv`.

use std::collections::BTreeMap;

use aiperf_plugin::SweepParameters;
use serde::Serialize;
use serde_json::{json, Map, Value};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// The columns of a sweep row: (column, metric tag, statistic).
pub const KEY_METRICS: &[(&str, &str, &str)] = &[
    ("request_throughput", "request_throughput", "avg"),
    ("output_token_throughput", "output_token_throughput", "avg"),
    ("time_to_first_token_avg", "time_to_first_token", "avg"),
    ("time_to_first_token_p50", "time_to_first_token", "p50"),
    ("time_to_first_token_p90", "time_to_first_token", "p90"),
    ("time_to_first_token_p99", "time_to_first_token", "p99"),
    ("inter_token_latency_avg", "inter_token_latency", "avg"),
    ("inter_token_latency_p50", "inter_token_latency", "p50"),
    ("inter_token_latency_p90", "inter_token_latency", "p90"),
    ("inter_token_latency_p99", "inter_token_latency", "p99"),
    ("request_latency_avg", "request_latency", "avg"),
    ("request_latency_p50", "request_latency", "p50"),
    ("request_latency_p90", "request_latency", "p90"),
    ("request_latency_p99", "request_latency", "p99"),
    ("request_count", "request_count", "avg"),
    ("error_request_count", "error_request_count", "avg"),
    ("goodput", "goodput", "avg"),
    ("good_request_fraction", "good_request_fraction", "avg"),
];

/// A point's key metrics from a run's report (or from `benchmark_complete`'s summary: the
/// same metric objects). A metric the run does not have (TTFT without streaming, goodput
/// without `--goodput`) is left out; the error count is 0 when the report has none.
pub fn key_metrics(report: &Value) -> BTreeMap<&'static str, f64> {
    let mut out = BTreeMap::new();
    for &(col, tag, stat) in KEY_METRICS {
        if let Some(v) = report
            .get(tag)
            .and_then(|m| m.get(stat))
            .and_then(Value::as_f64)
        {
            out.insert(col, v);
        }
    }
    out.entry("error_request_count").or_insert(0.0);
    out
}

/// A statistic over repeated runs: sample mean and standard deviation (n − 1), and the
/// two-sided Student-t confidence interval of the mean, mean ± t(level, n − 1) · s / √n.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Confidence {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
    /// Coefficient of variation, std / mean (`None` when the mean is 0).
    pub cv: Option<f64>,
    /// Standard error of the mean, std / √n.
    pub se: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    /// The t quantile used (`None` with a single run: the interval is the value itself).
    pub t_critical: Option<f64>,
    pub n: usize,
}

impl Confidence {
    /// `None` for no values or a level outside (0, 1).
    pub fn of(values: &[f64], level: f64) -> Option<Self> {
        let n = values.len();
        if n == 0 || !(level > 0.0 && level < 1.0) || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if n == 1 {
            return Some(Self {
                mean,
                std: 0.0,
                min,
                max,
                cv: (mean != 0.0).then_some(0.0),
                se: 0.0,
                ci_low: mean,
                ci_high: mean,
                t_critical: None,
                n,
            });
        }
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let std = var.sqrt();
        let se = std / (n as f64).sqrt();
        let t = StudentsT::new(0.0, 1.0, (n - 1) as f64)
            .ok()?
            .inverse_cdf(1.0 - (1.0 - level) / 2.0);
        Some(Self {
            mean,
            std,
            min,
            max,
            cv: (mean != 0.0).then(|| std / mean.abs()),
            se,
            ci_low: mean - t * se,
            ci_high: mean + t * se,
            t_critical: Some(t),
            n,
        })
    }

    /// Whether two intervals overlap: the difference is within noise.
    pub fn overlaps(&self, other: &Confidence) -> bool {
        self.ci_low <= other.ci_high && other.ci_low <= self.ci_high
    }
}

/// The statistics of a metric object that are aggregated (not `unit`, `count` or `sum`).
fn stat_names(metric: &Map<String, Value>) -> impl Iterator<Item = (&String, f64)> {
    metric
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "unit" | "count" | "sum"))
        .filter_map(|(k, v)| v.as_f64().map(|v| (k, v)))
}

/// The metrics of a report: its top-level objects with a `unit`.
fn metrics(report: &Value) -> impl Iterator<Item = (&String, &Map<String, Value>)> {
    report
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            v.as_object()
                .filter(|m| m.contains_key("unit"))
                .map(|m| (k, m))
        })
}

/// The aggregate of repeated runs of one point (`profile_export_aiperf_aggregate.json`):
/// for every statistic of every metric the runs have, its [`Confidence`] over the runs
/// (`metrics.<tag>.<stat>`, plus the metric's `unit`). A statistic some run lacks is
/// aggregated over the runs that have it (`n` says how many).
pub fn runs_aggregate(
    reports: &[Value],
    labels: &[String],
    parameters: &SweepParameters,
    level: f64,
) -> Value {
    let mut values: BTreeMap<String, (String, BTreeMap<String, Vec<f64>>)> = BTreeMap::new();
    for r in reports {
        for (tag, m) in metrics(r) {
            let unit = m.get("unit").and_then(Value::as_str).unwrap_or_default();
            let e = values
                .entry(tag.clone())
                .or_insert_with(|| (unit.to_string(), BTreeMap::new()));
            for (stat, v) in stat_names(m) {
                e.1.entry(stat.clone()).or_default().push(v);
            }
        }
    }
    let mut out = Map::new();
    for (tag, (unit, stats)) in values {
        let mut m = Map::new();
        m.insert("unit".into(), json!(unit));
        for (stat, vs) in stats {
            if let Some(c) = Confidence::of(&vs, level) {
                m.insert(stat, json!(c));
            }
        }
        out.insert(tag, Value::Object(m));
    }
    json!({
        "aggregation_type": "confidence",
        "num_runs": reports.len(),
        "confidence_level": level,
        "ci_method": "student_t",
        "parameters": parameters,
        "run_labels": labels,
        "metrics": out,
    })
}

/// `profile_export_aiperf_aggregate.csv`: one row per metric statistic.
pub fn runs_aggregate_csv(aggregate: &Value) -> String {
    let mut s =
        String::from("metric,stat,unit,n,mean,std,min,max,cv,se,ci_low,ci_high,t_critical\n");
    let num = |v: &Value| v.as_f64().map(|f| format!("{f:.6}")).unwrap_or_default();
    for (tag, m) in aggregate["metrics"].as_object().into_iter().flatten() {
        let unit = m["unit"].as_str().unwrap_or_default();
        for (stat, c) in m.as_object().into_iter().flatten() {
            if stat == "unit" {
                continue;
            }
            s.push_str(&format!(
                "{tag},{stat},{unit},{},{},{},{},{},{},{},{},{},{}\n",
                c["n"],
                num(&c["mean"]),
                num(&c["std"]),
                num(&c["min"]),
                num(&c["max"]),
                num(&c["cv"]),
                num(&c["se"]),
                num(&c["ci_low"]),
                num(&c["ci_high"]),
                num(&c["t_critical"]),
            ));
        }
    }
    s
}

/// One point of a sweep, as `sweep_aggregate.json` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct PointRow {
    pub index: usize,
    pub parameters: SweepParameters,
    /// The point's directory, relative to the sweep's.
    pub artifact_dir: String,
    /// Runs of the point that produced a report.
    pub runs: usize,
    /// Each key metric: its value (the mean over the runs with repeated runs).
    pub metrics: BTreeMap<&'static str, f64>,
    /// With repeated runs: each key metric's confidence interval.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub confidence: BTreeMap<&'static str, Confidence>,
}

impl PointRow {
    /// The row of a point from its runs' reports.
    pub fn new(
        index: usize,
        parameters: SweepParameters,
        artifact_dir: String,
        reports: &[Value],
        level: f64,
    ) -> Self {
        let per_run: Vec<_> = reports.iter().map(key_metrics).collect();
        let mut metrics = BTreeMap::new();
        let mut confidence = BTreeMap::new();
        for &(col, _, _) in KEY_METRICS {
            let vs: Vec<f64> = per_run.iter().filter_map(|m| m.get(col).copied()).collect();
            if let Some(c) = Confidence::of(&vs, level) {
                metrics.insert(col, c.mean);
                if reports.len() > 1 {
                    confidence.insert(col, c);
                }
            }
        }
        Self {
            index,
            parameters,
            artifact_dir,
            runs: reports.len(),
            metrics,
            confidence,
        }
    }
}

/// `sweep_aggregate.json`.
pub fn sweep_json(rows: &[PointRow], sweep_type: &str, trials: u32, level: f64) -> Value {
    json!({
        "aggregation_type": "sweep",
        "sweep_type": sweep_type,
        "num_points": rows.len(),
        "runs_per_point": trials,
        "confidence_level": level,
        "ci_method": "student_t",
        "points": rows,
    })
}

/// `sweep_aggregate.csv`: one row per point; the parameters any point sets, then the key
/// metrics any point has (empty where a point has none).
pub fn sweep_csv(rows: &[PointRow]) -> String {
    let params: Vec<&str> = ["concurrency", "request_rate", "isl", "osl"]
        .into_iter()
        .filter(|p| rows.iter().any(|r| param(&r.parameters, p).is_some()))
        .collect();
    let cols: Vec<&str> = KEY_METRICS
        .iter()
        .map(|k| k.0)
        .filter(|c| rows.iter().any(|r| r.metrics.contains_key(c)))
        .collect();
    let mut s = String::from("index");
    for p in &params {
        s.push(',');
        s.push_str(p);
    }
    s.push_str(",runs,artifact_dir");
    for c in &cols {
        s.push(',');
        s.push_str(c);
    }
    s.push('\n');
    for r in rows {
        s.push_str(&r.index.to_string());
        for p in &params {
            s.push(',');
            s.push_str(&param(&r.parameters, p).unwrap_or_default());
        }
        s.push_str(&format!(",{},{}", r.runs, r.artifact_dir));
        for c in &cols {
            s.push(',');
            if let Some(v) = r.metrics.get(c) {
                s.push_str(&format!("{v:.4}"));
            }
        }
        s.push('\n');
    }
    s
}

/// A parameter's value as text, if the point sets it.
pub fn param(p: &SweepParameters, name: &str) -> Option<String> {
    match name {
        "concurrency" => p.concurrency.map(|v| v.to_string()),
        "request_rate" => p.request_rate.map(|v| v.to_string()),
        "isl" => p.isl.map(|v| v.to_string()),
        "osl" => p.osl.map(|v| v.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_interval_is_student_t_on_the_sample_std() {
        let c = Confidence::of(&[10.0, 12.0, 14.0], 0.95).unwrap();
        assert_eq!(c.mean, 12.0);
        assert!((c.std - 2.0).abs() < 1e-12);
        let t = c.t_critical.unwrap();
        // t(0.975, 2) = 4.302652729911275
        assert!((t - 4.302_652_729_9).abs() < 1e-6, "{t}");
        let half = t * 2.0 / 3f64.sqrt();
        assert!((c.ci_low - (12.0 - half)).abs() < 1e-9);
        assert!((c.ci_high - (12.0 + half)).abs() < 1e-9);
        assert!((c.cv.unwrap() - 2.0 / 12.0).abs() < 1e-12);
        let one = Confidence::of(&[5.0], 0.95).unwrap();
        assert_eq!((one.ci_low, one.ci_high, one.t_critical), (5.0, 5.0, None));
        assert!(Confidence::of(&[], 0.95).is_none());
        assert!(Confidence::of(&[1.0, f64::NAN], 0.95).is_none());
        let wide = Confidence::of(&[10.0, 12.0, 14.0], 0.99).unwrap();
        assert!(wide.ci_high > c.ci_high, "a higher level is wider");
        assert!(c.overlaps(&Confidence::of(&[15.0, 16.0, 17.0], 0.95).unwrap()));
        assert!(!c.overlaps(&Confidence::of(&[100.0, 101.0, 102.0], 0.95).unwrap()));
    }

    #[test]
    fn key_metrics_and_rows() {
        let r = |ttft: f64| {
            json!({"time_to_first_token": {"unit": "ms", "avg": ttft, "p50": ttft},
                   "request_count": {"unit": "requests", "avg": 10.0},
                   "request_throughput": {"unit": "requests/sec", "avg": 5.0}})
        };
        let k = key_metrics(&r(20.0));
        assert_eq!(k["time_to_first_token_p50"], 20.0);
        assert_eq!(k["error_request_count"], 0.0);
        assert!(!k.contains_key("goodput"));
        let row = PointRow::new(
            0,
            SweepParameters::default(),
            "d".into(),
            &[r(20.0), r(22.0)],
            0.95,
        );
        assert_eq!(row.metrics["time_to_first_token_avg"], 21.0);
        assert_eq!(row.confidence["time_to_first_token_avg"].n, 2);
        let csv = sweep_csv(&[row]);
        assert!(
            csv.starts_with("index,runs,artifact_dir,request_throughput,"),
            "{csv}"
        );
        let agg = runs_aggregate(&[r(20.0), r(22.0)], &[], &SweepParameters::default(), 0.95);
        assert_eq!(agg["metrics"]["time_to_first_token"]["p50"]["mean"], 21.0);
        assert_eq!(agg["metrics"]["time_to_first_token"]["unit"], "ms");
        assert!(runs_aggregate_csv(&agg).contains("time_to_first_token,p50,ms,2,21.000000"));
    }
}
