//! The answers the mock sends: streamed (SSE) and whole, healthy or with a fault.
//!
//! Timing is the ground truth the benchmark is checked against: token `i` (from 1) goes out at
//! `arrival + ttft + itl·(i−1)` through the high-resolution timer, so late wakeups never add
//! up across a stream, and a fault never moves a healthy token.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Response, StatusCode};

use super::config::Fault;
use super::conn::ConnCtl;
use super::metrics::Served;
use crate::clock::hires;
use crate::mix::mix;

pub type Body = BoxBody<Bytes, Infallible>;

/// Words that are each exactly one token (with their leading space) in o200k_base and
/// cl100k_base, so the client's token count equals the number generated.
pub const WORDS: [&str; 10] = [
    " the", " of", " and", " to", " in", " is", " it", " that", " was", " for",
];

/// The `bad_json` event: a `data:` line whose JSON stops in the middle.
const BAD_JSON_EVENT: &[u8] =
    b"data: {\"id\":\"mock\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" the\"\n\n";

/// The `garbage` bytes: a line that is no SSE field (and not UTF-8), then a blank line, which
/// ends no event since no `data:` came before it.
const GARBAGE: &[u8] = b"\xff\xfe\x00 garbage that is no SSE field \xc3\x28\n\n";

/// The `endless_stream` frame: an SSE comment.
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Size of each chunk of an endless body.
const ENDLESS_CHUNK: usize = 16 * 1024;

/// The body of the error answers (`error_rate`, `fault=status`).
pub const INJECTED: &str = "mock server injected error";

/// Which API is answered.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Api {
    Chat,
    Completions,
    Responses,
    Embeddings,
}

/// One request in flight at the mock, for the load model: counted when taken, given back
/// once, by [`InFlight::finish`] (its answer's end handed to the connection) or when dropped
/// (an error answer, a dropped stream, a killed connection).
pub struct InFlight {
    counter: Arc<AtomicU64>,
    count: u64,
    done: AtomicBool,
}

impl InFlight {
    /// Counts one more request in flight.
    pub fn enter(counter: &Arc<AtomicU64>) -> Self {
        let count = counter.fetch_add(1, Ordering::SeqCst).saturating_add(1);
        Self {
            counter: counter.clone(),
            count,
            done: AtomicBool::new(false),
        }
    }

    /// The requests in flight when this one was counted, itself included.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The answer has ended: no longer in flight (only the first call counts).
    pub fn finish(&self) {
        if !self.done.swap(true, Ordering::SeqCst) {
            self.counter.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Word `i` (from 0) of request `n`'s answer.
pub fn word(seed: u64, n: u64, i: u32) -> &'static str {
    WORDS[(mix(seed ^ 0xA5A5, n.wrapping_add(i as u64)) % WORDS.len() as u64) as usize]
}

pub fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_str(content_type)
            .unwrap_or(hyper::header::HeaderValue::from_static("text/plain")),
    );
    resp
}

pub fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({"error": {"message": message, "type": "mock_error", "code": status.as_u16()}});
    full(status, "application/json", body.to_string())
}

/// Waits forever: the answer of a request that stalls, or whose connection was killed (the
/// connection's task then drops this future).
pub async fn hang<T>() -> T {
    std::future::pending().await
}

/// A response whose body is `first`, then `filler` every `every`, never ending. It ends
/// when the client goes away (the write fails) or the server stops.
pub fn endless(
    status: StatusCode,
    content_type: &'static str,
    first: &'static [u8],
    filler: u8,
    every: Duration,
) -> Response<Body> {
    let filler = Bytes::from(vec![filler; ENDLESS_CHUNK]);
    let frames = futures_util::stream::unfold(true, move |first_frame| {
        let filler = filler.clone();
        async move {
            let data = if first_frame {
                Bytes::from_static(first)
            } else {
                tokio::time::sleep(every).await;
                filler
            };
            Some((Ok::<_, Infallible>(Frame::data(data)), false))
        }
    });
    let mut resp = Response::new(StreamBody::new(frames).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    resp
}

/// A `endless_error` answer: `status` with an error body that never ends.
pub fn endless_error(status: StatusCode, every: Duration) -> Response<Body> {
    endless(
        status,
        "application/json",
        b"{\"error\":{\"type\":\"mock_error\",\"message\":\"mock server injected error: ",
        b'x',
        every,
    )
}

/// A whole (non-streamed) answer: `body` at `at`, with the mid-stream fault that acts there
/// (see [`Fault`]).
pub async fn whole(
    body: String,
    at: Instant,
    fault: Option<Fault>,
    every: Duration,
    conn: &ConnCtl,
) -> Response<Body> {
    hires::sleep_until(at).await;
    let json = "application/json";
    match fault {
        Some(f @ (Fault::Reset | Fault::Close)) => {
            conn.kill(f == Fault::Reset);
            hang().await
        }
        Some(Fault::Stall) => hang().await,
        Some(Fault::BadJson) => {
            let cut = Bytes::copy_from_slice(&body.as_bytes()[..body.len() / 2]);
            full(StatusCode::OK, json, cut)
        }
        Some(Fault::Garbage) => full(StatusCode::OK, json, Bytes::from_static(GARBAGE)),
        Some(Fault::EndlessStream) => endless(StatusCode::OK, json, b"{", b' ', every),
        _ => full(StatusCode::OK, json, body),
    }
}

/// One streamed answer: the events, their deadlines, and the mid-stream fault.
pub struct Stream {
    pub api: Api,
    /// The model name as a JSON string.
    pub model_json: String,
    pub arrival: Instant,
    pub ttft: Duration,
    pub itl: Duration,
    pub seed: u64,
    /// The request's number (from 0): picks the words.
    pub n: u64,
    pub tokens: u32,
    pub include_usage: bool,
    pub prompt_tokens: u64,
    /// A mid-stream fault and the number of token events sent before it (at most `tokens`).
    pub fault: Option<(Fault, u32)>,
    /// `fault_ms`.
    pub fault_delay: Duration,
    pub conn: Arc<ConnCtl>,
    /// Given back when the last event is handed to the connection.
    pub in_flight: InFlight,
    /// The request's part in `/metrics`: each token, and the end.
    pub served: Served,
}

impl Stream {
    /// The response: `text/event-stream`, one frame per event.
    pub fn response(self) -> Response<Body> {
        let this = Arc::new(self);
        let frames = futures_util::stream::unfold(0u32, move |i| {
            let this = this.clone();
            async move {
                let frame = this.frame(i).await?;
                Some((Ok::<_, Infallible>(Frame::data(Bytes::from(frame))), i + 1))
            }
        });
        let mut resp = Response::new(StreamBody::new(frames).boxed());
        let headers = resp.headers_mut();
        headers.insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(
            hyper::header::CACHE_CONTROL,
            hyper::header::HeaderValue::from_static("no-cache"),
        );
        resp
    }

    /// When token event `i` (from 1) is due.
    fn deadline(&self, i: u32) -> Instant {
        self.arrival + self.ttft + self.itl.saturating_mul(i.saturating_sub(1))
    }

    /// Frame `i` with the fault applied; `None` after the last.
    async fn frame(&self, i: u32) -> Option<Vec<u8>> {
        if let Some((fault, k)) = self.fault {
            if i > k {
                match fault {
                    Fault::Reset | Fault::Close => {
                        // Where token k+1 would have gone out.
                        hires::sleep_until(self.deadline(k + 1)).await;
                        self.conn.kill(fault == Fault::Reset);
                        return hang().await;
                    }
                    Fault::Stall => return hang().await,
                    Fault::EndlessStream => {
                        tokio::time::sleep(self.fault_delay).await;
                        return Some(KEEP_ALIVE.to_vec());
                    }
                    _ => {}
                }
            }
        }
        let mut frame = self.event(i).await?;
        match self.fault {
            Some((Fault::BadJson, k)) if i == k => frame.extend_from_slice(BAD_JSON_EVENT),
            Some((Fault::Garbage, k)) if i == k => frame.extend_from_slice(GARBAGE),
            _ => {}
        }
        Some(frame)
    }

    /// The last event is being handed to the connection: no longer in flight or running; a
    /// success unless the stream carried broken JSON.
    fn end(&self) {
        if matches!(self.fault, Some((Fault::BadJson, _))) {
            self.served.finish();
        } else {
            self.served.succeed();
        }
        self.in_flight.finish();
    }

    /// Event `i` of the healthy stream: 0 opens it (sent at once), 1..=tokens are the tokens
    /// (each at its deadline), tokens+1 ends it; `None` after that.
    async fn event(&self, i: u32) -> Option<Vec<u8>> {
        let (tokens, model) = (self.tokens, &self.model_json);
        let completion = tokens;
        let prompt = self.prompt_tokens;
        let text = match self.api {
            // The Responses API: named events, no [DONE]; `response.completed` ends it.
            Api::Responses => {
                if i == 0 {
                    "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp-mock\"}}\n\n".to_string()
                } else if i <= tokens {
                    hires::sleep_until(self.deadline(i)).await;
                    self.served.token();
                    let w = word(self.seed, self.n, i - 1);
                    format!("event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"delta\":\"{w}\"}}\n\n")
                } else if i == tokens + 1 {
                    self.end();
                    format!("event: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{{\"id\":\"resp-mock\",\"status\":\"completed\",\"usage\":{{\"input_tokens\":{prompt},\"output_tokens\":{completion}}}}}}}\n\n")
                } else {
                    return None;
                }
            }
            Api::Chat | Api::Completions | Api::Embeddings => {
                let chat = self.api == Api::Chat;
                if i == 0 {
                    if chat {
                        format!("data: {{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"model\":{model},\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"finish_reason\":null}}]}}\n\n")
                    } else {
                        String::new()
                    }
                } else if i <= tokens {
                    hires::sleep_until(self.deadline(i)).await;
                    self.served.token();
                    let w = word(self.seed, self.n, i - 1);
                    let finish = if i == tokens { "\"length\"" } else { "null" };
                    if chat {
                        format!("data: {{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"model\":{model},\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{w}\"}},\"finish_reason\":{finish}}}]}}\n\n")
                    } else {
                        format!("data: {{\"id\":\"cmpl-mock\",\"object\":\"text_completion\",\"model\":{model},\"choices\":[{{\"index\":0,\"text\":\"{w}\",\"finish_reason\":{finish}}}]}}\n\n")
                    }
                } else if i == tokens + 1 {
                    self.end();
                    let mut s = String::new();
                    if self.include_usage {
                        let total = prompt + u64::from(completion);
                        s.push_str(&format!("data: {{\"id\":\"mock\",\"object\":\"chat.completion.chunk\",\"model\":{model},\"choices\":[],\"usage\":{{\"prompt_tokens\":{prompt},\"completion_tokens\":{completion},\"total_tokens\":{total}}}}}\n\n"));
                    }
                    s.push_str("data: [DONE]\n\n");
                    s
                } else {
                    return None;
                }
            }
        };
        Some(text.into_bytes())
    }
}
