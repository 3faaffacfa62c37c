//! Workloads, end to end with the real binary: synthetic prompts (exact token counts checked
//! with an independent tokenizer, shared prefixes), multi-turn sessions carrying the server's
//! real replies, mooncake `hash_ids` blocks, every endpoint's payload shape, reasoning
//! output, server token counts, input file formats and sampling strategies.
//!
//! Every server listens on 127.0.0.1; scripted servers give the answers the built-in mock
//! cannot give (reasoning streams, wrong `usage`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{
    self, chat_server, config_error, strings, write_file, Output, Run, ScriptedServer, CHAT_REPLY,
};

// ---------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------

fn o200k() -> &'static support::Reference {
    support::Reference::o200k()
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Profiling records of the JSONL, in send order (`session_num`).
fn records(run: &Output) -> Vec<Value> {
    let mut r: Vec<Value> = run
        .jsonl()
        .into_iter()
        .filter(|r| r["metadata"]["benchmark_phase"] == "profiling")
        .collect();
    r.sort_by_key(|r| r["metadata"]["session_num"].as_u64().expect("session_num"));
    r
}

fn meta_str(r: &Value, key: &str) -> String {
    r["metadata"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no string metadata.{key} in {r}"))
        .to_string()
}

fn meta_u64(r: &Value, key: &str) -> u64 {
    r["metadata"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer metadata.{key} in {r}"))
}

/// `metrics[tag].value` as a number, or `None` when absent.
fn metric(r: &Value, tag: &str) -> Option<f64> {
    r["metrics"][tag]["value"].as_f64()
}

fn metric_u64(r: &Value, tag: &str) -> u64 {
    r["metrics"][tag]["value"]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer metrics.{tag} in {r}"))
}

/// Asserts every record succeeded.
fn assert_no_errors(recs: &[Value]) {
    for r in recs {
        assert!(r["error"].is_null(), "request failed: {r}");
    }
}

/// `inputs.json` entries as `(session_id, first payload)`, in dataset order.
fn input_entries(run: &Output) -> Vec<(String, Value)> {
    run.inputs()["data"]
        .as_array()
        .expect("inputs.json has data[]")
        .iter()
        .map(|d| {
            (
                d["session_id"].as_str().expect("session_id").to_string(),
                d["payloads"][0].clone(),
            )
        })
        .collect()
}

/// The chat payload's single user prompt.
fn chat_prompt(p: &Value) -> String {
    let msgs = p["messages"].as_array().expect("chat payload has messages");
    assert_eq!(msgs.len(), 1, "one message in a first turn: {p}");
    assert_eq!(msgs[0]["role"], "user", "{p}");
    msgs[0]["content"].as_str().expect("content").to_string()
}

/// The entry index a JSONL `conversation_id` stands for: `session_<i>` (synthetic, as
/// AIPerf names them) or `conv-<i>` (an input-file line without a session id).
fn conv_index(id: &str) -> usize {
    id.strip_prefix("session_")
        .or_else(|| id.strip_prefix("conv-"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("conversation_id {id:?} is not session_<n> or conv-<n>"))
}

fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

// ---- scripted SSE answers -------------------------------------------------------------

/// A scripted server answering each request with `events()`: SSE events, each sent after its
/// pause; then the connection is closed.
fn sse_server(
    events: impl Fn() -> Vec<(Duration, String)> + Send + Sync + 'static,
) -> ScriptedServer {
    ScriptedServer::start(move |conn| {
        if conn.request().is_some() {
            conn.sse()?;
            for (pause, data) in events() {
                std::thread::sleep(pause);
                conn.event(&data)?;
            }
        }
        Ok(())
    })
}

/// Words that are one o200k token each, also when concatenated.
const WORDS: [&str; 5] = [" the", " of", " and", " to", " in"];

fn chat_chunk(delta: Value) -> String {
    json!({"id": "x", "object": "chat.completion.chunk", "model": "m",
           "choices": [{"index": 0, "delta": delta, "finish_reason": null}]})
    .to_string()
}

// ---------------------------------------------------------------------------------------
// 1. synthetic prompts: exact token counts and shared prefixes
// ---------------------------------------------------------------------------------------

#[test]
fn synthetic_prompts_have_exactly_their_sampled_token_counts() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=0&itl_ms=0",
        "--isl",
        "150",
        "--isl-stddev",
        "60",
        "--osl",
        "1",
        "--num-dataset-entries",
        "40",
        "--request-count",
        "40",
        "--concurrency",
        "8",
        "--random-seed",
        "11",
    ])
    .run();
    run.ok();
    let entries = input_entries(&run);
    assert_eq!(entries.len(), 40);
    let prompts: HashMap<String, String> = entries
        .iter()
        .map(|(id, p)| (id.clone(), chat_prompt(p)))
        .collect();
    let recs = records(&run);
    assert_eq!(recs.len(), 40);
    assert_no_errors(&recs);
    let mut lengths = BTreeSet::new();
    for r in &recs {
        let id = meta_str(r, "conversation_id");
        let isl = metric_u64(r, "input_sequence_length");
        let prompt = &prompts[&id];
        assert_eq!(
            o200k().count(prompt.as_str()) as u64,
            isl,
            "{id}: {prompt:?}"
        );
        lengths.insert(isl);
    }
    assert!(lengths.len() > 10, "sampled lengths vary: {lengths:?}");
}

#[test]
fn prefix_prompts_share_one_of_n_byte_identical_prefixes() {
    let _gate = support::shared();
    for seed in [5, 6] {
        check_prefix_prompts(seed);
    }
}

#[test]
fn prefix_is_exactly_prefix_prompt_length_tokens_when_its_text_ends_in_punctuation() {
    let _gate = support::shared();
    check_prefix_prompts(101);
}

#[test]
fn prefix_prompts_are_distinct_for_every_seed() {
    let _gate = support::shared();
    check_prefix_prompts(202);
}

fn check_prefix_prompts(seed: u64) {
    let n_entries = 30;
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=0&itl_ms=0",
        "--isl",
        "100",
        "--prefix-prompt-length",
        "64",
        "--num-prefix-prompts",
        "3",
        "--osl",
        "1",
        "--num-dataset-entries",
        &n_entries.to_string(),
        "--request-count",
        &n_entries.to_string(),
        "--concurrency",
        "6",
        "--random-seed",
        &seed.to_string(),
    ])
    .run();
    run.ok();
    let entries = input_entries(&run);
    assert_eq!(entries.len(), n_entries);
    let prompts: HashMap<String, String> = entries
        .iter()
        .map(|(id, p)| (id.clone(), chat_prompt(p)))
        .collect();

    // Every prompt has exactly the ISL the JSONL reports for it.
    let recs = records(&run);
    assert_eq!(recs.len(), n_entries);
    assert_no_errors(&recs);
    let mut isl_of = HashMap::new();
    for r in &recs {
        let id = meta_str(r, "conversation_id");
        let isl = metric_u64(r, "input_sequence_length");
        let prompt = &prompts[&id];
        assert_eq!(
            o200k().count(prompt.as_str()) as u64,
            isl,
            "{id}: {prompt:?}"
        );
        isl_of.insert(id, isl);
    }

    // Exactly three prefixes, told apart by the text before the first newline.
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, p) in &prompts {
        let head = p.split('\n').next().unwrap_or_default().to_string();
        groups.entry(head).or_default().push(id.clone());
    }
    assert_eq!(
        groups.len(),
        3,
        "seed {seed}: expected 3 distinct prefixes, got {:#?}",
        groups.keys().collect::<Vec<_>>()
    );
    let mut prefixes = Vec::new();
    for ids in groups.values() {
        assert!(
            ids.len() >= 2,
            "each prefix is used more than once: {groups:?}"
        );
        // The group's shared bytes, cut after their last newline: the prefix.
        let first = prompts[&ids[0]].as_bytes();
        let lcp = ids
            .iter()
            .map(|id| common_prefix_len(first, prompts[id].as_bytes()))
            .min()
            .unwrap();
        let cut = first[..lcp]
            .iter()
            .rposition(|&b| b == b'\n')
            .expect("the shared part ends in a newline")
            + 1;
        let prefix = std::str::from_utf8(&first[..cut]).expect("utf-8 prefix");
        for id in ids {
            assert!(
                prompts[id].starts_with(prefix),
                "{id} starts with its group's prefix byte for byte"
            );
            assert!(
                prompts[id].len() > prefix.len(),
                "{id}: text after the prefix"
            );
        }
        let prefix_tokens = o200k().count(prefix) as u64;
        assert_eq!(
            prefix_tokens, 64,
            "seed {seed}: the prefix is --prefix-prompt-length tokens: {prefix:?}"
        );
        for id in ids {
            assert_eq!(
                isl_of[id],
                prefix_tokens + 100,
                "{id}: ISL is the prefix plus --isl tokens"
            );
        }
        prefixes.push(prefix.to_string());
    }
    let distinct: BTreeSet<&String> = prefixes.iter().collect();
    assert_eq!(distinct.len(), 3, "three different prefixes");
}

// ---------------------------------------------------------------------------------------
// 2. multi-turn sessions
// ---------------------------------------------------------------------------------------

#[test]
fn multi_turn_history_carries_the_real_replies_and_delays_are_honoured() {
    let _gate = support::shared();
    let server = chat_server();
    let tmp = tempfile::tempdir().unwrap();
    let session = json!({"session_id": "chat-a", "turns": [
        {"text": "first question about rivers"},
        {"text": "second question about lakes", "delay": 200},
        {"text": "third question about seas", "delay": 100},
    ]});
    let file = write_file(tmp.path(), "sessions.jsonl", &format!("{session}\n"));
    let run = Run::profile(&[
        "--url",
        &server.url(),
        "-m",
        "test-model",
        "--input-file",
        &path_str(&file),
        "--custom-dataset-type",
        "multi_turn",
        "--osl",
        "3",
        "--conversation-num",
        "1",
    ])
    .run();
    run.ok();

    let reqs: Vec<Value> = server.requests().iter().map(|r| r.json()).collect();
    assert_eq!(reqs.len(), 3, "three turns, three requests: {reqs:#?}");
    let user = |t: &str| json!({"role": "user", "content": t});
    let assistant = json!({"role": "assistant", "content": CHAT_REPLY});
    assert_eq!(
        reqs[0]["messages"],
        json!([user("first question about rivers")])
    );
    assert_eq!(
        reqs[1]["messages"],
        json!([
            user("first question about rivers"),
            assistant,
            user("second question about lakes")
        ])
    );
    assert_eq!(
        reqs[2]["messages"],
        json!([
            user("first question about rivers"),
            assistant,
            user("second question about lakes"),
            assistant,
            user("third question about seas")
        ])
    );
    for r in &reqs {
        assert_eq!(r["max_completion_tokens"], 3, "{r}");
    }

    let recs = records(&run);
    assert_eq!(recs.len(), 3);
    assert_no_errors(&recs);
    let turns: Vec<u64> = recs.iter().map(|r| meta_u64(r, "turn_index")).collect();
    assert_eq!(turns, [0, 1, 2]);
    let ids: BTreeSet<String> = recs
        .iter()
        .map(|r| meta_str(r, "conversation_id"))
        .collect();
    assert_eq!(ids.len(), 1, "one conversation: {ids:?}");
    // ISL of each turn: its own text.
    for (r, t) in recs.iter().zip([
        "first question about rivers",
        "second question about lakes",
        "third question about seas",
    ]) {
        assert_eq!(
            metric_u64(r, "input_sequence_length"),
            o200k().count(t) as u64
        );
    }

    // `delay` is waited after the previous reply, so it bounds both gaps from below.
    let start = |i: usize| meta_u64(&recs[i], "request_start_ns");
    let end = |i: usize| meta_u64(&recs[i], "request_end_ns");
    for (i, delay_ms) in [(1usize, 200u64), (2, 100)] {
        let delay_ns = delay_ms * 1_000_000;
        assert!(
            start(i) - start(i - 1) >= delay_ns,
            "turn {i} started {} ms after turn {}",
            (start(i) - start(i - 1)) as f64 / 1e6,
            i - 1
        );
        assert!(
            start(i) >= end(i - 1) + delay_ns - 1_000_000,
            "turn {i} started {} ms after the previous reply, delay {delay_ms} ms",
            (start(i) as f64 - end(i - 1) as f64) / 1e6
        );
    }
}

#[test]
fn multi_turn_sessions_do_not_mix_histories() {
    let _gate = support::shared();
    let server = chat_server();
    let tmp = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for s in ["a", "b", "c"] {
        let session = json!({"turns": [
            {"text": format!("session {s} turn one")},
            {"text": format!("session {s} turn two")},
        ]});
        text.push_str(&format!("{session}\n"));
    }
    let file = write_file(tmp.path(), "sessions.jsonl", &text);
    let run = Run::profile(&[
        "--url",
        &server.url(),
        "-m",
        "test-model",
        "--input-file",
        &path_str(&file),
        "--custom-dataset-type",
        "multi_turn",
        "--concurrency",
        "3",
        "--conversation-num",
        "3",
    ])
    .run();
    run.ok();
    let reqs: Vec<Value> = server.requests().iter().map(|r| r.json()).collect();
    assert_eq!(reqs.len(), 6);
    for s in ["a", "b", "c"] {
        let first = format!("session {s} turn one");
        let mine: Vec<&Value> = reqs
            .iter()
            .filter(|r| r["messages"][0]["content"] == first.as_str())
            .collect();
        assert_eq!(mine.len(), 2, "session {s}: {mine:#?}");
        let second = mine
            .iter()
            .find(|r| r["messages"].as_array().unwrap().len() == 3)
            .unwrap_or_else(|| panic!("session {s}: a second turn with history"));
        assert_eq!(
            second["messages"],
            json!([
                {"role": "user", "content": first},
                {"role": "assistant", "content": CHAT_REPLY},
                {"role": "user", "content": format!("session {s} turn two")},
            ])
        );
    }
    let recs = records(&run);
    assert_eq!(recs.len(), 6);
    assert_no_errors(&recs);
    let mut by_conv: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in &recs {
        by_conv
            .entry(meta_str(r, "conversation_id"))
            .or_default()
            .push(meta_u64(r, "turn_index"));
    }
    assert_eq!(by_conv.len(), 3, "{by_conv:?}");
    for turns in by_conv.values() {
        assert_eq!(turns, &[0, 1]);
    }
}

#[test]
fn streaming_multi_turn_against_the_mock_completes_every_turn() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for s in 0..2 {
        let session = json!({"turns": [
            {"text": format!("Tell me a story number {s}."), "output_length": 4},
            {"text": "Go on, please.", "output_length": 5},
            {"text": "And how does it end?", "output_length": 6},
        ]});
        text.push_str(&format!("{session}\n"));
    }
    let file = write_file(tmp.path(), "sessions.jsonl", &text);
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=2&itl_ms=1",
        "--streaming",
        "--input-file",
        &path_str(&file),
        "--custom-dataset-type",
        "multi_turn",
        "--concurrency",
        "2",
        "--conversation-num",
        "2",
    ])
    .run();
    run.ok();
    let recs = records(&run);
    assert_eq!(recs.len(), 6);
    assert_no_errors(&recs);
    let mut by_conv: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for r in &recs {
        by_conv
            .entry(meta_str(r, "conversation_id"))
            .or_default()
            .push(r);
    }
    assert_eq!(by_conv.len(), 2);
    for turns in by_conv.values() {
        let idx: Vec<u64> = turns.iter().map(|r| meta_u64(r, "turn_index")).collect();
        assert_eq!(idx, [0, 1, 2]);
        let osl: Vec<u64> = turns
            .iter()
            .map(|r| metric_u64(r, "output_sequence_length"))
            .collect();
        assert_eq!(osl, [4, 5, 6], "each turn's output_length");
        for r in turns {
            assert!(metric(r, "time_to_first_token").is_some(), "{r}");
        }
    }
    assert_eq!(run.stat("request_count", "avg"), 6.0);
}

// ---------------------------------------------------------------------------------------
// 3. mooncake hash_ids
// ---------------------------------------------------------------------------------------

#[test]
fn mooncake_hash_ids_share_prefixes_exactly_where_the_ids_match() {
    let _gate = support::shared();
    for seed in [1, 2] {
        check_mooncake_blocks(seed);
    }
}

#[test]
fn mooncake_distinct_hash_ids_get_distinct_blocks_for_every_seed() {
    let _gate = support::shared();
    check_mooncake_blocks(106);
}

fn check_mooncake_blocks(seed: u64) {
    let tmp = tempfile::tempdir().unwrap();
    // (hash_ids, input_length)
    let lines: [(&[u64], usize); 5] = [
        (&[1, 2, 3], 48),
        (&[1, 2, 4], 48),
        (&[5, 2, 3], 48),
        (&[1, 2, 3], 40),
        (&[1, 6, 3], 48),
    ];
    let text: String = lines
        .iter()
        .map(|(ids, n)| {
            format!(
                "{}\n",
                json!({"input_length": n, "hash_ids": ids, "output_length": 1})
            )
        })
        .collect();
    let file = write_file(tmp.path(), "trace.jsonl", &text);
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=0&itl_ms=0",
        "--input-file",
        &path_str(&file),
        "--custom-dataset-type",
        "mooncake_trace",
        "--isl-block-size",
        "16",
        "--random-seed",
        &seed.to_string(),
        // One request per line (AIPerf's default without timestamps would be 10).
        "--request-count",
        "5",
    ])
    .run();
    run.ok();
    let prompts: Vec<String> = input_entries(&run)
        .iter()
        .map(|(_, p)| chat_prompt(p))
        .collect();
    assert_eq!(prompts.len(), lines.len());
    let bpe = o200k();
    let tokens: Vec<Vec<u32>> = prompts.iter().map(|p| bpe.encode(p.as_str())).collect();
    for (i, ((_, n), t)) in lines.iter().zip(&tokens).enumerate() {
        assert_eq!(
            t.len(),
            *n,
            "line {i}: input_length tokens: {:?}",
            prompts[i]
        );
    }
    // Line i's k-th block: its 16 tokens, decoded.
    let block = |i: usize, k: usize| -> String {
        let t = &tokens[i][16 * k..(16 * (k + 1)).min(tokens[i].len())];
        bpe.decode(t).expect("decodes")
    };
    // Each whole block ends in a newline, so the text up to the k-th newline boundary is
    // the first k blocks, byte for byte.
    for (i, (ids, n)) in lines.iter().enumerate() {
        for k in 0..(n / 16).min(ids.len()) {
            assert!(
                block(i, k).ends_with('\n'),
                "line {i} block {k} ends in a newline: {:?}",
                block(i, k)
            );
        }
    }
    // Same id, same block text, wherever it appears; different ids, different text.
    let mut text_of: HashMap<u64, String> = HashMap::new();
    for (i, (ids, n)) in lines.iter().enumerate() {
        for (k, id) in ids.iter().enumerate().take(n / 16) {
            let b = block(i, k);
            let known = text_of.entry(*id).or_insert_with(|| b.clone());
            assert_eq!(
                *known, b,
                "line {i}: block of id {id} is the same text everywhere"
            );
        }
    }
    let distinct: BTreeSet<&String> = text_of.values().collect();
    assert_eq!(
        distinct.len(),
        text_of.len(),
        "seed {seed}: different ids, different blocks: {text_of:#?}"
    );

    let prefix = |ids: &[u64]| -> String { ids.iter().map(|id| text_of[id].as_str()).collect() };
    // [1,2,3] and [1,2,4] share exactly blocks 1 and 2.
    let p12 = prefix(&[1, 2]);
    assert!(prompts[0].starts_with(&p12) && prompts[1].starts_with(&p12));
    assert!(prompts[0][p12.len()..].starts_with(&text_of[&3]));
    assert!(prompts[1][p12.len()..].starts_with(&text_of[&4]));
    let lcp = common_prefix_len(prompts[0].as_bytes(), prompts[1].as_bytes());
    assert!(
        lcp >= p12.len() && lcp < p12.len() + text_of[&3].len().min(text_of[&4].len()),
        "they differ inside the third block (common prefix {lcp} bytes, two blocks {})",
        p12.len()
    );
    assert_eq!(&tokens[0][..32], &tokens[1][..32]);
    assert_ne!(&tokens[0][32..], &tokens[1][32..]);
    // [5,2,3] differs from the first block on but carries blocks 2 and 3 at the same place.
    assert!(!prompts[2].starts_with(&text_of[&1]));
    assert_eq!(&tokens[2][16..], &tokens[0][16..]);
    assert_eq!(prompts[2], prefix(&[5, 2, 3]));
    assert_eq!(prompts[0], prefix(&[1, 2, 3]));
    // [1,2,3] with 40 tokens: blocks 1 and 2, then an 8-token tail that is not block 3.
    assert!(prompts[3].starts_with(&p12));
    assert_eq!(&tokens[3][..32], &tokens[0][..32]);
    assert_eq!(tokens[3].len() - 32, 8);
    assert_ne!(&tokens[3][32..], &tokens[0][32..40]);
    // [1,6,3]: shares only block 1 with [1,2,3] although block 3 has the same id.
    let p1 = prefix(&[1]);
    assert!(prompts[4].starts_with(&p1));
    assert_eq!(&tokens[4][..16], &tokens[0][..16]);
    assert_ne!(&tokens[4][16..32], &tokens[0][16..32]);

    let recs = records(&run);
    assert_eq!(recs.len(), lines.len());
    assert_no_errors(&recs);
    for r in &recs {
        let i = conv_index(&meta_str(r, "conversation_id"));
        assert_eq!(metric_u64(r, "input_sequence_length"), lines[i].1 as u64);
    }
}

// ---------------------------------------------------------------------------------------
// 4. endpoint payload shapes
// ---------------------------------------------------------------------------------------

fn mock_run(extra: &[&str]) -> Output {
    let mut args = strings(&[
        "--url",
        "mock?ttft_ms=2&itl_ms=1",
        "--request-count",
        "3",
        "--num-dataset-entries",
        "3",
        "--isl",
        "20",
    ]);
    args.extend(strings(extra));
    let run = Run::profile(&args).run();
    run.ok();
    run
}

#[test]
fn chat_and_completions_payloads() {
    let _gate = support::shared();
    let run = mock_run(&["--endpoint-type", "chat", "--osl", "4"]);
    for (_, p) in input_entries(&run) {
        assert_eq!(o200k().count(chat_prompt(&p).as_str()), 20);
        assert_eq!(p["max_completion_tokens"], 4, "{p}");
        assert_eq!(p["stream"], false, "{p}");
        assert_eq!(p["model"].as_str().map(str::is_empty), Some(false), "{p}");
    }
    let recs = records(&run);
    assert_eq!(recs.len(), 3);
    assert_no_errors(&recs);
    assert!(recs
        .iter()
        .all(|r| metric_u64(r, "output_sequence_length") == 4));

    let run = mock_run(&[
        "--endpoint-type",
        "completions",
        "--osl",
        "4",
        "--streaming",
    ]);
    for (_, p) in input_entries(&run) {
        let prompt = p["prompt"].as_str().unwrap_or_else(|| panic!("{p}"));
        assert_eq!(o200k().count(prompt), 20);
        assert_eq!(p["max_tokens"], 4, "{p}");
        assert_eq!(p["stream"], true, "{p}");
        assert!(p.get("messages").is_none(), "{p}");
    }
    let recs = records(&run);
    assert_no_errors(&recs);
    for r in &recs {
        assert_eq!(metric_u64(r, "output_sequence_length"), 4);
        assert!(metric(r, "time_to_first_token").is_some(), "{r}");
    }
}

#[test]
fn embeddings_batch_sends_an_array_and_isl_is_the_sum() {
    let _gate = support::shared();
    let run = mock_run(&[
        "--endpoint-type",
        "embeddings",
        "-b",
        "3",
        "--isl-stddev",
        "5",
    ]);
    let entries = input_entries(&run);
    let mut sums = HashMap::new();
    for (id, p) in &entries {
        let input = p["input"].as_array().unwrap_or_else(|| panic!("{p}"));
        assert_eq!(input.len(), 3, "a batch of 3: {p}");
        assert!(p.get("messages").is_none() && p.get("prompt").is_none());
        let sum: usize = input
            .iter()
            .map(|t| o200k().count(t.as_str().expect("string input")))
            .sum();
        sums.insert(id.clone(), sum as u64);
    }
    let recs = records(&run);
    assert_eq!(recs.len(), 3);
    assert_no_errors(&recs);
    for r in &recs {
        let id = meta_str(r, "conversation_id");
        assert_eq!(
            metric_u64(r, "input_sequence_length"),
            sums[&id],
            "{id}: ISL is the batch's total"
        );
    }

    // --batch-size is for embeddings only.
    let line = config_error(&["--url", "mock", "-b", "2"]);
    assert!(line.contains("batch-size"), "{line}");
}

#[test]
fn responses_payload_and_streaming_run() {
    let _gate = support::shared();
    let run = mock_run(&["--endpoint-type", "responses", "--osl", "5"]);
    for (_, p) in input_entries(&run) {
        let input = p["input"].as_array().unwrap_or_else(|| panic!("{p}"));
        assert_eq!(input.len(), 1, "{p}");
        assert_eq!(input[0]["role"], "user");
        assert_eq!(o200k().count(input[0]["content"].as_str().unwrap()), 20);
        assert_eq!(p["max_output_tokens"], 5, "{p}");
        assert!(p.get("messages").is_none() && p.get("max_tokens").is_none());
    }
    let recs = records(&run);
    assert_no_errors(&recs);
    assert!(recs
        .iter()
        .all(|r| metric_u64(r, "output_sequence_length") == 5));

    let run = mock_run(&["--endpoint-type", "responses", "--osl", "6", "--streaming"]);
    for (_, p) in input_entries(&run) {
        assert_eq!(p["stream"], true, "{p}");
    }
    let recs = records(&run);
    assert_eq!(recs.len(), 3);
    assert_no_errors(&recs);
    for r in &recs {
        assert_eq!(metric_u64(r, "output_sequence_length"), 6, "{r}");
        let ttft = metric(r, "time_to_first_token").unwrap_or_else(|| panic!("TTFT: {r}"));
        assert!(ttft > 0.0);
        assert!(metric(r, "inter_token_latency").is_some(), "{r}");
    }
}

const TEMPLATE: &str =
    r#"{"model":"{{model}}","prompt":"{{text}}","max_tokens":"{{max_tokens}}","stream":false}"#;

fn template_args(template: &str) -> Vec<String> {
    strings(&[
        "--url",
        "mock?ttft_ms=1&itl_ms=0",
        "--endpoint-type",
        "template",
        "--endpoint",
        "/v1/completions",
        "--payload-template",
        template,
        "--response-field",
        "/choices/0/text",
        "--osl",
        "5",
        "--isl",
        "12",
        "--request-count",
        "3",
        "--num-dataset-entries",
        "3",
        "-m",
        "tmpl-model",
    ])
}

fn check_template_run(run: &Output) {
    run.ok();
    for (_, p) in input_entries(run) {
        assert_eq!(p["max_tokens"], json!(5), "max_tokens is the number 5: {p}");
        assert_eq!(p["model"], "tmpl-model", "{p}");
        assert_eq!(p["stream"], false, "{p}");
        assert_eq!(o200k().count(p["prompt"].as_str().expect("prompt")), 12);
        assert_eq!(
            p.as_object().unwrap().len(),
            4,
            "only the template's keys: {p}"
        );
    }
    let recs = records(run);
    assert_eq!(recs.len(), 3);
    assert_no_errors(&recs);
    for r in &recs {
        assert_eq!(metric_u64(r, "output_sequence_length"), 5, "{r}");
    }
}

#[test]
fn template_endpoint_fills_the_template_and_reads_the_response_field() {
    let _gate = support::shared();
    check_template_run(&Run::profile(&template_args(TEMPLATE)).run());

    // @FILE
    let tmp = tempfile::tempdir().unwrap();
    let f = write_file(tmp.path(), "template.json", TEMPLATE);
    check_template_run(&Run::profile(&template_args(&format!("@{}", f.display()))).run());
}

#[test]
fn template_errors_are_config_errors() {
    let _gate = support::shared();
    // No --payload-template.
    let line = config_error(&[
        "--url",
        "mock",
        "--endpoint-type",
        "template",
        "--endpoint",
        "/v1/completions",
    ]);
    assert!(line.contains("--payload-template"), "{line}");

    // A template without {{text}}.
    let line = config_error(&template_args(r#"{"prompt":"fixed","max_tokens":5}"#));
    assert!(line.contains("{{text}}"), "{line}");

    // Not JSON.
    let line = config_error(&template_args(r#"{"prompt":"{{text}}""#));
    assert!(line.contains("not valid JSON"), "{line}");

    // A missing @FILE.
    let line = config_error(&template_args("@/nonexistent/dir/template.json"));
    assert!(line.contains("/nonexistent/dir/template.json"), "{line}");

    // No --endpoint.
    let line = config_error(&[
        "--url",
        "mock",
        "--endpoint-type",
        "template",
        "--payload-template",
        TEMPLATE,
    ]);
    assert!(line.contains("--endpoint"), "{line}");
}

// ---------------------------------------------------------------------------------------
// 5. reasoning output
// ---------------------------------------------------------------------------------------

#[test]
fn reasoning_tokens_are_counted_and_ttfo_is_the_first_answer_token() {
    let _gate = support::shared();
    let gap = Duration::from_millis(25);
    let server = sse_server(move || {
        let mut ev = vec![(Duration::ZERO, chat_chunk(json!({"role": "assistant"})))];
        for w in &WORDS[..4] {
            ev.push((gap, chat_chunk(json!({"reasoning_content": w}))));
        }
        for w in &WORDS[..3] {
            ev.push((gap, chat_chunk(json!({"content": w}))));
        }
        ev.push((Duration::ZERO, "[DONE]".into()));
        ev
    });
    let run = Run::profile(&[
        "--url",
        &server.url(),
        "-m",
        "test-model",
        "--streaming",
        "--request-count",
        "2",
        "--isl",
        "10",
    ])
    .run();
    run.ok();
    let reasoning: String = WORDS[..4].concat();
    let answer: String = WORDS[..3].concat();
    assert_eq!(o200k().count(reasoning.as_str()), 4);
    assert_eq!(o200k().count(answer.as_str()), 3);
    let recs = records(&run);
    assert_eq!(recs.len(), 2);
    assert_no_errors(&recs);
    for r in &recs {
        assert_eq!(metric_u64(r, "reasoning_token_count"), 4, "{r}");
        assert_eq!(metric_u64(r, "output_sequence_length"), 7, "{r}");
        let ttft = metric(r, "time_to_first_token").expect("TTFT");
        let ttfo = metric(r, "time_to_first_output_token").expect("TTFO");
        // Four reasoning events 25 ms apart come before the first answer token.
        assert!(
            ttfo > ttft + 75.0,
            "TTFO {ttfo} ms should follow TTFT {ttft} ms by the reasoning events"
        );
    }
    assert_eq!(server.request_count(), 2);
}

#[test]
fn responses_api_reasoning_events_count_as_reasoning() {
    let _gate = support::shared();
    let gap = Duration::from_millis(25);
    let server = sse_server(move || {
        let ev = |kind: &str, delta: &str| json!({"type": kind, "delta": delta}).to_string();
        let mut out = vec![(
            Duration::ZERO,
            json!({"type": "response.created", "response": {"id": "r"}}).to_string(),
        )];
        for w in &WORDS[..3] {
            out.push((gap, ev("response.reasoning_text.delta", w)));
        }
        for w in &WORDS[..2] {
            out.push((gap, ev("response.output_text.delta", w)));
        }
        out.push((
            Duration::ZERO,
            json!({"type": "response.completed", "response": {"id": "r", "status": "completed",
                   "usage": {"input_tokens": 10, "output_tokens": 5}}})
            .to_string(),
        ));
        out
    });
    let run = Run::profile(&[
        "--url",
        &server.url(),
        "-m",
        "test-model",
        "--endpoint-type",
        "responses",
        "--streaming",
        "--request-count",
        "2",
        "--isl",
        "10",
    ])
    .run();
    run.ok();
    let recs = records(&run);
    assert_eq!(recs.len(), 2);
    assert_no_errors(&recs);
    for r in &recs {
        assert_eq!(metric_u64(r, "reasoning_token_count"), 3, "{r}");
        assert_eq!(metric_u64(r, "output_sequence_length"), 5, "{r}");
        let ttft = metric(r, "time_to_first_token").expect("TTFT");
        let ttfo = metric(r, "time_to_first_output_token").expect("TTFO");
        assert!(ttfo > ttft + 50.0, "TTFO {ttfo} ms, TTFT {ttft} ms");
    }
    for b in server.requests().iter().map(|r| r.json()) {
        assert!(b["input"].is_array(), "{b}");
    }
}

#[test]
fn non_streaming_reasoning_content_is_counted() {
    let _gate = support::shared();
    let server = ScriptedServer::start(|conn| {
        while conn.request().is_some() {
            conn.json(&json!({
                "id": "x", "object": "chat.completion", "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {
                    "role": "assistant",
                    "reasoning_content": WORDS.concat(),
                    "content": WORDS[..2].concat(),
                }}],
            }))?;
        }
        Ok(())
    });
    let run = Run::profile(&[
        "--url",
        &server.url(),
        "-m",
        "test-model",
        "--request-count",
        "2",
        "--isl",
        "10",
    ])
    .run();
    run.ok();
    let recs = records(&run);
    assert_eq!(recs.len(), 2);
    assert_no_errors(&recs);
    for r in &recs {
        assert_eq!(metric_u64(r, "reasoning_token_count"), 5, "{r}");
        assert_eq!(metric_u64(r, "output_sequence_length"), 7, "{r}");
        assert!(metric(r, "time_to_first_token").is_none(), "{r}");
    }
    // No `usage` in the answers: nothing to compare, no warning.
    assert!(!run.stderr.contains(MISMATCH), "{}", run.stderr);
}

// ---------------------------------------------------------------------------------------
// 6. server token counts
// ---------------------------------------------------------------------------------------

const MISMATCH: &str = "differ by more than 10 %";

#[test]
fn server_token_count_against_the_mock_asks_for_usage() {
    let _gate = support::shared();
    let run = mock_run(&["--use-server-token-count", "--streaming", "--osl", "7"]);
    for (_, p) in input_entries(&run) {
        assert_eq!(p["stream_options"], json!({"include_usage": true}), "{p}");
    }
    let recs = records(&run);
    assert_eq!(recs.len(), 3);
    assert_no_errors(&recs);
    for r in &recs {
        assert_eq!(metric_u64(r, "output_sequence_length"), 7, "{r}");
    }
    assert!(!run.stderr.contains(MISMATCH), "{}", run.stderr);

    // Without the flag too, as AIPerf does; only --no-stream-usage leaves it out.
    let run = mock_run(&["--streaming", "--osl", "7"]);
    for (_, p) in input_entries(&run) {
        assert_eq!(p["stream_options"], json!({"include_usage": true}), "{p}");
    }
    let run = mock_run(&["--streaming", "--osl", "7", "--no-stream-usage"]);
    for (_, p) in input_entries(&run) {
        assert!(p.get("stream_options").is_none(), "{p}");
    }
}

#[test]
fn server_token_count_is_used_and_a_disagreement_is_warned_about() {
    let _gate = support::shared();
    // Five one-token deltas, but `usage` claims 100 completion tokens.
    let server = sse_server(|| {
        let mut ev = vec![(Duration::ZERO, chat_chunk(json!({"role": "assistant"})))];
        for w in WORDS {
            ev.push((Duration::from_millis(1), chat_chunk(json!({"content": w}))));
        }
        ev.push((
            Duration::ZERO,
            json!({"id": "x", "object": "chat.completion.chunk", "choices": [],
                   "usage": {"prompt_tokens": 9, "completion_tokens": 100, "total_tokens": 109}})
            .to_string(),
        ));
        ev.push((Duration::ZERO, "[DONE]".into()));
        ev
    });
    assert_eq!(o200k().count(WORDS.concat().as_str()), 5);
    let base = [
        "--url",
        &server.url(),
        "-m",
        "test-model",
        "--streaming",
        "--request-count",
        "2",
        "--isl",
        "10",
        "--osl",
        "5",
    ];

    let mut args = strings(&base);
    args.push("--use-server-token-count".into());
    let run = Run::profile(&args).run();
    run.ok();
    let recs = records(&run);
    assert_eq!(recs.len(), 2);
    assert_no_errors(&recs);
    for r in &recs {
        assert_eq!(metric_u64(r, "output_sequence_length"), 100, "{r}");
        assert_eq!(metric_u64(r, "input_sequence_length"), 9, "{r}");
    }
    assert!(run.stderr.contains(MISMATCH), "{}", run.stderr);
    for b in server.requests().iter().map(|r| r.json()) {
        assert_eq!(b["stream_options"], json!({"include_usage": true}), "{b}");
    }

    let run = Run::profile(&strings(&base)).run();
    run.ok();
    let recs = records(&run);
    assert_no_errors(&recs);
    for r in &recs {
        assert_eq!(metric_u64(r, "output_sequence_length"), 5, "{r}");
        assert_eq!(metric_u64(r, "input_sequence_length"), 10, "{r}");
    }
    assert!(
        run.stderr.contains(MISMATCH),
        "usage is present, so the disagreement is reported: {}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------------------
// 7. input files and sampling strategies
// ---------------------------------------------------------------------------------------

/// A single_turn file of `n` distinct texts.
fn single_turn_file(dir: &Path, n: usize) -> (PathBuf, Vec<String>) {
    let texts: Vec<String> = (0..n)
        .map(|i| format!("Entry number {i}: describe the colour of the sky."))
        .collect();
    let body: String = texts
        .iter()
        .map(|t| format!("{}\n", json!({"text": t})))
        .collect();
    (write_file(dir, "single.jsonl", &body), texts)
}

/// The entry index each request used, in send order (concurrency 1).
fn picked(file: &Path, kind: &str, extra: &[&str]) -> (Vec<usize>, Output) {
    let mut args = strings(&[
        "--url",
        "mock?ttft_ms=0&itl_ms=0",
        "--input-file",
        &path_str(file),
        "--custom-dataset-type",
        kind,
        "--osl",
        "1",
        "--concurrency",
        "1",
    ]);
    args.extend(strings(extra));
    let run = Run::profile(&args).run();
    run.ok();
    let recs = records(&run);
    assert_no_errors(&recs);
    let order = recs
        .iter()
        .map(|r| conv_index(&meta_str(r, "conversation_id")))
        .collect();
    (order, run)
}

#[test]
fn single_turn_file_loads_and_sequential_uses_entries_in_order() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (file, texts) = single_turn_file(tmp.path(), 5);
    let (order, run) = picked(
        &file,
        "single_turn",
        &[
            "--dataset-sampling-strategy",
            "sequential",
            "--request-count",
            "12",
        ],
    );
    assert_eq!(order, [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]);
    let entries = input_entries(&run);
    assert_eq!(entries.len(), 5);
    for (i, (id, p)) in entries.iter().enumerate() {
        assert_eq!(id, &format!("conv-{i}"));
        assert_eq!(chat_prompt(p), texts[i]);
        assert_eq!(p["max_completion_tokens"], 1);
    }
    for r in records(&run) {
        let i = conv_index(&meta_str(&r, "conversation_id"));
        assert_eq!(
            metric_u64(&r, "input_sequence_length"),
            o200k().count(texts[i].as_str()) as u64
        );
    }

    // Without --request-count: AIPerf's default of 10 requests, in file order, wrapping.
    let (order, _) = picked(&file, "single_turn", &[]);
    assert_eq!(order, [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]);
}

#[test]
fn single_turn_texts_and_output_length() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let body = [
        json!({"texts": ["alpha beta", "gamma delta"], "output_length": 3}),
        json!({"text": "epsilon zeta"}),
    ]
    .iter()
    .map(|v| format!("{v}\n"))
    .collect::<String>();
    let file = write_file(tmp.path(), "single.jsonl", &body);
    let (order, run) = picked(&file, "single_turn", &["--request-count", "2"]);
    assert_eq!(order, [0, 1]);
    let entries = input_entries(&run);
    assert_eq!(chat_prompt(&entries[0].1), "alpha beta gamma delta");
    assert_eq!(entries[0].1["max_completion_tokens"], 3);
    assert_eq!(chat_prompt(&entries[1].1), "epsilon zeta");
    assert_eq!(entries[1].1["max_completion_tokens"], 1, "--osl by default");
}

#[test]
fn shuffle_uses_each_entry_once_per_pass() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (file, _) = single_turn_file(tmp.path(), 6);
    let (order, _) = picked(
        &file,
        "single_turn",
        &[
            "--dataset-sampling-strategy",
            "shuffle",
            "--request-count",
            "18",
            "--random-seed",
            "4",
        ],
    );
    assert_eq!(order.len(), 18);
    let identity: Vec<usize> = (0..6).collect();
    let mut shuffled = false;
    for pass in order.chunks(6) {
        let mut sorted = pass.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, identity, "each pass is a permutation: {order:?}");
        shuffled |= pass != identity.as_slice();
    }
    assert!(shuffled, "the passes are shuffled: {order:?}");
    let (again, _) = picked(
        &file,
        "single_turn",
        &[
            "--dataset-sampling-strategy",
            "shuffle",
            "--request-count",
            "18",
            "--random-seed",
            "4",
        ],
    );
    assert_eq!(order, again, "same seed, same order");
}

#[test]
fn random_sampling_is_reproducible_with_a_seed() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (file, _) = single_turn_file(tmp.path(), 5);
    let args = [
        "--dataset-sampling-strategy",
        "random",
        "--request-count",
        "20",
        "--random-seed",
        "9",
    ];
    let (a, _) = picked(&file, "single_turn", &args);
    let (b, _) = picked(&file, "single_turn", &args);
    assert_eq!(a.len(), 20);
    assert_eq!(a, b, "same seed, same draws");
    assert!(a.iter().all(|&i| i < 5));
    let sequential: Vec<usize> = (0..20).map(|i| i % 5).collect();
    assert_ne!(a, sequential, "random is not the file order");
    let distinct: BTreeSet<usize> = a.iter().copied().collect();
    assert!(distinct.len() >= 3, "draws spread over the entries: {a:?}");
}

#[test]
fn random_pool_loads_and_draws_at_random() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (file, texts) = single_turn_file(tmp.path(), 4);
    let args = ["--request-count", "16", "--random-seed", "3"];
    let (a, run) = picked(&file, "random_pool", &args);
    let (b, _) = picked(&file, "random_pool", &args);
    assert_eq!(a.len(), 16);
    assert_eq!(a, b, "same seed, same draws");
    let sequential: Vec<usize> = (0..16).map(|i| i % 4).collect();
    assert_ne!(a, sequential, "random_pool draws at random by default");
    let entries = input_entries(&run);
    assert_eq!(entries.len(), 4);
    for (i, (_, p)) in entries.iter().enumerate() {
        assert_eq!(chat_prompt(p), texts[i]);
    }
}

#[test]
fn sharegpt_file_loads_human_prompts_with_reply_lengths() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let reply0 = "The capital of France is Paris, a city on the Seine.";
    let reply2 = "Water boils at one hundred degrees Celsius at sea level.";
    let data = json!([
        {"conversations": [
            {"from": "human", "value": "What is the capital of France?"},
            {"from": "gpt", "value": reply0},
        ]},
        {"conversations": [
            {"from": "gpt", "value": "A reply without a question is skipped."},
            {"from": "human", "value": "ignored"},
        ]},
        {"conversations": [
            {"from": "human", "value": "At what temperature does water boil?"},
            {"from": "gpt", "value": reply2},
            {"from": "human", "value": "And at altitude?"},
        ]},
    ]);
    let file = write_file(
        tmp.path(),
        "sharegpt.json",
        &serde_json::to_string_pretty(&data).unwrap(),
    );
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=0&itl_ms=0",
        "--input-file",
        &path_str(&file),
        "--custom-dataset-type",
        "sharegpt",
        "--request-count",
        "2",
    ])
    .run();
    run.ok();
    let entries = input_entries(&run);
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(chat_prompt(&entries[0].1), "What is the capital of France?");
    assert_eq!(
        entries[0].1["max_completion_tokens"],
        o200k().count(reply0) as u64
    );
    assert_eq!(
        chat_prompt(&entries[1].1),
        "At what temperature does water boil?"
    );
    assert_eq!(
        entries[1].1["max_completion_tokens"],
        o200k().count(reply2) as u64
    );
    let recs = records(&run);
    assert_eq!(recs.len(), 2);
    assert_no_errors(&recs);
    for r in &recs {
        let i = conv_index(&meta_str(r, "conversation_id"));
        let want = o200k().count([reply0, reply2][i]) as u64;
        assert_eq!(metric_u64(r, "output_sequence_length"), want, "{r}");
    }
}

#[test]
fn jsonl_conversation_ids_match_the_session_ids_of_inputs_json() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let body: String = ["alpha", "beta"]
        .iter()
        .map(|s| {
            let session = json!({"session_id": format!("session-{s}"), "turns": [
                {"text": format!("{s} one")}, {"text": format!("{s} two")},
            ]});
            format!("{session}\n")
        })
        .collect();
    let file = write_file(tmp.path(), "sessions.jsonl", &body);
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=0&itl_ms=0",
        "--input-file",
        &path_str(&file),
        "--custom-dataset-type",
        "multi_turn",
        "--osl",
        "1",
        "--conversation-num",
        "2",
    ])
    .run();
    run.ok();
    let sessions: BTreeSet<String> = input_entries(&run).into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        sessions,
        BTreeSet::from(["session-alpha".to_string(), "session-beta".to_string()])
    );
    let recs = records(&run);
    assert_eq!(recs.len(), 4);
    let ids: BTreeSet<String> = recs
        .iter()
        .map(|r| meta_str(r, "conversation_id"))
        .collect();
    assert_eq!(
        ids, sessions,
        "a JSONL record names its conversation as inputs.json does"
    );
}

#[test]
fn bad_input_files_are_usage_errors_with_file_and_line() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &str); 6] = [
        (
            "single_turn",
            "{\"text\": \"ok\"}\n{\"text\": \n",
            "single.jsonl",
        ),
        (
            "single_turn",
            "{\"text\": \"ok\"}\n{\"other\": 1}\n",
            "notext.jsonl",
        ),
        (
            "random_pool",
            "{\"text\": \"ok\"}\nnot json\n",
            "pool.jsonl",
        ),
        (
            "multi_turn",
            "{\"turns\": [{\"text\": \"ok\"}]}\n{\"turns\": []}\n",
            "multi.jsonl",
        ),
        (
            "mooncake_trace",
            "{\"input_length\": 10}\n{\"input_length\": 0}\n",
            "trace.jsonl",
        ),
        (
            "sharegpt",
            "[\n{\"conversations\": oops}\n]\n",
            "sharegpt.json",
        ),
    ];
    for (kind, text, name) in cases {
        let file = write_file(tmp.path(), name, text);
        let run = Run::profile(&[
            "--url",
            "mock",
            "--input-file",
            &path_str(&file),
            "--custom-dataset-type",
            kind,
        ])
        .run();
        let line = run.assert_usage_error();
        let want = format!("{}:2:", file.display());
        assert!(
            line.contains(&want),
            "{kind}: expected `{want}` in {line:?}"
        );
        assert!(
            !run.dir.join("profile_export.jsonl").exists(),
            "{kind}: nothing was sent"
        );
    }

    // A negative delay is named on its line.
    let file = write_file(
        tmp.path(),
        "delay.jsonl",
        "{\"turns\": [{\"text\": \"a\"}, {\"text\": \"b\", \"delay\": -5}]}\n",
    );
    let run = Run::profile(&[
        "--url",
        "mock",
        "--input-file",
        &path_str(&file),
        "--custom-dataset-type",
        "multi_turn",
    ])
    .run();
    let line = run.assert_usage_error();
    assert!(line.contains(&format!("{}:1:", file.display())), "{line}");
    assert!(line.contains("delay"), "{line}");

    // An empty file.
    let file = write_file(tmp.path(), "empty.jsonl", "\n\n");
    let run = Run::profile(&["--url", "mock", "--input-file", &path_str(&file)]).run();
    let line = run.assert_usage_error();
    assert!(line.contains("no usable requests"), "{line}");
}

// ---------------------------------------------------------------------------------------
// 8. generating many prompts (run by hand)
// ---------------------------------------------------------------------------------------

/// `cargo test -p aiperf --test it -- --ignored --nocapture workloads::bench_`
#[test]
#[ignore = "a benchmark, run by hand"]
fn bench_generate_100k_prompts_of_1000_tokens() {
    // A measurement: nothing else runs beside it.
    let _gate = support::exclusive();
    let test_bin = PathBuf::from(support::bin());
    let release = test_bin
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join("release").join("aiperf"))
        .filter(|p| p.is_file());
    let bin = release.clone().unwrap_or_else(|| test_bin.clone());
    let out = Run::profile(&[
        "--url",
        "mock",
        "--isl",
        "1000",
        "--num-dataset-entries",
        "100000",
        "--request-count",
        "1",
        "--osl",
        "1",
    ])
    .program(&bin)
    .timeout(Duration::from_secs(600))
    .run();
    println!(
        "100,000 prompts of 1,000 tokens: {:.2} s wall with {} ({})",
        out.elapsed.as_secs_f64(),
        bin.display(),
        if release.is_some() {
            "release"
        } else {
            "test build"
        }
    );
    out.ok();
    let inputs = out.read("inputs.json");
    println!("inputs.json: {} MB", inputs.len() / 1_000_000);
    // Each entry opens with `{"session_id":`, which cannot occur inside a JSON string.
    assert_eq!(inputs.matches("{\"session_id\":").count(), 100_000);
    assert!(inputs.contains("{\"session_id\":\"session_099999\""));
}
