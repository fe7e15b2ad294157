//! Undoes the escaping web servers apply when they write request data into an access log.
//! Owns the one decoder for both dialects: nginx's `\xHH` and Apache's `\"`, `\\`, `\n`, `\t`, `\r`, `\xhh`.
//! Never percent-decodes (that is URL syntax, handled by path normalisation) and never allocates
//! beyond growing the caller's buffer.

use memchr::memchr;

/// Appends `src` with the access log's own escaping undone to `out` (the caller clears `out`).
///
/// nginx writes non-printable bytes, `"` and `\` as `\xHH`; Apache writes `\"`, `\\`, `\n`,
/// `\t`, `\r` and `\xhh`. Both are decoded here, hex digits in either case. Anything else after
/// a backslash (an unknown escape, a truncated `\x4`, a trailing lone `\`) is kept literally.
pub fn unescape_log_field(src: &[u8], out: &mut Vec<u8>) {
    let mut rest = src;
    while let Some(backslash) = memchr(b'\\', rest) {
        out.extend_from_slice(&rest[..backslash]);
        let escape = &rest[backslash + 1..];
        let (decoded, consumed) = match escape {
            [b'"', ..] => (b'"', 1),
            [b'\\', ..] => (b'\\', 1),
            [b'n', ..] => (b'\n', 1),
            [b't', ..] => (b'\t', 1),
            [b'r', ..] => (b'\r', 1),
            [b'x', high, low, ..] => match (hex_value(*high), hex_value(*low)) {
                (Some(high), Some(low)) => (high << 4 | low, 3),
                _ => (b'\\', 0),
            },
            _ => (b'\\', 0),
        };
        out.push(decoded);
        rest = &escape[consumed..];
    }
    out.extend_from_slice(rest);
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

    #[test]
    fn decodes_nginx_and_apache_escapes_and_keeps_unknown_ones() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"plain", b"plain"),
            (b"", b""),
            (br"a\x22b", b"a\"b"),
            (br"a\x5Cb\x5cc", br"a\b\c"),
            (br"\x00\xff\xFF", b"\x00\xff\xff"),
            (br#"Mozilla \"quoted\""#, b"Mozilla \"quoted\""),
            (br"a\\b", br"a\b"),
            (br"a\nb\tc\rd", b"a\nb\tc\rd"),
            (br"\q", br"\q"),
            (br"\x4", br"\x4"),
            (br"\xg1", br"\xg1"),
            (br"end\", br"end\"),
            (br"\\x22", br"\x22"),
            (br"\x2e\x2E", b".."),
        ];
        for (src, want) in cases {
            let mut out = Vec::new();
            unescape_log_field(src, &mut out);
            assert_eq!(
                out,
                *want,
                "{:?}",
                String::from_utf8_lossy(src) // shown for the failing case only
            );
        }
    }

    #[test]
    fn appends_without_clearing() {
        let mut out = b"keep:".to_vec();
        unescape_log_field(br"\x41", &mut out);
        assert_eq!(out, b"keep:A");
    }
}
