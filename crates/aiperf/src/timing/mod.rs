//! Phases and their lifecycle, and the credits that decide what is sent when.
//!
//! The orchestrator runs each phase CREATED → STARTED → SENDING_COMPLETE → COMPLETE and emits
//! the phase hooks to the [`HookRegistry`]; it knows nothing about which plugins exist.
//!
//! Two ways to load a server: closed loop (N workers, each sending its next request when the
//! last one finishes) and open loop (a scheduler sends on absolute deadlines at a target rate,
//! optionally capped by a concurrency limit; a request held back by the cap waits, and its
//! send lag is recorded: nothing is dropped).

pub mod health;
pub mod schedule;
mod spec;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiperf_plugin::{Hook, PhaseStats};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::clock::{hires, Clock};
use crate::dataset::Dataset;
use crate::endpoint::{build_payload, Message};
use crate::metrics::processor::RecordSender;
use crate::metrics::{PhaseKind, RequestRecord};
use crate::mix::mix;
use crate::plugin::HookRegistry;
use crate::transport::Transport;
pub use schedule::RequestRateMode;
use schedule::Schedule;
pub use spec::LoadSpec;

/// A fixed schedule: (offset from the phase start, dataset entry), in send order.
pub type Trace = Vec<(Duration, usize)>;

/// An open-loop request rate.
#[derive(Debug, Clone)]
pub struct RateSpec {
    pub rate: f64,
    pub mode: RequestRateMode,
    pub smoothness: f64,
    pub ramp: Option<Duration>,
    pub seed: u64,
}

/// What bounds a phase and how it is loaded.
#[derive(Debug, Clone)]
pub struct PhaseSpec {
    pub kind: PhaseKind,
    pub request_count: Option<u64>,
    pub duration: Option<Duration>,
    pub grace_period: Duration,
    /// Closed loop: the number of workers (1 if unset). Open loop: a cap on in-flight requests.
    pub concurrency: Option<usize>,
    pub concurrency_ramp: Option<Duration>,
    pub rate: Option<RateSpec>,
    /// Fixed schedule: what to send when.
    pub trace: Option<Arc<Trace>>,
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

/// Per-phase state shared by its workers.
struct PhaseRun {
    spec: PhaseSpec,
    tracker: Arc<PhaseTracker>,
    /// Credits handed out in this phase.
    issued: AtomicU64,
    /// Stop sending now (duration reached, Ctrl-C): requests not yet sent are dropped.
    stop: CancellationToken,
    /// Every credit of a count-bounded phase has been handed out.
    all_issued: CancellationToken,
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
                    self.all_issued.cancel();
                }
                Some(n)
            }
            None => Some(n),
        }
    }

    /// Whether this credit's request is to be cancelled, decided by a seeded hash so a run
    /// is reproducible.
    fn cancel_after(&self, credit: u64) -> Option<Duration> {
        let (pct, delay) = self.spec.cancellation?;
        let u = (mix(self.spec.seed ^ 0xCA9C_E11E, credit) >> 11) as f64 / (1u64 << 53) as f64;
        (u * 100.0 < pct).then_some(delay)
    }
}

/// Sends one conversation (usually a single request) and hands each record to the
/// processor. Later turns carry the history, including the server's actual replies.
async fn execute(
    ctx: &RunContext,
    phase: &PhaseRun,
    credit: u64,
    entry: Option<usize>,
    scheduled_ns: Option<u64>,
) -> bool {
    let entry_index = entry.unwrap_or_else(|| ctx.dataset.pick(credit));
    let entry = &ctx.dataset.entries[entry_index];
    let mut history: Vec<Message> = Vec::new();
    let mut sent_payloads = Vec::new();
    for (turn_index, turn) in entry.turns.iter().enumerate() {
        if turn_index > 0 {
            if !turn.delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(turn.delay) => {}
                    _ = phase.cancel.cancelled() => return true,
                }
            }
            if phase.stop.is_cancelled() {
                return true;
            }
        }
        let payload = if turn_index == 0 {
            entry.payload.clone()
        } else {
            history.push(("user", turn.text.clone()));
            let body = build_payload(&ctx.dataset.shape, &history, turn.osl);
            let bytes = bytes::Bytes::from(serde_json::to_vec(&body).expect("payload serializes"));
            if entry.later_payloads.get().is_none() {
                sent_payloads.push(bytes.clone());
            }
            bytes
        };
        let request_index = ctx.next_request.fetch_add(1, Ordering::Relaxed);
        let mut rec = RequestRecord {
            phase: phase.spec.kind,
            request_index,
            conversation_index: entry_index,
            turn_index: turn_index as u32,
            url_index: (request_index as usize) % ctx.transport.url_count(),
            streaming: ctx.streaming,
            start_ns: 0,
            scheduled_ns: scheduled_ns.filter(|_| turn_index == 0),
            ack_ns: None,
            end_ns: 0,
            // Sized for the expected output once, not regrown token by token: with
            // thousands of streams in flight the regrowth garbage is most of their memory.
            content_ns: Vec::with_capacity(turn.osl.map_or(16, |n| n as usize + 2)),
            first_output_ns: None,
            output_text: String::with_capacity(turn.osl.map_or(64, |n| 6 * n as usize)),
            reasoning_text: String::new(),
            usage: None,
            isl: turn.isl,
            error: None,
            cancelled: false,
        };
        let tracker = &phase.tracker;
        tracker.sent.fetch_add(1, Ordering::AcqRel);
        ctx.transport
            .send(&mut rec, payload, &phase.cancel, phase.cancel_after(credit))
            .await;
        if let Some(s) = rec.scheduled_ns {
            let lag = rec.start_ns.saturating_sub(s);
            if lag > LATE_SEND_NS {
                tracker.late_sends.fetch_add(1, Ordering::AcqRel);
            }
            tracker.max_send_lag_ns.fetch_max(lag + 1, Ordering::AcqRel);
        }
        let failed = rec.error.is_some();
        if rec.cancelled {
            tracker.cancelled.fetch_add(1, Ordering::AcqRel);
        } else {
            if failed {
                tracker.errors.fetch_add(1, Ordering::AcqRel);
            }
            tracker.completed.fetch_add(1, Ordering::AcqRel);
        }
        let more_turns = turn_index + 1 < entry.turns.len();
        if more_turns && !failed {
            if turn_index == 0 {
                let first = entry.turns[0].text.clone();
                history.push(("user", first));
            }
            history.push(("assistant", rec.output_text.clone()));
        }
        if ctx.records.send(rec).is_err() {
            return false;
        }
        if failed {
            // The conversation can't go on without this turn's reply.
            break;
        }
    }
    if sent_payloads.len() + 1 == entry.turns.len() && !sent_payloads.is_empty() {
        // Kept for inputs.json: the first complete run of this conversation.
        let _ = entry.later_payloads.set(sent_payloads);
    }
    true
}

/// Closed loop: send, wait for the answer, send the next.
async fn worker(ctx: Arc<RunContext>, phase: Arc<PhaseRun>, start_at: Option<Instant>) {
    if let Some(t) = start_at {
        // Concurrency ramp: this worker joins later.
        tokio::select! {
            _ = tokio::time::sleep_until(t.into()) => {}
            _ = phase.stop.cancelled() => return,
            _ = phase.all_issued.cancelled() => return,
        }
    }
    while let Some(credit) = phase.next_credit() {
        if !execute(&ctx, &phase, credit, None, None).await {
            break;
        }
    }
}

/// Open loop: issue credits on absolute deadlines; each request runs in its own task.
async fn scheduler(ctx: Arc<RunContext>, phase: Arc<PhaseRun>, requests: &mut JoinSet<()>) {
    // The next (offset, dataset entry) to send: from the rate's arrival process, or a trace.
    let mut next: Box<dyn FnMut() -> Option<(Duration, Option<usize>)> + Send> =
        match (&phase.spec.trace, &phase.spec.rate) {
            (Some(trace), _) => {
                let trace = trace.clone();
                let mut i = 0;
                Box::new(move || {
                    let item = trace.get(i).map(|(o, e)| (*o, Some(*e)));
                    i += 1;
                    item
                })
            }
            (None, Some(rate)) => {
                let mut s =
                    Schedule::new(rate.rate, rate.mode, rate.smoothness, rate.ramp, rate.seed);
                Box::new(move || Some((s.next_offset(), None)))
            }
            (None, None) => unreachable!("the scheduler runs only with a rate or a trace"),
        };
    // With --concurrency-ramp-duration the cap starts at 1 and grows linearly to its full
    // value (as closed-loop workers join), one permit at a time.
    let ramp = phase.spec.concurrency_ramp;
    let cap = phase
        .spec
        .concurrency
        .map(|c| Arc::new(Semaphore::new(if ramp.is_some() { 1 } else { c })));
    // Time zero lies one spawn lead ahead, so the first requests are not late by design.
    let t0 = Instant::now() + SPAWN_LEAD;
    let _ramp_guard = match (ramp, &cap, phase.spec.concurrency) {
        (Some(r), Some(sem), Some(c)) if c > 1 => {
            let (sem, stop) = (sem.clone(), phase.stop.clone());
            Some(AbortOnDropHandle::new(tokio::spawn(async move {
                for i in 1..c {
                    let at = t0 + r.mul_f64(i as f64 / c as f64);
                    tokio::select! {
                        _ = tokio::time::sleep_until(at.into()) => sem.add_permits(1),
                        _ = stop.cancelled() => return,
                    }
                }
            })))
        }
        _ => None,
    };
    let mut last_deadline = t0;
    while let Some((offset, entry)) = next() {
        let deadline = t0 + offset;
        // Hand the request to its own task a little early: that task then waits on the
        // precise timer and is woken straight into its send, instead of queueing behind
        // other ready tasks as a freshly spawned task would.
        tokio::select! {
            biased;
            _ = phase.stop.cancelled() => return,
            _ = tokio::time::sleep_until(deadline.checked_sub(SPAWN_LEAD).unwrap_or(deadline).into()) => {}
        }
        // Drain finished request tasks so the set stays small.
        while requests.try_join_next().is_some() {}
        let Some(credit) = phase.next_credit() else {
            break;
        };
        let permit = match &cap {
            // Blocked by the cap: the request waits (its send lag grows), it is not dropped.
            Some(sem) => tokio::select! {
                p = sem.clone().acquire_owned() => Some(p.expect("semaphore open")),
                _ = phase.stop.cancelled() => return,
            },
            None => None,
        };
        let scheduled_ns = ctx.clock.instant_ns(deadline);
        last_deadline = deadline;
        let (ctx, phase) = (ctx.clone(), phase.clone());
        requests.spawn(async move {
            tokio::select! {
                biased;
                _ = phase.stop.cancelled() => return,
                _ = hires::sleep_until(deadline) => {}
            }
            execute(&ctx, &phase, credit, entry, Some(scheduled_ns)).await;
            drop(permit);
        });
    }
    // Sending is complete once the last scheduled request has actually gone out.
    tokio::select! {
        _ = phase.stop.cancelled() => {}
        _ = hires::sleep_until(last_deadline) => {}
    }
}

/// How early an open-loop request's task is spawned before its deadline.
const SPAWN_LEAD: Duration = Duration::from_millis(3);

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
        all_issued: CancellationToken::new(),
        cancel: ctx.cancel_in_flight.child_token(),
        spec: spec.clone(),
        tracker: tracker.clone(),
        issued: AtomicU64::new(0),
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

    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut scheduler_task = None;
    match (&spec.rate, &spec.trace) {
        (None, None) => {
            let workers = spec.concurrency.unwrap_or(1);
            let workers = match spec.request_count {
                Some(c) => (c.min(workers as u64)) as usize,
                None => workers,
            };
            let t0 = Instant::now();
            for i in 0..workers {
                let start_at = spec
                    .concurrency_ramp
                    .filter(|_| i > 0)
                    .map(|r| t0 + r.mul_f64(i as f64 / workers.max(1) as f64));
                tasks.spawn(worker(ctx.clone(), phase.clone(), start_at));
            }
        }
        _ => {
            let (ctx, phase) = (ctx.clone(), phase.clone());
            scheduler_task = Some(tokio::spawn(async move {
                let mut requests = JoinSet::new();
                scheduler(ctx, phase, &mut requests).await;
                requests
            }));
        }
    }

    // SENDING_COMPLETE: the last credit is claimed, the duration passes, or the user stops.
    let deadline = spec.duration.map(|d| tokio::time::Instant::now() + d);
    let mut timed_out = false;
    tokio::select! {
        _ = phase.stop.cancelled() => {}
        _ = phase.all_issued.cancelled() => {}
        _ = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        } => { timed_out = true; phase.stop.cancel(); }
        _ = async { while tasks.join_next().await.is_some() {} }, if scheduler_task.is_none() => {}
    }
    if let Some(s) = scheduler_task {
        if let Ok(requests) = s.await {
            tasks = requests;
        }
    }
    tracker
        .sending_complete_ns
        .store(ctx.clock.now_ns(), Ordering::Release);
    hooks.emit(
        Hook::PhaseSendingComplete,
        Some(spec.kind),
        Some(tracker.stats()),
        None,
    );

    // COMPLETE: count-bounded phases wait for every request (each bounded by its own
    // timeout); time-bounded or interrupted phases (Ctrl-C may also come now, while
    // draining) get the grace period, then in-flight requests are cancelled and counted.
    let mut grace: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = (timed_out
        || ctx.stop_sending.is_cancelled())
    .then(|| Box::pin(tokio::time::sleep(spec.grace_period)));
    loop {
        tokio::select! {
            r = tasks.join_next() => if r.is_none() { break },
            _ = ctx.stop_sending.cancelled(), if grace.is_none() => {
                grace = Some(Box::pin(tokio::time::sleep(spec.grace_period)));
            }
            _ = async { grace.as_mut().expect("guarded").await }, if grace.is_some() => {
                if !tasks.is_empty() {
                    timed_out = true;
                    phase.cancel.cancel();
                    while tasks.join_next().await.is_some() {}
                }
                break;
            }
            _ = ctx.cancel_in_flight.cancelled() => {
                while tasks.join_next().await.is_some() {}
                break;
            }
        }
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
