//! `xsd:dateTime` values as vim25 sends them (`2026-03-01T12:00:00.123456Z`,
//! `2026-03-01T14:00:00+02:00`; vcsim writes nanoseconds) read as [`SystemTime`]s.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses `YYYY-MM-DDThh:mm:ss[.fraction][Z|±hh:mm]`; a value without a zone is UTC (vCenter
/// always writes one). `None` for anything else.
pub(crate) fn parse(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (date, time) = s.split_once('T')?;
    let (year, month, day) = parse_date(date)?;
    let (clock, offset_secs) = split_zone(time)?;
    let (hms, fraction) = match clock.split_once('.') {
        Some((hms, f)) => (hms, Some(f)),
        None => (clock, None),
    };
    let mut parts = hms.split(':');
    let hour = number(parts.next()?, 2)?;
    let minute = number(parts.next()?, 2)?;
    let second = number(parts.next()?, 2)?;
    if parts.next().is_some() || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let nanos = match fraction {
        Some(f) => fraction_nanos(f)?,
        None => 0,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_secs;
    let at = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))?
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))?
    };
    at.checked_add(Duration::from_nanos(nanos))
}

/// `YYYY-MM-DD` with a real day of that month.
fn parse_date(date: &str) -> Option<(i64, u32, u32)> {
    let mut parts = date.split('-');
    let year = i64::from(number(parts.next()?, 4)?);
    let month = number(parts.next()?, 2)?;
    let day = number(parts.next()?, 2)?;
    if parts.next().is_some() || !(1..=12).contains(&month) {
        return None;
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    (1..=days_in_month)
        .contains(&day)
        .then_some((year, month, day))
}

/// Splits the time of day from its zone: `Z`, `±hh:mm` (as seconds east of UTC) or none.
fn split_zone(time: &str) -> Option<(&str, i64)> {
    if let Some(clock) = time.strip_suffix('Z') {
        return Some((clock, 0));
    }
    let Some(at) = time.rfind(['+', '-']) else {
        return Some((time, 0));
    };
    let (clock, zone) = time.split_at(at);
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let (h, m) = zone[1..].split_once(':')?;
    let (h, m) = (number(h, 2)?, number(m, 2)?);
    if h > 23 || m > 59 {
        return None;
    }
    Some((clock, sign * i64::from(h * 3600 + m * 60)))
}

/// Exactly `width` ASCII digits.
fn number(s: &str, width: usize) -> Option<u32> {
    (s.len() == width && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// A decimal fraction of a second (1 to 9 digits are kept, more are cut) as nanoseconds.
fn fraction_nanos(f: &str) -> Option<u64> {
    if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let kept = &f[..f.len().min(9)];
    let n: u64 = kept.parse().ok()?;
    Some(n * 10u64.pow(9 - u32::try_from(kept.len()).ok()?))
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> Option<i64> {
        parse(s).map(|t| match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).expect("secs"),
            Err(e) => -i64::try_from(e.duration().as_secs()).expect("secs"),
        })
    }

    #[test]
    fn utc_offsets_and_fractions() {
        assert_eq!(secs("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(secs("2000-03-01T00:00:00Z"), Some(951_868_800));
        assert_eq!(secs("2024-02-29T12:30:15Z"), Some(1_709_209_815));
        assert_eq!(
            secs("2024-02-29T14:30:15+02:00"),
            secs("2024-02-29T12:30:15Z")
        );
        assert_eq!(
            secs("2024-02-29T07:00:15-05:30"),
            secs("2024-02-29T12:30:15Z")
        );
        assert_eq!(secs("2024-02-29T12:30:15"), secs("2024-02-29T12:30:15Z"));
        assert_eq!(secs("1969-12-31T23:59:59Z"), Some(-1));
        let t = parse("2026-03-01T12:00:00.123456789Z").expect("nanos");
        let d = t.duration_since(UNIX_EPOCH).expect("after");
        assert_eq!(d.subsec_nanos(), 123_456_789);
        let t = parse("2026-03-01T12:00:00.5Z").expect("tenths");
        assert_eq!(
            t.duration_since(UNIX_EPOCH).expect("after").subsec_millis(),
            500
        );
        let t = parse("2026-03-01T12:00:00.1234567891234Z").expect("long fraction");
        assert_eq!(
            t.duration_since(UNIX_EPOCH).expect("after").subsec_nanos(),
            123_456_789
        );
    }

    #[test]
    fn rejects_what_is_not_a_date_time() {
        for bad in [
            "",
            "2024-02-29",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+2:00",
            "24-01-01T00:00:00Z",
            "yesterday",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
