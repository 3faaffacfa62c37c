//! The live terminal dashboard (`--ui dashboard`).
//!
//! It reads what the run already keeps and adds nothing to the request path:
//! - the phase's [`PhaseTracker`] atomics (sent, finished, errors, in flight, send lag), as
//!   [`PhaseStats`](aiperf_plugin::PhaseStats);
//! - a [`RollingWindow`] of finished requests (the machinery of the plugins' `progress`
//!   window), fed by [`DashboardTap`], one more sink of the record processor's aggregator
//!   thread, which also counts errors by type;
//! - the client-health monitor's samples ([`HealthProbe`]), judged again over the last
//!   seconds by the same `judge` as the run's verdict.
//!
//! [`Dashboard::start`] takes the terminal ([`terminal`]: alternate screen, stderr kept
//! until the end) and draws on an OS thread of its own, [`FRAME`] apart (4 frames a
//! second); [`Dashboard::stop`] (or its drop) ends the thread and gives the terminal back.

pub mod terminal;
pub mod view;

use std::collections::{BTreeMap, VecDeque};
use std::io::IsTerminal;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::metrics::processor::RecordSink;
use crate::metrics::stats::Stats;
use crate::metrics::{ErrorDetails, PhaseKind, RequestMetrics, RequestRecord};
use crate::plugin::{RecordPoint, RollingWindow, WindowStats};
use crate::timing::health::HealthProbe;
use crate::timing::PhaseTracker;
use view::{HealthView, Percentiles, PhaseView, Progress, Snapshot};

/// Time between two frames.
pub const FRAME: Duration = Duration::from_millis(250);
/// The span of the rolling metrics.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Seconds of history in the sparklines.
const HISTORY: usize = 300;

/// Why `--ui dashboard` cannot be shown here, if it cannot: stdout must be a terminal
/// that understands escape sequences.
pub fn unavailable() -> Option<&'static str> {
    if !std::io::stdout().is_terminal() {
        return Some("stdout is not a terminal");
    }
    if std::env::var("TERM").is_ok_and(|t| t == "dumb") {
        return Some("TERM=dumb");
    }
    None
}

/// The running phase, as the dashboard shows it.
pub struct PhaseInfo {
    pub tracker: Arc<PhaseTracker>,
    /// "concurrency 4", "request rate 50/s (Poisson)", …
    pub load: String,
    pub duration: Option<Duration>,
}

/// What the dashboard reads, shared with the run: the current phase, the rolling window
/// and the errors by type.
pub struct Live {
    window: RollingWindow,
    /// (phase, error type) → count; client-side errors (`is_client_side`) are flagged.
    errors: Mutex<BTreeMap<(PhaseKind, String), (u64, bool)>>,
    phase: Mutex<Option<Arc<PhaseInfo>>>,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            window: RollingWindow::new(WINDOW),
            errors: Mutex::new(BTreeMap::new()),
            phase: Mutex::new(None),
        }
    }
}

impl Live {
    /// The phase that just started (replacing the last one).
    pub fn set_phase(&self, info: PhaseInfo) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(info));
    }

    fn current(&self) -> Option<Arc<PhaseInfo>> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The phase's errors by type, most frequent first, and how many were client-side.
    fn errors_of(&self, phase: PhaseKind) -> (Vec<(String, u64)>, u64) {
        let errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<(String, u64)> = Vec::new();
        let mut client = 0;
        for ((k, kind), (n, client_side)) in errors.iter() {
            if *k == phase {
                list.push((kind.clone(), *n));
                if *client_side {
                    client += n;
                }
            }
        }
        list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        (list, client)
    }

    /// The record processor's sink that feeds this.
    pub fn tap(self: &Arc<Self>) -> DashboardTap {
        DashboardTap(self.clone())
    }
}

/// A sink of the record processor (on its aggregator thread): each finished request into
/// the rolling window, each error counted by type.
pub struct DashboardTap(Arc<Live>);

impl RecordSink for DashboardTap {
    fn write_success(&mut self, rec: &RequestRecord, m: &RequestMetrics) -> std::io::Result<()> {
        self.0.window.push(
            rec.phase,
            RecordPoint {
                error: false,
                ttft_ms: m.ttft_ms,
                itl_ms: m.itl_ms,
                latency_ms: Some(m.latency_ms),
                output_tokens: m.osl,
                send_lag_ms: m.send_lag_ms,
            },
        );
        Ok(())
    }

    fn write_error(&mut self, rec: &RequestRecord, err: &ErrorDetails) -> std::io::Result<()> {
        self.0.window.push(
            rec.phase,
            RecordPoint {
                error: true,
                send_lag_ms: crate::export::tap::send_lag_ms(rec),
                ..RecordPoint::default()
            },
        );
        let mut errors = self.0.errors.lock().unwrap_or_else(|e| e.into_inner());
        let entry = errors
            .entry((rec.phase, err.kind.clone()))
            .or_insert((0, err.is_client_side()));
        entry.0 += 1;
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The sparklines' data: one point per second of the phase.
#[derive(Default)]
struct History {
    phase: Option<PhaseKind>,
    last: Option<(Instant, u64)>,
    throughput: VecDeque<u64>,
    ttft: VecDeque<u64>,
}

impl History {
    /// Adds a point once a second has passed since the last one (`finished`: the phase's
    /// finished and cancelled requests so far; `ttft_p50`: over the last second).
    fn tick(
        &mut self,
        phase: PhaseKind,
        now: Instant,
        finished: u64,
        ttft_p50: impl FnOnce() -> Option<f64>,
    ) {
        if self.phase != Some(phase) {
            *self = History {
                phase: Some(phase),
                last: Some((now, finished)),
                ..History::default()
            };
            return;
        }
        let Some((t0, n0)) = self.last else {
            self.last = Some((now, finished));
            return;
        };
        let dt = now.duration_since(t0).as_secs_f64();
        if dt < 1.0 {
            return;
        }
        let push = |q: &mut VecDeque<u64>, v: u64| {
            q.push_back(v);
            if q.len() > HISTORY {
                q.pop_front();
            }
        };
        push(
            &mut self.throughput,
            (finished.saturating_sub(n0) as f64 / dt).round() as u64,
        );
        push(
            &mut self.ttft,
            ttft_p50().map_or(0, |v| v.max(0.0).round() as u64),
        );
        self.last = Some((now, finished));
    }
}

fn percentiles(s: &Option<Stats>) -> Option<Percentiles> {
    s.as_ref().map(|s| Percentiles {
        p50: s.p50,
        p90: s.p90,
        p99: s.p99,
        max: s.max,
        count: s.count,
    })
}

/// One frame's data from the live sources (pure but for the clocks the sources read).
#[allow(clippy::too_many_arguments)]
fn snapshot(
    title: &str,
    info: Option<&PhaseInfo>,
    window: &WindowStats,
    errors: Vec<(String, u64)>,
    health: &crate::timing::health::ClientHealth,
    history: &History,
    log: Vec<String>,
    stopping: bool,
) -> Snapshot {
    let phase = info.map(|i| {
        let st = i.tracker.stats();
        let progress = match (i.tracker.expected, i.duration) {
            (Some(total), _) => Progress::Requests {
                done: st.completed + st.cancelled,
                total,
            },
            (None, Some(d)) => Progress::Time {
                elapsed: st.duration_sec,
                total: d.as_secs_f64(),
            },
            (None, None) => Progress::Open,
        };
        PhaseView {
            name: st.phase.clone(),
            load: i.load.clone(),
            elapsed_sec: st.duration_sec,
            progress,
            sent: st.sent,
            completed: st.completed,
            errors: st.errors,
            cancelled: st.cancelled,
            in_flight: st.in_flight,
            late_sends: st.late_sends,
            max_send_lag_ms: st.max_send_lag_ms,
            sending_complete: st.sending_complete_time_ns.is_some(),
        }
    });
    Snapshot {
        title: title.to_string(),
        phase,
        window_sec: window.window_sec,
        request_throughput: window.request_throughput(),
        token_throughput: window.output_token_throughput(),
        latencies: vec![
            ("TTFT", percentiles(&window.ttft)),
            ("ITL", percentiles(&window.itl)),
            ("Request latency", percentiles(&window.latency)),
            ("Send lag", percentiles(&window.send_lag)),
        ],
        errors,
        health: HealthView {
            ok: health.ok(),
            reasons: health.reasons.clone(),
            runtime_lag_p99_ms: health.runtime_lag_ms.p99,
            process_cpu_percent: health.process_cpu_percent,
            machine_cpu_busy_percent: health.machine_cpu_busy_percent,
        },
        throughput_history: history.throughput.iter().copied().collect(),
        ttft_history: history.ttft.iter().copied().collect(),
        log,
        stopping,
    }
}

/// The dashboard on screen; [`Dashboard::stop`] (or dropping it) gives the terminal back.
pub struct Dashboard {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Dashboard {
    /// Takes the terminal and starts drawing `live` every [`FRAME`]. `title`: model, URL,
    /// endpoint; `stopping`: cancelled by the first Ctrl-C.
    pub fn start(
        live: Arc<Live>,
        mut health: HealthProbe,
        title: String,
        stopping: CancellationToken,
    ) -> std::io::Result<Self> {
        let capture = std::io::stderr().is_terminal();
        let log = terminal::enter(1, capture)?;
        let backend = ratatui::backend::CrosstermBackend::new(std::io::stdout());
        let mut term = match ratatui::Terminal::new(backend) {
            Ok(t) => t,
            Err(e) => {
                terminal::restore();
                return Err(e);
            }
        };
        let (tx, rx) = mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("aiperf-dashboard".into())
            .spawn(move || {
                let mut history = History::default();
                loop {
                    let info = live.current();
                    let now = Instant::now();
                    let (window, errors, client_errors) = match &info {
                        Some(i) => {
                            let secs = i.tracker.stats().duration_sec;
                            let kind = i.tracker.kind;
                            let (errors, client) = live.errors_of(kind);
                            let st = i.tracker.stats();
                            history.tick(kind, now, st.completed + st.cancelled, || {
                                live.window
                                    .stats(kind, Duration::from_secs(1), secs)
                                    .ttft
                                    .map(|s| s.p50)
                            });
                            (live.window.stats(kind, WINDOW, secs), errors, client)
                        }
                        None => (WindowStats::default(), Vec::new(), 0),
                    };
                    let verdict =
                        health.now(window.send_lag.as_ref().map(|s| s.p99), client_errors);
                    let snap = snapshot(
                        &title,
                        info.as_deref(),
                        &window,
                        errors,
                        &verdict,
                        &history,
                        log.last(20),
                        stopping.is_cancelled(),
                    );
                    {
                        let _drawing = terminal::DRAWING.lock().unwrap_or_else(|e| e.into_inner());
                        if !terminal::active() {
                            break;
                        }
                        if term.draw(|f| view::render(f, &snap)).is_err() {
                            break;
                        }
                    }
                    match rx.recv_timeout(FRAME) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => break,
                    }
                }
            });
        match spawned {
            Ok(thread) => Ok(Self {
                stop: Some(tx),
                thread: Some(thread),
            }),
            Err(e) => {
                terminal::restore();
                Err(e)
            }
        }
    }

    /// Stops drawing and gives the terminal back (what was written to stderr meanwhile is
    /// printed then).
    pub fn stop(mut self) {
        self.close();
    }

    fn close(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        terminal::restore();
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::metrics::RequestRecord;
    use crate::timing::health::judge;
    use std::sync::atomic::Ordering;

    fn record(phase: PhaseKind) -> RequestRecord {
        RequestRecord {
            phase,
            request_index: 0,
            conversation_index: 0,
            turn_index: 0,
            url_index: 0,
            streaming: true,
            start_ns: 1,
            scheduled_ns: None,
            ack_ns: None,
            end_ns: 2,
            content_ns: Vec::new(),
            first_output_ns: None,
            output_text: String::new(),
            reasoning_text: String::new(),
            usage: None,
            isl: 1,
            error: None,
            cancelled: false,
            requested_osl: None,
            ids: Default::default(),
            http: Default::default(),
        }
    }

    /// The tap's window and error counts, and the tracker's counters, end up in the
    /// snapshot the dashboard draws: per phase, most frequent error first.
    #[test]
    fn the_snapshot_shows_the_phase_the_window_and_the_errors() {
        let live = Arc::new(Live::default());
        let mut tap = live.tap();
        let clock = Clock::new();
        let tracker = Arc::new(PhaseTracker::new(PhaseKind::Profiling, Some(20), clock));
        tracker.sent.store(12, Ordering::Release);
        tracker.completed.store(9, Ordering::Release);
        tracker.errors.store(3, Ordering::Release);
        tracker.cancelled.store(1, Ordering::Release);
        live.set_phase(PhaseInfo {
            tracker: tracker.clone(),
            load: "concurrency 2".into(),
            duration: None,
        });
        for (i, ttft) in [10.0, 20.0, 30.0, 40.0, 50.0, 60.0].iter().enumerate() {
            let m = RequestMetrics {
                ttft_ms: Some(*ttft),
                itl_ms: Some(1.0),
                latency_ms: ttft * 2.0,
                osl: 10,
                send_lag_ms: Some(i as f64 * 0.1),
                ..RequestMetrics::default()
            };
            tap.write_success(&record(PhaseKind::Profiling), &m)
                .unwrap();
        }
        // A warmup result is not the profiling phase's.
        tap.write_success(
            &record(PhaseKind::Warmup),
            &RequestMetrics {
                ttft_ms: Some(999.0),
                ..RequestMetrics::default()
            },
        )
        .unwrap();
        let err = |kind: &str| ErrorDetails::new(Some(500), kind, "x");
        for kind in [
            "B",
            "A",
            "A",
            crate::metrics::record::kind::CLIENT_RESOURCE_ERROR,
        ] {
            tap.write_error(&record(PhaseKind::Profiling), &err(kind))
                .unwrap();
        }
        tap.write_error(&record(PhaseKind::Warmup), &err("W"))
            .unwrap();
        let (errors, client) = live.errors_of(PhaseKind::Profiling);
        assert_eq!(
            errors,
            [
                ("A".to_string(), 2),
                ("B".to_string(), 1),
                ("ClientResourceError".to_string(), 1)
            ]
        );
        assert_eq!(client, 1);
        let window = live.window.stats(PhaseKind::Profiling, WINDOW, 2.0);
        assert_eq!((window.requests, window.errors), (10, 4));
        assert_eq!(window.window_sec, 2.0);
        let health = judge(Default::default());
        let info = live.current().unwrap();
        let s = snapshot(
            "t",
            Some(&info),
            &window,
            errors,
            &health,
            &History::default(),
            vec![],
            false,
        );
        let p = s.phase.as_ref().unwrap();
        assert_eq!(
            (p.sent, p.completed, p.errors, p.cancelled, p.in_flight),
            (12, 9, 3, 1, 2)
        );
        assert_eq!(
            p.progress,
            Progress::Requests {
                done: 10,
                total: 20
            }
        );
        assert_eq!(s.request_throughput, 5.0, "10 finished in 2 s");
        assert_eq!(s.token_throughput, 30.0);
        let ttft = s.latencies[0].1.unwrap();
        assert_eq!((ttft.count, ttft.p50, ttft.max), (6, 35.0, 60.0));
        let lag = s.latencies[3].1.unwrap();
        assert_eq!(lag.count, 6);
        assert!((lag.max - 0.5).abs() < 1e-9);
        assert_eq!(s.errors[0], ("A".to_string(), 2));
    }

    #[test]
    fn history_adds_a_point_per_second_and_restarts_with_a_phase() {
        let mut h = History::default();
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        h.tick(PhaseKind::Warmup, t0, 0, || Some(1.0));
        h.tick(PhaseKind::Warmup, t0 + s / 2, 5, || Some(1.0));
        assert!(h.throughput.is_empty(), "less than a second");
        h.tick(PhaseKind::Warmup, t0 + 2 * s, 40, || Some(12.4));
        assert_eq!((h.throughput[0], h.ttft[0]), (20, 12));
        h.tick(PhaseKind::Warmup, t0 + 3 * s, 50, || None);
        assert_eq!(Vec::from(h.throughput.clone()), [20, 10]);
        assert_eq!(Vec::from(h.ttft.clone()), [12, 0]);
        h.tick(PhaseKind::Profiling, t0 + 4 * s, 0, || Some(1.0));
        assert!(h.throughput.is_empty() && h.ttft.is_empty());
        for i in 0..(HISTORY as u32 + 10) {
            h.tick(PhaseKind::Profiling, t0 + (5 + i) * s, 0, || None);
        }
        assert_eq!(h.throughput.len(), HISTORY);
    }
}
