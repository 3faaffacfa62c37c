//! What the mock does: its timing, its tokens, and the faults it injects.
//!
//! There is one grammar. Every option is a `mock?KEY=VALUE` URL option and an
//! `aiperf mock-server --KEY VALUE` flag (`_` written `-`; `tokens` is `--default-tokens` and
//! `seed` is `--random-seed`), and both go through the same value parsers below (clap calls
//! them for the flags, [`MockConfig::set`] for the URL) and the same [`MockConfig::validate`].
//!
//! **Which requests a fault hits.** The mock numbers the requests it serves 1, 2, 3, … in the
//! order it reads them (every POST to an API path with a JSON body, across all connections).
//! Request number `k` gets the fault when all three hold:
//! `k > fault_after`, `(k − fault_after)` is a multiple of `fault_every`, and the seeded draw
//! `mix(seed ^ FAULT_SALT, k − 1)` falls under `fault_rate` percent. With the defaults
//! (`fault_after=0`, `fault_every=1`, `fault_rate=100`) every request gets it; `fault_every=4`
//! hits requests 4, 8, 12, …; `fault_after=10` hits 11 and later. The draw depends only on
//! the seed and the number, so a given run always faults the same requests.
//! `error_rate` is an older, independent seeded share (`mix(seed, k − 1)`), checked first.
//!
//! **The load model.** With `ttft_per_inflight_ms` (`k_t`) and `itl_per_inflight_ms` (`k_i`),
//! latency grows with the load at the mock. When a request arrives (its JSON body read), the
//! mock counts `n`, the requests in flight *including this one*: every API request whose body
//! was read and whose answer is not finished (the last event of a stream, or the whole body,
//! handed to the connection; an error answer, a dropped or killed connection also end it).
//! That request then gets, for its whole answer:
//!
//! ```text
//! TTFT = ttft_ms + k_t · n        ITL = itl_ms + k_i · n
//! ```
//!
//! fixed at arrival (tokens still go out on absolute deadlines).
//!
//! **The latency step.** With `ttft_step_ms` (and `step_after_s`, default 0), every request
//! arriving `step_after_s` seconds or more after the mock's first request gets that much
//! more TTFT, on top of the load model: a known change in the middle of a run, for tests and
//! demos of drift (`--slice-duration`). `step_after_s` without a step is refused.
//!
//! **Slots.** With `max_num_seqs=N` at most N requests generate at once, as vLLM schedules:
//! a request past its fault draw waits for a slot (counted in `vllm:num_requests_waiting`),
//! and is answered from the moment it gets one (its TTFT, as the client and `/metrics` see
//! it, includes the wait). 0, the default, is no limit. `kv_cache_tokens` is the capacity of
//! the KV-cache model behind `vllm:kv_cache_usage_perc` (see `metrics.rs`). A request finishes being in
//! flight before its client can see its end, so in a closed loop at concurrency `c`, every
//! request after the first wave arrives to find `n = c` (the first wave sees 1, 2, …, c).
//! Example: `ttft_ms=20&ttft_per_inflight_ms=2` at concurrency 40 gives TTFT 100 ms, at 41
//! 102 ms: the largest concurrency with TTFT ≤ 100 ms is 40. Both default to 0 (no load
//! model); the added time is capped at [`crate::units::MAX_SECONDS`].

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

use crate::mix::mix;
use crate::units;

/// The most tokens the mock generates for one request (a request asking for more gets this
/// many).
pub const MAX_TOKENS: u32 = 1_000_000;

/// Salt of the fault draw, so it is independent of the `error_rate` draw.
pub const FAULT_SALT: u64 = 0xFA17_FA17_FA17_FA17;

/// A fault the mock injects into the requests it selects (see the module docs).
///
/// "After N tokens" means after `min(fault_tokens, tokens of the answer)` token events. A
/// non-streamed answer (and an embeddings answer) gets a mid-stream fault at the moment its
/// body would be sent: `reset`/`close` end the connection with no answer, `stall` never
/// answers, `bad_json`/`garbage` send a body that is not JSON, `endless_stream` sends a 200
/// JSON body that never ends (whitespace), `empty` answers with no content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Fault {
    /// Answer with `error_status` and an OpenAI-style error body.
    Status,
    /// After N tokens, reset the connection (TCP RST: `SO_LINGER` 0, then close).
    Reset,
    /// After N tokens, close the connection (TCP FIN) with the stream unfinished.
    Close,
    /// After N tokens, send nothing more and keep the connection open.
    Stall,
    /// On a reused keep-alive connection (not its first request): no answer; wait
    /// `fault_ms`, then close the connection. A selected first request is answered normally.
    #[value(name = "close_reused")]
    CloseReused,
    /// After N tokens, an SSE `data:` line whose JSON is cut short.
    #[value(name = "bad_json")]
    BadJson,
    /// After N tokens, bytes between events that are no SSE field (not even valid UTF-8); a
    /// correct client skips them and the request succeeds.
    Garbage,
    /// A well-formed stream with no content: the opening event, then the normal end.
    Empty,
    /// `error_status` with a body that never ends: a 16 KiB chunk every `fault_ms`.
    #[value(name = "endless_error")]
    EndlessError,
    /// After N tokens, an SSE comment (`: keep-alive`) every `fault_ms`, never the end.
    #[value(name = "endless_stream")]
    EndlessStream,
    /// Wait `fault_ms` before the response head; the whole answer is that much later.
    #[value(name = "slow_headers")]
    SlowHeaders,
}

impl Fault {
    /// The name used by `fault=` and `--fault`.
    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MockConfig {
    pub ttft: Duration,
    pub itl: Duration,
    /// Added to the TTFT per request in flight at arrival, counting itself (the load model).
    pub ttft_per_inflight: Duration,
    /// Added to the ITL per request in flight at arrival, counting itself (the load model).
    pub itl_per_inflight: Duration,
    /// Tokens generated when a request sets no max tokens.
    pub default_tokens: u32,
    /// Seeds the generated words, `error_rate` and `fault_rate`.
    pub seed: u64,
    /// Percent of requests answered with `error_status` (a seeded draw per request).
    pub error_rate: f64,
    /// The status of `error_rate`, `fault=status` and `fault=endless_error`.
    pub error_status: u16,
    /// The fault injected into the selected requests, if any.
    pub fault: Option<Fault>,
    /// Percent of the requests that `fault_every`/`fault_after` allow that get the fault.
    pub fault_rate: f64,
    /// Only every K-th request (counted after `fault_after`) gets the fault.
    pub fault_every: u64,
    /// The first N requests never get the fault.
    pub fault_after: u64,
    /// Token events sent before a mid-stream fault.
    pub fault_tokens: u32,
    /// `fault_ms`: the wait of `close_reused` and `slow_headers`, the interval of the endless
    /// faults.
    pub fault_delay: Duration,
    /// Append `arrival_unix_ns` of every request to this file.
    pub log_arrivals: Option<PathBuf>,
    /// The most requests generating at once (vLLM's `--max-num-seqs`); later ones wait for a
    /// slot, and their TTFT includes the wait. 0: no limit.
    pub max_num_seqs: u64,
    /// The KV-cache model's capacity in tokens (`vllm:kv_cache_usage_perc`).
    pub kv_cache_tokens: u64,
    /// The latency step: added to the TTFT of every request arriving `step_after` or more
    /// after the mock's first request.
    pub ttft_step: Duration,
    pub step_after: Duration,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            ttft: Duration::from_millis(20),
            itl: Duration::from_millis(5),
            ttft_per_inflight: Duration::ZERO,
            itl_per_inflight: Duration::ZERO,
            default_tokens: 16,
            seed: 0,
            error_rate: 0.0,
            error_status: 500,
            fault: None,
            fault_rate: 100.0,
            fault_every: 1,
            fault_after: 0,
            fault_tokens: 1,
            fault_delay: Duration::from_millis(100),
            log_arrivals: None,
            max_num_seqs: 0,
            kv_cache_tokens: DEFAULT_KV_CACHE_TOKENS,
            ttft_step: Duration::ZERO,
            step_after: Duration::ZERO,
        }
    }
}

/// The KV-cache model's default capacity, in tokens.
pub const DEFAULT_KV_CACHE_TOKENS: u64 = 1_000_000;
/// The largest `max_num_seqs` and `kv_cache_tokens`.
pub const MAX_SEQS: u64 = 1_000_000;
pub const MAX_KV_CACHE_TOKENS: u64 = 1_000_000_000_000;

/// Every URL option, in the order `--help` lists the flags.
pub const OPTIONS: [&str; 19] = [
    "ttft_ms",
    "itl_ms",
    "ttft_per_inflight_ms",
    "itl_per_inflight_ms",
    "ttft_step_ms",
    "step_after_s",
    "max_num_seqs",
    "kv_cache_tokens",
    "tokens",
    "seed",
    "error_rate",
    "error_status",
    "fault",
    "fault_rate",
    "fault_every",
    "fault_after",
    "fault_tokens",
    "fault_ms",
    "log_arrivals",
];

// ---------------------------------------------------------------------------------------
// Value parsers: shared by the URL options and the `aiperf mock-server` flags
// ---------------------------------------------------------------------------------------

/// A percentage from 0 to 100 (`error_rate`, `fault_rate`).
pub fn percent(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|r| (0.0..=100.0).contains(r))
        .ok_or_else(|| format!("`{s}` is not a percentage from 0 to 100"))
}

fn whole(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| format!("`{s}` is not a whole number"))
}

/// A whole number from 0 to [`MAX_TOKENS`] (`tokens`, `fault_tokens`).
pub fn tokens(s: &str) -> Result<u32, String> {
    whole(s)
        .ok()
        .filter(|&n| n <= u64::from(MAX_TOKENS))
        .map(|n| n as u32)
        .ok_or_else(|| format!("`{s}` is not a whole number from 0 to {MAX_TOKENS}"))
}

/// A whole number, 0 or more (`seed`, `fault_after`).
pub fn count(s: &str) -> Result<u64, String> {
    whole(s)
}

/// A whole number, 1 or more (`fault_every`).
pub fn every(s: &str) -> Result<u64, String> {
    whole(s)
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| format!("`{s}` is not a whole number of 1 or more"))
}

/// An HTTP error status, 400 to 599 (`error_status`).
pub fn error_status(s: &str) -> Result<u16, String> {
    s.trim()
        .parse::<u16>()
        .ok()
        .filter(|c| (400..=599).contains(c))
        .ok_or_else(|| format!("`{s}` is not an HTTP error status from 400 to 599"))
}

/// A whole number from 0 to [`MAX_SEQS`] (`max_num_seqs`; 0: no limit).
pub fn seqs(s: &str) -> Result<u64, String> {
    whole(s)
        .ok()
        .filter(|&n| n <= MAX_SEQS)
        .ok_or_else(|| format!("`{s}` is not a whole number from 0 to {MAX_SEQS}"))
}

/// A whole number from 1 to [`MAX_KV_CACHE_TOKENS`] (`kv_cache_tokens`).
pub fn kv_tokens(s: &str) -> Result<u64, String> {
    whole(s)
        .ok()
        .filter(|&n| (1..=MAX_KV_CACHE_TOKENS).contains(&n))
        .ok_or_else(|| format!("`{s}` is not a whole number from 1 to {MAX_KV_CACHE_TOKENS}"))
}

/// A fault name (`fault`), as clap reads `--fault`.
pub fn fault(s: &str) -> Result<Fault, String> {
    Fault::from_str(s.trim(), false).map_err(|_| {
        let names: Vec<String> = Fault::value_variants().iter().map(|f| f.name()).collect();
        format!("`{s}` is not a fault: use one of {}", names.join(", "))
    })
}

impl MockConfig {
    /// Sets one option by its URL key.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "ttft_ms" => self.ttft = units::millis(value)?,
            "itl_ms" => self.itl = units::millis(value)?,
            "ttft_per_inflight_ms" => self.ttft_per_inflight = units::millis(value)?,
            "itl_per_inflight_ms" => self.itl_per_inflight = units::millis(value)?,
            "ttft_step_ms" => self.ttft_step = units::millis(value)?,
            "step_after_s" => self.step_after = units::seconds(value)?,
            "max_num_seqs" => self.max_num_seqs = seqs(value)?,
            "kv_cache_tokens" => self.kv_cache_tokens = kv_tokens(value)?,
            "tokens" => self.default_tokens = tokens(value)?,
            "seed" => self.seed = count(value)?,
            "error_rate" => self.error_rate = percent(value)?,
            "error_status" => self.error_status = error_status(value)?,
            "fault" => self.fault = Some(fault(value)?),
            "fault_rate" => self.fault_rate = percent(value)?,
            "fault_every" => self.fault_every = every(value)?,
            "fault_after" => self.fault_after = count(value)?,
            "fault_tokens" => self.fault_tokens = tokens(value)?,
            "fault_ms" => self.fault_delay = units::millis(value)?,
            "log_arrivals" => {
                if value.is_empty() {
                    return Err("a file path".into());
                }
                self.log_arrivals = Some(PathBuf::from(value))
            }
            _ => {
                return Err(format!(
                    "unknown mock option `{key}`: use {}",
                    OPTIONS.join(", ")
                ))
            }
        }
        Ok(())
    }

    /// Checks what the value parsers cannot see alone (shared by `--url mock?…` and
    /// `aiperf mock-server`), and the ranges again for a config built in code.
    pub fn validate(&self) -> Result<(), String> {
        for (name, pct) in [
            ("error_rate", self.error_rate),
            ("fault_rate", self.fault_rate),
        ] {
            if !(0.0..=100.0).contains(&pct) {
                return Err(format!(
                    "{name} must be a percentage from 0 to 100, got {pct}"
                ));
            }
        }
        if !(400..=599).contains(&self.error_status) {
            return Err(format!(
                "error_status must be an HTTP error status from 400 to 599, got {}",
                self.error_status
            ));
        }
        if self.fault_every == 0 {
            return Err("fault_every must be 1 or more".into());
        }
        for (name, n) in [
            ("tokens", self.default_tokens),
            ("fault_tokens", self.fault_tokens),
        ] {
            if n > MAX_TOKENS {
                return Err(format!("{name} must be at most {MAX_TOKENS}, got {n}"));
            }
        }
        for (name, d) in [
            ("ttft_ms", self.ttft),
            ("itl_ms", self.itl),
            ("ttft_per_inflight_ms", self.ttft_per_inflight),
            ("itl_per_inflight_ms", self.itl_per_inflight),
            ("ttft_step_ms", self.ttft_step),
            ("step_after_s", self.step_after),
            ("fault_ms", self.fault_delay),
        ] {
            if d.as_secs_f64() > units::MAX_SECONDS {
                return Err(format!("{name} must be at most 10000000000 ms"));
            }
        }
        if self.max_num_seqs > MAX_SEQS {
            return Err(format!("max_num_seqs must be at most {MAX_SEQS}"));
        }
        if !(1..=MAX_KV_CACHE_TOKENS).contains(&self.kv_cache_tokens) {
            return Err(format!(
                "kv_cache_tokens must be from 1 to {MAX_KV_CACHE_TOKENS}"
            ));
        }
        if !self.step_after.is_zero() && self.ttft_step.is_zero() {
            return Err(
                "step_after_s (--step-after-s) needs a step: set ttft_step_ms (--ttft-step-ms)"
                    .into(),
            );
        }
        let d = Self::default();
        if self.fault.is_none() {
            let given: Vec<String> = [
                ("fault_rate", self.fault_rate != d.fault_rate),
                ("fault_every", self.fault_every != d.fault_every),
                ("fault_after", self.fault_after != d.fault_after),
                ("fault_tokens", self.fault_tokens != d.fault_tokens),
                ("fault_ms", self.fault_delay != d.fault_delay),
            ]
            .into_iter()
            .filter_map(|(name, set)| set.then_some(name))
            .map(|name| format!("{name} (--{})", name.replace('_', "-")))
            .collect();
            if !given.is_empty() {
                return Err(format!(
                    "{}: no fault to apply to; set fault=KIND (--fault KIND)",
                    given.join(", ")
                ));
            }
        }
        let status_used = self.error_rate > 0.0
            || matches!(self.fault, Some(Fault::Status | Fault::EndlessError));
        if self.error_status != d.error_status && !status_used {
            return Err(
                "error_status (--error-status) applies only with error_rate, fault=status or fault=endless_error"
                    .into(),
            );
        }
        Ok(())
    }

    /// The TTFT and ITL of a request that arrives with `in_flight` requests in flight,
    /// counting itself (the load model, see the module docs).
    pub fn latency(&self, in_flight: u64) -> (Duration, Duration) {
        (
            loaded(self.ttft, self.ttft_per_inflight, in_flight),
            loaded(self.itl, self.itl_per_inflight, in_flight),
        )
    }

    /// The TTFT and ITL of a request that arrives `since_first` after the mock's first
    /// request, with `in_flight` requests in flight: the load model, plus `ttft_step` from
    /// `step_after` on.
    pub fn latency_at(&self, in_flight: u64, since_first: Duration) -> (Duration, Duration) {
        let (ttft, itl) = self.latency(in_flight);
        if !self.ttft_step.is_zero() && since_first >= self.step_after {
            (ttft.saturating_add(self.ttft_step), itl)
        } else {
            (ttft, itl)
        }
    }

    /// Whether request number `n + 1` (`n` counts from 0) is answered with `error_status`
    /// by `error_rate`.
    pub fn error_selected(&self, n: u64) -> bool {
        self.error_rate > 0.0 && draw(self.seed, n) * 100.0 < self.error_rate
    }

    /// The fault request number `n + 1` (`n` counts from 0) gets, if any (see the module
    /// docs). `close_reused` still applies only on a reused connection.
    pub fn fault_for(&self, n: u64) -> Option<Fault> {
        let fault = self.fault?;
        let k = n.checked_add(1)?;
        let selected = k > self.fault_after
            && (k - self.fault_after).is_multiple_of(self.fault_every)
            && draw(self.seed ^ FAULT_SALT, n) * 100.0 < self.fault_rate;
        selected.then_some(fault)
    }
}

/// `base + per · n`, with the added time capped at [`units::MAX_SECONDS`] (never overflows).
fn loaded(base: Duration, per: Duration, n: u64) -> Duration {
    if per.is_zero() || n == 0 {
        return base;
    }
    let cap = Duration::from_secs(units::MAX_SECONDS as u64);
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    base.saturating_add(per.saturating_mul(n).min(cap))
}

/// A uniform draw in [0, 1) from the seed and the request's number.
fn draw(seed: u64, n: u64) -> f64 {
    (mix(seed, n) >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether a `--url` names the built-in mock: `mock` or `mock?option=value&...`.
pub fn is_mock_url(url: &str) -> bool {
    let u = url.trim();
    u == "mock" || u.starts_with("mock?")
}

/// The grammar of the in-process mock's URL: `mock` or `mock?KEY=VALUE&…` with the keys of
/// [`OPTIONS`], e.g. `mock?ttft_ms=20&itl_ms=5&fault=reset&fault_every=4`.
impl std::str::FromStr for MockConfig {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let url = url.trim();
        if !is_mock_url(url) {
            return Err(format!(
                "`{url}` is not a mock URL (`mock` or `mock?option=value`)"
            ));
        }
        let query = url
            .strip_prefix("mock")
            .unwrap_or("")
            .trim_start_matches('?');
        let mut cfg = MockConfig::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if !OPTIONS.contains(&k) {
                return Err(format!(
                    "unknown mock option `{k}`: use {}",
                    OPTIONS.join(", ")
                ));
            }
            cfg.set(k, v)
                .map_err(|why| format!("invalid mock option `{pair}`: {why}"))?;
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn mock_url_options() {
        let c: MockConfig = "mock?ttft_ms=5&itl_ms=1.5&error_rate=10".parse().unwrap();
        assert_eq!(c.ttft, Duration::from_millis(5));
        assert_eq!(c.itl, Duration::from_micros(1500));
        assert_eq!(c.error_rate, 10.0);
        assert_eq!(
            "mock".parse::<MockConfig>().unwrap().ttft,
            Duration::from_millis(20)
        );
        for bad in [
            "mock?bogus=1",
            "mock?ttft_ms=inf",
            "mock?ttft_ms=nan",
            "mock?itl_ms=1e300",
            "mock?ttft_per_inflight_ms=nan",
            "mock?ttft_per_inflight_ms=inf",
            "mock?ttft_per_inflight_ms=-1",
            "mock?ttft_per_inflight_ms=1e300",
            "mock?ttft_per_inflight_ms=",
            "mock?itl_per_inflight_ms=nan",
            "mock?itl_per_inflight_ms=1e11",
            "mock?ttft_ms=-1",
            "mock?error_rate=101",
            "mock?error_rate=inf",
            "mock?error_rate=nan",
            "mock?tokens=1.5",
            "mock?tokens=1e12",
            "mock?tokens=-1",
            "mock?seed=-1",
            "mock?seed=1.5",
            "mock?error_rate=5&error_status=200",
            "mock?error_rate=5&error_status=600",
            "mock?error_rate=5&error_status=5e2",
            "mock?fault=nope",
            "mock?fault=",
            "mock?fault=reset&fault_rate=100.5",
            "mock?fault=reset&fault_rate=-0.1",
            "mock?fault=reset&fault_every=0",
            "mock?fault=reset&fault_every=1e3",
            "mock?fault=reset&fault_after=-1",
            "mock?fault=reset&fault_after=inf",
            "mock?fault=reset&fault_tokens=1000001",
            "mock?fault=stall&fault_ms=inf",
            "mock?fault=stall&fault_ms=1e300",
            "mock?fault=stall&fault_ms=-5",
            "mock?log_arrivals=",
            "mock?max_num_seqs=-1",
            "mock?max_num_seqs=1.5",
            "mock?max_num_seqs=1000001",
            "mock?kv_cache_tokens=0",
            "mock?kv_cache_tokens=nan",
            "mock?ttft_step_ms=inf",
            "mock?ttft_step_ms=-3",
            "mock?ttft_step_ms=10&step_after_s=nan",
            "mock?ttft_step_ms=10&step_after_s=-1",
            "mock?ttft_step_ms=10&step_after_s=1e300",
            "mock?step_after_s=2",
            "http://x",
            "mockery",
        ] {
            let err = bad.parse::<MockConfig>().expect_err(bad);
            assert!(!err.contains('\n'), "{bad}: {err}");
        }
        assert!(is_mock_url(" mock?tokens=3") && !is_mock_url("mockery"));
    }

    #[test]
    fn the_load_model_adds_per_request_in_flight_counting_itself() {
        let c: MockConfig =
            "mock?ttft_ms=20&ttft_per_inflight_ms=2&itl_ms=5&itl_per_inflight_ms=0.5"
                .parse()
                .unwrap();
        let ms = Duration::from_millis;
        assert_eq!(c.latency(1), (ms(22), Duration::from_micros(5500)));
        assert_eq!(c.latency(40), (ms(100), ms(25)));
        assert_eq!(c.latency(41), (ms(102), Duration::from_micros(25500)));
        // The worked example: the largest n with TTFT <= 100 ms is 40.
        let largest = (1..1000u64).filter(|&n| c.latency(n).0 <= ms(100)).max();
        assert_eq!(largest, Some(40));
        // Off by default: the latency does not depend on the load.
        let plain: MockConfig = "mock?ttft_ms=20&itl_ms=5".parse().unwrap();
        assert_eq!(plain.latency(1), plain.latency(500));
        assert_eq!(plain.latency(500), (ms(20), ms(5)));
        // Huge products saturate at the cap instead of overflowing.
        let big: MockConfig = "mock?ttft_per_inflight_ms=1e10".parse().unwrap();
        let (t, _) = big.latency(u64::MAX);
        assert_eq!(t, ms(20) + Duration::from_secs(units::MAX_SECONDS as u64));
        // A config built in code is checked too.
        let bad = MockConfig {
            itl_per_inflight: Duration::from_secs(1 << 40),
            ..MockConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("itl_per_inflight_ms"));
    }

    #[test]
    fn the_latency_step_starts_after_step_after_s() {
        let c: MockConfig = "mock?ttft_ms=20&itl_ms=5&ttft_step_ms=30&step_after_s=2"
            .parse()
            .unwrap();
        let ms = Duration::from_millis;
        assert_eq!(c.latency_at(1, Duration::ZERO), (ms(20), ms(5)));
        assert_eq!(c.latency_at(1, ms(1999)), (ms(20), ms(5)));
        assert_eq!(c.latency_at(1, ms(2000)), (ms(50), ms(5)));
        assert_eq!(c.latency_at(7, ms(9000)), (ms(50), ms(5)));
        // With the load model, the step adds on top.
        let c: MockConfig = "mock?ttft_ms=20&ttft_per_inflight_ms=1&ttft_step_ms=30"
            .parse()
            .unwrap();
        assert_eq!(c.latency_at(4, Duration::ZERO).0, ms(54));
        // No step: the load model alone.
        let plain: MockConfig = "mock".parse().unwrap();
        assert_eq!(plain.latency_at(3, ms(5000)), plain.latency(3));
    }

    #[test]
    fn fault_options_need_a_fault_and_error_status_a_use() {
        for bad in [
            "mock?fault_every=2",
            "mock?fault_rate=50",
            "mock?fault_after=3",
            "mock?fault_tokens=3",
            "mock?fault_ms=3",
            "mock?error_status=503",
            "mock?fault=reset&error_status=503",
        ] {
            let err = bad.parse::<MockConfig>().expect_err(bad);
            assert!(
                err.contains("fault") || err.contains("error_status"),
                "{err}"
            );
        }
        for good in [
            "mock?fault=status&error_status=429",
            "mock?fault=endless_error&error_status=503&fault_ms=0",
            "mock?error_rate=1&error_status=503",
            "mock?fault=close_reused&fault_ms=200&fault_every=2&fault_after=1&fault_rate=50",
            "mock?fault=bad_json&fault_tokens=0&seed=7",
        ] {
            good.parse::<MockConfig>().expect(good);
        }
    }

    #[test]
    fn every_fault_has_a_name_the_url_and_the_flag_accept() {
        for f in Fault::value_variants() {
            let name = f.name();
            assert!(!name.is_empty() && !name.contains('-'), "{name}");
            let c: MockConfig = format!("mock?fault={name}").parse().unwrap();
            assert_eq!(c.fault, Some(*f));
        }
        assert_eq!(fault("close_reused"), Ok(Fault::CloseReused));
        let err = fault("close-reused").unwrap_err();
        assert!(
            err.contains("close_reused") && err.contains("slow_headers"),
            "{err}"
        );
    }

    /// The same settings as URL options and as flags give the same config: one grammar.
    #[test]
    fn url_options_and_flags_are_one_grammar() {
        let pairs = [
            ("ttft_ms", "7.5"),
            ("itl_ms", "0.25"),
            ("ttft_per_inflight_ms", "2"),
            ("itl_per_inflight_ms", "0.125"),
            ("ttft_step_ms", "40"),
            ("step_after_s", "1.5"),
            ("max_num_seqs", "8"),
            ("kv_cache_tokens", "4096"),
            ("tokens", "3"),
            ("seed", "42"),
            ("error_rate", "12.5"),
            ("error_status", "429"),
            ("fault", "slow_headers"),
            ("fault_rate", "50"),
            ("fault_every", "3"),
            ("fault_after", "2"),
            ("fault_tokens", "4"),
            ("fault_ms", "250"),
            ("log_arrivals", "/tmp/arrivals"),
        ];
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, OPTIONS, "every option is tested");
        let url = format!(
            "mock?{}",
            pairs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        );
        let from_url: MockConfig = url.parse().unwrap();
        let mut argv = vec!["aiperf".to_string(), "mock-server".to_string()];
        for (k, v) in pairs {
            let flag = match k {
                "tokens" => "default-tokens".to_string(),
                "seed" => "random-seed".to_string(),
                k => k.replace('_', "-"),
            };
            argv.push(format!("--{flag}"));
            argv.push(v.to_string());
        }
        let cli = crate::cli::Cli::try_parse_from(&argv).unwrap();
        let Some(crate::cli::Command::MockServer(args)) = cli.command else {
            panic!("not mock-server");
        };
        assert_eq!(args.to_mock_config().unwrap(), from_url);

        // The defaults agree too.
        let cli = crate::cli::Cli::try_parse_from(["aiperf", "mock-server"]).unwrap();
        let Some(crate::cli::Command::MockServer(args)) = cli.command else {
            panic!("not mock-server");
        };
        assert_eq!(
            args.to_mock_config().unwrap(),
            "mock".parse::<MockConfig>().unwrap()
        );
    }

    #[test]
    fn bad_flags_fail_in_the_shared_parsers() {
        for (flag, value) in [
            ("--ttft-ms", "1e300"),
            ("--ttft-ms", "inf"),
            ("--itl-ms", "nan"),
            ("--ttft-per-inflight-ms", "nan"),
            ("--ttft-per-inflight-ms", "-2"),
            ("--itl-per-inflight-ms", "inf"),
            ("--itl-per-inflight-ms", "1e300"),
            ("--error-rate", "inf"),
            ("--error-rate", "101"),
            ("--error-status", "200"),
            ("--default-tokens", "1e3"),
            ("--random-seed", "-1"),
            ("--fault", "nope"),
            ("--fault-rate", "nan"),
            ("--fault-every", "0"),
            ("--fault-after", "1.5"),
            ("--fault-tokens", "2000000"),
            ("--fault-ms", "-1"),
            ("--max-num-seqs", "-1"),
            ("--max-num-seqs", "2e6"),
            ("--kv-cache-tokens", "0"),
            ("--ttft-step-ms", "nan"),
            ("--step-after-s", "inf"),
        ] {
            let r = crate::cli::Cli::try_parse_from(["aiperf", "mock-server", flag, value]);
            assert!(r.is_err(), "{flag} {value}");
        }
        // Flags that parse but mean nothing without a fault fail in `validate`.
        let cli = crate::cli::Cli::try_parse_from(["aiperf", "mock-server", "--fault-every", "2"])
            .unwrap();
        let Some(crate::cli::Command::MockServer(args)) = cli.command else {
            panic!("not mock-server");
        };
        assert!(args.to_mock_config().unwrap_err().contains("fault_every"));
    }

    #[test]
    fn selection_is_exact_for_every_and_after_and_seeded_for_rate() {
        let c: MockConfig = "mock?fault=reset&fault_every=4".parse().unwrap();
        let hit: Vec<u64> = (0..12).filter(|&n| c.fault_for(n).is_some()).collect();
        assert_eq!(hit, [3, 7, 11], "requests 4, 8, 12");
        let c: MockConfig = "mock?fault=reset&fault_after=10".parse().unwrap();
        let hit: Vec<u64> = (0..13).filter(|&n| c.fault_for(n).is_some()).collect();
        assert_eq!(hit, [10, 11, 12], "requests 11 and later");
        let c: MockConfig = "mock?fault=reset&fault_after=2&fault_every=3"
            .parse()
            .unwrap();
        let hit: Vec<u64> = (0..12).filter(|&n| c.fault_for(n).is_some()).collect();
        assert_eq!(hit, [4, 7, 10], "requests 5, 8, 11");
        let all: MockConfig = "mock?fault=stall".parse().unwrap();
        assert!((0..1000).all(|n| all.fault_for(n) == Some(Fault::Stall)));
        assert!((0..1000).all(|n| !all.error_selected(n)));

        let c: MockConfig = "mock?fault=close&fault_rate=25&seed=3".parse().unwrap();
        let hits = |c: &MockConfig| -> Vec<u64> {
            (0..4000).filter(|&n| c.fault_for(n).is_some()).collect()
        };
        let first = hits(&c);
        assert_eq!(first, hits(&c), "the same seed faults the same requests");
        assert!((900..1100).contains(&first.len()), "{}", first.len());
        let other: MockConfig = "mock?fault=close&fault_rate=25&seed=4".parse().unwrap();
        assert_ne!(first, hits(&other));
        // Independent of the error_rate draw.
        let both: MockConfig = "mock?fault=close&fault_rate=50&error_rate=50"
            .parse()
            .unwrap();
        let f: Vec<bool> = (0..64).map(|n| both.fault_for(n).is_some()).collect();
        let e: Vec<bool> = (0..64).map(|n| both.error_selected(n)).collect();
        assert_ne!(f, e);
        let none: MockConfig = "mock?fault=close&fault_rate=0".parse().unwrap();
        assert!((0..1000).all(|n| none.fault_for(n).is_none()));
    }
}
