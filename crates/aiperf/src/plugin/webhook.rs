//! `webhook`: POSTs the run's summary to a URL at `benchmark_complete` (and, with
//! `hooks: [phase_complete, ...]`, at each `phase_complete`), as a JSON document or as a
//! Slack-compatible message.
//!
//! Delivery is retried (exponential backoff) on transport errors, timeouts, 429 and 5xx,
//! never on another 4xx; `request_timeout_seconds` bounds the whole delivery, retries
//! included. A failed delivery is a hook error: counted and reported, the plugin stays
//! enabled and the run goes on.
//!
//! The URL and header values are credentials by shape (a Slack webhook's path, a bearer
//! token): no message shows more of the URL than its scheme, host and port, and no header
//! value at all.
//!
//! The HTTP helpers here (`Headers`, `origin`, `deliver`) are shared with `otlp`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiperf_plugin::{Hook, LoadContext, PhaseStats, RunContext};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use serde_json::{json, Value};

use super::{HookError, HookEvent, HookResult, Plugin};

/// Below the default hook timeout (5 s): a slow receiver is a failed delivery, not a hung
/// hook (which would disable the plugin).
pub(super) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(4);
const DEFAULT_RETRIES: u32 = 3;
const MAX_RETRIES: u32 = 10;
/// The first wait before a retry; doubled each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The hooks a webhook can post at.
const HOOKS: [&str; 2] = ["phase_complete", "benchmark_complete"];

/// The schema of `headers`: a list of `"Name: value"` or a map `{Name: value}`.
pub(super) fn headers_schema() -> Value {
    json!({
        "oneOf": [
            {"type": "array", "items": {"type": "string", "pattern": "^[^:]+:"}},
            {"type": "object", "additionalProperties": {"type": "string"}}
        ]
    })
}

pub fn schema() -> Option<Value> {
    Some(json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "url": {"type": "string", "pattern": "^https?://"},
            "format": {"enum": ["json", "slack"]},
            "headers": headers_schema(),
            "request_timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
            "retries": {"type": "integer", "minimum": 0, "maximum": MAX_RETRIES},
            "hooks": {"type": "array", "minItems": 1, "items": {"enum": HOOKS}}
        },
        "required": ["url"]
    }))
}

/// Extra request headers from a config's `headers`, checked; errors never show a value.
pub(super) fn parse_headers(config: &Value) -> Result<HeaderMap, String> {
    let pairs: Vec<(String, String)> = match config.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                let s = i
                    .as_str()
                    .ok_or("`headers`: each item is a \"Name: value\" string")?;
                let (k, v) = s
                    .split_once(':')
                    .ok_or("`headers`: each item is a \"Name: value\" string")?;
                Ok((k.trim().to_string(), v.trim().to_string()))
            })
            .collect::<Result<_, String>>()?,
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.trim().to_string(), s.trim().to_string())),
                _ => Err(format!("`headers`: the value of {k:?} must be a string")),
            })
            .collect::<Result<_, String>>()?,
        Some(_) => return Err("`headers`: a list of \"Name: value\" or a map".into()),
    };
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("`headers`: {k:?} is not a valid header name"))?;
        let mut value = HeaderValue::from_str(&v)
            .map_err(|_| format!("`headers`: the value of {k:?} is not a valid header value"))?;
        value.set_sensitive(true);
        map.append(name, value);
    }
    Ok(map)
}

/// The request timeout of a config, or `default`.
pub(super) fn request_timeout(config: &Value, default: Duration) -> Duration {
    match config["request_timeout_seconds"].as_f64() {
        Some(s) if s.is_finite() && s > 0.0 => crate::units::clamped_secs(s),
        _ => default,
    }
}

/// The client of a built-in exporter: no proxy (requests go straight to the receiver), no
/// redirects (a redirect could carry the headers elsewhere).
pub(super) fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// What a message may show of a URL: `scheme://host[:port]`, never its userinfo, path or
/// query (a webhook's path, a token parameter).
pub(super) fn origin(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(p) => format!("{}://{host}:{p}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// A parsed `http(s)` URL from config key `key`; the error shows only the key.
pub(super) fn parse_url(raw: &str, key: &str) -> Result<reqwest::Url, String> {
    let url =
        reqwest::Url::parse(raw.trim()).map_err(|e| format!("`{key}` is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "`{key}` must be an http:// or https:// URL with a host"
        ));
    }
    Ok(url)
}

/// Whether an answer with this status is worth another attempt: 429 and 5xx.
pub(super) fn retryable_status(status: u16) -> bool {
    status == 429 || (500..600).contains(&status)
}

/// The wait before retry `n` (0-based): 250 ms, 500 ms, 1 s, ...
pub(super) fn backoff(n: u32) -> Duration {
    FIRST_BACKOFF.saturating_mul(1u32 << n.min(16))
}

/// One attempt's failure.
#[derive(Debug)]
enum Failure {
    /// An HTTP answer other than 2xx: status and the start of the body.
    Status(reqwest::StatusCode, String),
    /// No answer: connect error, reset, timeout.
    Transport(String),
}

impl Failure {
    fn retryable(&self) -> bool {
        match self {
            Failure::Status(s, _) => retryable_status(s.as_u16()),
            Failure::Transport(_) => true,
        }
    }

    fn describe(&self) -> String {
        match self {
            Failure::Status(s, text) if text.is_empty() => format!("HTTP {s}"),
            Failure::Status(s, text) => format!("HTTP {s}: {text}"),
            Failure::Transport(t) => t.clone(),
        }
    }
}

/// A POST to deliver, and how hard to try.
pub(super) struct Delivery<'a> {
    pub client: &'a reqwest::Client,
    pub url: &'a reqwest::Url,
    pub headers: &'a HeaderMap,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// The limit on the whole delivery, every attempt and wait included.
    pub limit: Duration,
    pub retries: u32,
    /// Names the sender in messages: `webhook`, `OTLP export`.
    pub what: &'static str,
}

impl Delivery<'_> {
    /// POSTs the body until it is accepted (2xx), a failure is final (4xx but 429), the
    /// retries are used up or the time is. Returns the accepted answer's body.
    pub async fn send(self) -> Result<Vec<u8>, HookError> {
        let start = Instant::now();
        let mut attempts = 0u32;
        loop {
            let left = self.limit.saturating_sub(start.elapsed());
            attempts += 1;
            let failure = match self.attempt(left).await {
                Ok(body) => return Ok(body),
                Err(f) => f,
            };
            let left = self.limit.saturating_sub(start.elapsed());
            let wait = backoff(attempts - 1);
            let retry = failure.retryable() && attempts <= self.retries;
            if !retry || wait >= left {
                let tries = if attempts == 1 {
                    "1 attempt".to_string()
                } else {
                    format!("{attempts} attempts")
                };
                let stop = if retry {
                    format!(", out of time ({:.1} s)", self.limit.as_secs_f64())
                } else {
                    String::new()
                };
                let why = crate::secret::redact_text(&failure.describe());
                return Err(HookError::Hook(format!(
                    "{} POST to {} failed after {tries}{stop}: {why}",
                    self.what,
                    origin(self.url)
                )));
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(&self, left: Duration) -> Result<Vec<u8>, Failure> {
        if left.is_zero() {
            return Err(Failure::Transport("timed out".into()));
        }
        let mut req = self
            .client
            .post(self.url.clone())
            .timeout(left)
            .body(self.body.clone());
        if !self.headers.contains_key(CONTENT_TYPE) {
            req = req.header(CONTENT_TYPE, self.content_type);
        }
        let req = req.headers(self.headers.clone());
        let resp = req
            .send()
            .await
            .map_err(|e| Failure::Transport(super::prometheus::reqwest_error(e)))?;
        let status = resp.status();
        let body = resp.bytes().await.map(|b| b.to_vec());
        if status.is_success() {
            return body.map_err(|e| Failure::Transport(super::prometheus::reqwest_error(e)));
        }
        let text = body.unwrap_or_default();
        let text: String = String::from_utf8_lossy(&text)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(200)
            .collect();
        Err(Failure::Status(status, text))
    }
}

/// The load in a few words: `concurrency 4`, `10 req/s (poisson), concurrency cap 8`,
/// `fixed schedule`.
pub(super) fn describe_load(load: &LoadContext) -> String {
    let mut out = match load.mode.as_str() {
        "concurrency" => format!("concurrency {}", load.concurrency.unwrap_or(1)),
        "request_rate" => {
            let mut s = match load.request_rate {
                Some(r) => format!("{r} req/s"),
                None => "request rate".to_string(),
            };
            if let Some(p) = &load.arrival_pattern {
                let _ = write!(s, " ({p})");
            }
            if let Some(c) = load.concurrency {
                let _ = write!(s, ", concurrency cap {c}");
            }
            s
        }
        "fixed_schedule" => "fixed schedule".to_string(),
        "" => "unknown load".to_string(),
        other => other.to_string(),
    };
    if let Some(n) = load.request_count {
        let _ = write!(out, ", {n} requests");
    } else if let Some(d) = load.duration_sec {
        let _ = write!(out, ", {d} s");
    }
    out
}

/// `json` or `slack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Slack,
}

pub struct Webhook {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    format: Format,
    limit: Duration,
    retries: u32,
    /// Post at `phase_complete` too.
    on_phase: bool,
    /// Post at `benchmark_complete`.
    on_complete: bool,
    context: Arc<RunContext>,
    /// The last stats of each phase, by name, for `benchmark_complete`.
    phase_stats: BTreeMap<String, PhaseStats>,
}

impl Webhook {
    pub fn build(config: &Value, context: &Arc<RunContext>) -> Result<Box<dyn Plugin>, String> {
        Ok(Box::new(Self::new(config, context)?))
    }

    /// From a config its schema accepted: the checks a schema cannot make.
    fn new(config: &Value, context: &Arc<RunContext>) -> Result<Self, String> {
        let url = config["url"].as_str().ok_or("`url` is required")?;
        let url = parse_url(url, "url")?;
        let format = match config["format"].as_str() {
            None | Some("json") => Format::Json,
            Some("slack") => Format::Slack,
            Some(other) => return Err(format!("`format`: {other:?} is not json or slack")),
        };
        let hooks: Vec<&str> = match config.get("hooks").and_then(Value::as_array) {
            Some(list) => list.iter().filter_map(Value::as_str).collect(),
            None => vec!["benchmark_complete"],
        };
        if let Some(h) = hooks.iter().find(|h| !HOOKS.contains(h)) {
            return Err(format!(
                "`hooks`: {h:?} is not phase_complete or benchmark_complete"
            ));
        }
        let retries = match config.get("retries") {
            None | Some(Value::Null) => DEFAULT_RETRIES,
            Some(v) => v
                .as_u64()
                .filter(|n| *n <= MAX_RETRIES as u64)
                .ok_or(format!(
                    "`retries` must be a whole number 0..={MAX_RETRIES}"
                ))? as u32,
        };
        Ok(Webhook {
            client: client()?,
            url,
            headers: parse_headers(config)?,
            format,
            limit: request_timeout(config, DEFAULT_REQUEST_TIMEOUT),
            retries,
            on_phase: hooks.contains(&"phase_complete"),
            on_complete: hooks.contains(&"benchmark_complete"),
            context: context.clone(),
            phase_stats: BTreeMap::new(),
        })
    }

    /// The run context's essentials: no `input_config`, URLs with credentials hidden.
    fn run(&self) -> Value {
        let c = &self.context;
        json!({
            "run_id": c.run_id,
            "aiperf_version": c.aiperf_version,
            "models": c.models,
            "urls": c.urls.iter().map(|u| crate::secret::redact_text(u)).collect::<Vec<_>>(),
            "endpoint_type": c.endpoint_type,
            "endpoint_path": c.endpoint_path,
            "streaming": c.streaming,
            "artifact_dir": c.artifact_dir,
            "load": c.load,
            "warmup": c.warmup,
        })
    }

    /// The JSON document: `{event, phase, run, phase_stats, summary}`.
    fn json_payload(&self, hook: Hook, phase: Option<&str>, summary: Option<&Value>) -> Value {
        json!({
            "source": "aiperf",
            "event": hook,
            "phase": phase,
            "run": self.run(),
            "phase_stats": self.phase_stats,
            "summary": summary,
        })
    }

    /// A Slack message: `text` (the notification) and `blocks` (header, fields, context).
    fn slack_payload(&self, hook: Hook, phase: Option<&str>, summary: Option<&Value>) -> Value {
        let c = &self.context;
        let phase = phase.unwrap_or("profiling");
        let stats = self.phase_stats.get(phase);
        let stat = |tag: &str, s: &str| {
            summary
                .and_then(|m| m.get(tag))
                .and_then(|m| m.get(s))
                .and_then(Value::as_f64)
                .filter(|v| v.is_finite())
        };
        let models = if c.models.is_empty() {
            "?".to_string()
        } else {
            c.models.join(", ")
        };
        let load = match (phase, &c.warmup) {
            ("warmup", Some(w)) => describe_load(w),
            _ => describe_load(&c.load),
        };
        let (completed, errors) = match stats {
            Some(s) => (Some(s.completed), Some(s.errors)),
            None => (
                stat("request_count", "avg").map(|v| v as u64),
                stat("error_request_count", "avg").map(|v| v as u64),
            ),
        };
        let count = |n: Option<u64>| n.map_or("?".to_string(), |n| n.to_string());
        let requests = format!("{} requests, {} errors", count(completed), count(errors));
        let pair = |tag: &str| match (stat(tag, "p50"), stat(tag, "p99")) {
            (None, None) => "n/a".to_string(),
            (a, b) => format!("{} / {} ms", num(a), num(b)),
        };
        let throughput = match (
            stat("request_throughput", "avg"),
            stat("output_token_throughput", "avg"),
        ) {
            (None, None) => "n/a".to_string(),
            (r, None) => format!("{} req/s", num(r)),
            (r, t) => format!("{} req/s, {} tokens/s", num(r), num(t)),
        };
        let title = match hook {
            Hook::PhaseComplete => format!("aiperf: {phase} phase complete"),
            _ => "aiperf: benchmark complete".to_string(),
        };
        let text = format!(
            "{title}: {models} at {load}: {requests}; TTFT p50/p99 {}; request latency p50/p99 {}; {throughput}",
            pair("time_to_first_token"),
            pair("request_latency"),
        );
        let field = |name: &str, value: String| json!({"type": "mrkdwn", "text": format!("*{name}*\n{value}")});
        json!({
            "text": text,
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": title}},
                {"type": "section", "fields": [
                    field("Model", models),
                    field("Load", load),
                    field("Requests", requests),
                    field("Throughput", throughput),
                    field("TTFT p50 / p99", pair("time_to_first_token")),
                    field("ITL p50 / p99", pair("inter_token_latency")),
                    field("Request latency p50 / p99", pair("request_latency")),
                ]},
                {"type": "context", "elements": [
                    {"type": "mrkdwn", "text": format!(
                        "run `{}` · {} · aiperf {} · `{}`",
                        c.run_id, c.endpoint_type, c.aiperf_version, c.artifact_dir
                    )}
                ]}
            ]
        })
    }

    fn payload(&self, hook: Hook, phase: Option<&str>, summary: Option<&Value>) -> Value {
        match self.format {
            Format::Json => self.json_payload(hook, phase, summary),
            Format::Slack => self.slack_payload(hook, phase, summary),
        }
    }

    async fn post(&self, payload: &Value) -> HookResult {
        let body = serde_json::to_vec(payload)
            .map_err(|e| HookError::Hook(format!("cannot encode the webhook payload: {e}")))?;
        Delivery {
            client: &self.client,
            url: &self.url,
            headers: &self.headers,
            content_type: "application/json",
            body,
            limit: self.limit,
            retries: self.retries,
            what: "webhook",
        }
        .send()
        .await
        .map(|_| ())
    }
}

/// A figure for people: two decimals below 100, none above; `?` for none.
fn num(v: Option<f64>) -> String {
    match v {
        None => "?".to_string(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.2}"),
    }
}

#[async_trait::async_trait]
impl Plugin for Webhook {
    /// `phase_complete` always: its stats are what `benchmark_complete` reports.
    fn hooks(&self) -> Vec<Hook> {
        let mut h = vec![Hook::PhaseComplete];
        if self.on_complete {
            h.push(Hook::BenchmarkComplete);
        }
        h
    }

    async fn on_phase_complete(&mut self, e: &HookEvent) -> HookResult {
        let Some(phase) = e.phase else {
            return Ok(());
        };
        if let Some(s) = &e.stats {
            self.phase_stats
                .insert(phase.as_str().to_string(), s.clone());
        }
        if !self.on_phase {
            return Ok(());
        }
        let payload = self.payload(e.hook, Some(phase.as_str()), e.summary.as_deref());
        self.post(&payload).await
    }

    async fn on_benchmark_complete(&mut self, e: &HookEvent) -> HookResult {
        let payload = self.payload(e.hook, None, e.summary.as_deref());
        self.post(&payload).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> Arc<RunContext> {
        Arc::new(RunContext {
            run_id: "r-1".into(),
            aiperf_version: "9.9.9".into(),
            models: vec!["m1".into()],
            urls: vec!["http://user:pw-secret@srv:8000?api_key=k-secret".into()],
            endpoint_type: "chat".into(),
            artifact_dir: "/tmp/a".into(),
            load: LoadContext {
                mode: "concurrency".into(),
                concurrency: Some(4),
                request_count: Some(10),
                ..LoadContext::default()
            },
            input_config: json!({"big": "not sent"}),
            ..RunContext::default()
        })
    }

    fn plugin(config: Value) -> Webhook {
        let schema = schema().unwrap();
        super::super::validate_config(&schema, &config).unwrap();
        Webhook::new(&config, &context()).unwrap()
    }

    fn stats() -> PhaseStats {
        PhaseStats {
            phase: "profiling".into(),
            sent: 10,
            completed: 10,
            errors: 2,
            ..PhaseStats::default()
        }
    }

    fn summary() -> Value {
        json!({
            "time_to_first_token": {"unit": "ms", "avg": 2.5, "p50": 2.0, "p99": 5.25},
            "inter_token_latency": {"unit": "ms", "avg": 1.0, "p50": 1.0, "p99": 1.5},
            "request_latency": {"unit": "ms", "avg": 20.0, "p50": 19.5, "p99": 123.4},
            "request_throughput": {"unit": "requests/sec", "avg": 12.5},
            "output_token_throughput": {"unit": "tokens/sec", "avg": 50.0},
        })
    }

    #[test]
    fn the_schema_forbids_unknown_keys_and_needs_a_url() {
        let schema = schema().unwrap();
        let check = |c: Value| super::super::validate_config(&schema, &c);
        assert!(check(json!({"urll": "http://x"}))
            .unwrap_err()
            .contains("urll"));
        assert!(check(json!({})).unwrap_err().contains("url"));
        assert!(check(json!({"url": "ftp://x"})).is_err());
        assert!(check(json!({"url": "http://x", "retries": -1})).is_err());
        assert!(check(json!({"url": "http://x", "hooks": ["phase_start"]})).is_err());
        assert!(check(json!({"url": "http://x", "headers": ["no colon"]})).is_err());
        assert!(
            check(json!({"url": "http://x", "format": "slack", "retries": 0,
            "headers": {"A": "b"}, "request_timeout_seconds": 0.5,
            "hooks": ["phase_complete"]}))
            .is_ok()
        );
        let ctx = context();
        let err = |c: Value| Webhook::new(&c, &ctx).err().unwrap();
        assert!(err(json!({"url": "http://"})).contains("`url`"));
        let e = err(json!({"url": "http://x", "headers": ["Authorization: bad\u{1}value-secret"]}));
        assert!(
            e.contains("Authorization") && !e.contains("value-secret"),
            "{e}"
        );
        assert!(err(json!({"url": "http://x", "headers": ["Bad Name: v"]})).contains("Bad Name"));
    }

    #[test]
    fn headers_come_as_a_list_or_a_map() {
        let h = parse_headers(&json!({"headers": ["Authorization: Bearer t", "X-A: 1"]})).unwrap();
        assert_eq!(h["authorization"], "Bearer t");
        assert!(h["authorization"].is_sensitive());
        assert_eq!(h["x-a"], "1");
        let h = parse_headers(&json!({"headers": {"X-B": " 2 "}})).unwrap();
        assert_eq!(h["x-b"], "2");
        assert!(parse_headers(&json!({})).unwrap().is_empty());
    }

    #[test]
    fn the_json_document_has_the_context_the_stats_and_the_summary() {
        let mut p = plugin(json!({"url": "http://x"}));
        p.phase_stats.insert("profiling".into(), stats());
        let v = p.payload(Hook::BenchmarkComplete, None, Some(&summary()));
        assert_eq!(v["event"], "benchmark_complete");
        assert_eq!(v["phase"], Value::Null);
        assert_eq!(v["run"]["run_id"], "r-1");
        assert_eq!(v["run"]["models"], json!(["m1"]));
        assert_eq!(v["run"]["load"]["concurrency"], 4);
        assert_eq!(v["run"]["aiperf_version"], "9.9.9");
        assert_eq!(v["run"]["artifact_dir"], "/tmp/a");
        assert_eq!(v["phase_stats"]["profiling"]["completed"], 10);
        assert_eq!(v["summary"]["request_latency"]["p99"], 123.4);
        assert!(v["run"].get("input_config").is_none());
        let text = v.to_string();
        assert!(
            !text.contains("pw-secret") && !text.contains("k-secret"),
            "{text}"
        );
        assert!(text.contains("srv:8000"), "{text}");
    }

    #[test]
    fn the_slack_message_sums_the_run_up() {
        let mut p = plugin(json!({"url": "http://x", "format": "slack"}));
        p.phase_stats.insert("profiling".into(), stats());
        let v = p.payload(Hook::BenchmarkComplete, None, Some(&summary()));
        let text = v["text"].as_str().unwrap();
        assert_eq!(
            text,
            "aiperf: benchmark complete: m1 at concurrency 4, 10 requests: 10 requests, 2 errors; \
             TTFT p50/p99 2.00 / 5.25 ms; request latency p50/p99 19.50 / 123 ms; \
             12.50 req/s, 50.00 tokens/s"
        );
        let blocks = v["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["type"], "plain_text");
        let fields = blocks[1]["fields"].as_array().unwrap();
        assert!(fields.len() <= 10, "Slack allows 10 fields");
        assert!(fields.iter().all(|f| f["type"] == "mrkdwn"));
        assert_eq!(fields[5]["text"], "*ITL p50 / p99*\n1.00 / 1.50 ms");
        assert!(blocks[2]["elements"][0]["text"]
            .as_str()
            .unwrap()
            .contains("r-1"));
        // Without stats (no phase_complete seen), the counts come from the summary; metrics
        // missing from it are n/a.
        let p = plugin(json!({"url": "http://x", "format": "slack"}));
        let s = json!({"request_count": {"unit": "requests", "avg": 3}});
        let v = p.payload(Hook::PhaseComplete, Some("warmup"), Some(&s));
        let text = v["text"].as_str().unwrap();
        assert!(
            text.starts_with("aiperf: warmup phase complete: m1"),
            "{text}"
        );
        assert!(
            text.contains("3 requests, ? errors") && text.contains("TTFT p50/p99 n/a"),
            "{text}"
        );
    }

    #[test]
    fn loads_in_words() {
        let rate = LoadContext {
            mode: "request_rate".into(),
            request_rate: Some(2.5),
            arrival_pattern: Some("poisson".into()),
            concurrency: Some(8),
            duration_sec: Some(30.0),
            ..LoadContext::default()
        };
        assert_eq!(
            describe_load(&rate),
            "2.5 req/s (poisson), concurrency cap 8, 30 s"
        );
        let fixed = LoadContext {
            mode: "fixed_schedule".into(),
            ..LoadContext::default()
        };
        assert_eq!(describe_load(&fixed), "fixed schedule");
    }

    #[test]
    fn retries_on_429_and_5xx_only() {
        for s in [429, 500, 502, 503, 504, 599] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [400, 401, 403, 404, 413, 422, 301] {
            assert!(!retryable_status(s), "{s}");
        }
        assert!(Failure::Transport("refused".into()).retryable());
        assert_eq!(backoff(0), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert!(backoff(100) > Duration::from_secs(3600));
    }

    #[test]
    fn messages_show_only_the_origin() {
        let u = parse_url(
            "https://u:p@hooks.example.com:8443/services/T/B/secret?token=x",
            "url",
        )
        .unwrap();
        assert_eq!(origin(&u), "https://hooks.example.com:8443");
        assert!(parse_url("mailto:x@y", "url").is_err());
    }

    /// Answers each connection's request with the next status of `script` (the last one
    /// repeats), recording each request (head and body) in `seen`.
    async fn serve(
        listener: tokio::net::TcpListener,
        script: Vec<u16>,
        seen: Arc<std::sync::Mutex<Vec<String>>>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut n = 0;
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            while let Ok(k) = sock.read(&mut chunk).await {
                if k == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..k]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf).to_string());
            let status = script[n.min(script.len() - 1)];
            n += 1;
            let resp = format!(
                "HTTP/1.1 {status} X\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope"
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        }
    }

    async fn deliver_to(script: Vec<u16>, retries: u32) -> (Result<(), HookError>, Vec<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let server = tokio::spawn(serve(listener, script, seen.clone()));
        let p = plugin(json!({
            "url": format!("http://127.0.0.1:{port}/hook/path-secret"),
            "headers": ["Authorization: Bearer hdr-secret"],
            "retries": retries,
            "request_timeout_seconds": 30,
        }));
        let r = p.post(&json!({"a": 1})).await;
        server.abort();
        let seen = seen.lock().unwrap().clone();
        (r, seen)
    }

    #[tokio::test]
    async fn a_5xx_is_retried_and_a_4xx_is_not() {
        let (r, seen) = deliver_to(vec![503, 200], 3).await;
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(seen.len(), 2);
        assert!(
            seen[1].starts_with("POST /hook/path-secret HTTP/1.1"),
            "{}",
            seen[1]
        );
        assert!(seen[1]
            .to_lowercase()
            .contains("authorization: bearer hdr-secret"));
        assert!(seen[1]
            .to_lowercase()
            .contains("content-type: application/json"));
        assert!(seen[1].ends_with("{\"a\":1}"), "{}", seen[1]);

        let (r, seen) = deliver_to(vec![404], 3).await;
        assert_eq!(seen.len(), 1, "no retry on 404");
        let Err(HookError::Hook(msg)) = r else {
            panic!("{r:?}")
        };
        assert!(
            msg.contains("after 1 attempt") && msg.contains("HTTP 404"),
            "{msg}"
        );
        assert!(!msg.contains("secret"), "{msg}");

        let (r, seen) = deliver_to(vec![500], 2).await;
        assert_eq!(seen.len(), 3, "the first attempt and 2 retries");
        let msg = r.unwrap_err().to_string();
        assert!(
            msg.contains("after 3 attempts") && msg.contains("HTTP 500"),
            "{msg}"
        );
        assert!(
            msg.contains("http://127.0.0.1:") && !msg.contains("secret"),
            "{msg}"
        );
    }
}
