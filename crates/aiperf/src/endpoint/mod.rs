//! Request payloads and response parsing for each API shape.
//!
//! Parsing is on the hot path (once per SSE event), so it decodes into borrowed structs that
//! name only the fields we need; serde skips the rest without building values.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::cli::EndpointType;
use crate::metrics::Usage;

/// Builds the JSON payload for one prompt.
pub fn build_payload(
    endpoint: EndpointType,
    model: &str,
    prompt: &str,
    max_tokens: Option<u32>,
    streaming: bool,
    legacy_max_tokens: bool,
    extra: &Map<String, Value>,
) -> Value {
    let mut body = match endpoint {
        EndpointType::Chat => {
            let mut b = json!({
                "model": model,
                "messages": [{"role": "user", "content": prompt}],
                "stream": streaming,
            });
            if let Some(n) = max_tokens {
                let key = if legacy_max_tokens {
                    "max_tokens"
                } else {
                    "max_completion_tokens"
                };
                b[key] = json!(n);
            }
            b
        }
        EndpointType::Completions => {
            let mut b = json!({"model": model, "prompt": prompt, "stream": streaming});
            if let Some(n) = max_tokens {
                b["max_tokens"] = json!(n);
            }
            b
        }
        EndpointType::Embeddings => json!({"model": model, "input": [prompt]}),
    };
    if let Value::Object(map) = &mut body {
        for (k, v) in extra {
            map.insert(k.clone(), v.clone());
        }
    }
    body
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    choices: Option<Vec<Choice<'a>>>,
    #[serde(default)]
    usage: Option<RawUsage>,
    #[serde(borrow, default)]
    error: Option<ErrorBody<'a>>,
    #[serde(borrow, default)]
    data: Option<Vec<&'a serde_json::value::RawValue>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorBody<'a> {
    Object {
        #[serde(borrow, default)]
        message: Option<Cow<'a, str>>,
    },
    Text(Cow<'a, str>),
}

#[derive(Deserialize, Default, Clone, Copy)]
struct RawUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    delta: Option<Message<'a>>,
    #[serde(borrow, default)]
    message: Option<Message<'a>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(borrow, default)]
    function: Option<Function<'a>>,
}

#[derive(Deserialize)]
struct Function<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<Cow<'a, str>>,
}

/// What one response (an SSE event's data, or a whole body) contributed.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    /// It carried output text (content, reasoning or tool-call text), or embeddings.
    pub has_content: bool,
    /// It carried non-reasoning output.
    pub has_output: bool,
    pub usage: Option<Usage>,
    /// The server reported an error in the body or stream.
    pub error: Option<String>,
}

/// Parses one JSON response and appends its text to `out` / `reasoning`.
/// Returns `Err` when the bytes are not a JSON object we can read.
pub fn parse_response(
    bytes: &[u8],
    out: &mut String,
    reasoning: &mut String,
) -> Result<Parsed, String> {
    let chunk: Chunk = serde_json::from_slice(bytes).map_err(|e| {
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned();
        format!("invalid JSON in response ({e}): {shown}")
    })?;
    let mut p = Parsed::default();
    if let Some(err) = chunk.error {
        p.error = Some(match err {
            ErrorBody::Object { message } => message
                .map(Cow::into_owned)
                .unwrap_or_else(|| "error".into()),
            ErrorBody::Text(t) => t.into_owned(),
        });
        return Ok(p);
    }
    if let Some(u) = chunk.usage {
        if u.prompt_tokens.is_some() || u.completion_tokens.is_some() {
            p.usage = Some(Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
            });
        }
    }
    if let Some(data) = chunk.data {
        p.has_content = !data.is_empty();
        p.has_output = p.has_content;
    }
    for choice in chunk.choices.unwrap_or_default() {
        if let Some(t) = choice.text {
            if !t.is_empty() {
                out.push_str(&t);
                p.has_content = true;
                p.has_output = true;
            }
        }
        for msg in [choice.delta, choice.message].into_iter().flatten() {
            if let Some(c) = msg.content.filter(|c| !c.is_empty()) {
                out.push_str(&c);
                p.has_content = true;
                p.has_output = true;
            }
            for r in [msg.reasoning_content, msg.reasoning].into_iter().flatten() {
                if !r.is_empty() {
                    reasoning.push_str(&r);
                    p.has_content = true;
                }
            }
            for call in msg.tool_calls.unwrap_or_default() {
                if let Some(f) = call.function {
                    for t in [f.name, f.arguments].into_iter().flatten() {
                        if !t.is_empty() {
                            out.push_str(&t);
                            p.has_content = true;
                            p.has_output = true;
                        }
                    }
                }
            }
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> (Parsed, String, String) {
        let (mut o, mut r) = (String::new(), String::new());
        let p = parse_response(s.as_bytes(), &mut o, &mut r).unwrap();
        (p, o, r)
    }

    #[test]
    fn chat_delta_content() {
        let (p, o, _) =
            parse(r#"{"id":"x","choices":[{"index":0,"delta":{"content":"Hi \"you\""}}]}"#);
        assert!(p.has_content && p.has_output);
        assert_eq!(o, "Hi \"you\"");
    }

    #[test]
    fn role_only_empty_and_usage_only_are_not_content() {
        assert!(
            !parse(r#"{"choices":[{"delta":{"role":"assistant"}}]}"#)
                .0
                .has_content
        );
        assert!(
            !parse(r#"{"choices":[{"delta":{"content":""}}]}"#)
                .0
                .has_content
        );
        let (p, _, _) =
            parse(r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":9}}"#);
        assert!(!p.has_content);
        assert_eq!(
            p.usage,
            Some(Usage {
                prompt_tokens: Some(5),
                completion_tokens: Some(9)
            })
        );
        assert!(
            !parse(r#"{"choices":[{"delta":{"content":null},"finish_reason":"stop"}]}"#)
                .0
                .has_content
        );
    }

    #[test]
    fn reasoning_tool_calls_completions_and_messages() {
        let (p, o, r) = parse(r#"{"choices":[{"delta":{"reasoning_content":"think"}}]}"#);
        assert!(p.has_content && !p.has_output);
        assert_eq!((o.as_str(), r.as_str()), ("", "think"));
        let (_, _, r) = parse(r#"{"choices":[{"delta":{"reasoning":"hm"}}]}"#);
        assert_eq!(r, "hm");
        let (p, o, _) = parse(
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"name":"f","arguments":"{}"}}]}}]}"#,
        );
        assert!(p.has_output);
        assert_eq!(o, "f{}");
        let (_, o, _) = parse(r#"{"choices":[{"text":"done","index":0}]}"#);
        assert_eq!(o, "done");
        let (_, o, _) = parse(r#"{"choices":[{"message":{"role":"assistant","content":"full"}}]}"#);
        assert_eq!(o, "full");
    }

    #[test]
    fn errors_and_garbage() {
        let (p, _, _) = parse(r#"{"error":{"message":"overloaded","code":503}}"#);
        assert_eq!(p.error.as_deref(), Some("overloaded"));
        let (mut o, mut r) = (String::new(), String::new());
        assert!(parse_response(b"not json", &mut o, &mut r).is_err());
    }

    #[test]
    fn embeddings_count_as_content() {
        let (p, _, _) =
            parse(r#"{"data":[{"embedding":[0.1,0.2],"index":0}],"usage":{"prompt_tokens":3}}"#);
        assert!(p.has_content);
    }

    #[test]
    fn payload_shapes() {
        let mut extra = Map::new();
        extra.insert("temperature".into(), json!(0.1));
        let c = build_payload(EndpointType::Chat, "m", "hi", Some(8), true, false, &extra);
        assert_eq!(
            c,
            json!({"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"max_completion_tokens":8,"temperature":0.1})
        );
        let c = build_payload(
            EndpointType::Chat,
            "m",
            "hi",
            Some(8),
            false,
            true,
            &Map::new(),
        );
        assert_eq!(c["max_tokens"], 8);
        assert!(c.get("max_completion_tokens").is_none());
        let c = build_payload(
            EndpointType::Completions,
            "m",
            "hi",
            Some(4),
            true,
            false,
            &Map::new(),
        );
        assert_eq!(
            c,
            json!({"model":"m","prompt":"hi","stream":true,"max_tokens":4})
        );
        let e = build_payload(
            EndpointType::Embeddings,
            "m",
            "hi",
            None,
            false,
            false,
            &Map::new(),
        );
        assert_eq!(e, json!({"model":"m","input":["hi"]}));
    }
}
