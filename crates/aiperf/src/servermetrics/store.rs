//! What the scraper keeps: per endpoint, every series' samples on the run's clock (bounded:
//! past [`MAX_POINTS`] a series keeps every other sample), the endpoint's failure counts, and
//! the window summaries built from them.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::parse::{Exposition, Kind, Labels, Value};
use super::window::{self, CounterStats, GaugeStats, HistPoint, HistogramStats, StartAt};

/// Samples kept per series before it is thinned to every other one (the first and the last
/// always stay): a day of 1 s scrapes fits in 17 halvings. A series of scalars then holds at
/// most 64 KiB.
pub const MAX_POINTS: usize = 4096;

/// One endpoint's scrapes and failures over the run.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct EndpointHealth {
    pub url: String,
    /// Scrapes attempted.
    pub scrapes: u64,
    /// Scrapes that gave at least one sample.
    pub ok: u64,
    /// No connection (refused, unreachable, reset).
    pub refused: u64,
    /// No complete answer within the scrape timeout.
    pub timeouts: u64,
    /// An answer other than 2xx.
    pub http_errors: u64,
    /// A 2xx answer without a single readable sample.
    pub garbage: u64,
    /// Unreadable lines, in every scrape (skipped).
    pub garbage_lines: u64,
    /// The last failure, as a short message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl EndpointHealth {
    pub fn failures(&self) -> u64 {
        self.refused + self.timeouts + self.http_errors + self.garbage
    }
}

/// Why one scrape gave nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    Refused(String),
    Timeout,
    Status(u16),
    Garbage(u64),
    Other(String),
}

#[derive(Debug)]
enum Points {
    Scalar(Vec<(u64, f64)>),
    Histogram {
        les: Vec<f64>,
        points: Vec<(u64, HistPoint)>,
    },
    Summary,
}

#[derive(Debug)]
struct SeriesStore {
    kind: Kind,
    points: Points,
}

#[derive(Debug, Default)]
struct EndpointStore {
    health: EndpointHealth,
    help: HashMap<String, String>,
    series: BTreeMap<(String, Labels), SeriesStore>,
}

/// Every endpoint's samples.
#[derive(Debug, Default)]
pub struct Store {
    endpoints: Vec<EndpointStore>,
}

/// Thins `v` to every other element, keeping the last one.
fn thin<T>(v: &mut Vec<T>) {
    if v.len() <= MAX_POINTS {
        return;
    }
    let last = v.len() - 1;
    let mut i = 0;
    v.retain(|_| {
        let keep = i % 2 == 0 || i == last;
        i += 1;
        keep
    });
}

impl Store {
    pub fn new(urls: &[String]) -> Self {
        Store {
            endpoints: urls
                .iter()
                .map(|u| EndpointStore {
                    health: EndpointHealth {
                        url: u.clone(),
                        ..Default::default()
                    },
                    ..Default::default()
                })
                .collect(),
        }
    }

    pub fn health(&self) -> Vec<EndpointHealth> {
        self.endpoints.iter().map(|e| e.health.clone()).collect()
    }

    /// Whether any sample was ever kept for endpoint `i`.
    pub fn has_data(&self, i: usize) -> bool {
        self.endpoints.get(i).is_some_and(|e| e.health.ok > 0)
    }

    /// Counts a failed scrape of endpoint `i`.
    pub fn fail(&mut self, i: usize, f: Failure) {
        let Some(e) = self.endpoints.get_mut(i) else {
            return;
        };
        let h = &mut e.health;
        h.scrapes += 1;
        let msg = match f {
            Failure::Refused(m) => {
                h.refused += 1;
                format!("connection failed: {m}")
            }
            Failure::Other(m) => {
                h.refused += 1;
                m
            }
            Failure::Timeout => {
                h.timeouts += 1;
                "timed out".to_string()
            }
            Failure::Status(s) => {
                h.http_errors += 1;
                format!("HTTP {s}")
            }
            Failure::Garbage(lines) => {
                h.garbage += 1;
                h.garbage_lines += lines;
                format!("no readable sample ({lines} unreadable lines)")
            }
        };
        h.last_error = Some(msg);
    }

    /// Keeps one scrape of endpoint `i` taken at `t_ns`. A scrape without a single sample
    /// counts as garbage.
    pub fn ingest(&mut self, i: usize, t_ns: u64, e: &Exposition) {
        let samples: usize = e.families.iter().map(|f| f.series.len()).sum();
        if samples == 0 {
            self.fail(i, Failure::Garbage(e.garbage));
            return;
        }
        let Some(ep) = self.endpoints.get_mut(i) else {
            return;
        };
        ep.health.scrapes += 1;
        ep.health.ok += 1;
        ep.health.garbage_lines += e.garbage;
        for fam in &e.families {
            if let Some(h) = &fam.help {
                if !ep.help.contains_key(&fam.name) {
                    ep.help.insert(fam.name.clone(), h.clone());
                }
            }
            for s in &fam.series {
                let key = (fam.name.clone(), s.labels.clone());
                let entry = ep.series.entry(key).or_insert_with(|| SeriesStore {
                    kind: fam.kind,
                    points: match &s.value {
                        Value::Scalar(_) => Points::Scalar(Vec::new()),
                        Value::Histogram(h) => Points::Histogram {
                            les: h.buckets.iter().map(|b| b.0).collect(),
                            points: Vec::new(),
                        },
                        Value::Summary { .. } => Points::Summary,
                    },
                });
                match (&mut entry.points, &s.value) {
                    (Points::Scalar(p), Value::Scalar(v)) => {
                        p.push((t_ns, *v));
                        thin(p);
                    }
                    (Points::Histogram { les, points }, Value::Histogram(h)) => {
                        let bounds: Vec<f64> = h.buckets.iter().map(|b| b.0).collect();
                        if bounds != *les {
                            // New bucket bounds: the old samples cannot be compared.
                            *les = bounds;
                            points.clear();
                        }
                        points.push((
                            t_ns,
                            HistPoint {
                                buckets: h.buckets.iter().map(|b| b.1).collect(),
                                sum: h.sum,
                                count: h.count,
                            },
                        ));
                        thin(points);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Every stored series whose metric name satisfies `want`, in endpoint order: what a
    /// timeline draws.
    pub fn series_where(&self, want: impl Fn(&str) -> bool) -> Vec<StoredSeries<'_>> {
        let mut out = Vec::new();
        for ep in &self.endpoints {
            for ((name, labels), s) in &ep.series {
                if !want(name) {
                    continue;
                }
                let points = match &s.points {
                    Points::Scalar(p) => SeriesPoints::Scalar(p),
                    Points::Histogram { points, .. } => SeriesPoints::Histogram(points),
                    Points::Summary => continue,
                };
                out.push(StoredSeries {
                    endpoint_url: &ep.health.url,
                    name,
                    labels,
                    kind: s.kind,
                    points,
                });
            }
        }
        out
    }

    /// The summary of `[start_ns, end_ns)`, its counters and histograms from the last
    /// sample at or before the start (a phase's window).
    pub fn summarize(&self, start_ns: u64, end_ns: u64) -> WindowSummary {
        self.summarize_at(start_ns, end_ns, StartAt::LastBefore)
    }

    /// The summary of `[start_ns, end_ns)` with the reference sample `at` its start.
    pub fn summarize_at(&self, start_ns: u64, end_ns: u64, at: StartAt) -> WindowSummary {
        let mut metrics: BTreeMap<String, MetricSummary> = BTreeMap::new();
        let mut summaries = Vec::new();
        for ep in &self.endpoints {
            for ((name, labels), s) in &ep.series {
                let stats = match &s.points {
                    Points::Scalar(p) => match s.kind {
                        Kind::Counter => {
                            window::counter(p, start_ns, end_ns, at).map(Stats::Counter)
                        }
                        _ => window::gauge(p, start_ns, end_ns).map(Stats::Gauge),
                    },
                    Points::Histogram { les, points } => {
                        window::histogram(les, points, start_ns, end_ns, at).map(Stats::Histogram)
                    }
                    Points::Summary => {
                        if !summaries.contains(name) {
                            summaries.push(name.clone());
                        }
                        None
                    }
                };
                let Some(stats) = stats else { continue };
                let m = metrics
                    .entry(name.clone())
                    .or_insert_with(|| MetricSummary {
                        kind: s.kind,
                        help: ep.help.get(name).cloned(),
                        series: Vec::new(),
                    });
                m.series.push(SeriesSummary {
                    endpoint_url: ep.health.url.clone(),
                    labels: labels.iter().cloned().collect(),
                    stats,
                });
            }
        }
        let notes = (!summaries.is_empty())
            .then(|| {
                format!(
                    "summary metrics skipped (their quantiles cannot be combined over a window): {}",
                    summaries.join(", ")
                )
            })
            .into_iter()
            .collect();
        WindowSummary {
            start_ns,
            end_ns,
            duration_sec: end_ns.saturating_sub(start_ns) as f64 / 1e9,
            endpoints: self.health(),
            metrics,
            notes,
        }
    }
}

/// One stored series, borrowed: its samples on the run's clock.
#[derive(Debug, Clone, Copy)]
pub struct StoredSeries<'a> {
    pub endpoint_url: &'a str,
    pub name: &'a str,
    pub labels: &'a Labels,
    pub kind: Kind,
    pub points: SeriesPoints<'a>,
}

#[derive(Debug, Clone, Copy)]
pub enum SeriesPoints<'a> {
    Scalar(&'a [(u64, f64)]),
    Histogram(&'a [(u64, HistPoint)]),
}

/// Every metric over one window: `server_metrics_export.json`'s body, and what plugins get.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WindowSummary {
    /// The window on the run's monotonic clock (ns since the run's start).
    pub start_ns: u64,
    pub end_ns: u64,
    pub duration_sec: f64,
    /// Each endpoint's scrapes and failures so far in the run.
    pub endpoints: Vec<EndpointHealth>,
    /// By metric name; a series per endpoint and label set.
    pub metrics: BTreeMap<String, MetricSummary>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MetricSummary {
    #[serde(rename = "type")]
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    pub series: Vec<SeriesSummary>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SeriesSummary {
    pub endpoint_url: String,
    pub labels: BTreeMap<String, String>,
    pub stats: Stats,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Stats {
    Counter(CounterStats),
    Gauge(GaugeStats),
    Histogram(HistogramStats),
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse;
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn scrapes_become_window_summaries_per_endpoint_and_labels() {
        let mut st = Store::new(&["http://a/metrics".into(), "http://b/metrics".into()]);
        for (i, (req, run)) in [(0.0, 0.0), (10.0, 4.0), (30.0, 8.0), (40.0, 2.0)]
            .iter()
            .enumerate()
        {
            let text = format!(
                "# TYPE req counter\nreq_total{{m=\"x\"}} {req}\n# TYPE run gauge\nrun {run}\n# TYPE lat histogram\nlat_bucket{{le=\"1\"}} {req}\nlat_bucket{{le=\"+Inf\"}} {req}\nlat_sum {req}\nlat_count {req}\n# TYPE q summary\nq{{quantile=\"0.5\"}} 1\nq_count 1\nq_sum 1\n"
            );
            st.ingest(0, i as u64 * S, &parse(&text));
        }
        st.ingest(1, S, &parse("garbage only\n"));
        st.fail(1, Failure::Timeout);
        st.fail(1, Failure::Status(503));
        st.fail(1, Failure::Refused("refused".into()));
        let w = st.summarize(S, 3 * S);
        assert_eq!(w.endpoints[0].ok, 4);
        let b = &w.endpoints[1];
        assert_eq!(
            (
                b.scrapes,
                b.ok,
                b.garbage,
                b.garbage_lines,
                b.timeouts,
                b.http_errors,
                b.refused
            ),
            (4, 0, 1, 1, 1, 1, 1)
        );
        assert_eq!(b.failures(), 4);
        match &w.metrics["req"].series[0].stats {
            Stats::Counter(c) => {
                assert_eq!(c.delta, 30.0);
                assert_eq!(c.rate, Some(15.0));
            }
            s => panic!("{s:?}"),
        }
        assert_eq!(w.metrics["req"].series[0].labels["m"], "x");
        match &w.metrics["run"].series[0].stats {
            Stats::Gauge(g) => assert_eq!((g.avg, g.min, g.max), (6.0, 4.0, 8.0)),
            s => panic!("{s:?}"),
        }
        match &w.metrics["lat"].series[0].stats {
            Stats::Histogram(h) => assert_eq!(h.count, 30.0),
            s => panic!("{s:?}"),
        }
        assert!(!w.metrics.contains_key("q"));
        assert!(w.notes[0].contains("q"), "{:?}", w.notes);
    }

    #[test]
    fn memory_is_bounded() {
        let mut st = Store::new(&["u".into()]);
        for i in 0..(3 * MAX_POINTS as u64) {
            st.ingest(0, i * S, &parse(&format!("# TYPE c counter\nc {i}\n")));
        }
        let Points::Scalar(p) = &st.endpoints[0].series.values().next().unwrap().points else {
            panic!()
        };
        assert!(p.len() <= MAX_POINTS, "{}", p.len());
        assert_eq!(p.first().unwrap().1, 0.0);
        assert_eq!(p.last().unwrap().1, (3 * MAX_POINTS - 1) as f64);
        // The delta over the whole run is still exact.
        let w = st.summarize(0, 3 * MAX_POINTS as u64 * S);
        match &w.metrics["c"].series[0].stats {
            Stats::Counter(c) => assert_eq!(c.delta, (3 * MAX_POINTS - 1) as f64),
            s => panic!("{s:?}"),
        }
    }
}
