//! The record processor's sink for plugins: each finished request goes into the plugins'
//! [`RecordFeed`] as its JSONL line (when a plugin takes `request_records`) and as a point
//! of the rolling window (`progress`). Runs on the aggregator thread, off the hot path.

use std::sync::Arc;

use crate::clock::Clock;
use crate::metrics::processor::RecordSink;
use crate::metrics::{ErrorDetails, RequestMetrics, RequestRecord};
use crate::plugin::{RecordFeed, RecordPoint};

use super::jsonl::record_value;

pub struct PluginTap {
    feed: RecordFeed,
    clock: Clock,
    conversation_ids: Arc<[String]>,
}

impl PluginTap {
    pub fn new(feed: RecordFeed, clock: Clock, conversation_ids: Arc<[String]>) -> Self {
        Self {
            feed,
            clock,
            conversation_ids,
        }
    }

    fn push(
        &mut self,
        rec: &RequestRecord,
        outcome: Result<&RequestMetrics, &ErrorDetails>,
        point: RecordPoint,
    ) {
        let value = self
            .feed
            .wants_records()
            .then(|| record_value(&self.clock, &self.conversation_ids, rec, outcome).ok())
            .flatten();
        self.feed.push(rec.phase, value, point);
    }
}

/// How late a failed request left (rate and trace modes), in ms, as the accumulator counts
/// it in `send_lag` (a request that never started has none).
pub fn send_lag_ms(rec: &RequestRecord) -> Option<f64> {
    rec.scheduled_ns
        .filter(|_| rec.start_ns > 0)
        .map(|s| (rec.start_ns as f64 - s as f64) / 1e6)
}

impl RecordSink for PluginTap {
    fn write_success(&mut self, rec: &RequestRecord, m: &RequestMetrics) -> std::io::Result<()> {
        let point = RecordPoint {
            error: false,
            ttft_ms: m.ttft_ms,
            itl_ms: m.itl_ms,
            latency_ms: Some(m.latency_ms),
            output_tokens: m.osl,
            send_lag_ms: m.send_lag_ms,
        };
        self.push(rec, Ok(m), point);
        Ok(())
    }

    fn write_error(&mut self, rec: &RequestRecord, err: &ErrorDetails) -> std::io::Result<()> {
        let point = RecordPoint {
            error: true,
            send_lag_ms: send_lag_ms(rec),
            ..RecordPoint::default()
        };
        self.push(rec, Err(err), point);
        Ok(())
    }

    /// Batches go out on their own timer: nothing to do when the aggregator catches up.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    /// A phase's last batch goes out before its summary (and `phase_complete`).
    fn phase_end(&mut self) -> std::io::Result<()> {
        self.feed.flush();
        Ok(())
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.feed.flush();
        Ok(())
    }
}
