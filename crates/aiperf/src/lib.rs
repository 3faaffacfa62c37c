//! aiperf: a benchmark for LLM inference servers, with a plugin system.
//!
//! The binary is a thin shell over [`run`]; everything is reachable from the library so tests
//! can drive it in-process.

pub mod benchmark;
pub mod cli;
pub mod config;
pub mod dataset;
pub mod endpoint;
pub mod export;
pub mod metrics;
pub mod mock;
pub mod plugin;
pub mod timing;
pub mod tokenizer;
pub mod transport;

use std::path::Path;
use std::time::Duration;

/// `aiperf profile`: runs the benchmark and returns the exit code.
pub async fn run_profile(cfg: config::BenchmarkConfig) -> anyhow::Result<u8> {
    mock::raise_fd_limit();
    let hooks = plugin::HookRegistry::empty();
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

/// `aiperf plugins list`.
pub async fn plugins_list(config: Option<&Path>) -> anyhow::Result<u8> {
    let _ = config::load_plugins_section(config)?;
    println!("(no plugins)");
    Ok(0)
}

/// `aiperf plugins check NAME`.
pub async fn plugins_check(name: &str, config: Option<&Path>) -> anyhow::Result<u8> {
    let _ = config::load_plugins_section(config)?;
    eprintln!("plugin `{name}` not found");
    Ok(1)
}
