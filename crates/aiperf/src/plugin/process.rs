//! External plugins: child processes speaking protocol v1 (JSON lines on stdin/stdout,
//! see `docs/plugins.md`). Their stderr goes to our log, prefixed `[plugin:<name>]`.
//!
//! Every child is reaped: on shutdown it gets a grace period to exit, then a kill and a wait.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use aiperf_plugin::protocol::{
    decode_line, encode_line, Event, HostMessage, PluginMessage, MAX_LINE_BYTES, PROTOCOL_VERSION,
};
use aiperf_plugin::Hook;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LinesCodec};

use super::{validate_config, HookError, HookEvent, HookResult, Plugin, Redactor};

const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// The least time a plugin gets for its handshake and config.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

enum Incoming {
    Msg(PluginMessage),
    Garbage(String),
}

pub struct ProcessPlugin {
    name: String,
    version: String,
    hooks: Vec<Hook>,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    incoming: mpsc::UnboundedReceiver<Incoming>,
    next_id: u64,
}

fn excerpt(s: &str) -> String {
    let s = s.trim();
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    if end < s.len() {
        format!("{}…", &s[..end])
    } else {
        s.to_string()
    }
}

impl ProcessPlugin {
    /// Starts the process, runs the handshake, validates and sends the config.
    pub async fn start(
        name: &str,
        path: &Path,
        args: &[String],
        config: &Value,
        timeout: Duration,
        redactor: Redactor,
    ) -> Result<Self, String> {
        let mut plugin = Self::spawn(name, path, args, redactor)?;
        // Startup gets at least STARTUP_TIMEOUT: an interpreter (Python) can take a second or
        // more to start on a loaded machine, which says nothing about its hooks.
        match plugin.handshake(config, timeout.max(STARTUP_TIMEOUT)).await {
            Ok(()) => Ok(plugin),
            Err(e) => {
                plugin.kill().await;
                Err(e)
            }
        }
    }

    fn spawn(name: &str, path: &Path, args: &[String], redactor: Redactor) -> Result<Self, String> {
        let mut child = Command::new(path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", path.display()))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");

        let log_name = name.to_string();
        let log_redactor = redactor.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(target: "aiperf::plugin", "[plugin:{log_name}] {}", log_redactor.redact(&line));
            }
        });
        let (tx, incoming) = mpsc::unbounded_channel();
        let out_name = name.to_string();
        tokio::spawn(async move {
            let mut lines =
                FramedRead::new(stdout, LinesCodec::new_with_max_length(MAX_LINE_BYTES));
            while let Some(line) = lines.next().await {
                let msg = match line {
                    Ok(l) if l.trim().is_empty() => continue,
                    Ok(l) => match decode_line::<PluginMessage>(&l) {
                        Ok(PluginMessage::Log { level, message }) => {
                            let m = redactor.redact(&message);
                            match level.as_str() {
                                "error" => {
                                    tracing::error!(target: "aiperf::plugin", "[plugin:{out_name}] {m}")
                                }
                                "warning" | "warn" => {
                                    tracing::warn!(target: "aiperf::plugin", "[plugin:{out_name}] {m}")
                                }
                                "debug" => {
                                    tracing::debug!(target: "aiperf::plugin", "[plugin:{out_name}] {m}")
                                }
                                _ => {
                                    tracing::info!(target: "aiperf::plugin", "[plugin:{out_name}] {m}")
                                }
                            }
                            continue;
                        }
                        Ok(m) => Incoming::Msg(m),
                        Err(_) => Incoming::Garbage(excerpt(&redactor.redact(&l))),
                    },
                    Err(e) => Incoming::Garbage(format!("unreadable output: {e}")),
                };
                let garbage = matches!(msg, Incoming::Garbage(_));
                if tx.send(msg).is_err() || garbage {
                    break;
                }
            }
        });

        Ok(ProcessPlugin {
            name: name.to_string(),
            version: String::new(),
            hooks: Vec::new(),
            child: Some(child),
            stdin: Some(stdin),
            incoming,
            next_id: 0,
        })
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    async fn send(&mut self, msg: &HostMessage) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        let line = encode_line(msg);
        stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        stdin.flush().await.map_err(|e| e.to_string())
    }

    /// Exit status, if the process has ended (waits briefly for it to be reapable).
    async fn exit_status(&mut self) -> String {
        if let Some(child) = &mut self.child {
            if let Ok(Ok(st)) = tokio::time::timeout(Duration::from_millis(500), child.wait()).await
            {
                return match st.code() {
                    Some(c) => format!("exit status {c}"),
                    None => "killed by a signal".into(),
                };
            }
        }
        "closed its stdout".into()
    }

    /// The next protocol message, or why there is none.
    async fn recv(&mut self) -> Result<PluginMessage, String> {
        match self.incoming.recv().await {
            Some(Incoming::Msg(m)) => Ok(m),
            Some(Incoming::Garbage(g)) => Err(format!("wrote garbage on stdout: {g:?}")),
            None => Err(format!("exited ({})", self.exit_status().await)),
        }
    }

    async fn handshake(&mut self, config: &Value, timeout: Duration) -> Result<(), String> {
        if let Some(schema) = self.hello(timeout).await? {
            validate_config(&schema, config)?;
        }
        if let Err(e) = self
            .send(&HostMessage::Configure {
                config: config.clone(),
            })
            .await
        {
            return Err(format!(
                "exited before taking its config ({}; {e})",
                self.exit_status().await
            ));
        }
        let reply = tokio::time::timeout(timeout, self.recv())
            .await
            .map_err(|_| {
                format!(
                    "no answer to its config within {:.1} s",
                    timeout.as_secs_f64()
                )
            })??;
        match reply {
            PluginMessage::Configured => Ok(()),
            PluginMessage::Error { message } => Err(format!("config rejected: {message}")),
            other => Err(format!("expected `configured`, got {other:?}")),
        }
    }

    /// Sends `hello`, reads the `handshake`; returns the plugin's config schema.
    async fn hello(&mut self, timeout: Duration) -> Result<Option<Value>, String> {
        let hello = HostMessage::Hello {
            protocol_versions: vec![PROTOCOL_VERSION],
            host: "aiperf".into(),
            host_version: env!("CARGO_PKG_VERSION").into(),
            plugin_name: self.name.clone(),
        };
        if let Err(e) = self.send(&hello).await {
            return Err(format!(
                "handshake failed: cannot write to the plugin: {e} ({})",
                self.exit_status().await
            ));
        }
        let reply = tokio::time::timeout(timeout, self.recv())
            .await
            .map_err(|_| {
                format!(
                    "handshake failed: no answer within {:.1} s",
                    timeout.as_secs_f64()
                )
            })?
            .map_err(|e| format!("handshake failed: {e}"))?;
        let schema = match reply {
            PluginMessage::Handshake {
                protocol_version,
                name: _,
                version,
                hooks,
                config_schema,
            } => {
                if protocol_version != PROTOCOL_VERSION {
                    return Err(format!(
                        "protocol version mismatch: plugin chose {protocol_version}, aiperf speaks {PROTOCOL_VERSION}"
                    ));
                }
                self.version = version;
                self.hooks = hooks;
                Ok(config_schema)
            }
            PluginMessage::Error { message } => Err(format!("handshake refused: {message}")),
            other => Err(format!(
                "handshake failed: expected `handshake`, got {other:?}"
            )),
        };
        schema
    }

    /// Kills the process and reaps it.
    async fn kill(&mut self) {
        self.stdin = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

#[async_trait::async_trait]
impl Plugin for ProcessPlugin {
    fn hooks(&self) -> Vec<Hook> {
        self.hooks.clone()
    }

    async fn on_event(&mut self, e: &HookEvent) -> HookResult {
        self.next_id += 1;
        let id = self.next_id;
        let msg = HostMessage::Event(Event {
            id,
            hook: e.hook,
            phase: e.phase.map(|p| p.as_str().to_string()),
            stats: e.stats.clone(),
            summary: e.summary.as_deref().cloned(),
        });
        if let Err(err) = self.send(&msg).await {
            return Err(HookError::Fatal(format!(
                "cannot write to the plugin: {err} ({})",
                self.exit_status().await
            )));
        }
        loop {
            match self.recv().await.map_err(HookError::Fatal)? {
                PluginMessage::Ack { id: got, error } if got == id => {
                    return match error {
                        None => Ok(()),
                        Some(msg) => Err(HookError::Hook(msg)),
                    };
                }
                PluginMessage::Error { message } => {
                    return Err(HookError::Fatal(format!("reported an error: {message}")))
                }
                // A stale ack (for an event that timed out) or an unexpected message: skip.
                _ => continue,
            }
        }
    }

    async fn abort(&mut self) {
        self.kill().await;
    }

    async fn shutdown(&mut self) {
        let _ = self.send(&HostMessage::Shutdown).await;
        self.stdin = None; // close stdin: EOF also tells the plugin to exit
        if let Some(child) = &mut self.child {
            if tokio::time::timeout(SHUTDOWN_GRACE, child.wait())
                .await
                .is_ok()
            {
                self.child = None;
                return;
            }
        }
        self.kill().await;
    }
}

/// Starts a plugin and runs only the handshake (no config), then shuts it down.
pub async fn probe_handshake(
    name: &str,
    path: &Path,
    args: &[String],
    timeout: Duration,
) -> Result<(String, Vec<Hook>), String> {
    let mut p = ProcessPlugin::spawn(name, path, args, Redactor::default())?;
    let result = p.hello(timeout).await;
    let out = result.map(|_| (p.version.clone(), p.hooks.clone()));
    p.kill().await;
    out
}

/// Starts a plugin, runs the handshake (and the config, when given), then shuts it down.
/// Returns (version, hooks) for `aiperf plugins check` / `list`.
pub async fn probe(
    name: &str,
    path: &Path,
    args: &[String],
    config: &Value,
    timeout: Duration,
) -> Result<(String, Vec<Hook>), String> {
    let mut p =
        ProcessPlugin::start(name, path, args, config, timeout, Redactor::default()).await?;
    let out = (p.version.clone(), p.hooks.clone());
    p.shutdown().await;
    Ok(out)
}
