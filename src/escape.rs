//! The one escaping rule for every output of text that came from a log line (paths, user
//! agents, origins, clients) or from anything else outside recwatch: terminal output
//! (`alerts list/show`, `check`, error messages), the daemon's own log, the Markdown, CSV and
//! HTML reports, and JSON. Owns which characters are unsafe and how each output spells them.
//! Never decodes input: undoing nginx's `\xHH` log escaping is [`crate::parse::escape`]'s job.
//!
//! # The rule
//! A character is *unsafe* when a terminal or a renderer may act on it instead of showing it,
//! or shows nothing for it: C0 controls (U+0000–U+001F), DEL, C1 controls (U+0080–U+009F,
//! among them U+009B, the 8-bit CSI), the line and paragraph separators U+2028/U+2029, and the
//! invisible format characters (Unicode category Cf: soft hyphen, zero-width space and
//! joiners, the bidi marks, embeddings, overrides and isolates, word joiner, BOM, tags, …)
//! plus the invisible Hangul fillers. Every unsafe character is written as `\u{9b}` (lowercase
//! hex, Rust's spelling) in text outputs; JSON writes it as `\u009b`, which decodes to the
//! same string, so JSON stays lossless.
//!
//! Per output on top of that: Markdown puts log text in code spans whose fence is longer than
//! any backtick run inside (a path can never leave its span), and escapes `|` in table cells;
//! CSV defuses cells that a spreadsheet would read as a formula (`=`, `+`, `-`, `@`, tab, CR
//! first) and quotes cells that need it.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::bytes16::{self, Block};

/// Ranges of invisible format characters (Unicode 16 category Cf, and the Hangul fillers,
/// which are letters that render as nothing).
const INVISIBLE: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),   // soft hyphen
    (0x034F, 0x034F),   // combining grapheme joiner
    (0x0600, 0x0605),   // Arabic number signs
    (0x061C, 0x061C),   // Arabic letter mark (bidi)
    (0x06DD, 0x06DD),   // Arabic end of ayah
    (0x070F, 0x070F),   // Syriac abbreviation mark
    (0x0890, 0x0891),   // Arabic pound/piastre mark above
    (0x08E2, 0x08E2),   // Arabic disputed end of ayah
    (0x115F, 0x1160),   // Hangul fillers
    (0x17B4, 0x17B5),   // Khmer inherent vowels (invisible)
    (0x180B, 0x180F),   // Mongolian variation selectors and vowel separator
    (0x200B, 0x200F),   // zero-width space, ZWNJ, ZWJ, LRM, RLM
    (0x2028, 0x202E),   // line/paragraph separators, bidi embeddings and overrides
    (0x2060, 0x206F),   // word joiner, invisible operators, bidi isolates, deprecated formats
    (0x3164, 0x3164),   // Hangul filler
    (0xFE00, 0xFE0F),   // variation selectors
    (0xFEFF, 0xFEFF),   // byte order mark / zero-width no-break space
    (0xFFA0, 0xFFA0),   // half-width Hangul filler
    (0xFFF9, 0xFFFB),   // interlinear annotation
    (0x110BD, 0x110BD), // Kaithi number sign
    (0x110CD, 0x110CD), // Kaithi number sign above
    (0x13430, 0x1343F), // Egyptian hieroglyph format controls
    (0x1BCA0, 0x1BCA3), // shorthand format controls
    (0x1D173, 0x1D17A), // musical symbol format controls
    (0xE0000, 0xE0FFF), // tags and variation selectors supplement
];

/// Whether `c` must never reach an output as itself (see the module docs).
pub fn is_unsafe(c: char) -> bool {
    let n = u32::from(c);
    if n < 0x20 || (0x7F..=0x9F).contains(&n) {
        return true;
    }
    if n < 0xAD {
        return false;
    }
    INVISIBLE.iter().any(|&(lo, hi)| (lo..=hi).contains(&n))
}

/// `s` with every unsafe character written as `\u{…}`: for the terminal, error messages and
/// the daemon's log. Borrowed when nothing needed escaping.
pub fn text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// [`text`] for several lines: each line escaped, the `\n` between them kept.
pub fn lines(s: &str) -> String {
    s.split('\n').map(text).collect::<Vec<_>>().join("\n")
}

/// [`text`] of bytes that may not be UTF-8 (invalid sequences become U+FFFD).
pub fn text_bytes(b: &[u8]) -> String {
    text(&String::from_utf8_lossy(b)).into_owned()
}

fn push_escaped(out: &mut String, c: char) {
    if is_unsafe(c) {
        let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
    } else {
        out.push(c);
    }
}

/// `s` as a Markdown code span that nothing inside can end: fenced with one backtick more
/// than its longest backtick run, padded with spaces where it begins or ends with a backtick
/// or a space; unsafe characters escaped. An empty string is `""` (an empty span does not
/// exist in Markdown).
pub fn markdown_code(s: &str) -> String {
    code_span(s, false)
}

/// [`markdown_code`] for a table cell: `|` inside is written `\|`, which GitHub-flavoured
/// tables read as a pipe in the cell, even inside a code span.
pub fn markdown_code_cell(s: &str) -> String {
    code_span(s, true)
}

fn code_span(s: &str, in_table: bool) -> String {
    if s.is_empty() {
        return "\"\"".to_string();
    }
    let mut body = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        match c {
            '|' if in_table => body.push_str("\\|"),
            c => push_escaped(&mut body, c),
        }
    }
    let longest_run = body.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest_run + 1);
    let pad = if body.starts_with(['`', ' ']) || body.ends_with(['`', ' ']) { " " } else { "" };
    format!("{fence}{pad}{body}{pad}{fence}")
}

/// `s` as plain Markdown text (a table cell or a sentence): unsafe characters escaped and
/// every ASCII punctuation character backslash-escaped, so nothing in it becomes a link, an
/// image, emphasis, HTML or a cell boundary.
pub fn markdown_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_ascii_punctuation() {
            out.push('\\');
            out.push(c);
        } else {
            push_escaped(&mut out, c);
        }
    }
    out
}

/// `s` as one CSV cell (RFC 4180): unsafe characters escaped; a cell a spreadsheet would
/// read as a formula (first character `=`, `+`, `-`, `@`, tab or CR) gets a leading `'`;
/// quoted when it holds a comma, a quote or a line break.
pub fn csv_cell(s: &str) -> Cow<'_, str> {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let escaped = text(s);
    let needs_quotes = formula || escaped.contains([',', '"', '\n', '\r']);
    if !needs_quotes {
        return escaped;
    }
    let mut out = String::with_capacity(escaped.len() + 4);
    out.push('"');
    if formula {
        out.push('\'');
    }
    out.push_str(&escaped.replace('"', "\"\""));
    out.push('"');
    Cow::Owned(out)
}

/// `s` as HTML text or a double-quoted attribute value: `&`, `<`, `>`, `"` and `'` as
/// character references, unsafe characters escaped as in text outputs. Nothing in it can
/// open a tag, end an attribute or start a script.
pub fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => push_escaped(&mut out, c),
        }
    }
    out
}

/// Pretty JSON (two-space indent) in which every unsafe character of a string is written as
/// a `\uXXXX` escape: valid JSON that decodes to exactly the same strings, with nothing a
/// terminal acts on.
pub fn json_pretty<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let mut out = Vec::with_capacity(256);
    json_pretty_nested(value, 0, &mut out)?;
    Ok(String::from_utf8(out).expect("serde_json writes UTF-8"))
}

/// [`json_pretty`] of a value that sits `level` arrays or objects deep in a larger document,
/// appended to `out`: its lines are indented as [`json_pretty`] of the whole document would
/// indent them, so values rendered apart (on several threads) can be spliced into it.
pub fn json_pretty_nested<T: serde::Serialize + ?Sized>(
    value: &T,
    level: usize,
    out: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    let formatter = SafeJson { level, ..SafeJson::pretty() };
    value.serialize(&mut serde_json::Serializer::with_formatter(out, formatter))
}

/// [`json_pretty`] without whitespace: for HTTP responses.
pub fn json_compact<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, SafeJson::compact());
    value.serialize(&mut ser)?;
    Ok(out)
}

/// A serde_json formatter that escapes unsafe characters inside strings as `\uXXXX`
/// (UTF-16 surrogate pairs above U+FFFF), and lays out as serde_json's compact or pretty
/// (two-space) formatter does, byte for byte; a pretty line break and its indent are one write.
struct SafeJson {
    pretty: bool,
    /// Nesting depth.
    level: usize,
    /// Whether the innermost open array or object has a value yet.
    has_value: bool,
}

/// `,` then a line break and indent: a slice of it starts each pretty array value or key.
const COMMA_BREAK: &[u8; 66] = b",\n                                                                ";

impl SafeJson {
    fn pretty() -> SafeJson {
        SafeJson { pretty: true, level: 0, has_value: false }
    }

    fn compact() -> SafeJson {
        SafeJson { pretty: false, level: 0, has_value: false }
    }

    /// `,` unless `first`, then (pretty) a line break and the indent of the current level.
    fn separate<W: ?Sized + std::io::Write>(&self, w: &mut W, first: bool) -> std::io::Result<()> {
        let from = usize::from(first);
        if !self.pretty {
            return w.write_all(&COMMA_BREAK[from..1]);
        }
        self.break_line(w, from)
    }

    /// `COMMA_BREAK[from..]` up to the current indent (`from` 1: the line break alone).
    fn break_line<W: ?Sized + std::io::Write>(&self, w: &mut W, from: usize) -> std::io::Result<()> {
        let indent = 2 * self.level;
        match COMMA_BREAK.get(from..2 + indent) {
            Some(bytes) => w.write_all(bytes),
            None => {
                w.write_all(&COMMA_BREAK[from..2])?;
                (0..indent).try_for_each(|_| w.write_all(b" "))
            }
        }
    }

    fn open<W: ?Sized + std::io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> std::io::Result<()> {
        self.level += 1;
        self.has_value = false;
        w.write_all(bracket)
    }

    fn close<W: ?Sized + std::io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> std::io::Result<()> {
        self.level -= 1;
        if self.pretty && self.has_value {
            self.break_line(w, 1)?;
        }
        w.write_all(bracket)
    }
}

impl serde_json::ser::Formatter for SafeJson {
    fn write_string_fragment<W: ?Sized + std::io::Write>(&mut self, w: &mut W, fragment: &str) -> std::io::Result<()> {
        // serde_json has escaped the C0 controls already; ASCII without DEL (almost every
        // fragment, most of them short) is safe as it is.
        let (low, high) = (Block::splat(0), Block::splat(0x7E));
        if bytes16::position(fragment.as_bytes(), |block| !block.within(low, high)).is_none() {
            return w.write_all(fragment.as_bytes());
        }
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if !is_unsafe(c) {
                continue;
            }
            w.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(w, "\\u{unit:04x}")?;
            }
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }

    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"[")
    }
    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"]")
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        self.separate(w, first)
    }
    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"{")
    }
    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"}")
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        self.separate(w, first)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(if self.pretty { b": " } else { b":" })
    }
    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_serde_json_own_byte_for_byte() {
        let mut deep = serde_json::json!([1, {}]);
        for _ in 0..40 {
            deep = serde_json::json!({ "a": [deep, [], {}, "x"], "b": {} });
        }
        for value in
            [serde_json::json!([]), serde_json::json!({}), serde_json::json!({"k": [[], [{}], 1.5, null]}), deep]
        {
            assert_eq!(json_pretty(&value).unwrap(), serde_json::to_string_pretty(&value).unwrap());
            assert_eq!(json_compact(&value).unwrap(), serde_json::to_vec(&value).unwrap());
        }
    }

    #[test]
    fn html_text_cannot_open_a_tag_or_leave_an_attribute() {
        assert_eq!(html("<script>alert('x')</script>"), "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;");
        assert_eq!(html("\" onmouseover=\"x&amp;"), "&quot; onmouseover=&quot;x&amp;amp;");
        assert_eq!(html("a\u{1b}[2J\u{202e}b"), "a\\u{1b}[2J\\u{202e}b");
    }

    #[test]
    fn unsafe_characters_are_escaped_in_text() {
        for (input, expected) in [
            ("/r/a.wav", "/r/a.wav"),
            ("\u{1b}[31mred", "\\u{1b}[31mred"),
            ("csi\u{9b}2J", "csi\\u{9b}2J"),
            ("del\u{7f}", "del\\u{7f}"),
            ("evil\u{202e}vaw.exe", "evil\\u{202e}vaw.exe"),
            ("a\u{200b}b\u{2066}c\u{feff}", "a\\u{200b}b\\u{2066}c\\u{feff}"),
            ("tag\u{e0041}", "tag\\u{e0041}"),
            ("line\u{2028}sep", "line\\u{2028}sep"),
            ("åäö Ω ✓ 日本", "åäö Ω ✓ 日本"),
        ] {
            assert_eq!(text(input), expected, "{input:?}");
        }
        assert!(matches!(text("/plain/path"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_path_never_leaves_its_markdown_code_span() {
        assert_eq!(markdown_code("/r/x.wav"), "`/r/x.wav`");
        assert_eq!(markdown_code("a`b"), "``a`b``");
        assert_eq!(markdown_code("`x``"), "``` `x`` ```");
        assert_eq!(markdown_code(""), "\"\"");
        assert_eq!(markdown_code_cell("a|b"), "`a\\|b`");
        assert_eq!(
            markdown_text("[x](http://e/) ![i](j) <b>"),
            "\\[x\\]\\(http\\:\\/\\/e\\/\\) \\!\\[i\\]\\(j\\) \\<b\\>"
        );
    }

    #[test]
    fn csv_cells_never_start_a_formula() {
        assert_eq!(csv_cell("10.0.0.1"), "10.0.0.1");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("=cmd|' /C calc'!A0"), "\"'=cmd|' /C calc'!A0\"");
        assert_eq!(csv_cell("-2+3"), "\"'-2+3\"");
        assert_eq!(csv_cell("\tx"), "\"'\\u{9}x\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn json_escapes_unsafe_characters_and_stays_lossless() {
        let value = serde_json::json!({ "path": "/r/\u{9b}2J\u{202e}x\u{e0041}\u{1b}.wav", "n": [1, 2] });
        let pretty = json_pretty(&value).unwrap();
        assert!(pretty.contains(r"\u009b2J\u202ex\udb40\udc41\u001b.wav"), "{pretty}");
        assert!(!pretty.chars().any(is_unsafe_except_newline), "{pretty}");
        let back: serde_json::Value = serde_json::from_str(&pretty).unwrap();
        assert_eq!(back, value);
        let compact = String::from_utf8(json_compact(&value).unwrap()).unwrap();
        assert_eq!(serde_json::from_str::<serde_json::Value>(&compact).unwrap(), value);
        assert!(!compact.contains('\n'));
    }

    #[test]
    fn del_is_escaped_in_json_wherever_it_sits() {
        // Every printable ASCII byte passes as it is; DEL, at any place of a string of any
        // length around the sixteen-byte blocks the safe-text test reads, is escaped.
        let printable: String = (0x20u8..0x7F).map(char::from).filter(|c| !matches!(c, '"' | '\\')).collect();
        assert_eq!(json_compact(&printable).unwrap(), serde_json::to_vec(&printable).unwrap());
        for len in 1..=40 {
            for at in 0..len {
                let text: String = (0..len).map(|i| if i == at { '\u{7f}' } else { 'a' }).collect();
                let expected = serde_json::to_string(&text).unwrap().replace('\u{7f}', r"\u007f");
                assert_eq!(String::from_utf8(json_compact(&text).unwrap()).unwrap(), expected, "DEL at {at} of {len}");
            }
        }
    }

    fn is_unsafe_except_newline(c: char) -> bool {
        c != '\n' && is_unsafe(c)
    }
}
