//! One monotonic clock for every interval; wall-clock time only to label records.
//!
//! A leaf: it imports nothing from the rest of the crate, so the transport, the exporters and
//! the mock server can take time without reaching into `timing`.

pub mod hires;
pub mod kernel;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    origin_wall_ns: u64,
}

impl Clock {
    /// The origin is now; its wall-clock time is read between two monotonic readings, and
    /// read again (a few times at most) when those are more than 20 µs apart (the thread was
    /// preempted in between), so the mapping between the two clocks is tight: processes
    /// agreeing on a wall-clock time (`--start-at`) agree on it to within that.
    pub fn new() -> Self {
        let wall = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        };
        let mut best: Option<(u64, Instant, u64)> = None;
        for _ in 0..8 {
            let a = Instant::now();
            let w = wall();
            let b = Instant::now();
            let gap = b.saturating_duration_since(a).as_nanos() as u64;
            if best.is_none_or(|(g, _, _)| gap < g) {
                // The wall reading belongs to the middle of the two monotonic ones.
                best = Some((gap, a + (b - a) / 2, w));
            }
            if gap <= 20_000 {
                break;
            }
        }
        let (_, origin, origin_wall_ns) = best.unwrap_or_else(|| (0, Instant::now(), wall()));
        Self {
            origin,
            origin_wall_ns,
        }
    }

    /// A clock whose origin is no later than the wall-clock time `wall_ns` (a `--start-at`
    /// already past), so that times from then on, a late schedule's deadlines included, are
    /// on it; [`Clock::new`] when `wall_ns` is not past or lies before this machine's boot.
    pub fn covering(wall_ns: u64) -> Self {
        let now = Self::new();
        let back = now.origin_wall_ns.saturating_sub(wall_ns);
        match now
            .origin
            .checked_sub(std::time::Duration::from_nanos(back))
        {
            Some(origin) if back > 0 => Self {
                origin,
                origin_wall_ns: now.origin_wall_ns - back,
            },
            _ => now,
        }
    }

    /// Monotonic nanoseconds since the clock was made.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    pub fn instant_ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.origin).as_nanos() as u64
    }

    pub fn instant_at(&self, ns: u64) -> Instant {
        self.origin + std::time::Duration::from_nanos(ns)
    }

    /// Wall-clock nanoseconds since the Unix epoch for a monotonic timestamp.
    pub fn wall_ns(&self, mono_ns: u64) -> u64 {
        self.origin_wall_ns + mono_ns
    }

    /// ISO 8601 (local-free, UTC) label for a monotonic timestamp.
    pub fn iso(&self, mono_ns: u64) -> String {
        let ns = self.wall_ns(mono_ns);
        chrono::DateTime::from_timestamp((ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as u32)
            .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.6f").to_string())
            .unwrap_or_default()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_covering_a_past_time_starts_before_it() {
        let now = Clock::new();
        let past = now.wall_ns(0) - 2_000_000_000;
        let c = Clock::covering(past);
        // The past time is on the new clock (mono ns ≥ 0), about 2 s before now.
        assert!(c.wall_ns(0) <= past);
        let elapsed = c.now_ns();
        assert!(elapsed >= 2_000_000_000, "{elapsed}");
        // A future time leaves the clock as it is.
        let f = Clock::covering(now.wall_ns(0) + 5_000_000_000);
        assert!(f.now_ns() < 1_000_000_000);
    }
}
