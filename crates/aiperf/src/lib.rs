//! aiperf: a benchmark for LLM inference servers, with a plugin system.
//!
//! The binary is a thin shell over [`run`]; everything is reachable from the library so tests
//! can drive it in-process.

pub mod benchmark;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dataset;
pub mod endpoint;
pub mod export;
pub mod metrics;
pub mod mix;
pub mod mock;
pub mod plugin;
pub mod timing;
pub mod tokenizer;
pub mod transport;

use std::path::Path;
use std::time::Duration;

/// `aiperf profile`: loads the plugins, runs the benchmark and returns the exit code.
pub async fn run_profile(cfg: config::BenchmarkConfig) -> anyhow::Result<u8> {
    mock::raise_fd_limit();
    let mut secrets: Vec<String> = cfg.api_key.iter().cloned().collect();
    secrets.extend(
        cfg.headers
            .iter()
            .filter(|(k, _)| config::is_secret_key(k))
            .map(|(_, v)| v.clone()),
    );
    let redactor = plugin::Redactor::new(&cfg.plugins, &secrets);
    let hooks = plugin::HookRegistry::load(&cfg.plugins, cfg.no_plugins, &redactor).await;
    if cfg.strict_plugins {
        if let Some(why) = hooks.startup_failure() {
            hooks.finish().await;
            eprintln!("error: --strict-plugins: {why}");
            return Ok(1);
        }
    }
    let outcome = benchmark::run(cfg, hooks).await?;
    Ok(outcome.exit_code)
}

/// `aiperf mock-server`: serves until Ctrl-C.
pub async fn run_mock_server(a: cli::MockServerArgs) -> anyhow::Result<u8> {
    use anyhow::Context;
    mock::raise_fd_limit();
    if a.error_rate < 0.0 || a.error_rate > 100.0 {
        return Err(
            config::ConfigError::Usage("--error-rate must be between 0 and 100".into()).into(),
        );
    }
    if a.ttft_ms < 0.0 || a.itl_ms < 0.0 || !a.ttft_ms.is_finite() || !a.itl_ms.is_finite() {
        return Err(config::ConfigError::Usage("--ttft-ms and --itl-ms must be ≥ 0".into()).into());
    }
    let addr: std::net::SocketAddr = format!("{}:{}", a.host, a.port)
        .parse()
        .map_err(|e| config::ConfigError::Usage(format!("invalid --host/--port: {e}")))?;
    let listener = mock::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let cfg = mock::MockConfig {
        ttft: Duration::from_secs_f64(a.ttft_ms / 1e3),
        itl: Duration::from_secs_f64(a.itl_ms / 1e3),
        error_rate: a.error_rate,
        default_tokens: a.default_tokens,
        seed: a.random_seed.unwrap_or(0),
        log_arrivals: a.log_arrivals,
    };
    eprintln!(
        "aiperf mock server listening on http://{}",
        listener.local_addr()?
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    let s = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        s.cancel();
    });
    mock::serve(listener, cfg, shutdown).await?;
    Ok(0)
}

/// `aiperf plugins list`: every discovered plugin, and whether the config enables it.
pub async fn plugins_list(config_path: Option<&Path>) -> anyhow::Result<u8> {
    use plugin::discovery::{self, Located};
    let section = config::load_plugins_section(config_path)?;
    let search = discovery::SearchPath::from_env();
    let mut python = discovery::PythonPlugins::default();
    let mut found = discovery::discover_all(&search, &mut python).await;
    // Configured plugins first, located as a run would (explicit `path:`, `_`/`-` names);
    // then everything else that was discovered.
    let mut rows: Vec<(String, Option<Located>, Option<&config::PluginEntry>)> = Vec::new();
    for e in &section.entries {
        let loc = discovery::locate(&e.name, e.path.as_deref(), &search, &mut python)
            .await
            .ok();
        if let Some(l) = &loc {
            found.retain(|_, f| !(f.kind == l.kind && f.path == l.path && f.args == l.args));
        }
        rows.push((e.name.clone(), loc, Some(e)));
    }
    rows.extend(found.into_iter().map(|(name, loc)| (name, Some(loc), None)));
    let probes = futures_util::future::join_all(rows.iter().map(|(name, loc, _)| async move {
        match loc {
            Some(l) if l.kind != plugin::PluginKind::Builtin => {
                let path = l.path.clone().expect("external path");
                Some(
                    plugin::process::probe_handshake(
                        name,
                        &path,
                        &l.args,
                        plugin::process::STARTUP_TIMEOUT,
                    )
                    .await,
                )
            }
            _ => None,
        }
    }))
    .await;
    println!(
        "{:<18} {:<9} {:<8} {:<44} {:<30} STATUS",
        "NAME", "KIND", "VERSION", "PATH", "HOOKS"
    );
    for ((name, loc, entry), probe) in rows.iter().zip(probes) {
        let (version, hooks) = match (&probe, loc) {
            (Some(Ok((v, h))), _) => (
                v.clone(),
                h.iter().map(|h| h.as_str()).collect::<Vec<_>>().join(","),
            ),
            (Some(Err(e)), _) => ("?".into(), format!("(handshake failed: {e})")),
            (None, Some(_)) => (env!("CARGO_PKG_VERSION").to_string(), "all".to_string()),
            (None, None) => ("-".into(), "-".into()),
        };
        let status = match (entry, loc, &probe) {
            (Some(e), _, _) if !e.enabled => {
                format!(
                    "disabled: {}",
                    e.disabled_reason.clone().unwrap_or_default()
                )
            }
            (Some(_), None, _) => "disabled: configured but not found".to_string(),
            (Some(_), Some(_), Some(Err(_))) => "disabled: handshake failed".to_string(),
            (Some(_), Some(_), _) => "enabled".to_string(),
            (None, _, _) => "disabled: not configured under `plugins:`".to_string(),
        };
        let path = match loc {
            Some(l) => match &l.path {
                Some(p) => format!("{} ({})", p.display(), l.source),
                None => l.source.clone(),
            },
            None => "-".into(),
        };
        let kind = loc.as_ref().map(|l| l.kind.as_str()).unwrap_or("-");
        println!("{name:<18} {kind:<9} {version:<8} {path:<44} {hooks:<30} {status}");
    }
    Ok(0)
}

/// `aiperf plugins check NAME`: runs the handshake (and the config, when a file gives one).
pub async fn plugins_check(name: &str, config_path: Option<&Path>) -> anyhow::Result<u8> {
    let section = config::load_plugins_section(config_path)?;
    let entry = section.entries.iter().find(|e| e.name == name);
    let search = plugin::discovery::SearchPath::from_env();
    let mut python = plugin::discovery::PythonPlugins::default();
    let explicit = entry.and_then(|e| e.path.as_deref());
    let loc = match plugin::discovery::locate(name, explicit, &search, &mut python).await {
        Ok(l) => l,
        Err(e) => {
            println!("{name}: {e}");
            return Ok(1);
        }
    };
    let timeout = entry
        .map(|e| e.timeout)
        .unwrap_or(Duration::from_secs(5))
        .max(plugin::process::STARTUP_TIMEOUT);
    println!(
        "{name}: {} plugin ({})",
        loc.kind.as_str(),
        loc.path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| loc.source.clone())
    );
    if loc.kind == plugin::PluginKind::Builtin {
        let b = plugin::builtin::find(name).expect("located built-in");
        println!("  {}", b.description);
        if let Some(e) = entry {
            let schema = (b.config_schema)();
            let checked = match schema {
                Some(s) => plugin::validate_config(&s, &e.config),
                None => Ok(()),
            }
            .and_then(|_| (b.build)(&e.config).map(|_| ()));
            return Ok(match checked {
                Ok(()) => {
                    println!("  config: ok");
                    0
                }
                Err(why) => {
                    println!("  config: {why}");
                    1
                }
            });
        }
        return Ok(0);
    }
    let path = loc.path.clone().expect("external path");
    let result = match entry {
        Some(e) => plugin::process::probe(name, &path, &loc.args, &e.config, timeout).await,
        None => plugin::process::probe_handshake(name, &path, &loc.args, timeout).await,
    };
    match result {
        Ok((version, hooks)) => {
            println!(
                "  handshake: ok (protocol v{})",
                aiperf_plugin::PROTOCOL_VERSION
            );
            println!("  version: {version}");
            println!(
                "  hooks: {}",
                hooks
                    .iter()
                    .map(|h| h.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if entry.is_some() {
                println!("  config: ok");
            } else {
                println!("  config: not checked (no `plugins.{name}` section; pass --config FILE)");
            }
            Ok(0)
        }
        Err(e) => {
            println!("  failed: {e}");
            Ok(1)
        }
    }
}
