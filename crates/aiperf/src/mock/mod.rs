//! The built-in mock OpenAI-compatible server (`aiperf mock-server`, `--url mock`).
//!
//! Its timing is the ground truth the benchmark is checked against, so tokens go out on
//! absolute deadlines (`start + ttft + i * itl`) through the high-resolution timer: late
//! wakeups never add up across a stream.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use serde_json::json;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

use crate::clock::hires;
use crate::mix::mix;

/// Words that are each exactly one token (with their leading space) in o200k_base and
/// cl100k_base, so the client's token count equals the number generated.
const WORDS: [&str; 10] = [
    " the", " of", " and", " to", " in", " is", " it", " that", " was", " for",
];

#[derive(Debug, Clone)]
pub struct MockConfig {
    pub ttft: Duration,
    pub itl: Duration,
    /// Percent of requests answered with HTTP 500.
    pub error_rate: f64,
    /// Tokens generated when a request sets no max tokens.
    pub default_tokens: u32,
    pub seed: u64,
    /// Append `arrival_unix_ns` of every request to this file.
    pub log_arrivals: Option<PathBuf>,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            ttft: Duration::from_millis(20),
            itl: Duration::from_millis(5),
            error_rate: 0.0,
            default_tokens: 16,
            seed: 0,
            log_arrivals: None,
        }
    }
}

struct State {
    cfg: MockConfig,
    counter: AtomicU64,
    arrivals: Option<Mutex<std::io::BufWriter<std::fs::File>>>,
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize, Default)]
struct GenRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_output_tokens: Option<u32>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()).boxed())
        .expect("valid response")
}

fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    let body =
        json!({"error": {"message": message, "type": "mock_error", "code": status.as_u16()}});
    full(status, "application/json", body.to_string())
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let arrival = Instant::now();
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (method, path.as_str()) {
        (Method::GET, "/health") => return Ok(full(StatusCode::OK, "text/plain", "ok")),
        (Method::GET, "/v1/models") => {
            let body = json!({"object": "list", "data": [{"id": "mock-model", "object": "model", "owned_by": "aiperf"}]});
            return Ok(full(StatusCode::OK, "application/json", body.to_string()));
        }
        (
            Method::POST,
            "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings" | "/v1/responses",
        ) => {}
        (
            _,
            "/v1/chat/completions"
            | "/v1/completions"
            | "/v1/embeddings"
            | "/v1/responses"
            | "/v1/models"
            | "/health",
        ) => {
            return Ok(json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed",
            ))
        }
        _ => {
            return Ok(json_error(
                StatusCode::NOT_FOUND,
                &format!("no route for {path}"),
            ))
        }
    }
    if let Some(log) = &state.arrivals {
        let unix_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        if let Ok(mut w) = log.lock() {
            let _ = writeln!(w, "{unix_ns}");
        }
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(json_error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read body: {e}"),
            ))
        }
    };
    let gen: GenRequest = match serde_json::from_slice(&body) {
        Ok(g) => g,
        Err(e) => {
            return Ok(json_error(
                StatusCode::BAD_REQUEST,
                &format!("invalid JSON body: {e}"),
            ))
        }
    };
    let n = state.counter.fetch_add(1, Ordering::Relaxed);
    if state.cfg.error_rate > 0.0 {
        let u = (mix(state.cfg.seed, n) >> 11) as f64 / (1u64 << 53) as f64;
        if u * 100.0 < state.cfg.error_rate {
            return Ok(json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "mock server injected error",
            ));
        }
    }
    let model = gen.model.clone().unwrap_or_else(|| "mock-model".into());
    // The mock does not tokenize: about four bytes of request per prompt token.
    let prompt_tokens = (body.len() / 4).max(1) as u64;
    let cfg = &state.cfg;
    if path == "/v1/embeddings" {
        hires::sleep_until(arrival + cfg.ttft).await;
        let body = json!({
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]}],
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        });
        return Ok(full(StatusCode::OK, "application/json", body.to_string()));
    }
    let chat = path == "/v1/chat/completions";
    let responses = path == "/v1/responses";
    let tokens = gen
        .max_completion_tokens
        .or(gen.max_tokens)
        .or(gen.max_output_tokens)
        .unwrap_or(cfg.default_tokens)
        .max(1);
    let word = |i: u32| {
        WORDS[(mix(cfg.seed ^ 0xA5A5, n.wrapping_add(i as u64)) % WORDS.len() as u64) as usize]
    };
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": tokens, "total_tokens": prompt_tokens + tokens as u64});
    if !gen.stream {
        let last = arrival + cfg.ttft + cfg.itl * (tokens - 1);
        hires::sleep_until(last).await;
        let text: String = (0..tokens).map(word).collect();
        let body = if responses {
            json!({"id": "resp-mock", "object": "response", "model": model, "status": "completed",
                   "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}],
                   "usage": {"input_tokens": prompt_tokens, "output_tokens": tokens}})
        } else if chat {
            json!({"id": "chatcmpl-mock", "object": "chat.completion", "model": model,
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}],
                   "usage": usage})
        } else {
            json!({"id": "cmpl-mock", "object": "text_completion", "model": model,
                   "choices": [{"index": 0, "text": text, "finish_reason": "length"}], "usage": usage})
        };
        return Ok(full(StatusCode::OK, "application/json", body.to_string()));
    }

    let include_usage = gen.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let (ttft, itl, seed) = (cfg.ttft, cfg.itl, cfg.seed);
    let model_json = serde_json::to_string(&model).unwrap_or_else(|_| "\"mock-model\"".into());
    // Events: 0 = role (chat only, sent at once), 1..=tokens = tokens, then usage and [DONE].
    let stream = futures_util::stream::unfold(0u32, move |i| {
        let model_json = model_json.clone();
        let usage = usage.clone();
        async move {
            let frame = if responses {
                // The Responses API: named events, no [DONE]; `response.completed` ends it.
                if i == 0 {
                    "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp-mock\"}}\n\n".to_string()
                } else if i <= tokens {
                    hires::sleep_until(arrival + ttft + itl * (i - 1)).await;
                    let w = WORDS[(mix(seed ^ 0xA5A5, n.wrapping_add((i - 1) as u64))
                        % WORDS.len() as u64) as usize];
                    format!("event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"delta\":\"{w}\"}}\n\n")
                } else if i == tokens + 1 {
                    let (p, c) = (
                        usage["prompt_tokens"].clone(),
                        usage["completion_tokens"].clone(),
                    );
                    format!("event: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{{\"id\":\"resp-mock\",\"status\":\"completed\",\"usage\":{{\"input_tokens\":{p},\"output_tokens\":{c}}}}}}}\n\n")
                } else {
                    return None;
                }
            } else if i == 0 {
                if chat {
                    format!("data: {{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"model\":{model_json},\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"finish_reason\":null}}]}}\n\n")
                } else {
                    String::new()
                }
            } else if i <= tokens {
                hires::sleep_until(arrival + ttft + itl * (i - 1)).await;
                let w = WORDS[(mix(seed ^ 0xA5A5, n.wrapping_add((i - 1) as u64))
                    % WORDS.len() as u64) as usize];
                let finish = if i == tokens { "\"length\"" } else { "null" };
                if chat {
                    format!("data: {{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"model\":{model_json},\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{w}\"}},\"finish_reason\":{finish}}}]}}\n\n")
                } else {
                    format!("data: {{\"id\":\"cmpl-mock\",\"object\":\"text_completion\",\"model\":{model_json},\"choices\":[{{\"index\":0,\"text\":\"{w}\",\"finish_reason\":{finish}}}]}}\n\n")
                }
            } else if i == tokens + 1 {
                let mut s = String::new();
                if include_usage {
                    s.push_str(&format!("data: {{\"id\":\"mock\",\"object\":\"chat.completion.chunk\",\"model\":{model_json},\"choices\":[],\"usage\":{usage}}}\n\n"));
                }
                s.push_str("data: [DONE]\n\n");
                s
            } else {
                return None;
            };
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from(frame))), i + 1))
        }
    });
    let body = StreamBody::new(stream).boxed();
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .expect("valid response"))
}

/// Raises the open-file limit to its maximum: thousands of sockets need it.
pub fn raise_fd_limit() {
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit on RLIMIT_NOFILE with a valid struct.
    unsafe {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

/// Binds a listener with a deep accept backlog (bursts of thousands of connections).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(8192)
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    cfg: MockConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let arrivals = match &cfg.log_arrivals {
        Some(p) => Some(Mutex::new(std::io::BufWriter::new(std::fs::File::create(
            p,
        )?))),
        None => None,
    };
    let state = Arc::new(State {
        cfg,
        counter: AtomicU64::new(0),
        arrivals,
    });
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("mock server accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
    if let Some(a) = &state.arrivals {
        if let Ok(mut w) = a.lock() {
            let _ = w.flush();
        }
    }
    Ok(())
}

/// A mock running inside this process on an ephemeral port.
pub struct InProcessMock {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl InProcessMock {
    pub async fn start(cfg: MockConfig) -> std::io::Result<Self> {
        let listener = bind("127.0.0.1:0".parse().expect("literal address"))?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, cfg, shutdown.clone()));
        Ok(Self {
            addr,
            shutdown,
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Whether a `--url` names the built-in mock: `mock` or `mock?option=value&...`.
pub fn is_mock_url(url: &str) -> bool {
    let u = url.trim();
    u == "mock" || u.starts_with("mock?")
}

impl MockConfig {
    /// Checks what the types allow but the mock does not (shared by `--url mock?…` and
    /// `aiperf mock-server`).
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=100.0).contains(&self.error_rate) {
            return Err(format!(
                "error rate must be a percentage from 0 to 100, got {}",
                self.error_rate
            ));
        }
        if self.default_tokens > MAX_TOKENS {
            return Err(format!(
                "default tokens must be at most {MAX_TOKENS}, got {}",
                self.default_tokens
            ));
        }
        Ok(())
    }
}

/// The one grammar of the in-process mock's URL: `mock` or
/// `mock?ttft_ms=20&itl_ms=5&error_rate=10&tokens=16`.
impl std::str::FromStr for MockConfig {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let url = url.trim();
        if !is_mock_url(url) {
            return Err(format!(
                "`{url}` is not a mock URL (`mock` or `mock?option=value`)"
            ));
        }
        let query = url
            .strip_prefix("mock")
            .unwrap_or("")
            .trim_start_matches('?');
        let mut cfg = MockConfig::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = |why: &str| format!("invalid mock option `{pair}`: {why}");
            match k {
                "ttft_ms" => cfg.ttft = crate::units::millis(v).map_err(|e| bad(&e))?,
                "itl_ms" => cfg.itl = crate::units::millis(v).map_err(|e| bad(&e))?,
                "error_rate" => {
                    cfg.error_rate = v
                        .parse::<f64>()
                        .ok()
                        .filter(|r| (0.0..=100.0).contains(r))
                        .ok_or_else(|| bad("a percentage from 0 to 100"))?
                }
                "tokens" => {
                    cfg.default_tokens = v
                        .parse::<u32>()
                        .ok()
                        .filter(|&n| n <= MAX_TOKENS)
                        .ok_or_else(|| bad(&format!("a whole number from 0 to {MAX_TOKENS}")))?
                }
                _ => {
                    return Err(format!(
                        "unknown mock option `{k}`: use ttft_ms, itl_ms, error_rate or tokens"
                    ))
                }
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The most tokens the mock generates for one request.
pub const MAX_TOKENS: u32 = 1_000_000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::Tokenizer;

    #[test]
    fn every_word_is_one_token_and_they_concatenate() {
        for name in ["builtin", "builtin:cl100k_base"] {
            let t = Tokenizer::load(name).unwrap();
            for w in WORDS {
                assert_eq!(t.count(w), 1, "{name}: {w:?}");
            }
            let text: String = (0..500).map(|i| WORDS[(mix(3, i) % 10) as usize]).collect();
            assert_eq!(t.count(&text), 500, "{name}");
        }
    }

    #[test]
    fn mock_url_options() {
        let c: MockConfig = "mock?ttft_ms=5&itl_ms=1.5&error_rate=10".parse().unwrap();
        assert_eq!(c.ttft, Duration::from_millis(5));
        assert_eq!(c.itl, Duration::from_micros(1500));
        assert_eq!(c.error_rate, 10.0);
        assert_eq!(
            "mock".parse::<MockConfig>().unwrap().ttft,
            Duration::from_millis(20)
        );
        for bad in [
            "mock?bogus=1",
            "mock?ttft_ms=inf",
            "mock?ttft_ms=nan",
            "mock?itl_ms=1e300",
            "mock?ttft_ms=-1",
            "mock?error_rate=101",
            "mock?tokens=1.5",
            "mock?tokens=1e12",
            "http://x",
            "mockery",
        ] {
            assert!(bad.parse::<MockConfig>().is_err(), "{bad}");
        }
        assert!(is_mock_url(" mock?tokens=3") && !is_mock_url("mockery"));
    }
}
