//! Reads a finished regular file through the page cache without copying it: the file is
//! mapped one window at a time and each window's whole lines are handed out as a [`Chunk`],
//! the same chunks [`LineChunks`](super::framing::LineChunks) reads into its buffers.
//! Owns the crate's one `unsafe` block (the mapping) and the reasoning for it. Never maps a
//! file it did not open itself, never writes through a map, never maps more than a window.
//!
//! # Why the mapping is sound enough, and when it is not used
//! `memmap2::Mmap::map` is `unsafe` because another process may change the file while it is
//! mapped. Two things can happen:
//! - Bytes change under a `&[u8]`: every value is a valid `u8` and no invariant of the parser
//!   rests on bytes staying put between two reads of them, so the worst outcome is a line
//!   judged on bytes that were replaced (as with `read` racing the same write).
//! - The file is truncated (`copytruncate` rotation): touching a mapped page past the new end
//!   raises `SIGBUS` and ends the process. Only files left alone for [`QUIET_SECS`] are mapped
//!   (rotated logs, archives); a file written to within that time is read with `read`, which
//!   sees a truncation as an early end. ripgrep takes the same trade.
//!
//! A window is [`WINDOW_BYTES`] (at least one line bound more), mapped with `MAP_POPULATE`
//! so its pages are entered in one call instead of one fault each, and unmapped when its
//! chunk is dropped or reused: the process maps at most the windows in flight, so a 10 GB
//! log costs no more resident memory than a 10 MB one.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::{Duration, SystemTime};

use memmap2::{Mmap, MmapOptions};

use super::framing::{Chunk, ChunkSource};

/// Bytes mapped per window (rounded down to whole lines when handed out).
pub const WINDOW_BYTES: usize = 1 << 20;

/// A file modified more recently than this is read, not mapped (see the module docs).
pub const QUIET_SECS: u64 = 60;

/// A regular file read as mapped windows of whole lines.
pub struct MappedChunks {
    file: File,
    size: u64,
    /// Offset of the first byte not handed out yet.
    pos: u64,
    window: usize,
    max_line_len: usize,
    /// Told the bytes of each window handed out, for progress.
    on_bytes: Box<dyn FnMut(u64) + Send>,
    /// Bytes handed out so far.
    pub bytes_read: u64,
}

impl MappedChunks {
    /// `file` if it may be mapped: a regular, non-empty file left alone for [`QUIET_SECS`]
    /// whose first bytes are no gzip header. `None` means: read it instead.
    /// `window_bytes` is raised to hold a line of `max_line_len` bytes and its `\n`.
    pub fn new(
        file: File,
        max_line_len: usize,
        window_bytes: usize,
        on_bytes: Box<dyn FnMut(u64) + Send>,
    ) -> Option<MappedChunks> {
        let meta = file.metadata().ok()?;
        let quiet = meta
            .modified()
            .ok()
            .and_then(|modified| SystemTime::now().duration_since(modified).ok())
            .is_some_and(|age| age >= Duration::from_secs(QUIET_SECS));
        if !meta.is_file() || meta.len() == 0 || !quiet {
            return None;
        }
        let chunks = MappedChunks {
            file,
            size: meta.len(),
            pos: 0,
            window: window_bytes.max(max_line_len + 1),
            max_line_len,
            on_bytes,
            bytes_read: 0,
        };
        let mut head = [0u8; 2];
        chunks.file.read_exact_at(&mut head, 0).ok();
        (head != [0x1f, 0x8b]).then_some(chunks)
    }

    /// Maps `len` bytes at `offset` (any offset: the map starts at the page below it).
    /// Returns the map and where `offset` is inside it.
    fn map_at(&self, offset: u64, len: usize) -> io::Result<(Mmap, usize)> {
        let start = offset - offset % MAP_ALIGN;
        let skip = (offset - start) as usize;
        // SAFETY: see the module docs: the file is a regular file of ours, quiet for
        // QUIET_SECS, mapped read-only and within its size at open time.
        #[allow(unsafe_code)]
        let map = unsafe { MmapOptions::new().offset(start).len(skip + len).populate().map(&self.file)? };
        Ok((map, skip))
    }

    /// Offset just past the `\n` ending the line that runs through `from` (or the file size).
    fn end_of_line(&self, mut from: u64) -> io::Result<u64> {
        while from < self.size {
            let len = usize::try_from(self.size - from).map_or(self.window, |left| left.min(self.window));
            let (map, skip) = self.map_at(from, len)?;
            if let Some(newline) = memchr::memchr(b'\n', &map[skip..]) {
                return Ok(from + newline as u64 + 1);
            }
            from += len as u64;
        }
        Ok(self.size)
    }
}

impl ChunkSource for MappedChunks {
    /// Fills `chunk` with the next window's whole lines. Returns `false` at the end.
    fn next_chunk(&mut self, chunk: &mut Chunk) -> io::Result<bool> {
        if self.pos >= self.size {
            return Ok(false);
        }
        let left = self.size - self.pos;
        let len = usize::try_from(left).map_or(self.window, |left| left.min(self.window));
        let (map, skip) = self.map_at(self.pos, len)?;
        let at_end = len as u64 == left;
        let handed = if at_end {
            // The last window: its last line may lack a `\n`; the framer takes it whole.
            chunk.set_mapped(map, skip, len, false, self.max_line_len);
            len
        } else {
            match memchr::memrchr(b'\n', &map[skip..]) {
                Some(newline) => {
                    chunk.set_mapped(map, skip, newline + 1, false, self.max_line_len);
                    newline + 1
                }
                None => {
                    // A line longer than the window, so longer than the bound: its head is
                    // handed out and the rest, up to its `\n`, skipped.
                    chunk.set_mapped(map, skip, self.max_line_len, true, self.max_line_len);
                    let end = self.end_of_line(self.pos + len as u64)?;
                    (end - self.pos) as usize
                }
            }
        };
        self.pos += handed as u64;
        self.bytes_read += handed as u64;
        (self.on_bytes)(handed as u64);
        Ok(true)
    }
}

/// A map must start at a multiple of the page size: 64 KiB is one of every page size Linux
/// uses (4, 16 and 64 KiB).
const MAP_ALIGN: u64 = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::framing::{for_each_line, Frame};
    use proptest::prelude::*;

    fn owned(frame: Frame<'_>) -> (bool, Vec<u8>) {
        match frame {
            Frame::Line(line) => (false, line.to_vec()),
            Frame::Truncated(head) => (true, head.to_vec()),
        }
    }

    /// The frames of `data` written to a file left alone long enough to be mapped.
    fn mapped_frames(data: &[u8], max: usize, window: usize) -> Option<Vec<(bool, Vec<u8>)>> {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), data).unwrap();
        let old = SystemTime::now() - Duration::from_secs(QUIET_SECS + 5);
        File::options().write(true).open(file.path()).unwrap().set_modified(old).unwrap();
        let mut chunks = MappedChunks::new(File::open(file.path()).unwrap(), max, window, Box::new(|_| {}))?;
        let (mut out, mut chunk) = (Vec::new(), Chunk::default());
        while chunks.next_chunk(&mut chunk).unwrap() {
            chunk.frames(|frame| out.push(owned(frame)));
        }
        assert_eq!(chunks.bytes_read, data.len() as u64);
        Some(out)
    }

    fn read_frames(data: &[u8], max: usize) -> Vec<(bool, Vec<u8>)> {
        let mut out = Vec::new();
        for_each_line(data, max, 4096, |frame| out.push(owned(frame))).unwrap();
        out
    }

    #[test]
    fn a_fresh_file_an_empty_file_and_gzip_are_read_not_mapped() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), b"a\n").unwrap();
        assert!(MappedChunks::new(File::open(file.path()).unwrap(), 100, 4096, Box::new(|_| {})).is_none());
        assert!(mapped_frames(b"", 100, 4096).is_none());
        assert!(mapped_frames(&[0x1f, 0x8b, 8, 0], 100, 4096).is_none());
        assert_eq!(mapped_frames(b"a\nb", 100, 4096).unwrap(), [(false, b"a".to_vec()), (false, b"b".to_vec())]);
    }

    proptest! {
        /// Mapped windows give exactly the frames reading gives: lines across window
        /// boundaries, over-long lines (longer than a window too), no final `\n`.
        #[test]
        fn mapped_frames_equal_read_frames(
            lines in proptest::collection::vec((0usize..300, any::<bool>()), 0..60),
            max in 1usize..200,
            window in 1usize..700,
        ) {
            let mut data = Vec::new();
            for (i, (len, newline)) in lines.iter().enumerate() {
                data.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, *len));
                if *newline || i + 1 < lines.len() {
                    data.push(b'\n');
                }
            }
            if let Some(mapped) = mapped_frames(&data, max, window) {
                prop_assert_eq!(mapped, read_frames(&data, max));
            } else {
                prop_assert!(data.is_empty());
            }
        }
    }
}
