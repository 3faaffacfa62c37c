//! Turns the command line and the YAML config file into one validated [`BenchmarkConfig`].
//!
//! The file's `benchmark:` keys are the `profile` flags with `-` turned into `_`, so rather
//! than keep a second schema in step with the CLI, file keys are rendered back into flags and
//! parsed by the same clap definition. Flags given on the command line win over the file.

pub mod env;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgAction, Args, FromArgMatches};
use serde_json::{Map, Value};

use crate::cli::{
    CustomDatasetType, EndpointType, ProfileArgs, RequestRateMode, SamplingStrategy, UiType,
};

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
}

fn usage(msg: impl Into<String>) -> ConfigError {
    ConfigError::Usage(msg.into())
}

/// One entry of the `plugins:` section, after `${VAR}` substitution.
#[derive(Debug, Clone)]
pub struct PluginEntry {
    pub name: String,
    /// The plugin's own config (host keys `enabled`, `path`, `timeout_seconds` removed).
    pub config: Value,
    pub enabled: bool,
    /// Why the plugin is off, when it is (`enabled: false`, a missing variable...).
    pub disabled_reason: Option<String>,
    pub path: Option<PathBuf>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct PluginsSection {
    pub entries: Vec<PluginEntry>,
}

/// The fully resolved benchmark settings.
#[derive(Debug, Clone)]
pub struct BenchmarkConfig {
    pub model: String,
    /// Base URLs with a scheme; `mock` when the built-in mock should be started.
    pub urls: Vec<String>,
    pub endpoint_type: EndpointType,
    pub endpoint_path: String,
    pub streaming: bool,
    /// In-flight cap; `None` with a request rate means no cap. Closed loop uses 1 if unset.
    pub concurrency: Option<usize>,
    pub request_rate: Option<f64>,
    pub request_rate_mode: RequestRateMode,
    pub arrival_smoothness: f64,
    pub request_rate_ramp: Option<Duration>,
    pub concurrency_ramp: Option<Duration>,
    /// (percent, delay) for request cancellation.
    pub cancellation: Option<(f64, Duration)>,
    pub warmup_duration: Option<Duration>,
    pub warmup_concurrency: Option<usize>,
    pub warmup_request_rate: Option<f64>,
    pub request_count: Option<u64>,
    pub benchmark_duration: Option<Duration>,
    pub grace_period: Duration,
    pub warmup_request_count: u64,
    pub isl: u32,
    pub isl_stddev: f64,
    pub osl: Option<u32>,
    pub osl_stddev: f64,
    pub use_legacy_max_tokens: bool,
    pub extra_inputs: Map<String, Value>,
    pub tokenizer: String,
    pub num_dataset_entries: usize,
    pub input_file: Option<PathBuf>,
    pub custom_dataset_type: Option<CustomDatasetType>,
    /// `Some(true)`: replay timestamps (required); `Some(false)`: ignore them; `None`: auto.
    pub fixed_schedule: Option<bool>,
    pub fixed_schedule_start_offset: Option<f64>,
    pub fixed_schedule_end_offset: Option<f64>,
    pub replay_speedup: f64,
    /// `--dataset-sampling-strategy`; `None`: the dataset type's default.
    pub sampling_explicit: Option<SamplingStrategy>,
    pub isl_block_size: u32,
    pub prefix_prompt_length: u32,
    pub num_prefix_prompts: u32,
    pub batch_size: u32,
    /// The parsed `--payload-template` (for `--endpoint-type template`).
    pub payload_template: Option<Value>,
    pub response_field: String,
    pub use_server_token_count: bool,
    pub api_key: Option<String>,
    pub headers: Vec<(String, String)>,
    pub request_timeout: Duration,
    pub artifact_dir: PathBuf,
    pub ui: UiType,
    pub random_seed: u64,
    pub verbose: u8,
    pub no_plugins: bool,
    pub strict_plugins: bool,
    pub plugins: PluginsSection,
    /// The command line as typed, for the export's `input_config`.
    pub cli_command: String,
}

/// `profile` flags the file may set, keyed by their `snake_case` file name.
struct FlagInfo {
    long: String,
    action: ArgAction,
    takes_many: bool,
}

fn profile_command() -> clap::Command {
    ProfileArgs::augment_args(clap::Command::new("aiperf profile").no_binary_name(true))
        .args_override_self(true)
}

fn file_keys() -> Vec<(String, FlagInfo)> {
    let cmd = profile_command();
    let mut out = Vec::new();
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if long == "config" || long == "help" {
            continue;
        }
        let info = || FlagInfo {
            long: long.to_string(),
            action: arg.get_action().clone(),
            takes_many: matches!(arg.get_action(), ArgAction::Append),
        };
        out.push((long.replace('-', "_"), info()));
        for alias in arg.get_all_aliases().unwrap_or_default() {
            out.push((alias.replace('-', "_"), info()));
        }
    }
    out
}

/// Line (1-based) where `key:` first appears inside the top-level `section:` of `text`.
fn key_line(text: &str, section: Option<&str>, key: &str) -> usize {
    let mut in_section = section.is_none();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indented = line.len() != trimmed.len();
        if !indented && !trimmed.is_empty() && !trimmed.starts_with('#') {
            if let Some(sec) = section {
                in_section = trimmed.starts_with(&format!("{sec}:"));
            }
            if section.is_none() && trimmed.starts_with(&format!("{key}:")) {
                return i + 1;
            }
            continue;
        }
        if in_section && section.is_some() {
            let t = trimmed.trim_start_matches("- ");
            let t = t.trim_matches(|c| c == '"' || c == '\'');
            if t.starts_with(key)
                && t[key.len()..]
                    .trim_start_matches(['"', '\''])
                    .trim_start()
                    .starts_with(':')
            {
                return i + 1;
            }
        }
    }
    1
}

fn closest<'a>(key: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::jaro_winkler(key, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn yaml_scalar(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// What a config file holds, before it is merged with the command line.
struct FileConfig {
    /// Flags rendered from `benchmark:`, grouped per flag id so CLI flags can replace them.
    flags: Vec<(String, Vec<String>, usize)>,
    plugins: PluginsSection,
}

fn read_config_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::FileWhole {
        file: file.clone(),
        message: format!("cannot read config file: {e}"),
    })?;
    let root: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| {
        let line = e.location().map(|l| l.line()).unwrap_or(1);
        ConfigError::File {
            file: file.clone(),
            line,
            message: format!("invalid YAML: {e}"),
        }
    })?;
    let root = match root {
        serde_yaml::Value::Null => serde_yaml::Mapping::new(),
        serde_yaml::Value::Mapping(m) => m,
        _ => {
            return Err(ConfigError::FileWhole {
                file,
                message: "expected a mapping with `benchmark:` and `plugins:` sections".into(),
            })
        }
    };
    let mut benchmark = serde_yaml::Mapping::new();
    let mut plugins_yaml = serde_yaml::Mapping::new();
    for (k, v) in root {
        let key = yaml_scalar(&k).unwrap_or_default();
        let as_map = |v: serde_yaml::Value| match v {
            serde_yaml::Value::Mapping(m) => Ok(m),
            serde_yaml::Value::Null => Ok(serde_yaml::Mapping::new()),
            _ => Err(ConfigError::File {
                file: file.clone(),
                line: key_line(&text, None, &key),
                message: format!("`{key}` must be a mapping"),
            }),
        };
        match key.as_str() {
            "benchmark" => benchmark = as_map(v)?,
            "plugins" => plugins_yaml = as_map(v)?,
            other => {
                let hint = closest(other, ["benchmark", "plugins"].into_iter())
                    .map(|c| format!("; did you mean `{c}`?"))
                    .unwrap_or_else(|| "; the sections are `benchmark` and `plugins`".into());
                return Err(ConfigError::File {
                    file,
                    line: key_line(&text, None, other),
                    message: format!("unknown top-level key `{other}`{hint}"),
                });
            }
        }
    }

    let known = file_keys();
    let mut flags = Vec::new();
    for (k, mut v) in benchmark {
        let key = yaml_scalar(&k).unwrap_or_default();
        let line = key_line(&text, Some("benchmark"), &key);
        let Some((_, info)) = known.iter().find(|(name, _)| *name == key) else {
            let hint = closest(&key, known.iter().map(|(n, _)| n.as_str()))
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_default();
            return Err(ConfigError::File {
                file,
                line,
                message: format!("unknown key `{key}` in `benchmark`{hint}"),
            });
        };
        env::substitute_yaml(&mut v, &env::env_lookup).map_err(|var| ConfigError::File {
            file: file.clone(),
            line,
            message: format!(
                "environment variable `{var}` is not set (used by `{key}`); set it or write `${{{var}:-default}}`"
            ),
        })?;
        let flag = format!("--{}", info.long);
        let mut args = Vec::new();
        let bad = |what: &str| ConfigError::File {
            file: file.clone(),
            line,
            message: format!("`{key}` {what}"),
        };
        match (&info.action, &v) {
            (ArgAction::SetTrue, serde_yaml::Value::Bool(b)) => {
                if *b {
                    args.push(flag.clone());
                }
            }
            (ArgAction::SetTrue, _) => return Err(bad("must be true or false")),
            (ArgAction::Count, serde_yaml::Value::Number(n)) => {
                for _ in 0..n.as_u64().unwrap_or(0) {
                    args.push(flag.clone());
                }
            }
            (_, serde_yaml::Value::Sequence(items)) if info.takes_many => {
                for item in items {
                    let s = match yaml_scalar(item) {
                        Some(s) => s,
                        None => serde_json::to_string(item).map_err(|e| bad(&e.to_string()))?,
                    };
                    args.push(format!("{flag}={s}"));
                }
            }
            (_, serde_yaml::Value::Mapping(_)) if info.takes_many => {
                let json = serde_json::to_string(&v).map_err(|e| bad(&e.to_string()))?;
                args.push(format!("{flag}={json}"));
            }
            (_, serde_yaml::Value::Null) => {}
            (_, other) => match yaml_scalar(other) {
                Some(s) => args.push(format!("{flag}={s}")),
                None => return Err(bad("must be a single value")),
            },
        }
        // Check the values now, so an error can point at the file and line.
        if !args.is_empty() {
            if let Err(e) = profile_command().try_get_matches_from(&args) {
                let msg = first_line(&e.to_string());
                return Err(ConfigError::File {
                    file,
                    line,
                    message: format!("`{key}`: {msg}"),
                });
            }
        }
        flags.push((info.long.clone(), args, line));
    }

    let plugins = parse_plugins(plugins_yaml, &file, &text)?;
    Ok(FileConfig { flags, plugins })
}

fn first_line(s: &str) -> String {
    s.lines()
        .map(|l| l.trim_start_matches("error: ").trim())
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

const HOST_KEYS: [&str; 3] = ["enabled", "path", "timeout_seconds"];

fn parse_plugins(
    section: serde_yaml::Mapping,
    file: &str,
    text: &str,
) -> Result<PluginsSection, ConfigError> {
    let mut entries = Vec::new();
    for (k, v) in section {
        let name = yaml_scalar(&k).unwrap_or_default();
        let line = key_line(text, Some("plugins"), &name);
        let mut map = match v {
            serde_yaml::Value::Mapping(m) => m,
            serde_yaml::Value::Null => serde_yaml::Mapping::new(),
            _ => {
                return Err(ConfigError::File {
                    file: file.into(),
                    line,
                    message: format!("plugin `{name}` must be a mapping of its settings"),
                })
            }
        };
        let mut disabled_reason = None;
        let mut value = serde_yaml::Value::Mapping(map.clone());
        if let Err(var) = env::substitute_yaml(&mut value, &env::env_lookup) {
            disabled_reason = Some(format!("environment variable `{var}` is not set"));
        } else if let serde_yaml::Value::Mapping(m) = value {
            map = m;
        }
        let enabled = match map.get("enabled") {
            None => true,
            Some(serde_yaml::Value::Bool(b)) => *b,
            Some(serde_yaml::Value::String(s)) if s == "true" || s == "false" => s == "true",
            Some(_) => {
                return Err(ConfigError::File {
                    file: file.into(),
                    line,
                    message: format!("plugins.{name}.enabled must be true or false"),
                })
            }
        };
        if !enabled {
            disabled_reason = Some("enabled: false in config".into());
        }
        let path = map.get("path").and_then(yaml_scalar).map(PathBuf::from);
        let timeout = match map.get("timeout_seconds") {
            None => Duration::from_secs(5),
            Some(v) => match yaml_scalar(v).and_then(|s| s.parse::<f64>().ok()) {
                Some(s) if s > 0.0 && s.is_finite() => Duration::from_secs_f64(s),
                _ => {
                    return Err(ConfigError::File {
                        file: file.into(),
                        line,
                        message: format!(
                            "plugins.{name}.timeout_seconds must be a positive number"
                        ),
                    })
                }
            },
        };
        for key in HOST_KEYS {
            map.remove(key);
        }
        let config = serde_json::to_value(&map).map_err(|e| ConfigError::File {
            file: file.into(),
            line,
            message: format!("plugin `{name}`: {e}"),
        })?;
        entries.push(PluginEntry {
            name,
            config,
            enabled: disabled_reason.is_none(),
            disabled_reason,
            path,
            timeout,
        });
    }
    Ok(PluginsSection { entries })
}

/// Loads only the `plugins:` section of a config file (for `aiperf plugins ...`).
pub fn load_plugins_section(path: Option<&Path>) -> Result<PluginsSection, ConfigError> {
    match path {
        Some(p) => Ok(read_config_file(p)?.plugins),
        None => Ok(PluginsSection::default()),
    }
}

/// Parses `profile` arguments (everything after `profile`), merging the config file.
pub fn load(cli_args: &[String]) -> Result<BenchmarkConfig, ConfigError> {
    let cli_matches = profile_command()
        .try_get_matches_from(cli_args)
        .map_err(|e| usage(first_line(&e.to_string())))?;
    let cli = ProfileArgs::from_arg_matches(&cli_matches)
        .map_err(|e| usage(first_line(&e.to_string())))?;

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
        .map_err(|e| usage(first_line(&e.to_string())))?;
    let args =
        ProfileArgs::from_arg_matches(&matches).map_err(|e| usage(first_line(&e.to_string())))?;
    resolve(args, plugins, redacted_command(cli_args))
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The command line as typed, with `--api-key` and secret-looking headers hidden.
fn redacted_command(args: &[String]) -> String {
    let hide_header = |h: &str| match h.split_once(':') {
        Some((name, _)) if is_secret_key(name) => format!("{name}: <redacted>"),
        _ => h.to_string(),
    };
    let mut cmd = String::from("aiperf profile");
    let mut prev = "";
    for a in args {
        let shown = match prev {
            "--api-key" => "<redacted>".to_string(),
            "-H" | "--header" => hide_header(a),
            _ if a.starts_with("--api-key=") => "--api-key=<redacted>".to_string(),
            _ if a.starts_with("--header=") => {
                format!("--header={}", hide_header(&a["--header=".len()..]))
            }
            _ => a.clone(),
        };
        cmd.push(' ');
        cmd.push_str(&shell_quote(&shown));
        prev = a;
    }
    cmd
}

/// Whether a config key names a secret whose value must never be shown: it contains `key`,
/// `token`, `secret`, `password` or `authorization`. `token` must not run on into a longer
/// word: token counts (`max_tokens`) and `tokenizer` are not secrets.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["key", "secret", "password", "authorization"]
        .iter()
        .any(|s| k.contains(s))
        || k.match_indices("token")
            .any(|(i, _)| !k[i + 5..].starts_with(|c: char| c.is_ascii_alphabetic()))
}

/// A copy of `value` with every secret-keyed value replaced by `"<redacted>"`.
pub fn redact(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if is_secret_key(k) && !v.is_null() {
                        Value::String("<redacted>".into())
                    } else {
                        redact(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

/// `mock` or `mock?option=value&...`: the built-in mock, started in-process.
pub fn is_mock_url(u: &str) -> bool {
    let u = u.trim();
    u == "mock" || u.starts_with("mock?")
}

/// Adds `http://` when a URL has no scheme.
pub fn normalize_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

fn parse_header(h: &str) -> Result<(String, String), ConfigError> {
    let (name, value) = h
        .split_once(':')
        .ok_or_else(|| usage(format!("invalid --header `{h}`: expected `Name: value`")))?;
    let name = name.trim();
    if name.is_empty() || reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(usage(format!("invalid --header `{h}`: bad header name")));
    }
    let value = value.trim();
    if reqwest::header::HeaderValue::from_str(value).is_err() {
        return Err(usage(format!(
            "invalid --header `{name}`: bad header value"
        )));
    }
    Ok((name.to_string(), value.to_string()))
}

/// `--payload-template`: inline JSON or `@FILE`; must contain `{{text}}`.
fn parse_template(t: &str) -> Result<Value, ConfigError> {
    let text = match t.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| usage(format!("cannot read --payload-template {path}: {e}")))?,
        None => t.to_string(),
    };
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| usage(format!("--payload-template is not valid JSON: {e}")))?;
    if !text.contains("{{text}}") {
        return Err(usage(
            "--payload-template must contain {{text}} where the prompt goes",
        ));
    }
    Ok(v)
}

/// `key:value` (value parsed as JSON when it can be, else a string) or a JSON object.
pub fn parse_extra_inputs(items: &[String]) -> Result<Map<String, Value>, ConfigError> {
    let mut out = Map::new();
    for item in items {
        let trimmed = item.trim();
        if trimmed.starts_with('{') {
            let v: Value = serde_json::from_str(trimmed)
                .map_err(|e| usage(format!("invalid --extra-inputs JSON `{trimmed}`: {e}")))?;
            let Value::Object(map) = v else {
                unreachable!()
            };
            out.extend(map);
            continue;
        }
        let (k, v) = trimmed.split_once(':').ok_or_else(|| {
            usage(format!(
                "invalid --extra-inputs `{trimmed}`: expected `key:value` or a JSON object"
            ))
        })?;
        let k = k.trim();
        if k.is_empty() {
            return Err(usage(format!(
                "invalid --extra-inputs `{trimmed}`: empty key"
            )));
        }
        let v = v.trim();
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        out.insert(k.to_string(), value);
    }
    Ok(out)
}

fn positive(name: &str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(usage(format!(
            "--{name} must be a positive number, got {v}"
        )))
    }
}

fn resolve(
    a: ProfileArgs,
    plugins: PluginsSection,
    cli_command: String,
) -> Result<BenchmarkConfig, ConfigError> {
    let urls: Vec<String> = if a.url.is_empty() {
        vec!["http://localhost:8000".into()]
    } else {
        a.url
            .iter()
            .map(|u| {
                if is_mock_url(u) {
                    u.trim().to_string()
                } else {
                    normalize_url(u)
                }
            })
            .collect()
    };
    for u in &urls {
        if let Some(parsed) = crate::mock::parse_mock_url(u) {
            parsed.map_err(|e| usage(format!("invalid --url `{u}`: {e}")))?;
        } else {
            let parsed =
                reqwest::Url::parse(u).map_err(|e| usage(format!("invalid --url `{u}`: {e}")))?;
            if parsed.scheme() != "http" && parsed.scheme() != "https" {
                return Err(usage(format!(
                    "invalid --url `{u}`: scheme must be http or https"
                )));
            }
        }
    }
    if urls.iter().any(|u| is_mock_url(u)) && urls.len() > 1 {
        return Err(usage("--url mock cannot be combined with other URLs"));
    }
    let model = match a.model {
        Some(m) if !m.trim().is_empty() => m,
        _ if is_mock_url(&urls[0]) => "mock-model".to_string(),
        _ => {
            return Err(usage(
                "missing --model (-m): the model name to send in requests",
            ))
        }
    };
    let concurrency = a.concurrency;
    if concurrency == Some(0) || a.warmup_concurrency == Some(0) {
        return Err(usage("--concurrency must be at least 1"));
    }
    if let Some(r) = a.request_rate {
        positive("request-rate", r)?;
    }
    if let Some(r) = a.warmup_request_rate {
        positive("warmup-request-rate", r)?;
    }
    positive("arrival-smoothness", a.arrival_smoothness)?;
    for (name, v) in [
        ("request-rate-ramp-duration", a.request_rate_ramp_duration),
        ("concurrency-ramp-duration", a.concurrency_ramp_duration),
        ("warmup-duration", a.warmup_duration),
    ] {
        if let Some(v) = v {
            positive(name, v)?;
        }
    }
    if a.request_rate_ramp_duration.is_some() && a.request_rate.is_none() {
        return Err(usage("--request-rate-ramp-duration needs --request-rate"));
    }
    let cancellation = match a.request_cancellation_rate {
        Some(p) if (0.0..=100.0).contains(&p) => {
            if !(a.request_cancellation_delay.is_finite() && a.request_cancellation_delay >= 0.0) {
                return Err(usage(
                    "--request-cancellation-delay must be zero or more seconds",
                ));
            }
            (p > 0.0).then(|| (p, Duration::from_secs_f64(a.request_cancellation_delay)))
        }
        Some(p) => {
            return Err(usage(format!(
                "--request-cancellation-rate must be a percentage from 0 to 100, got {p}"
            )))
        }
        None => None,
    };
    if let Some(d) = a.benchmark_duration {
        positive("benchmark-duration", d)?;
    }
    if !(a.benchmark_grace_period.is_finite() && a.benchmark_grace_period >= 0.0) {
        return Err(usage(
            "--benchmark-grace-period must be zero or more seconds",
        ));
    }
    positive("request-timeout-seconds", a.request_timeout_seconds)?;
    if a.request_count == Some(0) {
        return Err(usage("--request-count must be at least 1"));
    }
    // Default 10 requests; with an --input-file, one per entry (decided once it is loaded).
    let request_count = match (a.request_count, a.benchmark_duration, &a.input_file) {
        (None, None, None) => Some(10),
        (rc, _, _) => rc,
    };
    if a.isl == 0 {
        return Err(usage("--isl must be at least 1 token"));
    }
    if a.osl == Some(0) {
        return Err(usage("--osl must be at least 1 token"));
    }
    if a.isl_stddev < 0.0 || a.osl_stddev < 0.0 {
        return Err(usage("--isl-stddev and --osl-stddev must not be negative"));
    }
    positive("replay-speedup", a.replay_speedup)?;
    for (name, v) in [
        ("fixed-schedule-start-offset", a.fixed_schedule_start_offset),
        ("fixed-schedule-end-offset", a.fixed_schedule_end_offset),
    ] {
        if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
            return Err(usage(format!("--{name} must be zero or more milliseconds")));
        }
    }
    if let (Some(s), Some(e)) = (a.fixed_schedule_start_offset, a.fixed_schedule_end_offset) {
        if e < s {
            return Err(usage(
                "--fixed-schedule-end-offset must not be before --fixed-schedule-start-offset",
            ));
        }
    }
    if a.custom_dataset_type.is_some() && a.input_file.is_none() {
        return Err(usage("--custom-dataset-type needs --input-file"));
    }
    if a.fixed_schedule && a.input_file.is_none() {
        return Err(usage("--fixed-schedule needs an --input-file with timestamps (e.g. --custom-dataset-type mooncake_trace)"));
    }
    if let Some(f) = &a.input_file {
        if !f.is_file() {
            return Err(usage(format!("--input-file {}: no such file", f.display())));
        }
    }
    if a.isl_block_size == 0 || a.batch_size == 0 {
        return Err(usage(
            "--isl-block-size and --batch-size must be at least 1",
        ));
    }
    if (a.prefix_prompt_length > 0) != (a.num_prefix_prompts > 0) {
        return Err(usage(
            "--prefix-prompt-length and --num-prefix-prompts go together",
        ));
    }
    if a.batch_size > 1 && a.endpoint_type != EndpointType::Embeddings {
        return Err(usage("--batch-size applies to --endpoint-type embeddings"));
    }
    if !a.response_field.is_empty() && !a.response_field.starts_with('/') {
        return Err(usage(format!(
            "--response-field `{}` must be a JSON pointer such as /choices/0/text",
            a.response_field
        )));
    }
    let payload_template = match (&a.payload_template, a.endpoint_type) {
        (Some(t), EndpointType::Template) => Some(parse_template(t)?),
        (None, EndpointType::Template) => {
            return Err(usage(
                "--endpoint-type template needs --payload-template JSON or @FILE",
            ))
        }
        (Some(_), _) => {
            return Err(usage(
                "--payload-template applies to --endpoint-type template",
            ))
        }
        (None, _) => None,
    };
    if a.num_dataset_entries == 0 {
        return Err(usage("--num-dataset-entries must be at least 1"));
    }
    let headers = a
        .header
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let extra_inputs = parse_extra_inputs(&a.extra_inputs)?;
    let endpoint_path = match a.endpoint {
        Some(p) => {
            if p.starts_with('/') {
                p
            } else {
                format!("/{p}")
            }
        }
        None => match a.endpoint_type {
            EndpointType::Chat => "/v1/chat/completions".into(),
            EndpointType::Completions => "/v1/completions".into(),
            EndpointType::Embeddings => "/v1/embeddings".into(),
            EndpointType::Responses => "/v1/responses".into(),
            EndpointType::Template => {
                return Err(usage(
                    "--endpoint-type template needs --endpoint PATH (e.g. /generate)",
                ))
            }
        },
    };
    let load_label = match a.request_rate {
        Some(r) => format!("request_rate{r}"),
        None => format!("concurrency{}", concurrency.unwrap_or(1)),
    };
    let endpoint_label = match a.endpoint_type {
        EndpointType::Chat => "openai-chat",
        EndpointType::Completions => "openai-completions",
        EndpointType::Embeddings => "openai-embeddings",
        EndpointType::Responses => "openai-responses",
        EndpointType::Template => "template",
    };
    let artifact_dir = a.artifact_dir.unwrap_or_else(|| {
        let safe_model: String = model
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        PathBuf::from("artifacts").join(format!("{safe_model}-{endpoint_label}-{load_label}"))
    });
    let ui = a.ui.unwrap_or_else(|| {
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            UiType::Simple
        } else {
            UiType::None
        }
    });
    Ok(BenchmarkConfig {
        model,
        urls,
        endpoint_type: a.endpoint_type,
        endpoint_path,
        streaming: a.streaming,
        concurrency,
        request_rate: a.request_rate,
        request_rate_mode: a.request_rate_mode.unwrap_or(RequestRateMode::Poisson),
        arrival_smoothness: a.arrival_smoothness,
        request_rate_ramp: a.request_rate_ramp_duration.map(Duration::from_secs_f64),
        concurrency_ramp: a.concurrency_ramp_duration.map(Duration::from_secs_f64),
        cancellation,
        warmup_duration: a.warmup_duration.map(Duration::from_secs_f64),
        warmup_concurrency: a.warmup_concurrency,
        warmup_request_rate: a.warmup_request_rate,
        request_count,
        benchmark_duration: a.benchmark_duration.map(Duration::from_secs_f64),
        grace_period: Duration::from_secs_f64(a.benchmark_grace_period),
        warmup_request_count: a.warmup_request_count,
        isl: a.isl,
        isl_stddev: a.isl_stddev,
        osl: a.osl,
        osl_stddev: a.osl_stddev,
        use_legacy_max_tokens: a.use_legacy_max_tokens,
        extra_inputs,
        tokenizer: a.tokenizer,
        num_dataset_entries: a.num_dataset_entries,
        input_file: a.input_file,
        custom_dataset_type: a.custom_dataset_type,
        fixed_schedule: if a.fixed_schedule {
            Some(true)
        } else if a.no_fixed_schedule {
            Some(false)
        } else {
            None
        },
        fixed_schedule_start_offset: a.fixed_schedule_start_offset,
        fixed_schedule_end_offset: a.fixed_schedule_end_offset,
        replay_speedup: a.replay_speedup,
        sampling_explicit: a.dataset_sampling_strategy,
        isl_block_size: a.isl_block_size,
        prefix_prompt_length: a.prefix_prompt_length,
        num_prefix_prompts: a.num_prefix_prompts,
        batch_size: a.batch_size,
        payload_template,
        response_field: a.response_field,
        use_server_token_count: a.use_server_token_count,
        api_key: a.api_key,
        headers,
        request_timeout: Duration::from_secs_f64(a.request_timeout_seconds),
        artifact_dir,
        ui,
        random_seed: a.random_seed.unwrap_or_else(rand::random),
        verbose: a.verbose,
        no_plugins: a.no_plugins,
        strict_plugins: a.strict_plugins,
        plugins,
        cli_command,
    })
}

impl BenchmarkConfig {
    /// The resolved config for the export's `input_config`, secrets redacted.
    pub fn to_json(&self) -> Value {
        let plugins: Map<String, Value> = self
            .plugins
            .entries
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    serde_json::json!({
                        "enabled": p.enabled,
                        "config": redact(&p.config),
                        "timeout_seconds": p.timeout.as_secs_f64(),
                    }),
                )
            })
            .collect();
        let headers: Vec<Value> = self
            .headers
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret_key(k) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                Value::String(format!("{k}: {shown}"))
            })
            .collect();
        serde_json::json!({
            "endpoint": {
                "model_names": [self.model],
                "type": self.endpoint_type,
                "custom_endpoint": self.endpoint_path,
                "streaming": self.streaming,
                "urls": self.urls,
                "api_key": self.api_key.as_ref().map(|_| "<redacted>"),
                "headers": headers,
                "extra_inputs": redact(&Value::Object(self.extra_inputs.clone())),
                "timeout_seconds": self.request_timeout.as_secs_f64(),
                "use_legacy_max_tokens": self.use_legacy_max_tokens,
                "payload_template": self.payload_template,
                "response_field": self.response_field,
            },
            "input": {
                "random_seed": self.random_seed,
                "num_dataset_entries": self.num_dataset_entries,
                "input_file": self.input_file,
                "custom_dataset_type": self.custom_dataset_type,
                "fixed_schedule": self.fixed_schedule,
                "fixed_schedule_start_offset": self.fixed_schedule_start_offset,
                "fixed_schedule_end_offset": self.fixed_schedule_end_offset,
                "replay_speedup": self.replay_speedup,
                "dataset_sampling_strategy": self.sampling_explicit,
                "isl_block_size": self.isl_block_size,
                "prefix_prompt_length": self.prefix_prompt_length,
                "num_prefix_prompts": self.num_prefix_prompts,
                "batch_size": self.batch_size,
                "use_server_token_count": self.use_server_token_count,
                "tokenizer": self.tokenizer,
                "prompt": {
                    "input_tokens": {"mean": self.isl, "stddev": self.isl_stddev},
                    "output_tokens": {"mean": self.osl, "stddev": self.osl_stddev},
                },
            },
            "loadgen": {
                "concurrency": self.concurrency,
                "request_rate": self.request_rate,
                "request_rate_mode": self.request_rate_mode,
                "arrival_smoothness": self.arrival_smoothness,
                "request_rate_ramp_duration": self.request_rate_ramp.map(|d| d.as_secs_f64()),
                "concurrency_ramp_duration": self.concurrency_ramp.map(|d| d.as_secs_f64()),
                "request_cancellation_rate": self.cancellation.map(|c| c.0),
                "request_cancellation_delay": self.cancellation.map(|c| c.1.as_secs_f64()),
                "warmup_duration": self.warmup_duration.map(|d| d.as_secs_f64()),
                "warmup_concurrency": self.warmup_concurrency,
                "warmup_request_rate": self.warmup_request_rate,
                "request_count": self.request_count,
                "benchmark_duration": self.benchmark_duration.map(|d| d.as_secs_f64()),
                "benchmark_grace_period": self.grace_period.as_secs_f64(),
                "warmup_request_count": self.warmup_request_count,
            },
            "output": {"artifact_directory": self.artifact_dir},
            "plugins": plugins,
            "cli_command": self.cli_command,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn url_gets_a_scheme() {
        assert_eq!(normalize_url("localhost:8000"), "http://localhost:8000");
        assert_eq!(normalize_url("https://x.io/"), "https://x.io");
    }

    #[test]
    fn extra_inputs_accept_pairs_and_json() {
        let m =
            parse_extra_inputs(&args(&["temperature:0.5", "stop:end", r#"{"top_k": 3}"#])).unwrap();
        assert_eq!(m["temperature"], serde_json::json!(0.5));
        assert_eq!(m["stop"], serde_json::json!("end"));
        assert_eq!(m["top_k"], serde_json::json!(3));
        assert!(parse_extra_inputs(&args(&["novalue"])).is_err());
    }

    #[test]
    fn file_values_and_cli_overrides() {
        let f = write("benchmark:\n  model: m1\n  concurrency: 3\n  streaming: true\n  url: [a:1]\n  header: ['X-A: 1']\nplugins:\n  foo:\n    x: 1\n");
        let p = f.path().to_str().unwrap();
        let c = load(&args(&["--config", p, "--concurrency", "7"])).unwrap();
        assert_eq!(c.model, "m1");
        assert_eq!(c.concurrency, Some(7));
        assert!(c.streaming);
        assert_eq!(c.urls, vec!["http://a:1"]);
        assert_eq!(c.headers, vec![("X-A".to_string(), "1".to_string())]);
        assert_eq!(c.plugins.entries.len(), 1);
        assert_eq!(c.plugins.entries[0].config, serde_json::json!({"x": 1}));
        let c = load(&args(&["--config", p, "--url", "b:2"])).unwrap();
        assert_eq!(c.urls, vec!["http://b:2"], "a CLI list replaces the file's");
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
        assert_eq!(c.model, "fallback");
    }

    #[test]
    fn missing_env_var_in_plugin_disables_only_that_plugin() {
        let f = write("plugins:\n  a:\n    api_key: ${AIPERF_TEST_SURELY_UNSET_VAR}\n  b:\n    x: ${AIPERF_TEST_SURELY_UNSET_VAR:-y}\n  c:\n    enabled: false\n");
        let c = load(&args(&["--config", f.path().to_str().unwrap(), "-m", "m"])).unwrap();
        let e = &c.plugins.entries;
        assert!(!e[0].enabled);
        assert!(e[0]
            .disabled_reason
            .as_ref()
            .unwrap()
            .contains("AIPERF_TEST_SURELY_UNSET_VAR"));
        assert!(e[1].enabled);
        assert_eq!(e[1].config, serde_json::json!({"x": "y"}));
        assert!(!e[2].enabled);
    }

    #[test]
    fn secret_keys() {
        for k in [
            "api_key",
            "API_KEY",
            "token",
            "auth_token",
            "hf_token_path",
            "client_secret",
            "password",
            "Authorization",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "max_tokens",
            "min_tokens",
            "max_completion_tokens",
            "site",
            "tags",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn echoed_command_hides_secrets() {
        let c = redacted_command(&args(&[
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

    #[test]
    fn redaction_hides_secret_keys() {
        let v = serde_json::json!({"api_key": "s3", "nested": {"auth_token": "t", "site": "x"}, "list": [{"password": "p"}]});
        let r = redact(&v);
        assert_eq!(r["api_key"], "<redacted>");
        assert_eq!(r["nested"]["auth_token"], "<redacted>");
        assert_eq!(r["nested"]["site"], "x");
        assert_eq!(r["list"][0]["password"], "<redacted>");
    }
}
