//! Which values are secrets, and how they are hidden wherever config is shown (the export's
//! `input_config`, the echoed command line, plugin messages). A leaf: it knows nothing of the
//! config's shape, only of key names, JSON values and the shapes of obvious credentials.
//!
//! Three rules make a value secret:
//! - its key's name looks like a secret's ([`is_secret_key`]);
//! - it was marked (`!secret` or a plugin section's `secrets:` list): the caller passes such
//!   values to [`redact_with`] / `plugin::Redactor`;
//! - its text is obviously a credential, whatever its key ([`credential_parts`]): URL
//!   userinfo, token-like query parameters, credential header values, webhook URLs.

use serde_json::Value;

/// What a hidden value is shown as.
pub const REDACTED: &str = "<redacted>";

/// Whether a config key names a secret whose value must never be shown: it contains `key`,
/// `token`, `secret`, `password`, `authorization` or `cookie`. `token` must not run on into
/// a longer word: token counts (`max_tokens`) and `tokenizer` are not secrets.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["key", "secret", "password", "authorization", "cookie"]
        .iter()
        .any(|s| k.contains(s))
        || k.match_indices("token")
            .any(|(i, _)| !k[i + 5..].starts_with(|c: char| c.is_ascii_alphabetic()))
}

/// Query parameters whose values are credentials, by exact (case-insensitive) name.
const SECRET_PARAMS: &[&str] = &[
    "token",
    "key",
    "api_key",
    "apikey",
    "api-key",
    "access_token",
    "refresh_token",
    "id_token",
    "auth",
    "auth_token",
    "sig",
    "signature",
    "secret",
    "client_secret",
    "password",
    "passwd",
    "pwd",
    "x-amz-signature",
    "x-amz-security-token",
    "x-goog-signature",
    "code",
];

fn is_secret_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    SECRET_PARAMS.contains(&n.as_str()) || is_secret_key(&n)
}

/// Webhook URLs whose path is the credential: (host suffix, path prefix).
const WEBHOOKS: &[(&str, &str)] = &[
    ("hooks.slack.com", "/services/"),
    ("hooks.slack.com", "/workflows/"),
    ("discord.com", "/api/webhooks/"),
    ("discordapp.com", "/api/webhooks/"),
    ("outlook.office.com", "/webhook/"),
    ("webhook.office.com", "/webhookb2/"),
];

/// The parts of `text` that are credentials by their shape, longest context first: the
/// userinfo of a URL (and its password), the values of token-like query parameters, the
/// secret path of a known webhook URL, and the value of a `Name: value` credential header
/// (and its token after `Bearer`/`Basic`/`Token`). Empty for anything else.
pub fn credential_parts(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    if let Some((name, value)) = text.split_once(':') {
        let name = name.trim();
        let value = value.trim();
        if !name.is_empty()
            && !name.contains(|c: char| c.is_whitespace() || c == '/')
            && is_credential_header(name)
            && !value.is_empty()
        {
            parts.push(value);
            if let Some((_, token)) = value.split_once(' ') {
                parts.push(token.trim());
            }
            return parts;
        }
    }
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let scheme_ok = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        let url_start = at + 3;
        let url_len = rest[url_start..]
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '<' || c == '>')
            .unwrap_or(rest.len() - url_start);
        let url = &rest[url_start..url_start + url_len];
        if scheme_ok {
            url_parts(url, &mut parts);
        }
        rest = &rest[url_start + url_len..];
    }
    parts.retain(|p| !p.is_empty());
    parts
}

/// `url` is what follows `scheme://`.
fn url_parts<'a>(url: &'a str, parts: &mut Vec<&'a str>) {
    let auth_end = url.find(['/', '?', '#']).unwrap_or(url.len());
    let authority = &url[..auth_end];
    let mut host = authority;
    if let Some(at) = authority.rfind('@') {
        let userinfo = &authority[..at];
        parts.push(userinfo);
        if let Some((_, pass)) = userinfo.split_once(':') {
            parts.push(pass);
        }
        host = &authority[at + 1..];
    }
    let host = host.split(':').next().unwrap_or("").to_ascii_lowercase();
    let path_end = url[auth_end..]
        .find(['?', '#'])
        .map_or(url.len(), |i| auth_end + i);
    let path = &url[auth_end..path_end];
    for (suffix, prefix) in WEBHOOKS {
        if (host == *suffix || host.ends_with(&format!(".{suffix}"))) && path.starts_with(prefix) {
            parts.push(&path[prefix.len()..]);
        }
    }
    if let Some(q) = url[path_end..].strip_prefix('?') {
        let q = q.split('#').next().unwrap_or("");
        for pair in q.split('&') {
            if let Some((name, value)) = pair.split_once('=') {
                if is_secret_param(name) {
                    parts.push(value);
                }
            }
        }
    }
}

/// Whether an HTTP header's value is a credential: `Authorization`, `Proxy-Authorization`,
/// `X-Api-Key`, `Cookie`, or any header whose name looks like a secret's.
pub fn is_credential_header(name: &str) -> bool {
    is_secret_key(name)
}

/// `text` with the credential parts of [`credential_parts`] replaced by `"<redacted>"`;
/// anything else unchanged.
pub fn redact_text(text: &str) -> String {
    let mut parts = credential_parts(text);
    if parts.is_empty() {
        return text.to_string();
    }
    parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let mut out = text.to_string();
    for p in parts {
        out = out.replace(p, REDACTED);
    }
    out
}

/// A copy of `value` with every secret-keyed value replaced by `"<redacted>"` and the
/// credentials inside other strings hidden ([`redact_text`]).
pub fn redact(value: &Value) -> Value {
    redact_with(value, &[])
}

/// [`redact`], and also every occurrence of the `marked` values (secrets marked by the
/// user) inside strings.
pub fn redact_with(value: &Value, marked: &[String]) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if is_secret_key(k) && !v.is_null() {
                        Value::String(REDACTED.into())
                    } else {
                        redact_with(v, marked)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| redact_with(v, marked)).collect()),
        Value::String(s) => {
            let mut out = redact_text(s);
            for m in marked.iter().filter(|m| !m.is_empty()) {
                if out.contains(m.as_str()) {
                    out = out.replace(m.as_str(), REDACTED);
                }
            }
            Value::String(out)
        }
        Value::Number(n) if marked.iter().any(|m| *m == n.to_string()) => {
            Value::String(REDACTED.into())
        }
        other => other.clone(),
    }
}

/// An HTTP header `Name: value` as shown: the value hidden when the name is a credential's.
pub fn shown_header(name: &str, value: &str) -> String {
    if is_credential_header(name) {
        format!("{name}: {REDACTED}")
    } else {
        format!("{name}: {}", redact_text(value))
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

    #[test]
    fn url_userinfo_is_hidden_and_plain_urls_are_untouched() {
        assert_eq!(
            redact_text("https://user:pa55word@push.example.com:9091/x"),
            "https://<redacted>@push.example.com:9091/x"
        );
        assert_eq!(
            credential_parts("https://user:pa55word@h/"),
            vec!["user:pa55word", "pa55word"]
        );
        for plain in [
            "http://localhost:9091",
            "https://push.example.com/metrics/job/aiperf?label=a",
            "not a url",
            "mailto:me@example.com",
        ] {
            assert_eq!(redact_text(plain), plain);
        }
    }

    #[test]
    fn token_query_parameters_are_hidden() {
        assert_eq!(
            redact_text("https://h/p?job=x&token=abc123&sig=zz9&access_token=t0k#frag"),
            "https://h/p?job=x&token=<redacted>&sig=<redacted>&access_token=<redacted>#frag"
        );
        assert_eq!(
            redact_text("https://h/p?api_key=k3y&page=2"),
            "https://h/p?api_key=<redacted>&page=2"
        );
        assert_eq!(
            redact_text("https://h/p?page=2&q=a"),
            "https://h/p?page=2&q=a"
        );
    }

    #[test]
    fn webhook_urls_are_hidden() {
        assert_eq!(
            redact_text("https://hooks.slack.com/services/T000/B000/XXXXSECRET"),
            "https://hooks.slack.com/services/<redacted>"
        );
        assert_eq!(
            redact_text("https://discord.com/api/webhooks/123/abcDEF"),
            "https://discord.com/api/webhooks/<redacted>"
        );
        assert_eq!(
            redact_text("https://slack.com/services/T000"),
            "https://slack.com/services/T000",
            "another host"
        );
    }

    #[test]
    fn credential_headers_are_hidden_and_others_are_not() {
        assert_eq!(
            redact_text("Authorization: Bearer abc.def"),
            "Authorization: <redacted>"
        );
        assert_eq!(redact_text("X-Api-Key: k-123"), "X-Api-Key: <redacted>");
        assert_eq!(redact_text("Cookie: sid=42"), "Cookie: <redacted>");
        assert_eq!(redact_text("X-Trace: t-1"), "X-Trace: t-1");
        assert_eq!(redact_text("Content-Type: a/b"), "Content-Type: a/b");
        assert_eq!(shown_header("Cookie", "sid=1"), "Cookie: <redacted>");
        // Header maps: the key is the header name.
        let v = serde_json::json!({"headers": {"Authorization": "Basic x", "Accept": "a/b"},
            "list": ["Authorization: Bearer y", "Accept: a/b"]});
        let r = redact(&v);
        assert_eq!(r["headers"]["Authorization"], "<redacted>");
        assert_eq!(r["headers"]["Accept"], "a/b");
        assert_eq!(r["list"][0], "Authorization: <redacted>");
        assert_eq!(r["list"][1], "Accept: a/b");
    }

    #[test]
    fn marked_values_are_hidden_wherever_they_appear() {
        let v = serde_json::json!({"endpoint": "plain-value-1", "n": 12345, "url": "http://h/plain-value-1", "other": "ok"});
        let r = redact_with(&v, &["plain-value-1".into(), "12345".into()]);
        assert_eq!(r["endpoint"], "<redacted>");
        assert_eq!(r["url"], "http://h/<redacted>");
        assert_eq!(r["n"], "<redacted>");
        assert_eq!(r["other"], "ok");
    }
}
