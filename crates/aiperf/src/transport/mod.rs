//! HTTP transport: pooled keep-alive connections, one request in, one record out.
//!
//! `http://` and `https://` URLs go through the lean HTTP/1.1 client in [`h1`], read by the
//! requesting task itself (TLS by rustls under it; trust in [`tls`]). The lean client offers
//! ALPN `http/1.1` only, as AIPerf (aiohttp) speaks HTTP/1.1 only. An `https://` server that
//! accepts HTTP/2 only refuses that handshake (`no_application_protocol`); from then on the
//! URL's requests go through hyper's pooled client, which negotiates HTTP/2 (said once on
//! stderr; its records carry no HTTP phases, which hyper does not expose).
//!
//! The start time is taken just before the request is handed to the connection, and each
//! chunk's time as soon as its bytes come off the socket, before any parsing.
//!
//! What a server may send is bounded ([`Limits`]): an error body is kept up to
//! [`MAX_ERROR_BODY`] (the connection is dropped rather than drained past it), a non-streamed
//! body up to [`MAX_BODY`], one SSE event up to [`sse::MAX_EVENT`], plus the head and trailer
//! limits of [`h1`].

mod failure;
pub mod h1;
pub mod source;
pub mod sse;
#[cfg(test)]
mod test_server;
pub mod tls;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::endpoint::{parse_response, ChunkShape, ConnectionReuseStrategy, ResponseParser};
use crate::metrics::record::kind;
use crate::metrics::{ErrorDetails, RequestRecord};
pub use failure::client_resource;
use sse::SseFramer;
pub use tls::TlsOptions;

/// Most bytes of an error (non-2xx) body kept for its message (64 KiB). A longer body is not
/// read further: its connection is closed instead of drained.
pub const MAX_ERROR_BODY: usize = 64 * 1024;
/// Largest successful non-streamed body (256 MiB: an embeddings batch can be large). Past
/// it the request is a `ResponseTooLarge` error.
pub const MAX_BODY: usize = 256 * 1024 * 1024;

/// How much a server may send, per response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of an error body kept ([`MAX_ERROR_BODY`]).
    pub error_body: usize,
    /// A successful non-streamed body ([`MAX_BODY`]).
    pub body: usize,
    /// One SSE event ([`sse::MAX_EVENT`]).
    pub event: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            error_body: MAX_ERROR_BODY,
            body: MAX_BODY,
            event: sse::MAX_EVENT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("invalid header: {0}")]
    Header(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

type HyperClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How requests to one URL are sent: the lean client, read by the requesting task, unless
/// the URL's server turned out to speak HTTP/2 only.
struct Route {
    lean: h1::Endpoint,
    /// The server refused HTTP/1.1 (ALPN): requests go through hyper.
    via_hyper: AtomicBool,
}

/// What the lean client's exchange left to do.
#[derive(PartialEq)]
enum Lean {
    Done,
    /// The server accepts HTTP/2 only: nothing was sent, hyper sends the request.
    Http2Only,
}

/// How requests identify themselves and share connections (`--session-header`,
/// `--connection-reuse-strategy`).
#[derive(Debug, Clone)]
pub struct Connections {
    /// The header carrying the conversation's id (`X-Correlation-ID` by default).
    pub session_header: String,
    pub reuse: ConnectionReuseStrategy,
    /// Responses timed by the kernel's receive stamps (see `h1`).
    pub kernel_timestamps: bool,
    /// `--local-addresses`: the source addresses of new connections (empty: the kernel
    /// picks, or the automatic spread for loopback targets).
    pub local_addresses: Vec<IpAddr>,
    /// How many connections the run can hold at once (its largest concurrency; 0 when
    /// unknown): past one source address's ports, a loopback target gets the automatic
    /// spread ([`source::auto_spread`]).
    pub need: usize,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            session_header: crate::endpoint::DEFAULT_SESSION_HEADER.to_string(),
            reuse: ConnectionReuseStrategy::Pooled,
            kernel_timestamps: true,
            local_addresses: Vec::new(),
            need: 0,
        }
    }
}

/// The source addresses of the run's connections: `--local-addresses` (each checked
/// bindable here; that they suit the URLs, one family, the config checked:
/// `config::resolve`'s `local_addresses_fit`), or the
/// automatic spread when every URL is a loopback address and the run needs more
/// connections than one address has ports (said once on stderr), or `None`.
fn sources_for(
    urls: &[Uri],
    c: &Connections,
) -> Result<Option<Arc<source::Sources>>, TransportError> {
    let host_ip = |u: &Uri| {
        let h = u.host()?;
        source::literal_ip(h).or_else(|| {
            h.eq_ignore_ascii_case("localhost")
                .then(|| IpAddr::from([127, 0, 0, 1]))
        })
    };
    if let Some(sources) = source::Sources::new(c.local_addresses.clone()) {
        sources.check().map_err(TransportError::Client)?;
        let holds = c.local_addresses.len() * source::usable_ports(source::port_range());
        if c.need > holds {
            eprintln!(
                "warning: --local-addresses gives {} address(es), planned for about {holds} \
                 connections to one server address (half of each one's ephemeral ports); the \
                 run can need {}: connecting slows past them, and fails (EADDRNOTAVAIL) past all \
                 the ports",
                c.local_addresses.len(),
                c.need
            );
        }
        return Ok(Some(Arc::new(sources)));
    }
    let range = source::port_range();
    let spread = urls
        .iter()
        .map(|u| {
            matches!(u.scheme_str(), Some("http" | "https"))
                .then(|| host_ip(u))
                .flatten()
                .and_then(|ip| source::auto_spread(ip, c.need, range))
        })
        .collect::<Option<Vec<_>>>()
        .and_then(|v| v.into_iter().max_by_key(Vec::len));
    let Some(sources) = spread.and_then(source::Sources::new) else {
        return Ok(None);
    };
    match sources.check() {
        Ok(()) => {
            eprintln!(
                "aiperf: up to {} connections to a loopback server, more than half the \
                 ephemeral ports of one source address ({} of {}-{}; connecting slows past \
                 them): spreading them over 127.0.0.1-{} (--local-addresses to choose)",
                c.need,
                source::usable_ports(range),
                range.0,
                range.1,
                sources
                    .addresses()
                    .last()
                    .map_or(String::new(), |a| a.to_string()),
            );
            Ok(Some(Arc::new(sources)))
        }
        Err(e) => {
            eprintln!("warning: cannot spread connections over loopback addresses: {e}");
            Ok(None)
        }
    }
}

/// Sends requests to one or more base URLs, round-robin chosen by the caller.
pub struct Transport {
    urls: Vec<Uri>,
    /// Per URL.
    routes: Vec<Route>,
    /// For `https://` servers that accept HTTP/2 only (built when some URL is https).
    hyper: Option<HyperClient>,
    headers: HeaderMap,
    /// For `https://` requests: the conversation header's name (unless `-H` sets it), and
    /// whether `X-Request-ID` is generated (unless `-H` sets it).
    session_header: Option<HeaderName>,
    request_id_header: bool,
    timeout: Duration,
    clock: Clock,
    parser: ResponseParser,
    limits: Limits,
}

impl Transport {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        base_urls: &[String],
        path: &str,
        api_key: Option<&str>,
        headers: &[(String, String)],
        timeout: Duration,
        clock: Clock,
        parser: ResponseParser,
        tls: &TlsOptions,
        connections: &Connections,
    ) -> Result<Self, TransportError> {
        let mut map = HeaderMap::new();
        map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(key) = api_key {
            let mut v = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                TransportError::Header("--api-key contains invalid characters".into())
            })?;
            v.set_sensitive(true);
            map.insert(AUTHORIZATION, v);
        }
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| TransportError::Header(format!("{k}: {e}")))?;
            let value = HeaderValue::from_str(v)
                .map_err(|e| TransportError::Header(format!("{k}: {e}")))?;
            map.append(name, value);
        }
        let urls = base_urls
            .iter()
            .map(|b| {
                let url = format!("{}{}", b.trim_end_matches('/'), path);
                url.parse::<Uri>()
                    .ok()
                    .filter(|u| u.host().is_some())
                    .ok_or_else(|| TransportError::Client(format!("invalid URL {url}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let connect_timeout = timeout.min(Duration::from_secs(30));
        let session_header = HeaderName::from_bytes(connections.session_header.as_bytes())
            .map_err(|e| TransportError::Header(format!("{}: {e}", connections.session_header)))?;
        let https_urls = urls.iter().any(|u| u.scheme_str() != Some("http"));
        if tls.insecure {
            eprintln!("{}", tls::INSECURE_WARNING);
        }
        // Trust is only read (system store, CA files) when some URL needs it.
        let tls_config = if https_urls {
            Some(tls::client_config(tls).map_err(TransportError::Client)?)
        } else {
            None
        };
        let hyper = tls_config
            .as_ref()
            .map(|c| hyper_client(c.clone(), connect_timeout));
        let sources = sources_for(&urls, connections)?;
        let routes = urls
            .iter()
            .map(|u| {
                let tls = match (&tls_config, u.scheme_str() == Some("http")) {
                    (Some(c), false) => Some(
                        h1::TlsTarget::new(u, c.clone())
                            .map_err(|e| TransportError::Client(format!("invalid URL {u}: {e}")))?,
                    ),
                    _ => None,
                };
                let lean = h1::Endpoint::new(
                    u,
                    &map,
                    h1::Options {
                        session_header: connections.session_header.clone(),
                        reuse: connections.reuse,
                        connect_timeout,
                        clock,
                        kernel_rx: connections.kernel_timestamps,
                        sources: sources.clone(),
                        tls,
                    },
                );
                Ok(Route {
                    lean,
                    via_hyper: AtomicBool::new(false),
                })
            })
            .collect::<Result<Vec<_>, TransportError>>()?;
        if connections.reuse == ConnectionReuseStrategy::Never {
            // hyper closes a connection after a request that says so.
            map.insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        }
        Ok(Self {
            urls,
            routes,
            hyper,
            request_id_header: !map.contains_key("x-request-id"),
            session_header: (!map.contains_key(&session_header)).then_some(session_header),
            headers: map,
            timeout,
            clock,
            parser,
            limits: Limits::default(),
        })
    }

    /// Replaces the size limits (tests use small ones).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn url_count(&self) -> usize {
        self.urls.len()
    }

    /// Opens `per_url` keep-alive connections (TLS handshakes included) to each URL ahead of
    /// the load (a coordinated start: the first requests then leave on time instead of each
    /// opening a connection). Returns the connections now idle.
    pub async fn preconnect(&self, per_url: usize) -> usize {
        let mut idle = 0;
        for r in &self.routes {
            idle += r.lean.preconnect(per_url).await;
        }
        idle
    }

    /// Sends `body` and fills the record's timing, text and error fields.
    /// `cancel_after`: cancel the request this long after it was sent
    /// (`--request-cancellation-rate`).
    pub async fn send(
        &self,
        rec: &mut RequestRecord,
        body: Bytes,
        cancel: &CancellationToken,
        cancel_after: Option<Duration>,
    ) {
        rec.start_ns = self.clock.now_ns();
        let timeout = self.timeout;
        let outcome = tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(true),
            _ = async {
                match cancel_after {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            } => Err(true),
            r = tokio::time::timeout(timeout, self.exchange(body, rec)) => r.map_err(|_| false),
        };
        match outcome {
            Ok(()) => {}
            Err(cancelled) => {
                rec.end_ns = self.clock.now_ns();
                rec.error = Some(if cancelled {
                    rec.cancelled = true;
                    ErrorDetails::new(
                        Some(499),
                        kind::REQUEST_CANCELLED,
                        "request was cancelled before it finished",
                    )
                } else {
                    ErrorDetails::new(
                        None,
                        kind::REQUEST_TIMEOUT,
                        format!(
                            "no complete response within {:.3} s (--request-timeout-seconds)",
                            timeout.as_secs_f64()
                        ),
                    )
                });
            }
        }
    }

    async fn exchange(&self, body: Bytes, rec: &mut RequestRecord) {
        let route = &self.routes[rec.url_index];
        if !route.via_hyper.load(Ordering::Relaxed) {
            if self.exchange_h1(&route.lean, &body, rec).await == Lean::Done {
                return;
            }
            if !route.via_hyper.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "aiperf: {} accepts HTTP/2 only: its requests go through the HTTP/2 client \
                     (pooled connections; no HTTP phases, client-side times, no \
                     --local-addresses or sticky sessions)",
                    self.urls[rec.url_index]
                );
            }
            // Nothing was sent: the trace of the refused handshake is not this request's.
            rec.http = Default::default();
            rec.error = None;
        }
        match &self.hyper {
            None => {}
            Some(client) => {
                let mut req = hyper::Request::new(Full::new(body));
                *req.method_mut() = Method::POST;
                *req.uri_mut() = self.urls[rec.url_index].clone();
                let mut headers = self.headers.clone();
                let mut id = uuid::Uuid::encode_buffer();
                let mut value = |u: &uuid::Uuid| {
                    HeaderValue::from_str(u.hyphenated().encode_lower(&mut id))
                        .unwrap_or(HeaderValue::from_static(""))
                };
                if self.request_id_header {
                    headers.insert("x-request-id", value(&rec.ids.request));
                }
                if let Some(name) = &self.session_header {
                    headers.insert(name.clone(), value(&rec.ids.correlation));
                }
                *req.headers_mut() = headers;
                self.exchange_hyper(client, req, rec).await
            }
        }
    }

    /// The lean client, read by this task.
    async fn exchange_h1(
        &self,
        endpoint: &h1::Endpoint,
        body: &[u8],
        rec: &mut RequestRecord,
    ) -> Lean {
        let lean = self.exchange_h1_inner(endpoint, body, rec).await;
        if rec.error.is_some() {
            // A failed turn ends its conversation: a connection kept for it is closed.
            endpoint.end_session(&rec.ids.correlation);
        }
        lean
    }

    /// With the kernel's transmit stamp, the request left when the kernel says: on a reused
    /// connection nothing but this client's own work (and any descheduling) lies between the
    /// request's start and its departure, so the stamp is its start (and every phase before
    /// it); on a new connection the start stays (the connect is part of its TTFT, as in
    /// AIPerf), and the stamp is when it was sent.
    fn sent_by_the_kernel(rec: &mut RequestRecord) {
        let h = &mut rec.http;
        let Some(tx) = h.kernel_sent_ns else { return };
        if h.reused && tx >= rec.start_ns {
            rec.start_ns = tx;
            (h.conn_ns, h.dns_ns, h.connected_ns, h.sent_ns) = (tx, tx, tx, tx);
        } else if tx >= h.connected_ns {
            h.sent_ns = tx;
        }
    }

    /// The whole response was read at `last_read_ns` by the exchange `x`: the trace is
    /// complete. A response read in one piece took no time to receive (AIPerf's rule).
    fn finish_trace(rec: &mut RequestRecord, x: &h1::Exchange<'_>, last_read_ns: u64) {
        let (bytes, reads) = x.received();
        let h = &mut rec.http;
        h.bytes_received = bytes;
        h.chunks_received = reads;
        (h.kernel_reads, h.read_lag_max_ns) = x.stamped();
        h.last_byte_ns = if reads <= 1 {
            h.first_byte_ns
        } else {
            last_read_ns.max(h.first_byte_ns)
        };
        h.measured = true;
    }

    async fn exchange_h1_inner(
        &self,
        endpoint: &h1::Endpoint,
        body: &[u8],
        rec: &mut RequestRecord,
    ) -> Lean {
        let mut x = match endpoint.send_traced(body, &rec.ids, &mut rec.http).await {
            Ok(x) => x,
            Err(h1::H1Error::Http2Only(_)) if self.hyper.is_some() => return Lean::Http2Only,
            Err(e) => {
                rec.end_ns = self.clock.now_ns();
                rec.error = Some(failure::h1_send(&e));
                return Lean::Done;
            }
        };
        Self::sent_by_the_kernel(rec);
        // When the read that completed the head arrived.
        rec.ack_ns = Some(arrival(&x, &self.clock, rec.start_ns));
        let status = StatusCode::from_u16(x.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut buf = Vec::new();
        if !status.is_success() {
            // A longer body is left unread: dropping the exchange closes the connection.
            let _ = x.read_to_end(&mut buf, self.limits.error_body).await;
            buf.truncate(self.limits.error_body);
            rec.end_ns = self.clock.now_ns();
            rec.error = Some(http_error(status, &buf));
            return Lean::Done;
        }
        if !(rec.streaming && x.event_stream) {
            match x.read_to_end(&mut buf, self.limits.body).await {
                Ok(true) => {
                    self.take_body(&buf, arrival(&x, &self.clock, rec.start_ns), rec);
                    Self::finish_trace(rec, &x, rec.end_ns);
                }
                Ok(false) => self.body_too_large(rec),
                Err(e) => {
                    rec.end_ns = self.clock.now_ns();
                    rec.error = Some(failure::h1_body(&e, false));
                }
            }
            return Lean::Done;
        }
        let mut stream = StreamReader::new(self.limits.event);
        let last = loop {
            let end = match x.read_some(stream.input()).await {
                Ok(end) => end,
                Err(e) => {
                    rec.end_ns = self.clock.now_ns();
                    rec.error = Some(failure::h1_body(&e, true));
                    return Lean::Done;
                }
            };
            // The kernel's receive stamp of the read that brought these bytes, else now
            // (before any parsing): when they came off the wire.
            let t = arrival(&x, &self.clock, rec.start_ns);
            if stream.take_input(&self.parser, t, rec) == Flow::Failed {
                return Lean::Done;
            }
            if end {
                break t;
            }
        };
        Self::finish_trace(rec, &x, last);
        stream.finish(&self.parser, self.clock.now_ns(), rec);
        Lean::Done
    }

    /// `https://`: hyper's pooled client (TLS, HTTP/2 by ALPN).
    async fn exchange_hyper(
        &self,
        client: &HyperClient,
        req: hyper::Request<Full<Bytes>>,
        rec: &mut RequestRecord,
    ) {
        let resp = match client.request(req).await {
            Ok(r) => r,
            Err(e) => {
                rec.end_ns = self.clock.now_ns();
                rec.error = Some(failure::hyper_send(&e));
                return;
            }
        };
        rec.ack_ns = Some(self.clock.now_ns());
        let status = resp.status();
        let (head, mut body) = resp.into_parts();
        if !status.is_success() {
            // Dropping a body that was not read to its end closes the connection.
            let mut buf = match collect_capped(&mut body, self.limits.error_body).await {
                Ok((buf, _)) => buf,
                Err(_) => Vec::new(),
            };
            buf.truncate(self.limits.error_body);
            rec.end_ns = self.clock.now_ns();
            rec.error = Some(http_error(status, &buf));
            return;
        }
        let is_sse = head
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !(rec.streaming && is_sse) {
            match collect_capped(&mut body, self.limits.body).await {
                Ok((buf, true)) => self.take_body(&buf, self.clock.now_ns(), rec),
                Ok((_, false)) => self.body_too_large(rec),
                Err(e) => {
                    rec.end_ns = self.clock.now_ns();
                    rec.error = Some(ErrorDetails::new(
                        None,
                        kind::RESPONSE_READ_ERROR,
                        failure::error_chain(&e),
                    ));
                }
            }
            return;
        }
        let mut stream = StreamReader::new(self.limits.event);
        loop {
            let chunk = match body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue, // trailers
                },
                None => break,
                Some(Err(e)) => {
                    rec.end_ns = self.clock.now_ns();
                    rec.error = Some(failure::truncated(&e));
                    return;
                }
            };
            // Stamp before any parsing: this is when the bytes came off the socket.
            let t = self.clock.now_ns();
            if stream.take(&self.parser, &chunk, t, rec) == Flow::Failed {
                return;
            }
        }
        stream.finish(&self.parser, self.clock.now_ns(), rec);
    }

    fn body_too_large(&self, rec: &mut RequestRecord) {
        rec.end_ns = self.clock.now_ns();
        rec.error = Some(ErrorDetails::new(
            None,
            kind::RESPONSE_TOO_LARGE,
            format!(
                "response body larger than {} (the limit for a non-streamed response)",
                size(self.limits.body)
            ),
        ));
    }

    /// A whole (non-streamed) body, read at `now`.
    /// The whole body, read at `t`.
    fn take_body(&self, body: &[u8], t: u64, rec: &mut RequestRecord) {
        rec.end_ns = t;
        match self
            .parser
            .parse(body, &mut rec.output_text, &mut rec.reasoning_text)
        {
            Ok(p) => {
                if let Some(err) = p.error {
                    rec.error = Some(ErrorDetails::new(None, kind::SERVER_ERROR, err));
                    return;
                }
                rec.usage = p.usage;
                if p.has_content {
                    rec.content_ns.push(t);
                } else if self.parser.requires_content() {
                    rec.error = Some(empty_response(&self.parser));
                }
                if p.has_output {
                    rec.first_output_ns = Some(t);
                }
            }
            Err(e) => rec.error = Some(ErrorDetails::new(None, kind::INVALID_RESPONSE, e)),
        }
    }
}

/// The hyper client for `https://` servers that accept HTTP/2 only, trusting what `config`
/// does (hyper-rustls sets its ALPN: `h2`, `http/1.1`).
fn hyper_client(config: rustls::ClientConfig, connect_timeout: Duration) -> HyperClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(TokioTimer::new())
        // Reads of at most 4 KiB (hyper's default starts at 8 KiB and adapts): stream
        // events are small, and 10,000 open streams then hold half the buffer memory.
        .http1_read_buf_exact_size(4096)
        .http1_max_headers(h1::MAX_HEADERS)
        // hyper resends a request only when it never started writing it (a pooled
        // connection found closed at once): it provably did not reach the server. A request
        // that was written is never resent; its failure is the record's error.
        .retry_canceled_requests(true)
        .build(connector)
}

/// Reads `body` to its end, or stops once more than `limit` bytes came: `(bytes, complete)`.
async fn collect_capped(
    body: &mut hyper::body::Incoming,
    limit: usize,
) -> Result<(Vec<u8>, bool), hyper::Error> {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > limit {
                return Ok((buf, body.is_end_stream()));
            }
        }
    }
    Ok((buf, true))
}

/// `16 MiB`, `64 KiB`, `100 bytes`.
pub(crate) fn size(n: usize) -> String {
    if n >= 1 << 20 && n & ((1 << 20) - 1) == 0 {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n & ((1 << 10) - 1) == 0 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

fn empty_response(parser: &ResponseParser) -> ErrorDetails {
    let message = match parser {
        ResponseParser::Pointer(p) => {
            format!("the server sent no content: no text at --response-field {p}")
        }
        _ => "the server sent no content: no text, reasoning or tool call in the response"
            .to_string(),
    };
    ErrorDetails::new(None, kind::EMPTY_RESPONSE, message)
}

#[derive(PartialEq)]
enum Flow {
    Continue,
    Failed,
}

/// An SSE response being read: framing, `[DONE]`, and what each event adds to the record.
struct StreamReader {
    framer: SseFramer,
    done: bool,
    /// What the stream's chunks look like around their text.
    shape: ChunkShape,
}

impl StreamReader {
    fn new(max_event: usize) -> Self {
        Self {
            framer: SseFramer::with_max_event(max_event),
            done: false,
            shape: ChunkShape::default(),
        }
    }

    /// Bytes read at `t`. `Failed` when the stream reported an error or sent garbage (the
    /// record then holds the error).
    fn take(
        &mut self,
        parser: &ResponseParser,
        bytes: &[u8],
        t: u64,
        rec: &mut RequestRecord,
    ) -> Flow {
        if self.done {
            return Flow::Continue;
        }
        self.framer.push(bytes);
        self.events(parser, t, rec)
    }

    /// Where the next bytes read go: appended here, then [`Self::take_input`] (the lean
    /// client's body goes straight into the framer, not through a buffer of its own).
    fn input(&mut self) -> &mut Vec<u8> {
        self.framer.input(self.done)
    }

    /// The bytes appended to [`Self::input`], read at `t`; as [`Self::take`].
    fn take_input(&mut self, parser: &ResponseParser, t: u64, rec: &mut RequestRecord) -> Flow {
        if self.done {
            return Flow::Continue;
        }
        self.events(parser, t, rec)
    }

    /// The events now complete, read at `t`.
    fn events(&mut self, parser: &ResponseParser, t: u64, rec: &mut RequestRecord) -> Flow {
        loop {
            let data = match self.framer.next_event() {
                Ok(Some((data, _event))) => data,
                Ok(None) => break,
                Err(e) => {
                    rec.end_ns = t;
                    rec.error = Some(ErrorDetails::new(
                        None,
                        kind::RESPONSE_TOO_LARGE,
                        format!("{e} (the limit for one event)"),
                    ));
                    return Flow::Failed;
                }
            };
            if data == b"[DONE]" {
                self.done = true;
                break;
            }
            let (text, reasoning) = (&mut rec.output_text, &mut rec.reasoning_text);
            match parser.parse_in(&mut self.shape, data, text, reasoning) {
                Ok(p) => {
                    if let Some(err) = p.error {
                        rec.end_ns = t;
                        rec.error = Some(ErrorDetails::new(None, kind::STREAM_ERROR, err));
                        return Flow::Failed;
                    }
                    if p.done {
                        self.done = true;
                    }
                    if p.usage.is_some() {
                        rec.usage = p.usage;
                    }
                    if p.has_content {
                        rec.content_ns.push(t);
                        if p.has_output && rec.first_output_ns.is_none() {
                            rec.first_output_ns = Some(t);
                        }
                    }
                }
                Err(e) => {
                    rec.end_ns = t;
                    rec.error = Some(ErrorDetails::new(None, kind::INVALID_RESPONSE, e));
                    return Flow::Failed;
                }
            }
        }
        Flow::Continue
    }

    /// The body ended at `t`.
    fn finish(&self, parser: &ResponseParser, t: u64, rec: &mut RequestRecord) {
        rec.end_ns = t;
        if !self.done {
            let why = if self.framer.has_partial() {
                "in the middle of an event"
            } else {
                "without `data: [DONE]`"
            };
            rec.error = Some(ErrorDetails::new(
                None,
                kind::STREAM_TRUNCATED,
                format!("stream ended {why}"),
            ));
        } else if rec.content_ns.is_empty() && parser.requires_content() {
            rec.error = Some(empty_response(parser));
        }
    }
}

/// When the bytes an exchange just returned arrived: the kernel's receive stamp of the read
/// that brought them, else now; never before the request started (`start_ns`).
fn arrival(x: &h1::Exchange<'_>, clock: &Clock, start_ns: u64) -> u64 {
    x.last_rx()
        .map_or_else(|| clock.now_ns(), |r| r.at_ns)
        .max(start_ns)
}

/// A non-2xx response: the server's error message when the body carries one.
fn http_error(status: StatusCode, body: &[u8]) -> ErrorDetails {
    let mut msg = String::new();
    let mut reasoning = String::new();
    let message = match parse_response(body, &mut msg, &mut reasoning) {
        Ok(p) if p.error.is_some() => p.error.unwrap_or_default(),
        _ => String::from_utf8_lossy(&body[..body.len().min(300)])
            .trim()
            .to_string(),
    };
    let kind: String = status
        .canonical_reason()
        .unwrap_or("HTTPError")
        .split(|c: char| !c.is_ascii_alphanumeric())
        .collect();
    ErrorDetails::new(Some(status.as_u16()), &kind, message)
}

#[cfg(test)]
mod tests {
    use super::test_server::{
        chunk, delta, last_chunk, response, sse_chunk, sse_head, Reply, TestServer,
    };
    use super::*;
    use crate::metrics::{PhaseKind, Usage};

    const PATH: &str = "/v1/chat/completions";

    fn transport(base_url: &str, timeout: Duration) -> Transport {
        Transport::new(
            &[base_url.to_string()],
            PATH,
            Some("sk-test"),
            &[("x-extra".into(), "1".into())],
            timeout,
            Clock::new(),
            ResponseParser::OpenAi,
            &TlsOptions::default(),
            &Connections::default(),
        )
        .unwrap()
    }

    fn record(streaming: bool) -> RequestRecord {
        RequestRecord {
            phase: PhaseKind::Profiling,
            request_index: 0,
            conversation_index: 0,
            turn_index: 0,
            url_index: 0,
            streaming,
            start_ns: 0,
            scheduled_ns: None,
            ack_ns: None,
            end_ns: 0,
            content_ns: Vec::new(),
            first_output_ns: None,
            output_text: String::new(),
            reasoning_text: String::new(),
            usage: None,
            isl: 3,
            error: None,
            cancelled: false,
            requested_osl: None,
            ids: Default::default(),
            http: Default::default(),
        }
    }

    /// Sends one request through `t` and returns its record.
    async fn send(t: &Transport, streaming: bool, cancel_after: Option<Duration>) -> RequestRecord {
        let mut rec = record(streaming);
        let body = Bytes::from_static(b"{\"messages\":[]}");
        t.send(&mut rec, body, &CancellationToken::new(), cancel_after)
            .await;
        rec
    }

    fn assert_ordered(rec: &RequestRecord) {
        let ack = rec.ack_ns.expect("ack time");
        assert!(rec.start_ns <= ack, "{rec:?}");
        let mut last = ack;
        for &t in &rec.content_ns {
            assert!(last <= t, "{rec:?}");
            last = t;
        }
        assert!(last <= rec.end_ns, "{rec:?}");
    }

    #[tokio::test]
    async fn a_content_length_body_gives_text_usage_and_one_content_time() {
        let body = r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"}}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#;
        let server = TestServer::start(vec![Reply::Send(vec![response(
            "200 OK",
            "application/json",
            body,
        )])])
        .await;
        let t = transport(&server.base_url(), Duration::from_secs(5));
        let rec = send(&t, false, None).await;
        assert_eq!(rec.error, None);
        assert_eq!(rec.output_text, "Hello there");
        assert_eq!(
            rec.usage,
            Some(Usage {
                prompt_tokens: Some(3),
                completion_tokens: Some(2),
                total_tokens: None,
            })
        );
        assert_eq!(rec.content_ns, [rec.end_ns]);
        assert_eq!(rec.first_output_ns, Some(rec.end_ns));
        assert_ordered(&rec);
        // The request on the wire: method, path, auth, extra headers, the body.
        let req = String::from_utf8(server.requests()[0].clone()).unwrap();
        assert!(
            req.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(
            req.contains("\r\nauthorization: Bearer sk-test\r\n"),
            "{req}"
        );
        assert!(
            req.contains("\r\ncontent-type: application/json\r\n"),
            "{req}"
        );
        assert!(req.contains("\r\nx-extra: 1\r\n"), "{req}");
        assert!(
            req.ends_with("content-length: 15\r\n\r\n{\"messages\":[]}"),
            "{req}"
        );
    }

    #[tokio::test]
    async fn a_chunked_sse_stream_assembles_the_text_with_ordered_times() {
        let server = TestServer::start(vec![Reply::Send(vec![
            sse_head(),
            sse_chunk(&delta("Hel")),
            sse_chunk(&delta("lo, ")),
            // Two events in one chunk get the same time.
            [sse_chunk(&delta("wor")), sse_chunk(&delta("ld"))].concat(),
            sse_chunk(r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#),
            sse_chunk("[DONE]"),
            last_chunk(),
        ])])
        .await;
        let t = transport(&server.base_url(), Duration::from_secs(5));
        let rec = send(&t, true, None).await;
        assert_eq!(rec.error, None);
        assert_eq!(rec.output_text, "Hello, world");
        assert_eq!(rec.content_ns.len(), 4, "one time per content event");
        assert_eq!(rec.content_ns[2], rec.content_ns[3]);
        assert_eq!(rec.first_output_ns, Some(rec.content_ns[0]));
        assert_eq!(rec.usage.and_then(|u| u.completion_tokens), Some(4));
        assert_ordered(&rec);
        assert!(!rec.cancelled);
    }

    #[tokio::test]
    async fn an_sse_response_to_a_non_streaming_request_is_read_whole() {
        // `streaming` off: the body is one JSON document, whatever the content type says.
        let server = TestServer::start(vec![Reply::Send(vec![response(
            "200 OK",
            "text/event-stream",
            r#"{"choices":[{"index":0,"message":{"content":"whole"}}]}"#,
        )])])
        .await;
        let t = transport(&server.base_url(), Duration::from_secs(5));
        let rec = send(&t, false, None).await;
        assert_eq!((rec.error, rec.output_text.as_str()), (None, "whole"));
    }

    #[tokio::test]
    async fn http_500_is_an_error_record_with_the_servers_message() {
        let server = TestServer::start(vec![
            Reply::Send(vec![response(
                "500 Internal Server Error",
                "application/json",
                r#"{"error":{"message":"model overloaded","type":"server_error"}}"#,
            )]),
            Reply::Send(vec![response(
                "503 Service Unavailable",
                "text/plain",
                "try later",
            )]),
        ])
        .await;
        let t = transport(&server.base_url(), Duration::from_secs(5));
        let rec = send(&t, true, None).await;
        assert_eq!(
            rec.error,
            Some(ErrorDetails::new(
                Some(500),
                "InternalServerError",
                "model overloaded"
            ))
        );
        assert!(rec.content_ns.is_empty() && rec.output_text.is_empty());
        assert_ordered(&rec);
        // Not JSON: the body itself is the message.
        let rec = send(&t, true, None).await;
        assert_eq!(
            rec.error,
            Some(ErrorDetails::new(
                Some(503),
                "ServiceUnavailable",
                "try later"
            ))
        );
        assert_eq!(
            server.connections(),
            1,
            "an error response keeps the connection"
        );
    }

    #[tokio::test]
    async fn a_connection_closed_mid_stream_is_a_truncated_stream() {
        let server = TestServer::start(vec![Reply::SendAndClose(vec![
            sse_head(),
            sse_chunk(&delta("partial")),
        ])])
        .await;
        let t = transport(&server.base_url(), Duration::from_secs(5));
        let rec = send(&t, true, None).await;
        let err = rec.error.clone().expect("an error");
        assert_eq!((err.code, err.kind.as_str()), (None, "StreamTruncated"));
        assert_eq!(
            err.message,
            "stream cut short: connection closed before message completed"
        );
        assert_eq!(rec.output_text, "partial", "what arrived is kept");
        assert_eq!(rec.content_ns.len(), 1);
        assert_ordered(&rec);
    }

    #[tokio::test]
    async fn a_stream_that_ends_without_done_is_truncated() {
        let server = TestServer::start(vec![Reply::Send(vec![
            sse_head(),
            sse_chunk(&delta("a")),
            last_chunk(),
        ])])
        .await;
        let t = transport(&server.base_url(), Duration::from_secs(5));
        let rec = send(&t, true, None).await;
        assert_eq!(
            rec.error,
            Some(ErrorDetails::new(
                None,
                "StreamTruncated",
                "stream ended without `data: [DONE]`"
            ))
        );
    }

    #[tokio::test]
    async fn an_error_event_in_the_stream_fails_the_request() {
        let server = TestServer::start(vec![Reply::Send(vec![
            sse_head(),
            sse_chunk(&delta("a")),
            sse_chunk(r#"{"error":{"message":"out of memory"}}"#),
            sse_chunk("[DONE]"),
            last_chunk(),
        ])])
        .await;
        let t = transport(&server.base_url(), Duration::from_secs(5));
        let rec = send(&t, true, None).await;
        assert_eq!(
            rec.error,
            Some(ErrorDetails::new(None, "StreamError", "out of memory"))
        );
    }

    #[tokio::test]
    async fn requests_reuse_one_keep_alive_connection() {
        let ok = || {
            vec![
                sse_head(),
                [sse_chunk(&delta("x")), sse_chunk("[DONE]"), last_chunk()].concat(),
            ]
        };
        let server = TestServer::start(vec![
            Reply::Send(ok()),
            Reply::Send(ok()),
            Reply::Send(ok()),
        ])
        .await;
        let t = transport(&server.base_url(), Duration::from_secs(5));
        for _ in 0..3 {
            let rec = send(&t, true, None).await;
            assert_eq!((rec.error, rec.output_text.as_str()), (None, "x"));
        }
        assert_eq!(server.connections(), 1);
        assert_eq!(server.requests().len(), 3);
    }

    #[tokio::test]
    async fn no_answer_in_time_is_a_timeout() {
        let server = TestServer::start(vec![Reply::Silent]).await;
        let t = transport(&server.base_url(), Duration::from_millis(100));
        let rec = send(&t, true, None).await;
        let err = rec.error.expect("an error");
        assert_eq!((err.code, err.kind.as_str()), (None, "RequestTimeout"));
        assert!(!rec.cancelled);
        assert_eq!(rec.ack_ns, None);
        assert!(rec.start_ns <= rec.end_ns);
    }

    #[tokio::test]
    async fn a_cancelled_request_is_error_499() {
        let server = TestServer::start(vec![Reply::Silent, Reply::Silent]).await;
        let t = transport(&server.base_url(), Duration::from_secs(5));
        // --request-cancellation-rate: cancelled a set delay after sending.
        let rec = send(&t, true, Some(Duration::from_millis(20))).await;
        assert!(rec.cancelled);
        assert_eq!(rec.error.map(|e| e.code), Some(Some(499)));
        // The run's cancellation token (the drain's grace period ran out).
        let mut rec = record(true);
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            stop.cancel();
        });
        t.send(&mut rec, Bytes::from_static(b"{}"), &cancel, None)
            .await;
        assert!(rec.cancelled);
        assert_eq!(
            rec.error.map(|e| (e.code, e.kind)),
            Some((Some(499), "RequestCancellationError".to_string()))
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connection_error() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let t = transport(&format!("http://{addr}"), Duration::from_secs(5));
        let rec = send(&t, true, None).await;
        let err = rec.error.expect("an error");
        assert_eq!((err.code, err.kind.as_str()), (None, "ConnectionError"));
        assert_eq!(rec.ack_ns, None);
    }

    fn transport_with(base_url: &str, parser: ResponseParser, limits: Limits) -> Transport {
        Transport::new(
            &[base_url.to_string()],
            PATH,
            None,
            &[],
            Duration::from_secs(10),
            Clock::new(),
            parser,
            &TlsOptions::default(),
            &Connections::default(),
        )
        .unwrap()
        .with_limits(limits)
    }

    fn kind_of(rec: &RequestRecord) -> Option<(Option<u16>, &str)> {
        rec.error.as_ref().map(|e| (e.code, e.kind.as_str()))
    }

    /// A 500 whose body never ends: the first 64 KiB are read for the message, then the
    /// connection is closed (not drained, not reused) and the record is the HTTP error.
    #[tokio::test]
    async fn an_endless_error_body_is_capped_and_its_connection_dropped() {
        let ok = response(
            "200 OK",
            "application/json",
            r#"{"choices":[{"message":{"content":"fine"}}]}"#,
        );
        let server = TestServer::start(vec![
            Reply::Endless(
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\n\
                  transfer-encoding: chunked\r\n\r\n"
                    .to_vec(),
                chunk(&"overloaded ".repeat(300)),
            ),
            Reply::Send(vec![ok]),
        ])
        .await;
        let t = transport(&server.base_url(), Duration::from_secs(10));
        let rec = send(&t, false, None).await;
        assert_eq!(kind_of(&rec), Some((Some(500), "InternalServerError")));
        let msg = &rec.error.as_ref().unwrap().message;
        assert!(msg.starts_with("overloaded overloaded"), "{msg}");
        assert!(msg.len() <= 300, "the message is cut: {msg}");
        let rec = send(&t, false, None).await;
        assert_eq!((rec.error, rec.output_text.as_str()), (None, "fine"));
        assert_eq!(server.connections(), 2, "the endless one was not reused");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_response_too_large() {
        let big = format!(
            r#"{{"choices":[{{"message":{{"content":"{}"}}}}]}}"#,
            "x".repeat(20_000)
        );
        let server = TestServer::start(vec![Reply::Send(vec![response(
            "200 OK",
            "application/json",
            &big,
        )])])
        .await;
        let limits = Limits {
            body: 10_000,
            ..Limits::default()
        };
        let t = transport_with(&server.base_url(), ResponseParser::OpenAi, limits);
        let rec = send(&t, false, None).await;
        assert_eq!(
            rec.error,
            Some(ErrorDetails::new(
                None,
                "ResponseTooLarge",
                "response body larger than 10000 bytes (the limit for a non-streamed response)"
            ))
        );
        assert_eq!(
            format!("{} / {}", size(MAX_BODY), size(MAX_ERROR_BODY)),
            "256 MiB / 64 KiB"
        );
    }

    #[tokio::test]
    async fn an_sse_event_over_the_limit_is_response_too_large() {
        let server = TestServer::start(vec![Reply::Send(vec![
            sse_head(),
            sse_chunk(&delta("a")),
            chunk(&format!("data: {}", "y".repeat(3000))),
            chunk(&"y".repeat(3000)),
            sse_chunk("[DONE]"),
            last_chunk(),
        ])])
        .await;
        let limits = Limits {
            event: 4096,
            ..Limits::default()
        };
        let t = transport_with(&server.base_url(), ResponseParser::OpenAi, limits);
        let rec = send(&t, true, None).await;
        assert_eq!(
            rec.error,
            Some(ErrorDetails::new(
                None,
                "ResponseTooLarge",
                "an SSE event larger than 4 KiB (the limit for one event)"
            ))
        );
        assert_eq!(rec.output_text, "a", "what came before is kept");
        assert_eq!(
            sse::EventTooLarge {
                limit: sse::MAX_EVENT
            }
            .to_string(),
            "an SSE event larger than 16 MiB"
        );
    }

    /// AIPerf counts a response without content as an error: streamed or not, for chat and
    /// completions; reasoning alone is content; embeddings carry none and are fine.
    #[tokio::test]
    async fn a_response_without_content_is_an_empty_response() {
        let usage_only =
            sse_chunk(r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":0}}"#);
        let server = TestServer::start(vec![
            Reply::Send(vec![
                sse_head(),
                [
                    sse_chunk(r#"{"choices":[]}"#),
                    sse_chunk(r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#),
                    usage_only,
                    sse_chunk("[DONE]"),
                    last_chunk(),
                ]
                .concat(),
            ]),
            Reply::Send(vec![response(
                "200 OK",
                "application/json",
                r#"{"choices":[{"message":{"role":"assistant","content":""}}]}"#,
            )]),
            Reply::Send(vec![
                sse_head(),
                [
                    sse_chunk(r#"{"choices":[{"delta":{"reasoning_content":"hmm"}}]}"#),
                    sse_chunk("[DONE]"),
                    last_chunk(),
                ]
                .concat(),
            ]),
            Reply::Send(vec![response(
                "200 OK",
                "application/json",
                r#"{"data":[],"usage":{"prompt_tokens":3}}"#,
            )]),
        ])
        .await;
        let url = server.base_url();
        let t = transport(&url, Duration::from_secs(5));
        let empty = Some(ErrorDetails::new(
            None,
            "EmptyResponse",
            "the server sent no content: no text, reasoning or tool call in the response",
        ));
        let rec = send(&t, true, None).await;
        assert_eq!(rec.error, empty, "streamed");
        assert_eq!(rec.usage.and_then(|u| u.prompt_tokens), Some(3));
        let rec = send(&t, false, None).await;
        assert_eq!(rec.error, empty, "not streamed");
        let rec = send(&t, true, None).await;
        assert_eq!(rec.error, None, "reasoning only is content");
        assert_eq!(rec.reasoning_text, "hmm");
        let t = transport_with(&url, ResponseParser::Embeddings, Limits::default());
        let rec = send(&t, false, None).await;
        assert_eq!(rec.error, None, "embeddings need no text");
    }

    #[tokio::test]
    async fn a_template_response_without_text_names_the_pointer() {
        let server = TestServer::start(vec![Reply::Send(vec![response(
            "200 OK",
            "application/json",
            r#"{"other":"x"}"#,
        )])])
        .await;
        let parser = ResponseParser::Pointer("/generated_text".into());
        let t = transport_with(&server.base_url(), parser, Limits::default());
        let rec = send(&t, false, None).await;
        assert_eq!(
            rec.error,
            Some(ErrorDetails::new(
                None,
                "EmptyResponse",
                "the server sent no content: no text at --response-field /generated_text"
            ))
        );
    }

    /// CR-only line endings (the SSE spec allows `\r`, `\n` and `\r\n`), a `\r\n` split
    /// across reads, and an integral-float usage.
    #[tokio::test]
    async fn cr_line_endings_and_float_usage_are_read() {
        let ev = |d: &str| format!("data: {d}\r\r");
        let server = TestServer::start(vec![Reply::Send(vec![
            sse_head(),
            chunk(&ev(&delta("Hel"))),
            chunk(&format!("data: {}\r", delta("lo"))),
            chunk("\n\r\n"),
            chunk(&ev(
                r#"{"choices":[],"usage":{"prompt_tokens":5.0,"completion_tokens":2.0}}"#,
            )),
            [chunk(&ev("[DONE]")), last_chunk()].concat(),
        ])])
        .await;
        let t = transport(&server.base_url(), Duration::from_secs(5));
        let rec = send(&t, true, None).await;
        assert_eq!(rec.error, None);
        assert_eq!(rec.output_text, "Hello");
        assert_eq!(rec.content_ns.len(), 2);
        assert_eq!(
            rec.usage,
            Some(Usage {
                prompt_tokens: Some(5),
                completion_tokens: Some(2),
                total_tokens: None,
            })
        );
    }

    #[tokio::test]
    async fn a_fractional_usage_fails_the_request_with_a_clear_message() {
        let server = TestServer::start(vec![Reply::Send(vec![
            sse_head(),
            [
                sse_chunk(&delta("a")),
                sse_chunk(r#"{"choices":[],"usage":{"prompt_tokens":5.5}}"#),
                sse_chunk("[DONE]"),
                last_chunk(),
            ]
            .concat(),
        ])])
        .await;
        let t = transport(&server.base_url(), Duration::from_secs(5));
        let rec = send(&t, true, None).await;
        let err = rec.error.expect("an error");
        assert_eq!(err.kind, "InvalidResponse");
        assert!(
            err.message.starts_with(
                "unexpected response (usage token count must be a whole number of tokens, 0 \
                 or more, got 5.5"
            ),
            "{}",
            err.message
        );
    }

    /// The request was written on a reused connection and the server closed it without an
    /// answer: its own error kind, and the server saw the request once.
    #[tokio::test]
    async fn a_connection_closed_after_the_request_is_an_error_not_a_resend() {
        let ok = response(
            "200 OK",
            "application/json",
            r#"{"choices":[{"message":{"content":"fine"}}]}"#,
        );
        let server = TestServer::start(vec![Reply::Send(vec![ok]), Reply::Close]).await;
        let t = transport(&server.base_url(), Duration::from_secs(5));
        assert_eq!(send(&t, false, None).await.error, None);
        let rec = send(&t, false, None).await;
        assert_eq!(
            kind_of(&rec),
            Some((None, "ConnectionClosedBeforeResponse"))
        );
        assert_eq!(rec.ack_ns, None);
        assert_eq!(server.requests().len(), 2);
    }

    #[test]
    fn bad_urls_and_headers_are_refused() {
        let new = |url: &str, headers: &[(String, String)]| {
            Transport::new(
                &[url.to_string()],
                PATH,
                None,
                headers,
                Duration::from_secs(1),
                Clock::new(),
                ResponseParser::OpenAi,
                &TlsOptions::default(),
                &Connections::default(),
            )
            .err()
            .map(|e| e.to_string())
        };
        assert_eq!(new("http://127.0.0.1:1", &[]), None);
        assert!(new("not a url", &[]).unwrap().contains("invalid URL"));
        let bad = [("bad header".to_string(), "v".to_string())];
        assert!(new("http://127.0.0.1:1", &bad)
            .unwrap()
            .starts_with("invalid header: bad header"));
    }

    #[tokio::test]
    async fn a_stream_leaves_a_complete_trace_and_its_ids_on_the_wire() {
        let pieces = vec![
            sse_head(),
            sse_chunk(&delta("Hel")),
            sse_chunk(&delta("lo")),
            [sse_chunk("[DONE]"), last_chunk()].concat(),
        ];
        let wire: usize = pieces.iter().map(Vec::len).sum();
        let server = TestServer::start(vec![Reply::Send(pieces)]).await;
        let t = transport(&server.base_url(), Duration::from_secs(5));
        let mut rec = record(true);
        rec.ids = crate::metrics::RequestIds::new(uuid::Uuid::from_u128(42), true);
        t.send(
            &mut rec,
            Bytes::from_static(b"{}"),
            &CancellationToken::new(),
            None,
        )
        .await;
        assert_eq!(rec.error, None);
        let h = rec.http;
        assert!(h.measured && !h.reused, "{h:?}");
        assert!(
            rec.start_ns <= h.conn_ns
                && h.conn_ns <= h.dns_ns
                && h.dns_ns <= h.connected_ns
                && h.connected_ns <= h.sent_ns
                && h.sent_ns <= h.first_byte_ns
                && h.first_byte_ns <= h.last_byte_ns
                && h.last_byte_ns <= rec.end_ns,
            "{rec:?}"
        );
        assert_eq!(h.bytes_received, wire as u64, "every byte the server wrote");
        assert!(h.chunks_received >= 2, "{h:?}");
        let req = &server.requests()[0];
        assert_eq!(h.bytes_sent, req.len() as u64);
        let req = String::from_utf8(req.clone()).unwrap();
        assert!(
            req.contains(&format!(
                "X-Request-ID: {}\r\n",
                rec.ids.request.hyphenated()
            )),
            "{req}"
        );
        assert!(
            req.contains("X-Correlation-ID: 00000000-0000-0000-0000-00000000002a\r\n"),
            "{req}"
        );
    }

    #[tokio::test]
    async fn a_response_read_in_one_piece_takes_no_time_to_receive() {
        let server = TestServer::start(vec![Reply::Send(vec![response(
            "200 OK",
            "application/json",
            r#"{"choices":[{"index":0,"message":{"content":"hi"}}]}"#,
        )])])
        .await;
        let t = transport(&server.base_url(), Duration::from_secs(5));
        let rec = send(&t, false, None).await;
        assert_eq!(rec.error, None);
        let h = rec.http;
        assert!(h.measured);
        if h.chunks_received == 1 {
            assert_eq!(h.last_byte_ns, h.first_byte_ns, "AIPerf: one chunk, 0 ms");
        }
    }

    /// Every https URL gets the lean client, whatever the reuse strategy (sticky sessions
    /// included), and the HTTP/2 client in reserve.
    #[tokio::test]
    async fn https_urls_take_every_reuse_strategy() {
        for reuse in [
            ConnectionReuseStrategy::Pooled,
            ConnectionReuseStrategy::Never,
            ConnectionReuseStrategy::StickyUserSessions,
        ] {
            let t = Transport::new(
                &[
                    "https://127.0.0.1:1".to_string(),
                    "http://127.0.0.1:1".to_string(),
                ],
                PATH,
                None,
                &[],
                Duration::from_secs(1),
                Clock::new(),
                ResponseParser::OpenAi,
                &TlsOptions::default(),
                &Connections {
                    reuse,
                    ..Connections::default()
                },
            )
            .unwrap();
            assert!(t.hyper.is_some());
            assert!(t
                .routes
                .iter()
                .all(|r| !r.via_hyper.load(Ordering::Relaxed)));
        }
    }
}
