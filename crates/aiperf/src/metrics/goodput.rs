//! `--goodput`: per-request service level objectives, and which requests meet them.
//!
//! Following AIPerf: a request is good when it succeeded and every constrained metric has a
//! value for it that meets its threshold: `≤` for most metrics (latencies), `≥` for the
//! larger-is-better ones (`output_token_throughput_per_user`, `output_sequence_length`). A
//! request without a value for a constrained metric (no TTFT when not streaming) is not good.
//! Thresholds are in the metric's display unit (ms for latencies).

use serde::{Serialize, Serializer};

use super::{metric_info, MetricKind, RequestMetrics, METRICS};

/// Metrics where a larger value is better: the threshold is a minimum.
const LARGER_IS_BETTER: &[&str] = &[
    "output_token_throughput_per_user",
    "output_sequence_length",
    "e2e_output_token_throughput",
    "prefill_throughput_per_user",
    "output_token_count",
    "usage_prompt_tokens",
    "usage_completion_tokens",
    "usage_total_tokens",
];

/// One objective: `tag` must be at most (or, for a larger-is-better metric, at least)
/// `threshold`.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    pub tag: &'static str,
    pub threshold: f64,
}

impl Slo {
    pub fn larger_is_better(&self) -> bool {
        LARGER_IS_BETTER.contains(&self.tag)
    }

    fn passes(&self, value: f64) -> bool {
        if self.larger_is_better() {
            value >= self.threshold
        } else {
            value <= self.threshold
        }
    }
}

/// The parsed `--goodput`: objectives in the order given (a repeated tag: the last one wins).
#[derive(Debug, Clone, PartialEq)]
pub struct Goodput(pub Vec<Slo>);

/// The tags `--goodput` accepts: the metrics with one value per request.
pub fn goodput_tags() -> impl Iterator<Item = &'static str> {
    METRICS
        .iter()
        .filter(|m| m.kind == MetricKind::PerRequest)
        .map(|m| m.tag)
}

/// Value parser of `--goodput "TAG:VALUE TAG:VALUE ..."`.
pub fn parse(s: &str) -> Result<Goodput, String> {
    let mut slos: Vec<Slo> = Vec::new();
    for pair in s.split_whitespace() {
        let Some((tag, value)) = pair.split_once(':') else {
            return Err(format!("`{pair}` is not TAG:VALUE"));
        };
        let tag = match metric_info(tag) {
            Some(info) if info.kind == MetricKind::PerRequest => info.tag,
            Some(_) => {
                return Err(format!(
                    "`{tag}` has no per-request value (one of: {})",
                    goodput_tags().collect::<Vec<_>>().join(", ")
                ))
            }
            None => {
                return Err(format!(
                    "unknown metric `{tag}` (one of: {})",
                    goodput_tags().collect::<Vec<_>>().join(", ")
                ))
            }
        };
        let threshold: f64 = value
            .parse()
            .map_err(|_| format!("`{value}` for `{tag}` is not a number"))?;
        if !threshold.is_finite() || threshold < 0.0 {
            return Err(format!(
                "`{value}` for `{tag}` must be a finite number, 0 or more"
            ));
        }
        slos.retain(|s| s.tag != tag);
        slos.push(Slo { tag, threshold });
    }
    if slos.is_empty() {
        return Err("no TAG:VALUE pairs".into());
    }
    Ok(Goodput(slos))
}

/// A successful request's value of a per-request metric, as the summary counts it.
fn value_of(tag: &str, m: &RequestMetrics) -> Option<f64> {
    m.value(tag)
}

impl Goodput {
    /// Whether a successful request meets every objective.
    pub fn is_good(&self, m: &RequestMetrics) -> bool {
        self.0
            .iter()
            .all(|slo| value_of(slo.tag, m).is_some_and(|v| slo.passes(v)))
    }
}

/// Serialised as AIPerf's `input_config.input.goodput`: `{tag: threshold, ...}`.
impl Serialize for Goodput {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|slo| (slo.tag, slo.threshold)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs() {
        let g = parse(" time_to_first_token:200  inter_token_latency:20.5 request_latency:3e3 ")
            .unwrap();
        assert_eq!(
            g.0,
            vec![
                Slo {
                    tag: "time_to_first_token",
                    threshold: 200.0
                },
                Slo {
                    tag: "inter_token_latency",
                    threshold: 20.5
                },
                Slo {
                    tag: "request_latency",
                    threshold: 3000.0
                },
            ]
        );
        assert_eq!(
            serde_json::to_value(&g).unwrap(),
            serde_json::json!({"time_to_first_token": 200.0, "inter_token_latency": 20.5,
                "request_latency": 3000.0})
        );
        let g = parse("request_latency:5 request_latency:7").unwrap();
        assert_eq!(g.0.len(), 1);
        assert_eq!(g.0[0].threshold, 7.0);
        assert!(parse("output_token_throughput_per_user:0").is_ok());
    }

    #[test]
    fn rejects_bad_tags_and_values() {
        for (arg, needle) in [
            ("ttft:200", "unknown metric `ttft`"),
            (
                "request_throughput:5",
                "`request_throughput` has no per-request value",
            ),
            (
                "inter_chunk_latency:5",
                "`inter_chunk_latency` has no per-request value",
            ),
            ("request_latency", "`request_latency` is not TAG:VALUE"),
            (
                "request_latency:abc",
                "`abc` for `request_latency` is not a number",
            ),
            (
                "request_latency:",
                "`` for `request_latency` is not a number",
            ),
            ("request_latency:NaN", "must be a finite number"),
            ("request_latency:inf", "must be a finite number"),
            ("request_latency:-1", "must be a finite number, 0 or more"),
            ("", "no TAG:VALUE pairs"),
            ("   ", "no TAG:VALUE pairs"),
        ] {
            let e = parse(arg).unwrap_err();
            assert!(e.contains(needle), "{arg}: {e}");
        }
    }

    fn metrics(ttft: Option<f64>, latency: f64, tps: Option<f64>, osl: u64) -> RequestMetrics {
        RequestMetrics {
            ttft_ms: ttft,
            latency_ms: latency,
            tps_per_user: tps,
            osl,
            ..Default::default()
        }
    }

    #[test]
    fn classifies_requests() {
        let g = parse("time_to_first_token:200 request_latency:3000").unwrap();
        assert!(
            g.is_good(&metrics(Some(200.0), 3000.0, None, 5)),
            "bounds included"
        );
        assert!(g.is_good(&metrics(Some(10.0), 100.0, None, 5)));
        assert!(!g.is_good(&metrics(Some(200.1), 100.0, None, 5)));
        assert!(!g.is_good(&metrics(Some(10.0), 3000.1, None, 5)));
        assert!(
            !g.is_good(&metrics(None, 100.0, None, 5)),
            "no TTFT (not streamed): not good"
        );
        // Larger is better: the threshold is a minimum.
        let g = parse("output_token_throughput_per_user:100 output_sequence_length:4").unwrap();
        assert!(g.0.iter().all(Slo::larger_is_better));
        assert!(g.is_good(&metrics(None, 1.0, Some(100.0), 4)));
        assert!(g.is_good(&metrics(None, 1.0, Some(150.0), 9)));
        assert!(!g.is_good(&metrics(None, 1.0, Some(99.9), 9)));
        assert!(!g.is_good(&metrics(None, 1.0, Some(150.0), 3)));
        assert!(!g.is_good(&metrics(None, 1.0, None, 9)));
    }
}
