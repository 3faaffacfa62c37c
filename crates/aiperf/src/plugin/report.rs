//! What plugins add to the run's report (`plugins.<name>.report`), checked and bounded: a
//! plugin that floods, sends nested objects or leaks a secret cannot bloat or spoil it.

use aiperf_plugin::PluginReport;
use serde_json::Value;

use super::Redactor;

/// The most metrics and notes a plugin's report keeps (the first ones).
pub const MAX_METRICS: usize = 100;
pub const MAX_NOTES: usize = 20;
/// Longer names, string values and notes are cut (on a character boundary) and marked `…`.
pub const MAX_NAME: usize = 100;
pub const MAX_TEXT: usize = 2048;

fn cut(s: &str, max: usize, redactor: &Redactor) -> String {
    let s = redactor.redact(s);
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// `report` with its values checked: numbers (finite), strings (redacted, cut) and
/// booleans are kept; other values are dropped with a note saying which.
pub fn checked(report: PluginReport, redactor: &Redactor) -> PluginReport {
    let mut out = PluginReport::default();
    merge(&mut out, report, redactor);
    out
}

/// Adds `new` to `into`: later metrics replace earlier ones of the same name, notes
/// accumulate; both bounded.
pub fn merge(into: &mut PluginReport, new: PluginReport, redactor: &Redactor) {
    let mut rejected = Vec::new();
    for (name, value) in new.metrics {
        let name = cut(&name, MAX_NAME, redactor);
        let value = match value {
            Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => Value::Number(n),
            Value::Bool(b) => Value::Bool(b),
            Value::String(s) => Value::String(cut(&s, MAX_TEXT, redactor)),
            _ => {
                rejected.push(name);
                continue;
            }
        };
        if into.metrics.len() < MAX_METRICS || into.metrics.contains_key(&name) {
            into.metrics.insert(name, value);
        }
    }
    let mut notes: Vec<String> = new.notes;
    if !rejected.is_empty() {
        notes.push(format!(
            "metrics dropped (not a number, string or boolean): {}",
            rejected.join(", ")
        ));
    }
    for n in notes {
        if into.notes.len() < MAX_NOTES {
            into.notes.push(cut(&n, MAX_TEXT, redactor));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_checked_bounded_and_merged() {
        let mut r = PluginReport::default();
        let first: PluginReport = serde_json::from_value(json!({
            "metrics": {"a": 1, "b": "x", "nested": {"no": 1}, "list": [1], "ok": true},
            "notes": ["one"]
        }))
        .unwrap();
        merge(&mut r, first, &Redactor::default());
        let second: PluginReport =
            serde_json::from_value(json!({"metrics": {"a": 2.5}, "notes": ["two"]})).unwrap();
        merge(&mut r, second, &Redactor::default());
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"metrics": {"a": 2.5, "b": "x", "ok": true},
                   "notes": ["one", "metrics dropped (not a number, string or boolean): nested, list", "two"]})
        );
        let flood = PluginReport {
            metrics: (0..500).map(|i| (format!("m{i}"), json!(i))).collect(),
            notes: (0..500).map(|i| "n".repeat(i * 10)).collect(),
        };
        let r = checked(flood, &Redactor::default());
        assert_eq!((r.metrics.len(), r.notes.len()), (MAX_METRICS, MAX_NOTES));
        assert!(r.notes.iter().all(|n| n.len() <= MAX_TEXT + '…'.len_utf8()));
    }
}
