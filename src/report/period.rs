//! The period a report examines (`--since/--until`): RFC 3339 times or spans back from now
//! (`7d`, `12h`, `30m`, `2w`, `90s`). Owns how those are written and read. Never reads the
//! clock itself: `now` is passed in, so tests own time.

use serde::Serialize;

pub use crate::detect::scope::Period;
use crate::parse::time::{format_rfc3339, parse_rfc3339};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{flag} {value:?}: expected an RFC 3339 time (2019-02-18T09:00:00Z) or a span back from now (7d, 12h, 30m, 2w, 90s)")]
pub struct PeriodError {
    pub flag: &'static str,
    pub value: String,
}

/// How a period is shown in a report.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PeriodText {
    pub since: Option<String>,
    pub until: Option<String>,
}

/// The period of `--since` and `--until` as given (relative spans counted back from `now`).
pub fn parse_period(since: Option<&str>, until: Option<&str>, now: i64) -> Result<Period, PeriodError> {
    let read = |flag: &'static str, v: Option<&str>| {
        v.map(|v| parse_point(v, now).ok_or_else(|| PeriodError { flag, value: v.to_string() })).transpose()
    };
    Ok(Period { since: read("--since", since)?, until: read("--until", until)? })
}

/// How `period` is shown.
pub fn period_text(period: &Period) -> PeriodText {
    PeriodText { since: period.since.map(format_rfc3339), until: period.until.map(format_rfc3339) }
}

/// One end of a period: an RFC 3339 time, or `N` + unit (s, m, h, d, w) before `now`.
fn parse_point(v: &str, now: i64) -> Option<i64> {
    let v = v.trim();
    if let Some(t) = parse_rfc3339(v.as_bytes()) {
        return Some(t);
    }
    let unit = match v.as_bytes().last()? {
        b's' => 1,
        b'm' => 60,
        b'h' => 3_600,
        b'd' => 86_400,
        b'w' => 7 * 86_400,
        _ => return None,
    };
    let n: i64 = v[..v.len() - 1].parse().ok().filter(|n| *n >= 0)?;
    now.checked_sub(n.checked_mul(unit)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_and_spans_back_from_now() {
        let now = 1_550_480_400; // 2019-02-18T09:00:00Z
        let p = parse_period(Some("7d"), Some("2019-02-18T08:00:00Z"), now).unwrap();
        assert_eq!(p, Period { since: Some(now - 7 * 86_400), until: Some(now - 3_600) });
        assert!(p.contains(now - 7 * 86_400) && !p.contains(now - 3_600) && !p.contains(now - 7 * 86_400 - 1));
        assert_eq!(parse_period(Some("90s"), None, now).unwrap().since, Some(now - 90));
        assert_eq!(parse_period(None, Some("2w"), now).unwrap().until, Some(now - 14 * 86_400));
        assert_eq!(period_text(&p).until.as_deref(), Some("2019-02-18T08:00:00Z"));
        assert!(Period::default().contains(i64::MIN));
    }

    #[test]
    fn bad_points_name_the_flag() {
        for bad in ["7", "d", "-3d", "7y", "2019-02-18", "99999999999999999999d", ""] {
            let e = parse_period(Some(bad), None, 0).unwrap_err();
            assert_eq!(e.flag, "--since", "{bad}");
        }
        assert_eq!(parse_period(None, Some("x"), 0).unwrap_err().flag, "--until");
    }
}
