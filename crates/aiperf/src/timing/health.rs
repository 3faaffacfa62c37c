//! Is the client keeping up? Numbers that describe the client rather than the server are the
//! failure this tool exists to avoid, so every run samples its own health: how long a woken
//! task waits before the runtime polls it (runtime lag: the delay any chunk's timestamp would
//! carry), the process's CPU use and the machine's.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

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

/// The verdict, for the console and the JSON export.
#[derive(Debug, Clone)]
pub struct ClientHealth {
    pub ok: bool,
    pub reasons: Vec<String>,
    pub json: Value,
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

    /// Stops sampling and judges the run. `send_lag_p99_ms`: from the profiling summary.
    pub fn finish(self, send_lag_p99_ms: Option<f64>) -> ClientHealth {
        self.task.abort();
        let wall = self.started.elapsed().as_secs_f64();
        let mut lags = std::mem::take(&mut *self.lags_ms.lock().unwrap_or_else(|e| e.into_inner()));
        lags.sort_by(f64::total_cmp);
        let lag = |q: f64| (!lags.is_empty()).then(|| percentile_sorted(&lags, q));
        let (lag_p50, lag_p99) = (lag(50.0), lag(99.0));
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as f64;
        // SAFETY: sysconf with a valid name has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let (proc_cpu, machine_busy) = match (self.cpu0, cpu_ticks()) {
            (Some(a), Some(b)) if b.2 > a.2 => (
                Some((b.0 - a.0) as f64 / hz / wall * 100.0),
                Some((b.1 - a.1) as f64 / (b.2 - a.2) as f64 * 100.0),
            ),
            _ => (None, None),
        };
        let mut reasons = Vec::new();
        if let Some(p99) = send_lag_p99_ms.filter(|v| *v > 1.0) {
            reasons.push(format!("requests left late (send lag p99 {p99:.2} ms)"));
        }
        if let Some(p99) = lag_p99.filter(|v| *v > 1.0) {
            reasons.push(format!("the async runtime was slow to run woken tasks (lag p99 {p99:.2} ms), so timestamps may be late"));
        }
        // A busy machine alone doesn't skew numbers; it explains lag when there is some.
        // (Short runs are left out: /proc/stat counts in 10 ms ticks.)
        let ok = reasons.is_empty();
        if let Some(busy) = machine_busy.filter(|b| !ok && *b > 90.0 && wall >= 1.0) {
            reasons.push(format!("the machine's CPUs were {busy:.0} % busy"));
        }
        let json = json!({
            "verdict": if ok { "ok" } else { "client_may_be_the_bottleneck" },
            "reasons": reasons,
            "runtime_lag_ms": {"p50": lag_p50, "p99": lag_p99, "max": lags.last(), "samples": lags.len()},
            "send_lag_p99_ms": send_lag_p99_ms,
            "process_cpu_percent": proc_cpu,
            "process_cpu_percent_of_machine": proc_cpu.map(|p| p / cores),
            "machine_cpu_busy_percent": machine_busy,
            "cores": cores,
        });
        ClientHealth { ok, reasons, json }
    }
}
