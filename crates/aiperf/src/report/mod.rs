//! `report.html` and `aiperf plot`: a run's (or several runs', or a sweep's) artifacts read
//! back ([`data`]), turned into distributions, timelines and charts ([`model`], [`chart`]),
//! and written as one self-contained page ([`html`]) and, on request, a picture per chart
//! (PNG or SVG). The in-run report and `aiperf plot` go through the same functions: a run's
//! report is built from its files, never from its memory.

mod artifacts;
pub mod chart;
pub mod data;
pub mod html;
pub mod model;
mod sweep;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use chart::Chart;
use data::RunData;
use html::{esc, Section};
use model::RunModel;

pub use sweep::sweep_report;

/// The report's file name, in a run's (or a sweep's) artifact directory.
pub const REPORT_FILE: &str = "report.html";
/// Where `--auto-plot` puts the pictures, inside the artifact directory (AIPerf's place).
pub const PLOTS_DIR: &str = "plots";

/// Picture format of exported charts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Png,
    Svg,
}

impl Format {
    pub fn ext(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Svg => "svg",
        }
    }
}

/// A built report: the page, and the charts it shows (for export as pictures).
pub struct Built {
    pub html: String,
    pub charts: Vec<Chart>,
}

/// A number for a table: up to 2 decimals, fewer for large values.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let a = v.abs();
    if a >= 1000.0 || (a - a.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// The first of `pointers` that exists in `v`, as display text.
fn pick(v: &Value, pointers: &[&str]) -> Option<String> {
    pointers.iter().find_map(|p| match v.pointer(p)? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Array(a) if a.is_empty() => None,
        Value::Array(a) => Some(
            a.iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        other => Some(other.to_string()),
    })
}

/// How the run was loaded, in words.
fn load_text(s: &Value) -> String {
    let g = |k: &str| pick(s, &[&format!("/input_config/loadgen/{k}")]);
    let mut parts = Vec::new();
    if let Some(c) = g("concurrency") {
        parts.push(format!("concurrency {c}"));
    }
    if let Some(r) = g("request_rate") {
        let mode = g("request_rate_mode").unwrap_or_default();
        parts.push(format!("request rate {r}/s {mode}").trim_end().to_string());
    }
    if let Some(n) = g("request_count") {
        parts.push(format!("{n} requests"));
    }
    if let Some(d) = g("benchmark_duration") {
        parts.push(format!("{d} s"));
    }
    if let Some(n) = g("warmup_request_count").filter(|n| n != "0") {
        parts.push(format!("warmup {n} requests"));
    }
    if parts.is_empty() {
        "–".into()
    } else {
        parts.join(", ")
    }
}

/// The run's context: what was measured, how, with what, and whether the client kept up.
fn context_section(run: &RunData) -> Section {
    let s = &run.summary;
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut add = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            rows.push((k.into(), esc(&v)));
        }
    };
    add(
        "model",
        pick(
            s,
            &["/input_config/endpoint/model_names", "/input_config/model"],
        ),
    );
    add(
        "URL",
        pick(
            s,
            &[
                "/input_config/endpoint/urls",
                "/input_config/endpoint/url",
                "/input_config/url",
            ],
        ),
    );
    add(
        "endpoint",
        pick(s, &["/input_config/endpoint/type"]).map(|t| {
            let stream = pick(s, &["/input_config/endpoint/streaming"]);
            match stream.as_deref() {
                Some("true") => format!("{t}, streaming"),
                _ => t,
            }
        }),
    );
    add("load", Some(load_text(s)));
    add("started", pick(s, &["/start_time"]));
    add("ended", pick(s, &["/end_time"]));
    add("benchmark id", pick(s, &["/benchmark_id"]));
    add(
        "aiperf version",
        pick(s, &["/aiperf_version"])
            .map(|v| format!("{v} (report by aiperf {})", env!("CARGO_PKG_VERSION"))),
    );
    add(
        "command",
        pick(s, &["/input_config/cli_command", "/run_info/cli_command"]),
    );
    if let Some(v) = s.pointer("/client_health/verdict").and_then(Value::as_str) {
        let class = if v == "ok" {
            "verdict-ok"
        } else {
            "verdict-bad"
        };
        let said = |key: &str| -> Vec<String> {
            s.pointer(&format!("/client_health/{key}"))
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|r| r.as_str()).map(esc).collect())
                .unwrap_or_default()
        };
        let (reasons, notes) = (said("reasons"), said("notes"));
        let mut cell = format!("<span class=\"{class}\">{}</span>", esc(v));
        if !reasons.is_empty() {
            cell.push_str(&format!(": {}", reasons.join("; ")));
        }
        for n in notes {
            cell.push_str(&format!("<br>note: {n}"));
        }
        rows.push(("client health".into(), cell));
    }
    if s.get("was_cancelled").and_then(Value::as_bool) == Some(true) {
        rows.push(("cancelled".into(), "yes: the run was cut short".into()));
    }
    let rows: Vec<Vec<String>> = rows.into_iter().map(|(k, v)| vec![esc(&k), v]).collect();
    let mut body = html::table(&["".into(), "".into()], &rows, "kv");
    let warnings: Vec<&str> = s
        .get("warnings")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !warnings.is_empty() {
        body.push_str("<h3>Warnings</h3><ul class=\"warn\">");
        for w in warnings {
            body.push_str(&format!("<li>{}</li>", esc(w)));
        }
        body.push_str("</ul>");
    }
    Section::new("context", "Run", body)
}

/// The statistics a summary table shows, in order.
const STATS: &[&str] = &["avg", "min", "max", "p50", "p90", "p99", "std"];

/// Every metric of the summary JSON (objects with a `unit`), in the file's order.
fn summary_metrics(s: &Value) -> Vec<(&str, &Value)> {
    s.as_object()
        .map(|o| {
            o.iter()
                .filter(|(_, v)| v.get("unit").is_some())
                .map(|(k, v)| (k.as_str(), v))
                .collect()
        })
        .unwrap_or_default()
}

fn header_of(tag: &str) -> String {
    crate::metrics::metric_info(tag).map_or_else(|| tag.replace('_', " "), |m| m.header.to_string())
}

fn summary_section(run: &RunData) -> Section {
    let mut head = vec!["metric".to_string(), "unit".to_string()];
    head.extend(STATS.iter().map(|s| s.to_string()));
    let rows: Vec<Vec<String>> = summary_metrics(&run.summary)
        .into_iter()
        .map(|(tag, v)| {
            let mut r = vec![
                format!(
                    "<span title=\"{}\">{}</span>",
                    esc(tag),
                    esc(&header_of(tag))
                ),
                esc(v.get("unit").and_then(Value::as_str).unwrap_or("")),
            ];
            r.extend(STATS.iter().map(|st| {
                v.get(*st)
                    .and_then(Value::as_f64)
                    .map_or_else(String::new, num)
            }));
            r
        })
        .collect();
    Section::new("summary", "Summary", html::table(&head, &rows, "summary"))
}

fn errors_section(runs: &[&RunData], models: &[&RunModel]) -> Result<Option<Section>, String> {
    let Some(c) = model::errors_chart(models) else {
        return Ok(None);
    };
    let mut body = html::charts(std::slice::from_ref(&c))?;
    let mut rows = Vec::new();
    for r in runs {
        for e in r
            .summary
            .get("error_summary")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let d = e.get("error_details").unwrap_or(&Value::Null);
            let mut row = Vec::new();
            if runs.len() > 1 {
                row.push(esc(&r.label));
            }
            row.push(esc(d.get("type").and_then(Value::as_str).unwrap_or("")));
            row.push(
                d.get("code")
                    .filter(|c| !c.is_null())
                    .map_or_else(String::new, |c| esc(&c.to_string())),
            );
            row.push(esc(d.get("message").and_then(Value::as_str).unwrap_or("")));
            row.push(
                e.get("count")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
                    .to_string(),
            );
            rows.push(row);
        }
    }
    let mut head: Vec<String> = Vec::new();
    if runs.len() > 1 {
        head.push("run".into());
    }
    head.extend(["type", "code", "message", "count"].map(String::from));
    if !rows.is_empty() {
        body.push_str(&html::table(&head, &rows, "errors"));
    }
    Ok(Some(Section::new("errors", "Errors", body)))
}

/// A section per plugin that reported (`plugins.<name>.report`: metrics and notes).
fn plugin_sections(run: &RunData) -> Vec<Section> {
    let Some(plugins) = run.summary.get("plugins").and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, p) in plugins {
        let Some(rep) = p.get("report").filter(|r| !r.is_null()) else {
            continue;
        };
        let mut body = String::new();
        if let Some(m) = rep.get("metrics").and_then(Value::as_object) {
            let rows: Vec<Vec<String>> = m
                .iter()
                .map(|(k, v)| {
                    let val = v.as_f64().map_or_else(|| v.to_string(), num);
                    vec![esc(k), esc(&val)]
                })
                .collect();
            body.push_str(&html::table(
                &["metric".into(), "value".into()],
                &rows,
                "plugin",
            ));
        }
        if let Some(notes) = rep.get("notes").and_then(Value::as_array) {
            body.push_str("<ul>");
            for n in notes.iter().filter_map(Value::as_str) {
                body.push_str(&format!("<li>{}</li>", esc(n)));
            }
            body.push_str("</ul>");
        }
        out.push(Section::new(
            &format!("plugin-{name}"),
            &format!("Plugin: {name}"),
            body,
        ));
    }
    out
}

/// What the page's inline JSON holds for one run: the summary's statistics (as the run's
/// JSON has them) and what the report computed from the records.
fn run_data(run: &RunData, m: &RunModel) -> Value {
    let summary: serde_json::Map<String, Value> = summary_metrics(&run.summary)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    json!({
        "label": run.label,
        "dir": run.dir.display().to_string(),
        "benchmark_id": run.summary.get("benchmark_id"),
        "summary": summary,
        "records": m.records,
        "profiling_records": m.profiling_records,
        "distributions": m.distributions,
        "timeline": m.timeline,
        "warmup_s": m.warmup_s,
        "errors_by_type": m.errors_by_type,
        "open_loop": m.open_loop,
    })
}

/// The distribution charts of `runs`, one metric after another.
fn distribution_charts(models: &[&RunModel]) -> Vec<Chart> {
    model::DISTRIBUTIONS
        .iter()
        .filter_map(|&(tag, title)| model::distribution_charts(models, tag, title))
        .flatten()
        .collect()
}

fn no_records_note(run: &RunData) -> String {
    format!(
        "<p class=\"note\">{}: no per-request records ({} not found, e.g. a run with \
         --export-level summary): distributions and timelines need them.</p>",
        esc(&run.label),
        data::RECORDS_FILE
    )
}

/// The report of one run.
pub fn run_report(run: &RunData) -> Result<Built, String> {
    let m = RunModel::of(run);
    let mut charts_all = Vec::new();
    let mut sections = vec![context_section(run), summary_section(run)];
    let dists = distribution_charts(&[&m]);
    if !dists.is_empty() {
        sections.push(Section::new(
            "distributions",
            "Latency distributions",
            html::charts(&dists)?,
        ));
    } else if !run.has_records {
        sections.push(Section::new(
            "distributions",
            "Latency distributions",
            no_records_note(run),
        ));
    }
    charts_all.extend(dists);
    let mut timeline: Vec<Chart> = model::latency_timeline(run, &m).into_iter().collect();
    timeline.extend(model::rate_timelines(&[&m]));
    if !timeline.is_empty() {
        let mut body = html::charts(&timeline)?;
        if let Some(t) = &m.timeline {
            body.push_str(&format!(
                "<p class=\"note\">Rates are per {} s interval; per-request points keep each \
                 time bin's lowest and highest value ({} bins); percentiles above are over every request.</p>",
                num(t.interval_s),
                model::SCATTER_BINS
            ));
        }
        sections.push(Section::new("timeline", "Timeline", body));
    }
    charts_all.extend(timeline);
    if let Some(c) = model::send_lag_timeline(run, &m) {
        sections.push(Section::new(
            "send-lag",
            "Send lag",
            html::charts(std::slice::from_ref(&c))?,
        ));
        charts_all.push(c);
    }
    if let Some(s) = errors_section(&[run], &[&m])? {
        sections.push(s);
        charts_all.extend(model::errors_chart(&[&m]));
    }
    let added = artifacts::sections(run, &m)?;
    sections.extend(added.sections);
    charts_all.extend(added.charts);
    sections.extend(plugin_sections(run));
    let mut one = run_data(run, &m);
    one["artifacts"] = Value::Object(added.data);
    let data = json!({
        "kind": "run",
        "generator": format!("aiperf {}", env!("CARGO_PKG_VERSION")),
        "runs": [one],
        "charts": charts_all.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
    });
    let model_name =
        pick(&run.summary, &["/input_config/endpoint/model_names"]).unwrap_or_default();
    let html = html::page(
        &format!("aiperf report: {}", run.label),
        &format!("{model_name} · {}", load_text(&run.summary)),
        &sections,
        &data,
    );
    Ok(Built {
        html,
        charts: charts_all,
    })
}

/// Statistics compared side by side: tag, stat, whether higher is better.
const COMPARED: &[(&str, &str, bool)] = &[
    ("request_throughput", "avg", true),
    ("output_token_throughput", "avg", true),
    ("time_to_first_token", "avg", false),
    ("time_to_first_token", "p50", false),
    ("time_to_first_token", "p99", false),
    ("inter_token_latency", "avg", false),
    ("inter_token_latency", "p50", false),
    ("inter_token_latency", "p99", false),
    ("request_latency", "avg", false),
    ("request_latency", "p50", false),
    ("request_latency", "p99", false),
    ("request_count", "avg", true),
    ("error_request_count", "avg", false),
];

fn comparison_table(runs: &[RunData]) -> (String, Value) {
    let mut head = vec!["metric".to_string()];
    for (i, r) in runs.iter().enumerate() {
        head.push(format!("{} {}", i + 1, esc(&r.label)));
        if i > 0 {
            head.push(format!("Δ {} vs 1", i + 1));
        }
    }
    let mut rows = Vec::new();
    let mut diffs = Vec::new();
    for &(tag, stat, higher_better) in COMPARED {
        let vals: Vec<Option<f64>> = runs
            .iter()
            .map(|r| {
                r.summary
                    .get(tag)
                    .and_then(|m| m.get(stat))
                    .and_then(Value::as_f64)
            })
            .collect();
        if vals.iter().all(Option::is_none) {
            continue;
        }
        let unit = runs
            .iter()
            .find_map(|r| r.summary.get(tag)?.get("unit")?.as_str())
            .unwrap_or("");
        let mut row = vec![format!("{} {stat} ({})", esc(&header_of(tag)), esc(unit))];
        for (i, v) in vals.iter().enumerate() {
            row.push(v.map_or_else(|| "–".into(), num));
            if i > 0 {
                let cell = match (vals[0], *v) {
                    (Some(a), Some(b)) => {
                        let d = b - a;
                        let pct = (a != 0.0).then(|| d / a * 100.0);
                        diffs.push(
                            json!({"metric": tag, "stat": stat, "run": i, "diff": d, "pct": pct}),
                        );
                        let better = if higher_better { d > 0.0 } else { d < 0.0 };
                        let class = if d == 0.0 {
                            ""
                        } else if better {
                            "better"
                        } else {
                            "worse"
                        };
                        let pct = pct.map_or_else(String::new, |p| format!(" ({p:+.1}%)"));
                        format!(
                            "<span class=\"{class}\">{}{}{pct}</span>",
                            if d >= 0.0 { "+" } else { "" },
                            num(d)
                        )
                    }
                    _ => "–".into(),
                };
                row.push(cell);
            }
        }
        rows.push(row);
    }
    (html::table(&head, &rows, "compare"), Value::Array(diffs))
}

/// One report comparing several runs: a side-by-side table with differences against the
/// first run, overlaid distributions and timelines, errors by type per run.
pub fn comparison_report(runs: &[RunData]) -> Result<Built, String> {
    let models: Vec<RunModel> = runs.iter().map(RunModel::of).collect();
    let refs: Vec<&RunModel> = models.iter().collect();
    let run_refs: Vec<&RunData> = runs.iter().collect();
    let mut charts_all = Vec::new();
    let (table, diffs) = comparison_table(runs);
    let mut listing = String::from("<ol>");
    for r in runs {
        listing.push_str(&format!(
            "<li><b>{}</b>: {} · {} <span class=\"note\">({})</span></li>",
            esc(&r.label),
            esc(&pick(&r.summary, &["/input_config/endpoint/model_names"]).unwrap_or_default()),
            esc(&load_text(&r.summary)),
            esc(&r.dir.display().to_string())
        ));
    }
    listing.push_str("</ol>");
    let mut sections = vec![
        Section::new("runs", "Runs", listing),
        Section::new("compare", "Side by side", table),
    ];
    let dists = distribution_charts(&refs);
    let mut body = html::charts(&dists)?;
    for r in runs.iter().filter(|r| !r.has_records) {
        body.push_str(&no_records_note(r));
    }
    sections.push(Section::new("distributions", "Latency distributions", body));
    charts_all.extend(dists);
    let rates = model::rate_timelines(&refs);
    if !rates.is_empty() {
        sections.push(Section::new("timeline", "Timeline", html::charts(&rates)?));
    }
    charts_all.extend(rates);
    if let Some(s) = errors_section(&run_refs, &refs)? {
        sections.push(s);
        charts_all.extend(model::errors_chart(&refs));
    }
    let data = json!({
        "kind": "comparison",
        "generator": format!("aiperf {}", env!("CARGO_PKG_VERSION")),
        "runs": runs.iter().zip(&models).map(|(r, m)| run_data(r, m)).collect::<Vec<_>>(),
        "differences": diffs,
        "charts": charts_all.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
    });
    let labels: Vec<&str> = runs.iter().map(|r| r.label.as_str()).collect();
    let html = html::page(
        &format!("aiperf comparison: {} runs", runs.len()),
        &labels.join(" · "),
        &sections,
        &data,
    );
    Ok(Built {
        html,
        charts: charts_all,
    })
}

/// Writes `name` in `dir` through a temporary file, so a reader never sees half a report.
fn write_atomic(dir: &Path, name: &str, text: &str) -> Result<PathBuf, String> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Each chart as `<id>.<ext>` in `dir`.
pub fn export_charts(charts: &[Chart], dir: &Path, format: Format) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for c in charts {
        let path = dir.join(format!("{}.{}", c.id, format.ext()));
        match format {
            Format::Svg => {
                let svg = chart::svg(c)?;
                std::fs::write(&path, svg)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            }
            Format::Png => {
                chart::png(c, &path).map_err(|e| format!("cannot draw {}: {e}", path.display()))?
            }
        }
        out.push(path);
    }
    Ok(out)
}

/// After a run: `report.html` in its artifact directory, from the files just written (the
/// records from `kept` when the run kept them as it wrote them, the same values), and with
/// `pngs` (`--auto-plot`) each chart as a PNG under `plots/`.
pub fn write_for_run(
    dir: &Path,
    json_name: &str,
    jsonl_name: &str,
    pngs: bool,
    kept: Option<Vec<data::Rec>>,
) -> Result<PathBuf, String> {
    let run = data::load_run_with(dir, json_name, jsonl_name, kept).map_err(|e| e.0)?;
    let built = run_report(&run)?;
    let path = write_atomic(dir, REPORT_FILE, &built.html)?;
    if pngs {
        export_charts(&built.charts, &dir.join(PLOTS_DIR), Format::Png)?;
    }
    Ok(path)
}

/// After a sweep: `report.html` at its top, from `sweep_aggregate.json`.
pub fn write_for_sweep(dir: &Path, pngs: bool) -> Result<PathBuf, String> {
    let built = sweep_report(dir)?;
    let path = write_atomic(dir, REPORT_FILE, &built.html)?;
    if pngs {
        export_charts(&built.charts, &dir.join(PLOTS_DIR), Format::Png)?;
    }
    Ok(path)
}

/// What `aiperf plot` was given.
#[derive(Debug, Clone)]
pub struct PlotRequest {
    pub dirs: Vec<PathBuf>,
    pub output: Option<PathBuf>,
    pub format: Format,
}

/// What `aiperf plot` wrote.
#[derive(Debug)]
pub struct PlotOutcome {
    pub report: PathBuf,
    pub pictures: Vec<PathBuf>,
}

/// The run directories under `dir` (one level down, sorted), for a directory of runs.
fn runs_below(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join(data::SUMMARY_FILE).is_file())
        .collect();
    out.sort();
    out
}

/// `aiperf plot DIR...`: the report of one run, a sweep, or a comparison of several runs,
/// plus a picture per chart. The error (missing or corrupt files) is the caller's usage
/// error.
pub fn plot(req: &PlotRequest) -> Result<PlotOutcome, String> {
    let first = req
        .dirs
        .first()
        .ok_or_else(|| "aiperf plot needs at least one artifact directory".to_string())?;
    for d in &req.dirs {
        if !d.is_dir() {
            return Err(format!("{} is not a directory", d.display()));
        }
    }
    let built = if req.dirs.len() == 1 && first.join(sweep::SWEEP_FILE).is_file() {
        sweep_report(first)?
    } else {
        let mut dirs = Vec::new();
        for d in &req.dirs {
            if d.join(data::SUMMARY_FILE).is_file() {
                dirs.push(d.clone());
            } else {
                let below = runs_below(d);
                if below.is_empty() {
                    return Err(format!(
                        "{}: no {} here or in its subdirectories (is it an artifact directory?)",
                        d.display(),
                        data::SUMMARY_FILE
                    ));
                }
                dirs.extend(below);
            }
        }
        let runs = dirs
            .iter()
            .map(|d| data::load_run(d, data::SUMMARY_FILE, data::RECORDS_FILE))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.0)?;
        let runs = unique_labels(runs);
        if runs.len() == 1 {
            run_report(&runs[0])?
        } else {
            comparison_report(&runs)?
        }
    };
    let out = req.output.clone().unwrap_or_else(|| first.join(PLOTS_DIR));
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let report = write_atomic(&out, REPORT_FILE, &built.html)?;
    let pictures = export_charts(&built.charts, &out, req.format)?;
    Ok(PlotOutcome { report, pictures })
}

/// Runs with the same directory name get their parent's name too, so a comparison's
/// labels tell them apart.
fn unique_labels(mut runs: Vec<RunData>) -> Vec<RunData> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in &runs {
        *seen.entry(r.label.clone()).or_insert(0) += 1;
    }
    for r in &mut runs {
        if seen[&r.label] > 1 {
            let parent = r.dir.canonicalize().ok().and_then(|p| {
                p.parent()?
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            });
            if let Some(p) = parent {
                r.label = format!("{p}/{}", r.label);
            }
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 100,000 requests: the page stays small (timelines downsampled, percentiles exact).
    #[test]
    fn a_100k_request_report_is_under_10_mb() {
        let n = 100_000u64;
        let records: Vec<data::Rec> = (0..n)
            .map(|i| {
                let lat = 50.0 + (i % 1000) as f64 / 10.0;
                data::Rec {
                    start_ns: i * 1_000_000,
                    end_ns: i * 1_000_000 + (lat * 1e6) as u64,
                    warmup: i < 1000,
                    ttft_ms: Some(lat / 5.0),
                    itl_ms: Some(1.0 + (i % 7) as f64 / 10.0),
                    latency_ms: Some(lat),
                    send_lag_ms: Some((i % 13) as f64 / 100.0),
                    error: (i % 500 == 0).then(|| "Boom".to_string()),
                }
            })
            .collect();
        let run = RunData {
            dir: "big".into(),
            label: "big".into(),
            summary_file: "profile_export_aiperf.json".into(),
            summary: json!({"request_count": {"unit": "requests", "avg": n}}),
            records,
            has_records: true,
        };
        let b = run_report(&run).unwrap();
        assert!(b.html.len() < 10_000_000, "{} bytes", b.html.len());
        let d = html::extract_data(&b.html).unwrap();
        assert_eq!(
            d["runs"][0]["distributions"]["request_latency"]["count"],
            98_802
        );
        assert_eq!(d["runs"][0]["open_loop"], true);
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(num(12.3456), "12.35");
        assert_eq!(num(1234.7), "1235");
        assert_eq!(num(3.0), "3");
        assert_eq!(num(0.012345), "0.0123");
        assert_eq!(num(f64::NAN), "–");
    }

    #[test]
    fn a_report_without_records_still_has_its_summary() {
        let run = RunData {
            dir: "x".into(),
            label: "x".into(),
            summary_file: "profile_export_aiperf.json".into(),
            summary: json!({
                "request_throughput": {"unit": "requests/sec", "avg": 12.5},
                "input_config": {"endpoint": {"model_names": ["m"]}, "loadgen": {"concurrency": 4}},
                "error_summary": [{"error_details": {"type": "Boom", "code": 500, "message": "<x>"}, "count": 2}],
                "client_health": {"verdict": "ok", "reasons": [], "notes": ["late reads cost <1 %"]}
            }),
            records: Vec::new(),
            has_records: false,
        };
        let b = run_report(&run).unwrap();
        assert!(b.html.contains("12.50") && b.html.contains("concurrency 4"));
        assert!(b.html.contains("no per-request records"));
        assert!(b.html.contains("&lt;x&gt;"), "messages are escaped");
        assert!(
            b.html
                .contains("<span class=\"verdict-ok\">ok</span><br>note: late reads cost &lt;1 %"),
            "the health note, escaped"
        );
        let d = html::extract_data(&b.html).unwrap();
        assert_eq!(d["runs"][0]["errors_by_type"]["Boom"], 2);
        assert_eq!(d["charts"], json!(["errors_by_type"]));
    }
}
