//! `profile_export.jsonl`: one line per request, written as requests complete.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde::Serialize;

use crate::clock::Clock;
use crate::metrics::processor::RecordSink;
use crate::metrics::{metric_info, ErrorDetails, PhaseKind, RequestMetrics, RequestRecord, Slots};

/// One line: `{"metadata": {...}, "metrics": {...}, "error": null | {...}}`, compact, as
/// serde_json writes a struct of those three fields.
fn write_line(
    out: &mut Vec<u8>,
    metadata: &Metadata<'_>,
    rec: &RequestRecord,
    outcome: Result<&RequestMetrics, &ErrorDetails>,
) -> serde_json::Result<()> {
    out.extend_from_slice(b"{\"metadata\":");
    write_metadata(out, metadata)?;
    out.extend_from_slice(b",\"metrics\":");
    match outcome {
        Ok(m) => write_success_metrics(out, m)?,
        Err(_) => serde_json::to_writer(&mut *out, &error_metrics(rec))?,
    }
    out.extend_from_slice(b",\"error\":");
    serde_json::to_writer(&mut *out, &outcome.err())?;
    out.push(b'}');
    Ok(())
}

/// A line's `metadata`, in AIPerf's key order.
#[derive(Serialize)]
struct Metadata<'a> {
    session_num: u64,
    x_request_id: Id,
    x_correlation_id: Id,
    conversation_id: ConversationId<'a>,
    turn_index: u32,
    request_start_ns: u64,
    request_ack_ns: Option<u64>,
    request_end_ns: u64,
    benchmark_phase: PhaseKind,
    url_index: usize,
    scheduled_ns: Option<u64>,
    send_lag_ms: Option<f64>,
    was_cancelled: bool,
    cancellation_time_ns: Option<u64>,
    /// Whose clock timed the request's start on a reused connection: `kernel` (its transmit
    /// stamp) or `client`.
    request_clock: &'static str,
    /// Whose clock timed the response: `kernel` (every read carried the kernel's receive
    /// stamp) or `client` (reads timed when they returned: https, `--no-kernel-timestamps`,
    /// not Linux, or a response never read).
    response_clock: &'static str,
    /// The longest time the response's bytes waited in the socket before the client read
    /// them (stamped reads only).
    read_lag_ms: Option<f64>,
    /// The TLS handshake of the request's new `https://` connection (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_handshake_ms: Option<f64>,
}

/// `metadata` as serde_json writes [`Metadata`] (a test compares the two), its keys and
/// its plain-name values (ids, phase, clocks) written as they are, the rest through
/// serde_json: what serde's struct serializer spent scanning keys for characters to escape
/// was about 1 % of a c=64 run's CPU.
fn write_metadata(out: &mut Vec<u8>, md: &Metadata<'_>) -> serde_json::Result<()> {
    fn key(out: &mut Vec<u8>, key: &str) {
        out.push(b',');
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
    }
    fn plain(out: &mut Vec<u8>, v: &str) {
        out.push(b'"');
        out.extend_from_slice(v.as_bytes());
        out.push(b'"');
    }
    fn put<T: Serialize>(out: &mut Vec<u8>, k: &str, v: &T) -> serde_json::Result<()> {
        key(out, k);
        serde_json::to_writer(&mut *out, v)
    }
    let mut id = uuid::Uuid::encode_buffer();
    out.extend_from_slice(b"{\"session_num\":");
    serde_json::to_writer(&mut *out, &md.session_num)?;
    key(out, "x_request_id");
    plain(out, md.x_request_id.0.hyphenated().encode_lower(&mut id));
    key(out, "x_correlation_id");
    plain(
        out,
        md.x_correlation_id.0.hyphenated().encode_lower(&mut id),
    );
    // The dataset's ids are the user's text: escaped as JSON needs.
    put(out, "conversation_id", &md.conversation_id)?;
    put(out, "turn_index", &md.turn_index)?;
    put(out, "request_start_ns", &md.request_start_ns)?;
    put(out, "request_ack_ns", &md.request_ack_ns)?;
    put(out, "request_end_ns", &md.request_end_ns)?;
    key(out, "benchmark_phase");
    plain(out, md.benchmark_phase.as_str());
    put(out, "url_index", &md.url_index)?;
    put(out, "scheduled_ns", &md.scheduled_ns)?;
    put(out, "send_lag_ms", &md.send_lag_ms)?;
    put(out, "was_cancelled", &md.was_cancelled)?;
    put(out, "cancellation_time_ns", &md.cancellation_time_ns)?;
    key(out, "request_clock");
    plain(out, md.request_clock);
    key(out, "response_clock");
    plain(out, md.response_clock);
    put(out, "read_lag_ms", &md.read_lag_ms)?;
    if let Some(ms) = md.tls_handshake_ms {
        put(out, "tls_handshake_ms", &ms)?;
    }
    out.push(b'}');
    Ok(())
}

/// A UUID as sent in the request's header (`8-4-4-4-12` lower-case hex), written without an
/// intermediate string.
struct Id(uuid::Uuid);

impl Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = uuid::Uuid::encode_buffer();
        s.serialize_str(self.0.hyphenated().encode_lower(&mut buf))
    }
}

/// The dataset's id for the conversation (as in `inputs.json`), else `conv-N`.
enum ConversationId<'a> {
    Known(&'a str),
    Index(usize),
}

impl Serialize for ConversationId<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ConversationId::Known(id) => s.serialize_str(id),
            ConversationId::Index(i) => s.collect_str(&format_args!("conv-{i}")),
        }
    }
}

/// One metric of a line: `{"value": v, "unit": "ms"}`.
#[derive(Serialize)]
struct Entry<T> {
    value: T,
    unit: &'static str,
}

/// A successful request's `metrics`, `{"tag":{"value":v,"unit":"ms"},...}`, appended to `out`
/// byte by byte: tags and units are plain names that JSON never escapes (a test checks every
/// one), so only the values go through serde_json. (Through serde's map serializer each tag
/// and unit went through its escape scan, `format_escaped_str_contents`: 13 % of the
/// aggregator thread's samples in a c=64 profile, the metadata's strings included.)
fn write_success_metrics(out: &mut Vec<u8>, m: &RequestMetrics) -> serde_json::Result<()> {
    thread_local! {
        // Each tag's unit and place, looked up once per thread.
        static TAGS: std::cell::RefCell<Slots<Option<Tag>>> = Default::default();
    }
    TAGS.with_borrow_mut(|tags| write_success_metrics_with(out, m, tags))
}

fn write_success_metrics_with(
    out: &mut Vec<u8>,
    m: &RequestMetrics,
    tags: &mut Slots<Option<Tag>>,
) -> serde_json::Result<()> {
    let mut map = Obj {
        out,
        first: true,
        tags,
    };
    map.put("input_sequence_length", m.isl)?;
    if let Some(v) = m.ttft_ms {
        map.put("time_to_first_token", v)?;
    }
    if let Some(v) = m.ttst_ms {
        map.put("time_to_second_token", v)?;
    }
    if let Some(v) = m.ttfo_ms {
        map.put("time_to_first_output_token", v)?;
    }
    map.put("request_latency", m.latency_ms)?;
    if !m.icl_ms.is_empty() {
        map.put("inter_chunk_latency", &m.icl_ms)?;
    }
    map.put("output_sequence_length", m.osl)?;
    if m.reasoning_tokens > 0 {
        map.put("reasoning_token_count", m.reasoning_tokens)?;
    }
    if let Some(v) = m.itl_ms {
        map.put("inter_token_latency", v)?;
    }
    if let Some(v) = m.tps_per_user {
        map.put("output_token_throughput_per_user", v)?;
    }
    // Then every other metric the request has, in the table's order.
    let mut result = Ok(());
    m.for_each(|tag, v| {
        let t = map.tag(tag);
        if result.is_ok() && !t.above {
            result = map.put_unit(tag, t.unit, v);
        }
    });
    result?;
    if let Some(good) = m.good {
        map.put("good_request_count", u64::from(good))?;
    }
    if map.first {
        map.out.push(b'{');
    }
    map.out.push(b'}');
    Ok(())
}

/// A successful request's `metrics` object as the JSONL has it (for tests that read records
/// back).
#[cfg(test)]
pub(crate) fn success_metrics_json(m: &RequestMetrics) -> serde_json::Value {
    let mut out = Vec::new();
    write_success_metrics(&mut out, m).unwrap();
    serde_json::from_slice(&out).unwrap()
}

/// The metrics [`write_success_metrics`] writes first, in the order the JSONL always had; the
/// summary-only `send_lag` (in the metadata as `send_lag_ms`) and `credit_to_start_latency`
/// are left out, as AIPerf leaves the latter out of its records.
const WRITTEN_ABOVE: &[&str] = &[
    "input_sequence_length",
    "time_to_first_token",
    "time_to_second_token",
    "time_to_first_output_token",
    "request_latency",
    "output_sequence_length",
    "reasoning_token_count",
    "inter_token_latency",
    "output_token_throughput_per_user",
    "send_lag",
    "credit_to_start_latency",
    "read_lag",
];

/// A `metrics` object being written, key by key.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
    tags: &'a mut Slots<Option<Tag>>,
}

/// What the writer needs of a tag: its unit, and whether it is one of [`WRITTEN_ABOVE`].
#[derive(Clone, Copy)]
struct Tag {
    unit: &'static str,
    above: bool,
}

impl Obj<'_> {
    /// The tag's unit and place, from the metrics table the first time a thread meets it.
    fn tag(&mut self, tag: &'static str) -> Tag {
        *self.tags.entry(tag).get_or_insert_with(|| Tag {
            unit: metric_info(tag).map(|m| m.unit).unwrap_or(""),
            above: WRITTEN_ABOVE.contains(&tag),
        })
    }

    fn put<T: Serialize>(&mut self, tag: &'static str, value: T) -> serde_json::Result<()> {
        let unit = self.tag(tag).unit;
        self.put_unit(tag, unit, value)
    }

    fn put_unit<T: Serialize>(
        &mut self,
        tag: &'static str,
        unit: &'static str,
        value: T,
    ) -> serde_json::Result<()> {
        self.out.push(if self.first { b'{' } else { b',' });
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(tag.as_bytes());
        self.out.extend_from_slice(b"\":{\"value\":");
        serde_json::to_writer(&mut *self.out, &value)?;
        self.out.extend_from_slice(b",\"unit\":\"");
        self.out.extend_from_slice(unit.as_bytes());
        self.out.extend_from_slice(b"\"}");
        Ok(())
    }
}

/// A failed request's `metrics`.
#[derive(Serialize)]
struct ErrorMetrics {
    error_isl: Entry<u32>,
}

/// One request, as much of it as the report draws.
#[derive(Debug, Clone, PartialEq)]
pub struct Rec {
    pub start_ns: u64,
    pub end_ns: u64,
    pub warmup: bool,
    pub ttft_ms: Option<f64>,
    pub itl_ms: Option<f64>,
    pub latency_ms: Option<f64>,
    pub send_lag_ms: Option<f64>,
    /// The error's `type`, for a failed request.
    pub error: Option<String>,
}

/// The records a run's JSONL writer kept for the run's own report: the values its lines
/// carry, as `report::data::read_records` would read them back (floats included: serde_json
/// parses with `float_roundtrip`, so a value read back is the value written). The writer
/// hands them over when it has written every line; after a write error it hands over
/// nothing and the report reads what the file holds, as `aiperf plot` would.
#[derive(Debug, Clone, Default)]
pub struct KeptRecords(std::sync::Arc<std::sync::Mutex<Option<Vec<Rec>>>>);

impl KeptRecords {
    fn put(&self, records: Vec<Rec>) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(records);
        }
    }

    /// The records, once: `None` if the writer never handed them over.
    pub fn take(&self) -> Option<Vec<Rec>> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

pub struct JsonlWriter {
    out: Option<BufWriter<File>>,
    clock: Clock,
    line: Vec<u8>,
    /// The dataset's conversation ids, by index (as in `inputs.json`).
    conversation_ids: std::sync::Arc<[String]>,
    /// Bytes handed to the buffer so far, all whole lines, and how many lines.
    handed: (u64, u64),
    /// What is known to be on disk after the last successful flush: (bytes, lines).
    committed: (u64, u64),
    /// Set after a write error: nothing more is written.
    failed: bool,
    /// The records kept for the run's report (see [`JsonlWriter::keep_for_report`]).
    kept: Option<(Vec<Rec>, KeptRecords)>,
}

impl JsonlWriter {
    pub fn create(
        path: &Path,
        clock: Clock,
        conversation_ids: std::sync::Arc<[String]>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            out: Some(BufWriter::with_capacity(256 * 1024, File::create(path)?)),
            clock,
            line: Vec::with_capacity(1024),
            conversation_ids,
            handed: (0, 0),
            committed: (0, 0),
            failed: false,
            kept: None,
        })
    }

    /// From now on, each record written is also kept as the report draws it; when the last
    /// line is on disk ([`RecordSink::finish`]) they are handed over to the returned handle,
    /// so the run's `report.html` is drawn without reading the file back. After a write
    /// error nothing is handed over.
    pub fn keep_for_report(&mut self) -> KeptRecords {
        let handle = KeptRecords::default();
        self.kept = Some((Vec::new(), handle.clone()));
        handle
    }

    /// A writer that discards everything (tests, dry runs).
    pub fn sink(clock: Clock) -> Self {
        Self {
            out: None,
            clock,
            line: Vec::new(),
            conversation_ids: std::sync::Arc::from(Vec::new()),
            handed: (0, 0),
            committed: (0, 0),
            failed: false,
            kept: None,
        }
    }

    /// Flushes the buffer; what is on disk is then every line handed over.
    fn flush_out(&mut self) -> std::io::Result<()> {
        let Some(out) = &mut self.out else {
            return Ok(());
        };
        match out.flush() {
            Ok(()) => {
                self.committed = self.handed;
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// After a write error (a full disk, a file size limit): the unwritten buffer is
    /// dropped, the file is cut back to the whole lines known to be on disk, and nothing
    /// more is written. The error says how much of the run the file holds.
    fn fail(&mut self, e: std::io::Error) -> std::io::Error {
        self.failed = true;
        self.kept = None;
        if let Some(out) = self.out.take() {
            // `into_parts` hands back the file without flushing what is left.
            let (file, _unwritten) = out.into_parts();
            let _ = file.set_len(self.committed.0);
        }
        std::io::Error::new(
            e.kind(),
            format!(
                "{e}; it holds the first {} records, as whole lines",
                self.committed.1
            ),
        )
    }

    /// Serializes one record as a line and appends it (one write per whole line: the buffer
    /// only ever flushes complete lines, so the file on disk never ends mid-record, even if
    /// the process is killed).
    fn write_record(
        &mut self,
        rec: &RequestRecord,
        outcome: Result<&RequestMetrics, &ErrorDetails>,
    ) -> std::io::Result<()> {
        if self.out.is_none() {
            return Ok(());
        }
        self.line.clear();
        let metadata = metadata(&self.clock, &self.conversation_ids, rec);
        write_line(&mut self.line, &metadata, rec, outcome)?;
        self.line.push(b'\n');
        let for_report = self
            .kept
            .is_some()
            .then(|| report_record(&metadata, outcome));
        let room = self
            .out
            .as_ref()
            .map_or(0, |o| o.capacity() - o.buffer().len());
        if room < self.line.len() {
            self.flush_out()?;
        }
        let Some(out) = &mut self.out else {
            return Ok(());
        };
        if let Err(e) = out.write_all(&self.line) {
            return Err(self.fail(e));
        }
        self.handed.0 += self.line.len() as u64;
        self.handed.1 += 1;
        if out.buffer().is_empty() {
            // A line longer than the buffer went straight to the file.
            self.committed = self.handed;
        }
        if let (Some((kept, _)), Some(r)) = (&mut self.kept, for_report) {
            kept.push(r);
        }
        Ok(())
    }
}

/// A record as the report reads it back from its line (`report::data::read_records`):
/// the same values, from the same metadata, without the round trip through JSON. A value
/// JSON writes as `null` (not finite) is `None` there too.
fn report_record(md: &Metadata<'_>, outcome: Result<&RequestMetrics, &ErrorDetails>) -> Rec {
    let finite = |v: f64| v.is_finite();
    let (m, error) = match outcome {
        Ok(m) => (Some(m), None),
        Err(e) => (None, Some(e.kind.clone())),
    };
    Rec {
        start_ns: md.request_start_ns,
        end_ns: md.request_end_ns.max(md.request_start_ns),
        warmup: md.benchmark_phase == PhaseKind::Warmup,
        ttft_ms: m.and_then(|m| m.ttft_ms).filter(|v| finite(*v)),
        itl_ms: m.and_then(|m| m.itl_ms).filter(|v| finite(*v)),
        latency_ms: m.map(|m| m.latency_ms).filter(|v| finite(*v)),
        send_lag_ms: md.send_lag_ms.filter(|v| finite(*v)),
        error,
    }
}

/// A record's `metadata`: its ids, times on the wall clock, phase and send lag.
fn metadata<'a>(
    clock: &Clock,
    conversation_ids: &'a [String],
    rec: &RequestRecord,
) -> Metadata<'a> {
    let wall = |ns: u64| clock.wall_ns(ns);
    Metadata {
        session_num: rec.request_index,
        x_request_id: Id(rec.ids.request),
        x_correlation_id: Id(rec.ids.correlation),
        conversation_id: match conversation_ids.get(rec.conversation_index) {
            Some(id) => ConversationId::Known(id),
            None => ConversationId::Index(rec.conversation_index),
        },
        turn_index: rec.turn_index,
        request_start_ns: wall(rec.start_ns),
        request_ack_ns: rec.ack_ns.map(wall),
        request_end_ns: wall(rec.end_ns),
        benchmark_phase: rec.phase,
        url_index: rec.url_index,
        scheduled_ns: rec.scheduled_ns.map(wall),
        send_lag_ms: rec
            .scheduled_ns
            .map(|s| (rec.start_ns as f64 - s as f64) / 1e6),
        was_cancelled: rec.cancelled,
        cancellation_time_ns: rec.cancelled.then(|| wall(rec.end_ns)),
        request_clock: if rec.http.reused && rec.http.kernel_sent_ns == Some(rec.start_ns) {
            "kernel"
        } else {
            "client"
        },
        response_clock: if rec.http.kernel_timed() {
            "kernel"
        } else {
            "client"
        },
        read_lag_ms: crate::metrics::read_lag_ms(&rec.http),
        tls_handshake_ms: rec.http.tls_handshake_ns().map(|ns| ns as f64 / 1e6),
    }
}

/// A record exactly as its `profile_export.jsonl` line, as a JSON value (what plugins get
/// in `request_records`).
pub fn record_value(
    clock: &Clock,
    conversation_ids: &[String],
    rec: &RequestRecord,
    outcome: Result<&RequestMetrics, &ErrorDetails>,
) -> serde_json::Result<serde_json::Value> {
    let mut line = Vec::with_capacity(1024);
    write_line(
        &mut line,
        &metadata(clock, conversation_ids, rec),
        rec,
        outcome,
    )?;
    serde_json::from_slice(&line)
}

fn error_metrics(rec: &RequestRecord) -> ErrorMetrics {
    ErrorMetrics {
        error_isl: Entry {
            value: rec.isl,
            unit: "tokens",
        },
    }
}

/// The record processor's aggregator writes every processed request here.
impl RecordSink for JsonlWriter {
    fn write_success(&mut self, rec: &RequestRecord, m: &RequestMetrics) -> std::io::Result<()> {
        self.write_record(rec, Ok(m))
    }

    fn write_error(&mut self, rec: &RequestRecord, err: &ErrorDetails) -> std::io::Result<()> {
        self.write_record(rec, Err(err))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.flush_out()
    }

    /// The last flush; then, with every line on disk, the kept records are handed over.
    fn finish(&mut self) -> std::io::Result<()> {
        self.flush_out()?;
        if let Some((kept, handle)) = self.kept.take() {
            if !self.failed {
                handle.put(kept);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(cancelled: bool, scheduled: bool) -> RequestRecord {
        RequestRecord {
            phase: PhaseKind::Profiling,
            request_index: 7,
            conversation_index: 1,
            turn_index: 0,
            url_index: 2,
            streaming: true,
            start_ns: 2_000_000,
            scheduled_ns: scheduled.then_some(1_500_000),
            ack_ns: Some(3_000_000),
            end_ns: 9_000_000,
            content_ns: vec![],
            first_output_ns: None,
            output_text: String::new(),
            reasoning_text: String::new(),
            usage: None,
            isl: 12,
            error: None,
            cancelled,
            requested_osl: None,
            ids: Default::default(),
            http: Default::default(),
        }
    }

    /// Writes the records and returns the file's lines, key order kept.
    fn written(ids: &[&str], f: impl FnOnce(&mut JsonlWriter)) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        let mut w = JsonlWriter::create(&path, Clock::new(), ids.into()).unwrap();
        f(&mut w);
        w.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n'));
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn success_lines_have_aiperfs_layout_and_key_order() {
        let m = RequestMetrics {
            ttft_ms: Some(1.5),
            ttst_ms: None,
            ttfo_ms: Some(1.5),
            latency_ms: 7.0,
            itl_ms: Some(0.25),
            icl_ms: vec![0.5, 0.0],
            tps_per_user: Some(4000.0),
            osl: 3,
            reasoning_tokens: 0,
            isl: 12,
            ..Default::default()
        };
        let mut rec = record(false, true);
        rec.ids.request = "6BA7B810-9DAD-41D1-80B4-00C04FD430C8".parse().unwrap();
        rec.ids.correlation = "00000000-0000-4000-8000-000000000001".parse().unwrap();
        let lines = written(&["c0", "conv-abc"], |w| w.write_success(&rec, &m).unwrap());
        assert_eq!(lines.len(), 1);
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        let md = &v["metadata"];
        let keys: Vec<&str> = md.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "session_num",
                "x_request_id",
                "x_correlation_id",
                "conversation_id",
                "turn_index",
                "request_start_ns",
                "request_ack_ns",
                "request_end_ns",
                "benchmark_phase",
                "url_index",
                "scheduled_ns",
                "send_lag_ms",
                "was_cancelled",
                "cancellation_time_ns",
                "request_clock",
                "response_clock",
                "read_lag_ms"
            ]
        );
        // The record's reads carried no kernel stamps.
        assert_eq!(md["response_clock"], "client");
        assert!(md["read_lag_ms"].is_null());
        let mut stamped = rec.clone();
        (stamped.http.chunks_received, stamped.http.kernel_reads) = (3, 3);
        stamped.http.read_lag_max_ns = 1_500_000;
        let lines = written(&["c0"], |w| w.write_success(&stamped, &m).unwrap());
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["metadata"]["response_clock"], "kernel");
        assert_eq!(v["metadata"]["read_lag_ms"], 1.5);
        assert_eq!(md["session_num"], 7);
        assert_eq!(md["x_request_id"], "6ba7b810-9dad-41d1-80b4-00c04fd430c8");
        assert_eq!(
            md["x_correlation_id"],
            "00000000-0000-4000-8000-000000000001"
        );
        assert_eq!(md["conversation_id"], "conv-abc");
        assert_eq!(md["benchmark_phase"], "profiling");
        assert_eq!(md["url_index"], 2);
        assert_eq!(md["send_lag_ms"], 0.5);
        assert_eq!(md["was_cancelled"], false);
        assert!(md["cancellation_time_ns"].is_null());
        let (start, end) = (
            md["request_start_ns"].as_u64().unwrap(),
            md["request_end_ns"].as_u64().unwrap(),
        );
        assert_eq!(end - start, 7_000_000);
        assert_eq!(md["request_ack_ns"].as_u64().unwrap() - start, 1_000_000);
        assert_eq!(start - md["scheduled_ns"].as_u64().unwrap(), 500_000);
        let metrics = v["metrics"].as_object().unwrap();
        let tags: Vec<&str> = metrics.keys().map(String::as_str).collect();
        assert_eq!(
            tags,
            [
                "input_sequence_length",
                "time_to_first_token",
                "time_to_first_output_token",
                "request_latency",
                "inter_chunk_latency",
                "output_sequence_length",
                "inter_token_latency",
                "output_token_throughput_per_user"
            ]
        );
        assert_eq!(
            v["metrics"]["time_to_first_token"],
            serde_json::json!({"value": 1.5, "unit": "ms"})
        );
        assert_eq!(
            v["metrics"]["inter_chunk_latency"],
            serde_json::json!({"value": [0.5, 0.0], "unit": "ms"})
        );
        assert_eq!(
            v["metrics"]["output_sequence_length"],
            serde_json::json!({"value": 3, "unit": "tokens"})
        );
        assert!(v["error"].is_null());
    }

    /// `write_success_metrics` writes tags and units without escaping: none may need it.
    #[test]
    fn every_tag_and_unit_is_written_as_json_would_write_it() {
        let names = crate::metrics::METRICS
            .iter()
            .flat_map(|m| [m.tag, m.unit])
            .chain(["good_request_count", ""]);
        for name in names {
            assert_eq!(
                serde_json::to_string(name).unwrap(),
                format!("\"{name}\""),
                "{name}"
            );
        }
    }

    #[test]
    fn error_lines_carry_the_error_and_the_isl() {
        let mut rec = record(true, false);
        rec.conversation_index = 9; // not in the dataset's ids
        let err = ErrorDetails::new(Some(499), "RequestCancelled", "cancelled \"now\"");
        let lines = written(&["c0"], |w| w.write_error(&rec, &err).unwrap());
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["metadata"]["conversation_id"], "conv-9");
        assert_eq!(v["metadata"]["was_cancelled"], true);
        assert_eq!(
            v["metadata"]["cancellation_time_ns"],
            v["metadata"]["request_end_ns"]
        );
        assert!(v["metadata"]["scheduled_ns"].is_null());
        assert!(v["metadata"]["send_lag_ms"].is_null());
        assert_eq!(
            v["metrics"],
            serde_json::json!({"error_isl": {"value": 12, "unit": "tokens"}})
        );
        assert_eq!(
            v["error"],
            serde_json::json!({"code": 499, "type": "RequestCancelled", "message": "cancelled \"now\""})
        );
    }

    #[test]
    fn aiperfs_other_metrics_follow_with_integer_counts() {
        let m = RequestMetrics {
            latency_ms: 7.0,
            osl: 3,
            isl: 12,
            output_tokens: Some(3),
            usage: crate::metrics::Usage {
                prompt_tokens: Some(14),
                completion_tokens: None,
                total_tokens: None,
            },
            send_lag_ms: Some(0.5),
            http: Some(crate::metrics::HttpMetrics {
                received_kb: 2.5,
                chunks_received: 17,
                ..Default::default()
            }),
            ..Default::default()
        };
        let lines = written(&[], |w| w.write_success(&record(false, true), &m).unwrap());
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        let metrics = &v["metrics"];
        assert_eq!(
            metrics["output_token_count"],
            serde_json::json!({"value": 3, "unit": "tokens"})
        );
        assert_eq!(
            metrics["usage_prompt_tokens"],
            serde_json::json!({"value": 14, "unit": "tokens"})
        );
        assert_eq!(
            metrics["http_req_connection_reused"],
            serde_json::json!({"value": 0, "unit": "ratio"})
        );
        assert_eq!(
            metrics["http_req_chunks_received"],
            serde_json::json!({"value": 17, "unit": "count"})
        );
        assert_eq!(
            metrics["http_req_data_received"],
            serde_json::json!({"value": 2.5, "unit": "KB"})
        );
        assert!(lines[0].contains(r#""http_req_chunks_received":{"value":17,"#));
        // Summary-only: not in the record (send lag is in the metadata).
        assert!(metrics.get("send_lag").is_none());
        assert!(metrics.get("credit_to_start_latency").is_none());
        assert!(metrics.get("usage_completion_tokens").is_none());
        assert_eq!(v["metadata"]["send_lag_ms"], 0.5);
    }

    /// Floats across the range a metric takes, with long decimal expansions (a fixed
    /// generator, so the run is repeatable).
    fn awkward_floats(n: usize) -> Vec<f64> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut out = vec![0.1 + 0.2, 1.0 / 3.0, 1e-7, 123_456.789_012_345, 0.0];
        while out.len() < n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // A mantissa of 52 random bits, scaled to 1e-6 .. 1e6.
            let unit = (x >> 12) as f64 / (1u64 << 52) as f64;
            out.push(10f64.powf(unit * 12.0 - 6.0));
        }
        out
    }

    #[test]
    fn kept_records_are_what_the_report_reads_back_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        let mut w =
            JsonlWriter::create(&path, Clock::new(), vec!["c0".to_string()].into()).unwrap();
        let kept = w.keep_for_report();
        let floats = awkward_floats(300);
        for (i, v) in floats.iter().enumerate() {
            let mut rec = record(false, i % 3 == 0);
            rec.phase = if i < 20 {
                PhaseKind::Warmup
            } else {
                PhaseKind::Profiling
            };
            rec.start_ns = 1_000 + i as u64 * 7_919;
            rec.scheduled_ns = rec.scheduled_ns.map(|_| rec.start_ns / 2 + i as u64);
            // An end before the start (clocks read apart) is clamped, as when read back.
            rec.end_ns = if i == 5 { 10 } else { rec.start_ns + 1_000_003 };
            if i % 7 == 0 {
                let err = ErrorDetails::new(Some(500), "InternalServerError", "boom");
                w.write_error(&rec, &err).unwrap();
                continue;
            }
            let m = RequestMetrics {
                ttft_ms: (i % 5 != 0).then_some(*v),
                // Not finite: written as null, so no value either way.
                itl_ms: Some(if i % 11 == 0 { f64::NAN } else { v / 3.0 }),
                latency_ms: if i % 13 == 0 { f64::INFINITY } else { v * 7.0 },
                osl: 3,
                isl: 12,
                ..Default::default()
            };
            w.write_success(&rec, &m).unwrap();
        }
        w.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let back = crate::report::data::read_records(text.as_bytes(), &path).unwrap();
        let kept = kept.take().expect("handed over after the last line");
        assert_eq!(kept.len(), 300);
        assert_eq!(kept, back);
        assert!(kept.iter().any(|r| r.warmup) && kept.iter().any(|r| r.error.is_some()));
        assert!(kept
            .iter()
            .any(|r| r.send_lag_ms.is_some() && r.ttft_ms.is_some()));
        assert!(kept.iter().any(|r| r.latency_ms.is_none()));
    }

    #[test]
    fn after_a_write_error_no_records_are_kept() {
        if !Path::new("/dev/full").exists() {
            eprintln!("no /dev/full here: skipped");
            return;
        }
        let mut w =
            JsonlWriter::create(Path::new("/dev/full"), Clock::new(), Vec::new().into()).unwrap();
        let kept = w.keep_for_report();
        let m = RequestMetrics {
            latency_ms: 1.0,
            ..Default::default()
        };
        // The buffer takes the lines; the flush at the end finds the device full.
        for _ in 0..10 {
            w.write_success(&record(false, false), &m).unwrap();
        }
        let e = w.finish().unwrap_err();
        assert!(e.to_string().contains("holds the first 0 records"), "{e}");
        assert_eq!(kept.take(), None);
    }

    /// The hand-written metadata is what serde writes for the struct, for every shape of
    /// record: new or reused connection, scheduled or not, cancelled, stamped, https, a
    /// conversation id that needs escaping and one that is only an index.
    #[test]
    fn metadata_is_written_as_serde_writes_it() {
        let ids: Vec<String> = vec!["plain".into(), "quote\" back\\slash \u{1}\n é".into()];
        let clock = Clock::new();
        let mut n = 0;
        for cancelled in [false, true] {
            for scheduled in [false, true] {
                for conversation in [0, 1, 7] {
                    for phase in [PhaseKind::Warmup, PhaseKind::Profiling] {
                        let mut rec = record(cancelled, scheduled);
                        rec.conversation_index = conversation;
                        rec.phase = phase;
                        rec.ids.request = uuid::Uuid::from_u128(0xDEAD_BEEF << 64 | n);
                        rec.ack_ns = (n % 2 == 0).then_some(2_500_000);
                        if n % 3 == 0 {
                            (rec.http.chunks_received, rec.http.kernel_reads) = (2, 2);
                            rec.http.read_lag_max_ns = 12_345;
                            rec.http.reused = true;
                            rec.http.kernel_sent_ns = Some(rec.start_ns);
                        }
                        if n % 4 == 0 {
                            rec.http.tcp_connected_ns = Some(1_000);
                            rec.http.connected_ns = 1_000_000 + n as u64;
                        }
                        let md = metadata(&clock, &ids, &rec);
                        let mut ours = Vec::new();
                        write_metadata(&mut ours, &md).unwrap();
                        let theirs = serde_json::to_vec(&md).unwrap();
                        assert_eq!(
                            String::from_utf8(ours).unwrap(),
                            String::from_utf8(theirs).unwrap()
                        );
                        n += 1;
                    }
                }
            }
        }
    }
}
