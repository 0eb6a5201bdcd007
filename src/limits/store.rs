//! The seam between the limits and where their counters live: [`Store`], implemented by the
//! memory store and the Redis store. A store answers at once when it can (memory: no future is
//! built, nothing is allocated) or later (Redis: one boxed call).

use super::account::Account;
use super::{Standing, Verdict};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Where an account's counters are kept, and the three things asked of them. Each method is one
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
}

/// A store's answer: ready now, or a call on its way. Awaiting a ready answer allocates
/// nothing; a call on its way owns what it needs, so it can be awaited or spawned.
#[must_use = "an answer on its way does nothing unless awaited"]
pub enum Answer<T> {
    Ready(Option<Result<T, StoreDown>>),
    Later(Pin<Box<dyn Future<Output = Result<T, StoreDown>> + Send>>),
}

/// Why a store gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreDown {
    #[error("no answer within {0} ms")]
    Timeout(u128),
    #[error("{0}")]
    Redis(String),
    #[error("paused after a recent failure")]
    Paused,
}

impl<T> Answer<T> {
    /// An answer known now.
    pub fn now(result: Result<T, StoreDown>) -> Answer<T> {
        Answer::Ready(Some(result))
    }

    /// An answer that needs a call first.
    pub fn later(call: impl Future<Output = Result<T, StoreDown>> + Send + 'static) -> Answer<T> {
        Answer::Later(Box::pin(call))
    }
}

impl<T: Unpin> Future for Answer<T> {
    type Output = Result<T, StoreDown>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            // A ready answer is taken once; polled again it has nothing left to say.
            Answer::Ready(r) => Poll::Ready(r.take().unwrap_or(Err(StoreDown::Paused))),
            Answer::Later(call) => call.as_mut().poll(cx),
        }
    }
}
