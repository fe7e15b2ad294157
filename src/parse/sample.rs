//! Guesses a log's format from its first lines (`recwatch check --sample FILE`): tries every
//! format recwatch knows on each line and ranks them by the share they parse, so an operator
//! gets a ready `[[source]]` snippet instead of reading this project's docs first.
//! Owns the candidate list and the ranking. Never decides for the daemon: a source's format is
//! always what its config says.

use std::sync::Arc;

use super::json::{looks_like_json, JsonPlan, JsonProducer};
use super::plan::FieldPlan;
use super::samba::{SambaPlan, FORMAT_NAME as SAMBA_FORMAT};
use super::{LineFormat, LogFormat, SkipReason};

/// nginx's `main` (the default `log_format` of nginx.org's packages).
const NGINX_MAIN: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for""#;

/// The `full_audit:prefix` the README recommends: user, client, client machine, share.
const SAMBA_PREFIX_WITH_SHARE: &str = "%u|%I|%m|%S";

/// One candidate's result on the sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// The `[[source]]` line that selects it (`format = "combined"`, `nginx_log_format = '…'`).
    pub config_line: String,
    /// Lines it parsed with a client, a request and a status.
    pub parsed: usize,
    /// How many of them carried every field the format has (a combined line must have its
    /// referer and user agent: a `common` line is not `combined`).
    pub complete: usize,
}

/// Every format recwatch knows, as `(config line, format)`, most specific first (a tie in the
/// ranking goes to the earlier one).
fn candidates() -> Vec<(String, LineFormat)> {
    let mut all: Vec<(String, LineFormat)> = Vec::new();
    if let Ok(plan) = FieldPlan::nginx(NGINX_MAIN) {
        all.push((format!("nginx_log_format = '{NGINX_MAIN}'"), LineFormat::Plan(Arc::new(plan))));
    }
    for format in [LogFormat::VhostCombined, LogFormat::Combined, LogFormat::VhostCommon, LogFormat::Common] {
        all.push((format!("format = \"{}\"", format.as_str()), LineFormat::Named(format)));
    }
    all.push(("format = \"xferlog\"".to_string(), LineFormat::Xferlog));
    all.push(("format = \"s3\"".to_string(), LineFormat::Plan(Arc::new(FieldPlan::s3()))));
    // Samba's default `full_audit:prefix`, and the one the README recommends.
    for (prefix, config_line) in [
        (SambaPlan::DEFAULT_PREFIX, format!("format = \"{SAMBA_FORMAT}\"")),
        (SAMBA_PREFIX_WITH_SHARE, format!("format = \"{SAMBA_FORMAT}\"\nsamba_prefix = \"{SAMBA_PREFIX_WITH_SHARE}\"")),
    ] {
        if let Ok(plan) = SambaPlan::new(prefix, SambaPlan::DEFAULT_GUEST_ACCOUNT) {
            all.push((config_line, LineFormat::Samba(Arc::new(plan))));
        }
    }
    for (producer, name) in JsonProducer::ALL {
        if let Ok(plan) = JsonPlan::new(producer, &[]) {
            all.push((format!("format = \"{name}\""), LineFormat::Json(Arc::new(plan))));
        }
    }
    all
}

/// Each candidate's share of `lines`, best first: by complete lines, then parsed lines.
pub fn rank(lines: &[&[u8]]) -> Vec<Candidate> {
    let json_sample = lines.iter().any(|l| looks_like_json(l));
    let mut results: Vec<Candidate> = candidates()
        .into_iter()
        .filter(|(_, format)| matches!(format, LineFormat::Json(_)) == json_sample)
        .map(|(config_line, format)| {
            let mut candidate = Candidate { config_line, parsed: 0, complete: 0 };
            for line in lines {
                let complete = match format.parse(line) {
                    Ok(access) => match &format {
                        LineFormat::Named(LogFormat::Combined | LogFormat::VhostCombined) => tail_is(access.tail, 2),
                        LineFormat::Named(LogFormat::Common | LogFormat::VhostCommon) => tail_is(access.tail, 0),
                        _ => true,
                    },
                    // Read whole, and recording no access (a Samba `connect`, `close`, …).
                    Err(SkipReason::NoAccess) => true,
                    Err(_) => continue,
                };
                candidate.parsed += 1;
                candidate.complete += usize::from(complete);
            }
            candidate
        })
        .collect();
    // Stable: ties keep the most specific candidate first.
    results.sort_by_key(|c| std::cmp::Reverse((c.complete, c.parsed)));
    results
}

/// Whether a named format's tail (after the status) is the bytes field and exactly `quoted`
/// quoted fields, nothing more: the named parsers accept any tail, so a custom format would
/// otherwise pass for `common` or `combined`.
fn tail_is(tail: &[u8], quoted: usize) -> bool {
    let mut end = tail.iter().position(|&b| b == b' ').unwrap_or(tail.len());
    if end == 0 || !(tail[..end] == *b"-" || tail[..end].iter().all(u8::is_ascii_digit)) {
        return false;
    }
    for _ in 0..quoted {
        match super::quoted_after_space(tail, end) {
            Some((_, close)) => end = close + 1,
            None => return false,
        }
    }
    end == tail.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn best(text: &str) -> Candidate {
        let lines: Vec<&[u8]> = text.lines().map(str::as_bytes).collect();
        rank(&lines).remove(0)
    }

    #[test]
    fn picks_the_format_each_sample_was_written_in() {
        let combined = "1.2.3.4 - - [18/Feb/2019:10:00:01 +0100] \"GET /a HTTP/1.1\" 200 5 \"-\" \"curl\"\n";
        assert_eq!(best(combined).config_line, "format = \"combined\"");
        let common = "1.2.3.4 - - [18/Feb/2019:10:00:01 +0100] \"GET /a HTTP/1.1\" 200 5\n";
        assert_eq!(best(common).config_line, "format = \"common\"");
        let main = "1.2.3.4 - - [18/Feb/2019:10:00:01 +0100] \"GET /a HTTP/1.1\" 200 5 \"-\" \"curl\" \"9.9.9.9\"\n";
        assert!(best(main).config_line.starts_with("nginx_log_format"));
        let vhost =
            "files.example:443 1.2.3.4 - - [18/Feb/2019:10:00:01 +0100] \"GET /a HTTP/1.1\" 200 5 \"-\" \"x\"\n";
        assert_eq!(best(vhost).config_line, "format = \"vhost_combined\"");
        let caddy = r#"{"ts":1646861401.5,"request":{"remote_ip":"1.2.3.4","method":"GET","uri":"/a","headers":{}},"status":200,"size":5}"#;
        assert_eq!(best(caddy).config_line, "format = \"caddy_json\"");
        let traefik = r#"{"ClientHost":"1.2.3.4","StartUTC":"2019-02-18T09:00:01Z","RequestMethod":"GET","RequestPath":"/a","DownstreamStatus":200}"#;
        assert_eq!(best(traefik).config_line, "format = \"traefik_json\"");
        let custom =
            "1.2.3.4 files.example http [18/Feb/2019:10:00:01 +0100] \"GET /a HTTP/1.1\" 200 5 rt=0.1 \"-\" \"x\"\n";
        assert_eq!(best(custom).complete, 0);
        let xferlog = "Sun Nov 29 21:26:01 2026 1 127.0.0.1 600 /recordings/call.wav b _ o a anon@ ftp 0 * c\n";
        assert_eq!(best(xferlog).config_line, "format = \"xferlog\"");
        let s3 = r#"79a59df900b949e5 BUCKET [06/Feb/2019:00:00:40 +0000] 203.0.113.50 - 891CE47D2EXAMPLE REST.GET.OBJECT recordings/call-1.wav "GET /BUCKET/recordings/call-1.wav HTTP/1.1" 200 - 48213 48213 21 20 "-" "curl/7.64.0" - Ah3uDhT0z9= - - - s3.us-west-1.amazonaws.com - - -"#;
        assert_eq!(best(s3).config_line, "format = \"s3\"");
        let samba = "2026-11-29T22:20:09.22+00:00 nas smbd[21760]:   nobody|127.0.0.1|vm|rec|connect|ok|rec\n\
                     2026-11-29T22:20:09.23+00:00 nas smbd[21760]:   nobody|127.0.0.1|vm|rec|pread_recv|ok|/r/x.wav\n";
        assert_eq!(best(samba).config_line, "format = \"samba_full_audit\"\nsamba_prefix = \"%u|%I|%m|%S\"");
        let samba_default = "2026-11-29T22:20:09Z nas smbd_audit: alice|10.1.2.3|pread_recv|ok|/r/x.wav\n";
        assert_eq!(best(samba_default).config_line, "format = \"samba_full_audit\"");
        let neither = "Nov 29 20:49:00 host kernel: nothing to see\n";
        assert_eq!(best(neither).parsed, 0);
    }
}
