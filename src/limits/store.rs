//! The seam between the limits and where their counters live: [`Store`], implemented by the
//! memory store and the Redis store. A store answers at once when it can (memory: no future is
//! built, nothing is allocated) or later (Redis: one boxed call); see [`Answer`].

use super::account::Account;
use super::answer::Answer;
use super::{Standing, Verdict};

/// Where an account's counters are kept, and what is asked of them. Each method is one
/// atomic step in the store (one Lua script in Redis, one lock of the account's counters in
/// memory); [`crate::limits::Limits`] decides what a failed step means (`on_redis_error`).
pub trait Store: std::fmt::Debug + Send + Sync {
    /// Counts one request against `account`'s budget, or says which budget is used up.
    fn admit(&self, account: &Account, now: i64) -> Answer<Verdict>;

    /// Adds `tokens` to `account`'s 60 s window and quota period; answers the quota used.
    fn charge(&self, account: &Account, now: i64, tokens: u64) -> Answer<u64>;

    /// What `account` used in the current window and quota period, counting nothing.
    fn peek(&self, account: &Account, now: i64) -> Answer<Standing>;

    /// Whether the store answers at all (start-up).
    fn probe(&self) -> Answer<()>;

    /// The users (`oid`s) of identity `identity` the store holds counters of (`usage --by
    /// user`).
    fn users(&self, identity: &str) -> Answer<Vec<String>>;
}
