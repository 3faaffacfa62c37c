//! The `input` section of the config: what is sent (synthetic prompts or a file) and how
//! entries are picked.

use std::path::PathBuf;

use serde::Serialize;

/// Format of `--input-file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomDatasetType {
    /// JSONL of `{"text": ...}` or `{"texts": [...]}`, optional `output_length`.
    #[value(name = "single_turn")]
    SingleTurn,
    /// JSONL of `{"timestamp" (ms)?, "input_length", "output_length"?, "hash_ids"?}`.
    #[value(name = "mooncake_trace")]
    MooncakeTrace,
    /// JSONL of sessions `{"session_id"?, "turns": [{"text", "delay"? (ms), "output_length"?}]}`.
    #[value(name = "multi_turn")]
    MultiTurn,
    /// JSONL of single-turn entries drawn at random (same line format as single_turn).
    #[value(name = "random_pool")]
    RandomPool,
    /// ShareGPT JSON: `[{"conversations": [{"from": "human"|"gpt", "value"}, ...]}]`.
    #[value(name = "sharegpt")]
    Sharegpt,
}

/// How dataset entries are picked for each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplingStrategy {
    /// In file order, wrapping around.
    Sequential,
    /// Drawn at random with replacement.
    Random,
    /// Shuffled, then in that order; reshuffled at every pass.
    Shuffle,
}

/// A length in tokens: a mean and a standard deviation.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Lengths<T> {
    pub mean: T,
    pub stddev: f64,
}

/// Synthetic prompt lengths: input (`--isl`) and output (`--osl`; unset: the server decides).
#[derive(Debug, Clone, Serialize)]
pub struct PromptSpec {
    pub input_tokens: Lengths<u32>,
    pub output_tokens: Lengths<Option<u32>>,
}

/// Synthetic multi-turn conversations (`--conversation-turn-*`): turns per conversation and
/// the wait before each later turn, in ms, drawn as AIPerf draws them.
#[derive(Debug, Clone, Serialize)]
pub struct ConversationSpec {
    pub turns: Lengths<u32>,
    pub turn_delay_ms: Lengths<f64>,
    pub turn_delay_ratio: f64,
}

impl Default for ConversationSpec {
    fn default() -> Self {
        Self {
            turns: Lengths {
                mean: 1,
                stddev: 0.0,
            },
            turn_delay_ms: Lengths {
                mean: 0.0,
                stddev: 0.0,
            },
            turn_delay_ratio: 1.0,
        }
    }
}

/// The resolved input settings, serialized as the export's `input_config.input`.
#[derive(Debug, Clone, Serialize)]
pub struct InputSpec {
    pub random_seed: u64,
    pub num_dataset_entries: usize,
    pub input_file: Option<PathBuf>,
    pub custom_dataset_type: Option<CustomDatasetType>,
    /// `Some(true)`: replay timestamps (required); `Some(false)`: ignore them; `None`: auto.
    pub fixed_schedule: Option<bool>,
    /// `--fixed-schedule-auto-offset`: the first timestamp is time zero (otherwise
    /// timestamps are offsets from the start, or from `--fixed-schedule-start-offset`).
    pub fixed_schedule_auto_offset: bool,
    pub fixed_schedule_start_offset: Option<f64>,
    pub fixed_schedule_end_offset: Option<f64>,
    pub replay_speedup: f64,
    /// `--dataset-sampling-strategy`; `None`: the dataset type's default.
    #[serde(rename = "dataset_sampling_strategy")]
    pub sampling: Option<SamplingStrategy>,
    pub isl_block_size: u32,
    pub prefix_prompt_length: u32,
    pub num_prefix_prompts: u32,
    pub batch_size: u32,
    pub use_server_token_count: bool,
    /// `--tokenizer` and its options (flat: `tokenizer`, `tokenizer_revision`, ...).
    #[serde(flatten)]
    pub tokenizer: crate::tokenizer::TokenizerSpec,
    pub prompt: PromptSpec,
    /// Synthetic conversations: their turns and delays.
    pub conversation: ConversationSpec,
    /// `--system-prompt`, or the text of `--system-prompt-file`: a system message opening
    /// every conversation.
    pub system_prompt: Option<String>,
    pub system_prompt_file: Option<PathBuf>,
    /// A synthetic system message of this many tokens, shared by every conversation.
    pub shared_system_prompt_length: Option<u32>,
    /// A synthetic user message of this many tokens opening each conversation, its own.
    pub user_context_prompt_length: Option<u32>,
    /// `--goodput`'s objectives, as AIPerf's `input.goodput`: `{tag: threshold}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goodput: Option<crate::metrics::Goodput>,
}

impl InputSpec {
    /// The output length asked for, when `--osl` is given.
    pub fn osl(&self) -> Option<u32> {
        self.prompt.output_tokens.mean
    }
}
