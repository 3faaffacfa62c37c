//! What one request leaves behind: compact timestamps and text, no response bodies.

use serde::Serialize;

/// Which phase a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum PhaseKind {
    Warmup,
    Profiling,
}

impl PhaseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseKind::Warmup => "warmup",
            PhaseKind::Profiling => "profiling",
        }
    }
}

impl std::fmt::Display for PhaseKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request failed; grouped by all three fields in the error summary.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
pub struct ErrorDetails {
    /// HTTP status, or a custom code (499 for a cancelled request); null when there is none.
    pub code: Option<u16>,
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
}

/// The `type` of the errors the client itself names (an HTTP error's type is the status's
/// reason phrase, e.g. `InternalServerError`).
pub mod kind {
    /// Could not connect (refused, unreachable, TLS handshake, connect timeout).
    pub const CONNECTION_ERROR: &str = "ConnectionError";
    /// The client ran out of a local resource (file descriptors, ephemeral ports, socket
    /// buffers): the client's limit, not the server's. See [`super::ErrorDetails::is_client_side`].
    pub const CLIENT_RESOURCE_ERROR: &str = "ClientResourceError";
    /// The server's certificate was not accepted.
    pub const CERTIFICATE_ERROR: &str = "CertificateError";
    /// The request was written, then the connection was closed or reset before any byte of
    /// a response; never sent again, since the server may have received it.
    pub const CONNECTION_CLOSED_BEFORE_RESPONSE: &str = "ConnectionClosedBeforeResponse";
    /// Any other failure of the exchange before the response head.
    pub const REQUEST_ERROR: &str = "RequestError";
    /// A response (head, body, SSE event or trailers) past the client's size limits.
    pub const RESPONSE_TOO_LARGE: &str = "ResponseTooLarge";
    /// A successful response that carried no content (no text, reasoning or tool call).
    pub const EMPTY_RESPONSE: &str = "EmptyResponse";
    /// The body could not be read to its end (non-streamed).
    pub const RESPONSE_READ_ERROR: &str = "ResponseReadError";
    /// The body is not a response we can read.
    pub const INVALID_RESPONSE: &str = "InvalidResponse";
    /// The server reported an error inside a successful (2xx) body.
    pub const SERVER_ERROR: &str = "ServerError";
    /// The server reported an error inside the stream.
    pub const STREAM_ERROR: &str = "StreamError";
    /// A stream cut short: closed early, or ended without `[DONE]`.
    pub const STREAM_TRUNCATED: &str = "StreamTruncated";
    /// No complete response within `--request-timeout-seconds`.
    pub const REQUEST_TIMEOUT: &str = "RequestTimeout";
    /// Cancelled (`--request-cancellation-rate`, or the grace period ran out); code 499.
    pub const REQUEST_CANCELLED: &str = "RequestCancellationError";
}

impl ErrorDetails {
    /// The failure is the client's own limit (file descriptors, ephemeral ports, socket
    /// buffers), not the server's: the run measured the client, and its results should not
    /// be read as the server's.
    pub fn is_client_side(&self) -> bool {
        self.kind == kind::CLIENT_RESOURCE_ERROR
    }

    pub fn new(code: Option<u16>, kind: &str, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > 300 {
            let mut cut = 300;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        Self {
            code,
            kind: kind.to_string(),
            message,
        }
    }
}

/// Token counts reported by the server in `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// `usage.total_tokens` as the server wrote it (never computed here).
    pub total_tokens: Option<u64>,
}

/// The request's identity on the wire: its `X-Request-ID` and its conversation's
/// `X-Correlation-ID` (or `--session-header`), both UUID v4, and whether it is the last turn
/// of its conversation (a sticky connection is closed after it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestIds {
    pub request: uuid::Uuid,
    pub correlation: uuid::Uuid,
    pub last_turn: bool,
}

impl RequestIds {
    /// A new random id (UUID v4) from the thread's generator: no system call, no allocation.
    pub fn random_uuid() -> uuid::Uuid {
        uuid::Builder::from_random_bytes(rand::random::<[u8; 16]>()).into_uuid()
    }

    /// A request of the conversation `correlation`, with a fresh request id.
    pub fn new(correlation: uuid::Uuid, last_turn: bool) -> Self {
        Self {
            request: Self::random_uuid(),
            correlation,
            last_turn,
        }
    }
}

/// How one HTTP exchange went, phase by phase (the `http_req_*` metrics). Timestamps are
/// monotonic nanoseconds since the run's clock origin, 0 when the phase was not reached;
/// they follow each other: `start_ns` (the record's) ≤ `conn_ns` ≤ `dns_ns` ≤ `connected_ns`
/// ≤ `sent_ns` ≤ `first_byte_ns` ≤ `last_byte_ns`. Filled by the transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpTrace {
    /// A connection was chosen: an idle pooled one, or none (a new one is opened next).
    pub conn_ns: u64,
    /// The host name was resolved (new connection; `conn_ns` when reused).
    pub dns_ns: u64,
    /// The TCP (and TLS) connection was established (`dns_ns` when reused); sending starts.
    pub connected_ns: u64,
    /// The whole request (head and body) was written.
    pub sent_ns: u64,
    /// The first byte of the response arrived.
    pub first_byte_ns: u64,
    /// The last byte of the response arrived.
    pub last_byte_ns: u64,
    /// The request went out on a connection that carried an earlier one.
    pub reused: bool,
    /// Bytes written (request head and body), and socket writes.
    pub bytes_sent: u64,
    pub chunks_sent: u32,
    /// Bytes read (response head and body), and socket reads that returned data.
    pub bytes_received: u64,
    pub chunks_received: u32,
    /// Every field above was measured (the lean HTTP/1.1 client); hyper (`https://`) does
    /// not expose its phases, so its records leave this `false`.
    pub measured: bool,
    /// Reads that carried the kernel's receive stamp (of `chunks_received`): when every read
    /// did, the response's times (first byte, each token, the end) are the kernel's.
    pub kernel_reads: u32,
    /// The longest time a read's bytes waited in the socket before this client read them
    /// (the read lag; stamped reads only).
    pub read_lag_max_ns: u64,
    /// The kernel's transmit stamp of the request's last byte (the socket had them on).
    pub kernel_sent_ns: Option<u64>,
    /// A new `https://` connection: when TCP was connected and the TLS handshake began
    /// (it ended at `connected_ns`, so `http_req_connecting` holds both, as AIPerf's does).
    pub tcp_connected_ns: Option<u64>,
}

impl HttpTrace {
    /// How long the TLS handshake of the request's new connection took (ns).
    pub fn tls_handshake_ns(&self) -> Option<u64> {
        self.tcp_connected_ns
            .map(|t| self.connected_ns.saturating_sub(t))
    }
}

impl HttpTrace {
    /// Every read of the response carried the kernel's receive stamp.
    pub fn kernel_timed(&self) -> bool {
        self.chunks_received > 0 && self.kernel_reads == self.chunks_received
    }
}

/// The raw facts of one request. All `*_ns` fields are monotonic nanoseconds since the run's
/// clock origin (see [`crate::clock::Clock`]).
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub phase: PhaseKind,
    /// Index of the request within the whole run (AIPerf's `session_num`).
    pub request_index: u64,
    pub conversation_index: usize,
    pub turn_index: u32,
    pub url_index: usize,
    pub streaming: bool,
    pub start_ns: u64,
    /// When the schedule wanted it sent (rate and trace modes); `start_ns - scheduled_ns` is
    /// its send lag.
    pub scheduled_ns: Option<u64>,
    /// When the response headers arrived.
    pub ack_ns: Option<u64>,
    /// When the last byte was read (or the request failed).
    pub end_ns: u64,
    /// Read times of the content responses (SSE events, or the body), in order.
    pub content_ns: Vec<u64>,
    /// Read time of the first content response that is not reasoning.
    pub first_output_ns: Option<u64>,
    pub output_text: String,
    pub reasoning_text: String,
    pub usage: Option<Usage>,
    pub isl: u32,
    pub error: Option<ErrorDetails>,
    pub cancelled: bool,
    /// `max_tokens` as sent (the turn's requested output length), if any.
    pub requested_osl: Option<u32>,
    /// `X-Request-ID`, `X-Correlation-ID`, last turn.
    pub ids: RequestIds,
    /// The exchange phase by phase (the `http_req_*` metrics).
    pub http: HttpTrace,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_client_resource_errors_are_client_side() {
        let e = |k: &str| ErrorDetails::new(None, k, "m");
        assert!(e(kind::CLIENT_RESOURCE_ERROR).is_client_side());
        for k in [
            kind::CONNECTION_ERROR,
            kind::CONNECTION_CLOSED_BEFORE_RESPONSE,
            kind::REQUEST_TIMEOUT,
            "InternalServerError",
        ] {
            assert!(!e(k).is_client_side(), "{k}");
        }
    }

    #[test]
    fn request_ids_are_distinct_uuid_v4s() {
        let conv = RequestIds::random_uuid();
        let a = RequestIds::new(conv, false);
        let b = RequestIds::new(conv, true);
        assert_eq!(a.correlation, b.correlation);
        assert_ne!(a.request, b.request);
        assert_ne!(a.request, conv);
        for id in [a.request, b.request, conv] {
            assert_eq!(id.get_version_num(), 4);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        }
        assert!(b.last_turn && !a.last_turn);
    }
}
