//! HTTP transport: pooled keep-alive connections, one request in, one record out.
//!
//! Built on hyper's pooled client directly (HTTP/1.1, and HTTP/2 when TLS negotiates it by
//! ALPN): a request is one pooled connection task and the caller's own task, with no further
//! layers between the socket and the record.
//!
//! The start time is taken just before the request is handed to the connection, and each
//! chunk's time as soon as its bytes come off the socket, before any parsing.

pub mod h1;
pub mod sse;
#[cfg(test)]
mod test_server;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::endpoint::{parse_response, ResponseParser};
use crate::metrics::{ErrorDetails, RequestRecord};
use sse::SseFramer;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("invalid header: {0}")]
    Header(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// Sends requests to one or more base URLs, round-robin chosen by the caller.
pub struct Transport {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    urls: Vec<Uri>,
    /// Per URL: the lean HTTP/1.1 client for `http://`; `None` for `https://` (hyper).
    h1: Vec<Option<h1::Endpoint>>,
    headers: HeaderMap,
    timeout: Duration,
    clock: Clock,
    parser: ResponseParser,
}

impl Transport {
    pub fn new(
        base_urls: &[String],
        path: &str,
        api_key: Option<&str>,
        headers: &[(String, String)],
        timeout: Duration,
        clock: Clock,
        parser: ResponseParser,
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
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout.min(Duration::from_secs(30))));
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| TransportError::Client(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(usize::MAX)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            // Reads of at most 4 KiB (hyper's default starts at 8 KiB and adapts): stream
            // events are small, and 10,000 open streams then hold half the buffer memory.
            .http1_read_buf_exact_size(4096)
            .build(tls);
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
        let h1 = urls
            .iter()
            .map(|u| {
                (u.scheme_str() == Some("http"))
                    .then(|| h1::Endpoint::new(u, &map, connect_timeout))
            })
            .collect();
        Ok(Self {
            client,
            urls,
            h1,
            headers: map,
            timeout,
            clock,
            parser,
        })
    }

    pub fn url_count(&self) -> usize {
        self.urls.len()
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
                        "RequestCancellationError",
                        "request was cancelled before it finished",
                    )
                } else {
                    ErrorDetails::new(
                        None,
                        "RequestTimeout",
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
        match &self.h1[rec.url_index] {
            Some(endpoint) => self.exchange_h1(endpoint, &body, rec).await,
            None => {
                let mut req = hyper::Request::new(Full::new(body));
                *req.method_mut() = Method::POST;
                *req.uri_mut() = self.urls[rec.url_index].clone();
                *req.headers_mut() = self.headers.clone();
                self.exchange_hyper(req, rec).await
            }
        }
    }

    /// `http://`: the lean client, read by this task.
    async fn exchange_h1(&self, endpoint: &h1::Endpoint, body: &[u8], rec: &mut RequestRecord) {
        let mut x = match endpoint.send(body).await {
            Ok(x) => x,
            Err(e) => {
                rec.end_ns = self.clock.now_ns();
                rec.error = Some(send_error(e.is_connect(), &e));
                return;
            }
        };
        rec.ack_ns = Some(self.clock.now_ns());
        let status = StatusCode::from_u16(x.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut buf = Vec::new();
        if !status.is_success() {
            let _ = x.read_to_end(&mut buf).await;
            rec.end_ns = self.clock.now_ns();
            rec.error = Some(http_error(status, &buf));
            return;
        }
        if !(rec.streaming && x.event_stream) {
            match x.read_to_end(&mut buf).await {
                Ok(()) => self.take_body(&buf, rec),
                Err(e) => self.read_failed(rec, &e),
            }
            return;
        }
        let mut stream = StreamReader::new();
        loop {
            buf.clear();
            let end = match x.read_some(&mut buf).await {
                Ok(end) => end,
                Err(e) => {
                    rec.end_ns = self.clock.now_ns();
                    rec.error = Some(truncated(&e));
                    return;
                }
            };
            // Stamp before any parsing: this is when the bytes came off the socket.
            let t = self.clock.now_ns();
            if stream.take(&self.parser, &buf, t, rec) == Flow::Failed {
                return;
            }
            if end {
                break;
            }
        }
        stream.finish(self.clock.now_ns(), rec);
    }

    /// `https://`: hyper's pooled client (TLS, HTTP/2 by ALPN).
    async fn exchange_hyper(&self, req: hyper::Request<Full<Bytes>>, rec: &mut RequestRecord) {
        let resp = match self.client.request(req).await {
            Ok(r) => r,
            Err(e) => {
                rec.end_ns = self.clock.now_ns();
                rec.error = Some(send_error(e.is_connect(), &e));
                return;
            }
        };
        rec.ack_ns = Some(self.clock.now_ns());
        let status = resp.status();
        let (head, mut body) = resp.into_parts();
        if !status.is_success() {
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            rec.end_ns = self.clock.now_ns();
            rec.error = Some(http_error(status, &body));
            return;
        }
        let is_sse = head
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !(rec.streaming && is_sse) {
            match body.collect().await {
                Ok(b) => self.take_body(&b.to_bytes(), rec),
                Err(e) => self.read_failed(rec, &e),
            }
            return;
        }
        let mut stream = StreamReader::new();
        loop {
            let chunk = match body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue, // trailers
                },
                None => break,
                Some(Err(e)) => {
                    rec.end_ns = self.clock.now_ns();
                    rec.error = Some(truncated(&e));
                    return;
                }
            };
            // Stamp before any parsing: this is when the bytes came off the socket.
            let t = self.clock.now_ns();
            if stream.take(&self.parser, &chunk, t, rec) == Flow::Failed {
                return;
            }
        }
        stream.finish(self.clock.now_ns(), rec);
    }

    fn read_failed(&self, rec: &mut RequestRecord, e: &dyn std::error::Error) {
        rec.end_ns = self.clock.now_ns();
        rec.error = Some(ErrorDetails::new(None, "ResponseReadError", error_chain(e)));
    }

    /// A whole (non-streamed) body, read at `now`.
    fn take_body(&self, body: &[u8], rec: &mut RequestRecord) {
        let t = self.clock.now_ns();
        rec.end_ns = t;
        match self
            .parser
            .parse(body, &mut rec.output_text, &mut rec.reasoning_text)
        {
            Ok(p) => {
                if let Some(err) = p.error {
                    rec.error = Some(ErrorDetails::new(None, "ServerError", err));
                    return;
                }
                rec.usage = p.usage;
                if p.has_content {
                    rec.content_ns.push(t);
                }
                if p.has_output {
                    rec.first_output_ns = Some(t);
                }
            }
            Err(e) => rec.error = Some(ErrorDetails::new(None, "InvalidResponse", e)),
        }
    }
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
}

impl StreamReader {
    fn new() -> Self {
        Self {
            framer: SseFramer::new(),
            done: false,
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
        while let Some((data, _event)) = self.framer.next_event() {
            if data == b"[DONE]" {
                self.done = true;
                break;
            }
            match parser.parse(data, &mut rec.output_text, &mut rec.reasoning_text) {
                Ok(p) => {
                    if let Some(err) = p.error {
                        rec.end_ns = t;
                        rec.error = Some(ErrorDetails::new(None, "StreamError", err));
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
                    rec.error = Some(ErrorDetails::new(None, "InvalidResponse", e));
                    return Flow::Failed;
                }
            }
        }
        Flow::Continue
    }

    /// The body ended at `t`.
    fn finish(&self, t: u64, rec: &mut RequestRecord) {
        rec.end_ns = t;
        if !self.done {
            let why = if self.framer.has_partial() {
                "in the middle of an event"
            } else {
                "without `data: [DONE]`"
            };
            rec.error = Some(ErrorDetails::new(
                None,
                "StreamTruncated",
                format!("stream ended {why}"),
            ));
        }
    }
}

fn truncated(e: &dyn std::error::Error) -> ErrorDetails {
    ErrorDetails::new(
        None,
        "StreamTruncated",
        format!("stream cut short: {}", error_chain(e)),
    )
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

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        src = s.source();
    }
    msg
}

/// A request that got no response: no connection, or the exchange failed.
fn send_error(is_connect: bool, e: &dyn std::error::Error) -> ErrorDetails {
    let kind = if is_connect {
        "ConnectionError"
    } else {
        "RequestError"
    };
    ErrorDetails::new(None, kind, error_chain(e))
}

#[cfg(test)]
mod tests {
    use super::test_server::{delta, last_chunk, response, sse_chunk, sse_head, Reply, TestServer};
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
                completion_tokens: Some(2)
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
}
