//! The built-in mock's `GET /metrics`: vLLM's metric names, computed from what the mock
//! served. A run against `aiperf mock-server` is checked against the run's own artifacts
//! (request and token counts) and the mock's settings (TTFT, slots), while `/metrics` is
//! sampled during the run over a raw socket.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::{self, MockServer, Run};

/// `GET /metrics` → series (name with its labels, as written) → value.
fn scrape(server: &MockServer) -> BTreeMap<String, f64> {
    let mut s = TcpStream::connect(server.addr()).expect("connect to the mock");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        server.addr()
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read /metrics");
    let text = String::from_utf8(buf).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, v) = l.rsplit_once(' ').expect(l);
            let v = if v == "+Inf" {
                f64::INFINITY
            } else {
                v.parse().expect(l)
            };
            (series.to_string(), v)
        })
        .collect()
}

const LABELS: &str = "{model_name=\"mock-model\",engine=\"0\"}";

fn get(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    *m.get(&format!("{name}{LABELS}"))
        .unwrap_or_else(|| panic!("no {name} in {m:?}"))
}

/// N requests at concurrency C: the TTFT histogram counts N, its mean is the configured
/// TTFT (a generous bound above: the mock may be late, never early), generation tokens are
/// the tokens the run received, prompt tokens what the mock reported as usage, and the
/// running gauge sampled during the run never exceeds C and is C most of the time.
#[test]
fn metrics_count_what_the_mock_served() {
    let _gate = support::shared();
    let (n, c, osl) = (60u64, 4u64, 8u64);
    let server = MockServer::start(&["--ttft-ms", "30", "--itl-ms", "2"]);
    let url = server.url();
    let (n_s, c_s, osl_s) = (n.to_string(), c.to_string(), osl.to_string());
    let mut running = Vec::new();
    let run = Run::profile(&[
        "--url",
        &url,
        "-m",
        "m",
        "--streaming",
        "--request-count",
        &n_s,
        "--concurrency",
        &c_s,
        "--osl",
        &osl_s,
        "--isl",
        "64",
    ])
    .run_polling(|| running.push(get(&scrape(&server), "vllm:num_requests_running")));
    run.ok();
    let m = scrape(&server);
    let ttft_count = get(&m, "vllm:time_to_first_token_seconds_count");
    assert_eq!(ttft_count, n as f64);
    let mean = get(&m, "vllm:time_to_first_token_seconds_sum") / ttft_count;
    assert!((0.030..0.080).contains(&mean), "mean server TTFT {mean} s");
    assert_eq!(get(&m, "vllm:e2e_request_latency_seconds_count"), n as f64);
    assert_eq!(
        get(&m, "vllm:inter_token_latency_seconds_count"),
        (n * (osl - 1)) as f64
    );
    let generated = get(&m, "vllm:generation_tokens_total");
    assert_eq!(generated, (n * osl) as f64);
    assert_eq!(generated, run.stat("total_output_tokens", "avg"));
    let success =
        "vllm:request_success_total{model_name=\"mock-model\",engine=\"0\",finished_reason=\"length\"}";
    assert_eq!(m[success], n as f64);
    if let Some(prompt) = run.json().get("total_usage_prompt_tokens") {
        assert_eq!(
            get(&m, "vllm:prompt_tokens_total"),
            prompt["avg"].as_f64().unwrap(),
            "the prompt tokens the mock reported in usage"
        );
    }
    // Every +Inf bucket is its histogram's count.
    let inf =
        "vllm:time_to_first_token_seconds_bucket{model_name=\"mock-model\",engine=\"0\",le=\"+Inf\"}";
    assert_eq!(m[inf], ttft_count);
    // After the run: nothing running, nothing held.
    assert_eq!(get(&m, "vllm:num_requests_running"), 0.0);
    assert_eq!(get(&m, "vllm:num_requests_waiting"), 0.0);
    assert_eq!(get(&m, "vllm:kv_cache_usage_perc"), 0.0);
    // During it: never more than C, and C for most samples taken while requests ran.
    let busy: Vec<f64> = running.iter().copied().filter(|&r| r > 0.0).collect();
    assert!(
        busy.len() >= 5,
        "too few samples while running: {running:?}"
    );
    assert!(busy.iter().all(|&r| r <= c as f64), "{busy:?}");
    let avg = busy.iter().sum::<f64>() / busy.len() as f64;
    assert!(
        avg >= 0.75 * c as f64,
        "running averaged {avg} at concurrency {c}: {busy:?}"
    );
}

/// With fewer slots than requests in flight, requests wait: the waiting gauge is non-zero
/// during the run, the running one never exceeds the slots, and the TTFT the client and the
/// server see includes the wait (at least two service times for 6 requests on 2 slots).
#[test]
fn max_num_seqs_makes_requests_wait() {
    let _gate = support::shared();
    let server = MockServer::start(&["--ttft-ms", "20", "--itl-ms", "2", "--max-num-seqs", "2"]);
    let url = server.url();
    let mut samples = Vec::new();
    let run = Run::profile(&[
        "--url",
        &url,
        "-m",
        "m",
        "--streaming",
        "--request-count",
        "36",
        "--concurrency",
        "6",
        "--osl",
        "6",
    ])
    .run_polling(|| {
        let m = scrape(&server);
        samples.push((
            get(&m, "vllm:num_requests_running"),
            get(&m, "vllm:num_requests_waiting"),
        ));
    });
    run.ok();
    assert!(
        samples.iter().all(|&(r, w)| r <= 2.0 && w <= 4.0),
        "{samples:?}"
    );
    assert!(
        samples.iter().any(|&(_, w)| w > 0.0),
        "never waiting: {samples:?}"
    );
    // A request is served in 20 + 5·2 = 30 ms; with 6 on 2 slots most wait for two others.
    let p50 = run.stat("time_to_first_token", "p50");
    assert!(p50 >= 40.0, "client TTFT p50 {p50} ms without the wait");
    let m = scrape(&server);
    let mean = get(&m, "vllm:time_to_first_token_seconds_sum")
        / get(&m, "vllm:time_to_first_token_seconds_count");
    assert!(mean >= 0.040, "server TTFT mean {mean} s without the wait");
    assert_eq!(get(&m, "vllm:num_requests_waiting"), 0.0);
}

/// Shared-prefix prompts hit the prefix-cache model; distinct prompts hardly do.
#[test]
fn shared_prefixes_hit_the_prefix_cache() {
    let _gate = support::shared();
    let hit_rate = |extra: &[&str]| {
        let server = MockServer::start(&["--ttft-ms", "0", "--itl-ms", "0"]);
        let url = server.url();
        let mut args = vec![
            "--url",
            &url,
            "-m",
            "m",
            "--request-count",
            "20",
            "--osl",
            "1",
            "--isl",
            "50",
        ];
        args.extend_from_slice(extra);
        Run::profile(&args).run().ok();
        let m = scrape(&server);
        let q = get(&m, "vllm:prefix_cache_queries_total");
        assert!(q > 0.0);
        get(&m, "vllm:prefix_cache_hits_total") / q
    };
    let shared = hit_rate(&["--num-prefix-prompts", "1", "--prefix-prompt-length", "400"]);
    let distinct = hit_rate(&[]);
    assert!(shared > 0.5, "shared prefix hit rate {shared}");
    assert!(
        distinct < shared / 2.0,
        "distinct {distinct} vs shared {shared}"
    );
}
