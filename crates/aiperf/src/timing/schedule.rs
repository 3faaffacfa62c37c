//! When each request of an open-loop phase should leave: offsets from the phase start for a
//! constant, Poisson or gamma arrival process, optionally ramped up linearly.
//!
//! Offsets are absolute (request i goes at `t0 + offset_i`), so a late send never pushes the
//! rest of the schedule back.
//!
//! Nothing here can panic or wait forever: the rate and smoothness are kept within the
//! bounds their flags are parsed with (`crate::units`), a gap that is not a finite number
//! counts as the mean gap, and offsets saturate at `units::MAX_SECONDS`.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Exp, Gamma};

use crate::units::{self, MAX_RATE, MAX_SMOOTHNESS, MIN_RATE, MIN_SMOOTHNESS};

/// Arrival process of an open-loop phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestRateMode {
    Constant,
    Poisson,
    Gamma,
}

/// Generates send offsets for a target rate.
pub struct Schedule {
    rate: f64,
    gaps: Gaps,
    rng: StdRng,
    /// Cumulative time of the unramped process, in seconds.
    u: f64,
    ramp: Option<f64>,
    first: bool,
}

enum Gaps {
    Constant,
    Exponential(Exp<f64>),
    Gamma(Gamma<f64>),
}

impl Schedule {
    pub fn new(
        rate: f64,
        mode: RequestRateMode,
        smoothness: f64,
        ramp: Option<Duration>,
        seed: u64,
    ) -> Self {
        // The flags' bounds (NaN becomes the lower one).
        let within = |v: f64, lo: f64, hi: f64| if v.is_nan() { lo } else { v.clamp(lo, hi) };
        let rate = within(rate, MIN_RATE, MAX_RATE);
        let smoothness = within(smoothness, MIN_SMOOTHNESS, MAX_SMOOTHNESS);
        let gaps = match mode {
            RequestRateMode::Constant => None,
            RequestRateMode::Poisson => Exp::new(rate).ok().map(Gaps::Exponential),
            // shape k, scale 1/(k r): mean gap 1/r, coefficient of variation 1/sqrt(k).
            RequestRateMode::Gamma => Gamma::new(smoothness, 1.0 / (smoothness * rate))
                .ok()
                .map(Gaps::Gamma),
        };
        Self {
            rate,
            gaps: gaps.unwrap_or(Gaps::Constant),
            rng: StdRng::seed_from_u64(seed),
            u: 0.0,
            ramp: ramp.map(|d| d.as_secs_f64()).filter(|r| *r > 0.0),
            first: true,
        }
    }

    /// The next request's offset from the phase start.
    pub fn next_offset(&mut self) -> Duration {
        // The first request goes at once (as AIPerf does); later ones follow the gaps.
        if self.first {
            self.first = false;
        } else {
            let mean = 1.0 / self.rate;
            let gap = match &self.gaps {
                Gaps::Constant => mean,
                Gaps::Exponential(e) => e.sample(&mut self.rng),
                Gaps::Gamma(g) => g.sample(&mut self.rng),
            };
            let gap = if gap.is_finite() && gap >= 0.0 {
                gap
            } else {
                mean
            };
            // Past the longest offset there is nothing left to add (and `u` stays finite).
            self.u = (self.u + gap).min(units::MAX_SECONDS);
        }
        units::clamped_secs(self.ramped(self.u))
    }

    /// Maps time of the full-rate process onto a linear ramp of length T: the expected count
    /// by time t is r t² / 2T while ramping, then r T / 2 + r (t − T). Inverting it keeps the
    /// arrival process's shape while its rate grows linearly from 0.
    fn ramped(&self, u: f64) -> f64 {
        match self.ramp {
            None => u,
            Some(t) => {
                if u < t / 2.0 {
                    (2.0 * t * u).sqrt()
                } else {
                    t + (u - t / 2.0)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(s: &mut Schedule, n: usize) -> Vec<f64> {
        (0..n).map(|_| s.next_offset().as_secs_f64()).collect()
    }

    #[test]
    fn constant_rate_is_evenly_spaced() {
        let mut s = Schedule::new(500.0, RequestRateMode::Constant, 1.0, None, 1);
        let o = offsets(&mut s, 1001);
        assert_eq!(o[0], 0.0);
        assert!((o[1000] - 2.0).abs() < 1e-9);
        assert!((o[1] - 0.002).abs() < 1e-12);
    }

    #[test]
    fn poisson_mean_rate_and_cv() {
        let mut s = Schedule::new(500.0, RequestRateMode::Poisson, 1.0, None, 7);
        let o = offsets(&mut s, 50_001);
        let gaps: Vec<f64> = o.windows(2).map(|w| w[1] - w[0]).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let sd = (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64).sqrt();
        assert!(
            (1.0 / mean - 500.0).abs() < 500.0 * 0.02,
            "rate {}",
            1.0 / mean
        );
        assert!((sd / mean - 1.0).abs() < 0.03, "cv {}", sd / mean);
    }

    #[test]
    fn gamma_smoothness_lowers_cv() {
        let mut s = Schedule::new(100.0, RequestRateMode::Gamma, 4.0, None, 3);
        let o = offsets(&mut s, 20_001);
        let gaps: Vec<f64> = o.windows(2).map(|w| w[1] - w[0]).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let sd = (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64).sqrt();
        assert!((mean - 0.01).abs() < 0.0005, "mean gap {mean}");
        assert!((sd / mean - 0.5).abs() < 0.03, "cv {}", sd / mean);
    }

    #[test]
    fn ramp_starts_slow_and_reaches_the_rate() {
        // 100/s with a 2 s ramp: 100 requests arrive in the ramp, then 100/s.
        let mut s = Schedule::new(
            100.0,
            RequestRateMode::Constant,
            1.0,
            Some(Duration::from_secs(2)),
            1,
        );
        let o = offsets(&mut s, 301);
        let in_ramp = o.iter().filter(|t| **t < 2.0).count();
        assert!((99..=101).contains(&in_ramp), "{in_ramp}");
        assert!(
            o[1] > 0.1,
            "first gaps are long while the rate is low: {}",
            o[1]
        );
        assert!((o[300] - o[299] - 0.01).abs() < 1e-9);
        assert!(o.windows(2).all(|w| w[1] >= w[0]));
    }

    const MODES: [RequestRateMode; 3] = [
        RequestRateMode::Constant,
        RequestRateMode::Poisson,
        RequestRateMode::Gamma,
    ];

    /// Offsets are finite, ordered and at most `MAX_SECONDS`, at the rates the parser admits
    /// and at ones it does not.
    #[test]
    fn extreme_rates_give_bounded_ordered_offsets() {
        let max = Duration::from_secs_f64(units::MAX_SECONDS);
        for rate in [
            MIN_RATE,
            MAX_RATE,
            0.0,
            -1.0,
            1e-20,
            1e300,
            f64::NAN,
            f64::INFINITY,
        ] {
            for smoothness in [MIN_SMOOTHNESS, MAX_SMOOTHNESS, 1.0, 0.0, 1e-300, f64::NAN] {
                for mode in MODES {
                    for ramp in [None, Some(Duration::from_secs(10_000_000))] {
                        let mut s = Schedule::new(rate, mode, smoothness, ramp, 9);
                        let mut last = Duration::ZERO;
                        for _ in 0..2_000 {
                            let o = s.next_offset();
                            assert!(o >= last && o <= max, "{rate} {smoothness} {mode:?}: {o:?}");
                            last = o;
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_slowest_and_fastest_rates_keep_their_spacing() {
        let mut s = Schedule::new(MIN_RATE, RequestRateMode::Constant, 1.0, None, 1);
        let o = offsets(&mut s, 3);
        assert_eq!(o, vec![0.0, 1000.0, 2000.0]);
        // 10,001 gaps of 1000 s pass MAX_SECONDS: the offsets saturate there.
        let o = offsets(&mut s, 10_001);
        assert_eq!(o[9_997], units::MAX_SECONDS);
        assert_eq!(o[10_000], units::MAX_SECONDS);
        let mut s = Schedule::new(MAX_RATE, RequestRateMode::Constant, 1.0, None, 1);
        let o = offsets(&mut s, 1_000_001);
        assert!((o[1_000_000] - 0.1).abs() < 1e-6, "{}", o[1_000_000]);
        for mode in [RequestRateMode::Poisson, RequestRateMode::Gamma] {
            let mut s = Schedule::new(MAX_RATE, mode, MAX_SMOOTHNESS, None, 1);
            let o = offsets(&mut s, 100_001);
            assert!(
                (o[100_000] - 0.01).abs() < 0.001,
                "{mode:?}: {}",
                o[100_000]
            );
        }
    }
}
