//! The arithmetic of limits, as pure functions: a 60 s sliding window of per-second buckets,
//! and calendar quota periods in UTC.

use crate::config::QuotaPeriod;
use std::collections::VecDeque;

/// Length of the window of `requests_per_minute` and `tokens_per_minute`, in seconds.
pub const WINDOW_SECS: i64 = 60;

/// Amounts used in the last [`WINDOW_SECS`] seconds, one bucket per second (at most 60).
#[derive(Debug, Clone)]
pub struct Window {
    /// Made with room for a whole window, so counting never allocates.
    buckets: VecDeque<(i64, u64)>,
}

impl Default for Window {
    fn default() -> Window {
        Window {
            buckets: VecDeque::with_capacity(WINDOW_SECS as usize),
        }
    }
}

impl Window {
    /// Drops the buckets that left the window ending at `now` (unix seconds).
    fn prune(&mut self, now: i64) {
        while self
            .buckets
            .front()
            .is_some_and(|(sec, _)| *sec <= now - WINDOW_SECS)
        {
            self.buckets.pop_front();
        }
    }

    /// What was used in the window ending at `now`.
    pub fn used(&mut self, now: i64) -> u64 {
        self.prune(now);
        self.buckets
            .iter()
            .fold(0u64, |sum, (_, n)| sum.saturating_add(*n))
    }

    /// Adds `amount` at `now`.
    pub fn add(&mut self, now: i64, amount: u64) {
        self.prune(now);
        match self.buckets.back_mut() {
            Some((sec, n)) if *sec >= now => *n = n.saturating_add(amount),
            _ => self.buckets.push_back((now, amount)),
        }
    }

    /// Takes back up to `amount` counted at second `at` (a reservation released), if that
    /// second is still in the window ending at `now`; a second the window already forgot has
    /// nothing left to take back. Never counts below zero.
    pub fn release(&mut self, at: i64, amount: u64, now: i64) {
        self.prune(now);
        if at <= now - WINDOW_SECS {
            return;
        }
        // Counted in the bucket of `at`, or a later one when the clock stepped back meanwhile.
        if let Some((_, n)) = self.buckets.iter_mut().find(|(sec, _)| *sec >= at) {
            *n = n.saturating_sub(amount);
        }
    }

    /// Seconds from `now` until the window's use falls below `limit` (at least 1).
    pub fn retry_after(&mut self, now: i64, limit: u64) -> u64 {
        self.prune(now);
        retry_after(self.buckets.iter().copied(), now, limit)
    }
}

/// Seconds from `now` until the use in `buckets` (oldest first, `(second, amount)`) falls
/// below `limit` as buckets leave the window; at least 1.
pub fn retry_after(buckets: impl Iterator<Item = (i64, u64)> + Clone, now: i64, limit: u64) -> u64 {
    // Summed wide: 60 buckets of any u64 fit, so no sum saturates and misleads the subtraction.
    let mut used: u128 = buckets.clone().map(|(_, n)| u128::from(n)).sum();
    for (sec, n) in buckets {
        used -= u128::from(n);
        if used < u128::from(limit) {
            return (sec + WINDOW_SECS - now).max(1) as u64;
        }
    }
    1
}

/// The start and end (unix seconds, UTC) of the quota period holding `now`.
pub fn period_bounds(period: QuotaPeriod, now: i64) -> (i64, i64) {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(now) else {
        return (now, now + 3600);
    };
    let date = t.date();
    let midnight = |d: time::Date| d.midnight().assume_utc().unix_timestamp();
    match period {
        QuotaPeriod::Hour => {
            let start = now - now.rem_euclid(3600);
            (start, start + 3600)
        }
        QuotaPeriod::Day => {
            let start = midnight(date);
            (start, start + 86_400)
        }
        QuotaPeriod::Week => {
            let back = i64::from(date.weekday().number_days_from_monday());
            let start = midnight(date) - back * 86_400;
            (start, start + 7 * 86_400)
        }
        QuotaPeriod::Month => {
            let first = date.replace_day(1).unwrap_or(date);
            let next = match first.month() {
                time::Month::December => first
                    .replace_year(first.year() + 1)
                    .and_then(|d| d.replace_month(time::Month::January)),
                m => first.replace_month(m.next()),
            }
            .unwrap_or(first);
            (midnight(first), midnight(next))
        }
    }
}

/// A unix time as RFC 3339 (UTC).
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(t: time::OffsetDateTime) -> i64 {
        t.unix_timestamp()
    }

    #[test]
    fn the_window_forgets_after_sixty_seconds_and_says_when_budget_frees() {
        let mut w = Window::default();
        w.add(1000, 30);
        w.add(1010, 20);
        w.add(1010, 5);
        assert_eq!(w.used(1010), 55);
        assert_eq!(w.used(1059), 55);
        // Under a limit of 50, the 30 from second 1000 must leave: at 1060.
        assert_eq!(w.retry_after(1020, 50), 40);
        // Under a limit of 10, both buckets must leave: the second at 1070.
        assert_eq!(w.retry_after(1020, 10), 50);
        assert_eq!(w.used(1060), 25, "second 1000 left the window");
        assert_eq!(w.used(1070), 0);
        assert_eq!(w.retry_after(1070, 1), 1, "never less than a second");
    }

    #[test]
    fn a_release_takes_back_from_the_second_it_was_counted_in_while_the_window_holds_it() {
        let mut w = Window::default();
        w.add(1000, 30);
        w.add(1010, 20);
        w.release(1000, 25, 1020);
        assert_eq!(w.used(1020), 25);
        assert_eq!(w.retry_after(1020, 20), 50, "second 1010 holds the rest");
        w.release(1010, 100, 1020);
        assert_eq!(w.used(1020), 5, "never below zero");
        // Forgotten by the window: nothing to take back.
        w.add(1080, 7);
        w.release(1010, 7, 1080);
        assert_eq!(w.used(1080), 7);
    }

    #[test]
    fn a_window_never_grows_past_the_room_it_was_made_with() {
        let mut w = Window::default();
        let room = w.buckets.capacity();
        assert!(room >= WINDOW_SECS as usize);
        // Every second for ten minutes, some seconds twice, and a clock that steps back.
        for t in 0..600 {
            w.add(1000 + t, 1);
            w.add(1000 + t, 1);
            w.add(990 + t, 1);
        }
        assert_eq!(w.buckets.len(), WINDOW_SECS as usize);
        assert_eq!(w.buckets.capacity(), room);
    }

    #[test]
    fn quota_periods_are_calendar_periods_in_utc() {
        use time::macros::datetime;
        let now = unix(datetime!(2026-03-18 13:45:10 UTC)); // a Wednesday
        let b = |p| period_bounds(p, now);
        assert_eq!(
            b(QuotaPeriod::Hour),
            (
                unix(datetime!(2026-03-18 13:00 UTC)),
                unix(datetime!(2026-03-18 14:00 UTC))
            )
        );
        assert_eq!(
            b(QuotaPeriod::Day),
            (
                unix(datetime!(2026-03-18 0:00 UTC)),
                unix(datetime!(2026-03-19 0:00 UTC))
            )
        );
        assert_eq!(
            b(QuotaPeriod::Week),
            (
                unix(datetime!(2026-03-16 0:00 UTC)),
                unix(datetime!(2026-03-23 0:00 UTC))
            )
        );
        assert_eq!(
            b(QuotaPeriod::Month),
            (
                unix(datetime!(2026-03-01 0:00 UTC)),
                unix(datetime!(2026-04-01 0:00 UTC))
            )
        );
        let dec = unix(datetime!(2026-12-31 23:59:59 UTC));
        assert_eq!(
            period_bounds(QuotaPeriod::Month, dec),
            (
                unix(datetime!(2026-12-01 0:00 UTC)),
                unix(datetime!(2027-01-01 0:00 UTC))
            )
        );
        // A boundary belongs to the period it starts.
        let midnight = unix(datetime!(2026-03-23 0:00 UTC));
        assert_eq!(period_bounds(QuotaPeriod::Week, midnight).0, midnight);
        assert_eq!(rfc3339(midnight), "2026-03-23T00:00:00Z");
    }
}
