//! Turns the command line and the YAML config file into one validated [`BenchmarkConfig`]:
//! typed sections, each owned by the module that consumes it (`endpoint`, `dataset`,
//! `timing`, `export`, `plugin`), and serialized (secrets hidden) as the export's
//! `input_config`.
//!
//! `file.rs` reads the file (its keys are the `profile` flags, checked by the same clap
//! definition), `env.rs` substitutes `${VAR}`, `plugins.rs` reads the `plugins:` section,
//! `resolve.rs` gives parsed flags their meaning, `command.rs` echoes the command line.

mod command;
pub mod env;
mod file;
mod plugins;
mod resolve;

use std::collections::HashSet;
use std::path::Path;

use clap::parser::ValueSource;
use clap::FromArgMatches;
use serde::Serialize;

use crate::cli::ProfileArgs;
use crate::dataset::{DatasetError, InputSpec};
use crate::endpoint::EndpointSpec;
use crate::export::OutputSpec;
use crate::plugin::PluginsSection;
use crate::timing::LoadSpec;
use crate::tokenizer::TokenizerError;
use file::{first_line, profile_command, read_config_file};

/// A usage or configuration error: printed as one line, exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Usage(String),
    #[error("{file}:{line}: {message}")]
    File {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}: {message}")]
    FileWhole { file: String, message: String },
    /// `--tokenizer` could not be loaded (a failed hub download included).
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// `--input-file` could not be read or has a bad line.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
}

fn usage(msg: impl Into<String>) -> ConfigError {
    ConfigError::Usage(msg.into())
}

/// The fully resolved benchmark settings. Serialized, it is the export's `input_config`
/// (secrets hidden by the sections' serializers).
#[derive(Debug, Clone, Serialize)]
pub struct BenchmarkConfig {
    pub endpoint: EndpointSpec,
    pub input: InputSpec,
    #[serde(rename = "loadgen")]
    pub load: LoadSpec,
    pub output: OutputSpec,
    pub plugins: PluginsSection,
    /// Server metrics and GPU telemetry (docs/server-metrics.md).
    pub server_metrics: crate::servermetrics::ServerMetricsSpec,
    /// The command line as typed, secrets hidden.
    pub cli_command: String,
    /// `--search-recipe`: run a search of benchmarks instead of one (docs/sweeps.md#search).
    #[serde(skip)]
    pub search: Option<crate::search::SearchSpec>,
    /// Comma lists and the Multi-Run flags (docs/sweeps.md). The other sections hold the
    /// first point's values; `multirun` sets each point's. Not part of `input_config`: each
    /// run's config shows its own point.
    #[serde(skip)]
    pub sweep: crate::sweep::SweepSpec,
    /// `--shard`, `--run-id`, `--start-at` (docs/scale-out.md). Not part of `input_config`:
    /// every shard of a run has the same one; the report's `shard` section says which it was.
    #[serde(skip)]
    pub scale: crate::shard::ScaleSpec,
}

/// Loads only the `plugins:` section of a config file (for `aiperf plugins ...`).
pub fn load_plugins_section(path: Option<&Path>) -> Result<PluginsSection, ConfigError> {
    match path {
        Some(p) => Ok(read_config_file(p)?.plugins),
        None => Ok(PluginsSection::default()),
    }
}

/// Parses `profile` arguments (everything after `profile`), merging the config file: flags
/// given on the command line win over the file's.
pub fn load(cli_args: &[String]) -> Result<BenchmarkConfig, ConfigError> {
    let parse_error = |e: clap::Error| usage(first_line(&e.to_string()));
    if let Some(why) = crate::cli::aiperf_options::first_refusal(cli_args, &profile_command()) {
        return Err(usage(why));
    }
    let cli_matches = profile_command()
        .try_get_matches_from(cli_args)
        .map_err(parse_error)?;
    let cli = ProfileArgs::from_arg_matches(&cli_matches).map_err(parse_error)?;

    let mut merged_args: Vec<String> = Vec::new();
    let mut plugins = PluginsSection::default();
    if let Some(path) = &cli.config {
        let file = read_config_file(path)?;
        let given: HashSet<String> = profile_command()
            .get_arguments()
            .filter(|a| {
                cli_matches.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine)
            })
            .filter_map(|a| a.get_long().map(str::to_string))
            .collect();
        for (long, args, _line) in file.flags {
            if !given.contains(&long) {
                merged_args.extend(args);
            }
        }
        plugins = file.plugins;
    }
    merged_args.extend(cli_args.iter().cloned());
    let matches = profile_command()
        .try_get_matches_from(&merged_args)
        .map_err(parse_error)?;
    let args = ProfileArgs::from_arg_matches(&matches).map_err(parse_error)?;
    resolve::resolve(args, plugins, command::redacted_command(cli_args))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::DisabledReason;
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    }

    /// An AIPerf option this tool does not support is refused with the reason, as a flag
    /// (with or without `=value`) and as a config-file key (at its line); AIPerf's aliases of
    /// supported flags work in both places.
    /// A comma list sweeps; a repeated flag still means its last value (as before lists),
    /// and a file's YAML list is the same comma list.
    #[test]
    fn comma_lists_sweep_and_a_repeated_flag_is_its_last_value() {
        let c = load(&args(&[
            "--url",
            "mock",
            "--concurrency",
            "1,4",
            "--isl",
            "64,128",
        ]))
        .unwrap();
        assert_eq!(
            (c.sweep.concurrency.as_slice(), c.sweep.isl.as_slice()),
            (&[1, 4][..], &[64, 128][..])
        );
        assert_eq!(
            (c.load.concurrency, c.input.prompt.input_tokens.mean),
            (Some(1), 64)
        );
        assert!(c.sweep.is_multi());
        let c = load(&args(&[
            "--url",
            "mock",
            "--concurrency",
            "1",
            "--concurrency",
            "3",
        ]))
        .unwrap();
        assert_eq!(
            (c.load.concurrency, c.sweep.concurrency.as_slice()),
            (Some(3), &[3][..])
        );
        assert!(!c.sweep.is_multi());
        let f = write("benchmark:\n  url: mock\n  concurrency: [2, 8]\n  osl: [16]\n");
        let c = load(&args(&["--config", f.path().to_str().unwrap()])).unwrap();
        assert_eq!(c.sweep.concurrency, [2, 8]);
        assert_eq!(c.input.prompt.output_tokens.mean, Some(16));
        // The command line wins over the file's list.
        let c = load(&args(&[
            "--config",
            f.path().to_str().unwrap(),
            "--concurrency",
            "5",
        ]))
        .unwrap();
        assert_eq!(c.sweep.concurrency, [5]);
    }

    #[test]
    fn aiperf_options_refused_with_reason_or_accepted_as_aliases() {
        let e = load(&args(&["--url", "mock", "--audio-format", "wav"])).unwrap_err();
        assert!(
            e.to_string().contains("`--audio-format`") && e.to_string().contains("no audio"),
            "{e}"
        );
        let e = load(&args(&["--url", "mock", "--stats-interval=1"])).unwrap_err();
        assert!(e.to_string().contains("issue 16"), "{e}");
        // Supported now: `--server-metrics=URL` and its YAML list.
        let c = load(&args(&["--url", "mock", "--server-metrics=x:9100"])).unwrap();
        assert_eq!(c.server_metrics.urls, ["http://x:9100/metrics"]);
        let f = write("benchmark:\n  url: mock\n  search_metric: goodput\n");
        let e = load(&args(&["--config", f.path().to_str().unwrap()])).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(":3: `search_metric`") && msg.contains("no Bayesian recipes"),
            "{msg}"
        );
        let c = load(&args(&[
            "--url",
            "mock",
            "--prompt-input-tokens-mean",
            "64",
            "--prompt-output-tokens-mean",
            "8",
            "--num-warmup-requests",
            "2",
            "--output-artifact-dir",
            "d",
            "--vllm-burstiness",
            "2",
            "--extra-inputs",
            "temperature:0.5",
            "top_p:0.9",
            "--profile-export-file",
            "foo.json",
            "--export-level",
            "summary",
        ]))
        .unwrap();
        assert_eq!(c.input.prompt.input_tokens.mean, 64);
        assert_eq!(c.input.prompt.output_tokens.mean, Some(8));
        assert_eq!(c.load.warmup_request_count, 2);
        assert_eq!(c.output.artifact_directory, std::path::PathBuf::from("d"));
        assert_eq!(c.endpoint.extra_inputs.len(), 2, "two pairs in one flag");
        assert_eq!(c.output.names.json, "foo.json");
        assert_eq!(c.output.names.jsonl, "foo.jsonl");
        assert!(!c.output.writes_records());
        let e = load(&args(&["--url", "mock", "--export-level", "raw"])).unwrap_err();
        assert!(e.to_string().contains("not supported"), "{e}");
        let e = load(&args(&["--url", "mock", "--profile-export-prefix", "a/b"])).unwrap_err();
        assert!(e.to_string().contains("--artifact-dir"), "{e}");
    }

    #[test]
    fn url_gets_a_scheme() {
        assert_eq!(
            resolve::normalize_url("localhost:8000"),
            "http://localhost:8000"
        );
        assert_eq!(resolve::normalize_url("https://x.io/"), "https://x.io");
    }

    #[test]
    fn extra_inputs_accept_pairs_and_json() {
        let m =
            resolve::parse_extra_inputs(&args(&["temperature:0.5", "stop:end", r#"{"top_k": 3}"#]))
                .unwrap();
        assert_eq!(m["temperature"], serde_json::json!(0.5));
        assert_eq!(m["stop"], serde_json::json!("end"));
        assert_eq!(m["top_k"], serde_json::json!(3));
        assert!(resolve::parse_extra_inputs(&args(&["novalue"])).is_err());
    }

    #[test]
    fn file_values_and_cli_overrides() {
        let f = write("benchmark:\n  model: m1\n  concurrency: 3\n  streaming: true\n  url: [a:1]\n  header: ['X-A: 1']\nplugins:\n  foo:\n    x: 1\n");
        let p = f.path().to_str().unwrap();
        let c = load(&args(&["--config", p, "--concurrency", "7"])).unwrap();
        assert_eq!(c.endpoint.model(), "m1");
        assert_eq!(c.load.concurrency, Some(7));
        assert!(c.endpoint.streaming);
        assert_eq!(c.endpoint.urls, vec!["http://a:1"]);
        assert_eq!(
            c.endpoint.headers,
            vec![("X-A".to_string(), "1".to_string())]
        );
        assert_eq!(c.plugins.entries.len(), 1);
        assert_eq!(c.plugins.entries[0].config, serde_json::json!({"x": 1}));
        let c = load(&args(&["--config", p, "--url", "b:2"])).unwrap();
        assert_eq!(
            c.endpoint.urls,
            vec!["http://b:2"],
            "a CLI list replaces the file's"
        );
    }

    #[test]
    fn unknown_key_names_file_line_and_suggestion() {
        let f = write("benchmark:\n  model: m\n\n  request_cont: 5\n");
        let err = load(&args(&["--config", f.path().to_str().unwrap()])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&format!("{}:4:", f.path().display())), "{msg}");
        assert!(msg.contains("`request_cont`"), "{msg}");
        assert!(msg.contains("did you mean `request_count`"), "{msg}");
    }

    #[test]
    fn bad_value_in_file_points_at_its_line() {
        let f = write("benchmark:\n  model: m\n  concurrency: lots\n");
        let msg = load(&args(&["--config", f.path().to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(msg.contains(":3:") && msg.contains("concurrency"), "{msg}");
    }

    #[test]
    fn missing_env_var_in_benchmark_is_an_error_naming_it() {
        let f = write("benchmark:\n  model: ${AIPERF_TEST_SURELY_UNSET_VAR}\n");
        let msg = load(&args(&["--config", f.path().to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("AIPERF_TEST_SURELY_UNSET_VAR"), "{msg}");
        let f = write("benchmark:\n  model: ${AIPERF_TEST_SURELY_UNSET_VAR:-fallback}\n");
        let c = load(&args(&["--config", f.path().to_str().unwrap()])).unwrap();
        assert_eq!(c.endpoint.model(), "fallback");
    }

    #[test]
    fn missing_env_var_in_plugin_disables_only_that_plugin() {
        let f = write("plugins:\n  a:\n    api_key: ${AIPERF_TEST_SURELY_UNSET_VAR}\n  b:\n    x: ${AIPERF_TEST_SURELY_UNSET_VAR:-y}\n  c:\n    enabled: false\n");
        let c = load(&args(&["--config", f.path().to_str().unwrap(), "-m", "m"])).unwrap();
        let e = &c.plugins.entries;
        assert_eq!(
            e[0].disabled,
            Some(DisabledReason::MissingVariable(
                "AIPERF_TEST_SURELY_UNSET_VAR".into()
            ))
        );
        assert!(e[1].enabled());
        assert_eq!(e[1].config, serde_json::json!({"x": "y"}));
        assert_eq!(e[2].disabled, Some(DisabledReason::InConfig));
    }

    #[test]
    fn verbose_saturates_instead_of_overflowing() {
        let mut a = args(&["--url", "mock"]);
        a.extend(std::iter::repeat_n("-v".to_string(), 300));
        assert_eq!(load(&a).unwrap().output.verbose, u8::MAX);
        let f = write("benchmark:\n  url: mock\n  verbose: 300\n");
        let msg = load(&args(&["--config", f.path().to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(msg.contains(":3:") && msg.contains("verbose"), "{msg}");
    }

    #[test]
    fn extra_inputs_must_be_an_object_when_braced() {
        let err = resolve::parse_extra_inputs(&args(&["{}x"])).unwrap_err();
        assert!(err.to_string().contains("extra-inputs"), "{err}");
    }

    #[test]
    fn echoed_command_hides_secrets() {
        let c = command::redacted_command(&args(&[
            "--api-key",
            "s1",
            "-H",
            "Authorization: Bearer s2",
            "--header=X-Api-Key: s3",
            "-H",
            "X-Trace: t",
        ]));
        assert!(
            !c.contains("s1") && !c.contains("s2") && !c.contains("s3"),
            "{c}"
        );
        assert!(c.contains("X-Trace: t"), "{c}");
    }

    /// Every numeric `profile` flag, as `(flag, lowest, highest)` accepted values.
    const NUMERIC: &[(&str, f64, f64)] = &[
        ("isl", 1.0, 1e6),
        ("osl", 1.0, 1e6),
        ("isl-stddev", 0.0, 1e6),
        ("osl-stddev", 0.0, 1e6),
        ("isl-block-size", 1.0, 1e6),
        ("prefix-prompt-length", 0.0, 1e6),
        ("num-prefix-prompts", 0.0, 1e5),
        ("num-dataset-entries", 1.0, 1e7),
        ("conversation-num", 1.0, 1e9),
        ("num-warmup-sessions", 1.0, 1e9),
        ("conversation-turn-mean", 1.0, 1e5),
        ("conversation-turn-stddev", 0.0, 1e5),
        ("conversation-turn-delay-mean", 0.0, 1e10),
        ("conversation-turn-delay-stddev", 0.0, 1e10),
        ("conversation-turn-delay-ratio", 0.0, 1e6),
        ("shared-system-prompt-length", 1.0, 1e6),
        ("user-context-prompt-length", 1.0, 1e6),
        ("batch-size", 1.0, 1e5),
        ("request-count", 1.0, 1e9),
        ("warmup-request-count", 0.0, 1e9),
        ("concurrency", 1.0, 1e6),
        ("warmup-concurrency", 1.0, 1e6),
        ("request-rate", 1e-3, 1e7),
        ("warmup-request-rate", 1e-3, 1e7),
        ("arrival-smoothness", 1e-3, 1e6),
        ("replay-speedup", 1e-3, 1e6),
        ("request-cancellation-rate", 0.0, 100.0),
        ("fixed-schedule-start-offset", 0.0, 1e15),
        ("fixed-schedule-end-offset", 0.0, 1e15),
        ("request-timeout-seconds", 0.0, 1e7),
        ("benchmark-duration", 0.0, 1e7),
        ("benchmark-grace-period", 0.0, 1e7),
        ("warmup-duration", 0.0, 1e7),
        ("request-rate-ramp-duration", 0.0, 1e7),
        ("concurrency-ramp-duration", 0.0, 1e7),
        ("request-cancellation-delay", 0.0, 1e7),
        ("random-seed", 0.0, u64::MAX as f64),
    ];

    /// Values that look like numbers, and some that don't.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<f64>().prop_map(|v| v.to_string()),
            any::<f64>().prop_map(|v| format!("{v:e}")),
            any::<i128>().prop_map(|v| v.to_string()),
            (0u64..2_000_000).prop_map(|v| v.to_string()),
            (-1e3f64..1e7).prop_map(|v| v.to_string()),
            prop::sample::select(vec![
                "nan", "NaN", "inf", "-inf", ".nan", ".inf", "1e308", "1e-320", "-0", "+5", "0x10",
                "1_000", " 5 ", "", "1e", "--", "5e-324",
            ])
            .prop_map(str::to_string),
            "\\PC{0,12}",
        ]
    }

    /// Loads `args`: Ok, or an error of one line; a panic fails the property.
    fn loads_or_one_line(args: &[String]) -> Result<Option<BenchmarkConfig>, TestCaseError> {
        match load(args) {
            Ok(c) => Ok(Some(c)),
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(!msg.is_empty() && !msg.contains('\n'), "{args:?}: {msg:?}");
                Ok(None)
            }
        }
    }

    /// Indented `key: value` lines and other YAML-ish debris.
    fn yaml_line() -> impl Strategy<Value = String> {
        let keys: Vec<String> = NUMERIC
            .iter()
            .map(|(f, _, _)| f.replace('-', "_"))
            .chain(
                [
                    "benchmark",
                    "plugins",
                    "url",
                    "model",
                    "header",
                    "extra_inputs",
                    "verbose",
                    "streaming",
                    "enabled",
                    "timeout_seconds",
                    "path",
                    "x",
                ]
                .map(String::from),
            )
            .collect();
        let scalar = prop_oneof![
            value(),
            prop::sample::select(vec![
                "mock", "true", "[a, b]", "{a: 1}", "|", ">-", "${HOME}", "${X:-3}", "'q'",
                "\"d\"", "&a", "*a", "!!str 5", "- 1", "~", "null",
            ])
            .prop_map(str::to_string),
        ];
        prop_oneof![
            (0usize..3, prop::sample::select(keys), scalar)
                .prop_map(|(d, k, v)| format!("{}{k}: {v}", "  ".repeat(d))),
            (0usize..3, value()).prop_map(|(d, v)| format!("{}- {v}", "  ".repeat(d))),
            "\\PC{0,20}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any value of any numeric flag: loaded within its bounds, or a one-line error.
        #[test]
        fn numeric_flags_load_or_fail_in_one_line(
            flag in prop::sample::select(NUMERIC.to_vec()),
            v in value(),
        ) {
            let (name, lo, hi) = flag;
            let a = args(&["--url", "mock", "--ui", "none"]);
            let mut with = a.clone();
            with.push(format!("--{name}={v}"));
            if let Some(c) = loads_or_one_line(&with)? {
                let got = serde_json::to_value(&c).unwrap();
                let key = name.replace('-', "_");
                // Where the value shows in `input_config`, it is inside the bounds.
                for section in ["loadgen", "input", "endpoint"] {
                    if let Some(n) = got[section][&key].as_f64() {
                        prop_assert!((lo..=hi).contains(&n), "--{name}={v} gave {n}");
                    }
                }
            }
            // The same in a config file, where an error names the file.
            let f = write(&format!("benchmark:\n  {}: '{}'\n", name.replace('-', "_"), v.replace('\'', "''")));
            let mut from_file = a;
            from_file.extend(args(&["--config", f.path().to_str().unwrap()]));
            loads_or_one_line(&from_file)?;
        }

        /// Any YAML-ish text as a config file: loaded, or an error naming the file.
        #[test]
        fn config_files_read_or_fail_naming_the_file(lines in prop::collection::vec(yaml_line(), 0..8)) {
            let text = lines.join("\n");
            let f = write(&text);
            let path = f.path().display().to_string();
            if let Err(e) = file::read_config_file(f.path()) {
                let msg = e.to_string();
                prop_assert!(msg.starts_with(&format!("{path}:")), "{text:?}: {msg}");
                prop_assert!(!msg.contains('\n'), "{text:?}: {msg:?}");
            }
            loads_or_one_line(&args(&["--url", "mock", "--config", &path]))?;
        }
    }
}
