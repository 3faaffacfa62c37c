//! The `plugins:` section: each plugin's own settings, with the host's keys (`enabled`,
//! `path`, `timeout_seconds`) taken out and `${VAR}` substituted. An unset variable disables
//! only that plugin.

use std::path::PathBuf;
use std::time::Duration;

use super::file::{yaml_scalar, KeyLines};
use super::{env, ConfigError};
use crate::plugin::{DisabledReason, PluginEntry, PluginsSection};

const HOST_KEYS: [&str; 3] = ["enabled", "path", "timeout_seconds"];

/// A hook's time limit when the section does not set `timeout_seconds`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) fn parse_plugins(
    section: serde_yaml::Mapping,
    file: &str,
    text: &str,
) -> Result<PluginsSection, ConfigError> {
    let mut entries = Vec::new();
    let key_lines = KeyLines::new(text, Some("plugins"));
    for (k, v) in section {
        let name = yaml_scalar(&k).unwrap_or_default();
        let line = key_lines.get(&name);
        let err = |message: String| ConfigError::File {
            file: file.into(),
            line,
            message,
        };
        entries.push(parse_entry(name.clone(), v).map_err(err)?);
    }
    Ok(PluginsSection {
        entries,
        ..Default::default()
    })
}

/// One plugin's section; the error is the message for the plugin's line.
fn parse_entry(name: String, v: serde_yaml::Value) -> Result<PluginEntry, String> {
    let mut map = match v {
        serde_yaml::Value::Mapping(m) => m,
        serde_yaml::Value::Null => serde_yaml::Mapping::new(),
        _ => return Err(format!("plugin `{name}` must be a mapping of its settings")),
    };
    let mut disabled = None;
    let mut value = serde_yaml::Value::Mapping(map.clone());
    if let Err(var) = env::substitute_yaml(&mut value, &env::env_lookup) {
        disabled = Some(DisabledReason::MissingVariable(var));
    } else if let serde_yaml::Value::Mapping(m) = value {
        map = m;
    }
    let enabled = match map.get("enabled") {
        None => true,
        Some(serde_yaml::Value::Bool(b)) => *b,
        Some(serde_yaml::Value::String(s)) if s == "true" || s == "false" => s == "true",
        Some(_) => return Err(format!("plugins.{name}.enabled must be true or false")),
    };
    if !enabled {
        disabled = Some(DisabledReason::InConfig);
    }
    let path = map.get("path").and_then(yaml_scalar).map(PathBuf::from);
    let timeout = match map.get("timeout_seconds") {
        None => DEFAULT_TIMEOUT,
        Some(v) => yaml_scalar(v)
            .ok_or_else(|| "a number".to_string())
            .and_then(|s| crate::units::positive_seconds(&s))
            .map_err(|e| format!("plugins.{name}.timeout_seconds: {e}"))?,
    };
    for key in HOST_KEYS {
        map.remove(key);
    }
    let config = serde_json::to_value(&map).map_err(|e| format!("plugin `{name}`: {e}"))?;
    Ok(PluginEntry {
        name,
        config,
        disabled,
        path,
        timeout,
    })
}
