//! Load generation end to end: stop conditions, warmup, request rates and their schedule,
//! concurrency caps and ramps, request cancellation, several URLs, Ctrl-C / SIGTERM, and
//! fixed-schedule trace replay.
//!
//! Nothing here asserts on speed. Schedules are checked through `scheduled_ns`, which the
//! scheduler computes from absolute deadlines (deterministic), not through actual send times;
//! the few time bounds are generous upper bounds that only catch "never stopped".

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::support::{
    self, config_error, max_overlap, stalling_server, strings, MockServer, Output, Run, Running,
    ScriptedServer,
};

// ---------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------

/// A mock that answers at once with two tokens: for tests about counts, not timing.
const FAST_MOCK: &str = "mock?ttft_ms=1&itl_ms=0&tokens=2";

fn meta<'a>(r: &'a Value, key: &str) -> &'a Value {
    &r["metadata"][key]
}

fn meta_u64(r: &Value, key: &str) -> u64 {
    meta(r, key)
        .as_u64()
        .unwrap_or_else(|| panic!("metadata.{key} is not an integer: {r}"))
}

fn phase_of(r: &Value) -> &str {
    meta(r, "benchmark_phase")
        .as_str()
        .unwrap_or_else(|| panic!("no benchmark_phase: {r}"))
}

/// The records of one phase, ordered by `session_num`.
fn records_in(recs: &[Value], phase: &str) -> Vec<Value> {
    let mut out: Vec<Value> = recs
        .iter()
        .filter(|r| phase_of(r) == phase)
        .cloned()
        .collect();
    out.sort_by_key(|r| meta_u64(r, "session_num"));
    out
}

/// Every record's `scheduled_ns`, sorted.
fn scheduled_sorted(recs: &[Value]) -> Vec<u64> {
    let mut s: Vec<u64> = recs.iter().map(|r| meta_u64(r, "scheduled_ns")).collect();
    s.sort_unstable();
    s
}

/// Scheduled send times relative to the earliest one, in ms (exact integer differences).
fn scheduled_offsets_ms(recs: &[Value]) -> Vec<f64> {
    let s = scheduled_sorted(recs);
    s.iter().map(|t| (t - s[0]) as f64 / 1e6).collect()
}

fn gaps_ms(offsets: &[f64]) -> Vec<f64> {
    offsets.windows(2).map(|w| w[1] - w[0]).collect()
}

fn phase_stats<'a>(j: &'a Value, phase: &str) -> &'a Value {
    let s = &j["phase_stats"][phase];
    assert!(
        s.is_object(),
        "no phase_stats.{phase} in {}",
        j["phase_stats"]
    );
    s
}

fn ps_u64(j: &Value, phase: &str, key: &str) -> u64 {
    phase_stats(j, phase)[key]
        .as_u64()
        .unwrap_or_else(|| panic!("phase_stats.{phase}.{key} is not an integer"))
}

fn assert_close(actual: f64, expected: f64, tol: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= tol,
        "{what}: {actual} is not {expected} ± {tol}"
    );
}

/// Session numbers of the cancelled records.
fn cancelled_sessions(recs: &[Value]) -> BTreeSet<u64> {
    recs.iter()
        .filter(|r| meta(r, "was_cancelled") == true)
        .map(|r| meta_u64(r, "session_num"))
        .collect()
}

/// Runs several `profile` invocations at once (each is mostly waiting on timers).
fn profiles_in_parallel(runs: &[Vec<String>]) -> Vec<Output> {
    std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .iter()
            .map(|a| s.spawn(move || Run::profile(a.as_slice()).run()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("profile thread"))
            .collect()
    })
}

// ---------------------------------------------------------------------------------------
// 1. stop conditions
// ---------------------------------------------------------------------------------------

#[test]
fn request_count_gives_exactly_that_many_profiling_records() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        FAST_MOCK,
        "--request-count",
        "17",
        "--concurrency",
        "3",
    ])
    .run();
    run.ok();
    let recs = run.jsonl();
    assert_eq!(recs.len(), 17);
    assert!(recs.iter().all(|r| phase_of(r) == "profiling"));
    let sessions: BTreeSet<u64> = recs.iter().map(|r| meta_u64(r, "session_num")).collect();
    assert_eq!(sessions, (0..17).collect::<BTreeSet<u64>>());
    let j = run.json();
    assert_eq!(run.stat("request_count", "avg"), 17.0);
    for (key, want) in [("sent", 17), ("completed", 17), ("expected", 17)] {
        assert_eq!(ps_u64(&j, "profiling", key), want, "{key}");
    }
    for key in ["cancelled", "errors", "in_flight"] {
        assert_eq!(ps_u64(&j, "profiling", key), 0, "{key}");
    }
    assert_eq!(phase_stats(&j, "profiling")["timed_out"], false);
    assert_eq!(j["was_cancelled"], false);
    // Closed loop: nothing is scheduled.
    assert!(recs.iter().all(|r| meta(r, "scheduled_ns").is_null()));
    assert!(recs.iter().all(|r| meta(r, "send_lag_ms").is_null()));
}

#[test]
fn benchmark_duration_stops_sending_and_marks_the_phase_timed_out() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=5&itl_ms=5",
        "--concurrency",
        "4",
        "--benchmark-duration",
        "1",
    ])
    .run();
    run.ok();
    let j = run.json();
    let ps = phase_stats(&j, "profiling");
    assert_eq!(ps["timed_out"], true, "{ps}");
    assert!(ps["expected"].is_null(), "{ps}");
    let start = ps["start_time_ns"].as_u64().unwrap();
    let sending_complete = ps["sending_complete_time_ns"].as_u64().unwrap();
    // The duration is a lower bound on the sending window (a timer never fires early)...
    assert!(
        sending_complete - start >= 1_000_000_000,
        "sending stopped after {} ns",
        sending_complete - start
    );
    // ...and nothing starts long after it: 0.5 s of slack for a loaded machine.
    let recs = run.jsonl();
    let latest = recs
        .iter()
        .map(|r| meta_u64(r, "request_start_ns"))
        .max()
        .unwrap();
    assert!(
        latest <= start + 1_500_000_000,
        "a request started {} ms after the phase start",
        (latest - start) / 1_000_000
    );
    // The default grace period (30 s) lets every in-flight request finish.
    let sent = ps_u64(&j, "profiling", "sent");
    assert!(sent >= 4, "sent {sent}");
    assert_eq!(ps_u64(&j, "profiling", "completed"), sent);
    assert_eq!(ps_u64(&j, "profiling", "cancelled"), 0);
    assert_eq!(recs.len() as u64, sent);
    assert_eq!(run.stat("request_count", "avg"), sent as f64);
    assert_eq!(j["was_cancelled"], false);
}

#[test]
fn benchmark_duration_bounds_an_open_loop_schedule() {
    let _gate = support::shared();
    // 50/s for 0.5 s: about 25 requests, every one due inside the duration.
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=100&itl_ms=0&tokens=1",
        "--request-rate",
        "50",
        "--request-rate-mode",
        "constant",
        "--benchmark-duration",
        "0.5",
    ])
    .run();
    run.ok();
    let j = run.json();
    let ps = phase_stats(&j, "profiling");
    assert_eq!(ps["timed_out"], true, "{ps}");
    assert!(ps["expected"].is_null(), "{ps}");
    let start = ps["start_time_ns"].as_u64().unwrap();
    let recs = run.jsonl();
    let sent = ps_u64(&j, "profiling", "sent");
    assert!(sent >= 1);
    assert_eq!(recs.len() as u64, sent);
    assert_eq!(ps_u64(&j, "profiling", "completed"), sent);
    let due = scheduled_sorted(&recs);
    assert!(
        *due.last().unwrap() <= start + 1_000_000_000,
        "a request due {} ms into a 0.5 s run",
        (due.last().unwrap() - start) / 1_000_000
    );
    // A phase bounded by time only keeps sending for the whole duration (25 are due; a
    // request still waiting for its deadline when time is up is not sent, hence the slack).
    assert!(sent >= 10, "only {sent} requests in 0.5 s at 50/s");
    for (i, g) in gaps_ms(&scheduled_offsets_ms(&recs)).iter().enumerate() {
        assert_close(*g, 20.0, 0.01, &format!("gap {i}"));
    }
}

/// Requests of a slow mock (100 ms + 50 × 100 ms = 5.1 s) are still in flight when the
/// 0.5 s duration ends.
fn slow_run_with_grace(grace: &str) -> Vec<String> {
    strings(&[
        "--url",
        "mock?ttft_ms=100&itl_ms=100",
        "--osl",
        "50",
        "--concurrency",
        "2",
        "--benchmark-duration",
        "0.5",
        "--benchmark-grace-period",
        grace,
    ])
}

#[test]
fn grace_period_cancels_in_flight_requests_when_it_runs_out() {
    let _gate = support::shared();
    let runs = profiles_in_parallel(&[slow_run_with_grace("0.3"), slow_run_with_grace("30")]);

    // Grace 0.3 s: both in-flight requests are cancelled and counted; nothing succeeded.
    let short = &runs[0];
    short.expect_code(1);
    let j = short.json();
    let cancelled = ps_u64(&j, "profiling", "cancelled");
    assert!(cancelled > 0, "{}", j["phase_stats"]);
    assert_eq!(cancelled, ps_u64(&j, "profiling", "sent"));
    assert_eq!(ps_u64(&j, "profiling", "in_flight"), 0);
    assert_eq!(phase_stats(&j, "profiling")["timed_out"], true);
    let errors = short.errors();
    let c499: Vec<_> = errors
        .iter()
        .filter(|e| e.0 == Some(499) && e.1 == "RequestCancellationError")
        .collect();
    assert_eq!(c499.len(), 1, "{errors:?}");
    assert_eq!(c499[0].3, cancelled);
    let recs = short.jsonl();
    assert_eq!(recs.len() as u64, cancelled);
    for r in &recs {
        assert_eq!(meta(r, "was_cancelled"), true, "{r}");
        assert_eq!(r["error"]["code"], 499, "{r}");
        assert_eq!(
            meta(r, "cancellation_time_ns"),
            meta(r, "request_end_ns"),
            "{r}"
        );
    }

    // Grace 30 s: the same requests all complete.
    let long = &runs[1];
    long.ok();
    let j = long.json();
    let sent = ps_u64(&j, "profiling", "sent");
    assert!(sent >= 2, "{}", j["phase_stats"]);
    assert_eq!(ps_u64(&j, "profiling", "cancelled"), 0);
    assert_eq!(ps_u64(&j, "profiling", "completed"), sent);
    assert_eq!(ps_u64(&j, "profiling", "errors"), 0);
    assert_eq!(long.stat("request_count", "avg"), sent as f64);
    assert_eq!(long.stat("error_request_count", "avg"), 0.0);
    assert!(long.errors().is_empty());
    assert!(long
        .jsonl()
        .iter()
        .all(|r| meta(r, "was_cancelled") == false && r["error"].is_null()));
}

// ---------------------------------------------------------------------------------------
// 2. warmup
// ---------------------------------------------------------------------------------------

#[test]
fn warmup_requests_are_kept_out_of_the_summary() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        FAST_MOCK,
        "--warmup-request-count",
        "7",
        "--request-count",
        "11",
        "--concurrency",
        "3",
    ])
    .run();
    run.ok();
    let j = run.json();
    assert_eq!(run.stat("request_count", "avg"), 11.0);
    assert_eq!(support::stat_of(&j["warmup"], "request_count", "avg"), 7.0);
    assert_eq!(j["request_latency"]["count"], 11);
    assert_eq!(ps_u64(&j, "warmup", "expected"), 7);
    assert_eq!(ps_u64(&j, "warmup", "completed"), 7);
    assert_eq!(ps_u64(&j, "profiling", "completed"), 11);
    // Only profiling requests count per URL.
    let per_url_total: u64 = j["per_url"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["request_count"].as_u64().unwrap())
        .sum();
    assert_eq!(per_url_total, 11);

    let recs = run.jsonl();
    let warm = records_in(&recs, "warmup");
    let prof = records_in(&recs, "profiling");
    assert_eq!((warm.len(), prof.len(), recs.len()), (7, 11, 18));
    // Warmup comes first: its sessions are 0..7 and it has finished before profiling starts.
    let ws: Vec<u64> = warm.iter().map(|r| meta_u64(r, "session_num")).collect();
    let ps: Vec<u64> = prof.iter().map(|r| meta_u64(r, "session_num")).collect();
    assert_eq!(ws, (0..7).collect::<Vec<_>>());
    assert_eq!(ps, (7..18).collect::<Vec<_>>());
    let warm_end = warm
        .iter()
        .map(|r| meta_u64(r, "request_end_ns"))
        .max()
        .unwrap();
    let prof_start = prof
        .iter()
        .map(|r| meta_u64(r, "request_start_ns"))
        .min()
        .unwrap();
    assert!(warm_end <= prof_start);
}

#[test]
fn warmup_duration_bounds_the_warmup_phase_by_time() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=5&itl_ms=0&tokens=2",
        "--warmup-duration",
        "0.3",
        "--request-count",
        "5",
        "--concurrency",
        "2",
    ])
    .run();
    run.ok();
    let j = run.json();
    let w = phase_stats(&j, "warmup");
    assert_eq!(w["timed_out"], true, "{w}");
    assert!(w["expected"].is_null(), "{w}");
    let start = w["start_time_ns"].as_u64().unwrap();
    let sc = w["sending_complete_time_ns"].as_u64().unwrap();
    assert!(
        sc - start >= 300_000_000,
        "warmup sent for {} ns",
        sc - start
    );
    assert!(j["warmup"].is_object(), "no warmup section");

    let recs = run.jsonl();
    let warm = records_in(&recs, "warmup");
    let prof = records_in(&recs, "profiling");
    assert!(warm.len() >= 2, "{} warmup records", warm.len());
    assert_eq!(warm.len() as u64, ps_u64(&j, "warmup", "sent"));
    assert_eq!(
        support::stat_of(&j["warmup"], "request_count", "avg"),
        warm.len() as f64
    );
    for r in &warm {
        let s = meta_u64(r, "request_start_ns");
        assert!(
            s <= start + 800_000_000,
            "warmup request started {} ms after the warmup start",
            (s - start) / 1_000_000
        );
    }
    assert_eq!(prof.len(), 5);
    assert_eq!(run.stat("request_count", "avg"), 5.0);
    let warm_end = w["end_time_ns"].as_u64().unwrap();
    assert!(prof
        .iter()
        .all(|r| meta_u64(r, "request_start_ns") >= warm_end));
}

#[test]
fn warmup_request_rate_schedules_the_warmup_requests() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        FAST_MOCK,
        "--warmup-request-rate",
        "50",
        "--warmup-request-count",
        "10",
        "--request-rate-mode",
        "constant",
        "--request-count",
        "3",
    ])
    .run();
    run.ok();
    let j = run.json();
    assert_eq!(j["input_config"]["loadgen"]["warmup_request_rate"], 50.0);
    let recs = run.jsonl();
    let warm = records_in(&recs, "warmup");
    assert_eq!(warm.len(), 10);
    let offsets = scheduled_offsets_ms(&warm);
    for (i, o) in offsets.iter().enumerate() {
        assert_close(*o, 20.0 * i as f64, 0.01, &format!("warmup offset {i}"));
    }
    // The first warmup request is due right at the start of the phase, not before it.
    let start = ps_u64(&j, "warmup", "start_time_ns");
    let first = scheduled_sorted(&warm)[0];
    assert!(
        (start..start + 1_000_000_000).contains(&first),
        "first due {first}, phase start {start}"
    );
    // Profiling has no --request-rate: closed loop, nothing scheduled.
    let prof = records_in(&recs, "profiling");
    assert_eq!(prof.len(), 3);
    assert!(prof.iter().all(|r| meta(r, "scheduled_ns").is_null()));
}

#[test]
fn warmup_concurrency_sets_the_warmup_workers() {
    let _gate = support::shared();
    // 150 ms requests: workers of the same phase surely overlap.
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=150&itl_ms=0&tokens=1",
        "--warmup-concurrency",
        "3",
        "--warmup-request-count",
        "6",
        "--concurrency",
        "1",
        "--request-count",
        "3",
    ])
    .run();
    run.ok();
    let j = run.json();
    assert_eq!(j["input_config"]["loadgen"]["warmup_concurrency"], 3);
    let recs = run.jsonl();
    let warm = records_in(&recs, "warmup");
    let prof = records_in(&recs, "profiling");
    assert_eq!((warm.len(), prof.len()), (6, 3));
    // Three warmup workers run side by side (at least two surely overlap even on a loaded
    // machine), then a single profiling worker runs alone.
    let warm_overlap = max_overlap(&warm);
    assert!(
        (2..=3).contains(&warm_overlap),
        "warmup overlap {warm_overlap}"
    );
    assert_eq!(max_overlap(&prof), 1);
}

// ---------------------------------------------------------------------------------------
// 3. request rates
// ---------------------------------------------------------------------------------------

#[test]
fn constant_rate_schedules_requests_exactly_evenly() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        FAST_MOCK,
        "--request-rate",
        "100",
        "--request-rate-mode",
        "constant",
        "--request-count",
        "50",
    ])
    .run();
    run.ok();
    let recs = run.jsonl();
    assert_eq!(recs.len(), 50);
    let offsets = scheduled_offsets_ms(&recs);
    for (i, g) in gaps_ms(&offsets).iter().enumerate() {
        assert_close(*g, 10.0, 0.01, &format!("gap {i}"));
    }
    let j = run.json();
    let start = ps_u64(&j, "profiling", "start_time_ns");
    let first = scheduled_sorted(&recs)[0];
    assert!(
        (start..start + 1_000_000_000).contains(&first),
        "the first request is due right at the phase start: due {first}, start {start}"
    );
    // send_lag_ms on every record is its start minus its scheduled time.
    let mut max_lag = f64::MIN;
    for r in &recs {
        let lag = meta(r, "send_lag_ms")
            .as_f64()
            .unwrap_or_else(|| panic!("no send_lag_ms: {r}"));
        let want =
            (meta_u64(r, "request_start_ns") as f64 - meta_u64(r, "scheduled_ns") as f64) / 1e6;
        assert_close(lag, want, 1e-3, "send_lag_ms");
        max_lag = max_lag.max(lag);
    }
    assert_eq!(j["send_lag"]["count"], 50);
    let reported = phase_stats(&j, "profiling")["max_send_lag_ms"]
        .as_f64()
        .expect("max_send_lag_ms");
    assert_close(reported, max_lag, 1e-3, "max_send_lag_ms");
    assert_close(
        j["send_lag"]["max"].as_f64().unwrap(),
        max_lag,
        1e-3,
        "send_lag.max",
    );
    assert_eq!(j["input_config"]["loadgen"]["request_rate"], 100.0);
    assert_eq!(
        j["input_config"]["loadgen"]["request_rate_mode"],
        "constant"
    );
}

fn poisson_run(seed: &str) -> Vec<String> {
    strings(&[
        "--url",
        FAST_MOCK,
        "--request-rate",
        "200",
        "--request-count",
        "15",
        "--random-seed",
        seed,
    ])
}

#[test]
fn poisson_schedule_is_reproducible_with_a_seed() {
    let _gate = support::shared();
    let runs = profiles_in_parallel(&[poisson_run("42"), poisson_run("42"), poisson_run("43")]);
    let offsets: Vec<Vec<f64>> = runs
        .iter()
        .map(|r| {
            r.ok();
            scheduled_offsets_ms(&r.jsonl())
        })
        .collect();
    assert_eq!(
        runs[0].json()["input_config"]["loadgen"]["request_rate_mode"],
        "poisson",
        "poisson is the default mode"
    );
    assert_eq!(offsets[0].len(), 15);
    for (a, b) in offsets[0].iter().zip(&offsets[1]) {
        assert_close(*a, *b, 0.01, "same seed, same offset");
    }
    let differs = offsets[0]
        .iter()
        .zip(&offsets[2])
        .any(|(a, b)| (a - b).abs() > 0.5);
    assert!(
        differs,
        "seeds 42 and 43 gave the same schedule: {:?}",
        offsets[0]
    );
    // Not a constant schedule: the gaps vary.
    let gaps = gaps_ms(&offsets[0]);
    let (lo, hi) = gaps
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), g| (lo.min(*g), hi.max(*g)));
    assert!(hi - lo > 1.0, "poisson gaps all alike: {gaps:?}");
}

#[test]
fn gamma_mode_with_arrival_smoothness_is_accepted() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        FAST_MOCK,
        "--request-rate",
        "200",
        "--request-rate-mode",
        "gamma",
        "--arrival-smoothness",
        "4",
        "--request-count",
        "15",
        "--random-seed",
        "5",
    ])
    .run();
    run.ok();
    let j = run.json();
    assert_eq!(j["input_config"]["loadgen"]["request_rate_mode"], "gamma");
    assert_eq!(j["input_config"]["loadgen"]["arrival_smoothness"], 4.0);
    let recs = run.jsonl();
    assert_eq!(recs.len(), 15);
    let gaps = gaps_ms(&scheduled_offsets_ms(&recs));
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    // 14 gaps of mean 5 ms: the seeded sample's mean is deterministic, far inside this.
    assert!((2.0..12.0).contains(&mean), "mean gap {mean} ms");
    assert!(
        gaps.iter().any(|g| (g - gaps[0]).abs() > 0.1),
        "gamma gaps all alike: {gaps:?}"
    );
}

#[test]
fn concurrency_caps_an_open_loop_rate_without_dropping_requests() {
    let _gate = support::shared();
    // 100/s asked, but 2 slots of 50 ms each carry only ~40/s: requests wait for a slot.
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=50&itl_ms=0&tokens=1",
        "--request-rate",
        "100",
        "--request-rate-mode",
        "constant",
        "--concurrency",
        "2",
        "--request-count",
        "20",
    ])
    .run();
    run.ok();
    let recs = run.jsonl();
    assert_eq!(recs.len(), 20, "no request is dropped");
    assert!(recs.iter().all(|r| r["error"].is_null()));
    assert!(max_overlap(&recs) <= 2, "overlap {}", max_overlap(&recs));
    // The schedule itself stays on its absolute deadlines...
    for (i, g) in gaps_ms(&scheduled_offsets_ms(&recs)).iter().enumerate() {
        assert_close(*g, 10.0, 0.01, &format!("gap {i}"));
    }
    // ...while the sends fall behind it: the 20th request is due at 190 ms but cannot start
    // before 9 earlier pairs of 50 ms requests have finished (≥ 450 ms).
    let j = run.json();
    let max_lag = phase_stats(&j, "profiling")["max_send_lag_ms"]
        .as_f64()
        .unwrap();
    assert!(max_lag > 200.0, "max_send_lag_ms {max_lag}");
    assert!(ps_u64(&j, "profiling", "late_sends") > 0);
    assert_eq!(ps_u64(&j, "profiling", "completed"), 20);
    assert!(j["send_lag"]["max"].as_f64().unwrap() > 200.0);
}

#[test]
fn request_rate_ramp_starts_slow_then_reaches_the_rate() {
    let _gate = support::shared();
    // 100/s ramped over 0.5 s: the k-th request is due at sqrt(k/100) s while k/100 < 0.25,
    // then at 0.5 + (k/100 − 0.25) s.
    let run = Run::profile(&[
        "--url",
        FAST_MOCK,
        "--request-rate",
        "100",
        "--request-rate-mode",
        "constant",
        "--request-rate-ramp-duration",
        "0.5",
        "--request-count",
        "40",
    ])
    .run();
    run.ok();
    let recs = run.jsonl();
    assert_eq!(recs.len(), 40);
    let offsets = scheduled_offsets_ms(&recs);
    for (k, o) in offsets.iter().enumerate() {
        let u = k as f64 / 100.0;
        let want = if u < 0.25 {
            (2.0 * 0.5 * u).sqrt()
        } else {
            0.5 + (u - 0.25)
        };
        assert_close(*o, want * 1e3, 0.01, &format!("offset {k}"));
    }
    let gaps = gaps_ms(&offsets);
    assert!(gaps[0] > 5.0 * gaps[gaps.len() - 1], "{gaps:?}");
    assert!(
        gaps.windows(2).all(|w| w[1] <= w[0] + 1e-3),
        "gaps never grow during a ramp: {gaps:?}"
    );
    assert_eq!(
        run.json()["input_config"]["loadgen"]["request_rate_ramp_duration"],
        0.5
    );
}

#[test]
fn concurrency_ramp_adds_workers_over_time_and_completes() {
    let _gate = support::shared();
    // 4 workers over 1 s: the second joins 0.25 s after the phase start, so everything that
    // started before then ran one at a time.
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=20&itl_ms=0&tokens=1",
        "--concurrency",
        "4",
        "--concurrency-ramp-duration",
        "1",
        "--request-count",
        "40",
    ])
    .run();
    run.ok();
    let j = run.json();
    assert_eq!(
        j["input_config"]["loadgen"]["concurrency_ramp_duration"],
        1.0
    );
    let recs = run.jsonl();
    assert_eq!(recs.len(), 40);
    assert_eq!(run.stat("request_count", "avg"), 40.0);
    assert!(max_overlap(&recs) <= 4);
    let start = ps_u64(&j, "profiling", "start_time_ns");
    let early: Vec<Value> = recs
        .iter()
        .filter(|r| meta_u64(r, "request_start_ns") < start + 250_000_000)
        .cloned()
        .collect();
    assert!(!early.is_empty());
    assert_eq!(
        max_overlap(&early),
        1,
        "only one worker in the first 0.25 s"
    );
}

#[test]
fn concurrency_ramp_grows_the_cap_of_an_open_loop_phase() {
    let _gate = support::shared();
    // 100 requests/s of 300 ms each would keep ~30 in flight; the cap of 4 ramps from 1 over
    // the first second, so early on only one request is in flight at a time.
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=300&itl_ms=0&tokens=1",
        "--request-rate",
        "100",
        "--request-rate-mode",
        "constant",
        "--concurrency",
        "4",
        "--concurrency-ramp-duration",
        "1",
        "--request-count",
        "30",
    ])
    .run();
    run.ok();
    let recs = run.jsonl();
    assert_eq!(recs.len(), 30);
    assert_eq!(run.stat("request_count", "avg"), 30.0);
    assert!(max_overlap(&recs) <= 4);
    let start = ps_u64(&run.json(), "profiling", "start_time_ns");
    let early: Vec<Value> = recs
        .iter()
        .filter(|r| meta_u64(r, "request_start_ns") < start + 240_000_000)
        .cloned()
        .collect();
    assert!(!early.is_empty());
    assert_eq!(max_overlap(&early), 1, "a cap of one in the first 0.25 s");
    // Later the full cap is used: 4 at once.
    assert_eq!(max_overlap(&recs), 4);
}

#[test]
fn invalid_load_combinations_are_config_errors() {
    let _gate = support::shared();
    let cases: &[(&[&str], &str)] = &[
        (&["--request-rate", "0"], "request-rate"),
        (&["--request-rate", "nan"], "request-rate"),
        (&["--request-rate-ramp-duration", "1"], "--request-rate"),
        (&["--request-cancellation-rate", "150"], "cancellation-rate"),
        (&["--concurrency", "0"], "concurrency"),
        (&["--warmup-concurrency", "0"], "concurrency"),
        (&["--warmup-request-rate", "0"], "warmup-request-rate"),
        (
            &["--request-rate", "5", "--arrival-smoothness", "0"],
            "arrival-smoothness",
        ),
        (&["--benchmark-duration", "0"], "benchmark-duration"),
        (&["--warmup-duration", "0"], "warmup-duration"),
        (&["--concurrency-ramp-duration", "0"], "ramp"),
        (&["--request-count", "0"], "request-count"),
        (&["--request-rate-mode", "bursty"], "bursty"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["--url", "mock"];
        args.extend_from_slice(extra);
        let line = config_error(&args);
        assert!(
            line.contains(needle),
            "{extra:?}: error should mention {needle:?}: {line}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 4. request cancellation
// ---------------------------------------------------------------------------------------

#[test]
fn cancellation_rate_cancels_a_share_of_requests_after_the_delay() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=200&itl_ms=10",
        "--osl",
        "2",
        "--request-cancellation-rate",
        "50",
        "--request-cancellation-delay",
        "0.05",
        "--request-count",
        "40",
        "--concurrency",
        "10",
        "--random-seed",
        "1",
    ])
    .run();
    run.ok();
    let recs = run.jsonl();
    assert_eq!(recs.len(), 40);
    let cancelled: Vec<&Value> = recs
        .iter()
        .filter(|r| meta(r, "was_cancelled") == true)
        .collect();
    let n = cancelled.len() as u64;
    assert!((5..=35).contains(&n), "{n} of 40 cancelled at 50 %");
    for r in &cancelled {
        assert_eq!(r["error"]["code"], 499, "{r}");
        assert_eq!(r["error"]["type"], "RequestCancellationError", "{r}");
        assert_eq!(
            meta(r, "cancellation_time_ns"),
            meta(r, "request_end_ns"),
            "{r}"
        );
        // Cancelled after the delay, never before it.
        let took = meta_u64(r, "request_end_ns") - meta_u64(r, "request_start_ns");
        assert!(took >= 50_000_000, "cancelled after {took} ns: {r}");
    }
    for r in recs.iter().filter(|r| meta(r, "was_cancelled") == false) {
        assert!(r["error"].is_null(), "{r}");
        assert!(meta(r, "cancellation_time_ns").is_null(), "{r}");
    }
    let j = run.json();
    assert_eq!(ps_u64(&j, "profiling", "cancelled"), n);
    assert_eq!(ps_u64(&j, "profiling", "completed"), 40 - n);
    assert_eq!(run.stat("request_count", "avg"), (40 - n) as f64);
    assert_eq!(run.stat("error_request_count", "avg"), n as f64);
    let errs = run.errors();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].0, Some(499));
    assert_eq!(errs[0].1, "RequestCancellationError");
    assert_eq!(errs[0].3, n);
    assert_eq!(
        j["input_config"]["loadgen"]["request_cancellation_rate"],
        50.0
    );
    assert_eq!(
        j["input_config"]["loadgen"]["request_cancellation_delay"],
        0.05
    );
}

#[test]
fn cancellation_rate_100_cancels_everything_and_fails_the_run() {
    let _gate = support::shared();
    let run = Run::profile(&[
        "--url",
        "mock?ttft_ms=200&itl_ms=10",
        "--request-cancellation-rate",
        "100",
        "--request-cancellation-delay",
        "0.02",
        "--request-count",
        "6",
        "--concurrency",
        "6",
    ])
    .run();
    run.expect_code(1);
    assert!(
        run.stderr.contains("every request failed"),
        "{}",
        run.stderr
    );
    let recs = run.jsonl();
    assert_eq!(recs.len(), 6);
    assert!(recs
        .iter()
        .all(|r| meta(r, "was_cancelled") == true && r["error"]["code"] == 499));
    let j = run.json();
    assert_eq!(ps_u64(&j, "profiling", "cancelled"), 6);
    assert_eq!(ps_u64(&j, "profiling", "completed"), 0);
    assert_eq!(run.stat("error_request_count", "avg"), 6.0);
}

fn cancel_run(seed: &str) -> Vec<String> {
    // One worker, so session numbers follow the credit order exactly.
    strings(&[
        "--url",
        "mock?ttft_ms=60&itl_ms=0&tokens=1",
        "--request-cancellation-rate",
        "50",
        "--request-cancellation-delay",
        "0.01",
        "--request-count",
        "16",
        "--concurrency",
        "1",
        "--random-seed",
        seed,
    ])
}

#[test]
fn cancellation_choice_is_reproducible_with_a_seed() {
    let _gate = support::shared();
    let runs = profiles_in_parallel(&[cancel_run("9"), cancel_run("9"), cancel_run("10")]);
    let sets: Vec<BTreeSet<u64>> = runs
        .iter()
        .map(|r| {
            r.ok();
            let recs = r.jsonl();
            assert_eq!(recs.len(), 16);
            cancelled_sessions(&recs)
        })
        .collect();
    assert!(!sets[0].is_empty() && sets[0].len() < 16, "{:?}", sets[0]);
    assert_eq!(sets[0], sets[1], "same seed, same cancelled requests");
    assert_ne!(
        sets[0], sets[2],
        "seeds 9 and 10 cancelled the same requests"
    );
}

// ---------------------------------------------------------------------------------------
// 5. several URLs
// ---------------------------------------------------------------------------------------

#[test]
fn several_urls_are_used_round_robin() {
    let _gate = support::shared();
    let a = MockServer::start(&["--ttft-ms", "1", "--itl-ms", "0", "--default-tokens", "2"]);
    let b = MockServer::start(&["--ttft-ms", "1", "--itl-ms", "0", "--default-tokens", "2"]);
    let run = Run::profile(&[
        "-m",
        "m",
        "-u",
        &a.url(),
        "-u",
        &b.url(),
        "--concurrency",
        "3",
        "--request-count",
        "10",
    ])
    .run();
    run.ok();
    let recs = records_in(&run.jsonl(), "profiling");
    assert_eq!(recs.len(), 10);
    let indices: Vec<u64> = recs.iter().map(|r| meta_u64(r, "url_index")).collect();
    assert_eq!(indices, [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
    let j = run.json();
    let per_url = j["per_url"].as_array().expect("per_url[]");
    assert_eq!(per_url.len(), 2, "{per_url:?}");
    let urls: Vec<&str> = per_url.iter().map(|u| u["url"].as_str().unwrap()).collect();
    assert_eq!(urls, [a.url(), b.url()]);
    let counts: Vec<u64> = per_url
        .iter()
        .map(|u| u["request_count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts.iter().sum::<u64>(), 10);
    assert_eq!(counts, [5, 5]);
    assert!(per_url.iter().all(|u| u["error_request_count"] == 0));
    assert_eq!(j["input_config"]["endpoint"]["urls"][1], b.url());
}

// ---------------------------------------------------------------------------------------
// 6. Ctrl-C / SIGTERM
// ---------------------------------------------------------------------------------------

const ARTIFACTS: [&str; 4] = [
    "profile_export_aiperf.json",
    "profile_export_aiperf.csv",
    "profile_export.jsonl",
    "inputs.json",
];

/// One signal: sending stops, in-flight requests finish, every artifact is written.
fn interrupt_once(sig: libc::c_int) {
    let mut run = Run::profile(&[
        "--url",
        "mock?ttft_ms=20&itl_ms=20",
        "--osl",
        "20",
        "--concurrency",
        "4",
        "--benchmark-duration",
        "30",
        "--benchmark-grace-period",
        "10",
    ])
    .spawn();
    run.wait_for_lines(4);
    run.signal(sig);
    // In-flight requests need ~0.42 s; the grace period is 10 s.
    let out = run
        .wait_within(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running 10 s (the grace period) after signal {sig}"));
    out.ok();
    assert!(out.stderr.contains("Interrupted"), "{}", out.stderr);
    for name in ARTIFACTS {
        assert!(out.dir.join(name).is_file(), "{name} missing after signal");
    }
    let j = out.json();
    assert_eq!(j["was_cancelled"], true);
    assert!(
        j["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("interrupted")),
        "{}",
        j["warnings"]
    );
    out.inputs();
    assert!(out.read("profile_export.jsonl").ends_with('\n'));
    let recs = out.jsonl();
    // The requests in flight at the signal were allowed to finish.
    let sent = ps_u64(&j, "profiling", "sent");
    assert!(sent >= 4);
    assert_eq!(ps_u64(&j, "profiling", "completed"), sent);
    assert_eq!(ps_u64(&j, "profiling", "cancelled"), 0);
    assert_eq!(ps_u64(&j, "profiling", "in_flight"), 0);
    assert_eq!(phase_stats(&j, "profiling")["timed_out"], false);
    assert_eq!(recs.len() as u64, sent);
    assert!(recs.iter().all(|r| r["error"].is_null()));
    assert_eq!(support::stat_of(&j, "request_count", "avg"), sent as f64);
    let csv = out.csv();
    assert!(csv.contains("Request Count"), "{csv}");
}

#[test]
fn sigint_stops_sending_drains_and_writes_every_artifact() {
    let _gate = support::shared();
    interrupt_once(libc::SIGINT);
}

#[test]
fn sigterm_stops_sending_drains_and_writes_every_artifact() {
    let _gate = support::shared();
    interrupt_once(libc::SIGTERM);
}

#[test]
fn second_sigint_exits_at_once_with_130() {
    let _gate = support::shared();
    // Open loop at 20/s with 1 s requests: ~20 are always in flight, with up to 1 s to go,
    // and the grace period is 30 s, so only the second signal can end the run promptly.
    let mut run = Run::profile(&[
        "--url",
        "mock?ttft_ms=20&itl_ms=20",
        "--osl",
        "50",
        "--request-rate",
        "20",
        "--request-rate-mode",
        "constant",
        "--benchmark-duration",
        "30",
        "--benchmark-grace-period",
        "30",
    ])
    .spawn();
    run.wait_for_lines(1);
    run.signal(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(100));
    run.signal(libc::SIGINT);
    let out = run
        .wait_within(Duration::from_secs(10))
        .expect("still running 10 s after the second SIGINT");
    out.expect_code(130);
    assert!(out.stderr.contains("Interrupted twice"), "{}", out.stderr);
    // Whatever made it to disk is whole lines only.
    let text = out.read("profile_export.jsonl");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "partial last line: {:?}",
        text.lines().last()
    );
    for l in text.lines() {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("bad JSONL line ({e}): {l}"));
    }
    assert!(!text.is_empty(), "the line seen before the signal is gone");
}

/// Starts a run against a server that never answers and waits until `in_flight` requests
/// have reached it.
fn stalled_run(server: &ScriptedServer, count: &str, in_flight: usize) -> Running {
    let run = Run::profile(&[
        "--url",
        &server.url(),
        "-m",
        "m",
        "--request-count",
        count,
        "--concurrency",
        "2",
        "--benchmark-grace-period",
        "0.5",
        "--request-timeout-seconds",
        "30",
    ])
    .spawn();
    server.wait_for_requests(in_flight, Duration::from_secs(60));
    run
}

/// After a signal, the grace period bounds the wait for in-flight requests, then they are
/// cancelled and counted.
fn assert_interrupted_and_cancelled(run: Running, cancelled: u64) {
    run.signal(libc::SIGINT);
    // The requests would need the 30 s timeout; the grace period is 0.5 s.
    let out = run
        .wait_within(Duration::from_secs(15))
        .expect("still running 15 s after SIGINT with a 0.5 s grace period");
    // Nothing succeeded.
    out.expect_code(1);
    let j = out.json();
    assert_eq!(j["was_cancelled"], true);
    assert_eq!(ps_u64(&j, "profiling", "sent"), cancelled);
    assert_eq!(ps_u64(&j, "profiling", "cancelled"), cancelled);
    assert_eq!(ps_u64(&j, "profiling", "in_flight"), 0);
    let errs = out.errors();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].0, errs[0].3), (Some(499), cancelled));
    let recs = out.jsonl();
    assert_eq!(recs.len() as u64, cancelled);
    assert!(recs.iter().all(|r| meta(r, "was_cancelled") == true));
}

#[test]
fn sigint_with_a_short_grace_period_cancels_in_flight_requests() {
    let _gate = support::shared();
    // 3 requests, 2 workers: the third is never sent, the two in flight are cancelled.
    let server = stalling_server();
    let run = stalled_run(&server, "3", 2);
    assert_interrupted_and_cancelled(run, 2);
    assert_eq!(server.request_count(), 2);
}

#[test]
fn sigint_after_every_request_is_sent_still_honours_the_grace_period() {
    let _gate = support::shared();
    // 2 requests, 2 workers: both credits are issued at once, before the signal.
    let server = stalling_server();
    let run = stalled_run(&server, "2", 2);
    assert_interrupted_and_cancelled(run, 2);
}

#[test]
fn sigint_during_warmup_skips_profiling_and_still_writes_artifacts() {
    let _gate = support::shared();
    let mut run = Run::profile(&[
        "--url",
        "mock?ttft_ms=100&itl_ms=0&tokens=1",
        "--warmup-request-count",
        "1000",
        "--request-count",
        "3",
        "--concurrency",
        "2",
    ])
    .spawn();
    run.wait_for_lines(2);
    run.signal(libc::SIGINT);
    let out = run
        .wait_within(Duration::from_secs(20))
        .expect("still running 20 s after SIGINT");
    // No profiling request ever ran.
    out.expect_code(1);
    assert!(
        out.stderr.contains("no request completed"),
        "{}",
        out.stderr
    );
    for name in ARTIFACTS {
        assert!(out.dir.join(name).is_file(), "{name} missing");
    }
    let j = out.json();
    assert_eq!(j["was_cancelled"], true);
    assert!(
        j["phase_stats"]["profiling"].is_null(),
        "{}",
        j["phase_stats"]
    );
    let sent = ps_u64(&j, "warmup", "sent");
    assert!(sent < 1000);
    assert_eq!(ps_u64(&j, "warmup", "completed"), sent);
    let recs = out.jsonl();
    assert_eq!(recs.len() as u64, sent);
    assert!(recs.iter().all(|r| phase_of(r) == "warmup"));
    assert_eq!(
        support::stat_of(&j["warmup"], "request_count", "avg"),
        sent as f64
    );
}

// ---------------------------------------------------------------------------------------
// 7. fixed-schedule trace replay
// ---------------------------------------------------------------------------------------

/// Trace line `i`: timestamp 50 i ms, input 20 + 7 i tokens, output 1 + i % 3 tokens.
fn trace_line(i: u64) -> (u64, u64, u64) {
    (50 * i, 20 + 7 * i, 1 + i % 3)
}

/// A 10-line mooncake trace, written in a shuffled line order so that replaying in file
/// order and in timestamp order differ. Returns the file and, per line, its values.
fn write_trace(dir: &Path) -> (PathBuf, Vec<(u64, u64, u64)>) {
    let order = [3u64, 0, 7, 1, 9, 4, 2, 8, 6, 5];
    let rows: Vec<(u64, u64, u64)> = order.iter().map(|i| trace_line(*i)).collect();
    let text: String = rows
        .iter()
        .enumerate()
        .map(|(n, (ts, isl, osl))| {
            format!(
                "{{\"timestamp\": {ts}, \"input_length\": {isl}, \"output_length\": {osl}, \"hash_ids\": [{n}, {}]}}\n",
                n + 100
            )
        })
        .collect();
    (support::write_file(dir, "trace.jsonl", &text), rows)
}

fn trace_args(trace: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = strings(&[
        "--url",
        "mock?ttft_ms=1&itl_ms=0",
        "--input-file",
        &trace.display().to_string(),
        "--custom-dataset-type",
        "mooncake_trace",
    ]);
    a.extend(strings(extra));
    a
}

/// `(line index, record)` for each profiling record, in send (session_num) order; the line is
/// the record's `conversation_id` (`conv-<line>`).
fn records_by_line(run: &Output) -> Vec<(usize, Value)> {
    records_in(&run.jsonl(), "profiling")
        .into_iter()
        .map(|r| {
            let id = meta(&r, "conversation_id").as_str().unwrap().to_string();
            let line: usize = id
                .strip_prefix("conv-")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("conversation_id {id}"));
            (line, r)
        })
        .collect()
}

#[test]
fn fixed_schedule_replays_a_trace_at_its_timestamps() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (trace, rows) = write_trace(tmp.path());
    let run = Run::profile(&trace_args(&trace, &[])).run();
    run.ok();
    let recs = records_by_line(&run);
    assert_eq!(recs.len(), 10);
    assert_eq!(run.stat("request_count", "avg"), 10.0);
    // Scheduled offsets (from the first) are the timestamps.
    let all: Vec<Value> = recs.iter().map(|(_, r)| r.clone()).collect();
    let offsets = scheduled_offsets_ms(&all);
    for (i, o) in offsets.iter().enumerate() {
        assert_close(*o, 50.0 * i as f64, 0.01, &format!("offset {i}"));
    }
    // Sent in timestamp order, each with its own line's lengths.
    let mut prev_ts = None;
    for (line, r) in &recs {
        let (ts, isl, _) = rows[*line];
        assert!(prev_ts < Some(ts), "sent out of timestamp order");
        prev_ts = Some(ts);
        let due = (meta_u64(r, "scheduled_ns") - scheduled_sorted(&all)[0]) as f64 / 1e6;
        assert_close(due, ts as f64, 0.01, &format!("line {line} due"));
        assert_eq!(
            r["metrics"]["input_sequence_length"]["value"], isl,
            "line {line}: {r}"
        );
        assert!(meta(r, "send_lag_ms").is_number(), "{r}");
    }
    // session_num order is timestamp order.
    let ts_in_send_order: Vec<u64> = recs.iter().map(|(l, _)| rows[*l].0).collect();
    assert_eq!(
        ts_in_send_order,
        (0..10).map(|i| 50 * i).collect::<Vec<_>>()
    );
    // inputs.json keeps the file's lines, each asking for its output_length.
    let payloads = run.payloads();
    assert_eq!(payloads.len(), 10);
    for (p, (_, _, osl)) in payloads.iter().zip(&rows) {
        assert_eq!(p["max_completion_tokens"], *osl, "{p}");
    }
    // The mock honours max_completion_tokens, so the output lengths follow the trace.
    for (line, r) in &recs {
        assert_eq!(
            r["metrics"]["output_sequence_length"]["value"],
            rows[*line].2
        );
    }
}

#[test]
fn replay_speedup_compresses_the_schedule() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (trace, _) = write_trace(tmp.path());
    let run = Run::profile(&trace_args(&trace, &["--replay-speedup", "2"])).run();
    run.ok();
    let all: Vec<Value> = records_by_line(&run).into_iter().map(|(_, r)| r).collect();
    assert_eq!(all.len(), 10);
    for (i, o) in scheduled_offsets_ms(&all).iter().enumerate() {
        assert_close(*o, 25.0 * i as f64, 0.01, &format!("offset {i}"));
    }
    assert_eq!(run.json()["input_config"]["input"]["replay_speedup"], 2.0);
}

#[test]
fn fixed_schedule_offsets_select_a_window_of_the_trace() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (trace, rows) = write_trace(tmp.path());
    // Window [60, 300] ms: timestamps 100..=300 (the end is inclusive); time zero is 60 ms.
    let run = Run::profile(&trace_args(
        &trace,
        &[
            "--fixed-schedule-start-offset",
            "60",
            "--fixed-schedule-end-offset",
            "300",
        ],
    ))
    .run();
    run.ok();
    let recs = records_by_line(&run);
    let ts: Vec<u64> = recs.iter().map(|(l, _)| rows[*l].0).collect();
    assert_eq!(ts, [100, 150, 200, 250, 300]);
    let all: Vec<Value> = recs.iter().map(|(_, r)| r.clone()).collect();
    for (i, o) in scheduled_offsets_ms(&all).iter().enumerate() {
        assert_close(*o, 50.0 * i as f64, 0.01, &format!("offset {i}"));
    }
    // Offsets count from the start offset, not from the first selected timestamp: the first
    // request is due 40 ms into the phase (a timer never fires early, so this is a floor).
    let j = run.json();
    let start = ps_u64(&j, "profiling", "start_time_ns");
    let first = scheduled_sorted(&all)[0];
    assert!(
        first >= start + 40_000_000,
        "first request due {:.3} ms after the phase start",
        (first - start) as f64 / 1e6
    );
    assert_eq!(run.stat("request_count", "avg"), 5.0);
    assert_eq!(ps_u64(&j, "profiling", "expected"), 5);
}

#[test]
fn fixed_schedule_is_on_by_default_and_can_be_turned_off() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (trace, _) = write_trace(tmp.path());
    let runs = profiles_in_parallel(&[
        trace_args(&trace, &["--fixed-schedule"]),
        trace_args(&trace, &["--no-fixed-schedule", "--concurrency", "2"]),
    ]);
    // Explicit --fixed-schedule: same as the default, scheduled at the timestamps.
    runs[0].ok();
    let on = runs[0].jsonl();
    assert_eq!(on.len(), 10);
    assert_close(
        *scheduled_offsets_ms(&on).last().unwrap(),
        450.0,
        0.01,
        "last offset",
    );
    // --no-fixed-schedule: the trace is a plain dataset, sent closed loop, once per line.
    runs[1].ok();
    let off = runs[1].jsonl();
    assert_eq!(off.len(), 10);
    assert!(off.iter().all(|r| meta(r, "scheduled_ns").is_null()));
}

/// Args for the mock, replaying `file` as a mooncake trace, plus `extra`.
fn with_trace(file: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = strings(&[
        "--url",
        "mock",
        "--input-file",
        &file.display().to_string(),
        "--custom-dataset-type",
        "mooncake_trace",
    ]);
    a.extend(strings(extra));
    a
}

#[test]
fn fixed_schedule_misuse_is_a_config_error() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (trace, _) = write_trace(tmp.path());
    let cases: Vec<(Vec<String>, &str)> = vec![
        // --fixed-schedule needs a file to take timestamps from.
        (
            strings(&["--url", "mock", "--fixed-schedule"]),
            "--input-file",
        ),
        (
            with_trace(&trace, &["--replay-speedup", "0"]),
            "replay-speedup",
        ),
        (
            with_trace(
                &trace,
                &[
                    "--fixed-schedule-start-offset",
                    "300",
                    "--fixed-schedule-end-offset",
                    "100",
                ],
            ),
            "end-offset",
        ),
    ];
    for (args, needle) in cases {
        let line = config_error(&args);
        assert!(
            line.contains(needle),
            "{args:?}: error should mention {needle:?}: {line}"
        );
    }
}

/// Misuse that shows only once the trace is read (after `config::load`): checked end to end.
#[test]
fn fixed_schedule_misuse_found_in_the_trace_is_a_usage_error() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let (trace, _) = write_trace(tmp.path());
    let no_ts = support::write_file(
        tmp.path(),
        "no_ts.jsonl",
        "{\"input_length\": 10}\n{\"input_length\": 12}\n",
    );
    let cases: Vec<(Vec<String>, &str)> = vec![
        // A rate and a trace's timestamps cannot both decide when to send.
        (
            with_trace(&trace, &["--request-rate", "10"]),
            "--request-rate",
        ),
        // --fixed-schedule needs timestamps.
        (with_trace(&no_ts, &["--fixed-schedule"]), "timestamp"),
        // A window with no timestamps in it.
        (
            with_trace(&trace, &["--fixed-schedule-start-offset", "1000"]),
            "offsets",
        ),
    ];
    for (args, needle) in cases {
        let out = Run::profile(&args).run();
        let line = out.assert_usage_error();
        assert!(
            line.contains(needle),
            "{args:?}: error should mention {needle:?}: {line}"
        );
        assert!(
            !out.dir.join("profile_export.jsonl").exists(),
            "{args:?}: no run should start"
        );
    }
}
