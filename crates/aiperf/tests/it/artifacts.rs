//! Artifact layout per METRICS.md: the JSON summary, the CSV, the JSONL records, inputs.json
//! and the console table.

use std::collections::HashSet;

use serde_json::Value;

use crate::support::{self, Output, Run};

const STATS: [&str; 15] = [
    "avg", "min", "max", "std", "p1", "p5", "p10", "p25", "p50", "p75", "p90", "p95", "p99",
    "count", "sum",
];

const PER_REQUEST: [&str; 9] = [
    "time_to_first_token",
    "time_to_second_token",
    "time_to_first_output_token",
    "request_latency",
    "inter_token_latency",
    "inter_chunk_latency",
    "output_token_throughput_per_user",
    "output_sequence_length",
    "input_sequence_length",
];

const AGGREGATES: [&str; 7] = [
    "request_count",
    "error_request_count",
    "request_throughput",
    "output_token_throughput",
    "benchmark_duration",
    "total_output_tokens",
    "total_input_tokens",
];

/// A small streaming run with warmup: 2 warmup + 6 profiling requests of 5 tokens.
fn streaming_run() -> Output {
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=2&itl_ms=1",
        "--streaming",
        "--osl",
        "5",
        "--isl",
        "12",
        "--concurrency",
        "2",
        "--request-count",
        "6",
        "--warmup-request-count",
        "2",
        "--num-dataset-entries",
        "4",
    ])
    .run();
    run.ok();
    run
}

fn unit_of(tag: &str) -> &'static str {
    match tag {
        "time_to_first_token"
        | "time_to_second_token"
        | "time_to_first_output_token"
        | "request_latency"
        | "inter_token_latency"
        | "inter_chunk_latency"
        | "decode_duration"
        | "http_req_blocked"
        | "http_req_dns_lookup"
        | "http_req_connecting"
        | "http_req_sending"
        | "http_req_waiting"
        | "http_req_receiving"
        | "http_req_duration"
        | "http_req_connection_overhead"
        | "http_req_total" => "ms",
        "output_token_throughput_per_user"
        | "e2e_output_token_throughput"
        | "prefill_throughput_per_user" => "tokens/sec/user",
        "output_sequence_length"
        | "input_sequence_length"
        | "output_token_count"
        | "total_output_tokens"
        | "total_input_tokens" => "tokens",
        "osl_mismatch_diff_pct"
        | "usage_prompt_tokens_diff_pct"
        | "usage_completion_tokens_diff_pct" => "%",
        "usage_prompt_tokens" | "usage_completion_tokens" | "usage_total_tokens" => "tokens",
        "http_req_connection_reused" => "ratio",
        "http_req_data_sent" | "http_req_data_received" => "KB",
        "http_req_chunks_sent" | "http_req_chunks_received" => "count",
        "request_count" | "error_request_count" => "requests",
        "request_throughput" => "requests/sec",
        "output_token_throughput" => "tokens/sec",
        "benchmark_duration" => "sec",
        other => panic!("no unit known for {other}"),
    }
}

#[test]
fn json_summary_layout() {
    let _gate = support::shared();
    let run = streaming_run();
    let j = run.json();
    for key in [
        "schema_version",
        "benchmark_id",
        "input_config",
        "was_cancelled",
        "error_summary",
        "start_time",
        "end_time",
    ] {
        assert!(j.get(key).is_some(), "missing top-level `{key}`");
    }
    assert!(j["schema_version"].is_string());
    assert!(j["benchmark_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(j["was_cancelled"], false);
    assert_eq!(j["error_summary"], Value::Array(vec![]));
    assert!(j["input_config"].is_object());
    for key in ["start_time", "end_time"] {
        let t = j[key].as_str().unwrap();
        assert!(t.len() >= 19 && t.as_bytes()[10] == b'T', "{key}: {t}");
    }
    assert!(j["start_time"].as_str() <= j["end_time"].as_str());

    for tag in PER_REQUEST {
        let m = &j[tag];
        assert_eq!(m["unit"], unit_of(tag), "{tag}");
        for stat in STATS {
            assert!(m[stat].is_number(), "{tag}.{stat} missing: {m}");
        }
        let (min, p50, max) = (
            m["min"].as_f64().unwrap(),
            m["p50"].as_f64().unwrap(),
            m["max"].as_f64().unwrap(),
        );
        assert!(min <= p50 && p50 <= max, "{tag}: {m}");
    }
    for tag in AGGREGATES {
        let m = &j[tag];
        assert_eq!(m["unit"], unit_of(tag), "{tag}");
        assert!(m["avg"].is_number(), "{tag}: {m}");
    }
    assert_eq!(j["request_count"]["avg"], 6.0);
    assert_eq!(j["error_request_count"]["avg"], 0.0);
    assert_eq!(j["output_sequence_length"]["avg"], 5.0);
    assert_eq!(j["input_sequence_length"]["avg"], 12.0);
    assert_eq!(j["total_output_tokens"]["avg"], 30.0);
    assert_eq!(j["total_input_tokens"]["avg"], 72.0);
    assert_eq!(j["request_latency"]["count"], 6);
    // Per-request lists: 5 tokens, one per event, give 4 gaps per request.
    assert_eq!(j["inter_chunk_latency"]["count"], 24);

    // Warmup is kept apart.
    let w = &j["warmup"];
    assert_eq!(w["request_count"]["avg"], 2.0);
    assert_eq!(w["request_latency"]["count"], 2);

    // Aggregates are consistent with each other.
    let dur = j["benchmark_duration"]["avg"].as_f64().unwrap();
    assert!(dur > 0.0);
    let thr = j["request_throughput"]["avg"].as_f64().unwrap();
    assert!(
        (thr - 6.0 / dur).abs() < 1e-6 * thr.max(1.0),
        "{thr} vs {dur}"
    );
    let otps = j["output_token_throughput"]["avg"].as_f64().unwrap();
    assert!((otps - 30.0 / dur).abs() < 1e-6 * otps.max(1.0));

    // The resolved config shows what was asked for.
    let c = &j["input_config"];
    assert_eq!(c["endpoint"]["streaming"], true);
    assert_eq!(c["loadgen"]["request_count"], 6);
    assert_eq!(c["loadgen"]["warmup_request_count"], 2);
}

#[test]
fn json_summary_matches_the_jsonl_records() {
    let _gate = support::shared();
    let run = streaming_run();
    let j = run.json();
    let recs = run.jsonl();
    let mut latencies: Vec<f64> = recs
        .iter()
        .filter(|r| r["metadata"]["benchmark_phase"] == "profiling")
        .map(|r| r["metrics"]["request_latency"]["value"].as_f64().unwrap())
        .collect();
    latencies.sort_by(f64::total_cmp);
    assert_eq!(latencies.len(), 6);
    let n = latencies.len() as f64;
    let avg = latencies.iter().sum::<f64>() / n;
    let std = (latencies.iter().map(|v| (v - avg).powi(2)).sum::<f64>() / n).sqrt();
    // numpy's linear percentile: index q/100 * (n-1).
    let pct = |q: f64| {
        let idx = q / 100.0 * (n - 1.0);
        let (lo, hi) = (idx.floor() as usize, idx.ceil() as usize);
        latencies[lo] + (latencies[hi] - latencies[lo]) * (idx - lo as f64)
    };
    let m = &j["request_latency"];
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs().max(1.0);
    assert!(close(m["avg"].as_f64().unwrap(), avg), "avg {m}");
    assert!(close(m["std"].as_f64().unwrap(), std), "population std {m}");
    assert!(close(m["min"].as_f64().unwrap(), latencies[0]), "{m}");
    assert!(close(m["max"].as_f64().unwrap(), latencies[5]), "{m}");
    for (q, name) in [(25.0, "p25"), (50.0, "p50"), (90.0, "p90"), (99.0, "p99")] {
        assert!(close(m[name].as_f64().unwrap(), pct(q)), "{name} {m}");
    }
}

#[test]
fn csv_layout() {
    let _gate = support::shared();
    let run = streaming_run();
    let csv = run.csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "Metric,avg,min,max,sum,p1,p5,p10,p25,p50,p75,p90,p95,p99,std"
    );
    let blank = lines
        .iter()
        .position(|l| l.is_empty())
        .expect("a blank line between the blocks");
    assert!(blank > 1, "statistics rows before the blank line");
    for row in &lines[1..blank] {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells.len(), 15, "{row}");
        assert!(
            (cells[0].ends_with(')') && cells[0].contains(" ("))
                || cells[0].starts_with("HTTP Chunks"),
            "row labelled `Header (unit)` (no unit for counts): {row}"
        );
        for c in &cells[1..] {
            c.parse::<f64>()
                .unwrap_or_else(|_| panic!("not a number {c:?} in {row}"));
            let decimals = c.rsplit_once('.').map(|(_, d)| d.len());
            assert_eq!(decimals, Some(2), "two decimals, as AIPerf: {c:?} in {row}");
        }
    }
    assert!(
        lines[1..blank]
            .iter()
            .any(|l| l.starts_with("Time to First Token (ms),")),
        "{csv}"
    );
    assert!(lines[1..blank]
        .iter()
        .any(|l| l.starts_with("Output Sequence Length (tokens),5.00,5.00,5.00,30.00,")));
    assert_eq!(lines[blank + 1], "Metric,Value");
    let agg: Vec<&str> = lines[blank + 2..].to_vec();
    assert!(!agg.is_empty());
    for row in &agg {
        let (_label, value) = row.rsplit_once(',').expect("Metric,Value row");
        value.parse::<f64>().expect("a number");
    }
    // AIPerf's labels: no unit for request counts; two decimals.
    assert!(agg.contains(&"Request Count,6.00"), "{agg:?}");
    assert!(agg.contains(&"Error Request Count,0.00"), "{agg:?}");
    assert!(
        agg.contains(&"Completed Requests (Success + Error),6.00"),
        "{agg:?}"
    );
    assert!(agg.contains(&"Request Error Rate (%),0.00"), "{agg:?}");
}

#[test]
fn jsonl_has_one_record_per_request_including_warmup() {
    let _gate = support::shared();
    let run = streaming_run();
    let recs = run.jsonl();
    assert_eq!(recs.len(), 8);
    let mut session_nums = HashSet::new();
    for r in &recs {
        let m = &r["metadata"];
        let phase = m["benchmark_phase"].as_str().expect("benchmark_phase");
        assert!(phase == "warmup" || phase == "profiling", "{r}");
        assert!(session_nums.insert(m["session_num"].as_u64().expect("session_num")));
        assert!(m["conversation_id"].is_string(), "{r}");
        assert_eq!(m["turn_index"], 0, "{r}");
        let start = m["request_start_ns"].as_u64().expect("request_start_ns");
        let end = m["request_end_ns"].as_u64().expect("request_end_ns");
        assert!(start <= end, "{r}");
        assert!(r["error"].is_null(), "{r}");
        let metrics = r["metrics"].as_object().expect("metrics object");
        for (tag, v) in metrics {
            assert!(v.get("value").is_some(), "{tag}: {v}");
            assert_eq!(v["unit"], unit_of(tag), "{tag}");
        }
        assert_eq!(metrics["output_sequence_length"]["value"], 5);
        assert_eq!(metrics["input_sequence_length"]["value"], 12);
        assert!(metrics["time_to_first_token"]["value"].is_number());
        assert_eq!(
            metrics["inter_chunk_latency"]["value"]
                .as_array()
                .map(Vec::len),
            Some(4)
        );
    }
    assert_eq!(
        session_nums,
        (0..8).collect::<HashSet<u64>>(),
        "session_num numbers every request of the run"
    );
    let warmup: Vec<&Value> = recs
        .iter()
        .filter(|r| r["metadata"]["benchmark_phase"] == "warmup")
        .collect();
    assert_eq!(warmup.len(), 2);
    // Warmup happens before profiling.
    let last_warmup_end = warmup
        .iter()
        .map(|r| r["metadata"]["request_end_ns"].as_u64().unwrap())
        .max()
        .unwrap();
    for r in recs
        .iter()
        .filter(|r| r["metadata"]["benchmark_phase"] == "profiling")
    {
        assert!(r["metadata"]["request_start_ns"].as_u64().unwrap() >= last_warmup_end);
    }
}

/// A JSONL record's `conversation_id` names the inputs.json session whose payload it sent.
#[test]
fn jsonl_conversation_ids_refer_to_inputs_json_sessions() {
    let _gate = support::shared();
    let run = streaming_run();
    let sessions: HashSet<String> = run.inputs()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["session_id"].as_str().unwrap().to_string())
        .collect();
    for r in run.jsonl() {
        let id = r["metadata"]["conversation_id"].as_str().unwrap();
        assert!(
            sessions.contains(id),
            "conversation_id {id} is not a session_id of inputs.json ({sessions:?})"
        );
    }
}

#[test]
fn inputs_json_layout() {
    let _gate = support::shared();
    let run = streaming_run();
    let inputs = run.inputs();
    let obj = inputs.as_object().unwrap();
    assert_eq!(obj.keys().collect::<Vec<_>>(), vec!["data"]);
    let data = inputs["data"].as_array().unwrap();
    assert_eq!(data.len(), 4, "one entry per dataset entry");
    let mut ids = HashSet::new();
    for d in data {
        let id = d["session_id"].as_str().expect("session_id");
        assert!(ids.insert(id.to_string()), "session ids are unique");
        let payloads = d["payloads"].as_array().expect("payloads");
        assert_eq!(payloads.len(), 1, "single-turn");
        let p = &payloads[0];
        assert_eq!(p["model"], "mock-model");
        assert_eq!(p["stream"], true);
        assert_eq!(p["max_completion_tokens"], 5);
        assert!(p["messages"][0]["content"].is_string());
    }
}

#[test]
fn console_table_header() {
    let _gate = support::shared();
    let run = streaming_run();
    let header = run
        .stdout
        .lines()
        .find(|l| l.contains("Metric") && l.contains("avg"))
        .unwrap_or_else(|| panic!("no table header in:\n{}", run.stdout));
    let cols: Vec<&str> = header
        .split(['│', '|'])
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        cols,
        vec!["Metric", "avg", "min", "max", "p99", "p90", "p50", "std"]
    );
    for label in [
        "Time to First Token (ms)",
        "Inter Token Latency (ms)",
        "Request Latency (ms)",
        "Request Count (requests)",
    ] {
        assert!(run.stdout.contains(label), "{label} missing");
    }
}
