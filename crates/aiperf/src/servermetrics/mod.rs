//! Server metrics and GPU telemetry: the inference server's own Prometheus `/metrics` and
//! DCGM exporters, scraped in the background during the run and summarised over each phase's
//! window (docs/server-metrics.md).
//!
//! `parse.rs`: the exposition format. `window.rs`: the math over one window. `store.rs`:
//! the samples kept (bounded) and the window summaries. `scrape.rs`: the scraper threads.
//! This file: the `server_metrics` config section, the endpoints a run scrapes, the
//! [`Collector`] the run drives (a scrape at each phase boundary, a summary per phase), the
//! artifacts, the GPU view, the console lines.

pub mod parse;
pub mod scrape;
pub mod store;
pub mod timeline;
pub mod window;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value as Json};

use crate::clock::Clock;
use scrape::{ScrapeSettings, Scraper};
use store::{EndpointHealth, Stats, WindowSummary};
use window::GaugeStats;

/// The DCGM exporters tried when GPU telemetry is on (AIPerf's defaults).
pub const DEFAULT_GPU_URLS: &[&str] = &[
    "http://localhost:9400/metrics",
    "http://localhost:9401/metrics",
];
/// `--server-metrics-interval`'s default, in seconds.
pub const DEFAULT_INTERVAL_SECS: f64 = 1.0;

/// A `--server-metrics-formats` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The window's summary (`server_metrics_export.json`, `gpu_telemetry_export.json`).
    Json,
    /// The same as a table (`.csv`).
    Csv,
    /// Every scrape as it came (`.jsonl`), written during the run.
    Jsonl,
}

/// The `server_metrics` section of the config: what is scraped, how often, what is written.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServerMetricsSpec {
    /// Off with `--no-server-metrics`.
    pub enabled: bool,
    /// `--server-metrics URL...`: scraped besides each `--url`'s own `/metrics`.
    pub urls: Vec<String>,
    #[serde(serialize_with = "crate::units::secs")]
    pub interval: Duration,
    pub formats: Vec<Format>,
    /// Off with `--no-gpu-telemetry`.
    pub gpu_telemetry: bool,
    /// `--gpu-telemetry URL...`: DCGM exporters scraped besides the defaults.
    pub gpu_urls: Vec<String>,
}

impl Default for ServerMetricsSpec {
    fn default() -> Self {
        ServerMetricsSpec {
            enabled: true,
            urls: Vec::new(),
            interval: Duration::from_secs_f64(DEFAULT_INTERVAL_SECS),
            formats: vec![Format::Json, Format::Csv],
            gpu_telemetry: true,
            gpu_urls: Vec::new(),
        }
    }
}

impl ServerMetricsSpec {
    /// One scrape may take this long: the interval, from 0.5 s to 5 s.
    pub fn timeout(&self) -> Duration {
        self.interval
            .clamp(Duration::from_millis(500), Duration::from_secs(5))
    }
}

/// A scrape URL as given (`host:port`, `http://host:port`, `.../path`): `http://` added
/// without a scheme, `/metrics` without a path.
pub fn normalize_url(given: &str) -> Result<String, String> {
    let t = given.trim();
    let with_scheme = if t.contains("://") {
        t.to_string()
    } else {
        format!("http://{t}")
    };
    let mut u =
        reqwest::Url::parse(&with_scheme).map_err(|e| format!("`{given}` is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{given}` is not an http:// or https:// URL"));
    }
    if u.path().is_empty() || u.path() == "/" {
        u.set_path("/metrics");
    }
    Ok(u.to_string())
}

/// Each endpoint URL's origin plus `/metrics`, once each.
pub fn default_server_urls(endpoint_urls: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for u in endpoint_urls {
        if let Ok(mut url) = reqwest::Url::parse(u) {
            url.set_path("/metrics");
            url.set_query(None);
            url.set_fragment(None);
            let s = url.to_string();
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
}

/// Where the artifacts go: the directory and the two file stems
/// (`server_metrics_export`, `gpu_telemetry_export`, or `<prefix>_server_metrics`, ...).
#[derive(Debug, Clone)]
pub struct Files {
    pub dir: PathBuf,
    pub server_stem: String,
    pub gpu_stem: String,
}

/// The endpoints to scrape: the implicit ones (kept only when a first scrape gives samples)
/// and the explicit ones (always kept: their failures are counted).
async fn probe_endpoints(
    implicit: Vec<String>,
    explicit: &[String],
    timeout: Duration,
) -> (Vec<String>, Vec<(String, String)>) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build();
    let mut kept: Vec<String> = Vec::new();
    let mut missed = Vec::new();
    let mut all: Vec<(String, bool)> = explicit.iter().map(|u| (u.clone(), true)).collect();
    for u in implicit {
        if !all.iter().any(|(x, _)| *x == u) {
            all.push((u, false));
        }
    }
    let probes = futures_util::future::join_all(all.iter().map(|(u, _)| {
        let c = client.as_ref().ok().cloned();
        async move {
            let Some(c) = c else {
                return Err("no HTTP client".to_string());
            };
            probe(&c, u, timeout).await
        }
    }))
    .await;
    for ((u, explicit), r) in all.into_iter().zip(probes) {
        match r {
            Ok(()) => kept.push(u),
            Err(why) => {
                if explicit {
                    kept.push(u.clone());
                }
                missed.push((u, why));
            }
        }
    }
    (kept, missed)
}

async fn probe(c: &reqwest::Client, url: &str, timeout: Duration) -> Result<(), String> {
    let r = tokio::time::timeout(timeout, async {
        let resp = c.get(url).send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status().as_u16()));
        }
        let text = resp.text().await.map_err(|e| e.to_string())?;
        let e = parse::parse(&text);
        if e.families.iter().all(|f| f.series.is_empty()) {
            return Err("no Prometheus samples".to_string());
        }
        Ok(())
    })
    .await;
    r.unwrap_or_else(|_| Err("timed out".to_string()))
}

/// The run's scrapers, driven by the phases.
pub struct Collector {
    server: Option<Scraper>,
    gpu: Option<Scraper>,
    spec: ServerMetricsSpec,
    clock: Clock,
    files: Files,
}

/// The endpoints to scrape, found by [`Collector::find`]: `None` where that collection is
/// off.
#[derive(Debug, Default)]
pub struct Found {
    server: Option<Vec<String>>,
    gpu: Option<Vec<String>>,
}

/// What the collection leaves for the report and the console.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The `server_metrics` section of `profile_export_aiperf.json`.
    pub server_section: Option<Json>,
    /// The `gpu_telemetry` section.
    pub gpu_section: Option<Json>,
    /// Lines for the console summary.
    pub console: String,
    /// Artifacts that could not be written.
    pub errors: Vec<String>,
}

impl Collector {
    /// Finds the endpoints to scrape (`endpoint_urls`: the run's, the mock's real address in
    /// place of `mock`): the server's and the DCGM exporters' probed at once. It only reads
    /// the network, so it can run while the rest of the run is prepared.
    pub async fn find(spec: &ServerMetricsSpec, endpoint_urls: &[String]) -> Found {
        let timeout = spec.timeout();
        let server = async {
            if !spec.enabled {
                return None;
            }
            let (urls, missed) =
                probe_endpoints(default_server_urls(endpoint_urls), &spec.urls, timeout).await;
            for (u, why) in &missed {
                if spec.urls.contains(u) {
                    eprintln!("server metrics: {u} did not answer yet ({why}); scraping it anyway, failures are counted");
                } else {
                    tracing::debug!("server metrics: {u} skipped ({why})");
                }
            }
            Some(urls)
        };
        let gpu = async {
            if !spec.gpu_telemetry {
                return None;
            }
            let defaults: Vec<String> = DEFAULT_GPU_URLS.iter().map(|s| s.to_string()).collect();
            let (urls, missed) = probe_endpoints(defaults, &spec.gpu_urls, timeout).await;
            let answered = urls
                .iter()
                .filter(|u| !missed.iter().any(|(m, _)| m == *u))
                .count();
            if answered == 0 && !missed.is_empty() {
                let list: Vec<&str> = missed.iter().map(|(u, _)| u.as_str()).collect();
                let line = format!(
                    "GPU telemetry: no DCGM exporter answered at {} ({}); the run goes on without it",
                    list.join(", "),
                    missed[0].1
                );
                if spec.gpu_urls.is_empty() {
                    tracing::info!("{line}");
                } else {
                    eprintln!("{line}");
                }
            }
            Some(urls)
        };
        let (server, gpu) = tokio::join!(server, gpu);
        Found { server, gpu }
    }

    /// Starts the scrapers of what [`find`](Self::find) found; the first scrape of each
    /// endpoint is the baseline.
    pub fn start(found: Found, spec: &ServerMetricsSpec, clock: Clock, files: Files) -> Collector {
        let server = found.server.and_then(|urls| {
            start_scraper(
                urls,
                spec,
                clock,
                &files.dir,
                &files.server_stem,
                "server-metrics",
            )
        });
        let gpu = found.gpu.and_then(|urls| {
            start_scraper(
                urls,
                spec,
                clock,
                &files.dir,
                &files.gpu_stem,
                "gpu-telemetry",
            )
        });
        Collector {
            server,
            gpu,
            spec: spec.clone(),
            clock,
            files,
        }
    }

    /// Whether anything is scraped.
    pub fn is_active(&self) -> bool {
        self.server.is_some() || self.gpu.is_some()
    }

    /// A scrape of every endpoint, waited for: at a phase's start and end, so the phase's
    /// window is bounded by samples.
    pub async fn mark(&self) {
        let a = async {
            if let Some(s) = &self.server {
                s.scrape_now().await
            }
        };
        let b = async {
            if let Some(g) = &self.gpu {
                g.scrape_now().await
            }
        };
        tokio::join!(a, b);
    }

    /// The server metrics over a window given in wall-clock ns (the phase stats' times).
    pub fn server_window(&self, start_wall_ns: u64, end_wall_ns: u64) -> Option<WindowSummary> {
        let origin = self.clock.wall_ns(0);
        let s = self.server.as_ref()?;
        Some(s.summarize(
            start_wall_ns.saturating_sub(origin),
            end_wall_ns.saturating_sub(origin),
        ))
    }

    /// Every metric of the server (`server_metrics`: the whole window summary) and the
    /// per-GPU telemetry (`gpu_telemetry`) over a window in wall-clock ns, for the sections
    /// collected: a time slice's part of `profile_export_aiperf_timeslices.json`.
    /// `first`: the first slice (its counters from the sample before it, as a phase's);
    /// a later slice starts at the sample its predecessor ended on, so the slices' counter
    /// and histogram deltas add up to the run's.
    pub fn sections(
        &self,
        start_wall_ns: u64,
        end_wall_ns: u64,
        first: bool,
    ) -> serde_json::Map<String, Json> {
        let at = if first {
            window::StartAt::LastBefore
        } else {
            window::StartAt::FirstAfter
        };
        let origin = self.clock.wall_ns(0);
        let (start, end) = (
            start_wall_ns.saturating_sub(origin),
            end_wall_ns.saturating_sub(origin),
        );
        let mut out = serde_json::Map::new();
        if let Some(s) = &self.server {
            out.insert(
                "server_metrics".into(),
                to_json(&s.summarize_at(start, end, at)),
            );
        }
        if let Some(g) = &self.gpu {
            let gpus = gpus(&g.summarize_at(start, end, at));
            if !gpus.is_empty() {
                out.insert("gpu_telemetry".into(), to_json(&gpus));
            }
        }
        out
    }

    /// Stops the scrapers and writes the artifacts for the window (wall-clock ns).
    pub async fn finish(self, start_wall_ns: u64, end_wall_ns: u64) -> Outcome {
        let origin = self.clock.wall_ns(0);
        let (start, end) = (
            start_wall_ns.saturating_sub(origin),
            end_wall_ns.saturating_sub(origin),
        );
        let mut out = Outcome::default();
        let formats = &self.spec.formats;
        let jsonl_names = |stem: &str| {
            formats
                .contains(&Format::Jsonl)
                .then(|| format!("{stem}.jsonl"))
        };
        if let Some(s) = self.server {
            let (store, err) = s.stop().await;
            out.errors.extend(err);
            let w = store.summarize(start, end);
            let clock = self.clock;
            let wall = move |t: u64| clock.wall_ns(t);
            let mut body = to_json(&w);
            body["timeline"] = to_json(&timeline::server(&store, &wall));
            let mut files = write_artifacts(
                &self.files.dir,
                &self.files.server_stem,
                formats,
                &body,
                || server_csv(&w),
                &mut out.errors,
            );
            files.extend(jsonl_names(&self.files.server_stem));
            let highlights = highlights(&w);
            out.console.push_str(&server_console(&w, &highlights));
            out.server_section = Some(json!({
                "window": {"start_ns": w.start_ns, "end_ns": w.end_ns, "duration_sec": w.duration_sec},
                "endpoints": w.endpoints,
                "series": w.metrics.values().map(|m| m.series.len()).sum::<usize>(),
                "highlights": highlights,
                "notes": w.notes,
                "files": files,
            }));
        }
        if let Some(g) = self.gpu {
            let (store, err) = g.stop().await;
            out.errors.extend(err);
            let w = store.summarize(start, end);
            let gpus = gpus(&w);
            let clock = self.clock;
            let wall = move |t: u64| clock.wall_ns(t);
            let body = json!({
                "window": {"start_ns": w.start_ns, "end_ns": w.end_ns, "duration_sec": w.duration_sec},
                "endpoints": w.endpoints,
                "gpus": gpus,
                "timeline": timeline::gpu(&store, &wall),
            });
            let collected = !gpus.is_empty();
            if collected {
                let mut files = write_artifacts(
                    &self.files.dir,
                    &self.files.gpu_stem,
                    formats,
                    &body,
                    || gpu_csv(&gpus),
                    &mut out.errors,
                );
                files.extend(jsonl_names(&self.files.gpu_stem));
                out.console.push_str(&gpu_console(&gpus));
                let mut section = body;
                if let Some(o) = section.as_object_mut() {
                    // The timeline stays in its file: the summary stays small.
                    o.remove("timeline");
                }
                section["files"] = json!(files);
                out.gpu_section = Some(section);
            } else if w.endpoints.iter().any(|e| e.failures() > 0) {
                // Asked for, never answered: the failures are the report.
                out.gpu_section = Some(json!({"endpoints": w.endpoints, "gpus": []}));
            }
        }
        out
    }
}

fn start_scraper(
    urls: Vec<String>,
    spec: &ServerMetricsSpec,
    clock: Clock,
    dir: &Path,
    stem: &str,
    name: &str,
) -> Option<Scraper> {
    if urls.is_empty() {
        return None;
    }
    let jsonl = spec
        .formats
        .contains(&Format::Jsonl)
        .then(|| dir.join(format!("{stem}.jsonl")));
    let settings = ScrapeSettings {
        interval: spec.interval,
        timeout: spec.timeout(),
        jsonl,
    };
    match Scraper::start(urls, settings, clock, name) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("{name}: cannot start the scraper: {e}; the run goes on without it");
            None
        }
    }
}

fn to_json<T: Serialize>(v: &T) -> Json {
    serde_json::to_value(v).unwrap_or(Json::Null)
}

/// Writes `<stem>.json` and `<stem>.csv` as the formats ask; the names written.
fn write_artifacts(
    dir: &Path,
    stem: &str,
    formats: &[Format],
    body: &Json,
    csv: impl FnOnce() -> String,
    errors: &mut Vec<String>,
) -> Vec<String> {
    let mut written = Vec::new();
    if formats.contains(&Format::Json) {
        let name = format!("{stem}.json");
        match serde_json::to_vec_pretty(body)
            .map_err(std::io::Error::from)
            .and_then(|b| std::fs::write(dir.join(&name), b))
        {
            Ok(()) => written.push(name),
            Err(e) => errors.push(format!("cannot write {name}: {e}")),
        }
    }
    if formats.contains(&Format::Csv) {
        let name = format!("{stem}.csv");
        match std::fs::write(dir.join(&name), csv()) {
            Ok(()) => written.push(name),
            Err(e) => errors.push(format!("cannot write {name}: {e}")),
        }
    }
    written
}

/// A CSV field, quoted when needed.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn num(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x}"),
        _ => String::new(),
    }
}

fn labels_text(l: &BTreeMap<String, String>) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// `server_metrics_export.csv`: one row per series.
fn server_csv(w: &WindowSummary) -> String {
    let mut out = String::from(
        "endpoint_url,metric,type,labels,samples,delta,rate,avg,min,max,p50,p90,p99,count,sum\n",
    );
    for (name, m) in &w.metrics {
        for s in &m.series {
            let cols: [String; 11] = match &s.stats {
                Stats::Counter(c) => [
                    c.samples.to_string(),
                    num(Some(c.delta)),
                    num(c.rate),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                ],
                Stats::Gauge(g) => [
                    g.samples.to_string(),
                    String::new(),
                    String::new(),
                    num(Some(g.avg)),
                    num(Some(g.min)),
                    num(Some(g.max)),
                    num(Some(g.p50)),
                    num(Some(g.p90)),
                    num(Some(g.p99)),
                    String::new(),
                    String::new(),
                ],
                Stats::Histogram(h) => [
                    h.samples.to_string(),
                    String::new(),
                    String::new(),
                    num(h.avg),
                    String::new(),
                    String::new(),
                    num(h.p50),
                    num(h.p90),
                    num(h.p99),
                    num(Some(h.count)),
                    num(Some(h.sum)),
                ],
            };
            out.push_str(&format!(
                "{},{},{},{},{}\n",
                csv_field(&s.endpoint_url),
                csv_field(name),
                m.kind.as_str(),
                csv_field(&labels_text(&s.labels)),
                cols.join(",")
            ));
        }
    }
    out
}

/// A friendly row of the console table, and of the report's `highlights`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Highlight {
    pub label: &'static str,
    /// The metric names it came from.
    pub metrics: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avg: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
    pub unit: &'static str,
}

/// Known names (`_total` suffixes ignored) per friendly label.
const RUNNING: &[&str] = &[
    "vllm:num_requests_running",
    "sglang:num_running_reqs",
    "dynamo_frontend_inflight_requests",
    "trtllm_num_requests_running",
];
const WAITING: &[&str] = &[
    "vllm:num_requests_waiting",
    "sglang:num_queue_reqs",
    "dynamo_frontend_queued_requests",
    "trtllm_num_requests_waiting",
];
const KV_USAGE: &[&str] = &[
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "sglang:token_usage",
    "dynamo_component_kvstats_gpu_cache_usage_percent",
    "trtllm_kv_cache_utilization",
];
const HIT_RATE_GAUGES: &[&str] = &[
    "vllm:gpu_prefix_cache_hit_rate",
    "sglang:cache_hit_rate",
    "trtllm_kv_cache_hit_rate",
];
const PREEMPTIONS: &[&str] = &["vllm:num_preemptions"];
const TTFT: &[&str] = &[
    "vllm:time_to_first_token_seconds",
    "sglang:time_to_first_token_seconds",
    "dynamo_frontend_time_to_first_token_seconds",
];

fn base_name(n: &str) -> &str {
    n.strip_suffix("_total").unwrap_or(n)
}

fn matching<'a>(
    w: &'a WindowSummary,
    names: &[&str],
) -> Vec<(&'a String, &'a store::MetricSummary)> {
    w.metrics
        .iter()
        .filter(|(n, _)| names.contains(&base_name(n)))
        .collect()
}

fn gauges<'a>(found: &[(&'a String, &'a store::MetricSummary)]) -> Vec<&'a GaugeStats> {
    found
        .iter()
        .flat_map(|(_, m)| m.series.iter())
        .filter_map(|s| match &s.stats {
            Stats::Gauge(g) => Some(g),
            _ => None,
        })
        .collect()
}

fn counter_total(found: &[(&String, &store::MetricSummary)]) -> Option<f64> {
    let deltas: Vec<f64> = found
        .iter()
        .flat_map(|(_, m)| m.series.iter())
        .filter_map(|s| match &s.stats {
            Stats::Counter(c) => Some(c.delta),
            _ => None,
        })
        .collect();
    (!deltas.is_empty()).then(|| deltas.iter().sum())
}

/// The few server metrics that matter, with friendly labels: running and waiting requests
/// (summed over engines and endpoints), KV-cache usage and prefix-cache hit rate (averaged),
/// preemptions (the window's total), the server's TTFT.
pub fn highlights(w: &WindowSummary) -> Vec<Highlight> {
    let mut out = Vec::new();
    let names = |f: &[(&String, &store::MetricSummary)]| {
        f.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>()
    };
    let empty = |label, metrics, unit| Highlight {
        label,
        metrics,
        avg: None,
        max: None,
        total: None,
        p50: None,
        p99: None,
        unit,
    };
    for (label, list) in [("Running requests", RUNNING), ("Waiting requests", WAITING)] {
        let f = matching(w, list);
        let g = gauges(&f);
        if !g.is_empty() {
            let mut h = empty(label, names(&f), "requests");
            h.avg = Some(g.iter().map(|g| g.avg).sum());
            h.max = Some(g.iter().map(|g| g.max).sum());
            out.push(h);
        }
    }
    let f = matching(w, KV_USAGE);
    let g = gauges(&f);
    if !g.is_empty() {
        let mut h = empty("KV-cache usage", names(&f), "%");
        h.avg = Some(100.0 * g.iter().map(|g| g.avg).sum::<f64>() / g.len() as f64);
        h.max = Some(100.0 * g.iter().map(|g| g.max).fold(f64::NEG_INFINITY, f64::max));
        out.push(h);
    }
    let hits = matching(w, &["vllm:prefix_cache_hits"]);
    let queries = matching(w, &["vllm:prefix_cache_queries"]);
    match (counter_total(&hits), counter_total(&queries)) {
        (Some(h), Some(q)) if q > 0.0 => {
            let mut names = names(&hits);
            names.extend(queries.iter().map(|(n, _)| n.to_string()));
            let mut row = empty("Prefix-cache hit rate", names, "%");
            row.avg = Some(100.0 * h / q);
            out.push(row);
        }
        _ => {
            let f = matching(w, HIT_RATE_GAUGES);
            let g = gauges(&f);
            if !g.is_empty() {
                let mut h = empty("Prefix-cache hit rate", names(&f), "%");
                h.avg = Some(100.0 * g.iter().map(|g| g.avg).sum::<f64>() / g.len() as f64);
                out.push(h);
            }
        }
    }
    let f = matching(w, PREEMPTIONS);
    if let Some(t) = counter_total(&f) {
        let mut h = empty("Preemptions", names(&f), "preemptions");
        h.total = Some(t);
        out.push(h);
    }
    let f = matching(w, TTFT);
    let hist: Vec<&window::HistogramStats> = f
        .iter()
        .flat_map(|(_, m)| m.series.iter())
        .filter_map(|s| match &s.stats {
            Stats::Histogram(h) => Some(h),
            _ => None,
        })
        .collect();
    if hist.len() == 1 {
        let mut h = empty("Server TTFT", names(&f), "ms");
        h.total = Some(hist[0].count);
        // The mean is exact (the window's sum over its count); the percentiles are
        // interpolated within a bucket (vLLM's TTFT buckets have one from 20 to 40 ms).
        h.avg = hist[0].avg.map(|v| v * 1e3);
        h.p50 = hist[0].p50.map(|v| v * 1e3);
        h.p99 = hist[0].p99.map(|v| v * 1e3);
        out.push(h);
    }
    out
}

fn fmt(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn health_line(kind: &str, e: &EndpointHealth) -> Option<String> {
    (e.failures() > 0 || e.garbage_lines > 0).then(|| {
        format!(
            "{kind} {}: {} of {} scrapes failed ({} refused, {} timed out, {} HTTP errors, {} without samples; {} unreadable lines)",
            e.url,
            e.failures(),
            e.scrapes,
            e.refused,
            e.timeouts,
            e.http_errors,
            e.garbage,
            e.garbage_lines
        )
    })
}

fn server_console(w: &WindowSummary, hl: &[Highlight]) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let series: usize = w.metrics.values().map(|m| m.series.len()).sum();
    let _ = writeln!(
        t,
        "Server metrics ({} endpoint(s), {series} series over the profiling window):",
        w.endpoints.len()
    );
    for h in hl {
        let mut parts = Vec::new();
        let unit = match h.unit {
            "%" => " %",
            "ms" => " ms",
            _ => "",
        };
        if let Some(v) = h.total {
            parts.push(format!("total {}", fmt(v)));
        }
        if let Some(v) = h.avg {
            parts.push(format!("avg {}{unit}", fmt(v)));
        }
        if let Some(v) = h.max {
            parts.push(format!("max {}{unit}", fmt(v)));
        }
        if let Some(v) = h.p50 {
            parts.push(format!("p50 {} ms", fmt(v)));
        }
        if let Some(v) = h.p99 {
            parts.push(format!("p99 {} ms", fmt(v)));
        }
        if h.p50.is_some() || h.p99.is_some() {
            parts.push("(percentiles interpolated within histogram buckets)".into());
        }
        let _ = writeln!(t, "  {:<24} {}", h.label, parts.join("  "));
    }
    for e in &w.endpoints {
        if let Some(l) = health_line("  scrape", e) {
            let _ = writeln!(t, "{l}");
        }
    }
    t
}

/// The DCGM fields summarised per GPU: (field, key, unit).
pub const GPU_FIELDS: &[(&str, &str, &str)] = &[
    ("DCGM_FI_DEV_GPU_UTIL", "gpu_utilization", "%"),
    ("DCGM_FI_DEV_FB_USED", "gpu_memory_used", "MiB"),
    ("DCGM_FI_DEV_POWER_USAGE", "power_usage", "W"),
    ("DCGM_FI_DEV_SM_CLOCK", "sm_clock", "MHz"),
    ("DCGM_FI_DEV_GPU_TEMP", "gpu_temperature", "C"),
];

/// One GPU's summary.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GpuSummary {
    pub endpoint_url: String,
    pub gpu: String,
    pub uuid: String,
    pub hostname: String,
    pub model_name: String,
    /// By key (`gpu_utilization`, ...): unit and time-weighted stats.
    pub metrics: BTreeMap<String, Json>,
}

/// Per GPU (endpoint, `gpu`, `UUID`, `Hostname`), the DCGM fields over the window.
pub fn gpus(w: &WindowSummary) -> Vec<GpuSummary> {
    let mut by_gpu: BTreeMap<(String, String, String, String), GpuSummary> = BTreeMap::new();
    for (field, key, unit) in GPU_FIELDS {
        let Some(m) = w.metrics.get(*field) else {
            continue;
        };
        for s in &m.series {
            let Stats::Gauge(g) = &s.stats else { continue };
            let l = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
            let id = (s.endpoint_url.clone(), l("Hostname"), l("gpu"), l("UUID"));
            let entry = by_gpu.entry(id).or_insert_with(|| GpuSummary {
                endpoint_url: s.endpoint_url.clone(),
                gpu: l("gpu"),
                uuid: l("UUID"),
                hostname: l("Hostname"),
                model_name: l("modelName"),
                metrics: BTreeMap::new(),
            });
            let mut v = to_json(g);
            v["unit"] = json!(unit);
            entry.metrics.insert(key.to_string(), v);
        }
    }
    by_gpu.into_values().collect()
}

fn gpu_csv(gpus: &[GpuSummary]) -> String {
    let mut out = String::from(
        "endpoint_url,hostname,gpu,uuid,model_name,metric,unit,avg,min,max,p50,p90,p99\n",
    );
    for g in gpus {
        for (key, v) in &g.metrics {
            let f = |k: &str| num(v[k].as_f64());
            out.push_str(&format!(
                "{},{},{},{},{},{key},{},{},{},{},{},{},{}\n",
                csv_field(&g.endpoint_url),
                csv_field(&g.hostname),
                csv_field(&g.gpu),
                csv_field(&g.uuid),
                csv_field(&g.model_name),
                v["unit"].as_str().unwrap_or(""),
                f("avg"),
                f("min"),
                f("max"),
                f("p50"),
                f("p90"),
                f("p99")
            ));
        }
    }
    out
}

fn gpu_console(gpus: &[GpuSummary]) -> String {
    use std::fmt::Write;
    let mut t = String::from("GPU telemetry (profiling window, avg / max):\n");
    for g in gpus {
        let mut parts = Vec::new();
        for (_, key, unit) in GPU_FIELDS {
            if let Some(v) = g.metrics.get(*key) {
                let (a, m) = (
                    v["avg"].as_f64().unwrap_or(f64::NAN),
                    v["max"].as_f64().unwrap_or(f64::NAN),
                );
                let label = key.replace('_', " ");
                parts.push(format!("{label} {} / {} {unit}", fmt(a), fmt(m)));
            }
        }
        let _ = writeln!(
            t,
            "  GPU {} {}{}: {}",
            g.gpu,
            g.model_name,
            if g.hostname.is_empty() {
                String::new()
            } else {
                format!(" on {}", g.hostname)
            },
            parts.join(", ")
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalised() {
        assert_eq!(
            normalize_url("localhost:9400").unwrap(),
            "http://localhost:9400/metrics"
        );
        assert_eq!(
            normalize_url("http://h:1/custom/m").unwrap(),
            "http://h:1/custom/m"
        );
        assert_eq!(normalize_url("https://h/").unwrap(), "https://h/metrics");
        assert!(normalize_url("ftp://h/x").is_err());
        assert!(normalize_url("http://").is_err());
        assert_eq!(
            default_server_urls(&[
                "http://127.0.0.1:8000/v1".into(),
                "http://127.0.0.1:8000".into(),
                "https://x:9/".into()
            ]),
            vec![
                "http://127.0.0.1:8000/metrics".to_string(),
                "https://x:9/metrics".to_string()
            ]
        );
    }

    fn window_of(texts: &[&str]) -> WindowSummary {
        let mut st = store::Store::new(&["http://s/metrics".into()]);
        for (i, t) in texts.iter().enumerate() {
            st.ingest(0, i as u64 * 1_000_000_000, &parse::parse(t));
        }
        st.summarize(0, (texts.len() as u64 - 1) * 1_000_000_000)
    }

    #[test]
    fn friendly_rows_for_known_vllm_names() {
        let t = |run: f64, hits: f64, q: f64, pre: f64, kv: f64| {
            format!(
                "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{{engine=\"0\"}} {run}\nvllm:num_requests_running{{engine=\"1\"}} {run}\n# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 0\n# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc {kv}\n# TYPE vllm:prefix_cache_hits counter\nvllm:prefix_cache_hits_total {hits}\n# TYPE vllm:prefix_cache_queries counter\nvllm:prefix_cache_queries_total {q}\n# TYPE vllm:num_preemptions_total counter\nvllm:num_preemptions_total {pre}\n"
            )
        };
        let w = window_of(&[
            &t(2.0, 0.0, 0.0, 1.0, 0.5),
            &t(4.0, 30.0, 120.0, 4.0, 0.25),
            &t(4.0, 30.0, 120.0, 4.0, 0.25),
        ]);
        let h = highlights(&w);
        let get = |l: &str| h.iter().find(|x| x.label == l).unwrap().clone();
        // Two engines, 2 then 4 requests each over two equal seconds: 6 on average.
        assert_eq!(get("Running requests").avg, Some(6.0));
        assert_eq!(get("Running requests").max, Some(8.0));
        assert_eq!(get("Waiting requests").avg, Some(0.0));
        assert_eq!(get("KV-cache usage").avg, Some(37.5));
        assert_eq!(get("KV-cache usage").max, Some(50.0));
        assert_eq!(get("Prefix-cache hit rate").avg, Some(25.0));
        assert_eq!(get("Preemptions").total, Some(3.0));
        let console = server_console(&w, &h);
        assert!(console.contains("Running requests"), "{console}");
        assert!(console.contains("avg 37.50 %"), "{console}");
    }

    /// The server's TTFT from its histogram: the mean exact (sum over count), the
    /// percentiles interpolated within a bucket, and the console says which is which.
    #[test]
    fn server_ttft_has_its_exact_mean_and_bucket_percentiles() {
        let t = |n: u32, sum: f64| {
            format!(
                "# TYPE vllm:time_to_first_token_seconds histogram\n\
                 vllm:time_to_first_token_seconds_bucket{{le=\"0.02\"}} 0\n\
                 vllm:time_to_first_token_seconds_bucket{{le=\"0.04\"}} {n}\n\
                 vllm:time_to_first_token_seconds_bucket{{le=\"+Inf\"}} {n}\n\
                 vllm:time_to_first_token_seconds_sum {sum}\n\
                 vllm:time_to_first_token_seconds_count {n}\n"
            )
        };
        // 200 requests of 20.1 ms each, all in the 20–40 ms bucket.
        let w = window_of(&[&t(0, 0.0), &t(100, 2.01), &t(200, 4.02)]);
        let h = highlights(&w);
        let ttft = h.iter().find(|x| x.label == "Server TTFT").unwrap();
        assert_eq!(ttft.total, Some(200.0));
        assert!((ttft.avg.unwrap() - 20.1).abs() < 1e-9, "{ttft:?}");
        assert!((ttft.p50.unwrap() - 30.0).abs() < 1e-9, "{ttft:?}");
        let console = server_console(&w, &h);
        assert!(
            console.contains(
                "total 200  avg 20.10 ms  p50 30 ms  p99 39.80 ms  (percentiles interpolated \
                 within histogram buckets)"
            ),
            "{console}"
        );
    }

    #[test]
    fn gpu_summary_per_gpu_from_dcgm_fields() {
        let t = |util: f64, temp: f64| {
            format!(
                "# TYPE DCGM_FI_DEV_GPU_UTIL gauge\nDCGM_FI_DEV_GPU_UTIL{{gpu=\"0\",UUID=\"GPU-a\",modelName=\"H100\",Hostname=\"h\"}} {util}\nDCGM_FI_DEV_GPU_UTIL{{gpu=\"1\",UUID=\"GPU-b\",modelName=\"H100\",Hostname=\"h\"}} 10\n# TYPE DCGM_FI_DEV_GPU_TEMP gauge\nDCGM_FI_DEV_GPU_TEMP{{gpu=\"0\",UUID=\"GPU-a\",modelName=\"H100\",Hostname=\"h\"}} {temp}\n"
            )
        };
        let w = window_of(&[&t(50.0, 60.0), &t(100.0, 70.0), &t(100.0, 70.0)]);
        let g = gpus(&w);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].gpu, "0");
        assert_eq!(g[0].uuid, "GPU-a");
        assert_eq!(g[0].metrics["gpu_utilization"]["avg"], 75.0);
        assert_eq!(g[0].metrics["gpu_utilization"]["unit"], "%");
        assert_eq!(g[0].metrics["gpu_temperature"]["max"], 70.0);
        assert!(!g[1].metrics.contains_key("gpu_temperature"));
        let csv = gpu_csv(&g);
        assert_eq!(csv.lines().count(), 4);
        assert!(
            csv.contains("h,0,GPU-a,H100,gpu_utilization,%,75,50,100"),
            "{csv}"
        );
    }

    #[test]
    fn csv_quotes_labels() {
        let w = window_of(&["m{a=\"x,y\"} 1\n", "m{a=\"x,y\"} 3\n"]);
        let csv = server_csv(&w);
        assert!(csv.contains("\"a=x,y\""), "{csv}");
        assert!(csv
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("http://s/metrics,m,untyped,"));
    }
}
