//! Server-sent-events framing: turns arbitrary reads into complete `data:` payloads.
//!
//! Events can be split across reads and several can arrive in one read, so bytes are buffered
//! until a blank line ends an event. Only `data:` lines matter to us; `event:`, `id:` and
//! comments are skipped. The framer reuses its buffers, so steady-state framing allocates
//! nothing.

/// Incremental SSE parser.
#[derive(Debug, Default)]
pub struct SseFramer {
    buf: Vec<u8>,
    /// Start of the unparsed part of `buf`.
    pos: usize,
    data: Vec<u8>,
    has_data: bool,
    event_name: Vec<u8>,
    /// The last call returned an event whose name must not leak into the next one.
    returned: bool,
}

impl SseFramer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 {
            // Only an unterminated tail remains before `pos`'s end; keep just that.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Returns the next complete event's data (lines joined with `\n`), if one is buffered.
    /// The second value is the `event:` name, empty when none was given.
    pub fn next_event(&mut self) -> Option<(&[u8], &[u8])> {
        if self.returned {
            self.returned = false;
            self.event_name.clear();
        }
        loop {
            let rest = &self.buf[self.pos..];
            let nl = memchr::memchr(b'\n', rest)?;
            let mut line = &rest[..nl];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line_start = self.pos;
            self.pos += nl + 1;
            if line.is_empty() {
                if self.has_data {
                    self.has_data = false;
                    self.returned = true;
                    return Some((&self.data, &self.event_name));
                }
                self.event_name.clear();
                continue;
            }
            let line = &self.buf[line_start..line_start + line.len()];
            if let Some(v) = line.strip_prefix(b"data:") {
                let v = v.strip_prefix(b" ").unwrap_or(v);
                if !self.has_data {
                    self.data.clear();
                    self.has_data = true;
                } else {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(v);
            } else if let Some(v) = line.strip_prefix(b"event:") {
                self.event_name.clear();
                self.event_name
                    .extend_from_slice(v.strip_prefix(b" ").unwrap_or(v));
            }
            // `id:`, `retry:` and `:` comments are ignored.
        }
    }

    /// Data of an event left unterminated when the stream ended, if any.
    pub fn finish(&mut self) -> Option<&[u8]> {
        let rest = &self.buf[self.pos..];
        let trimmed = rest.strip_suffix(b"\r").unwrap_or(rest);
        if let Some(v) = trimmed.strip_prefix(b"data:") {
            let v = v.strip_prefix(b" ").unwrap_or(v);
            if !self.has_data {
                self.data.clear();
            } else {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(v);
            self.has_data = false;
            self.pos = self.buf.len();
            return Some(&self.data);
        }
        if self.has_data {
            self.has_data = false;
            return Some(&self.data);
        }
        None
    }

    /// Whether undelivered bytes remain (a stream cut mid-event).
    pub fn has_partial(&self) -> bool {
        self.has_data
            || self.buf[self.pos..]
                .iter()
                .any(|b| !b.is_ascii_whitespace())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn collect(f: &mut SseFramer) -> Vec<String> {
        let mut out = Vec::new();
        while let Some((d, _)) = f.next_event() {
            out.push(String::from_utf8(d.to_vec()).unwrap());
        }
        out
    }

    #[test]
    fn several_events_in_one_read() {
        let mut f = SseFramer::new();
        f.push(b"data: {\"a\":1}\n\ndata: {\"a\":2}\n\ndata: [DONE]\n\n");
        assert_eq!(collect(&mut f), vec!["{\"a\":1}", "{\"a\":2}", "[DONE]"]);
        assert!(!f.has_partial());
    }

    #[test]
    fn event_split_across_reads() {
        let mut f = SseFramer::new();
        f.push(b"da");
        assert!(collect(&mut f).is_empty());
        f.push(b"ta: hel");
        assert!(collect(&mut f).is_empty());
        f.push(b"lo\r\n");
        assert!(collect(&mut f).is_empty());
        f.push(b"\r\n");
        assert_eq!(collect(&mut f), vec!["hello"]);
    }

    #[test]
    fn comments_event_names_and_multiline_data() {
        let mut f = SseFramer::new();
        f.push(b": keepalive\n\nevent: delta\nid: 3\ndata: a\ndata: b\n\n");
        let (d, name) = f.next_event().unwrap();
        assert_eq!((d, name), (&b"a\nb"[..], &b"delta"[..]));
        assert!(f.next_event().is_none());
    }

    #[test]
    fn unterminated_tail_is_reported() {
        let mut f = SseFramer::new();
        f.push(b"data: x\n\ndata: partial");
        assert_eq!(collect(&mut f), vec!["x"]);
        assert!(f.has_partial());
        assert_eq!(f.finish(), Some(&b"partial"[..]));
    }

    proptest! {
        /// However the byte stream is cut into reads, the same events come out.
        #[test]
        fn framing_is_independent_of_read_boundaries(
            events in prop::collection::vec("[a-z{}\":0-9 ]{0,20}", 1..8),
            cuts in prop::collection::vec(0usize..200, 0..10),
        ) {
            let mut stream = Vec::new();
            for e in &events {
                stream.extend_from_slice(format!("data: {e}\n\n").as_bytes());
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort();
            cuts.push(stream.len());
            let mut f = SseFramer::new();
            let mut got = Vec::new();
            let mut prev = 0;
            for c in cuts {
                f.push(&stream[prev..c]);
                prev = c;
                got.extend(collect(&mut f));
            }
            prop_assert_eq!(got, events);
        }
    }
}
