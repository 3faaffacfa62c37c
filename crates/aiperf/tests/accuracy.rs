//! Reported metrics against the mock's known timing (TTFT 20 ms, 5 ms between tokens).
//!
//! Both runs live in one test so nothing else in this binary competes for the CPU while the
//! latencies are measured.

mod common;

use common::{profile, MockServerProcess, Profile};

const ARGS: [&str; 7] = [
    "--streaming",
    "--concurrency",
    "8",
    "--request-count",
    "200",
    "--osl",
    "16",
];

fn check_accuracy(run: &Profile, what: &str) {
    run.ok();
    let ttft = run.stat("time_to_first_token", "p50");
    assert!(
        (ttft - 20.0).abs() <= 1.0,
        "{what}: time_to_first_token p50 = {ttft} ms, expected 20 ± 1"
    );
    let itl = run.stat("inter_token_latency", "p50");
    assert!(
        (itl - 5.0).abs() <= 0.2,
        "{what}: inter_token_latency p50 = {itl} ms, expected 5 ± 0.2"
    );
    assert_eq!(run.stat("output_sequence_length", "avg"), 16.0, "{what}");
    assert_eq!(run.stat("request_count", "avg"), 200.0, "{what}");
    assert_eq!(run.stat("error_request_count", "avg"), 0.0, "{what}");
    assert!(
        run.errors().is_empty(),
        "{what}: unexpected errors {:?}",
        run.errors()
    );
}

#[test]
fn metrics_match_the_mock_timing_in_process_and_as_a_separate_process() {
    let mut args = vec!["--url", "mock?ttft_ms=20&itl_ms=5"];
    args.extend(ARGS);
    let run = profile(&args);
    check_accuracy(&run, "built-in mock (--url mock?...)");

    let server = MockServerProcess::start(&["--ttft-ms", "20", "--itl-ms", "5"]);
    let url = server.url();
    let mut args = vec!["--url", url.as_str(), "-m", "mock-model"];
    args.extend(ARGS);
    let run = profile(&args);
    check_accuracy(&run, "aiperf mock-server process");
}
