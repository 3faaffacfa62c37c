//! Sweeps and repeated runs (docs/sweeps.md) on the built-in mock: a point directory per
//! point, each a complete run; `sweep_aggregate.json`/`.csv` whose rows match the points'
//! own reports; the repeated runs' aggregate against a hand computation; warmup once per
//! sweep; the plugins' view (`sweep_start`, each run's place, `sweep_complete`); bad lists.

use std::path::Path;

use serde_json::Value;

use crate::support::{self, config_error, write_file, Output, Run};

const MOCK: &str = "mock?ttft_ms=20&itl_ms=2";

fn sweep(extra: &[&str]) -> Output {
    let mut args = vec![
        "--url",
        MOCK,
        "--streaming",
        "--random-seed",
        "7",
        "--request-count",
        "4",
    ];
    args.extend_from_slice(extra);
    let out = Run::profile(&args).run();
    out.ok();
    out
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The point directories directly under the artifact directory, sorted.
fn point_dirs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("artifact dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir() && e.file_name() != "logs")
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The files of a complete run.
const RUN_FILES: [&str; 5] = [
    "profile_export_aiperf.json",
    "profile_export_aiperf.csv",
    "profile_export.jsonl",
    "profile_export_console.txt",
    "inputs.json",
];

#[test]
fn a_grid_sweep_writes_a_complete_run_per_point_and_an_aggregate_row_each() {
    let _gate = support::shared();
    let out = sweep(&["--concurrency", "1,2", "--isl-osl-pairs", "32/8,64/16"]);
    assert_eq!(
        point_dirs(&out.dir),
        [
            "concurrency_1_isl_32_osl_8",
            "concurrency_1_isl_64_osl_16",
            "concurrency_2_isl_32_osl_8",
            "concurrency_2_isl_64_osl_16"
        ],
        "{}",
        out.show()
    );
    let agg = read_json(&out.dir.join("sweep_aggregate.json"));
    let points = agg["points"].as_array().expect("points");
    assert_eq!(points.len(), 4, "{agg}");
    assert_eq!(
        (agg["sweep_type"].as_str(), agg["num_points"].as_u64()),
        (Some("grid"), Some(4))
    );
    for (i, p) in points.iter().enumerate() {
        assert_eq!(p["index"], i);
        let dir = out
            .dir
            .join(p["artifact_dir"].as_str().expect("artifact_dir"));
        for f in RUN_FILES {
            assert!(dir.join(f).is_file(), "{} lacks {f}", dir.display());
        }
        let own = read_json(&dir.join("profile_export_aiperf.json"));
        let ic = &own["input_config"];
        assert_eq!(
            p["parameters"]["concurrency"], ic["loadgen"]["concurrency"],
            "{p}"
        );
        assert_eq!(
            p["parameters"]["isl"],
            ic["input"]["prompt"]["input_tokens"]["mean"]
        );
        assert_eq!(
            p["parameters"]["osl"],
            ic["input"]["prompt"]["output_tokens"]["mean"]
        );
        assert_eq!(p["metrics"]["request_count"], own["request_count"]["avg"]);
        assert_eq!(own["request_count"]["avg"], 4.0);
        assert_eq!(
            p["metrics"]["time_to_first_token_p99"],
            own["time_to_first_token"]["p99"]
        );
        assert_eq!(p["metrics"]["error_request_count"], 0.0);
        // Each point's JSONL holds its own requests, with the point's prompt length.
        let isl = p["parameters"]["isl"].as_u64().unwrap();
        let lines = std::fs::read_to_string(dir.join("profile_export.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 4);
        for l in lines.lines() {
            let r: Value = serde_json::from_str(l).unwrap();
            assert_eq!(r["metrics"]["input_sequence_length"]["value"], isl, "{l}");
        }
    }
    let csv = out.read("sweep_aggregate.csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 5, "{csv}");
    assert!(lines[0].starts_with("index,concurrency,isl,osl,runs,artifact_dir,request_throughput,"));
    assert!(
        lines[4].starts_with("3,2,64,16,1,concurrency_2_isl_64_osl_16,"),
        "{csv}"
    );
    // The table of points at the end, unless --no-sweep-table.
    assert!(out.stdout.contains("Sweep\n"), "{}", out.show());
    assert!(out.stdout.contains("concurrency 2, isl 64, osl 16"));
}

#[test]
fn zip_pairs_lists_index_by_index_and_mismatched_lengths_are_a_usage_error() {
    let _gate = support::shared();
    let out = sweep(&[
        "--sweep-type",
        "zip",
        "--concurrency",
        "1,2",
        "--isl-osl-pairs",
        "32/8,64/16",
        "--no-sweep-table",
        "--goodput",
        "request_latency:10000",
    ]);
    assert_eq!(
        point_dirs(&out.dir),
        ["concurrency_1_isl_32_osl_8", "concurrency_2_isl_64_osl_16"]
    );
    assert!(
        !out.stdout.contains("Sweep\n"),
        "--no-sweep-table: {}",
        out.show()
    );
    let agg = read_json(&out.dir.join("sweep_aggregate.json"));
    assert_eq!(agg["points"].as_array().unwrap().len(), 2);
    // With --goodput, each row has the point's own goodput and good fraction.
    for p in agg["points"].as_array().unwrap() {
        let own = read_json(
            &out.dir
                .join(p["artifact_dir"].as_str().unwrap())
                .join("profile_export_aiperf.json"),
        );
        assert_eq!(p["metrics"]["goodput"], own["goodput"]["avg"], "{p}");
        assert_eq!(
            p["metrics"]["good_request_fraction"],
            own["good_request_fraction"]["avg"]
        );
    }
    assert_eq!(agg["points"][0]["metrics"]["good_request_fraction"], 1.0);
    assert!(out
        .read("sweep_aggregate.csv")
        .lines()
        .next()
        .unwrap()
        .ends_with(",goodput,good_request_fraction,pareto"));

    let bad = Run::profile(&[
        "--url",
        MOCK,
        "--sweep-type",
        "zip",
        "--concurrency",
        "1,2,3",
        "--isl-osl-pairs",
        "32/8,64/16",
    ])
    .run();
    let line = bad.assert_usage_error();
    assert!(
        line.contains("--concurrency has 3 values, --isl-osl-pairs has 2"),
        "{line}"
    );
    assert!(!bad.dir.exists(), "nothing is written on a usage error");
}

#[test]
fn a_single_value_is_a_plain_run() {
    let _gate = support::shared();
    let out = sweep(&["--concurrency", "2", "--isl-osl-pairs", "32/8"]);
    for f in RUN_FILES {
        assert!(out.dir.join(f).is_file(), "{f}: {}", out.show());
    }
    assert!(!out.dir.join("sweep_aggregate.json").exists());
    assert!(
        point_dirs(&out.dir).is_empty(),
        "{:?}",
        point_dirs(&out.dir)
    );
    let json = out.json();
    assert_eq!(
        json["input_config"]["input"]["prompt"]["input_tokens"]["mean"],
        32
    );
}

/// Sample mean, sample std (n − 1) and the 95 % Student-t interval, by hand.
fn by_hand(xs: &[f64]) -> (f64, f64, f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let std = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    // t(0.975, 2 degrees of freedom), from a table.
    let t = 4.302_652_729_911_275;
    let half = t * std / n.sqrt();
    (mean, std, mean - half, mean + half)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn repeated_runs_aggregate_mean_std_and_confidence_interval_of_every_statistic() {
    let _gate = support::shared();
    let out = sweep(&["--concurrency", "2", "--num-profile-runs", "3"]);
    let runs: Vec<Value> = (1..=3)
        .map(|k| {
            let dir = out.dir.join(format!("profile_runs/run_{k:04}"));
            for f in RUN_FILES {
                assert!(dir.join(f).is_file(), "{} lacks {f}", dir.display());
            }
            read_json(&dir.join("profile_export_aiperf.json"))
        })
        .collect();
    let agg = read_json(
        &out.dir
            .join("aggregate/profile_export_aiperf_aggregate.json"),
    );
    assert_eq!(
        (agg["num_runs"].as_u64(), agg["confidence_level"].as_f64()),
        (Some(3), Some(0.95))
    );
    for (tag, stat) in [
        ("time_to_first_token", "avg"),
        ("time_to_first_token", "p50"),
        ("time_to_first_token", "p99"),
        ("inter_token_latency", "p90"),
        ("request_latency", "std"),
        ("request_throughput", "avg"),
        ("output_token_throughput", "avg"),
    ] {
        let xs: Vec<f64> = runs
            .iter()
            .map(|r| r[tag][stat].as_f64().unwrap())
            .collect();
        let (mean, std, lo, hi) = by_hand(&xs);
        let c = &agg["metrics"][tag][stat];
        let got = |k: &str| {
            c[k].as_f64()
                .unwrap_or_else(|| panic!("{tag}.{stat}.{k}: {c}"))
        };
        assert!(close(got("mean"), mean), "{tag}.{stat} mean {c} vs {mean}");
        assert!(close(got("std"), std), "{tag}.{stat} std {c} vs {std}");
        assert!(close(got("ci_low"), lo), "{tag}.{stat} ci_low {c} vs {lo}");
        assert!(
            close(got("ci_high"), hi),
            "{tag}.{stat} ci_high {c} vs {hi}"
        );
        assert_eq!(c["n"], 3);
    }
    // The mock's TTFT is 20 ms: every run's median is above it, and the interval reaches the
    // band above it. (This test shares the cores with other tests, so the band is wide: it
    // checks the aggregation, and the accuracy tests check the timing, alone on the cores.)
    for r in &runs {
        let p50 = r["time_to_first_token"]["p50"].as_f64().unwrap();
        assert!((20.0..40.0).contains(&p50), "TTFT p50 {p50}");
    }
    let ttft = &agg["metrics"]["time_to_first_token"]["p50"];
    let (lo, hi) = (
        ttft["ci_low"].as_f64().unwrap(),
        ttft["ci_high"].as_f64().unwrap(),
    );
    assert!(lo < 40.0 && hi > 20.0 && lo <= hi, "{ttft}");
    let csv = std::fs::read_to_string(
        out.dir
            .join("aggregate/profile_export_aiperf_aggregate.csv"),
    )
    .unwrap();
    assert!(
        csv.starts_with("metric,stat,unit,n,mean,std,min,max,cv,se,ci_low,ci_high,t_critical\n")
    );
    assert!(csv.contains("\ntime_to_first_token,p50,ms,3,"), "{csv}");
    // One point, three runs: one row, the means.
    let sweep = read_json(&out.dir.join("sweep_aggregate.json"));
    let row = &sweep["points"][0];
    assert_eq!(row["runs"], 3);
    assert!(close(
        row["metrics"]["request_throughput"].as_f64().unwrap(),
        agg["metrics"]["request_throughput"]["avg"]["mean"]
            .as_f64()
            .unwrap()
    ));
}

/// Which runs had a warmup phase: from each run's `phase_stats`, and its JSONL's warmup
/// records.
fn warmups(dir: &Path, runs: &[&str]) -> Vec<u64> {
    runs.iter()
        .map(|r| {
            let d = dir.join(r);
            let json = read_json(&d.join("profile_export_aiperf.json"));
            let sent = json["phase_stats"]["warmup"]["sent"].as_u64().unwrap_or(0);
            let jsonl = std::fs::read_to_string(d.join("profile_export.jsonl")).unwrap();
            let records = jsonl
                .lines()
                .filter(|l| l.contains(r#""benchmark_phase":"warmup""#))
                .count() as u64;
            assert_eq!(sent, records, "{r}");
            sent
        })
        .collect()
}

#[test]
fn warmup_runs_once_per_sweep_unless_asked_for_every_run() {
    let _gate = support::shared();
    let runs = [
        "concurrency_1/profile_runs/run_0001",
        "concurrency_2/profile_runs/run_0001",
        "concurrency_1/profile_runs/run_0002",
        "concurrency_2/profile_runs/run_0002",
    ];
    let flags = [
        "--concurrency",
        "1,2",
        "--num-profile-runs",
        "2",
        "--warmup-request-count",
        "3",
    ];
    let out = sweep(&flags);
    // The first run (trial 1 of the first point; `repeated` order) warms up, no other.
    assert_eq!(warmups(&out.dir, &runs), [3, 0, 0, 0], "{}", out.show());
    for p in ["concurrency_1", "concurrency_2"] {
        assert!(out
            .dir
            .join(p)
            .join("aggregate/profile_export_aiperf_aggregate.json")
            .is_file());
    }
    let every = sweep(&[&flags[..], &["--no-profile-run-disable-warmup-after-first"]].concat());
    assert_eq!(warmups(&every.dir, &runs), [3, 3, 3, 3]);
}

#[test]
fn plugins_see_sweep_start_every_run_with_its_place_and_sweep_complete() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("events.jsonl");
    let config = write_file(
        tmp.path(),
        "sweep.yaml",
        &format!(
            "benchmark:\n  concurrency: [1, 2]\nplugins:\n  event_log:\n    file: {:?}\n    hooks: [sweep_start, benchmark_start, phase_complete, benchmark_complete, sweep_complete]\n",
            log.display().to_string()
        ),
    );
    let out = sweep(&["--config", config.to_str().unwrap()]);
    let events: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let hooks: Vec<&str> = events.iter().map(|e| e["hook"].as_str().unwrap()).collect();
    assert_eq!(
        hooks,
        [
            "sweep_start",
            "benchmark_start",
            "phase_complete",
            "benchmark_complete",
            "benchmark_start",
            "phase_complete",
            "benchmark_complete",
            "sweep_complete"
        ],
        "{}",
        out.show()
    );
    let starts: Vec<&Value> = events
        .iter()
        .filter(|e| e["hook"] == "benchmark_start")
        .collect();
    for (i, s) in starts.iter().enumerate() {
        let sw = &s["context"]["sweep"];
        assert_eq!(
            (sw["index"].as_u64(), sw["count"].as_u64()),
            (Some(i as u64), Some(2)),
            "{s}"
        );
        assert_eq!(
            (sw["trial"].as_u64(), sw["trials"].as_u64()),
            (Some(0), Some(1))
        );
        assert_eq!(sw["parameters"]["concurrency"], i as u64 + 1);
        assert!(
            sw["parameters"].get("isl").is_none(),
            "only what the point sets: {sw}"
        );
        assert_eq!(s["context"]["load"]["concurrency"], i as u64 + 1);
        let dir = s["context"]["artifact_dir"].as_str().unwrap();
        assert!(dir.ends_with(&format!("concurrency_{}", i + 1)), "{dir}");
    }
    assert_eq!(
        events[0]["context"]["sweep"]["index"], 0,
        "sweep_start has the first run's context"
    );
    let done = &events[7]["summary"];
    assert_eq!(done["num_points"], 2, "{done}");
    let rows = done["points"].as_array().unwrap();
    assert_eq!(rows[1]["parameters"]["concurrency"], 2);
    assert_eq!(rows[1]["metrics"]["request_count"], 4.0);
    // The summary is the file's content.
    let file = read_json(&out.dir.join("sweep_aggregate.json"));
    assert_eq!(file["points"][0]["metrics"], rows[0]["metrics"]);
}

#[test]
fn bad_lists_and_run_counts_are_one_line_usage_errors() {
    let _gate = support::shared();
    for (args, expect) in [
        (&["--concurrency", "1,,4"][..], "--concurrency"),
        (&["--concurrency", "1,nan"], "--concurrency"),
        (&["--concurrency", "1,0"], "--concurrency"),
        (&["--request-rate", "10,-1"], "--request-rate"),
        (&["--isl-osl-pairs", "128/x"], "--isl-osl-pairs"),
        (&["--isl-osl-pairs", "128"], "--isl-osl-pairs"),
        (&["--num-profile-runs", "0"], "--num-profile-runs"),
        (&["--num-profile-runs", "1e9"], "--num-profile-runs"),
        (&["--confidence-level", "1.5"], "--confidence-level"),
        (
            &["--isl-osl-pairs", "1/1,2/2", "--isl", "3,4"],
            "--isl-osl-pairs",
        ),
        (
            &[
                "--concurrency",
                "1,2",
                "--sweep-type",
                "zip",
                "--request-rate",
                "1,2,3",
            ],
            "zip",
        ),
    ] {
        let mut all = vec!["--url", MOCK];
        all.extend_from_slice(args);
        let msg = config_error(&all);
        assert!(msg.contains(expect), "{args:?}: {msg}");
    }
    // End to end: exit 2, one line.
    let out = Run::profile(&["--url", MOCK, "--concurrency", "1,,4"]).run();
    let line = out.assert_usage_error();
    assert!(line.contains("--concurrency"), "{line}");
}

#[test]
fn config_file_lists_sweep_like_comma_lists() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let f = write_file(
        tmp.path(),
        "c.yaml",
        "benchmark:\n  url: mock\n  concurrency: [1, 4, 16]\n  isl_osl_pairs: [128/128, 2048/512]\n  sweep_type: zip\n",
    );
    let msg = config_error(&["--config", f.to_str().unwrap()]);
    assert!(
        msg.contains("--concurrency has 3 values, --isl-osl-pairs has 2"),
        "{msg}"
    );
    let f = write_file(
        tmp.path(),
        "ok.yaml",
        "benchmark:\n  url: mock\n  concurrency: [1, 4, 16]\n  request_rate: [5, 10]\n",
    );
    let c = aiperf::config::load(&support::strings(&["--config", f.to_str().unwrap()])).unwrap();
    assert_eq!(c.sweep.concurrency, [1, 4, 16]);
    assert_eq!(c.sweep.request_rate, [5.0, 10.0]);
    assert_eq!(c.sweep.points().unwrap().len(), 6);
    assert_eq!(
        (c.load.concurrency, c.load.request_rate),
        (Some(1), Some(5.0))
    );
    let f = write_file(
        tmp.path(),
        "bad.yaml",
        "benchmark:\n  url: mock\n  concurrency: [1, x]\n",
    );
    let msg = config_error(&["--config", f.to_str().unwrap()]);
    assert!(msg.contains(":3:") && msg.contains("concurrency"), "{msg}");
}

#[test]
fn an_interrupt_ends_the_current_run_and_the_sweep_with_its_aggregates() {
    let _gate = support::shared();
    // Run 1 (40 at once) is quick; run 2 (one at a time, 50 ms each) takes seconds.
    let mut run = Run::profile(&[
        "--url",
        "mock?ttft_ms=50&itl_ms=0&tokens=1",
        "--request-count",
        "80",
        "--concurrency",
        "40,1,2",
    ])
    .spawn();
    let second = run.dir.join("concurrency_1/profile_export.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_to_string(&second)
        .unwrap_or_default()
        .lines()
        .count()
        < 1
    {
        assert!(run.exited().is_none(), "exited early: {}", run.stderr());
        assert!(
            std::time::Instant::now() < deadline,
            "run 2 never started: {}",
            run.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    run.signal(libc::SIGINT);
    let out = run
        .wait_within(std::time::Duration::from_secs(60))
        .expect("the sweep stops after an interrupt");
    assert_eq!(
        out.stderr.matches("Interrupted:").count(),
        1,
        "one run acts on the signal: {}",
        out.show()
    );
    assert!(
        out.stderr.contains("the sweep stops after 2 of 3 runs"),
        "{}",
        out.show()
    );
    assert!(!out.dir.join("concurrency_2").exists());
    let agg = read_json(&out.dir.join("sweep_aggregate.json"));
    let runs: Vec<u64> = agg["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["runs"].as_u64().unwrap())
        .collect();
    assert_eq!(runs, [1, 1, 0], "{agg}");
    let second = read_json(&out.dir.join("concurrency_1/profile_export_aiperf.json"));
    assert_eq!(second["was_cancelled"], true);
}

/// (output token throughput avg, request latency p50) of a point, from its own report.
fn throughput_and_latency(dir: &Path) -> (f64, f64) {
    let r = read_json(&dir.join("profile_export_aiperf.json"));
    let get = |tag: &str, stat: &str| {
        r[tag][stat]
            .as_f64()
            .unwrap_or_else(|| panic!("{tag}.{stat} in {}", dir.display()))
    };
    (
        get("output_token_throughput", "avg"),
        get("request_latency", "p50"),
    )
}

#[test]
fn the_pareto_recipe_finds_the_undominated_points_of_isl_osl_pairs_and_concurrencies() {
    let _gate = support::shared();
    // TTFT grows by 5 ms per request in flight, so a higher concurrency buys throughput
    // with latency; a longer output buys throughput per request with latency too.
    let out = Run::profile(&[
        "--url",
        "mock?ttft_ms=20&itl_ms=2&ttft_per_inflight_ms=5",
        "--streaming",
        "--random-seed",
        "7",
        "--request-count",
        "8",
        "--search-recipe",
        "pareto",
        "--isl-osl-pairs",
        "32/8,32/32",
        "--concurrency",
        "1,4",
    ])
    .run();
    out.ok();
    let result = read_json(&out.dir.join("search_result.json"));
    assert_eq!(result["recipe"], "pareto", "{result}");
    assert_eq!(result["throughput_metric"], "output_token_throughput");
    assert_eq!(result["latency_metric"], "request_latency_p50");
    let points = result["points"].as_array().expect("points");
    assert_eq!(points.len(), 4, "{result}");
    // The truth, from each point's own report: a point is on the front when no other
    // point has at least its throughput and at most its latency, one of them better.
    let measured: Vec<(f64, f64)> = points
        .iter()
        .map(|p| {
            let dir = out
                .dir
                .join(p["artifact_dir"].as_str().expect("artifact_dir"));
            throughput_and_latency(&dir)
        })
        .collect();
    let expected: Vec<u64> = (0..measured.len())
        .filter(|&i| {
            let (t, l) = measured[i];
            !measured
                .iter()
                .any(|&(t2, l2)| t2 >= t && l2 <= l && (t2 > t || l2 < l))
        })
        .map(|i| i as u64)
        .collect();
    assert!(!expected.is_empty());
    let front: Vec<u64> = result["front"]
        .as_array()
        .expect("front")
        .iter()
        .map(|p| p["index"].as_u64().expect("index"))
        .collect();
    assert_eq!(front, expected, "measured {measured:?}\n{result}");
    for (p, &(t, l)) in points.iter().zip(&measured) {
        assert!((p["throughput"].as_f64().unwrap() - t).abs() < 1e-6 * t.max(1.0));
        assert!((p["latency"].as_f64().unwrap() - l).abs() < 1e-6 * l.max(1.0));
        let on = expected.contains(&p["index"].as_u64().unwrap());
        assert_eq!(p["pareto"], on, "{p}");
    }
    // The sweep's aggregate marks the same front, and the console prints it.
    let agg = read_json(&out.dir.join("sweep_aggregate.json"));
    assert_eq!(agg["pareto"]["front"], serde_json::json!(expected), "{agg}");
    assert!(
        out.stdout
            .contains("Pareto front (output_token_throughput vs request_latency_p50)"),
        "{}",
        out.show()
    );
    let csv = std::fs::read_to_string(out.dir.join("sweep_aggregate.csv")).unwrap();
    assert!(csv.lines().next().unwrap().ends_with(",pareto"), "{csv}");
}

#[test]
fn the_pareto_recipe_needs_a_sweep_and_no_slo_flags() {
    let e = config_error(&["--url", "mock", "--search-recipe", "pareto"]);
    assert!(e.contains("compares the points of a sweep"), "{e}");
    let e = config_error(&[
        "--url",
        "mock",
        "--search-recipe",
        "pareto",
        "--concurrency",
        "1,2",
        "--ttft-sla-ms",
        "100",
    ]);
    assert!(
        e.contains("--ttft-sla-ms belongs to the SLO searches"),
        "{e}"
    );
    let e = config_error(&[
        "--url",
        "mock",
        "--concurrency",
        "1,2",
        "--pareto-latency",
        "output_token_throughput",
    ]);
    assert!(e.contains("is not one of"), "{e}");
}
