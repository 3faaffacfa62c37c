//! The one scripted HTTP/1.1 server of the tests: [`ScriptedServer::start`] takes a closure
//! that is called once per accepted connection (each on its own thread) with a [`Conn`]. The
//! closure reads requests with [`Conn::request`] and answers however it likes: raw bytes,
//! JSON, SSE events with pauses (`std::thread::sleep`), nothing at all ([`Conn::stall`]), a
//! reset ([`Conn::reset`]); returning closes the connection. Every request read is recorded,
//! so a test can check what the server actually received.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names lower-cased, in arrival order (repeated names kept).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The client's address of the connection it came on.
    pub peer: Option<SocketAddr>,
}

impl Request {
    /// Every value of header `name` (case-insensitive).
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// What the connection threads share with the server handle.
struct Shared {
    requests: Mutex<Vec<Request>>,
    stop: AtomicBool,
    /// Whether scripts see `GET /metrics`. Off by default: `aiperf` scrapes each `--url`'s
    /// `/metrics` (server metrics), which a script written for the API must not see or count;
    /// such a request gets a 404 and is not recorded.
    metrics: bool,
}

/// How often a waiting connection looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// An HTTP/1.1 server on 127.0.0.1:0 whose answers are a closure; stopped on drop.
pub struct ScriptedServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl ScriptedServer {
    /// Starts the server; `script` is called once per connection. An error it returns (the
    /// client went away, say) just ends that connection.
    pub fn start<F>(script: F) -> Self
    where
        F: Fn(&mut Conn) -> std::io::Result<()> + Send + Sync + 'static,
    {
        Self::start_with(script, false)
    }

    /// [`start`](Self::start) for a script that serves `GET /metrics` itself (a scrape
    /// endpoint).
    pub fn start_metrics<F>(script: F) -> Self
    where
        F: Fn(&mut Conn) -> std::io::Result<()> + Send + Sync + 'static,
    {
        Self::start_with(script, true)
    }

    fn start_with<F>(script: F, metrics: bool) -> Self
    where
        F: Fn(&mut Conn) -> std::io::Result<()> + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind scripted server");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            metrics,
        });
        let script = Arc::new(script);
        let sh = shared.clone();
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if sh.stop.load(Ordering::Acquire) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (sh, script) = (sh.clone(), script.clone());
                std::thread::spawn(move || {
                    let _ = stream.set_nodelay(true);
                    let _ = stream.set_read_timeout(Some(POLL));
                    let mut conn = Conn {
                        stream: Some(stream),
                        buf: Vec::new(),
                        shared: sh,
                    };
                    let _ = script(&mut conn);
                });
            }
        });
        Self {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().expect("requests lock").clone()
    }

    /// How many requests were received so far.
    pub fn request_count(&self) -> usize {
        self.shared.requests.lock().expect("requests lock").len()
    }

    /// Waits until at least `n` requests have arrived; panics after `limit`.
    pub fn wait_for_requests(&self, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.request_count() < n {
            assert!(
                Instant::now() < deadline,
                "{n} requests did not arrive within {limit:?} (got {})",
                self.request_count()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // Wake the accept loop, which sees the flag and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// The server side of one connection, handed to the script.
pub struct Conn {
    /// `None` after [`Conn::reset`].
    stream: Option<TcpStream>,
    /// Bytes read but not consumed yet (a pipelined next request).
    buf: Vec<u8>,
    shared: Arc<Shared>,
}

/// The head of an SSE answer; its body ends when the connection closes.
const SSE_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";

impl Conn {
    fn stream(&mut self) -> std::io::Result<&mut TcpStream> {
        self.stream
            .as_mut()
            .ok_or_else(|| std::io::Error::new(ErrorKind::NotConnected, "connection was reset"))
    }

    /// Reads more bytes into `buf`; `Ok(false)` at EOF or when the server stops.
    fn fill(&mut self) -> std::io::Result<bool> {
        let mut chunk = [0u8; 8192];
        loop {
            if self.shared.stop.load(Ordering::Acquire) {
                return Ok(false);
            }
            match self.stream()?.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the next request (request line, headers, Content-Length body) and records it;
    /// `None` when the client closed the connection (or it failed, or the server stops).
    pub fn request(&mut self) -> Option<Request> {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            if !self.fill().ok()? {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or_default().split_whitespace();
        let method = first.next().unwrap_or_default().to_string();
        let path = first.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let body_start = head_end + 4;
        while self.buf.len() < body_start + len {
            if !self.fill().ok()? {
                return None;
            }
        }
        let body = self.buf[body_start..body_start + len].to_vec();
        self.buf.drain(..body_start + len);
        let peer = self.stream.as_ref().and_then(|s| s.peer_addr().ok());
        let req = Request {
            method,
            path,
            headers,
            body,
            peer,
        };
        if !self.shared.metrics && req.method == "GET" && req.path.starts_with("/metrics") {
            self.write("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .ok()?;
            return self.request();
        }
        self.shared
            .requests
            .lock()
            .expect("requests lock")
            .push(req.clone());
        Some(req)
    }

    /// Writes raw bytes and flushes.
    pub fn write(&mut self, bytes: impl AsRef<[u8]>) -> std::io::Result<()> {
        let s = self.stream()?;
        s.write_all(bytes.as_ref())?;
        s.flush()
    }

    /// A `200 OK` JSON answer with a Content-Length; the connection stays usable.
    pub fn json(&mut self, body: &Value) -> std::io::Result<()> {
        let body = body.to_string();
        self.write(format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    }

    /// The head of an SSE answer (`Connection: close`: the events end when the script
    /// returns).
    pub fn sse(&mut self) -> std::io::Result<()> {
        self.write(SSE_HEAD)
    }

    /// One SSE event: `data: DATA\n\n`.
    pub fn event(&mut self, data: &str) -> std::io::Result<()> {
        self.write(format!("data: {data}\n\n"))
    }

    /// Answers nothing and keeps the connection open until the client closes it or the
    /// server stops.
    pub fn stall(&mut self) {
        while let Ok(true) = self.fill() {
            self.buf.clear();
        }
    }

    /// Resets the connection at once (RST instead of an orderly close).
    pub fn reset(&mut self) {
        use std::os::fd::AsRawFd;
        let Some(stream) = self.stream.take() else {
            return;
        };
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on a socket we own, with a pointer to a live `linger` of the
        // size passed.
        let rc = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "setsockopt(SO_LINGER)");
        // Closing a socket whose linger time is 0 sends RST.
        drop(stream);
    }
}

/// A non-streaming chat completion whose answer is `content` (3 completion tokens claimed).
pub fn chat_completion(content: &str) -> Value {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": "test-model",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    })
}

/// The answer of [`chat_server`].
pub const CHAT_REPLY: &str = "hello there world";

/// A server answering every request with a valid chat completion ([`CHAT_REPLY`]) on
/// keep-alive connections.
pub fn chat_server() -> ScriptedServer {
    ScriptedServer::start(|conn| {
        while conn.request().is_some() {
            conn.json(&chat_completion(CHAT_REPLY))?;
        }
        Ok(())
    })
}

/// A server that reads each request and never answers (the connection stays open).
pub fn stalling_server() -> ScriptedServer {
    ScriptedServer::start(|conn| {
        if conn.request().is_some() {
            conn.stall();
        }
        Ok(())
    })
}
