//! Splits a byte stream into lines with `memchr`, in large reused chunks.
//! Owns the read buffer, the carry-over of a partial line between reads, and the line-length
//! bound. Never allocates per line and never interprets line content (a trailing `\r` is
//! left for the parser).

use std::io::{self, Read};

/// What the framer hands out.
pub enum Frame<'a> {
    /// A complete line without its `\n`.
    Line(&'a [u8]),
    /// A line longer than the bound was skipped up to its `\n` (counted, never buffered).
    TooLong,
}

/// Reads a stream as chunks of whole lines: each chunk ends with `\n`, except the input's
/// last line when it has none (a finished file's last line is complete). Lines longer than
/// the bound are skipped and counted, never buffered. The one implementation of carry-over,
/// used by [`for_each_line`] and by parallel parsing, which hands chunks to threads.
pub struct LineChunks<R> {
    reader: R,
    max_line_len: usize,
    chunk_size: usize,
    /// The partial line at the end of the last read.
    carry: Vec<u8>,
    /// Inside an over-long line: drop bytes until the next '\n'.
    discarding: bool,
    done: bool,
    /// A read error held back until the whole lines read before it are handed out.
    error: Option<io::Error>,
    /// Raw bytes read so far.
    pub bytes_read: u64,
}

impl<R: Read> LineChunks<R> {
    pub fn new(reader: R, max_line_len: usize, chunk_size: usize) -> Self {
        LineChunks {
            reader,
            max_line_len,
            chunk_size: chunk_size.max(max_line_len + 1).max(4096),
            carry: Vec::new(),
            discarding: false,
            done: false,
            error: None,
            bytes_read: 0,
        }
    }

    /// Fills `out` (cleared) with whole lines. Returns how many over-long lines were skipped
    /// meanwhile, or `None` at the end of the input; a read error comes after the lines read
    /// before it.
    pub fn next_chunk(&mut self, out: &mut Vec<u8>) -> io::Result<Option<u64>> {
        out.clear();
        out.append(&mut self.carry);
        let mut too_long = 0;
        loop {
            if self.done {
                if out.is_empty() && too_long == 0 {
                    if let Some(e) = self.error.take() {
                        return Err(e);
                    }
                }
                return Ok((!out.is_empty() || too_long > 0).then_some(too_long));
            }
            let start = out.len();
            out.resize(start + self.chunk_size, 0);
            let n = loop {
                match self.reader.read(&mut out[start..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    out.truncate(start);
                    self.error = Some(e);
                    0
                }
            };
            out.truncate(start + n);
            self.bytes_read += n as u64;
            if n == 0 {
                self.done = true;
                if self.discarding {
                    out.truncate(start);
                }
                continue;
            }
            if self.discarding {
                match memchr::memchr(b'\n', &out[start..]) {
                    Some(i) => {
                        out.drain(start..=start + i);
                        self.discarding = false;
                    }
                    None => {
                        out.truncate(start);
                        continue;
                    }
                }
            }
            if out.len() < self.chunk_size {
                continue;
            }
            match memchr::memrchr(b'\n', out) {
                Some(last) => {
                    self.carry.extend_from_slice(&out[last + 1..]);
                    out.truncate(last + 1);
                    if self.carry.len() > self.max_line_len {
                        too_long += 1;
                        self.carry.clear();
                        self.discarding = true;
                    }
                    return Ok(Some(too_long));
                }
                None => {
                    // No line end in a whole chunk: one line longer than any bound.
                    too_long += 1;
                    out.clear();
                    self.discarding = true;
                }
            }
        }
    }
}

/// Hands out every line of a chunk from [`LineChunks`].
pub fn frame_lines(chunk: &[u8], max_line_len: usize, mut on_frame: impl FnMut(Frame<'_>)) {
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', chunk) {
        on_frame(bounded(&chunk[start..nl], max_line_len));
        start = nl + 1;
    }
    if start < chunk.len() {
        on_frame(bounded(&chunk[start..], max_line_len));
    }
}

fn bounded(line: &[u8], max_line_len: usize) -> Frame<'_> {
    if line.len() > max_line_len {
        Frame::TooLong
    } else {
        Frame::Line(line)
    }
}

/// Reads `reader` to its end, calling `on_frame` for every line. Returns the bytes read; on
/// a read error, lines before it were already emitted.
pub fn for_each_line<R: Read>(
    reader: R,
    max_line_len: usize,
    chunk_size: usize,
    mut on_frame: impl FnMut(Frame<'_>),
) -> io::Result<u64> {
    let mut chunks = LineChunks::new(reader, max_line_len, chunk_size);
    let mut buf = Vec::new();
    while let Some(too_long) = chunks.next_chunk(&mut buf)? {
        for _ in 0..too_long {
            on_frame(Frame::TooLong);
        }
        frame_lines(&buf, max_line_len, &mut on_frame);
    }
    Ok(chunks.bytes_read)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that returns at most 7 bytes per read, to cross chunk boundaries often.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(b.len()).min(7);
            b[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn frames(input: &[u8], max: usize, chunk: usize) -> Vec<String> {
        let mut out = Vec::new();
        for_each_line(Trickle(input), max, chunk, |f| match f {
            Frame::Line(l) => out.push(String::from_utf8_lossy(l).into_owned()),
            Frame::TooLong => out.push("<too long>".into()),
        })
        .unwrap();
        out
    }

    #[test]
    fn lines_across_reads_and_a_final_line_without_newline() {
        assert_eq!(frames(b"abc\ndef\r\n\nlast", 100, 4096), ["abc", "def\r", "", "last"]);
    }

    #[test]
    fn over_long_lines_are_skipped_once_and_reading_continues() {
        let long = "x".repeat(50);
        let input = format!("ok1\n{long}\nok2\n{long}{long}\nok3\n{long}");
        let mut got = frames(input.as_bytes(), 20, 4096);
        got.sort();
        let mut want = ["ok1", "<too long>", "ok2", "<too long>", "ok3", "<too long>"];
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn over_long_lines_spanning_chunks_are_skipped() {
        // chunk size is at least 4096: lines of 10 000 bytes span several chunks
        let long = "y".repeat(10_000);
        let input = format!("a\n{long}\nb\n{long}");
        let got = frames(input.as_bytes(), 5000, 4096);
        assert_eq!(got.iter().filter(|l| *l == "<too long>").count(), 2);
        assert_eq!(got.iter().filter(|l| *l != "<too long>").collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn exact_bound_is_accepted() {
        let line = "y".repeat(20);
        assert_eq!(frames(format!("{line}\n").as_bytes(), 20, 4096), [line]);
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
        let mut lines = 0;
        let err = for_each_line(Failing(false), 100, 4096, |_| lines += 1).unwrap_err();
        assert_eq!((lines, err.to_string()), (2, "disk on fire".to_string()));
    }
}
