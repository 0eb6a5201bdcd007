//! The limits store in this process's memory: the default with one replica. Counters are lost
//! on restart; with Redis configured, this store carries the counting while Redis is away
//! (`on_redis_error = "allow"`).

use super::window::{Window, period_bounds};
use super::{Refusal, Standing, Verdict};
use crate::config::KeyBudget;
use crate::fast_hash::FastMap;
use std::sync::Mutex;

/// Counters per key name.
#[derive(Debug, Default)]
pub struct MemoryStore {
    keys: Mutex<FastMap<String, Counters>>,
}

/// One key's counters.
#[derive(Debug, Default)]
struct Counters {
    requests: Window,
    tokens: Window,
    /// Start of the quota period counted, and the tokens used in it.
    quota: (i64, u64),
}

impl Counters {
    fn quota_used(&mut self, budget: &KeyBudget, now: i64) -> (u64, i64) {
        let (start, end) = period_bounds(budget.token_quota_period, now);
        if self.quota.0 != start {
            self.quota = (start, 0);
        }
        (self.quota.1, end)
    }
}

impl MemoryStore {
    /// Takes one request from `key`'s budget, or says why not and until when.
    pub fn admit(&self, key: &str, budget: &KeyBudget, now: i64) -> Verdict {
        self.with(key, |c| {
            let requests = c.requests.used(now);
            let tokens = c.tokens.used(now);
            let (quota, resets_at) = c.quota_used(budget, now);
            if let Some(limit) = budget.requests_per_minute.map(u64::from)
                && requests >= limit
            {
                let retry_after = c.requests.retry_after(now, limit);
                return Verdict::Refused(Refusal::Requests { retry_after });
            }
            if let Some(limit) = budget.tokens_per_minute
                && tokens >= limit
            {
                let retry_after = c.tokens.retry_after(now, limit);
                return Verdict::Refused(Refusal::Tokens { retry_after });
            }
            if budget.token_quota.is_some_and(|limit| quota >= limit) {
                return Verdict::Refused(Refusal::Quota { resets_at });
            }
            c.requests.add(now, 1);
            Verdict::Admitted(Standing {
                requests: requests + 1,
                tokens,
                quota,
            })
        })
    }

    /// Adds `tokens` to `key`'s window and quota; returns the quota used.
    pub fn charge(&self, key: &str, budget: &KeyBudget, now: i64, tokens: u64) -> u64 {
        self.with(key, |c| {
            c.tokens.add(now, tokens);
            c.quota_used(budget, now);
            c.quota.1 = c.quota.1.saturating_add(tokens);
            c.quota.1
        })
    }

    /// What `key` used in the current window and quota period.
    pub fn peek(&self, key: &str, budget: &KeyBudget, now: i64) -> Standing {
        self.with(key, |c| Standing {
            requests: c.requests.used(now),
            tokens: c.tokens.used(now),
            quota: c.quota_used(budget, now).0,
        })
    }

    fn with<T>(&self, key: &str, f: impl FnOnce(&mut Counters) -> T) -> T {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        match keys.get_mut(key) {
            Some(c) => f(c),
            None => f(keys.entry(key.to_string()).or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_tokens_and_quota_refuse_in_that_order_and_say_until_when() {
        let s = MemoryStore::default();
        let budget = KeyBudget {
            requests_per_minute: Some(2),
            tokens_per_minute: Some(100),
            token_quota: Some(150),
            ..KeyBudget::default()
        };
        let t = 1_773_900_000; // 2026-03-19T06:00:00Z
        assert!(matches!(
            s.admit("k", &budget, t),
            Verdict::Admitted(Standing {
                requests: 1,
                tokens: 0,
                quota: 0
            })
        ));
        assert_eq!(s.charge("k", &budget, t, 120), 120);
        assert_eq!(
            s.admit("k", &budget, t + 1),
            Verdict::Refused(Refusal::Tokens { retry_after: 59 })
        );
        // A minute later the window is free, but the quota is nearly used.
        assert!(matches!(
            s.admit("k", &budget, t + 61),
            Verdict::Admitted(_)
        ));
        assert!(matches!(
            s.admit("k", &budget, t + 62),
            Verdict::Admitted(_)
        ));
        assert_eq!(
            s.admit("k", &budget, t + 63),
            Verdict::Refused(Refusal::Requests { retry_after: 58 })
        );
        assert_eq!(s.charge("k", &budget, t + 121, 40), 160);
        assert_eq!(
            s.admit("k", &budget, t + 200),
            Verdict::Refused(Refusal::Quota {
                resets_at: 1_775_001_600
            }) // 2026-04-01
        );
        // Other keys are counted apart.
        assert!(matches!(
            s.admit("other", &budget, t + 200),
            Verdict::Admitted(_)
        ));
        // The next period starts afresh.
        assert!(matches!(
            s.admit("k", &budget, 1_775_001_600),
            Verdict::Admitted(_)
        ));
    }
}
