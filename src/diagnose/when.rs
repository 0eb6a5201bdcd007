//! Plain-words times for diagnoses: absolute (UTC or local) and relative ("in 42 min", "3 h ago").

use time::format_description::StaticFormatDescription;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

const WITH_OFFSET: StaticFormatDescription = format_description!(
    "[year]-[month]-[day] [hour]:[minute]:[second] [offset_hour sign:mandatory]:[offset_minute]"
);
const UTC: StaticFormatDescription =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");

/// `2025-01-02 10:00:00 UTC`; the raw number when it is out of range.
pub(crate) fn utc(ts: i64) -> String {
    OffsetDateTime::from_unix_timestamp(ts)
        .ok()
        .and_then(|t| t.format(UTC).ok())
        .unwrap_or_else(|| format!("unix time {ts}"))
}

/// `2025-01-02 11:00:00 +01:00` at the given offset; the raw number when it is out of range
/// (in UTC or at that offset).
pub(crate) fn local(ts: i64, offset: UtcOffset) -> String {
    OffsetDateTime::from_unix_timestamp(ts)
        .ok()
        .and_then(|t| t.checked_to_offset(offset)?.format(WITH_OFFSET).ok())
        .unwrap_or_else(|| format!("unix time {ts}"))
}

/// A span of seconds in words: `12 s`, `42 min`, `1 h 20 min`, `3 h`, `5 days`.
pub(crate) fn span(secs: i64) -> String {
    let secs = secs.unsigned_abs();
    match secs {
        0..60 => format!("{secs} s"),
        60..3_600 => format!("{} min", secs / 60),
        3_600..172_800 => {
            let (h, m) = (secs / 3_600, (secs % 3_600) / 60);
            if m == 0 || h >= 10 {
                format!("{h} h")
            } else {
                format!("{h} h {m} min")
            }
        }
        _ => format!("{} days", secs / 86_400),
    }
}

/// `in 42 min` for a moment after `now`, `3 h ago` for one before, `now` when equal.
pub(crate) fn relative(ts: i64, now: i64) -> String {
    let d = ts.saturating_sub(now);
    match d {
        0 => "now".to_string(),
        d if d > 0 => format!("in {}", span(d)),
        d => format!("{} ago", span(d)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_like_plain_words() {
        assert_eq!(span(5), "5 s");
        assert_eq!(span(42 * 60 + 10), "42 min");
        assert_eq!(span(3 * 3_600), "3 h");
        assert_eq!(span(3_600 + 20 * 60), "1 h 20 min");
        assert_eq!(span(12 * 3_600 + 5 * 60), "12 h");
        assert_eq!(span(3 * 86_400), "3 days");
        assert_eq!(span(-90), "1 min");
    }

    #[test]
    fn relative_times_say_in_or_ago() {
        assert_eq!(relative(1_000 + 42 * 60, 1_000), "in 42 min");
        assert_eq!(relative(1_000, 1_000 + 3 * 3_600), "3 h ago");
        assert_eq!(relative(7, 7), "now");
        assert_eq!(
            relative(i64::MIN, i64::MAX),
            format!("{} ago", span(i64::MAX))
        );
    }

    #[test]
    fn absolute_times_in_utc_and_local() {
        assert_eq!(utc(1_735_812_000), "2025-01-02 10:00:00 UTC");
        let cet = UtcOffset::from_hms(1, 0, 0).unwrap();
        assert_eq!(local(1_735_812_000, cet), "2025-01-02 11:00:00 +01:00");
        assert_eq!(utc(i64::MAX), format!("unix time {}", i64::MAX));
    }
}
