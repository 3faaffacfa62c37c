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

/// One entry of the `plugins:` section, after `${VAR}` substitution.
#[derive(Debug, Clone)]
pub struct PluginEntry {
    pub name: String,
    /// The plugin's own config (host keys `enabled`, `path`, `timeout_seconds` removed).
    pub config: Value,
    /// Why the plugin is off; `None` when it is enabled.
    pub disabled: Option<DisabledReason>,
    pub path: Option<PathBuf>,
    pub timeout: Duration,
}

impl PluginEntry {
    pub fn enabled(&self) -> bool {
        self.disabled.is_none()
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

/// As the export's `input_config.plugins`: `{name: {enabled, config (secrets hidden),
/// timeout_seconds}}`.
impl Serialize for PluginsSection {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            enabled: bool,
            config: Value,
            #[serde(serialize_with = "crate::units::secs")]
            timeout_seconds: &'a Duration,
        }
        let mut map = s.serialize_map(Some(self.entries.len()))?;
        for p in &self.entries {
            let shown = Shown {
                enabled: p.enabled(),
                config: crate::secret::redact(&p.config),
                timeout_seconds: &p.timeout,
            };
            map.serialize_entry(&p.name, &shown)?;
        }
        map.end()
    }
}
