//! Dates as the seed APIs write them, parsed and formatted the same way in
//! templates and in Lua scripts.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// Parses a date or date-time: RFC 3339 (`2024-05-01T10:00:00+03:00`),
/// `2024-05-01 10:00:00`, `2024-05-01`, `01.05.2024 10:00`, `01.05.2024`,
/// or Unix seconds. Times without a zone are taken as UTC.
pub fn parse(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.with_timezone(&Utc));
    }
    // `2022-01-01T21:00:00+0000`, as Roistat writes it.
    for fmt in ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%z"] {
        if let Ok(d) = DateTime::parse_from_str(t, fmt) {
            return Some(d.with_timezone(&Utc));
        }
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
        "%d.%m.%Y %H:%M:%S",
        "%d.%m.%Y %H:%M",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, fmt) {
            return Some(Utc.from_utc_datetime(&d));
        }
    }
    for fmt in ["%Y-%m-%d", "%d.%m.%Y"] {
        if let Ok(d) = NaiveDate::parse_from_str(t, fmt) {
            return d.and_hms_opt(0, 0, 0).map(|d| Utc.from_utc_datetime(&d));
        }
    }
    if let Ok(secs) = t.parse::<i64>() {
        return DateTime::from_timestamp(secs, 0);
    }
    None
}

/// Formats a date with strftime directives (`%Y-%m-%d %H:%M:%S`); `None` when
/// the format has a directive chrono does not know.
/// The date `by` earlier, written in the same shape as `text`
/// (`2024-05-01 10:00:00` stays a space-separated date-time). Text that is
/// not a date comes back unchanged.
pub fn shift_back(text: &str, by: std::time::Duration) -> String {
    const SHAPES: &[&str] = &[
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.3fZ",
        "%Y-%m-%dT%H:%M:%SZ",
        "%Y-%m-%dT%H:%M:%S%z",
        "%Y-%m-%dT%H:%M:%S%:z",
        "%Y-%m-%d",
        "%d.%m.%Y",
    ];
    // A number is an ID or a count here, not a date.
    let Some(date) = parse(text).filter(|_| text.trim().parse::<f64>().is_err()) else {
        return text.to_owned();
    };
    let Ok(by) = chrono::Duration::from_std(by) else {
        return text.to_owned();
    };
    let earlier = date - by;
    SHAPES
        .iter()
        .find(|f| format(&date, f).as_deref() == Some(text.trim()))
        .and_then(|f| format(&earlier, f))
        .unwrap_or_else(|| earlier.to_rfc3339())
}

/// A date written with a strftime format.
pub fn format(date: &DateTime<Utc>, fmt: &str) -> Option<String> {
    use std::fmt::Write;
    let mut out = String::new();
    write!(out, "{}", date.format(fmt)).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifting_back_keeps_the_shape() {
        let hour = std::time::Duration::from_secs(3600);
        assert_eq!(shift_back("2024-05-01 00:30:00", hour), "2024-04-30 23:30:00");
        assert_eq!(shift_back("2024-05-01T00:30:00.000Z", hour), "2024-04-30T23:30:00.000Z");
        assert_eq!(shift_back("2024-05-01", hour * 24), "2024-04-30");
        assert_eq!(shift_back("7001", hour), "7001");
    }

    #[test]
    fn parses_the_usual_spellings_to_the_same_instant() {
        let want = parse("2024-05-01T10:00:00Z").unwrap();
        for s in [
            "2024-05-01 10:00:00",
            "2024-05-01T13:00:00+03:00",
            "01.05.2024 10:00",
            "1714557600",
        ] {
            assert_eq!(parse(s), Some(want), "{s}");
        }
        assert_eq!(format(&parse("01.05.2024").unwrap(), "%Y-%m-%d").unwrap(), "2024-05-01");
        assert_eq!(parse("tomorrow"), None);
    }

    #[test]
    fn bad_format_is_none() {
        let d = parse("2024-05-01").unwrap();
        assert_eq!(format(&d, "%Q"), None);
    }
}
