//! Timestamps as text, without a clock and without a date crate.
//!
//! The core never reads the time: callers pass Unix seconds in. Two spellings are needed:
//! RFC 3339 in UTC (`2024-02-29T08:00:00Z`) for the records and the HTTP API, and WeChat's
//! `yyyyMMddHHmmss` in Beijing time (UTC+8, no daylight saving) for `time_expire` / `time_end`.
//! The calendar arithmetic is Howard Hinnant's `days_from_civil` / `civil_from_days`
//! (proleptic Gregorian), exact for every date these formats can express.

use thiserror::Error;

/// Beijing time is UTC+8 all year (China has had no daylight saving since 1991).
const BEIJING_OFFSET_SECS: u64 = 8 * 3600;

/// 9999-12-31T23:59:59Z: the last instant a four-digit year can spell. Later inputs saturate to
/// it rather than produce a five-digit year that no parser of these formats accepts.
pub const MAX_UNIX_SECS: u64 = 253_402_300_799;

/// A `yyyyMMddHHmmss` string that is not a valid Beijing time (no detail about the input is
/// kept: the message names the rule that failed).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CompactTimeError {
    #[error("time must be 14 digits yyyyMMddHHmmss")]
    Shape,
    #[error("time has an impossible month, day, hour, minute or second")]
    OutOfRange,
    #[error("time is before 1970-01-01T00:00:00Z")]
    BeforeEpoch,
}

/// A broken-down civil time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (month 1..=12, day 1..=31).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400; // [0, 399]
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 }; // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (non-negative here: inputs are Unix seconds).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are tiny and non-negative by construction.
    (year, month as u32, day as u32)
}

fn civil(unix_secs: u64) -> Civil {
    let secs = unix_secs.min(MAX_UNIX_SECS);
    // MAX_UNIX_SECS / 86400 fits an i64 many times over.
    let days = (secs / 86_400) as i64;
    let rem = (secs % 86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    Civil {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: rem % 3600 / 60,
        second: rem % 60,
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// RFC 3339 in UTC with a `Z` and whole seconds, e.g. `2014-09-03T05:15:40Z`.
///
/// Inputs after [`MAX_UNIX_SECS`] saturate to `9999-12-31T23:59:59Z`.
pub fn rfc3339(unix_secs: u64) -> String {
    let c = civil(unix_secs);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// WeChat's `yyyyMMddHHmmss` in Beijing time (UTC+8), e.g. for `time_expire`.
///
/// Inputs whose Beijing time would be after 9999-12-31 23:59:59 saturate to that.
pub fn beijing_compact(unix_secs: u64) -> String {
    let beijing = unix_secs
        .min(MAX_UNIX_SECS - BEIJING_OFFSET_SECS)
        .saturating_add(BEIJING_OFFSET_SECS);
    let c = civil(beijing);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// Parses WeChat's `yyyyMMddHHmmss` Beijing time (e.g. a notification's `time_end`) into Unix
/// seconds. Exactly 14 ASCII digits naming a real calendar date and time; no leap seconds.
pub fn parse_beijing_compact(text: &str) -> Result<u64, CompactTimeError> {
    let utc = compact_civil_secs(text)? - BEIJING_OFFSET_SECS as i64;
    u64::try_from(utc).map_err(|_| CompactTimeError::BeforeEpoch)
}

/// Parses WeChat's `yyyy-MM-dd HH:mm:ss` Beijing time (an APIv2 refund's `success_time`) into
/// Unix seconds: the same time as [`parse_beijing_compact`], with its separators.
pub fn parse_beijing_spaced(text: &str) -> Result<u64, CompactTimeError> {
    let b = text.as_bytes();
    let separators = [(4, b'-'), (7, b'-'), (10, b' '), (13, b':'), (16, b':')];
    if b.len() != 19 || separators.iter().any(|&(i, c)| b[i] != c) {
        return Err(CompactTimeError::Shape);
    }
    let compact: String = text.chars().filter(char::is_ascii_digit).collect();
    parse_beijing_compact(&compact)
}

/// Seconds since 1970-01-01T00:00:00 of the civil time a `yyyyMMddHHmmss` string spells, in
/// whatever zone it is meant in.
fn compact_civil_secs(text: &str) -> Result<i64, CompactTimeError> {
    let b = text.as_bytes();
    if b.len() != 14 || !b.iter().all(u8::is_ascii_digit) {
        return Err(CompactTimeError::Shape);
    }
    let num = |from: usize, to: usize| -> u32 {
        b[from..to]
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    let year = i64::from(num(0, 4));
    let (month, day) = (num(4, 6), num(6, 8));
    let (hour, minute, second) = (num(8, 10), num(10, 12), num(12, 14));
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(CompactTimeError::OutOfRange);
    }
    Ok(days_from_civil(year, month, day) * 86_400 + i64::from(hour * 3600 + minute * 60 + second))
}

/// Parses the RFC 3339 spelling [`rfc3339`] writes (`2014-09-03T05:15:40Z`: UTC, `Z`, whole
/// seconds) back into Unix seconds; other spellings are refused with [`CompactTimeError::Shape`].
pub fn parse_rfc3339(text: &str) -> Result<u64, CompactTimeError> {
    let b = text.as_bytes();
    let shape_ok = b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z';
    if !shape_ok {
        return Err(CompactTimeError::Shape);
    }
    u64::try_from(rfc3339_civil_secs(text)?).map_err(|_| CompactTimeError::BeforeEpoch)
}

/// The civil seconds of the `YYYY-MM-DDTHH:MM:SS` at the start of a (shape-checked) RFC 3339
/// text, in whatever zone it is meant in.
fn rfc3339_civil_secs(text: &str) -> Result<i64, CompactTimeError> {
    let compact: String = [
        &text[0..4],
        &text[5..7],
        &text[8..10],
        &text[11..13],
        &text[14..16],
        &text[17..19],
    ]
    .concat();
    compact_civil_secs(&compact)
}

/// RFC 3339 in Beijing time with its offset, e.g. `2018-06-08T10:34:56+08:00` (APIv3 wants
/// dates so, e.g. `time_expire`).
pub fn rfc3339_beijing(unix_secs: u64) -> String {
    let compact = beijing_compact(unix_secs);
    format!(
        "{}-{}-{}T{}:{}:{}+08:00",
        &compact[0..4],
        &compact[4..6],
        &compact[6..8],
        &compact[8..10],
        &compact[10..12],
        &compact[12..14]
    )
}

/// Parses an RFC 3339 date-time with whole seconds and a `Z` or `±HH:MM` offset (APIv3's
/// `success_time`, `2018-06-08T10:34:56+08:00`) into Unix seconds.
pub fn parse_rfc3339_offset(text: &str) -> Result<u64, CompactTimeError> {
    let b = text.as_bytes();
    if b.len() == 20 {
        return parse_rfc3339(text);
    }
    let shape_ok = b.len() == 25
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && (b[19] == b'+' || b[19] == b'-')
        && b[22] == b':'
        && [20, 21, 23, 24].iter().all(|&i| b[i].is_ascii_digit());
    if !shape_ok {
        return Err(CompactTimeError::Shape);
    }
    let digits = |from: usize| i64::from((b[from] - b'0') * 10 + (b[from + 1] - b'0'));
    let (hours, minutes) = (digits(20), digits(23));
    if hours > 23 || minutes > 59 {
        return Err(CompactTimeError::OutOfRange);
    }
    let offset = (hours * 3600 + minutes * 60) * if b[19] == b'+' { 1 } else { -1 };
    u64::try_from(rfc3339_civil_secs(text)? - offset).map_err(|_| CompactTimeError::BeforeEpoch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spaced_beijing_time_is_the_compact_one_with_separators() {
        assert_eq!(
            parse_beijing_spaced("2024-05-01 16:03:12"),
            parse_beijing_compact("20240501160312")
        );
        assert_eq!(
            parse_beijing_spaced("2024-05-01 16:03:12"),
            Ok(1_714_550_592)
        );
        for bad in [
            "20240501160312",
            "2024-05-01T16:03:12",
            "2024/05/01 16:03:12",
            "2024-05-01 16:03:1",
            "2024-13-01 16:03:12",
            "2024-05-01 16:03:12Z",
        ] {
            assert!(parse_beijing_spaced(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rfc3339_with_offsets() {
        // 2018-06-08T10:34:56+08:00 is 02:34:56Z.
        let t = parse_rfc3339_offset("2018-06-08T10:34:56+08:00").unwrap();
        assert_eq!(rfc3339(t), "2018-06-08T02:34:56Z");
        assert_eq!(rfc3339_beijing(t), "2018-06-08T10:34:56+08:00");
        assert_eq!(parse_rfc3339_offset("2018-06-08T02:34:56Z"), Ok(t));
        assert_eq!(parse_rfc3339_offset("2018-06-07T21:04:56-05:30"), Ok(t));
        for bad in [
            "2018-06-08T10:34:56+0800",
            "2018-06-08 10:34:56+08:00",
            "2018-06-08T10:34:56+24:00",
            "",
        ] {
            assert!(parse_rfc3339_offset(bad).is_err(), "{bad}");
        }
    }

    /// Reference values computed with GNU `date -u -d @SECS` and `TZ=Asia/Shanghai date`.
    const KNOWN: &[(u64, &str, &str)] = &[
        (0, "1970-01-01T00:00:00Z", "19700101080000"),
        (951_782_400, "2000-02-29T00:00:00Z", "20000229080000"),
        (1_709_164_800, "2024-02-29T00:00:00Z", "20240229080000"),
        (2_147_483_647, "2038-01-19T03:14:07Z", "20380119111407"),
        (4_107_456_000, "2100-02-28T00:00:00Z", "21000228080000"),
        (4_107_542_400, "2100-03-01T00:00:00Z", "21000301080000"),
        (1_490_840_662, "2017-03-30T02:24:22Z", "20170330102422"),
        (1_409_721_340, "2014-09-03T05:15:40Z", "20140903131540"),
        (946_656_000, "1999-12-31T16:00:00Z", "20000101000000"),
    ];

    #[test]
    fn known_dates() {
        for &(secs, utc, beijing) in KNOWN {
            assert_eq!(rfc3339(secs), utc, "{secs}");
            assert_eq!(beijing_compact(secs), beijing, "{secs}");
            assert_eq!(parse_beijing_compact(beijing), Ok(secs), "{beijing}");
        }
    }

    #[test]
    fn rfc3339_round_trips() {
        for &(secs, utc, _) in KNOWN {
            assert_eq!(parse_rfc3339(utc), Ok(secs), "{utc}");
        }
        for bad in [
            "",
            "2014-09-03 05:15:40Z",
            "2014-09-03T05:15:40",
            "2014-09-03T05:15:40+08:00",
        ] {
            assert_eq!(parse_rfc3339(bad), Err(CompactTimeError::Shape), "{bad:?}");
        }
        assert_eq!(
            parse_rfc3339("2014-02-30T05:15:40Z"),
            Err(CompactTimeError::OutOfRange)
        );
    }

    #[test]
    fn protocol_s6_time_end() {
        // PROTOCOL.md S6: time_end=20140903131540 (GMT+8).
        assert_eq!(
            parse_beijing_compact("20140903131540").map(rfc3339),
            Ok("2014-09-03T05:15:40Z".to_owned())
        );
    }

    #[test]
    fn leap_years() {
        assert!(is_leap(2000) && is_leap(2024) && is_leap(2400));
        assert!(!is_leap(1900) && !is_leap(2100) && !is_leap(2023));
        assert!(parse_beijing_compact("20240229120000").is_ok());
        assert!(parse_beijing_compact("20000229120000").is_ok());
        assert_eq!(
            parse_beijing_compact("20230229120000"),
            Err(CompactTimeError::OutOfRange)
        );
        assert_eq!(
            parse_beijing_compact("21000229120000"),
            Err(CompactTimeError::OutOfRange)
        );
        // The day after 2024-02-28 is 02-29, the day after 2023-02-28 is 03-01.
        let feb28_2024 = parse_beijing_compact("20240228080000").unwrap();
        assert_eq!(rfc3339(feb28_2024 + 86_400), "2024-02-29T00:00:00Z");
        let feb28_2023 = parse_beijing_compact("20230228080000").unwrap();
        assert_eq!(rfc3339(feb28_2023 + 86_400), "2023-03-01T00:00:00Z");
    }

    #[test]
    fn saturates_instead_of_five_digit_years() {
        assert_eq!(rfc3339(MAX_UNIX_SECS), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(beijing_compact(u64::MAX), "99991231235959");
        assert_eq!(
            parse_beijing_compact("99991231235959"),
            Ok(MAX_UNIX_SECS - BEIJING_OFFSET_SECS)
        );
    }

    #[test]
    fn refuses_bad_compact_times() {
        for bad in [
            "",
            "2014090313154",
            "201409031315400",
            "2014-09-03 13:1",
            "2014090313154a",
            "+2014090313154",
            " 20140903131540",
            "２０１４０９０３１３１５",
        ] {
            assert_eq!(
                parse_beijing_compact(bad),
                Err(CompactTimeError::Shape),
                "{bad:?}"
            );
        }
        for bad in [
            "20141303131540",
            "20140003131540",
            "20140900131540",
            "20140931131540",
            "20140903241540",
            "20140903136040",
            "20140903131560",
        ] {
            assert_eq!(
                parse_beijing_compact(bad),
                Err(CompactTimeError::OutOfRange),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_beijing_compact("19700101075959"),
            Err(CompactTimeError::BeforeEpoch)
        );
        assert_eq!(parse_beijing_compact("19700101080000"), Ok(0));
        assert_eq!(
            parse_beijing_compact("00000101000000"),
            Err(CompactTimeError::BeforeEpoch)
        );
    }

    #[test]
    fn civil_round_trips_every_day_of_four_centuries() {
        // 1970 .. 2370 covers every leap-year rule (including 2000 and 2100, 2200, 2300).
        for days in 0..146_097 {
            let (y, m, d) = civil_from_days(days);
            assert!((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m));
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    proptest! {
        #[test]
        fn beijing_compact_round_trips(secs in 0u64..=MAX_UNIX_SECS - BEIJING_OFFSET_SECS) {
            prop_assert_eq!(parse_beijing_compact(&beijing_compact(secs)), Ok(secs));
        }

        #[test]
        fn rfc3339_has_a_fixed_shape(secs in any::<u64>()) {
            let s = rfc3339(secs);
            prop_assert_eq!(s.len(), 20);
            prop_assert!(s.ends_with('Z'));
        }

        #[test]
        fn parse_never_panics(s in ".{0,20}") {
            let _ = parse_beijing_compact(&s);
        }
    }
}
