//! One run split across processes (docs/scale-out.md): `--shard I/N` says which part of the
//! run this process makes, `--run-id` names the run all parts belong to, `--start-at` when
//! they all begin. Pure arithmetic and parsing; it imports nothing of the crate.
//!
//! The split is deterministic, so the union of the shards is the run one process would have
//! made:
//! - counts (requests, conversations, warmup requests, closed-loop workers, an open-loop
//!   concurrency cap) split as evenly as possible, the remainder to the first shards
//!   ([`Shard::part`]);
//! - the single arrival schedule of a rate, and a trace's entries, are dealt round-robin:
//!   shard I takes arrivals (entries) I, I + N, I + 2N, … ([`Shard::owns`]);
//! - a shard's k-th conversation is the run's conversation k·N + I ([`Shard::global`]), so
//!   each shard sends the dataset entries the single run would have sent for those credits.

use std::fmt;

/// Most shards of one run.
pub const MAX_SHARDS: u32 = 4096;

/// Which part of a run this process makes: `index` of `count` (from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// This shard's part of `total` (requests, conversations, workers): `total / N`, plus one
    /// for the first `total % N` shards. The parts add up to `total`.
    pub fn part(&self, total: u64) -> u64 {
        let n = u64::from(self.count);
        total / n + u64::from(u64::from(self.index) < total % n)
    }

    /// The run-wide number of this shard's `local`-th arrival, entry or conversation.
    pub fn global(&self, local: u64) -> u64 {
        local
            .saturating_mul(u64::from(self.count))
            .saturating_add(u64::from(self.index))
    }

    /// Whether the run-wide arrival (or entry) `global` is this shard's.
    pub fn owns(&self, global: u64) -> bool {
        global % u64::from(self.count) == u64::from(self.index)
    }
}

/// `--shard I/N`: I from 0 to N − 1, N from 1 to [`MAX_SHARDS`].
pub fn parse_shard(s: &str) -> Result<Shard, String> {
    let usage =
        || format!("'{s}' is not a shard: expected I/N with 0 <= I < N <= {MAX_SHARDS}, e.g. 0/4");
    let (i, n) = s.trim().split_once('/').ok_or_else(usage)?;
    let index: u32 = i.trim().parse().map_err(|_| usage())?;
    let count: u32 = n.trim().parse().map_err(|_| usage())?;
    if count == 0 || count > MAX_SHARDS || index >= count {
        return Err(usage());
    }
    Ok(Shard { index, count })
}

/// `--run-id`: 1 to 128 characters of `[A-Za-z0-9._-]` (it names directories and
/// Kubernetes objects).
pub fn parse_run_id(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "'{s}' is not a run id: 1 to 128 letters, digits, '.', '_' or '-'"
        ))
    }
}

/// `--start-at`: an RFC 3339 time (`2026-12-02T10:00:00Z`, `…+01:00`, fractions allowed),
/// as Unix nanoseconds.
pub fn parse_start_at(s: &str) -> Result<u64, String> {
    let t = chrono::DateTime::parse_from_rfc3339(s.trim())
        .map_err(|e| format!("'{s}' is not an RFC 3339 time ({e}); e.g. 2026-12-02T10:00:00Z"))?;
    let ns = t
        .timestamp_nanos_opt()
        .filter(|&ns| ns > 0)
        .ok_or_else(|| format!("'{s}' is out of range (after 1970, before 2262)"))?;
    Ok(ns as u64)
}

/// The scale-out flags of one run.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ScaleSpec {
    pub shard: Option<Shard>,
    /// The id every shard of the run shares (the report's `benchmark_id` too); `None`: a new
    /// one per run.
    pub run_id: Option<String>,
    /// Unix ns at which the load starts (each shard waits for it).
    pub start_at_ns: Option<u64>,
    /// `--workers-max`: the most runtime worker threads (`None`: tokio's default).
    pub workers_max: Option<usize>,
}

impl ScaleSpec {
    /// The runtime's worker threads on a machine with `cores` cores: `--workers-max`, at
    /// most one per core; `None` without the flag (tokio's default: one per core, or
    /// `TOKIO_WORKER_THREADS`).
    pub fn worker_threads(&self, cores: usize) -> Option<usize> {
        self.workers_max.map(|n| n.clamp(1, cores.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_threads_are_capped_by_the_cores() {
        let spec = |workers_max| ScaleSpec {
            shard: None,
            run_id: None,
            start_at_ns: None,
            workers_max,
        };
        assert_eq!(spec(None).worker_threads(8), None, "tokio's default");
        assert_eq!(spec(Some(3)).worker_threads(8), Some(3));
        assert_eq!(spec(Some(4096)).worker_threads(8), Some(8));
        assert_eq!(spec(Some(0)).worker_threads(8), Some(1), "never none");
        assert_eq!(
            spec(Some(2)).worker_threads(0),
            Some(1),
            "a machine that says 0 cores gets one"
        );
    }

    #[test]
    fn parts_add_up_and_the_remainder_goes_first() {
        for n in 1..=9u32 {
            for total in [0u64, 1, 2, 7, 64, 100, 1001] {
                let parts: Vec<u64> = (0..n)
                    .map(|i| Shard { index: i, count: n }.part(total))
                    .collect();
                assert_eq!(parts.iter().sum::<u64>(), total, "{n} shards of {total}");
                assert!(parts.windows(2).all(|w| w[0] >= w[1] && w[0] - w[1] <= 1));
            }
        }
        assert_eq!(Shard { index: 0, count: 4 }.part(10), 3);
        assert_eq!(Shard { index: 2, count: 4 }.part(10), 2);
    }

    #[test]
    fn dealing_covers_every_arrival_exactly_once() {
        let n = 4;
        let mut seen = vec![0u32; 103];
        for i in 0..n {
            let s = Shard { index: i, count: n };
            // A shard's first part(total) arrivals are the run's arrivals below total it owns.
            for local in 0..s.part(103) {
                let g = s.global(local);
                assert!(s.owns(g));
                seen[g as usize] += 1;
            }
        }
        assert!(seen.iter().all(|&c| c == 1), "{seen:?}");
    }

    #[test]
    fn flags_are_checked() {
        assert_eq!(parse_shard("3/4"), Ok(Shard { index: 3, count: 4 }));
        assert_eq!(parse_shard(" 0 / 1 "), Ok(Shard { index: 0, count: 1 }));
        for bad in [
            "4/4", "0/0", "-1/4", "1", "a/b", "1/4/2", "0/5000", "NaN/4", "1.5/4", "",
        ] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
        assert!(parse_run_id("run-2026.12_02").is_ok());
        for bad in ["", "a b", "x/y", &"x".repeat(129)] {
            assert!(parse_run_id(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_start_at("1970-01-01T00:00:01.5Z"), Ok(1_500_000_000));
        assert_eq!(
            parse_start_at("2026-12-02T10:00:00+01:00"),
            parse_start_at("2026-12-02T09:00:00Z")
        );
        for bad in [
            "tomorrow",
            "2026-13-01T00:00:00Z",
            "1960-01-01T00:00:00Z",
            "9999-01-01T00:00:00Z",
            "",
        ] {
            assert!(parse_start_at(bad).is_err(), "{bad}");
        }
    }
}
