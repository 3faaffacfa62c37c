//! Window math over scraped samples, for any window `[start_ns, end_ns)` of the run's clock.
//!
//! Samples are `(t_ns, value)` in time order, `t_ns` on the run's monotonic clock.
//!
//! - **Counters** (and histograms): the window's *reference* is the last sample at or before
//!   `start_ns` (else the first one inside), its *end* the first sample at or after `end_ns`
//!   (else the last one before it), so a scrape taken just before the phase and one just
//!   after it bound every event of the phase. The delta adds up the increases between
//!   consecutive samples, and a value that drops (the server restarted) counts from zero,
//!   as Prometheus' `increase()` does. The rate is the delta over the time between the
//!   reference and the end sample.
//! - **Gauges**: a step function (each sample holds until the next one), clipped to the
//!   window; avg and percentiles are weighted by how long each value held; min and max are
//!   over the values that held inside the window. NaN samples are left out.
//! - **Histograms**: the window's delta per bucket (end − reference, a reset counting from
//!   zero), and percentiles from them as Prometheus' `histogram_quantile` computes them.

use serde::Serialize;

/// A counter over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CounterStats {
    pub delta: f64,
    /// Per second, over the time between the two samples used.
    pub rate: Option<f64>,
    /// How many times the counter went down (a restart) in the window.
    pub resets: u32,
    pub samples: usize,
}

/// A gauge over a window, time-weighted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GaugeStats {
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    /// The value at the end of the window.
    pub last: f64,
    pub samples: usize,
}

/// A histogram over a window: its delta buckets and the percentiles derived from them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistogramStats {
    pub count: f64,
    pub sum: f64,
    /// `sum / count`; `None` without observations.
    pub avg: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    /// Cumulative delta counts per upper bound (`+Inf` last).
    #[serde(serialize_with = "ser_buckets")]
    pub buckets: Vec<(f64, f64)>,
    pub samples: usize,
}

fn ser_buckets<S: serde::Serializer>(b: &[(f64, f64)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(b.len()))?;
    for (le, n) in b {
        m.serialize_entry(&format_le(*le), n)?;
    }
    m.end()
}

/// An upper bound as Prometheus writes it (`+Inf`, `0.5`).
pub fn format_le(le: f64) -> String {
    if le == f64::INFINITY {
        "+Inf".to_string()
    } else {
        format!("{le}")
    }
}

/// Where a window's reference sample is, relative to its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The last sample at or before the start (a phase: the scrape just before it began).
    LastBefore,
    /// The first sample at or after the start: the end sample of the window before it, so
    /// adjacent windows (time slices) share their boundary sample and their deltas add up
    /// to the whole one's.
    FirstAfter,
}

/// Indices of the reference sample and the end sample (the first at or after the end) for
/// a cumulative series.
fn bounds<T>(points: &[(u64, T)], start: u64, end: u64, at: StartAt) -> Option<(usize, usize)> {
    if points.is_empty() {
        return None;
    }
    let from = match at {
        StartAt::LastBefore => points.partition_point(|p| p.0 <= start).saturating_sub(1),
        StartAt::FirstAfter => points
            .partition_point(|p| p.0 < start)
            .min(points.len() - 1),
    };
    let at_end = points.partition_point(|p| p.0 < end);
    let to = at_end.min(points.len() - 1);
    (to >= from).then_some((from, to))
}

/// A counter's delta and rate over `[start, end)`; `None` without samples.
pub fn counter(points: &[(u64, f64)], start: u64, end: u64, at: StartAt) -> Option<CounterStats> {
    let (from, to) = bounds(points, start, end, at)?;
    let mut delta = 0.0;
    let mut resets = 0;
    let mut prev = points[from].1;
    for p in &points[from + 1..=to] {
        let v = p.1;
        if v.is_nan() {
            continue;
        }
        if prev.is_nan() {
            prev = v;
            continue;
        }
        if v < prev {
            resets += 1;
            delta += v;
        } else {
            delta += v - prev;
        }
        prev = v;
    }
    let span = points[to].0.saturating_sub(points[from].0);
    Some(CounterStats {
        delta,
        rate: (span > 0).then(|| delta / (span as f64 / 1e9)),
        resets,
        samples: to - from + 1,
    })
}

/// A gauge over `[start, end)`, time-weighted; `None` without a value in the window.
pub fn gauge(points: &[(u64, f64)], start: u64, end: u64) -> Option<GaugeStats> {
    if end <= start {
        return None;
    }
    // (value, weight in ns) of each step that overlaps the window.
    let mut steps: Vec<(f64, f64)> = Vec::new();
    let mut samples = 0;
    for (i, &(t, v)) in points.iter().enumerate() {
        let next = points.get(i + 1).map_or(end, |p| p.0.min(end));
        let from = t.max(start);
        if t < end && next > start {
            samples += usize::from(t >= start);
        }
        if v.is_nan() || next <= from {
            continue;
        }
        steps.push((v, (next - from) as f64));
    }
    // A window that ends before the next sample, or a single sample inside it: the last
    // value before the end holds.
    if steps.is_empty() {
        let last = points.iter().rev().find(|p| p.0 < end && !p.1.is_nan())?;
        steps.push((last.1, 1.0));
    }
    let total: f64 = steps.iter().map(|s| s.1).sum();
    let avg = steps.iter().map(|s| s.0 * s.1).sum::<f64>() / total;
    let min = steps.iter().map(|s| s.0).fold(f64::INFINITY, f64::min);
    let max = steps.iter().map(|s| s.0).fold(f64::NEG_INFINITY, f64::max);
    let last = steps.last().map_or(f64::NAN, |s| s.0);
    let mut sorted = steps.clone();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let q = |q: f64| weighted_quantile(&sorted, total, q);
    Some(GaugeStats {
        avg,
        min,
        max,
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        last,
        samples,
    })
}

/// The smallest value whose cumulative weight reaches `q` of the total.
fn weighted_quantile(sorted: &[(f64, f64)], total: f64, q: f64) -> f64 {
    let target = q * total;
    let mut acc = 0.0;
    for (v, w) in sorted {
        acc += w;
        if acc >= target {
            return *v;
        }
    }
    sorted.last().map_or(f64::NAN, |s| s.0)
}

/// One histogram scrape: cumulative buckets (same bounds at every sample), sum, count.
#[derive(Debug, Clone, PartialEq)]
pub struct HistPoint {
    pub buckets: Vec<f64>,
    pub sum: f64,
    pub count: f64,
}

/// A histogram over `[start, end)`: delta buckets for the bounds `les`.
pub fn histogram(
    les: &[f64],
    points: &[(u64, HistPoint)],
    start: u64,
    end: u64,
    at: StartAt,
) -> Option<HistogramStats> {
    let (from, to) = bounds(points, start, end, at)?;
    let (a, b) = (&points[from].1, &points[to].1);
    let reset = b.count < a.count;
    let base = |x: f64| if reset { 0.0 } else { x };
    let buckets: Vec<(f64, f64)> = les
        .iter()
        .enumerate()
        .map(|(i, le)| {
            let end_v = b.buckets.get(i).copied().unwrap_or(0.0);
            let start_v = base(a.buckets.get(i).copied().unwrap_or(0.0));
            (*le, (end_v - start_v).max(0.0))
        })
        .collect();
    let count = (b.count - base(a.count)).max(0.0);
    let sum = b.sum - base(a.sum);
    let q = |q| quantile(q, &buckets);
    Some(HistogramStats {
        count,
        sum,
        avg: (count > 0.0).then(|| sum / count),
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        buckets,
        samples: to - from + 1,
    })
}

/// Prometheus' `histogram_quantile` over cumulative buckets: the bucket holding the rank
/// `q × count`, linear interpolation inside it (from 0 for the first bucket when its bound
/// is positive); a rank in the `+Inf` bucket gives the largest finite bound. `None` without
/// observations or without a `+Inf` bucket.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let &(last_le, total) = buckets.last()?;
    if last_le != f64::INFINITY || total <= 0.0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    if buckets.len() < 2 {
        return None;
    }
    let rank = q * total;
    let i = buckets.iter().position(|b| b.1 >= rank)?;
    if i == buckets.len() - 1 {
        return Some(buckets[buckets.len() - 2].0);
    }
    let (upper, count_upper) = buckets[i];
    let (lower, count_lower) = if i == 0 {
        (if upper > 0.0 { 0.0 } else { upper }, 0.0)
    } else {
        buckets[i - 1]
    };
    let in_bucket = count_upper - count_lower;
    if in_bucket <= 0.0 {
        return Some(upper);
    }
    Some(lower + (upper - lower) * (rank - count_lower) / in_bucket)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn counter_delta_and_rate_use_the_samples_around_the_window() {
        // Samples every second; the window [1.5 s, 3.5 s).
        let pts = [
            (0, 10.0),
            (S, 12.0),
            (2 * S, 20.0),
            (3 * S, 26.0),
            (4 * S, 30.0),
            (5 * S, 31.0),
        ];
        let c = counter(&pts, S + S / 2, 3 * S + S / 2, StartAt::LastBefore).unwrap();
        // Reference: the sample at 1 s (12); end: the sample at 4 s (30).
        assert_eq!(c.delta, 18.0);
        assert_eq!(c.rate, Some(6.0));
        assert_eq!(c.samples, 4);
        assert_eq!(c.resets, 0);
        // A restart counts from zero.
        let pts = [(0, 100.0), (S, 110.0), (2 * S, 5.0), (3 * S, 9.0)];
        let c = counter(&pts, 0, 3 * S, StartAt::LastBefore).unwrap();
        assert_eq!(c.delta, 10.0 + 5.0 + 4.0);
        assert_eq!(c.resets, 1);
        assert!(counter(&[], 0, S, StartAt::LastBefore).is_none());
        // One sample: no rate.
        let c = counter(&[(S, 3.0)], 0, 2 * S, StartAt::LastBefore).unwrap();
        assert_eq!((c.delta, c.rate), (0.0, None));
    }

    #[test]
    fn gauge_is_time_weighted_and_clipped_to_the_window() {
        // 0 from 0 s, 10 from 1 s, 4 from 3 s; window [0.5 s, 4 s).
        let pts = [(0, 0.0), (S, 10.0), (3 * S, 4.0)];
        let g = gauge(&pts, S / 2, 4 * S).unwrap();
        // 0 for 0.5 s, 10 for 2 s, 4 for 1 s: (0 + 20 + 4) / 3.5.
        assert!((g.avg - 24.0 / 3.5).abs() < 1e-12, "{}", g.avg);
        assert_eq!((g.min, g.max, g.last), (0.0, 10.0, 4.0));
        // Weights sorted: 0 (0.5), 4 (1), 10 (2): p50 is reached in the 10s.
        assert_eq!(g.p50, 10.0);
        assert_eq!(g.p99, 10.0);
        let g = gauge(&pts, 3 * S + 1, 3 * S + 2).unwrap();
        assert_eq!((g.avg, g.min, g.max), (4.0, 4.0, 4.0));
        // NaN samples are left out; a window before every sample has no value.
        let pts = [(0, f64::NAN), (S, 2.0)];
        let g = gauge(&pts, 0, 2 * S).unwrap();
        assert_eq!(g.avg, 2.0);
        assert!(gauge(&[(5 * S, 1.0)], 0, S).is_none());
        assert!(gauge(&pts, S, S).is_none());
    }

    #[test]
    fn histogram_quantile_interpolates_like_prometheus() {
        let b = [(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (f64::INFINITY, 40.0)];
        // rank 20: in (0.1, 0.5], 10 of 20 there: 0.1 + 0.4 × 10/20.
        assert!((quantile(0.5, &b).unwrap() - 0.3).abs() < 1e-12);
        // rank 4: first bucket, from 0: 0.1 × 4/10.
        assert!((quantile(0.1, &b).unwrap() - 0.04).abs() < 1e-12);
        // rank 39.6: in (0.5, 1]: 0.5 + 0.5 × 9.6/10.
        assert!((quantile(0.99, &b).unwrap() - 0.98).abs() < 1e-12);
        // In the +Inf bucket: the largest finite bound.
        let b2 = [(0.1, 1.0), (f64::INFINITY, 10.0)];
        assert_eq!(quantile(0.9, &b2), Some(0.1));
        assert_eq!(quantile(0.5, &[(0.1, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(
            quantile(0.5, &[(0.1, 1.0), (1.0, 2.0)]),
            None,
            "no +Inf bucket"
        );
    }

    #[test]
    fn histogram_window_is_the_delta_of_its_buckets() {
        let les = [0.1, 1.0, f64::INFINITY];
        let p = |b: [f64; 3], sum: f64| HistPoint {
            buckets: b.to_vec(),
            sum,
            count: b[2],
        };
        let pts = [
            (0, p([1.0, 2.0, 2.0], 0.5)),
            (S, p([3.0, 6.0, 7.0], 4.0)),
            (2 * S, p([5.0, 12.0, 14.0], 10.0)),
        ];
        let h = histogram(&les, &pts, 0, 2 * S, StartAt::LastBefore).unwrap();
        assert_eq!(
            h.buckets,
            vec![(0.1, 4.0), (1.0, 10.0), (f64::INFINITY, 12.0)]
        );
        assert_eq!((h.count, h.sum), (12.0, 9.5));
        // rank 6 in (0.1, 1]: 0.1 + 0.9 × 2/6.
        assert!((h.p50.unwrap() - 0.4).abs() < 1e-12);
        assert_eq!(h.p99, Some(1.0), "rank 11.88 is in +Inf");
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json["buckets"]["+Inf"], 12.0);
        assert_eq!(json["buckets"]["0.1"], 4.0);
    }

    #[test]
    fn adjacent_windows_share_their_boundary_sample_and_add_up() {
        // A counter scraped every 0.3 s, rising by 1 a scrape; windows of 1 s from 0 to 3 s.
        let pts: Vec<(u64, f64)> = (0..=11).map(|i| (i * 3 * S / 10, i as f64)).collect();
        let whole = counter(&pts, 0, 3 * S, StartAt::LastBefore).unwrap().delta;
        let sliced: f64 = (0..3)
            .map(|k| {
                let at = if k == 0 {
                    StartAt::LastBefore
                } else {
                    StartAt::FirstAfter
                };
                counter(&pts, k * S, (k + 1) * S, at).unwrap().delta
            })
            .sum();
        assert_eq!(sliced, whole);
        // The outward rule at both ends would count the samples around 1 s and 2 s twice.
        let outward: f64 = (0..3)
            .map(|k| {
                counter(&pts, k * S, (k + 1) * S, StartAt::LastBefore)
                    .unwrap()
                    .delta
            })
            .sum();
        assert!(outward > whole, "{outward} vs {whole}");
    }
}
