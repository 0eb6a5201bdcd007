//! Whose budget a request is counted against ([`BudgetKey`]), the handle a caller's policy holds
//! for it ([`Account`]), an admitted request ([`Admission`]) and a charge on its way
//! ([`Charging`]).
//!
//! An account is resolved once, when a snapshot is built, and held by the caller's policy: the
//! request path finds its counters without a lookup, and locks only that key's counters. A
//! reload resolves the same counters again by name, so a key that remains keeps its counts.

use super::answer::{Answer, StoreDown};
use super::bucket::Bucket;
use super::{Admitted, LimitError, Limits, Standing, Verdict, now, refusal};
use crate::config::KeyBudget;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Whose budget: a configured key (virtual or legacy), an identity, or one user inside an
/// identity. Names are unique among keys and among identities (`config::validate`), and the
/// store keeps the kinds apart, so a name is its budget's identity across reloads and replicas.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BudgetKey {
    /// A configured key, by name.
    Key(Arc<str>),
    /// An `[[identities]]` block, by name: shared by everyone it matches.
    Identity(Arc<str>),
    /// One user (`oid`) inside an identity with per-user budgets.
    User { identity: Arc<str>, oid: Arc<str> },
}

/// One budget key's handle: its budget, its counters in memory (the memory store's, and the
/// fallback's while Redis is away) and its metric handles, bound to the store that counts it.
/// Cheap to clone (one reference count, this key's own).
#[derive(Clone)]
pub struct Account {
    inner: Arc<Inner>,
}

struct Inner {
    key: BudgetKey,
    budget: KeyBudget,
    bucket: Arc<Bucket>,
    /// `entra_proxy_token_quota_remaining` of this key, when it has a quota.
    quota_remaining: Option<metrics::Gauge>,
    limits: Limits,
}

/// A request admitted by its account: what the client is told about its budget, and what the
/// answer's usage is charged to. Settled when the answer ends; an admission dropped unsettled
/// (no answer came) charges nothing.
#[derive(Debug)]
pub struct Admission {
    account: Account,
    admitted: Admitted,
}

/// A request's admissions: its caller's budget (a key's or an identity's), and its user's own
/// inside a shared identity. Settled together with the answer's usage.
#[derive(Debug, Default)]
pub struct Admissions {
    caller: Option<Admission>,
    user: Option<Admission>,
}

/// The charges of a request's admissions, on their way to the store.
#[must_use = "a charge waiting for the store does nothing unless awaited or spawned"]
pub struct Charges([Charging; 2]);

/// A charge on its way to the store: recorded already (memory), or waiting for Redis.
#[must_use = "a charge waiting for the store does nothing unless awaited or spawned"]
pub struct Charging(Option<Waiting>);

struct Waiting {
    answer: Answer<u64>,
    account: Account,
    now: i64,
    tokens: u64,
}

impl BudgetKey {
    /// The budget of the configured key `name`.
    pub fn key(name: &str) -> BudgetKey {
        BudgetKey::Key(Arc::from(name))
    }

    /// The budget of the identity `name`.
    pub fn identity(name: &str) -> BudgetKey {
        BudgetKey::Identity(Arc::from(name))
    }

    /// The name: the key's or the identity's (a user's identity's).
    pub fn name(&self) -> &str {
        match self {
            BudgetKey::Key(name) | BudgetKey::Identity(name) => name,
            BudgetKey::User { identity, .. } => identity,
        }
    }

    /// Who, as refusals name it: `key "team-a"`, `identity "search"`, `user <oid> of identity
    /// "analysts"`.
    pub fn describe(&self) -> String {
        match self {
            BudgetKey::Key(name) => format!("key {name:?}"),
            BudgetKey::Identity(name) => format!("identity {name:?}"),
            BudgetKey::User { identity, oid } => format!("user {oid} of identity {identity:?}"),
        }
    }

    /// The common start of this budget's keys in Redis. The `{…}` hash tag keeps a key's, or an
    /// identity's and all its users', in one cluster slot; keys of identities are apart from
    /// those of keys whatever their names.
    pub fn redis_base(&self) -> String {
        match self {
            BudgetKey::Key(name) => format!("entra-proxy:{{{name}}}"),
            BudgetKey::Identity(name) => format!("entra-proxy:identity:{{{name}}}"),
            BudgetKey::User { identity, oid } => {
                format!("entra-proxy:identity:{{{identity}}}:user:{oid}")
            }
        }
    }
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("key", &self.inner.key)
            .field("budget", &self.inner.budget)
            .finish_non_exhaustive()
    }
}

impl Account {
    pub(super) fn new(
        limits: Limits,
        key: BudgetKey,
        budget: KeyBudget,
        bucket: Arc<Bucket>,
        quota_remaining: Option<metrics::Gauge>,
    ) -> Account {
        Account {
            inner: Arc::new(Inner {
                key,
                budget,
                bucket,
                quota_remaining: quota_remaining.filter(|_| budget.token_quota.is_some()),
                limits,
            }),
        }
    }

    pub fn key(&self) -> &BudgetKey {
        &self.inner.key
    }

    pub fn budget(&self) -> &KeyBudget {
        &self.inner.budget
    }

    /// This key's counters in this process.
    pub(super) fn bucket(&self) -> &Bucket {
        &self.inner.bucket
    }

    /// Counts one request (or refuses it when the key has no budget left). In memory this
    /// completes without waiting and allocates nothing.
    pub async fn admit(&self, estimate: u64) -> Result<Admission, LimitError> {
        let limits = &self.inner.limits;
        let now = now();
        let verdict = match limits.store().admit(self, now).await {
            Ok(v) => v,
            Err(_) if limits.count_here_when_down() => self.bucket().admit(self.budget(), now),
            Err(_) => return Err(LimitError::StoreUnavailable),
        };
        match verdict {
            Verdict::Admitted(standing) => Ok(Admission {
                account: self.clone(),
                admitted: Admitted {
                    budget: *self.budget(),
                    standing,
                    estimate,
                },
            }),
            Verdict::Refused(r) => Err(refusal(self.key(), self.budget(), r, now)),
        }
    }

    /// Adds `tokens` to the key's window and quota period: recorded before this returns in
    /// memory, else when the returned charge completes.
    pub fn charge(&self, tokens: u64) -> Charging {
        let now = now();
        match self.inner.limits.store().charge(self, now, tokens) {
            Answer::Ready(r) => {
                self.charged(now, tokens, r.unwrap_or(Err(StoreDown::Paused)));
                Charging(None)
            }
            answer => Charging(Some(Waiting {
                answer,
                account: self.clone(),
                now,
                tokens,
            })),
        }
    }

    /// What the key used in the current window and quota period, without counting. `Err` names
    /// the store that did not answer.
    pub async fn peek(&self) -> Result<Standing, String> {
        let limits = &self.inner.limits;
        limits
            .store()
            .peek(self, now())
            .await
            .map_err(|e| format!("limits.redis_url ({}): {e}", limits.shown()))
    }

    /// Records the store's answer to a charge: a failed one is counted here until Redis is
    /// back (`deny` refuses new requests meanwhile). Then the quota gauge follows.
    fn charged(&self, now: i64, tokens: u64, answer: Result<u64, StoreDown>) {
        let used = match answer {
            Ok(used) => used,
            Err(_) => self.bucket().charge(self.budget(), now, tokens),
        };
        if let (Some(gauge), Some(quota)) = (&self.inner.quota_remaining, self.budget().token_quota)
        {
            gauge.set(quota.saturating_sub(used) as f64);
        }
    }
}

impl Admission {
    /// The budget and standing the client is told (`x-ratelimit-*`).
    pub fn admitted(&self) -> &Admitted {
        &self.admitted
    }

    pub fn account(&self) -> &Account {
        &self.account
    }

    /// Charges what an exchange that stays open used so far (a realtime socket's responses).
    pub fn charge(&self, tokens: u64) -> Charging {
        self.account.charge(tokens)
    }

    /// Ends the admission with the answer's usage.
    pub fn settle(self, tokens: u64) -> Charging {
        self.account.charge(tokens)
    }
}

impl Charging {
    /// `None` when the charge is recorded already; else the charge, to await or spawn.
    pub fn pending(self) -> Option<Charging> {
        self.0.is_some().then_some(self)
    }
}

impl Admissions {
    pub fn new(caller: Option<Admission>, user: Option<Admission>) -> Admissions {
        Admissions { caller, user }
    }

    /// What the client is told of its budget (`x-ratelimit-*`): its caller's, else its user's.
    pub fn admitted(&self) -> Option<&Admitted> {
        self.caller
            .as_ref()
            .or(self.user.as_ref())
            .map(Admission::admitted)
    }

    /// Charges what an exchange that stays open used so far (a realtime socket's responses).
    pub fn charge(&self, tokens: u64) -> Charges {
        let charge =
            |a: &Option<Admission>| a.as_ref().map_or(Charging(None), |a| a.charge(tokens));
        Charges([charge(&self.caller), charge(&self.user)])
    }

    /// Ends the admissions with the answer's usage.
    pub fn settle(self, tokens: u64) -> Charges {
        let settle = |a: Option<Admission>| a.map_or(Charging(None), |a| a.settle(tokens));
        Charges([settle(self.caller), settle(self.user)])
    }
}

impl Charges {
    /// `None` when every charge is recorded already; else the charges, to await or spawn.
    pub fn pending(self) -> Option<Charges> {
        self.0.iter().any(|c| c.0.is_some()).then_some(self)
    }
}

impl Future for Charges {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut done = true;
        for charge in &mut this.0 {
            done &= Pin::new(charge).poll(cx).is_ready();
        }
        match done {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }
}

impl Future for Charging {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let Some(waiting) = &mut this.0 else {
            return Poll::Ready(());
        };
        match Pin::new(&mut waiting.answer).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                waiting.account.charged(waiting.now, waiting.tokens, r);
                this.0 = None;
                Poll::Ready(())
            }
        }
    }
}
