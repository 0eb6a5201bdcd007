//! Server-sent event bodies: written at a pace, breakable on purpose, counting clients who hang up.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;

use super::state::Shared;

/// Counts one open stream; on drop, closes it and counts a cancellation if it did not finish.
struct StreamGuard {
    shared: Arc<Shared>,
    finished: bool,
}

struct SseState {
    events: Vec<Bytes>,
    next: usize,
    interval: Duration,
    reset_after: Option<usize>,
    done: bool,
    guard: StreamGuard,
}

impl StreamGuard {
    fn new(shared: Arc<Shared>) -> Self {
        shared.stream_opened();
        StreamGuard {
            shared,
            finished: false,
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.shared.stream_closed(!self.finished);
    }
}

/// A body that writes `events` one by one, `interval` apart. With `reset_after`, it fails after
/// that many events, which makes the server drop the connection mid-body.
pub(crate) fn sse_body(
    shared: Arc<Shared>,
    events: Vec<Bytes>,
    interval: Duration,
    reset_after: Option<usize>,
) -> Body {
    let state = SseState {
        events,
        next: 0,
        interval,
        reset_after,
        done: false,
        guard: StreamGuard::new(shared),
    };
    Body::from_stream(futures_util::stream::unfold(state, next_event))
}

async fn next_event(mut st: SseState) -> Option<(Result<Bytes, io::Error>, SseState)> {
    if st.done {
        return None;
    }
    if st.reset_after.is_some_and(|n| st.next >= n) {
        st.done = true;
        st.guard.finished = true;
        let reset = io::Error::new(
            io::ErrorKind::ConnectionReset,
            "emulated connection reset mid-stream",
        );
        return Some((Err(reset), st));
    }
    let Some(event) = st.events.get(st.next).cloned() else {
        st.guard.finished = true;
        return None;
    };
    if st.next > 0 && !st.guard.shared.sleep(st.interval).await {
        st.done = true;
        st.guard.finished = true;
        return Some((Err(io::Error::other("emulator shutting down")), st));
    }
    st.next += 1;
    Some((Ok(event), st))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EmulatorConfig;
    use crate::keys::first_key;
    use futures_util::StreamExt as _;
    use http_body_util::BodyExt as _;

    fn shared() -> Arc<Shared> {
        Arc::new(Shared::new(EmulatorConfig::default(), first_key().unwrap()))
    }

    fn events(n: usize) -> Vec<Bytes> {
        (0..n)
            .map(|i| Bytes::from(format!("data: {i}\n\n")))
            .collect()
    }

    #[tokio::test]
    async fn finished_streams_are_not_cancellations() {
        let s = shared();
        let body = sse_body(Arc::clone(&s), events(3), Duration::ZERO, None);
        assert_eq!(s.stats().open_streams, 1);
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"data: 0\n\ndata: 1\n\ndata: 2\n\n");
        assert_eq!(s.stats().open_streams, 0);
        assert_eq!(s.stats().cancelled_streams, 0);
    }

    #[tokio::test]
    async fn dropped_streams_are_cancellations() {
        let s = shared();
        let mut stream =
            sse_body(Arc::clone(&s), events(3), Duration::ZERO, None).into_data_stream();
        assert!(stream.next().await.unwrap().is_ok());
        drop(stream);
        assert_eq!(s.stats().open_streams, 0);
        assert_eq!(s.stats().cancelled_streams, 1);
    }

    #[tokio::test]
    async fn resets_fail_after_n_events() {
        let s = shared();
        let mut stream =
            sse_body(Arc::clone(&s), events(5), Duration::ZERO, Some(2)).into_data_stream();
        assert!(stream.next().await.unwrap().is_ok());
        assert!(stream.next().await.unwrap().is_ok());
        assert!(stream.next().await.unwrap().is_err());
        drop(stream);
        assert_eq!(s.stats().cancelled_streams, 0);
    }
}
