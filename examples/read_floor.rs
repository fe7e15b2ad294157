//! The floor under a replay: recwatch's own reader and framer over a file — mapped windows of
//! whole lines, as `recwatch replay` reads a finished log, each line found — and nothing else:
//! no parse, no detection, no report. `scripts/bench` times it pinned to one core beside
//! `wc -l` and the replays, so what a replay costs above it is parsing, detection and the
//! report. Usage: `read_floor FILE` (prints the lines and bytes it framed).

use std::fs::File;
use std::process::ExitCode;

use recwatch::parse::MAX_LINE_LEN;
use recwatch::source::framing::{Chunk, ChunkSource, Frame};
use recwatch::source::mapped::{MappedChunks, WINDOW_BYTES};

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: read_floor FILE");
        return ExitCode::from(2);
    };
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("read_floor: {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(mut chunks) = MappedChunks::new(file, MAX_LINE_LEN, WINDOW_BYTES, Box::new(|_| {})) else {
        eprintln!("read_floor: {path}: not mapped (replay maps a non-empty regular file left alone for a minute)");
        return ExitCode::FAILURE;
    };
    let (mut chunk, mut lines, mut bytes) = (Chunk::default(), 0u64, 0u64);
    loop {
        match chunks.next_chunk(&mut chunk) {
            Ok(true) => chunk.frames(|frame| {
                let line = match frame {
                    Frame::Line(line) | Frame::Truncated(line) => line,
                };
                lines += 1;
                bytes += line.len() as u64 + 1;
            }),
            Ok(false) => break,
            Err(e) => {
                eprintln!("read_floor: {path}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("{lines} lines, {bytes} bytes");
    ExitCode::SUCCESS
}
