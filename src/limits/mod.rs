//! Request and token budgets per key: `requests_per_minute` and `tokens_per_minute` over any
//! 60 s window, `token_quota` per calendar period (UTC). Counters live behind the [`Store`]
//! trait: in this process ([`memory`]) or in a Redis shared by the replicas ([`redis`]), held
//! by [`Limits`] in [`crate::state::AppState`].
//!
//! A caller's policy holds its key's [`Account`], resolved once per snapshot (the same counters
//! again after a reload, by key name). A request is admitted before it is sent
//! ([`Account::admit`]: one request counted, or refused when the key has no budget left), and
//! the [`Admission`] is settled with the answer's tokens when the answer ends.

mod account;
mod answer;
mod bucket;
pub mod memory;
pub mod redis;
mod store;
pub mod window;

pub use account::{Account, Admission, Admissions, BudgetKey, Charges, Charging};
pub use answer::{Answer, StoreDown};
pub use bucket::Bucket;
pub use store::Store;

use crate::config::{IdentityEntry, KeyBudget, KeyEntry, LimitsConfig, OnRedisError, QuotaPeriod};
use std::sync::Arc;

/// What a key used, as a store reports it (after counting the request being admitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Standing {
    /// Requests in the current 60 s window.
    pub requests: u64,
    /// Tokens in the current 60 s window.
    pub tokens: u64,
    /// Tokens in the current quota period.
    pub quota: u64,
}

/// A store's answer to an admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admitted(Standing),
    Refused(Refusal),
}

/// Which budget is used up, and when it frees (seconds from now, or a unix time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Requests { retry_after: u64 },
    Tokens { retry_after: u64 },
    Quota { resets_at: i64 },
}

/// A request refused by its key's budget, or by an unavailable store.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("{who} is over its requests_per_minute limit of {limit}; retry in {retry_after_secs}s")]
    Requests {
        who: String,
        limit: u32,
        retry_after_secs: u64,
    },
    #[error("{who} is over its tokens_per_minute limit of {limit}; retry in {retry_after_secs}s")]
    Tokens {
        who: String,
        limit: u64,
        retry_after_secs: u64,
    },
    #[error(
        "{who} has used its token_quota of {limit} tokens for this {period}; it resets at {resets_at}"
    )]
    Quota {
        who: String,
        limit: u64,
        period: &'static str,
        resets_at: String,
        retry_after_secs: u64,
    },
    #[error(
        "the limits store (limits.redis_url) did not answer and limits.on_redis_error is \"deny\"; retry shortly"
    )]
    StoreUnavailable,
}

impl LimitError {
    /// Seconds until the request may succeed.
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            LimitError::Requests {
                retry_after_secs, ..
            }
            | LimitError::Tokens {
                retry_after_secs, ..
            }
            | LimitError::Quota {
                retry_after_secs, ..
            } => *retry_after_secs,
            LimitError::StoreUnavailable => 1,
        }
    }
}

/// An admitted request's budget as the client is told it (`x-ratelimit-*` headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    pub budget: KeyBudget,
    pub standing: Standing,
    /// The request's prompt estimate, counted as used in `remaining_tokens`.
    pub estimate: u64,
}

impl Admitted {
    /// `(limit, remaining)` of requests, when the key has `requests_per_minute`.
    pub fn requests(&self) -> Option<(u64, u64)> {
        let limit = u64::from(self.budget.requests_per_minute?);
        Some((limit, limit.saturating_sub(self.standing.requests)))
    }

    /// `(limit, remaining)` of tokens: of `tokens_per_minute` when set, else of the quota.
    pub fn tokens(&self) -> Option<(u64, u64)> {
        let (limit, used) = match (self.budget.tokens_per_minute, self.budget.token_quota) {
            (Some(l), _) => (l, self.standing.tokens),
            (None, Some(q)) => (q, self.standing.quota),
            (None, None) => return None,
        };
        Some((
            limit,
            limit.saturating_sub(used.saturating_add(self.estimate)),
        ))
    }
}

/// The limits store, shared by every snapshot (cheap to clone): the [`Store`] that counts, and
/// what a request gets when it does not answer (`limits.on_redis_error`).
#[derive(Debug, Clone)]
pub struct Limits {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    /// Every account's counters in this process: the store itself without Redis, the fallback
    /// (`on_redis_error = "allow"`) with it.
    memory: Arc<memory::MemoryStore>,
    /// Refuse requests while the store does not answer (`deny`), instead of counting here.
    refuse_when_down: bool,
    kind: StoreKind,
    /// The store as messages name it (a Redis URL without its password).
    shown: String,
}

/// Where usage is read from, for `entra-proxy usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    Redis,
}

impl Limits {
    /// In memory, or in Redis when `limits.redis_url` is set (connected on first use).
    pub fn new(config: &LimitsConfig) -> Result<Limits, String> {
        let memory = Arc::new(memory::MemoryStore::with_max_users(config.max_users));
        let Some(r) = &config.redis else {
            return Ok(Limits::with_memory(memory));
        };
        Ok(Limits {
            inner: Arc::new(Inner {
                store: Arc::new(redis::RedisStore::new(r)?),
                memory,
                refuse_when_down: r.on_error == OnRedisError::Deny,
                kind: StoreKind::Redis,
                shown: r.shown.clone(),
            }),
        })
    }

    /// Counters in this process only.
    pub fn in_memory() -> Limits {
        Limits::with_memory(Arc::new(memory::MemoryStore::default()))
    }

    fn with_memory(memory: Arc<memory::MemoryStore>) -> Limits {
        Limits {
            inner: Arc::new(Inner {
                store: memory.clone(),
                memory,
                refuse_when_down: false,
                kind: StoreKind::Memory,
                shown: "memory".into(),
            }),
        }
    }

    pub fn kind(&self) -> StoreKind {
        self.inner.kind
    }

    fn store(&self) -> &dyn Store {
        &*self.inner.store
    }

    fn shown(&self) -> &str {
        &self.inner.shown
    }

    /// Whether requests are counted here while the store does not answer (else refused).
    fn count_here_when_down(&self) -> bool {
        !self.inner.refuse_when_down
    }

    /// The account of configured key `entry`, with its quota gauge labelled as every
    /// per-caller metric labels it. Resolved when a snapshot is built, never per request.
    pub fn account_for(&self, entry: &KeyEntry) -> Account {
        let key = BudgetKey::key(&entry.name);
        let budget = entry.budget();
        let gauge = budget
            .token_quota
            .map(|_| quota_gauge(entry.legacy, &entry.name));
        let bucket = self.inner.memory.bucket(&key);
        Account::new(self.clone(), key, budget, bucket, gauge)
    }

    /// The account of identity `entry`, with its quota gauge (`identity:<name>`). Resolved when
    /// a snapshot is built.
    pub fn account_for_identity(&self, entry: &IdentityEntry) -> Account {
        let key = BudgetKey::identity(&entry.name);
        let gauge = entry
            .budget
            .token_quota
            .map(|_| metrics::gauge!("entra_proxy_token_quota_remaining", "key" => entry.label()));
        let bucket = self.inner.memory.bucket(&key);
        Account::new(self.clone(), key, entry.budget, bucket, gauge)
    }

    /// The account of user `oid` inside identity `identity`, under the identity's per-user
    /// `budget`: found per request (users are not known up front), kept among the most recently
    /// used in memory, expiring by themselves in Redis.
    pub fn user_account(&self, identity: &Arc<str>, oid: &str, budget: KeyBudget) -> Account {
        let key = BudgetKey::User {
            identity: identity.clone(),
            oid: Arc::from(oid),
        };
        let bucket = self.inner.memory.bucket(&key);
        Account::new(self.clone(), key, budget, bucket, None)
    }

    /// The account of `key` under `budget`, without metric handles (tools, tests).
    pub fn account(&self, key: BudgetKey, budget: KeyBudget) -> Account {
        let bucket = self.inner.memory.bucket(&key);
        Account::new(self.clone(), key, budget, bucket, None)
    }

    /// Checks that the store answers (start-up): `Err` names `limits.redis_url` without its
    /// password.
    pub async fn probe(&self) -> Result<(), String> {
        self.store().probe().await.map_err(|e| {
            format!(
                "limits.redis_url ({}) does not answer: {e}",
                self.inner.shown
            )
        })
    }

    /// The users of identity `identity` the store holds counters of.
    pub async fn users(&self, identity: &str) -> Result<Vec<String>, String> {
        self.store()
            .users(identity)
            .await
            .map_err(|e| format!("limits.redis_url ({}): {e}", self.inner.shown))
    }

    /// What `key` used in the current window and quota period, without counting.
    pub async fn peek(&self, key: &BudgetKey, budget: &KeyBudget) -> Result<Standing, String> {
        self.account(key.clone(), *budget).peek().await
    }

    /// Sets `entra_proxy_token_quota_remaining` of every key with a `token_quota` (at start and
    /// on reload), so the series exists before the key's first answer: from this process's
    /// counts, or read from Redis in the background when the counts are shared.
    pub fn publish_quotas(&self, keys: &[KeyEntry]) {
        let now = now();
        let mut later = Vec::new();
        for k in keys {
            let Some(quota) = k.token_quota else {
                continue;
            };
            let gauge = quota_gauge(k.legacy, &k.name);
            let account = self.account(BudgetKey::key(&k.name), k.budget());
            match self.store().peek(&account, now) {
                Answer::Ready(Some(Ok(standing))) => {
                    gauge.set(quota.saturating_sub(standing.quota) as f64);
                }
                Answer::Ready(_) => {}
                answer => later.push((answer, gauge, quota)),
            }
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !later.is_empty() {
            rt.spawn(async move {
                for (answer, gauge, quota) in later {
                    if let Ok(standing) = answer.await {
                        gauge.set(quota.saturating_sub(standing.quota) as f64);
                    }
                }
            });
        }
    }
}

/// The quota gauge of key `name`, labelled as every per-caller metric labels it.
fn quota_gauge(legacy: bool, name: &str) -> metrics::Gauge {
    metrics::gauge!(
        "entra_proxy_token_quota_remaining",
        "key" => crate::config::key_label(legacy, name)
    )
}

/// The error for a refusal, naming whose budget, the limit and when it frees up.
fn refusal(key: &BudgetKey, budget: &KeyBudget, r: Refusal, now: i64) -> LimitError {
    let who = key.describe();
    match r {
        Refusal::Requests { retry_after } => LimitError::Requests {
            who,
            limit: budget.requests_per_minute.unwrap_or(0),
            retry_after_secs: retry_after,
        },
        Refusal::Tokens { retry_after } => LimitError::Tokens {
            who,
            limit: budget.tokens_per_minute.unwrap_or(0),
            retry_after_secs: retry_after,
        },
        Refusal::Quota { resets_at } => LimitError::Quota {
            who,
            limit: budget.token_quota.unwrap_or(0),
            period: period_word(budget.token_quota_period),
            resets_at: window::rfc3339(resets_at),
            retry_after_secs: (resets_at - now).max(1) as u64,
        },
    }
}

fn period_word(p: QuotaPeriod) -> &'static str {
    p.name()
}

/// Unix seconds now.
fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KeyDigest, RedisConfig};

    fn entry(name: &str, requests_per_minute: Option<u32>, token_quota: Option<u64>) -> KeyEntry {
        KeyEntry {
            name: name.into(),
            digest: KeyDigest::of(name),
            legacy: false,
            models: vec![],
            expires: None,
            requests_per_minute,
            tokens_per_minute: None,
            token_quota,
            token_quota_period: QuotaPeriod::Day,
        }
    }

    #[tokio::test]
    async fn a_reload_keeps_the_counts_of_keys_that_remain_under_their_new_budget() {
        let limits = Limits::in_memory();
        // The snapshot before the reload resolves its accounts; requests count in them.
        let before = limits.account_for(&entry("team-a", Some(2), None));
        assert!(before.admit(0).await.unwrap().settle(7).pending().is_none());
        before.admit(0).await.unwrap();
        assert!(matches!(
            before.admit(0).await,
            Err(LimitError::Requests { limit: 2, .. })
        ));
        // The reloaded snapshot resolves the same key again, with a new budget.
        let after = limits.account_for(&entry("team-a", Some(3), Some(100)));
        let standing = after.peek().await.unwrap();
        assert_eq!((standing.requests, standing.tokens), (2, 7));
        assert_eq!(standing.quota, 7);
        let admitted = after.admit(0).await.unwrap();
        assert_eq!(admitted.admitted().requests(), Some((3, 0)));
        assert!(after.admit(0).await.is_err(), "three of three used");
        // A key added by the reload starts at nothing.
        let added = limits.account_for(&entry("team-b", Some(1), None));
        assert_eq!(added.peek().await.unwrap(), Standing::default());
    }

    #[test]
    fn two_threads_charging_one_key_lose_nothing() {
        let limits = Limits::in_memory();
        let budget = KeyBudget {
            requests_per_minute: Some(u32::MAX),
            token_quota: Some(u64::MAX),
            ..KeyBudget::default()
        };
        let account = limits.account(BudgetKey::key("shared"), budget);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        std::thread::scope(|s| {
            for _ in 0..2 {
                let account = account.clone();
                s.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap();
                    for _ in 0..5_000 {
                        let admission = rt.block_on(account.admit(0)).unwrap();
                        // In memory a charge is recorded before it returns.
                        assert!(admission.settle(3).pending().is_none());
                    }
                });
            }
        });
        // Another account of the same key (another snapshot) sees every count.
        let standing = rt
            .block_on(limits.peek(&BudgetKey::key("shared"), &budget))
            .unwrap();
        assert_eq!(standing.requests, 10_000);
        assert_eq!(standing.tokens, 30_000);
        assert_eq!(standing.quota, 30_000);
    }

    #[tokio::test]
    async fn a_name_no_snapshot_resolved_still_counts_and_reads_as_nothing_used() {
        let limits = Limits::in_memory();
        let budget = KeyBudget {
            requests_per_minute: Some(1),
            ..KeyBudget::default()
        };
        let nobody = BudgetKey::key("nobody");
        assert_eq!(limits.peek(&nobody, &budget).await, Ok(Standing::default()));
        let adhoc = limits.account(BudgetKey::key("ad hoc {name}"), budget);
        adhoc.admit(0).await.unwrap();
        let refused = adhoc.admit(0).await.unwrap_err();
        assert_eq!(
            refused.to_string(),
            format!(
                "key \"ad hoc {{name}}\" is over its requests_per_minute limit of 1; retry in {}s",
                refused.retry_after_secs()
            )
        );
        assert_eq!(
            limits
                .peek(&BudgetKey::key("ad hoc {name}"), &budget)
                .await
                .unwrap()
                .requests,
            1
        );
        assert_eq!(limits.peek(&nobody, &budget).await.unwrap().requests, 0);
    }

    /// Limits over a Redis no one listens on (port 9 on loopback: refused at once).
    fn redis_down(on_error: OnRedisError) -> Limits {
        let url = "redis://127.0.0.1:9/0";
        Limits::new(&LimitsConfig {
            max_users: crate::config::DEFAULT_MAX_USERS,
            redis: Some(RedisConfig {
                url: url.to_string().into(),
                shown: url.into(),
                timeout: std::time::Duration::from_millis(200),
                on_error,
                ca_file: None,
            }),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn while_the_store_is_down_allow_counts_here_and_deny_refuses() {
        let budget = KeyBudget {
            requests_per_minute: Some(1),
            ..KeyBudget::default()
        };
        let allow = redis_down(OnRedisError::Allow);
        assert_eq!(allow.kind(), StoreKind::Redis);
        let account = allow.account(BudgetKey::key("k"), budget);
        let admission = account.admit(0).await.unwrap();
        assert_eq!(admission.admitted().requests(), Some((1, 0)));
        // A charge that Redis did not take is counted here.
        let charging = admission.settle(5).pending().expect("waits for Redis");
        charging.await;
        assert_eq!(account.bucket().peek(&budget, now()).tokens, 5);
        assert!(
            matches!(account.admit(0).await, Err(LimitError::Requests { .. })),
            "counted here: the second request of the minute is refused"
        );
        let err = allow.peek(&BudgetKey::key("k"), &budget).await.unwrap_err();
        assert!(
            err.starts_with("limits.redis_url (redis://127.0.0.1:9/0): "),
            "{err}"
        );
        assert!(allow.probe().await.is_err());

        let deny = redis_down(OnRedisError::Deny);
        let account = deny.account(BudgetKey::key("k"), budget);
        assert!(matches!(
            account.admit(0).await,
            Err(LimitError::StoreUnavailable)
        ));
    }
}
