//! Settlements on their way to Redis, off the requests' path: an answer that ends queues its
//! settlement (never waiting, never calling Redis); every [`FLUSH_EVERY`], and at shutdown, what
//! is queued is merged (one account's settlements of one second and direction add up) and sent
//! in one pipelined round trip of settlement scripts.
//!
//! An admission that got no answer in time may still reach Redis later (a Redis that stalled,
//! then caught up): it is queued here too, as a [`Void`], which undoes it if Redis counted it,
//! or keeps it from counting if it arrives after.
//!
//! What a crash can lose is bounded: the settlements queued since the last batch (at most
//! [`FLUSH_EVERY`] of them), and, while Redis is away, those waiting to be sent again (at most
//! [`RETRY_FOR`] old, at most [`MAX_QUEUED`]). A lost settlement leaves its reservation counted
//! (until its 60 s window passes, and in its quota and budget periods) instead of what the
//! answer used. Each batch item carries a marker Redis keeps for [`MARKER_SECS`], so a batch
//! sent again after a timeout is never counted twice.

use super::super::Settlement;
use super::super::account::{Account, BudgetKey};
use super::super::reservation::Amounts;
use crate::config::KeyBudget;
use crate::fast_hash::FastMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often queued settlements are sent.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// The most settlements waiting at once; more are dropped (and counted).
pub const MAX_QUEUED: usize = 100_000;
/// How long Redis keeps the markers of settlements and admissions (seconds).
pub const MARKER_SECS: u64 = 60;
/// How long a batch that failed is sent again; then its items are dropped (and counted).
/// Shorter than [`MARKER_SECS`], so a late retry is still recognised.
pub const RETRY_FOR: Duration = Duration::from_secs(45);

/// The queue of one process.
pub(super) struct Queue {
    waiting: Mutex<Waiting>,
    started: AtomicBool,
    /// This process, in the markers: another replica's markers are never mistaken for ours.
    process: String,
    next: AtomicU64,
    dropped: metrics::Counter,
}

#[derive(Default)]
struct Waiting {
    /// Settlements queued since the last batch.
    new: Vec<Item>,
    /// Admissions given up since the last batch.
    voids: Vec<Void>,
    /// From batches that failed, to send again as they were.
    again: Vec<Sent>,
}

impl Waiting {
    fn len(&self) -> usize {
        self.new.len() + self.voids.len() + self.again.len()
    }
}

/// One settlement of one account: `amounts` added (`add`) or given back at second `at`.
pub(super) struct Item {
    pub(super) account: Account,
    pub(super) at: i64,
    pub(super) add: bool,
    pub(super) amounts: Amounts,
}

/// An admission given up (no answer within the timeout): undone if Redis counted it after all,
/// kept from counting if it comes after. `marker` is the key the admission marked itself with.
pub(super) struct Void {
    pub(super) asked: [Option<(BudgetKey, KeyBudget)>; 2],
    pub(super) at: i64,
    pub(super) reserve: Amounts,
    pub(super) marker: String,
}

/// One call of a batch.
pub(super) enum Call {
    /// A settlement, with the number of its marker.
    Settle {
        item: Item,
        marker: u64,
    },
    Void(Box<Void>),
}

/// A call in a batch, and when it was first sent.
pub(super) struct Sent {
    pub(super) call: Call,
    pub(super) since: Instant,
}

impl Default for Queue {
    fn default() -> Queue {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Queue {
            waiting: Mutex::default(),
            started: AtomicBool::new(false),
            process: format!("{}-{nanos:x}", std::process::id()),
            next: AtomicU64::new(0),
            dropped: metrics::counter!("entra_proxy_limits_settlements_dropped_total"),
        }
    }
}

impl Queue {
    /// Whether this call starts the sending (only the first does).
    pub(super) fn start(&self) -> bool {
        !self.started.swap(true, Ordering::SeqCst)
    }

    /// Queues a settlement: what it gives back (at the second it was reserved) and what it
    /// adds (now), each when there is any.
    pub(super) fn push(&self, account: &Account, s: Settlement) {
        let mut w = self.lock();
        for (at, add, amounts) in [(s.at, false, s.release), (s.now, true, s.charge)] {
            if amounts.is_zero() {
                continue;
            }
            if w.len() >= MAX_QUEUED {
                self.dropped.increment(1);
                continue;
            }
            w.new.push(Item {
                account: account.clone(),
                at,
                add,
                amounts,
            });
        }
    }

    /// Queues an admission given up, to undo it (or keep it from counting) in Redis.
    pub(super) fn void(&self, void: Void) {
        let mut w = self.lock();
        if w.len() >= MAX_QUEUED {
            self.dropped.increment(1);
            return;
        }
        w.voids.push(void);
    }

    /// The next batch: what failed before, then what was queued since, settlements merged.
    pub(super) fn batch(&self) -> Vec<Sent> {
        let (new, voids, mut batch) = {
            let mut w = self.lock();
            (
                std::mem::take(&mut w.new),
                std::mem::take(&mut w.voids),
                std::mem::take(&mut w.again),
            )
        };
        let mut merged: FastMap<(usize, i64, bool), Item> = FastMap::default();
        for item in new {
            merged
                .entry((item.account.id(), item.at, item.add))
                .and_modify(|m| m.amounts = m.amounts.plus(item.amounts))
                .or_insert(item);
        }
        let since = Instant::now();
        batch.extend(merged.into_values().map(|item| Sent {
            call: Call::Settle {
                item,
                marker: self.next.fetch_add(1, Ordering::Relaxed),
            },
            since,
        }));
        batch.extend(voids.into_iter().map(|v| Sent {
            call: Call::Void(Box::new(v)),
            since,
        }));
        batch
    }

    /// Keeps a failed batch to send again, as it was (same markers), while it is younger than
    /// [`RETRY_FOR`] and the queue has room; the rest is dropped and counted.
    pub(super) fn again(&self, failed: Vec<Sent>) {
        let mut w = self.lock();
        for sent in failed {
            if sent.since.elapsed() < RETRY_FOR && w.len() < MAX_QUEUED {
                w.again.push(sent);
            } else {
                self.dropped.increment(1);
            }
        }
    }

    /// The marker key of a settlement (in its account's hash slot).
    pub(super) fn marker(&self, base: &str, marker: u64) -> String {
        format!("{base}:settled:{}:{marker}", self.process)
    }

    /// A new marker key for an admission (in the hash slot of `base`, its first account's).
    pub(super) fn admission_marker(&self, base: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{base}:admitted:{}:{n}", self.process)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyBudget;
    use crate::limits::{BudgetKey, Limits};

    fn amounts(tokens: u64) -> Amounts {
        Amounts { tokens, micros: 0 }
    }

    #[test]
    fn settlements_of_one_account_second_and_direction_merge_into_one_item() {
        let limits = Limits::in_memory();
        let a = limits.account(BudgetKey::key("a"), KeyBudget::default());
        let b = limits.account(BudgetKey::key("b"), KeyBudget::default());
        let q = Queue::default();
        let settle = |release, charge, at, now| Settlement {
            at,
            release: amounts(release),
            charge: amounts(charge),
            now,
        };
        q.push(&a, settle(5, 0, 100, 103));
        q.push(&a, settle(7, 0, 100, 104));
        q.push(&a, settle(0, 2, 100, 104));
        q.push(&a, settle(0, 3, 101, 104));
        q.push(&b, settle(1, 0, 100, 104));
        q.push(&a, settle(0, 0, 100, 104));
        let mut batch: Vec<(String, i64, bool, u64)> = q
            .batch()
            .into_iter()
            .map(|s| match s.call {
                Call::Settle { item, .. } => {
                    let key = item.account.key().name().to_string();
                    (key, item.at, item.add, item.amounts.tokens)
                }
                Call::Void(_) => panic!("no admission was given up"),
            })
            .collect();
        batch.sort();
        assert_eq!(
            batch,
            vec![
                ("a".into(), 100, false, 12),
                ("a".into(), 104, true, 5),
                ("b".into(), 100, false, 1),
            ]
        );
        assert!(q.batch().is_empty(), "sent once");
    }

    #[test]
    fn a_failed_batch_is_sent_again_as_it_was_and_dropped_after_the_retry_window() {
        let limits = Limits::in_memory();
        let a = limits.account(BudgetKey::key("a"), KeyBudget::default());
        let q = Queue::default();
        q.push(
            &a,
            Settlement {
                at: 1,
                release: amounts(4),
                charge: Amounts::default(),
                now: 2,
            },
        );
        let marker_of = |s: &Sent| match &s.call {
            Call::Settle { marker, .. } => *marker,
            Call::Void(_) => u64::MAX,
        };
        let first = q.batch();
        let marker = marker_of(&first[0]);
        q.again(first);
        let second = q.batch();
        assert_eq!(second.len(), 1);
        assert_eq!(
            marker_of(&second[0]),
            marker,
            "the same marker: never counted twice"
        );
        let mut old = second;
        old[0].since = Instant::now() - RETRY_FOR;
        q.again(old);
        assert!(q.batch().is_empty(), "too old to send again");
    }
}
