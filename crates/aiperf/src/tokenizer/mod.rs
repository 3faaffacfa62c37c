//! Token counting and prompt text, with encodings embedded in the binary (no network).
//!
//! Loading an encoding parses ~200k ranks, so it is done once and shared; callers that need it
//! early (dataset generation) wait for it, the hot path never touches it.

use std::sync::Arc;

use tiktoken_rs::CoreBPE;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("unknown tokenizer `{0}`: use `builtin` (o200k_base) or `builtin:cl100k_base`")]
    Unknown(String),
    #[error("cannot load tokenizer `{name}`: {message}")]
    Load { name: String, message: String },
}

/// A loaded tokenizer, cheap to clone.
#[derive(Clone)]
pub struct Tokenizer {
    name: String,
    bpe: Arc<CoreBPE>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("name", &self.name)
            .finish()
    }
}

impl Tokenizer {
    /// Loads `builtin`, `builtin:o200k_base` or `builtin:cl100k_base`.
    pub fn load(spec: &str) -> Result<Self, TokenizerError> {
        let (name, bpe) = match spec {
            "builtin" | "builtin:o200k_base" | "o200k_base" => {
                ("o200k_base", tiktoken_rs::o200k_base())
            }
            "builtin:cl100k_base" | "cl100k_base" => ("cl100k_base", tiktoken_rs::cl100k_base()),
            other => return Err(TokenizerError::Unknown(other.to_string())),
        };
        let bpe = bpe.map_err(|e| TokenizerError::Load {
            name: name.to_string(),
            message: e.to_string(),
        })?;
        Ok(Self {
            name: name.to_string(),
            bpe: Arc::new(bpe),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.bpe.encode_ordinary(text)
    }

    pub fn count(&self, text: &str) -> usize {
        if text.is_empty() {
            0
        } else {
            self.bpe.encode_ordinary(text).len()
        }
    }

    /// Decodes tokens to text; invalid UTF-8 at a cut is replaced, never an error.
    pub fn decode(&self, tokens: &[u32]) -> String {
        match self.bpe.decode(tokens.to_vec()) {
            Ok(s) => s,
            Err(_) => {
                let bytes: Vec<u8> = self
                    .bpe
                    ._decode_native_and_split(tokens.to_vec())
                    .flatten()
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_known_strings() {
        let t = Tokenizer::load("builtin").unwrap();
        assert_eq!(t.name(), "o200k_base");
        assert_eq!(t.count(""), 0);
        assert_eq!(t.count("hello world"), 2);
        let c = Tokenizer::load("builtin:cl100k_base").unwrap();
        assert_eq!(c.count("hello world"), 2);
        assert!(Tokenizer::load("gpt9").is_err());
    }

    #[test]
    fn decode_inverts_encode() {
        let t = Tokenizer::load("builtin").unwrap();
        let text = "The quick brown fox jumps over the lazy dog.";
        assert_eq!(t.decode(&t.encode(text)), text);
    }
}
