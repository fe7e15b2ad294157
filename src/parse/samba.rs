//! Reads Samba `vfs_full_audit` lines (the file-share access log: who opened or read which file
//! over SMB), as Samba 4.17 writes them behind a syslog-shaped header, either through syslog
//! (`2026-11-29T22:20:09.230101+00:00 nas smbd_audit: nobody|10.1.2.3|openat|ok|r|/srv/rec/x.wav`)
//! or to a debug-class log file with `debug syslog format = yes`
//! (`2026-11-29T22:20:09.230101+00:00 nas smbd[21760]:   nobody|10.1.2.3|…`).
//! Owns the meaning of the audit record (`PREFIX|OPERATION|RESULT|ARGS…`) to recwatch and the
//! compiled `full_audit:prefix`. Never allocates, locks or syscalls per line.
//!
//! | recwatch | full_audit |
//! |---|---|
//! | client | the prefix field `%I` (required) |
//! | user (R3) | the prefix field `%u`; the guest account (`nobody` unless configured) is no user |
//! | time | the header's RFC 3339 timestamp (a header without a year is a bad timestamp) |
//! | path | the file as Samba logs it: its absolute path on the server, `\|` in a name kept |
//! | fetch (200) | `create_file` ok of a `file` whose access mask asks for its data (`FILE_READ_DATA`): method `OPEN`; `pread`, `pread_recv`, `read`, `sendfile` ok: method `READ` |
//! | listing (200) | `create_file` ok of a `dir` asked to list (`FILE_LIST_DIRECTORY`): method `LIST` |
//! | refusal (403/404) | `create_file` or `openat` failed: 404 for "No such file or directory", 403 otherwise (Samba logs errno, not the SMB status) |
//! | bytes | never logged: 0 |
//! | transport (R4) | unknown: the record does not say whether SMB3 encryption was on |
//!
//! Every other record (`connect`, `close`, a successful `openat` — Samba opens each entry of a
//! directory it lists that way, so it is no sign of a read —, `readdir`, `fstat`, …) is a
//! well-formed line that records no access: [`SkipReason::NoAccess`].

use memchr::memchr;
use thiserror::Error;

use super::plan::{PlannedFields, TimeKind, Transport};
use super::SkipReason;

/// The `format` name of a source written by `vfs_full_audit`.
pub const FORMAT_NAME: &str = "samba_full_audit";

/// Most prefix fields accepted; Samba's own default has two.
const MAX_PREFIX_FIELDS: usize = 16;

/// `FILE_READ_DATA` (a file) / `FILE_LIST_DIRECTORY` (a directory) in an SMB access mask.
const READ_DATA: u32 = 0x1;

/// Why a `full_audit:prefix` cannot be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SambaPrefixError {
    #[error("the prefix has no %I field (the client address), so no line could name its client")]
    NoClient,
    #[error("{0} must be a field of its own between `|` (as in \"%u|%I\")")]
    NotAField(&'static str),
    #[error("{0} appears more than once")]
    Repeated(&'static str),
    #[error("more than {MAX_PREFIX_FIELDS} fields")]
    TooManyFields,
}

/// A compiled `full_audit:prefix` and the share's guest account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SambaPlan {
    /// The prefix as configured (`%u|%I`), for `recwatch check`.
    prefix: String,
    /// Number of `|`-separated fields the prefix writes.
    fields: usize,
    /// Which of them is `%I`.
    client_at: usize,
    /// Which of them is `%u`, if any.
    user_at: Option<usize>,
    /// `guest account` of smb.conf: a session as this user logged in as nobody.
    guest_account: Box<[u8]>,
}

impl SambaPlan {
    /// Samba's default `full_audit:prefix`.
    pub const DEFAULT_PREFIX: &'static str = "%u|%I";
    /// Samba's default `guest account`.
    pub const DEFAULT_GUEST_ACCOUNT: &'static str = "nobody";

    /// Compiles `prefix` (the `full_audit:prefix` of smb.conf) for shares whose guest account is
    /// `guest_account`.
    pub fn new(prefix: &str, guest_account: &str) -> Result<SambaPlan, SambaPrefixError> {
        let pieces: Vec<&str> = prefix.split('|').collect();
        if pieces.len() > MAX_PREFIX_FIELDS {
            return Err(SambaPrefixError::TooManyFields);
        }
        let (mut client_at, mut user_at) = (None, None);
        for (at, piece) in pieces.iter().enumerate() {
            for (variable, slot) in [("%I", &mut client_at), ("%u", &mut user_at)] {
                if piece.contains(variable) {
                    if *piece != variable {
                        return Err(SambaPrefixError::NotAField(variable));
                    }
                    if slot.replace(at).is_some() {
                        return Err(SambaPrefixError::Repeated(variable));
                    }
                }
            }
        }
        Ok(SambaPlan {
            prefix: prefix.to_string(),
            fields: pieces.len(),
            client_at: client_at.ok_or(SambaPrefixError::NoClient)?,
            user_at,
            guest_account: guest_account.as_bytes().into(),
        })
    }

    /// The configured prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How `recwatch check` names it.
    pub fn describe(&self) -> String {
        format!("samba_full_audit (full_audit:prefix {})", self.prefix)
    }

    /// Reads one line: a syslog-shaped header, then the audit record.
    pub fn parse<'a>(&self, line: &'a [u8]) -> Result<(PlannedFields<'a>, TimeKind), SkipReason> {
        let message = super::syslog::unwrap(line).ok_or(SkipReason::Malformed)?;
        let time = header_time(line).ok_or(SkipReason::BadTimestamp)?;
        let message = &message[message.iter().position(|&b| b != b' ').unwrap_or(message.len())..];
        let mut prefix: [&[u8]; MAX_PREFIX_FIELDS] = [&[]; MAX_PREFIX_FIELDS];
        let mut rest = message;
        for slot in prefix.iter_mut().take(self.fields) {
            (*slot, rest) = split_field(rest).ok_or(SkipReason::Malformed)?;
        }
        let (operation, rest) = split_field(rest).ok_or(SkipReason::Malformed)?;
        let (result, args) = split_field(rest).unwrap_or((rest, b""));
        if operation.is_empty() || !operation.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(SkipReason::Malformed);
        }
        let refusal = match result {
            b"ok" => None,
            _ if result.starts_with(b"fail (") && result.ends_with(b")") => {
                Some(if &result[6..result.len() - 1] == b"No such file or directory" { 404 } else { 403 })
            }
            _ => return Err(SkipReason::Malformed),
        };
        let client = prefix[self.client_at];
        if client.is_empty() || client == b"-" {
            return Err(SkipReason::BadClient);
        }
        let user = self
            .user_at
            .and_then(|at| super::dash_is_none(prefix[at]))
            .filter(|user| !user.eq_ignore_ascii_case(&self.guest_account));

        let (method, target, status): (&[u8], &[u8], u16) = match (operation, refusal) {
            (b"create_file", _) => {
                // `0x120089|file|open|/srv/rec/x.wav`: access mask, file or dir, disposition.
                let (mask, rest) = split_field(args).ok_or(SkipReason::Malformed)?;
                let (kind, rest) = split_field(rest).ok_or(SkipReason::Malformed)?;
                let (_disposition, path) = split_field(rest).ok_or(SkipReason::Malformed)?;
                let mask = parse_hex(mask).ok_or(SkipReason::Malformed)?;
                match (refusal, kind) {
                    (Some(status), _) => (b"OPEN", path, status),
                    (None, b"file") if mask & READ_DATA != 0 => (b"OPEN", path, 200),
                    (None, b"dir") if mask & READ_DATA != 0 => (b"LIST", path, 200),
                    (None, b"file" | b"dir") => return Err(SkipReason::NoAccess),
                    (None, _) => return Err(SkipReason::Malformed),
                }
            }
            (b"openat", Some(status)) => {
                // `r|/srv/rec/x.wav` or `w|…`.
                let (_mode, path) = split_field(args).ok_or(SkipReason::Malformed)?;
                (b"OPEN", path, status)
            }
            (b"pread" | b"pread_recv" | b"read" | b"sendfile", None) => (b"READ", args, 200),
            _ => return Err(SkipReason::NoAccess),
        };
        if target.is_empty() {
            return Err(SkipReason::BadRequestLine);
        }
        let fields = PlannedFields {
            client,
            user,
            time,
            method,
            target,
            status,
            body_bytes: Some(0),
            transport: Transport::Unknown,
            ..PlannedFields::default()
        };
        Ok((fields, TimeKind::Iso8601))
    }
}

/// The field up to the next `|`, and what follows that `|`.
fn split_field(rest: &[u8]) -> Option<(&[u8], &[u8])> {
    let bar = memchr(b'|', rest)?;
    Some((&rest[..bar], &rest[bar + 1..]))
}

/// `0x120089` → its value.
fn parse_hex(text: &[u8]) -> Option<u32> {
    let digits = text.strip_prefix(b"0x")?;
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    digits.iter().try_fold(0u32, |n, &b| Some(n << 4 | char::from(b).to_digit(16)?))
}

/// The RFC 3339 timestamp of a syslog-shaped header: `<PRI>1 TIME …` (RFC 5424),
/// `<PRI>TIME …` or `TIME …` (rsyslog's file format, Samba's `debug syslog format` with
/// `debug hires timestamp`). `None` for the traditional `Mmm dd hh:mm:ss`, which has no year.
fn header_time(line: &[u8]) -> Option<&[u8]> {
    let rest = match line.strip_prefix(b"<") {
        Some(after) => &after[memchr(b'>', after)? + 1..],
        None => line,
    };
    let rest = rest.strip_prefix(b"1 ").unwrap_or(rest);
    let token = &rest[..memchr(b' ', rest)?];
    let shaped =
        token.len() >= 20 && token[..4].iter().all(u8::is_ascii_digit) && token[4] == b'-' && token[10] == b'T';
    shaped.then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::plan::parse_time;

    fn plan() -> SambaPlan {
        SambaPlan::new("%u|%I|%m|%S", "nobody").unwrap()
    }

    const HEADER: &str = "2026-11-29T22:20:09.230101+00:00 nas smbd[21760]:   ";

    fn parse_record(plan: &SambaPlan, record: &str) -> Result<(PlannedFields<'static>, TimeKind), SkipReason> {
        let line: &'static str = Box::leak(format!("{HEADER}{record}").into_boxed_str());
        plan.parse(line.as_bytes())
    }

    #[test]
    fn reads_opens_and_listings_written_by_smbd_4_17() {
        let plan = plan();
        let (f, kind) =
            parse_record(&plan, "nobody|127.0.0.1|vm|rec|pread_recv|ok|/srv/rec/recordings/call.wav").unwrap();
        assert_eq!((f.client, f.user, f.method, f.status), (&b"127.0.0.1"[..], None, &b"READ"[..], 200));
        assert_eq!(f.target, b"/srv/rec/recordings/call.wav");
        assert_eq!(parse_time(kind, f.time), Some(1_795_990_809));
        let (f, _) =
            parse_record(&plan, "alice|10.1.2.3|pc7|rec|create_file|ok|0x120089|file|open|/srv/rec/a|b.wav").unwrap();
        assert_eq!(
            (f.user, f.method, f.status, f.target),
            (Some(&b"alice"[..]), &b"OPEN"[..], 200, &b"/srv/rec/a|b.wav"[..])
        );
        let (f, _) = parse_record(&plan, "nobody|::1|vm|rec|create_file|ok|0x81|dir|open|/srv/rec/recordings").unwrap();
        assert_eq!((f.method, f.status), (&b"LIST"[..], 200));
    }

    #[test]
    fn refusals_are_403_or_404_and_other_records_are_no_access() {
        let plan = plan();
        let denied = "nobody|127.0.0.1|vm|rec|create_file|fail (Permission denied)|0x120089|file|open|/srv/rec/s.wav";
        assert_eq!(parse_record(&plan, denied).unwrap().0.status, 403);
        let missing = "nobody|127.0.0.1|vm|rec|openat|fail (No such file or directory)|r|/srv/rec/n.wav";
        let (f, _) = parse_record(&plan, missing).unwrap();
        assert_eq!((f.method, f.status, f.target), (&b"OPEN"[..], 404, &b"/srv/rec/n.wav"[..]));
        for record in [
            "nobody|127.0.0.1|vm|rec|connect|ok|rec",
            "nobody|127.0.0.1|vm|rec|openat|ok|r|/srv/rec/recordings/call.wav",
            "nobody|127.0.0.1|vm|rec|readdir|ok|",
            "nobody|127.0.0.1|vm|rec|create_file|ok|0x80|dir|open|/srv/rec",
            "nobody|127.0.0.1|vm|rec|pread_send|ok|/srv/rec/recordings/call.wav",
            "nobody|127.0.0.1|vm|rec|fgetxattr|fail (No data available)|/srv/rec/x.wav|user.DOSATTRIB",
        ] {
            assert_eq!(parse_record(&plan, record).map(|_| ()), Err(SkipReason::NoAccess), "{record}");
        }
    }

    #[test]
    fn every_header_smbd_and_syslog_write_and_the_guest_account() {
        let plan = SambaPlan::new(SambaPlan::DEFAULT_PREFIX, "smbguest").unwrap();
        for line in [
            "2026-11-29T22:20:09.230101+00:00 nas smbd_audit: smbguest|10.1.2.3|pread_recv|ok|/r/x.wav",
            "<38>2026-11-29T22:20:09Z nas smbd_audit: smbguest|10.1.2.3|pread_recv|ok|/r/x.wav",
            "<38>1 2026-11-29T22:20:09.23Z nas smbd_audit 99 - - smbguest|10.1.2.3|pread_recv|ok|/r/x.wav",
        ] {
            let (f, kind) = plan.parse(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e:?}"));
            assert_eq!((f.client, f.user, f.target), (&b"10.1.2.3"[..], None, &b"/r/x.wav"[..]), "{line}");
            assert_eq!(parse_time(kind, f.time), Some(1_795_990_809), "{line}");
        }
        let no_year = "Nov 29 22:20:09 nas smbd_audit: smbguest|10.1.2.3|pread_recv|ok|/r/x.wav";
        assert_eq!(plan.parse(no_year.as_bytes()).map(|_| ()), Err(SkipReason::BadTimestamp));
        let bare = "smbguest|10.1.2.3|pread_recv|ok|/r/x.wav";
        assert_eq!(plan.parse(bare.as_bytes()).map(|_| ()), Err(SkipReason::Malformed));
    }

    #[test]
    fn a_wrong_prefix_or_a_cut_record_is_skipped_never_an_access() {
        let path = "/srv/rec/recordings/call.wav";
        let line = format!("{HEADER}nobody|127.0.0.1|vm|rec|pread_recv|ok|{path}");
        // Samba's default prefix on a line written with four prefix fields.
        let default = SambaPlan::new(SambaPlan::DEFAULT_PREFIX, "nobody").unwrap();
        assert_eq!(default.parse(line.as_bytes()).map(|_| ()), Err(SkipReason::Malformed));
        let plan = plan();
        let path_start = line.len() - path.len();
        for cut in 0..line.len() {
            // Only a cut inside the path, the last field, can pass for a whole record; client,
            // time, operation and status are then whole.
            if let Ok((f, _)) = plan.parse(&line.as_bytes()[..cut]) {
                assert!(cut > path_start, "cut at {cut} accepted: {f:?}");
                assert_eq!((f.client, f.method, f.status), (&b"127.0.0.1"[..], &b"READ"[..], 200));
            }
        }
    }

    #[test]
    fn prefix_errors_say_what_is_wrong() {
        assert_eq!(SambaPlan::new("%u|%m", "nobody"), Err(SambaPrefixError::NoClient));
        assert_eq!(SambaPlan::new("%u|ip=%I", "nobody"), Err(SambaPrefixError::NotAField("%I")));
        assert_eq!(SambaPlan::new("%I|%u|%u", "nobody"), Err(SambaPrefixError::Repeated("%u")));
        assert_eq!(SambaPlan::new(&format!("{}%I", "%m|".repeat(16)), "nobody"), Err(SambaPrefixError::TooManyFields));
        let plan = SambaPlan::new("%I", "nobody").unwrap();
        let line = format!("{HEADER}10.1.2.3|read|ok|/x.wav");
        let (f, _) = plan.parse(line.as_bytes()).unwrap();
        assert_eq!((f.client, f.user), (&b"10.1.2.3"[..], None));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_and_records_never_panic(
            record in proptest::collection::vec(proptest::prop_oneof![
                proptest::prelude::Just(b'|'), proptest::prelude::Just(b'('), proptest::prelude::Just(b')'),
                proptest::prelude::Just(b' '), proptest::prelude::any::<u8>(),
            ], 0..200),
        ) {
            let plan = plan();
            let _ = plan.parse(&record);
            let mut line = HEADER.as_bytes().to_vec();
            line.extend_from_slice(&record);
            if let Ok((f, kind)) = plan.parse(&line) {
                proptest::prop_assert!(!f.target.is_empty() && !f.client.is_empty());
                proptest::prop_assert!(parse_time(kind, f.time).is_some());
            }
        }
    }
}
