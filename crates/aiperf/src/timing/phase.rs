//! One phase, run to completion: credits, the closed-loop workers, the open-loop scheduler,
//! and the lifecycle CREATED → STARTED → SENDING_COMPLETE → COMPLETE with its hooks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aiperf_plugin::Hook;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::schedule::Schedule;
use super::{ConcurrencyCap, PhaseLoad, PhaseSpec, PhaseTracker, RequestSender, RunContext, Trace};
use crate::dataset::Turn;
use crate::endpoint::{build_payload, Message};
use crate::metrics::{PhaseKind, RequestIds, RequestRecord};
use crate::plugin::HookRegistry;

/// Per-phase state shared by its workers.
struct PhaseRun {
    spec: PhaseSpec,
    tracker: Arc<PhaseTracker>,
    /// Credits handed out in this phase.
    issued: AtomicU64,
    /// Stop sending now (duration reached, Ctrl-C): requests not yet sent are dropped.
    stop: CancellationToken,
    /// Conversations whose first request has gone out (and been counted as sent).
    started: AtomicU64,
    /// Every credit of a count-bounded phase has been sent: fired only once the tracker has
    /// counted the last one, so `phase_sending_complete` reports every request as sent.
    all_issued: CancellationToken,
    cancel: CancellationToken,
}

impl PhaseRun {
    fn new<S>(ctx: &RunContext<S>, spec: PhaseSpec) -> Self {
        Self {
            tracker: Arc::new(PhaseTracker::new(spec.kind, spec.request_count, ctx.clock)),
            stop: ctx.stop_sending.child_token(),
            all_issued: CancellationToken::new(),
            cancel: ctx.cancel_in_flight.child_token(),
            spec,
            issued: AtomicU64::new(0),
            started: AtomicU64::new(0),
        }
    }

    /// Claims the next credit, or `None` when the phase sends no more.
    fn next_credit(&self) -> Option<u64> {
        if self.stop.is_cancelled() {
            return None;
        }
        let n = self.issued.fetch_add(1, Ordering::AcqRel);
        match self.spec.request_count {
            Some(limit) if n >= limit => None,
            _ => Some(n),
        }
    }

    /// Counts a conversation's first request as sent; the last one of a count-bounded
    /// phase completes the sending.
    fn count_sent(&self, first_turn: bool) {
        self.tracker.sent.fetch_add(1, Ordering::AcqRel);
        if !first_turn {
            return;
        }
        let started = self.started.fetch_add(1, Ordering::AcqRel) + 1;
        if self.spec.request_count == Some(started) {
            self.all_issued.cancel();
        }
    }

    /// Whether this credit's request is to be cancelled, decided by a seeded hash so a run
    /// is reproducible.
    fn cancel_after(&self, credit: u64) -> Option<Duration> {
        let (pct, delay) = self.spec.cancellation?;
        let u = (crate::mix::mix(self.spec.seed ^ 0xCA9C_E11E, credit) >> 11) as f64
            / (1u64 << 53) as f64;
        (u * 100.0 < pct).then_some(delay)
    }
}

/// A fresh record for one turn, before it is sent.
fn new_record(
    phase: PhaseKind,
    request_index: u64,
    url_count: usize,
    conversation_index: usize,
    (turn_index, turn): (usize, &Turn),
    streaming: bool,
    scheduled_ns: Option<u64>,
) -> RequestRecord {
    RequestRecord {
        phase,
        request_index,
        conversation_index,
        turn_index: turn_index as u32,
        url_index: (request_index as usize) % url_count,
        streaming,
        start_ns: 0,
        scheduled_ns,
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
        requested_osl: turn.osl,
        ids: Default::default(),
        http: Default::default(),
    }
}

/// Sends one conversation (usually a single request) and hands each record to the
/// processor. Later turns carry the history, including the server's actual replies.
/// `false` when the record processor has gone.
async fn execute<S: RequestSender>(
    ctx: &RunContext<S>,
    phase: &PhaseRun,
    credit: u64,
    entry: Option<usize>,
    scheduled_ns: Option<u64>,
) -> bool {
    let entry_index = entry.unwrap_or_else(|| ctx.dataset.pick(credit));
    let entry = &ctx.dataset.entries[entry_index];
    let mut history: Vec<Message> = Vec::new();
    let mut sent_payloads = Vec::new();
    // X-Correlation-ID: one per conversation, on every turn.
    let correlation = RequestIds::random_uuid();
    for (turn_index, turn) in entry.turns.iter().enumerate() {
        let payload = if turn_index == 0 {
            entry.payload.clone()
        } else {
            if !turn.delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(turn.delay) => {}
                    _ = phase.cancel.cancelled() => return true,
                }
            }
            if phase.stop.is_cancelled() {
                return true;
            }
            history.push(("user", turn.text.clone()));
            let body = build_payload(&ctx.dataset.shape, entry_index, &history, turn.osl);
            let bytes = bytes::Bytes::from(serde_json::to_vec(&body).expect("payload serializes"));
            if entry.later_payloads.get().is_none() {
                sent_payloads.push(bytes.clone());
            }
            bytes
        };
        let mut rec = new_record(
            phase.spec.kind,
            ctx.next_request.fetch_add(1, Ordering::Relaxed),
            ctx.transport.url_count(),
            entry_index,
            (turn_index, turn),
            ctx.streaming,
            scheduled_ns.filter(|_| turn_index == 0),
        );
        rec.ids = RequestIds::new(correlation, turn_index + 1 == entry.turns.len());
        phase.count_sent(turn_index == 0);
        let cancel_after = phase.cancel_after(credit);
        ctx.transport
            .send(&mut rec, payload, &phase.cancel, cancel_after)
            .await;
        phase.tracker.count(&rec);
        let failed = rec.error.is_some();
        if turn_index + 1 < entry.turns.len() && !failed {
            if turn_index == 0 {
                history.push(("user", entry.turns[0].text.clone()));
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
async fn worker<S: RequestSender>(
    ctx: Arc<RunContext<S>>,
    phase: Arc<PhaseRun>,
    start_at: Option<Instant>,
) {
    if let Some(t) = start_at {
        // Concurrency ramp: this worker joins later.
        tokio::select! {
            _ = tokio::time::sleep_until(t) => {}
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

/// Closed loop: `concurrency` workers, never more than the request count; with a ramp,
/// worker i joins at ramp·i/N.
fn spawn_workers<S: RequestSender>(
    ctx: &Arc<RunContext<S>>,
    phase: &Arc<PhaseRun>,
    concurrency: usize,
    ramp: Option<Duration>,
) -> JoinSet<()> {
    let workers = match phase.spec.request_count {
        Some(c) => c.min(concurrency as u64) as usize,
        None => concurrency,
    };
    let t0 = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..workers {
        let start_at = ramp
            .filter(|_| i > 0)
            .map(|r| t0 + r.mul_f64(i as f64 / workers.max(1) as f64));
        tasks.spawn(worker(ctx.clone(), phase.clone(), start_at));
    }
    tasks
}

/// Open-loop send offsets from the phase's time zero: a rate's arrival process, or a trace.
enum Offsets {
    /// Boxed: the RNG state is large.
    Rate(Box<Schedule>),
    Trace {
        trace: Arc<Trace>,
        next: usize,
    },
}

impl Offsets {
    /// The next (offset, dataset entry); no entry when the credit picks it.
    fn next(&mut self) -> Option<(Duration, Option<usize>)> {
        match self {
            Offsets::Rate(schedule) => Some((schedule.next_offset(), None)),
            Offsets::Trace { trace, next } => {
                let item = trace.get(*next).map(|(o, e)| (*o, Some(*e)));
                *next += 1;
                item
            }
        }
    }
}

/// How early an open-loop request's task is spawned before its deadline.
const SPAWN_LEAD: Duration = Duration::from_millis(3);

/// The open-loop cap on requests in flight. With a ramp it starts at 1 permit, and the
/// returned task adds one at each t0 + ramp·i/limit (it stops when the phase stops or the
/// guard is dropped).
fn concurrency_cap(
    cap: Option<ConcurrencyCap>,
    t0: Instant,
    stop: &CancellationToken,
) -> (Option<Arc<Semaphore>>, Option<AbortOnDropHandle<()>>) {
    let Some(ConcurrencyCap { limit, ramp }) = cap else {
        return (None, None);
    };
    let sem = Arc::new(Semaphore::new(if ramp.is_some() { 1 } else { limit }));
    let grow = ramp.filter(|_| limit > 1).map(|r| {
        let (sem, stop) = (sem.clone(), stop.clone());
        AbortOnDropHandle::new(tokio::spawn(async move {
            for i in 1..limit {
                let at = t0 + r.mul_f64(i as f64 / limit as f64);
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => sem.add_permits(1),
                    _ = stop.cancelled() => return,
                }
            }
        }))
    });
    (Some(sem), grow)
}

/// Open loop: issue credits on absolute deadlines; each request runs in its own task, in
/// `requests`.
async fn scheduler<S: RequestSender>(
    ctx: Arc<RunContext<S>>,
    phase: Arc<PhaseRun>,
    mut offsets: Offsets,
    cap: Option<ConcurrencyCap>,
    requests: &mut JoinSet<()>,
) {
    // Time zero lies one spawn lead ahead, so the first requests are not late by design.
    let t0 = Instant::now() + SPAWN_LEAD;
    let (cap, _grow_cap) = concurrency_cap(cap, t0, &phase.stop);
    let mut last_deadline = t0;
    while let Some((offset, entry)) = offsets.next() {
        let deadline = t0 + offset;
        // Hand the request to its own task a little early: that task then waits on the
        // precise timer and is woken straight into its send, instead of queueing behind
        // other ready tasks as a freshly spawned task would.
        tokio::select! {
            biased;
            _ = phase.stop.cancelled() => return,
            _ = tokio::time::sleep_until(deadline.checked_sub(SPAWN_LEAD).unwrap_or(deadline)) => {}
        }
        // Drain finished request tasks so the set stays small.
        while requests.try_join_next().is_some() {}
        let Some(credit) = phase.next_credit() else {
            break;
        };
        let Some(permit) = take_permit(cap.as_ref(), &phase.stop).await else {
            return;
        };
        let scheduled_ns = ctx.clock.instant_ns(deadline.into_std());
        last_deadline = deadline;
        let (ctx, phase) = (ctx.clone(), phase.clone());
        requests.spawn(async move {
            tokio::select! {
                biased;
                _ = phase.stop.cancelled() => return,
                _ = S::sleep_until(deadline) => {}
            }
            execute(&ctx, &phase, credit, entry, Some(scheduled_ns)).await;
            drop(permit);
        });
    }
    // Sending is complete once the last scheduled request has actually gone out.
    tokio::select! {
        _ = phase.stop.cancelled() => {}
        _ = S::sleep_until(last_deadline) => {}
    }
}

/// A slot under the cap (`Some(None)` without a cap). Blocked by the cap, the request waits
/// (its send lag grows); it is not dropped. `None`: the phase stopped meanwhile.
async fn take_permit(
    cap: Option<&Arc<Semaphore>>,
    stop: &CancellationToken,
) -> Option<Option<OwnedSemaphorePermit>> {
    match cap {
        Some(sem) => tokio::select! {
            p = sem.clone().acquire_owned() => Some(Some(p.expect("semaphore open"))),
            _ = stop.cancelled() => None,
        },
        None => Some(None),
    }
}

/// What sends a phase's requests.
enum Senders {
    /// Closed-loop workers.
    Workers(JoinSet<()>),
    /// The open-loop scheduler; it hands back its request tasks when it is done.
    Scheduler(JoinHandle<JoinSet<()>>),
}

/// Starts the phase's load: workers, or a scheduler with the rate's or the trace's offsets.
fn spawn_load<S: RequestSender>(ctx: &Arc<RunContext<S>>, phase: &Arc<PhaseRun>) -> Senders {
    let open_loop = |offsets: Offsets, cap: Option<ConcurrencyCap>| {
        let (ctx, phase) = (ctx.clone(), phase.clone());
        Senders::Scheduler(tokio::spawn(async move {
            let mut requests = JoinSet::new();
            scheduler(ctx, phase, offsets, cap, &mut requests).await;
            requests
        }))
    };
    match &phase.spec.load {
        PhaseLoad::ClosedLoop { concurrency, ramp } => {
            Senders::Workers(spawn_workers(ctx, phase, *concurrency, *ramp))
        }
        PhaseLoad::Rate { rate: r, cap } => open_loop(
            Offsets::Rate(Box::new(Schedule::new(
                r.rate,
                r.mode,
                r.smoothness,
                r.ramp,
                r.seed,
            ))),
            *cap,
        ),
        PhaseLoad::Trace { trace, cap } => open_loop(
            Offsets::Trace {
                trace: trace.clone(),
                next: 0,
            },
            *cap,
        ),
    }
}

/// Waits until the phase sends no more: the last credit is claimed, the workers or the
/// scheduler are done, the duration passes (stopping the phase), or the user stops. Returns
/// the requests still running and whether the duration cut the phase.
async fn until_sending_complete(phase: &PhaseRun, senders: Senders) -> (JoinSet<()>, bool) {
    let (mut tasks, scheduler) = match senders {
        Senders::Workers(tasks) => (tasks, None),
        Senders::Scheduler(s) => (JoinSet::new(), Some(s)),
    };
    let deadline = phase.spec.duration.map(|d| Instant::now() + d);
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
        _ = async { while tasks.join_next().await.is_some() {} }, if scheduler.is_none() => {}
    }
    if let Some(s) = scheduler {
        if let Ok(requests) = s.await {
            tasks = requests;
        }
    }
    (tasks, timed_out)
}

/// Waits for the requests in flight. A count-bounded phase waits for every one (each bounded
/// by its own timeout); a time-bounded or interrupted phase (Ctrl-C may also come now, while
/// draining) gets the grace period, then in-flight requests are cancelled and counted.
/// Returns whether the grace period cut it.
async fn drain<S>(
    ctx: &RunContext<S>,
    phase: &PhaseRun,
    mut tasks: JoinSet<()>,
    cut: bool,
) -> bool {
    let grace_period = phase.spec.grace_period;
    let mut grace = (cut || ctx.stop_sending.is_cancelled())
        .then(|| Box::pin(tokio::time::sleep(grace_period)));
    loop {
        tokio::select! {
            r = tasks.join_next() => if r.is_none() { return false },
            _ = ctx.stop_sending.cancelled(), if grace.is_none() => {
                grace = Some(Box::pin(tokio::time::sleep(grace_period)));
            }
            _ = async { grace.as_mut().expect("guarded").await }, if grace.is_some() => {
                if tasks.is_empty() {
                    return false;
                }
                phase.cancel.cancel();
                while tasks.join_next().await.is_some() {}
                return true;
            }
            _ = ctx.cancel_in_flight.cancelled() => {
                while tasks.join_next().await.is_some() {}
                return false;
            }
        }
    }
}

/// Runs one phase to completion, emitting its hooks. `on_start` is given the live tracker
/// once the phase has started (for a progress display). Returns the tracker.
pub async fn run_phase<S: RequestSender, P>(
    ctx: &Arc<RunContext<S>>,
    spec: PhaseSpec,
    hooks: &HookRegistry,
    on_start: impl FnOnce(Arc<PhaseTracker>) -> Option<P>,
) -> (Arc<PhaseTracker>, Option<P>) {
    // CREATED
    let phase = Arc::new(PhaseRun::new(ctx, spec));
    let (kind, tracker) = (phase.spec.kind, phase.tracker.clone());
    let now_ns = || ctx.clock.now_ns();

    // STARTED: phase_start hooks finish (bounded) before the first request goes out.
    tracker.start_ns.store(now_ns().max(1), Ordering::Release);
    hooks
        .emit_and_wait(Hook::PhaseStart, Some(kind), Some(tracker.stats()))
        .await;
    tracker.start_ns.store(now_ns().max(1), Ordering::Release);
    let observer = on_start(tracker.clone());
    let senders = spawn_load(ctx, &phase);

    // SENDING_COMPLETE
    let (tasks, cut_by_duration) = until_sending_complete(&phase, senders).await;
    tracker
        .sending_complete_ns
        .store(now_ns(), Ordering::Release);
    let stats = Some(tracker.stats());
    hooks.emit(Hook::PhaseSendingComplete, Some(kind), stats, None);

    // COMPLETE (the summary and phase_complete follow in `benchmark`)
    let cut_by_grace = drain(ctx, &phase, tasks, cut_by_duration).await;
    tracker.end_ns.store(now_ns(), Ordering::Release);
    if cut_by_duration || cut_by_grace {
        tracker.timed_out.store(true, Ordering::Release);
        let stats = Some(tracker.stats());
        hooks.emit(Hook::PhaseTimeout, Some(kind), stats, None);
    }
    (tracker, observer)
}
