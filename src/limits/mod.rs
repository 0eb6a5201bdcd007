//! Request and token budgets per key, by key name: `requests_per_minute` and
//! `tokens_per_minute` over any 60 s window, `token_quota` per calendar period (UTC). Counters
//! live in this process ([`memory`]) or in a Redis shared by the replicas ([`redis`]); either
//! way in [`crate::state::AppState`], so a reload keeps the counters of keys that remain.
//!
//! A request is admitted before it is sent (one request counted; refused when the key has no
//! budget left), and charged with its tokens when its answer ends.

pub mod memory;
pub mod redis;
pub mod window;

use crate::config::{KeyBudget, LimitsConfig, OnRedisError, QuotaPeriod};
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
    #[error(
        "key {key:?} is over its requests_per_minute limit of {limit}; retry in {retry_after_secs}s"
    )]
    Requests {
        key: String,
        limit: u32,
        retry_after_secs: u64,
    },
    #[error(
        "key {key:?} is over its tokens_per_minute limit of {limit}; retry in {retry_after_secs}s"
    )]
    Tokens {
        key: String,
        limit: u64,
        retry_after_secs: u64,
    },
    #[error(
        "key {key:?} has used its token_quota of {limit} tokens for this {period}; it resets at {resets_at}"
    )]
    Quota {
        key: String,
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

/// The limits store, shared by every snapshot (cheap to clone).
#[derive(Debug, Clone)]
pub struct Limits {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    memory: memory::MemoryStore,
    redis: Option<(redis::RedisStore, OnRedisError)>,
    quota_remaining: std::sync::Mutex<crate::fast_hash::FastMap<String, metrics::Gauge>>,
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
        let redis = match &config.redis {
            None => None,
            Some(r) => Some((redis::RedisStore::new(r)?, r.on_error)),
        };
        Ok(Limits {
            inner: Arc::new(Inner {
                memory: memory::MemoryStore::default(),
                redis,
                quota_remaining: Default::default(),
            }),
        })
    }

    pub fn kind(&self) -> StoreKind {
        match self.inner.redis {
            Some(_) => StoreKind::Redis,
            None => StoreKind::Memory,
        }
    }

    /// Checks that Redis answers (start-up): `Err` names `limits.redis_url` without its password.
    pub async fn probe(&self) -> Result<(), String> {
        let Some((store, _)) = &self.inner.redis else {
            return Ok(());
        };
        store
            .peek("-", &KeyBudget::default(), now())
            .await
            .map(|_| ())
            .map_err(|e| format!("limits.redis_url ({}) does not answer: {e}", store.shown()))
    }

    /// Counts one request of key `name`, or refuses it when the key has no budget left.
    pub async fn admit(
        &self,
        name: &str,
        budget: &KeyBudget,
        estimate: u64,
    ) -> Result<Admitted, LimitError> {
        let now = now();
        let verdict = match &self.inner.redis {
            None => self.inner.memory.admit(name, budget, now),
            // Boxed: a Redis call's state is large, and the memory store needs none.
            Some((store, on_error)) => match Box::pin(store.admit(name, budget, now)).await {
                Ok(v) => v,
                Err(_) if *on_error == OnRedisError::Allow => {
                    self.inner.memory.admit(name, budget, now)
                }
                Err(_) => return Err(LimitError::StoreUnavailable),
            },
        };
        match verdict {
            Verdict::Admitted(standing) => Ok(Admitted {
                budget: *budget,
                standing,
                estimate,
            }),
            Verdict::Refused(r) => Err(refusal(name, budget, r, now)),
        }
    }

    /// Adds `tokens` to key `name`'s window and quota period.
    pub async fn charge(&self, name: &str, budget: &KeyBudget, tokens: u64) {
        let now = now();
        let quota_used = match &self.inner.redis {
            None => self.inner.memory.charge(name, budget, now, tokens),
            Some((store, _)) => match Box::pin(store.charge(name, budget, now, tokens)).await {
                Ok(q) => q,
                // Counted here until Redis is back; `deny` refuses new requests meanwhile.
                Err(_) => self.inner.memory.charge(name, budget, now, tokens),
            },
        };
        if let Some(quota) = budget.token_quota {
            self.quota_gauge(name)
                .set(quota.saturating_sub(quota_used) as f64);
        }
    }

    /// What key `name` used in the current window and quota period, without counting.
    pub async fn peek(&self, name: &str, budget: &KeyBudget) -> Result<Standing, String> {
        let now = now();
        match &self.inner.redis {
            None => Ok(self.inner.memory.peek(name, budget, now)),
            Some((store, _)) => store
                .peek(name, budget, now)
                .await
                .map_err(|e| format!("limits.redis_url ({}): {e}", store.shown())),
        }
    }

    /// Sets `entra_proxy_token_quota_remaining` of every key with a `token_quota` (at start and
    /// on reload), so the series exists before the key's first answer: from this process's
    /// counts, or read from Redis in the background when the counts are shared.
    pub fn publish_quotas(&self, keys: &[crate::config::KeyEntry]) {
        let quotas: Vec<(String, KeyBudget, u64)> = keys
            .iter()
            .filter_map(|k| {
                let budget = k.budget();
                Some((k.name.clone(), budget, budget.token_quota?))
            })
            .collect();
        if quotas.is_empty() {
            return;
        }
        {
            let mut gauges = self
                .inner
                .quota_remaining
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for k in keys.iter().filter(|k| k.token_quota.is_some()) {
                gauges.insert(k.name.clone(), quota_gauge(k.legacy, &k.name));
            }
        }
        if self.inner.redis.is_none() {
            let now = now();
            for (name, budget, quota) in &quotas {
                let used = self.inner.memory.peek(name, budget, now).quota;
                self.quota_gauge(name)
                    .set(quota.saturating_sub(used) as f64);
            }
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let limits = self.clone();
        rt.spawn(async move {
            for (name, budget, quota) in quotas {
                if let Ok(standing) = limits.peek(&name, &budget).await {
                    limits
                        .quota_gauge(&name)
                        .set(quota.saturating_sub(standing.quota) as f64);
                }
            }
        });
    }

    /// The gauge of key `name`, labelled as every per-caller metric labels it; registered by
    /// [`Limits::publish_quotas`] (which knows whether the key is a legacy one).
    fn quota_gauge(&self, name: &str) -> metrics::Gauge {
        let mut gauges = self
            .inner
            .quota_remaining
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        gauges
            .entry(name.to_string())
            .or_insert_with(|| quota_gauge(false, name))
            .clone()
    }
}

fn quota_gauge(legacy: bool, name: &str) -> metrics::Gauge {
    metrics::gauge!(
        "entra_proxy_token_quota_remaining",
        "key" => crate::config::key_label(legacy, name)
    )
}

/// The error for a refusal, naming the key, the limit and when it frees up.
fn refusal(name: &str, budget: &KeyBudget, r: Refusal, now: i64) -> LimitError {
    let key = name.to_string();
    match r {
        Refusal::Requests { retry_after } => LimitError::Requests {
            key,
            limit: budget.requests_per_minute.unwrap_or(0),
            retry_after_secs: retry_after,
        },
        Refusal::Tokens { retry_after } => LimitError::Tokens {
            key,
            limit: budget.tokens_per_minute.unwrap_or(0),
            retry_after_secs: retry_after,
        },
        Refusal::Quota { resets_at } => LimitError::Quota {
            key,
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
