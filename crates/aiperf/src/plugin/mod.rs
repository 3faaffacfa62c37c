//! The hook registry: the orchestrator emits phase events here, plugins receive them.
//! (Placeholder until the plugin system lands: no plugins.)

use aiperf_plugin::{Hook, PhaseStats};
use serde_json::Value;

use crate::metrics::PhaseKind;

#[derive(Default)]
pub struct HookRegistry {}

impl HookRegistry {
    pub fn empty() -> Self {
        Self::default()
    }

    /// Queues an event for every plugin that wants it; never blocks.
    pub fn emit(
        &self,
        _hook: Hook,
        _phase: Option<PhaseKind>,
        _stats: Option<PhaseStats>,
        _summary: Option<Value>,
    ) {
    }

    /// Delivers an event and waits (bounded by each plugin's timeout) until all plugins acked.
    pub async fn emit_and_wait(
        &self,
        _hook: Hook,
        _phase: Option<PhaseKind>,
        _stats: Option<PhaseStats>,
    ) {
    }
}

/// What the plugins did during a run: status and per-hook counts.
#[derive(Debug, Default)]
pub struct PluginsReport {}

impl PluginsReport {
    pub fn to_json(&self) -> Value {
        Value::Object(Default::default())
    }

    /// With `--strict-plugins`, the first plugin failure, if any.
    pub fn strict_failure(&self, _strict: bool) -> Option<String> {
        None
    }
}

impl HookRegistry {
    /// Delivers queued events, shuts every plugin down and reports.
    pub async fn finish(self) -> PluginsReport {
        PluginsReport::default()
    }
}
