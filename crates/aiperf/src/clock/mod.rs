//! One monotonic clock for every interval; wall-clock time only to label records.
//!
//! A leaf: it imports nothing from the rest of the crate, so the transport, the exporters and
//! the mock server can take time without reaching into `timing`.

pub mod hires;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    origin_wall_ns: u64,
}

impl Clock {
    pub fn new() -> Self {
        let origin = Instant::now();
        let origin_wall_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self {
            origin,
            origin_wall_ns,
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
