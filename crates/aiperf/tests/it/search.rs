//! The mock's load model (TTFT and ITL growing with the requests in flight) and the SLO
//! search (`--search-recipe`) that finds where it breaks.
//!
//! Load model: in a closed loop at concurrency `c`, every request after the first wave
//! arrives to find `c` requests in flight at the mock (itself included), so its TTFT is
//! `ttft_ms + ttft_per_inflight_ms · c` (see `mock/config.rs`).

use crate::support::{self, MockServer, Output, Run};

/// TTFT p50 at concurrency `c` on a mock with TTFT = 20 + 2·n ms, over `8·c` requests of 4
/// tokens (so at least 7/8 of them see `n = c`).
fn loaded_ttft(url: &str, c: u32, extra: &[&str]) -> (Output, f64) {
    let c_s = c.to_string();
    let count = (8 * c).to_string();
    let mut args = vec![
        "--url",
        url,
        "--streaming",
        "--concurrency",
        &c_s,
        "--request-count",
        &count,
        "--osl",
        "4",
    ];
    args.extend(extra);
    let run = Run::profile(&args).run();
    run.ok();
    assert_eq!(
        run.stat("error_request_count", "avg"),
        0.0,
        "{}",
        run.show()
    );
    let ttft = run.stat("time_to_first_token", "p50");
    (run, ttft)
}

/// The measured TTFT at two concurrencies follows `ttft_ms + k·c`, in process (`mock?…`)
/// and in `aiperf mock-server` (`--ttft-per-inflight-ms`). Loose bounds: the client adds a
/// little (parsing, scheduling); each check gets a second run before it fails, since the
/// mock shares the machine's cores with the client.
#[test]
fn the_mock_ttft_grows_with_the_requests_in_flight() {
    let _gate = support::exclusive();
    let server = MockServer::start(&[
        "--ttft-ms",
        "20",
        "--ttft-per-inflight-ms",
        "2",
        "--itl-ms",
        "1",
    ]);
    let server_url = server.url();
    let inproc = "mock?ttft_ms=20&ttft_per_inflight_ms=2&itl_ms=1";
    for (url, extra) in [
        (inproc, vec![]),
        (server_url.as_str(), vec!["-m", "mock-model"]),
    ] {
        for c in [4u32, 24] {
            let expected = 20.0 + 2.0 * f64::from(c);
            let mut seen = Vec::new();
            for _ in 0..2 {
                let (_, ttft) = loaded_ttft(url, c, &extra);
                if (expected - 0.5..=expected + 3.0).contains(&ttft) {
                    break;
                }
                seen.push(ttft);
            }
            assert!(
                seen.len() < 2,
                "{url} at concurrency {c}: expected TTFT p50 {expected} ms (-0.5/+3), got {seen:?}"
            );
        }
    }
}
