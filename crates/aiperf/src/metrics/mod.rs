//! Metric definitions (METRICS.md), per-request computation and per-phase aggregation.

pub mod goodput;
pub mod processor;
pub mod record;
pub mod stats;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

pub use goodput::Goodput;
pub use record::{ErrorDetails, PhaseKind, RequestRecord, Usage};
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

/// Every metric, in display order.
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
        "output_sequence_length",
        "Output Sequence Length",
        "tokens",
        PerRequest,
        true,
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
    m(
        "output_token_throughput",
        "Output Token Throughput",
        "tokens/sec",
        Aggregate,
        true,
    ),
    m(
        "request_throughput",
        "Request Throughput",
        "requests/sec",
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
    m(
        "good_request_fraction",
        "Good Request Fraction",
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
    m("send_lag", "Send Lag", "ms", PerRequest, false),
];

pub fn metric_info(tag: &str) -> Option<&'static MetricInfo> {
    METRICS.iter().find(|m| m.tag == tag)
}

const NS_PER_MS: f64 = 1e6;

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
    /// The client's and the server's output token counts differ by more than 10 %.
    pub count_mismatch: bool,
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
    if use_server_counts {
        if let Some(u) = rec.usage {
            osl = u.completion_tokens.unwrap_or(osl);
            isl = u.prompt_tokens.unwrap_or(isl);
        }
    }
    let end_ns = rec.content_ns.last().copied().unwrap_or(rec.end_ns);
    let latency_ms = ms(end_ns.saturating_sub(rec.start_ns));
    let (mut ttft_ms, mut ttst_ms, mut ttfo_ms, mut itl_ms, mut tps) =
        (None, None, None, None, None);
    let mut icl_ms = Vec::new();
    if rec.streaming {
        if let Some(&first) = rec.content_ns.first() {
            let ttft = ms(first - rec.start_ns);
            ttft_ms = Some(ttft);
            if let Some(&second) = rec.content_ns.get(1) {
                ttst_ms = Some(ms(second - first));
            }
            if osl >= 2 {
                let itl = (latency_ms - ttft) / (osl - 1) as f64;
                itl_ms = Some(itl);
                if itl > 0.0 {
                    tps = Some(1000.0 / itl);
                }
            }
        }
        ttfo_ms = rec.first_output_ns.map(|t| ms(t - rec.start_ns));
        icl_ms = rec.content_ns.windows(2).map(|w| ms(w[1] - w[0])).collect();
    }
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
        count_mismatch: rec
            .usage
            .and_then(|u| u.completion_tokens)
            .is_some_and(|server| {
                (client_osl as f64 - server as f64).abs() > 0.1 * (server.max(client_osl) as f64)
            }),
    }
}

/// Collects one phase's values as compact numbers.
#[derive(Debug, Default)]
pub struct PhaseAccumulator {
    values: BTreeMap<&'static str, Vec<f64>>,
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
        if self.goodput.as_ref().is_some_and(|g| g.is_good(m)) {
            self.good += 1;
        }
        let mut push = |tag: &'static str, v: Option<f64>| {
            if let Some(v) = v {
                self.values.entry(tag).or_default().push(v);
            }
        };
        push("time_to_first_token", m.ttft_ms);
        push("time_to_second_token", m.ttst_ms);
        push("time_to_first_output_token", m.ttfo_ms);
        push("request_latency", Some(m.latency_ms));
        push("inter_token_latency", m.itl_ms);
        push("output_token_throughput_per_user", m.tps_per_user);
        push("output_sequence_length", Some(m.osl as f64));
        if m.reasoning_tokens > 0 {
            push("reasoning_token_count", Some(m.reasoning_tokens as f64));
        }
        push("input_sequence_length", Some(m.isl as f64));
        push("send_lag", m.send_lag_ms);
        if !m.icl_ms.is_empty() {
            self.values
                .entry("inter_chunk_latency")
                .or_default()
                .extend_from_slice(&m.icl_ms);
        }
    }

    pub fn add_error(&mut self, rec: &RequestRecord, err: &ErrorDetails) {
        if let Some(s) = rec.scheduled_ns.filter(|_| rec.start_ns > 0) {
            let lag = (rec.start_ns as f64 - s as f64) / NS_PER_MS;
            self.values.entry("send_lag").or_default().push(lag);
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
        for info in METRICS {
            match info.kind {
                PerRequest | PerRequestList => {
                    if let Some(vals) = self.values.get_mut(info.tag) {
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
        if let Some(d) = duration_s {
            agg("output_token_throughput", self.total_osl as f64 / d);
            agg("request_throughput", self.success as f64 / d);
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
            let attempted = self.success + self.errors;
            let fraction = if attempted == 0 {
                0.0
            } else {
                self.good as f64 / attempted as f64
            };
            agg("good_request_fraction", fraction);
        }
        if let Some(d) = duration_s {
            agg("benchmark_duration", d);
        }
        agg("total_output_tokens", self.total_osl as f64);
        agg("total_input_tokens", self.total_isl as f64);
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
        });
        let m = compute(&rec, &tok, true);
        assert_eq!((m.osl, m.isl), (7, 99));
        let m = compute(&rec, &tok, false);
        assert_eq!((m.osl, m.isl), (2, 10));
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
}
