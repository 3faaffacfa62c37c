//! Is the client keeping up? Numbers that describe the client rather than the server are the
//! failure this tool exists to avoid, so every run samples its own health: how long a woken
//! task waits before the runtime polls it (runtime lag: the delay any chunk's timestamp would
//! carry), the process's CPU use and the machine's.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::metrics::stats::percentile_sorted;

const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// CPU times in clock ticks: (this process user+system, machine busy, machine total).
fn cpu_ticks() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let proc_ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let all = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = all
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = cpu.iter().sum();
    let idle = cpu.get(3).copied().unwrap_or(0) + cpu.get(4).copied().unwrap_or(0);
    Some((proc_ticks, total - idle, total))
}

/// Samples runtime lag in the background from `start()` until `finish()`.
pub struct HealthMonitor {
    lags_ms: Arc<Mutex<Vec<f64>>>,
    task: tokio::task::JoinHandle<()>,
    started: Instant,
    cpu0: Option<(u64, u64, u64)>,
}

/// The verdict on the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    ClientMayBeTheBottleneck,
}

/// Runtime lag over the run, in ms (`None` without samples).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RuntimeLag {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub samples: usize,
}

/// The verdict and the figures behind it: the export's `client_health` section (the fields
/// in the export's order) and the console's health line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientHealth {
    pub verdict: Verdict,
    /// Why the verdict is not `ok` (empty when it is).
    pub reasons: Vec<String>,
    /// Lags over the limit that moved no reported number by more than a small share (late
    /// reads shorter than the time between tokens, costing the request rate at most
    /// [`READ_LAG_RATE_LIMIT`]): said, but not held against the client.
    pub notes: Vec<String>,
    pub runtime_lag_ms: RuntimeLag,
    pub send_lag_p99_ms: Option<f64>,
    /// How long responses' bytes waited in the socket before the client read them, p99 of
    /// the requests' longest waits (`None` without kernel receive stamps).
    pub read_lag_p99_ms: Option<f64>,
    /// This process's CPU time over the run, in % of one core (`None` off Linux).
    pub process_cpu_percent: Option<f64>,
    pub process_cpu_percent_of_machine: Option<f64>,
    pub machine_cpu_busy_percent: Option<f64>,
    pub cores: f64,
    /// Worker threads of the async runtime that ran the load (`--workers-max`), as the
    /// runtime counts them; `None` outside one.
    pub worker_threads: Option<usize>,
}

impl ClientHealth {
    pub fn ok(&self) -> bool {
        self.verdict == Verdict::Ok
    }
}

/// What a run measured about its client, before judging it.
#[derive(Debug, Clone, Default)]
pub struct Measurements {
    /// Runtime lag samples in ms, sorted.
    pub lags_ms: Vec<f64>,
    /// From the profiling summary.
    pub lags: RequestLags,
    pub process_cpu_percent: Option<f64>,
    pub machine_cpu_busy_percent: Option<f64>,
    pub cores: f64,
    pub worker_threads: Option<usize>,
    /// How long the monitor ran, in seconds.
    pub wall_secs: f64,
    /// Requests that failed on the client's own limits (file descriptors, ports, buffers).
    pub client_resource_errors: u64,
}

/// The requests' own lags, p99 over the profiling phase (from its summary).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RequestLags {
    /// Actual minus scheduled send time.
    pub send_p99_ms: Option<f64>,
    /// Kernel receive to client read (`None` when the responses carried no kernel stamps).
    pub read_p99_ms: Option<f64>,
    /// The streams' inter-token latency, p50 (`None` without streamed tokens): how far
    /// apart tokens came, to compare the read lag with.
    pub itl_p50_ms: Option<f64>,
    /// The requests' read lags (each its longest wait), average.
    pub read_avg_ms: Option<f64>,
    /// Request latency, average: a late read of a response's end holds up a closed-loop
    /// worker's next request by at most its read lag, so the two averages bound what late
    /// reads cost the request rate.
    pub latency_avg_ms: Option<f64>,
}

/// A send, read or runtime lag p99 above this (ms) means the client may be the bottleneck.
const LAG_LIMIT_MS: f64 = 1.0;

/// A read lag that leaves the token times alone (kernel stamps, tokens further apart than
/// the lag) still holds up what the client does next: a closed-loop worker sends its next
/// request that much later, so late reads cost the request rate at most the average read
/// lag over the average request latency. Up to this share that is a note, not a reason: a
/// virtual machine whose idle vCPUs take a millisecond or more to wake now and then gives a
/// read lag p99 over the limit at any load, with nothing skewed.
pub const READ_LAG_RATE_LIMIT: f64 = 0.01;

/// The verdict: `ok` unless requests left late or the runtime was slow to run woken tasks.
/// A busy machine alone doesn't skew numbers; it explains lag when there is some (and short
/// runs are left out: /proc/stat counts in 10 ms ticks).
pub fn judge(m: Measurements) -> ClientHealth {
    let lags = &m.lags_ms;
    let lag = |q: f64| (!lags.is_empty()).then(|| percentile_sorted(lags, q));
    let runtime_lag_ms = RuntimeLag {
        p50: lag(50.0),
        p99: lag(99.0),
        max: lags.last().copied(),
        samples: lags.len(),
    };
    let mut reasons = Vec::new();
    let mut notes = Vec::new();
    if let Some(p99) = m.lags.send_p99_ms.filter(|v| *v > LAG_LIMIT_MS) {
        reasons.push(format!("requests left late (send lag p99 {p99:.2} ms)"));
    }
    // With kernel receive stamps a late read no longer moves a token's time, as long as the
    // token was read before the next one arrived: the kernel merges segments that wait in a
    // socket together and keeps one stamp for them, the last one's. A late read still holds
    // up what the client does next (a closed-loop worker's next request, its own sends).
    let kernel_timed = m.lags.read_p99_ms.is_some();
    if let Some(p99) = m.lags.read_p99_ms.filter(|v| *v > LAG_LIMIT_MS) {
        let late = format!(
            "the client read responses late (read lag p99 {p99:.2} ms: bytes waited that long \
             in the socket)"
        );
        let unskewed = match m.lags.itl_p50_ms {
            Some(itl) if p99 >= itl => {
                reasons.push(format!(
                    "{late}, longer than the time between tokens (ITL p50 {itl:.2} ms): the \
                     kernel gives bytes that wait in the socket together one receive stamp, the \
                     last one's, so a token read together with the next takes the next one's \
                     time, and TTFT and ITL may be skewed by up to the read lag"
                ));
                None
            }
            Some(itl) => Some(format!(
                "{late}; token times are the kernel's receive stamps and tokens came further \
                 apart than that (ITL p50 {itl:.2} ms), so TTFT and ITL are not skewed"
            )),
            None => Some(format!(
                "{late}; token times are the kernel's receive stamps, so TTFT and ITL are not \
                 skewed"
            )),
        };
        if let Some(unskewed) = unskewed {
            let rate_cost = match (m.lags.read_avg_ms, m.lags.latency_avg_ms) {
                (Some(read), Some(latency)) if read >= 0.0 && latency > 0.0 => {
                    Some((read, latency, read / latency))
                }
                _ => None,
            };
            match rate_cost.filter(|(_, _, share)| *share <= READ_LAG_RATE_LIMIT) {
                Some((read, latency, share)) => notes.push(format!(
                    "{unskewed}, and late reads cost the request rate at most {:.2} % (read lag \
                     {read:.2} ms on average, against {latency:.2} ms per request)",
                    share * 100.0
                )),
                None => reasons.push(format!("{unskewed}, but a slow reader delays what follows")),
            }
        }
    }
    if let Some(p99) = runtime_lag_ms.p99.filter(|v| *v > LAG_LIMIT_MS) {
        reasons.push(if kernel_timed {
            format!("the async runtime was slow to run woken tasks (lag p99 {p99:.2} ms), so requests may leave late")
        } else {
            format!("the async runtime was slow to run woken tasks (lag p99 {p99:.2} ms), so timestamps may be late")
        });
    }
    if m.client_resource_errors > 0 {
        reasons.push(format!(
            "{} requests failed on the client's own limits (ClientResourceError: file descriptors, ports or buffers), not the server's",
            m.client_resource_errors
        ));
    }
    let verdict = if reasons.is_empty() {
        Verdict::Ok
    } else {
        Verdict::ClientMayBeTheBottleneck
    };
    let busy = m.machine_cpu_busy_percent;
    if let Some(busy) = busy.filter(|b| verdict != Verdict::Ok && *b > 90.0 && m.wall_secs >= 1.0) {
        reasons.push(format!("the machine's CPUs were {busy:.0} % busy"));
    }
    ClientHealth {
        verdict,
        reasons,
        notes,
        runtime_lag_ms,
        send_lag_p99_ms: m.lags.send_p99_ms,
        read_lag_p99_ms: m.lags.read_p99_ms,
        process_cpu_percent: m.process_cpu_percent,
        process_cpu_percent_of_machine: m.process_cpu_percent.map(|p| p / m.cores),
        machine_cpu_busy_percent: busy,
        cores: m.cores,
        worker_threads: m.worker_threads,
    }
}

impl HealthMonitor {
    pub fn start() -> Self {
        let lags_ms = Arc::new(Mutex::new(Vec::new()));
        let lags = lags_ms.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // Time from waking a task to its first poll: what a chunk arriving now would
                // wait before being stamped.
                let woken = Instant::now();
                let polled = tokio::spawn(async move { woken.elapsed() })
                    .await
                    .unwrap_or_default();
                lags.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(polled.as_secs_f64() * 1e3);
            }
        });
        Self {
            lags_ms,
            task,
            started: Instant::now(),
            cpu0: cpu_ticks(),
        }
    }

    /// A live view of the samples, for the dashboard: [`HealthProbe::now`] judges the last
    /// few seconds while the run goes on.
    pub fn probe(&self) -> HealthProbe {
        HealthProbe {
            lags_ms: self.lags_ms.clone(),
            last: (Instant::now(), cpu_ticks()),
        }
    }

    /// Stops sampling and judges the run. `lags`: from the profiling summary.
    pub fn finish(self, lags: RequestLags, client_resource_errors: u64) -> ClientHealth {
        self.task.abort();
        let wall_secs = self.started.elapsed().as_secs_f64();
        let mut lags_ms =
            std::mem::take(&mut *self.lags_ms.lock().unwrap_or_else(|e| e.into_inner()));
        lags_ms.sort_by(f64::total_cmp);
        let cores = cores();
        let (process_cpu_percent, machine_cpu_busy_percent) =
            cpu_percents(self.cpu0, cpu_ticks(), wall_secs);
        judge(Measurements {
            lags_ms,
            lags,
            process_cpu_percent,
            machine_cpu_busy_percent,
            cores,
            worker_threads: worker_threads(),
            wall_secs,
            client_resource_errors,
        })
    }
}

/// How many of the latest runtime-lag samples a live verdict looks at (5 s of them).
const LIVE_SAMPLES: usize = 250;

/// The client's health so far, judged again on each call over the last few seconds: the
/// latest runtime-lag samples, the CPU used since the previous call, the send-lag p99 and
/// the client-side errors the caller gives (from its rolling window). Reads the monitor's
/// samples under their lock (taken every 20 ms by the sampler, never by a request).
pub struct HealthProbe {
    lags_ms: Arc<Mutex<Vec<f64>>>,
    last: (Instant, Option<(u64, u64, u64)>),
}

impl HealthProbe {
    pub fn now(
        &mut self,
        send_lag_p99_ms: Option<f64>,
        client_resource_errors: u64,
    ) -> ClientHealth {
        let mut lags_ms: Vec<f64> = {
            let all = self.lags_ms.lock().unwrap_or_else(|e| e.into_inner());
            all[all.len().saturating_sub(LIVE_SAMPLES)..].to_vec()
        };
        lags_ms.sort_by(f64::total_cmp);
        let (t0, cpu0) = self.last;
        let (t1, cpu1) = (Instant::now(), cpu_ticks());
        self.last = (t1, cpu1);
        let wall_secs = t1.duration_since(t0).as_secs_f64();
        let (process_cpu_percent, machine_cpu_busy_percent) = cpu_percents(cpu0, cpu1, wall_secs);
        judge(Measurements {
            lags_ms,
            lags: RequestLags {
                send_p99_ms: send_lag_p99_ms,
                read_p99_ms: None,
                itl_p50_ms: None,
                read_avg_ms: None,
                latency_avg_ms: None,
            },
            process_cpu_percent,
            machine_cpu_busy_percent,
            cores: cores(),
            worker_threads: worker_threads(),
            wall_secs,
            client_resource_errors,
        })
    }
}

fn worker_threads() -> Option<usize> {
    tokio::runtime::Handle::try_current()
        .ok()
        .map(|h| h.metrics().num_workers())
}

fn cores() -> f64 {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64
}

/// This process's CPU (% of one core) and the machine's busy share between two readings.
fn cpu_percents(
    a: Option<(u64, u64, u64)>,
    b: Option<(u64, u64, u64)>,
    wall_secs: f64,
) -> (Option<f64>, Option<f64>) {
    // SAFETY: sysconf with a valid name has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    match (a, b) {
        (Some(a), Some(b)) if b.2 > a.2 && wall_secs > 0.0 => (
            Some(b.0.saturating_sub(a.0) as f64 / hz / wall_secs * 100.0),
            Some(b.1.saturating_sub(a.1) as f64 / (b.2 - a.2) as f64 * 100.0),
        ),
        _ => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(lags_ms: Vec<f64>, send_lag_p99_ms: Option<f64>) -> Measurements {
        Measurements {
            lags_ms,
            lags: RequestLags {
                send_p99_ms: send_lag_p99_ms,
                read_p99_ms: None,
                itl_p50_ms: None,
                read_avg_ms: None,
                latency_avg_ms: None,
            },
            process_cpu_percent: Some(40.0),
            machine_cpu_busy_percent: Some(95.0),
            cores: 4.0,
            worker_threads: Some(4),
            wall_secs: 10.0,
            client_resource_errors: 0,
        }
    }

    #[test]
    fn client_resource_errors_blame_the_client() {
        let h = judge(Measurements {
            client_resource_errors: 42,
            ..measured(vec![0.1, 0.2], Some(0.5))
        });
        assert_eq!(h.verdict, Verdict::ClientMayBeTheBottleneck);
        assert!(h.reasons[0].starts_with("42 requests failed on the client's own limits"));
    }

    #[test]
    fn low_lag_is_ok_with_its_figures() {
        let h = judge(measured(vec![0.1, 0.2, 0.3, 0.4, 0.5], Some(0.9)));
        assert_eq!(h.verdict, Verdict::Ok);
        assert!(h.ok());
        assert!(
            h.reasons.is_empty(),
            "a busy machine alone is no reason: {:?}",
            h.reasons
        );
        let lag = &h.runtime_lag_ms;
        assert_eq!((lag.p50, lag.max, lag.samples), (Some(0.3), Some(0.5), 5));
        assert!((lag.p99.unwrap() - 0.496).abs() < 1e-12, "{lag:?}");
        assert_eq!(h.send_lag_p99_ms, Some(0.9));
        assert_eq!(h.process_cpu_percent_of_machine, Some(10.0));
        assert_eq!(h.machine_cpu_busy_percent, Some(95.0));
    }

    #[test]
    fn the_limit_itself_is_still_ok() {
        let h = judge(measured(vec![1.0, 1.0], Some(1.0)));
        assert_eq!(h.verdict, Verdict::Ok);
    }

    #[test]
    fn late_sends_make_the_client_suspect_and_the_busy_machine_explains_it() {
        let h = judge(measured(vec![0.1], Some(2.5)));
        assert_eq!(h.verdict, Verdict::ClientMayBeTheBottleneck);
        assert_eq!(
            h.reasons,
            vec![
                "requests left late (send lag p99 2.50 ms)".to_string(),
                "the machine's CPUs were 95 % busy".to_string(),
            ]
        );
    }

    #[test]
    fn runtime_lag_makes_the_client_suspect() {
        let mut m = measured(vec![0.5, 3.5], None);
        m.machine_cpu_busy_percent = Some(50.0);
        let h = judge(m);
        assert!(!h.ok());
        assert_eq!(h.reasons.len(), 1, "{:?}", h.reasons);
        assert!(h.reasons[0].contains("lag p99 3.47 ms"), "{:?}", h.reasons);
    }

    /// With kernel receive stamps a late reader is named, and the runtime's lag no longer
    /// said to move the timestamps.
    #[test]
    fn read_lag_names_the_late_reader_and_kernel_stamps_keep_the_times() {
        let mut m = measured(vec![0.5, 3.5], Some(0.2));
        m.lags.read_p99_ms = Some(4.25);
        m.machine_cpu_busy_percent = Some(50.0);
        let h = judge(m);
        assert_eq!(h.verdict, Verdict::ClientMayBeTheBottleneck);
        assert_eq!(h.read_lag_p99_ms, Some(4.25));
        assert_eq!(h.reasons.len(), 2, "{:?}", h.reasons);
        assert!(
            h.reasons[0].starts_with("the client read responses late (read lag p99 4.25 ms"),
            "{:?}",
            h.reasons
        );
        assert!(
            h.reasons[1].ends_with("so requests may leave late"),
            "{:?}",
            h.reasons
        );
        // A read lag under the limit is no reason.
        let mut m = measured(vec![0.1], Some(0.2));
        m.lags.read_p99_ms = Some(0.9);
        assert!(judge(m).ok());
    }

    /// Tokens further apart than the read lag were each read before the next arrived: their
    /// stamps are their own. Closer together, a late read took two at once, and the kernel
    /// stamps them both with the later one's arrival: the verdict says TTFT and ITL may be
    /// skewed.
    #[test]
    fn a_read_lag_longer_than_the_time_between_tokens_may_skew_them() {
        let reason = |itl: Option<f64>| {
            let mut m = measured(vec![0.1], Some(0.2));
            m.lags.read_p99_ms = Some(4.25);
            m.lags.itl_p50_ms = itl;
            m.machine_cpu_busy_percent = Some(50.0);
            let h = judge(m);
            assert_eq!(h.verdict, Verdict::ClientMayBeTheBottleneck);
            assert_eq!(h.reasons.len(), 1, "{:?}", h.reasons);
            h.reasons[0].clone()
        };
        for itl in [Some(40.0), Some(4.26), None] {
            let r = reason(itl);
            assert!(r.contains("TTFT and ITL are not skewed"), "{itl:?}: {r}");
            assert!(!r.contains("may be skewed"), "{itl:?}: {r}");
        }
        for itl in [Some(4.25), Some(0.5)] {
            let r = reason(itl);
            assert!(
                r.contains(&format!("ITL p50 {:.2} ms", itl.unwrap())),
                "{itl:?}: {r}"
            );
            assert!(
                r.ends_with("TTFT and ITL may be skewed by up to the read lag"),
                "{itl:?}: {r}"
            );
        }
    }

    /// A read lag that leaves the token times alone and costs the request rate little is a
    /// note (the verdict stays ok); one that may cost more is a reason, and a lag that may
    /// skew the tokens is one whatever it costs the rate.
    #[test]
    fn a_read_lag_that_costs_the_rate_little_is_only_noted() {
        let judged = |p99: f64, itl: Option<f64>, avg: Option<f64>, latency: Option<f64>| {
            let mut m = measured(vec![0.1], Some(0.2));
            m.lags.read_p99_ms = Some(p99);
            m.lags.itl_p50_ms = itl;
            m.lags.read_avg_ms = avg;
            m.lags.latency_avg_ms = latency;
            judge(m)
        };
        // The quickstart on a VM whose idle vCPUs are slow to wake: p99 1.37 ms, 0.28 ms on
        // average, of 95 ms requests.
        for itl in [Some(5.0), None] {
            let h = judged(1.37, itl, Some(0.28), Some(95.12));
            assert!(h.ok(), "{itl:?}: {:?}", h.reasons);
            assert_eq!(h.notes.len(), 1, "{:?}", h.notes);
            assert!(
                h.notes[0].starts_with("the client read responses late (read lag p99 1.37 ms")
                    && h.notes[0].contains("TTFT and ITL are not skewed")
                    && h.notes[0].ends_with(
                        "late reads cost the request rate at most 0.29 % (read lag 0.28 ms on \
                         average, against 95.12 ms per request)"
                    ),
                "{:?}",
                h.notes
            );
        }
        // At the limit (1 ms of 100) still a note; over it, or without both averages, a
        // reason.
        assert!(judged(2.0, Some(5.0), Some(1.0), Some(100.0)).ok());
        for (avg, latency) in [
            (Some(1.001), Some(100.0)),
            (None, Some(100.0)),
            (Some(0.2), None),
            (Some(0.2), Some(0.0)),
            (Some(f64::NAN), Some(100.0)),
            (Some(0.2), Some(f64::NAN)),
        ] {
            let h = judged(2.0, Some(5.0), avg, latency);
            assert_eq!(
                h.verdict,
                Verdict::ClientMayBeTheBottleneck,
                "{avg:?} {latency:?}"
            );
            assert!(h.notes.is_empty(), "{:?}", h.notes);
            assert!(
                h.reasons[0].ends_with(
                    "so TTFT and ITL are not skewed, but a slow reader delays what follows"
                ),
                "{:?}",
                h.reasons
            );
        }
        // Tokens closer together than the lag: a reason, however little the rate lost.
        let h = judged(1.37, Some(1.0), Some(0.01), Some(10_000.0));
        assert_eq!(h.verdict, Verdict::ClientMayBeTheBottleneck);
        assert!(h.notes.is_empty(), "{:?}", h.notes);
        assert!(h.reasons[0].contains("may be skewed"), "{:?}", h.reasons);
        // Under the limit: neither.
        let h = judged(0.9, Some(5.0), Some(0.5), Some(95.0));
        assert!(h.ok() && h.notes.is_empty());
    }

    #[test]
    fn a_short_run_does_not_blame_the_machine() {
        let mut m = measured(vec![5.0], Some(5.0));
        m.wall_secs = 0.5;
        let h = judge(m);
        assert_eq!(h.reasons.len(), 2, "{:?}", h.reasons);
        assert!(!h.reasons.iter().any(|r| r.contains("busy")));
    }

    #[test]
    fn no_samples_no_figures() {
        let mut m = measured(vec![], None);
        m.process_cpu_percent = None;
        m.machine_cpu_busy_percent = None;
        let h = judge(m);
        assert!(h.ok());
        assert_eq!(h.runtime_lag_ms, RuntimeLag::default());
        assert_eq!(h.process_cpu_percent_of_machine, None);
    }

    #[test]
    fn serialises_in_the_export_layout() {
        let h = judge(measured(vec![2.0], None));
        let v = serde_json::to_value(&h).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "verdict",
                "reasons",
                "notes",
                "runtime_lag_ms",
                "send_lag_p99_ms",
                "read_lag_p99_ms",
                "process_cpu_percent",
                "process_cpu_percent_of_machine",
                "machine_cpu_busy_percent",
                "cores",
                "worker_threads"
            ]
        );
        assert_eq!(v["verdict"], "client_may_be_the_bottleneck");
        assert_eq!(
            v["runtime_lag_ms"],
            serde_json::json!({"p50": 2.0, "p99": 2.0, "max": 2.0, "samples": 1})
        );
    }
}
