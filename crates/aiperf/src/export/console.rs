//! The console summary: `Metric | avg | min | max | p99 | p90 | p50 | std`.

use crate::metrics::{MetricValue, PhaseSummary};

fn fmt(v: f64) -> String {
    if v.abs() >= 1e5 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Renders the profiling summary (and the error summary) as a text table.
pub fn render(title: &str, s: &PhaseSummary) -> String {
    let head = ["Metric", "avg", "min", "max", "p99", "p90", "p50", "std"];
    let mut rows: Vec<[String; 8]> = Vec::new();
    for m in s.metrics.iter().filter(|m| m.info.console) {
        let name = format!("{} ({})", m.info.header, m.info.unit);
        match &m.stats {
            MetricValue::Stats(st) => rows.push([
                name,
                fmt(st.avg),
                fmt(st.min),
                fmt(st.max),
                fmt(st.p99),
                fmt(st.p90),
                fmt(st.p50),
                fmt(st.std),
            ]),
            MetricValue::Avg(v) => {
                let mut r: [String; 8] = Default::default();
                r[0] = name;
                r[1] = fmt(*v);
                for c in r.iter_mut().skip(2) {
                    *c = "N/A".into();
                }
                rows.push(r);
            }
        }
    }
    let mut widths = head.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::from("│");
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i] - c.chars().count();
            if i == 0 {
                s.push_str(&format!(" {c}{} │", " ".repeat(pad)));
            } else {
                s.push_str(&format!(" {}{c} │", " ".repeat(pad)));
            }
        }
        s.push('\n');
        s
    };
    let rule = |l: &str, m: &str, r: &str| {
        let mut s = String::from(l);
        for (i, w) in widths.iter().enumerate() {
            s.push_str(&"─".repeat(w + 2));
            s.push_str(if i + 1 == widths.len() { r } else { m });
        }
        s.push('\n');
        s
    };
    let mut out = format!("{title}\n");
    out.push_str(&rule("┌", "┬", "┐"));
    out.push_str(&line(&head.map(String::from)));
    out.push_str(&rule("├", "┼", "┤"));
    for r in &rows {
        out.push_str(&line(r));
    }
    out.push_str(&rule("└", "┴", "┘"));
    if !s.errors.is_empty() {
        out.push_str("Errors:\n");
        for (e, n) in &s.errors {
            let code = e.code.map(|c| c.to_string()).unwrap_or_else(|| "-".into());
            out.push_str(&format!("  {n:>6} × [{code}] {}: {}\n", e.kind, e.message));
        }
    }
    out
}
