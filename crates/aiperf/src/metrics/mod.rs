//! Metric definitions (METRICS.md), per-request computation and per-phase aggregation.

pub mod goodput;
pub mod hdr;
pub mod processor;
pub mod record;
pub mod slices;
pub mod stats;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

pub use goodput::Goodput;
pub use record::{ErrorDetails, HttpTrace, PhaseKind, RequestIds, RequestRecord, Usage};
pub use stats::Stats;

use crate::tokenizer::Tokenizer;

/// How a metric is aggregated and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// One value per request; full statistics.
    PerRequest,
    /// Many values per request (ICL); statistics over all of them.
    PerRequestList,
    /// One value per phase; only `avg`.
    Aggregate,
}

#[derive(Debug, Clone, Copy)]
pub struct MetricInfo {
    pub tag: &'static str,
    pub header: &'static str,
    pub unit: &'static str,
    pub kind: MetricKind,
    /// Shown in the console table.
    pub console: bool,
}

const fn m(
    tag: &'static str,
    header: &'static str,
    unit: &'static str,
    kind: MetricKind,
    console: bool,
) -> MetricInfo {
    MetricInfo {
        tag,
        header,
        unit,
        kind,
        console,
    }
}

use MetricKind::*;

/// Every metric, in display order (the JSON's and the console's; the CSV sorts by tag).
/// Headers and units are AIPerf's.
pub const METRICS: &[MetricInfo] = &[
    m(
        "time_to_first_token",
        "Time to First Token",
        "ms",
        PerRequest,
        true,
    ),
    m(
        "time_to_second_token",
        "Time to Second Token",
        "ms",
        PerRequest,
        true,
    ),
    m(
        "time_to_first_output_token",
        "Time to First Output Token",
        "ms",
        PerRequest,
        false,
    ),
    m("request_latency", "Request Latency", "ms", PerRequest, true),
    m("decode_duration", "Decode Duration", "ms", PerRequest, true),
    m(
        "inter_token_latency",
        "Inter Token Latency",
        "ms",
        PerRequest,
        true,
    ),
    m(
        "inter_chunk_latency",
        "Inter Chunk Latency",
        "ms",
        PerRequestList,
        false,
    ),
    m(
        "output_token_throughput_per_user",
        "Output Token Throughput Per User",
        "tokens/sec/user",
        PerRequest,
        true,
    ),
    m(
        "e2e_output_token_throughput",
        "E2E Output Token Throughput",
        "tokens/sec/user",
        PerRequest,
        true,
    ),
    m(
        "prefill_throughput_per_user",
        "Prefill Throughput Per User",
        "tokens/sec/user",
        PerRequest,
        false,
    ),
    m(
        "output_sequence_length",
        "Output Sequence Length",
        "tokens",
        PerRequest,
        true,
    ),
    m(
        "output_token_count",
        "Output Token Count",
        "tokens",
        PerRequest,
        false,
    ),
    m(
        "reasoning_token_count",
        "Reasoning Token Count",
        "tokens",
        PerRequest,
        false,
    ),
    m(
        "input_sequence_length",
        "Input Sequence Length",
        "tokens",
        PerRequest,
        true,
    ),
    // What the server reported in `usage`, and how far it is from the client's counts.
    m(
        "usage_prompt_tokens",
        "Usage Prompt Tokens",
        "tokens",
        PerRequest,
        false,
    ),
    m(
        "usage_completion_tokens",
        "Usage Completion Tokens",
        "tokens",
        PerRequest,
        false,
    ),
    m(
        "usage_total_tokens",
        "Usage Total Tokens",
        "tokens",
        PerRequest,
        false,
    ),
    m(
        "usage_prompt_tokens_diff_pct",
        "Usage Prompt Diff %",
        "%",
        PerRequest,
        false,
    ),
    m(
        "usage_completion_tokens_diff_pct",
        "Usage Completion Diff %",
        "%",
        PerRequest,
        false,
    ),
    m(
        "osl_mismatch_diff_pct",
        "OSL Mismatch Diff %",
        "%",
        PerRequest,
        false,
    ),
    // The HTTP exchange, phase by phase (k6's names, as AIPerf).
    m("http_req_blocked", "HTTP Blocked", "ms", PerRequest, false),
    m(
        "http_req_dns_lookup",
        "HTTP DNS Lookup",
        "ms",
        PerRequest,
        false,
    ),
    m(
        "http_req_connecting",
        "HTTP Connecting",
        "ms",
        PerRequest,
        false,
    ),
    m("http_req_sending", "HTTP Sending", "ms", PerRequest, false),
    m(
        "http_req_waiting",
        "HTTP Waiting (TTFB)",
        "ms",
        PerRequest,
        false,
    ),
    m(
        "http_req_receiving",
        "HTTP Receiving",
        "ms",
        PerRequest,
        false,
    ),
    m(
        "http_req_duration",
        "HTTP Duration (excl. conn)",
        "ms",
        PerRequest,
        false,
    ),
    m(
        "http_req_connection_overhead",
        "HTTP Connection Overhead",
        "ms",
        PerRequest,
        false,
    ),
    m("http_req_total", "HTTP Total Time", "ms", PerRequest, false),
    m(
        "http_req_connection_reused",
        "HTTP Connection Reused",
        "ratio",
        PerRequest,
        false,
    ),
    m(
        "http_req_data_sent",
        "HTTP Data Sent",
        "KB",
        PerRequest,
        false,
    ),
    m(
        "http_req_data_received",
        "HTTP Data Received",
        "KB",
        PerRequest,
        false,
    ),
    m(
        "http_req_chunks_sent",
        "HTTP Chunks Sent",
        "count",
        PerRequest,
        false,
    ),
    m(
        "http_req_chunks_received",
        "HTTP Chunks Received",
        "count",
        PerRequest,
        false,
    ),
    m(
        "output_token_throughput",
        "Output Token Throughput",
        "tokens/sec",
        Aggregate,
        true,
    ),
    m(
        "input_token_throughput",
        "Input Token Throughput",
        "tokens/sec",
        Aggregate,
        true,
    ),
    m(
        "total_token_throughput",
        "Total Token Throughput",
        "tokens/sec",
        Aggregate,
        false,
    ),
    m(
        "request_throughput",
        "Request Throughput",
        "requests/sec",
        Aggregate,
        true,
    ),
    m(
        "completed_request_count",
        "Completed Requests (Success + Error)",
        "requests",
        Aggregate,
        true,
    ),
    m(
        "request_error_rate",
        "Request Error Rate",
        "%",
        Aggregate,
        true,
    ),
    m(
        "request_count",
        "Request Count",
        "requests",
        Aggregate,
        true,
    ),
    m(
        "error_request_count",
        "Error Request Count",
        "requests",
        Aggregate,
        true,
    ),
    // The goodput metrics: only with `--goodput`.
    m(
        "good_request_count",
        "Good Request Count",
        "requests",
        Aggregate,
        true,
    ),
    m("goodput", "Goodput", "requests/sec", Aggregate, true),
    // AIPerf's header, spelled as AIPerf spells it (a CSV row name scripts look up).
    m(
        "good_request_fraction",
        "GoodRequestFraction",
        "ratio",
        Aggregate,
        true,
    ),
    m(
        "benchmark_duration",
        "Benchmark Duration",
        "sec",
        Aggregate,
        true,
    ),
    m(
        "total_output_tokens",
        "Total Output Tokens",
        "tokens",
        Aggregate,
        false,
    ),
    m(
        "total_input_tokens",
        "Total Input Tokens",
        "tokens",
        Aggregate,
        false,
    ),
    m(
        "total_isl",
        "Total Input Sequence Length",
        "tokens",
        Aggregate,
        false,
    ),
    m(
        "total_osl",
        "Total Output Sequence Length",
        "tokens",
        Aggregate,
        false,
    ),
    m(
        "total_usage_prompt_tokens",
        "Total Usage Prompt Tokens",
        "tokens",
        Aggregate,
        false,
    ),
    m(
        "total_usage_completion_tokens",
        "Total Usage Completion Tokens",
        "tokens",
        Aggregate,
        false,
    ),
    m(
        "total_usage_total_tokens",
        "Total Usage Total Tokens",
        "tokens",
        Aggregate,
        false,
    ),
    m(
        "usage_discrepancy_count",
        "Usage Discrepancy Count",
        "requests",
        Aggregate,
        false,
    ),
    m(
        "osl_mismatch_count",
        "OSL Mismatch Count",
        "requests",
        Aggregate,
        false,
    ),
    m("send_lag", "Send Lag", "ms", PerRequest, false),
    m("read_lag", "Read Lag", "ms", PerRequest, false),
    m(
        "credit_to_start_latency",
        "Credit-to-Start Latency",
        "ms",
        PerRequest,
        false,
    ),
];

pub fn metric_info(tag: &str) -> Option<&'static MetricInfo> {
    METRICS.iter().find(|m| m.tag == tag)
}

const NS_PER_MS: f64 = 1e6;

/// AIPerf's `USAGE_PCT_DIFF_THRESHOLD`: a usage count more than this many percent away from
/// the client's count is a discrepancy.
pub const USAGE_DIFF_THRESHOLD_PCT: f64 = 10.0;
/// AIPerf's OSL mismatch thresholds: a request is a mismatch when its output is further from
/// the requested length than `min(requested × 5 %, 50 tokens)`.
pub const OSL_MISMATCH_PCT: f64 = 5.0;
pub const OSL_MISMATCH_MAX_TOKENS: f64 = 50.0;

/// Bytes in AIPerf's KB (the `http_req_data_*` unit).
const BYTES_PER_KB: f64 = 1024.0;

/// The `http_req_*` metrics of one request (milliseconds, KB, counts).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HttpMetrics {
    pub blocked_ms: f64,
    pub dns_ms: f64,
    pub connecting_ms: f64,
    pub sending_ms: f64,
    pub waiting_ms: f64,
    pub receiving_ms: f64,
    /// sending + waiting + receiving.
    pub duration_ms: f64,
    /// blocked + dns + connecting.
    pub overhead_ms: f64,
    /// overhead + duration.
    pub total_ms: f64,
    pub reused: bool,
    pub sent_kb: f64,
    pub received_kb: f64,
    pub chunks_sent: u32,
    pub chunks_received: u32,
}

impl HttpMetrics {
    /// From a trace the transport measured completely; `None` otherwise (the https client,
    /// or an exchange that never got a response).
    pub fn from_trace(t: &HttpTrace, start_ns: u64) -> Option<Self> {
        if !t.measured || t.first_byte_ns == 0 || t.last_byte_ns == 0 {
            return None;
        }
        let ms = |a: u64, b: u64| b.saturating_sub(a) as f64 / NS_PER_MS;
        let blocked_ms = ms(start_ns, t.conn_ns);
        let dns_ms = ms(t.conn_ns, t.dns_ns);
        let connecting_ms = ms(t.dns_ns, t.connected_ns);
        let sending_ms = ms(t.connected_ns, t.sent_ns);
        let waiting_ms = ms(t.sent_ns, t.first_byte_ns);
        let receiving_ms = ms(t.first_byte_ns, t.last_byte_ns);
        let duration_ms = sending_ms + waiting_ms + receiving_ms;
        let overhead_ms = blocked_ms + dns_ms + connecting_ms;
        Some(Self {
            blocked_ms,
            dns_ms,
            connecting_ms,
            sending_ms,
            waiting_ms,
            receiving_ms,
            duration_ms,
            overhead_ms,
            total_ms: overhead_ms + duration_ms,
            reused: t.reused,
            sent_kb: t.bytes_sent as f64 / BYTES_PER_KB,
            received_kb: t.bytes_received as f64 / BYTES_PER_KB,
            chunks_sent: t.chunks_sent,
            chunks_received: t.chunks_received,
        })
    }
}

/// Metrics of one successful request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestMetrics {
    pub ttft_ms: Option<f64>,
    pub ttst_ms: Option<f64>,
    pub ttfo_ms: Option<f64>,
    pub latency_ms: f64,
    pub itl_ms: Option<f64>,
    pub icl_ms: Vec<f64>,
    pub tps_per_user: Option<f64>,
    pub osl: u64,
    pub reasoning_tokens: u64,
    pub isl: u64,
    /// End of the request for the benchmark duration: the last content response.
    pub end_ns: u64,
    /// Actual minus scheduled send time (rate and trace modes).
    pub send_lag_ms: Option<f64>,
    /// The longest time the response's bytes waited in the socket before the client read
    /// them (kernel-stamped reads only): the client's read lag, a health signal.
    pub read_lag_ms: Option<f64>,
    /// The client's and the server's output token counts differ by more than 10 %.
    pub count_mismatch: bool,
    /// With `--goodput`: whether the request met every objective (set by the aggregator; the
    /// JSONL's per-request `good_request_count`, 1 or 0, as AIPerf writes it).
    pub good: Option<bool>,
    /// Request latency minus TTFT (streaming).
    pub decode_ms: Option<f64>,
    /// OSL over the request latency in seconds.
    pub e2e_tps: Option<f64>,
    /// ISL over TTFT in seconds (streaming).
    pub prefill_tps: Option<f64>,
    /// Output tokens that are not reasoning; `None` when there are none.
    pub output_tokens: Option<u64>,
    /// The server's `usage` counts.
    pub usage: Usage,
    /// |usage prompt − ISL| / ISL × 100, and |usage completion − OSL| / OSL × 100.
    pub usage_prompt_diff_pct: Option<f64>,
    pub usage_completion_diff_pct: Option<f64>,
    /// Whether the usage counts differ from the client's by more than
    /// [`USAGE_DIFF_THRESHOLD_PCT`]; `None` when there is nothing to compare.
    pub usage_discrepancy: Option<bool>,
    /// (OSL − requested) / requested × 100, signed; and whether it is a mismatch.
    pub osl_mismatch_diff_pct: Option<f64>,
    pub osl_mismatch: Option<bool>,
    /// The HTTP phases (the lean HTTP/1.1 client only).
    pub http: Option<HttpMetrics>,
}

/// A metric's value for one request: an integer (counts) or a number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    Int(u64),
    Float(f64),
}

impl Num {
    pub fn as_f64(self) -> f64 {
        match self {
            Num::Int(v) => v as f64,
            Num::Float(v) => v,
        }
    }
}

impl serde::Serialize for Num {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Num::Int(v) => s.serialize_u64(*v),
            Num::Float(v) => s.serialize_f64(*v),
        }
    }
}

impl RequestMetrics {
    /// Every per-request metric with one value that this request has, in [`METRICS`] order
    /// (`inter_chunk_latency`, a list, is [`RequestMetrics::icl_ms`]).
    pub fn for_each(&self, mut f: impl FnMut(&'static str, Num)) {
        use Num::{Float, Int};
        let mut opt = |tag: &'static str, v: Option<Num>| {
            if let Some(v) = v {
                f(tag, v)
            }
        };
        opt("time_to_first_token", self.ttft_ms.map(Float));
        opt("time_to_second_token", self.ttst_ms.map(Float));
        opt("time_to_first_output_token", self.ttfo_ms.map(Float));
        opt("request_latency", Some(Float(self.latency_ms)));
        opt("decode_duration", self.decode_ms.map(Float));
        opt("inter_token_latency", self.itl_ms.map(Float));
        opt(
            "output_token_throughput_per_user",
            self.tps_per_user.map(Float),
        );
        opt("e2e_output_token_throughput", self.e2e_tps.map(Float));
        opt("prefill_throughput_per_user", self.prefill_tps.map(Float));
        opt("output_sequence_length", Some(Int(self.osl)));
        opt("output_token_count", self.output_tokens.map(Int));
        opt(
            "reasoning_token_count",
            (self.reasoning_tokens > 0).then_some(Int(self.reasoning_tokens)),
        );
        opt("input_sequence_length", Some(Int(self.isl)));
        opt("usage_prompt_tokens", self.usage.prompt_tokens.map(Int));
        opt(
            "usage_completion_tokens",
            self.usage.completion_tokens.map(Int),
        );
        opt("usage_total_tokens", self.usage.total_tokens.map(Int));
        opt(
            "usage_prompt_tokens_diff_pct",
            self.usage_prompt_diff_pct.map(Float),
        );
        opt(
            "usage_completion_tokens_diff_pct",
            self.usage_completion_diff_pct.map(Float),
        );
        opt(
            "osl_mismatch_diff_pct",
            self.osl_mismatch_diff_pct.map(Float),
        );
        if let Some(h) = &self.http {
            opt("http_req_blocked", Some(Float(h.blocked_ms)));
            opt("http_req_dns_lookup", Some(Float(h.dns_ms)));
            opt("http_req_connecting", Some(Float(h.connecting_ms)));
            opt("http_req_sending", Some(Float(h.sending_ms)));
            opt("http_req_waiting", Some(Float(h.waiting_ms)));
            opt("http_req_receiving", Some(Float(h.receiving_ms)));
            opt("http_req_duration", Some(Float(h.duration_ms)));
            opt("http_req_connection_overhead", Some(Float(h.overhead_ms)));
            opt("http_req_total", Some(Float(h.total_ms)));
            opt("http_req_connection_reused", Some(Int(h.reused as u64)));
            opt("http_req_data_sent", Some(Float(h.sent_kb)));
            opt("http_req_data_received", Some(Float(h.received_kb)));
            opt("http_req_chunks_sent", Some(Int(h.chunks_sent.into())));
            opt(
                "http_req_chunks_received",
                Some(Int(h.chunks_received.into())),
            );
        }
        opt("send_lag", self.send_lag_ms.map(Float));
        opt("credit_to_start_latency", self.send_lag_ms.map(Float));
        opt("read_lag", self.read_lag_ms.map(Float));
    }

    /// One per-request metric's value, if this request has one.
    pub fn value(&self, tag: &str) -> Option<f64> {
        let mut found = None;
        self.for_each(|t, v| {
            if t == tag {
                found = Some(v.as_f64());
            }
        });
        found
    }
}

/// A response's read lag (ms): the longest wait of its bytes in the socket, when its reads
/// carried kernel stamps.
pub fn read_lag_ms(h: &HttpTrace) -> Option<f64> {
    (h.kernel_reads > 0).then(|| h.read_lag_max_ns as f64 / NS_PER_MS)
}

/// Computes a successful request's metrics. OSL is the tokenizer's count of all output text
/// (or the server's count when `use_server_counts` and the server reported one).
pub fn compute(
    rec: &RequestRecord,
    tokenizer: &Tokenizer,
    use_server_counts: bool,
) -> RequestMetrics {
    let ms = |ns: u64| ns as f64 / NS_PER_MS;
    let content_tokens = tokenizer.count(&rec.output_text) as u64;
    let reasoning_tokens = tokenizer.count(&rec.reasoning_text) as u64;
    let mut osl = content_tokens + reasoning_tokens;
    let client_osl = osl;
    let mut isl = rec.isl as u64;
    let mut output_tokens = content_tokens;
    if use_server_counts {
        if let Some(u) = rec.usage {
            osl = u.completion_tokens.unwrap_or(osl);
            isl = u.prompt_tokens.unwrap_or(isl);
            // The server's completion count covers reasoning too.
            output_tokens = osl.saturating_sub(reasoning_tokens);
        }
    }
    let end_ns = rec.content_ns.last().copied().unwrap_or(rec.end_ns);
    let latency_ms = ms(end_ns.saturating_sub(rec.start_ns));
    let (mut ttft_ms, mut ttst_ms, mut ttfo_ms, mut itl_ms, mut tps) =
        (None, None, None, None, None);
    let mut icl_ms = Vec::new();
    if rec.streaming {
        if let Some(&first) = rec.content_ns.first() {
            let ttft = ms(first.saturating_sub(rec.start_ns));
            ttft_ms = Some(ttft);
            if let Some(&second) = rec.content_ns.get(1) {
                ttst_ms = Some(ms(second.saturating_sub(first)));
            }
            if osl >= 2 {
                let itl = (latency_ms - ttft) / (osl - 1) as f64;
                itl_ms = Some(itl);
                if itl > 0.0 {
                    tps = Some(1000.0 / itl);
                }
            }
        }
        ttfo_ms = rec
            .first_output_ns
            .map(|t| ms(t.saturating_sub(rec.start_ns)));
        icl_ms = rec
            .content_ns
            .windows(2)
            .map(|w| ms(w[1].saturating_sub(w[0])))
            .collect();
    }
    let usage = rec.usage.unwrap_or_default();
    // |server − client| / client × 100; no value when the client counted nothing.
    let diff_pct = |server: Option<u64>, client: u64| {
        server
            .filter(|_| client > 0)
            .map(|s| (s as f64 - client as f64).abs() / client as f64 * 100.0)
    };
    let usage_prompt_diff_pct = diff_pct(usage.prompt_tokens, isl);
    let usage_completion_diff_pct = diff_pct(usage.completion_tokens, osl);
    // AIPerf: counted when the prompt diff exists and it, or the completion diff, is over
    // the threshold; no value when the prompt diff (or, under the threshold, the completion
    // diff) is missing.
    let usage_discrepancy = usage_prompt_diff_pct.and_then(|p| {
        if p > USAGE_DIFF_THRESHOLD_PCT {
            Some(true)
        } else {
            usage_completion_diff_pct.map(|c| c > USAGE_DIFF_THRESHOLD_PCT)
        }
    });
    let requested = rec.requested_osl.filter(|&r| r > 0).map(f64::from);
    let osl_mismatch_diff_pct = requested.map(|r| (osl as f64 - r) / r * 100.0);
    let osl_mismatch = requested.map(|r| {
        let threshold = (r * OSL_MISMATCH_PCT / 100.0).min(OSL_MISMATCH_MAX_TOKENS);
        (osl as f64 - r).abs() > threshold
    });
    RequestMetrics {
        ttft_ms,
        ttst_ms,
        ttfo_ms,
        latency_ms,
        itl_ms,
        icl_ms,
        tps_per_user: tps,
        osl,
        reasoning_tokens,
        isl,
        end_ns,
        send_lag_ms: rec
            .scheduled_ns
            .map(|s| (rec.start_ns as f64 - s as f64) / NS_PER_MS),
        read_lag_ms: read_lag_ms(&rec.http),
        count_mismatch: rec
            .usage
            .and_then(|u| u.completion_tokens)
            .is_some_and(|server| {
                (client_osl as f64 - server as f64).abs() > 0.1 * (server.max(client_osl) as f64)
            }),
        decode_ms: ttft_ms.map(|t| (latency_ms - t).max(0.0)),
        e2e_tps: (latency_ms > 0.0).then(|| osl as f64 / (latency_ms / 1000.0)),
        prefill_tps: ttft_ms
            .filter(|&t| t > 0.0)
            .map(|t| isl as f64 / (t / 1000.0)),
        output_tokens: (output_tokens > 0).then_some(output_tokens),
        usage,
        usage_prompt_diff_pct,
        usage_completion_diff_pct,
        usage_discrepancy,
        osl_mismatch_diff_pct,
        osl_mismatch,
        http: HttpMetrics::from_trace(&rec.http, rec.start_ns),
        good: None,
    }
}

/// Values keyed by metric tag, for a caller that asks for the same tags in the same order
/// record after record ([`RequestMetrics::for_each`]'s order): each lookup first tries the
/// slot after the last one found, comparing the tags' addresses (the same literal), so the
/// usual lookup is one pointer comparison. A tag out of turn is found by a scan, and a new
/// one appended. (A `BTreeMap` keyed by name compared strings some six times per metric,
/// 40-odd metrics per record: about 2 % of a c=64 run's CPU.)
#[derive(Debug, Default)]
pub struct Slots<V> {
    slots: Vec<(&'static str, V)>,
    next: usize,
}

impl<V: Default> Slots<V> {
    /// The value for `tag`, created empty on first use.
    #[inline]
    pub fn entry(&mut self, tag: &'static str) -> &mut V {
        let same = |t: &str| std::ptr::eq(t, tag) || t == tag;
        let i = match self.slots.get(self.next) {
            Some((t, _)) if std::ptr::eq(*t, tag) => self.next,
            _ => match self.slots.iter().position(|(t, _)| same(t)) {
                Some(i) => i,
                None => {
                    self.slots.push((tag, V::default()));
                    self.slots.len() - 1
                }
            },
        };
        self.next = i + 1;
        &mut self.slots[i].1
    }

    pub fn get_mut(&mut self, tag: &str) -> Option<&mut V> {
        self.slots
            .iter_mut()
            .find(|(t, _)| *t == tag)
            .map(|(_, v)| v)
    }
}

/// Collects one phase's values as compact numbers.
#[derive(Debug, Default)]
pub struct PhaseAccumulator {
    values: Slots<Vec<f64>>,
    pub success: u64,
    pub errors: u64,
    pub cancelled: u64,
    pub error_counts: BTreeMap<ErrorDetails, u64>,
    pub min_start_ns: Option<u64>,
    pub max_end_ns: Option<u64>,
    pub total_osl: u64,
    pub total_isl: u64,
    /// Per-URL request counts (success, error).
    pub per_url: BTreeMap<usize, (u64, u64)>,
    pub count_mismatches: u64,
    /// `--goodput`'s objectives, and the successful requests meeting them.
    pub goodput: Option<Arc<Goodput>>,
    pub good: u64,
    /// Sums of the usage prompt, completion and total counts (`None`: never reported).
    pub usage_totals: [Option<u64>; 3],
    /// Requests counted by `usage_discrepancy_count` and `osl_mismatch_count` (`None`: no
    /// request had the values to compare).
    pub usage_discrepancies: Option<u64>,
    pub osl_mismatches: Option<u64>,
    /// Build the mergeable histograms ([`PhaseSummary::hdr`]): only a shard writes them.
    pub hdr: bool,
}

impl PhaseAccumulator {
    /// An accumulator counting the requests that meet `goodput`'s objectives, if any.
    pub fn new(goodput: Option<Arc<Goodput>>) -> Self {
        Self {
            goodput,
            ..Self::default()
        }
    }

    pub fn add_success(&mut self, rec: &RequestRecord, m: &RequestMetrics) {
        self.success += 1;
        self.per_url.entry(rec.url_index).or_default().0 += 1;
        self.min_start_ns = Some(
            self.min_start_ns
                .map_or(rec.start_ns, |s| s.min(rec.start_ns)),
        );
        self.max_end_ns = Some(self.max_end_ns.map_or(m.end_ns, |e| e.max(m.end_ns)));
        self.total_osl += m.osl;
        self.count_mismatches += m.count_mismatch as u64;
        self.total_isl += m.isl;
        // The aggregator judges each record once (`m.good`); judge here only when it has not.
        let good = m
            .good
            .unwrap_or_else(|| self.goodput.as_ref().is_some_and(|g| g.is_good(m)));
        if good {
            self.good += 1;
        }
        if let Some(d) = m.usage_discrepancy {
            *self.usage_discrepancies.get_or_insert(0) += d as u64;
        }
        if let Some(d) = m.osl_mismatch {
            *self.osl_mismatches.get_or_insert(0) += d as u64;
        }
        for (total, v) in self.usage_totals.iter_mut().zip([
            m.usage.prompt_tokens,
            m.usage.completion_tokens,
            m.usage.total_tokens,
        ]) {
            if let Some(v) = v {
                *total.get_or_insert(0) += v;
            }
        }
        let values = &mut self.values;
        m.for_each(|tag, v| values.entry(tag).push(v.as_f64()));
        if !m.icl_ms.is_empty() {
            self.values
                .entry("inter_chunk_latency")
                .extend_from_slice(&m.icl_ms);
        }
    }

    pub fn add_error(&mut self, rec: &RequestRecord, err: &ErrorDetails) {
        if let Some(s) = rec.scheduled_ns.filter(|_| rec.start_ns > 0) {
            let lag = (rec.start_ns as f64 - s as f64) / NS_PER_MS;
            self.values.entry("send_lag").push(lag);
            self.values.entry("credit_to_start_latency").push(lag);
        }
        if rec.cancelled {
            self.cancelled += 1;
        }
        self.errors += 1;
        self.per_url.entry(rec.url_index).or_default().1 += 1;
        *self.error_counts.entry(err.clone()).or_default() += 1;
    }

    /// Turns the collected values into the phase's summary.
    pub fn summarize(&mut self) -> PhaseSummary {
        let mut metrics = Vec::new();
        let mut hdrs = BTreeMap::new();
        for info in METRICS {
            match info.kind {
                PerRequest | PerRequestList => {
                    if let Some(vals) = self.values.get_mut(info.tag) {
                        if self.hdr {
                            if let Some(h) = hdr::MetricHdr::of(vals) {
                                hdrs.insert(info.tag, h);
                            }
                        }
                        if let Some(stats) = Stats::compute(vals) {
                            metrics.push(MetricSummary {
                                info,
                                stats: MetricValue::Stats(stats),
                            });
                        }
                    }
                }
                Aggregate => {}
            }
        }
        let duration_s = match (self.min_start_ns, self.max_end_ns) {
            (Some(s), Some(e)) if e > s => Some((e - s) as f64 / 1e9),
            _ => None,
        };
        let mut agg = |tag: &str, v: f64| {
            let info = metric_info(tag).expect("known metric");
            metrics.push(MetricSummary {
                info,
                stats: MetricValue::Avg(v),
            });
        };
        let completed = self.success + self.errors;
        if let Some(d) = duration_s {
            agg("output_token_throughput", self.total_osl as f64 / d);
            agg("input_token_throughput", self.total_isl as f64 / d);
            agg(
                "total_token_throughput",
                (self.total_isl + self.total_osl) as f64 / d,
            );
            agg("request_throughput", self.success as f64 / d);
        }
        if completed > 0 {
            // AIPerf: both only when some request completed; the rate is a percentage.
            agg("completed_request_count", completed as f64);
            agg(
                "request_error_rate",
                100.0 * self.errors as f64 / completed as f64,
            );
        }
        agg("request_count", self.success as f64);
        agg("error_request_count", self.errors as f64);
        if self.goodput.is_some() {
            // AIPerf: goodput over the benchmark duration; the fraction is over every
            // attempted request (failed ones included), 0 when there were none.
            agg("good_request_count", self.good as f64);
            if let Some(d) = duration_s {
                agg("goodput", self.good as f64 / d);
            }
            let fraction = if completed == 0 {
                0.0
            } else {
                self.good as f64 / completed as f64
            };
            agg("good_request_fraction", fraction);
        }
        if let Some(d) = duration_s {
            agg("benchmark_duration", d);
        }
        agg("total_output_tokens", self.total_osl as f64);
        agg("total_input_tokens", self.total_isl as f64);
        if self.success > 0 {
            agg("total_isl", self.total_isl as f64);
            agg("total_osl", self.total_osl as f64);
        }
        for (tag, total) in [
            "total_usage_prompt_tokens",
            "total_usage_completion_tokens",
            "total_usage_total_tokens",
        ]
        .into_iter()
        .zip(self.usage_totals)
        {
            if let Some(t) = total {
                agg(tag, t as f64);
            }
        }
        if let Some(n) = self.usage_discrepancies {
            agg("usage_discrepancy_count", n as f64);
        }
        if let Some(n) = self.osl_mismatches {
            agg("osl_mismatch_count", n as f64);
        }
        let mut errors: Vec<(ErrorDetails, u64)> = self
            .error_counts
            .iter()
            .map(|(e, c)| (e.clone(), *c))
            .collect();
        errors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        PhaseSummary {
            metrics,
            errors,
            success: self.success,
            error_count: self.errors,
            cancelled: self.cancelled,
            per_url: self.per_url.clone(),
            count_mismatches: self.count_mismatches,
            hdr: hdrs,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    Stats(Stats),
    Avg(f64),
}

#[derive(Debug, Clone)]
pub struct MetricSummary {
    pub info: &'static MetricInfo,
    pub stats: MetricValue,
}

/// One phase's results, ready for export and for the `phase_complete` hook.
#[derive(Debug, Clone, Default)]
pub struct PhaseSummary {
    pub metrics: Vec<MetricSummary>,
    pub errors: Vec<(ErrorDetails, u64)>,
    pub success: u64,
    pub error_count: u64,
    pub cancelled: u64,
    pub per_url: BTreeMap<usize, (u64, u64)>,
    /// Requests whose client and server output token counts differ by more than 10 %.
    pub count_mismatches: u64,
    /// Every per-request metric's mergeable summary (a shard's `_hdr.json`); empty unless the
    /// accumulator was asked for them ([`PhaseAccumulator::hdr`]).
    pub hdr: BTreeMap<&'static str, hdr::MetricHdr>,
}

impl PhaseSummary {
    pub fn get(&self, tag: &str) -> Option<&MetricValue> {
        self.metrics
            .iter()
            .find(|m| m.info.tag == tag)
            .map(|m| &m.stats)
    }

    /// The metrics in the shape of `profile_export_aiperf.json`: tag -> {unit, avg, ...}
    /// (the summary of the `phase_complete` and `benchmark_complete` hooks).
    pub fn metrics_json(&self) -> Map<String, Value> {
        match serde_json::to_value(MetricsJson(&self.metrics)) {
            Ok(Value::Object(m)) => m,
            _ => unreachable!("a map of metrics serialises to a JSON object"),
        }
    }
}

/// Serialises metrics as tag → {unit, avg, p1 … p99, min, max, std, count, sum}, in order
/// (an aggregate has `unit` and `avg` only).
pub struct MetricsJson<'a>(pub &'a [MetricSummary]);

impl serde::Serialize for MetricsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|m| (m.info.tag, m)))
    }
}

impl serde::Serialize for MetricSummary {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("unit", self.info.unit)?;
        match &self.stats {
            MetricValue::Avg(v) => m.serialize_entry("avg", v)?,
            MetricValue::Stats(st) => {
                m.serialize_entry("avg", &st.avg)?;
                for (p, name) in stats::PERCENTILES {
                    m.serialize_entry(name, &st.percentile(p))?;
                }
                m.serialize_entry("min", &st.min)?;
                m.serialize_entry("max", &st.max)?;
                m.serialize_entry("std", &st.std)?;
                m.serialize_entry("count", &st.count)?;
                m.serialize_entry("sum", &st.sum)?;
            }
        }
        m.end()
    }
}

/// Serialises an error summary as `[{"error_details": {...}, "count": n}, ...]`.
pub struct ErrorSummaryJson<'a>(pub &'a [(ErrorDetails, u64)]);

impl serde::Serialize for ErrorSummaryJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct ErrorCount<'a> {
            error_details: &'a ErrorDetails,
            count: u64,
        }
        s.collect_seq(self.0.iter().map(|(error_details, count)| ErrorCount {
            error_details,
            count: *count,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;

    #[test]
    fn slots_find_each_tag_in_or_out_of_turn() {
        let mut s: Slots<Vec<u32>> = Slots::default();
        // A tag with the same text from elsewhere (another address) is the same tag.
        let owned = String::from("b");
        let b_elsewhere: &'static str = Box::leak(owned.into_boxed_str());
        for round in 0..3u32 {
            s.entry("a").push(round);
            s.entry("b").push(round);
            if round == 1 {
                s.entry(b_elsewhere).push(100);
                s.entry("a").push(200); // out of turn
            }
            s.entry("c").push(round);
        }
        assert_eq!(s.get_mut("a").unwrap(), &vec![0, 1, 200, 2]);
        assert_eq!(s.get_mut("b").unwrap(), &vec![0, 1, 100, 2]);
        assert_eq!(s.get_mut("c").unwrap(), &vec![0, 1, 2]);
        assert!(s.get_mut("d").is_none());
        assert_eq!(s.slots.len(), 3);
    }

    fn record(content_ns: Vec<u64>, text: &str) -> RequestRecord {
        RequestRecord {
            phase: PhaseKind::Profiling,
            request_index: 0,
            conversation_index: 0,
            turn_index: 0,
            url_index: 0,
            streaming: true,
            start_ns: 1_000_000,
            scheduled_ns: None,
            ack_ns: Some(2_000_000),
            end_ns: *content_ns.last().unwrap_or(&5_000_000) + 100,
            first_output_ns: content_ns.first().copied(),
            content_ns,
            output_text: text.to_string(),
            reasoning_text: String::new(),
            usage: None,
            isl: 10,
            error: None,
            cancelled: false,
            requested_osl: None,
            ids: Default::default(),
            http: Default::default(),
        }
    }

    #[test]
    fn hand_computed_request_metrics() {
        let tok = Tokenizer::load("builtin").unwrap();
        // "hello world hello world" is 4 tokens in o200k_base; 3 events.
        let text = "hello world hello world";
        assert_eq!(tok.count(text), 4);
        let rec = record(vec![21_000_000, 26_000_000, 37_000_000], text);
        let m = compute(&rec, &tok, false);
        assert_eq!(m.ttft_ms, Some(20.0));
        assert_eq!(m.ttst_ms, Some(5.0));
        assert_eq!(m.latency_ms, 36.0);
        assert_eq!(m.osl, 4, "OSL counts tokens, not the 3 events");
        // ITL = (36 - 20) / (4 - 1)
        assert!((m.itl_ms.unwrap() - 16.0 / 3.0).abs() < 1e-12);
        assert!((m.tps_per_user.unwrap() - 1000.0 / (16.0 / 3.0)).abs() < 1e-9);
        assert_eq!(m.icl_ms, vec![5.0, 11.0]);
        assert_eq!(m.end_ns, 37_000_000);
    }

    #[test]
    fn single_token_has_no_itl() {
        let tok = Tokenizer::load("builtin").unwrap();
        let m = compute(&record(vec![3_000_000], "hello"), &tok, false);
        assert_eq!(m.osl, 1);
        assert_eq!(m.itl_ms, None);
        assert_eq!(m.ttst_ms, None);
    }

    #[test]
    fn server_counts_when_asked() {
        let tok = Tokenizer::load("builtin").unwrap();
        let mut rec = record(vec![3_000_000, 4_000_000], "hello world");
        rec.usage = Some(Usage {
            prompt_tokens: Some(99),
            completion_tokens: Some(7),
            total_tokens: None,
        });
        let m = compute(&rec, &tok, true);
        assert_eq!((m.osl, m.isl), (7, 99));
        let m = compute(&rec, &tok, false);
        assert_eq!((m.osl, m.isl), (2, 10));
    }

    /// The mergeable histograms are built only when asked for (a shard's run).
    #[test]
    fn hdr_summaries_are_built_only_when_asked_for() {
        let tok = Tokenizer::load("builtin").unwrap();
        let r = record(vec![21_000_000, 26_000_000], "hello world");
        let m = compute(&r, &tok, false);
        let mut plain = PhaseAccumulator::default();
        plain.add_success(&r, &m);
        assert!(plain.summarize().hdr.is_empty());
        let mut sharded = PhaseAccumulator {
            hdr: true,
            ..PhaseAccumulator::default()
        };
        sharded.add_success(&r, &m);
        let s = sharded.summarize();
        let ttft = s.hdr.get("time_to_first_token").expect("a TTFT histogram");
        assert_eq!(ttft.count, 1);
    }

    #[test]
    fn phase_aggregates() {
        let tok = Tokenizer::load("builtin").unwrap();
        let mut acc = PhaseAccumulator::default();
        let a = record(vec![21_000_000, 26_000_000], "hello world");
        let mut b = record(vec![41_000_000, 51_000_000], "hello world");
        b.start_ns = 11_000_000;
        for r in [&a, &b] {
            acc.add_success(r, &compute(r, &tok, false));
        }
        let mut e = record(vec![], "");
        e.error = Some(ErrorDetails::new(Some(500), "HTTPError", "boom"));
        acc.add_error(&e, e.error.as_ref().unwrap());
        acc.add_error(&e, e.error.as_ref().unwrap());
        let s = acc.summarize();
        // duration = max end (51 ms) - min start (1 ms) = 50 ms
        assert_eq!(s.get("benchmark_duration"), Some(&MetricValue::Avg(0.05)));
        assert_eq!(
            s.get("request_throughput"),
            Some(&MetricValue::Avg(2.0 / 0.05))
        );
        assert_eq!(
            s.get("output_token_throughput"),
            Some(&MetricValue::Avg(4.0 / 0.05))
        );
        assert_eq!(s.get("request_count"), Some(&MetricValue::Avg(2.0)));
        assert_eq!(s.get("error_request_count"), Some(&MetricValue::Avg(2.0)));
        assert_eq!(s.errors.len(), 1);
        assert_eq!(s.errors[0].1, 2);
        let MetricValue::Stats(ttft) = s.get("time_to_first_token").unwrap() else {
            panic!()
        };
        assert_eq!((ttft.min, ttft.max, ttft.avg), (20.0, 30.0, 25.0));
        let j = s.metrics_json();
        assert_eq!(j["time_to_first_token"]["unit"], "ms");
        assert_eq!(j["request_count"], json!({"unit": "requests", "avg": 2.0}));
        assert!(s.get("good_request_count").is_none(), "only with --goodput");
        assert!(s.get("goodput").is_none());
        assert!(s.get("good_request_fraction").is_none());
    }

    #[test]
    fn goodput_aggregates() {
        let tok = Tokenizer::load("builtin").unwrap();
        let goodput = goodput::parse("time_to_first_token:25").unwrap();
        let mut acc = PhaseAccumulator::new(Some(Arc::new(goodput)));
        // TTFT 20 ms (good) and 30 ms (not good).
        let a = record(vec![21_000_000, 26_000_000], "hello world");
        let mut b = record(vec![41_000_000, 51_000_000], "hello world");
        b.start_ns = 11_000_000;
        for r in [&a, &b] {
            acc.add_success(r, &compute(r, &tok, false));
        }
        let mut e = record(vec![], "");
        e.error = Some(ErrorDetails::new(Some(500), "HTTPError", "boom"));
        acc.add_error(&e, e.error.as_ref().unwrap());
        let s = acc.summarize();
        assert_eq!(s.get("good_request_count"), Some(&MetricValue::Avg(1.0)));
        assert_eq!(s.get("goodput"), Some(&MetricValue::Avg(1.0 / 0.05)));
        assert_eq!(
            s.get("good_request_fraction"),
            Some(&MetricValue::Avg(1.0 / 3.0)),
            "good over attempted, the failed one included"
        );
        let j = s.metrics_json();
        assert_eq!(j["goodput"], json!({"unit": "requests/sec", "avg": 20.0}));
        assert_eq!(
            j["good_request_count"],
            json!({"unit": "requests", "avg": 1.0})
        );
        // No request at all: a count and a fraction of 0, no goodput (no duration).
        let goodput = goodput::parse("time_to_first_token:25").unwrap();
        let s = PhaseAccumulator::new(Some(Arc::new(goodput))).summarize();
        assert_eq!(s.get("good_request_count"), Some(&MetricValue::Avg(0.0)));
        assert_eq!(s.get("good_request_fraction"), Some(&MetricValue::Avg(0.0)));
        assert!(s.get("goodput").is_none());
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    fn usage(prompt: Option<u64>, completion: Option<u64>, total: Option<u64>) -> Option<Usage> {
        Some(Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: total,
        })
    }

    #[test]
    fn aiperfs_per_request_metrics_by_hand() {
        let tok = Tokenizer::load("builtin").unwrap();
        // Start 1 ms; content at 21, 26, 37 ms: TTFT 20 ms, latency 36 ms; OSL 4, ISL 10.
        let mut rec = record(
            vec![21_000_000, 26_000_000, 37_000_000],
            "hello world hello world",
        );
        rec.usage = usage(Some(12), Some(4), Some(16));
        rec.requested_osl = Some(5);
        let m = compute(&rec, &tok, false);
        assert_eq!(m.decode_ms, Some(16.0), "latency − TTFT");
        assert!(close(m.e2e_tps, 4.0 / 0.036), "OSL / latency in s");
        assert!(close(m.prefill_tps, 10.0 / 0.020), "ISL / TTFT in s");
        assert_eq!(m.output_tokens, Some(4));
        assert_eq!(
            (
                m.usage.prompt_tokens,
                m.usage.completion_tokens,
                m.usage.total_tokens
            ),
            (Some(12), Some(4), Some(16))
        );
        assert!(close(m.usage_prompt_diff_pct, 20.0), "|12 − 10| / 10");
        assert!(close(m.usage_completion_diff_pct, 0.0));
        assert_eq!(m.usage_discrepancy, Some(true), "20 % > 10 %");
        assert!(close(m.osl_mismatch_diff_pct, -20.0), "signed: (4 − 5) / 5");
        assert_eq!(m.osl_mismatch, Some(true), "1 token > min(5 × 5 %, 50)");
        assert_eq!(m.http, None, "no trace measured");
        // The generic view has every one of them, counts as integers.
        assert_eq!(m.value("decode_duration"), Some(16.0));
        assert_eq!(m.value("usage_total_tokens"), Some(16.0));
        assert_eq!(m.value("http_req_total"), None);
        let mut kinds = Vec::new();
        m.for_each(|tag, v| kinds.push((tag, matches!(v, Num::Int(_)))));
        assert!(kinds.contains(&("output_token_count", true)));
        assert!(kinds.contains(&("usage_prompt_tokens", true)));
        assert!(kinds.contains(&("decode_duration", false)));
        // Every tag it reports is in the table.
        for (tag, _) in &kinds {
            assert!(metric_info(tag).is_some(), "{tag}");
        }
    }

    #[test]
    fn usage_discrepancy_follows_aiperfs_rule() {
        let tok = Tokenizer::load("builtin").unwrap();
        let at = |p, c| {
            let mut rec = record(vec![21_000_000, 26_000_000], "hello world");
            rec.usage = usage(p, c, None);
            compute(&rec, &tok, false)
        };
        // ISL 10, OSL 2.
        assert_eq!(at(Some(10), Some(3)).usage_discrepancy, Some(true), "50 %");
        assert_eq!(
            at(Some(11), Some(2)).usage_discrepancy,
            Some(false),
            "10 % is not over 10 %"
        );
        assert_eq!(
            at(Some(11), None).usage_discrepancy,
            None,
            "no completion diff to look at"
        );
        assert_eq!(
            at(Some(20), None).usage_discrepancy,
            Some(true),
            "the prompt diff alone is over"
        );
        assert_eq!(at(None, Some(9)).usage_discrepancy, None, "no prompt diff");
        let m = at(None, None);
        assert_eq!(
            (m.usage_prompt_diff_pct, m.usage_completion_diff_pct),
            (None, None)
        );
        assert_eq!(m.usage, Usage::default());
    }

    #[test]
    fn no_usage_no_output_and_reasoning() {
        let tok = Tokenizer::load("builtin").unwrap();
        // A non-streamed answer with no text: OSL 0.
        let mut rec = record(vec![3_000_000], "");
        rec.streaming = false;
        rec.requested_osl = Some(5);
        rec.usage = usage(Some(10), Some(0), None);
        let m = compute(&rec, &tok, false);
        assert_eq!(m.osl, 0);
        assert_eq!(m.output_tokens, None, "no value for zero output tokens");
        assert_eq!(m.e2e_tps, Some(0.0), "0 tokens over 2 ms");
        assert_eq!((m.decode_ms, m.prefill_tps), (None, None), "not streamed");
        assert_eq!(
            m.usage_completion_diff_pct, None,
            "no diff against zero client tokens"
        );
        assert!(close(m.usage_prompt_diff_pct, 0.0));
        assert_eq!(m.usage_discrepancy, None);
        assert!(close(m.osl_mismatch_diff_pct, -100.0));
        // Requested 0: no mismatch value.
        rec.requested_osl = Some(0);
        let m = compute(&rec, &tok, false);
        assert_eq!((m.osl_mismatch_diff_pct, m.osl_mismatch), (None, None));
        // Reasoning: OSL counts it, the output token count does not.
        let mut rec = record(vec![21_000_000, 26_000_000], "hello");
        rec.reasoning_text = "hello world".into();
        let m = compute(&rec, &tok, false);
        assert_eq!(
            (m.osl, m.output_tokens, m.reasoning_tokens),
            (3, Some(1), 2)
        );
        // OSL mismatch thresholds: min(requested × 5 %, 50 tokens).
        rec.requested_osl = Some(3);
        assert_eq!(compute(&rec, &tok, false).osl_mismatch, Some(false));
        rec.requested_osl = Some(4);
        assert_eq!(
            compute(&rec, &tok, false).osl_mismatch,
            Some(true),
            "1 > 0.2"
        );
    }

    #[test]
    fn http_phases_by_hand() {
        let tok = Tokenizer::load("builtin").unwrap();
        let mut rec = record(vec![21_000_000, 37_000_000], "hello world");
        rec.http = HttpTrace {
            conn_ns: 1_100_000,
            dns_ns: 1_300_000,
            connected_ns: 2_000_000,
            sent_ns: 2_500_000,
            first_byte_ns: 4_000_000,
            last_byte_ns: 37_000_000,
            reused: false,
            bytes_sent: 2048,
            chunks_sent: 1,
            bytes_received: 5120,
            chunks_received: 17,
            measured: true,
            kernel_reads: 17,
            read_lag_max_ns: 250_000,
            kernel_sent_ns: Some(2_500_000),
            tcp_connected_ns: None,
        };
        assert!(rec.http.kernel_timed());
        let m = compute(&rec, &tok, false);
        assert_eq!(m.read_lag_ms, Some(0.25));
        let h = m.http.expect("measured");
        let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(near(h.blocked_ms, 0.1) && near(h.dns_ms, 0.2) && near(h.connecting_ms, 0.7));
        assert!(near(h.sending_ms, 0.5) && near(h.waiting_ms, 1.5) && near(h.receiving_ms, 33.0));
        assert!(near(h.duration_ms, 35.0), "sending + waiting + receiving");
        assert!(near(h.overhead_ms, 1.0), "blocked + DNS + connecting");
        assert!(near(h.total_ms, 36.0), "start to last byte");
        assert_eq!((h.sent_kb, h.received_kb), (2.0, 5.0), "KB of 1024 bytes");
        assert_eq!((h.chunks_sent, h.chunks_received, h.reused), (1, 17, false));
        // Not measured (https), or no response byte: no HTTP metrics.
        rec.http.measured = false;
        assert_eq!(compute(&rec, &tok, false).http, None);
        rec.http.measured = true;
        rec.http.first_byte_ns = 0;
        assert_eq!(compute(&rec, &tok, false).http, None);
    }

    #[test]
    fn aiperfs_aggregates_by_hand() {
        let tok = Tokenizer::load("builtin").unwrap();
        let mut acc = PhaseAccumulator::default();
        let mut a = record(vec![21_000_000, 26_000_000], "hello world");
        a.usage = usage(Some(12), Some(2), Some(14));
        let mut b = record(vec![41_000_000, 51_000_000], "hello world");
        b.start_ns = 11_000_000;
        for r in [&a, &b] {
            acc.add_success(r, &compute(r, &tok, false));
        }
        let mut e = record(vec![], "");
        e.error = Some(ErrorDetails::new(Some(500), "HTTPError", "boom"));
        acc.add_error(&e, e.error.as_ref().unwrap());
        acc.add_error(&e, e.error.as_ref().unwrap());
        let s = acc.summarize();
        let avg = |tag: &str| match s.get(tag) {
            Some(MetricValue::Avg(v)) => Some(*v),
            _ => None,
        };
        // Duration 50 ms; ISL 10 + 10, OSL 2 + 2.
        assert!(close(avg("input_token_throughput"), 20.0 / 0.05));
        assert!(close(avg("total_token_throughput"), 24.0 / 0.05));
        assert_eq!(avg("completed_request_count"), Some(4.0));
        assert_eq!(avg("request_error_rate"), Some(50.0), "a percentage");
        assert_eq!(
            (avg("total_isl"), avg("total_osl")),
            (Some(20.0), Some(4.0))
        );
        assert_eq!(avg("total_usage_prompt_tokens"), Some(12.0));
        assert_eq!(avg("total_usage_completion_tokens"), Some(2.0));
        assert_eq!(avg("total_usage_total_tokens"), Some(14.0));
        assert_eq!(avg("usage_discrepancy_count"), Some(1.0), "|12 − 10| / 10");
        assert_eq!(avg("osl_mismatch_count"), None, "no max_tokens was sent");
        assert!(s.get("credit_to_start_latency").is_none(), "closed loop");
        let MetricValue::Stats(d) = s.get("decode_duration").unwrap() else {
            panic!()
        };
        assert_eq!((d.min, d.max, d.count), (5.0, 10.0, 2));
        let j = s.metrics_json();
        assert_eq!(j["request_error_rate"], json!({"unit": "%", "avg": 50.0}));
        assert_eq!(j["usage_prompt_tokens"]["count"], 1);

        // Failed requests only: completed and the error rate, no token totals.
        let mut acc = PhaseAccumulator::default();
        acc.add_error(&e, e.error.as_ref().unwrap());
        let s = acc.summarize();
        assert_eq!(s.get("request_error_rate"), Some(&MetricValue::Avg(100.0)));
        assert_eq!(
            s.get("completed_request_count"),
            Some(&MetricValue::Avg(1.0))
        );
        assert!(s.get("total_isl").is_none() && s.get("input_token_throughput").is_none());
        // Nothing at all: neither.
        let s = PhaseAccumulator::default().summarize();
        assert!(s.get("request_error_rate").is_none());
        assert!(s.get("completed_request_count").is_none());
    }

    #[test]
    fn credit_to_start_is_the_send_lag_in_rate_mode() {
        let tok = Tokenizer::load("builtin").unwrap();
        let mut acc = PhaseAccumulator::default();
        let mut a = record(vec![21_000_000, 26_000_000], "hello world");
        a.scheduled_ns = Some(500_000);
        acc.add_success(&a, &compute(&a, &tok, false));
        let mut e = record(vec![], "");
        e.scheduled_ns = Some(700_000);
        e.error = Some(ErrorDetails::new(Some(500), "HTTPError", "boom"));
        acc.add_error(&e, e.error.as_ref().unwrap());
        let s = acc.summarize();
        let MetricValue::Stats(c) = s.get("credit_to_start_latency").unwrap() else {
            panic!()
        };
        assert_eq!((c.min, c.max, c.count), (0.3, 0.5, 2));
        assert_eq!(s.get("credit_to_start_latency"), s.get("send_lag"));
    }
}
