//! Time slices (`--slice-duration`): the mock's TTFT steps up mid-run (`ttft_step_ms`,
//! `step_after_s`) and the slices show it where it happened; the slices' counts add up to
//! the run's; no slice files without the flag.

use serde_json::Value;

use crate::support::{self, Output, Run};

fn timeslices(run: &Output) -> Vec<Value> {
    let v: Value = serde_json::from_str(&run.read("profile_export_aiperf_timeslices.json"))
        .expect("timeslices JSON");
    assert!(v["input_config"].is_object(), "{v}");
    v["timeslices"].as_array().expect("timeslices[]").clone()
}

fn stat(slice: &Value, tag: &str, stat: &str) -> f64 {
    slice[tag][stat]
        .as_f64()
        .unwrap_or_else(|| panic!("no {tag}.{stat} in {slice}"))
}

/// Base TTFT 20 ms, 60 ms more for requests arriving 1.5 s after the mock's first one,
/// 0.5 s slices (aligned on the wall clock): the slices before the step are near the base,
/// the ones after it at base + step or more (the mock is never early), and the one in
/// between holds both. The step lands in the 4th slice (the 5th when the first request
/// started within a millisecond of a slice's end; the 3rd's end when it started within a
/// few milliseconds of a slice's start: then no request starting in the 4th slice arrived
/// before the step, and the 3rd holds only requests from before it).
#[test]
fn a_latency_step_shows_in_the_right_slice() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=20&itl_ms=1&ttft_step_ms=60&step_after_s=1.5",
        "-m",
        "m",
        "--streaming",
        "--concurrency",
        "4",
        "--osl",
        "4",
        "--benchmark-duration",
        "3",
        "--slice-duration",
        "0.5",
    ])
    .run();
    run.ok();
    let slices = timeslices(&run);
    assert!(slices.len() >= 5, "{} slices", slices.len());
    for (i, s) in slices.iter().enumerate() {
        assert_eq!(s["timeslice_index"], i, "{s}");
        let (start, end) = (
            s["start_ns"].as_u64().unwrap(),
            s["end_ns"].as_u64().unwrap(),
        );
        assert_eq!(end - start, 500_000_000, "{s}");
        if i > 0 {
            assert!(
                start >= slices[i - 1]["end_ns"].as_u64().unwrap(),
                "in order"
            );
        }
    }
    // Counts add up to the run's.
    let total = |v: &Value| stat(v, "request_count", "avg") + stat(v, "error_request_count", "avg");
    let sliced: f64 = slices.iter().map(total).sum();
    assert_eq!(sliced, total(&run.json()));
    // The step: the last slice with a request below base + step is the boundary.
    let high = 78.0; // base + step, less 2 ms of timer slack
    let with_ttft: Vec<&Value> = slices
        .iter()
        .filter(|s| s.get("time_to_first_token").is_some())
        .collect();
    let boundary = with_ttft
        .iter()
        .rposition(|s| stat(s, "time_to_first_token", "min") < high)
        .expect("some requests before the step");
    assert!(
        (2..=4).contains(&boundary),
        "the step should be in slice 3 (or at the end of 2, or in 4): {boundary}"
    );
    let b = with_ttft[boundary];
    if boundary >= 3 {
        assert!(
            stat(b, "time_to_first_token", "max") >= high,
            "the boundary slice holds requests after the step too: {b}"
        );
    }
    for s in &with_ttft[..boundary] {
        let p50 = stat(s, "time_to_first_token", "p50");
        assert!(
            (20.0..50.0).contains(&p50),
            "before the step, p50 {p50}: {s}"
        );
    }
    assert!(boundary + 1 < with_ttft.len(), "slices after the step");
    for s in &with_ttft[boundary + 1..] {
        assert!(
            stat(s, "time_to_first_token", "min") >= high,
            "after the step: {s}"
        );
    }
    // The CSV: the same slices, AIPerf's tidy layout.
    let csv = run.read("profile_export_aiperf_timeslices.csv");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("Timeslice,Metric,Unit,Stat,Value"));
    let mut seen = std::collections::BTreeSet::new();
    for l in lines {
        let cells: Vec<&str> = l.split(',').collect();
        assert_eq!(cells.len(), 5, "{l}");
        seen.insert(cells[0].parse::<usize>().expect(l));
        cells[4].parse::<f64>().expect(l);
    }
    assert_eq!(seen.len(), slices.len());
    assert!(csv.contains("\n0,Time to First Token,ms,p50,"), "{csv}");
}

/// Without `--slice-duration` no slice file is written; with it, its value is in the
/// report's `input_config`.
#[test]
fn slice_files_only_with_the_flag() {
    let _gate = support::shared();
    let base = [
        "--url",
        "mock?ttft_ms=1&itl_ms=0",
        "-m",
        "m",
        "--request-count",
        "5",
    ];
    let run = Run::profile(&base).run();
    run.ok();
    let names: Vec<String> = run
        .all_files()
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n == "profile_export_aiperf.json"),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.contains("timeslices")), "{names:?}");
    assert!(run.json()["input_config"]["output"]
        .get("slice_duration")
        .is_none());

    let mut args = base.to_vec();
    args.extend(["--slice-duration", "2.5", "--profile-export-prefix", "pfx"]);
    let run = Run::profile(&args).run();
    run.ok();
    let v: Value = serde_json::from_str(&run.read("pfx_timeslices.json")).unwrap();
    assert_eq!(v["input_config"]["output"]["slice_duration"], 2.5);
    let total: f64 = v["timeslices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| stat(s, "request_count", "avg"))
        .sum();
    assert_eq!(total, 5.0);
    run.read("pfx_timeslices.csv");
}
