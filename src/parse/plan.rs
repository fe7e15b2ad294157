//! Compiles an operator's own nginx `log_format` or Apache `LogFormat` string, once, into a
//! field plan, and parses lines by following it: literals are matched, each field ends where
//! the next literal starts (quoted fields escape-aware, timestamps by their fixed shape).
//! Owns the variable/directive tables of both servers, the plan and what each field means
//! (client, user, time, request, status, bytes, referer, user agent, X-Forwarded-For,
//! transport). Never uses a regex, allocates, locks or syscalls per line, and never decides
//! what is sensitive or which forwarded hop is the client.

use memchr::{memchr, memmem};

use super::{dash_is_none, find_closing_quote, LogFormat, SkipReason};

/// What a plan read after the request: found in the same pass as the head, so kept whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedTail<'a> {
    /// Body bytes (`$body_bytes_sent`, `%b`, `%B`), else bytes sent with headers, else 0.
    pub body_bytes: u64,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    pub forwarded_for: Option<&'a [u8]>,
    pub transport: Transport,
    pub time_kind: TimeKind,
}

/// Which server's format language a plan was written in; fixes variable syntax and escaping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// nginx `log_format`: `$name` / `${name}`; `escape=default|json|none`.
    Nginx(NginxEscape),
    /// Apache `LogFormat`: `%h`, `%>s`, `%{Name}i`, …
    Apache,
}

/// nginx's `log_format … escape=` parameter: how the server escaped variable values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NginxEscape {
    /// `"`, `\` and bytes outside 0x20..0x7e as `\xHH` (the default).
    Default,
    /// JSON string escaping: `\"`, `\\`, `\n`, `\u00XX` (for JSON templates).
    Json,
    /// Nothing escaped: a `"` in a header can end a quoted field early (the plan cannot tell).
    None,
}

/// How a line says the response travelled; `Plain` makes a sensitive fetch a plaintext
/// exposure (R4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Transport {
    /// The format carries no scheme, TLS or port field (or its value says neither).
    #[default]
    Unknown,
    /// Plain HTTP (or FTP): `$scheme` http, `$https` empty, port 80, no TLS protocol.
    Plain,
    /// TLS: `$scheme` https, `$https` on, port 443, a TLS protocol named.
    Tls,
}

/// How a plan's timestamp is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeKind {
    /// `18/Feb/2019:10:00:01 +0100` (nginx `$time_local`, Apache `%t` without its brackets).
    Clf,
    /// `2019-02-18T10:00:01+01:00` (nginx `$time_iso8601`).
    Iso8601,
    /// Seconds since the epoch, maybe with a fraction: `1550480401.123` (nginx `$msec`,
    /// Apache `%{sec}t`).
    EpochSeconds,
    /// Milliseconds since the epoch (Apache `%{msec}t`).
    EpochMillis,
    /// Microseconds since the epoch (Apache `%{usec}t`).
    EpochMicros,
    /// A JSON number since the epoch, its unit told by its size: up to 10 integer digits
    /// seconds, 13 milliseconds, 16 microseconds, more nanoseconds.
    Epoch,
    /// `Sun Nov 29 21:26:01 2026` (FTP xferlog): local time without a zone.
    Ctime,
}

/// What one field of a plan is; `Opaque` fields are matched and skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    /// `$remote_addr`, `%h`, `%a`: the client as the server saw it (after realip/remoteip).
    Client,
    /// `$remote_user`, `%u`.
    User,
    /// A timestamp written as the kind says.
    Time(TimeKind),
    /// Apache `%t`: `[18/Feb/2019:10:00:01 +0100]`, brackets included.
    BracketedClf,
    /// `$request`, `%r`: method, target and protocol.
    Request,
    /// `$request_method`, `%m`.
    Method,
    /// `$request_uri`: the target as sent, with its query.
    RequestUri,
    /// `$uri`, `%U`: the path the server resolved (without query).
    UriPath,
    /// `$status`, `%>s`, `%s`.
    Status,
    /// `$body_bytes_sent`, `%b`, `%B`: response body bytes (`-` is 0).
    BodyBytes,
    /// `$bytes_sent`, `%O`: bytes sent with headers; used only when no body field is logged.
    BytesSent,
    /// `$http_referer`, `%{Referer}i`.
    Referer,
    /// `$http_user_agent`, `%{User-Agent}i`.
    UserAgent,
    /// `$http_x_forwarded_for`, `%{X-Forwarded-For}i`.
    ForwardedFor,
    /// `$scheme`: `http` or `https`.
    Scheme,
    /// `$https`: `on` or empty; Apache `%{HTTPS}e`: `on` or `-`.
    Https,
    /// `$server_port`, `%p`: 80 plain, 443 TLS, others unknown.
    ServerPort,
    /// `$ssl_protocol`, `%{SSL_PROTOCOL}x`: empty or `-` when plain.
    SslProtocol,
    /// Matched and skipped: known but not used (request time, upstream, host, …) or unknown.
    Opaque,
}

impl Field {
    /// Bytes of a field whose width is fixed; such a field needs no delimiter search.
    fn fixed_width(self) -> Option<usize> {
        match self {
            Field::Time(TimeKind::Clf) => Some(super::time::CLF_TIME_LEN),
            Field::Time(TimeKind::Iso8601) => Some(ISO8601_LEN),
            Field::BracketedClf => Some(super::time::CLF_TIME_LEN + 2),
            _ => None,
        }
    }
}

/// `2019-02-18T10:00:01+01:00`.
const ISO8601_LEN: usize = 25;

/// The S3 server access log's fields in nginx variable syntax (see [`FieldPlan::s3`]).
const S3_ACCESS_LOG: &str = r#"$s3_bucket_owner $s3_bucket [$time_local] $remote_addr $remote_user $request_id $s3_operation $s3_key "$request" $status $s3_error_code $body_bytes_sent $s3_object_size $request_time $s3_turn_around "$http_referer" "$http_user_agent" $s3_version_id $s3_host_id $s3_signature_version $s3_cipher_suite $s3_authentication_type $host $ssl_protocol $s3_later_fields"#;

/// One step of a plan.
#[derive(Clone, Debug)]
enum Step {
    /// Bytes written verbatim by the format string (the finder's needle); the finder
    /// locates them after a field.
    Literal(Box<memmem::Finder<'static>>),
    /// A variable's value. `quoted`: the format wraps it in `"…"`, so its end is the first
    /// unescaped quote, whatever the value holds.
    Field { field: Field, quoted: bool },
}

impl PartialEq for FieldPlan {
    fn eq(&self, other: &FieldPlan) -> bool {
        self.dialect == other.dialect && self.text == other.text
    }
}

/// Why a format string does not compile (a config error at the source's key).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the format is empty")]
    Empty,
    #[error("{0} at byte {1} is not closed")]
    Unclosed(&'static str, usize),
    #[error("{first} and {second} touch: recwatch needs text between two fields to tell where one ends")]
    AdjacentFields { first: String, second: String },
    #[error("the format logs no {0}; recwatch needs it to judge a fetch")]
    Missing(&'static str),
    #[error("{0} appears twice")]
    Twice(String),
    #[error("unknown escape={0:?} (expected default, json or none)")]
    UnknownEscape(String),
}

/// A compiled `log_format`/`LogFormat`: built once per source, followed for every line.
#[derive(Clone, Debug)]
pub struct FieldPlan {
    /// The format string as configured (what `check` shows, what equality compares).
    text: String,
    dialect: Dialect,
    steps: Vec<Step>,
    /// Variables/directives the plan does not know (kept opaque): `recwatch check` warns.
    unknown: Vec<String>,
    /// Which time kind the plan's timestamp has.
    time_kind: TimeKind,
}

/// One line as the plan read it; every field borrows from the line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlannedFields<'a> {
    pub client: &'a [u8],
    /// `None` for `-` or empty. Still log-escaped.
    pub user: Option<&'a [u8]>,
    /// Timestamp text, to be read as the plan's [`FieldPlan::time_kind`].
    pub time: &'a [u8],
    pub request: Option<&'a [u8]>,
    pub method: &'a [u8],
    /// `$request_uri` or `$uri`/`%U` (a `$request` wins when the format has both).
    pub target: &'a [u8],
    pub status: u16,
    pub body_bytes: Option<u64>,
    pub bytes_sent: Option<u64>,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    pub forwarded_for: Option<&'a [u8]>,
    pub transport: Transport,
    /// The request line is no HTTP request (kept for probing, like the named formats do).
    pub junk_request: bool,
}

impl FieldPlan {
    /// Compiles an nginx `log_format` string. It may start with the directive's own
    /// `escape=json|default|none` parameter (as copied from nginx.conf); variables are
    /// `$name` or `${name}`.
    pub fn nginx(format: &str) -> Result<FieldPlan, PlanError> {
        let mut text = format.trim_start();
        let mut escape = NginxEscape::Default;
        if let Some(rest) = text.strip_prefix("escape=") {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            escape = match &rest[..end] {
                "default" => NginxEscape::Default,
                "json" => NginxEscape::Json,
                "none" => NginxEscape::None,
                other => return Err(PlanError::UnknownEscape(other.to_string())),
            };
            text = rest[end..].trim();
            // The string as written in nginx.conf, quotes included.
            if let Some(inner) = text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
                text = inner;
            }
        }
        let bytes = text.as_bytes();
        let mut parts = Vec::new();
        let mut literal = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'$' {
                literal.push(bytes[i]);
                i += 1;
                continue;
            }
            let (name, next) = if bytes.get(i + 1) == Some(&b'{') {
                let close = text[i + 2..].find('}').ok_or(PlanError::Unclosed("${", i))?;
                (&text[i + 2..i + 2 + close], i + 3 + close)
            } else {
                let len = bytes[i + 1..].iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count();
                (&text[i + 1..i + 1 + len], i + 1 + len)
            };
            if name.is_empty() {
                literal.push(b'$');
                i += 1;
                continue;
            }
            parts.push(Part::Literal(std::mem::take(&mut literal)));
            let (field, known) = nginx_variable(name);
            parts.push(Part::Field(field, format!("${name}"), known));
            i = next;
        }
        parts.push(Part::Literal(literal));
        FieldPlan::from_parts(format, Dialect::Nginx(escape), parts)
    }

    /// Compiles an Apache `LogFormat` string, as written inside the directive's quotes
    /// (`\"` and `\\` are read as `"` and `\`, `\n`/`\t` as newline/tab).
    pub fn apache(format: &str) -> Result<FieldPlan, PlanError> {
        let bytes = format.as_bytes();
        let mut parts = Vec::new();
        let mut literal = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if i + 1 < bytes.len() => {
                    literal.push(match bytes[i + 1] {
                        b'n' => b'\n',
                        b't' => b'\t',
                        other => other,
                    });
                    i += 2;
                }
                b'%' if bytes.get(i + 1) == Some(&b'%') => {
                    literal.push(b'%');
                    i += 2;
                }
                b'%' => {
                    let start = i;
                    i += 1;
                    // Modifiers: `<`/`>` (original/final request) and a status condition
                    // (`400,501` or `!200`): they decide whether the value is logged, never
                    // where it sits.
                    let mut final_status = false;
                    while let Some(&m) = bytes.get(i) {
                        if m == b'>' {
                            final_status = true;
                        } else if !(m == b'<' || m == b'!' || m == b',' || m.is_ascii_digit()) {
                            break;
                        }
                        i += 1;
                    }
                    let mut argument = None;
                    if bytes.get(i) == Some(&b'{') {
                        let close = format[i + 1..].find('}').ok_or(PlanError::Unclosed("%{", start))?;
                        argument = Some(&format[i + 1..i + 1 + close]);
                        i += close + 2;
                    }
                    let Some(&letter) = bytes.get(i) else {
                        return Err(PlanError::Unclosed("%", start));
                    };
                    // A `%` followed by a multi-byte character: keep it as text.
                    if !letter.is_ascii() {
                        literal.extend_from_slice(&bytes[start..i]);
                        continue;
                    }
                    i += 1;
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                    let (field, known) = apache_directive(letter, argument, final_status);
                    parts.push(Part::Field(field, format[start..i].to_string(), known));
                }
                byte => {
                    literal.push(byte);
                    i += 1;
                }
            }
        }
        parts.push(Part::Literal(literal));
        FieldPlan::from_parts(format, Dialect::Apache, parts)
    }

    fn from_parts(text: &str, dialect: Dialect, parts: Vec<Part>) -> Result<FieldPlan, PlanError> {
        let mut steps = Vec::new();
        let mut unknown = Vec::new();
        let mut seen: Vec<Field> = Vec::new();
        let mut previous_field: Option<(Field, String)> = None;
        let mut iter = parts.into_iter().peekable();
        while let Some(part) = iter.next() {
            match part {
                Part::Literal(bytes) if bytes.is_empty() => {}
                Part::Literal(bytes) => {
                    previous_field = None;
                    steps.push(Step::Literal(Box::new(memmem::Finder::new(&bytes).into_owned())));
                }
                Part::Field(field, name, known) => {
                    if !known {
                        unknown.push(name.clone());
                    }
                    if let Some((first, first_name)) = &previous_field {
                        if first.fixed_width().is_none() {
                            return Err(PlanError::AdjacentFields { first: first_name.clone(), second: name });
                        }
                    }
                    if field != Field::Opaque {
                        // `%s` and `%>s` in one format: the final status (`%>s`) counts.
                        if seen.contains(&field) && field != Field::Status {
                            return Err(PlanError::Twice(name));
                        }
                        seen.push(field);
                    }
                    let quoted = matches!(steps.last(), Some(Step::Literal(finder)) if finder.needle().ends_with(b"\""))
                        && matches!(iter.peek(), Some(Part::Literal(next)) if next.starts_with(b"\""));
                    steps.push(Step::Field { field, quoted });
                    previous_field = Some((field, name));
                }
            }
        }
        if steps.is_empty() {
            return Err(PlanError::Empty);
        }
        let has = |f: Field| seen.contains(&f);
        if !has(Field::Client) {
            return Err(PlanError::Missing("client address ($remote_addr, %h or %a)"));
        }
        if !has(Field::Status) {
            return Err(PlanError::Missing("status ($status, %>s)"));
        }
        if !(has(Field::Request) || has(Field::RequestUri) || has(Field::UriPath)) {
            return Err(PlanError::Missing("request path ($request, $request_uri, $uri, %r or %U)"));
        }
        let time_kind = seen
            .iter()
            .find_map(|f| match f {
                Field::Time(kind) => Some(*kind),
                Field::BracketedClf => Some(TimeKind::Clf),
                _ => None,
            })
            .ok_or(PlanError::Missing("time ($time_local, $time_iso8601, $msec, %t)"))?;
        Ok(FieldPlan { text: text.to_string(), dialect, steps, unknown, time_kind })
    }

    /// `nginx_log_format '…'` or `apache_log_format '…'`, as configured.
    pub fn describe(&self) -> String {
        if self.is_s3() {
            return "s3".to_string();
        }
        match self.dialect {
            Dialect::Nginx(_) => format!("nginx_log_format {:?}", self.text),
            Dialect::Apache => format!("apache_log_format {:?}", self.text),
        }
    }

    /// The S3 server access log (also MinIO and Ceph RGW), as a plan: bucket owner, bucket,
    /// `[time]`, remote IP, requester (`-` = anonymous: no user, R3), request id, operation,
    /// key, `"request-uri"`, status, error code, bytes sent, object size, total time,
    /// turn-around time, referer, user agent, version id, host id, signature version, cipher
    /// suite, authentication type, host header, TLS version (`-` = plain HTTP, R4), then the
    /// fields AWS added later (access point ARN, ACL required, …), read and skipped.
    pub fn s3() -> FieldPlan {
        let mut plan = FieldPlan::nginx(S3_ACCESS_LOG).unwrap_or_else(|_| unreachable!("the S3 plan compiles"));
        plan.unknown.clear();
        plan
    }

    /// Whether this is [`FieldPlan::s3`].
    pub fn is_s3(&self) -> bool {
        self.text == S3_ACCESS_LOG
    }

    /// The dialect the plan was written in.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// How the plan's timestamps are written.
    pub fn time_kind(&self) -> TimeKind {
        self.time_kind
    }

    /// Variables or directives the plan does not know; their fields are skipped.
    pub fn unknown_fields(&self) -> &[String] {
        &self.unknown
    }

    /// Reads one line (no line ending) by the plan. Literals must match where the plan puts
    /// them; a quoted field ends at its first unescaped `"`, so a header's bytes cannot move
    /// the fields after it.
    pub fn parse<'a>(&self, line: &'a [u8]) -> Result<PlannedFields<'a>, SkipReason> {
        let mut out = PlannedFields::default();
        let mut cursor = 0;
        let mut saw_status = false;
        for (index, step) in self.steps.iter().enumerate() {
            match step {
                Step::Literal(finder) => {
                    let bytes = finder.needle();
                    if !line[cursor..].starts_with(bytes) {
                        return Err(SkipReason::Malformed);
                    }
                    cursor += bytes.len();
                }
                Step::Field { field, quoted } => {
                    let end = self.field_end(line, cursor, index, *field, *quoted)?;
                    let value = &line[cursor..end];
                    cursor = end;
                    self.store(&mut out, *field, value, &mut saw_status)?;
                }
            }
        }
        if cursor != line.len() {
            return Err(SkipReason::Malformed);
        }
        if let Some(request) = out.request {
            let (method, target, junk_request) = super::request_or_junk(request);
            out.method = method;
            out.target = target;
            out.junk_request = junk_request;
        }
        Ok(out)
    }

    /// Where the field starting at `start` ends (exclusive).
    fn field_end(
        &self,
        line: &[u8],
        start: usize,
        index: usize,
        field: Field,
        quoted: bool,
    ) -> Result<usize, SkipReason> {
        if let Some(width) = field.fixed_width() {
            let end = start + width;
            return if end <= line.len() { Ok(end) } else { Err(SkipReason::BadTimestamp) };
        }
        if quoted {
            return find_closing_quote(line, start).ok_or(SkipReason::Malformed);
        }
        match self.steps.get(index + 1) {
            None => Ok(line.len()),
            Some(Step::Literal(finder)) => {
                finder.find(&line[start..]).map(|offset| start + offset).ok_or(SkipReason::Malformed)
            }
            // Only after a fixed-width field (checked when compiling).
            Some(Step::Field { .. }) => Err(SkipReason::Malformed),
        }
    }

    fn store<'a>(
        &self,
        out: &mut PlannedFields<'a>,
        field: Field,
        value: &'a [u8],
        saw_status: &mut bool,
    ) -> Result<(), SkipReason> {
        match field {
            Field::Client => {
                if value.is_empty() || value == b"-" {
                    return Err(SkipReason::BadClient);
                }
                out.client = value;
            }
            Field::User => out.user = dash_is_none(value),
            Field::Time(TimeKind::Clf) => {
                if !super::is_timestamp_shaped(value) {
                    return Err(SkipReason::BadTimestamp);
                }
                out.time = value;
            }
            Field::BracketedClf => match value {
                [b'[', inner @ .., b']'] if super::is_timestamp_shaped(inner) => out.time = inner,
                _ => return Err(SkipReason::BadTimestamp),
            },
            Field::Time(_) => out.time = value,
            Field::Request => out.request = Some(value),
            Field::Method => out.method = dash_is_none(value).unwrap_or(b""),
            Field::RequestUri => out.target = dash_is_none(value).unwrap_or(b""),
            Field::UriPath => {
                if out.target.is_empty() {
                    out.target = dash_is_none(value).unwrap_or(b"");
                }
            }
            Field::Status => {
                // `%s` then `%>s`: the last one (the final status) wins; `-` after a status
                // keeps the first.
                match parse_status_digits(value) {
                    Some(status) => {
                        out.status = status;
                        *saw_status = true;
                    }
                    None if *saw_status => {}
                    None => return Err(SkipReason::BadStatus),
                }
            }
            Field::BodyBytes => out.body_bytes = Some(parse_count(value)),
            Field::BytesSent => out.bytes_sent = Some(parse_count(value)),
            Field::Referer => out.referer = dash_is_none(value),
            Field::UserAgent => out.user_agent = dash_is_none(value),
            Field::ForwardedFor => out.forwarded_for = dash_is_none(value),
            Field::Scheme => {
                out.transport = match value {
                    b"http" => Transport::Plain,
                    b"https" => Transport::Tls,
                    _ => out.transport,
                }
            }
            Field::Https if out.transport == Transport::Unknown => {
                out.transport = if value.eq_ignore_ascii_case(b"on") { Transport::Tls } else { Transport::Plain }
            }
            Field::SslProtocol if out.transport == Transport::Unknown => {
                out.transport = if dash_is_none(value).is_some() { Transport::Tls } else { Transport::Plain }
            }
            Field::ServerPort if out.transport == Transport::Unknown => {
                out.transport = match value {
                    b"80" => Transport::Plain,
                    b"443" => Transport::Tls,
                    _ => Transport::Unknown,
                }
            }
            Field::Https | Field::SslProtocol | Field::ServerPort | Field::Opaque => {}
        }
        Ok(())
    }
}

/// What the compiler collects before it builds steps.
enum Part {
    Literal(Vec<u8>),
    /// The field, its name as written, and whether recwatch knows it.
    Field(Field, String, bool),
}

/// An nginx variable's field and whether it is one recwatch knows (unknown ones warn).
fn nginx_variable(name: &str) -> (Field, bool) {
    let field = match name {
        "remote_addr" => Field::Client,
        "remote_user" => Field::User,
        "time_local" => Field::Time(TimeKind::Clf),
        "time_iso8601" => Field::Time(TimeKind::Iso8601),
        "msec" => Field::Time(TimeKind::EpochSeconds),
        "request" => Field::Request,
        "request_method" => Field::Method,
        "request_uri" => Field::RequestUri,
        "uri" | "document_uri" => Field::UriPath,
        "status" => Field::Status,
        "body_bytes_sent" => Field::BodyBytes,
        "bytes_sent" => Field::BytesSent,
        "http_referer" => Field::Referer,
        "http_user_agent" => Field::UserAgent,
        "http_x_forwarded_for" => Field::ForwardedFor,
        "scheme" => Field::Scheme,
        "https" => Field::Https,
        "server_port" => Field::ServerPort,
        "ssl_protocol" => Field::SslProtocol,
        _ => {
            const KNOWN: &[&str] = &[
                "realip_remote_addr",
                "realip_remote_port",
                "remote_port",
                "binary_remote_addr",
                "args",
                "query_string",
                "is_args",
                "server_protocol",
                "host",
                "hostname",
                "server_name",
                "server_addr",
                "request_time",
                "request_length",
                "request_id",
                "request_filename",
                "connection",
                "connection_requests",
                "connection_time",
                "pipe",
                "pid",
                "gzip_ratio",
                "content_length",
                "content_type",
                "document_root",
                "realpath_root",
                "limit_rate",
                "proxy_protocol_addr",
                "proxy_protocol_port",
                "proxy_add_x_forwarded_for",
                "time_local_ms",
                "nginx_version",
                "ssl_cipher",
                "ssl_server_name",
                "ssl_session_reused",
                "ssl_client_verify",
                "ssl_client_s_dn",
            ];
            const KNOWN_PREFIXES: &[&str] =
                &["http_", "sent_http_", "sent_trailer_", "upstream_", "cookie_", "arg_", "ssl_", "geoip_"];
            let known = KNOWN.contains(&name) || KNOWN_PREFIXES.iter().any(|p| name.starts_with(p));
            return (Field::Opaque, known);
        }
    };
    (field, true)
}

/// An Apache directive's field and whether recwatch knows it. `argument` is the `{…}` part,
/// `final_status` whether `>` was given (`%>s`).
fn apache_directive(letter: u8, argument: Option<&str>, final_status: bool) -> (Field, bool) {
    let _ = final_status;
    let field = match (letter, argument) {
        (b'h' | b'a', None) => Field::Client,
        // `%{c}a`: the peer of the connection, before mod_remoteip.
        (b'a', Some(_)) => Field::Opaque,
        (b'u', _) => Field::User,
        (b't', None) => Field::BracketedClf,
        (b't', Some(spec)) => {
            let spec = spec.strip_prefix("begin:").or_else(|| spec.strip_prefix("end:")).unwrap_or(spec);
            match spec {
                "sec" => Field::Time(TimeKind::EpochSeconds),
                "msec" => Field::Time(TimeKind::EpochMillis),
                "usec" => Field::Time(TimeKind::EpochMicros),
                "%d/%b/%Y:%H:%M:%S %z" => Field::Time(TimeKind::Clf),
                "%Y-%m-%dT%H:%M:%S%z" => Field::Time(TimeKind::Iso8601),
                "msec_frac" | "usec_frac" => Field::Opaque,
                // Other strftime layouts are not read: the time would be a guess.
                _ => return (Field::Opaque, false),
            }
        }
        (b'r', _) => Field::Request,
        (b'm', _) => Field::Method,
        (b'U', _) => Field::UriPath,
        (b's', _) => Field::Status,
        (b'b' | b'B', _) => Field::BodyBytes,
        (b'O', _) => Field::BytesSent,
        (b'p', None) => Field::ServerPort,
        (b'p', Some(kind)) if kind == "canonical" || kind == "local" => Field::ServerPort,
        (b'i', Some(header)) if header.eq_ignore_ascii_case("referer") => Field::Referer,
        (b'i', Some(header)) if header.eq_ignore_ascii_case("user-agent") => Field::UserAgent,
        (b'i', Some(header)) if header.eq_ignore_ascii_case("x-forwarded-for") => Field::ForwardedFor,
        (b'e', Some("HTTPS")) => Field::Https,
        (b'x', Some("SSL_PROTOCOL")) => Field::SslProtocol,
        (b'l' | b'q' | b'H' | b'I' | b'S' | b'D' | b'T' | b'v' | b'V' | b'k' | b'L' | b'A' | b'P' | b'f' | b'R', _)
        | (b'X' | b'p', _)
        | (b'i' | b'o' | b'e' | b'n' | b'x' | b'C' | b'^', Some(_)) => Field::Opaque,
        _ => return (Field::Opaque, false),
    };
    (field, true)
}

/// Three digits 100..=599.
pub(super) fn parse_status_digits(value: &[u8]) -> Option<u16> {
    let [a, b, c] = *value else { return None };
    if !(a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit()) {
        return None;
    }
    let status = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
    (100..=599).contains(&status).then_some(status)
}

/// A byte count; `-` and anything unparsable are 0, huge values saturate.
pub(super) fn parse_count(value: &[u8]) -> u64 {
    let mut count: u64 = 0;
    for &digit in value {
        if !digit.is_ascii_digit() {
            return 0;
        }
        count = count.saturating_mul(10).saturating_add(u64::from(digit - b'0'));
    }
    count
}

/// Reads a plan's timestamp text as Unix seconds (UTC); `None` when it is no such time.
pub fn parse_time(kind: TimeKind, text: &[u8]) -> Option<i64> {
    match kind {
        TimeKind::Clf => super::time::parse_clf_time(text),
        TimeKind::Iso8601 => parse_iso8601(text),
        TimeKind::EpochSeconds => parse_epoch(text, 1),
        TimeKind::EpochMillis => parse_epoch(text, 1_000),
        TimeKind::EpochMicros => parse_epoch(text, 1_000_000),
        TimeKind::Ctime => super::time::parse_ctime(text),
        TimeKind::Epoch => {
            let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
            let per_second = match digits {
                0..=11 => 1,
                12..=14 => 1_000,
                15..=17 => 1_000_000,
                _ => 1_000_000_000,
            };
            parse_epoch(text, per_second)
        }
    }
}

/// `2019-02-18T10:00:01+01:00` (or `Z`), the seconds maybe with a fraction
/// (`…:01.123456789Z`, Traefik), which is dropped.
fn parse_iso8601(text: &[u8]) -> Option<i64> {
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = text.get(range)?;
        part.iter().try_fold(0u32, |n, &d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')))
    };
    if text.get(4) != Some(&b'-') || text.get(7) != Some(&b'-') || text.get(10) != Some(&b'T') {
        return None;
    }
    if text.get(13) != Some(&b':') || text.get(16) != Some(&b':') {
        return None;
    }
    let (year, month, day) = (i64::from(digits(0..4)?), digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let zone = &text[19..];
    let zone = match zone.strip_prefix(b".") {
        Some(fraction) => &fraction[fraction.iter().take_while(|b| b.is_ascii_digit()).count()..],
        None => zone,
    };
    let offset = match zone {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |a: u8, b: u8| {
                (a.is_ascii_digit() && b.is_ascii_digit()).then(|| i64::from((a - b'0') * 10 + (b - b'0')))
            };
            let seconds = two(*h1, *h2)? * 3_600 + two(*m1, *m2)? * 60;
            if *sign == b'-' {
                -seconds
            } else {
                seconds
            }
        }
        _ => return None,
    };
    if !(1..=12).contains(&month) || day == 0 || day > super::time::days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let local = super::time::days_from_civil(year, month, day) * 86_400
        + i64::from(hour) * 3_600
        + i64::from(minute) * 60
        + i64::from(second);
    Some(local - offset)
}

/// Whole units since the epoch, an optional `.fraction` dropped: seconds = value / `per_second`.
fn parse_epoch(text: &[u8], per_second: i64) -> Option<i64> {
    let whole = match memchr(b'.', text) {
        Some(dot) if text[dot + 1..].iter().all(u8::is_ascii_digit) => &text[..dot],
        Some(_) => return None,
        None => text,
    };
    if whole.is_empty() || whole.len() > 18 || !whole.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = whole.iter().fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'));
    Some(value / per_second)
}

/// nginx `log_format` strings that are a named format, word for word.
const NGINX_NAMED: [(&str, LogFormat); 3] = [
    (
        r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent""#,
        LogFormat::Combined,
    ),
    (
        r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for""#,
        LogFormat::Main,
    ),
    (r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent"#, LogFormat::Common),
];

/// Apache `LogFormat` strings that are a named format, word for word (with `%b`; `%B` and
/// `%O` read the same number there: see [`Field::BytesSent`]).
const APACHE_NAMED: [(&str, LogFormat); 4] = [
    (r#"%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i""#, LogFormat::Combined),
    (r#"%h %l %u %t "%r" %>s %b"#, LogFormat::Common),
    (r#"%v:%p %h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i""#, LogFormat::VhostCombined),
    (r#"%v:%p %h %l %u %t "%r" %>s %b"#, LogFormat::VhostCommon),
];

/// The named format an nginx `log_format` string is, if it is one word for word (runs of
/// blanks read as one; no `escape=` other than `default`): its lines are then read by that
/// format's own tokenizer, with the fast path for lines no rule can match, instead of by a
/// plan that would read the same fields (a test holds the two equal).
pub fn nginx_named_equivalent(format: &str) -> Option<LogFormat> {
    let text = format.trim_start();
    let text = text.strip_prefix("escape=default").map_or(text, |rest| rest.trim().trim_matches('\''));
    let words = blanks_as_one(text);
    NGINX_NAMED.iter().find(|(named, _)| *named == words).map(|(_, f)| *f)
}

/// [`nginx_named_equivalent`] for an Apache `LogFormat` string (`\"` read as `"`).
pub fn apache_named_equivalent(format: &str) -> Option<LogFormat> {
    let words = blanks_as_one(&format.replace("\\\"", "\"")).replace(" %O", " %b").replace(" %B", " %b");
    APACHE_NAMED.iter().find(|(named, _)| *named == words).map(|(_, f)| *f)
}

fn blanks_as_one(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::AccessLine;

    /// Lines of every shape the named tokenizers read: escapes, `-` fields, IPv6, a host-name
    /// client, an odd request line, a long user agent, a user, a list in X-Forwarded-For.
    const SHAPES: [&str; 9] = [
        r#"203.0.113.9 - - [18/Feb/2019:10:00:01 +0100] "GET /recordings/a.wav HTTP/1.1" 200 5120 "-" "curl/8.0""#,
        r#"2001:db8::7 - alice [18/Feb/2019:10:00:02 +0000] "GET /recordings/b.wav?x=1 HTTP/2.0" 206 - "https://r.example/" "Mozilla/5.0 (X11; Linux x86_64)""#,
        r#"198.51.100.3 - - [18/Feb/2019:10:00:03 -0500] "HEAD /recordings/%2e%2e/c.wav HTTP/1.0" 404 0 "-" "agent \x22quoted\x22 \xFF""#,
        r#"client.example - - [18/Feb/2019:10:00:04 +0100] "GET / HTTP/1.1" 301 178 "-" "-""#,
        r#"203.0.113.10 - - [18/Feb/2019:10:00:05 +0100] "\x16\x03\x01\x00" 400 157 "-" "-""#,
        r#"203.0.113.11 - - [18/Feb/2019:10:00:06 +0100] "-" 408 0 "-" "-""#,
        r#"203.0.113.12 - bob [18/Feb/2019:10:00:07 +0100] "POST /api/upload HTTP/1.1" 201 12 "-" "python-requests/2.31.0""#,
        r#"203.0.113.13 - - [18/Feb/2019:10:00:08 +0100] "GET /recordings/d.wav HTTP/1.1" 200 999999999999 "-" "Wget/1.21""#,
        r#"203.0.113.14 - - [18/Feb/2019:10:00:09 +0100] "GET http://h.example/recordings/e.wav HTTP/1.1" 200 10 "-" "x""#,
    ];

    /// What the pipeline reads of a line (the virtual host it never reads).
    fn fields(a: &AccessLine<'_>) -> String {
        format!(
            "{:?} {:?} {:?} {:?} {} {} {:?} {:?} {:?} {:?}",
            a.client,
            a.user,
            a.time,
            a.method,
            String::from_utf8_lossy(a.target),
            a.status,
            a.body_bytes(),
            a.user_agent(),
            a.junk_request,
            a.forwarded_for(),
        )
    }

    #[test]
    fn a_log_format_string_of_a_named_format_reads_what_its_plan_reads() {
        let vhost = |line: &str| format!("files.example:443 {line}");
        let xff = |line: &str| format!("{line} \"198.51.100.7, 10.0.0.1\"");
        let common = |line: &str| line.rsplitn(3, " \"").last().unwrap().to_string();
        let cases: Vec<(FieldPlan, LogFormat, Vec<String>)> = vec![
            (FieldPlan::nginx(NGINX_NAMED[0].0).unwrap(), LogFormat::Combined, SHAPES.map(String::from).to_vec()),
            (FieldPlan::nginx(NGINX_NAMED[1].0).unwrap(), LogFormat::Main, SHAPES.map(xff).to_vec()),
            (FieldPlan::nginx(NGINX_NAMED[2].0).unwrap(), LogFormat::Common, SHAPES.map(common).to_vec()),
            (FieldPlan::apache(APACHE_NAMED[0].0).unwrap(), LogFormat::Combined, SHAPES.map(String::from).to_vec()),
            (FieldPlan::apache(APACHE_NAMED[1].0).unwrap(), LogFormat::Common, SHAPES.map(common).to_vec()),
            (FieldPlan::apache(APACHE_NAMED[2].0).unwrap(), LogFormat::VhostCombined, SHAPES.map(vhost).to_vec()),
            (
                FieldPlan::apache(APACHE_NAMED[3].0).unwrap(),
                LogFormat::VhostCommon,
                SHAPES.map(|l| vhost(&common(l))).to_vec(),
            ),
        ];
        for (plan, named, lines) in cases {
            let plan = crate::parse::LineFormat::Plan(std::sync::Arc::new(plan));
            for line in &lines {
                let by_plan = plan.parse(line.as_bytes()).map(|a| fields(&a));
                let by_name = crate::parse::parse_line(named, line.as_bytes()).map(|a| fields(&a));
                assert_eq!(by_plan, by_name, "{named:?}: {line}");
            }
        }
    }

    #[test]
    fn log_format_strings_of_named_formats_are_recognised_word_for_word() {
        let nginx_conf = "$remote_addr - $remote_user [$time_local] \"$request\" \n  $status $body_bytes_sent \"$http_referer\" \"$http_user_agent\"";
        assert_eq!(nginx_named_equivalent(nginx_conf), Some(LogFormat::Combined));
        assert_eq!(nginx_named_equivalent(&format!("escape=default '{nginx_conf}'")), Some(LogFormat::Combined));
        assert_eq!(nginx_named_equivalent(&format!("escape=json '{nginx_conf}'")), None);
        assert_eq!(nginx_named_equivalent(NGINX_MAIN), Some(LogFormat::Main));
        assert_eq!(nginx_named_equivalent("$remote_addr $status"), None);
        // Debian's apache2.conf, as written inside the directive's quotes.
        let debian = r#"%v:%p %h %l %u %t \"%r\" %>s %O \"%{Referer}i\" \"%{User-Agent}i\""#;
        assert_eq!(apache_named_equivalent(debian), Some(LogFormat::VhostCombined));
        assert_eq!(apache_named_equivalent(r#"%h %l %u %t "%r" %>s %B"#), Some(LogFormat::Common));
        assert_eq!(apache_named_equivalent(r#"%a %l %u %t "%r" %>s %b"#), None, "%a is not %h");
    }

    const NGINX_MAIN: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for""#;

    #[test]
    fn nginx_main_reads_every_field() {
        let plan = FieldPlan::nginx(NGINX_MAIN).unwrap();
        let line = br#"203.0.113.9 - alice [18/Feb/2019:10:00:01 +0100] "GET /recordings/a.wav HTTP/1.1" 200 5120 "-" "curl/8.0" "198.51.100.7, 10.0.0.1""#;
        let f = plan.parse(line).unwrap();
        assert_eq!(f.client, b"203.0.113.9");
        assert_eq!(f.user, Some(&b"alice"[..]));
        assert_eq!(parse_time(plan.time_kind(), f.time), Some(1_550_480_401));
        assert_eq!((f.method, f.target, f.status), (&b"GET"[..], &b"/recordings/a.wav"[..], 200));
        assert_eq!(f.body_bytes, Some(5120));
        assert_eq!(f.referer, None);
        assert_eq!(f.user_agent, Some(&b"curl/8.0"[..]));
        assert_eq!(f.forwarded_for, Some(&b"198.51.100.7, 10.0.0.1"[..]));
        assert_eq!(f.transport, Transport::Unknown);
        assert!(plan.unknown_fields().is_empty());
    }

    #[test]
    fn nginx_custom_format_with_scheme_request_time_and_host() {
        let plan = FieldPlan::nginx(
            r#"$remote_addr $host $scheme "$request" $status $bytes_sent rt=$request_time uct="$upstream_connect_time" [$time_local] "$http_user_agent""#,
        )
        .unwrap();
        let line = br#"2001:db8::7 files.example http "GET /recordings/b.wav?x=1 HTTP/2.0" 206 99 rt=0.004 uct="-" [18/Feb/2019:10:00:01 +0000] "Mozilla \x22x\x22""#;
        let f = plan.parse(line).unwrap();
        assert_eq!(f.client, b"2001:db8::7");
        assert_eq!(f.target, b"/recordings/b.wav?x=1");
        assert_eq!(f.status, 206);
        assert_eq!((f.body_bytes, f.bytes_sent), (None, Some(99)));
        assert_eq!(f.transport, Transport::Plain);
        assert_eq!(f.user_agent, Some(&br"Mozilla \x22x\x22"[..]));
    }

    #[test]
    fn nginx_escape_json_template_reads_as_json_fields() {
        let plan = FieldPlan::nginx(
            r#"escape=json '{"time":"$time_iso8601","client":"$remote_addr","request":"$request","status":$status,"bytes":$body_bytes_sent,"ua":"$http_user_agent","https":"$https"}'"#,
        )
        .unwrap();
        assert_eq!(plan.dialect(), Dialect::Nginx(NginxEscape::Json));
        let line = br#"{"time":"2019-02-18T10:00:01+01:00","client":"192.0.2.4","request":"GET /recordings/c.wav HTTP/1.1","status":200,"bytes":12,"ua":"evil\",\"status\":404","https":""}"#;
        let f = plan.parse(line).unwrap();
        assert_eq!(parse_time(plan.time_kind(), f.time), Some(1_550_480_401));
        assert_eq!((f.client, f.status, f.body_bytes), (&b"192.0.2.4"[..], 200, Some(12)));
        assert_eq!(f.target, b"/recordings/c.wav");
        assert_eq!(f.transport, Transport::Plain);
    }

    #[test]
    fn apache_custom_logformat_with_duration_protocol_and_forwarded_for() {
        let plan =
            FieldPlan::apache(r#"%h %l %u %t \"%r\" %>s %b %D %H \"%{X-Forwarded-For}i\" \"%{User-agent}i\" %p"#)
                .unwrap();
        let line = br#"198.51.100.2 - - [18/Feb/2019:10:00:01 +0100] "GET /recordings/d.wav HTTP/1.1" 200 - 1532 HTTP/1.1 "-" "Wget \"1.21\" 200 9" 443"#;
        let f = plan.parse(line).unwrap();
        assert_eq!((f.client, f.status, f.body_bytes), (&b"198.51.100.2"[..], 200, Some(0)));
        assert_eq!(f.forwarded_for, None);
        assert_eq!(f.user_agent, Some(&br#"Wget \"1.21\" 200 9"#[..]));
        assert_eq!(f.transport, Transport::Tls);
        assert_eq!(parse_time(plan.time_kind(), f.time), Some(1_550_480_401));
    }

    #[test]
    fn a_quote_in_a_header_cannot_move_the_status() {
        let plan = FieldPlan::nginx(r#"$remote_addr "$http_user_agent" "$request" $status [$time_local]"#).unwrap();
        // nginx writes a `"` in a header as \x22: the request stays where it is.
        let line = br#"192.0.2.1 "x\x22 \x22GET /public HTTP/1.1\x22 200" "GET /recordings/e.wav HTTP/1.1" 200 [18/Feb/2019:10:00:01 +0000]"#;
        let f = plan.parse(line).unwrap();
        assert_eq!((f.target, f.status), (&b"/recordings/e.wav"[..], 200));
    }

    #[test]
    fn compile_errors_say_what_is_missing_or_ambiguous() {
        assert!(matches!(FieldPlan::nginx("$remote_addr [$time_local] \"$request\""), Err(PlanError::Missing(_))));
        assert!(matches!(
            FieldPlan::nginx("$remote_addr$status [$time_local] $request"),
            Err(PlanError::AdjacentFields { .. })
        ));
        assert!(matches!(FieldPlan::nginx("escape=yaml '$remote_addr'"), Err(PlanError::UnknownEscape(_))));
        assert!(matches!(FieldPlan::apache("%h %{Referer"), Err(PlanError::Unclosed(..))));
        assert!(matches!(
            FieldPlan::nginx("$remote_addr $remote_addr [$time_local] $request $status"),
            Err(PlanError::Twice(_))
        ));
        assert!(matches!(FieldPlan::nginx(""), Err(PlanError::Empty)));
    }

    #[test]
    fn unknown_variables_are_opaque_and_listed() {
        let plan =
            FieldPlan::nginx("$remote_addr [$time_local] \"$request\" $status $my_module_var $upstream_addr").unwrap();
        assert_eq!(plan.unknown_fields(), ["$my_module_var"]);
        let f = plan
            .parse(b"192.0.2.1 [18/Feb/2019:10:00:01 +0000] \"GET / HTTP/1.1\" 200 anything at all 10.0.0.1:80")
            .unwrap();
        assert_eq!(f.status, 200);
        let apache = FieldPlan::apache("%h %t \"%r\" %>s %Z %{%s}t").unwrap();
        assert_eq!(apache.unknown_fields(), ["%Z", "%{%s}t"]);
    }

    #[test]
    fn the_s3_plan_compiles_and_reads_an_anonymous_plain_fetch() {
        let plan = FieldPlan::s3();
        assert!(plan.is_s3() && plan.unknown_fields().is_empty());
        assert_eq!(plan.describe(), "s3");
        let line = br#"owner bucket1 [06/Feb/2019:00:00:40 +0000] 203.0.113.50 - 891CE47D2EXAMPLE REST.GET.OBJECT a.wav "GET /bucket1/a.wav HTTP/1.1" 200 - 48213 48213 21 20 "-" "curl/7.64.0" - hostid= - - - s3.amazonaws.com - - -"#;
        let f = plan.parse(line).unwrap();
        assert_eq!((f.client, f.user, f.target, f.status), (&b"203.0.113.50"[..], None, &b"/bucket1/a.wav"[..], 200));
        assert_eq!((f.body_bytes, f.transport), (Some(48213), Transport::Plain));
    }

    #[test]
    fn epoch_and_iso_times() {
        assert_eq!(parse_time(TimeKind::EpochSeconds, b"1550480401.123"), Some(1_550_480_401));
        assert_eq!(parse_time(TimeKind::EpochMillis, b"1550480401123"), Some(1_550_480_401));
        assert_eq!(parse_time(TimeKind::EpochMicros, b"1550480401123456"), Some(1_550_480_401));
        assert_eq!(parse_time(TimeKind::Iso8601, b"2019-02-18T09:00:01Z"), Some(1_550_480_401));
        assert_eq!(parse_time(TimeKind::Iso8601, b"2019-02-30T09:00:01Z"), None);
        assert_eq!(parse_time(TimeKind::EpochSeconds, b"12a"), None);
        assert_eq!(parse_time(TimeKind::EpochSeconds, b""), None);
    }

    #[test]
    fn every_prefix_and_mutation_of_a_line_is_judged_without_panic() {
        let plan = FieldPlan::nginx(NGINX_MAIN).unwrap();
        let line: &[u8] = br#"203.0.113.9 - - [18/Feb/2019:10:00:01 +0100] "GET /recordings/a.wav HTTP/1.1" 200 5120 "-" "curl/8.0" "-""#;
        assert!(plan.parse(line).is_ok());
        for end in 0..line.len() {
            let _ = plan.parse(&line[..end]);
            for byte in [b'"', b'\\', b' ', b'[', b']', 0, 0xff] {
                let mut mutated = line.to_vec();
                mutated[end] = byte;
                let _ = plan.parse(&mutated);
            }
        }
    }
}
