//! Time slices (`--slice-duration`): the profiling phase's requests split by when they
//! started, each slice summarised like a phase.
//!
//! As in AIPerf, a request belongs to the slice holding its start on the wall clock, and
//! slices are aligned on whole multiples of the duration since the Unix epoch (slice `k` is
//! `[k·d, (k+1)·d)`), so the first and last slices of a run are usually partial. Only slices
//! that hold a request are reported, in time order. Warmup requests are never sliced.
//!
//! The aggregator thread keeps one [`PhaseAccumulator`] per slice beside the phase's own:
//! the slices together hold as many values as the phase, so slicing at most doubles the
//! accumulators' memory, whatever the duration; without the flag nothing is kept or done.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{ErrorDetails, Goodput, PhaseAccumulator, PhaseSummary, RequestMetrics, RequestRecord};

/// How records are sliced: the duration, and the wall-clock time of the run clock's origin
/// (a record's `start_ns` is monotonic since that origin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slicing {
    pub duration_ns: u64,
    pub wall_origin_ns: u64,
}

impl Slicing {
    /// The index of the slice holding a request that started at `start_ns` (run clock).
    pub fn index(&self, start_ns: u64) -> u64 {
        self.wall_origin_ns.saturating_add(start_ns) / self.duration_ns.max(1)
    }
}

/// One slice's results.
#[derive(Debug, Clone)]
pub struct TimeSlice {
    /// The slice's window on the wall clock (Unix ns): `[start_ns, end_ns)`.
    pub start_ns: u64,
    pub end_ns: u64,
    pub summary: PhaseSummary,
}

/// The per-slice accumulators of one phase (kept by the aggregator thread).
pub struct Slicer {
    slicing: Slicing,
    goodput: Option<Arc<Goodput>>,
    slices: BTreeMap<u64, PhaseAccumulator>,
}

impl Slicer {
    pub fn new(slicing: Slicing, goodput: Option<Arc<Goodput>>) -> Self {
        Self {
            slicing,
            goodput,
            slices: BTreeMap::new(),
        }
    }

    fn slice(&mut self, start_ns: u64) -> &mut PhaseAccumulator {
        let k = self.slicing.index(start_ns);
        let goodput = &self.goodput;
        self.slices
            .entry(k)
            .or_insert_with(|| PhaseAccumulator::new(goodput.clone()))
    }

    pub fn add_success(&mut self, rec: &RequestRecord, m: &RequestMetrics) {
        self.slice(rec.start_ns).add_success(rec, m);
    }

    pub fn add_error(&mut self, rec: &RequestRecord, err: &ErrorDetails) {
        self.slice(rec.start_ns).add_error(rec, err);
    }

    /// Every slice holding a request, summarised, in time order.
    pub fn summarize(&mut self) -> Vec<TimeSlice> {
        let d = self.slicing.duration_ns.max(1);
        self.slices
            .iter_mut()
            .map(|(&k, acc)| TimeSlice {
                start_ns: k.saturating_mul(d),
                end_ns: k.saturating_add(1).saturating_mul(d),
                summary: acc.summarize(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_aligned_on_the_wall_clock() {
        let s = Slicing {
            duration_ns: 1_000,
            wall_origin_ns: 10_500,
        };
        // Run-clock 0 is wall 10_500: slice 10, which began before the run.
        assert_eq!(s.index(0), 10);
        assert_eq!(s.index(499), 10);
        assert_eq!(s.index(500), 11, "wall 11_000 starts slice 11");
        assert_eq!(s.index(1_499), 11);
        let huge = Slicing {
            duration_ns: 1,
            wall_origin_ns: u64::MAX,
        };
        assert_eq!(huge.index(5), u64::MAX, "saturates, never overflows");
    }
}
