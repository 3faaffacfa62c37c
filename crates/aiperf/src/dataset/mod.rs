//! The requests a benchmark sends, built before any phase starts so that generating them
//! never competes with sending them.
//!
//! Synthetic prompts are cut from a bundled public-domain corpus and have exactly their
//! sampled token count under the chosen tokenizer.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

use crate::endpoint::{build_payload, Message, RequestShape};
use crate::mix::mix;
use crate::tokenizer::Tokenizer;
use crate::units::{self, MAX_DELAY_MS, MAX_TOKENS, MAX_TURNS};

pub mod input_file;
mod spec;

pub use input_file::DatasetError;
pub use spec::{
    ConversationSpec, CustomDatasetType, InputSpec, Lengths, PromptSpec, SamplingStrategy,
};

pub(crate) const CORPUS: &str = include_str!("corpus.txt");

/// One turn of a conversation.
#[derive(Debug, Clone)]
pub struct Turn {
    /// The user text (kept for turns after the first, whose payload includes history).
    pub text: String,
    /// Tokens of the turn's input as the client tokenizer counts them.
    pub isl: u32,
    pub osl: Option<u32>,
    /// Wait this long after the previous turn's reply before sending this one (checked
    /// against `units::MAX_DELAY_MS` when the file is read).
    pub delay: Duration,
}

/// One conversation; its first turn's payload is serialized once, up front.
#[derive(Debug, Clone)]
pub struct Entry {
    pub conversation_id: String,
    pub turns: Vec<Turn>,
    pub payload: Bytes,
    /// When a trace says to send it, in ms from the trace's origin.
    pub timestamp_ms: Option<f64>,
    /// `--user-context-prompt-length`: a user message of its own opening the conversation,
    /// after the system prompt (AIPerf's `user_context_message`).
    pub context: Option<String>,
    /// Multi-turn: the later turns' payloads as first sent (they hold the server's replies,
    /// so they exist only once the conversation has run).
    pub later_payloads: std::sync::OnceLock<Vec<Bytes>>,
}

impl Entry {
    pub fn isl(&self) -> u32 {
        self.turns[0].isl
    }
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub entries: Vec<Entry>,
    /// A system message opening every conversation: `--system-prompt`, or the synthetic one
    /// of `--shared-system-prompt-length`.
    pub system_prompt: Option<String>,
    pub shape: RequestShape,
    pub sampling: SamplingStrategy,
    pub seed: u64,
    /// Shuffle-mode permutations of the latest passes over the entries, made on demand
    /// (each is a function of the seed and the pass, so an old one can be made again).
    permutations: Arc<Mutex<VecDeque<(u64, Permutation)>>>,
}

/// Shuffle mode: one pass's order of the entries.
type Permutation = Arc<[u32]>;

/// The blocks [`PromptGenerator::block`] handed out so far, so that each new one differs.
#[derive(Debug, Default)]
pub struct UsedBlocks {
    texts: HashSet<String>,
    /// A walk of the corpus found no new window: later blocks skip it.
    corpus_exhausted: bool,
    /// Numbered blocks do not fit either (too short): later blocks repeat.
    numbers_exhausted: bool,
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

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// A prompt of exactly `n` tokens starting near corpus position `start`.
    pub fn prompt(&self, start: usize, n: usize) -> String {
        self.with_prefix("", start, n)
    }

    /// `prefix` followed by corpus text, exactly `n` tokens in all (`prefix` is kept byte
    /// for byte, so prompts sharing it share a cacheable prefix).
    pub fn with_prefix(&self, prefix: &str, start: usize, n: usize) -> String {
        let len = self.corpus.len();
        let mut k = n.saturating_sub(self.tokenizer.count(prefix)).max(1);
        // (A tokenizer that encodes the corpus to nothing gets the fallback below.)
        for _ in 0..if len == 0 { 0 } else { 16 } {
            let tokens: Vec<u32> = (0..k)
                .map(|i| self.corpus[start.wrapping_add(i) % len])
                .collect();
            let body = self.tokenizer.decode(&tokens);
            let text = if prefix.is_empty() {
                body.trim().to_string()
            } else {
                format!("{prefix}{}", body.trim_end())
            };
            let got = self.tokenizer.count(&text);
            if got == n {
                return text;
            }
            // Re-encoding can merge or split tokens at the cut; steer k toward the target.
            k = (k as i64 + n as i64 - got as i64).max(1) as usize;
        }
        // A string that tokenizes predictably (about one token per repeated word), steered
        // the same way: a bounded number of tries, whatever the tokenizer does.
        let words = |k: usize| {
            let mut s = prefix.to_string();
            for _ in 0..k {
                s.push_str(if s.is_empty() { "a" } else { " a" });
            }
            s
        };
        let mut k = n.saturating_sub(self.tokenizer.count(prefix));
        let mut s = words(k);
        for _ in 0..16 {
            let got = self.tokenizer.count(&s);
            if got == n {
                break;
            }
            let next = (k as i64 + n as i64 - got as i64).clamp(0, 4 * n as i64) as usize;
            if next == k {
                break;
            }
            k = next;
            s = words(k);
        }
        s
    }

    /// A block of exactly `n` tokens that ends in a newline, unlike every block in `used`.
    /// Its text ends in a letter or digit, because punctuation merges with a following
    /// newline into one token; so a prompt made of blocks counts as the sum of its blocks,
    /// and prompts that share leading blocks share those tokens exactly.
    ///
    /// Blocks too short to be told apart by a leading number (a few tokens), once the corpus
    /// has no new window of that length, repeat: every search here is bounded.
    pub fn block(&self, start: usize, n: usize, used: &mut UsedBlocks) -> String {
        if n <= 1 {
            return "\n".to_string();
        }
        let fits = |t: &str| {
            t.ends_with(|c: char| c.is_alphanumeric()) && self.tokenizer.count(t) == n - 1
        };
        // The corpus is small: walk it in strides that don't revisit the same windows soon.
        let window = |attempt: usize| self.prompt(start.wrapping_add(attempt * 37), n - 1);
        if !used.corpus_exhausted {
            for attempt in 0..256 {
                let text = window(attempt);
                if fits(&text) && used.texts.insert(text.clone()) {
                    return format!("{text}\n");
                }
            }
            used.corpus_exhausted = true;
        }
        // Out of distinct windows: make one distinct by a leading number.
        if !used.numbers_exhausted {
            let first = used.texts.len();
            for tag in first..first + 256 {
                let text = self.with_prefix(&format!("{tag} "), start, n - 1);
                if fits(&text) && used.texts.insert(text.clone()) {
                    return format!("{text}\n");
                }
            }
            used.numbers_exhausted = true;
        }
        let text = (0..256)
            .map(window)
            .find(|t| fits(t))
            .unwrap_or_else(|| window(0));
        format!("{text}\n")
    }

    /// A random start position in the corpus.
    pub fn random_start(&self, rng: &mut StdRng) -> usize {
        rng.gen_range(0..self.corpus.len().max(1))
    }
}

/// A length drawn from a normal distribution, rounded and kept in 1..=`MAX_TOKENS` (the
/// flags are bounded by their parsers; this keeps a draw far in the tail bounded too).
fn sample_len(rng: &mut StdRng, mean: f64, std: f64) -> u32 {
    let drawn = match Normal::new(mean, std) {
        Ok(normal) if std > 0.0 => normal.sample(rng),
        _ => mean,
    };
    // NaN (from a NaN mean or deviation) becomes 1: `max` ignores it, `as` saturates.
    drawn.round().max(1.0).min(f64::from(MAX_TOKENS)) as u32
}

/// The messages that open every request of a conversation, before its turns: the system
/// prompt, then the conversation's user context; and their tokens, counted into every
/// turn's ISL (each request carries them).
#[derive(Debug, Clone, Default)]
pub struct Preamble<'a> {
    pub system: Option<&'a str>,
    pub context: Option<String>,
    pub tokens: u32,
}

impl Preamble<'_> {
    fn messages(&self) -> Vec<Message> {
        let system = self.system.map(|s| ("system", s.to_string()));
        let context = self.context.clone().map(|c| ("user", c));
        system.into_iter().chain(context).collect()
    }
}

/// A token count as the dataset stores it (a text longer than `u32::MAX` tokens saturates).
fn count_tokens(tokenizer: &Tokenizer, text: &str) -> u32 {
    u32::try_from(tokenizer.count(text)).unwrap_or(u32::MAX)
}

/// Builds entry number `index` of the dataset (the endpoint picks its model by it); `inputs`
/// are the first turn's texts (several for an embeddings batch).
fn entry(
    shape: &RequestShape,
    index: usize,
    preamble: &Preamble,
    id: String,
    inputs: Vec<String>,
    mut turns: Vec<Turn>,
    timestamp_ms: Option<f64>,
) -> Entry {
    let mut messages = preamble.messages();
    messages.extend(inputs.into_iter().map(|t| ("user", t)));
    for turn in &mut turns {
        turn.isl = turn.isl.saturating_add(preamble.tokens);
    }
    let payload = build_payload(shape, index, &messages, turns[0].osl);
    Entry {
        conversation_id: id,
        turns,
        // A `Value` always serializes (its keys are strings).
        payload: Bytes::from(serde_json::to_vec(&payload).unwrap_or_default()),
        timestamp_ms,
        context: preamble.context.clone(),
        later_payloads: std::sync::OnceLock::new(),
    }
}

/// A synthetic conversation's id, as AIPerf names them (`session_000042`).
pub fn session_id(i: usize) -> String {
    format!("session_{i:06}")
}

/// A one-turn entry: `prompt` of `isl` tokens, asking for `osl`.
fn single(
    shape: &RequestShape,
    index: usize,
    preamble: &Preamble,
    id: String,
    (prompt, isl, osl): (String, u32, Option<u32>),
    timestamp_ms: Option<f64>,
) -> Entry {
    let turn = Turn {
        text: String::new(),
        isl,
        osl,
        delay: Duration::ZERO,
    };
    entry(
        shape,
        index,
        preamble,
        id,
        vec![prompt],
        vec![turn],
        timestamp_ms,
    )
}

/// A count drawn as AIPerf's `sample_positive_normal_integer` draws it: without deviation
/// the mean rounded; else a normal draw, redrawn while negative (at most 10,000 times, then
/// the mean), rounded up; at least 1 and at most `max`.
fn positive_normal_integer(rng: &mut StdRng, mean: f64, stddev: f64, max: u64) -> u64 {
    let clamp = |v: f64| v.max(1.0).min(max as f64) as u64;
    let normal = match Normal::new(mean, stddev) {
        Ok(n) if stddev > 0.0 => n,
        // NaN becomes 1: `max` ignores it, `as` saturates.
        _ => return clamp(mean.round()),
    };
    for _ in 0..10_000 {
        let v = normal.sample(rng);
        if v >= 0.0 {
            return clamp(v.ceil());
        }
    }
    clamp(mean.max(0.0).ceil())
}

/// Turns of a synthetic conversation (`--conversation-turn-mean/-stddev`).
fn sample_turns(rng: &mut StdRng, spec: &ConversationSpec) -> usize {
    let turns = &spec.turns;
    positive_normal_integer(rng, f64::from(turns.mean), turns.stddev, MAX_TURNS.into()) as usize
}

/// The wait before a later synthetic turn: none without a mean delay; else, as AIPerf does
/// it, a count of whole ms drawn from the mean and deviation cut to whole ms (at least 1),
/// times the ratio.
fn sample_delay(rng: &mut StdRng, spec: &ConversationSpec) -> Duration {
    let d = &spec.turn_delay_ms;
    if d.mean.is_nan() || d.mean <= 0.0 {
        return Duration::ZERO;
    }
    let max = MAX_DELAY_MS as u64;
    let ms = positive_normal_integer(rng, d.mean.trunc(), d.stddev.trunc(), max);
    units::clamped_millis(ms as f64 * spec.turn_delay_ratio)
}

/// Seeds of the synthetic draws that came with multi-turn conversations, apart from the
/// prompts' own so that a single-turn dataset is what it was.
const TURNS_SALT: u64 = 0x5455_524E;
const CONTEXT_SALT: u64 = 0x4354_5854;
const SYSTEM_SALT: u64 = 0x5359_5354;

impl Dataset {
    /// Builds the requests: from `--input-file` when given, else synthetic prompts.
    pub fn build(
        cfg: &InputSpec,
        shape: RequestShape,
        tokenizer: &Tokenizer,
    ) -> Result<Self, input_file::DatasetError> {
        let generator = PromptGenerator::new(tokenizer.clone());
        let system_prompt = cfg.system_prompt.clone().or_else(|| {
            cfg.shared_system_prompt_length.map(|n| {
                let mut rng = StdRng::seed_from_u64(mix(cfg.random_seed, SYSTEM_SALT));
                let start = generator.random_start(&mut rng);
                generator.prompt(start, n as usize)
            })
        });
        let preamble = Preamble {
            system: system_prompt.as_deref(),
            context: None,
            tokens: system_prompt
                .as_deref()
                .map_or(0, |s| count_tokens(tokenizer, s)),
        };
        let (entries, default_sampling) = match &cfg.input_file {
            Some(path) => input_file::load(cfg, &shape, &preamble, path, tokenizer)?,
            None => (
                Self::synthetic_entries(cfg, &shape, &preamble, &generator),
                SamplingStrategy::Sequential,
            ),
        };
        Ok(Dataset {
            entries,
            system_prompt,
            shape,
            sampling: cfg.sampling.unwrap_or(default_sampling),
            seed: cfg.random_seed,
            permutations: Arc::default(),
        })
    }

    /// The messages a conversation's later turns start with (the first turn's payload
    /// already holds them): the system prompt, then the entry's user context.
    pub fn preamble(&self, entry: &Entry) -> Vec<Message> {
        Preamble {
            system: self.system_prompt.as_deref(),
            context: entry.context.clone(),
            tokens: 0,
        }
        .messages()
    }

    /// `num_dataset_entries` synthetic conversations (with shared prefixes when asked): a
    /// first turn of one request (an embeddings batch: several inputs), then, with
    /// `--conversation-turn-mean`, later turns of one prompt each, every one with its own
    /// ISL and OSL draws and a delay.
    fn synthetic_entries(
        cfg: &InputSpec,
        shape: &RequestShape,
        preamble: &Preamble,
        generator: &PromptGenerator,
    ) -> Vec<Entry> {
        let tokenizer = generator.tokenizer();
        let mut rng = StdRng::seed_from_u64(cfg.random_seed);
        // Distinct prefixes, each ending in a newline: a token boundary no prompt merges across.
        let mut used = UsedBlocks::default();
        let prefixes: Vec<String> = (0..cfg.num_prefix_prompts)
            .map(|_| {
                let start = generator.random_start(&mut rng);
                generator.block(start, cfg.prefix_prompt_length as usize, &mut used)
            })
            .collect();
        let (isl, osl) = (cfg.prompt.input_tokens, cfg.prompt.output_tokens);
        // Entries are independent (each has its own seeded generator), so they are built on
        // every core: this is most of the time before the first request.
        let make = |i: usize| {
            let mut rng = StdRng::seed_from_u64(mix(cfg.random_seed, i as u64));
            let first_isl = sample_len(&mut rng, isl.mean as f64, isl.stddev);
            let first_osl = osl.mean.map(|o| sample_len(&mut rng, o as f64, osl.stddev));
            let batch: Vec<String> = (0..cfg.batch_size.max(1))
                .map(|_| {
                    let start = generator.random_start(&mut rng);
                    if prefixes.is_empty() {
                        generator.prompt(start, first_isl as usize)
                    } else {
                        let prefix = &prefixes[rng.gen_range(0..prefixes.len())];
                        let total = tokenizer.count(prefix) + first_isl as usize;
                        generator.with_prefix(prefix, start, total)
                    }
                })
                .collect();
            let first_isl = batch
                .iter()
                .map(|p| count_tokens(tokenizer, p))
                .fold(0u32, u32::saturating_add);
            // Later turns and the context are drawn from streams of their own.
            let mut turn_rng = StdRng::seed_from_u64(mix(cfg.random_seed ^ TURNS_SALT, i as u64));
            let n_turns = sample_turns(&mut turn_rng, &cfg.conversation);
            let mut turns = Vec::with_capacity(n_turns);
            turns.push(Turn {
                // Kept for the history of later turns.
                text: if n_turns > 1 {
                    batch[0].clone()
                } else {
                    String::new()
                },
                isl: first_isl,
                osl: first_osl,
                delay: Duration::ZERO,
            });
            for _ in 1..n_turns {
                let len = sample_len(&mut turn_rng, isl.mean as f64, isl.stddev);
                let osl = osl
                    .mean
                    .map(|o| sample_len(&mut turn_rng, o as f64, osl.stddev));
                let start = generator.random_start(&mut turn_rng);
                let text = generator.prompt(start, len as usize);
                turns.push(Turn {
                    isl: count_tokens(tokenizer, &text),
                    osl,
                    delay: sample_delay(&mut turn_rng, &cfg.conversation),
                    text,
                });
            }
            let context = cfg.user_context_prompt_length.map(|n| {
                let mut rng = StdRng::seed_from_u64(mix(cfg.random_seed ^ CONTEXT_SALT, i as u64));
                generator.prompt(generator.random_start(&mut rng), n as usize)
            });
            let context_tokens = context.as_deref().map_or(0, |c| count_tokens(tokenizer, c));
            let preamble = Preamble {
                system: preamble.system,
                context,
                tokens: preamble.tokens.saturating_add(context_tokens),
            };
            entry(shape, i, &preamble, session_id(i), batch, turns, None)
        };
        let n = cfg.num_dataset_entries;
        let threads = std::thread::available_parallelism()
            .map(|t| t.get())
            .unwrap_or(1)
            .min(n.max(1));
        let chunk = n.div_ceil(threads);
        std::thread::scope(|scope| {
            let parts: Vec<_> = (0..threads)
                .map(|t| {
                    let make = &make;
                    scope.spawn(move || {
                        (t * chunk..((t + 1) * chunk).min(n))
                            .map(make)
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    }

    /// Whether every entry carries a timestamp (a trace that can be replayed on schedule).
    pub fn has_timestamps(&self) -> bool {
        !self.entries.is_empty() && self.entries.iter().all(|e| e.timestamp_ms.is_some())
    }

    /// The entry a credit uses, by `--dataset-sampling-strategy`.
    pub fn pick(&self, credit: u64) -> usize {
        // A dataset is never empty (the loaders refuse an empty file); `max` keeps `%` safe.
        let n = (self.entries.len() as u64).max(1);
        match self.sampling {
            SamplingStrategy::Sequential => (credit % n) as usize,
            SamplingStrategy::Random => (mix(self.seed, credit) % n) as usize,
            SamplingStrategy::Shuffle => {
                let pass = credit / n;
                let perm = self.permutation(pass, n);
                perm.get((credit % n) as usize).map_or(0, |&i| i as usize)
            }
        }
    }

    /// Shuffle mode: the permutation of pass `pass`. The last few are kept (credits in
    /// flight span a few passes at most, unless the dataset is tiny and then they are cheap
    /// to make), so memory stays bounded however many requests a run sends.
    fn permutation(&self, pass: u64, n: u64) -> Permutation {
        const KEPT: usize = 8;
        let mut perms = self.permutations.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, p)) = perms.iter().find(|(at, _)| *at == pass) {
            return p.clone();
        }
        // Entries are at most MAX_DATASET_ENTRIES (or one per input-file line), so they fit.
        let mut p: Vec<u32> = (0..u32::try_from(n).unwrap_or(u32::MAX)).collect();
        p.shuffle(&mut StdRng::seed_from_u64(mix(self.seed, pass)));
        let p: Permutation = p.into();
        if perms.len() == KEPT {
            perms.pop_front();
        }
        perms.push_back((pass, p.clone()));
        p
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

    #[test]
    fn sampled_lengths_stay_within_max_tokens() {
        let mut rng = StdRng::seed_from_u64(1);
        for (mean, std) in [
            (1e6, 1e6),
            (1.0, 1e308),
            (f64::NAN, 1.0),
            (5.0, f64::NAN),
            (5.0, f64::INFINITY),
            (1e300, 0.0),
            (-5.0, 0.0),
        ] {
            for _ in 0..100 {
                let x = sample_len(&mut rng, mean, std);
                assert!((1..=MAX_TOKENS).contains(&x), "{mean} {std}: {x}");
            }
        }
    }

    /// The corpus has about a thousand distinct 1-token windows and a leading number does not
    /// fit in one token: asking for more 2-token prefixes than that looped forever.
    #[test]
    fn more_short_prefixes_than_the_corpus_holds_end() {
        let args: Vec<String> = [
            "--url",
            "mock",
            "--prefix-prompt-length",
            "2",
            "--num-prefix-prompts",
            "3000",
            "--num-dataset-entries",
            "4",
            "--isl",
            "3",
            "--random-seed",
            "5",
        ]
        .map(String::from)
        .to_vec();
        let cfg = crate::config::load(&args).unwrap();
        let tok = Tokenizer::load("builtin").unwrap();
        let shape = RequestShape::new(&cfg.endpoint, false);
        let started = std::time::Instant::now();
        let d = Dataset::build(&cfg.input, shape, &tok).unwrap();
        assert_eq!(d.entries.len(), 4);
        assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());
        // Each block is still 2 tokens ending in a newline, distinct while the corpus lasts.
        let g = PromptGenerator::new(tok.clone());
        let mut used = UsedBlocks::default();
        let blocks: Vec<String> = (0..g.corpus.len() + 100)
            .map(|i| g.block(i * 7, 2, &mut used))
            .collect();
        assert!(blocks
            .iter()
            .all(|b| b.ends_with('\n') && tok.count(b) == 2));
        assert!(used.corpus_exhausted && used.numbers_exhausted);
        assert_eq!(
            blocks[..used.texts.len()]
                .iter()
                .collect::<HashSet<_>>()
                .len(),
            used.texts.len()
        );
    }

    #[test]
    fn prompts_longer_than_the_corpus_wrap_around() {
        let tok = Tokenizer::load("builtin").unwrap();
        let g = PromptGenerator::new(tok.clone());
        let n = 3 * g.corpus.len() + 17;
        assert_eq!(tok.count(&g.prompt(5, n)), n);
    }

    fn dataset(n: usize, sampling: SamplingStrategy) -> Dataset {
        let tok = Tokenizer::load("builtin").unwrap();
        let args: Vec<String> = ["--url", "mock", "--isl", "1", "--num-dataset-entries"]
            .map(String::from)
            .into_iter()
            .chain([n.to_string(), "--random-seed".into(), "3".into()])
            .collect();
        let cfg = crate::config::load(&args).unwrap();
        let shape = RequestShape::new(&cfg.endpoint, false);
        let mut d = Dataset::build(&cfg.input, shape, &tok).unwrap();
        d.sampling = sampling;
        d
    }

    #[test]
    fn shuffle_is_a_permutation_per_pass_with_bounded_memory() {
        let d = dataset(5, SamplingStrategy::Shuffle);
        for pass in [0u64, 1, 2, 1_000_000, 3] {
            let mut got: Vec<usize> = (0..5).map(|i| d.pick(pass * 5 + i)).collect();
            let again: Vec<usize> = (0..5).map(|i| d.pick(pass * 5 + i)).collect();
            assert_eq!(got, again, "the same credit, the same entry");
            got.sort();
            assert_eq!(got, vec![0, 1, 2, 3, 4]);
        }
        // Many passes later, still only a few permutations are kept.
        for credit in 0..100_000 {
            assert!(d.pick(credit) < 5);
        }
        assert!(d.permutations.lock().unwrap().len() <= 8);
        // Pass 0 made again after being dropped is the same permutation.
        let first: Vec<usize> = (0..5).map(|i| d.pick(i)).collect();
        let fresh = dataset(5, SamplingStrategy::Shuffle);
        assert_eq!(first, (0..5).map(|i| fresh.pick(i)).collect::<Vec<_>>());
    }

    /// A synthetic dataset from these flags (chat, builtin tokenizer).
    fn synthetic(flags: &[&str]) -> Dataset {
        let args: Vec<String> = ["--url", "mock", "--isl", "4", "--random-seed", "11"]
            .iter()
            .chain(flags)
            .map(|s| s.to_string())
            .collect();
        let cfg = crate::config::load(&args).unwrap();
        let shape = RequestShape::new(&cfg.endpoint, false);
        Dataset::build(&cfg.input, shape, &Tokenizer::load("builtin").unwrap()).unwrap()
    }

    /// A turn's text, ISL, OSL and delay.
    type TurnShape = (String, u32, Option<u32>, Duration);

    /// Each turn's [`TurnShape`], of every entry.
    fn shape_of(d: &Dataset) -> Vec<Vec<TurnShape>> {
        d.entries
            .iter()
            .map(|e| {
                e.turns
                    .iter()
                    .map(|t| (t.text.clone(), t.isl, t.osl, t.delay))
                    .collect()
            })
            .collect()
    }

    fn messages(payload: &Bytes) -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        v["messages"].as_array().unwrap().clone()
    }

    #[test]
    fn synthetic_conversations_are_reproducible_from_the_seed() {
        let flags = [
            "--num-dataset-entries",
            "20",
            "--conversation-turn-mean",
            "3",
            "--conversation-turn-stddev",
            "2",
            "--conversation-turn-delay-mean",
            "50",
            "--conversation-turn-delay-stddev",
            "20",
            "--isl-stddev",
            "2",
            "--osl",
            "5",
            "--osl-stddev",
            "2",
        ];
        let a = shape_of(&synthetic(&flags));
        assert_eq!(
            a,
            shape_of(&synthetic(&flags)),
            "same seed, same conversations"
        );
        let other = [&flags[..], &["--random-seed", "12"]].concat();
        assert_ne!(a, shape_of(&synthetic(&other)));
        assert!(a.iter().any(|c| c.len() != a[0].len()), "turn counts vary");
        for conversation in &a {
            assert!(!conversation.is_empty());
            assert_eq!(
                conversation[0].3,
                Duration::ZERO,
                "no delay before the first turn"
            );
            for (text, isl, osl, delay) in &conversation[1..] {
                assert_eq!(
                    *isl as usize,
                    Tokenizer::load("builtin").unwrap().count(text)
                );
                assert!(osl.is_some_and(|o| o >= 1));
                // Whole ms, at least 1 (AIPerf's positive normal integer).
                assert!(*delay >= Duration::from_millis(1), "{delay:?}");
                assert_eq!(delay.subsec_nanos() % 1_000_000, 0);
            }
        }
    }

    #[test]
    fn without_conversation_flags_the_dataset_is_single_turn_as_before() {
        let plain = synthetic(&["--num-dataset-entries", "5"]);
        assert!(plain
            .entries
            .iter()
            .all(|e| e.turns.len() == 1 && e.turns[0].text.is_empty()));
        // Asking for more turns keeps each first turn's prompt: the later turns' draws
        // come from a stream of their own.
        let multi = synthetic(&[
            "--num-dataset-entries",
            "5",
            "--conversation-turn-mean",
            "3",
        ]);
        for (p, m) in plain.entries.iter().zip(&multi.entries) {
            assert_eq!(p.payload, m.payload);
            assert_eq!(m.turns.len(), 3);
            let first = messages(&m.payload);
            assert_eq!(first[0]["content"], m.turns[0].text.as_str());
        }
    }

    #[test]
    fn turn_counts_and_delays_follow_their_distribution_and_clamps() {
        let d = synthetic(&[
            "--num-dataset-entries",
            "2000",
            "--isl",
            "1",
            "--conversation-turn-mean",
            "4",
            "--conversation-turn-stddev",
            "2",
            "--conversation-turn-delay-mean",
            "100",
            "--conversation-turn-delay-stddev",
            "30",
        ]);
        let turns: Vec<f64> = d.entries.iter().map(|e| e.turns.len() as f64).collect();
        let mean = turns.iter().sum::<f64>() / turns.len() as f64;
        // A normal draw kept ≥ 0 and rounded up: a little over the mean.
        assert!((4.0..5.2).contains(&mean), "mean turns {mean}");
        assert!(turns.iter().all(|&t| t >= 1.0));
        let delays: Vec<f64> = d
            .entries
            .iter()
            .flat_map(|e| e.turns[1..].iter().map(|t| t.delay.as_secs_f64() * 1e3))
            .collect();
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        assert!((90.0..115.0).contains(&mean), "mean delay {mean} ms");
        // Clamped: at least one turn, delays never below 1 ms.
        let wide = synthetic(&[
            "--num-dataset-entries",
            "300",
            "--isl",
            "1",
            "--conversation-turn-mean",
            "1",
            "--conversation-turn-stddev",
            "5",
            "--conversation-turn-delay-mean",
            "1",
            "--conversation-turn-delay-stddev",
            "1000",
        ]);
        assert!(wide.entries.iter().all(|e| !e.turns.is_empty()));
        assert!(wide.entries.iter().any(|e| e.turns.len() > 3));
        assert!(wide
            .entries
            .iter()
            .flat_map(|e| &e.turns[1..])
            .all(|t| t.delay >= Duration::from_millis(1)));
    }

    #[test]
    fn the_delay_ratio_scales_every_delay() {
        let delays = |ratio: &str| {
            let d = synthetic(&[
                "--num-dataset-entries",
                "3",
                "--conversation-turn-mean",
                "3",
                "--conversation-turn-delay-mean",
                "40",
                "--conversation-turn-delay-ratio",
                ratio,
            ]);
            d.entries
                .iter()
                .flat_map(|e| e.turns.iter().map(|t| t.delay))
                .collect::<Vec<_>>()
        };
        let ms = Duration::from_millis;
        assert_eq!(delays("1"), [ms(0), ms(40), ms(40)].repeat(3));
        assert_eq!(delays("2.5"), [ms(0), ms(100), ms(100)].repeat(3));
        assert!(delays("0").iter().all(|d| d.is_zero()));
    }

    #[test]
    fn system_and_context_prompts_open_every_conversation() {
        let tok = Tokenizer::load("builtin").unwrap();
        let d = synthetic(&[
            "--num-dataset-entries",
            "4",
            "--conversation-turn-mean",
            "2",
            "--shared-system-prompt-length",
            "12",
            "--user-context-prompt-length",
            "6",
        ]);
        let system = d.system_prompt.clone().unwrap();
        assert_eq!(tok.count(&system), 12);
        let mut contexts = HashSet::new();
        for e in &d.entries {
            let m = messages(&e.payload);
            assert_eq!(m[0]["role"], "system");
            assert_eq!(m[0]["content"], system.as_str());
            assert_eq!(m[1]["role"], "user");
            let context = e.context.clone().unwrap();
            assert_eq!(m[1]["content"], context.as_str());
            assert_eq!(tok.count(&context), 6);
            contexts.insert(context);
            assert_eq!(m[2]["content"], e.turns[0].text.as_str());
            // Every turn's ISL counts what each of its requests carries besides history.
            assert_eq!(e.turns[0].isl as usize, 18 + 4);
            assert_eq!(e.turns[1].isl as usize, 18 + tok.count(&e.turns[1].text));
            let preamble = d.preamble(e);
            assert_eq!(
                preamble,
                [("system", system.clone()), ("user", context_of(e))]
            );
        }
        assert_eq!(contexts.len(), 4, "each conversation has its own context");
        // A verbatim system prompt, with an input file too.
        let d = synthetic(&["--num-dataset-entries", "2", "--system-prompt", "Be brief."]);
        for e in &d.entries {
            let m = messages(&e.payload);
            assert_eq!(
                m[0],
                serde_json::json!({"role": "system", "content": "Be brief."})
            );
            assert_eq!(e.turns[0].isl as usize, 4 + tok.count("Be brief."));
        }
    }

    fn context_of(e: &Entry) -> String {
        e.context.clone().unwrap()
    }
}
