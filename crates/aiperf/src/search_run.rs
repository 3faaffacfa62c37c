//! `aiperf profile --search-recipe …`: the SLO search of `search.rs`, with each probe one
//! benchmark run of the user's config at the probe's load ([`multirun::run_point`], the
//! sweep infrastructure's entry point), in its own artifact subdirectory (`concurrency_40/`, `request_rate_12.5/`). Prints each probe
//! and the answer, and writes `search_result.json` at the top of the artifact directory.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};

use aiperf_plugin::SweepParameters;

use crate::config::BenchmarkConfig;
use crate::multirun::{self, PointOptions, PointResult};
use crate::plugin::Redactor;
use crate::search::{self, Dimension, Ending, Probe, ProbeOutcome, SearchResult, SearchSpec};
use crate::{IoContext, Result};

/// The statistics each probe keeps in `search_result.json` (besides its SLA filters').
const KEPT: &[(&str, &[&str])] = &[
    ("time_to_first_token", &["avg", "p50", "p95", "p99"]),
    ("inter_token_latency", &["avg", "p95"]),
    ("request_latency", &["avg", "p95", "p99"]),
    ("output_token_throughput", &["avg"]),
    ("request_throughput", &["avg"]),
    ("request_count", &["avg"]),
    ("error_request_count", &["avg"]),
    ("good_request_fraction", &["avg"]),
    ("goodput", &["avg"]),
];

/// The file the search writes at the top of the artifact directory.
pub const RESULT_FILE: &str = "search_result.json";

/// A load as its dimension writes it: a whole number for concurrency.
fn load_value(d: Dimension, x: f64) -> Value {
    match d {
        Dimension::Concurrency => json!(x as u64),
        Dimension::RequestRate => json!(x),
    }
}

/// A load for people: `concurrency 40`, `request_rate 12.5`.
fn show(d: Dimension, x: f64) -> String {
    format!("{} {}", d.key(), load_value(d, x))
}

/// The artifact directory of the probe at `load`: `concurrency_40/`, `request_rate_12.5/`.
fn probe_dir(base: &BenchmarkConfig, d: Dimension, load: f64) -> PathBuf {
    base.output
        .artifact_directory
        .join(format!("{}_{}", d.key(), load_value(d, load)))
}

/// What a finished probe measured: its good fraction and the kept statistics.
fn outcome_of(point: &PointResult, spec: &SearchSpec) -> ProbeOutcome {
    let mut metrics = BTreeMap::new();
    let wanted = KEPT
        .iter()
        .flat_map(|(tag, stats)| stats.iter().map(move |s| (tag.to_string(), s.to_string())))
        .chain(
            spec.criteria
                .slas
                .iter()
                .map(|s| (s.tag.clone(), s.stat.clone())),
        );
    for (tag, stat) in wanted {
        if let Some(v) = point.metric(&tag, &stat) {
            metrics.insert(format!("{tag}.{stat}"), v);
        }
    }
    ProbeOutcome {
        good_fraction: point.goodput_fraction,
        metrics,
        artifact_dir: Some(point.artifact_dir.clone()),
    }
}

/// One probe: a whole benchmark run at `load` (the sweep infrastructure's
/// [`multirun::run_point`]: the config's warmup and seed, no sweep hooks).
async fn run_probe(
    base: &BenchmarkConfig,
    spec: &SearchSpec,
    redactor: &Redactor,
    load: f64,
) -> std::result::Result<ProbeOutcome, String> {
    let d = spec.space.dimension;
    let parameters = SweepParameters {
        concurrency: (d == Dimension::Concurrency).then_some(load as u64),
        request_rate: (d == Dimension::RequestRate).then_some(load),
        ..SweepParameters::default()
    };
    let opts = PointOptions::new(probe_dir(base, d, load));
    let point = multirun::run_point(base, redactor, &parameters, opts)
        .await
        .map_err(|e| format!("the run at {} failed: {e}", show(d, load)))?;
    if point.was_cancelled {
        return Err(format!("the run at {} was interrupted", show(d, load)));
    }
    if point.report.is_null() {
        return Err(format!(
            "the run at {} stopped before it started",
            show(d, load)
        ));
    }
    Ok(outcome_of(&point, spec))
}

/// The probe's console line: load, good fraction, the SLA values, verdict.
fn probe_line(spec: &SearchSpec, n: usize, p: &Probe) -> String {
    let d = spec.space.dimension;
    let mut parts = vec![format!(
        "search: probe {n}/{}: {}",
        spec.max_runs,
        show(d, p.load)
    )];
    if let Some(f) = p.outcome.good_fraction {
        parts.push(format!("good fraction {f:.3}"));
    }
    for sla in &spec.criteria.slas {
        if let Some(v) = p.outcome.metrics.get(&sla.key()) {
            parts.push(format!("{} {v:.3}", sla.key()));
        }
    }
    let verdict = match (&p.passed, &p.why) {
        (true, _) => "pass".to_string(),
        (false, Some(why)) => format!("FAIL ({why})"),
        (false, None) => "FAIL".to_string(),
    };
    parts.push(verdict);
    parts.join(", ")
}

/// The one-line summary of how the search ended.
pub fn message(spec: &SearchSpec, r: &SearchResult) -> String {
    let d = spec.space.dimension;
    let (lo, hi) = (spec.space.lo, spec.space.hi);
    let runs = r.probes.len();
    let margin = |m: Option<f64>| match m {
        Some(m) => format!("; the next step up, {}, failed", show(d, m)),
        None => String::new(),
    };
    match (&r.ending, r.answer) {
        (Ending::Found, Some(a)) => format!(
            "the largest {} meeting the SLO is {}{} ({runs} runs)",
            d.key(),
            load_value(d, a),
            margin(r.margin)
        ),
        (Ending::TopPasses, Some(a)) => format!(
            "{} (the top of --search-space) meets the SLO: the limit was not found; search higher ({runs} runs)",
            show(d, a)
        ),
        (Ending::BudgetSpent, Some(a)) => format!(
            "--search-max-iterations ({}) spent before the search converged: the largest {} seen meeting the SLO is {}{}",
            spec.max_runs,
            d.key(),
            load_value(d, a),
            margin(r.margin)
        ),
        (Ending::LowestFails, _) => {
            let why = r
                .probes
                .first()
                .and_then(|p| p.why.clone())
                .unwrap_or_default();
            format!(
                "no {} in {}..{} meets the SLO: even the lowest, {}, fails ({why})",
                d.key(),
                load_value(d, lo),
                load_value(d, hi),
                load_value(d, lo)
            )
        }
        (Ending::ProbeFailed(e), _) => format!("the search stopped: {e}"),
        (_, None) => format!("no {} meets the SLO", d.key()),
    }
}

/// `search_result.json`.
pub fn result_json(cfg: &BenchmarkConfig, spec: &SearchSpec, r: &SearchResult) -> Value {
    let d = spec.space.dimension;
    let point = |x: Option<f64>| x.map(|x| json!({ d.key(): load_value(d, x) }));
    let probes: Vec<Value> = r
        .probes
        .iter()
        .map(|p| {
            json!({
                d.key(): load_value(d, p.load),
                "good_fraction": p.outcome.good_fraction,
                "passed": p.passed,
                "reason": p.why,
                "metrics": p.outcome.metrics,
                "artifact_dir": p.outcome.artifact_dir.as_ref().map(|a| a.display().to_string()),
            })
        })
        .collect();
    json!({
        "recipe": spec.recipe,
        "dimension": d.key(),
        "search_space": {"lo": load_value(d, spec.space.lo), "hi": load_value(d, spec.space.hi)},
        "slo": {
            "goodput": cfg.input.goodput,
            "min_good_fraction": spec.criteria.goodput.then_some(spec.criteria.min_good_fraction),
            "sla": spec.criteria.slas.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        },
        "max_runs": spec.max_runs,
        "ending": r.ending.name(),
        "answer": point(r.answer),
        "margin": point(r.margin),
        "message": message(spec, r),
        "runs": r.probes.len(),
        "probes": probes,
    })
}

/// Runs the search; the exit code: 0 with an answer, 1 without one (the lowest load fails,
/// or a probe could not run).
pub async fn run(cfg: BenchmarkConfig, spec: SearchSpec, redactor: &Redactor) -> Result<u8> {
    let base: PathBuf = cfg.output.artifact_directory.clone();
    std::fs::create_dir_all(&base)
        .context(|| format!("cannot create the artifact directory {}", base.display()))?;
    let d = spec.space.dimension;
    let criteria = spec.criteria.clone();
    println!(
        "search: {} over {} {}..{}, at most {} runs",
        spec.recipe,
        d.key(),
        load_value(d, spec.space.lo),
        load_value(d, spec.space.hi),
        spec.max_runs
    );
    let mut n = 0;
    let result = search::search(
        spec.space,
        &criteria,
        spec.max_runs,
        |load| run_probe(&cfg, &spec, redactor, load),
        |p| {
            n += 1;
            println!("{}", probe_line(&spec, n, p));
        },
    )
    .await;
    let text = serde_json::to_string_pretty(&result_json(&cfg, &spec, &result))
        .unwrap_or_else(|_| "{}".into());
    let path = base.join(RESULT_FILE);
    std::fs::write(&path, text + "\n").context(|| format!("cannot write {}", path.display()))?;
    let msg = message(&spec, &result);
    match result.answer {
        Some(_) => {
            println!("search: {msg}");
            Ok(0)
        }
        None => {
            eprintln!("error: {msg}");
            Ok(1)
        }
    }
}
