//! Reading the YAML config file. Its `benchmark:` keys are the `profile` flags with `-`
//! turned into `_`, so rather than keep a second schema in step with the CLI, each key is
//! rendered back into flags and checked by the same clap definition, right away, so an error
//! can name the file and line.

use std::path::Path;

use clap::{ArgAction, Args};

use super::{env, plugins::parse_plugins, ConfigError};
use crate::cli::ProfileArgs;
use crate::plugin::PluginsSection;

/// `profile` flags the file may set, keyed by their `snake_case` file name.
struct FlagInfo {
    long: String,
    action: ArgAction,
    takes_many: bool,
}

pub(super) fn profile_command() -> clap::Command {
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
pub(super) fn key_line(text: &str, section: Option<&str>, key: &str) -> usize {
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

pub(super) fn yaml_scalar(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// What a config file holds, before it is merged with the command line.
pub(super) struct FileConfig {
    /// Flags rendered from `benchmark:`, grouped per flag id so CLI flags can replace them.
    pub flags: Vec<(String, Vec<String>, usize)>,
    pub plugins: PluginsSection,
}

pub(super) fn read_config_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::FileWhole {
        file: file.clone(),
        message: format!("cannot read config file: {e}"),
    })?;
    let (benchmark, plugins) = sections(&file, &text)?;
    let known = file_keys();
    let mut flags = Vec::new();
    for (k, v) in benchmark {
        let key = yaml_scalar(&k).unwrap_or_default();
        let line = key_line(&text, Some("benchmark"), &key);
        let at_line = |message: String| ConfigError::File {
            file: file.clone(),
            line,
            message,
        };
        let Some((_, info)) = known.iter().find(|(name, _)| *name == key) else {
            let hint = closest(&key, known.iter().map(|(n, _)| n.as_str()))
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_default();
            return Err(at_line(format!("unknown key `{key}` in `benchmark`{hint}")));
        };
        let args = flag_args(info, &key, v).map_err(at_line)?;
        flags.push((info.long.clone(), args, line));
    }
    let plugins = parse_plugins(plugins, &file, &text)?;
    Ok(FileConfig { flags, plugins })
}

/// The file's two sections, `benchmark:` and `plugins:` (each may be absent or empty).
fn sections(
    file: &str,
    text: &str,
) -> Result<(serde_yaml::Mapping, serde_yaml::Mapping), ConfigError> {
    let root: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| ConfigError::File {
        file: file.into(),
        line: e.location().map(|l| l.line()).unwrap_or(1),
        message: format!("invalid YAML: {e}"),
    })?;
    let root = match root {
        serde_yaml::Value::Null => serde_yaml::Mapping::new(),
        serde_yaml::Value::Mapping(m) => m,
        _ => {
            return Err(ConfigError::FileWhole {
                file: file.into(),
                message: "expected a mapping with `benchmark:` and `plugins:` sections".into(),
            })
        }
    };
    let (mut benchmark, mut plugins) = Default::default();
    for (k, v) in root {
        let key = yaml_scalar(&k).unwrap_or_default();
        let at_line = |message: String| ConfigError::File {
            file: file.into(),
            line: key_line(text, None, &key),
            message,
        };
        let map = match v {
            serde_yaml::Value::Mapping(m) => m,
            serde_yaml::Value::Null => serde_yaml::Mapping::new(),
            _ => return Err(at_line(format!("`{key}` must be a mapping"))),
        };
        match key.as_str() {
            "benchmark" => benchmark = map,
            "plugins" => plugins = map,
            other => {
                let hint = closest(other, ["benchmark", "plugins"].into_iter())
                    .map(|c| format!("; did you mean `{c}`?"))
                    .unwrap_or_else(|| "; the sections are `benchmark` and `plugins`".into());
                return Err(at_line(format!("unknown top-level key `{other}`{hint}")));
            }
        }
    }
    Ok((benchmark, plugins))
}

/// One `benchmark:` key rendered as the flags it stands for, checked by clap right away so
/// an error can point at the file and line. The error is that line's message.
fn flag_args(info: &FlagInfo, key: &str, mut v: serde_yaml::Value) -> Result<Vec<String>, String> {
    env::substitute_yaml(&mut v, &env::env_lookup).map_err(|var| {
        format!(
            "environment variable `{var}` is not set (used by `{key}`); set it or write `${{{var}:-default}}`"
        )
    })?;
    let flag = format!("--{}", info.long);
    let bad = |what: &str| format!("`{key}` {what}");
    let mut args = Vec::new();
    match (&info.action, &v) {
        (ArgAction::SetTrue, serde_yaml::Value::Bool(b)) => {
            if *b {
                args.push(flag.clone());
            }
        }
        (ArgAction::SetTrue, _) => return Err(bad("must be true or false")),
        (ArgAction::Count, serde_yaml::Value::Number(n)) => {
            let n = n
                .as_u64()
                .filter(|&n| n <= 10)
                .ok_or_else(|| bad("must be a count from 0 to 10"))?;
            args.extend((0..n).map(|_| flag.clone()));
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
    if !args.is_empty() {
        if let Err(e) = profile_command().try_get_matches_from(&args) {
            return Err(format!("`{key}`: {}", first_line(&e.to_string())));
        }
    }
    Ok(args)
}

pub(super) fn first_line(s: &str) -> String {
    s.lines()
        .map(|l| l.trim_start_matches("error: ").trim())
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}
