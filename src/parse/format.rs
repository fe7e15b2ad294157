//! Which format a source's lines are in, and the one entry point that parses a line by it:
//! a named format (its own tokenizer), a compiled `log_format`/`LogFormat` plan, or a JSON
//! field map. Owns the bounds every format shares (length, blank, NUL). Never reads a field
//! itself: the format's parser does.

use std::sync::Arc;

use memchr::memchr;

use super::json::JsonPlan;
use super::plan::{FieldPlan, PlannedFields, PlannedTail, TimeKind};
use super::samba::SambaPlan;
use super::{AccessLine, LogFormat, SkipReason, MAX_LINE_LEN};

/// How a source's lines are written: one of the named formats, or a plan compiled from the
/// operator's own format string.
#[derive(Clone, Debug, PartialEq)]
pub enum LineFormat {
    Named(LogFormat),
    Plan(Arc<FieldPlan>),
    /// One JSON object per line, read by a field map.
    Json(Arc<JsonPlan>),
    /// FTP `xferlog` (vsftpd, proftpd): one transfer per line.
    Xferlog,
    /// Samba `vfs_full_audit` records behind a syslog-shaped header, read by the share's
    /// `full_audit:prefix`.
    Samba(Arc<SambaPlan>),
}

impl LineFormat {
    /// Parses one line (no `\n`; a trailing `\r` is ignored) as this format writes it.
    #[inline]
    pub fn parse<'a>(&self, line: &'a [u8]) -> Result<AccessLine<'a>, SkipReason> {
        match self {
            LineFormat::Named(format) => super::parse_line(*format, line),
            LineFormat::Plan(plan) => {
                let line = prepare(line)?;
                let parsed = plan.parse(line).map(|fields| (fields, plan.time_kind()));
                checked_access_line(line, parsed)
            }
            LineFormat::Json(plan) => {
                let line = prepare(line)?;
                checked_access_line(line, plan.parse(line))
            }
            LineFormat::Xferlog => {
                let line = prepare(line)?;
                checked_access_line(line, super::xferlog::parse(line))
            }
            LineFormat::Samba(plan) => {
                let line = prepare(line)?;
                checked_access_line(line, plan.parse(line))
            }
        }
    }

    /// Parses the head of a line cut at the length bound: the named formats judge the fields
    /// before the referer ([`super::parse_line_head`]); a plan, a JSON map and the storage
    /// logs need the whole line, so a cut one is skipped as too long.
    pub fn parse_head<'a>(&self, head: &'a [u8]) -> Result<AccessLine<'a>, SkipReason> {
        match self {
            LineFormat::Named(format) => super::parse_line_head(*format, head),
            LineFormat::Plan(_) | LineFormat::Json(_) | LineFormat::Xferlog | LineFormat::Samba(_) => {
                Err(SkipReason::TooLong)
            }
        }
    }

    /// Whether its targets are file paths as the server's file system names them (the storage
    /// logs: FTP, Samba), not HTTP request targets: `%`, `?` and `#` in them are plain bytes.
    pub fn targets_are_file_paths(&self) -> bool {
        matches!(self, LineFormat::Xferlog | LineFormat::Samba(_))
    }

    /// How `recwatch check` names it: `combined`, or `nginx_log_format '…'`.
    pub fn describe(&self) -> String {
        match self {
            LineFormat::Named(format) => format.as_str().to_string(),
            LineFormat::Plan(plan) => plan.describe(),
            LineFormat::Json(plan) => plan.describe(),
            LineFormat::Xferlog => "xferlog".to_string(),
            LineFormat::Samba(plan) => plan.describe(),
        }
    }
}

impl From<LogFormat> for LineFormat {
    fn from(format: LogFormat) -> LineFormat {
        LineFormat::Named(format)
    }
}

/// The line without a trailing `\r`, or why it is skipped before any field is read: the
/// same bounds as [`super::parse_line`] (length, blank).
fn prepare(line: &[u8]) -> Result<&[u8], SkipReason> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE_LEN {
        return Err(SkipReason::TooLong);
    }
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err(SkipReason::Empty);
    }
    Ok(line)
}

/// The fields as the [`AccessLine`] every stage reads; a NUL in the target, or in a line
/// that did not parse, is binary junk.
fn checked_access_line<'a>(
    line: &'a [u8],
    parsed: Result<(PlannedFields<'a>, TimeKind), SkipReason>,
) -> Result<AccessLine<'a>, SkipReason> {
    let (fields, time_kind) = match parsed {
        Ok((fields, _)) if memchr(0, fields.target).is_some() => return Err(SkipReason::Binary),
        Ok(parsed) => parsed,
        Err(_) if memchr(0, line).is_some() => return Err(SkipReason::Binary),
        Err(reason) => return Err(reason),
    };
    Ok(AccessLine {
        vhost: None,
        client: fields.client,
        user: fields.user,
        time: fields.time,
        method: fields.method,
        target: fields.target,
        status: fields.status,
        client_is_list: memchr(b',', fields.client).is_some(),
        junk_request: fields.junk_request,
        wrapper: None,
        tail: b"",
        // Unused: the planned tail answers every accessor.
        format: LogFormat::Combined,
        planned: Some(PlannedTail {
            body_bytes: fields.body_bytes.or(fields.bytes_sent).unwrap_or(0),
            referer: fields.referer,
            user_agent: fields.user_agent,
            forwarded_for: fields.forwarded_for,
            transport: fields.transport,
            time_kind,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::json::JsonProducer;
    use crate::parse::AccessLine;

    /// One whole line of every format that is not a named one, with what it must read, as
    /// the real programs wrote them (tests/formats.rs).
    fn whole_lines() -> Vec<(LineFormat, &'static str)> {
        let plan = |format: &str| LineFormat::Plan(Arc::new(FieldPlan::nginx(format).unwrap()));
        let json = |producer| LineFormat::Json(Arc::new(JsonPlan::new(producer, &[]).unwrap()));
        vec![
            (
                plan(r#"$remote_addr $host $scheme [$time_local] "$request" $status $body_bytes_sent rt=$request_time "$http_x_forwarded_for" "$http_user_agent""#),
                r#"127.0.0.1 files.example http [29/Nov/2026:21:26:01 +0000] "GET /recordings/call.wav HTTP/1.1" 200 600 rt=0.000 "10.0.0.9" "grab \"it\" 404""#,
            ),
            (
                LineFormat::Plan(Arc::new(FieldPlan::apache(r#"%h %l %u %t \"%r\" %>s %b %D %H %{HTTPS}e \"%{X-Forwarded-For}i\" \"%{User-Agent}i\""#).unwrap())),
                r#"127.0.0.1 - - [29/Nov/2026:21:26:01 +0000] "GET /recordings/call.wav HTTP/1.1" 200 600 312 HTTP/1.1 - "10.0.0.9" "grab \"it\" 404""#,
            ),
            (
                plan(r#"escape=json '{"time_iso8601":"$time_iso8601","remote_addr":"$remote_addr","request":"$request","status":$status,"body_bytes_sent":$body_bytes_sent}'"#),
                r#"{"time_iso8601":"2026-11-29T21:26:01+00:00","remote_addr":"127.0.0.1","request":"GET /recordings/call.wav HTTP/1.1","status":200,"body_bytes_sent":600}"#,
            ),
            (
                json(JsonProducer::Nginx),
                r#"{"time_iso8601":"2026-11-29T21:26:01+00:00","remote_addr":"127.0.0.1","request":"GET /recordings/call.wav HTTP/1.1","status":200,"body_bytes_sent":600}"#,
            ),
            (
                json(JsonProducer::Caddy),
                r#"{"ts":1795987561.5,"request":{"remote_ip":"127.0.0.1","method":"GET","uri":"/recordings/call.wav","headers":{}},"status":200,"size":600}"#,
            ),
            (
                json(JsonProducer::Traefik),
                r#"{"ClientHost":"127.0.0.1","StartUTC":"2026-11-29T21:26:01Z","RequestMethod":"GET","RequestPath":"/recordings/call.wav","DownstreamStatus":200}"#,
            ),
            (
                LineFormat::Plan(Arc::new(FieldPlan::s3())),
                r#"79a59df900b949e5 BUCKET [29/Nov/2026:21:26:01 +0000] 127.0.0.1 - 891CE47D2EXAMPLE REST.GET.OBJECT recordings/call.wav "GET /recordings/call.wav HTTP/1.1" 200 - 600 600 21 20 "-" "curl/7.64.0" - Ah3uDhT0z9= - - - s3.us-west-1.amazonaws.com - - -"#,
            ),
            (LineFormat::Xferlog, "Sun Nov 29 21:26:01 2026 1 127.0.0.1 600 /recordings/call.wav b _ o a anon@ ftp 0 * c"),
            (
                LineFormat::Samba(Arc::new(SambaPlan::new("%u|%I|%m|%S", "nobody").unwrap())),
                "2026-11-29T21:26:01.230101+00:00 vm smbd[21760]:   nobody|127.0.0.1|vm|rec|pread_recv|ok|/recordings/call.wav",
            ),
        ]
    }

    /// What must survive a cut for the line to count: who, when, what and the answer.
    fn key_fields<'a>(access: &AccessLine<'a>) -> (&'a [u8], Option<i64>, &'a [u8], u16) {
        (access.client, access.unix_time(), access.method, access.status)
    }

    #[test]
    fn a_line_cut_mid_way_is_skipped_with_a_reason_or_keeps_every_key_field() {
        for (format, line) in whole_lines() {
            let whole =
                format.parse(line.as_bytes()).unwrap_or_else(|e| panic!("{}: {e:?}: {line}", format.describe()));
            assert_eq!(whole.target, b"/recordings/call.wav", "{}", format.describe());
            let (client, time, _, status) = key_fields(&whole);
            assert_eq!((client, status), (&b"127.0.0.1"[..], 200), "{}", format.describe());
            assert!(time.is_some(), "{}", format.describe());
            for cut in 0..line.len() {
                let head = &line.as_bytes()[..cut];
                match format.parse(head) {
                    // A cut inside a last unquoted field (a byte count, the path of a Samba
                    // record) cannot be told from a whole line; every key field is then whole
                    // and the target is a prefix of the real one.
                    Ok(access) => {
                        assert_eq!(
                            key_fields(&access),
                            key_fields(&whole),
                            "{} cut at {cut}: {head:?}",
                            format.describe()
                        );
                        assert!(whole.target.starts_with(access.target), "{} cut at {cut}", format.describe());
                    }
                    Err(reason) => assert!(
                        reason != SkipReason::Empty || head.iter().all(u8::is_ascii_whitespace),
                        "{} cut at {cut}",
                        format.describe()
                    ),
                }
                // The head of an over-long line of these formats is never read.
                assert_eq!(format.parse_head(head).map(|_| ()), Err(SkipReason::TooLong));
            }
        }
    }
}
