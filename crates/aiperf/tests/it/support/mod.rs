//! What every integration test shares: the CPU gate, the one way to run the `aiperf` binary
//! ([`Run`]), the one scripted HTTP server ([`ScriptedServer`]), in-process config checks
//! ([`config_error`]) and a reference tokenizer.
//!
//! Every server listens on 127.0.0.1 with an ephemeral port, and every child process is
//! killed when its guard is dropped (also when a test panics) or when its timeout passes.

mod run;
mod server;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::Value;

pub use run::{bin, stat_of, MockServer, Output, Run, Running};
pub use server::{
    chat_completion, chat_server, stalling_server, Conn, Request, ScriptedServer, CHAT_REPLY,
};

// ---------------------------------------------------------------------------------------
// The CPU gate
// ---------------------------------------------------------------------------------------

/// All tests of this binary run on parallel threads of one process, on a machine with few
/// cores. Tests that assert on measured latencies take the gate exclusively, so no other
/// benchmark competes with them for the CPU; every other test takes it shared.
static GATE: RwLock<()> = RwLock::new(());

/// Taken at the top of every test that does not measure latencies: runs beside other such
/// tests, never beside an [`exclusive`] one.
#[must_use = "the gate is held until the guard is dropped"]
pub fn shared() -> RwLockReadGuard<'static, ()> {
    // A test that panicked while holding the gate poisons it; that must not fail the others.
    GATE.read().unwrap_or_else(|e| e.into_inner())
}

/// Taken at the top of every test that asserts on measured latencies: no other test runs
/// while it is held.
#[must_use = "the gate is held until the guard is dropped"]
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    GATE.write().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------
// Config validation, in process
// ---------------------------------------------------------------------------------------

/// `aiperf::config::load(ARGS --ui none --artifact-dir <tmp>)` (ARGS: what follows
/// `profile`) must fail. Returns the error message, which the binary prints as
/// `error: <message>` with exit code 2 (checked end to end in `config.rs`). Asserts the
/// message is one line and that nothing was written.
///
/// Only the error is looked at, never a loaded config's fields.
pub fn config_error<S: AsRef<str>>(args: &[S]) -> String {
    let tmp = tempfile::tempdir().expect("tempdir");
    let art = tmp.path().join("artifacts");
    let mut all: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
    all.extend([
        "--ui".into(),
        "none".into(),
        "--artifact-dir".into(),
        art.display().to_string(),
    ]);
    let msg = match aiperf::config::load(&all) {
        Ok(_) => panic!("{all:?}: config::load accepted it, a config error was expected"),
        Err(e) => e.to_string(),
    };
    assert!(
        !msg.is_empty() && !msg.contains('\n'),
        "{all:?}: the error must be one line: {msg:?}"
    );
    assert!(
        !art.exists(),
        "{all:?}: nothing is written on a config error"
    );
    msg
}

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write file");
    p
}

/// `args` as owned strings.
pub fn strings<S: AsRef<str>>(args: &[S]) -> Vec<String> {
    args.iter().map(|s| s.as_ref().to_string()).collect()
}

/// A port on 127.0.0.1 that was free a moment ago (bound to :0, then released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A port on 127.0.0.1 that refuses every connection for as long as this value lives: the
/// socket is bound but never listens, so the kernel answers a SYN with a reset and no other
/// test or process can take the port meanwhile (a port released by `free_port` can be).
pub struct ClosedPort {
    _socket: socket2::Socket,
    pub port: u16,
}

impl ClosedPort {
    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

pub fn closed_port() -> ClosedPort {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any.into()).expect("bind 127.0.0.1:0");
    let port = socket
        .local_addr()
        .expect("local addr")
        .as_socket()
        .expect("an inet address")
        .port();
    ClosedPort {
        _socket: socket,
        port,
    }
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
