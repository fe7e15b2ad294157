//! Reads FTP `xferlog` lines (vsftpd with `xferlog_std_format=YES`, proftpd, wu-ftpd): one
//! transfer per line, `Sun Nov 29 21:26:01 2026 1 127.0.0.1 600 /recordings/call.wav b _ o a
//! anon@ ftp 0 * c`. Owns what each xferlog field means to recwatch. Never allocates, locks
//! or syscalls per line.
//!
//! | recwatch | xferlog |
//! |---|---|
//! | client | remote-host |
//! | path | filename (the fields after it are fixed, so a name with blanks stays whole) |
//! | method, status | direction `o` (download): `RETR`, 200 complete / 206 incomplete; `i` (upload): `STOR` 201; `d`: `DELE` 204 |
//! | bytes | file-size |
//! | user (R3) | username for access-mode `r` (a real account); none for `a` (anonymous) and `g` (guest) |
//! | time | current-time, local time of the FTP server (the source's `timezone`) |
//! | transport (R4) | always plain: xferlog cannot tell FTPS from FTP |

use super::plan::{PlannedFields, TimeKind, Transport};
use super::time::{parse_ctime, CTIME_LEN};
use super::SkipReason;

/// Fields after the filename: transfer-type, special-action, direction, access-mode,
/// username, service, authentication-method, authenticated-user-id, completion-status.
const FIXED_AFTER_NAME: usize = 9;

/// Reads one xferlog line.
pub fn parse(line: &[u8]) -> Result<(PlannedFields<'_>, TimeKind), SkipReason> {
    let time = line.get(..CTIME_LEN).ok_or(SkipReason::Malformed)?;
    if parse_ctime(time).is_none() {
        return Err(SkipReason::BadTimestamp);
    }
    let rest = line.get(CTIME_LEN + 1..).ok_or(SkipReason::Malformed)?;
    let mut head = rest.splitn(4, |&b| b == b' ');
    let (_seconds, client, size, after) = match (head.next(), head.next(), head.next(), head.next()) {
        (Some(a), Some(b), Some(c), Some(d)) => (a, b, c, d),
        _ => return Err(SkipReason::Malformed),
    };
    if client.is_empty() {
        return Err(SkipReason::BadClient);
    }
    // The filename is everything up to the last nine fields.
    let mut tail = after.rsplitn(FIXED_AFTER_NAME + 1, |&b| b == b' ');
    let mut fixed: [&[u8]; FIXED_AFTER_NAME] = [&[]; FIXED_AFTER_NAME];
    for slot in fixed.iter_mut().rev() {
        *slot = tail.next().ok_or(SkipReason::Malformed)?;
    }
    let filename = tail.next().filter(|name| !name.is_empty()).ok_or(SkipReason::BadRequestLine)?;
    let [_kind, _action, direction, access_mode, username, _service, _auth, _auth_user, completion] = fixed;
    // completion-status is `c` (complete) or `i` (incomplete); anything else is a cut or
    // garbled line, never a transfer.
    let complete = match completion {
        b"c" => true,
        b"i" => false,
        _ => return Err(SkipReason::Malformed),
    };
    let (method, status): (&[u8], u16) = match (direction, complete) {
        (b"o", true) => (b"RETR", 200),
        (b"o", false) => (b"RETR", 206),
        (b"i", _) => (b"STOR", 201),
        (b"d", _) => (b"DELE", 204),
        _ => return Err(SkipReason::BadStatus),
    };
    let user = match access_mode {
        b"r" => super::dash_is_none(username),
        _ => None,
    };
    let fields = PlannedFields {
        client,
        user,
        time,
        method,
        target: filename,
        status,
        body_bytes: Some(super::plan::parse_count(size)),
        transport: Transport::Plain,
        ..PlannedFields::default()
    };
    Ok((fields, TimeKind::Ctime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vsftpd_anonymous_download() {
        let line = b"Sun Nov 29 21:26:01 2026 1 127.0.0.1 600 /recordings/call.wav b _ o a anon@ ftp 0 * c";
        let (f, kind) = parse(line).unwrap();
        assert_eq!(kind, TimeKind::Ctime);
        assert_eq!(
            (f.client, f.target, f.method, f.status),
            (&b"127.0.0.1"[..], &b"/recordings/call.wav"[..], &b"RETR"[..], 200)
        );
        assert_eq!((f.user, f.body_bytes, f.transport), (None, Some(600), Transport::Plain));
        assert_eq!(parse_ctime(f.time), Some(1_795_987_561));
    }

    #[test]
    fn names_with_blanks_real_users_uploads_and_padded_days() {
        let line = b"Tue Feb  5 09:00:01 2019 3 203.0.113.7 1024 /recordings/my call.wav b _ o r alice ftp 0 * i";
        let (f, _) = parse(line).unwrap();
        assert_eq!((f.target, f.status, f.user), (&b"/recordings/my call.wav"[..], 206, Some(&b"alice"[..])));
        assert_eq!(parse_ctime(f.time), Some(1_549_357_201));
        let upload = b"Tue Feb  5 09:00:01 2019 3 203.0.113.7 1024 /incoming/x.wav b _ i g guest ftp 0 * c";
        assert_eq!(parse(upload).unwrap().0.status, 201);
        for bad in [&b"Tue Feb  5 09:00:01 2019 3 203.0.113.7"[..], b"not a line at all", b""] {
            assert!(parse(bad).is_err());
        }
    }

    #[test]
    fn a_line_cut_before_its_completion_status_is_no_incomplete_download() {
        let cut = b"Sun Nov 29 21:26:01 2026 1 127.0.0.1 600 /recordings/call.wav b _ o a anon@ ftp 0 * ";
        assert_eq!(parse(cut).map(|_| ()), Err(SkipReason::Malformed));
    }
}
