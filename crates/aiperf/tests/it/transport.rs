//! The transport end to end: a request sent at most once, the client's own limits told apart
//! from the server's, responses without content, and TLS trust (`--ssl-ca-file`,
//! `--ssl-insecure`, the system store).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{
    self, bin, chat_completion, config_error, write_file, MockServer, Output, Run, ScriptedServer,
    CHAT_REPLY,
};

/// `error_summary` as `(type, message, count)`, for one expected entry.
fn only_error(run: &Output) -> (String, String, u64) {
    let errors = run.errors();
    assert_eq!(errors.len(), 1, "one kind of error expected: {errors:?}");
    let (code, kind, message, count) = errors[0].clone();
    assert_eq!(code, None, "{errors:?}");
    (kind, message, count)
}

/// Each connection: the first request is answered; a second one on the kept-alive
/// connection is read, held 0.5 s without an answer, then the connection is closed (or
/// reset). The old client sent that second request again on a new connection, so the server
/// got more requests than were sent and the run showed no error.
fn answer_once_then_hold_and_drop(reset: bool) -> ScriptedServer {
    ScriptedServer::start(move |conn| {
        if conn.request().is_none() {
            return Ok(());
        }
        conn.json(&chat_completion(CHAT_REPLY))?;
        if conn.request().is_some() {
            std::thread::sleep(Duration::from_millis(500));
            if reset {
                conn.reset();
            }
        }
        Ok(())
    })
}

#[test]
fn a_request_the_server_may_have_received_is_never_sent_twice() {
    let _gate = support::shared();
    for reset in [false, true] {
        let server = answer_once_then_hold_and_drop(reset);
        let run = Run::profile(&[
            "--url",
            &server.url(),
            "-m",
            "m",
            "--request-count",
            "6",
            "--concurrency",
            "1",
        ])
        .run();
        run.ok();
        assert_eq!(
            server.request_count(),
            6,
            "reset={reset}: exactly one request received per request sent"
        );
        let (kind, message, count) = only_error(&run);
        assert_eq!(kind, "ConnectionClosedBeforeResponse", "reset={reset}");
        assert_eq!(count, 3, "every second request failed: reset={reset}");
        assert!(message.contains("not sent again"), "{message}");
        let word = if reset { "reset" } else { "closed" };
        assert!(message.contains(word), "{message}");
        assert_eq!(run.stat("request_count", "avg"), 3.0);
    }
}

/// A server that closes each connection right after its answer: the close is seen at the
/// next checkout (the client is idle 100 ms in between: a constant rate, as a Poisson gap
/// can be shorter than the server's close and make the reuse race it), so every request
/// goes out once, on a new connection, and succeeds.
#[test]
fn connections_closed_while_idle_are_replaced_before_sending() {
    let _gate = support::shared();
    let server = ScriptedServer::start(|conn| {
        if conn.request().is_some() {
            conn.json(&chat_completion(CHAT_REPLY))?;
        }
        Ok(())
    });
    let run = Run::profile(&[
        "--url",
        &server.url(),
        "-m",
        "m",
        "--request-count",
        "6",
        "--request-rate",
        "10",
        "--request-rate-mode",
        "constant",
        "--concurrency",
        "1",
    ])
    .run();
    run.ok();
    assert!(run.errors().is_empty(), "{:?}", run.errors());
    assert_eq!(run.stat("request_count", "avg"), 6.0);
    assert_eq!(server.request_count(), 6);
}

/// Out of file descriptors on the client (64 of them, 200 concurrent connections): the
/// connect failures are `ClientResourceError`, saying it is the client's limit and what to
/// do, not a `ConnectionError` that blames the server.
#[test]
fn running_out_of_file_descriptors_is_a_client_resource_error() {
    let _gate = support::shared();
    // A separate process: the limit applies to the client only.
    let mock = MockServer::start(&[]);
    let run = Run::new(&[
        "-c",
        r#"ulimit -n 64 && exec "$0" "$@""#,
        bin(),
        "profile",
        "--url",
        &mock.url(),
        "-m",
        "m",
        "--concurrency",
        "200",
        "--request-count",
        "400",
    ])
    .program(Path::new("/bin/sh"))
    .with_artifacts()
    .run();
    let errors = run.errors();
    assert!(!errors.is_empty(), "some connects must fail at 64 fds");
    for (code, kind, message, _) in &errors {
        assert_eq!(*code, None, "{errors:?}");
        assert_eq!(kind, "ClientResourceError", "{errors:?}");
        assert!(message.starts_with("client limit: "), "{message}");
        assert!(message.contains("ulimit -n"), "{message}");
        assert!(message.contains("--concurrency"), "{message}");
    }
    let failed: u64 = errors.iter().map(|e| e.3).sum();
    assert_eq!(
        failed as f64 + run.stat("request_count", "avg"),
        400.0,
        "every request is a success or a client resource error"
    );
}

#[test]
fn a_stream_without_content_is_an_empty_response() {
    let _gate = support::shared();
    let server = ScriptedServer::start(|conn| {
        if conn.request().is_some() {
            conn.sse()?;
            conn.event(r#"{"id":"x","object":"chat.completion.chunk","choices":[]}"#)?;
            conn.event(
                r#"{"id":"x","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":0}}"#,
            )?;
            conn.event("[DONE]")?;
        }
        Ok(())
    });
    let run = Run::profile(&[
        "--url",
        &server.url(),
        "-m",
        "m",
        "--streaming",
        "--request-count",
        "2",
    ])
    .run();
    run.expect_code(1);
    let (kind, message, count) = only_error(&run);
    assert_eq!((kind.as_str(), count), ("EmptyResponse", 2));
    assert!(
        message.starts_with("the server sent no content"),
        "{message}"
    );
}

// ---------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------

/// An HTTPS server on 127.0.0.1 with a self-signed certificate (made here with rcgen for
/// `127.0.0.1` and `localhost`), answering every request with a chat completion.
struct TlsServer {
    addr: SocketAddr,
    /// The certificate, PEM.
    cert_pem: String,
    /// Requests answered.
    answered: Arc<AtomicUsize>,
    /// Each request's head, lower-cased.
    heads: Arc<Mutex<Vec<String>>>,
    /// The connection (numbered from 0 in accept order) of each request in `heads`.
    conns: Arc<Mutex<Vec<usize>>>,
    stop: Arc<AtomicBool>,
}

impl TlsServer {
    fn start() -> Self {
        let cert = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
        ])
        .expect("self-signed certificate");
        let cert_pem = cert.cert.pem();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .expect("server certificate");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let answered = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s, h, c) = (answered.clone(), stop.clone(), heads.clone(), conns.clone());
        std::thread::spawn(move || {
            for (i, stream) in listener.incoming().enumerate() {
                if s.load(Ordering::Acquire) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (config, a, h, c) = (config.clone(), a.clone(), h.clone(), c.clone());
                std::thread::spawn(move || {
                    let _ = serve_tls(stream, config, &a, &h, &c, i);
                });
            }
        });
        Self {
            addr,
            cert_pem,
            answered,
            heads,
            conns,
            stop,
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// One connection: TLS, then requests (head + Content-Length body) answered until EOF.
fn serve_tls(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    answered: &AtomicUsize,
    heads: &Mutex<Vec<String>>,
    conns: &Mutex<Vec<usize>>,
    conn_index: usize,
) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = tls.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        {
            // Together: a request's head and its connection share an index.
            let mut heads = heads.lock().expect("heads");
            heads.push(head.clone());
            conns.lock().expect("conns").push(conn_index);
        }
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            let n = tls.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..head_end + len);
        let body = chat_completion(CHAT_REPLY).to_string();
        write!(
            tls,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )?;
        tls.flush()?;
        answered.fetch_add(1, Ordering::SeqCst);
    }
}

fn tls_run(server: &TlsServer, extra: &[&str]) -> Run {
    let url = server.url();
    let mut args = vec!["--url", &url, "-m", "m", "--request-count", "2"];
    args.extend_from_slice(extra);
    Run::profile(&args)
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
}

#[test]
fn a_self_signed_server_is_refused_with_a_message_that_says_what_to_do() {
    let _gate = support::shared();
    let server = TlsServer::start();
    let run = tls_run(&server, &[]).run();
    run.expect_code(1);
    let (kind, message, count) = only_error(&run);
    assert_eq!((kind.as_str(), count), ("CertificateError", 2), "{message}");
    assert_eq!(
        message,
        "certificate not trusted (UnknownIssuer): pass --ssl-ca-file with the server's CA, \
         or --ssl-insecure to skip verification"
    );
    assert_eq!(server.answered.load(Ordering::SeqCst), 0);
}

#[test]
fn ssl_ca_file_trusts_the_servers_certificate() {
    let _gate = support::shared();
    let server = TlsServer::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = write_file(tmp.path(), "ca.pem", &server.cert_pem);
    let ca = ca.display().to_string();
    let run = tls_run(&server, &["--ssl-ca-file", &ca]).run();
    run.ok();
    assert!(run.errors().is_empty(), "{:?}", run.errors());
    assert_eq!(run.stat("request_count", "avg"), 2.0);
    assert_eq!(server.answered.load(Ordering::SeqCst), 2);
    let endpoint = &run.json()["input_config"]["endpoint"];
    assert_eq!(endpoint["ssl_ca_files"][0], ca.as_str(), "{endpoint}");
    assert_eq!(endpoint["ssl_insecure"], false, "{endpoint}");
    assert!(
        !run.stderr.contains("--ssl-insecure"),
        "no warning without --ssl-insecure: {}",
        run.stderr
    );

    // The system trust store: SSL_CERT_FILE is honoured.
    let run = Run::profile(&["--url", &server.url(), "-m", "m", "--request-count", "1"])
        .env("SSL_CERT_FILE", &ca)
        .env_remove("SSL_CERT_DIR")
        .run();
    run.ok();
    assert!(run.errors().is_empty(), "{:?}", run.errors());
}

#[test]
fn ssl_insecure_skips_verification_with_a_warning() {
    let _gate = support::shared();
    let server = TlsServer::start();
    let run = tls_run(&server, &["--ssl-insecure"]).run();
    run.ok();
    assert!(run.errors().is_empty(), "{:?}", run.errors());
    assert_eq!(run.stat("request_count", "avg"), 2.0);
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning: --ssl-insecure"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning line: {}", run.stderr);
    assert!(warnings[0].contains("NOT verified"), "{}", warnings[0]);
    assert_eq!(
        run.json()["input_config"]["endpoint"]["ssl_insecure"],
        true,
        "recorded in the report"
    );
}

#[test]
fn a_missing_or_invalid_ca_file_is_a_usage_error() {
    let _gate = support::shared();
    let line = config_error(&[
        "--url",
        "https://127.0.0.1:9",
        "-m",
        "m",
        "--ssl-ca-file",
        "/nonexistent/ca.pem",
    ]);
    assert!(
        line.starts_with("--ssl-ca-file cannot read /nonexistent/ca.pem"),
        "{line}"
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let bad = write_file(tmp.path(), "bad.pem", "not a certificate\n");
    let line = config_error(&[
        "--url",
        "https://127.0.0.1:9",
        "-m",
        "m",
        "--ssl-ca-file",
        &bad.display().to_string(),
    ]);
    assert!(line.starts_with("--ssl-ca-file "), "{line}");
    assert!(line.contains("no certificate in it"), "{line}");
    // End to end: exit code 2.
    let out = Run::profile(&[
        "--url",
        "https://127.0.0.1:9",
        "-m",
        "m",
        "--ssl-ca-file",
        "/nonexistent/ca.pem",
    ])
    .run();
    let line = out.assert_usage_error();
    assert!(line.contains("--ssl-ca-file"), "{line}");
}

/// Over `https://` (the lean client, TLS under it) the requests carry the same ids and the
/// same HTTP phases as over plain HTTP; the handshake is in `http_req_connecting` and in the
/// metadata's `tls_handshake_ms` of the request that opened the connection.
#[test]
fn https_requests_carry_the_ids_and_the_http_phases() {
    let _gate = support::shared();
    let server = TlsServer::start();
    let run = tls_run(
        &server,
        &["--ssl-insecure", "--session-header", "X-Session-ID"],
    )
    .run();
    run.ok();
    let heads = server.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2);
    let header = |head: &str, name: &str| -> Vec<String> {
        head.lines()
            .filter_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().to_string())
            .collect()
    };
    let records = run.jsonl();
    assert_eq!(records.len(), 2);
    for r in &records {
        let md = &r["metadata"];
        let id = md["x_request_id"].as_str().unwrap();
        let head = heads
            .iter()
            .find(|h| header(h, "x-request-id") == [id])
            .unwrap_or_else(|| panic!("no request with X-Request-ID {id}: {heads:?}"));
        assert_eq!(
            header(head, "x-session-id"),
            [md["x_correlation_id"].as_str().unwrap()],
            "{head}"
        );
        let metrics = r["metrics"].as_object().unwrap();
        assert!(metrics.contains_key("request_latency"), "{r}");
        let reused = metrics["http_req_connection_reused"]["value"] == 1;
        let handshake = &md["tls_handshake_ms"];
        assert_eq!(handshake.is_null(), reused, "{r}");
        if !reused {
            let h = handshake.as_f64().unwrap();
            let connecting = metrics["http_req_connecting"]["value"].as_f64().unwrap();
            assert!(h > 0.0 && h <= connecting, "{r}");
        }
        assert_eq!(md["response_clock"], "kernel", "{r}");
    }
    assert!(run.json()["http_req_duration"]["avg"].as_f64().unwrap() > 0.0);
    // One connection, kept alive (concurrency 1).
    let conns = server.conns.lock().unwrap().clone();
    assert!(conns.len() == 2 && conns[0] == conns[1], "{conns:?}");
}

/// `sticky-user-sessions` over https: each conversation keeps its own TLS connection for all
/// its turns, as over plain HTTP (hyper's pool could not promise that).
#[test]
fn sticky_sessions_over_https_keep_a_conversation_on_one_connection() {
    let _gate = support::shared();
    let server = TlsServer::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut text = String::new();
    for s in ["a", "b", "c"] {
        text.push_str(&format!(
            "{{\"turns\": [{{\"text\": \"{s} one\"}}, {{\"text\": \"{s} two\"}}, \
             {{\"text\": \"{s} three\"}}]}}\n"
        ));
    }
    let file = write_file(tmp.path(), "sessions.jsonl", &text);
    let run = Run::profile(&[
        "--url",
        &server.url(),
        "-m",
        "m",
        "--ssl-insecure",
        "--input-file",
        file.to_str().unwrap(),
        "--custom-dataset-type",
        "multi_turn",
        "--concurrency",
        "3",
        "--conversation-num",
        "3",
        "--connection-reuse-strategy",
        "sticky-user-sessions",
        "--no-server-metrics",
    ])
    .run();
    run.ok();
    assert!(run.errors().is_empty(), "{:?}", run.errors());
    let heads = server.heads.lock().unwrap().clone();
    let conns = server.conns.lock().unwrap().clone();
    assert_eq!(heads.len(), 9);
    let mut conn_of = std::collections::HashMap::new();
    for (head, conn) in heads.iter().zip(&conns) {
        let id = head
            .lines()
            .find_map(|l| l.strip_prefix("x-correlation-id:"))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no conversation id: {head}"));
        let first = *conn_of.entry(id.clone()).or_insert(*conn);
        assert_eq!(
            first, *conn,
            "conversation {id} moved to another connection"
        );
    }
    assert_eq!(conn_of.len(), 3, "three conversations");
    let mut used: Vec<usize> = conns.clone();
    used.sort_unstable();
    used.dedup();
    assert_eq!(used.len(), 3, "one connection per conversation: {conns:?}");
}
