//! A lean HTTP/1.1 client for `http://` and `https://` URLs: a pool of keep-alive
//! connections per URL, and each exchange driven by the requesting task itself.
//!
//! hyper's pooled client gives every connection its own task and a channel between that task
//! and the caller, so each streamed token costs two task wake-ups, and each connection holds
//! about 25 KB (the channel's first block, an 8 KiB write buffer, read buffers). Here the task
//! that sent the request reads the socket itself: one wake-up per read, one 4 KiB buffer per
//! connection.
//!
//! TLS (`https://`): rustls without an I/O layer of its own. The client reads the ciphertext
//! from the socket itself, with the same stamped read as plain HTTP, hands it to the
//! `rustls::ClientConnection` and takes the plaintext out: a response byte's time is the
//! kernel's stamp of the socket read that completed its TLS record. Writes are sealed into a
//! buffer and written to the socket in one piece, so the transmit stamp still times the
//! request. The handshake is part of the connect (`HttpTrace::tcp_connected_ns` to
//! `connected_ns`). ALPN offers `http/1.1` only: a server that accepts nothing else refuses
//! the handshake with `no_application_protocol` ([`H1Error::Http2Only`]), and the transport
//! sends that URL's requests through hyper (HTTP/2) instead.
//!
//! What it speaks: `POST` with a `Content-Length` body; responses with `Content-Length`,
//! `Transfer-Encoding: chunked`, or delimited by the connection closing; interim 1xx responses
//! are skipped.
//!
//! A request is sent at most once unless it provably never reached the server. An idle
//! connection is checked before it is reused (a non-blocking peek): one the server closed or
//! reset, or one holding stray bytes, is dropped and the next one (or a fresh connection) is
//! tried. If writing the request fails on a reused connection, nothing complete reached the
//! server, and it goes out once more. Once the request is written, a connection that ends
//! before any byte of a response is [`H1Error::ClosedBeforeResponse`], never a resend: the
//! server may have received it (a POST can cost a whole generation).
//!
//! Times: on Linux every connection asks the kernel to stamp what it receives
//! ([`kernel`]), and each read takes the stamp of its bytes ([`Rx`]): the first byte's and
//! every token's time is when the kernel received it, not when this task got to read it, so
//! the client's own scheduling delay stays out of TTFT and ITL. The delay itself (the read
//! lag) is kept as a health signal. Without stamps (`Options::kernel_rx` off, or refused),
//! a read is timed when it returns.
//!
//! Limits: a response head of at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`] headers, chunk
//! trailers of at most [`MAX_TRAILERS`] bytes; the caller caps bodies
//! ([`Exchange::read_to_end`]).

use std::collections::HashMap;
use std::io::Write as _;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use hyper::header::HeaderMap;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use super::source::{self, Sources};
use crate::clock::{kernel, Clock};
use crate::endpoint::ConnectionReuseStrategy;
use crate::metrics::{HttpTrace, RequestIds};

/// Largest response head accepted (64 KiB).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most response headers accepted.
pub const MAX_HEADERS: usize = 256;
/// Largest trailer section of a chunked body accepted (16 KiB).
pub const MAX_TRAILERS: usize = 16 * 1024;
/// Headers parsed on the stack before a response with more gets a heap array.
const STACK_HEADERS: usize = 64;
/// Longest chunk-size line accepted (size and extensions).
const MAX_CHUNK_LINE: usize = 1024;
/// Read size: stream events are small.
const READ_SIZE: usize = 4096;

/// Why an exchange failed. The transport turns each into an error record (`ConnectionError`,
/// `ClientResourceError`, `ConnectionClosedBeforeResponse`, `ResponseTooLarge`, or a request
/// error / truncated stream).
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("tcp connect error: {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tcp connect error: {0}: connect timed out")]
    ConnectTimeout(String),
    #[error(transparent)]
    Io(std::io::Error),
    /// The request was written, then the connection was closed or reset before any byte of a
    /// response.
    #[error("{0}")]
    ClosedBeforeResponse(&'static str),
    #[error("connection closed before message completed")]
    Closed,
    #[error("invalid HTTP response: {0}")]
    Invalid(String),
    /// Past one of the size limits.
    #[error("{0}")]
    TooLarge(String),
    /// The TLS handshake failed (no request was sent). `certificate`: the server's
    /// certificate was refused.
    #[error("TLS handshake with {addr} failed: {reason}")]
    Handshake {
        addr: String,
        reason: String,
        certificate: Option<rustls::CertificateError>,
    },
    /// The server refused the handshake because it speaks no protocol the client offered
    /// (ALPN `http/1.1`): it wants HTTP/2. No request was sent.
    #[error("TLS handshake with {0} failed: the server accepts HTTP/2 only (ALPN)")]
    Http2Only(String),
    /// A TLS failure after the handshake: an alert, a record that is not TLS or does not
    /// decrypt.
    #[error("TLS: {0}")]
    Tls(String),
}

impl H1Error {
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            H1Error::Connect { .. }
                | H1Error::ConnectTimeout(_)
                | H1Error::Handshake { .. }
                | H1Error::Http2Only(_)
        )
    }
}

/// What a rustls error means, in words for the record (`handshake`: before any request).
fn tls_reason(e: &rustls::Error, handshake: bool) -> String {
    use rustls::Error as E;
    match e {
        E::AlertReceived(a) => format!("the server sent the TLS alert {a:?}"),
        E::InvalidMessage(_)
        | E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. }
            if handshake =>
        {
            format!(
                "the server did not answer in TLS ({e}): is it a plain-HTTP server (use \
                 http://)?"
            )
        }
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => {
            format!("the server sent bytes that are not a TLS record ({e})")
        }
        E::DecryptError => "a TLS record from the server failed to decrypt".to_string(),
        E::InvalidCertificate(c) => super::tls::certificate_message(c),
        _ => e.to_string(),
    }
}

/// Messages of [`H1Error::ClosedBeforeResponse`].
const CLOSED_AFTER_SEND: &str = "the server closed the connection after the request was sent, \
     before any response (not sent again: the server may have received it)";
const RESET_AFTER_SEND: &str = "connection reset by the server after the request was sent, \
     before any response (not sent again: the server may have received it)";

/// One `http://` URL: where to connect, the request head, and the idle connections.
pub struct Endpoint {
    /// `host:port` to connect to.
    addr: String,
    /// `POST <path> HTTP/1.1`, host, the run's headers.
    head: Vec<u8>,
    /// `X-Request-ID`, unless the run's headers set it.
    request_id_header: Option<&'static [u8]>,
    /// `X-Correlation-ID` (or `--session-header`), unless the run's headers set it.
    session_header: Option<Vec<u8>>,
    connect_timeout: Duration,
    clock: Clock,
    reuse: ConnectionReuseStrategy,
    /// Ask the kernel to stamp each connection's reads.
    kernel_rx: bool,
    /// The source addresses new connections leave from (`--local-addresses`, or the
    /// automatic spread for loopback targets); `None`: the kernel picks.
    sources: Option<Arc<Sources>>,
    /// `https://`: the TLS configuration and the server's name.
    tls: Option<TlsTarget>,
    /// Idle keep-alive connections (`pooled`).
    idle: Mutex<Vec<Conn>>,
    /// Each conversation's idle connection between its turns (`sticky-user-sessions`).
    sticky: Mutex<HashMap<uuid::Uuid, Conn>>,
}

/// How requests are sent on an [`Endpoint`]: the header naming the conversation, how
/// connections are shared, and the clock the exchange's phases are timed on.
#[derive(Debug, Clone)]
pub struct Options {
    pub session_header: String,
    pub reuse: ConnectionReuseStrategy,
    pub connect_timeout: Duration,
    pub clock: Clock,
    /// Time reads by the kernel's receive stamps (where the kernel gives them).
    pub kernel_rx: bool,
    /// Source addresses for new connections (shared by the run's endpoints, round-robin).
    pub sources: Option<Arc<Sources>>,
    /// TLS for an `https://` URL ([`TlsTarget::new`]); `None`: plain HTTP.
    pub tls: Option<TlsTarget>,
}

/// Where TLS connections of one `https://` URL go: the client configuration (its ALPN set
/// to `http/1.1`) and the name the server's certificate must carry.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl TlsTarget {
    /// For `uri`'s host; `config` is the run's (trust), its ALPN replaced by `http/1.1`.
    pub fn new(uri: &hyper::Uri, mut config: rustls::ClientConfig) -> Result<Self, String> {
        let host = uri.host().unwrap_or("localhost");
        // An IPv6 literal keeps its brackets in the URI.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(bare.to_string())
            .map_err(|e| format!("{host}: not a name TLS can check ({e})"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            name,
        })
    }
}

impl Options {
    /// Pooled connections, `X-Correlation-ID`, a fresh clock, kernel receive stamps.
    pub fn pooled(connect_timeout: Duration) -> Self {
        Self {
            session_header: crate::endpoint::DEFAULT_SESSION_HEADER.to_string(),
            reuse: ConnectionReuseStrategy::Pooled,
            connect_timeout,
            clock: Clock::new(),
            kernel_rx: true,
            sources: None,
            tls: None,
        }
    }
}

/// When a read's bytes arrived, by the kernel's stamp: on the endpoint's clock, and how long
/// they waited in the socket before the read (the read lag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rx {
    pub at_ns: u64,
    pub lag_ns: u64,
}

impl Rx {
    /// This read's arrival, never before the previous read's. A stamp is put on the
    /// endpoint's clock by reading the wall clock and the monotonic clock one after the
    /// other, so two segments the kernel received within a few tens of nanoseconds can map
    /// out of order by that much (which made a response read in two such pieces end before
    /// its first token: a negative ITL of -1e-7 ms).
    fn not_before(self, previous: Option<Rx>) -> Rx {
        match previous {
            Some(p) if p.at_ns > self.at_ns => Rx {
                at_ns: p.at_ns,
                ..self
            },
            _ => self,
        }
    }
}

struct Conn {
    stream: TcpStream,
    /// The kernel stamps this connection's reads, and how it stamps its writes.
    stamped: bool,
    tx: kernel::TxStamps,
    /// Bytes written to the socket since its transmit stamps were turned on (TLS records
    /// and the handshake included): the next write's last byte is at this offset.
    tx_bytes: u64,
    /// A write's transmit stamp was not taken yet (it may still come to the error queue).
    tx_unread: bool,
    /// Bytes read (plaintext) and not yet consumed.
    buf: BytesMut,
    /// The request being written (reused).
    out: Vec<u8>,
    /// `https://`: the TLS session.
    tls: Option<Box<TlsConn>>,
}

/// The TLS side of a connection: the session and its ciphertext, read and to be written.
struct TlsConn {
    session: rustls::ClientConnection,
    /// Ciphertext read and not yet handed to the session (a record header cut short).
    wire: BytesMut,
    /// Ciphertext to write: the sealed request, or the handshake's next flight.
    sealed: Vec<u8>,
    /// The session failed after giving plaintext in the same read: that plaintext is read
    /// first, then this is the next read's error.
    failed: Option<rustls::Error>,
    /// The bytes still to come of a record begun in an earlier read.
    partial: usize,
    /// The server closed the session (`close_notify`): reads end here.
    closed: bool,
}

impl TlsConn {
    /// A session not yet shaken hands, nothing read or to write.
    fn new(session: rustls::ClientConnection) -> Self {
        Self {
            session,
            wire: BytesMut::new(),
            sealed: Vec::new(),
            failed: None,
            partial: 0,
            closed: false,
        }
    }

    /// Hands the ciphertext in `wire` to rustls and appends the plaintext it yields to
    /// `out`. `Ok(false)` once the server closed the session (`close_notify`). A record
    /// header cut short stays in `wire` for the next read to complete.
    fn open(&mut self, out: &mut BytesMut) -> Result<bool, rustls::Error> {
        let mut data = &self.wire[..];
        let mut open = true;
        while !data.is_empty() {
            if self.partial == 0 && data.len() < 5 {
                break;
            }
            // One record at a time (by its header's length), its plaintext taken before the
            // next: a bad record fails alone, after everything before it was delivered, and
            // rustls's buffers never fill up.
            let record = match (self.partial, data) {
                (0, [_, _, _, hi, lo, ..]) => 5 + usize::from(u16::from_be_bytes([*hi, *lo])),
                (left, _) => left.max(1),
            };
            let (mut one, rest) = data.split_at(record.min(data.len()));
            self.partial = record - one.len();
            data = rest;
            while !one.is_empty() {
                match self.session.read_tls(&mut one) {
                    Ok(1..) => {}
                    Ok(0) => {
                        return Err(rustls::Error::General(
                            "the TLS session took no more bytes".into(),
                        ))
                    }
                    Err(e) => return Err(rustls::Error::General(e.to_string())),
                }
            }
            let state = self.session.process_new_packets()?;
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let start = out.len();
                out.resize(start + n, 0);
                if let Err(e) =
                    std::io::Read::read_exact(&mut self.session.reader(), &mut out[start..])
                {
                    return Err(rustls::Error::General(e.to_string()));
                }
            }
            if state.peer_has_closed() {
                open = false;
                self.closed = true;
            }
        }
        let consumed = self.wire.len() - data.len();
        self.wire.advance(consumed);
        Ok(open)
    }

    /// Seals `plain` (and whatever else the session has to send) into `sealed`.
    fn seal(&mut self, plain: &[u8]) -> std::io::Result<()> {
        if !plain.is_empty() {
            std::io::Write::write_all(&mut self.session.writer(), plain)?;
        }
        self.sealed.clear();
        while self.session.wants_write() {
            self.session.write_tls(&mut self.sealed)?;
        }
        Ok(())
    }
}

impl Conn {
    /// An idle connection can carry a request: still open, and nothing unread on it (no
    /// FIN, no RST, no stray bytes such as the excess of a short `Content-Length`). One
    /// non-blocking `recv(MSG_PEEK)`; the socket is non-blocking, so it never waits. Over
    /// TLS what arrived is read instead: session tickets (TLS 1.3 sends them after the
    /// handshake) keep it reusable; plaintext, `close_notify`, an alert or garbage do not.
    fn is_reusable(&mut self) -> bool {
        let sock = socket2::SockRef::from(&self.stream);
        let Some(tls) = self.tls.as_deref_mut() else {
            let mut byte = [MaybeUninit::<u8>::uninit(); 1];
            return match sock.peek(&mut byte) {
                Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                // 0: the server closed it; more: bytes nobody asked for.
                Ok(_) => false,
            };
        };
        loop {
            tls.wire.reserve(READ_SIZE);
            match sock.recv(tls.wire.spare_capacity_mut()) {
                Err(e) => return e.kind() == std::io::ErrorKind::WouldBlock,
                Ok(0) => return false,
                Ok(n) => {
                    // SAFETY: the kernel initialised the next `n` bytes of the spare capacity.
                    unsafe { tls.wire.set_len(tls.wire.len() + n) };
                    let before = self.buf.len();
                    match tls.open(&mut self.buf) {
                        Ok(true) if self.buf.len() == before => continue,
                        _ => return false,
                    }
                }
            }
        }
    }
}

/// A failed attempt: whether the request may have reached the server.
enum Attempt {
    /// Nothing complete was written: the request may go out on another connection.
    Unsent(H1Error),
    Sent(H1Error),
}

impl Endpoint {
    /// `uri` must be an `http://` URI with a host.
    pub fn new(uri: &hyper::Uri, headers: &HeaderMap, opts: Options) -> Self {
        // `host()` keeps an IPv6 address's brackets, so this is a valid socket address.
        let default_port = if opts.tls.is_some() { 443 } else { 80 };
        let addr = format!(
            "{}:{}",
            uri.host().unwrap_or("localhost"),
            uri.port_u16().unwrap_or(default_port)
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
        // The run's own headers (`-H`) win over the generated ids, as in AIPerf.
        let request_id_header =
            (!headers.contains_key("x-request-id")).then_some(&b"X-Request-ID"[..]);
        let session_header = (!headers.contains_key(opts.session_header.as_str()))
            .then(|| opts.session_header.as_bytes().to_vec());
        if opts.kernel_rx {
            kernel::keep_enabled();
        }
        Self {
            addr,
            head,
            request_id_header,
            session_header,
            connect_timeout: opts.connect_timeout,
            clock: opts.clock,
            reuse: opts.reuse,
            kernel_rx: opts.kernel_rx,
            sources: opts.sources,
            tls: opts.tls,
            idle: Mutex::new(Vec::new()),
            sticky: Mutex::new(HashMap::new()),
        }
    }

    /// A new connection: the name resolved (`trace.dns_ns`), then each address tried in
    /// turn until one accepts (`trace.connected_ns`), all within the connect timeout. With
    /// source addresses, the next one in turn is bound first and only the server's
    /// addresses of its family are tried.
    async fn connect(&self, trace: &mut HttpTrace) -> Result<Conn, H1Error> {
        let clock = self.clock;
        let source = self.sources.as_deref().map(Sources::pick);
        let connecting = async {
            let addrs = tokio::net::lookup_host(&self.addr).await?;
            trace.dns_ns = clock.now_ns();
            let mut last = None;
            for a in addrs.filter(|a| source.is_none_or(|s| s.is_ipv4() == a.is_ipv4())) {
                match source::connect(a, source).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    match source {
                        None => "the name resolved to no address".to_string(),
                        Some(s) => format!(
                            "the name resolved to no address of the family of the source \
                             address {s} (--local-addresses)"
                        ),
                    },
                )
            }))
        };
        let stream = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| H1Error::ConnectTimeout(self.addr.clone()))?
            .map_err(|source| H1Error::Connect {
                addr: self.addr.clone(),
                source,
            })?;
        trace.connected_ns = self.clock.now_ns();
        stream
            .set_nodelay(true)
            .map_err(|source| H1Error::Connect {
                addr: self.addr.clone(),
                source,
            })?;
        let stamped = self.kernel_rx && kernel::enable_rx(stream.as_raw_fd());
        let tx = if stamped {
            kernel::enable_tx(stream.as_raw_fd())
        } else {
            kernel::TxStamps::Off
        };
        let mut conn = Conn {
            stream,
            stamped,
            tx,
            tx_bytes: 0,
            tx_unread: false,
            buf: BytesMut::with_capacity(READ_SIZE),
            out: Vec::new(),
            tls: None,
        };
        if let Some(target) = &self.tls {
            trace.tcp_connected_ns = Some(trace.connected_ns);
            let handshake_error = |reason: String| H1Error::Handshake {
                addr: self.addr.clone(),
                reason,
                certificate: None,
            };
            let mut session =
                rustls::ClientConnection::new(target.config.clone(), target.name.clone())
                    .map_err(|e| handshake_error(e.to_string()))?;
            // Requests are sealed whole, whatever their size.
            session.set_buffer_limit(None);
            conn.tls = Some(Box::new(TlsConn::new(session)));
            tokio::time::timeout(self.connect_timeout, self.handshake(&mut conn))
                .await
                .map_err(|_| handshake_error("no answer within the connect timeout".into()))??;
            trace.connected_ns = self.clock.now_ns();
        }
        Ok(conn)
    }

    /// The TLS handshake of a new connection, until the client may send.
    async fn handshake(&self, conn: &mut Conn) -> Result<(), H1Error> {
        let failed = |reason: String| H1Error::Handshake {
            addr: self.addr.clone(),
            reason,
            certificate: None,
        };
        let Conn {
            stream,
            tls,
            buf,
            tx_bytes,
            ..
        } = conn;
        let Some(tls) = tls.as_deref_mut() else {
            return Ok(());
        };
        loop {
            if tls.session.wants_write() {
                tls.seal(&[]).map_err(|e| failed(e.to_string()))?;
                stream
                    .write_all(&tls.sealed)
                    .await
                    .map_err(|e| failed(format!("cannot write to the server: {e}")))?;
                *tx_bytes += tls.sealed.len() as u64;
            }
            if !tls.session.is_handshaking() {
                return Ok(());
            }
            let (n, _) = socket_read(stream, false, &self.clock, &mut tls.wire)
                .await
                .map_err(|e| failed(e.to_string()))?;
            if n == 0 {
                return Err(failed(
                    "the server closed the connection during the handshake".into(),
                ));
            }
            match tls.open(buf) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(failed(
                        "the server closed the session during the handshake".into(),
                    ))
                }
                Err(rustls::Error::AlertReceived(
                    rustls::AlertDescription::NoApplicationProtocol,
                )) => return Err(H1Error::Http2Only(self.addr.clone())),
                Err(e) => {
                    return Err(H1Error::Handshake {
                        addr: self.addr.clone(),
                        reason: tls_reason(&e, true),
                        certificate: match e {
                            rustls::Error::InvalidCertificate(c) => Some(c),
                            _ => None,
                        },
                    })
                }
            }
        }
    }

    /// Opens up to `n` connections into the idle pool ahead of the load (`pooled` only; the
    /// other strategies open theirs per request or conversation). Connections that fail
    /// are left out: the requests open their own then, and report the failure. Returns how
    /// many are idle now.
    pub async fn preconnect(&self, n: usize) -> usize {
        if self.reuse != ConnectionReuseStrategy::Pooled {
            return 0;
        }
        let opened = futures_util::future::join_all(
            (0..n).map(|_| async { self.connect(&mut HttpTrace::default()).await.ok() }),
        )
        .await;
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.extend(opened.into_iter().flatten());
        idle.len()
    }

    /// An idle connection for this request: the pool's (`pooled`), the conversation's own
    /// (`sticky-user-sessions`), never one for `never`.
    fn checkout(&self, ids: &RequestIds) -> Option<Conn> {
        match self.reuse {
            ConnectionReuseStrategy::Pooled => {
                self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
            }
            ConnectionReuseStrategy::Never => None,
            ConnectionReuseStrategy::StickyUserSessions => self
                .sticky
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&ids.correlation),
        }
    }

    /// A finished keep-alive connection goes back for the next request: to the pool, or
    /// kept for the conversation's next turn; otherwise it is closed.
    fn checkin(&self, conn: Conn, session: Session) {
        match self.reuse {
            ConnectionReuseStrategy::Pooled => self
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn),
            ConnectionReuseStrategy::Never => {}
            ConnectionReuseStrategy::StickyUserSessions => {
                if !session.last_turn {
                    self.sticky
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(session.correlation, conn);
                }
            }
        }
    }

    /// The conversation `correlation` ended early (a failed turn): its kept connection, if
    /// any, is closed.
    pub fn end_session(&self, correlation: &uuid::Uuid) {
        if self.reuse == ConnectionReuseStrategy::StickyUserSessions {
            self.sticky
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(correlation);
        }
    }

    /// [`Endpoint::send_traced`] with nil ids and no trace kept (tests).
    #[cfg(test)]
    pub async fn send(&self, body: &[u8]) -> Result<Exchange<'_>, H1Error> {
        let mut trace = HttpTrace::default();
        self.send_traced(body, &RequestIds::default(), &mut trace)
            .await
    }

    /// Sends the request (with its `X-Request-ID` and conversation header) and reads the
    /// response head. The returned exchange reads the body; dropping it before the body is
    /// finished closes the connection. `trace` gets the phases up to the first response
    /// byte, the bytes written and the bytes read so far (the exchange counts the rest).
    pub async fn send_traced(
        &self,
        body: &[u8],
        ids: &RequestIds,
        trace: &mut HttpTrace,
    ) -> Result<Exchange<'_>, H1Error> {
        while let Some(mut conn) = self.checkout(ids) {
            if !conn.is_reusable() {
                continue; // closed, reset or dirty: dropped
            }
            let now = self.clock.now_ns();
            (trace.conn_ns, trace.dns_ns, trace.connected_ns) = (now, now, now);
            trace.reused = true;
            trace.tcp_connected_ns = None;
            match self.try_send(conn, body, ids, trace).await {
                Ok(x) => return Ok(x),
                // The write failed: nothing complete reached the server.
                Err(Attempt::Unsent(_)) => continue,
                Err(Attempt::Sent(e)) => return Err(e),
            }
        }
        trace.conn_ns = self.clock.now_ns();
        trace.reused = false;
        trace.tcp_connected_ns = None;
        let conn = self.connect(trace).await?;
        self.try_send(conn, body, ids, trace)
            .await
            .map_err(|a| match a {
                Attempt::Unsent(e) | Attempt::Sent(e) => e,
            })
    }

    async fn try_send(
        &self,
        mut conn: Conn,
        body: &[u8],
        ids: &RequestIds,
        trace: &mut HttpTrace,
    ) -> Result<Exchange<'_>, Attempt> {
        conn.out.clear();
        conn.out.extend_from_slice(&self.head);
        let mut id = uuid::Uuid::encode_buffer();
        if let Some(name) = self.request_id_header {
            conn.out.extend_from_slice(name);
            conn.out.extend_from_slice(b": ");
            conn.out
                .extend_from_slice(ids.request.hyphenated().encode_lower(&mut id).as_bytes());
            conn.out.extend_from_slice(b"\r\n");
        }
        if let Some(name) = &self.session_header {
            conn.out.extend_from_slice(name);
            conn.out.extend_from_slice(b": ");
            conn.out.extend_from_slice(
                ids.correlation
                    .hyphenated()
                    .encode_lower(&mut id)
                    .as_bytes(),
            );
            conn.out.extend_from_slice(b"\r\n");
        }
        // Writing into a Vec cannot fail.
        let _ = write!(conn.out, "content-length: {}\r\n\r\n", body.len());
        conn.out.extend_from_slice(body);
        // A stamp of an earlier request's write, if one came late, is not this one's.
        trace.kernel_sent_ns = None;
        if conn.tx_unread && conn.tx == kernel::TxStamps::Unkeyed {
            // (Keyed stamps need no clearing: a write's own is found by its offset.)
            kernel::take_tx(conn.stream.as_raw_fd(), None);
        }
        // Over TLS the request is sealed whole first; then written piece by piece to count
        // the socket writes (usually one).
        let Conn {
            stream,
            out,
            tls,
            tx_bytes,
            ..
        } = &mut conn;
        let wire: &[u8] = match tls.as_deref_mut() {
            None => out,
            Some(t) => {
                // Sealing only fails past a buffer limit, and there is none.
                if let Err(e) = t.seal(out) {
                    return Err(Attempt::Unsent(H1Error::Io(e)));
                }
                &t.sealed
            }
        };
        let mut written = 0;
        trace.chunks_sent = 0;
        while written < wire.len() {
            match stream.write(&wire[written..]).await {
                Ok(0) => {
                    return Err(Attempt::Unsent(H1Error::Io(
                        std::io::ErrorKind::WriteZero.into(),
                    )))
                }
                Ok(n) => {
                    written += n;
                    *tx_bytes += n as u64;
                    trace.chunks_sent += 1;
                }
                Err(e) => return Err(Attempt::Unsent(H1Error::Io(e))),
            }
        }
        trace.sent_ns = self.clock.now_ns();
        conn.tx_unread = conn.tx != kernel::TxStamps::Off;
        self.take_sent_stamp(&mut conn, trace);
        // The HTTP bytes (without the TLS framing), as over plain HTTP.
        trace.bytes_sent = conn.out.len() as u64;
        (trace.bytes_received, trace.chunks_received) = (0, 0);
        (trace.kernel_reads, trace.read_lag_max_ns) = (0, 0);
        let mut last_rx = None;
        conn.buf.clear();
        loop {
            let head = match parse_head(&conn.buf) {
                Ok(Some(h)) => h,
                Ok(None) => {
                    if conn.buf.len() >= MAX_HEAD {
                        return Err(Attempt::Sent(H1Error::TooLarge(format!(
                            "response head larger than {} KiB",
                            MAX_HEAD >> 10
                        ))));
                    }
                    let nothing_yet = conn.buf.is_empty();
                    let read = read_more(&mut conn, &self.clock).await;
                    if let Ok((n @ 1.., rx)) = read {
                        if trace.chunks_received == 0 {
                            trace.first_byte_ns =
                                rx.map_or_else(|| self.clock.now_ns(), |r| r.at_ns);
                        }
                        trace.bytes_received += n as u64;
                        trace.chunks_received += 1;
                        if let Some(r) = rx {
                            trace.kernel_reads += 1;
                            trace.read_lag_max_ns = trace.read_lag_max_ns.max(r.lag_ns);
                            last_rx = Some(r.not_before(last_rx));
                        }
                    }
                    let read = read.map(|(n, _)| n);
                    match read {
                        Ok(0) if nothing_yet => {
                            return Err(Attempt::Sent(H1Error::ClosedBeforeResponse(
                                CLOSED_AFTER_SEND,
                            )))
                        }
                        Ok(0) => return Err(Attempt::Sent(H1Error::Closed)),
                        Ok(_) => continue,
                        Err(H1Error::Io(e)) if nothing_yet && is_reset(&e) => {
                            return Err(Attempt::Sent(H1Error::ClosedBeforeResponse(
                                RESET_AFTER_SEND,
                            )))
                        }
                        Err(e) => return Err(Attempt::Sent(e)),
                    }
                }
                Err(e) => return Err(Attempt::Sent(e)),
            };
            if trace.kernel_sent_ns.is_none() {
                // Not queued by the end of the write (a device that stamps later): by now.
                self.take_sent_stamp(&mut conn, trace);
            }
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
                session: Session {
                    correlation: ids.correlation,
                    last_turn: ids.last_turn,
                },
                bytes_received: trace.bytes_received,
                reads: trace.chunks_received,
                kernel_reads: trace.kernel_reads,
                read_lag_max_ns: trace.read_lag_max_ns,
                last_rx,
            });
        }
    }
}

impl Endpoint {
    /// The kernel's transmit stamp of the request just written, on this endpoint's clock,
    /// into `trace.kernel_sent_ns` (when the connection has transmit stamps and one is
    /// queued).
    fn take_sent_stamp(&self, conn: &mut Conn, trace: &mut HttpTrace) {
        if !conn.tx_unread {
            return;
        }
        // The offset of the request's last byte (wrapping, as the kernel's 32-bit key does).
        let key =
            (conn.tx == kernel::TxStamps::Keyed).then(|| conn.tx_bytes.wrapping_sub(1) as u32);
        if let Some(s) = kernel::take_tx(conn.stream.as_raw_fd(), key) {
            let now = self.clock.now_ns();
            trace.kernel_sent_ns = Some(now - kernel::lag_ns(s).min(now));
            conn.tx_unread = false;
        }
    }
}

/// The peer reset or aborted the connection.
fn is_reset(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe)
}

/// One read into the connection's buffer: the bytes read (0 at the end of the stream) and,
/// on a stamped connection, when the kernel received them. Over TLS, socket reads go on
/// until one completes a record with plaintext in it (or the session ends): the bytes are
/// that plaintext, and their time is the stamp of that last read.
async fn read_more(conn: &mut Conn, clock: &Clock) -> Result<(usize, Option<Rx>), H1Error> {
    let Some(tls) = conn.tls.as_deref_mut() else {
        return socket_read(&conn.stream, conn.stamped, clock, &mut conn.buf).await;
    };
    if let Some(e) = tls.failed.take() {
        return Err(H1Error::Tls(tls_reason(&e, false)));
    }
    if tls.closed {
        return Ok((0, None));
    }
    loop {
        let (n, rx) = socket_read(&conn.stream, conn.stamped, clock, &mut tls.wire).await?;
        if n == 0 {
            // A close without `close_notify` ends the stream too: the HTTP framing tells
            // whether the response was complete.
            return Ok((0, rx));
        }
        let before = conn.buf.len();
        let open = match tls.open(&mut conn.buf) {
            Ok(open) => open,
            Err(e) if conn.buf.len() > before => {
                tls.failed = Some(e);
                true
            }
            Err(e) => return Err(H1Error::Tls(tls_reason(&e, false))),
        };
        let got = conn.buf.len() - before;
        if got > 0 || !open {
            return Ok((got, rx));
        }
    }
}

/// One read of the socket into `buf` (at least a quarter of [`READ_SIZE`] free): the bytes
/// read, and with `stamped` the kernel's receive stamp of them.
///
/// A read that filled less than the room it had emptied the socket's queue, so the socket's
/// readiness is cleared with it, as tokio's own `poll_read` does: the next read waits for the
/// reactor's next event instead of first making a system call that finds nothing. Bytes that
/// arrive after the read raise a new edge, and tokio clears readiness only if no event came
/// since the one this read answered.
async fn socket_read(
    stream: &TcpStream,
    stamped: bool,
    clock: &Clock,
    buf: &mut BytesMut,
) -> Result<(usize, Option<Rx>), H1Error> {
    if buf.capacity() - buf.len() < READ_SIZE / 4 {
        buf.reserve(READ_SIZE);
    }
    let fd = stream.as_raw_fd();
    loop {
        stream.readable().await.map_err(H1Error::Io)?;
        let spare = buf.spare_capacity_mut();
        let room = spare.len();
        let mut got = None;
        let res = stream.try_io(Interest::READABLE, || {
            let (n, stamp) = if stamped {
                kernel::recv(fd, spare)?
            } else {
                (socket2::SockRef::from(stream).recv(spare)?, None)
            };
            got = Some((n, stamp));
            if n > 0 && n < room {
                // Drained: `try_io` clears the readiness on `WouldBlock`.
                Err(std::io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        if let Some((n, stamp)) = got {
            // SAFETY: the kernel initialised the first `n` bytes of the spare capacity.
            unsafe { buf.set_len(buf.len() + n) };
            let rx = stamp.map(|s| {
                let now = clock.now_ns();
                let lag_ns = kernel::lag_ns(s).min(now);
                Rx {
                    at_ns: now - lag_ns,
                    lag_ns,
                }
            });
            return Ok((n, rx));
        }
        match res {
            // (A read that succeeded left its result in `got`.)
            Ok(()) => continue,
            // Readiness was stale: `try_io` cleared it; wait for the next.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                #[cfg(test)]
                EMPTY_READS.with(|c| c.set(c.get() + 1));
                continue;
            }
            Err(e) => return Err(H1Error::Io(e)),
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Reads on this thread that found the socket empty (its readiness was stale).
    static EMPTY_READS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

struct Head {
    len: usize,
    status: u16,
    chunked: bool,
    content_length: Option<u64>,
    keep_alive: bool,
    event_stream: bool,
}

/// Parses a response head; `Ok(None)` until it is complete. Up to [`STACK_HEADERS`] headers
/// on the stack; a response with more is parsed again with room for [`MAX_HEADERS`].
fn parse_head(buf: &[u8]) -> Result<Option<Head>, H1Error> {
    let mut headers = [httparse::EMPTY_HEADER; STACK_HEADERS];
    match parse_head_in(buf, &mut headers) {
        Err(HeadError::Parse(httparse::Error::TooManyHeaders)) => {
            let mut headers = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
            parse_head_in(buf, &mut headers).map_err(|e| match e {
                HeadError::Parse(httparse::Error::TooManyHeaders) => {
                    H1Error::TooLarge(format!("response has more than {MAX_HEADERS} headers"))
                }
                e => e.into(),
            })
        }
        r => r.map_err(H1Error::from),
    }
}

enum HeadError {
    Parse(httparse::Error),
    Other(H1Error),
}

impl From<HeadError> for H1Error {
    fn from(e: HeadError) -> Self {
        match e {
            HeadError::Parse(e) => H1Error::Invalid(e.to_string()),
            HeadError::Other(e) => e,
        }
    }
}

fn parse_head_in<'b>(
    buf: &'b [u8],
    headers: &mut [httparse::Header<'b>],
) -> Result<Option<Head>, HeadError> {
    let mut resp = httparse::Response::new(headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HeadError::Parse(e)),
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
            let n = value.parse().map_err(|_| {
                HeadError::Other(H1Error::Invalid(format!("content-length `{value}`")))
            })?;
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
    /// In the trailer section, this many bytes of it consumed.
    Trailers(usize),
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
    session: Session,
    /// Bytes read from the socket for this exchange (head included), and the reads that
    /// returned data.
    bytes_received: u64,
    reads: u32,
    /// Reads with a kernel stamp, the longest read lag, and the last stamped read.
    kernel_reads: u32,
    read_lag_max_ns: u64,
    last_rx: Option<Rx>,
}

/// Which conversation an exchange belongs to (where a sticky connection goes back).
#[derive(Clone, Copy)]
struct Session {
    correlation: uuid::Uuid,
    last_turn: bool,
}

impl Exchange<'_> {
    /// Bytes read from the socket so far (head and body), and the reads that returned data.
    pub fn received(&self) -> (u64, u32) {
        (self.bytes_received, self.reads)
    }

    /// When the bytes of the last read arrived by the kernel's stamp (`None` when the read
    /// carried none): the time of whatever [`Exchange::read_some`] returned, which came in
    /// that read or an earlier one.
    pub fn last_rx(&self) -> Option<Rx> {
        self.last_rx
    }

    /// Reads that carried a kernel stamp, and the longest read lag among them (ns).
    pub fn stamped(&self) -> (u32, u64) {
        (self.kernel_reads, self.read_lag_max_ns)
    }

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
            let (n, rx) = read_more(conn, &self.endpoint.clock).await?;
            self.bytes_received += n as u64;
            self.reads += u32::from(n > 0);
            if let Some(r) = rx.filter(|_| n > 0) {
                self.kernel_reads += 1;
                self.read_lag_max_ns = self.read_lag_max_ns.max(r.lag_ns);
                self.last_rx = Some(r.not_before(self.last_rx));
            }
            if n == 0 {
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

    /// The whole (remaining) body, or stops once `out` holds more than `limit` bytes:
    /// `Ok(true)` when the body is complete, `Ok(false)` when it stopped at the limit (the
    /// exchange is then unfinished, and its connection is closed when it is dropped).
    pub async fn read_to_end(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<bool, H1Error> {
        loop {
            if self.read_some(out).await? {
                return Ok(true);
            }
            if out.len() > limit {
                return Ok(false);
            }
        }
    }

    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            let tls_ok = conn.tls.as_ref().is_none_or(|t| t.failed.is_none());
            if self.keep_alive && conn.buf.is_empty() && tls_ok {
                self.endpoint.checkin(conn, self.session);
            }
        }
    }
}

/// Where the first `\r\n` in `buf` starts. (As `memmem::find(buf, b"\r\n")`, without
/// building a substring searcher for every chunk line: a stream has one per token.)
#[inline]
fn find_crlf(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'\n', &buf[from..]) {
        let at = from + i;
        if at > 0 && buf[at - 1] == b'\r' {
            return Some(at - 1);
        }
        from = at + 1;
    }
    None
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
                    let Some(eol) = find_crlf(buf) else {
                        if buf.len() > MAX_CHUNK_LINE {
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
                        ChunkState::Trailers(0)
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
                ChunkState::Trailers(seen) => {
                    let line = find_crlf(buf).map(|eol| eol + 2);
                    if seen + line.unwrap_or(buf.len()) > MAX_TRAILERS {
                        return Err(H1Error::TooLarge(format!(
                            "chunked body trailers larger than {} KiB",
                            MAX_TRAILERS >> 10
                        )));
                    }
                    let Some(line) = line else {
                        return Ok(false);
                    };
                    buf.advance(line);
                    if line == 2 {
                        return Ok(true);
                    }
                    *state = ChunkState::Trailers(seen + line);
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
    use bytes::BufMut;

    #[test]
    fn find_crlf_finds_what_a_substring_search_finds() {
        let cases: &[&[u8]] = &[
            b"",
            b"\r",
            b"\n",
            b"\r\n",
            b"a\r\n",
            b"\n\r\n",
            b"5;x\nq\r\nrest\r\n",
            b"ab\rc\nd\r\r\n",
            b"no end\r",
            b"\n\n\n",
        ];
        for c in cases {
            assert_eq!(find_crlf(c), memchr::memmem::find(c, b"\r\n"), "{c:?}");
        }
    }

    /// A client session (no verification) and a server session, handshake done in memory.
    fn tls_pair() -> (TlsConn, rustls::ServerConnection) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        let mut server = rustls::ServerConnection::new(Arc::new(server)).unwrap();
        let client = crate::transport::tls::client_config(&crate::transport::TlsOptions {
            ca_files: Vec::new(),
            insecure: true,
        })
        .unwrap();
        let target = TlsTarget::new(&"https://localhost/".parse().unwrap(), client).unwrap();
        let session = rustls::ClientConnection::new(target.config, target.name).unwrap();
        let mut c = TlsConn::new(session);
        let mut plain = BytesMut::new();
        while c.session.is_handshaking()
            || c.session.wants_write()
            || server.is_handshaking()
            || server.wants_write()
        {
            c.seal(&[]).unwrap();
            let mut from_client = &c.sealed[..];
            while !from_client.is_empty() {
                server.read_tls(&mut from_client).unwrap();
            }
            server.process_new_packets().unwrap();
            while server.wants_write() {
                server.write_tls(&mut (&mut c.wire).writer()).unwrap();
            }
            c.open(&mut plain).unwrap();
        }
        assert!(plain.is_empty());
        (c, server)
    }

    /// What the server seals of `pieces`, one TLS record per piece.
    fn sealed(server: &mut rustls::ServerConnection, pieces: &[&[u8]]) -> Vec<u8> {
        let mut wire = Vec::new();
        for p in pieces {
            std::io::Write::write_all(&mut server.writer(), p).unwrap();
            while server.wants_write() {
                server.write_tls(&mut wire).unwrap();
            }
        }
        wire
    }

    /// TLS records cut anywhere across socket reads give the same plaintext, none lost or
    /// doubled; a read that completes no record gives none.
    #[test]
    fn tls_records_split_across_reads_give_their_plaintext_once() {
        let pieces: [&[u8]; 3] = [
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"data: one\n\n",
            b"data: two\n\n",
        ];
        let want: Vec<u8> = pieces.concat();
        let (_, mut server) = tls_pair();
        let wire = sealed(&mut server, &pieces);
        for cut in [1, 3, 5, 7, 40, wire.len() / 2, wire.len() - 1] {
            let (mut c, mut server) = tls_pair();
            let wire = sealed(&mut server, &pieces);
            let mut plain = BytesMut::new();
            for part in [&wire[..cut], &wire[cut..]] {
                c.wire.extend_from_slice(part);
                assert!(c.open(&mut plain).unwrap());
            }
            assert_eq!(&plain[..], &want[..], "cut at {cut}");
            assert_eq!(c.partial, 0);
        }
        assert!(wire.len() > want.len(), "sealed: {} bytes", wire.len());
    }

    /// A valid record and garbage in one read: the record's plaintext comes out, then the
    /// error; `close_notify` ends the session.
    #[test]
    fn a_bad_record_fails_after_the_good_ones_and_close_notify_closes() {
        let (mut c, mut server) = tls_pair();
        let mut wire = sealed(&mut server, &[b"first"]);
        wire.extend_from_slice(b"GARBAGE, NOT A RECORD");
        c.wire.extend_from_slice(&wire);
        let mut plain = BytesMut::new();
        let err = c.open(&mut plain).unwrap_err();
        assert_eq!(&plain[..], b"first");
        assert!(
            tls_reason(&err, false).starts_with("the server sent bytes that are not a TLS record"),
            "{err:?}"
        );

        let (mut c, mut server) = tls_pair();
        let mut wire = sealed(&mut server, &[b"last"]);
        server.send_close_notify();
        server.write_tls(&mut wire).unwrap();
        c.wire.extend_from_slice(&wire);
        let mut plain = BytesMut::new();
        assert!(!c.open(&mut plain).unwrap(), "closed");
        assert_eq!(&plain[..], b"last");
        assert!(c.closed);
    }

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
    fn a_read_never_arrives_before_the_one_before_it() {
        let rx = |at_ns, lag_ns| Rx { at_ns, lag_ns };
        // Mapped 3 ns early: it arrives with the previous read, keeping its own lag.
        assert_eq!(rx(997, 40).not_before(Some(rx(1000, 10))), rx(1000, 40));
        assert_eq!(rx(1005, 40).not_before(Some(rx(1000, 10))), rx(1005, 40));
        assert_eq!(rx(5, 0).not_before(None), rx(5, 0));
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
            let e = Endpoint::new(
                &url.parse().unwrap(),
                &headers,
                Options::pooled(Duration::from_secs(1)),
            );
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
        Endpoint::new(
            &uri.parse().unwrap(),
            headers,
            Options::pooled(Duration::from_secs(5)),
        )
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
        assert!(x.read_to_end(&mut body, usize::MAX).await.unwrap());
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
        assert!(x.read_to_end(&mut body, usize::MAX).await.unwrap());
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
                 X-Request-ID: 00000000-0000-0000-0000-000000000000\r\n\
                 X-Correlation-ID: 00000000-0000-0000-0000-000000000000\r\n\
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

    /// A read that drains the socket clears its readiness, so the next read waits for the
    /// next bytes instead of first finding the socket empty (a wasted system call per read).
    /// Every piece still arrives, stamped or not.
    #[tokio::test]
    async fn a_read_that_drains_the_socket_waits_for_the_next_bytes() {
        let pieces: Vec<String> = (0..20).map(|i| format!("piece {i}")).collect();
        for kernel_rx in [true, false] {
            let mut script = vec![sse_head()];
            script.extend(pieces.iter().map(|p| sse_chunk(p)));
            script.push(last_chunk());
            let server = TestServer::start(vec![Reply::Send(script)]).await;
            let opts = Options {
                kernel_rx,
                ..Options::pooled(Duration::from_secs(5))
            };
            let e = endpoint_with(&server, &HeaderMap::new(), opts);
            EMPTY_READS.with(|c| c.set(0));
            let mut x = e.send(b"{}").await.unwrap();
            let mut body = Vec::new();
            while !x.read_some(&mut body).await.unwrap() {}
            let want: String = pieces.iter().map(|p| format!("data: {p}\n\n")).collect();
            assert_eq!(
                String::from_utf8(body).unwrap(),
                want,
                "kernel_rx {kernel_rx}"
            );
            // The server pauses 2 ms between pieces: each came to an empty socket.
            assert!(x.received().1 >= 2, "{:?}", x.received());
            assert_eq!(EMPTY_READS.with(|c| c.get()), 0, "kernel_rx {kernel_rx}");
        }
    }

    /// A client that reads late (its thread blocked here) still gets each read's bytes timed
    /// when the kernel received them, and learns how long they waited (the read lag);
    /// without kernel stamps the reads carry none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_carry_the_kernels_receive_time_not_the_late_read() {
        let script = || {
            vec![Reply::Send(vec![
                sse_head(),
                sse_chunk("one"),
                [chunk("two"), last_chunk()].concat(),
            ])]
        };
        let server = TestServer::start(script()).await;
        let e = endpoint(&server, &HeaderMap::new());
        let mut trace = HttpTrace::default();
        let mut x = e
            .send_traced(b"{}", &RequestIds::default(), &mut trace)
            .await
            .unwrap();
        let head = x.last_rx().expect("the head's read is stamped");
        // Everything arrives while this thread sleeps (the server runs on the other worker).
        std::thread::sleep(Duration::from_millis(60));
        let before_reading = e.clock.now_ns();
        let mut body = Vec::new();
        // The rest came while this thread slept: one read may take it all.
        let mut end = x.read_some(&mut body).await.unwrap();
        let rx = x.last_rx().expect("a stamped read");
        assert!(
            rx.at_ns + 40_000_000 <= before_reading,
            "the bytes' time {} is the arrival, not the read at {before_reading}",
            rx.at_ns
        );
        assert!(rx.lag_ns >= 40_000_000, "read lag {} ns", rx.lag_ns);
        assert!(rx.at_ns >= head.at_ns);
        assert_eq!(trace.first_byte_ns, head.at_ns);
        // The request's departure, by the kernel's transmit stamp: after the connect, before
        // the answer's arrival. (The client's own reading after its write, `sent_ns`, can be
        // later than the answer's arrival: the server may answer before this thread runs on.)
        let tx = trace.kernel_sent_ns.expect("a transmit stamp");
        assert!(trace.connected_ns <= tx && tx <= head.at_ns, "{trace:?}");
        while !end {
            end = x.read_some(&mut body).await.unwrap();
        }
        let (stamped, max_lag) = x.stamped();
        assert_eq!(stamped, x.received().1, "every read stamped");
        assert!(max_lag >= 40_000_000);
        assert_eq!(body, b"data: one\n\ntwo");
        drop(x);

        let server = TestServer::start(script()).await;
        let opts = Options {
            kernel_rx: false,
            ..Options::pooled(Duration::from_secs(5))
        };
        let e = endpoint_with(&server, &HeaderMap::new(), opts);
        let mut trace = HttpTrace::default();
        let mut x = e
            .send_traced(b"{}", &RequestIds::default(), &mut trace)
            .await
            .unwrap();
        let mut body = Vec::new();
        while !x.read_some(&mut body).await.unwrap() {}
        assert_eq!((x.last_rx(), x.stamped()), (None, (0, 0)));
        assert_eq!((trace.kernel_reads, trace.kernel_sent_ns), (0, None));
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
        assert!(x.read_to_end(&mut body, usize::MAX).await.unwrap());
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
        assert!(x.read_to_end(&mut body, usize::MAX).await.unwrap());
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
        let err = x.read_to_end(&mut body, usize::MAX).await.unwrap_err();
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

    /// Reads one whole `200` response on `e` and returns its body.
    async fn ok_exchange(e: &Endpoint) -> Vec<u8> {
        let mut x = e.send(b"{}").await.unwrap();
        assert_eq!(x.status, 200);
        let mut body = Vec::new();
        assert!(x.read_to_end(&mut body, usize::MAX).await.unwrap());
        body
    }

    /// Waits until the pooled connection shows what the server did (its FIN, RST or bytes
    /// arrived), so the next request finds it at checkout.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    #[tokio::test]
    async fn an_idle_connection_the_server_closed_is_replaced_before_sending() {
        let ok = || response("200 OK", "application/json", "{}");
        let server = TestServer::start(vec![
            // Keep-alive by the headers, but the server closes right after.
            Reply::SendAndClose(vec![ok()]),
            Reply::Send(vec![ok()]),
        ])
        .await;
        let e = endpoint(&server, &HeaderMap::new());
        ok_exchange(&e).await;
        assert_eq!(idle(&e), 1);
        settle().await;
        ok_exchange(&e).await;
        assert_eq!(server.connections(), 2);
        assert_eq!(server.requests().len(), 2, "each request sent once");
    }

    /// The request was written on a reused connection, then the server closed it (or reset
    /// it) without a byte of answer: an error, never a second copy of the request.
    #[tokio::test]
    async fn a_request_the_server_may_have_received_is_never_sent_again() {
        for (reply, message) in [
            (Reply::Close, CLOSED_AFTER_SEND),
            (Reply::Reset, RESET_AFTER_SEND),
        ] {
            let ok = || response("200 OK", "application/json", "{}");
            let server = TestServer::start(vec![Reply::Send(vec![ok()]), reply]).await;
            let e = endpoint(&server, &HeaderMap::new());
            ok_exchange(&e).await;
            let err = e.send(b"{}").await.err().expect("an error");
            assert!(
                matches!(err, H1Error::ClosedBeforeResponse(m) if m == message),
                "{err:?}"
            );
            assert!(!err.is_connect());
            assert_eq!(server.requests().len(), 2, "sent exactly once: {message}");
            assert_eq!(server.connections(), 1);
            assert_eq!(idle(&e), 0);
        }
        // The same on a fresh connection.
        let server = TestServer::start(vec![Reply::Reset]).await;
        let e = endpoint(&server, &HeaderMap::new());
        let err = e.send(b"{}").await.err().expect("an error");
        assert!(matches!(err, H1Error::ClosedBeforeResponse(_)), "{err:?}");
        assert_eq!(server.requests().len(), 1);
    }

    /// A server whose `Content-Length` was shorter than what it sent: the excess arrives
    /// after the response is complete. The connection is not reused, so the excess never
    /// becomes the next request's response.
    #[tokio::test]
    async fn a_connection_with_stray_bytes_is_not_reused() {
        let server = TestServer::start(vec![
            Reply::Send(vec![
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
                b"EXCESS BYTES".to_vec(),
            ]),
            Reply::Send(vec![response("200 OK", "application/json", "second")]),
        ])
        .await;
        let e = endpoint(&server, &HeaderMap::new());
        assert_eq!(ok_exchange(&e).await, b"ok");
        settle().await;
        assert_eq!(ok_exchange(&e).await, b"second");
        assert_eq!(server.connections(), 2);
        // Excess in the same read as the response: never pooled either.
        let server = TestServer::start(vec![
            Reply::Send(vec![
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXCESS".to_vec(),
            ]),
            Reply::Send(vec![response("200 OK", "application/json", "second")]),
        ])
        .await;
        let e = endpoint(&server, &HeaderMap::new());
        assert_eq!(ok_exchange(&e).await, b"ok");
        assert_eq!(idle(&e), 0);
        assert_eq!(ok_exchange(&e).await, b"second");
    }

    #[tokio::test]
    async fn a_body_read_stops_at_its_limit_and_closes_the_connection() {
        let body = "x".repeat(100_000);
        let server = TestServer::start(vec![Reply::Send(vec![response(
            "200 OK",
            "application/json",
            &body,
        )])])
        .await;
        let e = endpoint(&server, &HeaderMap::new());
        let mut x = e.send(b"{}").await.unwrap();
        let mut out = Vec::new();
        assert!(!x.read_to_end(&mut out, 10_000).await.unwrap());
        assert!(out.len() > 10_000 && out.len() < 100_000, "{}", out.len());
        drop(x);
        assert_eq!(idle(&e), 0, "an unfinished body closes its connection");
    }

    #[test]
    fn more_than_64_headers_are_read_and_more_than_256_refused() {
        let head = |n: usize| {
            let mut h = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n".to_vec();
            for i in 0..n {
                h.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
            }
            h.extend_from_slice(b"\r\n");
            h
        };
        let h = parse_head(&head(200)).unwrap().unwrap();
        assert_eq!((h.status, h.content_length), (200, Some(0)));
        assert!(parse_head(&head(MAX_HEADERS - 1)).unwrap().is_some());
        let partial = head(100);
        assert!(parse_head(&partial[..partial.len() - 10])
            .unwrap()
            .is_none());
        let err = parse_head(&head(MAX_HEADERS)).err().unwrap();
        assert!(matches!(err, H1Error::TooLarge(_)), "{err:?}");
        assert_eq!(err.to_string(), "response has more than 256 headers");
    }

    #[test]
    fn trailers_are_capped() {
        let mut f = Framing::Chunked(ChunkState::Size);
        let mut buf = BytesMut::from(&b"1\r\na\r\n0\r\n"[..]);
        let mut out = Vec::new();
        assert!(!decode(&mut f, &mut buf, &mut out).unwrap());
        // Trailer lines, each fine, adding up past the cap.
        let mut err = None;
        for _ in 0..100 {
            buf.extend_from_slice(format!("x-t: {}\r\n", "v".repeat(1000)).as_bytes());
            if let Err(e) = decode(&mut f, &mut buf, &mut out) {
                err = Some(e);
                break;
            }
        }
        let err = err.expect("capped");
        assert_eq!(err.to_string(), "chunked body trailers larger than 16 KiB");
        // One endless trailer line.
        let mut f = Framing::Chunked(ChunkState::Trailers(0));
        let mut buf = BytesMut::from(&[b'x'; MAX_TRAILERS][..]);
        assert!(!decode(&mut f, &mut buf, &mut out).unwrap());
        buf.extend_from_slice(b"x");
        assert!(matches!(
            decode(&mut f, &mut buf, &mut out),
            Err(H1Error::TooLarge(_))
        ));
        // Trailers within the cap end the body.
        let (out, done) = run(
            Framing::Chunked(ChunkState::Size),
            &[b"1\r\na\r\n0\r\nx-a: 1\r\nx-b: 2\r\n\r\n"],
        );
        assert_eq!((out.as_slice(), done), (&b"a"[..], true));
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let uri = format!("http://{addr}/v1/chat").parse().unwrap();
        let e = Endpoint::new(
            &uri,
            &HeaderMap::new(),
            Options::pooled(Duration::from_secs(5)),
        );
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

    fn endpoint_with(server: &TestServer, headers: &HeaderMap, opts: Options) -> Endpoint {
        let uri = format!("{}/v1/chat/completions", server.base_url());
        Endpoint::new(&uri.parse().unwrap(), headers, opts)
    }

    /// Sends `ids`' request, reads the whole response, and returns its trace.
    async fn traced(e: &Endpoint, ids: &RequestIds) -> HttpTrace {
        let mut trace = HttpTrace::default();
        let mut x = e.send_traced(b"{}", ids, &mut trace).await.unwrap();
        let mut body = Vec::new();
        assert!(x.read_to_end(&mut body, usize::MAX).await.unwrap());
        (trace.bytes_received, trace.chunks_received) = x.received();
        trace
    }

    fn ids(correlation: u128, last_turn: bool) -> RequestIds {
        RequestIds::new(uuid::Uuid::from_u128(correlation), last_turn)
    }

    #[tokio::test]
    async fn the_phases_of_a_new_and_of_a_reused_connection() {
        let ok = || response("200 OK", "application/json", "{\"a\":1}");
        let server =
            TestServer::start(vec![Reply::Send(vec![ok()]), Reply::Send(vec![ok()])]).await;
        let e = endpoint(&server, &HeaderMap::new());
        let t = traced(&e, &ids(1, false)).await;
        assert!(!t.reused);
        assert!(
            0 < t.conn_ns
                && t.conn_ns <= t.dns_ns
                && t.dns_ns < t.connected_ns
                && t.connected_ns <= t.sent_ns
                && t.sent_ns <= t.first_byte_ns,
            "{t:?}"
        );
        let request = &server.requests()[0];
        assert_eq!(
            t.bytes_sent,
            request.len() as u64,
            "head and body, as received"
        );
        assert_eq!(t.chunks_sent, 1);
        assert_eq!(t.bytes_received, ok().len() as u64, "head and body");
        assert!(t.chunks_received >= 1);
        let t = traced(&e, &ids(2, false)).await;
        assert!(t.reused);
        assert_eq!(
            (t.conn_ns, t.dns_ns),
            (t.connected_ns, t.connected_ns),
            "{t:?}"
        );
        assert!(t.connected_ns <= t.sent_ns && t.sent_ns <= t.first_byte_ns);
        assert_eq!(server.connections(), 1);
    }

    #[tokio::test]
    async fn the_ids_go_out_as_headers() {
        let ok = || response("200 OK", "application/json", "{}");
        let server =
            TestServer::start(vec![Reply::Send(vec![ok()]), Reply::Send(vec![ok()])]).await;
        let mut opts = Options::pooled(Duration::from_secs(5));
        opts.session_header = "X-Session-ID".into();
        let e = endpoint_with(&server, &HeaderMap::new(), opts);
        let id = ids(7, true);
        traced(&e, &id).await;
        let req = String::from_utf8(server.requests()[0].clone()).unwrap();
        assert!(
            req.contains(&format!(
                "\r\nX-Request-ID: {}\r\n",
                id.request.hyphenated()
            )),
            "{req}"
        );
        assert!(
            req.contains("\r\nX-Session-ID: 00000000-0000-0000-0000-000000000007\r\n"),
            "{req}"
        );
        assert!(!req.contains("X-Correlation-ID"), "renamed: {req}");
        // `-H` wins over the generated ids.
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", "mine".parse().unwrap());
        headers.insert("x-correlation-id", "ours".parse().unwrap());
        let e = endpoint_with(&server, &headers, Options::pooled(Duration::from_secs(5)));
        traced(&e, &id).await;
        let req = String::from_utf8(server.requests()[1].clone()).unwrap();
        assert!(req.contains("x-request-id: mine\r\n"), "{req}");
        assert!(!req.contains("X-Request-ID"), "{req}");
        assert_eq!(req.matches("correlation-id").count(), 1, "{req}");
    }

    #[tokio::test]
    async fn never_opens_and_closes_a_connection_per_request() {
        let ok = || response("200 OK", "application/json", "{}");
        let server = TestServer::start((0..3).map(|_| Reply::Send(vec![ok()])).collect()).await;
        let mut opts = Options::pooled(Duration::from_secs(5));
        opts.reuse = ConnectionReuseStrategy::Never;
        let e = endpoint_with(&server, &HeaderMap::new(), opts);
        for i in 0..3 {
            let t = traced(&e, &ids(i, false)).await;
            assert!(!t.reused && t.connected_ns > t.dns_ns, "{t:?}");
            assert_eq!(idle(&e), 0);
        }
        assert_eq!(server.connections(), 3);
    }

    #[tokio::test]
    async fn sticky_sessions_keep_one_connection_per_conversation() {
        let ok = || response("200 OK", "application/json", "{}");
        let server = TestServer::start((0..6).map(|_| Reply::Send(vec![ok()])).collect()).await;
        let mut opts = Options::pooled(Duration::from_secs(5));
        opts.reuse = ConnectionReuseStrategy::StickyUserSessions;
        let e = endpoint_with(&server, &HeaderMap::new(), opts);
        let sticky = |e: &Endpoint| e.sticky.lock().unwrap().len();
        // Two conversations interleaved: each keeps its own connection.
        assert!(!traced(&e, &ids(1, false)).await.reused);
        assert!(!traced(&e, &ids(2, false)).await.reused);
        assert_eq!(sticky(&e), 2);
        assert!(traced(&e, &ids(1, false)).await.reused);
        assert!(traced(&e, &ids(2, false)).await.reused);
        assert_eq!(server.connections(), 2);
        // The last turn closes it; a conversation ended early is forgotten.
        assert!(traced(&e, &ids(1, true)).await.reused);
        assert_eq!(sticky(&e), 1);
        e.end_session(&uuid::Uuid::from_u128(2));
        assert_eq!(sticky(&e), 0);
        assert!(!traced(&e, &ids(2, true)).await.reused);
        assert_eq!((sticky(&e), idle(&e)), (0, 0), "nothing pooled");
        assert_eq!(server.connections(), 3);
    }
}
