//! Reads JSON access logs, one object per line (Caddy, Traefik, nginx `escape=json`
//! templates), by a field map: which key path holds the client, time, request, status, bytes,
//! user, headers and transport. Owns the producers' default maps and a borrowing JSON scanner
//! that visits only the keys the map names. Never allocates, locks or syscalls per line, and
//! never unescapes (values stay as written; the log-escape decoder later undoes `\"`, `\\`,
//! `\n`, `\t`, `\r`; `\uXXXX` and `\/` stay as written, since nginx and Apache logs may hold
//! those bytes literally).

use memchr::memchr;

use super::plan::{PlannedFields, TimeKind, Transport};
use super::{find_closing_quote, SkipReason};

/// Deepest nesting the scanner follows; deeper objects are skipped whole.
const MAX_DEPTH: usize = 8;

/// Which program wrote the JSON, for its default field map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonProducer {
    /// Caddy's `log` directive (zap JSON): `request.client_ip`/`request.remote_ip`, `ts`
    /// (epoch seconds), `request.method`, `request.uri`, `status`, `size`, `user_id`,
    /// `request.headers.User-Agent[0]`; `request.tls` present = TLS, absent = plain.
    Caddy,
    /// Traefik's access log in JSON: `ClientHost`, `StartUTC`, `RequestMethod`,
    /// `RequestPath`, `DownstreamStatus`, `DownstreamContentSize`, `ClientUsername`,
    /// `RequestScheme`, `request_User-Agent` (with headers kept).
    Traefik,
    /// An nginx `escape=json` template whose keys are the variables' names: `remote_addr`,
    /// `time_iso8601` (or `time_local`, `msec`), `request` (or `request_method` and
    /// `request_uri`), `status`, `body_bytes_sent`, `remote_user`, `http_user_agent`,
    /// `http_referer`, `http_x_forwarded_for`, `scheme`.
    Nginx,
    /// Only what `json_fields` names.
    Custom,
}

impl JsonProducer {
    /// Every producer with its `format` name.
    pub const ALL: [(JsonProducer, &'static str); 4] = [
        (JsonProducer::Caddy, "caddy_json"),
        (JsonProducer::Traefik, "traefik_json"),
        (JsonProducer::Nginx, "nginx_json"),
        (JsonProducer::Custom, "json"),
    ];

    /// The producer of a `format` name.
    pub fn from_name(name: &str) -> Option<JsonProducer> {
        JsonProducer::ALL.into_iter().find(|(_, n)| *n == name).map(|(p, _)| p)
    }

    pub fn as_str(self) -> &'static str {
        JsonProducer::ALL.into_iter().find(|(p, _)| *p == self).map_or("json", |(_, n)| n)
    }

    /// The default map: for each field, key paths tried in order (the first present wins).
    fn default_map(self) -> &'static [(JsonField, &'static str)] {
        match self {
            JsonProducer::Caddy => &[
                (JsonField::Client, "request.client_ip"),
                (JsonField::Client, "request.remote_ip"),
                (JsonField::Time, "ts"),
                (JsonField::Method, "request.method"),
                (JsonField::Target, "request.uri"),
                (JsonField::Status, "status"),
                (JsonField::Bytes, "size"),
                (JsonField::User, "user_id"),
                (JsonField::UserAgent, "request.headers.User-Agent"),
                (JsonField::Referer, "request.headers.Referer"),
                (JsonField::ForwardedFor, "request.headers.X-Forwarded-For"),
                (JsonField::Tls, "request.tls"),
            ],
            JsonProducer::Traefik => &[
                (JsonField::Client, "ClientHost"),
                (JsonField::Time, "StartUTC"),
                (JsonField::Method, "RequestMethod"),
                (JsonField::Target, "RequestPath"),
                (JsonField::Status, "DownstreamStatus"),
                (JsonField::Bytes, "DownstreamContentSize"),
                (JsonField::User, "ClientUsername"),
                (JsonField::UserAgent, "request_User-Agent"),
                (JsonField::Referer, "request_Referer"),
                (JsonField::ForwardedFor, "request_X-Forwarded-For"),
                (JsonField::Scheme, "RequestScheme"),
            ],
            JsonProducer::Nginx => &[
                (JsonField::Client, "remote_addr"),
                (JsonField::Time, "time_iso8601"),
                (JsonField::Time, "time_local"),
                (JsonField::Time, "msec"),
                (JsonField::Request, "request"),
                (JsonField::Method, "request_method"),
                (JsonField::Target, "request_uri"),
                (JsonField::Status, "status"),
                (JsonField::Bytes, "body_bytes_sent"),
                (JsonField::User, "remote_user"),
                (JsonField::UserAgent, "http_user_agent"),
                (JsonField::Referer, "http_referer"),
                (JsonField::ForwardedFor, "http_x_forwarded_for"),
                (JsonField::Scheme, "scheme"),
            ],
            JsonProducer::Custom => &[],
        }
    }
}

/// What a key path of the map means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonField {
    Client,
    User,
    /// A string (ISO 8601 or CLF) or a number (epoch seconds, milli-, micro- or nanoseconds).
    Time,
    /// The whole request line (`GET /x HTTP/1.1`).
    Request,
    Method,
    /// The request target or path.
    Target,
    Status,
    Bytes,
    UserAgent,
    Referer,
    ForwardedFor,
    /// `http` or `https`.
    Scheme,
    /// An object (or any value but `null`) present only on TLS connections.
    Tls,
}

impl JsonField {
    /// Every field with its `json_fields` key.
    pub const ALL: [(JsonField, &'static str); 13] = [
        (JsonField::Client, "client"),
        (JsonField::User, "user"),
        (JsonField::Time, "time"),
        (JsonField::Request, "request"),
        (JsonField::Method, "method"),
        (JsonField::Target, "target"),
        (JsonField::Status, "status"),
        (JsonField::Bytes, "bytes"),
        (JsonField::UserAgent, "user_agent"),
        (JsonField::Referer, "referer"),
        (JsonField::ForwardedFor, "forwarded_for"),
        (JsonField::Scheme, "scheme"),
        (JsonField::Tls, "tls"),
    ];

    pub fn from_name(name: &str) -> Option<JsonField> {
        JsonField::ALL.into_iter().find(|(_, n)| *n == name).map(|(f, _)| f)
    }
}

/// Why a JSON field map is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum JsonMapError {
    #[error("unknown field {0:?} (expected one of: client, user, time, request, method, target, status, bytes, user_agent, referer, forwarded_for, scheme, tls)")]
    UnknownField(String),
    #[error("key path {0:?} is empty, has an empty segment or is deeper than 8")]
    BadPath(String),
    #[error("the map names no {0}; recwatch needs it to judge a fetch")]
    Missing(&'static str),
}

/// One wanted key path.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Wanted {
    field: JsonField,
    segments: Vec<Box<[u8]>>,
    /// Lower wins among paths of one field.
    rank: u8,
}

/// A compiled field map for one JSON source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonPlan {
    producer: JsonProducer,
    /// `json_fields` overrides, as configured (for `check`).
    overrides: Vec<(String, String)>,
    wanted: Vec<Wanted>,
}

impl JsonPlan {
    /// The producer's default map with `overrides` (field name → dotted key path) replacing
    /// every default path of their field.
    pub fn new(producer: JsonProducer, overrides: &[(String, String)]) -> Result<JsonPlan, JsonMapError> {
        let mut map: Vec<(JsonField, String)> =
            producer.default_map().iter().map(|(field, path)| (*field, path.to_string())).collect();
        for (name, path) in overrides {
            let field = JsonField::from_name(name).ok_or_else(|| JsonMapError::UnknownField(name.clone()))?;
            map.retain(|(f, _)| *f != field);
            map.push((field, path.clone()));
        }
        let mut wanted = Vec::new();
        for (field, path) in &map {
            let segments: Vec<Box<[u8]>> = path.split('.').map(|s| s.as_bytes().into()).collect();
            if segments.iter().any(|s| s.is_empty()) || segments.len() > MAX_DEPTH {
                return Err(JsonMapError::BadPath(path.clone()));
            }
            let rank = wanted.iter().filter(|w: &&Wanted| w.field == *field).count() as u8;
            wanted.push(Wanted { field: *field, segments, rank });
        }
        let has = |f: JsonField| wanted.iter().any(|w| w.field == f);
        if !has(JsonField::Client) {
            return Err(JsonMapError::Missing("client"));
        }
        if !has(JsonField::Time) {
            return Err(JsonMapError::Missing("time"));
        }
        if !has(JsonField::Status) {
            return Err(JsonMapError::Missing("status"));
        }
        if !(has(JsonField::Request) || has(JsonField::Target)) {
            return Err(JsonMapError::Missing("request or target"));
        }
        Ok(JsonPlan { producer, overrides: overrides.to_vec(), wanted })
    }

    /// `caddy_json` or `json` with its overrides.
    pub fn describe(&self) -> String {
        let mut s = self.producer.as_str().to_string();
        if !self.overrides.is_empty() {
            let fields: Vec<String> = self.overrides.iter().map(|(f, p)| format!("{f} = {p:?}")).collect();
            s += &format!(" json_fields {{ {} }}", fields.join(", "));
        }
        s
    }

    /// Reads one JSON object line by the map. Values are borrowed as written (strings without
    /// their quotes, escapes kept).
    pub fn parse<'a>(&self, line: &'a [u8]) -> Result<(PlannedFields<'a>, TimeKind), SkipReason> {
        let mut found = Found::default();
        let start = skip_blanks(line, 0);
        if line.get(start) != Some(&b'{') {
            return Err(SkipReason::Malformed);
        }
        let mut stack: [&[u8]; MAX_DEPTH] = [&[]; MAX_DEPTH];
        let end = self.object(line, start, 0, &mut stack, &mut found)?;
        if skip_blanks(line, end) != line.len() {
            return Err(SkipReason::Malformed);
        }
        let value = |field: JsonField| found.get(field);
        let client = value(JsonField::Client).and_then(string_or_token).ok_or(SkipReason::BadClient)?;
        if client.is_empty() || client == b"-" {
            return Err(SkipReason::BadClient);
        }
        let (time, time_kind) = match value(JsonField::Time).ok_or(SkipReason::BadTimestamp)? {
            [b'"', inner @ .., b'"'] if inner.get(4) == Some(&b'-') => (inner, TimeKind::Iso8601),
            [b'"', inner @ .., b'"'] => (inner, TimeKind::Clf),
            number => (number, TimeKind::Epoch),
        };
        let status = value(JsonField::Status)
            .and_then(string_or_token)
            .and_then(super::plan::parse_status_digits)
            .ok_or(SkipReason::BadStatus)?;
        let mut fields = PlannedFields {
            client,
            user: value(JsonField::User).and_then(string_or_token).and_then(super::dash_is_none),
            time,
            status,
            body_bytes: value(JsonField::Bytes).and_then(string_or_token).map(super::plan::parse_count),
            user_agent: value(JsonField::UserAgent).and_then(first_string).and_then(super::dash_is_none),
            referer: value(JsonField::Referer).and_then(first_string).and_then(super::dash_is_none),
            forwarded_for: value(JsonField::ForwardedFor).and_then(first_string).and_then(super::dash_is_none),
            ..PlannedFields::default()
        };
        if let Some(request) = value(JsonField::Request).and_then(string_or_token) {
            let (method, target, junk_request) = super::request_or_junk(request);
            fields.method = method;
            fields.target = target;
            fields.junk_request = junk_request;
        } else {
            fields.method = value(JsonField::Method).and_then(string_or_token).unwrap_or(b"");
            fields.target = value(JsonField::Target).and_then(string_or_token).unwrap_or(b"");
            if fields.target.is_empty() {
                return Err(SkipReason::BadRequestLine);
            }
        }
        fields.transport = match value(JsonField::Scheme).and_then(string_or_token) {
            Some(b"http") => Transport::Plain,
            Some(b"https") => Transport::Tls,
            _ => Transport::Unknown,
        };
        if self.wanted.iter().any(|w| w.field == JsonField::Tls) && fields.transport == Transport::Unknown {
            fields.transport = match value(JsonField::Tls) {
                Some(b"null") | None => Transport::Plain,
                Some(_) => Transport::Tls,
            };
        }
        Ok((fields, time_kind))
    }

    /// Scans the object at `line[at] == '{'`; returns the index after its `}`.
    fn object<'a>(
        &self,
        line: &'a [u8],
        at: usize,
        depth: usize,
        stack: &mut [&'a [u8]; MAX_DEPTH],
        found: &mut Found<'a>,
    ) -> Result<usize, SkipReason> {
        let mut i = skip_blanks(line, at + 1);
        if line.get(i) == Some(&b'}') {
            return Ok(i + 1);
        }
        loop {
            if line.get(i) != Some(&b'"') {
                return Err(SkipReason::Malformed);
            }
            let key_end = find_closing_quote(line, i + 1).ok_or(SkipReason::Malformed)?;
            let key = &line[i + 1..key_end];
            i = skip_blanks(line, key_end + 1);
            if line.get(i) != Some(&b':') {
                return Err(SkipReason::Malformed);
            }
            i = skip_blanks(line, i + 1);
            stack[depth] = key;
            let path = &stack[..=depth];
            let mut leaf = None;
            let mut inner = false;
            for w in &self.wanted {
                if w.segments.len() > depth && w.segments.iter().zip(path.iter()).all(|(s, k)| **s == **k) {
                    if w.segments.len() == depth + 1 {
                        leaf = Some(w);
                    } else {
                        inner = true;
                    }
                }
            }
            let value_end = if inner && line.get(i) == Some(&b'{') && depth + 1 < MAX_DEPTH {
                self.object(line, i, depth + 1, stack, found)?
            } else {
                skip_value(line, i, 0)?
            };
            if let Some(w) = leaf {
                found.set(w.field, w.rank, &line[i..value_end]);
            }
            i = skip_blanks(line, value_end);
            match line.get(i) {
                Some(b',') => i = skip_blanks(line, i + 1),
                Some(b'}') => return Ok(i + 1),
                _ => return Err(SkipReason::Malformed),
            }
        }
    }
}

/// The values found, one per field (the lowest-ranked path wins).
#[derive(Default)]
struct Found<'a> {
    values: [Option<(u8, &'a [u8])>; JsonField::ALL.len()],
}

impl<'a> Found<'a> {
    fn set(&mut self, field: JsonField, rank: u8, value: &'a [u8]) {
        let slot = &mut self.values[field as usize];
        if slot.is_none_or(|(r, _)| rank < r) {
            *slot = Some((rank, value));
        }
    }

    fn get(&self, field: JsonField) -> Option<&'a [u8]> {
        self.values[field as usize].map(|(_, v)| v)
    }
}

fn skip_blanks(line: &[u8], mut i: usize) -> usize {
    while matches!(line.get(i), Some(b' ' | b'\t' | b'\r' | b'\n')) {
        i += 1;
    }
    i
}

/// Index after the JSON value starting at `line[i]`.
fn skip_value(line: &[u8], i: usize, depth: usize) -> Result<usize, SkipReason> {
    match line.get(i) {
        Some(b'"') => find_closing_quote(line, i + 1).map(|end| end + 1).ok_or(SkipReason::Malformed),
        Some(open @ (b'{' | b'[')) => {
            if depth > 64 {
                return Err(SkipReason::Malformed);
            }
            let close = if *open == b'{' { b'}' } else { b']' };
            let mut j = skip_blanks(line, i + 1);
            if line.get(j) == Some(&close) {
                return Ok(j + 1);
            }
            loop {
                if *open == b'{' {
                    j = skip_value(line, j, depth + 1)?;
                    j = skip_blanks(line, j);
                    if line.get(j) != Some(&b':') {
                        return Err(SkipReason::Malformed);
                    }
                    j = skip_blanks(line, j + 1);
                }
                j = skip_blanks(line, skip_value(line, j, depth + 1)?);
                match line.get(j) {
                    Some(b',') => j = skip_blanks(line, j + 1),
                    Some(c) if *c == close => return Ok(j + 1),
                    _ => return Err(SkipReason::Malformed),
                }
            }
        }
        Some(_) => {
            let len = line[i..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n'))
                .unwrap_or(line.len() - i);
            if len == 0 {
                return Err(SkipReason::Malformed);
            }
            Ok(i + len)
        }
        None => Err(SkipReason::Malformed),
    }
}

/// A string's contents, or a bare token (number, `true`); `None` for `null`, objects, arrays.
fn string_or_token(value: &[u8]) -> Option<&[u8]> {
    match value {
        [b'"', inner @ .., b'"'] => Some(inner),
        b"null" | [b'{' | b'[', ..] => None,
        token => Some(token),
    }
}

/// A string, or the first string of an array (Caddy logs headers as arrays).
fn first_string(value: &[u8]) -> Option<&[u8]> {
    if let [b'[', rest @ ..] = value {
        let start = skip_blanks(rest, 0);
        if rest.get(start) != Some(&b'"') {
            return None;
        }
        let end = find_closing_quote(rest, start + 1)?;
        return Some(&rest[start + 1..end]);
    }
    string_or_token(value)
}

/// Whether the line looks like a JSON object (for format detection).
pub fn looks_like_json(line: &[u8]) -> bool {
    let start = skip_blanks(line, 0);
    line.get(start) == Some(&b'{') && memchr(b'"', line).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::plan::parse_time;

    #[test]
    fn caddy_default_map() {
        let plan = JsonPlan::new(JsonProducer::Caddy, &[]).unwrap();
        let line = br#"{"level":"info","ts":1646861401.5241024,"logger":"http.log.access","msg":"handled request","request":{"remote_ip":"203.0.113.4","remote_port":"41342","client_ip":"203.0.113.4","proto":"HTTP/1.1","method":"GET","host":"files.example","uri":"/recordings/a.wav","headers":{"User-Agent":["curl/7.82.0"],"Accept":["*/*"]}},"bytes_read":0,"user_id":"","duration":0.000929675,"size":600,"status":200,"resp_headers":{"Server":["Caddy"]}}"#;
        let (f, kind) = plan.parse(line).unwrap();
        assert_eq!(f.client, b"203.0.113.4");
        assert_eq!(parse_time(kind, f.time), Some(1_646_861_401));
        assert_eq!(
            (f.method, f.target, f.status, f.body_bytes),
            (&b"GET"[..], &b"/recordings/a.wav"[..], 200, Some(600))
        );
        assert_eq!(f.user, None);
        assert_eq!(f.user_agent, Some(&b"curl/7.82.0"[..]));
        assert_eq!(f.transport, Transport::Plain);
        let tls = br#"{"ts":1646861401,"request":{"remote_ip":"203.0.113.4","method":"GET","uri":"/x","tls":{"resumed":false,"version":772}},"status":200}"#;
        assert_eq!(plan.parse(tls).unwrap().0.transport, Transport::Tls);
    }

    #[test]
    fn traefik_default_map() {
        let plan = JsonPlan::new(JsonProducer::Traefik, &[]).unwrap();
        let line = br#"{"ClientAddr":"198.51.100.7:52123","ClientHost":"198.51.100.7","ClientPort":"52123","ClientUsername":"-","DownstreamContentSize":600,"DownstreamStatus":200,"Duration":1234,"RequestMethod":"GET","RequestPath":"/recordings/b.wav","RequestProtocol":"HTTP/1.1","RequestScheme":"http","StartUTC":"2019-02-18T09:00:01.123456789Z","level":"info","msg":"","time":"2019-02-18T09:00:01Z","request_User-Agent":"Wget/1.21"}"#;
        let (f, kind) = plan.parse(line).unwrap();
        assert_eq!(f.client, b"198.51.100.7");
        assert_eq!(parse_time(kind, f.time), Some(1_550_480_401));
        assert_eq!((f.target, f.status, f.user), (&b"/recordings/b.wav"[..], 200, None));
        assert_eq!(f.user_agent, Some(&b"Wget/1.21"[..]));
        assert_eq!(f.transport, Transport::Plain);
    }

    #[test]
    fn overrides_replace_a_fields_paths_and_errors_name_the_problem() {
        let overrides = [("client".to_string(), "peer.ip".to_string()), ("time".to_string(), "when".to_string())];
        let plan = JsonPlan::new(JsonProducer::Nginx, &overrides).unwrap();
        let line = br#"{"peer":{"ip":"192.0.2.9"},"remote_addr":"10.0.0.1","when":"18/Feb/2019:10:00:01 +0100","request":"GET /recordings/c.wav HTTP/1.1","status":"206"}"#;
        let (f, kind) = plan.parse(line).unwrap();
        assert_eq!((f.client, f.status), (&b"192.0.2.9"[..], 206));
        assert_eq!(parse_time(kind, f.time), Some(1_550_480_401));
        assert_eq!(f.target, b"/recordings/c.wav");
        assert!(matches!(JsonPlan::new(JsonProducer::Custom, &[]), Err(JsonMapError::Missing("client"))));
        let bad = [("clinet".to_string(), "a".to_string())];
        assert!(matches!(JsonPlan::new(JsonProducer::Nginx, &bad), Err(JsonMapError::UnknownField(_))));
        let bad = [("client".to_string(), "a..b".to_string())];
        assert!(matches!(JsonPlan::new(JsonProducer::Nginx, &bad), Err(JsonMapError::BadPath(_))));
    }

    #[test]
    fn a_quote_inside_a_value_cannot_fake_a_key() {
        let plan = JsonPlan::new(JsonProducer::Nginx, &[]).unwrap();
        let line = br#"{"time_iso8601":"2019-02-18T10:00:01+01:00","http_user_agent":"x\",\"status\":\"404","remote_addr":"192.0.2.1","request":"GET /recordings/d.wav HTTP/1.1","status":200}"#;
        let (f, _) = plan.parse(line).unwrap();
        assert_eq!(f.status, 200);
    }

    #[test]
    fn broken_json_is_skipped_never_a_panic() {
        let plan = JsonPlan::new(JsonProducer::Caddy, &[]).unwrap();
        let line: &[u8] = br#"{"ts":1646861401,"request":{"remote_ip":"203.0.113.4","method":"GET","uri":"/x","headers":{"A":["b"]}},"status":200}"#;
        assert!(plan.parse(line).is_ok());
        for end in 0..line.len() {
            assert!(plan.parse(&line[..end]).is_err());
            for byte in [b'"', b'\\', b'{', b'}', b'[', b']', b':', b',', 0] {
                let mut mutated = line.to_vec();
                mutated[end] = byte;
                let _ = plan.parse(&mutated);
            }
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let _ = plan.parse(format!("{{\"a\":{deep}}}").as_bytes());
    }
}
