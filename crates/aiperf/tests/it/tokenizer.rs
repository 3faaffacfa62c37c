//! `--tokenizer`: synthetic prompts checked against an independent tokenizer implementation
//! (tiktoken-rs; the binary's built-in encodings come from GitHub's `bpe-openai`), Hugging Face `tokenizer.json`
//! files given by path, and hub ids from the cache or, offline, a one-line usage error.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{self, Output, Run};

/// Each prompt of `inputs.json` by conversation id (the chat payload's first message).
fn prompts(run: &Output) -> HashMap<String, String> {
    let inputs = run.inputs();
    inputs["data"]
        .as_array()
        .expect("inputs.json has data[]")
        .iter()
        .map(|d| {
            let id = d["session_id"].as_str().expect("session_id").to_string();
            let content = d["payloads"][0]["messages"][0]["content"]
                .as_str()
                .expect("chat payload messages[0].content")
                .to_string();
            (id, content)
        })
        .collect()
}

/// The ISL reported for each JSONL record, with its conversation id.
fn reported_isl(run: &Output) -> Vec<(String, u64)> {
    run.jsonl()
        .iter()
        .map(|r| {
            let id = r["metadata"]["conversation_id"]
                .as_str()
                .expect("conversation_id")
                .to_string();
            let isl = r["metrics"]["input_sequence_length"]["value"]
                .as_u64()
                .unwrap_or_else(|| panic!("no input_sequence_length in {r}"));
            (id, isl)
        })
        .collect()
}

fn synthetic(tokenizer: &str, isl: u32, stddev: u32) -> Output {
    let run = Run::profile(&[
        "--url",
        "mock",
        "--tokenizer",
        tokenizer,
        "--isl",
        &isl.to_string(),
        "--isl-stddev",
        &stddev.to_string(),
        "--num-dataset-entries",
        "50",
        "--request-count",
        "10",
        "--concurrency",
        "5",
        "--random-seed",
        "1",
    ])
    .run();
    run.ok();
    run
}

fn independent(tokenizer: &str) -> support::Reference {
    support::Reference::new(tokenizer)
}

#[test]
fn sampled_prompts_have_exactly_their_reported_token_counts() {
    let _gate = support::shared();
    for tokenizer in ["builtin", "builtin:cl100k_base"] {
        let bpe = independent(tokenizer);
        let run = synthetic(tokenizer, 200, 80);
        let prompts = prompts(&run);
        assert_eq!(prompts.len(), 50);
        let records = reported_isl(&run);
        assert_eq!(records.len(), 10);
        let mut lengths = Vec::new();
        for (id, isl) in records {
            let prompt = &prompts[&id];
            assert_eq!(
                bpe.count(prompt.as_str()) as u64,
                isl,
                "{tokenizer}: {id}: {prompt:?}"
            );
            lengths.push(isl);
        }
        lengths.sort_unstable();
        lengths.dedup();
        assert!(lengths.len() > 3, "{tokenizer}: ISL varies: {lengths:?}");
    }
}

#[test]
fn fixed_isl_prompts_are_exactly_isl_tokens() {
    let _gate = support::shared();
    for tokenizer in ["builtin", "builtin:cl100k_base"] {
        let bpe = independent(tokenizer);
        for isl in [1, 37, 512] {
            let run = synthetic(tokenizer, isl, 0);
            for (id, prompt) in prompts(&run) {
                assert_eq!(
                    bpe.count(prompt.as_str()),
                    isl as usize,
                    "{tokenizer}: {id}: {prompt:?}"
                );
            }
            for (id, reported) in reported_isl(&run) {
                assert_eq!(reported, isl as u64, "{tokenizer}: {id}");
            }
        }
    }
}

/// A small byte-level BPE `tokenizer.json` trained on a few sentences, with a `<s>` special
/// token added to every sequence (which counting must leave out).
pub(crate) fn fixture_json() -> String {
    use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
    use tokenizers::normalizers::NormalizerWrapper;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::processors::template::TemplateProcessing;
    use tokenizers::{
        AddedToken, DecoderWrapper, PostProcessorWrapper, PreTokenizerWrapper, TokenizerImpl,
    };

    let sentences = [
        "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
        "However little known the feelings or views of such a man may be on his first entering a neighbourhood.",
        "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer the slings and arrows.",
        "The old stone church on the hill rang its bell, and the children ran home across the fields.",
    ];
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(500)
        .min_frequency(1)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .special_tokens(vec![AddedToken::from("<s>", true)])
        .build();
    let mut t: TokenizerImpl<
        BPE,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    > = TokenizerImpl::new(BPE::default());
    t.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    t.with_decoder(Some(ByteLevel::default()));
    t.train(&mut trainer, sentences.iter()).unwrap();
    let bos = t.token_to_id("<s>").unwrap();
    let template = TemplateProcessing::builder()
        .try_single("<s> $A")
        .unwrap()
        .special_tokens(vec![("<s>", bos)])
        .build()
        .unwrap();
    t.with_post_processor(Some(template));
    t.to_string(false).unwrap()
}

/// Runs against the mock with `--tokenizer spec` and checks that every reported ISL is the
/// Hugging Face tokenizer's own count of the prompt sent.
fn check_hf_run(run: &Output, json: &str) {
    run.ok();
    let reference = tokenizers::Tokenizer::from_bytes(json.as_bytes()).unwrap();
    let prompts = prompts(run);
    let records = reported_isl(run);
    assert_eq!(records.len(), 5);
    for (id, isl) in records {
        let prompt = &prompts[&id];
        let want = reference.encode(prompt.as_str(), false).unwrap().len();
        assert_eq!(want as u64, isl, "{id}: {prompt:?}");
        // Cut from the corpus, not the generator's last-resort filler.
        assert!(!prompt.starts_with("a a a"), "{id}: {prompt:?}");
    }
    let summary = run.json();
    assert!(
        summary["input_sequence_length"]["avg"].as_f64().unwrap() > 0.0,
        "{summary}"
    );
}

fn hf_args(spec: &str) -> Vec<String> {
    [
        "--url",
        "mock",
        "--tokenizer",
        spec,
        "--isl",
        "60",
        "--isl-stddev",
        "20",
        "--num-dataset-entries",
        "20",
        "--request-count",
        "5",
        "--random-seed",
        "3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn tokenizer_json_by_path_end_to_end() {
    let _gate = support::shared();
    let json = fixture_json();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokenizer.json");
    std::fs::write(&file, &json).unwrap();
    for spec in [file.to_str().unwrap(), dir.path().to_str().unwrap()] {
        check_hf_run(&Run::profile(&hf_args(spec)).run(), &json);
    }
}

/// `aiperf profile --url mock --tokenizer SPEC` with a private Hugging Face environment:
/// `HF_HOME` is `hf_home`, no token or endpoint from the caller, `HF_HUB_OFFLINE` as given.
fn hub_run(spec: &str, hf_home: &Path, offline: bool) -> Output {
    let mut cmd = Run::profile(&hf_args(spec)).env("HF_HOME", hf_home.to_str().unwrap());
    for key in [
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_TOKEN_PATH",
        "HF_ENDPOINT",
        "HF_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
    ] {
        cmd = cmd.env_remove(key);
    }
    if offline {
        cmd = cmd.env("HF_HUB_OFFLINE", "1");
    }
    cmd.run()
}

fn assert_hub_error(out: &Output, repo: &str) {
    let line = out.assert_usage_error();
    assert!(line.contains("local path"), "{line}");
    assert!(line.contains("--tokenizer PATH"), "{line}");
    assert!(line.contains(&format!("`{repo}`")), "{line}");
}

#[test]
fn hub_id_with_hf_hub_offline_is_one_line_usage_error() {
    let _gate = support::shared();
    let home = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = hub_run("some-org/some-model", home.path(), true);
    assert_hub_error(&out, "some-org/some-model");
    assert!(out.stderr.contains("HF_HUB_OFFLINE"), "{}", out.stderr);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn hub_id_unreachable_is_one_line_usage_error_within_the_timeout() {
    let _gate = support::shared();
    // This machine reaches no hub; were it online, the made-up model would not exist, and
    // the error would be the same shape.
    let home = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = hub_run("some-org/some-model", home.path(), false);
    let elapsed = started.elapsed();
    assert_hub_error(&out, "some-org/some-model");
    // A 5 s connect timeout, plus start-up.
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    // Nothing was cached.
    assert!(!home
        .path()
        .join("hub/models--some-org--some-model")
        .exists());
}

#[test]
fn hub_id_found_in_the_cache_runs_offline() {
    let _gate = support::shared();
    let json = fixture_json();
    let home = tempfile::tempdir().unwrap();
    // The layout huggingface_hub leaves: refs/main names a snapshot linking into blobs/.
    let repo = home.path().join("hub/models--acme--tiny-tok");
    let snapshot = repo.join("snapshots/5eed");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("blobs/b10b"), &json).unwrap();
    std::fs::write(repo.join("refs/main"), "5eed").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("../../blobs/b10b", snapshot.join("tokenizer.json")).unwrap();
    #[cfg(not(unix))]
    std::fs::write(snapshot.join("tokenizer.json"), &json).unwrap();

    for offline in [true, false] {
        let out = hub_run("acme/tiny-tok", home.path(), offline);
        out.ok();
        let records = out.jsonl();
        assert_eq!(records.len(), 5);
        for r in records {
            assert!(
                r["metrics"]["input_sequence_length"]["value"]
                    .as_u64()
                    .unwrap()
                    > 0
            );
        }
    }
}
