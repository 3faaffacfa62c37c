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
pub mod kube;
pub mod merge;
pub mod metrics;
pub mod mix;
pub mod mock;
pub mod multirun;
pub mod plugin;
pub mod readiness;
pub mod report;
pub mod search;
mod search_run;
pub mod secret;
pub mod servermetrics;
pub mod shard;
pub mod sweep;
pub mod timing;
pub mod tokenizer;
pub mod transport;
pub mod ui;
pub mod units;

mod error;
mod inspect;
pub use error::{Error, IoContext, Result};
pub use inspect::{plugins_check, plugins_list};

/// `aiperf profile`: runs the benchmark (which starts the plugins) and returns the exit code.
pub async fn run_profile(cfg: config::BenchmarkConfig) -> Result<u8> {
    // Raised to the hard limit, or past it to what the run needs where that is allowed.
    let limit = transport::source::raise_fd_limit(fd_need(&cfg).unwrap_or(0));
    if let Some(warning) = fd_shortage(&cfg, limit) {
        eprintln!("warning: {warning}");
    }
    let mut secrets: Vec<String> = cfg.endpoint.api_key.iter().cloned().collect();
    secrets.extend(
        cfg.endpoint
            .headers
            .iter()
            .filter(|(k, _)| secret::is_secret_key(k))
            .map(|(_, v)| v.clone()),
    );
    let redactor = plugin::Redactor::new(&cfg.plugins, &secrets);
    if let Some(spec) = cfg.search.clone() {
        return search_run::run(cfg, spec, &redactor).await;
    }
    if cfg.sweep.is_multi() {
        return multirun::run_sweep(cfg, &redactor).await;
    }
    let outcome = benchmark::run(cfg, &redactor).await?;
    Ok(outcome.exit_code)
}

/// File descriptors the run needs beyond one per connection (files, the runtime, plugins).
const FD_MARGIN: u64 = 64;

/// Open files the run needs: a socket per request in flight at its largest concurrency
/// (two with the in-process mock, which serves from this process), plus [`FD_MARGIN`];
/// `None` without a concurrency (an uncapped rate: no guess).
fn fd_need(cfg: &config::BenchmarkConfig) -> Option<u64> {
    let load = &cfg.load;
    // A sweep's largest concurrency.
    let swept = cfg.sweep.concurrency.iter().max().copied();
    let concurrency = load.concurrency.max(load.warmup_concurrency).max(swept)? as u64;
    // A shard runs its part of the concurrency.
    let concurrency = cfg
        .scale
        .shard
        .map_or(concurrency, |s| s.part(concurrency).max(1));
    Some(concurrency * fds_per_stream(cfg) + FD_MARGIN)
}

fn fds_per_stream(cfg: &config::BenchmarkConfig) -> u64 {
    if mock::is_mock_url(&cfg.endpoint.urls[0]) {
        2
    } else {
        1
    }
}

/// A warning when the open-file limit cannot hold the run's connections, said before the
/// run starts: past the limit requests fail as the client's `ClientResourceError`, not the
/// server's. It says how many streams the limit holds and how to raise it.
fn fd_shortage(cfg: &config::BenchmarkConfig, limit: Option<u64>) -> Option<String> {
    let limit = limit?;
    let needed = fd_need(cfg)?;
    let concurrency = (needed - FD_MARGIN) / fds_per_stream(cfg);
    let streams = limit.saturating_sub(FD_MARGIN) / fds_per_stream(cfg);
    (needed > limit).then(|| {
        format!(
            "--concurrency {concurrency} needs about {needed} open files, but the limit is {limit} \
             (raised as far as allowed): about {streams} streams can be held at once and requests \
             past them will fail on the client; raise it with `ulimit -n {needed}` (past the hard \
             limit: `ulimit -Hn {needed}` as root, `LimitNOFILE=` for a service, or \
             /etc/security/limits.conf)"
        )
    })
}

/// `aiperf plot DIR...`: the report (and a picture per chart) rebuilt from artifacts.
pub fn run_plot(a: &cli::PlotArgs) -> Result<u8> {
    let out = report::plot(&report::PlotRequest {
        dirs: a.dirs.clone(),
        output: a.output.clone(),
        format: a.format,
    })
    .map_err(config::ConfigError::Usage)?;
    println!("Report: {}", out.report.display());
    println!(
        "Plots: {} {} file(s) in {}",
        out.pictures.len(),
        a.format.ext(),
        out.report
            .parent()
            .map_or_else(String::new, |p| p.display().to_string())
    );
    Ok(0)
}

/// `aiperf merge DIR... --output DIR`: a sharded run's shards merged into one run's
/// artifacts; with `--config`, its plugins see the merged run once.
pub async fn run_merge(a: cli::MergeArgs) -> Result<u8> {
    let plugins = match &a.config {
        Some(path) => Some(config::load_plugins_section(Some(path))?),
        None => None,
    };
    let mut merged = merge::merge(&a.dirs, &a.output).map_err(merge_error)?;
    let r = &merged.report;
    let n = merged.shards.len();
    let mut console = format!(
        "Merged {n} shards of run {} ({} requests, {} errors)\n",
        r.benchmark_id, r.profiling.success, r.profiling.error_count
    );
    console.push_str(&export::console::render(
        "Profiling (merged)",
        &r.profiling,
        false,
    ));
    console.push_str(&format!(
        "Client health: {}\n",
        if r.client_health.ok() {
            "ok on every shard".to_string()
        } else {
            format!(
                "client may be the bottleneck ({})",
                r.client_health.reasons.join("; ")
            )
        }
    ));
    for n in &r.client_health.notes {
        console.push_str(&format!("Client health note: {n}\n"));
    }
    if let Some(section) = plugins {
        merged.report.plugins = merge_hooks(&section, &merged, &a.output).await;
        console.push_str(&export::console::plugins_section(&merged.report.plugins));
    }
    print!("{console}");
    merge::write(&a.output, &merged, &console).map_err(merge_error)?;
    if !a.no_html {
        match report::write_for_run(
            &a.output,
            export::JSON_FILE,
            export::JSONL_FILE,
            false,
            None,
        ) {
            Ok(p) => println!("Report: {}", p.display()),
            Err(e) => eprintln!("warning: no report.html: {e}"),
        }
    }
    println!("Artifacts: {}", a.output.display());
    Ok(0)
}

fn merge_error(e: merge::MergeError) -> Error {
    match e {
        merge::MergeError::Input(m) => config::ConfigError::Usage(m).into(),
        merge::MergeError::Write(context, source) => Error::Io { context, source },
    }
}

/// The plugins of `section` on the merged run: `benchmark_start`, each phase's
/// `phase_complete` (warmup first), `benchmark_complete`; their report.
async fn merge_hooks(
    section: &plugin::PluginsSection,
    m: &merge::Merged,
    output: &std::path::Path,
) -> plugin::PluginsReport {
    use aiperf_plugin::Hook;
    let r = &m.report;
    let ic = &r.input_config;
    let strings = |p: &str| -> Vec<String> {
        ic.pointer(p)
            .and_then(serde_json::Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let ctx = aiperf_plugin::RunContext {
        run_id: r.benchmark_id.clone(),
        aiperf_version: env!("CARGO_PKG_VERSION").to_string(),
        models: strings("/endpoint/model_names"),
        urls: r.urls.clone(),
        endpoint_type: ic
            .pointer("/endpoint/type")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string(),
        endpoint_path: ic
            .pointer("/endpoint/custom_endpoint")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string(),
        streaming: ic
            .pointer("/endpoint/streaming")
            .and_then(serde_json::Value::as_bool)
            == Some(true),
        artifact_dir: std::path::absolute(output)
            .unwrap_or_else(|_| output.to_path_buf())
            .display()
            .to_string(),
        load: Default::default(),
        warmup: None,
        input_config: ic.clone(),
        sweep: None,
        shard: Some(aiperf_plugin::ShardPart {
            index: 0,
            count: m.shards.len() as u64,
            merged: true,
        }),
    };
    let redactor = plugin::Redactor::new(section, &[]);
    let hooks = plugin::HookRegistry::load(section, &redactor, std::sync::Arc::new(ctx)).await;
    hooks.emit(Hook::BenchmarkStart, None, None, None);
    for (kind, summary) in [
        (metrics::PhaseKind::Warmup, r.warmup.as_ref()),
        (metrics::PhaseKind::Profiling, Some(&r.profiling)),
    ] {
        let (Some(s), Some(stats)) = (summary, r.phase_stats.get(&kind)) else {
            continue;
        };
        hooks.emit(
            Hook::PhaseComplete,
            Some(kind),
            Some(stats.clone()),
            Some(serde_json::Value::Object(s.metrics_json())),
        );
    }
    hooks.emit(
        Hook::BenchmarkComplete,
        None,
        None,
        Some(serde_json::Value::Object(r.profiling.metrics_json())),
    );
    hooks.finish().await
}

/// `aiperf kube manifest`: the Kubernetes manifest of a sharded run (docs/scale-out.md).
pub fn run_kube_manifest(a: &cli::KubeManifestArgs) -> Result<u8> {
    kube::run(a)
}

/// The open-file limit `aiperf mock-server` asks for (granted past the hard limit only to
/// root, and never past `fs.nr_open`).
const MOCK_FD_WANT: u64 = 1 << 20;

/// `aiperf mock-server`: serves until Ctrl-C.
pub async fn run_mock_server(a: cli::MockServerArgs) -> Result<u8> {
    // Every client connection is a socket here too: as many as the machine allows.
    let _ = transport::source::raise_fd_limit(MOCK_FD_WANT);
    let addr: std::net::SocketAddr = format!("{}:{}", a.host, a.port)
        .parse()
        .map_err(|e| config::ConfigError::Usage(format!("invalid --host/--port: {e}")))?;
    let cfg = a.to_mock_config().map_err(config::ConfigError::Usage)?;
    let tls = a.tls_config().map_err(config::ConfigError::Usage)?;
    let listener = mock::bind(addr).context(|| format!("cannot listen on {addr}"))?;
    let local = listener
        .local_addr()
        .context(|| format!("cannot listen on {addr}"))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!("aiperf mock server listening on {scheme}://{local}");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let s = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        s.cancel();
    });
    mock::serve(listener, cfg, tls, shutdown)
        .await
        .context(|| "the mock server failed".into())?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(args: &[&str]) -> config::BenchmarkConfig {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        config::load(&args).expect("valid flags")
    }

    #[test]
    fn a_concurrency_past_the_fd_limit_is_warned_about() {
        let remote = cfg(&["-m", "m", "--url", "http://h:1", "--concurrency", "1000"]);
        let w = fd_shortage(&remote, Some(256)).expect("a warning");
        assert!(
            w.contains("needs about 1064 open files, but the limit is 256"),
            "{w}"
        );
        assert!(w.contains("ulimit -n 1064"), "{w}");
        assert!(w.contains("about 192 streams can be held"), "{w}");
        assert_eq!(fd_shortage(&remote, Some(4096)), None);
        // The in-process mock holds the other end of every connection.
        let mock = cfg(&["--url", "mock", "--concurrency", "1000"]);
        let w = fd_shortage(&mock, Some(2000)).expect("a warning");
        assert!(w.contains("about 2064 open files"), "{w}");
        assert!(w.contains("about 968 streams can be held"), "{w}");
        // No cap on connections (a rate without --concurrency), or no limit known: no guess.
        let sweep = cfg(&["-m", "m", "--url", "http://h:1", "--concurrency", "1,1000"]);
        assert!(
            fd_shortage(&sweep, Some(256)).is_some(),
            "a sweep's largest point"
        );
        let rate = cfg(&["-m", "m", "--url", "http://h:1", "--request-rate", "5"]);
        assert_eq!(fd_shortage(&rate, Some(16)), None);
        assert_eq!(fd_shortage(&remote, None), None);
        // A shard holds its part: 1000 / 4 = 250 streams.
        let shard = cfg(&[
            "-m",
            "m",
            "--url",
            "http://h:1",
            "--concurrency",
            "1000",
            "--shard",
            "1/4",
        ]);
        assert_eq!(fd_shortage(&shard, Some(400)), None);
        let w = fd_shortage(&shard, Some(300)).expect("a warning");
        assert!(
            w.contains("--concurrency 250 needs about 314 open files"),
            "{w}"
        );
    }
}
