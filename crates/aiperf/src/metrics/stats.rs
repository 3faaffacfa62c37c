//! Summary statistics over a metric's values: numpy-style linear percentiles, population std.

use serde::Serialize;

/// The percentiles every per-request metric reports.
pub const PERCENTILES: [(u8, &str); 9] = [
    (1, "p1"),
    (5, "p5"),
    (10, "p10"),
    (25, "p25"),
    (50, "p50"),
    (75, "p75"),
    (90, "p90"),
    (95, "p95"),
    (99, "p99"),
];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    pub std: f64,
    pub p1: f64,
    pub p5: f64,
    pub p10: f64,
    pub p25: f64,
    pub p50: f64,
    pub p75: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub count: u64,
    pub sum: f64,
}

impl Stats {
    /// Computes the statistics, sorting `values` in place. `None` when there are no values.
    pub fn compute(values: &mut [f64]) -> Option<Stats> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable_by(f64::total_cmp);
        let n = values.len() as f64;
        let sum: f64 = values.iter().sum();
        let avg = sum / n;
        let var = values.iter().map(|v| (v - avg) * (v - avg)).sum::<f64>() / n;
        let p = |q: f64| percentile_sorted(values, q);
        Some(Stats {
            avg,
            min: values[0],
            max: values[values.len() - 1],
            std: var.sqrt(),
            p1: p(1.0),
            p5: p(5.0),
            p10: p(10.0),
            p25: p(25.0),
            p50: p(50.0),
            p75: p(75.0),
            p90: p(90.0),
            p95: p(95.0),
            p99: p(99.0),
            count: values.len() as u64,
            sum,
        })
    }

    pub fn percentile(&self, p: u8) -> f64 {
        match p {
            1 => self.p1,
            5 => self.p5,
            10 => self.p10,
            25 => self.p25,
            50 => self.p50,
            75 => self.p75,
            90 => self.p90,
            95 => self.p95,
            _ => self.p99,
        }
    }
}

/// The q-th percentile (0..=100) of sorted values: index `q/100 * (n-1)`, interpolated
/// linearly between its neighbours (numpy's default "linear" method).
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    assert!(!sorted.is_empty());
    let rank = q / 100.0 * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = rank - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hand_computed_percentiles() {
        // values 1..=10: rank for p90 = 0.9 * 9 = 8.1 -> 9 + 0.1 * (10 - 9) = 9.1
        let mut v: Vec<f64> = (1..=10).map(f64::from).collect();
        let s = Stats::compute(&mut v).unwrap();
        assert!((s.p90 - 9.1).abs() < 1e-12);
        assert!((s.p50 - 5.5).abs() < 1e-12);
        assert!((s.p99 - 9.91).abs() < 1e-12);
        assert!((s.p1 - 1.09).abs() < 1e-12);
        assert!((s.p25 - 3.25).abs() < 1e-12);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.max, 10.0);
        assert_eq!(s.avg, 5.5);
        assert_eq!(s.sum, 55.0);
        assert_eq!(s.count, 10);
        // population variance of 1..=10 is (n^2 - 1) / 12 = 8.25
        assert!((s.std - 8.25f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn unsorted_input_and_small_sets() {
        let mut v = vec![4.0, 1.0, 3.0];
        let s = Stats::compute(&mut v).unwrap();
        // sorted 1,3,4: p75 rank 1.5 -> 3.5; p10 rank 0.2 -> 1.4
        assert!((s.p75 - 3.5).abs() < 1e-12);
        assert!((s.p10 - 1.4).abs() < 1e-12);
        // mean 8/3, population variance ((5/3)^2 + (1/3)^2 + (4/3)^2) / 3 = 42/27
        assert!((s.std - (42.0f64 / 27.0).sqrt()).abs() < 1e-12);
        let one = Stats::compute(&mut [7.0]).unwrap();
        assert_eq!((one.p1, one.p99, one.std), (7.0, 7.0, 0.0));
        assert!(Stats::compute(&mut []).is_none());
    }

    proptest! {
        #[test]
        fn percentiles_are_monotonic_and_bounded(mut v in prop::collection::vec(-1e6f64..1e6, 1..200)) {
            let s = Stats::compute(&mut v).unwrap();
            let ps = [s.min, s.p1, s.p5, s.p10, s.p25, s.p50, s.p75, s.p90, s.p95, s.p99, s.max];
            for w in ps.windows(2) {
                prop_assert!(w[0] <= w[1] + 1e-9);
            }
            prop_assert!(s.std >= 0.0);
            prop_assert!(s.avg >= s.min - 1e-9 && s.avg <= s.max + 1e-9);
        }
    }
}
