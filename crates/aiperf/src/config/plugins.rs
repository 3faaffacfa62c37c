//! The `plugins:` section: each instance's own settings, with the host's keys (`enabled`,
//! `path`, `timeout_seconds`, `plugin`, `secrets`) checked and taken out, `${VAR}`
//! substituted and `!secret` tags taken off. An unset variable disables only that plugin.
//! Errors name the file and the line of the offending key (exit 2).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_yaml::Value as Yaml;

use super::file::{nested_key_lines, yaml_scalar, KeyLines};
use super::{env, ConfigError};
use crate::plugin::{ConfigOrigin, DisabledReason, PluginEntry, PluginsSection};

/// The keys aiperf reads from a plugin's section; the plugin never sees them.
pub const HOST_KEYS: [&str; 7] = [
    "enabled",
    "path",
    "timeout_seconds",
    "plugin",
    "secrets",
    "progress_interval_seconds",
    "records_queue",
];

/// How often a plugin that takes `progress` gets it, unless `progress_interval_seconds`.
const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(5);
/// The shortest and longest `progress_interval_seconds` accepted.
const PROGRESS_INTERVAL_SECONDS: (f64, f64) = (0.1, 3600.0);
/// Batches of records a plugin may have waiting before more are dropped, unless
/// `records_queue`; and the largest accepted (a batch is up to 256 records).
const DEFAULT_RECORDS_QUEUE: usize = 64;
const MAX_RECORDS_QUEUE: u64 = 100_000;

/// A hook's time limit when the section does not set `timeout_seconds`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest `timeout_seconds` accepted: an hour.
const MAX_TIMEOUT_SECONDS: f64 = 3600.0;

/// An error about one key of a section (`None`: the section itself).
type KeyError = (Option<String>, String);

pub(super) fn parse_plugins(
    section: serde_yaml::Mapping,
    file: &str,
    text: &str,
) -> Result<PluginsSection, ConfigError> {
    let mut entries = Vec::new();
    let key_lines = KeyLines::new(text, Some("plugins"));
    let mut nested = nested_key_lines(text, "plugins");
    for (k, v) in section {
        let name = yaml_scalar(&k).unwrap_or_default();
        let line = key_lines.get(&name);
        let keys = nested
            .remove(&name)
            .map(|(_, keys)| keys)
            .unwrap_or_default();
        let origin = ConfigOrigin {
            file: file.into(),
            line,
            keys,
        };
        let entry = parse_entry(name, v).map_err(|(key, message)| {
            let line = key
                .as_deref()
                .and_then(|k| origin.keys.get(k).copied())
                .unwrap_or(line);
            ConfigError::File {
                file: file.into(),
                line,
                message,
            }
        })?;
        entries.push(PluginEntry {
            origin: Some(Arc::new(origin)),
            ..entry
        });
    }
    Ok(PluginsSection {
        entries,
        ..Default::default()
    })
}

/// One plugin's section; the error names the key it is about.
fn parse_entry(name: String, v: Yaml) -> Result<PluginEntry, KeyError> {
    let whole = |m: String| (None, m);
    if name.is_empty() {
        return Err(whole(
            "a plugin's name (its key under `plugins:`) must be a non-empty string".into(),
        ));
    }
    let mut map = match v {
        Yaml::Mapping(m) => m,
        Yaml::Null => serde_yaml::Mapping::new(),
        _ => {
            return Err(whole(format!(
                "plugin `{name}` must be a mapping of its settings"
            )))
        }
    };
    let mut disabled = None;
    let mut value = Yaml::Mapping(map.clone());
    if let Err(var) = env::substitute_yaml(&mut value, &env::env_lookup) {
        disabled = Some(DisabledReason::MissingVariable(var));
    } else if let Yaml::Mapping(m) = value {
        map = m;
    }
    let at = |key: &str, m: String| (Some(key.to_string()), m);
    // Keys must be strings: a plugin's config is a JSON object.
    for k in map.keys() {
        if !matches!(k, Yaml::String(_)) {
            let shown = yaml_scalar(k).unwrap_or_else(|| "a non-scalar".into());
            return Err(at(
                &shown,
                format!("plugins.{name}: key `{shown}` must be a string"),
            ));
        }
    }
    let enabled = match untagged(map.get("enabled")) {
        None => true,
        Some(Yaml::Bool(b)) => *b,
        Some(Yaml::String(s)) if s == "true" || s == "false" => s == "true",
        Some(_) => {
            return Err(at(
                "enabled",
                format!("plugins.{name}.enabled must be true or false"),
            ))
        }
    };
    if !enabled && disabled.is_none() {
        disabled = Some(DisabledReason::InConfig);
    }
    let path = match untagged(map.get("path")) {
        None | Some(Yaml::Null) => None,
        Some(Yaml::String(s)) if !s.trim().is_empty() => Some(PathBuf::from(s)),
        Some(_) => {
            return Err(at(
                "path",
                format!("plugins.{name}.path must be the path of the plugin's executable (a non-empty string)"),
            ))
        }
    };
    let timeout = match untagged(map.get("timeout_seconds")) {
        None => DEFAULT_TIMEOUT,
        Some(v @ (Yaml::Number(_) | Yaml::String(_))) => {
            let bad = |e: String| {
                at(
                    "timeout_seconds",
                    format!("plugins.{name}.timeout_seconds: {e}"),
                )
            };
            let s = yaml_scalar(v).unwrap_or_default();
            let t = crate::units::positive_seconds(&s).map_err(bad)?;
            if t.as_secs_f64() > MAX_TIMEOUT_SECONDS {
                return Err(bad(format!(
                    "{s} s is too long; at most {MAX_TIMEOUT_SECONDS} s (an hour)"
                )));
            }
            t
        }
        Some(_) => {
            return Err(at(
                "timeout_seconds",
                format!("plugins.{name}.timeout_seconds must be a positive number of seconds"),
            ))
        }
    };
    let progress_interval = match untagged(map.get("progress_interval_seconds")) {
        None => DEFAULT_PROGRESS_INTERVAL,
        Some(v @ (Yaml::Number(_) | Yaml::String(_))) => {
            let s = yaml_scalar(v).unwrap_or_default();
            let (lo, hi) = PROGRESS_INTERVAL_SECONDS;
            crate::units::number(&s)
                .and_then(|n| crate::units::check_real(n, lo, hi, " seconds"))
                .map(Duration::from_secs_f64)
                .map_err(|e| {
                    at(
                        "progress_interval_seconds",
                        format!("plugins.{name}.progress_interval_seconds: {e}"),
                    )
                })?
        }
        Some(_) => {
            return Err(at(
                "progress_interval_seconds",
                format!("plugins.{name}.progress_interval_seconds must be a number of seconds"),
            ))
        }
    };
    let records_queue = match untagged(map.get("records_queue")) {
        None => DEFAULT_RECORDS_QUEUE,
        Some(v @ (Yaml::Number(_) | Yaml::String(_))) => {
            let s = yaml_scalar(v).unwrap_or_default();
            s.trim()
                .parse::<u64>()
                .map_err(|_| format!("`{s}` is not a whole number"))
                .and_then(|n| crate::units::check_whole(n, 1, MAX_RECORDS_QUEUE, " batches"))
                .map(|n| n as usize)
                .map_err(|e| {
                    at(
                        "records_queue",
                        format!("plugins.{name}.records_queue: {e}"),
                    )
                })?
        }
        Some(_) => {
            return Err(at(
                "records_queue",
                format!("plugins.{name}.records_queue must be a whole number of batches"),
            ))
        }
    };
    let plugin = match untagged(map.get("plugin")) {
        None => name.clone(),
        Some(Yaml::String(s)) if is_plugin_name(s) => s.clone(),
        Some(_) => {
            return Err(at(
                "plugin",
                format!(
                    "plugins.{name}.plugin must name a plugin (letters, digits, `_`, `-`, `.`)"
                ),
            ))
        }
    };
    let secret_keys: Vec<String> = match untagged(map.get("secrets")) {
        None | Some(Yaml::Null) => Vec::new(),
        Some(Yaml::Sequence(items)) => items
            .iter()
            .map(|i| match i {
                Yaml::String(s) => Ok(s.clone()),
                _ => Err(at(
                    "secrets",
                    format!("plugins.{name}.secrets must be a list of key names"),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(at(
                "secrets",
                format!("plugins.{name}.secrets must be a list of key names"),
            ))
        }
    };
    let builtin = match &path {
        None => crate::plugin::builtin::find(&plugin),
        Some(_) => None,
    };
    let schema = builtin.and_then(|b| (b.config_schema)());
    let declared = |k: &str| {
        schema
            .as_ref()
            .and_then(|s| s.get("properties"))
            .and_then(|p| p.get(k))
            .is_some()
    };
    for (k, v) in map.iter() {
        let Some(k) = k.as_str() else { continue };
        if HOST_KEYS.contains(&k) || declared(k) {
            continue;
        }
        // `secret: ...` is more likely the plugin's own setting than a misspelt list.
        let host = host_key_typo(k)
            .filter(|h| *h != "secrets" || matches!(untagged(Some(v)), Some(Yaml::Sequence(_))));
        if let Some(host) = host {
            return Err(at(
                k,
                format!("plugins.{name}: unknown key `{k}`; did you mean `{host}`?"),
            ));
        }
    }
    for key in HOST_KEYS {
        map.remove(key);
    }
    let mut secrets = Vec::new();
    for (k, v) in map.iter_mut() {
        let k = k.as_str().unwrap_or_default().to_string();
        take_secret_tags(v, false, &mut secrets)
            .map_err(|m| at(&k, format!("plugins.{name}.{k}: {m}")))?;
    }
    for key in &secret_keys {
        let mut cursor = Some(Yaml::Mapping(map.clone()));
        for part in key.split('.') {
            cursor = cursor.and_then(|c| c.get(part).cloned());
        }
        match cursor {
            Some(v) => collect_scalars(&v, &mut secrets),
            None => {
                return Err(at(
                    "secrets",
                    format!(
                        "plugins.{name}.secrets names `{key}`, which is not a key of this section"
                    ),
                ))
            }
        }
    }
    secrets.retain(|s| !s.is_empty());
    secrets.sort();
    secrets.dedup();
    let config = serde_json::to_value(&map).map_err(|e| whole(format!("plugin `{name}`: {e}")))?;
    if let Some(schema) = &schema {
        // A key the built-in's schema forbids is a typo: an error now, at its line.
        if let Ok(problems) = crate::plugin::schema_problems(schema, &config) {
            if let Some(p) = problems.into_iter().find(|p| p.unknown) {
                return Err((p.key.clone(), format!("plugins.{name}: {}", p.message)));
            }
        }
    }
    Ok(PluginEntry {
        name,
        plugin,
        config,
        secrets,
        origin: None,
        disabled,
        path,
        timeout,
        progress_interval,
        records_queue,
    })
}

/// A value with a YAML tag taken off.
fn untagged(v: Option<&Yaml>) -> Option<&Yaml> {
    match v {
        Some(Yaml::Tagged(t)) => Some(&t.value),
        other => other,
    }
}

fn is_plugin_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !s.starts_with('.')
}

/// The host key `k` is probably a misspelling of: the same but for case, or close in
/// edits (`enabeld`, `plugn`) or an abbreviation (`timeout_sec`); `path`, being short,
/// only by case.
fn host_key_typo(k: &str) -> Option<&'static str> {
    let lower = k.to_ascii_lowercase();
    // `timeout_sec`, `timeout_secs`: abbreviations, whatever the edit distance.
    if lower.starts_with("timeout_sec") {
        return Some("timeout_seconds");
    }
    HOST_KEYS.iter().copied().find(|h| {
        let allowed = match h.len() {
            10.. => 3,
            6.. => 1,
            _ => 0,
        };
        strsim::damerau_levenshtein(&lower, h) <= allowed
    })
}

/// Takes `!secret` tags off (in place), collecting the values they mark; any other tag is
/// an error.
fn take_secret_tags(v: &mut Yaml, secret: bool, out: &mut Vec<String>) -> Result<(), String> {
    match v {
        Yaml::Tagged(t) => {
            if t.tag != "secret" {
                return Err(format!(
                    "unknown tag `{}` (the only tag is `!secret`)",
                    t.tag
                ));
            }
            let inner = std::mem::replace(&mut t.value, Yaml::Null);
            *v = inner;
            take_secret_tags(v, true, out)
        }
        Yaml::Mapping(m) => {
            for (_, val) in m.iter_mut() {
                take_secret_tags(val, secret, out)?;
            }
            Ok(())
        }
        Yaml::Sequence(items) => {
            for i in items {
                take_secret_tags(i, secret, out)?;
            }
            Ok(())
        }
        other => {
            if secret {
                collect_scalars(other, out);
            }
            Ok(())
        }
    }
}

fn collect_scalars(v: &Yaml, out: &mut Vec<String>) {
    match v {
        Yaml::Mapping(m) => m.values().for_each(|v| collect_scalars(v, out)),
        Yaml::Sequence(s) => s.iter().for_each(|v| collect_scalars(v, out)),
        Yaml::Tagged(t) => collect_scalars(&t.value, out),
        other => out.extend(yaml_scalar(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::file::read_config_file;
    use super::*;

    fn load(text: &str) -> Result<PluginsSection, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, text).unwrap();
        let prefix = format!("{}:", path.display());
        read_config_file(&path)
            .map(|f| f.plugins)
            .map_err(|e| e.to_string().replacen(&prefix, "c.yaml:", 1))
    }

    fn err(text: &str) -> String {
        match load(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e,
        }
    }

    #[test]
    fn host_keys_are_checked_at_their_line() {
        let cases = [
            (
                "enabled: 3",
                "c.yaml:4: plugins.p.enabled must be true or false",
            ),
            ("path: [a]", "c.yaml:4: plugins.p.path must be"),
            ("path: ''", "c.yaml:4: plugins.p.path must be"),
            ("timeout_seconds: 0", "c.yaml:4: plugins.p.timeout_seconds:"),
            (
                "timeout_seconds: -1",
                "c.yaml:4: plugins.p.timeout_seconds:",
            ),
            (
                "timeout_seconds: abc",
                "c.yaml:4: plugins.p.timeout_seconds:",
            ),
            (
                "timeout_seconds: 99999",
                "c.yaml:4: plugins.p.timeout_seconds: 99999 s is too long",
            ),
            (
                "timeout_seconds: [1]",
                "c.yaml:4: plugins.p.timeout_seconds must be a positive number",
            ),
            (
                "progress_interval_seconds: 0",
                "c.yaml:4: plugins.p.progress_interval_seconds: must be from 0.1 to 3600 seconds",
            ),
            (
                "progress_interval_seconds: .nan",
                "c.yaml:4: plugins.p.progress_interval_seconds: `.nan` is not a finite number",
            ),
            (
                "progress_interval_seconds: 1e300",
                "c.yaml:4: plugins.p.progress_interval_seconds: must be from",
            ),
            (
                "progress_interval_seconds: [1]",
                "c.yaml:4: plugins.p.progress_interval_seconds must be a number",
            ),
            (
                "records_queue: 0",
                "c.yaml:4: plugins.p.records_queue: must be from 1 to 100000 batches",
            ),
            (
                "records_queue: 2.5",
                "c.yaml:4: plugins.p.records_queue: `2.5` is not a whole number",
            ),
            (
                "records_queue: 99999999999",
                "c.yaml:4: plugins.p.records_queue: must be from 1 to 100000",
            ),
            ("plugin: 5", "c.yaml:4: plugins.p.plugin must name a plugin"),
            (
                "plugin: 'a b'",
                "c.yaml:4: plugins.p.plugin must name a plugin",
            ),
            (
                "secrets: token",
                "c.yaml:4: plugins.p.secrets must be a list",
            ),
            (
                "secrets: [nope]",
                "c.yaml:4: plugins.p.secrets names `nope`",
            ),
            (
                "secrets: [site.x]",
                "c.yaml:4: plugins.p.secrets names `site.x`",
            ),
        ];
        for (line, want) in cases {
            let text = format!("plugins:\n  p:\n    site: s\n    {line}\n");
            let e = err(&text);
            assert!(e.starts_with(want), "{line}: {e}");
        }
        let ok =
            load("plugins:\n  p:\n    timeout_seconds: 2.5\n    enabled: 'false'\n    path: /x\n    progress_interval_seconds: 0.5\n    records_queue: 3\n")
                .unwrap();
        let p = &ok.entries[0];
        assert_eq!(p.timeout, Duration::from_millis(2500));
        assert_eq!(p.progress_interval, Duration::from_millis(500));
        assert_eq!(p.records_queue, 3);
        assert_eq!(p.disabled, Some(DisabledReason::InConfig));
        assert_eq!(p.config, serde_json::json!({}));
    }

    #[test]
    fn a_typo_of_a_host_key_is_an_error() {
        let e = err("plugins:\n  p:\n    site: s\n    timeout_secs: 3\n");
        assert_eq!(
            e,
            "c.yaml:4: plugins.p: unknown key `timeout_secs`; did you mean `timeout_seconds`?"
        );
        let e = err("plugins:\n  p:\n\n    enabeld: false\n");
        assert!(e.starts_with("c.yaml:4:") && e.contains("`enabled`"), "{e}");
        let e = err("plugins:\n  p:\n    timeout_sec: 3\n");
        assert!(
            e.starts_with("c.yaml:3:") && e.contains("`timeout_seconds`"),
            "{e}"
        );
        let e = err("plugins:\n  p:\n    plugins: x\n");
        assert!(e.starts_with("c.yaml:3:") && e.contains("`plugin`"), "{e}");
        let e = err("plugins:\n  p:\n    Path: /x\n");
        assert!(e.starts_with("c.yaml:3:") && e.contains("`path`"), "{e}");
        // Plugin settings that merely resemble host keys are the plugin's.
        let ok = load("plugins:\n  p:\n    timeout: 3\n    paths: [a]\n    secret: x\n    login: y\n    http_timeout: 2\n").unwrap();
        assert_eq!(ok.entries[0].config["timeout"], 3);
    }

    #[test]
    fn keys_a_builtin_schema_forbids_are_errors_at_their_line() {
        let e = err("plugins:\n  event_log:\n    file: x\n    log_levle: debug\n");
        assert_eq!(
            e,
            "c.yaml:4: plugins.event_log: unknown key `log_levle`; known keys: file, format, hooks"
        );
        let e = err("plugins:\n  ev:\n    plugin: event_log\n    file: x\n    formt: text\n");
        assert_eq!(
            e,
            "c.yaml:5: plugins.ev: unknown key `formt`; did you mean `format`?"
        );
        // Other schema problems (a missing `file`) disable the plugin at run time instead.
        assert!(load("plugins:\n  event_log:\n    format: text\n").is_ok());
    }

    #[test]
    fn secrets_are_marked_by_tag_or_by_list() {
        let s = load(
            "plugins:\n  p:\n    endpoint: !secret https://push.example/x\n    nested:\n      pin: !secret 1234\n    user: bob\n    pass: hunter22\n    secrets: [pass]\n",
        )
        .unwrap();
        let p = &s.entries[0];
        assert_eq!(
            p.config["endpoint"], "https://push.example/x",
            "the tag is taken off"
        );
        assert_eq!(p.config["nested"]["pin"], 1234);
        assert!(p.config.get("secrets").is_none());
        assert_eq!(
            p.secrets,
            vec!["1234", "https://push.example/x", "hunter22"]
        );
        let shown = p.shown_config();
        assert_eq!(shown["endpoint"], "<redacted>");
        assert_eq!(shown["pass"], "<redacted>");
        assert_eq!(shown["nested"]["pin"], "<redacted>");
        assert_eq!(shown["user"], "bob");
        let e = err("plugins:\n  p:\n    a: 1\n    b: !sekret x\n");
        assert!(
            e.starts_with("c.yaml:4: plugins.p.b: unknown tag `!sekret`"),
            "{e}"
        );
    }

    #[test]
    fn instances_name_their_implementation() {
        let s = load(
            "plugins:\n  push_a:\n    plugin: event_log\n    file: a\n  push_b:\n    plugin: event_log\n    file: b\n  event_log:\n    file: c\n",
        )
        .unwrap();
        let names: Vec<(&str, &str)> = s
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.implementation()))
            .collect();
        assert_eq!(
            names,
            [
                ("push_a", "event_log"),
                ("push_b", "event_log"),
                ("event_log", "event_log")
            ]
        );
        assert!(s.entries[0].config.get("plugin").is_none());
        let shown = serde_json::to_value(&s).unwrap();
        assert_eq!(shown["push_a"]["plugin"], "event_log");
        assert!(shown["event_log"].get("plugin").is_none());
        assert_eq!(
            s.entries[1]
                .origin
                .as_ref()
                .unwrap()
                .at(Some("plugin"))
                .rsplit(':')
                .next(),
            Some("6")
        );
    }

    #[test]
    fn hostile_sections_are_errors_not_panics() {
        for text in [
            "plugins:\n  p: !secret\n",
            "plugins:\n  p:\n    !secret k: v\n",
            "plugins:\n  p:\n    1: v\n",
            "plugins:\n  p:\n    [a]: v\n",
            "plugins:\n  '':\n    a: 1\n",
            "plugins:\n  p:\n    secrets: [[a]]\n",
            "plugins:\n  p:\n    enabled: !secret true\n    a: !secret [!secret x, {b: !secret y}]\n",
        ] {
            let _ = load(text);
        }
    }
}
