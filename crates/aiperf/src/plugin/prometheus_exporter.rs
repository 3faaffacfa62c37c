//! `prometheus_exporter`: a live `/metrics` endpoint for a Prometheus server to scrape while
//! the benchmark runs.
//!
//! Latency histograms are observed from every finished request (`request_records`), the
//! phase's live counts and rolling throughput come from `progress`, and their final values
//! from `phase_complete`. The endpoint is served on its own task from the moment the plugin
//! starts until it shuts down, `linger_seconds` after `benchmark_complete`, so a last scrape
//! sees the final values. The exposition is built with `prometheus-client`: the Prometheus
//! text format (0.0.4), or OpenMetrics when the scraper asks for it.
//!
//! Every sample carries `model` and `endpoint_type` (from the run context) and, per phase,
//! `phase`, plus the configured `const_labels`. A port already in use fails the plugin's
//! start (it is disabled with the address in the reason); the run goes on.

use std::borrow::Cow;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiperf_plugin::{Hook, PhaseStats, PluginReport, ProgressWindow, RunContext};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::plugin::{HookEvent, HookResult, Plugin};

const DEFAULT_LISTEN: &str = "127.0.0.1:9464";
const DEFAULT_PATH: &str = "/metrics";
/// Histogram bucket bounds in seconds: from a fast first token to a long generation.
pub const DEFAULT_BUCKETS: [f64; 19] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 7.5, 10.0,
    20.0, 30.0, 60.0,
];
/// Labels the plugin sets itself; `const_labels` may not use them.
const OWN_LABELS: [&str; 5] = ["model", "endpoint_type", "phase", "outcome", "le"];
/// The largest `linger_seconds`.
const MAX_LINGER_SECONDS: f64 = 3600.0;
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn schema() -> Option<Value> {
    Some(json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "listen": {"type": "string", "minLength": 1},
            "metrics_path": {"type": "string", "pattern": "^/"},
            "linger_seconds": {"type": "number", "minimum": 0, "maximum": MAX_LINGER_SECONDS},
            "buckets": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "number", "exclusiveMinimum": 0}
            },
            "const_labels": {
                "type": "object",
                "additionalProperties": {"type": ["string", "number", "boolean"]}
            }
        }
    }))
}

/// A sample's labels, in order.
type Labels = Vec<(&'static str, String)>;

/// The metric families, shared with the server (each is a handle onto the same values).
#[derive(Clone)]
struct Metrics {
    ttft: Family<Labels, Histogram, HistogramMaker>,
    itl: Family<Labels, Histogram, HistogramMaker>,
    latency: Family<Labels, Histogram, HistogramMaker>,
    requests: Family<Labels, Counter>,
    output_tokens: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
    sent: Family<Labels, Gauge>,
    completed: Family<Labels, Gauge>,
    cancelled: Family<Labels, Gauge>,
    in_flight: Family<Labels, Gauge>,
    duration: Family<Labels, Gauge<f64, AtomicU64>>,
    request_throughput: Family<Labels, Gauge<f64, AtomicU64>>,
    output_token_throughput: Family<Labels, Gauge<f64, AtomicU64>>,
    phase_complete: Family<Labels, Gauge>,
    benchmark_complete: Family<Labels, Gauge>,
}

/// Makes each histogram of a family with the configured buckets.
#[derive(Clone)]
struct HistogramMaker(Arc<[f64]>);

impl prometheus_client::metrics::family::MetricConstructor<Histogram> for HistogramMaker {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

impl Metrics {
    /// The families, registered under `aiperf_` with the constant labels.
    fn register(buckets: &[f64], const_labels: Vec<(String, String)>) -> (Self, Registry) {
        let labels = const_labels
            .into_iter()
            .map(|(k, v)| (Cow::Owned(k), Cow::Owned(v)));
        let mut r = Registry::with_prefix_and_labels("aiperf", labels);
        let maker = HistogramMaker(buckets.into());
        let histogram = || Family::new_with_constructor(maker.clone());
        let m = Metrics {
            ttft: histogram(),
            itl: histogram(),
            latency: histogram(),
            requests: Family::default(),
            output_tokens: Family::default(),
            dropped: Family::default(),
            sent: Family::default(),
            completed: Family::default(),
            cancelled: Family::default(),
            in_flight: Family::default(),
            duration: Family::default(),
            request_throughput: Family::default(),
            output_token_throughput: Family::default(),
            phase_complete: Family::default(),
            benchmark_complete: Family::default(),
        };
        let s = Unit::Seconds;
        r.register_with_unit(
            "time_to_first_token",
            "Time to first token of each successful request",
            s.clone(),
            m.ttft.clone(),
        );
        r.register_with_unit(
            "inter_token_latency",
            "Mean time between output tokens of each successful request",
            s.clone(),
            m.itl.clone(),
        );
        r.register_with_unit(
            "request_latency",
            "Latency of each successful request, send to last byte",
            s.clone(),
            m.latency.clone(),
        );
        r.register(
            "requests",
            "Finished requests received by the exporter, by outcome",
            m.requests.clone(),
        );
        r.register(
            "output_tokens",
            "Output tokens of the successful requests received by the exporter",
            m.output_tokens.clone(),
        );
        r.register(
            "records_dropped",
            "Request records the exporter lost because its queue was full",
            m.dropped.clone(),
        );
        r.register(
            "requests_sent",
            "Requests sent in the phase",
            m.sent.clone(),
        );
        r.register(
            "requests_completed",
            "Requests of the phase that finished, with or without error",
            m.completed.clone(),
        );
        r.register(
            "requests_cancelled",
            "Requests of the phase cancelled before they finished",
            m.cancelled.clone(),
        );
        r.register(
            "requests_in_flight",
            "Requests sent and not finished",
            m.in_flight.clone(),
        );
        r.register_with_unit(
            "phase_duration",
            "Time since the phase started (its duration once complete)",
            s,
            m.duration.clone(),
        );
        r.register(
            "request_throughput",
            "Finished requests per second: over the progress window while the phase runs, over the phase once complete",
            m.request_throughput.clone(),
        );
        r.register(
            "output_token_throughput",
            "Output tokens per second: over the progress window while the phase runs, over the phase once complete",
            m.output_token_throughput.clone(),
        );
        r.register(
            "phase_complete",
            "1 once the phase is complete",
            m.phase_complete.clone(),
        );
        r.register(
            "benchmark_complete",
            "1 once the benchmark is complete",
            m.benchmark_complete.clone(),
        );
        (m, r)
    }
}

/// What the server task shares with the plugin.
struct Shared {
    registry: Registry,
    path: String,
    scrapes: AtomicU64,
}

pub struct PrometheusExporter {
    metrics: Metrics,
    shared: Arc<Shared>,
    /// The address actually bound (the configured port may be 0).
    addr: SocketAddr,
    stop: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
    linger: Duration,
    /// `model` and `endpoint_type`.
    base: Labels,
    /// When `benchmark_complete` arrived: the linger counts from then.
    completed_at: Option<Instant>,
    /// The `dropped_records` already counted (the host reports a running total).
    dropped_seen: u64,
    /// Records received, and of those the ones that were not a JSON object.
    records: u64,
    malformed: u64,
}

/// A label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not reserved (`__…`).
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// A metric of a record in seconds: `{"value": v, "unit": "ms"}` (also `s`, `us`, `ns`);
/// `None` when absent, not a finite non-negative number, or in another unit.
fn seconds(metric: Option<&Value>) -> Option<f64> {
    let m = metric?;
    let v = m.get("value")?.as_f64()?;
    let scale = match m.get("unit").and_then(Value::as_str).unwrap_or("ms") {
        "ms" => 1e-3,
        "s" | "sec" => 1.0,
        "us" => 1e-6,
        "ns" => 1e-9,
        _ => return None,
    };
    (v.is_finite() && v >= 0.0).then_some(v * scale)
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl PrometheusExporter {
    pub fn build(config: &Value, context: &Arc<RunContext>) -> Result<Box<dyn Plugin>, String> {
        Ok(Box::new(Self::new(config, context)?))
    }

    /// From a config its schema accepted: the checks a schema cannot make, then the listener
    /// bound and the server started (so a port in use fails the plugin's start).
    fn new(config: &Value, context: &RunContext) -> Result<Self, String> {
        let listen = config["listen"].as_str().unwrap_or(DEFAULT_LISTEN);
        let path = config["metrics_path"].as_str().unwrap_or(DEFAULT_PATH);
        if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
            return Err(format!(
                "`metrics_path` {path:?}: a URL path such as /metrics"
            ));
        }
        let linger = match config["linger_seconds"].as_f64() {
            Some(s) if s.is_finite() && (0.0..=MAX_LINGER_SECONDS).contains(&s) => {
                crate::units::clamped_secs(s)
            }
            Some(s) => {
                return Err(format!(
                    "`linger_seconds` {s}: from 0 to {MAX_LINGER_SECONDS}"
                ))
            }
            None => Duration::ZERO,
        };
        let buckets: Vec<f64> = match config["buckets"].as_array() {
            Some(list) => {
                let b: Vec<f64> = list.iter().filter_map(Value::as_f64).collect();
                let ok = b.len() == list.len()
                    && !b.is_empty()
                    && b.iter().all(|v| v.is_finite() && *v > 0.0)
                    && b.windows(2).all(|w| w[0] < w[1]);
                if !ok {
                    return Err(
                        "`buckets`: upper bounds in seconds, positive and increasing".into(),
                    );
                }
                b
            }
            None => DEFAULT_BUCKETS.to_vec(),
        };
        let mut const_labels = Vec::new();
        if let Some(map) = config["const_labels"].as_object() {
            for (k, v) in map {
                if !is_label_name(k) || OWN_LABELS.contains(&k.as_str()) {
                    return Err(format!(
                        "`const_labels`: {k:?} is not a usable label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __, and not one of {})",
                        OWN_LABELS.join(", ")
                    ));
                }
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                const_labels.push((k.clone(), v));
            }
        }
        let addr = listen
            .to_socket_addrs()
            .map_err(|e| format!("`listen` {listen:?}: not an address (host:port): {e}"))?
            .next()
            .ok_or_else(|| format!("`listen` {listen:?}: resolves to no address"))?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "the exporter needs the async runtime to serve".to_string())?;

        let (metrics, registry) = Metrics::register(&buckets, const_labels);
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| format!("cannot listen on {listen} ({addr}): {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener)
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?
        };
        let shared = Arc::new(Shared {
            registry,
            path: path.to_string(),
            scrapes: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        let server = runtime.spawn(serve(listener, shared.clone(), stop.clone()));
        tracing::info!("prometheus_exporter: serving http://{addr}{path}");
        Ok(PrometheusExporter {
            metrics,
            shared,
            addr,
            stop,
            server: Some(server),
            linger,
            base: vec![
                ("model", context.models.join(",")),
                ("endpoint_type", context.endpoint_type.clone()),
            ],
            completed_at: None,
            dropped_seen: 0,
            records: 0,
            malformed: 0,
        })
    }

    /// The base labels plus `phase`.
    fn phase_labels(&self, phase: &str) -> Labels {
        let mut l = self.base.clone();
        l.push(("phase", phase.to_string()));
        l
    }

    /// Every phase-labelled series exists from `phase_start` on (zero until observed), so a
    /// query for the phase answers 0 rather than nothing.
    fn touch_phase(&self, phase: &str) {
        let l = self.phase_labels(phase);
        let m = &self.metrics;
        for h in [&m.ttft, &m.itl, &m.latency] {
            let _ = h.get_or_create(&l);
        }
        let _ = m.output_tokens.get_or_create(&l);
        for outcome in ["success", "error"] {
            let mut lo = l.clone();
            lo.push(("outcome", outcome.to_string()));
            let _ = m.requests.get_or_create(&lo);
        }
    }

    fn set_stats(&self, labels: &Labels, s: &PhaseStats) {
        let m = &self.metrics;
        m.sent.get_or_create(labels).set(clamp_i64(s.sent));
        m.completed
            .get_or_create(labels)
            .set(clamp_i64(s.completed));
        m.cancelled
            .get_or_create(labels)
            .set(clamp_i64(s.cancelled));
        m.in_flight
            .get_or_create(labels)
            .set(clamp_i64(s.in_flight));
        if s.duration_sec.is_finite() && s.duration_sec >= 0.0 {
            m.duration.get_or_create(labels).set(s.duration_sec);
        }
    }

    fn set_window(&self, labels: &Labels, w: &ProgressWindow) {
        let m = &self.metrics;
        if w.request_throughput.is_finite() {
            m.request_throughput
                .get_or_create(labels)
                .set(w.request_throughput);
        }
        if w.output_token_throughput.is_finite() {
            m.output_token_throughput
                .get_or_create(labels)
                .set(w.output_token_throughput);
        }
    }

    /// One line of `profile_export.jsonl`: counted by outcome, its latencies observed.
    fn observe(&mut self, rec: &Value, fallback_phase: &str) {
        self.records += 1;
        if !rec.is_object() {
            self.malformed += 1;
            return;
        }
        let phase = rec
            .pointer("/metadata/benchmark_phase")
            .and_then(Value::as_str)
            .unwrap_or(fallback_phase);
        let labels = self.phase_labels(phase);
        let failed = rec.get("error").is_some_and(|e| !e.is_null());
        let mut outcome = labels.clone();
        outcome.push(("outcome", if failed { "error" } else { "success" }.into()));
        let m = &self.metrics;
        m.requests.get_or_create(&outcome).inc();
        if failed {
            return;
        }
        let metrics = rec.get("metrics");
        let get = |tag: &str| metrics.and_then(|m| m.get(tag));
        for (family, tag) in [
            (&m.ttft, "time_to_first_token"),
            (&m.itl, "inter_token_latency"),
            (&m.latency, "request_latency"),
        ] {
            if let Some(v) = seconds(get(tag)) {
                family.get_or_create(&labels).observe(v);
            }
        }
        let osl = get("output_sequence_length")
            .and_then(|m| m.get("value"))
            .and_then(Value::as_u64);
        if let Some(n) = osl {
            m.output_tokens.get_or_create(&labels).inc_by(n);
        }
    }

    /// Stops the server and waits for it.
    async fn stop_server(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.server.take() {
            let _ = task.await;
        }
    }
}

impl Drop for PrometheusExporter {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[async_trait::async_trait]
impl Plugin for PrometheusExporter {
    fn hooks(&self) -> Vec<Hook> {
        vec![
            Hook::RequestRecords,
            Hook::Progress,
            Hook::PhaseStart,
            Hook::PhaseComplete,
            Hook::BenchmarkComplete,
        ]
    }

    async fn on_phase_start(&mut self, e: &HookEvent) -> HookResult {
        let Some(phase) = e.phase else { return Ok(()) };
        let labels = self.phase_labels(phase.as_str());
        self.touch_phase(phase.as_str());
        self.metrics.phase_complete.get_or_create(&labels).set(0);
        if let Some(s) = &e.stats {
            self.set_stats(&labels, s);
        }
        let _ = self.metrics.benchmark_complete.get_or_create(&self.base);
        Ok(())
    }

    async fn on_request_records(&mut self, e: &HookEvent) -> HookResult {
        let fallback = e.phase.map_or("unknown", |p| p.as_str());
        if let Some(records) = &e.records {
            for rec in records.iter() {
                self.observe(rec, fallback);
            }
        }
        if let Some(total) = e.dropped_records {
            if total > self.dropped_seen {
                self.metrics
                    .dropped
                    .get_or_create(&self.base)
                    .inc_by(total - self.dropped_seen);
                self.dropped_seen = total;
            }
        }
        Ok(())
    }

    async fn on_progress(&mut self, e: &HookEvent) -> HookResult {
        let Some(phase) = e.phase else { return Ok(()) };
        let labels = self.phase_labels(phase.as_str());
        if let Some(s) = &e.stats {
            self.set_stats(&labels, s);
        }
        if let Some(w) = &e.window {
            self.set_window(&labels, w);
        }
        Ok(())
    }

    /// The phase's final counts, and its throughput over the whole phase (the summary's).
    async fn on_phase_complete(&mut self, e: &HookEvent) -> HookResult {
        let Some(phase) = e.phase else { return Ok(()) };
        let labels = self.phase_labels(phase.as_str());
        if let Some(s) = &e.stats {
            self.set_stats(&labels, s);
        }
        let m = &self.metrics;
        if let Some(summary) = e.summary.as_deref() {
            for (gauge, tag) in [
                (&m.request_throughput, "request_throughput"),
                (&m.output_token_throughput, "output_token_throughput"),
            ] {
                let v = summary
                    .get(tag)
                    .and_then(|t| t.get("avg"))
                    .and_then(Value::as_f64);
                if let Some(v) = v.filter(|v| v.is_finite()) {
                    gauge.get_or_create(&labels).set(v);
                }
            }
        }
        m.phase_complete.get_or_create(&labels).set(1);
        Ok(())
    }

    async fn on_benchmark_complete(&mut self, _e: &HookEvent) -> HookResult {
        self.metrics
            .benchmark_complete
            .get_or_create(&self.base)
            .set(1);
        self.completed_at = Some(Instant::now());
        Ok(())
    }

    async fn report(&mut self) -> Option<PluginReport> {
        let mut r = PluginReport::default();
        r.metrics.insert(
            "url".into(),
            json!(format!("http://{}{}", self.addr, self.shared.path)),
        );
        r.metrics.insert(
            "scrapes".into(),
            json!(self.shared.scrapes.load(Ordering::Relaxed)),
        );
        r.metrics.insert("records".into(), json!(self.records));
        if self.malformed > 0 {
            r.notes.push(format!(
                "{} request records were not JSON objects and were skipped",
                self.malformed
            ));
        }
        Some(r)
    }

    /// After `benchmark_complete`, keeps serving the final values for `linger_seconds`
    /// (counted from that event), then stops the server. Runs outside any hook timeout.
    async fn shutdown(&mut self) {
        if let Some(done) = self.completed_at {
            let until = done + self.linger;
            if until > Instant::now() {
                tracing::info!(
                    "prometheus_exporter: serving the final values for {:.1} s more",
                    (until - Instant::now()).as_secs_f64()
                );
                tokio::select! {
                    _ = tokio::time::sleep_until(until.into()) => {}
                    _ = self.stop.cancelled() => {}
                }
            }
        }
        self.stop_server().await;
    }

    /// Disabled mid-run: stops serving at once, no linger.
    async fn abort(&mut self) {
        self.stop_server().await;
    }
}

/// Accepts connections until `stop` is cancelled.
async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("prometheus_exporter: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&shared, &req)) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

fn text_response(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

/// `GET <metrics_path>`: the exposition (OpenMetrics when the `Accept` header asks for it,
/// else the Prometheus text format); anything else a short error.
fn answer(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.uri().path() != shared.path {
        return text_response(
            StatusCode::NOT_FOUND,
            PLAIN,
            format!("not found: metrics are at {}\n", shared.path),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text_response(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "method not allowed\n".into(),
        );
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return r;
    }
    let openmetrics = req
        .headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let mut body = String::new();
    let (encoded, content_type) = if openmetrics {
        (
            prometheus_client::encoding::text::encode(&mut body, &shared.registry),
            OPENMETRICS_CONTENT_TYPE,
        )
    } else {
        (
            prometheus_client::encoding::prometheus_text::encode(&mut body, &shared.registry),
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )
    };
    if encoded.is_err() {
        return text_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            PLAIN,
            "cannot encode the metrics\n".into(),
        );
    }
    shared.scrapes.fetch_add(1, Ordering::Relaxed);
    text_response(StatusCode::OK, content_type, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::PhaseKind;
    use std::collections::BTreeMap;

    fn context() -> RunContext {
        RunContext {
            run_id: "r1".into(),
            models: vec!["m\"1".into()],
            endpoint_type: "chat".into(),
            ..RunContext::default()
        }
    }

    /// The plugin on a free 127.0.0.1 port, its config checked by its schema first.
    fn exporter(mut config: Value) -> PrometheusExporter {
        if config.get("listen").is_none() {
            config["listen"] = json!("127.0.0.1:0");
        }
        crate::plugin::validate_config(&schema().unwrap(), &config).unwrap();
        PrometheusExporter::new(&config, &context()).unwrap()
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    /// `GET path` on the exporter: (status, content type, body).
    async fn get(
        p: &PrometheusExporter,
        path: &str,
        accept: Option<&str>,
    ) -> (u16, String, String) {
        let mut req = client().get(format!("http://{}{path}", p.addr));
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (status, ct, resp.text().await.unwrap())
    }

    /// A sample of the text format: its name, labels and value.
    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: BTreeMap<String, String>,
        value: f64,
    }

    /// The samples of an exposition (label values with `\"` and `\\` escapes).
    fn parse(text: &str) -> Vec<Sample> {
        let mut out = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}').expect("closing brace")),
                None => (series, ""),
            };
            let mut map = BTreeMap::new();
            let mut rest = labels;
            while !rest.is_empty() {
                let (k, after) = rest.split_once("=\"").expect("label=\"");
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next().expect("closing quote") {
                        (_, '\\') => value.push(chars.next().expect("escaped").1),
                        (i, '"') => break i,
                        (_, c) => value.push(c),
                    }
                };
                map.insert(k.to_string(), value);
                rest = after[end + 1..].trim_start_matches(',');
            }
            let value = parse_value(value).unwrap_or_else(|| panic!("value of {line}"));
            out.push(Sample {
                name: name.to_string(),
                labels: map,
                value,
            });
        }
        out
    }

    /// The one sample named `name` whose labels include every `(k, v)`.
    fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = samples
            .iter()
            .filter(|s| {
                s.name == name
                    && want
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
            })
            .collect();
        assert_eq!(found.len(), 1, "{name} {want:?}: {found:?}");
        found[0].value
    }

    /// The `le` bucket of histogram `name` (the bound compared as a number).
    fn bucket(samples: &[Sample], name: &str, want: &[(&str, &str)], le: f64) -> f64 {
        let name = format!("{name}_bucket");
        let found: Vec<&Sample> = samples
            .iter()
            .filter(|s| {
                s.name == name
                    && want
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
                    && s.labels.get("le").and_then(|b| parse_value(b)) == Some(le)
            })
            .collect();
        assert_eq!(found.len(), 1, "{name} {want:?} le={le}: {found:?}");
        found[0].value
    }

    fn parse_value(v: &str) -> Option<f64> {
        match v {
            "+Inf" => Some(f64::INFINITY),
            v => v.parse().ok(),
        }
    }

    fn record(phase: &str, ttft_ms: f64, itl_ms: f64, latency_ms: f64, osl: u64) -> Value {
        json!({
            "metadata": {"session_num": 0, "benchmark_phase": phase, "was_cancelled": false},
            "metrics": {
                "input_sequence_length": {"value": 16, "unit": "tokens"},
                "time_to_first_token": {"value": ttft_ms, "unit": "ms"},
                "request_latency": {"value": latency_ms, "unit": "ms"},
                "output_sequence_length": {"value": osl, "unit": "tokens"},
                "inter_token_latency": {"value": itl_ms, "unit": "ms"}
            },
            "error": null
        })
    }

    fn error_record(phase: &str) -> Value {
        json!({
            "metadata": {"benchmark_phase": phase},
            "metrics": {"error_isl": {"value": 16, "unit": "tokens"}},
            "error": {"code": 500, "type": "Internal Server Error", "message": "boom"}
        })
    }

    fn records_event(phase: PhaseKind, records: Vec<Value>, dropped: Option<u64>) -> HookEvent {
        let mut e = HookEvent::new(Hook::RequestRecords, Some(phase), None);
        e.records = Some(Arc::new(records));
        e.dropped_records = dropped;
        e
    }

    fn stats(phase: &str, sent: u64, completed: u64, in_flight: u64) -> PhaseStats {
        PhaseStats {
            phase: phase.into(),
            sent,
            completed,
            in_flight,
            duration_sec: 2.5,
            ..PhaseStats::default()
        }
    }

    const PROFILING: [(&str, &str); 3] = [
        ("model", "m\"1"),
        ("endpoint_type", "chat"),
        ("phase", "profiling"),
    ];

    #[tokio::test]
    async fn histograms_and_counters_follow_every_record() {
        let mut p = exporter(json!({"const_labels": {"team": "ml", "run": 7}}));
        p.on_event(&HookEvent::new(
            Hook::PhaseStart,
            Some(PhaseKind::Profiling),
            None,
        ))
        .await
        .unwrap();
        // Before any record: the phase's series exist, at zero.
        let (status, ct, body) = get(&p, "/metrics", None).await;
        assert_eq!(status, 200, "{body}");
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
        let s = parse(&body);
        assert_eq!(
            value(&s, "aiperf_time_to_first_token_seconds_count", &PROFILING),
            0.0
        );

        let batch = vec![
            record("profiling", 3.0, 1.0, 40.0, 10), // 0.003 s, 0.001 s, 0.04 s
            record("profiling", 30.0, 2.0, 300.0, 20), // 0.03 s, 0.002 s, 0.3 s
            record("profiling", 2000.0, 5.0, 90_000.0, 5), // 2 s, 0.005 s, 90 s
            error_record("profiling"),
            record("warmup", 1.0, 1.0, 1.0, 1),
            json!("not a record"),
        ];
        p.on_event(&records_event(PhaseKind::Profiling, batch, Some(0)))
            .await
            .unwrap();
        p.on_event(&records_event(PhaseKind::Profiling, vec![], Some(3)))
            .await
            .unwrap();
        p.on_event(&records_event(PhaseKind::Profiling, vec![], Some(5)))
            .await
            .unwrap();

        let (_, _, body) = get(&p, "/metrics", None).await;
        let s = parse(&body);
        let ttft = "aiperf_time_to_first_token_seconds";
        assert_eq!(value(&s, &format!("{ttft}_count"), &PROFILING), 3.0);
        let sum = value(&s, &format!("{ttft}_sum"), &PROFILING);
        assert!((sum - 2.033).abs() < 1e-9, "{sum}");
        // Buckets are cumulative: le=0.005 holds 1, le=0.05 holds 2, le=2.5 and +Inf all 3.
        let ttft_bucket = |le: f64| bucket(&s, ttft, &PROFILING, le);
        assert_eq!(ttft_bucket(0.005), 1.0);
        assert_eq!(ttft_bucket(0.025), 1.0);
        assert_eq!(ttft_bucket(0.05), 2.0);
        assert_eq!(ttft_bucket(1.5), 2.0);
        assert_eq!(ttft_bucket(2.5), 3.0);
        assert_eq!(ttft_bucket(f64::INFINITY), 3.0);
        let les: Vec<f64> = s
            .iter()
            .filter(|x| x.name == format!("{ttft}_bucket") && x.labels["phase"] == "profiling")
            .map(|x| x.value)
            .collect();
        assert_eq!(les.len(), DEFAULT_BUCKETS.len() + 1);
        assert!(les.windows(2).all(|w| w[0] <= w[1]), "{les:?}");

        let lat = "aiperf_request_latency_seconds";
        assert_eq!(value(&s, &format!("{lat}_count"), &PROFILING), 3.0);
        assert_eq!(
            bucket(&s, lat, &PROFILING, 60.0),
            2.0,
            "90 s is past the last bound"
        );
        assert_eq!(bucket(&s, lat, &PROFILING, f64::INFINITY), 3.0);
        let itl_sum = value(&s, "aiperf_inter_token_latency_seconds_sum", &PROFILING);
        assert!((itl_sum - 0.008).abs() < 1e-12, "{itl_sum}");

        let mut ok = PROFILING.to_vec();
        ok.push(("outcome", "success"));
        assert_eq!(value(&s, "aiperf_requests_total", &ok), 3.0);
        ok[3] = ("outcome", "error");
        assert_eq!(value(&s, "aiperf_requests_total", &ok), 1.0);
        assert_eq!(value(&s, "aiperf_output_tokens_total", &PROFILING), 35.0);
        let warm = [("phase", "warmup")];
        assert_eq!(
            value(&s, "aiperf_time_to_first_token_seconds_count", &warm),
            1.0
        );
        assert_eq!(
            value(&s, "aiperf_records_dropped_total", &[("model", "m\"1")]),
            5.0
        );
        // Constant labels on every sample, numbers as text.
        assert!(
            s.iter()
                .all(|x| x.labels["team"] == "ml" && x.labels["run"] == "7"),
            "{body}"
        );
        assert!(
            body.contains("# TYPE aiperf_time_to_first_token_seconds histogram"),
            "{body}"
        );
        assert!(
            body.contains("# TYPE aiperf_requests_total counter"),
            "{body}"
        );

        let report = p.report().await.unwrap();
        assert_eq!(report.metrics["records"], 6);
        assert_eq!(report.metrics["scrapes"], 2);
        assert_eq!(report.notes.len(), 1, "{report:?}");
        p.shutdown().await;
    }

    #[tokio::test]
    async fn progress_and_phase_complete_set_the_gauges() {
        let mut p = exporter(json!({"metrics_path": "/custom"}));
        let ph = Some(PhaseKind::Profiling);
        p.on_event(&HookEvent::new(
            Hook::PhaseStart,
            ph,
            Some(stats("profiling", 0, 0, 0)),
        ))
        .await
        .unwrap();
        let mut e = HookEvent::new(Hook::Progress, ph, Some(stats("profiling", 40, 30, 10)));
        e.window = Some(Arc::new(ProgressWindow {
            window_sec: 5.0,
            requests: 30,
            request_throughput: 6.5,
            output_token_throughput: 120.25,
            ..ProgressWindow::default()
        }));
        p.on_event(&e).await.unwrap();
        let (_, _, body) = get(&p, "/custom", None).await;
        let s = parse(&body);
        assert_eq!(value(&s, "aiperf_requests_in_flight", &PROFILING), 10.0);
        assert_eq!(value(&s, "aiperf_requests_sent", &PROFILING), 40.0);
        assert_eq!(value(&s, "aiperf_requests_completed", &PROFILING), 30.0);
        assert_eq!(value(&s, "aiperf_request_throughput", &PROFILING), 6.5);
        assert_eq!(
            value(&s, "aiperf_output_token_throughput", &PROFILING),
            120.25
        );
        assert_eq!(value(&s, "aiperf_phase_duration_seconds", &PROFILING), 2.5);
        assert_eq!(value(&s, "aiperf_phase_complete", &PROFILING), 0.0);
        assert_eq!(value(&s, "aiperf_benchmark_complete", &[]), 0.0);

        let mut done = HookEvent::new(Hook::PhaseComplete, ph, Some(stats("profiling", 40, 40, 0)));
        done.summary = Some(Arc::new(json!({
            "request_throughput": {"unit": "requests/sec", "avg": 8.0},
            "output_token_throughput": {"unit": "tokens/sec", "avg": 160.0},
        })));
        p.on_event(&done).await.unwrap();
        p.on_event(&HookEvent::new(Hook::BenchmarkComplete, None, None))
            .await
            .unwrap();
        let (_, _, body) = get(&p, "/custom", None).await;
        let s = parse(&body);
        assert_eq!(value(&s, "aiperf_requests_in_flight", &PROFILING), 0.0);
        assert_eq!(value(&s, "aiperf_requests_completed", &PROFILING), 40.0);
        assert_eq!(value(&s, "aiperf_request_throughput", &PROFILING), 8.0);
        assert_eq!(
            value(&s, "aiperf_output_token_throughput", &PROFILING),
            160.0
        );
        assert_eq!(value(&s, "aiperf_phase_complete", &PROFILING), 1.0);
        assert_eq!(
            value(
                &s,
                "aiperf_benchmark_complete",
                &[("endpoint_type", "chat")]
            ),
            1.0
        );

        // Other paths and methods.
        assert_eq!(get(&p, "/metrics", None).await.0, 404);
        let post = client()
            .post(format!("http://{}/custom", p.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(post.status().as_u16(), 405);
        // OpenMetrics on request, ending with `# EOF`.
        let (status, ct, body) = get(
            &p,
            "/custom",
            Some("application/openmetrics-text;version=1.0.0"),
        )
        .await;
        assert_eq!(status, 200);
        assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
        assert!(body.ends_with("# EOF\n"), "{body}");
        assert!(
            body.contains("# UNIT aiperf_time_to_first_token_seconds seconds"),
            "{body}"
        );
        p.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_lingers_after_benchmark_complete_then_stops_serving() {
        // Long enough for a local GET on a loaded machine; the test takes that long.
        let mut p = exporter(json!({"linger_seconds": 3}));
        let addr = p.addr;
        p.on_event(&HookEvent::new(Hook::BenchmarkComplete, None, None))
            .await
            .unwrap();
        let started = Instant::now();
        let mut shutdown = Box::pin(p.shutdown());
        // While it lingers, the endpoint still answers.
        tokio::select! {
            _ = &mut shutdown => panic!("shutdown returned before lingering"),
            r = client().get(format!("http://{addr}/metrics")).send() => {
                assert_eq!(r.unwrap().status().as_u16(), 200);
            }
        }
        shutdown.await;
        assert!(started.elapsed() >= Duration::from_secs(3));
        assert!(
            client()
                .get(format!("http://{addr}/metrics"))
                .send()
                .await
                .is_err(),
            "stopped serving after the linger"
        );
        drop(p);
    }

    #[tokio::test]
    async fn abort_and_a_run_without_benchmark_complete_do_not_linger() {
        for abort in [false, true] {
            let mut p = exporter(json!({"linger_seconds": 3600}));
            let addr = p.addr;
            if abort {
                p.on_event(&HookEvent::new(Hook::BenchmarkComplete, None, None))
                    .await
                    .unwrap();
                let stopped = tokio::time::timeout(Duration::from_secs(60), p.abort()).await;
                assert!(stopped.is_ok(), "abort lingered");
            } else {
                let stopped = tokio::time::timeout(Duration::from_secs(60), p.shutdown()).await;
                assert!(
                    stopped.is_ok(),
                    "shutdown lingered without benchmark_complete"
                );
            }
            assert!(
                client()
                    .get(format!("http://{addr}/metrics"))
                    .send()
                    .await
                    .is_err(),
                "abort={abort}: stopped at once"
            );
        }
    }

    #[tokio::test]
    async fn a_port_in_use_fails_the_start_naming_the_address() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let err = PrometheusExporter::new(&json!({"listen": addr.to_string()}), &context())
            .err()
            .unwrap();
        assert!(
            err.contains(&addr.to_string()) && err.contains("cannot listen"),
            "{err}"
        );
        assert!(!err.contains('\n'));
        // Dropping a started exporter frees its port (`plugins check` builds and drops).
        let p = exporter(json!({}));
        let addr = p.addr;
        drop(p);
        let mut freed = false;
        for _ in 0..1000 {
            if std::net::TcpListener::bind(addr).is_ok() {
                freed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(freed, "{addr} still held after drop");
    }

    #[tokio::test]
    async fn the_schema_forbids_unknown_keys_and_build_checks_the_rest() {
        let schema = schema().unwrap();
        let err = crate::plugin::validate_config(&schema, &json!({"lisen": "x"})).unwrap_err();
        assert!(
            err.contains("lisen") && err.contains("did you mean `listen`"),
            "{err}"
        );
        // `path` is a host key, taken out before the plugin sees its config.
        assert!(
            crate::plugin::validate_config(&schema, &json!({"metrics_path": "metrics"})).is_err()
        );
        assert!(crate::plugin::validate_config(&schema, &json!({"buckets": [0]})).is_err());
        assert!(crate::plugin::validate_config(&schema, &json!({"linger_seconds": -1})).is_err());
        let ctx = context();
        let err = |c: Value| PrometheusExporter::new(&c, &ctx).err().unwrap();
        let free = |mut c: Value| {
            c["listen"] = json!("127.0.0.1:0");
            c
        };
        assert!(err(free(json!({"buckets": [1.0, 0.5]}))).contains("increasing"));
        assert!(err(free(json!({"const_labels": {"phase": "x"}}))).contains("phase"));
        assert!(err(free(json!({"const_labels": {"bad-name": "x"}}))).contains("bad-name"));
        assert!(err(free(json!({"const_labels": {"__x": "x"}}))).contains("__x"));
        assert!(err(json!({"listen": "no port"})).contains("`listen`"));
        let p = PrometheusExporter::new(
            &free(json!({"buckets": [0.1, 1, 10], "const_labels": {"ok_name": true}})),
            &ctx,
        )
        .unwrap();
        assert_eq!(p.addr.ip().to_string(), "127.0.0.1");
    }

    #[test]
    fn seconds_convert_units_and_reject_junk() {
        assert_eq!(
            seconds(Some(&json!({"value": 250.0, "unit": "ms"}))),
            Some(0.25)
        );
        assert_eq!(seconds(Some(&json!({"value": 2, "unit": "s"}))), Some(2.0));
        assert_eq!(
            seconds(Some(&json!({"value": 1500, "unit": "us"}))),
            Some(0.0015)
        );
        assert_eq!(seconds(Some(&json!({"value": -1.0, "unit": "ms"}))), None);
        assert_eq!(seconds(Some(&json!({"value": "x", "unit": "ms"}))), None);
        assert_eq!(seconds(Some(&json!({"value": 1, "unit": "tokens"}))), None);
        assert_eq!(seconds(Some(&json!([1, 2]))), None);
        assert_eq!(seconds(None), None);
    }
}
