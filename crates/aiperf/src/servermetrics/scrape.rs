//! The background scraper: one OS thread per source (server metrics, GPU telemetry) with a
//! current-thread tokio runtime of its own, so neither a slow endpoint nor parsing a large
//! exposition can take time from the load's runtime. Every `interval` it scrapes all its
//! endpoints at once (each bounded by the scrape timeout), stamps each answer with the run's
//! clock (the middle of the request), parses it, keeps it in the [`Store`] and, when asked,
//! writes it as one JSONL line. The run asks for extra scrapes at phase boundaries
//! ([`Scraper::scrape_now`]).

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value as Json};
use tokio::sync::{mpsc, oneshot};

use super::parse::{self, Exposition, Value};
use super::store::{Failure, Store, WindowSummary};
use super::window::{format_le, StartAt};
use crate::clock::Clock;

/// The largest exposition read (a bigger one is cut and counted as a failure).
pub const MAX_BODY: usize = 64 << 20;

enum Cmd {
    Now(oneshot::Sender<()>),
}

/// A running scraper.
pub struct Scraper {
    cmd: mpsc::UnboundedSender<Cmd>,
    store: Arc<Mutex<Store>>,
    thread: Option<std::thread::JoinHandle<Option<String>>>,
    timeout: Duration,
    urls: Vec<String>,
}

/// How the scraper runs.
#[derive(Debug, Clone)]
pub struct ScrapeSettings {
    pub interval: Duration,
    pub timeout: Duration,
    /// The raw time series, one line per scrape, when set.
    pub jsonl: Option<PathBuf>,
}

impl Scraper {
    /// Starts the thread; the first scrape is taken at once.
    pub fn start(
        urls: Vec<String>,
        settings: ScrapeSettings,
        clock: Clock,
        name: &str,
    ) -> std::io::Result<Scraper> {
        let store = Arc::new(Mutex::new(Store::new(&urls)));
        let (tx, rx) = mpsc::unbounded_channel();
        let jsonl = match &settings.jsonl {
            Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p)?)),
            None => None,
        };
        let (st, us) = (store.clone(), urls.clone());
        let timeout = settings.timeout;
        let thread = std::thread::Builder::new()
            .name(format!("aiperf-{name}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(run(us, settings, clock, st, rx, jsonl))
            })?;
        Ok(Scraper {
            cmd: tx,
            store,
            thread: Some(thread),
            timeout,
            urls,
        })
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Scrapes every endpoint now and waits for it (at most the scrape timeout plus a
    /// scheduled scrape that may be under way).
    pub async fn scrape_now(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Now(tx)).is_ok() {
            let _ = tokio::time::timeout(2 * self.timeout + Duration::from_secs(1), rx).await;
        }
    }

    /// The summary of `[start_ns, end_ns)` from what was scraped so far.
    pub fn summarize(&self, start_ns: u64, end_ns: u64) -> WindowSummary {
        self.lock().summarize(start_ns, end_ns)
    }

    /// The same, with the reference sample `at` the start (`StartAt::FirstAfter` for a
    /// time slice after the first).
    pub fn summarize_at(&self, start_ns: u64, end_ns: u64, at: StartAt) -> WindowSummary {
        self.lock().summarize_at(start_ns, end_ns, at)
    }

    /// Whether endpoint `i` ever answered with samples.
    pub fn has_data(&self, i: usize) -> bool {
        self.lock().has_data(i)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the thread (the JSONL flushed); the store, and the JSONL's write error if any.
    pub async fn stop(mut self) -> (Store, Option<String>) {
        drop(self.cmd);
        let error = match self.thread.take() {
            Some(t) => tokio::task::spawn_blocking(move || t.join().ok().flatten())
                .await
                .ok()
                .flatten(),
            None => None,
        };
        let store = std::mem::take(&mut *self.store.lock().unwrap_or_else(|e| e.into_inner()));
        (store, error)
    }
}

async fn run(
    urls: Vec<String>,
    settings: ScrapeSettings,
    clock: Clock,
    store: Arc<Mutex<Store>>,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    mut jsonl: Option<std::io::BufWriter<std::fs::File>>,
) -> Option<String> {
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => return Some(format!("cannot build the scrape client: {e}")),
    };
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut write_error = None;
    loop {
        let reply = tokio::select! {
            biased;
            cmd = rx.recv() => match cmd {
                Some(Cmd::Now(tx)) => Some(tx),
                None => break,
            },
            _ = tick.tick() => None,
        };
        let results = futures_util::future::join_all(
            urls.iter()
                .map(|u| scrape_one(&client, u, &clock, settings.timeout)),
        )
        .await;
        {
            let mut st = store.lock().unwrap_or_else(|e| e.into_inner());
            for (i, (t, r)) in results.iter().enumerate() {
                match r {
                    Ok(e) => st.ingest(i, *t, e),
                    Err(f) => st.fail(i, f.clone()),
                }
            }
        }
        if let (Some(w), None) = (jsonl.as_mut(), &write_error) {
            for (i, (t, r)) in results.iter().enumerate() {
                let Ok(e) = r else { continue };
                let line = jsonl_line(&urls[i], clock.wall_ns(*t), *t, e);
                if let Err(err) = serde_json::to_writer(&mut *w, &line)
                    .map_err(std::io::Error::from)
                    .and_then(|_| w.write_all(b"\n"))
                {
                    write_error = Some(format!("cannot write the raw time series: {err}"));
                }
            }
        }
        if let Some(tx) = reply {
            let _ = tx.send(());
        }
    }
    if let Some(mut w) = jsonl {
        if let Err(e) = w.flush() {
            write_error.get_or_insert(format!("cannot write the raw time series: {e}"));
        }
    }
    write_error
}

/// One scrape: its time on the run's clock and the exposition, or why there is none.
async fn scrape_one(
    client: &reqwest::Client,
    url: &str,
    clock: &Clock,
    timeout: Duration,
) -> (u64, Result<Exposition, Failure>) {
    let t0 = clock.now_ns();
    let got = tokio::time::timeout(timeout, fetch(client, url)).await;
    let t1 = clock.now_ns();
    let t = t0 + (t1 - t0) / 2;
    let r = match got {
        Err(_) => Err(Failure::Timeout),
        Ok(Err(f)) => Err(f),
        Ok(Ok(text)) => Ok(parse::parse(&text)),
    };
    (t, r)
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<String, Failure> {
    let classify = |e: reqwest::Error| {
        if e.is_timeout() {
            Failure::Timeout
        } else if e.is_connect() {
            Failure::Refused(root_cause(&e))
        } else {
            Failure::Other(root_cause(&e))
        }
    };
    let mut resp = client
        .get(url)
        .header("accept", "text/plain;version=0.0.4;q=1,*/*;q=0.1")
        .send()
        .await
        .map_err(classify)?;
    if !resp.status().is_success() {
        return Err(Failure::Status(resp.status().as_u16()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(classify)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(Failure::Other(format!(
                "exposition larger than {} MiB",
                MAX_BODY >> 20
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The innermost error's message (reqwest's own is "error sending request").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// One line of the raw time series: the scrape's endpoint, times and every series.
fn jsonl_line(url: &str, wall_ns: u64, mono_ns: u64, e: &Exposition) -> Json {
    let mut metrics = Map::new();
    for f in &e.families {
        let series: Vec<Json> = f
            .series
            .iter()
            .map(|s| {
                let labels: Map<String, Json> = s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect();
                match &s.value {
                    Value::Scalar(v) => json!({"labels": labels, "value": v}),
                    Value::Histogram(h) => {
                        let b: Map<String, Json> = h
                            .buckets
                            .iter()
                            .map(|(le, n)| (format_le(*le), json!(n)))
                            .collect();
                        json!({"labels": labels, "buckets": b, "sum": h.sum, "count": h.count})
                    }
                    Value::Summary { count, sum } => {
                        json!({"labels": labels, "sum": sum, "count": count})
                    }
                }
            })
            .collect();
        metrics.insert(
            f.name.clone(),
            json!({"type": f.kind.as_str(), "series": series}),
        );
    }
    json!({"endpoint_url": url, "timestamp_ns": wall_ns, "mono_ns": mono_ns, "metrics": metrics})
}
