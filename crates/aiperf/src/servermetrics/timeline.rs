//! The few server metrics that matter and each GPU's fields over the whole run, scrape by
//! scrape: the `timeline` of `server_metrics_export.json` and `gpu_telemetry_export.json`,
//! which `report.html` plots next to the client's own timeline.
//!
//! Gauges are drawn as sampled; counters as their rate between consecutive scrapes (a drop,
//! a restart, counts from zero, as in the window math); a histogram as its mean between
//! consecutive scrapes (Δsum / Δcount). Times are wall-clock nanoseconds, the clock of the
//! per-request records, so the report lines both up without knowing the run's clock.

use serde::Serialize;

use super::store::{SeriesPoints, Store, StoredSeries};
use super::{base_name, GPU_FIELDS, KV_USAGE, PREEMPTIONS, RUNNING, TTFT, WAITING};

/// Points per line at most: a run of 4,096 stored scrapes is thinned by taking every k-th.
pub const MAX_LINE_POINTS: usize = 1000;
/// Lines per chart at most (a server with many engines or label sets).
pub const MAX_LINES_PER_CHART: usize = 8;

/// Server token counters, drawn as tokens per second.
const TOKENS: &[&str] = &[
    "vllm:generation_tokens",
    "vllm:prompt_tokens",
    "sglang:generation_tokens",
    "sglang:prompt_tokens",
];

/// One line of a timeline chart.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Line {
    /// Which chart it belongs to (`requests`, `kv_cache`, `token_throughput`,
    /// `preemptions`, `ttft`; a GPU field's key for GPU telemetry).
    pub chart: &'static str,
    /// The metric and, where needed to tell lines apart, its endpoint and labels.
    pub name: String,
    pub unit: &'static str,
    /// (wall-clock ns, value).
    pub points: Vec<(u64, f64)>,
}

/// What a line shows of a series.
#[derive(Clone, Copy)]
enum Show {
    Value(f64),
    Rate,
    HistMean(f64),
}

fn values(s: &StoredSeries<'_>, show: Show, wall: &dyn Fn(u64) -> u64) -> Vec<(u64, f64)> {
    let out: Vec<(u64, f64)> = match (s.points, show) {
        (SeriesPoints::Scalar(p), Show::Value(scale)) => p
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|&(t, v)| (wall(t), v * scale))
            .collect(),
        (SeriesPoints::Scalar(p), Show::Rate) => p
            .windows(2)
            .filter_map(|w| {
                let ((t0, v0), (t1, v1)) = (w[0], w[1]);
                let dt = t1.checked_sub(t0).filter(|&d| d > 0)? as f64 / 1e9;
                let dv = if v1 >= v0 { v1 - v0 } else { v1 };
                let r = dv / dt;
                r.is_finite().then_some((wall(t1), r))
            })
            .collect(),
        (SeriesPoints::Histogram(p), Show::HistMean(scale)) => p
            .windows(2)
            .filter_map(|w| {
                let ((_, a), (t1, b)) = (&w[0], &w[1]);
                let (dc, ds) = if b.count >= a.count {
                    (b.count - a.count, b.sum - a.sum)
                } else {
                    (b.count, b.sum)
                };
                let m = ds / dc * scale;
                (dc > 0.0 && m.is_finite()).then_some((wall(*t1), m))
            })
            .collect(),
        _ => Vec::new(),
    };
    thin(out)
}

/// Every k-th point (the last always kept), at most [`MAX_LINE_POINTS`].
fn thin(p: Vec<(u64, f64)>) -> Vec<(u64, f64)> {
    if p.len() <= MAX_LINE_POINTS {
        return p;
    }
    let k = p.len().div_ceil(MAX_LINE_POINTS);
    let last = p.len() - 1;
    p.into_iter()
        .enumerate()
        .filter(|(i, _)| i % k == 0 || *i == last)
        .map(|(_, x)| x)
        .collect()
}

/// `name{k=v,…}` with the endpoint when the run scraped several: enough to tell lines
/// of one chart apart.
fn line_name(s: &StoredSeries<'_>, several_endpoints: bool, with_labels: bool) -> String {
    let mut n = base_name(s.name).to_string();
    if with_labels && !s.labels.is_empty() {
        let l: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        n.push_str(&format!("{{{}}}", l.join(",")));
    }
    if several_endpoints {
        n = format!("{} {n}", s.endpoint_url);
    }
    n
}

/// The lines of one chart: every series of `names`, shown as `show`.
fn chart_lines(
    store: &Store,
    chart: &'static str,
    unit: &'static str,
    names: &[&str],
    show: Show,
    wall: &dyn Fn(u64) -> u64,
    out: &mut Vec<Line>,
) {
    let series = store.series_where(|n| names.contains(&base_name(n)));
    let mut endpoints: Vec<&str> = series.iter().map(|s| s.endpoint_url).collect();
    endpoints.dedup();
    let several = endpoints.len() > 1;
    let mut n = 0;
    for s in &series {
        if n == MAX_LINES_PER_CHART {
            break;
        }
        let same_name = series.iter().filter(|o| o.name == s.name).count();
        let points = values(s, show, wall);
        if points.is_empty() {
            continue;
        }
        out.push(Line {
            chart,
            name: line_name(s, several, same_name > 1),
            unit,
            points,
        });
        n += 1;
    }
}

/// The server's timeline: running and waiting requests, KV-cache usage, token throughput,
/// preemptions (only when there were any) and the server's TTFT. `wall` maps the run's
/// clock to wall-clock ns.
pub fn server(store: &Store, wall: &dyn Fn(u64) -> u64) -> Vec<Line> {
    let mut out = Vec::new();
    let v = Show::Value(1.0);
    chart_lines(store, "requests", "requests", RUNNING, v, wall, &mut out);
    chart_lines(store, "requests", "requests", WAITING, v, wall, &mut out);
    let pct = Show::Value(100.0);
    chart_lines(store, "kv_cache", "%", KV_USAGE, pct, wall, &mut out);
    let rate = Show::Rate;
    chart_lines(
        store,
        "token_throughput",
        "tokens/s",
        TOKENS,
        rate,
        wall,
        &mut out,
    );
    let mut pre = Vec::new();
    chart_lines(
        store,
        "preemptions",
        "preemptions/s",
        PREEMPTIONS,
        rate,
        wall,
        &mut pre,
    );
    if pre.iter().any(|l| l.points.iter().any(|p| p.1 > 0.0)) {
        out.extend(pre);
    }
    let ms = Show::HistMean(1e3);
    chart_lines(store, "ttft", "ms", TTFT, ms, wall, &mut out);
    out
}

/// Each GPU's DCGM fields over the run, a line per GPU per field.
pub fn gpu(store: &Store, wall: &dyn Fn(u64) -> u64) -> Vec<Line> {
    let mut out = Vec::new();
    for &(field, key, unit) in GPU_FIELDS {
        let series = store.series_where(|n| n == field);
        for s in series.iter().take(MAX_LINES_PER_CHART) {
            let l = |k: &str| {
                s.labels
                    .iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("")
            };
            let mut name = format!("GPU {}", l("gpu"));
            if !l("Hostname").is_empty() {
                name.push_str(&format!(" on {}", l("Hostname")));
            }
            let points = values(s, Show::Value(1.0), wall);
            if !points.is_empty() {
                out.push(Line {
                    chart: key,
                    name,
                    unit,
                    points,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servermetrics::parse::parse;

    fn store_of(scrapes: &[(u64, &str)]) -> Store {
        let mut s = Store::new(&["http://x/metrics".to_string()]);
        for (t, text) in scrapes {
            s.ingest(0, *t, &parse(text));
        }
        s
    }

    #[test]
    fn gauges_counters_and_histograms_become_lines_on_the_wall_clock() {
        let s = store_of(&[
            (
                1_000_000_000,
                "# TYPE vllm:generation_tokens_total counter\nvllm:num_requests_running 2\nvllm:generation_tokens_total 100\n\
                 vllm:kv_cache_usage_perc 0.25\n\
                 # TYPE vllm:time_to_first_token_seconds histogram\n\
                 vllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 10\n\
                 vllm:time_to_first_token_seconds_sum 0.5\nvllm:time_to_first_token_seconds_count 10\n",
            ),
            (
                3_000_000_000,
                "# TYPE vllm:generation_tokens_total counter\nvllm:num_requests_running 4\nvllm:generation_tokens_total 500\n\
                 vllm:kv_cache_usage_perc 0.5\n\
                 # TYPE vllm:time_to_first_token_seconds histogram\n\
                 vllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 14\n\
                 vllm:time_to_first_token_seconds_sum 0.9\nvllm:time_to_first_token_seconds_count 14\n",
            ),
            // A restart: the counter starts again from zero.
            (
                4_000_000_000,
                "# TYPE vllm:generation_tokens_total counter\nvllm:num_requests_running 1\nvllm:generation_tokens_total 50\n",
            ),
        ]);
        let wall = |t: u64| t + 7;
        let lines = server(&s, &wall);
        let get = |chart: &str| {
            lines
                .iter()
                .find(|l| l.chart == chart)
                .unwrap_or_else(|| panic!("no {chart} line in {lines:?}"))
        };
        let r = get("requests");
        assert_eq!(r.name, "vllm:num_requests_running");
        assert_eq!(
            r.points,
            vec![
                (1_000_000_007, 2.0),
                (3_000_000_007, 4.0),
                (4_000_000_007, 1.0)
            ]
        );
        assert_eq!(
            get("kv_cache").points,
            vec![(1_000_000_007, 25.0), (3_000_000_007, 50.0)]
        );
        // 400 tokens in 2 s, then 50 after the restart in 1 s.
        assert_eq!(
            get("token_throughput").points,
            vec![(3_000_000_007, 200.0), (4_000_000_007, 50.0)]
        );
        // (0.9 − 0.5) / 4 requests = 100 ms.
        let t = get("ttft");
        assert_eq!(t.points.len(), 1);
        assert!((t.points[0].1 - 100.0).abs() < 1e-9, "{t:?}");
        assert!(
            lines.iter().all(|l| l.chart != "preemptions"),
            "no preemptions, no chart"
        );
    }

    #[test]
    fn long_runs_are_thinned_and_gpus_get_a_line_each() {
        let texts: Vec<String> = (0..2500)
            .map(|i| {
                format!(
                    "DCGM_FI_DEV_GPU_UTIL{{gpu=\"0\",Hostname=\"n1\"}} {}\n\
                     DCGM_FI_DEV_GPU_UTIL{{gpu=\"1\",Hostname=\"n1\"}} 50\n",
                    i % 100
                )
            })
            .collect();
        let scrapes: Vec<(u64, &str)> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| (i as u64 * 1_000_000, t.as_str()))
            .collect();
        let lines = gpu(&store_of(&scrapes), &|t| t);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].name, "GPU 0 on n1");
        assert_eq!(lines[0].chart, "gpu_utilization");
        assert!(lines[0].points.len() <= MAX_LINE_POINTS);
        assert_eq!(lines[0].points.last().map(|p| p.0), Some(2499 * 1_000_000));
    }
}
