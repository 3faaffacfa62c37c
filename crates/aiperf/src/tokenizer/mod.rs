//! Token counting and prompt text.
//!
//! Three kinds of `--tokenizer`:
//! - `builtin` (o200k_base) and `builtin:cl100k_base`: OpenAI's tiktoken encodings, embedded
//!   in the binary as precompiled tables (the `bpe-openai` crate, which gives tiktoken's
//!   tokens exactly, loads in a third of tiktoken-rs's time and counts about four times
//!   faster), so no file or network is needed;
//! - a path to a Hugging Face `tokenizer.json`, or to a directory holding one;
//! - a Hugging Face hub id `ORG/NAME` (not an existing local path): its `tokenizer.json` is
//!   taken from the standard Hugging Face cache, or downloaded into it (see [`hub`]).
//!
//! Loading parses a large vocabulary, so it is done once and the result is shared (cloning
//! is cheap); callers that need it early (dataset generation) wait for it, the hot path never
//! touches it. The default `builtin` loads on its own thread, and until it is loaded the
//! synthetic corpus's text is counted from a table generated from it ([`early`]), so a run's
//! first requests need not wait the 40 ms the load takes.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

mod ascii_split;
mod early;
pub mod hub;
#[rustfmt::skip]
mod o200k_corpus;

/// The built-in tokenizer: the default, and the fallback when a model's own cannot be had.
pub const BUILTIN: &str = "builtin";

/// What `--tokenizer`, `--tokenizer-revision` and `--tokenizer-trust-remote-code` ask for.
/// Serialized flat into the export's `input_config.input`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenizerSpec {
    /// A `--tokenizer` value (see [`Tokenizer::load`]); without `--tokenizer`, the first
    /// model's hub id `ORG/NAME`, else `builtin`. After loading, the one actually used.
    #[serde(rename = "tokenizer")]
    pub name: String,
    /// The hub revision (branch, tag or commit) of a hub id.
    #[serde(rename = "tokenizer_revision")]
    pub revision: String,
    /// Accepted for AIPerf's sake: no code is ever run (see [`TRUST_REMOTE_CODE_NOTE`]).
    #[serde(rename = "tokenizer_trust_remote_code")]
    pub trust_remote_code: bool,
    /// `name` was taken from `--model`: when it cannot be had, `builtin` is used instead,
    /// with a warning (an explicit `--tokenizer` that fails is an error).
    #[serde(skip)]
    pub from_model: bool,
}

impl Default for TokenizerSpec {
    fn default() -> Self {
        Self {
            name: BUILTIN.to_string(),
            revision: hub::DEFAULT_REVISION.to_string(),
            trust_remote_code: false,
            from_model: false,
        }
    }
}

/// Printed once when `--tokenizer-trust-remote-code` is given.
pub const TRUST_REMOTE_CODE_NOTE: &str = "note: --tokenizer-trust-remote-code changes nothing \
    here: this tool runs no Python code, it reads the repository's tokenizer.json (data, never \
    code) with the Rust `tokenizers` library; a model whose tokenizer exists only as custom \
    Python code has no tokenizer.json and fails with an error saying so";

/// A tokenizer loaded for a run, and the warning to print when it is not the one asked for.
#[derive(Debug)]
pub struct Loaded {
    pub tokenizer: Tokenizer,
    pub warning: Option<String>,
}

/// What `--tokenizer` accepts, for error messages.
const ACCEPTED: &str =
    "use `builtin` (o200k_base), `builtin:cl100k_base`, a path to a tokenizer.json \
                        or its directory, or a Hugging Face hub id ORG/NAME";

/// Why a tokenizer could not be loaded. Every message is one line.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("unknown tokenizer `{0}`: {ACCEPTED}")]
    Unknown(String),
    #[error("tokenizer `{0}` not found: no such file or directory ({ACCEPTED})")]
    NotFound(String),
    #[error("cannot load tokenizer `{name}`: {message}")]
    Load { name: String, message: String },
    #[error(
        "cannot download tokenizer `{repo}` from the Hugging Face hub ({reason}): pass a local \
         path to a tokenizer.json or its directory with --tokenizer PATH"
    )]
    Hub { repo: String, reason: String },
}

impl TokenizerError {
    /// Why, without the advice to pass a path (for the fallback's warning).
    pub fn reason(&self) -> String {
        match self {
            TokenizerError::Hub { reason, .. } => reason.clone(),
            TokenizerError::Load { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

/// Collapses any text (an error from a dependency, say) to one line.
pub(crate) fn one_line(text: impl std::fmt::Display) -> String {
    text.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A loaded tokenizer, cheap to clone and shareable across threads.
#[derive(Clone)]
pub struct Tokenizer {
    name: String,
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    /// An embedded tiktoken encoding (built once per process, then shared).
    Tiktoken(Builtin),
    /// A Hugging Face `tokenizer.json`, with truncation and padding turned off.
    HuggingFace(Arc<tokenizers::Tokenizer>),
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("name", &self.name)
            .field("kind", &self.kind())
            .finish()
    }
}

impl Tokenizer {
    /// Loads a tokenizer from a `--tokenizer` value: `builtin`, `builtin:o200k_base`,
    /// `builtin:cl100k_base`, a path to a `tokenizer.json` or its directory, or a Hugging Face
    /// hub id `ORG/NAME` (cached, else downloaded; see [`hub`]).
    ///
    /// Blocking: it may read files and, for a hub id, use the network.
    pub fn load(spec: &str) -> Result<Self, TokenizerError> {
        match spec {
            "builtin" | "builtin:o200k_base" | "o200k_base" => {
                early::start_loading_o200k();
                return Ok(Self::tiktoken(
                    "o200k_base",
                    Builtin {
                        load: bpe_openai::o200k_base,
                        early: Early::WhileLoading,
                        split: Split::O200k,
                    },
                ));
            }
            "builtin:cl100k_base" | "cl100k_base" => {
                return Ok(Self::tiktoken(
                    "cl100k_base",
                    Builtin {
                        load: bpe_openai::cl100k_base,
                        early: Early::Never,
                        split: Split::Encoding,
                    },
                ));
            }
            _ => {}
        }
        if spec.starts_with("builtin:") || spec.trim().is_empty() {
            return Err(TokenizerError::Unknown(spec.to_string()));
        }
        let path = Path::new(spec);
        if path.exists() {
            return Self::from_path(spec, path);
        }
        if hub::is_repo_id(spec) {
            return hub::load(&hub::HubConfig::from_env(), spec);
        }
        if looks_like_path(spec) {
            return Err(TokenizerError::NotFound(spec.to_string()));
        }
        Err(TokenizerError::Unknown(spec.to_string()))
    }

    /// Loads what `spec` asks for. A tokenizer defaulted from `--model` that cannot be had
    /// (offline, not on the hub, no `tokenizer.json`, unreadable) falls back to `builtin`
    /// with a one-line warning; an explicit `--tokenizer` that fails is an error.
    ///
    /// Blocking: it may read files and use the network.
    pub fn load_spec(spec: &TokenizerSpec) -> Result<Loaded, TokenizerError> {
        let loaded = if hub::is_repo_id(&spec.name) && !Path::new(&spec.name).exists() {
            let cfg = hub::HubConfig::from_env().with_revision(&spec.revision);
            hub::load(&cfg, &spec.name)
        } else {
            Self::load(&spec.name)
        };
        match loaded {
            Ok(tokenizer) => Ok(Loaded {
                tokenizer,
                warning: None,
            }),
            Err(e) if spec.from_model => Ok(Loaded {
                tokenizer: Self::load(BUILTIN)?,
                warning: Some(format!(
                    "no tokenizer for model `{}` ({}): counting tokens with the built-in \
                     o200k_base instead, so ISL and OSL are approximate; pass --tokenizer \
                     to choose one",
                    spec.name,
                    e.reason()
                )),
            }),
            Err(e) => Err(e),
        }
    }

    fn tiktoken(name: &str, builtin: Builtin) -> Self {
        Self {
            name: name.to_string(),
            inner: Inner::Tiktoken(builtin),
        }
    }

    /// Loads a Hugging Face `tokenizer.json`, given as the file or a directory holding it.
    /// `name` is what [`Tokenizer::name`] reports and errors quote.
    pub fn from_path(name: &str, path: &Path) -> Result<Self, TokenizerError> {
        let file = if path.is_dir() {
            let file = path.join("tokenizer.json");
            if !file.exists() {
                return Err(TokenizerError::Load {
                    name: name.to_string(),
                    message: format!("directory {} has no tokenizer.json", path.display()),
                });
            }
            file
        } else {
            path.to_path_buf()
        };
        let bytes = std::fs::read(&file).map_err(|e| TokenizerError::Load {
            name: name.to_string(),
            message: format!("cannot read {}: {}", file.display(), one_line(e)),
        })?;
        Self::from_json(name, &bytes)
    }

    /// Parses the contents of a Hugging Face `tokenizer.json`.
    pub fn from_json(name: &str, json: &[u8]) -> Result<Self, TokenizerError> {
        let load_err = |message: String| TokenizerError::Load {
            name: name.to_string(),
            message,
        };
        let mut t = tokenizers::Tokenizer::from_bytes(json)
            .map_err(|e| load_err(format!("not a valid tokenizer.json: {}", one_line(e))))?;
        // Counting must see the whole text, one sequence, unpadded.
        t.with_truncation(None).map_err(|e| load_err(one_line(e)))?;
        t.with_padding(None);
        Ok(Self {
            name: name.to_string(),
            inner: Inner::HuggingFace(Arc::new(t)),
        })
    }

    /// `o200k_base` or `cl100k_base` for the builtin encodings; else the path or hub id given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `tiktoken` or `huggingface`.
    pub fn kind(&self) -> &'static str {
        match self.inner {
            Inner::Tiktoken(_) => "tiktoken",
            Inner::HuggingFace(_) => "huggingface",
        }
    }

    /// The token ids of `text`, without special tokens (no BOS/EOS or chat template).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        match &self.inner {
            Inner::Tiktoken(b) => match b.early() {
                Some(table) => table
                    .encode(text)
                    .unwrap_or_else(|| (b.load)().encode(text)),
                None => (b.load)().encode(text),
            },
            Inner::HuggingFace(t) => t
                .encode_fast(text, false)
                .map(|e| e.get_ids().to_vec())
                .unwrap_or_default(),
        }
    }

    /// How many tokens `text` is, without special tokens.
    pub fn count(&self, text: &str) -> usize {
        if text.is_empty() {
            return 0;
        }
        match &self.inner {
            Inner::Tiktoken(b) => match b.early() {
                Some(table) => table.count(text).unwrap_or_else(|| b.count(text)),
                None => b.count(text),
            },
            Inner::HuggingFace(t) => t.encode_fast(text, false).map(|e| e.len()).unwrap_or(0),
        }
    }

    /// Decodes tokens to text, keeping special tokens; invalid UTF-8 at a cut is replaced,
    /// never an error.
    pub fn decode(&self, tokens: &[u32]) -> String {
        match &self.inner {
            Inner::Tiktoken(b) => {
                let bytes = match b.early() {
                    Some(table) => table
                        .decode(tokens)
                        .unwrap_or_else(|| (b.load)().bpe.decode_tokens(tokens)),
                    None => (b.load)().bpe.decode_tokens(tokens),
                };
                match String::from_utf8(bytes) {
                    Ok(s) => s,
                    Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
                }
            }
            Inner::HuggingFace(t) => t.decode(tokens, false).unwrap_or_default(),
        }
    }
}

/// An embedded tiktoken encoding: `load` gives it (loading it on first use, once per
/// process; a caller that comes while another thread loads it waits). o200k_base, whose
/// loading starts on its own thread, answers from [`early::Table`] until it is loaded.
#[derive(Clone, Copy)]
struct Builtin {
    load: fn() -> &'static bpe_openai::Tokenizer,
    early: Early,
    split: Split,
}

/// How [`Builtin::count`] cuts text into the pieces it counts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Split {
    /// The encoding's own pre-tokenizer regex.
    Encoding,
    /// o200k_base's pieces, cut on the calling thread ([`early::count_o200k`]: the ASCII
    /// split, a per-thread memo of piece counts).
    O200k,
}

/// When [`early::Table`] answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Early {
    Never,
    WhileLoading,
    /// Always, the encoding never (tests: whatever the table misses panics).
    #[cfg(test)]
    Only,
}

impl Builtin {
    /// `text`'s token count from the encoding (loaded first if need be).
    fn count(&self, text: &str) -> usize {
        let enc = (self.load)();
        match self.split {
            Split::Encoding => enc.count(text),
            Split::O200k => early::count_o200k(enc, text),
        }
    }

    /// The early table, while the encoding is still loading.
    fn early(&self) -> Option<&'static early::Table> {
        match self.early {
            Early::Never => None,
            Early::WhileLoading => early::o200k_if_loaded().is_none().then(early::Table::get),
            #[cfg(test)]
            Early::Only => Some(early::Table::get()),
        }
    }
}

/// Whether a spec that names nothing on disk was meant as a path rather than a name.
fn looks_like_path(spec: &str) -> bool {
    spec.contains('/')
        || spec.contains(std::path::MAIN_SEPARATOR)
        || spec.starts_with('.')
        || spec.starts_with('~')
        || spec.ends_with(".json")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
    use tokenizers::normalizers::NormalizerWrapper;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::processors::template::TemplateProcessing;
    use tokenizers::{
        AddedToken, DecoderWrapper, PostProcessorWrapper, PreTokenizerWrapper, TokenizerImpl,
        TruncationParams,
    };

    pub(crate) const SENTENCES: [&str; 6] = [
        "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
        "The quick brown fox jumps over the lazy dog, and the dog does not mind at all.",
        "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer.",
        "In the old stone church on the hill the bell rang out the hour, and children ran home.",
        "Numbers like 12345 and 2024 appear too; so do symbols such as #, %, & and émigré café.",
        "A tokenizer splits text into tokens; a benchmark counts them to measure throughput.",
    ];

    /// A small byte-level BPE `tokenizer.json`, trained on [`SENTENCES`], that adds `<s>` as
    /// a special token and truncates to 8 tokens (both of which counting must ignore).
    pub(crate) fn fixture_json() -> String {
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(400)
            .min_frequency(1)
            .show_progress(false)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .special_tokens(vec![AddedToken::from("<s>", true)])
            .build();
        let mut t: TokenizerImpl<
            BPE,
            NormalizerWrapper,
            PreTokenizerWrapper,
            PostProcessorWrapper,
            DecoderWrapper,
        > = TokenizerImpl::new(BPE::default());
        t.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
        t.with_decoder(Some(ByteLevel::default()));
        t.train(&mut trainer, SENTENCES.iter()).unwrap();
        let bos = t.token_to_id("<s>").unwrap();
        let template = TemplateProcessing::builder()
            .try_single("<s> $A")
            .unwrap()
            .special_tokens(vec![("<s>", bos)])
            .build()
            .unwrap();
        t.with_post_processor(Some(template));
        t.with_truncation(Some(TruncationParams {
            max_length: 8,
            ..Default::default()
        }))
        .unwrap();
        t.to_string(false).unwrap()
    }

    #[test]
    fn counts_known_strings() {
        let t = Tokenizer::load("builtin").unwrap();
        assert_eq!(t.name(), "o200k_base");
        assert_eq!(t.kind(), "tiktoken");
        assert_eq!(t.count(""), 0);
        assert_eq!(t.count("hello world"), 2);
        let c = Tokenizer::load("builtin:cl100k_base").unwrap();
        assert_eq!(c.name(), "cl100k_base");
        assert_eq!(c.count("hello world"), 2);
        assert_eq!(
            Tokenizer::load("builtin:o200k_base").unwrap().name(),
            "o200k_base"
        );
    }

    #[test]
    fn decode_inverts_encode() {
        for spec in ["builtin", "builtin:cl100k_base"] {
            let t = Tokenizer::load(spec).unwrap();
            let text = "The quick brown fox jumps over the lazy dog.";
            assert_eq!(t.decode(&t.encode(text)), text);
        }
    }

    #[test]
    fn decode_of_a_cut_character_is_lossy_not_an_error() {
        let t = Tokenizer::load("builtin").unwrap();
        let tokens = t.encode("é🎉");
        let text = t.decode(&tokens[..tokens.len() - 1]);
        assert!(text.starts_with('é'), "{text:?}");
    }

    #[test]
    fn unknown_specs_are_one_line_errors() {
        for spec in ["gpt9", "builtin:p50k_base", "", "not-a-model"] {
            let e = Tokenizer::load(spec).unwrap_err();
            assert!(matches!(e, TokenizerError::Unknown(_)), "{spec}: {e:?}");
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "{msg}");
            assert!(msg.contains("builtin:cl100k_base"), "{msg}");
        }
        for spec in ["/no/such/dir/tokenizer.json", "./nope", "a/b/c", "tok.json"] {
            let e = Tokenizer::load(spec).unwrap_err();
            assert!(matches!(e, TokenizerError::NotFound(_)), "{spec}: {e:?}");
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn loads_a_tokenizer_json_by_file_and_by_directory() {
        let json = fixture_json();
        let reference = tokenizers::Tokenizer::from_bytes(json.as_bytes()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokenizer.json");
        std::fs::write(&file, &json).unwrap();

        let by_file = Tokenizer::load(file.to_str().unwrap()).unwrap();
        let by_dir = Tokenizer::load(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(by_file.kind(), "huggingface");
        assert_eq!(by_file.name(), file.to_str().unwrap());
        let mut long = String::new();
        for s in SENTENCES {
            long.push_str(s);
            long.push(' ');
        }
        for text in SENTENCES
            .iter()
            .copied()
            .chain([long.as_str(), "unseen wörds 987"])
        {
            // The reference without its special token and without its truncation.
            let mut r = reference.clone();
            r.with_truncation(None).unwrap();
            let want = r.encode(text, false).unwrap();
            assert_eq!(by_file.encode(text), want.get_ids(), "{text}");
            assert_eq!(by_file.count(text), want.len(), "{text}");
            assert_eq!(by_dir.count(text), want.len(), "{text}");
            assert_eq!(by_file.decode(&by_file.encode(text)), text);
        }
        assert!(by_file.count(&long) > 8, "truncation is off");
        // Special tokens are not added when counting, and survive decoding.
        let with_bos = reference.encode("fox", true).unwrap();
        assert_eq!(with_bos.len(), by_file.count("fox") + 1);
        assert!(by_file.decode(with_bos.get_ids()).starts_with("<s>"));
        assert_eq!(by_file.count(""), 0);
    }

    #[test]
    fn bad_files_are_one_line_load_errors() {
        let dir = tempfile::tempdir().unwrap();
        // A directory without tokenizer.json.
        let e = Tokenizer::load(dir.path().to_str().unwrap()).unwrap_err();
        assert!(e.to_string().contains("has no tokenizer.json"), "{e}");
        // Not JSON, and JSON that is no tokenizer.
        for (i, body) in ["this is not json\n{", "{\"model\": 3}\n"]
            .iter()
            .enumerate()
        {
            let file = dir.path().join(format!("bad{i}.json"));
            std::fs::write(&file, body).unwrap();
            let e = Tokenizer::load(file.to_str().unwrap()).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, TokenizerError::Load { .. }), "{msg}");
            assert!(msg.contains("not a valid tokenizer.json"), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
        // A directory named as a file path that cannot be read as one.
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::create_dir(sub.join("tokenizer.json")).unwrap();
        let e = Tokenizer::load(sub.to_str().unwrap()).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }

    #[test]
    fn shared_across_threads() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokenizer.json");
        std::fs::write(&file, fixture_json()).unwrap();
        for t in [
            Tokenizer::load("builtin").unwrap(),
            Tokenizer::load(file.to_str().unwrap()).unwrap(),
        ] {
            let want = t.count(SENTENCES[0]);
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let t = t.clone();
                    std::thread::spawn(move || t.count(SENTENCES[0]))
                })
                .collect();
            for h in handles {
                assert_eq!(h.join().unwrap(), want);
            }
        }
    }
}
