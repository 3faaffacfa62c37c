//! AIPerf's flags and files that scripts rely on: its option names and aliases, its refusal
//! of options this tool does not support, `--profile-export-prefix`, `--export-level`,
//! `profile_export_console.txt`, `logs/aiperf.log`, `--log-level` and
//! `--fixed-schedule-auto-offset`.

use serde_json::Value;

use crate::support::{self, strings, Run};

const FAST_MOCK: &str = "mock?ttft_ms=1&itl_ms=0&tokens=3";

/// An AIPerf option that is not supported: exit 2, one line naming it and saying why, on
/// the command line (either spelling) and as a config-file key (with its line).
#[test]
fn unsupported_aiperf_options_are_refused_with_the_reason() {
    let _gate = support::shared();
    for (args, needle) in [
        (
            vec!["--url", FAST_MOCK, "--image-width-mean", "64"],
            "no audio, image or video",
        ),
        (
            vec![
                "--url",
                FAST_MOCK,
                "--convergence-metric=time_to_first_token",
            ],
            "do not stop early on convergence",
        ),
        (vec!["--url", FAST_MOCK, "--zmq-host", "x"], "one process"),
        (
            vec!["--url", FAST_MOCK, "--stats-interval", "1"],
            "issue 16",
        ),
    ] {
        let line = Run::profile(&args).run().assert_usage_error();
        let flag = args[2].split('=').next().unwrap();
        assert!(line.contains(flag) && line.contains(needle), "{line}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = support::write_file(
        tmp.path(),
        "c.yaml",
        &format!("benchmark:\n  url: \"{FAST_MOCK}\"\n  request_count: 2\n  stats_interval: 1\n"),
    );
    let line = Run::new(&["--config", &cfg.display().to_string()])
        .with_artifacts()
        .run()
        .assert_usage_error();
    assert!(
        line.contains("c.yaml:4:")
            && line.contains("`stats_interval`")
            && line.contains("issue 16"),
        "{line}"
    );
}

/// AIPerf's names for flags this tool has under other names work, in one run.
#[test]
fn aiperf_aliases_are_accepted() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        FAST_MOCK,
        "--streaming",
        "--prompt-input-tokens-mean",
        "24",
        "--prompt-output-tokens-mean",
        "3",
        "--num-warmup-requests",
        "1",
        "--num-requests",
        "3",
        "--prompt-batch-size",
        "1",
        "--extra-inputs",
        "temperature:0.5",
        "top_p:0.9",
    ])
    .run();
    run.ok();
    assert_eq!(run.stat("input_sequence_length", "avg"), 24.0);
    assert_eq!(run.stat("request_count", "avg"), 3.0);
    for p in run.payloads() {
        assert_eq!(p["temperature"], 0.5, "{p}");
        assert_eq!(p["top_p"], 0.9, "{p}");
    }
}

/// Every run writes the console summary to `profile_export_console.txt` and its log to
/// `logs/aiperf.log`; `--profile-export-prefix` renames the exported files as AIPerf does,
/// and `--export-level summary` leaves the JSONL out.
#[test]
fn console_text_log_file_prefix_and_export_level() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        FAST_MOCK,
        "--request-count",
        "3",
        "--log-level",
        "debug",
    ])
    .run();
    run.ok();
    let console = run.read("profile_export_console.txt");
    assert!(console.contains("Request Latency (ms)"), "{console}");
    for line in console.lines().filter(|l| l.contains("Request Latency")) {
        assert!(
            run.stdout.contains(line),
            "the file is what was printed: {line}"
        );
    }
    let log = run.read("logs/aiperf.log");
    assert!(
        log.contains("profiling phase starting")
            && log.contains("profiling phase complete: 3 sent"),
        "{log}"
    );
    assert!(
        log.contains("DEBUG"),
        "--log-level debug reaches the file:\n{log}"
    );

    let run = Run::profile(&[
        "--url",
        FAST_MOCK,
        "--request-count",
        "2",
        "--profile-export-prefix",
        "mine.json",
        "--export-level",
        "summary",
    ])
    .run();
    run.ok();
    let j: Value = serde_json::from_str(&run.read("mine.json")).unwrap();
    assert_eq!(j["request_count"]["avg"], 2.0);
    assert!(run.read("mine.csv").starts_with("Metric,"));
    assert!(run.read("mine_console.txt").contains("Request Count"));
    assert!(run.dir.join("inputs.json").exists());
    for absent in [
        "mine.jsonl",
        "profile_export.jsonl",
        "profile_export_aiperf.json",
    ] {
        assert!(
            !run.dir.join(absent).exists(),
            "{absent} written at --export-level summary"
        );
    }
}

/// A trace whose first timestamp is 300 ms: by default (AIPerf's) timestamps are offsets from
/// the start of the run, so the first request waits 300 ms; with
/// `--fixed-schedule-auto-offset` the first timestamp is time zero.
#[test]
fn fixed_schedule_auto_offset_moves_time_zero_to_the_first_timestamp() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let trace = support::write_file(
        tmp.path(),
        "t.jsonl",
        "{\"timestamp\": 300, \"input_length\": 10, \"output_length\": 2}\n{\"timestamp\": 350, \"input_length\": 10, \"output_length\": 2}\n",
    );
    let first_due_ms = |extra: &[&str]| -> f64 {
        let mut args = strings(&[
            "--url",
            FAST_MOCK,
            "--input-file",
            &trace.display().to_string(),
            "--custom-dataset-type",
            "mooncake_trace",
        ]);
        args.extend(strings(extra));
        let run = Run::profile(&args).run();
        run.ok();
        let j = run.json();
        let start = j["phase_stats"]["profiling"]["start_time_ns"]
            .as_u64()
            .unwrap();
        let first = run
            .jsonl()
            .iter()
            .map(|r| r["metadata"]["scheduled_ns"].as_u64().unwrap())
            .min()
            .unwrap();
        (first as f64 - start as f64) / 1e6
    };
    let absolute = first_due_ms(&[]);
    assert!(
        absolute >= 300.0,
        "first request due {absolute} ms into the phase"
    );
    let shifted = first_due_ms(&["--fixed-schedule-auto-offset"]);
    assert!(
        shifted < 250.0,
        "first request due {shifted} ms into the phase"
    );
    let line = Run::profile(&[
        "--url",
        FAST_MOCK,
        "--input-file",
        &trace.display().to_string(),
        "--fixed-schedule-auto-offset",
        "--fixed-schedule-start-offset",
        "10",
    ])
    .run()
    .assert_usage_error();
    assert!(line.contains("give one"), "{line}");
}

/// `--failed-request-threshold`: once more than that share of at least 10 finished requests
/// failed, sending stops, in-flight requests finish, the results are written and the run
/// exits 1 saying why; a healthy run is not stopped; a ratio outside 0..=1 is a usage error.
#[test]
fn failed_request_threshold_stops_a_failing_run() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        "mock?error_rate=60&ttft_ms=1&itl_ms=0&tokens=2",
        "--concurrency",
        "2",
        "--request-count",
        "400",
        "--failed-request-threshold",
        "0.3",
    ])
    .run();
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("more than --failed-request-threshold 0.3"),
        "{}",
        run.show()
    );
    let j = run.json();
    let sent = j["phase_stats"]["profiling"]["sent"].as_u64().unwrap();
    assert!((10..400).contains(&sent), "{sent} sent");
    assert_eq!(
        run.jsonl().len() as u64,
        sent,
        "every sent request has its record"
    );
    let ok = Run::profile(&[
        "--url",
        FAST_MOCK,
        "--request-count",
        "20",
        "--failed-request-threshold",
        "0",
    ])
    .run();
    ok.ok();
    assert_eq!(ok.stat("request_count", "avg"), 20.0);
    for bad in ["1.5", "NaN", "-0.1"] {
        let flag = format!("--failed-request-threshold={bad}");
        let line = Run::profile(&["--url", FAST_MOCK, &flag])
            .run()
            .assert_usage_error();
        assert!(line.contains("--failed-request-threshold"), "{line}");
    }
}

/// `--show-trace-timing` adds the HTTP timing metrics to the console table (they are in the
/// files either way).
#[test]
fn show_trace_timing_puts_http_phases_in_the_console() {
    let _gate = support::shared();
    let args = ["--url", FAST_MOCK, "--request-count", "3"];
    let plain = Run::profile(&args).run();
    plain.ok();
    assert!(!plain.stdout.contains("HTTP Waiting"), "{}", plain.stdout);
    assert!(plain.json()["http_req_waiting"]["avg"].is_number());
    let mut with: Vec<&str> = args.to_vec();
    with.push("--show-trace-timing");
    let traced = Run::profile(&with).run();
    traced.ok();
    for row in [
        "HTTP Waiting (TTFB) (ms)",
        "HTTP Sending (ms)",
        "HTTP Receiving (ms)",
    ] {
        assert!(
            traced.stdout.contains(row),
            "{row} missing:\n{}",
            traced.stdout
        );
    }
}

/// `--export-outputs-json`: `outputs.json` holds every profiling request (not the warmup's),
/// sorted by session_num, with the text the server generated (`null` for a failed one), its
/// request id as in the JSONL, and AIPerf's metrics allowlist.
#[test]
fn export_outputs_json_keeps_every_response_text() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        "mock?error_rate=30&ttft_ms=1&itl_ms=0",
        "--streaming",
        "--osl",
        "3",
        "--request-count",
        "8",
        "--warmup-request-count",
        "2",
        "--export-outputs-json",
    ])
    .run();
    let out: Value = serde_json::from_str(&run.read("outputs.json")).unwrap();
    let data = out["data"].as_array().unwrap();
    let records: Vec<Value> = run
        .jsonl()
        .into_iter()
        .filter(|r| r["metadata"]["benchmark_phase"] == "profiling")
        .collect();
    assert_eq!(data.len(), records.len());
    assert_eq!(data.len(), 8);
    let nums: Vec<u64> = data
        .iter()
        .map(|d| d["session_num"].as_u64().unwrap())
        .collect();
    let mut sorted = nums.clone();
    sorted.sort_unstable();
    assert_eq!(nums, sorted);
    for d in data {
        let rec = records
            .iter()
            .find(|r| r["metadata"]["x_request_id"] == d["x_request_id"])
            .unwrap_or_else(|| panic!("no JSONL record with {}", d["x_request_id"]));
        if rec["error"].is_null() {
            let text = d["response_text"].as_str().unwrap();
            assert!(!text.is_empty(), "{d}");
            assert_eq!(d["metrics"]["output_sequence_length"], 3, "{d}");
            assert!(d["metrics"]["time_to_first_token"].is_number(), "{d}");
        } else {
            assert!(d["response_text"].is_null(), "{d}");
        }
        assert_eq!(d["conversation_id"], rec["metadata"]["conversation_id"]);
    }
}

/// `inputs.json` as AIPerf writes it: synthetic conversations named `session_000000`, ...,
/// and as many of them as the run asks for (`--request-count`, else `--conversation-num`)
/// unless `--num-dataset-entries` says otherwise.
#[test]
fn inputs_json_session_ids_and_entry_count_as_aiperf() {
    let _gate = support::shared();
    let entries = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["--url", FAST_MOCK, "--isl", "8"];
        args.extend_from_slice(extra);
        let run = Run::profile(&args).run();
        run.ok();
        run.inputs()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["session_id"].as_str().unwrap().to_string())
            .collect()
    };
    let ids = entries(&["--request-count", "7"]);
    assert_eq!(ids.len(), 7);
    assert_eq!(ids[0], "session_000000");
    assert_eq!(ids[6], "session_000006");
    assert_eq!(
        entries(&["--request-count", "7", "--num-dataset-entries", "3"]).len(),
        3
    );
    assert_eq!(entries(&["--conversation-num", "4"]).len(), 4);
    assert_eq!(entries(&["--benchmark-duration", "0.05"]).len(), 100);
}
