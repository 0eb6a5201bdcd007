//! One budget key's counters in this process: its request and token windows and its quota
//! period, behind a lock of their own. Every store keeps them: the memory store counts in them,
//! and they carry the counting while Redis is away.

use super::window::{Window, period_bounds};
use super::{Refusal, Standing, Verdict};
use crate::config::KeyBudget;
use std::sync::Mutex;

/// One budget key's counters, behind their own lock: a request waits only for requests of the
/// same key, never for the others.
#[derive(Debug, Default)]
pub struct Bucket {
    counters: Mutex<Counters>,
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

    /// Takes one request from the budget, or says why not and until when.
    fn admit(&mut self, budget: &KeyBudget, now: i64) -> Verdict {
        let requests = self.requests.used(now);
        let tokens = self.tokens.used(now);
        let (quota, resets_at) = self.quota_used(budget, now);
        if let Some(limit) = budget.requests_per_minute.map(u64::from)
            && requests >= limit
        {
            let retry_after = self.requests.retry_after(now, limit);
            return Verdict::Refused(Refusal::Requests { retry_after });
        }
        if let Some(limit) = budget.tokens_per_minute
            && tokens >= limit
        {
            let retry_after = self.tokens.retry_after(now, limit);
            return Verdict::Refused(Refusal::Tokens { retry_after });
        }
        if budget.token_quota.is_some_and(|limit| quota >= limit) {
            return Verdict::Refused(Refusal::Quota { resets_at });
        }
        self.requests.add(now, 1);
        Verdict::Admitted(Standing {
            requests: requests + 1,
            tokens,
            quota,
        })
    }

    /// Adds `tokens` to the window and the quota; returns the quota used.
    fn charge(&mut self, budget: &KeyBudget, now: i64, tokens: u64) -> u64 {
        self.tokens.add(now, tokens);
        self.quota_used(budget, now);
        self.quota.1 = self.quota.1.saturating_add(tokens);
        self.quota.1
    }

    fn peek(&mut self, budget: &KeyBudget, now: i64) -> Standing {
        Standing {
            requests: self.requests.used(now),
            tokens: self.tokens.used(now),
            quota: self.quota_used(budget, now).0,
        }
    }
}

impl Bucket {
    /// Takes one request from `budget`, or says why not and until when.
    pub fn admit(&self, budget: &KeyBudget, now: i64) -> Verdict {
        self.lock().admit(budget, now)
    }

    /// Adds `tokens` to the window and the quota period; returns the quota used.
    pub fn charge(&self, budget: &KeyBudget, now: i64, tokens: u64) -> u64 {
        self.lock().charge(budget, now, tokens)
    }

    /// What was used in the current window and quota period.
    pub fn peek(&self, budget: &KeyBudget, now: i64) -> Standing {
        self.lock().peek(budget, now)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        // Counters stay consistent whatever panicked while holding them: every update is one
        // saturating step.
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }
}
