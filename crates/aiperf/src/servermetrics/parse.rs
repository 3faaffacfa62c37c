//! The Prometheus text exposition format (0.0.4), and the OpenMetrics text format as far as
//! a scrape needs it: `# HELP`, `# TYPE`, samples with escaped label values, optional
//! timestamps and exemplars, `NaN`/`±Inf`, `# EOF`.
//!
//! A line that cannot be read is counted in [`Exposition::garbage`] and skipped; parsing
//! never fails. Samples are grouped into families: a histogram's `_bucket`/`_sum`/`_count`
//! lines (one [`Histogram`] per label set, `le` removed), a summary's `_sum`/`_count`
//! (its quantiles are dropped: they cannot be combined over a window), an OpenMetrics
//! counter's `_total`; `_created` samples are dropped.

use std::collections::HashMap;

/// A metric family's type, from its `# TYPE` line (`untyped` without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "counter" => Kind::Counter,
            "gauge" => Kind::Gauge,
            "histogram" | "gaugehistogram" => Kind::Histogram,
            "summary" => Kind::Summary,
            "untyped" | "unknown" | "info" | "stateset" => Kind::Untyped,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
            Kind::Untyped => "untyped",
        }
    }
}

/// Label pairs of one series, sorted by name.
pub type Labels = Vec<(String, String)>;

/// A histogram's cumulative buckets (`le` ascending, `+Inf` last when sent), sum and count.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

/// One series' value in a scrape.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(f64),
    Histogram(Histogram),
    /// A summary's count and sum (quantiles dropped).
    Summary {
        count: f64,
        sum: f64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub value: Value,
    /// The exposition's own timestamp, in milliseconds, when it gave one.
    pub timestamp_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: Kind,
    pub help: Option<String>,
    pub series: Vec<Series>,
}

/// One scrape, parsed.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub families: Vec<Family>,
    /// Lines that could not be read (skipped).
    pub garbage: u64,
    /// Exemplars seen (read and dropped).
    pub exemplars: u64,
}

/// One sample line, read.
struct Sample<'a> {
    name: &'a str,
    labels: Labels,
    value: f64,
    timestamp: Option<f64>,
    exemplar: bool,
}

/// Parses a whole scrape. Never fails: unreadable lines are counted.
pub fn parse(text: &str) -> Exposition {
    let mut out = Exposition::default();
    let mut types: HashMap<String, Kind> = HashMap::new();
    let mut helps: HashMap<String, String> = HashMap::new();
    // Family name → index in `out.families`; (family, labels without le) → series index.
    let mut fam_index: HashMap<String, usize> = HashMap::new();
    let mut series_index: HashMap<(usize, Labels), usize> = HashMap::new();
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r').trim_start();
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim_start();
            if comment == "EOF" {
                break;
            }
            let mut parts = comment.splitn(3, [' ', '\t']);
            match parts.next() {
                Some("HELP") => match parts.next().filter(|n| is_metric_name(n)) {
                    Some(name) => {
                        let text = parts.next().unwrap_or("").trim();
                        helps.insert(name.to_string(), unescape_help(text));
                    }
                    None => out.garbage += 1,
                },
                Some("TYPE") => {
                    let name = parts.next().filter(|n| is_metric_name(n));
                    let kind = parts.next().and_then(|k| Kind::parse(k.trim()));
                    match (name, kind) {
                        (Some(n), Some(k)) => {
                            types.insert(n.to_string(), k);
                        }
                        _ => out.garbage += 1,
                    }
                }
                _ => {} // a comment
            }
            continue;
        }
        let Some(s) = sample(line) else {
            out.garbage += 1;
            continue;
        };
        if s.exemplar {
            out.exemplars += 1;
        }
        let (family, kind, role) = family_of(s.name, &types);
        if role == Role::Created {
            continue;
        }
        let fi = *fam_index.entry(family.to_string()).or_insert_with(|| {
            out.families.push(Family {
                name: family.to_string(),
                kind,
                help: helps.get(family).cloned(),
                series: Vec::new(),
            });
            out.families.len() - 1
        });
        let fam = &mut out.families[fi];
        if fam.help.is_none() {
            fam.help = helps.get(family).cloned();
        }
        let mut labels = s.labels;
        let le = match role {
            Role::Bucket => {
                let Some(pos) = labels.iter().position(|(k, _)| k == "le") else {
                    out.garbage += 1;
                    continue;
                };
                match parse_value(&labels.remove(pos).1) {
                    Some(le) if !le.is_nan() => Some(le),
                    _ => {
                        out.garbage += 1;
                        continue;
                    }
                }
            }
            _ => None,
        };
        if kind == Kind::Summary && role == Role::Plain {
            continue; // a quantile line
        }
        let key = (fi, labels);
        let si = match series_index.get(&key) {
            Some(i) => *i,
            None => {
                let value = match kind {
                    Kind::Histogram => Value::Histogram(Histogram::default()),
                    Kind::Summary => Value::Summary {
                        count: 0.0,
                        sum: 0.0,
                    },
                    _ => Value::Scalar(f64::NAN),
                };
                fam.series.push(Series {
                    labels: key.1.clone(),
                    value,
                    timestamp_ms: None,
                });
                let i = fam.series.len() - 1;
                series_index.insert(key, i);
                i
            }
        };
        let series = &mut fam.series[si];
        series.timestamp_ms = s.timestamp.or(series.timestamp_ms);
        match (&mut series.value, role) {
            (Value::Histogram(h), Role::Bucket) => {
                h.buckets.push((le.unwrap_or(f64::INFINITY), s.value))
            }
            (Value::Histogram(h), Role::Sum) => h.sum = s.value,
            (Value::Histogram(h), Role::Count) => h.count = s.value,
            (Value::Summary { sum, .. }, Role::Sum) => *sum = s.value,
            (Value::Summary { count, .. }, Role::Count) => *count = s.value,
            (Value::Scalar(v), _) => *v = s.value,
            _ => out.garbage += 1,
        }
    }
    for fam in &mut out.families {
        for s in &mut fam.series {
            if let Value::Histogram(h) = &mut s.value {
                h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                h.buckets.dedup_by(|a, b| a.0 == b.0);
            }
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Plain,
    Bucket,
    Sum,
    Count,
    Created,
}

/// The family a sample name belongs to, its type, and the sample's role in it.
fn family_of<'a>(name: &'a str, types: &HashMap<String, Kind>) -> (&'a str, Kind, Role) {
    const SUFFIXES: &[(&str, Role)] = &[
        ("_bucket", Role::Bucket),
        ("_sum", Role::Sum),
        ("_count", Role::Count),
        ("_total", Role::Plain),
        ("_created", Role::Created),
    ];
    for (suffix, role) in SUFFIXES {
        if let Some(base) = name.strip_suffix(suffix) {
            if let Some(kind) = types.get(base) {
                let fits = matches!(
                    (kind, role),
                    (
                        Kind::Histogram,
                        Role::Bucket | Role::Sum | Role::Count | Role::Created
                    ) | (Kind::Summary, Role::Sum | Role::Count | Role::Created)
                        | (Kind::Counter, Role::Plain | Role::Created)
                );
                if fits {
                    return (base, *kind, *role);
                }
            }
        }
    }
    (
        name,
        types.get(name).copied().unwrap_or(Kind::Untyped),
        Role::Plain,
    )
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A value as Prometheus writes one: a float, `NaN`, `+Inf`, `-Inf`.
pub fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ if s
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
            && !s.is_empty() =>
        {
            s.parse().ok()
        }
        _ => None,
    }
}

/// `name{labels} value [timestamp] [# {exemplar labels} value [timestamp]]`.
fn sample(line: &str) -> Option<Sample<'_>> {
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..end];
    if !is_metric_name(name) {
        return None;
    }
    let mut rest = &line[end..];
    let mut labels = Labels::new();
    if let Some(r) = rest.strip_prefix('{') {
        let (l, after) = label_set(r)?;
        labels = l;
        rest = after;
    }
    // The exemplar, after ` # `.
    let (main, exemplar) = match rest.find(" # ") {
        Some(i) => (&rest[..i], Some(&rest[i + 3..])),
        None => (rest, None),
    };
    if !main.starts_with([' ', '\t']) {
        return None;
    }
    let mut fields = main.split_ascii_whitespace();
    let value = parse_value(fields.next()?)?;
    let timestamp = match fields.next() {
        Some(t) => Some(parse_value(t).filter(|t| t.is_finite())?),
        None => None,
    };
    if fields.next().is_some() {
        return None;
    }
    if let Some(e) = exemplar {
        let e = e.trim_start().strip_prefix('{')?;
        let (_, after) = label_set(e)?;
        let mut f = after.split_ascii_whitespace();
        parse_value(f.next()?)?;
    }
    labels.sort();
    Some(Sample {
        name,
        labels,
        value,
        timestamp,
        exemplar: exemplar.is_some(),
    })
}

/// The label pairs after `{`, up to and including `}`; the rest of the line.
fn label_set(mut s: &str) -> Option<(Labels, &str)> {
    let mut labels = Labels::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let eq = s.find('=')?;
        let name = s[..eq].trim();
        if !is_label_name(name) {
            return None;
        }
        let mut r = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        loop {
            let i = r.find(['"', '\\'])?;
            value.push_str(&r[..i]);
            if r.as_bytes()[i] == b'"' {
                r = &r[i + 1..];
                break;
            }
            let esc = r[i + 1..].chars().next()?;
            match esc {
                'n' => value.push('\n'),
                '\\' => value.push('\\'),
                '"' => value.push('"'),
                other => {
                    value.push('\\');
                    value.push(other);
                }
            }
            r = &r[i + 1 + esc.len_utf8()..];
        }
        if labels.iter().any(|(k, _)| k == name) {
            return None; // a label given twice
        }
        labels.push((name.to_string(), value));
        r = r.trim_start();
        s = match r.strip_prefix(',') {
            Some(after) => after,
            None if r.starts_with('}') => r,
            None => return None,
        };
    }
}

/// `# HELP` text: `\\` and `\n` escapes.
fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('\\') => out.push('\\'),
                Some(o) => {
                    out.push('\\');
                    out.push(o);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY_TYPE: &str = r#"# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="a \"quoted\" \\ name\nline2"} 3 1700000000000
# HELP http_requests Requests.\nSecond line with a \\ backslash.
# TYPE http_requests counter
http_requests_total{code="200"} 1027 # {trace_id="abc"} 1.0 1700000000.1
http_requests_created{code="200"} 1.7e9
http_requests_total{code="500",} 3
# TYPE ttft histogram
ttft_bucket{le="0.1",model="m"} 1
ttft_bucket{le="1",model="m"} 4 # {trace_id="x"} 0.5
ttft_bucket{le="+Inf",model="m"} 5
ttft_sum{model="m"} 4.5
ttft_count{model="m"} 5
# TYPE rpc summary
rpc{quantile="0.5"} 0.2
rpc{quantile="0.99"} NaN
rpc_sum 12
rpc_count 40
# a plain comment
untyped_thing -Inf
nan_gauge NaN
this is garbage
broken{label="unterminated} 1
novalue{a="b"}
bad_value 12abc
{"quoted.name"} 1
# TYPE
# EOF
after_eof 1
"#;

    fn family<'a>(e: &'a Exposition, name: &str) -> &'a Family {
        e.families.iter().find(|f| f.name == name).unwrap()
    }

    #[test]
    fn every_metric_type_escapes_timestamps_and_exemplars() {
        let e = parse(EVERY_TYPE);
        let names: Vec<&str> = e.families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "vllm:num_requests_running",
                "http_requests",
                "ttft",
                "rpc",
                "untyped_thing",
                "nan_gauge"
            ]
        );
        let g = family(&e, "vllm:num_requests_running");
        assert_eq!(g.kind, Kind::Gauge);
        assert_eq!(
            g.help.as_deref(),
            Some("Number of requests in model execution batches.")
        );
        assert_eq!(g.series[0].value, Value::Scalar(3.0));
        assert_eq!(g.series[0].timestamp_ms, Some(1.7e12));
        assert_eq!(
            g.series[0].labels,
            vec![
                ("engine".into(), "0".into()),
                ("model_name".into(), "a \"quoted\" \\ name\nline2".into())
            ]
        );
        let c = family(&e, "http_requests");
        assert_eq!(c.kind, Kind::Counter);
        assert_eq!(
            c.help.as_deref(),
            Some("Requests.\nSecond line with a \\ backslash.")
        );
        assert_eq!(c.series.len(), 2, "the _created sample is dropped");
        assert_eq!(c.series[0].value, Value::Scalar(1027.0));
        assert_eq!(c.series[1].labels, vec![("code".into(), "500".into())]);
        let h = family(&e, "ttft");
        assert_eq!(h.kind, Kind::Histogram);
        assert_eq!(h.series.len(), 1);
        assert_eq!(h.series[0].labels, vec![("model".into(), "m".into())]);
        assert_eq!(
            h.series[0].value,
            Value::Histogram(Histogram {
                buckets: vec![(0.1, 1.0), (1.0, 4.0), (f64::INFINITY, 5.0)],
                sum: 4.5,
                count: 5.0
            })
        );
        let s = family(&e, "rpc");
        assert_eq!(s.kind, Kind::Summary);
        assert_eq!(
            s.series[0].value,
            Value::Summary {
                count: 40.0,
                sum: 12.0
            }
        );
        assert_eq!(
            family(&e, "untyped_thing").series[0].value,
            Value::Scalar(f64::NEG_INFINITY)
        );
        assert_eq!(family(&e, "untyped_thing").kind, Kind::Untyped);
        match family(&e, "nan_gauge").series[0].value {
            Value::Scalar(v) => assert!(v.is_nan()),
            _ => panic!(),
        }
        assert_eq!(e.exemplars, 2);
        // this is garbage, broken, novalue, bad_value, the quoted name, the empty TYPE.
        assert_eq!(e.garbage, 6);
    }

    #[test]
    fn garbage_alone_is_counted_never_fatal() {
        let e = parse("<html>\n<body>Not found</body>\n</html>\n");
        assert!(e.families.is_empty());
        assert_eq!(e.garbage, 3);
        let e = parse("");
        assert!(e.families.is_empty() && e.garbage == 0);
        let e = parse("\u{0}\u{1}\u{ff}\n\\\\\n}{\n a 1\n");
        assert_eq!(e.garbage, 3);
        assert_eq!(e.families.len(), 1, "leading spaces are allowed");
    }

    #[test]
    fn values_and_labels_edge_cases() {
        assert_eq!(parse_value("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_value("-Inf"), Some(f64::NEG_INFINITY));
        assert!(parse_value("NaN").unwrap().is_nan());
        assert_eq!(parse_value("1.5e-3"), Some(0.0015));
        assert_eq!(parse_value("0x10"), None);
        assert_eq!(parse_value("infinity-ish"), None);
        let e = parse(
            "m{a=\"1\",a=\"2\"} 1\nm{1a=\"x\"} 1\nm{a=\"x\" b=\"y\"} 1\nm{ a = \"x\" , } 2 3\n",
        );
        assert_eq!(e.garbage, 3);
        assert_eq!(e.families[0].series[0].value, Value::Scalar(2.0));
        assert_eq!(e.families[0].series[0].timestamp_ms, Some(3.0));
    }

    #[test]
    fn histogram_buckets_are_sorted_and_bad_le_is_garbage() {
        let e = parse(
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 3\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"x\"} 1\nh_bucket 2\nh_count 3\nh_sum 1\n",
        );
        assert_eq!(e.garbage, 2);
        match &e.families[0].series[0].value {
            Value::Histogram(h) => {
                assert_eq!(h.buckets, vec![(0.5, 1.0), (f64::INFINITY, 3.0)]);
                assert_eq!((h.count, h.sum), (3.0, 1.0));
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn real_node_exporter_shapes() {
        let text = "# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.\n# TYPE node_cpu_seconds_total counter\nnode_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 2.5e+06\nnode_cpu_seconds_total{cpu=\"0\",mode=\"user\"} 1234.5\n# HELP node_memory_MemAvailable_bytes Memory information field MemAvailable_bytes.\n# TYPE node_memory_MemAvailable_bytes gauge\nnode_memory_MemAvailable_bytes 8.123e+09\n";
        let e = parse(text);
        assert_eq!(e.garbage, 0);
        let cpu = family(&e, "node_cpu_seconds_total");
        assert_eq!(cpu.kind, Kind::Counter);
        assert_eq!(cpu.series.len(), 2);
        assert_eq!(
            family(&e, "node_memory_MemAvailable_bytes").series[0].value,
            Value::Scalar(8.123e9)
        );
    }
}
