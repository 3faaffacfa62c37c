//! Request counting as AIPerf does it, end to end: `--request-count` counts requests (every
//! turn of a conversation is one), `--conversation-num` counts conversations, and synthetic
//! multi-turn conversations carry the server's real replies. The counts are the ones a
//! server saw (`aiperf mock-server`'s `GET /mock/stats`, or a scripted server's log), checked
//! against the JSONL; the expected numbers are Python AIPerf 0.13's on the same settings.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{
    self, chat_completion, config_error, write_file, MockServer, Output, Run, ScriptedServer,
};

/// A 5-session × 4-turn `multi_turn` file: session `sN`, turn `T` says "session N turn T".
fn five_by_four(dir: &Path) -> PathBuf {
    let mut text = String::new();
    for s in 0..5 {
        let turns: Vec<Value> = (0..4)
            .map(|t| json!({"text": format!("session {s} turn {t}, please answer")}))
            .collect();
        text.push_str(&format!(
            "{}\n",
            json!({"session_id": format!("s{s}"), "turns": turns})
        ));
    }
    write_file(dir, "sessions.jsonl", &text)
}

/// The mock's `GET /mock/stats` counter of requests received.
fn mock_requests(server: &MockServer) -> u64 {
    let mut s = TcpStream::connect(server.addr()).expect("connect to the mock");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    write!(
        s,
        "GET /mock/stats HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        server.addr()
    )
    .expect("send GET /mock/stats");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read /mock/stats");
    let text = String::from_utf8_lossy(&raw);
    let (_, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let stats: Value = serde_json::from_str(body).expect("stats are JSON");
    stats["requests"].as_u64().expect("a request count")
}

/// Runs the 5 × 4 file against a fresh `aiperf mock-server` with `flags`; the requests the
/// mock received and the run.
fn run_five_by_four(flags: &[&str]) -> (u64, Output) {
    let tmp = tempfile::tempdir().unwrap();
    let file = five_by_four(tmp.path());
    let server = MockServer::start(&["--ttft-ms", "1", "--itl-ms", "0"]);
    let url = server.url();
    let file = file.display().to_string();
    let mut args = vec![
        "--url",
        &url,
        "-m",
        "m",
        "--input-file",
        &file,
        "--custom-dataset-type",
        "multi_turn",
        "--osl",
        "2",
    ];
    args.extend_from_slice(flags);
    let run = Run::profile(&args).run();
    run.ok();
    (mock_requests(&server), run)
}

/// `(phase, conversation_id) → turn indexes` of the JSONL, each list sorted.
fn turns_by_conversation(run: &Output) -> BTreeMap<(String, String), Vec<u64>> {
    let mut by: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for r in run.jsonl() {
        let m = &r["metadata"];
        assert!(r["error"].is_null(), "{r}");
        let key = (
            m["benchmark_phase"].as_str().unwrap().to_string(),
            m["conversation_id"].as_str().unwrap().to_string(),
        );
        by.entry(key)
            .or_default()
            .push(m["turn_index"].as_u64().unwrap());
    }
    for turns in by.values_mut() {
        turns.sort();
    }
    by
}

fn profiling(sessions: &[(&str, &[u64])]) -> BTreeMap<(String, String), Vec<u64>> {
    sessions
        .iter()
        .map(|(s, t)| (("profiling".to_string(), s.to_string()), t.to_vec()))
        .collect()
}

/// A chat server that answers requests in pairs: the N-th request (1-based) is answered
/// once request 2·⌈N/2⌉ has arrived too (or after 10 s). Two conversations sent at
/// concurrency 2 then move in lockstep, turn by turn, whatever the machine's load.
fn paired_chat_server() -> ScriptedServer {
    let arrived = Arc::new((Mutex::new(0u64), Condvar::new()));
    ScriptedServer::start(move |conn| {
        while conn.request().is_some() {
            let (count, cv) = &*arrived;
            let mut n = count.lock().unwrap();
            *n += 1;
            let partner = n.div_ceil(2) * 2;
            cv.notify_all();
            let (n, _) = cv
                .wait_timeout_while(n, Duration::from_secs(10), |n| *n < partner)
                .unwrap();
            drop(n);
            conn.json(&chat_completion("ok"))?;
        }
        Ok(())
    })
}

#[test]
fn the_request_count_counts_requests_and_cuts_conversations_after_their_turn() {
    let _gate = support::shared();
    let (received, run) = run_five_by_four(&["--request-count", "10", "--concurrency", "2"]);
    assert_eq!(received, 10, "AIPerf sends exactly 10");
    assert_eq!(run.stat("request_count", "avg"), 10.0);
    // Which ones: with the two conversations in lockstep (as they were in AIPerf's run),
    // sessions 0 and 1 whole, then 2 and 3 start and stop after their first turn.
    let tmp = tempfile::tempdir().unwrap();
    let file = five_by_four(tmp.path()).display().to_string();
    let server = paired_chat_server();
    let url = server.url();
    let run = Run::profile(&[
        "--url",
        &url,
        "-m",
        "m",
        "--input-file",
        &file,
        "--custom-dataset-type",
        "multi_turn",
        "--request-count",
        "10",
        "--concurrency",
        "2",
    ])
    .run();
    run.ok();
    assert_eq!(server.requests().len(), 10);
    assert_eq!(
        turns_by_conversation(&run),
        profiling(&[
            ("s0", &[0, 1, 2, 3]),
            ("s1", &[0, 1, 2, 3]),
            ("s2", &[0]),
            ("s3", &[0]),
        ])
    );
}

#[test]
fn the_conversation_count_sends_whole_conversations() {
    let _gate = support::shared();
    for flag in [
        "--conversation-num",
        "--num-conversations",
        "--num-sessions",
    ] {
        let (received, run) = run_five_by_four(&[flag, "3", "--concurrency", "2"]);
        assert_eq!(received, 12, "{flag} 3: AIPerf sends 3 whole conversations");
        assert_eq!(
            turns_by_conversation(&run),
            profiling(&[
                ("s0", &[0, 1, 2, 3]),
                ("s1", &[0, 1, 2, 3]),
                ("s2", &[0, 1, 2, 3]),
            ])
        );
    }
}

#[test]
fn with_both_counts_whichever_limit_comes_first_ends_sending() {
    let _gate = support::shared();
    let (received, _) = run_five_by_four(&[
        "--request-count",
        "10",
        "--conversation-num",
        "3",
        "--concurrency",
        "2",
    ]);
    assert_eq!(received, 10);
    let (received, _) = run_five_by_four(&[
        "--request-count",
        "20",
        "--conversation-num",
        "3",
        "--concurrency",
        "2",
    ]);
    assert_eq!(received, 12);
}

#[test]
fn without_a_count_an_input_file_gets_aiperfs_default_of_ten_requests() {
    let _gate = support::shared();
    let (received, _) = run_five_by_four(&["--concurrency", "2"]);
    assert_eq!(received, 10);
}

#[test]
fn open_loop_and_warmup_count_requests_too() {
    let _gate = support::shared();
    let (received, run) = run_five_by_four(&["--request-count", "10", "--request-rate", "200"]);
    assert_eq!(received, 10);
    let sent: usize = turns_by_conversation(&run).values().map(Vec::len).sum();
    assert_eq!(sent, 10);
    // Warmup: 3 requests, then 10 (AIPerf: 13 in all).
    let (received, run) = run_five_by_four(&[
        "--request-count",
        "10",
        "--warmup-request-count",
        "3",
        "--concurrency",
        "2",
    ]);
    assert_eq!(received, 13);
    let warmup: usize = turns_by_conversation(&run)
        .iter()
        .filter(|((phase, _), _)| phase == "warmup")
        .map(|(_, t)| t.len())
        .sum();
    assert_eq!(warmup, 3);
    // --num-warmup-sessions 1: one whole conversation, then 10 (AIPerf: 14).
    let (received, run) = run_five_by_four(&[
        "--request-count",
        "10",
        "--num-warmup-sessions",
        "1",
        "--concurrency",
        "2",
    ]);
    assert_eq!(received, 14);
    let by = turns_by_conversation(&run);
    assert_eq!(by[&("warmup".to_string(), "s0".to_string())], [0, 1, 2, 3]);
}

/// A chat server whose every answer is different ("reply N" for its N-th request), so that a
/// later turn's history shows which reply it carries. Requests are logged in arrival order.
fn numbered_chat_server() -> ScriptedServer {
    let next = Arc::new(AtomicU64::new(0));
    ScriptedServer::start(move |conn| {
        while conn.request().is_some() {
            let n = next.fetch_add(1, Ordering::SeqCst);
            conn.json(&chat_completion(&format!("reply {n}")))?;
        }
        Ok(())
    })
}

#[test]
fn synthetic_multi_turn_carries_the_real_replies_in_the_history() {
    let _gate = support::shared();
    let server = numbered_chat_server();
    let url = server.url();
    let run = Run::profile(&[
        "--url",
        &url,
        "-m",
        "m",
        "--conversation-num",
        "3",
        "--conversation-turn-mean",
        "3",
        "--session-turn-delay-mean",
        "5",
        "--isl",
        "6",
        "--osl",
        "2",
        "--system-prompt",
        "You are terse.",
        "--random-seed",
        "4",
    ])
    .run();
    run.ok();
    let reqs: Vec<Value> = server.requests().iter().map(|r| r.json()).collect();
    // --conversation-num 3 with no --num-dataset-entries: 3 conversations of 3 turns.
    assert_eq!(reqs.len(), 9, "{reqs:#?}");
    assert_eq!(run.inputs()["data"].as_array().unwrap().len(), 3);
    // Concurrency 1: the requests of a conversation follow each other, and reply N answers
    // request N.
    for (n, r) in reqs.iter().enumerate() {
        let messages = r["messages"].as_array().unwrap();
        let turn = n % 3;
        assert_eq!(messages.len(), 2 + 2 * turn, "request {n}: {r}");
        assert_eq!(
            messages[0],
            json!({"role": "system", "content": "You are terse."})
        );
        for k in 0..turn {
            let earlier = &reqs[n - turn + k]["messages"];
            let asked = earlier.as_array().unwrap().last().unwrap();
            assert_eq!(
                messages[1 + 2 * k],
                *asked,
                "request {n}: the question of turn {k}"
            );
            assert_eq!(
                messages[2 + 2 * k],
                json!({"role": "assistant", "content": format!("reply {}", n - turn + k)}),
                "request {n}: the real reply to turn {k}"
            );
        }
        assert_eq!(messages.last().unwrap()["role"], "user");
        assert_eq!(r["max_completion_tokens"], 2);
    }
    let by = turns_by_conversation(&run);
    assert_eq!(by.len(), 3);
    assert!(by.values().all(|t| t == &[0, 1, 2]), "{by:?}");
}

#[test]
fn conversation_flags_are_checked_before_anything_is_sent() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let file = five_by_four(tmp.path()).display().to_string();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--system-prompt", "a", "--system-prompt-file", "x.txt"],
            "mutually exclusive",
        ),
        (
            &["--system-prompt", "a", "--shared-system-prompt-length", "5"],
            "--shared-system-prompt-length",
        ),
        (
            &[
                "--shared-system-prompt-length",
                "5",
                "--prefix-prompt-length",
                "4",
                "--num-prefix-prompts",
                "2",
            ],
            "mutually exclusive",
        ),
        (&["--system-prompt", "  "], "--system-prompt is empty"),
        (
            &["--system-prompt-file", "/nonexistent/prompt.txt"],
            "--system-prompt-file",
        ),
        (
            &["--endpoint-type", "completions", "--system-prompt", "a"],
            "chat or responses",
        ),
        (
            &["--input-file", &file, "--conversation-turn-mean", "3"],
            "--conversation-turn-mean",
        ),
        (
            &["--input-file", &file, "--user-context-prompt-length", "3"],
            "--user-context-prompt-length",
        ),
        (
            &["--endpoint-type", "embeddings", "--session-turns-mean", "2"],
            "embeddings",
        ),
        (
            &["--conversation-turn-mean", "nan"],
            "--conversation-turn-mean",
        ),
        (
            &["--session-delay-ratio=-1"],
            "--conversation-turn-delay-ratio",
        ),
        (&["--num-sessions", "0"], "--conversation-num"),
    ];
    for (flags, needle) in cases {
        let mut args = vec!["--url", "mock"];
        args.extend_from_slice(flags);
        let line = config_error(&args);
        assert!(line.contains(needle), "{flags:?}: {line}");
    }
    // Synthetic conversations generated, as AIPerf: --num-dataset-entries, else
    // --conversation-num, else --request-count (a count from the load at most 10,000 and
    // within the dataset's bound), else 100.
    let entries = |flags: &[&str]| {
        let mut args = vec!["--url", "mock"];
        args.extend_from_slice(flags);
        aiperf::config::load(&support::strings(&args))
            .unwrap()
            .input
            .num_dataset_entries
    };
    assert_eq!(entries(&["--conversation-num", "3"]), 3);
    assert_eq!(
        entries(&["--num-dataset-entries", "5", "--num-sessions", "3"]),
        5
    );
    assert_eq!(entries(&["--request-count", "7"]), 7);
    assert_eq!(entries(&["--benchmark-duration", "1"]), 100);
    assert_eq!(
        entries(&["--conversation-num", "1000000000", "--isl", "550"]),
        10_000
    );
    assert_eq!(
        entries(&["--request-count", "50000", "--isl", "500000"]),
        1_000_000_000 / 500_000,
        "within the dataset's token bound"
    );
    // A system prompt from a file goes with an input file.
    let prompt = write_file(tmp.path(), "system.txt", "Answer in one word.\n");
    let cfg = aiperf::config::load(&support::strings(&[
        "--url",
        "mock",
        "--input-file",
        &file,
        "--custom-dataset-type",
        "multi_turn",
        "--system-prompt-file",
        prompt.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(
        cfg.input.system_prompt.as_deref(),
        Some("Answer in one word.\n")
    );
}
