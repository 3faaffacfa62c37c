//! The plugin-author side: implement [`Plugin`] and hand it to [`serve`].
//!
//! Hooks arrive as calls of [`Plugin::on_event`] (the lifecycle hooks),
//! [`Plugin::on_request_records`] and [`Plugin::on_progress`] (the opt-in streaming hooks).
//! [`log`] sends a log line and [`report`] adds metrics and notes to the run's report.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::io::{self, BufRead, Write};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value};

use crate::protocol::{
    decode_line, encode_line, Event, Hook, HostMessage, PhaseStats, PluginMessage, PluginReport,
    ProgressWindow, RunContext, MAX_LINE_BYTES, PROTOCOL_VERSION,
};

/// A plugin, as seen by its author. [`serve`] drives it through the protocol.
///
/// Callbacks run one at a time on the thread that called [`serve`]. Do not write to stdout
/// (no `println!`): stdout carries the protocol. Use [`log`] or `eprintln!` instead.
pub trait Plugin {
    /// The plugin's own name (shown by `aiperf plugins list`).
    fn name(&self) -> &str;

    /// The plugin's own version.
    fn version(&self) -> &str;

    /// The hooks to receive events for. Events for other hooks are never sent.
    fn hooks(&self) -> Vec<Hook>;

    /// A JSON Schema the host validates this plugin's config against before `configure`.
    fn config_schema(&self) -> Option<Value> {
        None
    }

    /// Receives the plugin's config section. `Err(why)` rejects it (the host disables the
    /// plugin and reports `why`). A panic counts as a rejection.
    fn configure(&mut self, config: Value) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// Receives the config section with the run's [`RunContext`] (run id, models, URLs,
    /// load, artifact directory, resolved config); `context` is `None` when the host has no
    /// run (`aiperf plugins check`) or predates it. The default calls
    /// [`Plugin::configure`]: override this one to keep the context. The `benchmark_start`
    /// event carries the same context in [`Event::context`].
    fn configure_with_context(
        &mut self,
        config: Value,
        context: Option<RunContext>,
    ) -> Result<(), String> {
        let _ = context;
        self.configure(config)
    }

    /// Handles one event of a lifecycle hook (`benchmark_start`, `phase_start`,
    /// `phase_sending_complete`, `phase_timeout`, `phase_complete`, `benchmark_complete`).
    /// `Err(msg)` (or a panic) is reported to the host as a hook error; the plugin stays
    /// enabled and keeps receiving events. The default does nothing.
    fn on_event(&mut self, event: &Event) -> Result<(), String> {
        let _ = event;
        Ok(())
    }

    /// Handles a `request_records` event (opt in: list [`Hook::RequestRecords`] in
    /// [`Plugin::hooks`]): `records` are finished requests of the event's phase, oldest first,
    /// each exactly one line of `profile_export.jsonl` (`{"metadata": {..}, "metrics":
    /// {"time_to_first_token": {"value": 12.5, "unit": "ms"}, ..}, "error": null}`);
    /// `dropped_records` counts the records this plugin lost so far in the run because it fell
    /// behind. Errors and panics count as for [`Plugin::on_event`]. The default does nothing.
    fn on_request_records(
        &mut self,
        event: &Event,
        records: &[Value],
        dropped_records: u64,
    ) -> Result<(), String> {
        let _ = (event, records, dropped_records);
        Ok(())
    }

    /// Handles a `progress` event (opt in: list [`Hook::Progress`] in [`Plugin::hooks`]),
    /// sent every few seconds while a phase runs: the phase's live counters and the rolling
    /// window's metrics (each a default value if the host left it out). Errors and panics
    /// count as for [`Plugin::on_event`]. The default does nothing.
    fn on_progress(
        &mut self,
        event: &Event,
        stats: &PhaseStats,
        window: &ProgressWindow,
    ) -> Result<(), String> {
        let _ = (event, stats, window);
        Ok(())
    }
}

/// Calls the [`Plugin`] method for `event`'s hook.
fn dispatch<P: Plugin>(plugin: &mut P, event: &Event) -> Result<(), String> {
    match event.hook {
        Hook::RequestRecords => {
            let records = event.records.as_deref().unwrap_or(&[]);
            plugin.on_request_records(event, records, event.dropped_records.unwrap_or(0))
        }
        Hook::Progress => {
            let stats = event.stats.clone().unwrap_or_default();
            let window = event.window.as_deref().cloned().unwrap_or_default();
            plugin.on_progress(event, &stats, &window)
        }
        _ => plugin.on_event(event),
    }
}

// ---------------------------------------------------------------------------------------------
// Reports
// ---------------------------------------------------------------------------------------------

/// A report metric's value: a number, a string or a boolean (`From` the usual types).
#[derive(Clone, Debug, PartialEq)]
pub struct MetricValue(Value);

macro_rules! metric_value_from {
    ($($t:ty),*) => {$(
        impl From<$t> for MetricValue {
            fn from(v: $t) -> Self {
                MetricValue(Value::from(v))
            }
        }
    )*};
}
metric_value_from!(
    i8, i16, i32, i64, isize, u8, u16, u32, u64, usize, f32, f64, bool, String, &str
);

impl MetricValue {
    /// The JSON value (`null` for a non-finite float, which [`report`] rejects).
    pub fn as_value(&self) -> &Value {
        &self.0
    }
}

/// Metrics and notes for the run's report (`plugins.<name>.report` in
/// `profile_export_aiperf.json`, and the console), sent with [`report`]:
///
/// ```
/// # use aiperf_plugin::Report;
/// let r = Report::new()
///     .metric("slo_violations", 3u64)
///     .metric("verdict", "fail")
///     .note("3 requests over the TTFT SLO");
/// assert!(!r.is_empty());
/// ```
///
/// Later metrics replace earlier ones of the same name; notes accumulate.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    metrics: Map<String, Value>,
    notes: Vec<String>,
}

impl Report {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets metric `name` (replacing an earlier value of this report).
    pub fn metric(mut self, name: impl Into<String>, value: impl Into<MetricValue>) -> Self {
        self.metrics.insert(name.into(), value.into().0);
        self
    }

    /// Adds a note.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// Whether there is nothing to report.
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty() && self.notes.is_empty()
    }
}

impl From<Report> for PluginReport {
    fn from(r: Report) -> Self {
        PluginReport {
            metrics: r.metrics,
            notes: r.notes,
        }
    }
}

/// Why a metric value cannot be reported, or `None` when it can.
fn bad_metric(name: &str, value: &Value) -> Option<String> {
    if name.is_empty() {
        return Some("a metric name must not be empty".to_owned());
    }
    let kind = match value {
        Value::Number(_) | Value::String(_) | Value::Bool(_) => return None,
        Value::Null => "null (or a non-finite number)",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    Some(format!(
        "metric `{name}`: {kind} is not allowed (a report metric is a number, a string or a \
         boolean)"
    ))
}

/// Adds metrics and notes to this plugin's part of the run's report.
///
/// Takes a [`Report`] (whose values are numbers, strings or booleans by construction) or a
/// [`PluginReport`] (whose values are checked: metrics of another kind, and non-finite
/// numbers, are left out and an error is [`log`]ged; the rest is sent). Where it goes:
///
/// - called from inside a callback of [`serve`]/[`serve_io`]: a `report` message written
///   before that callback's reply (from [`Plugin::configure`], just after `configured`; not
///   at all if the config is rejected);
/// - called from another thread while [`serve`] runs (after the handshake): written to stdout
///   at once;
/// - otherwise it cannot be delivered: a warning goes to stderr.
///
/// Returns whether everything was valid and delivered (or queued for delivery).
pub fn report(report: impl Into<PluginReport>) -> bool {
    let mut report = report.into();
    let mut valid = true;
    report
        .metrics
        .retain(|name, value| match bad_metric(name, value) {
            None => true,
            Some(why) => {
                log(LogLevel::Error, format!("report: {why}; left out"));
                valid = false;
                false
            }
        });
    if report.is_empty() {
        return valid;
    }
    let msg = PluginMessage::Report {
        metrics: report.metrics,
        notes: report.notes,
    };
    let pending = CALLBACK_OUTPUT.with(|cell| match cell.borrow_mut().as_mut() {
        Some(queue) => {
            queue.push(msg);
            None
        }
        None => Some(msg),
    });
    let Some(msg) = pending else { return valid };
    if STDOUT_PROTOCOL_ACTIVE.load(Ordering::SeqCst) {
        let line = encode_line(&msg);
        let mut out = io::stdout().lock();
        if out
            .write_all(line.as_bytes())
            .and_then(|()| out.flush())
            .is_ok()
        {
            return valid;
        }
    }
    eprintln!("warning: report not sent (no plugin loop to send it on): {msg:?}");
    false
}

// ---------------------------------------------------------------------------------------------
// Logging
// ---------------------------------------------------------------------------------------------

/// Severity of a [`log`] message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
}

impl LogLevel {
    /// The wire name: `debug`, `info`, `warning` or `error`.
    pub const fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

thread_local! {
    /// `Some` while a plugin callback runs inside `serve_io` on this thread: `log` and
    /// `report` messages of the callback are queued here, in order, and written to the
    /// protocol writer before the reply.
    static CALLBACK_OUTPUT: RefCell<Option<Vec<PluginMessage>>> = const { RefCell::new(None) };
}

/// Set while [`serve`] runs on the real stdout and the handshake has been sent.
static STDOUT_PROTOCOL_ACTIVE: AtomicBool = AtomicBool::new(false);

/// Sends a log message to the host, which copies it to its own log.
///
/// - Called from inside a [`Plugin::configure`] or [`Plugin::on_event`] callback: the message
///   becomes a protocol `log` message written just before that callback's reply.
/// - Called from another thread while [`serve`] runs (after the handshake): written to stdout
///   as a `log` message right away. Every protocol line is written with a single locked write,
///   so lines never interleave.
/// - Otherwise (before the handshake, after `serve` returns, or from another thread under
///   [`serve_io`]): written to stderr as `<level>: <message>`, which the host also logs.
pub fn log(level: LogLevel, message: impl Into<String>) {
    let message = message.into();
    let pending = CALLBACK_OUTPUT.with(|cell| match cell.borrow_mut().as_mut() {
        Some(queue) => {
            queue.push(log_message(level, message));
            None
        }
        None => Some(message),
    });
    let Some(message) = pending else { return };
    if STDOUT_PROTOCOL_ACTIVE.load(Ordering::SeqCst) {
        let line = encode_line(&log_message(level, message.clone()));
        let mut out = io::stdout().lock();
        if out
            .write_all(line.as_bytes())
            .and_then(|()| out.flush())
            .is_ok()
        {
            return;
        }
    }
    eprintln!("{level}: {message}");
}

fn log_message(level: LogLevel, message: String) -> PluginMessage {
    PluginMessage::Log {
        level: level.as_str().to_owned(),
        message,
    }
}

/// Runs `f` with output capture enabled on this thread and panics caught. Returns the
/// callback's result (a panic becomes `Err`) and the `log`/`report` messages it made.
fn run_callback<F>(what: &str, f: F) -> (Result<(), String>, Vec<PluginMessage>)
where
    F: FnOnce() -> Result<(), String>,
{
    CALLBACK_OUTPUT.with(|cell| *cell.borrow_mut() = Some(Vec::new()));
    let result = panic::catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|payload| Err(format!("panic in {what}: {}", panic_message(&*payload))));
    let output = CALLBACK_OUTPUT.with(|cell| cell.borrow_mut().take().unwrap_or_default());
    (result, output)
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(non-string panic payload)"
    }
}

// ---------------------------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------------------------

/// Runs the protocol for `plugin` on the process's stdin and stdout until `shutdown` or end of
/// input.
///
/// Returns `Ok(())` on `shutdown` or EOF. Returns an error if the host offers no protocol version
/// this crate speaks (after writing an `error` message), or on an I/O error. A typical `main`:
///
/// ```no_run
/// # use aiperf_plugin::{Plugin, Event, Hook};
/// # struct P;
/// # impl Plugin for P {
/// #     fn name(&self) -> &str { "p" }
/// #     fn version(&self) -> &str { "0" }
/// #     fn hooks(&self) -> Vec<Hook> { vec![] }
/// #     fn on_event(&mut self, _: &Event) -> Result<(), String> { Ok(()) }
/// # }
/// fn main() -> std::io::Result<()> {
///     aiperf_plugin::serve(P)
/// }
/// ```
pub fn serve<P: Plugin>(plugin: P) -> io::Result<()> {
    let stdin = io::stdin();
    // `Stdout` (not a long-held `StdoutLock`) so that `log` from other threads can interleave
    // whole lines; `write_all` on `Stdout` holds the lock for the whole line.
    let result = serve_impl(plugin, stdin.lock(), io::stdout(), MAX_LINE_BYTES, &|| {
        STDOUT_PROTOCOL_ACTIVE.store(true, Ordering::SeqCst)
    });
    STDOUT_PROTOCOL_ACTIVE.store(false, Ordering::SeqCst);
    result
}

/// Like [`serve`], on any reader and writer (for tests, or for custom transports).
///
/// [`log`] calls made inside the plugin's `configure` / `on_event` callbacks are written to
/// `writer`; log calls from other threads go to stderr.
pub fn serve_io<P, R, W>(plugin: P, reader: R, writer: W) -> io::Result<()>
where
    P: Plugin,
    R: BufRead,
    W: Write,
{
    serve_impl(plugin, reader, writer, MAX_LINE_BYTES, &|| {})
}

fn send<W: Write>(writer: &mut W, msg: &PluginMessage) -> io::Result<()> {
    writer.write_all(encode_line(msg).as_bytes())?;
    writer.flush()
}

fn send_all<W: Write>(writer: &mut W, msgs: Vec<PluginMessage>) -> io::Result<()> {
    for msg in msgs {
        send(writer, &msg)?;
    }
    Ok(())
}

/// Outcome of reading one line.
enum Line {
    Eof,
    Text(String),
    /// Longer than the limit, or not UTF-8; the rest of the line has been consumed.
    Garbage(&'static str),
}

/// Reads one `\n`-terminated line of at most `max` bytes (excluding the terminator), without
/// buffering more than `max + 1` bytes of an overlong line. A final line without `\n` counts.
fn read_line_bounded<R: BufRead>(reader: &mut R, max: usize) -> io::Result<Line> {
    let mut buf = Vec::new();
    let mut overlong = false;
    let mut saw_any = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            if !saw_any {
                return Ok(Line::Eof);
            }
            break;
        }
        saw_any = true;
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if !overlong {
            if buf.len() + chunk.len() > max {
                overlong = true;
                buf = Vec::new();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let consumed = done.unwrap_or(available.len());
        reader.consume(consumed);
        if done.is_some() {
            break;
        }
    }
    if overlong {
        return Ok(Line::Garbage("line exceeds the length limit"));
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    match String::from_utf8(buf) {
        Ok(s) => Ok(Line::Text(s)),
        Err(_) => Ok(Line::Garbage("line is not valid UTF-8")),
    }
}

/// If `line` looks like an event (has `"type":"event"` and a numeric `id`) return its id, so an
/// event we cannot decode (e.g. a hook newer than this crate) can still be acked with an error.
fn undecodable_event_id(line: &str) -> Option<u64> {
    let value: Value = serde_json::from_str(line).ok()?;
    if value.get("type")?.as_str()? != "event" {
        return None;
    }
    value.get("id")?.as_u64()
}

fn serve_impl<P, R, W>(
    mut plugin: P,
    mut reader: R,
    mut writer: W,
    max_line: usize,
    after_handshake: &dyn Fn(),
) -> io::Result<()>
where
    P: Plugin,
    R: BufRead,
    W: Write,
{
    loop {
        let line = match read_line_bounded(&mut reader, max_line)? {
            Line::Eof => return Ok(()),
            Line::Text(line) => line,
            Line::Garbage(why) => {
                eprintln!("aiperf-plugin: ignoring input: {why}");
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let msg: HostMessage = match decode_line(&line) {
            Ok(msg) => msg,
            Err(err) => {
                if let Some(id) = undecodable_event_id(&line) {
                    let error = format!("cannot decode event: {err}");
                    send(
                        &mut writer,
                        &PluginMessage::Ack {
                            id,
                            error: Some(error),
                        },
                    )?;
                } else {
                    eprintln!("aiperf-plugin: ignoring unrecognized message: {err}");
                }
                continue;
            }
        };
        match msg {
            HostMessage::Hello {
                protocol_versions, ..
            } => {
                if !protocol_versions.contains(&PROTOCOL_VERSION) {
                    let message = format!(
                        "protocol version mismatch: plugin speaks [{PROTOCOL_VERSION}], \
                         host offered {protocol_versions:?}"
                    );
                    send(
                        &mut writer,
                        &PluginMessage::Error {
                            message: message.clone(),
                        },
                    )?;
                    return Err(io::Error::new(io::ErrorKind::Unsupported, message));
                }
                let handshake = PluginMessage::Handshake {
                    protocol_version: PROTOCOL_VERSION,
                    name: plugin.name().to_owned(),
                    version: plugin.version().to_owned(),
                    hooks: plugin.hooks(),
                    config_schema: plugin.config_schema(),
                };
                send(&mut writer, &handshake)?;
                after_handshake();
            }
            HostMessage::Configure { config, context } => {
                let (result, output) = run_callback("configure", || {
                    plugin.configure_with_context(config, context.map(|c| *c))
                });
                // Logs go before the reply; reports after `configured` (the host takes them
                // from a configured plugin), and not at all when the config is rejected.
                let (reports, logs): (Vec<_>, Vec<_>) = output
                    .into_iter()
                    .partition(|m| matches!(m, PluginMessage::Report { .. }));
                send_all(&mut writer, logs)?;
                match result {
                    Ok(()) => {
                        send(&mut writer, &PluginMessage::Configured)?;
                        send_all(&mut writer, reports)?;
                    }
                    Err(message) => {
                        if !reports.is_empty() {
                            eprintln!(
                                "aiperf-plugin: dropping {} report(s) made by a rejected configure",
                                reports.len()
                            );
                        }
                        send(&mut writer, &PluginMessage::Error { message })?;
                    }
                }
            }
            HostMessage::Event(event) => {
                let what = match event.hook {
                    Hook::RequestRecords => "on_request_records",
                    Hook::Progress => "on_progress",
                    _ => "on_event",
                };
                let (result, output) = run_callback(what, || dispatch(&mut plugin, &event));
                send_all(&mut writer, output)?;
                send(
                    &mut writer,
                    &PluginMessage::Ack {
                        id: event.id,
                        error: result.err(),
                    },
                )?;
            }
            HostMessage::Shutdown => {
                writer.flush()?;
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Cursor;

    #[derive(Default)]
    struct TestPlugin {
        config: Option<Value>,
        seen: Vec<(u64, Hook, Option<String>)>,
    }

    impl Plugin for TestPlugin {
        fn name(&self) -> &str {
            "test-plugin"
        }
        fn version(&self) -> &str {
            "1.2.3"
        }
        fn hooks(&self) -> Vec<Hook> {
            vec![Hook::PhaseStart, Hook::PhaseComplete]
        }
        fn config_schema(&self) -> Option<Value> {
            Some(json!({"type": "object", "required": ["key"]}))
        }
        fn configure(&mut self, config: Value) -> Result<(), String> {
            if config.get("key").and_then(Value::as_str) == Some("bad") {
                return Err("key must not be bad".into());
            }
            if config.get("key").and_then(Value::as_str) == Some("panic") {
                panic!("configure exploded");
            }
            self.config = Some(config);
            Ok(())
        }
        fn on_event(&mut self, event: &Event) -> Result<(), String> {
            self.seen.push((event.id, event.hook, event.phase.clone()));
            match event.phase.as_deref() {
                Some("panic") => panic!("hook exploded {}", event.id),
                Some("fail") => Err("it failed".into()),
                Some("log") => {
                    log(LogLevel::Warning, "careful");
                    log(LogLevel::Debug, format!("event {}", event.id));
                    Ok(())
                }
                _ => Ok(()),
            }
        }
    }

    fn hello(versions: &[u32]) -> String {
        encode_line(&HostMessage::Hello {
            protocol_versions: versions.to_vec(),
            host: "aiperf".into(),
            host_version: "0.1.0".into(),
            plugin_name: "test".into(),
        })
    }

    fn event(id: u64, hook: Hook, phase: Option<&str>) -> String {
        encode_line(&HostMessage::Event(Event {
            id,
            hook,
            phase: phase.map(str::to_owned),
            stats: None,
            summary: None,
            context: None,
            records: None,
            dropped_records: None,
            window: None,
            server_metrics: None,
        }))
    }

    fn run(input: &str) -> (io::Result<()>, Vec<PluginMessage>) {
        let mut out = Vec::new();
        let result = serve_io(
            TestPlugin::default(),
            Cursor::new(input.as_bytes().to_vec()),
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'));
        let msgs = text
            .lines()
            .map(|l| decode_line::<PluginMessage>(l).unwrap())
            .collect();
        (result, msgs)
    }

    #[test]
    fn full_session() {
        let mut input = hello(&[1]);
        input += &encode_line(&HostMessage::Configure {
            config: json!({"key": "k"}),
            context: None,
        });
        input += &event(1, Hook::PhaseStart, Some("warmup"));
        input += &event(2, Hook::PhaseComplete, Some("panic"));
        input += &event(3, Hook::PhaseComplete, Some("fail"));
        input += &event(4, Hook::PhaseStart, Some("log"));
        input += &event(5, Hook::PhaseComplete, Some("profiling"));
        input += &encode_line(&HostMessage::Shutdown);
        input += &event(6, Hook::PhaseComplete, None); // after shutdown: never read

        let (result, msgs) = run(&input);
        result.unwrap();
        assert_eq!(msgs.len(), 9, "{msgs:#?}");
        assert_eq!(
            msgs[0],
            PluginMessage::Handshake {
                protocol_version: 1,
                name: "test-plugin".into(),
                version: "1.2.3".into(),
                hooks: vec![Hook::PhaseStart, Hook::PhaseComplete],
                config_schema: Some(json!({"type": "object", "required": ["key"]})),
            }
        );
        assert_eq!(msgs[1], PluginMessage::Configured);
        assert_eq!(msgs[2], PluginMessage::Ack { id: 1, error: None });
        match &msgs[3] {
            PluginMessage::Ack {
                id: 2,
                error: Some(e),
            } => assert!(e.contains("panic in on_event: hook exploded 2"), "{e}"),
            other => panic!("expected error ack for 2, got {other:?}"),
        }
        assert_eq!(
            msgs[4],
            PluginMessage::Ack {
                id: 3,
                error: Some("it failed".into())
            }
        );
        assert_eq!(
            msgs[5],
            PluginMessage::Log {
                level: "warning".into(),
                message: "careful".into()
            }
        );
        assert_eq!(
            msgs[6],
            PluginMessage::Log {
                level: "debug".into(),
                message: "event 4".into()
            }
        );
        assert_eq!(msgs[7], PluginMessage::Ack { id: 4, error: None });
        assert_eq!(msgs[8], PluginMessage::Ack { id: 5, error: None });
    }

    #[test]
    fn plugin_state_survives_panics() {
        let mut input = hello(&[1]);
        input += &event(1, Hook::PhaseStart, Some("panic"));
        input += &event(2, Hook::PhaseStart, Some("warmup"));
        let mut plugin = TestPlugin::default();
        let mut out = Vec::new();
        // Drive a `&mut` plugin through a small adapter to inspect it afterwards.
        struct ByRef<'a>(&'a mut TestPlugin);
        impl Plugin for ByRef<'_> {
            fn name(&self) -> &str {
                self.0.name()
            }
            fn version(&self) -> &str {
                self.0.version()
            }
            fn hooks(&self) -> Vec<Hook> {
                self.0.hooks()
            }
            fn on_event(&mut self, event: &Event) -> Result<(), String> {
                self.0.on_event(event)
            }
        }
        serve_io(
            ByRef(&mut plugin),
            Cursor::new(input.into_bytes()),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            plugin.seen,
            vec![
                (1, Hook::PhaseStart, Some("panic".into())),
                (2, Hook::PhaseStart, Some("warmup".into())),
            ]
        );
    }

    #[test]
    fn unsupported_version_is_an_error() {
        let (result, msgs) = run(&(hello(&[99]) + &encode_line(&HostMessage::Shutdown)));
        let err = result.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
        assert_eq!(msgs.len(), 1, "{msgs:#?}");
        match &msgs[0] {
            PluginMessage::Error { message } => {
                assert!(message.contains("protocol version mismatch"), "{message}");
                assert!(message.contains("99"), "{message}");
            }
            other => panic!("expected error, got {other:?}"),
        }
    }

    #[test]
    fn multiple_versions_offered() {
        let (result, msgs) = run(&hello(&[3, 1, 2]));
        result.unwrap();
        assert!(matches!(
            msgs[..],
            [PluginMessage::Handshake {
                protocol_version: 1,
                ..
            }]
        ));
    }

    #[test]
    fn config_rejection_and_panic_become_error_messages() {
        let mut input = hello(&[1]);
        input += &encode_line(&HostMessage::Configure {
            config: json!({"key": "bad"}),
            context: None,
        });
        input += &encode_line(&HostMessage::Configure {
            config: json!({"key": "panic"}),
            context: None,
        });
        let (result, msgs) = run(&input);
        result.unwrap();
        assert_eq!(
            msgs[1],
            PluginMessage::Error {
                message: "key must not be bad".into()
            }
        );
        match &msgs[2] {
            PluginMessage::Error { message } => {
                assert!(message.contains("panic in configure: configure exploded"))
            }
            other => panic!("expected error, got {other:?}"),
        }
    }

    #[test]
    fn eof_without_shutdown_is_clean() {
        let (result, msgs) = run("");
        result.unwrap();
        assert!(msgs.is_empty());
        let input = hello(&[1]) + &event(1, Hook::PhaseStart, None);
        let (result, msgs) = run(input.trim_end()); // last line without newline still counts
        result.unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[1], PluginMessage::Ack { id: 1, error: None });
    }

    #[test]
    fn unknown_and_garbage_input_is_tolerated() {
        let mut input = hello(&[1]);
        input += "\n";
        input += "not json at all\n";
        input += "{\"type\":\"future_message\",\"x\":1}\n";
        input += "{\"type\":\"event\",\"id\":9,\"hook\":\"request_done\",\"phase\":null}\n";
        input += "{\"type\":\"event\",\"id\":10,\"hook\":\"phase_start\",\"phase\":\"warmup\",\"stats\":null,\"summary\":null,\"extra\":true}\r\n";
        let (result, msgs) = run(&input);
        result.unwrap();
        assert_eq!(msgs.len(), 3, "{msgs:#?}");
        match &msgs[1] {
            PluginMessage::Ack {
                id: 9,
                error: Some(e),
            } => assert!(e.contains("cannot decode event"), "{e}"),
            other => panic!("expected error ack for 9, got {other:?}"),
        }
        assert_eq!(
            msgs[2],
            PluginMessage::Ack {
                id: 10,
                error: None
            }
        );
    }

    #[test]
    fn overlong_lines_are_skipped() {
        let long = format!("{{\"type\":\"log\",\"pad\":\"{}\"}}\n", "x".repeat(200));
        let input = hello(&[1]) + &long + &event(1, Hook::PhaseStart, None);
        let mut out = Vec::new();
        serve_impl(
            TestPlugin::default(),
            // Tiny buffer so the long line spans several fill_buf calls.
            io::BufReader::with_capacity(8, Cursor::new(input.into_bytes())),
            &mut out,
            110,
            &|| {},
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8(out).unwrap();
        let msgs: Vec<PluginMessage> = text.lines().map(|l| decode_line(l).unwrap()).collect();
        assert_eq!(msgs.len(), 2, "{msgs:#?}");
        assert!(matches!(msgs[0], PluginMessage::Handshake { .. }));
        assert_eq!(msgs[1], PluginMessage::Ack { id: 1, error: None });
    }

    #[test]
    fn read_line_bounded_edges() {
        let mut r =
            io::BufReader::with_capacity(3, Cursor::new(b"abcdef\nxy\r\n\xff\nlast".to_vec()));
        assert!(matches!(read_line_bounded(&mut r, 6).unwrap(), Line::Text(s) if s == "abcdef"));
        assert!(matches!(read_line_bounded(&mut r, 6).unwrap(), Line::Text(s) if s == "xy"));
        assert!(matches!(
            read_line_bounded(&mut r, 6).unwrap(),
            Line::Garbage(_)
        ));
        assert!(matches!(read_line_bounded(&mut r, 6).unwrap(), Line::Text(s) if s == "last"));
        assert!(matches!(read_line_bounded(&mut r, 6).unwrap(), Line::Eof));
        let mut r = Cursor::new(b"abcdefg\nok\n".to_vec());
        assert!(matches!(
            read_line_bounded(&mut r, 6).unwrap(),
            Line::Garbage(_)
        ));
        assert!(matches!(read_line_bounded(&mut r, 6).unwrap(), Line::Text(s) if s == "ok"));
    }

    #[test]
    fn log_outside_callbacks_does_not_panic() {
        // Goes to stderr (no serve running on this thread, stdout protocol inactive).
        log(LogLevel::Info, "hello from a test");
        assert_eq!(LogLevel::Warning.to_string(), "warning");
    }

    /// A plugin that keeps the context it is configured with and logs what it got.
    struct ContextPlugin;

    impl Plugin for ContextPlugin {
        fn name(&self) -> &str {
            "ctx"
        }
        fn version(&self) -> &str {
            "0"
        }
        fn hooks(&self) -> Vec<Hook> {
            vec![Hook::BenchmarkStart]
        }
        fn configure_with_context(
            &mut self,
            _config: Value,
            context: Option<RunContext>,
        ) -> Result<(), String> {
            let id = context.map_or("none".to_owned(), |c| c.run_id);
            log(LogLevel::Info, format!("configured for {id}"));
            Ok(())
        }
        fn on_event(&mut self, event: &Event) -> Result<(), String> {
            let model = event.context.as_ref().map(|c| c.models.join(","));
            log(LogLevel::Info, format!("start {model:?}"));
            Ok(())
        }
    }

    #[test]
    fn the_context_reaches_configure_and_benchmark_start() {
        let ctx = RunContext {
            run_id: "run-1".into(),
            models: vec!["m".into()],
            ..RunContext::default()
        };
        let mut input = hello(&[1]);
        input += &encode_line(&HostMessage::Configure {
            config: json!({}),
            context: Some(Box::new(ctx.clone())),
        });
        // An older host: no context.
        input += &encode_line(&HostMessage::Configure {
            config: json!({}),
            context: None,
        });
        input += &encode_line(&HostMessage::Event(Event {
            id: 1,
            hook: Hook::BenchmarkStart,
            phase: None,
            stats: None,
            summary: None,
            context: Some(Box::new(ctx)),
            records: None,
            dropped_records: None,
            window: None,
            server_metrics: None,
        }));
        let mut out = Vec::new();
        serve_io(ContextPlugin, Cursor::new(input.into_bytes()), &mut out).unwrap();
        let logs: Vec<String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .filter_map(|l| match decode_line::<PluginMessage>(l).unwrap() {
                PluginMessage::Log { message, .. } => Some(message),
                _ => None,
            })
            .collect();
        assert_eq!(
            logs,
            [
                "configured for run-1",
                "configured for none",
                "start Some(\"m\")"
            ]
        );
    }

    /// Uses the streaming hooks and reports from every kind of callback.
    struct StreamPlugin;

    impl Plugin for StreamPlugin {
        fn name(&self) -> &str {
            "streams"
        }
        fn version(&self) -> &str {
            "0"
        }
        fn hooks(&self) -> Vec<Hook> {
            vec![Hook::RequestRecords, Hook::Progress, Hook::PhaseComplete]
        }
        fn configure(&mut self, config: Value) -> Result<(), String> {
            assert!(report(Report::new().note("configured")));
            log(LogLevel::Info, "configuring");
            if config["reject"] == json!(true) {
                return Err("rejected".into());
            }
            Ok(())
        }
        fn on_event(&mut self, event: &Event) -> Result<(), String> {
            log(LogLevel::Info, format!("on_event {}", event.hook));
            assert!(report(
                Report::new().metric("done", true).metric("label", "p")
            ));
            Ok(())
        }
        fn on_request_records(
            &mut self,
            event: &Event,
            records: &[Value],
            dropped_records: u64,
        ) -> Result<(), String> {
            let slow = records
                .iter()
                .filter(|r| {
                    r["metrics"]["time_to_first_token"]["value"]
                        .as_f64()
                        .is_some_and(|v| v > 10.0)
                })
                .count();
            log(
                LogLevel::Debug,
                format!("{} records of {:?}", records.len(), event.phase),
            );
            assert!(report(
                Report::new()
                    .metric("slow", slow)
                    .metric("dropped", dropped_records)
                    .note(format!("batch {}", event.id))
            ));
            if dropped_records == 99 {
                return Err("too many dropped".into());
            }
            Ok(())
        }
        fn on_progress(
            &mut self,
            _event: &Event,
            stats: &PhaseStats,
            window: &ProgressWindow,
        ) -> Result<(), String> {
            let p90 = window.metrics.get("time_to_first_token").map(|s| s.p90);
            let mut metrics = Map::new();
            metrics.insert("rps".into(), json!(window.request_throughput));
            metrics.insert("late".into(), json!(stats.late_sends));
            metrics.insert("p90".into(), json!(p90));
            metrics.insert("list".into(), json!([1]));
            let ok = report(PluginReport {
                metrics,
                notes: vec!["progress".into()],
            });
            assert!(!ok, "a report with bad values is not all valid");
            Ok(())
        }
    }

    fn run_with<P: Plugin>(plugin: P, input: &str) -> Vec<PluginMessage> {
        let mut out = Vec::new();
        serve_io(plugin, Cursor::new(input.as_bytes().to_vec()), &mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| decode_line::<PluginMessage>(l).unwrap())
            .collect()
    }

    fn configure_line(config: Value) -> String {
        encode_line(&HostMessage::Configure {
            config,
            context: None,
        })
    }

    fn record(ttft: Option<f64>) -> Value {
        let metrics = match ttft {
            Some(v) => json!({"time_to_first_token": {"value": v, "unit": "ms"},
                              "request_latency": {"value": 50.0, "unit": "ms"}}),
            None => json!({}),
        };
        let error = if ttft.is_none() {
            json!({"code": 500, "type": "HTTPError", "message": "boom"})
        } else {
            Value::Null
        };
        json!({"metadata": {"benchmark_phase": "profiling"}, "metrics": metrics, "error": error})
    }

    fn records_line(id: u64, records: Vec<Value>, dropped: Option<u64>) -> String {
        encode_line(&HostMessage::Event(Event {
            id,
            hook: Hook::RequestRecords,
            phase: Some("profiling".into()),
            stats: None,
            summary: None,
            context: None,
            records: Some(records),
            dropped_records: dropped,
            window: None,
            server_metrics: None,
        }))
    }

    fn report_msg(metrics: Value, notes: &[&str]) -> PluginMessage {
        let Value::Object(metrics) = metrics else {
            panic!("metrics must be an object")
        };
        PluginMessage::Report {
            metrics,
            notes: notes.iter().map(|n| n.to_string()).collect(),
        }
    }

    fn info(message: &str) -> PluginMessage {
        log_message(LogLevel::Info, message.to_owned())
    }

    #[test]
    fn request_records_reach_on_request_records_and_the_report_precedes_the_ack() {
        let mut input = hello(&[1]);
        input += &configure_line(json!({}));
        input += &records_line(
            1,
            vec![record(Some(25.0)), record(Some(3.0)), record(None)],
            Some(2),
        );
        // A host that leaves dropped_records out: 0.
        input += &records_line(2, vec![record(Some(11.0))], None);
        input += &records_line(3, vec![], Some(99));
        let msgs = run_with(StreamPlugin, &input);
        assert_eq!(
            msgs[1..],
            [
                info("configuring"),
                PluginMessage::Configured,
                report_msg(json!({}), &["configured"]),
                log_message(LogLevel::Debug, "3 records of Some(\"profiling\")".into()),
                report_msg(json!({"slow": 1, "dropped": 2}), &["batch 1"]),
                PluginMessage::Ack { id: 1, error: None },
                log_message(LogLevel::Debug, "1 records of Some(\"profiling\")".into()),
                report_msg(json!({"slow": 1, "dropped": 0}), &["batch 2"]),
                PluginMessage::Ack { id: 2, error: None },
                log_message(LogLevel::Debug, "0 records of Some(\"profiling\")".into()),
                report_msg(json!({"slow": 0, "dropped": 99}), &["batch 3"]),
                PluginMessage::Ack {
                    id: 3,
                    error: Some("too many dropped".into())
                },
            ]
        );
        let PluginMessage::Handshake { hooks, .. } = &msgs[0] else {
            panic!("{:?}", msgs[0])
        };
        assert_eq!(
            hooks,
            &[Hook::RequestRecords, Hook::Progress, Hook::PhaseComplete]
        );
    }

    #[test]
    fn progress_reaches_on_progress_typed_and_bad_report_values_are_left_out_and_logged() {
        let mut window = ProgressWindow {
            window_sec: 5.0,
            requests: 40,
            request_throughput: 8.0,
            ..ProgressWindow::default()
        };
        window.metrics.insert(
            "time_to_first_token".into(),
            crate::protocol::WindowStat {
                unit: "ms".into(),
                count: 40,
                p90: 20.5,
                ..Default::default()
            },
        );
        let stats = PhaseStats {
            phase: "profiling".into(),
            late_sends: 3,
            max_send_lag_ms: Some(1.5),
            ..PhaseStats::default()
        };
        let mut input = hello(&[1]);
        input += &encode_line(&HostMessage::Event(Event {
            id: 7,
            hook: Hook::Progress,
            phase: Some("profiling".into()),
            stats: Some(stats),
            summary: None,
            context: None,
            records: None,
            dropped_records: None,
            window: Some(Box::new(window)),
            server_metrics: None,
        }));
        // A progress event without stats or window: defaults, no crash.
        input += &event(8, Hook::Progress, Some("warmup"));
        let msgs = run_with(StreamPlugin, &input);
        let bad = "report: metric `list`: an array is not allowed (a report metric is a number, \
                   a string or a boolean); left out";
        assert_eq!(
            msgs[1..4],
            [
                log_message(LogLevel::Error, bad.into()),
                report_msg(json!({"rps": 8.0, "late": 3, "p90": 20.5}), &["progress"]),
                PluginMessage::Ack { id: 7, error: None },
            ]
        );
        // Event 8's two errors come in the map's order, which serde_json's `preserve_order`
        // (on when the whole workspace is built) changes: compared as a set.
        let mut logs: Vec<String> = msgs[4..6].iter().map(|m| format!("{m:?}")).collect();
        logs.sort();
        let mut want: Vec<String> = [
            log_message(LogLevel::Error, bad.into()),
            log_message(
                LogLevel::Error,
                "report: metric `p90`: null (or a non-finite number) is not allowed (a report \
                 metric is a number, a string or a boolean); left out"
                    .into(),
            ),
        ]
        .iter()
        .map(|m| format!("{m:?}"))
        .collect();
        want.sort();
        assert_eq!(logs, want);
        assert_eq!(
            msgs[6..],
            [
                report_msg(json!({"rps": 0.0, "late": 0}), &["progress"]),
                PluginMessage::Ack { id: 8, error: None },
            ]
        );
    }

    #[test]
    fn lifecycle_hooks_still_go_to_on_event_with_reports() {
        let input = hello(&[1]) + &event(1, Hook::PhaseComplete, Some("profiling"));
        let msgs = run_with(StreamPlugin, &input);
        assert_eq!(
            msgs[1..],
            [
                info("on_event phase_complete"),
                report_msg(json!({"done": true, "label": "p"}), &[]),
                PluginMessage::Ack { id: 1, error: None },
            ]
        );
    }

    #[test]
    fn a_rejected_config_sends_no_report() {
        let input = hello(&[1]) + &configure_line(json!({"reject": true}));
        let msgs = run_with(StreamPlugin, &input);
        assert_eq!(
            msgs[1..],
            [
                info("configuring"),
                PluginMessage::Error {
                    message: "rejected".into()
                },
            ]
        );
    }

    /// A plugin written before the streaming hooks: only `on_event`.
    struct OldPlugin;

    impl Plugin for OldPlugin {
        fn name(&self) -> &str {
            "old"
        }
        fn version(&self) -> &str {
            "0"
        }
        fn hooks(&self) -> Vec<Hook> {
            Hook::ALL.to_vec()
        }
        fn on_event(&mut self, event: &Event) -> Result<(), String> {
            log(LogLevel::Info, format!("on_event {}", event.hook));
            Ok(())
        }
    }

    /// Implements nothing but its identity: every hook method has a default.
    struct Minimal;

    impl Plugin for Minimal {
        fn name(&self) -> &str {
            "minimal"
        }
        fn version(&self) -> &str {
            "0"
        }
        fn hooks(&self) -> Vec<Hook> {
            vec![Hook::RequestRecords]
        }
    }

    #[test]
    fn streaming_hooks_default_to_doing_nothing() {
        let mut input = hello(&[1]);
        input += &records_line(1, vec![record(Some(1.0))], Some(0));
        input += &event(2, Hook::Progress, Some("profiling"));
        input += &event(3, Hook::PhaseStart, Some("profiling"));
        let msgs = run_with(OldPlugin, &input);
        assert_eq!(
            msgs[1..],
            [
                PluginMessage::Ack { id: 1, error: None },
                PluginMessage::Ack { id: 2, error: None },
                info("on_event phase_start"),
                PluginMessage::Ack { id: 3, error: None },
            ]
        );
        let msgs = run_with(Minimal, &input);
        assert_eq!(
            msgs[1..],
            [
                PluginMessage::Ack { id: 1, error: None },
                PluginMessage::Ack { id: 2, error: None },
                PluginMessage::Ack { id: 3, error: None },
            ]
        );
    }

    #[test]
    fn report_outside_a_plugin_loop_is_not_delivered() {
        // No serve on this thread and the stdout protocol inactive: a warning on stderr.
        assert!(!report(Report::new().metric("a", 1)));
        assert!(report(Report::new()), "nothing to send is not a failure");
        assert!(!report(Report::new().metric("nan", f64::NAN)));
        assert_eq!(MetricValue::from(2.5f64).as_value(), &json!(2.5));
        assert_eq!(MetricValue::from("x").as_value(), &json!("x"));
        assert_eq!(MetricValue::from(f64::INFINITY).as_value(), &Value::Null);
        let r: PluginReport = Report::new()
            .metric("n", 1u8)
            .metric("n", 2i64)
            .note("a")
            .note("b")
            .into();
        assert_eq!(r.metrics, *json!({"n": 2}).as_object().unwrap());
        assert_eq!(r.notes, ["a", "b"]);
    }
}
