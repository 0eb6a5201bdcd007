//! An HTTP/2 connection's idle close. On HTTP/1.1, hyper's header-read limit already closes a
//! connection that sends no request head for `server.header_read_timeout` after its last
//! answer; an HTTP/2 connection has no such limit, so one with no stream open for that long is
//! told to go away (GOAWAY, then closed) here. A stream counts as open until its answer's body
//! has ended or been dropped, so a long stream is never cut.

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// Streams open on one connection, and when one last opened or ended.
#[derive(Debug)]
pub(super) struct Activity {
    born: Instant,
    open: AtomicUsize,
    /// Milliseconds after `born` of the last stream's opening or end.
    last: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            born: Instant::now(),
            open: AtomicUsize::new(0),
            last: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// A stream opened: open until the returned guard is dropped.
    pub(super) fn opened(self: &Arc<Activity>) -> Open {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.touch();
        Open(self.clone())
    }

    /// When the connection will have been idle for `after`, if nothing opens before then;
    /// `None` while a stream is open.
    fn idle_at(&self, after: Duration) -> Option<Instant> {
        (self.open.load(Ordering::Relaxed) == 0)
            .then(|| self.born + Duration::from_millis(self.last.load(Ordering::Relaxed)) + after)
    }
}

/// One open stream; its drop ends it.
#[derive(Debug)]
pub(super) struct Open(Arc<Activity>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.touch();
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves once the connection has had no stream open for `after`.
pub(super) async fn idle(activity: Arc<Activity>, after: Duration) {
    loop {
        match activity.idle_at(after) {
            Some(at) if at <= Instant::now() => return,
            Some(at) => tokio::time::sleep_until(at).await,
            // A stream is open: look again later (it may run for minutes).
            None => tokio::time::sleep(after).await,
        }
    }
}

/// `response` with its stream kept open until its body ends or is dropped.
pub(super) fn held_open(response: Response, open: Open) -> Response {
    response.map(|body| Body::new(Held { body, _open: open }))
}

/// A body that holds its stream open.
struct Held {
    body: Body,
    _open: Open,
}

impl HttpBody for Held {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_waits_for_the_last_stream_to_end_and_then_for_the_whole_time() {
        let after = Duration::from_millis(150);
        let activity = Activity::new();
        let stream = activity.opened();
        let mut waiting = Box::pin(idle(activity.clone(), after));
        // Open for several times `after`: never idle.
        tokio::select! {
            () = &mut waiting => panic!("idle with a stream open"),
            () = tokio::time::sleep(after * 4) => {}
        }
        drop(stream);
        let ended = Instant::now();
        waiting.await;
        assert!(ended.elapsed() >= after, "{:?}", ended.elapsed());
        // A stream that opens and ends again starts the wait over.
        let activity = Activity::new();
        let mut waiting = Box::pin(idle(activity.clone(), after));
        tokio::time::sleep(after / 2).await;
        drop(activity.opened());
        let touched = Instant::now();
        waiting.as_mut().await;
        assert!(touched.elapsed() >= after, "{:?}", touched.elapsed());
    }
}
