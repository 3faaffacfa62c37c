//! One phase, run to completion: credits, the closed-loop workers, the open-loop scheduler,
//! and the lifecycle CREATED → STARTED → SENDING_COMPLETE → COMPLETE with its hooks.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiperf_plugin::Hook;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::schedule::Schedule;
use super::{ConcurrencyCap, PhaseLoad, PhaseSpec, PhaseTracker, RequestSender, RunContext, Trace};
use crate::dataset::{Dataset, Turn};
use crate::endpoint::{build_payload, Message};
use crate::metrics::{PhaseKind, RequestIds, RequestRecord};
use crate::plugin::HookRegistry;
use crate::shard::Shard;

/// What a phase has sent so far, counted under one lock so that the limits are exact
/// whatever thread sends: requests (turns) against `--request-count`, conversations against
/// `--conversation-num`.
#[derive(Debug, Default)]
struct Counting {
    /// Requests sent (every turn).
    sent: u64,
    /// Conversations started; the next one started gets this number as its credit.
    sessions: u64,
    /// Turns the started conversations will send in all (less those given up).
    planned_turns: u64,
    /// Conversations started and not yet ended.
    active: u64,
}

/// A later turn waiting for a tick of the rate: the scheduler answers with the tick's
/// deadline and its time in ns.
type TickRequest = oneshot::Sender<(Instant, u64)>;

/// Per-phase state shared by its workers.
struct PhaseRun {
    spec: PhaseSpec,
    tracker: Arc<PhaseTracker>,
    counting: Mutex<Counting>,
    /// Stop sending now (duration reached, Ctrl-C): requests not yet sent are dropped.
    stop: CancellationToken,
    /// Nothing more will be sent (a limit is reached): fired only once the tracker has
    /// counted the last request, so `phase_sending_complete` reports every request as sent.
    all_issued: CancellationToken,
    cancel: CancellationToken,
    /// With a rate: later turns ready to go wait here for a tick of the rate, which they
    /// take before new conversations do (AIPerf's continuation turns).
    ticks: Option<mpsc::UnboundedSender<TickRequest>>,
    /// The scheduler's end of `ticks`, taken when it starts.
    tick_requests: Mutex<Option<mpsc::UnboundedReceiver<TickRequest>>>,
}

impl PhaseRun {
    fn new<S>(ctx: &RunContext<S>, spec: PhaseSpec) -> Self {
        let expected = expected_requests(&ctx.dataset, &spec);
        let (ticks, tick_requests) = match spec.load {
            PhaseLoad::Rate { .. } => {
                let (tx, rx) = mpsc::unbounded_channel();
                (Some(tx), Some(rx))
            }
            _ => (None, None),
        };
        Self {
            tracker: Arc::new(PhaseTracker::new(spec.kind, expected, ctx.clock)),
            stop: ctx.stop_sending.child_token(),
            all_issued: CancellationToken::new(),
            cancel: ctx.cancel_in_flight.child_token(),
            spec,
            counting: Mutex::new(Counting::default()),
            ticks,
            tick_requests: Mutex::new(tick_requests),
        }
    }

    /// Whether every conversation started has ended.
    fn idle(&self) -> bool {
        self.counting().active == 0
    }

    /// Waits for a tick of the rate for a later turn: its deadline and time in ns, `None`
    /// without a rate, or `Some(None)` when the phase will send no more.
    async fn tick(&self) -> Option<Option<(Instant, u64)>> {
        let ticks = self.ticks.as_ref()?;
        let (tx, rx) = oneshot::channel();
        if ticks.send(tx).is_err() {
            return Some(None);
        }
        Some(tokio::select! {
            t = rx => t.ok(),
            _ = self.stop.cancelled() => None,
            _ = self.all_issued.cancelled() => None,
        })
    }

    fn counting(&self) -> std::sync::MutexGuard<'_, Counting> {
        // Nothing panics while holding it; a poisoned lock still holds valid counts.
        self.counting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a new conversation may still start (AIPerf's `can_start_new_session`): the
    /// phase is not stopped, fewer requests than `--request-count` were sent and fewer
    /// conversations than `--conversation-num` were started. Once false, it stays false.
    fn may_start(&self) -> bool {
        if self.stop.is_cancelled() || self.all_issued.is_cancelled() {
            return false;
        }
        let c = self.counting();
        self.spec.request_count.is_none_or(|l| c.sent < l)
            && self.spec.session_count.is_none_or(|l| c.sessions < l)
    }

    /// Starts a conversation and counts its first request as sent, or `None` when no new
    /// conversation may start. `entry(credit)` gives the dataset entry of the conversation
    /// numbered `credit` in this phase, and how many turns it has.
    fn start_conversation(&self, entry: impl FnOnce(u64) -> (usize, u64)) -> Option<(u64, usize)> {
        if self.stop.is_cancelled() {
            return None;
        }
        let mut c = self.counting();
        if self.spec.request_count.is_some_and(|l| c.sent >= l)
            || self.spec.session_count.is_some_and(|l| c.sessions >= l)
        {
            return None;
        }
        let credit = c.sessions;
        let (entry, turns) = entry(credit);
        c.sessions += 1;
        c.active += 1;
        c.planned_turns += turns.max(1);
        Some((credit, entry)).filter(|_| self.count_sent(c))
    }

    /// Counts a later turn of a started conversation as sent, or `false` when the request
    /// limit has been reached (the conversation stops after its current turn).
    fn continue_conversation(&self) -> bool {
        if self.stop.is_cancelled() {
            return false;
        }
        let c = self.counting();
        if self.spec.request_count.is_some_and(|l| c.sent >= l) {
            return false;
        }
        self.count_sent(c)
    }

    /// A started conversation ends, with `unsent` of its turns never sent (a failed turn, a
    /// limit, a stop, or the record processor gone): they no longer hold the phase open.
    fn end_conversation(&self, unsent: u64) {
        let mut c = self.counting();
        c.active = c.active.saturating_sub(1);
        c.planned_turns = c.planned_turns.saturating_sub(unsent);
        if self.complete(&c) {
            drop(c);
            self.all_issued.cancel();
        }
    }

    /// Counts one request as sent (the lock held); fires `all_issued` when it was the last.
    fn count_sent(&self, mut c: std::sync::MutexGuard<'_, Counting>) -> bool {
        c.sent += 1;
        self.tracker.sent.store(c.sent, Ordering::Release);
        if self.complete(&c) {
            drop(c);
            self.all_issued.cancel();
        }
        true
    }

    /// Whether nothing more will be sent: the request limit is reached, or the conversation
    /// limit is and every turn of the started conversations has been sent (AIPerf's final
    /// credit).
    fn complete(&self, c: &Counting) -> bool {
        self.spec.request_count.is_some_and(|l| c.sent >= l)
            || self
                .spec
                .session_count
                .is_some_and(|l| c.sessions >= l && c.sent >= c.planned_turns)
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

/// Requests a phase is expected to send, for progress: its request limit, or the turns of
/// the conversations its conversation limit lets start (the dataset's picks are a function
/// of the credit), whichever is smaller. `None` for a phase bounded by time alone, or by a
/// conversation limit too large to add up.
fn expected_requests(dataset: &Dataset, spec: &PhaseSpec) -> Option<u64> {
    const MAX_SUMMED: u64 = 1_000_000;
    let by_sessions = spec.session_count.and_then(|n| {
        let single_turn = dataset.entries.iter().all(|e| e.turns.len() <= 1);
        if single_turn || matches!(spec.load, PhaseLoad::Trace { .. }) {
            return Some(n);
        }
        (n <= MAX_SUMMED).then(|| {
            (0..n)
                .map(|c| {
                    let turns = dataset.entries.get(dataset.pick(c)).map(|e| e.turns.len());
                    turns.unwrap_or(1) as u64
                })
                .sum()
        })
    });
    match (spec.request_count, by_sessions) {
        (Some(r), Some(s)) => Some(r.min(s)),
        (r, s) => r.or(s),
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

/// How [`execute`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ran {
    /// No new conversation may start: a limit is reached or the phase stopped.
    NotStarted,
    /// The conversation was sent (all of it, or until a limit, a failure or a stop).
    Done,
    /// The record processor has gone.
    ProcessorGone,
}

/// Starts a conversation, if the phase's limits allow one, and sends it turn by turn (usually
/// a single request), handing each record to the processor. Later turns carry the history,
/// including the server's actual replies. Each turn is counted as a request: once
/// `--request-count` requests are sent, the conversation stops after its current turn.
async fn execute<S: RequestSender>(
    ctx: &RunContext<S>,
    phase: &PhaseRun,
    entry: Option<usize>,
    scheduled_ns: Option<u64>,
) -> Ran {
    let dataset = &ctx.dataset;
    let turns_of = |i: usize| dataset.entries.get(i).map_or(1, |e| e.turns.len() as u64);
    let Some((credit, entry_index)) = phase.start_conversation(|credit| {
        // A shard's k-th conversation is the run's k·N + I: the entry the single run picks.
        let run_credit = ctx.shard.map_or(credit, |s| s.global(credit));
        let i = entry.unwrap_or_else(|| dataset.pick(run_credit));
        (i, turns_of(i))
    }) else {
        return Ran::NotStarted;
    };
    let Some(entry) = dataset.entries.get(entry_index) else {
        phase.end_conversation(1);
        return Ran::Done;
    };
    let mut history: Vec<Message> = Vec::new();
    if entry.turns.len() > 1 {
        history = dataset.preamble(entry);
    }
    let mut sent_payloads = Vec::new();
    // X-Correlation-ID: one per conversation, on every turn.
    let correlation = RequestIds::random_uuid();
    let mut unsent = entry.turns.len() as u64;
    for (turn_index, turn) in entry.turns.iter().enumerate() {
        let mut scheduled_ns = scheduled_ns.filter(|_| turn_index == 0);
        let payload = if turn_index == 0 {
            entry.payload.clone()
        } else {
            if !turn.delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(turn.delay) => {}
                    _ = phase.cancel.cancelled() => break,
                }
            }
            // With a rate, the turn goes out on the next tick it is given.
            match phase.tick().await {
                Some(Some((deadline, ns))) => {
                    tokio::select! {
                        biased;
                        _ = phase.stop.cancelled() => break,
                        _ = S::sleep_until(deadline) => {}
                    }
                    scheduled_ns = Some(ns);
                }
                Some(None) => break,
                None => {}
            }
            if !phase.continue_conversation() {
                break;
            }
            history.push(("user", turn.text.clone()));
            let body = build_payload(&dataset.shape, entry_index, &history, turn.osl);
            // A `Value` always serializes (its keys are strings).
            let bytes = bytes::Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
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
            scheduled_ns,
        );
        rec.ids = RequestIds::new(correlation, turn_index + 1 == entry.turns.len());
        unsent -= 1;
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
            phase.end_conversation(unsent);
            return Ran::ProcessorGone;
        }
        if failed {
            // The conversation can't go on without this turn's reply.
            break;
        }
    }
    phase.end_conversation(unsent);
    if sent_payloads.len() + 1 == entry.turns.len() && !sent_payloads.is_empty() {
        // Kept for inputs.json: the first complete run of this conversation.
        let _ = entry.later_payloads.set(sent_payloads);
    }
    Ran::Done
}

/// Closed loop: send a conversation, wait for its last answer, start the next; a worker is
/// AIPerf's session slot.
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
    while execute(&ctx, &phase, None, None).await == Ran::Done {}
}

/// Closed loop: `concurrency` workers, never more than the request or conversation count
/// (each worker needs at least one request of its own); with a ramp,
/// worker i joins at ramp·i/N.
fn spawn_workers<S: RequestSender>(
    ctx: &Arc<RunContext<S>>,
    phase: &Arc<PhaseRun>,
    concurrency: usize,
    ramp: Option<Duration>,
) -> JoinSet<()> {
    let limit = [phase.spec.request_count, phase.spec.session_count]
        .into_iter()
        .flatten()
        .min();
    let workers = match limit {
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
    Rate {
        /// Boxed: the RNG state is large.
        schedule: Box<Schedule>,
        /// With `--shard`: this shard's arrivals of the run's one schedule.
        shard: Option<Shard>,
        /// The run-wide number of the next arrival.
        next: u64,
    },
    Trace {
        trace: Arc<Trace>,
        next: usize,
        /// With `--shard`: this shard's entries of the trace.
        shard: Option<Shard>,
    },
}

impl Offsets {
    /// The next (offset, dataset entry); no entry when the credit picks it. A shard draws
    /// every arrival of the run's schedule (so the schedule is the same everywhere) and
    /// keeps its own: arrivals I, I + N, I + 2N, … (the same for a trace's entries).
    fn next(&mut self) -> Option<(Duration, Option<usize>)> {
        match self {
            Offsets::Rate {
                schedule,
                shard,
                next,
            } => loop {
                let offset = schedule.next_offset();
                let global = *next;
                *next += 1;
                if shard.is_none_or(|s| s.owns(global)) {
                    return Some((offset, None));
                }
            },
            Offsets::Trace { trace, next, shard } => loop {
                let i = *next;
                let item = trace.get(i).map(|(o, e)| (*o, Some(*e)));
                *next += 1;
                if item.is_none() || shard.is_none_or(|s| s.owns(i as u64)) {
                    return item;
                }
            },
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

/// Open loop: on each absolute deadline, a later turn that is ready takes the tick (with a
/// rate, as in AIPerf), else a new conversation starts while the phase's limits allow new
/// ones. Each conversation runs in its own task, in `requests`, and is counted (and may
/// still be refused, when a limit was reached meanwhile) as its first request leaves.
async fn scheduler<S: RequestSender>(
    ctx: Arc<RunContext<S>>,
    phase: Arc<PhaseRun>,
    mut offsets: Offsets,
    cap: Option<ConcurrencyCap>,
    requests: &mut JoinSet<()>,
) {
    // Time zero lies one spawn lead ahead, so the first requests are not late by design;
    // with --start-at, the first phase's time zero is that time (a late start shows as
    // send lag).
    let t0 = ctx
        .start_at
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_else(|| Instant::now() + SPAWN_LEAD);
    let (cap, _grow_cap) = concurrency_cap(cap, t0, &phase.stop);
    let mut later_turns = phase
        .tick_requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let mut last_deadline = t0;
    // Ticks handed out (first turns spawned, later turns granted) and conversations spawned.
    // A spawned request counts as sent only once its task starts it, at its deadline; the
    // scheduler bounds what it hands out itself, so the first N ticks, in deadline order,
    // are the N requests of a count-bounded phase even when tasks run late and out of order.
    let (mut handed, mut spawned) = (0u64, 0u64);
    let room = |handed: u64, spawned: u64| {
        phase.spec.request_count.is_none_or(|l| handed < l)
            && phase.spec.session_count.is_none_or(|l| spawned < l)
    };
    while let Some((offset, entry)) = offsets.next() {
        let deadline = t0 + offset;
        // Hand the request to its own task a little early: that task then waits on the
        // precise timer and is woken straight into its send, instead of queueing behind
        // other ready tasks as a freshly spawned task would.
        tokio::select! {
            biased;
            _ = phase.stop.cancelled() => return,
            _ = phase.all_issued.cancelled() => break,
            _ = tokio::time::sleep_until(deadline.checked_sub(SPAWN_LEAD).unwrap_or(deadline)) => {}
        }
        // Drain finished request tasks so the set stays small.
        while requests.try_join_next().is_some() {}
        let scheduled_ns = ctx.clock.instant_ns(deadline.into_std());
        let tick = (deadline, scheduled_ns);
        if let Some(waiting) = later_turns.as_mut() {
            if grant_waiting(waiting, tick) {
                handed += 1;
                last_deadline = deadline;
                continue;
            }
        }
        if !phase.may_start() || !room(handed, spawned) {
            // A conversation spawned but not started yet (its deadline is ahead) will want
            // ticks for its later turns too.
            let pending = spawned > phase.counting().sessions;
            if later_turns.is_some() && (!phase.idle() || pending) {
                // The conversations in flight may still want ticks for their later turns.
                continue;
            }
            break;
        }
        // A slot under the cap; a later turn that becomes ready meanwhile takes this tick.
        let permit = tokio::select! {
            biased;
            p = take_permit(cap.as_ref(), &phase) => p,
            Some(turn) = async {
                match later_turns.as_mut() {
                    Some(w) => w.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                if turn.send(tick).is_ok() {
                    handed += 1;
                    last_deadline = deadline;
                }
                continue;
            }
        };
        let Some(permit) = permit else {
            break;
        };
        if !phase.may_start() || !room(handed, spawned) {
            break;
        }
        handed += 1;
        spawned += 1;
        last_deadline = deadline;
        let (ctx, phase) = (ctx.clone(), phase.clone());
        requests.spawn(async move {
            tokio::select! {
                biased;
                _ = phase.stop.cancelled() => return,
                _ = S::sleep_until(deadline) => {}
            }
            execute(&ctx, &phase, entry, Some(scheduled_ns)).await;
            drop(permit);
        });
    }
    // Sending is complete once the last scheduled request has actually gone out.
    tokio::select! {
        _ = phase.stop.cancelled() => {}
        _ = phase.all_issued.cancelled() => {}
        _ = S::sleep_until(last_deadline) => {}
    }
}

/// Gives the tick to the first later turn still waiting for one; `false` when none is.
fn grant_waiting(waiting: &mut mpsc::UnboundedReceiver<TickRequest>, tick: (Instant, u64)) -> bool {
    while let Ok(turn) = waiting.try_recv() {
        if turn.send(tick).is_ok() {
            return true;
        }
    }
    false
}

/// A slot under the cap (`Some(None)` without a cap). Blocked by the cap, the request waits
/// (its send lag grows); it is not dropped. `None`: the phase stopped, or sent its last
/// request, meanwhile.
async fn take_permit(
    cap: Option<&Arc<Semaphore>>,
    phase: &PhaseRun,
) -> Option<Option<OwnedSemaphorePermit>> {
    match cap {
        Some(sem) => tokio::select! {
            p = sem.clone().acquire_owned() => p.ok().map(Some),
            _ = phase.stop.cancelled() => None,
            _ = phase.all_issued.cancelled() => None,
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
            Offsets::Rate {
                schedule: Box::new(Schedule::new(r.rate, r.mode, r.smoothness, r.ramp, r.seed)),
                shard: ctx.shard,
                next: 0,
            },
            *cap,
        ),
        PhaseLoad::Trace { trace, cap } => open_loop(
            Offsets::Trace {
                trace: trace.clone(),
                next: 0,
                shard: ctx.shard,
            },
            *cap,
        ),
    }
}

/// Waits until the phase sends no more: its last request is counted as sent, the workers
/// (or the scheduler and the conversations it started) are done, the duration passes
/// (stopping the phase), or the user stops. Returns the requests still running and whether
/// the duration cut the phase.
async fn until_sending_complete(phase: &PhaseRun, senders: Senders) -> (JoinSet<()>, bool) {
    let (mut tasks, mut scheduler) = match senders {
        Senders::Workers(tasks) => (tasks, None),
        Senders::Scheduler(s) => (JoinSet::new(), Some(s)),
    };
    let deadline = phase.spec.duration.map(|d| Instant::now() + d);
    let until_deadline = || async move {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    let mut timed_out = false;
    loop {
        tokio::select! {
            _ = phase.stop.cancelled() => break,
            _ = phase.all_issued.cancelled() => break,
            _ = until_deadline() => { timed_out = true; phase.stop.cancel(); break }
            r = async { scheduler.as_mut().expect("guarded").await }, if scheduler.is_some() => {
                // No new conversation starts; those it started may still send later turns.
                scheduler = None;
                if let Ok(requests) = r {
                    tasks = requests;
                }
            }
            _ = async { while tasks.join_next().await.is_some() {} }, if scheduler.is_none() => break,
        }
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

#[cfg(test)]
mod shard_tests {
    use super::*;
    use crate::timing::RequestRateMode;

    fn drain(mut o: Offsets, n: usize) -> Vec<(Duration, Option<usize>)> {
        (0..n).map_while(|_| o.next()).collect()
    }

    /// The shards' arrivals of a rate are the one schedule's, dealt round-robin: together
    /// they are every arrival of the schedule, each once, at its time.
    #[test]
    fn shards_deal_the_one_schedule_and_the_trace() {
        let rate = || {
            Box::new(Schedule::new(
                200.0,
                RequestRateMode::Poisson,
                1.0,
                None,
                42,
            ))
        };
        let whole = drain(
            Offsets::Rate {
                schedule: rate(),
                shard: None,
                next: 0,
            },
            100,
        );
        let mut union = Vec::new();
        for index in 0..4 {
            let shard = Some(Shard { index, count: 4 });
            let part = drain(
                Offsets::Rate {
                    schedule: rate(),
                    shard,
                    next: 0,
                },
                25,
            );
            for (k, p) in part.iter().enumerate() {
                assert_eq!(
                    *p,
                    whole[k * 4 + index as usize],
                    "shard {index} arrival {k}"
                );
            }
            union.extend(part);
        }
        union.sort();
        assert_eq!(union, whole);
        let trace: Arc<Trace> = Arc::new(
            (0..10)
                .map(|i| (Duration::from_millis(i * 7), i as usize))
                .collect(),
        );
        let part = drain(
            Offsets::Trace {
                trace: trace.clone(),
                next: 0,
                shard: Some(Shard { index: 1, count: 3 }),
            },
            100,
        );
        let entries: Vec<usize> = part.iter().filter_map(|p| p.1).collect();
        assert_eq!(entries, [1, 4, 7]);
    }
}
