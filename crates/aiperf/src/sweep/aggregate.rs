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
    /// Whether the point is on the sweep's Pareto front ([`mark_pareto`]); unset when the
    /// sweep has no front (fewer than two points with both axes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pareto: Option<bool>,
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
            pareto: None,
        }
    }
}

/// The axes of a sweep's Pareto front: a throughput (higher is better) and a latency (lower
/// is better), each a column of [`KEY_METRICS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ParetoAxes {
    pub throughput: &'static str,
    pub latency: &'static str,
}

impl Default for ParetoAxes {
    fn default() -> Self {
        Self {
            throughput: "output_token_throughput",
            latency: "request_latency_p50",
        }
    }
}

/// The key-metric columns a Pareto axis may name: the throughputs (`higher` true) or the
/// latency statistics (`higher` false).
pub fn pareto_columns(higher: bool) -> Vec<&'static str> {
    KEY_METRICS
        .iter()
        .map(|k| k.0)
        .filter(|c| c.ends_with("_throughput") == higher)
        .filter(|c| higher || c.contains("latency") || c.starts_with("time_to_first_token"))
        .collect()
}

/// The value parser of `--pareto-throughput` (`higher`) and `--pareto-latency`: a column
/// of [`pareto_columns`].
pub fn parse_pareto_column(s: &str, higher: bool) -> Result<&'static str, String> {
    let cols = pareto_columns(higher);
    cols.iter()
        .find(|c| **c == s.trim())
        .copied()
        .ok_or_else(|| format!("`{s}` is not one of: {}", cols.join(", ")))
}

/// The Pareto front of points `(throughput, latency)`: whether each point is one that no
/// other point dominates (another point dominates one when its throughput is at least as
/// high and its latency at least as low, one of them strictly). Points with a value that is
/// not a number are never on the front.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<bool> {
    let ok = |&(t, l): &(f64, f64)| !t.is_nan() && !l.is_nan();
    points
        .iter()
        .map(|p @ &(t, l)| {
            ok(p)
                && !points
                    .iter()
                    .any(|q @ &(t2, l2)| ok(q) && t2 >= t && l2 <= l && (t2 > t || l2 < l))
        })
        .collect()
}

/// Marks each row's `pareto` by the front of `axes` over the rows that have both metrics
/// (the others are off it); with fewer than two such rows there is no front and nothing is
/// marked. Returns the indices of the rows on the front.
pub fn mark_pareto(rows: &mut [PointRow], axes: ParetoAxes) -> Vec<usize> {
    let pts: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| {
            let get = |c| r.metrics.get(c).copied().unwrap_or(f64::NAN);
            (get(axes.throughput), get(axes.latency))
        })
        .collect();
    if pts
        .iter()
        .filter(|(t, l)| !t.is_nan() && !l.is_nan())
        .count()
        < 2
    {
        return Vec::new();
    }
    let front = pareto_front(&pts);
    for (r, &on) in rows.iter_mut().zip(&front) {
        r.pareto = Some(on);
    }
    (rows.iter().zip(&front))
        .filter(|(_, &on)| on)
        .map(|(r, _)| r.index)
        .collect()
}

/// `sweep_aggregate.json`; with a Pareto front (rows marked by [`mark_pareto`]), a
/// `pareto` object: its axes and the indices of the points on it.
pub fn sweep_json(
    rows: &[PointRow],
    sweep_type: &str,
    trials: u32,
    level: f64,
    axes: ParetoAxes,
) -> Value {
    let mut v = json!({
        "aggregation_type": "sweep",
        "sweep_type": sweep_type,
        "num_points": rows.len(),
        "runs_per_point": trials,
        "confidence_level": level,
        "ci_method": "student_t",
        "points": rows,
    });
    if rows.iter().any(|r| r.pareto.is_some()) {
        let front: Vec<usize> = (rows.iter())
            .filter(|r| r.pareto == Some(true))
            .map(|r| r.index)
            .collect();
        v["pareto"] = json!({
            "throughput": axes.throughput,
            "latency": axes.latency,
            "front": front,
        });
    }
    v
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
    let pareto = rows.iter().any(|r| r.pareto.is_some());
    if pareto {
        s.push_str(",pareto");
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
        if pareto {
            s.push(',');
            if let Some(on) = r.pareto {
                s.push_str(if on { "true" } else { "false" });
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
    fn the_pareto_front_keeps_the_undominated_points() {
        // (throughput, latency): (10, 5) dominates (8, 6); (12, 9) trades latency for
        // throughput; (12, 10) is dominated by (12, 9); NaN is never on the front.
        let pts = [
            (10.0, 5.0),
            (8.0, 6.0),
            (12.0, 9.0),
            (12.0, 10.0),
            (f64::NAN, 1.0),
            (3.0, 1.0),
        ];
        assert_eq!(pareto_front(&pts), [true, false, true, false, false, true]);
        // Equal points do not dominate each other.
        assert_eq!(pareto_front(&[(1.0, 1.0), (1.0, 1.0)]), [true, true]);
        assert!(pareto_front(&[]).is_empty());
    }

    #[test]
    fn a_sweep_marks_its_pareto_front_in_the_json_csv_and_rows() {
        let report = |tput: f64, lat: f64| {
            json!({"output_token_throughput": {"unit": "tokens/sec", "avg": tput},
                   "request_latency": {"unit": "ms", "p50": lat, "p99": lat * 2.0}})
        };
        let point = |c: u64| SweepParameters {
            concurrency: Some(c),
            ..Default::default()
        };
        let mut rows: Vec<PointRow> = [(100.0, 50.0), (90.0, 60.0), (300.0, 80.0)]
            .iter()
            .enumerate()
            .map(|(i, &(t, l))| {
                PointRow::new(i, point(1 << i), format!("p{i}"), &[report(t, l)], 0.95)
            })
            .collect();
        let axes = ParetoAxes::default();
        assert_eq!(mark_pareto(&mut rows, axes), [0, 2]);
        assert_eq!(
            rows.iter().map(|r| r.pareto).collect::<Vec<_>>(),
            [Some(true), Some(false), Some(true)]
        );
        let j = sweep_json(&rows, "grid", 1, 0.95, axes);
        assert_eq!(j["pareto"]["front"], json!([0, 2]));
        assert_eq!(j["pareto"]["latency"], "request_latency_p50");
        assert_eq!(j["points"][1]["pareto"], false);
        let csv = sweep_csv(&rows);
        let lines: Vec<&str> = csv.lines().collect();
        assert!(lines[0].ends_with(",pareto"), "{}", lines[0]);
        assert!(lines[1].ends_with(",true") && lines[2].ends_with(",false"));
        // Another latency axis changes the answer: by p99, the same.
        let p99 = ParetoAxes {
            latency: "request_latency_p99",
            ..axes
        };
        assert_eq!(mark_pareto(&mut rows, p99), [0, 2]);
        // With fewer than two points having both axes, there is no front, and the JSON
        // and CSV say nothing of one.
        let mut one = rows[..1].to_vec();
        one[0].pareto = None;
        assert!(mark_pareto(&mut one, axes).is_empty());
        assert_eq!(one[0].pareto, None);
        assert!(sweep_json(&one, "grid", 1, 0.95, axes)
            .get("pareto")
            .is_none());
        assert!(!sweep_csv(&one).contains("pareto"));
        let no_ttft = ParetoAxes {
            latency: "time_to_first_token_p50",
            ..axes
        };
        assert!(mark_pareto(&mut rows.clone(), no_ttft).is_empty());
    }

    #[test]
    fn pareto_axes_are_key_metric_columns_of_the_right_kind() {
        assert_eq!(
            parse_pareto_column("request_throughput", true),
            Ok("request_throughput")
        );
        assert_eq!(
            parse_pareto_column("time_to_first_token_p99", false),
            Ok("time_to_first_token_p99")
        );
        for (bad, higher) in [
            ("request_latency_p50", true),
            ("output_token_throughput", false),
            ("goodput", false),
            ("request_count", true),
            ("nope", false),
        ] {
            let e = parse_pareto_column(bad, higher).unwrap_err();
            assert!(e.contains("is not one of"), "{e}");
        }
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
