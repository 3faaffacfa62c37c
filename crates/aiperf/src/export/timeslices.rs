//! `profile_export_aiperf_timeslices.json` and `.csv` (`--slice-duration`): every metric
//! of the profiling phase, per time slice (see `metrics::slices` for which requests a slice
//! holds).
//!
//! JSON: `{"timeslices": [{"timeslice_index", "start_ns", "end_ns", <tag>: {unit, avg, …}},
//! …], "input_config": {…}}`, each slice's metrics in the layout of
//! `profile_export_aiperf.json`. [`timeslices_json`] builds the value, so a later section
//! (say the server's metrics over the same windows) can be added to each slice's object.
//! CSV, AIPerf's tidy layout: `Timeslice,Metric,Unit,Stat,Value`, a row per statistic,
//! metrics sorted by tag within a slice, values with two decimals; an aggregate's one value
//! is its `avg`.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::spec::ArtifactNames;
use super::write_atomic;
use crate::metrics::slices::TimeSlice;
use crate::metrics::stats::PERCENTILES;
use crate::metrics::MetricValue;

/// The JSON document: the slices in time order, then the run's `input_config`. `extra[i]`,
/// when given, is added to slice `i`'s object (the server's metrics and GPU telemetry over
/// the slice's window: `server_metrics`, `gpu_telemetry`).
pub fn timeslices_json(
    slices: &[TimeSlice],
    extra: &[Map<String, Value>],
    input_config: &Value,
) -> Value {
    let list: Vec<Value> = slices
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut obj = Map::new();
            obj.insert("timeslice_index".into(), json!(i));
            obj.insert("start_ns".into(), json!(s.start_ns));
            obj.insert("end_ns".into(), json!(s.end_ns));
            obj.extend(s.summary.metrics_json());
            if let Some(more) = extra.get(i) {
                obj.extend(more.clone());
            }
            Value::Object(obj)
        })
        .collect();
    json!({"timeslices": list, "input_config": input_config})
}

/// The tidy CSV.
pub fn timeslices_csv(slices: &[TimeSlice]) -> String {
    let mut out = String::from("Timeslice,Metric,Unit,Stat,Value\n");
    for (i, s) in slices.iter().enumerate() {
        let mut metrics: Vec<_> = s.summary.metrics.iter().collect();
        metrics.sort_by_key(|m| m.info.tag);
        for m in metrics {
            let mut row = |stat: &str, v: f64| {
                out.push_str(&format!(
                    "{i},{},{},{stat},{v:.2}\n",
                    csv_cell(m.info.header),
                    csv_cell(m.info.unit)
                ));
            };
            match &m.stats {
                MetricValue::Avg(v) => row("avg", *v),
                MetricValue::Stats(st) => {
                    row("avg", st.avg);
                    row("min", st.min);
                    row("max", st.max);
                    for (p, name) in PERCENTILES {
                        row(name, st.percentile(p));
                    }
                    row("std", st.std);
                }
            }
        }
    }
    out
}

/// A CSV cell, quoted when it holds a comma or a quote.
fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Writes both files (their names follow `--profile-export-prefix`).
pub fn write_timeslices(
    dir: &Path,
    names: &ArtifactNames,
    slices: &[TimeSlice],
    extra: &[Map<String, Value>],
    input_config: &Value,
) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(&timeslices_json(slices, extra, input_config))?;
    write_atomic(dir, &names.timeslices_json, &json)?;
    write_atomic(
        dir,
        &names.timeslices_csv,
        timeslices_csv(slices).as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{metric_info, MetricSummary, PhaseSummary, Stats};

    fn slice(start_ns: u64, ttft: &mut [f64], count: f64) -> TimeSlice {
        let mut stat = |tag| MetricSummary {
            info: metric_info(tag).unwrap(),
            stats: MetricValue::Stats(Stats::compute(ttft).unwrap()),
        };
        let agg = |tag, v| MetricSummary {
            info: metric_info(tag).unwrap(),
            stats: MetricValue::Avg(v),
        };
        TimeSlice {
            start_ns,
            end_ns: start_ns + 1_000,
            summary: PhaseSummary {
                metrics: vec![stat("time_to_first_token"), agg("request_count", count)],
                ..Default::default()
            },
        }
    }

    #[test]
    fn json_and_csv_layouts() {
        let slices = [
            slice(5_000, &mut [10.0, 20.0], 2.0),
            slice(7_000, &mut [30.0], 1.0),
        ];
        let v = timeslices_json(&slices, &[], &json!({"k": 1}));
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["timeslices", "input_config"]);
        let s0 = &v["timeslices"][0];
        let keys: Vec<&String> = s0.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "timeslice_index",
                "start_ns",
                "end_ns",
                "time_to_first_token",
                "request_count"
            ]
        );
        assert_eq!(s0["time_to_first_token"]["avg"], 15.0);
        assert_eq!(s0["time_to_first_token"]["unit"], "ms");
        assert_eq!(s0["request_count"]["avg"], 2.0);
        assert_eq!(v["timeslices"][1]["timeslice_index"], 1);
        assert_eq!(v["timeslices"][1]["start_ns"], 7_000);
        assert_eq!(v["input_config"]["k"], 1);

        let csv = timeslices_csv(&slices);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "Timeslice,Metric,Unit,Stat,Value");
        // Per slice: request_count (1 row) sorts before time_to_first_token (13 rows).
        assert_eq!(lines.len(), 1 + 2 * 14);
        assert_eq!(lines[1], "0,Request Count,requests,avg,2.00");
        assert_eq!(lines[2], "0,Time to First Token,ms,avg,15.00");
        assert!(lines.contains(&"0,Time to First Token,ms,p50,15.00"));
        assert!(lines.contains(&"1,Time to First Token,ms,max,30.00"));
        for l in &lines[1..] {
            assert_eq!(l.split(',').count(), 5, "{l}");
        }
    }
}
