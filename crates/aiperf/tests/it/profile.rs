//! Every `aiperf profile` flag, each shown to have an effect on what is sent or reported.

use serde_json::{json, Value};

use crate::support::{self, chat_server, max_overlap, stalling_server, MockServer, Output, Run};

#[test]
fn model_flag_goes_into_every_payload() {
    let _gate = support::shared();
    for flag in ["-m", "--model"] {
        let run = Run::profile(&[
            "--url",
            "mock",
            flag,
            "my-test-model",
            "--request-count",
            "3",
            "--num-dataset-entries",
            "4",
        ])
        .run();
        run.ok();
        let payloads = run.payloads();
        assert_eq!(payloads.len(), 4);
        for p in &payloads {
            assert_eq!(p["model"], "my-test-model", "{flag}: {p}");
        }
        assert_eq!(
            run.json()["input_config"]["endpoint"]["model_names"],
            json!(["my-test-model"])
        );
    }
}

#[test]
fn url_without_scheme_gets_http_and_reaches_the_mock_server_process() {
    let _gate = support::shared();
    let server = MockServer::start(&["--ttft-ms", "1", "--itl-ms", "0"]);
    let addr = server.addr();
    for flag in ["-u", "--url"] {
        let run = Run::profile(&[flag, &addr, "-m", "mock-model", "--request-count", "4"]).run();
        run.ok();
        assert_eq!(run.stat("request_count", "avg"), 4.0);
        assert_eq!(
            run.json()["input_config"]["endpoint"]["urls"],
            json!([format!("http://{addr}")])
        );
    }
}

#[test]
fn endpoint_types_shape_payloads_and_report_metrics() {
    let _gate = support::shared();
    // chat: messages
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=1&itl_ms=0",
        "--endpoint-type",
        "chat",
        "--request-count",
        "3",
        "--num-dataset-entries",
        "3",
    ])
    .run();
    run.ok();
    for p in run.payloads() {
        assert_eq!(p["messages"][0]["role"], "user", "{p}");
        assert!(p["messages"][0]["content"].is_string(), "{p}");
        assert!(p.get("prompt").is_none() && p.get("input").is_none(), "{p}");
    }
    assert_eq!(run.stat("request_count", "avg"), 3.0);
    assert_eq!(run.stat("output_sequence_length", "avg"), 16.0);
    assert_eq!(
        run.json()["input_config"]["endpoint"]["custom_endpoint"],
        "/v1/chat/completions"
    );

    // completions: prompt
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=1&itl_ms=0",
        "--endpoint-type",
        "completions",
        "--request-count",
        "3",
        "--num-dataset-entries",
        "3",
    ])
    .run();
    run.ok();
    for p in run.payloads() {
        assert!(p["prompt"].is_string(), "{p}");
        assert!(
            p.get("messages").is_none() && p.get("input").is_none(),
            "{p}"
        );
    }
    assert_eq!(run.stat("request_count", "avg"), 3.0);
    assert_eq!(run.stat("output_sequence_length", "avg"), 16.0);
    assert!(run.stat("request_latency", "avg") > 0.0);

    // embeddings: input
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=1&itl_ms=0",
        "--endpoint-type",
        "embeddings",
        "--isl",
        "20",
        "--request-count",
        "3",
        "--num-dataset-entries",
        "3",
    ])
    .run();
    run.ok();
    for p in run.payloads() {
        assert!(p["input"].is_array(), "{p}");
        assert!(
            p.get("messages").is_none() && p.get("prompt").is_none(),
            "{p}"
        );
    }
    assert_eq!(run.stat("request_count", "avg"), 3.0);
    assert_eq!(run.stat("input_sequence_length", "avg"), 20.0);
    assert!(run.stat("request_latency", "avg") > 0.0);
    assert_eq!(run.stat("error_request_count", "avg"), 0.0);
}

#[test]
fn streaming_adds_ttft_and_itl() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=2&itl_ms=1",
        "--request-count",
        "3",
        "--osl",
        "4",
    ])
    .run();
    run.ok();
    let j = run.json();
    for tag in ["time_to_first_token", "inter_token_latency"] {
        assert!(j.get(tag).is_none(), "{tag} reported without --streaming");
    }
    assert!(j.get("request_latency").is_some());
    for p in run.payloads() {
        assert_eq!(p["stream"], false, "{p}");
    }

    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=2&itl_ms=1",
        "--streaming",
        "--request-count",
        "3",
        "--osl",
        "4",
    ])
    .run();
    run.ok();
    let j = run.json();
    for tag in ["time_to_first_token", "inter_token_latency"] {
        assert_eq!(j[tag]["count"], 3, "{tag} with --streaming: {}", j[tag]);
    }
    for p in run.payloads() {
        assert_eq!(p["stream"], true, "{p}");
    }
    for rec in run.jsonl() {
        assert!(
            rec["metrics"]["time_to_first_token"]["value"].as_f64() > Some(0.0),
            "{rec}"
        );
    }
}

#[test]
fn concurrency_bounds_requests_in_flight() {
    let _gate = support::shared();
    // Requests long enough (~200 ms) that all workers are surely busy at the same time.
    let sequential = Run::profile(&[
        "--url",
        "mock?ttft_ms=200&itl_ms=0&tokens=2",
        "--concurrency",
        "1",
        "--request-count",
        "3",
    ])
    .run();
    sequential.ok();
    assert_eq!(max_overlap(&sequential.jsonl()), 1);

    let parallel = Run::profile(&[
        "--url",
        "mock?ttft_ms=200&itl_ms=0&tokens=2",
        "--concurrency",
        "4",
        "--request-count",
        "8",
    ])
    .run();
    parallel.ok();
    assert_eq!(parallel.jsonl().len(), 8);
    assert_eq!(max_overlap(&parallel.jsonl()), 4);
    assert_eq!(parallel.json()["input_config"]["loadgen"]["concurrency"], 4);
}

#[test]
fn request_count_sets_the_number_of_requests() {
    let _gate = support::shared();
    let server = chat_server();
    let run = Run::profile(&[
        "--url",
        &server.url(),
        "-m",
        "m",
        "--concurrency",
        "2",
        "--request-count",
        "13",
    ])
    .run();
    run.ok();
    assert_eq!(server.requests().len(), 13);
    assert_eq!(run.stat("request_count", "avg"), 13.0);
    assert_eq!(run.jsonl().len(), 13);
}

#[test]
fn warmup_requests_are_recorded_apart() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=1&itl_ms=0",
        "--warmup-request-count",
        "3",
        "--request-count",
        "5",
        "--concurrency",
        "2",
    ])
    .run();
    run.ok();
    let recs = run.jsonl();
    assert_eq!(recs.len(), 8);
    let phase = |r: &Value| {
        r["metadata"]["benchmark_phase"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(recs.iter().filter(|r| phase(r) == "warmup").count(), 3);
    assert_eq!(recs.iter().filter(|r| phase(r) == "profiling").count(), 5);
    let j = run.json();
    assert_eq!(run.stat("request_count", "avg"), 5.0);
    assert_eq!(support::stat_of(&j["warmup"], "request_count", "avg"), 3.0);
    assert_eq!(j["request_latency"]["count"], 5);
    assert_eq!(j["warmup"]["request_latency"]["count"], 3);
}

#[test]
fn isl_sets_the_prompt_length() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=1&itl_ms=0",
        "--isl",
        "37",
        "--request-count",
        "4",
    ])
    .run();
    run.ok();
    assert_eq!(run.stat("input_sequence_length", "avg"), 37.0);
    assert_eq!(run.stat("input_sequence_length", "min"), 37.0);
    assert_eq!(run.stat("input_sequence_length", "max"), 37.0);
    let bpe = tiktoken_rs::o200k_base().unwrap();
    for p in run.payloads().iter().take(10) {
        let text = p["messages"][0]["content"].as_str().unwrap();
        assert_eq!(bpe.encode_ordinary(text).len(), 37, "{text:?}");
    }
}

#[test]
fn osl_sets_max_completion_tokens_and_legacy_flag_switches_to_max_tokens() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=1&itl_ms=0",
        "--osl",
        "7",
        "--request-count",
        "3",
    ])
    .run();
    run.ok();
    for p in run.payloads() {
        assert_eq!(p["max_completion_tokens"], 7, "{p}");
        assert!(p.get("max_tokens").is_none(), "{p}");
    }
    assert_eq!(run.stat("output_sequence_length", "avg"), 7.0);

    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=1&itl_ms=0",
        "--osl",
        "9",
        "--use-legacy-max-tokens",
        "--request-count",
        "3",
    ])
    .run();
    run.ok();
    for p in run.payloads() {
        assert_eq!(p["max_tokens"], 9, "{p}");
        assert!(p.get("max_completion_tokens").is_none(), "{p}");
    }
    assert_eq!(run.stat("output_sequence_length", "avg"), 9.0);
}

#[test]
fn extra_inputs_are_merged_into_payloads() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=1&itl_ms=0",
        "--extra-inputs",
        "temperature:0.25",
        "--extra-inputs",
        "user:alice",
        "--extra-inputs",
        r#"{"top_k": 5, "stop": ["END"], "nested": {"a": true}}"#,
        "--request-count",
        "2",
        "--num-dataset-entries",
        "3",
    ])
    .run();
    run.ok();
    for p in run.payloads() {
        assert_eq!(p["temperature"], 0.25, "{p}");
        assert_eq!(p["user"], "alice", "{p}");
        assert_eq!(p["top_k"], 5, "{p}");
        assert_eq!(p["stop"], json!(["END"]), "{p}");
        assert_eq!(p["nested"], json!({"a": true}), "{p}");
        assert!(p["messages"].is_array(), "the regular fields stay: {p}");
    }
}

#[test]
fn tokenizer_choice_decides_prompt_token_counts() {
    let _gate = support::shared();
    let args = |tok: &str| {
        Run::profile(&[
            "--url",
            "mock?ttft_ms=1&itl_ms=0",
            "--tokenizer",
            tok,
            "--isl",
            "64",
            "--random-seed",
            "5",
            "--num-dataset-entries",
            "8",
            "--request-count",
            "2",
        ])
        .run()
    };
    let o200k = tiktoken_rs::o200k_base().unwrap();
    let cl100k = tiktoken_rs::cl100k_base().unwrap();
    let prompts = |run: &Output| -> Vec<String> {
        run.payloads()
            .iter()
            .map(|p| p["messages"][0]["content"].as_str().unwrap().to_string())
            .collect()
    };

    let run = args("builtin");
    run.ok();
    assert_eq!(run.stat("input_sequence_length", "avg"), 64.0);
    let builtin = prompts(&run);
    for p in &builtin {
        assert_eq!(o200k.encode_ordinary(p).len(), 64, "{p:?}");
    }

    let run = args("builtin:cl100k_base");
    run.ok();
    assert_eq!(run.stat("input_sequence_length", "avg"), 64.0);
    assert_eq!(
        run.json()["input_config"]["input"]["tokenizer"],
        "builtin:cl100k_base"
    );
    let cl = prompts(&run);
    for p in &cl {
        assert_eq!(cl100k.encode_ordinary(p).len(), 64, "{p:?}");
    }
    assert_ne!(builtin, cl, "the tokenizer must change the prompts");
    assert!(
        cl.iter().any(|p| o200k.encode_ordinary(p).len() != 64),
        "cl100k prompts are cut by cl100k, not o200k"
    );

    // The tokenizer is loaded after config::load: checked end to end.
    let bad = Run::profile(&[
        "--url",
        "mock",
        "--tokenizer",
        "no-such-tokenizer",
        "--request-count",
        "1",
    ])
    .run();
    let line = bad.assert_usage_error();
    assert!(line.contains("no-such-tokenizer"), "{line}");
}

#[test]
fn api_key_and_headers_are_sent_and_the_key_stays_out_of_artifacts() {
    let _gate = support::shared();
    let server = chat_server();
    let secret = "sk-test-Zq8u4XUSTTt2";
    let run = Run::profile(&[
        "--url",
        &server.url(),
        "-m",
        "hdr-model",
        "--api-key",
        secret,
        "-H",
        "X-Test-One: one",
        "--header",
        "X-Test-Two: two",
        "-H",
        "X-Multi: a",
        "-H",
        "X-Multi: b",
        "--request-count",
        "3",
    ])
    .run();
    run.ok();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(
            r.header_values("authorization"),
            vec![format!("Bearer {secret}").as_str()]
        );
        assert_eq!(r.header_values("x-test-one"), vec!["one"]);
        assert_eq!(r.header_values("x-test-two"), vec!["two"]);
        let mut multi = r.header_values("x-multi");
        multi.sort_unstable();
        assert_eq!(multi, vec!["a", "b"], "a repeated -H sends every value");
        assert_eq!(r.json()["model"], "hdr-model");
    }
    assert_eq!(run.stat("request_count", "avg"), 3.0);
    assert_eq!(run.stat("output_sequence_length", "avg"), 3.0);
    let files = run.all_files();
    assert!(files.len() >= 4, "{files:?}");
    for (path, bytes) in files {
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(secret),
            "the API key leaked into {}",
            path.display()
        );
    }
}

#[test]
fn api_key_from_the_environment_is_sent() {
    let _gate = support::shared();
    let server = chat_server();
    let run = Run::profile(&["--url", &server.url(), "-m", "m", "--request-count", "1"])
        .env("AIPERF_API_KEY", "sk-from-env-123")
        .run();
    run.ok();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].header_values("authorization"),
        vec!["Bearer sk-from-env-123"]
    );
    for (path, bytes) in run.all_files() {
        assert!(
            !String::from_utf8_lossy(&bytes).contains("sk-from-env-123"),
            "the API key leaked into {}",
            path.display()
        );
    }
}

/// Secret-looking `-H` values are redacted everywhere, the echoed command included.
#[test]
fn secret_header_values_stay_out_of_artifacts() {
    let _gate = support::shared();
    let server = chat_server();
    let run = Run::profile(&[
        "--url",
        &server.url(),
        "-m",
        "m",
        "-H",
        "Authorization: Bearer hdr-secret-AAA111",
        "-H",
        "X-Api-Token: hdr-secret-BBB222",
        "--request-count",
        "1",
    ])
    .run();
    run.ok();
    let reqs = server.requests();
    assert_eq!(
        reqs[0].header_values("authorization"),
        vec!["Bearer hdr-secret-AAA111"]
    );
    for (path, bytes) in run.all_files() {
        let text = String::from_utf8_lossy(&bytes);
        for s in ["hdr-secret-AAA111", "hdr-secret-BBB222"] {
            assert!(
                !text.contains(s),
                "secret header value {s} leaked into {}",
                path.display()
            );
        }
    }
}

#[test]
fn request_timeout_turns_a_stalled_request_into_an_error() {
    let _gate = support::shared();
    let server = stalling_server();
    let run = Run::profile(&[
        "--url",
        &server.url(),
        "-m",
        "m",
        "--request-timeout-seconds",
        "0.5",
        "--request-count",
        "2",
        "--concurrency",
        "2",
    ])
    .run();
    run.expect_code(1);
    assert_eq!(
        server.requests().len(),
        2,
        "both requests reached the server"
    );
    let errors = run.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].1, "RequestTimeout");
    assert_eq!(errors[0].3, 2);
    assert_eq!(
        run.json()["input_config"]["endpoint"]["timeout_seconds"],
        0.5
    );
}

#[test]
fn artifact_dir_is_created_and_used() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("deeply").join("nested").join("out");
    let out = Run::new(&[
        "profile",
        "--url",
        "mock?ttft_ms=1&itl_ms=0",
        "--request-count",
        "2",
        "--ui",
        "none",
        "--artifact-dir",
        dir.to_str().unwrap(),
    ])
    .current_dir(tmp.path())
    .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    for f in [
        "profile_export_aiperf.json",
        "profile_export_aiperf.csv",
        "profile_export.jsonl",
        "inputs.json",
    ] {
        assert!(dir.join(f).is_file(), "missing {f} in {}", dir.display());
    }
    assert!(
        !tmp.path().join("artifacts").exists(),
        "nothing goes to the default directory"
    );
    assert!(out.stdout.contains(dir.to_str().unwrap()), "{}", out.stdout);
}

#[test]
fn default_artifact_dir_is_named_after_model_endpoint_and_load() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let out = Run::new(&[
        "profile",
        "--url",
        "mock?ttft_ms=1&itl_ms=0",
        "--concurrency",
        "3",
        "--request-count",
        "3",
        "--ui",
        "none",
    ])
    .current_dir(tmp.path())
    .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let dir = tmp
        .path()
        .join("artifacts")
        .join("mock-model-openai-chat-concurrency3");
    assert!(
        dir.join("profile_export_aiperf.json").is_file(),
        "{}",
        dir.display()
    );
}

#[test]
fn ui_none_and_simple_both_complete() {
    let _gate = support::shared();
    for ui in ["none", "simple"] {
        let tmp = tempfile::tempdir().unwrap();
        let out = Run::new(&[
            "profile",
            "--url",
            "mock?ttft_ms=1&itl_ms=0",
            "--request-count",
            "3",
            "--warmup-request-count",
            "1",
            "--ui",
            ui,
            "--artifact-dir",
            tmp.path().join("a").to_str().unwrap(),
        ])
        .run();
        assert_eq!(out.code, 0, "--ui {ui}: {}", out.stderr);
        assert!(out.stdout.contains("Request Count"), "{}", out.stdout);
        assert!(tmp.path().join("a/profile_export_aiperf.json").is_file());
    }
}

#[test]
fn random_seed_makes_inputs_reproducible() {
    let _gate = support::shared();
    let run_with = |seed: &str| {
        let run = Run::profile(&[
            "--url",
            "mock?ttft_ms=1&itl_ms=0",
            "--random-seed",
            seed,
            "--isl",
            "30",
            "--isl-stddev",
            "10",
            "--num-dataset-entries",
            "10",
            "--request-count",
            "2",
        ])
        .run();
        run.ok();
        assert_eq!(
            run.json()["input_config"]["input"]["random_seed"]
                .as_u64()
                .unwrap()
                .to_string(),
            seed
        );
        run.read("inputs.json")
    };
    let a = run_with("1234");
    let b = run_with("1234");
    let c = run_with("4321");
    assert_eq!(a, b, "same seed, same inputs.json");
    assert_ne!(a, c, "another seed, other inputs");
}

#[test]
fn endpoint_flag_sets_the_request_path() {
    let _gate = support::shared();
    let server = chat_server();
    for (flag, value, path) in [
        ("--endpoint", "/custom/generate", "/custom/generate"),
        ("--endpoint", "no/leading/slash", "/no/leading/slash"),
        ("--custom-endpoint", "/v9/chat", "/v9/chat"),
    ] {
        let before = server.requests().len();
        let run = Run::profile(&[
            "--url",
            &server.url(),
            "-m",
            "m",
            flag,
            value,
            "--request-count",
            "2",
        ])
        .run();
        run.ok();
        let reqs = server.requests();
        assert_eq!(reqs.len(), before + 2);
        for r in &reqs[before..] {
            assert_eq!(r.path, path, "{flag} {value}");
        }
    }
}

#[test]
fn isl_and_osl_stddev_vary_the_lengths() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=1&itl_ms=0",
        "--isl",
        "40",
        "--isl-stddev",
        "10",
        "--osl",
        "8",
        "--osl-stddev",
        "3",
        "--random-seed",
        "11",
        "--num-dataset-entries",
        "20",
        "--request-count",
        "20",
        "--concurrency",
        "4",
    ])
    .run();
    run.ok();
    let j = run.json();
    assert!(j["input_sequence_length"]["std"].as_f64().unwrap() > 0.0);
    assert!(j["input_sequence_length"]["min"] != j["input_sequence_length"]["max"]);
    let osls: std::collections::HashSet<u64> = run
        .payloads()
        .iter()
        .map(|p| p["max_completion_tokens"].as_u64().unwrap())
        .collect();
    assert!(
        osls.len() > 1,
        "--osl-stddev varies max_completion_tokens: {osls:?}"
    );
    assert!(osls.iter().all(|&o| o >= 1));
    assert!(j["output_sequence_length"]["std"].as_f64().unwrap() > 0.0);
    let bpe = tiktoken_rs::o200k_base().unwrap();
    let isls: Vec<usize> = run
        .payloads()
        .iter()
        .map(|p| {
            bpe.encode_ordinary(p["messages"][0]["content"].as_str().unwrap())
                .len()
        })
        .collect();
    let mean = isls.iter().sum::<usize>() as f64 / isls.len() as f64;
    assert!(
        (mean - 40.0).abs() < 10.0,
        "mean prompt length {mean}: {isls:?}"
    );
}

#[test]
fn num_dataset_entries_sets_the_distinct_prompts() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=1&itl_ms=0",
        "--num-dataset-entries",
        "3",
        "--request-count",
        "7",
    ])
    .run();
    run.ok();
    let data = run.inputs()["data"].as_array().unwrap().clone();
    assert_eq!(data.len(), 3);
    assert_eq!(run.jsonl().len(), 7);
    assert_eq!(run.stat("request_count", "avg"), 7.0);
}

#[test]
fn verbose_logs_more() {
    let _gate = support::shared();
    let has_logs = |stderr: &str| stderr.contains("INFO") || stderr.contains("DEBUG");
    let quiet = Run::profile(&["--url", "mock?ttft_ms=1&itl_ms=0", "--request-count", "1"]).run();
    quiet.ok();
    assert!(!has_logs(&quiet.stderr), "{}", quiet.stderr);
    for flag in ["-v", "--verbose"] {
        let loud = Run::profile(&[
            "--url",
            "mock?ttft_ms=1&itl_ms=0",
            "--request-count",
            "1",
            flag,
        ])
        .run();
        loud.ok();
        assert!(
            has_logs(&loud.stderr),
            "{flag} shows info/debug logs: {}",
            loud.stderr
        );
    }
}

#[test]
fn benchmark_duration_stops_sending_and_grace_period_bounds_the_drain() {
    let _gate = support::shared();
    // Requests take 1 s; sending stops after 0.3 s, with two requests in flight.
    let args = |grace: &str| {
        Run::profile(&[
            "--url",
            "mock?ttft_ms=1000&itl_ms=0&tokens=2",
            "--benchmark-duration",
            "0.3",
            "--benchmark-grace-period",
            grace,
            "--concurrency",
            "2",
        ])
        .run()
    };
    // A grace period long enough: the two in-flight requests finish, nothing else is sent.
    let run = args("10");
    run.ok();
    assert_eq!(run.stat("request_count", "avg"), 2.0);
    assert_eq!(run.stat("error_request_count", "avg"), 0.0);
    assert_eq!(
        run.json()["input_config"]["loadgen"]["benchmark_duration"],
        0.3
    );

    // No grace period: they are cancelled and counted as errors.
    let run = args("0");
    run.expect_code(1);
    assert_eq!(run.stat("request_count", "avg"), 0.0);
    assert_eq!(run.stat("error_request_count", "avg"), 2.0);
    let errors = run.errors();
    assert!(!errors.is_empty());
    for (code, kind, _, _) in &errors {
        assert_eq!(*code, Some(499));
        assert_eq!(kind, "RequestCancellationError");
    }
    assert_eq!(errors.iter().map(|e| e.3).sum::<u64>(), 2);
    for r in run.jsonl() {
        assert_eq!(r["metadata"]["was_cancelled"], true, "{r}");
    }
}

#[test]
fn request_rate_paces_the_requests() {
    let _gate = support::shared();
    for (mode, min_span_s) in [("constant", 0.35), ("poisson", 0.1)] {
        // 11 requests at 20/s: 10 gaps, 0.5 s on average. Even Poisson arrivals spread
        // over less than 0.1 s have a chance below 1e-4.
        let run = Run::profile(&[
            "--url",
            "mock?ttft_ms=1&itl_ms=0&tokens=2",
            "--request-rate",
            "20",
            "--request-rate-mode",
            mode,
            "--concurrency",
            "11",
            "--request-count",
            "11",
            "--random-seed",
            "3",
        ])
        .run();
        run.ok();
        let mut starts: Vec<u64> = run
            .jsonl()
            .iter()
            .map(|r| r["metadata"]["request_start_ns"].as_u64().unwrap())
            .collect();
        starts.sort_unstable();
        let span = (starts[10] - starts[0]) as f64 / 1e9;
        assert!(
            span >= min_span_s,
            "{mode}: 11 requests at 20/s started within {span:.3} s"
        );
        assert_eq!(
            run.json()["input_config"]["loadgen"]["request_rate_mode"],
            mode
        );
    }
}

/// `--workers-max` (and AIPerf's alias `--max-workers`, and `workers_max:` in a config file)
/// caps the runtime's worker threads, at most one per core; without it there is one per
/// core. `client_health.worker_threads` is the runtime's own count.
#[test]
fn workers_max_caps_the_runtimes_worker_threads() {
    let _gate = support::shared();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let workers = |extra: &[&str]| -> u64 {
        let mut args = vec![
            "-m",
            "m",
            "--url",
            "mock?ttft_ms=1&itl_ms=1",
            "--streaming",
            "--osl",
            "4",
            "--request-count",
            "8",
            "--concurrency",
            "2",
        ];
        args.extend(extra);
        let out = Run::profile(&args).run();
        out.ok();
        let j = out.json();
        j["client_health"]["worker_threads"]
            .as_u64()
            .unwrap_or_else(|| panic!("no worker_threads: {}", j["client_health"]))
    };
    assert_eq!(workers(&["--workers-max", "1"]), 1);
    assert_eq!(
        workers(&["--max-workers", "4096"]),
        cores,
        "capped at the cores"
    );
    assert_eq!(workers(&[]), cores, "one per core by default");
    let tmp = tempfile::tempdir().unwrap();
    let file = support::write_file(
        tmp.path(),
        "bench.yaml",
        "benchmark:\n  url: \"mock?ttft_ms=1&itl_ms=1\"\n  model: m\n  request_count: 4\n  workers_max: 1\n",
    );
    assert_eq!(workers(&["--config", file.to_str().unwrap()]), 1);
}
