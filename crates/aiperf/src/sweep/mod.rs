//! Sweeps and repeated runs, the parts that need no run: what the user asked for
//! ([`SweepSpec`], built by `config` from comma lists and the Multi-Run flags), the points it
//! expands to ([`SweepSpec::points`], grid or zip), their directory names, and the
//! aggregates (`aggregate.rs`: the key metrics of a point's row, Student-t confidence
//! intervals over repeated runs, the JSON and CSV files). Running the points is
//! `multirun`'s job.

pub mod aggregate;

use std::time::Duration;

use aiperf_plugin::SweepParameters;
use serde::Serialize;

/// How the lists of a sweep combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SweepType {
    /// Every combination (the first list varies slowest).
    #[default]
    Grid,
    /// Index by index; the lists must have the same length.
    Zip,
}

/// The order of the runs of a sweep with `--num-profile-runs` above 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ParameterSweepMode {
    /// The whole sweep once per trial (trial 1 of every point, then trial 2, ...).
    #[default]
    Repeated,
    /// Every trial of a point before the next point.
    Independent,
}

/// What the user asked for: the swept lists (a list of one value is not swept) and the
/// Multi-Run settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepSpec {
    pub concurrency: Vec<usize>,
    pub request_rate: Vec<f64>,
    pub isl: Vec<u32>,
    pub osl: Vec<u32>,
    pub isl_osl_pairs: Vec<(u32, u32)>,
    pub sweep_type: SweepType,
    pub mode: ParameterSweepMode,
    /// Runs of each point (`--num-profile-runs`).
    pub trials: u32,
    pub trial_cooldown: Duration,
    pub point_cooldown: Duration,
    pub confidence_level: f64,
    /// Warm up before the first run only (`--profile-run-disable-warmup-after-first`).
    pub warmup_once: bool,
    /// Every point uses the run's seed (`--parameter-sweep-same-seed`); else seed + index.
    pub same_seed_per_point: bool,
    /// Each trial uses seed + trial (`--vary-seed-per-trial`).
    pub vary_seed_per_trial: bool,
    /// Without `--random-seed`, whether trials share the one seed drawn (`--set-consistent-seed`).
    pub consistent_seed: bool,
    /// Whether `--random-seed` was given.
    pub seed_given: bool,
    /// Print the table of points at the end (not `--no-sweep-table`).
    pub table: bool,
    /// The axes of the Pareto front marked in the aggregate (`--pareto-throughput`,
    /// `--pareto-latency`).
    pub pareto: aggregate::ParetoAxes,
    /// `--search-recipe pareto`: the front is the answer (printed, `search_result.json`).
    pub pareto_recipe: bool,
}

impl Default for SweepSpec {
    fn default() -> Self {
        Self {
            concurrency: Vec::new(),
            request_rate: Vec::new(),
            isl: Vec::new(),
            osl: Vec::new(),
            isl_osl_pairs: Vec::new(),
            sweep_type: SweepType::Grid,
            mode: ParameterSweepMode::Repeated,
            trials: 1,
            trial_cooldown: Duration::ZERO,
            point_cooldown: Duration::ZERO,
            confidence_level: 0.95,
            warmup_once: true,
            same_seed_per_point: true,
            vary_seed_per_trial: false,
            consistent_seed: true,
            seed_given: false,
            table: true,
            pareto: aggregate::ParetoAxes::default(),
            pareto_recipe: false,
        }
    }
}

/// One swept dimension: its flag and its values as point parameters.
struct Dimension {
    flag: &'static str,
    values: Vec<SweepParameters>,
}

impl SweepSpec {
    /// More than one run: a sweep, repeated runs, or both.
    pub fn is_multi(&self) -> bool {
        self.trials > 1 || self.dimensions().iter().any(|d| d.values.len() > 1)
    }

    /// The swept dimensions (lists of more than one value), in grid order: concurrency,
    /// request rate, ISL/OSL pairs, ISL, OSL.
    fn dimensions(&self) -> Vec<Dimension> {
        let mut dims = Vec::new();
        let p = SweepParameters::default;
        if self.concurrency.len() > 1 {
            dims.push(Dimension {
                flag: "--concurrency",
                values: (self.concurrency.iter())
                    .map(|&c| SweepParameters {
                        concurrency: Some(c as u64),
                        ..p()
                    })
                    .collect(),
            });
        }
        if self.request_rate.len() > 1 {
            dims.push(Dimension {
                flag: "--request-rate",
                values: (self.request_rate.iter())
                    .map(|&r| SweepParameters {
                        request_rate: Some(r),
                        ..p()
                    })
                    .collect(),
            });
        }
        if self.isl_osl_pairs.len() > 1 {
            dims.push(Dimension {
                flag: "--isl-osl-pairs",
                values: (self.isl_osl_pairs.iter())
                    .map(|&(i, o)| SweepParameters {
                        isl: Some(i),
                        osl: Some(o),
                        ..p()
                    })
                    .collect(),
            });
        }
        if self.isl.len() > 1 {
            dims.push(Dimension {
                flag: "--isl",
                values: (self.isl.iter())
                    .map(|&i| SweepParameters {
                        isl: Some(i),
                        ..p()
                    })
                    .collect(),
            });
        }
        if self.osl.len() > 1 {
            dims.push(Dimension {
                flag: "--osl",
                values: (self.osl.iter())
                    .map(|&o| SweepParameters {
                        osl: Some(o),
                        ..p()
                    })
                    .collect(),
            });
        }
        dims
    }

    /// The points of the sweep, in order: every combination (`grid`, the first dimension
    /// varying slowest) or index by index (`zip`). One point (all defaults) without lists.
    pub fn points(&self) -> Result<Vec<SweepParameters>, String> {
        let dims = self.dimensions();
        if self.sweep_type == SweepType::Zip && dims.len() > 1 {
            let n = dims[0].values.len();
            if let Some(d) = dims.iter().find(|d| d.values.len() != n) {
                return Err(format!(
                    "--sweep-type zip needs lists of one length: {} has {n} values, {} has {}",
                    dims[0].flag,
                    d.flag,
                    d.values.len()
                ));
            }
            return Ok((0..n)
                .map(|i| {
                    dims.iter().fold(SweepParameters::default(), |acc, d| {
                        merge(acc, &d.values[i])
                    })
                })
                .collect());
        }
        let mut points = vec![SweepParameters::default()];
        for d in &dims {
            points = points
                .iter()
                .flat_map(|p| d.values.iter().map(move |v| merge(p.clone(), v)))
                .collect();
        }
        Ok(points)
    }

    /// Checks what no single flag can: lists that cannot combine.
    pub fn check(&self) -> Result<(), String> {
        if !self.isl_osl_pairs.is_empty() && (self.isl.len() > 1 || self.osl.len() > 1) {
            return Err("--isl-osl-pairs cannot be combined with a list of --isl or --osl".into());
        }
        let points = self.points()?;
        let mut seen = std::collections::HashSet::new();
        for p in &points {
            let name = point_dir_name(p).unwrap_or_default();
            if !seen.insert(name.clone()) {
                return Err(format!(
                    "the sweep has the point {name} twice: give each value once"
                ));
            }
        }
        let runs = points.len() as u64 * u64::from(self.trials);
        if runs > MAX_RUNS {
            return Err(format!(
                "the sweep has {runs} runs ({} points × {} runs each): at most {MAX_RUNS}",
                points.len(),
                self.trials
            ));
        }
        Ok(())
    }
}

/// The most runs one invocation makes (points × trials).
pub const MAX_RUNS: u64 = 10_000;

fn merge(mut a: SweepParameters, b: &SweepParameters) -> SweepParameters {
    a.concurrency = b.concurrency.or(a.concurrency);
    a.request_rate = b.request_rate.or(a.request_rate);
    a.isl = b.isl.or(a.isl);
    a.osl = b.osl.or(a.osl);
    a
}

/// A point's directory name, AIPerf's `<parameter>_<value>` joined by `_`:
/// `concurrency_4`, `concurrency_4_isl_128_osl_512`, `request_rate_2.5`. `None` for a point
/// that sets nothing (repeated runs of one configuration).
pub fn point_dir_name(p: &SweepParameters) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(c) = p.concurrency {
        parts.push(format!("concurrency_{c}"));
    }
    if let Some(r) = p.request_rate {
        parts.push(format!("request_rate_{r}"));
    }
    if let Some(i) = p.isl {
        parts.push(format!("isl_{i}"));
    }
    if let Some(o) = p.osl {
        parts.push(format!("osl_{o}"));
    }
    (!parts.is_empty()).then(|| parts.join("_"))
}

/// The directory of trial `trial` (from 0) among repeated runs: `profile_runs/run_0001`.
pub fn run_dir_name(trial: u32) -> String {
    format!("run_{:04}", trial + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SweepSpec {
        SweepSpec::default()
    }

    #[test]
    fn grid_crosses_and_zip_pairs_index_by_index() {
        let s = SweepSpec {
            concurrency: vec![1, 4],
            isl_osl_pairs: vec![(128, 128), (2048, 512)],
            ..spec()
        };
        let names: Vec<String> = s
            .points()
            .unwrap()
            .iter()
            .map(|p| point_dir_name(p).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "concurrency_1_isl_128_osl_128",
                "concurrency_1_isl_2048_osl_512",
                "concurrency_4_isl_128_osl_128",
                "concurrency_4_isl_2048_osl_512"
            ]
        );
        let z = SweepSpec {
            sweep_type: SweepType::Zip,
            ..s.clone()
        };
        let names: Vec<String> = z
            .points()
            .unwrap()
            .iter()
            .map(|p| point_dir_name(p).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "concurrency_1_isl_128_osl_128",
                "concurrency_4_isl_2048_osl_512"
            ]
        );
        let bad = SweepSpec {
            concurrency: vec![1, 4, 8],
            ..z
        };
        let e = bad.points().unwrap_err();
        assert!(
            e.contains("--concurrency has 3 values, --isl-osl-pairs has 2"),
            "{e}"
        );
    }

    #[test]
    fn single_values_are_not_a_sweep() {
        let s = SweepSpec {
            concurrency: vec![4],
            request_rate: vec![10.0],
            ..spec()
        };
        assert!(!s.is_multi());
        assert_eq!(s.points().unwrap(), [SweepParameters::default()]);
        assert!(SweepSpec { trials: 2, ..s }.is_multi());
        assert_eq!(run_dir_name(0), "run_0001");
    }

    #[test]
    fn too_many_runs_and_mixed_isl_lists_are_refused() {
        let s = SweepSpec {
            concurrency: (1..=200).collect(),
            trials: 100,
            ..spec()
        };
        assert!(s.check().unwrap_err().contains("at most 10000"));
        let s = SweepSpec {
            isl_osl_pairs: vec![(1, 1), (2, 2)],
            isl: vec![1, 2],
            ..spec()
        };
        assert!(s.check().unwrap_err().contains("--isl-osl-pairs"));
        let s = SweepSpec {
            concurrency: vec![1, 2, 1],
            ..spec()
        };
        assert!(s.check().unwrap_err().contains("concurrency_1 twice"));
    }
}
