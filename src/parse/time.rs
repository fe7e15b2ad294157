//! Converts the access log's `[%t]` timestamp (`18/Feb/2019:10:00:01 +0100`) to Unix seconds,
//! and xferlog's `ctime` time (`Sun Nov 29 21:26:01 2026`), and Unix seconds back to RFC 3339
//! text for reports.
//! Owns the calendar arithmetic (integer days-from-civil, no tables, no allocation on the parse
//! side) and the source's fixed [`UtcOffset`] for timestamps written without a zone.
//! Never consults the system clock or time zone database: the offset written in the log is the
//! truth; only a zone-less timestamp takes the source's configured offset.

use std::fmt;

/// Length of a CLF timestamp: `dd/Mon/yyyy:HH:MM:SS ±hhmm`.
pub const CLF_TIME_LEN: usize = 26;

/// Length of a CLF timestamp without a zone: `dd/Mon/yyyy:HH:MM:SS`.
pub const CLF_LOCAL_TIME_LEN: usize = 20;

/// A fixed offset from UTC, for logs whose timestamps carry no zone (`[27/Jun/2013:11:55:44]`).
/// A source's `timezone` setting; UTC unless configured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UtcOffset {
    /// Seconds east of UTC, within ±23:59.
    seconds: i32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid time zone {0:?} (expected UTC, GMT, Z or a fixed offset like +02:00 or -0530)")]
pub struct UtcOffsetError(pub String);

impl UtcOffset {
    pub const UTC: UtcOffset = UtcOffset { seconds: 0 };

    /// `UTC`, `GMT`, `Z` (any case), or `±hh:mm` / `±hhmm` / `±hh` up to ±23:59.
    pub fn parse(text: &str) -> Result<UtcOffset, UtcOffsetError> {
        let err = || UtcOffsetError(text.to_string());
        let trimmed = text.trim();
        if ["utc", "gmt", "z"].iter().any(|name| trimmed.eq_ignore_ascii_case(name)) {
            return Ok(UtcOffset::UTC);
        }
        let (sign, digits) = match trimmed.as_bytes() {
            [b'+', rest @ ..] => (1, rest),
            [b'-', rest @ ..] => (-1, rest),
            _ => return Err(err()),
        };
        let (hours, minutes) = match digits {
            [h1, h2] => (two_digits(*h1, *h2), Some(0)),
            [h1, h2, m1, m2] | [h1, h2, b':', m1, m2] => (two_digits(*h1, *h2), two_digits(*m1, *m2)),
            _ => return Err(err()),
        };
        match (hours, minutes) {
            (Some(h), Some(m)) if h <= 23 && m <= 59 => Ok(UtcOffset { seconds: sign * (h * 3_600 + m * 60) as i32 }),
            _ => Err(err()),
        }
    }

    /// Seconds east of UTC.
    pub fn seconds(self) -> i32 {
        self.seconds
    }
}

impl fmt::Display for UtcOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.seconds == 0 {
            return f.write_str("UTC");
        }
        let sign = if self.seconds < 0 { '-' } else { '+' };
        let abs = self.seconds.unsigned_abs();
        write!(f, "{sign}{:02}:{:02}", abs / 3_600, abs / 60 % 60)
    }
}

/// Parses `dd/Mon/yyyy:HH:MM:SS ±hhmm` into Unix seconds (UTC); a timestamp without a zone,
/// or with `GMT`/`UTC` instead of an offset, is taken as UTC (see [`parse_clf_time_in`]).
///
/// Validates every field: month names are the exact English abbreviations (`Feb`, not `feb`),
/// the day must exist in that month (leap years included), hour < 24, minute < 60,
/// second <= 60 (a leap second counts as the next minute's first second). The offset may have
/// either sign and any size up to `±2359`. Returns `None` on anything else.
pub fn parse_clf_time(s: &[u8]) -> Option<i64> {
    parse_clf_time_in(s, UtcOffset::UTC)
}

/// Like [`parse_clf_time`], but a timestamp written without a zone (`dd/Mon/yyyy:HH:MM:SS`)
/// is local time at `zone`, the source's configured offset. `GMT` and `UTC` after the time
/// are zero offsets.
pub fn parse_clf_time_in(s: &[u8], zone: UtcOffset) -> Option<i64> {
    if s.len() != CLF_TIME_LEN {
        let local = parse_clf_local_time(s.get(..CLF_LOCAL_TIME_LEN)?)?;
        return match &s[CLF_LOCAL_TIME_LEN..] {
            b"" => Some(local - i64::from(zone.seconds)),
            b" GMT" | b" UTC" => Some(local),
            _ => None,
        };
    }
    if s[20] != b' ' {
        return None;
    }
    let local = parse_clf_local_time(&s[..CLF_LOCAL_TIME_LEN])?;
    let offset_sign: i64 = match s[21] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let offset_hours = two_digits(s[22], s[23])?;
    let offset_minutes = two_digits(s[24], s[25])?;
    if offset_hours > 23 || offset_minutes > 59 {
        return None;
    }
    let offset = i64::from(offset_hours) * 3_600 + i64::from(offset_minutes) * 60;
    Some(local - offset_sign * offset)
}

/// `dd/Mon/yyyy:HH:MM:SS` → seconds since the epoch of that wall-clock time, as if UTC.
fn parse_clf_local_time(s: &[u8]) -> Option<i64> {
    if s.len() != CLF_LOCAL_TIME_LEN || s[2] != b'/' || s[6] != b'/' || s[11] != b':' || s[14] != b':' || s[17] != b':'
    {
        return None;
    }
    let day = two_digits(s[0], s[1])?;
    let month = month_number(s[3], s[4], s[5])?;
    let year = i64::from(two_digits(s[7], s[8])?) * 100 + i64::from(two_digits(s[9], s[10])?);
    let hour = two_digits(s[12], s[13])?;
    let minute = two_digits(s[15], s[16])?;
    let second = two_digits(s[18], s[19])?;
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(
        days_from_civil(year, month, day) * 86_400
            + i64::from(hour) * 3_600
            + i64::from(minute) * 60
            + i64::from(second),
    )
}

/// Formats Unix seconds as `2019-02-18T09:00:01Z` (UTC, second precision).
///
/// Years outside 0..=9999 are written with as many digits as they need (and a `-` sign).
pub fn format_rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let second_of_day = unix.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (second_of_day / 3_600, second_of_day / 60 % 60, second_of_day % 60);
    if !(0..=9_999).contains(&year) {
        return format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z");
    }
    // Digit by digit: reports format two times per client, and `format!` costs ten times this.
    let mut text = *b"0000-00-00T00:00:00Z";
    let mut put = |at: usize, width: usize, mut n: i64| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, i64::from(month));
    put(8, 2, i64::from(day));
    put(11, 2, hour);
    put(14, 2, minute);
    put(17, 2, second);
    String::from_utf8_lossy(&text).into_owned()
}

fn two_digits(tens: u8, ones: u8) -> Option<u32> {
    if tens.is_ascii_digit() && ones.is_ascii_digit() {
        Some(u32::from(tens - b'0') * 10 + u32::from(ones - b'0'))
    } else {
        None
    }
}

/// 1..=12 for the exact English abbreviations Apache and nginx write.
fn month_number(a: u8, b: u8, c: u8) -> Option<u32> {
    let month = match [a, b, c] {
        [b'J', b'a', b'n'] => 1,
        [b'F', b'e', b'b'] => 2,
        [b'M', b'a', b'r'] => 3,
        [b'A', b'p', b'r'] => 4,
        [b'M', b'a', b'y'] => 5,
        [b'J', b'u', b'n'] => 6,
        [b'J', b'u', b'l'] => 7,
        [b'A', b'u', b'g'] => 8,
        [b'S', b'e', b'p'] => 9,
        [b'O', b'c', b't'] => 10,
        [b'N', b'o', b'v'] => 11,
        [b'D', b'e', b'c'] => 12,
        _ => return None,
    };
    Some(month)
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days in a month of the proleptic Gregorian calendar (month 1..=12).
pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Inverse of [`days_from_civil`]: (year, month 1..=12, day 1..=31).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

/// RFC 3339 (`2019-02-18T09:00:00Z`, `2019-02-18T10:00:00.5+01:00`; a `+` that arrived as a
/// space from an unencoded query is taken as `+`) → Unix seconds; fractions are dropped.
pub fn parse_rfc3339(s: &[u8]) -> Option<i64> {
    fn digits(s: &[u8]) -> Option<i64> {
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(s.iter().fold(0, |n, &d| n * 10 + i64::from(d - b'0')))
    }
    if s.len() < 20
        || s[4] != b'-'
        || s[7] != b'-'
        || !matches!(s[10], b'T' | b't' | b' ')
        || s[13] != b':'
        || s[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(&s[0..4])?, digits(&s[5..7])?, digits(&s[8..10])?);
    let (hour, minute, second) = (digits(&s[11..13])?, digits(&s[14..16])?, digits(&s[17..19])?);
    let mut rest = &s[19..];
    if let [b'.', tail @ ..] = rest {
        let n = tail.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        rest = &tail[n..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-' | b' '), h1, h2, b':', m1, m2] => {
            let (h, m) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if h > 23 || m > 59 {
                return None;
            }
            let offset = h * 3600 + m * 60;
            if *sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return None,
    };
    if !(1..=12).contains(&month)
        || day < 1
        || day > i64::from(days_in_month(year, month as u32))
        || hour > 23
        || minute > 59
    {
        return None;
    }
    // RFC 3339 allows a leap second (:60); Unix time has none.
    if second > 60 {
        return None;
    }
    Some(days_from_civil(year, month as u32, day as u32) * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset)
}

/// `Sun Nov 29 21:26:01 2026` (FTP xferlog, C `ctime`): 24 bytes.
pub const CTIME_LEN: usize = 24;

/// `Www Mmm dd HH:MM:SS yyyy` (day padded with a blank) as Unix seconds, read as UTC.
pub fn parse_ctime(text: &[u8]) -> Option<i64> {
    let text: &[u8; CTIME_LEN] = text.try_into().ok()?;
    if text[3] != b' ' || text[7] != b' ' || text[10] != b' ' || text[19] != b' ' {
        return None;
    }
    let day_tens = if text[8] == b' ' { b'0' } else { text[8] };
    // Reuse the CLF reader: `dd/Mon/yyyy:HH:MM:SS +0000`.
    let mut clf = *b"00/Jan/0000:00:00:00 +0000";
    clf[0] = day_tens;
    clf[1] = text[9];
    clf[3..6].copy_from_slice(&text[4..7]);
    clf[7..11].copy_from_slice(&text[20..24]);
    clf[12..20].copy_from_slice(&text[11..19]);
    parse_clf_time(&clf)
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_civil_dates() {
        use super::civil_from_days;
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(17_945), (2019, 2, 18));
        assert_eq!(civil_from_days(18_321), (2020, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    use super::*;

    #[test]
    fn parses_valid_timestamps_with_any_offset() {
        let cases: &[(&str, i64)] = &[
            ("01/Jan/1970:00:00:00 +0000", 0),
            ("18/Feb/2019:10:00:01 +0100", 1_550_480_401),
            ("18/Feb/2019:09:00:01 +0000", 1_550_480_401),
            ("18/Feb/2019:03:30:01 -0530", 1_550_480_401),
            ("19/Feb/2019:00:00:01 +1500", 1_550_480_401),
            ("29/Feb/2020:12:00:00 +0000", 1_582_977_600),
            ("29/Feb/2000:00:00:00 +0000", 951_782_400),
            ("31/Dec/1969:23:59:59 +0000", -1),
            ("31/Dec/2016:23:59:60 +0000", 1_483_228_800),
            ("01/Mar/2024:00:00:00 -0000", 1_709_251_200),
        ];
        for (text, want) in cases {
            assert_eq!(parse_clf_time(text.as_bytes()), Some(*want), "{text}");
        }
    }

    #[test]
    fn rejects_out_of_range_or_misshapen_timestamps() {
        let cases = [
            "29/Feb/2019:10:00:01 +0100", // not a leap year
            "29/Feb/1900:10:00:01 +0100", // century, not a leap year
            "31/Apr/2019:10:00:01 +0100",
            "00/Feb/2019:10:00:01 +0100",
            "32/Jan/2019:10:00:01 +0100",
            "18/feb/2019:10:00:01 +0100", // month names are case-sensitive
            "18/FEB/2019:10:00:01 +0100",
            "18/Fev/2019:10:00:01 +0100",
            "18/Feb/2019:24:00:01 +0100",
            "18/Feb/2019:10:60:01 +0100",
            "18/Feb/2019:10:00:61 +0100",
            "18/Feb/2019:10:00:01 +0160",
            "18/Feb/2019:10:00:01 +2400",
            "18/Feb/2019:10:00:01 *0100",
            "18/Feb/2019:10:00:01 0100",
            "18/Feb/2019:10:00:01 +01000",
            "18/Feb/2019 10:00:01 +0100",
            "18/Feb/19:10:00:01 +0100",
            "1/Feb/2019:10:00:01 +0100",
            "18/Feb/2019:10:00:01+0100 ",
            "18/Feb/2019:10:00:01 CET",
            "18/Feb/2019:10:00:01 gmt",
            "18/Feb/2019:10:00:01 ",
            "18/Feb/2019:10:00:0",
            "",
        ];
        for text in cases {
            assert_eq!(parse_clf_time(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn zone_less_timestamps_take_the_source_offset_and_gmt_utc_are_zero() {
        let plus_two = UtcOffset::parse("+02:00").unwrap();
        assert_eq!(parse_clf_time(b"27/Jun/2013:11:55:44"), Some(1_372_334_144));
        assert_eq!(parse_clf_time_in(b"27/Jun/2013:11:55:44", plus_two), Some(1_372_334_144 - 7_200));
        assert_eq!(parse_clf_time_in(b"27/Jun/2013:11:55:44 GMT", plus_two), Some(1_372_334_144));
        assert_eq!(parse_clf_time_in(b"27/Jun/2013:11:55:44 UTC", plus_two), Some(1_372_334_144));
        // A written offset always wins over the configured one.
        assert_eq!(parse_clf_time_in(b"27/Jun/2013:11:55:44 +0000", plus_two), Some(1_372_334_144));
        assert_eq!(parse_clf_time_in(b"31/Jun/2013:11:55:44", plus_two), None);
    }

    #[test]
    fn utc_offsets_parse_and_display() {
        for (text, seconds, shown) in [
            ("UTC", 0, "UTC"),
            ("gmt", 0, "UTC"),
            ("Z", 0, "UTC"),
            ("+02:00", 7_200, "+02:00"),
            ("+0200", 7_200, "+02:00"),
            ("-05:30", -19_800, "-05:30"),
            ("+01", 3_600, "+01:00"),
            ("-00:00", 0, "UTC"),
        ] {
            let offset = UtcOffset::parse(text).unwrap();
            assert_eq!((offset.seconds(), offset.to_string().as_str()), (seconds, shown), "{text}");
        }
        for bad in ["", "CET", "Europe/Stockholm", "+24:00", "+02:60", "2:00", "+2", "+02:0", "+02:00:00"] {
            assert!(UtcOffset::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_rfc3339_in_utc() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_550_480_401), "2019-02-18T09:00:01Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(format_rfc3339(1_582_977_600), "2020-02-29T12:00:00Z");
        // Extremes must not overflow or panic.
        let _ = format_rfc3339(i64::MIN);
        let _ = format_rfc3339(i64::MAX);
    }

    proptest::proptest! {
        /// The digit-by-digit layout is `format!`'s, for every time with a four-digit year.
        #[test]
        fn rfc3339_digits_are_those_format_writes(unix in -62_167_219_200i64..253_402_300_800) {
            let (year, month, day) = civil_from_days(unix.div_euclid(86_400));
            let s = unix.rem_euclid(86_400);
            let want = format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", s / 3_600, s / 60 % 60, s % 60);
            proptest::prop_assert_eq!(format_rfc3339(unix), want);
        }
    }

    #[test]
    fn civil_round_trips_over_four_centuries() {
        for days in -200_000..200_000 {
            let (y, m, d) = civil_from_days(days);
            assert!(d <= days_in_month(y, m));
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
