//! Errors about the config file and where they are: [`ConfigError`] (file, line, dotted key,
//! message), key paths ([`Seg`]) and the lookup of a key's line in the original text
//! ([`Locator`]). Owns how every config error reads. Never decides what is valid.

use std::fmt;
use std::path::{Path, PathBuf};

/// One error in a config file: `/etc/recwatch/recwatch.toml:14: sources[2].format: …`.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line, when the error can be tied to one.
    pub line: Option<usize>,
    /// Dotted key path, e.g. `rule[2].aggregate`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error about the whole file (it cannot be read).
    pub(super) fn file(file: &Path, message: String) -> ConfigError {
        ConfigError { file: file.to_path_buf(), line: None, key: String::new(), message }
    }
}

/// Key path segment, for error messages and locating lines.
#[derive(Clone, Debug)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

/// A key segment.
pub(super) fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

/// `rule[2].aggregate`.
pub(super) fn key_text(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Finds lines of keys in the original text, for errors found after deserialising.
pub(super) struct Locator {
    text: String,
    /// Whether keys are looked up at all.
    keys: bool,
    /// The text parsed for its key spans, on the first lookup: a config that loads (or fails
    /// with a span of its own) is parsed once, not twice.
    doc: std::cell::OnceCell<Option<toml_edit::ImDocument<String>>>,
}

impl Locator {
    /// `keys`: whether keys are looked up (only offsets are, for text whose keys need no lines).
    pub(super) fn new(text: &str, keys: bool) -> Locator {
        Locator { text: text.to_string(), keys, doc: std::cell::OnceCell::new() }
    }

    pub(super) fn line_of_offset(&self, offset: usize) -> usize {
        self.text.as_bytes()[..offset.min(self.text.len())].iter().filter(|&&b| b == b'\n').count() + 1
    }

    /// The line of the deepest item of `path` that exists in the document.
    pub(super) fn line_of(&self, path: &[Seg]) -> Option<usize> {
        if !self.keys {
            return None;
        }
        let doc = self.doc.get_or_init(|| toml_edit::ImDocument::parse(self.text.clone()).ok()).as_ref()?;
        let mut item = doc.as_item();
        let mut best = None;
        for seg in path {
            let next = match seg {
                Seg::Key(k) => item.get(k.as_str()),
                Seg::Index(i) => match item {
                    toml_edit::Item::ArrayOfTables(aot) => aot.get(*i).map(|_| ()).and_then(|_| item.get(*i)),
                    _ => item.get(*i),
                },
            };
            let Some(next) = next else { break };
            item = next;
            if let Some(span) = item_span(item) {
                best = Some(span);
            }
        }
        best.map(|s| self.line_of_offset(s))
    }

    /// An error at `path` of the file `file`, with the line of the deepest part of `path` found.
    pub(super) fn err(&self, file: &Path, path: &[Seg], message: impl Into<String>) -> ConfigError {
        ConfigError { file: file.to_path_buf(), line: self.line_of(path), key: key_text(path), message: message.into() }
    }
}

fn item_span(item: &toml_edit::Item) -> Option<usize> {
    match item {
        toml_edit::Item::Value(v) => v.span().map(|s| s.start),
        toml_edit::Item::Table(t) => t.span().map(|s| s.start),
        toml_edit::Item::ArrayOfTables(a) => a.span().map(|s| s.start),
        toml_edit::Item::None => None,
    }
}
