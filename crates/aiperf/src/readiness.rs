//! `--wait-for-model-timeout`: before the first phase, probe the server until it is ready,
//! as AIPerf's pre-flight readiness probe does.
//!
//! Every URL is probed in turn, and on each URL every model: `models` mode asks
//! `GET {url}/v1/models` until the model is listed in `data[].id` (a 404 there: any 2xx from
//! the base URL will do, for servers without a model list); `inference` mode sends a one-token
//! request of the run's own shape to the run's endpoint until any answer below 500 comes back
//! (a 4xx shows the server is up; the run reports it on its first request); `both` does
//! `models`, then `inference`. Each (URL, model) probe has the whole timeout to itself, as in
//! AIPerf, so the worst case is about timeout × URLs × models. Probes are `interval` apart;
//! one probe request may take at most the interval, and at least 5 s (`models`) or 30 s
//! (`inference`, a first forward pass may load weights), never past the deadline.
//!
//! Progress goes to stderr: a line when waiting starts, one per failed probe, one when ready.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde_json::Value;

use crate::endpoint::{build_payload, EndpointSpec, RequestShape, WaitMode};
use crate::transport::tls;

/// The prompt of an inference probe.
const PROBE_PROMPT: &str = "Hi";
/// A `models` probe may take at least this long.
const MIN_MODELS_TIMEOUT: Duration = Duration::from_secs(5);
/// An inference probe may take at least this long.
const MIN_INFERENCE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the server is not ready: the probe that ran out of time and what it saw last.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error(
        "the server was not ready within {timeout}: {what} ({attempts} probe(s), last: {last})"
    )]
    TimedOut {
        timeout: String,
        what: String,
        attempts: u32,
        last: String,
    },
    #[error("cannot probe the server: {0}")]
    Client(String),
}

/// What one probe saw.
enum Probe {
    Ready(String),
    NotYet(String),
}

/// Waits until every URL serves every model, or fails after the timeout. Does nothing
/// when `--wait-for-model-timeout` is 0. `urls` are the run's (the mock's address in place
/// of `mock`).
pub async fn wait(
    spec: &EndpointSpec,
    shape: &RequestShape,
    urls: &[String],
) -> Result<(), NotReady> {
    let w = spec.wait_for_model;
    if w.timeout.is_zero() {
        return Ok(());
    }
    let client = client(spec)?;
    let mode = match w.mode {
        WaitMode::Models => "models",
        WaitMode::Inference => "inference",
        WaitMode::Both => "models, then inference",
    };
    eprintln!(
        "Waiting for the server to be ready ({mode} probe; up to {} per URL and model, every {})",
        show(w.timeout),
        show(w.interval)
    );
    let started = Instant::now();
    for url in urls {
        let base = url.trim_end_matches('/');
        if matches!(w.mode, WaitMode::Models | WaitMode::Both) {
            for model in &spec.models {
                let what = format!("`{model}` listed by {base}/v1/models");
                poll(spec, &what, MIN_MODELS_TIMEOUT, |limit| {
                    models_probe(&client, base, model, limit)
                })
                .await?;
            }
        }
        if matches!(w.mode, WaitMode::Inference | WaitMode::Both) {
            let target = format!("{base}{}", spec.path);
            for model in &spec.models {
                let body = probe_body(shape, model);
                let what = format!("a one-token request for `{model}` to {target}");
                poll(spec, &what, MIN_INFERENCE_TIMEOUT, |limit| {
                    inference_probe(&client, &target, body.clone(), limit)
                })
                .await?;
            }
        }
    }
    eprintln!(
        "Server ready after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Probes until ready or `timeout` has passed since the first probe.
async fn poll<F, Fut>(
    spec: &EndpointSpec,
    what: &str,
    min_request: Duration,
    mut probe: F,
) -> Result<(), NotReady>
where
    F: FnMut(Duration) -> Fut,
    Fut: std::future::Future<Output = Probe>,
{
    let w = spec.wait_for_model;
    let deadline = Instant::now() + w.timeout;
    let mut attempts = 0u32;
    let mut last = String::from("no probe finished");
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(NotReady::TimedOut {
                timeout: show(w.timeout),
                what: what.to_string(),
                attempts,
                last,
            });
        }
        attempts += 1;
        match probe(w.interval.max(min_request).min(left)).await {
            Probe::Ready(how) => {
                eprintln!("  ready: {what} ({how}, probe {attempts})");
                return Ok(());
            }
            Probe::NotYet(why) => {
                eprintln!("  not ready: {what}: {why} (probe {attempts})");
                last = why;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(w.interval.min(left)).await;
    }
}

/// The HTTP client of the probes: the run's TLS trust, its headers, no proxy.
fn client(spec: &EndpointSpec) -> Result<reqwest::Client, NotReady> {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(key) = &spec.api_key {
        let v = HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| NotReady::Client("the API key is not a valid header value".into()))?;
        headers.insert(AUTHORIZATION, v);
    }
    for (k, v) in &spec.headers {
        // Checked by the config already.
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.append(k, v);
        }
    }
    let tls = tls::client_config(&spec.tls()).map_err(NotReady::Client)?;
    reqwest::Client::builder()
        .default_headers(headers)
        .no_proxy()
        .use_preconfigured_tls(tls)
        .user_agent(concat!("aiperf/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| NotReady::Client(one_line(e)))
}

/// The inference probe's body: the run's payload shape for one model, one short prompt,
/// one output token, not streamed.
fn probe_body(shape: &RequestShape, model: &str) -> Vec<u8> {
    let mut s = shape.clone();
    s.models = vec![model.to_string()];
    s.streaming = false;
    let body = build_payload(&s, 0, &[("user", PROBE_PROMPT.to_string())], Some(1));
    serde_json::to_vec(&body).unwrap_or_default()
}

/// What a failed request says, in one line.
fn failure(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    one_line(cause)
}

fn one_line(text: impl std::fmt::Display) -> String {
    text.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

async fn inference_probe(
    client: &reqwest::Client,
    target: &str,
    body: Vec<u8>,
    limit: Duration,
) -> Probe {
    match client.post(target).body(body).timeout(limit).send().await {
        Ok(r) if r.status().as_u16() < 500 => Probe::Ready(format!("HTTP {}", r.status().as_u16())),
        Ok(r) => Probe::NotYet(format!("HTTP {}", r.status().as_u16())),
        Err(e) => Probe::NotYet(failure(&e)),
    }
}

async fn models_probe(client: &reqwest::Client, base: &str, model: &str, limit: Duration) -> Probe {
    let url = format!("{base}/v1/models");
    let resp = match client.get(&url).timeout(limit).send().await {
        Ok(r) => r,
        Err(e) => return Probe::NotYet(failure(&e)),
    };
    let status = resp.status().as_u16();
    if status == 404 {
        // No model list: a server that answers at all is taken as ready, as AIPerf does.
        return match client.get(base).timeout(limit).send().await {
            Ok(r) if r.status().is_success() => Probe::Ready(format!(
                "no /v1/models; {base} answered HTTP {}",
                r.status().as_u16()
            )),
            Ok(r) => Probe::NotYet(format!(
                "/v1/models HTTP 404, {base} HTTP {}",
                r.status().as_u16()
            )),
            Err(e) => Probe::NotYet(format!("/v1/models HTTP 404, {base}: {}", failure(&e))),
        };
    }
    if status != 200 {
        return Probe::NotYet(format!("HTTP {status}"));
    }
    match resp.bytes().await {
        Ok(body) if lists(&body, model) => Probe::Ready("listed".into()),
        Ok(_) => Probe::NotYet("HTTP 200, the model is not listed".into()),
        Err(e) => Probe::NotYet(failure(&e)),
    }
}

/// Whether a `/v1/models` body lists `model` in `data[].id`.
fn lists(body: &[u8], model: &str) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("data").and_then(Value::as_array).cloned())
        .is_some_and(|data| {
            data.iter()
                .any(|m| m.get("id").and_then(Value::as_str) == Some(model))
        })
}

/// A duration for people: `30 s`, `0.5 s`.
fn show(d: Duration) -> String {
    format!("{} s", crate::units::show(d.as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_lists() {
        let body = br#"{"object":"list","data":[{"id":"a"},{"id":"org/b"}]}"#;
        assert!(lists(body, "a") && lists(body, "org/b"));
        assert!(!lists(body, "c"));
        for bad in [&b"not json"[..], b"{}", b"{\"data\": 3}", b"[]"] {
            assert!(!lists(bad, "a"));
        }
    }

    #[test]
    fn probe_bodies_are_the_runs_shape_with_one_token() {
        let args: Vec<String> = ["--url", "mock", "--streaming", "--extra-inputs", "top_k:5"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let cfg = crate::config::load(&args).unwrap();
        let shape = RequestShape::new(&cfg.endpoint, false);
        let body: Value = serde_json::from_slice(&probe_body(&shape, "x")).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"model": "x", "messages": [{"role": "user", "content": "Hi"}],
                "stream": false, "max_completion_tokens": 1, "top_k": 5})
        );
    }
}
