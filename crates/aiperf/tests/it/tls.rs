//! `https://` through the lean client: TLS records timed by the kernel's stamps of the
//! ciphertext reads, streams read event by event, keep-alive, an HTTP/2-only server served
//! by hyper, and what a broken TLS peer (not TLS at all, an alert, garbage or a reset in the
//! middle of a stream) turns into: one clear error per request, and the run goes on.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::support::{self, MockServer, Output, Run};

/// A streamed run of `count` requests at `concurrency` against `url`, 8 tokens each.
fn stream_run(url: &str, count: &str, concurrency: &str) -> Output {
    let args = vec![
        "--url",
        url,
        "-m",
        "m",
        "--streaming",
        "--osl",
        "8",
        "--isl",
        "16",
        "--concurrency",
        concurrency,
        "--request-count",
        count,
        "--ssl-insecure",
        "--no-server-metrics",
        "--no-gpu-telemetry",
    ];
    Run::profile(&args).run()
}

fn metric(r: &Value, tag: &str) -> Value {
    r["metrics"][tag]["value"].clone()
}

/// Every record of a streamed run over TLS: all 8 token events read one by one (7
/// inter-chunk latencies), the kernel's clock on the response, the request's start by the
/// kernel's transmit stamp on a reused connection, the HTTP phases, and the handshake on
/// the requests that opened a connection, which are only the first ones (keep-alive).
#[test]
fn streams_over_https_are_read_event_by_event_on_the_kernels_clock() {
    let _gate = support::shared();
    let mock = MockServer::start(&["--tls-self-signed", "--ttft-ms", "5", "--itl-ms", "2"]);
    assert!(mock.url().starts_with("https://"));
    let run = stream_run(&mock.url(), "20", "2");
    run.ok();
    assert!(run.errors().is_empty(), "{:?}", run.errors());
    let records = run.jsonl();
    assert_eq!(records.len(), 20, "{}", run.show());
    let mut opened = 0;
    for r in &records {
        let md = &r["metadata"];
        assert!(r["error"].is_null(), "{r}");
        assert_eq!(metric(r, "output_sequence_length"), 8, "{r}");
        assert_eq!(
            metric(r, "inter_chunk_latency").as_array().map(Vec::len),
            Some(7),
            "{r}"
        );
        assert_eq!(md["response_clock"], "kernel", "{r}");
        assert!(md["read_lag_ms"].as_f64().is_some_and(|v| v >= 0.0), "{r}");
        let reused = metric(r, "http_req_connection_reused") == 1;
        assert_eq!(
            md["request_clock"],
            if reused { "kernel" } else { "client" },
            "{r}"
        );
        assert_eq!(md["tls_handshake_ms"].is_null(), reused, "{r}");
        if !reused {
            opened += 1;
            let h = md["tls_handshake_ms"].as_f64().unwrap();
            assert!(h > 0.0 && h <= metric(r, "http_req_connecting").as_f64().unwrap());
        }
        // HTTP bytes, not TLS records: the response is more than its head.
        assert!(
            metric(r, "http_req_data_received").as_f64().unwrap() > 0.1,
            "{r}"
        );
        assert!(metric(r, "http_req_chunks_received").as_u64().unwrap() >= 1);
    }
    assert!(
        (1..=2).contains(&opened),
        "two workers, each keeps its connection: {opened} opened"
    );
}

/// A server that offers HTTP/2 only refuses the lean client's `http/1.1` handshake; the
/// URL's requests then go through hyper, over HTTP/2, all of them successful, said once on
/// stderr. (hyper exposes no phases or kernel times: those records say `client`.)
#[test]
fn an_http2_only_server_is_served_over_http2() {
    let _gate = support::shared();
    let mock = MockServer::start(&["--tls-self-signed", "--tls-alpn", "h2", "--ttft-ms", "2"]);
    let run = stream_run(&mock.url(), "6", "2");
    run.ok();
    assert!(run.errors().is_empty(), "{:?}", run.errors());
    let records = run.jsonl();
    assert_eq!(records.len(), 6, "{}", run.show());
    for r in &records {
        assert_eq!(metric(r, "output_sequence_length"), 8, "{r}");
        assert_eq!(r["metadata"]["response_clock"], "client", "{r}");
        assert!(r["metrics"].get("http_req_duration").is_none(), "{r}");
    }
    let notes = run
        .stderr
        .lines()
        .filter(|l| l.contains("accepts HTTP/2 only"))
        .count();
    assert_eq!(notes, 1, "{}", run.stderr);
}

/// A server whose every connection is handled by `script` (its own thread), on a port of
/// its own; it stops accepting when dropped.
struct RawServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl RawServer {
    fn start(script: impl Fn(TcpStream) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let script = Arc::new(script);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::Acquire) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                let script = script.clone();
                std::thread::spawn(move || script(stream));
            }
        });
        Self { addr, stop }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Reads the client's first bytes (its ClientHello).
fn read_hello(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    matches!(s.read(&mut buf), Ok(n) if n > 0)
}

/// A rustls server configuration with a self-signed certificate.
fn server_config() -> Arc<rustls::ServerConfig> {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap(),
    )
}

/// `(type, message, count)` of the run's one kind of error.
fn only_error(run: &Output) -> (String, String, u64) {
    let errors = run.errors();
    assert_eq!(errors.len(), 1, "one kind of error expected: {errors:?}");
    let (_, kind, message, count) = errors[0].clone();
    (kind, message, count)
}

/// A plain-HTTP server behind an https:// URL, and a server that answers the ClientHello
/// with a fatal alert: each request is a `ConnectionError` that says what happened.
#[test]
fn a_server_that_is_not_tls_or_refuses_the_handshake_is_a_clear_connection_error() {
    let _gate = support::shared();
    let plain = RawServer::start(|mut s| {
        if read_hello(&mut s) {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        }
    });
    // handshake_failure (40), fatal, in a TLS 1.2 plaintext alert record.
    let alert = RawServer::start(|mut s| {
        if read_hello(&mut s) {
            let _ = s.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]);
        }
    });
    for (server, needle) in [
        (&plain, "did not answer in TLS"),
        (&alert, "the server sent the TLS alert HandshakeFailure"),
    ] {
        let run = Run::profile(&[
            "--url",
            &server.url(),
            "-m",
            "m",
            "--request-count",
            "3",
            "--ssl-insecure",
            "--no-server-metrics",
        ])
        .run();
        run.expect_code(1);
        let (kind, message, count) = only_error(&run);
        assert_eq!((kind.as_str(), count), ("ConnectionError", 3), "{message}");
        assert!(
            message.starts_with(&format!("TLS handshake with {} failed: ", server.addr)),
            "{message}"
        );
        assert!(message.contains(needle), "{message}");
    }
}

/// In the middle of a stream: bytes that are no TLS record, or a reset (the mock's
/// `--fault reset` over TLS, every second request). Each such request is a truncated stream
/// whose message names the cause; the others succeed.
#[test]
fn garbage_or_a_reset_in_the_middle_of_a_tls_stream_cuts_that_request_only() {
    let _gate = support::shared();
    let config = server_config();
    let garbage = RawServer::start(move |s| {
        let conn = rustls::ServerConnection::new(config.clone()).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, s);
        let mut buf = [0u8; 4096];
        if !matches!(tls.read(&mut buf), Ok(n) if n > 0) {
            return;
        }
        let event = r#"{"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}"#;
        let _ = write!(
            tls,
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n\
             data: {event}\n\n"
        );
        let _ = tls.flush();
        std::thread::sleep(Duration::from_millis(20));
        let _ = tls.sock.write_all(b"this is not a TLS record\r\n\r\n");
        std::thread::sleep(Duration::from_millis(200));
    });
    let run = stream_run(&garbage.url(), "3", "1");
    run.expect_code(1);
    let (kind, message, count) = only_error(&run);
    assert_eq!((kind.as_str(), count), ("StreamTruncated", 3), "{message}");
    assert!(
        message.contains("the server sent bytes that are not a TLS record"),
        "{message}"
    );

    let mock = MockServer::start(&[
        "--tls-self-signed",
        "--ttft-ms",
        "2",
        "--itl-ms",
        "1",
        "--fault",
        "reset",
        "--fault-every",
        "2",
        "--fault-tokens",
        "3",
    ]);
    let run = stream_run(&mock.url(), "10", "1");
    run.ok();
    let (kind, message, count) = only_error(&run);
    assert_eq!((kind.as_str(), count), ("StreamTruncated", 5), "{message}");
    assert!(message.contains("reset"), "{message}");
    assert_eq!(run.stat("request_count", "avg"), 5.0);
}

/// `--connection-reuse-strategy never` over https: every request does its own handshake;
/// `--no-kernel-timestamps`: the client's clock; a prompt of many TLS records (a 20,000-token
/// request is sealed into several 16 KiB records and written at once) goes out whole.
#[test]
fn a_handshake_per_request_the_client_clock_and_large_prompts_over_https() {
    let _gate = support::shared();
    let mock = MockServer::start(&["--tls-self-signed", "--ttft-ms", "2", "--itl-ms", "1"]);
    let run = Run::profile(&[
        "--url",
        &mock.url(),
        "-m",
        "m",
        "--streaming",
        "--osl",
        "4",
        "--isl",
        "20000",
        "--concurrency",
        "2",
        "--request-count",
        "4",
        "--ssl-insecure",
        "--connection-reuse-strategy",
        "never",
        "--no-kernel-timestamps",
        "--no-server-metrics",
        "--no-gpu-telemetry",
    ])
    .run();
    run.ok();
    assert!(run.errors().is_empty(), "{:?}", run.errors());
    let records = run.jsonl();
    assert_eq!(records.len(), 4, "{}", run.show());
    for r in &records {
        let md = &r["metadata"];
        assert_eq!(metric(r, "output_sequence_length"), 4, "{r}");
        assert_eq!(metric(r, "http_req_connection_reused"), 0, "{r}");
        assert!(
            md["tls_handshake_ms"].as_f64().is_some_and(|h| h > 0.0),
            "{r}"
        );
        assert_eq!(md["response_clock"], "client", "{r}");
        assert!(md["read_lag_ms"].is_null(), "{r}");
        let sent_kb = metric(r, "http_req_data_sent").as_f64().unwrap();
        assert!(
            sent_kb > 64.0,
            "a prompt of several TLS records: {sent_kb} KB"
        );
    }
}

/// The mock over TLS still logs each request's arrival (`--log-arrivals`, the kernel's stamp
/// of the ciphertext read that completed it): one Unix-ns line per request, each inside the
/// run's own wall-clock span.
#[test]
fn the_mock_over_tls_logs_every_arrival() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = tmp.path().join("arrivals.txt");
    let log_s = log.display().to_string();
    let mock = MockServer::start(&[
        "--tls-self-signed",
        "--ttft-ms",
        "2",
        "--log-arrivals",
        &log_s,
    ]);
    let run = stream_run(&mock.url(), "6", "2");
    run.ok();
    mock.stop();
    let text = std::fs::read_to_string(&log).expect("arrival log");
    let arrivals: Vec<u64> = text.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(arrivals.len(), 6, "{text}");
    let records = run.jsonl();
    let first = records
        .iter()
        .map(|r| r["metadata"]["request_start_ns"].as_u64().unwrap())
        .min()
        .unwrap();
    let last = records
        .iter()
        .map(|r| r["metadata"]["request_end_ns"].as_u64().unwrap())
        .max()
        .unwrap();
    // A second of slack either side: the two processes' wall clocks, not a latency bound.
    for a in &arrivals {
        assert!(
            first - 1_000_000_000 <= *a && *a <= last + 1_000_000_000,
            "{a} outside {first}..{last}"
        );
    }
}
