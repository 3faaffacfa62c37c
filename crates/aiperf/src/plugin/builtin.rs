//! Plugins compiled into aiperf.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use aiperf_plugin::{Hook, RunContext};
use serde_json::{json, Value};

use super::{HookError, HookEvent, HookResult, Plugin};

/// Builds a built-in plugin from its config and the run's context.
pub type BuildFn = fn(&Value, &Arc<RunContext>) -> Result<Box<dyn Plugin>, String>;

/// A built-in plugin's entry in the catalogue.
pub struct BuiltinPlugin {
    pub name: &'static str,
    pub description: &'static str,
    pub config_schema: fn() -> Option<Value>,
    /// Builds the plugin from its config and the run's context.
    pub build: BuildFn,
}

impl std::fmt::Debug for BuiltinPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltinPlugin")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

pub const BUILTINS: &[BuiltinPlugin] = &[
    BuiltinPlugin {
        name: "event_log",
        description:
            "appends every lifecycle event to a file (JSON lines, or text with format: text)",
        config_schema: event_log_schema,
        build: EventLog::build,
    },
    BuiltinPlugin {
        name: "prometheus",
        description:
            "pushes each phase's counts and latency statistics to a Prometheus Pushgateway",
        config_schema: super::prometheus::schema,
        build: super::prometheus::Prometheus::build,
    },
    BuiltinPlugin {
        name: "webhook",
        description: "posts the run's summary (JSON, or a Slack message) to a URL at the end of the run",
        config_schema: super::webhook::schema,
        build: super::webhook::Webhook::build,
    },
    BuiltinPlugin {
        name: "otlp",
        description:
            "exports each phase's counts and latency statistics to an OpenTelemetry collector (OTLP/HTTP)",
        config_schema: super::otlp::schema,
        build: super::otlp::Otlp::build,
    },
    BuiltinPlugin {
        name: "prometheus_exporter",
        description: "serves live metrics (latency histograms, request counts, throughput) on an HTTP endpoint for Prometheus to scrape",
        config_schema: super::prometheus_exporter::schema,
        build: super::prometheus_exporter::PrometheusExporter::build,
    },
];

pub fn find(name: &str) -> Option<&'static BuiltinPlugin> {
    BUILTINS
        .iter()
        .find(|b| b.name == name || b.name.replace('_', "-") == name)
}

fn event_log_schema() -> Option<Value> {
    Some(json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "file": {"type": "string"},
            "format": {"enum": ["json", "text"]},
            "hooks": {"type": "array", "items": {"enum": Hook::ALL.iter().map(|h| h.as_str()).collect::<Vec<_>>()}}
        },
        "required": ["file"]
    }))
}

/// `event_log`: one line per event (the lifecycle hooks unless `hooks:` lists others). `format: text` writes `event_log <hook> <phase|->`;
/// the default `json` writes the whole event (hook, phase, stats, summary, and the run's
/// context on `benchmark_start`).
pub struct EventLog {
    path: PathBuf,
    text: bool,
    hooks: Vec<Hook>,
}

impl EventLog {
    fn build(config: &Value, _context: &Arc<RunContext>) -> Result<Box<dyn Plugin>, String> {
        let path = config["file"].as_str().ok_or("`file` is required")?;
        let hooks = match config.get("hooks").and_then(Value::as_array) {
            Some(list) => list
                .iter()
                .filter_map(Value::as_str)
                .map(|s| s.parse::<Hook>().map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()?,
            None => Hook::LIFECYCLE.to_vec(),
        };
        // Open once now so a bad path is reported at startup, not at the first event. The
        // directory must exist: a typo'd path fails the config instead of creating a tree.
        if let Some(dir) = std::path::Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            if !dir.is_dir() {
                return Err(format!(
                    "`file`: directory {} does not exist",
                    dir.display()
                ));
            }
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open {path}: {e}"))?;
        Ok(Box::new(EventLog {
            path: PathBuf::from(path),
            text: config["format"].as_str() == Some("text"),
            hooks,
        }))
    }
}

#[async_trait::async_trait]
impl Plugin for EventLog {
    fn hooks(&self) -> Vec<Hook> {
        self.hooks.clone()
    }

    async fn on_event(&mut self, e: &HookEvent) -> HookResult {
        let phase = e.phase.map(|p| p.as_str()).unwrap_or("-");
        let line = if self.text {
            format!("event_log {} {phase}\n", e.hook)
        } else {
            let mut v = json!({"hook": e.hook, "phase": e.phase, "stats": e.stats, "summary": e.summary.as_deref()});
            if let Some(ctx) = &e.context {
                v["context"] = json!(&**ctx);
            }
            if let Some(sm) = &e.server_metrics {
                v["server_metrics"] = (**sm).clone();
            }
            format!("{v}\n")
        };
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            f.write_all(line.as_bytes())
        })
        .await
        .map_err(|e| HookError::Hook(e.to_string()))?
        .map_err(|e| HookError::Hook(format!("cannot write event log: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_log_with_an_impossible_path_fails_its_config_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no/such/dir");
        let file = missing.join("events.jsonl");
        let ctx = Arc::new(RunContext::default());
        let err = EventLog::build(&json!({"file": file.display().to_string()}), &ctx)
            .err()
            .expect("a missing directory is refused");
        assert!(err.contains("does not exist"), "{err}");
        assert!(!dir.path().join("no").exists(), "no directory was created");
        let ok = dir.path().join("events.jsonl");
        assert!(EventLog::build(&json!({"file": ok.display().to_string()}), &ctx).is_ok());
        assert!(ok.is_file());
    }
}
