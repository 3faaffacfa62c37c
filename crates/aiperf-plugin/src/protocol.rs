//! Wire types for the aiperf plugin process protocol, version 1.
//!
//! See `docs/plugin-protocol.md` in the aiperf repository for the full specification. In short:
//! the host writes [`HostMessage`]s to the plugin's stdin and the plugin writes
//! [`PluginMessage`]s to its stdout, one compact JSON object per line, each tagged by a string
//! field `"type"`.
//!
//! Decoding rules implemented here:
//!
//! - Fields a side does not know are ignored (no `deny_unknown_fields` anywhere).
//! - A line that is not a JSON object, or whose `type` is unknown, fails to decode; the caller
//!   decides what to do with such *garbage*.
//! - Lines longer than [`MAX_LINE_BYTES`] fail to decode.
//! - In a `handshake`, hook names this crate does not know are **skipped** rather than failing
//!   the whole message (see [`PluginMessage::Handshake`] and [`handshake_unknown_hooks`]).

use std::fmt;
use std::str::FromStr;

use serde::de::{self, DeserializeOwned, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version implemented by this crate.
pub const PROTOCOL_VERSION: u32 = 1;

/// Lines longer than this many bytes (excluding the terminating newline) are garbage.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Hook
// ---------------------------------------------------------------------------------------------

/// A lifecycle point at which the host sends an [`Event`] to the plugins that asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    BenchmarkStart,
    PhaseStart,
    /// Opt-in: the phase's finished requests, in batches ([`Event::records`]), off the hot
    /// path; batches a slow plugin cannot take are dropped and counted.
    RequestRecords,
    /// Opt-in: live counters ([`Event::stats`]) and rolling metrics ([`Event::window`]) every
    /// few seconds while a phase runs.
    Progress,
    PhaseSendingComplete,
    PhaseTimeout,
    PhaseComplete,
    BenchmarkComplete,
    /// Opt-in: before the first run of a sweep or of repeated runs (`--concurrency 1,4`,
    /// `--num-profile-runs 3`), with the first run's context ([`RunContext::sweep`]).
    SweepStart,
    /// Opt-in: after the last run of a sweep, with the sweep's aggregate as the summary.
    SweepComplete,
}

impl Hook {
    /// Every hook, in the order they can fire during a run.
    pub const ALL: [Hook; 10] = [
        Hook::SweepStart,
        Hook::BenchmarkStart,
        Hook::PhaseStart,
        Hook::RequestRecords,
        Hook::Progress,
        Hook::PhaseSendingComplete,
        Hook::PhaseTimeout,
        Hook::PhaseComplete,
        Hook::BenchmarkComplete,
        Hook::SweepComplete,
    ];

    /// The lifecycle hooks: each fires once per phase or run (not `request_records` or
    /// `progress`, which fire many times while a phase runs).
    pub const LIFECYCLE: [Hook; 6] = [
        Hook::BenchmarkStart,
        Hook::PhaseStart,
        Hook::PhaseSendingComplete,
        Hook::PhaseTimeout,
        Hook::PhaseComplete,
        Hook::BenchmarkComplete,
    ];

    /// The wire name, e.g. `"phase_start"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Hook::BenchmarkStart => "benchmark_start",
            Hook::PhaseStart => "phase_start",
            Hook::RequestRecords => "request_records",
            Hook::Progress => "progress",
            Hook::PhaseSendingComplete => "phase_sending_complete",
            Hook::PhaseTimeout => "phase_timeout",
            Hook::PhaseComplete => "phase_complete",
            Hook::BenchmarkComplete => "benchmark_complete",
            Hook::SweepStart => "sweep_start",
            Hook::SweepComplete => "sweep_complete",
        }
    }

    /// `true` for hooks that belong to a phase (their events carry `phase`, and `stats`
    /// except `request_records`); `false` for the benchmark and sweep hooks.
    pub const fn is_phase_hook(self) -> bool {
        !matches!(
            self,
            Hook::BenchmarkStart | Hook::BenchmarkComplete | Hook::SweepStart | Hook::SweepComplete
        )
    }

    /// `true` for `sweep_start` and `sweep_complete`, which wrap the runs of a sweep.
    pub const fn is_sweep(self) -> bool {
        matches!(self, Hook::SweepStart | Hook::SweepComplete)
    }

    /// `true` for `request_records` and `progress`, which fire many times per phase.
    pub const fn is_streaming(self) -> bool {
        matches!(self, Hook::RequestRecords | Hook::Progress)
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error returned by [`Hook::from_str`] for a name that is not a known hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownHook(pub String);

impl fmt::Display for UnknownHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown hook {:?}", self.0)
    }
}

impl std::error::Error for UnknownHook {}

impl FromStr for Hook {
    type Err = UnknownHook;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Hook::ALL
            .iter()
            .copied()
            .find(|h| h.as_str() == s)
            .ok_or_else(|| UnknownHook(s.to_owned()))
    }
}

/// Splits hook names into the known hooks (in first-seen order, without duplicates) and the
/// names that are not known hooks (in order, as given).
pub fn split_hook_names<I, S>(names: I) -> (Vec<Hook>, Vec<String>)
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for name in names {
        let name = name.as_ref();
        match name.parse::<Hook>() {
            Ok(h) if !known.contains(&h) => known.push(h),
            Ok(_) => {}
            Err(_) => unknown.push(name.to_owned()),
        }
    }
    (known, unknown)
}

/// Returns the hook names in a `handshake` line that are not known [`Hook`]s.
///
/// [`decode_line`] silently skips such names (so a plugin built against a newer protocol
/// revision still handshakes); a host that wants to warn about them can call this on the same
/// line. Returns an empty list when the line is not a handshake or not valid JSON.
pub fn handshake_unknown_hooks(line: &str) -> Vec<String> {
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(line) else {
        return Vec::new();
    };
    if obj.get("type").and_then(Value::as_str) != Some("handshake") {
        return Vec::new();
    }
    let Some(Value::Array(hooks)) = obj.get("hooks") else {
        return Vec::new();
    };
    let names = hooks.iter().filter_map(Value::as_str);
    split_hook_names(names).1
}

/// Deserializes a list of hook names, skipping names that are not known hooks and dropping
/// duplicates. Entries that are not strings are an error.
fn deserialize_known_hooks<'de, D>(deserializer: D) -> Result<Vec<Hook>, D::Error>
where
    D: Deserializer<'de>,
{
    struct HooksVisitor;

    impl<'de> Visitor<'de> for HooksVisitor {
        type Value = Vec<Hook>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of hook names")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut names: Vec<String> = Vec::new();
            while let Some(name) = seq.next_element::<String>()? {
                names.push(name);
            }
            Ok(split_hook_names(names).0)
        }
    }

    deserializer.deserialize_seq(HooksVisitor)
}

// ---------------------------------------------------------------------------------------------
// PhaseStats / Event
// ---------------------------------------------------------------------------------------------

/// Request counters and timestamps for one phase (`"warmup"` or `"profiling"`).
///
/// Missing fields take their default value and unknown fields are ignored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PhaseStats {
    /// `"warmup"` or `"profiling"`.
    pub phase: String,
    pub sent: u64,
    /// Requests that finished, with or without error (errors ⊂ completed).
    pub completed: u64,
    pub errors: u64,
    /// Requests cancelled before they finished (not counted in `completed`).
    pub cancelled: u64,
    /// `sent − completed − cancelled`.
    pub in_flight: u64,
    /// The request count the phase aims for; `None` when it is bounded by time.
    pub expected: Option<u64>,
    /// Seconds since the phase started (up to `end_time_ns` once it ended).
    pub duration_sec: f64,
    /// Wall-clock nanoseconds since the Unix epoch.
    pub start_time_ns: u64,
    pub sending_complete_time_ns: Option<u64>,
    pub end_time_ns: Option<u64>,
    pub timed_out: bool,
    /// Requests that left more than 1 ms after their scheduled time (rate and trace modes).
    pub late_sends: u64,
    /// The largest send lag (actual minus scheduled send time) so far, in ms; `None` when
    /// requests have no schedule (closed-loop concurrency).
    pub max_send_lag_ms: Option<f64>,
}

// ---------------------------------------------------------------------------------------------
// RunContext
// ---------------------------------------------------------------------------------------------

/// The run a plugin takes part in: sent once in `configure` (see [`HostMessage::Configure`])
/// and again in the `benchmark_start` event ([`Event::context`]).
///
/// Every field has a default and unknown fields are ignored, so a plugin built against this
/// version reads a newer host's context, and an older host's messages (no context) decode.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunContext {
    /// The run's id, a UUID v4: the report's `benchmark_id`.
    pub run_id: String,
    /// The version of aiperf running the benchmark.
    pub aiperf_version: String,
    /// The model names requests carry (`--model`).
    pub models: Vec<String>,
    /// The URLs requests go to; for `--url mock`, the built-in mock's real address.
    pub urls: Vec<String>,
    /// `chat`, `completions`, `embeddings`, `responses` or `template`.
    pub endpoint_type: String,
    /// The path requests are sent to (`/v1/chat/completions`, ...).
    pub endpoint_path: String,
    /// Whether responses are streamed (SSE).
    pub streaming: bool,
    /// The directory the run's artifacts go to, absolute. It exists from `benchmark_start` on.
    pub artifact_dir: String,
    /// The profiling phase's load.
    pub load: LoadContext,
    /// The warmup phase's load; `None` without a warmup.
    pub warmup: Option<LoadContext>,
    /// The resolved config, secrets redacted: the report's `input_config`, exactly.
    pub input_config: Value,
    /// Where this run sits in a sweep or in repeated runs; `None` (omitted) for a single run
    /// and from hosts that predate sweeps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepPoint>,
    /// The part of a sharded run this process makes (`--shard I/N`), or, in `aiperf merge`,
    /// the merged whole (`merged: true`); `None` (omitted) for a run that is not sharded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardPart>,
}

/// Which part of a run split across processes (docs/scale-out.md).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShardPart {
    /// This shard's index, from 0 (0 when `merged`).
    pub index: u64,
    /// How many shards the run has.
    pub count: u64,
    /// `true` in `aiperf merge`: the hooks see the merged result of all `count` shards.
    pub merged: bool,
}

/// One run of a sweep (`--concurrency 1,4`, `--isl-osl-pairs ...`) or of repeated runs
/// (`--num-profile-runs N`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SweepPoint {
    /// The point's index among the sweep's points, from 0.
    pub index: u64,
    /// How many points the sweep has (1 for repeated runs of one configuration).
    pub count: u64,
    /// The trial of this point, from 0 (`--num-profile-runs`).
    pub trial: u64,
    /// How many trials each point has.
    pub trials: u64,
    /// The values this point sets; the others are the run's own.
    pub parameters: SweepParameters,
}

/// The parameters a sweep varies; `None` (omitted) when the point does not set it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SweepParameters {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isl: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub osl: Option<u32>,
}

/// How one phase loads the server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoadContext {
    /// `"concurrency"` (closed loop: each worker sends its next request when the last one
    /// finished), `"request_rate"` (open loop) or `"fixed_schedule"` (a trace's timestamps).
    pub mode: String,
    /// Closed loop: the number of workers. Open loop: the cap on requests in flight, if any.
    pub concurrency: Option<u64>,
    /// Requests per second (`request_rate` mode).
    pub request_rate: Option<f64>,
    /// The arrival process of `request_rate` mode: `"poisson"`, `"constant"` or `"gamma"`.
    pub arrival_pattern: Option<String>,
    /// The requests the phase sends (every turn counts); `None` when bounded otherwise.
    pub request_count: Option<u64>,
    /// The conversations the phase starts, when a conversation count bounds it.
    pub conversation_count: Option<u64>,
    /// The phase's duration limit in seconds, when time bounds it.
    pub duration_sec: Option<f64>,
    /// How long in-flight requests may finish after a time-bounded phase, in seconds.
    pub grace_period_sec: f64,
    /// Ramp of the concurrency (closed loop) or of its cap (open loop), in seconds.
    pub concurrency_ramp_sec: Option<f64>,
    /// Ramp of the request rate, in seconds.
    pub request_rate_ramp_sec: Option<f64>,
}

/// A hook firing, delivered to the plugin; it must be answered with an [`PluginMessage::Ack`]
/// carrying the same `id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Increasing integer, unique per plugin process.
    pub id: u64,
    pub hook: Hook,
    /// `"warmup"` or `"profiling"` for phase hooks; `None` (JSON `null`) for benchmark hooks.
    pub phase: Option<String>,
    /// Phase statistics for phase hooks; `None` (JSON `null`) for benchmark hooks.
    pub stats: Option<PhaseStats>,
    /// Metric summary (shape of `profile_export_aiperf.json`) on `phase_complete` and
    /// `benchmark_complete`; `None` (JSON `null`) otherwise.
    pub summary: Option<Value>,
    /// The run's context on `benchmark_start` (the same as in `configure`); absent (omitted
    /// on the wire) on every other hook, and from hosts that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Box<RunContext>>,
    /// `request_records`: finished requests of the phase, each exactly one line of
    /// `profile_export.jsonl` (`metadata`, `metrics`, `error`), oldest first. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<Value>>,
    /// `request_records`: records this plugin lost so far in the run because it fell behind
    /// (its queue was full); `0` when none. Absent on other hooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_records: Option<u64>,
    /// `progress`: the rolling window's metrics. Absent on other hooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Box<ProgressWindow>>,
    /// `phase_complete`: the server's Prometheus metrics over the phase's window (the body of
    /// `server_metrics_export.json`: `metrics` by name, each with its series and their
    /// stats; `endpoints` with their scrape counts). Absent when no server metrics were
    /// scraped, and on every other hook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_metrics: Option<Value>,
}

/// Rolling metrics over the last `window_sec` seconds of finished requests (of the phase in
/// the event), sent with `progress`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProgressWindow {
    /// The window's length in seconds (the requests that finished in it are counted).
    pub window_sec: f64,
    /// Requests that finished in the window, with or without error.
    pub requests: u64,
    /// Of those, the failed ones.
    pub errors: u64,
    /// Finished requests per second over the window.
    pub request_throughput: f64,
    /// Output tokens per second over the window.
    pub output_token_throughput: f64,
    /// `time_to_first_token`, `inter_token_latency`, `request_latency` (ms), each present
    /// when a request in the window had it.
    pub metrics: std::collections::BTreeMap<String, WindowStat>,
}

/// One metric's statistics over a [`ProgressWindow`] (linear-interpolation percentiles).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WindowStat {
    pub unit: String,
    pub count: u64,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

/// What a plugin adds to the run's report: it appears under `plugins.<name>.report` in
/// `profile_export_aiperf.json` and in the console's plugin section. Sent as a
/// [`PluginMessage::Report`] at any time; later metrics replace earlier ones of the same
/// name, notes accumulate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginReport {
    /// Name → a number, string or boolean.
    pub metrics: serde_json::Map<String, Value>,
    pub notes: Vec<String>,
}

impl PluginReport {
    /// Whether there is nothing to report.
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty() && self.notes.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// Messages from the host (aiperf) to the plugin, read from the plugin's stdin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
// Messages live one at a time, on their way to or from the wire: the size is no matter.
#[allow(clippy::large_enum_variant)]
pub enum HostMessage {
    /// First message: the protocol versions the host speaks, and who it is.
    Hello {
        protocol_versions: Vec<u32>,
        #[serde(default)]
        host: String,
        #[serde(default)]
        host_version: String,
        /// The name the plugin is configured under.
        #[serde(default)]
        plugin_name: String,
    },
    /// The plugin's config section. A missing `config` field decodes as JSON `null`.
    /// `context` is the run's context (omitted when `None`: `aiperf plugins check`, which
    /// has no run, and hosts that predate it).
    Configure {
        #[serde(default)]
        config: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        context: Option<Box<RunContext>>,
    },
    /// A hook firing; answer with an `ack`.
    Event(Event),
    /// Finish and exit with status 0.
    Shutdown,
}

/// Messages from the plugin to the host, written to the plugin's stdout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PluginMessage {
    /// Answer to `hello`.
    ///
    /// On decode, `hooks` keeps only known hook names, in first-seen order and without
    /// duplicates; unknown names are skipped (use [`handshake_unknown_hooks`] to see them) and a
    /// missing `hooks` field means no hooks. `config_schema` is omitted when `None`.
    Handshake {
        protocol_version: u32,
        name: String,
        version: String,
        #[serde(default, deserialize_with = "deserialize_known_hooks")]
        hooks: Vec<Hook>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        config_schema: Option<Value>,
    },
    /// The config was accepted.
    Configured,
    /// An event was handled; `error` (omitted when `None`) counts as a hook error.
    Ack {
        id: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A log line; `level` is one of `debug`, `info`, `warning`, `error`.
    Log { level: String, message: String },
    /// Metrics and notes for the run's report, at any time (no answer).
    Report {
        #[serde(default)]
        metrics: serde_json::Map<String, Value>,
        #[serde(default)]
        notes: Vec<String>,
    },
    /// Fatal: wrong protocol version (answer to `hello`) or rejected config (answer to
    /// `configure`).
    Error { message: String },
}

// ---------------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------------

/// Encodes a message as one compact JSON line terminated by `\n`.
///
/// # Panics
///
/// Panics if `msg` cannot be represented as JSON (e.g. a map with non-string keys). The message
/// types of this module always can.
pub fn encode_line<T: Serialize + ?Sized>(msg: &T) -> String {
    let mut line = serde_json::to_string(msg).expect("protocol message must serialize to JSON");
    line.push('\n');
    line
}

/// Decodes one line (a trailing `\n` or `\r\n` is allowed) into a message.
///
/// Fails for lines longer than [`MAX_LINE_BYTES`], non-JSON, non-objects, missing or unknown
/// `type`, and missing required fields. Unknown fields are ignored.
pub fn decode_line<T: DeserializeOwned>(line: &str) -> Result<T, serde_json::Error> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.len() > MAX_LINE_BYTES {
        return Err(de::Error::custom(format!(
            "line of {} bytes exceeds the {MAX_LINE_BYTES}-byte limit",
            line.len()
        )));
    }
    serde_json::from_str(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample_stats() -> PhaseStats {
        PhaseStats {
            phase: "profiling".into(),
            sent: 100,
            completed: 98,
            errors: 2,
            cancelled: 0,
            in_flight: 2,
            expected: Some(100),
            duration_sec: 1.532,
            start_time_ns: 1_764_121_200_000_000_000,
            sending_complete_time_ns: Some(1_764_121_201_000_000_000),
            end_time_ns: None,
            timed_out: false,
            late_sends: 0,
            max_send_lag_ms: None,
        }
    }

    fn round_trip_host(msg: HostMessage) {
        let line = encode_line(&msg);
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1, "one line: {line:?}");
        let back: HostMessage = decode_line(&line).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn streaming_events_and_reports_round_trip() {
        let mut window = ProgressWindow {
            window_sec: 5.0,
            requests: 10,
            errors: 1,
            request_throughput: 2.0,
            output_token_throughput: 64.0,
            ..Default::default()
        };
        window.metrics.insert(
            "time_to_first_token".into(),
            WindowStat {
                unit: "ms".into(),
                count: 9,
                avg: 20.0,
                min: 18.0,
                max: 30.0,
                p50: 19.5,
                p90: 25.0,
                p99: 29.0,
            },
        );
        round_trip_host(HostMessage::Event(Event {
            id: 3,
            hook: Hook::Progress,
            phase: Some("profiling".into()),
            stats: Some(sample_stats()),
            summary: None,
            context: None,
            records: None,
            dropped_records: None,
            window: Some(Box::new(window)),
            server_metrics: None,
        }));
        round_trip_host(HostMessage::Event(Event {
            id: 4,
            hook: Hook::RequestRecords,
            phase: Some("profiling".into()),
            stats: None,
            summary: None,
            context: None,
            records: Some(vec![json!({"metadata": {"session_num": 0}, "error": null})]),
            dropped_records: Some(7),
            window: None,
            server_metrics: None,
        }));
        let line = r#"{"type":"report","metrics":{"a":1,"b":"x"},"notes":["n"]}"#;
        let m: PluginMessage = decode_line(line).unwrap();
        assert!(matches!(&m, PluginMessage::Report { metrics, notes }
            if metrics["a"] == json!(1) && notes == &["n".to_string()]));
        round_trip_plugin(m);
        // An empty report decodes; the fields default.
        let m: PluginMessage = decode_line(r#"{"type":"report"}"#).unwrap();
        assert!(
            matches!(m, PluginMessage::Report { metrics, notes } if metrics.is_empty() && notes.is_empty())
        );
    }

    fn round_trip_plugin(msg: PluginMessage) {
        let line = encode_line(&msg);
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1, "one line: {line:?}");
        let back: PluginMessage = decode_line(&line).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn hook_names() {
        assert_eq!(Hook::ALL.len(), 10);
        assert!(Hook::LIFECYCLE.iter().all(|h| !h.is_streaming()));
        // Each hook is exactly one of: lifecycle, streaming, sweep (the last two opt in).
        assert!(Hook::ALL.iter().all(|h| {
            [Hook::LIFECYCLE.contains(h), h.is_streaming(), h.is_sweep()]
                .iter()
                .filter(|b| **b)
                .count()
                == 1
        }));
        assert_eq!(Hook::SweepStart.as_str(), "sweep_start");
        assert!(!Hook::SweepComplete.is_phase_hook());
        assert_eq!(Hook::RequestRecords.as_str(), "request_records");
        assert_eq!(Hook::Progress.as_str(), "progress");
        for h in Hook::ALL {
            assert_eq!(h.as_str().parse::<Hook>().unwrap(), h);
            assert_eq!(h.to_string(), h.as_str());
            assert_eq!(serde_json::to_value(h).unwrap(), json!(h.as_str()));
            assert_eq!(
                serde_json::from_value::<Hook>(json!(h.as_str())).unwrap(),
                h
            );
        }
        assert_eq!(
            Hook::PhaseSendingComplete.as_str(),
            "phase_sending_complete"
        );
        assert_eq!("nope".parse::<Hook>(), Err(UnknownHook("nope".to_owned())));
        assert!(Hook::PhaseTimeout.is_phase_hook());
        assert!(!Hook::BenchmarkComplete.is_phase_hook());
    }

    #[test]
    fn round_trip_all_host_messages() {
        round_trip_host(HostMessage::Hello {
            protocol_versions: vec![1, 2],
            host: "aiperf".into(),
            host_version: "0.1.0".into(),
            plugin_name: "datadog".into(),
        });
        round_trip_host(HostMessage::Configure {
            config: json!({"api_key": "k", "nested": {"a": [1, 2]}}),
            context: None,
        });
        round_trip_host(HostMessage::Event(Event {
            id: 3,
            hook: Hook::PhaseComplete,
            phase: Some("profiling".into()),
            stats: Some(sample_stats()),
            summary: Some(json!({"request_latency": {"unit": "ms", "avg": 1.5, "p50": 1.2}})),
            context: None,
            records: None,
            dropped_records: None,
            window: None,
            server_metrics: None,
        }));
        round_trip_host(HostMessage::Event(Event {
            id: 1,
            hook: Hook::BenchmarkStart,
            phase: None,
            stats: None,
            summary: None,
            context: None,
            records: None,
            dropped_records: None,
            window: None,
            server_metrics: None,
        }));
        round_trip_host(HostMessage::Shutdown);
    }

    #[test]
    fn round_trip_all_plugin_messages() {
        round_trip_plugin(PluginMessage::Handshake {
            protocol_version: 1,
            name: "datadog".into(),
            version: "1.0.0".into(),
            hooks: vec![Hook::PhaseStart, Hook::PhaseComplete],
            config_schema: Some(json!({"type": "object", "required": ["api_key"]})),
        });
        round_trip_plugin(PluginMessage::Handshake {
            protocol_version: 1,
            name: "x".into(),
            version: "0".into(),
            hooks: Hook::ALL.to_vec(),
            config_schema: None,
        });
        round_trip_plugin(PluginMessage::Configured);
        round_trip_plugin(PluginMessage::Ack { id: 3, error: None });
        round_trip_plugin(PluginMessage::Ack {
            id: 4,
            error: Some("boom\nwith newline".into()),
        });
        round_trip_plugin(PluginMessage::Log {
            level: "warning".into(),
            message: "statsd host not reachable".into(),
        });
        round_trip_plugin(PluginMessage::Error {
            message: "protocol version mismatch".into(),
        });
    }

    #[test]
    fn wire_shapes_match_spec() {
        assert_eq!(
            encode_line(&HostMessage::Shutdown),
            "{\"type\":\"shutdown\"}\n"
        );
        assert_eq!(
            encode_line(&PluginMessage::Configured),
            "{\"type\":\"configured\"}\n"
        );
        assert_eq!(
            encode_line(&PluginMessage::Ack { id: 3, error: None }),
            "{\"type\":\"ack\",\"id\":3}\n"
        );
        let v = serde_json::to_value(HostMessage::Event(Event {
            id: 1,
            hook: Hook::BenchmarkStart,
            phase: None,
            stats: None,
            summary: None,
            context: None,
            records: None,
            dropped_records: None,
            window: None,
            server_metrics: None,
        }))
        .unwrap();
        assert_eq!(
            v,
            json!({"type": "event", "id": 1, "hook": "benchmark_start",
                   "phase": null, "stats": null, "summary": null})
        );
        let v = serde_json::to_value(sample_stats()).unwrap();
        assert_eq!(v["expected"], json!(100));
        assert_eq!(v["end_time_ns"], Value::Null);
        assert_eq!(v["in_flight"], json!(2));
        let v = serde_json::to_value(PluginMessage::Handshake {
            protocol_version: 1,
            name: "n".into(),
            version: "v".into(),
            hooks: vec![Hook::PhaseTimeout],
            config_schema: None,
        })
        .unwrap();
        assert_eq!(
            v,
            json!({"type": "handshake", "protocol_version": 1, "name": "n", "version": "v",
                   "hooks": ["phase_timeout"]})
        );
    }

    #[test]
    fn decodes_spec_examples() {
        let hello: HostMessage = decode_line(
            r#"{"type":"hello","protocol_versions":[1],"host":"aiperf","host_version":"0.1.0","plugin_name":"datadog"}"#,
        )
        .unwrap();
        assert_eq!(
            hello,
            HostMessage::Hello {
                protocol_versions: vec![1],
                host: "aiperf".into(),
                host_version: "0.1.0".into(),
                plugin_name: "datadog".into(),
            }
        );
        let stats: PhaseStats = serde_json::from_str(
            r#"{"phase":"profiling","sent":100,"completed":98,"errors":2,"cancelled":0,
                "in_flight":0,"expected":null,"duration_sec":1.532,
                "start_time_ns":1764121200000000000,"sending_complete_time_ns":null,
                "end_time_ns":1764121201532000000,"timed_out":true}"#,
        )
        .unwrap();
        assert_eq!(stats.expected, None);
        assert_eq!(stats.end_time_ns, Some(1_764_121_201_532_000_000));
        assert!(stats.timed_out);
        let ack: PluginMessage =
            decode_line("{\"type\":\"ack\",\"id\":3,\"error\":\"ConnectionRefusedError\"}\r\n")
                .unwrap();
        assert_eq!(
            ack,
            PluginMessage::Ack {
                id: 3,
                error: Some("ConnectionRefusedError".into())
            }
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let m: HostMessage = decode_line(
            r#"{"type":"event","id":7,"hook":"phase_start","phase":"warmup","future":1,
                "stats":{"phase":"warmup","sent":0,"new_counter":5},"summary":null}"#,
        )
        .unwrap();
        let HostMessage::Event(ev) = m else {
            panic!("not an event: {m:?}")
        };
        assert_eq!(ev.id, 7);
        assert_eq!(ev.hook, Hook::PhaseStart);
        assert_eq!(ev.phase.as_deref(), Some("warmup"));
        assert_eq!(ev.stats.unwrap().phase, "warmup");

        let m: HostMessage = decode_line(r#"{"type":"shutdown","reason":"done"}"#).unwrap();
        assert_eq!(m, HostMessage::Shutdown);
        let m: HostMessage =
            decode_line(r#"{"type":"configure","config":{},"extra":[1]}"#).unwrap();
        assert_eq!(
            m,
            HostMessage::Configure {
                config: json!({}),
                context: None,
            }
        );
        let m: PluginMessage = decode_line(r#"{"type":"configured","took_ms":3}"#).unwrap();
        assert_eq!(m, PluginMessage::Configured);
        let m: PluginMessage =
            decode_line(r#"{"type":"log","level":"info","message":"hi","ts":1}"#).unwrap();
        assert_eq!(
            m,
            PluginMessage::Log {
                level: "info".into(),
                message: "hi".into()
            }
        );
        let m: PluginMessage = decode_line(
            r#"{"type":"handshake","protocol_version":1,"name":"n","version":"v","hooks":[],"capabilities":{}}"#,
        )
        .unwrap();
        assert!(matches!(m, PluginMessage::Handshake { .. }));
    }

    #[test]
    fn event_missing_optional_fields_are_none() {
        let m: HostMessage =
            decode_line(r#"{"type":"event","id":1,"hook":"benchmark_start"}"#).unwrap();
        assert_eq!(
            m,
            HostMessage::Event(Event {
                id: 1,
                hook: Hook::BenchmarkStart,
                phase: None,
                stats: None,
                summary: None,
                context: None,
                records: None,
                dropped_records: None,
                window: None,
                server_metrics: None,
            })
        );
    }

    #[test]
    fn handshake_with_unknown_hooks_still_parses() {
        let line = r#"{"type":"handshake","protocol_version":1,"name":"n","version":"v",
            "hooks":["phase_start","request_complete","phase_start","benchmark_complete","later_hook"]}"#;
        let m: PluginMessage = decode_line(line).unwrap();
        let PluginMessage::Handshake { hooks, .. } = m else {
            panic!("not a handshake")
        };
        assert_eq!(hooks, vec![Hook::PhaseStart, Hook::BenchmarkComplete]);
        assert_eq!(
            handshake_unknown_hooks(line),
            vec!["request_complete".to_owned(), "later_hook".to_owned()]
        );
        assert!(handshake_unknown_hooks(r#"{"type":"ack","id":1}"#).is_empty());
        assert!(handshake_unknown_hooks("not json").is_empty());

        // Missing hooks: no hooks. Non-string entries: an error.
        let m: PluginMessage =
            decode_line(r#"{"type":"handshake","protocol_version":1,"name":"n","version":"v"}"#)
                .unwrap();
        assert!(matches!(m, PluginMessage::Handshake { ref hooks, .. } if hooks.is_empty()));
        assert!(decode_line::<PluginMessage>(
            r#"{"type":"handshake","protocol_version":1,"name":"n","version":"v","hooks":[1]}"#
        )
        .is_err());
    }

    #[test]
    fn split_hook_names_works() {
        let (known, unknown) = split_hook_names(["phase_timeout", "x", "phase_timeout", "y"]);
        assert_eq!(known, vec![Hook::PhaseTimeout]);
        assert_eq!(unknown, vec!["x".to_owned(), "y".to_owned()]);
    }

    #[test]
    fn garbage_is_rejected() {
        for line in [
            "",
            "not json",
            "[1,2]",
            "42",
            "{}",
            r#"{"type":"bogus"}"#,
            r#"{"type":7}"#,
            r#"{"type":"ack"}"#,
            r#"{"type":"event","id":1,"hook":"unknown_hook"}"#,
        ] {
            assert!(decode_line::<HostMessage>(line).is_err(), "{line:?}");
            assert!(decode_line::<PluginMessage>(line).is_err(), "{line:?}");
        }
    }

    #[test]
    fn overlong_line_is_rejected() {
        let mut line = String::from(r#"{"type":"log","level":"info","message":""#);
        line.push_str(&"a".repeat(MAX_LINE_BYTES));
        line.push_str("\"}");
        let err = decode_line::<PluginMessage>(&line).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
    }

    #[test]
    fn the_run_context_is_optional_and_tolerant() {
        let ctx = RunContext {
            run_id: "0b5e".into(),
            aiperf_version: "0.1.0".into(),
            models: vec!["m".into()],
            urls: vec!["http://127.0.0.1:1".into()],
            endpoint_type: "chat".into(),
            endpoint_path: "/v1/chat/completions".into(),
            streaming: true,
            artifact_dir: "/tmp/a".into(),
            load: LoadContext {
                mode: "concurrency".into(),
                concurrency: Some(4),
                request_count: Some(10),
                ..LoadContext::default()
            },
            warmup: None,
            input_config: json!({"endpoint": {"model_names": ["m"]}}),
            sweep: None,
            shard: None,
        };
        // A single run's context has no `sweep` on the wire; a sweep run's round-trips.
        assert!(!encode_line(&ctx).contains("sweep"));
        let in_sweep = RunContext {
            sweep: Some(SweepPoint {
                index: 1,
                count: 4,
                trial: 0,
                trials: 1,
                parameters: SweepParameters {
                    concurrency: Some(4),
                    isl: Some(128),
                    ..SweepParameters::default()
                },
            }),
            ..ctx.clone()
        };
        let text = encode_line(&in_sweep);
        assert!(
            text.contains(r#""parameters":{"concurrency":4,"isl":128}"#),
            "{text}"
        );
        assert_eq!(decode_line::<RunContext>(&text).unwrap(), in_sweep);
        round_trip_host(HostMessage::Configure {
            config: json!({"a": 1}),
            context: Some(Box::new(ctx.clone())),
        });
        round_trip_host(HostMessage::Event(Event {
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
        // An older host sends none; a newer one may add fields or leave some out.
        let m: HostMessage = decode_line(r#"{"type":"configure","config":{}}"#).unwrap();
        assert!(matches!(m, HostMessage::Configure { context: None, .. }));
        let m: HostMessage = decode_line(
            r#"{"type":"configure","config":{},"context":{"run_id":"r","future":{"x":1},
                "load":{"mode":"request_rate","request_rate":2.5,"later":true}}}"#,
        )
        .unwrap();
        let HostMessage::Configure {
            context: Some(c), ..
        } = m
        else {
            panic!("{m:?}")
        };
        assert_eq!((c.run_id.as_str(), c.load.request_rate), ("r", Some(2.5)));
        assert_eq!((c.models.len(), c.warmup.is_none()), (0, true));
    }
}
