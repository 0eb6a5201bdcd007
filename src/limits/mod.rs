//! Request, token and money budgets per key and identity: `requests_per_minute` and
//! `tokens_per_minute` over any 60 s window, `token_quota` and the money `budget` per calendar
//! period (UTC). Counters live behind the [`Store`] trait: in this process ([`memory`]) or in a
//! Redis shared by the replicas ([`redis`]), held by [`Limits`] in [`crate::state::AppState`].
//!
//! A caller's policy holds its key's [`Account`], resolved once per snapshot (the same counters
//! again after a reload, by key name). A request is admitted before it is sent
//! ([`Admissions::admit`]: one request counted and its [`Reservation`] held, or refused when it
//! does not fit), and the [`Admission`] is settled with what the answer used when the answer
//! ends, or gives its reservation back when no answer comes.
//!
//! The invariant: the tokens (and money) of the requests admitted in any window or period never
//! exceed the budget by more than what their reservations under-estimated.

mod account;
mod answer;
mod bucket;
pub mod memory;
pub mod price;
pub mod redis;
mod reservation;
mod store;
pub mod window;

pub use account::{Account, Admission, Admissions, BudgetKey};
pub use answer::{Answer, StoreDown};
pub use bucket::Bucket;
pub use price::{Money, Tariff, Tariffs, money};
pub use reservation::{Amounts, Ceiling, Reservation};
pub use store::Store;

use crate::config::{IdentityEntry, KeyBudget, KeyEntry, LimitsConfig, OnRedisError, QuotaPeriod};
use std::sync::Arc;

/// What a key used, as a store reports it (after counting the request being admitted and its
/// reservation); reservations of requests still running count as used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Standing {
    /// Requests in the current 60 s window.
    pub requests: u64,
    /// Tokens in the current 60 s window.
    pub tokens: u64,
    /// Tokens in the current quota period.
    pub quota: u64,
    /// Money in the current budget period, in micro-units.
    pub spend: u64,
}

/// A store's answer to an admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admitted(Standing),
    Refused(Refusal),
}

/// Which budget is used up, and when it frees (seconds from now, or a unix time); or which a
/// request's reservation can never fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Requests {
        retry_after: u64,
    },
    Tokens {
        retry_after: u64,
    },
    Quota {
        resets_at: i64,
    },
    /// The budget's money: `spent` of it (reservations of running requests included).
    Spend {
        spent: u64,
        resets_at: i64,
    },
    TooLarge(Limit),
}

/// A limit a reservation is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    TokensPerMinute,
    TokenQuota,
    Budget,
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
        "{who} has spent {} {currency} of its budget of {} {currency} for this {period} (requests still running count what they reserved); it resets at {}",
        money(*.spent), money(*.budget), window::rfc3339(*.resets_at)
    )]
    Spend {
        who: String,
        /// Micro-units.
        spent: u64,
        /// Micro-units.
        budget: u64,
        currency: Box<str>,
        period: &'static str,
        /// Unix seconds.
        resets_at: i64,
        retry_after_secs: u64,
    },
    /// A request whose own reservation is larger than a whole limit: it can never fit.
    #[error("this request may {need}, more than {who}'s whole {limit}; {fix}")]
    TooLarge {
        who: String,
        need: String,
        limit: String,
        fix: String,
    },
    #[error(
        "the limits store (limits.redis_url) did not answer and limits.on_redis_error is \"deny\"; retry shortly"
    )]
    StoreUnavailable,
}

impl LimitError {
    /// Seconds until the request may succeed; `None` when waiting cannot help.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            LimitError::Requests {
                retry_after_secs, ..
            }
            | LimitError::Tokens {
                retry_after_secs, ..
            }
            | LimitError::Quota {
                retry_after_secs, ..
            }
            | LimitError::Spend {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            LimitError::StoreUnavailable => Some(1),
            LimitError::TooLarge { .. } => None,
        }
    }

    /// The error with money named in `currency` (the config's, which the store does not know).
    pub fn in_currency(mut self, named: &str) -> LimitError {
        match &mut self {
            LimitError::Spend { currency, .. } => *currency = named.into(),
            LimitError::TooLarge { need, limit, .. } => {
                *need = need.replace(CURRENCY, named);
                *limit = limit.replace(CURRENCY, named);
            }
            _ => {}
        }
        self
    }
}

/// Where a message names the currency, until [`LimitError::in_currency`] names it.
const CURRENCY: &str = "{currency}";

/// A store's answer to an admission over one or two accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Every account counted the request; what each uses now, in the order asked.
    Admitted([Standing; 2]),
    /// The account at `which` (in the order asked) does not fit; nothing was counted.
    Refused { which: usize, refusal: Refusal },
}

/// The end of a reservation: what it did not use, given back where it was counted, and what it
/// used beyond it, added now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    /// The second the reservation was counted in.
    pub at: i64,
    pub release: Amounts,
    pub charge: Amounts,
    pub now: i64,
}

/// An admitted request's budget as the client is told it (`x-ratelimit-*` headers): its
/// standing counts the request's own reservation as used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    pub budget: KeyBudget,
    pub standing: Standing,
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
        Some((limit, limit.saturating_sub(used)))
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
    /// The same store, when it is Redis (its settlement queue).
    redis: Option<redis::RedisStore>,
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
        let redis = redis::RedisStore::new(r)?;
        Ok(Limits {
            inner: Arc::new(Inner {
                store: Arc::new(redis.clone()),
                redis: Some(redis),
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
                redis: None,
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

    /// Whether the store is this process's memory (so what it counts is settled here).
    fn is_memory(&self) -> bool {
        self.inner.kind == StoreKind::Memory
    }

    /// Starts sending settlements queued for Redis in batches, every
    /// [`redis::FLUSH_EVERY`], on the current runtime; `None` without Redis (or when started
    /// already). Call [`Limits::flush`] at shutdown for what is queued then.
    pub fn start_settling(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.inner.redis.as_ref()?.start_settling()
    }

    /// Sends the settlements queued for Redis now (at shutdown), waiting at most the store's
    /// timeout.
    pub async fn flush(&self) {
        let _ = self.store().flush().await;
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
        let gauge = budget.token_quota.map(|_| quota_gauge(entry.label()));
        let bucket = self.inner.memory.bucket(&key);
        Account::new(self.clone(), key, budget, bucket, gauge)
    }

    /// The account of identity `entry`, with its quota gauge (`identity:<name>`). Resolved when
    /// a snapshot is built.
    pub fn account_for_identity(&self, entry: &IdentityEntry) -> Account {
        let key = BudgetKey::identity(&entry.name);
        let gauge = entry.budget.token_quota.map(|_| quota_gauge(entry.label()));
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
            let gauge = quota_gauge(k.label());
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

/// The quota gauge of a key or identity, labelled as every per-caller metric labels it.
fn quota_gauge(label: crate::config::CallerLabel) -> metrics::Gauge {
    metrics::gauge!("entra_proxy_token_quota_remaining", "key" => label.to_string())
}

/// The error for a refusal, naming whose budget, the limit and when it frees up (or, for a
/// request that can never fit, what it reserved and what to lower).
fn refusal(
    key: &BudgetKey,
    budget: &KeyBudget,
    r: Refusal,
    now: i64,
    reservation: &Reservation,
) -> LimitError {
    let who = key.describe();
    let retry_until = |resets_at: i64| (resets_at - now).max(1) as u64;
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
            retry_after_secs: retry_until(resets_at),
        },
        Refusal::Spend { spent, resets_at } => LimitError::Spend {
            who,
            spent,
            budget: budget.budget_micros.unwrap_or(0),
            currency: Box::from(""),
            period: period_word(budget.budget_period),
            resets_at,
            retry_after_secs: retry_until(resets_at),
        },
        Refusal::TooLarge(limit) => too_large(who, budget, limit, reservation),
    }
}

/// The error for a reservation larger than a whole limit.
fn too_large(who: String, budget: &KeyBudget, limit: Limit, r: &Reservation) -> LimitError {
    let tokens = r.amounts().tokens;
    match limit {
        Limit::TokensPerMinute | Limit::TokenQuota => {
            let (name, value) = match limit {
                Limit::TokensPerMinute => ("tokens_per_minute", budget.tokens_per_minute),
                _ => ("token_quota", budget.token_quota),
            };
            let value = value.unwrap_or(0);
            LimitError::TooLarge {
                who,
                need: format!("use up to {tokens} tokens ({})", r.made_of()),
                limit: format!("{name} of {value}"),
                fix: r.fix(value),
            }
        }
        Limit::Budget => {
            let value = budget.budget_micros.unwrap_or(0);
            LimitError::TooLarge {
                who,
                need: format!(
                    "cost up to {} {CURRENCY} ({tokens} tokens: {}, at the model's price)",
                    money(r.micros),
                    r.made_of()
                ),
                limit: format!(
                    "budget of {} {CURRENCY} per {}",
                    money(value),
                    period_word(budget.budget_period)
                ),
                fix: r.fix_money(value),
            }
        }
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
            budget_micros: None,
            budget_period: QuotaPeriod::Month,
        }
    }

    /// What a request of `tokens` prompt tokens and no answer reserves.
    fn reserving(tokens: u64) -> Reservation {
        Reservation {
            prompt: tokens,
            ..Reservation::NONE
        }
    }

    fn used(tokens: u64) -> Amounts {
        Amounts { tokens, micros: 0 }
    }

    #[tokio::test]
    async fn a_reload_keeps_the_counts_of_keys_that_remain_under_their_new_budget() {
        let limits = Limits::in_memory();
        // The snapshot before the reload resolves its accounts; requests count in them.
        let before = limits.account_for(&entry("team-a", Some(2), None));
        before
            .admit(&Reservation::NONE)
            .await
            .unwrap()
            .settle(used(7));
        let _held = before.admit(&Reservation::NONE).await.unwrap();
        assert!(matches!(
            before.admit(&Reservation::NONE).await,
            Err(LimitError::Requests { limit: 2, .. })
        ));
        // The reloaded snapshot resolves the same key again, with a new budget.
        let after = limits.account_for(&entry("team-a", Some(3), Some(100)));
        let standing = after.peek().await.unwrap();
        assert_eq!((standing.requests, standing.tokens), (2, 7));
        assert_eq!(standing.quota, 7);
        let admitted = after.admit(&Reservation::NONE).await.unwrap();
        assert_eq!(admitted.admitted().requests(), Some((3, 0)));
        assert!(
            after.admit(&Reservation::NONE).await.is_err(),
            "three of three used"
        );
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
                        let admission = rt.block_on(account.admit(&reserving(2))).unwrap();
                        // In memory a settlement is recorded before it returns.
                        admission.settle(used(3));
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
        let _held = adhoc.admit(&Reservation::NONE).await.unwrap();
        let refused = adhoc.admit(&Reservation::NONE).await.unwrap_err();
        assert_eq!(
            refused.to_string(),
            format!(
                "key \"ad hoc {{name}}\" is over its requests_per_minute limit of 1; retry in {}s",
                refused.retry_after_secs().unwrap()
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
            redis: Some(RedisConfig {
                url: url.to_string().into(),
                shown: url.into(),
                timeout: std::time::Duration::from_millis(200),
                on_error,
                ca_file: None,
            }),
            ..LimitsConfig::default()
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
        let admission = account.admit(&reserving(10)).await.unwrap();
        assert_eq!(admission.admitted().requests(), Some((1, 0)));
        // Reserved here while Redis is away, so settled here: never sent to a Redis that did
        // not count it.
        assert_eq!(account.bucket().peek(&budget, now()).tokens, 10);
        admission.settle(used(5));
        assert_eq!(account.bucket().peek(&budget, now()).tokens, 5);
        assert!(
            matches!(
                account.admit(&Reservation::NONE).await,
                Err(LimitError::Requests { .. })
            ),
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
            account.admit(&Reservation::NONE).await,
            Err(LimitError::StoreUnavailable)
        ));
    }
}
