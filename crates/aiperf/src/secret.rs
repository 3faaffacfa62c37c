//! Which values are secrets, and how they are hidden wherever config is shown (the export's
//! `input_config`, the echoed command line, plugin messages). A leaf: it knows nothing of the
//! config's shape, only of key names and JSON values.

use serde_json::Value;

/// What a hidden value is shown as.
pub const REDACTED: &str = "<redacted>";

/// Whether a config key names a secret whose value must never be shown: it contains `key`,
/// `token`, `secret`, `password` or `authorization`. `token` must not run on into a longer
/// word: token counts (`max_tokens`) and `tokenizer` are not secrets.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["key", "secret", "password", "authorization"]
        .iter()
        .any(|s| k.contains(s))
        || k.match_indices("token")
            .any(|(i, _)| !k[i + 5..].starts_with(|c: char| c.is_ascii_alphabetic()))
}

/// A copy of `value` with every secret-keyed value replaced by `"<redacted>"`.
pub fn redact(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if is_secret_key(k) && !v.is_null() {
                        Value::String(REDACTED.into())
                    } else {
                        redact(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

/// An HTTP header `Name: value` as shown: the value hidden when the name is a secret's.
pub fn shown_header(name: &str, value: &str) -> String {
    if is_secret_key(name) {
        format!("{name}: {REDACTED}")
    } else {
        format!("{name}: {value}")
    }
}

/// Serializes a secret that may be set as `"<redacted>"` or null.
pub fn hidden<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str(REDACTED),
        None => s.serialize_none(),
    }
}

/// Serializes headers as `Name: value` strings, secret values hidden.
pub fn hidden_headers<S: serde::Serializer>(
    h: &[(String, String)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(h.iter().map(|(k, v)| shown_header(k, v)))
}

/// Serializes a JSON map with secret-keyed values hidden.
pub fn redacted_map<S: serde::Serializer>(
    m: &serde_json::Map<String, Value>,
    s: S,
) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&redact(&Value::Object(m.clone())), s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys() {
        for k in [
            "api_key",
            "API_KEY",
            "token",
            "auth_token",
            "hf_token_path",
            "client_secret",
            "password",
            "Authorization",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "max_tokens",
            "min_tokens",
            "max_completion_tokens",
            "site",
            "tags",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn redaction_hides_secret_keys() {
        let v = serde_json::json!({"api_key": "s3", "nested": {"auth_token": "t", "site": "x"}, "list": [{"password": "p"}]});
        let r = redact(&v);
        assert_eq!(r["api_key"], "<redacted>");
        assert_eq!(r["nested"]["auth_token"], "<redacted>");
        assert_eq!(r["nested"]["site"], "x");
        assert_eq!(r["list"][0]["password"], "<redacted>");
        assert_eq!(shown_header("X-Api-Key", "s"), "X-Api-Key: <redacted>");
        assert_eq!(shown_header("X-Trace", "t"), "X-Trace: t");
    }
}
