//! `run_phase` against a fake server, in tokio's paused clock: no sockets, and time moves
//! only when every task waits on a timer, straight to the next one. So a phase of seconds
//! takes no real time, and every send time below is exact (to tokio's 1 ms timer tick).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aiperf_plugin::{Hook, PhaseStats};
use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::schedule::Schedule;
use super::*;
use crate::export::jsonl::JsonlWriter;
use crate::metrics::processor::RecordProcessor;
use crate::metrics::{ErrorDetails, PhaseSummary};
use crate::plugin::{HookEvent, HookRegistry, HookResult, Plugin};
use crate::tokenizer::Tokenizer;

const MS: Duration = Duration::from_millis(1);

/// One request as the fake server saw it leave.
#[derive(Debug, Clone)]
struct Sent {
    at: Instant,
    conversation: usize,
    turn: u32,
    scheduled_ns: Option<u64>,
    start_ns: u64,
}

/// Answers every request after `latency` (virtual), honouring cancellation as `Transport`
/// does, and logs what it was sent.
struct FakeServer {
    clock: Clock,
    latency: Duration,
    sent: Mutex<Vec<Sent>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl RequestSender for FakeServer {
    fn url_count(&self) -> usize {
        1
    }

    async fn send(
        &self,
        rec: &mut RequestRecord,
        _body: Bytes,
        cancel: &CancellationToken,
        cancel_after: Option<Duration>,
    ) {
        let at = Instant::now();
        rec.start_ns = self.clock.instant_ns(at.into_std());
        self.sent.lock().unwrap().push(Sent {
            at,
            conversation: rec.conversation_index,
            turn: rec.turn_index,
            scheduled_ns: rec.scheduled_ns,
            start_ns: rec.start_ns,
        });
        let n = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.max_in_flight.fetch_max(n, SeqCst);
        let answered = tokio::select! {
            biased;
            _ = cancel.cancelled() => false,
            _ = async {
                match cancel_after {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            } => false,
            _ = tokio::time::sleep(self.latency) => true,
        };
        self.in_flight.fetch_sub(1, SeqCst);
        rec.end_ns = self.clock.instant_ns(Instant::now().into_std());
        if answered {
            rec.ack_ns = Some(rec.end_ns);
            rec.first_output_ns = Some(rec.end_ns);
            rec.content_ns.push(rec.end_ns);
            rec.output_text.push_str("ok");
        } else {
            rec.cancelled = true;
            rec.error = Some(ErrorDetails::new(
                Some(499),
                "RequestCancellationError",
                "request was cancelled before it finished",
            ));
        }
    }

    /// The paused clock drives tokio's timer, not `hires`'s OS thread.
    fn sleep_until(deadline: Instant) -> impl Future<Output = ()> + Send {
        tokio::time::sleep_until(deadline)
    }
}

fn tokenizer() -> Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::load("builtin").unwrap())
        .clone()
}

/// Synthetic conversations of short turns, picked in order, from these flags.
fn build_dataset(flags: &[&str]) -> Dataset {
    let args: Vec<String> = ["-m", "m", "--url", "http://127.0.0.1:9", "--isl", "8"]
        .iter()
        .chain(&["--osl", "4"])
        .chain(flags)
        .map(|s| s.to_string())
        .collect();
    let cfg = crate::config::load(&args).unwrap();
    let shape = crate::endpoint::RequestShape::new(&cfg.endpoint, false);
    Dataset::build(&cfg.input, shape, &tokenizer()).unwrap()
}

/// Four synthetic conversations of one short turn each, picked in order.
fn dataset() -> Dataset {
    static D: OnceLock<Dataset> = OnceLock::new();
    D.get_or_init(|| build_dataset(&["--num-dataset-entries", "4"]))
        .clone()
}

/// Five synthetic conversations of four turns each (as a 5-session × 4-turn `multi_turn`
/// file), picked in order.
fn multi_turn_dataset() -> Dataset {
    static D: OnceLock<Dataset> = OnceLock::new();
    D.get_or_init(|| {
        build_dataset(&[
            "--num-dataset-entries",
            "5",
            "--conversation-turn-mean",
            "4",
        ])
    })
    .clone()
}

/// A run context around a [`FakeServer`], with a real record processor behind it.
struct Fixture {
    ctx: Arc<RunContext<FakeServer>>,
    processor: RecordProcessor,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new(clock: Clock, latency: Duration) -> Self {
        Self::with_dataset(clock, latency, dataset())
    }

    fn with_dataset(clock: Clock, latency: Duration, dataset: Dataset) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ids = dataset.entries.iter().map(|e| e.conversation_id.clone());
        let jsonl = JsonlWriter::create(&dir.path().join("x.jsonl"), clock, ids.collect());
        let processor = RecordProcessor::start(tokenizer(), false, None, jsonl.unwrap()).unwrap();
        let ctx = Arc::new(RunContext {
            clock,
            transport: FakeServer {
                clock,
                latency,
                sent: Mutex::new(Vec::new()),
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
            },
            dataset,
            streaming: true,
            records: processor.sender(),
            next_request: AtomicU64::new(0),
            stop_sending: CancellationToken::new(),
            cancel_in_flight: CancellationToken::new(),
            shard: None,
            start_at_wall_ns: None,
            start_at: std::sync::Mutex::new(None),
        });
        Self {
            ctx,
            processor,
            _dir: dir,
        }
    }

    /// Runs the phase; its final stats and how long it took (virtual time).
    async fn run(&self, spec: PhaseSpec, hooks: &HookRegistry) -> (PhaseStats, Duration) {
        let t = Instant::now();
        let (tracker, _) = run_phase(&self.ctx, spec, hooks, |_| None::<()>).await;
        (tracker.stats(), t.elapsed())
    }

    fn sent(&self) -> Vec<Sent> {
        self.ctx.transport.sent.lock().unwrap().clone()
    }

    fn max_in_flight(&self) -> usize {
        self.ctx.transport.max_in_flight.load(SeqCst)
    }

    /// The profiling summary once every record is processed; stops the processor.
    async fn summary(self) -> PhaseSummary {
        let Fixture {
            ctx, mut processor, ..
        } = self;
        let summary = processor.summarize(PhaseKind::Profiling).await;
        drop(ctx);
        processor.finish().await.unwrap();
        summary
    }
}

/// Runs `test` on a current-thread runtime whose clock starts paused. The run's clock is made
/// first, so every virtual instant lies after its origin.
fn paused<F: Future>(test: impl FnOnce(Clock) -> F) -> F::Output {
    let clock = Clock::new();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(test(clock))
}

fn spec(load: PhaseLoad, request_count: Option<u64>) -> PhaseSpec {
    PhaseSpec {
        kind: PhaseKind::Profiling,
        request_count,
        session_count: None,
        duration: None,
        grace_period: Duration::from_secs(30),
        load,
        cancellation: None,
        seed: 7,
    }
}

fn closed_loop(concurrency: usize) -> PhaseLoad {
    PhaseLoad::ClosedLoop {
        concurrency,
        ramp: None,
    }
}

fn constant_rate(rate: f64, cap: Option<ConcurrencyCap>) -> PhaseLoad {
    PhaseLoad::Rate {
        rate: RateSpec {
            rate,
            mode: RequestRateMode::Constant,
            smoothness: 1.0,
            ramp: None,
            seed: 7,
        },
        cap,
    }
}

/// Send times relative to the first send, in whole ms.
fn send_offsets_ms(sent: &[Sent]) -> Vec<u128> {
    sent.iter()
        .map(|s| (s.at - sent[0].at).as_millis())
        .collect()
}

/// Scheduled times relative to the first one, exactly.
fn scheduled_offsets(sent: &[Sent]) -> Vec<Duration> {
    let first = sent[0].scheduled_ns.unwrap();
    sent.iter()
        .map(|s| Duration::from_nanos(s.scheduled_ns.unwrap() - first))
        .collect()
}

#[test]
fn closed_loop_sends_exactly_the_count_never_more_than_concurrency_at_once() {
    let (stats, elapsed, sent, max, summary) = paused(|clock| async move {
        let fx = Fixture::new(clock, 50 * MS);
        let (stats, elapsed) = fx
            .run(spec(closed_loop(3), Some(10)), &HookRegistry::empty())
            .await;
        let (sent, max) = (fx.sent(), fx.max_in_flight());
        (stats, elapsed, sent, max, fx.summary().await)
    });
    assert_eq!(sent.len(), 10);
    assert_eq!(max, 3, "three workers, all busy at once");
    // Credits in order, entries picked sequentially: 0, 1, 2, 3, 0, ...
    let conversations: Vec<usize> = sent.iter().map(|s| s.conversation).collect();
    assert_eq!(conversations, [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]);
    assert_eq!(
        send_offsets_ms(&sent),
        [0, 0, 0, 50, 50, 50, 100, 100, 100, 150]
    );
    assert!(sent.iter().all(|s| s.scheduled_ns.is_none()));
    assert_eq!(
        (stats.sent, stats.completed, stats.errors, stats.cancelled),
        (10, 10, 0, 0)
    );
    assert_eq!(
        (stats.in_flight, stats.expected, stats.timed_out),
        (0, Some(10), false)
    );
    assert_eq!(stats.max_send_lag_ms, None, "closed loop has no schedule");
    assert_eq!(elapsed, 200 * MS);
    assert_eq!((summary.success, summary.error_count), (10, 0));
}

#[test]
fn closed_loop_never_starts_more_workers_than_requests() {
    let (sent, max) = paused(|clock| async move {
        let fx = Fixture::new(clock, 50 * MS);
        fx.run(spec(closed_loop(8), Some(2)), &HookRegistry::empty())
            .await;
        (fx.sent(), fx.max_in_flight())
    });
    assert_eq!((sent.len(), max), (2, 2));
}

#[test]
fn closed_loop_ramp_staggers_the_workers() {
    let sent = paused(|clock| async move {
        let fx = Fixture::new(clock, Duration::from_secs(1));
        let load = PhaseLoad::ClosedLoop {
            concurrency: 3,
            ramp: Some(300 * MS),
        };
        fx.run(spec(load, Some(4)), &HookRegistry::empty()).await;
        fx.sent()
    });
    // Worker i joins at 300 ms · i/3; the fourth request waits for the first to finish.
    assert_eq!(send_offsets_ms(&sent), [0, 100, 200, 1000]);
}

#[test]
fn a_duration_stops_sending_and_cancels_what_is_in_flight_after_the_grace_period() {
    let (stats, elapsed, sent, summary) = paused(|clock| async move {
        let fx = Fixture::new(clock, 300 * MS);
        let phase = PhaseSpec {
            duration: Some(Duration::from_secs(1)),
            grace_period: 100 * MS,
            ..spec(closed_loop(2), None)
        };
        let (stats, elapsed) = fx.run(phase, &HookRegistry::empty()).await;
        let sent = fx.sent();
        (stats, elapsed, sent, fx.summary().await)
    });
    // Two workers send at 0, 300, 600 and 900 ms; at 1 s sending stops; the two requests
    // sent at 900 ms (due at 1.2 s) are cancelled when the grace period ends, at 1.1 s.
    assert_eq!(send_offsets_ms(&sent), [0, 0, 300, 300, 600, 600, 900, 900]);
    assert_eq!(
        (stats.sent, stats.completed, stats.cancelled, stats.errors),
        (8, 6, 2, 0)
    );
    assert_eq!((stats.in_flight, stats.expected), (0, None));
    assert!(stats.timed_out);
    assert_eq!(elapsed, 1100 * MS);
    assert_eq!((summary.success, summary.cancelled), (6, 2));
}

#[test]
fn a_duration_with_nothing_in_flight_ends_the_phase_at_once() {
    let (stats, elapsed, sent) = paused(|clock| async move {
        let fx = Fixture::new(clock, 5 * MS);
        let phase = PhaseSpec {
            duration: Some(Duration::from_secs(1)),
            grace_period: 100 * MS,
            ..spec(constant_rate(9.5, None), None)
        };
        let (stats, elapsed) = fx.run(phase, &HookRegistry::empty()).await;
        (stats, elapsed, fx.sent())
    });
    // Every 105.3 ms: ten requests by 947 ms, all answered 5 ms later; the eleventh would
    // leave after the deadline, so the phase ends at 1 s without a grace period.
    assert_eq!(sent.len(), 10);
    assert_eq!((stats.sent, stats.completed, stats.cancelled), (10, 10, 0));
    assert!(stats.timed_out, "the duration cut the schedule");
    assert_eq!(elapsed, 1000 * MS);
}

/// An open-loop rate phase: its sends, next to the offsets `schedule.rs` gives.
fn rate_run(mode: RequestRateMode) -> (Vec<Sent>, Vec<Duration>, PhaseStats) {
    let rate = RateSpec {
        rate: 50.0,
        mode,
        smoothness: 1.0,
        ramp: None,
        seed: 11,
    };
    let mut schedule = Schedule::new(rate.rate, rate.mode, 1.0, None, rate.seed);
    let expected: Vec<Duration> = (0..6).map(|_| schedule.next_offset()).collect();
    let (sent, stats) = paused(|clock| async move {
        let fx = Fixture::new(clock, 5 * MS);
        let load = PhaseLoad::Rate { rate, cap: None };
        let (stats, _) = fx.run(spec(load, Some(6)), &HookRegistry::empty()).await;
        (fx.sent(), stats)
    });
    (sent, expected, stats)
}

#[test]
fn a_constant_rate_sends_on_the_schedules_offsets() {
    let (sent, expected, stats) = rate_run(RequestRateMode::Constant);
    assert_eq!(sent.len(), 6);
    assert_eq!(expected[1], 20 * MS);
    assert_eq!(scheduled_offsets(&sent), expected);
    // Whole milliseconds: sent exactly when scheduled.
    assert_eq!(send_offsets_ms(&sent), [0, 20, 40, 60, 80, 100]);
    assert!(sent.iter().all(|s| s.start_ns == s.scheduled_ns.unwrap()));
    assert_eq!((stats.sent, stats.late_sends), (6, 0));
    assert_eq!(stats.max_send_lag_ms, Some(0.0));
}

#[test]
fn a_poisson_rate_sends_on_the_schedules_seeded_offsets() {
    let (sent, expected, stats) = rate_run(RequestRateMode::Poisson);
    assert_eq!(scheduled_offsets(&sent), expected);
    // Within one tick of tokio's millisecond timer.
    for s in &sent {
        let lag = s.start_ns - s.scheduled_ns.unwrap();
        assert!(lag < 1_000_000, "{s:?}");
    }
    assert_eq!((stats.sent, stats.late_sends), (6, 0));
}

#[test]
fn a_trace_replays_its_entries_in_order_at_their_offsets() {
    let trace: Trace = vec![
        (Duration::ZERO, 2),
        (40 * MS, 0),
        (41 * MS, 3),
        (95 * MS, 1),
    ];
    let offsets: Vec<Duration> = trace.iter().map(|t| t.0).collect();
    let (sent, stats) = paused(|clock| async move {
        let fx = Fixture::new(clock, 5 * MS);
        let load = PhaseLoad::Trace {
            trace: Arc::new(trace),
            cap: None,
        };
        let (stats, _) = fx.run(spec(load, Some(4)), &HookRegistry::empty()).await;
        (fx.sent(), stats)
    });
    let conversations: Vec<usize> = sent.iter().map(|s| s.conversation).collect();
    assert_eq!(conversations, [2, 0, 3, 1]);
    assert_eq!(scheduled_offsets(&sent), offsets);
    assert_eq!(send_offsets_ms(&sent), [0, 40, 41, 95]);
    assert_eq!((stats.sent, stats.completed, stats.late_sends), (4, 4, 0));
}

#[test]
fn the_open_loop_cap_delays_requests_but_never_drops_one() {
    let (sent, max, stats) = paused(|clock| async move {
        let fx = Fixture::new(clock, 50 * MS);
        let cap = ConcurrencyCap {
            limit: 2,
            ramp: None,
        };
        let load = constant_rate(100.0, Some(cap));
        let (stats, _) = fx.run(spec(load, Some(8)), &HookRegistry::empty()).await;
        (fx.sent(), fx.max_in_flight(), stats)
    });
    assert_eq!(max, 2);
    // Scheduled every 10 ms; from the third on, each waits for a slot to free up.
    let scheduled: Vec<u128> = scheduled_offsets(&sent)
        .iter()
        .map(|d| d.as_millis())
        .collect();
    assert_eq!(scheduled, [0, 10, 20, 30, 40, 50, 60, 70]);
    assert_eq!(send_offsets_ms(&sent), [0, 10, 50, 60, 100, 110, 150, 160]);
    assert_eq!((stats.sent, stats.completed, stats.cancelled), (8, 8, 0));
    assert_eq!(stats.late_sends, 6);
    assert_eq!(stats.max_send_lag_ms, Some(90.0));
}

#[test]
fn the_open_loop_cap_ramp_adds_one_slot_at_a_time() {
    let sent = paused(|clock| async move {
        let fx = Fixture::new(clock, Duration::from_secs(1));
        let cap = ConcurrencyCap {
            limit: 3,
            ramp: Some(300 * MS),
        };
        let load = constant_rate(1000.0, Some(cap));
        fx.run(spec(load, Some(4)), &HookRegistry::empty()).await;
        fx.sent()
    });
    // One slot at first, one more at 100 and at 200 ms; the fourth waits for the first.
    assert_eq!(send_offsets_ms(&sent), [0, 100, 200, 1000]);
}

#[test]
fn interrupting_stops_sending_and_the_grace_period_cuts_the_rest() {
    let (stats, elapsed, sent) = paused(|clock| async move {
        let fx = Fixture::new(clock, 100 * MS);
        let stop = fx.ctx.stop_sending.clone();
        tokio::spawn(async move {
            tokio::time::sleep(120 * MS).await;
            stop.cancel();
        });
        let phase = PhaseSpec {
            grace_period: 30 * MS,
            ..spec(closed_loop(2), Some(100))
        };
        let (stats, elapsed) = fx.run(phase, &HookRegistry::empty()).await;
        (stats, elapsed, fx.sent())
    });
    assert_eq!(send_offsets_ms(&sent), [0, 0, 100, 100]);
    assert_eq!((stats.sent, stats.completed, stats.cancelled), (4, 2, 2));
    assert!(stats.timed_out);
    assert_eq!(elapsed, 150 * MS);
}

#[test]
fn request_cancellation_cancels_its_share_after_the_delay() {
    let (stats, sent, summary) = paused(|clock| async move {
        let fx = Fixture::new(clock, 50 * MS);
        let phase = PhaseSpec {
            cancellation: Some((100.0, 20 * MS)),
            ..spec(closed_loop(1), Some(3))
        };
        let (stats, _) = fx.run(phase, &HookRegistry::empty()).await;
        let sent = fx.sent();
        (stats, sent, fx.summary().await)
    });
    assert_eq!(send_offsets_ms(&sent), [0, 20, 40]);
    assert_eq!((stats.sent, stats.completed, stats.cancelled), (3, 0, 3));
    assert!(!stats.timed_out);
    assert_eq!((summary.success, summary.cancelled), (0, 3));
}

/// Logs every hook it gets; waits `start_delay` in `phase_start`.
struct Recorder {
    log: Arc<Mutex<Vec<(Hook, PhaseStats)>>>,
    start_delay: Duration,
}

#[async_trait::async_trait]
impl Plugin for Recorder {
    fn hooks(&self) -> Vec<Hook> {
        Hook::ALL.to_vec()
    }

    async fn on_event(&mut self, e: &HookEvent) -> HookResult {
        if e.hook == Hook::PhaseStart {
            tokio::time::sleep(self.start_delay).await;
        }
        let stats = e.stats.clone().unwrap_or_default();
        self.log.lock().unwrap().push((e.hook, stats));
        Ok(())
    }
}

/// Runs a phase with a [`Recorder`]; the hooks it saw and the fake server's log.
fn with_recorder(
    start_delay: Duration,
    phase: PhaseSpec,
    latency: Duration,
) -> (Vec<(Hook, PhaseStats)>, Vec<Sent>, Instant, Instant) {
    paused(|clock| async move {
        let log = Arc::new(Mutex::new(Vec::new()));
        let recorder = Recorder {
            log: log.clone(),
            start_delay,
        };
        let hooks =
            HookRegistry::with_plugin("recorder", Box::new(recorder), 10 * start_delay.max(MS));
        let fx = Fixture::new(clock, latency);
        let started = Instant::now();
        fx.run(phase, &hooks).await;
        let ended = Instant::now();
        hooks.finish().await;
        let log = log.lock().unwrap().clone();
        (log, fx.sent(), started, ended)
    })
}

#[test]
fn hooks_follow_the_lifecycle_of_a_phase_cut_by_its_duration() {
    let phase = PhaseSpec {
        duration: Some(Duration::from_secs(1)),
        grace_period: 100 * MS,
        ..spec(closed_loop(2), None)
    };
    let (log, ..) = with_recorder(Duration::ZERO, phase, 300 * MS);
    let hooks: Vec<Hook> = log.iter().map(|(h, _)| *h).collect();
    assert_eq!(
        hooks,
        [
            Hook::PhaseStart,
            Hook::PhaseSendingComplete,
            Hook::PhaseTimeout
        ]
    );
    let (start, sending_complete, timeout) = (&log[0].1, &log[1].1, &log[2].1);
    assert_eq!((start.phase.as_str(), start.sent), ("profiling", 0));
    assert_eq!(start.sending_complete_time_ns, None);
    assert!(sending_complete.sending_complete_time_ns.is_some());
    assert_eq!(sending_complete.end_time_ns, None);
    assert_eq!((sending_complete.sent, sending_complete.in_flight), (8, 2));
    assert!(timeout.timed_out && timeout.end_time_ns.is_some());
    assert_eq!(
        (timeout.completed, timeout.cancelled, timeout.in_flight),
        (6, 2, 0)
    );
}

#[test]
fn a_count_bounded_phase_has_no_timeout_hook_and_waits_for_phase_start() {
    let (log, sent, started, ended) =
        with_recorder(250 * MS, spec(closed_loop(1), Some(2)), 10 * MS);
    let hooks: Vec<Hook> = log.iter().map(|(h, _)| *h).collect();
    assert_eq!(hooks, [Hook::PhaseStart, Hook::PhaseSendingComplete]);
    // The first request leaves once phase_start has been handled, not before.
    assert_eq!(sent[0].at - started, 250 * MS);
    assert_eq!(ended - started, 270 * MS);
    assert_eq!(log[1].1.sent, 2);
}

#[test]
fn sending_completes_only_once_the_last_request_is_counted_as_sent() {
    // Open loop with a cap: the scheduler claims the last credit, then waits for a slot and
    // spawns the request, which leaves later; completing the sending at the claim reported
    // one request short.
    let cap = ConcurrencyCap {
        limit: 1,
        ramp: None,
    };
    let phase = spec(constant_rate(100.0, Some(cap)), Some(10));
    let (log, sent, ..) = with_recorder(Duration::ZERO, phase, 30 * MS);
    let hooks: Vec<Hook> = log.iter().map(|(h, _)| *h).collect();
    assert_eq!(hooks, [Hook::PhaseStart, Hook::PhaseSendingComplete]);
    assert_eq!(sent.len(), 10);
    assert_eq!(log[1].1.sent, 10, "{:?}", log[1].1);
    // Closed loop with several workers: the same.
    let (log, ..) = with_recorder(Duration::ZERO, spec(closed_loop(4), Some(9)), 10 * MS);
    assert_eq!(log[1].1.sent, 9, "{:?}", log[1].1);
}

/// (conversation, turn) of each request, in the order they left.
fn turns(sent: &[Sent]) -> Vec<(usize, u32)> {
    sent.iter().map(|s| (s.conversation, s.turn)).collect()
}

/// A phase over [`multi_turn_dataset`]: the requests sent and the hooks seen.
fn multi_turn_run(
    phase: PhaseSpec,
    latency: Duration,
) -> (Vec<Sent>, Vec<(Hook, PhaseStats)>, PhaseStats) {
    paused(|clock| async move {
        let log = Arc::new(Mutex::new(Vec::new()));
        let recorder = Recorder {
            log: log.clone(),
            start_delay: Duration::ZERO,
        };
        let hooks = HookRegistry::with_plugin("recorder", Box::new(recorder), MS);
        let fx = Fixture::with_dataset(clock, latency, multi_turn_dataset());
        let (stats, _) = fx.run(phase, &hooks).await;
        hooks.finish().await;
        let log = log.lock().unwrap().clone();
        (fx.sent(), log, stats)
    })
}

/// The stats of the `phase_sending_complete` hook.
fn sending_complete(log: &[(Hook, PhaseStats)]) -> &PhaseStats {
    log.iter()
        .find(|(h, _)| *h == Hook::PhaseSendingComplete)
        .map(|(_, s)| s)
        .expect("phase_sending_complete")
}

#[test]
fn the_request_count_counts_turns_and_cuts_conversations_in_flight_after_their_turn() {
    // AIPerf: 5 conversations × 4 turns, concurrency 2, --request-count 10: conversations 0
    // and 1 whole, then 2 and 3 stop after their first turn.
    let phase = spec(closed_loop(2), Some(10));
    let (sent, log, last) = multi_turn_run(phase, 10 * MS);
    let mut got = turns(&sent);
    got.sort();
    let mut want: Vec<(usize, u32)> = (0..2).flat_map(|c| (0..4).map(move |t| (c, t))).collect();
    want.extend([(2, 0), (3, 0)]);
    assert_eq!(got, want);
    // Each pair of turns leaves together, a turn every 10 ms.
    assert_eq!(
        send_offsets_ms(&sent),
        [0, 0, 10, 10, 20, 20, 30, 30, 40, 40]
    );
    let sc = sending_complete(&log);
    assert_eq!((sc.sent, sc.expected), (10, Some(10)));
    assert_eq!((last.sent, last.completed, last.in_flight), (10, 10, 0));
}

#[test]
fn the_conversation_count_sends_whole_conversations() {
    // AIPerf: --conversation-num 3 sends 12 requests, 3 whole conversations.
    let phase = PhaseSpec {
        session_count: Some(3),
        ..spec(closed_loop(2), None)
    };
    let (sent, log, last) = multi_turn_run(phase, 10 * MS);
    let mut got = turns(&sent);
    got.sort();
    let want: Vec<(usize, u32)> = (0..3).flat_map(|c| (0..4).map(move |t| (c, t))).collect();
    assert_eq!(got, want);
    let sc = sending_complete(&log);
    assert_eq!(
        (sc.sent, sc.expected),
        (12, Some(12)),
        "expected from the dataset"
    );
    assert_eq!((last.sent, last.completed), (12, 12));
}

#[test]
fn with_both_counts_the_first_limit_reached_ends_sending() {
    let both = |requests, sessions| {
        let phase = PhaseSpec {
            session_count: Some(sessions),
            ..spec(closed_loop(2), Some(requests))
        };
        let (sent, log, _) = multi_turn_run(phase, 10 * MS);
        let sc = sending_complete(&log).clone();
        (sent.len(), sc.sent, sc.expected)
    };
    assert_eq!(both(10, 3), (10, 10, Some(10)));
    assert_eq!(both(20, 3), (12, 12, Some(12)));
}

#[test]
fn open_loop_counts_every_turn_and_later_turns_take_the_rates_ticks_first() {
    // A tick every 10 ms; each turn takes 15 ms. As in AIPerf, a later turn whose reply is
    // in takes the next tick before a new conversation does: conversation 0 at 0 ms, 1 at
    // 10 (0's reply is not in yet), then 0's second turn at 20 and 1's at 30. That is the
    // fourth request, the last: nothing else is sent.
    let phase = spec(constant_rate(100.0, None), Some(4));
    let (sent, log, last) = multi_turn_run(phase, 15 * MS);
    assert_eq!(turns(&sent), [(0, 0), (1, 0), (0, 1), (1, 1)]);
    assert_eq!(send_offsets_ms(&sent), [0, 10, 20, 30]);
    // Later turns are scheduled on their tick too, and leave on it.
    assert_eq!(scheduled_offsets(&sent), [0, 10, 20, 30].map(|ms| ms * MS));
    let sc = sending_complete(&log);
    assert_eq!(sc.sent, 4);
    assert_eq!((last.completed, last.cancelled, last.late_sends), (4, 0, 0));
}

#[test]
fn with_a_cap_later_turns_still_get_ticks_while_new_conversations_wait() {
    // One conversation at a time: the scheduler waits for the slot, and meanwhile gives the
    // ticks to the conversation's later turns (no deadlock).
    let cap = ConcurrencyCap {
        limit: 1,
        ramp: None,
    };
    let phase = PhaseSpec {
        session_count: Some(2),
        ..spec(constant_rate(100.0, Some(cap)), None)
    };
    let (sent, log, _) = multi_turn_run(phase, 15 * MS);
    assert_eq!(
        turns(&sent),
        [
            (0, 0),
            (0, 1),
            (0, 2),
            (0, 3),
            (1, 0),
            (1, 1),
            (1, 2),
            (1, 3)
        ]
    );
    assert_eq!(sending_complete(&log).sent, 8);
}

#[test]
fn open_loop_with_a_conversation_count_sends_them_whole() {
    let phase = PhaseSpec {
        session_count: Some(3),
        ..spec(constant_rate(100.0, None), None)
    };
    let (sent, log, _) = multi_turn_run(phase, 15 * MS);
    let mut got = turns(&sent);
    got.sort();
    let want: Vec<(usize, u32)> = (0..3).flat_map(|c| (0..4).map(move |t| (c, t))).collect();
    assert_eq!(got, want);
    let sc = sending_complete(&log);
    assert_eq!((sc.sent, sc.expected), (12, Some(12)));
}

#[test]
fn a_failed_turn_ends_its_conversation_and_no_longer_holds_the_phase_open() {
    // Every request is cancelled 5 ms after sending (an error): each conversation stops at
    // its first turn, and the conversation-bounded phase ends once two have started.
    let phase = PhaseSpec {
        session_count: Some(2),
        cancellation: Some((100.0, 5 * MS)),
        ..spec(closed_loop(1), None)
    };
    let (sent, log, last) = multi_turn_run(phase, 50 * MS);
    assert_eq!(turns(&sent), [(0, 0), (1, 0)]);
    let sc = sending_complete(&log);
    assert_eq!(sc.sent, 2);
    assert_eq!((last.sent, last.cancelled), (2, 2));
}

#[test]
fn a_warmup_phase_counts_the_same_way() {
    let phase = PhaseSpec {
        kind: PhaseKind::Warmup,
        session_count: Some(1),
        ..spec(closed_loop(2), Some(3))
    };
    let (sent, log, _) = multi_turn_run(phase, 10 * MS);
    assert_eq!(turns(&sent), [(0, 0), (0, 1), (0, 2)]);
    let sc = sending_complete(&log);
    assert_eq!(
        (sc.phase.as_str(), sc.sent, sc.expected),
        ("warmup", 3, Some(3))
    );
}
