//! Values with units, both ways: the one parser of every duration flag (so each number is
//! checked once, at parse time, with clap naming the flag or the config file its line) and
//! how durations appear in artifacts (fractional seconds). A leaf module.

use std::time::Duration;

use serde::Serializer;

/// The longest duration any flag accepts: about 115 days. Longer is a typo, and much
/// longer overflows the clock arithmetic of timers and deadlines.
pub const MAX_SECONDS: f64 = 1e7;

fn number(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if !v.is_finite() {
        return Err(format!("`{s}` is not a finite number"));
    }
    Ok(v)
}

fn duration(v: f64, unit: f64, max_shown: &str) -> Result<Duration, String> {
    if v < 0.0 {
        return Err("must not be negative".into());
    }
    if v / unit > MAX_SECONDS {
        return Err(format!("must be at most {max_shown}"));
    }
    Ok(Duration::from_secs_f64(v / unit))
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

/// Milliseconds, zero or more (the mock server's latencies).
pub fn millis(s: &str) -> Result<Duration, String> {
    duration(number(s)?, 1e3, "10000000000 ms")
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

    #[test]
    fn seconds_reject_what_cannot_be_a_duration() {
        assert_eq!(seconds("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(seconds("0").unwrap(), Duration::ZERO);
        for bad in ["nan", "inf", "-inf", "-1", "1e20", "1e300", "abc", ""] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
        assert!(positive_seconds("0").is_err());
        assert_eq!(
            positive_seconds("10000000").unwrap(),
            Duration::from_secs(10_000_000)
        );
        assert!(positive_seconds("10000001").is_err());
    }

    #[test]
    fn millis_are_thousandths() {
        assert_eq!(millis("2.5").unwrap(), Duration::from_micros(2500));
        assert!(millis("1e300").is_err());
        assert!(millis("inf").is_err());
        assert!(millis("-0.1").is_err());
    }
}
