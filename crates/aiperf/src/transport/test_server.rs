//! A scripted HTTP/1.1 server on `127.0.0.1:0` for the transport's unit tests: it reads each
//! request (head and `Content-Length` body), keeps it, and answers with the next scripted
//! reply, written in pieces with a short pause between them so that they tend to arrive in
//! separate reads.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::task::AbortOnDropHandle;

/// What the server does with one request.
pub enum Reply {
    /// Writes these pieces, then waits for the next request on the connection.
    Send(Vec<Vec<u8>>),
    /// Writes these pieces, then closes the connection.
    SendAndClose(Vec<Vec<u8>>),
    /// Never answers (the connection stays open until the server is dropped).
    Silent,
    /// Closes the connection without answering.
    Close,
    /// Resets the connection (RST) without answering.
    Reset,
    /// Writes the head, then the piece again and again until the client goes away.
    Endless(Vec<u8>, Vec<u8>),
}

#[derive(Default)]
struct Shared {
    replies: Mutex<VecDeque<Reply>>,
    /// Each request as received: head and body.
    requests: Mutex<Vec<Vec<u8>>>,
    connections: AtomicUsize,
}

pub struct TestServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _accept: AbortOnDropHandle<()>,
}

impl TestServer {
    /// Starts the server; it answers requests with `replies`, in order, whatever connection
    /// they come on (a request beyond the script closes its connection).
    pub async fn start(replies: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            replies: Mutex::new(replies.into()),
            ..Default::default()
        });
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            // Dropped with the accept task: every connection task is aborted with it.
            let mut conns = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                s.connections.fetch_add(1, Ordering::SeqCst);
                conns.spawn(serve(stream, s.clone()));
            }
        });
        Self {
            addr,
            shared,
            _accept: AbortOnDropHandle::new(accept),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Vec<u8>> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        shared.requests.lock().unwrap().push(request);
        let reply = shared.replies.lock().unwrap().pop_front();
        let (pieces, close) = match reply {
            Some(Reply::Send(p)) => (p, false),
            Some(Reply::SendAndClose(p)) => (p, true),
            Some(Reply::Silent) => return std::future::pending().await,
            Some(Reply::Close) | None => return,
            Some(Reply::Endless(head, piece)) => {
                if stream.write_all(&head).await.is_err() {
                    return;
                }
                while stream.write_all(&piece).await.is_ok() {}
                return;
            }
            Some(Reply::Reset) => {
                // Linger 0: closing sends RST.
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                return;
            }
        };
        for (i, piece) in pieces.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if stream.write_all(piece).await.is_err() {
                return;
            }
        }
        if close {
            return;
        }
    }
}

/// One whole request (head and `Content-Length` body); `None` once the client is gone.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(head_len)) = req.parse(buf) {
            let body_len: usize = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= head_len + body_len {
                return Some(buf.drain(..head_len + body_len).collect());
            }
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A whole response with a `Content-Length` body.
pub fn response(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The head of a chunked `text/event-stream` response.
pub fn sse_head() -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        .to_vec()
}

/// One HTTP chunk.
pub fn chunk(data: &str) -> Vec<u8> {
    format!("{:x}\r\n{data}\r\n", data.len()).into_bytes()
}

/// One SSE event carrying `data`, as one HTTP chunk.
pub fn sse_chunk(data: &str) -> Vec<u8> {
    chunk(&format!("data: {data}\n\n"))
}

/// A chat completion stream chunk with `content`.
pub fn delta(content: &str) -> String {
    serde_json::json!({"choices": [{"index": 0, "delta": {"content": content}}]}).to_string()
}

/// The last chunk of a chunked body.
pub fn last_chunk() -> Vec<u8> {
    b"0\r\n\r\n".to_vec()
}
