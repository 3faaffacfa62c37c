//! One benchmark run, end to end: dataset, phases, records, reports.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use aiperf_plugin::Hook;
use anyhow::Context;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{BenchmarkConfig, ConfigError};
use crate::dataset::Dataset;
use crate::endpoint::{RequestShape, ResponseParser};
use crate::export::{self, jsonl::JsonlWriter, RunReport};
use crate::metrics::processor::RecordProcessor;
use crate::metrics::{PhaseKind, PhaseSummary};
use crate::mock::{is_mock_url, InProcessMock, MockConfig};
use crate::plugin::HookRegistry;
use crate::timing::{run_phase, PhaseSpec, PhaseTracker, RateSpec, RunContext, Trace};
use crate::tokenizer::Tokenizer;
use crate::transport::Transport;

/// How a run ended, for the exit code.
#[derive(Debug)]
pub struct RunOutcome {
    pub report: RunReport,
    /// 0: success; 1: every request failed or a strict check failed.
    pub exit_code: u8,
}

/// Progress display on stderr, fed from the phase trackers.
struct Progress {
    bar: indicatif::ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn start(
        kind: PhaseKind,
        tracker: Arc<PhaseTracker>,
        total: Option<u64>,
        duration: Option<Duration>,
    ) -> Self {
        let bar = match total {
            Some(n) => indicatif::ProgressBar::new(n),
            None => indicatif::ProgressBar::new(duration.map(|d| d.as_secs()).unwrap_or(0)),
        };
        let template = if total.is_some() {
            "{prefix:>9} [{elapsed_precise}] {bar:40.cyan/blue} {pos}/{len} requests {msg}"
        } else {
            "{prefix:>9} [{elapsed_precise}] {bar:40.cyan/blue} {pos}/{len} s {msg}"
        };
        bar.set_style(indicatif::ProgressStyle::with_template(template).expect("valid template"));
        bar.set_prefix(kind.as_str().to_string());
        let b = bar.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let s = tracker.stats();
                if total.is_some() {
                    b.set_position(s.completed + s.cancelled);
                } else {
                    b.set_position(s.duration_sec as u64);
                }
                b.set_message(format!("({} in flight, {} errors)", s.in_flight, s.errors));
            }
        });
        Self { bar, task }
    }

    fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}

/// Ctrl-C / SIGTERM: the first stops sending and lets in-flight requests finish within the
/// grace period; the second exits at once (the JSONL on disk holds whole lines only).
fn install_signal_handler(stop: CancellationToken) {
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            #[cfg(unix)]
            {
                let mut term =
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(s) => s,
                        Err(_) => return,
                    };
                tokio::select! {
                    r = tokio::signal::ctrl_c() => if r.is_err() { return },
                    _ = term.recv() => {}
                }
            }
            #[cfg(not(unix))]
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            count += 1;
            if count == 1 {
                eprintln!("\nInterrupted: no new requests; waiting for in-flight requests (interrupt again to quit now)");
                stop.cancel();
            } else {
                eprintln!("\nInterrupted twice: exiting now");
                std::process::exit(130);
            }
        }
    });
}

async fn load_tokenizer(spec: &str) -> Result<Tokenizer, ConfigError> {
    let spec = spec.to_string();
    tokio::task::spawn_blocking(move || Tokenizer::load(&spec))
        .await
        .expect("tokenizer thread")
        .map_err(ConfigError::from)
}

/// Runs a benchmark. `hooks` receives the lifecycle events.
pub async fn run(mut cfg: BenchmarkConfig, hooks: HookRegistry) -> anyhow::Result<RunOutcome> {
    let clock = Clock::new();
    let tokenizer = tokio::spawn({
        let spec = cfg.input.tokenizer.clone();
        async move { load_tokenizer(&spec).await }
    });
    let mut mock = None;
    if is_mock_url(&cfg.endpoint.urls[0]) {
        let mock_cfg: MockConfig = cfg.endpoint.urls[0].parse().map_err(ConfigError::Usage)?;
        let m = InProcessMock::start(mock_cfg)
            .await
            .context("cannot start the built-in mock server")?;
        tracing::info!("built-in mock server listening on {}", m.url());
        cfg.endpoint.urls = vec![m.url()];
        mock = Some(m);
    }
    let tokenizer = tokenizer.await.expect("tokenizer task")?;
    tracing::debug!(
        "tokenizer {} loaded at {:.1} ms",
        tokenizer.name(),
        clock.now_ns() as f64 / 1e6
    );
    let dataset = {
        let (c, t) = (cfg.input.clone(), tokenizer.clone());
        let shape = RequestShape::new(&cfg.endpoint, cfg.input.use_server_token_count);
        tokio::task::spawn_blocking(move || Dataset::build(&c, shape, &t))
            .await
            .expect("dataset thread")
            .map_err(ConfigError::from)?
    };
    tracing::debug!(
        "{} dataset entries built at {:.1} ms",
        dataset.entries.len(),
        clock.now_ns() as f64 / 1e6
    );
    let trace = fixed_schedule(&cfg, &dataset)?;
    // With an input file and no --request-count: one request per entry (or per trace line).
    let profiling_count = match (&trace, cfg.input.input_file.is_some()) {
        (Some(t), _) => Some(
            cfg.load
                .request_count
                .map_or(t.len() as u64, |c| c.min(t.len() as u64)),
        ),
        (None, true) if cfg.load.benchmark_duration.is_none() => Some(
            cfg.load
                .request_count
                .unwrap_or(dataset.entries.len() as u64),
        ),
        _ => cfg.load.request_count,
    };

    let dir = cfg.output.artifact_directory.clone();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create artifact directory {}", dir.display()))?;
    export::write_inputs(&dir, &dataset).context("cannot write inputs.json")?;
    let jsonl = JsonlWriter::create(
        &dir.join(export::JSONL_FILE),
        clock,
        dataset
            .entries
            .iter()
            .map(|e| e.conversation_id.clone())
            .collect(),
    )
    .with_context(|| format!("cannot create {}", dir.join(export::JSONL_FILE).display()))?;
    let mut processor =
        RecordProcessor::start(tokenizer.clone(), cfg.input.use_server_token_count, jsonl);

    let transport = Transport::new(
        &cfg.endpoint.urls,
        &cfg.endpoint.path,
        cfg.endpoint.api_key.as_deref(),
        &cfg.endpoint.headers,
        cfg.endpoint.request_timeout,
        clock,
        ResponseParser::for_shape(&dataset.shape, &cfg.endpoint.response_field),
    )
    .map_err(|e| ConfigError::Usage(e.to_string()))?;
    let stop_sending = CancellationToken::new();
    install_signal_handler(stop_sending.clone());
    let ctx = Arc::new(RunContext {
        clock,
        transport,
        dataset,
        streaming: cfg.endpoint.streams(),
        records: processor.sender(),
        next_request: AtomicU64::new(0),
        stop_sending: stop_sending.clone(),
        cancel_in_flight: CancellationToken::new(),
    });

    let health = crate::timing::health::HealthMonitor::start();
    let run_start = clock.now_ns();
    hooks.emit(Hook::BenchmarkStart, None, None, None);
    let mut phase_stats = Map::new();
    let mut warmup = None;
    let mut phases = Vec::new();
    let rate = |r: Option<f64>, seed: u64| {
        r.map(|rate| RateSpec {
            rate,
            mode: cfg.load.request_rate_mode,
            smoothness: cfg.load.arrival_smoothness,
            ramp: cfg.load.request_rate_ramp_duration,
            seed,
        })
    };
    if cfg.load.has_warmup() {
        phases.push(PhaseSpec {
            kind: PhaseKind::Warmup,
            request_count: (cfg.load.warmup_request_count > 0)
                .then_some(cfg.load.warmup_request_count),
            duration: cfg.load.warmup_duration,
            grace_period: cfg.load.grace_period,
            concurrency: cfg.load.warmup_concurrency.or(cfg.load.concurrency),
            concurrency_ramp: None,
            trace: None,
            rate: rate(
                cfg.load.warmup_request_rate.or(cfg.load.request_rate),
                cfg.input.random_seed ^ 0x5741_524D,
            ),
            cancellation: None,
            seed: cfg.input.random_seed ^ 0x5741_524D,
        });
    }
    phases.push(PhaseSpec {
        kind: PhaseKind::Profiling,
        request_count: profiling_count,
        duration: cfg.load.benchmark_duration,
        grace_period: cfg.load.grace_period,
        concurrency: cfg.load.concurrency,
        concurrency_ramp: cfg.load.concurrency_ramp_duration,
        rate: rate(cfg.load.request_rate, cfg.input.random_seed),
        trace: trace.clone(),
        cancellation: cfg.load.cancellation(),
        seed: cfg.input.random_seed,
    });
    let mut profiling = PhaseSummary::default();
    for spec in phases {
        if stop_sending.is_cancelled() {
            break;
        }
        let kind = spec.kind;
        let progress = (cfg.output.ui == crate::export::UiType::Simple)
            .then_some((spec.request_count, spec.duration));
        let (tracker, summary) = {
            let run = run_phase(&ctx, spec.clone(), &hooks, |t| {
                progress.map(|(total, dur)| Progress::start(kind, t, total, dur))
            });
            let (tracker, progress) = run.await;
            if let Some(p) = progress {
                p.finish();
            }
            let summary = processor.summarize(kind).await;
            (tracker, summary)
        };
        let stats = tracker.stats();
        phase_stats.insert(
            kind.as_str().into(),
            serde_json::to_value(&stats).unwrap_or(Value::Null),
        );
        hooks.emit(
            Hook::PhaseComplete,
            Some(kind),
            Some(stats),
            Some(Value::Object(summary.metrics_json())),
        );
        match kind {
            PhaseKind::Warmup => warmup = Some(summary),
            PhaseKind::Profiling => profiling = summary,
        }
    }
    let run_end = clock.now_ns();
    hooks.emit(
        Hook::BenchmarkComplete,
        None,
        None,
        Some(Value::Object(profiling.metrics_json())),
    );
    if ctx
        .dataset
        .entries
        .iter()
        .any(|e| e.later_payloads.get().is_some())
    {
        export::write_inputs(&dir, &ctx.dataset).context("cannot write inputs.json")?;
    }
    let plugins = hooks.finish().await;
    drop(ctx);
    processor
        .finish()
        .await
        .context("cannot write profile_export.jsonl")?;
    if let Some(m) = mock {
        m.stop().await;
    }

    let was_cancelled = stop_sending.is_cancelled();
    let mut warnings = Vec::new();
    if was_cancelled {
        warnings.push(
            "the run was interrupted: results cover only the requests that finished".to_string(),
        );
    }
    if profiling.count_mismatches > 0 {
        warnings.push(format!(
            "{} of {} requests: the client's and the server's output token counts differ by more than 10 % \
             (is --tokenizer the model's tokenizer?); OSL uses the {} count",
            profiling.count_mismatches,
            profiling.success,
            if cfg.input.use_server_token_count { "server's" } else { "client's" }
        ));
    }
    let send_lag_p99 = match profiling.get("send_lag") {
        Some(crate::metrics::MetricValue::Stats(s)) => Some(s.p99),
        _ => None,
    };
    let health = health.finish(send_lag_p99);
    if !health.ok {
        warnings.push(format!(
            "these numbers may describe the client rather than the server: {}",
            health.reasons.join("; ")
        ));
    }
    let report = RunReport {
        benchmark_id: uuid::Uuid::new_v4().to_string(),
        input_config: serde_json::to_value(&cfg).unwrap_or_default(),
        profiling,
        warmup,
        was_cancelled,
        start_time: clock.iso(run_start),
        end_time: clock.iso(run_end),
        urls: cfg.endpoint.urls.clone(),
        warnings,
        plugins: plugins.to_json(),
        phase_stats,
        client_health: health.json,
    };
    export::write_reports(&dir, &report).context("cannot write the reports")?;
    let exit_code = finish_console(
        &cfg,
        &dir,
        &report,
        plugins.strict_failure(cfg.plugins.strict),
    );
    Ok(RunOutcome { report, exit_code })
}

/// The replay schedule of a trace, when the fixed schedule applies: entries with timestamps
/// inside the offset window, in time order, offsets scaled by `--replay-speedup`.
fn fixed_schedule(
    cfg: &BenchmarkConfig,
    dataset: &Dataset,
) -> Result<Option<Arc<Trace>>, ConfigError> {
    let wanted = match cfg.input.fixed_schedule {
        Some(false) => return Ok(None),
        Some(true) if !dataset.has_timestamps() => {
            return Err(ConfigError::Usage(
                "--fixed-schedule needs a `timestamp` (ms) on every line of --input-file".into(),
            ))
        }
        _ => dataset.has_timestamps(),
    };
    if !wanted {
        return Ok(None);
    }
    if cfg.load.request_rate.is_some() {
        return Err(ConfigError::Usage(
            "--request-rate conflicts with the trace's timestamps: drop it, or pass --no-fixed-schedule".into(),
        ));
    }
    let start = cfg.input.fixed_schedule_start_offset;
    let end = cfg.input.fixed_schedule_end_offset;
    let mut items: Vec<(f64, usize)> = dataset
        .entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.timestamp_ms.map(|t| (t, i)))
        .filter(|(t, _)| start.is_none_or(|s| *t >= s) && end.is_none_or(|e| *t <= e))
        .collect();
    items.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let Some(first) = items.first().map(|x| x.0) else {
        return Err(ConfigError::Usage(
            "no trace entries inside the --fixed-schedule offsets".into(),
        ));
    };
    let origin = start.unwrap_or(first);
    Ok(Some(Arc::new(
        items
            .into_iter()
            .map(|(t, i)| {
                (
                    crate::units::clamped_millis((t - origin) / cfg.input.replay_speedup),
                    i,
                )
            })
            .collect(),
    )))
}

fn finish_console(
    cfg: &BenchmarkConfig,
    dir: &Path,
    report: &RunReport,
    strict_failure: Option<String>,
) -> u8 {
    let s = &report.profiling;
    let title = format!(
        "NVIDIA AIPerf-compatible | LLM Metrics ({}{})",
        cfg.endpoint.model,
        if report.was_cancelled {
            ", interrupted"
        } else {
            ""
        }
    );
    print!("{}", export::console::render(&title, s));
    let h = &report.client_health;
    if h["verdict"] == "ok" {
        println!(
            "Client health: ok (runtime lag p99 {:.3} ms, aiperf CPU {:.0} % of one core, machine {:.0} % busy)",
            h["runtime_lag_ms"]["p99"].as_f64().unwrap_or(0.0),
            h["process_cpu_percent"].as_f64().unwrap_or(0.0),
            h["machine_cpu_busy_percent"].as_f64().unwrap_or(0.0),
        );
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    println!("Artifacts: {}", dir.display());
    if let Some(why) = strict_failure {
        eprintln!("error: --strict-plugins: {why}");
        return 1;
    }
    if s.success == 0 && s.error_count > 0 {
        eprintln!(
            "error: every request failed ({} errors); see the error summary above",
            s.error_count
        );
        return 1;
    }
    if s.success == 0 {
        eprintln!("error: no request completed");
        return 1;
    }
    0
}
