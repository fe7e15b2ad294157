//! Recognises the syslog header a log shipper put in front of an access-log line (nginx's
//! `access_log syslog:…`, rsyslog/syslog-ng files) and returns the message behind it.
//! Owns the RFC 3164 and RFC 5424 header grammars (and rsyslog's RFC 3339 file format).
//! Never parses the message itself, never allocates; runs only on lines that cannot start with
//! an access log's client field (see [`may_be_wrapped`]).

/// Whether `line` could start with a syslog header rather than a client address: a `<PRI>`,
/// an upper-case month name (RFC 3164), or a `yyyy-` date (RFC 3339 timestamps). Two byte
/// compares for the IPv4/IPv6 lines that make up nearly every log.
#[inline]
pub fn may_be_wrapped(line: &[u8]) -> bool {
    match line.first() {
        Some(first) if first.is_ascii_digit() => line.get(4) == Some(&b'-'),
        Some(b'<') => true,
        Some(first) => first.is_ascii_uppercase(),
        None => false,
    }
}

/// The message after a syslog header, or `None` when `line` has no complete header.
///
/// Accepted headers (the `<PRI>` is optional in files, required in neither):
/// - RFC 3164: `<PRI>Mmm dd hh:mm:ss HOST TAG[pid]: ` — the day space-padded or not, the
///   host optional (relays drop it), the tag ending in `:`.
/// - RFC 5424: `<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD ` — structured data `-` or one or
///   more `[…]` elements (`\]` escaped inside), then an optional UTF-8 BOM.
/// - rsyslog's file formats: `TIMESTAMP HOST TAG: ` with an RFC 3339 timestamp.
pub fn unwrap(line: &[u8]) -> Option<&[u8]> {
    let rest = strip_priority(line)?;
    if let Some(after_version) = rest.strip_prefix(b"1 ") {
        return rfc5424_message(after_version);
    }
    let after_time = match rest.first() {
        Some(digit) if digit.is_ascii_digit() => skip_rfc3339(rest)?,
        _ => skip_bsd_time(rest)?,
    };
    after_tag(after_time)
}

/// `<0>`..`<191>` removed if present; `None` for a `<` that opens no valid priority.
fn strip_priority(line: &[u8]) -> Option<&[u8]> {
    let Some(inner) = line.strip_prefix(b"<") else { return Some(line) };
    let close = inner.iter().take(4).position(|&b| b == b'>')?;
    let digits = &inner[..close];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
    (value <= 191).then_some(&inner[close + 1..])
}

/// `Mmm dd hh:mm:ss ` (day `_8` or `08`) → what follows it.
fn skip_bsd_time(rest: &[u8]) -> Option<&[u8]> {
    const MONTHS: [&[u8; 3]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    let head = rest.get(..16)?;
    if !MONTHS.iter().any(|m| head[..3] == m[..]) || head[3] != b' ' {
        return None;
    }
    let day_ok = (head[4] == b' ' || head[4].is_ascii_digit()) && head[5].is_ascii_digit() && head[6] == b' ';
    let digits = [7, 8, 10, 11, 13, 14].iter().all(|&i| head[i].is_ascii_digit());
    if !day_ok || !digits || head[9] != b':' || head[12] != b':' || head[15] != b' ' {
        return None;
    }
    Some(&rest[16..])
}

/// `yyyy-mm-ddThh:mm:ss[.frac](Z|±hh:mm) ` → what follows it (shape only).
fn skip_rfc3339(rest: &[u8]) -> Option<&[u8]> {
    let (token, after) = split_token(rest)?;
    let shaped = token.len() >= 20
        && token[..4].iter().all(u8::is_ascii_digit)
        && token[4] == b'-'
        && token[7] == b'-'
        && token[10] == b'T'
        && token[13] == b':';
    shaped.then_some(after)
}

/// `[HOST ]TAG: ` → the message. The tag is `name` or `name[pid]` followed by `:` and a
/// space; a first token without the colon is the host.
fn after_tag(rest: &[u8]) -> Option<&[u8]> {
    let (first, after_first) = split_token(rest)?;
    if is_tag(first) {
        return Some(after_first);
    }
    if first.is_empty() {
        return None;
    }
    let (tag, message) = split_token(after_first)?;
    is_tag(tag).then_some(message)
}

/// `nginx:`, `nginx[2869]:`, `httpd-access:`: a syslog tag (program name, pid) with its colon.
fn is_tag(token: &[u8]) -> bool {
    let Some(name_and_pid) = token.strip_suffix(b":") else { return false };
    let name = match name_and_pid.iter().position(|&b| b == b'[') {
        Some(open) => {
            let pid = &name_and_pid[open + 1..];
            match pid.strip_suffix(b"]") {
                Some(digits) if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) => &name_and_pid[..open],
                _ => return false,
            }
        }
        None => name_and_pid,
    };
    !name.is_empty()
        && name.len() <= 48
        && name.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
}

/// RFC 5424 after `1 `: five header tokens, structured data, then the message.
fn rfc5424_message(mut rest: &[u8]) -> Option<&[u8]> {
    // TIMESTAMP HOSTNAME APP-NAME PROCID MSGID, each a non-empty token (`-` when nil).
    for _ in 0..5 {
        let (token, after) = split_token(rest)?;
        if token.is_empty() {
            return None;
        }
        rest = after;
    }
    let message = match rest {
        [b'-', b' ', message @ ..] => message,
        [b'[', ..] => skip_structured_data(rest)?,
        _ => return None,
    };
    Some(message.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(message))
}

/// One or more `[id param="value"…]` elements (`\]`, `\"` and `\\` escaped inside values),
/// then a space: what follows.
fn skip_structured_data(mut rest: &[u8]) -> Option<&[u8]> {
    while let Some(element) = rest.strip_prefix(b"[") {
        let mut i = 0;
        let mut in_value = false;
        loop {
            match *element.get(i)? {
                b'\\' if in_value => i += 2,
                b'"' => {
                    in_value = !in_value;
                    i += 1;
                }
                b']' if !in_value => break,
                _ => i += 1,
            }
        }
        rest = &element[i + 1..];
    }
    rest.strip_prefix(b" ")
}

/// The token up to the next space, and what follows that space.
fn split_token(rest: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = memchr::memchr(b' ', rest)?;
    Some((&rest[..space], &rest[space + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwraps_rfc3164_rfc5424_and_rsyslog_file_headers() {
        let msg = br#"167.71.13.196 - - [08/Jul/2020:11:07:07 +0000] "GET / HTTP/1.1" 200 1"#;
        let headers: &[&[u8]] = &[
            b"Jul  8 11:07:07 web1 nginx[2869]: ",
            b"Jul 18 11:07:07 web1 nginx: ",
            b"<190>Jul  8 11:07:07 web1 nginx: ",
            b"<190>Jul  8 11:07:07 nginx[12]: ",
            b"<165>1 2003-10-11T22:14:15.003Z web1.example.com nginx 2869 - - ",
            b"<165>1 2003-10-11T22:14:15.003Z web1 nginx - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"App\\]x\"] ",
            b"<165>1 2003-10-11T22:14:15.003Z web1 nginx - - [a@1 x=\"1\"][b@1 y=\"2\"] \xEF\xBB\xBF",
            b"2020-07-08T11:07:07.123456+02:00 web1 nginx[2869]: ",
            b"<190>2020-07-08T11:07:07Z web1 nginx: ",
        ];
        for header in headers {
            let line = [*header, &msg[..]].concat();
            assert!(may_be_wrapped(&line), "{}", String::from_utf8_lossy(header));
            assert_eq!(unwrap(&line), Some(&msg[..]), "{}", String::from_utf8_lossy(header));
        }
    }

    #[test]
    fn access_lines_and_broken_headers_are_not_unwrapped() {
        let lines: &[&[u8]] = &[
            br#"167.71.13.196 - - [08/Jul/2020:11:07:07 +0000] "GET / HTTP/1.1" 200 1"#,
            br#"2001:db8::1 - - [08/Jul/2020:11:07:07 +0000] "GET / HTTP/1.1" 200 1"#,
            br#"Monitoring-Server - - [08/Jul/2020:11:07:07 +0000] "GET / HTTP/1.1" 200 1"#,
            b"Jul  8 11:07:07 web1 nginx[x]: 1.2.3.4 - -",
            b"Jul  8 11:07 web1 nginx: 1.2.3.4 - -",
            b"Jux  8 11:07:07 web1 nginx: 1.2.3.4",
            b"<999>Jul  8 11:07:07 web1 nginx: 1.2.3.4",
            b"<190 Jul  8 11:07:07 web1 nginx: 1.2.3.4",
            b"<165>1 2003-10-11T22:14:15.003Z web1 nginx - - [unterminated",
            b"<165>1 2003-10-11T22:14:15.003Z web1",
            b"",
        ];
        for line in lines {
            assert_eq!(unwrap(line), None, "{}", String::from_utf8_lossy(line));
        }
        assert!(!may_be_wrapped(b"167.71.13.196 - -"));
        assert!(!may_be_wrapped(b"2001:db8::1 - -"));
    }
}
