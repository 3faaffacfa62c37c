//! Request payloads and response parsing for each API shape.
//!
//! Parsing is on the hot path (once per SSE event), so it decodes into borrowed structs that
//! name only the fields we need; serde skips the rest without building values.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::metrics::Usage;
use crate::mix::mix;

mod skim;
mod spec;

pub use skim::Shape as ChunkShape;

pub use spec::{
    ConnectionReuseStrategy, EndpointSpec, EndpointType, ModelSelectionStrategy, TlsOptions,
    TransportKind, UrlStrategy, WaitForModel, WaitMode, DEFAULT_SESSION_HEADER,
};

/// Everything about a request's shape that is fixed for a run.
#[derive(Debug, Clone)]
pub struct RequestShape {
    pub endpoint: EndpointType,
    /// `--model`: never empty; with several, [`RequestShape::model`] picks one per entry.
    pub models: Vec<String>,
    pub model_selection: ModelSelectionStrategy,
    /// Seed of `random` model selection.
    pub model_seed: u64,
    pub streaming: bool,
    pub legacy_max_tokens: bool,
    pub extra: Map<String, Value>,
    pub template: Option<Value>,
    /// Ask streams for `usage` (`stream_options.include_usage`): chat and completions unless
    /// `--no-stream-usage`; the Responses API only with `--use-server-token-count` (AIPerf's
    /// rule for each).
    pub include_usage: bool,
}

/// Mixed into the seed for `random` model selection, so it is independent of the other
/// seeded choices of an entry.
const MODEL_SALT: u64 = 0x4d4f_4445_4c53;

impl RequestShape {
    /// The shape of an endpoint's requests; `use_server_token_count` also asks Responses API
    /// streams for `usage`.
    pub fn new(spec: &EndpointSpec, use_server_token_count: bool) -> Self {
        let include_usage = spec.stream_usage
            && match spec.endpoint_type {
                EndpointType::Chat | EndpointType::Completions => true,
                EndpointType::Responses => use_server_token_count,
                EndpointType::Embeddings | EndpointType::Template => false,
            };
        Self {
            endpoint: spec.endpoint_type,
            models: spec.models.clone(),
            model_selection: spec.model_selection_strategy,
            model_seed: spec.model_seed,
            streaming: spec.streams(),
            legacy_max_tokens: spec.use_legacy_max_tokens,
            extra: spec.extra_inputs.clone(),
            template: spec.payload_template.clone(),
            include_usage,
        }
    }

    /// The model of dataset entry `entry` (every turn of a conversation keeps it): round
    /// robin, entry *n* gets model *n* mod the number of models; random, a seeded uniform
    /// draw per entry.
    pub fn model(&self, entry: usize) -> &str {
        let n = self.models.len() as u64;
        if n <= 1 {
            return self.models.first().map_or("", String::as_str);
        }
        let i = match self.model_selection {
            ModelSelectionStrategy::Random => mix(self.model_seed ^ MODEL_SALT, entry as u64) % n,
            // `weighted` never gets here (the config rejects it).
            ModelSelectionStrategy::RoundRobin | ModelSelectionStrategy::Weighted => {
                entry as u64 % n
            }
        };
        &self.models[i as usize]
    }
}

/// One message of a conversation: `("user" | "assistant", text)`.
pub type Message = (&'static str, String);

/// Fills `{{text}}`, `{{max_tokens}}` and `{{model}}` in a template, recursively. A string
/// that is exactly `{{max_tokens}}` becomes a number.
fn fill_template(t: &Value, text: &str, max_tokens: Option<u32>, model: &str) -> Value {
    match t {
        Value::String(s) if s == "{{max_tokens}}" => {
            max_tokens.map(|n| json!(n)).unwrap_or(Value::Null)
        }
        Value::String(s) => Value::String(
            s.replace("{{text}}", text)
                .replace("{{model}}", model)
                .replace(
                    "{{max_tokens}}",
                    &max_tokens.map(|n| n.to_string()).unwrap_or_default(),
                ),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|v| fill_template(v, text, max_tokens, model))
                .collect(),
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), fill_template(v, text, max_tokens, model)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Builds the JSON payload of dataset entry `entry` (which decides its model) for a
/// conversation so far (the last message is the new user turn). Embeddings send every
/// message as one input of the batch.
pub fn build_payload(
    shape: &RequestShape,
    entry: usize,
    messages: &[Message],
    max_tokens: Option<u32>,
) -> Value {
    let model = shape.model(entry);
    let streaming = shape.streaming;
    let joined = || {
        messages
            .iter()
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut body = match shape.endpoint {
        EndpointType::Chat => {
            let msgs: Vec<Value> = messages
                .iter()
                .map(|(r, t)| json!({"role": r, "content": t}))
                .collect();
            let mut b = json!({"model": model, "messages": msgs, "stream": streaming});
            if let Some(n) = max_tokens {
                let key = if shape.legacy_max_tokens {
                    "max_tokens"
                } else {
                    "max_completion_tokens"
                };
                b[key] = json!(n);
            }
            b
        }
        EndpointType::Completions => {
            let mut b = json!({"model": model, "prompt": joined(), "stream": streaming});
            if let Some(n) = max_tokens {
                b["max_tokens"] = json!(n);
            }
            b
        }
        EndpointType::Embeddings => {
            let inputs: Vec<&str> = messages.iter().map(|(_, t)| t.as_str()).collect();
            json!({"model": model, "input": inputs})
        }
        EndpointType::Responses => {
            let input: Vec<Value> = messages
                .iter()
                .map(|(r, t)| json!({"role": r, "content": t}))
                .collect();
            let mut b = json!({"model": model, "input": input, "stream": streaming});
            if let Some(n) = max_tokens {
                b["max_output_tokens"] = json!(n);
            }
            b
        }
        EndpointType::Template => match shape.template.as_ref() {
            Some(t) => fill_template(t, &joined(), max_tokens, model),
            // The config requires a template for this type.
            None => Value::Object(Map::new()),
        },
    };
    if let Value::Object(map) = &mut body {
        for (k, v) in &shape.extra {
            map.insert(k.clone(), v.clone());
        }
        if shape.include_usage {
            ask_for_usage(map);
        }
    }
    body
}

/// Adds `stream_options.include_usage: true` to a streamed payload, as AIPerf does: after
/// `--extra-inputs`, only when the final payload streams (`"stream": true`, which an extra
/// input may have changed), keeping any `stream_options` keys the user gave (an explicit
/// `include_usage` wins; `null` counts as absent; a non-object is left alone).
fn ask_for_usage(map: &mut Map<String, Value>) {
    if map.get("stream") != Some(&Value::Bool(true)) {
        return;
    }
    match map.get_mut("stream_options") {
        None | Some(Value::Null) => {
            map.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Some(Value::Object(options)) => {
            options.entry("include_usage").or_insert(Value::Bool(true));
        }
        Some(_) => {}
    }
}

/// How responses are read for the run's endpoint.
#[derive(Debug, Clone)]
pub enum ResponseParser {
    /// OpenAI shapes: chat, completions and the Responses API (embeddings read the same way).
    OpenAi,
    /// `--endpoint-type embeddings`: OpenAI shapes, and a response need not carry text.
    Embeddings,
    /// `--endpoint-type template`: the text is at this JSON pointer.
    Pointer(String),
}

impl ResponseParser {
    pub fn for_shape(shape: &RequestShape, pointer: &str) -> Self {
        match shape.endpoint {
            EndpointType::Template => ResponseParser::Pointer(pointer.to_string()),
            EndpointType::Embeddings => ResponseParser::Embeddings,
            _ => ResponseParser::OpenAi,
        }
    }

    /// A successful response without any content (no text, reasoning or tool call) is an
    /// error (`EmptyResponse`), as in AIPerf; embeddings are exempt.
    pub fn requires_content(&self) -> bool {
        !matches!(self, ResponseParser::Embeddings)
    }

    pub fn parse(
        &self,
        bytes: &[u8],
        out: &mut String,
        reasoning: &mut String,
    ) -> Result<Parsed, String> {
        match self {
            ResponseParser::OpenAi | ResponseParser::Embeddings => {
                parse_response(bytes, out, reasoning)
            }
            ResponseParser::Pointer(ptr) => parse_pointer(ptr, bytes, out),
        }
    }

    /// [`Self::parse`] for one event of a stream: `shape` is the stream's own, learned from
    /// its earlier chunks (see [`ChunkShape`]); the answer is the same.
    pub fn parse_in(
        &self,
        shape: &mut ChunkShape,
        bytes: &[u8],
        out: &mut String,
        reasoning: &mut String,
    ) -> Result<Parsed, String> {
        match self {
            ResponseParser::OpenAi | ResponseParser::Embeddings => {
                if let Some(p) = skim::skim_in(shape, bytes, out, reasoning) {
                    return Ok(p);
                }
                parse_serde(bytes, out, reasoning)
            }
            ResponseParser::Pointer(ptr) => parse_pointer(ptr, bytes, out),
        }
    }
}

/// `--endpoint-type template`: the text at the JSON pointer `ptr`.
fn parse_pointer(ptr: &str, bytes: &[u8], out: &mut String) -> Result<Parsed, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| invalid_json(bytes, &e))?;
    let mut p = Parsed::default();
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        p.error = Some(
            err.get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| err.to_string()),
        );
        return Ok(p);
    }
    if let Some(text) = v
        .pointer(ptr)
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        out.push_str(text);
        p.has_content = true;
        p.has_output = true;
    }
    Ok(p)
}

fn invalid_json(bytes: &[u8], e: &serde_json::Error) -> String {
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned();
    match e.classify() {
        // Valid JSON with a value we cannot use (e.g. a fractional token count).
        serde_json::error::Category::Data => format!("unexpected response ({e}): {shown}"),
        _ => format!("invalid JSON in response ({e}): {shown}"),
    }
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
    /// Responses API: the event type (`response.output_text.delta`, ...).
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    /// Responses API: a delta's text.
    #[serde(borrow, default)]
    delta: Option<Cow<'a, str>>,
    /// Responses API, non-streaming: the output items.
    #[serde(borrow, default)]
    output: Option<Vec<OutputItem<'a>>>,
    /// Responses API: `response.completed` carries the final response (with usage).
    #[serde(default)]
    response: Option<Box<ResponseBody>>,
}

#[derive(Deserialize)]
struct OutputItem<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<Vec<OutputContent<'a>>>,
    #[serde(borrow, default)]
    summary: Option<Vec<OutputContent<'a>>>,
}

#[derive(Deserialize)]
struct OutputContent<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ResponseBody {
    #[serde(default)]
    usage: Option<RawUsage>,
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
    #[serde(alias = "input_tokens", default, deserialize_with = "token_count")]
    prompt_tokens: Option<u64>,
    #[serde(alias = "output_tokens", default, deserialize_with = "token_count")]
    completion_tokens: Option<u64>,
    #[serde(default, deserialize_with = "token_count")]
    total_tokens: Option<u64>,
}

/// A token count: a non-negative integer, also written as an integral float (`5.0`, as some
/// servers do). A fraction, a negative number or anything else fails the response with a
/// message that says so.
fn token_count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    /// Largest integer an f64 holds exactly.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match Option::<serde_json::Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => {
            if let Some(v) = n.as_u64() {
                return Ok(Some(v));
            }
            match n.as_f64() {
                Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= EXACT => Ok(Some(f as u64)),
                _ => Err(D::Error::custom(format!(
                    "usage token count must be a whole number of tokens, 0 or more, got {n}"
                ))),
            }
        }
    }
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    delta: Option<ChoiceMessage<'a>>,
    #[serde(borrow, default)]
    message: Option<ChoiceMessage<'a>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ChoiceMessage<'a> {
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
    /// The event ends the stream (Responses API `response.completed`; `[DONE]` elsewhere).
    pub done: bool,
}

/// Parses one JSON response and appends its text to `out` / `reasoning`.
/// Returns `Err` when the bytes are not a JSON object we can read.
pub fn parse_response(
    bytes: &[u8],
    out: &mut String,
    reasoning: &mut String,
) -> Result<Parsed, String> {
    // Plain chat/completions chunks skip serde; anything else is left untouched for it.
    if let Some(p) = skim::skim(bytes, out, reasoning) {
        return Ok(p);
    }
    parse_serde(bytes, out, reasoning)
}

/// [`parse_response`] through serde, for every shape.
fn parse_serde(bytes: &[u8], out: &mut String, reasoning: &mut String) -> Result<Parsed, String> {
    let chunk: Chunk = serde_json::from_slice(bytes).map_err(|e| invalid_json(bytes, &e))?;
    let mut p = Parsed::default();
    if let Some(err) = chunk.error {
        p.error = Some(error_message(err));
        return Ok(p);
    }
    p.usage = chunk
        .usage
        .or(chunk.response.and_then(|r| r.usage))
        .and_then(usage);
    // Responses API streaming deltas and non-streaming output items.
    if let Some(kind) = &chunk.kind {
        p.done = matches!(kind.as_ref(), "response.completed" | "response.incomplete");
        if kind == "response.failed" || kind == "error" {
            p.error = Some(format!("server sent `{kind}`"));
            return Ok(p);
        }
        if let Some(delta) = &chunk.delta {
            responses_delta(kind, delta, &mut p, out, reasoning);
        }
    }
    for item in chunk.output.unwrap_or_default() {
        responses_output_item(item, &mut p, out, reasoning);
    }
    // Embeddings.
    if let Some(data) = chunk.data {
        p.has_content = !data.is_empty();
        p.has_output = p.has_content;
    }
    for choice in chunk.choices.unwrap_or_default() {
        completions_choice(choice, &mut p, out, reasoning);
    }
    Ok(p)
}

/// The message of an `error` the server sent.
fn error_message(err: ErrorBody) -> String {
    match err {
        ErrorBody::Object { message } => message
            .map(Cow::into_owned)
            .unwrap_or_else(|| "error".into()),
        ErrorBody::Text(t) => t.into_owned(),
    }
}

/// `usage`, when it reports any count.
#[inline]
fn usage(u: RawUsage) -> Option<Usage> {
    (u.prompt_tokens.is_some() || u.completion_tokens.is_some()).then_some(Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.total_tokens,
    })
}

/// A Responses API streaming delta of event type `kind`.
#[inline]
fn responses_delta(
    kind: &str,
    delta: &str,
    p: &mut Parsed,
    out: &mut String,
    reasoning: &mut String,
) {
    if !delta.is_empty() {
        if kind.contains("reasoning") {
            reasoning.push_str(delta);
        } else if kind.ends_with("output_text.delta")
            || kind.ends_with("function_call_arguments.delta")
        {
            out.push_str(delta);
            p.has_output = true;
        }
        p.has_content = kind.contains("reasoning") || p.has_output;
    }
}

/// A Responses API output item (non-streaming): its content and summary texts.
#[inline]
fn responses_output_item(
    item: OutputItem,
    p: &mut Parsed,
    out: &mut String,
    reasoning: &mut String,
) {
    let is_reasoning = item.kind.as_deref() == Some("reasoning");
    for c in item
        .content
        .unwrap_or_default()
        .into_iter()
        .chain(item.summary.unwrap_or_default())
    {
        if let Some(t) = c.text.filter(|t| !t.is_empty()) {
            if is_reasoning {
                reasoning.push_str(&t);
            } else {
                out.push_str(&t);
                p.has_output = true;
            }
            p.has_content = true;
        }
    }
}

/// A chat/completions choice: its `text`, and its `delta` / `message` (content, reasoning,
/// tool calls).
#[inline]
fn completions_choice(choice: Choice, p: &mut Parsed, out: &mut String, reasoning: &mut String) {
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
                completion_tokens: Some(9),
                total_tokens: None,
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
    fn usage_counts_may_be_integral_floats() {
        for s in [
            r#"{"choices":[],"usage":{"prompt_tokens":5.0,"completion_tokens":9}}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":9.0}}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":5e0,"completion_tokens":0.9e1}}"#,
            r#"{"type":"response.completed","response":{"usage":{"input_tokens":5.0,"output_tokens":9.0}}}"#,
        ] {
            assert_eq!(
                parse(s).0.usage,
                Some(Usage {
                    prompt_tokens: Some(5),
                    completion_tokens: Some(9),
                    total_tokens: None,
                }),
                "{s}"
            );
        }
        let (p, _, _) = parse(r#"{"choices":[],"usage":{"prompt_tokens":null}}"#);
        assert_eq!(p.usage, None);
        let (mut o, mut r) = (String::new(), String::new());
        for (s, bad) in [
            (r#"{"choices":[],"usage":{"prompt_tokens":5.5}}"#, "5.5"),
            (r#"{"choices":[],"usage":{"completion_tokens":-3}}"#, "-3"),
            (
                r#"{"choices":[],"usage":{"completion_tokens":-1.0}}"#,
                "-1.0",
            ),
            (r#"{"choices":[],"usage":{"prompt_tokens":1e300}}"#, "1e300"),
        ] {
            let err = parse_response(s.as_bytes(), &mut o, &mut r).unwrap_err();
            assert!(
                err.starts_with(
                    "unexpected response (usage token count must be a whole number of \
                     tokens, 0 or more, got "
                ),
                "{err}"
            );
            assert!(err.contains(bad), "{err}");
        }
        let err =
            parse_response(b"{\"usage\":{\"prompt_tokens\":\"5\"}}", &mut o, &mut r).unwrap_err();
        assert!(err.starts_with("unexpected response"), "{err}");
        let err = parse_response(b"{\"usage\":", &mut o, &mut r).unwrap_err();
        assert!(err.starts_with("invalid JSON in response"), "{err}");
    }

    #[test]
    fn only_embeddings_may_come_without_content() {
        let shape = |e| shape(e, false);
        for (e, requires) in [
            (EndpointType::Chat, true),
            (EndpointType::Completions, true),
            (EndpointType::Responses, true),
            (EndpointType::Embeddings, false),
        ] {
            let p = ResponseParser::for_shape(&shape(e), "/x");
            assert_eq!(p.requires_content(), requires, "{e:?}");
        }
        let mut t = shape(EndpointType::Template);
        t.template = Some(json!({}));
        assert!(ResponseParser::for_shape(&t, "/x").requires_content());
    }

    #[test]
    fn embeddings_count_as_content() {
        let (p, _, _) =
            parse(r#"{"data":[{"embedding":[0.1,0.2],"index":0}],"usage":{"prompt_tokens":3}}"#);
        assert!(p.has_content);
    }

    fn shape(endpoint: EndpointType, streaming: bool) -> RequestShape {
        RequestShape {
            endpoint,
            models: vec!["m".into()],
            model_selection: ModelSelectionStrategy::RoundRobin,
            model_seed: 0,
            streaming,
            legacy_max_tokens: false,
            extra: Map::new(),
            template: None,
            include_usage: false,
        }
    }

    fn user(t: &str) -> Vec<Message> {
        vec![("user", t.to_string())]
    }

    #[test]
    fn payload_shapes() {
        let mut chat = shape(EndpointType::Chat, true);
        chat.extra.insert("temperature".into(), json!(0.1));
        assert_eq!(
            build_payload(&chat, 0, &user("hi"), Some(8)),
            json!({"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"max_completion_tokens":8,"temperature":0.1})
        );
        let mut legacy = shape(EndpointType::Chat, false);
        legacy.legacy_max_tokens = true;
        let c = build_payload(&legacy, 0, &user("hi"), Some(8));
        assert_eq!(c["max_tokens"], 8);
        assert!(c.get("max_completion_tokens").is_none());
        assert_eq!(
            build_payload(
                &shape(EndpointType::Completions, true),
                0,
                &user("hi"),
                Some(4)
            ),
            json!({"model":"m","prompt":"hi","stream":true,"max_tokens":4})
        );
        let batch = vec![("user", "a".to_string()), ("user", "b".to_string())];
        assert_eq!(
            build_payload(&shape(EndpointType::Embeddings, false), 0, &batch, None),
            json!({"model":"m","input":["a","b"]})
        );
        assert_eq!(
            build_payload(
                &shape(EndpointType::Responses, true),
                0,
                &user("hi"),
                Some(5)
            ),
            json!({"model":"m","input":[{"role":"user","content":"hi"}],"stream":true,"max_output_tokens":5})
        );
    }

    #[test]
    fn multi_turn_history_and_usage_request() {
        let mut chat = shape(EndpointType::Chat, true);
        chat.include_usage = true;
        let history = vec![
            ("user", "q1".to_string()),
            ("assistant", "a1".to_string()),
            ("user", "q2".to_string()),
        ];
        let c = build_payload(&chat, 0, &history, None);
        assert_eq!(c["messages"][1], json!({"role":"assistant","content":"a1"}));
        assert_eq!(c["stream_options"], json!({"include_usage": true}));
        let c = build_payload(&shape(EndpointType::Completions, false), 0, &history, None);
        assert_eq!(c["prompt"], "q1\na1\nq2");
    }

    /// AIPerf's rule: streamed chat and completions ask for a final usage chunk, after
    /// the extra inputs, keeping the user's own `stream_options`.
    #[test]
    fn stream_options_as_aiperf_sends_them() {
        let with_usage = |e, streaming| {
            let mut s = shape(e, streaming);
            s.include_usage = true;
            s
        };
        let chat = with_usage(EndpointType::Chat, true);
        let body = build_payload(&chat, 0, &user("hi"), Some(3));
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"max_completion_tokens":3,"stream_options":{"include_usage":true}}"#
        );
        let c = build_payload(
            &with_usage(EndpointType::Completions, true),
            0,
            &user("hi"),
            None,
        );
        assert_eq!(c["stream_options"], json!({"include_usage": true}));
        // Not streamed: never (a server rejects stream_options without stream).
        let c = build_payload(&with_usage(EndpointType::Chat, false), 0, &user("hi"), None);
        assert!(c.get("stream_options").is_none(), "{c}");
        // An extra input that turns streaming off wins, and one that turns it on asks.
        let mut off = chat.clone();
        off.extra.insert("stream".into(), json!(false));
        assert!(build_payload(&off, 0, &user("hi"), None)
            .get("stream_options")
            .is_none());
        // The user's stream_options are kept; their include_usage wins.
        let mut mine = chat.clone();
        mine.extra.insert(
            "stream_options".into(),
            json!({"continuous_usage_stats": true}),
        );
        assert_eq!(
            build_payload(&mine, 0, &user("hi"), None)["stream_options"],
            json!({"continuous_usage_stats": true, "include_usage": true})
        );
        mine.extra
            .insert("stream_options".into(), json!({"include_usage": false}));
        assert_eq!(
            build_payload(&mine, 0, &user("hi"), None)["stream_options"],
            json!({"include_usage": false})
        );
        mine.extra.insert("stream_options".into(), Value::Null);
        assert_eq!(
            build_payload(&mine, 0, &user("hi"), None)["stream_options"],
            json!({"include_usage": true})
        );
        mine.extra.insert("stream_options".into(), json!("odd"));
        assert_eq!(
            build_payload(&mine, 0, &user("hi"), None)["stream_options"],
            json!("odd")
        );
        // --no-stream-usage: nothing added.
        let c = build_payload(&shape(EndpointType::Chat, true), 0, &user("hi"), None);
        assert!(c.get("stream_options").is_none(), "{c}");
    }

    #[test]
    fn which_endpoints_ask_for_usage() {
        let spec = |e: &str, stream_usage: bool| {
            let args = [
                "--url",
                "mock",
                "--streaming",
                "--endpoint-type",
                e,
                "--endpoint",
                "/x",
                "--payload-template",
                "{\"t\": \"{{text}}\"}",
            ];
            let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            if e != "template" {
                args.truncate(args.len() - 2);
            }
            if !stream_usage {
                args.push("--no-stream-usage".into());
            }
            crate::config::load(&args).unwrap().endpoint
        };
        for (e, plain, with_server_counts) in [
            ("chat", true, true),
            ("completions", true, true),
            ("responses", false, true),
            ("embeddings", false, false),
            ("template", false, false),
        ] {
            let s = spec(e, true);
            assert_eq!(RequestShape::new(&s, false).include_usage, plain, "{e}");
            assert_eq!(
                RequestShape::new(&s, true).include_usage,
                with_server_counts,
                "{e}"
            );
            let off = spec(e, false);
            assert!(!RequestShape::new(&off, true).include_usage, "{e}");
        }
    }

    #[test]
    fn models_per_entry() {
        let mut s = shape(EndpointType::Chat, false);
        assert_eq!(s.model(7), "m");
        s.models = vec!["a".into(), "b".into(), "c".into()];
        let picks: Vec<&str> = (0..6).map(|i| s.model(i)).collect();
        assert_eq!(picks, ["a", "b", "c", "a", "b", "c"]);
        assert_eq!(build_payload(&s, 4, &user("hi"), None)["model"], "b");
        let mut t = s.clone();
        t.endpoint = EndpointType::Template;
        t.template = Some(json!({"m": "{{model}}", "p": "{{text}}"}));
        assert_eq!(build_payload(&t, 5, &user("hi"), None)["m"], "c");
        // Random: seeded, reproducible, roughly uniform, and the seed matters.
        s.model_selection = ModelSelectionStrategy::Random;
        s.model_seed = 42;
        let draw = |s: &RequestShape| {
            (0..3000)
                .map(|i| s.model(i).to_string())
                .collect::<Vec<_>>()
        };
        let first = draw(&s);
        assert_eq!(first, draw(&s.clone()));
        for m in ["a", "b", "c"] {
            let n = first.iter().filter(|x| *x == m).count();
            assert!((800..1200).contains(&n), "{m}: {n}");
        }
        let mut other = s.clone();
        other.model_seed = 43;
        assert_ne!(first, draw(&other));
        // An empty list (never made by the config) gives an empty name, not a panic.
        s.models.clear();
        assert_eq!(s.model(3), "");
    }

    #[test]
    fn template_payload_and_pointer_parsing() {
        let mut t = shape(EndpointType::Template, false);
        t.template = Some(
            json!({"inputs": "{{text}}", "parameters": {"max_new_tokens": "{{max_tokens}}", "model": "{{model}}"}}),
        );
        assert_eq!(
            build_payload(&t, 0, &user("hello"), Some(7)),
            json!({"inputs": "hello", "parameters": {"max_new_tokens": 7, "model": "m"}})
        );
        let parser = ResponseParser::Pointer("/generated_text".into());
        let (mut o, mut r) = (String::new(), String::new());
        let p = parser
            .parse(br#"{"generated_text":"hey"}"#, &mut o, &mut r)
            .unwrap();
        assert!(p.has_content);
        assert_eq!(o, "hey");
        let p = parser.parse(br#"{"other":1}"#, &mut o, &mut r).unwrap();
        assert!(!p.has_content);
    }

    #[test]
    fn responses_api_events_and_bodies() {
        let (p, o, _) =
            parse(r#"{"type":"response.output_text.delta","item_id":"x","delta":"Hel"}"#);
        assert!(p.has_content && p.has_output);
        assert_eq!(o, "Hel");
        let (p, _, r) = parse(r#"{"type":"response.reasoning_text.delta","delta":"hmm"}"#);
        assert!(p.has_content && !p.has_output);
        assert_eq!(r, "hmm");
        let (p, _, _) = parse(r#"{"type":"response.created","response":{"id":"r"}}"#);
        assert!(!p.has_content);
        let (p, _, _) = parse(
            r#"{"type":"response.completed","response":{"usage":{"input_tokens":3,"output_tokens":9}}}"#,
        );
        assert_eq!(
            p.usage,
            Some(Usage {
                prompt_tokens: Some(3),
                completion_tokens: Some(9),
                total_tokens: None,
            })
        );
        let (p, o, r) = parse(
            r#"{"output":[{"type":"reasoning","summary":[{"text":"why"}]},{"type":"message","content":[{"type":"output_text","text":"done"}]}],"usage":{"input_tokens":1,"output_tokens":2}}"#,
        );
        assert!(p.has_output);
        assert_eq!((o.as_str(), r.as_str()), ("done", "why"));
    }
}
