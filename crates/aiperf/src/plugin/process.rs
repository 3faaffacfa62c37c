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

#[cfg(test)]
mod tests {
    use aiperf_plugin::PhaseStats;
    use serde_json::json;

    use super::*;
    use crate::metrics::PhaseKind;

    const HANDSHAKE: &str = r#"echo '{"type":"handshake","protocol_version":1,"name":"t","version":"1.2.3","hooks":["phase_start","phase_complete"]}'"#;
    const CONFIGURED: &str = r#"echo '{"type":"configured"}'"#;
    const ACK: &str = r#"echo "{\"type\":\"ack\",\"id\":$id}""#;

    /// `sh -c` arguments for a plugin that answers `hello` with `on_hello`, `configure` with
    /// `on_configure` and each event with `on_event` (shell commands; `$line` is the message,
    /// `$id` and `$hook` the event's), and exits on `shutdown` or end of input.
    fn sh_plugin(on_hello: &str, on_configure: &str, on_event: &str) -> Vec<String> {
        let script = r#"
while IFS= read -r line; do
  case "$line" in
    *'"type":"hello"'*) ON_HELLO ;;
    *'"type":"configure"'*) ON_CONFIGURE ;;
    *'"type":"event"'*)
      id=$(printf '%s\n' "$line" | sed 's/^{"type":"event","id":\([0-9]*\),.*/\1/')
      hook=$(printf '%s\n' "$line" | sed 's/.*"hook":"\([a-z_]*\)".*/\1/')
      ON_EVENT ;;
    *'"type":"shutdown"'*) exit 0 ;;
  esac
done
"#
        .replace("ON_HELLO", on_hello)
        .replace("ON_CONFIGURE", on_configure)
        .replace("ON_EVENT", on_event);
        vec!["-c".into(), script]
    }

    async fn start(args: &[String], config: Value) -> Result<ProcessPlugin, String> {
        ProcessPlugin::start(
            "t",
            Path::new("sh"),
            args,
            &config,
            Duration::from_secs(5),
            Redactor::default(),
        )
        .await
    }

    fn event(hook: Hook) -> HookEvent {
        HookEvent {
            hook,
            phase: Some(PhaseKind::Profiling),
            stats: Some(PhaseStats {
                phase: "profiling".into(),
                ..Default::default()
            }),
            summary: None,
        }
    }

    fn fatal(r: HookResult) -> String {
        match r {
            Err(HookError::Fatal(m)) => m,
            other => panic!("expected a fatal error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn handshake_config_events_and_shutdown() {
        // The config must arrive; phase_complete fails as a hook error carrying its id.
        let args = sh_plugin(
            &format!(r#"echo '{{"type":"log","level":"info","message":"starting"}}'; {HANDSHAKE}"#),
            r#"case "$line" in *'"config":{"site":"eu"}'*) echo '{"type":"configured"}' ;; *) echo '{"type":"error","message":"no site"}' ;; esac"#,
            r#"if [ "$hook" = phase_complete ]; then echo "{\"type\":\"ack\",\"id\":$id,\"error\":\"failed $hook $id\"}"; else echo "{\"type\":\"ack\",\"id\":$id}"; fi"#,
        );
        let mut p = start(&args, json!({"site": "eu"})).await.unwrap();
        assert_eq!(p.version(), "1.2.3");
        assert_eq!(p.hooks(), [Hook::PhaseStart, Hook::PhaseComplete]);
        assert!(p.on_event(&event(Hook::PhaseStart)).await.is_ok());
        match p.on_event(&event(Hook::PhaseComplete)).await {
            Err(HookError::Hook(m)) => assert_eq!(m, "failed phase_complete 2"),
            other => panic!("{other:?}"),
        }
        assert!(p.on_event(&event(Hook::PhaseStart)).await.is_ok());
        p.shutdown().await;
        assert!(p.child.is_none() && p.stdin.is_none());
    }

    #[tokio::test]
    async fn a_rejected_config_fails_the_start() {
        let args = sh_plugin(HANDSHAKE, CONFIGURED, ACK);
        // Accepted as is...
        assert!(start(&args, json!({})).await.is_ok());
        // ...refused by the plugin...
        let args = sh_plugin(
            HANDSHAKE,
            r#"echo '{"type":"error","message":"no site"}'"#,
            ACK,
        );
        let err = start(&args, json!({})).await.err().unwrap();
        assert_eq!(err, "config rejected: no site");
        // ...or by the schema from its handshake, before it is sent.
        let args = sh_plugin(
            r#"echo '{"type":"handshake","protocol_version":1,"name":"t","version":"1","hooks":[],"config_schema":{"type":"object","required":["site"]}}'"#,
            CONFIGURED,
            ACK,
        );
        let err = start(&args, json!({"port": 1})).await.err().unwrap();
        assert!(err.starts_with("config rejected by its schema:"), "{err}");
        assert!(err.contains("site"), "{err}");
    }

    #[tokio::test]
    async fn a_stale_ack_is_skipped() {
        let args = sh_plugin(
            HANDSHAKE,
            CONFIGURED,
            r#"echo '{"type":"ack","id":999,"error":"old"}'; echo "{\"type\":\"ack\",\"id\":$id}""#,
        );
        let mut p = start(&args, json!({})).await.unwrap();
        assert!(p.on_event(&event(Hook::PhaseStart)).await.is_ok());
        p.shutdown().await;
    }

    #[tokio::test]
    async fn garbage_at_the_handshake_is_fatal() {
        let args = sh_plugin("echo 'hello world'", CONFIGURED, ACK);
        let err = start(&args, json!({})).await.err().unwrap();
        assert_eq!(
            err,
            r#"handshake failed: wrote garbage on stdout: "hello world""#
        );
    }

    #[tokio::test]
    async fn a_process_that_exits_at_once_fails_the_handshake() {
        let err = start(&["-c".into(), "exit 3".into()], json!({}))
            .await
            .err()
            .unwrap();
        assert!(err.starts_with("handshake failed: "), "{err}");
        assert!(err.contains("exit status 3"), "{err}");
    }

    #[tokio::test]
    async fn a_wrong_protocol_version_or_a_refusal_fails_the_handshake() {
        let args = sh_plugin(
            r#"echo '{"type":"handshake","protocol_version":2,"name":"t","version":"1","hooks":[]}'"#,
            CONFIGURED,
            ACK,
        );
        let err = start(&args, json!({})).await.err().unwrap();
        assert_eq!(
            err,
            "protocol version mismatch: plugin chose 2, aiperf speaks 1"
        );
        let args = sh_plugin(
            r#"echo '{"type":"error","message":"needs protocol 2"}'"#,
            CONFIGURED,
            ACK,
        );
        let err = start(&args, json!({})).await.err().unwrap();
        assert_eq!(err, "handshake refused: needs protocol 2");
    }

    #[tokio::test]
    async fn a_missing_executable_cannot_start() {
        let err = ProcessPlugin::start(
            "t",
            Path::new("/nonexistent/aiperf-plugin-t"),
            &[],
            &json!({}),
            Duration::from_secs(5),
            Redactor::default(),
        )
        .await
        .err()
        .unwrap();
        assert!(
            err.starts_with("cannot start /nonexistent/aiperf-plugin-t: "),
            "{err}"
        );
    }

    #[tokio::test]
    async fn garbage_in_answer_to_an_event_is_fatal() {
        let args = sh_plugin(HANDSHAKE, CONFIGURED, "echo 'oops, not json'");
        let mut p = start(&args, json!({})).await.unwrap();
        let err = fatal(p.on_event(&event(Hook::PhaseStart)).await);
        assert_eq!(err, r#"wrote garbage on stdout: "oops, not json""#);
        p.abort().await;
    }

    #[tokio::test]
    async fn a_process_that_exits_during_an_event_is_fatal() {
        let args = sh_plugin(HANDSHAKE, CONFIGURED, "exit 7");
        let mut p = start(&args, json!({})).await.unwrap();
        let err = fatal(p.on_event(&event(Hook::PhaseStart)).await);
        assert!(err.contains("exit status 7"), "{err}");
        // And every later event fails too.
        fatal(p.on_event(&event(Hook::PhaseStart)).await);
        p.abort().await;
    }

    #[tokio::test]
    async fn an_error_message_during_an_event_is_fatal() {
        let args = sh_plugin(
            HANDSHAKE,
            CONFIGURED,
            r#"echo '{"type":"error","message":"lost my socket"}'"#,
        );
        let mut p = start(&args, json!({})).await.unwrap();
        let err = fatal(p.on_event(&event(Hook::PhaseStart)).await);
        assert_eq!(err, "reported an error: lost my socket");
        p.abort().await;
    }

    #[tokio::test]
    async fn an_aborted_plugin_is_gone() {
        let args = sh_plugin(HANDSHAKE, CONFIGURED, ACK);
        let mut p = start(&args, json!({})).await.unwrap();
        p.abort().await;
        assert!(p.child.is_none());
        let err = fatal(p.on_event(&event(Hook::PhaseStart)).await);
        assert!(
            err.starts_with("cannot write to the plugin: stdin closed"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn probes_report_the_version_and_hooks() {
        let args = sh_plugin(HANDSHAKE, CONFIGURED, ACK);
        let hooks = vec![Hook::PhaseStart, Hook::PhaseComplete];
        let (version, got) = probe_handshake("t", Path::new("sh"), &args, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!((version.as_str(), &got), ("1.2.3", &hooks));
        let (version, got) = probe(
            "t",
            Path::new("sh"),
            &args,
            &json!({}),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!((version.as_str(), &got), ("1.2.3", &hooks));
        // Only the handshake: a config the plugin would refuse does not matter.
        let args = sh_plugin(HANDSHAKE, r#"echo '{"type":"error","message":"no"}'"#, ACK);
        assert!(
            probe_handshake("t", Path::new("sh"), &args, Duration::from_secs(5))
                .await
                .is_ok()
        );
        assert!(probe(
            "t",
            Path::new("sh"),
            &args,
            &json!({}),
            Duration::from_secs(5)
        )
        .await
        .is_err());
    }
}
