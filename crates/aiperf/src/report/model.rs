//! What the report shows, computed from a run's records: exact percentiles over every value,
//! histograms, CDFs, per-interval timelines, and the charts drawn from them. Timelines are
//! downsampled (per-request scatters keep each time bin's lowest and highest value, so
//! outliers stay visible); percentiles never are.

use std::collections::BTreeMap;

use serde::Serialize;

use super::chart::{Chart, Kind, Marker, Series};
use super::data::{Rec, RunData};
use crate::metrics::stats::percentile_sorted;

/// The metrics whose distributions are drawn: tag, title.
pub const DISTRIBUTIONS: &[(&str, &str)] = &[
    ("time_to_first_token", "Time to first token"),
    ("inter_token_latency", "Inter-token latency"),
    ("request_latency", "Request latency"),
];

/// Histogram bins of a distribution.
pub const BINS: usize = 40;
/// Time bins of a downsampled per-request scatter (each keeps at most two points).
pub const SCATTER_BINS: usize = 1000;
/// At most this many intervals in a timeline (longer runs get longer intervals).
pub const MAX_INTERVALS: usize = 600;
/// Points of a drawn CDF.
pub const CDF_POINTS: usize = 200;

/// One metric over the profiling phase's successful requests.
#[derive(Debug, Clone, Serialize)]
pub struct Dist {
    pub unit: &'static str,
    pub count: usize,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    #[serde(skip)]
    pub sorted: Vec<f64>,
}

impl Dist {
    pub fn of(mut values: Vec<f64>) -> Option<Self> {
        values.retain(|v| v.is_finite());
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        Some(Self {
            unit: "ms",
            count: n,
            min: values[0],
            max: values[n - 1],
            mean: values.iter().sum::<f64>() / n as f64,
            p50: percentile_sorted(&values, 50.0),
            p90: percentile_sorted(&values, 90.0),
            p99: percentile_sorted(&values, 99.0),
            sorted: values,
        })
    }

    /// Counts in `bins` equal bins over [lo, hi]; values past `hi` count in the last bin.
    pub fn histogram(&self, lo: f64, hi: f64, bins: usize) -> Vec<u64> {
        let mut counts = vec![0u64; bins];
        let width = (hi - lo) / bins as f64;
        for &v in &self.sorted {
            let i = if width > 0.0 {
                (((v - lo) / width).floor().max(0.0) as usize).min(bins - 1)
            } else {
                0
            };
            counts[i] += 1;
        }
        counts
    }

    /// The range a histogram covers: from the minimum to a little past p99 (a long tail
    /// would squash the body into one bar), not past the maximum.
    pub fn hist_range(&self) -> (f64, f64) {
        let hi = self
            .max
            .min(self.p99 + 2.0 * (self.p99 - self.p50).max(0.0));
        let hi = if hi > self.min { hi } else { self.min + 1.0 };
        (self.min, hi)
    }

    /// The CDF at `points` + 1 evenly spaced quantiles (exact values).
    pub fn cdf(&self, points: usize) -> Vec<(f64, f64)> {
        (0..=points)
            .map(|i| {
                let q = i as f64 / points as f64;
                (percentile_sorted(&self.sorted, q * 100.0), q * 100.0)
            })
            .collect()
    }
}

/// Requests per interval of a run: completions, errors, mean requests in flight.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    /// Interval length, seconds.
    pub interval_s: f64,
    /// Successful requests that ended in each interval, per second.
    pub throughput: Vec<f64>,
    /// Failed requests that ended in each interval, per second.
    pub errors: Vec<f64>,
    /// Time-weighted mean of the requests in flight during each interval.
    pub in_flight: Vec<f64>,
}

/// What the report knows of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunModel {
    pub label: String,
    pub records: usize,
    pub profiling_records: usize,
    pub distributions: BTreeMap<&'static str, Dist>,
    pub timeline: Option<Timeline>,
    /// The warmup's span, seconds from the run's first request.
    pub warmup_s: Option<(f64, f64)>,
    pub errors_by_type: BTreeMap<String, u64>,
    /// Whether requests were sent on a schedule (open loop: records carry a send lag).
    pub open_loop: bool,
    #[serde(skip)]
    pub origin_ns: u64,
}

impl RunModel {
    pub fn of(run: &RunData) -> Self {
        let recs = &run.records;
        let origin_ns = recs.iter().map(|r| r.start_ns).min().unwrap_or(0);
        let prof: Vec<&Rec> = recs.iter().filter(|r| !r.warmup).collect();
        let mut distributions = BTreeMap::new();
        for &(tag, _) in DISTRIBUTIONS {
            let values = prof
                .iter()
                .filter(|r| r.error.is_none())
                .filter_map(|r| match tag {
                    "time_to_first_token" => r.ttft_ms,
                    "inter_token_latency" => r.itl_ms,
                    _ => r.latency_ms,
                })
                .collect();
            if let Some(d) = Dist::of(values) {
                distributions.insert(tag, d);
            }
        }
        let warm: Vec<&Rec> = recs.iter().filter(|r| r.warmup).collect();
        let secs = |ns: u64| ns.saturating_sub(origin_ns) as f64 / 1e9;
        let warmup_s = (!warm.is_empty()).then(|| {
            let a = warm.iter().map(|r| r.start_ns).min().unwrap_or(origin_ns);
            let b = warm.iter().map(|r| r.end_ns).max().unwrap_or(origin_ns);
            (secs(a), secs(b))
        });
        // Errors by type: the summary's (authoritative, present without records), else
        // counted from the profiling records.
        let mut errors_by_type = BTreeMap::new();
        if let Some(list) = run.summary.get("error_summary").and_then(|v| v.as_array()) {
            for e in list {
                let kind = e
                    .pointer("/error_details/type")
                    .and_then(|v| v.as_str())
                    .unwrap_or("error")
                    .to_string();
                let n = e.get("count").and_then(|v| v.as_u64()).unwrap_or(0);
                *errors_by_type.entry(kind).or_insert(0) += n;
            }
        } else {
            for r in &prof {
                if let Some(k) = &r.error {
                    *errors_by_type.entry(k.clone()).or_insert(0) += 1;
                }
            }
        }
        Self {
            label: run.label.clone(),
            records: recs.len(),
            profiling_records: prof.len(),
            distributions,
            timeline: timeline(recs, origin_ns),
            warmup_s,
            errors_by_type,
            open_loop: recs.iter().any(|r| r.send_lag_ms.is_some()),
            origin_ns,
        }
    }
}

/// Per-interval counts over the whole run (warmup included: it is shaded in the charts).
fn timeline(recs: &[Rec], origin_ns: u64) -> Option<Timeline> {
    let end_ns = recs.iter().map(|r| r.end_ns).max()?;
    let span_s = (end_ns.saturating_sub(origin_ns) as f64 / 1e9).max(1e-3);
    // One-second intervals, longer for long runs, shorter for runs under 10 s.
    let interval_s = if span_s < 10.0 {
        (span_s / 20.0).max(0.01)
    } else {
        (span_s / MAX_INTERVALS as f64).ceil().max(1.0)
    };
    let n = ((span_s / interval_s).ceil() as usize).clamp(1, MAX_INTERVALS * 2);
    let step_ns = interval_s * 1e9;
    let mut ok = vec![0u64; n];
    let mut bad = vec![0u64; n];
    let mut busy = vec![0f64; n];
    for r in recs {
        let s = r.start_ns.saturating_sub(origin_ns) as f64;
        let e = r.end_ns.saturating_sub(origin_ns) as f64;
        let i = ((e / step_ns) as usize).min(n - 1);
        if r.error.is_some() {
            bad[i] += 1;
        } else {
            ok[i] += 1;
        }
        let first = ((s / step_ns) as usize).min(n - 1);
        for (j, b) in busy.iter_mut().enumerate().take(i + 1).skip(first) {
            let lo = (j as f64 * step_ns).max(s);
            let hi = ((j + 1) as f64 * step_ns).min(e);
            if hi > lo {
                *b += (hi - lo) / step_ns;
            }
        }
    }
    let per_s = |v: Vec<u64>| v.into_iter().map(|c| c as f64 / interval_s).collect();
    Some(Timeline {
        interval_s,
        throughput: per_s(ok),
        errors: per_s(bad),
        in_flight: busy,
    })
}

/// At most two points per time bin (the lowest and highest value), in time order: the
/// shape and the outliers of a per-request scatter with a bounded number of points.
pub fn downsample(points: &[(f64, f64)], bins: usize) -> Vec<(f64, f64)> {
    if points.len() <= bins * 2 {
        return points.to_vec();
    }
    let (lo, hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
            (a.0.min(p.0), a.1.max(p.0))
        });
    let width = ((hi - lo) / bins as f64).max(f64::MIN_POSITIVE);
    // Each bin's lowest and highest point.
    type Extremes = ((f64, f64), (f64, f64));
    let mut keep: Vec<Option<Extremes>> = vec![None; bins];
    for &p in points {
        let i = (((p.0 - lo) / width) as usize).min(bins - 1);
        let slot = &mut keep[i];
        *slot = Some(match *slot {
            None => (p, p),
            Some((mn, mx)) => (
                if p.1 < mn.1 { p } else { mn },
                if p.1 > mx.1 { p } else { mx },
            ),
        });
    }
    let mut out = Vec::with_capacity(bins * 2);
    for (mn, mx) in keep.into_iter().flatten() {
        // The bin's two points in time order.
        let (a, b) = if mn.0 <= mx.0 { (mn, mx) } else { (mx, mn) };
        out.push(a);
        if b != a {
            out.push(b);
        }
    }
    out
}

fn markers(d: &Dist, color: usize, prefix: &str) -> Vec<Marker> {
    [("p50", d.p50), ("p90", d.p90), ("p99", d.p99)]
        .into_iter()
        .map(|(n, x)| Marker {
            x,
            label: format!("{prefix}{n}"),
            color,
        })
        .collect()
}

/// The distribution charts of one metric over one or more runs: histogram, then CDF, with
/// p50/p90/p99 marked (each run's, in its colour). `None` when no run has the metric.
pub fn distribution_charts(runs: &[&RunModel], tag: &str, title: &str) -> Option<[Chart; 2]> {
    let ds: Vec<(usize, &RunModel, &Dist)> = runs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.distributions.get(tag).map(|d| (i, *r, d)))
        .collect();
    if ds.is_empty() {
        return None;
    }
    let one = runs.len() == 1;
    let lo = ds
        .iter()
        .map(|d| d.2.hist_range().0)
        .fold(f64::INFINITY, f64::min);
    let hi = ds
        .iter()
        .map(|d| d.2.hist_range().1)
        .fold(f64::NEG_INFINITY, f64::max);
    let width = (hi - lo) / BINS as f64;
    let unit = ds[0].2.unit;
    let mut hist = Chart::new(
        &format!("{tag}_histogram"),
        &format!("{title}: histogram"),
        &format!("{title} ({unit})"),
        "requests",
    );
    let mut cdf = Chart::new(
        &format!("{tag}_cdf"),
        &format!("{title}: CDF"),
        &format!("{title} ({unit})"),
        "% of requests at or below",
    );
    for &(i, r, d) in &ds {
        let counts = d.histogram(lo, hi, BINS);
        let name = if one { String::new() } else { r.label.clone() };
        let kind = if one {
            Kind::Bars { width }
        } else {
            Kind::Line
        };
        let points = if one {
            counts
                .iter()
                .enumerate()
                .map(|(b, &c)| (lo + b as f64 * width, c as f64))
                .collect()
        } else {
            // Step outlines, so overlaid runs stay readable.
            let mut p = Vec::with_capacity(counts.len() * 2);
            for (b, &c) in counts.iter().enumerate() {
                p.push((lo + b as f64 * width, c as f64));
                p.push((lo + (b + 1) as f64 * width, c as f64));
            }
            p
        };
        hist.series.push(Series {
            name: name.clone(),
            kind,
            color: i,
            points,
        });
        cdf.series.push(Series {
            name,
            kind: Kind::Line,
            color: i,
            points: d.cdf(CDF_POINTS),
        });
        let prefix = if one {
            String::new()
        } else {
            format!("{} ", i + 1)
        };
        let mcolor = if one { 1 } else { i };
        hist.markers.extend(markers(d, mcolor, &prefix));
        cdf.markers.extend(markers(d, mcolor, &prefix));
    }
    Some([hist, cdf])
}

/// Per-request TTFT and latency against start time (downsampled), warmup shaded.
pub fn latency_timeline(run: &RunData, model: &RunModel) -> Option<Chart> {
    let mut c = Chart::new(
        "timeline_latency",
        "Per-request TTFT and latency over time",
        "request start (s since the first request)",
        "ms",
    );
    let secs = |ns: u64| ns.saturating_sub(model.origin_ns) as f64 / 1e9;
    for (name, color, get) in [
        (
            "request latency",
            0,
            (|r: &Rec| r.latency_ms) as fn(&Rec) -> Option<f64>,
        ),
        ("TTFT", 1, |r: &Rec| r.ttft_ms),
    ] {
        let pts: Vec<(f64, f64)> = run
            .records
            .iter()
            .filter(|r| r.error.is_none())
            .filter_map(|r| get(r).map(|v| (secs(r.start_ns), v)))
            .collect();
        if !pts.is_empty() {
            c.series.push(Series {
                name: name.into(),
                kind: Kind::Points,
                color,
                points: downsample(&pts, SCATTER_BINS),
            });
        }
    }
    if let Some((a, b)) = model.warmup_s {
        c.shaded.push((a, b, "warmup".into()));
    }
    (!c.is_empty()).then_some(c)
}

/// Throughput and errors per second, and requests in flight, over time (one or more runs).
pub fn rate_timelines(runs: &[&RunModel]) -> Vec<Chart> {
    let one = runs.len() == 1;
    let mut tp = Chart::new(
        "timeline_throughput",
        "Throughput and errors over time",
        "time (s since the first request)",
        "requests/s",
    );
    let mut inf = Chart::new(
        "timeline_in_flight",
        "Requests in flight over time",
        "time (s since the first request)",
        "requests in flight (mean per interval)",
    );
    for (i, r) in runs.iter().enumerate() {
        let Some(t) = &r.timeline else { continue };
        let xs = |v: &[f64]| -> Vec<(f64, f64)> {
            v.iter()
                .enumerate()
                .map(|(k, &y)| ((k as f64 + 0.5) * t.interval_s, y))
                .collect()
        };
        let name = |what: &str| {
            if one {
                what.to_string()
            } else {
                format!("{} {what}", r.label)
            }
        };
        tp.series.push(Series {
            name: name("completed"),
            kind: Kind::Line,
            color: if one { 0 } else { i },
            points: xs(&t.throughput),
        });
        if t.errors.iter().any(|&e| e > 0.0) {
            tp.series.push(Series {
                name: name("errors"),
                kind: Kind::Line,
                color: if one { 1 } else { i + 4 },
                points: xs(&t.errors),
            });
        }
        inf.series.push(Series {
            name: if one { String::new() } else { r.label.clone() },
            kind: Kind::Line,
            color: if one { 2 } else { i },
            points: xs(&t.in_flight),
        });
        if one {
            if let Some((a, b)) = r.warmup_s {
                tp.shaded.push((a, b, "warmup".into()));
                inf.shaded.push((a, b, "warmup".into()));
            }
        }
    }
    [tp, inf].into_iter().filter(|c| !c.is_empty()).collect()
}

/// Send lag (how late each request left against its schedule) over time: open loop only.
pub fn send_lag_timeline(run: &RunData, model: &RunModel) -> Option<Chart> {
    if !model.open_loop {
        return None;
    }
    let mut c = Chart::new(
        "timeline_send_lag",
        "Send lag over time (how late requests left)",
        "request start (s since the first request)",
        "send lag (ms)",
    );
    let pts: Vec<(f64, f64)> = run
        .records
        .iter()
        .filter_map(|r| {
            r.send_lag_ms
                .map(|l| (r.start_ns.saturating_sub(model.origin_ns) as f64 / 1e9, l))
        })
        .collect();
    c.series.push(Series {
        name: String::new(),
        kind: Kind::Points,
        color: 4,
        points: downsample(&pts, SCATTER_BINS),
    });
    if let Some((a, b)) = model.warmup_s {
        c.shaded.push((a, b, "warmup".into()));
    }
    Some(c)
}

/// Errors by type (bars), one colour per run.
pub fn errors_chart(runs: &[&RunModel]) -> Option<Chart> {
    let kinds: Vec<String> = runs
        .iter()
        .flat_map(|r| r.errors_by_type.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let mut c = Chart::new("errors_by_type", "Errors by type", "", "requests");
    let w = 0.8 / runs.len() as f64;
    for (i, r) in runs.iter().enumerate() {
        c.series.push(Series {
            name: if runs.len() == 1 {
                String::new()
            } else {
                r.label.clone()
            },
            kind: Kind::Bars { width: w },
            color: if runs.len() == 1 { 1 } else { i },
            points: kinds
                .iter()
                .enumerate()
                .map(|(k, name)| {
                    (
                        k as f64 - 0.4 + i as f64 * w,
                        r.errors_by_type.get(name).copied().unwrap_or(0) as f64,
                    )
                })
                .collect(),
        });
    }
    c.categories = kinds;
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(start_ms: u64, dur_ms: u64, warmup: bool, err: bool) -> Rec {
        Rec {
            start_ns: start_ms * 1_000_000,
            end_ns: (start_ms + dur_ms) * 1_000_000,
            warmup,
            ttft_ms: (!err).then_some(dur_ms as f64 / 4.0),
            itl_ms: None,
            latency_ms: (!err).then_some(dur_ms as f64),
            send_lag_ms: None,
            error: err.then(|| "Boom".to_string()),
        }
    }

    #[test]
    fn percentiles_are_exact_over_every_value() {
        let d = Dist::of((1..=1000).map(f64::from).collect()).unwrap();
        assert_eq!(d.count, 1000);
        assert_eq!((d.min, d.max), (1.0, 1000.0));
        assert!((d.p50 - 500.5).abs() < 1e-9);
        assert!((d.p99 - 990.01).abs() < 1e-9);
        let h = d.histogram(1.0, 1000.0, 10);
        assert_eq!(h.iter().sum::<u64>(), 1000, "every value in a bin");
        let cdf = d.cdf(4);
        assert_eq!(cdf.first(), Some(&(1.0, 0.0)));
        assert_eq!(cdf.last(), Some(&(1000.0, 100.0)));
        assert!(Dist::of(vec![f64::NAN]).is_none());
    }

    #[test]
    fn downsampling_keeps_each_bins_extremes() {
        let pts: Vec<(f64, f64)> = (0..10_000).map(|i| (i as f64, (i % 97) as f64)).collect();
        let d = downsample(&pts, 100);
        assert!(d.len() <= 200);
        let max = d.iter().map(|p| p.1).fold(0.0, f64::max);
        assert_eq!(max, 96.0, "the outliers survive");
        assert!(d.windows(2).all(|w| w[0].0 <= w[1].0), "in time order");
        assert_eq!(downsample(&pts[..10], 100).len(), 10);
    }

    #[test]
    fn timeline_counts_every_request_once_and_the_warmup_is_spanned() {
        let mut recs = vec![rec(0, 100, true, false), rec(50, 100, true, false)];
        for i in 0..100 {
            recs.push(rec(200 + i * 10, 50, false, i % 10 == 0));
        }
        let run = RunData {
            dir: ".".into(),
            label: "r".into(),
            summary_file: "profile_export_aiperf.json".into(),
            summary: serde_json::json!({}),
            records: recs,
            has_records: true,
        };
        let m = RunModel::of(&run);
        let t = m.timeline.as_ref().unwrap();
        let done: f64 = t.throughput.iter().map(|v| v * t.interval_s).sum();
        let errs: f64 = t.errors.iter().map(|v| v * t.interval_s).sum();
        assert!((done - 92.0).abs() < 1e-6, "{done}");
        assert!((errs - 10.0).abs() < 1e-6, "{errs}");
        // Request-seconds in flight = the sum of the durations.
        let busy: f64 = t.in_flight.iter().map(|v| v * t.interval_s).sum();
        assert!((busy - (0.2 + 100.0 * 0.05)).abs() < 1e-6, "{busy}");
        assert_eq!(m.warmup_s, Some((0.0, 0.15)));
        assert_eq!(m.distributions["request_latency"].count, 90);
        assert_eq!(m.errors_by_type.get("Boom"), Some(&10));
        let charts = distribution_charts(&[&m], "request_latency", "Latency").unwrap();
        assert_eq!(charts[0].markers.len(), 3);
        assert!(distribution_charts(&[&m], "inter_token_latency", "ITL").is_none());
        assert!(
            send_lag_timeline(&run, &m).is_none(),
            "closed loop: no send lag"
        );
    }
}
