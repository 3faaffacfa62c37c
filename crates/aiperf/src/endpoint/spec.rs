//! The `endpoint` section of the config: where requests go and what they look like.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

/// API shape of the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointType {
    Chat,
    Completions,
    Embeddings,
    /// The OpenAI Responses API (`/v1/responses`).
    Responses,
    /// A user JSON template (`--payload-template`) for servers not shaped like OpenAI's.
    Template,
}

impl EndpointType {
    /// The path requests go to unless `--endpoint` says otherwise (`template` has none).
    pub fn default_path(self) -> Option<&'static str> {
        match self {
            EndpointType::Chat => Some("/v1/chat/completions"),
            EndpointType::Completions => Some("/v1/completions"),
            EndpointType::Embeddings => Some("/v1/embeddings"),
            EndpointType::Responses => Some("/v1/responses"),
            EndpointType::Template => None,
        }
    }

    /// The label in default artifact directory names, as AIPerf writes it.
    pub fn label(self) -> &'static str {
        match self {
            EndpointType::Chat => "openai-chat",
            EndpointType::Completions => "openai-completions",
            EndpointType::Embeddings => "openai-embeddings",
            EndpointType::Responses => "openai-responses",
            EndpointType::Template => "template",
        }
    }
}

/// How the model of each dataset entry is chosen when `--model` names several
/// (`--model-selection-strategy`). AIPerf's spellings are accepted (`round-robin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSelectionStrategy {
    /// Entry *n* gets model *n* mod (number of models).
    #[default]
    #[value(name = "round_robin", alias = "round-robin")]
    RoundRobin,
    /// A seeded uniform draw per entry (`--random-seed`).
    Random,
    /// AIPerf's per-model weights, which only its YAML `models:` section can give: rejected.
    Weighted,
}

/// `--wait-for-model-mode`: what the readiness probe checks before the first phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitMode {
    /// `GET /v1/models` lists the model (a 404 there: any 2xx from the base URL).
    Models,
    /// A one-token request to the endpoint gets any answer below 500.
    #[default]
    Inference,
    /// `models`, then `inference`.
    Both,
}

/// `--url-strategy`: how requests are spread over several `--url`s (AIPerf has one way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UrlStrategy {
    /// Request *n* goes to URL *n* mod (number of URLs).
    #[default]
    #[value(name = "round_robin", alias = "round-robin")]
    RoundRobin,
}

/// `--transport`: the protocol requests go over (AIPerf has one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportKind {
    /// HTTP/1.1 for `http://`, HTTP/1.1 or HTTP/2 for `https://`.
    #[default]
    Http,
}

/// The readiness probe's settings (`--wait-for-model-*`); the probe runs when `timeout` is
/// not zero.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct WaitForModel {
    #[serde(
        rename = "wait_for_model_timeout",
        serialize_with = "crate::units::secs"
    )]
    pub timeout: Duration,
    #[serde(rename = "wait_for_model_mode")]
    pub mode: WaitMode,
    #[serde(
        rename = "wait_for_model_interval",
        serialize_with = "crate::units::secs"
    )]
    pub interval: Duration,
}
/// `--connection-reuse-strategy`: how requests share connections (AIPerf's values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectionReuseStrategy {
    /// Keep-alive connections, pooled per URL and reused by any request.
    #[default]
    Pooled,
    /// A new connection for every request, closed after its response.
    Never,
    /// One connection per conversation, kept for all its turns and closed after the last
    /// (or after a failed turn, which ends the conversation).
    StickyUserSessions,
}

/// The `X-Correlation-ID` header's name unless `--session-header` renames it.
pub const DEFAULT_SESSION_HEADER: &str = "X-Correlation-ID";

/// The resolved endpoint settings. Serialized (secrets hidden) as the export's
/// `input_config.endpoint`.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointSpec {
    /// `--model`: one or more names (never empty).
    #[serde(rename = "model_names")]
    pub models: Vec<String>,
    pub model_selection_strategy: ModelSelectionStrategy,
    /// The seed of `random` model selection (the run's `--random-seed`).
    #[serde(skip)]
    pub model_seed: u64,
    #[serde(rename = "type")]
    pub endpoint_type: EndpointType,
    /// The request path (the type's default or `--endpoint`).
    #[serde(rename = "custom_endpoint")]
    pub path: String,
    pub streaming: bool,
    /// Base URLs with a scheme; `mock…` until the built-in mock is started.
    pub urls: Vec<String>,
    #[serde(serialize_with = "crate::secret::hidden")]
    pub api_key: Option<String>,
    #[serde(serialize_with = "crate::secret::hidden_headers")]
    pub headers: Vec<(String, String)>,
    #[serde(serialize_with = "crate::secret::redacted_map")]
    pub extra_inputs: Map<String, Value>,
    #[serde(rename = "timeout_seconds", serialize_with = "crate::units::secs")]
    pub request_timeout: Duration,
    pub use_legacy_max_tokens: bool,
    /// The parsed `--payload-template` (for `--endpoint-type template`).
    pub payload_template: Option<Value>,
    pub response_field: String,
    /// `--ssl-ca-file`, as given.
    pub ssl_ca_files: Vec<PathBuf>,
    /// `--ssl-insecure`.
    pub ssl_insecure: bool,
    /// Ask streamed chat/completions for a final `usage` chunk (`stream_options.include_usage`,
    /// as AIPerf does); off with `--no-stream-usage`.
    pub stream_usage: bool,
    /// `--wait-for-model-timeout`, `-mode`, `-interval`.
    #[serde(flatten)]
    pub wait_for_model: WaitForModel,
    pub url_strategy: UrlStrategy,
    pub transport: TransportKind,
    /// `--connection-reuse-strategy`.
    pub connection_reuse_strategy: ConnectionReuseStrategy,
    /// The header carrying the conversation's id (`--session-header`, else
    /// `X-Correlation-ID`).
    pub session_header: String,
    /// Time `http://` responses by the kernel's receive stamps (off with
    /// `--no-kernel-timestamps`).
    pub kernel_timestamps: bool,
    /// `--local-addresses`: the source addresses of the client's connections (empty: the
    /// kernel picks, or the automatic spread for loopback targets).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub local_addresses: Vec<std::net::IpAddr>,
}

impl EndpointSpec {
    /// The first (or only) model: the default artifact directory and the console title use it,
    /// and without `--tokenizer` its tokenizer counts tokens.
    pub fn model(&self) -> &str {
        self.models.first().map_or("", String::as_str)
    }

    /// Whether responses are streamed: asked for, and the endpoint can stream.
    pub fn streams(&self) -> bool {
        self.streaming && self.endpoint_type != EndpointType::Embeddings
    }

    /// What the transport trusts for `https://`.
    pub fn tls(&self) -> TlsOptions {
        TlsOptions {
            ca_files: self.ssl_ca_files.clone(),
            insecure: self.ssl_insecure,
        }
    }
}

/// What `--ssl-ca-file` and `--ssl-insecure` asked for (the transport builds its TLS
/// client config from it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM files of extra trusted certificates (CAs or self-signed server certificates).
    pub ca_files: Vec<PathBuf>,
    /// Accept any server certificate.
    pub insecure: bool,
}
