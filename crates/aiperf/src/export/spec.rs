//! The `output` section of the config: where artifacts go and what the console shows.

use std::path::PathBuf;

use serde::Serialize;

/// Progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UiType {
    None,
    Simple,
}

/// The resolved output settings, serialized as the export's `input_config.output`.
#[derive(Debug, Clone, Serialize)]
pub struct OutputSpec {
    pub artifact_directory: PathBuf,
    #[serde(skip)]
    pub ui: UiType,
    /// `-v` count: log more.
    #[serde(skip)]
    pub verbose: u8,
}
