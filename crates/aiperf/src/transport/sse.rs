//! Server-sent-events framing: turns arbitrary reads into complete `data:` payloads.
//!
//! Events can be split across reads and several can arrive in one read, so bytes are buffered
//! until a blank line ends an event. Lines end with `\n`, `\r\n` or a lone `\r` (the SSE
//! spec allows all three), also when a `\r\n` is split across two reads. Only `data:` lines
//! matter to us; `event:` names are kept, `id:`, `retry:` and comments are skipped.
//!
//! The work is linear in the bytes received: the search for a line end resumes where the last
//! one stopped, and consumed bytes are dropped before new ones are appended, so a 60 MB event
//! arriving in 4 KiB reads is scanned once. One event (its data plus the line being received)
//! may hold at most [`MAX_EVENT`] bytes; past that [`SseFramer::next_event`] fails. The framer
//! reuses its buffers, so steady-state framing allocates nothing.

/// Largest SSE event accepted (16 MiB): data lines plus the line still being received.
pub const MAX_EVENT: usize = 16 << 20;

/// An event grew past the framer's limit; the stream cannot be read further.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an SSE event larger than {}", super::size(*limit))]
pub struct EventTooLarge {
    pub limit: usize,
}

/// One event: its data (lines joined with `\n`) and its `event:` name (empty when none).
pub type Event<'a> = (&'a [u8], &'a [u8]);

/// Incremental SSE parser.
#[derive(Debug)]
pub struct SseFramer {
    buf: Vec<u8>,
    /// Start of the unparsed part of `buf` (the start of the line being received).
    pos: usize,
    /// Where the search for the current line's end resumes (`pos <= scan <= buf.len()`).
    scan: usize,
    /// The last line ended with `\r`: a `\n` right after it belongs to that line end.
    after_cr: bool,
    data: Vec<u8>,
    /// The event's data while it is one line: where that line's value lies in `buf`, not
    /// yet copied to `data` (most events are one line; copied only when a second line comes
    /// or `buf` is compacted).
    data_at: Option<(usize, usize)>,
    has_data: bool,
    event_name: Vec<u8>,
    /// The last call returned an event whose name must not leak into the next one.
    returned: bool,
    max_event: usize,
    /// Set once an event grew past `max_event`.
    failed: bool,
    /// Bytes examined by the line-end search (the linear-work test reads it).
    #[cfg(test)]
    scanned: usize,
}

impl Default for SseFramer {
    fn default() -> Self {
        Self::with_max_event(MAX_EVENT)
    }
}

impl SseFramer {
    pub fn new() -> Self {
        Self::default()
    }

    /// A framer whose events may hold at most `max_event` bytes.
    pub fn with_max_event(max_event: usize) -> Self {
        Self {
            buf: Vec::new(),
            pos: 0,
            scan: 0,
            after_cr: false,
            data: Vec::new(),
            data_at: None,
            has_data: false,
            event_name: Vec::new(),
            returned: false,
            max_event,
            failed: false,
            #[cfg(test)]
            scanned: 0,
        }
    }

    /// Feeds bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer to append the next bytes read to (instead of [`Self::push`]: no copy).
    /// With `discard`, what it holds is dropped first (a reader that wants no more events).
    pub fn input(&mut self, discard: bool) -> &mut Vec<u8> {
        if discard {
            (self.pos, self.scan) = (self.buf.len(), self.buf.len());
            self.data_at = None;
        }
        self.compact();
        &mut self.buf
    }

    /// Drops the bytes already consumed: only the line being received remains.
    fn compact(&mut self) {
        if self.pos > 0 {
            self.own_data();
            self.buf.drain(..self.pos);
            self.scan -= self.pos;
            self.pos = 0;
        }
    }

    /// Returns the next complete event's data (lines joined with `\n`), if one is buffered.
    /// The second value is the `event:` name, empty when none was given. Fails once an event
    /// holds more than the framer's limit (and from then on).
    pub fn next_event(&mut self) -> Result<Option<Event<'_>>, EventTooLarge> {
        if self.failed {
            return Err(self.too_large());
        }
        if self.returned {
            self.returned = false;
            self.event_name.clear();
        }
        loop {
            if self.after_cr {
                match self.buf.get(self.pos) {
                    None => return Ok(None),
                    Some(&b) => {
                        self.after_cr = false;
                        if b == b'\n' {
                            self.pos += 1;
                            self.scan = self.scan.max(self.pos);
                        }
                    }
                }
            }
            let Some(i) = memchr::memchr2(b'\n', b'\r', &self.buf[self.scan..]) else {
                #[cfg(test)]
                {
                    self.scanned += self.buf.len() - self.scan;
                }
                self.scan = self.buf.len();
                if self.pending_size() > self.max_event {
                    self.failed = true;
                    return Err(self.too_large());
                }
                return Ok(None);
            };
            #[cfg(test)]
            {
                self.scanned += i + 1;
            }
            let (start, end) = (self.pos, self.scan + i);
            self.after_cr = self.buf[end] == b'\r';
            self.pos = end + 1;
            self.scan = self.pos;
            if start == end {
                if self.has_data {
                    self.has_data = false;
                    self.returned = true;
                    let data = match self.data_at.take() {
                        Some((s, e)) => &self.buf[s..e],
                        None => &self.data,
                    };
                    return Ok(Some((data, &self.event_name)));
                }
                self.event_name.clear();
                continue;
            }
            self.field_line(start, end)?;
        }
    }

    /// Takes in the non-empty line `buf[start..end]`: a `data:` line adds to the event's
    /// data, `event:` names it; anything else is skipped. (Once per line of
    /// [`Self::next_event`]: inlined, allocation-free.)
    #[inline]
    fn field_line(&mut self, start: usize, end: usize) -> Result<(), EventTooLarge> {
        let line = &self.buf[start..end];
        // The value as a range of `buf`.
        let (field, (vs, ve)) = match memchr::memchr(b':', line) {
            Some(c) => {
                let space = usize::from(line.get(c + 1) == Some(&b' '));
                (&line[..c], (start + c + 1 + space, end))
            }
            None => (line, (end, end)),
        };
        match field {
            b"data" => {
                if !self.has_data {
                    self.has_data = true;
                    self.data_at = Some((vs, ve));
                } else {
                    self.own_data();
                    self.data.push(b'\n');
                    self.data.extend_from_slice(&self.buf[vs..ve]);
                }
                if self.data_len() > self.max_event {
                    self.failed = true;
                    return Err(self.too_large());
                }
            }
            b"event" => {
                self.event_name.clear();
                self.event_name.extend_from_slice(&self.buf[vs..ve]);
            }
            // `id:`, `retry:`, `:` comments and unknown fields are ignored.
            _ => {}
        }
        Ok(())
    }

    fn too_large(&self) -> EventTooLarge {
        EventTooLarge {
            limit: self.max_event,
        }
    }

    /// Bytes the current event holds: its data so far and the line being received.
    fn pending_size(&self) -> usize {
        let data = if self.has_data { self.data_len() } else { 0 };
        data + (self.buf.len() - self.pos)
    }

    /// The length of the current event's data (while `has_data`).
    fn data_len(&self) -> usize {
        match self.data_at {
            Some((s, e)) => e - s,
            None => self.data.len(),
        }
    }

    /// Copies a one-line event's data out of `buf` into `data` (before `buf` changes, or a
    /// second line is added).
    fn own_data(&mut self) {
        if let Some((s, e)) = self.data_at.take() {
            self.data.clear();
            self.data.extend_from_slice(&self.buf[s..e]);
        }
    }

    /// Data of an event left unterminated when the stream ended, if any.
    pub fn finish(&mut self) -> Option<&[u8]> {
        self.own_data();
        let rest = &self.buf[self.pos..];
        if let Some(v) = rest.strip_prefix(b"data:") {
            let v = v.strip_prefix(b" ").unwrap_or(v);
            if !self.has_data {
                self.data.clear();
            } else {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(v);
            self.has_data = false;
            self.pos = self.buf.len();
            self.scan = self.pos;
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

    /// Events as `(data, name)`.
    type Owned = Vec<(Vec<u8>, Vec<u8>)>;

    /// Every event available now; `Err` once the framer failed.
    fn drain(f: &mut SseFramer) -> Result<Owned, EventTooLarge> {
        let mut out = Vec::new();
        while let Some((d, name)) = f.next_event()? {
            out.push((d.to_vec(), name.to_vec()));
        }
        Ok(out)
    }

    fn collect(f: &mut SseFramer) -> Vec<String> {
        drain(f)
            .unwrap()
            .into_iter()
            .map(|(d, _)| String::from_utf8(d).unwrap())
            .collect()
    }

    /// Feeds `pieces` in order and returns every event (stopping at a failure).
    fn frame(pieces: &[&[u8]], max_event: usize) -> (Owned, bool) {
        let mut f = SseFramer::with_max_event(max_event);
        let mut events = Vec::new();
        // Fed both ways by turns: `push`, and appended to `input` (the lean client's way).
        for (i, p) in pieces.iter().enumerate() {
            if i % 2 == 0 {
                f.push(p);
            } else {
                f.input(false).extend_from_slice(p);
            }
            match drain(&mut f) {
                Ok(e) => events.extend(e),
                Err(_) => return (events, true),
            }
        }
        (events, false)
    }

    /// The SSE spec's algorithm on a whole stream, written the obvious way: split into lines
    /// at `\r\n`, `\r` or `\n`; only lines ended by a line break count.
    fn reference(stream: &[u8]) -> Owned {
        let mut lines = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < stream.len() {
            match stream[i] {
                b'\n' => {
                    lines.push(&stream[start..i]);
                    start = i + 1;
                }
                b'\r' => {
                    lines.push(&stream[start..i]);
                    if stream.get(i + 1) == Some(&b'\n') {
                        i += 1;
                    }
                    start = i + 1;
                }
                _ => {}
            }
            i += 1;
        }
        let (mut events, mut data, mut name): (Vec<_>, Option<Vec<u8>>, Vec<u8>) =
            (Vec::new(), None, Vec::new());
        for line in lines {
            if line.is_empty() {
                if let Some(d) = data.take() {
                    events.push((d, std::mem::take(&mut name)));
                }
                name.clear();
                continue;
            }
            let (field, value) = match line.iter().position(|&b| b == b':') {
                Some(c) => (
                    &line[..c],
                    line[c + 1..].strip_prefix(b" ").unwrap_or(&line[c + 1..]),
                ),
                None => (line, &b""[..]),
            };
            match field {
                b"data" => match &mut data {
                    Some(d) => {
                        d.push(b'\n');
                        d.extend_from_slice(value);
                    }
                    None => data = Some(value.to_vec()),
                },
                b"event" => name = value.to_vec(),
                _ => {}
            }
        }
        events
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
        let (d, name) = f.next_event().unwrap().unwrap();
        assert_eq!((d, name), (&b"a\nb"[..], &b"delta"[..]));
        assert!(f.next_event().unwrap().is_none());
    }

    #[test]
    fn cr_only_and_mixed_line_endings() {
        let mut f = SseFramer::new();
        f.push(b"data: a\r\rdata: b\r\n\r\ndata: c\n\ndata: d\rdata: e\n\r");
        assert_eq!(collect(&mut f), vec!["a", "b", "c", "d\ne"]);
        assert!(!f.has_partial());
    }

    #[test]
    fn an_event_ending_in_cr_is_delivered_before_the_next_read() {
        // CR-only: the blank line is complete at its `\r`; nothing waits for a `\n`.
        let mut f = SseFramer::new();
        f.push(b"data: x\r\r");
        assert_eq!(collect(&mut f), vec!["x"]);
        // The `\n` of a `\r\n` split across reads is not a second (blank) line.
        f.push(b"\ndata: y\r");
        assert!(collect(&mut f).is_empty());
        f.push(b"\n");
        assert!(collect(&mut f).is_empty(), "\\r|\\n is one line end");
        // The blank line's `\r` completes the event; its `\n` is not waited for.
        f.push(b"\r");
        assert_eq!(collect(&mut f), vec!["y"]);
        f.push(b"\n");
        assert!(collect(&mut f).is_empty());
        assert!(!f.has_partial());
    }

    #[test]
    fn unterminated_tail_is_reported() {
        let mut f = SseFramer::new();
        f.push(b"data: x\n\ndata: partial");
        assert_eq!(collect(&mut f), vec!["x"]);
        assert!(f.has_partial());
        assert_eq!(f.finish(), Some(&b"partial"[..]));
    }

    #[test]
    fn a_field_without_a_colon_has_an_empty_value() {
        let mut f = SseFramer::new();
        f.push(b"data\n\ndata:\ndata\n\n");
        assert_eq!(collect(&mut f), vec!["", "\n"]);
    }

    /// A 50 MB event arriving in 4 KiB reads is framed with each byte scanned once (the old
    /// framer rescanned the whole pending line on every read: quadratic).
    #[test]
    fn a_huge_event_in_small_reads_is_framed_in_linear_work() {
        let payload = vec![b'x'; 50_000_000];
        let mut stream = b"data: ".to_vec();
        stream.extend_from_slice(&payload);
        stream.extend_from_slice(b"\n\ndata: [DONE]\n\n");
        let mut f = SseFramer::with_max_event(64 << 20);
        let mut events = Vec::new();
        for piece in stream.chunks(4096) {
            f.push(piece);
            while let Some((d, _)) = f.next_event().unwrap() {
                events.push(d.len());
            }
        }
        assert_eq!(events, [payload.len(), 6]);
        assert!(
            f.scanned <= stream.len(),
            "scanned {} bytes for a {}-byte stream",
            f.scanned,
            stream.len()
        );
    }

    #[test]
    fn an_event_over_the_limit_fails_the_framer() {
        // One endless line: fails once the pending line passes the limit, in linear work.
        let mut f = SseFramer::with_max_event(1 << 20);
        f.push(b"data: ");
        let mut failed_at = None;
        for i in 0..1000 {
            f.push(&[b'x'; 4096]);
            if let Err(e) = f.next_event() {
                assert_eq!(e, EventTooLarge { limit: 1 << 20 });
                failed_at = Some(i);
                break;
            }
        }
        // 6 + 256 × 4096 bytes pass 1 MiB: the 256th read (index 255).
        assert_eq!(failed_at, Some(255), "fails on the read that passes 1 MiB");
        assert!(f.scanned <= (256 * 4096) + 6);
        assert!(f.next_event().is_err(), "failed stays failed");
        // Many short data lines of one event: the same limit.
        let mut f = SseFramer::with_max_event(100);
        f.push(&b"data: 0123456789\n".repeat(10));
        assert!(f.next_event().is_err());
        // An event of exactly the limit is fine.
        let mut f = SseFramer::with_max_event(10);
        f.push(b"data: 0123456789\n\n");
        assert_eq!(collect(&mut f), vec!["0123456789"]);
        // The default is 16 MiB, and says so.
        assert_eq!(SseFramer::new().max_event, MAX_EVENT);
        assert_eq!(
            EventTooLarge { limit: MAX_EVENT }.to_string(),
            "an SSE event larger than 16 MiB"
        );
    }

    /// Bytes that look like SSE often: field names, separators and every line ending.
    fn sse_bytes() -> impl Strategy<Value = Vec<u8>> {
        let token = prop_oneof![
            4 => prop::sample::select(vec![
                &b"data: "[..], b"data:", b"data", b"event: ", b"id: 1", b": c", b"retry: 5",
                b"{\"a\":1}", b"[DONE]", b"x", b" ", b":",
            ])
            .prop_map(<[u8]>::to_vec),
            4 => prop::sample::select(vec![&b"\n"[..], b"\r", b"\r\n", b"\n\n", b"\r\r", b"\r\n\r\n"])
                .prop_map(<[u8]>::to_vec),
            1 => prop::collection::vec(any::<u8>(), 0..4),
        ];
        prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
    }

    #[test]
    fn input_discards_what_a_finished_reader_does_not_want() {
        let mut f = SseFramer::new();
        f.input(false).extend_from_slice(b"data: a\n\ndata: b");
        assert_eq!(collect(&mut f), vec!["a"]);
        // The rest of the stream is not wanted: dropped, and nothing comes of it.
        f.input(true).extend_from_slice(b"\n\n");
        assert_eq!(collect(&mut f), Vec::<String>::new());
        assert!(!f.has_partial());
        f.input(false).extend_from_slice(b"data: c\n\n");
        assert_eq!(collect(&mut f), vec!["c"]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// However the byte stream is cut into reads, the same events come out.
        #[test]
        fn framing_is_independent_of_read_boundaries(
            events in prop::collection::vec("[a-z{}\":0-9 ]{0,20}", 1..8),
            cuts in prop::collection::vec(0usize..200, 0..10),
            ending in prop::sample::select(vec!["\n", "\r", "\r\n"]),
        ) {
            let mut stream = Vec::new();
            for e in &events {
                stream.extend_from_slice(format!("data: {e}{ending}{ending}").as_bytes());
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

        /// Any bytes: no panic, the spec's events (the reference), whatever the reads.
        #[test]
        fn any_bytes_frame_like_the_reference_under_random_splits(
            stream in sse_bytes(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort();
            cuts.push(stream.len());
            let mut pieces = Vec::new();
            let mut prev = 0;
            for c in cuts {
                pieces.push(&stream[prev..c]);
                prev = c;
            }
            let (got, failed) = frame(&pieces, MAX_EVENT);
            prop_assert!(!failed);
            prop_assert_eq!(got, reference(&stream));
        }

        /// Cut at every single position (so inside every `\r\n`): the same events as in one
        /// read.
        #[test]
        fn any_bytes_frame_the_same_cut_at_every_position(stream in sse_bytes()) {
            let whole = frame(&[&stream], MAX_EVENT);
            for cut in 0..=stream.len() {
                let (a, b) = stream.split_at(cut);
                prop_assert_eq!(&frame(&[a, b], MAX_EVENT), &whole, "cut at {}", cut);
            }
            let bytes: Vec<&[u8]> = stream.chunks(1).collect();
            prop_assert_eq!(&frame(&bytes, MAX_EVENT), &whole, "one byte per read");
        }

        /// Arbitrary bytes and a small limit: never a panic, and a failure is final.
        #[test]
        fn arbitrary_bytes_never_panic(
            stream in prop::collection::vec(any::<u8>(), 0..600),
            limit in 1usize..64,
            cuts in prop::collection::vec(any::<usize>(), 0..6),
        ) {
            let mut f = SseFramer::with_max_event(limit);
            let mut prev = 0;
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort();
            cuts.push(stream.len());
            let mut failed = false;
            for c in cuts {
                f.push(&stream[prev..c]);
                prev = c;
                loop {
                    match f.next_event() {
                        Ok(Some((d, _))) => prop_assert!(d.len() <= limit),
                        Ok(None) => break,
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                if failed {
                    prop_assert!(f.next_event().is_err());
                }
            }
            let _ = f.has_partial();
            let _ = f.finish();
        }
    }
}
