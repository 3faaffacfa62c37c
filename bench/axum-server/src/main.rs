//! `axum-sse-server [--port P] [--itl-ms X] [--ttft-ms Y]`: POST /v1/chat/completions and
//! /v1/completions answer `max_tokens` (default 32) words, streamed as OpenAI chunk events
//! (`stream: true`) or as one JSON body; GET /v1/models lists one model. Each chunk is a
//! struct serialized by serde_json, framed by axum's `Sse`, as a typical Rust server does.
use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    response::{sse::Event, IntoResponse, Response, Sse},
    routing::{get, post},
    Json, Router,
};
use futures_util::stream::{self, Stream, StreamExt};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy)]
struct Timing {
    ttft: Duration,
    itl: Duration,
}

#[derive(Deserialize)]
struct Request {
    model: Option<String>,
    #[serde(default)]
    stream: bool,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    // Read so the body is parsed as a server must, though only its presence matters here.
    #[allow(dead_code)]
    messages: Option<Vec<serde_json::Value>>,
    #[allow(dead_code)]
    prompt: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<Choice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<Delta<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Delta<'a> {
    content: &'a str,
}

#[derive(Serialize, Clone, Copy)]
struct Usage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

const WORDS: [&str; 16] = [
    " the", " model", " answers", " with", " a", " stream", " of", " tokens", " that", " arrive",
    " one", " by", " one", " over", " the", " wire",
];

fn chunk_json(model: &str, chat: bool, word: &str, finish: Option<&'static str>) -> String {
    let choice = Choice {
        index: 0,
        delta: chat.then_some(Delta { content: word }),
        text: (!chat).then_some(word),
        finish_reason: finish,
    };
    let chunk = Chunk {
        id: "cmpl-axum",
        object: if chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        },
        created: 0,
        model,
        choices: vec![choice],
        usage: None,
    };
    serde_json::to_string(&chunk).expect("a chunk serializes")
}

fn events(
    req: Request,
    chat: bool,
    timing: Timing,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let n = req
        .max_completion_tokens
        .or(req.max_tokens)
        .unwrap_or(32)
        .max(1);
    let model = req.model.unwrap_or_else(|| "axum-model".into());
    let usage = req.stream_options.unwrap_or_default().include_usage;
    stream::iter(0..n)
        .then(move |i| async move {
            let wait = if i == 0 { timing.ttft } else { timing.itl };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            i
        })
        .map(move |i| {
            let finish = (i + 1 == n).then_some("length");
            let data = chunk_json(&model, chat, WORDS[i as usize % WORDS.len()], finish);
            let mut out = vec![Ok(Event::default().data(data))];
            if i + 1 == n {
                if usage {
                    let u = Usage {
                        prompt_tokens: 1,
                        completion_tokens: n,
                        total_tokens: n + 1,
                    };
                    let chunk = Chunk {
                        id: "cmpl-axum",
                        object: "chat.completion.chunk",
                        created: 0,
                        model: &model,
                        choices: vec![],
                        usage: Some(u),
                    };
                    let data = serde_json::to_string(&chunk).expect("a chunk serializes");
                    out.push(Ok(Event::default().data(data)));
                }
                out.push(Ok(Event::default().data("[DONE]")));
            }
            stream::iter(out)
        })
        .flatten()
}

async fn answer(req: Request, chat: bool, timing: Timing) -> Response {
    if req.stream {
        return Sse::new(events(req, chat, timing)).into_response();
    }
    let n = req
        .max_completion_tokens
        .or(req.max_tokens)
        .unwrap_or(32)
        .max(1);
    tokio::time::sleep(timing.ttft + timing.itl * (n - 1)).await;
    let text: String = (0..n).map(|i| WORDS[i as usize % WORDS.len()]).collect();
    let model = req.model.unwrap_or_else(|| "axum-model".into());
    let choice = if chat {
        serde_json::json!({"index": 0, "message": {"role": "assistant", "content": text},
                           "finish_reason": "length"})
    } else {
        serde_json::json!({"index": 0, "text": text, "finish_reason": "length"})
    };
    Json(serde_json::json!({
        "id": "cmpl-axum", "object": if chat { "chat.completion" } else { "text_completion" },
        "created": 0, "model": model, "choices": [choice],
        "usage": {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1},
    }))
    .into_response()
}

fn arg(args: &[String], name: &str) -> Option<f64> {
    let at = args.iter().position(|a| a == name)?;
    match args.get(at + 1).map(|v| v.parse::<f64>()) {
        Some(Ok(v)) if v.is_finite() && v >= 0.0 => Some(v),
        _ => {
            eprintln!("{name} needs a finite number >= 0");
            std::process::exit(2)
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port = arg(&args, "--port").unwrap_or(8000.0) as u16;
    let timing = Timing {
        ttft: Duration::from_secs_f64(arg(&args, "--ttft-ms").unwrap_or(0.0) / 1e3),
        itl: Duration::from_secs_f64(arg(&args, "--itl-ms").unwrap_or(0.0) / 1e3),
    };
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(|State(t): State<Timing>, Json(r): Json<Request>| answer(r, true, t)),
        )
        .route(
            "/v1/completions",
            post(|State(t): State<Timing>, Json(r): Json<Request>| answer(r, false, t)),
        )
        .route("/health", get(|| async { "ok" }))
        .route(
            "/v1/models",
            get(|| async {
                Json(serde_json::json!({"object": "list",
                    "data": [{"id": "axum-model", "object": "model", "owned_by": "bench"}]}))
            }),
        )
        .with_state(timing);
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on 127.0.0.1:{port}: {e}");
            std::process::exit(1)
        }
    };
    println!("listening on 127.0.0.1:{port}");
    // SIGINT or SIGTERM stops it (a background job of a script starts with SIGINT ignored,
    // and a handler installed here takes it back).
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler installs");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    // TCP_NODELAY, as uvicorn (vLLM, SGLang) and most servers set it: without it each event
    // waits for the ACK of the one before (Nagle), about 1.4 ms per token here.
    let serve = axum::serve(listener, app).tcp_nodelay(true);
    if let Err(e) = serve.with_graceful_shutdown(stop).await {
        eprintln!("server failed: {e}");
        std::process::exit(1)
    }
}
