//! The one line framer of every source (replay, stdin, tail, Kafka): splits bytes into lines
//! with `memchr`. Owns the read buffers, the roll-over of a partial line between reads and the
//! line-length bound. Never allocates or zeroes memory per read or per line, and never
//! interprets line content (a trailing `\r` is left for the parser).
//!
//! # The length bound
//! No line is skipped for its length: a line longer than `max_line_len` is handed out once as
//! [`Frame::Truncated`] holding its first `max_line_len` bytes (the head, where the fields a
//! detector judges are), and the rest of it, up to its `\n`, is dropped as it is read. Memory
//! stays bounded by the cap whatever the line's length. The bound counts every byte before the
//! `\n`, a `\r` included. No source hands the parser a line over the bound any more, so
//! `lines_skipped_total{reason="too_long"}` only moves for a line given to the parser directly.
//!
//! # Buffers
//! [`LineChunks`] reads into a buffer allocated (and zeroed) once: its length only grows, each
//! read goes into its initialized spare tail, and the partial line left at its end is rolled
//! to the front of the next buffer (ripgrep's `LineBuffer` is the model). Full buffers are
//! handed out as [`Chunk`]s of whole lines and recycled, so parallel parsing gets whole lines
//! without a copy. [`Framer`] is the bound and the drop state alone, for callers that own their
//! bytes (the tailer's `pread` buffer, a Kafka payload).

use std::io::{self, Read};

/// What the framer hands out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line without its `\n`, at most `max_line_len` bytes.
    Line(&'a [u8]),
    /// The first `max_line_len` bytes of a longer line; the rest of that line is dropped.
    Truncated(&'a [u8]),
}

/// A line as the bound lets it out: whole, or its head.
fn bounded(line: &[u8], max_line_len: usize) -> Frame<'_> {
    if line.len() > max_line_len {
        Frame::Truncated(&line[..max_line_len])
    } else {
        Frame::Line(line)
    }
}

/// How far [`Framer::frame`] got in the bytes it was given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Framed {
    /// Bytes done with: the caller presents the rest (a partial line of at most
    /// `max_line_len` bytes) again, followed by what comes next.
    pub consumed: usize,
    /// Bytes up to and including the last `\n` seen (0 if none): where a whole line ends, the
    /// position a checkpoint may point to.
    pub lines_end: usize,
}

/// The length bound and the state of one stream: whether a truncated line's rest is being
/// dropped. Small and `Copy`, so a tailer keeps one per followed file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framer {
    max_line_len: usize,
    /// Inside a truncated line: bytes are dropped up to the next `\n`.
    dropping: bool,
}

impl Framer {
    /// A framer for lines of at most `max_line_len` bytes (at least 1).
    pub fn new(max_line_len: usize) -> Framer {
        Framer { max_line_len: max_line_len.max(1), dropping: false }
    }

    pub fn max_line_len(&self) -> usize {
        self.max_line_len
    }

    /// A truncated line's head was handed out and its `\n` was not seen yet.
    pub fn is_dropping(&self) -> bool {
        self.dropping
    }

    /// Frames `data`, the bytes that follow what was consumed before: every line ending in it
    /// goes to `on_frame`; so does its last line without a `\n` when `end_of_input`, or when
    /// it is already over the bound (then as its head, and the rest of it is dropped by later
    /// calls). The state after `end_of_input` is that of a fresh framer.
    pub fn frame(&mut self, data: &[u8], end_of_input: bool, mut on_frame: impl FnMut(Frame<'_>)) -> Framed {
        let mut start = 0;
        if self.dropping {
            match memchr::memchr(b'\n', data) {
                Some(nl) => {
                    self.dropping = false;
                    start = nl + 1;
                }
                None => {
                    self.dropping = !end_of_input;
                    return Framed { consumed: data.len(), lines_end: 0 };
                }
            }
        }
        let from = start;
        for nl in memchr::memchr_iter(b'\n', &data[from..]) {
            let end = from + nl;
            on_frame(bounded(&data[start..end], self.max_line_len));
            start = end + 1;
        }
        let rest = &data[start..];
        if rest.len() > self.max_line_len {
            on_frame(Frame::Truncated(&rest[..self.max_line_len]));
            self.dropping = !end_of_input;
            return Framed { consumed: data.len(), lines_end: start };
        }
        if end_of_input {
            if !rest.is_empty() {
                on_frame(Frame::Line(rest));
            }
            return Framed { consumed: data.len(), lines_end: start };
        }
        Framed { consumed: start, lines_end: start }
    }
}

/// Frames a complete input held in memory (a Kafka payload): every line, the last one without
/// `\n` included, bounded like any other.
pub fn frame_lines(data: &[u8], max_line_len: usize, on_frame: impl FnMut(Frame<'_>)) {
    Framer::new(max_line_len).frame(data, true, on_frame);
}

/// Whole lines read by [`LineChunks`], handed to a parser (possibly on another thread) and
/// then back to [`LineChunks::next_chunk`] for reuse.
#[derive(Debug, Default)]
pub struct Chunk {
    /// Its length only grows: bytes past `len` are stale, never zeroed again.
    buf: Vec<u8>,
    /// Bytes of whole lines at the front of `buf`.
    len: usize,
    /// The last line is the head of a truncated line (its `\n` was written by the framer in
    /// place of the first dropped byte).
    ends_with_head: bool,
    max_line_len: usize,
    /// A window of a mapped file and where the chunk's bytes start in it, in place of `buf`
    /// ([`MappedChunks`](super::mapped::MappedChunks)).
    mapped: Option<(memmap2::Mmap, usize)>,
    /// The chunk is the head of one over-long line (a mapped window holding no `\n`).
    head_only: bool,
}

impl Chunk {
    /// The bytes of its lines (each ends with `\n`, except the input's last line when it has
    /// none).
    pub fn bytes(&self) -> &[u8] {
        match &self.mapped {
            Some((map, start)) => &map[*start..*start + self.len],
            None => &self.buf[..self.len],
        }
    }

    /// Makes the chunk `len` bytes of `map` from `start`; `head_only` when they are the head
    /// of one line over the bound.
    pub(super) fn set_mapped(
        &mut self,
        map: memmap2::Mmap,
        start: usize,
        len: usize,
        head_only: bool,
        max_line_len: usize,
    ) {
        self.mapped = Some((map, start));
        self.max_line_len = max_line_len;
        self.len = len;
        self.head_only = head_only;
        self.ends_with_head = false;
    }

    /// Hands out every line of the chunk, in order.
    pub fn frames(&self, mut on_frame: impl FnMut(Frame<'_>)) {
        let lines = self.bytes();
        if self.head_only {
            on_frame(Frame::Truncated(lines));
            return;
        }
        if !self.ends_with_head {
            frame_lines(lines, self.max_line_len, on_frame);
            return;
        }
        // `head\n` closes the chunk.
        let head_start = lines.len() - 1 - self.max_line_len;
        frame_lines(&lines[..head_start], self.max_line_len, &mut on_frame);
        on_frame(Frame::Truncated(&lines[head_start..lines.len() - 1]));
    }
}

/// Where [`Chunk`]s of whole lines come from: a stream read into buffers ([`LineChunks`]) or
/// a mapped file ([`MappedChunks`](super::mapped::MappedChunks)).
pub trait ChunkSource {
    /// Fills `chunk` with the next whole lines; `false` at the end of the input. A read error
    /// comes after the lines read before it.
    fn next_chunk(&mut self, chunk: &mut Chunk) -> io::Result<bool>;
}

/// Reads a stream as [`Chunk`]s of whole lines, `chunk_size` bytes at a time: a line is never
/// split between chunks, a finished input's last line is complete without its `\n`, and a line
/// over the bound is cut to its head (see the module docs). The one implementation of
/// roll-over, used by [`for_each_line`] and by parallel parsing, which hands chunks to threads.
pub struct LineChunks<R> {
    reader: R,
    framer: Framer,
    chunk_size: usize,
    /// The buffer being filled, `chunk_size` bytes once allocated: input not handed out yet is
    /// `buf[..filled]` (after a roll-over, a partial line at the front).
    buf: Vec<u8>,
    filled: usize,
    done: bool,
    /// A read error held back until the whole lines read before it are handed out.
    error: Option<io::Error>,
    /// Raw bytes read so far.
    pub bytes_read: u64,
}

impl<R: Read> LineChunks<R> {
    /// `chunk_size` is raised to hold a line of `max_line_len` bytes and its `\n`.
    pub fn new(reader: R, max_line_len: usize, chunk_size: usize) -> Self {
        let framer = Framer::new(max_line_len);
        LineChunks {
            reader,
            framer,
            chunk_size: chunk_size.max(framer.max_line_len + 1).max(4096),
            buf: Vec::new(),
            filled: 0,
            done: false,
            error: None,
            bytes_read: 0,
        }
    }

    /// Fills `chunk` (its buffer is swapped for the one read into, so hand back chunks already
    /// used) with whole lines. Returns `false` at the end of the input; a read error comes
    /// after the lines read before it.
    pub fn next_chunk(&mut self, chunk: &mut Chunk) -> io::Result<bool> {
        ChunkSource::next_chunk(self, chunk)
    }
}

impl<R: Read> ChunkSource for LineChunks<R> {
    fn next_chunk(&mut self, chunk: &mut Chunk) -> io::Result<bool> {
        let max = self.framer.max_line_len;
        loop {
            if self.done {
                if self.filled > 0 {
                    // The input's last line, without `\n` (a longer one is cut by the chunk).
                    let len = std::mem::take(&mut self.filled);
                    self.hand_out(chunk, len, 0, false);
                    return Ok(true);
                }
                return match self.error.take() {
                    Some(e) => Err(e),
                    None => Ok(false),
                };
            }
            if self.buf.len() < self.chunk_size {
                self.buf.resize(self.chunk_size, 0);
            }
            let read = loop {
                match self.reader.read(&mut self.buf[self.filled..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            let mut n = match read {
                Ok(0) => {
                    self.done = true;
                    self.framer.dropping = false;
                    continue;
                }
                Ok(n) => n,
                Err(e) => {
                    self.error = Some(e);
                    self.done = true;
                    self.framer.dropping = false;
                    continue;
                }
            };
            self.bytes_read += n as u64;
            if self.framer.dropping {
                // Only whole buffers are handed out, so a dropped rest starts at the front.
                debug_assert_eq!(self.filled, 0);
                match memchr::memchr(b'\n', &self.buf[..n]) {
                    None => continue,
                    Some(nl) => {
                        self.framer.dropping = false;
                        self.buf.copy_within(nl + 1..n, 0);
                        n -= nl + 1;
                    }
                }
            }
            self.filled += n;
            if self.filled < self.chunk_size {
                continue;
            }
            let last_start = memchr::memrchr(b'\n', &self.buf[..self.filled]).map_or(0, |nl| nl + 1);
            if self.filled - last_start > max {
                // The last line is already over the bound: its head closes the chunk, the
                // byte after it becomes its `\n`, everything after is dropped.
                let head_end = last_start + max;
                self.buf[head_end] = b'\n';
                self.framer.dropping = true;
                self.filled = 0;
                self.hand_out(chunk, head_end + 1, 0, true);
            } else {
                let carry = self.filled - last_start;
                self.filled = carry;
                self.hand_out(chunk, last_start, carry, false);
            }
            return Ok(true);
        }
    }
}

impl<R: Read> LineChunks<R> {
    /// Gives `buf[..len]` to `chunk` and takes its buffer in exchange, with the `carry` bytes
    /// after `len` rolled to its front.
    fn hand_out(&mut self, chunk: &mut Chunk, len: usize, carry: usize, ends_with_head: bool) {
        chunk.mapped = None;
        chunk.head_only = false;
        std::mem::swap(&mut self.buf, &mut chunk.buf);
        if self.buf.len() < self.chunk_size {
            self.buf.resize(self.chunk_size, 0);
        }
        self.buf[..carry].copy_from_slice(&chunk.buf[len..len + carry]);
        chunk.len = len;
        chunk.ends_with_head = ends_with_head;
        chunk.max_line_len = self.framer.max_line_len;
    }
}

/// Reads `reader` to its end, calling `on_frame` for every line. Returns the bytes read; on
/// a read error, lines before it were already handed out.
pub fn for_each_line<R: Read>(
    reader: R,
    max_line_len: usize,
    chunk_size: usize,
    mut on_frame: impl FnMut(Frame<'_>),
) -> io::Result<u64> {
    let mut chunks = LineChunks::new(reader, max_line_len, chunk_size);
    let mut chunk = Chunk::default();
    while chunks.next_chunk(&mut chunk)? {
        chunk.frames(&mut on_frame);
    }
    Ok(chunks.bytes_read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A reader that returns at most `step` bytes per read, to cross buffer boundaries often.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }
    impl Read for Trickle<'_> {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            let n = self.data.len().min(b.len()).min(self.step);
            b[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn show(f: Frame<'_>) -> String {
        match f {
            Frame::Line(l) => String::from_utf8_lossy(l).into_owned(),
            Frame::Truncated(h) => format!("<cut>{}", String::from_utf8_lossy(h)),
        }
    }

    fn frames(input: &[u8], max: usize, chunk: usize) -> Vec<String> {
        let mut out = Vec::new();
        for_each_line(Trickle { data: input, step: 7 }, max, chunk, |f| out.push(show(f))).unwrap();
        out
    }

    /// What the framer must give: `split(b'\n')` with the cap applied (no empty last line).
    fn expected(input: &[u8], max: usize) -> Vec<String> {
        let mut parts: Vec<&[u8]> = input.split(|b| *b == b'\n').collect();
        if parts.last().is_some_and(|p| p.is_empty()) {
            parts.pop();
        }
        parts.into_iter().map(|l| show(bounded(l, max))).collect()
    }

    #[test]
    fn lines_across_reads_and_a_final_line_without_newline() {
        assert_eq!(frames(b"abc\ndef\r\n\nlast", 100, 4096), ["abc", "def\r", "", "last"]);
    }

    #[test]
    fn crlf_lines_keep_their_cr_and_it_counts_toward_the_bound() {
        let at_bound = "y".repeat(19);
        let input = format!("a\r\n{at_bound}\r\n{at_bound}z\r\nb\r\n");
        let cut = format!("<cut>{at_bound}z");
        assert_eq!(frames(input.as_bytes(), 20, 4096), ["a\r".to_string(), format!("{at_bound}\r"), cut, "b\r".into()]);
    }

    #[test]
    fn over_long_lines_give_their_head_once_and_reading_continues() {
        let long = "x".repeat(50);
        let input = format!("ok1\n{long}\nok2\n{long}{long}\nok3\n{long}");
        let head = format!("<cut>{}", "x".repeat(20));
        assert_eq!(frames(input.as_bytes(), 20, 4096), ["ok1", &head, "ok2", &head, "ok3", &head]);
    }

    #[test]
    fn truncated_head_is_delivered_once_across_chunk_boundaries() {
        // Chunks are at least 4096 bytes: lines of 10 000 bytes span several of them, and one
        // ends exactly where a chunk does.
        let long = "y".repeat(10_000);
        let head = format!("<cut>{}", "y".repeat(5000));
        let input = format!("a\n{long}\nb\n{long}");
        assert_eq!(frames(input.as_bytes(), 5000, 4096), ["a", &head, "b", &head]);
        let to_boundary = "z".repeat(4096 * 3 - 2);
        let input = format!("a\n{to_boundary}\nc\n");
        assert_eq!(
            frames(input.as_bytes(), 5000, 4096),
            ["a".to_string(), format!("<cut>{}", "z".repeat(5000)), "c".into()]
        );
    }

    #[test]
    fn exact_bound_is_a_line_and_one_more_byte_is_truncated() {
        let line = "y".repeat(20);
        let over = "y".repeat(21);
        let input = format!("{line}\n{over}\n{line}");
        assert_eq!(frames(input.as_bytes(), 20, 4096), [line.clone(), format!("<cut>{line}"), line.clone()]);
        // A buffer of exactly max + 1 bytes: a line at the bound and its `\n` fill it.
        let line = "y".repeat(4095);
        let input = format!("{line}\n{line}y\n{line}\n{line}");
        let mut out = Vec::new();
        for_each_line(Trickle { data: input.as_bytes(), step: 1000 }, 4095, 1, |f| {
            out.push(f == Frame::Line(line.as_bytes()))
        })
        .unwrap();
        assert_eq!(out, [true, false, true, true]);
    }

    #[test]
    fn partial_final_line_is_a_line_at_the_end_of_input() {
        assert_eq!(frames(b"one\ntwo", 100, 4096), ["one", "two"]);
        assert_eq!(frames(b"", 100, 4096), Vec::<String>::new());
        assert_eq!(frames(b"\n", 100, 4096), [""]);
    }

    #[test]
    fn whole_lines_come_before_a_read_error() {
        struct Failing(bool);
        impl Read for Failing {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                if std::mem::replace(&mut self.0, true) {
                    return Err(io::Error::other("disk on fire"));
                }
                b[..8].copy_from_slice(b"one\ntwo\n");
                Ok(8)
            }
        }
        let mut lines = Vec::new();
        let err = for_each_line(Failing(false), 100, 4096, |f| lines.push(show(f))).unwrap_err();
        assert_eq!((lines, err.to_string()), (vec!["one".to_string(), "two".into()], "disk on fire".to_string()));
    }

    #[test]
    fn framer_keeps_a_partial_line_for_later_and_drops_a_truncated_rest_across_calls() {
        let mut f = Framer::new(5);
        let mut got = Vec::new();
        let r = f.frame(b"ab\ncd", false, |fr| got.push(show(fr)));
        assert_eq!(r, Framed { consumed: 3, lines_end: 3 });
        let r = f.frame(b"cdefgh", false, |fr| got.push(show(fr)));
        assert_eq!(r, Framed { consumed: 6, lines_end: 0 });
        assert!(f.is_dropping());
        let r = f.frame(b"ijk", false, |fr| got.push(show(fr)));
        assert_eq!(r, Framed { consumed: 3, lines_end: 0 });
        let r = f.frame(b"l\nok\nxy", false, |fr| got.push(show(fr)));
        assert_eq!(r, Framed { consumed: 5, lines_end: 5 });
        assert!(!f.is_dropping());
        assert_eq!(got, ["ab", "<cut>cdefg", "ok"]);
    }

    #[test]
    fn buffers_are_recycled_not_reallocated() {
        let input = "line of text\n".repeat(2000);
        let mut chunks = LineChunks::new(Trickle { data: input.as_bytes(), step: 1000 }, 100, 4096);
        let (mut a, mut b) = (Chunk::default(), Chunk::default());
        let (mut n, mut buffers) = (0, std::collections::HashSet::new());
        while chunks.next_chunk(&mut a).unwrap() {
            n += a.bytes().len();
            buffers.extend([a.buf.as_ptr(), chunks.buf.as_ptr()]);
            std::mem::swap(&mut a, &mut b);
        }
        assert_eq!(n, input.len());
        // The reader's buffer and the two chunks' take turns: three allocations in all.
        assert_eq!(buffers.len(), 3);
    }

    proptest! {
        #[test]
        fn random_reads_give_split_lines_with_the_cap(
            lines in prop::collection::vec((0usize..12_000, any::<bool>(), 0u8..4), 0..24),
            steps in prop::collection::vec(1usize..9000, 1..8),
            max in prop::sample::select(vec![1usize, 7, 100, 4095, 5000, 9000]),
            final_newline in any::<bool>(),
        ) {
            let mut input = Vec::new();
            for (i, (len, crlf, fill)) in lines.iter().enumerate() {
                let len = if *len > 9000 { len % 50 } else { *len };
                input.extend(std::iter::repeat_n(b'a' + fill + (i % 7) as u8, len));
                if *crlf {
                    input.push(b'\r');
                }
                input.push(b'\n');
            }
            if !final_newline {
                input.extend_from_slice(b"tail");
            }
            struct Steps<'a> { data: &'a [u8], steps: Vec<usize>, i: usize }
            impl Read for Steps<'_> {
                fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                    let step = self.steps[self.i % self.steps.len()];
                    self.i += 1;
                    let n = self.data.len().min(b.len()).min(step);
                    b[..n].copy_from_slice(&self.data[..n]);
                    self.data = &self.data[n..];
                    Ok(n)
                }
            }
            let mut got = Vec::new();
            let read = for_each_line(Steps { data: &input, steps: steps.clone(), i: 0 }, max, 4096, |f| got.push(show(f))).unwrap();
            prop_assert_eq!(read, input.len() as u64);
            prop_assert_eq!(&got, &expected(&input, max));
            // The same through `Framer` alone, fed in the same random pieces.
            let mut framer = Framer::new(max);
            let mut got = Vec::new();
            let (mut pending, mut at, mut i) = (Vec::new(), 0, 0);
            while at < input.len() {
                let step = steps[i % steps.len()];
                i += 1;
                let end = (at + step).min(input.len());
                pending.extend_from_slice(&input[at..end]);
                at = end;
                let r = framer.frame(&pending, at == input.len(), |f| got.push(show(f)));
                pending.drain(..r.consumed);
            }
            prop_assert!(pending.is_empty());
            prop_assert_eq!(&got, &expected(&input, max));
        }
    }
}
