//! Tokenizes one nginx/Apache access-log line (combined, common, nginx `main` and the vhost
//! variants) into borrowed fields, strictly left to right so a quote inside a header cannot
//! fake a request. Real-world lines are judged, not dropped: a syslog header in front is
//! unwrapped, a client field holding an X-Forwarded-For list is kept as a list, a junk
//! request line (a TLS handshake on the plain port) keeps client, time and status, a timestamp
//! without a zone is kept for the source's configured offset, and a line cut at the length
//! bound is judged by its head.
//! Owns the line grammar, the skip reasons, client-IP and forwarded-hop parsing and
//! log-escape decoding. Never allocates, locks or syscalls on the per-line path, never decides
//! what is sensitive and never decides which hop is the client (that needs the trusted
//! proxies: [`crate::classify::client`]).

use std::net::{IpAddr, Ipv4Addr};

use memchr::{memchr, memrchr};

use crate::bytes16::{self, Block};

mod escape;
mod format;
pub mod json;
pub mod plan;
pub mod samba;
pub mod sample;
mod syslog;
pub mod time;
pub mod xferlog;

#[cfg(test)]
mod tests;

pub use escape::unescape_log_field;
pub use format::LineFormat;
pub use plan::{FieldPlan, PlannedTail, TimeKind, Transport};

/// Longest line accepted, in bytes (without the line ending). Real request lines are far
/// shorter; anything longer is noise or an attack on the parser and is skipped as `TooLong`.
pub const MAX_LINE_LEN: usize = 16 * 1024;

/// Which `LogFormat`/`log_format` the file was written with; fixes the field order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// `%h %l %u [%t] "%r" %>s %b "%{Referer}i" "%{User-Agent}i"` (also nginx's default).
    Combined,
    /// nginx's `main` (the default `log_format` of nginx.org's packages): combined plus
    /// `"$http_x_forwarded_for"`.
    Main,
    /// `%h %l %u [%t] "%r" %>s %b`.
    Common,
    /// `%v:%p ` followed by `combined`.
    VhostCombined,
    /// `%v:%p ` followed by `common`.
    VhostCommon,
}

impl LogFormat {
    /// Every format, for config validation messages and tests.
    pub const ALL: [LogFormat; 5] =
        [LogFormat::Combined, LogFormat::Main, LogFormat::Common, LogFormat::VhostCombined, LogFormat::VhostCommon];

    /// The configuration name of the format.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Combined => "combined",
            LogFormat::Main => "main",
            LogFormat::Common => "common",
            LogFormat::VhostCombined => "vhost_combined",
            LogFormat::VhostCommon => "vhost_common",
        }
    }

    /// Inverse of [`LogFormat::as_str`] (exact match).
    pub fn from_name(name: &str) -> Option<LogFormat> {
        LogFormat::ALL.into_iter().find(|format| format.as_str() == name)
    }

    fn has_vhost(self) -> bool {
        matches!(self, LogFormat::VhostCombined | LogFormat::VhostCommon)
    }

    fn has_referer_and_user_agent(self) -> bool {
        matches!(self, LogFormat::Combined | LogFormat::Main | LogFormat::VhostCombined)
    }
}

/// A header in front of the access-log line that the parser removed; label values of
/// `recwatch_lines_unwrapped_total`, so a closed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wrapper {
    /// An RFC 3164 or RFC 5424 syslog header (nginx `access_log syslog:`, rsyslog files).
    Syslog,
}

impl Wrapper {
    /// Every wrapper, so metrics can pre-register all label values.
    pub const ALL: [Wrapper; 1] = [Wrapper::Syslog];

    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Wrapper::Syslog => "syslog",
        }
    }
}

/// Why a line was skipped; label values for a metric, so a closed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// Nothing but whitespace.
    Empty,
    /// Longer than [`MAX_LINE_LEN`], or a truncated head cut before its bytes field
    /// ([`parse_line_head`]).
    TooLong,
    /// Generic structure error: a field separator or quote is missing.
    Malformed,
    /// No `[...]` of the timestamp's shape where one was expected.
    BadTimestamp,
    /// The quoted request is unterminated. (A request that is junk but quoted, such as a TLS
    /// handshake sent to a plain-HTTP port, `"\x16\x03\x01..."`, parses: see
    /// [`AccessLine::junk_request`].)
    BadRequestLine,
    /// Status is not three digits in 100..=599.
    BadStatus,
    /// The client token is empty, `-`, or contains bytes no address or hostname has; or
    /// (found by the pipeline) no hop of it names a client.
    BadClient,
    /// The line contains a NUL byte (binary garbage, a truncated or preallocated file).
    Binary,
    /// A well-formed line that records no file access (a Samba audit record of `connect`,
    /// `close`, the opens of a directory scan): never an event, and no sign of a wrong format.
    NoAccess,
}

impl SkipReason {
    /// Every reason, so metrics can pre-register all label values.
    pub const ALL: [SkipReason; 9] = [
        SkipReason::Empty,
        SkipReason::TooLong,
        SkipReason::Malformed,
        SkipReason::BadTimestamp,
        SkipReason::BadRequestLine,
        SkipReason::BadStatus,
        SkipReason::BadClient,
        SkipReason::Binary,
        SkipReason::NoAccess,
    ];

    /// Metric label value (snake_case).
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Empty => "empty",
            SkipReason::TooLong => "too_long",
            SkipReason::Malformed => "malformed",
            SkipReason::BadTimestamp => "bad_timestamp",
            SkipReason::BadRequestLine => "bad_request_line",
            SkipReason::BadStatus => "bad_status",
            SkipReason::BadClient => "bad_client",
            SkipReason::Binary => "binary",
            SkipReason::NoAccess => "no_access",
        }
    }

    /// Whether the line failed to parse (blank lines and lines recording no access did not).
    pub fn is_unparsed(self) -> bool {
        !matches!(self, SkipReason::Empty | SkipReason::NoAccess)
    }
}

/// One parsed line; every field borrows from the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessLine<'a> {
    /// `host:port` token of the `vhost_*` formats: which site served the file.
    pub vhost: Option<&'a [u8]>,
    /// `%h` as written (IP text, maybe a hostname); see [`parse_client_ip`]. When
    /// `client_is_list`, the whole field of an X-Forwarded-For style list, quotes included:
    /// `10.0.0.2, 10.0.0.1, 85.181.35.98`, `"10.5.102.222, 199.96.1.1" 10.2.1.185` (the
    /// address after a list is the peer); iterate it with [`client_hops`].
    pub client: &'a [u8],
    /// The client field is a list of hops rather than one address or name.
    pub client_is_list: bool,
    /// `%u`, the authenticated user; `None` when `-` (or empty). Still log-escaped.
    pub user: Option<&'a [u8]>,
    /// The 26 bytes inside `[...]`, e.g. `18/Feb/2019:10:00:01 +0100`. Only its shape is
    /// checked here; [`time::parse_clf_time`] validates the values, and only lines that
    /// matter pay for it.
    pub time: &'a [u8],
    /// e.g. `GET`; empty if the request line was `-`.
    pub method: &'a [u8],
    /// Request target exactly as logged (still log-escaped, still percent-encoded); empty if
    /// the request was `-`. Normalise it before comparing it with anything.
    pub target: &'a [u8],
    /// The quoted request line is no HTTP request (a TLS handshake or other binary sent to
    /// the plain port, `""`, `"Gh0st\xad"`): method and target are empty, client, time and
    /// status are kept, because these are a prober's traces.
    pub junk_request: bool,
    /// `%>s`, 100..=599.
    pub status: u16,
    /// The header removed from in front of the line, if any.
    pub wrapper: Option<Wrapper>,
    /// Everything after the status (bytes, referer, user agent): parsed lazily by the
    /// accessors, because most lines are dropped before anyone asks for these.
    tail: &'a [u8],
    /// Which fields follow the bytes: `common` lines never report referer or user agent even
    /// if a custom format appended quoted fields; only `main` reports X-Forwarded-For.
    format: LogFormat,
    /// What a compiled plan or JSON map read after the status (its fields are found in one
    /// pass, not lazily); `None` for the named formats, whose tail is read lazily.
    planned: Option<PlannedTail<'a>>,
}

impl<'a> AccessLine<'a> {
    /// `%b` / `$body_bytes_sent`; `-` (nothing sent) and anything unparsable are 0, huge
    /// values saturate.
    pub fn body_bytes(&self) -> u64 {
        if let Some(planned) = &self.planned {
            return planned.body_bytes;
        }
        let token = match memchr(b' ', self.tail) {
            Some(space) => &self.tail[..space],
            None => self.tail,
        };
        let mut bytes: u64 = 0;
        for &digit in token {
            if !digit.is_ascii_digit() {
                return 0;
            }
            bytes = bytes.saturating_mul(10).saturating_add(u64::from(digit - b'0'));
        }
        bytes
    }

    /// `%{Referer}i` for combined formats, raw (still log-escaped); `None` for `-`, `""` or
    /// absent.
    pub fn referer(&self) -> Option<&'a [u8]> {
        if let Some(planned) = &self.planned {
            return planned.referer;
        }
        let (start, end) = self.referer_span()?;
        dash_is_none(&self.tail[start..end])
    }

    /// `%{User-Agent}i` for combined formats, raw (still log-escaped); `None` for `-`, `""`
    /// or absent.
    pub fn user_agent(&self) -> Option<&'a [u8]> {
        if let Some(planned) = &self.planned {
            return planned.user_agent;
        }
        let (_, referer_end) = self.referer_span()?;
        let (start, end) = quoted_after_space(self.tail, referer_end + 1)?;
        dash_is_none(&self.tail[start..end])
    }

    /// `"$http_x_forwarded_for"` of nginx's `main` format (or the X-Forwarded-For field of a
    /// plan or JSON map), raw (still log-escaped); `None` for other formats, `-`, `""` or
    /// absent. Believe it only from a trusted proxy.
    pub fn forwarded_for(&self) -> Option<&'a [u8]> {
        if let Some(planned) = &self.planned {
            return planned.forwarded_for;
        }
        if self.format != LogFormat::Main {
            return None;
        }
        let (_, referer_end) = self.referer_span()?;
        let (_, user_agent_end) = quoted_after_space(self.tail, referer_end + 1)?;
        let (start, end) = quoted_after_space(self.tail, user_agent_end + 1)?;
        dash_is_none(&self.tail[start..end])
    }

    /// The timestamp as Unix seconds (a zone-less one taken as UTC), or `None` when its values
    /// are out of range.
    pub fn unix_time(&self) -> Option<i64> {
        plan::parse_time(self.time_kind(), self.time)
    }

    /// How [`AccessLine::time`] is written: CLF for the named formats, whatever the plan's
    /// variable writes otherwise.
    pub fn time_kind(&self) -> TimeKind {
        self.planned.map_or(TimeKind::Clf, |planned| planned.time_kind)
    }

    /// Whether the line says the response went over plain HTTP or TLS (scheme, `$https`,
    /// port or TLS protocol fields of a plan); `Unknown` for the named formats.
    pub fn transport(&self) -> Transport {
        self.planned.map_or(Transport::Unknown, |planned| planned.transport)
    }

    /// Byte range of the referer's contents within `tail`.
    fn referer_span(&self) -> Option<(usize, usize)> {
        if !self.format.has_referer_and_user_agent() {
            return None;
        }
        let bytes_end = memchr(b' ', self.tail)?;
        quoted_after_space(self.tail, bytes_end)
    }
}

/// Parses one access-log line. `line` has no trailing `\n` (a trailing `\r`, or `\r\n`, is
/// ignored).
///
/// Fields are found left to right, each quoted field escape-aware, so bytes an attacker
/// controls (user agent, referer, user name) cannot move the request, status or client.
pub fn parse_line(format: LogFormat, line: &[u8]) -> Result<AccessLine<'_>, SkipReason> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE_LEN {
        return Err(SkipReason::TooLong);
    }
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err(SkipReason::Empty);
    }
    // A line that cannot start with a client address is looked at for a syslog header.
    let (line, wrapper) = match syslog::may_be_wrapped(line).then(|| syslog::unwrap(line)).flatten() {
        Some(message) => (message, Some(Wrapper::Syslog)),
        None => (line, None),
    };
    // NUL bytes are looked for only where they matter, never in a full pass over every
    // line: in the request line (never legitimate there), and in a line that failed to parse
    // (to tell binary junk from a malformed text line). One in the user agent is tolerated.
    match parse_fields(format, line) {
        Ok(access) if memchr(0, access.target).is_some() => Err(SkipReason::Binary),
        Ok(access) => Ok(AccessLine { wrapper, ..access }),
        Err(_) if memchr(0, line).is_some() => Err(SkipReason::Binary),
        Err(reason) => Err(reason),
    }
}

/// A line in the plainest shape, as [`plain_line`] found it: its target to judge the line by,
/// and the rest of the fields for [`PlainLine::access`]. The hot path of replay and tailing:
/// most lines are passed over on their target alone, and a line whose target may be sensitive
/// is not parsed a second time.
pub struct PlainLine<'a> {
    line: &'a [u8],
    /// Where the client field starts (after a vhost).
    client_start: usize,
    client_len: usize,
    user_start: usize,
    bracket: usize,
    method: &'a [u8],
    pub target: &'a [u8],
    status: u16,
    tail: &'a [u8],
    format: LogFormat,
}

impl<'a> PlainLine<'a> {
    /// The line as [`parse_line`] reads it (the same value: tested against each other).
    pub fn access(&self) -> AccessLine<'a> {
        let line = self.line;
        AccessLine {
            vhost: (self.client_start > 0).then(|| &line[..self.client_start - 1]),
            client: &line[self.client_start..self.client_start + self.client_len],
            client_is_list: false,
            user: dash_is_none(&line[self.user_start..self.bracket - 1]),
            time: &line[self.bracket + 1..self.bracket + 1 + time::CLF_TIME_LEN],
            method: self.method,
            target: self.target,
            junk_request: false,
            status: self.status,
            wrapper: None,
            tail: self.tail,
            format: self.format,
            planned: None,
        }
    }
}

/// A line in the plainest shape — an address for the client, `-` for ident, a user without
/// `[`, a zoned timestamp, a request that is no junk, a valid status, no NUL in the request —
/// with its fields found exactly as [`parse_line`] finds them, so `parse_line` accepts it as
/// [`PlainLine::access`]. `None` for any other line: [`parse_line`] judges it.
#[inline]
pub fn plain_line(format: LogFormat, line: &[u8]) -> Option<PlainLine<'_>> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE_LEN || syslog::may_be_wrapped(line) {
        return None;
    }
    let mut client_start = 0;
    if format.has_vhost() {
        client_start = memchr(b' ', line).filter(|&end| end > 0)? + 1;
    }
    // An address token is a client field of its own (see `client_field_len`): address bytes
    // up to the first blank.
    let client_len = address_len(&line[client_start..]);
    if client_len == 0 || line.get(client_start + client_len) != Some(&b' ') {
        return None;
    }
    // Ident `-`, then the first `[` after a blank must open a zoned timestamp: the first
    // candidate `find_timestamp_bracket` tries.
    let ident_start = client_start + client_len + 1;
    let user_start = ident_start + 2;
    if line.get(ident_start..user_start) != Some(b"- ") {
        return None;
    }
    let bracket = if line.get(user_start..user_start + 2) == Some(b"- ") {
        user_start + 2
    } else {
        user_start + memchr(b'[', line.get(user_start..)?)?
    };
    if bracket <= user_start || line[bracket - 1] != b' ' || !is_timestamp_at(line, bracket) {
        return None;
    }
    let request_start = bracket + time::CLF_TIME_LEN + 4;
    // The request's closing quote; a NUL before it leaves the line to the parser (a NUL in
    // the target skips it as binary).
    let request_end = closing_quote_with(line, request_start, true)?;
    let request = &line[request_start..request_end];
    let (method, target) = match request_or_junk(request) {
        (_, _, true) => return None,
        (method, target, false) => (method, target),
    };
    let (status, tail) = parse_status(&line[request_end + 1..]).ok()?;
    Some(PlainLine { line, client_start, client_len, user_start, bracket, method, target, status, tail, format })
}

/// Length of the address token (hex digits, `.`, `:`) that `field` starts with. Runs on
/// every line: sixteen bytes are classified at once, so an IPv4 address takes one block.
#[inline]
fn address_len(field: &[u8]) -> usize {
    bytes16::position(field, |block| {
        // `0`..`:` (digits and the colon), `a`..`f` with case folded, `.`.
        let digit_or_colon = block.within(Block::splat(b'0'), Block::splat(b':'));
        let hex_letter = (block | Block::splat(0x20)).within(Block::splat(b'a'), Block::splat(b'f'));
        !(digit_or_colon | hex_letter | block.eq(b'.'))
    })
    .unwrap_or(field.len())
}

/// Parses the head of a line that was longer than the framer's bound (its first
/// `max_line_len` bytes; the rest was discarded and counted as truncated).
///
/// The fields up to and including the bytes field (client, ident, user, time, request,
/// status, bytes) are judged as in [`parse_line`]; a head cut inside Referer, User-Agent or
/// X-Forwarded-For is accepted, the cut field and those after it absent (an unterminated
/// quote is never read as a value), so a cut X-Forwarded-For is never believed.
/// Only a head cut before the bytes field ends (at a space) is skipped, as `TooLong`: its
/// bytes count, or more, would be a guess.
pub fn parse_line_head(format: LogFormat, head: &[u8]) -> Result<AccessLine<'_>, SkipReason> {
    match parse_line(format, head) {
        Ok(access) if memchr(b' ', access.tail).is_some() => Ok(access),
        Ok(_) | Err(SkipReason::BadRequestLine | SkipReason::BadStatus) => Err(SkipReason::TooLong),
        Err(reason) => Err(reason),
    }
}

fn parse_fields(format: LogFormat, line: &[u8]) -> Result<AccessLine<'_>, SkipReason> {
    let mut cursor = 0;
    let vhost = if format.has_vhost() {
        let end = memchr(b' ', line).ok_or(SkipReason::Malformed)?;
        if end == 0 {
            return Err(SkipReason::Malformed);
        }
        cursor = end + 1;
        Some(&line[..end])
    } else {
        None
    };

    let (client_len, client_is_list) = client_field_len(&line[cursor..])?;
    let client = &line[cursor..cursor + client_len];
    let ident_start = cursor + client_len + 1;
    let ident = &line[ident_start..];
    // `%l` is `-` on virtually every server; skip the search for it.
    let ident_len = if ident.starts_with(b"- ") { 1 } else { memchr(b' ', ident).ok_or(SkipReason::Malformed)? };
    let user_start = ident_start + ident_len + 1;

    let (open_bracket, time_len) = find_timestamp_bracket(line, user_start)?;
    // `open_bracket > user_start` and `line[open_bracket - 1] == b' '` were checked.
    let user = dash_is_none(&line[user_start..open_bracket - 1]);
    let time = &line[open_bracket + 1..open_bracket + 1 + time_len];

    // `[` + time + `] "`, all checked present.
    let request_start = open_bracket + time_len + 4;
    let request_end = find_closing_quote(line, request_start).ok_or(SkipReason::BadRequestLine)?;
    let (method, target, junk_request) = request_or_junk(&line[request_start..request_end]);

    let (status, tail) = parse_status(&line[request_end + 1..])?;

    Ok(AccessLine {
        vhost,
        client,
        client_is_list,
        user,
        time,
        method,
        target,
        junk_request,
        status,
        wrapper: None,
        tail,
        format,
        planned: None,
    })
}

/// Method and target of a quoted request line, or (`junk_request`) empty fields when it is no
/// HTTP request: no space, an empty target, or a method that is not an HTTP token (a TLS
/// ClientHello logged as `\x16\x03\x01…`, `Gh0st\xad`, `""`).
#[inline(always)]
fn request_or_junk(request: &[u8]) -> (&[u8], &[u8], bool) {
    match split_request(request) {
        Ok((method, target)) if method.iter().all(|&b| TOKEN_BYTE[usize::from(b)]) => (method, target, false),
        _ => (b"", b"", true),
    }
}

/// RFC 9110 `tchar`s, what a method may be made of, as a table: a method is checked on every
/// line.
const TOKEN_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric()
            || matches!(b, b'!' | b'#'..=b'\'' | b'*' | b'+' | b'-' | b'.' | b'^'..=b'`' | b'|' | b'~');
        byte += 1;
    }
    table
};

/// The hops of a client field or an X-Forwarded-For value, left (farthest from the server) to
/// right (nearest): split on commas, blanks and quotes, empty pieces dropped.
pub fn client_hops(field: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    field.split(|&b| matches!(b, b',' | b' ' | b'"')).filter(|hop| !hop.is_empty())
}

/// One hop of an X-Forwarded-For list as an address: what [`parse_client_ip`] accepts, and
/// also with a port (`203.0.113.7:5123`, `[2001:db8::1]:443`), as some proxies write it.
pub fn parse_forwarded_ip(hop: &[u8]) -> Option<IpAddr> {
    if let Some(ip) = parse_client_ip(hop) {
        return Some(ip);
    }
    let (host, port) = match hop {
        [b'[', inner @ ..] => {
            let close = memchr(b']', inner)?;
            (&inner[..close], inner[close + 1..].strip_prefix(b":")?)
        }
        _ => {
            let colon = memchr(b':', hop)?;
            if memchr(b':', &hop[colon + 1..]).is_some() {
                return None;
            }
            (&hop[..colon], &hop[colon + 1..])
        }
    };
    if port.is_empty() || port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
        return None;
    }
    parse_client_ip(host)
}

/// Whether a client token that is no address is a host name (Apache `HostnameLookups On`,
/// `monitoring-server`, `crawl-66-249-66-1.googlebot.com`) or a zone-scoped IPv6 address
/// (`fe80::1%eth0`): 1..=253 bytes of letters, digits, `-`, `.`, `_`, at least one letter;
/// a `:` only in a zone-scoped address (an IPv6 address before the `%`). So a `host:port`
/// token — the server name of a `vhost_combined` line read as `combined` — is no client.
pub fn is_host_name(text: &[u8]) -> bool {
    if !(1..=253).contains(&text.len()) {
        return false;
    }
    let name_byte = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
    match memchr(b'%', text) {
        Some(at) => {
            let (address, zone) = (&text[..at], &text[at + 1..]);
            matches!(parse_client_ip(address), Some(IpAddr::V6(_))) && !zone.is_empty() && zone.iter().all(name_byte)
        }
        None => text.iter().any(u8::is_ascii_alphabetic) && text.iter().all(name_byte),
    }
}

/// Parses a client token as an IP address: IPv4 or IPv6 text, optional `[...]` brackets;
/// an IPv4-mapped IPv6 address (`::ffff:10.1.2.3`) comes back as the IPv4 address so one
/// client has one identity. Hostnames and zone ids (`fe80::1%eth0`) are `None`.
pub fn parse_client_ip(text: &[u8]) -> Option<IpAddr> {
    let text = match text {
        [b'[', inner @ .., b']'] => inner,
        _ => text,
    };
    // Longest IPv6 text (`ffff:…:255.255.255.255`) is 45 bytes; longer is never an address.
    if text.is_empty() || text.len() > 45 {
        return None;
    }
    if let Some(v4) = dotted_quad(text) {
        return Some(IpAddr::V4(v4));
    }
    let address: IpAddr = std::str::from_utf8(text).ok()?.parse().ok()?;
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Some(IpAddr::V4(v4)),
            None => Some(IpAddr::V6(v6)),
        },
        IpAddr::V4(_) => Some(address),
    }
}

/// The usual IPv4 spelling (four decimal octets, no leading zero), without the standard
/// parser's generality; `None` for anything else, which the standard parser then judges
/// (never an address it would refuse: tested against it).
fn dotted_quad(text: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut at = 0;
    for (n, octet) in octets.iter_mut().enumerate() {
        if n > 0 {
            if text.get(at) != Some(&b'.') {
                return None;
            }
            at += 1;
        }
        let start = at;
        let mut value = 0u32;
        while at - start < 3 && text.get(at).is_some_and(u8::is_ascii_digit) {
            value = value * 10 + u32::from(text[at] - b'0');
            at += 1;
        }
        if at == start || value > 255 || (at - start > 1 && text[start] == b'0') {
            return None;
        }
        *octet = value as u8;
    }
    (at == text.len()).then_some(Ipv4Addr::from(octets))
}

/// The Kafka message key of a log line: its client's address in canonical text (IPv4-mapped
/// IPv6 as IPv4, IPv6 compressed), or its host name, so every line of one client lands in one
/// partition and its windows live in one consumer. For a client field that is a list, the
/// nearest hop (the peer): which hop is the client depends on the consumer's trusted proxies,
/// and every line of one peer still lands in one partition. `None` when the line does not
/// parse or has no client.
pub fn client_key(format: LogFormat, line: &[u8]) -> Option<String> {
    let access = parse_line(format, line).ok()?;
    let peer = client_hops(access.client).next_back()?;
    match parse_forwarded_ip(peer) {
        Some(ip) => Some(ip.to_string()),
        None => is_host_name(peer).then(|| String::from_utf8_lossy(peer).into_owned()),
    }
}

fn dash_is_none(field: &[u8]) -> Option<&[u8]> {
    match field {
        b"-" | b"" => None,
        _ => Some(field),
    }
}

/// Length of the client field at the start of `rest`, which must end at a space, and whether
/// it is a list of hops. The common case is one token: non-empty, not `-`, printable ASCII
/// without quotes (one pass finds the end and checks the bytes). A token ending in `,` or a
/// field opening with `"` is an X-Forwarded-For list ([`client_list_len`]). Deeper
/// interpretation (IP or hostname) is left to [`parse_client_ip`].
fn client_field_len(rest: &[u8]) -> Result<(usize, bool), SkipReason> {
    // The token ends at the first space (vectorised search); then every byte must be
    // printable, non-space and not a quote. The check is branchless so it vectorises too:
    // this runs on every line.
    let len = memchr(b' ', rest).ok_or(SkipReason::Malformed)?;
    let token = &rest[..len];
    if len == 0 || token == b"-" {
        return Err(SkipReason::BadClient);
    }
    if !is_printable_token(token) || token[len - 1] == b',' {
        return client_list_len(rest).map(|len| (len, true));
    }
    Ok((len, false))
}

/// Printable ASCII, no blank, no quote.
fn is_printable_token(token: &[u8]) -> bool {
    token.iter().fold(true, |ok, &b| ok & (b.wrapping_sub(0x21) < 0x5e) & (b != b'"'))
}

/// Longest client field holding a list of hops; longer is no proxy chain.
const MAX_CLIENT_LIST_LEN: usize = 1024;

/// Length of a client field that is a list: `a, b, c` (tokens ending in `,` continue it) or
/// `"a, b, c"`, either optionally followed by one more address, the peer (an ident is never
/// an address). Every hop must be a printable token.
fn client_list_len(rest: &[u8]) -> Result<usize, SkipReason> {
    let mut end = if rest.first() == Some(&b'"') {
        let close = find_closing_quote(rest, 1).ok_or(SkipReason::BadClient)?;
        if !client_hops(&rest[1..close]).all(is_printable_token) {
            return Err(SkipReason::BadClient);
        }
        close + 1
    } else {
        let mut end = 0;
        loop {
            let len = memchr(b' ', &rest[end..]).ok_or(SkipReason::Malformed)?;
            let token = &rest[end..end + len];
            if len == 0 || !is_printable_token(token) || end + len > MAX_CLIENT_LIST_LEN {
                return Err(SkipReason::BadClient);
            }
            end += len;
            if token[len - 1] != b',' {
                break end;
            }
            end += 1;
        }
    };
    if rest.get(end) != Some(&b' ') {
        return Err(SkipReason::Malformed);
    }
    let after = &rest[end + 1..];
    if let Some(len) = memchr(b' ', after) {
        if parse_client_ip(&after[..len]).is_some() {
            end += 1 + len;
        }
    }
    if end > MAX_CLIENT_LIST_LEN {
        return Err(SkipReason::BadClient);
    }
    Ok(end)
}

/// Finds the `[` that opens the timestamp, searching left to right from `user_start`, and
/// the timestamp's length.
///
/// A candidate counts only if it follows a space, is not the first byte of the user field,
/// and is followed by a timestamp-shaped 26 bytes (or a zone-less one, see
/// [`zone_less_timestamp_len`]), `]`, space and `"`; otherwise the `[` belongs to the user
/// name and the search goes on.
fn find_timestamp_bracket(line: &[u8], user_start: usize) -> Result<(usize, usize), SkipReason> {
    // Fast path: no user (`- [`), by far the most common case.
    if line.get(user_start..user_start + 2) == Some(b"- ") && is_timestamp_at(line, user_start + 2) {
        return Ok((user_start + 2, time::CLF_TIME_LEN));
    }
    let mut search_from = user_start;
    let mut saw_candidate = false;
    while let Some(offset) = line.get(search_from..).and_then(|rest| memchr(b'[', rest)) {
        let bracket = search_from + offset;
        if bracket > user_start && line[bracket - 1] == b' ' {
            saw_candidate = true;
            if is_timestamp_at(line, bracket) {
                return Ok((bracket, time::CLF_TIME_LEN));
            }
            if let Some(len) = zone_less_timestamp_len(line, bracket) {
                return Ok((bracket, len));
            }
        }
        search_from = bracket + 1;
    }
    Err(if saw_candidate { SkipReason::BadTimestamp } else { SkipReason::Malformed })
}

/// The length of a timestamp at `line[bracket..]` written without a numeric zone:
/// `[dd/Mon/yyyy:HH:MM:SS]` (the source's configured `timezone` applies) or the same with
/// ` GMT` or ` UTC`, then `] "`. The slow path: tried only when the usual shape failed.
fn zone_less_timestamp_len(line: &[u8], bracket: usize) -> Option<usize> {
    const TEMPLATE: &[u8; time::CLF_LOCAL_TIME_LEN] = b"00/Aaa/0000:00:00:00";
    let start = bracket + 1;
    let local = line.get(start..start + time::CLF_LOCAL_TIME_LEN)?;
    let shaped = local.iter().zip(TEMPLATE).all(|(&byte, &want)| match want {
        b'0' => byte.is_ascii_digit(),
        b'A' | b'a' => byte.is_ascii_alphabetic(),
        literal => byte == literal,
    });
    if !shaped {
        return None;
    }
    let after = &line[start + time::CLF_LOCAL_TIME_LEN..];
    if after.starts_with(b"] \"") {
        return Some(time::CLF_LOCAL_TIME_LEN);
    }
    match after.get(..7)? {
        b" GMT] \"" | b" UTC] \"" => Some(time::CLF_LOCAL_TIME_LEN + 4),
        _ => None,
    }
}

/// Whether `line[bracket..]` starts with `[`, a timestamp-shaped 26 bytes, `]`, space, `"`.
#[inline(always)]
fn is_timestamp_at(line: &[u8], bracket: usize) -> bool {
    match line.get(bracket..bracket + 30) {
        Some(window) => window[0] == b'[' && &window[27..30] == b"] \"" && is_timestamp_shaped(&window[1..27]),
        None => false,
    }
}

/// The timestamp layout; `0` digit, `A`/`a` letter, `+` sign, anything else literal.
const TIME_TEMPLATE: &[u8; time::CLF_TIME_LEN] = b"00/Aaa/0000:00:00:00 +0000";

/// Starts of the two blocks that cover the 26 timestamp bytes (they overlap).
const TIME_BLOCK_STARTS: [usize; 2] = [0, time::CLF_TIME_LEN - 16];

/// Per-block lanes derived from [`TIME_TEMPLATE`]: (byte OR-ed in first, lowest and highest
/// byte allowed). A letter lane ORs in `0x20` and allows `a`..=`z`, which takes both cases
/// and nothing else; a digit lane allows `0`..=`9`, a literal lane only itself, the sign lane
/// anything (it is checked on its own: `+` and `-` are no range).
const TIME_BLOCKS: [([u8; 16], [u8; 16], [u8; 16]); 2] =
    [time_block(TIME_BLOCK_STARTS[0]), time_block(TIME_BLOCK_STARTS[1])];

const fn time_block(start: usize) -> ([u8; 16], [u8; 16], [u8; 16]) {
    let (mut fold, mut low, mut high) = ([0; 16], [0; 16], [0; 16]);
    let mut lane = 0;
    while lane < 16 {
        (fold[lane], low[lane], high[lane]) = match TIME_TEMPLATE[start + lane] {
            b'0' => (0, b'0', b'9'),
            b'A' | b'a' => (0x20, b'a', b'z'),
            b'+' => (0, 0, 0xff),
            literal => (0, literal, literal),
        };
        lane += 1;
    }
    (fold, low, high)
}

/// Shape of `dd/Mon/yyyy:HH:MM:SS ±hhmm`: digits, letters and separators in place; values
/// are not checked (see [`time::parse_clf_time`]). Runs on every line, so the bytes are
/// checked sixteen at a time against each lane's range ([`TIME_BLOCKS`]), with no branch
/// per byte.
#[inline]
fn is_timestamp_shaped(time: &[u8]) -> bool {
    let Ok(time) = <&[u8; time::CLF_TIME_LEN]>::try_from(time) else {
        return false;
    };
    let [first, second] = [0, 1].map(|i| {
        let (fold, low, high) = &TIME_BLOCKS[i];
        let start = TIME_BLOCK_STARTS[i];
        let block = Block::new(time[start..start + 16].try_into().expect("sixteen bytes")) | Block::new(fold);
        block.within(Block::new(low), Block::new(high))
    });
    ((first & second).bits() == 0xffff) & ((time[21] == b'+') | (time[21] == b'-'))
}

/// Index of the `"` closing a quoted field whose contents start at `start`; a backslash
/// escapes the byte after it (Apache's `\"`; nginx never leaves a bare `"` or `\`).
fn find_closing_quote(line: &[u8], start: usize) -> Option<usize> {
    closing_quote_with(line, start, false)
}

/// [`find_closing_quote`], giving up (`None`) at a NUL when `nul_stops`. Fields are short, so
/// the search is [`bytes16::position`], whose set-up costs less than `memchr`'s. Always
/// inlined: out of line, it cost ~30 instructions a line (callgrind).
#[inline(always)]
fn closing_quote_with(line: &[u8], start: usize, nul_stops: bool) -> Option<usize> {
    let stops = |block: Block| {
        let quote_or_escape = block.eq(b'"') | block.eq(b'\\');
        if nul_stops {
            quote_or_escape | block.eq(0)
        } else {
            quote_or_escape
        }
    };
    let mut search_from = start;
    loop {
        let found = search_from + bytes16::position(line.get(search_from..)?, stops)?;
        match line[found] {
            b'"' => return Some(found),
            b'\\' => search_from = found + 2,
            _ => return None,
        }
    }
}

/// `"<contents>"` starting with a space at `space_at`: the contents' range.
fn quoted_after_space(field: &[u8], space_at: usize) -> Option<(usize, usize)> {
    if field.get(space_at..space_at + 2)? != b" \"" {
        return None;
    }
    let start = space_at + 2;
    let end = find_closing_quote(field, start)?;
    Some((start, end))
}

/// Splits `%r` into method and target. `-` (no request, e.g. a timed-out connection) gives
/// empty fields; the protocol is dropped only if the last token starts with `HTTP/`, so a
/// target containing spaces stays whole.
///
/// nginx logs the request line verbatim, and it accepts extra spaces before the target,
/// between target and protocol and after the protocol: `"GET  /x.wav HTTP/1.1 "` is served
/// as `/x.wav`. Those spaces are no part of the target, so they are skipped here.
#[inline(always)]
fn split_request(request: &[u8]) -> Result<(&[u8], &[u8]), SkipReason> {
    // The usual shape, `METHOD target HTTP/x.y` with single blanks, without the scans below
    // (same result: `split_request_in_general`, tested against each other); most methods are
    // `GET`, found without a scan.
    let n = request.len();
    if n > 11 {
        // ` HTTP/` and the `.`: one compare of the eight bytes before the minor digit, the
        // major digit masked out.
        const PROTOCOL: u64 = u64::from_le_bytes(*b" HTTP/\0.");
        const PROTOCOL_MASK: u64 = u64::from_le_bytes([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0xff]);
        let protocol = u64::from_le_bytes(request[n - 9..n - 1].try_into().expect("eight bytes"));
        let (major, minor) = (request[n - 3], request[n - 1]);
        if protocol & PROTOCOL_MASK == PROTOCOL
            && major.is_ascii_digit()
            && minor.is_ascii_digit()
            && request[n - 10] != b' '
        {
            let method_end = match request {
                [b'G', b'E', b'T', b' ', ..] => 3,
                _ => request.iter().position(|&byte| byte == b' ').unwrap_or(n),
            };
            if method_end > 0 && method_end + 1 < n - 9 && request[method_end + 1] != b' ' {
                return Ok((&request[..method_end], &request[method_end + 1..n - 9]));
            }
        }
    }
    split_request_in_general(request)
}

/// [`split_request`] for any request line.
fn split_request_in_general(request: &[u8]) -> Result<(&[u8], &[u8]), SkipReason> {
    if request == b"-" {
        return Ok((b"", b""));
    }
    // Methods are a few bytes long: a plain scan beats a vectorised search here.
    let method_end = request.iter().position(|&byte| byte == b' ').ok_or(SkipReason::BadRequestLine)?;
    let method = &request[..method_end];
    let after_method = trim_spaces(&request[method_end + 1..]);
    let target = match memrchr(b' ', after_method) {
        Some(space) if after_method[space + 1..].starts_with(b"HTTP/") => trim_spaces(&after_method[..space]),
        _ => after_method,
    };
    if method.is_empty() || target.is_empty() {
        return Err(SkipReason::BadRequestLine);
    }
    Ok((method, target))
}

/// `bytes` without leading and trailing spaces (what nginx skips around the target and the
/// protocol; both servers log other blanks escaped, as `\x09` or `\t`).
fn trim_spaces(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&byte| byte != b' ').unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|&byte| byte != b' ').map_or(start, |last| last + 1);
    &bytes[start..end]
}

/// After the request's closing quote: ` ddd` then a space or the end. Returns the status
/// and everything after that space.
#[inline(always)]
fn parse_status(after_request: &[u8]) -> Result<(u16, &[u8]), SkipReason> {
    let (digits, tail) = match after_request {
        [b' ', a, b, c] => ([*a, *b, *c], &[][..]),
        [b' ', a, b, c, b' ', tail @ ..] => ([*a, *b, *c], tail),
        _ => return Err(SkipReason::BadStatus),
    };
    // Digits' values (any other byte wraps above 9); 100..=599 is a first digit of 1..=5.
    // One test for the three, no branch per digit.
    let [hundreds, tens, ones] = digits.map(|digit| digit.wrapping_sub(b'0'));
    if (hundreds.wrapping_sub(1) > 4) | (tens > 9) | (ones > 9) {
        return Err(SkipReason::BadStatus);
    }
    Ok((u16::from(hundreds) * 100 + u16::from(tens) * 10 + u16::from(ones), tail))
}
