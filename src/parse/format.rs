//! Which format a source's lines are in, and the one entry point that parses a line by it:
//! a named format (its own tokenizer), a compiled `log_format`/`LogFormat` plan, or a JSON
//! field map. Owns the bounds every format shares (length, blank, NUL). Never reads a field
//! itself: the format's parser does.

use std::sync::Arc;

use memchr::memchr;

use super::json::JsonPlan;
use super::plan::{FieldPlan, PlannedFields, PlannedTail, TimeKind};
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
        }
    }

    /// Parses the head of a line cut at the length bound: the named formats judge the fields
    /// before the referer ([`super::parse_line_head`]); a plan or JSON map needs the whole
    /// line, so a cut one is skipped as too long.
    pub fn parse_head<'a>(&self, head: &'a [u8]) -> Result<AccessLine<'a>, SkipReason> {
        match self {
            LineFormat::Named(format) => super::parse_line_head(*format, head),
            LineFormat::Plan(_) | LineFormat::Json(_) | LineFormat::Xferlog => Err(SkipReason::TooLong),
        }
    }

    /// How `recwatch check` names it: `combined`, or `nginx_log_format '…'`.
    pub fn describe(&self) -> String {
        match self {
            LineFormat::Named(format) => format.as_str().to_string(),
            LineFormat::Plan(plan) => plan.describe(),
            LineFormat::Json(plan) => plan.describe(),
            LineFormat::Xferlog => "xferlog".to_string(),
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
