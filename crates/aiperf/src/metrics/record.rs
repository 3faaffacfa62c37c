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

impl ErrorDetails {
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
}
