//! The console summary: `Metric | avg | min | max | p99 | p90 | p50 | std`.

use crate::metrics::{ErrorDetails, MetricValue, PhaseSummary};
use crate::plugin::PluginsReport;

/// Error groups (by code and type) shown on the console; the JSON keeps every message.
const SHOWN_ERROR_GROUPS: usize = 10;

fn fmt(v: f64) -> String {
    if v.abs() >= 1e5 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Renders the profiling summary (and the error summary) as a text table; with
/// `show_trace` (`--show-trace-timing`), the HTTP timing metrics (`http_req_*`) too.
pub fn render(title: &str, s: &PhaseSummary, show_trace: bool) -> String {
    let head = ["Metric", "avg", "min", "max", "p99", "p90", "p50", "std"];
    let mut rows: Vec<[String; 8]> = Vec::new();
    let shown = |tag: &str, console: bool| console || (show_trace && tag.starts_with("http_req_"));
    for m in s
        .metrics
        .iter()
        .filter(|m| shown(m.info.tag, m.info.console))
    {
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
    out.push_str(&render_errors(&s.errors));
    out
}

/// One error group: every error with the same code and type.
struct ErrorGroup<'a> {
    code: Option<u16>,
    kind: &'a str,
    count: u64,
    /// The group's most frequent message, and how many distinct messages it has.
    message: &'a str,
    messages: usize,
}

/// The error summary for the console, grouped by code and type so that a server sending
/// thousands of distinct messages still prints a few lines: the largest groups, each with
/// its most frequent message, then a count of the rest.
fn render_errors(errors: &[(ErrorDetails, u64)]) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let mut groups: Vec<ErrorGroup> = Vec::new();
    for (e, n) in errors {
        match groups
            .iter_mut()
            .find(|g| g.code == e.code && g.kind == e.kind)
        {
            Some(g) => {
                g.count += n;
                g.messages += 1;
            }
            None => groups.push(ErrorGroup {
                code: e.code,
                kind: &e.kind,
                count: *n,
                message: &e.message,
                messages: 1,
            }),
        }
    }
    // Stable: equal counts keep the order of their first (most frequent) message.
    groups.sort_by_key(|g| std::cmp::Reverse(g.count));
    let mut out = String::from("Errors:\n");
    for g in groups.iter().take(SHOWN_ERROR_GROUPS) {
        let code = g.code.map(|c| c.to_string()).unwrap_or_else(|| "-".into());
        let others = match g.messages {
            1 => String::new(),
            n => format!(" (and {} other messages)", n - 1),
        };
        out.push_str(&format!(
            "  {:>6} × [{code}] {}: {}{others}\n",
            g.count, g.kind, g.message
        ));
    }
    if groups.len() > SHOWN_ERROR_GROUPS {
        let rest = &groups[SHOWN_ERROR_GROUPS..];
        let n: u64 = rest.iter().map(|g| g.count).sum();
        out.push_str(&format!(
            "  … {} more kinds of error ({n} requests): see error_summary in profile_export_aiperf.json\n",
            rest.len()
        ));
    }
    out
}

/// What plugins added to the report, one block per plugin that reported: its metrics on
/// one line, then its notes. Empty when none did.
pub fn plugins_section(plugins: &PluginsReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for p in &plugins.plugins {
        let Some(r) = p.report.as_ref().filter(|r| !r.is_empty()) else {
            continue;
        };
        if out.is_empty() {
            out.push_str("Plugins:\n");
        }
        let metrics: Vec<String> = r
            .metrics
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                serde_json::Value::Number(n) => match n.as_f64() {
                    Some(f) if n.is_f64() => format!("{k}={}", fmt(f)),
                    _ => format!("{k}={n}"),
                },
                other => format!("{k}={other}"),
            })
            .collect();
        let _ = writeln!(out, "  {}: {}", p.name, metrics.join(", "));
        for n in &r.notes {
            let _ = writeln!(out, "    {n}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: Option<u16>, kind: &str, message: &str) -> ErrorDetails {
        ErrorDetails {
            code,
            kind: kind.into(),
            message: message.into(),
        }
    }

    #[test]
    fn thousands_of_distinct_messages_print_a_few_lines() {
        let mut errors: Vec<(ErrorDetails, u64)> = (0..2000)
            .map(|i| (err(Some(500), "InternalServerError", &format!("id {i}")), 1))
            .collect();
        errors.insert(0, (err(None, "RequestTimeout", "timed out"), 5));
        let text = render_errors(&errors);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[1],
            "    2000 × [500] InternalServerError: id 0 (and 1999 other messages)"
        );
        assert_eq!(lines[2], "       5 × [-] RequestTimeout: timed out");
    }

    #[test]
    fn more_groups_than_shown_are_counted() {
        let errors: Vec<(ErrorDetails, u64)> = (0..25u16)
            .map(|i| (err(Some(400 + i), "HttpError", "x"), 25 - u64::from(i)))
            .collect();
        let text = render_errors(&errors);
        assert_eq!(text.lines().count(), 1 + SHOWN_ERROR_GROUPS + 1, "{text}");
        // Groups 11..25 hold 15 + 14 + ... + 1 requests.
        assert!(
            text.ends_with("… 15 more kinds of error (120 requests): see error_summary in profile_export_aiperf.json\n"),
            "{text}"
        );
        assert!(render_errors(&[]).is_empty());
    }
}
