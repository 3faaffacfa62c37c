//! Failure kinds: each is counted and summarised in `error_summary`, and the run never
//! crashes. Usage errors print one line and exit 2.

use serde_json::Value;

use crate::support::{
    self, closed_port, config_error, stalling_server, MockServer, Output, Run, ScriptedServer,
};

/// Asserts every request failed with one error kind, and the run ended as it should.
fn assert_all_failed(run: &Output, requests: u64, kind: &str) -> String {
    run.expect_code(1);
    let errors = run.errors();
    assert_eq!(errors.len(), 1, "one kind of error expected: {errors:?}");
    let (_, got_kind, message, count) = &errors[0];
    assert_eq!(got_kind, kind, "{errors:?}");
    assert_eq!(*count, requests, "{errors:?}");
    assert_eq!(run.stat("error_request_count", "avg"), requests as f64);
    assert_eq!(run.stat("request_count", "avg"), 0.0);
    // No latency statistics from failed requests.
    let j = run.json();
    assert!(
        j.get("request_latency").is_none(),
        "{}",
        j["request_latency"]
    );
    // The console shows the error summary, stderr says why the exit code is 1.
    assert!(
        run.stdout.contains(kind),
        "error summary not printed:\n{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("every request failed"),
        "{}",
        run.stderr
    );
    // Every request still has its JSONL line, with the error.
    let recs = run.jsonl();
    assert_eq!(recs.len() as u64, requests);
    for r in &recs {
        assert_eq!(r["error"]["type"], kind, "{r}");
    }
    message.clone()
}

#[test]
fn https_to_a_plain_http_server_fails_cleanly_in_the_tls_handshake() {
    let _gate = support::shared();
    // https:// goes through hyper and rustls; a peer that answers in plain HTTP (the mock
    // answers the ClientHello with a 400) fails the handshake: a connection error for every
    // request, not a hang or a crash.
    let server = MockServer::start(&[]);
    let url = server.url().replacen("http://", "https://", 1);
    let run = Run::profile(&["--url", &url, "-m", "m", "--request-count", "2"]).run();
    let message = assert_all_failed(&run, 2, "ConnectionError");
    assert!(!message.is_empty());
}

#[test]
fn refused_connection() {
    let _gate = support::shared();
    let closed = closed_port();
    let url = closed.url("");
    let run = Run::profile(&["--url", &url, "-m", "m", "--request-count", "3"]).run();
    assert_all_failed(&run, 3, "ConnectionError");
    let errors = run.errors();
    assert_eq!(errors[0].0, None, "no HTTP status for a refused connection");
}

#[test]
fn http_500_some_requests() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=1&itl_ms=0&error_rate=30",
        "--request-count",
        "40",
        "--concurrency",
        "4",
    ])
    .run();
    run.ok();
    let failed = run.stat("error_request_count", "avg");
    let succeeded = run.stat("request_count", "avg");
    assert!(failed > 0.0 && succeeded > 0.0, "{failed} / {succeeded}");
    assert_eq!(failed + succeeded, 40.0);
    let errors = run.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (code, kind, message, count) = &errors[0];
    assert_eq!(*code, Some(500));
    assert_eq!(kind, "InternalServerError");
    assert!(message.contains("mock server injected error"), "{message}");
    assert_eq!(*count as f64, failed);
    // Only successes enter the latency statistics.
    assert_eq!(
        run.json()["request_latency"]["count"].as_f64(),
        Some(succeeded)
    );
    let recs = run.jsonl();
    assert_eq!(recs.len(), 40);
    let errored = recs.iter().filter(|r| !r["error"].is_null()).count();
    assert_eq!(errored as f64, failed);
    for r in recs.iter().filter(|r| !r["error"].is_null()) {
        assert_eq!(r["error"]["code"], 500, "{r}");
    }
}

#[test]
fn http_500_every_request() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=1&itl_ms=0&error_rate=100",
        "--request-count",
        "5",
    ])
    .run();
    assert_all_failed(&run, 5, "InternalServerError");
    assert_eq!(run.errors()[0].0, Some(500));
}

#[test]
fn stream_cut_short() {
    let _gate = support::shared();
    // One content event, then the connection is closed.
    let server = ScriptedServer::start(|conn| {
        if conn.request().is_some() {
            conn.sse()?;
            conn.event(r#"{"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" the"},"finish_reason":null}]}"#)?;
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
        "3",
    ])
    .run();
    assert_all_failed(&run, 3, "StreamTruncated");
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn request_timeout() {
    let _gate = support::shared();
    let server = stalling_server();
    let run = Run::profile(&[
        "--url",
        &server.url(),
        "-m",
        "m",
        "--streaming",
        "--request-timeout-seconds",
        "0.5",
        "--request-count",
        "2",
    ])
    .run();
    assert_all_failed(&run, 2, "RequestTimeout");
}

#[test]
fn garbage_events() {
    let _gate = support::shared();
    let server = ScriptedServer::start(|conn| {
        if conn.request().is_some() {
            conn.sse()?;
            conn.write(b"data: not-json\n\ndata: [DONE]\n\n")?;
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
        "3",
    ])
    .run();
    let message = assert_all_failed(&run, 3, "InvalidResponse");
    assert!(message.contains("not-json"), "{message}");
}

#[test]
fn sse_error_event() {
    let _gate = support::shared();
    let server = ScriptedServer::start(|conn| {
        if conn.request().is_some() {
            conn.sse()?;
            conn.write(b"data: {\"error\":{\"message\":\"boom\"}}\n\ndata: [DONE]\n\n")?;
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
        "3",
    ])
    .run();
    let message = assert_all_failed(&run, 3, "StreamError");
    assert_eq!(message, "boom");
}

#[test]
fn connection_reset_by_the_server() {
    let _gate = support::shared();
    // The server reads each request, then resets the connection without a byte of answer.
    let server = ScriptedServer::start(|conn| {
        if conn.request().is_some() {
            conn.reset();
        }
        Ok(())
    });
    let run = Run::profile(&["--url", &server.url(), "-m", "m", "--request-count", "3"]).run();
    // Connected, sent, then no response: not a connection error, and never sent again (the
    // server may have received it).
    let message = assert_all_failed(&run, 3, "ConnectionClosedBeforeResponse");
    assert!(message.to_lowercase().contains("reset"), "{message}");
    assert_eq!(
        server.request_count(),
        3,
        "each request reached the server once"
    );
}

#[test]
fn error_summary_in_json_has_the_documented_shape() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=1&itl_ms=0&error_rate=100",
        "--request-count",
        "2",
    ])
    .run();
    run.expect_code(1);
    let j = run.json();
    let summary = j["error_summary"].as_array().unwrap();
    assert_eq!(summary.len(), 1);
    let entry = &summary[0];
    assert_eq!(entry["count"], 2);
    let d = &entry["error_details"];
    assert_eq!(d["code"], 500);
    assert_eq!(d["type"], "InternalServerError");
    assert!(d["message"].is_string());
}

/// End to end: a bad flag is exit code 2 and one `error: ` line on stderr, and nothing is
/// written. (Which flags are bad is checked in process, below.)
#[test]
fn usage_errors_print_one_line_and_exit_2() {
    let _gate = support::shared();
    for (args, needle) in [
        (&["--url", "mock", "--no-such-flag"][..], "--no-such-flag"),
        (&["--url", "ftp://x", "-m", "m"][..], "ftp://x"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let out = Run::profile(args).current_dir(tmp.path()).run();
        let line = out.assert_usage_error();
        assert!(line.contains(needle), "{line}");
        assert!(
            !out.dir.exists(),
            "{args:?}: nothing is written on a usage error"
        );
    }
}

#[test]
fn bad_flags_are_config_errors() {
    let _gate = support::shared();
    let line = config_error(&["--url", "mock", "--no-such-flag"]);
    assert!(line.contains("--no-such-flag"), "{line}");

    let line = config_error(&["--url", "mock", "--concurrency", "0"]);
    assert!(line.contains("concurrency"), "{line}");

    let line = config_error(&["--url", "mock", "--concurrency", "many"]);
    assert!(line.contains("concurrency"), "{line}");

    let line = config_error(&["--url", "mock", "--header", "NoColonHere"]);
    assert!(line.contains("NoColonHere"), "{line}");

    let line = config_error(&["--url", "ftp://x", "-m", "m"]);
    assert!(line.contains("ftp://x"), "{line}");

    let line = config_error(&["--url", "mock", "--request-count", "0"]);
    assert!(line.contains("request-count"), "{line}");

    let line = config_error(&["--url", "mock", "--request-timeout-seconds", "0"]);
    assert!(line.contains("request-timeout-seconds"), "{line}");

    let line = config_error(&["--url", "mock", "--extra-inputs", "novalue"]);
    assert!(line.contains("novalue"), "{line}");

    let line = config_error(&["--url", "mock", "--endpoint-type", "rerank"]);
    assert!(line.contains("rerank"), "{line}");

    let line = config_error(&["--url", "http://127.0.0.1:9"]);
    assert!(
        line.contains("--model"),
        "a real server needs a model: {line}"
    );

    let line = config_error(&["--url", "mock?bogus=1"]);
    assert!(line.contains("bogus"), "{line}");

    let line = config_error(&["--url", "mock?error_rate=150"]);
    assert!(line.contains("error_rate"), "{line}");
}

#[test]
fn no_subcommand_is_a_usage_error() {
    let _gate = support::shared();
    let out = Run::new::<&str>(&[]).run();
    out.assert_usage_error();
}

#[test]
fn jsonl_error_records_carry_the_error_details() {
    let _gate = support::shared();
    let closed = closed_port();
    let url = closed.url("");
    let run = Run::profile(&["--url", &url, "-m", "m", "--request-count", "2"]).run();
    run.expect_code(1);
    for r in run.jsonl() {
        let e = &r["error"];
        assert_eq!(e["type"], "ConnectionError", "{r}");
        assert!(e["code"].is_null(), "{r}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{r}");
        assert!(r["metadata"]["request_start_ns"].as_u64().is_some(), "{r}");
        assert_eq!(r["metadata"]["benchmark_phase"], Value::from("profiling"));
    }
}

#[test]
fn cancelled_requests_are_summarised_as_one_kind() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=1000&itl_ms=0&tokens=2",
        "--benchmark-duration",
        "0.3",
        "--benchmark-grace-period",
        "0",
        "--concurrency",
        "3",
    ])
    .run();
    run.expect_code(1);
    let errors = run.errors();
    assert_eq!(
        errors.len(),
        1,
        "one summary entry for one kind of error: {errors:?}"
    );
    assert_eq!(errors[0].0, Some(499));
    assert_eq!(errors[0].1, "RequestCancellationError");
    assert_eq!(errors[0].3, 3);
}

/// A full disk mid-run (here a file size limit, `ulimit -f`, which fails writes past it with
/// EFBIG, part of a line written): sending stops, the JSONL is cut back to whole lines and
/// the error says how many, the summary is still printed and the JSON still written, and
/// the run exits 1.
#[test]
fn a_write_error_stops_the_run_and_keeps_whole_lines() {
    let _gate = support::shared();
    // 400 blocks of 512 bytes (dash's unit): room for the small JSON and CSV reports, not
    // for the JSONL of 3,000 requests.
    let run = Run::new(&[
        "-c",
        r#"trap "" XFSZ; ulimit -f 400 && exec "$0" "$@""#,
        support::bin(),
        "profile",
        "--url",
        "mock?ttft_ms=1&itl_ms=1",
        "--streaming",
        "--osl",
        "2",
        "--isl",
        "8",
        "--num-dataset-entries",
        "1",
        "--concurrency",
        "8",
        "--request-count",
        "3000",
    ])
    .program(std::path::Path::new("/bin/sh"))
    .with_artifacts()
    .run();
    run.expect_code(1);
    assert!(run.stdout.contains("Request Count"), "{}", run.show());
    assert!(
        run.stdout.contains("(mock-model, stopped early)"),
        "{}",
        run.show()
    );
    assert!(
        run.stderr
            .contains("error: cannot write profile_export.jsonl: "),
        "{}",
        run.show()
    );
    let text = run.read("profile_export.jsonl");
    assert!(text.ends_with('\n'), "the file ends with a whole line");
    let lines: Vec<&str> = text.lines().collect();
    for l in &lines {
        serde_json::from_str::<Value>(l).expect("every line is whole JSON");
    }
    let said = format!("it holds the first {} records, as whole lines", lines.len());
    assert!(run.stderr.contains(&said), "{said}\n{}", run.show());
    let json = run.json();
    assert_eq!(json["was_cancelled"], true);
    let finished = run.stat("request_count", "avg");
    assert!(
        finished >= lines.len() as f64 && finished < 3000.0,
        "sending stopped early: {finished} finished, {} lines",
        lines.len()
    );
    assert!(json["warnings"][0]
        .as_str()
        .unwrap_or("")
        .starts_with("the run was stopped early (cannot write profile_export.jsonl"));
}

/// An artifact directory that cannot be created is the user's to fix: exit 2, naming the
/// flag, before anything is sent.
#[test]
fn an_unwritable_artifact_dir_is_a_usage_error() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "not a directory").expect("write");
    let dir = file.join("artifacts");
    let run = Run::new(&[
        "profile",
        "--url",
        "mock",
        "--request-count",
        "2",
        "--ui",
        "none",
        "--artifact-dir",
        dir.to_str().expect("utf-8 path"),
    ])
    .run();
    // One line: no second complaint about logs/aiperf.log inside it.
    let line = run.assert_usage_error();
    assert!(
        line.contains("error: cannot write to --artifact-dir "),
        "{}",
        run.show()
    );
}
