//! Runs sweeps and repeated runs: each run is a whole benchmark ([`crate::benchmark`]) with
//! its point's parameters, in its own artifact directory; then the aggregates and the
//! console table. [`run_point`] is the one-run entry point, also for searches that choose
//! their next point from the last result.
//!
//! Plugins are started per run (each run loads and finishes its own, so every run's report
//! has its plugins' status); `sweep_start` goes with the first run and `sweep_complete`
//! (the sweep's aggregate) with the last.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aiperf_plugin::{SweepParameters, SweepPoint};
use serde_json::{json, Value};

use crate::benchmark::{self, SweepRun};
use crate::config::BenchmarkConfig;
use crate::error::{IoContext, Result};
use crate::plugin::Redactor;
use crate::sweep::aggregate::{self, Confidence, ParetoAxes, PointRow};
use crate::sweep::{point_dir_name, run_dir_name, ParameterSweepMode, SweepSpec, SweepType};

/// How to run one point (besides its parameters).
pub struct PointOptions {
    /// Where the run's artifacts go (a complete run's files).
    pub artifact_dir: PathBuf,
    /// Run the warmup phase the config asks for (`false`: profiling only).
    pub warmup: bool,
    /// The run's seed; `None`: the config's.
    pub seed: Option<u64>,
    /// The run's place in a sweep, for the plugins (`None`: a plain run, no sweep hooks).
    pub sweep: Option<SweepRun>,
}

impl PointOptions {
    /// A run in `artifact_dir`, with the config's warmup and seed, no sweep hooks.
    pub fn new(artifact_dir: impl Into<PathBuf>) -> Self {
        Self {
            artifact_dir: artifact_dir.into(),
            warmup: true,
            seed: None,
            sweep: None,
        }
    }
}

/// What one run of a point gave.
#[derive(Debug, Clone)]
pub struct PointResult {
    pub parameters: SweepParameters,
    pub artifact_dir: PathBuf,
    /// The run's exit code (0: success; 1: every request failed, a strict check failed...).
    pub exit_code: u8,
    /// The run's `profile_export_aiperf.json` as written (`Value::Null` when the run stopped
    /// before its first phase, e.g. `--strict-plugins`).
    pub report: Value,
    /// `good_request_fraction` (good requests / completed requests) with `--goodput`.
    pub goodput_fraction: Option<f64>,
    /// Whether the run was interrupted (Ctrl-C): a sweep stops there.
    pub was_cancelled: bool,
}

impl PointResult {
    /// A statistic of a metric, e.g. `metric("time_to_first_token", "p95")`.
    pub fn metric(&self, tag: &str, stat: &str) -> Option<f64> {
        self.report.get(tag)?.get(stat)?.as_f64()
    }
}

/// `base` with `parameters` applied: concurrency, request rate, ISL, OSL (unset ones keep
/// the config's), the artifact directory, the seed, and no warmup unless asked.
pub fn point_config(
    base: &BenchmarkConfig,
    parameters: &SweepParameters,
    opts: &PointOptions,
) -> BenchmarkConfig {
    let mut cfg = base.clone();
    if let Some(c) = parameters.concurrency {
        cfg.load.concurrency = Some(c as usize);
    }
    if let Some(r) = parameters.request_rate {
        cfg.load.request_rate = Some(r);
    }
    if let Some(i) = parameters.isl {
        cfg.input.prompt.input_tokens.mean = i;
    }
    if let Some(o) = parameters.osl {
        cfg.input.prompt.output_tokens.mean = Some(o);
    }
    if !opts.warmup {
        cfg.load.warmup_request_count = 0;
        cfg.load.warmup_duration = None;
        cfg.load.warmup_num_sessions = None;
    }
    if let Some(seed) = opts.seed {
        cfg.input.random_seed = seed;
        cfg.endpoint.model_seed = seed;
    }
    cfg.output.artifact_directory = opts.artifact_dir.clone();
    // One run of many: the sweep is the caller's.
    cfg.sweep = SweepSpec::default();
    cfg
}

/// Runs one point: a whole benchmark run with `parameters` applied to `base`, its
/// artifacts in `opts.artifact_dir`. Errors are the run's (a usage error: exit 2).
pub async fn run_point(
    base: &BenchmarkConfig,
    redactor: &Redactor,
    parameters: &SweepParameters,
    opts: PointOptions,
) -> Result<PointResult> {
    let cfg = point_config(base, parameters, &opts);
    let outcome = benchmark::run_in_sweep(cfg, redactor, opts.sweep).await?;
    let report = outcome
        .report
        .as_ref()
        .and_then(|r| serde_json::to_value(r).ok())
        .unwrap_or(Value::Null);
    let goodput_fraction = report
        .get("good_request_fraction")
        .and_then(|m| m.get("avg"))
        .and_then(Value::as_f64);
    Ok(PointResult {
        parameters: parameters.clone(),
        artifact_dir: opts.artifact_dir,
        exit_code: outcome.exit_code,
        was_cancelled: outcome.report.as_ref().is_some_and(|r| r.was_cancelled),
        report,
        goodput_fraction,
    })
}

/// The order of a sweep's runs: (point, trial) pairs.
fn run_order(points: usize, trials: u32, mode: ParameterSweepMode) -> Vec<(usize, u32)> {
    match mode {
        ParameterSweepMode::Repeated => (0..trials)
            .flat_map(|t| (0..points).map(move |p| (p, t)))
            .collect(),
        ParameterSweepMode::Independent => (0..points)
            .flat_map(|p| (0..trials).map(move |t| (p, t)))
            .collect(),
    }
}

/// A point's directory under the sweep's: its name when there are several points, the
/// sweep's own directory otherwise.
fn point_dir(base: &Path, p: &SweepParameters, points: usize) -> PathBuf {
    match point_dir_name(p).filter(|_| points > 1) {
        Some(name) => base.join(name),
        None => base.to_path_buf(),
    }
}

/// A run's directory: its point's, or `profile_runs/run_NNNN` under it with repeated runs.
fn run_dir(point_dir: &Path, trial: u32, trials: u32) -> PathBuf {
    if trials > 1 {
        point_dir.join("profile_runs").join(run_dir_name(trial))
    } else {
        point_dir.to_path_buf()
    }
}

/// A short label of a point for the console: `concurrency 4, isl 128, osl 128`.
pub fn label(p: &SweepParameters) -> String {
    let parts: Vec<String> = ["concurrency", "request_rate", "isl", "osl"]
        .iter()
        .filter_map(|n| aggregate::param(p, n).map(|v| format!("{} {v}", n.replace('_', " "))))
        .collect();
    if parts.is_empty() {
        "the configuration".into()
    } else {
        parts.join(", ")
    }
}

/// The rows of the sweep from each point's reports.
fn rows(
    base: &Path,
    points: &[SweepParameters],
    reports: &[Vec<Value>],
    level: f64,
) -> Vec<PointRow> {
    points
        .iter()
        .zip(reports)
        .enumerate()
        .map(|(i, (p, rs))| {
            let dir = point_dir(base, p, points.len());
            let rel = dir
                .strip_prefix(base)
                .map(|d| d.display().to_string())
                .unwrap_or_default();
            PointRow::new(
                i,
                p.clone(),
                if rel.is_empty() { ".".into() } else { rel },
                rs,
                level,
            )
        })
        .collect()
}

fn sweep_type_name(t: SweepType) -> &'static str {
    match t {
        SweepType::Grid => "grid",
        SweepType::Zip => "zip",
    }
}

/// `aiperf profile` with lists or `--num-profile-runs` above 1: every run, then the
/// aggregates, the table and the noise notes. The exit code is the worst run's.
pub async fn run_sweep(cfg: BenchmarkConfig, redactor: &Redactor) -> Result<u8> {
    let spec = cfg.sweep.clone();
    let points = spec.points().map_err(crate::config::ConfigError::Usage)?;
    let base = cfg.output.artifact_directory.clone();
    let order = run_order(points.len(), spec.trials, spec.mode);
    let total = order.len();
    let mut reports: Vec<Vec<Value>> = vec![Vec::new(); points.len()];
    let mut exit_code = 0u8;
    let mut previous: Option<(usize, u32)> = None;
    for (k, &(pi, trial)) in order.iter().enumerate() {
        if let Some((pp, pt)) = previous {
            let mut pause = Duration::ZERO;
            if pp != pi {
                pause = pause.max(spec.point_cooldown);
            }
            if pt != trial || pp == pi {
                pause = pause.max(spec.trial_cooldown);
            }
            if !pause.is_zero() {
                eprintln!("cooling down for {:.1} s", pause.as_secs_f64());
                tokio::time::sleep(pause).await;
            }
        }
        previous = Some((pi, trial));
        let p = &points[pi];
        eprintln!(
            "run {}/{total}: {}{}",
            k + 1,
            label(p),
            if spec.trials > 1 {
                format!(" (trial {}/{})", trial + 1, spec.trials)
            } else {
                String::new()
            }
        );
        let mut seed = cfg.input.random_seed;
        if spec.trials > 1 && !spec.seed_given && !spec.consistent_seed {
            seed = rand::random();
        }
        if !spec.same_seed_per_point {
            seed = seed.wrapping_add(pi as u64);
        }
        if spec.vary_seed_per_trial {
            seed = seed.wrapping_add(u64::from(trial));
        }
        let last = (k + 1 == total).then(|| {
            let (base, points, mut so_far) = (base.clone(), points.clone(), reports.clone());
            let (level, trials, kind) = (spec.confidence_level, spec.trials, spec.sweep_type);
            let axes = spec.pareto;
            Box::new(move |summary: &Value| {
                so_far[pi].push(summary.clone());
                let mut rows = rows(&base, &points, &so_far, level);
                aggregate::mark_pareto(&mut rows, axes);
                aggregate::sweep_json(&rows, sweep_type_name(kind), trials, level, axes)
            }) as benchmark::SweepSummaryFn
        });
        let opts = PointOptions {
            artifact_dir: run_dir(&point_dir(&base, p, points.len()), trial, spec.trials),
            warmup: !spec.warmup_once || k == 0,
            seed: Some(seed),
            sweep: Some(SweepRun {
                point: SweepPoint {
                    index: pi as u64,
                    count: points.len() as u64,
                    trial: u64::from(trial),
                    trials: u64::from(spec.trials),
                    parameters: p.clone(),
                },
                first: k == 0,
                last,
            }),
        };
        let result = run_point(&cfg, redactor, p, opts).await?;
        exit_code = exit_code.max(result.exit_code);
        let cancelled = result.was_cancelled;
        if !result.report.is_null() {
            reports[pi].push(result.report);
        }
        if cancelled {
            eprintln!(
                "interrupted: the sweep stops after {} of {total} runs",
                k + 1
            );
            break;
        }
    }
    let mut rows = rows(&base, &points, &reports, spec.confidence_level);
    let front = aggregate::mark_pareto(&mut rows, spec.pareto);
    let mut failures = Vec::new();
    if spec.trials > 1 {
        for (row, (p, rs)) in rows.iter().zip(points.iter().zip(&reports)) {
            let dir = point_dir(&base, p, points.len()).join("aggregate");
            let labels: Vec<String> = (0..rs.len() as u32).map(run_dir_name).collect();
            let agg =
                aggregate::runs_aggregate(rs, &labels, &row.parameters, spec.confidence_level);
            if let Err(e) = write_json_csv(
                &dir,
                "profile_export_aiperf_aggregate",
                &agg,
                &aggregate::runs_aggregate_csv(&agg),
            ) {
                failures.push(e.to_string());
            }
        }
    }
    let sweep = aggregate::sweep_json(
        &rows,
        sweep_type_name(spec.sweep_type),
        spec.trials,
        spec.confidence_level,
        spec.pareto,
    );
    if let Err(e) = write_json_csv(
        &base,
        "sweep_aggregate",
        &sweep,
        &aggregate::sweep_csv(&rows),
    ) {
        failures.push(e.to_string());
    } else if cfg.output.html {
        // The sweep's report, from the aggregate just written; each run wrote its own.
        if let Err(e) = crate::report::write_for_sweep(&base, cfg.output.auto_plot) {
            if cfg.output.plot_required {
                failures.push(format!("--plot-required: {e}"));
            } else {
                eprintln!("warning: no sweep {}: {e}", crate::report::REPORT_FILE);
            }
        }
    }
    if spec.table {
        println!("{}", table(&rows, spec.pareto));
    }
    for line in noise_notes(&rows) {
        println!("{line}");
    }
    if spec.pareto_recipe {
        println!("{}", pareto_answer(&rows, spec.pareto));
        let path = base.join("search_result.json");
        let json = pareto_result(&rows, spec.pareto, &front);
        let text = serde_json::to_string_pretty(&json).unwrap_or_default() + "\n";
        if let Err(e) = std::fs::write(&path, text) {
            failures.push(format!("cannot write {}: {e}", path.display()));
        }
    }
    for f in &failures {
        eprintln!("error: {f}");
    }
    if !failures.is_empty() {
        exit_code = exit_code.max(1);
    }
    Ok(exit_code)
}

/// Writes `<name>.json` (pretty) and `<name>.csv` in `dir`.
fn write_json_csv(dir: &Path, name: &str, json: &Value, csv: &str) -> Result<()> {
    std::fs::create_dir_all(dir).context(|| format!("cannot create {}", dir.display()))?;
    let text = serde_json::to_string_pretty(json).unwrap_or_default();
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, text + "\n").context(|| format!("cannot write {}", path.display()))?;
    let path = dir.join(format!("{name}.csv"));
    std::fs::write(&path, csv).context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// `search_result.json` of `--search-recipe pareto`: the axes, the front (each point with
/// its parameters, both axes and directory) and every point with whether it is on it.
pub fn pareto_result(rows: &[PointRow], axes: ParetoAxes, front: &[usize]) -> Value {
    let point = |r: &PointRow| {
        json!({
            "index": r.index,
            "parameters": r.parameters,
            "throughput": r.metrics.get(axes.throughput),
            "latency": r.metrics.get(axes.latency),
            "pareto": r.pareto.unwrap_or(false),
            "artifact_dir": r.artifact_dir,
        })
    };
    json!({
        "recipe": "pareto",
        "throughput_metric": axes.throughput,
        "latency_metric": axes.latency,
        "front": rows.iter().filter(|r| front.contains(&r.index)).map(point).collect::<Vec<_>>(),
        "points": rows.iter().map(point).collect::<Vec<_>>(),
    })
}

/// The console lines of `--search-recipe pareto`: the front's points by rising throughput.
pub fn pareto_answer(rows: &[PointRow], axes: ParetoAxes) -> String {
    let mut on: Vec<&PointRow> = rows.iter().filter(|r| r.pareto == Some(true)).collect();
    if on.is_empty() {
        return format!(
            "Pareto front: none (fewer than two points have both {} and {})",
            axes.throughput, axes.latency
        );
    }
    let t = |r: &PointRow| r.metrics.get(axes.throughput).copied().unwrap_or(f64::NAN);
    on.sort_by(|a, b| t(a).total_cmp(&t(b)));
    let mut out = format!(
        "Pareto front ({} vs {}): {} of {} points",
        axes.throughput,
        axes.latency,
        on.len(),
        rows.len()
    );
    let width = on
        .iter()
        .map(|r| label(&r.parameters).len())
        .max()
        .unwrap_or(0);
    for r in on {
        out.push_str(&format!(
            "\n  {:<width$}  {:>12.2}  {:>10.2} ms",
            label(&r.parameters),
            t(r),
            r.metrics.get(axes.latency).copied().unwrap_or(f64::NAN)
        ));
    }
    out
}

/// The console table of the points: parameters and the main metrics; `*` marks the
/// points on the Pareto front.
pub fn table(rows: &[PointRow], axes: ParetoAxes) -> String {
    let cols: [(&str, &str); 7] = [
        ("request_throughput", "req/s"),
        ("output_token_throughput", "tok/s"),
        ("time_to_first_token_p50", "TTFT p50 ms"),
        ("time_to_first_token_p99", "TTFT p99 ms"),
        ("inter_token_latency_p50", "ITL p50 ms"),
        ("request_latency_p99", "latency p99 ms"),
        ("error_request_count", "errors"),
    ];
    let mut out = String::from("Sweep\n");
    let width = rows
        .iter()
        .map(|r| label(&r.parameters).len())
        .max()
        .unwrap_or(5)
        .max(5);
    out.push_str(&format!("{:>3}  {:<width$}", "#", "point"));
    for (_, h) in cols {
        out.push_str(&format!("  {h:>14}"));
    }
    out.push('\n');
    for r in rows {
        out.push_str(&format!("{:>3}  {:<width$}", r.index, label(&r.parameters)));
        for (c, _) in cols {
            match r.metrics.get(c) {
                Some(v) => out.push_str(&format!("  {v:>14.2}")),
                None => out.push_str(&format!("  {:>14}", "-")),
            }
        }
        if r.pareto == Some(true) {
            out.push_str("  *");
        }
        out.push('\n');
    }
    if rows.iter().any(|r| r.pareto.is_some()) {
        out.push_str(&format!(
            "* on the Pareto front of {} (higher is better) vs {} (lower is better)\n",
            axes.throughput, axes.latency
        ));
    }
    out
}

/// With repeated runs: for each pair of adjacent points, which key metrics differ by more
/// than the noise (their confidence intervals do not overlap) and which do not.
pub fn noise_notes(rows: &[PointRow]) -> Vec<String> {
    const WATCH: [&str; 4] = [
        "request_throughput",
        "time_to_first_token_p50",
        "inter_token_latency_p50",
        "request_latency_avg",
    ];
    let mut out = Vec::new();
    for pair in rows.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let (mut noise, mut real) = (Vec::new(), Vec::new());
        for m in WATCH {
            let (Some(ca), Some(cb)) = (a.confidence.get(m), b.confidence.get(m)) else {
                continue;
            };
            if Confidence::overlaps(ca, cb) {
                noise.push(m);
            } else {
                real.push(m);
            }
        }
        if noise.is_empty() && real.is_empty() {
            continue;
        }
        let mut line = format!("{} → {}:", label(&a.parameters), label(&b.parameters));
        if !real.is_empty() {
            line.push_str(&format!(" differs: {}", real.join(", ")));
        }
        if !noise.is_empty() {
            line.push_str(&format!(
                "{} within noise (confidence intervals overlap): {}",
                if real.is_empty() { "" } else { ";" },
                noise.join(", ")
            ));
        }
        out.push(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_go_trial_by_trial_or_point_by_point() {
        assert_eq!(
            run_order(2, 2, ParameterSweepMode::Repeated),
            [(0, 0), (1, 0), (0, 1), (1, 1)]
        );
        assert_eq!(
            run_order(2, 2, ParameterSweepMode::Independent),
            [(0, 0), (0, 1), (1, 0), (1, 1)]
        );
    }

    #[test]
    fn directories_of_points_and_trials() {
        let base = Path::new("out");
        let p = SweepParameters {
            concurrency: Some(4),
            ..Default::default()
        };
        assert_eq!(point_dir(base, &p, 2), Path::new("out/concurrency_4"));
        assert_eq!(point_dir(base, &p, 1), Path::new("out"));
        assert_eq!(
            run_dir(&point_dir(base, &p, 2), 2, 3),
            Path::new("out/concurrency_4/profile_runs/run_0003")
        );
        assert_eq!(run_dir(base, 0, 1), Path::new("out"));
        assert_eq!(label(&p), "concurrency 4");
    }
}
