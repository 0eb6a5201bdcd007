//! The limits store in this process's memory: the default with one replica. Each budget key has
//! its own [`Bucket`] of counters behind its own lock, reached through the key's account, so
//! requests of different keys share no lock and a request allocates nothing. Counters are lost
//! on restart; with Redis configured, the same buckets carry the counting while Redis is away
//! (`on_redis_error = "allow"`).

use super::account::{Account, admit_here, settle_here};
use super::answer::Answer;
use super::bucket::Bucket;
use super::reservation::Amounts;
use super::store::Store;
use super::{Admit, BudgetKey, Settlement, Standing, Verdict};
use crate::config::KeyBudget;
use crate::fast_hash::FastMap;
use std::sync::{Arc, Mutex};

/// The counters of every budget key this process has seen, by key. Only resolving an account
/// looks here (a snapshot being built, the status page, tests): the request path reaches its
/// key's [`Bucket`] through the account its caller's policy holds.
pub struct MemoryStore {
    buckets: Mutex<FastMap<BudgetKey, Arc<Bucket>>>,
    /// Users' counters inside identities: made by requests, so bounded; the least recently
    /// used go first (and start again from zero if they come back).
    users: moka::sync::Cache<BudgetKey, Arc<Bucket>>,
}

impl Default for MemoryStore {
    fn default() -> MemoryStore {
        MemoryStore::with_max_users(crate::config::DEFAULT_MAX_USERS)
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never waits: the registry may be held by the thread formatting it.
        let keys = self.buckets.try_lock().ok().map(|b| b.len());
        f.debug_struct("MemoryStore")
            .field("keys", &keys)
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// A store that keeps the counters of at most `max_users` users at once.
    pub fn with_max_users(max_users: u64) -> MemoryStore {
        MemoryStore {
            buckets: Mutex::default(),
            users: moka::sync::Cache::builder()
                .max_capacity(max_users)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .build(),
        }
    }

    /// The counters of `key`, made on first use and the same ever after (a user's, while it
    /// stays among the most recently used): what keeps a key's counts across reloads.
    pub fn bucket(&self, key: &BudgetKey) -> Arc<Bucket> {
        if let BudgetKey::User { .. } = key {
            return self.users.get_with_by_ref(key, Arc::default);
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        match buckets.get(key) {
            Some(b) => b.clone(),
            None => buckets.entry(key.clone()).or_default().clone(),
        }
    }

    /// Takes one request, reserving nothing, from key `name`'s budget, or says why not and
    /// until when. By name: resolves the key's counters first (tests and tools; requests go
    /// through an account).
    pub fn admit(&self, name: &str, budget: &KeyBudget, now: i64) -> Verdict {
        self.admit_reserving(name, budget, Amounts::default(), now)
    }

    /// Takes one request and its reservation from key `name`'s budget.
    pub fn admit_reserving(
        &self,
        name: &str,
        budget: &KeyBudget,
        reserve: Amounts,
        now: i64,
    ) -> Verdict {
        self.bucket(&BudgetKey::key(name))
            .admit(budget, reserve, now)
    }

    /// Settles a reservation of key `name` counted at `at`.
    pub fn settle(
        &self,
        name: &str,
        budget: &KeyBudget,
        at: i64,
        release: Amounts,
        charge: Amounts,
        now: i64,
    ) -> Standing {
        self.bucket(&BudgetKey::key(name))
            .settle(budget, at, release, charge, now)
    }

    /// Adds `tokens` to key `name`'s window and quota; returns the quota used.
    pub fn charge(&self, name: &str, budget: &KeyBudget, now: i64, tokens: u64) -> u64 {
        self.bucket(&BudgetKey::key(name))
            .charge(budget, now, tokens)
    }

    /// What key `name` used in the current window and quota period.
    pub fn peek(&self, name: &str, budget: &KeyBudget, now: i64) -> Standing {
        self.bucket(&BudgetKey::key(name)).peek(budget, now)
    }
}

/// Counts in the accounts' own [`Bucket`]s: every answer is ready at once.
impl Store for MemoryStore {
    fn admit(&self, accounts: &[&Account], reserve: Amounts, now: i64) -> Answer<Admit> {
        Answer::now(Ok(admit_here(accounts, reserve, now)))
    }

    fn settle(&self, account: &Account, settlement: Settlement) {
        settle_here(account, settlement);
    }

    fn flush(&self) -> Answer<()> {
        Answer::now(Ok(()))
    }

    fn peek(&self, account: &Account, now: i64) -> Answer<Standing> {
        Answer::now(Ok(account.bucket().peek(account.budget(), now)))
    }

    fn probe(&self) -> Answer<()> {
        Answer::now(Ok(()))
    }

    fn users(&self, identity: &str) -> Answer<Vec<String>> {
        let mut users: Vec<String> = self
            .users
            .iter()
            .filter_map(|(key, _)| match &*key {
                BudgetKey::User { identity: i, oid } if &**i == identity => Some(oid.to_string()),
                _ => None,
            })
            .collect();
        users.sort();
        Answer::now(Ok(users))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Refusal;

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
                quota: 0,
                spend: 0
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

    #[test]
    fn a_key_keeps_one_bucket_and_every_other_key_has_its_own() {
        let s = MemoryStore::default();
        let budget = KeyBudget::default();
        let t = 1_773_900_000;
        let a = s.bucket(&BudgetKey::key("a"));
        assert!(Arc::ptr_eq(&a, &s.bucket(&BudgetKey::key("a"))));
        assert!(!Arc::ptr_eq(&a, &s.bucket(&BudgetKey::key("b"))));
        // Counting by name counts in the same bucket.
        s.charge("a", &budget, t, 5);
        assert_eq!(a.peek(&budget, t).tokens, 5);
        assert_eq!(s.peek("b", &budget, t).tokens, 0);
    }

    #[test]
    fn the_memory_store_answers_at_once_in_the_accounts_own_bucket() {
        let limits = crate::limits::Limits::in_memory();
        let budget = KeyBudget {
            requests_per_minute: Some(1),
            ..KeyBudget::default()
        };
        let account = limits.account(BudgetKey::key("k"), budget);
        let t = 1_773_900_000;
        let store = MemoryStore::default();
        let none = Amounts::default();
        assert!(matches!(
            Store::admit(&store, &[&account], none, t),
            Answer::Ready(Some(Ok(Admit::Admitted(_))))
        ));
        let charge = Amounts {
            tokens: 9,
            micros: 0,
        };
        Store::settle(
            &store,
            &account,
            Settlement {
                at: t,
                release: none,
                charge,
                now: t,
            },
        );
        assert_eq!(account.bucket().peek(&budget, t).tokens, 9);
        // No lookup in the store: the counts are the account's own.
        assert!(matches!(
            Store::admit(&MemoryStore::default(), &[&account], none, t),
            Answer::Ready(Some(Ok(Admit::Refused {
                which: 0,
                refusal: Refusal::Requests { .. }
            })))
        ));
    }
}
