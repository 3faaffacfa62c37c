//! The `plugins:` section of the config, as the host uses it: one entry per configured
//! plugin, with the host's own keys taken out and the reason a plugin is off, when it is.

use std::path::PathBuf;
use std::time::Duration;

use serde::ser::SerializeMap;
use serde::Serialize;
use serde_json::Value;

/// Why a configured plugin does not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisabledReason {
    /// `enabled: false` in its section: a choice, not a failure.
    InConfig,
    /// A `${VAR}` in its section names an unset variable: a failure (`--strict-plugins`).
    MissingVariable(String),
}

impl DisabledReason {
    /// Whether the user chose this (no warning, not a `--strict-plugins` failure).
    pub fn is_choice(&self) -> bool {
        matches!(self, DisabledReason::InConfig)
    }
}

impl std::fmt::Display for DisabledReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DisabledReason::InConfig => f.write_str("enabled: false in config"),
            DisabledReason::MissingVariable(var) => {
                write!(f, "environment variable `{var}` is not set")
            }
        }
    }
}

/// Where a plugin's section is in the config file, to name `file:line` in errors about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigOrigin {
    pub file: String,
    /// The line of the section's own key (`push_a:`).
    pub line: usize,
    /// The lines of the section's keys (the plugin's top-level settings).
    pub keys: std::collections::HashMap<String, usize>,
}

impl ConfigOrigin {
    /// `file:line` of one of the section's keys (the section's line when it is not placed).
    pub fn at(&self, key: Option<&str>) -> String {
        let line = key
            .and_then(|k| self.keys.get(k).copied())
            .unwrap_or(self.line);
        format!("{}:{line}", self.file)
    }
}

/// One entry of the `plugins:` section, after `${VAR}` substitution.
#[derive(Debug, Clone, Default)]
pub struct PluginEntry {
    /// The instance name: the section's key, shown in the report, logs and `plugins list`.
    pub name: String,
    /// The implementation (built-in, executable or Python entry point): `plugin:` in the
    /// section, else the instance name.
    pub plugin: String,
    /// The plugin's own config (host keys `enabled`, `path`, `timeout_seconds`, `plugin`,
    /// `secrets` removed; `!secret` tags taken off).
    pub config: Value,
    /// Values the user marked secret (`!secret`, `secrets:`), hidden wherever shown.
    pub secrets: Vec<String>,
    /// Where the section is, when it came from a file.
    pub origin: Option<std::sync::Arc<ConfigOrigin>>,
    /// Why the plugin is off; `None` when it is enabled.
    pub disabled: Option<DisabledReason>,
    pub path: Option<PathBuf>,
    pub timeout: Duration,
    /// How often the plugin gets `progress` (`progress_interval_seconds`).
    pub progress_interval: Duration,
    /// How many batches of `request_records` may wait for the plugin before more are
    /// dropped (`records_queue`).
    pub records_queue: usize,
}

impl PluginEntry {
    pub fn enabled(&self) -> bool {
        self.disabled.is_none()
    }

    /// The implementation's name: `plugin:`, else the instance name.
    pub fn implementation(&self) -> &str {
        if self.plugin.is_empty() {
            &self.name
        } else {
            &self.plugin
        }
    }

    /// The config as shown anywhere (report, messages): secrets of every kind hidden.
    pub fn shown_config(&self) -> Value {
        crate::secret::redact_with(&self.config, &self.secrets)
    }
}

/// Every configured plugin, plus the command line's switches over all of them.
#[derive(Debug, Clone, Default)]
pub struct PluginsSection {
    pub entries: Vec<PluginEntry>,
    /// `--no-plugins`: none runs.
    pub no_plugins: bool,
    /// `--strict-plugins`: any plugin failure fails the run.
    pub strict: bool,
}

/// As the export's `input_config.plugins`: `{instance: {plugin (when not the instance's
/// name), enabled, config (secrets hidden), timeout_seconds}}`.
impl Serialize for PluginsSection {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            plugin: Option<&'a str>,
            enabled: bool,
            config: Value,
            #[serde(serialize_with = "crate::units::secs")]
            timeout_seconds: &'a Duration,
        }
        let mut map = s.serialize_map(Some(self.entries.len()))?;
        for p in &self.entries {
            let shown = Shown {
                plugin: (p.implementation() != p.name).then(|| p.implementation()),
                enabled: p.enabled(),
                config: p.shown_config(),
                timeout_seconds: &p.timeout,
            };
            map.serialize_entry(&p.name, &shown)?;
        }
        map.end()
    }
}
