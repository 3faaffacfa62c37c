//! Sub-millisecond sleeps. tokio's timer wheel ticks in whole milliseconds, too coarse for
//! token pacing and high request rates. Deadlines here are served by one dedicated thread
//! that sleeps on a condition variable with minimal timer slack, so wakeups land within tens
//! of microseconds of the deadline without spinning.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

struct Entry {
    at: Instant,
    seq: u64,
    tx: oneshot::Sender<()>,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

struct Timer {
    heap: Mutex<(BinaryHeap<Reverse<Entry>>, u64)>,
    cv: Condvar,
}

/// How early a deadline may be released (the wakeup itself takes about this long).
const EARLY: Duration = Duration::from_micros(15);
/// Waits longer than this go through tokio's timer first, to keep the heap small.
const COARSE_MARGIN: Duration = Duration::from_millis(2);

/// The timer thread, started on first use; `None` if the OS refused the thread, and then
/// sleeps fall back to tokio's timer (coarser, never a panic).
fn timer() -> Option<&'static Timer> {
    static T: OnceLock<Option<&'static Timer>> = OnceLock::new();
    *T.get_or_init(|| {
        let t: &'static Timer = Box::leak(Box::new(Timer {
            heap: Mutex::new((BinaryHeap::new(), 0)),
            cv: Condvar::new(),
        }));
        let spawned = std::thread::Builder::new()
            .name("aiperf-hires-timer".into())
            .spawn(move || run(t));
        match spawned {
            Ok(_) => Some(t),
            Err(e) => {
                tracing::warn!("no high-resolution timer thread ({e}): using tokio's timer");
                None
            }
        }
    })
}

fn run(t: &'static Timer) {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_TIMERSLACK only changes this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
    let mut guard = t.heap.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = Instant::now();
        let mut fired = Vec::new();
        while let Some(Reverse(top)) = guard.0.peek() {
            if top.at <= now + EARLY {
                if let Some(Reverse(e)) = guard.0.pop() {
                    fired.push(e.tx);
                }
            } else {
                break;
            }
        }
        if !fired.is_empty() {
            drop(guard);
            for tx in fired {
                let _ = tx.send(());
            }
            guard = t.heap.lock().unwrap_or_else(|e| e.into_inner());
            continue;
        }
        guard = match guard.0.peek() {
            Some(Reverse(top)) => {
                let wait = top.at.saturating_duration_since(now + EARLY);
                t.cv.wait_timeout(guard, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => t.cv.wait(guard).unwrap_or_else(|e| e.into_inner()),
        };
    }
}

/// Sleeps until `deadline` with sub-millisecond precision.
pub async fn sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline <= now {
        return;
    }
    if deadline - now > COARSE_MARGIN {
        tokio::time::sleep_until((deadline - COARSE_MARGIN).into()).await;
    }
    let Some(t) = timer() else {
        tokio::time::sleep_until(deadline.into()).await;
        return;
    };
    let (tx, rx) = oneshot::channel();
    {
        let mut g = t.heap.lock().unwrap_or_else(|e| e.into_inner());
        g.1 += 1;
        let seq = g.1;
        let is_first = g.0.peek().is_none_or(|Reverse(top)| deadline < top.at);
        g.0.push(Reverse(Entry {
            at: deadline,
            seq,
            tx,
        }));
        if is_first {
            t.cv.notify_one();
        }
    }
    let _ = rx.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn never_wakes_before_the_deadline_minus_slack() {
        for us in [0u64, 300, 1500, 4000] {
            let d = Instant::now() + Duration::from_micros(us);
            sleep_until(d).await;
            assert!(Instant::now() + EARLY >= d);
        }
    }

    #[tokio::test]
    async fn many_sleepers_all_wake() {
        let base = Instant::now();
        let handles: Vec<_> = (0..200)
            .map(|i| tokio::spawn(sleep_until(base + Duration::from_micros(50 * (i % 20)))))
            .collect();
        for h in handles {
            h.await.unwrap();
        }
    }
}
