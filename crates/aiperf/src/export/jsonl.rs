//! `profile_export.jsonl`: one line per request, written as requests complete.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde_json::{json, Value};

use crate::metrics::{ErrorDetails, RequestMetrics, RequestRecord};
use crate::timing::Clock;

pub struct JsonlWriter {
    out: Option<BufWriter<File>>,
    clock: Clock,
    line: Vec<u8>,
    /// The dataset's conversation ids, by index (as in `inputs.json`).
    conversation_ids: std::sync::Arc<[String]>,
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
        })
    }

    /// A writer that discards everything (tests, dry runs).
    pub fn sink(clock: Clock) -> Self {
        Self {
            out: None,
            clock,
            line: Vec::new(),
            conversation_ids: std::sync::Arc::from(Vec::new()),
        }
    }

    fn metadata(&self, rec: &RequestRecord) -> Value {
        let wall = |ns: u64| self.clock.wall_ns(ns);
        json!({
            "session_num": rec.request_index,
            "x_request_id": format!("req-{}", rec.request_index),
            "conversation_id": self
                .conversation_ids
                .get(rec.conversation_index)
                .cloned()
                .unwrap_or_else(|| format!("conv-{}", rec.conversation_index)),
            "turn_index": rec.turn_index,
            "request_start_ns": wall(rec.start_ns),
            "request_ack_ns": rec.ack_ns.map(wall),
            "request_end_ns": wall(rec.end_ns),
            "benchmark_phase": rec.phase,
            "url_index": rec.url_index,
            "scheduled_ns": rec.scheduled_ns.map(wall),
            "send_lag_ms": rec.scheduled_ns.map(|s| (rec.start_ns as f64 - s as f64) / 1e6),
            "was_cancelled": rec.cancelled,
            "cancellation_time_ns": rec.cancelled.then(|| wall(rec.end_ns)),
        })
    }

    fn write_line(&mut self, v: &Value) -> std::io::Result<()> {
        if let Some(out) = &mut self.out {
            // One write per whole line: the buffer only ever flushes complete lines, so the
            // file on disk never ends mid-record, even if the process is killed.
            self.line.clear();
            serde_json::to_writer(&mut self.line, v)?;
            self.line.push(b'\n');
            if out.capacity() - out.buffer().len() < self.line.len() {
                out.flush()?;
            }
            out.write_all(&self.line)?;
        }
        Ok(())
    }

    pub fn write_success(
        &mut self,
        rec: &RequestRecord,
        m: &RequestMetrics,
    ) -> std::io::Result<()> {
        let line = json!({"metadata": self.metadata(rec), "metrics": m.to_json(), "error": null});
        self.write_line(&line)
    }

    pub fn write_error(&mut self, rec: &RequestRecord, err: &ErrorDetails) -> std::io::Result<()> {
        let line = json!({
            "metadata": self.metadata(rec),
            "metrics": {"error_isl": {"value": rec.isl, "unit": "tokens"}},
            "error": err,
        });
        self.write_line(&line)
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.out {
            Some(o) => o.flush(),
            None => Ok(()),
        }
    }
}
