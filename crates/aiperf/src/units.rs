//! Every number a user can give, checked in one place: the value parser of each numeric
//! `profile` flag (so a bad value is rejected at parse time, with clap naming the flag, or
//! the config file its line), the bounds they are checked against (also used for the numbers
//! of `--input-file`), conversions to `Duration` that cannot panic, and how durations appear
//! in artifacts (fractional seconds). A leaf module.
//!
//! Each bound is far beyond any real benchmark, so a value past it is a typo; well past it,
//! timer arithmetic overflows or memory runs out. They are listed in `docs/config.md`.

use std::time::Duration;

use serde::Serializer;

/// The longest duration any flag or input-file delay accepts: about 115 days. Longer is a
/// typo, and much longer overflows the clock arithmetic of timers and deadlines.
pub const MAX_SECONDS: f64 = 1e7;
/// The longest prompt or output (`--isl`, `--osl`, `--prefix-prompt-length`,
/// `--isl-block-size`, `input_length` and `output_length` in input files), and the largest
/// `--isl-stddev` / `--osl-stddev`. A million tokens is about 4 MB of text per prompt.
pub const MAX_TOKENS: u32 = 1_000_000;
/// The most synthetic prompts (`--num-dataset-entries`), all built before the run.
pub const MAX_DATASET_ENTRIES: usize = 10_000_000;
/// The most tokens of synthetic prompt text, summed over the dataset (entries × batch ×
/// (ISL + prefix) + the prefixes): about 4 GB of text, built in memory before the run.
pub const MAX_DATASET_TOKENS: u64 = 1_000_000_000;
/// The most requests in a phase (`--request-count`, `--warmup-request-count`).
pub const MAX_REQUESTS: u64 = 1_000_000_000;
/// The most requests in flight (`--concurrency`, `--warmup-concurrency`): each is a task and
/// a connection.
pub const MAX_CONCURRENCY: usize = 1_000_000;
/// The slowest request rate: one request every ~17 minutes. Slower rates put the next
/// deadline days away.
pub const MIN_RATE: f64 = 1e-3;
/// The fastest request rate: ten million requests per second.
pub const MAX_RATE: f64 = 1e7;
/// `--arrival-smoothness` (the gamma shape): the gaps' coefficient of variation is
/// 1/√K, so this allows from about 32 (very bursty) to 0.001 (nearly constant).
pub const MIN_SMOOTHNESS: f64 = 1e-3;
pub const MAX_SMOOTHNESS: f64 = 1e6;
/// `--replay-speedup`: from a thousand times slower to a million times faster.
pub const MIN_SPEEDUP: f64 = 1e-3;
pub const MAX_SPEEDUP: f64 = 1e6;
/// The most inputs in one embeddings request (`--batch-size`).
pub const MAX_BATCH_SIZE: u32 = 100_000;
/// The most distinct shared prefixes (`--num-prefix-prompts`).
pub const MAX_PREFIX_PROMPTS: u32 = 100_000;
/// The largest trace timestamp or `--fixed-schedule-*-offset`, in ms: about 31,700 years, so
/// Unix-epoch milliseconds are accepted (a trace is replayed from its first timestamp).
pub const MAX_TIMESTAMP_MS: f64 = 1e15;
/// The longest a trace may span (last timestamp − first), in ms: [`MAX_SECONDS`].
pub const MAX_TRACE_SPAN_MS: f64 = MAX_SECONDS * 1e3;
/// The longest multi-turn `delay`, in ms: [`MAX_SECONDS`].
pub const MAX_DELAY_MS: f64 = MAX_SECONDS * 1e3;
/// The most turns of a synthetic conversation (`--conversation-turn-mean`, its deviation).
/// Every turn resends the whole conversation so far, so far fewer are already huge.
pub const MAX_TURNS: u32 = 100_000;
/// The largest `--conversation-turn-delay-ratio`: a synthetic delay times it is still
/// bounded by [`MAX_DELAY_MS`].
pub const MAX_DELAY_RATIO: f64 = 1e6;
/// The most items in one input-file line's `texts` or `hash_ids`.
pub const MAX_LIST_ITEMS: usize = MAX_TOKENS as usize;

/// A finite number. YAML's `.nan` and `.inf` are named as such.
pub fn number(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v: f64 = match t.parse() {
        Ok(v) => v,
        Err(_)
            if matches!(
                t.to_ascii_lowercase().as_str(),
                ".nan" | ".inf" | "+.inf" | "-.inf"
            ) =>
        {
            return Err(format!("`{s}` is not a finite number"))
        }
        Err(_) => return Err(format!("`{s}` is not a number")),
    };
    if !v.is_finite() {
        return Err(format!("`{s}` is not a finite number"));
    }
    Ok(v)
}

/// `v` if it is finite and in `min..=max`. The error is the range (`unit` ends it, e.g.
/// " tokens"); clap, or the input-file loader, adds the name and the value.
pub fn check_real(v: f64, min: f64, max: f64, unit: &str) -> Result<f64, String> {
    if v.is_finite() && (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(format!("must be from {min} to {max}{unit}"))
    }
}

/// `v` if it is in `min..=max`; the error is the range.
pub fn check_whole(v: u64, min: u64, max: u64, unit: &str) -> Result<u64, String> {
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(format!("must be from {min} to {max}{unit}"))
    }
}

/// A number for a message: plain unless very large or very small (`1e300`, not 301 digits).
pub fn show(v: f64) -> String {
    if v != 0.0 && v.is_finite() && !(1e-6..1e15).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        v.to_string()
    }
}

fn real(s: &str, min: f64, max: f64, unit: &str) -> Result<f64, String> {
    check_real(number(s)?, min, max, unit)
}

/// A whole number in `min..=max`. Written as an integer, or as a float with no fraction
/// (`1e3`, and `1000.0`, which is how YAML's `1e3` reads back).
fn whole(s: &str, min: u64, max: u64, unit: &str) -> Result<u64, String> {
    let t = s.trim();
    if let Ok(v) = t.parse::<u64>() {
        return check_whole(v, min, max, unit);
    }
    let v = number(s)?;
    if v.fract() != 0.0 {
        return Err(format!("`{s}` is not a whole number"));
    }
    if !(min as f64..=max as f64).contains(&v) {
        return Err(format!("must be from {min} to {max}{unit}"));
    }
    // In range, so the cast is exact.
    check_whole(v as u64, min, max, unit)
}

/// `u64` → a narrower integer type, for a value already checked against a bound that fits.
fn narrow<T: TryFrom<u64>>(v: u64) -> Result<T, String> {
    T::try_from(v).map_err(|_| format!("{v} is too large"))
}

/// A token count from 1 to [`MAX_TOKENS`] (`--isl`, `--osl`, `--isl-block-size`).
pub fn tokens(s: &str) -> Result<u32, String> {
    narrow(whole(s, 1, MAX_TOKENS.into(), " tokens")?)
}

/// A token count from 0 to [`MAX_TOKENS`] (`--prefix-prompt-length`).
pub fn tokens_or_zero(s: &str) -> Result<u32, String> {
    narrow(whole(s, 0, MAX_TOKENS.into(), " tokens")?)
}

/// A standard deviation of a length, from 0 to [`MAX_TOKENS`] (`--isl-stddev`, `--osl-stddev`).
pub fn token_stddev(s: &str) -> Result<f64, String> {
    real(s, 0.0, MAX_TOKENS.into(), " tokens")
}

/// `--num-dataset-entries`: 1 to [`MAX_DATASET_ENTRIES`].
pub fn dataset_entries(s: &str) -> Result<usize, String> {
    narrow(whole(s, 1, MAX_DATASET_ENTRIES as u64, "")?)
}

/// `--num-prefix-prompts`: 0 to [`MAX_PREFIX_PROMPTS`].
pub fn prefix_prompts(s: &str) -> Result<u32, String> {
    narrow(whole(s, 0, MAX_PREFIX_PROMPTS.into(), "")?)
}

/// `--batch-size`: 1 to [`MAX_BATCH_SIZE`].
pub fn batch_size(s: &str) -> Result<u32, String> {
    narrow(whole(s, 1, MAX_BATCH_SIZE.into(), "")?)
}

/// `--request-count`: 1 to [`MAX_REQUESTS`].
pub fn request_count(s: &str) -> Result<u64, String> {
    whole(s, 1, MAX_REQUESTS, " requests")
}

/// `--warmup-request-count`: 0 to [`MAX_REQUESTS`].
pub fn request_count_or_zero(s: &str) -> Result<u64, String> {
    whole(s, 0, MAX_REQUESTS, " requests")
}

/// `--conversation-num`, `--num-warmup-sessions`: 1 to [`MAX_REQUESTS`] conversations.
pub fn conversation_count(s: &str) -> Result<u64, String> {
    whole(s, 1, MAX_REQUESTS, " conversations")
}

/// `--conversation-turn-mean`: 1 to [`MAX_TURNS`].
pub fn turns(s: &str) -> Result<u32, String> {
    narrow(whole(s, 1, MAX_TURNS.into(), " turns")?)
}

/// `--conversation-turn-stddev`: 0 to [`MAX_TURNS`] (a whole number, as in AIPerf).
pub fn turns_stddev(s: &str) -> Result<u32, String> {
    narrow(whole(s, 0, MAX_TURNS.into(), " turns")?)
}

/// A delay between turns in ms, or its deviation: 0 to [`MAX_DELAY_MS`].
pub fn delay_ms(s: &str) -> Result<f64, String> {
    real(s, 0.0, MAX_DELAY_MS, " ms")
}

/// `--conversation-turn-delay-ratio`: 0 to [`MAX_DELAY_RATIO`].
pub fn delay_ratio(s: &str) -> Result<f64, String> {
    real(s, 0.0, MAX_DELAY_RATIO, "")
}

/// `--concurrency`, `--warmup-concurrency`: 1 to [`MAX_CONCURRENCY`].
pub fn concurrency(s: &str) -> Result<usize, String> {
    narrow(whole(s, 1, MAX_CONCURRENCY as u64, "")?)
}

/// The most shards of one run (`aiperf kube manifest --shards`): each is a pod, and the
/// merge reads every shard's records.
pub const MAX_SHARDS: u64 = 1024;

/// `--shards`: 1 to [`MAX_SHARDS`], a whole number.
pub fn shard_count(s: &str) -> Result<u32, String> {
    narrow(whole(s, 1, MAX_SHARDS, " shards")?)
}

/// The most worker threads of the runtime (`--workers-max`); the cores cap it further.
pub const MAX_WORKERS: u64 = 4096;

/// `--workers-max`: 1 to [`MAX_WORKERS`], a whole number.
pub fn workers(s: &str) -> Result<usize, String> {
    narrow(whole(s, 1, MAX_WORKERS, " threads")?)
}

/// Most runs of one point (`--num-profile-runs`).
pub const MAX_PROFILE_RUNS: u64 = 1000;

/// `--num-profile-runs`: 1 to [`MAX_PROFILE_RUNS`].
pub fn profile_runs(s: &str) -> Result<u32, String> {
    narrow(whole(s, 1, MAX_PROFILE_RUNS, " runs")?)
}

/// `--confidence-level`: more than 0, less than 1 (0.5 to 0.9999).
pub fn confidence_level(s: &str) -> Result<f64, String> {
    real(s, 0.5, 0.9999, " (a confidence level)")
}

/// One `ISL/OSL` pair of `--isl-osl-pairs`, e.g. `128/512`: two token counts.
pub fn isl_osl_pair(s: &str) -> Result<(u32, u32), String> {
    let (isl, osl) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}` is not an ISL/OSL pair like 128/512"))?;
    let part = |v: &str, what: &str| tokens(v).map_err(|e| format!("`{s}`: {what} {e}"));
    Ok((part(isl, "ISL")?, part(osl, "OSL")?))
}

/// Requests per second, [`MIN_RATE`] to [`MAX_RATE`].
pub fn rate(s: &str) -> Result<f64, String> {
    real(s, MIN_RATE, MAX_RATE, " requests per second")
}

/// `--arrival-smoothness`: [`MIN_SMOOTHNESS`] to [`MAX_SMOOTHNESS`].
pub fn smoothness(s: &str) -> Result<f64, String> {
    real(s, MIN_SMOOTHNESS, MAX_SMOOTHNESS, "")
}

/// `--replay-speedup`: [`MIN_SPEEDUP`] to [`MAX_SPEEDUP`].
pub fn speedup(s: &str) -> Result<f64, String> {
    real(s, MIN_SPEEDUP, MAX_SPEEDUP, "")
}

/// A percentage, 0 to 100.
pub fn percent(s: &str) -> Result<f64, String> {
    real(s, 0.0, 100.0, " (percent)")
}

/// A ratio, 0 to 1 (`--failed-request-threshold`).
pub fn ratio(s: &str) -> Result<f64, String> {
    real(s, 0.0, 1.0, " (a ratio)")
}

/// A trace offset in ms, 0 to [`MAX_TIMESTAMP_MS`] (`--fixed-schedule-*-offset`).
pub fn offset_ms(s: &str) -> Result<f64, String> {
    real(s, 0.0, MAX_TIMESTAMP_MS, " ms")
}

fn duration(v: f64, unit: f64, max_shown: &str) -> Result<Duration, String> {
    if v < 0.0 {
        return Err("must not be negative".into());
    }
    if v / unit > MAX_SECONDS {
        return Err(format!("must be at most {max_shown}"));
    }
    Ok(clamped_secs(v / unit))
}

/// Seconds, zero or more (`--benchmark-grace-period`, `--request-cancellation-delay`).
pub fn seconds(s: &str) -> Result<Duration, String> {
    duration(number(s)?, 1.0, "10000000 seconds")
}

/// Seconds, more than zero (durations, ramps, timeouts).
pub fn positive_seconds(s: &str) -> Result<Duration, String> {
    let d = seconds(s)?;
    if d.is_zero() {
        return Err("must be more than zero seconds".into());
    }
    Ok(d)
}

/// The shortest time slice (`--slice-duration`): a millisecond. Shorter slices hold a
/// request or two each, and make as many slices as requests.
pub const MIN_SLICE_SECONDS: f64 = 1e-3;

/// `--slice-duration`: seconds, from [`MIN_SLICE_SECONDS`] to [`MAX_SECONDS`].
pub fn slice_seconds(s: &str) -> Result<Duration, String> {
    let v = number(s)?;
    if !(MIN_SLICE_SECONDS..=MAX_SECONDS).contains(&v) {
        return Err("must be from 0.001 to 10000000 seconds".into());
    }
    Ok(clamped_secs(v))
}

/// The shortest `--server-metrics-interval`, in seconds.
pub const MIN_SCRAPE_INTERVAL: f64 = 0.05;
/// The longest `--server-metrics-interval`, in seconds.
pub const MAX_SCRAPE_INTERVAL: f64 = 3600.0;

/// Seconds between scrapes (`--server-metrics-interval`).
pub fn scrape_interval(s: &str) -> Result<Duration, String> {
    let v = check_real(
        number(s)?,
        MIN_SCRAPE_INTERVAL,
        MAX_SCRAPE_INTERVAL,
        " seconds",
    )?;
    Ok(clamped_secs(v))
}

/// Milliseconds, zero or more (the mock server's latencies).
pub fn millis(s: &str) -> Result<Duration, String> {
    duration(number(s)?, 1e3, "10000000000 ms")
}

/// `secs` as a `Duration`, never panicking: NaN and negatives are zero, anything above
/// [`MAX_SECONDS`] is [`MAX_SECONDS`]. For values computed from checked ones (trace offsets,
/// delays, schedules), so that a value that slipped through cannot take a task down.
pub fn clamped_secs(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs.clamp(0.0, MAX_SECONDS)).unwrap_or(Duration::ZERO)
}

/// [`clamped_secs`] for milliseconds.
pub fn clamped_millis(ms: f64) -> Duration {
    clamped_secs(ms / 1e3)
}

/// A duration as seconds.
pub fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// An optional duration as seconds, or null.
pub fn opt_secs<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seconds_reject_what_cannot_be_a_duration() {
        assert_eq!(seconds("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(seconds("0").unwrap(), Duration::ZERO);
        assert_eq!(seconds("-0").unwrap(), Duration::ZERO);
        for bad in [
            "nan", "inf", "-inf", ".nan", ".inf", "-1", "1e20", "1e300", "abc", "",
        ] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
        assert!(positive_seconds("0").is_err());
        assert_eq!(
            positive_seconds("10000000").unwrap(),
            Duration::from_secs(10_000_000)
        );
        assert!(positive_seconds("10000001").is_err());
        assert!(positive_seconds("1e-300").is_err(), "rounds to zero");
    }

    #[test]
    fn millis_are_thousandths() {
        assert_eq!(millis("2.5").unwrap(), Duration::from_micros(2500));
        assert!(millis("1e300").is_err());
        assert!(millis("inf").is_err());
        assert!(millis("-0.1").is_err());
    }

    #[test]
    fn whole_numbers_take_integers_and_integral_floats_in_range() {
        assert_eq!(tokens("550").unwrap(), 550);
        assert_eq!(tokens(" 1e3 ").unwrap(), 1000);
        assert_eq!(
            tokens("1000.0").unwrap(),
            1000,
            "YAML's 1e3 reads back as 1000.0"
        );
        assert_eq!(tokens("1000000").unwrap(), MAX_TOKENS);
        for bad in [
            "0",
            "-1",
            "1000001",
            "1000000000",
            "1e300",
            "2.5",
            "nan",
            "inf",
            ".nan",
            "x",
            "",
            "18446744073709551616",
        ] {
            assert!(tokens(bad).is_err(), "{bad}");
        }
        assert_eq!(tokens_or_zero("0").unwrap(), 0);
        assert_eq!(request_count("1000000000").unwrap(), MAX_REQUESTS);
        assert!(request_count("1000000001").is_err());
        assert!(request_count("0").is_err());
        assert_eq!(request_count_or_zero("0").unwrap(), 0);
        assert_eq!(concurrency("1000000").unwrap(), MAX_CONCURRENCY);
        assert!(concurrency("1000001").is_err());
        assert!(concurrency("0").is_err());
        assert_eq!(dataset_entries("10000000").unwrap(), MAX_DATASET_ENTRIES);
        assert!(dataset_entries("10000001").is_err());
        assert_eq!(batch_size("100000").unwrap(), MAX_BATCH_SIZE);
        assert!(batch_size("100001").is_err());
        assert_eq!(prefix_prompts("100000").unwrap(), MAX_PREFIX_PROMPTS);
        assert!(prefix_prompts("100001").is_err());
        assert_eq!(conversation_count("1000000000").unwrap(), MAX_REQUESTS);
        assert!(conversation_count("0").is_err() && conversation_count("1e10").is_err());
        assert_eq!(turns("100000").unwrap(), MAX_TURNS);
        assert!(turns("0").is_err() && turns("100001").is_err() && turns("2.5").is_err());
        assert_eq!(turns_stddev("0").unwrap(), 0);
        assert!(turns_stddev("-1").is_err() && turns_stddev("nan").is_err());
    }

    #[test]
    fn reals_are_finite_and_in_range() {
        assert_eq!(rate("0.001").unwrap(), MIN_RATE);
        assert_eq!(rate("1e7").unwrap(), MAX_RATE);
        for bad in ["0", "1e-20", "0.0009", "1.1e7", "nan", "inf", "-5", ".inf"] {
            assert!(rate(bad).is_err(), "{bad}");
        }
        assert_eq!(token_stddev("0").unwrap(), 0.0);
        for bad in ["nan", "inf", "-1", "1e308", "1000001"] {
            assert!(token_stddev(bad).is_err(), "{bad}");
        }
        for bad in ["0", "1e-4", "1e7", "nan"] {
            assert!(smoothness(bad).is_err(), "{bad}");
            assert!(speedup(bad).is_err(), "{bad}");
        }
        assert_eq!(percent("100").unwrap(), 100.0);
        assert!(percent("100.01").is_err() && percent("-1").is_err() && percent("nan").is_err());
        assert_eq!(offset_ms("0").unwrap(), 0.0);
        assert!(offset_ms("1.7e12").is_ok(), "Unix-epoch ms");
        assert!(offset_ms("1e16").is_err() && offset_ms("-1").is_err());
        assert_eq!(delay_ms("0").unwrap(), 0.0);
        assert_eq!(delay_ms("1e10").unwrap(), MAX_DELAY_MS);
        for bad in ["-1", "nan", "inf", "1.1e10"] {
            assert!(delay_ms(bad).is_err(), "{bad}");
        }
        assert_eq!(delay_ratio("0").unwrap(), 0.0);
        assert!(delay_ratio("-0.5").is_err() && delay_ratio("1e7").is_err());
        assert!(delay_ratio(".nan").is_err());
    }

    #[test]
    fn messages_name_the_range() {
        assert_eq!(tokens("0").unwrap_err(), "must be from 1 to 1000000 tokens");
        assert_eq!(
            rate("1e-20").unwrap_err(),
            "must be from 0.001 to 10000000 requests per second"
        );
        assert_eq!(
            token_stddev("nan").unwrap_err(),
            "`nan` is not a finite number"
        );
        assert_eq!(tokens("2.5").unwrap_err(), "`2.5` is not a whole number");
        assert_eq!(show(1e300), "1e300");
        assert_eq!(show(-2.5), "-2.5");
    }

    #[test]
    fn clamped_conversions_never_panic() {
        assert_eq!(clamped_secs(f64::NAN), Duration::ZERO);
        assert_eq!(clamped_secs(-1.0), Duration::ZERO);
        assert_eq!(clamped_secs(f64::INFINITY), Duration::from_secs(10_000_000));
        assert_eq!(clamped_millis(1e300), Duration::from_secs(10_000_000));
        assert_eq!(clamped_millis(1.5), Duration::from_micros(1500));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn parsers_never_panic(s in "\\PC{0,24}", v in any::<f64>(), n in any::<i128>()) {
            for text in [s, v.to_string(), format!("{v:e}"), n.to_string()] {
                let _ = tokens(&text);
                let _ = tokens_or_zero(&text);
                let _ = token_stddev(&text);
                let _ = dataset_entries(&text);
                let _ = prefix_prompts(&text);
                let _ = batch_size(&text);
                let _ = conversation_count(&text);
                let _ = turns(&text);
                let _ = turns_stddev(&text);
                let _ = delay_ms(&text);
                let _ = delay_ratio(&text);
                let _ = request_count(&text);
                let _ = request_count_or_zero(&text);
                let _ = concurrency(&text);
                let _ = smoothness(&text);
                let _ = speedup(&text);
                let _ = percent(&text);
                let _ = offset_ms(&text);
                let _ = millis(&text);
                if let Ok(r) = rate(&text) {
                    prop_assert!((MIN_RATE..=MAX_RATE).contains(&r));
                }
                if let Ok(d) = seconds(&text) {
                    prop_assert!(d.as_secs_f64() <= MAX_SECONDS);
                }
            }
            let _ = clamped_secs(v);
        }
    }
}
