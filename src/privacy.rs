//! Personal data in request paths: recognises Swedish personnummer / samordningsnummer and
//! phone numbers in text and replaces each with a keyed pseudonym, so a recording named after
//! a caller never leaves the process in clear. Owns the recognisers, the pseudonym format and
//! the key. Never does I/O beyond loading the key file (or creating it once in the state dir).
//!
//! # What is recognised
//! - **Personnummer** (`pnr-…`): `YYMMDD-NNNN`, `YYMMDD+NNNN` (`+`: 100 years or older;
//!   `_`, `.` or a space may stand for the `-`),
//!   `YYMMDDNNNN`, `YYYYMMDD-NNNN`, `YYYYMMDD+NNNN` and `YYYYMMDDNNNN`, as a digit run not
//!   touching other digits, with a real calendar date (century 18, 19 or 20 in the long form;
//!   29 February only in leap years) and a valid Luhn check digit over the 10-digit form.
//!   **Samordningsnummer** are the same with the day plus 60 (61–91).
//! - **Phone numbers** (`tel-…`), never touching a letter or digit on either side:
//!   - international: `+` or `00`, then 8–15 digits starting with 1–9 (E.164), digit groups
//!     separated by single spaces, `-`, `.` or `_`: `+46 70 123 45 67`, `0046701234567`,
//!     `+1-202-555-0143`, `+1.202.555.0143`;
//!   - Swedish national: `0`, a digit 1–9, in all 8–10 digits; single spaces between digit
//!     groups and at most one `-`, `.` or `_`, right after the 2–4 digit area code:
//!     `070-123 45 67`, `08-123 456 78`, `0701234567`; or one of `-`, `.`, `_` between every
//!     group when the area code is `08` or 3–4 digits and every later group 2–3 digits:
//!     `070.123.45.67`, `08-123-456-78`. (So `01-02-2019`, a date, is not a number.)
//!
//! Every spelling of digits and separators counts as its ASCII form: full-width digits and
//! plus, the Unicode hyphens, dashes and minus signs (U+2010–U+2015, U+2212, U+FF0D, …) as
//! `-`, no-break and thin spaces as a space.
//!
//!   Where groups run on past the maximum, the longest prefix of whole groups that fits is
//!   taken. Colons never join groups, and dots only in the shapes above, so timestamps
//!   (`20190218-093000`, `09:30:00`), dates, IP addresses, Unix times (`1550480401.123`) and
//!   zero-padded ids (`000123456`) stay as they are.
//!
//! # The pseudonym
//! `pnr-` or `tel-` and 12 characters of RFC 4648 base32 (lowercase) of HMAC-SHA256(key,
//! kind ‖ canonical form): 60 bits, stable for one token and one key. Canonical forms make
//! spellings of one identity agree: a personnummer is its 10 digits (no century, no separator),
//! a phone number its international digits (`070-123 45 67`, `+46701234567` and
//! `0046 70 123 45 67` are all `46701234567`). The base32 alphabet has no 0, 1, 8 or 9, so a
//! pseudonym is never recognised again: pseudonymising is idempotent.

use std::borrow::Cow;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The key file created in the state directory when none is configured.
pub const STATE_KEY_FILE: &str = "pseudonym.key";
/// Shortest key accepted (bytes, after trimming surrounding whitespace).
pub const MIN_KEY_LEN: usize = 16;
/// Length of the encoded part of a pseudonym.
const PSEUDONYM_CHARS: usize = 12;
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read pseudonym key file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("pseudonym key in {} is shorter than {MIN_KEY_LEN} bytes", path.display())]
    TooShort { path: PathBuf },
    #[error("cannot create pseudonym key file {}: {source}", path.display())]
    Create { path: PathBuf, source: std::io::Error },
}

/// What a recognised token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// Personnummer or samordningsnummer.
    Personnummer,
    Phone,
}

impl TokenKind {
    /// The pseudonym prefix (without the dash).
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Personnummer => "pnr",
            TokenKind::Phone => "tel",
        }
    }
}

/// One recognised token: where it is and its canonical digits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub range: Range<usize>,
    pub kind: TokenKind,
    /// ASCII digits: see the module docs.
    pub canonical: String,
}

/// Replaces personal tokens with keyed pseudonyms. Cheap to clone (the keyed MAC state).
#[derive(Clone)]
pub struct Pseudonymizer {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymizer { key: <redacted> }")
    }
}

impl Pseudonymizer {
    /// A pseudonymizer keyed with `key` (any length; files enforce [`MIN_KEY_LEN`]).
    pub fn new(key: &[u8]) -> Pseudonymizer {
        Pseudonymizer { mac: Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length") }
    }

    /// Loads the key from `path`: the file's bytes with surrounding whitespace trimmed.
    pub fn load(path: &Path) -> Result<Pseudonymizer, KeyError> {
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read { path: path.to_path_buf(), source })?;
        let key = bytes.trim_ascii();
        if key.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort { path: path.to_path_buf() });
        }
        Ok(Pseudonymizer::new(key))
    }

    /// The key of `<state_dir>/pseudonym.key`, created once (32 random bytes, hex, mode 0600)
    /// when absent. Created under a temporary name and hard-linked into place, so a crash or
    /// a second process never leaves a partial key or replaces an existing one: the key, and
    /// so every pseudonym, stays the same across restarts.
    pub fn load_or_create(state_dir: &Path) -> Result<Pseudonymizer, KeyError> {
        let path = state_dir.join(STATE_KEY_FILE);
        match Pseudonymizer::load(&path) {
            Err(KeyError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            other => return other,
        }
        let create = |source| KeyError::Create { path: path.clone(), source };
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| create(std::io::Error::other(e.to_string())))?;
        let mut text: String = random.iter().map(|b| format!("{b:02x}")).collect();
        text.push('\n');
        let tmp = state_dir.join(format!("{STATE_KEY_FILE}.tmp-{}", std::process::id()));
        let written = (|| {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            match std::fs::hard_link(&tmp, &path) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                other => other?,
            }
            std::fs::File::open(state_dir)?.sync_all()
        })();
        let _ = std::fs::remove_file(&tmp);
        written.map_err(create)?;
        // Whoever linked first won; everyone uses that key.
        Pseudonymizer::load(&path)
    }

    /// The configured key if there is one, else the state directory's.
    pub fn resolve(configured: Option<&Pseudonymizer>, state_dir: &Path) -> Result<Pseudonymizer, KeyError> {
        match configured {
            Some(p) => Ok(p.clone()),
            None => Pseudonymizer::load_or_create(state_dir),
        }
    }

    /// `pnr-…` / `tel-…` for a canonical form.
    pub fn pseudonym(&self, kind: TokenKind, canonical: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(kind.as_str().as_bytes());
        mac.update(b":");
        mac.update(canonical.as_bytes());
        let digest = mac.finalize().into_bytes();
        let bits = u64::from_be_bytes(digest[..8].try_into().expect("SHA-256 has 32 bytes"));
        let mut out = String::with_capacity(4 + PSEUDONYM_CHARS);
        out.push_str(kind.as_str());
        out.push('-');
        for i in 0..PSEUDONYM_CHARS {
            out.push(char::from(BASE32[((bits >> (59 - 5 * i)) & 31) as usize]));
        }
        out
    }

    /// A 64-bit seed derived from the key, for keyed hashes that must agree across restarts
    /// (the evidence ledger's path and client keys) yet cannot be aimed at by crafted paths
    /// (the key is secret). Never a pseudonym itself: hashes keyed with it stay in the store.
    pub fn stable_seed(&self) -> u64 {
        let mut mac = self.mac.clone();
        mac.update(b"recwatch stable hash seed");
        let digest = mac.finalize().into_bytes();
        u64::from_be_bytes(digest[..8].try_into().expect("SHA-256 has 32 bytes"))
    }

    /// `text` with every recognised token replaced by its pseudonym; borrowed (no work
    /// beyond a digit count) when there is none.
    pub fn pseudonymize<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !may_contain_token(text) {
            return Cow::Borrowed(text);
        }
        let tokens = find_tokens(text);
        if tokens.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len() + 8 * tokens.len());
        let mut at = 0;
        for t in tokens {
            out.push_str(&text[at..t.range.start]);
            out.push_str(&self.pseudonym(t.kind, &t.canonical));
            at = t.range.end;
        }
        out.push_str(&text[at..]);
        Cow::Owned(out)
    }

    /// [`Pseudonymizer::pseudonymize`] of bytes (log content: invalid UTF-8 is replaced);
    /// borrowed when valid UTF-8 without a token, so comparing costs no allocation.
    pub fn pseudonymize_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, str> {
        match String::from_utf8_lossy(bytes) {
            Cow::Borrowed(text) => self.pseudonymize(text),
            Cow::Owned(text) => Cow::Owned(self.pseudonymize(&text).into_owned()),
        }
    }
}

/// `text` with every token replaced by `pnr-redacted` / `tel-redacted`: for text logged where
/// no key is at hand (requests to recwatch's own API), which needs no matching later.
pub fn redact(text: &str) -> Cow<'_, str> {
    if !may_contain_token(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::new();
    let mut at = 0;
    for t in find_tokens(text) {
        out.push_str(&text[at..t.range.start]);
        out.push_str(t.kind.as_str());
        out.push_str("-redacted");
        at = t.range.end;
    }
    if at == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
}

/// Every token is at least 8 digits joined only by separators (`-`, `+`, `_`, `.`, a space,
/// read through [`shadow_byte`]): a cheap test that skips almost every path, dated ones
/// (`/2019/02/05/call-616010.wav`) too.
fn may_contain_token(text: &str) -> bool {
    if text.len() < 8 {
        return false;
    }
    let mut digits = 0;
    let mut eight_in_a_run = |b: u8| {
        match b {
            b'0'..=b'9' => digits += 1,
            b'-' | b'+' | b'_' | b'.' | b' ' => {}
            _ => digits = 0,
        }
        digits >= 8
    };
    if text.is_ascii() {
        text.bytes().any(eight_in_a_run)
    } else {
        text.chars().any(|c| eight_in_a_run(shadow_byte(c)))
    }
}

/// Every personnummer, samordningsnummer and phone number in `text`, left to right, not
/// overlapping. A personnummer is preferred where both read the same digits.
///
/// Other spellings of digits and separators are read as their ASCII form: full-width digits
/// (U+FF10–U+FF19) and plus sign, the Unicode hyphens, dashes and minus signs (U+2010–U+2015,
/// U+2212, U+FE58, U+FE63, U+FF0D) as `-`, no-break and thin spaces as a space. Ranges are
/// byte ranges of `text` itself.
pub fn find_tokens(text: &str) -> Vec<Token> {
    if text.is_ascii() {
        return find_ascii_tokens(text.as_bytes());
    }
    // One shadow byte per char; `starts[k]` is where shadow byte k's char starts in `text`.
    let mut shadow = Vec::with_capacity(text.len());
    let mut starts = Vec::with_capacity(text.len() + 1);
    for (at, c) in text.char_indices() {
        shadow.push(shadow_byte(c));
        starts.push(at);
    }
    starts.push(text.len());
    find_ascii_tokens(&shadow)
        .into_iter()
        .map(|t| Token { range: starts[t.range.start]..starts[t.range.end], ..t })
        .collect()
}

/// The ASCII byte a char reads as for recognising tokens: itself when ASCII, the ASCII
/// equivalent of another digit, plus, dash or space spelling, else NUL (neither digit,
/// separator nor ASCII letter).
fn shadow_byte(c: char) -> u8 {
    match c {
        c if c.is_ascii() => c as u8,
        '\u{ff10}'..='\u{ff19}' => b'0' + (u32::from(c) - 0xff10) as u8,
        '\u{ff0b}' => b'+',
        '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{fe58}' | '\u{fe63}' | '\u{ff0d}' => b'-',
        '\u{a0}' | '\u{2007}' | '\u{2009}' | '\u{202f}' | '\u{3000}' => b' ',
        _ => 0,
    }
}

/// [`find_tokens`] over ASCII (or shadowed) bytes.
fn find_ascii_tokens(t: &[u8]) -> Vec<Token> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let hit = personnummer_at(t, i)
            .map(|(end, canonical)| (end, TokenKind::Personnummer, canonical))
            .or_else(|| phone_at(t, i).map(|(end, canonical)| (end, TokenKind::Phone, canonical)));
        match hit {
            Some((end, kind, canonical)) => {
                found.push(Token { range: i..end, kind, canonical });
                i = end;
            }
            None => i += 1,
        }
    }
    found
}

fn digit_run(t: &[u8], from: usize) -> usize {
    t.get(from..).map_or(0, |rest| rest.iter().take_while(|b| b.is_ascii_digit()).count())
}

fn num(d: &[u8]) -> u32 {
    d.iter().fold(0, |n, b| n * 10 + u32::from(b - b'0'))
}

/// A personnummer starting at `i`: its end and its 10 canonical digits.
fn personnummer_at(t: &[u8], i: usize) -> Option<(usize, String)> {
    if !t[i].is_ascii_digit() || (i > 0 && t[i - 1].is_ascii_digit()) {
        return None;
    }
    let head = digit_run(t, i);
    let (digits, end): (Vec<u8>, usize) = match head {
        10 | 12 => (t[i..i + head].to_vec(), i + head),
        6 | 8
            if matches!(t.get(i + head), Some(b'-' | b'+' | b'_' | b'.' | b' ')) && digit_run(t, i + head + 1) == 4 =>
        {
            let mut d = t[i..i + head].to_vec();
            d.extend_from_slice(&t[i + head + 1..i + head + 5]);
            (d, i + head + 5)
        }
        _ => return None,
    };
    let (century, short) = match digits.len() {
        12 => (Some(num(&digits[..2])), &digits[2..]),
        _ => (None, &digits[..]),
    };
    valid_personnummer(century, short).then(|| (end, String::from_utf8_lossy(short).into_owned()))
}

/// Date (samordningsnummer: day + 60) and Luhn check of the 10-digit form; `century` when
/// the long form gave one.
fn valid_personnummer(century: Option<u32>, d: &[u8]) -> bool {
    let (yy, mm, mut dd) = (num(&d[..2]), num(&d[2..4]), num(&d[4..6]));
    if dd > 60 {
        dd -= 60;
    }
    let leap = match century {
        Some(c) if !(18..=20).contains(&c) => return false,
        Some(c) => {
            let year = c * 100 + yy;
            year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
        }
        // Without a century, 29 February is possible whenever some century makes it a leap year.
        None => yy % 4 == 0,
    };
    let days = match mm {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&dd) && luhn_ok(d)
}

/// Luhn over the 10 digits: weights 2,1,2,1,… from the left, the last digit is the check.
fn luhn_ok(d: &[u8]) -> bool {
    let sum: u32 = d
        .iter()
        .enumerate()
        .map(|(k, b)| {
            let v = u32::from(b - b'0') * if k % 2 == 0 { 2 } else { 1 };
            v / 10 + v % 10
        })
        .sum();
    sum % 10 == 0
}

/// A phone number starting at `i`: its end and its international digits.
fn phone_at(t: &[u8], i: usize) -> Option<(usize, String)> {
    if i > 0 && t[i - 1].is_ascii_alphanumeric() {
        return None;
    }
    let nonzero = |k: usize| t.get(k).is_some_and(|b| (b'1'..=b'9').contains(b));
    if t[i] == b'+' && nonzero(i + 1) {
        return digit_groups(t, i + 1, 8..=15, Dashes::Anywhere).map(|(end, d)| (end, international(d)));
    }
    if t[i..].starts_with(b"00") && nonzero(i + 2) {
        return digit_groups(t, i + 2, 8..=15, Dashes::Anywhere).map(|(end, d)| (end, international(d)));
    }
    if t[i] == b'0' && nonzero(i + 1) {
        return digit_groups(t, i, 8..=10, Dashes::OnceAfterAreaCode).map(|(end, d)| {
            let mut canonical = String::from("46");
            canonical.push_str(&d[1..]);
            (end, canonical)
        });
    }
    None
}

/// International digits; a Swedish trunk 0 written after the country code (`+46 070…`) is dropped.
fn international(digits: String) -> String {
    match digits.strip_prefix("460") {
        Some(rest) => format!("46{rest}"),
        None => digits,
    }
}

/// Which separators may join two digit groups of a phone number.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dashes {
    /// After `+` or `00`: single spaces, `-`, `.` or `_` anywhere.
    Anywhere,
    /// A Swedish national number: single spaces anywhere and one `-`, `.` or `_` right after
    /// the 2–4 digit area code (`070-123 45 67`, `08-123 456 78`, `0431_12 34 56`); or the same
    /// one of `-`, `.`, `_` between every group (`070.123.45.67`) when the area code is `08` or
    /// 3–4 digits and every later group 2–3 digits (so `01.02.2019`, a date, is not a number).
    OnceAfterAreaCode,
}

/// Digit groups from `from` joined by separators (as `dashes` allows): the longest run of
/// whole groups whose digit count is in `len`, that `dashes` accepts, and that is not
/// followed by a letter or digit.
fn digit_groups(
    t: &[u8],
    from: usize,
    len: std::ops::RangeInclusive<usize>,
    dashes: Dashes,
) -> Option<(usize, String)> {
    let mut digits = String::new();
    let mut groups: Vec<usize> = Vec::new();
    let mut separators: Vec<u8> = Vec::new();
    let mut at = from;
    let mut best = None;
    loop {
        let run = digit_run(t, at);
        if run == 0 {
            break;
        }
        digits.push_str(std::str::from_utf8(&t[at..at + run]).unwrap_or_default());
        groups.push(run);
        at += run;
        if digits.len() > *len.end() {
            break;
        }
        let boundary = !t.get(at).is_some_and(|b| b.is_ascii_alphanumeric());
        if len.contains(&digits.len()) && boundary && separators_fit(dashes, &t[from..], &groups, &separators) {
            best = Some((at, digits.clone()));
        }
        match t.get(at) {
            Some(&sep @ (b' ' | b'-' | b'.' | b'_')) if t.get(at + 1).is_some_and(u8::is_ascii_digit) => {
                separators.push(sep);
                at += 1;
            }
            _ => break,
        }
    }
    best
}

/// Whether `groups` (digit counts) joined by `separators` (the one between each pair, in
/// order) is a spelling `dashes` accepts; `number` starts at the first digit.
fn separators_fit(dashes: Dashes, number: &[u8], groups: &[usize], separators: &[u8]) -> bool {
    let used = &separators[..groups.len() - 1];
    if dashes == Dashes::Anywhere || used.is_empty() {
        return true;
    }
    let others: Vec<usize> = (0..used.len()).filter(|&k| used[k] != b' ').collect();
    let once_after_area_code = match others.as_slice() {
        [] => true,
        [0] => (2..=4).contains(&groups[0]),
        _ => false,
    };
    let area_code = &number[..groups[0]];
    let uniform = used.len() >= 2
        && used[0] != b' '
        && used.iter().all(|s| *s == used[0])
        && (area_code == b"08" || (3..=4).contains(&area_code.len()))
        && groups[1..].iter().all(|g| (2..=3).contains(g));
    once_after_area_code || uniform
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(&str, TokenKind)> {
        find_tokens(text).into_iter().map(|t| (&text[t.range], t.kind)).collect()
    }

    fn luhn_digit(nine: &str) -> char {
        (b'0'..=b'9').map(char::from).find(|c| luhn_ok(format!("{nine}{c}").as_bytes())).unwrap()
    }

    const PNR: TokenKind = TokenKind::Personnummer;
    const TEL: TokenKind = TokenKind::Phone;

    #[test]
    fn personnummer_in_every_spelling() {
        // 19121212-1212 is Skatteverket's test person; 701063-2391 its samordningsnummer example.
        for (text, token) in [
            ("/recordings/121212-1212.wav", "121212-1212"),
            ("/recordings/1212121212.wav", "1212121212"),
            ("/recordings/19121212-1212.wav", "19121212-1212"),
            ("/recordings/191212121212.wav", "191212121212"),
            ("/recordings/121212+1212.wav", "121212+1212"),
            ("/recordings/701063-2391/call.wav", "701063-2391"),
            ("/recordings/call_19701063-2391_1.wav", "19701063-2391"),
            ("pnr121212-1212x", "121212-1212"),
        ] {
            assert_eq!(kinds(text), [(token, PNR)], "{text}");
        }
        let a = find_tokens("19121212-1212").pop().unwrap();
        assert_eq!(a.canonical, "1212121212", "the century and the dash are not part of the identity");
    }

    #[test]
    fn personnummer_and_phone_numbers_in_other_separators_and_digits() {
        for (text, token, kind) in [
            ("/r/121212_1212.wav", "121212_1212", PNR),
            ("/r/19121212_1212.wav", "19121212_1212", PNR),
            ("/r/121212.1212.wav", "121212.1212", PNR),
            ("/r/call 121212 1212.wav", "121212 1212", PNR),
            ("/r/121212\u{2010}1212.wav", "121212\u{2010}1212", PNR), // hyphen
            ("/r/121212\u{2011}1212.wav", "121212\u{2011}1212", PNR), // non-breaking hyphen
            ("/r/121212\u{2212}1212.wav", "121212\u{2212}1212", PNR), // minus sign
            ("/r/121212\u{2013}1212.wav", "121212\u{2013}1212", PNR), // en dash
            ("/r/121212\u{ff0d}1212.wav", "121212\u{ff0d}1212", PNR), // full-width hyphen-minus
            ("/r/\u{ff11}\u{ff12}\u{ff11}\u{ff12}\u{ff11}\u{ff12}-\u{ff11}\u{ff12}\u{ff11}\u{ff12}.wav", "\u{ff11}\u{ff12}\u{ff11}\u{ff12}\u{ff11}\u{ff12}-\u{ff11}\u{ff12}\u{ff11}\u{ff12}", PNR),
            ("/r/åäö_121212-1212.wav", "121212-1212", PNR),
            ("/r/070_123 45 67.wav", "070_123 45 67", TEL),
            ("/r/070.123 45 67.wav", "070.123 45 67", TEL),
            ("/r/070.123.45.67.wav", "070.123.45.67", TEL),
            ("/r/070-123-45-67.wav", "070-123-45-67", TEL),
            ("/r/08_123_456_78.wav", "08_123_456_78", TEL),
            ("/r/070\u{2011}123\u{a0}45\u{a0}67.wav", "070\u{2011}123\u{a0}45\u{a0}67", TEL),
            ("/r/+46.70.123.45.67.wav", "+46.70.123.45.67", TEL),
            ("/r/+46_70_123_45_67.wav", "+46_70_123_45_67", TEL),
            ("/r/+1.202.555.0143.wav", "+1.202.555.0143", TEL),
            ("/r/\u{ff0b}\u{ff14}\u{ff16}\u{ff17}\u{ff10}\u{ff11}\u{ff12}\u{ff13}\u{ff14}\u{ff15}\u{ff16}\u{ff17}.wav", "\u{ff0b}\u{ff14}\u{ff16}\u{ff17}\u{ff10}\u{ff11}\u{ff12}\u{ff13}\u{ff14}\u{ff15}\u{ff16}\u{ff17}", TEL),
        ] {
            assert_eq!(kinds(text), [(token, kind)], "{text}");
        }
        let canon = |s: &str| find_tokens(s).pop().unwrap().canonical;
        for s in [
            "121212_1212",
            "121212\u{2212}1212",
            "\u{ff11}\u{ff12}\u{ff11}\u{ff12}\u{ff11}\u{ff12}\u{ff11}\u{ff12}\u{ff11}\u{ff12}",
        ] {
            assert_eq!(canon(s), "1212121212", "{s}: one identity in every spelling");
        }
        for s in ["070.123.45.67", "070\u{2011}123 45 67", "+46_70_123_45_67"] {
            assert_eq!(canon(s), "46701234567", "{s}");
        }
        let p = Pseudonymizer::new(b"0123456789abcdef0123456789abcdef");
        let out = p.pseudonymize("/r/121212\u{2011}1212_x.wav");
        assert_eq!(out, format!("/r/{}_x.wav", p.pseudonym(PNR, "1212121212")));
    }

    #[test]
    fn near_misses_in_other_spellings_are_left_alone() {
        for text in [
            "/r/01.02.2019.wav",               // a date with dots
            "/r/01_02_2019.wav",               // with underscores
            "/r/01\u{2010}02\u{2010}2019.wav", // with Unicode hyphens
            "/r/2019.02.18.wav",
            "/r/20190218_093000.wav", // date and time
            "/r/20190218.093000.wav",
            "/r/121212_1213.wav",  // Luhn
            "/r/121212.12121.wav", // five digits after the separator
            "/r/121212..1212.wav", // two separators
            "/r/121212__1212.wav",
            "/r/070..123.45.67.wav",
            "/r/070.1234.5678.wav", // dotted groups of four: an id, not a number
            "/r/10.0.0.1.wav",
            "/r/1550480401.123.wav",
            "/r/v1.2.3.4567.wav",
            "/r/\u{ff10}\u{ff10}\u{ff10}\u{ff11}\u{ff12}\u{ff13}\u{ff14}\u{ff15}.wav", // zero-padded, full-width
            "/r/x\u{ff10}\u{ff17}\u{ff10}\u{ff11}\u{ff12}\u{ff13}\u{ff14}\u{ff15}\u{ff16}\u{ff17}.wav", // touches a letter
        ] {
            assert!(find_tokens(text).is_empty(), "{text}: {:?}", find_tokens(text));
        }
    }

    #[test]
    fn personnummer_dates_and_check_digits() {
        let check = |date: &str, serial: &str| format!("{date}{serial}{}", luhn_digit(&format!("{date}{serial}")));
        for (ten, valid) in [
            (check("800101", "123"), true),
            (check("800132", "123"), false), // day 32
            (check("801301", "123"), false), // month 13
            (check("800001", "123"), false), // month 0
            (check("800100", "123"), false), // day 0
            (check("800431", "123"), false), // 31 April
            (check("000229", "123"), true),  // 2000 was a leap year
            (check("010229", "123"), false), // 2001 was not
            (check("800161", "123"), true),  // samordningsnummer: day 1 + 60
            (check("800191", "123"), true),  // day 31 + 60
            (check("800192", "123"), false), // day 32 + 60
            (check("800160", "123"), false), // day 0 + 60
            (check("800229", "123"), true),
            (check("800289", "123"), true), // 29 Feb + 60
        ] {
            let pnr = |s: &str| find_tokens(s).iter().any(|t| t.kind == PNR);
            assert_eq!(pnr(&format!("/r/{ten}.wav")), valid, "{ten}");
            // A wrong check digit never matches (a leading 0 may still read as a phone number).
            let last = ten.as_bytes()[9] - b'0';
            let wrong = format!("{}{}", &ten[..9], (last + 1) % 10);
            assert!(!pnr(&wrong), "{wrong}");
        }
        let long = |yyyy: &str, rest: &str| {
            let ten = format!("{}{rest}", &yyyy[2..]);
            format!("{yyyy}{}-{}{}", &rest[..4], &rest[4..], luhn_digit(&ten[..9]))
        };
        assert_eq!(kinds(&long("2000", "0229123")).len(), 1);
        assert!(kinds(&long("1900", "0229123")).is_empty(), "1900 was not a leap year");
        assert!(kinds(&long("2100", "0101123")).is_empty(), "century 21");
        assert!(kinds(&long("1700", "0101123")).is_empty(), "century 17");
        assert_eq!(kinds(&long("1880", "0101123")).len(), 1);
    }

    #[test]
    fn phone_numbers_international_and_national() {
        for (text, token) in [
            ("/r/+46701234567.wav", "+46701234567"),
            ("/r/+46 70 123 45 67.wav", "+46 70 123 45 67"),
            ("/r/+46-70-123 45 67.wav", "+46-70-123 45 67"),
            ("/r/0046701234567.wav", "0046701234567"),
            ("/r/call +1 202 555 0143.wav", "+1 202 555 0143"),
            ("/r/out-0701234567-1177-20190218-093000-1550480401.123.wav", "0701234567"),
            ("/r/070-123 45 67.wav", "070-123 45 67"),
            ("/r/08-123 456 78.wav", "08-123 456 78"),
            ("/r/031-12 34 56.wav", "031-12 34 56"),
            ("/r/tel:0701234567", "0701234567"),
            ("/r/0701234567 2019.wav", "0701234567"),
        ] {
            assert_eq!(kinds(text), [(token, TEL)], "{text}");
        }
        let canon = |s: &str| find_tokens(s).pop().unwrap().canonical;
        for s in ["070-123 45 67", "+46701234567", "0046 70 123 45 67", "+46 070 123 45 67"] {
            assert_eq!(canon(s), "46701234567", "{s}");
        }
    }

    #[test]
    fn near_misses_are_left_alone() {
        for text in [
            "/recordings/20190218-093000.wav", // date-time
            "/recordings/20190218093000.wav",  // 14 digits
            "/recordings/2019-02-18/09:30:00.wav",
            "/recordings/18-02-2019.wav",
            "/recordings/01-02-2019.wav",     // two dashes: a date, not 01-022019
            "/recordings/1550480401.123.wav", // Unix time and a call id
            "/recordings/1550480401.wav",
            "/recordings/000123456789.wav", // zero-padded id
            "/recordings/0000000042.wav",
            "/recordings/10.0.0.1/x.wav",
            "/recordings/121212-1213.wav",        // Luhn
            "/recordings/19121212-12121.wav",     // five digits after the dash
            "/recordings/1912121212121.wav",      // 13 digits
            "/recordings/deadbeef0701234567.wav", // inside a hex id
            "/recordings/0701234567abc.wav",
            "/recordings/070123.wav",         // too short
            "/recordings/07012345678901.wav", // too long for a national number
            "/recordings/+4670.wav",
            "/recordings/call-42.wav",
            "",
        ] {
            assert!(find_tokens(text).is_empty(), "{text}: {:?}", find_tokens(text));
        }
    }

    #[test]
    fn pseudonyms_are_keyed_stable_and_replace_every_token() {
        let p = Pseudonymizer::new(b"0123456789abcdef0123456789abcdef");
        let out = p.pseudonymize("/recordings/19121212-1212/0701234567_121212-1212.wav");
        let a = p.pseudonym(PNR, "1212121212");
        let b = p.pseudonym(TEL, "46701234567");
        assert_eq!(out, format!("/recordings/{a}/{b}_{a}.wav"));
        assert_eq!(a.len(), 16);
        assert!(a.starts_with("pnr-") && b.starts_with("tel-"));
        assert_ne!(a, Pseudonymizer::new(b"another key, long enough").pseudonym(PNR, "1212121212"));
        assert!(matches!(p.pseudonymize("/recordings/2019/02/18/call-1.wav"), Cow::Borrowed(_)));
        assert_eq!(redact("/api/v1/alerts/19121212-1212/ack"), "/api/v1/alerts/pnr-redacted/ack");
        assert!(matches!(redact("/api/v1/alerts/0123456789abcdef"), Cow::Borrowed(_)));
    }

    #[test]
    fn key_files_are_trimmed_checked_and_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "too short\n").unwrap();
        assert!(matches!(Pseudonymizer::load(&short), Err(KeyError::TooShort { .. })));
        let good = dir.path().join("good");
        std::fs::write(&good, "  0123456789abcdef0123\n").unwrap();
        let p = Pseudonymizer::load(&good).unwrap();
        assert_eq!(p.pseudonym(PNR, "1"), Pseudonymizer::new(b"0123456789abcdef0123").pseudonym(PNR, "1"));
        assert!(matches!(Pseudonymizer::load(&dir.path().join("missing")), Err(KeyError::Read { .. })));

        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let first = Pseudonymizer::load_or_create(&state).unwrap().pseudonym(PNR, "1212121212");
        let again = Pseudonymizer::load_or_create(&state).unwrap().pseudonym(PNR, "1212121212");
        assert_eq!(first, again, "the key must survive a restart");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(state.join(STATE_KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(&state).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
        let configured = Pseudonymizer::load(&good).unwrap();
        let resolved = Pseudonymizer::resolve(Some(&configured), &state).unwrap();
        assert_eq!(resolved.pseudonym(TEL, "46"), configured.pseudonym(TEL, "46"));
    }

    proptest::proptest! {
        #[test]
        fn pseudonymizing_is_idempotent_and_leaves_no_token(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::string::string_regex("[0-9]{1,13}").unwrap(),
                    proptest::string::string_regex("[-+ /._a-z]{1,2}").unwrap(),
                    proptest::string::string_regex("(19|20)?[0-9]{2}(0[1-9]|1[0-2])[0-2][0-9][-+]?[0-9]{4}").unwrap(),
                    proptest::string::string_regex("(\\+46|0046|0)7[0-9]( ?[0-9]{2,3}){3}").unwrap(),
                ],
                0..8,
            )
        ) {
            let text: String = parts.concat();
            let p = Pseudonymizer::new(b"property test key!");
            let once = p.pseudonymize(&text).into_owned();
            proptest::prop_assert!(find_tokens(&once).is_empty(), "{} -> {}", text, once);
            proptest::prop_assert_eq!(p.pseudonymize(&once).into_owned(), once);
        }

        /// The pre-filter never hides a token: text it rejects holds none.
        #[test]
        fn text_without_eight_digits_in_a_run_holds_no_token(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::string::string_regex("[0-9]{1,13}").unwrap(),
                    proptest::string::string_regex("[-+ /._a-z\u{2010}\u{2212}\u{a0}\u{ff10}-\u{ff19}\u{ff0b}]{1,2}").unwrap(),
                    proptest::string::string_regex("(19|20)?[0-9]{2}(0[1-9]|1[0-2])[0-2][0-9][-+_. ]?[0-9]{4}").unwrap(),
                    proptest::string::string_regex("(\\+46|0046|0)7[0-9]([ ._-]?[0-9]{2,3}){3}").unwrap(),
                ],
                0..8,
            )
        ) {
            let text: String = parts.concat();
            if !may_contain_token(&text) {
                proptest::prop_assert!(find_tokens(&text).is_empty(), "{}", text);
            }
        }
    }
}
