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
pub mod secret;
pub mod timing;
pub mod tokenizer;
pub mod transport;
pub mod units;

mod error;
mod inspect;
pub use error::{Error, IoContext, Result};
pub use inspect::{plugins_check, plugins_list};

/// `aiperf profile`: loads the plugins, runs the benchmark and returns the exit code.
pub async fn run_profile(cfg: config::BenchmarkConfig) -> Result<u8> {
    mock::raise_fd_limit();
    let mut secrets: Vec<String> = cfg.endpoint.api_key.iter().cloned().collect();
    secrets.extend(
        cfg.endpoint
            .headers
            .iter()
            .filter(|(k, _)| secret::is_secret_key(k))
            .map(|(_, v)| v.clone()),
    );
    let redactor = plugin::Redactor::new(&cfg.plugins, &secrets);
    let hooks = plugin::HookRegistry::load(&cfg.plugins, &redactor).await;
    if cfg.plugins.strict {
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
pub async fn run_mock_server(a: cli::MockServerArgs) -> Result<u8> {
    mock::raise_fd_limit();
    let addr: std::net::SocketAddr = format!("{}:{}", a.host, a.port)
        .parse()
        .map_err(|e| config::ConfigError::Usage(format!("invalid --host/--port: {e}")))?;
    let cfg = a.to_mock_config().map_err(config::ConfigError::Usage)?;
    let listener = mock::bind(addr).context(|| format!("cannot listen on {addr}"))?;
    let local = listener
        .local_addr()
        .context(|| format!("cannot listen on {addr}"))?;
    eprintln!("aiperf mock server listening on http://{local}");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let s = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        s.cancel();
    });
    mock::serve(listener, cfg, shutdown)
        .await
        .context(|| "the mock server failed".into())?;
    Ok(0)
}
