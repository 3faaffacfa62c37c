//! The mock's prefix-cache model, behind `vllm:prefix_cache_queries_total` and
//! `vllm:prefix_cache_hits_total`.
//!
//! Like vLLM's, it caches blocks: the prompt is cut into blocks of [`BLOCK`] bytes (16
//! tokens at the mock's four bytes a token), each named by a hash chained over every block
//! before it, so a block is found only when the whole prefix up to it was seen before. A
//! request queries its prompt tokens and hits the tokens of its leading blocks already in
//! the cache; then its blocks are cached. The prompt starts at the body's `"messages"`,
//! `"prompt"` or `"input"` key, so the JSON fields before it (model, stream, …) do not
//! count as a shared prefix. The cache holds at most [`CAPACITY`] blocks and is emptied when
//! full (no LRU: a crude eviction, enough for a benchmark's repeated prefixes).

use std::collections::HashSet;
use std::sync::Mutex;

/// Bytes of prompt per cached block.
pub const BLOCK: usize = 64;
/// Tokens per block (the mock counts four bytes a token).
pub const BLOCK_TOKENS: u64 = (BLOCK / 4) as u64;
/// The most blocks cached.
pub const CAPACITY: usize = 1 << 20;

#[derive(Default)]
pub struct PrefixCache {
    blocks: Mutex<HashSet<u64>>,
}

/// Where the prompt starts in a request body.
fn prompt_part(body: &[u8]) -> &[u8] {
    for key in [&b"\"messages\""[..], b"\"prompt\"", b"\"input\""] {
        if let Some(i) = memchr::memmem::find(body, key) {
            return &body[i..];
        }
    }
    body
}

/// FNV-1a over `block`, seeded with the previous block's hash.
fn chain(prev: u64, block: &[u8]) -> u64 {
    let mut h = prev ^ 0xcbf2_9ce4_8422_2325;
    for &b in block {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl PrefixCache {
    /// Looks a request body up and caches its blocks: the tokens that hit.
    pub fn hits(&self, body: &[u8]) -> u64 {
        let prompt = prompt_part(body);
        let mut hashes = Vec::with_capacity(prompt.len() / BLOCK);
        let mut h = 0u64;
        for block in prompt.chunks_exact(BLOCK) {
            h = chain(h, block);
            hashes.push(h);
        }
        let Ok(mut seen) = self.blocks.lock() else {
            return 0;
        };
        let hit = hashes.iter().take_while(|h| seen.contains(h)).count();
        if seen.len() + hashes.len() > CAPACITY {
            seen.clear();
        }
        seen.extend(hashes);
        hit as u64 * BLOCK_TOKENS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(prompt: &str) -> Vec<u8> {
        format!(
            r#"{{"model":"m","stream":true,"messages":[{{"role":"user","content":"{prompt}"}}]}}"#
        )
        .into_bytes()
    }

    #[test]
    fn a_shared_prefix_hits_its_whole_blocks() {
        let c = PrefixCache::default();
        let shared = "x".repeat(300);
        assert_eq!(c.hits(&body(&format!("{shared} first"))), 0, "cold");
        // `"messages":[{"role":"user","content":"` is 38 bytes, so 300 shared bytes make
        // (38 + 300) / 64 = 5 whole blocks.
        assert_eq!(c.hits(&body(&format!("{shared} second"))), 5 * BLOCK_TOKENS);
        // A different start shares nothing, whatever follows.
        assert_eq!(c.hits(&body(&format!("y{shared}"))), 0);
        // The same request again hits all of its whole blocks.
        let again = body(&format!("{shared} second"));
        let whole = (prompt_part(&again).len() / BLOCK) as u64;
        assert_eq!(c.hits(&again), whole * BLOCK_TOKENS);
        // Hits never exceed the prompt tokens the mock counts (body bytes / 4).
        assert!(whole * BLOCK_TOKENS <= again.len() as u64 / 4);
    }
}
