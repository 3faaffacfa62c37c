//! `outputs.json` (`--export-outputs-json`, AIPerf's file): every profiling request's
//! generated text with its ids, times and a few metrics, sorted by `session_num` then turn.
//! Kept in memory until the end of the run (it holds every response's text: opt-in).

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::clock::Clock;
use crate::metrics::processor::RecordSink;
use crate::metrics::{ErrorDetails, PhaseKind, RequestMetrics, RequestRecord};

pub const OUTPUTS_FILE: &str = "outputs.json";

/// One request of `outputs.json`.
#[derive(Serialize)]
struct Output {
    session_num: u64,
    conversation_id: String,
    turn_index: u32,
    x_request_id: String,
    request_start_ns: u64,
    request_end_ns: u64,
    /// AIPerf's allowlist: ISL, output token count, OSL, latency, TTFT, ITL (display units).
    metrics: serde_json::Map<String, serde_json::Value>,
    /// `null` for a failed request.
    response_text: Option<String>,
}

/// The `outputs.json` sink: collects the profiling records, writes the file at the end.
pub struct OutputsWriter {
    /// The artifact directory; the file is [`OUTPUTS_FILE`] in it.
    dir: PathBuf,
    clock: Clock,
    conversation_ids: Arc<[String]>,
    outputs: Vec<Output>,
}

impl OutputsWriter {
    pub fn new(dir: PathBuf, clock: Clock, conversation_ids: Arc<[String]>) -> Self {
        Self {
            dir,
            clock,
            conversation_ids,
            outputs: Vec::new(),
        }
    }

    fn push(&mut self, rec: &RequestRecord, metrics: Option<&RequestMetrics>) {
        if rec.phase != PhaseKind::Profiling {
            return;
        }
        let mut map = serde_json::Map::new();
        if let Some(m) = metrics {
            // Token counts as integers, as in the JSONL.
            map.insert("input_sequence_length".into(), m.isl.into());
            let output_tokens = m.osl.saturating_sub(m.reasoning_tokens);
            if output_tokens > 0 {
                map.insert("output_token_count".into(), output_tokens.into());
            }
            map.insert("output_sequence_length".into(), m.osl.into());
            let mut put = |tag: &str, v: Option<f64>| {
                if let Some(n) = v.and_then(serde_json::Number::from_f64) {
                    map.insert(tag.to_string(), serde_json::Value::Number(n));
                }
            };
            put("request_latency", Some(m.latency_ms));
            put("time_to_first_token", m.ttft_ms);
            put("inter_token_latency", m.itl_ms);
        }
        let text = metrics.map(|_| {
            let mut t = rec.reasoning_text.clone();
            t.push_str(&rec.output_text);
            t
        });
        self.outputs.push(Output {
            session_num: rec.request_index,
            conversation_id: self
                .conversation_ids
                .get(rec.conversation_index)
                .cloned()
                .unwrap_or_else(|| format!("conv-{}", rec.conversation_index)),
            turn_index: rec.turn_index,
            x_request_id: rec.ids.request.hyphenated().to_string(),
            request_start_ns: self.clock.wall_ns(rec.start_ns),
            request_end_ns: self.clock.wall_ns(rec.end_ns),
            metrics: map,
            response_text: text,
        });
    }
}

impl RecordSink for OutputsWriter {
    fn write_success(&mut self, rec: &RequestRecord, m: &RequestMetrics) -> std::io::Result<()> {
        self.push(rec, Some(m));
        Ok(())
    }

    fn write_error(&mut self, rec: &RequestRecord, _err: &ErrorDetails) -> std::io::Result<()> {
        self.push(rec, None);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.outputs.sort_by_key(|o| (o.session_num, o.turn_index));
        #[derive(Serialize)]
        struct File<'a> {
            data: &'a [Output],
        }
        let bytes = serde_json::to_vec_pretty(&File {
            data: &self.outputs,
        })?;
        super::write_atomic(&self.dir, OUTPUTS_FILE, &bytes)
    }
}

/// Two sinks fed the same records (the JSONL and `outputs.json`); the first error wins.
pub struct Tee<A, B>(pub A, pub B);

impl<A: RecordSink, B: RecordSink> RecordSink for Tee<A, B> {
    fn write_success(&mut self, rec: &RequestRecord, m: &RequestMetrics) -> std::io::Result<()> {
        let a = self.0.write_success(rec, m);
        let b = self.1.write_success(rec, m);
        a.and(b)
    }

    fn write_error(&mut self, rec: &RequestRecord, err: &ErrorDetails) -> std::io::Result<()> {
        let a = self.0.write_error(rec, err);
        let b = self.1.write_error(rec, err);
        a.and(b)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let a = self.0.flush();
        let b = self.1.flush();
        a.and(b)
    }

    fn finish(&mut self) -> std::io::Result<()> {
        let a = self.0.finish();
        let b = self.1.finish();
        a.and(b)
    }

    fn phase_end(&mut self) -> std::io::Result<()> {
        let a = self.0.phase_end();
        let b = self.1.phase_end();
        a.and(b)
    }
}
