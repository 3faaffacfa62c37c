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
    #[serde(rename = "model_names", serialize_with = "one_item_list")]
    pub model: String,
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
    /// `--connection-reuse-strategy`.
    pub connection_reuse_strategy: ConnectionReuseStrategy,
    /// The header carrying the conversation's id (`--session-header`, else
    /// `X-Correlation-ID`).
    pub session_header: String,
}

impl EndpointSpec {
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

fn one_item_list<S: serde::Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq([v])
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
