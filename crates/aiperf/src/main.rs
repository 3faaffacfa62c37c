//! The `aiperf` binary: parse the command line, call the library, map errors to exit codes.

use std::process::ExitCode;

use aiperf::cli::{Cli, Command, KubeCommand, PluginsCommand};
use aiperf::config::ConfigError;
use clap::Parser;

/// mimalloc, built without transparent huge pages: with them, each thread's arenas are
/// backed in 2 MiB pages and 10,000 concurrent streams took ~160 MB more resident memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Logs go to stderr. By default: warnings, plus plugins' own output (their stderr and
/// `log` messages), which is how a plugin talks to its user. `AIPERF_LOG` (an `EnvFilter`)
/// wins over `--log-level`, which wins over `-v`.
///
/// With `log_file` (a run's `logs/aiperf.log`, as AIPerf writes it), the same events also go
/// to that file, without colours, at `--log-level` (default `info`, or `-v`'s level).
fn init_logging(
    verbose: u8,
    level: Option<&str>,
    plugin_output: bool,
    log_file: Option<&std::path::Path>,
) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let default = match (level, verbose, plugin_output) {
        (Some(l), _, _) => l,
        (None, 0, true) => "warn,aiperf::plugin=info",
        (None, 0, false) => "warn",
        (None, 1, _) => "info,aiperf=debug",
        (None, _, _) => "trace",
    };
    let filter =
        || EnvFilter::try_from_env("AIPERF_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_filter(filter());
    let file = log_file.and_then(|path| {
        let opened = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::File::create(path));
        match opened {
            Ok(f) => Some(f),
            Err(e) => {
                // An artifact directory that cannot be made is the run's usage error (exit
                // 2, one line), said once the config is checked: no warning here too.
                let dir_exists = path
                    .parent()
                    .and_then(|l| l.parent())
                    .is_some_and(|d| d.is_dir());
                if dir_exists {
                    eprintln!("warning: cannot write the log file {}: {e}", path.display());
                }
                None
            }
        }
    });
    let file_default = match (level, verbose) {
        (Some(l), _) => l,
        (None, 0) => "info",
        (None, 1) => "info,aiperf=debug",
        (None, _) => "trace",
    };
    let file_layer = file.map(|f| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::sync::Mutex::new(f))
            .with_ansi(false)
            .with_filter(
                EnvFilter::try_from_env("AIPERF_LOG")
                    .unwrap_or_else(|_| EnvFilter::new(file_default)),
            )
    });
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        .try_init();
}

/// `aiperf --config FILE [flags]` is `aiperf profile --config FILE [flags]`.
fn normalize_args(mut args: Vec<String>) -> Vec<String> {
    if let Some(first) = args.get(1) {
        if first == "--config" || first.starts_with("--config=") {
            args.insert(1, "profile".into());
        }
    }
    args
}

fn main() -> ExitCode {
    let args = normalize_args(std::env::args().collect());
    // `profile` arguments are parsed by the config layer (file + CLI merge); everything else
    // by clap directly.
    if args.get(1).map(String::as_str) == Some("profile") {
        let rest = &args[2..];
        if rest.iter().any(|a| a == "-h" || a == "--help") {
            let _ = Cli::try_parse_from(&args).map_err(|e| e.exit());
        }
        let cfg = match aiperf::config::load(rest) {
            Ok(c) => c,
            Err(e) => return usage_error(&e),
        };
        let level = cfg.output.log_level.map(|l| l.directive());
        init_logging(
            cfg.output.verbose,
            level,
            true,
            Some(&cfg.output.log_file()),
        );
        tracing::info!(
            "aiperf {} starting: {}",
            env!("CARGO_PKG_VERSION"),
            cfg.cli_command
        );
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = cfg.scale.worker_threads(cores);
        return run_async_on(threads, async move { aiperf::run_profile(cfg).await });
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        // A usage error is one line, as for `profile` (clap adds a usage block and a tip).
        Err(e) => {
            let text = e.to_string();
            // The first paragraph: the error and what clap lists under it (possible values).
            let line: Vec<&str> = text
                .lines()
                .map(|l| l.trim_start_matches("error: ").trim())
                .skip_while(|l| l.is_empty())
                .take_while(|l| !l.is_empty())
                .collect();
            eprintln!("error: {}", line.join(" "));
            return ExitCode::from(2);
        }
    };
    // `plugins list/check` start plugins only to ask them who they are: keep them quiet.
    init_logging(0, None, false, None);
    match cli.command {
        Some(Command::MockServer(m)) => run_async(aiperf::run_mock_server(m)),
        Some(Command::Plugins(PluginsCommand::List { config })) => {
            run_async(async move { aiperf::plugins_list(config.as_deref()).await })
        }
        Some(Command::Plugins(PluginsCommand::Check { name, config })) => {
            run_async(async move { aiperf::plugins_check(&name, config.as_deref()).await })
        }
        Some(Command::Merge(m)) => run_async(aiperf::run_merge(m)),
        Some(Command::Plot(p)) => match aiperf::run_plot(&p) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(e.exit_code())
            }
        },
        Some(Command::Kube(KubeCommand::Manifest(m))) => match aiperf::run_kube_manifest(&m) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(e.exit_code())
            }
        },
        Some(Command::Profile(_)) | None => {
            eprintln!(
                "error: nothing to do; try `aiperf profile --help` or `aiperf --config FILE`"
            );
            ExitCode::from(2)
        }
    }
}

fn usage_error(e: &ConfigError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

fn run_async(fut: impl std::future::Future<Output = aiperf::Result<u8>>) -> ExitCode {
    run_async_on(None, fut)
}

/// Runs `fut` on a multi-thread runtime with `threads` workers (`None`: tokio's default).
fn run_async_on(
    threads: Option<usize>,
    fut: impl std::future::Future<Output = aiperf::Result<u8>>,
) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        builder.worker_threads(n);
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(fut) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
