//! Normalises a logged request target to the path the server behind the log resolved, and
//! decides whether that path is a sensitive resource (a recording, a listing, or something else
//! under a configured prefix). Owns the path semantics of each kind of server
//! ([`PathSemantics`]), the normalisation rules and the prefix/extension sets.
//! Never looks at clients or statuses, never allocates per call once the caller's scratch
//! buffer has grown.
//!
//! # How the server's view is reproduced
//!
//! The normalised path must be the file the server opened, or an evasion slips past and a
//! public file raises false alarms. Two families of servers resolve paths differently; a
//! source says which one wrote its log (`path_semantics`, default `linux`):
//!
//! | step | `linux` (nginx 1.22, Apache 2.4 on Linux) | `windows` (IIS, Samba, NAS shares) |
//! |---|---|---|
//! | log escaping (`\xHH`, `\"`, `\\`) | undone | undone |
//! | absolute form `scheme://host/p`, any RFC 3986 scheme | host dropped | host dropped |
//! | `scheme:/p` (no authority; Apache serves it) | `/p` | `/p` |
//! | query `?…` and fragment `#…` | cut | cut |
//! | percent-decoding | once | once |
//! | `/` and `%2F` | separator | separator |
//! | `\` and `%5C` | ordinary name byte | separator |
//! | `;x` | ordinary name bytes | `;params` dropped (Tomcat, IIS) |
//! | empty segments (`//`) | merged | merged |
//! | `.` and `..` segments | removed / pop one segment, never above root | same |
//! | `...`, ` `, `x.` (trailing dots and blanks) | ordinary names | trimmed (Win32 name rules) |
//! | case | as configured (`case_insensitive`) | always folded |
//!
//! Where nginx and Apache differ, the normalised path is what the server that *served* the
//! file would have opened, and the logged status says whether it did. Apache answers `%2F` in
//! a path with 404 (`AllowEncodedSlashes Off`) and `%00` with 404, nginx answers `..` above
//! the root, `%00` and `scheme:/p` with 400: those lines carry a refusal, so no fetch rule
//! fires whatever the path. Apache applies `..` before decoding all but the unreserved
//! characters; since `%2E` is unreserved, both servers end up treating `%2E%2E` as `..`.
//! Double encoding (`%252e`) is decoded once, as both servers do: `%2e` is a literal name.
//! Overlong UTF-8 (`%C0%AE`) stays two ordinary bytes, never a dot.

use memchr::{memchr2, memchr3, memrchr};

use crate::bytes16::Block;
use crate::parse::unescape_log_field;

/// Longest normalised path kept, in bytes; longer ones are truncated (they are still
/// classified, only their tail is lost).
pub const MAX_NORMALIZED_LEN: usize = 4096;

/// How the server behind a source resolves a request path to a file (see the module docs for
/// each transformation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PathSemantics {
    /// nginx and Apache on Linux (and any POSIX file system): bytes are names, only `/`
    /// separates, `.`/`..` are resolved lexically.
    #[default]
    Linux,
    /// IIS, Samba, NAS shares: case-insensitive, `\` separates, trailing dots and blanks of a
    /// name are trimmed, `;params` dropped.
    Windows,
}

impl PathSemantics {
    /// Every value, for config validation messages.
    pub const ALL: [PathSemantics; 2] = [PathSemantics::Linux, PathSemantics::Windows];

    /// The configuration name (`path_semantics = "linux"`).
    pub fn as_str(self) -> &'static str {
        match self {
            PathSemantics::Linux => "linux",
            PathSemantics::Windows => "windows",
        }
    }

    /// Inverse of [`PathSemantics::as_str`] (exact match).
    pub fn from_name(name: &str) -> Option<PathSemantics> {
        PathSemantics::ALL.into_iter().find(|semantics| semantics.as_str() == name)
    }

    fn is_windows(self) -> bool {
        self == PathSemantics::Windows
    }
}

/// Which kind of sensitive resource a normalised path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathClass {
    /// Under a prefix and has a sensitive extension: the audio itself.
    Recording,
    /// A directory under (or equal to) a prefix (the path ends with `/`): enumerating
    /// recordings usually precedes downloading them.
    Listing,
    /// Under a prefix, neither of the above (checksums, metadata, scripts).
    OtherUnderPrefix,
}

impl PathClass {
    /// Every class, so metrics can pre-register all label values.
    pub const ALL: [PathClass; 3] = [PathClass::Recording, PathClass::Listing, PathClass::OtherUnderPrefix];

    /// Metric label and report value.
    pub fn as_str(self) -> &'static str {
        match self {
            PathClass::Recording => "recording",
            PathClass::Listing => "listing",
            PathClass::OtherUnderPrefix => "other",
        }
    }
}

/// One prepared prefix or extension.
type ByteString = Box<[u8]>;

/// The configured sensitive prefixes and extensions, prepared once for fast per-line tests.
#[derive(Clone, Debug)]
pub struct SensitivePaths {
    /// Normalised prefixes, each starting and ending with `/`, ASCII-folded when
    /// `case_insensitive`. Holds just `/` when the configuration listed none ("every path").
    prefixes: Vec<Box<[u8]>>,
    /// Extensions without the dot, ASCII-folded when `case_insensitive`.
    extensions: Vec<Box<[u8]>>,
    /// `prefixes` and `extensions` ASCII-folded, for paths whose case is folded: every path
    /// when `case_insensitive`, and paths of a `windows` source whatever the configuration.
    folded_prefixes: Vec<Box<[u8]>>,
    folded_extensions: Vec<Box<[u8]>>,
    /// The directories of `prefixes` and of `folded_prefixes`, for the fast reject.
    directories: Vec<PrefixDirectory>,
    folded_directories: Vec<PrefixDirectory>,
    /// The configuration listed no extensions: every file under a prefix is a recording.
    any_extension: bool,
    /// Fold ASCII case in paths, prefixes and extensions of every source.
    case_insensitive: bool,
}

impl SensitivePaths {
    /// Builds the sets. `prefixes` like `/recordings/` are normalised like request paths (a
    /// missing leading or trailing `/` is added); an empty list means every path.
    /// `extensions` like `wav` (a leading dot is tolerated); an empty list means any file under
    /// a prefix is a recording. `case_insensitive` folds ASCII case for the prefix and extension
    /// tests and for the normalised path written out (a `windows` source always folds).
    pub fn new(prefixes: &[String], extensions: &[String], case_insensitive: bool) -> SensitivePaths {
        let mut normalized = Vec::new();
        let mut prepared_prefixes: Vec<Box<[u8]>> = Vec::with_capacity(prefixes.len().max(1));
        for prefix in prefixes {
            normalize_target(prefix.as_bytes(), PathSemantics::Linux, false, &mut normalized);
            if !normalized.ends_with(b"/") {
                normalized.push(b'/');
            }
            prepared_prefixes.push(normalized.as_slice().into());
        }
        if prepared_prefixes.is_empty() {
            prepared_prefixes.push(b"/"[..].into());
        }
        let prepared_extensions: Vec<Box<[u8]>> = extensions
            .iter()
            .map(|extension| extension.trim_start_matches('.'))
            .filter(|extension| !extension.is_empty())
            .map(|extension| extension.as_bytes().into())
            .collect();
        let folded = |items: &[Box<[u8]>]| -> Vec<Box<[u8]>> {
            items.iter().map(|item| item.to_ascii_lowercase().into_boxed_slice()).collect()
        };
        let folded_prefixes = folded(&prepared_prefixes);
        let folded_extensions = folded(&prepared_extensions);
        let prefixes = if case_insensitive { folded_prefixes.clone() } else { prepared_prefixes };
        let directories = |items: &[Box<[u8]>], case_fold: bool| -> Vec<PrefixDirectory> {
            items.iter().map(|prefix| PrefixDirectory::of(prefix, case_fold)).collect()
        };
        SensitivePaths {
            directories: directories(&prefixes, case_insensitive),
            folded_directories: directories(&folded_prefixes, true),
            prefixes,
            extensions: if case_insensitive { folded_extensions.clone() } else { prepared_extensions },
            folded_prefixes,
            folded_extensions,
            any_extension: extensions.is_empty(),
            case_insensitive,
        }
    }

    /// Whether paths of a source with `semantics` are compared with ASCII case folded.
    fn folds_case(&self, semantics: PathSemantics) -> bool {
        self.case_insensitive || semantics.is_windows()
    }

    /// Classifies a raw request target as logged by a server with `semantics`; `None` for
    /// non-sensitive paths.
    ///
    /// `scratch` is a caller-owned reusable buffer; on `Some` it holds the normalised path
    /// (the distinct resource counted and shown to users; a prefix directory named without
    /// its trailing slash gets one). A simple target that cannot
    /// normalise to anything under a prefix is rejected without touching `scratch`.
    pub fn classify(&self, raw_target: &[u8], semantics: PathSemantics, scratch: &mut Vec<u8>) -> Option<PathClass> {
        let case_fold = self.folds_case(semantics);
        if let Some(path_len) = simple_path_len(raw_target, semantics) {
            // Normalising a simple target only cuts (see `may_be_under_a_prefix`).
            if !self.may_be_under_a_prefix(raw_target, case_fold) {
                return None;
            }
            write_simple_path(&raw_target[..path_len], semantics, case_fold, scratch);
        } else {
            normalize_general(raw_target, semantics, case_fold, scratch);
        }
        let class = self.classify_normalized(scratch, case_fold)?;
        if class == PathClass::Listing && !scratch.ends_with(b"/") {
            // `/recordings` names the prefix directory; spell it as `/recordings/` so both
            // spellings count as one resource.
            scratch.push(b'/');
        }
        Some(class)
    }

    /// The cheap reject of [`SensitivePaths::classify`]: `false` for a raw target that cannot
    /// normalise to anything under a prefix — it starts with no prefix and normalising it only
    /// cuts its query (origin form, no escape, no empty or dot segment). Looks at nothing else,
    /// so it can run on every line; `windows` targets always take the careful path.
    #[inline]
    pub fn may_be_sensitive(&self, raw_target: &[u8], semantics: PathSemantics) -> bool {
        semantics.is_windows()
            || self.may_be_under_a_prefix(raw_target, self.folds_case(semantics))
            || may_normalize_elsewhere(raw_target)
    }

    /// The prefix and extension tables for paths folded (or not).
    fn tables(&self, case_fold: bool) -> (&[ByteString], &[ByteString]) {
        if case_fold {
            (&self.folded_prefixes, &self.folded_extensions)
        } else {
            (&self.prefixes, &self.extensions)
        }
    }

    /// Class of an already normalised path: under a prefix = starts with it, or is the
    /// prefix directory itself without its trailing slash (a listing).
    fn classify_normalized(&self, path: &[u8], case_fold: bool) -> Option<PathClass> {
        let (prefixes, extensions) = self.tables(case_fold);
        let mut is_prefix_directory = false;
        let mut under_a_prefix = false;
        for prefix in prefixes {
            if path.starts_with(prefix) {
                under_a_prefix = true;
            } else if path == &prefix[..prefix.len() - 1] {
                under_a_prefix = true;
                is_prefix_directory = true;
            }
        }
        if !under_a_prefix {
            return None;
        }
        if is_prefix_directory || path.ends_with(b"/") {
            return Some(PathClass::Listing);
        }
        if self.any_extension {
            return Some(PathClass::Recording);
        }
        // Segments are short: plain reverse scans beat the vectorised search's set-up cost.
        let last_segment = match path.iter().rposition(|&byte| byte == b'/') {
            Some(slash) => &path[slash + 1..],
            None => path,
        };
        let extension_dot = last_segment.iter().rposition(|&byte| byte == b'.');
        let has_sensitive_extension = extension_dot.is_some_and(|dot| {
            let extension = &last_segment[dot + 1..];
            extensions.iter().any(|wanted| **wanted == *extension)
        });
        Some(if has_sensitive_extension { PathClass::Recording } else { PathClass::OtherUnderPrefix })
    }

    /// Half of the fast reject: whether the raw target starts with some prefix minus its
    /// trailing slash. A simple target (see [`simple_path_len`]) for which this is false
    /// cannot normalise to anything under a prefix, because normalising it only cuts the
    /// query (and, for `windows`, trims the last segment): the result is a prefix of the raw
    /// bytes.
    #[inline(always)]
    fn may_be_under_a_prefix(&self, raw_target: &[u8], case_fold: bool) -> bool {
        let directories = if case_fold { &self.folded_directories } else { &self.directories };
        directories.iter().any(|directory| directory.starts(raw_target))
    }
}

/// A prefix directory (the prefix without its trailing `/`) prepared for comparing raw
/// targets with it eight bytes at a time.
#[derive(Clone, Debug)]
struct PrefixDirectory {
    /// Its bytes, folded when compared with case folded.
    bytes: Box<[u8]>,
    /// Per byte, `0x20` where a letter's case is folded, else 0: OR-ed into a target's bytes it
    /// turns `A`..`Z` into `a`..`z` there and no other byte into a letter.
    fold: Box<[u8]>,
}

impl PrefixDirectory {
    fn of(prefix: &[u8], case_fold: bool) -> PrefixDirectory {
        let bytes: Box<[u8]> = prefix[..prefix.len() - 1].into();
        let fold = bytes.iter().map(|&byte| if case_fold && byte.is_ascii_lowercase() { 0x20 } else { 0 }).collect();
        PrefixDirectory { bytes, fold }
    }

    /// Whether `target` starts with the directory (case folded where prepared so).
    #[inline]
    fn starts(&self, target: &[u8]) -> bool {
        let n = self.bytes.len();
        let Some(head) = target.get(..n) else { return false };
        let word = |bytes: &[u8], at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
        let word_matches = |at: usize| word(head, at) | word(&self.fold, at) == word(&self.bytes, at);
        if n < 8 {
            return head.iter().zip(&self.fold).map(|(byte, fold)| byte | fold).eq(self.bytes.iter().copied());
        }
        // Whole words, then the last eight bytes (overlapping the one before).
        (0..n / 8).all(|i| word_matches(8 * i)) && word_matches(n - 8)
    }
}

/// How the `windows` branch of [`simple_path_len`] treats each byte.
const PLAIN: u8 = 0;
const SLASH: u8 = 1;
const QUERY: u8 = 2;
const NOT_SIMPLE: u8 = 3;

/// Byte classes for the simple-target scan of `windows` targets: `/` needs a look at its
/// neighbours, `?` and `#` end the path, `%` and `\` (percent and log escapes) and `;`
/// (parameters) need the full normalisation.
const SIMPLE_SCAN_CLASS: [u8; 256] = {
    let mut table = [PLAIN; 256];
    table[b'/' as usize] = SLASH;
    table[b'?' as usize] = QUERY;
    table[b'#' as usize] = QUERY;
    table[b'%' as usize] = NOT_SIMPLE;
    table[b'\\' as usize] = NOT_SIMPLE;
    table[b';' as usize] = NOT_SIMPLE;
    table
};

/// Length of the path part (before `?`/`#`) of a simple target, one whose normalisation is
/// just "cut the query" (and for `windows`, "trim the last segment's trailing dots and
/// spaces"): it starts with `/` and its path has no `%` or `\`, no empty segment and no
/// segment starting with `.`; for `windows` also no `;` and no segment ending in `.` or space
/// other than the last. `None` otherwise.
fn simple_path_len(raw_target: &[u8], semantics: PathSemantics) -> Option<usize> {
    if !semantics.is_windows() {
        return simple_linux_path_len(raw_target);
    }
    if raw_target.first() != Some(&b'/') {
        return None;
    }
    for (index, &byte) in raw_target.iter().enumerate() {
        match SIMPLE_SCAN_CLASS[usize::from(byte)] {
            PLAIN => {}
            SLASH => {
                if matches!(raw_target.get(index + 1), Some(b'/' | b'.')) {
                    return None;
                }
                if index > 0 && matches!(raw_target[index - 1], b'.' | b' ') {
                    return None;
                }
            }
            QUERY => return Some(index),
            _ => return None,
        }
    }
    Some(raw_target.len())
}

/// Whether normalising a `linux` target could give a path that is not a prefix of its raw
/// bytes: it is not in origin form (`/…`), or its path (before `?`/`#`) holds a `%` or a backslash, an
/// empty segment (`//`) or a dot segment (`/.`). Runs on every line.
#[inline(always)]
fn may_normalize_elsewhere(raw_target: &[u8]) -> bool {
    simple_linux_path_len(raw_target).is_none()
}

/// [`simple_path_len`] for `linux`: the length of the path part of a target whose
/// normalisation only cuts the query, else `None`.
#[inline(always)]
fn simple_linux_path_len(raw_target: &[u8]) -> Option<usize> {
    if raw_target.first() != Some(&b'/') {
        return None;
    }
    // Sixteen bytes at a time: flags `%`, `\`, a `/` followed by `/` or `.` (the block one
    // byte on), and the `?`/`#` that ends the path; only the flags before the first end count.
    // The last block is the target's last sixteen bytes (the ones it shares with the block
    // before were found clean there), or the whole target padded with NULs, which neither
    // flag nor end anything; the byte after the target is NUL too.
    let len = raw_target.len();
    let mut at = 0;
    loop {
        let last = at + 17 > len;
        let (block, next) = match raw_target.get(at..at + 17) {
            Some(bytes) => {
                let block = |from: usize| Block::new(bytes[from..from + 16].try_into().expect("sixteen bytes"));
                (block(0), block(1))
            }
            None => {
                let block = match len.checked_sub(16) {
                    Some(start) => {
                        at = start;
                        Block::new(raw_target[start..].try_into().expect("sixteen bytes"))
                    }
                    None => Block::padded(raw_target),
                };
                (block, block.following())
            }
        };
        let escaped = block.eq(b'%') | block.eq(b'\\');
        let odd_segment = block.eq(b'/') & (next.eq(b'/') | next.eq(b'.'));
        let flags = (escaped | odd_segment).bits();
        let path_end = (block.eq(b'?') | block.eq(b'#')).bits();
        if path_end != 0 {
            let end = path_end.trailing_zeros();
            return (flags & ((1 << end) - 1) == 0).then_some(at + end as usize);
        }
        if flags != 0 {
            return None;
        }
        if last {
            return Some(len);
        }
        at += 16;
    }
}

/// A file path (from a storage log) written as the request target that normalises to that
/// same path: `%`, `?`, `#` and `\\` percent-encoded, so none is decoded, cut at, or read as a
/// log escape (`\\` then separates under `windows` only, as it does on that file system).
/// `path` itself when it holds none of them.
pub fn file_path_as_target<'a>(path: &'a [u8], scratch: &'a mut Vec<u8>) -> &'a [u8] {
    if !path.iter().any(|b| matches!(b, b'%' | b'?' | b'#' | b'\\')) {
        return path;
    }
    scratch.clear();
    for &byte in path {
        match byte {
            b'%' => scratch.extend_from_slice(b"%25"),
            b'?' => scratch.extend_from_slice(b"%3F"),
            b'#' => scratch.extend_from_slice(b"%23"),
            b'\\' => scratch.extend_from_slice(b"%5C"),
            _ => scratch.push(byte),
        }
    }
    scratch
}

/// Normalisation of a simple target's path part (see [`simple_path_len`]).
fn write_simple_path(path: &[u8], semantics: PathSemantics, case_fold: bool, out: &mut Vec<u8>) {
    let mut path = path;
    if semantics.is_windows() {
        // Only the last segment can end in dots or spaces; the '/' before it stops the trim.
        while let [rest @ .., b'.' | b' '] = path {
            path = rest;
        }
    }
    out.clear();
    out.extend_from_slice(&path[..path.len().min(MAX_NORMALIZED_LEN)]);
    if case_fold {
        fold_ascii_case(out);
    }
}

/// Full normalisation used by [`SensitivePaths::classify`]; clears `out` and writes the
/// normalised path (always starting with `/`, at most [`MAX_NORMALIZED_LEN`] bytes).
///
/// In order (the module docs say which server behaviour each step reproduces): undo log
/// escaping; reduce an absolute-form target (`scheme://host/p`, `scheme:/p`) to its path; cut
/// at the first `?` or `#`; percent-decode once; split at `/` (and, for `windows`, at `\`);
/// per segment (for `windows`: drop `;params`, trim trailing dots and spaces), remove empty
/// and `.` segments, let `..` pop (never above root); keep a trailing `/` when the path names
/// a directory; fold ASCII case if `case_fold`. So `/static/../Recordings/%2e/x.WAV` becomes
/// `/recordings/x.wav` when folding.
pub fn normalize_target(raw_target: &[u8], semantics: PathSemantics, case_fold: bool, out: &mut Vec<u8>) {
    match simple_path_len(raw_target, semantics) {
        Some(path_len) => write_simple_path(&raw_target[..path_len], semantics, case_fold, out),
        None => normalize_general(raw_target, semantics, case_fold, out),
    }
}

/// [`normalize_target`] without the shortcut for simple targets.
fn normalize_general(raw_target: &[u8], semantics: PathSemantics, case_fold: bool, out: &mut Vec<u8>) {
    out.clear();
    // Index 0 receives the leading '/'; the log-unescaped target is stored from index 1 and
    // rewritten in place, front to back. The rewrite emits at most one byte per decoded
    // byte plus that leading '/', so with the one-byte head start it never overwrites bytes
    // it has yet to read.
    out.push(b'/');
    unescape_log_field(raw_target, out);
    let decoded_end = out.len();
    let path_start = 1 + absolute_form_path_offset(&out[1..]);
    let path_end = match memchr2(b'?', b'#', &out[path_start..]) {
        Some(offset) => path_start + offset,
        None => decoded_end,
    };
    let normalized_len = rewrite_segments(out, path_start, path_end, semantics);
    out.truncate(normalized_len.min(MAX_NORMALIZED_LEN));
    if case_fold {
        fold_ascii_case(out);
    }
}

/// Where the path starts in an absolute-form target: `scheme://authority/path` with any
/// RFC 3986 scheme (`ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`, any case; nginx serves
/// `ftp://h/p` and `svn+ssh://h/p`), or `scheme:/path` with no authority (Apache serves
/// `http:/p`). 0 for an origin-form target. With no path, points at the `?`/`#` or the end.
fn absolute_form_path_offset(target: &[u8]) -> usize {
    if !target.first().is_some_and(u8::is_ascii_alphabetic) {
        return 0;
    }
    let scheme_len = target
        .iter()
        .position(|&byte| !(byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'-' | b'.')))
        .unwrap_or(target.len());
    if target.get(scheme_len) != Some(&b':') {
        return 0;
    }
    let after_colon = scheme_len + 1;
    if target[after_colon..].starts_with(b"//") {
        let authority_start = after_colon + 2;
        match memchr3(b'/', b'?', b'#', &target[authority_start..]) {
            Some(offset) => authority_start + offset,
            None => target.len(),
        }
    } else {
        after_colon
    }
}

/// Percent-decodes `buf[read_start..read_end]` and resolves its segments, writing the
/// result to `buf[0..]` (where `buf[0]` is already `/`). Returns the result's length.
fn rewrite_segments(buf: &mut [u8], read_start: usize, read_end: usize, semantics: PathSemantics) -> usize {
    let windows = semantics.is_windows();
    let mut cursor = SegmentCursor { write: 1, segment_start: 1, trim_names: windows };
    let mut in_params = false;
    let mut read = read_start;
    while read < read_end {
        // Copy (or, inside `;params`, skip) a run of bytes that need no decision at once.
        let run_len = buf[read..read_end]
            .iter()
            .position(|&byte| matches!(byte, b'%' | b'/' | b'\\' | b';'))
            .unwrap_or(read_end - read);
        if run_len > 0 {
            if !in_params {
                buf.copy_within(read..read + run_len, cursor.write);
                cursor.write += run_len;
            }
            read += run_len;
            continue;
        }
        let mut byte = buf[read];
        read += 1;
        if byte == b'%' && read + 2 <= read_end {
            if let (Some(high), Some(low)) = (hex_value(buf[read]), hex_value(buf[read + 1])) {
                byte = high << 4 | low;
                read += 2;
            }
        }
        match byte {
            b'/' => {
                cursor.finish_segment(buf, false);
                in_params = false;
            }
            b'\\' if windows => {
                cursor.finish_segment(buf, false);
                in_params = false;
            }
            _ if in_params => {}
            b';' if windows => in_params = true,
            _ => {
                buf[cursor.write] = byte;
                cursor.write += 1;
            }
        }
    }
    cursor.finish_segment(buf, true);
    cursor.write
}

/// Write position of the in-place segment rewrite.
struct SegmentCursor {
    /// Next byte of output goes here.
    write: usize,
    /// Where the segment being written began; `buf[segment_start - 1]` is always `/`.
    segment_start: usize,
    /// Trim trailing dots and spaces of each name (Win32 name rules).
    trim_names: bool,
}

impl SegmentCursor {
    /// Resolves the segment `buf[segment_start..write]`: drops it if empty or `.`, pops the
    /// previous one for `..`, otherwise (with `trim_names`, after trimming trailing dots and
    /// spaces) keeps it, followed by `/` unless it is the last segment.
    fn finish_segment(&mut self, buf: &mut [u8], is_last: bool) {
        let segment = &buf[self.segment_start..self.write];
        if segment.is_empty() || segment == b"." {
            self.write = self.segment_start;
            return;
        }
        if segment == b".." {
            if self.segment_start > 1 {
                // buf[0] is '/', so a parent separator is always found.
                let parent_start = memrchr(b'/', &buf[..self.segment_start - 1]).map_or(1, |slash| slash + 1);
                self.segment_start = parent_start;
            }
            self.write = self.segment_start;
            return;
        }
        let mut end = self.write;
        while self.trim_names && end > self.segment_start && matches!(buf[end - 1], b'.' | b' ') {
            end -= 1;
        }
        if end == self.segment_start || is_last {
            self.write = end;
            return;
        }
        buf[end] = b'/';
        self.write = end + 1;
        self.segment_start = end + 1;
    }
}

/// ASCII lowercase, written branch-free so it vectorises (`make_ascii_lowercase` does not).
fn fold_ascii_case(bytes: &mut [u8]) {
    for byte in bytes {
        let is_upper = byte.wrapping_sub(b'A') < 26;
        *byte |= u8::from(is_upper) << 5;
    }
}

/// Value of one ASCII hex digit (either case).
fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use PathSemantics::{Linux, Windows};

    fn normalized(raw: &[u8], semantics: PathSemantics, case_fold: bool) -> String {
        let mut out = Vec::new();
        normalize_target(raw, semantics, case_fold, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// The cheap reject is sound: a target it rejects normalises to nothing under a
        /// prefix, whatever escapes, dot and empty segments, case or form it uses.
        #[test]
        fn the_cheap_reject_never_drops_a_sensitive_target(
            pieces in proptest::collection::vec(proptest::sample::select(&[
                "/", "//", ".", "..", "%2e", "%2F", "%5c", "\\", "recordings", "RECordings", "x", "a.wav", "?", "#",
                "%72", "http://h", "https:", ";", " ", "%", "%%", "\\x2f",
            ][..]), 0..10),
            case_fold in any::<bool>(),
        ) {
            let raw = pieces.concat();
            let paths = SensitivePaths::new(&strings(&["/recordings/"]), &strings(&["wav"]), case_fold);
            if !paths.may_be_sensitive(raw.as_bytes(), Linux) {
                let mut out = Vec::new();
                normalize_target(raw.as_bytes(), Linux, case_fold, &mut out);
                prop_assert!(paths.classify_normalized(&out, case_fold).is_none(), "{raw:?} -> {:?}", String::from_utf8_lossy(&out));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// The block scan is the byte-by-byte reading of its rule, over several blocks and
        /// every kind of last block.
        #[test]
        fn the_block_scan_is_the_byte_by_byte_rule(
            bytes in proptest::collection::vec(proptest::sample::select(&b"/.%\\?#ax"[..]), 0..70),
            clean in 0usize..70,
        ) {
            // Mostly clean heads, so the flags and ends fall in every block.
            let mut raw = vec![b'/'];
            raw.extend(bytes.iter().enumerate().map(|(i, &b)| if i < clean { b'a' } else { b }));
            let path_len = raw.iter().position(|b| matches!(b, b'?' | b'#')).unwrap_or(raw.len());
            let path = &raw[..path_len];
            let byte_by_byte = path.iter().any(|b| matches!(b, b'%' | b'\\'))
                || path.windows(2).any(|pair| pair[0] == b'/' && matches!(pair[1], b'/' | b'.'));
            let expected = (!byte_by_byte).then_some(path_len);
            prop_assert_eq!(simple_linux_path_len(&raw), expected, "{:?}", String::from_utf8_lossy(&raw));
        }
    }

    #[test]
    fn a_storage_log_file_name_with_hash_percent_or_query_mark_is_the_file_it_names() {
        let paths = recordings_wav_mp3();
        let classified = |path: &str, semantics: PathSemantics| {
            let mut scratch = Vec::new();
            let target = file_path_as_target(path.as_bytes(), &mut scratch).to_vec();
            let mut out = Vec::new();
            let class = paths.classify(&target, semantics, &mut out);
            (class, String::from_utf8_lossy(&out).into_owned())
        };
        let recording = Some(PathClass::Recording);
        assert_eq!(classified("/recordings/call #5.wav", Linux), (recording, "/recordings/call #5.wav".into()));
        assert_eq!(classified("/recordings/is it?.wav", Linux), (recording, "/recordings/is it?.wav".into()));
        assert_eq!(classified("/recordings/100%.wav", Linux), (recording, "/recordings/100%.wav".into()));
        assert_eq!(classified("/recordings/evil%2ewav", Linux).0, Some(PathClass::OtherUnderPrefix));
        assert_eq!(classified("/recordings/a\\x41.wav", Linux), (recording, "/recordings/a\\x41.wav".into()));
        assert_eq!(classified("/x/..\\recordings\\a.wav", PathSemantics::Windows).1, "/recordings/a.wav");
        let mut scratch = Vec::new();
        assert_eq!(file_path_as_target(b"/r/a b.wav", &mut scratch), b"/r/a b.wav");
        assert!(scratch.is_empty(), "a plain name is not copied");
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| item.to_string()).collect()
    }

    fn recordings_wav_mp3() -> SensitivePaths {
        SensitivePaths::new(&strings(&["/recordings/"]), &strings(&["wav", "mp3"]), true)
    }

    /// The Windows/Tomcat rules recwatch applied to every source before path semantics
    /// existed; they are what IIS, Samba and NAS shares do.
    #[test]
    fn windows_normalisation_resolves_every_evasion() {
        let cases: &[(&[u8], &str)] = &[
            (b"/recordings/x.wav", "/recordings/x.wav"),
            (b"/static/../Recordings/%2e/x.WAV", "/recordings/x.wav"),
            (b"/a/%2E%2E/recordings/x.wav", "/recordings/x.wav"),
            (b"/recordings/%2e%2E/secret", "/secret"),
            (b"//recordings//x.wav", "/recordings/x.wav"),
            (b"/./recordings/./x.wav", "/recordings/x.wav"),
            (b"/../../recordings/x.wav", "/recordings/x.wav"),
            (b"/..", "/"),
            (b"/../..", "/"),
            (b"/recordings/..", "/"),
            (b"/recordings/x.wav;jsessionid=ABC", "/recordings/x.wav"),
            (b"/recordings;v=1/x.wav", "/recordings/x.wav"),
            (b"/a/..;/recordings/x.wav", "/recordings/x.wav"),
            (b"/recordings/x.wav.", "/recordings/x.wav"),
            (b"/recordings/x.wav. . ", "/recordings/x.wav"),
            (b"/recordings/x.wav%20", "/recordings/x.wav"),
            (b"/recordings./x.wav", "/recordings/x.wav"),
            (b"/recordings/.../x.wav", "/recordings/x.wav"),
            (b"http://example.com/recordings/x.wav", "/recordings/x.wav"),
            (b"HTTPS://example.com:8443/Recordings/x.wav?x=1", "/recordings/x.wav"),
            (b"http://example.com", "/"),
            (b"http://example.com?next=/recordings/a.wav", "/"),
            (b"/recordings/x.wav?dl=1", "/recordings/x.wav"),
            (b"/recordings/x.wav#t=10", "/recordings/x.wav"),
            (b"/recordings/x.wav%3Fdl=1", "/recordings/x.wav?dl=1"),
            (b"/recordings/x.wav%23frag", "/recordings/x.wav#frag"),
            (br"/recordings\x5Cx.wav", "/recordings/x.wav"),
            (br"/recordings\\x.wav", "/recordings/x.wav"),
            (b"/recordings%5Cx.wav", "/recordings/x.wav"),
            (b"/recordings%2Fx.wav", "/recordings/x.wav"),
            (br"/recordings/\x2e\x2e/x", "/x"),
            (br"/a\x2F..\x2Frecordings/x.wav", "/recordings/x.wav"),
            (b"/recordings/2019/02/", "/recordings/2019/02/"),
            (b"/recordings/2019/.", "/recordings/2019/"),
            (b"/recordings/2019/..", "/recordings/"),
            (b"/recordings/2019%2F", "/recordings/2019/"),
            (b"/recordings/2019/?C=M;O=D", "/recordings/2019/"),
            (b"/recordings/2019/...", "/recordings/2019/"),
            (b"/recordings", "/recordings"),
            (b"", "/"),
            (b"?x=1", "/"),
            (b"recordings/x.wav", "/recordings/x.wav"),
            (b"/a%zz/%4/%", "/a%zz/%4/%"),
            (b"/%252e%252e/", "/%2e%2e/"),
            (b"/a%2", "/a%2"),
            (b"/a%2?%41", "/a%2"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalized(raw, Windows, true), *want, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    /// What nginx 1.22 and Apache 2.4 on Linux resolve (measured against both, see
    /// `tests/real_servers.rs`): the same evasions are undone, but `...`, blanks, `;x`, `\`
    /// and trailing dots are ordinary name bytes.
    #[test]
    fn linux_normalisation_resolves_what_nginx_and_apache_resolve() {
        let cases: &[(&[u8], &str)] = &[
            (b"/recordings/x.wav", "/recordings/x.wav"),
            (b"/static/../Recordings/%2e/x.WAV", "/recordings/x.wav"),
            (b"/a/%2E%2E/recordings/x.wav", "/recordings/x.wav"),
            (b"//recordings//x.wav", "/recordings/x.wav"),
            (b"/./recordings/./x.wav", "/recordings/x.wav"),
            (b"/../../recordings/x.wav", "/recordings/x.wav"),
            (b"/recordings%2Fx.wav", "/recordings/x.wav"),
            (b"/recordings/x.wav;jsessionid=ABC", "/recordings/x.wav;jsessionid=abc"),
            (b"/recordings/x.wav.", "/recordings/x.wav."),
            (b"/recordings/x.wav%20", "/recordings/x.wav "),
            (b"/recordings./x.wav", "/recordings./x.wav"),
            (b"/recordings/.../x.wav", "/recordings/.../x.wav"),
            (br"/recordings\x.wav", r"/recordings\x.wav"),
            (b"/recordings%5Cx.wav", r"/recordings\x.wav"),
            (b"/a/..;/recordings/x.wav", "/a/..;/recordings/x.wav"),
            (b"/%252e%252e/", "/%2e%2e/"),
            (b"/recordings/%c0%ae%c0%ae/x.wav", "/recordings/\u{c0}\u{ae}\u{c0}\u{ae}/x.wav"),
            (b"/recordings/2019/?C=M;O=D", "/recordings/2019/"),
            (b"", "/"),
            (b"recordings/x.wav", "/recordings/x.wav"),
        ];
        for (raw, want) in cases {
            let mut out = Vec::new();
            normalize_target(raw, Linux, true, &mut out);
            let want: Vec<u8> = want.chars().map(|c| c as u32 as u8).collect();
            assert_eq!(out, want, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    /// Issue 12, class 1: a segment the servers keep as a name was trimmed or dropped before
    /// `..` applied, so `..` popped `recordings` and nothing fired.
    #[test]
    fn ordinary_names_popped_by_dot_dot_left_recording_fetches_unseen() {
        let paths = recordings_wav_mp3();
        let mut scratch = Vec::new();
        for raw in [
            &b"/recordings/.../../call.wav"[..],
            b"/recordings/%20/../call.wav",
            b"/recordings/ /../call.wav",
            b"/recordings/;x/../call.wav",
            b"/recordings/.;x/../call.wav",
            br"/recordings/\/../call.wav",
            br"/recordings/\x5C/../call.wav",
            b"/recordings/%5c/../call.wav",
            br"/recordings/x\../../call.wav",
            b"/recordings/x.wav./../call.wav",
        ] {
            assert_eq!(
                paths.classify(raw, Linux, &mut scratch),
                Some(PathClass::Recording),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
            assert_eq!(scratch, b"/recordings/call.wav", "{:?}", String::from_utf8_lossy(raw));
        }
    }

    /// Issue 12, class 1 mirrored: `/training/.../../recordings/demo.wav` is the public
    /// `/training/recordings/demo.wav` on Linux, not `/recordings/demo.wav`.
    #[test]
    fn ordinary_names_popped_by_dot_dot_raised_false_alarms_on_public_files() {
        let paths = recordings_wav_mp3();
        let mut scratch = Vec::new();
        for raw in [
            &b"/training/.../../recordings/demo.wav"[..],
            b"/training/%20/../recordings/demo.wav",
            b"/training/;x/../recordings/demo.wav",
            b"/training/.;x/../recordings/demo.wav",
            br"/training/\/../recordings/demo.wav",
            b"/training/%5C/../recordings/demo.wav",
        ] {
            assert_eq!(paths.classify(raw, Linux, &mut scratch), None, "{:?}", String::from_utf8_lossy(raw));
            // The same targets under Windows rules do reach the recording.
            assert_eq!(paths.classify(raw, Windows, &mut scratch), Some(PathClass::Recording));
        }
    }

    /// Issue 12, class 2: nginx serves absolute-form targets of any scheme, Apache serves
    /// `scheme:/path`; only `http(s)://` was understood.
    #[test]
    fn absolute_forms_with_other_schemes_left_recording_fetches_unseen() {
        let paths = recordings_wav_mp3();
        let mut scratch = Vec::new();
        for raw in [
            &b"ftp://h/recordings/x.wav"[..],
            b"x://h/recordings/x.wav",
            b"svn+ssh://h:22/recordings/x.wav",
            b"A1.b-c+d://h/recordings/x.wav?y=1",
            b"http:/recordings/x.wav",
            b"HTTP:/recordings/x.wav",
            b"ws:/recordings/x.wav",
        ] {
            for semantics in PathSemantics::ALL {
                assert_eq!(
                    paths.classify(raw, semantics, &mut scratch),
                    Some(PathClass::Recording),
                    "{:?}",
                    String::from_utf8_lossy(raw)
                );
                assert_eq!(scratch, b"/recordings/x.wav");
            }
        }
        for (raw, want) in [
            (&b"1http://h/recordings/x.wav"[..], "/1http:/h/recordings/x.wav"),
            (b"ftp://h", "/"),
            (b"ftp://h?x=/recordings/x.wav", "/"),
            (b"/x:/recordings/x.wav", "/x:/recordings/x.wav"),
        ] {
            assert_eq!(normalized(raw, Linux, false), want, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    /// Issue 12, class 5's neighbour: a Linux server is case-sensitive, but the configured
    /// folding still applies; a Windows source folds even when the configuration does not.
    #[test]
    fn windows_sources_fold_case_even_when_the_configuration_does_not() {
        let paths = SensitivePaths::new(&strings(&["/Recordings/"]), &strings(&["WAV"]), false);
        let mut scratch = Vec::new();
        assert_eq!(paths.classify(b"/recordings/x.wav", Linux, &mut scratch), None);
        assert_eq!(paths.classify(b"/Recordings/x.WAV", Linux, &mut scratch), Some(PathClass::Recording));
        assert_eq!(paths.classify(b"/RECORDINGS/x.wav", Windows, &mut scratch), Some(PathClass::Recording));
        assert_eq!(scratch, b"/recordings/x.wav");
    }

    #[test]
    fn semantics_names_round_trip() {
        for semantics in PathSemantics::ALL {
            assert_eq!(PathSemantics::from_name(semantics.as_str()), Some(semantics));
        }
        assert_eq!(PathSemantics::default(), Linux);
        assert_eq!(PathSemantics::from_name("Linux"), None);
    }

    #[test]
    fn normalisation_keeps_case_unless_folding() {
        for semantics in PathSemantics::ALL {
            assert_eq!(normalized(b"/Recordings/X.WAV", semantics, false), "/Recordings/X.WAV");
            assert_eq!(normalized(b"/Recordings/X.WAV", semantics, true), "/recordings/x.wav");
        }
    }

    #[test]
    fn normalisation_caps_output_length() {
        let mut raw = b"/recordings/".to_vec();
        raw.resize(10_000, b'a');
        let mut out = Vec::new();
        normalize_target(&raw, Linux, false, &mut out);
        assert_eq!(out.len(), MAX_NORMALIZED_LEN);
        assert!(out.starts_with(b"/recordings/aaa"));
    }

    #[test]
    fn windows_classification_table() {
        let paths = recordings_wav_mp3();
        let cases: &[(&[u8], Option<PathClass>)] = &[
            (b"/recordings/2019/x.wav", Some(PathClass::Recording)),
            (b"/recordings/2019/x.MP3", Some(PathClass::Recording)),
            (b"/recordings/2019/x.json", Some(PathClass::OtherUnderPrefix)),
            (b"/recordings/x.wav.md5", Some(PathClass::OtherUnderPrefix)),
            (b"/recordings/x", Some(PathClass::OtherUnderPrefix)),
            (b"/recordings/x.wav%3Fdl=1", Some(PathClass::OtherUnderPrefix)),
            (b"/static/audio/beep.wav", None),
            (b"/recordings/2019/02/", Some(PathClass::Listing)),
            (b"/recordings/", Some(PathClass::Listing)),
            (b"/recordings", Some(PathClass::Listing)),
            (b"/recordings?C=M;O=A", Some(PathClass::Listing)),
            (b"/recordingsX/a.wav", None),
            (b"/recordings-old/a.wav", None),
            (b"/RECORDINGS/X.WAV", Some(PathClass::Recording)),
            (b"/static/../Recordings/%2e/x.WAV", Some(PathClass::Recording)),
            (b"/recordings./x.wav", Some(PathClass::Recording)),
            (b"/recordings/x.wav?dl=1", Some(PathClass::Recording)),
            (b"/recordings/x.wav.", Some(PathClass::Recording)),
            (b"/recordings/x.wav;jsessionid=1", Some(PathClass::Recording)),
            (b"http://h/recordings/x.wav", Some(PathClass::Recording)),
            (b"/", None),
            (b"/index.html", None),
            (b"/static/app.js?v=/recordings/x.wav", None),
            (b"/recordings/../index.html", None),
        ];
        let mut scratch = Vec::new();
        for (raw, want) in cases {
            assert_eq!(paths.classify(raw, Windows, &mut scratch), *want, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn linux_classification_table() {
        let paths = recordings_wav_mp3();
        let cases: &[(&[u8], Option<PathClass>)] = &[
            (b"/recordings/2019/x.wav", Some(PathClass::Recording)),
            (b"/RECORDINGS/X.WAV", Some(PathClass::Recording)),
            (b"/recordings/x.wav.", Some(PathClass::OtherUnderPrefix)),
            (b"/recordings/x.wav;jsessionid=1", Some(PathClass::OtherUnderPrefix)),
            (b"/recordings/x.wav%20", Some(PathClass::OtherUnderPrefix)),
            (b"/recordings./x.wav", None),
            (b"/recordings;v=1/x.wav", None),
            (br"/recordings\x.wav", None),
            (b"/recordings/", Some(PathClass::Listing)),
            (b"/recordings", Some(PathClass::Listing)),
            (b"http://h/recordings/x.wav", Some(PathClass::Recording)),
            (b"/static/app.js?v=/recordings/x.wav", None),
        ];
        let mut scratch = Vec::new();
        for (raw, want) in cases {
            assert_eq!(paths.classify(raw, Linux, &mut scratch), *want, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn classify_leaves_the_normalised_path_in_scratch() {
        let paths = recordings_wav_mp3();
        let mut scratch = b"stale".to_vec();
        let class = paths.classify(b"/static/../Recordings/%2e/x.WAV?dl=1", Linux, &mut scratch);
        assert_eq!(class, Some(PathClass::Recording));
        assert_eq!(scratch, b"/recordings/x.wav");
        let class = paths.classify(b"/Recordings?C=M;O=A", Linux, &mut scratch);
        assert_eq!(class, Some(PathClass::Listing));
        assert_eq!(scratch, b"/recordings/");
    }

    #[test]
    fn case_sensitive_configuration_compares_exactly() {
        let paths = SensitivePaths::new(&strings(&["/recordings"]), &strings(&["wav"]), false);
        let mut scratch = Vec::new();
        assert_eq!(paths.classify(b"/RECORDINGS/x.wav", Linux, &mut scratch), None);
        assert_eq!(paths.classify(b"/recordings/x.WAV", Linux, &mut scratch), Some(PathClass::OtherUnderPrefix));
        assert_eq!(paths.classify(b"/recordings/X.wav", Linux, &mut scratch), Some(PathClass::Recording));
        assert_eq!(scratch, b"/recordings/X.wav");
    }

    #[test]
    fn empty_prefix_list_means_every_path() {
        let paths = SensitivePaths::new(&[], &strings(&["wav"]), true);
        let mut scratch = Vec::new();
        assert_eq!(paths.classify(b"/a.wav", Linux, &mut scratch), Some(PathClass::Recording));
        assert_eq!(paths.classify(b"/", Linux, &mut scratch), Some(PathClass::Listing));
        assert_eq!(paths.classify(b"/index.html", Linux, &mut scratch), Some(PathClass::OtherUnderPrefix));
    }

    #[test]
    fn empty_extension_list_means_any_file_is_a_recording() {
        let paths = SensitivePaths::new(&strings(&["/recordings/"]), &[], true);
        let mut scratch = Vec::new();
        assert_eq!(paths.classify(b"/recordings/x.json", Linux, &mut scratch), Some(PathClass::Recording));
        assert_eq!(paths.classify(b"/recordings/2019/", Linux, &mut scratch), Some(PathClass::Listing));
    }

    #[test]
    fn configured_prefixes_and_extensions_are_normalised() {
        let paths = SensitivePaths::new(&strings(&["Data/Recordings", "/calls/./archive/"]), &strings(&[".WAV"]), true);
        let mut scratch = Vec::new();
        assert_eq!(paths.classify(b"/data/recordings/a.wav", Linux, &mut scratch), Some(PathClass::Recording));
        assert_eq!(paths.classify(b"/calls/archive/a.wav", Linux, &mut scratch), Some(PathClass::Recording));
    }

    #[test]
    fn trailing_dot_in_a_middle_segment_does_not_slip_past_the_windows_fast_reject() {
        let paths = SensitivePaths::new(&strings(&["/data/recordings/"]), &strings(&["wav"]), true);
        let mut scratch = Vec::new();
        for raw in [&b"/data./recordings/a.wav"[..], b"/data /recordings/a.wav", b"/DATA./Recordings./a.wav"] {
            assert_eq!(
                paths.classify(raw, Windows, &mut scratch),
                Some(PathClass::Recording),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn fast_reject_does_not_touch_scratch() {
        let paths = recordings_wav_mp3();
        let mut scratch = b"untouched".to_vec();
        for raw in [&b"/static/app.js?v=3"[..], b"/index.html", b"/api/v1/items/42?x=%2e%2e", b"/a b/c"] {
            assert_eq!(paths.classify(raw, Linux, &mut scratch), None);
            assert_eq!(scratch, b"untouched");
        }
        // Not simple, so it is normalised (and still rejected).
        assert_eq!(paths.classify(b"/static/%2e/x", Linux, &mut scratch), None);
        assert_eq!(scratch, b"/static/x");
    }

    #[test]
    fn labels_are_stable() {
        let labels: Vec<&str> = PathClass::ALL.iter().map(|class| class.as_str()).collect();
        assert_eq!(labels, ["recording", "listing", "other"]);
    }

    /// Targets built from the pieces that matter to normalisation, so the generator reaches
    /// the interesting branches far more often than uniform bytes would.
    fn target_strategy() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(&b"/"[..]),
            Just(&b"\\"[..]),
            Just(&b"."[..]),
            Just(&b".."[..]),
            Just(&b"%2e"[..]),
            Just(&b"%2F"[..]),
            Just(&b"%5c"[..]),
            Just(&b"%"[..]),
            Just(&b"%25"[..]),
            Just(&b"%3F"[..]),
            Just(&b"?"[..]),
            Just(&b"#"[..]),
            Just(&b";"[..]),
            Just(&b" "[..]),
            Just(&br"\x2e"[..]),
            Just(&br"\x5C"[..]),
            Just(&br"\"[..]),
            Just(&b"http://"[..]),
            Just(&b"HTTPS://h:1"[..]),
            Just(&b"svn+ssh:"[..]),
            Just(&b"..."[..]),
            Just(&b"%20"[..]),
            Just(&b"recordings"[..]),
            Just(&b"Recordings"[..]),
            Just(&b"x.wav"[..]),
            Just(&b"a"[..]),
            Just(&b"\xff"[..]),
        ];
        prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
    }

    /// Targets that are mostly simple (see `simple_path_len`), to exercise the shortcut.
    fn simple_target_strategy() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(&b"/"[..]),
            Just(&b"a"[..]),
            Just(&b"A"[..]),
            Just(&b"."[..]),
            Just(&b" "[..]),
            Just(&b"?"[..]),
            Just(&b"#"[..]),
            Just(&b";"[..]),
            Just(&b"\\"[..]),
            Just(&b"recordings"[..]),
            Just(&b"Recordings"[..]),
            Just(&b"x.wav"[..]),
        ];
        prop::collection::vec(piece, 0..16).prop_map(|pieces| {
            let mut target = b"/".to_vec();
            target.extend(pieces.concat());
            target
        })
    }

    fn semantics_strategy() -> impl Strategy<Value = PathSemantics> {
        prop_oneof![Just(Linux), Just(Windows)]
    }

    proptest! {
        #[test]
        fn classify_never_panics_on_arbitrary_bytes(raw in prop::collection::vec(any::<u8>(), 0..300), semantics in semantics_strategy()) {
            let paths = recordings_wav_mp3();
            let mut scratch = Vec::new();
            let _ = paths.classify(&raw, semantics, &mut scratch);
            normalize_target(&raw, semantics, false, &mut scratch);
            prop_assert!(scratch.starts_with(b"/"));
        }

        #[test]
        fn normalised_paths_are_canonical(raw in target_strategy(), semantics in semantics_strategy(), fold in any::<bool>()) {
            let mut out = Vec::new();
            normalize_target(&raw, semantics, fold, &mut out);
            prop_assert!(out.starts_with(b"/"));
            prop_assert!(out.len() <= MAX_NORMALIZED_LEN);
            let windows = semantics == Windows;
            prop_assert!(!windows || !out.contains(&b'\\'));
            for segment in out[1..].split(|&byte| byte == b'/') {
                // Only the final (empty) segment after a trailing '/' may be empty.
                prop_assert!(segment != b"." && segment != b"..");
                prop_assert!(!windows || !segment.contains(&b';'));
                prop_assert!(!windows || (!segment.ends_with(b".") && !segment.ends_with(b" ")));
            }
            prop_assert!(!out.windows(2).any(|pair| pair == b"//"));
        }

        #[test]
        fn normalisation_is_idempotent(raw in target_strategy(), semantics in semantics_strategy(), fold in any::<bool>()) {
            let mut once = Vec::new();
            normalize_target(&raw, semantics, fold, &mut once);
            // Decoding is deliberately done once: a path still holding '%' (from "%25"), '?'
            // or '#' (from "%3F"/"%23"), or (`linux`) a '\\' that reads as a log escape,
            // would change again, which is correct, not a bug.
            if once.iter().any(|byte| matches!(byte, b'%' | b'?' | b'#' | b'\\')) {
                return Ok(());
            }
            let mut twice = Vec::new();
            normalize_target(&once, semantics, fold, &mut twice);
            prop_assert_eq!(once, twice);
        }

        #[test]
        fn shortcut_matches_full_normalisation(
            raw in prop_oneof![simple_target_strategy(), target_strategy()],
            semantics in semantics_strategy(),
            fold in any::<bool>(),
        ) {
            let (mut fast, mut full) = (Vec::new(), Vec::new());
            normalize_target(&raw, semantics, fold, &mut fast);
            normalize_general(&raw, semantics, fold, &mut full);
            prop_assert_eq!(fast, full);
        }

        #[test]
        fn fast_reject_never_changes_the_answer_on_simple_targets(
            raw in simple_target_strategy(),
            semantics in semantics_strategy(),
            fold in any::<bool>(),
        ) {
            let paths = SensitivePaths::new(&strings(&["/recordings/", "/a/recordings"]), &strings(&["wav"]), fold);
            let mut scratch = Vec::new();
            let fast = paths.classify(&raw, semantics, &mut scratch);
            let case_fold = paths.folds_case(semantics);
            normalize_general(&raw, semantics, case_fold, &mut scratch);
            prop_assert_eq!(fast, paths.classify_normalized(&scratch, case_fold));
        }

        #[test]
        fn fast_reject_never_changes_the_answer(raw in target_strategy(), semantics in semantics_strategy(), fold in any::<bool>()) {
            let paths = SensitivePaths::new(&strings(&["/recordings/", "/a/recordings"]), &strings(&["wav"]), fold);
            let mut scratch = Vec::new();
            let fast = paths.classify(&raw, semantics, &mut scratch);
            let case_fold = paths.folds_case(semantics);
            normalize_general(&raw, semantics, case_fold, &mut scratch);
            prop_assert_eq!(fast, paths.classify_normalized(&scratch, case_fold));
        }
    }
}
