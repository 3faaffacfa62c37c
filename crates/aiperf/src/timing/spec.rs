//! The `loadgen` section of the config: how hard and how long the server is loaded.

use std::time::Duration;

use serde::Serialize;

use super::schedule::RequestRateMode;
use crate::units::{opt_secs, secs};

/// The resolved load settings, serialized as the export's `input_config.loadgen`.
#[derive(Debug, Clone, Serialize)]
pub struct LoadSpec {
    /// In-flight cap; `None` with a request rate means no cap. Closed loop uses 1 if unset.
    pub concurrency: Option<usize>,
    pub request_rate: Option<f64>,
    pub request_rate_mode: RequestRateMode,
    pub arrival_smoothness: f64,
    #[serde(serialize_with = "opt_secs")]
    pub request_rate_ramp_duration: Option<Duration>,
    #[serde(serialize_with = "opt_secs")]
    pub concurrency_ramp_duration: Option<Duration>,
    /// Percent of requests cancelled `request_cancellation_delay` after sending; both are
    /// set or neither is.
    pub request_cancellation_rate: Option<f64>,
    #[serde(serialize_with = "opt_secs")]
    pub request_cancellation_delay: Option<Duration>,
    #[serde(serialize_with = "opt_secs")]
    pub warmup_duration: Option<Duration>,
    pub warmup_concurrency: Option<usize>,
    pub warmup_request_rate: Option<f64>,
    /// `--warmup-arrival-pattern` (default: `request_rate_mode`).
    pub warmup_request_rate_mode: Option<RequestRateMode>,
    #[serde(serialize_with = "opt_secs")]
    pub warmup_request_rate_ramp_duration: Option<Duration>,
    #[serde(serialize_with = "opt_secs")]
    pub warmup_concurrency_ramp_duration: Option<Duration>,
    /// Grace period of a timed warmup (default: `grace_period`).
    #[serde(serialize_with = "opt_secs")]
    pub warmup_grace_period: Option<Duration>,
    /// Profiling requests (each turn of a conversation is one); `None` with an input file:
    /// decided once it is loaded (a fixed schedule's entries, else 10), or with a duration
    /// or a conversation count.
    pub request_count: Option<u64>,
    /// Profiling conversations (`--conversation-num`): no new one starts after these.
    pub conversation_num: Option<u64>,
    #[serde(serialize_with = "opt_secs")]
    pub benchmark_duration: Option<Duration>,
    #[serde(rename = "benchmark_grace_period", serialize_with = "secs")]
    pub grace_period: Duration,
    pub warmup_request_count: u64,
    /// Stop sending once more than this share of the profiling phase's finished requests
    /// failed (checked from [`FAILED_REQUEST_GRACE`] or the concurrency, whichever is more).
    pub failed_request_threshold: Option<f64>,
    /// Warmup conversations (`--num-warmup-sessions`).
    pub warmup_num_sessions: Option<u64>,
}

/// Finished requests needed before `--failed-request-threshold` is checked (AIPerf's floor;
/// the concurrency, when larger, is the floor).
pub const FAILED_REQUEST_GRACE: u64 = 10;

impl LoadSpec {
    /// (percent, delay) for request cancellation, when it is on.
    pub fn cancellation(&self) -> Option<(f64, Duration)> {
        self.request_cancellation_rate
            .zip(self.request_cancellation_delay)
    }

    /// Whether a warmup phase runs before profiling.
    pub fn has_warmup(&self) -> bool {
        self.warmup_request_count > 0
            || self.warmup_duration.is_some()
            || self.warmup_num_sessions.is_some()
    }
}
