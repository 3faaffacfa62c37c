//! `prometheus`: pushes a phase's results to a Prometheus Pushgateway, in the Prometheus text
//! format, during the run (each `progress`: live counts and the rolling window's latency
//! statistics and throughputs, under the same names) and at each `phase_complete` and at
//! `benchmark_complete` (the phase's final figures replace the live ones).
//!
//! Each phase is its own group, `{endpoint}/metrics/job/{job_name}/phase/{phase}` plus the
//! configured grouping labels, so the warmup's figures never replace the profiling ones.
//! Samples carry the labels `model`, `endpoint_type` and `run_id` from the run context.
//! A failed push (gateway down, 4xx/5xx, too slow) is a hook error: counted and reported,
//! the plugin stays enabled and the run goes on.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use aiperf_plugin::{Hook, PhaseStats, RunContext};
use serde_json::{json, Value};

use super::{HookError, HookEvent, HookResult, Plugin};

const DEFAULT_ENDPOINT: &str = "http://localhost:9091";
const DEFAULT_JOB: &str = "aiperf_benchmark";
/// Below the default hook timeout (5 s), so a slow gateway is a failed push, not a hung hook.
const DEFAULT_PUSH_TIMEOUT: Duration = Duration::from_secs(3);
/// The statistics pushed for each metric that has a distribution.
const STATS: [&str; 4] = ["avg", "p50", "p90", "p99"];

pub fn schema() -> Option<Value> {
    Some(json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "endpoint": {"type": "string", "pattern": "^https?://"},
            "job_name": {"type": "string", "minLength": 1},
            "grouping": {
                "type": "object",
                "additionalProperties": {"type": ["string", "number", "boolean"]}
            },
            "method": {"enum": ["PUT", "POST", "put", "post"]},
            "username": {"type": "string"},
            "password": {"type": "string"},
            "push_timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
            "delete_on_finish": {"type": "boolean"}
        }
    }))
}

pub struct Prometheus {
    client: reqwest::Client,
    /// `{endpoint}/metrics/job/{job_name}`, without the phase and grouping labels.
    base: String,
    /// `/k/v` for each grouping label, URL-encoded.
    grouping: String,
    put: bool,
    auth: Option<(String, String)>,
    delete_on_finish: bool,
    /// `model`, `endpoint_type`, `run_id`, rendered once: `k="v",…`.
    labels: String,
    /// The last stats of each phase, for `benchmark_complete`.
    last_stats: BTreeMap<String, PhaseStats>,
    /// The groups pushed to (their URLs), for `delete_on_finish`.
    pushed: Vec<String>,
}

/// One path segment of a grouping key: `/name/value`, with the value's unsafe bytes encoded
/// (an empty value as `@base64` `=`, as the Pushgateway defines).
fn segment(name: &str, value: &str) -> String {
    if value.is_empty() {
        return format!("/{name}@base64/=");
    }
    let mut v = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            v.push(b as char);
        } else {
            let _ = write!(v, "%{b:02X}");
        }
    }
    format!("/{name}/{v}")
}

/// A label value in the text format: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// A metric or label name: `[a-zA-Z_:][a-zA-Z0-9_:]*`, anything else becomes `_`.
fn name(raw: &str) -> String {
    let mut out: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

impl Prometheus {
    pub fn build(config: &Value, context: &Arc<RunContext>) -> Result<Box<dyn Plugin>, String> {
        Ok(Box::new(Self::new(config, context)?))
    }

    /// From a config its schema accepted: the checks a schema cannot make.
    fn new(config: &Value, context: &RunContext) -> Result<Self, String> {
        let endpoint = config["endpoint"].as_str().unwrap_or(DEFAULT_ENDPOINT);
        let endpoint = endpoint.trim_end_matches('/');
        reqwest::Url::parse(endpoint).map_err(|e| format!("`endpoint` {endpoint:?}: {e}"))?;
        let job = config["job_name"].as_str().unwrap_or(DEFAULT_JOB);
        let mut grouping = String::new();
        if let Some(map) = config["grouping"].as_object() {
            for (k, v) in map {
                if k == "job" || k == "phase" || name(k) != *k {
                    return Err(format!(
                        "`grouping`: {k:?} is not a usable label name (`job` and `phase` are set by the plugin)"
                    ));
                }
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                grouping.push_str(&segment(k, &v));
            }
        }
        let timeout = match config["push_timeout_seconds"].as_f64() {
            Some(s) if s.is_finite() && s > 0.0 => crate::units::clamped_secs(s),
            _ => DEFAULT_PUSH_TIMEOUT,
        };
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let auth = match (config["username"].as_str(), config["password"].as_str()) {
            (Some(u), p) => Some((u.to_string(), p.unwrap_or_default().to_string())),
            (None, Some(_)) => return Err("`password` needs a `username`".into()),
            (None, None) => None,
        };
        let labels = format!(
            "model=\"{}\",endpoint_type=\"{}\",run_id=\"{}\"",
            escape(&context.models.join(",")),
            escape(&context.endpoint_type),
            escape(&context.run_id)
        );
        Ok(Prometheus {
            client,
            base: format!("{endpoint}/metrics{}", segment("job", job)),
            grouping,
            put: !config["method"]
                .as_str()
                .is_some_and(|m| m.eq_ignore_ascii_case("post")),
            auth,
            delete_on_finish: config["delete_on_finish"].as_bool().unwrap_or(false),
            labels,
            last_stats: BTreeMap::new(),
            pushed: Vec::new(),
        })
    }

    /// The group's URL for one phase.
    fn group_url(&self, phase: &str) -> String {
        format!("{}{}{}", self.base, segment("phase", phase), self.grouping)
    }

    /// The text-format body: the phase's counters, then each metric of the summary.
    fn body(&self, stats: Option<&PhaseStats>, summary: Option<&Value>, complete: bool) -> String {
        let mut out = String::new();
        let mut gauge = |metric: &str, help: &str, extra: &str, value: f64| {
            if !value.is_finite() {
                return;
            }
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
            let _ = writeln!(out, "{metric}{{{}{extra}}} {value}", self.labels);
        };
        if let Some(s) = stats {
            let counters = [
                ("aiperf_requests_sent", "Requests sent", s.sent),
                (
                    "aiperf_requests_completed",
                    "Requests finished, with or without error",
                    s.completed,
                ),
                ("aiperf_requests_errors", "Requests that failed", s.errors),
                (
                    "aiperf_requests_cancelled",
                    "Requests cancelled before they finished",
                    s.cancelled,
                ),
                (
                    "aiperf_requests_in_flight",
                    "Requests sent and not finished",
                    s.in_flight,
                ),
            ];
            for (metric, help, v) in counters {
                gauge(metric, help, "", v as f64);
            }
            gauge(
                "aiperf_phase_duration_seconds",
                "Duration of the phase",
                "",
                s.duration_sec,
            );
        }
        if complete {
            gauge(
                "aiperf_benchmark_complete",
                "1 once the benchmark completed",
                "",
                1.0,
            );
        }
        let Some(Value::Object(metrics)) = summary else {
            return out;
        };
        for (tag, m) in metrics {
            let metric = format!("aiperf_{}", name(tag));
            let unit = m["unit"].as_str().unwrap_or("");
            let help = format!("{tag} ({unit})");
            let has_stats = m.get("p50").is_some();
            let mut header = false;
            for stat in STATS {
                let Some(v) = m
                    .get(stat)
                    .and_then(Value::as_f64)
                    .filter(|v| v.is_finite())
                else {
                    continue;
                };
                if !header {
                    let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
                    header = true;
                }
                let extra = if has_stats {
                    format!(",stat=\"{stat}\"")
                } else {
                    String::new()
                };
                let _ = writeln!(out, "{metric}{{{}{extra}}} {v}", self.labels);
            }
        }
        out
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some((u, p)) => req.basic_auth(u, Some(p)),
            None => req,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str, url: &str) -> HookResult {
        let fail = |why: String| HookError::Hook(format!("{what} {url} failed: {why}"));
        let resp = self
            .authorize(req)
            .send()
            .await
            .map_err(|e| fail(reqwest_error(e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        let text: String = text.trim().chars().take(200).collect();
        Err(fail(format!("HTTP {status}: {text}")))
    }

    async fn push(&mut self, phase: &str, body: String) -> HookResult {
        let url = self.group_url(phase);
        let req = if self.put {
            self.client.put(&url)
        } else {
            self.client.post(&url)
        };
        let req = req
            .header("content-type", "text/plain; version=0.0.4")
            .body(body);
        let result = self.send(req, "push to", &url).await;
        if !self.pushed.contains(&url) {
            self.pushed.push(url);
        }
        result
    }
}

/// A progress window in the summary's shape (`{tag: {unit, avg, p50, ...}}`), so the live
/// figures are pushed under the same names as the final ones.
fn window_summary(w: &aiperf_plugin::ProgressWindow) -> Value {
    let mut out = serde_json::Map::new();
    for (tag, s) in &w.metrics {
        out.insert(
            tag.clone(),
            json!({"unit": s.unit, "avg": s.avg, "p50": s.p50, "p90": s.p90, "p99": s.p99}),
        );
    }
    out.insert(
        "request_throughput".into(),
        json!({"unit": "requests/sec", "avg": w.request_throughput}),
    );
    out.insert(
        "output_token_throughput".into(),
        json!({"unit": "tokens/sec", "avg": w.output_token_throughput}),
    );
    Value::Object(out)
}

/// A reqwest error with its causes, without the URL (the message names it already):
/// `error sending request: client error (Connect): tcp connect error: Connection refused`.
pub(super) fn reqwest_error(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_string();
    }
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let _ = write!(text, ": {s}");
        source = s.source();
    }
    text
}

#[async_trait::async_trait]
impl Plugin for Prometheus {
    fn hooks(&self) -> Vec<Hook> {
        vec![Hook::Progress, Hook::PhaseComplete, Hook::BenchmarkComplete]
    }

    /// Live figures: the phase's counts and the rolling window's statistics, pushed to the
    /// phase's group (replaced by the final figures at `phase_complete`).
    async fn on_progress(&mut self, e: &HookEvent) -> HookResult {
        let Some(phase) = e.phase else {
            return Ok(());
        };
        let window = e.window.as_deref().map(window_summary);
        let mut body = self.body(e.stats.as_ref(), window.as_ref(), false);
        if let Some(w) = e.window.as_deref() {
            let _ = writeln!(
                body,
                "# HELP aiperf_progress_window_seconds Length of the rolling window of the live figures\n# TYPE aiperf_progress_window_seconds gauge\naiperf_progress_window_seconds{{{}}} {}",
                self.labels, w.window_sec
            );
        }
        self.push(phase.as_str(), body).await
    }

    async fn on_phase_complete(&mut self, e: &HookEvent) -> HookResult {
        let Some(phase) = e.phase else {
            return Ok(());
        };
        let phase = phase.as_str();
        if let Some(s) = &e.stats {
            self.last_stats.insert(phase.to_string(), s.clone());
        }
        let body = self.body(e.stats.as_ref(), e.summary.as_deref(), false);
        self.push(phase, body).await
    }

    /// The profiling phase's group again, with its final figures and
    /// `aiperf_benchmark_complete 1`.
    async fn on_benchmark_complete(&mut self, e: &HookEvent) -> HookResult {
        let phase = "profiling";
        let stats = self.last_stats.get(phase).cloned();
        let body = self.body(stats.as_ref(), e.summary.as_deref(), true);
        self.push(phase, body).await
    }

    /// With `delete_on_finish: true`, deletes every group it pushed to.
    async fn shutdown(&mut self) {
        if !self.delete_on_finish {
            return;
        }
        for url in std::mem::take(&mut self.pushed) {
            let req = self.client.delete(&url);
            if let Err(e) = self.send(req, "delete of", &url).await {
                eprintln!("warning: plugin `prometheus`: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(config: Value) -> Prometheus {
        let ctx = RunContext {
            run_id: "r1".into(),
            models: vec!["m\"1".into()],
            endpoint_type: "chat".into(),
            ..RunContext::default()
        };
        let schema = schema().unwrap();
        super::super::validate_config(&schema, &config).unwrap();
        Prometheus::new(&config, &ctx).unwrap()
    }

    #[test]
    fn progress_bodies_carry_the_window_under_the_final_names() {
        let p = plugin(json!({}));
        let mut w = aiperf_plugin::ProgressWindow {
            window_sec: 5.0,
            request_throughput: 12.5,
            ..Default::default()
        };
        w.metrics.insert(
            "time_to_first_token".into(),
            aiperf_plugin::WindowStat {
                unit: "ms".into(),
                p50: 21.5,
                ..Default::default()
            },
        );
        let stats = PhaseStats {
            sent: 9,
            in_flight: 4,
            ..Default::default()
        };
        let body = p.body(Some(&stats), Some(&window_summary(&w)), false);
        let labels = r#"model="m\"1",endpoint_type="chat",run_id="r1""#;
        for line in [
            format!("aiperf_requests_in_flight{{{labels}}} 4"),
            format!("aiperf_time_to_first_token{{{labels},stat=\"p50\"}} 21.5"),
            format!("aiperf_request_throughput{{{labels}}} 12.5"),
        ] {
            assert!(body.lines().any(|l| l == line), "{line} in\n{body}");
        }
    }

    #[test]
    fn the_schema_forbids_unknown_keys_and_build_checks_the_rest() {
        let schema = schema().unwrap();
        let err = super::super::validate_config(&schema, &json!({"endpont": "http://x"}));
        assert!(err.unwrap_err().contains("endpont"));
        assert!(super::super::validate_config(&schema, &json!({})).is_ok());
        let ctx = RunContext::default();
        let err = |c: Value| Prometheus::new(&c, &ctx).err().unwrap();
        assert!(err(json!({"password": "p"})).contains("username"));
        assert!(err(json!({"grouping": {"phase": "x"}})).contains("phase"));
        assert!(err(json!({"endpoint": "http://"})).contains("endpoint"));
        assert!(Prometheus::new(&json!({"grouping": {"team": "ml"}}), &ctx).is_ok());
    }

    #[test]
    fn group_urls_encode_the_grouping_key() {
        assert_eq!(segment("job", "aiperf_benchmark"), "/job/aiperf_benchmark");
        assert_eq!(segment("k", "a/b c"), "/k/a%2Fb%20c");
        assert_eq!(segment("k", ""), "/k@base64/=");
        let p = plugin(
            json!({"endpoint": "http://gw:9091/", "job_name": "j", "grouping": {"team": "ml x"}}),
        );
        assert_eq!(
            p.group_url("warmup"),
            "http://gw:9091/metrics/job/j/phase/warmup/team/ml%20x"
        );
    }

    #[test]
    fn the_body_has_counters_and_a_gauge_per_statistic() {
        let p = plugin(json!({}));
        let stats = PhaseStats {
            phase: "profiling".into(),
            sent: 6,
            completed: 6,
            errors: 1,
            in_flight: 0,
            duration_sec: 1.5,
            ..PhaseStats::default()
        };
        let summary = json!({
            "time_to_first_token": {"unit": "ms", "avg": 2.5, "p1": 1.0, "p50": 2.0, "p90": 4.0, "p99": 5.0},
            "request_throughput": {"unit": "requests/sec", "avg": 12.0},
            "odd-tag": {"unit": "ms", "avg": null},
        });
        let body = p.body(Some(&stats), Some(&summary), false);
        let labels = r#"model="m\"1",endpoint_type="chat",run_id="r1""#;
        for line in [
            format!("aiperf_requests_completed{{{labels}}} 6"),
            format!("aiperf_requests_errors{{{labels}}} 1"),
            format!("aiperf_phase_duration_seconds{{{labels}}} 1.5"),
            format!("aiperf_time_to_first_token{{{labels},stat=\"p90\"}} 4"),
            format!("aiperf_time_to_first_token{{{labels},stat=\"avg\"}} 2.5"),
            format!("aiperf_request_throughput{{{labels}}} 12"),
            "# TYPE aiperf_time_to_first_token gauge".to_string(),
        ] {
            assert!(body.lines().any(|l| l == line), "{line}\nin\n{body}");
        }
        assert!(!body.contains("p1\""), "only avg/p50/p90/p99: {body}");
        assert!(!body.contains("odd_tag"), "no value, no metric: {body}");
        assert!(!body.contains("aiperf_benchmark_complete"));
        let end = p.body(None, None, true);
        assert!(end.contains(&format!("aiperf_benchmark_complete{{{labels}}} 1")));
    }

    /// Serves one request on a local socket: its head (lower-cased), after answering 200.
    async fn capture_one(listener: tokio::net::TcpListener) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        String::from_utf8_lossy(&buf).to_lowercase()
    }

    #[tokio::test]
    async fn basic_auth_and_post_reach_the_gateway() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(capture_one(listener));
        let mut p = plugin(json!({
            "endpoint": format!("http://127.0.0.1:{port}"),
            "username": "u",
            "password": "p",
            "method": "post",
        }));
        p.push("profiling", "x 1\n".into()).await.unwrap();
        let head = server.await.unwrap();
        assert!(
            head.starts_with("post /metrics/job/aiperf_benchmark/phase/profiling "),
            "{head}"
        );
        // base64("u:p")
        assert!(head.contains("authorization: basic dtpw"), "{head}");
    }
}
