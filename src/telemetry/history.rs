//! The last [`MINUTES`] minutes of traffic per caller and per backend — requests, errors and
//! tokens in one bucket per minute — behind the status page's charts. Counted by the very
//! handles `/metrics` counts with ([`super::Counting`] hands them out), so the charts and the
//! metrics never disagree, and the request path pays a few atomic adds, no lookup.
//!
//! Like `/metrics`, this is one per process. Memory is bounded: [`MINUTES`] buckets a series, at
//! most [`SERIES_KEPT`] series of each kind (caller labels and backend names come from the
//! config, so the bound is only reached by a config with that many keys or backends).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// How many minutes the charts show, the current one included.
pub(crate) const MINUTES: usize = 15;
/// Series kept per kind (callers, backends); later ones are not charted.
const SERIES_KEPT: usize = 1024;

/// What a counted increment adds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Requests,
    Errors,
    Tokens,
}

/// Whose series: a caller (by its metric label) or a backend (by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Caller,
    Backend,
}

/// One minute's counts; `index` is the minute (unix seconds / 60) they belong to.
#[derive(Debug, Default)]
struct Minute {
    index: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    tokens: AtomicU64,
}

/// One caller's or backend's minutes, a ring indexed by minute.
#[derive(Debug, Default)]
pub(crate) struct Series {
    minutes: [Minute; MINUTES],
}

/// One minute as shown: its start (unix seconds) and counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Bucket {
    pub(crate) start: i64,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) tokens: u64,
}

/// Every series of the process, by kind and label.
#[derive(Debug, Default)]
pub(crate) struct History {
    callers: Mutex<HashMap<String, Arc<Series>>>,
    backends: Mutex<HashMap<String, Arc<Series>>>,
}

static HISTORY: LazyLock<History> = LazyLock::new(History::default);

/// The process's history.
pub(crate) fn history() -> &'static History {
    &HISTORY
}

/// The current minute (unix seconds / 60).
pub(crate) fn minute_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

impl Series {
    /// Adds `n` to `field` in minute `minute`. The first add of a new minute clears the slot;
    /// an add racing that reset may be lost: the charts are for people, not for limits.
    pub(crate) fn add(&self, field: Field, n: u64, minute: u64) {
        let slot = &self.minutes[(minute % MINUTES as u64) as usize];
        let seen = slot.index.load(Ordering::Acquire);
        if seen != minute
            && slot
                .index
                .compare_exchange(seen, minute, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slot.requests.store(0, Ordering::Relaxed);
            slot.errors.store(0, Ordering::Relaxed);
            slot.tokens.store(0, Ordering::Relaxed);
        }
        let counter = match field {
            Field::Requests => &slot.requests,
            Field::Errors => &slot.errors,
            Field::Tokens => &slot.tokens,
        };
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The [`MINUTES`] minutes up to and including `now` (a minute index), oldest first.
    pub(crate) fn read(&self, now: u64) -> [Bucket; MINUTES] {
        let mut out = [Bucket::default(); MINUTES];
        let first = now.saturating_sub(MINUTES as u64 - 1);
        for (bucket, minute) in out.iter_mut().zip(first..=now) {
            bucket.start = (minute * 60) as i64;
            let slot = &self.minutes[(minute % MINUTES as u64) as usize];
            if slot.index.load(Ordering::Acquire) == minute {
                bucket.requests = slot.requests.load(Ordering::Relaxed);
                bucket.errors = slot.errors.load(Ordering::Relaxed);
                bucket.tokens = slot.tokens.load(Ordering::Relaxed);
            }
        }
        out
    }
}

impl History {
    fn map(&self, kind: Kind) -> &Mutex<HashMap<String, Arc<Series>>> {
        match kind {
            Kind::Caller => &self.callers,
            Kind::Backend => &self.backends,
        }
    }

    /// The series of `label`, made on first use; `None` once [`SERIES_KEPT`] are kept.
    pub(crate) fn series(&self, kind: Kind, label: &str) -> Option<Arc<Series>> {
        let mut map = self
            .map(kind)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = map.get(label) {
            return Some(s.clone());
        }
        if map.len() >= SERIES_KEPT {
            return None;
        }
        let s = Arc::new(Series::default());
        map.insert(label.to_string(), s.clone());
        Some(s)
    }

    /// The last [`MINUTES`] minutes of `label` (all zero when it was never counted).
    pub(crate) fn read(&self, kind: Kind, label: &str, now: u64) -> [Bucket; MINUTES] {
        let map = self
            .map(kind)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(label).map_or_else(
            || {
                let mut empty = [Bucket::default(); MINUTES];
                let first = now.saturating_sub(MINUTES as u64 - 1);
                for (b, minute) in empty.iter_mut().zip(first..=now) {
                    b.start = (minute * 60) as i64;
                }
                empty
            },
            |s| s.read(now),
        )
    }

    /// The labels of `kind` with any count in the last [`MINUTES`] minutes, sorted.
    pub(crate) fn active(&self, kind: Kind, now: u64) -> Vec<String> {
        let map = self
            .map(kind)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut labels: Vec<String> = map
            .iter()
            .filter(|(_, s)| {
                s.read(now)
                    .iter()
                    .any(|b| b.requests + b.errors + b.tokens > 0)
            })
            .map(|(label, _)| label.clone())
            .collect();
        labels.sort();
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_their_minute_and_age_out() {
        let s = Series::default();
        s.add(Field::Requests, 1, 100);
        s.add(Field::Requests, 2, 100);
        s.add(Field::Errors, 1, 100);
        s.add(Field::Tokens, 40, 103);
        let b = s.read(103);
        assert_eq!(b.len(), MINUTES);
        assert_eq!(b[MINUTES - 1].start, 103 * 60);
        assert_eq!(b[MINUTES - 1].tokens, 40);
        assert_eq!(
            (b[MINUTES - 4].requests, b[MINUTES - 4].errors),
            (3, 1),
            "{b:?}"
        );
        // Fifteen minutes later minute 100 is out of the window, and its slot is reused.
        let later = 100 + MINUTES as u64;
        assert!(s.read(later).iter().all(|b| b.requests == 0), "{s:?}");
        s.add(Field::Requests, 5, later);
        let b = s.read(later);
        assert_eq!((b[MINUTES - 1].requests, b[MINUTES - 1].errors), (5, 0));
    }

    #[test]
    fn series_are_bounded_and_only_active_ones_are_listed() {
        let h = History::default();
        for i in 0..SERIES_KEPT {
            assert!(h.series(Kind::Caller, &format!("key:{i}")).is_some());
        }
        assert!(h.series(Kind::Caller, "key:one-too-many").is_none());
        assert!(h.series(Kind::Caller, "key:7").is_some(), "kept ones stay");
        assert!(h.series(Kind::Backend, "primary").is_some());
        let now = 1_000;
        h.series(Kind::Caller, "key:3")
            .unwrap()
            .add(Field::Requests, 1, now);
        assert_eq!(h.active(Kind::Caller, now), ["key:3"]);
        assert!(h.active(Kind::Backend, now).is_empty());
        let empty = h.read(Kind::Backend, "never", now);
        assert_eq!(empty[MINUTES - 1].start, (now * 60) as i64);
    }
}
