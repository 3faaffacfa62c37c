//! What plugins see while a phase runs: `request_records` (finished requests, in batches)
//! and `progress` (live counters and rolling metrics every few seconds).
//!
//! Neither is on the hot path. The record processor's aggregator thread pushes each
//! finished request into the [`RecordFeed`] (a short lock, no I/O); a batch goes out when it
//! is full, every [`FLUSH_EVERY`], and at each phase's end (before `phase_complete`, so a
//! plugin has a phase's records before its summary). Each plugin has a bounded queue
//! (`records_queue` batches): when a slow plugin has that many batches waiting, the next
//! batch is dropped for it and counted (`plugins.<name>.records.dropped`), never waited
//! for. A `progress` tick is skipped (and counted) while the plugin still has the last one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use aiperf_plugin::{Hook, PhaseStats, ProgressWindow, WindowStat};
use serde_json::Value;
use tokio::sync::mpsc;

use super::{Delivery, HookEvent, PluginStatus};
use crate::metrics::stats::Stats;
use crate::metrics::PhaseKind;

/// The most records in one `request_records` event.
pub const BATCH_MAX: usize = 256;
/// A batch that has not filled goes out after this long.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// The most finished requests kept for rolling windows (the oldest go first).
const MAX_POINTS: usize = 500_000;

/// What the rolling window needs of one finished request.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RecordPoint {
    pub error: bool,
    pub ttft_ms: Option<f64>,
    pub itl_ms: Option<f64>,
    pub latency_ms: Option<f64>,
    pub output_tokens: u64,
    /// How late it left (rate and trace modes): `start − scheduled`, in ms.
    pub send_lag_ms: Option<f64>,
}

/// Finished requests of the last `keep` (at most [`MAX_POINTS`]), for rolling metrics: fed
/// by the record processor's aggregator thread (a short lock, no I/O), read by the plugins'
/// `progress` ticks and by the live dashboard (`ui`), never by the request path.
pub struct RollingWindow {
    keep: Duration,
    points: Mutex<VecDeque<(Instant, PhaseKind, RecordPoint)>>,
}

/// The rolling metrics of one phase over a span: counts, and the values' statistics (`None`
/// without values).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowStats {
    /// The span covered: the one asked for, or the phase so far if shorter.
    pub window_sec: f64,
    pub requests: u64,
    pub errors: u64,
    pub output_tokens: u64,
    pub ttft: Option<Stats>,
    pub itl: Option<Stats>,
    pub latency: Option<Stats>,
    pub send_lag: Option<Stats>,
}

impl WindowStats {
    fn per_sec(&self, n: u64) -> f64 {
        if self.window_sec > 0.0 {
            n as f64 / self.window_sec
        } else {
            0.0
        }
    }

    /// Finished requests per second over the window.
    pub fn request_throughput(&self) -> f64 {
        self.per_sec(self.requests)
    }

    /// Output tokens per second over the window.
    pub fn output_token_throughput(&self) -> f64 {
        self.per_sec(self.output_tokens)
    }

    /// As a `progress` event gives it to the plugins (TTFT, ITL and latency).
    pub fn progress(&self) -> ProgressWindow {
        let mut metrics = std::collections::BTreeMap::new();
        for (name, s) in [
            ("time_to_first_token", &self.ttft),
            ("inter_token_latency", &self.itl),
            ("request_latency", &self.latency),
        ] {
            if let Some(s) = s {
                metrics.insert(name.to_string(), window_stat(s));
            }
        }
        ProgressWindow {
            window_sec: self.window_sec,
            requests: self.requests,
            errors: self.errors,
            request_throughput: self.request_throughput(),
            output_token_throughput: self.output_token_throughput(),
            metrics,
        }
    }
}

impl RollingWindow {
    pub fn new(keep: Duration) -> Self {
        Self {
            keep,
            points: Mutex::new(VecDeque::new()),
        }
    }

    /// One finished request of `phase`; points older than `keep` are let go.
    pub fn push(&self, phase: PhaseKind, point: RecordPoint) {
        let now = Instant::now();
        let mut points = self.points.lock().unwrap_or_else(|e| e.into_inner());
        points.push_back((now, phase, point));
        while points.len() > MAX_POINTS
            || points
                .front()
                .is_some_and(|(t, ..)| now.duration_since(*t) > self.keep)
        {
            points.pop_front();
        }
    }

    /// Rolling metrics of `phase` over the last `span` (or the phase so far, if shorter:
    /// `phase_sec`). The values are copied under the lock and sorted after it.
    pub fn stats(&self, phase: PhaseKind, span: Duration, phase_sec: f64) -> WindowStats {
        let now = Instant::now();
        let (mut ttft, mut itl, mut lat, mut lag) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut w = WindowStats {
            window_sec: span.as_secs_f64().min(phase_sec.max(0.0)),
            ..WindowStats::default()
        };
        {
            let points = self.points.lock().unwrap_or_else(|e| e.into_inner());
            for (_, _, p) in points
                .iter()
                .rev()
                .take_while(|(t, ..)| now.duration_since(*t) <= span)
                .filter(|(_, k, _)| *k == phase)
            {
                w.requests += 1;
                w.errors += u64::from(p.error);
                w.output_tokens += p.output_tokens;
                ttft.extend(p.ttft_ms);
                itl.extend(p.itl_ms);
                lat.extend(p.latency_ms);
                lag.extend(p.send_lag_ms);
            }
        }
        w.ttft = Stats::compute(&mut ttft);
        w.itl = Stats::compute(&mut itl);
        w.latency = Stats::compute(&mut lat);
        w.send_lag = Stats::compute(&mut lag);
        w
    }
}

/// How many records and batches one plugin got and lost; serialised as its
/// `plugins.<name>.records`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RecordCounts {
    pub delivered: u64,
    pub dropped: u64,
    pub dropped_batches: u64,
}

/// How many `progress` events one plugin got, and the ticks skipped because it still had
/// the last one; serialised as its `plugins.<name>.progress`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ProgressCounts {
    pub sent: u64,
    pub skipped: u64,
}

/// One plugin's end of the feed: its runner's queue and how much of it is records.
pub(super) struct Subscriber {
    pub tx: mpsc::UnboundedSender<Delivery>,
    /// Batches queued and not yet handled.
    pub pending: Arc<AtomicUsize>,
    pub cap: usize,
    pub status: Arc<Mutex<PluginStatus>>,
}

impl Subscriber {
    /// Queues a batch unless the plugin already has `cap` waiting; counts either way.
    fn offer(&self, phase: PhaseKind, records: &Arc<Vec<Value>>) {
        let n = records.len() as u64;
        let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let counts = st.records.get_or_insert_with(RecordCounts::default);
        if self.pending.load(Ordering::Acquire) >= self.cap {
            counts.dropped += n;
            counts.dropped_batches += 1;
            return;
        }
        let mut event = HookEvent::new(Hook::RequestRecords, Some(phase), None);
        event.records = Some(records.clone());
        event.dropped_records = Some(counts.dropped);
        self.pending.fetch_add(1, Ordering::AcqRel);
        let sent = self.tx.send(Delivery {
            event: Arc::new(event),
            ack: None,
            done: Some(self.pending.clone()),
        });
        match sent {
            Ok(()) => counts.delivered += n,
            Err(_) => {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                counts.dropped += n;
                counts.dropped_batches += 1;
            }
        }
    }
}

struct State {
    /// The phase of the records in `batch`.
    phase: Option<PhaseKind>,
    batch: Vec<Value>,
    /// Cleared by [`RecordFeed::close`]: nothing more is sent.
    subscribers: Vec<Subscriber>,
}

struct Inner {
    state: Mutex<State>,
    /// Whether any plugin takes records (else only window points are kept).
    wants_records: bool,
    /// Finished requests for rolling windows, when a plugin takes progress (kept for the
    /// longest window asked for).
    window: Option<RollingWindow>,
}

/// The records feed: cheap to clone; every clone is the same feed.
#[derive(Clone)]
pub struct RecordFeed {
    inner: Arc<Inner>,
}

impl RecordFeed {
    pub(super) fn new(subscribers: Vec<Subscriber>, wants_points: bool, keep: Duration) -> Self {
        let feed = Self {
            inner: Arc::new(Inner {
                wants_records: !subscribers.is_empty(),
                window: wants_points.then(|| RollingWindow::new(keep)),
                state: Mutex::new(State {
                    phase: None,
                    batch: Vec::new(),
                    subscribers,
                }),
            }),
        };
        if feed.inner.wants_records {
            spawn_flusher(Arc::downgrade(&feed.inner));
        }
        feed
    }

    /// Whether any plugin takes `request_records` (so records must be built as JSON).
    pub fn wants_records(&self) -> bool {
        self.inner.wants_records
    }

    /// One finished request: its JSONL line (when [`Self::wants_records`]) and its point.
    pub fn push(&self, phase: PhaseKind, record: Option<Value>, point: RecordPoint) {
        if let Some(w) = &self.inner.window {
            w.push(phase, point);
        }
        let Some(record) = record.filter(|_| self.inner.wants_records) else {
            return;
        };
        let mut st = self.lock();
        if st.phase != Some(phase) {
            if let Some(batch) = take_batch(&mut st) {
                dispatch(&st, batch);
            }
            st.phase = Some(phase);
        }
        st.batch.push(record);
        if st.batch.len() >= BATCH_MAX {
            if let Some(batch) = take_batch(&mut st) {
                dispatch(&st, batch);
            }
        }
    }

    /// Sends the batch now, whatever its size (a phase's end).
    pub fn flush(&self) {
        flush(&self.inner);
    }

    /// Sends what is left and lets go of the plugins' queues, so their runners can end.
    pub(super) fn close(&self) {
        self.flush();
        self.lock().subscribers.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rolling metrics of `phase` over the last `span` (or the phase so far, if shorter).
    pub fn window(&self, phase: PhaseKind, span: Duration, phase_sec: f64) -> ProgressWindow {
        match &self.inner.window {
            Some(w) => w.stats(phase, span, phase_sec).progress(),
            None => WindowStats {
                window_sec: span.as_secs_f64().min(phase_sec.max(0.0)),
                ..WindowStats::default()
            }
            .progress(),
        }
    }
}

fn window_stat(s: &Stats) -> WindowStat {
    WindowStat {
        unit: "ms".into(),
        count: s.count,
        avg: s.avg,
        min: s.min,
        max: s.max,
        p50: s.p50,
        p90: s.p90,
        p99: s.p99,
    }
}

fn take_batch(st: &mut State) -> Option<(PhaseKind, Arc<Vec<Value>>)> {
    let phase = st.phase?;
    if st.batch.is_empty() {
        return None;
    }
    let batch = std::mem::replace(&mut st.batch, Vec::with_capacity(BATCH_MAX));
    Some((phase, Arc::new(batch)))
}

fn dispatch(st: &State, (phase, records): (PhaseKind, Arc<Vec<Value>>)) {
    for s in &st.subscribers {
        s.offer(phase, &records);
    }
}

fn flush(inner: &Inner) {
    let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(batch) = take_batch(&mut st) {
        dispatch(&st, batch);
    }
}

/// Sends a batch that has not filled every [`FLUSH_EVERY`], until the feed is gone.
fn spawn_flusher(feed: Weak<Inner>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(inner) = feed.upgrade() else { break };
            if inner
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .subscribers
                .is_empty()
            {
                break;
            }
            flush(&inner);
        }
    });
}

/// One plugin's `progress` ticker: every `interval` while a phase runs, the phase's stats
/// and the feed's window, unless the plugin still has the last one (then skipped).
pub(super) struct ProgressSubscriber {
    pub tx: mpsc::UnboundedSender<Delivery>,
    pub interval: Duration,
    pub pending: Arc<AtomicUsize>,
    pub status: Arc<Mutex<PluginStatus>>,
}

/// Live stats of the running phase, read by the progress tickers.
pub type StatsFn = Arc<dyn Fn() -> PhaseStats + Send + Sync>;

/// Ticks `progress` to the plugins that take it while it lives (one per phase).
#[must_use = "progress stops when the guard is dropped"]
pub struct ProgressGuard {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for ProgressGuard {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub(super) fn start_progress(
    subscribers: &[ProgressSubscriber],
    feed: Option<RecordFeed>,
    phase: PhaseKind,
    stats: StatsFn,
) -> ProgressGuard {
    let tasks = subscribers
        .iter()
        .map(|s| {
            let (tx, pending, status, interval) = (
                s.tx.clone(),
                s.pending.clone(),
                s.status.clone(),
                s.interval,
            );
            let (feed, stats) = (feed.clone(), stats.clone());
            tokio::spawn(async move {
                let start = tokio::time::Instant::now() + interval;
                let mut tick = tokio::time::interval_at(start, interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
                    let counts = st.progress.get_or_insert_with(ProgressCounts::default);
                    if pending.load(Ordering::Acquire) > 0 {
                        counts.skipped += 1;
                        continue;
                    }
                    let stats = stats();
                    let mut event = HookEvent::new(Hook::Progress, Some(phase), None);
                    event.window = Some(Arc::new(match &feed {
                        Some(f) => f.window(phase, interval, stats.duration_sec),
                        None => ProgressWindow::default(),
                    }));
                    event.stats = Some(stats);
                    pending.fetch_add(1, Ordering::AcqRel);
                    let sent = tx.send(Delivery {
                        event: Arc::new(event),
                        ack: None,
                        done: Some(pending.clone()),
                    });
                    if sent.is_err() {
                        break;
                    }
                    counts.sent += 1;
                }
            })
        })
        .collect();
    ProgressGuard { tasks }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn subscriber(cap: usize) -> (Subscriber, mpsc::UnboundedReceiver<Delivery>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let s = Subscriber {
            tx,
            pending: Arc::new(AtomicUsize::new(0)),
            cap,
            status: Arc::new(Mutex::new(PluginStatus::new("p"))),
        };
        (s, rx)
    }

    fn point(ttft: f64) -> RecordPoint {
        RecordPoint {
            error: false,
            ttft_ms: Some(ttft),
            itl_ms: None,
            latency_ms: Some(ttft * 2.0),
            output_tokens: 10,
            send_lag_ms: None,
        }
    }

    #[tokio::test]
    async fn batches_are_full_or_flushed_and_a_phase_change_cuts_them() {
        let (s, mut rx) = subscriber(1000);
        let status = s.status.clone();
        let feed = RecordFeed::new(vec![s], false, Duration::ZERO);
        for i in 0..(BATCH_MAX + 3) {
            feed.push(PhaseKind::Warmup, Some(json!(i)), point(1.0));
        }
        feed.push(PhaseKind::Profiling, Some(json!("p0")), point(1.0));
        feed.flush();
        let mut got = Vec::new();
        while let Ok(d) = rx.try_recv() {
            got.push((d.event.phase, d.event.records.as_ref().unwrap().len()));
        }
        assert_eq!(
            got,
            [
                (Some(PhaseKind::Warmup), BATCH_MAX),
                (Some(PhaseKind::Warmup), 3),
                (Some(PhaseKind::Profiling), 1)
            ]
        );
        let counts = status.lock().unwrap().records.clone().unwrap();
        assert_eq!(counts.delivered, BATCH_MAX as u64 + 4);
        assert_eq!(counts.dropped, 0);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_and_the_count_travels() {
        let (s, mut rx) = subscriber(2);
        let (status, pending) = (s.status.clone(), s.pending.clone());
        let feed = RecordFeed::new(vec![s], false, Duration::ZERO);
        for b in 0..5 {
            feed.push(PhaseKind::Profiling, Some(json!(b)), point(1.0));
            feed.flush();
        }
        // Two batches queued (nobody handled them), three dropped.
        let counts = status.lock().unwrap().records.clone().unwrap();
        assert_eq!(
            (counts.delivered, counts.dropped, counts.dropped_batches),
            (2, 3, 3)
        );
        let first = rx.try_recv().unwrap();
        assert_eq!(first.event.dropped_records, Some(0));
        first.done.unwrap().fetch_sub(1, Ordering::AcqRel);
        assert_eq!(pending.load(Ordering::Acquire), 1);
        feed.push(PhaseKind::Profiling, Some(json!(9)), point(1.0));
        feed.flush();
        let _second = rx.try_recv().unwrap();
        let third = rx.try_recv().unwrap();
        assert_eq!(
            third.event.dropped_records,
            Some(3),
            "the plugin learns what it lost"
        );
        assert_eq!(third.event.records.as_ref().unwrap()[0], json!(9));
    }

    #[tokio::test]
    async fn the_window_covers_its_phase_and_span() {
        let feed = RecordFeed::new(Vec::new(), true, Duration::from_secs(60));
        feed.push(PhaseKind::Warmup, None, point(100.0));
        for v in [1.0, 2.0, 3.0, 4.0] {
            feed.push(PhaseKind::Profiling, None, point(v));
        }
        feed.push(
            PhaseKind::Profiling,
            None,
            RecordPoint {
                error: true,
                ..Default::default()
            },
        );
        let w = feed.window(PhaseKind::Profiling, Duration::from_secs(10), 2.0);
        assert_eq!((w.requests, w.errors), (5, 1));
        assert_eq!(w.window_sec, 2.0, "the phase is shorter than the span");
        assert_eq!(w.request_throughput, 2.5);
        assert_eq!(w.output_token_throughput, 20.0);
        let t = &w.metrics["time_to_first_token"];
        assert_eq!(
            (t.count, t.min, t.max, t.avg, t.p50),
            (4, 1.0, 4.0, 2.5, 2.5)
        );
        assert_eq!(w.metrics["request_latency"].max, 8.0);
        assert!(!w.metrics.contains_key("inter_token_latency"));
    }

    /// The dashboard's view of the same window: send lag too, which the plugins' `progress`
    /// window leaves out.
    #[test]
    fn the_rolling_window_keeps_send_lag_for_the_dashboard() {
        let w = RollingWindow::new(Duration::from_secs(60));
        for lag in [0.5, 1.5, 2.5] {
            w.push(
                PhaseKind::Profiling,
                RecordPoint {
                    send_lag_ms: Some(lag),
                    ..point(1.0)
                },
            );
        }
        w.push(PhaseKind::Profiling, point(1.0));
        let s = w.stats(PhaseKind::Profiling, Duration::from_secs(10), 30.0);
        assert_eq!((s.requests, s.output_tokens, s.window_sec), (4, 40, 10.0));
        let lag = s.send_lag.as_ref().unwrap();
        assert_eq!((lag.count, lag.p50, lag.max), (3, 1.5, 2.5));
        assert_eq!(s.request_throughput(), 0.4);
        let p = s.progress();
        assert_eq!(p.metrics.len(), 2, "TTFT and latency only: {:?}", p.metrics);
        assert_eq!(
            w.stats(PhaseKind::Warmup, Duration::from_secs(10), 30.0),
            WindowStats {
                window_sec: 10.0,
                ..WindowStats::default()
            }
        );
    }

    #[tokio::test]
    async fn closing_lets_go_of_the_queues() {
        let (s, mut rx) = subscriber(10);
        let feed = RecordFeed::new(vec![s], false, Duration::ZERO);
        feed.push(PhaseKind::Profiling, Some(json!(1)), point(1.0));
        feed.close();
        assert!(rx.recv().await.is_some(), "the last batch is sent at close");
        assert!(rx.recv().await.is_none(), "then the sender is gone");
    }
}
