//! `--goodput`: the requests meeting every objective, counted in the JSON, the CSV and the
//! console, and checked against the JSONL records.

use serde_json::Value;

use crate::support::{self, config_error, write_file, Output, Run};

const MOCK: &str = "mock?ttft_ms=20&itl_ms=5";

fn run(goodput: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "--url",
        MOCK,
        "--streaming",
        "--request-count",
        "50",
        "--concurrency",
        "8",
        "--random-seed",
        "1",
        "--goodput",
        goodput,
    ];
    args.extend_from_slice(extra);
    let run = Run::profile(&args).run();
    run.ok();
    run
}

fn avg(json: &Value, tag: &str) -> f64 {
    json[tag]["avg"]
        .as_f64()
        .unwrap_or_else(|| panic!("{tag} missing: {json}"))
}

/// The JSONL records whose metrics meet every (tag, threshold, larger is better).
fn good_in_jsonl(records: &[Value], slos: &[(&str, f64, bool)]) -> u64 {
    records
        .iter()
        .filter(|r| {
            slos.iter().all(
                |(tag, t, larger)| match r["metrics"][*tag]["value"].as_f64() {
                    Some(v) if *larger => v >= *t,
                    Some(v) => v <= *t,
                    None => false,
                },
            )
        })
        .count() as u64
}

fn check_consistent(run: &Output, slos: &[(&str, f64, bool)]) -> f64 {
    let json = run.json();
    let good = avg(&json, "good_request_count");
    let records = run.jsonl();
    assert_eq!(records.len(), 50);
    assert_eq!(good, good_in_jsonl(&records, slos) as f64, "{}", run.show());
    // Each record carries its own verdict, as AIPerf's JSONL does: 1 when good, else 0.
    for r in &records {
        let mine = good_in_jsonl(std::slice::from_ref(r), slos);
        assert_eq!(r["metrics"]["good_request_count"]["value"], mine, "{r}");
        assert_eq!(r["metrics"]["good_request_count"]["unit"], "requests");
    }
    let duration = avg(&json, "benchmark_duration");
    assert!((avg(&json, "goodput") - good / duration).abs() < 1e-9);
    assert_eq!(avg(&json, "good_request_fraction"), good / 50.0);
    assert_eq!(json["goodput"]["unit"], "requests/sec");
    assert_eq!(json["good_request_count"]["unit"], "requests");
    assert_eq!(json["good_request_fraction"]["unit"], "ratio");
    let csv = run.csv();
    for row in [
        "Good Request Count,",
        "Goodput (requests/sec),",
        "GoodRequestFraction (ratio),",
    ] {
        assert!(csv.contains(row), "{row} missing from the CSV:\n{csv}");
    }
    assert!(
        run.stdout.contains("Goodput (requests/sec)"),
        "{}",
        run.show()
    );
    good
}

#[test]
fn all_none_and_some_requests_good() {
    let _gate = support::shared();
    let all = run("time_to_first_token:1000", &[]);
    assert_eq!(
        check_consistent(&all, &[("time_to_first_token", 1000.0, false)]),
        50.0
    );
    assert_eq!(
        all.json()["input_config"]["input"]["goodput"],
        serde_json::json!({"time_to_first_token": 1000.0})
    );

    let none = run("request_latency:1", &[]);
    assert_eq!(
        check_consistent(&none, &[("request_latency", 1.0, false)]),
        0.0
    );

    // Output lengths spread around 16 tokens: "at least 16" (larger is better) splits them.
    let mixed = run(
        "time_to_first_token:1000 output_sequence_length:16",
        &["--osl", "16", "--osl-stddev", "6"],
    );
    let good = check_consistent(
        &mixed,
        &[
            ("time_to_first_token", 1000.0, false),
            ("output_sequence_length", 16.0, true),
        ],
    );
    assert!(
        0.0 < good && good < 50.0,
        "not a mix: {good}\n{}",
        mixed.show()
    );
}

#[test]
fn no_goodput_metrics_without_the_flag() {
    let _gate = support::shared();
    let run = Run::profile(&["--url", MOCK, "--streaming", "--request-count", "5"]).run();
    run.ok();
    let json = run.json();
    for tag in ["good_request_count", "goodput", "good_request_fraction"] {
        assert!(json.get(tag).is_none(), "{tag} without --goodput");
    }
    assert!(json["input_config"]["input"].get("goodput").is_none());
    assert!(!run.csv().contains("Goodput"));
}

#[test]
fn bad_objectives_are_usage_errors() {
    for (value, needle) in [
        ("ttft:200", "unknown metric `ttft`"),
        (
            "request_throughput:5",
            "`request_throughput` has no per-request value",
        ),
        (
            "request_latency:fast",
            "`fast` for `request_latency` is not a number",
        ),
        ("request_latency:NaN", "must be a finite number"),
        ("request_latency:inf", "must be a finite number"),
        ("request_latency:-5", "must be a finite number, 0 or more"),
    ] {
        let e = config_error(&["--url", MOCK, "--goodput", value]);
        assert!(
            e.contains("--goodput") && e.contains(needle),
            "{value}: {e}"
        );
    }
    // From the config file: the line is named.
    let tmp = tempfile::tempdir().unwrap();
    let file = write_file(
        tmp.path(),
        "bench.yaml",
        "benchmark:\n  url: mock\n  goodput: \"request_latency:abc\"\n",
    );
    let e = config_error(&["--config", file.to_str().unwrap()]);
    assert!(e.contains("bench.yaml:3:") && e.contains("`abc`"), "{e}");
    // End to end: exit 2, one line.
    let run = Run::profile(&["--url", MOCK, "--goodput", "bogus:1"]).run();
    assert!(run.assert_usage_error().contains("unknown metric `bogus`"));
}

#[test]
fn goodput_from_the_config_file() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let file = write_file(
        tmp.path(),
        "bench.yaml",
        &format!(
            "benchmark:\n  url: \"{MOCK}\"\n  streaming: true\n  request_count: 5\n  \
             goodput: \"time_to_first_token:1000 request_latency:60000\"\n"
        ),
    );
    let run = Run::new(&["--config", file.to_str().unwrap()])
        .with_artifacts()
        .run();
    run.ok();
    let json = run.json();
    assert_eq!(avg(&json, "good_request_count"), 5.0, "{}", run.show());
    assert_eq!(avg(&json, "good_request_fraction"), 1.0);
}
