//! Requests as AIPerf sends them (issue 12, items 4 and 5): `stream_options.include_usage`
//! by default (`--no-stream-usage`), several models (`--model a,b`,
//! `--model-selection-strategy`), the tokenizer of `--model ORG/NAME` from a stand-in hub
//! (`HF_ENDPOINT`) with its fallback, and the readiness probe (`--wait-for-model-*`). The real
//! binary against scripted servers that record what they received.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{self, write_file, Output, Run, ScriptedServer};
use crate::tokenizer::fixture_json;

/// Three content words, then a usage-only chunk claiming `completion_tokens` tokens.
const USAGE_TOKENS: u64 = 7;

/// A chat server that streams three words and, when asked, a final usage-only chunk (no
/// choices); non-streamed requests get a whole completion.
fn streaming_server() -> ScriptedServer {
    ScriptedServer::start(|conn| {
        while let Some(req) = conn.request() {
            let body = req.json();
            if body["stream"] != json!(true) {
                conn.json(&support::chat_completion("one two three"))?;
                continue;
            }
            conn.sse()?;
            conn.event(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#)?;
            for w in ["one", " two", " three"] {
                conn.event(&json!({"choices":[{"index":0,"delta":{"content":w}}]}).to_string())?;
            }
            if body["stream_options"]["include_usage"] == json!(true) {
                conn.event(
                    &json!({"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":USAGE_TOKENS,"total_tokens":5+USAGE_TOKENS}})
                        .to_string(),
                )?;
            }
            conn.event("[DONE]")?;
            return Ok(());
        }
        Ok(())
    })
}

fn bodies(server: &ScriptedServer) -> Vec<Value> {
    server
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.json())
        .collect()
}

fn osl(run: &Output) -> Vec<u64> {
    run.jsonl()
        .iter()
        .map(|r| {
            r["metrics"]["output_sequence_length"]["value"]
                .as_u64()
                .unwrap_or_else(|| panic!("no output_sequence_length in {r}"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// stream_options.include_usage
// ---------------------------------------------------------------------------------------

#[test]
fn streamed_requests_ask_for_usage_unless_told_not_to() {
    let _gate = support::shared();
    let words = support::Reference::o200k().count("one two three") as u64;
    for (extra, asked, want_osl) in [
        (&[][..], true, words),
        (&["--no-stream-usage"][..], false, words),
        (&["--use-server-token-count"][..], true, USAGE_TOKENS),
    ] {
        let server = streaming_server();
        let mut args = vec![
            "--url".to_string(),
            server.url(),
            "-m".into(),
            "m".into(),
            "--streaming".into(),
            "--request-count".into(),
            "3".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let run = Run::profile(&args).run();
        run.ok();
        let sent = bodies(&server);
        assert_eq!(sent.len(), 3, "{extra:?}");
        for b in &sent {
            if asked {
                assert_eq!(b["stream_options"], json!({"include_usage": true}), "{b}");
                // After every generated field, as AIPerf puts it.
                assert_eq!(
                    b.as_object().unwrap().keys().next_back().unwrap(),
                    "stream_options"
                );
            } else {
                assert!(b.get("stream_options").is_none(), "{extra:?}: {b}");
            }
        }
        // The usage-only chunk is no token and no content event: three content events.
        assert_eq!(osl(&run), [want_osl; 3], "{extra:?}");
        for r in run.jsonl() {
            let chunks = r["metrics"]["inter_chunk_latency"]["value"]
                .as_array()
                .map_or(0, Vec::len);
            assert!(chunks <= 2, "{extra:?}: at most 3 content chunks: {r}");
        }
        assert_eq!(run.stat("request_count", "avg"), 3.0, "{extra:?}");
    }
}

#[test]
fn not_streamed_requests_and_user_stream_options() {
    let _gate = support::shared();
    let server = streaming_server();
    let run = Run::profile(&["--url", &server.url(), "-m", "m", "--request-count", "1"]).run();
    run.ok();
    assert!(bodies(&server)[0].get("stream_options").is_none());
    // The user's own stream_options are kept, include_usage added.
    let server = streaming_server();
    let run = Run::profile(&[
        "--url",
        &server.url(),
        "-m",
        "m",
        "--streaming",
        "--request-count",
        "1",
        "--extra-inputs",
        r#"{"stream_options": {"continuous_usage_stats": true}}"#,
    ])
    .run();
    run.ok();
    assert_eq!(
        bodies(&server)[0]["stream_options"],
        json!({"continuous_usage_stats": true, "include_usage": true})
    );
}

#[test]
fn the_mock_answers_the_usage_request_and_osl_stays_the_token_count() {
    let _gate = support::shared();
    for endpoint in ["chat", "completions"] {
        for extra in [None, Some("--use-server-token-count")] {
            let mut args = vec![
                "--url",
                "mock",
                "--streaming",
                "--osl",
                "12",
                "--request-count",
                "4",
                "--endpoint-type",
                endpoint,
            ];
            args.extend(extra);
            let run = Run::profile(&args).run();
            run.ok();
            assert_eq!(osl(&run), [12; 4], "{endpoint} {extra:?}");
            for p in run.payloads() {
                assert_eq!(p["stream_options"], json!({"include_usage": true}), "{p}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Several models
// ---------------------------------------------------------------------------------------

fn payload_models(run: &Output) -> Vec<String> {
    run.payloads()
        .iter()
        .map(|p| p["model"].as_str().expect("model").to_string())
        .collect()
}

#[test]
fn several_models_round_robin_over_the_entries() {
    let _gate = support::shared();
    for args in [
        &["-m", "a,b,c"][..],
        &["-m", "a", "--model", "b", "--model-names", "c"],
        &["-m", "a,b,c", "--model-selection-strategy", "round-robin"],
    ] {
        let mut all = vec![
            "--url",
            "mock",
            "--num-dataset-entries",
            "7",
            "--request-count",
            "7",
        ];
        all.extend(args);
        let run = Run::profile(&all).run();
        run.ok();
        assert_eq!(
            payload_models(&run),
            ["a", "b", "c", "a", "b", "c", "a"],
            "{args:?}"
        );
        let shown = &run.json()["input_config"]["endpoint"];
        assert_eq!(shown["model_names"], json!(["a", "b", "c"]));
        // The default artifact directory would be named after the first model.
        assert_eq!(run.jsonl().len(), 7);
    }
}

#[test]
fn random_model_selection_is_seeded() {
    let _gate = support::shared();
    let pick = |seed: &str| {
        let run = Run::profile(&[
            "--url",
            "mock",
            "-m",
            "a,b",
            "--model-selection-strategy",
            "random",
            "--random-seed",
            seed,
            "--num-dataset-entries",
            "40",
            "--request-count",
            "1",
        ])
        .run();
        run.ok();
        payload_models(&run)
    };
    let first = pick("11");
    assert_eq!(first, pick("11"), "same seed, same models");
    let a = first.iter().filter(|m| *m == "a").count();
    assert!((8..=32).contains(&a), "both models drawn: {first:?}");
    assert_ne!(first, pick("12"));
    let line = Run::profile(&[
        "--url",
        "mock",
        "-m",
        "a,b",
        "--model-selection-strategy",
        "weighted",
    ])
    .run()
    .assert_usage_error();
    assert!(line.contains("weighted is not supported"), "{line}");
}

#[test]
fn every_turn_of_a_conversation_keeps_its_model() {
    let _gate = support::shared();
    let server = support::chat_server();
    let tmp = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for s in ["s0", "s1", "s2"] {
        text.push_str(
            &json!({"session_id": s, "turns": [{"text": format!("{s} first")}, {"text": format!("{s} second")}]})
                .to_string(),
        );
        text.push('\n');
    }
    let file = write_file(tmp.path(), "sessions.jsonl", &text);
    let run = Run::profile(&[
        "--url",
        &server.url(),
        "-m",
        "a,b",
        "--input-file",
        file.to_str().unwrap(),
        "--custom-dataset-type",
        "multi_turn",
        // One pass over the file's conversations (AIPerf's default is 10 requests).
        "--conversation-num",
        "3",
    ])
    .run();
    run.ok();
    let mut by_session: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for b in bodies(&server) {
        let first = b["messages"][0]["content"].as_str().unwrap().to_string();
        let session = first.split(' ').next().unwrap().to_string();
        by_session
            .entry(session)
            .or_default()
            .push(b["model"].as_str().unwrap().to_string());
    }
    assert_eq!(by_session["s0"], ["a", "a"]);
    assert_eq!(by_session["s1"], ["b", "b"]);
    assert_eq!(by_session["s2"], ["a", "a"]);
}

// ---------------------------------------------------------------------------------------
// The tokenizer of --model ORG/NAME
// ---------------------------------------------------------------------------------------

/// A stand-in for the Hugging Face hub: serves `tokenizer.json` for `acme/tiny` at any
/// revision (commit `c0ffee`), 404 for anything else.
fn hub() -> ScriptedServer {
    let json = fixture_json();
    ScriptedServer::start(move |conn| {
        while let Some(req) = conn.request() {
            if req.path.starts_with("/acme/tiny/resolve/") && req.path.ends_with("/tokenizer.json")
            {
                conn.write(format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Repo-Commit: c0ffee\r\nETag: \"b10b\"\r\n\r\n{json}",
                    json.len()
                ))?;
            } else {
                conn.write(
                    "HTTP/1.1 404 Not Found\r\nX-Error-Code: RepoNotFound\r\nContent-Length: 0\r\n\r\n",
                )?;
            }
        }
        Ok(())
    })
}

/// `aiperf profile --url mock ARGS` with a private Hugging Face environment: cache in
/// `home`, hub at `endpoint`.
fn hub_run(args: &[&str], home: &Path, endpoint: &str) -> Output {
    let mut all = vec![
        "--url",
        "mock",
        "--isl",
        "40",
        "--num-dataset-entries",
        "5",
        "--request-count",
        "5",
    ];
    all.extend(args);
    let mut run = Run::profile(&all)
        .env("HF_HOME", home.to_str().unwrap())
        .env("HF_ENDPOINT", endpoint);
    for key in [
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
    ] {
        run = run.env_remove(key);
    }
    run.run()
}

/// Every reported ISL is the fixture tokenizer's count of the prompt sent.
fn counted_with_the_fixture(run: &Output) -> bool {
    let reference = tokenizers::Tokenizer::from_bytes(fixture_json().as_bytes()).unwrap();
    let prompts: Vec<String> = run
        .payloads()
        .iter()
        .map(|p| p["messages"][0]["content"].as_str().unwrap().to_string())
        .collect();
    run.jsonl().iter().all(|r| {
        let i = r["metadata"]["conversation_id"]
            .as_str()
            .and_then(|id| id.strip_prefix("session_"))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap();
        let isl = r["metrics"]["input_sequence_length"]["value"]
            .as_u64()
            .unwrap();
        reference.encode(prompts[i].as_str(), false).unwrap().len() as u64 == isl
    })
}

#[test]
fn a_hub_model_brings_its_tokenizer_and_a_revision_is_asked_for() {
    let _gate = support::shared();
    let hub = hub();
    let home = tempfile::tempdir().unwrap();
    let run = hub_run(&["-m", "acme/tiny"], home.path(), &hub.url());
    run.ok();
    // (The mock's words are one token each only in the built-in tokenizers, so its usage
    // count differs, and that is warned about: that warning is not the fallback's.)
    assert!(!run.stderr.contains("no tokenizer"), "{}", run.show());
    assert!(counted_with_the_fixture(&run));
    assert_eq!(
        run.json()["input_config"]["input"]["tokenizer"],
        "acme/tiny"
    );
    assert_eq!(
        hub.requests()[0].path,
        "/acme/tiny/resolve/main/tokenizer.json"
    );
    assert!(home
        .path()
        .join("hub/models--acme--tiny/snapshots/c0ffee/tokenizer.json")
        .is_file());

    let run = hub_run(
        &[
            "-m",
            "acme/tiny",
            "--tokenizer-revision",
            "v2.0",
            "--tokenizer-trust-remote-code",
        ],
        home.path(),
        &hub.url(),
    );
    run.ok();
    assert_eq!(
        hub.requests().last().unwrap().path,
        "/acme/tiny/resolve/v2.0/tokenizer.json"
    );
    assert!(home
        .path()
        .join("hub/models--acme--tiny/refs/v2.0")
        .is_file());
    let notes: Vec<&str> = run
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("--tokenizer-trust-remote-code"))
        .collect();
    assert_eq!(notes.len(), 1, "{}", run.show());
    assert!(notes[0].contains("no Python code"), "{}", notes[0]);
    let shown = &run.json()["input_config"]["input"];
    assert_eq!(shown["tokenizer_revision"], "v2.0");
    assert_eq!(shown["tokenizer_trust_remote_code"], true);
}

#[test]
fn a_model_without_a_tokenizer_falls_back_to_builtin_with_one_warning() {
    let _gate = support::shared();
    let hub = hub();
    let home = tempfile::tempdir().unwrap();
    let closed_port = support::closed_port();
    let closed = closed_port.url("");
    for (model, endpoint, why) in [
        ("acme/missing", hub.url(), "HTTP 404"),
        ("acme/tiny", closed.clone(), "offline?"),
    ] {
        let started = Instant::now();
        let run = hub_run(&["-m", model], home.path(), &endpoint);
        run.ok();
        assert!(started.elapsed() < Duration::from_secs(60));
        let warnings: Vec<&str> = run
            .stderr_lines()
            .into_iter()
            .filter(|l| l.starts_with("warning:"))
            .collect();
        assert_eq!(warnings.len(), 1, "{}", run.show());
        for want in [model, why, "approximate", "o200k_base"] {
            assert!(warnings[0].contains(want), "{want}: {}", warnings[0]);
        }
        assert_eq!(run.json()["input_config"]["input"]["tokenizer"], "builtin");
        // Counted with the built-in tokenizer.
        let bpe = support::Reference::o200k();
        for (p, r) in run.payloads().iter().zip(run.jsonl()) {
            let prompt = p["messages"][0]["content"].as_str().unwrap();
            let isl = r["metrics"]["input_sequence_length"]["value"]
                .as_u64()
                .unwrap();
            assert_eq!(bpe.count(prompt) as u64, isl);
        }
    }
    // An explicit --tokenizer that cannot be had stays an error.
    let run = hub_run(
        &["-m", "acme/tiny", "--tokenizer", "acme/missing"],
        home.path(),
        &hub.url(),
    );
    let line = run.assert_usage_error();
    assert!(line.contains("acme/missing"), "{line}");
    // A name that is no hub id keeps the built-in tokenizer without a word.
    let run = hub_run(&["-m", "gpt-4o"], home.path(), &closed);
    run.ok();
    assert!(!run.stderr.contains("warning"), "{}", run.show());
}

// ---------------------------------------------------------------------------------------
// Readiness
// ---------------------------------------------------------------------------------------

/// A chat server whose first `unready` requests (probes included) get a 503.
fn warming_server(unready: usize) -> ScriptedServer {
    let seen = Arc::new(AtomicUsize::new(0));
    ScriptedServer::start(move |conn| {
        while let Some(req) = conn.request() {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            if n < unready {
                conn.write("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")?;
            } else if req.method == "GET" {
                conn.json(&json!({"object": "list", "data": [{"id": "m"}]}))?;
            } else {
                conn.json(&support::chat_completion("ready now"))?;
            }
        }
        Ok(())
    })
}

#[test]
fn the_run_waits_until_the_server_is_ready() {
    let _gate = support::shared();
    for (mode, probes) in [("inference", 4), ("models", 4), ("both", 5)] {
        let server = warming_server(3);
        let run = Run::profile(&[
            "--url",
            &server.url(),
            "-m",
            "m",
            "--request-count",
            "2",
            "--wait-for-model-timeout",
            "60",
            "--wait-for-model-interval",
            "0.05",
            "--wait-for-model-mode",
            mode,
        ])
        .run();
        run.ok();
        let reqs = server.requests();
        assert_eq!(reqs.len(), probes + 2, "{mode}: {reqs:#?}");
        let not_ready = run
            .stderr_lines()
            .into_iter()
            .filter(|l| l.contains("not ready") && l.contains("HTTP 503"))
            .count();
        assert_eq!(not_ready, 3, "{mode}: {}", run.show());
        assert!(run.stderr.contains("Server ready after"), "{}", run.show());
        for (i, r) in reqs.iter().enumerate() {
            let is_models = r.method == "GET";
            assert_eq!(is_models, r.path == "/v1/models", "{mode} {i}: {}", r.path);
            if mode == "inference" {
                assert!(!is_models);
            }
        }
        // The inference probe: one token, not streamed, the run's model.
        if let Some(p) = reqs[..probes].iter().find(|r| r.method == "POST") {
            let b = p.json();
            assert_eq!(b["max_completion_tokens"], 1, "{b}");
            assert_eq!(b["model"], "m");
            assert_eq!(b["stream"], false);
        }
        assert_eq!(run.jsonl().len(), 2);
    }
}

#[test]
fn a_server_that_never_gets_ready_ends_the_run_with_exit_1() {
    let _gate = support::shared();
    let server = warming_server(usize::MAX);
    let started = Instant::now();
    let run = Run::profile(&[
        "--url",
        &server.url(),
        "-m",
        "m",
        "--wait-for-model-timeout",
        "1",
        "--wait-for-model-interval",
        "0.2",
    ])
    .run();
    run.expect_code(1);
    assert!(started.elapsed() < Duration::from_secs(60));
    let errors: Vec<&str> = run
        .stderr_lines()
        .into_iter()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", run.show());
    assert!(
        errors[0].contains("not ready within 1 s") && errors[0].contains("HTTP 503"),
        "{}",
        errors[0]
    );
    // Nothing but probes was sent, and no results were written.
    assert!(server.requests().iter().all(|r| r.body.len() < 200));
    // No results were written: the run's log (logs/aiperf.log, written from the start as
    // AIPerf's) is all there is.
    let files = run.all_files();
    let names: Vec<&PathBuf> = files.iter().map(|(p, _)| p).collect();
    assert!(
        names.iter().all(|p| p.ends_with("logs/aiperf.log")),
        "nothing but the log written: {names:?}"
    );
    // Nothing listening at all: the same, with the connection error.
    let closed = support::closed_port();
    let run = Run::profile(&[
        "--url",
        &format!("127.0.0.1:{}", closed.port),
        "-m",
        "m",
        "--wait-for-model-timeout",
        "0.5",
        "--wait-for-model-interval",
        "0.1",
        "--wait-for-model-mode",
        "models",
    ])
    .run();
    run.expect_code(1);
    assert!(
        run.stderr.contains("not ready within 0.5 s"),
        "{}",
        run.show()
    );
}

#[test]
fn accepted_aiperf_flags() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        "mock",
        "--url-strategy",
        "round-robin",
        "--transport",
        "http",
        "--transport-type",
        "http",
        "--request-count",
        "1",
    ])
    .run();
    run.ok();
    for (args, flag) in [
        (&["--url-strategy", "random"][..], "--url-strategy"),
        (&["--transport", "grpc"], "--transport"),
        (
            &["--wait-for-model-mode", "models"],
            "--wait-for-model-mode",
        ),
        (
            &["--wait-for-model-timeout", "nan"],
            "--wait-for-model-timeout",
        ),
        (
            &["--wait-for-model-interval", "0"],
            "--wait-for-model-interval",
        ),
        (&["--tokenizer-revision", "../x"], "--tokenizer-revision"),
    ] {
        let mut all = vec!["--url", "mock"];
        all.extend(args);
        let line = Run::profile(&all).run().assert_usage_error();
        assert!(line.contains(flag), "{args:?}: {line}");
    }
}
