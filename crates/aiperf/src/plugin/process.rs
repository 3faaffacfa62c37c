//! External plugins: child processes speaking protocol v1 (JSON lines on stdin/stdout,
//! see `docs/plugins.md`). Their stderr goes to our log, prefixed `[plugin:<name>]`.
//!
//! Each plugin runs in its own process group, and the whole group ends with it: on
//! `shutdown` the plugin gets a grace period to exit, then its group gets SIGTERM, then
//! SIGKILL; on `abort` (and when a `ProcessPlugin` is dropped) the group gets SIGKILL at once.
//! The leader is reaped only after its group was signalled, so the group id cannot have
//! been reused. Groups still alive when aiperf exits (a second Ctrl-C) are killed by an
//! `atexit` handler.
//!
//! What a plugin writes is read in bounded memory: stderr in chunks, keeping at most
//! [`MAX_SHOWN_LINE`] bytes of a line; stdout lines longer than `MAX_LINE_BYTES` are a fatal
//! protocol error. Stderr lines and `log` messages are shown at most [`LINES_PER_SEC`] a
//! second (bursts of [`LINE_BURST`]); what is dropped is counted and reported.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use aiperf_plugin::protocol::{
    decode_line, encode_line, Event, HostMessage, PluginMessage, MAX_LINE_BYTES, PROTOCOL_VERSION,
};
use aiperf_plugin::{Hook, PluginReport, RunContext};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;
use tracing::Level;

use super::{validate_config_at, HookError, HookEvent, HookResult, Plugin, Redactor};

/// After `shutdown`, how long the plugin has to exit on its own.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// After SIGTERM to its group, how long the group's processes have before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(1);
/// A killed leader is reaped within this, or left to tokio's orphan reaper.
const REAP_WAIT: Duration = Duration::from_secs(5);
/// Once the group is dead, how long its output may take to reach end of file (a process
/// that left the group can hold the pipes open).
const READERS_WAIT: Duration = Duration::from_secs(1);
/// How often process states are polled while waiting.
const POLL: Duration = Duration::from_millis(10);
/// How often the leader is checked while the host waits for a message.
const EXIT_POLL: Duration = Duration::from_millis(50);
/// Once the leader exited, how long what it wrote last may take to arrive.
const LAST_WORDS: Duration = Duration::from_millis(500);
/// The least time a plugin gets for its handshake and config.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest stderr line or `log` message shown, in bytes; the rest is cut.
pub const MAX_SHOWN_LINE: usize = 4 * 1024;
/// Stderr lines (and, separately, `log` messages) shown per second and plugin, on average.
pub const LINES_PER_SEC: u32 = 100;
/// ... and at most in a burst.
pub const LINE_BURST: u32 = 100;
/// While a plugin runs, its drops are reported at most this often (and when it ends).
const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);

enum Incoming {
    Msg(PluginMessage),
    Garbage(String),
    /// A fatal protocol error, described in full.
    Broken(String),
}

pub struct ProcessPlugin {
    name: String,
    version: String,
    hooks: Vec<Hook>,
    /// The leader; `None` once it was killed and reaped.
    child: Option<Child>,
    /// The plugin's process group, whose id is the leader's pid.
    pgid: i32,
    stdin: Option<ChildStdin>,
    incoming: mpsc::UnboundedReceiver<Incoming>,
    next_id: u64,
    /// The stderr and stdout readers.
    readers: Vec<JoinHandle<()>>,
    /// Stops the readers before end of file.
    stop: CancellationToken,
    /// Where its config section is, so schema errors name `file:line`.
    origin: Option<Arc<super::ConfigOrigin>>,
    /// The implementation's name for `hello` when the instance has its own name.
    implementation: Option<String>,
    /// What the plugin sent in `report` messages (merged by the stdout reader).
    report: Arc<std::sync::Mutex<PluginReport>>,
}

fn excerpt(s: &str) -> String {
    let s = s.trim();
    let end = floor_char_boundary(s, 80);
    if end < s.len() {
        format!("{}…", &s[..end])
    } else {
        s.to_string()
    }
}

/// The largest char boundary of `s` that is `<= at`.
fn floor_char_boundary(s: &str, at: usize) -> usize {
    let mut end = at.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

// ---------------------------------------------------------------------------------------
// Process groups
// ---------------------------------------------------------------------------------------

mod group {
    use std::sync::{Mutex, MutexGuard, Once, TryLockError};

    /// Groups whose leader is not reaped yet: their ids cannot have been reused.
    static LIVE: Mutex<Vec<i32>> = Mutex::new(Vec::new());
    static AT_EXIT: Once = Once::new();

    fn live() -> MutexGuard<'static, Vec<i32>> {
        LIVE.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a new group, to be killed if aiperf exits before the plugin is stopped.
    pub fn register(pgid: i32) {
        AT_EXIT.call_once(|| {
            // SAFETY: registers a plain function without captures; if registration fails
            // (out of slots), groups are just not killed at exit.
            unsafe {
                libc::atexit(kill_all_at_exit);
            }
        });
        live().push(pgid);
    }

    pub fn unregister(pgid: i32) {
        live().retain(|&g| g != pgid);
    }

    /// At `exit` (end of `main`, `std::process::exit` on a second Ctrl-C): SIGKILL to every
    /// group still registered. Never blocks: other threads still run during `exit`.
    extern "C" fn kill_all_at_exit() {
        for _ in 0..1000 {
            let groups = match LIVE.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    std::thread::yield_now();
                    continue;
                }
            };
            for &g in groups.iter() {
                signal(g, libc::SIGKILL);
            }
            return;
        }
    }

    /// Sends `sig` to every process of the group.
    pub fn signal(pgid: i32, sig: libc::c_int) {
        // Never -1 (every process we may signal) or 0 (our own group).
        if pgid > 1 {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(-pgid, sig);
            }
        }
    }

    pub enum Leader {
        Running,
        /// Exited (a zombie, not reaped): how.
        Exited(String),
        /// Not a child of ours any more (already reaped).
        Gone,
    }

    /// The leader's state, without reaping it.
    pub fn leader(pid: i32) -> Leader {
        // SAFETY: siginfo_t is plain data, valid when zeroed; waitid writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if rc != 0 {
            return Leader::Gone;
        }
        // SAFETY: filled in by waitid for a child state change (si_pid stays 0 otherwise).
        let (si_pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if si_pid == 0 {
            return Leader::Running;
        }
        Leader::Exited(if info.si_code == libc::CLD_EXITED {
            format!("exit status {status}")
        } else {
            "killed by a signal".into()
        })
    }

    /// Whether a process of the group still runs (zombies don't); `true` when unknown.
    pub fn has_live_members(pgid: i32) -> bool {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return true;
        };
        dir.flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .any(|e| {
                let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                    return false;
                };
                // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
                let Some(at) = stat.rfind(')') else {
                    return false;
                };
                let mut fields = stat[at + 1..].split_whitespace();
                let state = fields.next().unwrap_or("Z");
                let pgrp = fields.nth(1).and_then(|p| p.parse::<i32>().ok());
                pgrp == Some(pgid) && !matches!(state, "Z" | "X" | "x")
            })
    }
}

// ---------------------------------------------------------------------------------------
// Plugin output: bounded reading, capped lines, rate limits
// ---------------------------------------------------------------------------------------

/// Where a plugin's output goes once capped and redacted.
pub(crate) trait OutputSink: Send + Sync {
    /// Whether output at `level` would be shown (if not, it is not even formatted).
    fn enabled(&self, level: Level) -> bool;
    fn emit(&self, level: Level, text: &str);
}

/// aiperf's log, target `aiperf::plugin`.
struct TracingSink;

impl OutputSink for TracingSink {
    fn enabled(&self, level: Level) -> bool {
        match level {
            Level::ERROR => tracing::enabled!(target: "aiperf::plugin", Level::ERROR),
            Level::WARN => tracing::enabled!(target: "aiperf::plugin", Level::WARN),
            Level::INFO => tracing::enabled!(target: "aiperf::plugin", Level::INFO),
            Level::DEBUG => tracing::enabled!(target: "aiperf::plugin", Level::DEBUG),
            _ => tracing::enabled!(target: "aiperf::plugin", Level::TRACE),
        }
    }

    fn emit(&self, level: Level, text: &str) {
        match level {
            Level::ERROR => tracing::error!(target: "aiperf::plugin", "{text}"),
            Level::WARN => tracing::warn!(target: "aiperf::plugin", "{text}"),
            Level::INFO => tracing::info!(target: "aiperf::plugin", "{text}"),
            Level::DEBUG => tracing::debug!(target: "aiperf::plugin", "{text}"),
            _ => tracing::trace!(target: "aiperf::plugin", "{text}"),
        }
    }
}

/// `12345` → `"12,345"`.
fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `56_000_000` → `"56.0 MB"` (decimal units).
fn human_bytes(n: u64) -> String {
    for (unit, size) in [("GB", 1e9), ("MB", 1e6), ("kB", 1e3)] {
        if n as f64 >= size {
            return format!("{:.1} {unit}", n as f64 / size);
        }
    }
    format!("{n} B")
}

/// A token bucket over lines, counting what it drops.
struct RateLimit {
    /// What is limited, singular and plural: `("stderr line", "stderr lines")`.
    what: (&'static str, &'static str),
    tokens: f64,
    last: Instant,
    dropped: u64,
    dropped_bytes: u64,
    /// When the oldest drop not reported yet happened.
    first_drop: Option<Instant>,
}

impl RateLimit {
    fn new(what: (&'static str, &'static str), now: Instant) -> Self {
        Self {
            what,
            tokens: f64::from(LINE_BURST),
            last: now,
            dropped: 0,
            dropped_bytes: 0,
            first_drop: None,
        }
    }

    /// Whether a line of `bytes` bytes may be shown now; if not, it is counted as dropped.
    fn admit(&mut self, now: Instant, bytes: u64) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * f64::from(LINES_PER_SEC)).min(f64::from(LINE_BURST));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return true;
        }
        self.dropped += 1;
        self.dropped_bytes += bytes;
        self.first_drop.get_or_insert(now);
        false
    }

    /// The warning about drops not reported yet, when one is due: `end` (the output ended)
    /// or the oldest drop is [`DROP_REPORT_EVERY`] old.
    fn report(&mut self, plugin: &str, now: Instant, end: bool) -> Option<String> {
        let first = self.first_drop?;
        if !end && now.saturating_duration_since(first) < DROP_REPORT_EVERY {
            return None;
        }
        let what = if self.dropped == 1 {
            self.what.0
        } else {
            self.what.1
        };
        let msg = format!(
            "plugin `{plugin}`: {} {what} ({}) dropped (over {LINES_PER_SEC} a second)",
            group_digits(self.dropped),
            human_bytes(self.dropped_bytes),
        );
        self.dropped = 0;
        self.dropped_bytes = 0;
        self.first_drop = None;
        Some(msg)
    }
}

/// Where one plugin's output goes.
#[derive(Clone)]
struct Output {
    name: String,
    redactor: Redactor,
    sink: Arc<dyn OutputSink>,
    /// What the plugin sent in `report` messages, merged.
    report: Arc<std::sync::Mutex<PluginReport>>,
}

impl Output {
    /// Shows one line at `level` (`text` makes it, capped and redacted) if `limit` admits
    /// it, and reports drops when due.
    fn forward(
        &self,
        level: Level,
        limit: &mut RateLimit,
        bytes: u64,
        text: impl FnOnce() -> String,
    ) {
        if !self.sink.enabled(level) {
            return;
        }
        let now = Instant::now();
        if limit.admit(now, bytes) {
            self.sink
                .emit(level, &format!("[plugin:{}] {}", self.name, text()));
        }
        self.report(limit, now, false);
    }

    fn report(&self, limit: &mut RateLimit, now: Instant, end: bool) {
        if let Some(msg) = limit.report(&self.name, now, end) {
            self.sink.emit(Level::WARN, &msg);
        }
    }
}

/// A `log` message as shown: redacted, then cut to [`MAX_SHOWN_LINE`] bytes.
fn capped_message(message: &str, redactor: &Redactor) -> String {
    let mut text = redactor.redact(message);
    if text.len() > MAX_SHOWN_LINE {
        let cut = floor_char_boundary(&text, MAX_SHOWN_LINE);
        let rest = text.len() - cut;
        text.truncate(cut);
        text.push_str(&format!("… ({} bytes cut)", group_digits(rest as u64)));
    }
    text
}

/// A stderr line as shown, from its first bytes `head` (at least [`MAX_SHOWN_LINE`] plus
/// the longest secret, when it is longer) and its length `len`: invalid UTF-8 replaced,
/// redacted, cut to [`MAX_SHOWN_LINE`] bytes, never in the middle of a secret.
fn capped_line(head: &[u8], len: u64, redactor: &Redactor) -> String {
    let text = String::from_utf8_lossy(head);
    if len <= MAX_SHOWN_LINE as u64 {
        return redactor.redact(&text);
    }
    let cut = redactor.safe_cut(&text, floor_char_boundary(&text, MAX_SHOWN_LINE));
    let mut shown = redactor.redact(&text[..cut]);
    shown.push_str(&format!(
        "… ({} bytes cut)",
        group_digits(len.saturating_sub(cut as u64))
    ));
    shown
}

/// Lines of any length, read in bounded memory: the first `keep` bytes of each line and
/// its length (without the `\n`, or `\r\n`).
struct CappedLines<R> {
    reader: BufReader<R>,
    keep: usize,
}

impl<R: AsyncRead + Unpin> CappedLines<R> {
    fn new(inner: R, keep: usize) -> Self {
        Self {
            reader: BufReader::with_capacity(8 * 1024, inner),
            keep,
        }
    }

    /// The next line as `(head, len)`; `None` at end of input. A last line without `\n`
    /// counts.
    async fn next(&mut self) -> std::io::Result<Option<(Vec<u8>, u64)>> {
        let mut head = Vec::new();
        let mut len = 0u64;
        let mut started = false;
        loop {
            let chunk = self.reader.fill_buf().await?;
            if chunk.is_empty() {
                return Ok(started.then_some((head, len)));
            }
            started = true;
            let newline = memchr::memchr(b'\n', chunk);
            let take = newline.unwrap_or(chunk.len());
            let room = self.keep.saturating_sub(head.len());
            head.extend_from_slice(&chunk[..take.min(room)]);
            len += take as u64;
            self.reader.consume(take + usize::from(newline.is_some()));
            if newline.is_some() {
                if head.len() as u64 == len && head.last() == Some(&b'\r') {
                    head.pop();
                    len -= 1;
                }
                return Ok(Some((head, len)));
            }
        }
    }
}

/// Forwards stderr, line by line, until end of file or `stop`; reports drops at the end.
async fn forward_stderr(stderr: ChildStderr, out: Output, stop: CancellationToken) {
    let mut lines = CappedLines::new(stderr, MAX_SHOWN_LINE + out.redactor.longest());
    let mut limit = RateLimit::new(("stderr line", "stderr lines"), Instant::now());
    loop {
        let next = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            next = lines.next() => next,
        };
        // A read error (not expected on a pipe) ends the output like end of file.
        let Ok(Some((head, len))) = next else {
            break;
        };
        out.forward(Level::INFO, &mut limit, len, || {
            capped_line(&head, len, &out.redactor)
        });
    }
    out.report(&mut limit, Instant::now(), true);
}

fn log_level(level: &str) -> Level {
    match level {
        "error" => Level::ERROR,
        "warning" | "warn" => Level::WARN,
        "debug" => Level::DEBUG,
        _ => Level::INFO,
    }
}

/// Reads protocol messages until end of file, garbage, `stop`, or the receiver is gone.
/// `log` messages are shown here; the rest is passed on.
async fn read_stdout(
    stdout: ChildStdout,
    out: Output,
    tx: mpsc::UnboundedSender<Incoming>,
    stop: CancellationToken,
) {
    let mut lines = FramedRead::new(stdout, LinesCodec::new_with_max_length(MAX_LINE_BYTES));
    let mut limit = RateLimit::new(("log message", "log messages"), Instant::now());
    loop {
        let line = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            line = lines.next() => line,
        };
        let Some(line) = line else { break };
        let msg = match line {
            Ok(l) if l.trim().is_empty() => continue,
            Ok(l) => match decode_line::<PluginMessage>(&l) {
                Ok(PluginMessage::Log { level, message }) => {
                    out.forward(log_level(&level), &mut limit, message.len() as u64, || {
                        capped_message(&message, &out.redactor)
                    });
                    continue;
                }
                Ok(PluginMessage::Report { metrics, notes }) => {
                    let mut r = out.report.lock().unwrap_or_else(|e| e.into_inner());
                    super::report::merge(&mut r, PluginReport { metrics, notes }, &out.redactor);
                    continue;
                }
                Ok(m) => Incoming::Msg(m),
                Err(_) => Incoming::Garbage(excerpt(&out.redactor.redact(&l))),
            },
            Err(LinesCodecError::MaxLineLengthExceeded) => Incoming::Broken(format!(
                "wrote garbage on stdout: a line longer than {} MiB",
                MAX_LINE_BYTES / (1024 * 1024)
            )),
            Err(LinesCodecError::Io(e)) => Incoming::Garbage(format!("unreadable output: {e}")),
        };
        let fatal = !matches!(msg, Incoming::Msg(_));
        if tx.send(msg).is_err() || fatal {
            break;
        }
    }
    out.report(&mut limit, Instant::now(), true);
}

// ---------------------------------------------------------------------------------------
// The plugin process
// ---------------------------------------------------------------------------------------

/// Resolves once the leader `pid` has exited (not reaped), with how; never for `None`.
async fn leader_exit(pid: Option<i32>) -> String {
    let Some(pid) = pid else {
        return std::future::pending().await;
    };
    loop {
        match group::leader(pid) {
            group::Leader::Exited(how) => return how,
            group::Leader::Gone => return std::future::pending().await,
            group::Leader::Running => tokio::time::sleep(EXIT_POLL).await,
        }
    }
}

/// The environment an external plugin gets from the run's context.
fn run_env(context: &RunContext) -> Vec<(&'static str, String)> {
    vec![
        ("AIPERF_RUN_ID", context.run_id.clone()),
        ("AIPERF_ARTIFACT_DIR", context.artifact_dir.clone()),
    ]
}

impl ProcessPlugin {
    /// Starts the process, runs the handshake, validates and sends the config with the run's
    /// context (none for `aiperf plugins check`). With a context, the process also gets
    /// `AIPERF_RUN_ID` and `AIPERF_ARTIFACT_DIR` in its environment.
    pub async fn start(
        name: &str,
        path: &Path,
        args: &[String],
        config: &Value,
        context: Option<&Arc<RunContext>>,
        timeout: Duration,
        redactor: Redactor,
    ) -> Result<Self, String> {
        Self::start_with(
            name,
            path,
            args,
            (config, context),
            timeout,
            redactor,
            Arc::new(TracingSink),
        )
        .await
    }

    /// [`ProcessPlugin::start`] for the instance `name` of `implementation` (the name its
    /// `hello` carries, so a host serving several plugins picks the right one), with schema
    /// errors placed at `file:line` in `origin`.
    #[allow(clippy::too_many_arguments)]
    pub async fn start_at(
        name: &str,
        implementation: &str,
        path: &Path,
        args: &[String],
        config: &Value,
        context: Option<&Arc<RunContext>>,
        timeout: Duration,
        redactor: Redactor,
        origin: Option<Arc<super::ConfigOrigin>>,
    ) -> Result<Self, String> {
        let env = context.map(|c| run_env(c)).unwrap_or_default();
        let mut plugin = Self::spawn(name, path, args, &env, redactor, Arc::new(TracingSink))?;
        plugin.origin = origin;
        plugin.implementation = (implementation != name).then(|| implementation.to_string());
        plugin.configure_or_kill((config, context), timeout).await
    }

    async fn start_with(
        name: &str,
        path: &Path,
        args: &[String],
        (config, context): (&Value, Option<&Arc<RunContext>>),
        timeout: Duration,
        redactor: Redactor,
        sink: Arc<dyn OutputSink>,
    ) -> Result<Self, String> {
        let env = context.map(|c| run_env(c)).unwrap_or_default();
        let plugin = Self::spawn(name, path, args, &env, redactor, sink)?;
        plugin.configure_or_kill((config, context), timeout).await
    }

    async fn configure_or_kill(
        self,
        config: (&Value, Option<&Arc<RunContext>>),
        timeout: Duration,
    ) -> Result<Self, String> {
        let mut plugin = self;
        // Startup gets at least STARTUP_TIMEOUT: an interpreter (Python) can take a second or
        // more to start on a loaded machine, which says nothing about its hooks.
        match plugin.handshake(config, timeout.max(STARTUP_TIMEOUT)).await {
            Ok(()) => Ok(plugin),
            Err(e) => {
                plugin.kill().await;
                Err(e)
            }
        }
    }

    fn spawn(
        name: &str,
        path: &Path,
        args: &[String],
        env: &[(&'static str, String)],
        redactor: Redactor,
        sink: Arc<dyn OutputSink>,
    ) -> Result<Self, String> {
        let mut child = Command::new(path)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: ended as a whole, and a terminal's Ctrl-C reaches only
            // aiperf, which then shuts the plugin down in order.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", path.display()))?;
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .unwrap_or(0);
        group::register(pgid);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            group::signal(pgid, libc::SIGKILL);
            group::unregister(pgid);
            return Err(format!("cannot start {}: no pipes", path.display()));
        };

        let report = Arc::new(std::sync::Mutex::new(PluginReport::default()));
        let out = Output {
            name: name.to_string(),
            redactor,
            sink,
            report: report.clone(),
        };
        let stop = CancellationToken::new();
        let (tx, incoming) = mpsc::unbounded_channel();
        let readers = vec![
            tokio::spawn(forward_stderr(stderr, out.clone(), stop.clone())),
            tokio::spawn(read_stdout(stdout, out, tx, stop.clone())),
        ];

        Ok(ProcessPlugin {
            name: name.to_string(),
            version: String::new(),
            hooks: Vec::new(),
            child: Some(child),
            pgid,
            stdin: Some(stdin),
            incoming,
            next_id: 0,
            readers,
            stop,
            origin: None,
            implementation: None,
            report,
        })
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    async fn send(&mut self, msg: &HostMessage) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        let line = encode_line(msg);
        stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        stdin.flush().await.map_err(|e| e.to_string())
    }

    /// How the leader exited, waiting briefly for it to end (it is not reaped).
    async fn exit_status(&mut self) -> String {
        if self.child.is_some() {
            let deadline = Instant::now() + Duration::from_millis(500);
            loop {
                match group::leader(self.pgid) {
                    group::Leader::Exited(how) => return how,
                    group::Leader::Gone => break,
                    group::Leader::Running if Instant::now() >= deadline => break,
                    group::Leader::Running => tokio::time::sleep(POLL).await,
                }
            }
        }
        "closed its stdout".into()
    }

    /// Waits up to `limit` for the leader to exit (without reaping it).
    async fn wait_leader(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while matches!(group::leader(self.pgid), group::Leader::Running)
            && Instant::now() < deadline
        {
            tokio::time::sleep(POLL).await;
        }
    }

    /// The next protocol message, or why there is none. A leader that exited is noticed
    /// even while a child of it holds stdout open.
    async fn recv(&mut self) -> Result<PluginMessage, String> {
        let watch = self.child.is_some().then_some(self.pgid);
        let next = tokio::select! {
            biased;
            next = self.incoming.recv() => next,
            how = leader_exit(watch) => {
                // What it wrote before it exited is still on its way: take that first.
                match tokio::time::timeout(LAST_WORDS, self.incoming.recv()).await {
                    Ok(Some(m)) => Some(m),
                    _ => return Err(format!("exited ({how})")),
                }
            }
        };
        match next {
            Some(Incoming::Msg(m)) => Ok(m),
            Some(Incoming::Garbage(g)) => Err(format!("wrote garbage on stdout: {g:?}")),
            Some(Incoming::Broken(why)) => Err(why),
            None => Err(format!("exited ({})", self.exit_status().await)),
        }
    }

    async fn handshake(
        &mut self,
        (config, context): (&Value, Option<&Arc<RunContext>>),
        timeout: Duration,
    ) -> Result<(), String> {
        if let Some(schema) = self.hello(timeout).await? {
            validate_config_at(&schema, config, self.origin.as_deref())?;
        }
        if let Err(e) = self
            .send(&HostMessage::Configure {
                config: config.clone(),
                context: context.map(|c| Box::new(RunContext::clone(c))),
            })
            .await
        {
            return Err(format!(
                "exited before taking its config ({}; {e})",
                self.exit_status().await
            ));
        }
        let reply = tokio::time::timeout(timeout, self.recv())
            .await
            .map_err(|_| {
                format!(
                    "no answer to its config within {:.1} s",
                    timeout.as_secs_f64()
                )
            })??;
        match reply {
            PluginMessage::Configured => Ok(()),
            PluginMessage::Error { message } => Err(format!("config rejected: {message}")),
            other => Err(format!("expected `configured`, got {other:?}")),
        }
    }

    /// Sends `hello`, reads the `handshake`; returns the plugin's config schema.
    async fn hello(&mut self, timeout: Duration) -> Result<Option<Value>, String> {
        let hello = HostMessage::Hello {
            protocol_versions: vec![PROTOCOL_VERSION],
            host: "aiperf".into(),
            host_version: env!("CARGO_PKG_VERSION").into(),
            plugin_name: self
                .implementation
                .clone()
                .unwrap_or_else(|| self.name.clone()),
        };
        if let Err(e) = self.send(&hello).await {
            return Err(format!(
                "handshake failed: cannot write to the plugin: {e} ({})",
                self.exit_status().await
            ));
        }
        let reply = tokio::time::timeout(timeout, self.recv())
            .await
            .map_err(|_| {
                format!(
                    "handshake failed: no answer within {:.1} s",
                    timeout.as_secs_f64()
                )
            })?
            .map_err(|e| format!("handshake failed: {e}"))?;
        let schema = match reply {
            PluginMessage::Handshake {
                protocol_version,
                name: _,
                version,
                hooks,
                config_schema,
            } => {
                if protocol_version != PROTOCOL_VERSION {
                    return Err(format!(
                        "protocol version mismatch: plugin chose {protocol_version}, aiperf speaks {PROTOCOL_VERSION}"
                    ));
                }
                self.version = version;
                self.hooks = hooks;
                Ok(config_schema)
            }
            PluginMessage::Error { message } => Err(format!("handshake refused: {message}")),
            other => Err(format!(
                "handshake failed: expected `handshake`, got {other:?}"
            )),
        };
        schema
    }

    /// SIGKILL to the whole process group, then reaps the leader and lets the readers
    /// finish (their last act is reporting dropped output).
    async fn kill(&mut self) {
        self.stdin = None;
        if let Some(mut child) = self.child.take() {
            // The leader is not reaped yet, so the group id is still ours.
            group::signal(self.pgid, libc::SIGKILL);
            group::unregister(self.pgid);
            // A leader stuck in the kernel is left to tokio's orphan reaper (kill_on_drop).
            let _ = tokio::time::timeout(REAP_WAIT, child.wait()).await;
        }
        let readers = futures_util::future::join_all(std::mem::take(&mut self.readers));
        tokio::pin!(readers);
        if tokio::time::timeout(READERS_WAIT, &mut readers)
            .await
            .is_err()
        {
            self.stop.cancel();
            readers.await;
        }
    }
}

impl Drop for ProcessPlugin {
    /// A plugin dropped without `shutdown` or `abort` (a run that ended early): its group is
    /// killed; tokio reaps the leader in the background.
    fn drop(&mut self) {
        self.stop.cancel();
        if self.child.is_some() {
            group::signal(self.pgid, libc::SIGKILL);
            group::unregister(self.pgid);
        }
    }
}

#[async_trait::async_trait]
impl Plugin for ProcessPlugin {
    fn hooks(&self) -> Vec<Hook> {
        self.hooks.clone()
    }

    async fn report(&mut self) -> Option<PluginReport> {
        let r = self.report.lock().unwrap_or_else(|e| e.into_inner());
        (!r.is_empty()).then(|| r.clone())
    }

    async fn on_event(&mut self, e: &HookEvent) -> HookResult {
        self.next_id += 1;
        let id = self.next_id;
        let msg = HostMessage::Event(Event {
            id,
            hook: e.hook,
            phase: e.phase.map(|p| p.as_str().to_string()),
            stats: e.stats.clone(),
            summary: e.summary.as_deref().cloned(),
            context: e.context.as_deref().map(|c| Box::new(c.clone())),
            records: e.records.as_deref().cloned(),
            dropped_records: e.dropped_records,
            window: e.window.as_deref().map(|w| Box::new(w.clone())),
            server_metrics: e.server_metrics.as_deref().cloned(),
        });
        if let Err(err) = self.send(&msg).await {
            return Err(HookError::Fatal(format!(
                "cannot write to the plugin: {err} ({})",
                self.exit_status().await
            )));
        }
        loop {
            match self.recv().await.map_err(HookError::Fatal)? {
                PluginMessage::Ack { id: got, error } if got == id => {
                    return match error {
                        None => Ok(()),
                        Some(msg) => Err(HookError::Hook(msg)),
                    };
                }
                PluginMessage::Error { message } => {
                    return Err(HookError::Fatal(format!("reported an error: {message}")))
                }
                // A stale ack (for an event that timed out) or an unexpected message: skip.
                _ => continue,
            }
        }
    }

    /// Kills the whole group at once.
    async fn abort(&mut self) {
        self.kill().await;
    }

    /// `shutdown`, stdin closed, [`SHUTDOWN_GRACE`] for the leader to exit; then SIGTERM to
    /// the group, [`TERM_GRACE`] for what remains of it, SIGKILL.
    async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.send(&HostMessage::Shutdown)).await;
        self.stdin = None; // close stdin: EOF also tells the plugin to exit
        if self.child.is_some() {
            self.wait_leader(SHUTDOWN_GRACE).await;
            group::signal(self.pgid, libc::SIGTERM);
            let deadline = Instant::now() + TERM_GRACE;
            while group::has_live_members(self.pgid) && Instant::now() < deadline {
                tokio::time::sleep(POLL).await;
            }
        }
        self.kill().await;
    }
}

/// Starts a plugin and runs only the handshake (no config), then shuts it down.
pub async fn probe_handshake(
    name: &str,
    path: &Path,
    args: &[String],
    timeout: Duration,
) -> Result<(String, Vec<Hook>), String> {
    let mut p = ProcessPlugin::spawn(
        name,
        path,
        args,
        &[],
        Redactor::default(),
        Arc::new(TracingSink),
    )?;
    let result = p.hello(timeout).await;
    let out = result.map(|_| (p.version.clone(), p.hooks.clone()));
    p.kill().await;
    out
}

/// Starts a plugin, runs the handshake (and the config, when given), then shuts it down.
/// Returns (version, hooks) for `aiperf plugins check` / `list`.
#[allow(clippy::too_many_arguments)]
pub async fn probe(
    name: &str,
    implementation: &str,
    path: &Path,
    args: &[String],
    config: &Value,
    timeout: Duration,
    origin: Option<Arc<super::ConfigOrigin>>,
) -> Result<(String, Vec<Hook>), String> {
    let mut p = ProcessPlugin::start_at(
        name,
        implementation,
        path,
        args,
        config,
        None,
        timeout,
        Redactor::default(),
        origin,
    )
    .await?;
    let out = (p.version.clone(), p.hooks.clone());
    p.shutdown().await;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Mutex;

    use aiperf_plugin::PhaseStats;
    use serde_json::json;

    use super::*;
    use crate::metrics::PhaseKind;
    use crate::plugin::PluginsSection;

    const HANDSHAKE: &str = r#"echo '{"type":"handshake","protocol_version":1,"name":"t","version":"1.2.3","hooks":["phase_start","phase_complete"]}'"#;
    const CONFIGURED: &str = r#"echo '{"type":"configured"}'"#;
    const ACK: &str = r#"echo "{\"type\":\"ack\",\"id\":$id}""#;

    /// `sh -c` arguments for a plugin that answers `hello` with `on_hello`, `configure` with
    /// `on_configure` and each event with `on_event` (shell commands; `$line` is the message,
    /// `$id` and `$hook` the event's), and exits on `shutdown` or end of input.
    fn sh_plugin(on_hello: &str, on_configure: &str, on_event: &str) -> Vec<String> {
        let script = r#"
while IFS= read -r line; do
  case "$line" in
    *'"type":"hello"'*) ON_HELLO ;;
    *'"type":"configure"'*) ON_CONFIGURE ;;
    *'"type":"event"'*)
      id=$(printf '%s\n' "$line" | sed 's/^{"type":"event","id":\([0-9]*\),.*/\1/')
      hook=$(printf '%s\n' "$line" | sed 's/.*"hook":"\([a-z_]*\)".*/\1/')
      ON_EVENT ;;
    *'"type":"shutdown"'*) exit 0 ;;
  esac
done
"#
        .replace("ON_HELLO", on_hello)
        .replace("ON_CONFIGURE", on_configure)
        .replace("ON_EVENT", on_event);
        vec!["-c".into(), script]
    }

    async fn start(args: &[String], config: Value) -> Result<ProcessPlugin, String> {
        ProcessPlugin::start(
            "t",
            Path::new("sh"),
            args,
            &config,
            None,
            Duration::from_secs(5),
            Redactor::default(),
        )
        .await
    }

    fn event(hook: Hook) -> HookEvent {
        HookEvent::new(
            hook,
            Some(PhaseKind::Profiling),
            Some(PhaseStats {
                phase: "profiling".into(),
                ..Default::default()
            }),
        )
    }

    fn fatal(r: HookResult) -> String {
        match r {
            Err(HookError::Fatal(m)) => m,
            other => panic!("expected a fatal error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn handshake_config_events_and_shutdown() {
        // The config must arrive; phase_complete fails as a hook error carrying its id.
        let args = sh_plugin(
            &format!(r#"echo '{{"type":"log","level":"info","message":"starting"}}'; {HANDSHAKE}"#),
            r#"case "$line" in *'"config":{"site":"eu"}'*) echo '{"type":"configured"}' ;; *) echo '{"type":"error","message":"no site"}' ;; esac"#,
            r#"if [ "$hook" = phase_complete ]; then echo "{\"type\":\"ack\",\"id\":$id,\"error\":\"failed $hook $id\"}"; else echo "{\"type\":\"ack\",\"id\":$id}"; fi"#,
        );
        let mut p = start(&args, json!({"site": "eu"})).await.unwrap();
        assert_eq!(p.version(), "1.2.3");
        assert_eq!(p.hooks(), [Hook::PhaseStart, Hook::PhaseComplete]);
        assert!(p.on_event(&event(Hook::PhaseStart)).await.is_ok());
        match p.on_event(&event(Hook::PhaseComplete)).await {
            Err(HookError::Hook(m)) => assert_eq!(m, "failed phase_complete 2"),
            other => panic!("{other:?}"),
        }
        assert!(p.on_event(&event(Hook::PhaseStart)).await.is_ok());
        p.shutdown().await;
        assert!(p.child.is_none() && p.stdin.is_none());
    }

    /// With a run context, `configure` carries it and the process has `AIPERF_RUN_ID` and
    /// `AIPERF_ARTIFACT_DIR`; without one (`plugins check`), neither.
    #[tokio::test]
    async fn the_run_context_reaches_configure_and_the_environment() {
        let args = sh_plugin(
            HANDSHAKE,
            r#"case "$line" in
                 *'"context":{"run_id":"r-9",'*) ctx=yes ;;
                 *'"context"'*) ctx=other ;;
                 *) ctx=no ;;
               esac
               echo "{\"type\":\"error\",\"message\":\"ctx=$ctx id=${AIPERF_RUN_ID-unset} dir=${AIPERF_ARTIFACT_DIR-unset}\"}""#,
            ACK,
        );
        let ctx = Arc::new(RunContext {
            run_id: "r-9".into(),
            artifact_dir: "/tmp/arts".into(),
            ..RunContext::default()
        });
        let config = json!({});
        let with = |context| {
            ProcessPlugin::start(
                "t",
                Path::new("sh"),
                &args,
                &config,
                context,
                Duration::from_secs(5),
                Redactor::default(),
            )
        };
        let err = with(Some(&ctx)).await.err().unwrap();
        assert_eq!(err, "config rejected: ctx=yes id=r-9 dir=/tmp/arts");
        let err = with(None).await.err().unwrap();
        assert_eq!(err, "config rejected: ctx=no id=unset dir=unset");
    }

    #[tokio::test]
    async fn a_rejected_config_fails_the_start() {
        let args = sh_plugin(HANDSHAKE, CONFIGURED, ACK);
        // Accepted as is...
        assert!(start(&args, json!({})).await.is_ok());
        // ...refused by the plugin...
        let args = sh_plugin(
            HANDSHAKE,
            r#"echo '{"type":"error","message":"no site"}'"#,
            ACK,
        );
        let err = start(&args, json!({})).await.err().unwrap();
        assert_eq!(err, "config rejected: no site");
        // ...or by the schema from its handshake, before it is sent.
        let args = sh_plugin(
            r#"echo '{"type":"handshake","protocol_version":1,"name":"t","version":"1","hooks":[],"config_schema":{"type":"object","required":["site"]}}'"#,
            CONFIGURED,
            ACK,
        );
        let err = start(&args, json!({"port": 1})).await.err().unwrap();
        assert!(err.starts_with("config rejected by its schema:"), "{err}");
        assert!(err.contains("site"), "{err}");
    }

    #[tokio::test]
    async fn a_stale_ack_is_skipped() {
        let args = sh_plugin(
            HANDSHAKE,
            CONFIGURED,
            r#"echo '{"type":"ack","id":999,"error":"old"}'; echo "{\"type\":\"ack\",\"id\":$id}""#,
        );
        let mut p = start(&args, json!({})).await.unwrap();
        assert!(p.on_event(&event(Hook::PhaseStart)).await.is_ok());
        p.shutdown().await;
    }

    #[tokio::test]
    async fn garbage_at_the_handshake_is_fatal() {
        let args = sh_plugin("echo 'hello world'", CONFIGURED, ACK);
        let err = start(&args, json!({})).await.err().unwrap();
        assert_eq!(
            err,
            r#"handshake failed: wrote garbage on stdout: "hello world""#
        );
    }

    #[tokio::test]
    async fn a_process_that_exits_at_once_fails_the_handshake() {
        let err = start(&["-c".into(), "exit 3".into()], json!({}))
            .await
            .err()
            .unwrap();
        assert!(err.starts_with("handshake failed: "), "{err}");
        assert!(err.contains("exit status 3"), "{err}");
    }

    #[tokio::test]
    async fn a_wrong_protocol_version_or_a_refusal_fails_the_handshake() {
        let args = sh_plugin(
            r#"echo '{"type":"handshake","protocol_version":2,"name":"t","version":"1","hooks":[]}'"#,
            CONFIGURED,
            ACK,
        );
        let err = start(&args, json!({})).await.err().unwrap();
        assert_eq!(
            err,
            "protocol version mismatch: plugin chose 2, aiperf speaks 1"
        );
        let args = sh_plugin(
            r#"echo '{"type":"error","message":"needs protocol 2"}'"#,
            CONFIGURED,
            ACK,
        );
        let err = start(&args, json!({})).await.err().unwrap();
        assert_eq!(err, "handshake refused: needs protocol 2");
    }

    #[tokio::test]
    async fn a_missing_executable_cannot_start() {
        let err = ProcessPlugin::start(
            "t",
            Path::new("/nonexistent/aiperf-plugin-t"),
            &[],
            &json!({}),
            None,
            Duration::from_secs(5),
            Redactor::default(),
        )
        .await
        .err()
        .unwrap();
        assert!(
            err.starts_with("cannot start /nonexistent/aiperf-plugin-t: "),
            "{err}"
        );
    }

    #[tokio::test]
    async fn garbage_in_answer_to_an_event_is_fatal() {
        let args = sh_plugin(HANDSHAKE, CONFIGURED, "echo 'oops, not json'");
        let mut p = start(&args, json!({})).await.unwrap();
        let err = fatal(p.on_event(&event(Hook::PhaseStart)).await);
        assert_eq!(err, r#"wrote garbage on stdout: "oops, not json""#);
        p.abort().await;
    }

    #[tokio::test]
    async fn a_process_that_exits_during_an_event_is_fatal() {
        let args = sh_plugin(HANDSHAKE, CONFIGURED, "exit 7");
        let mut p = start(&args, json!({})).await.unwrap();
        let err = fatal(p.on_event(&event(Hook::PhaseStart)).await);
        assert!(err.contains("exit status 7"), "{err}");
        // And every later event fails too.
        fatal(p.on_event(&event(Hook::PhaseStart)).await);
        p.abort().await;
    }

    #[tokio::test]
    async fn an_error_message_during_an_event_is_fatal() {
        let args = sh_plugin(
            HANDSHAKE,
            CONFIGURED,
            r#"echo '{"type":"error","message":"lost my socket"}'"#,
        );
        let mut p = start(&args, json!({})).await.unwrap();
        let err = fatal(p.on_event(&event(Hook::PhaseStart)).await);
        assert_eq!(err, "reported an error: lost my socket");
        p.abort().await;
    }

    #[tokio::test]
    async fn an_aborted_plugin_is_gone() {
        let args = sh_plugin(HANDSHAKE, CONFIGURED, ACK);
        let mut p = start(&args, json!({})).await.unwrap();
        p.abort().await;
        assert!(p.child.is_none());
        let err = fatal(p.on_event(&event(Hook::PhaseStart)).await);
        assert!(
            err.starts_with("cannot write to the plugin: stdin closed"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn probes_report_the_version_and_hooks() {
        let args = sh_plugin(HANDSHAKE, CONFIGURED, ACK);
        let hooks = vec![Hook::PhaseStart, Hook::PhaseComplete];
        let (version, got) = probe_handshake("t", Path::new("sh"), &args, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!((version.as_str(), &got), ("1.2.3", &hooks));
        let (version, got) = probe(
            "t",
            "t",
            Path::new("sh"),
            &args,
            &json!({}),
            Duration::from_secs(5),
            None,
        )
        .await
        .unwrap();
        assert_eq!((version.as_str(), &got), ("1.2.3", &hooks));
        // Only the handshake: a config the plugin would refuse does not matter.
        let args = sh_plugin(HANDSHAKE, r#"echo '{"type":"error","message":"no"}'"#, ACK);
        assert!(
            probe_handshake("t", Path::new("sh"), &args, Duration::from_secs(5))
                .await
                .is_ok()
        );
        assert!(probe(
            "t",
            "t",
            Path::new("sh"),
            &args,
            &json!({}),
            Duration::from_secs(5),
            None
        )
        .await
        .is_err());
    }

    // ---- process groups ----

    /// Collects what a plugin shows, every level enabled.
    #[derive(Default)]
    struct Collect(Mutex<Vec<(Level, String)>>);

    impl OutputSink for Collect {
        fn enabled(&self, _: Level) -> bool {
            true
        }
        fn emit(&self, level: Level, text: &str) {
            self.0.lock().unwrap().push((level, text.to_string()));
        }
    }

    impl Collect {
        fn lines(&self) -> Vec<(Level, String)> {
            self.0.lock().unwrap().clone()
        }
    }

    async fn start_collecting(args: &[String], sink: Arc<Collect>) -> ProcessPlugin {
        ProcessPlugin::start_with(
            "t",
            Path::new("sh"),
            args,
            (&json!({}), None),
            Duration::from_secs(5),
            Redactor::default(),
            sink,
        )
        .await
        .unwrap()
    }

    /// Kills a test's `sleep 301` (that process only) if the test failed before it ended.
    struct Sleeper(i32);

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.0)).unwrap_or_default();
            if cmdline == b"sleep\x00301\x00" {
                // SAFETY: kill(2) of a process checked to be this test's sleep.
                unsafe { libc::kill(self.0, libc::SIGKILL) };
            }
        }
    }

    /// Whether a process runs: it exists and is not a zombie (orphans are reaped by init,
    /// which may take a while, or never in a container without one).
    fn runs(pid: i32) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let state = stat
            .rfind(')')
            .and_then(|at| stat[at + 1..].split_whitespace().next().map(str::to_string));
        !matches!(state.as_deref(), Some("Z" | "X") | None)
    }

    /// Shell commands starting `sleep 301` in the background (in the plugin's process group,
    /// like a forked worker) and writing its pid to `file`.
    fn fork_sleeper(file: &Path) -> String {
        format!("sleep 301 & echo $! > '{}';", file.display())
    }

    /// The pid the plugin wrote to `file` (waits up to 10 s for it).
    async fn sleeper(file: &Path) -> Sleeper {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            if let Ok(pid) = text.trim().parse() {
                assert!(runs(pid), "the plugin's child {pid} should run");
                return Sleeper(pid);
            }
            assert!(Instant::now() < deadline, "no pid in {}", file.display());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Asserts the process ends within 5 s.
    async fn assert_ends(s: &Sleeper, how: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while runs(s.0) {
            assert!(
                Instant::now() < deadline,
                "{how}: the plugin's child {} still runs",
                s.0
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A plugin that forks `sleep 301` when configured and answers events with `on_event`,
    /// and that child.
    async fn plugin_with_child(on_event: &str) -> (ProcessPlugin, Sleeper, tempfile::TempDir) {
        let tmp = tempfile::tempdir().unwrap();
        let pid_file: PathBuf = tmp.path().join("child.pid");
        let args = sh_plugin(
            HANDSHAKE,
            &format!("{} {CONFIGURED}", fork_sleeper(&pid_file)),
            on_event,
        );
        let p = start(&args, json!({})).await.unwrap();
        let child = sleeper(&pid_file).await;
        (p, child, tmp)
    }

    #[tokio::test]
    async fn shutdown_ends_the_plugins_children() {
        let (mut p, child, _tmp) = plugin_with_child(ACK).await;
        assert!(p.on_event(&event(Hook::PhaseStart)).await.is_ok());
        p.shutdown().await;
        assert!(p.child.is_none());
        assert_ends(&child, "after shutdown").await;
    }

    #[tokio::test]
    async fn shutdown_kills_children_that_ignore_sigterm() {
        let tmp = tempfile::tempdir().unwrap();
        let pid_file = tmp.path().join("child.pid");
        // A subshell that ignores SIGTERM and becomes `sleep 301`.
        let fork = format!(
            "(trap '' TERM; exec sleep 301) & echo $! > '{}';",
            pid_file.display()
        );
        let args = sh_plugin(HANDSHAKE, &format!("{fork} {CONFIGURED}"), ACK);
        let mut p = start(&args, json!({})).await.unwrap();
        let child = sleeper(&pid_file).await;
        p.shutdown().await;
        assert_ends(&child, "after shutdown (SIGTERM ignored)").await;
    }

    #[tokio::test]
    async fn aborting_a_hung_plugin_ends_its_children() {
        let (mut p, child, _tmp) = plugin_with_child("sleep 300").await;
        // As the runner does: the hook times out, then the plugin is aborted.
        let e = event(Hook::PhaseStart);
        let hook = tokio::time::timeout(Duration::from_millis(300), p.on_event(&e));
        assert!(hook.await.is_err(), "the hook should hang");
        p.abort().await;
        assert!(p.child.is_none());
        assert_ends(&child, "after a timeout and abort").await;
    }

    #[tokio::test]
    async fn aborting_a_crashed_plugin_ends_its_children() {
        let (mut p, child, _tmp) = plugin_with_child("exit 5").await;
        let err = fatal(p.on_event(&event(Hook::PhaseStart)).await);
        // The exit status is known without reaping the leader.
        assert!(err.contains("exit status 5"), "{err}");
        p.abort().await;
        assert_ends(&child, "after a crash and abort").await;
    }

    #[tokio::test]
    async fn dropping_a_plugin_ends_its_children() {
        let (p, child, _tmp) = plugin_with_child(ACK).await;
        drop(p);
        assert_ends(&child, "after drop").await;
    }

    // ---- output caps ----

    /// The count in drop reports like "plugin `t`: 12,345 stderr lines (1.0 MB) dropped ...".
    fn dropped(lines: &[(Level, String)], what: &str) -> u64 {
        lines
            .iter()
            .filter_map(|(level, l)| {
                let rest = l.strip_prefix("plugin `t`: ")?;
                assert_eq!(*level, Level::WARN, "{l}");
                let (n, _) = rest.split_once(&format!(" {what}"))?;
                Some(n.replace(',', "").parse::<u64>().unwrap())
            })
            .sum()
    }

    #[tokio::test]
    async fn a_stderr_flood_is_capped_and_counted() {
        let flood = "head -c 50000000 /dev/zero | tr '\\0' x >&2; echo >&2; \
                     yes 'a short line' | head -n 100000 >&2;";
        let args = sh_plugin(HANDSHAKE, CONFIGURED, &format!("{flood} {ACK}"));
        let sink = Arc::new(Collect::default());
        let mut p = start_collecting(&args, sink.clone()).await;
        assert!(p.on_event(&event(Hook::PhaseStart)).await.is_ok());
        p.shutdown().await; // the report is made before shutdown returns
        let lines = sink.lines();
        let bytes: usize = lines.iter().map(|(_, l)| l.len()).sum();
        assert!(bytes < 1_000_000, "{bytes} bytes shown");
        // The 50 MB line is the first: shown, cut to 4 KiB.
        let long = format!("[plugin:t] {}… (49,995,904 bytes cut)", "x".repeat(4096));
        assert_eq!(lines[0], (Level::INFO, long));
        // Every line is either shown or counted as dropped.
        let shown = lines
            .iter()
            .filter(|(_, l)| l.starts_with("[plugin:t] "))
            .count() as u64;
        let dropped = dropped(&lines, "stderr line");
        assert!(dropped > 0, "{:?}", &lines[lines.len() - 1]);
        assert_eq!(shown + dropped, 100_001);
        assert!(
            lines.iter().any(|(_, l)| l.starts_with("plugin `t`: ")
                && l.contains(" stderr lines (")
                && l.ends_with(" dropped (over 100 a second)")),
            "{:?}",
            &lines[lines.len() - 1]
        );
    }

    #[tokio::test]
    async fn a_log_flood_is_capped_and_counted() {
        let flood = r#"printf '{"type":"log","level":"warning","message":"%s"}\n' "$(head -c 10000 /dev/zero | tr '\0' m)"; yes '{"type":"log","level":"info","message":"again"}' | head -n 5000;"#;
        let args = sh_plugin(HANDSHAKE, CONFIGURED, &format!("{flood} {ACK}"));
        let sink = Arc::new(Collect::default());
        let mut p = start_collecting(&args, sink.clone()).await;
        assert!(p.on_event(&event(Hook::PhaseStart)).await.is_ok());
        p.shutdown().await;
        let lines = sink.lines();
        let long = format!("[plugin:t] {}… (5,904 bytes cut)", "m".repeat(4096));
        assert_eq!(lines[0], (Level::WARN, long));
        let shown = lines
            .iter()
            .filter(|(_, l)| l.starts_with("[plugin:t] "))
            .count() as u64;
        let dropped = dropped(&lines, "log message");
        assert!(dropped > 0);
        assert_eq!(shown + dropped, 5_001);
    }

    #[tokio::test]
    async fn stderr_that_is_not_utf8_is_shown_and_read_on() {
        let args = sh_plugin(
            HANDSHAKE,
            &format!(
                r"printf 'bad \377 byte\r\n' >&2; printf 'after\nno newline' >&2; {CONFIGURED}"
            ),
            ACK,
        );
        let sink = Arc::new(Collect::default());
        let mut p = start_collecting(&args, sink.clone()).await;
        p.shutdown().await;
        let shown: Vec<String> = sink.lines().into_iter().map(|(_, l)| l).collect();
        assert_eq!(
            shown,
            [
                "[plugin:t] bad \u{FFFD} byte",
                "[plugin:t] after",
                "[plugin:t] no newline"
            ]
        );
    }

    #[tokio::test]
    async fn a_stdout_line_over_the_limit_is_fatal() {
        let args = sh_plugin(
            HANDSHAKE,
            CONFIGURED,
            "head -c 17000000 /dev/zero | tr '\\0' a; echo",
        );
        let mut p = start(&args, json!({})).await.unwrap();
        let err = fatal(p.on_event(&event(Hook::PhaseStart)).await);
        assert_eq!(err, "wrote garbage on stdout: a line longer than 16 MiB");
        p.abort().await;
    }

    #[test]
    fn a_cut_line_never_shows_part_of_a_secret() {
        let secret = "sekrit-123456";
        let r = Redactor::new(&PluginsSection::default(), &[secret.to_string()]);
        let line = |s: String| {
            let len = s.len() as u64;
            let head = &s.as_bytes()[..s.len().min(MAX_SHOWN_LINE + r.longest())];
            capped_line(head, len, &r)
        };
        // Across the cut: cut before it.
        let shown = line(format!("{}{secret}{}", "x".repeat(4090), "y".repeat(100)));
        assert_eq!(shown, format!("{}… (113 bytes cut)", "x".repeat(4090)));
        // Before the cut: redacted; after it: not shown.
        let shown = line(format!("{secret}{}{secret}", "x".repeat(5000)));
        assert_eq!(
            shown,
            format!("<redacted>{}… (930 bytes cut)", "x".repeat(4096 - 13))
        );
        // A short line is redacted whole.
        assert_eq!(line(format!("a {secret} b")), "a <redacted> b");
        // Log messages: redacted whole, then cut.
        let msg = capped_message(&format!("{}{secret}", "m".repeat(4090)), &r);
        assert_eq!(msg, format!("{}<redac… (4 bytes cut)", "m".repeat(4090)));
    }

    #[test]
    fn the_rate_limit_admits_bursts_then_the_rate_and_reports_drops() {
        let t0 = Instant::now();
        let mut l = RateLimit::new(("stderr line", "stderr lines"), t0);
        for _ in 0..LINE_BURST {
            assert!(l.admit(t0, 10));
        }
        assert!(!l.admit(t0, 10));
        assert!(!l.admit(t0, 15));
        assert_eq!(l.report("x", t0, false), None, "not due yet");
        // Half a second refills 50 lines.
        let t1 = t0 + Duration::from_millis(500);
        for _ in 0..50 {
            assert!(l.admit(t1, 10));
        }
        assert!(!l.admit(t1, 1_500_000));
        let t2 = t0 + DROP_REPORT_EVERY;
        assert_eq!(
            l.report("x", t2, false).as_deref(),
            Some("plugin `x`: 3 stderr lines (1.5 MB) dropped (over 100 a second)")
        );
        assert_eq!(l.report("x", t2, true), None, "nothing new to report");
        // A long pause refills the burst only.
        let t3 = t2 + Duration::from_secs(3600);
        for _ in 0..LINE_BURST {
            assert!(l.admit(t3, 1));
        }
        assert!(!l.admit(t3, 1));
        assert_eq!(
            l.report("x", t3, true).as_deref(),
            Some("plugin `x`: 1 stderr line (1 B) dropped (over 100 a second)")
        );
    }

    #[test]
    fn numbers_for_people() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(12_345), "12,345");
        assert_eq!(group_digits(1_234_567), "1,234,567");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(56_000_000), "56.0 MB");
        assert_eq!(human_bytes(1_500), "1.5 kB");
    }
}
