//! A lean HTTP/1.1 client for `http://` URLs: a pool of keep-alive connections per URL, and
//! each exchange driven by the requesting task itself.
//!
//! hyper's pooled client gives every connection its own task and a channel between that task
//! and the caller, so each streamed token costs two task wake-ups, and each connection holds
//! about 25 KB (the channel's first block, an 8 KiB write buffer, read buffers). Here the task
//! that sent the request reads the socket itself: one wake-up per read, one 4 KiB buffer per
//! connection. `https://` URLs (TLS, HTTP/2 by ALPN) still go through hyper.
//!
//! What it speaks: `POST` with a `Content-Length` body; responses with `Content-Length`,
//! `Transfer-Encoding: chunked`, or delimited by the connection closing; interim 1xx responses
//! are skipped. A request on a reused connection that the server had closed meanwhile (the
//! write fails, or the connection ends before any byte of a response) is sent once more on a
//! fresh connection.

use std::io::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use hyper::header::HeaderMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Read size: stream events are small.
const READ_SIZE: usize = 4096;

/// Why an exchange failed. `Connect` failures are `ConnectionError` in the record; the rest
/// are request errors (or a truncated stream, once the body has started).
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("tcp connect error: {0}")]
    Connect(String),
    #[error("{0}")]
    Io(String),
    #[error("connection closed before message completed")]
    Closed,
    #[error("invalid HTTP response: {0}")]
    Invalid(String),
}

impl H1Error {
    pub fn is_connect(&self) -> bool {
        matches!(self, H1Error::Connect(_))
    }
}

fn io(e: std::io::Error) -> H1Error {
    H1Error::Io(e.to_string())
}

/// One `http://` URL: where to connect, the request head, and the idle connections.
pub struct Endpoint {
    /// `host:port` to connect to.
    addr: String,
    /// `POST <path> HTTP/1.1`, host, the run's headers, up to `content-length: `.
    head: Vec<u8>,
    connect_timeout: Duration,
    idle: Mutex<Vec<Conn>>,
}

struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// The request being written (reused).
    out: Vec<u8>,
}

impl Endpoint {
    /// `uri` must be an `http://` URI with a host.
    pub fn new(uri: &hyper::Uri, headers: &HeaderMap, connect_timeout: Duration) -> Self {
        // `host()` keeps an IPv6 address's brackets, so this is a valid socket address.
        let addr = format!(
            "{}:{}",
            uri.host().unwrap_or("localhost"),
            uri.port_u16().unwrap_or(80)
        );
        let authority = uri.authority().map_or(addr.as_str(), |a| a.as_str());
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut head = format!("POST {path} HTTP/1.1\r\nhost: {authority}\r\n").into_bytes();
        for (name, value) in headers {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"content-length: ");
        Self {
            addr,
            head,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    async fn connect(&self) -> Result<Conn, H1Error> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| H1Error::Connect(format!("{}: connect timed out", self.addr)))?
            .map_err(|e| H1Error::Connect(format!("{}: {e}", self.addr)))?;
        stream
            .set_nodelay(true)
            .map_err(|e| H1Error::Connect(e.to_string()))?;
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(READ_SIZE),
            out: Vec::new(),
        })
    }

    fn checkout(&self) -> Option<Conn> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn checkin(&self, conn: Conn) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
    }

    /// Sends the request and reads the response head. The returned exchange reads the body;
    /// dropping it before the body is finished closes the connection.
    pub async fn send(&self, body: &[u8]) -> Result<Exchange<'_>, H1Error> {
        if let Some(conn) = self.checkout() {
            match self.try_send(conn, body).await {
                Ok(x) => return Ok(x),
                // The server closed the idle connection: once more on a fresh one.
                Err((true, _)) => {}
                Err((false, e)) => return Err(e),
            }
        }
        let conn = self.connect().await?;
        self.try_send(conn, body).await.map_err(|(_, e)| e)
    }

    /// `Err((retry, e))`: `retry` when nothing of a response arrived on this connection.
    async fn try_send(&self, mut conn: Conn, body: &[u8]) -> Result<Exchange<'_>, (bool, H1Error)> {
        conn.out.clear();
        conn.out.extend_from_slice(&self.head);
        // Writing into a Vec cannot fail.
        let _ = write!(conn.out, "{}\r\n\r\n", body.len());
        conn.out.extend_from_slice(body);
        if let Err(e) = conn.stream.write_all(&conn.out).await {
            return Err((true, io(e)));
        }
        conn.buf.clear();
        loop {
            let head = match parse_head(&conn.buf) {
                Ok(Some(h)) => h,
                Ok(None) => {
                    if conn.buf.len() >= MAX_HEAD {
                        return Err((false, H1Error::Invalid("response head too large".into())));
                    }
                    match read_more(&mut conn).await {
                        Ok(0) => return Err((conn.buf.is_empty(), H1Error::Closed)),
                        Ok(_) => continue,
                        Err(e) => return Err((conn.buf.is_empty(), e)),
                    }
                }
                Err(e) => return Err((false, e)),
            };
            conn.buf.advance(head.len);
            if (100..200).contains(&head.status) {
                continue; // interim response
            }
            let framing = if head.status == 204 || head.status == 304 {
                Framing::Length(0)
            } else if head.chunked {
                Framing::Chunked(ChunkState::Size)
            } else if let Some(n) = head.content_length {
                Framing::Length(n)
            } else {
                Framing::Close
            };
            let keep_alive = head.keep_alive && !matches!(framing, Framing::Close);
            return Ok(Exchange {
                endpoint: self,
                conn: Some(conn),
                status: head.status,
                event_stream: head.event_stream,
                framing,
                keep_alive,
                finished: false,
            });
        }
    }
}

async fn read_more(conn: &mut Conn) -> Result<usize, H1Error> {
    if conn.buf.capacity() - conn.buf.len() < READ_SIZE / 4 {
        conn.buf.reserve(READ_SIZE);
    }
    conn.stream.read_buf(&mut conn.buf).await.map_err(io)
}

struct Head {
    len: usize,
    status: u16,
    chunked: bool,
    content_length: Option<u64>,
    keep_alive: bool,
    event_stream: bool,
}

fn parse_head(buf: &[u8]) -> Result<Option<Head>, H1Error> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(H1Error::Invalid(e.to_string())),
    };
    let mut head = Head {
        len,
        status: resp.code.unwrap_or(0),
        chunked: false,
        content_length: None,
        keep_alive: resp.version == Some(1),
        event_stream: false,
    };
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse()
                .map_err(|_| H1Error::Invalid(format!("content-length `{value}`")))?;
            head.content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    head.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    head.keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("content-type") {
            head.event_stream = value
                .get(..17)
                .is_some_and(|v| v.eq_ignore_ascii_case("text/event-stream"));
        }
    }
    Ok(Some(head))
}

enum Framing {
    Length(u64),
    Chunked(ChunkState),
    Close,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// A response being read.
pub struct Exchange<'e> {
    endpoint: &'e Endpoint,
    conn: Option<Conn>,
    pub status: u16,
    /// `content-type: text/event-stream`.
    pub event_stream: bool,
    framing: Framing,
    keep_alive: bool,
    finished: bool,
}

impl Exchange<'_> {
    /// Appends the body bytes that can be had with at most one read of the socket to `out`.
    /// Returns `Ok(true)` once the body is complete (`out` may then be empty); `Ok(false)`
    /// means `out` got data and more follows.
    pub async fn read_some(&mut self, out: &mut Vec<u8>) -> Result<bool, H1Error> {
        if self.finished {
            return Ok(true);
        }
        let start = out.len();
        loop {
            let conn = self.conn.as_mut().ok_or(H1Error::Closed)?;
            self.finished = decode(&mut self.framing, &mut conn.buf, out)?;
            if self.finished {
                self.release();
                return Ok(true);
            }
            if out.len() > start {
                return Ok(false);
            }
            if read_more(conn).await? == 0 {
                if matches!(self.framing, Framing::Close) {
                    self.finished = true;
                    self.conn = None;
                    return Ok(true);
                }
                self.conn = None;
                return Err(H1Error::Closed);
            }
        }
    }

    /// The whole (remaining) body.
    pub async fn read_to_end(&mut self, out: &mut Vec<u8>) -> Result<(), H1Error> {
        while !self.read_some(out).await? {}
        Ok(())
    }

    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.keep_alive && conn.buf.is_empty() {
                self.endpoint.checkin(conn);
            }
        }
    }
}

/// Moves decoded body bytes from `buf` to `out`; `Ok(true)` when the body is complete.
fn decode(framing: &mut Framing, buf: &mut BytesMut, out: &mut Vec<u8>) -> Result<bool, H1Error> {
    match framing {
        Framing::Length(left) => {
            let n = (*left).min(buf.len() as u64) as usize;
            out.extend_from_slice(&buf[..n]);
            buf.advance(n);
            *left -= n as u64;
            Ok(*left == 0)
        }
        Framing::Close => {
            out.extend_from_slice(buf);
            buf.clear();
            Ok(false)
        }
        Framing::Chunked(state) => loop {
            match *state {
                ChunkState::Size => {
                    let Some(eol) = memchr::memmem::find(buf, b"\r\n") else {
                        if buf.len() > 1024 {
                            return Err(H1Error::Invalid("chunk size line too long".into()));
                        }
                        return Ok(false);
                    };
                    let line = std::str::from_utf8(&buf[..eol]).unwrap_or("");
                    let hex = line.split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(hex, 16)
                        .map_err(|_| H1Error::Invalid(format!("chunk size `{hex}`")))?;
                    buf.advance(eol + 2);
                    *state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(false);
                    }
                    let n = left.min(buf.len() as u64) as usize;
                    out.extend_from_slice(&buf[..n]);
                    buf.advance(n);
                    *state = if left == n as u64 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n as u64)
                    };
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(false);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(H1Error::Invalid("chunk not followed by CRLF".into()));
                    }
                    buf.advance(2);
                    *state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let Some(eol) = memchr::memmem::find(buf, b"\r\n") else {
                        return Ok(false);
                    };
                    buf.advance(eol + 2);
                    if eol == 0 {
                        return Ok(true);
                    }
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::test_server::{
        chunk, last_chunk, response, sse_chunk, sse_head, Reply, TestServer,
    };

    fn run(framing: Framing, pieces: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut f = framing;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut done = false;
        for p in pieces {
            buf.extend_from_slice(p);
            done = decode(&mut f, &mut buf, &mut out).unwrap();
        }
        (out, done)
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for cut1 in 0..wire.len() {
            for cut2 in cut1..wire.len() {
                let (out, done) = run(
                    Framing::Chunked(ChunkState::Size),
                    &[&wire[..cut1], &wire[cut1..cut2], &wire[cut2..]],
                );
                assert_eq!(out, b"hello, world", "cuts {cut1} {cut2}");
                assert!(done);
            }
        }
    }

    #[test]
    fn chunked_body_is_incomplete_until_the_last_chunk() {
        let (out, done) = run(Framing::Chunked(ChunkState::Size), &[b"3\r\nabc\r\n"]);
        assert_eq!(out, b"abc");
        assert!(!done);
    }

    #[test]
    fn bad_chunk_framing_is_an_error() {
        for wire in [&b"zz\r\nabc\r\n"[..], b"3\r\nabcXY"] {
            let mut f = Framing::Chunked(ChunkState::Size);
            let mut buf = BytesMut::from(wire);
            assert!(
                decode(&mut f, &mut buf, &mut Vec::new()).is_err(),
                "{wire:?}"
            );
        }
    }

    #[test]
    fn content_length_bodies_stop_at_the_length() {
        let (out, done) = run(Framing::Length(5), &[b"he", b"lloEXTRA"]);
        assert_eq!(out, b"hello");
        assert!(done);
    }

    #[test]
    fn endpoints_connect_to_host_and_port_and_name_the_authority() {
        let headers = HeaderMap::new();
        for (url, addr, head) in [
            (
                "http://127.0.0.1:8000/v1/chat",
                "127.0.0.1:8000",
                "POST /v1/chat HTTP/1.1\r\nhost: 127.0.0.1:8000\r\n",
            ),
            (
                "http://localhost/v1/chat",
                "localhost:80",
                "POST /v1/chat HTTP/1.1\r\nhost: localhost\r\n",
            ),
            (
                "http://[::1]:9000/v1/chat?x=1",
                "[::1]:9000",
                "POST /v1/chat?x=1 HTTP/1.1\r\nhost: [::1]:9000\r\n",
            ),
        ] {
            let e = Endpoint::new(&url.parse().unwrap(), &headers, Duration::from_secs(1));
            assert_eq!(e.addr, addr, "{url}");
            assert!(e.head.starts_with(head.as_bytes()), "{url}");
        }
    }

    #[test]
    fn heads_are_parsed_with_their_framing() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\nrest")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.status, h.chunked, h.event_stream, h.keep_alive),
            (200, true, true, true)
        );
        assert_eq!(h.len, 95);
        let h = parse_head(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 12\r\nconnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.status, h.content_length, h.keep_alive),
            (500, Some(12), false)
        );
        let h = parse_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le")
            .unwrap()
            .is_none());
        assert!(parse_head(b"NOT HTTP AT ALL\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").is_err());
    }

    fn endpoint(server: &TestServer, headers: &HeaderMap) -> Endpoint {
        let uri = format!("{}/v1/chat/completions", server.base_url());
        Endpoint::new(&uri.parse().unwrap(), headers, Duration::from_secs(5))
    }

    fn idle(e: &Endpoint) -> usize {
        e.idle.lock().unwrap().len()
    }

    #[tokio::test]
    async fn a_content_length_response_is_read_and_its_connection_reused() {
        let server = TestServer::start(vec![
            Reply::Send(vec![response("200 OK", "application/json", "{\"a\":1}")]),
            // The head and the body in separate writes.
            Reply::Send(vec![
                b"HTTP/1.1 201 Created\r\ncontent-length: 5\r\n\r\n".to_vec(),
                b"he".to_vec(),
                b"llo".to_vec(),
            ]),
        ])
        .await;
        let mut headers = HeaderMap::new();
        headers.insert("x-test", "yes".parse().unwrap());
        let e = endpoint(&server, &headers);

        let mut x = e.send(b"{\"q\":1}").await.unwrap();
        assert_eq!((x.status, x.event_stream), (200, false));
        let mut body = Vec::new();
        x.read_to_end(&mut body).await.unwrap();
        assert_eq!(body, b"{\"a\":1}");
        assert!(
            x.read_some(&mut body).await.unwrap(),
            "finished stays finished"
        );
        drop(x);
        assert_eq!(
            idle(&e),
            1,
            "a finished keep-alive exchange returns its connection"
        );

        let mut x = e.send(b"second").await.unwrap();
        assert_eq!(x.status, 201);
        let mut body = Vec::new();
        x.read_to_end(&mut body).await.unwrap();
        assert_eq!(body, b"hello");
        drop(x);
        assert_eq!(server.connections(), 1, "both requests on one connection");

        let requests = server.requests();
        let first = String::from_utf8(requests[0].clone()).unwrap();
        let addr = server.addr;
        assert_eq!(
            first,
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\nx-test: yes\r\n\
                 content-length: 7\r\n\r\n{{\"q\":1}}"
            )
        );
        assert!(requests[1].ends_with(b"content-length: 6\r\n\r\nsecond"));
    }

    #[tokio::test]
    async fn a_chunked_stream_is_read_piece_by_piece() {
        let server = TestServer::start(vec![Reply::Send(vec![
            sse_head(),
            sse_chunk("one"),
            sse_chunk("two"),
            [chunk("tail"), last_chunk()].concat(),
        ])])
        .await;
        let e = endpoint(&server, &HeaderMap::new());
        let mut x = e.send(b"{}").await.unwrap();
        assert_eq!((x.status, x.event_stream), (200, true));
        let mut all = Vec::new();
        let mut reads = 0;
        loop {
            let mut piece = Vec::new();
            let end = x.read_some(&mut piece).await.unwrap();
            assert!(
                end || !piece.is_empty(),
                "a read that is not the end has data"
            );
            all.extend_from_slice(&piece);
            reads += 1;
            if end {
                break;
            }
            assert!(reads < 100);
        }
        assert_eq!(all, b"data: one\n\ndata: two\n\ntail");
        drop(x);
        assert_eq!(idle(&e), 1);
    }

    #[tokio::test]
    async fn interim_responses_are_skipped_and_close_delimited_bodies_read_to_the_end() {
        let server = TestServer::start(vec![Reply::SendAndClose(vec![
            b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil ".to_vec(),
            b"the end".to_vec(),
        ])])
        .await;
        let e = endpoint(&server, &HeaderMap::new());
        let mut x = e.send(b"{}").await.unwrap();
        assert_eq!(x.status, 200);
        let mut body = Vec::new();
        x.read_to_end(&mut body).await.unwrap();
        assert_eq!(body, b"until the end");
        drop(x);
        assert_eq!(idle(&e), 0, "a close-delimited connection is not reused");
    }

    #[tokio::test]
    async fn connection_close_responses_are_not_pooled() {
        let server = TestServer::start(vec![Reply::Send(vec![
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        ])])
        .await;
        let e = endpoint(&server, &HeaderMap::new());
        let mut x = e.send(b"{}").await.unwrap();
        let mut body = Vec::new();
        x.read_to_end(&mut body).await.unwrap();
        assert_eq!(body, b"ok");
        drop(x);
        assert_eq!(idle(&e), 0);
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_and_the_connection_is_dropped() {
        let server = TestServer::start(vec![Reply::SendAndClose(vec![
            sse_head(),
            sse_chunk("one"),
        ])])
        .await;
        let e = endpoint(&server, &HeaderMap::new());
        let mut x = e.send(b"{}").await.unwrap();
        let mut body = Vec::new();
        let err = x.read_to_end(&mut body).await.unwrap_err();
        assert!(matches!(err, H1Error::Closed), "{err:?}");
        assert!(!err.is_connect());
        assert_eq!(body, b"data: one\n\n", "what came before the cut is kept");
        drop(x);
        assert_eq!(idle(&e), 0);
    }

    #[tokio::test]
    async fn an_exchange_dropped_before_its_end_does_not_return_the_connection() {
        let server = TestServer::start(vec![Reply::Send(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf".to_vec(),
        ])])
        .await;
        let e = endpoint(&server, &HeaderMap::new());
        let x = e.send(b"{}").await.unwrap();
        drop(x);
        assert_eq!(idle(&e), 0);
    }

    #[tokio::test]
    async fn a_pooled_connection_the_server_closed_is_replaced_once() {
        let ok = || response("200 OK", "application/json", "{}");
        let server = TestServer::start(vec![
            // Keep-alive by the headers, but the server closes right after.
            Reply::SendAndClose(vec![ok()]),
            Reply::Send(vec![ok()]),
        ])
        .await;
        let e = endpoint(&server, &HeaderMap::new());
        for _ in 0..2 {
            let mut x = e.send(b"{}").await.unwrap();
            assert_eq!(x.status, 200);
            x.read_to_end(&mut Vec::new()).await.unwrap();
        }
        assert_eq!(server.connections(), 2);
        assert_eq!(server.requests().len(), 2, "the request was sent once more");
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let uri = format!("http://{addr}/v1/chat").parse().unwrap();
        let e = Endpoint::new(&uri, &HeaderMap::new(), Duration::from_secs(5));
        let err = e.send(b"{}").await.err().unwrap();
        assert!(err.is_connect(), "{err:?}");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }

    #[tokio::test]
    async fn a_garbage_response_head_is_invalid() {
        let server =
            TestServer::start(vec![Reply::Send(vec![b"SMTP ready\r\n\r\n".to_vec()])]).await;
        let e = endpoint(&server, &HeaderMap::new());
        let err = e.send(b"{}").await.err().unwrap();
        assert!(matches!(err, H1Error::Invalid(_)), "{err:?}");
    }
}
