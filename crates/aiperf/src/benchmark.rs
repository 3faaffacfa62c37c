//! One benchmark run, end to end, in steps: `prepare` (tokenizer, mock, dataset, fixed
//! schedule), [`phase_specs`] (what each phase does, from the config alone), [`run_context`]
//! (what the plugins learn about the run) and the plugins started, `start` (readiness,
//! artifacts, record processor, transport), `run_phases`, `wind_down` (plugins, JSONL, mock),
//! `report`, then the files and the console.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use aiperf_plugin::{Hook, LoadContext, PhaseStats};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{BenchmarkConfig, ConfigError};
use crate::dataset::Dataset;
use crate::endpoint::{RequestShape, ResponseParser};
use crate::error::{Error, IoContext, Result};
use crate::export::outputs::{OutputsWriter, Tee};
use crate::export::tap::PluginTap;
use crate::export::{self, jsonl::JsonlWriter, OutputSpec, RunReport, UiType};
use crate::metrics::processor::RecordProcessor;
use crate::metrics::slices::{Slicing, TimeSlice};
use crate::metrics::{MetricValue, PhaseKind, PhaseSummary};
use crate::mock::{is_mock_url, InProcessMock, MockConfig};
use crate::plugin::{HookRegistry, PluginsReport, RecordFeed, Redactor};
use crate::readiness;
use crate::report::data::KeptRecords;
use crate::servermetrics::{Collector, Files as ScrapeFiles};
use crate::shard::Shard;
use crate::timing::health::HealthMonitor;
use crate::timing::{
    run_phase, ConcurrencyCap, PhaseLoad, PhaseSpec, PhaseTracker, RateSpec, RequestRateMode,
    RunContext, Trace, FAILED_REQUEST_GRACE,
};
use crate::tokenizer::{self, Tokenizer, TokenizerSpec};
use crate::transport::Transport;
use crate::ui::{Dashboard, Live, PhaseInfo};
use tokio_util::task::AbortOnDropHandle;

/// How a run ended, for the exit code.
#[derive(Debug)]
pub struct RunOutcome {
    /// `None` when the run stopped before its first phase (`--strict-plugins`).
    pub report: Option<RunReport>,
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
/// grace period; the second exits at once (the JSONL on disk holds whole lines only). The
/// listeners are made once, before the first signal, so no signal can fall between two of
/// them.
fn install_signal_handler(stop: CancellationToken) {
    // Each run of a sweep installs its own; only the latest one acts on a signal.
    static LATEST: AtomicU64 = AtomicU64::new(0);
    let me = LATEST.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    let current = move || LATEST.load(std::sync::atomic::Ordering::SeqCst) == me;
    #[cfg(unix)]
    let listeners = {
        use tokio::signal::unix::{signal, SignalKind};
        signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?)))
    };
    tokio::spawn(async move {
        #[cfg(unix)]
        let Ok((mut interrupt, mut terminate)) = listeners
        else {
            tracing::warn!("cannot listen for Ctrl-C/SIGTERM: they end the run at once");
            return;
        };
        for count in 1.. {
            #[cfg(unix)]
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            #[cfg(not(unix))]
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            if !current() {
                return;
            }
            if count == 1 {
                // (Under the dashboard this goes to its log panel, and to stderr after it.)
                eprintln!("\nInterrupted: no new requests; waiting for in-flight requests (interrupt again to quit now)");
                stop.cancel();
            } else {
                // The dashboard's terminal back first (`atexit` would too, after the message).
                crate::ui::terminal::restore();
                eprintln!("\nInterrupted twice: exiting now");
                std::process::exit(130);
            }
        }
    });
}

/// Loads the tokenizer on a blocking thread. A model's own tokenizer that cannot be had
/// becomes `builtin` with a warning, and `spec` then names the one used (the report's
/// `input_config` shows it).
async fn load_tokenizer(spec: &mut TokenizerSpec) -> Result<Tokenizer> {
    let asked = spec.clone();
    let loaded = tokio::task::spawn_blocking(move || Tokenizer::load_spec(&asked))
        .await
        .map_err(|e| Error::Internal(format!("the tokenizer thread failed: {e}")))?
        .map_err(ConfigError::from)?;
    if let Some(w) = &loaded.warning {
        eprintln!("warning: {w}");
        spec.name = tokenizer::BUILTIN.to_string();
    }
    Ok(loaded.tokenizer)
}

/// Runs a benchmark: prepares it, starts the plugins (with the run's context) and sends them
/// the lifecycle events. `redactor` hides secrets in what the plugins print.
pub async fn run(cfg: BenchmarkConfig, redactor: &Redactor) -> Result<RunOutcome> {
    run_in_sweep(cfg, redactor, None).await
}

/// Makes [`sweep_complete`](Hook::SweepComplete)'s summary from the last run's profiling
/// summary (the shape of `benchmark_complete`'s).
pub type SweepSummaryFn = Box<dyn FnOnce(&Value) -> Value + Send>;

/// What a run of a sweep (or of repeated runs) adds to a single run: its place in the
/// sweep (the run context's `sweep`), `sweep_start` before `benchmark_start` on the first
/// run, and `sweep_complete` after `benchmark_complete` on the last.
pub struct SweepRun {
    pub point: aiperf_plugin::SweepPoint,
    pub first: bool,
    /// On the sweep's last run: `sweep_complete`'s summary, from this run's summary.
    pub last: Option<SweepSummaryFn>,
}

/// [`run`], as one run of a sweep when `sweep` is given.
pub async fn run_in_sweep(
    cfg: BenchmarkConfig,
    redactor: &Redactor,
    sweep: Option<SweepRun>,
) -> Result<RunOutcome> {
    // A `--start-at` already past: the clock starts before it, so a late schedule's
    // deadlines (and their send lag) are on it.
    let clock = cfg
        .scale
        .start_at_ns
        .map_or_else(Clock::new, Clock::covering);
    let Prepared {
        cfg,
        dataset,
        tokenizer,
        mock,
        trace,
        profiling_count,
    } = prepare(cfg, clock).await?;
    let specs = phase_specs(&cfg, profiling_count, trace);
    // Every usage error could have been found by now, and nothing was written or sent.
    let mut run_ctx = run_context(&cfg, &specs, run_id(&cfg));
    let (sweep_first, sweep_last) = match sweep {
        Some(s) => {
            run_ctx.sweep = Some(s.point);
            (s.first, s.last)
        }
        None => (false, None),
    };
    let run_ctx = Arc::new(run_ctx);
    let hooks = HookRegistry::load(&cfg.plugins, redactor, run_ctx.clone()).await;
    // A key a plugin's schema forbids (found once it said its schema): a usage error.
    if let Some(why) = hooks.config_error() {
        hooks.finish().await;
        if let Some(m) = mock {
            m.stop().await;
        }
        return Err(ConfigError::Usage(why).into());
    }
    if cfg.plugins.strict {
        if let Some(why) = hooks.startup_failure() {
            hooks.finish().await;
            if let Some(m) = mock {
                m.stop().await;
            }
            eprintln!("error: --strict-plugins: {why}");
            return Ok(RunOutcome {
                report: None,
                exit_code: 1,
            });
        }
    }
    // The server-metrics and GPU endpoints are probed while the run starts (both only
    // read the network; dropped unfinished if starting fails), unless the run first waits
    // for the server to be ready: then after, as a server still starting may not answer.
    let probe = || {
        let (spec, urls) = (cfg.server_metrics.clone(), cfg.endpoint.urls.clone());
        AbortOnDropHandle::new(tokio::spawn(
            async move { Collector::find(&spec, &urls).await },
        ))
    };
    let probing = cfg.endpoint.wait_for_model.timeout.is_zero().then(probe);
    let ui = effective_ui(cfg.output.ui);
    let live = (ui == UiType::Dashboard).then(|| Arc::new(Live::default()));
    let (ctx, mut processor, kept) = start(
        &cfg,
        dataset,
        tokenizer,
        clock,
        hooks.record_feed(),
        live.clone(),
    )
    .await?;
    stop_on_sink_failure(&processor, &ctx.stop_sending);
    // Server metrics and GPU telemetry: the scrapers' own threads, started before the
    // first phase so its window opens on a sample.
    let found = probing
        .unwrap_or_else(probe)
        .await
        .map_err(|e| Error::Internal(format!("the server-metrics probe failed: {e}")))?;
    let collector = Collector::start(
        found,
        &cfg.server_metrics,
        clock,
        scrape_files(&cfg.output.artifact_directory, &cfg.output.names),
    );
    let health = HealthMonitor::start();
    let dashboard = live.as_ref().and_then(|l| {
        Dashboard::start(
            l.clone(),
            health.probe(),
            dashboard_title(&cfg),
            ctx.stop_sending.clone(),
        )
        .map_err(|e| eprintln!("warning: cannot show the dashboard: {e}"))
        .ok()
    });
    let run_start = clock.now_ns();
    if sweep_first {
        hooks.emit(Hook::SweepStart, None, None, None);
    }
    hooks.emit(Hook::BenchmarkStart, None, None, None);
    let abort = Arc::new(std::sync::OnceLock::new());
    let watch = cfg.load.failed_request_threshold.map(|t| FailureWatch {
        threshold: t,
        floor: FAILED_REQUEST_GRACE.max(cfg.load.concurrency.unwrap_or(1) as u64),
        reason: abort.clone(),
    });
    let shown = Shown {
        bar: ui == UiType::Simple || (ui == UiType::Dashboard && dashboard.is_none()),
        live: live.filter(|_| dashboard.is_some()),
    };
    let mut phases = run_phases(
        &ctx,
        &mut processor,
        &hooks,
        specs,
        shown,
        watch,
        &collector,
    )
    .await;
    let timeslices = std::mem::take(&mut phases.timeslices);
    // The terminal back before anything else is printed (what was written to stderr
    // meanwhile comes out now).
    if let Some(d) = dashboard {
        d.stop();
    }
    let run_end = clock.now_ns();
    let (window_start, window_end) = match phases.stats.get(&PhaseKind::Profiling) {
        Some(s) => (
            s.start_time_ns,
            s.end_time_ns.unwrap_or(clock.wall_ns(run_end)),
        ),
        None => (clock.wall_ns(run_start), clock.wall_ns(run_end)),
    };
    // The server's metrics and GPU telemetry over each time slice's window.
    let slice_sections: Vec<Map<String, Value>> = timeslices
        .iter()
        .enumerate()
        .map(|(i, t)| collector.sections(t.start_ns, t.end_ns, i == 0))
        .collect();
    let scraped = collector.finish(window_start, window_end).await;
    let summary = Value::Object(phases.profiling.metrics_json());
    let sweep_summary = sweep_last.map(|f| f(&summary));
    hooks.emit(Hook::BenchmarkComplete, None, None, Some(summary));
    if let Some(s) = sweep_summary {
        hooks.emit(Hook::SweepComplete, None, None, Some(s));
    }
    let stop_sending = ctx.stop_sending.clone();
    let (plugins, jsonl_error) =
        wind_down(&cfg.output.artifact_directory, ctx, processor, mock, hooks).await?;
    let times = (clock.iso(run_start), clock.iso(run_end));
    let ending = Ending {
        was_cancelled: stop_sending.is_cancelled(),
        jsonl_error,
        aborted: abort.get().cloned(),
    };
    let mut report = report(&cfg, &run_ctx, times, phases, plugins, health, &ending);
    report.server_metrics = scraped.server_section;
    report.gpu_telemetry = scraped.gpu_section;
    let dir = &cfg.output.artifact_directory;
    // The console summary is printed even when the files cannot be written: on a full
    // disk it is all that is left of the run.
    let mut failures: Vec<String> = ending.jsonl_error.iter().cloned().collect();
    failures.extend(scraped.errors);
    failures.extend(ending.aborted.clone());
    let names = &cfg.output.names;
    if let Err(e) = export::write_reports(dir, names, &report) {
        failures.push(format!("cannot write the reports: {e}"));
    }
    if cfg.scale.shard.is_some() {
        // The mergeable summary: `aiperf merge` uses it when records are not kept.
        if let Err(e) = export::write_hdr(dir, names, &report) {
            failures.push(format!(
                "cannot write {}: {e}",
                export::hdr_file_name(&names.json)
            ));
        }
    }
    if cfg.output.slice_duration.is_some() {
        let written = export::timeslices::write_timeslices(
            dir,
            names,
            &timeslices,
            &slice_sections,
            &report.input_config,
        );
        if let Err(e) = written {
            failures.push(format!("cannot write {}: {e}", names.timeslices_json));
        }
    }
    let mut console = console_text(&cfg, &report, &ending);
    if !scraped.console.is_empty() {
        // Before the warnings, which come last.
        let at = console.find("\nwarning: ").map_or(console.len(), |i| i + 1);
        console.insert_str(at, &scraped.console);
    }
    if let Err(e) = export::write_console_text(dir, names, &console) {
        failures.push(format!("cannot write {}: {e}", names.console_txt));
    }
    if cfg.output.html {
        // Built from the files just written, as `aiperf plot` builds it.
        let kept = kept.and_then(|k| k.take());
        let made = crate::report::write_for_run(
            dir,
            &names.json,
            &names.jsonl,
            cfg.output.auto_plot,
            kept,
        );
        if let Err(e) = made {
            if cfg.output.plot_required {
                failures.push(format!("--plot-required: {e}"));
            } else {
                eprintln!("warning: no {}: {e}", crate::report::REPORT_FILE);
            }
        }
    }
    failures.extend(
        report
            .plugins
            .strict_failure(cfg.plugins.strict)
            .map(|why| format!("--strict-plugins: {why}")),
    );
    failures.extend(lost_requests(&report, ending.was_cancelled));
    let exit_code = finish_console(&console, dir, &report, &failures);
    Ok(RunOutcome {
        report: Some(report),
        exit_code,
    })
}

/// `--ui dashboard` needs stdout to be a terminal; elsewhere it falls back to the progress
/// bar (stderr a terminal) or nothing, with a warning.
fn effective_ui(ui: UiType) -> UiType {
    if ui != UiType::Dashboard {
        return ui;
    }
    match crate::ui::unavailable() {
        None => UiType::Dashboard,
        Some(why) => {
            let fallback = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                UiType::Simple
            } else {
                UiType::None
            };
            eprintln!(
                "warning: --ui dashboard needs a terminal ({why}): showing {}",
                match fallback {
                    UiType::Simple => "the progress bar instead",
                    _ => "no progress",
                }
            );
            fallback
        }
    }
}

/// The dashboard's first line: models, URL and endpoint.
fn dashboard_title(cfg: &BenchmarkConfig) -> String {
    let url = cfg.endpoint.urls.first().map(String::as_str).unwrap_or("");
    let more = match cfg.endpoint.urls.len() {
        0 | 1 => String::new(),
        n => format!(" (+{} URLs)", n - 1),
    };
    format!(
        "· {} · {url}{}{more} · {}",
        cfg.endpoint.models.join(", "),
        cfg.endpoint.path,
        if cfg.endpoint.streams() {
            "streaming"
        } else {
            "not streaming"
        }
    )
}

/// What the run shows while its phases run.
struct Shown {
    /// The progress bar (`--ui simple`, or a dashboard that could not start).
    bar: bool,
    /// The dashboard's live data, when it is up.
    live: Option<Arc<Live>>,
}

/// What the plugins learn about the run (in `configure` and `benchmark_start`): its id (the
/// report's `benchmark_id`), models, URLs (the in-process mock's real address), endpoint,
/// each phase's load from `specs`, the artifact directory, aiperf's version, and the config
/// as the report's `input_config` (secrets redacted). `cfg` is the prepared config.
pub fn run_context(
    cfg: &BenchmarkConfig,
    specs: &[PhaseSpec],
    run_id: String,
) -> aiperf_plugin::RunContext {
    let load = |kind| specs.iter().find(|s| s.kind == kind).map(load_context);
    let dir = &cfg.output.artifact_directory;
    let name = |v: Value| v.as_str().unwrap_or_default().to_string();
    aiperf_plugin::RunContext {
        run_id,
        aiperf_version: env!("CARGO_PKG_VERSION").to_string(),
        models: cfg.endpoint.models.clone(),
        urls: cfg.endpoint.urls.clone(),
        endpoint_type: name(serde_json::to_value(cfg.endpoint.endpoint_type).unwrap_or_default()),
        endpoint_path: cfg.endpoint.path.clone(),
        streaming: cfg.endpoint.streams(),
        artifact_dir: std::path::absolute(dir)
            .unwrap_or_else(|_| dir.clone())
            .display()
            .to_string(),
        load: load(PhaseKind::Profiling).unwrap_or_default(),
        warmup: load(PhaseKind::Warmup),
        input_config: serde_json::to_value(cfg).unwrap_or_default(),
        sweep: None,
        shard: cfg.scale.shard.map(|s| aiperf_plugin::ShardPart {
            index: u64::from(s.index),
            count: u64::from(s.count),
            merged: false,
        }),
    }
}

/// One phase's load, as the run context gives it.
fn load_context(spec: &PhaseSpec) -> LoadContext {
    let secs = |d: Duration| d.as_secs_f64();
    let cap_of = |cap: &Option<ConcurrencyCap>| {
        (
            cap.as_ref().map(|c| c.limit as u64),
            cap.as_ref().and_then(|c| c.ramp).map(secs),
        )
    };
    let mut l = LoadContext {
        request_count: spec.request_count,
        conversation_count: spec.session_count,
        duration_sec: spec.duration.map(secs),
        grace_period_sec: secs(spec.grace_period),
        ..LoadContext::default()
    };
    match &spec.load {
        PhaseLoad::ClosedLoop { concurrency, ramp } => {
            l.mode = "concurrency".into();
            l.concurrency = Some(*concurrency as u64);
            l.concurrency_ramp_sec = ramp.map(secs);
        }
        PhaseLoad::Rate { rate, cap } => {
            l.mode = "request_rate".into();
            l.request_rate = Some(rate.rate);
            l.arrival_pattern = serde_json::to_value(rate.mode)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string));
            l.request_rate_ramp_sec = rate.ramp.map(secs);
            (l.concurrency, l.concurrency_ramp_sec) = cap_of(cap);
        }
        PhaseLoad::Trace { cap, .. } => {
            l.mode = "fixed_schedule".into();
            (l.concurrency, l.concurrency_ramp_sec) = cap_of(cap);
        }
    }
    l
}

/// How the run ended, beyond its phases' results.
struct Ending {
    /// Sending stopped early: a Ctrl-C, or the JSONL could not be written.
    was_cancelled: bool,
    /// Why `profile_export.jsonl` is incomplete, when it is.
    jsonl_error: Option<String>,
    /// Why `--failed-request-threshold` stopped the run, when it did.
    aborted: Option<String>,
}

/// `--failed-request-threshold`: the profiling phase stops sending once more than
/// `threshold` of its finished requests failed, counted from `floor` finished requests on.
/// In-flight requests then finish as after a Ctrl-C, and the run exits 1.
struct FailureWatch {
    threshold: f64,
    floor: u64,
    /// Set once, with the figures, when the threshold was passed.
    reason: Arc<std::sync::OnceLock<String>>,
}

impl FailureWatch {
    /// Checks the phase's counters every 20 ms (off the hot path: two atomic loads).
    fn start(
        &self,
        tracker: Arc<PhaseTracker>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let (threshold, floor, reason) = (self.threshold, self.floor, self.reason.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tick.tick().await;
                let s = tracker.stats();
                if s.completed >= floor && s.errors as f64 > threshold * s.completed as f64 {
                    let why = format!(
                        "{} of {} finished requests failed ({:.1} %), more than --failed-request-threshold {threshold}: the run was stopped",
                        s.errors,
                        s.completed,
                        100.0 * s.errors as f64 / s.completed as f64
                    );
                    tracing::warn!("{why}");
                    let _ = reason.set(why);
                    stop.cancel();
                    return;
                }
            }
        })
    }
}

/// At the JSONL's first write error (a full disk), stop sending: requests whose records
/// cannot be kept would be load without results. The phase then ends as after a Ctrl-C.
fn stop_on_sink_failure(processor: &RecordProcessor, stop_sending: &CancellationToken) {
    let failed = processor.sink_failed();
    let stop = stop_sending.clone();
    tokio::spawn(async move {
        failed.cancelled().await;
        if !stop.is_cancelled() {
            eprintln!(
                "\nerror: cannot write profile_export.jsonl: no new requests; finishing the run"
            );
            stop.cancel();
        }
    });
}

/// Requests the profiling phase sent that never came back as a record (neither a result nor
/// an error nor a cancellation): a run that lost requests must not look like a success.
fn lost_requests(report: &RunReport, was_cancelled: bool) -> Option<String> {
    let stats = report.phase_stats.get(&PhaseKind::Profiling)?;
    let recorded = report.profiling.success + report.profiling.error_count;
    lost(stats, recorded, was_cancelled)
}

/// The message for [`lost_requests`], from the phase's final stats and its record count.
fn lost(stats: &PhaseStats, recorded: u64, was_cancelled: bool) -> Option<String> {
    let lost = stats.sent.saturating_sub(recorded);
    (lost > 0 && !was_cancelled && !stats.timed_out).then(|| {
        format!(
            "{lost} of {} requests sent never produced a record (neither a result nor an error)",
            stats.sent
        )
    })
}

/// What a run is made of, before the plugins start: nothing written or sent yet.
struct Prepared {
    /// With the in-process mock's address in place of `mock`, and the tokenizer used.
    cfg: BenchmarkConfig,
    dataset: Dataset,
    tokenizer: Tokenizer,
    mock: Option<InProcessMock>,
    trace: Option<Arc<Trace>>,
    profiling_count: Option<u64>,
}

/// Tokenizer and mock, dataset, fixed schedule.
async fn prepare(mut cfg: BenchmarkConfig, clock: Clock) -> Result<Prepared> {
    let (tokenizer, mock) = tokenizer_and_mock(&mut cfg, clock).await?;
    let dataset = build_dataset(&cfg, &tokenizer, clock).await?;
    let trace = fixed_schedule(&cfg, &dataset)?;
    let profiling_count = profiling_count(&cfg, trace.as_deref());
    Ok(Prepared {
        cfg,
        dataset,
        tokenizer,
        mock,
        trace,
        profiling_count,
    })
}

/// Readiness (`--wait-for-model-timeout`), artifact directory (`inputs.json`, the JSONL
/// opened), record processor, transport, signal handler.
async fn start(
    cfg: &BenchmarkConfig,
    dataset: Dataset,
    tokenizer: Tokenizer,
    clock: Clock,
    feed: Option<RecordFeed>,
    live: Option<Arc<Live>>,
) -> Result<(Arc<RunContext>, RecordProcessor, Option<KeptRecords>)> {
    readiness::wait(&cfg.endpoint, &dataset.shape, &cfg.endpoint.urls).await?;
    let (sinks, kept) = open_artifacts(&cfg.output, &dataset, clock, feed)?;
    let jsonl = Tee(sinks, live.map(|l| l.tap()));
    let slicing = cfg.output.slice_duration.map(|d| Slicing {
        duration_ns: u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1),
        wall_origin_ns: clock.wall_ns(0),
    });
    let processor = RecordProcessor::start_sliced(
        tokenizer,
        cfg.input.use_server_token_count,
        cfg.input.goodput.clone(),
        jsonl,
        slicing,
        cfg.scale.shard.is_some(),
    )
    .context(|| "cannot start the record-processing threads".into())?;
    let transport = Transport::new(
        &cfg.endpoint.urls,
        &cfg.endpoint.path,
        cfg.endpoint.api_key.as_deref(),
        &cfg.endpoint.headers,
        cfg.endpoint.request_timeout,
        clock,
        ResponseParser::for_shape(&dataset.shape, &cfg.endpoint.response_field),
        &cfg.endpoint.tls(),
        &crate::transport::Connections {
            session_header: cfg.endpoint.session_header.clone(),
            reuse: cfg.endpoint.connection_reuse_strategy,
            kernel_timestamps: cfg.endpoint.kernel_timestamps,
            local_addresses: cfg.endpoint.local_addresses.clone(),
            need: cfg.scale.shard.map_or(connection_need(&cfg.load), |s| {
                usize::try_from(s.part(connection_need(&cfg.load) as u64)).unwrap_or(usize::MAX)
            }),
        },
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
        stop_sending,
        cancel_in_flight: CancellationToken::new(),
        shard: cfg.scale.shard,
        start_at_wall_ns: cfg.scale.start_at_ns,
        start_at: std::sync::Mutex::new(None),
    });
    Ok((ctx, processor, kept))
}

/// How many connections the run can hold at once: its largest concurrency (warmup's
/// included), no more than its requests when it is closed-loop and counted; 0 without a
/// concurrency (an uncapped rate: unknown).
fn connection_need(load: &crate::timing::LoadSpec) -> usize {
    let c = load.concurrency.unwrap_or(0);
    let c = match load.request_count {
        Some(n) if load.request_rate.is_none() => c.min(usize::try_from(n).unwrap_or(usize::MAX)),
        _ => c,
    };
    c.max(load.warmup_concurrency.unwrap_or(0))
}

/// Loads the tokenizer on a blocking thread while the in-process mock (`--url mock`)
/// starts; the mock's address replaces `mock` in `cfg.endpoint.urls`.
async fn tokenizer_and_mock(
    cfg: &mut BenchmarkConfig,
    clock: Clock,
) -> Result<(Tokenizer, Option<InProcessMock>)> {
    if cfg.input.tokenizer.trust_remote_code {
        eprintln!("{}", tokenizer::TRUST_REMOTE_CODE_NOTE);
    }
    if cfg.input.tokenizer.from_model && cfg.endpoint.models.len() > 1 {
        eprintln!(
            "warning: {} models: tokens of every request are counted with the first one's \
             tokenizer ({}); pass --tokenizer to choose",
            cfg.endpoint.models.len(),
            cfg.input.tokenizer.name
        );
    }
    let tokenizer = tokio::spawn({
        let mut spec = cfg.input.tokenizer.clone();
        async move { load_tokenizer(&mut spec).await.map(|t| (t, spec)) }
    });
    let mut mock = None;
    if is_mock_url(&cfg.endpoint.urls[0]) {
        let mock_cfg: MockConfig = cfg.endpoint.urls[0].parse().map_err(ConfigError::Usage)?;
        let m = InProcessMock::start(mock_cfg)
            .await
            .context(|| "cannot start the built-in mock server".into())?;
        tracing::info!("built-in mock server listening on {}", m.url());
        cfg.endpoint.urls = vec![m.url()];
        mock = Some(m);
    }
    let (tokenizer, used) = tokenizer
        .await
        .map_err(|e| Error::Internal(format!("the tokenizer task failed: {e}")))??;
    cfg.input.tokenizer = used;
    tracing::debug!(
        "tokenizer {} ready at {:.1} ms",
        tokenizer.name(),
        clock.now_ns() as f64 / 1e6
    );
    Ok((tokenizer, mock))
}

/// Builds every request of the run, off the runtime.
async fn build_dataset(
    cfg: &BenchmarkConfig,
    tokenizer: &Tokenizer,
    clock: Clock,
) -> Result<Dataset> {
    let (c, t) = (cfg.input.clone(), tokenizer.clone());
    let shape = RequestShape::new(&cfg.endpoint, cfg.input.use_server_token_count);
    let dataset = tokio::task::spawn_blocking(move || Dataset::build(&c, shape, &t))
        .await
        .map_err(|e| Error::Internal(format!("the dataset thread failed: {e}")))?
        .map_err(ConfigError::from)?;
    tracing::debug!(
        "{} dataset entries built at {:.1} ms",
        dataset.entries.len(),
        clock.now_ns() as f64 / 1e6
    );
    Ok(dataset)
}

/// The profiling phase's request count. A trace on a fixed schedule sends every entry of
/// its window (no more than `--request-count` or `--conversation-num`: its entries are
/// single requests). Otherwise `--request-count`, or AIPerf's default of 10 requests when
/// neither a duration nor a conversation count bounds the phase (an input file too).
fn profiling_count(cfg: &BenchmarkConfig, trace: Option<&Trace>) -> Option<u64> {
    let l = &cfg.load;
    match trace {
        Some(t) => {
            let n = t.len() as u64;
            let limit = [l.request_count, l.conversation_num]
                .into_iter()
                .flatten()
                .min();
            Some(limit.map_or(n, |c| c.min(n)))
        }
        None if l.request_count.is_none()
            && l.benchmark_duration.is_none()
            && l.conversation_num.is_none() =>
        {
            Some(10)
        }
        None => l.request_count,
    }
}

/// The record processor's sinks: the JSONL, `outputs.json`, the plugins' feed.
type Sinks = Tee<Tee<Option<JsonlWriter>, Option<OutputsWriter>>, Option<PluginTap>>;

/// Creates the artifact directory, writes `inputs.json` and opens `profile_export.jsonl`
/// (unless `--export-level summary`); the plugins' feed, when a plugin takes records or
/// progress. With `report.html` to write, also the handle its records will come through.
///
/// Nothing has been sent yet, so a directory that cannot be written is the user's to fix:
/// a usage error (exit 2) naming `--artifact-dir`.
fn open_artifacts(
    out: &OutputSpec,
    dataset: &Dataset,
    clock: Clock,
    feed: Option<RecordFeed>,
) -> Result<(Sinks, Option<KeptRecords>)> {
    let dir = &out.artifact_directory;
    let unwritable = |what: &str, e: std::io::Error| {
        ConfigError::Usage(format!(
            "cannot write to --artifact-dir {}: {what}: {e}",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(|e| unwritable("cannot create it", e))?;
    export::write_inputs(dir, dataset).map_err(|e| unwritable("inputs.json", e))?;
    let ids: Arc<[String]> = dataset
        .entries
        .iter()
        .map(|e| e.conversation_id.clone())
        .collect();
    let outputs = out
        .export_outputs_json
        .then(|| OutputsWriter::new(dir.to_path_buf(), clock, ids.clone()));
    let tap = feed.map(|f| PluginTap::new(f, clock, ids.clone()));
    if !out.writes_records() {
        return Ok((Tee(Tee(None, outputs), tap), None));
    }
    let path = dir.join(&out.names.jsonl);
    let mut writer =
        JsonlWriter::create(&path, clock, ids).map_err(|e| unwritable(&out.names.jsonl, e))?;
    // The report's records are kept as they are written rather than read back from the
    // file after the run (that read-back was 9 % of a c=64 run's CPU).
    let kept = out.html.then(|| writer.keep_for_report());
    Ok((Tee(Tee(Some(writer), outputs), tap), kept))
}

/// Warmup seeds are the profiling seed with this mixed in.
const WARMUP_SEED: u64 = 0x5741_524D;

/// The phases to run, in order: a warmup if `--warmup-request-count`,
/// `--num-warmup-sessions` or `--warmup-duration` asks for one (its own counts, duration,
/// concurrency and rate, falling back to the profiling ones; never a trace, a concurrency
/// ramp or cancellation), then profiling. Request counts count every turn; conversation
/// counts bound the conversations started (AIPerf's `--request-count` and
/// `--conversation-num`).
pub fn phase_specs(
    cfg: &BenchmarkConfig,
    profiling_count: Option<u64>,
    trace: Option<Arc<Trace>>,
) -> Vec<PhaseSpec> {
    let mut phases = Vec::new();
    if cfg.load.has_warmup() {
        let seed = cfg.input.random_seed ^ WARMUP_SEED;
        let rate = cfg.load.warmup_request_rate.or(cfg.load.request_rate);
        let concurrency = cfg.load.warmup_concurrency.or(cfg.load.concurrency);
        phases.push(PhaseSpec {
            kind: PhaseKind::Warmup,
            request_count: (cfg.load.warmup_request_count > 0)
                .then_some(cfg.load.warmup_request_count),
            session_count: cfg.load.warmup_num_sessions,
            duration: cfg.load.warmup_duration,
            grace_period: cfg
                .load
                .warmup_grace_period
                .unwrap_or(cfg.load.grace_period),
            load: phase_load(
                cfg,
                None,
                rate.map(|r| {
                    let l = &cfg.load;
                    let mode = l.warmup_request_rate_mode.unwrap_or(l.request_rate_mode);
                    let ramp = l
                        .warmup_request_rate_ramp_duration
                        .or(l.request_rate_ramp_duration);
                    (r, mode, ramp)
                }),
                concurrency,
                cfg.load
                    .warmup_concurrency_ramp_duration
                    .or(cfg.load.concurrency_ramp_duration),
                seed,
            ),
            cancellation: None,
            seed,
        });
    }
    let seed = cfg.input.random_seed;
    phases.push(PhaseSpec {
        kind: PhaseKind::Profiling,
        request_count: profiling_count,
        session_count: cfg.load.conversation_num,
        duration: cfg.load.benchmark_duration,
        grace_period: cfg.load.grace_period,
        load: phase_load(
            cfg,
            trace,
            cfg.load.request_rate.map(|r| {
                let l = &cfg.load;
                (r, l.request_rate_mode, l.request_rate_ramp_duration)
            }),
            cfg.load.concurrency,
            cfg.load.concurrency_ramp_duration,
            seed,
        ),
        cancellation: cfg.load.cancellation(),
        seed,
    });
    if let Some(sh) = cfg.scale.shard {
        for p in &mut phases {
            split(p, sh);
        }
    }
    phases
}

/// A shard's part of a phase: its share of the request and conversation counts and of the
/// closed-loop workers (or the open-loop cap). Which arrivals and entries it sends is
/// decided as the phase runs (`timing`: dealt round-robin).
fn split(p: &mut PhaseSpec, sh: Shard) {
    let part = |n: usize| usize::try_from(sh.part(n as u64)).unwrap_or(n).max(1);
    p.request_count = p.request_count.map(|c| sh.part(c));
    p.session_count = p.session_count.map(|c| sh.part(c));
    match &mut p.load {
        PhaseLoad::ClosedLoop { concurrency, .. } => *concurrency = part(*concurrency),
        PhaseLoad::Rate { cap, .. } | PhaseLoad::Trace { cap, .. } => {
            if let Some(c) = cap {
                c.limit = part(c.limit);
            }
        }
    }
}

/// The run's id: `--run-id`; with `--shard` alone, one derived from the config (less the
/// artifact directory and the command line, which differ between shards), the shard count
/// and `--start-at`, so every shard of one run agrees without being told; else a new UUID.
pub fn run_id(cfg: &BenchmarkConfig) -> String {
    if let Some(id) = &cfg.scale.run_id {
        return id.clone();
    }
    let Some(sh) = cfg.scale.shard else {
        return uuid::Uuid::new_v4().to_string();
    };
    let mut v = serde_json::to_value(cfg).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("cli_command");
        if let Some(out) = o.get_mut("output").and_then(Value::as_object_mut) {
            out.remove("artifact_directory");
            out.remove("ui");
        }
    }
    let text = format!("{v}|{}|{:?}", sh.count, cfg.scale.start_at_ns);
    // Two FNV-1a passes with different offsets: 128 bits, shown as a UUID.
    let fnv = |basis: u64| {
        text.bytes().fold(basis, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let (a, b) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x6c62_272e_07bb_0142));
    uuid::Uuid::from_u64_pair(a, b).to_string()
}

/// A trace or a rate (requests/s, arrival process, rate ramp) is open loop, capped by
/// `concurrency` if set (the ramp grows the cap); otherwise closed loop with `concurrency`
/// workers (1 if unset; the ramp staggers them).
fn phase_load(
    cfg: &BenchmarkConfig,
    trace: Option<Arc<Trace>>,
    rate: Option<(f64, RequestRateMode, Option<Duration>)>,
    concurrency: Option<usize>,
    ramp: Option<Duration>,
    seed: u64,
) -> PhaseLoad {
    let cap = concurrency.map(|limit| ConcurrencyCap { limit, ramp });
    match (trace, rate) {
        (Some(trace), _) => PhaseLoad::Trace { trace, cap },
        (None, Some((rate, mode, rate_ramp))) => PhaseLoad::Rate {
            rate: RateSpec {
                rate,
                mode,
                smoothness: cfg.load.arrival_smoothness,
                ramp: rate_ramp,
                seed,
            },
            cap,
        },
        (None, None) => PhaseLoad::ClosedLoop {
            concurrency: concurrency.unwrap_or(1),
            ramp,
        },
    }
}

/// What the phases left behind.
#[derive(Default)]
struct PhaseResults {
    warmup: Option<PhaseSummary>,
    profiling: PhaseSummary,
    /// Each phase's final stats, as `phase_complete` gave them to the plugins.
    stats: BTreeMap<PhaseKind, PhaseStats>,
    /// The profiling phase's time slices (`--slice-duration`; empty without it).
    timeslices: Vec<TimeSlice>,
    /// How `--start-at` was met.
    start: Option<StartInfo>,
}

/// Runs the phases in order (the rest are skipped after a Ctrl-C), each followed by its
/// summary and `phase_complete`.
async fn run_phases(
    ctx: &Arc<RunContext>,
    processor: &mut RecordProcessor,
    hooks: &HookRegistry,
    specs: Vec<PhaseSpec>,
    shown: Shown,
    watch: Option<FailureWatch>,
    collector: &Collector,
) -> PhaseResults {
    let mut results = PhaseResults::default();
    let mut start_at = ctx.start_at_wall_ns;
    for spec in specs {
        if ctx.stop_sending.is_cancelled() {
            break;
        }
        let kind = spec.kind;
        let load = match &spec.load {
            PhaseLoad::ClosedLoop { concurrency, .. } => format!("concurrency {concurrency}"),
            PhaseLoad::Rate { rate, .. } => {
                format!("request rate {}/s ({:?})", rate.rate, rate.mode)
            }
            PhaseLoad::Trace { trace, .. } => format!("fixed schedule of {} requests", trace.len()),
        };
        tracing::info!(
            "{kind} phase starting: {load}, {} requests, duration {:?}",
            spec.request_count
                .map_or("unbounded".to_string(), |n| n.to_string()),
            spec.duration
        );
        let progress = shown.bar.then_some(spec.duration);
        let duration = spec.duration;
        // A scrape just before the phase: its window's reference sample.
        collector.mark().await;
        let watch = watch.as_ref().filter(|_| kind == PhaseKind::Profiling);
        if let Some(at) = start_at.take() {
            results.start = Some(wait_for_start(ctx, at, ctx.shard, connections_for(&spec)).await);
        }
        let (tracker, observers) = run_phase(ctx, spec, hooks, |t| {
            if let Some(live) = &shown.live {
                live.set_phase(PhaseInfo {
                    tracker: t.clone(),
                    load: load.clone(),
                    duration,
                });
            }
            let w = watch.map(|w| w.start(t.clone(), ctx.stop_sending.clone()));
            let p = progress.map(|dur| Progress::start(kind, t.clone(), t.expected, dur));
            let live = t.clone();
            let ticker = hooks.start_progress(kind, Arc::new(move || live.stats()));
            Some((p, w, ticker))
        })
        .await;
        // The agreed start is the first phase's only (a closed-loop phase leaves it).
        ctx.start_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((p, w, ticker)) = observers {
            drop(ticker);
            if let Some(p) = p {
                p.finish();
            }
            if let Some(w) = w {
                w.abort();
            }
        }
        let summary = processor.summarize(kind).await;
        if kind == PhaseKind::Profiling {
            results.timeslices = processor.timeslices().await;
        }
        let stats = tracker.stats();
        // A scrape just after the phase: its window's end sample.
        collector.mark().await;
        let server_metrics = collector
            .server_window(
                stats.start_time_ns,
                stats
                    .end_time_ns
                    .unwrap_or_else(|| ctx.clock.wall_ns(ctx.clock.now_ns())),
            )
            .and_then(|w| serde_json::to_value(w).ok());
        tracing::info!(
            "{kind} phase complete: {} sent, {} succeeded, {} failed",
            stats.sent,
            summary.success,
            summary.error_count
        );
        results.stats.insert(kind, stats.clone());
        let metrics = Value::Object(summary.metrics_json());
        hooks.emit_with_server_metrics(
            Hook::PhaseComplete,
            Some(kind),
            Some(stats),
            Some(metrics),
            server_metrics,
        );
        match kind {
            PhaseKind::Warmup => results.warmup = Some(summary),
            PhaseKind::Profiling => results.profiling = summary,
        }
    }
    results
}

/// After the last phase: `inputs.json` again if conversations added later turns, the
/// plugins' queues drained and the plugins shut down, the JSONL flushed, the mock stopped.
/// The JSONL's write error, if any, is returned rather than raised: the run's summary is
/// still reported.
async fn wind_down(
    dir: &Path,
    ctx: Arc<RunContext>,
    processor: RecordProcessor,
    mock: Option<InProcessMock>,
    hooks: HookRegistry,
) -> Result<(PluginsReport, Option<String>)> {
    let dataset = &ctx.dataset;
    if dataset
        .entries
        .iter()
        .any(|e| e.later_payloads.get().is_some())
    {
        export::write_inputs(dir, dataset).context(|| "cannot write inputs.json".into())?;
    }
    let plugins = hooks.finish().await;
    drop(ctx);
    let jsonl_error = processor
        .finish()
        .await
        .err()
        .map(|e| format!("cannot write profile_export.jsonl: {e}"));
    if let Some(m) = mock {
        m.stop().await;
    }
    Ok((plugins, jsonl_error))
}

/// The run's report: the phases' results, the client-health verdict, the warnings.
fn report(
    cfg: &BenchmarkConfig,
    run_ctx: &aiperf_plugin::RunContext,
    (start_time, end_time): (String, String),
    phases: PhaseResults,
    plugins: PluginsReport,
    health: HealthMonitor,
    ending: &Ending,
) -> RunReport {
    let profiling = phases.profiling;
    let was_cancelled = ending.was_cancelled;
    let mut warnings = warnings(cfg, &profiling, ending);
    let stats = |tag| match profiling.get(tag) {
        Some(MetricValue::Stats(s)) => Some(s),
        _ => None,
    };
    let lags = crate::timing::health::RequestLags {
        send_p99_ms: stats("send_lag").map(|s| s.p99),
        read_p99_ms: stats("read_lag").map(|s| s.p99),
        itl_p50_ms: stats("inter_token_latency").map(|s| s.p50),
        read_avg_ms: stats("read_lag").map(|s| s.avg),
        latency_avg_ms: stats("request_latency").map(|s| s.avg),
    };
    let client_errors = profiling
        .errors
        .iter()
        .filter(|(e, _)| e.is_client_side())
        .map(|(_, n)| n)
        .sum();
    let client_health = health.finish(lags, client_errors);
    if !client_health.ok() {
        warnings.push(format!(
            "these numbers may describe the client rather than the server: {}",
            client_health.reasons.join("; ")
        ));
    }
    warnings.extend(plugins.behind());
    RunReport {
        benchmark_id: run_ctx.run_id.clone(),
        input_config: run_ctx.input_config.clone(),
        profiling,
        warmup: phases.warmup,
        was_cancelled,
        start_time,
        end_time,
        urls: cfg.endpoint.urls.clone(),
        warnings,
        plugins,
        phase_stats: phases.stats,
        client_health,
        server_metrics: None,
        gpu_telemetry: None,
        shard: shard_section(&cfg.scale, &run_ctx.run_id, phases.start.as_ref()),
    }
}

/// The report's `shard` section: the shard, the run it belongs to, the agreed start and how
/// late this process got there. `None` for a run without `--shard` or `--start-at`.
fn shard_section(
    scale: &crate::shard::ScaleSpec,
    run_id: &str,
    start: Option<&StartInfo>,
) -> Option<Value> {
    if scale.shard.is_none() && scale.start_at_ns.is_none() {
        return None;
    }
    Some(serde_json::json!({
        "index": scale.shard.map(|s| s.index),
        "count": scale.shard.map(|s| s.count),
        "run_id": run_id,
        "start_at_ns": scale.start_at_ns,
        "start_late_ms": start.map(|s| s.late_ms),
    }))
}

/// How the run met `--start-at`.
#[derive(Debug, Clone)]
struct StartInfo {
    /// How late the first phase started after the agreed time (0 when it waited for it).
    late_ms: f64,
}

/// Waits for `--start-at` (Ctrl-C ends the wait): the first phase then starts at that wall
/// time, and an open-loop schedule runs from it. A process that gets there late says by how
/// much, and its schedule still starts at the agreed time (so its first sends are late).
/// Connections a phase will want at once: its workers, or its open-loop cap (16 without
/// one), no more than its requests and at most 1,024.
fn connections_for(spec: &PhaseSpec) -> usize {
    let n = match &spec.load {
        PhaseLoad::ClosedLoop { concurrency, .. } => *concurrency,
        PhaseLoad::Rate { cap, .. } | PhaseLoad::Trace { cap, .. } => cap.map_or(16, |c| c.limit),
    };
    let n = spec
        .request_count
        .map_or(n, |r| n.min(usize::try_from(r).unwrap_or(usize::MAX)));
    n.min(1024)
}

async fn wait_for_start(
    ctx: &RunContext,
    start_at_ns: u64,
    shard: Option<Shard>,
    connections: usize,
) -> StartInfo {
    let now = ctx.clock.wall_ns(ctx.clock.now_ns());
    let who = shard.map_or_else(|| "this run".to_string(), |s| format!("shard {s}"));
    // The agreed time on the run's clock (which starts before it when it is past: see
    // `Clock::covering`), so the records' scheduled times are the agreed time plus each
    // offset, on every shard alike.
    let anchor = tokio::time::Instant::from_std(
        ctx.clock
            .instant_at(start_at_ns.saturating_sub(ctx.clock.wall_ns(0))),
    );
    if start_at_ns > now {
        tracing::info!(
            "{who}: waiting {:.3} s for --start-at",
            (start_at_ns - now) as f64 / 1e9
        );
        // Woken a little early: the scheduler hands out its first request ahead of it.
        let wake = anchor.checked_sub(START_LEAD).unwrap_or(anchor);
        // Meanwhile the first phase's connections are opened, so its first requests leave
        // on time rather than each opening one (bounded by the wait).
        let opened = tokio::select! {
            n = ctx.transport.preconnect(connections) => Some(n),
            _ = tokio::time::sleep_until(wake) => None,
            _ = ctx.stop_sending.cancelled() => None,
        };
        tracing::info!("{who}: {opened:?} connections open ahead of --start-at");
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = ctx.stop_sending.cancelled() => {}
        }
    }
    let late_ms = tokio::time::Instant::now()
        .saturating_duration_since(anchor)
        .as_secs_f64()
        * 1e3;
    if late_ms >= 1.0 {
        eprintln!("{who} started {late_ms:.1} ms after --start-at; its first sends are that late");
    }
    *ctx.start_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(anchor);
    StartInfo { late_ms }
}

/// How long before `--start-at` a waiting process wakes up: the first phase is set up
/// (hooks, trackers, the scheduler) before the agreed time, and its scheduler waits for it.
const START_LEAD: Duration = Duration::from_millis(50);

/// Where the scrapers' artifacts go: `server_metrics_export.*` and `gpu_telemetry_export.*`
/// (AIPerf's names), or `<prefix>_server_metrics.*` and `<prefix>_gpu_telemetry.*` with
/// `--profile-export-prefix`.
fn scrape_files(dir: &Path, names: &export::ArtifactNames) -> ScrapeFiles {
    let (server_stem, gpu_stem) = match names.json.strip_suffix(".json") {
        Some(base) if names.json != export::JSON_FILE => (
            format!("{base}_server_metrics"),
            format!("{base}_gpu_telemetry"),
        ),
        _ => (
            "server_metrics_export".to_string(),
            "gpu_telemetry_export".to_string(),
        ),
    };
    ScrapeFiles {
        dir: dir.to_path_buf(),
        server_stem,
        gpu_stem,
    }
}

/// Warnings about the results themselves (the client-health one comes after them).
fn warnings(cfg: &BenchmarkConfig, profiling: &PhaseSummary, ending: &Ending) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(e) = &ending.jsonl_error {
        warnings.push(format!(
            "the run was stopped early ({e}): the summary covers every request that finished"
        ));
    } else if ending.was_cancelled && ending.aborted.is_none() {
        // (A stop by --failed-request-threshold is a failure, reported with its figures.)
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
    warnings
}

/// The replay schedule of a trace, when the fixed schedule applies: entries with timestamps
/// inside the offset window, in time order, offsets scaled by `--replay-speedup`.
fn fixed_schedule(
    cfg: &BenchmarkConfig,
    dataset: &Dataset,
) -> std::result::Result<Option<Arc<Trace>>, ConfigError> {
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
    // AIPerf's time zero: the first timestamp with --fixed-schedule-auto-offset, else the
    // start offset, else 0 (timestamps are offsets from the start of the run).
    let origin = if cfg.input.fixed_schedule_auto_offset {
        first
    } else {
        start.unwrap_or(0.0)
    };
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

/// The console summary (also written as `profile_export_console.txt`): the table, the
/// client-health line when it is ok, the warnings.
fn console_text(cfg: &BenchmarkConfig, report: &RunReport, ending: &Ending) -> String {
    use std::fmt::Write;
    let s = &report.profiling;
    let how = match (&ending.jsonl_error, ending.was_cancelled) {
        (Some(_), _) => ", stopped early",
        (None, true) if ending.aborted.is_some() => ", stopped: too many failures",
        (None, true) => ", interrupted",
        (None, false) => "",
    };
    let title = format!(
        "NVIDIA AIPerf-compatible | LLM Metrics ({}{how})",
        cfg.endpoint.models.join(", ")
    );
    let mut text = export::console::render(&title, s, cfg.output.show_trace_timing);
    text.push_str(&export::console::plugins_section(&report.plugins));
    let h = &report.client_health;
    if h.ok() {
        // A figure that is missing (or not finite: null in the JSON) shows as 0.
        let fig = |v: Option<f64>| v.filter(|x| x.is_finite()).unwrap_or(0.0);
        let _ = writeln!(
            text,
            "Client health: ok (runtime lag p99 {:.3} ms, aiperf CPU {:.0} % of one core, machine {:.0} % busy)",
            fig(h.runtime_lag_ms.p99),
            fig(h.process_cpu_percent),
            fig(h.machine_cpu_busy_percent),
        );
    }
    for n in &h.notes {
        let _ = writeln!(text, "Client health note: {n}");
    }
    for w in &report.warnings {
        let _ = writeln!(text, "warning: {w}");
    }
    text
}

/// Prints the console summary (warnings to stderr) and the failures; the exit code.
fn finish_console(console: &str, dir: &Path, report: &RunReport, failures: &[String]) -> u8 {
    let s = &report.profiling;
    for line in console.lines() {
        if line.starts_with("warning: ") {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    println!("Artifacts: {}", dir.display());
    if !failures.is_empty() {
        for f in failures {
            eprintln!("error: {f}");
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(flags: &[&str]) -> BenchmarkConfig {
        let args = [
            "-m",
            "m",
            "--url",
            "http://127.0.0.1:9",
            "--random-seed",
            "9",
        ];
        let args: Vec<String> = args.iter().chain(flags).map(|s| s.to_string()).collect();
        crate::config::load(&args).unwrap()
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn without_warmup_there_is_one_closed_loop_phase() {
        let c = cfg(&["--concurrency", "4", "--benchmark-grace-period", "5"]);
        assert_eq!(
            phase_specs(&c, Some(20), None),
            [PhaseSpec {
                kind: PhaseKind::Profiling,
                request_count: Some(20),
                session_count: None,
                duration: None,
                grace_period: 5 * S,
                load: PhaseLoad::ClosedLoop {
                    concurrency: 4,
                    ramp: None
                },
                cancellation: None,
                seed: 9,
            }]
        );
    }

    /// A shard's phases: its part of every count and of the workers (or the cap); the
    /// parts of all shards add up to the run's.
    #[test]
    fn a_shard_runs_its_part_of_every_count() {
        let parts = |extra: &[&str]| -> Vec<Vec<PhaseSpec>> {
            (0..3)
                .map(|i| {
                    let s = format!("{i}/3");
                    let mut a = vec!["--shard", &s];
                    a.extend_from_slice(extra);
                    let c = cfg(&a);
                    phase_specs(&c, c.load.request_count, None)
                })
                .collect()
        };
        let closed = parts(&[
            "--concurrency",
            "8",
            "--request-count",
            "100",
            "--warmup-request-count",
            "5",
            "--conversation-num",
            "40",
        ]);
        let get = |i: usize, p: usize| &closed[i][p];
        let workers = |s: &PhaseSpec| match s.load {
            PhaseLoad::ClosedLoop { concurrency, .. } => concurrency,
            _ => panic!("closed loop"),
        };
        assert_eq!(
            (0..3).map(|i| workers(get(i, 1))).collect::<Vec<_>>(),
            [3, 3, 2]
        );
        assert_eq!(
            (0..3).map(|i| get(i, 1).request_count).collect::<Vec<_>>(),
            [Some(34), Some(33), Some(33)]
        );
        assert_eq!(
            (0..3).map(|i| get(i, 1).session_count).collect::<Vec<_>>(),
            [Some(14), Some(13), Some(13)]
        );
        assert_eq!(
            (0..3).map(|i| get(i, 0).request_count).collect::<Vec<_>>(),
            [Some(2), Some(2), Some(1)]
        );
        let open = parts(&[
            "--request-rate",
            "90",
            "--concurrency",
            "10",
            "--request-count",
            "9",
        ]);
        for (i, want) in [4usize, 3, 3].into_iter().enumerate() {
            match &open[i][0].load {
                PhaseLoad::Rate { rate, cap } => {
                    // The same rate everywhere: each shard takes its arrivals of the one schedule.
                    assert_eq!(rate.rate, 90.0);
                    assert_eq!(cap.map(|c| c.limit), Some(want));
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(open[i][0].request_count, Some(3));
        }
    }

    /// Shards started alike agree on the run id without being told; `--run-id` wins; a run
    /// that is not sharded gets a new id each time.
    #[test]
    fn shards_of_one_run_share_its_id() {
        let id = |a: &[&str]| run_id(&cfg(a));
        let base = ["--concurrency", "4", "--start-at", "2030-01-01T00:00:00Z"];
        let with = |s: &str, dir: &str| {
            let mut a = base.to_vec();
            a.extend(["--shard", s, "--artifact-dir", dir]);
            id(&a)
        };
        assert_eq!(with("0/4", "/r/0"), with("3/4", "/r/3"));
        assert_ne!(with("0/4", "/r/0"), with("0/2", "/r/0"), "another split");
        let mut later = base.to_vec();
        later[3] = "2030-01-01T00:00:01Z";
        later.extend(["--shard", "0/4"]);
        assert_ne!(id(&later), with("0/4", "/r/0"), "another start");
        let mut named = base.to_vec();
        named.extend(["--shard", "0/4", "--run-id", "bench-7"]);
        assert_eq!(id(&named), "bench-7");
        assert_ne!(id(&["--concurrency", "4"]), id(&["--concurrency", "4"]));
    }

    #[test]
    fn closed_loop_defaults_to_one_worker() {
        let specs = phase_specs(&cfg(&["--benchmark-duration", "3"]), None, None);
        assert_eq!(specs.len(), 1);
        assert_eq!(
            specs[0].load,
            PhaseLoad::ClosedLoop {
                concurrency: 1,
                ramp: None
            }
        );
        assert_eq!(
            (specs[0].request_count, specs[0].duration),
            (None, Some(3 * S))
        );
    }

    #[test]
    fn warmup_falls_back_to_the_profiling_rate_and_concurrency_but_not_the_rest() {
        let c = cfg(&[
            "--warmup-request-count",
            "5",
            "--concurrency",
            "3",
            "--concurrency-ramp-duration",
            "2",
            "--request-rate",
            "10",
            "--request-rate-mode",
            "constant",
            "--request-rate-ramp-duration",
            "4",
            "--request-cancellation-rate",
            "10",
            "--benchmark-duration",
            "60",
        ]);
        let specs = phase_specs(&c, None, None);
        let rate = |seed| RateSpec {
            rate: 10.0,
            mode: RequestRateMode::Constant,
            smoothness: 1.0,
            ramp: Some(4 * S),
            seed,
        };
        let warmup_seed = 9 ^ 0x5741_524D;
        assert_eq!(
            specs,
            [
                PhaseSpec {
                    kind: PhaseKind::Warmup,
                    request_count: Some(5),
                    session_count: None,
                    duration: None,
                    grace_period: c.load.grace_period,
                    // Seeded apart from profiling; the profiling ramps (as AIPerf), no
                    // cancellation.
                    load: PhaseLoad::Rate {
                        rate: rate(warmup_seed),
                        cap: Some(ConcurrencyCap {
                            limit: 3,
                            ramp: Some(2 * S)
                        }),
                    },
                    cancellation: None,
                    seed: warmup_seed,
                },
                PhaseSpec {
                    kind: PhaseKind::Profiling,
                    request_count: None,
                    session_count: None,
                    duration: Some(60 * S),
                    grace_period: c.load.grace_period,
                    load: PhaseLoad::Rate {
                        rate: rate(9),
                        cap: Some(ConcurrencyCap {
                            limit: 3,
                            ramp: Some(2 * S)
                        }),
                    },
                    cancellation: Some((10.0, Duration::ZERO)),
                    seed: 9,
                },
            ]
        );
    }

    #[test]
    fn warmup_has_its_own_duration_rate_and_concurrency() {
        let c = cfg(&[
            "--warmup-duration",
            "2",
            "--warmup-request-rate",
            "5",
            "--warmup-concurrency",
            "2",
            "--concurrency",
            "8",
        ]);
        let specs = phase_specs(&c, Some(100), None);
        assert_eq!(specs.len(), 2);
        let warmup = &specs[0];
        assert_eq!(warmup.kind, PhaseKind::Warmup);
        assert_eq!((warmup.request_count, warmup.duration), (None, Some(2 * S)));
        match &warmup.load {
            PhaseLoad::Rate { rate, cap } => {
                assert_eq!((rate.rate, rate.seed), (5.0, 9 ^ 0x5741_524D));
                assert_eq!(
                    *cap,
                    Some(ConcurrencyCap {
                        limit: 2,
                        ramp: None
                    })
                );
            }
            other => panic!("warmup should be open loop: {other:?}"),
        }
        assert_eq!(
            specs[1].load,
            PhaseLoad::ClosedLoop {
                concurrency: 8,
                ramp: None
            }
        );
        assert_eq!(specs[1].request_count, Some(100));
    }

    /// AIPerf's warmup-only flags: arrival pattern, ramps and grace period; a grace period
    /// needs a timed warmup, a rate ramp needs a rate.
    #[test]
    fn warmup_arrival_pattern_ramps_and_grace_period() {
        let c = cfg(&[
            "--warmup-duration",
            "2",
            "--warmup-request-rate",
            "5",
            "--warmup-arrival-pattern",
            "constant",
            "--warmup-request-rate-ramp-duration",
            "1",
            "--warmup-concurrency",
            "4",
            "--warmup-concurrency-ramp-duration",
            "3",
            "--warmup-grace-period",
            "7",
            "--request-rate",
            "9",
        ]);
        let specs = phase_specs(&c, Some(10), None);
        let warmup = &specs[0];
        assert_eq!(warmup.grace_period, 7 * S);
        let PhaseLoad::Rate { rate, cap } = &warmup.load else {
            panic!("{:?}", warmup.load)
        };
        assert_eq!((rate.mode, rate.ramp), (RequestRateMode::Constant, Some(S)));
        assert_eq!(
            *cap,
            Some(ConcurrencyCap {
                limit: 4,
                ramp: Some(3 * S)
            })
        );
        // Profiling keeps its own: Poisson, no ramps, the benchmark grace period.
        let PhaseLoad::Rate { rate, cap } = &specs[1].load else {
            panic!("{:?}", specs[1].load)
        };
        assert_eq!(
            (rate.mode, rate.ramp, *cap),
            (RequestRateMode::Poisson, None, None)
        );
        assert_eq!(specs[1].grace_period, c.load.grace_period);
        let err = |flags: &[&str]| {
            let mut args = vec!["--url", "mock"];
            args.extend_from_slice(flags);
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            crate::config::load(&args).unwrap_err().to_string()
        };
        assert!(
            err(&["--warmup-request-count", "3", "--warmup-grace-period", "1"])
                .contains("--warmup-duration")
        );
        assert!(err(&[
            "--warmup-duration",
            "1",
            "--warmup-request-rate-ramp-duration",
            "1"
        ])
        .contains("warmup rate"));
    }

    #[test]
    fn warmup_closed_loop_uses_its_concurrency_then_the_profiling_one_then_one() {
        let load = |flags: &[&str]| {
            let c = cfg(&[&["--warmup-request-count", "3"], flags].concat());
            phase_specs(&c, None, None)[0].load.clone()
        };
        let closed = |concurrency| PhaseLoad::ClosedLoop {
            concurrency,
            ramp: None,
        };
        assert_eq!(
            load(&["--warmup-concurrency", "2", "--concurrency", "6"]),
            closed(2)
        );
        assert_eq!(load(&["--concurrency", "6"]), closed(6));
        assert_eq!(load(&[]), closed(1));
    }

    #[test]
    fn a_trace_drives_profiling_and_never_warmup() {
        let trace = Arc::new(vec![(Duration::ZERO, 1), (S, 0)]);
        let c = cfg(&["--warmup-request-count", "2", "--concurrency", "4"]);
        let specs = phase_specs(&c, Some(2), Some(trace.clone()));
        assert_eq!(
            specs[0].load,
            PhaseLoad::ClosedLoop {
                concurrency: 4,
                ramp: None
            }
        );
        assert_eq!(
            specs[1].load,
            PhaseLoad::Trace {
                trace,
                cap: Some(ConcurrencyCap {
                    limit: 4,
                    ramp: None
                })
            }
        );
    }

    #[test]
    fn profiling_count_from_flags_input_file_or_trace() {
        let trace: Trace = vec![(Duration::ZERO, 0); 7];
        let mut c = cfg(&["--request-count", "10"]);
        assert_eq!(profiling_count(&c, None), Some(10));
        assert_eq!(
            profiling_count(&c, Some(&trace)),
            Some(7),
            "no more than the trace"
        );
        c.load.request_count = None;
        assert_eq!(profiling_count(&c, Some(&trace)), Some(7));
        c.load.conversation_num = Some(3);
        assert_eq!(profiling_count(&c, Some(&trace)), Some(3));
        assert_eq!(profiling_count(&c, None), None, "bounded by conversations");
        c.load.conversation_num = None;
        // AIPerf's default, an input file too: 10 requests.
        c.input.input_file = Some("in.jsonl".into());
        assert_eq!(profiling_count(&c, None), Some(10));
        c.load.benchmark_duration = Some(S);
        assert_eq!(profiling_count(&c, None), None, "bounded by time");
    }

    #[test]
    fn conversation_counts_bound_profiling_and_warmup() {
        let c = cfg(&["--conversation-num", "3", "--num-warmup-sessions", "2"]);
        assert_eq!(c.load.request_count, None, "no default count with sessions");
        let specs = phase_specs(&c, profiling_count(&c, None), None);
        assert_eq!(specs.len(), 2, "--num-warmup-sessions makes a warmup");
        assert_eq!(
            (specs[0].request_count, specs[0].session_count),
            (None, Some(2))
        );
        assert_eq!(
            (specs[1].request_count, specs[1].session_count),
            (None, Some(3))
        );
        let c = cfg(&["--request-count", "10", "--num-sessions", "3"]);
        let specs = phase_specs(&c, profiling_count(&c, None), None);
        assert_eq!(
            (specs[0].request_count, specs[0].session_count),
            (Some(10), Some(3))
        );
    }

    #[test]
    fn requests_without_a_record_fail_the_run_unless_it_was_cut_short() {
        let stats = PhaseStats {
            sent: 10,
            ..PhaseStats::default()
        };
        assert_eq!(
            lost(&stats, 9, false).as_deref(),
            Some("1 of 10 requests sent never produced a record (neither a result nor an error)")
        );
        assert_eq!(lost(&stats, 10, false), None);
        // An interrupted or timed-out phase cancels what was in flight: not lost.
        assert_eq!(lost(&stats, 9, true), None);
        let timed_out = PhaseStats {
            timed_out: true,
            ..stats
        };
        assert_eq!(lost(&timed_out, 9, false), None);
    }

    /// The run context from a config: the prepared config's URLs and models, each phase's
    /// load as `phase_specs` makes it, and `input_config` exactly as the report writes it.
    #[test]
    fn the_run_context_describes_the_run_from_its_config() {
        let mut c = cfg(&[
            "--streaming",
            "--request-rate",
            "12.5",
            "--request-rate-mode",
            "constant",
            "--concurrency",
            "6",
            "--request-count",
            "40",
            "--warmup-request-count",
            "3",
            "--warmup-concurrency",
            "2",
            "--artifact-dir",
            "rel/dir",
            "--api-key",
            "sk-secret-1234",
        ]);
        // As `prepare` leaves it for `--url mock`: the mock's real address.
        c.endpoint.urls = vec!["http://127.0.0.1:40123".into()];
        let specs = phase_specs(&c, profiling_count(&c, None), None);
        let ctx = run_context(&c, &specs, "run-42".into());
        assert_eq!(ctx.run_id, "run-42");
        assert_eq!(ctx.aiperf_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(ctx.models, ["m"]);
        assert_eq!(ctx.urls, ["http://127.0.0.1:40123"]);
        assert_eq!(
            (ctx.endpoint_type.as_str(), ctx.endpoint_path.as_str()),
            ("chat", "/v1/chat/completions")
        );
        assert!(ctx.streaming);
        let dir = Path::new(&ctx.artifact_dir);
        assert!(dir.is_absolute() && dir.ends_with("rel/dir"), "{dir:?}");
        assert_eq!(
            ctx.load,
            LoadContext {
                mode: "request_rate".into(),
                concurrency: Some(6),
                request_rate: Some(12.5),
                arrival_pattern: Some("constant".into()),
                request_count: Some(40),
                conversation_count: None,
                duration_sec: None,
                grace_period_sec: c.load.grace_period.as_secs_f64(),
                concurrency_ramp_sec: None,
                request_rate_ramp_sec: None,
            }
        );
        let warmup = ctx.warmup.as_ref().expect("a warmup");
        assert_eq!(
            (
                warmup.mode.as_str(),
                warmup.request_count,
                warmup.concurrency
            ),
            ("request_rate", Some(3), Some(2))
        );
        assert_eq!(ctx.input_config, serde_json::to_value(&c).unwrap());
        assert_eq!(
            ctx.input_config["endpoint"]["urls"][0],
            "http://127.0.0.1:40123"
        );
        let text = serde_json::to_string(&ctx).unwrap();
        assert!(!text.contains("sk-secret-1234"), "secrets redacted: {text}");

        // Closed loop, bounded by time, no warmup.
        let c = cfg(&["--concurrency", "3", "--benchmark-duration", "5"]);
        let ctx = run_context(
            &c,
            &phase_specs(&c, profiling_count(&c, None), None),
            "x".into(),
        );
        assert_eq!(
            (
                ctx.load.mode.as_str(),
                ctx.load.concurrency,
                ctx.load.request_count
            ),
            ("concurrency", Some(3), None)
        );
        assert_eq!(
            (ctx.load.duration_sec, ctx.load.request_rate),
            (Some(5.0), None)
        );
        assert_eq!((ctx.streaming, ctx.warmup), (false, None));
    }
}
