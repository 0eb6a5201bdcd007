//! Whose budget a request is counted against ([`BudgetKey`]), the handle a caller's policy holds
//! for it ([`Account`]), and an admitted request ([`Admission`], [`Admissions`]): the reservation
//! it holds until its answer ends.
//!
//! An account is resolved once, when a snapshot is built, and held by the caller's policy: the
//! request path finds its counters without a lookup, and locks only that key's counters. A
//! reload resolves the same counters again by name, so a key that remains keeps its counts.
//!
//! An admission holds its reservation until it is settled with what the answer used: what it
//! did not use goes back, what it used beyond is added. Dropped unsettled (no answer came: the
//! request failed before Azure answered, or the client went away), it gives back everything it
//! did not use.

use super::bucket::Bucket;
use super::reservation::{Amounts, Reservation};
use super::{Admit, Admitted, LimitError, Limits, Settlement, Standing, Verdict, now, refusal};
use crate::config::KeyBudget;
use std::sync::Arc;

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

/// A request admitted by its account, holding its reservation: what the client is told about
/// its budget, and what the answer's usage settles. Dropped unsettled, it gives back what it
/// did not use.
#[derive(Debug)]
pub struct Admission {
    account: Account,
    admitted: Admitted,
    /// The second the reservation was counted in: its window bucket and its periods.
    at: i64,
    /// What is counted for this request now: its reservation, and what it used beyond.
    held: Amounts,
    /// What an exchange that stays open (a realtime socket) used so far.
    used: Amounts,
    /// Counted in this process's memory because the store did not answer: settled here too,
    /// never in a store that did not count it.
    here: bool,
    settled: bool,
}

/// A request's admissions: its caller's budget (a key's or an identity's), and its user's own
/// inside a shared identity. Admitted together, settled together.
#[derive(Debug, Default)]
pub struct Admissions {
    caller: Option<Admission>,
    user: Option<Admission>,
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
    /// identity's and all its users', in one cluster slot (so one script admits a user and its
    /// identity together); keys of identities are apart from those of keys whatever their
    /// names.
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
    pub fn bucket(&self) -> &Bucket {
        &self.inner.bucket
    }

    /// The same account, as an address (the Redis queue merges one account's settlements).
    pub(super) fn id(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// Counts one request and reserves `reservation` (or refuses it when it does not fit). In
    /// memory this completes without waiting and allocates nothing.
    pub async fn admit(&self, reservation: &Reservation) -> Result<Admission, LimitError> {
        let [admission, _] = admit(&[self], reservation).await?;
        admission.ok_or(LimitError::StoreUnavailable)
    }

    /// What the key used in the current window and periods, without counting. `Err` names the
    /// store that did not answer.
    pub async fn peek(&self) -> Result<Standing, String> {
        let limits = &self.inner.limits;
        limits
            .store()
            .peek(self, now())
            .await
            .map_err(|e| format!("limits.redis_url ({}): {e}", limits.shown()))
    }

    /// Shows what is left of the quota, now that `used` of it is used.
    pub(super) fn publish(&self, used: u64) {
        if let (Some(gauge), Some(quota)) = (&self.inner.quota_remaining, self.budget().token_quota)
        {
            gauge.set(quota.saturating_sub(used) as f64);
        }
    }

    /// Settles a reservation of this account: in this process when it was counted here (or
    /// there is no other store), else by the store (queued, in Redis).
    fn settle(&self, here: bool, settlement: Settlement) {
        match here {
            true => settle_here(self, settlement),
            false => self.inner.limits.store().settle(self, settlement),
        }
    }
}

/// Admits one request against `accounts` (one, or a user's then its identity's) in one step
/// of the store, reserving `reservation` in each; applies `on_redis_error` when the store does
/// not answer. The admissions come back in the order asked.
async fn admit(
    accounts: &[&Account],
    reservation: &Reservation,
) -> Result<[Option<Admission>; 2], LimitError> {
    let Some(first) = accounts.first() else {
        return Ok([None, None]);
    };
    let limits = &first.inner.limits;
    let reserve = reservation.amounts();
    let now = now();
    let (answer, here) = match limits.store().admit(accounts, reserve, now).await {
        Ok(a) => (a, limits.is_memory()),
        Err(_) if limits.count_here_when_down() => (admit_here(accounts, reserve, now), true),
        Err(_) => return Err(LimitError::StoreUnavailable),
    };
    let standings = match answer {
        Admit::Admitted(standings) => standings,
        Admit::Refused { which, refusal: r } => {
            let account = accounts.get(which).unwrap_or(first);
            return Err(refusal(
                account.key(),
                account.budget(),
                r,
                now,
                reservation,
            ));
        }
    };
    let mut out = [None, None];
    for ((slot, account), standing) in out.iter_mut().zip(accounts).zip(standings) {
        account.publish(standing.quota);
        *slot = Some(Admission {
            account: (*account).clone(),
            admitted: Admitted {
                budget: *account.budget(),
                standing,
            },
            at: now,
            held: reserve,
            used: Amounts::default(),
            here,
            settled: false,
        });
    }
    Ok(out)
}

/// Admits against the accounts' own [`Bucket`]s (locked together when there are two), with no
/// lookup and no allocation.
pub(super) fn admit_here(accounts: &[&Account], reserve: Amounts, now: i64) -> Admit {
    match accounts {
        [one] => match one.bucket().admit(one.budget(), reserve, now) {
            Verdict::Admitted(s) => Admit::Admitted([s, Standing::default()]),
            Verdict::Refused(refusal) => Admit::Refused { which: 0, refusal },
        },
        [first, second, ..] => {
            let first = (first.bucket(), first.budget());
            let second = (second.bucket(), second.budget());
            match Bucket::admit_both(first, second, reserve, now) {
                Ok(both) => Admit::Admitted(both),
                Err((which, refusal)) => Admit::Refused { which, refusal },
            }
        }
        [] => Admit::Admitted([Standing::default(); 2]),
    }
}

/// Settles in the account's own [`Bucket`] and shows the quota left.
pub(super) fn settle_here(account: &Account, s: Settlement) {
    let after = account
        .bucket()
        .settle(account.budget(), s.at, s.release, s.charge, s.now);
    account.publish(after.quota);
}

impl Admission {
    /// The budget and standing the client is told (`x-ratelimit-*`).
    pub fn admitted(&self) -> &Admitted {
        &self.admitted
    }

    pub fn account(&self) -> &Account {
        &self.account
    }

    /// What an exchange that stays open (a realtime socket) used since the last call: taken
    /// from what its reservation holds, and charged now where it goes beyond.
    pub fn consume(&mut self, used: Amounts) {
        self.used = self.used.plus(used);
        let beyond = self.used.beyond(self.held);
        if beyond.is_zero() {
            return;
        }
        self.held = self.held.max(self.used);
        let now = now();
        self.account.settle(
            self.here,
            Settlement {
                at: now,
                release: Amounts::default(),
                charge: beyond,
                now,
            },
        );
    }

    /// Ends the admission with what the answer used in all.
    pub fn settle(mut self, spent: Amounts) {
        self.finish(spent);
    }

    /// Gives back what is held beyond `spent`, and charges what `spent` goes beyond it.
    fn finish(&mut self, spent: Amounts) {
        if self.settled {
            return;
        }
        self.settled = true;
        let release = self.held.beyond(spent);
        let charge = spent.beyond(self.held);
        if release.is_zero() && charge.is_zero() {
            return;
        }
        self.account.settle(
            self.here,
            Settlement {
                at: self.at,
                release,
                charge,
                now: now(),
            },
        );
    }
}

impl Drop for Admission {
    /// No answer settled it: what it used so far stays, the rest of its reservation goes back.
    fn drop(&mut self) {
        let used = self.used;
        self.finish(used);
    }
}

impl Admissions {
    /// Admits one request against its caller's account and its user's (either may be absent)
    /// in one step, reserving `reservation` in each: the user's budget is checked first, and
    /// when either refuses, neither counts anything.
    pub async fn admit(
        caller: Option<&Account>,
        user: Option<&Account>,
        reservation: &Reservation,
    ) -> Result<Admissions, LimitError> {
        let [first, second] = match (user, caller) {
            (Some(u), Some(c)) => admit(&[u, c], reservation).await?,
            (Some(one), None) | (None, Some(one)) => admit(&[one], reservation).await?,
            (None, None) => return Ok(Admissions::default()),
        };
        Ok(match (user, caller) {
            (Some(_), Some(_)) => Admissions {
                user: first,
                caller: second,
            },
            (Some(_), None) => Admissions {
                user: first,
                caller: None,
            },
            _ => Admissions {
                caller: first,
                user: None,
            },
        })
    }

    /// What the client is told of its budget (`x-ratelimit-*`): its caller's, else its user's.
    pub fn admitted(&self) -> Option<&Admitted> {
        self.caller
            .as_ref()
            .or(self.user.as_ref())
            .map(Admission::admitted)
    }

    /// What an exchange that stays open used since the last call ([`Admission::consume`]).
    pub fn consume(&mut self, used: Amounts) {
        for a in [&mut self.caller, &mut self.user].into_iter().flatten() {
            a.consume(used);
        }
    }

    /// Ends the admissions with what the answer used in all.
    pub fn settle(self, spent: Amounts) {
        for a in [self.caller, self.user].into_iter().flatten() {
            a.settle(spent);
        }
    }
}
