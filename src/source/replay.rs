//! Replay inputs: plain files, gzip files (detected by magic bytes, multi-member), stdin.
//! Owns opening inputs and turning failures into clear, typed errors. Never parses lines.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Stdin,
    File(PathBuf),
}

impl Input {
    pub fn from_arg(arg: &str) -> Input {
        if arg == "-" {
            Input::Stdin
        } else {
            Input::File(PathBuf::from(arg))
        }
    }

    pub fn name(&self) -> String {
        match self {
            Input::Stdin => "-".to_string(),
            Input::File(p) => p.display().to_string(),
        }
    }

    /// Size on disk (compressed size for `.gz`), for progress; None for stdin.
    pub fn size(&self) -> Option<u64> {
        match self {
            Input::Stdin => None,
            Input::File(p) => std::fs::metadata(p).ok().map(|m| m.len()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: no such file")]
    NotFound { path: PathBuf },
    #[error("{path}: is a directory (give the log files in it, e.g. {path}/access.log*)")]
    IsDirectory { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// An opened input: decompressing when it starts with the gzip magic bytes.
pub struct Opened {
    pub reader: Box<dyn Read + Send>,
    pub gzip: bool,
}

/// Opens an input. `on_raw_bytes` is told how many raw (on-disk) bytes each read consumed,
/// which drives progress for compressed and plain files alike.
pub fn open(input: &Input, on_raw_bytes: Box<dyn FnMut(u64) + Send>) -> Result<Opened, InputError> {
    let (raw, path): (Box<dyn Read + Send>, &Path) = match input {
        Input::Stdin => (Box::new(io::stdin()), Path::new("-")),
        Input::File(path) => {
            let io_err = |source: io::Error| match source.kind() {
                io::ErrorKind::NotFound => InputError::NotFound { path: path.clone() },
                _ => InputError::Io { path: path.clone(), source },
            };
            let meta = std::fs::metadata(path).map_err(io_err)?;
            if meta.is_dir() {
                return Err(InputError::IsDirectory { path: path.clone() });
            }
            (Box::new(File::open(path).map_err(io_err)?), path.as_path())
        }
    };
    // Peek at the first bytes for the gzip magic, then read on from them without a buffer in
    // between: a plain file's bytes go straight from the kernel into the caller's buffer (a
    // `BufReader` would copy every byte twice, since callers read less than its capacity).
    let mut counting = Counting { inner: raw, on_raw_bytes };
    let mut head = [0u8; 2];
    let mut peeked = 0;
    while peeked < head.len() {
        match counting.read(&mut head[peeked..]) {
            Ok(0) => break,
            Ok(n) => peeked += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(InputError::Io { path: path.to_path_buf(), source }),
        }
    }
    let gzip = head[..peeked] == [0x1f, 0x8b];
    let stream = io::Cursor::new(head).take(peeked as u64).chain(counting);
    let reader: Box<dyn Read + Send> =
        if gzip { Box::new(MultiGzDecoder::new(BufReader::with_capacity(1 << 18, stream))) } else { Box::new(stream) };
    Ok(Opened { reader, gzip })
}

struct Counting {
    inner: Box<dyn Read + Send>,
    on_raw_bytes: Box<dyn FnMut(u64) + Send>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.on_raw_bytes)(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read_all(input: &Input) -> Result<Vec<u8>, String> {
        let mut opened = open(input, Box::new(|_| {})).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        opened.reader.read_to_end(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }

    #[test]
    fn plain_gzip_and_concatenated_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a.log");
        std::fs::write(&plain, b"one\ntwo\n").unwrap();
        assert_eq!(read_all(&Input::File(plain)).unwrap(), b"one\ntwo\n");
        let gz = dir.path().join("b.log.gz");
        let mut bytes = Vec::new();
        for part in [&b"one\n"[..], b"two\n"] {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(part).unwrap();
            bytes.extend(e.finish().unwrap());
        }
        std::fs::write(&gz, &bytes).unwrap();
        assert_eq!(read_all(&Input::File(gz.clone())).unwrap(), b"one\ntwo\n");
        std::fs::write(&gz, &bytes[..bytes.len() - 10]).unwrap();
        assert!(read_all(&Input::File(gz)).is_err(), "a truncated gzip is an error, not silent");
    }

    #[test]
    fn missing_and_directory_inputs_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_all(&Input::File(dir.path().join("nope.log"))).unwrap_err();
        assert!(e.ends_with("nope.log: no such file"), "{e}");
        let e = read_all(&Input::File(dir.path().to_path_buf())).unwrap_err();
        assert!(e.contains("is a directory"), "{e}");
    }
}
