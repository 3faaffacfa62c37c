//! A mergeable summary of a phase's per-request values, for runs too large to keep their
//! records: per metric, an HDR histogram (3 significant digits) plus the exact count, sum,
//! sum of squares, min and max. Shards write it (`<summary>_hdr.json`); `aiperf merge`
//! adds them up when a shard has no `profile_export.jsonl`.
//!
//! Error bound: the count, mean, min, max and standard deviation are exact (up to floating
//! point); a percentile is a value of the merged distribution at the percentile's rank
//! (nearest rank, not numpy's interpolation between the two ranks around it), within 1 part
//! in 1,000 of it (values are bucketed to 3 significant digits, at a resolution of 0.001 of
//! the metric's unit), and never outside [min, max].

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::Stats;

/// Significant decimal digits the buckets keep.
pub const SIGFIG: u8 = 3;
/// Values are recorded as integers of 1/SCALE of their unit (µs for ms).
pub const SCALE: f64 = 1000.0;

/// One metric's values, summarised so that summaries of parts add up to the whole's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricHdr {
    pub count: u64,
    pub sum: f64,
    pub sum_sq: f64,
    pub min: f64,
    pub max: f64,
    /// (bucket value in 1/SCALE units, count), ascending: the histogram's recorded buckets.
    pub buckets: Vec<(u64, u64)>,
}

fn histogram() -> Option<Histogram<u64>> {
    let mut h = Histogram::<u64>::new(SIGFIG).ok()?;
    h.auto(true);
    Some(h)
}

fn scaled(v: f64) -> u64 {
    // Negative values (a send lag of a request sent early) count as 0: the exact min keeps them.
    (v * SCALE).round().clamp(0.0, u64::MAX as f64 / 4.0) as u64
}

impl MetricHdr {
    /// The summary of `values` (finite ones); `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut h = histogram()?;
        let (mut count, mut sum, mut sum_sq) = (0u64, 0.0, 0.0);
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for &v in values.iter().filter(|v| v.is_finite()) {
            h.record(scaled(v)).ok()?;
            count += 1;
            sum += v;
            sum_sq += v * v;
            min = min.min(v);
            max = max.max(v);
        }
        (count > 0).then(|| MetricHdr {
            count,
            sum,
            sum_sq,
            min,
            max,
            buckets: h
                .iter_recorded()
                .map(|b| (b.value_iterated_to(), b.count_at_value()))
                .collect(),
        })
    }

    /// Adds `other`'s values to these.
    pub fn merge(&mut self, other: &MetricHdr) {
        self.count += other.count;
        self.sum += other.sum;
        self.sum_sq += other.sum_sq;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        let mut all: BTreeMap<u64, u64> = self.buckets.iter().copied().collect();
        for &(v, c) in &other.buckets {
            *all.entry(v).or_insert(0) += c;
        }
        self.buckets = all.into_iter().collect();
    }

    /// The statistics a run reports, from the summary (see the module's error bound).
    pub fn stats(&self) -> Option<Stats> {
        if self.count == 0 {
            return None;
        }
        let mut h = histogram()?;
        for &(v, c) in &self.buckets {
            h.record_n(v, c).ok()?;
        }
        let n = self.count as f64;
        let avg = self.sum / n;
        // The population variance, as a run's (numpy's default).
        let var = ((self.sum_sq - n * avg * avg) / n).max(0.0);
        let q = |p: f64| {
            let v = h.value_at_quantile(p / 100.0) as f64 / SCALE;
            v.clamp(self.min, self.max)
        };
        Some(Stats {
            avg,
            min: self.min,
            max: self.max,
            std: var.sqrt(),
            p1: q(1.0),
            p5: q(5.0),
            p10: q(10.0),
            p25: q(25.0),
            p50: q(50.0),
            p75: q(75.0),
            p90: q(90.0),
            p95: q(95.0),
            p99: q(99.0),
            count: self.count,
            sum: self.sum,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(v: &mut [f64]) -> Stats {
        Stats::compute(v).unwrap()
    }

    /// Parts merged give the whole's summary; its statistics are within the documented bound
    /// of the exact ones.
    #[test]
    fn parts_merge_into_the_whole_within_the_error_bound() {
        let all: Vec<f64> = (0..20_000)
            .map(|i| 5.0 + ((i * 7919) % 10_000) as f64 / 37.0 + (i % 3) as f64 * 0.001)
            .collect();
        let mut merged = MetricHdr::of(&all[..7_000]).unwrap();
        merged.merge(&MetricHdr::of(&all[7_000..15_000]).unwrap());
        merged.merge(&MetricHdr::of(&all[15_000..]).unwrap());
        let whole = MetricHdr::of(&all).unwrap();
        assert_eq!(merged.buckets, whole.buckets);
        assert_eq!(merged.count, 20_000);
        let s = merged.stats().unwrap();
        let e = exact(&mut all.clone());
        assert_eq!((s.min, s.max, s.count), (e.min, e.max, e.count));
        assert!((s.avg - e.avg).abs() < 1e-9 * e.avg);
        assert!((s.std - e.std).abs() < 1e-6 * e.std, "{} {}", s.std, e.std);
        let mut sorted = all.clone();
        sorted.sort_by(f64::total_cmp);
        for (p, got) in [(50.0, s.p50), (90.0, s.p90), (99.0, s.p99), (1.0, s.p1)] {
            // Within 0.1 % of a value of the distribution at (or next to) the rank.
            let rank = ((p / 100.0) * (sorted.len() - 1) as f64) as usize;
            let near = &sorted[rank.saturating_sub(2)..(rank + 3).min(sorted.len())];
            let ok = near.iter().any(|v| (got - v).abs() <= 1e-3 * v + 1e-3);
            assert!(ok, "p{p}: {got} not within 0.1 % of {near:?}");
        }
    }

    #[test]
    fn nothing_to_summarise_and_odd_values() {
        assert!(MetricHdr::of(&[]).is_none());
        assert!(MetricHdr::of(&[f64::NAN, f64::INFINITY]).is_none());
        let h = MetricHdr::of(&[-0.5, 0.0, 1e12]).unwrap();
        let s = h.stats().unwrap();
        assert_eq!((s.min, s.max, s.count), (-0.5, 1e12, 3));
        assert!(s.p50 >= s.min && s.p99 <= s.max);
    }
}
