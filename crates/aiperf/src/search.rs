//! The SLO search: the largest load that meets a service level objective, over a range.
//!
//! Pure: it knows nothing of how a point is run. A *probe* is an async callback
//! `FnMut(load) -> Future<Output = Result<ProbeOutcome, String>>` (the runner in `lib.rs` runs
//! one benchmark per call); [`Criteria::judge`] turns its outcome into a verdict.
//!
//! **The algorithm** (AIPerf's `monotonic` search style): it assumes that more load never
//! makes the server better, and
//!
//! 1. *brackets* from the low end: `lo`, `2·lo`, `4·lo`, … (capped at `hi`) until a point
//!    fails; the last passing point and the first failing one bracket the answer;
//! 2. *bisects* that bracket: the midpoint replaces whichever end it agrees with, until the
//!    ends are one step apart: 1 for concurrency (the answer is exact), a relative
//!    [`RATE_PRECISION`] (5 %) for a request rate (the failing end is at most 5 % above the
//!    answer).
//!
//! A point is never run twice (each load is measured once and its verdict is final), and at
//! most `max_runs` points are run. The endings:
//!
//! - [`Ending::Found`]: the answer, and its *margin*: the nearest load above it that failed;
//! - [`Ending::LowestFails`]: even `lo` fails: no answer;
//! - [`Ending::TopPasses`]: `hi` passes: the answer is `hi`, the limit was not found;
//! - [`Ending::BudgetSpent`]: `max_runs` points ran first: the answer is the largest passing
//!   load so far (the margin, if a failure was seen, says how far the truth may be above it);
//! - [`Ending::ProbeFailed`]: a probe could not be run (not a failed SLO: the run itself
//!   failed); no answer, and the probes so far are kept.
//!
//! **Noise.** Every probe after the first lies strictly between the largest passing and the
//! smallest failing load seen so far, so the probes always look monotonic and nothing is
//! re-run: a verdict flipped by noise near the boundary moves the bracket, and the answer, to
//! where that verdict puts it. The answer is then off by at most the width of the band in which
//! verdicts are noisy; a point that passes above the first failure is never visited. Making
//! each probe longer (more requests) narrows that band.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;

use serde::Serialize;

/// The relative precision of a request-rate search: it stops when the smallest failing rate
/// is at most 5 % above the largest passing one.
pub const RATE_PRECISION: f64 = 0.05;

/// The default `--search-max-iterations`: enough for any bracket and bisection of
/// concurrency 1 to 1,000,000 (2 × 20 + 1 runs is the worst case for 2^20).
pub const DEFAULT_MAX_RUNS: u32 = 50;

/// The load that is searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// Closed loop, `--concurrency`: whole numbers.
    Concurrency,
    /// Open loop, `--request-rate` (requests per second).
    RequestRate,
}

impl Dimension {
    /// The key of the dimension in `search_result.json` and on the console.
    pub fn key(self) -> &'static str {
        match self {
            Dimension::Concurrency => "concurrency",
            Dimension::RequestRate => "request_rate",
        }
    }
}

/// The range searched, `lo < hi`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Space {
    pub dimension: Dimension,
    pub lo: f64,
    pub hi: f64,
}

impl Space {
    /// The next bracketing point above `x`: twice it (one more for a concurrency of 0 or a
    /// doubling that rounds to it), capped at `hi`.
    fn up(&self, x: f64) -> f64 {
        let next = match self.dimension {
            Dimension::Concurrency => (x * 2.0).max(x + 1.0),
            Dimension::RequestRate => x * 2.0,
        };
        next.min(self.hi)
    }

    /// Whether `pass` and `fail` are close enough to stop.
    fn converged(&self, pass: f64, fail: f64) -> bool {
        match self.dimension {
            Dimension::Concurrency => fail - pass <= 1.0,
            Dimension::RequestRate => fail <= pass * (1.0 + RATE_PRECISION),
        }
    }

    /// The bisection point strictly between `pass` and `fail` (not converged).
    fn mid(&self, pass: f64, fail: f64) -> f64 {
        match self.dimension {
            Dimension::Concurrency => ((pass + fail) / 2.0).floor(),
            Dimension::RequestRate => (pass + fail) / 2.0,
        }
    }
}

/// What one probe measured: the share of good requests (with `--goodput`), the metric values
/// (`"TAG.STAT"` → value, e.g. `"time_to_first_token.p95"`) and where its artifacts are.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProbeOutcome {
    pub good_fraction: Option<f64>,
    pub metrics: BTreeMap<String, f64>,
    pub artifact_dir: Option<PathBuf>,
}

/// A comparison of an SLA filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn holds(self, v: f64, t: f64) -> bool {
        match self {
            Op::Lt => v < t,
            Op::Le => v <= t,
            Op::Gt => v > t,
            Op::Ge => v >= t,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// One SLA filter on a run's aggregate: `TAG.STAT OP THRESHOLD` (AIPerf's `--search-sla`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sla {
    pub tag: String,
    pub stat: String,
    pub op: Op,
    pub threshold: f64,
}

impl Sla {
    /// The key of its value in [`ProbeOutcome::metrics`].
    pub fn key(&self) -> String {
        format!("{}.{}", self.tag, self.stat)
    }
}

impl std::fmt::Display for Sla {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.key(),
            self.op.symbol(),
            crate::units::show(self.threshold)
        )
    }
}

/// When a probe passes: at least `min_good_fraction` of its requests are good (only when
/// `goodput` is set: `--goodput`'s objectives), and every SLA filter holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Criteria {
    pub goodput: bool,
    pub min_good_fraction: f64,
    pub slas: Vec<Sla>,
}

/// A probe's verdict, with the first reason it failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub passed: bool,
    pub why: Option<String>,
}

impl Criteria {
    /// The verdict on one outcome. A missing value fails (a good fraction, or a metric an
    /// SLA filter needs: e.g. no TTFT without streaming, no statistic when every request
    /// failed).
    pub fn judge(&self, o: &ProbeOutcome) -> Verdict {
        let fail = |why: String| Verdict {
            passed: false,
            why: Some(why),
        };
        if self.goodput {
            match o.good_fraction {
                Some(f) if f >= self.min_good_fraction => {}
                Some(f) => {
                    return fail(format!(
                        "good fraction {f:.3} < {}",
                        crate::units::show(self.min_good_fraction)
                    ))
                }
                None => return fail("no good fraction".into()),
            }
        }
        for sla in &self.slas {
            match o.metrics.get(&sla.key()) {
                Some(&v) if sla.op.holds(v, sla.threshold) => {}
                Some(&v) => return fail(format!("{} = {v:.3}, not {sla}", sla.key())),
                None => return fail(format!("no value for {}", sla.key())),
            }
        }
        Verdict {
            passed: true,
            why: None,
        }
    }
}

/// One measured point.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub load: f64,
    pub outcome: ProbeOutcome,
    pub passed: bool,
    /// Why it failed, if it did.
    pub why: Option<String>,
}

/// How the search ended (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    Found,
    LowestFails,
    TopPasses,
    BudgetSpent,
    ProbeFailed(String),
}

impl Ending {
    /// Its name in `search_result.json`.
    pub fn name(&self) -> &'static str {
        match self {
            Ending::Found => "found",
            Ending::LowestFails => "lowest_fails",
            Ending::TopPasses => "top_passes",
            Ending::BudgetSpent => "budget_spent",
            Ending::ProbeFailed(_) => "probe_failed",
        }
    }
}

/// What the search found.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    /// The largest load that passed (see [`Ending`] for when there is none).
    pub answer: Option<f64>,
    /// The smallest load above the answer that failed, if one was measured.
    pub margin: Option<f64>,
    pub ending: Ending,
    /// In the order they ran.
    pub probes: Vec<Probe>,
}

/// The search's bookkeeping: the points measured, in order, and the budget.
struct Runner<'a, P, O> {
    criteria: &'a Criteria,
    max_runs: u32,
    probe: P,
    observe: O,
    probes: Vec<Probe>,
}

/// Why a measurement did not give a verdict.
enum Stop {
    Budget,
    Failed(String),
}

impl<P, O, Fut> Runner<'_, P, O>
where
    P: FnMut(f64) -> Fut,
    Fut: Future<Output = Result<ProbeOutcome, String>>,
    O: FnMut(&Probe),
{
    /// The verdict at `load`: measured once, never again.
    async fn passes(&mut self, load: f64) -> Result<bool, Stop> {
        if let Some(p) = self.probes.iter().find(|p| p.load == load) {
            return Ok(p.passed);
        }
        if self.probes.len() >= self.max_runs as usize {
            return Err(Stop::Budget);
        }
        let outcome = (self.probe)(load).await.map_err(Stop::Failed)?;
        let Verdict { passed, why } = self.criteria.judge(&outcome);
        let p = Probe {
            load,
            outcome,
            passed,
            why,
        };
        (self.observe)(&p);
        self.probes.push(p);
        Ok(passed)
    }
}

/// Runs the search over `space` (`lo < hi`, `max_runs ≥ 1`), calling `observe` after each
/// probe.
pub async fn search<P, Fut, O>(
    space: Space,
    criteria: &Criteria,
    max_runs: u32,
    probe: P,
    observe: O,
) -> SearchResult
where
    P: FnMut(f64) -> Fut,
    Fut: Future<Output = Result<ProbeOutcome, String>>,
    O: FnMut(&Probe),
{
    let mut r = Runner {
        criteria,
        max_runs: max_runs.max(1),
        probe,
        observe,
        probes: Vec::new(),
    };
    let mut pass: Option<f64> = None;
    let mut fail: Option<f64> = None;
    let ending = 'search: {
        // Bracket.
        let mut x = space.lo;
        loop {
            match r.passes(x).await {
                Ok(true) => pass = Some(x),
                Ok(false) => {
                    fail = Some(x);
                    if pass.is_none() {
                        break 'search Ending::LowestFails;
                    }
                    break;
                }
                Err(Stop::Budget) => break 'search Ending::BudgetSpent,
                Err(Stop::Failed(e)) => break 'search Ending::ProbeFailed(e),
            }
            if x >= space.hi {
                break 'search Ending::TopPasses;
            }
            x = space.up(x);
        }
        // Bisect: `pass` passed, `fail` failed, pass < fail.
        while let (Some(p), Some(f)) = (pass, fail) {
            if space.converged(p, f) {
                break;
            }
            let m = space.mid(p, f);
            match r.passes(m).await {
                Ok(true) => pass = Some(m),
                Ok(false) => fail = Some(m),
                Err(Stop::Budget) => break 'search Ending::BudgetSpent,
                Err(Stop::Failed(e)) => break 'search Ending::ProbeFailed(e),
            }
        }
        Ending::Found
    };
    let answer = match ending {
        Ending::LowestFails | Ending::ProbeFailed(_) => None,
        _ => pass,
    };
    SearchResult {
        answer,
        margin: if answer.is_some() { fail } else { None },
        ending,
        probes: r.probes,
    }
}

/// A search, resolved from the flags: what `aiperf profile --search-recipe` runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchSpec {
    /// The recipe's name, as given to `--search-recipe`.
    pub recipe: &'static str,
    pub space: Space,
    pub criteria: Criteria,
    pub max_runs: u32,
}

/// The SLA flags' filters, as AIPerf defines them: `--ttft-sla-ms` is
/// `time_to_first_token.p95 < MS`, `--itl-sla-ms`/`--tpot-sla-ms`
/// `inter_token_latency.p95 < MS`, `--e2e-sla-ms` `request_latency.p99 < MS`.
pub fn sla_flag(tag: &str, stat: &str, ms: f64) -> Sla {
    Sla {
        tag: tag.to_string(),
        stat: stat.to_string(),
        op: Op::Lt,
        threshold: ms,
    }
}

// ---------------------------------------------------------------------------------------
// Value parsers of the search flags (`cli::SearchArgs`)
// ---------------------------------------------------------------------------------------

/// The most runs `--search-max-iterations` allows.
pub const MAX_RUNS: u32 = 1000;

/// `--search-space` as given: the dimension if named, and the bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpaceArg {
    pub dimension: Option<Dimension>,
    pub lo: f64,
    pub hi: f64,
}

impl SpaceArg {
    /// The space for `dimension`, checked: whole numbers from 1 to
    /// [`crate::units::MAX_CONCURRENCY`] for concurrency, [`crate::units::MIN_RATE`] to
    /// [`crate::units::MAX_RATE`] for a rate, `lo < hi`.
    pub fn space(&self, dimension: Dimension) -> Result<Space, String> {
        use crate::units::{MAX_CONCURRENCY, MAX_RATE, MIN_RATE};
        if let Some(d) = self.dimension.filter(|&d| d != dimension) {
            return Err(format!(
                "--search-space is over {}, but the recipe searches {}",
                d.key(),
                dimension.key()
            ));
        }
        let (lo, hi) = (self.lo, self.hi);
        let (min, max) = match dimension {
            Dimension::Concurrency => {
                if lo.fract() != 0.0 || hi.fract() != 0.0 {
                    return Err(format!(
                        "--search-space: a concurrency range is whole numbers, got {}:{}",
                        crate::units::show(lo),
                        crate::units::show(hi)
                    ));
                }
                (1.0, MAX_CONCURRENCY as f64)
            }
            Dimension::RequestRate => (MIN_RATE, MAX_RATE),
        };
        if !(min..=max).contains(&lo) || !(min..=max).contains(&hi) {
            return Err(format!(
                "--search-space: {} bounds must be from {} to {}",
                dimension.key(),
                crate::units::show(min),
                crate::units::show(max)
            ));
        }
        if lo >= hi {
            return Err(format!(
                "--search-space: the low end ({}) must be below the high end ({})",
                crate::units::show(lo),
                crate::units::show(hi)
            ));
        }
        Ok(Space { dimension, lo, hi })
    }
}

/// The default range of a search: 1 to 1024 (concurrency, or requests per second).
pub const DEFAULT_SPACE: SpaceArg = SpaceArg {
    dimension: None,
    lo: 1.0,
    hi: 1024.0,
};

/// Value parser of `--search-space`: `LO:HI`, or `DIMENSION:LO,HI[:int|float]` (AIPerf's
/// form; `phases.profiling.` may prefix the dimension). Bounds and order are checked against
/// the recipe by [`SpaceArg::space`].
pub fn parse_space(s: &str) -> Result<SpaceArg, String> {
    let bad =
        || format!("`{s}` is not LO:HI or DIMENSION:LO,HI (e.g. 1:1024, concurrency:1,1024:int)");
    let t = s.trim();
    let parts: Vec<&str> = t.split(':').collect();
    let (dimension, lo, hi) = match parts.as_slice() {
        [lo, hi] if !lo.contains(',') => (None, *lo, *hi),
        [dim, range] | [dim, range, _] => {
            let kind = parts.get(2).copied();
            let name = dim.trim().trim_start_matches("phases.profiling.");
            let d = match name {
                "concurrency" => Dimension::Concurrency,
                "request_rate" => Dimension::RequestRate,
                _ => {
                    return Err(format!(
                        "`{dim}` is not a searchable dimension: use concurrency or request_rate"
                    ))
                }
            };
            match (d, kind.map(str::trim)) {
                (_, None) | (Dimension::Concurrency, Some("int")) => {}
                (Dimension::RequestRate, Some("float")) => {}
                (_, Some(k)) => {
                    return Err(format!("`{k}` is not the kind of {} ", d.key())
                        .trim_end()
                        .to_string()
                        + &format!(
                            " (use {})",
                            if d == Dimension::Concurrency {
                                "int"
                            } else {
                                "float"
                            }
                        ))
                }
            }
            let (lo, hi) = range.split_once(',').ok_or_else(bad)?;
            (Some(d), lo, hi)
        }
        _ => return Err(bad()),
    };
    let num = |v: &str| crate::units::number(v);
    Ok(SpaceArg {
        dimension,
        lo: num(lo)?,
        hi: num(hi)?,
    })
}

/// Value parser of `--search-max-iterations`: 1 to [`MAX_RUNS`].
pub fn parse_max_runs(s: &str) -> Result<u32, String> {
    let v = crate::units::number(s)?;
    if v.fract() != 0.0 || !(1.0..=f64::from(MAX_RUNS)).contains(&v) {
        return Err(format!("must be a whole number from 1 to {MAX_RUNS}"));
    }
    Ok(v as u32)
}

/// Value parser of `--slo-attainment-fraction`: a fraction in (0, 1].
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    let v = crate::units::number(s)?;
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err("must be a fraction above 0 and at most 1".into())
    }
}

/// Value parser of the `--*-sla-ms` flags: milliseconds, above 0, at most 1e10.
pub fn parse_sla_ms(s: &str) -> Result<f64, String> {
    let v = crate::units::number(s)?;
    if v > 0.0 && v <= crate::units::MAX_SECONDS * 1e3 {
        Ok(v)
    } else {
        Err(format!(
            "must be above 0 ms and at most {} ms",
            crate::units::show(crate::units::MAX_SECONDS * 1e3)
        ))
    }
}

/// The statistics an SLA filter may use.
pub const SLA_STATS: [&str; 5] = ["avg", "p50", "p90", "p95", "p99"];

/// Value parser of `--search-sla TAG:STAT:OP:THRESHOLD`.
pub fn parse_sla(s: &str) -> Result<Sla, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let [tag, stat, op, threshold] = parts.as_slice() else {
        return Err(format!(
            "`{s}` is not TAG:STAT:OP:THRESHOLD (e.g. time_to_first_token:p95:lt:200)"
        ));
    };
    let info = crate::metrics::metric_info(tag).ok_or_else(|| format!("unknown metric `{tag}`"))?;
    if !SLA_STATS.contains(stat) {
        return Err(format!(
            "`{stat}` is not a statistic: use {}",
            SLA_STATS.join(", ")
        ));
    }
    let op = match *op {
        "lt" => Op::Lt,
        "le" => Op::Le,
        "gt" => Op::Gt,
        "ge" => Op::Ge,
        _ => return Err(format!("`{op}` is not an operator: use lt, le, gt, ge")),
    };
    Ok(Sla {
        tag: info.tag.to_string(),
        stat: stat.to_string(),
        op,
        threshold: crate::units::number(threshold)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn conc(lo: f64, hi: f64) -> Space {
        Space {
            dimension: Dimension::Concurrency,
            lo,
            hi,
        }
    }

    fn rate(lo: f64, hi: f64) -> Space {
        Space {
            dimension: Dimension::RequestRate,
            lo,
            hi,
        }
    }

    /// `--goodput` with the default fraction.
    fn goodput() -> Criteria {
        Criteria {
            goodput: true,
            min_good_fraction: 0.95,
            slas: vec![],
        }
    }

    fn outcome(good: f64) -> ProbeOutcome {
        ProbeOutcome {
            good_fraction: Some(good),
            ..ProbeOutcome::default()
        }
    }

    /// Runs the search with a synchronous verdict function; returns the result and the
    /// loads probed, in order.
    fn run(
        space: Space,
        max_runs: u32,
        good: impl Fn(f64) -> Result<f64, String>,
    ) -> (SearchResult, Vec<f64>) {
        let seen = RefCell::new(Vec::new());
        let observed = RefCell::new(Vec::new());
        let result = futures_executor(search(
            space,
            &goodput(),
            max_runs,
            |x| {
                seen.borrow_mut().push(x);
                let r = good(x).map(outcome);
                async move { r }
            },
            |p| observed.borrow_mut().push(p.load),
        ));
        let seen = seen.into_inner();
        // A probe that could not run is neither observed nor recorded.
        let ran = match result.ending {
            Ending::ProbeFailed(_) => &seen[..seen.len() - 1],
            _ => &seen[..],
        };
        assert_eq!(ran, observed.into_inner(), "every probe is observed");
        let loads: Vec<f64> = result.probes.iter().map(|p| p.load).collect();
        assert_eq!(ran, loads, "every probe is recorded");
        (result, seen)
    }

    /// A current-thread runtime for the async search.
    fn futures_executor<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    /// TTFT = 20 + 2c ≤ 100: passes up to 40.
    fn threshold(t: f64) -> impl Fn(f64) -> Result<f64, String> {
        move |x| Ok(if x <= t { 1.0 } else { 0.0 })
    }

    fn no_repeats(loads: &[f64]) {
        for (i, a) in loads.iter().enumerate() {
            assert!(!loads[..i].contains(a), "{a} was run twice: {loads:?}");
        }
    }

    #[test]
    fn finds_a_known_concurrency_threshold_exactly() {
        let (r, loads) = run(conc(1.0, 128.0), 50, threshold(40.0));
        assert_eq!(r.ending, Ending::Found);
        assert_eq!(r.answer, Some(40.0));
        assert_eq!(r.margin, Some(41.0));
        assert_eq!(
            loads,
            [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 48.0, 40.0, 44.0, 42.0, 41.0]
        );
        assert!(loads.len() < 40, "fewer runs than a linear sweep");
    }

    #[test]
    fn every_threshold_in_a_range_is_found_exactly_within_the_log_bound() {
        for (lo, hi) in [(1.0, 128.0), (1.0, 1024.0), (5.0, 77.0), (3.0, 4.0)] {
            for t in (lo as u64)..(hi as u64) {
                let (r, loads) = run(conc(lo, hi), 100, threshold(t as f64));
                assert_eq!(r.ending, Ending::Found, "threshold {t} in {lo}..{hi}");
                assert_eq!(r.answer, Some(t as f64), "threshold {t} in {lo}..{hi}");
                assert_eq!(r.margin, Some(t as f64 + 1.0));
                no_repeats(&loads);
                // Bracket ≤ log2(hi/lo)+1 runs, bisection ≤ log2 of the bracket's width.
                let bound = (hi / lo).log2().ceil() as usize + 1 + hi.log2().ceil() as usize;
                assert!(loads.len() <= bound, "{t}: {} > {bound}", loads.len());
                // Every passing point is below every failing one.
                let max_pass = r.probes.iter().filter(|p| p.passed).map(|p| p.load);
                let min_fail = r.probes.iter().filter(|p| !p.passed).map(|p| p.load);
                assert!(max_pass.fold(0.0, f64::max) < min_fail.fold(f64::INFINITY, f64::min));
            }
        }
    }

    #[test]
    fn the_lowest_point_failing_gives_no_answer() {
        let (r, loads) = run(conc(4.0, 128.0), 50, threshold(2.0));
        assert_eq!(r.ending, Ending::LowestFails);
        assert_eq!((r.answer, r.margin), (None, None));
        assert_eq!(loads, [4.0], "nothing else is run");
        assert_eq!(
            r.probes[0].why.as_deref(),
            Some("good fraction 0.000 < 0.95")
        );
    }

    #[test]
    fn the_top_passing_gives_the_top_and_says_so() {
        let (r, loads) = run(conc(1.0, 100.0), 50, threshold(1e9));
        assert_eq!(r.ending, Ending::TopPasses);
        assert_eq!((r.answer, r.margin), (Some(100.0), None));
        assert_eq!(loads, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 100.0]);
    }

    #[test]
    fn the_budget_bounds_the_runs_and_keeps_the_best_so_far() {
        let (r, loads) = run(conc(1.0, 128.0), 9, threshold(40.0));
        assert_eq!(r.ending, Ending::BudgetSpent);
        assert_eq!(loads.len(), 9);
        // 1..64 (7 runs), then 48 fails and 40 passes.
        assert_eq!((r.answer, r.margin), (Some(40.0), Some(48.0)));
        // Out of budget while still bracketing: the largest pass, no margin.
        let (r, loads) = run(conc(1.0, 128.0), 3, threshold(40.0));
        assert_eq!(r.ending, Ending::BudgetSpent);
        assert_eq!(loads, [1.0, 2.0, 4.0]);
        assert_eq!((r.answer, r.margin), (Some(4.0), None));
        // A budget of 0 still runs one point.
        let (_, loads) = run(conc(1.0, 128.0), 0, threshold(40.0));
        assert_eq!(loads, [1.0]);
    }

    #[test]
    fn a_probe_that_cannot_run_stops_the_search_without_an_answer() {
        let (r, loads) = run(conc(1.0, 128.0), 50, |x| {
            if x == 48.0 {
                Err("connection refused".into())
            } else {
                threshold(40.0)(x)
            }
        });
        assert_eq!(r.ending, Ending::ProbeFailed("connection refused".into()));
        assert_eq!(r.answer, None);
        assert_eq!(loads.last(), Some(&48.0));
        assert_eq!(r.probes.len(), 7, "the probes that ran are kept");
    }

    #[test]
    fn a_rate_search_stops_within_the_relative_precision() {
        for truth in [0.7, 3.3, 13.0, 40.0, 99.0] {
            let (r, loads) = run(rate(0.5, 200.0), 50, threshold(truth));
            assert_eq!(r.ending, Ending::Found, "{truth}");
            let (a, m) = (r.answer.unwrap(), r.margin.unwrap());
            assert!(a <= truth && truth < m, "{a} <= {truth} < {m}");
            assert!(m <= a * (1.0 + RATE_PRECISION), "{a} .. {m}");
            no_repeats(&loads);
            assert!(loads.len() <= 16, "{truth}: {loads:?}");
        }
    }

    /// Verdicts that flip near the boundary: the search never re-runs a point, its probes
    /// stay monotonic (every pass below every failure), and the answer lands in the noisy
    /// band.
    #[test]
    fn noisy_verdicts_move_the_answer_within_the_noisy_band() {
        for seed in 0..200u64 {
            // Passes surely up to 36, fails surely from 44, a coin flip in between.
            let noisy = |x: f64| -> Result<f64, String> {
                Ok(if x <= 36.0 {
                    1.0
                } else if x >= 44.0 {
                    0.0
                } else if crate::mix::mix(seed, x as u64).is_multiple_of(2) {
                    1.0
                } else {
                    0.0
                })
            };
            let (r, loads) = run(conc(1.0, 1024.0), 50, noisy);
            no_repeats(&loads);
            assert_eq!(r.ending, Ending::Found);
            let a = r.answer.unwrap();
            assert!((36.0..44.0).contains(&a), "seed {seed}: {a}");
            assert_eq!(r.margin, Some(a + 1.0));
        }
    }

    #[test]
    fn sla_filters_and_the_good_fraction_are_judged_together() {
        let c = Criteria {
            goodput: true,
            min_good_fraction: 0.9,
            slas: vec![Sla {
                tag: "time_to_first_token".into(),
                stat: "p95".into(),
                op: Op::Lt,
                threshold: 100.0,
            }],
        };
        let mut o = ProbeOutcome {
            good_fraction: Some(0.9),
            ..Default::default()
        };
        o.metrics.insert("time_to_first_token.p95".into(), 99.9);
        assert!(c.judge(&o).passed);
        o.metrics.insert("time_to_first_token.p95".into(), 100.0);
        let v = c.judge(&o);
        assert!(!v.passed);
        assert_eq!(
            v.why.as_deref(),
            Some("time_to_first_token.p95 = 100.000, not time_to_first_token.p95 < 100")
        );
        o.metrics.clear();
        assert_eq!(
            c.judge(&o).why.as_deref(),
            Some("no value for time_to_first_token.p95")
        );
        o.good_fraction = Some(0.89);
        assert!(c.judge(&o).why.unwrap().starts_with("good fraction 0.890"));
        o.good_fraction = None;
        assert_eq!(c.judge(&o).why.as_deref(), Some("no good fraction"));
        // Without --goodput the fraction is not looked at.
        let sla_only = Criteria {
            goodput: false,
            ..c.clone()
        };
        o.metrics.insert("time_to_first_token.p95".into(), 5.0);
        assert!(sla_only.judge(&o).passed);
        for (op, v, t, holds) in [
            (Op::Le, 1.0, 1.0, true),
            (Op::Lt, 1.0, 1.0, false),
            (Op::Ge, 1.0, 1.0, true),
            (Op::Gt, 1.0, 1.0, false),
            (Op::Gt, 2.0, 1.0, true),
        ] {
            assert_eq!(op.holds(v, t), holds, "{op:?} {v} {t}");
        }
    }

    #[test]
    fn search_flags_parse_and_check_their_values() {
        let a = parse_space("1:128").unwrap();
        assert_eq!((a.dimension, a.lo, a.hi), (None, 1.0, 128.0));
        let c = a.space(Dimension::Concurrency).unwrap();
        assert_eq!((c.lo, c.hi), (1.0, 128.0));
        let a = parse_space("concurrency:2,64:int").unwrap();
        assert_eq!(a.dimension, Some(Dimension::Concurrency));
        let a = parse_space("phases.profiling.request_rate:0.5,100:float").unwrap();
        let r = a.space(Dimension::RequestRate).unwrap();
        assert_eq!((r.lo, r.hi), (0.5, 100.0));
        let err = a.space(Dimension::Concurrency).unwrap_err();
        assert!(err.contains("request_rate"), "{err}");
        for bad in [
            "5",
            "1:nan",
            "inf:5",
            "a:b",
            "1,2",
            "latency:1,2",
            "concurrency:1,2:float",
            "concurrency:1",
            "1:2:3:4",
            "",
        ] {
            let e = parse_space(bad).expect_err(bad);
            assert!(!e.contains('\n'), "{e}");
        }
        for (space, dim) in [
            ("5:1", Dimension::Concurrency),
            ("5:5", Dimension::Concurrency),
            ("0:10", Dimension::Concurrency),
            ("1.5:10", Dimension::Concurrency),
            ("1:2000000", Dimension::Concurrency),
            ("0:10", Dimension::RequestRate),
            ("10:1", Dimension::RequestRate),
        ] {
            let e = parse_space(space).unwrap().space(dim).expect_err(space);
            assert!(e.starts_with("--search-space"), "{e}");
        }
        assert_eq!(parse_max_runs("12"), Ok(12));
        for bad in ["0", "1.5", "1001", "nan", "-3"] {
            assert!(parse_max_runs(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_fraction("1"), Ok(1.0));
        for bad in ["0", "1.01", "nan", "inf", "-0.5"] {
            assert!(parse_fraction(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_sla_ms("100"), Ok(100.0));
        for bad in ["0", "-1", "nan", "inf", "1e300"] {
            assert!(parse_sla_ms(bad).is_err(), "{bad}");
        }
        let sla = parse_sla("time_to_first_token:p95:lt:200").unwrap();
        assert_eq!(sla.to_string(), "time_to_first_token.p95 < 200");
        for bad in [
            "time_to_first_token:p95:lt",
            "nope:p95:lt:1",
            "time_to_first_token:p42:lt:1",
            "time_to_first_token:p95:eq:1",
            "time_to_first_token:p95:lt:nan",
        ] {
            assert!(parse_sla(bad).is_err(), "{bad}");
        }
    }
}
