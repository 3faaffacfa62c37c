//! `aiperf merge DIR... --output DIR`: the shards of one run (`--shard I/N`) made into the
//! run one process would have reported (docs/scale-out.md).
//!
//! The statistics are not averaged from the shards' summaries: every shard's per-request
//! records (`profile_export.jsonl`) are read back into the metrics a run computes and fed,
//! in order, to the same [`PhaseAccumulator`] a run uses, so percentiles, throughputs and
//! counts are exactly those of the concatenated records. Counters that records do not carry
//! (usage and OSL mismatches) are the sums of the shards'. Errors are the union; each shard's
//! client-health verdict is kept, and one bottlenecked shard makes the merged verdict say so.
//!
//! A set that is not one run is refused, naming what is wrong: a directory without the
//! files or without a `shard` section, shards of different runs or shard counts, a shard
//! twice, a shard missing.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::export::{self, ArtifactNames, RunReport};
use crate::metrics::{
    ErrorDetails, HttpMetrics, PhaseAccumulator, PhaseKind, PhaseSummary, RequestIds,
    RequestMetrics, RequestRecord, Usage,
};
use crate::plugin::PluginsReport;
use crate::timing::health::{ClientHealth, RuntimeLag, Verdict};

/// Why a merge cannot be made: the message names the directory, file or shard.
#[derive(Debug)]
pub enum MergeError {
    /// The directories given are not the shards of one run, or cannot be read as such
    /// (exit 2).
    Input(String),
    /// The merged artifacts cannot be written (a full disk, a read-only directory): what
    /// was being written, and why (exit 1).
    Write(String, std::io::Error),
}

impl MergeError {
    /// The message (for tests and the console).
    pub fn message(&self) -> String {
        match self {
            MergeError::Input(m) => m.clone(),
            MergeError::Write(what, e) => format!("{what}: {e}"),
        }
    }
}

fn input(msg: String) -> MergeError {
    MergeError::Input(msg)
}

fn err<T>(msg: impl Into<String>) -> Result<T, MergeError> {
    Err(MergeError::Input(msg.into()))
}

/// One shard's artifact directory, read.
#[derive(Debug)]
pub struct ShardDir {
    pub dir: PathBuf,
    pub summary: Value,
    pub index: u32,
    pub count: u32,
    pub run_id: String,
    /// `profile_export.jsonl`, when the shard kept its records.
    records: Option<PathBuf>,
    /// The mergeable summary (`profile_export_aiperf_hdr.json`), when there is one.
    hdr: Option<PathBuf>,
}

/// Reads a shard directory's summary and checks it is a shard.
fn read_shard(dir: &Path) -> Result<ShardDir, MergeError> {
    let json = dir.join(export::JSON_FILE);
    let text = match std::fs::read_to_string(&json) {
        Ok(t) => t,
        Err(e) => {
            return err(format!(
                "{}: cannot read {} ({e}): is it a shard's artifact directory?",
                dir.display(),
                export::JSON_FILE
            ))
        }
    };
    let summary: Value = serde_json::from_str(&text)
        .map_err(|e| input(format!("{} is not valid JSON: {e}", json.display())))?;
    let shard = summary.get("shard").filter(|s| s.is_object());
    let (Some(index), Some(count)) = (
        shard.and_then(|s| s["index"].as_u64()),
        shard.and_then(|s| s["count"].as_u64()),
    ) else {
        return err(format!(
            "{}: not a shard (its {} has no shard section: it was not run with --shard I/N)",
            dir.display(),
            export::JSON_FILE
        ));
    };
    let run_id = shard
        .and_then(|s| s["run_id"].as_str())
        .unwrap_or_default()
        .to_string();
    let records = Some(dir.join(export::JSONL_FILE)).filter(|p| p.is_file());
    let hdr = Some(dir.join(export::hdr_file_name(export::JSON_FILE))).filter(|p| p.is_file());
    if records.is_none() && hdr.is_none() {
        return err(format!(
            "{}: neither {} (run with --export-level summary?) nor {}: merging needs every \
             shard's per-request records or its mergeable summary",
            dir.display(),
            export::JSONL_FILE,
            export::hdr_file_name(export::JSON_FILE)
        ));
    }
    let (index, count) = (
        u32::try_from(index).unwrap_or(u32::MAX),
        u32::try_from(count).unwrap_or(u32::MAX),
    );
    Ok(ShardDir {
        dir: dir.to_path_buf(),
        summary,
        index,
        count,
        run_id,
        records,
        hdr,
    })
}

/// Reads every directory and checks they are exactly the shards of one run; returns them
/// in shard order.
pub fn check_set(dirs: &[PathBuf]) -> Result<Vec<ShardDir>, MergeError> {
    if dirs.is_empty() {
        return err("aiperf merge needs the shards' artifact directories");
    }
    let mut shards = dirs
        .iter()
        .map(|d| read_shard(d))
        .collect::<Result<Vec<_>, _>>()?;
    let first = &shards[0];
    for s in &shards[1..] {
        if s.run_id != first.run_id {
            return err(format!(
                "{} and {} are shards of different runs (run id {} and {})",
                first.dir.display(),
                s.dir.display(),
                first.run_id,
                s.run_id
            ));
        }
        if s.count != first.count {
            return err(format!(
                "{} is shard {}/{} but {} is shard {}/{}: not the same split",
                first.dir.display(),
                first.index,
                first.count,
                s.dir.display(),
                s.index,
                s.count
            ));
        }
    }
    let n = first.count;
    let mut by_index: BTreeMap<u32, &ShardDir> = BTreeMap::new();
    for s in &shards {
        if s.index >= n {
            return err(format!(
                "{}: shard index {} is not below its count {n}",
                s.dir.display(),
                s.index
            ));
        }
        if let Some(other) = by_index.insert(s.index, s) {
            return err(format!(
                "shard {}/{n} is given twice: {} and {}",
                s.index,
                other.dir.display(),
                s.dir.display()
            ));
        }
    }
    let missing: Vec<String> = (0..n)
        .filter(|i| !by_index.contains_key(i))
        .map(|i| i.to_string())
        .collect();
    if !missing.is_empty() {
        return err(format!(
            "run {}: {} of {n} shards given; missing shard{} {}",
            first.run_id,
            by_index.len(),
            if missing.len() > 1 { "s" } else { "" },
            missing.join(", ")
        ));
    }
    shards.sort_by_key(|s| s.index);
    Ok(shards)
}

/// A record's metric values (and the lags its metadata holds) back into the metrics a run
/// computed for it. `start_ns` is the record's wall-clock start; the end is recovered from
/// the request latency (which a run computes from the same two nanosecond times, so the
/// round trip is exact).
pub fn metrics_of(
    m: &Map<String, Value>,
    md: &Map<String, Value>,
    start_ns: u64,
) -> RequestMetrics {
    let v = |t: &str| m.get(t).and_then(|e| e.get("value"));
    let f = |t: &str| v(t).and_then(Value::as_f64);
    let u = |t: &str| v(t).and_then(Value::as_u64);
    let latency_ms = f("request_latency").unwrap_or(0.0);
    let http = f("http_req_total").map(|total_ms| HttpMetrics {
        blocked_ms: f("http_req_blocked").unwrap_or(0.0),
        dns_ms: f("http_req_dns_lookup").unwrap_or(0.0),
        connecting_ms: f("http_req_connecting").unwrap_or(0.0),
        sending_ms: f("http_req_sending").unwrap_or(0.0),
        waiting_ms: f("http_req_waiting").unwrap_or(0.0),
        receiving_ms: f("http_req_receiving").unwrap_or(0.0),
        duration_ms: f("http_req_duration").unwrap_or(0.0),
        overhead_ms: f("http_req_connection_overhead").unwrap_or(0.0),
        total_ms,
        reused: u("http_req_connection_reused") == Some(1),
        sent_kb: f("http_req_data_sent").unwrap_or(0.0),
        received_kb: f("http_req_data_received").unwrap_or(0.0),
        chunks_sent: u("http_req_chunks_sent").map_or(0, |c| u32::try_from(c).unwrap_or(u32::MAX)),
        chunks_received: u("http_req_chunks_received")
            .map_or(0, |c| u32::try_from(c).unwrap_or(u32::MAX)),
    });
    RequestMetrics {
        ttft_ms: f("time_to_first_token"),
        ttst_ms: f("time_to_second_token"),
        ttfo_ms: f("time_to_first_output_token"),
        latency_ms,
        itl_ms: f("inter_token_latency"),
        icl_ms: v("inter_chunk_latency")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default(),
        tps_per_user: f("output_token_throughput_per_user"),
        osl: u("output_sequence_length").unwrap_or(0),
        reasoning_tokens: u("reasoning_token_count").unwrap_or(0),
        isl: u("input_sequence_length").unwrap_or(0),
        end_ns: start_ns.saturating_add((latency_ms * 1e6).round().max(0.0) as u64),
        send_lag_ms: md.get("send_lag_ms").and_then(Value::as_f64),
        read_lag_ms: md.get("read_lag_ms").and_then(Value::as_f64),
        // Not in the records: the shards' counts are summed instead.
        count_mismatch: false,
        good: u("good_request_count").map(|g| g == 1),
        decode_ms: f("decode_duration"),
        e2e_tps: f("e2e_output_token_throughput"),
        prefill_tps: f("prefill_throughput_per_user"),
        output_tokens: u("output_token_count"),
        usage: Usage {
            prompt_tokens: u("usage_prompt_tokens"),
            completion_tokens: u("usage_completion_tokens"),
            total_tokens: u("usage_total_tokens"),
        },
        usage_prompt_diff_pct: f("usage_prompt_tokens_diff_pct"),
        usage_completion_diff_pct: f("usage_completion_tokens_diff_pct"),
        usage_discrepancy: None,
        osl_mismatch_diff_pct: f("osl_mismatch_diff_pct"),
        osl_mismatch: None,
        http,
    }
}

/// What the accumulator needs of a record besides its metrics.
fn record_of(phase: PhaseKind, md: &Value, error: Option<ErrorDetails>) -> RequestRecord {
    let n = |k: &str| md.get(k).and_then(Value::as_u64);
    RequestRecord {
        phase,
        request_index: n("session_num").unwrap_or(0),
        conversation_index: 0,
        turn_index: n("turn_index").map_or(0, |t| u32::try_from(t).unwrap_or(u32::MAX)),
        url_index: n("url_index").map_or(0, |u| usize::try_from(u).unwrap_or(usize::MAX)),
        streaming: false,
        start_ns: n("request_start_ns").unwrap_or(0),
        scheduled_ns: n("scheduled_ns"),
        ack_ns: n("request_ack_ns"),
        end_ns: n("request_end_ns").unwrap_or(0),
        content_ns: Vec::new(),
        first_output_ns: None,
        output_text: String::new(),
        reasoning_text: String::new(),
        usage: None,
        isl: 0,
        error,
        cancelled: md.get("was_cancelled").and_then(Value::as_bool) == Some(true),
        requested_osl: None,
        ids: RequestIds::default(),
        http: Default::default(),
    }
}

fn error_of(e: &Value) -> Option<ErrorDetails> {
    if !e.is_object() {
        return None;
    }
    Some(ErrorDetails {
        code: e
            .get("code")
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok()),
        kind: e
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("error")
            .to_string(),
        message: e
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    })
}

/// The goodput objectives of the run (`input_config.input.goodput`: `{tag: threshold}`), so
/// the merged summary has the goodput metrics when the shards had them.
fn goodput_of(input_config: &Value) -> Option<Arc<crate::metrics::Goodput>> {
    let g = input_config.pointer("/input/goodput")?.as_object()?;
    let text: Vec<String> = g
        .iter()
        .filter_map(|(k, v)| Some(format!("{k}:{}", v.as_f64()?)))
        .collect();
    crate::metrics::goodput::parse(&text.join(" "))
        .ok()
        .map(Arc::new)
}

/// Every shard's records through one accumulator per phase, and the output's JSONL (the
/// shards' lines, in shard order, byte for byte).
fn accumulate(
    shards: &[ShardDir],
    goodput: Option<Arc<crate::metrics::Goodput>>,
    jsonl_out: &mut impl Write,
) -> Result<BTreeMap<PhaseKind, PhaseAccumulator>, MergeError> {
    let mut acc: BTreeMap<PhaseKind, PhaseAccumulator> = BTreeMap::new();
    let empty_map = Map::new();
    for s in shards {
        let Some(path) = &s.records else {
            return err(format!("{}: no {}", s.dir.display(), export::JSONL_FILE));
        };
        let f = std::fs::File::open(path)
            .map_err(|e| input(format!("cannot read {}: {e}", path.display())))?;
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let where_ = || format!("{}:{}", path.display(), i + 1);
            let line = line.map_err(|e| input(format!("cannot read {}: {e}", where_())))?;
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&line)
                .map_err(|e| input(format!("{} is not a record: {e}", where_())))?;
            let md = v
                .get("metadata")
                .filter(|m| m.is_object())
                .ok_or_else(|| input(format!("{}: a record without metadata", where_())))?;
            let md_map = md.as_object().unwrap_or(&empty_map);
            let phase = match md.get("benchmark_phase").and_then(Value::as_str) {
                Some("warmup") => PhaseKind::Warmup,
                _ => PhaseKind::Profiling,
            };
            let a = acc
                .entry(phase)
                .or_insert_with(|| PhaseAccumulator::new(goodput.clone()));
            match v.get("error").and_then(error_of) {
                Some(e) => {
                    let rec = record_of(phase, md, Some(e.clone()));
                    a.add_error(&rec, &e);
                }
                None => {
                    let rec = record_of(phase, md, None);
                    let m = v
                        .get("metrics")
                        .and_then(Value::as_object)
                        .unwrap_or(&empty_map);
                    a.add_success(&rec, &metrics_of(m, md_map, rec.start_ns));
                }
            }
            jsonl_out
                .write_all(line.as_bytes())
                .and_then(|()| jsonl_out.write_all(b"\n"))
                .map_err(|e| MergeError::Write("cannot write the merged records".into(), e))?;
        }
    }
    Ok(acc)
}

/// The sum over shards of an aggregate's value in the summary (`None` when no shard has it).
fn summed(shards: &[ShardDir], pointer: &str) -> Option<u64> {
    let vals: Vec<u64> = shards
        .iter()
        .filter_map(|s| s.summary.pointer(pointer)?.as_f64())
        .map(|v| v.max(0.0).round() as u64)
        .collect();
    (!vals.is_empty()).then(|| vals.iter().sum())
}

fn phase_summary(
    acc: Option<PhaseAccumulator>,
    shards: &[ShardDir],
    prefix: &str,
) -> Option<PhaseSummary> {
    let mut a = acc?;
    a.usage_discrepancies = summed(shards, &format!("{prefix}/usage_discrepancy_count/avg"));
    a.osl_mismatches = summed(shards, &format!("{prefix}/osl_mismatch_count/avg"));
    Some(a.summarize())
}

/// The phases' stats, summed over shards: counts added, the earliest start, the latest end.
fn merged_phase_stats(shards: &[ShardDir]) -> BTreeMap<PhaseKind, aiperf_plugin::PhaseStats> {
    let mut out: BTreeMap<PhaseKind, aiperf_plugin::PhaseStats> = BTreeMap::new();
    for s in shards {
        let Some(map) = s.summary.get("phase_stats").and_then(Value::as_object) else {
            continue;
        };
        for (k, v) in map {
            let kind = if k == "warmup" {
                PhaseKind::Warmup
            } else {
                PhaseKind::Profiling
            };
            let Ok(p) = serde_json::from_value::<aiperf_plugin::PhaseStats>(v.clone()) else {
                continue;
            };
            match out.get_mut(&kind) {
                None => {
                    out.insert(kind, p);
                }
                Some(m) => {
                    m.sent += p.sent;
                    m.completed += p.completed;
                    m.errors += p.errors;
                    m.cancelled += p.cancelled;
                    m.in_flight += p.in_flight;
                    m.expected = m.expected.zip(p.expected).map(|(a, b)| a + b);
                    m.start_time_ns = m.start_time_ns.min(p.start_time_ns);
                    m.sending_complete_time_ns =
                        m.sending_complete_time_ns.max(p.sending_complete_time_ns);
                    m.end_time_ns = m.end_time_ns.max(p.end_time_ns);
                    m.timed_out |= p.timed_out;
                    m.late_sends += p.late_sends;
                    m.max_send_lag_ms = match (m.max_send_lag_ms, p.max_send_lag_ms) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    };
                }
            }
        }
    }
    for p in out.values_mut() {
        if let Some(e) = p.end_time_ns {
            p.duration_sec = e.saturating_sub(p.start_time_ns) as f64 / 1e9;
        }
    }
    out
}

/// One verdict for the run: `ok` only when every shard's is; the reasons name the shard.
/// The figures are the worst shard's (lags, CPU), the cores added up.
fn merged_health(shards: &[ShardDir]) -> ClientHealth {
    let h = |s: &ShardDir, p: &str| s.summary.pointer(&format!("/client_health/{p}")).cloned();
    let max = |p: &str| {
        shards
            .iter()
            .filter_map(|s| h(s, p)?.as_f64())
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
    };
    let mut reasons = Vec::new();
    let mut notes = Vec::new();
    for s in shards {
        let said = |p: &str| -> Vec<String> {
            h(s, p)
                .and_then(|r| serde_json::from_value::<Vec<String>>(r).ok())
                .unwrap_or_default()
        };
        notes.extend(
            said("notes")
                .into_iter()
                .map(|n| format!("shard {}/{}: {n}", s.index, s.count)),
        );
        let verdict = h(s, "verdict");
        if verdict.as_ref().and_then(Value::as_str) != Some("ok") {
            let why = said("reasons");
            reasons.push(format!(
                "shard {}/{}: {}",
                s.index,
                s.count,
                if why.is_empty() {
                    "no verdict".to_string()
                } else {
                    why.join("; ")
                }
            ));
        }
    }
    ClientHealth {
        verdict: if reasons.is_empty() {
            Verdict::Ok
        } else {
            Verdict::ClientMayBeTheBottleneck
        },
        reasons,
        notes,
        runtime_lag_ms: RuntimeLag {
            p50: max("runtime_lag_ms/p50"),
            p99: max("runtime_lag_ms/p99"),
            max: max("runtime_lag_ms/max"),
            samples: shards
                .iter()
                .filter_map(|s| h(s, "runtime_lag_ms/samples")?.as_u64())
                .sum::<u64>() as usize,
        },
        send_lag_p99_ms: max("send_lag_p99_ms"),
        read_lag_p99_ms: max("read_lag_p99_ms"),
        process_cpu_percent: max("process_cpu_percent"),
        process_cpu_percent_of_machine: max("process_cpu_percent_of_machine"),
        machine_cpu_busy_percent: max("machine_cpu_busy_percent"),
        cores: shards.iter().filter_map(|s| h(s, "cores")?.as_f64()).sum(),
        worker_threads: shards
            .iter()
            .map(|s| h(s, "worker_threads")?.as_u64().map(|n| n as usize))
            .sum(),
    }
}

/// A shard's mergeable summary, read.
fn read_hdr(s: &ShardDir) -> Result<Value, MergeError> {
    let Some(path) = &s.hdr else {
        return err(format!("{}: no mergeable summary", s.dir.display()));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| input(format!("cannot read {}: {e}", path.display())))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| input(format!("{} is not valid JSON: {e}", path.display())))?;
    if v.get("run_id").and_then(Value::as_str) != Some(s.run_id.as_str()) {
        return err(format!(
            "{}: its run id is not the shard's ({}): not this run's summary",
            path.display(),
            s.run_id
        ));
    }
    Ok(v)
}

/// A phase merged from the shards' mergeable summaries (no records): per-request metrics
/// from the added histograms (`metrics::hdr`'s error bound), counts summed from the shards'
/// reports, throughputs over the merged phase window, errors united. `None` when no shard
/// had the phase.
fn hdr_phase(
    shards: &[ShardDir],
    hdrs: &[Value],
    phase: &str,
    prefix: &str,
    window: Option<&aiperf_plugin::PhaseStats>,
) -> Option<PhaseSummary> {
    use crate::metrics::hdr::MetricHdr;
    use crate::metrics::{MetricKind, MetricSummary, MetricValue, METRICS};
    let mut by_tag: BTreeMap<String, MetricHdr> = BTreeMap::new();
    let mut seen = false;
    for doc in hdrs {
        let Some(p) = doc.pointer(&format!("/phases/{phase}")) else {
            continue;
        };
        seen = true;
        let Ok(map) = serde_json::from_value::<BTreeMap<String, MetricHdr>>(p.clone()) else {
            continue;
        };
        for (tag, h) in map {
            match by_tag.get_mut(&tag) {
                Some(m) => m.merge(&h),
                None => {
                    by_tag.insert(tag, h);
                }
            }
        }
    }
    if !seen {
        return None;
    }
    let mut metrics = Vec::new();
    for info in METRICS.iter().filter(|m| m.kind != MetricKind::Aggregate) {
        if let Some(stats) = by_tag.get(info.tag).and_then(MetricHdr::stats) {
            metrics.push(MetricSummary {
                info,
                stats: MetricValue::Stats(stats),
            });
        }
    }
    let sum = |tag: &str| -> Option<f64> {
        let vals: Vec<f64> = shards
            .iter()
            .filter_map(|s| s.summary.pointer(&format!("{prefix}/{tag}/avg"))?.as_f64())
            .collect();
        (!vals.is_empty()).then(|| vals.iter().sum())
    };
    let duration = window
        .and_then(|w| Some(w.end_time_ns?.saturating_sub(w.start_time_ns) as f64 / 1e9))
        .filter(|d| *d > 0.0);
    let success = sum("request_count").unwrap_or(0.0);
    let errors = sum("error_request_count").unwrap_or(0.0);
    let completed = success + errors;
    let osl = sum("total_output_tokens").unwrap_or(0.0);
    let isl = sum("total_input_tokens").unwrap_or(0.0);
    let good = sum("good_request_count");
    let per_s = |v: f64| duration.map(|d| v / d);
    for info in METRICS.iter().filter(|m| m.kind == MetricKind::Aggregate) {
        let v = match info.tag {
            "output_token_throughput" => per_s(osl),
            "input_token_throughput" => per_s(isl),
            "total_token_throughput" => per_s(isl + osl),
            "request_throughput" => per_s(success),
            "benchmark_duration" => duration,
            "completed_request_count" => (completed > 0.0).then_some(completed),
            "request_error_rate" => (completed > 0.0).then(|| 100.0 * errors / completed),
            "goodput" => good.and_then(per_s),
            "good_request_fraction" => {
                good.map(|g| if completed > 0.0 { g / completed } else { 0.0 })
            }
            tag => sum(tag),
        };
        if let Some(v) = v {
            metrics.push(MetricSummary {
                info,
                stats: MetricValue::Avg(v),
            });
        }
    }
    let mut error_counts: BTreeMap<ErrorDetails, u64> = BTreeMap::new();
    let mut per_url: BTreeMap<usize, (u64, u64)> = BTreeMap::new();
    for s in shards {
        let base = if prefix.is_empty() {
            Some(&s.summary)
        } else {
            s.summary.pointer(prefix)
        };
        for e in base
            .and_then(|b| b.get("error_summary"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(d) = e.get("error_details").and_then(error_of) {
                let n = e.get("count").and_then(Value::as_u64).unwrap_or(0);
                *error_counts.entry(d).or_insert(0) += n;
            }
        }
        if prefix.is_empty() {
            let urls = s.summary.get("per_url").and_then(Value::as_array);
            for (i, u) in urls.into_iter().flatten().enumerate() {
                let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
                let e = per_url.entry(i).or_default();
                e.0 += n("request_count");
                e.1 += n("error_request_count");
            }
        }
    }
    let mut errors_list: Vec<(ErrorDetails, u64)> = error_counts.into_iter().collect();
    errors_list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Some(PhaseSummary {
        metrics,
        errors: errors_list,
        success: success as u64,
        error_count: errors as u64,
        cancelled: window.map_or(0, |w| w.cancelled),
        per_url,
        count_mismatches: 0,
        hdr: BTreeMap::new(),
    })
}

/// The merged run, ready to write: its report and the shards it came from.
pub struct Merged {
    pub report: RunReport,
    pub shards: Vec<ShardDir>,
}

/// Merges `dirs` into `output`: `profile_export_aiperf.json` and `.csv`, the concatenated
/// `profile_export.jsonl`, the console text; the caller adds the HTML report and the hooks.
pub fn merge(dirs: &[PathBuf], output: &Path) -> Result<Merged, MergeError> {
    let shards = check_set(dirs)?;
    for s in &shards {
        let same = std::fs::canonicalize(&s.dir).ok() == std::fs::canonicalize(output).ok();
        if same {
            return err(format!(
                "--output {} is one of the shards: choose a new directory",
                output.display()
            ));
        }
    }
    std::fs::create_dir_all(output)
        .map_err(|e| MergeError::Write(format!("cannot create {}", output.display()), e))?;
    let first = &shards[0].summary;
    let mut input_config = first.get("input_config").cloned().unwrap_or(Value::Null);
    if let Some(o) = input_config
        .pointer_mut("/output")
        .and_then(Value::as_object_mut)
    {
        o.insert(
            "artifact_directory".into(),
            json!(output.display().to_string()),
        );
    }
    let goodput = goodput_of(&input_config);
    let phase_stats = merged_phase_stats(&shards);
    let exact = shards.iter().all(|s| s.records.is_some());
    let (profiling, warmup) = if exact {
        let names = ArtifactNames::new(None);
        let jsonl_path = output.join(&names.jsonl);
        let tmp = output.join(format!(".{}.tmp", names.jsonl));
        let file = std::fs::File::create(&tmp)
            .map_err(|e| MergeError::Write(format!("cannot write {}", tmp.display()), e))?;
        let mut w = std::io::BufWriter::new(file);
        let mut acc = accumulate(&shards, goodput, &mut w)?;
        w.flush()
            .and_then(|()| std::fs::rename(&tmp, &jsonl_path))
            .map_err(|e| MergeError::Write(format!("cannot write {}", jsonl_path.display()), e))?;
        (
            phase_summary(acc.remove(&PhaseKind::Profiling), &shards, "").unwrap_or_default(),
            phase_summary(acc.remove(&PhaseKind::Warmup), &shards, "/warmup"),
        )
    } else {
        if let Some(s) = shards.iter().find(|s| s.hdr.is_none()) {
            return err(format!(
                "{}: no {} and no {}: with shards that kept no records, every shard needs its \
                 mergeable summary",
                s.dir.display(),
                export::JSONL_FILE,
                export::hdr_file_name(export::JSON_FILE)
            ));
        }
        let hdrs = shards.iter().map(read_hdr).collect::<Result<Vec<_>, _>>()?;
        (
            hdr_phase(
                &shards,
                &hdrs,
                "profiling",
                "",
                phase_stats.get(&PhaseKind::Profiling),
            )
            .unwrap_or_default(),
            hdr_phase(
                &shards,
                &hdrs,
                "warmup",
                "/warmup",
                phase_stats.get(&PhaseKind::Warmup),
            ),
        )
    };
    let text = |s: &ShardDir, k: &str| s.summary.get(k).and_then(Value::as_str).map(String::from);
    let start_time = shards.iter().filter_map(|s| text(s, "start_time")).min();
    let end_time = shards.iter().filter_map(|s| text(s, "end_time")).max();
    let urls: Vec<String> = first
        .get("per_url")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|u| u.get("url")?.as_str().map(String::from))
        .collect();
    let mut warnings = Vec::new();
    let mut seen = BTreeSet::new();
    for s in &shards {
        for w in s
            .summary
            .get("warnings")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if seen.insert(w.to_string()) {
                warnings.push(format!("shard {}/{}: {w}", s.index, s.count));
            }
        }
    }
    let client_health = merged_health(&shards);
    let shard_list: Vec<Value> = shards
        .iter()
        .map(|s| {
            json!({
                "index": s.index,
                "dir": s.dir.display().to_string(),
                "benchmark_id": s.summary.get("benchmark_id"),
                "start_late_ms": s.summary.pointer("/shard/start_late_ms"),
                "request_count": s.summary.pointer("/request_count/avg"),
                "error_request_count": s.summary.pointer("/error_request_count/avg"),
                "client_health": s.summary.pointer("/client_health/verdict"),
            })
        })
        .collect();
    let report = RunReport {
        benchmark_id: shards[0].run_id.clone(),
        input_config,
        profiling,
        warmup,
        was_cancelled: shards
            .iter()
            .any(|s| s.summary.get("was_cancelled").and_then(Value::as_bool) == Some(true)),
        start_time: start_time.unwrap_or_default(),
        end_time: end_time.unwrap_or_default(),
        urls,
        warnings,
        plugins: PluginsReport::default(),
        phase_stats,
        client_health,
        // Every shard scraped the same server: shard 0's view (the others' are in their
        // directories).
        server_metrics: first.get("server_metrics").cloned(),
        gpu_telemetry: first.get("gpu_telemetry").cloned(),
        shard: Some(json!({
            "merged": true,
            "count": shards[0].count,
            "run_id": shards[0].run_id,
            "from": if exact { "records" } else { "hdr" },
            "shards": shard_list,
        })),
    };
    Ok(Merged { report, shards })
}

/// Writes the merged report's JSON, CSV and console text into `output`.
pub fn write(output: &Path, m: &Merged, console: &str) -> Result<(), MergeError> {
    let names = ArtifactNames::new(None);
    export::write_reports(output, &names, &m.report)
        .and_then(|()| export::write_console_text(output, &names, console))
        .map_err(|e| MergeError::Write(format!("cannot write into {}", output.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard_dir(root: &Path, name: &str, index: u32, count: u32, run: &str) -> PathBuf {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join(export::JSON_FILE),
            json!({"shard": {"index": index, "count": count, "run_id": run}}).to_string(),
        )
        .unwrap();
        std::fs::write(d.join(export::JSONL_FILE), "").unwrap();
        d
    }

    #[test]
    fn a_set_of_shards_must_be_one_whole_run() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let a = shard_dir(r, "a", 0, 3, "run1");
        let b = shard_dir(r, "b", 1, 3, "run1");
        let c = shard_dir(r, "c", 2, 3, "run1");
        let set = check_set(&[c.clone(), a.clone(), b.clone()]).unwrap();
        assert_eq!(set.iter().map(|s| s.index).collect::<Vec<_>>(), [0, 1, 2]);
        let e = check_set(&[a.clone(), c.clone()]).unwrap_err().message();
        assert!(e.contains("missing shard 1"), "{e}");
        let e = check_set(&[a.clone(), b.clone(), b.clone()])
            .unwrap_err()
            .message();
        assert!(e.contains("shard 1/3 is given twice"), "{e}");
        let other = shard_dir(r, "other", 1, 3, "run2");
        let e = check_set(&[a.clone(), other, c.clone()])
            .unwrap_err()
            .message();
        assert!(e.contains("different runs") && e.contains("run2"), "{e}");
        let four = shard_dir(r, "four", 1, 4, "run1");
        let e = check_set(&[a.clone(), four]).unwrap_err().message();
        assert!(e.contains("not the same split"), "{e}");
        let plain = r.join("plain");
        std::fs::create_dir_all(&plain).unwrap();
        std::fs::write(plain.join(export::JSON_FILE), "{}").unwrap();
        let e = check_set(&[a.clone(), plain]).unwrap_err().message();
        assert!(e.contains("not a shard"), "{e}");
        let e = check_set(&[r.join("nowhere")]).unwrap_err().message();
        assert!(e.contains("cannot read"), "{e}");
        std::fs::remove_file(b.join(export::JSONL_FILE)).unwrap();
        let e = check_set(&[a, b, c]).unwrap_err().message();
        assert!(e.contains("per-request records"), "{e}");
    }

    /// A record's metrics, written as the JSONL writes them and read back, are the metrics
    /// the run computed (every field the records carry).
    #[test]
    fn records_read_back_into_the_metrics_the_run_computed() {
        let m = RequestMetrics {
            ttft_ms: Some(20.123456789),
            ttst_ms: Some(5.5),
            ttfo_ms: Some(20.2),
            latency_ms: 95.000123,
            itl_ms: Some(5.0000001),
            icl_ms: vec![5.1, 4.9],
            tps_per_user: Some(199.9),
            osl: 16,
            reasoning_tokens: 2,
            isl: 128,
            end_ns: 1_000_000_000 + 95_000_123,
            send_lag_ms: Some(0.25),
            read_lag_ms: Some(0.125),
            count_mismatch: false,
            good: Some(true),
            decode_ms: Some(74.9),
            e2e_tps: Some(168.4),
            prefill_tps: Some(6360.0),
            output_tokens: Some(14),
            usage: Usage {
                prompt_tokens: Some(128),
                completion_tokens: Some(16),
                total_tokens: Some(144),
            },
            usage_prompt_diff_pct: Some(0.0),
            usage_completion_diff_pct: Some(0.0),
            usage_discrepancy: None,
            osl_mismatch_diff_pct: Some(0.0),
            osl_mismatch: None,
            http: Some(HttpMetrics {
                blocked_ms: 0.01,
                dns_ms: 0.0,
                connecting_ms: 0.2,
                sending_ms: 0.03,
                waiting_ms: 19.0,
                receiving_ms: 76.0,
                duration_ms: 95.03,
                overhead_ms: 0.21,
                total_ms: 95.24,
                reused: true,
                sent_kb: 1.5,
                received_kb: 3.25,
                chunks_sent: 1,
                chunks_received: 17,
            }),
        };
        let line = crate::export::jsonl::success_metrics_json(&m);
        let md = serde_json::json!({"send_lag_ms": 0.25, "read_lag_ms": 0.125});
        let back = metrics_of(
            line.as_object().unwrap(),
            md.as_object().unwrap(),
            1_000_000_000,
        );
        assert_eq!(back, m);
    }

    /// The merged verdict is ok only when every shard's is; reasons and notes keep the shard
    /// that said them, and the figures are the worst shard's.
    #[test]
    fn merged_health_keeps_each_shards_reasons_and_notes() {
        let shard = |index: u32, health: Value| ShardDir {
            dir: PathBuf::new(),
            summary: json!({ "client_health": health }),
            index,
            count: 2,
            run_id: "run1".into(),
            records: None,
            hdr: None,
        };
        let noted = json!({"verdict": "ok", "reasons": [], "notes": ["late reads cost little"],
                           "read_lag_p99_ms": 1.4, "cores": 2.0, "worker_threads": 2});
        let bad = json!({"verdict": "client_may_be_the_bottleneck",
                         "reasons": ["requests left late"], "notes": [],
                         "read_lag_p99_ms": 0.3, "cores": 2.0, "worker_threads": 1});
        let h = merged_health(&[shard(0, noted.clone()), shard(1, bad)]);
        assert_eq!(h.verdict, Verdict::ClientMayBeTheBottleneck);
        assert_eq!(h.reasons, ["shard 1/2: requests left late"]);
        assert_eq!(h.notes, ["shard 0/2: late reads cost little"]);
        assert_eq!(h.read_lag_p99_ms, Some(1.4));
        assert_eq!(h.cores, 4.0);
        assert_eq!(h.worker_threads, Some(3));
        // A shard from before notes existed has none.
        let old = json!({"verdict": "ok", "reasons": []});
        let h = merged_health(&[shard(0, noted), shard(1, old)]);
        assert!(h.ok());
        assert_eq!(h.notes, ["shard 0/2: late reads cost little"]);
        assert_eq!(h.worker_threads, None, "one shard did not say");
    }
}
