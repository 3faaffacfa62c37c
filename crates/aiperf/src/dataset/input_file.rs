//! `--input-file` loaders (`--custom-dataset-type`).
//!
//! - `single_turn` / `random_pool`: JSONL, each line `{"text": ...}` or `{"texts": [...]}`
//!   (joined with a space), optional `output_length`. `random_pool` is drawn at random.
//! - `multi_turn`: JSONL of sessions `{"session_id"?, "turns": [{"text" | "texts",
//!   "delay"? (ms), "output_length"?}]}`; each turn is sent with the conversation so far,
//!   including the server's actual replies.
//! - `mooncake_trace`: JSONL of `{"input_length", "output_length"?, "hash_ids"?,
//!   "timestamp"? (ms)}`. Each hash id stands for a block of `--isl-block-size` tokens, so
//!   equal ids give byte-identical prompt prefixes; timestamps drive the fixed schedule.
//! - `sharegpt`: a JSON array of `{"conversations": [{"from": "human"|"gpt", "value"}]}`;
//!   the first human message is the prompt, the reply's length its output length.
//!
//! Every number is checked against the bounds of `crate::units` as the file is loaded (a bad
//! one is `path:line: message`, before anything is sent): lengths from 1 to `MAX_TOKENS`,
//! delays and timestamps finite, ≥ 0 and bounded, lists bounded.

use std::collections::HashMap;
use std::path::Path;

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Deserialize;
use serde_json::Number;

use super::{entry, single, Entry, Preamble, PromptGenerator, Turn, UsedBlocks};
use super::{CustomDatasetType, InputSpec, SamplingStrategy};
use crate::endpoint::RequestShape;
use crate::mix::mix;
use crate::tokenizer::Tokenizer;
use crate::units::{
    self, MAX_DELAY_MS, MAX_LIST_ITEMS, MAX_TIMESTAMP_MS, MAX_TOKENS, MAX_TRACE_SPAN_MS,
};

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read --input-file {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}:{line}: {message}")]
    Line {
        path: String,
        line: usize,
        message: String,
    },
    #[error("--input-file {0} holds no usable requests")]
    Empty(String),
}

#[derive(Deserialize)]
struct TextTurn {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    texts: Option<Vec<String>>,
    #[serde(default)]
    output_length: Option<Number>,
    #[serde(default)]
    session_id: Option<String>,
    /// ms to wait after the previous turn (multi_turn).
    #[serde(default)]
    delay: Option<f64>,
}

impl TextTurn {
    fn text(&self) -> Result<String, String> {
        match (&self.text, &self.texts) {
            (Some(t), None) => Ok(t.clone()),
            (None, Some(ts)) if ts.len() > MAX_LIST_ITEMS => Err(format!(
                "`texts` has {} items; at most {MAX_LIST_ITEMS}",
                ts.len()
            )),
            (None, Some(ts)) if !ts.is_empty() => Ok(ts.join(" ")),
            _ => Err("expected `text` or a non-empty `texts`".into()),
        }
    }

    /// `output_length`, checked.
    fn output_length(&self) -> Result<Option<u32>, String> {
        self.output_length
            .as_ref()
            .map(|n| length("output_length", n))
            .transpose()
    }
}

/// A token count from an input file: a whole number from 1 to `MAX_TOKENS`. (Read as any
/// JSON number, so that a wrong one is named here rather than by serde.)
fn length(what: &str, n: &Number) -> Result<u32, String> {
    n.as_u64()
        .filter(|v| (1..=u64::from(MAX_TOKENS)).contains(v))
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| {
            format!("`{what}` must be a whole number from 1 to {MAX_TOKENS} tokens, got {n}")
        })
}

/// A time in ms from an input file: finite, 0 to `max`.
fn millis(what: &str, ms: f64, max: f64) -> Result<f64, String> {
    units::check_real(ms, 0.0, max, " ms")
        .map_err(|e| format!("`{what}` {e}, got {}", units::show(ms)))
}

/// A token count as the dataset stores it (a text longer than `u32::MAX` tokens saturates).
fn token_count(tokenizer: &Tokenizer, text: &str) -> u32 {
    u32::try_from(tokenizer.count(text)).unwrap_or(u32::MAX)
}

#[derive(Deserialize)]
struct Session {
    #[serde(default)]
    session_id: Option<String>,
    turns: Vec<TextTurn>,
}

#[derive(Deserialize)]
struct MooncakeLine {
    input_length: Number,
    #[serde(default)]
    output_length: Option<Number>,
    #[serde(default)]
    hash_ids: Option<Vec<Number>>,
    #[serde(default)]
    timestamp: Option<f64>,
}

#[derive(Deserialize)]
struct SharegptEntry {
    conversations: Vec<SharegptMessage>,
}

#[derive(Deserialize)]
struct SharegptMessage {
    from: String,
    value: String,
}

/// Prompt text for mooncake `hash_ids`: one block of text per id, the same for the same id.
struct BlockCache<'a> {
    generator: &'a PromptGenerator,
    block: usize,
    seed: u64,
    blocks: HashMap<u64, String>,
    /// Every block's text so far: different ids must get different text.
    used: UsedBlocks,
}

impl BlockCache<'_> {
    /// A full block: `block - 1` tokens of text and a newline, which no neighbour can merge
    /// with, so the prompt's token count is the sum of its blocks'.
    fn full(&mut self, id: u64) -> &str {
        let (g, block, seed) = (self.generator, self.block, self.seed);
        let used = &mut self.used;
        self.blocks.entry(id).or_insert_with(|| {
            let start = (mix(seed, id) % g.corpus.len().max(1) as u64) as usize;
            g.block(start, block, used)
        })
    }

    /// The prompt for a trace line: whole blocks for its ids, cut to `input_length` tokens.
    fn prompt(&mut self, ids: &[u64], input_length: usize, rng: &mut StdRng) -> String {
        let full_blocks = (input_length / self.block).min(ids.len());
        let mut text = String::new();
        for id in &ids[..full_blocks] {
            text.push_str(self.full(*id));
        }
        let rest = input_length - full_blocks * self.block;
        if rest > 0 {
            // The tail: unique text after the shared blocks, exactly `rest` more tokens.
            let start = self.generator.random_start(rng);
            text = self.generator.with_prefix(&text, start, input_length);
        }
        text
    }
}

/// Loads the file; returns its entries and the sampling its type defaults to.
pub fn load(
    cfg: &InputSpec,
    shape: &RequestShape,
    preamble: &Preamble,
    path: &Path,
    tokenizer: &Tokenizer,
) -> Result<(Vec<Entry>, SamplingStrategy), DatasetError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| DatasetError::Read {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    let kind = cfg
        .custom_dataset_type
        .unwrap_or(CustomDatasetType::SingleTurn);
    let run = Run {
        cfg,
        shape,
        preamble,
        tokenizer,
    };
    let entries = match kind {
        CustomDatasetType::SingleTurn | CustomDatasetType::RandomPool => {
            load_jsonl(&shown, &text, |_, line, id| run.single_turn(line, id))?
        }
        CustomDatasetType::MultiTurn => {
            load_jsonl(&shown, &text, |_, line, id| run.multi_turn(line, id))?
        }
        CustomDatasetType::MooncakeTrace => load_mooncake_trace(&run, &shown, &text)?,
        CustomDatasetType::Sharegpt => load_sharegpt(&run, &shown, &text)?,
    };
    if entries.is_empty() {
        return Err(DatasetError::Empty(shown));
    }
    let sampling = match kind {
        CustomDatasetType::RandomPool => SamplingStrategy::Random,
        _ => SamplingStrategy::Sequential,
    };
    Ok((entries, sampling))
}

/// What every loader reads besides the file: the run's settings and its tokenizer.
struct Run<'a> {
    cfg: &'a InputSpec,
    shape: &'a RequestShape,
    /// `--system-prompt`, opening every conversation.
    preamble: &'a Preamble<'a>,
    tokenizer: &'a Tokenizer,
}

impl Run<'_> {
    fn count(&self, text: &str) -> u32 {
        token_count(self.tokenizer, text)
    }

    /// A `single_turn` / `random_pool` line: one request.
    fn single_turn(&self, line: &str, (index, id): (usize, String)) -> Result<Entry, String> {
        let row: TextTurn = parse_line(line)?;
        let prompt = row.text()?;
        let osl = row.output_length()?.or(self.cfg.osl());
        let isl = self.count(&prompt);
        let id = row.session_id.unwrap_or(id);
        Ok(single(
            self.shape,
            index,
            self.preamble,
            id,
            (prompt, isl, osl),
            None,
        ))
    }

    /// A `multi_turn` line: one session, its turns sent in order.
    fn multi_turn(&self, line: &str, (index, id): (usize, String)) -> Result<Entry, String> {
        let row: Session = parse_line(line)?;
        if row.turns.is_empty() {
            return Err("a session needs at least one turn".into());
        }
        let mut turns = Vec::new();
        for (n, t) in row.turns.iter().enumerate() {
            let in_turn = |e: String| format!("turn {}: {e}", n + 1);
            let text = t.text().map_err(in_turn)?;
            let delay_ms =
                millis("delay", t.delay.unwrap_or(0.0), MAX_DELAY_MS).map_err(in_turn)?;
            let osl = t.output_length().map_err(in_turn)?.or(self.cfg.osl());
            turns.push(Turn {
                isl: self.count(&text),
                osl,
                delay: units::clamped_millis(delay_ms),
                text,
            });
        }
        let first = turns[0].text.clone();
        Ok(entry(
            self.shape,
            index,
            self.preamble,
            row.session_id.unwrap_or(id),
            vec![first],
            turns,
            None,
        ))
    }
}

/// One JSON value from a JSONL line.
fn parse_line<'de, T: Deserialize<'de>>(line: &'de str) -> Result<T, String> {
    serde_json::from_str(line).map_err(|e| e.to_string())
}

/// Reads a JSONL file: `row(line_number, line, (entry_index, default_id))` turns each
/// non-blank line into an entry; its error becomes `path:line: message`.
fn load_jsonl(
    shown: &str,
    text: &str,
    mut row: impl FnMut(usize, &str, (usize, String)) -> Result<Entry, String>,
) -> Result<Vec<Entry>, DatasetError> {
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let id = (entries.len(), format!("conv-{}", entries.len()));
        let entry = row(i + 1, line, id).map_err(|message| DatasetError::Line {
            path: shown.to_string(),
            line: i + 1,
            message,
        })?;
        entries.push(entry);
    }
    Ok(entries)
}

/// A `sharegpt` file: one JSON array; conversations that don't open with a human message
/// answered by gpt are skipped.
fn load_sharegpt(run: &Run, shown: &str, text: &str) -> Result<Vec<Entry>, DatasetError> {
    let rows: Vec<SharegptEntry> = serde_json::from_str(text).map_err(|e| DatasetError::Line {
        path: shown.to_string(),
        line: e.line(),
        message: format!("expected a ShareGPT JSON array: {e}"),
    })?;
    let mut entries = Vec::new();
    for row in rows {
        let mut msgs = row.conversations.iter();
        let (Some(q), Some(a)) = (msgs.next(), msgs.next()) else {
            continue;
        };
        if q.from != "human" || a.from != "gpt" || q.value.trim().is_empty() {
            continue;
        }
        let osl = run
            .cfg
            .osl()
            .or(Some(run.count(&a.value).clamp(1, MAX_TOKENS)));
        let id = format!("conv-{}", entries.len());
        entries.push(single(
            run.shape,
            entries.len(),
            run.preamble,
            id,
            (q.value.clone(), run.count(&q.value), osl),
            None,
        ));
    }
    Ok(entries)
}

/// A `mooncake_trace` file: prompts built from `hash_ids` blocks, timestamps checked.
fn load_mooncake_trace(run: &Run, shown: &str, text: &str) -> Result<Vec<Entry>, DatasetError> {
    let generator = PromptGenerator::new(run.tokenizer.clone());
    let mut trace = Trace {
        run,
        rng: StdRng::seed_from_u64(run.cfg.random_seed),
        blocks: BlockCache {
            generator: &generator,
            block: (run.cfg.isl_block_size as usize).max(1),
            seed: run.cfg.random_seed,
            blocks: HashMap::new(),
            used: UsedBlocks::default(),
        },
        span: TraceSpan::default(),
    };
    load_jsonl(shown, text, |n, line, id| trace.line(n, line, id))
}

/// The state a trace is read with: prompts are drawn in file order.
struct Trace<'a> {
    run: &'a Run<'a>,
    rng: StdRng,
    blocks: BlockCache<'a>,
    span: TraceSpan,
}

impl Trace<'_> {
    /// Line `number` of the trace: one request.
    fn line(
        &mut self,
        number: usize,
        line: &str,
        (index, id): (usize, String),
    ) -> Result<Entry, String> {
        let row: MooncakeLine = parse_line(line)?;
        let input_length = length("input_length", &row.input_length)?;
        let osl = row
            .output_length
            .as_ref()
            .map(|n| length("output_length", n))
            .transpose()?
            .or(self.run.cfg.osl());
        let ids = hash_ids(row.hash_ids.as_deref().unwrap_or_default())?;
        if let Some(t) = row.timestamp {
            self.span.add(t, number)?;
        }
        let prompt = if ids.is_empty() {
            let generator = self.blocks.generator;
            let start = generator.random_start(&mut self.rng);
            generator.prompt(start, input_length as usize)
        } else {
            self.blocks
                .prompt(&ids, input_length as usize, &mut self.rng)
        };
        let isl = self.run.count(&prompt);
        let (shape, preamble) = (self.run.shape, self.run.preamble);
        Ok(single(
            shape,
            index,
            preamble,
            id,
            (prompt, isl, osl),
            row.timestamp,
        ))
    }
}

/// A trace line's `hash_ids`, checked: at most `MAX_LIST_ITEMS` whole numbers.
fn hash_ids(ids: &[Number]) -> Result<Vec<u64>, String> {
    if ids.len() > MAX_LIST_ITEMS {
        return Err(format!(
            "`hash_ids` has {} items; at most {MAX_LIST_ITEMS}",
            ids.len()
        ));
    }
    ids.iter()
        .map(|id| {
            id.as_u64().ok_or_else(|| {
                format!(
                    "`hash_ids` must hold whole numbers from 0 to {}, got {id}",
                    u64::MAX
                )
            })
        })
        .collect()
}

/// The trace's earliest and latest timestamps, with their lines: its span is bounded.
#[derive(Default)]
struct TraceSpan {
    earliest: Option<(f64, usize)>,
    latest: Option<(f64, usize)>,
}

impl TraceSpan {
    /// Checks timestamp `t` of line `line` and takes it in.
    fn add(&mut self, t: f64, line: usize) -> Result<(), String> {
        millis("timestamp", t, MAX_TIMESTAMP_MS)?;
        if self.earliest.is_none_or(|(e, _)| t < e) {
            self.earliest = Some((t, line));
        }
        if self.latest.is_none_or(|(l, _)| t > l) {
            self.latest = Some((t, line));
        }
        if let (Some((e, e_line)), Some((l, l_line))) = (self.earliest, self.latest) {
            if l - e > MAX_TRACE_SPAN_MS {
                let (other, other_line) = if l_line == line {
                    (e, e_line)
                } else {
                    (l, l_line)
                };
                return Err(format!(
                    "`timestamp` {} is more than {MAX_TRACE_SPAN_MS} ms away from \
                     {} (line {other_line}): a trace may span at most {} seconds",
                    units::show(t),
                    units::show(other),
                    units::MAX_SECONDS
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;
    use std::time::Duration;

    fn tokenizer() -> &'static Tokenizer {
        static TOK: OnceLock<Tokenizer> = OnceLock::new();
        TOK.get_or_init(|| Tokenizer::load("builtin").unwrap())
    }

    /// Loads `text` as an input file of type `kind` (blocks of 4 tokens).
    fn load_text(kind: &str, text: &str) -> Result<Vec<Entry>, DatasetError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("input.jsonl");
        std::fs::write(&path, text).unwrap();
        let args: Vec<String> = [
            "--url",
            "mock",
            "--input-file",
            path.to_str().unwrap(),
            "--custom-dataset-type",
            kind,
            "--isl-block-size",
            "4",
            "--random-seed",
            "1",
        ]
        .map(String::from)
        .to_vec();
        let cfg = crate::config::load(&args).unwrap();
        let shape = RequestShape::new(&cfg.endpoint, false);
        let preamble = Preamble::default();
        load(&cfg.input, &shape, &preamble, &path, tokenizer()).map(|(entries, _)| entries)
    }

    /// `text` must fail to load with `input.jsonl:LINE: ...` mentioning `needle`.
    fn line_error(kind: &str, text: &str, line: usize, needle: &str) {
        match load_text(kind, text) {
            Ok(_) => panic!("{kind}: {text:?} loaded"),
            Err(e @ DatasetError::Line { line: got, .. }) => {
                let msg = e.to_string();
                assert_eq!(got, line, "{kind}: {text:?}: {msg}");
                assert!(msg.contains(needle), "{kind}: {text:?}: {msg}");
                assert!(!msg.contains('\n'), "{msg:?}");
            }
            Err(e) => panic!("{kind}: {text:?}: not a line error: {e}"),
        }
    }

    #[test]
    fn multi_turn_delays_are_checked_and_converted() {
        let ok = "{\"turns\": [{\"text\": \"a\"}, {\"text\": \"b\", \"delay\": 1500}]}\n";
        let entries = load_text("multi_turn", ok).unwrap();
        assert_eq!(entries[0].turns[1].delay, Duration::from_millis(1500));
        let max = "{\"turns\": [{\"text\": \"a\"}, {\"text\": \"b\", \"delay\": 1e10}]}\n";
        let entries = load_text("multi_turn", max).unwrap();
        assert_eq!(entries[0].turns[1].delay, Duration::from_secs(10_000_000));
        for bad in ["1e300", "10000000001", "-5", "-1e-300"] {
            let text = format!(
                "{}{{\"turns\": [{{\"text\": \"a\"}}, {{\"text\": \"b\", \"delay\": {bad}}}]}}\n",
                ok
            );
            line_error("multi_turn", &text, 2, "turn 2: `delay` must be from 0 to");
        }
        // Out of f64 range: serde_json's own error, on its line.
        line_error(
            "multi_turn",
            "{\"turns\": [{\"text\": \"a\", \"delay\": 1e400}]}\n",
            1,
            "number out of range",
        );
    }

    #[test]
    fn mooncake_numbers_are_checked() {
        let ok = "{\"input_length\": 6, \"timestamp\": 0, \"hash_ids\": [1]}\n";
        load_text("mooncake_trace", ok).unwrap();
        let cases: &[(&str, &str)] = &[
            (
                "{\"input_length\": 6, \"timestamp\": 1e300}",
                "`timestamp` must be from 0 to",
            ),
            (
                "{\"input_length\": 6, \"timestamp\": -1}",
                "`timestamp` must be from 0 to",
            ),
            (
                "{\"input_length\": 0}",
                "`input_length` must be a whole number from 1 to 1000000 tokens, got 0",
            ),
            ("{\"input_length\": 1000001}", "got 1000001"),
            (
                "{\"input_length\": 1e300}",
                "`input_length` must be a whole number",
            ),
            ("{\"input_length\": -3}", "got -3"),
            ("{\"input_length\": 2.5}", "got 2.5"),
            (
                "{\"input_length\": 6, \"output_length\": 0}",
                "`output_length` must be a whole",
            ),
            (
                "{\"input_length\": 6, \"output_length\": 1000001}",
                "`output_length` must",
            ),
            (
                "{\"input_length\": 6, \"hash_ids\": [-1]}",
                "`hash_ids` must hold whole",
            ),
            ("{\"input_length\": 6, \"hash_ids\": [1.5]}", "got 1.5"),
            ("{\"input_length\": 6, \"hash_ids\": [1e300]}", "got 1e+300"),
            // More than MAX_TRACE_SPAN_MS after line 1's timestamp 0.
            (
                "{\"input_length\": 6, \"timestamp\": 10000000001}",
                "line 1",
            ),
        ];
        for (line, needle) in cases {
            line_error("mooncake_trace", &format!("{ok}{line}\n"), 2, needle);
        }
        // Unix-epoch milliseconds are fine: the trace's span is what is bounded.
        let epoch = "{\"input_length\": 5, \"timestamp\": 1700000000000}\n\
                     {\"input_length\": 5, \"timestamp\": 1700000001000}\n";
        assert_eq!(load_text("mooncake_trace", epoch).unwrap().len(), 2);
        // Too many hash ids on one line.
        let ids = vec!["0"; MAX_LIST_ITEMS + 1].join(",");
        let line = format!("{{\"input_length\": 6, \"hash_ids\": [{ids}]}}\n");
        line_error("mooncake_trace", &line, 1, "`hash_ids` has 1000001 items");
    }

    #[test]
    fn text_line_numbers_are_checked() {
        for kind in ["single_turn", "random_pool"] {
            line_error(
                kind,
                "{\"text\": \"a\"}\n{\"text\": \"b\", \"output_length\": 0}\n",
                2,
                "`output_length`",
            );
            line_error(
                kind,
                "{\"text\": \"b\", \"output_length\": 1000001}\n",
                1,
                "`output_length`",
            );
            line_error(
                kind,
                "{\"text\": \"b\", \"output_length\": 1e300}\n",
                1,
                "`output_length` must be a whole number from 1 to 1000000 tokens, got 1e+300",
            );
            let texts = vec!["\"\""; MAX_LIST_ITEMS + 1].join(",");
            line_error(
                kind,
                &format!("{{\"texts\": [{texts}]}}\n"),
                1,
                "`texts` has 1000001 items",
            );
        }
        line_error(
            "multi_turn",
            "{\"turns\": [{\"text\": \"a\", \"output_length\": 2000000}]}\n",
            1,
            "turn 1: `output_length`",
        );
    }

    /// JSON-ish lines with the loaders' field names and numbers of every kind.
    fn jsonl_line() -> impl Strategy<Value = String> {
        let number = prop_oneof![
            any::<f64>().prop_map(|v| if v.is_finite() {
                format!("{v:e}")
            } else {
                "1e999".into()
            }),
            any::<i64>().prop_map(|v| v.to_string()),
            (0u32..64).prop_map(|v| v.to_string()),
            prop::sample::select(vec![
                "0",
                "-0",
                "1e300",
                "-1e300",
                "1e-320",
                "4294967296",
                "null",
                "\"5\"",
                "[]",
                "{}",
                "true"
            ])
            .prop_map(str::to_string),
        ];
        let field = prop::sample::select(vec![
            "text",
            "texts",
            "delay",
            "timestamp",
            "input_length",
            "output_length",
            "hash_ids",
            "session_id",
            "turns",
        ]);
        let value = prop_oneof![
            3 => number.clone(),
            1 => prop::collection::vec(number.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            1 => Just("\"hi there\"".to_string()),
            1 => Just("[\"a\", \"b\"]".to_string()),
            1 => (number.clone(), number).prop_map(|(d, o)| format!(
                "[{{\"text\": \"x\", \"delay\": {d}}}, {{\"text\": \"y\", \"output_length\": {o}}}]"
            )),
        ];
        prop_oneof![
            4 => prop::collection::vec((field, value), 0..5).prop_map(|kv| {
                let body: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
                format!("{{{}}}", body.join(", "))
            }),
            1 => "\\PC{0,30}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any lines: loaded, or a one-line error; never a panic.
        #[test]
        fn loaders_never_panic(
            kind in prop::sample::select(vec!["single_turn", "random_pool", "multi_turn", "mooncake_trace", "sharegpt"]),
            lines in prop::collection::vec(jsonl_line(), 0..5),
        ) {
            let text = lines.join("\n");
            if let Err(e) = load_text(kind, &text) {
                let msg = e.to_string();
                prop_assert!(!msg.contains('\n'), "{msg:?}");
            }
        }
    }

    #[test]
    fn hash_id_blocks_share_prefixes_exactly_where_ids_match() {
        let tok = Tokenizer::load("builtin").unwrap();
        let g = PromptGenerator::new(tok.clone());
        let mut cache = BlockCache {
            generator: &g,
            block: 16,
            seed: 3,
            blocks: HashMap::new(),
            used: UsedBlocks::default(),
        };
        let mut rng = StdRng::seed_from_u64(1);
        let a = cache.prompt(&[1, 2, 3], 40, &mut rng);
        let b = cache.prompt(&[1, 2, 9], 40, &mut rng);
        let c = cache.prompt(&[7, 2, 3], 48, &mut rng);
        for (p, n) in [(&a, 40), (&b, 40), (&c, 48)] {
            assert_eq!(tok.count(p), n, "{p:?}");
        }
        let block1 = cache.full(1).to_string();
        let block2 = cache.full(2).to_string();
        let block12 = format!("{block1}{block2}");
        assert!(a.starts_with(&block12) && b.starts_with(&block12));
        assert!(
            !c.starts_with(&block1),
            "different first id, different first block"
        );
        // Token-level: the shared blocks are the same tokens in both prompts.
        let (ta, tb) = (tok.encode(&a), tok.encode(&b));
        assert_eq!(ta[..32], tb[..32]);
    }
}
