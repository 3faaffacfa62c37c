//! Phases and their lifecycle, and the credits that decide what is sent when.
//!
//! The orchestrator runs each phase CREATED → STARTED → SENDING_COMPLETE → COMPLETE and emits
//! the phase hooks to the [`HookRegistry`]; it knows nothing about which plugins exist.

pub mod clock;
pub mod hires;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aiperf_plugin::{Hook, PhaseStats};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use clock::Clock;

use crate::dataset::Dataset;
use crate::metrics::processor::{ProcessorMsg, RecordSender};
use crate::metrics::{PhaseKind, RequestRecord};
use crate::plugin::HookRegistry;
use crate::transport::Transport;

/// What bounds a phase and how it is loaded.
#[derive(Debug, Clone)]
pub struct PhaseSpec {
    pub kind: PhaseKind,
    pub request_count: Option<u64>,
    pub duration: Option<Duration>,
    pub grace_period: Duration,
    pub concurrency: usize,
}

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
            clock,
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
        }
    }
}

/// Everything the workers of a run share.
pub struct RunContext {
    pub clock: Clock,
    pub transport: Transport,
    pub dataset: Dataset,
    pub streaming: bool,
    pub records: RecordSender,
    /// Global request index (AIPerf's `session_num`), across phases.
    pub next_request: AtomicU64,
    /// Ctrl-C: stop sending new requests.
    pub stop_sending: CancellationToken,
    /// Cancel requests still in flight.
    pub cancel_in_flight: CancellationToken,
}

/// Per-phase state the workers consult for credits.
struct PhaseRun {
    spec: PhaseSpec,
    tracker: Arc<PhaseTracker>,
    /// Credits handed out in this phase.
    issued: AtomicU64,
    stop: CancellationToken,
    sending_done: Notify,
    sending_done_flag: AtomicBool,
    cancel: CancellationToken,
}

impl PhaseRun {
    /// Claims the next credit, or `None` when the phase sends no more.
    fn next_credit(&self) -> Option<u64> {
        if self.stop.is_cancelled() {
            return None;
        }
        let n = self.issued.fetch_add(1, Ordering::AcqRel);
        match self.spec.request_count {
            Some(limit) if n >= limit => None,
            Some(limit) => {
                if n + 1 == limit {
                    self.mark_sending_done();
                }
                Some(n)
            }
            None => Some(n),
        }
    }

    fn mark_sending_done(&self) {
        if !self.sending_done_flag.swap(true, Ordering::AcqRel) {
            self.sending_done.notify_one();
        }
    }
}

async fn worker(ctx: Arc<RunContext>, phase: Arc<PhaseRun>) {
    let n_entries = ctx.dataset.entries.len();
    let n_urls = ctx.transport.url_count();
    while let Some(credit) = phase.next_credit() {
        let request_index = ctx.next_request.fetch_add(1, Ordering::Relaxed);
        let entry_index = (credit as usize) % n_entries;
        let entry = &ctx.dataset.entries[entry_index];
        let mut rec = RequestRecord {
            phase: phase.spec.kind,
            request_index,
            conversation_index: entry_index,
            turn_index: 0,
            url_index: (request_index as usize) % n_urls,
            streaming: ctx.streaming,
            start_ns: 0,
            ack_ns: None,
            end_ns: 0,
            content_ns: Vec::new(),
            first_output_ns: None,
            output_text: String::new(),
            reasoning_text: String::new(),
            usage: None,
            isl: entry.isl,
            error: None,
            cancelled: false,
        };
        let tracker = &phase.tracker;
        tracker.sent.fetch_add(1, Ordering::AcqRel);
        ctx.transport
            .send(&mut rec, entry.payload.clone(), &phase.cancel)
            .await;
        if rec.cancelled {
            tracker.cancelled.fetch_add(1, Ordering::AcqRel);
        } else {
            if rec.error.is_some() {
                tracker.errors.fetch_add(1, Ordering::AcqRel);
            }
            tracker.completed.fetch_add(1, Ordering::AcqRel);
        }
        if ctx
            .records
            .send(ProcessorMsg::Record(Box::new(rec)))
            .is_err()
        {
            break;
        }
    }
}

/// Runs one phase to completion, emitting its hooks. `on_start` is given the live tracker
/// once the phase has started (for a progress display). Returns the tracker.
pub async fn run_phase<P>(
    ctx: &Arc<RunContext>,
    spec: PhaseSpec,
    hooks: &HookRegistry,
    on_start: impl FnOnce(Arc<PhaseTracker>) -> Option<P>,
) -> (Arc<PhaseTracker>, Option<P>) {
    let tracker = Arc::new(PhaseTracker::new(spec.kind, spec.request_count, ctx.clock));
    let phase = Arc::new(PhaseRun {
        stop: ctx.stop_sending.child_token(),
        cancel: ctx.cancel_in_flight.child_token(),
        spec: spec.clone(),
        tracker: tracker.clone(),
        issued: AtomicU64::new(0),
        sending_done: Notify::new(),
        sending_done_flag: AtomicBool::new(false),
    });

    // STARTED: phase_start hooks finish (bounded) before the first request goes out.
    tracker
        .start_ns
        .store(ctx.clock.now_ns().max(1), Ordering::Release);
    hooks
        .emit_and_wait(Hook::PhaseStart, Some(spec.kind), Some(tracker.stats()))
        .await;
    tracker
        .start_ns
        .store(ctx.clock.now_ns().max(1), Ordering::Release);
    let observer = on_start(tracker.clone());

    let mut workers = tokio::task::JoinSet::new();
    let n_workers = match spec.request_count {
        Some(c) => (c.min(spec.concurrency as u64)) as usize,
        None => spec.concurrency,
    };
    for _ in 0..n_workers {
        workers.spawn(worker(ctx.clone(), phase.clone()));
    }

    // Sending ends when the last credit is claimed, the duration passes, or the user stops.
    let deadline = spec.duration.map(|d| tokio::time::Instant::now() + d);
    let mut timed_out = false;
    tokio::select! {
        _ = phase.sending_done.notified() => {}
        _ = phase.stop.cancelled() => {}
        _ = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        } => { timed_out = true; }
        _ = async { while workers.join_next().await.is_some() {} } => {}
    }
    phase.stop.cancel();
    phase.mark_sending_done();
    tracker
        .sending_complete_ns
        .store(ctx.clock.now_ns(), Ordering::Release);
    hooks.emit(
        Hook::PhaseSendingComplete,
        Some(spec.kind),
        Some(tracker.stats()),
        None,
    );

    // Drain: count-bounded phases wait for every request (each bounded by its own timeout);
    // time-bounded or interrupted phases get the grace period, then in-flight requests are
    // cancelled and counted.
    let bounded = timed_out || ctx.stop_sending.is_cancelled();
    if bounded {
        let grace = tokio::time::sleep(spec.grace_period);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                r = workers.join_next() => if r.is_none() { break },
                _ = &mut grace => {
                    if workers.is_empty() { break; }
                    timed_out = true;
                    phase.cancel.cancel();
                    while workers.join_next().await.is_some() {}
                    break;
                }
                _ = ctx.cancel_in_flight.cancelled() => {
                    while workers.join_next().await.is_some() {}
                    break;
                }
            }
        }
    } else {
        while workers.join_next().await.is_some() {}
    }
    tracker.end_ns.store(ctx.clock.now_ns(), Ordering::Release);
    if timed_out {
        tracker.timed_out.store(true, Ordering::Release);
        hooks.emit(
            Hook::PhaseTimeout,
            Some(spec.kind),
            Some(tracker.stats()),
            None,
        );
    }
    (tracker, observer)
}
