//! Fast path for the common OpenAI streaming chunk shapes.
//!
//! `skim` walks one JSON object by hand, without allocating, and reads only `choices[*].text`
//! and the `content` / `reasoning_content` / `reasoning` strings of `choices[*].delta` and
//! `choices[*].message`. Whenever the input could mean anything else to the serde path in
//! [`super::parse_serde`] — a non-null `usage`, `error`, `data`, `type`, `delta`, `output` or
//! `response`, tool calls, an escape in a string it must extract, a duplicate field, malformed
//! JSON, trailing data — it returns `None` without touching the output strings, and the caller
//! runs the serde path. When it returns `Some`, the result and the appended text are exactly
//! what the serde path gives.
//!
//! The grammar it accepts mirrors `serde_json` 1.x (`from_slice`) for the derived structs in
//! `endpoint/mod.rs`: known fields may appear once; unknown fields are skipped like
//! `IgnoredAny` does (valid structure, no control characters in strings, valid escapes,
//! strings not checked for UTF-8); keys of the derived structs and extracted strings must be
//! UTF-8 without control characters.

use super::Parsed;

/// Non-empty strings a chunk may carry before we give up (the serde path handles the rest).
const MAX_PIECES: usize = 8;
/// Nesting depth of a skipped value before we give up (serde has no limit there).
const MAX_SKIP_DEPTH: u32 = 64;

/// Reads the common chunk shapes; `None` means "use the serde path" and leaves `out` and
/// `reasoning` untouched.
pub(super) fn skim(bytes: &[u8], out: &mut String, reasoning: &mut String) -> Option<Parsed> {
    read(bytes).map(|acc| acc.apply(out, reasoning))
}

/// [`skim`] for the next chunk of a stream whose earlier chunks taught `shape`: a chunk that
/// is the shape's bytes around a plain string is read from that alone; any other is skimmed
/// whole, and when it yields one string it becomes the shape.
pub(super) fn skim_in(
    shape: &mut Shape,
    bytes: &[u8],
    out: &mut String,
    reasoning: &mut String,
) -> Option<Parsed> {
    if let Some(p) = shape.reuse(bytes, out, reasoning) {
        return Some(p);
    }
    let acc = read(bytes)?;
    if let [(s, is_reasoning)] = acc.items[..acc.len] {
        shape.learn(bytes, s, is_reasoning);
    }
    Some(acc.apply(out, reasoning))
}

/// A stream's chunks differ, chunk to chunk, only in their text: vLLM, SGLang, TensorRT-LLM
/// and OpenAI repeat the id, the model, the `created` time and every other field. This is
/// the last chunk [`skim_in`] read whole that yielded exactly one string, with that string
/// cut out. A chunk made of the same bytes around another string that needs no escapes (no
/// `"`, `\` or control character) is the same JSON structure with only that string changed,
/// so the skim would find the same fields, the same string in the same place, and nothing
/// else: the answer is the string itself, without walking the chunk (about three quarters
/// of the skim's time went on the fields around the text).
#[derive(Debug, Default, Clone)]
pub struct Shape {
    /// The chunk without its string: the bytes before it (up to and including the opening
    /// quote), then the bytes after it (from the closing quote).
    around: Vec<u8>,
    /// Where the string was: the length of the bytes before it.
    at: usize,
    reasoning: bool,
}

impl Shape {
    fn learn(&mut self, bytes: &[u8], s: &str, reasoning: bool) {
        // `s` borrows from `bytes` (the skim never copies what it extracts).
        let at = s.as_ptr() as usize - bytes.as_ptr() as usize;
        self.around.clear();
        self.around.extend_from_slice(&bytes[..at]);
        self.around.extend_from_slice(&bytes[at + s.len()..]);
        self.at = at;
        self.reasoning = reasoning;
    }

    #[inline]
    fn reuse(&self, bytes: &[u8], out: &mut String, reasoning: &mut String) -> Option<Parsed> {
        // An empty string is not content (the skim's answer differs): the whole walk decides.
        if self.around.is_empty() || bytes.len() <= self.around.len() {
            return None;
        }
        let (before, after) = self.around.split_at(self.at);
        let text = bytes.strip_prefix(before)?.strip_suffix(after)?;
        if find_special(text, 0) != text.len() {
            return None;
        }
        let text = std::str::from_utf8(text).ok()?;
        let mut acc = Pieces::default();
        acc.push(text, self.reasoning)?;
        Some(acc.apply(out, reasoning))
    }
}

/// The strings the skim extracts from `bytes`, or `None` for the serde path.
#[inline]
fn read(bytes: &[u8]) -> Option<Pieces<'_>> {
    let mut cur = Cur { b: bytes, i: 0 };
    let mut acc = Pieces::default();
    if cur.next_tok()? != b'{' {
        return None;
    }
    let mut seen = 0u8;
    cur.fields(|c, key| {
        let bit = match key {
            b"choices" => 1,
            b"usage" => 2,
            b"error" => 4,
            b"data" => 8,
            b"type" => 16,
            b"delta" => 32,
            b"output" => 64,
            b"response" => 128,
            _ => return c.unknown(key),
        };
        if seen & bit != 0 {
            return None; // serde: duplicate field
        }
        seen |= bit;
        if bit == 1 {
            c.choices(&mut acc)
        } else {
            c.null() // `None` for serde; anything else needs the serde path
        }
    })?;
    cur.ws();
    if cur.i != bytes.len() {
        return None; // serde: trailing characters
    }
    Some(acc)
}

/// Borrowed non-empty strings in the order the serde path appends them; `true` = reasoning.
struct Pieces<'a> {
    items: [(&'a str, bool); MAX_PIECES],
    len: usize,
}

impl Default for Pieces<'_> {
    fn default() -> Self {
        Self {
            items: [("", false); MAX_PIECES],
            len: 0,
        }
    }
}

impl<'a> Pieces<'a> {
    /// Appends the strings where the serde path does.
    fn apply(&self, out: &mut String, reasoning: &mut String) -> Parsed {
        let mut p = Parsed::default();
        for &(s, is_reasoning) in &self.items[..self.len] {
            if is_reasoning {
                reasoning.push_str(s);
            } else {
                out.push_str(s);
                p.has_output = true;
            }
            p.has_content = true;
        }
        p
    }

    #[inline]
    fn push(&mut self, s: &'a str, is_reasoning: bool) -> Option<()> {
        if !s.is_empty() {
            *self.items.get_mut(self.len)? = (s, is_reasoning);
            self.len += 1;
        }
        Some(())
    }
}

struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    /// Skips whitespace and consumes the next byte.
    #[inline]
    fn next_tok(&mut self) -> Option<u8> {
        self.ws();
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    #[inline]
    fn lit(&mut self, rest: &[u8]) -> Option<()> {
        if self.b.get(self.i..)?.starts_with(rest) {
            self.i += rest.len();
            Some(())
        } else {
            None
        }
    }

    /// Exactly `null`.
    #[inline]
    fn null(&mut self) -> Option<()> {
        if self.next_tok()? != b'n' {
            return None;
        }
        self.lit(b"ull")
    }

    /// The rest of a string whose opening quote was consumed: its raw bytes and whether it
    /// contains escapes (which are validated like serde's `ignore_str` does).
    #[inline(always)]
    fn str_body(&mut self) -> Option<(&'a [u8], bool)> {
        let start = self.i;
        let mut escaped = false;
        loop {
            self.i = find_special(self.b, self.i);
            match self.peek()? {
                b'"' => {
                    let s = &self.b[start..self.i];
                    self.i += 1;
                    return Some((s, escaped));
                }
                b'\\' => {
                    escaped = true;
                    self.i += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                        b'u' => {
                            let hex = self.b.get(self.i + 1..self.i + 5)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.i += 5;
                        }
                        _ => return None,
                    }
                }
                _ => return None, // control character
            }
        }
    }

    /// `null` (as "") or a string without escapes, which must be UTF-8.
    #[inline]
    fn opt_str(&mut self) -> Option<&'a str> {
        match self.next_tok()? {
            b'n' => self.lit(b"ull").map(|()| ""),
            b'"' => match self.str_body()? {
                (s, false) => std::str::from_utf8(s).ok(),
                (_, true) => None,
            },
            _ => None,
        }
    }

    /// The members of an object whose `{` was consumed: calls `f` with each key (escape-free)
    /// positioned before its value, and checks the separators.
    #[inline]
    fn fields(&mut self, mut f: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        let mut c = self.next_tok()?;
        if c == b'}' {
            return Some(());
        }
        loop {
            if c != b'"' {
                return None;
            }
            let key = match self.str_body()? {
                (k, false) => k,
                (_, true) => return None,
            };
            if self.next_tok()? != b':' {
                return None;
            }
            f(self, key)?;
            match self.next_tok()? {
                b',' => c = self.next_tok()?,
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    /// A member of a derived struct that the struct does not name: serde parses the key as a
    /// `str` (so it must be UTF-8) and ignores the value.
    #[inline]
    fn unknown(&mut self, key: &[u8]) -> Option<()> {
        if !key.is_ascii() {
            std::str::from_utf8(key).ok()?;
        }
        self.skip_value()
    }

    /// `choices`: `null` or an array of choice objects.
    fn choices(&mut self, acc: &mut Pieces<'a>) -> Option<()> {
        match self.next_tok()? {
            b'n' => self.lit(b"ull"),
            b'[' => {
                let mut c = self.next_tok()?;
                if c == b']' {
                    return Some(());
                }
                loop {
                    if c != b'{' {
                        return None;
                    }
                    self.choice(acc)?;
                    match self.next_tok()? {
                        b',' => c = self.next_tok()?,
                        b']' => return Some(()),
                        _ => return None,
                    }
                }
            }
            _ => None,
        }
    }

    /// One choice object (after `{`); its strings go to `acc` in serde's order: `text`, then
    /// `delta`'s, then `message`'s, each as content, reasoning_content, reasoning.
    fn choice(&mut self, acc: &mut Pieces<'a>) -> Option<()> {
        let mut seen = 0u8;
        let mut text = "";
        let mut delta = [""; 3];
        let mut message = [""; 3];
        self.fields(|c, key| {
            let bit = match key {
                b"delta" => 1,
                b"message" => 2,
                b"text" => 4,
                _ => return c.unknown(key),
            };
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            match bit {
                1 => delta = c.message()?,
                2 => message = c.message()?,
                _ => text = c.opt_str()?,
            }
            Some(())
        })?;
        acc.push(text, false)?;
        for [content, reasoning_content, reasoning] in [delta, message] {
            acc.push(content, false)?;
            acc.push(reasoning_content, true)?;
            acc.push(reasoning, true)?;
        }
        Some(())
    }

    /// `delta` / `message`: `null` or an object; returns content, reasoning_content and
    /// reasoning ("" when absent). Tool calls must be absent, `null` or `[]`.
    fn message(&mut self) -> Option<[&'a str; 3]> {
        let mut m = [""; 3];
        match self.next_tok()? {
            b'n' => self.lit(b"ull")?,
            b'{' => {
                let mut seen = 0u8;
                self.fields(|c, key| {
                    let idx = match key {
                        b"content" => 0,
                        b"reasoning_content" => 1,
                        b"reasoning" => 2,
                        b"tool_calls" => 3,
                        _ => return c.unknown(key),
                    };
                    if seen & (1 << idx) != 0 {
                        return None;
                    }
                    seen |= 1 << idx;
                    if idx == 3 {
                        match c.next_tok()? {
                            b'n' => c.lit(b"ull"),
                            b'[' => (c.next_tok()? == b']').then_some(()),
                            _ => None,
                        }
                    } else {
                        m[idx] = c.opt_str()?;
                        Some(())
                    }
                })?;
            }
            _ => return None,
        }
        Some(m)
    }

    /// Skips one value like serde's `ignore_value`.
    fn skip_value(&mut self) -> Option<()> {
        // One bit per open container, 1 = object.
        let mut stack = 0u64;
        let mut depth = 0u32;
        loop {
            match self.next_tok()? {
                b'"' => {
                    self.str_body()?;
                }
                b'n' => self.lit(b"ull")?,
                b't' => self.lit(b"rue")?,
                b'f' => self.lit(b"alse")?,
                c @ (b'-' | b'0'..=b'9') => self.number(c)?,
                c @ (b'[' | b'{') => {
                    if depth == MAX_SKIP_DEPTH {
                        return None;
                    }
                    let obj = c == b'{';
                    self.ws();
                    let close = if obj { b'}' } else { b']' };
                    if self.peek()? != close {
                        stack = (stack << 1) | u64::from(obj);
                        depth += 1;
                        if obj {
                            self.member_key()?;
                        }
                        continue;
                    }
                    self.i += 1;
                }
                _ => return None,
            }
            // After a value: close containers until a comma or the end.
            loop {
                if depth == 0 {
                    return Some(());
                }
                let obj = stack & 1 == 1;
                match (self.next_tok()?, obj) {
                    (b',', true) => {
                        self.member_key()?;
                        break;
                    }
                    (b',', false) => break,
                    (b'}', true) | (b']', false) => {
                        stack >>= 1;
                        depth -= 1;
                    }
                    _ => return None,
                }
            }
        }
    }

    /// `"key":` inside a skipped object (serde ignores the key, so no UTF-8 check).
    fn member_key(&mut self) -> Option<()> {
        if self.next_tok()? != b'"' {
            return None;
        }
        self.str_body()?;
        (self.next_tok()? == b':').then_some(())
    }

    /// The rest of a number whose first byte (`-` or a digit) was consumed.
    fn number(&mut self, first: u8) -> Option<()> {
        let lead = if first == b'-' {
            let d = self.peek()?;
            self.i += 1;
            d
        } else {
            first
        };
        match lead {
            b'0' => {
                if let Some(b'0'..=b'9') = self.peek() {
                    return None;
                }
            }
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    #[inline]
    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }
}

/// Index of the first `"`, `\` or control character at or after `i` (or `b.len()`), eight
/// bytes at a time (the same bit trick as serde_json's `skip_to_escape`: the lowest flagged
/// byte of each test is always a true match).
#[inline]
fn find_special(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    while let Some(chunk) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().unwrap());
        let ctrl = w.wrapping_sub(ONES * 0x20) & !w;
        let q = w ^ (ONES * u64::from(b'"'));
        let q = q.wrapping_sub(ONES) & !q;
        let bs = w ^ (ONES * u64::from(b'\\'));
        let bs = bs.wrapping_sub(ONES) & !bs;
        let m = (ctrl | q | bs) & HIGH;
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::super::parse_serde;
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Map, Value};

    const PRE: &str = "pre|";

    /// Runs both paths on `bytes`; when skim answers, it must equal serde (result and text);
    /// when it does not, it must not have touched the strings. Returns skim's answer.
    fn check(bytes: &[u8]) -> Option<Parsed> {
        let (mut o1, mut r1) = (PRE.to_string(), PRE.to_string());
        let fast = skim(bytes, &mut o1, &mut r1);
        let (mut o2, mut r2) = (PRE.to_string(), PRE.to_string());
        let slow = parse_serde(bytes, &mut o2, &mut r2);
        let shown = String::from_utf8_lossy(bytes);
        match &fast {
            Some(p) => {
                assert_eq!(slow.as_ref(), Ok(p), "result differs for {shown}");
                assert_eq!(o1, o2, "out differs for {shown}");
                assert_eq!(r1, r2, "reasoning differs for {shown}");
            }
            None => {
                assert_eq!(o1, PRE, "out touched on bail for {shown}");
                assert_eq!(r1, PRE, "reasoning touched on bail for {shown}");
            }
        }
        fast
    }

    /// [`check`] for [`skim_in`] with `shape` (a copy: the caller's stays as it was), and
    /// whether the chunk was read from the shape alone.
    fn check_in(shape: &Shape, bytes: &[u8]) -> (Option<Parsed>, bool) {
        let reused = shape
            .reuse(bytes, &mut String::new(), &mut String::new())
            .is_some();
        let (mut o1, mut r1) = (PRE.to_string(), PRE.to_string());
        let fast = skim_in(&mut shape.clone(), bytes, &mut o1, &mut r1);
        let (mut o2, mut r2) = (PRE.to_string(), PRE.to_string());
        let slow = parse_serde(bytes, &mut o2, &mut r2);
        let shown = String::from_utf8_lossy(bytes);
        match &fast {
            Some(p) => {
                assert_eq!(slow.as_ref(), Ok(p), "result differs for {shown}");
                assert_eq!(o1, o2, "out differs for {shown}");
                assert_eq!(r1, r2, "reasoning differs for {shown}");
            }
            None => {
                assert!(!reused);
                assert_eq!(o1, PRE, "out touched on bail for {shown}");
                assert_eq!(r1, PRE, "reasoning touched on bail for {shown}");
            }
        }
        (fast, reused)
    }

    /// The shape [`skim_in`] learns from `bytes` (empty when it learns none).
    fn learn(bytes: &[u8]) -> Shape {
        let mut shape = Shape::default();
        skim_in(&mut shape, bytes, &mut String::new(), &mut String::new());
        shape
    }

    #[test]
    fn a_streams_chunks_are_read_from_its_shape_and_agree_with_serde() {
        let first = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1736412345,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#;
        let token = |t: &str| VLLM_CHAT.replace(" world", t);
        // The role chunk yields no string: nothing is learned from it.
        assert!(learn(first.as_bytes()).around.is_empty());
        let shape = learn(VLLM_CHAT.as_bytes());
        assert_eq!(&shape.around[shape.at - 12..shape.at], br#"{"content":""#);
        for t in [" Hello", "x", "こんにちは 🙂", &"long ".repeat(100)] {
            let (p, reused) = check_in(&shape, token(t).as_bytes());
            assert!(reused && p.is_some_and(|p| p.has_output), "{t}");
        }
        // Not the shape, or not a plain string in it: read whole (and still equal to serde).
        for t in ["", r#"a\"b"#, "tab\there", r"a\u00e9"] {
            assert!(!check_in(&shape, token(t).as_bytes()).1, "{t}");
        }
        let last = VLLM_CHAT.replace(r#""finish_reason":null"#, r#""finish_reason":"stop""#);
        let (p, reused) = check_in(&shape, last.as_bytes());
        assert!(!reused && p.is_some());
        let usage = VLLM_CHAT.replace("}]}", r#"}],"usage":{"prompt_tokens":2}}"#);
        assert_eq!(check_in(&shape, usage.as_bytes()), (None, false));
        // Invalid UTF-8 where the text goes: serde's error, not text.
        let mut bad = token("ab").into_bytes();
        let at = bad.windows(2).position(|w| w == b"ab").unwrap();
        bad[at] = 0xff;
        assert_eq!(check_in(&shape, &bad), (None, false));
        // Reasoning is learned as reasoning.
        let think = r#"{"choices":[{"delta":{"reasoning_content":"hm"}}]}"#;
        let shape = learn(think.as_bytes());
        let (p, reused) = check_in(&shape, think.replace("hm", "so").as_bytes());
        assert!(reused && p.is_some_and(|p| p.has_content && !p.has_output));
    }

    const VLLM_CHAT: &str = r#"{"id":"chatcmpl-0c8f8b3f2a9e4a7b9f4d3c2b1a0e9d8c","object":"chat.completion.chunk","created":1736412345,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":{"content":" world"},"logprobs":null,"finish_reason":null}]}"#;

    /// Several choices; content and reasoning in one delta (serde's order, not key order).
    const MULTI: &str = r#"{"choices":[{"index":0,"delta":{"reasoning":"b","content":"A","reasoning_content":"a"}},{"index":1,"message":{"content":"C"},"delta":{"content":"B"},"text":"T"}]}"#;

    /// Chunks as real servers send them; all must take the fast path.
    const FAST: &[&str] = &[
        VLLM_CHAT,
        // vLLM: first chunk (role, empty content), last chunk, reasoning parsers.
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1736412345,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1736412345,"model":"m","choices":[{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":"stop","stop_reason":null}]}"#,
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1736412345,"model":"Qwen/QwQ-32B","choices":[{"index":0,"delta":{"reasoning_content":"Let me think"},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1736412345,"model":"openai/gpt-oss-20b","choices":[{"index":0,"delta":{"reasoning":" step"},"logprobs":null,"finish_reason":null}],"prompt_token_ids":null}"#,
        // vLLM completions, with and without logprobs.
        r#"{"id":"cmpl-9a","object":"text_completion","created":1736412345,"model":"m","choices":[{"index":0,"text":" the","logprobs":null,"finish_reason":null,"stop_reason":null}]}"#,
        r#"{"id":"cmpl-9a","object":"text_completion","created":1736412345,"model":"m","choices":[{"index":0,"text":" cat","logprobs":{"text_offset":[12],"token_logprobs":[-0.0123],"tokens":[" cat"],"top_logprobs":[{" cat":-0.0123,"\u0120dog":-4.5e-3}]},"finish_reason":"length","stop_reason":null}],"usage":null}"#,
        // vLLM chat logprobs object with exponents, byte arrays and escapes in skipped strings.
        r#"{"id":"x","choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":{"content":[{"token":"Hi","logprob":-1.2345e-05,"bytes":[72,105],"top_logprobs":[{"token":"\"\\n\u00e9","logprob":-11.5E+2,"bytes":null}]}]},"finish_reason":null}]}"#,
        // SGLang (Python json.dumps spacing, explicit nulls).
        r#"{"id": "2c7f", "object": "chat.completion.chunk", "created": 1736412345, "model": "default", "choices": [{"index": 0, "delta": {"role": null, "content": "Hello", "reasoning_content": null, "tool_calls": null}, "logprobs": null, "finish_reason": null, "matched_stop": null}], "usage": null}"#,
        r#"{"id":"2c7f","object":"chat.completion.chunk","created":1736412345,"model":"default","choices":[{"index":0,"delta":{"role":null,"content":null,"reasoning_content":"Hmm","tool_calls":null},"logprobs":null,"finish_reason":null,"matched_stop":null}],"usage":null}"#,
        // TensorRT-LLM (trtllm-serve).
        r#"{"id":"chatcmpl-7d1","object":"chat.completion.chunk","created":1736412345,"model":"TinyLlama","choices":[{"index":0,"delta":{"role":null,"content":" there","reasoning_content":null,"tool_calls":[]},"logprobs":null,"finish_reason":null,"stop_reason":null}],"usage":null}"#,
        // OpenAI.
        r#"{"id":"chatcmpl-B9","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_eb9dce56a8","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"Zx9"}"#,
        r#"{"id":"chatcmpl-B9","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_eb9dce56a8","choices":[{"index":0,"delta":{"content":" Hello"},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-B9","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}"#,
        // Unicode (multi-byte and 4-byte) in extracted strings and keys.
        r#"{"choices":[{"index":0,"delta":{"content":"こんにちは 🙂 é"},"finish_reason":null}],"modèle":"ü"}"#,
        MULTI,
        // Non-streaming chat without usage, with tool_calls [].
        r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Full answer.","reasoning_content":null,"tool_calls":[]},"logprobs":null,"finish_reason":"stop"}]}"#,
        // Nested objects / arrays / literals in unknown keys; special keys that are null.
        r#"{"x_groq":{"id":"req_01","usage":{"queue_time":0.01}},"meta":[[],{},[{"a":[true,false,null,-0,0.5e10,1e400,-12345678901234567890123]}]],"created":1.7e9,"error":null,"data":null,"type":null,"delta":null,"output":null,"response":null,"choices":null}"#,
        // Whitespace everywhere, pretty-printed.
        " \n{\r\n\t\"choices\" : [ { \"delta\" : { \"content\" : \"x\" } , \"index\" : 0 } ] ,\n \"id\" : \"y\" }\n ",
        // Empty object and empty choices.
        r#"{}"#,
        r#"{"choices":[]}"#,
        // Completions with a `text` of null.
        r#"{"choices":[{"text":null,"index":0}]}"#,
    ];

    #[test]
    fn realistic_chunks_take_the_fast_path_and_match_serde() {
        for s in FAST {
            assert!(check(s.as_bytes()).is_some(), "fell back on {s}");
        }
        let (mut o, mut r) = (String::new(), String::new());
        let p = skim(MULTI.as_bytes(), &mut o, &mut r).unwrap();
        assert!(p.has_content && p.has_output);
        assert_eq!((o.as_str(), r.as_str()), ("ATBC", "ab"));
    }

    /// Inputs the fast path must leave to serde (some of which serde rejects).
    const BAIL: &[&str] = &[
        r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":9}}"#,
        r#"{"choices":[{"delta":{"content":"x"}}],"usage":{"prompt_tokens":5}}"#,
        r#"{"error":{"message":"overloaded","code":503}}"#,
        r#"{"error":"boom"}"#,
        r#"{"data":[{"embedding":[0.1],"index":0}]}"#,
        r#"{"type":"response.output_text.delta","delta":"Hel"}"#,
        r#"{"output":[]}"#,
        r#"{"response":{"id":"r"}}"#,
        // Escapes in extracted strings or in the keys of derived structs.
        r#"{"choices":[{"delta":{"content":"Hi \"you\""}}]}"#,
        r#"{"choices":[{"delta":{"content":"line\n"}}]}"#,
        r#"{"choices":[{"delta":{"reasoning_content":"\u00e9"}}]}"#,
        r#"{"choices":[{"text":"a\/b"}]}"#,
        r#"{"cho\u0069ces":[{"delta":{"content":"x"}}]}"#,
        // Tool calls.
        r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{}"}}]}}]}"#,
        r#"{"choices":[{"message":{"tool_calls":{}}}]}"#,
        // Duplicate fields (serde errors).
        r#"{"choices":[],"choices":[]}"#,
        r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#,
        r#"{"choices":[{"delta":{"content":null,"content":"b"}}]}"#,
        r#"{"choices":[{"text":"a","text":null}]}"#,
        r#"{"choices":[{"delta":{},"delta":{}}]}"#,
        r#"{"usage":null,"usage":null}"#,
        // Wrong types.
        r#"{"choices":{}}"#,
        r#"{"choices":[null]}"#,
        r#"{"choices":[["x"]]}"#,
        r#"{"choices":[{"delta":"x"}]}"#,
        r#"{"choices":[{"delta":{"content":5}}]}"#,
        r#"{"choices":[{"text":true}]}"#,
        r#"["x"]"#,
        // Malformed or truncated JSON, trailing data.
        "",
        "not json",
        r#"{"choices":[{"delta":{"content":"x"}}]"#,
        r#"{"choices":[{"delta":{"content":"x"#,
        r#"{"choices":[{"delta":{"content":"x"}}]}}"#,
        r#"{"choices":[{"delta":{"content":"x"}}]} x"#,
        r#"{"choices":[{"delta":{"content":"x"}},]}"#,
        r#"{"id":"x",}"#,
        r#"{"id":[1,]}"#,
        r#"{"id":{"a":1,}}"#,
        r#"{"id":01}"#,
        r#"{"id":1.}"#,
        r#"{"id":1e}"#,
        r#"{"id":-}"#,
        r#"{"id":nul}"#,
        r#"{"id":[}"#,
        r#"{"id":{]}"#,
        r#"{"id":"\x"}"#,
        r#"{"id":"\u12g4"}"#,
        r#"{"id" "x"}"#,
        r#"{id:1}"#,
        "{\"id\":\"tab\there\"}",
        "{\u{b}\"id\":1}",
        "{\"id\":1\u{c}}",
        "{\"choices\":[{\"delta\":{\"content\":\"ctl\u{1}\"}}]}",
    ];

    #[test]
    fn other_shapes_and_bad_input_bail_without_touching_output() {
        for s in BAIL {
            assert!(check(s.as_bytes()).is_none(), "took the fast path on {s}");
        }
        // Invalid UTF-8 in an extracted string or a struct key: serde errors, so must we.
        for bytes in [
            &b"{\"choices\":[{\"delta\":{\"content\":\"\xff\"}}]}"[..],
            &b"{\"\xc3\":1,\"choices\":[]}"[..],
            &b"{\"choices\":[{\"te\xe2\x82\":1}]}"[..],
        ] {
            assert!(check(bytes).is_none());
        }
        // ... but serde does not check strings it ignores.
        assert!(check(b"{\"id\":\"\xff\",\"x\":{\"\xfe\":1}}").is_some());
        // Too many pieces or too deep a skipped value: left to serde, which agrees.
        let many = format!(
            r#"{{"choices":[{}]}}"#,
            [r#"{"text":"t"}"#; MAX_PIECES + 1].join(",")
        );
        assert!(check(many.as_bytes()).is_none());
        let deep = format!(r#"{{"x":{}{}}}"#, "[".repeat(100), "]".repeat(100));
        assert!(check(deep.as_bytes()).is_none());
        let ok = format!(r#"{{"x":{}{}}}"#, "[".repeat(60), "]".repeat(60));
        assert!(check(ok.as_bytes()).is_some());
    }

    // ---- property tests ------------------------------------------------------------------

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            1 => Just(String::new()),
            4 => "[a-z ]{1,8}",
            2 => "[ -~]{0,12}",
            2 => "\\PC{0,8}",
            1 => "[\\u{0}-\\u{7f}]{0,6}",
            1 => any::<String>(),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "choices",
                "usage",
                "error",
                "data",
                "type",
                "delta",
                "output",
                "response",
                "message",
                "text",
                "content",
                "reasoning",
                "reasoning_content",
                "tool_calls",
                "role",
                "index",
                "logprobs",
                "finish_reason",
                "id",
                "model",
            ])
            .prop_map(str::to_string),
            text(),
        ]
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// `good` mostly, sometimes null, rarely any value at all.
    fn mostly(good: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Value> {
        prop_oneof![12 => good, 3 => Just(Value::Null), 1 => any_json()].boxed()
    }

    fn str_value() -> BoxedStrategy<Value> {
        mostly(text().prop_map(Value::String))
    }

    /// An object of known fields (each present with the given probability) and a few extra
    /// members, in random order.
    fn object(known: Vec<(&'static str, f64, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
        let known: Vec<_> = known
            .into_iter()
            .map(|(k, p, v)| prop::option::weighted(p, v).prop_map(move |v| v.map(|v| (k, v))))
            .collect();
        let extra = prop::collection::vec((key(), any_json()), 0..3);
        (known, extra)
            .prop_flat_map(|(known, extra)| {
                let mut members: Vec<(String, Value)> = known
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();
                members.extend(extra);
                Just(members).prop_shuffle()
            })
            .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>()))
            .boxed()
    }

    fn message() -> BoxedStrategy<Value> {
        let tool_calls = prop_oneof![
            3 => Just(Value::Null),
            3 => Just(json!([])),
            1 => any_json(),
            1 => text().prop_map(|t| json!([{"index": 0, "function": {"name": t, "arguments": "{}"}}])),
        ];
        object(vec![
            ("role", 0.3, str_value()),
            ("content", 0.7, str_value()),
            ("reasoning_content", 0.3, str_value()),
            ("reasoning", 0.2, str_value()),
            ("tool_calls", 0.2, tool_calls.boxed()),
        ])
    }

    fn choice() -> BoxedStrategy<Value> {
        object(vec![
            ("index", 0.8, any::<u8>().prop_map(Value::from).boxed()),
            ("delta", 0.7, mostly(message())),
            ("message", 0.2, mostly(message())),
            ("text", 0.3, str_value()),
            ("logprobs", 0.5, mostly(any_json())),
            ("finish_reason", 0.5, str_value()),
        ])
    }

    fn chunk() -> BoxedStrategy<Value> {
        let special = || prop_oneof![3 => Just(Value::Null), 1 => any_json()].boxed();
        let choices = prop::collection::vec(choice(), 0..3).prop_map(Value::Array);
        let mut fields = vec![
            ("id", 0.8, text().prop_map(Value::String).boxed()),
            ("object", 0.5, Just(json!("chat.completion.chunk")).boxed()),
            ("created", 0.5, any::<u32>().prop_map(Value::from).boxed()),
            ("choices", 0.9, mostly(choices)),
        ];
        for k in [
            "usage", "error", "data", "type", "delta", "output", "response",
        ] {
            fields.push((k, 0.08, special()));
        }
        object(fields)
    }

    /// Damage: truncation, deletion, insertion of JSON-significant or invalid bytes,
    /// duplication of a span (trailing data), and splicing a JSON fragment in after a given
    /// kind of byte (duplicate fields, odd numbers, trailing commas, escapes).
    #[derive(Debug, Clone)]
    enum Mutation {
        Truncate(usize),
        Delete(usize),
        Insert(usize, u8),
        Duplicate(usize, usize, usize),
        Splice(u8, usize, &'static str),
    }

    const FRAGMENTS: &[&str] = &[
        r#""content":"d","#,
        r#""content":null,"#,
        r#""reasoning_content":"r","#,
        r#""reasoning":"s","#,
        r#""text":"t","#,
        r#""choices":[],"#,
        r#""choices":null,"#,
        r#""delta":{},"#,
        r#""message":null,"#,
        r#""tool_calls":[],"#,
        r#""usage":null,"#,
        r#""id":0,"#,
        r#""id":01,"#,
        r#""id":-0.5e-1,"#,
        r#""id":1.,"#,
        r#""id":1e,"#,
        r#""x":[1,],"#,
        r#""x":{"a":1,},"#,
        "0",
        "-",
        ".",
        "e",
        "E+",
        ",",
        "]",
        "}",
        r"\u",
        r"\n",
        "\u{1}",
        "\t",
        "null",
    ];

    fn mutation() -> impl Strategy<Value = Mutation> {
        let idx = any::<usize>();
        let byte = prop::sample::select(b"\"\\,:{}[]n0e.- \x01\x0b\x0c\x7f\x80\xc3\xff".to_vec());
        let anchor = prop::sample::select(b"{[:,\"0123456789".to_vec());
        prop_oneof![
            1 => idx.prop_map(Mutation::Truncate),
            1 => idx.prop_map(Mutation::Delete),
            1 => (idx, byte).prop_map(|(i, b)| Mutation::Insert(i, b)),
            1 => (idx, idx, idx).prop_map(|(a, b, c)| Mutation::Duplicate(a, b, c)),
            4 => (anchor, idx, prop::sample::select(FRAGMENTS))
                .prop_map(|(a, i, f)| Mutation::Splice(a, i, f)),
        ]
    }

    fn mutate(mut v: Vec<u8>, m: &Mutation) -> Vec<u8> {
        let n = v.len();
        match *m {
            Mutation::Truncate(i) => v.truncate(i % (n + 1)),
            Mutation::Delete(i) if n > 0 => {
                v.remove(i % n);
            }
            Mutation::Delete(_) => {}
            Mutation::Insert(i, b) => v.insert(i % (n + 1), b),
            Mutation::Duplicate(a, len, at) => {
                let a = a % (n + 1);
                let span = v[a..(a + len % 40).min(n)].to_vec();
                let at = at % (n + 1);
                v.splice(at..at, span);
            }
            Mutation::Splice(anchor, nth, fragment) => {
                let at: Vec<usize> = (0..n).filter(|&i| v[i] == anchor).collect();
                if !at.is_empty() {
                    let i = at[nth % at.len()] + 1;
                    v.splice(i..i, fragment.bytes());
                }
            }
        }
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn skim_agrees_with_serde(c in chunk(), pretty in any::<bool>()) {
            let s = if pretty {
                serde_json::to_string_pretty(&c).unwrap()
            } else {
                serde_json::to_string(&c).unwrap()
            };
            check(s.as_bytes());
        }

        #[test]
        fn skim_agrees_with_serde_on_damaged_input(
            c in chunk(),
            ms in prop::collection::vec(mutation(), 1..3),
        ) {
            let mut bytes = serde_json::to_vec(&c).unwrap();
            for m in &ms {
                bytes = mutate(bytes, m);
            }
            check(&bytes);
        }

        #[test]
        fn find_special_matches_a_naive_scan(
            s in prop::collection::vec(
                prop_oneof![4 => 0x20u8..0x7f, 1 => any::<u8>(), 1 => Just(b'"')],
                0..40,
            ),
        ) {
            for start in 0..=s.len() {
                let naive = (start..s.len())
                    .find(|&i| matches!(s[i], b'"' | b'\\' | 0..=0x1f))
                    .unwrap_or(s.len());
                prop_assert_eq!(find_special(&s, start), naive);
            }
        }

        /// A shape learned from any chunk: the same bytes around any other string, damaged
        /// or not, and any other chunk, read through it equal serde.
        #[test]
        fn skim_in_agrees_with_serde(
            c in chunk(),
            other in chunk(),
            text in prop_oneof![
                3 => "[^\"\\\\\\u{0}-\\u{1f}]{0,12}",
                1 => any::<String>(),
            ],
            ms in prop::collection::vec(mutation(), 0..2),
        ) {
            let bytes = serde_json::to_vec(&c).unwrap();
            let shape = learn(&bytes);
            let mut same = shape.around.clone();
            same.splice(shape.at..shape.at, text.bytes());
            for m in &ms {
                same = mutate(same, m);
            }
            let (_, reused) = check_in(&shape, &same);
            let plain = !text.is_empty() && !text.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20);
            if ms.is_empty() && plain && !shape.around.is_empty() {
                prop_assert!(reused, "{}", String::from_utf8_lossy(&same));
            }
            check_in(&shape, &serde_json::to_vec(&other).unwrap());
        }

        /// Simple chat deltas with plain text always take the fast path.
        #[test]
        fn plain_deltas_take_the_fast_path(
            content in "[^\"\\\\\\u{0}-\\u{1f}]{0,20}",
            reasoning in "[^\"\\\\\\u{0}-\\u{1f}]{0,20}",
            id in any::<String>(),
        ) {
            let c = json!({"id": id, "choices": [{"index": 0, "delta": {
                "content": content, "reasoning_content": reasoning}, "logprobs": null}]});
            let s = serde_json::to_string(&c).unwrap();
            prop_assert!(check(s.as_bytes()).is_some());
        }
    }

    /// JSON-ish soup: the tokens of chunk shapes in any order, so that many inputs are
    /// almost valid (and some valid) chunks.
    fn soup() -> impl Strategy<Value = Vec<u8>> {
        let token = prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            " ",
            "\"choices\"",
            "\"delta\"",
            "\"message\"",
            "\"text\"",
            "\"content\"",
            "\"reasoning\"",
            "\"reasoning_content\"",
            "\"tool_calls\"",
            "\"usage\"",
            "\"id\"",
            "\"x\"",
            "\"\"",
            "\"\\u00e9\"",
            "\"a\\\"b\"",
            "null",
            "true",
            "0",
            "-1.5e3",
            "\"\u{1}\"",
            "\u{ff}",
        ]);
        prop::collection::vec(token, 0..40).prop_map(|t| t.concat().into_bytes())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any bytes at all: no panic on either path, and where skim answers, serde agrees.
        #[test]
        fn skim_agrees_with_serde_on_arbitrary_bytes(
            bytes in prop::collection::vec(any::<u8>(), 0..256),
        ) {
            check(&bytes);
        }

        #[test]
        fn skim_agrees_with_serde_on_json_soup(bytes in soup()) {
            check(&bytes);
        }

        /// The same for a valid chunk with any bytes spliced in somewhere.
        #[test]
        fn skim_agrees_with_serde_with_random_bytes_spliced_in(
            c in chunk(),
            at in any::<usize>(),
            junk in prop::collection::vec(any::<u8>(), 1..8),
        ) {
            let mut bytes = serde_json::to_vec(&c).unwrap();
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, junk);
            check(&bytes);
        }
    }

    /// `cargo test --release -p aiperf --lib skim_speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn skim_speed() {
        use std::hint::black_box;
        use std::time::Instant;
        type Parse = fn(&[u8], &mut String, &mut String) -> bool;
        const N: u32 = 1_000_000;
        // Best of five rounds of N events: other processes on the machine only add time.
        let time = |name: &str, bytes: &[u8], f: Parse| {
            let (mut out, mut reasoning) = (String::with_capacity(64), String::new());
            let mut best = f64::INFINITY;
            for _ in 0..5 {
                let t = Instant::now();
                for _ in 0..N {
                    out.clear();
                    black_box(f(black_box(bytes), &mut out, &mut reasoning));
                }
                best = best.min(t.elapsed().as_nanos() as f64 / f64::from(N));
            }
            println!("{name:>16}: {best:6.1} ns/event ({} bytes)", bytes.len());
            best
        };
        let skim_only: Parse = |b, o, r| skim(b, o, r).is_some();
        let serde: Parse = |b, o, r| parse_serde(b, o, r).is_ok();
        let both: Parse = |b, o, r| super::super::parse_response(b, o, r).is_ok();

        println!("typical vLLM chat chunk (fast path):");
        let bytes = VLLM_CHAT.as_bytes();
        let fast = time("skim", bytes, skim_only);
        let slow = time("serde", bytes, serde);
        time("parse_response", bytes, both);
        println!("  serde / skim = {:.1}x", slow / fast);
        thread_local! {
            static SHAPE: std::cell::RefCell<Shape> = Default::default();
        }
        let shaped: Parse = |b, o, r| SHAPE.with_borrow_mut(|s| skim_in(s, b, o, r).is_some());
        let in_shape = time("skim_in (shape)", bytes, shaped);
        println!("  skim / skim_in = {:.1}x", fast / in_shape);

        // The worst case for the fast path: it walks the whole chunk, then falls back.
        println!("vLLM chunk with continuous usage stats (falls back at the end):");
        let usage = VLLM_CHAT.replace(
            "}]}",
            r#"}],"usage":{"prompt_tokens":20,"total_tokens":25,"completion_tokens":5}}"#,
        );
        let bytes = usage.as_bytes();
        assert!(!skim_only(bytes, &mut String::new(), &mut String::new()));
        let slow = time("serde", bytes, serde);
        let both = time("parse_response", bytes, both);
        println!("  fallback overhead = {:.1} ns", both - slow);
    }
}
