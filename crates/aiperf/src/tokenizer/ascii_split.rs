//! o200k_base's pretokenizer for ASCII text, by hand.
//!
//! Output tokens are counted by cutting each response's text into pieces and counting each
//! piece (remembered per thread); the cutting, a regular-expression search per piece, was
//! most of that (about 5 % of a c=64 run's CPU). Generated text is nearly always ASCII, and
//! over ASCII the pattern ([`super::early`]'s `o200k_patterns`) comes down to a few
//! character classes, which this walks directly. Any other text goes to the regex.
//!
//! Over ASCII: `\p{L}` is `A-Za-z` (`\p{Lu}` `A-Z`, `\p{Ll}` `a-z`; no ASCII character is
//! `Lt`, `Lm`, `Lo` or `M`), `\p{N}` is `0-9`, and `\s` (Unicode White_Space) is tab, LF,
//! VT, FF, CR and space. The alternatives are tried in order at each piece's start (the
//! regex's leftmost-first preference), and [`Pieces`] takes the same decisions; a test
//! compares it with the regex on every ASCII string of up to three characters and on
//! random strings.

/// What a character is to the pattern.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Upper,
    Lower,
    Digit,
    /// `\r` or `\n`.
    Newline,
    /// Any other whitespace: tab, VT, FF, space.
    Space,
    /// Anything else: punctuation, symbols, control characters.
    Other,
}

const fn class(b: u8) -> Class {
    match b {
        b'A'..=b'Z' => Class::Upper,
        b'a'..=b'z' => Class::Lower,
        b'0'..=b'9' => Class::Digit,
        b'\r' | b'\n' => Class::Newline,
        b'\t' | 0x0b | 0x0c | b' ' => Class::Space,
        _ => Class::Other,
    }
}

static CLASS: [Class; 128] = {
    let mut t = [Class::Other; 128];
    let mut i = 0;
    while i < 128 {
        t[i] = class(i as u8);
        i += 1;
    }
    t
};

/// The pieces of an ASCII text, in order.
pub(super) struct Pieces<'a> {
    text: &'a str,
    at: usize,
}

/// `text`'s pieces when it is ASCII (else `None`: the regex cuts it).
pub(super) fn pieces(text: &str) -> Option<Pieces<'_>> {
    text.is_ascii().then_some(Pieces { text, at: 0 })
}

impl<'a> Pieces<'a> {
    #[inline]
    fn class(&self, i: usize) -> Option<Class> {
        // ASCII only (checked in `pieces`), so every byte indexes the table.
        self.text
            .as_bytes()
            .get(i)
            .map(|&b| CLASS[usize::from(b & 0x7f)])
    }

    /// The end of the run of characters from `i` that `f` accepts.
    #[inline]
    fn run(&self, mut i: usize, f: impl Fn(Class) -> bool) -> usize {
        while self.class(i).is_some_and(&f) {
            i += 1;
        }
        i
    }

    /// The end of the piece that starts at `i` (`i` < the text's length).
    fn end(&self, i: usize) -> usize {
        let b = self.text.as_bytes();
        let c = CLASS[usize::from(b[i] & 0x7f)];
        let next = self.class(i + 1);
        let letter = |c: Class| matches!(c, Class::Upper | Class::Lower);
        // `[^\r\n\p{L}\p{N}]?[Lu]*[Ll]+('s|...)?`, then `[^\r\n\p{L}\p{N}]?[Lu]+[Ll]*(...)?`:
        // letters, after at most one character that is no letter, digit or newline. Both
        // cover a letter run as upper-case letters then lower-case ones.
        let letters_at = if letter(c) {
            Some(i)
        } else if matches!(c, Class::Space | Class::Other) && next.is_some_and(letter) {
            Some(i + 1)
        } else {
            None
        };
        if let Some(j) = letters_at {
            let j = self.run(j, |c| c == Class::Upper);
            let j = self.run(j, |c| c == Class::Lower);
            return j + contraction(&b[j..]);
        }
        match c {
            // `\p{N}{1,3}`
            Class::Digit => self.run(i, |c| c == Class::Digit).min(i + 3),
            // ` ?[^\s\p{L}\p{N}]+[\r\n/]*`
            Class::Other => self.symbols(i),
            _ if b[i] == b' ' && next == Some(Class::Other) => self.symbols(i + 1),
            // Whitespace: `\s*[\r\n]+` (to the last newline of the run), `\s+$`, then the
            // look-ahead pattern `\s+\s` without its last character, then `\s+`.
            _ => {
                let end = self.run(i, |c| matches!(c, Class::Newline | Class::Space));
                if let Some(k) = b[i..end].iter().rposition(|&b| b == b'\r' || b == b'\n') {
                    i + k + 1
                } else if end == b.len() || end - i == 1 {
                    end
                } else {
                    end - 1
                }
            }
        }
    }

    /// `[^\s\p{L}\p{N}]+[\r\n/]*` from `i`.
    fn symbols(&self, i: usize) -> usize {
        let j = self.run(i, |c| c == Class::Other);
        let b = self.text.as_bytes();
        let mut k = j;
        while matches!(b.get(k), Some(b'\r' | b'\n' | b'/')) {
            k += 1;
        }
        k
    }
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)?` at the start of `b`: how many bytes it takes.
#[inline]
fn contraction(b: &[u8]) -> usize {
    let [b'\'', x, rest @ ..] = b else {
        return 0;
    };
    match x.to_ascii_lowercase() {
        b's' | b't' | b'm' | b'd' => 2,
        c @ (b'r' | b'v' | b'l') => {
            let want = if c == b'l' { b'l' } else { b'e' };
            match rest.first() {
                Some(y) if y.to_ascii_lowercase() == want => 3,
                _ => 0,
            }
        }
        _ => 0,
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        if self.at >= self.text.len() {
            return None;
        }
        let start = self.at;
        self.at = self.end(start);
        // Every end is past its start and on a character boundary (ASCII).
        self.text.get(start..self.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn regex_pieces(text: &str) -> Vec<String> {
        thread_local! {
            static SPLITTER: bpe_openai::Tokenizer = super::super::early::o200k_splitter();
        }
        SPLITTER.with(|s| s.split(text).map(str::to_string).collect())
    }

    fn check(text: &str) {
        let fast: Vec<String> = pieces(text).expect("ASCII").map(str::to_string).collect();
        assert_eq!(fast, regex_pieces(text), "pieces of {text:?}");
    }

    #[test]
    fn cuts_every_ascii_string_of_up_to_three_characters_as_the_regex_does() {
        let all: Vec<char> = (0u8..128).map(char::from).collect();
        let mut s = String::new();
        for &a in &all {
            for &b in &all {
                s.clear();
                s.extend([a, b]);
                check(&s);
            }
        }
        // Three characters from a set with one of each class and the contraction letters.
        let set: Vec<char> = "aZs't0 \t\n\r\x0b!/Ler".chars().collect();
        for &a in &set {
            for &b in &set {
                for &c in &set {
                    s.clear();
                    s.extend([a, b, c]);
                    check(&s);
                }
            }
        }
    }

    #[test]
    fn cuts_prose_code_and_the_corpus_as_the_regex_does() {
        for text in [
            "Hello, world! It's 2024; we've 1234567 tokens.\n\n  Indented\tcode /* x */ // y",
            "DON'T SHOUT. I'LL Re-Read 'em: ABCdef GHi jKL'S x'RE y'Ve\r\n\r\n   \n  end   ",
            "a  b   c \n d\t\t\ne  \n\n",
            "   ",
            "\n",
            " !!\n/x //\r\n",
            crate::dataset::CORPUS,
        ] {
            check(text);
        }
        assert!(pieces("naïve").is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn cuts_random_ascii_as_the_regex_does(
            parts in prop::collection::vec(
                prop_oneof![
                    3 => "[a-z]{1,6}",
                    1 => "[A-Z]{1,4}",
                    1 => "[0-9]{1,5}",
                    2 => prop::sample::select(vec![" ", "  ", "\n", "\r\n", "\t", " \n ", "\x0b"])
                        .prop_map(str::to_string),
                    1 => prop::sample::select(vec!["'", "'s", "'LL", "'re", "'Ve", "'d", "'x"])
                        .prop_map(str::to_string),
                    1 => "[!-/:-@\\[-`{-~]{1,3}",
                    1 => "[\\x00-\\x7f]{1,4}",
                ],
                0..24,
            ),
        ) {
            check(&parts.concat());
        }
    }
}
