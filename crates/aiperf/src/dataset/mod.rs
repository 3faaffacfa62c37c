//! The requests a benchmark sends, built before any phase starts so that generating them
//! never competes with sending them.
//!
//! Synthetic prompts are cut from a bundled public-domain corpus and have exactly their
//! sampled token count under the chosen tokenizer.

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

use crate::cli::EndpointType;
use crate::config::BenchmarkConfig;
use crate::endpoint::build_payload;
use crate::tokenizer::Tokenizer;

pub mod input_file;

const CORPUS: &str = include_str!("corpus.txt");

/// One single-turn conversation, with its payload serialized once.
#[derive(Debug, Clone)]
pub struct Entry {
    pub conversation_id: String,
    pub isl: u32,
    pub osl: Option<u32>,
    pub payload: Bytes,
    /// When a trace says to send it, in ms from the trace's origin.
    pub timestamp_ms: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub entries: Vec<Entry>,
}

/// Cuts prompts of exact token lengths from the corpus.
pub struct PromptGenerator {
    tokenizer: Tokenizer,
    corpus: Vec<u32>,
}

impl PromptGenerator {
    pub fn new(tokenizer: Tokenizer) -> Self {
        let corpus = tokenizer.encode(CORPUS);
        Self { tokenizer, corpus }
    }

    /// A prompt of exactly `n` tokens starting near corpus position `start`.
    pub fn prompt(&self, start: usize, n: usize) -> String {
        let len = self.corpus.len();
        let mut k = n;
        for _ in 0..16 {
            let tokens: Vec<u32> = (0..k).map(|i| self.corpus[(start + i) % len]).collect();
            let text = self.tokenizer.decode(&tokens);
            let text = text.trim_start().to_string();
            let got = self.tokenizer.count(&text);
            if got == n {
                return text;
            }
            // Re-encoding can merge or split tokens at the cut; steer k toward the target.
            k = (k as i64 + n as i64 - got as i64).max(1) as usize;
        }
        // A string that tokenizes predictably: one token per repeated word.
        let mut s = String::from("a");
        for _ in 1..n {
            s.push_str(" a");
        }
        s
    }

    /// A random start position in the corpus.
    pub fn random_start(&self, rng: &mut StdRng) -> usize {
        rng.gen_range(0..self.corpus.len())
    }
}

fn sample_len(rng: &mut StdRng, mean: f64, std: f64) -> u32 {
    if std <= 0.0 {
        return mean.round().max(1.0) as u32;
    }
    let normal = Normal::new(mean, std).expect("std is finite and positive");
    normal.sample(rng).round().max(1.0) as u32
}

/// Serializes one request's payload for the configured endpoint.
fn entry(
    cfg: &BenchmarkConfig,
    id: String,
    prompt: &str,
    isl: u32,
    osl: Option<u32>,
    timestamp_ms: Option<f64>,
) -> Entry {
    let payload = build_payload(
        cfg.endpoint_type,
        &cfg.model,
        prompt,
        osl,
        cfg.streaming && cfg.endpoint_type != EndpointType::Embeddings,
        cfg.use_legacy_max_tokens,
        &cfg.extra_inputs,
    );
    Entry {
        conversation_id: id,
        isl,
        osl,
        payload: Bytes::from(serde_json::to_vec(&payload).expect("payload serializes")),
        timestamp_ms,
    }
}

impl Dataset {
    /// Builds the requests: from `--input-file` when given, else synthetic prompts.
    pub fn build(
        cfg: &BenchmarkConfig,
        tokenizer: &Tokenizer,
    ) -> Result<Self, input_file::DatasetError> {
        match &cfg.input_file {
            Some(path) => input_file::load(cfg, path, tokenizer),
            None => Ok(Self::synthetic(cfg, tokenizer)),
        }
    }

    /// Builds `num_dataset_entries` synthetic single-turn requests.
    pub fn synthetic(cfg: &BenchmarkConfig, tokenizer: &Tokenizer) -> Self {
        let generator = PromptGenerator::new(tokenizer.clone());
        let mut rng = StdRng::seed_from_u64(cfg.random_seed);
        let entries = (0..cfg.num_dataset_entries)
            .map(|i| {
                let isl = sample_len(&mut rng, cfg.isl as f64, cfg.isl_stddev);
                let osl = cfg
                    .osl
                    .map(|o| sample_len(&mut rng, o as f64, cfg.osl_stddev));
                let start = generator.random_start(&mut rng);
                let prompt = generator.prompt(start, isl as usize);
                entry(cfg, format!("conv-{i}"), &prompt, isl, osl, None)
            })
            .collect();
        Dataset { entries }
    }

    /// Whether every entry carries a timestamp (a trace that can be replayed on schedule).
    pub fn has_timestamps(&self) -> bool {
        !self.entries.is_empty() && self.entries.iter().all(|e| e.timestamp_ms.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_have_exact_token_counts() {
        for name in ["builtin", "builtin:cl100k_base"] {
            let tok = Tokenizer::load(name).unwrap();
            let g = PromptGenerator::new(tok.clone());
            let mut rng = StdRng::seed_from_u64(7);
            for n in [1usize, 2, 3, 7, 16, 100, 550, 1000, 3000] {
                for _ in 0..5 {
                    let start = rng.gen_range(0..g.corpus.len());
                    let p = g.prompt(start, n);
                    assert_eq!(tok.count(&p), n, "{name}: start {start}, n {n}: {p:?}");
                }
            }
        }
    }

    #[test]
    fn sampled_lengths_are_clamped_and_reproducible() {
        let mut a = StdRng::seed_from_u64(1);
        let mut b = StdRng::seed_from_u64(1);
        for _ in 0..100 {
            let x = sample_len(&mut a, 2.0, 50.0);
            assert!(x >= 1);
            assert_eq!(x, sample_len(&mut b, 2.0, 50.0));
        }
        assert_eq!(sample_len(&mut a, 10.0, 0.0), 10);
    }
}
