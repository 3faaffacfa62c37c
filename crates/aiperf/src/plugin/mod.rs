//! The plugin system: the hook registry the orchestrator emits to, the [`Plugin`] trait,
//! and failure isolation.
//!
//! Every active plugin gets its own task and event queue, so a slow plugin delays only
//! itself, never requests or other plugins. Each hook call is bounded by the plugin's
//! timeout; a plugin that times out, crashes or misbehaves is disabled and the run goes on.

pub mod builtin;
pub mod discovery;
pub mod feed;
pub mod otlp;
pub mod process;
pub mod prometheus;
pub mod prometheus_exporter;
pub mod report;
mod spec;
pub mod webhook;

pub use feed::{ProgressGuard, RecordFeed, RecordPoint, RollingWindow, StatsFn, WindowStats};
pub use spec::{ConfigOrigin, DisabledReason, PluginEntry, PluginsSection};

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiperf_plugin::{Hook, PhaseStats, PluginReport, ProgressWindow, RunContext};
use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::PhaseKind;
use crate::secret::is_secret_key;

/// One lifecycle event, as every plugin sees it.
#[derive(Debug, Clone)]
pub struct HookEvent {
    pub hook: Hook,
    /// `None` for benchmark hooks.
    pub phase: Option<PhaseKind>,
    /// The phase's stats (the seed's `tracker.create_stats()`); `None` for benchmark hooks.
    pub stats: Option<PhaseStats>,
    /// The metric summary (shape of `profile_export_aiperf.json`) on `phase_complete` and
    /// `benchmark_complete`.
    pub summary: Option<Arc<Value>>,
    /// The run's context on `benchmark_start`; `None` on every other hook.
    pub context: Option<Arc<RunContext>>,
    /// `request_records`: a batch of the phase's finished requests, each one line of
    /// `profile_export.jsonl` as JSON, oldest first. `None` on every other hook.
    pub records: Option<Arc<Vec<Value>>>,
    /// `request_records`: records this plugin lost so far because its queue was full.
    pub dropped_records: Option<u64>,
    /// `progress`: rolling metrics over the plugin's progress interval.
    pub window: Option<Arc<ProgressWindow>>,
    /// `phase_complete`: the server metrics over the phase's window, when scraped.
    pub server_metrics: Option<Arc<Value>>,
}

impl HookEvent {
    /// An event with only its hook, phase and stats (the rest `None`).
    pub fn new(hook: Hook, phase: Option<PhaseKind>, stats: Option<PhaseStats>) -> Self {
        Self {
            hook,
            phase,
            stats,
            summary: None,
            context: None,
            records: None,
            dropped_records: None,
            window: None,
            server_metrics: None,
        }
    }
}

/// Why a hook call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HookError {
    /// The hook failed; the plugin stays enabled.
    #[error("{0}")]
    Hook(String),
    /// The plugin can't go on (process died, wrote garbage); it is disabled.
    #[error("{0}")]
    Fatal(String),
}

pub type HookResult = Result<(), HookError>;

/// A plugin: built from its config, it says which hooks it wants; every hook is async and
/// does nothing unless implemented (the shape of ripgrep's `Sink`).
#[async_trait::async_trait]
pub trait Plugin: Send {
    /// The hooks to call (the seed's `register_hooks()`).
    fn hooks(&self) -> Vec<Hook>;

    async fn on_benchmark_start(&mut self, _e: &HookEvent) -> HookResult {
        Ok(())
    }
    async fn on_phase_start(&mut self, _e: &HookEvent) -> HookResult {
        Ok(())
    }
    async fn on_phase_sending_complete(&mut self, _e: &HookEvent) -> HookResult {
        Ok(())
    }
    async fn on_phase_timeout(&mut self, _e: &HookEvent) -> HookResult {
        Ok(())
    }
    async fn on_phase_complete(&mut self, _e: &HookEvent) -> HookResult {
        Ok(())
    }
    async fn on_benchmark_complete(&mut self, _e: &HookEvent) -> HookResult {
        Ok(())
    }
    /// A batch of finished requests (opt in with [`Hook::RequestRecords`]).
    async fn on_request_records(&mut self, _e: &HookEvent) -> HookResult {
        Ok(())
    }
    /// Live stats and rolling metrics (opt in with [`Hook::Progress`]).
    async fn on_progress(&mut self, _e: &HookEvent) -> HookResult {
        Ok(())
    }

    /// What the plugin adds to the run's report (`plugins.<name>.report`), asked once after
    /// the last event, before [`Plugin::shutdown`].
    async fn report(&mut self) -> Option<PluginReport> {
        None
    }

    /// Routes an event to its hook method. External plugins override this to forward it.
    async fn on_event(&mut self, e: &HookEvent) -> HookResult {
        match e.hook {
            Hook::BenchmarkStart => self.on_benchmark_start(e).await,
            Hook::PhaseStart => self.on_phase_start(e).await,
            Hook::PhaseSendingComplete => self.on_phase_sending_complete(e).await,
            Hook::PhaseTimeout => self.on_phase_timeout(e).await,
            Hook::PhaseComplete => self.on_phase_complete(e).await,
            Hook::BenchmarkComplete => self.on_benchmark_complete(e).await,
            Hook::RequestRecords => self.on_request_records(e).await,
            Hook::Progress => self.on_progress(e).await,
            Hook::SweepStart | Hook::SweepComplete => self.on_sweep(e).await,
        }
    }

    /// `sweep_start` or `sweep_complete` (opt in): they wrap the runs of a sweep.
    async fn on_sweep(&mut self, _e: &HookEvent) -> HookResult {
        Ok(())
    }

    /// Called once at the end (external plugins stop their process here).
    async fn shutdown(&mut self) {}

    /// Stops a plugin that failed or hung, at once (external plugins are killed).
    async fn abort(&mut self) {
        self.shutdown().await
    }
}

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    Builtin,
    External,
    Python,
}

impl PluginKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            PluginKind::Builtin => "builtin",
            PluginKind::External => "external",
            PluginKind::Python => "python",
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HookCounts {
    pub calls: u64,
    pub errors: u64,
    pub timeouts: u64,
}

/// One configured plugin's fate during the run. Serialised as its entry in the export's
/// `plugins` section (the name is the key).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginStatus {
    #[serde(skip)]
    pub name: String,
    pub kind: Option<PluginKind>,
    pub path: Option<String>,
    pub version: Option<String>,
    /// `"status": "active"` or `"disabled"`.
    #[serde(rename = "status", serialize_with = "active_or_disabled")]
    pub active: bool,
    /// Why it is disabled (or was disabled mid-run).
    pub reason: Option<String>,
    /// A failure that `--strict-plugins` turns into exit 1 (`enabled: false` is not one).
    #[serde(skip)]
    pub failed: bool,
    pub hooks: BTreeMap<Hook, HookCounts>,
    /// `request_records`: delivered and dropped (the plugin fell behind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<feed::RecordCounts>,
    /// `progress`: sent, and skipped while the plugin still had the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<feed::ProgressCounts>,
    /// What the plugin added to the report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<PluginReport>,
}

fn active_or_disabled<S: serde::Serializer>(active: &bool, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if *active { "active" } else { "disabled" })
}

impl PluginStatus {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            kind: None,
            path: None,
            version: None,
            active: false,
            reason: None,
            failed: false,
            hooks: BTreeMap::new(),
            records: None,
            progress: None,
            report: None,
        }
    }
}

struct Delivery {
    event: Arc<HookEvent>,
    ack: Option<oneshot::Sender<()>>,
    /// Decremented once the event is handled (how many `request_records` or `progress`
    /// events the plugin has waiting).
    done: Option<Arc<AtomicUsize>>,
}

struct Runner {
    tx: mpsc::UnboundedSender<Delivery>,
    task: tokio::task::JoinHandle<()>,
}

/// Replaces every known secret value in text headed for a log.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Arc<Vec<String>>,
}

impl Redactor {
    /// Collects the values of secret-looking keys in every plugin config, the values marked
    /// secret (`!secret`, `secrets:`), the credentials inside strings
    /// ([`crate::secret::credential_parts`]: URL userinfo, token parameters, webhook paths,
    /// header values), plus `extra`.
    pub fn new(plugins: &PluginsSection, extra: &[String]) -> Self {
        fn walk(v: &Value, secret: bool, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    for (k, v) in m {
                        walk(v, secret || is_secret_key(k), out);
                    }
                }
                Value::Array(a) => a.iter().for_each(|v| walk(v, secret, out)),
                Value::String(s) if secret && s.len() >= 4 => out.push(s.clone()),
                Value::String(s) => out.extend(
                    crate::secret::credential_parts(s)
                        .into_iter()
                        .filter(|p| p.len() >= 4)
                        .map(str::to_string),
                ),
                Value::Number(n) if secret => out.push(n.to_string()),
                _ => {}
            }
        }
        let mut secrets: Vec<String> = extra.iter().filter(|s| s.len() >= 4).cloned().collect();
        for p in &plugins.entries {
            walk(&p.config, false, &mut secrets);
            secrets.extend(p.secrets.iter().filter(|s| s.len() >= 4).cloned());
        }
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self {
            secrets: Arc::new(secrets),
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in self.secrets.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "<redacted>");
            }
        }
        out
    }

    /// Length in bytes of the longest secret (0 without secrets).
    pub fn longest(&self) -> usize {
        self.secrets.first().map_or(0, String::len)
    }

    /// The largest cut `<= at` (a char boundary of `text`) that splits no secret, so that
    /// `redact(&text[..cut])` shows no piece of one.
    pub fn safe_cut(&self, text: &str, at: usize) -> usize {
        let mut at = at.min(text.len());
        loop {
            // An occurrence starting before `at` and ending after it.
            let straddling = self.secrets.iter().filter(|s| !s.is_empty()).find_map(|s| {
                (at.saturating_sub(s.len() - 1)..at)
                    .find(|&i| text.is_char_boundary(i) && text[i..].starts_with(s.as_str()))
            });
            match straddling {
                Some(i) => at = i,
                None => return at,
            }
        }
    }
}

/// Built once at startup and shared read-only: the orchestrator emits, plugins receive.
#[derive(Default)]
pub struct HookRegistry {
    runners: Vec<Runner>,
    statuses: Vec<Arc<Mutex<PluginStatus>>>,
    /// The longest hook timeout, to bound waits on `phase_start`.
    max_timeout: Duration,
    /// The run's context, attached to `benchmark_start`.
    context: Option<Arc<RunContext>>,
    /// Config mistakes found when starting plugins (a key the plugin's schema forbids),
    /// each naming `file:line`: the run stops with exit 2.
    config_errors: Vec<String>,
    /// Finished requests for the plugins that take `request_records` or `progress`.
    feed: Option<RecordFeed>,
    /// The plugins that take `progress`.
    progress: Vec<feed::ProgressSubscriber>,
}

fn warn_disabled(name: &str, why: &str) {
    eprintln!("warning: plugin `{name}` disabled: {why}");
}

/// Why a configured plugin does not start (`--no-plugins`, or its own section), and whether
/// that is a failure: a missing variable is (a warning, and `--strict-plugins` fails);
/// `enabled: false` and `--no-plugins` are choices.
fn off_reason(section: &PluginsSection, entry: &PluginEntry) -> Option<(String, bool)> {
    if section.no_plugins {
        return Some(("--no-plugins".into(), false));
    }
    entry
        .disabled
        .as_ref()
        .map(|d| (d.to_string(), !d.is_choice()))
}

/// Records a plugin that was not started.
fn record_off(entry: &PluginEntry, status: &Mutex<PluginStatus>, (why, failed): (String, bool)) {
    let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
    if failed {
        warn_disabled(&entry.name, &why);
        st.failed = true;
    }
    st.reason = Some(why);
}

impl HookRegistry {
    /// A registry with no plugins.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Discovers, starts and configures every plugin enabled under `plugins:`, handing each
    /// the run's context (built-ins at construction, external plugins in `configure` and
    /// their environment). A plugin that can't start is disabled with a one-line warning; it
    /// never stops the run.
    pub async fn load(
        section: &PluginsSection,
        redactor: &Redactor,
        context: Arc<RunContext>,
    ) -> Self {
        let mut reg = Self {
            context: Some(context.clone()),
            ..Self::default()
        };
        let search = discovery::SearchPath::from_env();
        let mut python_cache = discovery::PythonPlugins::default();
        let starts = section.entries.iter().map(|entry| {
            let status = Arc::new(Mutex::new(PluginStatus::new(&entry.name)));
            reg.statuses.push(status.clone());
            (entry, status)
        });
        let mut pending = Vec::new();
        for (entry, status) in starts {
            if let Some(why) = off_reason(section, entry) {
                record_off(entry, &status, why);
                continue;
            }
            let found = discovery::locate(
                entry.implementation(),
                entry.path.as_deref(),
                &search,
                &mut python_cache,
            )
            .await;
            // An instance naming an implementation that does not exist is a config mistake.
            if let (Err(e), Some(origin)) = (&found, &entry.origin) {
                if entry.implementation() != entry.name && entry.path.is_none() {
                    reg.config_errors.push(format!(
                        "{}: plugins.{}: plugin `{}` {e}",
                        origin.at(Some("plugin")),
                        entry.name,
                        entry.implementation()
                    ));
                }
            }
            pending.push((entry.clone(), status, found));
        }
        // Start external plugins concurrently: handshakes can take a while (Python startup).
        let started =
            futures_util::future::join_all(pending.into_iter().map(|(entry, status, found)| {
                let redactor = redactor.clone();
                let context = context.clone();
                async move {
                    let result = match found {
                        Ok(loc) => start_plugin(&entry, &loc, &redactor, &context)
                            .await
                            .map(|p| (p, loc)),
                        Err(e) => Err(e),
                    };
                    (entry, status, result)
                }
            }))
            .await;
        let mut records = Vec::new();
        for (entry, status, result) in started {
            match result {
                Ok((plugin, loc)) => {
                    {
                        let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
                        st.kind = Some(loc.kind());
                        st.path = loc.command().map(|c| c.path.display().to_string());
                        st.version = plugin.1.clone();
                        st.active = true;
                        for h in plugin.0.hooks() {
                            st.hooks.insert(h, HookCounts::default());
                        }
                    }
                    reg.max_timeout = reg.max_timeout.max(entry.timeout);
                    let wants = plugin.0.hooks();
                    let runner =
                        spawn_runner(plugin.0, entry.timeout, status.clone(), redactor.clone());
                    if wants.contains(&Hook::RequestRecords) {
                        records.push(feed::Subscriber {
                            tx: runner.tx.clone(),
                            pending: Arc::new(AtomicUsize::new(0)),
                            cap: entry.records_queue.max(1),
                            status: status.clone(),
                        });
                    }
                    if wants.contains(&Hook::Progress) {
                        reg.progress.push(feed::ProgressSubscriber {
                            tx: runner.tx.clone(),
                            interval: entry.progress_interval.max(Duration::from_millis(100)),
                            pending: Arc::new(AtomicUsize::new(0)),
                            status: status.clone(),
                        });
                    }
                    reg.runners.push(runner);
                    tracing::info!("plugin `{}` active", entry.name);
                }
                Err(why) => {
                    let why = redactor.redact(&why);
                    if entry.origin.is_some() && why.contains(UNKNOWN_KEY) {
                        reg.config_errors
                            .push(format!("plugin `{}`: {why}", entry.name));
                    }
                    let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
                    warn_disabled(&entry.name, &why);
                    st.reason = Some(why);
                    st.failed = true;
                }
            }
        }
        if !records.is_empty() || !reg.progress.is_empty() {
            let keep = reg.progress.iter().map(|p| p.interval).max();
            reg.feed = Some(RecordFeed::new(
                records,
                keep.is_some(),
                keep.unwrap_or_default(),
            ));
        }
        reg
    }

    /// The feed the record processor pushes finished requests into, when a plugin takes
    /// `request_records` or `progress`.
    pub fn record_feed(&self) -> Option<RecordFeed> {
        self.feed.clone()
    }

    /// Starts `progress` for the phase that just started, when a plugin takes it; it stops
    /// when the guard is dropped.
    pub fn start_progress(&self, phase: PhaseKind, stats: StatsFn) -> Option<ProgressGuard> {
        (!self.progress.is_empty())
            .then(|| feed::start_progress(&self.progress, self.feed.clone(), phase, stats))
    }

    /// A registry of one in-process plugin, active, for tests of code that emits hooks.
    #[cfg(test)]
    pub(crate) fn with_plugin(name: &str, plugin: Box<dyn Plugin>, timeout: Duration) -> Self {
        let status = Arc::new(Mutex::new(PluginStatus::new(name)));
        status.lock().unwrap_or_else(|e| e.into_inner()).active = true;
        let runner = spawn_runner(plugin, timeout, status.clone(), Redactor::default());
        Self {
            runners: vec![runner],
            statuses: vec![status],
            max_timeout: timeout,
            ..Self::default()
        }
    }

    /// A config mistake found while starting the plugins (a key a plugin's schema forbids),
    /// naming `file:line`: the caller stops with exit 2.
    pub fn config_error(&self) -> Option<String> {
        (!self.config_errors.is_empty()).then(|| self.config_errors.join("; "))
    }

    /// A plugin that failed to start (for `--strict-plugins`, before any request is sent).
    pub fn startup_failure(&self) -> Option<String> {
        let failures: Vec<String> = self
            .statuses
            .iter()
            .filter_map(|s| {
                let s = s.lock().unwrap_or_else(|e| e.into_inner());
                s.failed.then(|| {
                    format!(
                        "plugin `{}`: {}",
                        s.name,
                        s.reason.clone().unwrap_or_default()
                    )
                })
            })
            .collect();
        (!failures.is_empty()).then(|| failures.join("; "))
    }

    /// Queues an event for every active plugin that wants it; never blocks.
    pub fn emit(
        &self,
        hook: Hook,
        phase: Option<PhaseKind>,
        stats: Option<PhaseStats>,
        summary: Option<Value>,
    ) {
        self.emit_with_server_metrics(hook, phase, stats, summary, None)
    }

    /// [`emit`](Self::emit) with the server metrics of the phase (`phase_complete`).
    pub fn emit_with_server_metrics(
        &self,
        hook: Hook,
        phase: Option<PhaseKind>,
        stats: Option<PhaseStats>,
        summary: Option<Value>,
        server_metrics: Option<Value>,
    ) {
        let event = Arc::new(HookEvent {
            hook,
            phase,
            stats,
            summary: summary.map(Arc::new),
            context: self
                .context
                .clone()
                .filter(|_| matches!(hook, Hook::BenchmarkStart | Hook::SweepStart)),
            records: None,
            dropped_records: None,
            window: None,
            server_metrics: server_metrics.map(Arc::new),
        });
        for r in &self.runners {
            let _ = r.tx.send(Delivery {
                event: event.clone(),
                ack: None,
                done: None,
            });
        }
    }

    /// Delivers an event and waits until every plugin has handled it, each bounded by its
    /// own timeout (used for `phase_start`, which must finish before the first request).
    pub async fn emit_and_wait(
        &self,
        hook: Hook,
        phase: Option<PhaseKind>,
        stats: Option<PhaseStats>,
    ) {
        let event = Arc::new(HookEvent {
            hook,
            phase,
            stats,
            summary: None,
            context: self
                .context
                .clone()
                .filter(|_| matches!(hook, Hook::BenchmarkStart | Hook::SweepStart)),
            records: None,
            dropped_records: None,
            window: None,
            server_metrics: None,
        });
        let mut acks = Vec::new();
        for r in &self.runners {
            let (tx, rx) = oneshot::channel();
            if r.tx
                .send(Delivery {
                    event: event.clone(),
                    ack: Some(tx),
                    done: None,
                })
                .is_ok()
            {
                acks.push(rx);
            }
        }
        // Queued earlier events count against the bound too; this is a backstop only.
        let backstop = self.max_timeout * 4 + Duration::from_secs(1);
        let _ = tokio::time::timeout(backstop, futures_util::future::join_all(acks)).await;
    }

    /// Delivers what is queued, shuts every plugin down and reports what happened.
    pub async fn finish(mut self) -> PluginsReport {
        if let Some(feed) = self.feed.take() {
            feed.close();
        }
        self.progress.clear();
        let mut tasks = Vec::new();
        for r in self.runners {
            drop(r.tx);
            tasks.push(r.task);
        }
        for t in tasks {
            let _ = t.await;
        }
        PluginsReport {
            plugins: self
                .statuses
                .iter()
                .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone())
                .collect(),
        }
    }
}

/// A started plugin and its version (when it told us one).
type Started = (Box<dyn Plugin>, Option<String>);

async fn start_plugin(
    entry: &PluginEntry,
    loc: &discovery::Located,
    redactor: &Redactor,
    context: &Arc<RunContext>,
) -> Result<Started, String> {
    match &loc.location {
        discovery::Location::Builtin(b) => {
            if let Some(schema) = (b.config_schema)() {
                validate_config_at(&schema, &entry.config, entry.origin.as_deref())?;
            }
            let p = (b.build)(&entry.config, context)?;
            Ok((p, Some(env!("CARGO_PKG_VERSION").to_string())))
        }
        discovery::Location::Executable(cmd) | discovery::Location::Python(cmd) => {
            let p = process::ProcessPlugin::start_at(
                &entry.name,
                entry.implementation(),
                &cmd.path,
                &cmd.args,
                &entry.config,
                Some(context),
                entry.timeout,
                redactor.clone(),
                entry.origin.clone(),
            )
            .await?;
            let version = Some(p.version().to_string());
            Ok((Box::new(p), version))
        }
    }
}

/// What [`schema_problems`] says of an unknown key, and how the load recognises it.
const UNKNOWN_KEY: &str = "unknown key `";

/// One thing a plugin's schema finds wrong with its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaProblem {
    /// The top-level key it is about (`None`: the config as a whole).
    pub key: Option<String>,
    pub message: String,
    /// A key the schema forbids (`additionalProperties: false`): a typo, so a config error.
    pub unknown: bool,
}

/// Checks a config against a plugin's JSON Schema; the error is the schema itself being
/// invalid. Unknown keys come one problem each, with the closest declared key as a hint.
pub fn schema_problems(schema: &Value, config: &Value) -> Result<Vec<SchemaProblem>, String> {
    let validator = jsonschema::validator_for(schema)
        .map_err(|e| format!("its config_schema is not a valid JSON Schema: {e}"))?;
    let mut out = Vec::new();
    for e in validator.iter_errors(config) {
        let at = e.instance_path.to_string();
        let path: Vec<String> = at
            .split('/')
            .skip(1)
            .map(|c| c.replace("~1", "/").replace("~0", "~"))
            .collect();
        if let jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } = &e.kind
        {
            // The declared keys of the object that has the stray key.
            let mut sub = schema;
            for part in &path {
                sub = sub
                    .get("properties")
                    .and_then(|p| p.get(part))
                    .or_else(|| sub.get("items"))
                    .unwrap_or(&Value::Null);
            }
            let declared: Vec<&str> = sub
                .get("properties")
                .and_then(Value::as_object)
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            for k in unexpected {
                let hint = declared
                    .iter()
                    .map(|c| (strsim::jaro_winkler(k, c), *c))
                    .filter(|(score, _)| *score > 0.8)
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                    .map(|(_, c)| format!("; did you mean `{c}`?"))
                    .unwrap_or_else(|| {
                        if declared.is_empty() {
                            String::new()
                        } else {
                            format!("; known keys: {}", declared.join(", "))
                        }
                    });
                let within = if at.is_empty() {
                    String::new()
                } else {
                    format!(" in {at}")
                };
                out.push(SchemaProblem {
                    key: Some(path.first().cloned().unwrap_or_else(|| k.clone())),
                    message: format!("{UNKNOWN_KEY}{k}`{within}{hint}"),
                    unknown: true,
                });
            }
            continue;
        }
        out.push(SchemaProblem {
            key: path.first().cloned(),
            message: if at.is_empty() {
                e.to_string()
            } else {
                format!("{at}: {e}")
            },
            unknown: false,
        });
    }
    Ok(out)
}

/// Checks a config against a plugin's JSON Schema; the error lists what is wrong.
pub fn validate_config(schema: &Value, config: &Value) -> Result<(), String> {
    validate_config_at(schema, config, None)
}

/// [`validate_config`], each problem preceded by the `file:line` of its key when the
/// config came from a file.
pub fn validate_config_at(
    schema: &Value,
    config: &Value,
    origin: Option<&ConfigOrigin>,
) -> Result<(), String> {
    let problems = schema_problems(schema, config)?;
    if problems.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = problems
        .iter()
        .map(|p| match origin {
            Some(o) => format!("{}: {}", o.at(p.key.as_deref()), p.message),
            None => p.message.clone(),
        })
        .collect();
    Err(format!(
        "config rejected by its schema: {}",
        shown.join("; ")
    ))
}

fn spawn_runner(
    mut plugin: Box<dyn Plugin>,
    timeout: Duration,
    status: Arc<Mutex<PluginStatus>>,
    redactor: Redactor,
) -> Runner {
    let (tx, mut rx) = mpsc::unbounded_channel::<Delivery>();
    let wanted: HashSet<Hook> = plugin.hooks().into_iter().collect();
    let task = tokio::spawn(async move {
        let mut alive = true;
        let name = status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .name
            .clone();
        while let Some(d) = rx.recv().await {
            if alive && wanted.contains(&d.event.hook) {
                let call = std::panic::AssertUnwindSafe(plugin.on_event(&d.event)).catch_unwind();
                let outcome = tokio::time::timeout(timeout, call).await;
                let disable = {
                    let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
                    let counts = st.hooks.entry(d.event.hook).or_default();
                    counts.calls += 1;
                    let disable = match outcome {
                        Ok(Ok(Ok(()))) => None,
                        Ok(Ok(Err(HookError::Hook(msg)))) => {
                            counts.errors += 1;
                            let msg = redactor.redact(&msg);
                            eprintln!(
                                "warning: plugin `{name}` hook {} failed: {msg}",
                                d.event.hook
                            );
                            None
                        }
                        Ok(Ok(Err(HookError::Fatal(msg)))) => {
                            counts.errors += 1;
                            Some(redactor.redact(&msg))
                        }
                        Ok(Err(_panic)) => {
                            counts.errors += 1;
                            Some(format!("panicked in {}", d.event.hook))
                        }
                        Err(_) => {
                            counts.timeouts += 1;
                            Some(format!(
                                "hook {} timed out after {:.1} s",
                                d.event.hook,
                                timeout.as_secs_f64()
                            ))
                        }
                    };
                    if let Some(why) = &disable {
                        warn_disabled(&name, why);
                        st.active = false;
                        st.failed = true;
                        st.reason = Some(why.clone());
                    }
                    disable
                };
                if disable.is_some() {
                    alive = false;
                    plugin.abort().await;
                }
            }
            if let Some(ack) = d.ack {
                let _ = ack.send(());
            }
            if let Some(done) = d.done {
                done.fetch_sub(1, Ordering::AcqRel);
            }
        }
        if alive {
            let asked = std::panic::AssertUnwindSafe(plugin.report()).catch_unwind();
            if let Ok(Ok(Some(report))) = tokio::time::timeout(timeout, asked).await {
                let report = report::checked(report, &redactor);
                if !report.is_empty() {
                    status.lock().unwrap_or_else(|e| e.into_inner()).report = Some(report);
                }
            }
            plugin.shutdown().await;
        }
    });
    Runner { tx, task }
}

/// What the plugins did during a run: status and per-hook counts. Serialised as the
/// export's `plugins` section: plugin name → status.
#[derive(Debug, Default, Clone, serde::Serialize)]
#[serde(transparent)]
pub struct PluginsReport {
    #[serde(serialize_with = "by_name")]
    pub plugins: Vec<PluginStatus>,
}

fn by_name<S: serde::Serializer>(plugins: &[PluginStatus], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(plugins.iter().map(|p| (&p.name, p)))
}

impl PluginsReport {
    /// One warning per plugin that fell behind and lost records.
    pub fn behind(&self) -> Vec<String> {
        self.plugins
            .iter()
            .filter_map(|p| {
                let r = p.records.as_ref().filter(|r| r.dropped > 0)?;
                Some(format!(
                    "plugin `{}` fell behind: {} of {} request records dropped (it was sent {}; raise its records_queue or make it faster)",
                    p.name,
                    r.dropped,
                    r.dropped + r.delivered,
                    r.delivered
                ))
            })
            .collect()
    }

    /// With `--strict-plugins`, a description of the plugin failures, if any.
    pub fn strict_failure(&self, strict: bool) -> Option<String> {
        if !strict {
            return None;
        }
        let failures: Vec<String> = self
            .plugins
            .iter()
            .filter_map(|p| {
                let hook_errors: u64 = p.hooks.values().map(|c| c.errors + c.timeouts).sum();
                if p.failed || hook_errors > 0 {
                    Some(format!(
                        "plugin `{}`: {}",
                        p.name,
                        p.reason
                            .clone()
                            .unwrap_or_else(|| format!("{hook_errors} hook failures"))
                    ))
                } else {
                    None
                }
            })
            .collect();
        (!failures.is_empty()).then(|| failures.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A built-in-style plugin that records calls and misbehaves on demand.
    struct Probe {
        log: Arc<Mutex<Vec<String>>>,
        fail_on: Option<Hook>,
        hang_on: Option<Hook>,
        panic_on: Option<Hook>,
    }

    #[async_trait::async_trait]
    impl Plugin for Probe {
        fn hooks(&self) -> Vec<Hook> {
            Hook::ALL.to_vec()
        }
        async fn on_event(&mut self, e: &HookEvent) -> HookResult {
            self.log.lock().unwrap().push(e.hook.to_string());
            if self.panic_on == Some(e.hook) {
                panic!("probe panic");
            }
            if self.hang_on == Some(e.hook) {
                std::future::pending::<()>().await;
            }
            if self.fail_on == Some(e.hook) {
                return Err(HookError::Hook("nope".into()));
            }
            Ok(())
        }
    }

    fn registry(p: Probe, timeout: Duration) -> (HookRegistry, Arc<Mutex<PluginStatus>>) {
        let reg = HookRegistry::with_plugin("probe", Box::new(p), timeout);
        let status = reg.statuses[0].clone();
        (reg, status)
    }

    #[tokio::test]
    async fn hook_errors_are_counted_and_the_plugin_stays() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (reg, _) = registry(
            Probe {
                log: log.clone(),
                fail_on: Some(Hook::PhaseStart),
                hang_on: None,
                panic_on: None,
            },
            Duration::from_secs(1),
        );
        reg.emit_and_wait(Hook::PhaseStart, Some(PhaseKind::Profiling), None)
            .await;
        reg.emit(Hook::PhaseComplete, Some(PhaseKind::Profiling), None, None);
        let report = reg.finish().await;
        let p = &report.plugins[0];
        assert!(p.active);
        assert_eq!(p.hooks[&Hook::PhaseStart].errors, 1);
        assert_eq!(p.hooks[&Hook::PhaseComplete].calls, 1);
        assert_eq!(*log.lock().unwrap(), vec!["phase_start", "phase_complete"]);
        assert!(report.strict_failure(true).is_some());
        assert!(report.strict_failure(false).is_none());
    }

    #[tokio::test]
    async fn a_hanging_hook_times_out_and_disables_the_plugin() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (reg, _) = registry(
            Probe {
                log: log.clone(),
                fail_on: None,
                hang_on: Some(Hook::PhaseStart),
                panic_on: None,
            },
            Duration::from_millis(100),
        );
        reg.emit_and_wait(Hook::PhaseStart, Some(PhaseKind::Profiling), None)
            .await;
        reg.emit(Hook::PhaseComplete, Some(PhaseKind::Profiling), None, None);
        let report = reg.finish().await;
        let p = &report.plugins[0];
        assert!(!p.active);
        assert_eq!(p.hooks[&Hook::PhaseStart].timeouts, 1);
        assert!(p.reason.as_ref().unwrap().contains("timed out"));
        assert_eq!(
            *log.lock().unwrap(),
            vec!["phase_start"],
            "no events after it was disabled"
        );
    }

    #[tokio::test]
    async fn a_panicking_hook_disables_the_plugin() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (reg, _) = registry(
            Probe {
                log,
                fail_on: None,
                hang_on: None,
                panic_on: Some(Hook::BenchmarkStart),
            },
            Duration::from_secs(1),
        );
        reg.emit(Hook::BenchmarkStart, None, None, None);
        let report = reg.finish().await;
        assert!(!report.plugins[0].active);
        assert!(report.plugins[0]
            .reason
            .as_ref()
            .unwrap()
            .contains("panicked"));
    }

    #[test]
    fn redactor_hides_secret_values() {
        let section = PluginsSection {
            entries: vec![PluginEntry {
                name: "x".into(),
                config: json!({"api_key": "sekrit-123", "nested": {"token": "tok-456"}, "site": "public",
                    "hook": "https://hooks.slack.com/services/T1/B2/slacksecret", "plain": "marked-999",
                    "headers": ["Authorization: Bearer hdr-token", "Accept: text/plain"]}),
                secrets: vec!["marked-999".into()],
                timeout: Duration::from_secs(5),
                ..Default::default()
            }],
            ..Default::default()
        };
        let r = Redactor::new(&section, &["bearer-789".into()]);
        let out = r.redact("key=sekrit-123 tok-456 bearer-789 site=public");
        assert_eq!(out, "key=<redacted> <redacted> <redacted> site=public");
        let out = r.redact("T1/B2/slacksecret marked-999 hdr-token text/plain");
        assert_eq!(out, "<redacted> <redacted> <redacted> text/plain");
    }

    #[test]
    fn unknown_keys_are_placed_at_their_line() {
        let schema = json!({"type": "object", "additionalProperties": false,
            "properties": {"log_level": {"type": "string"}, "file": {"type": "string"}}});
        let origin = ConfigOrigin {
            file: "c.yaml".into(),
            line: 3,
            keys: [("log_levle".to_string(), 5), ("file".to_string(), 4)].into(),
        };
        let err = validate_config_at(
            &schema,
            &json!({"log_levle": "x", "file": "f"}),
            Some(&origin),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "config rejected by its schema: c.yaml:5: unknown key `log_levle`; did you mean `log_level`?"
        );
        let err = validate_config_at(&schema, &json!({"file": 3}), Some(&origin)).unwrap_err();
        assert!(
            err.starts_with("config rejected by its schema: c.yaml:4: /file:"),
            "{err}"
        );
        let p = schema_problems(&schema, &json!({"zzz": 1})).unwrap();
        assert!(
            p[0].unknown && p[0].message.contains("known keys: "),
            "{p:?}"
        );
    }

    #[test]
    fn a_safe_cut_splits_no_secret() {
        let r = Redactor::new(
            &PluginsSection::default(),
            &["abcdef".into(), "cdefgh".into()],
        );
        assert_eq!(r.longest(), 6);
        assert_eq!(r.safe_cut("xxabcdefxx", 5), 2, "inside a secret: before it");
        assert_eq!(r.safe_cut("xxabcdefxx", 8), 8, "right after it: unchanged");
        assert_eq!(r.safe_cut("xxabcdefxx", 2), 2);
        // Moving the cut before one secret can put it inside another.
        assert_eq!(r.safe_cut("abcdefgh", 7), 0);
        assert_eq!(r.safe_cut("short", 99), 5);
        assert_eq!(Redactor::default().safe_cut("xxabcdefxx", 5), 5);
    }

    #[test]
    fn schema_validation_messages() {
        let schema = json!({"type": "object", "properties": {"port": {"type": "integer"}}, "required": ["host"]});
        let err = validate_config(&schema, &json!({"port": "x"})).unwrap_err();
        assert!(err.contains("host") && err.contains("/port"), "{err}");
        assert!(validate_config(&schema, &json!({"host": "h", "port": 1})).is_ok());
    }

    /// A plugin that records, per hook, the run id of the context it was given.
    type Seen = Arc<Mutex<Vec<(Hook, Option<String>)>>>;
    struct ContextProbe(Seen);

    #[async_trait::async_trait]
    impl Plugin for ContextProbe {
        fn hooks(&self) -> Vec<Hook> {
            Hook::ALL.to_vec()
        }
        async fn on_event(&mut self, e: &HookEvent) -> HookResult {
            let id = e.context.as_ref().map(|c| c.run_id.clone());
            self.0.lock().unwrap().push((e.hook, id));
            Ok(())
        }
    }

    #[tokio::test]
    async fn benchmark_start_carries_the_run_context_and_no_other_hook_does() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut reg = HookRegistry::with_plugin(
            "ctx",
            Box::new(ContextProbe(seen.clone())),
            Duration::from_secs(1),
        );
        reg.context = Some(Arc::new(RunContext {
            run_id: "r-1".into(),
            ..RunContext::default()
        }));
        reg.emit(Hook::BenchmarkStart, None, None, None);
        reg.emit_and_wait(Hook::PhaseStart, Some(PhaseKind::Profiling), None)
            .await;
        reg.emit(Hook::BenchmarkComplete, None, None, None);
        reg.finish().await;
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                (Hook::BenchmarkStart, Some("r-1".to_string())),
                (Hook::PhaseStart, None),
                (Hook::BenchmarkComplete, None),
            ]
        );
    }
}
