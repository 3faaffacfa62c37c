//! The YAML config file: `aiperf --config FILE`, `aiperf profile --config FILE`, CLI
//! overrides, `${VAR}` substitution, and its error messages. Config errors are checked in
//! process (`config::load`); `a_config_error_exits_2_with_one_error_line` checks the binary.

use crate::support::{self, config_error, write_file, Output, Run};

/// The model of every payload in `inputs.json`.
fn payload_models(run: &Output) -> Vec<String> {
    run.payloads()
        .iter()
        .map(|p| p["model"].as_str().unwrap().to_string())
        .collect()
}

/// Runs `[profile] --config FILE EXTRA... --ui none --artifact-dir DIR` in a tempdir holding
/// FILE (`bench.yaml`).
fn run_config(
    subcommand: bool,
    yaml: &str,
    extra: &[&str],
    env: &[(&str, &str)],
    unset: &[&str],
) -> Output {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_file(tmp.path(), "bench.yaml", yaml);
    let mut args: Vec<String> = Vec::new();
    if subcommand {
        args.push("profile".into());
    }
    args.push("--config".into());
    args.push(file.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut cmd = Run::new(&args).with_artifacts().current_dir(tmp.path());
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    for k in unset {
        cmd = cmd.env_remove(k);
    }
    cmd.run()
}

/// `config::load(--config FILE)` for a `bench.yaml` holding `yaml` must fail; returns the
/// message.
fn file_error(yaml: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_file(tmp.path(), "bench.yaml", yaml);
    config_error(&["--config", file.to_str().unwrap()])
}

const BASIC: &str = "\
benchmark:
  url: mock?ttft_ms=1&itl_ms=0
  model: file-model
  request_count: 5
  concurrency: 2
  osl: 6
  extra_inputs:
    temperature: 0.5
";

#[test]
fn config_works_with_and_without_the_profile_subcommand() {
    let _gate = support::shared();
    for subcommand in [false, true] {
        let run = run_config(subcommand, BASIC, &[], &[], &[]);
        run.ok();
        let j = run.json();
        assert_eq!(j["request_count"]["avg"], 5.0, "subcommand={subcommand}");
        assert_eq!(j["output_sequence_length"]["avg"], 6.0);
        assert_eq!(j["input_config"]["loadgen"]["concurrency"], 2);
        assert!(payload_models(&run).iter().all(|m| m == "file-model"));
        let text = std::fs::read_to_string(run.dir.join("inputs.json")).unwrap();
        assert!(text.contains("\"temperature\":0.5"), "extra_inputs mapping");
    }
}

#[test]
fn cli_flags_after_the_file_override_it() {
    let _gate = support::shared();
    let run = run_config(
        false,
        BASIC,
        &["--request-count", "7", "-m", "cli-model"],
        &[],
        &[],
    );
    run.ok();
    let j = run.json();
    assert_eq!(j["request_count"]["avg"], 7.0);
    assert_eq!(j["input_config"]["loadgen"]["request_count"], 7);
    assert!(payload_models(&run).iter().all(|m| m == "cli-model"));
    // Keys the CLI did not give still come from the file.
    assert_eq!(j["output_sequence_length"]["avg"], 6.0);
    let lines = std::fs::read_to_string(run.dir.join("profile_export.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 7);

    let run = run_config(true, BASIC, &["--request-count", "3"], &[], &[]);
    run.ok();
    assert_eq!(run.json()["request_count"]["avg"], 3.0);
}

#[test]
fn environment_variables_are_substituted() {
    let _gate = support::shared();
    let yaml = "\
benchmark:
  url: mock?ttft_ms=1&itl_ms=0
  model: ${AIPERF_IT_MODEL_NAME}
  request_count: ${AIPERF_IT_REQUESTS:-4}
  osl: ${AIPERF_IT_OSL:-3}
";
    let run = run_config(
        false,
        yaml,
        &[],
        &[
            ("AIPERF_IT_MODEL_NAME", "env-model"),
            ("AIPERF_IT_OSL", "5"),
        ],
        &["AIPERF_IT_REQUESTS"],
    );
    run.ok();
    let j = run.json();
    assert!(payload_models(&run).iter().all(|m| m == "env-model"));
    assert_eq!(j["request_count"]["avg"], 4.0, "default used when unset");
    assert_eq!(j["output_sequence_length"]["avg"], 5.0, "set value wins");

    let run = run_config(
        true,
        yaml,
        &[],
        &[
            ("AIPERF_IT_MODEL_NAME", "env-model-2"),
            ("AIPERF_IT_REQUESTS", "2"),
        ],
        &["AIPERF_IT_OSL"],
    );
    run.ok();
    let j = run.json();
    assert!(payload_models(&run).iter().all(|m| m == "env-model-2"));
    assert_eq!(j["request_count"]["avg"], 2.0);
    assert_eq!(j["output_sequence_length"]["avg"], 3.0);
}

#[test]
fn missing_variable_without_default_is_a_config_error() {
    let _gate = support::shared();
    let var = "AIPERF_IT_SURELY_NOT_SET_VAR";
    assert!(std::env::var_os(var).is_none(), "{var} must not be set");
    let yaml = "\
benchmark:
  url: mock
  model: ${AIPERF_IT_SURELY_NOT_SET_VAR}
  request_count: 1
";
    let line = file_error(yaml);
    assert!(line.contains(var), "{line}");
}

#[test]
fn unknown_key_names_file_line_key_and_suggestion() {
    let _gate = support::shared();
    let yaml = "\
# a comment
benchmark:
  url: mock
  model: m

  request_cont: 5
";
    let line = file_error(yaml);
    assert!(line.contains("bench.yaml:6"), "file and line: {line}");
    assert!(line.contains("request_cont"), "the key: {line}");
    assert!(line.contains("request_count"), "a suggestion: {line}");

    // Another misspelling.
    let yaml = "benchmark:\n  url: mock\n  concurency: 4\n";
    let line = file_error(yaml);
    assert!(line.contains("bench.yaml:3"), "{line}");
    assert!(line.contains("concurency"), "{line}");
    assert!(line.contains("`concurrency`"), "{line}");
}

#[test]
fn unknown_top_level_section_is_a_config_error() {
    let _gate = support::shared();
    let yaml = "benchmark:\n  url: mock\nplugin:\n  x: {}\n";
    let line = file_error(yaml);
    assert!(line.contains("bench.yaml:3"), "{line}");
    assert!(line.contains("plugins"), "suggests `plugins`: {line}");
}

#[test]
fn plugins_section_parses() {
    let _gate = support::shared();
    let yaml = "\
benchmark:
  url: mock?ttft_ms=1&itl_ms=0
  request_count: 2
plugins:
  example_off:
    enabled: false
    some_setting: 3
  needs_a_secret:
    enabled: false
    api_key: ${AIPERF_IT_PLUGIN_SECRET_UNSET}
";
    let run = run_config(false, yaml, &[], &[], &["AIPERF_IT_PLUGIN_SECRET_UNSET"]);
    run.ok();
    assert_eq!(run.json()["request_count"]["avg"], 2.0);

    let yaml = "benchmark:\n  url: mock?ttft_ms=1&itl_ms=0\n  request_count: 1\nplugins:\n";
    let run = run_config(true, yaml, &[], &[], &[]);
    run.ok();
}

#[test]
fn bad_value_in_the_file_points_at_its_line() {
    let _gate = support::shared();
    let yaml = "benchmark:\n  url: mock\n  request_count: 1\n  concurrency: lots\n";
    let line = file_error(yaml);
    assert!(line.contains("bench.yaml:4"), "{line}");
    assert!(line.contains("concurrency"), "{line}");
}

#[test]
fn missing_config_file_is_a_config_error() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope.yaml");
    let line = config_error(&["--config", missing.to_str().unwrap()]);
    assert!(line.contains("nope.yaml"), "{line}");
}

/// End to end: a config error from `aiperf --config FILE` (no `profile`) is exit code 2 and
/// one `error: ` line on stderr, and nothing is written.
#[test]
fn a_config_error_exits_2_with_one_error_line() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope.yaml");
    let out = Run::new(&["--config", missing.to_str().unwrap()])
        .with_artifacts()
        .current_dir(tmp.path())
        .run();
    let line = out.assert_usage_error();
    assert!(line.contains("nope.yaml"), "{line}");
    assert!(!out.dir.exists(), "nothing is written on a config error");
}

#[test]
fn booleans_lists_and_secrets_from_the_file() {
    let _gate = support::shared();
    let server = support::chat_server();
    let yaml = format!(
        "\
benchmark:
  url: {}
  model: m
  request_count: 2
  api_key: ${{AIPERF_IT_FILE_KEY}}
  header:
    - 'X-From-File: yes'
    - 'X-Second: 2'
  use_legacy_max_tokens: true
  osl: 4
",
        server.url()
    );
    let run = run_config(
        false,
        &yaml,
        &[],
        &[("AIPERF_IT_FILE_KEY", "sk-file-9f8e7d")],
        &[],
    );
    run.ok();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert_eq!(
            r.header_values("authorization"),
            vec!["Bearer sk-file-9f8e7d"]
        );
        assert_eq!(r.header_values("x-from-file"), vec!["yes"]);
        assert_eq!(r.header_values("x-second"), vec!["2"]);
        assert_eq!(r.json()["max_tokens"], 4, "boolean key applied");
        assert!(r.json().get("max_completion_tokens").is_none());
    }
    for entry in std::fs::read_dir(&run.dir).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        assert!(
            !text.contains("sk-file-9f8e7d"),
            "the API key leaked into {}",
            entry.path().display()
        );
    }

    let yaml =
        "benchmark:\n  url: mock?ttft_ms=1&itl_ms=0\n  request_count: 2\n  streaming: true\n";
    let run = run_config(true, yaml, &[], &[], &[]);
    run.ok();
    assert_eq!(run.json()["time_to_first_token"]["count"], 2);
}

#[test]
fn plugin_flags_decide_what_a_broken_plugin_does() {
    let _gate = support::shared();
    let yaml = "\
benchmark:
  url: mock?ttft_ms=1&itl_ms=0
  request_count: 2
plugins:
  aiperf_it_missing_plugin:
    path: /nonexistent/aiperf-it-plugin
";
    // By default a plugin that cannot start is skipped with a warning; the run goes on.
    let run = run_config(false, yaml, &[], &[], &[]);
    run.ok();
    assert_eq!(run.json()["request_count"]["avg"], 2.0);
    assert!(
        run.stderr.contains("aiperf_it_missing_plugin"),
        "a warning names the plugin: {}",
        run.stderr
    );

    // --strict-plugins: any plugin failure is an error.
    let run = run_config(false, yaml, &["--strict-plugins"], &[], &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("error: ") && l.contains("aiperf_it_missing_plugin")),
        "{}",
        run.stderr
    );

    // --no-plugins: nothing is started, so nothing fails.
    let run = run_config(true, yaml, &["--no-plugins", "--strict-plugins"], &[], &[]);
    run.ok();
    // (Only the plugins' warnings: on a loaded machine the client-health verdict may warn.)
    assert!(
        !run.stderr
            .lines()
            .any(|l| l.contains("plugin") || l.contains("aiperf_it_missing_plugin")),
        "no plugin warnings with --no-plugins: {}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------------------
// Every number validated (the bounds are in `aiperf::units` and docs/config.md)
// ---------------------------------------------------------------------------------------

/// Every numeric `profile` flag, values it must reject, its largest accepted value, and
/// flags that value needs to be loadable (the synthetic dataset's size is bounded too).
const NUMERIC_FLAGS: &[(&str, &[&str], &str, &[&str])] = &[
    // Conversation Input.
    (
        "conversation-num",
        &["0", "1000000001", "2.5"],
        "1000000000",
        &[],
    ),
    (
        "num-warmup-sessions",
        &["0", "1000000001"],
        "1000000000",
        &[],
    ),
    (
        "conversation-turn-mean",
        &["0", "100001", "2.5"],
        "100000",
        &["--isl", "1", "--num-dataset-entries", "1"],
    ),
    (
        "conversation-turn-stddev",
        &["100001", "0.5"],
        "100000",
        &[],
    ),
    (
        "conversation-turn-delay-mean",
        &["10000000001"],
        "10000000000",
        &[],
    ),
    (
        "conversation-turn-delay-stddev",
        &["10000000001"],
        "10000000000",
        &[],
    ),
    (
        "conversation-turn-delay-ratio",
        &["1000001"],
        "1000000",
        &[],
    ),
    (
        "shared-system-prompt-length",
        &["0", "1000001"],
        "1000000",
        &[],
    ),
    (
        "user-context-prompt-length",
        &["0", "1000001"],
        "1000000",
        &["--num-dataset-entries", "1"],
    ),
    // Token counts: 1 ..= 1,000,000.
    (
        "isl",
        &["0", "1000001", "1000000000", "2.5"],
        "1000000",
        &[],
    ),
    ("osl", &["0", "1000001", "4294967296"], "1000000", &[]),
    ("isl-stddev", &["1e308", "1000001"], "1000000", &[]),
    (
        "osl-stddev",
        &["1e308", "1000001"],
        "1000000",
        &["--osl", "5"],
    ),
    ("isl-block-size", &["0", "1000001"], "1000000", &[]),
    (
        "prefix-prompt-length",
        &["1000001"],
        "1000000",
        &["--num-prefix-prompts", "1"],
    ),
    (
        "num-prefix-prompts",
        &["100001"],
        "100000",
        &["--prefix-prompt-length", "2", "--isl", "1"],
    ),
    (
        "num-dataset-entries",
        &["0", "10000001"],
        "10000000",
        &["--isl", "1"],
    ),
    (
        "batch-size",
        &["0", "100001"],
        "100000",
        &[
            "--endpoint-type",
            "embeddings",
            "--num-dataset-entries",
            "1",
        ],
    ),
    // Counts.
    ("request-count", &["0", "1000000001"], "1000000000", &[]),
    ("warmup-request-count", &["1000000001"], "1000000000", &[]),
    ("concurrency", &["0", "1000001"], "1000000", &[]),
    ("workers-max", &["0", "4097", "1.5"], "4096", &[]),
    ("warmup-concurrency", &["0", "1000001"], "1000000", &[]),
    // Rates and factors.
    (
        "request-rate",
        &["0", "1e-20", "0.0009", "10000001"],
        "10000000",
        &[],
    ),
    (
        "warmup-request-rate",
        &["0", "1e-20", "10000001"],
        "10000000",
        &[],
    ),
    (
        "arrival-smoothness",
        &["0", "0.0009", "1000001"],
        "1000000",
        &[],
    ),
    (
        "replay-speedup",
        &["0", "0.0009", "1000001"],
        "1000000",
        &[],
    ),
    ("request-cancellation-rate", &["100.5", "1e20"], "100", &[]),
    (
        "fixed-schedule-start-offset",
        &["1e16", "1e300"],
        "1000000000000000",
        &[],
    ),
    (
        "fixed-schedule-end-offset",
        &["1e16", "1e300"],
        "1000000000000000",
        &[],
    ),
    // Durations (`units::seconds` / `positive_seconds`, at most 10,000,000 s).
    (
        "request-timeout-seconds",
        &["0", "10000001"],
        "10000000",
        &[],
    ),
    ("benchmark-duration", &["0", "10000001"], "10000000", &[]),
    ("benchmark-grace-period", &["10000001"], "10000000", &[]),
    ("warmup-duration", &["0", "10000001"], "10000000", &[]),
    (
        "request-rate-ramp-duration",
        &["0", "10000001"],
        "10000000",
        &["--request-rate", "1"],
    ),
    (
        "concurrency-ramp-duration",
        &["0", "10000001"],
        "10000000",
        &[],
    ),
    ("request-cancellation-delay", &["10000001"], "10000000", &[]),
    // Output.
    (
        "slice-duration",
        &["0", "0.0009", "10000001"],
        "10000000",
        &[],
    ),
];

/// Rejected by every numeric flag.
const ALWAYS_BAD: &[&str] = &["nan", "inf", "-inf", "-1", "1e20", "1e300", "abc", ""];

/// Each bad value is a one-line error naming the flag on the command line, and naming the
/// file, line and key in a config file; the bound itself is accepted.
#[test]
fn every_numeric_flag_rejects_non_finite_negative_and_absurd_values() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    for (flag, bad, max, needs) in NUMERIC_FLAGS {
        let key = flag.replace('-', "_");
        for value in ALWAYS_BAD.iter().chain(bad.iter()) {
            let line = config_error(&[
                "--url".to_string(),
                "mock".to_string(),
                format!("--{flag}={value}"),
            ]);
            assert!(
                line.contains(&format!("--{flag}")),
                "--{flag}={value}: {line}"
            );

            // YAML: quoted so that the text reaches the parser as written, and plain.
            for written in [format!("'{value}'"), value.to_string()] {
                if written.is_empty() {
                    continue; // `key:` alone leaves the flag unset
                }
                let file = write_file(
                    tmp.path(),
                    "bench.yaml",
                    &format!("benchmark:\n  url: mock\n  {key}: {written}\n"),
                );
                let line = config_error(&["--config", file.to_str().unwrap()]);
                assert!(
                    line.contains(&format!("{}:3:", file.display())) && line.contains(&key),
                    "{key}: {written} in YAML: {line}"
                );
            }
        }
        let mut args = vec![
            "--url".to_string(),
            "mock".to_string(),
            format!("--{flag}={max}"),
        ];
        args.extend(needs.iter().map(|s| s.to_string()));
        if let Err(e) = aiperf::config::load(&args) {
            panic!("--{flag}={max} is the bound and must be accepted: {e}");
        }
    }
}

/// YAML's own spellings of non-finite floats are rejected too, at their line.
#[test]
fn yaml_nan_and_inf_are_rejected_at_their_line() {
    let _gate = support::shared();
    for value in [".nan", ".inf", "-.inf", ".NaN", "1e400"] {
        for key in [
            "isl_stddev",
            "osl_stddev",
            "request_rate",
            "benchmark_duration",
        ] {
            let line = file_error(&format!(
                "benchmark:\n  url: mock\n  model: m\n  {key}: {value}\n"
            ));
            assert!(
                line.contains("bench.yaml:4:") && line.contains(key),
                "{key}: {value}: {line}"
            );
        }
    }
}

#[test]
fn a_synthetic_dataset_too_large_to_build_is_a_config_error() {
    let _gate = support::shared();
    let line = config_error(&[
        "--url",
        "mock",
        "--isl",
        "1000000",
        "--num-dataset-entries",
        "10000",
    ]);
    assert!(
        line.contains("tokens") && line.contains("1000000000"),
        "{line}"
    );
    let line = config_error(&[
        "--url",
        "mock",
        "--endpoint-type",
        "embeddings",
        "--batch-size",
        "100000",
    ]);
    assert!(line.contains("--batch-size"), "{line}");
}

/// A key given twice is reported at the repeat's line (serde_yaml points at the mapping).
#[test]
fn a_repeated_key_is_reported_at_its_second_line() {
    let _gate = support::shared();
    let line =
        file_error("benchmark:\n  url: mock\n  concurrency: 3\n  isl: 5\n  concurrency: 4\n");
    assert!(line.contains("bench.yaml:5:"), "{line}");
    assert!(
        line.contains("duplicate key `concurrency`") && line.contains("line 3"),
        "{line}"
    );

    let line = file_error("benchmark:\n  url: mock\nplugins: {}\nbenchmark:\n  isl: 3\n");
    assert!(
        line.contains("bench.yaml:4:") && line.contains("`benchmark`"),
        "{line}"
    );

    let line = file_error("plugins:\n  p:\n    x: 1\n    y:\n      - a: 1\n        a: 2\n");
    assert!(
        line.contains("bench.yaml:6:") && line.contains("`a`"),
        "{line}"
    );

    // An alias and its flag's own key set the same flag.
    let line = file_error("benchmark:\n  url: mock\n  request_count: 3\n  num_requests: 4\n");
    assert!(line.contains("bench.yaml:4:"), "{line}");
    assert!(
        line.contains("request_count") && line.contains("line 3"),
        "{line}"
    );
}

/// End to end: the reproductions that panicked (exit 101) exit 2 with one line, nothing sent.
#[test]
fn absurd_numbers_exit_2_before_anything_is_sent() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let out = Run::profile(&["--url", "mock", "--isl-stddev", "nan"]).run();
    let line = out.assert_usage_error();
    assert!(line.contains("--isl-stddev"), "{line}");

    let file = write_file(
        tmp.path(),
        "sessions.jsonl",
        "{\"turns\": [{\"text\": \"a\"}]}\n{\"turns\": [{\"text\": \"a\"}, {\"text\": \"b\", \"delay\": 1e300}]}\n",
    );
    let out = Run::profile(&[
        "--url",
        "mock",
        "--input-file",
        file.to_str().unwrap(),
        "--custom-dataset-type",
        "multi_turn",
    ])
    .run();
    let line = out.assert_usage_error();
    assert!(line.contains(&format!("{}:2:", file.display())), "{line}");
    assert!(line.contains("delay"), "{line}");
    assert!(
        !out.dir.join("profile_export.jsonl").exists(),
        "nothing was sent"
    );
}
