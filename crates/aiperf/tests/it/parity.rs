//! Parity with Python AIPerf 0.13, against the artifacts it recorded on the same settings
//! (`tests/parity/`: `record.sh` made them against this tool's mock, `cases.sh` lists the
//! cases, `aiperf-0.13/<case>/` holds the recordings and the command of each).
//!
//! For each case this tool runs the same arguments against its built-in mock (the same
//! TTFT 20 ms / ITL 5 ms server AIPerf measured), with the same local tokenizer, and:
//! - every key AIPerf wrote exists here, with the same unit and stat keys: the JSON's
//!   metrics and top-level keys, the CSV's rows in each of its sections, the JSONL's
//!   metadata fields and metrics; or it is listed, with the reason, in `docs/metrics.md`'s
//!   table of deliberate differences (and a listed key that exists here is an error: the
//!   list cannot go stale);
//! - the values mean the same: request counts and good-request counts equal AIPerf's, the
//!   (conversation, turn) pairs sent equal AIPerf's (request counting on multi-turn files),
//!   OSL/ISL as AIPerf counted them, TTFT and ITL at the mock's 20 ms and 5 ms;
//! - `read_aiperf.py`, a user's script written against AIPerf's files, runs unchanged on
//!   both and prints the same fields.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{self, Output, Run};

fn parity_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity")
}

/// The cases of `cases.sh`: `"NAME:ARGS"` lines.
fn cases() -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(parity_dir().join("cases.sh")).unwrap();
    let cases: Vec<_> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix('"')?.strip_suffix('"'))
        .map(|l| {
            let (name, args) = l.split_once(':').unwrap();
            let args = args.split_whitespace().map(str::to_string).collect();
            (name.to_string(), args)
        })
        .collect();
    assert!(cases.len() >= 5, "cases.sh lost its cases: {cases:?}");
    cases
}

/// `docs/metrics.md`'s deliberate differences: (where, key) → reason.
fn differences() -> BTreeMap<(String, String), String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/metrics.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let start = doc
        .find("<!-- parity-differences:begin -->")
        .expect("docs/metrics.md: parity-differences markers");
    let end = doc.find("<!-- parity-differences:end -->").unwrap();
    let mut out = BTreeMap::new();
    for line in doc[start..end].lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        assert_eq!(cells.len(), 3, "a row is `| `key` | where | why |`: {line}");
        let key = cells[0].trim_matches('`').to_string();
        for place in cells[1].split(", ") {
            assert!(
                ["json", "csv", "jsonl metadata", "jsonl metric"].contains(&place),
                "unknown place {place:?} in {line}"
            );
            assert!(cells[2].len() > 10, "a difference needs its reason: {line}");
            out.insert((place.to_string(), key.clone()), cells[2].to_string());
        }
    }
    out
}

fn run_case(args: &[String]) -> Output {
    let dir = parity_dir();
    let tokenizer = dir.join("tokenizer/tokenizer.json");
    let mut all = vec![
        "-m".to_string(),
        "parity-model".into(),
        "--url".into(),
        "mock".into(),
        "--tokenizer".into(),
        tokenizer.display().to_string(),
        "--random-seed".into(),
        "1".into(),
    ];
    all.extend(args.iter().cloned());
    let out = Run::profile(&all).current_dir(&dir).run();
    out.ok();
    out
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The CSV's sections: header → row names.
fn csv_sections(text: &str) -> Vec<(String, BTreeSet<String>)> {
    let mut out: Vec<(String, BTreeSet<String>)> = Vec::new();
    let mut in_section = false;
    for line in text.lines() {
        if line.trim().is_empty() {
            in_section = false;
            continue;
        }
        let name = match line.strip_prefix('"') {
            Some(rest) => rest.split('"').next().unwrap_or("").to_string(),
            None => line.split(',').next().unwrap_or("").to_string(),
        };
        if !in_section {
            out.push((line.to_string(), BTreeSet::new()));
            in_section = true;
        } else if let Some(last) = out.last_mut() {
            last.1.insert(name);
        }
    }
    out
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn avg(v: &Value, tag: &str) -> f64 {
    v[tag]["avg"]
        .as_f64()
        .unwrap_or_else(|| panic!("{tag}.avg in {v}"))
}

/// What is missing here, per case; `used` collects the differences that excused something.
fn compare(
    case: &str,
    golden: &Path,
    ours: &Path,
    diffs: &BTreeMap<(String, String), String>,
    used: &mut BTreeSet<(String, String)>,
) -> Vec<String> {
    let mut missing = Vec::new();
    let mut check = |place: &str, key: &str, present: bool, detail: String| {
        let k = (place.to_string(), key.to_string());
        if diffs.contains_key(&k) {
            used.insert(k.clone());
            if present {
                missing.push(format!(
                    "{case}: {place} `{key}` exists here but is listed as a difference in docs/metrics.md"
                ));
            }
        } else if !present {
            missing.push(format!("{case}: {place} `{key}` missing"));
        } else if !detail.is_empty() {
            missing.push(format!("{case}: {place} `{key}` {detail}"));
        }
    };

    // profile_export_aiperf.json
    let g = read_json(&golden.join("profile_export_aiperf.json"));
    let o = read_json(&ours.join("profile_export_aiperf.json"));
    for (key, gv) in g.as_object().unwrap() {
        let ov = &o[key];
        let present = !ov.is_null() || gv.is_null();
        let mut detail = String::new();
        if !present {
            detail = "missing".into();
        } else if let Some(unit) = gv.get("unit") {
            let gk: BTreeSet<&String> = gv.as_object().unwrap().keys().collect();
            let ok: BTreeSet<&String> = ov
                .as_object()
                .map(|m| m.keys().collect())
                .unwrap_or_default();
            if ov.get("unit") != Some(unit) {
                detail = format!("unit {:?} here, {unit} in AIPerf", ov.get("unit"));
            } else if gk != ok {
                detail = format!("stat keys {ok:?} here, {gk:?} in AIPerf");
            }
        }
        check("json", key, present, detail);
    }

    // profile_export_aiperf.csv
    let gc =
        csv_sections(&std::fs::read_to_string(golden.join("profile_export_aiperf.csv")).unwrap());
    let oc =
        csv_sections(&std::fs::read_to_string(ours.join("profile_export_aiperf.csv")).unwrap());
    for (i, (header, rows)) in gc.iter().enumerate() {
        let theirs = oc.iter().find(|(h, _)| h == header);
        if theirs.is_none() {
            check(
                "csv",
                header,
                false,
                format!("section header (section {i}) missing"),
            );
        }
        for row in rows {
            let present = oc.iter().any(|(_, r)| r.contains(row));
            let same_section = theirs.is_some_and(|(_, r)| r.contains(row));
            let detail = if present && !same_section {
                "in another section here".to_string()
            } else {
                String::new()
            };
            check(
                "csv",
                row,
                present,
                if present { detail } else { "missing".into() },
            );
        }
    }

    // profile_export.jsonl
    let gl = jsonl(&golden.join("profile_export.jsonl"));
    let ol = jsonl(&ours.join("profile_export.jsonl"));
    let keys = |lines: &[Value], part: &str| -> BTreeMap<String, Value> {
        let mut m = BTreeMap::new();
        for l in lines {
            for (k, v) in l[part].as_object().into_iter().flatten() {
                m.insert(k.clone(), v.get("unit").cloned().unwrap_or(Value::Null));
            }
        }
        m
    };
    let ometa = keys(&ol, "metadata");
    for k in keys(&gl, "metadata").keys() {
        check("jsonl metadata", k, ometa.contains_key(k), String::new());
    }
    let ometrics = keys(&ol, "metrics");
    for (k, unit) in keys(&gl, "metrics") {
        let detail = match ometrics.get(&k) {
            Some(u) if *u != unit => format!("unit {u} here, {unit} in AIPerf"),
            _ => String::new(),
        };
        check("jsonl metric", &k, ometrics.contains_key(&k), detail);
    }
    missing
}

/// The same meaning: values that do not depend on timing noise are equal to AIPerf's;
/// timed ones are at the mock's truth. Returns what differs.
fn same_meaning(case: &str, golden: &Path, ours: &Path) -> Vec<String> {
    let mut wrong = Vec::new();
    let g = read_json(&golden.join("profile_export_aiperf.json"));
    let o = read_json(&ours.join("profile_export_aiperf.json"));
    for tag in ["request_count", "good_request_count"] {
        if g.get(tag).is_some() && o[tag]["avg"] != g[tag]["avg"] {
            wrong.push(format!(
                "{case}: {tag} {} here, {} in AIPerf",
                o[tag]["avg"], g[tag]["avg"]
            ));
        }
    }
    // Which (conversation, turn) pairs were sent: AIPerf's request counting.
    let pairs = |lines: Vec<Value>| -> BTreeSet<(String, u64)> {
        lines
            .iter()
            .map(|l| {
                let m = &l["metadata"];
                (
                    m["conversation_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    m["turn_index"].as_u64().unwrap_or(u64::MAX),
                )
            })
            .collect()
    };
    if case.starts_with("multi_turn") {
        let (o_pairs, g_pairs) = (
            pairs(jsonl(&ours.join("profile_export.jsonl"))),
            pairs(jsonl(&golden.join("profile_export.jsonl"))),
        );
        if o_pairs != g_pairs {
            wrong.push(format!(
                "{case}: (conversation, turn) sent: {o_pairs:?} here, {g_pairs:?} in AIPerf"
            ));
        }
    } else if o["input_sequence_length"]["avg"] != g["input_sequence_length"]["avg"] {
        // Synthetic prompts: ISL exactly as asked, in both tools, by the same tokenizer.
        wrong.push(format!(
            "{case}: ISL {} here, {} in AIPerf",
            o["input_sequence_length"]["avg"], g["input_sequence_length"]["avg"]
        ));
    }
    let o_osl = avg(&o, "output_sequence_length");
    let g_osl = avg(&g, "output_sequence_length");
    if (o_osl - g_osl).abs() > 0.5 {
        wrong.push(format!("{case}: OSL {o_osl} here, {g_osl} in AIPerf"));
    }
    if let Some(ttft) = o.get("time_to_first_token") {
        let t = ttft["avg"].as_f64().unwrap_or(f64::NAN);
        if !(19.9..60.0).contains(&t) {
            wrong.push(format!("{case}: TTFT {t} ms against the mock's 20 ms"));
        }
        // The mock sends a token every 5 ms: the gap between content chunks. (ITL divides by
        // the tokenizer's count of the text, which need not be the mock's event count.)
        let icl = o["inter_chunk_latency"]["p50"].as_f64().unwrap_or(f64::NAN);
        if !(4.5..8.0).contains(&icl) {
            wrong.push(format!(
                "{case}: inter-chunk p50 {icl} ms against the mock's 5 ms"
            ));
        }
    }
    wrong
}

/// `read_aiperf.py` on AIPerf's recording and on this tool's output: both work, same fields.
fn script_runs_on_both(case: &str, golden: &Path, ours: &Path) {
    let script = parity_dir().join("read_aiperf.py");
    let names = |dir: &Path| -> Vec<String> {
        let out = std::process::Command::new("python3")
            .arg(&script)
            .arg(dir)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{case}: read_aiperf.py failed on {}:\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split('=').next().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(
        names(ours),
        names(golden),
        "{case}: fields read by the script"
    );
}

#[test]
fn artifacts_match_aiperf_0_13_recordings() {
    let _gate = support::shared();
    let diffs = differences();
    let mut used = BTreeSet::new();
    let mut problems = Vec::new();
    for (case, args) in cases() {
        let golden = parity_dir().join("aiperf-0.13").join(&case);
        let out = run_case(&args);
        problems.extend(compare(&case, &golden, &out.dir, &diffs, &mut used));
        problems.extend(same_meaning(&case, &golden, &out.dir));
        if let Err(e) = std::panic::catch_unwind(|| script_runs_on_both(&case, &golden, &out.dir)) {
            problems.push(format!("{case}: {e:?}"));
        }
    }
    let unused: Vec<_> = diffs.keys().filter(|k| !used.contains(*k)).collect();
    assert!(
        unused.is_empty(),
        "docs/metrics.md lists differences no recording has: {unused:?}"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
