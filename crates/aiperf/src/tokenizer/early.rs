//! The built-in `o200k_base` before its encoding is loaded.
//!
//! Loading the full encoding takes about 40 ms (a 200,000-token vocabulary and its automata
//! are rebuilt in memory), and synthetic prompts cannot be cut until their tokens can be
//! counted. So the encoding loads on its own thread, and meanwhile a text whose every
//! pretokenized piece is in a small table is encoded, counted and decoded from the table:
//! the synthetic corpus's pieces, the pieces a window cut from it anywhere can start or end
//! with, and every 1–3 digit number (the tags of numbered blocks).
//!
//! Exact by construction: tiktoken-style encodings split a text into pieces by a regular
//! expression and encode each piece on its own, so a text's tokens are its pieces' tokens in
//! order. The pieces here come from the same pretokenizer (`bpe-openai`'s own splitter, with
//! o200k's pattern), and each piece's tokens were produced by the real encoding when the
//! table was generated ([`o200k_corpus`](super::o200k_corpus), checked against the encoding
//! by a test that regenerates it). A text with an unknown piece waits for the real encoding;
//! once it is loaded, the table is not used at all.

use std::collections::HashMap;
use std::sync::{LazyLock, Once, OnceLock};

use bpe_openai::byte_pair_encoding::BytePairEncoding;

use super::o200k_corpus;

/// o200k_base's pretokenization, as `bpe-openai` 0.3 defines it: the main pattern, then a
/// whitespace run that stops before a last whitespace character (the look-ahead pattern),
/// then any whitespace run.
fn o200k_patterns() -> [(String, bool); 3] {
    let letters_then_lower = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?";
    let upper_then_letters = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?";
    let main = [
        letters_then_lower,
        upper_then_letters,
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"\s*[\r\n]+",
        r"\s+$",
    ]
    .join("|");
    [
        (main, false),
        (r"\s+\s".to_string(), true),
        (r"\s+".to_string(), false),
    ]
}

/// A pretokenizer only: `bpe-openai`'s tokenizer over a 256-byte vocabulary (built in well
/// under a millisecond), used for its `split` alone.
pub(super) fn o200k_splitter() -> bpe_openai::Tokenizer {
    let bytes: Vec<Vec<u8>> = (0u8..=255).map(|b| vec![b]).collect();
    let bpe = BytePairEncoding::from_dictionary(bytes, None);
    let patterns = o200k_patterns();
    let refs: Vec<(&str, bool)> = patterns.iter().map(|(p, l)| (p.as_str(), *l)).collect();
    bpe_openai::Tokenizer::new_lookahead(bpe, &refs, false)
        .expect("o200k's pretokenization pattern compiles")
}

/// How many tokens `text` is in the loaded o200k encoding `enc` (the same as
/// `enc.count(text)`): its pieces cut by this thread's own splitter (the same pattern as
/// `enc`'s), each counted by `enc` once per thread and then remembered.
///
/// Why: a regex's match cache is owned by the first thread to use it, and every other thread
/// takes one from a shared pool under a lock (output tokens are counted on several threads:
/// the pool was 1.4 % of a c=64 run's CPU); and counting a piece allocates and zeroes an
/// encoder's buffers (2.8 %), where generated text repeats its pieces all the time.
pub(super) fn count_o200k(enc: &bpe_openai::Tokenizer, text: &str) -> usize {
    type Counts = HashMap<Box<str>, u32, foldhash::fast::RandomState>;
    /// Pieces remembered per thread, and the longest remembered: common words and
    /// punctuation, not every odd run of digits or whitespace.
    const MAX_PIECES: usize = 1 << 16;
    const MAX_PIECE_LEN: usize = 32;
    thread_local! {
        static SPLITTER: bpe_openai::Tokenizer = o200k_splitter();
        static COUNTS: std::cell::RefCell<Counts> = Default::default();
    }
    COUNTS.with_borrow_mut(|known| {
        let count = |piece: &str| {
            if let Some(&n) = known.get(piece) {
                return n as usize;
            }
            let n = enc.bpe.count(piece.as_bytes());
            if piece.len() <= MAX_PIECE_LEN && known.len() < MAX_PIECES {
                known.insert(piece.into(), n as u32);
            }
            n
        };
        // ASCII text (nearly all generated text) is cut by hand, the rest by the regex.
        match super::ascii_split::pieces(text) {
            Some(pieces) => pieces.map(count).sum(),
            None => SPLITTER.with(|s| s.split(text).map(count).sum()),
        }
    })
}

/// The table: each known piece's tokens, each of their tokens' bytes.
pub(super) struct Table {
    splitter: bpe_openai::Tokenizer,
    pieces: HashMap<&'static str, &'static [u32]>,
    bytes: HashMap<u32, &'static [u8]>,
}

static TABLE: LazyLock<Table> = LazyLock::new(|| Table {
    splitter: o200k_splitter(),
    pieces: o200k_corpus::PIECES.iter().copied().collect(),
    bytes: o200k_corpus::TOKENS.iter().copied().collect(),
});

impl Table {
    pub(super) fn get() -> &'static Table {
        &TABLE
    }

    /// The tokens of `text`, if the table knows each of its pieces.
    pub(super) fn encode(&self, text: &str) -> Option<Vec<u32>> {
        let mut out = Vec::new();
        for piece in self.splitter.split(text) {
            out.extend_from_slice(self.pieces.get(piece)?);
        }
        Some(out)
    }

    /// How many tokens `text` is, if the table knows each of its pieces.
    pub(super) fn count(&self, text: &str) -> Option<usize> {
        self.splitter
            .split(text)
            .map(|piece| self.pieces.get(piece).map(|t| t.len()))
            .sum()
    }

    /// The bytes of `tokens`, if the table knows each of them.
    pub(super) fn decode(&self, tokens: &[u32]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for t in tokens {
            out.extend_from_slice(self.bytes.get(t)?);
        }
        Some(out)
    }
}

/// The o200k encoding once its loading thread finished; `None` while it loads.
static O200K_LOADED: OnceLock<&'static bpe_openai::Tokenizer> = OnceLock::new();
static O200K_LOADING: Once = Once::new();

/// Starts loading o200k_base on its own thread (once per process), and compiles the
/// table's splitter meanwhile on the caller's.
pub(super) fn start_loading_o200k() {
    O200K_LOADING.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("o200k-load".into())
            .spawn(|| {
                let _ = O200K_LOADED.set(bpe_openai::o200k_base());
            });
        if spawned.is_err() {
            // No thread to spare: load here, as before the table existed.
            let _ = O200K_LOADED.set(bpe_openai::o200k_base());
        }
    });
    LazyLock::force(&TABLE);
}

/// The loaded encoding, if its thread has finished.
pub(super) fn o200k_if_loaded() -> Option<&'static bpe_openai::Tokenizer> {
    O200K_LOADED.get().copied()
}

/// What [`o200k_corpus`](super::o200k_corpus) holds, computed from the real encoding: the
/// Rust source of that file.
#[cfg(test)]
pub(super) fn generate_source(corpus: &str) -> String {
    use std::collections::{BTreeMap, BTreeSet};
    use std::fmt::Write;

    let real = bpe_openai::o200k_base();
    let splitter = o200k_splitter();
    let tokens = real.encode(corpus);
    let n = tokens.len();
    let mut pieces: BTreeSet<String> = BTreeSet::new();
    let mut add = |text: &str| {
        for p in splitter.split(text) {
            pieces.insert(p.to_string());
        }
    };
    add(corpus);
    add(&format!("{corpus}{corpus}"));
    let window = |i: usize, k: usize| -> String {
        let ids: Vec<u32> = (0..k).map(|j| tokens[(i + j) % n]).collect();
        String::from_utf8_lossy(&real.bpe.decode_tokens(&ids)).into_owned()
    };
    // Windows starting and ending at every token, as prompts cut them (trimmed, or kept
    // whole after a prefix), short ones too (where both ends are near).
    for i in 0..n {
        for k in (1..=8).chain([16, 32]) {
            let w = window(i, k);
            for text in [w.as_str(), w.trim(), w.trim_end(), w.trim_start()] {
                add(text);
                add(&format!("{text}\n"));
            }
        }
    }
    // Numbered blocks (`12 ` + a window), numbers of any length (split in 1-3 digits), and
    // the fallback's `a a a`.
    for i in (0..n).step_by(7) {
        add(&format!("7 {}", window(i, 8).trim_end()));
    }
    add("a a a");
    for d in 1..=3u32 {
        for v in 0..10u32.pow(d) {
            pieces.insert(format!("{v:0width$}", width = d as usize));
        }
    }

    let mut ids: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut src = String::from(
        "//! Generated by `AIPERF_UPDATE_TABLES=1 cargo test -p aiperf --lib o200k_corpus`\n\
         //! from the real o200k_base encoding: the pieces of the synthetic corpus (and of\n\
         //! windows cut from it) with their tokens, and each of those tokens' bytes. See\n\
         //! `early.rs`. Do not edit.\n\n\
         pub(super) static PIECES: &[(&str, &[u32])] = &[\n",
    );
    for p in &pieces {
        let t = real.encode(p.as_str());
        for id in &t {
            ids.entry(*id)
                .or_insert_with(|| real.bpe.decode_tokens(&[*id]));
        }
        let list: Vec<String> = t.iter().map(u32::to_string).collect();
        let _ = writeln!(src, "    ({p:?}, &[{}]),", list.join(", "));
    }
    src.push_str("];\n\npub(super) static TOKENS: &[(u32, &[u8])] = &[\n");
    for (id, b) in &ids {
        let escaped: String = b
            .iter()
            .flat_map(|c| std::ascii::escape_default(*c))
            .map(char::from)
            .collect();
        let _ = writeln!(src, "    ({id}, b\"{escaped}\"),");
    }
    src.push_str("];\n");
    src
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{PromptGenerator, UsedBlocks, CORPUS};
    use crate::tokenizer::{Builtin, Early, Inner, Split, Tokenizer};

    const TABLE_FILE: &str = "src/tokenizer/o200k_corpus.rs";

    /// The checked-in table is what the real encoding gives today; `AIPERF_UPDATE_TABLES=1`
    /// rewrites it.
    #[test]
    fn o200k_corpus_is_current() {
        let want = generate_source(CORPUS);
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(TABLE_FILE);
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have != want {
            if std::env::var_os("AIPERF_UPDATE_TABLES").is_some() {
                std::fs::write(&path, &want).unwrap();
            } else {
                panic!(
                    "{TABLE_FILE} is stale: regenerate it with \
                     `AIPERF_UPDATE_TABLES=1 cargo test -p aiperf --lib o200k_corpus`"
                );
            }
        }
    }

    /// Texts of every kind the splitter must cut exactly as the encoding's own does.
    fn texts() -> Vec<String> {
        let mut texts: Vec<String> = crate::tokenizer::tests::SENTENCES
            .iter()
            .map(|s| s.to_string())
            .collect();
        texts.extend(
            [
                "",
                " ",
                "   \n\n  \t x",
                "trailing spaces   ",
                "CamelCase HTTPServer iPhone l'été don't I'LL 'tis",
                "1234567 3.14159 1,000,000 0x1F //path/to a/b\r\nc",
                "émigré naïve 日本語のテキスト 한국어 😀🎉 e\u{301}",
                "tabs\tand\u{a0}nbsp\u{2028}line sep",
                "!!! ??? ... --- ***\n\n\n",
            ]
            .map(String::from),
        );
        let real = bpe_openai::o200k_base();
        let tokens = real.encode(CORPUS);
        for i in (0..tokens.len()).step_by(3) {
            for k in [1, 2, 5, 13, 40] {
                let end = (i + k).min(tokens.len());
                texts.push(
                    String::from_utf8_lossy(&real.bpe.decode_tokens(&tokens[i..end])).into_owned(),
                );
            }
        }
        texts
    }

    #[test]
    fn the_splitter_cuts_as_the_encoding_does() {
        let real = bpe_openai::o200k_base();
        let ours = o200k_splitter();
        for text in texts() {
            let a: Vec<&str> = ours.split(&text).collect();
            let b: Vec<&str> = real.split(&text).collect();
            assert_eq!(a, b, "{text:?}");
            // Twice: counted, then remembered.
            for _ in 0..2 {
                let n = count_o200k(real, &text);
                assert_eq!(n, real.count(text.as_str()), "{text:?}");
            }
        }
        // On other threads too (each has its own splitter).
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for text in texts().iter().step_by(7) {
                        assert_eq!(count_o200k(real, text), real.count(text.as_str()));
                    }
                });
            }
        });
    }

    /// Where the table answers, it answers as the encoding does; and it answers for every
    /// text cut from the corpus.
    #[test]
    fn the_table_answers_as_the_encoding_does() {
        let real = bpe_openai::o200k_base();
        let table = Table::get();
        let mut answered = 0;
        for text in texts() {
            if let Some(t) = table.encode(&text) {
                assert_eq!(t, real.encode(text.as_str()), "{text:?}");
                assert_eq!(table.count(&text), Some(t.len()), "{text:?}");
                assert_eq!(t.len(), real.count(text.as_str()), "{text:?}");
                assert_eq!(table.decode(&t).unwrap(), real.bpe.decode_tokens(&t));
                answered += 1;
            } else {
                assert_eq!(table.count(&text), None, "{text:?}");
            }
        }
        assert!(answered > 1000, "{answered}");
        assert!(table.encode(CORPUS).is_some());
        // An unknown piece: no answer, rather than a wrong one.
        assert_eq!(table.count("Zyzzyvas quixotically"), None);
        assert_eq!(table.decode(&[u32::MAX]), None);
    }

    /// Synthetic prompts, numbered blocks and prefixed prompts come out of the table alone
    /// (the encoding is never asked), the same as with the encoding.
    #[test]
    fn prompts_are_cut_from_the_table_alone_and_match_the_encoding() {
        let only = Tokenizer::tiktoken(
            "o200k_base",
            Builtin {
                load: || panic!("the early table missed a piece"),
                early: Early::Only,
                split: Split::O200k,
            },
        );
        let real = Tokenizer {
            name: "o200k_base".into(),
            inner: Inner::Tiktoken(Builtin {
                load: bpe_openai::o200k_base,
                early: Early::Never,
                split: Split::Encoding,
            }),
        };
        let (a, b) = (PromptGenerator::new(only), PromptGenerator::new(real));
        for start in (0..1200).step_by(17) {
            for n in [1, 2, 3, 7, 64, 128, 550, 3000] {
                assert_eq!(
                    a.prompt(start, n),
                    b.prompt(start, n),
                    "start {start}, n {n}"
                );
            }
            // A prefix made of corpus text, as shared system prompts are.
            let prefix = format!("{}\n", b.prompt(start + 400, 12));
            assert_eq!(
                a.with_prefix(&prefix, start, 50),
                b.with_prefix(&prefix, start, 50)
            );
        }
        let (mut ua, mut ub) = (UsedBlocks::default(), UsedBlocks::default());
        for i in 0..300 {
            let (start, n) = (i * 13, [2, 5, 32][i % 3]);
            assert_eq!(a.block(start, n, &mut ua), b.block(start, n, &mut ub));
        }
    }
}
