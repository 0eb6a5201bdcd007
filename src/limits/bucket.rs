//! One budget key's counters in this process: its request and token windows, its quota period
//! and its spend period, behind a lock of their own. Every store keeps them: the memory store
//! counts in them, and they carry the counting while Redis is away.
//!
//! Admission takes the request's reservation at once (it fits, or the request is refused);
//! settlement gives back what the answer did not use, from the second and periods the
//! reservation was counted in, and adds what it used beyond, now.

use super::reservation::Amounts;
use super::window::{Window, period_bounds};
use super::{Limit, Refusal, Standing, Verdict};
use crate::config::{KeyBudget, QuotaPeriod};
use std::sync::{Mutex, MutexGuard};

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
    /// Tokens in the current `token_quota_period`.
    quota: Period,
    /// Micro-units of money in the current `budget_period`.
    spend: Period,
}

/// What was used in one calendar period (only the current one is kept), with the period's
/// bounds: working them out is date arithmetic, done only when a request falls outside them.
#[derive(Debug, Default, Clone, Copy)]
struct Period {
    kind: Option<QuotaPeriod>,
    start: i64,
    end: i64,
    used: u64,
}

impl Period {
    /// What is used in the period holding `now` (a new period starts at zero), and its end.
    fn used(&mut self, period: QuotaPeriod, now: i64) -> (u64, i64) {
        if self.kind != Some(period) || now < self.start || now >= self.end {
            let (start, end) = period_bounds(period, now);
            if self.start != start {
                self.used = 0;
            }
            *self = Period {
                kind: Some(period),
                start,
                end,
                used: self.used,
            };
        }
        (self.used, self.end)
    }

    fn add(&mut self, period: QuotaPeriod, now: i64, n: u64) -> u64 {
        self.used(period, now);
        self.used = self.used.saturating_add(n);
        self.used
    }

    /// Takes back `n` counted at `at`, if the period holding `at` is still the current one.
    fn release(&mut self, period: QuotaPeriod, at: i64, n: u64, now: i64) {
        self.used(period, now);
        if (self.start..self.end).contains(&at) {
            self.used = self.used.saturating_sub(n);
        }
    }
}

/// A request's need of a limit: what it reserves, and at least one (so a request reserving
/// nothing is still refused once the limit is used up).
fn need(n: u64) -> u64 {
    n.max(1)
}

impl Counters {
    /// Whether a request reserving `reserve` fits `budget` now: what is used before it, or which
    /// limit it does not fit and until when. Counts nothing.
    fn check(
        &mut self,
        budget: &KeyBudget,
        reserve: Amounts,
        now: i64,
    ) -> Result<Standing, Refusal> {
        let requests = self.requests.used(now);
        let tokens = self.tokens.used(now);
        let (quota, quota_end) = self.quota.used(budget.token_quota_period, now);
        let (spend, spend_end) = self.spend.used(budget.budget_period, now);
        // A reservation larger than a whole limit never fits, however long it waits.
        if budget.tokens_per_minute.is_some_and(|l| reserve.tokens > l) {
            return Err(Refusal::TooLarge(Limit::TokensPerMinute));
        }
        if budget.token_quota.is_some_and(|l| reserve.tokens > l) {
            return Err(Refusal::TooLarge(Limit::TokenQuota));
        }
        if budget.budget_micros.is_some_and(|l| reserve.micros > l) {
            return Err(Refusal::TooLarge(Limit::Budget));
        }
        if let Some(limit) = budget.requests_per_minute.map(u64::from)
            && requests >= limit
        {
            let retry_after = self.requests.retry_after(now, limit);
            return Err(Refusal::Requests { retry_after });
        }
        let n = need(reserve.tokens);
        if let Some(limit) = budget.tokens_per_minute
            && tokens.saturating_add(n) > limit
        {
            // Free once the window holds at most `limit - n`: below `limit - n + 1`.
            let retry_after = self.tokens.retry_after(now, limit - n + 1);
            return Err(Refusal::Tokens { retry_after });
        }
        if budget
            .token_quota
            .is_some_and(|l| quota.saturating_add(n) > l)
        {
            return Err(Refusal::Quota {
                resets_at: quota_end,
            });
        }
        // A request that costs nothing (its model has no price) spends nothing of a budget.
        if budget
            .budget_micros
            .is_some_and(|l| reserve.micros > 0 && spend.saturating_add(reserve.micros) > l)
        {
            return Err(Refusal::Spend {
                spent: spend,
                resets_at: spend_end,
            });
        }
        Ok(Standing {
            requests,
            tokens,
            quota,
            spend,
        })
    }

    /// Counts one request and its reservation, on top of `before` (from [`Counters::check`]).
    fn count(
        &mut self,
        budget: &KeyBudget,
        reserve: Amounts,
        now: i64,
        before: Standing,
    ) -> Standing {
        self.requests.add(now, 1);
        if reserve.tokens > 0 {
            self.tokens.add(now, reserve.tokens);
            self.quota
                .add(budget.token_quota_period, now, reserve.tokens);
        }
        if reserve.micros > 0 {
            self.spend.add(budget.budget_period, now, reserve.micros);
        }
        Standing {
            requests: before.requests + 1,
            tokens: before.tokens.saturating_add(reserve.tokens),
            quota: before.quota.saturating_add(reserve.tokens),
            spend: before.spend.saturating_add(reserve.micros),
        }
    }

    /// Gives back `release` where it was counted at `at`, and adds `charge` now.
    fn settle(&mut self, budget: &KeyBudget, at: i64, release: Amounts, charge: Amounts, now: i64) {
        if release.tokens > 0 {
            self.tokens.release(at, release.tokens, now);
            self.quota
                .release(budget.token_quota_period, at, release.tokens, now);
        }
        if release.micros > 0 {
            self.spend
                .release(budget.budget_period, at, release.micros, now);
        }
        if charge.tokens > 0 {
            self.tokens.add(now, charge.tokens);
            self.quota
                .add(budget.token_quota_period, now, charge.tokens);
        }
        if charge.micros > 0 {
            self.spend.add(budget.budget_period, now, charge.micros);
        }
    }

    fn peek(&mut self, budget: &KeyBudget, now: i64) -> Standing {
        Standing {
            requests: self.requests.used(now),
            tokens: self.tokens.used(now),
            quota: self.quota.used(budget.token_quota_period, now).0,
            spend: self.spend.used(budget.budget_period, now).0,
        }
    }
}

impl Bucket {
    /// Takes one request and its reservation from `budget`, or says why not and until when.
    pub fn admit(&self, budget: &KeyBudget, reserve: Amounts, now: i64) -> Verdict {
        let mut c = self.lock();
        match c.check(budget, reserve, now) {
            Ok(before) => Verdict::Admitted(c.count(budget, reserve, now, before)),
            Err(refusal) => Verdict::Refused(refusal),
        }
    }

    /// Takes one request and its reservation from two budgets at once (a user's, then its
    /// identity's), or from neither: both are locked, `first` before `second` (always a user's
    /// before its identity's, so two requests never wait for each other), checked, then
    /// counted. The refusal names which one (0 or 1) does not fit.
    pub fn admit_both(
        first: (&Bucket, &KeyBudget),
        second: (&Bucket, &KeyBudget),
        reserve: Amounts,
        now: i64,
    ) -> Result<[Standing; 2], (usize, Refusal)> {
        let mut a = first.0.lock();
        let before_a = a.check(first.1, reserve, now).map_err(|r| (0, r))?;
        let mut b = second.0.lock();
        let before_b = b.check(second.1, reserve, now).map_err(|r| (1, r))?;
        Ok([
            a.count(first.1, reserve, now, before_a),
            b.count(second.1, reserve, now, before_b),
        ])
    }

    /// Settles a reservation counted at `at`: `release` given back there, `charge` added now.
    /// Returns what is used afterwards.
    pub fn settle(
        &self,
        budget: &KeyBudget,
        at: i64,
        release: Amounts,
        charge: Amounts,
        now: i64,
    ) -> Standing {
        let mut c = self.lock();
        c.settle(budget, at, release, charge, now);
        c.peek(budget, now)
    }

    /// Adds `tokens` to the window and the quota period; returns the quota used.
    pub fn charge(&self, budget: &KeyBudget, now: i64, tokens: u64) -> u64 {
        let charge = Amounts { tokens, micros: 0 };
        self.settle(budget, now, Amounts::default(), charge, now)
            .quota
    }

    /// What was used in the current window and periods.
    pub fn peek(&self, budget: &KeyBudget, now: i64) -> Standing {
        self.lock().peek(budget, now)
    }

    fn lock(&self) -> MutexGuard<'_, Counters> {
        // Counters stay consistent whatever panicked while holding them: every update is one
        // saturating step.
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_773_900_000; // 2026-03-19T06:00:00Z

    fn tokens(n: u64) -> Amounts {
        Amounts {
            tokens: n,
            micros: 0,
        }
    }

    #[test]
    fn a_reservation_holds_budget_until_settled_to_what_was_used() {
        let b = Bucket::default();
        let budget = KeyBudget {
            tokens_per_minute: Some(10),
            ..KeyBudget::default()
        };
        assert!(matches!(
            b.admit(&budget, tokens(10), T),
            Verdict::Admitted(Standing { tokens: 10, .. })
        ));
        // Nothing is left while the first is in flight, whatever the second reserves.
        assert!(matches!(
            b.admit(&budget, tokens(1), T),
            Verdict::Refused(Refusal::Tokens { retry_after: 60 })
        ));
        assert!(matches!(
            b.admit(&budget, tokens(0), T),
            Verdict::Refused(Refusal::Tokens { .. })
        ));
        // It used 4: 6 come back, where they were counted.
        let after = b.settle(&budget, T, tokens(6), Amounts::default(), T + 5);
        assert_eq!(after.tokens, 4);
        assert!(matches!(
            b.admit(&budget, tokens(6), T + 5),
            Verdict::Admitted(Standing { tokens: 10, .. })
        ));
        // A request that can never fit says so, not when to retry.
        assert_eq!(
            b.admit(&budget, tokens(11), T + 5),
            Verdict::Refused(Refusal::TooLarge(Limit::TokensPerMinute))
        );
    }

    #[test]
    fn two_budgets_admit_together_or_not_at_all() {
        let (user, identity) = (Bucket::default(), Bucket::default());
        let small = KeyBudget {
            token_quota: Some(5),
            ..KeyBudget::default()
        };
        let large = KeyBudget {
            token_quota: Some(100),
            ..KeyBudget::default()
        };
        let both = Bucket::admit_both((&user, &large), (&identity, &small), tokens(4), T);
        assert!(both.is_ok());
        let refused = Bucket::admit_both((&user, &large), (&identity, &small), tokens(4), T);
        assert_eq!(
            refused.unwrap_err(),
            (
                1,
                Refusal::Quota {
                    resets_at: 1_775_001_600
                }
            )
        );
        // The refused request took nothing from the user's budget either.
        assert_eq!(user.peek(&large, T).quota, 4);
        assert_eq!(user.peek(&large, T).requests, 1);
    }

    #[test]
    fn a_release_after_its_period_ended_leaves_the_new_period_alone() {
        let b = Bucket::default();
        let budget = KeyBudget {
            budget_micros: Some(1_000_000),
            budget_period: QuotaPeriod::Day,
            ..KeyBudget::default()
        };
        let money = |micros| Amounts { tokens: 0, micros };
        let before_midnight = 1_773_964_799; // 2026-03-19T23:59:59Z
        assert!(matches!(
            b.admit(&budget, money(900_000), before_midnight),
            Verdict::Admitted(_)
        ));
        assert_eq!(
            b.admit(&budget, money(200_000), before_midnight),
            Verdict::Refused(Refusal::Spend {
                spent: 900_000,
                resets_at: before_midnight + 1
            })
        );
        // A request to a model without a price costs nothing: a budget never refuses it.
        assert!(matches!(
            b.admit(&budget, money(0), before_midnight),
            Verdict::Admitted(_)
        ));
        // The next day starts afresh; the answer that ends then gives back nothing of it.
        let next_day = before_midnight + 1;
        assert!(matches!(
            b.admit(&budget, money(200_000), next_day),
            Verdict::Admitted(Standing { spend: 200_000, .. })
        ));
        let after = b.settle(&budget, before_midnight, money(900_000), money(0), next_day);
        assert_eq!(after.spend, 200_000);
        // What it used beyond its reservation is charged now, in the new day.
        let after = b.settle(&budget, before_midnight, money(0), money(50_000), next_day);
        assert_eq!(after.spend, 250_000);
    }

    #[test]
    fn a_period_keeps_its_bounds_until_a_time_outside_them_or_another_kind() {
        let mut p = Period::default();
        let noon = 1_773_921_600; // 2026-03-19T12:00:00Z, a Thursday
        let midnight = noon + 12 * 3600;
        assert_eq!(p.add(QuotaPeriod::Day, noon, 5), 5);
        assert_eq!(p.used(QuotaPeriod::Day, midnight - 1), (5, midnight));
        // The week holding the same moment started on Monday: another start, counted afresh.
        let monday = midnight - 4 * 86_400;
        assert_eq!(p.used(QuotaPeriod::Week, noon), (0, monday + 7 * 86_400));
        assert_eq!(p.add(QuotaPeriod::Week, noon, 7), 7);
        assert_eq!(p.used(QuotaPeriod::Day, noon), (0, midnight));
        assert_eq!(p.add(QuotaPeriod::Day, midnight - 1, 3), 3);
        assert_eq!(p.used(QuotaPeriod::Day, midnight), (0, midnight + 86_400));
        // A release counted in the day before gives nothing back of the new one.
        assert_eq!(p.add(QuotaPeriod::Day, midnight, 2), 2);
        p.release(QuotaPeriod::Day, midnight - 1, 2, midnight);
        assert_eq!(
            p.used(QuotaPeriod::Day, midnight).0,
            2,
            "not the period it was counted in"
        );
        p.release(QuotaPeriod::Day, midnight, 2, midnight + 1);
        assert_eq!(p.used(QuotaPeriod::Day, midnight + 1).0, 0);
    }
}
