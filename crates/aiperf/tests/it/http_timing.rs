//! AIPerf's per-request metrics beyond latency: the HTTP phases (`http_req_*`), the usage
//! counts and their differences, the request ids on the wire (`X-Request-ID`,
//! `X-Correlation-ID` / `--session-header`) and `--connection-reuse-strategy`, checked in
//! the JSON, the CSV and the JSONL of real runs.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::support::{
    self, chat_completion, config_error, write_file, Output, Run, ScriptedServer,
};

/// Every AIPerf metric the client computes for a streamed run, with its unit; `true` for the
/// ones with statistics (one value per request), `false` for the aggregates (`avg` only).
const STREAMED: &[(&str, &str, bool)] = &[
    ("decode_duration", "ms", true),
    ("e2e_output_token_throughput", "tokens/sec/user", true),
    ("prefill_throughput_per_user", "tokens/sec/user", true),
    ("output_token_count", "tokens", true),
    ("osl_mismatch_diff_pct", "%", true),
    ("http_req_blocked", "ms", true),
    ("http_req_dns_lookup", "ms", true),
    ("http_req_connecting", "ms", true),
    ("http_req_sending", "ms", true),
    ("http_req_waiting", "ms", true),
    ("http_req_receiving", "ms", true),
    ("http_req_duration", "ms", true),
    ("http_req_connection_overhead", "ms", true),
    ("http_req_total", "ms", true),
    ("http_req_connection_reused", "ratio", true),
    ("http_req_data_sent", "KB", true),
    ("http_req_data_received", "KB", true),
    ("http_req_chunks_sent", "count", true),
    ("http_req_chunks_received", "count", true),
    ("input_token_throughput", "tokens/sec", false),
    ("total_token_throughput", "tokens/sec", false),
    ("total_isl", "tokens", false),
    ("total_osl", "tokens", false),
    ("request_error_rate", "%", false),
    ("completed_request_count", "requests", false),
    ("osl_mismatch_count", "requests", false),
];

/// The phases that must add up, per JSONL record.
const PHASES: [&str; 6] = [
    "http_req_blocked",
    "http_req_dns_lookup",
    "http_req_connecting",
    "http_req_sending",
    "http_req_waiting",
    "http_req_receiving",
];

fn value(r: &Value, tag: &str) -> f64 {
    r["metrics"][tag]["value"]
        .as_f64()
        .unwrap_or_else(|| panic!("{tag} missing: {r}"))
}

fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b[14] == b'4'
        && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
        && s == s.to_ascii_lowercase()
}

fn streamed_run(extra: &[&str]) -> Output {
    let mut args = vec![
        "--url",
        "mock?ttft_ms=5&itl_ms=1",
        "--streaming",
        "--request-count",
        "12",
        "--concurrency",
        "3",
        "--isl",
        "32",
        "--osl",
        "8",
        "--random-seed",
        "3",
    ];
    args.extend_from_slice(extra);
    let run = Run::profile(&args).run();
    run.ok();
    run
}

/// The phases of each record add up: sending, waiting and receiving make the duration;
/// blocked, DNS and connecting the overhead; overhead and duration the total. A request pays
/// a connect exactly when its connection is new. Returns the records' reused flags.
fn check_phases(records: &[Value]) -> Vec<u64> {
    let near = |a: f64, b: f64| (a - b).abs() < 1e-6;
    let mut reused = Vec::new();
    for r in records {
        for tag in PHASES {
            assert!(value(r, tag) >= 0.0, "{tag}: {r}");
        }
        let duration = value(r, "http_req_duration");
        let overhead = value(r, "http_req_connection_overhead");
        assert!(
            near(
                value(r, "http_req_sending")
                    + value(r, "http_req_waiting")
                    + value(r, "http_req_receiving"),
                duration
            ),
            "{r}"
        );
        assert!(
            near(
                value(r, "http_req_blocked")
                    + value(r, "http_req_dns_lookup")
                    + value(r, "http_req_connecting"),
                overhead
            ),
            "{r}"
        );
        assert!(near(overhead + duration, value(r, "http_req_total")), "{r}");
        // The whole exchange fits in the request's own span.
        let md = &r["metadata"];
        let span = (md["request_end_ns"].as_u64().unwrap()
            - md["request_start_ns"].as_u64().unwrap()) as f64
            / 1e6;
        assert!(value(r, "http_req_total") <= span + 1e-6, "{r}");
        let flag = r["metrics"]["http_req_connection_reused"]["value"]
            .as_u64()
            .expect("an integer 0 or 1");
        assert!(flag <= 1);
        assert_eq!(
            value(r, "http_req_connecting") > 0.0,
            flag == 0,
            "connecting > 0 exactly when the connection is new: {r}"
        );
        assert!(
            r["metrics"]["http_req_chunks_received"]["value"].is_u64(),
            "{r}"
        );
        assert!(value(r, "http_req_data_sent") > 0.0 && value(r, "http_req_data_received") > 0.0);
        reused.push(flag);
    }
    reused
}

#[test]
fn aiperfs_metrics_in_the_json_csv_and_jsonl_of_a_streamed_run() {
    let _gate = support::shared();
    let run = streamed_run(&[]);
    let json = run.json();
    for (tag, unit, stats) in STREAMED {
        let m = &json[*tag];
        assert_eq!(m["unit"], *unit, "{tag}: {m}");
        assert!(m["avg"].is_f64(), "{tag}: {m}");
        assert_eq!(m.get("p99").is_some(), *stats, "{tag}: {m}");
        if *stats {
            assert_eq!(m["count"], 12, "{tag}: {m}");
        }
    }
    assert_eq!(json["completed_request_count"]["avg"], 12.0);
    assert_eq!(json["request_error_rate"]["avg"], 0.0);
    assert_eq!(json["total_isl"]["avg"], 12.0 * 32.0);
    let duration = json["benchmark_duration"]["avg"].as_f64().unwrap();
    let total_osl = json["total_osl"]["avg"].as_f64().unwrap();
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9 * b.max(1.0);
    assert!(close(
        json["input_token_throughput"]["avg"].as_f64().unwrap(),
        12.0 * 32.0 / duration
    ));
    assert!(close(
        json["total_token_throughput"]["avg"].as_f64().unwrap(),
        (12.0 * 32.0 + total_osl) / duration
    ));
    // Two connections' worth of reuse at least: 3 connections for 12 requests.
    assert!(json["http_req_connection_reused"]["avg"].as_f64().unwrap() >= 0.5);

    let records = run.jsonl();
    assert_eq!(records.len(), 12);
    let reused = check_phases(&records);
    assert!(reused.contains(&0) && reused.contains(&1), "{reused:?}");
    let mut ids = HashSet::new();
    for r in &records {
        let md = &r["metadata"];
        let (req, corr) = (
            md["x_request_id"].as_str().unwrap(),
            md["x_correlation_id"].as_str().unwrap(),
        );
        assert!(is_uuid_v4(req) && is_uuid_v4(corr), "{md}");
        assert!(ids.insert(req.to_string()), "unique request ids");
        assert_ne!(req, corr, "single-turn: a conversation id of its own");
        // OSL as requested by --osl: no mismatch.
        assert_eq!(value(r, "osl_mismatch_diff_pct"), 0.0, "{r}");
        let e2e = value(r, "output_sequence_length") / (value(r, "request_latency") / 1000.0);
        assert!((value(r, "e2e_output_token_throughput") - e2e).abs() < 1e-6);
        let decode = value(r, "request_latency") - value(r, "time_to_first_token");
        assert!((value(r, "decode_duration") - decode).abs() < 1e-6);
    }

    let csv = run.csv();
    for row in [
        "HTTP Waiting (TTFB) (ms),",
        "HTTP Duration (excl. conn) (ms),",
        "HTTP Connection Reused (ratio),",
        "HTTP Data Received (KB),",
        "HTTP Chunks Received,",
        "Decode Duration (ms),",
        "E2E Output Token Throughput (tokens/sec/user),",
        "OSL Mismatch Diff % (%),",
        "Completed Requests (Success + Error),12.00\n",
        "Request Error Rate (%),0.00\n",
        "Total Input Sequence Length (tokens),384.00\n",
        "OSL Mismatch Count,0.00\n",
        "Input Token Throughput (tokens/sec),",
    ] {
        assert!(csv.contains(row), "{row:?} missing from the CSV:\n{csv}");
    }
    // The statistics rows sorted by tag, as AIPerf writes them.
    let (stats, _) = csv.split_once("\n\n").unwrap();
    let labels: Vec<&str> = stats
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    let at = |label: &str| labels.iter().position(|l| *l == label).unwrap();
    assert!(at("Decode Duration (ms)") < at("E2E Output Token Throughput (tokens/sec/user)"));
    assert!(at("HTTP Total Time (ms)") < at("HTTP Waiting (TTFB) (ms)"));
    assert!(at("Time to First Output Token (ms)") < at("Time to First Token (ms)"));
}

#[test]
fn never_reuse_opens_a_connection_for_every_request() {
    let _gate = support::shared();
    let run = streamed_run(&["--connection-reuse-strategy", "never"]);
    let records = run.jsonl();
    assert_eq!(records.len(), 12);
    let reused = check_phases(&records);
    assert!(reused.iter().all(|&r| r == 0), "{reused:?}");
    let json = run.json();
    assert_eq!(json["http_req_connection_reused"]["avg"], 0.0);
    assert!(json["http_req_connecting"]["min"].as_f64().unwrap() > 0.0);
    assert_eq!(
        json["input_config"]["endpoint"]["connection_reuse_strategy"],
        "never"
    );
}

/// A chat server counting the connections it accepted.
fn counting_chat_server() -> (ScriptedServer, Arc<AtomicUsize>) {
    let connections = Arc::new(AtomicUsize::new(0));
    let c = connections.clone();
    let server = ScriptedServer::start(move |conn| {
        c.fetch_add(1, Ordering::SeqCst);
        while conn.request().is_some() {
            conn.json(&chat_completion("hello there world"))?;
        }
        Ok(())
    });
    (server, connections)
}

#[test]
fn the_ids_arrive_as_headers_and_match_the_jsonl() {
    let _gate = support::shared();
    let (server, _) = counting_chat_server();
    let run = Run::profile(&[
        "--url",
        &server.url(),
        "-m",
        "test-model",
        "--request-count",
        "5",
        "--session-header",
        "X-Session-ID",
    ])
    .run();
    run.ok();
    let sent: BTreeMap<String, String> = server
        .requests()
        .iter()
        .map(|r| {
            let ids = r.header_values("x-request-id");
            let sessions = r.header_values("x-session-id");
            assert_eq!((ids.len(), sessions.len()), (1, 1), "{r:?}");
            assert!(
                r.header_values("x-correlation-id").is_empty(),
                "renamed: {r:?}"
            );
            (ids[0].to_string(), sessions[0].to_string())
        })
        .collect();
    assert_eq!(sent.len(), 5, "one distinct X-Request-ID per request");
    let records = run.jsonl();
    assert_eq!(records.len(), 5);
    for r in &records {
        let md = &r["metadata"];
        let id = md["x_request_id"].as_str().unwrap();
        assert_eq!(
            sent.get(id).map(String::as_str),
            md["x_correlation_id"].as_str(),
            "the JSONL names the headers the server got: {md}"
        );
    }
    // The server's usage (5 prompt, 3 completion, 8 total per request) against the client's
    // counts: "hello there world" is 3 tokens.
    let json = run.json();
    assert_eq!(json["usage_prompt_tokens"]["avg"], 5.0);
    assert_eq!(json["usage_total_tokens"]["unit"], "tokens");
    assert_eq!(json["total_usage_prompt_tokens"]["avg"], 25.0);
    assert_eq!(json["total_usage_completion_tokens"]["avg"], 15.0);
    assert_eq!(json["total_usage_total_tokens"]["avg"], 40.0);
    assert_eq!(json["usage_completion_tokens_diff_pct"]["avg"], 0.0);
    let isl = json["input_sequence_length"]["avg"].as_f64().unwrap();
    let prompt_diff = (5.0 - isl).abs() / isl * 100.0;
    let got = json["usage_prompt_tokens_diff_pct"]["avg"]
        .as_f64()
        .unwrap();
    assert!((got - prompt_diff).abs() < 1e-9, "{got} vs {prompt_diff}");
    let discrepancies = if prompt_diff > 10.0 { 5.0 } else { 0.0 };
    assert_eq!(json["usage_discrepancy_count"]["avg"], discrepancies);
    let csv = run.csv();
    assert!(csv.contains("Usage Prompt Diff % (%),"), "{csv}");
    assert!(
        csv.contains("Total Usage Total Tokens (tokens),40.00\n"),
        "{csv}"
    );
    assert!(
        csv.contains(&format!("Usage Discrepancy Count,{discrepancies:.2}\n")),
        "{csv}"
    );
    // Not streamed: the JSONL has the usage counts, no HTTP phase is missing.
    check_phases(&records);
    assert_eq!(records[0]["metrics"]["usage_total_tokens"]["value"], 8);
}

fn multi_turn_run(strategy: &str) -> (Output, usize) {
    let (server, connections) = counting_chat_server();
    let tmp = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for s in ["a", "b", "c"] {
        let session = json!({"turns": [
            {"text": format!("session {s} one")},
            {"text": format!("session {s} two")},
            {"text": format!("session {s} three")},
        ]});
        text.push_str(&format!("{session}\n"));
    }
    let file = write_file(tmp.path(), "sessions.jsonl", &text);
    let run = Run::profile(&[
        "--url",
        &server.url(),
        "-m",
        "test-model",
        "--input-file",
        file.to_str().unwrap(),
        "--custom-dataset-type",
        "multi_turn",
        "--concurrency",
        "3",
        // Every conversation whole (AIPerf's default is 10 requests).
        "--conversation-num",
        "3",
        "--connection-reuse-strategy",
        strategy,
        // Connections are counted: no probe of the server's /metrics.
        "--no-server-metrics",
    ])
    .run();
    run.ok();
    drop(server);
    (run, connections.load(Ordering::SeqCst))
}

#[test]
fn sticky_sessions_keep_a_conversation_on_one_connection() {
    let _gate = support::shared();
    let (run, connections) = multi_turn_run("sticky-user-sessions");
    let records = run.jsonl();
    assert_eq!(records.len(), 9, "{}", run.show());
    check_phases(&records);
    // One correlation id per conversation, on each of its turns; later turns reuse the
    // conversation's connection.
    let mut by_corr: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for r in &records {
        let md = &r["metadata"];
        by_corr
            .entry(md["x_correlation_id"].as_str().unwrap().to_string())
            .or_default()
            .push((
                md["turn_index"].as_u64().unwrap(),
                r["metrics"]["http_req_connection_reused"]["value"]
                    .as_u64()
                    .unwrap(),
            ));
    }
    assert_eq!(by_corr.len(), 3, "{by_corr:?}");
    for turns in by_corr.values_mut() {
        turns.sort();
        assert_eq!(turns, &[(0, 0), (1, 1), (2, 1)]);
    }
    assert_eq!(connections, 3, "one connection per conversation");
    // `never`: a connection per request.
    let (run, connections) = multi_turn_run("never");
    assert_eq!(connections, 9, "{}", run.show());
    assert!(check_phases(&run.jsonl()).iter().all(|&r| r == 0));
}

#[test]
fn bad_reuse_strategies_and_session_headers_are_usage_errors() {
    let err = config_error(&["--url", "mock", "--connection-reuse-strategy", "sometimes"]);
    assert!(err.contains("sometimes"), "{err}");
    let err = config_error(&["--url", "mock", "--session-header", "bad header"]);
    assert!(err.contains("--session-header"), "{err}");
}
