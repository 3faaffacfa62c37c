//! `aiperf plugins list` and `aiperf plugins check`: what is installed, what the config
//! enables, and whether a plugin starts and accepts its config.

use std::path::Path;
use std::time::Duration;

use crate::config;
use crate::plugin::builtin::BuiltinPlugin;
use crate::plugin::discovery::{self, Command, Located, Location};
use crate::plugin::{self, process, PluginEntry};

/// `aiperf plugins list`: every discovered plugin, and whether the config enables it.
pub async fn plugins_list(config_path: Option<&Path>) -> crate::Result<u8> {
    let section = config::load_plugins_section(config_path)?;
    let search = discovery::SearchPath::from_env();
    let mut python = discovery::PythonPlugins::default();
    let mut found = discovery::discover_all(&search, &mut python).await;
    // Configured plugins first, located as a run would (explicit `path:`, `_`/`-` names);
    // then everything else that was discovered.
    let mut rows: Vec<(String, Option<Located>, Option<&PluginEntry>)> = Vec::new();
    for e in &section.entries {
        let loc = discovery::locate(e.implementation(), e.path.as_deref(), &search, &mut python)
            .await
            .ok();
        if let Some(l) = &loc {
            found.retain(|_, f| !f.same_plugin(l));
        }
        rows.push((e.name.clone(), loc, Some(e)));
    }
    rows.extend(found.into_iter().map(|(name, loc)| (name, Some(loc), None)));
    let probes = futures_util::future::join_all(rows.iter().map(|(name, loc, e)| async move {
        // The `hello` names the implementation; a Python host serves the plugin by it.
        let implementation = e.map_or(name.as_str(), |e| e.implementation());
        match loc.as_ref().and_then(|l| l.command()) {
            Some(cmd) => Some(
                process::probe_handshake(
                    implementation,
                    &cmd.path,
                    &cmd.args,
                    process::STARTUP_TIMEOUT,
                )
                .await,
            ),
            None => None,
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
            (
                Some(PluginEntry {
                    disabled: Some(why),
                    ..
                }),
                _,
                _,
            ) => format!("disabled: {why}"),
            (Some(_), None, _) => "disabled: configured but not found".to_string(),
            (Some(_), Some(_), Some(Err(_))) => "disabled: handshake failed".to_string(),
            (Some(_), Some(_), _) => "enabled".to_string(),
            (None, _, _) => "disabled: not configured under `plugins:`".to_string(),
        };
        let path = match loc {
            Some(l) => match l.command() {
                Some(c) => format!("{} ({})", c.path.display(), l.source),
                None => l.source.clone(),
            },
            None => "-".into(),
        };
        let kind = loc.as_ref().map(|l| l.kind().as_str()).unwrap_or("-");
        println!("{name:<18} {kind:<9} {version:<8} {path:<44} {hooks:<30} {status}");
    }
    Ok(0)
}

/// `aiperf plugins check NAME`: runs the handshake (and the config, when a file gives one).
pub async fn plugins_check(name: &str, config_path: Option<&Path>) -> crate::Result<u8> {
    let section = config::load_plugins_section(config_path)?;
    // What is printed hides secrets, as in a run.
    let redactor = plugin::Redactor::new(&section, &[]);
    let entry = section.entries.iter().find(|e| e.name == name);
    let search = discovery::SearchPath::from_env();
    let mut python = discovery::PythonPlugins::default();
    let explicit = entry.and_then(|e| e.path.as_deref());
    let implementation = entry.map_or(name, |e| e.implementation());
    let loc = match discovery::locate(implementation, explicit, &search, &mut python).await {
        Ok(l) => l,
        Err(e) => {
            println!("{name}: {}", redactor.redact(&e));
            return Ok(1);
        }
    };
    if implementation != name {
        println!("{name}: an instance of `{implementation}`");
    }
    println!(
        "{name}: {} plugin ({})",
        loc.kind().as_str(),
        loc.command()
            .map(|c| c.path.display().to_string())
            .unwrap_or_else(|| loc.source.clone())
    );
    Ok(match &loc.location {
        Location::Builtin(b) => check_builtin(b, entry, &redactor),
        Location::Executable(cmd) | Location::Python(cmd) => {
            check_process(name, cmd, entry, &redactor).await
        }
    })
}

/// A built-in: its description, and its config checked against its schema and constructor.
fn check_builtin(
    b: &BuiltinPlugin,
    entry: Option<&PluginEntry>,
    redactor: &plugin::Redactor,
) -> u8 {
    println!("  {}", b.description);
    let Some(e) = entry else { return 0 };
    let checked = match (b.config_schema)() {
        Some(s) => plugin::validate_config_at(&s, &e.config, e.origin.as_deref()),
        None => Ok(()),
    }
    .and_then(|_| (b.build)(&e.config, &Default::default()).map(|_| ()));
    match checked {
        Ok(()) => {
            println!("  config: ok");
            0
        }
        Err(why) => {
            println!("  config: {}", redactor.redact(&why));
            1
        }
    }
}

/// A process plugin: started, handshaken, configured (when there is a config), stopped.
async fn check_process(
    name: &str,
    cmd: &Command,
    entry: Option<&PluginEntry>,
    redactor: &plugin::Redactor,
) -> u8 {
    let timeout = entry
        .map(|e| e.timeout)
        .unwrap_or(Duration::from_secs(5))
        .max(process::STARTUP_TIMEOUT);
    let result = match entry {
        Some(e) => {
            process::probe(
                name,
                e.implementation(),
                &cmd.path,
                &cmd.args,
                &e.config,
                timeout,
                e.origin.clone(),
            )
            .await
        }
        None => process::probe_handshake(name, &cmd.path, &cmd.args, timeout).await,
    };
    let (version, hooks) = match result {
        Ok(r) => r,
        Err(e) => {
            println!("  failed: {}", redactor.redact(&e));
            return 1;
        }
    };
    println!(
        "  handshake: ok (protocol v{})",
        aiperf_plugin::PROTOCOL_VERSION
    );
    println!("  version: {version}");
    let hooks: Vec<&str> = hooks.iter().map(|h| h.as_str()).collect();
    println!("  hooks: {}", hooks.join(", "));
    if entry.is_some() {
        println!("  config: ok");
    } else {
        println!("  config: not checked (no `plugins.{name}` section; pass --config FILE)");
    }
    0
}
