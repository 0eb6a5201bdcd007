//! What a store answers: at once, or a call on its way ([`Answer`]); and why it gave no answer
//! ([`StoreDown`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

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
