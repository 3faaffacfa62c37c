//! The mock's Prometheus `/metrics`: what it served, under vLLM's names.
//!
//! Every figure comes from the answers the mock actually gave: the gauges are live counts
//! (requests holding a `max_num_seqs` slot, requests queued for one, the tokens those
//! requests hold), the counters are sums over answers, the histograms are observations of
//! the times the mock served. The hot path only touches atomics: a token costs a few
//! relaxed adds (a histogram bucket, its count and sum, the token counters).
//!
//! The KV-cache model: a request holds its prompt tokens once admitted, plus one token per
//! token generated, until its answer ends; `vllm:kv_cache_usage_perc` is the tokens held over
//! `kv_cache_tokens` (capped at 1, as vLLM's is a fraction). The mock never preempts
//! (`vllm:num_preemptions_total` stays 0). Prefix caching is modelled in `prefix.rs`.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

/// vLLM's bucket bounds (seconds) of `vllm:time_to_first_token_seconds`.
pub const TTFT_BOUNDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// vLLM's bounds of `vllm:inter_token_latency_seconds` (those of its time per output token).
pub const ITL_BOUNDS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
/// vLLM's bounds of its request latency histograms (`vllm:e2e_request_latency_seconds`).
pub const E2E_BOUNDS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

/// The `model_name` label (the model `/v1/models` lists) and vLLM's `engine` label.
pub const LABELS: &str = "model_name=\"mock-model\",engine=\"0\"";

/// A histogram of atomic buckets (each bucket counts its own observations; rendering makes
/// them cumulative), with the sum kept in nanoseconds.
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, then the `+Inf` bucket.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Counts `n` observations of `d`.
    pub fn observe_n(&self, d: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let secs = d.as_secs_f64();
        let i = self.bounds.partition_point(|&b| b < secs);
        self.buckets[i].fetch_add(n, Relaxed);
        self.count.fetch_add(n, Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns.saturating_mul(n), Relaxed);
    }

    pub fn observe(&self, d: Duration) {
        self.observe_n(d, 1);
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// The sum of the observations, in seconds.
    pub fn sum_secs(&self) -> f64 {
        self.sum_ns.load(Relaxed) as f64 / 1e9
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Relaxed);
            let le = self
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |v| format!("{v:?}"));
            let _ = writeln!(out, "{name}_bucket{{{LABELS},le=\"{le}\"}} {cumulative}");
        }
        // The count is the +Inf bucket, so the two always agree within one scrape.
        let _ = writeln!(out, "{name}_count{{{LABELS}}} {cumulative}");
        let _ = writeln!(out, "{name}_sum{{{LABELS}}} {:?}", self.sum_secs());
    }
}

/// The mock's server-side metrics.
pub struct Metrics {
    /// Requests holding a slot (admitted, answer not ended).
    pub running: AtomicU64,
    /// Requests queued for a slot (`max_num_seqs`).
    pub waiting: AtomicU64,
    /// Tokens held by the running requests (the KV-cache model).
    pub kv_tokens: AtomicU64,
    pub kv_capacity: u64,
    pub prompt_tokens: AtomicU64,
    pub generation_tokens: AtomicU64,
    /// Answers that ended normally (`finished_reason="length"`: the mock always generates
    /// the tokens asked for).
    pub success: AtomicU64,
    pub prefix_queries: AtomicU64,
    pub prefix_hits: AtomicU64,
    pub ttft: Histogram,
    pub itl: Histogram,
    pub e2e: Histogram,
}

impl Metrics {
    pub fn new(kv_capacity: u64) -> Self {
        Self {
            running: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            kv_tokens: AtomicU64::new(0),
            kv_capacity: kv_capacity.max(1),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            success: AtomicU64::new(0),
            prefix_queries: AtomicU64::new(0),
            prefix_hits: AtomicU64::new(0),
            ttft: Histogram::new(TTFT_BOUNDS),
            itl: Histogram::new(ITL_BOUNDS),
            e2e: Histogram::new(E2E_BOUNDS),
        }
    }

    /// The KV-cache usage, a fraction from 0 to 1.
    pub fn kv_usage(&self) -> f64 {
        (self.kv_tokens.load(Relaxed) as f64 / self.kv_capacity as f64).min(1.0)
    }

    /// The exposition text (Prometheus text format 0.0.4), in the order vLLM lists them.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let gauge = |out: &mut String, name: &str, help: &str, v: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{LABELS}}} {v}"
            );
        };
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{{LABELS}}} {v}"
            );
        };
        gauge(
            &mut out,
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            self.running.load(Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            self.waiting.load(Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            format!("{:?}", self.kv_usage()),
        );
        counter(
            &mut out,
            "vllm:prefix_cache_queries_total",
            "Prefix cache queries, in terms of number of queried tokens.",
            self.prefix_queries.load(Relaxed),
        );
        counter(
            &mut out,
            "vllm:prefix_cache_hits_total",
            "Prefix cache hits, in terms of number of cached tokens.",
            self.prefix_hits.load(Relaxed),
        );
        counter(
            &mut out,
            "vllm:num_preemptions_total",
            "Cumulative number of preemption from the engine.",
            0,
        );
        counter(
            &mut out,
            "vllm:prompt_tokens_total",
            "Number of prefill tokens processed.",
            self.prompt_tokens.load(Relaxed),
        );
        counter(
            &mut out,
            "vllm:generation_tokens_total",
            "Number of generation tokens processed.",
            self.generation_tokens.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP vllm:request_success_total Count of successfully processed requests.\n\
             # TYPE vllm:request_success_total counter"
        );
        for reason in ["stop", "length", "abort"] {
            let v = if reason == "length" {
                self.success.load(Relaxed)
            } else {
                0
            };
            let _ = writeln!(
                out,
                "vllm:request_success_total{{{LABELS},finished_reason=\"{reason}\"}} {v}"
            );
        }
        self.ttft.render(
            &mut out,
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
        );
        self.itl.render(
            &mut out,
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
        );
        self.e2e.render(
            &mut out,
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
        );
        out
    }
}

/// One admitted request's part in the metrics: running from admission until its answer
/// ends, holding its tokens in the KV-cache model and its `max_num_seqs` slot. The first
/// token observes the TTFT (from the request's arrival, so a wait for a slot is in it), each
/// later one an inter-token latency; `succeed` observes the end-to-end latency. Given back
/// once, by `finish` or when dropped (a fault, a dropped connection).
pub struct Served {
    m: Arc<Metrics>,
    arrival: Instant,
    /// Tokens this request holds in the KV-cache model.
    held: AtomicU64,
    /// Tokens generated so far.
    sent: AtomicU64,
    /// When the last token went out (ns after `arrival`).
    last_ns: AtomicU64,
    permit: Mutex<Option<OwnedSemaphorePermit>>,
    done: AtomicBool,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Served {
    /// A request admitted (holding `permit`, if slots are limited) with its prompt.
    pub fn admit(
        m: &Arc<Metrics>,
        arrival: Instant,
        prompt_tokens: u64,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        m.running.fetch_add(1, Relaxed);
        m.kv_tokens.fetch_add(prompt_tokens, Relaxed);
        m.prompt_tokens.fetch_add(prompt_tokens, Relaxed);
        Self {
            m: m.clone(),
            arrival,
            held: AtomicU64::new(prompt_tokens),
            sent: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
            permit: Mutex::new(permit),
            done: AtomicBool::new(false),
        }
    }

    /// One token went out now.
    pub fn token(&self) {
        let now = nanos(self.arrival.elapsed());
        let last = self.last_ns.swap(now, Relaxed);
        if self.sent.fetch_add(1, Relaxed) == 0 {
            self.m.ttft.observe(Duration::from_nanos(now));
        } else {
            self.m
                .itl
                .observe(Duration::from_nanos(now.saturating_sub(last)));
        }
        self.m.generation_tokens.fetch_add(1, Relaxed);
        self.held.fetch_add(1, Relaxed);
        self.m.kv_tokens.fetch_add(1, Relaxed);
    }

    /// A whole answer of `tokens` tokens went out now: its tokens were generated at `ttft`
    /// after arrival, then one every `itl`.
    pub fn tokens_at_once(&self, tokens: u64, ttft: Duration, itl: Duration) {
        if tokens == 0 {
            return;
        }
        self.m.ttft.observe(ttft);
        self.m.itl.observe_n(itl, tokens - 1);
        self.sent.fetch_add(tokens, Relaxed);
        self.m.generation_tokens.fetch_add(tokens, Relaxed);
        self.held.fetch_add(tokens, Relaxed);
        self.m.kv_tokens.fetch_add(tokens, Relaxed);
    }

    /// The answer ended normally: counted a success, its end-to-end latency observed.
    pub fn succeed(&self) {
        if self.done.load(Relaxed) {
            return;
        }
        self.m.success.fetch_add(1, Relaxed);
        self.m.e2e.observe(self.arrival.elapsed());
        self.finish();
    }

    /// No longer running: its tokens and its slot are given back (only the first call).
    pub fn finish(&self) {
        if self.done.swap(true, Relaxed) {
            return;
        }
        self.m.running.fetch_sub(1, Relaxed);
        self.m
            .kv_tokens
            .fetch_sub(self.held.swap(0, Relaxed), Relaxed);
        if let Ok(mut p) = self.permit.lock() {
            p.take();
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks exposition text line by line against the text format (0.0.4): names, label
    /// syntax, values, `# TYPE` before a family's samples, histograms' buckets ascending
    /// and cumulative up to `+Inf`, which equals `_count`. Returns name → value of each
    /// sample (with its labels, as written).
    pub(super) fn check_exposition(text: &str) -> std::collections::BTreeMap<String, f64> {
        use std::collections::{BTreeMap, HashMap};
        let name_ok = |n: &str| {
            let mut c = n.chars();
            c.next()
                .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
                && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
        };
        let mut types: HashMap<String, String> = HashMap::new();
        let mut samples = BTreeMap::new();
        // histogram family -> (last le, last cumulative count)
        let mut last_bucket: HashMap<String, (f64, f64)> = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let kind = parts.next().unwrap();
                let name = parts.next().unwrap();
                let tail = parts.next().unwrap_or("");
                assert!(name_ok(name), "{line}");
                match kind {
                    "HELP" => assert!(!tail.is_empty(), "{line}"),
                    "TYPE" => {
                        assert!(["counter", "gauge", "histogram"].contains(&tail), "{line}");
                        assert!(types.insert(name.into(), tail.into()).is_none(), "{line}");
                    }
                    _ => panic!("unknown comment: {line}"),
                }
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect(line);
            let v: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.strip_suffix('}').expect(line)),
                None => (series, ""),
            };
            assert!(name_ok(name), "{line}");
            let mut le = None;
            for pair in labels.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').expect(line);
                assert!(name_ok(k) && !k.contains(':'), "{line}");
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .expect(line);
                if k == "le" {
                    le = Some(if v == "+Inf" {
                        f64::INFINITY
                    } else {
                        v.parse::<f64>().expect(line)
                    });
                }
            }
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"));
            match family {
                Some(f) if name.ends_with("_bucket") => {
                    let le = le.expect(line);
                    let (prev_le, prev_n) = last_bucket.get(f).copied().unwrap_or((-1.0, 0.0));
                    assert!(le > prev_le && v >= prev_n, "not ascending: {line}");
                    last_bucket.insert(f.into(), (le, v));
                }
                Some(f) if name.ends_with("_count") => {
                    assert_eq!(last_bucket.get(f), Some(&(f64::INFINITY, v)), "{line}");
                }
                Some(_) => {}
                None => assert!(types.contains_key(name), "no # TYPE before {line}"),
            }
            assert!(
                samples.insert(series.to_string(), v).is_none(),
                "twice: {line}"
            );
        }
        samples
    }

    #[test]
    fn the_exposition_text_is_well_formed() {
        let m = Arc::new(Metrics::new(1000));
        let s = Served::admit(&m, Instant::now(), 10, None);
        s.token();
        s.token();
        let text = m.render();
        let samples = check_exposition(&text);
        let get = |k: &str| samples[&format!("{k}{{{LABELS}}}")];
        assert_eq!(get("vllm:num_requests_running"), 1.0);
        assert_eq!(get("vllm:num_requests_waiting"), 0.0);
        assert_eq!(get("vllm:kv_cache_usage_perc"), 0.012);
        assert_eq!(get("vllm:generation_tokens_total"), 2.0);
        assert_eq!(get("vllm:prompt_tokens_total"), 10.0);
        assert_eq!(get("vllm:time_to_first_token_seconds_count"), 1.0);
        assert_eq!(get("vllm:inter_token_latency_seconds_count"), 1.0);
        assert_eq!(get("vllm:num_preemptions_total"), 0.0);
        for name in [
            "vllm:time_to_first_token_seconds",
            "vllm:inter_token_latency_seconds",
            "vllm:e2e_request_latency_seconds",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} histogram\n")),
                "{name}"
            );
        }
        // vLLM's bounds, each a bucket, plus +Inf.
        let ttft_buckets = samples
            .keys()
            .filter(|k| k.starts_with("vllm:time_to_first_token_seconds_bucket"))
            .count();
        assert_eq!(ttft_buckets, TTFT_BOUNDS.len() + 1);
    }

    #[test]
    fn buckets_are_cumulative_and_le_inclusive() {
        let h = Histogram::new(TTFT_BOUNDS);
        h.observe(Duration::from_millis(20)); // exactly on le="0.02"
        h.observe(Duration::from_millis(21));
        h.observe(Duration::from_secs(3000)); // past the last bound
        let mut out = String::new();
        h.render(&mut out, "x", "h");
        assert!(out.contains(&format!("x_bucket{{{LABELS},le=\"0.01\"}} 0\n")));
        assert!(out.contains(&format!("x_bucket{{{LABELS},le=\"0.02\"}} 1\n")));
        assert!(out.contains(&format!("x_bucket{{{LABELS},le=\"0.04\"}} 2\n")));
        assert!(out.contains(&format!("x_bucket{{{LABELS},le=\"2560.0\"}} 2\n")));
        assert!(out.contains(&format!("x_bucket{{{LABELS},le=\"+Inf\"}} 3\n")));
        assert!(out.contains(&format!("x_count{{{LABELS}}} 3\n")));
        assert!((h.sum_secs() - 3000.041).abs() < 1e-9);
    }

    #[test]
    fn served_gives_back_what_it_took_once() {
        let m = Arc::new(Metrics::new(100));
        let s = Served::admit(&m, Instant::now(), 30, None);
        s.token();
        s.token();
        assert_eq!(m.running.load(Relaxed), 1);
        assert_eq!(m.kv_tokens.load(Relaxed), 32);
        assert!((m.kv_usage() - 0.32).abs() < 1e-12);
        assert_eq!((m.ttft.count(), m.itl.count()), (1, 1));
        s.succeed();
        s.succeed();
        drop(s);
        assert_eq!(m.running.load(Relaxed), 0);
        assert_eq!(m.kv_tokens.load(Relaxed), 0);
        assert_eq!(m.success.load(Relaxed), 1);
        assert_eq!(m.e2e.count(), 1);
        assert_eq!(m.generation_tokens.load(Relaxed), 2);
        assert_eq!(m.prompt_tokens.load(Relaxed), 30);
        // A dropped (faulted) answer is no success, and still leaves.
        let s = Served::admit(&m, Instant::now(), 500, None);
        s.tokens_at_once(4, Duration::from_millis(20), Duration::from_millis(5));
        assert_eq!(m.kv_usage(), 1.0, "capped at 1");
        drop(s);
        assert_eq!(m.running.load(Relaxed), 0);
        assert_eq!(m.success.load(Relaxed), 1);
        assert_eq!((m.ttft.count(), m.itl.count()), (2, 4));
    }
}
