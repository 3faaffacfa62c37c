//! Shared helpers for the integration tests: running the real `aiperf` binary, reading its
//! artifacts, a separately started `aiperf mock-server` process, and a tiny hand-written
//! HTTP/1.1 server that records requests and can misbehave on purpose.
//!
//! Every server listens on 127.0.0.1 with an ephemeral port, and every child process is
//! killed when its guard is dropped (also when a test panics).

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_aiperf")
}

/// A child that takes longer than this is killed and the test fails (a hang, not slowness).
const CHILD_DEADLINE: Duration = Duration::from_secs(120);

/// What one finished `aiperf` invocation left behind.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The stderr lines that are not empty.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    /// Asserts a usage/config error: exit code 2 and exactly one line on stderr starting
    /// with `error: `. Returns that line.
    pub fn assert_usage_error(&self) -> String {
        assert_eq!(
            self.code, 2,
            "expected exit code 2\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        let lines = self.stderr_lines();
        assert_eq!(
            lines.len(),
            1,
            "expected exactly one line on stderr, got:\n{}",
            self.stderr
        );
        assert!(
            lines[0].starts_with("error: "),
            "stderr line must start with `error: `: {:?}",
            lines[0]
        );
        lines[0].to_string()
    }
}

/// A builder for one `aiperf` invocation.
pub struct Aiperf {
    cmd: Command,
    args: Vec<String>,
}

impl Aiperf {
    /// `aiperf ARGS...` exactly as given (no flags added).
    pub fn raw<S: AsRef<str>>(args: &[S]) -> Self {
        let mut cmd = Command::new(bin());
        // Keep the environment from changing what the tests see.
        cmd.env_remove("AIPERF_API_KEY")
            .env_remove("AIPERF_LOG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Self {
            cmd,
            args: args.iter().map(|a| a.as_ref().to_string()).collect(),
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.cmd.env_remove(key);
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    /// Runs to completion (killed after a generous deadline), capturing stdout and stderr.
    pub fn run(mut self) -> Output {
        self.cmd.args(&self.args);
        let mut child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin()));
        let mut out = child.stdout.take().expect("piped stdout");
        let mut err = child.stderr.take().expect("piped stderr");
        let out_t = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = out.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        });
        let err_t = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = err.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        });
        let started = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait for aiperf") {
                break st;
            }
            if started.elapsed() > CHILD_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "aiperf {:?} did not finish within {CHILD_DEADLINE:?}",
                    self.args
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Output {
            code: status.code().unwrap_or(-1),
            stdout: out_t.join().expect("stdout reader"),
            stderr: err_t.join().expect("stderr reader"),
        }
    }
}

/// `aiperf profile ARGS --ui none --artifact-dir <fresh tempdir>`, with the artifacts kept
/// for inspection until the returned value is dropped.
pub fn profile<S: AsRef<str>>(args: &[S]) -> Profile {
    ProfileBuilder::new(args).run()
}

pub struct ProfileBuilder {
    inner: Aiperf,
    tmp: tempfile::TempDir,
}

impl ProfileBuilder {
    pub fn new<S: AsRef<str>>(args: &[S]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let art = tmp.path().join("artifacts");
        let mut all: Vec<String> = vec!["profile".into()];
        all.extend(args.iter().map(|a| a.as_ref().to_string()));
        all.extend([
            "--ui".into(),
            "none".into(),
            "--artifact-dir".into(),
            art.display().to_string(),
        ]);
        Self {
            inner: Aiperf::raw(&all),
            tmp,
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.inner = self.inner.env(key, value);
        self
    }

    pub fn run(self) -> Profile {
        let out = self.inner.run();
        let dir = self.tmp.path().join("artifacts");
        Profile {
            out,
            dir,
            _tmp: self.tmp,
        }
    }
}

/// A finished profile run and its artifact directory.
pub struct Profile {
    pub out: Output,
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Profile {
    /// Panics with the run's output unless it exited with `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.out.code, code,
            "unexpected exit code\nstdout:\n{}\nstderr:\n{}",
            self.out.stdout, self.out.stderr
        );
        self
    }

    pub fn ok(&self) -> &Self {
        self.expect_code(0)
    }

    pub fn read(&self, name: &str) -> String {
        let p = self.dir.join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e}\nstdout:\n{}\nstderr:\n{}",
                p.display(),
                self.out.stdout,
                self.out.stderr
            )
        })
    }

    /// `profile_export_aiperf.json`.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.read("profile_export_aiperf.json"))
            .expect("profile_export_aiperf.json is JSON")
    }

    /// `profile_export_aiperf.csv`.
    pub fn csv(&self) -> String {
        self.read("profile_export_aiperf.csv")
    }

    /// `profile_export.jsonl`, one value per line.
    pub fn jsonl(&self) -> Vec<Value> {
        self.read("profile_export.jsonl")
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSONL line ({e}): {l}"))
            })
            .collect()
    }

    /// `inputs.json`.
    pub fn inputs(&self) -> Value {
        serde_json::from_str(&self.read("inputs.json")).expect("inputs.json is JSON")
    }

    /// Every payload of `inputs.json`, in order.
    pub fn payloads(&self) -> Vec<Value> {
        let inputs = self.inputs();
        let data = inputs["data"].as_array().expect("inputs.json has data[]");
        data.iter()
            .flat_map(|d| d["payloads"].as_array().expect("payloads[]").clone())
            .collect()
    }

    /// `json[tag][stat]` as a number.
    pub fn stat(&self, tag: &str, stat: &str) -> f64 {
        stat_of(&self.json(), tag, stat)
    }

    /// The `error_summary` entries as `(code, type, message, count)`.
    pub fn errors(&self) -> Vec<(Option<u64>, String, String, u64)> {
        error_entries(&self.json()["error_summary"])
    }

    /// Every file in the artifact directory (recursively) with its contents.
    pub fn all_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        collect_files(&self.dir, &mut out);
        out
    }
}

fn collect_files(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, out);
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push((p, bytes));
        }
    }
}

pub fn stat_of(json: &Value, tag: &str, stat: &str) -> f64 {
    json.get(tag)
        .and_then(|m| m.get(stat))
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no numeric {tag}.{stat} in the JSON summary"))
}

pub fn error_entries(summary: &Value) -> Vec<(Option<u64>, String, String, u64)> {
    summary
        .as_array()
        .expect("error_summary is an array")
        .iter()
        .map(|e| {
            let d = &e["error_details"];
            (
                d["code"].as_u64(),
                d["type"].as_str().unwrap_or_default().to_string(),
                d["message"].as_str().unwrap_or_default().to_string(),
                e["count"].as_u64().expect("error count"),
            )
        })
        .collect()
}

/// A port on 127.0.0.1 that was free a moment ago (bound to :0, then released).
pub fn free_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A plain blocking HTTP/1.1 GET; returns the status code, or `None` if no answer.
pub fn http_get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.lines().next()?.split_whitespace().nth(1)?.parse().ok()
}

/// `aiperf mock-server` running as its own process; killed on drop.
pub struct MockServerProcess {
    child: Child,
    pub port: u16,
}

impl MockServerProcess {
    /// Starts `aiperf mock-server --port <free port> EXTRA...` and waits for `GET /health`.
    pub fn start(extra: &[&str]) -> Self {
        let mut last_problem = String::new();
        // A free port can be taken by someone else before the server binds it: retry.
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new(bin())
                .args(["mock-server", "--host", "127.0.0.1", "--port"])
                .arg(port.to_string())
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start aiperf mock-server");
            let mut guard = Self { child, port };
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(st)) = guard.child.try_wait() {
                    last_problem = format!("mock-server exited early with {st}");
                    break;
                }
                if http_get_status(addr, "/health") == Some(200) {
                    return guard;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if last_problem.is_empty() {
                last_problem = "GET /health never succeeded".into();
            }
            drop(guard);
        }
        panic!("could not start aiperf mock-server: {last_problem}");
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for MockServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request as the test server received it.
#[derive(Debug, Clone)]
pub struct Captured {
    pub method: String,
    pub path: String,
    /// Header names lower-cased, in arrival order (repeated names kept).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Captured {
    /// Every value of header `name` (case-insensitive).
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// How the test server answers each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// A valid non-streaming chat completion (keep-alive, with Content-Length).
    ChatJson,
    /// Like `ChatJson` (no `Connection: close`), but the server closes the connection right
    /// after each answer, as servers do with idle keep-alive connections.
    ChatJsonThenClose,
    /// Read the request, then never answer (the connection stays open).
    Stall,
    /// An SSE response with one content event, then the connection is closed.
    TruncatedSse,
    /// An SSE response whose event data is not JSON.
    GarbageSse,
    /// An SSE response carrying `{"error":{"message":"boom"}}`.
    ErrorEventSse,
}

/// A tiny HTTP/1.1 server on its own thread and tokio runtime; stopped on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    captured: Arc<Mutex<Vec<Captured>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    pub fn start(behavior: Behavior) -> Self {
        let std_listener = StdListener::bind("127.0.0.1:0").expect("bind test server");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("local addr");
        let captured = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let cap = captured.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("test server runtime");
            rt.block_on(accept_loop(std_listener, behavior, cap, rx));
            // Dropping the runtime drops every connection task and its socket.
        });
        Self {
            addr,
            captured,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Captured> {
        self.captured.lock().expect("captured lock").clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(
    std_listener: StdListener,
    behavior: Behavior,
    captured: Arc<Mutex<Vec<Captured>>>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(std_listener).expect("tokio listener");
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => {
                let Ok((stream, _)) = r else { continue };
                let cap = captured.clone();
                tokio::spawn(async move {
                    let _ = serve_connection(stream, behavior, cap).await;
                });
            }
        }
    }
}

/// Reads one request (request line, headers, Content-Length body); `None` at EOF.
async fn read_request(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Captured>> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
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
    while buf.len() < body_start + len {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[body_start..body_start + len].to_vec();
    buf.drain(..body_start + len);
    Ok(Some(Captured {
        method,
        path,
        headers,
        body,
    }))
}

const SSE_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";

async fn serve_connection(
    mut stream: tokio::net::TcpStream,
    behavior: Behavior,
    captured: Arc<Mutex<Vec<Captured>>>,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut stream, &mut buf).await? {
        captured.lock().expect("captured lock").push(req);
        match behavior {
            Behavior::ChatJson | Behavior::ChatJsonThenClose => {
                let body = serde_json::json!({
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "model": "test-model",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "hello there world"}}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
                })
                .to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(resp.as_bytes()).await?;
                stream.flush().await?;
                if behavior == Behavior::ChatJsonThenClose {
                    return Ok(());
                }
                // Keep-alive: wait for the next request on this connection.
            }
            Behavior::Stall => {
                // Hold the connection open without a byte of answer until the server stops.
                std::future::pending::<()>().await;
            }
            Behavior::TruncatedSse => {
                let ev = "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" the\"},\"finish_reason\":null}]}\n\n";
                stream.write_all(SSE_HEAD.as_bytes()).await?;
                stream.write_all(ev.as_bytes()).await?;
                stream.flush().await?;
                return stream.shutdown().await;
            }
            Behavior::GarbageSse => {
                stream.write_all(SSE_HEAD.as_bytes()).await?;
                stream
                    .write_all(b"data: not-json\n\ndata: [DONE]\n\n")
                    .await?;
                stream.flush().await?;
                return stream.shutdown().await;
            }
            Behavior::ErrorEventSse => {
                stream.write_all(SSE_HEAD.as_bytes()).await?;
                stream
                    .write_all(b"data: {\"error\":{\"message\":\"boom\"}}\n\ndata: [DONE]\n\n")
                    .await?;
                stream.flush().await?;
                return stream.shutdown().await;
            }
        }
    }
    Ok(())
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write file");
    p
}

/// Max number of requests in flight at once, from the JSONL start/end timestamps.
pub fn max_overlap(records: &[Value]) -> usize {
    let mut events: Vec<(u64, i32)> = Vec::new();
    for r in records {
        let m = &r["metadata"];
        let s = m["request_start_ns"].as_u64().expect("request_start_ns");
        let e = m["request_end_ns"].as_u64().expect("request_end_ns");
        events.push((s, 1));
        events.push((e, -1));
    }
    // Ends sort before starts at the same instant.
    events.sort();
    let (mut cur, mut max) = (0i32, 0i32);
    for (_, d) in events {
        cur += d;
        max = max.max(cur);
    }
    max as usize
}

/// OpenAI's encodings from tiktoken-rs: a second, independent implementation to check the
/// binary's built-in tokenizer (which uses the `bpe-openai` crate) against.
pub struct Reference(tiktoken_rs::CoreBPE);

impl Reference {
    /// `builtin` / `builtin:o200k_base` or `builtin:cl100k_base`.
    pub fn new(tokenizer: &str) -> Self {
        let bpe = match tokenizer {
            "builtin" | "builtin:o200k_base" => tiktoken_rs::o200k_base(),
            "builtin:cl100k_base" => tiktoken_rs::cl100k_base(),
            other => panic!("no reference tokenizer for {other}"),
        };
        Self(bpe.expect("tiktoken-rs loads its encoding"))
    }

    pub fn o200k() -> &'static Self {
        static O200K: std::sync::OnceLock<Reference> = std::sync::OnceLock::new();
        O200K.get_or_init(|| Self::new("builtin"))
    }

    pub fn count(&self, text: &str) -> usize {
        self.0.encode_ordinary(text).len()
    }

    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.0.encode_ordinary(text)
    }

    /// `None` when the tokens cut a character.
    pub fn decode(&self, tokens: &[u32]) -> Option<String> {
        self.0.decode(tokens.to_vec()).ok()
    }
}
