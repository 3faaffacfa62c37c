//! The built-in mock OpenAI-compatible server (`aiperf mock-server`, `--url mock`).
//!
//! Its timing is the ground truth the benchmark is checked against, so tokens go out on
//! absolute deadlines (`start + ttft + i * itl`) through the high-resolution timer: late
//! wakeups never add up across a stream.
//!
//! `config.rs`: the options (one grammar for `mock?…` and the flags) and which requests get a
//! fault. `answer.rs`: the answers, healthy or faulted. `conn.rs`: the control a handler has
//! over its connection, for the faults below hyper's response API (reset, close).
//!
//! `GET /mock/stats` answers the mock's counters as JSON: `requests` (POSTs to the API paths
//! received: the lines `--log-arrivals` writes), `errors` (answered by `error_rate`),
//! `faults` (faults injected) and `in_flight` (requests whose answer has not ended: the load
//! model's count, without the stats request itself).
//!
//! The load model (`ttft_per_inflight_ms`, `itl_per_inflight_ms`; see `config.rs`) counts the
//! requests in flight with an [`answer::InFlight`] guard per request: taken when its body is
//! read, given back when its answer's end is handed to the connection or the answer is
//! dropped.

mod answer;
mod config;
mod conn;
mod metrics;
mod prefix;
pub mod tls;

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::ops::ControlFlow::{self, Break, Continue};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use serde_json::json;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::clock::{hires, kernel};
use answer::{full, json_error, Api, Body, InFlight};
pub use config::{
    count, error_status, every, fault, is_mock_url, kv_tokens, percent, seqs, tokens, Fault,
    MockConfig, FAULT_SALT, MAX_TOKENS, OPTIONS,
};
use conn::{ConnCtl, Socket};
use metrics::{Metrics, Served};
pub use metrics::{E2E_BOUNDS, ITL_BOUNDS, TTFT_BOUNDS};

struct State {
    cfg: MockConfig,
    /// Requests counted for `error_rate` and the faults (valid JSON bodies).
    counter: AtomicU64,
    /// POSTs to the API paths received (`--log-arrivals` lines).
    received: AtomicU64,
    errors: AtomicU64,
    faults: AtomicU64,
    /// Requests in flight (the load model's `n`).
    in_flight: Arc<AtomicU64>,
    arrivals: Option<Mutex<std::io::BufWriter<std::fs::File>>>,
    /// What `GET /metrics` shows.
    metrics: Arc<Metrics>,
    prefix: prefix::PrefixCache,
    /// `max_num_seqs` slots, when limited.
    slots: Option<Arc<Semaphore>>,
    /// When the first API request arrived (the latency step counts from it).
    first: OnceLock<Instant>,
}

impl State {
    fn new(cfg: MockConfig) -> std::io::Result<Self> {
        let arrivals = match &cfg.log_arrivals {
            Some(p) => Some(Mutex::new(std::io::BufWriter::new(std::fs::File::create(
                p,
            )?))),
            None => None,
        };
        let slots = (cfg.max_num_seqs > 0).then(|| {
            let n = usize::try_from(cfg.max_num_seqs).unwrap_or(Semaphore::MAX_PERMITS);
            Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS)))
        });
        Ok(Self {
            metrics: Arc::new(Metrics::new(cfg.kv_cache_tokens)),
            prefix: prefix::PrefixCache::default(),
            slots,
            first: OnceLock::new(),
            cfg,
            counter: AtomicU64::new(0),
            received: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            in_flight: Arc::new(AtomicU64::new(0)),
            arrivals,
        })
    }

    fn stats(&self) -> serde_json::Value {
        json!({
            "requests": self.received.load(Ordering::Relaxed),
            "errors": self.errors.load(Ordering::Relaxed),
            "faults": self.faults.load(Ordering::Relaxed),
            "in_flight": self.in_flight.load(Ordering::SeqCst),
        })
    }

    /// Counts a POST to an API path; with `--log-arrivals`, writes its arrival (unix ns).
    fn log_arrival(&self, unix_ns: u64) {
        self.received.fetch_add(1, Ordering::Relaxed);
        if let Some(log) = &self.arrivals {
            if let Ok(mut w) = log.lock() {
                let _ = writeln!(w, "{unix_ns}");
            }
        }
    }

    /// Waits for a `max_num_seqs` slot (none without a limit), counted as waiting meanwhile;
    /// returns it and when the wait ended (`arrival` when there was none).
    async fn admit(&self, arrival: Instant) -> (Option<OwnedSemaphorePermit>, Instant) {
        let Some(slots) = &self.slots else {
            return (None, arrival);
        };
        if let Ok(p) = slots.clone().try_acquire_owned() {
            return (Some(p), arrival);
        }
        // Counted until admitted, or until the handler is dropped (the client went away).
        struct Waiting<'a>(&'a AtomicU64);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.metrics.waiting.fetch_add(1, Ordering::Relaxed);
        let waiting = Waiting(&self.metrics.waiting);
        let permit = slots.clone().acquire_owned().await.ok();
        drop(waiting);
        (permit, Instant::now().max(arrival))
    }

    fn flush_arrivals(&self) {
        if let Some(a) = &self.arrivals {
            if let Ok(mut w) = a.lock() {
                let _ = w.flush();
            }
        }
    }
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

/// When the request being handled arrived, as an instant and in Unix ns: the kernel's
/// receive stamp of its bytes on an HTTP/1.x connection (where the last read is this
/// request's), else now. Token deadlines count from it, so the mock's own read lag is not in
/// the TTFT it serves, and `--log-arrivals` logs the wire's time.
fn arrival_of(conn: &ConnCtl, version: hyper::Version) -> (Instant, u64) {
    let (now, now_unix) = (Instant::now(), kernel::realtime_ns());
    let http1 = matches!(version, hyper::Version::HTTP_10 | hyper::Version::HTTP_11);
    match conn.rx_stamp().filter(|_| http1) {
        // A lag past a second is no read lag but a wall-clock step: not trusted.
        Some(stamp) if now_unix.saturating_sub(stamp) < 1_000_000_000 => {
            let lag = Duration::from_nanos(now_unix.saturating_sub(stamp));
            (now.checked_sub(lag).unwrap_or(now), stamp.min(now_unix))
        }
        _ => (now, now_unix),
    }
}

/// Answers one request, in stages: route it, read it, draw its error or fault, answer it
/// (embeddings, whole or streamed).
async fn handle(
    state: Arc<State>,
    conn: Arc<ConnCtl>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (arrival, arrival_unix_ns) = arrival_of(&conn, req.version());
    let reused = conn.next_request_is_reused();
    let api = match route(&state, req.method(), req.uri().path()) {
        Continue(api) => api,
        Break(answer) => return Ok(answer),
    };
    state.log_arrival(arrival_unix_ns);
    let (gen, body) = match read_request(req).await {
        Continue(read) => read,
        Break(answer) => return Ok(answer),
    };
    let n = state.counter.fetch_add(1, Ordering::Relaxed);
    // In flight from here until its answer ends (an early `Break` drops it: ended too).
    let in_flight = InFlight::enter(&state.in_flight);
    let first = *state.first.get_or_init(|| arrival);
    let since_first = arrival.saturating_duration_since(first);
    let (ttft, itl) = state.cfg.latency_at(in_flight.count(), since_first);
    let received = arrival;
    let (fault, arrival) = match draw_fault(&state, &conn, n, reused, arrival).await {
        Continue(drawn) => drawn,
        Break(answer) => return Ok(answer),
    };
    // The mock does not tokenize: about four bytes of request per prompt token.
    let prompt_tokens = (body.len() / 4).max(1) as u64;
    let m = &state.metrics;
    m.prefix_queries.fetch_add(prompt_tokens, Ordering::Relaxed);
    m.prefix_hits
        .fetch_add(state.prefix.hits(&body), Ordering::Relaxed);
    // A request past its slot's wait is answered from its admission on.
    let (permit, arrival) = state.admit(arrival).await;
    let served = Served::admit(m, received, prompt_tokens, permit);
    let ask = Ask {
        api,
        n,
        arrival,
        ttft,
        itl,
        fault,
        model: gen.model.clone().unwrap_or_else(|| "mock-model".into()),
        prompt_tokens,
    };
    let cfg = &state.cfg;
    // A healthy answer, or a late (`slow_headers`) or empty one, ends normally.
    let healthy = matches!(fault, None | Some(Fault::Empty | Fault::SlowHeaders));
    if api == Api::Embeddings {
        let answer = answer_embeddings(cfg, &ask, &conn).await;
        if healthy {
            served.succeed();
        }
        drop(served);
        in_flight.finish();
        return Ok(answer);
    }
    let tokens = if fault == Some(Fault::Empty) {
        0
    } else {
        gen.max_completion_tokens
            .or(gen.max_tokens)
            .or(gen.max_output_tokens)
            .unwrap_or(cfg.default_tokens)
            .clamp(1, MAX_TOKENS)
    };
    if !gen.stream {
        let answer = answer_whole(cfg, &ask, tokens, &conn).await;
        if healthy {
            let waited = ask.arrival.saturating_duration_since(received);
            served.tokens_at_once(u64::from(tokens), waited + ask.ttft, ask.itl);
            served.succeed();
        }
        drop(served);
        in_flight.finish();
        return Ok(answer);
    }
    let include_usage = gen.stream_options.as_ref().is_some_and(|o| o.include_usage);
    Ok(answer_stream(
        cfg,
        ask,
        tokens,
        include_usage,
        conn,
        (in_flight, served),
    ))
}

/// Which API a request is for; `Break` with the answer itself for every other route
/// (health, models, stats, a wrong method, an unknown path).
fn route(state: &State, method: &Method, path: &str) -> ControlFlow<Response<Body>, Api> {
    match (method.clone(), path) {
        (Method::GET, "/health") => Break(full(StatusCode::OK, "text/plain", "ok")),
        (Method::GET, "/v1/models") => {
            let body = json!({"object": "list", "data": [{"id": "mock-model", "object": "model", "owned_by": "aiperf"}]});
            Break(full(StatusCode::OK, "application/json", body.to_string()))
        }
        (Method::GET, "/mock/stats") => Break(full(
            StatusCode::OK,
            "application/json",
            state.stats().to_string(),
        )),
        (Method::GET, "/metrics") => Break(full(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics.render(),
        )),
        (Method::POST, "/v1/chat/completions") => Continue(Api::Chat),
        (Method::POST, "/v1/completions") => Continue(Api::Completions),
        (Method::POST, "/v1/embeddings") => Continue(Api::Embeddings),
        (Method::POST, "/v1/responses") => Continue(Api::Responses),
        (
            _,
            "/v1/chat/completions"
            | "/v1/completions"
            | "/v1/embeddings"
            | "/v1/responses"
            | "/v1/models"
            | "/health"
            | "/metrics"
            | "/mock/stats",
        ) => Break(json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        )),
        _ => Break(json_error(
            StatusCode::NOT_FOUND,
            &format!("no route for {path}"),
        )),
    }
}

/// Reads an API request's body as JSON; `Break` with a 400 answer when it can't.
async fn read_request(req: Request<Incoming>) -> ControlFlow<Response<Body>, (GenRequest, Bytes)> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Break(json_error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read body: {e}"),
            ))
        }
    };
    match serde_json::from_slice(&body) {
        Ok(gen) => Continue((gen, body)),
        Err(e) => Break(json_error(
            StatusCode::BAD_REQUEST,
            &format!("invalid JSON body: {e}"),
        )),
    }
}

/// Request `n`'s error or fault, counted. The faults that replace the answer (`error_rate`,
/// `status`, `endless_error`, `close_reused`) `Break` with it; otherwise the fault left for the
/// answer and its arrival time (`slow_headers` moves it).
async fn draw_fault(
    state: &State,
    conn: &ConnCtl,
    n: u64,
    reused: bool,
    mut arrival: Instant,
) -> ControlFlow<Response<Body>, (Option<Fault>, Instant)> {
    let cfg = &state.cfg;
    let error_status =
        StatusCode::from_u16(cfg.error_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if cfg.error_selected(n) {
        state.errors.fetch_add(1, Ordering::Relaxed);
        return Break(json_error(error_status, answer::INJECTED));
    }
    let fault = match cfg.fault_for(n) {
        // Only a reused connection is closed under a request.
        Some(Fault::CloseReused) if !reused => None,
        f => f,
    };
    if fault.is_some() {
        state.faults.fetch_add(1, Ordering::Relaxed);
    }
    match fault {
        Some(Fault::Status) => return Break(json_error(error_status, answer::INJECTED)),
        Some(Fault::EndlessError) => {
            return Break(answer::endless_error(error_status, cfg.fault_delay))
        }
        Some(Fault::CloseReused) => {
            tokio::time::sleep(cfg.fault_delay).await;
            conn.kill(false);
            return Break(answer::hang().await);
        }
        Some(Fault::SlowHeaders) => {
            // The whole answer moves: its head, and every token after it.
            arrival += cfg.fault_delay;
            hires::sleep_until(arrival).await;
        }
        _ => {}
    }
    Continue((fault, arrival))
}

/// A request past routing, parsing and the fault draw: what its answer is made from.
struct Ask {
    api: Api,
    /// The request's number (from 0).
    n: u64,
    arrival: Instant,
    /// This request's TTFT and ITL (the load model applied).
    ttft: Duration,
    itl: Duration,
    fault: Option<Fault>,
    model: String,
    prompt_tokens: u64,
}

/// The answer to an embeddings request (no vectors under `fault=empty`).
async fn answer_embeddings(cfg: &MockConfig, ask: &Ask, conn: &ConnCtl) -> Response<Body> {
    let data = if ask.fault == Some(Fault::Empty) {
        json!([])
    } else {
        json!([{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]}])
    };
    let body = json!({
        "object": "list",
        "data": data,
        "model": ask.model,
        "usage": {"prompt_tokens": ask.prompt_tokens, "total_tokens": ask.prompt_tokens},
    });
    let at = ask.arrival + ask.ttft;
    answer::whole(body.to_string(), at, ask.fault, cfg.fault_delay, conn).await
}

/// The non-streamed answer: the whole body at the time its last token is due.
async fn answer_whole(cfg: &MockConfig, ask: &Ask, tokens: u32, conn: &ConnCtl) -> Response<Body> {
    let at = ask.arrival + ask.ttft + ask.itl.saturating_mul(tokens.saturating_sub(1));
    let text: String = (0..tokens)
        .map(|i| answer::word(cfg.seed, ask.n, i))
        .collect();
    let (model, prompt_tokens) = (&ask.model, ask.prompt_tokens);
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": tokens, "total_tokens": prompt_tokens + tokens as u64});
    let body = match ask.api {
        Api::Responses => {
            json!({"id": "resp-mock", "object": "response", "model": model, "status": "completed",
               "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}],
               "usage": {"input_tokens": prompt_tokens, "output_tokens": tokens}})
        }
        Api::Chat => {
            json!({"id": "chatcmpl-mock", "object": "chat.completion", "model": model,
               "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}],
               "usage": usage})
        }
        Api::Completions | Api::Embeddings => {
            json!({"id": "cmpl-mock", "object": "text_completion", "model": model,
               "choices": [{"index": 0, "text": text, "finish_reason": "length"}], "usage": usage})
        }
    };
    answer::whole(body.to_string(), at, ask.fault, cfg.fault_delay, conn).await
}

/// The streamed answer: one event per token on its deadline, with the mid-stream fault.
fn answer_stream(
    cfg: &MockConfig,
    ask: Ask,
    tokens: u32,
    include_usage: bool,
    conn: Arc<ConnCtl>,
    (in_flight, served): (InFlight, Served),
) -> Response<Body> {
    let stream = answer::Stream {
        api: ask.api,
        model_json: serde_json::to_string(&ask.model).unwrap_or_else(|_| "\"mock-model\"".into()),
        arrival: ask.arrival,
        ttft: ask.ttft,
        itl: ask.itl,
        seed: cfg.seed,
        n: ask.n,
        tokens,
        include_usage,
        prompt_tokens: ask.prompt_tokens,
        fault: ask
            .fault
            .filter(|f| !matches!(f, Fault::Empty | Fault::SlowHeaders))
            .map(|f| (f, cfg.fault_tokens.min(tokens))),
        fault_delay: cfg.fault_delay,
        conn,
        in_flight,
        served,
    };
    stream.response()
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
/// Serves until `shutdown` is cancelled; HTTPS with `tls` ([`tls::server_config`]).
pub async fn serve(
    listener: TcpListener,
    cfg: MockConfig,
    tls: Option<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let tls = tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
    serve_state(listener, Arc::new(State::new(cfg)?), tls, shutdown).await;
    Ok(())
}

async fn serve_state(
    listener: TcpListener,
    state: Arc<State>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) {
    kernel::keep_enabled();
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
        tokio::spawn(serve_connection(
            stream,
            state.clone(),
            tls.clone(),
            shutdown.clone(),
        ));
    }
    state.flush_arrivals();
}

/// Serves one connection until it ends, the server stops, or a handler kills it (a fault).
/// Over TLS, the handshake comes first (a client that fails it, or says nothing for
/// [`TLS_HANDSHAKE_TIMEOUT`], is dropped).
async fn serve_connection(
    stream: tokio::net::TcpStream,
    state: Arc<State>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let ctl = Arc::new(ConnCtl::default());
    let socket = Socket::new(stream, ctl.clone());
    match tls {
        None => serve_io(socket, ctl, state, shutdown).await,
        Some(acceptor) => {
            let accepted = tokio::select! {
                r = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(socket)) => r,
                _ = shutdown.cancelled() => return,
            };
            match accepted {
                Ok(Ok(io)) => serve_io(io, ctl, state, shutdown).await,
                Ok(Err(e)) => tracing::debug!("mock server: TLS handshake failed: {e}"),
                Err(_) => tracing::debug!("mock server: TLS handshake timed out"),
            }
        }
    }
}

/// How long the mock waits for a client's TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve_io<I>(io: I, ctl: Arc<ConnCtl>, state: Arc<State>, shutdown: CancellationToken)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = {
        let ctl = ctl.clone();
        hyper::service::service_fn(move |req| handle(state.clone(), ctl.clone(), req))
    };
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    // Leaving the select drops `conn`, and with it the socket (RST if the kill asked so).
    tokio::select! {
        _ = conn => {}
        _ = ctl.killed() => {}
        _ = shutdown.cancelled() => {}
    }
}

/// A mock running inside this process on an ephemeral port.
pub struct InProcessMock {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl InProcessMock {
    pub async fn start(cfg: MockConfig) -> std::io::Result<Self> {
        let state = Arc::new(State::new(cfg)?);
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve_state(listener, state, None, shutdown.clone()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mix::mix;
    use crate::tokenizer::Tokenizer;
    use answer::WORDS;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Long enough for anything these tests wait for; a hang fails instead of blocking.
    const LIMIT: Duration = Duration::from_secs(10);

    async fn start(url: &str) -> InProcessMock {
        InProcessMock::start(url.parse().unwrap()).await.unwrap()
    }

    fn post(body: &str) -> String {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: mock\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    const STREAM_5: &str = r#"{"stream":true,"max_tokens":5,"messages":[]}"#;
    const WHOLE_2: &str = r#"{"max_tokens":2,"messages":[]}"#;

    /// Reads until EOF or an error; returns what came and how it ended.
    async fn read_all(s: &mut TcpStream) -> (Vec<u8>, std::io::Result<()>) {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(LIMIT, s.read(&mut buf)).await {
                Err(_) => panic!("no end within {LIMIT:?}: {}", String::from_utf8_lossy(&out)),
                Ok(Ok(0)) => return (out, Ok(())),
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => return (out, Err(e)),
            }
        }
    }

    /// Reads one whole `content-length` response.
    async fn read_response(s: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&out).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .expect("content-length");
                if body.len() >= len {
                    return text;
                }
            }
            let n = tokio::time::timeout(LIMIT, s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed mid-response: {text}");
            out.extend_from_slice(&buf[..n]);
        }
    }

    async fn stats(addr: SocketAddr) -> serde_json::Value {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /mock/stats HTTP/1.1\r\nhost: mock\r\n\r\n")
            .await
            .unwrap();
        let text = read_response(&mut s).await;
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        serde_json::from_str(body).unwrap()
    }

    /// Token events in an SSE answer (the role chunk has no `{"content"`).
    fn token_events(text: &str) -> usize {
        text.matches("\"delta\":{\"content\"").count()
    }

    #[tokio::test]
    async fn a_healthy_stream_is_unchanged() {
        let mock = start("mock?ttft_ms=1&itl_ms=1").await;
        let mut s = TcpStream::connect(mock.addr).await.unwrap();
        s.write_all(post(STREAM_5).as_bytes()).await.unwrap();
        // The connection stays open after a chunked answer: read up to its last chunk.
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !out.ends_with(b"0\r\n\r\n") {
            let n = tokio::time::timeout(LIMIT, s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0);
            out.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("content-type: text/event-stream"), "{text}");
        assert!(text.contains("\"role\":\"assistant\""), "{text}");
        assert_eq!(token_events(&text), 5, "{text}");
        assert_eq!(text.matches("\"finish_reason\":\"length\"").count(), 1);
        assert!(text.contains("data: [DONE]\n\n"), "{text}");
        assert_eq!(
            stats(mock.addr).await,
            json!({"requests": 1, "errors": 0, "faults": 0, "in_flight": 0})
        );
        mock.stop().await;
    }

    #[tokio::test]
    async fn reset_sends_rst_after_the_tokens() {
        let mock = start("mock?ttft_ms=1&itl_ms=1&fault=reset&fault_tokens=2").await;
        let mut s = TcpStream::connect(mock.addr).await.unwrap();
        s.write_all(post(STREAM_5).as_bytes()).await.unwrap();
        let (out, end) = read_all(&mut s).await;
        let text = String::from_utf8_lossy(&out);
        assert_eq!(token_events(&text), 2, "{text}");
        let err = end.expect_err("a reset, not an orderly close");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        assert_eq!(stats(mock.addr).await["faults"], 1);
        mock.stop().await;
    }

    #[tokio::test]
    async fn close_ends_the_connection_mid_stream() {
        let mock = start("mock?ttft_ms=1&itl_ms=1&fault=close&fault_tokens=3").await;
        let mut s = TcpStream::connect(mock.addr).await.unwrap();
        s.write_all(post(STREAM_5).as_bytes()).await.unwrap();
        let (out, end) = read_all(&mut s).await;
        end.expect("an orderly close (FIN)");
        let text = String::from_utf8_lossy(&out);
        assert_eq!(token_events(&text), 3, "{text}");
        assert!(
            !text.contains("[DONE]") && !text.ends_with("0\r\n\r\n"),
            "{text}"
        );
        mock.stop().await;
    }

    #[tokio::test]
    async fn close_reused_answers_a_fresh_connection_and_closes_a_reused_one() {
        let mock = start("mock?ttft_ms=1&itl_ms=0&fault=close_reused&fault_ms=100").await;
        let mut s = TcpStream::connect(mock.addr).await.unwrap();
        s.write_all(post(WHOLE_2).as_bytes()).await.unwrap();
        let first = read_response(&mut s).await;
        assert!(first.starts_with("HTTP/1.1 200 OK"), "{first}");
        let t = Instant::now();
        s.write_all(post(WHOLE_2).as_bytes()).await.unwrap();
        let (out, end) = read_all(&mut s).await;
        assert!(
            end.is_ok() && out.is_empty(),
            "closed without a byte: {out:?} {end:?}"
        );
        assert!(
            t.elapsed() >= Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
        // Both requests arrived; only the second got the fault.
        assert_eq!(
            stats(mock.addr).await,
            json!({"requests": 2, "errors": 0, "faults": 1, "in_flight": 0})
        );
        mock.stop().await;
    }

    #[tokio::test]
    async fn slow_headers_hold_the_head_back() {
        let mock = start("mock?ttft_ms=0&itl_ms=0&fault=slow_headers&fault_ms=150").await;
        let mut s = TcpStream::connect(mock.addr).await.unwrap();
        let t = Instant::now();
        s.write_all(post(STREAM_5).as_bytes()).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(LIMIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        assert!(
            t.elapsed() >= Duration::from_millis(150),
            "{:?}",
            t.elapsed()
        );
        mock.stop().await;
    }

    #[tokio::test]
    async fn empty_garbage_and_bad_json_streams() {
        for (url, check) in [
            ("mock?ttft_ms=0&itl_ms=0&fault=empty", "empty"),
            (
                "mock?ttft_ms=0&itl_ms=0&fault=garbage&fault_tokens=2",
                "garbage",
            ),
            (
                "mock?ttft_ms=0&itl_ms=0&fault=bad_json&fault_tokens=0",
                "bad_json",
            ),
        ] {
            let mock = start(url).await;
            let mut s = TcpStream::connect(mock.addr).await.unwrap();
            // `connection: close` so the answer ends with the connection.
            let req = post(STREAM_5).replacen("host: mock", "host: mock\r\nconnection: close", 1);
            s.write_all(req.as_bytes()).await.unwrap();
            let (out, end) = read_all(&mut s).await;
            end.unwrap();
            let text = String::from_utf8_lossy(&out);
            assert!(text.contains("data: [DONE]"), "{url}: {text}");
            match check {
                "empty" => assert_eq!(token_events(&text), 0, "{text}"),
                "garbage" => {
                    assert_eq!(token_events(&text), 5, "{text}");
                    let g = out
                        .windows(3)
                        .position(|w| w == b"\xff\xfe\x00")
                        .expect("garbage");
                    // After the second token, before the third.
                    let before = String::from_utf8_lossy(&out[..g]);
                    assert_eq!(token_events(&before), 2, "{text}");
                }
                _ => assert!(text.contains("{\"content\":\" the\"\n\n"), "{text}"),
            }
            mock.stop().await;
        }
    }

    #[tokio::test]
    async fn endless_faults_never_end() {
        let mock =
            start("mock?ttft_ms=0&itl_ms=0&fault=endless_error&error_status=503&fault_ms=0").await;
        let mut s = TcpStream::connect(mock.addr).await.unwrap();
        s.write_all(post(WHOLE_2).as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while out.len() < 4 << 20 {
            let n = tokio::time::timeout(LIMIT, s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "the body ended");
            out.extend_from_slice(&buf[..n]);
        }
        assert!(out.starts_with(b"HTTP/1.1 503 Service Unavailable\r\n"));
        drop(s);
        mock.stop().await;

        let mock =
            start("mock?ttft_ms=0&itl_ms=0&fault=endless_stream&fault_tokens=1&fault_ms=1").await;
        let mut s = TcpStream::connect(mock.addr).await.unwrap();
        s.write_all(post(STREAM_5).as_bytes()).await.unwrap();
        let mut text = String::new();
        while text.matches(": keep-alive").count() < 20 {
            let n = tokio::time::timeout(LIMIT, s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "the stream ended");
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert_eq!(token_events(&text), 1, "{text}");
        assert!(!text.contains("[DONE]"));
        mock.stop().await;
    }

    #[tokio::test]
    async fn status_faults_and_error_rate_are_counted_apart() {
        let mock =
            start("mock?ttft_ms=0&itl_ms=0&fault=status&error_status=429&fault_every=2").await;
        let mut s = TcpStream::connect(mock.addr).await.unwrap();
        let mut statuses = Vec::new();
        for _ in 0..4 {
            s.write_all(post(WHOLE_2).as_bytes()).await.unwrap();
            let r = read_response(&mut s).await;
            statuses.push(r[9..12].to_string());
        }
        assert_eq!(statuses, ["200", "429", "200", "429"]);
        assert_eq!(
            stats(mock.addr).await,
            json!({"requests": 4, "errors": 0, "faults": 2, "in_flight": 0})
        );
        mock.stop().await;
    }

    #[test]
    fn in_flight_counts_itself_and_leaves_once() {
        let c = Arc::new(AtomicU64::new(0));
        let a = InFlight::enter(&c);
        let b = InFlight::enter(&c);
        assert_eq!((a.count(), b.count()), (1, 2));
        a.finish();
        a.finish();
        assert_eq!(c.load(Ordering::SeqCst), 1);
        drop(a);
        assert_eq!(
            c.load(Ordering::SeqCst),
            1,
            "a finished guard is not given back twice"
        );
        let d = InFlight::enter(&c);
        assert_eq!(d.count(), 2);
        drop(b);
        drop(d);
        assert_eq!(c.load(Ordering::SeqCst), 0);
    }

    /// A finished stream and a connection the mock closed leave the in-flight count; a
    /// stalled answer stays in it.
    #[tokio::test]
    async fn answers_leave_the_in_flight_count_when_they_end() {
        let mock =
            start("mock?ttft_ms=0&itl_ms=0&fault=close&fault_every=2&ttft_per_inflight_ms=1").await;
        for request in 1..=2 {
            // Request 1: a healthy stream; request 2: closed by the mock after one token.
            let mut s = TcpStream::connect(mock.addr).await.unwrap();
            let req = post(STREAM_5).replacen("host: mock", "host: mock\r\nconnection: close", 1);
            s.write_all(req.as_bytes()).await.unwrap();
            let (out, end) = read_all(&mut s).await;
            end.unwrap();
            let events = token_events(&String::from_utf8_lossy(&out));
            assert_eq!(events, if request == 1 { 5 } else { 1 });
            let deadline = Instant::now() + LIMIT;
            while stats(mock.addr).await["in_flight"] != 0 {
                assert!(Instant::now() < deadline, "request {request} never left");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        mock.stop().await;

        let mock = start("mock?ttft_ms=0&itl_ms=0&fault=stall").await;
        let mut stalled = TcpStream::connect(mock.addr).await.unwrap();
        stalled.write_all(post(STREAM_5).as_bytes()).await.unwrap();
        let mut buf = [0u8; 4096];
        let mut seen = String::new();
        while token_events(&seen) < 1 {
            let n = tokio::time::timeout(LIMIT, stalled.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0);
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert_eq!(stats(mock.addr).await["in_flight"], 1);
        drop(stalled);
        mock.stop().await;
    }

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
}
