//! Splits a byte stream into lines with `memchr`, in large reused chunks.
//! Owns the read buffer and the line-length bound. Never allocates per line and never
//! interprets line content (a trailing `\r` is left for the parser).

use std::io::{self, Read};

/// What the framer hands out.
pub enum Frame<'a> {
    /// A complete line without its `\n`.
    Line(&'a [u8]),
    /// A line longer than the bound was skipped up to its `\n` (counted, never buffered).
    TooLong,
}

/// Reads `reader` to its end, calling `on_frame` for every line. A last line without `\n`
/// at the end of the input is emitted too (a finished file's last line is complete).
/// Returns the bytes read; on a read error, lines before it were already emitted.
pub fn for_each_line<R: Read>(
    mut reader: R,
    max_line_len: usize,
    chunk_size: usize,
    mut on_frame: impl FnMut(Frame<'_>),
) -> io::Result<u64> {
    let chunk_size = chunk_size.max(max_line_len + 1).max(4096);
    let mut buf = vec![0u8; chunk_size + max_line_len + 1];
    // buf[..filled] holds bytes not yet framed (a partial line at the front).
    let mut filled = 0usize;
    // Inside an over-long line: drop bytes until the next '\n'.
    let mut discarding = false;
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        let end = filled + n;
        let mut start = 0usize;
        if discarding {
            match memchr::memchr(b'\n', &buf[..end]) {
                Some(i) => {
                    discarding = false;
                    start = i + 1;
                }
                None => {
                    filled = 0;
                    continue;
                }
            }
        }
        let base = start;
        for nl in memchr::memchr_iter(b'\n', &buf[base..end]) {
            let line_end = base + nl;
            let line = &buf[start..line_end];
            if line.len() > max_line_len {
                on_frame(Frame::TooLong);
            } else {
                on_frame(Frame::Line(line));
            }
            start = line_end + 1;
        }
        let rest = end - start;
        if rest > max_line_len {
            on_frame(Frame::TooLong);
            discarding = true;
            filled = 0;
        } else {
            buf.copy_within(start..end, 0);
            filled = rest;
        }
    }
    if filled > 0 && !discarding {
        on_frame(Frame::Line(&buf[..filled]));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8], max: usize, chunk: usize) -> Vec<String> {
        let mut out = Vec::new();
        // A reader that returns at most 7 bytes per read, to cross chunk boundaries often.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(b.len()).min(7);
                b[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
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
        assert_eq!(frames(input.as_bytes(), 20, 4096), ["ok1", "<too long>", "ok2", "<too long>", "ok3", "<too long>"]);
    }

    #[test]
    fn exact_bound_is_accepted() {
        let line = "y".repeat(20);
        assert_eq!(frames(format!("{line}\n").as_bytes(), 20, 4096), [line]);
    }
}
