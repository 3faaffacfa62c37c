//! Phases and their lifecycle, and the credits that decide what is sent when.
//!
//! A [`PhaseSpec`] says what bounds a phase and how it loads the server ([`PhaseLoad`]);
//! [`run_phase`] (in `phase.rs`) runs it CREATED → STARTED → SENDING_COMPLETE → COMPLETE and
//! emits the phase hooks to the [`HookRegistry`](crate::plugin::HookRegistry); it knows
//! nothing about which plugins exist.
//!
//! Two ways to load a server: closed loop (N workers, each sending its next request when the
//! last one finishes) and open loop (a scheduler sends on absolute deadlines at a target rate
//! or from a trace, optionally capped by a concurrency limit; a request held back by the cap
//! waits, and its send lag is recorded: nothing is dropped).

pub mod health;
mod phase;
pub mod schedule;
mod spec;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aiperf_plugin::PhaseStats;
use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::{hires, Clock};
pub use phase::run_phase;

use crate::dataset::Dataset;
use crate::metrics::processor::RecordSender;
use crate::metrics::{PhaseKind, RequestRecord};
use crate::transport::Transport;
pub use schedule::RequestRateMode;
pub use spec::{LoadSpec, FAILED_REQUEST_GRACE};

/// A fixed schedule: (offset from the phase start, dataset entry), in send order.
pub type Trace = Vec<(Duration, usize)>;

/// An open-loop request rate.
#[derive(Debug, Clone, PartialEq)]
pub struct RateSpec {
    pub rate: f64,
    pub mode: RequestRateMode,
    pub smoothness: f64,
    pub ramp: Option<Duration>,
    pub seed: u64,
}

/// An open-loop phase's cap on requests in flight: a request over it waits for a free slot
/// (it is late, never dropped). With `ramp`, the cap starts at 1 and grows by one at each
/// ramp·i/limit, as closed-loop workers would join.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConcurrencyCap {
    pub limit: usize,
    pub ramp: Option<Duration>,
}

/// How a phase loads the server.
#[derive(Debug, Clone, PartialEq)]
pub enum PhaseLoad {
    /// `concurrency` workers (never more than the request count), each sending its next
    /// request as soon as the last one finished; with `ramp`, worker i joins at ramp·i/N.
    ClosedLoop {
        concurrency: usize,
        ramp: Option<Duration>,
    },
    /// Open loop: requests leave on the offsets of an arrival process at a target rate.
    Rate {
        rate: RateSpec,
        cap: Option<ConcurrencyCap>,
    },
    /// Open loop: a fixed schedule says which dataset entry leaves when.
    Trace {
        trace: Arc<Trace>,
        cap: Option<ConcurrencyCap>,
    },
}

/// What bounds a phase and how it is loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseSpec {
    pub kind: PhaseKind,
    /// Requests (every turn of a conversation counts) after which the phase sends no more:
    /// conversations in flight stop after their current turn, no new one starts.
    pub request_count: Option<u64>,
    /// Conversations after which no new one starts; those started are sent whole.
    pub session_count: Option<u64>,
    pub duration: Option<Duration>,
    pub grace_period: Duration,
    pub load: PhaseLoad,
    /// (percent, delay): cancel that share of requests that long after sending.
    pub cancellation: Option<(f64, Duration)>,
    pub seed: u64,
}

/// A send more than this late counts as late.
pub const LATE_SEND_NS: u64 = 1_000_000;

/// Live counters of one phase, shared by its workers; the source of [`PhaseStats`].
#[derive(Debug)]
pub struct PhaseTracker {
    pub kind: PhaseKind,
    pub expected: Option<u64>,
    pub sent: AtomicU64,
    pub completed: AtomicU64,
    pub errors: AtomicU64,
    pub cancelled: AtomicU64,
    pub start_ns: AtomicU64,
    /// 0 until it happens.
    pub sending_complete_ns: AtomicU64,
    pub end_ns: AtomicU64,
    pub timed_out: AtomicBool,
    pub late_sends: AtomicU64,
    /// Largest send lag in ns, plus one (0: no scheduled request yet).
    pub max_send_lag_ns: AtomicU64,
    clock: Clock,
}

impl PhaseTracker {
    pub fn new(kind: PhaseKind, expected: Option<u64>, clock: Clock) -> Self {
        Self {
            kind,
            expected,
            sent: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            start_ns: AtomicU64::new(0),
            sending_complete_ns: AtomicU64::new(0),
            end_ns: AtomicU64::new(0),
            timed_out: AtomicBool::new(false),
            late_sends: AtomicU64::new(0),
            max_send_lag_ns: AtomicU64::new(0),
            clock,
        }
    }

    /// Counts a finished request: its outcome and, if it had a schedule, its send lag.
    fn count(&self, rec: &RequestRecord) {
        if let Some(s) = rec.scheduled_ns {
            let lag = rec.start_ns.saturating_sub(s);
            if lag > LATE_SEND_NS {
                self.late_sends.fetch_add(1, Ordering::AcqRel);
            }
            self.max_send_lag_ns.fetch_max(lag + 1, Ordering::AcqRel);
        }
        if rec.cancelled {
            self.cancelled.fetch_add(1, Ordering::AcqRel);
        } else {
            if rec.error.is_some() {
                self.errors.fetch_add(1, Ordering::AcqRel);
            }
            self.completed.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The seed's `tracker.create_stats()`.
    pub fn stats(&self) -> PhaseStats {
        let ld = |a: &AtomicU64| a.load(Ordering::Acquire);
        let (sent, completed, cancelled) =
            (ld(&self.sent), ld(&self.completed), ld(&self.cancelled));
        let start = ld(&self.start_ns);
        let end = ld(&self.end_ns);
        let sc = ld(&self.sending_complete_ns);
        let now = if end > 0 { end } else { self.clock.now_ns() };
        let opt = |v: u64| (v > 0).then(|| self.clock.wall_ns(v));
        PhaseStats {
            phase: self.kind.as_str().to_string(),
            sent,
            completed,
            errors: ld(&self.errors),
            cancelled,
            in_flight: sent.saturating_sub(completed + cancelled),
            expected: self.expected,
            duration_sec: now.saturating_sub(start) as f64 / 1e9,
            start_time_ns: self.clock.wall_ns(start),
            sending_complete_time_ns: opt(sc),
            end_time_ns: opt(end),
            timed_out: self.timed_out.load(Ordering::Acquire),
            late_sends: ld(&self.late_sends),
            max_send_lag_ms: match ld(&self.max_send_lag_ns) {
                0 => None,
                v => Some((v - 1) as f64 / 1e6),
            },
        }
    }
}

/// How a phase sends one request, and waits for an open-loop request's deadline.
/// [`Transport`] is the real one; the unit tests use a fake that answers in tokio's virtual
/// time.
pub trait RequestSender: Send + Sync + 'static {
    /// How many base URLs requests go to (round robin by request index).
    fn url_count(&self) -> usize;

    /// Sends `body` and fills the record's timestamps (`start_ns` as it leaves), text, usage
    /// or error. A request cancelled by `cancel`, or `cancel_after` after it was sent, is
    /// marked `cancelled` (error 499).
    fn send(
        &self,
        rec: &mut RequestRecord,
        body: Bytes,
        cancel: &CancellationToken,
        cancel_after: Option<Duration>,
    ) -> impl Future<Output = ()> + Send;

    /// Waits until an open-loop request's deadline: to the sub-millisecond by default
    /// ([`hires::sleep_until`], whose last 2 ms run on an OS thread). A sender living in
    /// tokio's paused test clock waits on tokio's timer instead, which that clock drives.
    fn sleep_until(deadline: Instant) -> impl Future<Output = ()> + Send {
        hires::sleep_until(deadline.into_std())
    }
}

impl RequestSender for Transport {
    fn url_count(&self) -> usize {
        Transport::url_count(self)
    }

    fn send(
        &self,
        rec: &mut RequestRecord,
        body: Bytes,
        cancel: &CancellationToken,
        cancel_after: Option<Duration>,
    ) -> impl Future<Output = ()> + Send {
        Transport::send(self, rec, body, cancel, cancel_after)
    }
}

/// Everything the workers of a run share.
pub struct RunContext<S = Transport> {
    pub clock: Clock,
    pub transport: S,
    pub dataset: Dataset,
    pub streaming: bool,
    pub records: RecordSender,
    /// Global request index (AIPerf's `session_num`), across phases.
    pub next_request: AtomicU64,
    /// Ctrl-C: stop sending new requests.
    pub stop_sending: CancellationToken,
    /// Cancel requests still in flight.
    pub cancel_in_flight: CancellationToken,
    /// `--shard`: which arrivals, trace entries and conversations are this process's.
    pub shard: Option<crate::shard::Shard>,
    /// `--start-at` (Unix ns): the first phase waits for it.
    pub start_at_wall_ns: Option<u64>,
    /// `--start-at` as an instant: the first open-loop phase's time zero (taken once).
    pub start_at: std::sync::Mutex<Option<Instant>>,
}
