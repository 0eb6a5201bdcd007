//! The seam between the limits and where their counters live: [`Store`], implemented by the
//! memory store and the Redis store. A store answers at once when it can (memory: no future is
//! built, nothing is allocated) or later (Redis: one boxed call); see [`Answer`].

use super::account::Account;
use super::answer::Answer;
use super::reservation::Amounts;
use super::{Admit, Settlement, Standing};

/// Where an account's counters are kept, and what is asked of them. Admission is one atomic
/// step in the store (one Lua script in Redis over every account of the request, the accounts'
/// own locks in memory); [`crate::limits::Limits`] decides what a failed step means
/// (`on_redis_error`). Settlement never waits: applied at once, or queued.
pub trait Store: std::fmt::Debug + Send + Sync {
    /// Counts one request and reserves `reserve` against every account in `accounts` (one or
    /// two: a user's, then its identity's), or against none and says which does not fit.
    fn admit(&self, accounts: &[&Account], reserve: Amounts, now: i64) -> Answer<Admit>;

    /// Settles a reservation `account` counted at `settlement.at`: applied before this returns
    /// in memory, queued for the next batch in Redis.
    fn settle(&self, account: &Account, settlement: Settlement);

    /// Sends what is queued now (at shutdown); nothing to do in memory.
    fn flush(&self) -> Answer<()>;

    /// What `account` used in the current window and periods, counting nothing.
    fn peek(&self, account: &Account, now: i64) -> Answer<Standing>;

    /// Whether the store answers at all (start-up).
    fn probe(&self) -> Answer<()>;

    /// The users (`oid`s) of identity `identity` the store holds counters of (`usage --by
    /// user`).
    fn users(&self, identity: &str) -> Answer<Vec<String>>;
}
